#include "config.h"
/*
 * Segments (segment.h): file naming, the segment header, record framing
 * and THE record validation function, rec_validate(). Layouts are in
 * FORMAT.md ("Segment header", "Record"); all integers little-endian.
 */
#include "engine/segment.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <xxhash.h>

#include "engine/error.h"
#include "engine/log.h"

#define SEG_MAGIC "BRLSEG\r\n"
#define SEG_VERSION 2u                /* written; 1 is read as well */
#define SEG_VERSION_MIN 1u
#define SEG_ID_MAX 99999999u          /* 8 decimal digits in the name */
#define SEG_NAME_LEN 12u              /* "NNNNNNNN.seg" */
#define SCAN_WINDOW (1u << 20)        /* read-ahead of a scan */

/* Segment header fields: byte offsets (FORMAT.md "Segment header"). */
enum {
	SH_MAGIC = 0,
	SH_VERSION = 8,
	SH_ID = 12,
	SH_SALT = 16,
	SH_CAPACITY = 24,
	SH_RESERVED = 32,   /* 24 zero bytes */
	SH_CSUM = 56,       /* XXH3-64 of bytes [0, 56), seed 0 */
};

/* Record frame fields: byte offsets (FORMAT.md "Record"). */
enum {
	RH_CSUM = 0,        /* XXH3-64 of [8, 24 + len), seeded with the salt */
	RH_TYPE = 8,
	RH_FLAGS = 9,
	RH_RESERVED = 10,   /* u16, zero */
	RH_LEN = 12,
	RH_TXN = 16,
};

/* ---- little-endian fields ---- */

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	put_le16(p, (uint16_t)v);
	put_le16(p + 2, (uint16_t)(v >> 16));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_le32(const uint8_t *p)
{
	return get_le16(p) | (uint32_t)get_le16(p + 2) << 16;
}

static uint64_t get_le64(const uint8_t *p)
{
	return get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* ---- names ---- */

int seg_path(char *buf, size_t size, const char *dir, uint32_t id)
{
	int n;

	if (id > SEG_ID_MAX)
		return -EINVAL;   /* would not fit the 8-digit name */
	n = snprintf(buf, size, "%s/%08" PRIu32 ".seg", dir, id);
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return 0;
}

bool seg_parse_name(const char *name, uint32_t *id)
{
	uint32_t v = 0;

	if (strlen(name) != SEG_NAME_LEN || strcmp(name + 8, ".seg"))
		return false;
	for (int i = 0; i < 8; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		v = v * 10 + (uint32_t)(name[i] - '0');
	}
	*id = v;
	return true;
}

/* ---- the segment header ---- */

/* Room for a header and one record; offsets must fit a bptr. */
static bool seg_capacity_ok(uint64_t capacity)
{
	return capacity >= SEG_HEADER_SIZE + REC_HEADER_SIZE &&
	       capacity <= UINT32_MAX && capacity % REC_ALIGN == 0;
}

static void seg_header_encode(uint8_t *h, uint32_t id, uint64_t salt,
			      uint64_t capacity)
{
	memset(h, 0, SEG_HEADER_SIZE);
	memcpy(h + SH_MAGIC, SEG_MAGIC, 8);
	put_le32(h + SH_VERSION, SEG_VERSION);
	put_le32(h + SH_ID, id);
	put_le64(h + SH_SALT, salt);
	put_le64(h + SH_CAPACITY, capacity);
	put_le64(h + SH_CSUM, XXH3_64bits(h, SH_CSUM));
}

__attribute__((format(printf, 2, 3)))
static int seg_corrupt(uint32_t id, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	barrel_log(BLOG_ERR, "corrupt segment header: seg=%" PRIu32 ": %s",
		   id, why);
	return BARREL_E_CORRUPT;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/*
 * Validate the header of segment id read into h (have bytes): magic, then
 * version (an unknown one is BARREL_E_VERSION whatever follows), checksum,
 * id, reserved bytes, capacity. Fills seg's salt and capacity.
 */
static int seg_header_check(const uint8_t *h, size_t have, uint32_t id,
			    struct segment *seg)
{
	uint32_t version;

	if (have < SEG_HEADER_SIZE)
		return seg_corrupt(id, "short header (have %zu, expect %u)",
				   have, SEG_HEADER_SIZE);
	if (memcmp(h + SH_MAGIC, SEG_MAGIC, 8))
		return seg_corrupt(id, "bad magic");
	version = get_le32(h + SH_VERSION);
	if (version < SEG_VERSION_MIN || version > SEG_VERSION) {
		barrel_log(BLOG_ERR, "segment seg=%" PRIu32 ": unknown format "
			   "version %" PRIu32 " (expect %u to %u)", id, version,
			   SEG_VERSION_MIN, SEG_VERSION);
		return BARREL_E_VERSION;
	}
	if (get_le64(h + SH_CSUM) != XXH3_64bits(h, SH_CSUM))
		return seg_corrupt(id, "checksum mismatch");
	if (get_le32(h + SH_ID) != id)
		return seg_corrupt(id, "wrong id (have %" PRIu32 ", expect %"
				   PRIu32 ")", get_le32(h + SH_ID), id);
	if (!all_zero(h + SH_RESERVED, SH_CSUM - SH_RESERVED))
		return seg_corrupt(id, "reserved bytes set");
	seg->capacity = get_le64(h + SH_CAPACITY);
	if (!seg_capacity_ok(seg->capacity))
		return seg_corrupt(id, "bad capacity %" PRIu64, seg->capacity);
	seg->salt = get_le64(h + SH_SALT);
	seg->id = id;
	return 0;
}

/* ---- create, open, close, remove ---- */

/*
 * Steps: 1. create the file (exclusive); 2. reserve capacity bytes;
 * 3. write the header and fdatasync; 4. fsync the directory. On failure
 * after step 1 the file is closed and unlinked again.
 */
int seg_create(struct bio *io, const char *dir, uint32_t id, uint64_t salt,
	       uint64_t capacity, struct segment **out)
{
	uint8_t h[SEG_HEADER_SIZE];
	struct iovec iov = { .iov_base = h, .iov_len = sizeof(h) };
	struct bio_write w = { .iov = &iov, .iovcnt = 1, .off = 0 };
	char path[PATH_MAX];
	struct segment *seg;
	int err;

	if (!seg_capacity_ok(capacity))
		return BARREL_E_INVALID;
	err = seg_path(path, sizeof(path), dir, id);
	if (err)
		return err;
	seg = calloc(1, sizeof(*seg));
	if (!seg)
		return -ENOMEM;
	err = io->ops->open(io, path, BIO_RDWR | BIO_CREATE | BIO_EXCL,
			    &seg->file);
	if (err)
		goto out_free;
	seg_header_encode(h, id, salt, capacity);
	w.file = seg->file;
	err = io->ops->write_batch(io, &w, 1, true);
	if (err)
		goto out_unlink;
	err = io->ops->fsync_dir(io, dir);
	if (err)
		goto out_unlink;
	seg->id = id;
	seg->salt = salt;
	seg->capacity = capacity;
	seg->io = io;
	*out = seg;
	return 0;

out_unlink:
	io->ops->close(seg->file);
	io->ops->unlink(io, path);
out_free:
	free(seg);
	return err;
}

/* Read-write, or read-only where writing is not allowed. */
static int seg_open_file(struct bio *io, const char *path,
			 struct bio_file **out)
{
	int err = io->ops->open(io, path, BIO_RDWR, out);

	if (err == -EACCES || err == -EROFS || err == -EPERM)
		err = io->ops->open(io, path, BIO_RDONLY, out);
	return err;
}

int seg_open(struct bio *io, const char *dir, uint32_t id,
	     struct segment **out)
{
	uint8_t h[SEG_HEADER_SIZE];
	char path[PATH_MAX];
	struct segment *seg;
	ssize_t got;
	int err;

	err = seg_path(path, sizeof(path), dir, id);
	if (err)
		return err;
	seg = calloc(1, sizeof(*seg));
	if (!seg)
		return -ENOMEM;
	err = seg_open_file(io, path, &seg->file);
	if (err)
		goto out_free;
	got = io->ops->read(seg->file, h, sizeof(h), 0);
	err = got < 0 ? (int)got : seg_header_check(h, (size_t)got, id, seg);
	if (err)
		goto out_close;
	seg->io = io;
	*out = seg;
	return 0;

out_close:
	io->ops->close(seg->file);
out_free:
	free(seg);
	return err;
}

void seg_close(struct segment *seg)
{
	if (!seg)
		return;
	seg->io->ops->close(seg->file);
	free(seg);
}

int seg_remove(struct bio *io, const char *dir, uint32_t id)
{
	char path[PATH_MAX];
	int err;

	err = seg_path(path, sizeof(path), dir, id);
	if (!err)
		err = io->ops->unlink(io, path);
	if (!err)
		err = io->ops->fsync_dir(io, dir);
	return err;
}

/* ---- records ---- */

static uint64_t rec_csum(const uint8_t *rec, uint32_t len, uint64_t salt)
{
	return XXH3_64bits_withSeed(rec + RH_TYPE,
				    REC_HEADER_SIZE - RH_TYPE + (size_t)len, salt);
}

uint32_t seg_encode(void *dst, uint64_t salt, uint8_t type, uint8_t flags,
		    uint64_t txn, const struct iovec *payload, int n)
{
	uint8_t *rec = dst, *p = rec + REC_HEADER_SIZE;
	uint32_t len = 0, size;

	for (int i = 0; i < n; i++) {
		if (payload[i].iov_len)
			memcpy(p, payload[i].iov_base, payload[i].iov_len);
		p += payload[i].iov_len;
		len += (uint32_t)payload[i].iov_len;
	}
	size = rec_size(len);
	memset(p, 0, size - REC_HEADER_SIZE - len);
	rec[RH_TYPE] = type;
	rec[RH_FLAGS] = flags;
	put_le16(rec + RH_RESERVED, 0);
	put_le32(rec + RH_LEN, len);
	put_le64(rec + RH_TXN, txn);
	put_le64(rec + RH_CSUM, rec_csum(rec, len, salt));
	return size;
}

__attribute__((format(printf, 4, 5)))
static int rec_corrupt(const struct segment *seg, uint64_t off, bool quiet,
		       const char *fmt, ...)
{
	char why[256];
	va_list ap;

	if (quiet)
		return BARREL_E_CORRUPT;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	barrel_log(BLOG_ERR, "corrupt record: seg=%" PRIu32 " off=%" PRIu64
		   ": %s", seg->id, off, why);
	return BARREL_E_CORRUPT;
}

static bool rec_type_known(uint8_t type)
{
	return type >= REC_PUT && type <= REC_CHECKPOINT;
}

/* Largest payload a record at off may claim: it must fit have and seg. */
static uint64_t rec_len_limit(const struct segment *seg, uint64_t off,
			      size_t have)
{
	uint64_t limit = REC_MAX_PAYLOAD;

	if (have - REC_HEADER_SIZE < limit)
		limit = have - REC_HEADER_SIZE;
	if (seg->capacity - off - REC_HEADER_SIZE < limit)
		limit = seg->capacity - off - REC_HEADER_SIZE;
	return limit;
}

static void rec_decode(const uint8_t *rec, struct rec_hdr *h)
{
	h->csum = get_le64(rec + RH_CSUM);
	h->type = rec[RH_TYPE];
	h->flags = rec[RH_FLAGS];
	h->len = get_le32(rec + RH_LEN);
	h->txn = get_le64(rec + RH_TXN);
}

int rec_validate(const struct segment *seg, uint64_t off, const void *buf,
		 size_t have, bool quiet, struct rec_hdr *hdr)
{
	const uint8_t *rec = buf;
	struct rec_hdr h;
	uint64_t limit;

	if (off < SEG_HEADER_SIZE || off % REC_ALIGN || off > seg->capacity ||
	    seg->capacity - off < REC_HEADER_SIZE)
		return rec_corrupt(seg, off, quiet, "bad offset (capacity %"
				   PRIu64 ")", seg->capacity);
	if (have < REC_HEADER_SIZE)
		return rec_corrupt(seg, off, quiet, "short header (have %zu, "
				   "expect >= %u)", have, REC_HEADER_SIZE);
	rec_decode(rec, &h);
	if (!rec_type_known(h.type))
		return rec_corrupt(seg, off, quiet, "unknown type %u", h.type);
	if (get_le16(rec + RH_RESERVED))
		return rec_corrupt(seg, off, quiet, "reserved bits set");
	limit = rec_len_limit(seg, off, have);
	if (h.len > limit)
		return rec_corrupt(seg, off, quiet, "bad length (have %" PRIu32
				   ", expect <= %" PRIu64 ")", h.len, limit);
	if (rec_csum(rec, h.len, seg->salt) != h.csum)
		return rec_corrupt(seg, off, quiet, "checksum mismatch");
	*hdr = h;
	return 0;
}

/* What the index promised about a record seg_read() validated. */
static int rec_check_read(const struct segment *seg, uint64_t off,
			  const struct rec_hdr *h, uint32_t size,
			  uint8_t want_type)
{
	if (rec_size(h->len) != size)
		return rec_corrupt(seg, off, false, "size mismatch (have %"
				   PRIu32 ", expect %" PRIu32 ")",
				   rec_size(h->len), size);
	if (want_type && h->type != want_type)
		return rec_corrupt(seg, off, false, "wrong type (have %u, "
				   "expect %u)", h->type, want_type);
	return 0;
}

int seg_read(const struct segment *seg, uint64_t off, uint32_t size,
	     uint8_t want_type, struct rec_hdr *hdr, void **payload)
{
	uint8_t *buf;
	ssize_t got;
	int err;

	if (size < REC_HEADER_SIZE || size > rec_size(REC_MAX_PAYLOAD) ||
	    size % REC_ALIGN)
		return rec_corrupt(seg, off, false, "bad size %" PRIu32, size);
	buf = malloc(size);
	if (!buf)
		return -ENOMEM;
	got = seg->io->ops->read(seg->file, buf, size, off);
	if (got < 0) {
		err = (int)got;
		goto out_free;
	}
	err = rec_validate(seg, off, buf, (size_t)got, false, hdr);
	if (!err)
		err = rec_check_read(seg, off, hdr, size, want_type);
	if (err)
		goto out_free;
	memmove(buf, buf + REC_HEADER_SIZE, hdr->len);
	*payload = buf;
	return 0;

out_free:
	free(buf);
	return err;
}

/* ---- sequential scan ---- */

void seg_scan_init(struct seg_scan *s, const struct segment *seg,
		   uint64_t from, bool quiet)
{
	memset(s, 0, sizeof(*s));
	s->seg = seg;
	s->off = from < SEG_HEADER_SIZE ? SEG_HEADER_SIZE : from;
	s->quiet = quiet;
}

void seg_scan_release(struct seg_scan *s)
{
	free(s->buf);
	s->buf = NULL;
	s->buf_size = s->buf_len = 0;
}

/*
 * Make the window start at or before s->off and hold need bytes from it
 * (fewer at the end of the file); never reads past the capacity.
 */
static int scan_fill(struct seg_scan *s, size_t need)
{
	uint64_t room = s->seg->capacity - s->off;
	size_t want = need > SCAN_WINDOW ? need : SCAN_WINDOW;
	ssize_t got;

	if (s->buf && s->off >= s->buf_off &&
	    s->off + need <= s->buf_off + s->buf_len)
		return 0;
	if (want > room)
		want = (size_t)room;
	if (want > s->buf_size) {
		uint8_t *b = realloc(s->buf, want);

		if (!b)
			return -ENOMEM;
		s->buf = b;
		s->buf_size = want;
	}
	got = s->seg->io->ops->read(s->seg->file, s->buf, want, s->off);
	if (got < 0)
		return (int)got;
	s->buf_off = s->off;
	s->buf_len = (size_t)got;
	return 0;
}

/* The payload length the header at s->off claims, if it is plausible. */
static size_t scan_need(const struct seg_scan *s)
{
	const uint8_t *rec = s->buf + (s->off - s->buf_off);
	size_t have = s->buf_len - (size_t)(s->off - s->buf_off);
	uint32_t len;

	if (have < REC_HEADER_SIZE)
		return REC_HEADER_SIZE;
	len = get_le32(rec + RH_LEN);
	if (len > REC_MAX_PAYLOAD ||
	    REC_HEADER_SIZE + (uint64_t)len > s->seg->capacity - s->off)
		return REC_HEADER_SIZE;   /* rec_validate() will say why */
	return REC_HEADER_SIZE + len;
}

int seg_scan_next(struct seg_scan *s, struct rec_hdr *hdr,
		  const void **payload, uint64_t *off)
{
	const uint64_t capacity = s->seg->capacity;
	const uint8_t *rec;
	size_t have;
	int err;

	if (s->off >= capacity || capacity - s->off < REC_HEADER_SIZE)
		return 0;
	err = scan_fill(s, REC_HEADER_SIZE);
	if (!err)
		err = scan_fill(s, scan_need(s));
	if (err)
		return err;
	rec = s->buf + (s->off - s->buf_off);
	have = s->buf_len - (size_t)(s->off - s->buf_off);
	if (rec_validate(s->seg, s->off, rec, have, s->quiet, hdr))
		return 0;
	*payload = rec + REC_HEADER_SIZE;
	*off = s->off;
	s->off += rec_size(hdr->len);
	return 1;
}
