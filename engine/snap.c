/*
 * Readers: published versions, snapshots, lookups and cursors, and the
 * commit notifications. A reader takes the current version under ver_lock
 * (a pointer copy and a reference count) and never waits for the writer.
 */
#include "config.h"

#include <errno.h>
#include <time.h>

#include "engine/db_i.h"
#include "engine/log.h"

struct bcursor {
	struct bsnap *snap;
	struct bt_iter *it;
	uint32_t table;
	bool changes;
	struct bval cur;
	uint8_t entbuf[BT_MAX_VAL];   /* changes: the key index entry */
};

struct db_watch {
	uint64_t id;
	void (*cb)(void *arg, uint64_t seq);
	void *arg;
	struct db_watch *next;
};

/* ---- versions ---- */

struct db_version *db_version_new(struct bdb *db)
{
	struct db_version *v = calloc(1, sizeof(*v));

	if (!v)
		return NULL;
	v->tables = calloc(db->ntables ? db->ntables : 1, sizeof(*v->tables));
	if (!v->tables) {
		free(v);
		return NULL;
	}
	atomic_init(&v->refs, 1);
	v->ntables = db->ntables;
	v->seq = db->seq;
	v->txn = db->txn;
	for (uint32_t i = 0; i < db->ntables; i++) {
		v->tables[i] = db->tables[i];
		v->tables[i].root = bt_ref_dup(&db->tables[i].root);
		v->tables[i].seq_root = bt_ref_dup(&db->tables[i].seq_root);
	}
	return v;
}

static void version_free(struct db_version *v)
{
	for (uint32_t i = 0; i < v->ntables; i++) {
		bt_ref_release(&v->tables[i].root);
		bt_ref_release(&v->tables[i].seq_root);
	}
	free(v->tables);
	free(v);
}

void db_version_put(struct bdb *db, struct db_version *v)
{
	if (atomic_fetch_sub(&v->refs, 1) != 1)
		return;
	pthread_mutex_lock(&db->ver_lock);
	if (v->prev)
		v->prev->next = v->next;
	else if (db->live_head == v)
		db->live_head = v->next;
	if (v->next)
		v->next->prev = v->prev;
	pthread_mutex_unlock(&db->ver_lock);
	version_free(v);
}

static void notify(struct bdb *db, uint64_t seq)
{
	struct db_watch *w;

	pthread_mutex_lock(&db->watch_lock);
	for (w = db->watches; w; w = w->next)
		w->cb(w->arg, seq);
	pthread_mutex_unlock(&db->watch_lock);
}

void db_publish(struct bdb *db, struct db_version *v, uint64_t seq)
{
	struct db_version *old, **tail;
	bool moved;

	pthread_mutex_lock(&db->ver_lock);
	v->number = ++db->ver_number;
	for (tail = &db->live_head; *tail; tail = &(*tail)->next)
		v->prev = *tail;
	*tail = v;
	old = db->current;
	moved = !old || old->seq != seq;
	db->current = v;
	pthread_cond_broadcast(&db->ver_cond);
	pthread_mutex_unlock(&db->ver_lock);
	if (old)
		db_version_put(db, old);
	if (moved)
		notify(db, seq);
}

uint64_t db_oldest_version(struct bdb *db)
{
	uint64_t n;

	pthread_mutex_lock(&db->ver_lock);
	n = db->live_head ? db->live_head->number : db->ver_number + 1;
	pthread_mutex_unlock(&db->ver_lock);
	return n;
}

void db_versions_release_all(struct bdb *db)
{
	struct db_version *v = db->current;

	db->current = NULL;
	if (v)
		db_version_put(db, v);
	if (db->staged_ver) {
		db_version_put(db, db->staged_ver);
		db->staged_ver = NULL;
	}
}

/* ---- reading records ---- */

/* Copy a record from a write buffer if it lies there (stage_lock held). */
static bool wbuf_holds(const struct db_wbuf *w, bptr addr, uint32_t size);

static bool wbuf_copy(const struct db_wbuf *w, bptr addr, uint32_t size,
		      uint8_t *dst)
{
	if (!wbuf_holds(w, addr, size))
		return false;
	memcpy(dst, w->data + (bptr_off(addr) - w->off), size);
	return true;
}

static bool wbuf_holds(const struct db_wbuf *w, bptr addr, uint32_t size)
{
	uint64_t off = bptr_off(addr);

	return w->len && w->seg == bptr_seg(addr) && off >= w->off &&
	       off + size <= w->off + w->len;
}

/* Records not yet written (the writer reading its own recent commits) are
 * read from the write buffers; returns 1 when addr is not buffered. */
static int read_buffered(struct bdb *db, bptr addr, uint32_t size,
			 uint8_t type, void **payload, uint32_t *len)
{
	struct rec_hdr h;
	struct db_seg *s;
	uint8_t *buf = NULL;
	int err;

	pthread_mutex_lock(&db->stage_lock);
	if (wbuf_holds(&db->staged, addr, size) ||
	    wbuf_holds(&db->inflight, addr, size)) {
		buf = malloc(size);
		if (buf && !wbuf_copy(&db->staged, addr, size, buf))
			wbuf_copy(&db->inflight, addr, size, buf);
	} else {
		pthread_mutex_unlock(&db->stage_lock);
		return 1;
	}
	pthread_mutex_unlock(&db->stage_lock);
	if (!buf)
		return -ENOMEM;
	pthread_rwlock_rdlock(&db->segs_lock);
	s = db_seg_find(db, bptr_seg(addr));
	err = s ? rec_validate(s->seg, bptr_off(addr), buf, size, false, &h)
		: BARREL_E_CORRUPT;
	pthread_rwlock_unlock(&db->segs_lock);
	if (!err && type && h.type != type)
		err = BARREL_E_CORRUPT;
	if (err) {
		free(buf);
		return err;
	}
	memmove(buf, buf + REC_HEADER_SIZE, h.len);
	*payload = buf;
	*len = h.len;
	return 0;
}

int db_read_record(struct bdb *db, bptr addr, uint32_t size, uint8_t type,
		   void **payload, uint32_t *len)
{
	struct rec_hdr h;
	struct db_seg *s;
	int err;

	err = read_buffered(db, addr, size, type, payload, len);
	if (err <= 0)
		return err;
	pthread_rwlock_rdlock(&db->segs_lock);
	s = db_seg_find(db, bptr_seg(addr));
	pthread_rwlock_unlock(&db->segs_lock);
	if (!s) {
		barrel_log(BLOG_ERR, "%s: index points at missing segment %u",
			   db->name, bptr_seg(addr));
		return BARREL_E_CORRUPT;
	}
	/* The segment outlives every version that can point into it (GC). */
	err = seg_read(s->seg, bptr_off(addr), size, type, &h, payload);
	if (!err)
		*len = h.len;
	return err;
}

int db_read_head(struct bdb *db, bptr addr, uint8_t *head, size_t n)
{
	struct db_seg *s;
	ssize_t got = -1;

	pthread_mutex_lock(&db->stage_lock);
	if (wbuf_copy(&db->staged, addr, n, head) ||
	    wbuf_copy(&db->inflight, addr, n, head))
		got = (ssize_t)n;
	pthread_mutex_unlock(&db->stage_lock);
	if (got < 0) {
		pthread_rwlock_rdlock(&db->segs_lock);
		s = db_seg_find(db, bptr_seg(addr));
		pthread_rwlock_unlock(&db->segs_lock);
		got = s ? s->seg->io->ops->read(s->seg->file, head, n,
						bptr_off(addr)) : 0;
		if (got < 0)
			return (int)got;
	}
	if (got != (ssize_t)n || get_le32(head + 12) > REC_MAX_PAYLOAD) {
		barrel_log(BLOG_ERR, "%s: corrupt record: seg=%u off=%u: no "
			   "record at a retained address", db->name,
			   bptr_seg(addr), bptr_off(addr));
		return BARREL_E_CORRUPT;
	}
	return 0;
}

int db_read_record_at(struct bdb *db, bptr addr, uint8_t type,
		      void **payload, uint32_t *len)
{
	uint8_t frame[REC_HEADER_SIZE];
	int err = db_read_head(db, addr, frame, sizeof(frame));

	/* The frame is unchecked here: db_read_record() validates it all. */
	return err ? err : db_read_record(db, addr, rec_size(get_le32(frame + 12)),
					  type, payload, len);
}

int db_put_value(struct bdb *db, void *payload, uint32_t len, uint32_t table,
		 const void *key, size_t klen, bptr addr, struct bval *out)
{
	struct db_put p;
	int err = db_put_decode(payload, len, &p);

	if (!err && (p.table != table || p.klen != klen ||
		     memcmp(p.key, key, klen))) {
		barrel_log(BLOG_ERR, "%s: corrupt record: seg=%u off=%u: not the entry the index names",
			   db->name, bptr_seg(addr), bptr_off(addr));
		err = BARREL_E_CORRUPT;
	}
	if (err) {
		free(payload);
		return err;
	}
	memmove(payload, p.val, p.vlen);
	out->data = payload;
	out->len = p.vlen;
	out->seq = p.seq;
	out->addr = addr;
	return 0;
}

int db_entry_value(struct bdb *db, const struct db_entry *e, uint32_t table,
		   const void *key, size_t klen, struct bval *out)
{
	void *payload;
	uint32_t len;
	int err;

	out->seq = e->seq;
	out->addr = 0;
	if (e->kind == ENT_INLINE) {
		out->data = malloc(e->vlen ? e->vlen : 1);
		if (!out->data)
			return -ENOMEM;
		memcpy(out->data, e->val, e->vlen);
		out->len = e->vlen;
		return 0;
	}
	err = db_read_record(db, e->addr, e->size, REC_PUT, &payload, &len);
	if (err)
		return err;
	err = db_put_value(db, payload, len, table, key, klen, e->addr, out);
	out->seq = e->seq;
	if (!err && out->len != e->vlen) {
		barrel_log(BLOG_ERR, "%s: corrupt record: seg=%u off=%u: not the entry the index names",
			   db->name, bptr_seg(e->addr), bptr_off(e->addr));
		bval_release(out);
		err = BARREL_E_CORRUPT;
	}
	return err;
}

/* ---- snapshots ---- */

int bdb_snapshot(struct bdb *db, struct bsnap **out)
{
	struct bsnap *s = malloc(sizeof(*s));

	if (!s)
		return -ENOMEM;
	pthread_mutex_lock(&db->ver_lock);
	if (!db->current) {
		pthread_mutex_unlock(&db->ver_lock);
		free(s);
		return BARREL_E_CLOSED;
	}
	s->v = db->current;
	atomic_fetch_add(&s->v->refs, 1);
	pthread_mutex_unlock(&db->ver_lock);
	s->db = db;
	*out = s;
	return 0;
}

void bsnap_release(struct bsnap *s)
{
	if (!s)
		return;
	db_version_put(s->db, s->v);
	free(s);
}

uint64_t bsnap_seq(const struct bsnap *s)
{
	return s->v->seq;
}

static const struct db_table *snap_table(const struct bsnap *s, uint32_t id)
{
	if (id >= s->v->ntables || !s->v->tables[id].exists)
		return NULL;
	return &s->v->tables[id];
}

int bsnap_get(struct bsnap *s, uint32_t table, const void *key, size_t klen,
	      struct bval *out)
{
	const struct db_table *t = snap_table(s, table);
	uint8_t v[BT_MAX_VAL];
	struct db_entry e;
	size_t vlen;
	int err;

	if (!t)
		return BARREL_E_NOTFOUND;
	if (klen == 0 || klen > BDB_MAX_KEY)
		return BARREL_E_NOTFOUND;
	err = bt_get(&s->db->info[table]->store[IDX_KEY], &t->root, key, klen,
		     v, &vlen);
	if (!err)
		err = db_entry_decode(v, vlen, &e);
	if (err)
		return err;
	return db_entry_value(s->db, &e, table, key, klen, out);
}

int bsnap_get_at(struct bsnap *s, uint32_t table, const void *key,
		 size_t klen, uint64_t addr, struct bval *out)
{
	void *payload;
	uint32_t len;
	int err;

	if (!snap_table(s, table))
		return BARREL_E_NOTFOUND;
	err = db_read_record_at(s->db, addr, REC_PUT, &payload, &len);
	return err ? err : db_put_value(s->db, payload, len, table, key, klen,
					addr, out);
}

/* ---- cursors ---- */

static int cursor_new(struct bsnap *s, uint32_t table, bool changes,
		      struct bcursor **out)
{
	struct bcursor *c;

	if (!snap_table(s, table))
		return BARREL_E_NOTFOUND;
	if (changes && !(snap_table(s, table)->flags & BDB_TABLE_SEQ))
		return BARREL_E_INVALID;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->snap = s;
	c->table = table;
	c->changes = changes;
	*out = c;
	return 0;
}

int bsnap_scan(struct bsnap *s, uint32_t table, const void *start,
	       size_t slen, const void *end, size_t elen, unsigned flags,
	       struct bcursor **out)
{
	unsigned bf = 0;
	int err = cursor_new(s, table, false, out);

	if (err)
		return err;
	if (flags & BCURSOR_REVERSE)
		bf |= BT_ITER_REVERSE;
	if (flags & BCURSOR_END_INCLUSIVE)
		bf |= BT_ITER_END_INCLUSIVE;
	err = bt_iter_new(&s->db->info[table]->store[IDX_KEY],
			  &s->v->tables[table].root, start, slen, end, elen, bf,
			  &(*out)->it);
	if (err) {
		free(*out);
		*out = NULL;
	}
	return err;
}

int bsnap_changes(struct bsnap *s, uint32_t table, uint64_t since,
		  unsigned flags, struct bcursor **out)
{
	uint8_t start[8];
	int err = cursor_new(s, table, true, out);

	if (err)
		return err;
	put_be64(start, since + 1);
	err = bt_iter_new(&s->db->info[table]->store[IDX_SEQ],
			  &s->v->tables[table].seq_root, since == UINT64_MAX ? NULL : start,
			  8, NULL, 0, (flags & BCURSOR_REVERSE) ? BT_ITER_REVERSE : 0,
			  &(*out)->it);
	if (err) {
		free(*out);
		*out = NULL;
	}
	return err;
}

/* A changes entry names a key; its value and seq come from the key index,
 * which must agree. */
static int change_entry(struct bcursor *c, const void *seqkey, const void *k,
			size_t klen, uint8_t *buf, struct db_entry *e)
{
	struct bsnap *s = c->snap;
	size_t vlen;
	int err;

	if (klen == 0 || klen > BDB_MAX_KEY)
		return BARREL_E_CORRUPT;
	err = bt_get(&s->db->info[c->table]->store[IDX_KEY],
		     &s->v->tables[c->table].root, k, klen, buf, &vlen);
	if (!err)
		err = db_entry_decode(buf, vlen, e);
	if (err == BARREL_E_NOTFOUND || (!err && e->seq != get_be64(seqkey))) {
		barrel_log(BLOG_ERR, "%s: sequence index names %.*s at seq %llu, the key index disagrees",
			   s->db->name, (int)(klen > 64 ? 64 : klen),
			   (const char *)k, (unsigned long long)get_be64(seqkey));
		err = BARREL_E_CORRUPT;
	}
	return err;
}

int bcursor_next(struct bcursor *c, struct bentry *out)
{
	const void *k, *v;
	size_t klen, vlen;
	struct db_entry e;
	int ret;

	bval_release(&c->cur);
	ret = bt_iter_next(c->it, &k, &klen, &v, &vlen);
	if (ret <= 0)
		return ret;
	if (c->changes) {
		if (klen != 8)
			return BARREL_E_CORRUPT;
		ret = change_entry(c, k, v, vlen, c->entbuf, &e);
		if (ret)
			return ret;
		k = v;
		klen = vlen;
	} else if (db_entry_decode(v, vlen, &e)) {
		return BARREL_E_CORRUPT;
	}
	out->key = k;
	out->klen = klen;
	out->seq = e.seq;
	if (e.kind == ENT_INLINE) {
		out->val = e.val;
		out->vlen = e.vlen;
		return 1;
	}
	ret = db_entry_value(c->snap->db, &e, c->table, k, klen, &c->cur);
	if (ret)
		return ret;
	out->val = c->cur.data;
	out->vlen = c->cur.len;
	return 1;
}

void bcursor_free(struct bcursor *c)
{
	if (!c)
		return;
	bval_release(&c->cur);
	if (c->it)
		bt_iter_free(c->it);
	free(c);
}

/* ---- notification ---- */

uint64_t bdb_seq(struct bdb *db)
{
	uint64_t seq;

	pthread_mutex_lock(&db->ver_lock);
	seq = db->current ? db->current->seq : 0;
	pthread_mutex_unlock(&db->ver_lock);
	return seq;
}

static void deadline_after(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

int bdb_wait(struct bdb *db, uint64_t seq, int timeout_ms)
{
	struct timespec ts;
	int ret = 0;

	deadline_after(&ts, timeout_ms > 0 ? timeout_ms : 0);
	pthread_mutex_lock(&db->ver_lock);
	while (!db->closing && (!db->current || db->current->seq <= seq)) {
		if (timeout_ms == 0)
			break;
		if (timeout_ms < 0)
			pthread_cond_wait(&db->ver_cond, &db->ver_lock);
		else if (pthread_cond_timedwait(&db->ver_cond, &db->ver_lock, &ts) == ETIMEDOUT)
			break;
	}
	if (db->closing)
		ret = BARREL_E_CLOSED;
	else if (db->current && db->current->seq > seq)
		ret = 1;
	pthread_mutex_unlock(&db->ver_lock);
	return ret;
}

int bdb_watch(struct bdb *db, void (*cb)(void *arg, uint64_t seq), void *arg,
	      uint64_t *id)
{
	struct db_watch *w = malloc(sizeof(*w));

	if (!w)
		return -ENOMEM;
	w->cb = cb;
	w->arg = arg;
	pthread_mutex_lock(&db->watch_lock);
	w->id = ++db->next_watch;
	w->next = db->watches;
	db->watches = w;
	pthread_mutex_unlock(&db->watch_lock);
	*id = w->id;
	return 0;
}

void bdb_unwatch(struct bdb *db, uint64_t id)
{
	struct db_watch **p, *w;

	pthread_mutex_lock(&db->watch_lock);
	for (p = &db->watches; *p; p = &(*p)->next) {
		if ((*p)->id == id) {
			w = *p;
			*p = w->next;
			free(w);
			break;
		}
	}
	pthread_mutex_unlock(&db->watch_lock);
}

void db_watches_free(struct bdb *db)
{
	while (db->watches)
		bdb_unwatch(db, db->watches->id);
}

struct bdb *db_snap_db(struct bsnap *s)
{
	return s->db;
}
