#include "config.h"

#include <check.h>
#include <stdatomic.h>
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

/* Take addr's head and check it is the text put for it. */
static void expect_head(struct hcache *c, uint64_t addr, const char *want)
{
	void *head;
	size_t len;

	ck_assert_int_eq(hcache_take(c, addr, &head, &len), 0);
	ck_assert_uint_eq(len, strlen(want));
	ck_assert(memcmp(head, want, len) == 0);
	free(head);
}

START_TEST(test_put_take)
{
	struct hcache *c = hcache_new(&total, 1 << 20);
	void *head;
	size_t len;

	ck_assert_ptr_nonnull(c);
	hcache_put(c, addr_of(1), "tree one", 8);
	hcache_put(c, addr_of(2), "", 0);
	ck_assert_uint_eq(hcache_count(c), 2);
	ck_assert_uint_eq(atomic_load(&total), hcache_bytes(c));
	expect_head(c, addr_of(1), "tree one");
	expect_head(c, addr_of(2), "");
	/* a head serves one edit */
	ck_assert_int_eq(hcache_take(c, addr_of(1), &head, &len),
			 BARREL_E_NOTFOUND);
	ck_assert_int_eq(hcache_take(c, addr_of(3), &head, &len),
			 BARREL_E_NOTFOUND);
	ck_assert_uint_eq(hcache_count(c), 0);
	ck_assert_uint_eq(hcache_bytes(c), 0);
	ck_assert_uint_eq(atomic_load(&total), 0);
	hcache_free(c);
}
END_TEST

/* A second put of one address replaces the first (not expected of the
 * engine, which never reuses an address, but it must not leak). */
START_TEST(test_put_twice)
{
	struct hcache *c = hcache_new(&total, 1 << 20);

	hcache_put(c, addr_of(5), "old", 3);
	hcache_put(c, addr_of(5), "newer", 5);
	ck_assert_uint_eq(hcache_count(c), 1);
	expect_head(c, addr_of(5), "newer");
	ck_assert_uint_eq(atomic_load(&total), 0);
	hcache_free(c);
}
END_TEST

/*
 * Many puts and takes in random order against a plain array: every head
 * cached is found with its bytes after growing and after the deletions
 * shifted clusters back, and none that was taken is found again.
 */
START_TEST(test_model)
{
	enum { N = 20000 };
	struct hcache *c = hcache_new(&total, 64 << 20);
	static unsigned char in[N];
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	char want[32];
	size_t live = 0;

	memset(in, 0, sizeof(in));
	for (unsigned step = 0; step < 8 * N; step++) {
		unsigned i;
		void *head;
		size_t len;

		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		i = (unsigned)(rng % N);
		snprintf(want, sizeof(want), "head %u", i);
		if (!in[i] && (rng >> 40) % 3) {
			hcache_put(c, addr_of(i), want, strlen(want));
			in[i] = 1;
			live++;
		} else if (in[i]) {
			expect_head(c, addr_of(i), want);
			in[i] = 0;
			live--;
		} else {
			ck_assert_int_eq(hcache_take(c, addr_of(i), &head,
						     &len), BARREL_E_NOTFOUND);
		}
		ck_assert_uint_eq(hcache_count(c), live);
	}
	for (unsigned i = 0; i < N; i++) {
		snprintf(want, sizeof(want), "head %u", i);
		if (in[i])
			expect_head(c, addr_of(i), want);
	}
	ck_assert_uint_eq(hcache_count(c), 0);
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
		hcache_put(c, addr_of(i), big, sizeof(big));
		ck_assert_uint_le(atomic_load(&total), budget);
	}
	ck_assert_uint_gt(hcache_count(c), 10);
	ck_assert_uint_lt(hcache_count(c), 1000);
	for (unsigned i = 0; i < 1000; i++) {
		void *head;
		size_t len;

		if (hcache_take(c, addr_of(i), &head, &len))
			continue;
		ck_assert_uint_eq(len, sizeof(big));
		free(head);
		found++;
	}
	ck_assert_uint_gt(found, 10);
	ck_assert_uint_lt(found, 1000);
	/* a head bigger than the whole budget is not cached */
	{
		size_t n = budget + 1;
		char *huge = calloc(1, n);

		hcache_put(c, addr_of(7), huge, n);
		ck_assert_uint_eq(hcache_count(c), 0);
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
		hcache_put(a, addr_of(i), head, sizeof(head));
	ck_assert_uint_gt(hcache_count(a), 0);
	hcache_put(b, addr_of(1), head, sizeof(head));
	ck_assert_uint_eq(hcache_count(b), 0);
	ck_assert_uint_le(atomic_load(&total), budget);
	hcache_free(a);
	ck_assert_uint_eq(atomic_load(&total), 0);
	hcache_put(b, addr_of(1), head, sizeof(head));
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
	tcase_add_test(tc, test_put_take);
	tcase_add_test(tc, test_put_twice);
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
