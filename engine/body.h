/*
 * Document bodies: the one place JSON text becomes a document.
 *
 * body_parse() checks a body the way every writer needs it checked and
 * pulls out what the document layer needs:
 *  - the text is one JSON value (RFC 8259, strict) that is an object, in
 *    valid UTF-8, nested at most BODY_MAX_DEPTH deep, at most BODY_MAX_LEN
 *    bytes (BODY_MAX_INPUT with "_attachments", whose inline data is
 *    stored apart from the body), with nothing but whitespace after it; integers (no fraction or
 *    exponent) must fit int64 or uint64 and member names may not hold
 *    \u0000, as json-c would change either;
 *  - top-level members whose name starts with '_' are reserved (CouchDB):
 *    _id, _rev, _deleted, _revisions and _attachments are read and
 *    type-checked; _conflicts, _deleted_conflicts, _revs_info and
 *    _local_seq are accepted and ignored (they are outputs); any other
 *    '_' member is an error, as in CouchDB. A name given twice counts
 *    once, with its last value (as json-c keeps it);
 *  - the canonical form (FORMAT.md "Canonical body") of the members that
 *    are not reserved, which revision ids hash.
 * It scans the text once into flat tokens and builds no json-c tree;
 * body_object() builds one when a caller needs it. body_parse_json() is
 * the same parse done by json-c: the reference the scan must agree with
 * (accept/reject, reserved members, revision ids), and the cheaper choice
 * for a caller that wants the tree anyway.
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

#define BODY_MAX_LEN (4u << 20)   /* bytes of a body as stored */
#define BODY_MAX_INPUT (256u << 20)  /* bytes of a body as given, with
                                        its inline attachments' base64 */
#define BODY_MAX_DEPTH 256u       /* nesting of arrays and objects */
#define BODY_ERRLEN 160u

struct btok;
struct body_pool;

/* What body_parse() found. Pointers are borrowed from the parse (valid
 * until body_release()); absent fields are NULL / zero. */
struct body {
	struct json_object *obj;     /* the object as json-c parses it, owned;
	                                NULL until body_object() builds it,
	                                but for body_parse_json() and bodies
	                                with "_attachments" */
	const char *id;              /* "_id" (UTF-8, NUL-terminated) */
	size_t idlen;
	bool has_rev;                /* "_rev" parsed into rev */
	struct rev rev;
	bool deleted;                /* "_deleted": true */
	struct rev *revisions;       /* "_revisions" as a path, newest first */
	size_t nrevisions;           /* owned array (body_release frees) */
	struct json_object *attachments;   /* "_attachments" (an object, in
	                                      obj) */
	bool plain;                  /* no reserved member but _id/_rev/_deleted:
	                                the text can be stored as given */

	/* private to body.c */
	const char *text;            /* the text parsed (borrowed) */
	size_t len;
	struct body_pool *pool;      /* what the three below are in, or NULL:
	                                then they are owned */
	struct btok *toks;           /* body_parse()'s tokens */
	size_t ntoks;
	char *dec;                   /* their decoded strings */
	char *idbuf;                 /* "_id" with a NUL, when copied */
};

/*
 * Parse len bytes of text (no NUL needed) into *out, owned by the caller
 * (body_release(), also after an error). See the top of this file. The
 * text is borrowed until body_release(): body_rev() and body_object()
 * read it.
 */
int body_parse(const char *text, size_t len, struct body *out, char *err);

/*
 * Memory for the parses of one bulk: body_parse_in() reuses the pool's
 * scan buffers for every body and keeps each body's tokens in the pool,
 * not in allocations of its own. body_pool_free() frees it all, after
 * body_release() of every body parsed in it. One thread at a time.
 */
int body_pool_new(struct body_pool **out);
void body_pool_free(struct body_pool *pool);     /* NULL is a no-op */

/* Forget everything allocated in pool but keep its memory for the next
 * bulk (after body_release() of every body parsed in it). */
void body_pool_reset(struct body_pool *pool);

/* n zeroed bytes of pool, 8-aligned, freed with it; NULL on ENOMEM (the
 * caller's other per-bulk memory, in the same blocks as the tokens). */
void *body_pool_zalloc(struct body_pool *pool, size_t n);

/* body_parse() with the memory of pool (NULL: body_parse()). */
int body_parse_in(struct body_pool *pool, const char *text, size_t len,
		  struct body *out, char *err);

/* The same by json-c (see the top of this file): out->obj is set. */
int body_parse_json(const char *text, size_t len, struct body *out,
		    char *err);

/*
 * Build b->obj (and b->attachments) from b's text once, on demand; the
 * tree belongs to b. BARREL_E_BADJSON (reason in err, may be NULL) if
 * json-c refuses text the scan took; -ENOMEM.
 */
int body_object(struct body *b, char *err);

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
 * indented by two spaces, '/' unescaped, ending in a newline. Builds
 * b->obj when needed (body_object()). *text is malloc'ed, owned by the
 * caller (free()).
 */
int body_normalize(struct body *b, char **text, size_t *len);

/* Is s[0..len) valid UTF-8 without NUL (what a document id must be)? */
bool body_utf8_valid(const char *s, size_t len);

#endif
