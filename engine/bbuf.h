/*
 * A growable byte string (git's strbuf, smaller): what the engine builds
 * records and texts in. Zero-initialized is empty; after any add the
 * bytes are followed by a NUL (not counted in len), so a text in it is a
 * C string. Owns p: bbuf_release(), or take p and zero the struct.
 * Errors: 0 or -ENOMEM. A failed add is also kept in err, and every add
 * after it does nothing and returns it: a run of adds can be checked once
 * at its end (the text is then cut and must not be used).
 */
#ifndef BARREL_BBUF_H
#define BARREL_BBUF_H

#include <stddef.h>
#include <stdint.h>

struct bbuf {
	char *p;
	size_t len;
	size_t cap;
	int err;          /* the first add that failed, or 0 */
};

/* Room for n more bytes and the NUL after them. */
int bbuf_reserve(struct bbuf *b, size_t n);
int bbuf_add(struct bbuf *b, const void *s, size_t n);
int bbuf_adds(struct bbuf *b, const char *s);
int bbuf_addf(struct bbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* s[0..n) (UTF-8, not checked) as a JSON string: quotes, backslashes and
 * control characters escaped, everything else as it is. */
int bbuf_add_jstr(struct bbuf *b, const char *s, size_t n);
void bbuf_release(struct bbuf *b);       /* frees p, empties b */

#endif
