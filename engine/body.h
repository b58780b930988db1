/*
 * Document bodies: the one place JSON text becomes a document.
 *
 * body_parse() checks a body the way every writer needs it checked and
 * pulls out what the document layer needs:
 *  - the text is one JSON value (RFC 8259, json-c in strict mode) that is
 *    an object, in valid UTF-8, nested at most BODY_MAX_DEPTH deep, at most
 *    BODY_MAX_LEN bytes, with nothing but whitespace after it; integers
 *    (no fraction or exponent) must fit int64 or uint64 and member names
 *    may not hold \u0000, as json-c would change either;
 *  - top-level members whose name starts with '_' are reserved (CouchDB):
 *    _id, _rev, _deleted, _revisions and _attachments are read and
 *    type-checked; _conflicts, _deleted_conflicts, _revs_info and
 *    _local_seq are accepted and ignored (they are outputs); any other
 *    '_' member is an error, as in CouchDB;
 *  - the canonical form (FORMAT.md "Canonical body") of the members that
 *    are not reserved, which revision ids hash.
 *
 * Errors: BARREL_E_TOOBIG, BARREL_E_BADJSON, BARREL_E_NOTOBJECT,
 * BARREL_E_BADREV, BARREL_E_INVALID (a reserved member of the wrong type
 * or unknown), -ENOMEM. Every error also writes a one-line reason into
 * err (BODY_ERRLEN bytes, may be NULL), naming the byte offset for bad
 * JSON. No I/O, no global state: safe from any thread.
 */
#ifndef BARREL_BODY_H
#define BARREL_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/revtree.h"

struct json_object;

#define BODY_MAX_LEN (4u << 20)   /* bytes of a body */
#define BODY_MAX_DEPTH 256u       /* nesting of arrays and objects */
#define BODY_ERRLEN 160u

/* What body_parse() found. Pointers are borrowed from the parse (valid
 * until body_release()); absent fields are NULL / zero. */
struct body {
	struct json_object *obj;     /* the parsed object; owned */
	const char *id;              /* "_id" (UTF-8, NUL-terminated) */
	size_t idlen;
	bool has_rev;                /* "_rev" parsed into rev */
	struct rev rev;
	bool deleted;                /* "_deleted": true */
	struct rev *revisions;       /* "_revisions" as a path, newest first */
	size_t nrevisions;           /* owned array (body_release frees) */
	struct json_object *attachments;   /* "_attachments" (an object) */
	bool plain;                  /* no reserved member but _id/_rev/_deleted:
	                                the text can be stored as given */
};

/*
 * Parse len bytes of text (no NUL needed) into *out, owned by the caller
 * (body_release(), also after an error). See the top of this file.
 */
int body_parse(const char *text, size_t len, struct body *out, char *err);

void body_release(struct body *b);

/*
 * The revision id an edit gets (FORMAT.md "Revision ids"): generation
 * parent.gen + 1 (1 without parent) and the XXH3-128 of the parent id,
 * the deleted flag, the canonical form of b's object and the digests of
 * the revision's attachments (digests: n entries of 16 bytes, in the
 * order of names, which the caller sorts). Deterministic: two peers that
 * make the same edit get the same id.
 */
struct body_att_digest {
	const char *name;
	size_t namelen;
	const uint8_t *md5;          /* 16 bytes */
	uint64_t length;
};

int body_rev(const struct body *b, const struct rev *parent, bool deleted,
	     const struct body_att_digest *atts, size_t n, struct rev *out);

/*
 * The stable pretty form of b's object without its reserved members:
 * indented by two spaces, '/' unescaped, ending in a newline. *text is
 * malloc'ed, owned by the caller (free()).
 */
int body_normalize(const struct body *b, char **text, size_t *len);

/* Is s[0..len) valid UTF-8 without NUL (what a document id must be)? */
bool body_utf8_valid(const char *s, size_t len);

#endif
