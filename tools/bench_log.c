/*
 * The bare log: the floor any durable store pays. One append-only file,
 * one write and one fdatasync per commit, an in-memory hash index from key
 * to the offset of its latest value, reads by pread. The file itself is the
 * sequence index (records are appended in sequence order); reopening scans
 * it whole to rebuild the hash. No checksums: it is the lower bound.
 *
 * Record: klen (u32), vlen (u32), seq (u64), all host order, then the key
 * and the value. A record cut short at the end of the file is a torn tail
 * and ignored.
 */
#include "config.h"
#include "tools/bench.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOG_HDR 16u
#define LOG_READ_CHUNK (1u << 20)

struct log_entry {
	char *key;          /* owned; NULL: an empty slot */
	uint32_t klen;
	uint32_t vlen;
	uint64_t off;       /* file offset of the value */
};

struct log_store {
	struct bench_store base;
	int fd;
	uint64_t tail;            /* where the next record goes */
	uint64_t seq;             /* last sequence number written */
	struct log_entry *slots;  /* open addressing, linear probing */
	size_t cap;               /* a power of two */
	size_t count;
	char *buf;                /* one commit's records */
	size_t buf_cap;
};

static uint64_t hash_key(const char *key, size_t klen)
{
	uint64_t h = 0xcbf29ce484222325ULL;     /* FNV-1a */

	for (size_t i = 0; i < klen; i++)
		h = (h ^ (unsigned char)key[i]) * 0x100000001b3ULL;
	return h;
}

/* The slot of key, or the empty slot where it would go. */
static struct log_entry *log_slot(struct log_entry *slots, size_t cap,
				  const char *key, size_t klen)
{
	size_t i = hash_key(key, klen) & (cap - 1);

	while (slots[i].key && (slots[i].klen != klen ||
				memcmp(slots[i].key, key, klen)))
		i = (i + 1) & (cap - 1);
	return &slots[i];
}

static int log_grow(struct log_store *s)
{
	size_t cap = s->cap ? s->cap * 2 : 1024;
	struct log_entry *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return bench_fail(s->base.err, "out of memory");
	for (size_t i = 0; i < s->cap; i++)
		if (s->slots[i].key)
			*log_slot(slots, cap, s->slots[i].key,
				  s->slots[i].klen) = s->slots[i];
	free(s->slots);
	s->slots = slots;
	s->cap = cap;
	return 0;
}

/* Point key at a value of vlen bytes at off. */
static int log_index(struct log_store *s, const char *key, size_t klen,
		     size_t vlen, uint64_t off)
{
	struct log_entry *e;

	if ((s->count + 1) * 2 > s->cap && log_grow(s))
		return -1;
	e = log_slot(s->slots, s->cap, key, klen);
	if (!e->key) {
		e->key = malloc(klen ? klen : 1);
		if (!e->key)
			return bench_fail(s->base.err, "out of memory");
		memcpy(e->key, key, klen);
		e->klen = (uint32_t)klen;
		s->count++;
	}
	e->vlen = (uint32_t)vlen;
	e->off = off;
	return 0;
}

static int log_new(const char *dir, bool create, struct log_store **out,
		   char *err)
{
	struct log_store *s = calloc(1, sizeof(*s));
	char path[4096];

	if (!s)
		return bench_fail(err, "out of memory");
	if (bench_store_init(&s->base, &bench_log_ops, dir, err) ||
	    bench_path(path, sizeof(path), dir, "log", err))
		goto out_free;
	s->fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0),
		     0644);
	if (s->fd < 0) {
		bench_fail(err, "%s: %s", path, strerror(errno));
		goto out_free;
	}
	if (log_grow(s)) {
		bench_fail(err, "%s", s->base.err);
		goto out_close;
	}
	*out = s;
	return 0;
out_close:
	close(s->fd);
out_free:
	free(s);
	return -1;
}

static void log_free(struct log_store *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->slots[i].key);
	free(s->slots);
	free(s->buf);
	free(s);
}

static int log_open(const char *dir, struct bench_store **out, char *err)
{
	struct log_store *s;

	if (log_new(dir, true, &s, err))
		return -1;
	*out = &s->base;
	return 0;
}

/* Append the batch as one write, make it durable, then index it. */
static int log_append(struct bench_store *bs, const struct bench_doc *d,
		      size_t n)
{
	struct log_store *s = (struct log_store *)bs;
	size_t need = 0, pos = 0;

	for (size_t i = 0; i < n; i++)
		need += LOG_HDR + d[i].klen + d[i].vlen;
	if (need > s->buf_cap) {
		char *b = realloc(s->buf, need);

		if (!b)
			return bench_fail(bs->err, "out of memory");
		s->buf = b;
		s->buf_cap = need;
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t kl = (uint32_t)d[i].klen, vl = (uint32_t)d[i].vlen;
		uint64_t seq = ++s->seq;

		memcpy(s->buf + pos, &kl, 4);
		memcpy(s->buf + pos + 4, &vl, 4);
		memcpy(s->buf + pos + 8, &seq, 8);
		memcpy(s->buf + pos + LOG_HDR, d[i].key, kl);
		memcpy(s->buf + pos + LOG_HDR + kl, d[i].val, vl);
		pos += LOG_HDR + kl + vl;
	}
	for (size_t done = 0; done < need;) {
		ssize_t w = pwrite(s->fd, s->buf + done, need - done,
				   (off_t)(s->tail + done));

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return bench_fail(bs->err, "write: %s",
					  w < 0 ? strerror(errno) : "short");
		done += (size_t)w;
	}
	if (fdatasync(s->fd))
		return bench_fail(bs->err, "fdatasync: %s", strerror(errno));
	for (size_t i = 0, off = 0; i < n; i++) {
		if (log_index(s, d[i].key, d[i].klen, d[i].vlen,
			      s->tail + off + LOG_HDR + d[i].klen))
			return -1;
		off += LOG_HDR + d[i].klen + d[i].vlen;
	}
	s->tail += need;
	return 0;
}

static int log_pread(struct log_store *s, void *buf, size_t len, uint64_t off)
{
	for (size_t done = 0; done < len;) {
		ssize_t r = pread(s->fd, (char *)buf + done, len - done,
				  (off_t)(off + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return bench_fail(s->base.err, "read: %s",
					  r < 0 ? strerror(errno) : "short");
		done += (size_t)r;
	}
	return 0;
}

static int log_get(struct bench_store *bs, const char *key, size_t klen,
		   void *buf, size_t cap, size_t *len)
{
	struct log_store *s = (struct log_store *)bs;
	struct log_entry *e = log_slot(s->slots, s->cap, key, klen);

	if (!e->key)
		return 0;
	if (e->vlen > cap)
		return bench_fail(bs->err, "value of %u bytes", e->vlen);
	*len = e->vlen;
	return log_pread(s, buf, e->vlen, e->off) ? -1 : 1;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct log_entry *x = *(const struct log_entry *const *)a;
	const struct log_entry *y = *(const struct log_entry *const *)b;
	int c = memcmp(x->key, y->key, x->klen < y->klen ? x->klen : y->klen);

	return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* Key order: sort the index, then read each value where it lies. */
static int log_scan(struct bench_store *bs, bench_scan_cb cb, void *arg)
{
	struct log_store *s = (struct log_store *)bs;
	struct log_entry **v = malloc((s->count ? s->count : 1) * sizeof(*v));
	char *val = NULL;
	size_t n = 0, val_cap = 0;
	int rc = 0;

	if (!v)
		return bench_fail(bs->err, "out of memory");
	for (size_t i = 0; i < s->cap; i++)
		if (s->slots[i].key)
			v[n++] = &s->slots[i];
	qsort(v, n, sizeof(*v), entry_cmp);
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (v[i]->vlen > val_cap) {
			char *b = realloc(val, v[i]->vlen);

			if (!b) {
				rc = bench_fail(bs->err, "out of memory");
				break;
			}
			val = b;
			val_cap = v[i]->vlen;
		}
		rc = log_pread(s, val, v[i]->vlen, v[i]->off);
		if (rc == 0)
			rc = cb(arg, v[i]->key, v[i]->klen, val, v[i]->vlen);
	}
	free(val);
	free(v);
	return rc;
}

static int log_close(struct bench_store *bs, char *err)
{
	struct log_store *s = (struct log_store *)bs;
	int rc = close(s->fd);

	log_free(s);
	return rc ? bench_fail(err, "close: %s", strerror(errno)) : 0;
}

/* Parse the records in buf[0..len) at file offset base into the index;
 * returns the bytes of whole records consumed or -1. */
static ssize_t log_replay(struct log_store *s, const char *buf, size_t len,
			  uint64_t base)
{
	size_t pos = 0;

	while (len - pos >= LOG_HDR) {
		uint32_t kl, vl;

		memcpy(&kl, buf + pos, 4);
		memcpy(&vl, buf + pos + 4, 4);
		if (len - pos - LOG_HDR < (uint64_t)kl + vl)
			break;
		memcpy(&s->seq, buf + pos + 8, 8);
		if (log_index(s, buf + pos + LOG_HDR, kl, vl,
			      base + pos + LOG_HDR + kl))
			return -1;
		pos += LOG_HDR + kl + vl;
	}
	return (ssize_t)pos;
}

/* Read the whole file in chunks, carrying a record cut by a chunk end. */
static int log_rebuild(struct log_store *s)
{
	size_t cap = LOG_READ_CHUNK, have = 0;
	char *buf = malloc(cap);
	int rc = 0;

	if (!buf)
		return bench_fail(s->base.err, "out of memory");
	for (;;) {
		ssize_t r = pread(s->fd, buf + have, cap - have,
				  (off_t)(s->tail + have));
		ssize_t used;

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = bench_fail(s->base.err, "read: %s",
					strerror(errno));
			break;
		}
		if (r == 0)
			break;          /* what is left is a torn tail */
		have += (size_t)r;
		used = log_replay(s, buf, have, s->tail);
		if (used < 0) {
			rc = -1;
			break;
		}
		memmove(buf, buf + used, have - (size_t)used);
		have -= (size_t)used;
		s->tail += (uint64_t)used;
		if (have == cap) {      /* one record bigger than the buffer */
			char *b = realloc(buf, cap * 2);

			if (!b) {
				rc = bench_fail(s->base.err, "out of memory");
				break;
			}
			buf = b;
			cap *= 2;
		}
	}
	free(buf);
	return rc;
}

static int log_reopen(const char *dir, struct bench_store **out, char *err)
{
	struct log_store *s;

	if (log_new(dir, false, &s, err))
		return -1;
	if (log_rebuild(s)) {
		bench_fail(err, "%s", s->base.err);
		close(s->fd);
		log_free(s);
		return -1;
	}
	*out = &s->base;
	return 0;
}

const struct bench_ops bench_log_ops = {
	.name = "log",
	.open = log_open,
	.insert_batch = log_append,
	.get = log_get,
	.update_batch = log_append,
	.scan = log_scan,
	.close = log_close,
	.reopen = log_reopen,
	.disk_usage = bench_store_usage,
};
