#include "config.h"

#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "engine/error.h"
#include "engine/io.h"
#include "engine/log.h"
#include "engine/segment.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#define SALT 0x0123456789abcdefull
#define CAP (64u << 10)

/* Loop tests run on both implementations: 0 io_uring (tmp dir), 1 fault. */
enum { IMPL_URING, IMPL_FAULT, IMPL_COUNT };

static struct bio *io;
static char dir[256];
static bool on_disk;

/* The last message logged, and how many were. */
static char last_log[1024];
static int nlogs;

static void capture(void *arg, enum barrel_log_level lvl, const char *msg)
{
	(void)arg;
	(void)lvl;
	snprintf(last_log, sizeof(last_log), "%s", msg);
	nlogs++;
}

static void env_open_seed(int impl, uint64_t seed)
{
	on_disk = impl == IMPL_URING;
	if (on_disk) {
		const char *tmp = getenv("TMPDIR");

		snprintf(dir, sizeof(dir), "%s/barrel-seg-XXXXXX",
			 tmp ? tmp : "/tmp");
		ck_assert_ptr_nonnull(mkdtemp(dir));
		io = bio_uring_new();
	} else {
		snprintf(dir, sizeof(dir), "/db");
		io = bio_fault_new(seed);
		ck_assert_ptr_nonnull(io);
		ck_assert_int_eq(io->ops->mkdir(io, dir), 0);
		ck_assert_int_eq(io->ops->fsync_dir(io, "/"), 0);
	}
	ck_assert_ptr_nonnull(io);
	barrel_log_set_sink(capture, NULL);
	last_log[0] = 0;
	nlogs = 0;
}

static void env_open(int impl)
{
	env_open_seed(impl, 42);
}

static int rm_one(const char *path, const struct stat *st, int type,
		  struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(path);
}

static void env_close(void)
{
	io->ops->free(io);
	io = NULL;
	if (on_disk)
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	barrel_log_set_sink(NULL, NULL);
}

static void teardown(void)
{
#if defined(__SANITIZE_ADDRESS__)
	ck_assert_msg(__lsan_do_recoverable_leak_check() == 0,
		      "LeakSanitizer found leaks");
#endif
}

static struct segment *xcreate(uint32_t id, uint64_t salt, uint64_t cap)
{
	struct segment *seg = NULL;

	ck_assert_int_eq(seg_create(io, dir, id, salt, cap, &seg), 0);
	ck_assert_ptr_nonnull(seg);
	return seg;
}

/* The path of segment id, in one of two rotating buffers. */
static const char *seg_file(uint32_t id)
{
	static char paths[2][512];
	static unsigned k;
	char *path = paths[k++ % 2];

	ck_assert_int_eq(seg_path(path, sizeof(paths[0]), dir, id), 0);
	return path;
}

/* Write bytes at off of seg's file, synced. */
static void put(const struct segment *seg, uint64_t off, const void *buf,
		size_t len)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct bio_write w = { seg->file, &iov, 1, off };

	ck_assert_int_eq(io->ops->write_batch(io, &w, 1, true), 0);
}

/* Encode a record of len bytes of fill into buf; returns its size. */
static uint32_t make_rec(void *buf, uint64_t salt, uint8_t type, uint64_t txn,
			 uint32_t len, int fill)
{
	static uint8_t payload[REC_MAX_PAYLOAD];
	struct iovec iov = { payload, len };

	memset(payload, fill, len);
	return seg_encode(buf, salt, type, 0, txn, &iov, 1);
}

/* Segment file names are 8 decimal digits and ".seg", both ways. */
START_TEST(test_names)
{
	char buf[64];
	uint32_t id = 0;

	ck_assert_int_eq(seg_path(buf, sizeof(buf), "/d", 3), 0);
	ck_assert_str_eq(buf, "/d/00000003.seg");
	ck_assert_int_eq(seg_path(buf, 15, "/d", 3), -ENAMETOOLONG);
	ck_assert_int_eq(seg_path(buf, sizeof(buf), "/d", 100000000), -EINVAL);
	ck_assert(seg_parse_name("00000042.seg", &id));
	ck_assert_uint_eq(id, 42);
	ck_assert(seg_parse_name("99999999.seg", &id));
	ck_assert_uint_eq(id, 99999999);
	ck_assert(!seg_parse_name("0000042.seg", &id));
	ck_assert(!seg_parse_name("000000042.seg", &id));
	ck_assert(!seg_parse_name("00000042.seq", &id));
	ck_assert(!seg_parse_name("0000004a.seg", &id));
	ck_assert(!seg_parse_name("00000042.seg~", &id));
}
END_TEST

/* create writes the documented 64-byte header (the file grows as records
 * are appended; nothing is reserved ahead); open reads it back. */
START_TEST(test_create_open)
{
	struct segment *seg, *again = NULL;
	uint8_t h[64], want[64] = "BRLSEG\r\n";
	uint64_t size;

	env_open(_i);
	seg = xcreate(3, SALT, CAP);
	ck_assert_int_eq(io->ops->size(seg->file, &size), 0);
	ck_assert_uint_eq(size, SEG_HEADER_SIZE);
	ck_assert_int_eq(io->ops->read(seg->file, h, 64, 0), 64);
	want[8] = 2;                        /* version, LE */
	want[12] = 3;                       /* id */
	for (int i = 0; i < 8; i++)
		want[16 + i] = (uint8_t)(SALT >> (8 * i));
	want[24 + 2] = 1;                   /* 64 KiB = 0x10000 */
	for (int i = 0; i < 8; i++)
		want[56 + i] = (uint8_t)(XXH3_64bits(want, 56) >> (8 * i));
	ck_assert_mem_eq(h, want, 64);
	seg_close(seg);
	ck_assert_int_eq(seg_create(io, dir, 3, SALT, CAP, &again), -EEXIST);
	ck_assert_int_eq(seg_open(io, dir, 3, &seg), 0);
	ck_assert_uint_eq(seg->id, 3);
	ck_assert_uint_eq(seg->salt, SALT);
	ck_assert_uint_eq(seg->capacity, CAP);
	seg_close(seg);
	ck_assert_int_eq(seg_open(io, dir, 4, &again), -ENOENT);
	ck_assert_int_eq(seg_create(io, dir, 5, SALT, 100, &again),
			 BARREL_E_INVALID);
	ck_assert_int_eq(nlogs, 0);
	env_close();
}
END_TEST

/* A flipped bit anywhere in the header fails open (CORRUPT or VERSION). */
START_TEST(test_header_bit_flips)
{
	struct segment *seg;

	env_open(IMPL_FAULT);
	seg_close(xcreate(3, SALT, CAP));
	for (int byte = 0; byte < 64; byte++) {
		int want = byte >= 8 && byte < 12 ? BARREL_E_VERSION
						  : BARREL_E_CORRUPT;

		ck_assert_int_eq(bio_fault_flip(io, seg_file(3), byte, byte % 8), 0);
		nlogs = 0;
		ck_assert_int_eq(seg_open(io, dir, 3, &seg), want);
		ck_assert_int_eq(nlogs, 1);
		ck_assert_int_eq(bio_fault_flip(io, seg_file(3), byte, byte % 8), 0);
	}
	ck_assert_int_eq(seg_open(io, dir, 3, &seg), 0);
	seg_close(seg);
	env_close();
}
END_TEST

/* Rewrite the header of segment 3 with field edits and a valid checksum. */
static void forge_header(struct segment *seg, int at, uint8_t val)
{
	uint8_t h[64];
	uint64_t c;

	ck_assert_int_eq(io->ops->read(seg->file, h, 64, 0), 64);
	h[at] = val;
	c = XXH3_64bits(h, 56);
	for (int i = 0; i < 8; i++)
		h[56 + i] = (uint8_t)(c >> (8 * i));
	put(seg, 0, h, 64);
}

/* Version 3 or 0, a short file, another id or a bad capacity: what open
 * says. */
START_TEST(test_header_errors)
{
	struct segment *seg, *o = NULL;
	struct bio_file *f;

	env_open(IMPL_FAULT);
	seg = xcreate(3, SALT, CAP);
	forge_header(seg, 8, 3);
	ck_assert_int_eq(seg_open(io, dir, 3, &o), BARREL_E_VERSION);
	ck_assert_str_eq(last_log, "segment seg=3: unknown format version 3 "
			 "(expect 1 to 2)");
	forge_header(seg, 8, 0);
	ck_assert_int_eq(seg_open(io, dir, 3, &o), BARREL_E_VERSION);
	forge_header(seg, 8, 1);          /* version 1 still opens */
	ck_assert_int_eq(seg_open(io, dir, 3, &o), 0);
	seg_close(o);
	o = NULL;
	forge_header(seg, 8, 2);
	forge_header(seg, 40, 1);
	ck_assert_int_eq(seg_open(io, dir, 3, &o), BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt segment header: seg=3: reserved "
			 "bytes set");
	forge_header(seg, 40, 0);
	forge_header(seg, 24, 3);     /* capacity 64 KiB + 3: misaligned */
	ck_assert_int_eq(seg_open(io, dir, 3, &o), BARREL_E_CORRUPT);
	forge_header(seg, 24, 0);
	seg_close(seg);
	ck_assert_int_eq(io->ops->rename(io, seg_file(3), seg_file(5)), 0);
	ck_assert_int_eq(seg_open(io, dir, 5, &o), BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt segment header: seg=5: wrong id "
			 "(have 3, expect 5)");
	ck_assert_int_eq(io->ops->open(io, seg_file(6), BIO_RDWR | BIO_CREATE,
				       &f), 0);
	io->ops->close(f);
	ck_assert_int_eq(seg_open(io, dir, 6, &o), BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt segment header: seg=6: short "
			 "header (have 0, expect 64)");
	env_close();
}
END_TEST

/* seg_encode lays out the documented 24-byte frame, padding zeroed. */
START_TEST(test_encode_layout)
{
	struct iovec iov[2] = { { "hel", 3 }, { "lo", 2 } };
	uint8_t buf[64];
	uint8_t want[24] = { 0 };
	uint64_t c;

	memset(buf, 0xee, sizeof(buf));
	ck_assert_uint_eq(rec_size(5), 32);
	ck_assert_uint_eq(rec_size(8), 32);
	ck_assert_uint_eq(rec_size(9), 40);
	ck_assert_uint_eq(seg_encode(buf, SALT, REC_PUT, 0x80, 0x1122334455ull,
				     iov, 2), 32);
	want[8] = REC_PUT;
	want[9] = 0x80;
	want[12] = 5;
	want[16] = 0x55; want[17] = 0x44; want[18] = 0x33; want[19] = 0x22;
	want[20] = 0x11;
	ck_assert_mem_eq(buf + 8, want + 8, 16);
	ck_assert_mem_eq(buf + 24, "hello\0\0\0", 8);
	ck_assert_uint_eq(buf[32], 0xee);   /* nothing past rec_size */
	c = XXH3_64bits_withSeed(buf + 8, 16 + 5, SALT);
	for (int i = 0; i < 8; i++)
		ck_assert_uint_eq(buf[i], (uint8_t)(c >> (8 * i)));
}
END_TEST

static struct segment fake = { .id = 3, .salt = SALT, .capacity = CAP };

/* Every validation failure is BARREL_E_CORRUPT with its exact log line. */
START_TEST(test_validate_reasons)
{
	static uint8_t buf[256];
	struct rec_hdr h;
	uint32_t n;

	barrel_log_set_sink(capture, NULL);
	n = make_rec(buf, SALT, REC_DEL, 9, 5, 'x');
	ck_assert_int_eq(rec_validate(&fake, 8192, buf, n, false, &h), 0);
	ck_assert_uint_eq(h.type, REC_DEL);
	ck_assert_uint_eq(h.len, 5);
	ck_assert_uint_eq(h.txn, 9);
	ck_assert_int_eq(rec_validate(&fake, 8192, buf, 10, false, &h),
			 BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt record: seg=3 off=8192: short "
			 "header (have 10, expect >= 24)");
	ck_assert_int_eq(rec_validate(&fake, 8196, buf, n, false, &h),
			 BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt record: seg=3 off=8196: bad offset "
			 "(capacity 65536)");
	ck_assert_int_eq(rec_validate(&fake, 0, buf, n, false, &h),
			 BARREL_E_CORRUPT);
	ck_assert_int_eq(rec_validate(&fake, CAP - 16, buf, n, false, &h),
			 BARREL_E_CORRUPT);
	buf[8] = 9;
	ck_assert_int_eq(rec_validate(&fake, 8192, buf, n, false, &h),
			 BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt record: seg=3 off=8192: unknown "
			 "type 9");
	buf[8] = REC_DEL;
	buf[11] = 0x40;
	ck_assert_int_eq(rec_validate(&fake, 8192, buf, n, false, &h),
			 BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt record: seg=3 off=8192: reserved "
			 "bits set");
	buf[11] = 0;
	ck_assert_int_eq(rec_validate(&fake, 8192, buf, 28, false, &h),
			 BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt record: seg=3 off=8192: bad length "
			 "(have 5, expect <= 4)");
	buf[0] ^= 1;
	ck_assert_int_eq(rec_validate(&fake, 8192, buf, n, false, &h),
			 BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt record: seg=3 off=8192: checksum "
			 "mismatch");
	nlogs = 0;
	ck_assert_int_eq(rec_validate(&fake, 8192, buf, n, true, &h),
			 BARREL_E_CORRUPT);
	ck_assert_int_eq(nlogs, 0);
	barrel_log_set_sink(NULL, NULL);
}
END_TEST

/* Lengths past REC_MAX_PAYLOAD or past the capacity are bad lengths. */
START_TEST(test_validate_length_limits)
{
	static uint8_t buf[256];
	struct rec_hdr h;
	uint32_t n = make_rec(buf, SALT, REC_PUT, 1, 8, 'y');
	struct segment big = { .id = 7, .salt = SALT, .capacity = 64u << 20 };

	barrel_log_set_sink(capture, NULL);
	/* 32 bytes fit exactly at the end of the segment */
	ck_assert_int_eq(rec_validate(&fake, CAP - 32, buf, n, false, &h), 0);
	ck_assert_int_eq(rec_validate(&fake, CAP - 24, buf, n, false, &h),
			 BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt record: seg=3 off=65512: bad length "
			 "(have 8, expect <= 0)");
	/* REC_MAX_PAYLOAD + 1, little-endian, in a big enough buffer */
	buf[12] = 0x01; buf[13] = 0x00; buf[14] = 0x00; buf[15] = 0x01;
	ck_assert_int_eq(rec_validate(&big, 64, buf, 32u << 20, false, &h),
			 BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt record: seg=7 off=64: bad length "
			 "(have 16777217, expect <= 16777216)");
	barrel_log_set_sink(NULL, NULL);
}
END_TEST

/* An all-zero header, the unwritten end of a segment, is not a record. */
START_TEST(test_validate_zeros)
{
	static const uint8_t zeros[64];
	struct rec_hdr h;

	barrel_log_set_sink(capture, NULL);
	ck_assert_int_eq(rec_validate(&fake, 64, zeros, sizeof(zeros), false,
				      &h), BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt record: seg=3 off=64: unknown "
			 "type 0");
	barrel_log_set_sink(NULL, NULL);
}
END_TEST

/* A flipped bit anywhere in header or payload fails validation. */
START_TEST(test_validate_every_bit)
{
	static uint8_t buf[128];
	uint32_t n = make_rec(buf, SALT, REC_NODE, 77, 37, 'z');
	struct rec_hdr h;

	ck_assert_uint_eq(n, 64);
	for (unsigned bit = 0; bit < (REC_HEADER_SIZE + 37) * 8; bit++) {
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		ck_assert_msg(rec_validate(&fake, 64, buf, n, true, &h) ==
			      BARREL_E_CORRUPT, "bit %u not detected", bit);
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	/* padding is outside the checksum, by design */
	buf[63] ^= 1;
	ck_assert_int_eq(rec_validate(&fake, 64, buf, n, true, &h), 0);
}
END_TEST

/* Records of a segment with another salt, at the same offsets, fail. */
START_TEST(test_other_salt)
{
	static uint8_t buf[256];
	struct segment *old, *cur;
	struct seg_scan s;
	struct rec_hdr h;
	const void *p;
	uint64_t off;
	uint32_t n;

	env_open(IMPL_FAULT);
	old = xcreate(3, 1111, CAP);
	cur = xcreate(4, 2222, CAP);
	n = make_rec(buf, old->salt, REC_PUT, 1, 100, 'o');
	put(old, 64, buf, n);
	put(cur, 64, buf, n);   /* stale bytes left from an earlier use */
	ck_assert_int_eq(rec_validate(old, 64, buf, n, false, &h), 0);
	ck_assert_int_eq(rec_validate(cur, 64, buf, n, false, &h),
			 BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt record: seg=4 off=64: checksum "
			 "mismatch");
	seg_scan_init(&s, cur, 0, true);
	ck_assert_int_eq(seg_scan_next(&s, &h, &p, &off), 0);
	ck_assert_uint_eq(s.off, 64);
	seg_scan_release(&s);
	seg_close(old);
	seg_close(cur);
	env_close();
}
END_TEST

/* Append n records of growing sizes from 64; returns the end offset. */
static uint64_t append_recs(struct segment *seg, int n)
{
	static uint8_t buf[8192];
	uint64_t off = SEG_HEADER_SIZE;

	for (int i = 0; i < n; i++) {
		uint32_t sz = make_rec(buf, seg->salt, REC_PUT + i % 6,
				       1000 + (uint64_t)i, (uint32_t)i * 13,
				       'a' + i % 26);

		put(seg, off, buf, sz);
		off += sz;
	}
	return off;
}

/* Check record i as append_recs() wrote it (len bytes of payload). */
static void check_rec_len(int i, const struct rec_hdr *h, const uint8_t *p,
			  uint32_t len)
{
	ck_assert_uint_eq(h->type, REC_PUT + i % 6);
	ck_assert_uint_eq(h->txn, 1000 + (uint64_t)i);
	ck_assert_uint_eq(h->len, len);
	for (uint32_t k = 0; k < h->len; k++)
		ck_assert_uint_eq(p[k], 'a' + i % 26);
}

static void check_rec(int i, const struct rec_hdr *h, const uint8_t *p)
{
	check_rec_len(i, h, p, (uint32_t)i * 13);
}

/* A scan returns every record in order and ends where the data ends. */
START_TEST(test_scan)
{
	struct segment *seg;
	struct seg_scan s;
	struct rec_hdr h;
	const void *p;
	uint64_t off, end, mid = 0;
	char want[128];
	int i = 0;

	env_open(_i);
	seg = xcreate(3, SALT, 256u << 10);
	end = append_recs(seg, 100);
	seg_scan_init(&s, seg, 0, true);
	while (seg_scan_next(&s, &h, &p, &off) == 1) {
		check_rec(i, &h, p);
		if (i == 50)
			mid = off;
		i++;
	}
	ck_assert_int_eq(i, 100);
	ck_assert_uint_eq(s.off, end);
	seg_scan_release(&s);
	seg_scan_init(&s, seg, mid, false);
	for (i = 50; seg_scan_next(&s, &h, &p, &off) == 1; i++)
		check_rec(i, &h, p);
	ck_assert_int_eq(i, 100);
	snprintf(want, sizeof(want), "corrupt record: seg=3 off=%" PRIu64
		 ": short header (have 0, expect >= 24)", end);
	ck_assert_str_eq(last_log, want);
	seg_scan_release(&s);
	seg_close(seg);
	env_close();
}
END_TEST

/* A record bigger than the read-ahead window is read whole. */
START_TEST(test_scan_big_record)
{
	static uint8_t buf[(3u << 20) + 64];
	struct segment *seg;
	struct seg_scan s;
	struct rec_hdr h;
	const void *p;
	uint64_t off, at;
	uint32_t n;

	env_open(_i);
	seg = xcreate(3, SALT, 8u << 20);
	at = append_recs(seg, 20);
	n = make_rec(buf, SALT, REC_BLOB, 5, 3u << 20, 'B');
	put(seg, at, buf, n);
	seg_scan_init(&s, seg, 0, true);
	for (int i = 0; i < 20; i++)
		ck_assert_int_eq(seg_scan_next(&s, &h, &p, &off), 1);
	ck_assert_int_eq(seg_scan_next(&s, &h, &p, &off), 1);
	ck_assert_uint_eq(off, at);
	ck_assert_uint_eq(h.len, 3u << 20);
	ck_assert_mem_eq(p, buf + REC_HEADER_SIZE, 3u << 20);
	ck_assert_int_eq(seg_scan_next(&s, &h, &p, &off), 0);
	ck_assert_uint_eq(s.off, at + n);
	seg_scan_release(&s);
	seg_close(seg);
	env_close();
}
END_TEST

/* A scan never reads past the capacity, even when the file goes on. */
START_TEST(test_scan_stops_at_capacity)
{
	static uint8_t buf[CAP];
	struct segment *seg;
	struct seg_scan s;
	struct rec_hdr h;
	const void *p;
	uint64_t off, size;
	uint32_t n;
	int count = 0;

	env_open(_i);
	seg = xcreate(3, SALT, CAP);
	/* one record filling the segment to the last byte */
	n = make_rec(buf, SALT, REC_PUT, 1, CAP - 64 - 24, 'f');
	put(seg, 64, buf, n);
	n = make_rec(buf, SALT, REC_PUT, 2, 8, 'g');
	put(seg, CAP, buf, n);   /* valid-looking bytes past the end */
	ck_assert_int_eq(io->ops->size(seg->file, &size), 0);
	ck_assert_uint_eq(size, CAP + 32);
	seg_scan_init(&s, seg, 0, false);
	while (seg_scan_next(&s, &h, &p, &off) == 1)
		count++;
	ck_assert_int_eq(count, 1);
	ck_assert_uint_eq(s.off, CAP);
	ck_assert_int_eq(nlogs, 0);
	seg_scan_release(&s);
	seg_close(seg);
	env_close();
}
END_TEST

/* A scan stops quietly at a torn tail: what it returns is what was written. */
START_TEST(test_scan_torn_tail)
{
	int short_scans = 0;

	for (uint64_t seed = 1; seed <= 32; seed++) {
		static uint8_t buf[4096];
		struct segment *seg;
		struct seg_scan s;
		struct rec_hdr h;
		const void *p;
		uint64_t off, synced;
		int i = 0;

		env_open_seed(IMPL_FAULT, seed);
		seg = xcreate(3, SALT, CAP);
		synced = append_recs(seg, 10);
		/* 3 unsynced records of 2 KiB, numbered on as append_recs() */
		for (int k = 10; k < 13; k++) {
			uint32_t n = make_rec(buf, SALT, REC_PUT + k % 6,
					      1000 + (uint64_t)k, 2000,
					      'a' + k % 26);
			struct iovec iov = { buf, n };
			struct bio_write w = { seg->file, &iov, 1, synced };

			ck_assert_int_eq(io->ops->write_batch(io, &w, 1, false), 0);
			synced += n;
		}
		bio_fault_crash(io);
		seg_close(seg);
		ck_assert_int_eq(seg_open(io, dir, 3, &seg), 0);
		nlogs = 0;
		seg_scan_init(&s, seg, 0, true);
		while (seg_scan_next(&s, &h, &p, &off) == 1) {
			check_rec_len(i, &h, p, i < 10 ? (uint32_t)i * 13 : 2000);
			i++;
		}
		ck_assert_int_ge(i, 10);
		ck_assert_int_le(i, 13);
		ck_assert_int_eq(nlogs, 0);
		short_scans += i < 13;
		seg_scan_release(&s);
		seg_close(seg);
		env_close();
	}
	ck_assert_int_gt(short_scans, 0);
}
END_TEST

/* seg_read returns the payload, and CORRUPT for a wrong size or type. */
START_TEST(test_read)
{
	static uint8_t buf[256];
	struct segment *seg;
	struct rec_hdr h;
	void *p = NULL;
	uint32_t n;

	env_open(_i);
	seg = xcreate(3, SALT, CAP);
	n = make_rec(buf, SALT, REC_COMMIT, 12, 50, 'r');
	put(seg, 128, buf, n);
	ck_assert_int_eq(seg_read(seg, 128, n, REC_COMMIT, &h, &p), 0);
	ck_assert_uint_eq(h.len, 50);
	ck_assert_uint_eq(h.txn, 12);
	ck_assert_mem_eq(p, buf + REC_HEADER_SIZE, 50);
	free(p);
	ck_assert_int_eq(seg_read(seg, 128, n, 0, &h, &p), 0);
	free(p);
	ck_assert_int_eq(seg_read(seg, 128, n, REC_PUT, &h, &p),
			 BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt record: seg=3 off=128: wrong type "
			 "(have 5, expect 1)");
	ck_assert_int_eq(seg_read(seg, 128, n + 8, 0, &h, &p), BARREL_E_CORRUPT);
	ck_assert_str_eq(last_log, "corrupt record: seg=3 off=128: size "
			 "mismatch (have 80, expect 88)");
	ck_assert_int_eq(seg_read(seg, 128, 16, 0, &h, &p), BARREL_E_CORRUPT);
	ck_assert_int_eq(seg_read(seg, 136, n, 0, &h, &p), BARREL_E_CORRUPT);
	seg_close(seg);
	env_close();
}
END_TEST

/* seg_remove deletes the file; a failed create leaves no file behind. */
START_TEST(test_remove_and_failed_create)
{
	struct segment *seg = NULL;

	env_open(IMPL_FAULT);
	seg_close(xcreate(3, SALT, CAP));
	ck_assert_int_eq(seg_remove(io, dir, 3), 0);
	ck_assert_int_eq(seg_open(io, dir, 3, &seg), -ENOENT);
	ck_assert_int_eq(seg_remove(io, dir, 3), -ENOENT);
	bio_fault_fail_fsync(io, 1);
	ck_assert_int_eq(seg_create(io, dir, 4, SALT, CAP, &seg), -EIO);
	ck_assert_int_eq(seg_open(io, dir, 4, &seg), -ENOENT);
	seg = xcreate(4, SALT, CAP);
	seg_close(seg);
	env_close();
}
END_TEST

static Suite *segment_suite(void)
{
	Suite *s = suite_create("segment");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_names);
	tcase_add_loop_test(tc, test_create_open, 0, IMPL_COUNT);
	tcase_add_test(tc, test_header_bit_flips);
	tcase_add_test(tc, test_header_errors);
	tcase_add_test(tc, test_encode_layout);
	tcase_add_test(tc, test_validate_reasons);
	tcase_add_test(tc, test_validate_length_limits);
	tcase_add_test(tc, test_validate_zeros);
	tcase_add_test(tc, test_validate_every_bit);
	tcase_add_test(tc, test_other_salt);
	tcase_add_loop_test(tc, test_scan, 0, IMPL_COUNT);
	tcase_add_loop_test(tc, test_scan_big_record, 0, IMPL_COUNT);
	tcase_add_loop_test(tc, test_scan_stops_at_capacity, 0, IMPL_COUNT);
	tcase_add_test(tc, test_scan_torn_tail);
	tcase_add_loop_test(tc, test_read, 0, IMPL_COUNT);
	tcase_add_test(tc, test_remove_and_failed_create);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(segment_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
