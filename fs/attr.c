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

int fsrec_get(struct fsdb *db, struct bsnap *snap, const char *path,
	      struct fsrec *out)
{
	struct bsnap *own = NULL;
	struct bval v = { 0 };
	int rc;

	memset(out, 0, sizeof(*out));
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

/* Put (r) or delete (!r) path, unlinking a replaced blob and linking
 * r's new one (link: r->blob is a fresh blob of this write). */
static int rec_write(struct fsdb *db, const char *path,
		     const struct fsrec *r, bool link)
{
	struct btxn *txn;
	uint8_t *val = NULL;
	size_t vlen = 0;
	uint64_t blob;
	int rc;

	if (r && (rc = rec_encode(r, &val, &vlen)))
		return rc;
	if ((rc = bdb_begin(docdb_bdb(db->d), &txn)))
		goto out_free;
	rc = old_blob(txn, db, path, &blob);
	if (!rc && blob && (!r || blob != r->blob))
		rc = btxn_blob_unlink(txn, blob);
	if (!rc && link)
		rc = btxn_blob_link(txn, r->blob);
	if (!rc)
		rc = r ? btxn_put(txn, db->fs_table, path, strlen(path), val,
				  vlen, NULL)
		       : btxn_del(txn, db->fs_table, path, strlen(path));
	if (rc)
		btxn_abort(txn);
	else
		rc = btxn_commit_lazy(txn);     /* durable at fsync */
out_free:
	free(val);
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

int fsrec_list(struct fsdb *db, struct bsnap *snap, const char *prefix,
	       int (*cb)(void *arg, const char *name, const struct fsrec *r),
	       void *arg)
{
	size_t plen = strlen(prefix);
	struct bsnap *own = NULL;
	struct bcursor *c = NULL;
	struct bentry e;
	int rc;

	if (!snap && (rc = bdb_snapshot(docdb_bdb(db->d), &own)))
		return rc;
	rc = bsnap_scan(snap ? snap : own, db->fs_table, prefix, plen, NULL, 0,
			0, &c);
	while (!rc && (rc = bcursor_next(c, &e)) == 1) {
		char key[BDB_MAX_KEY + 1];
		struct fsrec r;

		rc = 0;
		if (e.klen < plen || memcmp(e.key, prefix, plen))
			break;
		if (!direct_child(e.key, e.klen, plen))
			continue;
		memcpy(key, e.key, e.klen);
		key[e.klen] = '\0';
		if ((rc = rec_decode(key, e.val, e.vlen, &r)))
			break;
		if (r.kind != FSREC_ATTRS)
			rc = cb(arg, key + plen, &r);
		fsrec_release(&r);
	}
	if (c)
		bcursor_free(c);
	bsnap_release(own);
	return rc;
}

int fsrec_move(struct fsdb *db, const char *from, const char *to)
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
