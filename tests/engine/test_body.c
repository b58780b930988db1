#include "config.h"

/*
 * Document bodies (engine/body.h): what body_parse() accepts and rejects
 * (objects only, strict RFC 8259 JSON, valid UTF-8, depth and size
 * limits, trailing text), the reserved '_' members it extracts and checks,
 * the revision ids body_rev() derives (checked against FORMAT.md "Revision
 * ids" and "Canonical body" byte for byte), body_normalize() and
 * body_utf8_valid(); and that body_parse()'s scan agrees with the json-c
 * parse, body_parse_json(), on every text here, the fuzz corpus and
 * generated bodies.
 */

#include <check.h>
#include <dirent.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "engine/body.h"
#include "engine/error.h"
#include "engine/revtree.h"
#include "tests/engine/testutil.h"

/* ---- helpers ---- */

#define EXPECT_RC(expr, want)                                            \
	do {                                                             \
		int rc_ = (expr);                                        \
		ck_assert_msg(rc_ == (want), "%s returned %d (%s), want %d (%s)", \
			      #expr, rc_, barrel_strerror(rc_), (int)(want), \
			      barrel_strerror(want));                    \
	} while (0)

static struct rev R(const char *s)
{
	struct rev r;

	ck_assert_msg(rev_parse(s, strlen(s), &r) == 0, "parse %s", s);
	return r;
}

static void assert_rev(const struct rev *r, const char *want)
{
	char buf[REV_STR_SIZE];

	ck_assert_int_eq(rev_format(r, buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, want);
}

/* body_parse() of len bytes; returns its code, the reason in err. */
static int parse_n(const char *text, size_t len, struct body *b, char *err)
{
	memset(b, 0, sizeof(*b));
	if (err)
		err[0] = '\0';
	return body_parse(text, len, b, err);
}

/*
 * The json-c parse of text agrees with body_parse()'s result b (rc): the
 * same code, and for an accepted body the same reserved members and the
 * same revision id.
 */
static void parses_agree(const char *text, size_t len, int rc,
			 const struct body *b)
{
	struct body j;
	struct rev r1, r2;
	int jrc = body_parse_json(text, len, &j, NULL);

	ck_assert_msg(jrc == rc, "%.*s: body_parse %d, body_parse_json %d",
		      (int)(len < 80 ? len : 80), text, rc, jrc);
	if (!rc) {
		ck_assert(b->idlen == j.idlen && (b->id == NULL) == (j.id == NULL));
		ck_assert(!j.id || !memcmp(b->id, j.id, j.idlen));
		ck_assert(b->has_rev == j.has_rev && rev_eq(&b->rev, &j.rev));
		ck_assert(b->deleted == j.deleted && b->plain == j.plain);
		ck_assert((b->attachments == NULL) == (j.attachments == NULL));
		ck_assert_uint_eq(b->nrevisions, j.nrevisions);
		for (size_t i = 0; i < j.nrevisions; i++)
			ck_assert(rev_eq(&b->revisions[i], &j.revisions[i]));
		ck_assert_int_eq(body_rev(b, NULL, false, NULL, 0, &r1), 0);
		ck_assert_int_eq(body_rev(&j, NULL, false, NULL, 0, &r2), 0);
		ck_assert_msg(rev_eq(&r1, &r2), "%.*s: revision ids differ",
			      (int)(len < 80 ? len : 80), text);
	}
	body_release(&j);
}

/* Parse a NUL-terminated text that must be accepted (by json-c too); b
 * gets its json-c tree as well. */
static void parse_ok(const char *text, struct body *b)
{
	char err[BODY_ERRLEN];
	int rc = parse_n(text, strlen(text), b, err);

	ck_assert_msg(rc == 0, "rejected %s: %d (%s) %s", text, rc,
		      barrel_strerror(rc), err);
	parses_agree(text, strlen(text), rc, b);
	ck_assert_int_eq(body_object(b, NULL), 0);
	ck_assert_ptr_nonnull(b->obj);
	ck_assert(json_object_is_type(b->obj, json_type_object));
}

/* Parse len bytes that must fail with want and a reason (by json-c too);
 * returns nothing but checks the body can be released after the error. */
static void parse_fails_n(const char *text, size_t len, int want)
{
	char err[BODY_ERRLEN];
	struct body b;
	int rc;

	memset(err, 0, sizeof(err));
	rc = parse_n(text, len, &b, err);
	ck_assert_msg(rc == want, "%.*s: got %d (%s), want %d (%s)",
		      (int)(len < 60 ? len : 60), text, rc,
		      barrel_strerror(rc), want, barrel_strerror(want));
	ck_assert_msg(err[0] != '\0', "%.*s: no reason given",
		      (int)(len < 60 ? len : 60), text);
	ck_assert_msg(memchr(err, '\0', BODY_ERRLEN) != NULL,
		      "reason not terminated");
	parses_agree(text, len, rc, &b);
	body_release(&b);
	/* err may be NULL */
	rc = parse_n(text, len, &b, NULL);
	ck_assert_int_eq(rc, want);
	body_release(&b);
}

static void parse_fails(const char *text, int want)
{
	parse_fails_n(text, strlen(text), want);
}

/* Does err name the decimal number n as a whole word? */
static bool names_number(const char *err, size_t n)
{
	char num[32];
	const char *p = err;
	size_t l;

	snprintf(num, sizeof(num), "%zu", n);
	l = strlen(num);
	while ((p = strstr(p, num)) != NULL) {
		bool left = p == err || p[-1] < '0' || p[-1] > '9';
		bool right = p[l] < '0' || p[l] > '9';

		if (left && right)
			return true;
		p++;
	}
	return false;
}

/* body_rev of text with an optional parent (string) and flags; the
 * json-c parse must give the same id. */
static struct rev rev_of(const char *text, const char *parent, bool deleted,
			 const struct body_att_digest *atts, size_t n)
{
	struct body b, j;
	struct rev p, out, jout;

	parse_ok(text, &b);
	ck_assert_int_eq(body_parse_json(text, strlen(text), &j, NULL), 0);
	if (parent)
		p = R(parent);
	memset(&out, 0, sizeof(out));
	ck_assert_int_eq(body_rev(&b, parent ? &p : NULL, deleted, atts, n,
				  &out), 0);
	ck_assert_int_eq(body_rev(&j, parent ? &p : NULL, deleted, atts, n,
				  &jout), 0);
	ck_assert(rev_eq(&out, &jout));
	body_release(&j);
	body_release(&b);
	return out;
}

/* A byte buffer for the expected hash input of FORMAT.md. */
struct hbuf {
	uint8_t b[512];
	size_t n;
};

static void hb_put(struct hbuf *h, const void *p, size_t len)
{
	ck_assert_uint_le(h->n + len, sizeof(h->b));
	memcpy(h->b + h->n, p, len);
	h->n += len;
}

static void hb_u8(struct hbuf *h, uint8_t v)
{
	hb_put(h, &v, 1);
}

static void hb_u32(struct hbuf *h, uint32_t v)
{
	uint8_t le[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
			  (uint8_t)(v >> 24) };

	hb_put(h, le, 4);
}

static void hb_u64(struct hbuf *h, uint64_t v)
{
	uint8_t le[8];

	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(v >> (8 * i));
	hb_put(h, le, 8);
}

static void hb_str(struct hbuf *h, const char *s)
{
	hb_u32(h, (uint32_t)strlen(s));
	hb_put(h, s, strlen(s));
}

/* The start of a revision's hash input: magic and parent. */
static void hb_start(struct hbuf *h, const char *parent, bool deleted)
{
	uint8_t magic[16] = "barrel-rev-v1";

	h->n = 0;
	hb_put(h, magic, sizeof(magic));
	if (parent)
		hb_put(h, parent, strlen(parent));
	hb_u8(h, 0);
	hb_u8(h, deleted ? 1 : 0);
}

/* The XXH3-128 of h as the 16 bytes a revision id holds. */
static void hb_digest(const struct hbuf *h, uint8_t out[16])
{
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, XXH3_128bits(h->b, h->n));
	memcpy(out, c.digest, 16);
}

/* ---- accepting ---- */

/* Objects of every kind of member are accepted and are plain. */
START_TEST(test_parse_valid_objects)
{
	static const char *ok[] = {
		"{}",
		" \t\r\n{ }\n",
		"{\"a\":1}",
		"{\"a\":-1.5e-3,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}",
		"{\"\":\"\"}",
		"{\"caf\xc3\xa9\":\"\xf0\x9f\x98\x80 \\u00e9 \\ud83d\\ude00\"}",
		"{\"big\":18446744073709551615,\"neg\":-9223372036854775808}",
		"{\"nested\":{\"_not_reserved\":1,\"_id\":2}}",
		"{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}",
	};
	struct body b;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		parse_ok(ok[i], &b);
		ck_assert_ptr_null(b.id);
		ck_assert(!b.has_rev);
		ck_assert(!b.deleted);
		ck_assert_ptr_null(b.revisions);
		ck_assert_uint_eq(b.nrevisions, 0);
		ck_assert_ptr_null(b.attachments);
		ck_assert_msg(b.plain, "%s: not plain", ok[i]);
		body_release(&b);
	}
	/* the length given counts, not a NUL: a prefix that is an object */
	ck_assert_int_eq(parse_n("{\"a\":1}garbage", 7, &b, NULL), 0);
	ck_assert_int_eq(body_object(&b, NULL), 0);
	ck_assert_int_eq(json_object_object_length(b.obj), 1);
	body_release(&b);
}
END_TEST

/* A JSON value that is not an object is BARREL_E_NOTOBJECT. */
START_TEST(test_parse_not_object)
{
	static const char *bad[] = {
		"[]", "[{}]", "\"str\"", "1", "-2.5", "true", "false", "null",
		" [1, 2] ",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		parse_fails(bad[i], BARREL_E_NOTOBJECT);
}
END_TEST

/* Text that is not one JSON value is BARREL_E_BADJSON. */
START_TEST(test_parse_bad_json)
{
	static const char *bad[] = {
		"", "   ", "{", "}", "{\"a\"}", "{\"a\":}", "{a:1}",
		"{\"a\":1,}", "{\"a\":[1,]}", "{\"a\":01}", "{\"a\":-}",
		"{\"a\":+1}", "{\"a\":.5}", "{\"a\":tru}", "{\"a\":\"\\x\"}",
		"{\"a\":\"unterminated}", "{\"a\" 1}", "{,}",
		"{\"a\":1 /* comment */}", "// c\n{}",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		parse_fails(bad[i], BARREL_E_BADJSON);
}
END_TEST

/* What json-c tolerates but RFC 8259 forbids is rejected too. */
START_TEST(test_parse_rfc8259_strict)
{
	static const char *bad[] = {
		"{'a':1}",                 /* single quotes */
		"{\"a\":'x'}",
		"{\"a\":NaN}",             /* not a JSON number */
		"{\"a\":Infinity}",
		"{\"a\":-Infinity}",
		"{\"a\":1.}",              /* fraction without digits */
		"{\"a\":\"tab\there\"}",   /* raw control character */
		"{\"a\":\"nl\nhere\"}",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		parse_fails(bad[i], BARREL_E_BADJSON);
}
END_TEST

/* The reason for bad JSON names the byte offset where the text went wrong. */
START_TEST(test_parse_error_offset)
{
	static const struct {
		const char *text;
		const char *at;   /* the first byte that cannot be JSON */
	} cases[] = {
		{ "{\"alpha\": [1, 2, 3],    \"beta\": 1 x}", "x}" },
		{ "{\"a\": [1, 2,, 3], \"b\": 1}", ", 3]" },
		{ "{}                                          garbage",
		  "garbage" },
	};
	char err[BODY_ERRLEN];
	struct body b;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *t = cases[i].text;
		size_t off = (size_t)(strstr(t, cases[i].at) - t);

		ck_assert_int_eq(parse_n(t, strlen(t), &b, err),
				 BARREL_E_BADJSON);
		ck_assert_msg(names_number(err, off),
			      "\"%s\": reason \"%s\" does not name offset %zu",
			      t, err, off);
		body_release(&b);
	}
}
END_TEST

/* Trailing whitespace is fine; anything else after the value is not. */
START_TEST(test_parse_trailing)
{
	struct body b;

	parse_ok("{\"a\":1} \t\r\n  ", &b);
	body_release(&b);
	parse_fails("{} x", BARREL_E_BADJSON);
	parse_fails("{}{}", BARREL_E_BADJSON);
	parse_fails("{}}", BARREL_E_BADJSON);
	parse_fails("{},", BARREL_E_BADJSON);
	parse_fails("{}\v", BARREL_E_BADJSON);      /* not JSON whitespace */
	parse_fails("{}\xc2\xa0", BARREL_E_BADJSON); /* no-break space */
	parse_fails_n("{}\0", 3, BARREL_E_BADJSON);   /* a NUL inside len */
	parse_fails_n("{\"a\":1}\0 ", 9, BARREL_E_BADJSON);
}
END_TEST

/* Invalid UTF-8 anywhere (overlong, surrogates, > U+10FFFF) is BADJSON. */
START_TEST(test_parse_bad_utf8)
{
	static const char *bad[] = {
		"{\"a\":\"\xff\"}",                 /* never valid */
		"{\"a\":\"\xfe\"}",
		"{\"a\":\"x\x80y\"}",               /* lone continuation */
		"{\"\xc3\":1}",                     /* truncated, in a name */
		"{\"a\":\"\xe2\x82\"}",             /* truncated 3-byte */
		"{\"a\":\"\xc0\xaf\"}",             /* overlong '/' */
		"{\"a\":\"\xc1\xbf\"}",             /* overlong */
		"{\"a\":\"\xe0\x80\xaf\"}",         /* overlong 3-byte */
		"{\"a\":\"\xf0\x80\x80\xaf\"}",     /* overlong 4-byte */
		"{\"a\":\"\xed\xa0\x80\"}",         /* surrogate U+D800 */
		"{\"a\":\"\xed\xbf\xbf\"}",         /* surrogate U+DFFF */
		"{\"a\":\"\xed\xa0\xbd\xed\xb8\x80\"}", /* CESU-8 pair */
		"{\"a\":\"\xf4\x90\x80\x80\"}",     /* U+110000 */
		"{\"a\":\"\xf5\x80\x80\x80\"}",
		"{\"a\":[\"ok\",{\"b\":\"\xc0\x80\"}]}", /* nested, overlong NUL */
	};
	struct body b;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		parse_fails(bad[i], BARREL_E_BADJSON);
	/* the limits themselves are fine */
	parse_ok("{\"a\":\"\xef\xbf\xbf \xf4\x8f\xbf\xbf \xed\x9f\xbf "
		 "\xee\x80\x80\"}", &b);
	body_release(&b);
}
END_TEST

/* Depth BODY_MAX_DEPTH parses, one more fails; 100000 levels fail cleanly. */
START_TEST(test_parse_depth)
{
	char err[BODY_ERRLEN];
	struct body b;
	size_t len;
	char *s;
	int rc;

	s = tu_nested_object(BODY_MAX_DEPTH, &len);
	ck_assert_ptr_nonnull(s);
	ck_assert_int_eq(parse_n(s, len, &b, err), 0);
	body_release(&b);
	free(s);

	s = tu_nested_object(BODY_MAX_DEPTH + 1, &len);
	ck_assert_ptr_nonnull(s);
	rc = parse_n(s, len, &b, err);
	ck_assert_msg(rc == BARREL_E_BADJSON || rc == BARREL_E_TOOBIG,
		      "depth %u: %d (%s)", BODY_MAX_DEPTH + 1, rc,
		      barrel_strerror(rc));
	ck_assert(err[0] != '\0');
	body_release(&b);
	free(s);

	s = tu_nested_object(100000, &len);
	ck_assert_ptr_nonnull(s);
	rc = parse_n(s, len, &b, err);
	ck_assert_msg(rc == BARREL_E_BADJSON || rc == BARREL_E_TOOBIG,
		      "depth 100000: %d (%s)", rc, barrel_strerror(rc));
	ck_assert(err[0] != '\0');
	body_release(&b);
	free(s);

	/* objects in objects, unterminated, too */
	len = 8 * 100000;
	s = malloc(len);
	ck_assert_ptr_nonnull(s);
	for (size_t i = 0; i < 100000; i++)
		memcpy(s + 8 * i, "{\"k\":   ", 8);
	rc = parse_n(s, len, &b, err);
	ck_assert_msg(rc == BARREL_E_BADJSON || rc == BARREL_E_TOOBIG,
		      "deep objects: %d (%s)", rc, barrel_strerror(rc));
	body_release(&b);
	free(s);
}
END_TEST

/* A body of BODY_MAX_LEN bytes is accepted; one byte more is TOOBIG. */
START_TEST(test_parse_too_big)
{
	size_t len = BODY_MAX_LEN;
	char *s = malloc(len + 2);
	struct body b;

	ck_assert_ptr_nonnull(s);
	memcpy(s, "{\"a\":\"", 6);
	memset(s + 6, 'x', len - 8);
	memcpy(s + len - 2, "\"}", 2);
	ck_assert_int_eq(parse_n(s, len, &b, NULL), 0);
	ck_assert_int_eq(body_object(&b, NULL), 0);
	ck_assert_uint_eq(json_object_get_string_len(
		json_object_object_get(b.obj, "a")), len - 8);
	body_release(&b);

	/* one more byte of string */
	memset(s + 6, 'x', len - 7);
	memcpy(s + len - 1, "\"}", 2);
	parse_fails_n(s, len + 1, BARREL_E_TOOBIG);
	/* and trailing whitespace counts as well */
	memset(s + 6, 'x', len - 8);
	memcpy(s + len - 2, "\"} ", 3);
	parse_fails_n(s, len + 1, BARREL_E_TOOBIG);
	free(s);
}
END_TEST

/* ---- reserved members ---- */

/* _id, _rev and _deleted are extracted and keep the body plain. */
START_TEST(test_reserved_id_rev_deleted)
{
	struct body b;

	parse_ok("{\"_id\":\"doc\\u00e9\",\"a\":1,"
		 "\"_rev\":\"3-967a00dff5e02add41819138abb3284d\","
		 "\"_deleted\":true}", &b);
	ck_assert_ptr_nonnull(b.id);
	ck_assert_uint_eq(b.idlen, 5);
	ck_assert_mem_eq(b.id, "doc\xc3\xa9", 5);
	ck_assert_int_eq(b.id[5], '\0');
	ck_assert(b.has_rev);
	assert_rev(&b.rev, "3-967a00dff5e02add41819138abb3284d");
	ck_assert(b.rev.bin);
	ck_assert(b.deleted);
	ck_assert(b.plain);
	body_release(&b);

	parse_ok("{\"_deleted\":false,\"_rev\":\"1-abc\"}", &b);
	ck_assert(!b.deleted);
	ck_assert(b.has_rev);
	assert_rev(&b.rev, "1-abc");
	ck_assert(b.plain);
	body_release(&b);
}
END_TEST

/* _revisions becomes a path, _attachments an object; neither is plain. */
START_TEST(test_reserved_revisions_attachments)
{
	struct body b;

	parse_ok("{\"_revisions\":{\"start\":3,\"ids\":[\"c\","
		 "\"967a00dff5e02add41819138abb3284d\",\"a\"]},\"x\":1}", &b);
	ck_assert_uint_eq(b.nrevisions, 3);
	ck_assert_ptr_nonnull(b.revisions);
	assert_rev(&b.revisions[0], "3-c");
	assert_rev(&b.revisions[1], "2-967a00dff5e02add41819138abb3284d");
	ck_assert(b.revisions[1].bin);
	assert_rev(&b.revisions[2], "1-a");
	ck_assert(!b.plain);
	ck_assert_ptr_null(b.attachments);
	body_release(&b);

	parse_ok("{\"_attachments\":{\"f.txt\":{\"stub\":true}}}", &b);
	ck_assert_ptr_nonnull(b.attachments);
	ck_assert(json_object_is_type(b.attachments, json_type_object));
	ck_assert(json_object_object_get_ex(b.attachments, "f.txt", NULL));
	ck_assert(!b.plain);
	body_release(&b);
}
END_TEST

/* Output-only reserved members are ignored (not plain); nested '_' is data. */
START_TEST(test_reserved_ignored)
{
	static const char *ok[] = {
		"{\"_conflicts\":[\"2-a\"]}",
		"{\"_deleted_conflicts\":[\"2-a\"]}",
		"{\"_revs_info\":[]}",
		"{\"_local_seq\":5}",
	};
	struct body b;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		parse_ok(ok[i], &b);
		ck_assert_msg(!b.plain, "%s: plain", ok[i]);
		ck_assert(!b.has_rev);
		ck_assert_ptr_null(b.id);
		body_release(&b);
	}
	parse_ok("{\"a\":{\"_foo\":1},\"b\":[{\"_bar\":2}]}", &b);
	ck_assert(b.plain);
	body_release(&b);
}
END_TEST

/* Unknown or mistyped reserved members are INVALID; a bad _rev is BADREV. */
START_TEST(test_reserved_rejected)
{
	static const char *invalid[] = {
		"{\"_foo\":1}",
		"{\"_\":1}",
		"{\"_ID\":\"x\"}",
		"{\"_id\":1}",
		"{\"_id\":null}",
		"{\"_id\":[\"x\"]}",
		"{\"_deleted\":\"true\"}",
		"{\"_deleted\":1}",
		"{\"_revisions\":[]}",
		"{\"_revisions\":\"3-a\"}",
		"{\"_revisions\":{\"ids\":[\"a\"]}}",
		"{\"_revisions\":{\"start\":1}}",
		"{\"_revisions\":{\"start\":\"1\",\"ids\":[\"a\"]}}",
		"{\"_revisions\":{\"start\":1,\"ids\":\"a\"}}",
		"{\"_attachments\":[]}",
		"{\"_attachments\":\"x\"}",
		"{\"_attachments\":null}",
	};
	static const char *badrev[] = {
		"{\"_rev\":\"abc\"}",
		"{\"_rev\":\"\"}",
		"{\"_rev\":\"0-abc\"}",
		"{\"_rev\":\"1-\"}",
		"{\"_rev\":\"01-abc\"}",
		"{\"_rev\":\"1-a!c\"}",
	};

	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
		parse_fails(invalid[i], BARREL_E_INVALID);
	for (size_t i = 0; i < sizeof(badrev) / sizeof(badrev[0]); i++)
		parse_fails(badrev[i], BARREL_E_BADREV);
	/* a _rev that is not a string at all: either code says why */
	for (size_t i = 0; i < 3; i++) {
		static const char *t[] = {
			"{\"_rev\":1}", "{\"_rev\":null}",
			"{\"_rev\":[\"1-a\"]}",
		};
		struct body b;
		int rc = parse_n(t[i], strlen(t[i]), &b, NULL);

		ck_assert_msg(rc == BARREL_E_INVALID || rc == BARREL_E_BADREV,
			      "%s: %d (%s)", t[i], rc, barrel_strerror(rc));
		body_release(&b);
	}
}
END_TEST

/* _revisions that cannot form a path (start, ids, hashes) are refused. */
START_TEST(test_reserved_revisions_bad_path)
{
	static const char *bad[] = {
		"{\"_revisions\":{\"start\":0,\"ids\":[\"a\"]}}",
		"{\"_revisions\":{\"start\":2,\"ids\":[\"b\",\"a\",\"z\"]}}",
		"{\"_revisions\":{\"start\":-1,\"ids\":[\"a\"]}}",
		"{\"_revisions\":{\"start\":1,\"ids\":[]}}",
		"{\"_revisions\":{\"start\":1,\"ids\":[\"a-b\"]}}",
		"{\"_revisions\":{\"start\":1,\"ids\":[\"\"]}}",
		"{\"_revisions\":{\"start\":1,\"ids\":[1]}}",
		"{\"_revisions\":{\"start\":9007199254740992,\"ids\":[\"a\"]}}",
	};
	char err[BODY_ERRLEN];
	struct body b;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = parse_n(bad[i], strlen(bad[i]), &b, err);

		ck_assert_msg(rc == BARREL_E_INVALID || rc == BARREL_E_BADREV,
			      "%s: %d (%s)", bad[i], rc, barrel_strerror(rc));
		ck_assert(err[0] != '\0');
		body_release(&b);
	}
}
END_TEST

/* ---- revision ids ---- */

/* body_rev hashes exactly FORMAT.md "Revision ids" and "Canonical body". */
START_TEST(test_rev_known_answer)
{
	static const uint8_t md5a[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
					  12, 13, 14, 15, 16 };
	static const uint8_t md5b[16] = { 0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00,
					  0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98,
					  0xec, 0xf8, 0x42, 0x7e };
	const char *parent = "1-967a00dff5e02add41819138abb3284d";
	struct body_att_digest atts[2] = {
		{ "a.txt", 5, md5a, 12345 },
		{ "b", 1, md5b, 0 },
	};
	struct hbuf h;
	uint8_t want[16];
	struct rev r;

	/* { "b": "x", "a": 1, "_id": "ignored" } without parent */
	hb_start(&h, NULL, false);
	hb_u8(&h, 'o');
	hb_u32(&h, 2);
	hb_str(&h, "a");
	hb_u8(&h, 'i');
	hb_u64(&h, 1);
	hb_str(&h, "b");
	hb_u8(&h, 's');
	hb_str(&h, "x");
	hb_digest(&h, want);
	r = rev_of("{\"b\":\"x\",\"a\":1,\"_id\":\"ignored\"}", NULL, false,
		   NULL, 0);
	ck_assert_uint_eq(r.gen, 1);
	ck_assert(r.bin);
	ck_assert_uint_eq(r.len, 16);
	ck_assert_mem_eq(r.hash, want, 16);

	/* every kind of value, a parent, a deletion and two attachments:
	 * {"z":[-2,18446744073709551615,1.5,true,false,null],
	 *  "o":{"y":{},"x":[]}} */
	hb_start(&h, parent, true);
	hb_u8(&h, 'o');
	hb_u32(&h, 2);
	hb_str(&h, "o");
	hb_u8(&h, 'o');
	hb_u32(&h, 2);
	hb_str(&h, "x");
	hb_u8(&h, 'a');
	hb_u32(&h, 0);
	hb_str(&h, "y");
	hb_u8(&h, 'o');
	hb_u32(&h, 0);
	hb_str(&h, "z");
	hb_u8(&h, 'a');
	hb_u32(&h, 6);
	hb_u8(&h, 'i');
	hb_u64(&h, (uint64_t)-2);
	hb_u8(&h, 'u');
	hb_u64(&h, UINT64_MAX);
	hb_u8(&h, 'd');
	{
		double d = 1.5;
		uint64_t bits;

		memcpy(&bits, &d, 8);
		hb_u64(&h, bits);
	}
	hb_u8(&h, 't');
	hb_u8(&h, 'f');
	hb_u8(&h, 'n');
	hb_str(&h, "a.txt");
	hb_put(&h, md5a, 16);
	hb_u64(&h, 12345);
	hb_str(&h, "b");
	hb_put(&h, md5b, 16);
	hb_u64(&h, 0);
	hb_digest(&h, want);
	r = rev_of("{\"z\":[-2,18446744073709551615,1.5,true,false,null],"
		   "\"o\":{\"y\":{},\"x\":[]}}", parent, true, atts, 2);
	ck_assert_uint_eq(r.gen, 2);
	ck_assert(r.bin);
	ck_assert_mem_eq(r.hash, want, 16);
}
END_TEST

/* Whitespace, member order, escaping and '_' members leave the id as is. */
START_TEST(test_rev_canonical_equal)
{
	static const char *same[] = {
		"{\"a\":\"A/\xc3\xa9\xf0\x9f\x98\x80\",\"b\":{\"x\":1,\"y\":[1,2]}}",
		"  {\n\t\"b\" : { \"y\" : [ 1 , 2 ] , \"x\" : 1 } ,\r\n"
		"\"a\":\"A/\xc3\xa9\xf0\x9f\x98\x80\"}  \n",
		"{\"a\":\"\\u0041\\/\\u00e9\\ud83d\\ude00\",\"b\":{\"y\":[1,2],\"x\":1}}",
		"{\"\\u0061\":\"\\u0041/\\u00E9\\uD83D\\uDE00\",\"b\":{\"x\":1,\"y\":[1,2]}}",
		"{\"_id\":\"d\",\"_rev\":\"1-abc\",\"_deleted\":false,"
		"\"a\":\"A/\xc3\xa9\xf0\x9f\x98\x80\",\"b\":{\"x\":1,\"y\":[1,2]}}",
		"{\"b\":{\"x\":1,\"y\":[1,2]},\"_conflicts\":[\"1-x\"],"
		"\"a\":\"A/\xc3\xa9\xf0\x9f\x98\x80\"}",
	};
	struct rev first = rev_of(same[0], "4-abc", false, NULL, 0);
	struct rev again = rev_of(same[0], "4-abc", false, NULL, 0);

	ck_assert_uint_eq(first.gen, 5);
	ck_assert(rev_eq(&first, &again));
	for (size_t i = 1; i < sizeof(same) / sizeof(same[0]); i++) {
		struct rev r = rev_of(same[i], "4-abc", false, NULL, 0);

		ck_assert_msg(rev_eq(&first, &r), "text %zu differs", i);
	}
}
END_TEST

/* Parent, deletion, body and attachment digests all change the id. */
START_TEST(test_rev_differs)
{
	static const uint8_t m1[16] = { 1 }, m2[16] = { 2 };
	struct body_att_digest a1 = { "f", 1, m1, 10 };
	struct body_att_digest a2 = { "f", 1, m2, 10 };
	struct body_att_digest a3 = { "f", 1, m1, 11 };
	struct body_att_digest a4 = { "g", 1, m1, 10 };
	const char *body = "{\"a\":1}";
	struct rev v[14];
	size_t n = 0;

	v[n++] = rev_of(body, NULL, false, NULL, 0);
	v[n++] = rev_of(body, "1-abc", false, NULL, 0);
	v[n++] = rev_of(body, "1-abd", false, NULL, 0);
	v[n++] = rev_of(body, "2-abc", false, NULL, 0);
	v[n++] = rev_of(body, NULL, true, NULL, 0);
	v[n++] = rev_of("{\"a\":2}", NULL, false, NULL, 0);
	v[n++] = rev_of("{\"a\":\"1\"}", NULL, false, NULL, 0);
	v[n++] = rev_of("{\"a\":1.5}", NULL, false, NULL, 0);
	v[n++] = rev_of("{\"a\":[1]}", NULL, false, NULL, 0);
	v[n++] = rev_of("{\"b\":1}", NULL, false, NULL, 0);
	v[n++] = rev_of(body, NULL, false, &a1, 1);
	v[n++] = rev_of(body, NULL, false, &a2, 1);
	v[n++] = rev_of(body, NULL, false, &a3, 1);
	v[n++] = rev_of(body, NULL, false, &a4, 1);
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			ck_assert_msg(!rev_eq(&v[i], &v[j]) &&
				      memcmp(v[i].hash, v[j].hash, 16) != 0,
				      "variants %zu and %zu collide", i, j);
	ck_assert_uint_eq(v[0].gen, 1);
	ck_assert_uint_eq(v[1].gen, 2);
	ck_assert_uint_eq(v[3].gen, 3);
	ck_assert_uint_eq(v[4].gen, 1);
	{
		struct rev big = rev_of(body, "9007199254740990-a", false,
					NULL, 0);

		ck_assert_uint_eq(big.gen, REV_GEN_MAX);
	}
	/* array order matters, unlike member order */
	{
		struct rev x = rev_of("{\"a\":[1,2]}", NULL, false, NULL, 0);
		struct rev y = rev_of("{\"a\":[2,1]}", NULL, false, NULL, 0);

		ck_assert(!rev_eq(&x, &y));
	}
}
END_TEST

/* ---- normalize ---- */

/* body_normalize is pretty, stable, drops '_' members, keeps the rev id. */
START_TEST(test_normalize)
{
	const char *text =
		"{\"_id\":\"doc\",\"_rev\":\"1-abc\",\"url\":\"http:\\/\\/x/y\","
		"\"n\":[1,-2,1.5,18446744073709551615,true,false,null],"
		"\"s\":\"caf\\u00e9 \\\"q\\\" \\n \\ud83d\\ude00\","
		"\"o\":{\"deep\":{\"k\":[{}]},\"_inner\":1},"
		"\"_revisions\":{\"start\":1,\"ids\":[\"abc\"]},"
		"\"_attachments\":{\"f\":{\"stub\":true}}}";
	struct body b, b2, b3;
	struct rev r1, r2;
	char *out, *out2;
	size_t len, len2;

	parse_ok(text, &b);
	ck_assert_int_eq(body_normalize(&b, &out, &len), 0);
	ck_assert_ptr_nonnull(out);
	ck_assert_uint_eq(strlen(out), len);
	ck_assert_uint_ge(len, 3);
	ck_assert_int_eq(out[0], '{');
	ck_assert_int_eq(out[len - 1], '\n');
	ck_assert_int_eq(out[len - 2], '}');
	ck_assert_msg(strncmp(out, "{\n  \"", 5) == 0, "not indented: %s", out);
	ck_assert_msg(strstr(out, "\n    \"deep\"") != NULL,
		      "nested member not indented by 4: %s", out);
	ck_assert_ptr_null(strchr(out, '\t'));
	ck_assert_msg(strstr(out, "\\/") == NULL, "'/' escaped: %s", out);
	ck_assert_ptr_nonnull(strstr(out, "http://x/y"));
	ck_assert_msg(strstr(out, "\"_id\"") == NULL &&
		      strstr(out, "\"_rev\"") == NULL &&
		      strstr(out, "\"_revisions\"") == NULL &&
		      strstr(out, "\"_attachments\"") == NULL,
		      "reserved member kept: %s", out);
	/* only top-level members are reserved */
	ck_assert_ptr_nonnull(strstr(out, "\"_inner\""));
	for (const char *p = out; (p = strchr(p, '\n')) && p[1]; p++) {
		size_t sp = strspn(p + 1, " ");

		ck_assert_msg(sp % 2 == 0, "odd indentation: %s", out);
	}

	/* same canonical body, no reserved members, plain */
	ck_assert_int_eq(parse_n(out, len, &b2, NULL), 0);
	ck_assert(b2.plain);
	ck_assert_ptr_null(b2.id);
	ck_assert(!b2.has_rev);
	ck_assert_int_eq(body_rev(&b, NULL, false, NULL, 0, &r1), 0);
	ck_assert_int_eq(body_rev(&b2, NULL, false, NULL, 0, &r2), 0);
	ck_assert(rev_eq(&r1, &r2));

	/* stable: normalizing the normal form changes nothing */
	ck_assert_int_eq(body_normalize(&b2, &out2, &len2), 0);
	ck_assert_uint_eq(len2, len);
	ck_assert_mem_eq(out2, out, len);
	free(out2);

	/* and an empty object is still an object */
	parse_ok("{\"_id\":\"x\"}", &b3);
	ck_assert_int_eq(body_normalize(&b3, &out2, &len2), 0);
	ck_assert_int_eq(out2[len2 - 1], '\n');
	body_release(&b2);
	ck_assert_int_eq(parse_n(out2, len2, &b2, NULL), 0);
	ck_assert_int_eq(body_object(&b2, NULL), 0);
	ck_assert_int_eq(json_object_object_length(b2.obj), 0);
	free(out2);
	body_release(&b3);
	body_release(&b2);
	free(out);
	body_release(&b);
}
END_TEST

/* ---- UTF-8 ---- */

/* body_utf8_valid accepts well-formed UTF-8 only, without NUL. */
START_TEST(test_utf8_valid)
{
	static const struct {
		const char *s;
		size_t len;
		bool ok;
	} cases[] = {
		{ "a", 1, true },
		{ "hello world", 11, true },
		{ "caf\xc3\xa9", 5, true },
		{ "\xe2\x82\xac", 3, true },             /* U+20AC */
		{ "\xef\xbf\xbf", 3, true },             /* U+FFFF */
		{ "\xf0\x9f\x98\x80", 4, true },         /* U+1F600 */
		{ "\xf4\x8f\xbf\xbf", 4, true },         /* U+10FFFF */
		{ "\xed\x9f\xbf", 3, true },             /* U+D7FF */
		{ "\x7f", 1, true },
		{ "a\0b", 3, false },                    /* NUL */
		{ "\0", 1, false },
		{ "\xff", 1, false },
		{ "\x80", 1, false },
		{ "\xc3", 1, false },                    /* truncated */
		{ "caf\xc3\xa9", 4, false },             /* cut by len */
		{ "\xe2\x82", 2, false },
		{ "\xf0\x9f\x98", 3, false },
		{ "\xc0\xaf", 2, false },                /* overlong */
		{ "\xc1\xbf", 2, false },
		{ "\xe0\x80\xaf", 3, false },
		{ "\xe0\x9f\xbf", 3, false },
		{ "\xf0\x80\x80\xaf", 4, false },
		{ "\xf0\x8f\xbf\xbf", 4, false },
		{ "\xed\xa0\x80", 3, false },            /* surrogates */
		{ "\xed\xbf\xbf", 3, false },
		{ "\xf4\x90\x80\x80", 4, false },        /* > U+10FFFF */
		{ "\xf5\x80\x80\x80", 4, false },
		{ "\xf8\x88\x80\x80\x80", 5, false },
		{ "\xc3\x28", 2, false },                /* bad continuation */
		{ "\xe2\x28\xa1", 3, false },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_msg(body_utf8_valid(cases[i].s, cases[i].len) ==
			      cases[i].ok, "case %zu: want %d", i,
			      cases[i].ok);
}
END_TEST

/* A bad byte is found at every alignment, after any run of ASCII. */
START_TEST(test_utf8_alignment)
{
	static const char *bad[] = {
		"\xff", "\x80", "\xc0\xaf", "\xed\xa0\x80",
	};
	char buf[64], text[96], err[BODY_ERRLEN];
	struct body b;

	for (size_t off = 0; off < 40; off++) {
		memset(buf, 'a', sizeof(buf));
		ck_assert(body_utf8_valid(buf, off + 20));
		buf[off] = '\0';
		ck_assert_msg(!body_utf8_valid(buf, off + 20), "NUL at %zu",
			      off);
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			memset(buf, 'a', sizeof(buf));
			memcpy(buf + off, bad[i], strlen(bad[i]));
			ck_assert_msg(!body_utf8_valid(buf, off + 20),
				      "bad %zu at %zu", i, off);
		}
		memset(buf, 'a', sizeof(buf));
		memcpy(buf + off, "\xc3\xa9\xf0\x9f\x98\x80", 6);
		ck_assert_msg(body_utf8_valid(buf, off + 20), "valid at %zu",
			      off);
		/* cut inside the 4-byte sequence */
		ck_assert(!body_utf8_valid(buf, off + 4));

		/* the same in a body, with the offset in the reason */
		memset(text, 'a', sizeof(text));
		memcpy(text, "{\"k\":\"", 6);
		text[6 + off] = '\xff';
		memcpy(text + 6 + off + 20, "\"}", 2);
		ck_assert_int_eq(parse_n(text, off + 28, &b, err),
				 BARREL_E_BADJSON);
		ck_assert_msg(names_number(err, 6 + off),
			      "reason \"%s\" does not name offset %zu", err,
			      6 + off);
		body_release(&b);
		text[6 + off] = 'a';
		ck_assert_int_eq(parse_n(text, off + 28, &b, err), 0);
		body_release(&b);
	}
}
END_TEST

/* ---- the scan against json-c ---- */

/* body_parse() builds no json-c tree but for "_attachments";
 * body_object() builds it once; body_parse_json() always has it. */
START_TEST(test_scan_object_on_demand)
{
	const char *plain = "{\"_id\":\"d\",\"a\":[1,{\"b\":null}]}";
	const char *atts = "{\"_attachments\":{\"f\":{\"stub\":true}}}";
	struct json_object *first;
	struct body b;

	ck_assert_int_eq(parse_n(plain, strlen(plain), &b, NULL), 0);
	ck_assert_ptr_null(b.obj);
	ck_assert_int_eq(body_object(&b, NULL), 0);
	ck_assert_ptr_nonnull(first = b.obj);
	ck_assert_int_eq(body_object(&b, NULL), 0);
	ck_assert_ptr_eq(b.obj, first);
	ck_assert_int_eq(json_object_object_length(b.obj), 2);
	body_release(&b);

	ck_assert_int_eq(parse_n(atts, strlen(atts), &b, NULL), 0);
	ck_assert_ptr_nonnull(b.obj);
	ck_assert_ptr_nonnull(b.attachments);
	body_release(&b);

	ck_assert_int_eq(body_parse_json(plain, strlen(plain), &b, NULL), 0);
	ck_assert_ptr_nonnull(b.obj);
	ck_assert_uint_eq(b.idlen, 1);
	body_release(&b);
}
END_TEST

/* A name given twice counts once with its last value, in the canonical
 * form and among reserved members, which are checked in the order their
 * names first appear (json-c's). */
START_TEST(test_scan_repeated_names)
{
	static const struct {
		const char *text;
		int rc;
	} cases[] = {
		{ "{\"a\":1,\"b\":[2],\"a\":{\"c\":3,\"c\":4}}", 0 },
		{ "{\"_id\":1,\"_id\":\"x\"}", 0 },
		{ "{\"_id\":\"x\",\"_id\":1}", BARREL_E_INVALID },
		{ "{\"_rev\":\"bad\",\"_id\":1}", BARREL_E_BADREV },
		{ "{\"_id\":1,\"_rev\":\"bad\"}", BARREL_E_INVALID },
		{ "{\"_id\":1,\"_rev\":\"bad\",\"_id\":\"x\"}", BARREL_E_BADREV },
		{ "{\"_x\":1,\"_id\":1}", BARREL_E_INVALID },
		{ "{\"_deleted\":1,\"_x\":1,\"_deleted\":true}", BARREL_E_INVALID },
		{ "{\"_revisions\":{\"start\":\"1\",\"ids\":[\"a\"],\"start\":2,"
		  "\"ids\":[\"b\",\"a\"]}}", 0 },
		{ "{\"_conflicts\":1,\"_conflicts\":2,\"_id\":\"d\"}", 0 },
	};
	struct body b;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *t = cases[i].text;
		int rc = parse_n(t, strlen(t), &b, NULL);

		ck_assert_msg(rc == cases[i].rc, "%s: %d, want %d", t, rc,
			      cases[i].rc);
		parses_agree(t, strlen(t), rc, &b);
		body_release(&b);
	}
	{
		struct rev x = rev_of("{\"a\":1,\"b\":2,\"a\":3}", NULL, false,
				      NULL, 0);
		struct rev y = rev_of("{\"b\":2,\"a\":3}", NULL, false, NULL, 0);

		ck_assert(rev_eq(&x, &y));
	}
	parse_ok("{\"_id\":1,\"_id\":\"x\"}", &b);
	ck_assert_uint_eq(b.idlen, 1);
	ck_assert_str_eq(b.id, "x");
	body_release(&b);
}
END_TEST

/* Escapes, surrogates, names that sort by bytes, and numbers of every
 * kind hash the same from the scan as from json-c. */
START_TEST(test_scan_values)
{
	static const char *texts[] = {
		"{\"s\":\"\\ud800\",\"t\":\"\\udc00x\",\"u\":\"\\ud800\\u0041\"}",
		"{\"s\":\"\\ud800\\ud800\\udc00\",\"t\":\"\\udbff\\udfff\"}",
		"{\"\\ud836\\udd1e\":\"\\ud834\\udd1e\\ud836\\udd1e\\ud877\\udfff\","
		"\"x\":\"\\ud875\\udfff\\ud878\\udc00\\udbf6\\udc00\"}",
		"{\"s\":\"\\ud800\\\\\",\"t\":\"\\ud800\\\"\",\"u\":\"a\\u0000b\"}",
		"{\"\\u005fid\":\"x\",\"\\u0061\":1,\"a\\u00e9\":2,\"a\\t\":3}",
		"{\"b\":1,\"a\":2,\"ab\":3,\"\":4,\"\\u00e9\":5,\"z\":6,\"\xc3\xa9x\":7}",
		"{\"k\":[-0,0,-1,9223372036854775807,9223372036854775808,"
		"-9223372036854775808,18446744073709551615]}",
		"{\"d\":[-0.0,0.0,1E400,-1e-400,4.9e-324,2.2250738585072011e-308,"
		"0.1,1e2,1.7976931348623157e308,123456789012345678901234567890.5,"
		"0.30000000000000000000000000000000000000000000000001]}",
		"{\"n\":[true,false,null,[],{},[[]],{\"a\":{}}]}",
		"{\"m\":{\"q\":1,\"p\":2,\"o\":3,\"n\":4,\"m\":5,\"l\":6,\"k\":7,"
		"\"j\":8,\"i\":9,\"h\":10,\"g\":11,\"f\":12,\"e\":13,\"d\":14,"
		"\"c\":15,\"b\":16,\"a\":17,\"a\":18,\"r\":19}}",
		"{\"_revisions\":{\"start\":2,\"ids\":[\"b\\u0000x\",\"a\"]}}",
		"{\"_id\":\"caf\\u00e9\",\"_rev\":\"1-\\u0061bc\"}",
		"{\"_revisions\":{\"start\":9223372036854775808,\"ids\":[\"a\"]}}",
	};
	struct body b;

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		int rc = parse_n(texts[i], strlen(texts[i]), &b, NULL);

		parses_agree(texts[i], strlen(texts[i]), rc, &b);
		body_release(&b);
	}
}
END_TEST

/* Every file of the fuzz corpus: the scan and json-c agree. */
START_TEST(test_scan_corpus)
{
	const char *top = getenv("abs_top_srcdir");
	char dir[4096], path[8192];
	struct dirent *de;
	size_t files = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus_body",
		 top && *top ? top : ".");
	ck_assert_msg((d = opendir(dir)) != NULL, "%s", dir);
	while ((de = readdir(d)) != NULL) {
		char *text;
		size_t len;
		struct body b;
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		ck_assert_ptr_nonnull(f = fopen(path, "rb"));
		ck_assert_ptr_nonnull(text = malloc(BODY_MAX_LEN + 2));
		len = fread(text, 1, BODY_MAX_LEN + 1, f);
		fclose(f);
		parses_agree(text, len, parse_n(text, len, &b, NULL), &b);
		body_release(&b);
		free(text);
		files++;
	}
	closedir(d);
	ck_assert_uint_gt(files, 10);
}
END_TEST

/* Bodies parsed in one pool read as parsed alone, every one alive at
 * once (a bulk), also past a pool chunk and with decoded strings. */
START_TEST(test_scan_pool)
{
	static const char *texts[] = {
		"{\"_id\":\"a\",\"x\":[1,2,{\"y\":\"z\"}]}",
		"{\"_id\":\"caf\\u00e9\",\"s\":\"\\ud83d\\ude00\\n\"}",
		"{\"_rev\":\"1-abc\",\"_deleted\":true}",
		"{\"_revisions\":{\"start\":2,\"ids\":[\"b\",\"a\"]},\"k\":\"v\"}",
		"[\"not\",\"an object\"]",
		"{\"_attachments\":{\"f\":{\"stub\":true}},\"n\":1.5}",
	};
	enum { N = 600 };
	static struct body b[N];
	struct body_pool *pool;
	struct body alone;
	struct rev r1, r2;

	ck_assert_int_eq(body_pool_new(&pool), 0);
	for (size_t i = 0; i < N; i++) {
		const char *t = texts[i % 6];

		ck_assert_int_eq(body_parse_in(pool, t, strlen(t), &b[i], NULL),
				 i % 6 == 4 ? BARREL_E_NOTOBJECT : 0);
	}
	for (size_t i = 0; i < N; i++) {
		const char *t = texts[i % 6];

		if (i % 6 == 4)
			continue;
		ck_assert_int_eq(body_parse(t, strlen(t), &alone, NULL), 0);
		ck_assert_uint_eq(b[i].idlen, alone.idlen);
		ck_assert(!b[i].id || !strcmp(b[i].id, alone.id));
		ck_assert_uint_eq(b[i].nrevisions, alone.nrevisions);
		ck_assert(b[i].plain == alone.plain);
		ck_assert_int_eq(body_rev(&b[i], NULL, false, NULL, 0, &r1), 0);
		ck_assert_int_eq(body_rev(&alone, NULL, false, NULL, 0, &r2), 0);
		ck_assert(rev_eq(&r1, &r2));
		body_release(&alone);
	}
	for (size_t i = 0; i < N; i++)
		body_release(&b[i]);
	body_pool_free(pool);
	body_pool_free(NULL);
}
END_TEST

/* A JSON text generator for the agreement test: a fixed seed, objects
 * with repeated and reserved names, strings with every kind of escape
 * and raw UTF-8, numbers of every range. */
struct gen {
	char buf[1 << 16];
	size_t n;
	uint64_t rng;
};

static uint32_t gen_next(struct gen *g, uint32_t below)
{
	g->rng = g->rng * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(g->rng >> 33) % below;
}

static void gen_puts(struct gen *g, const char *s)
{
	size_t l = strlen(s);

	ck_assert_uint_lt(g->n + l, sizeof(g->buf));
	memcpy(g->buf + g->n, s, l);
	g->n += l;
}

static void gen_string(struct gen *g, bool name, bool top)
{
	static const char *const pieces[] = {
		"a", "b", "ab", "_", "x y", "\\n", "\\\"", "\\\\", "\\/", "\\t",
		"\\u00e9", "\xc3\xa9", "\\ud83d\\ude00", "\xf0\x9f\x98\x80",
		"\\ud800", "\\udc00", "\\u0041", "\\u0000", "\\uFFFF", "\\u005f",
		"\\ud836\\udd1e", "\\udbf7\\udc00",
	};
	static const char *const reserved[] = {
		"_id", "_rev", "_deleted", "_conflicts", "_x", "_revisions",
	};
	uint32_t n = gen_next(g, 4);

	gen_puts(g, "\"");
	if (top && gen_next(g, 8) == 0) {
		gen_puts(g, reserved[gen_next(g, 6)]);
		n = 0;
	}
	for (uint32_t i = 0; i < n; i++) {
		const char *p = pieces[gen_next(g, sizeof(pieces) / sizeof(pieces[0]))];

		if (!(name && !strcmp(p, "\\u0000")))
			gen_puts(g, p);
	}
	gen_puts(g, "\"");
}

static void gen_number(struct gen *g)
{
	static const char *const nums[] = {
		"0", "-0", "1", "-1", "42", "9223372036854775807",
		"9223372036854775808", "-9223372036854775808",
		"18446744073709551615", "0.5", "-0.0", "1e3", "1E-3", "2.5e+10",
		"1e400", "-1e-400", "3.141592653589793238462643383279",
	};

	gen_puts(g, nums[gen_next(g, sizeof(nums) / sizeof(nums[0]))]);
}

static void gen_value(struct gen *g, unsigned depth, bool top);

static void gen_container(struct gen *g, bool object, unsigned depth, bool top)
{
	uint32_t n = gen_next(g, depth > 3 ? 2 : 6);

	gen_puts(g, object ? "{" : "[");
	for (uint32_t i = 0; i < n; i++) {
		if (i)
			gen_puts(g, gen_next(g, 2) ? "," : " ,\n ");
		if (object) {
			gen_string(g, true, top);
			gen_puts(g, ":");
		}
		gen_value(g, depth + 1, false);
	}
	gen_puts(g, object ? "}" : "]");
}

static void gen_value(struct gen *g, unsigned depth, bool top)
{
	switch (gen_next(g, depth > 4 ? 3 : 6)) {
	case 0:
		gen_string(g, false, false);
		break;
	case 1:
		gen_number(g);
		break;
	case 2:
		gen_puts(g, gen_next(g, 3) == 0 ? "true" :
			    gen_next(g, 2) ? "false" : "null");
		break;
	case 3:
		gen_container(g, false, depth, false);
		break;
	default:
		gen_container(g, true, depth, top);
		break;
	}
}

/* Generated bodies: the scan and json-c agree on every one. */
START_TEST(test_scan_generated)
{
	static struct gen g = { .rng = 0x626f6479ull };
	size_t accepted = 0;
	struct body b;

	for (int i = 0; i < 5000; i++) {
		int rc;

		g.n = 0;
		gen_container(&g, true, 0, true);
		rc = parse_n(g.buf, g.n, &b, NULL);
		parses_agree(g.buf, g.n, rc, &b);
		accepted += rc == 0;
		body_release(&b);
	}
	ck_assert_uint_gt(accepted, 2500);
}
END_TEST

static Suite *body_suite(void)
{
	Suite *s = suite_create("body");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_parse_valid_objects);
	tcase_add_test(tc, test_parse_not_object);
	tcase_add_test(tc, test_parse_bad_json);
	tcase_add_test(tc, test_parse_rfc8259_strict);
	tcase_add_test(tc, test_parse_error_offset);
	tcase_add_test(tc, test_parse_trailing);
	tcase_add_test(tc, test_parse_bad_utf8);
	tcase_add_test(tc, test_parse_depth);
	tcase_add_test(tc, test_parse_too_big);
	tcase_add_test(tc, test_reserved_id_rev_deleted);
	tcase_add_test(tc, test_reserved_revisions_attachments);
	tcase_add_test(tc, test_reserved_ignored);
	tcase_add_test(tc, test_reserved_rejected);
	tcase_add_test(tc, test_reserved_revisions_bad_path);
	tcase_add_test(tc, test_rev_known_answer);
	tcase_add_test(tc, test_rev_canonical_equal);
	tcase_add_test(tc, test_rev_differs);
	tcase_add_test(tc, test_normalize);
	tcase_add_test(tc, test_utf8_valid);
	tcase_add_test(tc, test_utf8_alignment);
	tcase_add_test(tc, test_scan_object_on_demand);
	tcase_add_test(tc, test_scan_repeated_names);
	tcase_add_test(tc, test_scan_values);
	tcase_add_test(tc, test_scan_corpus);
	tcase_add_test(tc, test_scan_pool);
	tcase_add_test(tc, test_scan_generated);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(body_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
