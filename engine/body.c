#include "config.h"

/*
 * Document bodies (body.h): json-c parses and checks the text; the
 * canonical form is streamed into XXH3-128 straight from the parsed
 * object, never written out.
 */

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

/* Parse the text into one JSON value (step 1 of body_parse). */
static int parse_text(const char *text, size_t len, struct json_object **out,
		      char *err)
{
	struct json_tokener *tok;
	enum json_tokener_error jerr;
	size_t bad = utf8_bad_at(text, len), end;
	int rc = 0;

	if (bad < len)
		return body_fail(err, BARREL_E_BADJSON, "%s at byte %zu",
				 text[bad] ? "invalid UTF-8" : "NUL byte", bad);
	tok = json_tokener_new_ex(BODY_MAX_DEPTH);
	if (!tok)
		return -ENOMEM;
	/* UTF-8 was checked above, with the offset of a bad byte */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	*out = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	if (jerr == json_tokener_continue || (!*out && jerr == json_tokener_success))
		rc = body_fail(err, BARREL_E_BADJSON,
			       "invalid JSON: unexpected end of text at byte %zu",
			       len);
	else if (jerr == json_tokener_error_depth)
		rc = body_fail(err, BARREL_E_BADJSON,
			       "invalid JSON: nested deeper than %u at byte %zu",
			       BODY_MAX_DEPTH, end);
	else if (jerr != json_tokener_success)
		rc = body_fail(err, BARREL_E_BADJSON, "invalid JSON: %s at byte %zu",
			       json_tokener_error_desc(jerr), end);
	while (!rc && end < len && is_space(text[end]))
		end++;
	if (!rc && end < len)
		rc = body_fail(err, BARREL_E_BADJSON,
			       "invalid JSON: text after the value at byte %zu",
			       end);
	json_tokener_free(tok);
	if (rc) {
		json_object_put(*out);
		*out = NULL;
	}
	return rc;
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
		char buf[REV_STR_SIZE];
		int k;

		if (!json_object_is_type(h, json_type_string) ||
		    json_object_get_string_len(h) > (int)REV_HASH_MAX)
			return body_fail(err, BARREL_E_BADREV,
					 "_revisions: ids[%zu] is not a revision hash", i);
		k = snprintf(buf, sizeof(buf), "%lld-%s", (long long)gen - (long long)i,
			     json_object_get_string(h));
		if (rev_parse(buf, (size_t)k, &b->revisions[i]))
			return body_fail(err, BARREL_E_BADREV,
					 "_revisions: bad revision %s", buf);
	}
	b->nrevisions = n;
	return 0;
}

/* One top-level reserved member (step 3 of body_parse). */
static int parse_reserved(const char *key, struct json_object *v,
			  struct body *b, char *err)
{
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
			 "bad special document member: %.100s", key);
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
	if (!json_object_is_type(out->obj, json_type_object))
		return body_fail(err, BARREL_E_NOTOBJECT,
				 "document body must be a JSON object, not %s",
				 json_type_to_name(json_object_get_type(out->obj)));
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
