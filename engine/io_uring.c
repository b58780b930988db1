#include "config.h"
/*
 * The real I/O table (io.h) over liburing.
 *
 * Writes: one ring per bio, protected by a mutex because several databases
 * may share the bio. A batch becomes one chain of linked SQEs (IOSQE_IO_LINK)
 * -- the writes in order, then one IORING_FSYNC_DATASYNC per distinct file
 * when sync -- submitted with a single io_uring_submit_and_wait(). A batch
 * longer than the ring is cut into several chains, each run to completion
 * before the next is submitted, so order (writes before their fsync) holds.
 *
 * A batch without sync is written with pwritev(2) instead: those bytes
 * only go to the page cache, which a system call does at once, while a
 * ring hands a buffered write on a filesystem without non-blocking
 * writes (tmpfs) to a kernel worker thread -- two context switches per
 * lazy commit (the mount's close).
 *
 * Reads: pread(2). A read is one synchronous request, nearly always
 * served by the page cache; a ring gains nothing with one request in
 * flight, and on a filesystem without non-blocking buffered reads (tmpfs)
 * io_uring hands every such request to a kernel worker thread, which cost
 * a context switch per read (the mount's reads ran at half speed there).
 *
 * Everything else (open, allocate, directory operations) is a plain
 * system call: those are rare and not on a latency path.
 */
#include "engine/io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define WRING_ENTRIES 128u     /* most SQEs in one linked chain */
#define READ_MAX (1u << 30)    /* bytes per pread */

struct uring_bio;


struct uring_bio {
	struct bio base;
	pthread_mutex_t wlock;       /* one batch at a time on wring */
	struct io_uring wring;       /* protected by wlock */
	bool wring_ok;               /* protected by wlock; false: no ring */
	_Atomic uint64_t written;    /* bytes written by write_batch */
};

/* What a struct bio_file * handed out by this table points at. */
struct ufile {
	struct uring_bio *io;
	int fd;
};

/* One SQE of a write chain. */
struct wop {
	const struct ufile *file;
	const struct bio_write *w;   /* NULL: an fdatasync of file */
	size_t expect;               /* bytes the write must transfer */
};

static const struct bio_ops uring_ops;

static struct uring_bio *ubio(struct bio *io)
{
	return (struct uring_bio *)io;
}

static struct ufile *ufile(struct bio_file *f)
{
	return (struct ufile *)f;
}

/* ---- rings ---- */

/*
 * Submit the n SQEs prepared on ring and reap their n completions into
 * res[] (indexed by user_data). Nonzero when the ring could not take them
 * all: unsubmitted SQEs are then still queued and the ring must be reset.
 */
static int ring_run(struct io_uring *ring, unsigned n, int *res)
{
	struct io_uring_cqe *cqe;
	unsigned submitted = 0;
	int ret = 0;

	while (submitted < n) {
		ret = io_uring_submit_and_wait(ring, n - submitted);
		if (ret == -EINTR)
			continue;
		if (ret <= 0)
			break;
		submitted += (unsigned)ret;
	}
	for (unsigned i = 0; i < submitted; i++) {
		int err;

		do
			err = io_uring_wait_cqe(ring, &cqe);
		while (err == -EINTR);
		if (err)
			return err;
		if (cqe->user_data < n)
			res[cqe->user_data] = cqe->res;
		io_uring_cqe_seen(ring, cqe);
	}
	if (submitted < n)
		return ret < 0 ? ret : -EIO;
	return 0;
}

static int ring_init(struct io_uring *ring, unsigned entries, unsigned flags)
{
	int err = io_uring_queue_init(entries, ring, flags);

	/* Kernels before 5.19 do not know the optional flags. */
	if (err == -EINVAL && flags)
		err = io_uring_queue_init(entries, ring, 0);
	return err;
}

/* ---- reads ---- */

static ssize_t uring_read(struct bio_file *bf, void *buf, size_t len,
			  uint64_t off)
{
	struct ufile *f = ufile(bf);
	size_t done = 0;

	/* Normally one call; loop on a short read until EOF. */
	while (done < len) {
		size_t want = len - done < READ_MAX ? len - done : READ_MAX;
		ssize_t got = pread(f->fd, (char *)buf + done, want,
				    (off_t)(off + done));

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (got == 0)
			break;
		done += (size_t)got;
	}
	return (ssize_t)done;
}

/* ---- write batches ---- */

static size_t iov_total(const struct iovec *iov, int n)
{
	size_t sum = 0;

	for (int i = 0; i < n; i++)
		sum += iov[i].iov_len;
	return sum;
}

static bool wops_has_sync(const struct wop *ops, int n, const struct ufile *f)
{
	for (int i = 0; i < n; i++)
		if (!ops[i].w && ops[i].file == f)
			return true;
	return false;
}

/*
 * Fill ops[] (room for 2n) with the n writes and, when sync, an fdatasync
 * per distinct file after them. Returns the op count or -EINVAL.
 */
static int wops_build(struct wop *ops, const struct bio_write *w, int n,
		      bool sync)
{
	int nops = 0;

	for (int i = 0; i < n; i++) {
		if (!w[i].file || w[i].iovcnt < 0 || w[i].iovcnt > IOV_MAX)
			return -EINVAL;
		ops[nops].file = ufile(w[i].file);
		ops[nops].w = &w[i];
		ops[nops].expect = iov_total(w[i].iov, w[i].iovcnt);
		if (ops[nops].expect > INT_MAX)
			return -EINVAL;
		nops++;
	}
	for (int i = 0; sync && i < n; i++) {
		if (wops_has_sync(ops + n, nops - n, ufile(w[i].file)))
			continue;
		ops[nops].file = ufile(w[i].file);
		ops[nops].w = NULL;
		ops[nops].expect = 0;
		nops++;
	}
	return nops;
}

static void wop_prep(struct io_uring_sqe *sqe, const struct wop *op)
{
	const struct bio_write *w = op->w;

	if (!w)
		io_uring_prep_fsync(sqe, op->file->fd, IORING_FSYNC_DATASYNC);
	else if (w->iovcnt == 1)
		io_uring_prep_write(sqe, op->file->fd, w->iov[0].iov_base,
				    (unsigned)w->iov[0].iov_len, w->off);
	else
		io_uring_prep_writev(sqe, op->file->fd, w->iov,
				     (unsigned)w->iovcnt, w->off);
}

/* 0, or the error one completion reports (a short write is -EIO). */
static int wop_status(const struct wop *op, int res)
{
	if (res < 0)
		return res;
	if (op->w && (size_t)res != op->expect)
		return -EIO;
	return 0;
}

/*
 * The outcome of a chain: the first error that is not a cancellation
 * (a failed op cancels the ops linked behind it).
 */
static int chain_status(struct uring_bio *io, const struct wop *ops,
			const int *res, unsigned n)
{
	uint64_t bytes = 0;
	int err = 0;

	for (unsigned i = 0; i < n; i++) {
		int e = wop_status(&ops[i], res[i]);

		if (ops[i].w && res[i] > 0)
			bytes += (uint64_t)res[i];
		if (e && (!err || err == -ECANCELED))
			err = e;
	}
	atomic_fetch_add(&io->written, bytes);
	return err == -ECANCELED ? -EIO : err;
}

/* Throw away a ring that may hold unsubmitted SQEs. Under wlock. */
static void wring_reset(struct uring_bio *io)
{
	io_uring_queue_exit(&io->wring);
	io->wring_ok = ring_init(&io->wring, WRING_ENTRIES, 0) == 0;
}

/* Run ops[0..n), n <= WRING_ENTRIES, as one linked chain. Under wlock. */
static int wring_chain(struct uring_bio *io, const struct wop *ops, unsigned n)
{
	int res[WRING_ENTRIES];
	int err;

	if (io_uring_sq_space_left(&io->wring) < n)
		return -EIO;
	for (unsigned i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&io->wring);

		wop_prep(sqe, &ops[i]);
		sqe->user_data = i;
		if (i + 1 < n)
			sqe->flags |= IOSQE_IO_LINK;
	}
	err = ring_run(&io->wring, n, res);
	if (err) {
		wring_reset(io);
		return err;
	}
	return chain_status(io, ops, res, n);
}

/* Run every op in order, one ring-full chain after the other. */
static int wring_run_all(struct uring_bio *io, const struct wop *ops, int n)
{
	int err = 0;

	pthread_mutex_lock(&io->wlock);
	if (!io->wring_ok)
		err = -EIO;
	for (int i = 0; !err && i < n; i += (int)WRING_ENTRIES) {
		unsigned len = (unsigned)(n - i);

		err = wring_chain(io, ops + i,
				  len < WRING_ENTRIES ? len : WRING_ENTRIES);
	}
	pthread_mutex_unlock(&io->wlock);
	return err;
}

/* The writes of a batch without sync, one pwritev(2) each. */
static int plain_write_all(struct uring_bio *io, const struct bio_write *w,
			   int n)
{
	uint64_t bytes = 0;
	int err = 0;

	for (int i = 0; i < n && !err; i++) {
		size_t want;
		ssize_t got;

		if (!w[i].file || w[i].iovcnt < 0 || w[i].iovcnt > IOV_MAX ||
		    (want = iov_total(w[i].iov, w[i].iovcnt)) > INT_MAX)
			return -EINVAL;
		do
			got = pwritev(ufile(w[i].file)->fd, w[i].iov,
				      w[i].iovcnt, (off_t)w[i].off);
		while (got < 0 && errno == EINTR);
		if (got > 0)
			bytes += (uint64_t)got;
		err = got < 0 ? -errno : (size_t)got != want ? -EIO : 0;
	}
	atomic_fetch_add(&io->written, bytes);
	return err;
}

static int uring_write_batch(struct bio *bio, const struct bio_write *w,
			     int n, bool sync)
{
	struct wop *ops;
	int nops, err;

	if (n < 0 || (n > 0 && !w))
		return -EINVAL;
	if (n == 0)
		return 0;
	if (!sync)
		return plain_write_all(ubio(bio), w, n);
	ops = calloc(2 * (size_t)n, sizeof(*ops));
	if (!ops)
		return -ENOMEM;
	nops = wops_build(ops, w, n, sync);
	err = nops < 0 ? nops : wring_run_all(ubio(bio), ops, nops);
	free(ops);
	return err;
}

static uint64_t uring_bytes_written(struct bio *bio)
{
	return atomic_load(&ubio(bio)->written);
}

/* ---- files ---- */

static int uring_open(struct bio *bio, const char *path, int flags,
		      struct bio_file **out)
{
	int oflags = O_CLOEXEC | ((flags & BIO_RDWR) ? O_RDWR : O_RDONLY);
	struct ufile *f;

	if (flags & ~(BIO_RDWR | BIO_CREATE | BIO_EXCL))
		return -EINVAL;
	if (flags & BIO_CREATE)
		oflags |= O_CREAT | ((flags & BIO_EXCL) ? O_EXCL : 0);
	f = malloc(sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->io = ubio(bio);
	f->fd = open(path, oflags, 0644);
	if (f->fd < 0) {
		int err = -errno;

		free(f);
		return err;
	}
	*out = (struct bio_file *)f;
	return 0;
}

static void uring_close(struct bio_file *bf)
{
	struct ufile *f = ufile(bf);

	if (!f)
		return;
	close(f->fd);
	free(f);
}

/* fsync, not fdatasync: also used after truncate and allocate. */
static int uring_fsync(struct bio_file *f)
{
	return fsync(ufile(f)->fd) ? -errno : 0;
}

static int uring_size(struct bio_file *f, uint64_t *len)
{
	struct stat st;

	if (fstat(ufile(f)->fd, &st))
		return -errno;
	*len = (uint64_t)st.st_size;
	return 0;
}

/* sync_file_range(2) has no io_uring chain to join: the caller waits
 * anyway, and one request gains nothing from a ring. */
static void uring_writeback(struct bio_file *f, uint64_t off, uint64_t len)
{
	unsigned flags = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
			 SYNC_FILE_RANGE_WAIT_AFTER;

	if (off > INT64_MAX || len > INT64_MAX - off)
		return;
	while (sync_file_range(ufile(f)->fd, (off64_t)off, (off64_t)len,
			       flags) && errno == EINTR)
		;
}

/* Grow to len when neither fallocate flavour is supported. */
static int extend_to(struct bio_file *f, uint64_t len)
{
	uint64_t size;
	int err = uring_size(f, &size);

	if (err || size >= len)
		return err;
	return ftruncate(ufile(f)->fd, (off_t)len) ? -errno : 0;
}

/* Mode 0: allocates blocks and, like fallocate(2), extends the size. */
static int uring_allocate(struct bio_file *f, uint64_t len)
{
	int fd = ufile(f)->fd, err;

	if (len > INT64_MAX)
		return -EFBIG;
	if (len == 0 || fallocate(fd, 0, 0, (off_t)len) == 0)
		return 0;
	if (errno != EOPNOTSUPP)
		return -errno;
	err = posix_fallocate(fd, 0, (off_t)len);
	if (err == EOPNOTSUPP || err == EINVAL)
		return extend_to(f, len);
	return -err;
}

static int uring_truncate(struct bio_file *f, uint64_t len)
{
	if (len > INT64_MAX)
		return -EFBIG;
	return ftruncate(ufile(f)->fd, (off_t)len) ? -errno : 0;
}

static int uring_lock(struct bio_file *f)
{
	return flock(ufile(f)->fd, LOCK_EX | LOCK_NB) ? -errno : 0;
}

/* ---- directories ---- */

static int uring_mkdir(struct bio *io, const char *path)
{
	(void)io;
	return mkdir(path, 0755) ? -errno : 0;
}

static int uring_rmdir(struct bio *io, const char *path)
{
	(void)io;
	return rmdir(path) ? -errno : 0;
}

static int uring_unlink(struct bio *io, const char *path)
{
	(void)io;
	return unlink(path) ? -errno : 0;
}

static int uring_rename(struct bio *io, const char *from, const char *to)
{
	(void)io;
	return rename(from, to) ? -errno : 0;
}

/*
 * A callback's positive return stops the walk with 0; a negative one
 * stops it and is returned.
 */
static int uring_list(struct bio *io, const char *dir, bio_list_cb cb,
		      void *arg)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int err = 0;

	(void)io;
	if (!d)
		return -errno;
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			err = -errno;
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		err = cb(arg, de->d_name);
		if (err)
			break;
	}
	closedir(d);
	return err < 0 ? err : 0;
}

static int uring_fsync_dir(struct bio *io, const char *dir)
{
	int fd, err = 0;

	(void)io;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd))
		err = -errno;
	close(fd);
	return err;
}

/* ---- lifecycle ---- */

/* Every thread must be done with the bio (threads may exit later). */
static void uring_free(struct bio *bio)
{
	struct uring_bio *io = ubio(bio);

	if (!io)
		return;
	if (io->wring_ok)
		io_uring_queue_exit(&io->wring);
	pthread_mutex_destroy(&io->wlock);
	free(io);
}

struct bio *bio_uring_new(void)
{
	struct uring_bio *io = calloc(1, sizeof(*io));
	int err;

	if (!io)
		return NULL;
	io->base.ops = &uring_ops;
	atomic_init(&io->written, 0);
	err = -ring_init(&io->wring, WRING_ENTRIES, 0);
	if (err)
		goto out_free;
	io->wring_ok = true;
	pthread_mutex_init(&io->wlock, NULL);
	return &io->base;

out_free:
	free(io);
	errno = err;
	return NULL;
}

static const struct bio_ops uring_ops = {
	.open = uring_open,
	.close = uring_close,
	.read = uring_read,
	.write_batch = uring_write_batch,
	.fsync = uring_fsync,
	.writeback = uring_writeback,
	.allocate = uring_allocate,
	.truncate = uring_truncate,
	.size = uring_size,
	.lock = uring_lock,
	.mkdir = uring_mkdir,
	.rmdir = uring_rmdir,
	.unlink = uring_unlink,
	.rename = uring_rename,
	.list = uring_list,
	.fsync_dir = uring_fsync_dir,
	.bytes_written = uring_bytes_written,
	.free = uring_free,
};
