#include "config.h"

/*
 * The crash test, after SQLite's crash VFS (test6.c): a random workload
 * runs on the fault-injecting in-memory I/O (bio_fault_*), keeping a model
 * of every ACKNOWLEDGED commit (btxn_commit returned 0). The disk then
 * dies at a random point (bio_fault_die_after) or one fsync fails
 * (bio_fault_fail_fsync); the power is cut (bio_fault_crash: unsynced
 * writes dropped or torn at random) and the database is reopened on the
 * same in-memory disk. It must open, and its state must equal the model
 * after all acknowledged commits, optionally plus the one commit that was
 * in flight when the disk failed -- all of it or none of it, nothing else.
 *
 * A failing iteration names its seed. Replay one with
 *   BARREL_CRASH_SEED=<seed> tests/engine/test_crash
 * (BARREL_CRASH_ITERS=<n> changes how many iterations run).
 *
 * All engine I/O goes through a counting proxy of the fault io, so the
 * test knows whether any I/O had failed yet: an API call that fails while
 * the disk is still healthy is a bug, not a crash.
 */

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/db.h"
#include "engine/error.h"
#include "engine/io.h"
#include "tests/engine/testenv.h"
#include "tests/engine/testutil.h"

#define DATADIR "/bfault"
#define DBNAME "crash"

enum {
	NT = 3,            /* tables */
	NK = 64,           /* keys per table: small, so overwrites and deletes are common */
	MAXB = 24,         /* blobs per iteration */
	MAXV = 60000,      /* largest value */
	MAXBLOB = 200000,  /* largest blob */
	MAX_TXNS = 3000,   /* a workload that outlives this never saw the disk die */
};

static const char *const tname[NT] = { "t0", "t1", "t2" };
static const unsigned tflags[NT] = { BDB_TABLE_SEQ, 0, BDB_TABLE_SEQ };

/* ---- the counting proxy in front of the fault io ---- */

struct proxy {
	struct bio base;
	struct bio *inner;       /* the bio_fault instance */
	atomic_uint errors;      /* I/O calls that failed (not ENOENT/EEXIST-like) */
	atomic_uint batches;     /* write_batch calls that succeeded */
};

/* One proxy per process at a time: file ops carry no bio pointer. */
static struct proxy g_px;

static const struct bio_ops *inner_ops(void)
{
	return g_px.inner->ops;
}

static int note(int rc)
{
	if (rc < 0 && rc != -ENOENT && rc != -EEXIST && rc != -EWOULDBLOCK &&
	    rc != -ENOTEMPTY && rc != -ENOTDIR)
		atomic_fetch_add(&g_px.errors, 1);
	return rc;
}

static int px_open(struct bio *io, const char *path, int flags,
		   struct bio_file **out)
{
	(void)io;
	return note(inner_ops()->open(g_px.inner, path, flags, out));
}

static void px_close(struct bio_file *f)
{
	inner_ops()->close(f);
}

static ssize_t px_read(struct bio_file *f, void *buf, size_t len, uint64_t off)
{
	ssize_t n = inner_ops()->read(f, buf, len, off);

	if (n < 0)
		note((int)n);
	return n;
}

static int px_write_batch(struct bio *io, const struct bio_write *w, int n,
			  bool sync)
{
	int rc;

	(void)io;
	rc = note(inner_ops()->write_batch(g_px.inner, w, n, sync));
	if (rc == 0)
		atomic_fetch_add(&g_px.batches, 1);
	return rc;
}

static int px_fsync(struct bio_file *f)
{
	return note(inner_ops()->fsync(f));
}

static int px_allocate(struct bio_file *f, uint64_t len)
{
	return note(inner_ops()->allocate(f, len));
}

static int px_truncate(struct bio_file *f, uint64_t len)
{
	return note(inner_ops()->truncate(f, len));
}

static int px_size(struct bio_file *f, uint64_t *len)
{
	return note(inner_ops()->size(f, len));
}

static int px_lock(struct bio_file *f)
{
	return note(inner_ops()->lock(f));
}

static int px_mkdir(struct bio *io, const char *path)
{
	(void)io;
	return note(inner_ops()->mkdir(g_px.inner, path));
}

static int px_rmdir(struct bio *io, const char *path)
{
	(void)io;
	return note(inner_ops()->rmdir(g_px.inner, path));
}

static int px_unlink(struct bio *io, const char *path)
{
	(void)io;
	return note(inner_ops()->unlink(g_px.inner, path));
}

static int px_rename(struct bio *io, const char *from, const char *to)
{
	(void)io;
	return note(inner_ops()->rename(g_px.inner, from, to));
}

static int px_list(struct bio *io, const char *dir, bio_list_cb cb, void *arg)
{
	(void)io;
	return note(inner_ops()->list(g_px.inner, dir, cb, arg));
}

static int px_fsync_dir(struct bio *io, const char *dir)
{
	(void)io;
	return note(inner_ops()->fsync_dir(g_px.inner, dir));
}

static uint64_t px_bytes_written(struct bio *io)
{
	(void)io;
	return inner_ops()->bytes_written(g_px.inner);
}

static void px_free(struct bio *io)
{
	(void)io;   /* the test frees the inner io itself */
}

static const struct bio_ops px_ops = {
	.open = px_open,
	.close = px_close,
	.read = px_read,
	.write_batch = px_write_batch,
	.fsync = px_fsync,
	.allocate = px_allocate,
	.truncate = px_truncate,
	.size = px_size,
	.lock = px_lock,
	.mkdir = px_mkdir,
	.rmdir = px_rmdir,
	.unlink = px_unlink,
	.rename = px_rename,
	.list = px_list,
	.fsync_dir = px_fsync_dir,
	.bytes_written = px_bytes_written,
	.free = px_free,
};

static struct bio *px_new(uint64_t seed)
{
	g_px.base.ops = &px_ops;
	g_px.inner = bio_fault_new(seed);
	ck_assert_ptr_nonnull(g_px.inner);
	atomic_store(&g_px.errors, 0);
	atomic_store(&g_px.batches, 0);
	return &g_px.base;
}

static void px_free_all(void)
{
	g_px.inner->ops->free(g_px.inner);
	g_px.inner = NULL;
}

/* ---- the model ---- */

struct mval {
	bool present;
	uint32_t len;
	uint64_t vs;         /* value seed: the content is tu_value(code, vs) */
};

struct model {
	bool tables;                 /* the tables' creation was acknowledged */
	struct mval kv[NT][NK];
	bool linked[MAXB];           /* blobs[i] is linked */
	uint64_t max_seq;            /* highest seq handed to an acked put */
};

struct blobmeta {
	uint64_t id, seed, len;
	bool retired;                /* id reused after a crash: no longer checked */
};

enum op_kind { OP_PUT, OP_DEL, OP_LINK, OP_UNLINK };

struct op {
	uint8_t kind, t;
	uint16_t k;
	int blob;
	uint32_t len;
	uint64_t vs, seq;
};

struct iter {
	uint64_t seed;
	int round;
	struct tu_rng rng;
	struct benv_opts opts;
	uint32_t tid[NT];
	struct blobmeta blobs[MAXB];
	int nblobs;
	uint64_t next_vs;
	struct model acked;          /* after every acknowledged commit */
	struct model maybe;          /* ... with the in-flight commit landed */
	bool has_maybe;
	struct op ops[24];           /* the transaction being built */
	int nops;
};

static struct iter *g_it;    /* for failure messages */

#define CRASH_FAIL(...)                                                  \
	do {                                                             \
		char m_[2048];                                           \
		snprintf(m_, sizeof(m_), __VA_ARGS__);                   \
		fprintf(stderr, "test_crash: seed %llu round %d: %s\n",  \
			(unsigned long long)g_it->seed, g_it->round, m_); \
		ck_abort_msg("seed %llu round %d: %s",                   \
			     (unsigned long long)g_it->seed, g_it->round, m_); \
	} while (0)

/* An API call failed: fine once the disk has failed, a bug before. */
static void dead_or_fail(const char *what, int rc)
{
	if (atomic_load(&g_px.errors) == 0)
		CRASH_FAIL("%s failed with %d (%s) while no I/O had failed",
			   what, rc, barrel_strerror(rc));
}

static void apply_ops(struct model *m, const struct op *ops, int n)
{
	for (int i = 0; i < n; i++) {
		const struct op *o = &ops[i];

		switch (o->kind) {
		case OP_PUT:
			m->kv[o->t][o->k] = (struct mval){ true, o->len, o->vs };
			if (o->seq > m->max_seq)
				m->max_seq = o->seq;
			break;
		case OP_DEL:
			m->kv[o->t][o->k].present = false;
			break;
		case OP_LINK:
			m->linked[o->blob] = true;
			break;
		case OP_UNLINK:
			m->linked[o->blob] = false;
			break;
		}
	}
}

static int key_str(char *buf, size_t size, int k)
{
	return snprintf(buf, size, "key%03d", k);
}

static uint64_t val_code(int t, int k)
{
	return (uint64_t)t * 1000u + (uint64_t)k;
}

/* ---- comparing a database with a model ---- */

static uint8_t g_vbuf[MAXV > MAXBLOB ? MAXV : MAXBLOB];
static uint8_t g_rbuf[MAXBLOB];

#define MISMATCH(...)                                                    \
	do {                                                             \
		snprintf(why, wn, __VA_ARGS__);                          \
		goto out;                                                \
	} while (0)

static bool value_is(const struct mval *mv, int t, int k, const void *data,
		     size_t len)
{
	if (len != mv->len)
		return false;
	tu_value(g_vbuf, len, val_code(t, k), mv->vs);
	return len == 0 || memcmp(g_vbuf, data, len) == 0;
}

/* Scan table t: exactly the model's live keys, in order, right values. */
static int compare_scan(struct bsnap *snap, const struct model *m, int t,
			bool tol, char *why, size_t wn)
{
	struct bcursor *cur = NULL;
	struct bentry e;
	int rc, ret = -1, next = 0, seen = 0, live = 0;

	for (int k = 0; k < NK; k++)
		live += m->kv[t][k].present;
	rc = bsnap_scan(snap, g_it->tid[t], NULL, 0, NULL, 0, 0, &cur);
	if (rc) {
		if (tol)
			return 0;
		MISMATCH("%s: scan: %d (%s)", tname[t], rc, barrel_strerror(rc));
	}
	while ((rc = bcursor_next(cur, &e)) == 1) {
		char key[16];
		int k = -1;

		for (int i = next; i < NK; i++) {
			int kl = key_str(key, sizeof(key), i);

			if ((size_t)kl == e.klen && memcmp(key, e.key, e.klen) == 0) {
				k = i;
				break;
			}
		}
		if (k < 0)
			MISMATCH("%s: scan: unexpected or out-of-order key '%.*s'",
				 tname[t], (int)e.klen, (const char *)e.key);
		if (!m->kv[t][k].present)
			MISMATCH("%s: scan: key%03d present, model has it absent",
				 tname[t], k);
		if (!value_is(&m->kv[t][k], t, k, e.val, e.vlen))
			MISMATCH("%s: scan: key%03d has the wrong value (len %zu, want %u)",
				 tname[t], k, e.vlen, m->kv[t][k].len);
		next = k + 1;
		seen++;
	}
	if (rc < 0) {
		if (tol) {
			ret = 0;
			goto out;
		}
		MISMATCH("%s: scan: %d (%s)", tname[t], rc, barrel_strerror(rc));
	}
	if (seen != live)
		MISMATCH("%s: scan: %d entries, model has %d", tname[t], seen, live);
	ret = 0;
out:
	if (cur)
		bcursor_free(cur);
	return ret;
}

/* The number of a 6-byte "keyNNN" (borrowed keys are not NUL-terminated). */
static int key_number(const void *key)
{
	char digits[4];

	memcpy(digits, (const char *)key + 3, 3);
	digits[3] = '\0';
	return atoi(digits);
}

/* Changes feed of SEQ table t: live keys once each, ascending seq. */
static int compare_changes(struct bsnap *snap, const struct model *m, int t,
			   const uint64_t *seqs, bool tol, char *why, size_t wn)
{
	struct bcursor *cur = NULL;
	struct bentry e;
	bool seen[NK] = { false };
	uint64_t last = 0;
	int rc, ret = -1, n = 0, live = 0;

	for (int k = 0; k < NK; k++)
		live += m->kv[t][k].present;
	rc = bsnap_changes(snap, g_it->tid[t], 0, 0, &cur);
	if (rc) {
		if (tol)
			return 0;
		MISMATCH("%s: changes: %d (%s)", tname[t], rc, barrel_strerror(rc));
	}
	while ((rc = bcursor_next(cur, &e)) == 1) {
		int k;

		if (e.klen != 6 || memcmp(e.key, "key", 3) != 0)
			MISMATCH("%s: changes: unexpected key '%.*s'", tname[t],
				 (int)e.klen, (const char *)e.key);
		k = key_number(e.key);
		if (k < 0 || k >= NK || !m->kv[t][k].present)
			MISMATCH("%s: changes: key%03d listed, model has it absent",
				 tname[t], k);
		if (seen[k])
			MISMATCH("%s: changes: key%03d listed twice", tname[t], k);
		seen[k] = true;
		if (e.seq <= last)
			MISMATCH("%s: changes: seq %llu after %llu", tname[t],
				 (unsigned long long)e.seq,
				 (unsigned long long)last);
		last = e.seq;
		if (seqs[k] && e.seq != seqs[k])
			MISMATCH("%s: changes: key%03d at seq %llu, get says %llu",
				 tname[t], k, (unsigned long long)e.seq,
				 (unsigned long long)seqs[k]);
		if (!value_is(&m->kv[t][k], t, k, e.val, e.vlen))
			MISMATCH("%s: changes: key%03d has the wrong value",
				 tname[t], k);
		n++;
	}
	if (rc < 0) {
		if (tol) {
			ret = 0;
			goto out;
		}
		MISMATCH("%s: changes: %d (%s)", tname[t], rc, barrel_strerror(rc));
	}
	if (n != live)
		MISMATCH("%s: changes: %d entries, model has %d", tname[t], n, live);
	ret = 0;
out:
	if (cur)
		bcursor_free(cur);
	return ret;
}

static int compare_blobs(struct bsnap *snap, const struct model *m, bool tol,
			 char *why, size_t wn)
{
	for (int b = 0; b < g_it->nblobs; b++) {
		const struct blobmeta *bm = &g_it->blobs[b];
		struct bblob_reader *r = NULL;
		uint64_t off = 0;
		int rc;

		if (bm->retired)
			continue;
		rc = bsnap_blob_open(snap, bm->id, &r);
		if (!m->linked[b]) {
			if (rc == 0) {
				bblob_close(r);
				snprintf(why, wn, "blob %llu is linked, model has it unlinked",
					 (unsigned long long)bm->id);
				return -1;
			}
			if (rc != BARREL_E_NOTFOUND && !tol) {
				snprintf(why, wn, "blob %llu: open: %d (%s)",
					 (unsigned long long)bm->id, rc,
					 barrel_strerror(rc));
				return -1;
			}
			continue;
		}
		if (rc) {
			if (tol && rc != BARREL_E_NOTFOUND)
				continue;
			snprintf(why, wn, "blob %llu (%llu bytes): open: %d (%s)",
				 (unsigned long long)bm->id,
				 (unsigned long long)bm->len, rc,
				 barrel_strerror(rc));
			return -1;
		}
		if (bblob_length(r) != bm->len) {
			snprintf(why, wn, "blob %llu: length %llu, want %llu",
				 (unsigned long long)bm->id,
				 (unsigned long long)bblob_length(r),
				 (unsigned long long)bm->len);
			bblob_close(r);
			return -1;
		}
		while (off < bm->len) {
			ssize_t n = bblob_read(r, g_rbuf + off,
					       (size_t)(bm->len - off), off);

			if (n <= 0)
				break;
			off += (uint64_t)n;
		}
		bblob_close(r);
		if (off != bm->len) {
			if (tol)
				continue;
			snprintf(why, wn, "blob %llu: read %llu of %llu bytes",
				 (unsigned long long)bm->id,
				 (unsigned long long)off,
				 (unsigned long long)bm->len);
			return -1;
		}
		tu_pattern(bm->seed, 0, g_vbuf, (size_t)bm->len);
		if (memcmp(g_vbuf, g_rbuf, (size_t)bm->len) != 0) {
			snprintf(why, wn, "blob %llu: content differs",
				 (unsigned long long)bm->id);
			return -1;
		}
	}
	return 0;
}

/*
 * 0 when db holds exactly the state of m, else -1 with the first
 * difference in why. db NULL: the database does not exist. With tol,
 * read errors are skipped (a dead disk), wrong data never is.
 */
static int compare_state(struct bdb *db, const struct model *m, bool tol,
			 char *why, size_t wn)
{
	struct bsnap *snap = NULL;
	static uint64_t seqs[NT][NK];
	uint32_t id;
	int rc, ret = -1;

	if (!db) {
		if (m->tables)
			MISMATCH("the database is missing");
		return 0;
	}
	if (!m->tables) {
		for (int t = 0; t < NT; t++) {
			rc = bdb_table(db, tname[t], &id);
			if (rc == 0)
				MISMATCH("table %s exists, its creation was not acknowledged",
					 tname[t]);
		}
		return 0;
	}
	for (int t = 0; t < NT; t++) {
		rc = bdb_table(db, tname[t], &id);
		if (rc)
			MISMATCH("table %s: %d (%s)", tname[t], rc,
				 barrel_strerror(rc));
		if (id != g_it->tid[t])
			MISMATCH("table %s has id %u, was %u", tname[t], id,
				 g_it->tid[t]);
	}
	rc = bdb_snapshot(db, &snap);
	if (rc) {
		if (tol)
			return 0;
		MISMATCH("snapshot: %d (%s)", rc, barrel_strerror(rc));
	}
	if (!tol && bsnap_seq(snap) < m->max_seq)
		MISMATCH("snapshot seq %llu < acknowledged seq %llu",
			 (unsigned long long)bsnap_seq(snap),
			 (unsigned long long)m->max_seq);
	memset(seqs, 0, sizeof(seqs));
	for (int t = 0; t < NT; t++) {
		for (int k = 0; k < NK; k++) {
			const struct mval *mv = &m->kv[t][k];
			struct bval v;
			char key[16];
			int kl = key_str(key, sizeof(key), k);

			memset(&v, 0, sizeof(v));
			rc = bsnap_get(snap, g_it->tid[t], key, (size_t)kl, &v);
			if (rc == BARREL_E_NOTFOUND) {
				if (mv->present)
					MISMATCH("%s/%s missing (want %u bytes)",
						 tname[t], key, mv->len);
				continue;
			}
			if (rc) {
				if (tol)
					continue;
				MISMATCH("%s/%s: get: %d (%s)", tname[t], key, rc,
					 barrel_strerror(rc));
			}
			seqs[t][k] = v.seq;
			if (!mv->present) {
				bval_release(&v);
				MISMATCH("%s/%s present (%zu bytes), model has it absent",
					 tname[t], key, v.len);
			}
			if (!value_is(mv, t, k, v.data, v.len)) {
				size_t len = v.len;

				bval_release(&v);
				MISMATCH("%s/%s: wrong value (len %zu, want %u)",
					 tname[t], key, len, mv->len);
			}
			bval_release(&v);
		}
		if (compare_scan(snap, m, t, tol, why, wn))
			goto out;
		if ((tflags[t] & BDB_TABLE_SEQ) &&
		    compare_changes(snap, m, t, seqs[t], tol, why, wn))
			goto out;
	}
	if (compare_blobs(snap, m, tol, why, wn))
		goto out;
	ret = 0;
out:
	if (snap)
		bsnap_release(snap);
	return ret;
}

/* ---- the workload ---- */

static void retire_reused(uint64_t id)
{
	for (int b = 0; b < g_it->nblobs; b++) {
		struct blobmeta *bm = &g_it->blobs[b];

		if (bm->retired || bm->id != id)
			continue;
		if (g_it->acked.linked[b] ||
		    (g_it->has_maybe && g_it->maybe.linked[b]))
			CRASH_FAIL("new blob got id %llu, which is linked",
				   (unsigned long long)id);
		bm->retired = true;
	}
}

/* Write a blob; returns its index in blobs[], or -1 after a failure. */
static int make_blob(struct bdb *db)
{
	static uint8_t piece[65536];
	struct iter *it = g_it;
	struct bblob_writer *w;
	uint64_t len = tu_rng_below(&it->rng, MAXBLOB + 1);
	uint64_t seed = tu_rng_next(&it->rng), off = 0, id = 0, got = 0;
	int rc;

	rc = bdb_blob_create(db, &w);
	if (rc) {
		dead_or_fail("bdb_blob_create", rc);
		return -1;
	}
	while (off < len) {
		size_t n = (size_t)tu_rng_range(&it->rng, 1, sizeof(piece));

		if (n > len - off)
			n = (size_t)(len - off);
		tu_pattern(seed, off, piece, n);
		rc = bblob_write(w, piece, n);
		if (rc) {
			dead_or_fail("bblob_write", rc);
			bblob_abort(w);
			return -1;
		}
		off += n;
	}
	rc = bblob_finish(w, &id, &got);
	if (rc) {
		dead_or_fail("bblob_finish", rc);
		return -1;
	}
	if (got != len)
		CRASH_FAIL("bblob_finish: length %llu, wrote %llu",
			   (unsigned long long)got, (unsigned long long)len);
	retire_reused(id);
	it->blobs[it->nblobs] = (struct blobmeta){ id, seed, len, false };
	it->acked.linked[it->nblobs] = false;
	it->maybe.linked[it->nblobs] = false;
	return it->nblobs++;
}

static uint32_t pick_len(struct tu_rng *r)
{
	unsigned roll = (unsigned)tu_rng_below(r, 100);

	if (roll < 70)
		return (uint32_t)tu_rng_below(r, 2001);
	if (roll < 95)
		return (uint32_t)tu_rng_range(r, 2000, 8000);
	return (uint32_t)tu_rng_range(r, 8000, MAXV);
}

enum txn_result { TXN_ACKED, TXN_FAILED_COMMIT, TXN_FAILED_EARLY };

/*
 * Build and commit one transaction of 1-20 random operations against the
 * acknowledged state (a failed commit is invisible, so later ones build
 * on the acked state). The operations end up in it->ops.
 */
static enum txn_result one_txn(struct bdb *db)
{
	struct iter *it = g_it;
	struct model p = it->acked;
	struct btxn *txn;
	int blob = -1, rc, nops;

	it->nops = 0;
	if (it->nblobs < MAXB && tu_rng_pct(&it->rng, 8)) {
		blob = make_blob(db);
		if (blob < 0)
			return TXN_FAILED_EARLY;
	}
	rc = bdb_begin(db, &txn);
	if (rc) {
		dead_or_fail("bdb_begin", rc);
		return TXN_FAILED_EARLY;
	}
	if (blob >= 0) {
		rc = btxn_blob_link(txn, it->blobs[blob].id);
		if (rc)
			goto fail;
		it->ops[it->nops++] = (struct op){ .kind = OP_LINK, .blob = blob };
		p.linked[blob] = true;
	}
	nops = (int)tu_rng_range(&it->rng, 1, 20);
	for (int i = 0; i < nops; i++) {
		unsigned roll = (unsigned)tu_rng_below(&it->rng, 100);
		int t = (int)tu_rng_below(&it->rng, NT);
		int k = (int)tu_rng_below(&it->rng, NK);
		char key[16];
		int kl = key_str(key, sizeof(key), k);

		if (roll < 65) {
			struct op o = { .kind = OP_PUT, .t = (uint8_t)t,
					.k = (uint16_t)k };

			o.len = pick_len(&it->rng);
			o.vs = ++it->next_vs;
			tu_value(g_vbuf, o.len, val_code(t, k), o.vs);
			rc = btxn_put(txn, it->tid[t], key, (size_t)kl, g_vbuf,
				      o.len, &o.seq);
			if (rc)
				goto fail;
			if (tflags[t] & BDB_TABLE_SEQ) {
				if (o.seq <= p.max_seq)
					CRASH_FAIL("put %s/%s got seq %llu, not above %llu",
						   tname[t], key,
						   (unsigned long long)o.seq,
						   (unsigned long long)p.max_seq);
			} else {
				o.seq = 0;
			}
			it->ops[it->nops++] = o;
			apply_ops(&p, &o, 1);
		} else if (roll < 90) {
			struct op o = { .kind = OP_DEL, .t = (uint8_t)t,
					.k = (uint16_t)k };

			rc = btxn_del(txn, it->tid[t], key, (size_t)kl);
			if (rc == 0 && !p.kv[t][k].present)
				CRASH_FAIL("del %s/%s succeeded on an absent key",
					   tname[t], key);
			if (rc == BARREL_E_NOTFOUND) {
				if (p.kv[t][k].present)
					CRASH_FAIL("del %s/%s: NOTFOUND on a present key",
						   tname[t], key);
				continue;
			}
			if (rc)
				goto fail;
			it->ops[it->nops++] = o;
			apply_ops(&p, &o, 1);
		} else {
			int b = -1, start = (int)tu_rng_below(&it->rng, MAXB);

			for (int j = 0; j < it->nblobs && b < 0; j++) {
				int c = (start + j) % it->nblobs;

				if (p.linked[c] && !it->blobs[c].retired)
					b = c;
			}
			if (b < 0)
				continue;
			rc = btxn_blob_unlink(txn, it->blobs[b].id);
			if (rc)
				goto fail;
			it->ops[it->nops++] = (struct op){ .kind = OP_UNLINK, .blob = b };
			p.linked[b] = false;
		}
	}
	rc = btxn_commit(txn);
	if (rc == 0)
		return TXN_ACKED;
	dead_or_fail("btxn_commit", rc);
	return TXN_FAILED_COMMIT;
fail:
	dead_or_fail("a transaction operation", rc);
	btxn_abort(txn);
	return TXN_FAILED_EARLY;
}

/* Create the tables if their creation is not acknowledged yet. */
static int setup_tables(struct bdb *db)
{
	struct iter *it = g_it;
	struct btxn *txn;
	int rc;

	if (it->acked.tables)
		return 0;
	rc = bdb_begin(db, &txn);
	if (rc) {
		dead_or_fail("bdb_begin (tables)", rc);
		return rc;
	}
	for (int t = 0; t < NT; t++) {
		rc = btxn_table(txn, tname[t], tflags[t], &it->tid[t]);
		if (rc) {
			dead_or_fail("btxn_table", rc);
			btxn_abort(txn);
			return rc;
		}
	}
	rc = btxn_commit(txn);
	if (rc == 0) {
		it->acked.tables = true;
		return 0;
	}
	dead_or_fail("btxn_commit (tables)", rc);
	it->maybe = it->acked;
	it->maybe.tables = true;
	it->has_maybe = true;
	return rc;
}

/* ---- watchdog: a hang names its seed ---- */

static char g_wd_msg[160];

static void wd_handler(int sig)
{
	(void)sig;
	if (write(2, g_wd_msg, strlen(g_wd_msg)) < 0)
		_exit(4);
	_exit(3);
}

static void wd_arm(unsigned secs)
{
	struct sigaction sa;

	snprintf(g_wd_msg, sizeof(g_wd_msg),
		 "test_crash: seed %llu round %d: hung for %u s\n",
		 (unsigned long long)g_it->seed, g_it->round, secs);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = wd_handler;
	sigaction(SIGALRM, &sa, NULL);
	alarm(secs);
}

/* ---- one iteration ---- */

/*
 * After the power cut: reopen on the same disk, compare with the model
 * (with the in-flight commit or without it), adopt whichever matched.
 * Returns the open env (and *dbp, NULL when the database is absent).
 */
static struct benv *reopen_verify(struct bdb **dbp)
{
	struct iter *it = g_it;
	struct benv *env = NULL;
	struct bdb *db = NULL;
	char why_a[512], why_b[512];
	int rc;

	bio_fault_die_after(g_px.inner, 0);
	bio_fault_fail_fsync(g_px.inner, 0);
	rc = benv_open(DATADIR, &it->opts, &env);
	if (rc)
		CRASH_FAIL("benv_open after the crash: %d (%s)", rc,
			   barrel_strerror(rc));
	rc = benv_db(env, DBNAME, false, &db);
	if (rc == BARREL_E_NOTFOUND)
		db = NULL;
	else if (rc)
		CRASH_FAIL("benv_db after the crash: %d (%s)", rc,
			   barrel_strerror(rc));
	if (compare_state(db, &it->acked, false, why_a, sizeof(why_a))) {
		if (!it->has_maybe)
			CRASH_FAIL("after the crash: %s (no commit was in flight)",
				   why_a);
		if (compare_state(db, &it->maybe, false, why_b, sizeof(why_b)))
			CRASH_FAIL("after the crash the state is neither the acked one "
				   "(%s) nor that plus the in-flight commit (%s)",
				   why_a, why_b);
		it->acked = it->maybe;
	}
	if (db && it->acked.tables && bdb_seq(db) < it->acked.max_seq)
		CRASH_FAIL("bdb_seq %llu < acknowledged seq %llu",
			   (unsigned long long)bdb_seq(db),
			   (unsigned long long)it->acked.max_seq);
	it->has_maybe = false;
	*dbp = db;
	return env;
}

/* In the live process, the failed commit must not be visible. */
static void live_check(struct bdb *db, const char *after)
{
	char why[512];

	if (db && compare_state(db, &g_it->acked, true, why, sizeof(why)))
		CRASH_FAIL("after %s, the live database shows: %s", after, why);
}

static void iter_init(struct iter *it, uint64_t seed)
{
	memset(it, 0, sizeof(*it));
	it->seed = seed;
	tu_rng_init(&it->rng, tu_mix64(seed));
	benv_opts_init(&it->opts);
	it->opts.io = px_new(seed);
	it->opts.gc_thread = false;    /* deterministic: GC runs in the workload */
	it->opts.seg_min = 64u << 10;
	it->opts.seg_max = 256u << 10;
	it->opts.checkpoint_bytes = 64u << 10;
	it->opts.cache_budget = 8u << 20;
	g_it = it;
}

/* The workload until the first failure (it->has_maybe: a commit was in flight). */
static void workload_until_dead(struct bdb *db)
{
	struct iter *it = g_it;
	int n;

	for (n = 0; n < MAX_TXNS; n++) {
		unsigned roll = (unsigned)tu_rng_below(&it->rng, 100);
		enum txn_result r;
		int rc;

		if (roll < 4) {
			rc = bdb_checkpoint(db);
			if (rc) {
				dead_or_fail("bdb_checkpoint", rc);
				live_check(db, "a failed checkpoint");
				return;
			}
			continue;
		}
		if (roll < 7) {
			struct bgc_stats gs;

			rc = bdb_gc(db, tu_rng_pct(&it->rng, 50) ? 1.0 : 1.3, &gs);
			if (rc) {
				dead_or_fail("bdb_gc", rc);
				live_check(db, "a failed GC");
				return;
			}
			continue;
		}
		r = one_txn(db);
		if (r == TXN_ACKED) {
			apply_ops(&it->acked, it->ops, it->nops);
			continue;
		}
		if (r == TXN_FAILED_COMMIT) {
			it->maybe = it->acked;
			apply_ops(&it->maybe, it->ops, it->nops);
			it->has_maybe = true;
			live_check(db, "a failed commit");
		} else {
			live_check(db, "a failed operation");
		}
		return;
	}
	CRASH_FAIL("the disk never died (%u batches written)",
		   atomic_load(&g_px.batches));
}

enum { ROUNDS = 2 };

/*
 * One iteration of the dead-disk crash test: ROUNDS times (the later
 * ones on the database as recovered, without a clean close between):
 * run the workload until the disk dies, cut the power, close, reopen,
 * verify.
 */
static void crash_iteration(uint64_t seed)
{
	struct iter it;
	struct benv *env = NULL;
	struct bdb *db = NULL;
	int rc;

	iter_init(&it, seed);
	for (it.round = 0; it.round < ROUNDS; it.round++) {
		bool early = it.round == 0 && tu_rng_pct(&it.rng, 10);
		unsigned k = (unsigned)tu_rng_range(&it.rng, 1, early ? 8 : 100);

		wd_arm(30);
		if (early)
			bio_fault_die_after(g_px.inner, k);
		if (!env) {
			rc = benv_open(DATADIR, &it.opts, &env);
			if (rc) {
				dead_or_fail("benv_open", rc);
				env = NULL;
				goto crash;
			}
		}
		rc = benv_db(env, DBNAME, true, &db);
		if (rc) {
			dead_or_fail("benv_db", rc);
			goto crash;
		}
		if (setup_tables(db))
			goto crash;
		if (!early)
			bio_fault_die_after(g_px.inner, k);
		workload_until_dead(db);
crash:
		bio_fault_crash(g_px.inner);
		if (env)
			benv_close(env);
		env = reopen_verify(&db);
		alarm(0);
	}
	benv_close(env);
	px_free_all();
}

/*
 * One iteration of the failed-fsync test. What it asserts:
 *  - commits before the failure are acknowledged and survive;
 *  - after the fsync failure, the live database never shows a commit that
 *    returned an error;
 *  - later commits may fail (the database turned read-only) or succeed;
 *    those that succeed are acknowledged and must survive, those that fail
 *    must never appear;
 *  - after a close and a power cut (either order, at random), the state
 *    is the acknowledged one, optionally plus the first failed commit
 *    (whole or not at all; its data was written, so a torn copy of it
 *    may be on disk and must be recognised as torn).
 * When the failing fsync lies beyond the workload this is a plain close
 * and power cut: the state must be exactly the acknowledged one.
 */
static void fsync_iteration(uint64_t seed)
{
	struct iter it;
	struct benv *env = NULL;
	struct bdb *db = NULL;
	int rc, after = 0;

	iter_init(&it, seed);
	wd_arm(30);
	rc = benv_open(DATADIR, &it.opts, &env);
	if (rc)
		CRASH_FAIL("benv_open: %d (%s)", rc, barrel_strerror(rc));
	rc = benv_db(env, DBNAME, true, &db);
	if (rc)
		CRASH_FAIL("benv_db: %d (%s)", rc, barrel_strerror(rc));
	if (setup_tables(db))
		CRASH_FAIL("table setup failed");
	bio_fault_fail_fsync(g_px.inner, (unsigned)tu_rng_range(&it.rng, 1, 80));

	for (int n = 0; n < 60 && after < 6; n++) {
		unsigned roll = (unsigned)tu_rng_below(&it.rng, 100);
		enum txn_result r;

		if (atomic_load(&g_px.errors))
			after++;
		if (roll < 5) {
			rc = bdb_checkpoint(db);
			if (rc) {
				dead_or_fail("bdb_checkpoint", rc);
				live_check(db, "a failed checkpoint");
			}
			continue;
		}
		r = one_txn(db);
		if (r == TXN_ACKED) {
			apply_ops(&it.acked, it.ops, it.nops);
			if (it.has_maybe)
				apply_ops(&it.maybe, it.ops, it.nops);
			continue;
		}
		if (r == TXN_FAILED_COMMIT && !it.has_maybe &&
		    atomic_load(&g_px.errors)) {
			/* the commit whose fsync failed: it may have landed */
			it.maybe = it.acked;
			apply_ops(&it.maybe, it.ops, it.nops);
			it.has_maybe = true;
		}
		live_check(db, r == TXN_FAILED_COMMIT ? "a failed commit" :
			   "a failed operation");
	}
	if (tu_rng_pct(&it.rng, 50)) {
		benv_close(env);               /* exit, then power cut */
		bio_fault_crash(g_px.inner);
	} else {
		bio_fault_crash(g_px.inner);   /* power cut, then close */
		benv_close(env);
	}
	env = reopen_verify(&db);
	benv_close(env);
	alarm(0);
	px_free_all();
}

/* ---- the test cases ---- */

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);

	return s && *s ? strtoull(s, NULL, 0) : dflt;
}

static void run_seeds(void (*fn)(uint64_t), uint64_t base, uint64_t dflt_iters,
		      uint64_t budget_ms)
{
	uint64_t one = env_u64("BARREL_CRASH_SEED", 0);
	uint64_t iters = env_u64("BARREL_CRASH_ITERS", dflt_iters);
	uint64_t t0 = tu_now_ms(), i;

	if (one) {
		fn(one);
		return;
	}
	for (i = 0; i < iters; i++) {
		fn(base + i);
		/* keep the file within its time budget on slow machines */
		if (tu_now_ms() - t0 > budget_ms && i >= 30)
			break;
	}
	fprintf(stderr, "test_crash: %llu iterations from seed %llu in %llu ms\n",
		(unsigned long long)(i < iters ? i + 1 : iters),
		(unsigned long long)base,
		(unsigned long long)(tu_now_ms() - t0));
}

/* Acked commits survive a dead disk and a power cut; the in-flight one is all or nothing. */
START_TEST(test_crash_dead_disk)
{
	run_seeds(crash_iteration, 1000, 1000, 35000);
}
END_TEST

/* A failed fsync never acks a commit, never shows a failed one, never loses an acked one. */
START_TEST(test_crash_fsync_fail)
{
	run_seeds(fsync_iteration, 500000, 500, 15000);
}
END_TEST

/* Count the keys "lazyN" present, and check they are a prefix 0..n-1. */
static unsigned lazy_prefix(struct bdb *db, uint32_t t, unsigned n)
{
	struct bsnap *snap;
	unsigned have = 0;

	OK(bdb_snapshot(db, &snap));
	for (unsigned i = 0; i < n; i++) {
		char key[16];
		struct bval v = { 0 };
		int rc;

		snprintf(key, sizeof(key), "lazy%u", i);
		rc = bsnap_get(snap, t, key, strlen(key), &v);
		bval_release(&v);
		if (rc == 0) {
			ck_assert_msg(have == i, "lazy%u survived after a lost "
				      "lazy%u", i, have);
			have++;
		} else {
			ck_assert_int_eq(rc, BARREL_E_NOTFOUND);
		}
	}
	bsnap_release(snap);
	return have;
}

static int sget_ok(struct bdb *db, uint32_t t, const char *key)
{
	struct bsnap *snap;
	struct bval v = { 0 };
	int rc;

	OK(bdb_snapshot(db, &snap));
	rc = bsnap_get(snap, t, key, strlen(key), &v);
	bval_release(&v);
	bsnap_release(snap);
	return rc;
}

static void lazy_put(struct bdb *db, uint32_t t, const char *key, bool lazy)
{
	struct btxn *txn;

	OK(bdb_begin(db, &txn));
	OK(btxn_put(txn, t, key, strlen(key), "v", 1, NULL));
	OK(lazy ? btxn_commit_lazy(txn) : btxn_commit(txn));
}

/*
 * A lazy commit is visible at once; a power cut loses lazy commits only
 * as a suffix and never a durable one; bdb_sync() or a later durable
 * commit makes the lazy ones before it survive.
 */
START_TEST(test_crash_lazy)
{
	unsigned lost = 0;

	for (uint64_t seed = 1; seed <= 60; seed++) {
		struct benv_opts o;
		struct bio *io = bio_fault_new(seed);
		struct benv *env;
		struct bdb *db;
		struct btxn *txn;
		unsigned mode = (unsigned)(seed % 3), n = 8;
		uint32_t t;

		benv_opts_init(&o);
		o.io = io;
		o.gc_thread = false;
		OK(benv_open(DATADIR, &o, &env));
		OK(benv_db(env, DBNAME, true, &db));
		OK(bdb_begin(db, &txn));
		OK(btxn_table(txn, "t", 0, &t));
		OK(btxn_commit(txn));
		lazy_put(db, t, "durable0", false);
		for (unsigned i = 0; i < n; i++) {
			char key[16];

			snprintf(key, sizeof(key), "lazy%u", i);
			lazy_put(db, t, key, true);
			ck_assert_uint_eq(lazy_prefix(db, t, n), i + 1);
		}
		if (mode == 1)
			OK(bdb_sync(db));
		if (mode == 2)
			lazy_put(db, t, "durable1", false);
		bio_fault_crash(io);
		benv_close(env);
		OK(benv_open(DATADIR, &o, &env));
		OK(benv_db(env, DBNAME, false, &db));
		OK(bdb_table(db, "t", &t));
		ck_assert_int_eq(sget_ok(db, t, "durable0"), 0);
		if (mode)
			ck_assert_uint_eq(lazy_prefix(db, t, n), n);
		else
			lost += lazy_prefix(db, t, n) < n;
		if (mode == 2)
			ck_assert_int_eq(sget_ok(db, t, "durable1"), 0);
		benv_close(env);
		io->ops->free(io);
	}
	/* unsynced, they really are at the mercy of a power cut */
	ck_assert_uint_gt(lost, 0);
}
END_TEST

static Suite *crash_suite(void)
{
	Suite *s = suite_create("crash");
	TCase *tc = tcase_create("crash");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_crash_dead_disk);
	tcase_add_test(tc, test_crash_fsync_fail);
	tcase_add_test(tc, test_crash_lazy);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(crash_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
