#include "config.h"

#include <check.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/hcache.h"

static _Atomic size_t total;

static void setup(void)
{
	atomic_store(&total, 0);
}

/* Record addresses as the engine makes them: segment << 32 | offset. */
static uint64_t addr_of(unsigned i)
{
	return (uint64_t)(1 + i % 7) << 32 | (64 + 8 * (uint64_t)i);
}

/* Key names as hcache_key() makes them. */
static uint64_t key_of(unsigned i)
{
	char k[16];
	int n = snprintf(k, sizeof(k), "doc-%u", i);

	return hcache_key(2, k, (size_t)n);
}

/* key's head of the record at addr is the text want. */
static void expect_head(struct hcache *c, uint64_t key, uint64_t addr,
			const char *want)
{
	void *head;
	size_t len;

	ck_assert_int_eq(hcache_get(c, key, addr, &head, &len), 0);
	ck_assert_uint_eq(len, strlen(want));
	ck_assert(memcmp(head, want, len) == 0);
	free(head);
}

static void expect_miss(struct hcache *c, uint64_t key, uint64_t addr)
{
	void *head;
	size_t len;

	ck_assert_int_eq(hcache_get(c, key, addr, &head, &len),
			 BARREL_E_NOTFOUND);
}

START_TEST(test_put_get)
{
	struct hcache *c = hcache_new(&total, 1 << 20);

	ck_assert_ptr_nonnull(c);
	ck_assert_uint_ne(hcache_key(2, "a", 1), hcache_key(3, "a", 1));
	hcache_put(c, key_of(1), addr_of(1), "tree one", 8);
	hcache_put(c, key_of(2), addr_of(2), "", 0);
	ck_assert_uint_eq(hcache_count(c), 2);
	ck_assert_uint_eq(atomic_load(&total), hcache_bytes(c));
	expect_head(c, key_of(1), addr_of(1), "tree one");
	expect_head(c, key_of(1), addr_of(1), "tree one");   /* a copy */
	expect_head(c, key_of(2), addr_of(2), "");
	/* a head of another record of the key is no head for this one */
	expect_miss(c, key_of(1), addr_of(9));
	expect_miss(c, key_of(3), addr_of(3));
	/* the key's next value replaces the head */
	hcache_put(c, key_of(1), addr_of(10), "tree two", 8);
	ck_assert_uint_eq(hcache_count(c), 2);
	expect_miss(c, key_of(1), addr_of(1));
	expect_head(c, key_of(1), addr_of(10), "tree two");
	hcache_prefetch(c, key_of(1));
	hcache_prefetch_head(c, key_of(1));
	hcache_free(c);
	ck_assert_uint_eq(atomic_load(&total), 0);
}
END_TEST

/*
 * Keys that share a home slot probe past each other; dropping one (its
 * new head does not fit) shifts the cluster back and leaves the others
 * found. Raw keys: the home is the key's top bits.
 */
START_TEST(test_collisions)
{
	struct hcache *c = hcache_new(&total, 64 << 10);
	uint64_t base = 0x1234ull << 48;
	char *huge = calloc(1, 128 << 10);

	for (unsigned i = 0; i < 8; i++)
		hcache_put(c, base + i, addr_of(i), "same home", 9);
	ck_assert_uint_eq(hcache_count(c), 8);
	hcache_put(c, base + 3, addr_of(30), huge, 128 << 10);
	ck_assert_uint_eq(hcache_count(c), 7);
	expect_miss(c, base + 3, addr_of(3));
	expect_miss(c, base + 3, addr_of(30));
	for (unsigned i = 0; i < 8; i++)
		if (i != 3)
			expect_head(c, base + i, addr_of(i), "same home");
	free(huge);
	hcache_free(c);
}
END_TEST

/*
 * Many puts and gets in random order against a plain array of each key's
 * current record: every key's latest head is found with its bytes, after
 * growing and after replacements shifted clusters back, and no older one.
 */
START_TEST(test_model)
{
	enum { N = 20000 };
	struct hcache *c = hcache_new(&total, 64 << 20);
	static unsigned ver[N];
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	char want[32];
	size_t live = 0;

	memset(ver, 0, sizeof(ver));
	hcache_reserve(c, N / 4);
	for (unsigned step = 0; step < 8 * N; step++) {
		unsigned i, v;

		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		i = (unsigned)(rng % N);
		v = ver[i];
		if ((rng >> 40) % 2) {
			live += !v;
			ver[i] = ++v;
			snprintf(want, sizeof(want), "head %u.%u", i, v);
			hcache_put(c, key_of(i), addr_of(i + N * v), want,
				   strlen(want));
		} else if (v) {
			snprintf(want, sizeof(want), "head %u.%u", i, v);
			expect_head(c, key_of(i), addr_of(i + N * v), want);
			expect_miss(c, key_of(i), addr_of(i + N * (v - 1)));
		} else {
			expect_miss(c, key_of(i), addr_of(i));
		}
		ck_assert_uint_eq(hcache_count(c), live);
	}
	for (unsigned i = 0; i < N; i++) {
		snprintf(want, sizeof(want), "head %u.%u", i, ver[i]);
		if (ver[i])
			expect_head(c, key_of(i), addr_of(i + N * ver[i]),
				    want);
	}
	hcache_free(c);
}
END_TEST

/* Over the budget a put evicts others; the charge never passes it. */
START_TEST(test_budget)
{
	char big[1000];
	size_t budget = 64 << 10;
	struct hcache *c = hcache_new(&total, budget);
	size_t found = 0;

	memset(big, 'x', sizeof(big));
	for (unsigned i = 0; i < 1000; i++) {
		hcache_put(c, key_of(i), addr_of(i), big, sizeof(big));
		ck_assert_uint_le(atomic_load(&total), budget);
	}
	ck_assert_uint_gt(hcache_count(c), 10);
	ck_assert_uint_lt(hcache_count(c), 1000);
	for (unsigned i = 0; i < 1000; i++) {
		void *head;
		size_t len;

		if (hcache_get(c, key_of(i), addr_of(i), &head, &len))
			continue;
		ck_assert_uint_eq(len, sizeof(big));
		free(head);
		found++;
	}
	ck_assert_uint_gt(found, 10);
	ck_assert_uint_lt(found, 1000);
	/* a head bigger than the whole budget is not cached (and the key's
	 * older head, if it had one, is gone) */
	{
		size_t n = budget + 1, before = hcache_count(c);
		char *huge = calloc(1, n);
		void *head;
		size_t len;
		bool had = !hcache_get(c, key_of(7), addr_of(7), &head, &len);

		if (had)
			free(head);
		hcache_put(c, key_of(7), addr_of(77), huge, n);
		ck_assert_uint_eq(hcache_count(c), before - had);
		expect_miss(c, key_of(7), addr_of(77));
		free(huge);
	}
	hcache_free(c);
	ck_assert_uint_eq(atomic_load(&total), 0);
}
END_TEST

/* Two caches share one budget: one full of heads leaves the other only
 * what is left, and freeing it gives the budget back. */
START_TEST(test_shared_budget)
{
	char head[400];
	size_t budget = 32 << 10;
	struct hcache *a = hcache_new(&total, budget);
	struct hcache *b = hcache_new(&total, budget);

	memset(head, 'h', sizeof(head));
	for (unsigned i = 0; i < 200; i++)
		hcache_put(a, key_of(i), addr_of(i), head, sizeof(head));
	ck_assert_uint_gt(hcache_count(a), 0);
	hcache_put(b, key_of(1), addr_of(1), head, sizeof(head));
	ck_assert_uint_eq(hcache_count(b), 0);
	ck_assert_uint_le(atomic_load(&total), budget);
	hcache_free(a);
	ck_assert_uint_eq(atomic_load(&total), 0);
	hcache_put(b, key_of(1), addr_of(1), head, sizeof(head));
	ck_assert_uint_eq(hcache_count(b), 1);
	hcache_free(b);
	ck_assert_uint_eq(atomic_load(&total), 0);
}
END_TEST

static Suite *hcache_suite(void)
{
	Suite *s = suite_create("hcache");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, test_put_get);
	tcase_add_test(tc, test_collisions);
	tcase_add_test(tc, test_model);
	tcase_add_test(tc, test_budget);
	tcase_add_test(tc, test_shared_budget);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(hcache_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
