#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/hex.h"
#include "sync/url.h"

static bool url_unreserved(unsigned char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
	       (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
	       ch == '_' || ch == '~';
}

char *url_escape(const char *s, bool doc_id)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t len = strlen(s), keep = 0, n;
	char *out;

	if (doc_id && !strncmp(s, "_design/", 8))
		keep = 8;
	else if (doc_id && !strncmp(s, "_local/", 7))
		keep = 7;
	out = malloc(len * 3 + 1);
	if (!out)
		return NULL;
	memcpy(out, s, keep);
	n = keep;
	for (size_t i = keep; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (url_unreserved(ch)) {
			out[n++] = (char)ch;
		} else {
			out[n++] = '%';
			out[n++] = hex[ch >> 4];
			out[n++] = hex[ch & 15];
		}
	}
	out[n] = '\0';
	return out;
}

int url_unescape(const char *s, size_t len, bool plus, char **out)
{
	char *d = malloc(len + 1);
	size_t j = 0;

	if (!d)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		int hi, lo;

		if (s[i] != '%') {
			d[j++] = s[i] == '+' && plus ? ' ' : s[i];
			continue;
		}
		hi = i + 2 < len ? hex_digit(s[i + 1]) : -1;
		lo = i + 2 < len ? hex_digit(s[i + 2]) : -1;
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
			free(d);
			return BARREL_E_INVALID;
		}
		d[j++] = (char)(hi << 4 | lo);
		i += 2;
	}
	d[j] = '\0';
	*out = d;
	return 0;
}
