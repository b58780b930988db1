/*
 * Garbage collection, and check.
 *
 * GC protocol (DESIGN.md "GC"), in rounds of up to 64 victims or 64 MiB of
 * live data:
 *   1. Choose sealed segments wholly before the last checkpoint record by
 *      LFS cost-benefit, (1 - u) * age / (1 + u), u = live / used bytes,
 *      skipping those more than `worth` live (0.8 for the background
 *      thread) and those holding chunks of unlinked blobs.
 *   2. Scan each victim's records in batches; for each batch, with the
 *      writer slot:
 *      a. BLOB records still named by the blobs table are copied to the
 *         open segment; NODE records still part of an index are marked
 *         dirty (bt_touch) so the next checkpoint rewrites them;
 *      b. one transaction re-puts every PUT record still named by its
 *         index (same key, value and sequence) and the moved chunks'
 *         locations; it commits like any other.
 *      Every other record (DEL, COMMIT, CHECKPOINT, superseded data) is
 *      garbage.
 *   3. Mark the round's victims doomed and checkpoint once: the new
 *      checkpoint no longer lists them and no index points into them. It
 *      is written in the background, writers going on meanwhile.
 *   4. Delete the files once every version published before the first
 *      one that checkpoint covers is released (readers of older snapshots
 *      may still read from them).
 * A pass stops when the target ratio is met, nothing is worth collecting,
 * or a round did not shrink the database (moving data rewrites the index
 * nodes it touches; a round must free more than it writes).
 * GC needs room for one round's live data, never a second copy of the
 * database.
 */
#include "config.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "engine/db_i.h"
#include "engine/log.h"

#define GC_BATCH_BYTES (4u << 20)
/* The background thread leaves segments more than 80% live alone. */
#define GC_BACKGROUND_WORTH 0.8

struct gc_move {
	uint8_t type;
	bptr addr;
	uint32_t size;
	uint8_t *payload;  /* copy */
	uint32_t len;
	bool live;         /* a BLOB record that was copied */
	uint8_t key[12];   /* its blobs table key */
	uint8_t val[16];   /* and new location */
};

struct gc_batch {
	struct gc_move *m;
	size_t n, cap, bytes;
};

static void batch_clear(struct gc_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->m[i].payload);
	b->n = 0;
	b->bytes = 0;
}

static int batch_push(struct gc_batch *b, const struct rec_hdr *h,
		      const void *payload, bptr addr)
{
	struct gc_move *m;

	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 256;

		m = realloc(b->m, cap * sizeof(*m));
		if (!m)
			return -ENOMEM;
		b->m = m;
		b->cap = cap;
	}
	m = &b->m[b->n];
	m->payload = malloc(h->len ? h->len : 1);
	if (!m->payload)
		return -ENOMEM;
	memcpy(m->payload, payload, h->len);
	m->type = h->type;
	m->addr = addr;
	m->size = rec_size(h->len);
	m->len = h->len;
	m->live = false;
	b->n++;
	b->bytes += m->size;
	return 0;
}

/* The pending index entry for key, if it names the record at addr. */
static bool entry_at(struct bdb *db, uint32_t table, const void *key,
		     size_t klen, bptr addr, struct db_entry *e, uint8_t *buf)
{
	size_t vlen;

	if (table >= db->ntables || !db->tables[table].exists)
		return false;
	if (bt_get(&db->info[table]->store[IDX_KEY], &db->tables[table].root,
		   key, klen, buf, &vlen))
		return false;
	if (db_entry_decode(buf, vlen, e))
		return false;
	if (table == DB_TABLE_BLOBS)
		return e->kind == ENT_INLINE && e->vlen == 16 &&
		       get_le64(e->val) == addr;
	return e->kind == ENT_RECORD && e->addr == addr;
}

/* Step 2a for one BLOB record: copy it if live; its new location is put
 * by the batch transaction from m->key and m->val. */
static int move_blob(struct bdb *db, struct gc_move *m)
{
	uint8_t buf[BT_MAX_VAL];
	struct iovec iov = { m->payload, m->len };
	struct db_entry e;
	uint32_t size, idx;
	bptr addr;
	int err;

	if (m->len < 16)
		return 0;
	idx = get_le32(m->payload + 8);
	put_be64(m->key, get_le64(m->payload));
	m->key[8] = idx >> 24;
	m->key[9] = idx >> 16;
	m->key[10] = idx >> 8;
	m->key[11] = idx;
	if (!entry_at(db, DB_TABLE_BLOBS, m->key, 12, m->addr, &e, buf))
		return 0;
	memcpy(m->val, e.val, 16);
	err = db_append(db, REC_BLOB, 0, &iov, 1, &addr, &size);
	if (err)
		return err;
	put_le64(m->val, addr);
	put_le32(m->val + 8, size);
	m->live = true;
	return 0;
}

static void move_node(struct bdb *db, const struct gc_move *m)
{
	const void *key;
	unsigned level;
	size_t klen;
	uint32_t table;
	uint8_t which;

	if (m->len < 8)
		return;
	table = get_le32(m->payload);
	which = m->payload[4];
	if (table >= db->ntables || !db->tables[table].exists || which > 1)
		return;
	if (bt_node_ident(m->payload + 8, m->len - 8, &level, &key, &klen))
		return;
	bt_touch(&db->info[table]->store[which],
		 which ? &db->tables[table].seq_root : &db->tables[table].root,
		 level, key, klen, m->addr);
}

/* A table whose superseded records may be retained (BDB_TABLE_RETAIN). */
static bool retains(const struct bdb *db, uint32_t table)
{
	return table < db->ntables && db->tables[table].exists &&
	       (db->tables[table].flags & BDB_TABLE_RETAIN);
}

/* GC can collect only when every table that retains records has its hook
 * (the layer that knows what the records are is open); writer slot held. */
static int retain_hooks_ready(struct bdb *db)
{
	for (uint32_t id = DB_FIRST_USER_TABLE; id < db->ntables; id++)
		if (retains(db, id) && (id >= db->ninfo || !db->info[id] ||
					!db->info[id]->retain))
			return BARREL_E_CLOSED;
	return 0;
}

/* A superseded PUT p at m->addr: ask the table's hook whether it is
 * retained; when it was, the hook re-homed it in t. */
static int superseded(struct bdb *db, struct btxn *t, const struct db_put *p,
		      const struct gc_move *m, uint64_t *moved)
{
	struct db_tabinfo *ti;
	int ret;

	if (!retains(db, p->table))
		return 0;
	ti = p->table < db->ninfo ? db->info[p->table] : NULL;
	if (!ti || !ti->retain)
		return BARREL_E_CLOSED;
	ret = ti->retain(ti->retain_arg, t, p->table, p->key, p->klen, p->val,
			 p->vlen, m->addr);
	if (ret > 0)
		*moved += m->size;
	return ret < 0 ? ret : 0;
}

/* Steps 2a and 2b for one batch, writer slot held. */
static int batch_move(struct bdb *db, struct gc_batch *b, uint64_t *gen,
		      uint64_t *moved)
{
	uint8_t buf[BT_MAX_VAL];
	struct db_entry e;
	struct db_put p;
	struct btxn *t;
	int err = 0;

	for (size_t i = 0; i < b->n && !err; i++) {
		if (b->m[i].type == REC_BLOB)
			err = move_blob(db, &b->m[i]);
		else if (b->m[i].type == REC_NODE)
			move_node(db, &b->m[i]);
	}
	if (!err)
		err = db_txn_begin_locked(db, true, &t);
	if (err)
		return err;
	for (size_t i = 0; i < b->n && !err; i++) {
		struct gc_move *m = &b->m[i];

		if (m->live) {
			err = db_txn_put_seq(t, DB_TABLE_BLOBS, m->key, 12,
					     m->val, 16, 0);
			*moved += m->size;
		} else if (m->type == REC_PUT &&
			   !db_put_decode(m->payload, m->len, &p) &&
			   p.table != DB_TABLE_BLOBS) {
			if (!entry_at(db, p.table, p.key, p.klen, m->addr, &e,
				      buf)) {
				err = superseded(db, t, &p, m, moved);
				continue;
			}
			err = db_txn_put_seq(t, p.table, p.key, p.klen, p.val,
					     p.vlen, p.seq);
			*moved += m->size;
		}
	}
	if (err) {
		db_txn_abort_locked(t);
		return err;
	}
	return db_txn_commit_locked(t, gen);
}

static bool gc_wants(uint8_t type)
{
	return type == REC_PUT || type == REC_BLOB || type == REC_NODE;
}

static int victim_batches(struct bdb *db, struct db_seg *s, uint64_t *moved)
{
	struct gc_batch b = { 0 };
	struct seg_scan sc;
	struct rec_hdr h;
	const void *payload;
	uint64_t off, gen;
	bool end = false;
	int ret = 0;

	seg_scan_init(&sc, s->seg, SEG_HEADER_SIZE, true);
	while (!end && ret >= 0) {
		while (b.bytes < GC_BATCH_BYTES) {
			ret = seg_scan_next(&sc, &h, &payload, &off);
			if (ret <= 0 || off >= s->used) {
				end = true;
				break;
			}
			ret = gc_wants(h.type) ?
			      batch_push(&b, &h, payload,
					 bptr_make(s->seg->id, (uint32_t)off)) : 0;
			if (ret)
				break;
		}
		if (ret < 0 || !b.n)
			break;
		gen = 0;
		db_writer_enter(db);
		ret = batch_move(db, &b, &gen, moved);
		db_writer_leave(db);
		batch_clear(&b);
		if (!ret && gen)
			ret = db_sync(db, gen);
	}
	seg_scan_release(&sc);
	batch_clear(&b);
	free(b.m);
	return ret < 0 ? ret : 0;
}

/*
 * Step 3: doom the victims and checkpoint without them. The checkpoint is
 * made in the background, writers going on meanwhile; nothing they write
 * can name a victim (everything live in them has moved).
 */
static int victims_doom(struct bdb *db, struct db_seg **v, size_t n)
{
	int err;

	db_writer_enter(db);
	pthread_rwlock_wrlock(&db->segs_lock);
	for (size_t i = 0; i < n; i++) {
		v[i]->doomed = true;
		v[i]->doomed_version = UINT64_MAX;   /* not before the checkpoint */
	}
	pthread_rwlock_unlock(&db->segs_lock);
	err = db_checkpoint_yield(db);
	pthread_rwlock_wrlock(&db->segs_lock);
	for (size_t i = 0; i < n; i++) {
		if (err)
			v[i]->doomed = false;
		else	/* versions before the checkpoint's may still point here */
			v[i]->doomed_version = db->cp_ver - 1;
	}
	pthread_rwlock_unlock(&db->segs_lock);
	db_writer_leave(db);
	return err;
}

/* Step 4 */
void db_free_doomed(struct bdb *db)
{
	uint64_t oldest = db_oldest_version(db);
	struct db_seg *gone[64];
	size_t n = 0, j = 0;

	pthread_rwlock_wrlock(&db->segs_lock);
	for (size_t i = 0; i < db->nsegs; i++) {
		struct db_seg *s = db->segs[i];

		if (s->doomed && (db->closing || s->doomed_version < oldest) &&
		    n < 64)
			gone[n++] = s;
		else
			db->segs[j++] = s;
	}
	db->nsegs = j;
	pthread_rwlock_unlock(&db->segs_lock);
	for (size_t i = 0; i < n; i++) {
		uint32_t id = gone[i]->seg->id;

		seg_close(gone[i]->seg);
		free(gone[i]);
		if (!db->closing || !db->failed)
			seg_remove(db->env->io, db->dir, id);
	}
}

static bool any_doomed(struct bdb *db)
{
	bool any = false;

	pthread_rwlock_rdlock(&db->segs_lock);
	for (size_t i = 0; i < db->nsegs && !any; i++)
		any = db->segs[i]->doomed;
	pthread_rwlock_unlock(&db->segs_lock);
	return any;
}

/* Step 4 at the end of an explicit pass: give readers of older snapshots up to a
 * second to finish, so the space is back when bdb_gc returns. The GC thread
 * frees whatever is left later. */
static void free_doomed_wait(struct bdb *db)
{
	for (int i = 0; i < 100; i++) {
		db_free_doomed(db);
		if (!any_doomed(db))
			return;
		usleep(10000);
	}
}

struct victim {
	struct db_seg *seg;
	double score;
};

static int victim_cmp(const void *a, const void *b)
{
	double x = ((const struct victim *)a)->score;
	double y = ((const struct victim *)b)->score;

	return x < y ? 1 : x > y ? -1 : 0;
}

/*
 * Step 1: up to max victims, best first: sealed segments wholly before
 * `below`, at most `worth` live, by cost-benefit. Returns how many.
 */
static size_t victims_pick(struct bdb *db, uint32_t below, double worth,
			   struct db_seg **out, size_t max)
{
	struct victim *v;
	size_t n = 0;

	pthread_rwlock_rdlock(&db->segs_lock);
	v = calloc(db->nsegs ? db->nsegs : 1, sizeof(*v));
	for (size_t i = 0; v && i < db->nsegs; i++) {
		struct db_seg *s = db->segs[i];
		double u, age;

		if (!s->sealed || s->doomed || s->seg->id >= below ||
		    s->live >= s->used)
			continue;
		u = s->used > SEG_HEADER_SIZE ? (double)s->live / s->used : 0;
		if (u > worth)
			continue;
		age = (double)(db->txn - s->created_txn) + 1;
		v[n++] = (struct victim){ s, (1 - u) * age / (1 + u) };
	}
	pthread_rwlock_unlock(&db->segs_lock);
	if (!v)
		return 0;
	if (n)
		qsort(v, n, sizeof(*v), victim_cmp);
	if (n > max)
		n = max;
	for (size_t i = 0; i < n; i++)
		out[i] = v[i].seg;
	free(v);
	return n;
}

static void usage(struct bdb *db, uint64_t *used, uint64_t *live)
{
	*used = *live = 0;
	pthread_rwlock_rdlock(&db->segs_lock);
	for (size_t i = 0; i < db->nsegs; i++) {
		if (db->segs[i]->doomed)
			continue;
		*used += db->segs[i]->used;
		*live += db->segs[i]->live;
	}
	pthread_rwlock_unlock(&db->segs_lock);
}

static bool gc_done(struct bdb *db, double ratio)
{
	uint64_t used, live;

	if (ratio <= 1)
		return false;
	usage(db, &used, &live);
	return used <= ratio * (double)live + 2.0 * db->env->opts.seg_min;
}

static uint32_t victim_bound(struct bdb *db, uint32_t pass_start)
{
	uint32_t below, blobs;

	db_writer_enter(db);
	below = bptr_seg(db->cp_replay);
	if (pass_start < below)
		below = pass_start;
	blobs = db_blobs_min_seg(db);
	db_writer_leave(db);
	return blobs < below ? blobs : below;
}

#define GC_ROUND_VICTIMS 64
#define GC_ROUND_BYTES (64u << 20)

/* One round: steps 1-3 for a few victims, sharing one checkpoint. */
static int gc_round(struct bdb *db, double worth, uint32_t pass_start,
		    struct bgc_stats *st, size_t *done)
{
	struct db_seg *v[GC_ROUND_VICTIMS];
	uint64_t moved = 0, freed = 0, live = 0;
	size_t n, k;
	int err = 0;

	n = victims_pick(db, victim_bound(db, pass_start), worth, v,
			 GC_ROUND_VICTIMS);
	for (k = 0; k < n && live < GC_ROUND_BYTES && !err; k++) {
		live += v[k]->live;
		freed += v[k]->used;
		err = victim_batches(db, v[k], &moved);
	}
	if (!err && k)
		err = victims_doom(db, v, k);
	*done = err ? 0 : k;
	if (!err) {
		st->segments_freed += k;
		st->bytes_moved += moved;
		st->bytes_freed += freed;
	}
	return err;
}

/*
 * No victim: the garbage is in the open segment or after the checkpoint.
 * Seal the open segment when it holds garbage, then checkpoint, so
 * both become collectable.
 */
static int gc_checkpoint(struct bdb *db)
{
	int err = 0;

	db_writer_enter(db);
	if (db->open && db->open->live < db->open->used * 9 / 10)
		err = db_roll(db);
	if (!err)
		err = db_checkpoint_yield(db);
	db_writer_leave(db);
	return err;
}

/*
 * A pass: rounds until the ratio is met, nothing is worth collecting, or a
 * round gains nothing (moving live data and rewriting the index it touches
 * must free more than it writes).
 */
static int gc_pass(struct bdb *db, double ratio, double worth,
		   struct bgc_stats *st)
{
	uint64_t used, live, before;
	unsigned checkpoints = 0;
	uint32_t pass_start;
	size_t done;
	int err = 0;

	/* Segments written by this pass are not its victims: one sweep. */
	db_writer_enter(db);
	pass_start = db->next_seg_id;
	err = retain_hooks_ready(db);
	db_writer_leave(db);
	if (err)
		return err;
	for (unsigned rounds = 0; rounds < 1024 && !gc_done(db, ratio) &&
	     !atomic_load(&db->env->gc_stop); rounds++) {
		usage(db, &before, &live);
		err = gc_round(db, worth, pass_start, st, &done);
		if (err)
			break;
		if (!done) {
			/* Garbage may sit in the open segment or after the
			 * last checkpoint. */
			if (checkpoints++ == 2)
				break;
			err = gc_checkpoint(db);
			if (err)
				break;
			continue;
		}
		db_free_doomed(db);
		usage(db, &used, &live);
		if (used >= before)
			break;
	}
	return err;
}

int bdb_gc(struct bdb *db, double ratio, struct bgc_stats *out)
{
	struct bgc_stats st = { 0 };
	int err;

	pthread_mutex_lock(&db->gc_lock);
	err = gc_pass(db, ratio, ratio <= 1 ? 1.0 : 0.95, &st);
	free_doomed_wait(db);
	pthread_mutex_unlock(&db->gc_lock);
	if (out)
		*out = st;
	return err;
}

/* ---- the background thread ---- */

static bool gc_wanted(struct bdb *db, double trigger)
{
	uint64_t used, live;

	usage(db, &used, &live);
	return used > trigger * (double)live + 4.0 * db->env->opts.seg_min;
}

void *env_gc_main(void *arg)
{
	struct benv *env = arg;
	struct timespec ts;

	pthread_mutex_lock(&env->lock);
	while (!env->gc_stop) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&env->gc_cond, &env->lock, &ts);
		for (size_t i = 0; i < env->ndbs && !env->gc_stop; i++) {
			struct bdb *db = env->dbs[i];

			struct bgc_stats st = { 0 };

			pthread_mutex_lock(&db->gc_lock);
			if (!db->failed && !db->flush_err &&
			    gc_wanted(db, env->opts.gc_trigger))
				gc_pass(db, env->opts.gc_trigger, GC_BACKGROUND_WORTH, &st);
			db_free_doomed(db);
			pthread_mutex_unlock(&db->gc_lock);
		}
	}
	pthread_mutex_unlock(&env->lock);
	return NULL;
}

/* ---- check ---- */

const char *bdb_rec_type_name(uint8_t type)
{
	static const char *const names[] = {
		[REC_PUT] = "put", [REC_DEL] = "del", [REC_BLOB] = "blob",
		[REC_NODE] = "node", [REC_COMMIT] = "commit",
		[REC_CHECKPOINT] = "checkpoint",
	};

	if (type < sizeof(names) / sizeof(names[0]) && names[type])
		return names[type];
	return NULL;
}

struct check {
	struct bdb *db;
	int (*cb)(void *arg, const struct bdb_recinfo *ri);
	void *arg;
	uint64_t corrupt;
	bool stop;
	bptr *seen;        /* corrupt records reported, to report each once */
	size_t nseen, seen_cap;
};

static bool check_seen(struct check *c, uint32_t seg, uint64_t off)
{
	bptr p = bptr_make(seg, (uint32_t)off);

	for (size_t i = 0; i < c->nseen; i++)
		if (c->seen[i] == p)
			return true;
	if (c->nseen == c->seen_cap) {
		size_t cap = c->seen_cap ? c->seen_cap * 2 : 16;
		bptr *n = realloc(c->seen, cap * sizeof(*n));

		if (!n)
			return false;
		c->seen = n;
		c->seen_cap = cap;
	}
	c->seen[c->nseen++] = p;
	return false;
}

static void check_report(struct check *c, uint32_t seg, uint64_t off,
			 const struct rec_hdr *h, const void *payload,
			 const char *error)
{
	struct bdb_recinfo ri = {
		.seg = seg, .off = off, .error = error, .payload = payload,
	};

	if (h) {
		ri.type = h->type;
		ri.len = h->len;
		ri.txn = h->txn;
	}
	if (error && seg && check_seen(c, seg, off))
		return;
	if (error)
		c->corrupt++;
	if (!c->stop && c->cb && c->cb(c->arg, &ri))
		c->stop = true;
}

/* After a corrupt record at off, find the next offset where a record
 * validates; returns used when none does. */
static uint64_t check_resync(const struct db_seg *s, uint64_t off)
{
	size_t win = 1u << 20;
	uint8_t *buf = malloc(win);
	struct rec_hdr h;
	uint64_t at = off + REC_ALIGN;

	if (!buf)
		return s->used;
	while (at < s->used) {
		ssize_t n = s->seg->io->ops->read(s->seg->file, buf, win, at);

		if (n <= (ssize_t)REC_HEADER_SIZE)
			break;
		for (size_t i = 0; i + REC_HEADER_SIZE <= (size_t)n && at + i < s->used;
		     i += REC_ALIGN) {
			if (rec_validate(s->seg, at + i, buf + i, n - i, true, &h) == 0) {
				free(buf);
				return at + i;
			}
		}
		at += (uint64_t)n - REC_HEADER_SIZE - (n - REC_HEADER_SIZE) % REC_ALIGN;
	}
	free(buf);
	return s->used;
}

static int check_segment(struct check *c, const struct db_seg *s)
{
	uint64_t from = SEG_HEADER_SIZE, off = 0;
	struct seg_scan sc;
	struct rec_hdr h;
	const void *payload;
	int ret = 0;

	while (from < s->used && !c->stop) {
		seg_scan_init(&sc, s->seg, from, true);
		while (!c->stop && (ret = seg_scan_next(&sc, &h, &payload, &off)) > 0 &&
		       off < s->used)
			check_report(c, s->seg->id, off, &h, payload, NULL);
		from = sc.off;
		seg_scan_release(&sc);
		if (ret < 0)
			return ret;
		if (from >= s->used || c->stop)
			break;
		/* Log the reason, then report and step over the damage. */
		{
			uint8_t hdr[REC_HEADER_SIZE];
			ssize_t n = s->seg->io->ops->read(s->seg->file, hdr,
							  sizeof(hdr), from);
			struct rec_hdr bad;

			if (n == (ssize_t)sizeof(hdr))
				rec_validate(s->seg, from, hdr, sizeof(hdr), false, &bad);
		}
		check_report(c, s->seg->id, from, NULL, NULL,
			     "record does not validate (checksum or frame)");
		from = check_resync(s, from);
	}
	return 0;
}

/* Every index entry must name a record that reads back as itself. */
static int check_table(struct check *c, struct bsnap *snap, uint32_t id)
{
	struct bdb *db = c->db;
	struct bt_iter *it;
	const void *k, *v;
	size_t klen, vlen;
	struct db_entry e;
	struct bval val;
	int ret;

	if (id >= snap->v->ntables || !snap->v->tables[id].exists)
		return 0;
	ret = bt_iter_new(&db->info[id]->store[IDX_KEY],
			  &snap->v->tables[id].root, NULL, 0, NULL, 0, 0, &it);
	if (ret)	/* a root that does not validate: as below */
		return ret == BARREL_E_CORRUPT ? 0 : ret;
	while (!c->stop && (ret = bt_iter_next(it, &k, &klen, &v, &vlen)) > 0) {
		ret = 0;
		if (db_entry_decode(v, vlen, &e)) {
			check_report(c, 0, 0, NULL, NULL, "malformed index entry");
			continue;
		}
		if (e.kind != ENT_RECORD)
			continue;
		if (db_entry_value(db, &e, id, k, klen, &val) == 0) {
			bval_release(&val);
			continue;
		}
		check_report(c, bptr_seg(e.addr), bptr_off(e.addr), NULL, NULL,
			     "index entry names a corrupt record");
	}
	bt_iter_free(it);
	/* A node that does not validate was reported by the segment walk. */
	return ret < 0 && ret != BARREL_E_CORRUPT ? ret : 0;
}

int bdb_check(struct bdb *db, int (*cb)(void *arg,
		const struct bdb_recinfo *ri), void *arg, uint64_t *corrupt)
{
	struct check c = { .db = db, .cb = cb, .arg = arg };
	struct bsnap *snap = NULL;
	int err = 0;

	pthread_mutex_lock(&db->gc_lock);
	pthread_rwlock_rdlock(&db->segs_lock);
	for (size_t i = 0; i < db->nsegs && !err && !c.stop; i++) {
		const struct db_seg *s = db->segs[i];

		pthread_rwlock_unlock(&db->segs_lock);
		err = check_segment(&c, s);
		pthread_rwlock_rdlock(&db->segs_lock);
	}
	pthread_rwlock_unlock(&db->segs_lock);
	if (!err)
		err = bdb_snapshot(db, &snap);
	for (uint32_t id = DB_FIRST_USER_TABLE; !err && id < db->ninfo; id++)
		err = check_table(&c, snap, id);
	bsnap_release(snap);
	pthread_mutex_unlock(&db->gc_lock);
	free(c.seen);
	if (corrupt)
		*corrupt = c.corrupt;
	return err;
}
