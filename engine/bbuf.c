#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
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
	int rc = b->err ? b->err : bbuf_reserve(b, n);

	if (rc)
		return b->err = rc;
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

int bbuf_addf(struct bbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n, rc;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return b->err = b->err ? b->err : -EINVAL;
	if ((rc = b->err ? b->err : bbuf_reserve(b, (size_t)n)))
		return b->err = rc;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

/* One byte of a JSON string that must be escaped: \" \\ or \u00XX. */
static int add_escape(struct bbuf *b, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };

	if (c >= 0x20) {
		e[1] = (char)c;
		return bbuf_add(b, e, 2);
	}
	return bbuf_add(b, e, 6);
}

int bbuf_add_jstr(struct bbuf *b, const char *s, size_t n)
{
	size_t from = 0;
	int rc = bbuf_add(b, "\"", 1);

	for (size_t i = 0; !rc && i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		if (!(rc = bbuf_add(b, s + from, i - from)))
			rc = add_escape(b, c);
		from = i + 1;
	}
	if (!rc)
		rc = bbuf_add(b, s + from, n - from);
	return rc ? rc : bbuf_add(b, "\"", 1);
}

void bbuf_release(struct bbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}
