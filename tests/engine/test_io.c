#include "config.h"

#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine/io.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

/*
 * Loop tests run once per implementation: _i == IMPL_URING on a temporary
 * directory, _i == IMPL_FAULT in memory. Both go through the same table.
 */
enum { IMPL_URING, IMPL_FAULT, IMPL_COUNT };

static struct bio *io;
static char root[256];
static bool on_disk;

static void env_open(int impl, uint64_t seed)
{
	on_disk = impl == IMPL_URING;
	if (on_disk) {
		const char *tmp = getenv("TMPDIR");

		snprintf(root, sizeof(root), "%s/barrel-io-XXXXXX",
			 tmp ? tmp : "/tmp");
		ck_assert_ptr_nonnull(mkdtemp(root));
		io = bio_uring_new();
	} else {
		snprintf(root, sizeof(root), "/t");
		io = bio_fault_new(seed);
		ck_assert_ptr_nonnull(io);
		ck_assert_int_eq(io->ops->mkdir(io, root), 0);
		ck_assert_int_eq(io->ops->fsync_dir(io, "/"), 0);
	}
	ck_assert_ptr_nonnull(io);
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
		nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void teardown(void)
{
#if defined(__SANITIZE_ADDRESS__)
	ck_assert_msg(__lsan_do_recoverable_leak_check() == 0,
		      "LeakSanitizer found leaks");
#endif
}

/* root/name, in one of a few rotating buffers. */
static const char *P(const char *name)
{
	static char bufs[4][512];
	static unsigned k;
	char *b = bufs[k++ % 4];

	ck_assert_int_lt(snprintf(b, sizeof(bufs[0]), "%s/%s", root, name),
			 (int)sizeof(bufs[0]));
	return b;
}

static struct bio_file *xopen(const char *name, int flags)
{
	struct bio_file *f = NULL;

	ck_assert_int_eq(io->ops->open(io, P(name), flags, &f), 0);
	ck_assert_ptr_nonnull(f);
	return f;
}

static int write1(struct bio_file *f, uint64_t off, const void *buf,
		  size_t len, bool sync)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct bio_write w = { .file = f, .iov = &iov, .iovcnt = 1, .off = off };

	return io->ops->write_batch(io, &w, 1, sync);
}

static void expect_bytes(struct bio_file *f, uint64_t off, const void *want,
			 size_t len)
{
	char *got = malloc(len + 1);

	ck_assert_ptr_nonnull(got);
	ck_assert_int_eq(io->ops->read(f, got, len, off), (ssize_t)len);
	ck_assert_mem_eq(got, want, len);
	free(got);
}

static uint64_t fsize(struct bio_file *f)
{
	uint64_t len = UINT64_MAX;

	ck_assert_int_eq(io->ops->size(f, &len), 0);
	return len;
}

/* A write lands at its offset, the gap reads as zeros, reads stop at EOF. */
START_TEST(test_write_read)
{
	char buf[64], zero[100] = { 0 };
	struct bio_file *f;
	uint64_t before;

	env_open(_i, 1);
	f = xopen("a", BIO_RDWR | BIO_CREATE);
	before = io->ops->bytes_written(io);
	ck_assert_int_eq(write1(f, 100, "hello", 5, false), 0);
	ck_assert_uint_eq(io->ops->bytes_written(io) - before, 5);
	ck_assert_uint_eq(fsize(f), 105);
	expect_bytes(f, 0, zero, 100);
	expect_bytes(f, 100, "hello", 5);
	ck_assert_int_eq(io->ops->read(f, buf, sizeof(buf), 102), 3);
	ck_assert_mem_eq(buf, "llo", 3);
	ck_assert_int_eq(io->ops->read(f, buf, sizeof(buf), 105), 0);
	ck_assert_int_eq(io->ops->read(f, buf, sizeof(buf), 4096), 0);
	ck_assert_int_eq(io->ops->fsync(f), 0);
	io->ops->close(f);
	env_close();
}
END_TEST

/* A synced batch gathers iovecs and writes to several files in order. */
START_TEST(test_batch_two_files)
{
	struct iovec a[3] = { { "ab", 2 }, { "", 0 }, { "cdef", 4 } };
	struct iovec b[1] = { { "XYZ", 3 } };
	struct iovec a2[1] = { { "Q", 1 } };
	struct bio_file *fa, *fb;
	struct bio_write w[3];
	uint64_t before;

	env_open(_i, 2);
	fa = xopen("a", BIO_RDWR | BIO_CREATE);
	fb = xopen("b", BIO_RDWR | BIO_CREATE);
	w[0] = (struct bio_write){ fa, a, 3, 0 };
	w[1] = (struct bio_write){ fb, b, 1, 10 };
	w[2] = (struct bio_write){ fa, a2, 1, 1 };   /* after w[0]: wins */
	before = io->ops->bytes_written(io);
	ck_assert_int_eq(io->ops->write_batch(io, w, 3, true), 0);
	ck_assert_uint_eq(io->ops->bytes_written(io) - before, 10);
	expect_bytes(fa, 0, "aQcdef", 6);
	ck_assert_uint_eq(fsize(fb), 13);
	expect_bytes(fb, 10, "XYZ", 3);
	ck_assert_int_eq(io->ops->write_batch(io, w, 0, true), 0);
	io->ops->close(fa);
	io->ops->close(fb);
	env_close();
}
END_TEST

/* A batch longer than the ring keeps its order: the last write wins. */
START_TEST(test_batch_longer_than_ring)
{
	enum { N = 300 };
	static struct iovec iov[N];
	static struct bio_write w[N];
	static char val[N][8];
	struct bio_file *f, *g;
	char want[16];
	uint64_t before;

	env_open(_i, 3);
	f = xopen("f", BIO_RDWR | BIO_CREATE);
	g = xopen("g", BIO_RDWR | BIO_CREATE);
	for (int i = 0; i < N; i++) {
		snprintf(val[i], sizeof(val[i]), "%07u", (unsigned)i % 10000000u);
		iov[i] = (struct iovec){ val[i], 8 };
		/* all overlap at 0 in f; g gets one slot per write */
		w[i] = (struct bio_write){ i % 2 ? g : f, &iov[i], 1,
					   i % 2 ? (uint64_t)i * 8 : 0 };
	}
	before = io->ops->bytes_written(io);
	ck_assert_int_eq(io->ops->write_batch(io, w, N, true), 0);
	ck_assert_uint_eq(io->ops->bytes_written(io) - before, N * 8);
	snprintf(want, sizeof(want), "%07d", N - 2);
	expect_bytes(f, 0, want, 8);
	for (int i = 1; i < N; i += 2)
		expect_bytes(g, (uint64_t)i * 8, val[i], 8);
	io->ops->close(f);
	io->ops->close(g);
	env_close();
}
END_TEST

/* CREATE, EXCL and read-only opens fail as open(2) does. */
START_TEST(test_open_flags)
{
	struct bio_file *f = NULL;

	env_open(_i, 4);
	ck_assert_int_eq(io->ops->open(io, P("nope"), BIO_RDWR, &f), -ENOENT);
	ck_assert_int_eq(io->ops->open(io, P("x/y"), BIO_RDWR | BIO_CREATE, &f),
			 -ENOENT);
	f = xopen("a", BIO_RDWR | BIO_CREATE | BIO_EXCL);
	io->ops->close(f);
	ck_assert_int_eq(io->ops->open(io, P("a"), BIO_RDWR | BIO_CREATE |
				       BIO_EXCL, &f), -EEXIST);
	f = xopen("a", BIO_RDONLY);
	ck_assert_int_eq(write1(f, 0, "x", 1, false), -EBADF);
	io->ops->close(f);
	ck_assert_int_eq(io->ops->open(io, root, BIO_RDWR, &f), -EISDIR);
	env_close();
}
END_TEST

struct names {
	int count, stop_after, ret;
	char seen[8][16];
};

static int collect(void *arg, const char *name)
{
	struct names *n = arg;

	if (n->count < 8)
		snprintf(n->seen[n->count], sizeof(n->seen[0]), "%s", name);
	n->count++;
	return n->count == n->stop_after ? n->ret : 0;
}

static bool has_name(const struct names *n, const char *name)
{
	for (int i = 0; i < n->count && i < 8; i++)
		if (!strcmp(n->seen[i], name))
			return true;
	return false;
}

/* list names every entry once, skips . and .., and stops when told. */
START_TEST(test_list)
{
	struct names n = { 0 };

	env_open(_i, 5);
	io->ops->close(xopen("a", BIO_RDWR | BIO_CREATE));
	io->ops->close(xopen("b", BIO_RDWR | BIO_CREATE));
	ck_assert_int_eq(io->ops->mkdir(io, P("d")), 0);
	ck_assert_int_eq(io->ops->list(io, root, collect, &n), 0);
	ck_assert_int_eq(n.count, 3);
	ck_assert(has_name(&n, "a") && has_name(&n, "b") && has_name(&n, "d"));
	n = (struct names){ .stop_after = 1, .ret = 1 };
	ck_assert_int_eq(io->ops->list(io, root, collect, &n), 0);
	ck_assert_int_eq(n.count, 1);
	n = (struct names){ .stop_after = 2, .ret = -EINTR };
	ck_assert_int_eq(io->ops->list(io, root, collect, &n), -EINTR);
	ck_assert_int_eq(n.count, 2);
	ck_assert_int_eq(io->ops->list(io, P("none"), collect, &n), -ENOENT);
	env_close();
}
END_TEST

/* rename replaces its target; unlink, mkdir and rmdir report errno. */
START_TEST(test_rename_unlink_dirs)
{
	struct bio_file *f = NULL;

	env_open(_i, 6);
	f = xopen("a", BIO_RDWR | BIO_CREATE);
	ck_assert_int_eq(write1(f, 0, "AAAA", 4, true), 0);
	io->ops->close(f);
	f = xopen("b", BIO_RDWR | BIO_CREATE);
	ck_assert_int_eq(write1(f, 0, "BB", 2, true), 0);
	io->ops->close(f);
	ck_assert_int_eq(io->ops->rename(io, P("a"), P("b")), 0);
	ck_assert_int_eq(io->ops->open(io, P("a"), BIO_RDONLY, &f), -ENOENT);
	f = xopen("b", BIO_RDONLY);
	ck_assert_uint_eq(fsize(f), 4);
	expect_bytes(f, 0, "AAAA", 4);
	io->ops->close(f);
	ck_assert_int_eq(io->ops->rename(io, P("a"), P("c")), -ENOENT);
	ck_assert_int_eq(io->ops->mkdir(io, P("d")), 0);
	ck_assert_int_eq(io->ops->mkdir(io, P("d")), -EEXIST);
	ck_assert_int_eq(io->ops->rename(io, P("b"), P("d/b")), 0);
	ck_assert_int_eq(io->ops->rmdir(io, P("d")), -ENOTEMPTY);
	ck_assert_int_eq(io->ops->unlink(io, P("d/b")), 0);
	ck_assert_int_eq(io->ops->unlink(io, P("d/b")), -ENOENT);
	ck_assert_int_eq(io->ops->rmdir(io, P("d")), 0);
	ck_assert_int_eq(io->ops->fsync_dir(io, root), 0);
	ck_assert_int_eq(io->ops->fsync_dir(io, P("d")), -ENOENT);
	env_close();
}
END_TEST

/* A second open cannot lock a locked file until the first one closes. */
START_TEST(test_lock_conflict)
{
	struct bio_file *a, *b;

	env_open(_i, 7);
	a = xopen("lock", BIO_RDWR | BIO_CREATE);
	b = xopen("lock", BIO_RDWR);
	ck_assert_int_eq(io->ops->lock(a), 0);
	ck_assert_int_eq(io->ops->lock(a), 0);
	ck_assert_int_eq(io->ops->lock(b), -EWOULDBLOCK);
	io->ops->close(a);
	ck_assert_int_eq(io->ops->lock(b), 0);
	io->ops->close(b);
	env_close();
}
END_TEST

/* allocate extends with zeros and never shrinks; truncate sets the size. */
START_TEST(test_allocate_truncate)
{
	static const char zero[8192];
	struct bio_file *f;

	env_open(_i, 8);
	f = xopen("a", BIO_RDWR | BIO_CREATE);
	ck_assert_int_eq(io->ops->allocate(f, 8192), 0);
	ck_assert_uint_eq(fsize(f), 8192);
	expect_bytes(f, 0, zero, 8192);
	ck_assert_int_eq(write1(f, 0, "data", 4, false), 0);
	ck_assert_int_eq(io->ops->allocate(f, 100), 0);
	ck_assert_uint_eq(fsize(f), 8192);
	ck_assert_int_eq(io->ops->truncate(f, 2), 0);
	ck_assert_uint_eq(fsize(f), 2);
	ck_assert_int_eq(io->ops->truncate(f, 6), 0);
	expect_bytes(f, 0, "da\0\0\0\0", 6);
	io->ops->close(f);
	env_close();
}
END_TEST

struct reader_arg {
	struct bio_file *f;
	unsigned seed;
	int bad;
};

static void *reader(void *p)
{
	struct reader_arg *a = p;
	uint32_t v;

	for (int i = 0; i < 2000; i++) {
		uint32_t k = (uint32_t)rand_r(&a->seed) % 4096;

		if (io->ops->read(a->f, &v, 4, (uint64_t)k * 4) != 4 || v != k)
			a->bad++;
	}
	return NULL;
}

/* Concurrent reads from several threads each see the right bytes. */
START_TEST(test_concurrent_reads)
{
	static uint32_t data[4096];
	struct reader_arg args[4];
	pthread_t t[4];
	struct bio_file *f;

	env_open(_i, 9);
	for (uint32_t k = 0; k < 4096; k++)
		data[k] = k;
	f = xopen("r", BIO_RDWR | BIO_CREATE);
	ck_assert_int_eq(write1(f, 0, data, sizeof(data), true), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct reader_arg){ f, (unsigned)i + 1, 0 };
		ck_assert_int_eq(pthread_create(&t[i], NULL, reader, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		ck_assert_int_eq(args[i].bad, 0);
	}
	io->ops->close(f);
	env_close();
}
END_TEST

/* uring: a short write fails the batch with -EIO; the fsync is cancelled. */
START_TEST(test_uring_short_write)
{
	static char buf[8192];
	struct rlimit rl = { 4096, 4096 }, saved;
	struct bio_file *f;

	env_open(IMPL_URING, 0);
	f = xopen("short", BIO_RDWR | BIO_CREATE);
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
	rl.rlim_max = saved.rlim_max;   /* so that it can be restored */
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	ck_assert_int_eq(write1(f, 0, buf, sizeof(buf), false), -EIO);
	ck_assert_uint_eq(fsize(f), 4096);
	ck_assert_int_eq(write1(f, 0, buf, sizeof(buf), true), -EIO);
	ck_assert_int_eq(write1(f, 4096, buf, 1, false), -EFBIG);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
	io->ops->close(f);
	env_close();
}
END_TEST

/*
 * The page-cache state of [off, off + len) of path: cachestat(2), Linux
 * 6.5 and later. False when the kernel has no such call.
 */
struct page_state {
	uint64_t cached, dirty, writeback, evicted, recently_evicted;
};

static bool page_state(const char *path, uint64_t off, uint64_t len,
		       struct page_state *out)
{
	struct { uint64_t off, len; } range = { off, len };
	int fd = open(path, O_RDONLY);
	long rc;

	ck_assert_int_ge(fd, 0);
	rc = syscall(451 /* __NR_cachestat */, fd, &range, out, 0);
	close(fd);
	return rc == 0;
}

/*
 * uring: writeback sends the range to the device, leaves it unchanged,
 * and ignores a range past what a file offset can name. Whether pages
 * were cleaned can be told only where the kernel has cachestat(2) and
 * the written pages were dirty (not on tmpfs, which has no device).
 */
START_TEST(test_uring_writeback)
{
	static char buf[1 << 20];
	struct page_state ps;
	struct bio_file *f;
	bool dirty;

	env_open(IMPL_URING, 0);
	memset(buf, 'w', sizeof(buf));
	f = xopen("wb", BIO_RDWR | BIO_CREATE);
	ck_assert_int_eq(write1(f, 0, buf, sizeof(buf), false), 0);
	dirty = page_state(P("wb"), 0, sizeof(buf), &ps) && ps.dirty > 0;
	if (!dirty)
		fprintf(stderr, "test_uring_writeback: no dirty pages to see "
			"cleaned (no cachestat(2), or tmpfs)\n");
	io->ops->writeback(f, 0, sizeof(buf));
	if (dirty) {
		ck_assert(page_state(P("wb"), 0, sizeof(buf), &ps));
		ck_assert_uint_eq(ps.dirty, 0);
		ck_assert_uint_eq(ps.writeback, 0);
	}
	expect_bytes(f, 0, buf, sizeof(buf));
	io->ops->writeback(f, UINT64_MAX - 1, 4096);
	io->ops->writeback(f, 1u << 30, 4096);   /* past the end */
	ck_assert_int_eq(io->ops->fsync(f), 0);
	ck_assert_uint_eq(fsize(f), sizeof(buf));
	io->ops->close(f);
	env_close();
}
END_TEST

/* ---- the fault implementation ---- */

/*
 * One run of: 4 sectors of 'o' made durable, then 4 sectors of 'n'
 * written unsynced over them, then a crash. Returns a bit per sector:
 * 1 when it shows 'n' (any other byte fails the test).
 */
static unsigned crash_one_write(uint64_t seed)
{
	char old[2048], new[2048], got[2048];
	struct bio_file *f;
	unsigned mask = 0;

	env_open(IMPL_FAULT, seed);
	memset(old, 'o', sizeof(old));
	memset(new, 'n', sizeof(new));
	f = xopen("c", BIO_RDWR | BIO_CREATE);
	ck_assert_int_eq(write1(f, 0, old, sizeof(old), true), 0);
	ck_assert_int_eq(io->ops->fsync_dir(io, root), 0);
	ck_assert_int_eq(write1(f, 0, new, sizeof(new), false), 0);
	bio_fault_crash(io);
	io->ops->close(f);
	f = xopen("c", BIO_RDONLY);
	ck_assert_int_eq(io->ops->read(f, got, sizeof(got), 0), sizeof(got));
	for (int s = 0; s < 4; s++) {
		ck_assert(!memcmp(got + s * 512, old, 512) ||
			  !memcmp(got + s * 512, new, 512));
		mask |= (got[s * 512] == 'n') << s;
	}
	io->ops->close(f);
	env_close();
	return mask;
}

/* A crash keeps, drops or tears (by 512-byte sectors) an unsynced write. */
START_TEST(test_crash_keep_drop_tear)
{
	int kept = 0, dropped = 0, torn = 0;

	for (uint64_t seed = 1; seed <= 64; seed++) {
		unsigned m = crash_one_write(seed);

		kept += m == 0xf;
		dropped += m == 0;
		torn += m != 0 && m != 0xf;
	}
	ck_assert_int_gt(kept, 0);
	ck_assert_int_gt(dropped, 0);
	ck_assert_int_gt(torn, 0);
	ck_assert_uint_eq(crash_one_write(7), crash_one_write(7));
}
END_TEST

/* Synced writes always survive a crash, and synced sizes too. */
START_TEST(test_crash_keeps_synced)
{
	for (uint64_t seed = 1; seed <= 32; seed++) {
		struct bio_file *f;

		env_open(IMPL_FAULT, seed);
		f = xopen("s", BIO_RDWR | BIO_CREATE);
		ck_assert_int_eq(io->ops->allocate(f, 4096), 0);
		ck_assert_int_eq(write1(f, 0, "durable", 7, true), 0);
		ck_assert_int_eq(write1(f, 600, "maybe", 5, false), 0);
		ck_assert_int_eq(io->ops->fsync_dir(io, root), 0);
		bio_fault_crash(io);
		io->ops->close(f);
		f = xopen("s", BIO_RDONLY);
		ck_assert_uint_eq(fsize(f), 4096);
		expect_bytes(f, 0, "durable", 7);
		io->ops->close(f);
		env_close();
	}
}
END_TEST

/* After a crash old handles fail with -EIO and new opens work. */
START_TEST(test_crash_stale_handles)
{
	struct bio_file *f, *g;
	char c;

	env_open(IMPL_FAULT, 11);
	f = xopen("a", BIO_RDWR | BIO_CREATE);
	ck_assert_int_eq(write1(f, 0, "x", 1, true), 0);
	ck_assert_int_eq(io->ops->fsync_dir(io, root), 0);
	bio_fault_crash(io);
	ck_assert_int_eq(io->ops->read(f, &c, 1, 0), -EIO);
	ck_assert_int_eq(write1(f, 0, "y", 1, false), -EIO);
	ck_assert_int_eq(io->ops->fsync(f), -EIO);
	ck_assert_int_eq(io->ops->lock(f), -EIO);
	g = xopen("a", BIO_RDWR);
	ck_assert_int_eq(io->ops->lock(g), 0);
	expect_bytes(g, 0, "x", 1);
	ck_assert_int_eq(write1(g, 0, "z", 1, true), 0);
	io->ops->close(f);
	io->ops->close(g);
	env_close();
}
END_TEST

/* Does root/name exist? */
static bool exists(const char *name)
{
	struct bio_file *f = NULL;
	int err = io->ops->open(io, P(name), BIO_RDONLY, &f);

	if (!err)
		io->ops->close(f);
	ck_assert(err == 0 || err == -ENOENT);
	return err == 0;
}

/* Unsynced creates and renames are kept or undone; fsync_dir keeps them. */
START_TEST(test_crash_dir_ops)
{
	int created = 0, renamed = 0;

	for (uint64_t seed = 1; seed <= 64; seed++) {
		env_open(IMPL_FAULT, seed);
		io->ops->close(xopen("synced", BIO_RDWR | BIO_CREATE));
		io->ops->close(xopen("old", BIO_RDWR | BIO_CREATE));
		ck_assert_int_eq(io->ops->fsync_dir(io, root), 0);
		io->ops->close(xopen("unsynced", BIO_RDWR | BIO_CREATE));
		ck_assert_int_eq(io->ops->rename(io, P("old"), P("new")), 0);
		bio_fault_crash(io);
		ck_assert(exists("synced"));
		ck_assert(exists("old") != exists("new"));
		created += exists("unsynced");
		renamed += exists("new");
		env_close();
	}
	ck_assert(created > 0 && created < 64);
	ck_assert(renamed > 0 && renamed < 64);
}
END_TEST

/* The nth sync fails with -EIO and its writes stay unsynced. */
START_TEST(test_fail_fsync)
{
	int lost = 0;

	for (uint64_t seed = 1; seed <= 16; seed++) {
		struct bio_file *f;
		char c = 0;

		env_open(IMPL_FAULT, seed);
		f = xopen("f", BIO_RDWR | BIO_CREATE);
		ck_assert_int_eq(io->ops->fsync_dir(io, root), 0);
		bio_fault_fail_fsync(io, 2);
		ck_assert_int_eq(write1(f, 0, "A", 1, true), 0);
		ck_assert_int_eq(write1(f, 0, "B", 1, true), -EIO);
		expect_bytes(f, 0, "B", 1);
		ck_assert_int_eq(io->ops->fsync_dir(io, root), 0);
		bio_fault_crash(io);
		io->ops->close(f);
		f = xopen("f", BIO_RDONLY);
		ck_assert_int_eq(io->ops->read(f, &c, 1, 0), 1);
		ck_assert(c == 'A' || c == 'B');
		lost += c == 'A';
		io->ops->close(f);
		env_close();
	}
	ck_assert_int_gt(lost, 0);
}
END_TEST

/* fail_fsync counts fsync, fsync_dir and each file a batch syncs. */
START_TEST(test_fail_fsync_counts)
{
	struct bio_file *a, *b;
	struct iovec iov = { "x", 1 };
	struct bio_write w[2];

	env_open(IMPL_FAULT, 12);
	a = xopen("a", BIO_RDWR | BIO_CREATE);
	b = xopen("b", BIO_RDWR | BIO_CREATE);
	w[0] = (struct bio_write){ a, &iov, 1, 0 };
	w[1] = (struct bio_write){ b, &iov, 1, 0 };
	bio_fault_fail_fsync(io, 4);
	ck_assert_int_eq(io->ops->fsync(a), 0);                 /* 1 */
	ck_assert_int_eq(io->ops->fsync_dir(io, root), 0);      /* 2 */
	ck_assert_int_eq(io->ops->write_batch(io, w, 2, true), -EIO); /* 3, 4 */
	ck_assert_int_eq(io->ops->write_batch(io, w, 2, true), 0);
	bio_fault_fail_fsync(io, 1);
	bio_fault_fail_fsync(io, 0);
	ck_assert_int_eq(io->ops->fsync(b), 0);
	io->ops->close(a);
	io->ops->close(b);
	env_close();
}
END_TEST

/* After k batches the disk is dead (reads still work) until a crash. */
START_TEST(test_die_after)
{
	struct bio_file *f, *g = NULL;

	env_open(IMPL_FAULT, 13);
	f = xopen("f", BIO_RDWR | BIO_CREATE);
	ck_assert_int_eq(io->ops->fsync_dir(io, root), 0);
	bio_fault_die_after(io, 2);
	ck_assert_int_eq(write1(f, 0, "1", 1, true), 0);
	ck_assert_int_eq(write1(f, 1, "2", 1, false), 0);
	ck_assert_int_eq(write1(f, 2, "3", 1, false), -EIO);
	ck_assert_int_eq(io->ops->fsync(f), -EIO);
	ck_assert_int_eq(io->ops->truncate(f, 0), -EIO);
	ck_assert_int_eq(io->ops->allocate(f, 4096), -EIO);
	ck_assert_int_eq(io->ops->mkdir(io, P("d")), -EIO);
	ck_assert_int_eq(io->ops->fsync_dir(io, root), -EIO);
	ck_assert_int_eq(io->ops->open(io, P("new"), BIO_RDWR | BIO_CREATE, &g),
			 -EIO);
	expect_bytes(f, 0, "12", 2);
	ck_assert_uint_eq(fsize(f), 2);
	bio_fault_crash(io);
	io->ops->close(f);
	f = xopen("f", BIO_RDWR);
	expect_bytes(f, 0, "1", 1);
	ck_assert_int_eq(write1(f, 2, "3", 1, true), 0);
	io->ops->close(f);
	env_close();
}
END_TEST

/* flip changes one bit of what reads see, and it survives a crash. */
START_TEST(test_flip)
{
	struct bio_file *f;

	env_open(IMPL_FAULT, 14);
	f = xopen("f", BIO_RDWR | BIO_CREATE);
	ck_assert_int_eq(write1(f, 0, "hello", 5, true), 0);
	ck_assert_int_eq(io->ops->fsync_dir(io, root), 0);
	ck_assert_int_eq(bio_fault_flip(io, P("f"), 1, 0), 0);
	expect_bytes(f, 0, "hdllo", 5);
	ck_assert_int_eq(bio_fault_flip(io, P("f"), 5, 0), -EINVAL);
	ck_assert_int_eq(bio_fault_flip(io, P("f"), 0, 8), -EINVAL);
	ck_assert_int_eq(bio_fault_flip(io, P("g"), 0, 0), -ENOENT);
	bio_fault_crash(io);
	io->ops->close(f);
	f = xopen("f", BIO_RDONLY);
	expect_bytes(f, 0, "hdllo", 5);
	io->ops->close(f);
	env_close();
}
END_TEST

static Suite *io_suite(void)
{
	Suite *s = suite_create("io");
	TCase *both = tcase_create("both");
	TCase *uring = tcase_create("uring");
	TCase *fault = tcase_create("fault");

	tcase_add_checked_fixture(both, NULL, teardown);
	tcase_add_loop_test(both, test_write_read, 0, IMPL_COUNT);
	tcase_add_loop_test(both, test_batch_two_files, 0, IMPL_COUNT);
	tcase_add_loop_test(both, test_batch_longer_than_ring, 0, IMPL_COUNT);
	tcase_add_loop_test(both, test_open_flags, 0, IMPL_COUNT);
	tcase_add_loop_test(both, test_list, 0, IMPL_COUNT);
	tcase_add_loop_test(both, test_rename_unlink_dirs, 0, IMPL_COUNT);
	tcase_add_loop_test(both, test_lock_conflict, 0, IMPL_COUNT);
	tcase_add_loop_test(both, test_allocate_truncate, 0, IMPL_COUNT);
	tcase_add_loop_test(both, test_concurrent_reads, 0, IMPL_COUNT);
	suite_add_tcase(s, both);

	tcase_add_checked_fixture(uring, NULL, teardown);
	tcase_add_test(uring, test_uring_short_write);
	tcase_add_test(uring, test_uring_writeback);
	suite_add_tcase(s, uring);

	tcase_add_checked_fixture(fault, NULL, teardown);
	tcase_add_test(fault, test_crash_keep_drop_tear);
	tcase_add_test(fault, test_crash_keeps_synced);
	tcase_add_test(fault, test_crash_stale_handles);
	tcase_add_test(fault, test_crash_dir_ops);
	tcase_add_test(fault, test_fail_fsync);
	tcase_add_test(fault, test_fail_fsync_counts);
	tcase_add_test(fault, test_die_after);
	tcase_add_test(fault, test_flip);
	suite_add_tcase(s, fault);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(io_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
