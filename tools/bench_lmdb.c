/*
 * LMDB as a peer, durable as it comes (no MDB_NOSYNC, no MDB_WRITEMAP):
 * two named databases in one environment, "docs" (key -> seq, value) and
 * "seq" (big-endian seq -> key), one write transaction per batch. Reads
 * reuse one read-only transaction, reset and renewed around each get.
 */
#include "config.h"
#include "tools/bench.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Address space to map; the file only grows as pages are used. */
#define LMDB_MAP_SIZE (64ULL << 30)

struct lmdb_store {
	struct bench_store base;
	MDB_env *env;
	MDB_dbi docs;             /* key -> be64 seq, value */
	MDB_dbi seqs;             /* be64 seq -> key */
	MDB_txn *rtxn;            /* reset between gets */
	uint64_t seq;             /* last sequence number written */
	unsigned char *buf;       /* seq + value of one put */
	size_t buf_cap;
};

static int lmdb_fail(char *err, const char *what, int rc)
{
	return bench_fail(err, "%s: %s", what, mdb_strerror(rc));
}

static void lmdb_free(struct lmdb_store *s)
{
	if (s->rtxn)
		mdb_txn_abort(s->rtxn);
	if (s->env)
		mdb_env_close(s->env);
	free(s->buf);
	free(s);
}

/* Largest sequence number in "seq", to continue after a reopen. */
static int lmdb_last_seq(struct lmdb_store *s, MDB_txn *txn)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, s->seqs, &c);

	if (rc)
		return rc;
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	if (rc == 0 && k.mv_size == 8)
		s->seq = bench_get_be64(k.mv_data);
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int lmdb_connect(const char *dir, struct bench_store **out, char *err)
{
	struct lmdb_store *s = calloc(1, sizeof(*s));
	MDB_txn *txn;
	int rc;

	if (!s)
		return bench_fail(err, "out of memory");
	if (bench_store_init(&s->base, &bench_lmdb_ops, dir, err))
		goto out_free;
	if ((rc = mdb_env_create(&s->env)) ||
	    (rc = mdb_env_set_maxdbs(s->env, 2)) ||
	    (rc = mdb_env_set_mapsize(s->env, LMDB_MAP_SIZE))) {
		lmdb_fail(err, "mdb_env_create", rc);
		goto out_free;
	}
	if ((rc = mdb_env_open(s->env, dir, 0, 0644))) {
		lmdb_fail(err, dir, rc);
		goto out_free;
	}
	if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn))) {
		lmdb_fail(err, "mdb_txn_begin", rc);
		goto out_free;
	}
	if ((rc = mdb_dbi_open(txn, "docs", MDB_CREATE, &s->docs)) ||
	    (rc = mdb_dbi_open(txn, "seq", MDB_CREATE, &s->seqs)) ||
	    (rc = lmdb_last_seq(s, txn))) {
		mdb_txn_abort(txn);
		lmdb_fail(err, "open databases", rc);
		goto out_free;
	}
	if ((rc = mdb_txn_commit(txn))) {
		lmdb_fail(err, "mdb_txn_commit", rc);
		goto out_free;
	}
	*out = &s->base;
	return 0;
out_free:
	lmdb_free(s);
	return -1;
}

/* docs[key] = seq, value; seqs[seq] = key; drops key's old seq entry. */
static int lmdb_put(struct lmdb_store *s, MDB_txn *txn,
		    const struct bench_doc *d, bool update)
{
	unsigned char sk[8];
	MDB_val k = { d->klen, (void *)d->key }, v, sv = { 8, sk };
	int rc;

	if (update) {
		if ((rc = mdb_get(txn, s->docs, &k, &v)))
			return rc;
		if (v.mv_size < 8)
			return MDB_CORRUPTED;
		memcpy(sk, v.mv_data, 8);
		if ((rc = mdb_del(txn, s->seqs, &sv, NULL)))
			return rc;
	}
	if (8 + d->vlen > s->buf_cap) {
		unsigned char *b = realloc(s->buf, 8 + d->vlen);

		if (!b)
			return ENOMEM;
		s->buf = b;
		s->buf_cap = 8 + d->vlen;
	}
	bench_put_be64(sk, ++s->seq);
	memcpy(s->buf, sk, 8);
	memcpy(s->buf + 8, d->val, d->vlen);
	v.mv_size = 8 + d->vlen;
	v.mv_data = s->buf;
	if ((rc = mdb_put(txn, s->docs, &k, &v, update ? 0 : MDB_NOOVERWRITE)))
		return rc;
	return mdb_put(txn, s->seqs, &sv, &k, MDB_NOOVERWRITE);
}

static int lmdb_write(struct bench_store *bs, const struct bench_doc *d,
		      size_t n, bool update)
{
	struct lmdb_store *s = (struct lmdb_store *)bs;
	MDB_txn *txn;
	int rc = mdb_txn_begin(s->env, NULL, 0, &txn);

	if (rc)
		return lmdb_fail(bs->err, "mdb_txn_begin", rc);
	for (size_t i = 0; i < n; i++) {
		if ((rc = lmdb_put(s, txn, &d[i], update))) {
			mdb_txn_abort(txn);
			return lmdb_fail(bs->err, "put", rc);
		}
	}
	if ((rc = mdb_txn_commit(txn)))
		return lmdb_fail(bs->err, "mdb_txn_commit", rc);
	return 0;
}

static int lmdb_insert(struct bench_store *bs, const struct bench_doc *d,
		       size_t n)
{
	return lmdb_write(bs, d, n, false);
}

static int lmdb_update(struct bench_store *bs, const struct bench_doc *d,
		       size_t n)
{
	return lmdb_write(bs, d, n, true);
}

static int lmdb_get(struct bench_store *bs, const char *key, size_t klen,
		    void *buf, size_t cap, size_t *len)
{
	struct lmdb_store *s = (struct lmdb_store *)bs;
	MDB_val k = { klen, (void *)key }, v;
	int rc, found;

	rc = s->rtxn ? mdb_txn_renew(s->rtxn) :
		mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
	if (rc)
		return lmdb_fail(bs->err, "read transaction", rc);
	rc = mdb_get(s->rtxn, s->docs, &k, &v);
	if (rc == MDB_NOTFOUND) {
		found = 0;
	} else if (rc) {
		found = lmdb_fail(bs->err, "mdb_get", rc);
	} else if (v.mv_size < 8 || v.mv_size - 8 > cap) {
		found = bench_fail(bs->err, "value of %zu bytes", v.mv_size);
	} else {
		*len = v.mv_size - 8;
		memcpy(buf, (char *)v.mv_data + 8, *len);
		found = 1;
	}
	mdb_txn_reset(s->rtxn);
	return found;
}

static int lmdb_scan(struct bench_store *bs, bench_scan_cb cb, void *arg)
{
	struct lmdb_store *s = (struct lmdb_store *)bs;
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, v;
	int rc, stop = 0;

	if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn)))
		return lmdb_fail(bs->err, "mdb_txn_begin", rc);
	if ((rc = mdb_cursor_open(txn, s->docs, &c))) {
		mdb_txn_abort(txn);
		return lmdb_fail(bs->err, "mdb_cursor_open", rc);
	}
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && !stop;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (v.mv_size < 8) {
			rc = MDB_CORRUPTED;
			break;
		}
		stop = cb(arg, k.mv_data, k.mv_size, (char *)v.mv_data + 8,
			  v.mv_size - 8);
	}
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	if (stop)
		return stop;
	return rc == MDB_NOTFOUND ? 0 : lmdb_fail(bs->err, "scan", rc);
}

static int lmdb_close(struct bench_store *bs, char *err)
{
	(void)err;
	lmdb_free((struct lmdb_store *)bs);
	return 0;
}

const struct bench_ops bench_lmdb_ops = {
	.name = "lmdb",
	.open = lmdb_connect,
	.insert_batch = lmdb_insert,
	.get = lmdb_get,
	.update_batch = lmdb_update,
	.scan = lmdb_scan,
	.close = lmdb_close,
	.reopen = lmdb_connect,
	.disk_usage = bench_store_usage,
};
