/*
 * Unified diffs between two revisions' bodies, made by libgit2: what
 * `barrelctl diff` prints and the mount's .rev/ID/REV.diff holds.
 */
#ifndef BARREL_DOCDIFF_H
#define BARREL_DOCDIFF_H

#include <stddef.h>
#include <stdint.h>

#define DOCDIFF_ERRLEN 200u

/*
 * The unified diff (context lines around each change) from text a to
 * text b, labelled "a/" alabel and "b/" blabel, into *out (malloc'ed,
 * NUL-terminated, owned by the caller; "" when they are equal). Errors:
 * -ENOMEM, or BARREL_E_INVALID with libgit2's reason in err
 * (DOCDIFF_ERRLEN bytes).
 */
int doc_diff(const char *a, size_t alen, const char *alabel, const char *b,
	     size_t blen, const char *blabel, uint32_t context, char **out,
	     size_t *outlen, char *err);

#endif
