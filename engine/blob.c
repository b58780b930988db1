/*
 * Blobs: values too large for a record, written and read in chunks.
 *
 * A blob's bytes go to the log as BLOB records of up to BLOB_CHUNK bytes,
 * outside any transaction, as the writer hands them over; the staging
 * buffer is synced every BLOB_SYNC_BYTES so memory stays bounded. A
 * transaction links the finished blob by putting one entry per chunk,
 * (be64 id, be32 index) -> {addr, size, length}, and a meta entry
 * (id, 0xffffffff) -> {length, chunks} into the internal blobs table.
 * Until linked, a blob's chunks are registered in db->blobs so GC leaves
 * their segments alone.
 */
#include "config.h"

#include <errno.h>

#include "engine/db_i.h"
#include "engine/log.h"

#define BLOB_SYNC_BYTES (8u << 20)
#define BLOB_REC_HDR 16u

/* A blob being written or finished and not yet linked; writer slot. */
struct db_blobreg {
	uint64_t id;
	uint64_t length;
	bool finished;
	uint32_t n, cap;
	bptr *addr;
	uint32_t *size;
	struct db_blobreg *next;
};

struct bblob_writer {
	struct bdb *db;
	struct db_blobreg *reg;
	uint8_t *chunk;
	size_t fill;
	uint64_t unsynced;
};

struct bblob_reader {
	struct bsnap *snap;
	uint64_t id;
	uint64_t length;
	uint32_t nchunks;
	int64_t cached;        /* index of the chunk in buf, or -1 */
	uint8_t *buf;          /* its payload */
	uint32_t buflen;
};

static void blob_key(uint8_t k[12], uint64_t id, uint32_t idx)
{
	put_be64(k, id);
	k[8] = idx >> 24;
	k[9] = idx >> 16;
	k[10] = idx >> 8;
	k[11] = idx;
}

static void reg_free(struct db_blobreg *r)
{
	free(r->addr);
	free(r->size);
	free(r);
}

/* Unlink r from db->blobs (writer slot held). */
static void reg_remove(struct bdb *db, struct db_blobreg *r)
{
	struct db_blobreg **p;

	for (p = &db->blobs; *p; p = &(*p)->next) {
		if (*p == r) {
			*p = r->next;
			return;
		}
	}
}

void db_blobs_release(struct bdb *db)
{
	while (db->blobs) {
		struct db_blobreg *r = db->blobs;

		db->blobs = r->next;
		reg_free(r);
	}
}

uint32_t db_blobs_min_seg(struct bdb *db)
{
	uint32_t min = UINT32_MAX;

	for (struct db_blobreg *r = db->blobs; r; r = r->next)
		for (uint32_t i = 0; i < r->n; i++)
			if (bptr_seg(r->addr[i]) < min)
				min = bptr_seg(r->addr[i]);
	return min;
}

int bdb_blob_create(struct bdb *db, struct bblob_writer **out)
{
	struct bblob_writer *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	w->reg = calloc(1, sizeof(*w->reg));
	w->chunk = malloc(BLOB_CHUNK);
	if (!w->reg || !w->chunk) {
		free(w->reg);
		free(w->chunk);
		free(w);
		return -ENOMEM;
	}
	w->db = db;
	db_writer_enter(db);
	w->reg->id = db->next_blob_id++;
	w->reg->next = db->blobs;
	db->blobs = w->reg;
	db_writer_leave(db);
	*out = w;
	return 0;
}

static int reg_push(struct db_blobreg *r, bptr addr, uint32_t size)
{
	if (r->n == r->cap) {
		uint32_t cap = r->cap ? r->cap * 2 : 16;
		bptr *a = realloc(r->addr, cap * sizeof(*a));
		uint32_t *s;

		if (!a)
			return -ENOMEM;
		r->addr = a;
		s = realloc(r->size, cap * sizeof(*s));
		if (!s)
			return -ENOMEM;
		r->size = s;
		r->cap = cap;
	}
	r->addr[r->n] = addr;
	r->size[r->n++] = size;
	return 0;
}

static int sync_staged(struct bdb *db)
{
	uint64_t gen;

	pthread_mutex_lock(&db->stage_lock);
	gen = db->stage_gen;
	pthread_mutex_unlock(&db->stage_lock);
	return db_sync(db, gen);
}

static int chunk_flush(struct bblob_writer *w)
{
	struct bdb *db = w->db;
	uint8_t hdr[BLOB_REC_HDR];
	struct iovec iov[2] = { { hdr, BLOB_REC_HDR }, { w->chunk, w->fill } };
	uint32_t size;
	bptr addr;
	int err;

	put_le64(hdr, w->reg->id);
	put_le32(hdr + 8, w->reg->n);
	put_le32(hdr + 12, w->fill);
	db_writer_enter(db);
	err = db->failed ? BARREL_E_CLOSED
			 : db_append(db, REC_BLOB, 0, iov, 2, &addr, &size);
	if (!err)
		err = reg_push(w->reg, addr, size);
	db_writer_leave(db);
	if (err)
		return err;
	w->reg->length += w->fill;
	w->fill = 0;
	w->unsynced += size;
	if (w->unsynced >= BLOB_SYNC_BYTES) {
		w->unsynced = 0;
		return sync_staged(db);
	}
	return 0;
}

int bblob_write(struct bblob_writer *w, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	int err;

	while (len) {
		size_t n = BLOB_CHUNK - w->fill;

		if (n > len)
			n = len;
		memcpy(w->chunk + w->fill, p, n);
		w->fill += n;
		p += n;
		len -= n;
		if (w->fill == BLOB_CHUNK) {
			err = chunk_flush(w);
			if (err)
				return err;
		}
	}
	return 0;
}

int bblob_finish(struct bblob_writer *w, uint64_t *id, uint64_t *length)
{
	int err = 0;

	if (w->fill)
		err = chunk_flush(w);
	if (err) {
		bblob_abort(w);
		return err;
	}
	*id = w->reg->id;
	*length = w->reg->length;
	w->reg->finished = true;
	free(w->chunk);
	free(w);
	return 0;
}

void bblob_abort(struct bblob_writer *w)
{
	db_writer_enter(w->db);
	reg_remove(w->db, w->reg);
	db_writer_leave(w->db);
	reg_free(w->reg);
	free(w->chunk);
	free(w);
}

int btxn_blob_link(struct btxn *t, uint64_t id)
{
	struct bdb *db = db_txn_db(t);
	struct db_blobreg *r;
	uint8_t k[12], v[16];
	int err = 0;

	for (r = db->blobs; r && !(r->id == id && r->finished); r = r->next)
		;
	if (!r)
		return BARREL_E_NOTFOUND;
	for (uint32_t i = 0; i < r->n && !err; i++) {
		blob_key(k, id, i);
		put_le64(v, r->addr[i]);
		put_le32(v + 8, r->size[i]);
		put_le32(v + 12, i + 1 < r->n ? BLOB_CHUNK
					      : (uint32_t)(r->length - (uint64_t)i * BLOB_CHUNK));
		err = db_txn_put_seq(t, DB_TABLE_BLOBS, k, 12, v, 16, 0);
	}
	blob_key(k, id, BLOB_META_CHUNK);
	put_le64(v, r->length);
	put_le32(v + 8, r->n);
	put_le32(v + 12, BLOB_CHUNK);
	if (!err)
		err = db_txn_put_seq(t, DB_TABLE_BLOBS, k, 12, v, 16, 0);
	if (!err) {
		reg_remove(db, r);
		reg_free(r);
	}
	return err;
}

int btxn_blob_unlink(struct btxn *t, uint64_t id)
{
	uint8_t k[12];
	struct bval meta;
	uint32_t n;
	int err;

	blob_key(k, id, BLOB_META_CHUNK);
	err = btxn_get(t, DB_TABLE_BLOBS, k, 12, &meta);
	if (err)
		return err;
	n = meta.len == 16 ? get_le32((uint8_t *)meta.data + 8) : 0;
	bval_release(&meta);
	for (uint32_t i = 0; i < n && !err; i++) {
		blob_key(k, id, i);
		err = btxn_del(t, DB_TABLE_BLOBS, k, 12);
	}
	blob_key(k, id, BLOB_META_CHUNK);
	if (!err)
		err = btxn_del(t, DB_TABLE_BLOBS, k, 12);
	return err;
}

int bsnap_blob_open(struct bsnap *snap, uint64_t id, struct bblob_reader **out)
{
	struct bblob_reader *r;
	struct bval meta;
	uint8_t k[12];
	int err;

	blob_key(k, id, BLOB_META_CHUNK);
	err = bsnap_get(snap, DB_TABLE_BLOBS, k, 12, &meta);
	if (err)
		return err;
	if (meta.len != 16) {
		bval_release(&meta);
		return BARREL_E_CORRUPT;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		bval_release(&meta);
		return -ENOMEM;
	}
	r->snap = snap;
	r->id = id;
	r->length = get_le64(meta.data);
	r->nchunks = get_le32((uint8_t *)meta.data + 8);
	r->cached = -1;
	bval_release(&meta);
	*out = r;
	return 0;
}

uint64_t bblob_length(const struct bblob_reader *r)
{
	return r->length;
}

/* Load chunk idx into r->buf, validating that it is that chunk. */
static int chunk_load(struct bblob_reader *r, uint32_t idx)
{
	struct bdb *db = db_snap_db(r->snap);
	struct bval loc;
	uint8_t k[12];
	void *p;
	uint32_t len;
	int err;

	blob_key(k, r->id, idx);
	err = bsnap_get(r->snap, DB_TABLE_BLOBS, k, 12, &loc);
	if (err)
		return err == BARREL_E_NOTFOUND ? BARREL_E_CORRUPT : err;
	err = loc.len == 16 ? 0 : BARREL_E_CORRUPT;
	if (!err)
		err = db_read_record(db, get_le64(loc.data),
				     get_le32((uint8_t *)loc.data + 8), REC_BLOB,
				     &p, &len);
	bval_release(&loc);
	if (err)
		return err;
	if (len < BLOB_REC_HDR || get_le64(p) != r->id ||
	    get_le32((uint8_t *)p + 8) != idx ||
	    get_le32((uint8_t *)p + 12) != len - BLOB_REC_HDR) {
		free(p);
		return BARREL_E_CORRUPT;
	}
	free(r->buf);
	r->buf = p;
	r->buflen = len - BLOB_REC_HDR;
	r->cached = idx;
	return 0;
}

ssize_t bblob_read(struct bblob_reader *r, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	int err;

	while (done < len && off < r->length) {
		uint32_t idx = off / BLOB_CHUNK, in = off % BLOB_CHUNK;
		size_t n;

		if (r->cached != (int64_t)idx) {
			err = chunk_load(r, idx);
			if (err)
				return err;
		}
		if (in >= r->buflen)
			return BARREL_E_CORRUPT;
		n = r->buflen - in;
		if (n > len - done)
			n = len - done;
		memcpy((uint8_t *)buf + done, r->buf + BLOB_REC_HDR + in, n);
		done += n;
		off += n;
	}
	return done;
}

void bblob_close(struct bblob_reader *r)
{
	if (!r)
		return;
	free(r->buf);
	free(r);
}
