/*
 * File names of document ids and attachment names: the reversible codec
 * the mount (fs/) and barrelctl's export/import share (barrelctl(1) and
 * barrelfs(8), "FILE NAMES").
 *
 * A byte becomes %XX (uppercase hex) when it is '%', '/', '\', a control
 * byte (below 0x20, or 0x7f), a '.' that starts the name, or, in a
 * document's name, the '.' of a ".json" that ends it (so that no
 * attachment folder ID/ is ever taken for a document file ID.json). Other
 * bytes, UTF-8 included, stay. Decoding turns every %XX back; an encoded
 * name never starts with '.', so dot-files are never documents.
 */
#ifndef BARREL_DOCNAME_H
#define BARREL_DOCNAME_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Encode s (len bytes) into out (cap bytes, NUL-terminated when cap > 0)
 * as snprintf does: returns the encoded length, which may exceed cap - 1
 * (then out holds a prefix). doc: s is a document id (the name is used
 * with ".json" appended); else an attachment name.
 */
size_t docname_encode(const char *s, size_t len, bool doc, char *out,
		      size_t cap);

/*
 * Decode name (len bytes) into out, which must hold len + 1 bytes (the
 * result is never longer, and is NUL-terminated); *outlen gets its length.
 * BARREL_E_INVALID for a '%' not followed by two hex digits.
 */
int docname_decode(const char *name, size_t len, char *out, size_t *outlen);

#endif
