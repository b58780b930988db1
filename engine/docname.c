/* The file-name codec of document ids and attachment names (docname.h). */
#include "config.h"

#include <string.h>

#include "engine/docname.h"
#include "engine/error.h"
#include "engine/hex.h"

static bool byte_escaped(const char *s, size_t len, size_t i, bool doc)
{
	unsigned char ch = (unsigned char)s[i];

	if (ch < 0x20 || ch == 0x7f || ch == '%' || ch == '/' || ch == '\\')
		return true;
	if (ch != '.')
		return false;
	return i == 0 || (doc && len - i == 5 && !memcmp(s + i, ".json", 5));
}

static void put_byte(char *out, size_t cap, size_t at, char ch)
{
	if (at + 1 < cap)
		out[at] = ch;
}

size_t docname_encode(const char *s, size_t len, bool doc, char *out,
		      size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (byte_escaped(s, len, i, doc)) {
			put_byte(out, cap, n++, '%');
			put_byte(out, cap, n++, hex[ch >> 4]);
			put_byte(out, cap, n++, hex[ch & 15]);
		} else {
			put_byte(out, cap, n++, (char)ch);
		}
	}
	if (cap)
		out[n < cap ? n : cap - 1] = '\0';
	return n;
}

int docname_decode(const char *name, size_t len, char *out, size_t *outlen)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		char ch = name[i];

		if (ch == '%') {
			int hi = i + 2 < len ? hex_digit(name[i + 1]) : -1;
			int lo = i + 2 < len ? hex_digit(name[i + 2]) : -1;

			if (hi < 0 || lo < 0)
				return BARREL_E_INVALID;
			ch = (char)(hi << 4 | lo);
			i += 2;
		}
		out[n++] = ch;
	}
	out[n] = '\0';
	*outlen = n;
	return 0;
}
