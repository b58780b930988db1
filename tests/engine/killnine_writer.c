#include "config.h"

/*
 * The writer for test_killnine.sh (a real kill -9 loop).
 *
 *   killnine_writer DATADIR
 *	commits transactions until killed: transaction number c (1, 2, ...,
 *	resuming after the last one in DATADIR) puts keys k%06d for
 *	i = c .. c+9 with a value derived from (c, i), and "last" = c; after
 *	btxn_commit returns it prints c on a line of its own and flushes.
 *
 *   killnine_writer --verify DATADIR LAST
 *	opens DATADIR (recovering it) and checks that the last transaction
 *	L there satisfies LAST <= L <= LAST + 1 (every printed commit is
 *	durable; at most the one in flight when the kill came is extra), and
 *	that key i holds the value of the latest transaction that wrote it:
 *	i for i <= L, L for L < i <= L + 9, nothing beyond -- which also
 *	proves no transaction landed in part. Exit 0 when all holds.
 *
 * Exit status: 0 success, 1 verification failed, 2 usage or engine error.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/db.h"
#include "engine/error.h"

#define DBNAME "killnine"
#define TABLE "t"
#define KEYS_PER_TXN 10
#define MAX_VAL 3000
/* A safety net: a writer orphaned by a dead script stops by itself. */
#define MAX_SECONDS 120

static void opts_init(struct benv_opts *o)
{
	benv_opts_init(o);
	/* small segments and frequent checkpoints: kills land everywhere */
	o->seg_min = 64u << 10;
	o->seg_max = 1u << 20;
	o->checkpoint_bytes = 256u << 10;
}

static int key_of(char *buf, size_t size, uint64_t i)
{
	return snprintf(buf, size, "k%06" PRIu64, i);
}

/* The value transaction c writes to key i: a header, then filler. */
static size_t value_of(char *buf, uint64_t c, uint64_t i)
{
	size_t len = 40 + (size_t)((c * 131 + i * 17) % (MAX_VAL - 40));
	int n = snprintf(buf, MAX_VAL, "c=%" PRIu64 " i=%" PRIu64 ";", c, i);

	for (size_t j = (size_t)n; j < len; j++)
		buf[j] = (char)('a' + (c + i + j) % 26);
	return len;
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "killnine_writer: %s: %s\n", what, barrel_strerror(rc));
	return 2;
}

/* Last committed transaction number, 0 when none. */
static int read_last(struct bdb *db, uint32_t t, uint64_t *last)
{
	struct bsnap *snap;
	struct bval v;
	char buf[32];
	int rc;

	*last = 0;
	rc = bdb_snapshot(db, &snap);
	if (rc)
		return rc;
	memset(&v, 0, sizeof(v));
	rc = bsnap_get(snap, t, "last", 4, &v);
	bsnap_release(snap);
	if (rc == BARREL_E_NOTFOUND)
		return 0;
	if (rc)
		return rc;
	if (v.len == 0 || v.len >= sizeof(buf)) {
		bval_release(&v);
		return BARREL_E_INVALID;
	}
	memcpy(buf, v.data, v.len);
	buf[v.len] = '\0';
	bval_release(&v);
	*last = strtoull(buf, NULL, 10);
	return 0;
}

static int open_db(const char *datadir, bool create, struct benv **env,
		   struct bdb **db, uint32_t *t)
{
	struct benv_opts o;
	struct btxn *txn;
	int rc;

	opts_init(&o);
	rc = benv_open(datadir, &o, env);
	if (rc)
		return fail("benv_open", rc);
	rc = benv_db(*env, DBNAME, create, db);
	if (rc == BARREL_E_NOTFOUND && !create) {
		*db = NULL;
		return 0;
	}
	if (rc)
		return fail("benv_db", rc);
	rc = bdb_table(*db, TABLE, t);
	if (rc == BARREL_E_NOTFOUND && create) {
		rc = bdb_begin(*db, &txn);
		if (rc)
			return fail("bdb_begin", rc);
		rc = btxn_table(txn, TABLE, BDB_TABLE_SEQ, t);
		if (rc) {
			btxn_abort(txn);
			return fail("btxn_table", rc);
		}
		rc = btxn_commit(txn);
	}
	if (rc == BARREL_E_NOTFOUND) {
		*db = NULL;
		return 0;
	}
	if (rc)
		return fail("table", rc);
	return 0;
}

static int commit_one(struct bdb *db, uint32_t t, uint64_t c)
{
	static char val[MAX_VAL];
	struct btxn *txn;
	char key[32], last[32];
	int rc, kl, ll;

	rc = bdb_begin(db, &txn);
	if (rc)
		return rc;
	for (uint64_t i = c; i < c + KEYS_PER_TXN; i++) {
		size_t len = value_of(val, c, i);

		kl = key_of(key, sizeof(key), i);
		rc = btxn_put(txn, t, key, (size_t)kl, val, len, NULL);
		if (rc) {
			btxn_abort(txn);
			return rc;
		}
	}
	ll = snprintf(last, sizeof(last), "%" PRIu64, c);
	rc = btxn_put(txn, t, "last", 4, last, (size_t)ll, NULL);
	if (rc) {
		btxn_abort(txn);
		return rc;
	}
	return btxn_commit(txn);
}

static int run_writer(const char *datadir)
{
	struct benv *env = NULL;
	struct bdb *db = NULL;
	uint32_t t = 0;
	uint64_t c;
	time_t start = time(NULL);
	int rc;

	rc = open_db(datadir, true, &env, &db, &t);
	if (rc)
		return rc;
	rc = read_last(db, t, &c);
	if (rc)
		return fail("reading last", rc);
	for (c = c + 1; time(NULL) - start < MAX_SECONDS; c++) {
		rc = commit_one(db, t, c);
		if (rc)
			return fail("commit", rc);
		printf("%" PRIu64 "\n", c);
		fflush(stdout);
	}
	benv_close(env);
	return 0;
}

static int check_key(struct bsnap *snap, uint32_t t, uint64_t i, uint64_t want_c)
{
	static char want[MAX_VAL];
	struct bval v;
	char key[32];
	int kl = key_of(key, sizeof(key), i), rc;
	size_t len;

	memset(&v, 0, sizeof(v));
	rc = bsnap_get(snap, t, key, (size_t)kl, &v);
	if (want_c == 0) {
		if (rc == BARREL_E_NOTFOUND)
			return 0;
		fprintf(stderr, "verify: %s should not exist (get: %s)\n", key,
			barrel_strerror(rc));
		if (rc == 0)
			bval_release(&v);
		return 1;
	}
	if (rc) {
		fprintf(stderr, "verify: %s: %s (want the value of txn %" PRIu64 ")\n",
			key, barrel_strerror(rc), want_c);
		return 1;
	}
	len = value_of(want, want_c, i);
	if (v.len != len || memcmp(v.data, want, len) != 0) {
		fprintf(stderr, "verify: %s: value is '%.*s...' (%zu bytes), "
			"want the one of txn %" PRIu64 " (%zu bytes)\n", key,
			(int)(v.len < 24 ? v.len : 24), (const char *)v.data,
			v.len, want_c, len);
		bval_release(&v);
		return 1;
	}
	bval_release(&v);
	return 0;
}

static int run_verify(const char *datadir, uint64_t printed)
{
	struct benv *env = NULL;
	struct bdb *db = NULL;
	struct bsnap *snap;
	uint32_t t = 0;
	uint64_t last;
	int rc, bad = 0;

	rc = open_db(datadir, false, &env, &db, &t);
	if (rc)
		return rc;
	if (!db) {
		benv_close(env);
		if (printed == 0)
			return 0;
		fprintf(stderr, "verify: no database, but %" PRIu64
			" commits were acknowledged\n", printed);
		return 1;
	}
	rc = read_last(db, t, &last);
	if (rc) {
		benv_close(env);
		return fail("reading last", rc);
	}
	if (last < printed || last > printed + 1) {
		fprintf(stderr, "verify: last transaction is %" PRIu64
			", the writer printed %" PRIu64 "\n", last, printed);
		bad = 1;
	}
	rc = bdb_snapshot(db, &snap);
	if (rc) {
		benv_close(env);
		return fail("bdb_snapshot", rc);
	}
	/*
	 * Txn c wrote keys c..c+9, so key i was last written by txn
	 * min(i, last) when i <= last + 9, and never beyond (0: absent).
	 */
	for (uint64_t i = 1; i <= last + KEYS_PER_TXN + 5 && bad < 20; i++) {
		uint64_t want = i <= last ? i : last;

		if (i > last + KEYS_PER_TXN - 1)
			want = 0;
		bad += check_key(snap, t, i, want);
	}
	bsnap_release(snap);
	benv_close(env);
	if (bad)
		return 1;
	printf("verified %" PRIu64 " transactions (writer printed %" PRIu64 ")\n",
	       last, printed);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && argv[1][0] != '-')
		return run_writer(argv[1]);
	if (argc == 4 && strcmp(argv[1], "--verify") == 0) {
		char *end;
		uint64_t printed;

		errno = 0;
		printed = strtoull(argv[3], &end, 10);
		if (errno || *end || end == argv[3]) {
			fprintf(stderr, "killnine_writer: bad LAST '%s'\n", argv[3]);
			return 2;
		}
		return run_verify(argv[2], printed);
	}
	fprintf(stderr, "usage: killnine_writer DATADIR\n"
		"       killnine_writer --verify DATADIR LAST\n");
	return 2;
}
