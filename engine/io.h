/*
 * The I/O operations table: all engine I/O goes through it.
 *
 * bio_uring_new() is the real implementation (liburing): writes and the
 * fdatasync that follows them are submitted as one linked chain with a
 * single io_uring_enter(); reads are pread(2) (io_uring.c says why).
 *
 * bio_fault_new() is an in-memory filesystem for tests (the method of
 * SQLite's crash VFS): it remembers, per file, what has been made durable
 * and what was written since. bio_fault_crash() then drops or tears every
 * unsynced write at random, and it can fail the Nth fsync.
 *
 * All paths are absolute or relative to the process cwd; the engine builds
 * them. All functions return 0 or -errno. A short read is not an error:
 * read returns the number of bytes read (>= 0) or -errno.
 */
#ifndef BARREL_IO_H
#define BARREL_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct bio;       /* an implementation instance */
struct bio_file;  /* an open file */

enum bio_open_flags {
	BIO_RDONLY = 0,
	BIO_RDWR = 1 << 0,
	BIO_CREATE = 1 << 1,  /* create if missing */
	BIO_EXCL = 1 << 2,    /* with CREATE: fail with -EEXIST if present */
};

/* One write of a batch: iov[] is gathered to the file at off. */
struct bio_write {
	struct bio_file *file;
	const struct iovec *iov;
	int iovcnt;
	uint64_t off;
};

/* Called once per directory entry by list; return non-zero to stop early. */
typedef int (*bio_list_cb)(void *arg, const char *name);

struct bio_ops {
	int (*open)(struct bio *io, const char *path, int flags,
		    struct bio_file **out);
	/* Closing does not sync. */
	void (*close)(struct bio_file *f);
	/* Returns bytes read (short at EOF) or -errno. Thread-safe. */
	ssize_t (*read)(struct bio_file *f, void *buf, size_t len, uint64_t off);
	/*
	 * Submit n writes as one batch; when sync is true, an fdatasync of
	 * every file written is linked behind them and this returns only once
	 * all are durable. A short write is -EIO. Not concurrent with another
	 * write_batch on the same file (the engine has one writer).
	 */
	int (*write_batch)(struct bio *io, const struct bio_write *w, int n,
			   bool sync);
	int (*fsync)(struct bio_file *f);
	/*
	 * Write [off, off + len) of f, already written by write_batch, from
	 * the page cache to the device and wait for it: not durable (only
	 * fsync is), but the next fsync has that much less to do, and other
	 * files' fsyncs do not queue behind it. Advisory: an error surfaces
	 * at the file's next fsync. NULL in an implementation without a page
	 * cache.
	 */
	void (*writeback)(struct bio_file *f, uint64_t off, uint64_t len);
	/* Reserve space [0, len) so later writes overwrite allocated blocks. */
	int (*allocate)(struct bio_file *f, uint64_t len);
	int (*truncate)(struct bio_file *f, uint64_t len);
	int (*size)(struct bio_file *f, uint64_t *len);
	/*
	 * Take an exclusive advisory lock (flock LOCK_EX|LOCK_NB) on an open
	 * file; -EWOULDBLOCK when another process holds it. Released on close.
	 */
	int (*lock)(struct bio_file *f);
	int (*mkdir)(struct bio *io, const char *path);   /* -EEXIST if present */
	int (*rmdir)(struct bio *io, const char *path);
	int (*unlink)(struct bio *io, const char *path);
	int (*rename)(struct bio *io, const char *from, const char *to);
	/* Entries of a directory, without "." and "..", in no set order. */
	int (*list)(struct bio *io, const char *dir, bio_list_cb cb, void *arg);
	/* Make a directory's entries (creations, renames, unlinks) durable. */
	int (*fsync_dir)(struct bio *io, const char *dir);
	/* Bytes handed to the device so far by write_batch (for stat/bench). */
	uint64_t (*bytes_written)(struct bio *io);
	void (*free)(struct bio *io);
};

struct bio {
	const struct bio_ops *ops;
};

/* The real implementation. Returns NULL on failure with errno set. */
struct bio *bio_uring_new(void);

/*
 * The fault-injecting in-memory implementation for tests. seed drives
 * every random choice, so a failing run can be replayed.
 */
struct bio *bio_fault_new(uint64_t seed);

/*
 * Simulate a power cut: every write not yet covered by a successful fsync
 * (of its file) is, independently and at random, kept whole, dropped, or
 * torn (a random subset of its 512-byte sectors kept, the rest reverting to
 * their old contents). Directory operations not covered by fsync_dir are
 * kept or undone at random. Open files stay open but must not be used
 * again; the engine reopens everything after a crash.
 */
void bio_fault_crash(struct bio *io);

/* Make the nth fsync/fdatasync from now fail with -EIO (0 disables). */
void bio_fault_fail_fsync(struct bio *io, unsigned nth);

/*
 * Make every write and sync from now on fail with -EIO, as a dead disk
 * would (used to "crash" a workload at a random point): enable after k
 * more write_batch calls succeed; 0 disables.
 */
void bio_fault_die_after(struct bio *io, unsigned k);

/* Flip bit `bit` of the byte at off in path's current contents. */
int bio_fault_flip(struct bio *io, const char *path, uint64_t off, int bit);

#endif
