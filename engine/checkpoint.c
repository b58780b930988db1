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

static int store_write(void *ctx, const void *buf, uint32_t len,
		       uint64_t *addr, uint32_t *size)
{
	struct db_store_ctx *c = ctx;
	uint8_t prefix[NODE_PREFIX] = { 0 };
	struct iovec iov[2] = { { prefix, NODE_PREFIX }, { (void *)buf, len } };
	int err;

	put_le32(prefix, c->table);
	prefix[4] = c->which;
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

int db_head_write(struct bdb *db, bool clean)
{
	uint8_t slot[HEAD_SIZE] = "BRLHEAD\n";
	struct iovec iov = { slot, sizeof(slot) };
	struct bio_write w;
	int err;

	put_le32(slot + 8, 1);
	put_le32(slot + 12, clean ? 1 : 0);
	put_le64(slot + 16, db->head_gen + 1);
	put_le64(slot + 24, db->cp_addr);
	put_le32(slot + 32, db->cp_size);
	put_le64(slot + 56, XXH3_64bits(slot, 56));
	w = (struct bio_write){ db->headf, &iov, 1,
				((db->head_gen + 1) % 2) * HEAD_SLOT_SIZE };
	err = db->env->io->ops->write_batch(db->env->io, &w, 1, true);
	if (err)
		return err;
	db->head_gen++;
	db->head_clean = clean;
	return 0;
}

int db_head_decode(const uint8_t *slot, struct db_head *h)
{
	if (memcmp(slot, "BRLHEAD\n", 8) ||
	    get_le64(slot + 56) != XXH3_64bits(slot, 56))
		return BARREL_E_CORRUPT;
	if (get_le32(slot + 8) != 1)
		return BARREL_E_VERSION;
	h->clean = get_le32(slot + 12) & 1;
	h->gen = get_le64(slot + 16);
	h->cp_addr = get_le64(slot + 24);
	h->cp_size = get_le32(slot + 32);
	return 0;
}

/* ---- the CHECKPOINT record ---- */

#define CP_HDR 40u
#define CP_TABLE 48u
#define CP_SEG 32u

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

static void cp_put_seg(uint8_t *p, const struct db_seg *s)
{
	put_le32(p, s->seg->id);
	put_le32(p + 4, 0);
	put_le64(p + 8, s->used);
	put_le64(p + 16, s->live);
	put_le64(p + 24, s->created_txn);
}

/* Encode the checkpoint payload; *out malloc'ed. */
static int cp_encode(struct bdb *db, uint8_t **out, uint32_t *len)
{
	uint32_t nt = 0, ns = 0;
	size_t n;
	uint8_t *p, *q;

	for (uint32_t i = 0; i < db->ntables; i++)
		nt += db->tables[i].exists;
	pthread_rwlock_rdlock(&db->segs_lock);
	for (size_t i = 0; i < db->nsegs; i++)
		ns += !db->segs[i]->doomed;
	n = CP_HDR + (size_t)nt * CP_TABLE + (size_t)ns * CP_SEG;
	p = calloc(1, n);
	if (!p) {
		pthread_rwlock_unlock(&db->segs_lock);
		return -ENOMEM;
	}
	put_le64(p, db->txn);
	put_le64(p + 8, db->seq);
	put_le64(p + 16, db->next_blob_id);
	put_le32(p + 24, db->ntables);
	put_le32(p + 28, db->next_seg_id);
	put_le32(p + 32, nt);
	put_le32(p + 36, ns);
	q = p + CP_HDR;
	for (uint32_t i = 0; i < db->ntables; i++)
		if (db->tables[i].exists) {
			cp_put_table(q, i, &db->tables[i]);
			q += CP_TABLE;
		}
	for (size_t i = 0; i < db->nsegs; i++)
		if (!db->segs[i]->doomed) {
			cp_put_seg(q, db->segs[i]);
			q += CP_SEG;
		}
	pthread_rwlock_unlock(&db->segs_lock);
	*out = p;
	*len = n;
	return 0;
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

void db_cp_seg(const struct db_cp *cp, uint32_t i, uint32_t *id,
	       uint64_t *used, uint64_t *live, uint64_t *created)
{
	const uint8_t *p = cp->segs + (size_t)i * CP_SEG;

	*id = get_le32(p);
	*used = get_le64(p + 8);
	*live = get_le64(p + 16);
	*created = get_le64(p + 24);
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
	if (!err)
		err = cp_encode(db, &p, &len);
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
	/* Step 4 */
	db->cp_addr = addr;
	db->cp_size = size;
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

int db_checkpoint_locked(struct bdb *db, bool clean)
{
	uint64_t t0 = mono_us();
	int err = checkpoint_steps(db, clean);

	if (!err) {
		atomic_fetch_add(&db->checkpoints, 1);
		atomic_fetch_add(&db->checkpoint_us, mono_us() - t0);
	}
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
