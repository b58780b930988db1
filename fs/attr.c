/*
 * The mount's "fs" table in each database: attributes of documents,
 * attachments and folders, and scratch files with their content (inline
 * up to FSREC_INLINE bytes, else a blob). FORMAT.md "Mount attributes".
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/log.h"
#include "fs/fs.h"

#define FSREC_VERSION 1
#define FSREC_HEADER 64u
#define FSREC_INLINE (64u << 10)
#define COPY_CHUNK (1u << 20)
#define HOLD_MAX_BYTES (16u << 20)   /* held per database, at most */

/* A record held in memory before it is stored (fs.h, fsrec_settle). The
 * list changes only under both db->table_lock and db->hold_lock. */
struct held {
	char *path;
	struct fsrec rec;         /* its data owned */
	size_t bytes;             /* counted in db->held_bytes */
	bool in_table;            /* the table may hold an older record */
	struct timespec due;      /* CLOCK_MONOTONIC: store it then */
	struct held *next;
};

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> 8 * i);
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> 8 * i);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int64_t ts_ns(struct timespec t)
{
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static struct timespec ns_ts(int64_t ns)
{
	struct timespec t = { ns / 1000000000, ns % 1000000000 };

	if (t.tv_nsec < 0) {
		t.tv_nsec += 1000000000;
		t.tv_sec--;
	}
	return t;
}

/* The record's bytes (malloc'ed into *out). */
static int rec_encode(const struct fsrec *r, uint8_t **out, size_t *len)
{
	char rev[REV_STR_SIZE] = "";
	size_t rl = r->rev.gen ? rev_text(&r->rev, rev) : 0;
	uint8_t *p;

	*len = FSREC_HEADER + rl + r->dlen;
	if (!(p = calloc(1, *len)))
		return -ENOMEM;
	p[0] = FSREC_VERSION;
	p[1] = r->kind;
	p[2] = r->flags;
	put32(p + 4, r->mode);
	put32(p + 8, r->uid);
	put32(p + 12, r->gid);
	put64(p + 16, (uint64_t)ts_ns(r->mtime));
	put64(p + 24, (uint64_t)ts_ns(r->ctime));
	put64(p + 32, (uint64_t)ts_ns(r->atime));
	put64(p + 40, r->size);
	put64(p + 48, r->blob);
	p[56] = (uint8_t)rl;
	put32(p + 60, (uint32_t)r->dlen);
	memcpy(p + FSREC_HEADER, rev, rl);
	if (r->dlen)
		memcpy(p + FSREC_HEADER + rl, r->data, r->dlen);
	*out = p;
	return 0;
}

/* Validate and decode a record read from the table. */
static int rec_decode(const char *path, const uint8_t *p, size_t len,
		      struct fsrec *r)
{
	size_t rl, dl;

	memset(r, 0, sizeof(*r));
	if (len < FSREC_HEADER || p[0] != FSREC_VERSION ||
	    p[1] < FSREC_ATTRS || p[1] > FSREC_LINK)
		goto corrupt;
	rl = p[56];
	dl = get32(p + 60);
	if (FSREC_HEADER + rl + dl != len ||
	    (rl && rev_parse((const char *)p + FSREC_HEADER, rl, &r->rev)))
		goto corrupt;
	r->kind = p[1];
	r->flags = p[2];
	r->mode = get32(p + 4);
	r->uid = get32(p + 8);
	r->gid = get32(p + 12);
	r->mtime = ns_ts((int64_t)get64(p + 16));
	r->ctime = ns_ts((int64_t)get64(p + 24));
	r->atime = ns_ts((int64_t)get64(p + 32));
	r->size = get64(p + 40);
	r->blob = get64(p + 48);
	if (!(r->data = malloc(dl + 1)))
		return -ENOMEM;
	memcpy(r->data, p + FSREC_HEADER + rl, dl);
	r->data[dl] = '\0';
	r->dlen = dl;
	return 0;
corrupt:
	barrel_log(BLOG_ERR, "corrupt record: fs table, key '%s': bad layout",
		   path);
	return BARREL_E_CORRUPT;
}

void fsrec_release(struct fsrec *r)
{
	free(r->data);
	r->data = NULL;
	r->dlen = 0;
}

/* ---- held records ---- */

static struct held **held_find(struct fsdb *db, const char *path)
{
	uint64_t h = 0xcbf29ce484222325ull;
	struct held **pp;

	for (const char *c = path; *c; c++)
		h = (h ^ (unsigned char)*c) * 0x100000001b3ull;
	pp = &db->held[(h ^ h >> 29) % FS_HELD_BUCKETS];
	while (*pp && strcmp((*pp)->path, path))
		pp = &(*pp)->next;
	return pp;
}

/* r with a copy of its data into out. */
static int rec_copy(const struct fsrec *r, struct fsrec *out)
{
	*out = *r;
	if (!(out->data = malloc(r->dlen + 1)))
		return -ENOMEM;
	if (r->dlen)
		memcpy(out->data, r->data, r->dlen);
	out->data[r->dlen] = '\0';
	return 0;
}

/* The held record at path into out: 0, BARREL_E_NOTFOUND, -ENOMEM. */
static int held_get(struct fsdb *db, const char *path, struct fsrec *out)
{
	struct held *h;
	int rc = BARREL_E_NOTFOUND;

	pthread_mutex_lock(&db->hold_lock);
	if ((h = *held_find(db, path)))
		rc = rec_copy(&h->rec, out);
	pthread_mutex_unlock(&db->hold_lock);
	return rc;
}

/* Unlink *pp from its list and free it (both locks held). */
static void held_remove(struct fsdb *db, struct held **pp)
{
	struct held *h = *pp;

	*pp = h->next;
	db->held_bytes -= h->bytes;
	free(h->rec.data);
	free(h->path);
	free(h);
}

/* Forget the held record at path (table_lock held); whether the table
 * may still hold one there (true when none was held). */
static bool held_drop(struct fsdb *db, const char *path)
{
	struct held **pp = held_find(db, path);
	bool in_table = !*pp || (*pp)->in_table;

	if (*pp) {
		pthread_mutex_lock(&db->hold_lock);
		held_remove(db, pp);
		pthread_mutex_unlock(&db->hold_lock);
	}
	return in_table;
}

/* Does the table have a record at path (an error counts as yes)? */
static bool table_has(struct fsdb *db, const char *path)
{
	struct bsnap *snap = NULL;
	struct bval v = { 0 };
	int rc = bdb_snapshot(docdb_bdb(db->d), &snap);

	if (!rc)
		rc = bsnap_get(snap, db->fs_table, path, strlen(path), &v);
	bval_release(&v);
	bsnap_release(snap);
	return rc != BARREL_E_NOTFOUND;
}

/* Is r a record to hold rather than store now? */
static bool holdable(const struct fsdb *db, const struct fsrec *r)
{
	return r && (r->kind == FSREC_FILE || r->kind == FSREC_LINK) &&
	       !r->blob && db->fs->opts.grace_s;
}

/* Hold r as the record at path (table_lock held): 0, 1 when there is
 * no room (store it instead), or -ENOMEM. */
static int hold_put(struct fsdb *db, const char *path, const struct fsrec *r)
{
	struct held **pp = held_find(db, path), *h = *pp;
	size_t bytes = sizeof(*h) + strlen(path) + r->dlen;
	struct fsrec copy;

	if (db->held_bytes - (h ? h->bytes : 0) + bytes > HOLD_MAX_BYTES)
		return 1;
	if (rec_copy(r, &copy))
		return -ENOMEM;
	if (!h && (!(h = calloc(1, sizeof(*h))) || !(h->path = strdup(path)))) {
		free(h);
		free(copy.data);
		return -ENOMEM;
	}
	if (!*pp)
		h->in_table = table_has(db, path);
	pthread_mutex_lock(&db->hold_lock);
	if (!*pp)
		*pp = h;
	free(h->rec.data);
	h->rec = copy;
	db->held_bytes += bytes - h->bytes;
	h->bytes = bytes;
	clock_gettime(CLOCK_MONOTONIC, &h->due);
	h->due.tv_sec += db->fs->opts.grace_s;
	pthread_mutex_unlock(&db->hold_lock);
	return 0;
}

void fsrec_hold_init(struct fsdb *db)
{
	pthread_mutex_init(&db->table_lock, NULL);
	pthread_mutex_init(&db->hold_lock, NULL);
}

/* ---- the table ---- */

int fsrec_get(struct fsdb *db, struct bsnap *snap, const char *path,
	      struct fsrec *out)
{
	struct bsnap *own = NULL;
	struct bval v = { 0 };
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = held_get(db, path, out)) != BARREL_E_NOTFOUND)
		return rc;
	if (!snap && (rc = bdb_snapshot(docdb_bdb(db->d), &own)))
		return rc;
	rc = bsnap_get(snap ? snap : own, db->fs_table, path, strlen(path),
		       &v);
	if (!rc)
		rc = rec_decode(path, v.data, v.len, out);
	bval_release(&v);
	bsnap_release(own);
	return rc;
}

/* The blob of the record at path, to unlink when it is replaced. */
static int old_blob(struct btxn *txn, struct fsdb *db, const char *path,
		    uint64_t *blob)
{
	struct bval v = { 0 };
	struct fsrec old;
	int rc = btxn_get(txn, db->fs_table, path, strlen(path), &v);

	*blob = 0;
	if (rc == BARREL_E_NOTFOUND)
		return 0;
	if (!rc && !(rc = rec_decode(path, v.data, v.len, &old))) {
		*blob = old.blob;
		fsrec_release(&old);
	}
	bval_release(&v);
	return rc;
}

/* Put (r) or delete (!r) path in txn, unlinking a replaced blob and
 * linking r's new one (link: r->blob is a fresh blob of this write). */
static int rec_apply(struct btxn *txn, struct fsdb *db, const char *path,
		     const struct fsrec *r, bool link)
{
	uint8_t *val = NULL;
	size_t vlen = 0;
	uint64_t blob;
	int rc;

	if (r && (rc = rec_encode(r, &val, &vlen)))
		return rc;
	rc = old_blob(txn, db, path, &blob);
	if (!rc && blob && (!r || blob != r->blob))
		rc = btxn_blob_unlink(txn, blob);
	if (!rc && link)
		rc = btxn_blob_link(txn, r->blob);
	if (!rc)
		rc = r ? btxn_put(txn, db->fs_table, path, strlen(path), val,
				  vlen, NULL)
		       : btxn_del(txn, db->fs_table, path, strlen(path));
	free(val);
	return rc;
}

/* rec_apply() as a transaction of its own (table_lock held). */
static int table_write(struct fsdb *db, const char *path,
		       const struct fsrec *r, bool link)
{
	struct btxn *txn;
	int rc = bdb_begin(docdb_bdb(db->d), &txn);

	if (rc)
		return rc;
	if ((rc = rec_apply(txn, db, path, r, link)))
		btxn_abort(txn);
	else
		rc = btxn_commit_lazy(txn);     /* durable at fsync */
	return rc;
}

/* Put (r) or delete (!r) path: held when it can be (hold_put), else
 * stored, the held record it replaces forgotten. */
static int rec_write(struct fsdb *db, const char *path,
		     const struct fsrec *r, bool link)
{
	int rc = 1;

	pthread_mutex_lock(&db->table_lock);
	if (!link && holdable(db, r))
		rc = hold_put(db, path, r);
	if (rc == 1)
		rc = !held_drop(db, path) && !r ? 0 :
		     table_write(db, path, r, link);
	pthread_mutex_unlock(&db->table_lock);
	return rc;
}

bool fsrec_exists(struct fsdb *db, const char *path)
{
	struct fsrec r;
	int rc = fsrec_get(db, NULL, path, &r);

	fsrec_release(&r);
	return rc == 0;
}

int fsrec_put(struct fsdb *db, const char *path, const struct fsrec *r)
{
	return rec_write(db, path, r, false);
}

int fsrec_del(struct fsdb *db, const char *path)
{
	return rec_write(db, path, NULL, false);
}

/* Stream fd (size bytes) into a new blob. */
static int spool_to_blob(struct fsdb *db, int fd, uint64_t size,
			 uint64_t *blob)
{
	struct bblob_writer *w;
	char *buf = malloc(COPY_CHUNK);
	uint64_t len, off = 0;
	int rc = buf ? bdb_blob_create(docdb_bdb(db->d), &w) : -ENOMEM;

	if (rc)
		goto out_free;
	while (!rc && off < size) {
		ssize_t n = pread(fd, buf, COPY_CHUNK, (off_t)off);

		if (n <= 0)
			rc = n < 0 ? -errno : -EIO;
		else if (!(rc = bblob_write(w, buf, (size_t)n)))
			off += (uint64_t)n;
	}
	if (rc)
		bblob_abort(w);
	else
		rc = bblob_finish(w, blob, &len);
out_free:
	free(buf);
	return rc;
}

int spool_read_all(int fd, char *buf, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = pread(fd, buf + off, len - off, (off_t)off);

		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		off += (size_t)n;
	}
	return 0;
}

int fsrec_put_spool(struct fsdb *db, const char *path, struct fsrec *r,
		    int fd)
{
	struct stat st;
	int rc;

	if (fstat(fd, &st))
		return -errno;
	r->size = (uint64_t)st.st_size;
	r->blob = 0;
	fsrec_release(r);
	if (r->size > FSREC_INLINE) {
		if ((rc = spool_to_blob(db, fd, r->size, &r->blob)))
			return rc;
		return rec_write(db, path, r, true);
	}
	if (!(r->data = malloc(r->size + 1)))
		return -ENOMEM;
	r->dlen = r->size;
	if ((rc = spool_read_all(fd, r->data, r->dlen)))
		return rc;
	return rec_write(db, path, r, false);
}

int spool_write_all(int fd, const char *buf, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, buf, len, (off_t)off);

		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int spool_copy(int from, int to)
{
	char *buf = malloc(COPY_CHUNK);
	uint64_t off = 0;
	int rc = buf ? 0 : -ENOMEM;

	while (!rc) {
		ssize_t n = pread(from, buf, COPY_CHUNK, (off_t)off);

		if (n <= 0) {
			rc = n < 0 ? -errno : 0;
			break;
		}
		rc = spool_write_all(to, buf, (size_t)n, off);
		off += (uint64_t)n;
	}
	free(buf);
	return rc;
}

int blob_to_spool(struct bsnap *snap, uint64_t blob, int fd)
{
	struct bblob_reader *br;
	char *buf;
	uint64_t off = 0;
	int rc;

	if ((rc = bsnap_blob_open(snap, blob, &br)))
		return rc;
	if (!(buf = malloc(COPY_CHUNK))) {
		bblob_close(br);
		return -ENOMEM;
	}
	while (!rc) {
		ssize_t n = bblob_read(br, buf, COPY_CHUNK, off);

		if (n <= 0) {
			rc = (int)n;
			break;
		}
		rc = spool_write_all(fd, buf, (size_t)n, off);
		off += (uint64_t)n;
	}
	free(buf);
	bblob_close(br);
	return rc;
}

int fsrec_to_spool(struct bsnap *snap, const struct fsrec *r, int fd)
{
	if (!r->blob)
		return spool_write_all(fd, r->data, r->dlen, 0);
	return blob_to_spool(snap, r->blob, fd);
}

/* Is key a name directly inside prefix (no further '/')? */
static bool direct_child(const char *key, size_t klen, size_t plen)
{
	return klen > plen && !memchr(key + plen, '/', klen - plen);
}

/* Append a copy of h, named by its path after plen bytes, to *list
 * (*n entries, room for *cap). */
static int held_append(const struct held *h, size_t plen, struct held **list,
		       size_t *n, size_t *cap)
{
	struct held *grown, *e;

	if (*n == *cap) {
		size_t more = *cap ? 2 * *cap : 16;

		if (!(grown = realloc(*list, more * sizeof(*grown))))
			return -ENOMEM;
		*list = grown;
		*cap = more;
	}
	e = &(*list)[*n];
	memset(e, 0, sizeof(*e));
	if (!(e->path = strdup(h->path + plen)) || rec_copy(&h->rec, &e->rec)) {
		free(e->path);
		return -ENOMEM;
	}
	(*n)++;
	return 0;
}

static void held_list_free(struct held *list, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(list[i].path);
		fsrec_release(&list[i].rec);
	}
	free(list);
}

/* Copies of the held records directly in prefix, named by their names
 * in it, into *out (*n of them; free with held_list_free). */
static int held_list(struct fsdb *db, const char *prefix, struct held **out,
		     size_t *n)
{
	size_t plen = strlen(prefix), cap = 0;
	int rc = 0;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&db->hold_lock);
	for (size_t b = 0; b < FS_HELD_BUCKETS && !rc; b++)
		for (struct held *h = db->held[b]; h && !rc; h = h->next)
			if (!strncmp(h->path, prefix, plen) &&
			    direct_child(h->path, strlen(h->path), plen))
				rc = held_append(h, plen, out, n, &cap);
	pthread_mutex_unlock(&db->hold_lock);
	return rc;
}

static int held_cmp(const void *a, const void *b)
{
	return strcmp(((const struct held *)a)->path,
		      ((const struct held *)b)->path);
}

/* The stored records directly in prefix in snap, those in held (n of
 * them, sorted by name) left out. */
static int table_list(struct fsdb *db, struct bsnap *snap, const char *prefix,
		      const struct held *held, size_t n,
		      int (*cb)(void *arg, const char *name,
				const struct fsrec *r), void *arg)
{
	size_t plen = strlen(prefix);
	struct bcursor *c = NULL;
	struct bentry e;
	int rc = bsnap_scan(snap, db->fs_table, prefix, plen, NULL, 0, 0, &c);

	while (!rc && (rc = bcursor_next(c, &e)) == 1) {
		char key[BDB_MAX_KEY + 1];
		struct held probe = { .path = key + plen };
		struct fsrec r;

		rc = 0;
		if (e.klen < plen || memcmp(e.key, prefix, plen))
			break;
		if (!direct_child(e.key, e.klen, plen))
			continue;
		memcpy(key, e.key, e.klen);
		key[e.klen] = '\0';
		if (n && bsearch(&probe, held, n, sizeof(*held), held_cmp))
			continue;             /* listed as held */
		if ((rc = rec_decode(key, e.val, e.vlen, &r)))
			break;
		if (r.kind != FSREC_ATTRS)
			rc = cb(arg, key + plen, &r);
		fsrec_release(&r);
	}
	if (c)
		bcursor_free(c);
	return rc;
}

/* The held records and a snapshot of the table are taken together under
 * table_lock, so a record settled meanwhile is listed once. */
int fsrec_list(struct fsdb *db, const char *prefix,
	       int (*cb)(void *arg, const char *name, const struct fsrec *r),
	       void *arg)
{
	struct bsnap *snap = NULL;
	struct held *list;
	size_t n;
	int rc;

	pthread_mutex_lock(&db->table_lock);
	rc = held_list(db, prefix, &list, &n);
	if (!rc)
		rc = bdb_snapshot(docdb_bdb(db->d), &snap);
	pthread_mutex_unlock(&db->table_lock);
	if (!rc) {
		if (n)
			qsort(list, n, sizeof(*list), held_cmp);
		rc = table_list(db, snap, prefix, list, n, cb, arg);
	}
	for (size_t i = 0; !rc && i < n; i++)
		rc = cb(arg, list[i].path, &list[i].rec);
	held_list_free(list, n);
	bsnap_release(snap);
	return rc;
}

static int table_move(struct fsdb *db, const char *from, const char *to)
{
	struct btxn *txn;
	struct bval v = { 0 };
	uint64_t blob;
	int rc = bdb_begin(docdb_bdb(db->d), &txn);

	if (rc)
		return rc;
	rc = btxn_get(txn, db->fs_table, from, strlen(from), &v);
	if (!rc)
		rc = old_blob(txn, db, to, &blob);
	if (!rc && blob)
		rc = btxn_blob_unlink(txn, blob);
	if (!rc)
		rc = btxn_put(txn, db->fs_table, to, strlen(to), v.data, v.len,
			      NULL);
	if (!rc)
		rc = btxn_del(txn, db->fs_table, from, strlen(from));
	bval_release(&v);
	if (rc) {
		btxn_abort(txn);
		return rc;
	}
	return btxn_commit_lazy(txn);
}

/* Is h one that fsrec_settle(path, due) stores, at now? */
static bool settles(const struct held *h, const char *path, bool due,
		    const struct timespec *now)
{
	if (path)
		return !strcmp(h->path, path);
	return !due || h->due.tv_sec < now->tv_sec ||
	       (h->due.tv_sec == now->tv_sec && h->due.tv_nsec <= now->tv_nsec);
}

/* Store the held records that settle, in one transaction, and forget
 * them (table_lock held). */
static int settle_locked(struct fsdb *db, const char *path, bool due)
{
	struct timespec now;
	struct btxn *txn = NULL;
	size_t n = 0;
	int rc = 0;

	clock_gettime(CLOCK_MONOTONIC, &now);
	for (size_t b = 0; b < FS_HELD_BUCKETS && !rc; b++)
		for (struct held *h = db->held[b]; h && !rc; h = h->next) {
			if (!settles(h, path, due, &now))
				continue;
			if (!txn && (rc = bdb_begin(docdb_bdb(db->d), &txn)))
				return rc;
			rc = rec_apply(txn, db, h->path, &h->rec, false);
			n++;
		}
	if (!txn)
		return 0;
	if (rc) {
		btxn_abort(txn);
		return rc;
	}
	if ((rc = btxn_commit_lazy(txn)))
		return rc;
	pthread_mutex_lock(&db->hold_lock);
	for (size_t b = 0; b < FS_HELD_BUCKETS && n; b++)
		for (struct held **pp = &db->held[b]; *pp;)
			if (settles(*pp, path, due, &now)) {
				held_remove(db, pp);
				n--;
			} else {
				pp = &(*pp)->next;
			}
	pthread_mutex_unlock(&db->hold_lock);
	return 0;
}

int fsrec_settle(struct fsdb *db, const char *path, bool due)
{
	int rc;

	pthread_mutex_lock(&db->table_lock);
	rc = settle_locked(db, path, due);
	pthread_mutex_unlock(&db->table_lock);
	return rc;
}

void fsrec_hold_end(struct fsdb *db, bool store)
{
	int rc = store ? fsrec_settle(db, NULL, false) : 0;

	if (rc)
		barrel_log(BLOG_ERR, "%s: scratch files not stored: %s",
			   db->name, barrel_strerror(rc));
	pthread_mutex_lock(&db->table_lock);
	pthread_mutex_lock(&db->hold_lock);
	for (size_t b = 0; b < FS_HELD_BUCKETS; b++)
		while (db->held[b])
			held_remove(db, &db->held[b]);
	pthread_mutex_unlock(&db->hold_lock);
	pthread_mutex_unlock(&db->table_lock);
}

/* Move the held record h to path to (table_lock held); 1 when there is
 * no room to hold it there. */
static int move_held(struct fsdb *db, struct held *h, const char *to)
{
	bool from_stored = h->in_table;
	char *from = strdup(h->path);
	int rc = from ? hold_put(db, to, &h->rec) : -ENOMEM;

	if (!rc) {
		held_drop(db, from);
		rc = from_stored ? table_write(db, from, NULL, false) : 0;
	}
	free(from);
	return rc;
}

int fsrec_move(struct fsdb *db, const char *from, const char *to)
{
	struct held *h;
	int rc = 1;

	pthread_mutex_lock(&db->table_lock);
	if ((h = *held_find(db, from)))
		rc = move_held(db, h, to);
	if (rc == 1) {
		if (h && (rc = settle_locked(db, from, false)))
			goto out;
		held_drop(db, to);        /* the move replaces it */
		rc = table_move(db, from, to);
	}
out:
	pthread_mutex_unlock(&db->table_lock);
	return rc;
}
