#include "config.h"

/*
 * Garbage collection (engine/db.h bdb_gc, gc_thread): an update-heavy
 * workload keeps disk use near live data, loses nothing, never disturbs
 * readers, survives reopen, and deleted entries give their space back.
 */

#include <check.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/db.h"
#include "engine/error.h"
#include "tests/engine/testenv.h"

TU_BASE_FIXTURE("test_gc")


enum { NKEYS = 2000, ROUNDS = 30, BATCH = 50, READERS = 2 };

static void new_datadir(char *out, size_t size)
{
	tu_new_datadir(g_base, out, size);
}

static struct benv *env_open(const char *dir, bool gc_thread)
{
	struct benv_opts o;
	struct benv *env = NULL;

	benv_opts_init(&o);
	o.gc_thread = gc_thread;
	o.seg_min = 64u << 10;
	o.seg_max = 1u << 20;
	o.checkpoint_bytes = 256u << 10;
	OK(benv_open(dir, &o, &env));
	return env;
}

static int key_of(char *buf, size_t size, int k)
{
	return snprintf(buf, size, "key-%05d", k);
}

/* ~1 KiB, a different length per key and version. */
static size_t val_len(int k, int version)
{
	return 900 + (size_t)(((unsigned)k * 7919u + (unsigned)version * 131u) % 250u);
}

/* The model: versions[k] (-1: deleted). */
struct model {
	int versions[NKEYS];
};

static uint64_t model_live(const struct model *m)
{
	uint64_t sum = 0;
	char key[32];

	for (int k = 0; k < NKEYS; k++)
		if (m->versions[k] >= 0)
			sum += (uint64_t)key_of(key, sizeof(key), k) +
			       val_len(k, m->versions[k]);
	return sum;
}

static void write_keys(struct bdb *db, uint32_t t, struct model *m,
		       int version)
{
	char key[32], val[1200];

	for (int k = 0; k < NKEYS; k += BATCH) {
		struct btxn *txn;

		OK(bdb_begin(db, &txn));
		for (int j = k; j < k + BATCH; j++) {
			int klen = key_of(key, sizeof(key), j);
			size_t len = val_len(j, version);

			tu_value(val, len, (uint64_t)j, (uint64_t)version);
			OK(btxn_put(txn, t, key, (size_t)klen, val, len, NULL));
		}
		OK(btxn_commit(txn));
		for (int j = k; j < k + BATCH; j++)
			m->versions[j] = version;
	}
}

/* Every key byte-exact at its model version, deleted ones absent. */
static void verify(struct bdb *db, uint32_t t, const struct model *m,
		   const char *when)
{
	struct bsnap *snap;
	char key[32], val[1200];

	OK(bdb_snapshot(db, &snap));
	for (int k = 0; k < NKEYS; k++) {
		struct bval v;
		int klen = key_of(key, sizeof(key), k), rc;

		memset(&v, 0, sizeof(v));
		rc = bsnap_get(snap, t, key, (size_t)klen, &v);
		if (m->versions[k] < 0) {
			ck_assert_msg(rc == BARREL_E_NOTFOUND,
				      "%s: deleted %s: %d", when, key, rc);
			continue;
		}
		ck_assert_msg(rc == 0, "%s: %s: %d (%s)", when, key, rc,
			      barrel_strerror(rc));
		tu_value(val, val_len(k, m->versions[k]), (uint64_t)k,
			 (uint64_t)m->versions[k]);
		ck_assert_msg(v.len == val_len(k, m->versions[k]) &&
			      memcmp(v.data, val, v.len) == 0,
			      "%s: %s: wrong value (want version %d, len %zu; got len %zu)",
			      when, key, m->versions[k],
			      val_len(k, m->versions[k]), v.len);
		bval_release(&v);
	}
	bsnap_release(snap);
}

static void check_space(struct bdb *db, const struct model *m, int round)
{
	struct bdb_stat st;
	uint64_t live = model_live(m);

	OK(bdb_stat(db, &st));
	ck_assert_msg(st.live_bytes <= st.used_bytes &&
		      st.used_bytes <= st.disk_bytes,
		      "round %d: live %llu used %llu disk %llu", round,
		      (unsigned long long)st.live_bytes,
		      (unsigned long long)st.used_bytes,
		      (unsigned long long)st.disk_bytes);
	ck_assert_msg((double)st.disk_bytes <= 1.5 * (double)live,
		      "round %d: disk %llu bytes > 1.5 x live keys+values %llu "
		      "(engine: live %llu used %llu, %u segments)",
		      round, (unsigned long long)st.disk_bytes,
		      (unsigned long long)live,
		      (unsigned long long)st.live_bytes,
		      (unsigned long long)st.used_bytes, st.segments);
}

/* ---- readers running through the whole workload ---- */

struct readers {
	struct bdb *db;
	uint32_t t;
	atomic_bool stop;
	atomic_long reads, scans, errors;
	pthread_mutex_t lock;
	char first[256];  /* first error, protected by lock */
};

static void reader_fail(struct readers *r, const char *what, int k, int rc)
{
	pthread_mutex_lock(&r->lock);
	if (atomic_fetch_add(&r->errors, 1) == 0)
		snprintf(r->first, sizeof(r->first), "%s: key %d: rc %d (%s)",
			 what, k, rc, barrel_strerror(rc));
	pthread_mutex_unlock(&r->lock);
}

static void reader_scan(struct readers *r, struct bsnap *snap)
{
	struct bcursor *cur;
	struct bentry e;
	int n = 0, rc;

	rc = bsnap_scan(snap, r->t, NULL, 0, NULL, 0, 0, &cur);
	if (rc) {
		reader_fail(r, "scan", -1, rc);
		return;
	}
	while ((rc = bcursor_next(cur, &e)) == 1) {
		char key[32];
		int want = key_of(key, sizeof(key), n);

		if (e.klen != (size_t)want || memcmp(e.key, key, e.klen) ||
		    !tu_value_check(e.val, e.vlen, (uint64_t)n, NULL)) {
			reader_fail(r, "scan entry wrong", n, 0);
			break;
		}
		n++;
	}
	if (rc < 0)
		reader_fail(r, "scan next", n, rc);
	else if (n != NKEYS && rc == 0)
		reader_fail(r, "scan count", n, 0);
	bcursor_free(cur);
	atomic_fetch_add(&r->scans, 1);
}

static void *reader_thread(void *arg)
{
	struct readers *r = arg;
	struct tu_rng rng;
	unsigned iter = 0;

	tu_rng_init(&rng, (uint64_t)(uintptr_t)&rng);
	while (!atomic_load(&r->stop)) {
		struct bsnap *snap;
		int rc = bdb_snapshot(r->db, &snap);

		if (rc) {
			reader_fail(r, "snapshot", -1, rc);
			return NULL;
		}
		for (int i = 0; i < 50; i++) {
			int k = (int)tu_rng_below(&rng, NKEYS);
			char key[32];
			int klen = key_of(key, sizeof(key), k);
			struct bval v;

			memset(&v, 0, sizeof(v));
			rc = bsnap_get(snap, r->t, key, (size_t)klen, &v);
			if (rc) {
				reader_fail(r, "get", k, rc);
				continue;
			}
			if (!tu_value_check(v.data, v.len, (uint64_t)k, NULL))
				reader_fail(r, "get: wrong bytes", k, 0);
			bval_release(&v);
			atomic_fetch_add(&r->reads, 1);
		}
		if (++iter % 20 == 0)
			reader_scan(r, snap);
		bsnap_release(snap);
	}
	return NULL;
}

/*
 * 30 rounds rewriting 2000 ~1 KiB keys with GC on: disk stays within
 * 1.5x live after a GC pass, every value stays exact, readers never fail,
 * and all of it holds after reopen.
 */
START_TEST(test_gc_update_heavy)
{
	static struct model m;
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	struct readers r;
	pthread_t th[READERS];
	struct bgc_stats gs, total = { 0 };
	uint32_t t;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir, true);
	OK(benv_db(env, "db", true, &db));
	OK(bdb_begin(db, &txn));
	OK(btxn_table(txn, "docs", BDB_TABLE_SEQ, &t));
	OK(btxn_commit(txn));
	write_keys(db, t, &m, 0);
	verify(db, t, &m, "initial load");

	memset(&r, 0, sizeof(r));
	pthread_mutex_init(&r.lock, NULL);
	r.db = db;
	r.t = t;
	for (int i = 0; i < READERS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, reader_thread, &r), 0);

	for (int round = 1; round <= ROUNDS; round++) {
		char when[32];

		write_keys(db, t, &m, round);
		memset(&gs, 0, sizeof(gs));
		OK(bdb_gc(db, 1.2, &gs));
		total.segments_freed += gs.segments_freed;
		total.bytes_freed += gs.bytes_freed;
		snprintf(when, sizeof(when), "round %d", round);
		verify(db, t, &m, when);
		check_space(db, &m, round);
	}
	atomic_store(&r.stop, true);
	for (int i = 0; i < READERS; i++)
		pthread_join(th[i], NULL);
	ck_assert_msg(atomic_load(&r.errors) == 0,
		      "readers: %ld errors, first: %s", atomic_load(&r.errors),
		      r.first);
	ck_assert_int_gt(atomic_load(&r.reads), 0);
	ck_assert_int_gt(atomic_load(&r.scans), 0);
	pthread_mutex_destroy(&r.lock);
	benv_close(env);

	env = env_open(dir, true);
	OK(benv_db(env, "db", false, &db));
	OK(bdb_table(db, "docs", &t));
	verify(db, t, &m, "after reopen");
	OK(bdb_gc(db, 1.2, &gs));
	verify(db, t, &m, "after reopen and GC");
	check_space(db, &m, ROUNDS + 1);
	benv_close(env);

	env = env_open(dir, false);
	OK(benv_db(env, "db", false, &db));
	verify(db, t, &m, "after second reopen");
	benv_close(env);
}
END_TEST

/* Deleting half the keys: live figure drops by their bytes, GC frees disk. */
START_TEST(test_gc_deletes_reclaimed)
{
	static struct model m;
	char dir[PATH_MAX], key[32];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	struct bdb_stat st0, st1;
	struct bgc_stats gs;
	uint32_t t;
	uint64_t deleted = 0;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir, false);
	OK(benv_db(env, "db", true, &db));
	OK(bdb_begin(db, &txn));
	OK(btxn_table(txn, "docs", 0, &t));
	OK(btxn_commit(txn));
	write_keys(db, t, &m, 0);
	write_keys(db, t, &m, 1);
	OK(bdb_gc(db, 1.2, &gs));
	OK(bdb_stat(db, &st0));

	for (int k = 0; k < NKEYS; k += 2 * BATCH) {
		OK(bdb_begin(db, &txn));
		for (int j = k; j < k + 2 * BATCH; j += 2) {
			int klen = key_of(key, sizeof(key), j);

			OK(btxn_del(txn, t, key, (size_t)klen));
			deleted += (uint64_t)klen + val_len(j, 1);
		}
		OK(btxn_commit(txn));
		for (int j = k; j < k + 2 * BATCH; j += 2)
			m.versions[j] = -1;
	}
	memset(&gs, 0, sizeof(gs));
	OK(bdb_gc(db, 1.2, &gs));
	OK(bdb_stat(db, &st1));
	ck_assert_uint_eq(st1.entries, NKEYS / 2);
	ck_assert_msg(st1.live_bytes + deleted <= st0.live_bytes,
		      "live %llu -> %llu after deleting %llu bytes",
		      (unsigned long long)st0.live_bytes,
		      (unsigned long long)st1.live_bytes,
		      (unsigned long long)deleted);
	ck_assert_msg(st1.disk_bytes + deleted / 2 <= st0.disk_bytes,
		      "disk %llu -> %llu after deleting %llu bytes and GC",
		      (unsigned long long)st0.disk_bytes,
		      (unsigned long long)st1.disk_bytes,
		      (unsigned long long)deleted);
	verify(db, t, &m, "after deletes");
	benv_close(env);

	env = env_open(dir, false);
	OK(benv_db(env, "db", false, &db));
	verify(db, t, &m, "after deletes, reopened");
	benv_close(env);
}
END_TEST

/* One deleted 4 MiB value: GC returns its space, others untouched. */
START_TEST(test_gc_one_big_key)
{
	static struct model m;
	const size_t big = 4u << 20;
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	struct bdb_stat st0, st1;
	struct bgc_stats gs;
	uint8_t *val = malloc(big);
	uint32_t t;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir, false);
	OK(benv_db(env, "db", true, &db));
	OK(bdb_begin(db, &txn));
	OK(btxn_table(txn, "docs", 0, &t));
	OK(btxn_commit(txn));
	write_keys(db, t, &m, 0);
	tu_pattern(77, 0, val, big);
	OK(bdb_begin(db, &txn));
	OK(btxn_put(txn, t, "big", 3, val, big, NULL));
	OK(btxn_commit(txn));
	write_keys(db, t, &m, 1);   /* the big one is not in the open segment */
	OK(bdb_checkpoint(db));
	OK(bdb_stat(db, &st0));

	OK(bdb_begin(db, &txn));
	OK(btxn_del(txn, t, "big", 3));
	OK(btxn_commit(txn));
	memset(&gs, 0, sizeof(gs));
	OK(bdb_gc(db, 1.2, &gs));
	OK(bdb_stat(db, &st1));
	ck_assert_msg(st1.live_bytes + big <= st0.live_bytes,
		      "live %llu -> %llu after deleting a 4 MiB value",
		      (unsigned long long)st0.live_bytes,
		      (unsigned long long)st1.live_bytes);
	ck_assert_msg(st1.disk_bytes + 3 * (big / 4) <= st0.disk_bytes,
		      "disk %llu -> %llu after deleting a 4 MiB value and GC",
		      (unsigned long long)st0.disk_bytes,
		      (unsigned long long)st1.disk_bytes);
	ck_assert_uint_gt(gs.bytes_freed, 0);
	verify(db, t, &m, "after deleting big");
	benv_close(env);
	free(val);
}
END_TEST

/* ---- retained records (BDB_TABLE_RETAIN) ---- */

struct retain_seen {
	uint64_t keep;         /* the address the hook says is retained */
	uint32_t saved;        /* where it copies that record's value */
	unsigned calls, kept;
	bool bad_key;
};

/* A retain hook: the record at keep is retained; its value goes to
 * "saved" in the table saved; every other superseded record is garbage. */
static int hook_keep(void *arg, struct btxn *txn, uint32_t table,
		     const void *key, size_t klen, const void *val,
		     size_t vlen, uint64_t addr)
{
	struct retain_seen *rs = arg;

	(void)table;
	rs->calls++;
	if (klen != 1 || memcmp(key, "a", 1))
		rs->bad_key |= klen < 4 || memcmp(key, "key-", 4);
	if (addr != rs->keep)
		return 0;
	rs->kept++;
	return btxn_put(txn, rs->saved, "saved", 5, val, vlen, NULL) ?: 1;
}

static void put_val(struct bdb *db, uint32_t t, const char *key, int v,
		    bool retain)
{
	uint8_t val[1000];
	struct btxn *txn;

	tu_value(val, sizeof(val), (uint64_t)key[0], (uint64_t)v);
	OK(bdb_begin(db, &txn));
	if (retain)
		OK(btxn_put_retain(txn, t, key, strlen(key), val, sizeof(val),
				   NULL));
	else
		OK(btxn_put(txn, t, key, strlen(key), val, sizeof(val), NULL));
	OK(btxn_commit(txn));
}

static uint64_t addr_of(struct bdb *db, uint32_t t, const char *key)
{
	struct btxn *txn;
	struct bval v;
	uint64_t addr;

	OK(bdb_begin(db, &txn));
	OK(btxn_get(txn, t, key, strlen(key), &v));
	addr = v.addr;
	bval_release(&v);
	btxn_abort(txn);
	ck_assert_uint_ne(addr, 0);
	return addr;
}

static void expect_at(struct bdb *db, uint32_t t, const char *key,
		      uint64_t addr, int version)
{
	struct bsnap *snap;
	struct bval v;
	uint64_t got = 0;

	OK(bdb_snapshot(db, &snap));
	OK(bsnap_get_at(snap, t, key, strlen(key), addr, &v));
	ck_assert_uint_eq(v.addr, addr);
	ck_assert(tu_value_check(v.data, v.len, (uint64_t)key[0], &got));
	ck_assert_uint_eq(got, (uint64_t)version);
	bval_release(&v);
	bsnap_release(snap);
}

/* A retained record stays live and readable by address; GC leaves a
 * retaining table alone without its hook, asks the hook with one, and a
 * release gives the space back. */
START_TEST(test_gc_retained)
{
	static struct model m;
	struct retain_seen rs = { 0 };
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	struct bsnap *snap;
	struct bdb_stat st0, st1;
	struct bgc_stats gs;
	struct bval v;
	uint64_t a1, a2, got = 0;
	uint32_t t, plain, keys;
	uint8_t val[1000];

	new_datadir(dir, sizeof(dir));
	env = env_open(dir, false);
	OK(benv_db(env, "db", true, &db));
	OK(bdb_begin(db, &txn));
	OK(btxn_table(txn, "r", BDB_TABLE_SEQ | BDB_TABLE_RETAIN, &t));
	OK(btxn_table(txn, "plain", BDB_TABLE_SEQ, &plain));
	OK(btxn_table(txn, "keys", 0, &keys));
	OK(btxn_commit(txn));
	ck_assert_uint_eq(bdb_table_flags(db, t),
			  BDB_TABLE_SEQ | BDB_TABLE_RETAIN);
	put_val(db, t, "a", 1, false);
	put_val(db, plain, "a", 1, false);
	a1 = addr_of(db, t, "a");

	/* refused: a table that does not retain */
	tu_value(val, sizeof(val), 'a', 2);
	OK(bdb_begin(db, &txn));
	ck_assert_int_eq(btxn_put_retain(txn, plain, "a", 1, val, sizeof(val),
					 NULL), BARREL_E_INVALID);
	btxn_abort(txn);

	OK(bdb_stat(db, &st0));
	put_val(db, t, "a", 2, true);
	OK(bdb_stat(db, &st1));
	ck_assert_uint_ge(st1.live_bytes, st0.live_bytes + sizeof(val));
	expect_at(db, t, "a", a1, 1);
	a2 = addr_of(db, t, "a");
	expect_at(db, t, "a", a2, 2);
	/* an address read as another key's, or in no record, is corrupt */
	OK(bdb_snapshot(db, &snap));
	ck_assert_int_eq(bsnap_get_at(snap, t, "b", 1, a1, &v),
			 BARREL_E_CORRUPT);
	ck_assert_int_eq(bsnap_get_at(snap, t, "a", 1, a1 + 8, &v),
			 BARREL_E_CORRUPT);
	bsnap_release(snap);

	/* garbage around it: GC without the hook refuses and moves nothing */
	write_keys(db, keys, &m, 0);
	write_keys(db, keys, &m, 1);
	put_val(db, t, "a", 3, false);            /* a2 is plain garbage */
	ck_assert_int_eq(bdb_gc(db, 1.0, &gs), BARREL_E_CLOSED);
	expect_at(db, t, "a", a1, 1);

	/* with it: the hook is asked about a1 and a2 and keeps a1 */
	rs.keep = a1;
	rs.saved = plain;
	OK(bdb_retain_hook(db, t, hook_keep, &rs));
	memset(&gs, 0, sizeof(gs));
	OK(bdb_gc(db, 1.0, &gs));
	ck_assert_uint_gt(gs.segments_freed, 0);
	ck_assert_uint_eq(rs.kept, 1);
	ck_assert_uint_ge(rs.calls, 2);
	ck_assert(!rs.bad_key);
	OK(bdb_snapshot(db, &snap));
	OK(bsnap_get(snap, plain, "saved", 5, &v));
	ck_assert(tu_value_check(v.data, v.len, 'a', &got));
	ck_assert_uint_eq(got, 1);
	bval_release(&v);
	bsnap_release(snap);
	verify(db, keys, &m, "after GC with a retain hook");

	/* a release: the retained record's bytes are no longer live */
	a2 = addr_of(db, t, "a");
	put_val(db, t, "a", 4, true);
	OK(bdb_stat(db, &st0));
	OK(bdb_begin(db, &txn));
	ck_assert_int_eq(btxn_release(txn, plain, a2), BARREL_E_CORRUPT);
	OK(btxn_release(txn, t, a2));
	OK(btxn_commit(txn));
	OK(bdb_stat(db, &st1));
	ck_assert_uint_le(st1.live_bytes + sizeof(val), st0.live_bytes);

	/* the flag outlives a reopen; the hook does not */
	benv_close(env);
	env = env_open(dir, false);
	OK(benv_db(env, "db", false, &db));
	ck_assert_uint_eq(bdb_table_flags(db, t),
			  BDB_TABLE_SEQ | BDB_TABLE_RETAIN);
	ck_assert_int_eq(bdb_gc(db, 1.0, &gs), BARREL_E_CLOSED);
	verify(db, keys, &m, "after reopen");
	benv_close(env);
}
END_TEST

static Suite *gc_suite(void)
{
	Suite *s = suite_create("gc");
	TCase *tc = tcase_create("gc");

	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_gc_update_heavy);
	tcase_add_test(tc, test_gc_deletes_reclaimed);
	tcase_add_test(tc, test_gc_one_big_key);
	tcase_add_test(tc, test_gc_retained);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(gc_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
