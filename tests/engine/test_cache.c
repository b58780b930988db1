#include "config.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cache.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

/* Objects are heap copies of their key; loads and frees are counted. */
struct obj {
	uint64_t ns, addr;
};

static atomic_ulong loads, frees;

struct load_arg {
	uint64_t ns, addr;
	size_t charge;
	int fail;               /* return this instead of loading */
	bool slow;              /* take a while, so concurrent misses overlap */
};

static int load_obj(void *arg, void **out, size_t *charge)
{
	struct load_arg *a = arg;
	struct obj *o;

	if (a->fail)
		return a->fail;
	for (volatile int spin = 0; a->slow && spin < 2000; spin++)
		;
	o = malloc(sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->ns = a->ns;
	o->addr = a->addr;
	*out = o;
	*charge = a->charge;
	atomic_fetch_add(&loads, 1);
	return 0;
}

static unsigned long nloads(void)
{
	return atomic_load(&loads);
}

static unsigned long nfrees(void)
{
	return atomic_load(&frees);
}

static void free_obj(void *p)
{
	atomic_fetch_add(&frees, 1);
	free(p);
}

/* Get (ns, addr), check the object, leave it pinned in *h. */
static void get_pinned(struct bcache *c, uint64_t ns, uint64_t addr,
		       size_t charge, struct bcache_handle **h)
{
	struct load_arg a = { ns, addr, charge, 0, false };
	const struct obj *o;

	ck_assert_int_eq(bcache_get(c, ns, addr, load_obj, &a, free_obj, h), 0);
	o = bcache_value(*h);
	ck_assert_uint_eq(o->ns, ns);
	ck_assert_uint_eq(o->addr, addr);
}

static void get_put(struct bcache *c, uint64_t ns, uint64_t addr, size_t charge)
{
	struct bcache_handle *h;

	get_pinned(c, ns, addr, charge, &h);
	bcache_put(c, h);
}

/* Is (ns, addr) cached? (looks it up with a loader that must not run) */
static bool cached(struct bcache *c, uint64_t ns, uint64_t addr)
{
	struct load_arg a = { ns, addr, 1, -EAGAIN, false };
	struct bcache_handle *h;
	int err = bcache_get(c, ns, addr, load_obj, &a, free_obj, &h);

	if (err)
		return false;
	bcache_put(c, h);
	return true;
}

static void setup(void)
{
	atomic_store(&loads, 0);
	atomic_store(&frees, 0);
}

static void teardown(void)
{
#if defined(__SANITIZE_ADDRESS__)
	ck_assert_msg(__lsan_do_recoverable_leak_check() == 0,
		      "LeakSanitizer found leaks");
#endif
}

/* Hits, misses and bytes are counted exactly; bcache_free destroys all. */
START_TEST(test_stats)
{
	struct bcache *c = bcache_new(1 << 20);
	struct bcache_stats s;

	ck_assert_ptr_nonnull(c);
	for (uint64_t a = 1; a <= 10; a++)
		get_put(c, 1, a, 100);
	for (uint64_t a = 1; a <= 10; a++)
		get_put(c, 1, a, 100);
	get_put(c, 2, 1, 50);                   /* another namespace */
	bcache_stats(c, &s);
	ck_assert_uint_eq(s.hits, 10);
	ck_assert_uint_eq(s.misses, 11);
	ck_assert_uint_eq(s.evictions, 0);
	ck_assert_uint_eq(s.bytes, 1050);
	ck_assert_uint_eq(s.budget, 1 << 20);
	ck_assert_uint_eq(nloads(), 11);
	bcache_free(c);
	ck_assert_uint_eq(nfrees(), 11);
}
END_TEST

/* With unpinned entries the charged bytes never exceed the budget, and
 * every evicted object is destroyed. */
START_TEST(test_budget)
{
	struct bcache *c = bcache_new(10000);
	struct bcache_stats s;

	for (uint64_t a = 1; a <= 5000; a++) {
		get_put(c, 1, a, 100 + a % 50);
		bcache_stats(c, &s);
		ck_assert_uint_le(s.bytes, 10000);
	}
	ck_assert_uint_gt(s.bytes, 10000 - 300);
	ck_assert_uint_eq(s.evictions, nfrees());
	ck_assert_uint_ge(s.evictions, 5000 - 100);
	bcache_free(c);
	ck_assert_uint_eq(nfrees(), nloads());
}
END_TEST

/* Pinned entries are never evicted, even far over budget; once unpinned
 * the cache shrinks back under its budget. */
START_TEST(test_pinned)
{
	struct bcache *c = bcache_new(5000);
	struct bcache_handle *h[100];
	struct bcache_stats s;

	for (uint64_t a = 0; a < 100; a++)
		get_pinned(c, 7, a, 100, &h[a]);
	bcache_stats(c, &s);
	ck_assert_uint_eq(s.bytes, 10000);      /* over budget: all pinned */
	for (uint64_t a = 1000; a < 3000; a++)
		get_put(c, 7, a, 100);
	for (uint64_t a = 0; a < 100; a++) {
		const struct obj *o = bcache_value(h[a]);

		ck_assert_uint_eq(o->addr, a);
		ck_assert(cached(c, 7, a));
	}
	for (uint64_t a = 0; a < 100; a++)
		bcache_put(c, h[a]);
	bcache_stats(c, &s);
	ck_assert_uint_le(s.bytes, 5000);
	bcache_free(c);
}
END_TEST

/* CLOCK: entries referenced between sweeps survive a stream of one-time
 * entries. */
START_TEST(test_clock_keeps_hot)
{
	struct bcache *c = bcache_new(200 * 100);

	for (uint64_t a = 0; a < 16; a++)
		get_put(c, 1, a, 100);
	for (uint64_t a = 1000; a < 11000; a++) {
		get_put(c, 1, a, 100);
		for (uint64_t h = 0; h < 16; h++)
			get_put(c, 1, h, 100);
	}
	for (uint64_t h = 0; h < 16; h++)
		ck_assert(cached(c, 1, h));
	ck_assert_uint_eq(nloads(), 16 + 10000);
	bcache_free(c);
}
END_TEST

/* A failing loader's error is returned and nothing is cached. */
START_TEST(test_load_error)
{
	struct bcache *c = bcache_new(1000);
	struct load_arg a = { 1, 1, 10, -EIO, false };
	struct bcache_handle *h;
	struct bcache_stats s;

	ck_assert_int_eq(bcache_get(c, 1, 1, load_obj, &a, free_obj, &h), -EIO);
	ck_assert(!cached(c, 1, 1));
	bcache_stats(c, &s);
	ck_assert_uint_eq(s.bytes, 0);
	bcache_free(c);
}
END_TEST

/* bcache_drop_ns drops the unpinned entries of one namespace only. */
START_TEST(test_drop_ns)
{
	struct bcache *c = bcache_new(1 << 20);
	struct bcache_handle *h;
	struct bcache_stats s;

	for (uint64_t a = 0; a < 100; a++) {
		get_put(c, 1, a, 10);
		get_put(c, 2, a, 10);
	}
	get_pinned(c, 1, 5, 10, &h);
	bcache_drop_ns(c, 1);
	ck_assert(cached(c, 1, 5));
	ck_assert(!cached(c, 1, 6));
	for (uint64_t a = 0; a < 100; a++)
		ck_assert(cached(c, 2, a));
	bcache_stats(c, &s);
	ck_assert_uint_eq(s.bytes, 1010);
	ck_assert_uint_eq(nfrees(), 99);
	bcache_put(c, h);
	bcache_free(c);
}
END_TEST

#define TH_N 4
#define TH_GETS 100000
#define TH_KEYS 700

struct th_arg {
	struct bcache *c;
	unsigned seed;
};

static void *th_run(void *p)
{
	struct th_arg *t = p;
	uint64_t x = t->seed * 2654435761u + 1;

	for (int i = 0; i < TH_GETS; i++) {
		struct bcache_handle *h;
		struct load_arg a;
		const struct obj *o;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		a = (struct load_arg){ x % 3, (x >> 8) % TH_KEYS, 64, 0, true };
		if (bcache_get(t->c, a.ns, a.addr, load_obj, &a, free_obj, &h))
			return (void *)1;
		o = bcache_value(h);
		if (o->ns != a.ns || o->addr != a.addr)
			return (void *)2;
		bcache_put(t->c, h);
	}
	return NULL;
}

/* Concurrent gets and evictions from several threads return the right
 * objects and keep the counters and the budget consistent. */
START_TEST(test_threads_evict)
{
	struct bcache *c = bcache_new(500 * 64);
	struct th_arg args[TH_N];
	pthread_t th[TH_N];
	struct bcache_stats s;
	uint64_t distinct = 0;

	for (unsigned i = 0; i < TH_N; i++) {
		args[i] = (struct th_arg){ c, i + 1 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, th_run, &args[i]),
				 0);
	}
	for (unsigned i = 0; i < TH_N; i++) {
		void *ret;

		pthread_join(th[i], &ret);
		ck_assert_ptr_null(ret);
	}
	bcache_stats(c, &s);
	ck_assert_uint_eq(s.hits + s.misses, (uint64_t)TH_N * TH_GETS);
	ck_assert_uint_le(s.bytes, 500 * 64);
	ck_assert_uint_gt(s.hits, 0);
	ck_assert_uint_gt(s.evictions, 0);
	ck_assert_uint_eq(nloads() - nfrees(),
			  s.bytes / 64);
	for (uint64_t ns = 0; ns < 3; ns++)
		for (uint64_t a = 0; a < TH_KEYS; a++)
			distinct += cached(c, ns, a);
	ck_assert_uint_eq(distinct * 64, s.bytes);
	bcache_free(c);
	ck_assert_uint_eq(nloads(), nfrees());
}
END_TEST

#define RACE_KEYS 200

static pthread_barrier_t race_bar;

/* A loader that returns only once every thread is loading the same key. */
static int load_together(void *arg, void **out, size_t *charge)
{
	pthread_barrier_wait(&race_bar);
	return load_obj(arg, out, charge);
}

static void *race_run(void *p)
{
	struct bcache *c = p;

	for (uint64_t k = 0; k < RACE_KEYS; k++) {
		struct load_arg a = { 0, k, 64, 0, false };
		struct bcache_handle *h;
		const struct obj *o;

		pthread_barrier_wait(&race_bar);
		if (bcache_get(c, 0, k, load_together, &a, free_obj, &h))
			return (void *)1;
		o = bcache_value(h);
		if (o->addr != k)
			return (void *)2;
		bcache_put(c, h);
	}
	return NULL;
}

/* Concurrent misses on one key all load it, but it is cached once: the
 * losers pin the winner's object and theirs are destroyed. */
START_TEST(test_threads_race)
{
	struct bcache *c = bcache_new(1 << 20);
	pthread_t th[TH_N];
	struct bcache_stats s;

	pthread_barrier_init(&race_bar, NULL, TH_N);
	for (unsigned i = 0; i < TH_N; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, race_run, c), 0);
	for (unsigned i = 0; i < TH_N; i++) {
		void *ret;

		pthread_join(th[i], &ret);
		ck_assert_ptr_null(ret);
	}
	pthread_barrier_destroy(&race_bar);
	bcache_stats(c, &s);
	ck_assert_uint_eq(s.misses, TH_N * RACE_KEYS);
	ck_assert_uint_eq(nloads(), TH_N * RACE_KEYS);
	ck_assert_uint_eq(nfrees(), (TH_N - 1) * RACE_KEYS);
	ck_assert_uint_eq(s.bytes, RACE_KEYS * 64);
	for (uint64_t k = 0; k < RACE_KEYS; k++)
		ck_assert(cached(c, 0, k));
	bcache_free(c);
	ck_assert_uint_eq(nloads(), nfrees());
}
END_TEST

static Suite *cache_suite(void)
{
	Suite *s = suite_create("cache");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_stats);
	tcase_add_test(tc, test_budget);
	tcase_add_test(tc, test_pinned);
	tcase_add_test(tc, test_clock_keeps_hot);
	tcase_add_test(tc, test_load_error);
	tcase_add_test(tc, test_drop_ns);
	tcase_add_test(tc, test_threads_evict);
	tcase_add_test(tc, test_threads_race);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(cache_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
