/*
 * barrelfs's own engine, through engine/db.h only: the store's directory
 * is a DATADIR holding one database "bench" with one SEQ table "docs"
 * (key index plus sequence index), one transaction per batch. Each read
 * takes a snapshot, as a reader of the mount does.
 */
#include "config.h"
#include "tools/bench.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/db.h"

#define BARREL_BENCH_DB "bench"
#define BARREL_BENCH_TABLE "docs"

struct barrel_store {
	struct bench_store base;
	struct benv *env;         /* owned */
	struct bdb *db;           /* owned by env */
	uint32_t table;
	struct bench_cp cp;       /* checkpoints before the updates */
};

static int barrel_fail(char *err, const char *what, int rc)
{
	return bench_fail(err, "%s: %s", what, barrel_strerror(rc));
}

/* Create the table in its own transaction. */
static int barrel_make_table(struct barrel_store *s, char *err)
{
	struct btxn *txn;
	int rc = bdb_begin(s->db, &txn);

	if (rc)
		return barrel_fail(err, "bdb_begin", rc);
	rc = btxn_table(txn, BARREL_BENCH_TABLE, BDB_TABLE_SEQ, &s->table);
	if (rc) {
		btxn_abort(txn);
		return barrel_fail(err, "btxn_table", rc);
	}
	rc = btxn_commit(txn);
	return rc ? barrel_fail(err, "btxn_commit", rc) : 0;
}

static int barrel_connect(const char *dir, bool create,
			  struct bench_store **out, char *err)
{
	struct barrel_store *s = calloc(1, sizeof(*s));
	struct benv_opts opts;
	int rc;

	if (!s)
		return bench_fail(err, "out of memory");
	if (bench_store_init(&s->base, &bench_barrel_ops, dir, err))
		goto out_free;
	benv_opts_init(&opts);
	rc = benv_open(dir, &opts, &s->env);
	if (rc) {
		barrel_fail(err, dir, rc);
		goto out_free;
	}
	rc = benv_db(s->env, BARREL_BENCH_DB, create, &s->db);
	if (rc) {
		barrel_fail(err, BARREL_BENCH_DB, rc);
		goto out_close;
	}
	if (create)
		rc = barrel_make_table(s, err);
	else if ((rc = bdb_table(s->db, BARREL_BENCH_TABLE, &s->table)))
		barrel_fail(err, BARREL_BENCH_TABLE, rc);
	if (rc)
		goto out_close;
	*out = &s->base;
	return 0;
out_close:
	benv_close(s->env);
out_free:
	free(s);
	return -1;
}

static int barrel_open(const char *dir, struct bench_store **out, char *err)
{
	return barrel_connect(dir, true, out, err);
}

static int barrel_reopen(const char *dir, struct bench_store **out,
			 char *err)
{
	return barrel_connect(dir, false, out, err);
}

/* One transaction of n puts; a put of an existing key is the update. */
static int barrel_write(struct bench_store *bs, const struct bench_doc *d,
			size_t n)
{
	struct barrel_store *s = (struct barrel_store *)bs;
	struct btxn *txn;
	int rc = bdb_begin(s->db, &txn);

	if (rc)
		return barrel_fail(bs->err, "bdb_begin", rc);
	for (size_t i = 0; i < n; i++) {
		rc = btxn_put(txn, s->table, d[i].key, d[i].klen, d[i].val,
			      d[i].vlen, NULL);
		if (rc) {
			btxn_abort(txn);
			return barrel_fail(bs->err, "btxn_put", rc);
		}
	}
	rc = btxn_commit(txn);
	return rc ? barrel_fail(bs->err, "btxn_commit", rc) : 0;
}

static int barrel_get(struct bench_store *bs, const char *key, size_t klen,
		      void *buf, size_t cap, size_t *len)
{
	struct barrel_store *s = (struct barrel_store *)bs;
	struct bsnap *snap;
	struct bval v = { 0 };
	int rc = bdb_snapshot(s->db, &snap);

	if (rc)
		return barrel_fail(bs->err, "bdb_snapshot", rc);
	rc = bsnap_get(snap, s->table, key, klen, &v);
	bsnap_release(snap);
	if (rc == BARREL_E_NOTFOUND)
		return 0;
	if (rc)
		return barrel_fail(bs->err, "bsnap_get", rc);
	if (v.len > cap) {
		bval_release(&v);
		return bench_fail(bs->err, "value of %zu bytes", v.len);
	}
	memcpy(buf, v.data, v.len);
	*len = v.len;
	bval_release(&v);
	return 1;
}

static int barrel_scan(struct bench_store *bs, bench_scan_cb cb, void *arg)
{
	struct barrel_store *s = (struct barrel_store *)bs;
	struct bsnap *snap;
	struct bcursor *c;
	struct bentry e;
	int rc = bdb_snapshot(s->db, &snap), stop = 0;

	if (rc)
		return barrel_fail(bs->err, "bdb_snapshot", rc);
	rc = bsnap_scan(snap, s->table, NULL, 0, NULL, 0, 0, &c);
	if (rc) {
		bsnap_release(snap);
		return barrel_fail(bs->err, "bsnap_scan", rc);
	}
	while (!stop && (rc = bcursor_next(c, &e)) == 1)
		stop = cb(arg, e.key, e.klen, e.val, e.vlen);
	bcursor_free(c);
	bsnap_release(snap);
	if (stop)
		return stop;
	return rc < 0 ? barrel_fail(bs->err, "bcursor_next", rc) : 0;
}

static int barrel_close(struct bench_store *bs, char *err)
{
	struct barrel_store *s = (struct barrel_store *)bs;

	(void)err;
	benv_close(s->env);
	free(s);
	return 0;
}

void bench_cp_mark(struct bdb *db, struct bench_cp *at)
{
	struct bdb_stat st;

	*at = (struct bench_cp){ 0 };
	if (!bdb_stat(db, &st))
		*at = (struct bench_cp){ st.checkpoints, st.checkpoint_us };
}

void bench_cp_note(const struct bdb_stat *now, const struct bench_cp *at,
		   char *buf, size_t size)
{
	uint64_t n = now->checkpoints - at->checkpoints;

	snprintf(buf, size, "%" PRIu64 " checkpoint%s during the updates "
		 "(%.1f ms)", n, n == 1 ? "" : "s",
		 (double)(now->checkpoint_us - at->us) / 1000);
}

static void barrel_mark(struct bench_store *bs)
{
	struct barrel_store *s = (struct barrel_store *)bs;

	bench_cp_mark(s->db, &s->cp);
}

static void barrel_note(struct bench_store *bs, char *buf, size_t size)
{
	struct barrel_store *s = (struct barrel_store *)bs;
	struct bdb_stat st;

	if (!bdb_stat(s->db, &st))
		bench_cp_note(&st, &s->cp, buf, size);
}

const struct bench_ops bench_barrel_ops = {
	.name = "barrelfs",
	.open = barrel_open,
	.insert_batch = barrel_write,
	.get = barrel_get,
	.update_batch = barrel_write,
	.scan = barrel_scan,
	.close = barrel_close,
	.reopen = barrel_reopen,
	.disk_usage = bench_store_usage,
	.mark = barrel_mark,
	.note = barrel_note,
};
