#include "config.h"

/*
 * Document bodies (body.h): json-c parses and checks the text; the
 * canonical form is streamed into XXH3-128 straight from the parsed
 * object, never written out.
 */

#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY   /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "engine/body.h"
#include "engine/error.h"

#define BODY_MAX_REVISIONS 100000u   /* entries of "_revisions".ids */
#define REV_DOMAIN "barrel-rev-v1"   /* FORMAT.md "Revision ids", step 1 */
#define SORT_STACK 16u               /* members sorted without malloc */

static int body_fail(char *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int body_fail(char *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		va_start(ap, fmt);
		vsnprintf(err, BODY_ERRLEN, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len, i;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, cp = c & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* Offset of the first byte that is not valid UTF-8 (or is NUL), or len. */
static size_t utf8_bad_at(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		size_t k;
		uint64_t w;

		/* eight ASCII bytes without NUL at a time */
		while (len - i >= 8) {
			memcpy(&w, p + i, 8);
			if ((w & 0x8080808080808080ull) ||
			    ((w - 0x0101010101010101ull) & ~w &
			     0x8080808080808080ull))
				break;
			i += 8;
		}
		if (i == len)
			break;
		k = p[i] ? utf8_seq(p + i, len - i) : 0;

		if (!k)
			return i;
		i += k;
	}
	return len;
}

bool body_utf8_valid(const char *s, size_t len)
{
	return utf8_bad_at(s, len) == len;
}

/* ---- parsing ---- */

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * RFC 8259's grammar, checked before json-c builds anything: json-c's
 * strict mode still takes NaN, Infinity, "1.", single quotes and raw
 * control characters in strings, and a body is stored as given, so what
 * we accept must be JSON to every reader.
 */
struct jscan {
	const char *s;
	size_t len, i;          /* i: where the scan is (or failed) */
	const char *why;        /* why it failed */
};

static bool scan_fail(struct jscan *j, const char *why)
{
	j->why = why;
	return false;
}

static void scan_ws(struct jscan *j)
{
	while (j->i < j->len && is_space(j->s[j->i]))
		j->i++;
}

static bool scan_lit(struct jscan *j, const char *lit)
{
	size_t n = strlen(lit);

	if (j->len - j->i < n || memcmp(j->s + j->i, lit, n))
		return scan_fail(j, "unexpected character");
	j->i += n;
	return true;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool scan_number_text(struct jscan *j);

static bool scan_digits(struct jscan *j)
{
	size_t start = j->i;

	while (j->i < j->len && is_digit(j->s[j->i]))
		j->i++;
	return j->i > start || scan_fail(j, "bad number");
}

/* An integer json-c would clamp (outside int64 and uint64) is refused:
 * stored as given, it would read back as another number. */
static bool integer_in_range(const char *s, size_t len)
{
	char buf[32];
	char *end;

	if (len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	errno = 0;
	if (buf[0] == '-')
		(void)strtoll(buf, &end, 10);
	else
		(void)strtoull(buf, &end, 10);
	return errno != ERANGE;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool scan_number(struct jscan *j)
{
	size_t start = j->i;

	if (!scan_number_text(j))
		return false;
	for (size_t k = start; k < j->i; k++)
		if (j->s[k] == '.' || j->s[k] == 'e' || j->s[k] == 'E')
			return true;
	if (!integer_in_range(j->s + start, j->i - start)) {
		j->i = start;
		return scan_fail(j, "integer out of range");
	}
	return true;
}

static bool scan_number_text(struct jscan *j)
{
	if (j->s[j->i] == '-')
		j->i++;
	if (j->i < j->len && j->s[j->i] == '0')
		j->i++;
	else if (!scan_digits(j))
		return false;
	if (j->i < j->len && j->s[j->i] == '.') {
		j->i++;
		if (!scan_digits(j))
			return false;
	}
	if (j->i < j->len && (j->s[j->i] == 'e' || j->s[j->i] == 'E')) {
		j->i++;
		if (j->i < j->len && (j->s[j->i] == '+' || j->s[j->i] == '-'))
			j->i++;
		if (!scan_digits(j))
			return false;
	}
	return true;
}

/* A string; a member name may not hold \u0000 (json-c cuts names at NUL). */
static bool scan_string(struct jscan *j, bool name)
{
	for (j->i++; j->i < j->len; j->i++) {
		unsigned char c = (unsigned char)j->s[j->i];

		if (c == '"') {
			j->i++;
			return true;
		}
		if (c < 0x20)
			return scan_fail(j, "control character in a string");
		if (c != '\\')
			continue;
		if (++j->i == j->len)
			break;
		c = (unsigned char)j->s[j->i];
		if (c == 'u') {
			if (name && j->len - j->i > 4 &&
			    !memcmp(j->s + j->i + 1, "0000", 4))
				return scan_fail(j, "NUL in a member name");
			for (int k = 0; k < 4; k++)
				if (++j->i == j->len || !isxdigit((unsigned char)j->s[j->i]))
					return scan_fail(j, "bad \\u escape");
		} else if (!strchr("\"\\/bfnrt", c) || !c) {
			return scan_fail(j, "bad escape");
		}
	}
	return scan_fail(j, "unexpected end of text");
}

static bool scan_value(struct jscan *j, unsigned depth);

/* An object or array whose opening bracket is at j->i. */
static bool scan_container(struct jscan *j, unsigned depth)
{
	char close = j->s[j->i] == '{' ? '}' : ']';

	if (depth >= BODY_MAX_DEPTH)
		return scan_fail(j, "nested too deep");
	j->i++;
	scan_ws(j);
	if (j->i < j->len && j->s[j->i] == close) {
		j->i++;
		return true;
	}
	for (;;) {
		if (close == '}') {
			if (j->i >= j->len || j->s[j->i] != '"')
				return scan_fail(j, "expected a member name");
			if (!scan_string(j, true))
				return false;
			scan_ws(j);
			if (j->i >= j->len || j->s[j->i] != ':')
				return scan_fail(j, "expected ':'");
			j->i++;
		}
		if (!scan_value(j, depth + 1))
			return false;
		scan_ws(j);
		if (j->i < j->len && j->s[j->i] == close) {
			j->i++;
			return true;
		}
		if (j->i >= j->len || j->s[j->i] != ',')
			return scan_fail(j, j->i >= j->len ? "unexpected end of text"
							   : "expected ',' or a close");
		j->i++;
		scan_ws(j);
	}
}

static bool scan_value(struct jscan *j, unsigned depth)
{
	scan_ws(j);
	if (j->i >= j->len)
		return scan_fail(j, "unexpected end of text");
	switch (j->s[j->i]) {
	case '{':
	case '[':
		return scan_container(j, depth);
	case '"':
		return scan_string(j, false);
	case 't':
		return scan_lit(j, "true");
	case 'f':
		return scan_lit(j, "false");
	case 'n':
		return scan_lit(j, "null");
	default:
		if (j->s[j->i] == '-' || is_digit(j->s[j->i]))
			return scan_number(j);
		return scan_fail(j, "unexpected character");
	}
}

static const char *value_kind(char c)
{
	switch (c) {
	case '[':
		return "an array";
	case '"':
		return "a string";
	case 't':
	case 'f':
		return "a boolean";
	case 'n':
		return "null";
	}
	return "a number";
}

/* Parse the text into one JSON object (step 1 of body_parse). */
static int parse_text(const char *text, size_t len, struct json_object **out,
		      char *err)
{
	struct jscan j = { .s = text, .len = len };
	struct json_tokener *tok;
	size_t bad = utf8_bad_at(text, len);

	if (bad < len)
		return body_fail(err, BARREL_E_BADJSON, "%s at byte %zu",
				 text[bad] ? "invalid UTF-8" : "NUL byte", bad);
	if (scan_value(&j, 0) && (scan_ws(&j), j.i < len))
		scan_fail(&j, "text after the value");
	if (j.why)
		return body_fail(err, BARREL_E_BADJSON, "invalid JSON: %s at byte %zu",
				 j.why, j.i);
	j.i = 0;
	scan_ws(&j);
	if (text[j.i] != '{')
		return body_fail(err, BARREL_E_NOTOBJECT,
				 "document body must be a JSON object, not %s",
				 value_kind(text[j.i]));
	if (!(tok = json_tokener_new_ex(BODY_MAX_DEPTH + 1)))
		return -ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	*out = json_tokener_parse_ex(tok, text, (int)len);
	if (!*out)   /* RFC 8259 JSON that json-c refuses */
		body_fail(err, BARREL_E_BADJSON, "invalid JSON: %s at byte %zu",
			  json_tokener_error_desc(json_tokener_get_error(tok)),
			  json_tokener_get_parse_end(tok));
	json_tokener_free(tok);
	return *out ? 0 : BARREL_E_BADJSON;
}

/* Up to 64 bytes of s for a one-line message: control bytes become '?'. */
static const char *printable(const char *s, char buf[68])
{
	size_t i;

	for (i = 0; s[i] && i < 64; i++)
		buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	memcpy(buf + i, s[i] ? "..." : "", s[i] ? 4 : 1);
	return buf;
}

/* "_revisions": {"start": N, "ids": ["hash", ...]} as a path. */
static int parse_revisions(struct json_object *v, struct body *b, char *err)
{
	struct json_object *start, *ids;
	int64_t gen;
	size_t n;

	if (!json_object_is_type(v, json_type_object) ||
	    !json_object_object_get_ex(v, "start", &start) ||
	    !json_object_object_get_ex(v, "ids", &ids) ||
	    !json_object_is_type(start, json_type_int) ||
	    !json_object_is_type(ids, json_type_array))
		return body_fail(err, BARREL_E_INVALID,
				 "_revisions must be {\"start\": N, \"ids\": [...]}");
	gen = json_object_get_int64(start);
	n = json_object_array_length(ids);
	if (n == 0 || n > BODY_MAX_REVISIONS || gen < (int64_t)n ||
	    (uint64_t)gen > REV_GEN_MAX)
		return body_fail(err, BARREL_E_INVALID,
				 "_revisions: start %lld with %zu ids",
				 (long long)gen, n);
	b->revisions = calloc(n, sizeof(*b->revisions));
	if (!b->revisions)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct json_object *h = json_object_array_get_idx(ids, i);
		char buf[REV_STR_SIZE], name[68];
		int k;

		if (!json_object_is_type(h, json_type_string) ||
		    json_object_get_string_len(h) > (int)REV_HASH_MAX)
			return body_fail(err, BARREL_E_BADREV,
					 "_revisions: ids[%zu] is not a revision hash", i);
		k = snprintf(buf, sizeof(buf), "%lld-%s", (long long)gen - (long long)i,
			     json_object_get_string(h));
		if (rev_parse(buf, (size_t)k, &b->revisions[i]))
			return body_fail(err, BARREL_E_BADREV,
					 "_revisions: bad revision %s",
					 printable(buf, name));
	}
	b->nrevisions = n;
	return 0;
}

/* One top-level reserved member (step 3 of body_parse). */
static int parse_reserved(const char *key, struct json_object *v,
			  struct body *b, char *err)
{
	char name[68];

	static const char *const outputs[] = {
		"_conflicts", "_deleted_conflicts", "_revs_info", "_local_seq",
	};

	if (!strcmp(key, "_id")) {
		if (!json_object_is_type(v, json_type_string))
			return body_fail(err, BARREL_E_INVALID,
					 "_id must be a string");
		b->id = json_object_get_string(v);
		b->idlen = (size_t)json_object_get_string_len(v);
		return 0;
	}
	if (!strcmp(key, "_rev")) {
		if (!json_object_is_type(v, json_type_string) ||
		    rev_parse(json_object_get_string(v),
			      (size_t)json_object_get_string_len(v), &b->rev))
			return body_fail(err, BARREL_E_BADREV,
					 "_rev is not a revision (N-HASH)");
		b->has_rev = true;
		return 0;
	}
	if (!strcmp(key, "_deleted")) {
		if (!json_object_is_type(v, json_type_boolean))
			return body_fail(err, BARREL_E_INVALID,
					 "_deleted must be true or false");
		b->deleted = json_object_get_boolean(v);
		return 0;
	}
	b->plain = false;
	if (!strcmp(key, "_revisions"))
		return parse_revisions(v, b, err);
	if (!strcmp(key, "_attachments")) {
		if (!json_object_is_type(v, json_type_object))
			return body_fail(err, BARREL_E_INVALID,
					 "_attachments must be an object");
		b->attachments = v;
		return 0;
	}
	for (size_t i = 0; i < sizeof(outputs) / sizeof(outputs[0]); i++)
		if (!strcmp(key, outputs[i]))
			return 0;
	return body_fail(err, BARREL_E_INVALID,
			 "bad special document member: %s", printable(key, name));
}

/*
 * body_parse:
 *  1. parse the text (UTF-8, JSON, depth, nothing after the value);
 *  2. require an object;
 *  3. read and check every reserved top-level member.
 */
int body_parse(const char *text, size_t len, struct body *out, char *err)
{
	int rc;

	memset(out, 0, sizeof(*out));
	out->plain = true;
	if (len > BODY_MAX_LEN)
		return body_fail(err, BARREL_E_TOOBIG,
				 "document body of %zu bytes (limit %u)", len,
				 BODY_MAX_LEN);
	rc = parse_text(text, len, &out->obj, err);
	if (rc)
		return rc;
	json_object_object_foreach(out->obj, key, val) {
		if (key[0] == '_' && (rc = parse_reserved(key, val, out, err)))
			return rc;
	}
	return 0;
}

void body_release(struct body *b)
{
	json_object_put(b->obj);
	free(b->revisions);
	memset(b, 0, sizeof(*b));
}

/* ---- the canonical form, streamed into a hash ---- */

static void put_u32(XXH3_state_t *h, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
			 (uint8_t)(v >> 24) };

	XXH3_128bits_update(h, b, sizeof(b));
}

static void put_u64(XXH3_state_t *h, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	XXH3_128bits_update(h, b, sizeof(b));
}

static void put_tag(XXH3_state_t *h, char tag)
{
	XXH3_128bits_update(h, &tag, 1);
}

static void put_bytes(XXH3_state_t *h, const void *p, size_t len)
{
	put_u32(h, (uint32_t)len);
	XXH3_128bits_update(h, p, len);
}

struct member {
	const char *key;
	struct json_object *val;
};

static int member_cmp(const void *a, const void *b)
{
	return strcmp(((const struct member *)a)->key,
		      ((const struct member *)b)->key);
}

static int canon_value(XXH3_state_t *h, struct json_object *v, bool top);

/* An object's members sorted by name; top drops the reserved ones. */
static int canon_object(XXH3_state_t *h, struct json_object *o, bool top)
{
	struct member stack[SORT_STACK], *m = stack;
	size_t n = 0, cap = (size_t)json_object_object_length(o);
	int rc = 0;

	if (cap > SORT_STACK && !(m = malloc(cap * sizeof(*m))))
		return -ENOMEM;
	json_object_object_foreach(o, key, val) {
		if (!(top && key[0] == '_'))
			m[n++] = (struct member){ key, val };
	}
	qsort(m, n, sizeof(*m), member_cmp);
	put_tag(h, 'o');
	put_u32(h, (uint32_t)n);
	for (size_t i = 0; i < n && !rc; i++) {
		put_bytes(h, m[i].key, strlen(m[i].key));
		rc = canon_value(h, m[i].val, false);
	}
	if (m != stack)
		free(m);
	return rc;
}

static void canon_number(XXH3_state_t *h, struct json_object *v)
{
	int64_t i = json_object_get_int64(v);
	uint64_t u;
	double d;

	if (json_object_is_type(v, json_type_double)) {
		d = json_object_get_double(v);
		memcpy(&u, &d, sizeof(u));
		put_tag(h, 'd');
		put_u64(h, u);
	} else if (i == INT64_MAX && (u = json_object_get_uint64(v)) > INT64_MAX) {
		put_tag(h, 'u');
		put_u64(h, u);
	} else {
		put_tag(h, 'i');
		put_u64(h, (uint64_t)i);
	}
}

static int canon_value(XXH3_state_t *h, struct json_object *v, bool top)
{
	int rc = 0;

	switch (json_object_get_type(v)) {
	case json_type_object:
		return canon_object(h, v, top);
	case json_type_array:
		put_tag(h, 'a');
		put_u32(h, (uint32_t)json_object_array_length(v));
		for (size_t i = 0; i < json_object_array_length(v) && !rc; i++)
			rc = canon_value(h, json_object_array_get_idx(v, i),
					 false);
		return rc;
	case json_type_string:
		put_tag(h, 's');
		put_bytes(h, json_object_get_string(v),
			  (size_t)json_object_get_string_len(v));
		return 0;
	case json_type_int:
	case json_type_double:
		canon_number(h, v);
		return 0;
	case json_type_boolean:
		put_tag(h, json_object_get_boolean(v) ? 't' : 'f');
		return 0;
	case json_type_null:
		put_tag(h, 'n');
		return 0;
	}
	return BARREL_E_INVALID;
}

/* FORMAT.md "Revision ids", steps 1-5. */
int body_rev(const struct body *b, const struct rev *parent, bool deleted,
	     const struct body_att_digest *atts, size_t n, struct rev *out)
{
	uint8_t domain[16] = { 0 };
	char pbuf[REV_STR_SIZE];
	XXH128_canonical_t c;
	XXH3_state_t state, *h = &state;
	int rc;

	if (parent && parent->gen >= REV_GEN_MAX)
		return BARREL_E_INVALID;
	if (parent && (rc = rev_format(parent, pbuf, sizeof(pbuf))))
		return rc;
	XXH3_INITSTATE(h);
	XXH3_128bits_reset(h);
	memcpy(domain, REV_DOMAIN, strlen(REV_DOMAIN));
	XXH3_128bits_update(h, domain, sizeof(domain));
	XXH3_128bits_update(h, parent ? pbuf : "", parent ? strlen(pbuf) + 1 : 1);
	put_tag(h, deleted ? 1 : 0);
	rc = canon_value(h, b->obj, true);
	for (size_t i = 0; i < n && !rc; i++) {
		put_bytes(h, atts[i].name, atts[i].namelen);
		XXH3_128bits_update(h, atts[i].md5, 16);
		put_u64(h, atts[i].length);
	}
	if (!rc) {
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(h));
		memset(out, 0, sizeof(*out));
		out->gen = parent ? parent->gen + 1 : 1;
		out->bin = true;
		out->len = 16;
		memcpy(out->hash, c.digest, 16);
	}
	return rc;
}

int body_normalize(const struct body *b, char **text, size_t *len)
{
	struct json_object *o = json_object_new_object();
	const char *s;
	size_t n;
	int rc = 0;

	if (!o)
		return -ENOMEM;
	json_object_object_foreach(b->obj, key, val) {
		if (key[0] == '_')
			continue;
		if (json_object_object_add(o, key, json_object_get(val))) {
			rc = -ENOMEM;
			goto out_put;
		}
	}
	s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PRETTY |
					      JSON_C_TO_STRING_SPACED |
					      JSON_C_TO_STRING_NOSLASHESCAPE, &n);
	if (!s || !(*text = malloc(n + 2))) {
		rc = -ENOMEM;
		goto out_put;
	}
	memcpy(*text, s, n);
	(*text)[n] = '\n';
	(*text)[n + 1] = '\0';
	*len = n + 1;
out_put:
	json_object_put(o);
	return rc;
}
