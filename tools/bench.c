/*
 * The benchmark driver: the same workload against every store of the
 * table below, each in a forked child process, then one report.
 *
 * The workload, for N documents (keys "doc-%08x" in random order, JSON
 * values of about 1 KiB from a fixed-seed generator):
 *   1. insert   N documents, durable commits of BATCH;
 *   2. read     N random keys, each checked against the expected bytes;
 *   3. update   a percentage of the keys (--updates, default 20) at
 *               random, each once, commits of BATCH;
 *   4. usage    bytes on disk against live bytes (keys + current values);
 *   5. scan     every document in key order, checked for order and size;
 *   6. close    timed;
 *   7. reopen   time from the start of open to the first good read.
 * Bytes written during phases 1-3 are counted twice: by the process
 * (write_bytes of /proc/self/io) and by the disk that holds the directory
 * (sectors written in /sys/dev/block/MAJ:MIN/stat, between two syncfs()
 * calls; the whole disk, so run on a quiet machine). The first is what
 * the kernel charges the process for dirtying pages; with large folios it
 * charges a whole folio for a 4 KiB write, so the disk's count is the one
 * the report compares. The peak RSS is the child's ru_maxrss (wait4()).
 *
 * The report: one row per store; barrelfs (the raw engine) against its
 * peers; and when both ran, the document layer ("documents", the same
 * engine under docdb.h) against the raw engine, as the extra time per
 * operation it costs, against DOC_OVERHEAD_GOAL.
 */
#include "config.h"
#include "tools/bench.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH 100               /* documents per durable commit */
#define VAL_MIN 900             /* value sizes, bytes */
#define VAL_MAX 1150
#define VAL_CAP 2048            /* room for any value */
#define KEY_CAP 16              /* "doc-xxxxxxxx" and its NUL */
#define SEED 0x62617272656cULL  /* every run sees the same data */
#define DOC_OVERHEAD_GOAL 30.0  /* %: the document layer's time per
				   operation over the raw engine's */

static const struct bench_ops *const bench_stores[] = {
	&bench_barrel_ops,
	&bench_docs_ops,
	&bench_sqlite_ops,
	&bench_lmdb_ops,
	&bench_rocksdb_ops,
	&bench_log_ops,
};
#define NSTORES (sizeof(bench_stores) / sizeof(bench_stores[0]))

/* What a child reports to the driver through a pipe. */
struct bench_result {
	bool ran;                  /* the store opened: not skipped */
	bool ok;                   /* every phase finished with good data */
	char phase[16];            /* the phase that failed */
	char err[BENCH_ERRLEN];
	double insert_s, read_s, update_s, scan_s, close_s, reopen_s;
	uint64_t inserts, reads, updates, scanned;
	uint64_t disk_bytes;       /* after the updates */
	uint64_t live_bytes;       /* keys + current values */
	uint64_t doc_bytes;        /* keys + values of every write */
	uint64_t dev_bytes;        /* the disk's sectors written, as bytes */
	bool dev_known;            /* the disk's counters were readable */
	uint64_t io_bytes;         /* write_bytes of /proc/self/io */
	bool io_known;             /* /proc/self/io was readable */
	long base_rss_kb;          /* the child before opening the store */
	long maxrss_kb;            /* filled by the driver from wait4 */
	char note[256];            /* bench_ops.note's line, or empty */
};

/* ---- helpers shared with the stores ---- */

int bench_fail(char *err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, BENCH_ERRLEN, fmt, ap);
	va_end(ap);
	return -1;
}

int bench_path(char *buf, size_t size, const char *dir, const char *name,
	       char *err)
{
	int n = snprintf(buf, size, "%s/%s", dir, name);

	if (n < 0 || (size_t)n >= size)
		return bench_fail(err, "%s/%s: path too long", dir, name);
	return 0;
}

int bench_store_init(struct bench_store *s, const struct bench_ops *ops,
		     const char *dir, char *err)
{
	int n = snprintf(s->dir, sizeof(s->dir), "%s", dir);

	s->ops = ops;
	s->err[0] = '\0';
	if (n < 0 || (size_t)n >= sizeof(s->dir))
		return bench_fail(err, "%s: path too long", dir);
	return 0;
}

void bench_put_be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

uint64_t bench_get_be64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* Open directory name in the directory dfd, not following a symlink. */
static int open_dir_at(int dfd, const char *name)
{
	return openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		      O_CLOEXEC);
}

/* Sum st_blocks of everything under the open directory dfd (closed). */
static int usage_at(int dfd, uint64_t *bytes)
{
	DIR *d = fdopendir(dfd);
	struct dirent *de;
	struct stat st;
	int rc = 0;

	if (!d) {
		close(dfd);
		return -1;
	}
	while (rc == 0 && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			rc = -1;
		else if (S_ISDIR(st.st_mode))
			rc = usage_at(open_dir_at(dirfd(d), de->d_name),
				      bytes);
		else
			*bytes += (uint64_t)st.st_blocks * 512;
	}
	closedir(d);
	return rc;
}

int bench_dir_usage(const char *dir, uint64_t *bytes)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	*bytes = 0;
	if (dfd < 0)
		return -1;
	return usage_at(dfd, bytes);
}

int bench_store_usage(struct bench_store *s, uint64_t *bytes)
{
	if (bench_dir_usage(s->dir, bytes))
		return bench_fail(s->err, "%s: %s", s->dir, strerror(errno));
	return 0;
}

/* Remove everything under the open directory dfd (closed), not itself. */
static int remove_at(int dfd)
{
	DIR *d = fdopendir(dfd);
	struct dirent *de;
	struct stat st;
	int rc = 0;

	if (!d) {
		close(dfd);
		return -1;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW)) {
			rc = -1;
			continue;
		}
		if (S_ISDIR(st.st_mode)) {
			if (remove_at(open_dir_at(dirfd(d), de->d_name)))
				rc = -1;
			if (unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR))
				rc = -1;
		} else if (unlinkat(dirfd(d), de->d_name, 0)) {
			rc = -1;
		}
	}
	closedir(d);
	return rc;
}

static int remove_tree(const char *dir)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (dfd < 0 || remove_at(dfd))
		return -1;
	return rmdir(dir);
}

/* ---- the workload ---- */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* splitmix64: small, fast, and the same sequence everywhere. */
static uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* A bijection on 32 bits, so distinct documents get distinct keys in an
 * order unrelated to insertion. */
static uint32_t mix32(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352dU;
	x ^= x >> 15;
	x *= 0x846ca68bU;
	x ^= x >> 16;
	return x;
}

static size_t make_key(uint64_t i, char *buf)
{
	return (size_t)snprintf(buf, KEY_CAP, "doc-%08" PRIx32,
				mix32((uint32_t)i ^ (uint32_t)SEED));
}

static const char *const words[] = {
	"replication", "segment", "revision", "barrel", "document", "couch",
	"append", "checksum", "snapshot", "writer", "reader", "index",
	"sequence", "conflict", "winner", "branch", "attachment", "view",
	"a", "the", "of", "and", "to", "in", "is", "on", "with", "every",
};
#define NWORDS (sizeof(words) / sizeof(words[0]))

/* Value of document i at revision rev into buf (VAL_CAP); its length. */
static size_t make_value(uint64_t i, unsigned rev, char *buf)
{
	uint64_t s = SEED ^ (i << 8 | rev);
	size_t target = VAL_MIN + rng_next(&s) % (VAL_MAX - VAL_MIN + 1);
	char key[KEY_CAP];
	size_t len;

	make_key(i, key);
	len = (size_t)snprintf(buf, VAL_CAP,
			       "{\"_id\":\"%s\",\"rev\":%u,\"n\":%" PRIu64
			       ",\"score\":%" PRIu64 ",\"tags\":[\"%s\",\"%s\"],"
			       "\"text\":\"", key, rev, i, rng_next(&s) % 100000,
			       words[rng_next(&s) % NWORDS],
			       words[rng_next(&s) % NWORDS]);
	while (len + 16 < target) {
		const char *w = words[rng_next(&s) % NWORDS];
		size_t wl = strlen(w);

		memcpy(buf + len, w, wl);
		len += wl;
		buf[len++] = ' ';
	}
	memcpy(buf + len, "\"}", 2);
	return len + 2;
}

/* The state of one child's run. */
struct run {
	const struct bench_ops *ops;
	struct bench_store *store;     /* NULL while closed */
	const char *dir;
	uint64_t n;
	unsigned update_percent;
	uint8_t *rev;                  /* current revision of document i */
	uint32_t *pick;                /* a permutation, for the update set */
	uint64_t rng;                  /* drives reads and update choice */
	struct bench_doc batch[BATCH];
	char keys[BATCH][KEY_CAP];
	char *vals;                    /* BATCH * VAL_CAP */
	char *got, *want;              /* VAL_CAP each, for checks */
	char last_key[KEY_CAP];        /* the scan's previous key */
	size_t last_klen;
	uint64_t scan_bytes;           /* keys + values the scan saw */
	struct bench_result *res;
};

static int run_fail(struct run *r, const char *phase, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int run_fail(struct run *r, const char *phase, const char *fmt, ...)
{
	va_list ap;

	snprintf(r->res->phase, sizeof(r->res->phase), "%s", phase);
	va_start(ap, fmt);
	vsnprintf(r->res->err, sizeof(r->res->err), fmt, ap);
	va_end(ap);
	return -1;
}

static int store_fail(struct run *r, const char *phase)
{
	return run_fail(r, phase, "%s", r->store->err);
}

/* Fill r->batch with documents idx[0..m) at their current revision. */
static void fill_batch(struct run *r, const uint32_t *idx, uint64_t first,
		       size_t m, uint64_t *bytes)
{
	for (size_t j = 0; j < m; j++) {
		uint64_t i = idx ? idx[j] : first + j;
		struct bench_doc *d = &r->batch[j];

		d->key = r->keys[j];
		d->klen = make_key(i, r->keys[j]);
		d->val = r->vals + j * VAL_CAP;
		d->vlen = make_value(i, r->rev[i], r->vals + j * VAL_CAP);
		*bytes += d->klen + d->vlen;
	}
}

static int phase_insert(struct run *r)
{
	struct bench_result *res = r->res;

	for (uint64_t i = 0; i < r->n; i += BATCH) {
		size_t m = r->n - i < BATCH ? (size_t)(r->n - i) : BATCH;
		double t0;

		for (size_t j = 0; j < m; j++)
			r->rev[i + j] = 1;
		fill_batch(r, NULL, i, m, &res->doc_bytes);
		t0 = now();
		if (r->ops->insert_batch(r->store, r->batch, m))
			return store_fail(r, "insert");
		res->insert_s += now() - t0;
		res->inserts += m;
	}
	res->live_bytes = res->doc_bytes;
	return 0;
}

/* Read document i and compare it with what was last written. */
static int read_check(struct run *r, uint64_t i, const char *phase,
		      double *secs)
{
	char key[KEY_CAP];
	size_t klen = make_key(i, key), len = 0, want;
	double t0 = now();
	int rc = r->ops->get(r->store, key, klen, r->got, VAL_CAP, &len);

	*secs += now() - t0;
	if (rc < 0)
		return store_fail(r, phase);
	if (rc == 0)
		return run_fail(r, phase, "%s: missing", key);
	want = make_value(i, r->rev[i], r->want);
	if (len != want || memcmp(r->got, r->want, want))
		return run_fail(r, phase, "%s: wrong value (%zu bytes, "
				"expected %zu)", key, len, want);
	return 0;
}

static int phase_read(struct run *r)
{
	for (uint64_t k = 0; k < r->n; k++)
		if (read_check(r, rng_next(&r->rng) % r->n, "read",
			       &r->res->read_s))
			return -1;
	r->res->reads = r->n;
	return 0;
}

static int phase_update(struct run *r)
{
	struct bench_result *res = r->res;
	uint64_t u = r->n * r->update_percent / 100;
	uint64_t old = 0;

	/* A partial Fisher-Yates shuffle: the first u picks are distinct. */
	for (uint64_t i = 0; i < r->n; i++)
		r->pick[i] = (uint32_t)i;
	for (uint64_t i = 0; i < u; i++) {
		uint64_t j = i + rng_next(&r->rng) % (r->n - i);
		uint32_t t = r->pick[i];

		r->pick[i] = r->pick[j];
		r->pick[j] = t;
		old += make_value(r->pick[i], r->rev[r->pick[i]], r->want);
		r->rev[r->pick[i]]++;
	}
	if (r->ops->mark)
		r->ops->mark(r->store);
	for (uint64_t i = 0; i < u; i += BATCH) {
		size_t m = u - i < BATCH ? (size_t)(u - i) : BATCH;
		uint64_t bytes = 0;
		double t0;

		fill_batch(r, r->pick + i, 0, m, &bytes);
		res->doc_bytes += bytes;
		res->live_bytes += bytes;
		for (size_t j = 0; j < m; j++)
			res->live_bytes -= r->batch[j].klen;
		t0 = now();
		if (r->ops->update_batch(r->store, r->batch, m))
			return store_fail(r, "update");
		res->update_s += now() - t0;
		res->updates += m;
	}
	res->live_bytes -= old;
	if (r->ops->note)
		r->ops->note(r->store, res->note, sizeof(res->note));
	return 0;
}

static int phase_usage(struct run *r)
{
	if (r->ops->disk_usage(r->store, &r->res->disk_bytes))
		return store_fail(r, "usage");
	return 0;
}

/* Checks each document of the scan: ascending keys, value names it. */
static int scan_visit(void *arg, const char *key, size_t klen,
		      const void *val, size_t vlen)
{
	struct run *r = arg;
	size_t common = klen < r->last_klen ? klen : r->last_klen;
	int cmp = memcmp(r->last_key, key, common);
	char head[32];
	int hl;

	if (r->res->scanned && (cmp > 0 || (cmp == 0 && r->last_klen >= klen)))
		return run_fail(r, "scan", "%.*s: out of key order",
				(int)klen, key);
	hl = snprintf(head, sizeof(head), "{\"_id\":\"%.*s\"", (int)klen, key);
	if (klen >= KEY_CAP || vlen < (size_t)hl ||
	    memcmp(val, head, (size_t)hl))
		return run_fail(r, "scan", "%.*s: wrong value", (int)klen, key);
	memcpy(r->last_key, key, klen);
	r->last_klen = klen;
	r->res->scanned++;
	r->scan_bytes += klen + vlen;
	return 0;
}

static int phase_scan(struct run *r)
{
	double t0 = now();
	int rc = r->ops->scan(r->store, scan_visit, r);

	r->res->scan_s = now() - t0;
	if (rc && r->res->phase[0])
		return -1;
	if (rc)
		return store_fail(r, "scan");
	if (r->res->scanned != r->n)
		return run_fail(r, "scan", "saw %" PRIu64 " documents of %"
				PRIu64, r->res->scanned, r->n);
	if (r->scan_bytes != r->res->live_bytes)
		return run_fail(r, "scan", "saw %" PRIu64 " bytes, expected %"
				PRIu64, r->scan_bytes, r->res->live_bytes);
	return 0;
}

static int phase_close(struct run *r)
{
	double t0 = now();
	struct bench_store *s = r->store;
	int rc;

	r->store = NULL;
	rc = r->ops->close(s, r->res->err);
	r->res->close_s = now() - t0;
	if (rc)
		return run_fail(r, "close", "%s", r->res->err);
	return 0;
}

static int phase_reopen(struct run *r)
{
	double t0 = now(), ignored = 0;

	if (r->ops->reopen(r->dir, &r->store, r->res->err)) {
		r->store = NULL;
		return run_fail(r, "reopen", "%s", r->res->err);
	}
	if (read_check(r, rng_next(&r->rng) % r->n, "reopen", &ignored))
		return -1;
	r->res->reopen_s = now() - t0;
	return 0;
}

/* write_bytes of /proc/self/io: bytes this process dirtied for storage. */
static bool proc_write_bytes(uint64_t *out)
{
	FILE *f = fopen("/proc/self/io", "re");
	char line[128];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = sscanf(line, "write_bytes: %" SCNu64, out) == 1;
	fclose(f);
	return found;
}

/* Bytes written so far to the block device holding dir, after flushing
 * its file system. False when dir is not on a block device (tmpfs, a
 * btrfs subvolume, overlayfs). */
static bool disk_write_bytes(const char *dir, uint64_t *out)
{
	unsigned long long f[7];
	struct stat st;
	char path[64];
	FILE *f_stat;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	bool ok;

	if (fd < 0)
		return false;
	ok = syncfs(fd) == 0 && fstat(fd, &st) == 0;
	close(fd);
	if (!ok)
		return false;
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/stat",
		 major(st.st_dev), minor(st.st_dev));
	f_stat = fopen(path, "re");
	if (!f_stat)
		return false;
	/* reads, merged, sectors, ms, writes, merged, sectors written */
	ok = fscanf(f_stat, "%llu %llu %llu %llu %llu %llu %llu", &f[0], &f[1],
		    &f[2], &f[3], &f[4], &f[5], &f[6]) == 7;
	fclose(f_stat);
	*out = (uint64_t)f[6] * 512;
	return ok;
}

static long self_maxrss_kb(void)
{
	struct rusage ru;

	return getrusage(RUSAGE_SELF, &ru) ? 0 : ru.ru_maxrss;
}

static int run_phases(struct run *r)
{
	struct bench_result *res = r->res;
	uint64_t io0 = 0, io1 = 0, dev0 = 0, dev1 = 0;
	bool io_ok, dev_ok;

	dev_ok = disk_write_bytes(r->dir, &dev0);
	io_ok = proc_write_bytes(&io0);
	if (phase_insert(r) || phase_read(r) || phase_update(r))
		return -1;
	res->io_known = io_ok && proc_write_bytes(&io1) && io1 >= io0;
	res->io_bytes = io1 - io0;
	res->dev_known = dev_ok && disk_write_bytes(r->dir, &dev1) &&
			 dev1 >= dev0;
	res->dev_bytes = dev1 - dev0;
	if (phase_usage(r) || phase_scan(r) || phase_close(r) ||
	    phase_reopen(r))
		return -1;
	return phase_close(r);
}

/* The child: run every phase against one store, fill res. */
static void child_run(const struct bench_ops *ops, const char *dir,
		      const struct bench_opts *o, struct bench_result *res)
{
	struct run r = { .ops = ops, .dir = dir, .n = o->docs,
			 .update_percent = o->update_percent, .res = res,
			 .rng = SEED * 7 };

	r.rev = calloc(r.n, sizeof(*r.rev));
	r.pick = calloc(r.n, sizeof(*r.pick));
	r.vals = malloc(BATCH * VAL_CAP);
	r.got = malloc(VAL_CAP);
	r.want = malloc(VAL_CAP);
	if (!r.rev || !r.pick || !r.vals || !r.got || !r.want) {
		run_fail(&r, "setup", "out of memory");
		goto out_free;
	}
	res->base_rss_kb = self_maxrss_kb();
	if (ops->open(dir, &r.store, res->err)) {
		snprintf(res->phase, sizeof(res->phase), "open");
		goto out_free;
	}
	res->ran = true;
	res->ok = run_phases(&r) == 0;
	if (r.store) {
		char ignored[BENCH_ERRLEN];

		ops->close(r.store, ignored);    /* after a failure */
	}
out_free:
	free(r.want);
	free(r.got);
	free(r.vals);
	free(r.pick);
	free(r.rev);
}

static bool write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

static bool read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* Run one store in a child process; res gets its report. */
static void run_store(const struct bench_ops *ops, const char *root,
		      const struct bench_opts *o, struct bench_result *res)
{
	char dir[4096];
	struct rusage ru;
	int fds[2], status = 0;
	pid_t pid;
	bool got;

	memset(res, 0, sizeof(*res));
	snprintf(res->phase, sizeof(res->phase), "setup");
	if (bench_path(dir, sizeof(dir), root, ops->name, res->err))
		return;
	if (remove_tree(dir) && errno != ENOENT) {   /* an earlier round's */
		bench_fail(res->err, "%s: %s", dir, strerror(errno));
		return;
	}
	if (mkdir(dir, 0755)) {
		bench_fail(res->err, "%s: %s", dir, strerror(errno));
		return;
	}
	if (pipe2(fds, O_CLOEXEC)) {
		bench_fail(res->err, "pipe: %s", strerror(errno));
		return;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		bench_fail(res->err, "fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return;
	}
	if (pid == 0) {
		close(fds[0]);
		res->phase[0] = '\0';
		child_run(ops, dir, o, res);
		exit(write_full(fds[1], res, sizeof(*res)) ? 0 : 1);
	}
	close(fds[1]);
	got = read_full(fds[0], res, sizeof(*res));
	close(fds[0]);
	while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
		;
	res->maxrss_kb = ru.ru_maxrss;
	if (!got) {
		memset(res, 0, sizeof(*res));
		res->ran = true;
		snprintf(res->phase, sizeof(res->phase), "child");
		if (WIFSIGNALED(status))
			bench_fail(res->err, "killed by signal %d",
				   WTERMSIG(status));
		else
			bench_fail(res->err, "exited with status %d",
				   WEXITSTATUS(status));
	}
}

/* ---- the report ---- */

/* One column of the report: a figure computed from a result. */
struct metric {
	const char *name;
	const char *unit;
	bool higher_better;
	int decimals;
	bool (*get)(const struct bench_result *r, double *v);
};

static bool rate(uint64_t ops, double secs, double *v)
{
	*v = secs > 0 ? (double)ops / secs : 0;
	return secs > 0;
}

static bool m_insert(const struct bench_result *r, double *v)
{
	return rate(r->inserts, r->insert_s, v);
}

static bool m_read(const struct bench_result *r, double *v)
{
	return rate(r->reads, r->read_s, v);
}

static bool m_update(const struct bench_result *r, double *v)
{
	return rate(r->updates, r->update_s, v);
}

static bool m_scan(const struct bench_result *r, double *v)
{
	return rate(r->scanned, r->scan_s, v);
}

static bool m_reopen(const struct bench_result *r, double *v)
{
	*v = r->reopen_s * 1000;
	return true;
}

static bool m_space(const struct bench_result *r, double *v)
{
	*v = r->live_bytes ? (double)r->disk_bytes / (double)r->live_bytes : 0;
	return r->live_bytes > 0;
}

static bool m_write(const struct bench_result *r, double *v)
{
	*v = r->doc_bytes ? (double)r->dev_bytes / (double)r->doc_bytes : 0;
	return r->dev_known && r->doc_bytes > 0;
}

static bool m_io(const struct bench_result *r, double *v)
{
	*v = r->doc_bytes ? (double)r->io_bytes / (double)r->doc_bytes : 0;
	return r->io_known && r->doc_bytes > 0;
}

static bool m_rss(const struct bench_result *r, double *v)
{
	*v = (double)r->maxrss_kb / 1024;
	return r->maxrss_kb > 0;
}

static const struct metric metrics[] = {
	{ "insert", "docs/s", true, 0, m_insert },
	{ "read", "docs/s", true, 0, m_read },
	{ "update", "docs/s", true, 0, m_update },
	{ "scan", "docs/s", true, 0, m_scan },
	{ "reopen", "ms", false, 1, m_reopen },
	{ "space amp", "disk/live", false, 2, m_space },
	{ "write amp", "disk/doc", false, 2, m_write },
	{ "io amp", "proc/doc", false, 2, m_io },
	{ "peak RSS", "MiB", false, 1, m_rss },
};
#define NMETRICS (sizeof(metrics) / sizeof(metrics[0]))

static void print_value(const struct metric *m, const struct bench_result *r,
			int width)
{
	double v;

	if (r && r->ok && m->get(r, &v))
		printf(" %*.*f", width, m->decimals, v);
	else
		printf(" %*s", width, "-");
}

static void print_table(const bool *sel, const struct bench_result *res)
{
	printf("\n%-9s", "store");
	for (size_t m = 0; m < NMETRICS; m++)
		printf(" %10s", metrics[m].name);
	printf("\n%-9s", "");
	for (size_t m = 0; m < NMETRICS; m++)
		printf(" %10s", metrics[m].unit);
	printf("\n");
	for (size_t s = 0; s < NSTORES; s++) {
		if (!sel[s])
			continue;
		printf("%-9s", bench_stores[s]->name);
		if (!res[s].ok) {
			printf(" %s %s\n", res[s].ran ? "FAILED in" :
			       "skipped: cannot", res[s].phase);
			continue;
		}
		for (size_t m = 0; m < NMETRICS; m++)
			print_value(&metrics[m], &res[s], 10);
		printf("\n");
	}
}

static int store_index(const char *name)
{
	for (size_t s = 0; s < NSTORES; s++)
		if (!strcmp(bench_stores[s]->name, name))
			return (int)s;
	return -1;
}

/* How many times better a is than b on m (>1: a is better). */
static bool better(const struct metric *m, const struct bench_result *a,
		   const struct bench_result *b, double *x)
{
	double va, vb;

	if (!a->ok || !b->ok || !m->get(a, &va) || !m->get(b, &vb) ||
	    va <= 0 || vb <= 0)
		return false;
	*x = m->higher_better ? va / vb : vb / va;
	return true;
}

static void print_ratio(const struct metric *m, const struct bench_result *a,
			const struct bench_result *b)
{
	double x;

	if (better(m, a, b, &x))
		printf(" %7.3gx", x);
	else
		printf(" %8s", "-");
}

/* barrelfs against the best of the peer libraries, the bare log, LMDB.
 * Its own document layer is no peer: print_doc_overhead() compares it. */
static void print_ratios(const bool *sel, const struct bench_result *res)
{
	int me = store_index("barrelfs"), log = store_index("log");
	int lmdb = store_index("lmdb"), docs = store_index("documents");

	if (me < 0 || !sel[me] || !res[me].ok) {
		printf("\nno ratios: barrelfs did not run to the end\n");
		return;
	}
	printf("\nbarrelfs against the others: how many times better "
	       "(>1 better, <1 worse)\n");
	printf("%-10s %10s  %-8s %10s %8s %10s %8s %10s %8s\n", "metric",
	       "barrelfs", "best", "peer", "x best", "log", "x log", "lmdb",
	       "x lmdb");
	for (size_t m = 0; m < NMETRICS; m++) {
		const struct metric *mt = &metrics[m];
		int best = -1;
		double bv = 0, v;

		for (size_t s = 0; s < NSTORES; s++) {
			if ((int)s == me || (int)s == log || (int)s == docs ||
			    !sel[s] || !res[s].ok || !mt->get(&res[s], &v))
				continue;
			if (best < 0 || (mt->higher_better ? v > bv : v < bv)) {
				best = (int)s;
				bv = v;
			}
		}
		printf("%-10s", mt->name);
		print_value(mt, &res[me], 10);
		printf("  %-8s", best >= 0 ? bench_stores[best]->name : "-");
		print_value(mt, best >= 0 ? &res[best] : NULL, 10);
		if (best >= 0)
			print_ratio(mt, &res[me], &res[best]);
		else
			printf(" %8s", "-");
		print_value(mt, sel[log] ? &res[log] : NULL, 10);
		print_ratio(mt, &res[me], &res[log]);
		print_value(mt, sel[lmdb] ? &res[lmdb] : NULL, 10);
		print_ratio(mt, &res[me], &res[lmdb]);
		printf("\n");
	}
}

static const struct metric *metric_find(const char *name)
{
	for (size_t m = 0; m < NMETRICS; m++)
		if (!strcmp(metrics[m].name, name))
			return &metrics[m];
	return NULL;
}

/*
 * The document layer against the raw engine it runs on, for the writes
 * and reads both do: the extra time per operation, as a percentage of
 * the raw engine's ((raw docs/s / document docs/s - 1) * 100).
 */
static void print_doc_overhead(const bool *sel,
			       const struct bench_result *res)
{
	static const char *const ops[] = { "insert", "read", "update" };
	int raw = store_index("barrelfs"), docs = store_index("documents");

	if (!sel[raw] || !sel[docs])
		return;
	if (!res[raw].ok || !res[docs].ok) {
		printf("\nno document layer overhead: barrelfs or documents "
		       "did not run to the end\n");
		return;
	}
	printf("\ndocument layer vs raw engine: extra time per operation "
	       "(goal: at most %.0f%%)\n", DOC_OVERHEAD_GOAL);
	printf("%-10s %10s %10s %9s\n", "metric", "barrelfs", "documents",
	       "overhead");
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		const struct metric *mt = metric_find(ops[i]);
		double x;

		printf("%-10s", mt->name);
		print_value(mt, &res[raw], 10);
		print_value(mt, &res[docs], 10);
		if (better(mt, &res[raw], &res[docs], &x))
			printf(" %8.1f%%  %s\n", (x - 1) * 100,
			       (x - 1) * 100 <= DOC_OVERHEAD_GOAL ?
			       "ok" : "over the goal");
		else
			printf(" %9s\n", "-");
	}
}

static void print_notes(const bool *sel, const struct bench_result *res)
{
	bool first = true;

	for (size_t s = 0; s < NSTORES; s++) {
		if (!sel[s] || !res[s].ok || !res[s].note[0])
			continue;
		printf("%s%s: %s\n", first ? "\n" : "", bench_stores[s]->name,
		       res[s].note);
		first = false;
	}
}

static void print_failures(const bool *sel, const struct bench_result *res)
{
	for (size_t s = 0; s < NSTORES; s++)
		if (sel[s] && !res[s].ok)
			printf("%s: %s %s: %s\n", bench_stores[s]->name,
			       res[s].ran ? "failed in" : "skipped: cannot",
			       res[s].phase, res[s].err);
}

/* ---- the machine and the directory ---- */

static const char *fs_name(long type)
{
	switch ((unsigned long)type) {
	case 0xEF53: return "ext4";
	case 0x58465342: return "xfs";
	case 0x9123683E: return "btrfs";
	case 0x01021994: return "tmpfs";
	case 0x794c7630: return "overlayfs";
	case 0x2fc12fc1: return "zfs";
	case 0xF2F52010: return "f2fs";
	case 0x6969: return "nfs";
	default: return "unknown fs";
	}
}

static void cpu_model(char *buf, size_t size)
{
	FILE *f = fopen("/proc/cpuinfo", "re");
	char line[256];

	snprintf(buf, size, "unknown cpu");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');

		if (strncmp(line, "model name", 10) || !colon)
			continue;
		colon += 1 + strspn(colon + 1, " \t");
		colon[strcspn(colon, "\n")] = '\0';
		snprintf(buf, size, "%s", colon);
		break;
	}
	fclose(f);
}

static void print_header(const char *root, const struct bench_opts *o)
{
	struct utsname u;
	struct statfs sf;
	char cpu[128];
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	const char *fs = statfs(root, &sf) ? "unknown fs" : fs_name(sf.f_type);

	if (uname(&u))
		snprintf(u.release, sizeof(u.release), "unknown");
	cpu_model(cpu, sizeof(cpu));
	printf("barrelfs benchmark: %" PRIu64 " documents of ~1 KiB, durable "
	       "commits of %d, %u%% updated, %" PRIu64 " random reads\n",
	       o->docs, BATCH, o->update_percent, o->docs);
	printf("machine: %ld cpus (%s), %.1f GiB RAM, Linux %s\n",
	       sysconf(_SC_NPROCESSORS_ONLN), cpu,
	       (double)pages * (double)psize / (1 << 30), u.release);
	printf("directory: %s (%s)\n", root, fs);
	if (!strcmp(fs, "tmpfs"))
		printf("warning: tmpfs: fsync costs nothing here; use --dir "
		       "on a real disk for figures that mean something\n");
	printf("each store runs in its own process; reopen is timed with a "
	       "warm page cache\n"
	       "space amp: bytes allocated on disk after the updates / live "
	       "key+value bytes\n"
	       "write amp: bytes the disk wrote during inserts and updates / "
	       "key+value bytes\n"
	       "           written (io amp: the same from /proc/self/io "
	       "write_bytes)\n\n");
}

/* Make the run's directory: o->dir (created or empty) or a fresh one. */
static int make_root(const struct bench_opts *o, char *root, size_t size,
		     bool *created)
{
	const char *base = getenv("TMPDIR");
	DIR *d;
	struct dirent *de;
	int n;

	*created = false;
	if (!o->dir) {
		if (!base || !*base)
			base = "/var/tmp";
		n = snprintf(root, size, "%s/barrel-bench.XXXXXX", base);
		if (n < 0 || (size_t)n >= size || !mkdtemp(root)) {
			fprintf(stderr, "barrelctl: bench: %s: %s\n", base,
				n < 0 || (size_t)n >= size ?
				"path too long" : strerror(errno));
			return -1;
		}
		*created = true;
		return 0;
	}
	n = snprintf(root, size, "%s", o->dir);
	if (n < 0 || (size_t)n >= size)
		return -1;
	if (mkdir(root, 0755) == 0)
		*created = true;
	else if (errno != EEXIST)
		goto out_err;
	d = opendir(root);
	if (!d)
		goto out_err;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			break;
	closedir(d);
	if (de) {
		fprintf(stderr, "barrelctl: bench: %s: not empty\n", root);
		return -1;
	}
	return 0;
out_err:
	fprintf(stderr, "barrelctl: bench: %s: %s\n", root, strerror(errno));
	return -1;
}

/* Mark the stores named in list (NULL: all); -1 on an unknown name. */
static int select_stores(const char *list, bool *sel)
{
	const char *p = list;

	for (size_t s = 0; s < NSTORES; s++)
		sel[s] = list == NULL;
	while (p && *p) {
		size_t len = strcspn(p, ",");
		bool found = false;

		for (size_t s = 0; s < NSTORES; s++) {
			if (strlen(bench_stores[s]->name) == len &&
			    !strncmp(bench_stores[s]->name, p, len))
				found = sel[s] = true;
		}
		if (!found && len) {
			fprintf(stderr, "barrelctl: bench: unknown store "
				"'%.*s' (stores: %s)\n", (int)len, p,
				bench_store_names());
			return -1;
		}
		p += len + (p[len] == ',');
	}
	return 0;
}

const char *bench_store_names(void)
{
	return "barrelfs,documents,sqlite,lmdb,rocksdb,log";
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The median of v[0..n) (n >= 1), which it sorts. */
static double median_of(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * One store's rounds r[0..n) as one result, field by field the median:
 * every figure of the report follows one of these fields up or down, so
 * it is the median of that figure. A round that failed is the result.
 */
static void median_result(const struct bench_result *r, size_t n,
			  struct bench_result *out)
{
	double v[BENCH_MAX_ROUNDS];

	*out = r[0];
	for (size_t i = 0; i < n; i++)
		if (!r[i].ok) {
			*out = r[i];
			return;
		}
#define MEDIAN(field, type)                                              \
	do {                                                             \
		for (size_t i = 0; i < n; i++)                           \
			v[i] = (double)r[i].field;                       \
		out->field = (type)median_of(v, n);                      \
	} while (0)
	MEDIAN(insert_s, double);
	MEDIAN(read_s, double);
	MEDIAN(update_s, double);
	MEDIAN(scan_s, double);
	MEDIAN(close_s, double);
	MEDIAN(reopen_s, double);
	MEDIAN(disk_bytes, uint64_t);
	MEDIAN(dev_bytes, uint64_t);
	MEDIAN(io_bytes, uint64_t);
	MEDIAN(base_rss_kb, long);
	MEDIAN(maxrss_kb, long);
#undef MEDIAN
}

int bench_run(const struct bench_opts *o)
{
	static struct bench_result rounds[BENCH_MAX_ROUNDS][NSTORES];
	struct bench_result res[NSTORES], one[BENCH_MAX_ROUNDS];
	bool sel[NSTORES], created;
	char root[4096];
	int status = 0;

	if (select_stores(o->stores, sel))
		return 2;
	if (o->docs < 1 || o->docs > UINT32_MAX) {
		fprintf(stderr, "barrelctl: bench: --docs must be 1..%" PRIu32
			"\n", UINT32_MAX);
		return 2;
	}
	if (o->update_percent < 1 || o->update_percent > 100 ||
	    o->rounds < 1 || o->rounds > BENCH_MAX_ROUNDS) {
		fprintf(stderr, "barrelctl: bench: --updates must be 1..100 "
			"and --rounds 1..%d\n", BENCH_MAX_ROUNDS);
		return 2;
	}
	if (make_root(o, root, sizeof(root), &created))
		return 1;
	print_header(root, o);
	memset(rounds, 0, sizeof(rounds));
	/* rounds interleave the stores, so a slow spell of the machine
	 * falls on all of them */
	for (unsigned k = 0; k < o->rounds; k++) {
		for (size_t s = 0; s < NSTORES; s++) {
			struct bench_result *r = &rounds[k][s];
			double t0 = now();

			if (!sel[s])
				continue;
			printf("running %-9s", bench_stores[s]->name);
			if (o->rounds > 1)
				printf(" (round %u of %u)", k + 1, o->rounds);
			fflush(stdout);
			run_store(bench_stores[s], root, o, r);
			printf(" %s in %.1f s\n", r->ok ? "done" : r->ran ?
			       "FAILED" : "skipped", now() - t0);
			if (r->ran && !r->ok)
				status = 1;
		}
	}
	for (size_t s = 0; s < NSTORES; s++) {
		for (unsigned k = 0; k < o->rounds; k++)
			one[k] = rounds[k][s];
		median_result(one, o->rounds, &res[s]);
	}
	if (o->rounds > 1)
		printf("\nfigures: the median of %u rounds\n", o->rounds);
	print_table(sel, res);
	print_ratios(sel, res);
	print_doc_overhead(sel, res);
	print_notes(sel, res);
	print_failures(sel, res);
	if (o->keep)
		printf("\nkept %s\n", root);
	else if (created ? remove_tree(root) : remove_at(open(root,
			O_RDONLY | O_DIRECTORY | O_CLOEXEC)))
		fprintf(stderr, "barrelctl: bench: could not remove all of "
			"%s\n", root);
	return status;
}
