/*
 * Checkpoints and HEAD: the B-tree stores' I/O, writing every dirty index
 * node, the CHECKPOINT record, and the two-slot HEAD file that names it.
 *
 * Checkpoint protocol (DESIGN.md "Checkpoint"), with the writer slot held:
 *   1. Flush each table's key and sequence trees: dirty nodes are appended
 *      as NODE records, children before parents.
 *   2. Append a CHECKPOINT record: counters, every table's roots, and the
 *      segment table with live bytes.
 *   3. Stage a version with the clean roots; wait until durable.
 *   4. Write the next HEAD slot (generation + 1) naming the record; sync.
 * Recovery starts from the record HEAD names; a crash before step 4 leaves
 * the previous checkpoint in force and the log after it replays.
 *
 * In the background (a commit's trigger), the same steps split:
 *   1. The writer freezes the pending state (an unpublished version that
 *      keeps its nodes unchanged), notes the log's tail as the replay
 *      start, and creates an index segment; then goes on.
 *   2. A thread flushes the frozen trees into the index segment, stamping
 *      the nodes it writes, appends the CHECKPOINT record there, syncs it
 *      and the log up to the freeze, and writes HEAD (record and replay
 *      start).
 *   3. The next writer installs it: its trees adopt the stamped nodes'
 *      records (bt_adopt()), and the frozen version is dropped.
 */
#include "config.h"

#include <errno.h>
#include <time.h>
#include <xxhash.h>

#include "engine/db_i.h"
#include "engine/log.h"

#define NODE_PREFIX 8u

/* ---- B-tree store operations ---- */

static int store_read(void *ctx, uint64_t addr, uint32_t size, void **buf,
		      uint32_t *len)
{
	struct db_store_ctx *c = ctx;
	uint8_t *p;
	uint32_t n;
	int err;

	err = db_read_record(c->db, addr, size, REC_NODE, (void **)&p, &n);
	if (err)
		return err;
	if (n < NODE_PREFIX || get_le32(p) != c->table || p[4] != c->which) {
		barrel_log(BLOG_ERR, "%s: corrupt record: seg=%u off=%u: node of another index",
			   c->db->name, bptr_seg(addr), bptr_off(addr));
		free(p);
		return BARREL_E_CORRUPT;
	}
	memmove(p, p + NODE_PREFIX, n - NODE_PREFIX);
	*buf = p;
	*len = n - NODE_PREFIX;
	return 0;
}

/* A NODE record's payload: the prefix naming the index, then the node. */
static void node_frame(const struct db_store_ctx *c, uint8_t *prefix,
		       struct iovec *iov, const void *buf, uint32_t len)
{
	memset(prefix, 0, NODE_PREFIX);
	put_le32(prefix, c->table);
	prefix[4] = c->which;
	iov[0] = (struct iovec){ prefix, NODE_PREFIX };
	iov[1] = (struct iovec){ (void *)buf, len };
}

static int store_write(void *ctx, const void *buf, uint32_t len,
		       uint64_t *addr, uint32_t *size)
{
	struct db_store_ctx *c = ctx;
	uint8_t prefix[NODE_PREFIX];
	struct iovec iov[2];
	int err;

	node_frame(c, prefix, iov, buf, len);
	err = db_append(c->db, REC_NODE, 0, iov, 2, addr, size);
	if (!err)
		db_live_add(c->db, *addr, *size);
	return err;
}

static void store_released(void *ctx, uint64_t addr, uint32_t size)
{
	struct db_store_ctx *c = ctx;

	db_live_add(c->db, addr, -(int64_t)size);
}

static const struct bt_store_ops store_ops = {
	.read = store_read,
	.write = store_write,
	.released = store_released,
};

int db_store_init(struct bdb *db, uint32_t table)
{
	struct db_tabinfo *ti = db->info[table];

	for (int w = 0; w < 2; w++) {
		ti->ctx[w] = (struct db_store_ctx){ db, table, (uint8_t)w };
		ti->store[w] = (struct bt_store){
			.ops = &store_ops,
			.ctx = &ti->ctx[w],
			.cache = db->env->cache,
			.cache_ns = db->uid,
		};
	}
	return 0;
}

uint64_t db_dirty_bytes_exact(struct bdb *db)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < db->ntables; i++) {
		if (!db->info[i])
			continue;
		db->info[i]->store[IDX_KEY].dirty_bytes =
			bt_dirty_size(&db->tables[i].root);
		db->info[i]->store[IDX_SEQ].dirty_bytes =
			bt_dirty_size(&db->tables[i].seq_root);
		n += db->info[i]->store[0].dirty_bytes +
		     db->info[i]->store[1].dirty_bytes;
	}
	return n;
}

uint64_t db_dirty_bytes(struct bdb *db)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < db->ntables; i++)
		if (db->info[i])
			n += db->info[i]->store[0].dirty_bytes +
			     db->info[i]->store[1].dirty_bytes;
	return n;
}

/* ---- HEAD ---- */

/* Write HEAD slot gen % 2 naming the checkpoint at cp (durable). */
static int head_write(struct bdb *db, uint64_t gen, bptr cp, uint32_t size,
		      bptr replay, bool clean)
{
	uint8_t slot[HEAD_SIZE] = "BRLHEAD\n";
	struct iovec iov = { slot, sizeof(slot) };
	struct bio_write w;

	put_le32(slot + 8, 2);
	put_le32(slot + 12, clean ? 1 : 0);
	put_le64(slot + 16, gen);
	put_le64(slot + 24, cp);
	put_le32(slot + 32, size);
	put_le64(slot + 40, replay);
	put_le64(slot + 56, XXH3_64bits(slot, 56));
	w = (struct bio_write){ db->headf, &iov, 1, (gen % 2) * HEAD_SLOT_SIZE };
	return db->env->io->ops->write_batch(db->env->io, &w, 1, true);
}

int db_head_write(struct bdb *db, bool clean)
{
	int err = head_write(db, db->head_gen + 1, db->cp_addr, db->cp_size,
			     db->cp_replay, clean);

	if (err)
		return err;
	db->head_gen++;
	db->head_clean = clean;
	return 0;
}

int db_head_decode(const uint8_t *slot, struct db_head *h)
{
	uint32_t version;

	if (memcmp(slot, "BRLHEAD\n", 8) ||
	    get_le64(slot + 56) != XXH3_64bits(slot, 56))
		return BARREL_E_CORRUPT;
	version = get_le32(slot + 8);
	if (version != 1 && version != 2)
		return BARREL_E_VERSION;
	h->clean = get_le32(slot + 12) & 1;
	h->gen = get_le64(slot + 16);
	h->cp_addr = get_le64(slot + 24);
	h->cp_size = get_le32(slot + 32);
	/* Version 1 replays from the end of the checkpoint record. */
	h->replay = version == 1 ? h->cp_addr + h->cp_size : get_le64(slot + 40);
	return 0;
}

/* ---- the CHECKPOINT record ---- */

#define CP_HDR 40u
#define CP_TABLE 48u
#define CP_SEG 32u

/* What a CHECKPOINT record says. */
struct cp_state {
	uint64_t txn, seq, next_blob_id;
	uint32_t ntables, next_seg_id;
	const struct db_table *tables;   /* ntables, roots clean */
	const struct db_cp_seg *segs;
	size_t nsegs;
};

static void cp_put_table(uint8_t *p, uint32_t id, const struct db_table *t)
{
	put_le32(p, id);
	put_le32(p + 4, t->flags);
	put_le64(p + 8, t->root.addr);
	put_le32(p + 16, t->root.size);
	put_le32(p + 20, t->seq_root.size);
	put_le64(p + 24, t->seq_root.addr);
	put_le64(p + 32, t->entries);
	put_le64(p + 40, 0);
}

static void cp_put_seg(uint8_t *p, const struct db_cp_seg *s)
{
	put_le32(p, s->id);
	put_le32(p + 4, s->flags);
	put_le64(p + 8, s->used);
	put_le64(p + 16, s->live);
	put_le64(p + 24, s->created);
}

/* Table entries: the tables that exist. */
static uint32_t cp_tables(const struct cp_state *c)
{
	uint32_t nt = 0;

	for (uint32_t i = 0; i < c->ntables; i++)
		nt += c->tables[i].exists;
	return nt;
}

static uint32_t cp_len(const struct cp_state *c)
{
	return CP_HDR + cp_tables(c) * CP_TABLE + (uint32_t)c->nsegs * CP_SEG;
}

/* Encode the checkpoint payload; *out malloc'ed, cp_len() bytes. */
static int cp_encode(const struct cp_state *c, uint8_t **out, uint32_t *len)
{
	uint32_t n = cp_len(c);
	uint8_t *p = calloc(1, n), *q;

	if (!p)
		return -ENOMEM;
	put_le64(p, c->txn);
	put_le64(p + 8, c->seq);
	put_le64(p + 16, c->next_blob_id);
	put_le32(p + 24, c->ntables);
	put_le32(p + 28, c->next_seg_id);
	put_le32(p + 32, cp_tables(c));
	put_le32(p + 36, (uint32_t)c->nsegs);
	q = p + CP_HDR;
	for (uint32_t i = 0; i < c->ntables; i++)
		if (c->tables[i].exists) {
			cp_put_table(q, i, &c->tables[i]);
			q += CP_TABLE;
		}
	for (size_t i = 0; i < c->nsegs; i++, q += CP_SEG)
		cp_put_seg(q, &c->segs[i]);
	*out = p;
	*len = n;
	return 0;
}

/* The segment table as a checkpoint lists it (doomed segments left out),
 * with room for extra more entries; *out malloc'ed. */
static int segs_snapshot(struct bdb *db, size_t extra, struct db_cp_seg **out,
			 size_t *n)
{
	struct db_cp_seg *v;

	pthread_rwlock_rdlock(&db->segs_lock);
	v = malloc((db->nsegs + extra + 1) * sizeof(*v));   /* never 0 */
	*n = 0;
	for (size_t i = 0; v && i < db->nsegs; i++) {
		const struct db_seg *s = db->segs[i];

		if (!s->doomed)
			v[(*n)++] = (struct db_cp_seg){
				s->seg->id, s->index ? DB_CP_SEG_INDEX : 0,
				s->used, s->live, s->created_txn };
	}
	pthread_rwlock_unlock(&db->segs_lock);
	*out = v;
	return v ? 0 : -ENOMEM;
}

int db_cp_decode(const uint8_t *p, uint32_t len, struct db_cp *cp)
{
	if (len < CP_HDR)
		return BARREL_E_CORRUPT;
	cp->txn = get_le64(p);
	cp->seq = get_le64(p + 8);
	cp->next_blob_id = get_le64(p + 16);
	cp->ntables = get_le32(p + 24);
	cp->next_seg_id = get_le32(p + 28);
	cp->nt = get_le32(p + 32);
	cp->ns = get_le32(p + 36);
	if ((uint64_t)CP_HDR + (uint64_t)cp->nt * CP_TABLE +
	    (uint64_t)cp->ns * CP_SEG != len)
		return BARREL_E_CORRUPT;
	cp->tables = p + CP_HDR;
	cp->segs = p + CP_HDR + (size_t)cp->nt * CP_TABLE;
	return 0;
}

void db_cp_table(const struct db_cp *cp, uint32_t i, uint32_t *id,
		 struct db_table *t)
{
	const uint8_t *p = cp->tables + (size_t)i * CP_TABLE;

	*id = get_le32(p);
	*t = (struct db_table){
		.exists = true,
		.flags = get_le32(p + 4),
		.root = { NULL, get_le64(p + 8), get_le32(p + 16) },
		.seq_root = { NULL, get_le64(p + 24), get_le32(p + 20) },
		.entries = get_le64(p + 32),
	};
}

void db_cp_seg(const struct db_cp *cp, uint32_t i, struct db_cp_seg *out)
{
	const uint8_t *p = cp->segs + (size_t)i * CP_SEG;

	*out = (struct db_cp_seg){ get_le32(p), get_le32(p + 4), get_le64(p + 8),
				   get_le64(p + 16), get_le64(p + 24) };
}

/* The number of the version published last: after db_sync(gen), one of
 * the state staged at gen or later. */
static uint64_t published_number(struct bdb *db)
{
	uint64_t n;

	pthread_mutex_lock(&db->ver_lock);
	n = db->ver_number;
	pthread_mutex_unlock(&db->ver_lock);
	return n;
}

static int flush_trees(struct bdb *db)
{
	int err = 0;

	for (uint32_t i = 0; i < db->ntables && !err; i++) {
		struct db_table *t = &db->tables[i];

		if (!t->exists)
			continue;
		err = bt_flush(&db->info[i]->store[IDX_KEY], &t->root);
		if (!err)
			err = bt_flush(&db->info[i]->store[IDX_SEQ], &t->seq_root);
	}
	return err;
}

/* The protocol at the top of the file. */
static int checkpoint_steps(struct bdb *db, bool clean)
{
	struct cp_state cs;
	struct db_cp_seg *segs = NULL;
	struct iovec iov;
	uint8_t *p;
	uint32_t len, size;
	uint64_t gen;
	bptr addr;
	int err;

	if (db->failed || db->flush_err)
		return BARREL_E_CLOSED;
	/* Step 1 */
	err = flush_trees(db);
	/* Step 2 */
	cs = (struct cp_state){ db->txn, db->seq, db->next_blob_id, db->ntables,
				db->next_seg_id, db->tables, NULL, 0 };
	if (!err)
		err = segs_snapshot(db, 0, &segs, &cs.nsegs);
	cs.segs = segs;
	if (!err)
		err = cp_encode(&cs, &p, &len);
	free(segs);
	if (err)
		return err;
	iov = (struct iovec){ p, len };
	err = db_append(db, REC_CHECKPOINT, 0, &iov, 1, &addr, &size);
	free(p);
	if (err)
		return err;
	/* Step 3 */
	gen = db_stage_version(db);
	err = db_sync(db, gen);
	if (err)
		return err;
	db->cp_ver = published_number(db);
	/* Step 4 */
	db->cp_addr = addr;
	db->cp_size = size;
	db->cp_replay = addr + size;
	err = db_head_write(db, clean);
	if (!err)
		db->log_since_cp = 0;
	return err;
}

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* A checkpoint made: count it, with the time it held the writer. */
static void cp_count(struct bdb *db, uint64_t us)
{
	atomic_fetch_add(&db->checkpoints, 1);
	atomic_fetch_add(&db->checkpoint_us, us);
}

int db_checkpoint_locked(struct bdb *db, bool clean)
{
	uint64_t t0;
	int err = db_checkpoint_install(db, true);

	if (err)
		return err;
	t0 = mono_us();
	err = checkpoint_steps(db, clean);
	if (!err)
		cp_count(db, mono_us() - t0);
	return err;
}

int bdb_checkpoint(struct bdb *db)
{
	int err;

	db_writer_enter(db);
	err = db_checkpoint_locked(db, false);
	db_writer_leave(db);
	return err;
}

/* ---- checkpoints in the background ---- */

/* Index records written at a time. Each chunk goes to the device before
 * the next is made, after any commit's log write in progress: a commit's
 * fdatasync then queues behind at most one chunk, not the whole index
 * (DESIGN.md "Checkpoint"). */
#define BGC_CHUNK (128u << 10)

/* A store of the frozen trees: a table's context, then the checkpoint. */
struct bgc_store_ctx {
	struct db_store_ctx base;
	struct db_bgc *b;
};

struct db_bgc {
	struct bdb *db;
	pthread_t thread;
	atomic_bool done;
	int err;
	uint64_t stamp;              /* marks the nodes it writes */
	/* The frozen state: an unpublished version holding its nodes (so they
	 * stay unchanged until the writer's trees adopt the records), and
	 * its tables again, whose roots the flush makes clean. */
	struct db_version *frozen;
	struct db_table *tables;
	uint64_t next_blob_id;
	uint32_t next_seg_id;
	uint64_t gen;                /* staging generation at the freeze */
	uint64_t head_gen;           /* HEAD's generation at the freeze */
	bptr replay;                 /* the log at the freeze */
	struct db_cp_seg *segs;      /* the segment table at the freeze, */
	size_t nsegs;                /* the index segment last */
	struct db_seg *iseg;         /* the index segment */
	uint8_t *buf;                /* records not yet written: from file */
	size_t len, cap;             /* offset off; the segment ends at tail */
	uint64_t off, tail, live;
	bptr cp_addr;
	uint32_t cp_size;
	uint64_t ver;                /* db->cp_ver once installed */
	uint64_t held_us;            /* the writer's share of the time */
};

/* Write the buffered records: to the device (writeback) after the log
 * write in progress, or when sync, with an fdatasync. */
static int bgc_out(struct db_bgc *b, bool sync)
{
	struct bio *io = b->db->env->io;
	struct iovec iov = { b->buf, b->len };
	struct bio_write w = { b->iseg->seg->file, &iov, 1, b->off };
	int err;

	if (!b->len)
		return sync ? io->ops->fsync(b->iseg->seg->file) : 0;
	if (!sync)
		db_flush_yield(b->db);
	err = io->ops->write_batch(io, &w, 1, sync);
	if (err)
		return err;
	if (!sync && io->ops->writeback)
		io->ops->writeback(w.file, w.off, b->len);
	atomic_fetch_add((_Atomic uint64_t *)&b->db->bytes_written, b->len);
	b->off += b->len;
	b->len = 0;
	pthread_rwlock_wrlock(&b->db->segs_lock);
	b->iseg->used = b->off;
	pthread_rwlock_unlock(&b->db->segs_lock);
	return 0;
}

/* Frame a record at the index segment's tail, in the buffer. */
static int bgc_append(struct db_bgc *b, uint8_t type, const struct iovec *iov,
		      int n, bptr *addr, uint32_t *size)
{
	uint32_t len = 0, sz;
	int err;

	for (int i = 0; i < n; i++)
		len += iov[i].iov_len;
	sz = rec_size(len);
	if (b->tail + sz > b->iseg->seg->capacity)
		return BARREL_E_FULL;
	if (b->len + sz > b->cap) {
		err = bgc_out(b, false);
		if (err)
			return err;
		if (sz > b->cap) {
			uint8_t *nb = realloc(b->buf, sz);

			if (!nb)
				return -ENOMEM;
			b->buf = nb;
			b->cap = sz;
		}
	}
	seg_encode(b->buf + b->len, b->iseg->seg->salt, type, 0, 0, iov, n);
	*addr = bptr_make(b->iseg->seg->id, (uint32_t)b->tail);
	*size = sz;
	b->len += sz;
	b->tail += sz;
	return 0;
}

static int bgc_store_write(void *ctx, const void *buf, uint32_t len,
			   uint64_t *addr, uint32_t *size)
{
	struct bgc_store_ctx *c = ctx;
	uint8_t prefix[NODE_PREFIX];
	struct iovec iov[2];
	int err;

	node_frame(&c->base, prefix, iov, buf, len);
	err = bgc_append(c->b, REC_NODE, iov, 2, addr, size);
	if (!err)
		c->b->live += *size;
	return err;
}

static const struct bt_store_ops bgc_store_ops = {
	.read = store_read,
	.write = bgc_store_write,
};

static int bgc_flush(struct db_bgc *b, uint32_t table, uint8_t which,
		     struct bt_ref *root)
{
	struct bgc_store_ctx c = { { b->db, table, which }, b };
	struct bt_store st = {
		.ops = &bgc_store_ops,
		.ctx = &c,
		.cache = b->db->env->cache,
		.cache_ns = b->db->uid,
		.stamp = b->stamp,
	};

	return bt_flush(&st, root);
}

/* Steps 2 and 4 of the protocol, in the index segment. */
static int bgc_finish(struct db_bgc *b)
{
	struct cp_state cs = { b->frozen->txn, b->frozen->seq, b->next_blob_id,
			       b->frozen->ntables, b->next_seg_id, b->tables,
			       b->segs, b->nsegs };
	struct db_cp_seg *is = &b->segs[b->nsegs - 1];
	struct iovec iov;
	uint8_t *p;
	uint32_t len;
	int err;

	is->used = b->tail + rec_size(cp_len(&cs));
	is->live = b->live;
	err = cp_encode(&cs, &p, &len);
	if (err)
		return err;
	iov = (struct iovec){ p, len };
	err = bgc_append(b, REC_CHECKPOINT, &iov, 1, &b->cp_addr, &b->cp_size);
	free(p);
	if (!err)
		err = bgc_out(b, true);
	/* The log up to the freeze is what the checkpoint covers. */
	if (!err)
		err = db_sync(b->db, b->gen);
	if (!err)
		b->ver = published_number(b->db);
	/* No other HEAD write happens until this checkpoint is installed. */
	if (!err)
		err = head_write(b->db, b->head_gen + 1, b->cp_addr, b->cp_size,
				 b->replay, false);
	return err;
}

static void *bgc_main(void *arg)
{
	struct db_bgc *b = arg;
	struct bdb *db = b->db;
	int err = 0;

	for (uint32_t i = 0; i < b->frozen->ntables && !err; i++) {
		struct db_table *t = &b->tables[i];

		if (!t->exists)
			continue;
		err = bgc_flush(b, i, IDX_KEY, &t->root);
		if (!err)
			err = bgc_flush(b, i, IDX_SEQ, &t->seq_root);
	}
	if (!err)
		err = bgc_finish(b);
	b->err = err;
	atomic_store_explicit(&b->done, true, memory_order_release);
	pthread_mutex_lock(&db->write_lock);
	db->bgc_ended++;
	pthread_cond_broadcast(&db->bgc_cond);
	pthread_mutex_unlock(&db->write_lock);
	return NULL;
}

static void bgc_free(struct bdb *db, struct db_bgc *b)
{
	if (b->tables && b->frozen)
		for (uint32_t i = 0; i < b->frozen->ntables; i++) {
			bt_ref_release(&b->tables[i].root);
			bt_ref_release(&b->tables[i].seq_root);
		}
	free(b->tables);
	if (b->frozen)
		db_version_put(db, b->frozen);
	free(b->segs);
	free(b->buf);
	free(b);
}

/* Step 1 of the protocol on the writer's side: freeze the pending state. */
static int bgc_freeze(struct bdb *db, struct db_bgc *b)
{
	uint32_t nt = db->ntables;
	uint64_t cap;
	int err;

	b->db = db;
	b->frozen = db_version_new(db);
	b->tables = calloc(nt ? nt : 1, sizeof(*b->tables));
	b->cap = BGC_CHUNK;
	b->buf = malloc(b->cap);
	if (!b->frozen || !b->tables || !b->buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < nt; i++) {
		b->tables[i] = b->frozen->tables[i];
		b->tables[i].root = bt_ref_dup(&b->frozen->tables[i].root);
		b->tables[i].seq_root = bt_ref_dup(&b->frozen->tables[i].seq_root);
	}
	err = segs_snapshot(db, 1, &b->segs, &b->nsegs);
	if (err)
		return err;
	/* Room for every dirty node framed, and the checkpoint record. */
	cap = 2 * db_dirty_bytes_exact(db) + (1u << 20) +
	      (uint64_t)nt * CP_TABLE + (b->nsegs + 1) * CP_SEG;
	b->replay = db->open ? bptr_make(db->open->seg->id, (uint32_t)db->tail) : 0;
	err = db_seg_new(db, cap, &b->iseg);
	if (err)
		return err;
	/* Sealed: no append but this checkpoint's; GC leaves it alone, being
	 * after the last checkpoint's replay start. */
	pthread_rwlock_wrlock(&db->segs_lock);
	b->iseg->index = true;
	b->iseg->sealed = true;
	pthread_rwlock_unlock(&db->segs_lock);
	if (!b->replay)
		b->replay = bptr_make(b->iseg->seg->id, SEG_HEADER_SIZE);
	b->segs[b->nsegs++] = (struct db_cp_seg){ b->iseg->seg->id,
						  DB_CP_SEG_INDEX, 0, 0, db->txn };
	b->next_blob_id = db->next_blob_id;
	b->next_seg_id = db->next_seg_id;
	b->head_gen = db->head_gen;
	pthread_mutex_lock(&db->stage_lock);
	b->gen = db->stage_gen;
	pthread_mutex_unlock(&db->stage_lock);
	b->stamp = ++db->bgc_stamp;
	b->off = b->tail = SEG_HEADER_SIZE;
	return 0;
}

int db_checkpoint_background(struct bdb *db)
{
	uint64_t t0 = mono_us();
	struct db_bgc *b;
	int err;

	if (db->bgc)
		return 0;
	if (db->failed || db->flush_err)
		return BARREL_E_CLOSED;
	/* A clean HEAD is rewritten by the next append: not concurrently. */
	if (db->head_clean)
		return db_checkpoint_locked(db, false);
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	err = bgc_freeze(db, b);
	if (!err && pthread_create(&b->thread, NULL, bgc_main, b))
		err = -EAGAIN;
	if (err) {
		if (b->iseg)
			db_seg_drop(db, b->iseg);
		bgc_free(db, b);
		return db_checkpoint_locked(db, false);
	}
	db->bgc = b;
	db->log_since_cp = 0;
	b->held_us = mono_us() - t0;
	return 0;
}

/* The writer's trees take the records the checkpoint wrote for the nodes
 * they share with the frozen state; the checkpoint becomes the last. */
static void bgc_adopt(struct bdb *db, struct db_bgc *b)
{
	/* Live as of the freeze; adopting reports what changed since. */
	pthread_rwlock_wrlock(&db->segs_lock);
	b->iseg->live = b->live;
	pthread_rwlock_unlock(&db->segs_lock);
	for (uint32_t i = 0; i < b->frozen->ntables && i < db->ntables; i++) {
		const struct db_table *f = &b->frozen->tables[i];
		struct db_table *t = &db->tables[i];

		if (!t->exists || !db->info[i])
			continue;
		/* A node left unadopted (no memory) is written again. */
		bt_adopt(&db->info[i]->store[IDX_KEY], &t->root, &f->root,
			 b->stamp);
		bt_adopt(&db->info[i]->store[IDX_SEQ], &t->seq_root,
			 &f->seq_root, b->stamp);
	}
	bt_memo_clear(db->memo);
	db_dirty_bytes_exact(db);
	db->cp_addr = b->cp_addr;
	db->cp_size = b->cp_size;
	db->cp_replay = b->replay;
	db->cp_ver = b->ver;
	db->head_gen = b->head_gen + 1;
}

int db_checkpoint_install(struct bdb *db, bool wait)
{
	struct db_bgc *b = db->bgc;
	uint64_t t0;
	int err = 0;

	if (!b || (!wait && !atomic_load_explicit(&b->done, memory_order_acquire)))
		return 0;
	t0 = mono_us();
	pthread_join(b->thread, NULL);
	db->bgc = NULL;
	if (!b->err) {
		bgc_adopt(db, b);
		cp_count(db, b->held_us + mono_us() - t0);
	} else {
		/* Nothing names the index segment: drop it, checkpoint here. */
		barrel_log(BLOG_WARN, "%s: background checkpoint failed: %s; checkpointing in the foreground",
			   db->name, barrel_strerror(b->err));
		db_seg_drop(db, b->iseg);
		err = checkpoint_steps(db, false);
		if (!err)
			cp_count(db, b->held_us + mono_us() - t0);
	}
	bgc_free(db, b);
	return err;
}

int db_checkpoint_yield(struct bdb *db)
{
	uint64_t gen = db->head_gen, ended;
	int err;

	/* One frozen before the caller's changes does not cover them. */
	err = db_checkpoint_install(db, true);
	if (err)
		return err;
	pthread_mutex_lock(&db->write_lock);
	ended = db->bgc_ended;
	pthread_mutex_unlock(&db->write_lock);
	err = db_checkpoint_background(db);
	if (err || !db->bgc)    /* failed, or made in the foreground */
		return err;
	db_writer_leave(db);
	pthread_mutex_lock(&db->write_lock);
	while (db->bgc_ended == ended)
		pthread_cond_wait(&db->bgc_cond, &db->write_lock);
	pthread_mutex_unlock(&db->write_lock);
	db_writer_enter(db);    /* installs it, unless a writer already did */
	/* Any checkpoint since covers the caller's changes. */
	return db->head_gen > gen ? 0 : BARREL_E_CLOSED;
}
