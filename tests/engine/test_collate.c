#include "config.h"

/*
 * View collation (engine/collate.h): CouchDB's documented order, the
 * comparator and the memcmp order of the encodings agreeing on fixed
 * lists and on random values, Unicode strings, numbers, nesting, index
 * keys [key, docid] with their doc ids recovered, bad encodings, threads.
 */

#include <check.h>
#include <json-c/json.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/collate.h"
#include "engine/error.h"
#include "tests/engine/testenv.h"

static int sign(int x)
{
	return (x > 0) - (x < 0);
}

static struct json_object *parse(const char *text)
{
	struct json_object *o = json_tokener_parse(text);

	ck_assert_msg(o || strcmp(text, "null") == 0, "bad test JSON %s", text);
	return o;
}

static void encode(struct json_object *v, struct collate_buf *b)
{
	collate_buf_init(b);
	OK(collate_key_append(b, v));
}

static int enc_cmp(struct json_object *a, struct json_object *b)
{
	struct collate_buf ea, eb;
	int c;

	encode(a, &ea);
	encode(b, &eb);
	c = collate_bytes_cmp(ea.data, ea.len, eb.data, eb.len);
	collate_buf_release(&ea);
	collate_buf_release(&eb);
	return sign(c);
}

/* Both orders of a and b agree with want (-1, 0, 1), and with each other. */
static void expect_order(struct json_object *a, struct json_object *b,
			 int want, const char *what)
{
	const char *ta = json_object_to_json_string(a);
	const char *tb = json_object_to_json_string(b);

	ck_assert_msg(sign(collate_cmp(a, b)) == want,
		      "%s: cmp(%s, %s) = %d, want %d", what, ta, tb,
		      collate_cmp(a, b), want);
	ck_assert_msg(sign(collate_cmp(b, a)) == -want,
		      "%s: cmp(%s, %s) not antisymmetric", what, tb, ta);
	ck_assert_msg(enc_cmp(a, b) == want, "%s: encoding of %s vs %s: %d",
		      what, ta, tb, enc_cmp(a, b));
}

/* Every pair of a strictly increasing list, both ways. */
static void expect_increasing(const char *const *list, size_t n)
{
	struct json_object **v = calloc(n, sizeof(*v));

	ck_assert_ptr_nonnull(v);
	for (size_t i = 0; i < n; i++)
		v[i] = parse(list[i]);
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++)
			expect_order(v[i], v[j], sign((int)i - (int)j), list[i]);
	for (size_t i = 0; i < n; i++)
		json_object_put(v[i]);
	free(v);
}

/* The order list of CouchDB's "Views Collation" holds for both. */
START_TEST(test_couchdb_example_order)
{
	static const char *const list[] = {
		"null", "false", "true", "1", "2", "3.0", "4",
		"\"a\"", "\"A\"", "\"aa\"", "\"b\"", "\"B\"", "\"ba\"", "\"bb\"",
		"[\"a\"]", "[\"b\"]", "[\"b\",\"c\"]", "[\"b\",\"c\",\"a\"]",
		"[\"b\",\"d\"]", "[\"b\",\"d\",\"e\"]",
		"{\"a\":1}", "{\"a\":2}", "{\"b\":1}", "{\"b\":2}",
		"{\"b\":2,\"a\":1}", "{\"b\":2,\"c\":2}",
	};

	expect_increasing(list, sizeof(list) / sizeof(list[0]));
}
END_TEST

/* Numbers order by value: negative, fractional, large, -0 == 0, 3 == 3.0. */
START_TEST(test_numbers)
{
	static const char *const list[] = {
		"-1e308", "-123456789012", "-2.5", "-1", "-0.001", "0",
		"1e-300", "0.5", "1", "1.5", "2", "1e15", "9007199254740993e3",
		"1.7976931348623157e308",
	};
	struct json_object *z = parse("0"), *nz = parse("-0.0");
	struct json_object *i3 = parse("3"), *d3 = parse("3.0");

	expect_increasing(list, sizeof(list) / sizeof(list[0]));
	expect_order(z, nz, 0, "-0 == 0");
	expect_order(i3, d3, 0, "3 == 3.0");
	json_object_put(z);
	json_object_put(nz);
	json_object_put(i3);
	json_object_put(d3);
}
END_TEST

/* Accents and case sort as the UCA says; equivalent forms are equal. */
START_TEST(test_unicode_strings)
{
	static const char *const list[] = {
		"\"\"", "\" \"", "\"\xf0\x9f\x98\x80\"", "\"1\"", "\"a\"",
		"\"A\"", "\"\xc3\xa1\"",
		"\"\xc3\x81\"", "\"ab\"", "\"b\"", "\"cote\"", "\"cot\xc3\xa9\"",
		"\"c\xc3\xb4te\"", "\"c\xc3\xb4t\xc3\xa9\"", "\"e\"", "\"E\"",
		"\"\xc3\xa9\"", "\"\xc3\x89\"", "\"f\"", "\"z\"", "\"\xce\xb1\"",
		"\"\xd0\xb0\"", "\"\xe6\x97\xa5\"",
	};
	/* precomposed e-acute vs e + combining acute */
	struct json_object *pre = parse("\"caf\xc3\xa9\"");
	struct json_object *dec = parse("\"cafe\xcc\x81\"");
	struct json_object *x = parse("\"x\"");

	expect_increasing(list, sizeof(list) / sizeof(list[0]));
	expect_order(pre, dec, 0, "canonically equivalent");
	expect_order(pre, x, -1, "cafe < x");
	json_object_put(pre);
	json_object_put(dec);
	json_object_put(x);
}
END_TEST

/* Nested arrays and objects: prefixes first, element order, type order. */
START_TEST(test_nested)
{
	static const char *const list[] = {
		"[]", "[null]", "[null,null]", "[false]", "[1]", "[1,[]]",
		"[1,[null]]", "[1,[1,2]]", "[1,[1,2],null]", "[1,{}]",
		"[2]", "[\"a\",[]]", "[[]]", "[[[]]]", "[[[1]]]", "[{}]",
		"{}", "{\"a\":null}", "{\"a\":1}", "{\"a\":1,\"b\":1}",
		"{\"a\":[]}", "{\"a\":{}}", "{\"a\":{\"a\":1}}",
		"{\"a\":{\"b\":0}}",
		"{\"A\":0}", "{\"b\":[1]}",
	};

	expect_increasing(list, sizeof(list) / sizeof(list[0]));
}
END_TEST

/* ---- random values: a deterministic generator ---- */

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static const char *const rnd_strings[] = {
	"", "a", "A", "aa", "b", "B", "ab", "Ab", "\xc3\xa1", "\xc3\x81", "e",
	"\xc3\xa9", "e\xcc\x81", "\xc3\x9f", "ss", "\xc3\xa6", "ae", "\xc3\xbc",
	"u", "z", "Z", "0", "10", "9", "-", "_", " ", "\xe6\x97\xa5",
	"\xf0\x9f\x98\x80", "\xce\xa9", "\xd0\x96",
};
static const double rnd_numbers[] = {
	-1e300, -1e9, -3.5, -1, -0.25, -0.0, 0, 0.25, 1, 2, 3, 3.5, 1e9,
	1e300, 42, 1e-9,
};

static struct json_object *rnd_value(unsigned depth)
{
	unsigned kind = (unsigned)(rng() % (depth >= 3 ? 5 : 7));
	struct json_object *v;

	switch (kind) {
	case 0: return NULL;
	case 1: return json_object_new_boolean(rng() & 1);
	case 2:
		if (rng() & 1)
			return json_object_new_int64((int64_t)(rng() % 7) - 3);
		return json_object_new_double(rnd_numbers[rng() % 16]);
	case 3:
	case 4:
		return json_object_new_string(
			rnd_strings[rng() % (sizeof(rnd_strings) /
					     sizeof(rnd_strings[0]))]);
	case 5:
		v = json_object_new_array();
		for (unsigned i = (unsigned)(rng() % 4); i > 0; i--)
			json_object_array_add(v, rnd_value(depth + 1));
		return v;
	default:
		v = json_object_new_object();
		for (unsigned i = (unsigned)(rng() % 3); i > 0; i--)
			json_object_object_add(v, rnd_strings[rng() % 8],
					       rnd_value(depth + 1));
		return v;
	}
}

/* Over 20000 random pairs the encoding order is the comparator's. */
START_TEST(test_random_pairs)
{
	rng_state = 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < 20000; i++) {
		struct json_object *a = rnd_value(0), *b = rnd_value(0);
		int want = sign(collate_cmp(a, b));

		ck_assert_int_eq(sign(collate_cmp(b, a)), -want);
		ck_assert_msg(enc_cmp(a, b) == want, "pair %d: %s vs %s: %d",
			      i, json_object_to_json_string(a),
			      json_object_to_json_string(b), want);
		json_object_put(a);
		json_object_put(b);
	}
}
END_TEST

struct item {
	struct json_object *v;
	struct collate_buf enc;
};

static int item_cmp(const void *a, const void *b)
{
	return collate_cmp(((const struct item *)a)->v,
			   ((const struct item *)b)->v);
}

/* Sorting 2000 random values by the comparator sorts their encodings. */
START_TEST(test_random_sort)
{
	enum { N = 2000 };
	struct item *it = calloc(N, sizeof(*it));

	ck_assert_ptr_nonnull(it);
	rng_state = 12345;
	for (int i = 0; i < N; i++)
		it[i].v = rnd_value(0);
	qsort(it, N, sizeof(*it), item_cmp);
	for (int i = 0; i < N; i++)
		encode(it[i].v, &it[i].enc);
	for (int i = 1; i < N; i++)
		ck_assert_msg(collate_bytes_cmp(it[i - 1].enc.data,
						it[i - 1].enc.len,
						it[i].enc.data,
						it[i].enc.len) <= 0,
			      "%s sorted before %s",
			      json_object_to_json_string(it[i - 1].v),
			      json_object_to_json_string(it[i].v));
	for (int i = 0; i < N; i++) {
		size_t len = 0;

		OK(collate_key_len(it[i].enc.data, it[i].enc.len, &len));
		ck_assert_uint_eq(len, it[i].enc.len);
		json_object_put(it[i].v);
		collate_buf_release(&it[i].enc);
	}
	free(it);
}
END_TEST

struct entry {
	const char *key;
	const char *id;
};

/* [key, docid] entries sort by key then doc id; the id comes back. */
START_TEST(test_index_keys)
{
	/* in the order the index must hold them */
	static const struct entry e[] = {
		{ "null", "a" }, { "null", "b" }, { "1", "z" }, { "1.0", "zz" },
		{ "\"a\"", "" }, { "\"a\"", "\xc3\xa9" }, { "\"A\"", "A" },
		{ "\"A\"", "a" }, { "\"ab\"", "0" }, { "[\"a\"]", "x" },
		{ "[\"a\",1]", "x" }, { "{}", "doc" }, { "{}", "doc1" },
	};
	size_t n = sizeof(e) / sizeof(e[0]);
	struct collate_buf *k = calloc(n, sizeof(*k));

	ck_assert_ptr_nonnull(k);
	for (size_t i = 0; i < n; i++) {
		struct json_object *v = parse(e[i].key);
		const uint8_t *id;
		size_t keylen, idlen;
		struct collate_buf plain;
		uint8_t *bound;

		collate_buf_init(&k[i]);
		OK(collate_index_key(&k[i], v, e[i].id, strlen(e[i].id)));
		OK(collate_index_split(k[i].data, k[i].len, &keylen, &id,
				       &idlen));
		encode(v, &plain);
		ck_assert_uint_eq(keylen, plain.len);
		ck_assert_int_eq(memcmp(plain.data, k[i].data, keylen), 0);
		ck_assert_uint_eq(idlen, strlen(e[i].id));
		ck_assert_int_eq(memcmp(id, e[i].id, idlen), 0);
		/* key || 0xFF bounds every entry of this key from above */
		bound = malloc(keylen + 1);
		ck_assert_ptr_nonnull(bound);
		memcpy(bound, plain.data, keylen);
		bound[keylen] = 0xff;
		ck_assert_int_gt(collate_bytes_cmp(bound, keylen + 1,
						   k[i].data, k[i].len), 0);
		free(bound);
		collate_buf_release(&plain);
		json_object_put(v);
	}
	for (size_t i = 0; i + 1 < n; i++)
		ck_assert_msg(collate_bytes_cmp(k[i].data, k[i].len,
						k[i + 1].data,
						k[i + 1].len) < 0,
			      "entry %zu (%s, %s) not before the next", i,
			      e[i].key, e[i].id);
	for (size_t i = 0; i < n; i++)
		collate_buf_release(&k[i]);
	free(k);
}
END_TEST

/* Truncated or mistagged bytes are BARREL_E_CORRUPT, never a crash. */
START_TEST(test_bad_encodings)
{
	struct json_object *v = parse("[1,\"ab\",{\"k\":[true,null]}]");
	struct collate_buf b;
	size_t len;
	static const uint8_t bad_tag[] = { 0x61 };
	static const uint8_t obj_no_name[] = { COLLATE_OBJECT, COLLATE_NULL,
					       COLLATE_NULL, COLLATE_END };
	const uint8_t *id;
	size_t keylen, idlen;

	encode(v, &b);
	for (size_t cut = 0; cut < b.len; cut++)
		ck_assert_int_eq(collate_key_len(b.data, cut, &len),
				 BARREL_E_CORRUPT);
	OK(collate_key_len(b.data, b.len, &len));
	ck_assert_uint_eq(len, b.len);
	ck_assert_int_eq(collate_key_len(bad_tag, 1, &len), BARREL_E_CORRUPT);
	ck_assert_int_eq(collate_key_len(obj_no_name, 4, &len),
			 BARREL_E_CORRUPT);
	ck_assert_int_eq(collate_index_split(b.data, b.len - 1, &keylen, &id,
					     &idlen), BARREL_E_CORRUPT);
	collate_buf_release(&b);
	json_object_put(v);
}
END_TEST

/* Deep nesting past the limit is refused, not a stack overflow. */
START_TEST(test_depth_limit)
{
	struct json_object *root = json_object_new_array(), *cur = root;
	struct collate_buf b;

	for (unsigned i = 0; i < COLLATE_MAX_DEPTH + 5; i++) {
		struct json_object *a = json_object_new_array();

		json_object_array_add(cur, a);
		cur = a;
	}
	collate_buf_init(&b);
	ck_assert_int_eq(collate_key_append(&b, root), BARREL_E_INVALID);
	ck_assert_uint_eq(b.len, 0);
	collate_buf_release(&b);
	json_object_put(root);
}
END_TEST

struct thr {
	struct collate_buf out[64];
	int rc;
};

static void *thr_encode(void *arg)
{
	struct thr *t = arg;

	t->rc = 0;
	for (int i = 0; i < 64 && t->rc == 0; i++) {
		char text[64];
		struct json_object *v;

		snprintf(text, sizeof(text), "[\"%s\",%d]",
			 rnd_strings[i % 31], i);
		v = json_tokener_parse(text);
		collate_buf_init(&t->out[i]);
		for (int r = 0; r < 50 && t->rc == 0; r++) {
			t->out[i].len = 0;
			t->rc = collate_key_append(&t->out[i], v);
		}
		json_object_put(v);
	}
	return NULL;
}

/* Four threads encoding at once get the same bytes. */
START_TEST(test_threads)
{
	struct thr *t = calloc(4, sizeof(*t));
	pthread_t th[4];

	ck_assert_ptr_nonnull(t);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, thr_encode,
						&t[i]), 0);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(t[i].rc, 0);
		for (int j = 0; j < 64; j++) {
			ck_assert_uint_eq(t[i].out[j].len, t[0].out[j].len);
			ck_assert_int_eq(memcmp(t[i].out[j].data,
						t[0].out[j].data,
						t[0].out[j].len), 0);
		}
	}
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 64; j++)
			collate_buf_release(&t[i].out[j]);
	free(t);
}
END_TEST

/* The version names ICU and survives a shutdown and reopen. */
START_TEST(test_version_and_shutdown)
{
	struct json_object *a = parse("\"a\""), *b = parse("\"B\"");

	ck_assert_int_eq(strncmp(collate_version(), "icu-", 4), 0);
	ck_assert_ptr_null(strstr(collate_version(), "unavailable"));
	collate_shutdown();
	expect_order(a, b, -1, "after shutdown");
	OK(collate_init());
	expect_order(a, b, -1, "after init");
	json_object_put(a);
	json_object_put(b);
}
END_TEST

static Suite *collate_suite(void)
{
	Suite *s = suite_create("collate");
	TCase *tc = tcase_create("collate");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_couchdb_example_order);
	tcase_add_test(tc, test_numbers);
	tcase_add_test(tc, test_unicode_strings);
	tcase_add_test(tc, test_nested);
	tcase_add_test(tc, test_random_pairs);
	tcase_add_test(tc, test_random_sort);
	tcase_add_test(tc, test_index_keys);
	tcase_add_test(tc, test_bad_encodings);
	tcase_add_test(tc, test_depth_limit);
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_version_and_shutdown);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(collate_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	collate_shutdown();
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
