/*
 * RocksDB as a peer, through its C API, with default tuning and sync
 * writes (WriteOptions sync: each batch fsyncs the WAL). One key space
 * holds both indexes under prefixes: "k" key -> be64 seq, value and
 * "s" be64 seq -> key. One WriteBatch per batch; an update reads the old
 * entry to delete its seq key, as the other stores do.
 */
#include "config.h"
#include "tools/bench.h"

#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RDB_KEY 'k'
#define RDB_SEQ 's'

struct rocksdb_store {
	struct bench_store base;
	rocksdb_t *db;
	rocksdb_options_t *opts;
	rocksdb_writeoptions_t *wopts;
	rocksdb_readoptions_t *ropts;
	uint64_t seq;             /* last sequence number written */
	char *buf;                /* scratch for keys and values */
	size_t buf_cap;
};

/* Copy RocksDB's malloc'ed message into err and free it. */
static int rdb_fail(char *err, const char *what, char *msg)
{
	bench_fail(err, "%s: %s", what, msg ? msg : "failed");
	rocksdb_free(msg);
	return -1;
}

static void rdb_free(struct rocksdb_store *s)
{
	if (s->db)
		rocksdb_close(s->db);
	if (s->ropts)
		rocksdb_readoptions_destroy(s->ropts);
	if (s->wopts)
		rocksdb_writeoptions_destroy(s->wopts);
	if (s->opts)
		rocksdb_options_destroy(s->opts);
	free(s->buf);
	free(s);
}

static char *rdb_scratch(struct rocksdb_store *s, size_t len)
{
	if (len > s->buf_cap) {
		char *b = realloc(s->buf, len);

		if (!b)
			return NULL;
		s->buf = b;
		s->buf_cap = len;
	}
	return s->buf;
}

/* The last "s" key names the last sequence number written. */
static int rdb_last_seq(struct rocksdb_store *s, char *err)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->ropts);
	const char upper[1] = { RDB_SEQ + 1 };
	char *msg = NULL;

	rocksdb_iter_seek_for_prev(it, upper, 1);
	if (rocksdb_iter_valid(it)) {
		size_t kl;
		const char *k = rocksdb_iter_key(it, &kl);

		if (kl == 9 && k[0] == RDB_SEQ)
			s->seq = bench_get_be64((const unsigned char *)k + 1);
	}
	rocksdb_iter_get_error(it, &msg);
	rocksdb_iter_destroy(it);
	return msg ? rdb_fail(err, "last seq", msg) : 0;
}

static int rdb_connect(const char *dir, bool create,
		       struct bench_store **out, char *err)
{
	struct rocksdb_store *s = calloc(1, sizeof(*s));
	char *msg = NULL;

	if (!s)
		return bench_fail(err, "out of memory");
	if (bench_store_init(&s->base, &bench_rocksdb_ops, dir, err))
		goto out_free;
	s->opts = rocksdb_options_create();
	s->wopts = rocksdb_writeoptions_create();
	s->ropts = rocksdb_readoptions_create();
	rocksdb_options_set_create_if_missing(s->opts, create);
	rocksdb_writeoptions_set_sync(s->wopts, 1);
	s->db = rocksdb_open(s->opts, dir, &msg);
	if (!s->db) {
		rdb_fail(err, dir, msg);
		goto out_free;
	}
	if (rdb_last_seq(s, err))
		goto out_free;
	*out = &s->base;
	return 0;
out_free:
	rdb_free(s);
	return -1;
}

static int rdb_open(const char *dir, struct bench_store **out, char *err)
{
	return rdb_connect(dir, true, out, err);
}

static int rdb_reopen(const char *dir, struct bench_store **out, char *err)
{
	return rdb_connect(dir, false, out, err);
}

/* Add doc to the batch; on update, delete the seq key it had. */
static int rdb_put(struct rocksdb_store *s, rocksdb_writebatch_t *wb,
		   const struct bench_doc *d, bool update)
{
	char sk[9] = { RDB_SEQ }, *msg = NULL;
	char *kv = rdb_scratch(s, 1 + d->klen + 8 + d->vlen);

	if (!kv)
		return bench_fail(s->base.err, "out of memory");
	kv[0] = RDB_KEY;
	memcpy(kv + 1, d->key, d->klen);
	if (update) {
		size_t ol;
		char *old = rocksdb_get(s->db, s->ropts, kv, 1 + d->klen, &ol,
					&msg);

		if (msg || !old || ol < 8) {
			rocksdb_free(old);
			return msg ? rdb_fail(s->base.err, "get", msg) :
				bench_fail(s->base.err, "%.*s: no such key",
					   (int)d->klen, d->key);
		}
		memcpy(sk + 1, old, 8);
		rocksdb_free(old);
		rocksdb_writebatch_delete(wb, sk, sizeof(sk));
	}
	bench_put_be64((unsigned char *)sk + 1, ++s->seq);
	memcpy(kv + 1 + d->klen, sk + 1, 8);
	memcpy(kv + 1 + d->klen + 8, d->val, d->vlen);
	rocksdb_writebatch_put(wb, kv, 1 + d->klen, kv + 1 + d->klen,
			       8 + d->vlen);
	rocksdb_writebatch_put(wb, sk, sizeof(sk), d->key, d->klen);
	return 0;
}

static int rdb_write(struct bench_store *bs, const struct bench_doc *d,
		     size_t n, bool update)
{
	struct rocksdb_store *s = (struct rocksdb_store *)bs;
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	char *msg = NULL;
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++)
		rc = rdb_put(s, wb, &d[i], update);
	if (rc == 0) {
		rocksdb_write(s->db, s->wopts, wb, &msg);
		if (msg)
			rc = rdb_fail(bs->err, "write", msg);
	}
	rocksdb_writebatch_destroy(wb);
	return rc;
}

static int rdb_insert(struct bench_store *bs, const struct bench_doc *d,
		      size_t n)
{
	return rdb_write(bs, d, n, false);
}

static int rdb_update(struct bench_store *bs, const struct bench_doc *d,
		      size_t n)
{
	return rdb_write(bs, d, n, true);
}

static int rdb_get(struct bench_store *bs, const char *key, size_t klen,
		   void *buf, size_t cap, size_t *len)
{
	struct rocksdb_store *s = (struct rocksdb_store *)bs;
	char *k = rdb_scratch(s, 1 + klen), *msg = NULL;
	rocksdb_pinnableslice_t *ps;
	const char *v;
	size_t vl;
	int found = 1;

	if (!k)
		return bench_fail(bs->err, "out of memory");
	k[0] = RDB_KEY;
	memcpy(k + 1, key, klen);
	ps = rocksdb_get_pinned(s->db, s->ropts, k, 1 + klen, &msg);
	if (msg)
		return rdb_fail(bs->err, "get", msg);
	if (!ps)
		return 0;
	v = rocksdb_pinnableslice_value(ps, &vl);
	if (vl < 8 || vl - 8 > cap) {
		found = bench_fail(bs->err, "value of %zu bytes", vl);
	} else {
		*len = vl - 8;
		memcpy(buf, v + 8, *len);
	}
	rocksdb_pinnableslice_destroy(ps);
	return found;
}

static int rdb_scan(struct bench_store *bs, bench_scan_cb cb, void *arg)
{
	struct rocksdb_store *s = (struct rocksdb_store *)bs;
	rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->ropts);
	const char first[1] = { RDB_KEY };
	char *msg = NULL;
	int stop = 0;

	for (rocksdb_iter_seek(it, first, 1); !stop && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if (kl < 1 || k[0] != RDB_KEY)
			break;
		if (vl < 8) {
			stop = bench_fail(bs->err, "short value");
			break;
		}
		stop = cb(arg, k + 1, kl - 1, v + 8, vl - 8);
	}
	rocksdb_iter_get_error(it, &msg);
	rocksdb_iter_destroy(it);
	if (stop)
		return stop;
	return msg ? rdb_fail(bs->err, "scan", msg) : 0;
}

static int rdb_close(struct bench_store *bs, char *err)
{
	(void)err;
	rdb_free((struct rocksdb_store *)bs);
	return 0;
}

const struct bench_ops bench_rocksdb_ops = {
	.name = "rocksdb",
	.open = rdb_open,
	.insert_batch = rdb_insert,
	.get = rdb_get,
	.update_batch = rdb_update,
	.scan = rdb_scan,
	.close = rdb_close,
	.reopen = rdb_reopen,
	.disk_usage = bench_store_usage,
};
