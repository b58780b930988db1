#include "config.h"

/*
 * The body scanner (body_i.h): one pass over the text checks RFC 8259's
 * grammar and writes the tokens. The grammar is checked here, not left to
 * json-c: its strict mode still takes NaN, Infinity, "1.", single quotes
 * and raw control characters in strings, and a body is stored as given,
 * so what we accept must be JSON to every reader. Strings are decoded and
 * numbers converted exactly as json-c does (surrogate escapes its way,
 * dec_unit(); doubles by strtod in the C locale), so the canonical form is the
 * same from the tokens as from a json-c tree. No allocation per value:
 * tokens and decoded strings go into two arrays that grow by doubling.
 */

#include <errno.h>
#include <locale.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/body.h"
#include "engine/body_i.h"
#include "engine/error.h"
#include "engine/hex.h"

#define TOKS_MIN 32u                 /* first size of the token array */
#define DEC_MIN 256u                 /* and of the decoded strings */
#define NUM_STACK 64u                /* number text converted without malloc */
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static const char out_of_memory[] = "out of memory";

static bool scan_fail(struct bscan *s, const char *why)
{
	s->why = why;
	return false;
}

/* Append a token of kind; its index in *i. */
static bool tok_push(struct bscan *s, enum btok_kind kind, uint32_t *i)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : TOKS_MIN;
		struct btok *grown = realloc(s->toks, cap * sizeof(*grown));

		if (!grown)
			return scan_fail(s, out_of_memory);
		s->toks = grown;
		s->cap = cap;
	}
	*i = (uint32_t)s->n++;
	s->toks[*i].kind = (uint8_t)kind;
	s->toks[*i].esc = false;
	return true;
}

/* Room for more bytes of decoded strings. */
static bool dec_reserve(struct bscan *s, size_t more)
{
	size_t cap = s->deccap ? s->deccap : DEC_MIN;
	char *grown;

	if (s->deccap - s->declen >= more)
		return true;
	while (cap - s->declen < more)
		cap *= 2;
	if (!(grown = realloc(s->dec, cap)))
		return scan_fail(s, out_of_memory);
	s->dec = grown;
	s->deccap = cap;
	return true;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static void scan_ws(struct bscan *s)
{
	while (s->at < s->len && is_space(s->text[s->at]))
		s->at++;
}

static bool scan_lit(struct bscan *s, const char *lit, enum btok_kind kind)
{
	size_t n = strlen(lit);
	uint32_t i;

	if (s->len - s->at < n || memcmp(s->text + s->at, lit, n))
		return scan_fail(s, "unexpected character");
	s->at += n;
	return tok_push(s, kind, &i);
}

/* ---- numbers ---- */

static bool scan_digits(struct bscan *s)
{
	size_t start = s->at;

	while (s->at < s->len && is_digit(s->text[s->at]))
		s->at++;
	return s->at > start || scan_fail(s, "bad number");
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?; *frac: not an integer */
static bool scan_number_text(struct bscan *s, bool *frac)
{
	*frac = false;
	if (s->text[s->at] == '-')
		s->at++;
	if (s->at < s->len && s->text[s->at] == '0')
		s->at++;
	else if (!scan_digits(s))
		return false;
	if (s->at < s->len && s->text[s->at] == '.') {
		s->at++;
		*frac = true;
		if (!scan_digits(s))
			return false;
	}
	if (s->at < s->len && (s->text[s->at] == 'e' || s->text[s->at] == 'E')) {
		s->at++;
		*frac = true;
		if (s->at < s->len && (s->text[s->at] == '+' || s->text[s->at] == '-'))
			s->at++;
		if (!scan_digits(s))
			return false;
	}
	return true;
}

/*
 * An integer as json-c keeps it: int64 when it fits, else uint64. One
 * outside both is refused (json-c would clamp it, and the body is stored
 * as given, so it would read back as another number).
 */
static bool number_integer(const char *p, size_t n, struct btok *t)
{
	bool neg = p[0] == '-';
	uint64_t u = 0;

	for (size_t k = neg; k < n; k++) {
		unsigned d = (unsigned)(p[k] - '0');

		if (u > (UINT64_MAX - d) / 10)
			return false;
		u = u * 10 + d;
	}
	if (neg && u > (uint64_t)INT64_MAX + 1)
		return false;
	t->kind = !neg && u > INT64_MAX ? BTOK_UINT : BTOK_INT;
	if (neg)
		t->i = u ? (int64_t)(0 - u) : 0;   /* two's complement */
	else
		t->u = u;
	return true;
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void)
{
	c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

/* A number with a fraction or exponent: strtod, in the C locale. */
static bool number_double(struct bscan *s, const char *p, size_t n,
			  struct btok *t)
{
	char stack[NUM_STACK], *buf = n < sizeof(stack) ? stack : malloc(n + 1);

	if (!buf)
		return scan_fail(s, out_of_memory);
	memcpy(buf, p, n);
	buf[n] = '\0';
	pthread_once(&c_locale_once, c_locale_init);
	t->kind = BTOK_DOUBLE;
	t->d = c_locale ? strtod_l(buf, NULL, c_locale) : strtod(buf, NULL);
	if (buf != stack)
		free(buf);
	return true;
}

static bool scan_number(struct bscan *s)
{
	size_t start = s->at;
	struct btok t = { 0 };
	uint32_t i;
	bool frac;

	if (!scan_number_text(s, &frac))
		return false;
	if (frac) {
		if (!number_double(s, s->text + start, s->at - start, &t))
			return false;
	} else if (!number_integer(s->text + start, s->at - start, &t)) {
		s->at = start;
		return scan_fail(s, "integer out of range");
	}
	if (!tok_push(s, (enum btok_kind)t.kind, &i))
		return false;
	s->toks[i] = t;
	return true;
}

/* ---- strings ---- */

static bool is_stop(unsigned char c)
{
	return c == '"' || c == '\\' || c < 0x20;
}

/* Offset of the first '"', '\\' or control byte at or after i, or len;
 * sixteen (SSE2) or eight bytes at a time while none is there. */
static size_t string_stop(const char *p, size_t i, size_t len)
{
	uint64_t w, q, b;

#ifdef __SSE2__
	const __m128i quote = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\');
	const __m128i ctl = _mm_set1_epi8(0x1f);

	while (len - i >= 16) {
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		__m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote),
						      _mm_cmpeq_epi8(x, bs)),
					 _mm_cmpeq_epi8(_mm_min_epu8(x, ctl), x));
		int bits = _mm_movemask_epi8(m);

		if (bits)
			return i + (size_t)__builtin_ctz((unsigned)bits);
		i += 16;
	}
#endif
	while (len - i >= 8) {
		memcpy(&w, p + i, 8);
		q = w ^ (ONES * '"');
		b = w ^ (ONES * '\\');
		if ((((q - ONES) & ~q) | ((b - ONES) & ~b) |
		     ((w - ONES * 0x20) & ~w)) & HIGHS)
			break;
		i += 8;
	}
	while (i < len && !is_stop((unsigned char)p[i]))
		i++;
	return i;
}

/* The 4 hex digits after the 'u' at s->at; s->at ends on the last. */
static bool scan_hex4(struct bscan *s, uint32_t *cp)
{
	int v;

	*cp = 0;
	for (int k = 0; k < 4; k++) {
		if (++s->at == s->len || (v = hex_digit(s->text[s->at])) < 0)
			return scan_fail(s, "bad \\u escape");
		*cp = *cp << 4 | (uint32_t)v;
	}
	return true;
}

static void dec_utf8(struct bscan *s, uint32_t cp)
{
	char *o = s->dec + s->declen;

	if (cp < 0x80) {
		o[0] = (char)cp;
		s->declen += 1;
	} else if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		s->declen += 2;
	} else if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		s->declen += 3;
	} else {
		o[0] = (char)(0xf0 | cp >> 18);
		o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
		o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[3] = (char)(0x80 | (cp & 0x3f));
		s->declen += 4;
	}
}

/* Bits 10-15 of a UTF-16 surrogate, the only bits json-c tests. */
static bool is_high(uint32_t u)
{
	return (u & 0xfc00) == 0xd800;
}

static bool is_low(uint32_t u)
{
	return (u & 0xfc00) == 0xdc00;
}

/* A high surrogate waiting for its pair is U+FFFD when none comes. */
static void dec_flush_high(struct bscan *s, uint32_t *high)
{
	if (*high)
		dec_utf8(s, 0xfffd);
	*high = 0;
}

/*
 * The code unit of one \uXXXX into dec, as json-c (0.16) decodes it
 * (FORMAT.md "Canonical body"): a unit whose bits 10-15 are a high
 * surrogate's waits in *high for the next escape; a low surrogate then
 * makes one code point with it, anything else comes after a U+FFFD for
 * it. The code point so made is tested again by its low 16 bits (so
 * U+1D800-U+1DBFF, U+2D800..., wait in turn, and U+1DC00-U+1DFFF... are
 * U+FFFD); a low surrogate alone is U+FFFD.
 */
static void dec_unit(struct bscan *s, uint32_t *high, uint32_t u)
{
	if (*high && is_low(u)) {
		u = ((*high & 0x3ff) << 10) + (u & 0x3ff) + 0x10000;
		*high = 0;
	}
	dec_flush_high(s, high);
	if (is_high(u))
		*high = u;
	else
		dec_utf8(s, is_low(u) ? 0xfffd : u);
}

/* \uXXXX at s->at (the 'u'). A member name may not hold \u0000 (json-c
 * cuts names at NUL). */
static bool scan_unicode(struct bscan *s, bool name, uint32_t *high)
{
	uint32_t u;

	if (name && s->len - s->at > 4 && !memcmp(s->text + s->at + 1, "0000", 4))
		return scan_fail(s, "NUL in a member name");
	if (!scan_hex4(s, &u))
		return false;
	s->at++;
	dec_unit(s, high, u);
	return true;
}

/* The escape whose backslash is at s->at, decoded into dec. */
static bool scan_escape(struct bscan *s, bool name, uint32_t *high)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	const char *e;

	if (++s->at == s->len)
		return scan_fail(s, "unexpected end of text");
	if (s->text[s->at] == 'u')
		return scan_unicode(s, name, high);
	if (!(e = memchr(from, s->text[s->at], sizeof(from) - 1)))
		return scan_fail(s, "bad escape");
	dec_flush_high(s, high);
	s->dec[s->declen++] = to[e - from];
	s->at++;
	return true;
}

/* The rest of a string that holds an escape at s->at: every byte from
 * start decoded into dec (NUL-terminated there), then its token. */
static bool scan_escaped(struct bscan *s, bool name, size_t start)
{
	size_t off = s->declen, run;
	uint32_t i, high = 0;

	if (!dec_reserve(s, s->len - start + 1))
		return false;
	s->at = start;
	while (s->at < s->len && s->text[s->at] != '"') {
		if ((unsigned char)s->text[s->at] < 0x20)
			return scan_fail(s, "control character in a string");
		if (s->text[s->at] == '\\') {
			if (!scan_escape(s, name, &high))
				return false;
			continue;
		}
		dec_flush_high(s, &high);
		run = string_stop(s->text, s->at, s->len) - s->at;
		memcpy(s->dec + s->declen, s->text + s->at, run);
		s->declen += run;
		s->at += run;
	}
	if (s->at == s->len)
		return scan_fail(s, "unexpected end of text");
	dec_flush_high(s, &high);
	s->dec[s->declen++] = '\0';
	if (!tok_push(s, BTOK_STRING, &i))
		return false;
	s->toks[i].esc = true;
	s->toks[i].str.off = (uint32_t)off;
	s->toks[i].str.len = (uint32_t)(s->declen - 1 - off);
	s->at++;
	return true;
}

/* A string whose opening quote is at s->at; a member name with name. */
static bool scan_string(struct bscan *s, bool name)
{
	size_t start = s->at + 1, stop = string_stop(s->text, start, s->len);
	uint32_t i;

	if (stop < s->len && s->text[stop] == '\\')
		return scan_escaped(s, name, start);
	s->at = stop;
	if (stop == s->len)
		return scan_fail(s, "unexpected end of text");
	if (s->text[stop] != '"')
		return scan_fail(s, "control character in a string");
	if (!tok_push(s, BTOK_STRING, &i))
		return false;
	s->toks[i].str.off = (uint32_t)start;
	s->toks[i].str.len = (uint32_t)(stop - start);
	s->at = stop + 1;
	return true;
}

/* ---- containers ---- */

static bool scan_value(struct bscan *s, unsigned depth);

/* "name" : (the value follows) */
static bool scan_member_name(struct bscan *s)
{
	if (s->at >= s->len || s->text[s->at] != '"')
		return scan_fail(s, "expected a member name");
	if (!scan_string(s, true))
		return false;
	scan_ws(s);
	if (s->at >= s->len || s->text[s->at] != ':')
		return scan_fail(s, "expected ':'");
	s->at++;
	return true;
}

/* The members or elements after an opening bracket; *count of them. */
static bool scan_items(struct bscan *s, char close, unsigned depth,
		       uint32_t *count)
{
	for (*count = 0;; (*count)++) {
		if (close == '}' && !scan_member_name(s))
			return false;
		if (!scan_value(s, depth + 1))
			return false;
		scan_ws(s);
		if (s->at < s->len && s->text[s->at] == close) {
			s->at++;
			(*count)++;
			return true;
		}
		if (s->at >= s->len || s->text[s->at] != ',')
			return scan_fail(s, s->at >= s->len ? "unexpected end of text"
							    : "expected ',' or a close");
		s->at++;
		scan_ws(s);
	}
}

/* An object or array whose opening bracket is at s->at. */
static bool scan_container(struct bscan *s, unsigned depth)
{
	char close = s->text[s->at] == '{' ? '}' : ']';
	uint32_t i, count = 0;

	if (depth >= BODY_MAX_DEPTH)
		return scan_fail(s, "nested too deep");
	if (!tok_push(s, close == '}' ? BTOK_OBJECT : BTOK_ARRAY, &i))
		return false;
	s->at++;
	scan_ws(s);
	if (s->at < s->len && s->text[s->at] == close)
		s->at++;
	else if (!scan_items(s, close, depth, &count))
		return false;
	s->toks[i].box.count = count;
	s->toks[i].box.end = (uint32_t)s->n;
	return true;
}

static bool scan_value(struct bscan *s, unsigned depth)
{
	scan_ws(s);
	if (s->at >= s->len)
		return scan_fail(s, "unexpected end of text");
	switch (s->text[s->at]) {
	case '{':
	case '[':
		return scan_container(s, depth);
	case '"':
		return scan_string(s, false);
	case 't':
		return scan_lit(s, "true", BTOK_TRUE);
	case 'f':
		return scan_lit(s, "false", BTOK_FALSE);
	case 'n':
		return scan_lit(s, "null", BTOK_NULL);
	default:
		if (s->text[s->at] == '-' || is_digit(s->text[s->at]))
			return scan_number(s);
		return scan_fail(s, "unexpected character");
	}
}

int bscan_text(struct bscan *s, const char *text, size_t len)
{
	s->text = text;
	s->len = len;
	s->n = 0;
	s->declen = 0;
	s->at = 0;
	s->why = NULL;
	if (scan_value(s, 0) && (scan_ws(s), s->at < len))
		scan_fail(s, "text after the value");
	if (!s->why)
		return 0;
	return s->why == out_of_memory ? -ENOMEM : BARREL_E_BADJSON;
}

void bscan_release(struct bscan *s)
{
	free(s->toks);
	free(s->dec);
	memset(s, 0, sizeof(*s));
}
