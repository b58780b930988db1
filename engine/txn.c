/*
 * The single writer: transactions, appending to the log, group commit.
 *
 * Commit protocol (DESIGN.md "Commit"):
 *   1. Each put frames its record into the transaction's private buffer at
 *      the address it will have (the writer slot keeps the tail still) and
 *      applies it to the pending B-trees at once (read-your-writes).
 *   2. Commit frames a COMMIT record naming the transaction's first record
 *      and count, moves the bytes to the staging buffer, stages a version
 *      of the pending state, and gives up the writer slot.
 *   3. The first committer to wait becomes the flush leader: it takes all
 *      staged bytes, writes them with a linked fdatasync, then publishes the
 *      last staged version. Committers that staged meanwhile share that
 *      fsync or the next one (group commit).
 *   4. btxn_commit returns once its generation is durable;
 *      btxn_commit_lazy once it is written and visible (no fdatasync:
 *      the next durable commit's, bdb_sync()'s or a segment roll's
 *      fsync covers it, as the bytes are in the same open segment).
 * A transaction never spans segments: when it outgrows the open segment,
 * the segment is sealed and the transaction re-framed into a new one.
 */
#include "config.h"

#include <errno.h>

#include "engine/db_i.h"
#include "engine/log.h"

struct acct {
	bptr addr;
	int64_t bytes;
};

/* A put with a head (btxn_put_ex()): where its record is in the buffer
 * (the same after txn_move(), which re-frames in order). */
struct txn_head {
	size_t off;
	uint32_t len;
	uint64_t key;                /* hcache_key(), at the commit */
};

struct btxn {
	struct bdb *db;
	uint64_t number;
	struct db_table *saved;      /* pending tables at begin (roots dup'ed) */
	uint32_t saved_n;
	uint64_t saved_seq;
	uint8_t *buf;                /* framed records */
	size_t len, cap;
	uint32_t nrec;
	struct acct *acct;           /* space accounting, applied at commit */
	size_t nacct, acap;
	struct txn_head *heads;      /* puts with a head, cached at commit */
	size_t nheads, capheads;
	bool internal;               /* GC: the writer slot was already held */
};

/* The transaction whose accounting db_live_add defers; write_lock. */
static __thread struct btxn *acct_txn;

void db_writer_enter(struct bdb *db)
{
	pthread_mutex_lock(&db->write_lock);
	while (db->writer_busy)
		pthread_cond_wait(&db->write_cond, &db->write_lock);
	db->writer_busy = true;
	pthread_mutex_unlock(&db->write_lock);
	/* A background checkpoint that has ended becomes the last one. */
	db_checkpoint_install(db, false);
}

void db_writer_leave(struct bdb *db)
{
	pthread_mutex_lock(&db->write_lock);
	db->writer_busy = false;
	pthread_cond_signal(&db->write_cond);
	pthread_mutex_unlock(&db->write_lock);
}

/* ---- payload codecs ---- */

int db_put_decode(const void *p, uint32_t len, struct db_put *out)
{
	const uint8_t *b = p;

	if (len < PUT_HDR)
		return BARREL_E_CORRUPT;
	out->table = get_le32(b);
	out->klen = get_le16(b + 4);
	out->flags = get_le16(b + 6);
	out->vlen = get_le32(b + 8);
	out->seq = get_le64(b + 16);
	if ((uint64_t)PUT_HDR + out->klen + out->vlen != len ||
	    out->klen == 0 || out->klen > BDB_MAX_KEY ||
	    (out->flags & ~PUT_RETAIN))
		return BARREL_E_CORRUPT;
	out->key = b + PUT_HDR;
	out->val = b + PUT_HDR + out->klen;
	return 0;
}

int db_del_decode(const void *p, uint32_t len, struct db_put *out)
{
	const uint8_t *b = p;

	if (len < DEL_HDR)
		return BARREL_E_CORRUPT;
	out->table = get_le32(b);
	out->klen = get_le16(b + 4);
	out->flags = 0;
	out->seq = get_le64(b + 8);
	if ((uint64_t)DEL_HDR + out->klen != len || out->klen == 0 ||
	    out->klen > BDB_MAX_KEY)
		return BARREL_E_CORRUPT;
	out->key = b + DEL_HDR;
	out->val = NULL;
	out->vlen = 0;
	return 0;
}

size_t db_entry_encode(uint8_t *buf, const struct db_entry *e)
{
	buf[0] = e->kind;
	put_le64(buf + 1, e->seq);
	if (e->kind == ENT_INLINE) {
		if (e->vlen)
			memcpy(buf + 9, e->val, e->vlen);
		return 9 + e->vlen;
	}
	put_le64(buf + 9, e->addr);
	put_le32(buf + 17, e->size);
	put_le32(buf + 21, e->vlen);
	return 25;
}

int db_entry_decode(const void *buf, size_t len, struct db_entry *e)
{
	const uint8_t *b = buf;

	if (len < 9)
		return BARREL_E_CORRUPT;
	e->kind = b[0];
	e->seq = get_le64(b + 1);
	if (e->kind == ENT_INLINE) {
		e->val = b + 9;
		e->vlen = len - 9;
		e->addr = 0;
		e->size = 0;
		return 0;
	}
	if (e->kind != ENT_RECORD || len != 25)
		return BARREL_E_CORRUPT;
	e->val = NULL;
	e->addr = get_le64(b + 9);
	e->size = get_le32(b + 17);
	e->vlen = get_le32(b + 21);
	return 0;
}

/* ---- space accounting ---- */

static int acct_push(struct btxn *t, bptr addr, int64_t bytes)
{
	if (t->nacct == t->acap) {
		size_t cap = t->acap ? t->acap * 2 : 32;
		struct acct *a = realloc(t->acct, cap * sizeof(*a));

		if (!a)
			return -ENOMEM;
		t->acct = a;
		t->acap = cap;
	}
	t->acct[t->nacct++] = (struct acct){ addr, bytes };
	return 0;
}

void db_live_add(struct bdb *db, bptr addr, int64_t bytes)
{
	struct db_seg *s;

	if (acct_txn && acct_txn->db == db && acct_push(acct_txn, addr, bytes) == 0)
		return;
	pthread_rwlock_wrlock(&db->segs_lock);
	s = db_seg_find(db, bptr_seg(addr));
	if (s) {
		if (bytes < 0 && (uint64_t)-bytes > s->live)
			s->live = 0;
		else
			s->live += bytes;
	}
	pthread_rwlock_unlock(&db->segs_lock);
}

/* ---- applying records to the pending state ---- */

static struct db_table *table_get(struct bdb *db, uint32_t id)
{
	if (id >= db->ntables || !db->tables[id].exists)
		return NULL;
	return &db->tables[id];
}

static int tables_grow(struct bdb *db, uint32_t id)
{
	struct db_table *t;
	uint32_t n = id + 1;

	if (id < db->ntables)
		return 0;
	t = realloc(db->tables, n * sizeof(*t));
	if (!t)
		return -ENOMEM;
	memset(t + db->ntables, 0, (n - db->ntables) * sizeof(*t));
	db->tables = t;
	db->ntables = n;
	return 0;
}

/* A catalog entry appeared: the table it names now exists. */
static int catalog_put(struct bdb *db, const struct db_put *p)
{
	char name[BDB_MAX_NAME + 1];
	uint32_t id;
	unsigned flags;
	int err;

	if (p->vlen != 8 || p->klen > BDB_MAX_NAME)
		return BARREL_E_CORRUPT;
	id = get_le32(p->val);
	flags = get_le32(p->val + 4);
	if (flags & ~(unsigned)(BDB_TABLE_SEQ | BDB_TABLE_RETAIN))
		return BARREL_E_CORRUPT;
	memcpy(name, p->key, p->klen);
	name[p->klen] = '\0';
	err = tables_grow(db, id);
	if (!err)
		err = db_tabinfo_ensure(db, id, name, flags);
	if (err)
		return err;
	if (!db->tables[id].exists)
		db->tables[id] = (struct db_table){ .exists = true, .flags = flags };
	db->tables[id].flags = flags;     /* BDB_TABLE_RETAIN added later */
	db->info[id]->flags = flags;
	return 0;
}

/* A catalog entry went away: drop the table's trees. */
static void catalog_del(struct bdb *db, const uint8_t *old, size_t oldlen)
{
	struct db_entry e;
	struct db_table *t;

	if (db_entry_decode(old, oldlen, &e) || e.kind != ENT_INLINE || e.vlen != 8)
		return;
	t = table_get(db, get_le32(e.val));
	if (!t)
		return;
	bt_ref_release(&t->root);
	bt_ref_release(&t->seq_root);
	*t = (struct db_table){ 0 };
}

/* Chunk locations of the blobs table carry their own live bytes. */
static void blob_account(struct bdb *db, const struct db_put *p,
			 const struct db_entry *e, int sign)
{
	const uint8_t *v = e->val;

	if (p->table != DB_TABLE_BLOBS || e->kind != ENT_INLINE || e->vlen != 16 ||
	    p->klen != 12 || get_le32(p->key + 8) == BLOB_META_CHUNK)
		return;
	db_live_add(db, get_le64(v), sign * (int64_t)get_le32(v + 8));
}

static int seq_index_del(struct bdb *db, struct db_table *t, uint32_t id,
			 uint64_t seq)
{
	uint8_t k[8];
	int err;

	put_be64(k, seq);
	err = bt_del(&db->info[id]->store[IDX_SEQ], &t->seq_root, k, 8, NULL, NULL);
	return err == BARREL_E_NOTFOUND ? 0 : err;
}

static int seq_index_put(struct bdb *db, struct db_table *t,
			 const struct db_put *p)
{
	uint8_t k[8];

	put_be64(k, p->seq);
	return bt_put(&db->info[p->table]->store[IDX_SEQ], &t->seq_root, k, 8,
		      p->key, p->klen, NULL, NULL, NULL);
}

/*
 * The old entry a put or delete replaced: release what it held. *same_seq
 * tells a put that the sequence index already names the key at its seq
 * (a GC move), so it is left alone.
 */
static int entry_replaced(struct bdb *db, struct db_table *t,
			  const struct db_put *p, const uint8_t *old,
			  size_t oldlen, bool *same_seq)
{
	struct db_entry e;

	if (db_entry_decode(old, oldlen, &e))
		return BARREL_E_CORRUPT;
	/* A retained record stays live until btxn_release(). */
	if (e.kind == ENT_RECORD && !(p->flags & PUT_RETAIN))
		db_live_add(db, e.addr, -(int64_t)e.size);
	blob_account(db, p, &e, -1);
	*same_seq = p->val && e.seq == p->seq;
	if ((t->flags & BDB_TABLE_SEQ) && !*same_seq)
		return seq_index_del(db, t, p->table, e.seq);
	return 0;
}

static int apply_put(struct bdb *db, const struct db_put *p, bptr addr,
		     uint32_t size)
{
	uint8_t ent[BT_MAX_VAL], old[BT_MAX_VAL];
	struct db_entry e = { .seq = p->seq, .val = p->val, .vlen = p->vlen };
	struct db_table *t = table_get(db, p->table);
	size_t elen, oldlen = 0;
	bool existed = false, same_seq = false;
	int err;

	if (!t)
		return BARREL_E_CORRUPT;
	e.kind = p->vlen <= DB_INLINE_MAX ? ENT_INLINE : ENT_RECORD;
	e.addr = addr;
	e.size = size;
	elen = db_entry_encode(ent, &e);
	err = bt_put_memo(&db->info[p->table]->store[IDX_KEY], &t->root,
			  p->key, p->klen, ent, elen, old, &oldlen, &existed,
			  db->memo);
	if (err)
		return err;
	if (existed)
		err = entry_replaced(db, t, p, old, oldlen, &same_seq);
	else
		t->entries++;
	if (!err && (t->flags & BDB_TABLE_SEQ) && !same_seq)
		err = seq_index_put(db, t, p);
	if (err)
		return err;
	if (e.kind == ENT_RECORD)
		db_live_add(db, addr, size);
	blob_account(db, p, &e, 1);
	if (p->table == DB_TABLE_BLOBS && p->klen == 12 &&
	    get_be64(p->key) >= db->next_blob_id)
		db->next_blob_id = get_be64(p->key) + 1;
	if (p->table == DB_TABLE_CATALOG)
		return catalog_put(db, p);
	return 0;
}

static int apply_del(struct bdb *db, const struct db_put *p)
{
	uint8_t old[BT_MAX_VAL];
	struct db_table *t = table_get(db, p->table);
	size_t oldlen = 0;
	bool same_seq;
	int err;

	bt_memo_clear(db->memo);
	if (!t)
		return BARREL_E_CORRUPT;
	err = bt_del(&db->info[p->table]->store[IDX_KEY], &t->root, p->key,
		     p->klen, old, &oldlen);
	if (err)
		return err;
	t->entries--;
	err = entry_replaced(db, t, p, old, oldlen, &same_seq);
	if (!err && p->table == DB_TABLE_CATALOG)
		catalog_del(db, old, oldlen);
	return err;
}

int db_apply(struct bdb *db, uint8_t type, const void *payload, uint32_t len,
	     bptr addr, uint32_t size)
{
	struct db_put p;
	int err;

	err = type == REC_PUT ? db_put_decode(payload, len, &p)
			      : db_del_decode(payload, len, &p);
	if (err)
		return err;
	if (p.seq > db->seq)
		db->seq = p.seq;
	return type == REC_PUT ? apply_put(db, &p, addr, size) : apply_del(db, &p);
}

/* ---- the log: segments, staging and group commit ---- */

static int wbuf_reserve(struct db_wbuf *w, size_t more)
{
	size_t cap;
	uint8_t *d;

	if (w->len + more <= w->cap)
		return 0;
	cap = w->cap ? w->cap : 64u << 10;
	while (cap < w->len + more)
		cap *= 2;
	d = realloc(w->data, cap);
	if (!d)
		return -ENOMEM;
	w->data = d;
	w->cap = cap;
	return 0;
}

int db_seg_new(struct bdb *db, uint64_t cap, struct db_seg **out)
{
	uint64_t salt;
	struct segment *seg;
	int err;

	cap = (cap + REC_ALIGN - 1) & ~(uint64_t)(REC_ALIGN - 1);
	if (cap > (UINT32_MAX & ~(uint64_t)(REC_ALIGN - 1)))
		cap = UINT32_MAX & ~(uint64_t)(REC_ALIGN - 1);
	salt = ((uint64_t)random() << 32) ^ (uint64_t)random() ^ db->txn ^
	       ((uint64_t)db->next_seg_id << 48);
	err = seg_create(db->env->io, db->dir, db->next_seg_id, salt, cap, &seg);
	if (err)
		return err;
	db->next_seg_id++;
	atomic_fetch_add((_Atomic uint64_t *)&db->bytes_written, SEG_HEADER_SIZE);
	err = db_seg_add(db, seg, SEG_HEADER_SIZE, 0, db->txn, false, out);
	if (err)
		seg_close(seg);
	return err;
}

/* Make the open segment, sized for the database and at least need bytes. */
static int open_new_segment(struct bdb *db, uint64_t need)
{
	uint64_t cap = db_disk_target(db);
	int err;

	while (cap < need + SEG_HEADER_SIZE)
		cap *= 2;
	err = db_seg_new(db, cap, &db->open);
	if (!err)
		db->tail = SEG_HEADER_SIZE;
	return err;
}

/* The open segment holds nothing yet: remove it rather than seal it. */
static int drop_empty_open(struct bdb *db)
{
	struct db_seg *s = db->open;

	db->open = NULL;
	return db_seg_drop(db, s);
}

int db_roll(struct bdb *db)
{
	struct db_seg *s = db->open;
	uint64_t gen;
	int err;

	if (!s)
		return 0;
	if (db->tail == SEG_HEADER_SIZE && s->seg->id == db->next_seg_id - 1)
		return drop_empty_open(db);
	pthread_mutex_lock(&db->stage_lock);
	gen = db->stage_gen;
	pthread_mutex_unlock(&db->stage_lock);
	err = db_sync(db, gen);
	if (err)
		return err;
	/* Give back the reservation past the last record; losing this
	 * truncate in a crash only wastes space. */
	db->env->io->ops->truncate(s->seg->file, db->tail);
	pthread_rwlock_wrlock(&db->segs_lock);
	s->sealed = true;
	s->used = db->tail;
	pthread_rwlock_unlock(&db->segs_lock);
	db->open = NULL;
	return 0;
}

/* Ensure the open segment has room for need more bytes (writer held). */
static int log_room(struct bdb *db, uint64_t need)
{
	int err;

	if (db->open && db->tail + need <= db->open->seg->capacity)
		return 0;
	err = db_roll(db);
	if (!err)
		err = open_new_segment(db, need);
	return err;
}

/*
 * Append len bytes to the staging buffer at the tail (writer held): data,
 * or (data NULL) one record framed there from the n parts of iov
 * (db_append()), without a copy of its own.
 */
static int stage_append(struct bdb *db, const void *data, size_t len,
			uint8_t type, uint64_t txn, const struct iovec *iov,
			int n)
{
	struct db_wbuf *w = &db->staged;
	int err;

	pthread_mutex_lock(&db->stage_lock);
	if (w->len == 0) {
		w->seg = db->open->seg->id;
		w->off = db->tail;
	}
	err = wbuf_reserve(w, len);
	if (!err) {
		if (data)
			memcpy(w->data + w->len, data, len);
		else
			seg_encode(w->data + w->len, db->open->seg->salt,
				   type, 0, txn, iov, n);
		w->len += len;
		w->gen = ++db->stage_gen;
	}
	pthread_mutex_unlock(&db->stage_lock);
	if (err)
		return err;
	db->tail += len;
	db->log_since_cp += len;
	pthread_rwlock_wrlock(&db->segs_lock);
	db->open->used = db->tail;
	pthread_rwlock_unlock(&db->segs_lock);
	return 0;
}

static int stage_bytes(struct bdb *db, const void *data, size_t len)
{
	return stage_append(db, data, len, 0, 0, NULL, 0);
}

/* The first append after reopening on a clean tail marks HEAD unclean, so a
 * crash from now on never resumes appending past a torn tail. */
static int log_dirty(struct bdb *db)
{
	if (!db->head_clean)
		return 0;
	db->head_clean = false;
	return db_head_write(db, false);
}

int db_append(struct bdb *db, uint8_t type, uint64_t txn,
	      const struct iovec *iov, int n, bptr *addr, uint32_t *size)
{
	uint32_t len = 0, sz;
	int err;

	for (int i = 0; i < n; i++)
		len += iov[i].iov_len;
	sz = rec_size(len);
	err = log_dirty(db);
	if (!err)
		err = log_room(db, sz);
	if (err)
		return err;
	*addr = bptr_make(db->open->seg->id, db->tail);
	*size = sz;
	return stage_append(db, NULL, sz, type, txn, iov, n);
}

uint64_t db_stage_version(struct bdb *db)
{
	struct db_version *v = db_version_new(db), *old;
	uint64_t gen;

	/*
	 * The version is a staged unit of its own: a flush that took the
	 * bytes staged before it but not the version must not satisfy a wait
	 * for it, or a commit would return before it is visible.
	 */
	pthread_mutex_lock(&db->stage_lock);
	old = db->staged_ver;
	db->staged_ver = v;
	db->staged_seq = db->seq;
	gen = ++db->stage_gen;
	pthread_mutex_unlock(&db->stage_lock);
	if (old)
		db_version_put(db, old);
	return gen;
}

/* The flush leader: write everything staged (with an fdatasync when
 * sync), or, with nothing staged, fsync the segment lazy commits wrote
 * to (lazy >= 0); then publish. *seg gets the segment written, or -1. */
static int flush_once(struct bdb *db, uint64_t *gen, bool sync, int64_t lazy,
		      int64_t *seg)
{
	struct db_version *v;
	struct db_wbuf tmp;
	struct bio_write w;
	struct iovec iov;
	struct db_seg *s;
	uint64_t seq;
	int err = 0;

	*seg = -1;
	pthread_mutex_lock(&db->stage_lock);
	tmp = db->inflight;
	db->inflight = db->staged;
	db->staged = tmp;
	db->staged.len = 0;
	v = db->staged_ver;
	db->staged_ver = NULL;
	seq = db->staged_seq;
	*gen = db->stage_gen;
	pthread_mutex_unlock(&db->stage_lock);

	if (db->inflight.len || lazy >= 0) {
		pthread_rwlock_rdlock(&db->segs_lock);
		s = db_seg_find(db, db->inflight.len ? db->inflight.seg :
				(uint32_t)lazy);
		pthread_rwlock_unlock(&db->segs_lock);
		if (db->inflight.len) {
			iov = (struct iovec){ db->inflight.data,
					      db->inflight.len };
			w = (struct bio_write){ s->seg->file, &iov, 1,
						db->inflight.off };
			err = db->env->io->ops->write_batch(db->env->io, &w, 1,
							    sync);
			*seg = db->inflight.seg;
			if (!err)
				atomic_fetch_add((_Atomic uint64_t *)&db->bytes_written,
						 db->inflight.len);
		} else {
			err = db->env->io->ops->fsync(s->seg->file);
		}
	}
	pthread_mutex_lock(&db->stage_lock);
	db->inflight.len = 0;
	pthread_mutex_unlock(&db->stage_lock);
	if (err) {
		if (v)
			db_version_put(db, v);
		return err;
	}
	if (v)
		db_publish(db, v, seq);
	return 0;
}

/* What a flush made true (flush_lock held). */
static void flush_done(struct bdb *db, uint64_t done, bool sync, int64_t seg)
{
	if (done > db->written_gen)
		db->written_gen = done;
	if (sync) {
		if (done > db->durable_gen)
			db->durable_gen = done;
		db->lazy_dirty = false;
	} else if (seg >= 0) {
		db->lazy_dirty = true;
		db->lazy_seg = (uint32_t)seg;
	}
}

int db_flush(struct bdb *db, uint64_t gen, bool durable)
{
	uint64_t *target = durable ? &db->durable_gen : &db->written_gen;
	uint64_t done;
	int64_t lazy, seg;
	int err = 0;

	pthread_mutex_lock(&db->flush_lock);
	while (*target < gen && !db->flush_err) {
		if (db->flushing) {
			pthread_cond_wait(&db->flush_cond, &db->flush_lock);
			continue;
		}
		db->flushing = true;
		lazy = durable && db->lazy_dirty ? (int64_t)db->lazy_seg : -1;
		pthread_mutex_unlock(&db->flush_lock);
		err = flush_once(db, &done, durable, lazy, &seg);
		pthread_mutex_lock(&db->flush_lock);
		db->flushing = false;
		db->flushes++;
		if (err) {
			barrel_log(BLOG_ERR, "%s: log write failed: %s; database is now read-only",
				   db->name, barrel_strerror(err));
			db->flush_err = err;
		} else {
			flush_done(db, done, durable, seg);
		}
		pthread_cond_broadcast(&db->flush_cond);
	}
	if (*target < gen)
		err = err ? err : BARREL_E_CLOSED;
	else
		err = 0;
	pthread_mutex_unlock(&db->flush_lock);
	return err;
}

void db_flush_yield(struct bdb *db)
{
	uint64_t n;

	pthread_mutex_lock(&db->flush_lock);
	n = db->flushes;
	while (db->flushing && db->flushes == n)
		pthread_cond_wait(&db->flush_cond, &db->flush_lock);
	pthread_mutex_unlock(&db->flush_lock);
}

int db_sync(struct bdb *db, uint64_t gen)
{
	return db_flush(db, gen, true);
}

/* ---- transactions ---- */

static int tables_save(struct btxn *t)
{
	struct bdb *db = t->db;

	t->saved = malloc((db->ntables ? db->ntables : 1) * sizeof(*t->saved));
	if (!t->saved)
		return -ENOMEM;
	t->saved_n = db->ntables;
	for (uint32_t i = 0; i < db->ntables; i++) {
		t->saved[i] = db->tables[i];
		t->saved[i].root = bt_ref_dup(&db->tables[i].root);
		t->saved[i].seq_root = bt_ref_dup(&db->tables[i].seq_root);
	}
	t->saved_seq = db->seq;
	return 0;
}

/* Put the pending state back as it was at begin. */
static void tables_restore(struct btxn *t)
{
	struct bdb *db = t->db;

	bt_memo_clear(db->memo);     /* its path may be in the trees dropped */
	for (uint32_t i = 0; i < db->ntables; i++) {
		bt_ref_release(&db->tables[i].root);
		bt_ref_release(&db->tables[i].seq_root);
		if (i < t->saved_n) {
			db->tables[i] = t->saved[i];
			db->tables[i].root = bt_ref_dup(&t->saved[i].root);
			db->tables[i].seq_root = bt_ref_dup(&t->saved[i].seq_root);
		} else {
			db->tables[i] = (struct db_table){ 0 };
		}
	}
	db->seq = t->saved_seq;
	t->nacct = 0;
}

static void txn_free(struct btxn *t)
{
	bt_memo_clear(t->db->memo);
	for (uint32_t i = 0; i < t->saved_n; i++) {
		bt_ref_release(&t->saved[i].root);
		bt_ref_release(&t->saved[i].seq_root);
	}
	free(t->saved);
	free(t->buf);
	free(t->acct);
	free(t->heads);
	free(t);
}

int db_txn_begin_locked(struct bdb *db, bool internal, struct btxn **out)
{
	struct btxn *t;
	int err;

	if (db->failed || db->flush_err)
		return BARREL_E_CLOSED;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->db = db;
	t->internal = internal;
	t->number = db->txn + 1;
	err = tables_save(t);
	if (err) {
		free(t);
		return err;
	}
	*out = t;
	return 0;
}

int bdb_begin(struct bdb *db, struct btxn **out)
{
	int err;

	db_writer_enter(db);
	err = db_txn_begin_locked(db, false, out);
	if (err)
		db_writer_leave(db);
	return err;
}

/* Where the transaction's next record will land. */
static bptr txn_next_addr(struct btxn *t)
{
	return bptr_make(t->db->open->seg->id, t->db->tail + t->len);
}

/* Frame one record into the private buffer (room checked by caller). */
static int txn_frame(struct btxn *t, uint8_t type, const struct iovec *iov,
		     int n, bptr *addr, uint32_t *size)
{
	uint32_t len = 0, sz;

	for (int i = 0; i < n; i++)
		len += iov[i].iov_len;
	sz = rec_size(len);
	if (t->len + sz > t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 8192;
		uint8_t *b;

		while (cap < t->len + sz)
			cap *= 2;
		b = realloc(t->buf, cap);
		if (!b)
			return -ENOMEM;
		t->buf = b;
		t->cap = cap;
	}
	*addr = txn_next_addr(t);
	*size = sz;
	seg_encode(t->buf + t->len, t->db->open->seg->salt, type, 0, t->number,
		   iov, n);
	t->len += sz;
	t->nrec++;
	return 0;
}

/* Apply a framed record of this transaction to the pending state. */
static int txn_apply(struct btxn *t, const uint8_t *rec, bptr addr,
		     uint32_t size)
{
	uint32_t len = get_le32(rec + 12);
	int err;

	acct_txn = t;
	err = db_apply(t->db, rec[8], rec + REC_HEADER_SIZE, len, addr, size);
	acct_txn = NULL;
	return err;
}

/*
 * The transaction outgrew the open segment: seal it, open one big enough
 * for everything so far plus need, and re-frame and re-apply every record.
 */
static int txn_move(struct btxn *t, uint32_t need)
{
	struct bdb *db = t->db;
	uint8_t *old = t->buf;
	size_t oldlen = t->len, off;
	int err;

	tables_restore(t);
	err = db_roll(db);
	if (!err)
		err = open_new_segment(db, oldlen + need + rec_size(24));
	if (err)
		return err;
	t->buf = NULL;
	t->len = t->cap = 0;
	t->nrec = 0;
	for (off = 0; off < oldlen && !err; off += rec_size(get_le32(old + off + 12))) {
		struct iovec iov = { (void *)(old + off + REC_HEADER_SIZE),
				     get_le32(old + off + 12) };
		bptr addr;
		uint32_t size;

		err = txn_frame(t, old[off + 8], &iov, 1, &addr, &size);
		if (!err)
			err = txn_apply(t, t->buf + t->len - size, addr, size);
	}
	free(old);
	return err;
}

/* Frame and apply one PUT or DEL. */
static int txn_record(struct btxn *t, uint8_t type, const struct iovec *iov,
		      int n)
{
	struct bdb *db = t->db;
	uint32_t len = 0, sz;
	bptr addr;
	int err;

	for (int i = 0; i < n; i++)
		len += iov[i].iov_len;
	sz = rec_size(len);
	err = log_dirty(db);
	if (!err && !db->open)
		err = open_new_segment(db, sz + rec_size(24));
	if (!err && db->tail + t->len + sz + rec_size(24) > db->open->seg->capacity)
		err = txn_move(t, sz);
	if (!err)
		err = txn_frame(t, type, iov, n, &addr, &sz);
	if (!err)
		err = txn_apply(t, t->buf + t->len - sz, addr, sz);
	return err;
}

static struct db_table *txn_table(struct btxn *t, uint32_t id)
{
	return table_get(t->db, id);
}

int db_txn_put_flags(struct btxn *t, uint32_t table, const void *key,
		     size_t klen, const struct bput_value *val, uint64_t seq,
		     unsigned flags)
{
	uint8_t hdr[PUT_HDR] = { 0 };
	struct iovec iov[4] = {
		{ hdr, PUT_HDR }, { (void *)key, klen },
		{ (void *)val->head, val->hlen }, { (void *)val->rest, val->rlen },
	};

	put_le32(hdr, table);
	put_le16(hdr + 4, klen);
	put_le16(hdr + 6, flags);
	put_le32(hdr + 8, val->hlen + val->rlen);
	put_le64(hdr + 16, seq);
	return txn_record(t, REC_PUT, iov, 4);
}

int db_txn_put_seq(struct btxn *t, uint32_t table, const void *key,
		   size_t klen, const void *val, size_t vlen, uint64_t seq)
{
	struct bput_value v = { NULL, 0, val, vlen };

	return db_txn_put_flags(t, table, key, klen, &v, seq, 0);
}

static int key_check(struct btxn *t, uint32_t table, size_t klen)
{
	if (!txn_table(t, table))
		return BARREL_E_NOTFOUND;
	if (klen == 0)
		return BARREL_E_INVALID;
	if (klen > BDB_MAX_KEY)
		return BARREL_E_TOOBIG;
	return 0;
}

/* Note the record just framed, a put of val, to cache its head (a head
 * that cannot be noted is only a later miss). */
static void txn_note_head(struct btxn *t, size_t klen,
			  const struct bput_value *val)
{
	if (!val->hlen || val->hlen > BDB_MAX_HEAD)
		return;
	if (t->nheads == t->capheads) {
		size_t cap = t->capheads ? t->capheads * 2 : 64;
		struct txn_head *h = realloc(t->heads, cap * sizeof(*h));

		if (!h)
			return;
		t->heads = h;
		t->capheads = cap;
	}
	t->heads[t->nheads++] = (struct txn_head){
		t->len - rec_size(PUT_HDR + klen + val->hlen + val->rlen),
		(uint32_t)val->hlen, 0 };
}

/* A put of val at sequence seq: the record, and its head noted. */
static int txn_put(struct btxn *t, uint32_t table, const void *key,
		   size_t klen, const struct bput_value *val, uint64_t seq,
		   unsigned flags)
{
	int err = key_check(t, table, klen);

	if (!err && val->hlen + val->rlen > BDB_MAX_VALUE)
		err = BARREL_E_TOOBIG;
	if (!err)
		err = db_txn_put_flags(t, table, key, klen, val, seq, flags);
	if (!err)
		txn_note_head(t, klen, val);
	return err;
}

int btxn_put_ex(struct btxn *t, uint32_t table, const void *key,
		size_t klen, const struct bput_value *val, unsigned flags,
		uint64_t *seq)
{
	struct db_table *tab = txn_table(t, table);
	uint64_t s = 0;
	int err;

	if (tab && ((flags & ~BPUT_RETAIN) ||
		    ((flags & BPUT_RETAIN) &&
		     !(tab->flags & BDB_TABLE_RETAIN))))
		return BARREL_E_INVALID;
	if (tab && (tab->flags & BDB_TABLE_SEQ))
		s = t->db->seq + 1;
	err = txn_put(t, table, key, klen, val, s,
		      flags & BPUT_RETAIN ? PUT_RETAIN : 0);
	if (!err && seq)
		*seq = s;
	return err;
}

int btxn_put(struct btxn *t, uint32_t table, const void *key, size_t klen,
	     const void *val, size_t vlen, uint64_t *seq)
{
	struct bput_value v = { NULL, 0, val, vlen };

	return btxn_put_ex(t, table, key, klen, &v, 0, seq);
}

/* The pending index entry of key. */
static int txn_entry(struct btxn *t, uint32_t table, const void *key,
		     size_t klen, uint8_t *buf, struct db_entry *e)
{
	struct db_table *tab = txn_table(t, table);
	size_t vlen;
	int err;

	if (!tab)
		return BARREL_E_NOTFOUND;
	err = bt_get_memo(&t->db->info[table]->store[IDX_KEY], &tab->root, key,
			  klen, buf, &vlen, t->db->memo);
	return err ? err : db_entry_decode(buf, vlen, e);
}

int btxn_put_retain(struct btxn *t, uint32_t table, const void *key,
		    size_t klen, const void *val, size_t vlen, uint64_t *seq)
{
	struct bput_value v = { NULL, 0, val, vlen };

	return btxn_put_ex(t, table, key, klen, &v, BPUT_RETAIN, seq);
}

int btxn_rewrite(struct btxn *t, uint32_t table, const void *key,
		 size_t klen, const struct bput_value *val)
{
	uint8_t buf[BT_MAX_VAL];
	struct db_entry e;
	int err = key_check(t, table, klen);

	if (!err)
		err = txn_entry(t, table, key, klen, buf, &e);
	return err ? err : txn_put(t, table, key, klen, val, e.seq, 0);
}

int btxn_del(struct btxn *t, uint32_t table, const void *key, size_t klen)
{
	uint8_t hdr[DEL_HDR] = { 0 }, v[BT_MAX_VAL];
	struct iovec iov[2] = { { hdr, DEL_HDR }, { (void *)key, klen } };
	struct db_table *tab;
	size_t vlen;
	int err = key_check(t, table, klen);

	if (err)
		return err;
	tab = txn_table(t, table);
	err = bt_get(&t->db->info[table]->store[IDX_KEY], &tab->root, key, klen,
		     v, &vlen);
	if (err)
		return err;
	put_le32(hdr, table);
	put_le16(hdr + 4, klen);
	put_le64(hdr + 8, (tab->flags & BDB_TABLE_SEQ) ? t->db->seq + 1 : 0);
	return txn_record(t, REC_DEL, iov, 2);
}

/* One of this transaction's own records (still private), or NULL. */
static const uint8_t *txn_own_record(const struct btxn *t, bptr addr)
{
	if (!t->len || bptr_seg(addr) != t->db->open->seg->id ||
	    bptr_off(addr) < t->db->tail ||
	    bptr_off(addr) - t->db->tail >= t->len)
		return NULL;
	return t->buf + (bptr_off(addr) - t->db->tail);
}

/* The value of a put this transaction framed at rec, checked to be of
 * table and key. */
static int txn_own_value(struct btxn *t, const uint8_t *rec, uint32_t table,
			 const void *key, size_t klen, bptr addr,
			 struct bval *out)
{
	uint32_t len = get_le32(rec + 12);
	void *copy;

	if (rec[8] != REC_PUT)
		return BARREL_E_CORRUPT;
	copy = malloc(len ? len : 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, rec + REC_HEADER_SIZE, len);
	return db_put_value(t->db, copy, len, table, key, klen, addr, out);
}

/* The value entry e of key names, as the transaction sees it. */
static int txn_value(struct btxn *t, const struct db_entry *e,
		     uint32_t table, const void *key, size_t klen,
		     struct bval *out)
{
	const uint8_t *rec;
	int err;

	if (e->kind == ENT_RECORD && (rec = txn_own_record(t, e->addr))) {
		err = txn_own_value(t, rec, table, key, klen, e->addr, out);
		if (!err)
			out->addr = 0;    /* not final: the commit may move it */
		return err;
	}
	return db_entry_value(t->db, e, table, key, klen, out);
}

int btxn_get(struct btxn *t, uint32_t table, const void *key, size_t klen,
	     struct bval *out)
{
	uint8_t v[BT_MAX_VAL];
	struct db_entry e;
	int err = txn_entry(t, table, key, klen, v, &e);

	return err ? err : txn_value(t, &e, table, key, klen, out);
}

/* ---- value heads (btxn_put_ex()) ---- */

/* Cache the heads of the transaction just staged at first, now that their
 * records' places are final. */
static void txn_cache_heads(struct btxn *t, uint32_t first)
{
	struct bdb *db = t->db;
	uint32_t seg = db->open->seg->id;

	if (!t->nheads)
		return;
	hcache_reserve(db->heads, t->nheads);
	for (size_t i = 0; i < t->nheads; i++) {
		const uint8_t *put = t->buf + t->heads[i].off + REC_HEADER_SIZE;

		t->heads[i].key = hcache_key(get_le32(put), put + PUT_HDR,
					     get_le16(put + 4));
		hcache_prefetch(db->heads, t->heads[i].key);
	}
	for (size_t i = 0; i < t->nheads; i++) {
		const uint8_t *put = t->buf + t->heads[i].off + REC_HEADER_SIZE;

		hcache_put(db->heads, t->heads[i].key,
			   bptr_make(seg, first + t->heads[i].off),
			   put + PUT_HDR + get_le16(put + 4), t->heads[i].len);
	}
}

void btxn_prefetch_head(struct btxn *t, uint32_t table, const void *key,
			size_t klen)
{
	hcache_prefetch(t->db->heads, hcache_key(table, key, klen));
}

int btxn_get_head(struct btxn *t, uint32_t table, const void *key,
		  size_t klen, struct bval *out, bool *whole)
{
	uint64_t hkey = hcache_key(table, key, klen);
	uint8_t v[BT_MAX_VAL];
	struct db_entry e;
	int err;

	hcache_prefetch_head(t->db->heads, hkey);   /* while the index is read */
	err = txn_entry(t, table, key, klen, v, &e);
	*whole = true;
	if (err)
		return err;
	if (e.kind == ENT_RECORD && !txn_own_record(t, e.addr)) {
		err = hcache_get(t->db->heads, hkey, e.addr, &out->data,
				 &out->len);
		atomic_fetch_add_explicit(err ? &t->db->head_misses
					      : &t->db->head_hits, 1,
					  memory_order_relaxed);
		if (!err) {
			out->seq = e.seq;
			out->addr = e.addr;
			*whole = false;
			return 0;
		}
	}
	return txn_value(t, &e, table, key, klen, out);
}

int btxn_get_at(struct btxn *t, uint32_t table, const void *key,
		size_t klen, uint64_t addr, struct bval *out)
{
	const uint8_t *rec = txn_own_record(t, addr);
	void *payload;
	uint32_t len;
	int err;

	if (rec)
		return txn_own_value(t, rec, table, key, klen, addr, out);
	err = db_read_record_at(t->db, addr, REC_PUT, &payload, &len);
	return err ? err : db_put_value(t->db, payload, len, table, key, klen,
					addr, out);
}

int btxn_release(struct btxn *t, uint32_t table, uint64_t addr)
{
	uint8_t buf[REC_HEADER_SIZE + 4];   /* the frame and a put's table */
	const uint8_t *head = txn_own_record(t, addr);
	int err = head ? 0 : db_read_head(t->db, addr, buf, sizeof(buf));

	/* Only the size is needed (the record was read when it was named);
	 * the type and table catch an address that is not the table's. */
	if (!head)
		head = buf;
	if (!err && (head[8] != REC_PUT ||
		     get_le32(head + REC_HEADER_SIZE) != table))
		err = BARREL_E_CORRUPT;
	if (err)
		return err;
	acct_txn = t;
	db_live_add(t->db, addr, -(int64_t)rec_size(get_le32(head + 12)));
	acct_txn = NULL;
	return 0;
}

int bdb_retain_hook(struct bdb *db, uint32_t table, bdb_retain_fn fn,
		    void *arg)
{
	int err = 0;

	db_writer_enter(db);
	if (table >= db->ninfo || !db->info[table]) {
		err = BARREL_E_NOTFOUND;
	} else {
		db->info[table]->retain = fn;
		db->info[table]->retain_arg = fn ? arg : NULL;
	}
	db_writer_leave(db);
	return err;
}

int btxn_table(struct btxn *t, const char *name, unsigned flags, uint32_t *id)
{
	struct bdb *db = t->db;
	uint8_t val[8];
	size_t n = strlen(name);

	if (!bdb_name_valid(name))
		return BARREL_E_INVALID;
	flags &= BDB_TABLE_SEQ | BDB_TABLE_RETAIN;
	for (uint32_t i = DB_FIRST_USER_TABLE; i < db->ntables; i++) {
		if (db->tables[i].exists && db->info[i] &&
		    strcmp(db->info[i]->name, name) == 0) {
			unsigned have = db->tables[i].flags;

			*id = i;
			if (!(flags & BDB_TABLE_RETAIN) ||
			    (have & BDB_TABLE_RETAIN))
				return 0;
			put_le32(val, i);
			put_le32(val + 4, have | BDB_TABLE_RETAIN);
			return db_txn_put_seq(t, DB_TABLE_CATALOG, name, n,
					      val, 8, 0);
		}
	}
	*id = db->ntables > DB_FIRST_USER_TABLE ? db->ntables : DB_FIRST_USER_TABLE;
	put_le32(val, *id);
	put_le32(val + 4, flags);
	return db_txn_put_seq(t, DB_TABLE_CATALOG, name, n, val, 8, 0);
}

int btxn_table_drop(struct btxn *t, const char *name)
{
	uint32_t id;

	for (id = DB_FIRST_USER_TABLE; id < t->db->ntables; id++)
		if (t->db->tables[id].exists && t->db->info[id] &&
		    strcmp(t->db->info[id]->name, name) == 0)
			return btxn_del(t, DB_TABLE_CATALOG, name, strlen(name));
	return BARREL_E_NOTFOUND;
}

static void acct_apply(struct btxn *t)
{
	for (size_t i = 0; i < t->nacct; i++)
		db_live_add(t->db, t->acct[i].addr, t->acct[i].bytes);
	t->nacct = 0;
}

/* Steps 2 of the commit protocol; returns the generation to wait for. */
static int txn_stage(struct btxn *t, uint64_t *gen)
{
	struct bdb *db = t->db;
	uint8_t c[24];
	struct iovec iov = { c, sizeof(c) };
	bptr addr;
	uint32_t size, first = db->tail;
	int err;

	put_le64(c, t->number);
	put_le32(c + 8, t->nrec);
	put_le32(c + 12, first);
	put_le64(c + 16, db->seq);
	err = txn_frame(t, REC_COMMIT, &iov, 1, &addr, &size);
	if (!err)
		err = stage_bytes(db, t->buf, t->len);
	if (err)
		return err;
	txn_cache_heads(t, first);
	db->txn = t->number;
	acct_apply(t);
	*gen = db_stage_version(db);
	return 0;
}

static bool checkpoint_due(struct bdb *db)
{
	uint64_t limit = db->env->opts.cache_budget / 4;

	if (db->bgc)           /* one at a time */
		return false;
	return db->log_since_cp >= db->env->opts.checkpoint_bytes ||
	       (db_dirty_bytes(db) >= limit && db_dirty_bytes_exact(db) >= limit);
}

int db_txn_commit_locked(struct btxn *t, uint64_t *gen)
{
	int err = 0;

	*gen = 0;
	if (t->nrec)
		err = txn_stage(t, gen);
	else
		acct_apply(t);        /* releases alone write nothing */
	if (err)
		tables_restore(t);
	txn_free(t);
	return err;
}

static int txn_commit(struct btxn *t, bool durable)
{
	struct bdb *db = t->db;
	uint64_t gen;
	bool due;
	int err;

	err = db_txn_commit_locked(t, &gen);
	due = !err && checkpoint_due(db);
	db_writer_leave(db);
	if (!err && gen)
		err = db_flush(db, gen, durable);
	if (!err && due) {
		db_writer_enter(db);
		if (checkpoint_due(db))
			db_checkpoint_background(db);
		db_writer_leave(db);
	}
	return err;
}

int btxn_commit(struct btxn *t)
{
	return txn_commit(t, true);
}

int btxn_commit_lazy(struct btxn *t)
{
	return txn_commit(t, false);
}

int bdb_sync(struct bdb *db)
{
	uint64_t gen;

	pthread_mutex_lock(&db->stage_lock);
	gen = db->stage_gen;
	pthread_mutex_unlock(&db->stage_lock);
	return db_flush(db, gen, true);
}

void db_txn_abort_locked(struct btxn *t)
{
	tables_restore(t);
	txn_free(t);
}

void btxn_abort(struct btxn *t)
{
	struct bdb *db = t->db;

	db_txn_abort_locked(t);
	db_writer_leave(db);
}

void bval_release(struct bval *v)
{
	free(v->data);
	v->data = NULL;
	v->len = 0;
}

struct bdb *db_txn_db(struct btxn *t)
{
	return t->db;
}
