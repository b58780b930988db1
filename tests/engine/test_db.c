#include "config.h"

/*
 * The engine's public API (engine/db.h) end to end on the real I/O
 * implementation: environments and the DATADIR lock, databases, tables,
 * transactions, snapshots, cursors, the changes feed, sequence numbers and
 * commit notification, group commit, reader atomicity, persistence across
 * reopen (with and without a clean close), and the space figures.
 */

#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/db.h"
#include "engine/error.h"
#include "tests/engine/testenv.h"

/* Every test's files live under g_base, made and removed by the parent. */
TU_BASE_FIXTURE("test_db")


#define EXPECT_RC(expr, want)                                            \
	do {                                                             \
		int rc_ = (expr);                                        \
		ck_assert_msg(rc_ == (want), "%s returned %d (%s), want %d (%s)", \
			      #expr, rc_, barrel_strerror(rc_), (int)(want), \
			      barrel_strerror(want));                    \
	} while (0)

static void new_datadir(char *out, size_t size)
{
	tu_new_datadir(g_base, out, size);
}

/* Defaults, no background GC, small segments and frequent checkpoints. */
static void small_opts(struct benv_opts *o)
{
	benv_opts_init(o);
	o->gc_thread = false;
	o->seg_min = 64u << 10;
	o->seg_max = 256u << 10;
	o->checkpoint_bytes = 128u << 10;
}

static struct benv *env_open(const char *dir)
{
	struct benv_opts o;
	struct benv *env = NULL;

	small_opts(&o);
	OK(benv_open(dir, &o, &env));
	ck_assert_ptr_nonnull(env);
	return env;
}

static struct bdb *db_get(struct benv *env, const char *name)
{
	struct bdb *db = NULL;

	OK(benv_db(env, name, true, &db));
	ck_assert_ptr_nonnull(db);
	return db;
}

static uint32_t mk_table(struct bdb *db, const char *name, unsigned flags)
{
	struct btxn *txn;
	uint32_t id = 0, id2 = 0;

	OK(bdb_begin(db, &txn));
	OK(btxn_table(txn, name, flags, &id));
	OK(btxn_commit(txn));
	OK(bdb_table(db, name, &id2));
	ck_assert_uint_eq(id, id2);
	return id;
}

/* Put one key in its own transaction; returns the entry's seq (SEQ tables). */
static uint64_t put1(struct bdb *db, uint32_t t, const void *key, size_t klen,
		     const void *val, size_t vlen)
{
	struct btxn *txn;
	uint64_t seq = 0;

	OK(bdb_begin(db, &txn));
	OK(btxn_put(txn, t, key, klen, val, vlen, &seq));
	OK(btxn_commit(txn));
	return seq;
}

static uint64_t puts1(struct bdb *db, uint32_t t, const char *key,
		      const char *val)
{
	return put1(db, t, key, strlen(key), val, strlen(val));
}

static void del1(struct bdb *db, uint32_t t, const char *key)
{
	struct btxn *txn;

	OK(bdb_begin(db, &txn));
	OK(btxn_del(txn, t, key, strlen(key)));
	OK(btxn_commit(txn));
}

/* Look key up in a fresh snapshot. */
static int sget(struct bdb *db, uint32_t t, const void *key, size_t klen,
		struct bval *v)
{
	struct bsnap *snap;
	int rc;

	memset(v, 0, sizeof(*v));
	OK(bdb_snapshot(db, &snap));
	rc = bsnap_get(snap, t, key, klen, v);
	bsnap_release(snap);
	return rc;
}

static void expect_val(struct bdb *db, uint32_t t, const void *key,
		       size_t klen, const void *val, size_t vlen)
{
	struct bval v;
	int rc = sget(db, t, key, klen, &v);

	ck_assert_msg(rc == 0, "get %.*s: %d (%s)", (int)klen,
		      (const char *)key, rc, barrel_strerror(rc));
	ck_assert_msg(v.len == vlen, "get %.*s: length %zu, want %zu",
		      (int)klen, (const char *)key, v.len, vlen);
	ck_assert_msg(vlen == 0 || memcmp(v.data, val, vlen) == 0,
		      "get %.*s: value bytes differ", (int)klen,
		      (const char *)key);
	bval_release(&v);
}

static void expect_str(struct bdb *db, uint32_t t, const char *key,
		       const char *val)
{
	expect_val(db, t, key, strlen(key), val, strlen(val));
}

static void expect_missing(struct bdb *db, uint32_t t, const char *key)
{
	struct bval v;

	EXPECT_RC(sget(db, t, key, strlen(key), &v), BARREL_E_NOTFOUND);
}

/* ---- environments ---- */

static int collect_name(void *arg, const char *name)
{
	char *buf = arg;
	size_t n = strlen(buf);

	snprintf(buf + n, 4096 - n, "%s%s", n ? "," : "", name);
	return 0;
}

static void list_names(struct benv *env, char *buf)
{
	buf[0] = '\0';
	OK(benv_list(env, collect_name, buf));
}

/* An env opens (creating DATADIR), closes, and reopens with its databases. */
START_TEST(test_env_open_close_reopen)
{
	char dir[PATH_MAX], names[4096];
	struct benv *env;
	struct bdb *db, *db2;
	struct stat st;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	ck_assert_int_eq(stat(dir, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	db = db_get(env, "alpha");
	ck_assert_str_eq(bdb_name(db), "alpha");
	/* the same handle for every open of a name */
	OK(benv_db(env, "alpha", false, &db2));
	ck_assert_ptr_eq(db, db2);
	benv_close(env);

	env = env_open(dir);
	list_names(env, names);
	ck_assert_str_eq(names, "alpha");
	OK(benv_db(env, "alpha", false, &db));
	ck_assert_str_eq(bdb_name(db), "alpha");
	benv_close(env);
}
END_TEST

/* Run benv_open(dir) in a child process; returns its result code. */
static int open_in_child(const char *dir)
{
	int fds[2], rc = -9999, status;
	pid_t pid;

	ck_assert_int_eq(pipe(fds), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct benv_opts o;
		struct benv *env = NULL;
		int r;

		close(fds[0]);
		small_opts(&o);
		r = benv_open(dir, &o, &env);
		if (r == 0)
			benv_close(env);
		if (write(fds[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
			_exit(2);
		_exit(0);
	}
	close(fds[1]);
	if (read(fds[0], &rc, sizeof(rc)) != (ssize_t)sizeof(rc))
		rc = -9999;
	close(fds[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "child did not exit cleanly (status %d)", status);
	return rc;
}

/* DATADIR is locked: another process gets BARREL_E_LOCKED until close. */
START_TEST(test_env_lock)
{
	char dir[PATH_MAX];
	struct benv *env;
	int rc;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db_get(env, "locked");
	rc = open_in_child(dir);
	ck_assert_msg(rc == BARREL_E_LOCKED,
		      "second open from another process: %d (%s), want LOCKED",
		      rc, barrel_strerror(rc));
	benv_close(env);
	rc = open_in_child(dir);
	ck_assert_msg(rc == 0, "open after close: %d (%s)", rc,
		      barrel_strerror(rc));
	/* and this process can take it again */
	env = env_open(dir);
	benv_close(env);
}
END_TEST

/* ---- databases ---- */

static int stop_after_one(void *arg, const char *name)
{
	(void)name;
	++*(int *)arg;
	return 1;
}

/* Databases are created, listed in sorted order, dropped, and stay so. */
START_TEST(test_db_create_list_drop)
{
	char dir[PATH_MAX], names[4096];
	struct benv *env;
	struct bdb *db;
	uint32_t t;
	int calls = 0;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	list_names(env, names);
	ck_assert_str_eq(names, "");
	EXPECT_RC(benv_db(env, "zeta", false, &db), BARREL_E_NOTFOUND);
	db_get(env, "zeta");
	db_get(env, "alpha");
	db_get(env, "m1");
	db_get(env, "shop/orders");
	db_get(env, "m1-b");
	list_names(env, names);
	ck_assert_str_eq(names, "alpha,m1,m1-b,shop/orders,zeta");
	benv_list(env, stop_after_one, &calls);
	ck_assert_int_eq(calls, 1);

	/* a dropped database is gone, and comes back empty */
	db = db_get(env, "m1");
	t = mk_table(db, "t", 0);
	puts1(db, t, "k", "v");
	OK(benv_drop(env, "m1"));
	list_names(env, names);
	ck_assert_str_eq(names, "alpha,m1-b,shop/orders,zeta");
	EXPECT_RC(benv_db(env, "m1", false, &db), BARREL_E_NOTFOUND);
	ck_assert_int_lt(benv_drop(env, "m1"), 0);
	benv_close(env);

	env = env_open(dir);
	list_names(env, names);
	ck_assert_str_eq(names, "alpha,m1-b,shop/orders,zeta");
	EXPECT_RC(benv_db(env, "m1", false, &db), BARREL_E_NOTFOUND);
	db = db_get(env, "m1");
	EXPECT_RC(bdb_table(db, "t", &t), BARREL_E_NOTFOUND);
	OK(benv_db(env, "shop/orders", false, &db));
	ck_assert_str_eq(bdb_name(db), "shop/orders");
	benv_close(env);
}
END_TEST

/* Names follow CouchDB's rule; bad ones are refused with INVALID. */
START_TEST(test_db_names)
{
	static const char *good[] = { "a", "abc", "a1", "a_b", "a$b", "a(b)",
				      "a+b", "a-b", "a/b", "z0_$()+-/",
				      "_replicator", "_users" };
	static const char *bad[] = { "", "A", "Abc", "1a", "_a", "$a", "a b",
				     "_replicatorx", "_global_changes",
				     "a.b", "a\xc3\xa9", "-a", "/a", "aB" };
	char dir[PATH_MAX], name[BDB_MAX_NAME + 2];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	uint32_t id;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(bdb_name_valid(good[i]), "'%s' should be valid",
			      good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!bdb_name_valid(bad[i]), "'%s' should be invalid",
			      bad[i]);
	memset(name, 'a', BDB_MAX_NAME);
	name[BDB_MAX_NAME] = '\0';
	ck_assert(bdb_name_valid(name));
	name[BDB_MAX_NAME] = 'a';
	name[BDB_MAX_NAME + 1] = '\0';
	ck_assert(!bdb_name_valid(name));

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		EXPECT_RC(benv_db(env, bad[i], true, &db), BARREL_E_INVALID);
	EXPECT_RC(benv_db(env, name, true, &db), BARREL_E_INVALID);
	name[BDB_MAX_NAME] = '\0';
	db = db_get(env, name);
	ck_assert_str_eq(bdb_name(db), name);

	OK(bdb_begin(db, &txn));
	EXPECT_RC(btxn_table(txn, "Bad Name", 0, &id), BARREL_E_INVALID);
	EXPECT_RC(btxn_table(txn, "", 0, &id), BARREL_E_INVALID);
	btxn_abort(txn);
	benv_close(env);
}
END_TEST

/* ---- tables ---- */

/* Table ids are distinct, stable across reopen, and named back. */
START_TEST(test_tables_ids_stable)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	uint32_t a, b, c, a2, x, d;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	EXPECT_RC(bdb_table(db, "docs", &x), BARREL_E_NOTFOUND);

	/* an aborted creation leaves nothing */
	OK(bdb_begin(db, &txn));
	OK(btxn_table(txn, "ghost", 0, &x));
	btxn_abort(txn);
	EXPECT_RC(bdb_table(db, "ghost", &x), BARREL_E_NOTFOUND);

	OK(bdb_begin(db, &txn));
	OK(btxn_table(txn, "docs", BDB_TABLE_SEQ, &a));
	OK(btxn_table(txn, "local", 0, &b));
	OK(btxn_table(txn, "views", 0, &c));
	OK(btxn_table(txn, "docs", BDB_TABLE_SEQ, &a2));
	ck_assert_uint_eq(a, a2);
	OK(btxn_commit(txn));
	ck_assert(a != b && b != c && a != c);
	OK(bdb_table(db, "docs", &x));
	ck_assert_uint_eq(x, a);
	OK(bdb_table(db, "local", &x));
	ck_assert_uint_eq(x, b);
	ck_assert_str_eq(bdb_table_name(db, a), "docs");
	ck_assert_str_eq(bdb_table_name(db, c), "views");
	puts1(db, b, "k", "v");
	benv_close(env);

	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	OK(bdb_table(db, "docs", &x));
	ck_assert_uint_eq(x, a);
	OK(bdb_table(db, "local", &x));
	ck_assert_uint_eq(x, b);
	OK(bdb_table(db, "views", &x));
	ck_assert_uint_eq(x, c);
	ck_assert_str_eq(bdb_table_name(db, b), "local");
	expect_str(db, b, "k", "v");
	/* existing table: same id; a new one: a new id */
	OK(bdb_begin(db, &txn));
	OK(btxn_table(txn, "local", 0, &x));
	ck_assert_uint_eq(x, b);
	OK(btxn_table(txn, "more", 0, &d));
	OK(btxn_commit(txn));
	ck_assert(d != a && d != b && d != c);
	benv_close(env);
}
END_TEST

static int count_scan(struct bdb *db, uint32_t t)
{
	struct bsnap *snap;
	struct bcursor *cur;
	struct bentry e;
	int n = 0, rc;

	OK(bdb_snapshot(db, &snap));
	OK(bsnap_scan(snap, t, NULL, 0, NULL, 0, 0, &cur));
	while ((rc = bcursor_next(cur, &e)) == 1)
		n++;
	ck_assert_int_eq(rc, 0);
	bcursor_free(cur);
	bsnap_release(snap);
	return n;
}

/* Dropping a table removes it and its entries; recreated, it is empty. */
START_TEST(test_table_drop)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	uint32_t t, keep, x;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "gone", BDB_TABLE_SEQ);
	keep = mk_table(db, "keep", 0);
	puts1(db, t, "a", "1");
	puts1(db, t, "b", "2");
	puts1(db, keep, "a", "kept");
	OK(bdb_begin(db, &txn));
	OK(btxn_table_drop(txn, "gone"));
	OK(btxn_commit(txn));
	EXPECT_RC(bdb_table(db, "gone", &x), BARREL_E_NOTFOUND);
	expect_str(db, keep, "a", "kept");
	benv_close(env);

	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	EXPECT_RC(bdb_table(db, "gone", &x), BARREL_E_NOTFOUND);
	t = mk_table(db, "gone", BDB_TABLE_SEQ);
	ck_assert_int_eq(count_scan(db, t), 0);
	expect_missing(db, t, "a");
	OK(bdb_table(db, "keep", &x));
	ck_assert_uint_eq(x, keep);
	expect_str(db, keep, "a", "kept");
	benv_close(env);
}
END_TEST

/* ---- put / get / del ---- */

/* put, overwrite, delete and NOTFOUND behave as a map. */
START_TEST(test_put_get_del)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	uint32_t t, u;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "t", 0);
	u = mk_table(db, "u", 0);
	expect_missing(db, t, "k");
	puts1(db, t, "k", "one");
	expect_str(db, t, "k", "one");
	/* tables are separate key spaces */
	expect_missing(db, u, "k");
	puts1(db, u, "k", "other");
	puts1(db, t, "k", "two, longer than one");
	expect_str(db, t, "k", "two, longer than one");
	puts1(db, t, "k", "3");
	expect_str(db, t, "k", "3");
	expect_str(db, u, "k", "other");
	del1(db, t, "k");
	expect_missing(db, t, "k");
	expect_str(db, u, "k", "other");

	OK(bdb_begin(db, &txn));
	EXPECT_RC(btxn_del(txn, t, "k", 1), BARREL_E_NOTFOUND);
	EXPECT_RC(btxn_del(txn, t, "never", 5), BARREL_E_NOTFOUND);
	btxn_abort(txn);

	/* put again after delete */
	puts1(db, t, "k", "back");
	expect_str(db, t, "k", "back");
	/* keys are bytes: embedded NULs, prefixes */
	put1(db, t, "a\0b", 3, "nul", 3);
	put1(db, t, "a", 1, "short", 5);
	expect_val(db, t, "a\0b", 3, "nul", 3);
	expect_val(db, t, "a", 1, "short", 5);
	benv_close(env);

	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	expect_str(db, t, "k", "back");
	expect_val(db, t, "a\0b", 3, "nul", 3);
	expect_str(db, u, "k", "other");
	benv_close(env);
}
END_TEST

/* Values of 0 B, 1 B, 1 KiB and 1 MiB round-trip byte for byte. */
START_TEST(test_value_sizes)
{
	static const size_t sizes[] = { 0, 1, 1024, 1u << 20, 4095, 4097 };
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	char dir[PATH_MAX], key[32];
	struct benv *env;
	struct bdb *db;
	uint32_t t;
	void *val[N];

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "t", BDB_TABLE_SEQ);
	for (int i = 0; i < N; i++) {
		val[i] = malloc(sizes[i] ? sizes[i] : 1);
		tu_pattern(100 + i, 0, val[i], sizes[i]);
		snprintf(key, sizeof(key), "size-%zu", sizes[i]);
		put1(db, t, key, strlen(key), val[i], sizes[i]);
	}
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "size-%zu", sizes[i]);
		expect_val(db, t, key, strlen(key), val[i], sizes[i]);
	}
	benv_close(env);

	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "size-%zu", sizes[i]);
		expect_val(db, t, key, strlen(key), val[i], sizes[i]);
		free(val[i]);
	}
	benv_close(env);
}
END_TEST

/* Keys and values at the limits work; one byte over is TOOBIG. */
START_TEST(test_toobig)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	uint32_t t;
	uint8_t *key, *val;

	key = malloc(BDB_MAX_KEY + 1);
	val = malloc(BDB_MAX_VALUE + 1);
	tu_pattern(7, 0, key, BDB_MAX_KEY + 1);
	tu_pattern(8, 0, val, BDB_MAX_VALUE + 1);
	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "t", 0);

	OK(bdb_begin(db, &txn));
	EXPECT_RC(btxn_put(txn, t, key, BDB_MAX_KEY + 1, "v", 1, NULL),
		  BARREL_E_TOOBIG);
	EXPECT_RC(btxn_put(txn, t, "k", 1, val, BDB_MAX_VALUE + 1, NULL),
		  BARREL_E_TOOBIG);
	btxn_abort(txn);

	OK(bdb_begin(db, &txn));
	OK(btxn_put(txn, t, key, BDB_MAX_KEY, "maxkey", 6, NULL));
	OK(btxn_put(txn, t, "maxval", 6, val, BDB_MAX_VALUE, NULL));
	OK(btxn_commit(txn));
	expect_val(db, t, key, BDB_MAX_KEY, "maxkey", 6);
	expect_val(db, t, "maxval", 6, val, BDB_MAX_VALUE);
	/* the over-long key was never stored under its prefix either */
	ck_assert_int_eq(count_scan(db, t), 2);
	benv_close(env);

	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	expect_val(db, t, key, BDB_MAX_KEY, "maxkey", 6);
	expect_val(db, t, "maxval", 6, val, BDB_MAX_VALUE);
	benv_close(env);
	free(key);
	free(val);
}
END_TEST

/* An aborted transaction leaves no trace, now or after reopen. */
START_TEST(test_abort)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	struct bval v;
	uint32_t t;
	uint64_t seq0;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "t", BDB_TABLE_SEQ);
	puts1(db, t, "keep", "old");
	seq0 = bdb_seq(db);

	OK(bdb_begin(db, &txn));
	OK(btxn_put(txn, t, "new", 3, "x", 1, NULL));
	OK(btxn_put(txn, t, "keep", 4, "changed", 7, NULL));
	OK(btxn_del(txn, t, "new", 3));
	OK(btxn_put(txn, t, "new2", 4, "y", 1, NULL));
	memset(&v, 0, sizeof(v));
	OK(btxn_get(txn, t, "new2", 4, &v));
	ck_assert_uint_eq(v.len, 1);
	bval_release(&v);
	btxn_abort(txn);

	expect_missing(db, t, "new");
	expect_missing(db, t, "new2");
	expect_str(db, t, "keep", "old");
	ck_assert_uint_eq(bdb_seq(db), seq0);
	ck_assert_int_eq(count_scan(db, t), 1);
	/* the writer slot was released */
	puts1(db, t, "after", "abort");
	benv_close(env);

	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	expect_missing(db, t, "new2");
	expect_str(db, t, "keep", "old");
	expect_str(db, t, "after", "abort");
	ck_assert_int_eq(count_scan(db, t), 2);
	benv_close(env);
}
END_TEST

/* btxn_put_ex() of val whose first hlen bytes are the head. */
static int put_head(struct btxn *txn, uint32_t t, const char *key,
		    const void *val, size_t vlen, size_t hlen, unsigned flags,
		    uint64_t *seq)
{
	struct bput_value v = { val, hlen, (const char *)val + hlen,
				vlen - hlen };

	return btxn_put_ex(txn, t, key, strlen(key), &v, flags, seq);
}

#define LONG_VALUE "a value longer than the 48 bytes the index keeps inline"

/* btxn_get_head() of key in a new transaction: *whole, and the bytes. */
static void get_head(struct bdb *db, uint32_t t, const char *key,
		     bool want_whole, const char *want)
{
	struct btxn *txn;
	struct bval v = { 0 };
	bool whole = !want_whole;

	OK(bdb_begin(db, &txn));
	OK(btxn_get_head(txn, t, key, strlen(key), &v, &whole));
	ck_assert_msg(whole == want_whole, "%s: whole %d", key, whole);
	ck_assert_msg(v.len == strlen(want) && !memcmp(v.data, want, v.len),
		      "%s: got %.*s, want %s", key, (int)v.len,
		      (char *)v.data, want);
	bval_release(&v);
	btxn_abort(txn);
}

/* A value's head comes from the cache after the commit; everything else
 * (a value of the reading transaction, a later value put without a head,
 * a head a failed transaction framed, a head too big) reads the record. */
START_TEST(test_value_heads)
{
	const char *val = "TREE|a body that stays on disk, longer than a "
			  "value the index keeps inline";
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	struct bval v = { 0 }, v2 = { 0 };
	struct bdb_stat st;
	uint64_t seq;
	uint32_t t, plain;
	bool whole = false;
	char *big;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "t", BDB_TABLE_SEQ | BDB_TABLE_RETAIN);
	plain = mk_table(db, "plain", 0);

	OK(bdb_begin(db, &txn));
	OK(put_head(txn, t, "k", val, strlen(val), 5, 0, &seq));
	/* the transaction's own value is read whole */
	OK(btxn_get_head(txn, t, "k", 1, &v, &whole));
	ck_assert(whole);
	ck_assert_uint_eq(v.len, strlen(val));
	bval_release(&v);
	OK(btxn_commit(txn));

	OK(bdb_begin(db, &txn));
	OK(btxn_get_head(txn, t, "k", 1, &v, &whole));
	ck_assert(!whole);
	ck_assert_uint_eq(v.len, 5);
	ck_assert(memcmp(v.data, "TREE|", 5) == 0);
	ck_assert_uint_eq(v.seq, seq);
	OK(btxn_get(txn, t, "k", 1, &v2));
	ck_assert_uint_eq(v.addr, v2.addr);   /* the record the head is of */
	bval_release(&v);
	bval_release(&v2);
	btxn_abort(txn);
	/* still there for the next edit (a failed one, say) */
	get_head(db, t, "k", false, "TREE|");
	/* a put without a head: the key's next value is read whole */
	OK(bdb_begin(db, &txn));
	OK(btxn_put(txn, t, "k", 1, val, strlen(val), NULL));
	OK(btxn_commit(txn));
	get_head(db, t, "k", true, val);

	/* bad flags; a head too big to keep */
	OK(bdb_begin(db, &txn));
	EXPECT_RC(put_head(txn, t, "k", "abc", 3, 1, 1u << 7, NULL),
		  BARREL_E_INVALID);
	EXPECT_RC(put_head(txn, plain, "k", "abc", 3, 1, BPUT_RETAIN, NULL),
		  BARREL_E_INVALID);
	big = calloc(1, BDB_MAX_HEAD + 2);
	memset(big, 'b', BDB_MAX_HEAD + 1);
	OK(put_head(txn, t, "big", big, BDB_MAX_HEAD + 1, BDB_MAX_HEAD + 1, 0,
		    NULL));
	OK(btxn_commit(txn));
	get_head(db, t, "big", true, big);

	/* An aborted transaction caches nothing: the next one frames its
	 * records at the very same addresses. */
	OK(bdb_begin(db, &txn));
	OK(put_head(txn, t, "a", LONG_VALUE "?", strlen(LONG_VALUE) + 1, 7, 0,
		    NULL));
	btxn_abort(txn);
	OK(bdb_begin(db, &txn));
	OK(btxn_put(txn, t, "a", 1, LONG_VALUE, strlen(LONG_VALUE), NULL));
	OK(btxn_commit(txn));
	get_head(db, t, "a", true, LONG_VALUE);

	/* a value too small for a record lives in the index: read whole */
	OK(bdb_begin(db, &txn));
	OK(put_head(txn, t, "s", "tiny", 4, 2, 0, NULL));
	OK(btxn_commit(txn));
	get_head(db, t, "s", true, "tiny");

	OK(bdb_stat(db, &st));
	ck_assert_uint_eq(st.head_hits, 2);
	ck_assert_uint_eq(st.head_misses, 3);
	benv_close(env);

	/* the cache is of the process: after a reopen the record is read */
	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	get_head(db, t, "big", true, big);
	benv_close(env);
	free(big);
}
END_TEST

/*
 * A transaction that outgrows its segment moves its records to a new one
 * (txn_move): the heads cached at the commit are of the records' final
 * places, each the head of its own value.
 */
START_TEST(test_value_heads_moved)
{
	enum { N = 60, VLEN = 8000 };
	char dir[PATH_MAX], key[16], *val = malloc(VLEN);
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	struct bdb_stat st;
	uint32_t t;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "t", 0);
	OK(bdb_begin(db, &txn));
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "k%02d", i);
		memset(val, 'a' + i % 26, VLEN);
		memcpy(val, key, 3);
		OK(put_head(txn, t, key, val, VLEN, 3, 0, NULL));
	}
	OK(btxn_commit(txn));
	OK(bdb_stat(db, &st));
	ck_assert_uint_gt(st.segments, 1);    /* 480 KB: it moved */
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "k%02d", i);
		get_head(db, t, key, false, key);
	}
	OK(bdb_stat(db, &st));
	ck_assert_uint_eq(st.head_hits, N);
	benv_close(env);
	free(val);
}
END_TEST

/* btxn_get sees the transaction's own writes and deletes, others don't. */
START_TEST(test_txn_reads_own_writes)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	struct bval v;
	uint32_t t;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "t", 0);
	puts1(db, t, "c", "committed");
	puts1(db, t, "d", "to delete");

	OK(bdb_begin(db, &txn));
	memset(&v, 0, sizeof(v));
	OK(btxn_get(txn, t, "c", 1, &v));
	ck_assert_uint_eq(v.len, 9);
	ck_assert_int_eq(memcmp(v.data, "committed", 9), 0);
	bval_release(&v);
	OK(btxn_put(txn, t, "c", 1, "mine", 4, NULL));
	OK(btxn_del(txn, t, "d", 1));
	OK(btxn_get(txn, t, "c", 1, &v));
	ck_assert_uint_eq(v.len, 4);
	ck_assert_int_eq(memcmp(v.data, "mine", 4), 0);
	bval_release(&v);
	EXPECT_RC(btxn_get(txn, t, "d", 1, &v), BARREL_E_NOTFOUND);
	/* not visible to readers before commit */
	expect_str(db, t, "c", "committed");
	expect_str(db, t, "d", "to delete");
	OK(btxn_commit(txn));
	expect_str(db, t, "c", "mine");
	expect_missing(db, t, "d");
	benv_close(env);
}
END_TEST

/* A snapshot sees the state when taken, not later commits. */
START_TEST(test_snapshot_isolation)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct bsnap *before, *after;
	struct bdb_stat st;
	uint64_t cps;
	struct bval v;
	uint32_t t;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "t", BDB_TABLE_SEQ);
	puts1(db, t, "a", "a1");
	puts1(db, t, "b", "b1");

	OK(bdb_snapshot(db, &before));
	puts1(db, t, "a", "a2");
	del1(db, t, "b");
	puts1(db, t, "c", "c1");
	OK(bdb_snapshot(db, &after));

	memset(&v, 0, sizeof(v));
	OK(bsnap_get(before, t, "a", 1, &v));
	ck_assert_uint_eq(v.len, 2);
	ck_assert_int_eq(memcmp(v.data, "a1", 2), 0);
	bval_release(&v);
	OK(bsnap_get(before, t, "b", 1, &v));
	ck_assert_int_eq(memcmp(v.data, "b1", 2), 0);
	bval_release(&v);
	EXPECT_RC(bsnap_get(before, t, "c", 1, &v), BARREL_E_NOTFOUND);

	OK(bsnap_get(after, t, "a", 1, &v));
	ck_assert_int_eq(memcmp(v.data, "a2", 2), 0);
	bval_release(&v);
	EXPECT_RC(bsnap_get(after, t, "b", 1, &v), BARREL_E_NOTFOUND);
	OK(bsnap_get(after, t, "c", 1, &v));
	ck_assert_int_eq(memcmp(v.data, "c1", 2), 0);
	bval_release(&v);

	ck_assert_uint_lt(bsnap_seq(before), bsnap_seq(after));
	ck_assert_uint_eq(bsnap_seq(after), bdb_seq(db));

	/* a checkpoint does not disturb an old snapshot; bdb_stat counts it */
	OK(bdb_stat(db, &st));
	cps = st.checkpoints;
	OK(bdb_checkpoint(db));
	OK(bdb_stat(db, &st));
	ck_assert_uint_eq(st.checkpoints, cps + 1);
	OK(bsnap_get(before, t, "a", 1, &v));
	ck_assert_int_eq(memcmp(v.data, "a1", 2), 0);
	bval_release(&v);
	bsnap_release(before);
	bsnap_release(after);
	benv_close(env);
}
END_TEST

/* ---- cursors ---- */

struct kv {
	const char *key;
	size_t klen;
};

/* Scan [start, end) with flags; compare keys (and values "v:KEY"). */
static void expect_scan(struct bdb *db, uint32_t t, const char *start,
			const char *end, unsigned flags,
			const struct kv *want, size_t nwant)
{
	struct bsnap *snap;
	struct bcursor *cur;
	struct bentry e;
	size_t n = 0;
	int rc;

	OK(bdb_snapshot(db, &snap));
	OK(bsnap_scan(snap, t, start, start ? strlen(start) : 0, end,
		      end ? strlen(end) : 0, flags, &cur));
	while ((rc = bcursor_next(cur, &e)) == 1) {
		char vbuf[64];
		int vl;

		ck_assert_msg(n < nwant,
			      "scan [%s,%s) flags %u: extra entry '%.*s'",
			      start ? start : "-", end ? end : "-", flags,
			      (int)e.klen, (const char *)e.key);
		ck_assert_msg(e.klen == want[n].klen &&
			      memcmp(e.key, want[n].key, e.klen) == 0,
			      "scan [%s,%s) flags %u: entry %zu is '%.*s', want '%.*s'",
			      start ? start : "-", end ? end : "-", flags, n,
			      (int)e.klen, (const char *)e.key,
			      (int)want[n].klen, want[n].key);
		vl = snprintf(vbuf, sizeof(vbuf), "v:%.*s", (int)e.klen,
			      (const char *)e.key);
		ck_assert_uint_eq(e.vlen, (size_t)vl);
		ck_assert_int_eq(memcmp(e.val, vbuf, e.vlen), 0);
		n++;
	}
	ck_assert_int_eq(rc, 0);
	ck_assert_msg(n == nwant, "scan [%s,%s) flags %u: %zu entries, want %zu",
		      start ? start : "-", end ? end : "-", flags, n, nwant);
	bcursor_free(cur);
	bsnap_release(snap);
}

static void put_kv(struct btxn *txn, uint32_t t, const char *key, size_t klen)
{
	char vbuf[64];
	int vl = snprintf(vbuf, sizeof(vbuf), "v:%.*s", (int)klen, key);

	OK(btxn_put(txn, t, key, klen, vbuf, (size_t)vl, NULL));
}

/* Scans return keys in memcmp order, forward and reverse, within bounds. */
START_TEST(test_scan_order_bounds)
{
	static char keys[100][16];
	struct kv all[100], want[100];
	/* memcmp order, shorter prefix first */
	static const struct kv bin[] = {
		{ "\x00", 1 }, { "\x00\x00", 2 }, { "\x01", 1 }, { "a", 1 },
		{ "ab", 2 }, { "abc", 3 }, { "b", 1 }, { "\x7f", 1 },
		{ "\x80", 1 }, { "\xff", 1 }, { "\xff\x00", 2 },
	};
	enum { NB = sizeof(bin) / sizeof(bin[0]) };
	struct kv binrev[NB];
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	struct tu_rng rng;
	uint32_t t, tb;
	int order[100];
	size_t n;

	for (int i = 0; i < 100; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%02d", i);
		all[i].key = keys[i];
		all[i].klen = 3;
		order[i] = i;
	}
	tu_rng_init(&rng, 42);
	for (int i = 99; i > 0; i--) {
		int j = (int)tu_rng_below(&rng, (uint64_t)i + 1), tmp = order[i];

		order[i] = order[j];
		order[j] = tmp;
	}

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "t", 0);
	tb = mk_table(db, "bin", 0);
	/* inserted in random order, in several transactions */
	for (int i = 0; i < 100; i += 10) {
		OK(bdb_begin(db, &txn));
		for (int j = i; j < i + 10; j++)
			put_kv(txn, t, keys[order[j]], 3);
		OK(btxn_commit(txn));
	}
	OK(bdb_begin(db, &txn));
	for (int i = NB - 1; i >= 0; i -= 2)
		put_kv(txn, tb, bin[i].key, bin[i].klen);
	for (int i = NB - 2; i >= 0; i -= 2)
		put_kv(txn, tb, bin[i].key, bin[i].klen);
	OK(btxn_commit(txn));

	expect_scan(db, t, NULL, NULL, 0, all, 100);
	for (int i = 0; i < 100; i++)
		want[i] = all[99 - i];
	expect_scan(db, t, NULL, NULL, BCURSOR_REVERSE, want, 100);
	expect_scan(db, t, "k10", "k20", 0, all + 10, 10);
	expect_scan(db, t, "k10", "k20", BCURSOR_END_INCLUSIVE, all + 10, 11);
	for (int i = 0; i < 10; i++)
		want[i] = all[19 - i];
	expect_scan(db, t, "k10", "k20", BCURSOR_REVERSE, want, 10);
	for (int i = 0; i < 11; i++)
		want[i] = all[20 - i];
	expect_scan(db, t, "k10", "k20",
		    BCURSOR_REVERSE | BCURSOR_END_INCLUSIVE, want, 11);
	expect_scan(db, t, "k95", NULL, 0, all + 95, 5);
	expect_scan(db, t, NULL, "k03", 0, all, 3);
	expect_scan(db, t, NULL, "k03", BCURSOR_END_INCLUSIVE, all, 4);
	/* bounds between keys */
	expect_scan(db, t, "k10x", "k12x", 0, all + 11, 2);
	expect_scan(db, t, "k50", "k50", 0, all, 0);
	expect_scan(db, t, "k50", "k50", BCURSOR_END_INCLUSIVE, all + 50, 1);
	expect_scan(db, t, "l", NULL, 0, all, 0);
	expect_scan(db, t, NULL, "a", BCURSOR_REVERSE, all, 0);
	/* a deleted key disappears from scans */
	del1(db, t, "k05");
	n = 0;
	for (int i = 0; i < 10; i++)
		if (i != 5)
			want[n++] = all[i];
	expect_scan(db, t, "k00", "k10", 0, want, n);

	expect_scan(db, tb, NULL, NULL, 0, bin, NB);
	for (int i = 0; i < NB; i++)
		binrev[i] = bin[NB - 1 - i];
	expect_scan(db, tb, NULL, NULL, BCURSOR_REVERSE, binrev, NB);
	benv_close(env);

	/* the same after reopen */
	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	expect_scan(db, tb, NULL, NULL, 0, bin, NB);
	expect_scan(db, t, "k00", "k10", 0, want, n);
	benv_close(env);
}
END_TEST

/* ---- the changes feed and sequence numbers ---- */

struct change {
	const char *key;
	uint64_t seq;
	const char *val;
};

static void expect_changes_snap(struct bsnap *snap, uint32_t t, uint64_t since,
				unsigned flags, const struct change *want,
				size_t nwant)
{
	struct bcursor *cur;
	struct bentry e;
	size_t n = 0;
	int rc;

	OK(bsnap_changes(snap, t, since, flags, &cur));
	while ((rc = bcursor_next(cur, &e)) == 1) {
		ck_assert_msg(n < nwant, "changes since %llu: extra '%.*s' seq %llu",
			      (unsigned long long)since, (int)e.klen,
			      (const char *)e.key, (unsigned long long)e.seq);
		ck_assert_msg(e.klen == strlen(want[n].key) &&
			      memcmp(e.key, want[n].key, e.klen) == 0 &&
			      e.seq == want[n].seq,
			      "changes since %llu flags %u: entry %zu is '%.*s'@%llu, want '%s'@%llu",
			      (unsigned long long)since, flags, n, (int)e.klen,
			      (const char *)e.key, (unsigned long long)e.seq,
			      want[n].key, (unsigned long long)want[n].seq);
		ck_assert_uint_eq(e.vlen, strlen(want[n].val));
		ck_assert_int_eq(memcmp(e.val, want[n].val, e.vlen), 0);
		n++;
	}
	ck_assert_int_eq(rc, 0);
	ck_assert_msg(n == nwant, "changes since %llu: %zu entries, want %zu",
		      (unsigned long long)since, n, nwant);
	bcursor_free(cur);
}

static void expect_changes(struct bdb *db, uint32_t t, uint64_t since,
			   unsigned flags, const struct change *want,
			   size_t nwant)
{
	struct bsnap *snap;

	OK(bdb_snapshot(db, &snap));
	expect_changes_snap(snap, t, since, flags, want, nwant);
	bsnap_release(snap);
}

/* The changes feed lists live entries once each, at their latest seq. */
START_TEST(test_changes_feed)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct bsnap *old;
	struct btxn *txn;
	struct bval v;
	uint32_t t;
	uint64_t s[6], s2b, sdel, s6, s7, s8;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "docs", BDB_TABLE_SEQ);
	s[1] = puts1(db, t, "k1", "v1");
	s[2] = puts1(db, t, "k2", "v2");
	s[3] = puts1(db, t, "k3", "v3");
	s[4] = puts1(db, t, "k4", "v4");
	s[5] = puts1(db, t, "k5", "v5");
	for (int i = 2; i <= 5; i++)
		ck_assert_uint_eq(s[i], s[i - 1] + 1);
	ck_assert_uint_eq(bdb_seq(db), s[5]);

	{
		struct change w[] = { { "k1", s[1], "v1" }, { "k2", s[2], "v2" },
				      { "k3", s[3], "v3" }, { "k4", s[4], "v4" },
				      { "k5", s[5], "v5" } };
		struct change r[] = { w[4], w[3], w[2], w[1], w[0] };

		expect_changes(db, t, 0, 0, w, 5);
		expect_changes(db, t, s[2], 0, w + 2, 3);
		expect_changes(db, t, s[5], 0, w, 0);
		expect_changes(db, t, 0, BCURSOR_REVERSE, r, 5);
		expect_changes(db, t, s[3], BCURSOR_REVERSE, r, 2);
	}

	OK(bdb_snapshot(db, &old));
	/* updating k2 moves it to the end, at its new seq */
	s2b = puts1(db, t, "k2", "v2b");
	ck_assert_uint_eq(s2b, s[5] + 1);
	memset(&v, 0, sizeof(v));
	OK(sget(db, t, "k2", 2, &v));
	ck_assert_uint_eq(v.seq, s2b);
	bval_release(&v);
	{
		struct change w[] = { { "k1", s[1], "v1" }, { "k3", s[3], "v3" },
				      { "k4", s[4], "v4" }, { "k5", s[5], "v5" },
				      { "k2", s2b, "v2b" } };
		struct change r[] = { w[4], w[3], w[2], w[1], w[0] };
		struct change was[] = { { "k1", s[1], "v1" }, { "k2", s[2], "v2" },
					{ "k3", s[3], "v3" }, { "k4", s[4], "v4" },
					{ "k5", s[5], "v5" } };

		expect_changes(db, t, 0, 0, w, 5);
		expect_changes(db, t, s[3], 0, w + 2, 3);
		expect_changes(db, t, 0, BCURSOR_REVERSE, r, 5);
		/* the old snapshot still sees the old feed */
		expect_changes_snap(old, t, 0, 0, was, 5);
	}
	bsnap_release(old);

	/* a delete takes a number and removes the key from the feed */
	del1(db, t, "k4");
	sdel = bdb_seq(db);
	ck_assert_uint_eq(sdel, s2b + 1);
	/* one transaction, several entries: consecutive numbers */
	OK(bdb_begin(db, &txn));
	OK(btxn_put(txn, t, "k6", 2, "v6", 2, &s6));
	OK(btxn_put(txn, t, "k7", 2, "v7", 2, &s7));
	OK(btxn_put(txn, t, "k6", 2, "v6b", 3, &s8));
	OK(btxn_commit(txn));
	ck_assert_uint_eq(s6, sdel + 1);
	ck_assert_uint_eq(s7, sdel + 2);
	ck_assert_uint_eq(s8, sdel + 3);
	ck_assert_uint_eq(bdb_seq(db), s8);
	{
		struct change w[] = { { "k1", s[1], "v1" }, { "k3", s[3], "v3" },
				      { "k5", s[5], "v5" }, { "k2", s2b, "v2b" },
				      { "k7", s7, "v7" }, { "k6", s8, "v6b" } };

		expect_changes(db, t, 0, 0, w, 6);
		benv_close(env);

		env = env_open(dir);
		OK(benv_db(env, "db", false, &db));
		ck_assert_uint_eq(bdb_seq(db), s8);
		expect_changes(db, t, 0, 0, w, 6);
		expect_changes(db, t, s2b, 0, w + 4, 2);
	}
	/* numbering continues after reopen */
	ck_assert_uint_eq(puts1(db, t, "k9", "v9"), s8 + 1);
	benv_close(env);
}
END_TEST

/* bsnap_seq and bdb_seq follow commits; get reports the entry's seq. */
START_TEST(test_seq_numbers)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct bsnap *s1, *s2;
	struct bval v;
	uint32_t t;
	uint64_t a, b;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "docs", BDB_TABLE_SEQ);
	a = puts1(db, t, "a", "1");
	ck_assert_uint_gt(a, 0);
	OK(bdb_snapshot(db, &s1));
	ck_assert_uint_eq(bsnap_seq(s1), a);
	ck_assert_uint_eq(bdb_seq(db), a);
	b = puts1(db, t, "b", "2");
	ck_assert_uint_gt(b, a);
	ck_assert_uint_eq(bdb_seq(db), b);
	ck_assert_uint_eq(bsnap_seq(s1), a);
	OK(bdb_snapshot(db, &s2));
	ck_assert_uint_eq(bsnap_seq(s2), b);
	memset(&v, 0, sizeof(v));
	OK(bsnap_get(s2, t, "a", 1, &v));
	ck_assert_uint_eq(v.seq, a);
	bval_release(&v);
	OK(bsnap_get(s2, t, "b", 1, &v));
	ck_assert_uint_eq(v.seq, b);
	bval_release(&v);
	bsnap_release(s1);
	bsnap_release(s2);
	benv_close(env);
}
END_TEST

/* ---- waiting and watching ---- */

struct waiter {
	struct bdb *db;
	uint64_t seq;
	int timeout_ms;
	int rc;
	uint64_t elapsed_ms;
	uint64_t seq_at_wake;
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;
	uint64_t t0 = tu_now_ms();

	w->rc = bdb_wait(w->db, w->seq, w->timeout_ms);
	w->elapsed_ms = tu_now_ms() - t0;
	w->seq_at_wake = bdb_seq(w->db);
	return NULL;
}

/* bdb_wait wakes when another thread commits. */
START_TEST(test_wait_wakes)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	struct waiter w;
	pthread_t th;
	uint32_t t;
	uint64_t s;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "docs", BDB_TABLE_SEQ);
	puts1(db, t, "a", "1");

	memset(&w, 0, sizeof(w));
	w.db = db;
	w.seq = bdb_seq(db);
	w.timeout_ms = 10000;
	ck_assert_int_eq(pthread_create(&th, NULL, wait_thread, &w), 0);
	tu_sleep_ms(300);
	s = puts1(db, t, "b", "2");
	pthread_join(th, NULL);
	ck_assert_int_eq(w.rc, 1);
	ck_assert_msg(w.elapsed_ms >= 250 && w.elapsed_ms < 5000,
		      "woke after %llu ms", (unsigned long long)w.elapsed_ms);
	ck_assert_uint_ge(w.seq_at_wake, s);

	/* already past: returns at once, also with a 0 timeout */
	ck_assert_int_eq(bdb_wait(db, s - 1, 5000), 1);
	ck_assert_int_eq(bdb_wait(db, s - 1, 0), 1);
	benv_close(env);
}
END_TEST

/* bdb_wait times out when nothing commits; 0 polls. */
START_TEST(test_wait_timeout)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	uint32_t t;
	uint64_t t0, el;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "docs", BDB_TABLE_SEQ);
	puts1(db, t, "a", "1");
	t0 = tu_now_ms();
	ck_assert_int_eq(bdb_wait(db, bdb_seq(db), 300), 0);
	el = tu_now_ms() - t0;
	ck_assert_msg(el >= 280 && el < 3000, "timed out after %llu ms",
		      (unsigned long long)el);
	t0 = tu_now_ms();
	ck_assert_int_eq(bdb_wait(db, bdb_seq(db), 0), 0);
	ck_assert_uint_lt(tu_now_ms() - t0, 100);
	benv_close(env);
}
END_TEST

struct watch_log {
	pthread_mutex_t lock;
	uint64_t seqs[64];
	int n;
};

static void watch_cb(void *arg, uint64_t seq)
{
	struct watch_log *l = arg;

	pthread_mutex_lock(&l->lock);
	if (l->n < 64)
		l->seqs[l->n] = seq;
	l->n++;
	pthread_mutex_unlock(&l->lock);
}

static int watch_count(struct watch_log *l)
{
	int n;

	pthread_mutex_lock(&l->lock);
	n = l->n;
	pthread_mutex_unlock(&l->lock);
	return n;
}

/* A watch callback fires once per commit with its seq; unwatch stops it. */
START_TEST(test_watch)
{
	char dir[PATH_MAX], key[16];
	struct benv *env;
	struct bdb *db;
	struct watch_log log = { .lock = PTHREAD_MUTEX_INITIALIZER };
	uint64_t id, want[5];
	uint32_t t;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "docs", BDB_TABLE_SEQ);
	OK(bdb_watch(db, watch_cb, &log, &id));
	for (int i = 0; i < 5; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		want[i] = puts1(db, t, key, "v");
	}
	for (int i = 0; i < 100 && watch_count(&log) < 5; i++)
		tu_sleep_ms(10);
	ck_assert_int_eq(watch_count(&log), 5);
	for (int i = 0; i < 5; i++)
		ck_assert_uint_eq(log.seqs[i], want[i]);
	bdb_unwatch(db, id);
	puts1(db, t, "after", "v");
	tu_sleep_ms(50);
	ck_assert_int_eq(watch_count(&log), 5);
	benv_close(env);
}
END_TEST

/* ---- concurrency ---- */

enum { GC_THREADS = 8, GC_TXNS = 200 };

struct gc_worker {
	struct bdb *db;
	uint32_t table;
	int id;
	pthread_barrier_t *start;
	uint64_t seqs[GC_TXNS];
	int failed_rc;
	int failed_at;
};

static void *group_commit_thread(void *arg)
{
	struct gc_worker *w = arg;
	char key[32], val[128];

	pthread_barrier_wait(w->start);
	for (int j = 0; j < GC_TXNS; j++) {
		struct btxn *txn;
		int klen = snprintf(key, sizeof(key), "t%d-%03d", w->id, j);
		int rc;

		tu_value(val, sizeof(val), (uint64_t)w->id * 1000 + j, 1);
		rc = bdb_begin(w->db, &txn);
		if (rc == 0) {
			rc = btxn_put(txn, w->table, key, (size_t)klen, val,
				      sizeof(val), &w->seqs[j]);
			if (rc == 0)
				rc = btxn_commit(txn);
			else
				btxn_abort(txn);
		}
		if (rc) {
			w->failed_rc = rc;
			w->failed_at = j;
			return NULL;
		}
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* 8 threads x 200 commits: all land, with unique, dense seq numbers. */
START_TEST(test_group_commit)
{
	static struct gc_worker w[GC_THREADS];
	static uint64_t all[GC_THREADS * GC_TXNS];
	char dir[PATH_MAX], key[32], val[128];
	struct benv *env;
	struct bdb *db;
	pthread_barrier_t start;
	pthread_t th[GC_THREADS];
	uint32_t t;
	uint64_t seq0;
	int n = 0;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "docs", BDB_TABLE_SEQ);
	seq0 = bdb_seq(db);
	pthread_barrier_init(&start, NULL, GC_THREADS);
	for (int i = 0; i < GC_THREADS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].db = db;
		w[i].table = t;
		w[i].id = i;
		w[i].start = &start;
		ck_assert_int_eq(pthread_create(&th[i], NULL,
						group_commit_thread, &w[i]), 0);
	}
	for (int i = 0; i < GC_THREADS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&start);
	for (int i = 0; i < GC_THREADS; i++)
		ck_assert_msg(w[i].failed_rc == 0,
			      "thread %d txn %d failed: %d (%s)", i,
			      w[i].failed_at, w[i].failed_rc,
			      barrel_strerror(w[i].failed_rc));

	for (int i = 0; i < GC_THREADS; i++) {
		for (int j = 0; j < GC_TXNS; j++) {
			struct bval v;
			int klen = snprintf(key, sizeof(key), "t%d-%03d", i, j);

			tu_value(val, sizeof(val), (uint64_t)i * 1000 + j, 1);
			OK(sget(db, t, key, (size_t)klen, &v));
			ck_assert_uint_eq(v.len, sizeof(val));
			ck_assert_int_eq(memcmp(v.data, val, sizeof(val)), 0);
			ck_assert_uint_eq(v.seq, w[i].seqs[j]);
			bval_release(&v);
			all[n++] = w[i].seqs[j];
		}
	}
	qsort(all, (size_t)n, sizeof(all[0]), cmp_u64);
	ck_assert_uint_eq(all[0], seq0 + 1);
	for (int i = 1; i < n; i++)
		ck_assert_msg(all[i] == all[i - 1] + 1,
			      "seqs not dense/unique: %llu then %llu",
			      (unsigned long long)all[i - 1],
			      (unsigned long long)all[i]);
	ck_assert_uint_eq(bdb_seq(db), seq0 + (uint64_t)n);
	ck_assert_int_eq(count_scan(db, t), n);
	benv_close(env);

	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	ck_assert_int_eq(count_scan(db, t), n);
	ck_assert_uint_eq(bdb_seq(db), seq0 + (uint64_t)n);
	benv_close(env);
}
END_TEST

enum { RA_READERS = 3, RA_TXNS = 400 };

struct ra_state {
	struct bdb *db;
	uint32_t ta, tb;
	atomic_bool done;
	atomic_int violations;
	atomic_long reads;
	pthread_mutex_t lock;
	char first[256];     /* first violation, protected by lock */
};

static void ra_fail(struct ra_state *s, const char *msg, long a, long b)
{
	pthread_mutex_lock(&s->lock);
	if (atomic_fetch_add(&s->violations, 1) == 0)
		snprintf(s->first, sizeof(s->first), "%s (%ld vs %ld)", msg,
			 a, b);
	pthread_mutex_unlock(&s->lock);
}

/* -1 when missing, -2 on error, else the counter stored. */
static long ra_get(struct bsnap *snap, uint32_t t, const char *key)
{
	struct bval v;
	char buf[32];
	long n;
	int rc;

	memset(&v, 0, sizeof(v));
	rc = bsnap_get(snap, t, key, strlen(key), &v);
	if (rc == BARREL_E_NOTFOUND)
		return -1;
	if (rc)
		return -2;
	if (v.len == 0 || v.len >= sizeof(buf)) {
		bval_release(&v);
		return -3;
	}
	memcpy(buf, v.data, v.len);
	buf[v.len] = '\0';
	bval_release(&v);
	n = strtol(buf, NULL, 10);
	return n;
}

static void *ra_reader(void *arg)
{
	struct ra_state *s = arg;
	long last = -1;
	uint64_t last_seq = 0;

	while (!atomic_load(&s->done)) {
		struct bsnap *snap;
		long a, b;

		if (bdb_snapshot(s->db, &snap)) {
			ra_fail(s, "bdb_snapshot failed", 0, 0);
			return NULL;
		}
		if (bsnap_seq(snap) < last_seq)
			ra_fail(s, "snapshot seq went back",
				(long)bsnap_seq(snap), (long)last_seq);
		last_seq = bsnap_seq(snap);
		a = ra_get(snap, s->ta, "a");
		b = ra_get(snap, s->tb, "b");
		bsnap_release(snap);
		atomic_fetch_add(&s->reads, 1);
		if (a < -1 || b < -1)
			ra_fail(s, "read error", a, b);
		else if (a != b)
			ra_fail(s, "partial transaction seen: a != b", a, b);
		else if (a < last)
			ra_fail(s, "counter went back", a, last);
		last = a;
	}
	return NULL;
}

/* Readers never see half a transaction, nor time going backwards. */
START_TEST(test_readers_atomic)
{
	char dir[PATH_MAX], val[32];
	struct benv *env;
	struct ra_state s;
	pthread_t th[RA_READERS];

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	memset(&s, 0, sizeof(s));
	pthread_mutex_init(&s.lock, NULL);
	s.db = db_get(env, "db");
	s.ta = mk_table(s.db, "ta", BDB_TABLE_SEQ);
	s.tb = mk_table(s.db, "tb", 0);
	for (int i = 0; i < RA_READERS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, ra_reader, &s), 0);
	for (int c = 0; c < RA_TXNS; c++) {
		struct btxn *txn;
		int n = snprintf(val, sizeof(val), "%d", c);

		OK(bdb_begin(s.db, &txn));
		OK(btxn_put(txn, s.ta, "a", 1, val, (size_t)n, NULL));
		/* filler between the two, so they are not adjacent records */
		OK(btxn_put(txn, s.ta, "filler", 6, dir, strlen(dir), NULL));
		OK(btxn_put(txn, s.tb, "b", 1, val, (size_t)n, NULL));
		OK(btxn_commit(txn));
		if (c % 100 == 50)
			OK(bdb_checkpoint(s.db));
	}
	atomic_store(&s.done, true);
	for (int i = 0; i < RA_READERS; i++)
		pthread_join(th[i], NULL);
	ck_assert_msg(atomic_load(&s.violations) == 0, "%d violations; first: %s",
		      atomic_load(&s.violations), s.first);
	ck_assert_int_gt(atomic_load(&s.reads), 0);
	pthread_mutex_destroy(&s.lock);
	benv_close(env);
}
END_TEST

/* ---- persistence ---- */

enum { P_KEYS = 400 };

static size_t p_len(int k, int version)
{
	return 1 + (size_t)((k * 37 + version * 101) % 3000);
}

static void p_put(struct btxn *txn, uint32_t t, int k, int version)
{
	char key[16], val[3100];
	size_t len = p_len(k, version);
	int klen = snprintf(key, sizeof(key), "p%05d", k);

	tu_value(val, len, (uint64_t)k, (uint64_t)version);
	OK(btxn_put(txn, t, key, (size_t)klen, val, len, NULL));
}

/* versions[k]: 0 absent, else the version stored. Checks gets and a scan. */
static void p_verify(struct bdb *db, uint32_t t, const int *versions)
{
	struct bsnap *snap;
	struct bcursor *cur;
	struct bentry e;
	char key[16], val[3100];
	int live = 0, seen = 0, rc;

	OK(bdb_snapshot(db, &snap));
	for (int k = 0; k < P_KEYS; k++) {
		struct bval v;
		int klen = snprintf(key, sizeof(key), "p%05d", k);

		memset(&v, 0, sizeof(v));
		rc = bsnap_get(snap, t, key, (size_t)klen, &v);
		if (!versions[k]) {
			ck_assert_msg(rc == BARREL_E_NOTFOUND,
				      "%s should be absent: %d", key, rc);
			continue;
		}
		live++;
		ck_assert_msg(rc == 0, "%s: %d (%s)", key, rc,
			      barrel_strerror(rc));
		tu_value(val, p_len(k, versions[k]), (uint64_t)k,
			 (uint64_t)versions[k]);
		ck_assert_msg(v.len == p_len(k, versions[k]) &&
			      memcmp(v.data, val, v.len) == 0,
			      "%s: wrong value (want version %d)", key,
			      versions[k]);
		bval_release(&v);
	}
	OK(bsnap_scan(snap, t, NULL, 0, NULL, 0, 0, &cur));
	while ((rc = bcursor_next(cur, &e)) == 1) {
		int k;

		ck_assert(e.klen == 6 && ((const char *)e.key)[0] == 'p');
		k = atoi((const char *)e.key + 1);
		ck_assert_msg(k >= 0 && k < P_KEYS && versions[k],
			      "scan: unexpected key %.*s", (int)e.klen,
			      (const char *)e.key);
		seen++;
	}
	ck_assert_int_eq(rc, 0);
	bcursor_free(cur);
	bsnap_release(snap);
	ck_assert_int_eq(seen, live);
}

/*
 * The persistence workload: 300 keys in commits of 10, a checkpoint,
 * then overwrites, new keys and deletes after it. versions is the model.
 */
static void p_workload(struct bdb *db, uint32_t t, int *versions)
{
	struct btxn *txn;
	char key[16];

	for (int k = 0; k < 300; k += 10) {
		OK(bdb_begin(db, &txn));
		for (int j = k; j < k + 10; j++) {
			p_put(txn, t, j, 1);
			versions[j] = 1;
		}
		OK(btxn_commit(txn));
	}
	OK(bdb_checkpoint(db));
	for (int k = 200; k < P_KEYS; k += 20) {
		OK(bdb_begin(db, &txn));
		for (int j = k; j < k + 20; j++) {
			p_put(txn, t, j, 2);
			versions[j] = 2;
		}
		OK(btxn_commit(txn));
	}
	OK(bdb_begin(db, &txn));
	for (int k = 0; k < 50; k++) {
		int klen = snprintf(key, sizeof(key), "p%05d", k);

		OK(btxn_del(txn, t, key, (size_t)klen));
		versions[k] = 0;
	}
	OK(btxn_commit(txn));
}

/* Everything committed is there after close and reopen. */
START_TEST(test_persist_close_reopen)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	uint32_t t;
	int versions[P_KEYS] = { 0 };
	uint64_t seq;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "t", BDB_TABLE_SEQ);
	p_workload(db, t, versions);
	p_verify(db, t, versions);
	seq = bdb_seq(db);
	benv_close(env);

	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	ck_assert_uint_eq(bdb_seq(db), seq);
	p_verify(db, t, versions);
	benv_close(env);
	/* and a second time, after a close that had nothing to write */
	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	p_verify(db, t, versions);
	benv_close(env);
}
END_TEST

/*
 * Commits after the last checkpoint are replayed when the process died
 * without closing (a child runs the workload and _exits).
 */
START_TEST(test_persist_replay)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct bdb *db;
	uint32_t t;
	int versions[P_KEYS] = { 0 }, status;
	pid_t pid;

	new_datadir(dir, sizeof(dir));
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct benv_opts o;

		small_opts(&o);
		/* no automatic checkpoint: only the explicit one */
		o.checkpoint_bytes = 1ull << 40;
		if (benv_open(dir, &o, &env) || benv_db(env, "db", true, &db))
			_exit(3);
		t = mk_table(db, "t", BDB_TABLE_SEQ);
		p_workload(db, t, versions);
		_exit(0);   /* no benv_close: as if killed */
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "workload child failed (status 0x%x)", status);

	/* the same model, computed without touching a database */
	for (int k = 50; k < 200; k++)
		versions[k] = 1;
	for (int k = 200; k < P_KEYS; k++)
		versions[k] = 2;
	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	OK(bdb_table(db, "t", &t));
	p_verify(db, t, versions);
	benv_close(env);
	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	p_verify(db, t, versions);
	benv_close(env);
}
END_TEST

/*
 * A background checkpoint covers the log up to where its state was frozen:
 * the commits made while it was written, and after it, replay from there
 * when the process dies without closing (a child runs the workload and
 * _exits; it tells the parent how many keys it committed).
 */
START_TEST(test_persist_replay_background)
{
	char dir[PATH_MAX], key[16], val[200];
	struct benv *env;
	struct bdb *db;
	struct bdb_stat st;
	struct bsnap *snap;
	struct bval v;
	uint32_t t, n = 0;
	int fds[2], status;
	pid_t pid;

	new_datadir(dir, sizeof(dir));
	ck_assert_int_eq(pipe(fds), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct benv_opts o;
		struct btxn *txn;
		uint64_t cps;
		int after = -1;

		close(fds[0]);
		small_opts(&o);
		if (benv_open(dir, &o, &env) || benv_db(env, "db", true, &db))
			_exit(3);
		t = mk_table(db, "t", BDB_TABLE_SEQ);
		if (bdb_stat(db, &st))
			_exit(4);
		cps = st.checkpoints;
		/* until a checkpoint of the commits' own is in place, then 50 */
		for (; after < 50 && n < 100000; n++) {
			int klen = snprintf(key, sizeof(key), "b%06u", n);

			tu_value(val, sizeof(val), n, 1);
			if (bdb_begin(db, &txn) ||
			    btxn_put(txn, t, key, (size_t)klen, val, sizeof(val),
				     NULL) || btxn_commit(txn) || bdb_stat(db, &st))
				_exit(5);
			if (after >= 0)
				after++;
			else if (st.checkpoints > cps)
				after = 0;
		}
		if (after < 50 || write(fds[1], &n, sizeof(n)) != sizeof(n))
			_exit(6);
		_exit(0);   /* no benv_close: as if killed */
	}
	close(fds[1]);
	ck_assert_int_eq(read(fds[0], &n, sizeof(n)), (ssize_t)sizeof(n));
	close(fds[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "workload child failed (status 0x%x)", status);

	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	OK(bdb_table(db, "t", &t));
	OK(bdb_stat(db, &st));
	ck_assert_uint_eq(st.entries, n);
	OK(bdb_snapshot(db, &snap));
	for (uint32_t k = 0; k < n; k++) {
		int klen = snprintf(key, sizeof(key), "b%06u", k);

		OK(bsnap_get(snap, t, key, (size_t)klen, &v));
		tu_value(val, sizeof(val), k, 1);
		ck_assert_msg(v.len == sizeof(val) && !memcmp(v.data, val, v.len),
			      "%s: wrong value after replay", key);
		bval_release(&v);
	}
	bsnap_release(snap);
	benv_close(env);
}
END_TEST

/* ---- space figures ---- */

struct seg_sum {
	unsigned n, open;
	uint64_t used, live, capacity;
	uint32_t last_id;
	bool ascending, sane;
};

static int seg_cb(void *arg, const struct bdb_seginfo *si)
{
	struct seg_sum *s = arg;

	if (s->n && si->id <= s->last_id)
		s->ascending = false;
	if (!(si->live <= si->used && si->used <= si->capacity))
		s->sane = false;
	s->last_id = si->id;
	s->n++;
	s->open += si->open;
	s->used += si->used;
	s->live += si->live;
	s->capacity += si->capacity;
	return 0;
}

static uint64_t g_seg_file_bytes;

static int sum_seg_file(const char *path, const struct stat *sb, int type,
			struct FTW *ftw)
{
	size_t n = strlen(path);

	(void)ftw;
	if (type == FTW_F && n > 4 && strcmp(path + n - 4, ".seg") == 0)
		g_seg_file_bytes += (uint64_t)sb->st_size;
	return 0;
}

static void check_stat(struct bdb *db, const char *dir, uint64_t entries,
		       uint64_t user_bytes)
{
	struct bdb_stat st;
	struct seg_sum s = { .ascending = true, .sane = true };

	OK(bdb_stat(db, &st));
	OK(bdb_segments(db, seg_cb, &s));
	ck_assert_uint_eq(st.seq, bdb_seq(db));
	ck_assert_uint_eq(st.entries, entries);
	ck_assert_uint_eq(st.tables, 2);
	ck_assert_msg(st.live_bytes <= st.used_bytes &&
		      st.used_bytes <= st.disk_bytes,
		      "live %llu used %llu disk %llu",
		      (unsigned long long)st.live_bytes,
		      (unsigned long long)st.used_bytes,
		      (unsigned long long)st.disk_bytes);
	ck_assert_msg(st.live_bytes >= user_bytes,
		      "live %llu < keys+values %llu",
		      (unsigned long long)st.live_bytes,
		      (unsigned long long)user_bytes);
	ck_assert_uint_eq(s.n, st.segments);
	ck_assert_uint_ge(s.n, 2);
	ck_assert_uint_eq(s.open, 1);
	ck_assert(s.ascending);
	ck_assert(s.sane);
	ck_assert_uint_eq(s.used, st.used_bytes);
	ck_assert_uint_eq(s.live, st.live_bytes);
	g_seg_file_bytes = 0;
	ck_assert_int_eq(nftw(dir, sum_seg_file, 16, FTW_PHYS), 0);
	ck_assert_msg(g_seg_file_bytes == st.disk_bytes,
		      "segment files hold %llu bytes, stat says %llu",
		      (unsigned long long)g_seg_file_bytes,
		      (unsigned long long)st.disk_bytes);
}

/* A database many times larger than the cache budget opens and serves every
 * key, and the node cache stays within its budget. */
START_TEST(test_bounded_memory)
{
	char dir[PATH_MAX], key[16], val[200], got[200];
	struct benv_opts o;
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	struct bdb_stat st;
	uint32_t t;
	const int n = 20000;

	new_datadir(dir, sizeof(dir));
	small_opts(&o);
	o.cache_budget = 128u << 10;
	OK(benv_open(dir, &o, &env));
	db = db_get(env, "db");
	t = mk_table(db, "t", BDB_TABLE_SEQ);
	for (int i = 0; i < n; i += 500) {
		OK(bdb_begin(db, &txn));
		for (int j = i; j < i + 500; j++) {
			int klen = snprintf(key, sizeof(key), "m%07d", (j * 7919) % n);

			tu_value(val, sizeof(val), (uint64_t)((j * 7919) % n), 3);
			OK(btxn_put(txn, t, key, (size_t)klen, val, sizeof(val), NULL));
		}
		OK(btxn_commit(txn));
	}
	benv_close(env);
	OK(benv_open(dir, &o, &env));
	db = db_get(env, "db");
	OK(bdb_table(db, "t", &t));
	OK(bdb_stat(db, &st));
	ck_assert_msg(st.used_bytes > 20 * (uint64_t)o.cache_budget,
		      "database of %llu bytes is not many times the budget",
		      (unsigned long long)st.used_bytes);
	for (int i = 0; i < n; i++) {
		int k = (i * 104729) % n, klen = snprintf(key, sizeof(key), "m%07d", k);

		tu_value(got, sizeof(got), (uint64_t)k, 3);
		expect_val(db, t, key, (size_t)klen, got, sizeof(got));
	}
	ck_assert_int_eq(count_scan(db, t), n);
	OK(bdb_stat(db, &st));
	ck_assert_msg(st.cache_bytes <= st.cache_budget,
		      "cache holds %llu bytes, budget %llu",
		      (unsigned long long)st.cache_bytes,
		      (unsigned long long)st.cache_budget);
	benv_close(env);
}
END_TEST

/* bdb_stat and bdb_segments agree with each other and with the files. */
START_TEST(test_stat_segments)
{
	char dir[PATH_MAX], key[16], val[2048];
	struct benv *env;
	struct bdb *db;
	struct btxn *txn;
	struct bdb_stat st;
	uint32_t t;
	uint64_t user = 0, commits = 0;

	new_datadir(dir, sizeof(dir));
	env = env_open(dir);
	db = db_get(env, "db");
	t = mk_table(db, "t", BDB_TABLE_SEQ);
	mk_table(db, "empty", 0);
	commits = 2;
	for (int i = 0; i < 1000; i += 20) {
		OK(bdb_begin(db, &txn));
		for (int j = i; j < i + 20; j++) {
			int klen = snprintf(key, sizeof(key), "s%05d", j);

			tu_value(val, sizeof(val), (uint64_t)j, 1);
			OK(btxn_put(txn, t, key, (size_t)klen, val,
				    sizeof(val), NULL));
			user += (uint64_t)klen + sizeof(val);
		}
		OK(btxn_commit(txn));
		commits++;
	}
	/* Files and accounting agree when no checkpoint is being written. */
	OK(bdb_checkpoint(db));
	check_stat(db, dir, 1000, user);
	OK(bdb_stat(db, &st));
	ck_assert_uint_ge(st.txn, commits);
	ck_assert_uint_ge(st.bytes_written, st.used_bytes);
	benv_close(env);

	env = env_open(dir);
	OK(benv_db(env, "db", false, &db));
	check_stat(db, dir, 1000, user);
	benv_close(env);
}
END_TEST

static Suite *db_suite(void)
{
	Suite *s = suite_create("db");
	TCase *tc = tcase_create("api");
	TCase *slow = tcase_create("concurrency");

	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_env_open_close_reopen);
	tcase_add_test(tc, test_env_lock);
	tcase_add_test(tc, test_value_heads);
	tcase_add_test(tc, test_value_heads_moved);
	tcase_add_test(tc, test_db_create_list_drop);
	tcase_add_test(tc, test_db_names);
	tcase_add_test(tc, test_tables_ids_stable);
	tcase_add_test(tc, test_table_drop);
	tcase_add_test(tc, test_put_get_del);
	tcase_add_test(tc, test_value_sizes);
	tcase_add_test(tc, test_toobig);
	tcase_add_test(tc, test_abort);
	tcase_add_test(tc, test_txn_reads_own_writes);
	tcase_add_test(tc, test_snapshot_isolation);
	tcase_add_test(tc, test_scan_order_bounds);
	tcase_add_test(tc, test_changes_feed);
	tcase_add_test(tc, test_seq_numbers);
	tcase_add_test(tc, test_wait_wakes);
	tcase_add_test(tc, test_wait_timeout);
	tcase_add_test(tc, test_watch);
	tcase_add_test(tc, test_persist_close_reopen);
	tcase_add_test(tc, test_persist_replay_background);
	tcase_add_test(tc, test_persist_replay);
	tcase_add_test(tc, test_stat_segments);
	tcase_add_test(tc, test_bounded_memory);
	suite_add_tcase(s, tc);

	tcase_add_unchecked_fixture(slow, base_setup, base_teardown);
	tcase_set_timeout(slow, 180);
	tcase_add_test(slow, test_group_commit);
	tcase_add_test(slow, test_readers_atomic);
	suite_add_tcase(s, slow);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(db_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
