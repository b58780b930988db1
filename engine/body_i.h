/*
 * Internals of document bodies shared by body.c and bodyscan.c: the flat
 * token form the scanner makes of a body's text, from which body.c reads
 * the reserved members and hashes the canonical body (FORMAT.md
 * "Canonical body") without building a json-c tree.
 */
#ifndef BARREL_BODY_I_H
#define BARREL_BODY_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum btok_kind {
	BTOK_OBJECT,
	BTOK_ARRAY,
	BTOK_STRING,                  /* a value or a member name */
	BTOK_INT,                     /* an integer that fits int64 */
	BTOK_UINT,                    /* an integer above INT64_MAX */
	BTOK_DOUBLE,                  /* a number with a fraction or exponent */
	BTOK_TRUE,
	BTOK_FALSE,
	BTOK_NULL,
};

/*
 * One value or member name, in text order. A container is followed by
 * its contents (an object's as name, value, name, value, ...); box.end
 * is the index of the first token after them. Numbers are typed as
 * json-c types them, so the canonical form is the same from either.
 */
struct btok {
	uint8_t kind;                 /* enum btok_kind */
	bool esc;                     /* string: bytes are decoded, in dec */
	union {
		struct {
			uint32_t off, len;    /* bytes at text + off (dec + off) */
		} str;
		struct {
			uint32_t count;       /* members or elements */
			uint32_t end;
		} box;
		int64_t i;
		uint64_t u;
		double d;
	};
};

/*
 * A scan of one text: tokens and the decoded bytes of the strings that
 * hold escapes (each NUL-terminated there). Owned by whoever ran
 * bscan_text(); bscan_release() frees both arrays.
 */
struct bscan {
	const char *text;             /* borrowed */
	size_t len;
	struct btok *toks;            /* owned */
	size_t n, cap;
	char *dec;                    /* owned */
	size_t declen, deccap;
	size_t at;                    /* where the scan is, or failed */
	const char *why;              /* why it failed; NULL if it did not */
};

/*
 * Scan len bytes of text (valid UTF-8 without NUL: the caller checked)
 * as one JSON value (RFC 8259) nested at most BODY_MAX_DEPTH deep, with
 * only whitespace after it. 0, BARREL_E_BADJSON (why and at say where),
 * or -ENOMEM. *s is reset first; release it after either.
 */
int bscan_text(struct bscan *s, const char *text, size_t len);
void bscan_release(struct bscan *s);

/* The bytes of a string token (not NUL-terminated unless t->esc). */
static inline const char *btok_bytes(const char *text, const char *dec,
				     const struct btok *t)
{
	return (t->esc ? dec : text) + t->str.off;
}

/* The index of the token after the value at i (and its contents). */
static inline uint32_t btok_after(const struct btok *toks, uint32_t i)
{
	return toks[i].kind <= BTOK_ARRAY ? toks[i].box.end : i + 1;
}

#endif
