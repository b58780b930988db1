/*
 * bench_fs: the timing driver of the mount benchmark (tools/bench_mount.sh
 * mounts the targets and prints the report).
 *
 *     bench_fs [--files N] DIR
 *
 * runs a small-file workload in the existing directory DIR, as an editor
 * or a script would use a barrelfs database directory, and prints one line
 * per phase on standard output:
 *
 *     PHASE OPS SECONDS OPS_PER_SECOND MICROSECONDS_PER_OP
 *
 * The files are d00001.json ... (N of them), each a distinct JSON object
 * of about 1 KiB from a fixed-seed generator; the bodies of a phase are
 * made before its clock starts. The phases, in order, each once:
 *   1. create   open(O_CREAT|O_WRONLY|O_TRUNC), write the body, close;
 *   2. stat     stat() each file; its size must be the body's;
 *   3. read     open, read to end of file, close; checked byte for byte;
 *   4. rewrite  write .dNNNNN.json.tmp with a new body (revision 2), close,
 *               rename it over dNNNNN.json;
 *   5. delete   unlink each file;
 *   6. statfs   fstatfs() of DIR, N times: the kernel never caches it, so
 *               on a FUSE mount each is one bare round trip to the daemon.
 * Not timed: after rewrite every file is read back and must hold its new
 * body; after delete no *.json name may be left in DIR. A phase's line is
 * printed once its check passed, so the first phase missing from the
 * output is the one that failed.
 *
 * Nothing calls fsync and the page cache is never dropped: the figures are
 * those of a warm cache, and of close() as the file system implements it.
 *
 * Exit status: 0; 1 when a call failed or data came back wrong (the call,
 * the file and the reason on standard error); 2 on bad usage.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#define FILES_DEFAULT 10000
#define FILES_MAX 1000000
#define BODY_MIN 900            /* body sizes, bytes */
#define BODY_MAX 1150
#define BODY_CAP 1280           /* room for any body */
#define NAME_CAP 24             /* ".d1000000.json.tmp" and its NUL */
#define SEED 0x62656e63685f6673ULL

/* The names of the files and their bodies at one revision. */
struct corpus {
	uint32_t n;
	unsigned rev;              /* revision the bodies are at; 0: none */
	char (*name)[NAME_CAP];    /* "d00001.json", ... */
	char (*tmp)[NAME_CAP];     /* ".d00001.json.tmp", ... */
	char *body;                /* n * BODY_CAP; body i at i * BODY_CAP */
	size_t *len;               /* length of body i */
};

/* One run in one directory, and what failed in it. */
struct run {
	int dfd;                   /* the directory under test */
	struct corpus c;
	char *buf;                 /* BODY_CAP + 1 bytes, for reads */
	const char *call;          /* the failed call, or "check" */
	uint32_t at;               /* the file it failed on */
	char why[128];             /* for "check": what was wrong */
};

/* One phase: op on every file, timed, then an untimed after (or NULL). */
struct phase {
	const char *name;
	unsigned rev;              /* the bodies op needs; 0: none */
	int (*op)(struct run *r, uint32_t i);
	int (*after)(struct run *r);
};

/* ---- the files ---- */

/* xorshift64*: small, and the same sequence everywhere. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

static const char *const words[] = {
	"mount", "inode", "dentry", "lookup", "page", "cache", "flush",
	"rename", "editor", "spool", "revision", "winner", "folder", "json",
	"an", "the", "of", "and", "to", "in", "is", "at", "by", "each",
};
#define NWORDS (sizeof(words) / sizeof(words[0]))

/* Body of file i (0-based) at revision rev into buf (BODY_CAP); its
 * length. A JSON object with no reserved (_-prefixed) member, so a
 * document store keeps it byte for byte. */
static size_t make_body(uint32_t i, unsigned rev, char *buf)
{
	uint64_t s = (SEED ^ ((uint64_t)i << 8 | rev)) | 1;
	size_t target, len;

	rng_next(&s);
	target = BODY_MIN + rng_next(&s) % (BODY_MAX - BODY_MIN + 1);
	len = (size_t)snprintf(buf, BODY_CAP, "{\"name\":\"d%05" PRIu32
			       "\",\"rev\":%u,\"score\":%" PRIu64 ",\"tags\":"
			       "[\"%s\",\"%s\"],\"text\":\"", i + 1, rev,
			       rng_next(&s) % 100000,
			       words[rng_next(&s) % NWORDS],
			       words[rng_next(&s) % NWORDS]);
	while (len + 16 < target) {
		const char *w = words[rng_next(&s) % NWORDS];
		size_t wl = strlen(w);

		memcpy(buf + len, w, wl);
		len += wl;
		buf[len++] = ' ';
	}
	memcpy(buf + len, "\"}\n", 3);
	return len + 3;
}

/* Make every body of c at revision rev. */
static void corpus_fill(struct corpus *c, unsigned rev)
{
	if (c->rev == rev)
		return;
	for (uint32_t i = 0; i < c->n; i++)
		c->len[i] = make_body(i, rev, c->body + (size_t)i * BODY_CAP);
	c->rev = rev;
}

/* Allocate c for n files and name them; -ENOMEM. Free with corpus_release
 * (also after a failure). */
static int corpus_init(struct corpus *c, uint32_t n)
{
	memset(c, 0, sizeof(*c));
	c->n = n;
	c->name = calloc(n, sizeof(*c->name));
	c->tmp = calloc(n, sizeof(*c->tmp));
	c->body = malloc((size_t)n * BODY_CAP);
	c->len = calloc(n, sizeof(*c->len));
	if (!c->name || !c->tmp || !c->body || !c->len)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		snprintf(c->name[i], NAME_CAP, "d%05" PRIu32 ".json", i + 1);
		snprintf(c->tmp[i], NAME_CAP, ".%s.tmp", c->name[i]);
	}
	return 0;
}

static void corpus_release(struct corpus *c)
{
	free(c->len);
	free(c->body);
	free(c->tmp);
	free(c->name);
}

/* ---- failures ---- */

/* Record that call failed on file i with error err; returns -err. */
static int run_sys_fail(struct run *r, uint32_t i, const char *call, int err)
{
	r->call = call;
	r->at = i;
	return err > 0 ? -err : -EIO;
}

static int run_check_fail(struct run *r, uint32_t i, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Record that file i came back wrong; returns -EBADMSG. */
static int run_check_fail(struct run *r, uint32_t i, const char *fmt, ...)
{
	va_list ap;

	r->call = "check";
	r->at = i;
	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

static void run_report(const struct run *r, const char *phase, int rc)
{
	const char *file = r->at < r->c.n ? r->c.name[r->at] : "-";

	if (rc == -EBADMSG && !strcmp(r->call, "check"))
		fprintf(stderr, "bench_fs: %s: %s: %s\n", phase, file, r->why);
	else
		fprintf(stderr, "bench_fs: %s: %s: %s: %s\n", phase, file,
			r->call ? r->call : "setup", strerror(-rc));
}

/* ---- the operations, one file each ---- */

static int write_full(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read fd to end of file or cap bytes into buf; *len gets how many. */
static int read_full(int fd, char *buf, size_t cap, size_t *len)
{
	*len = 0;
	while (*len < cap) {
		ssize_t n = read(fd, buf + *len, cap - *len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		*len += (size_t)n;
	}
	return 0;
}

/* Create or truncate name and write the body of file i into it. */
static int write_body(struct run *r, uint32_t i, const char *name)
{
	const char *body = r->c.body + (size_t)i * BODY_CAP;
	int fd, rc;

	fd = openat(r->dfd, name, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC,
		    0644);
	if (fd < 0)
		return run_sys_fail(r, i, "open", errno);
	rc = write_full(fd, body, r->c.len[i]);
	if (rc) {
		close(fd);
		return run_sys_fail(r, i, "write", -rc);
	}
	if (close(fd))
		return run_sys_fail(r, i, "close", errno);
	return 0;
}

/* Read file i into r->buf (one byte more than any body); *len gets its
 * length. */
static int read_body(struct run *r, uint32_t i, size_t *len)
{
	int fd = openat(r->dfd, r->c.name[i], O_RDONLY | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return run_sys_fail(r, i, "open", errno);
	rc = read_full(fd, r->buf, BODY_CAP + 1, len);
	if (rc) {
		close(fd);
		return run_sys_fail(r, i, "read", -rc);
	}
	if (close(fd))
		return run_sys_fail(r, i, "close", errno);
	return 0;
}

static int op_create(struct run *r, uint32_t i)
{
	return write_body(r, i, r->c.name[i]);
}

static int op_stat(struct run *r, uint32_t i)
{
	struct stat st;

	if (fstatat(r->dfd, r->c.name[i], &st, 0))
		return run_sys_fail(r, i, "stat", errno);
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != r->c.len[i])
		return run_check_fail(r, i, "stat: mode %o size %jd, expected "
				      "a regular file of %zu bytes",
				      (unsigned)st.st_mode,
				      (intmax_t)st.st_size, r->c.len[i]);
	return 0;
}

static int op_read(struct run *r, uint32_t i)
{
	const char *want = r->c.body + (size_t)i * BODY_CAP;
	size_t len;
	int rc = read_body(r, i, &len);

	if (rc)
		return rc;
	if (len != r->c.len[i] || memcmp(r->buf, want, len))
		return run_check_fail(r, i, "read %zu%s bytes, not revision "
				      "%u's %zu", len, len > BODY_CAP ? "+" :
				      "", r->c.rev, r->c.len[i]);
	return 0;
}

static int op_rewrite(struct run *r, uint32_t i)
{
	int rc = write_body(r, i, r->c.tmp[i]);

	if (rc)
		return rc;
	if (renameat(r->dfd, r->c.tmp[i], r->dfd, r->c.name[i]))
		return run_sys_fail(r, i, "rename", errno);
	return 0;
}

static int op_delete(struct run *r, uint32_t i)
{
	if (unlinkat(r->dfd, r->c.name[i], 0))
		return run_sys_fail(r, i, "unlink", errno);
	return 0;
}

static int op_statfs(struct run *r, uint32_t i)
{
	struct statfs sf;

	if (fstatfs(r->dfd, &sf))
		return run_sys_fail(r, i, "statfs", errno);
	return 0;
}

/* ---- the untimed checks ---- */

/* Every file holds the bodies at the corpus's revision. */
static int check_bodies(struct run *r)
{
	int rc = 0;

	for (uint32_t i = 0; i < r->c.n && !rc; i++)
		rc = op_read(r, i);
	return rc;
}

/* No *.json name is left in the directory. */
static int check_gone(struct run *r)
{
	int fd = openat(r->dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *d;
	int rc = 0;

	if (fd < 0)
		return run_sys_fail(r, r->c.n, "open", errno);
	d = fdopendir(fd);
	if (!d) {
		rc = run_sys_fail(r, r->c.n, "opendir", errno);
		close(fd);
		return rc;
	}
	errno = 0;
	while (!rc && (de = readdir(d)))
		if (strstr(de->d_name, ".json"))
			rc = run_check_fail(r, r->c.n, "%s is still listed "
					    "after the deletes", de->d_name);
	if (!rc && errno)
		rc = run_sys_fail(r, r->c.n, "readdir", errno);
	closedir(d);
	return rc;
}

/* ---- the driver ---- */

static const struct phase phases[] = {
	{ "create", 1, op_create, NULL },
	{ "stat", 1, op_stat, NULL },
	{ "read", 1, op_read, NULL },
	{ "rewrite", 2, op_rewrite, check_bodies },
	{ "delete", 0, op_delete, check_gone },
	{ "statfs", 0, op_statfs, NULL },
};
#define NPHASES (sizeof(phases) / sizeof(phases[0]))

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run phase p on every file, then its check, then print its line: the
 * first phase without a line is the one that failed. */
static int run_phase(struct run *r, const struct phase *p)
{
	double t0, secs;
	int rc = 0;

	if (p->rev)
		corpus_fill(&r->c, p->rev);
	t0 = now();
	for (uint32_t i = 0; i < r->c.n && !rc; i++)
		rc = p->op(r, i);
	secs = now() - t0;
	if (!rc && p->after)
		rc = p->after(r);
	if (rc)
		return rc;
	printf("%s %" PRIu32 " %.6f %.1f %.3f\n", p->name, r->c.n, secs,
	       secs > 0 ? r->c.n / secs : 0, secs * 1e6 / r->c.n);
	fflush(stdout);
	return 0;
}

/* Run every phase in dir; 0, or 1 after printing why it failed. */
static int bench_fs_run(const char *dir, uint32_t n)
{
	struct run r = { .dfd = -1 };
	int rc;

	rc = corpus_init(&r.c, n);
	r.buf = malloc(BODY_CAP + 1);
	if (rc || !r.buf) {
		fprintf(stderr, "bench_fs: out of memory\n");
		rc = -ENOMEM;
		goto out_free;
	}
	r.dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r.dfd < 0) {
		fprintf(stderr, "bench_fs: %s: %s\n", dir, strerror(errno));
		rc = -errno;
		goto out_free;
	}
	for (size_t p = 0; p < NPHASES && !rc; p++)
		if ((rc = run_phase(&r, &phases[p])))
			run_report(&r, phases[p].name, rc);
	close(r.dfd);
out_free:
	free(r.buf);
	corpus_release(&r.c);
	return rc ? 1 : 0;
}

static int usage(FILE *out, int status)
{
	fprintf(out, "usage: bench_fs [--files N] DIR\n\n"
		"Time a small-file workload in the existing directory DIR:\n"
		"create, stat, read, rewrite (through a rename), delete N JSON\n"
		"files of ~1 KiB, then N statfs calls. One line per phase:\n"
		"PHASE OPS SECONDS OPS_PER_SECOND MICROSECONDS_PER_OP\n\n"
		"  -n, --files N        files (default %d, at most %d)\n"
		"  -h, --help           show this help\n",
		FILES_DEFAULT, FILES_MAX);
	return status;
}

static bool parse_files(const char *s, uint32_t *n)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < 1 || v > FILES_MAX)
		return false;
	*n = (uint32_t)v;
	return true;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "files", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	uint32_t n = FILES_DEFAULT;
	int opt;

	while ((opt = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (!parse_files(optarg, &n)) {
				fprintf(stderr, "bench_fs: bad --files '%s'\n",
					optarg);
				return usage(stderr, 2);
			}
			break;
		case 'h': return usage(stdout, 0);
		default: return usage(stderr, 2);
		}
	}
	if (optind != argc - 1)
		return usage(stderr, 2);
	return bench_fs_run(argv[optind], n);
}
