#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/bbuf.h"

int bbuf_reserve(struct bbuf *b, size_t n)
{
	size_t cap = b->cap ? b->cap : 256;
	char *p;

	if (n < b->cap - b->len)
		return 0;
	while (cap - b->len <= n) {
		if (cap > SIZE_MAX / 2)
			return -ENOMEM;
		cap *= 2;
	}
	if (!(p = realloc(b->p, cap)))
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

int bbuf_add(struct bbuf *b, const void *s, size_t n)
{
	int rc = bbuf_reserve(b, n);

	if (rc)
		return rc;
	if (n)
		memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

int bbuf_adds(struct bbuf *b, const char *s)
{
	return bbuf_add(b, s, strlen(s));
}

void bbuf_release(struct bbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}
