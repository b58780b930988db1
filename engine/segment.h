/*
 * Segments: append-only files of checksummed records (FORMAT.md).
 *
 * A segment is DBDIR/NNNNNNNN.seg (8 decimal digits of its id). It starts
 * with a 64-byte header naming its id and a random salt; records follow at
 * 8-byte aligned offsets. Every record's checksum is XXH3-64 seeded with the
 * salt, so records left over from an earlier use of the same bytes never
 * validate. A record address (bptr) packs segment id and offset.
 *
 * This module reads and validates; it never decides what a record means.
 * Appending is done by the database writer (db.c) with seg_encode() and
 * the I/O table, because it batches writes across records.
 */
#ifndef BARREL_SEGMENT_H
#define BARREL_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "engine/io.h"

#define SEG_HEADER_SIZE 64u
#define REC_HEADER_SIZE 24u
#define REC_ALIGN 8u
#define SEG_MIN_SIZE (64u << 10)
#define SEG_MAX_SIZE (64u << 20)
/* Largest payload one record may carry (bigger values are blobs). */
#define REC_MAX_PAYLOAD (16u << 20)

enum rec_type {
	REC_PUT = 1,        /* a table entry written */
	REC_DEL = 2,        /* a table entry removed */
	REC_BLOB = 3,       /* one chunk of a blob's bytes */
	REC_NODE = 4,       /* a B-tree node, written by a checkpoint */
	REC_COMMIT = 5,     /* ends a transaction: its records are now valid */
	REC_CHECKPOINT = 6, /* roots of every index, counters, segment table */
};

/* Decoded frame of a record (FORMAT.md "Record"). */
struct rec_hdr {
	uint64_t csum;
	uint8_t type;
	uint8_t flags;
	uint32_t len;     /* payload bytes, excluding header and padding */
	uint64_t txn;     /* transaction number; 0 for records outside one */
};

/* A record address: segment id in the high 32 bits, offset in the low. */
typedef uint64_t bptr;
static inline bptr bptr_make(uint32_t seg, uint32_t off)
{
	return ((uint64_t)seg << 32) | off;
}
static inline uint32_t bptr_seg(bptr p) { return (uint32_t)(p >> 32); }
static inline uint32_t bptr_off(bptr p) { return (uint32_t)p; }

/* Bytes a record with len payload bytes takes on disk, padding included. */
static inline uint32_t rec_size(uint32_t len)
{
	return (REC_HEADER_SIZE + len + REC_ALIGN - 1) & ~(REC_ALIGN - 1);
}

struct segment {
	uint32_t id;
	uint64_t salt;
	uint64_t capacity;       /* bytes reserved for the file */
	struct bio_file *file;   /* owned */
	struct bio *io;          /* borrowed */
};

/* "DIR/NNNNNNNN.seg" into buf; returns 0 or -ENAMETOOLONG. */
int seg_path(char *buf, size_t size, const char *dir, uint32_t id);

/* Parse a file name "NNNNNNNN.seg"; true and *id set when it is one. */
bool seg_parse_name(const char *name, uint32_t *id);

/*
 * Create segment id in dir: reserve capacity bytes, write and fsync the
 * header, fsync the directory. -EEXIST if the file exists. On success
 * *out is owned by the caller (seg_close()).
 */
int seg_create(struct bio *io, const char *dir, uint32_t id, uint64_t salt,
	       uint64_t capacity, struct segment **out);

/*
 * Open an existing segment and validate its header: BARREL_E_CORRUPT
 * (logged) when the header does not validate or names another id,
 * BARREL_E_VERSION for an unknown format version.
 */
int seg_open(struct bio *io, const char *dir, uint32_t id,
	     struct segment **out);

void seg_close(struct segment *seg);

/* Unlink the file of segment id and fsync dir. */
int seg_remove(struct bio *io, const char *dir, uint32_t id);

/*
 * Frame a record into dst, which has room for rec_size(len) bytes, where
 * len is the sum of the payload pieces. Padding is zeroed. Returns the
 * framed size.
 */
uint32_t seg_encode(void *dst, uint64_t salt, uint8_t type, uint8_t flags,
		    uint64_t txn, const struct iovec *payload, int n);

/*
 * THE validation function: every record read from disk passes here before
 * any field of it is used. buf holds `have` bytes read at offset off of
 * seg. Checks, in order: the header fits, the type is known, reserved bits
 * are zero, the length fits in `have` and in the segment, the checksum.
 * On failure logs "corrupt record: seg=S off=O: REASON" (unless quiet)
 * and returns BARREL_E_CORRUPT. On success fills *hdr; the payload is at
 * buf + REC_HEADER_SIZE.
 */
int rec_validate(const struct segment *seg, uint64_t off, const void *buf,
		 size_t have, bool quiet, struct rec_hdr *hdr);

/*
 * Read the record at off whose framed size is size (known from the index
 * that points at it) and validate it. *payload is malloc'ed and owned by
 * the caller; *hdr describes it. BARREL_E_CORRUPT when it does not
 * validate or its type is not want_type (0 accepts any).
 */
int seg_read(const struct segment *seg, uint64_t off, uint32_t size,
	     uint8_t want_type, struct rec_hdr *hdr, void **payload);

/*
 * Sequential scan of a segment from an offset, reading ahead in large
 * blocks. It ends at the first record that does not validate (quietly:
 * an unwritten or torn tail is expected) or at the end of the capacity.
 */
struct seg_scan {
	const struct segment *seg;
	uint64_t off;        /* offset of the next record */
	uint8_t *buf;        /* read-ahead window, owned */
	size_t buf_size;
	uint64_t buf_off;    /* file offset of buf[0] */
	size_t buf_len;      /* valid bytes in buf */
	bool quiet;          /* do not log the record that ends the scan */
};

void seg_scan_init(struct seg_scan *s, const struct segment *seg,
		   uint64_t from, bool quiet);
/*
 * Next record: returns 1 with *hdr, *payload (borrowed until the next call)
 * and *off (its offset); 0 at the end (s->off is then the first offset
 * past the last valid record); -errno on an I/O error.
 */
int seg_scan_next(struct seg_scan *s, struct rec_hdr *hdr,
		  const void **payload, uint64_t *off);
void seg_scan_release(struct seg_scan *s);

#endif
