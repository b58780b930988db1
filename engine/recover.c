/*
 * Opening a database and recovering it after a crash.
 *
 * Recovery protocol (DESIGN.md "Open and recovery"):
 *   1. Read both HEAD slots; the valid one with the higher generation names
 *      the last durable checkpoint.
 *   2. List the segment files.
 *   3. Load the checkpoint: counters, table roots, the segment table. Open
 *      every segment it lists; delete older unlisted files (GC victims whose
 *      deletion a crash interrupted).
 *   4. Rebuild table names from the catalog table.
 *   5. Replay the log after the checkpoint record, segment by segment:
 *      buffer each transaction's records and apply them when its COMMIT
 *      validates and names exactly them. The first record that does not
 *      validate ends a segment: a torn or unwritten tail is cut off there.
 *   6. Resume appending after the checkpoint only if HEAD says the database
 *      was closed cleanly and nothing followed; otherwise the next write
 *      opens a new segment, so nothing is ever written past a torn tail.
 *   7. Publish the recovered state as the first version.
 */
#include "config.h"

#include <errno.h>

#include "engine/db_i.h"
#include "engine/log.h"

struct id_list {
	uint32_t *ids;
	size_t n, cap;
};

static int collect_seg(void *arg, const char *name)
{
	struct id_list *l = arg;
	uint32_t id;

	if (!seg_parse_name(name, &id))
		return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		uint32_t *n = realloc(l->ids, cap * sizeof(*n));

		if (!n)
			return 1;
		l->ids = n;
		l->cap = cap;
	}
	l->ids[l->n++] = id;
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Step 1 */
static int head_read(struct bdb *db, struct db_head *h, bool *found)
{
	uint8_t buf[2 * HEAD_SLOT_SIZE];
	char path[4096];
	struct db_head slot;
	ssize_t n;
	int err;

	snprintf(path, sizeof(path), "%s/HEAD", db->dir);
	err = db->env->io->ops->open(db->env->io, path, BIO_RDWR | BIO_CREATE,
				     &db->headf);
	if (err)
		return err;
	n = db->env->io->ops->read(db->headf, buf, sizeof(buf), 0);
	if (n < 0)
		return n;
	*found = false;
	for (int i = 0; i < 2; i++) {
		if ((size_t)n < i * HEAD_SLOT_SIZE + HEAD_SIZE)
			continue;
		err = db_head_decode(buf + i * HEAD_SLOT_SIZE, &slot);
		if (err == BARREL_E_VERSION)
			return err;
		if (!err && (!*found || slot.gen > h->gen)) {
			*h = slot;
			*found = true;
		}
	}
	return 0;
}

static int seg_add(struct bdb *db, const struct db_cp_seg *e)
{
	struct segment *seg = NULL;
	struct db_seg *s;
	int err;

	err = seg_open(db->env->io, db->dir, e->id, &seg);
	if (!err)
		err = db_seg_add(db, seg, e->used, e->live, e->created, true, &s);
	if (err && seg)
		seg_close(seg);
	if (!err)
		s->index = e->flags & DB_CP_SEG_INDEX;
	return err;
}

static int tables_init(struct bdb *db, uint32_t n)
{
	db->tables = calloc(n, sizeof(*db->tables));
	if (!db->tables)
		return -ENOMEM;
	db->ntables = n;
	db->tables[DB_TABLE_CATALOG].exists = true;
	db->tables[DB_TABLE_BLOBS].exists = true;
	if (db_tabinfo_ensure(db, DB_TABLE_CATALOG, "_catalog", 0) ||
	    db_tabinfo_ensure(db, DB_TABLE_BLOBS, "_blobs", 0))
		return -ENOMEM;
	return 0;
}

static bool listed(const struct db_cp *cp, uint32_t id)
{
	for (uint32_t i = 0; i < cp->ns; i++) {
		struct db_cp_seg e;

		db_cp_seg(cp, i, &e);
		if (e.id == id)
			return true;
	}
	return false;
}

static int cp_apply(struct bdb *db, const struct db_cp *cp)
{
	int err = tables_init(db, cp->ntables > 2 ? cp->ntables : 2);

	db->txn = cp->txn;
	db->seq = cp->seq;
	db->next_blob_id = cp->next_blob_id;
	db->next_seg_id = cp->next_seg_id;
	for (uint32_t i = 0; i < cp->nt && !err; i++) {
		struct db_table t;
		uint32_t id;

		db_cp_table(cp, i, &id, &t);
		if (id >= db->ntables)
			return BARREL_E_CORRUPT;
		db->tables[id] = t;
	}
	for (uint32_t i = 0; i < cp->ns && !err; i++) {
		struct db_cp_seg e;

		db_cp_seg(cp, i, &e);
		if (e.flags & ~DB_CP_SEG_INDEX)
			return BARREL_E_CORRUPT;
		err = seg_add(db, &e);
		if (err == -ENOENT) {
			barrel_log(BLOG_ERR, "%s: segment %u named by the checkpoint is missing",
				   db->name, e.id);
			err = BARREL_E_CORRUPT;
		}
	}
	return err;
}

/* Step 3 */
static int load_checkpoint(struct bdb *db, const struct db_head *h,
			   const struct id_list *ids)
{
	uint32_t cpseg = bptr_seg(h->cp_addr);
	struct segment *seg;
	struct rec_hdr rh;
	struct db_cp cp;
	void *p;
	int err;

	err = seg_open(db->env->io, db->dir, cpseg, &seg);
	if (err)
		return err == -ENOENT ? BARREL_E_CORRUPT : err;
	err = seg_read(seg, bptr_off(h->cp_addr), h->cp_size, REC_CHECKPOINT,
		       &rh, &p);
	seg_close(seg);
	if (err)
		return err;
	err = db_cp_decode(p, rh.len, &cp);
	if (!err)
		err = cp_apply(db, &cp);
	if (!err) {
		for (size_t i = 0; i < ids->n; i++) {
			if (ids->ids[i] < cpseg && !listed(&cp, ids->ids[i]))
				seg_remove(db->env->io, db->dir, ids->ids[i]);
		}
	}
	free(p);
	return err;
}

/* Step 4 */
static int names_rebuild(struct bdb *db)
{
	struct bt_iter *it;
	const void *k, *v;
	size_t klen, vlen;
	struct db_entry e;
	char name[BDB_MAX_NAME + 1];
	int ret;

	ret = bt_iter_new(&db->info[0]->store[IDX_KEY], &db->tables[0].root,
			  NULL, 0, NULL, 0, 0, &it);
	if (ret)
		return ret;
	while ((ret = bt_iter_next(it, &k, &klen, &v, &vlen)) > 0) {
		if (klen > BDB_MAX_NAME || db_entry_decode(v, vlen, &e) ||
		    e.kind != ENT_INLINE || e.vlen != 8) {
			ret = BARREL_E_CORRUPT;
			break;
		}
		memcpy(name, k, klen);
		name[klen] = '\0';
		ret = db_tabinfo_ensure(db, get_le32(e.val), name,
					get_le32((const uint8_t *)e.val + 4));
		if (ret)
			break;
	}
	bt_iter_free(it);
	return ret;
}

/* ---- Step 5: replay ---- */

struct pend {
	uint8_t type;
	size_t off;        /* of the payload in replay.buf */
	uint32_t len;
	bptr addr;
	uint32_t size;
};

struct replay {
	struct bdb *db;
	uint8_t *buf;
	size_t len, cap;
	struct pend *p;
	size_t n, pcap;
	uint64_t txn;
	uint64_t applied;     /* records applied in all */
};

static int replay_push(struct replay *r, const struct rec_hdr *h,
		       const void *payload, bptr addr)
{
	if (r->len + h->len > r->cap) {
		size_t cap = r->cap ? r->cap : 65536;
		uint8_t *b;

		while (cap < r->len + h->len)
			cap *= 2;
		b = realloc(r->buf, cap);
		if (!b)
			return -ENOMEM;
		r->buf = b;
		r->cap = cap;
	}
	if (r->n == r->pcap) {
		size_t cap = r->pcap ? r->pcap * 2 : 64;
		struct pend *p = realloc(r->p, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		r->p = p;
		r->pcap = cap;
	}
	memcpy(r->buf + r->len, payload, h->len);
	r->p[r->n++] = (struct pend){ h->type, r->len, h->len, addr,
				      rec_size(h->len) };
	r->len += h->len;
	r->txn = h->txn;
	return 0;
}

static void replay_drop(struct replay *r, const char *why)
{
	if (r->n)
		barrel_log(BLOG_WARN, "%s: transaction %llu dropped: %s",
			   r->db->name, (unsigned long long)r->txn, why);
	r->n = 0;
	r->len = 0;
}

static int replay_commit(struct replay *r, const struct rec_hdr *h,
			 const uint8_t *c, uint32_t seg)
{
	struct bdb *db = r->db;
	int err = 0;

	if (h->len != 24 || get_le64(c) != h->txn || get_le32(c + 8) != r->n ||
	    (r->n && (r->txn != h->txn ||
		      bptr_off(r->p[0].addr) != get_le32(c + 12) ||
		      bptr_seg(r->p[0].addr) != seg))) {
		replay_drop(r, "commit record does not match");
		return 0;
	}
	for (size_t i = 0; i < r->n && !err; i++)
		err = db_apply(db, r->p[i].type, r->buf + r->p[i].off,
			       r->p[i].len, r->p[i].addr, r->p[i].size);
	if (err) {
		barrel_log(BLOG_ERR, "%s: replaying transaction %llu: %s",
			   db->name, (unsigned long long)h->txn,
			   barrel_strerror(err));
		return err;
	}
	db->txn = h->txn;
	if (get_le64(c + 16) > db->seq)
		db->seq = get_le64(c + 16);
	r->applied += r->n + 1;
	r->n = 0;
	r->len = 0;
	return 0;
}

static int replay_record(struct replay *r, const struct rec_hdr *h,
			 const void *payload, bptr addr)
{
	if (h->txn == 0) {	/* NODE, BLOB, CHECKPOINT: nothing to replay */
		replay_drop(r, "interrupted");
		return 0;
	}
	if (h->type == REC_COMMIT)
		return replay_commit(r, h, payload, bptr_seg(addr));
	if (h->type != REC_PUT && h->type != REC_DEL)
		return 0;
	if (r->n && r->txn != h->txn)
		replay_drop(r, "no commit record");
	return replay_push(r, h, payload, addr);
}

/* Replay one segment from offset from; *end gets the end of valid data. */
static int replay_segment(struct replay *r, struct db_seg *s, uint64_t from)
{
	struct seg_scan sc;
	struct rec_hdr h;
	const void *payload;
	uint64_t off;
	int ret;

	seg_scan_init(&sc, s->seg, from, true);
	while ((ret = seg_scan_next(&sc, &h, &payload, &off)) > 0) {
		ret = replay_record(r, &h, payload,
				    bptr_make(s->seg->id, (uint32_t)off));
		if (ret)
			break;
	}
	if (ret == 0 && sc.off > s->used)
		s->used = sc.off;
	replay_drop(r, "torn at the end of its segment");
	seg_scan_release(&sc);
	return ret;
}

static int replay_all(struct bdb *db, const struct id_list *ids,
		      uint32_t first, uint64_t from, uint64_t *applied)
{
	struct replay r = { .db = db };
	int err = 0;

	for (size_t i = 0; i < ids->n && !err; i++) {
		uint32_t id = ids->ids[i];
		struct db_seg *s;

		if (id < first)
			continue;
		pthread_rwlock_rdlock(&db->segs_lock);
		s = db_seg_find(db, id);
		pthread_rwlock_unlock(&db->segs_lock);
		if (!s) {
			struct db_cp_seg e = { id, 0, SEG_HEADER_SIZE, 0, db->txn };

			err = seg_add(db, &e);
			if (err == BARREL_E_CORRUPT && i + 1 == ids->n) {
				/* A crash while creating it: nothing was in it. */
				seg_remove(db->env->io, db->dir, id);
				err = 0;
				break;
			}
			if (err)
				break;
			pthread_rwlock_rdlock(&db->segs_lock);
			s = db_seg_find(db, id);
			pthread_rwlock_unlock(&db->segs_lock);
		}
		/* A checkpoint's index segment holds nothing to replay. */
		if (!s->index)
			err = replay_segment(&r, s, id == first ? from : SEG_HEADER_SIZE);
		if (id >= db->next_seg_id)
			db->next_seg_id = id + 1;
	}
	*applied = r.applied;
	free(r.buf);
	free(r.p);
	return err;
}

/* Step 6 */
static void resume_or_seal(struct bdb *db, const struct db_head *h,
			   bool found, uint64_t applied)
{
	struct db_seg *last;

	pthread_rwlock_wrlock(&db->segs_lock);
	last = NULL;                    /* the log's last segment */
	for (size_t i = db->nsegs; i-- > 0 && !last;)
		if (!db->segs[i]->index)
			last = db->segs[i];
	if (found && h->clean && applied == 0 && last &&
	    last->seg->id == bptr_seg(h->cp_addr) &&
	    last->used == bptr_off(h->cp_addr) + (uint64_t)h->cp_size) {
		last->sealed = false;
		db->open = last;
		db->tail = last->used;
		db->head_clean = true;
	}
	pthread_rwlock_unlock(&db->segs_lock);
}

int db_recover(struct bdb *db)
{
	struct id_list ids = { 0 };
	struct db_version *v;
	struct db_head h = { 0 };
	bool found = false;
	uint64_t applied = 0;
	uint32_t first = 0;
	uint64_t from = SEG_HEADER_SIZE;
	int err;

	err = head_read(db, &h, &found);
	if (!err)
		err = db->env->io->ops->list(db->env->io, db->dir, collect_seg, &ids);
	if (err)
		goto out_free;
	if (ids.n)
		qsort(ids.ids, ids.n, sizeof(*ids.ids), cmp_u32);
	if (found) {
		err = load_checkpoint(db, &h, &ids);
		first = bptr_seg(h.replay);
		from = bptr_off(h.replay);
	} else {
		err = tables_init(db, DB_FIRST_USER_TABLE);
		first = ids.n ? ids.ids[0] : 0;
	}
	if (!err)
		err = names_rebuild(db);
	if (!err)
		err = replay_all(db, &ids, first, from, &applied);
	if (err)
		goto out_free;
	if (found) {
		db->cp_addr = h.cp_addr;
		db->cp_size = h.cp_size;
		db->cp_replay = h.replay;
		db->head_gen = h.gen;
	}
	resume_or_seal(db, &h, found, applied);
	v = db_version_new(db);
	if (!v) {
		err = -ENOMEM;
		goto out_free;
	}
	db_publish(db, v, db->seq);
out_free:
	free(ids.ids);
	if (err)
		barrel_log(BLOG_ERR, "%s: cannot open: %s", db->name,
			   barrel_strerror(err));
	return err;
}
