/*
 * barrelsync: replicate one database into another (barrelsync(1)).
 *
 *   barrelsync [--continuous] [--batch N] [--create-target] [--quiet]
 *              SRC DST
 *
 * Steps: parse options; resolve SRC and DST into endpoint specs
 * (client.h) — a URL as is; a database directory of a barrelfs mount
 * through the UNIX socket its ".status" names; a DATADIR/db nothing
 * holds by opening DATADIR here and serving it on a socket in a private
 * directory; replicate (repl.h) with SIGINT/SIGTERM asking the
 * replicator to stop after its checkpoint; print the summary; stop the
 * servers started here; exit with a status scripts can trust (EXIT_*).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/db.h"
#include "engine/error.h"
#include "sync/catalog.h"
#include "sync/http.h"
#include "sync/repl.h"

#define PROG "barrelsync"

enum {
	EXIT_DONE = 0,          /* replicated, complete */
	EXIT_USAGE = 1,         /* bad usage */
	EXIT_ENDPOINT = 2,      /* an endpoint missing, unreachable, refused */
	EXIT_DOCS = 3,          /* some documents failed to write */
	EXIT_STOPPED = 4,       /* interrupted (SIGINT, SIGTERM) */
	EXIT_OTHER = 5,         /* any other error */
};

/* A DATADIR served here for the run. */
struct local {
	char datadir[PATH_MAX];       /* realpath */
	char dir[PATH_MAX];           /* private mkdtemp() directory */
	char sock[PATH_MAX + 16];
	struct benv *env;
	struct catalog *cat;
	struct srv *srv;
};

struct cli {
	struct repl_opts o;
	bool quiet;
	const char *src, *dst;
	struct local locals[2];
	size_t nlocals;
};

static struct repl *_Atomic g_repl;    /* for the signal handler */
static atomic_bool g_stop;             /* a signal came */
static atomic_bool g_done;             /* the run ended */

static void usage(FILE *f)
{
	fprintf(f, "usage: " PROG " [--continuous] [--batch N] "
		"[--create-target] [--quiet] SRC DST\n\n"
		"Replicate database SRC into DST with CouchDB's replication\n"
		"protocol (barrelsync(1)). Each is an http(s) URL of a database,\n"
		"a database directory of a barrelfs mount, or DATADIR/DB of a\n"
		"data directory nothing else holds.\n\n"
		"options:\n"
		"  -c, --continuous     follow SRC until SIGINT or SIGTERM\n"
		"  -b, --batch N        changes per batch (default %u)\n"
		"  -t, --create-target  create DST when it is a missing URL\n"
		"  -q, --quiet          no progress, no summary\n"
		"  -h, --help, -V, --version\n\n"
		"exit status: 0 done, 1 usage, 2 an endpoint missing, unreachable\n"
		"or refused, 3 documents failed to write, 4 interrupted, 5 other\n"
		"errors\n", REPL_BATCH);
}

/* Options into c; 0 to go on, else the exit status (help: -1 → 0). */
static int cli_parse(struct cli *c, int argc, char **argv)
{
	static const struct option longs[] = {
		{ "continuous", no_argument, NULL, 'c' },
		{ "batch", required_argument, NULL, 'b' },
		{ "create-target", no_argument, NULL, 't' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	long v;
	int ch;

	repl_opts_init(&c->o);
	while ((ch = getopt_long(argc, argv, "cb:tqhV", longs, NULL)) != -1) {
		switch (ch) {
		case 'c': c->o.continuous = true; break;
		case 't': c->o.create_target = true; break;
		case 'q': c->quiet = true; break;
		case 'b':
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || v < 1 || v > 100000) {
				fprintf(stderr, PROG ": --batch: a number from "
					"1 to 100000\n");
				return EXIT_USAGE;
			}
			c->o.batch = (unsigned)v;
			break;
		case 'h': usage(stdout); return -1;
		case 'V': printf(PROG " %s\n", PACKAGE_VERSION); return -1;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (argc - optind != 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	c->src = argv[optind];
	c->dst = argv[optind + 1];
	return 0;
}

/* ---- endpoints ---- */

static bool is_spec(const char *s)
{
	return !strncmp(s, "http://", 7) || !strncmp(s, "https://", 8) ||
	       !strncmp(s, "unix:", 5);
}

/* Split path into its parent directory and its last name (no trailing
 * slashes). false when there is no last name. */
static bool split_path(const char *path, char *parent, size_t psize,
		       char *name, size_t nsize)
{
	size_t len = strlen(path);
	const char *slash;

	while (len > 1 && path[len - 1] == '/')
		len--;
	slash = memrchr(path, '/', len);
	if (!slash) {
		snprintf(parent, psize, ".");
	} else if (slash == path) {
		snprintf(parent, psize, "/");
	} else {
		snprintf(parent, psize, "%.*s", (int)(slash - path), path);
	}
	slash = slash ? slash + 1 : path;
	if (path + len <= slash)
		return false;
	snprintf(name, nsize, "%.*s", (int)(path + len - slash), slash);
	return strcmp(name, ".") && strcmp(name, "..");
}

/*
 * The socket a mount at parent names in its ".status": 1 with *spec set
 * when parent is a mount, 0 when it has no ".status", else an exit
 * status (the message printed).
 */
static int mount_spec(const char *parent, const char *db, char **spec)
{
	char path[PATH_MAX + 16];
	struct json_object *st, *sock;
	size_t len;

	snprintf(path, sizeof(path), "%s/.status", parent);
	if (access(path, F_OK) < 0)
		return 0;
	st = json_object_from_file(path);
	if (!st || !json_object_object_get_ex(st, "socket", &sock) ||
	    !json_object_is_type(sock, json_type_string)) {
		fprintf(stderr, PROG ": %s: the mount names no API socket; give "
			"the server's URL instead\n", path);
		json_object_put(st);
		return EXIT_ENDPOINT;
	}
	len = strlen(json_object_get_string(sock)) + strlen(db) + 8;
	*spec = malloc(len);
	if (*spec)
		snprintf(*spec, len, "unix:%s:/%s", json_object_get_string(sock),
			 db);
	json_object_put(st);
	return *spec ? 1 : EXIT_OTHER;
}

/* Serve datadir here (once per DATADIR): *out points at its server. */
static int local_serve(struct cli *c, const char *datadir, bool create,
		       struct local **out)
{
	struct srv_opts so = { .server_name = PROG };
	char real[PATH_MAX], err[SRV_ERRLEN] = "";
	struct local *l;
	const char *tmp = getenv("TMPDIR");
	int rc;

	if (create && mkdir(datadir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, PROG ": %s: %s\n", datadir, strerror(errno));
		return EXIT_ENDPOINT;
	}
	if (!realpath(datadir, real)) {
		fprintf(stderr, PROG ": %s: %s (not a URL, a mount's database "
			"directory or DATADIR/DB)\n", datadir, strerror(errno));
		return EXIT_ENDPOINT;
	}
	for (size_t i = 0; i < c->nlocals; i++) {
		if (!strcmp(c->locals[i].datadir, real)) {
			*out = &c->locals[i];
			return 0;
		}
	}
	l = &c->locals[c->nlocals];
	memset(l, 0, sizeof(*l));
	snprintf(l->datadir, sizeof(l->datadir), "%s", real);
	rc = benv_open(real, NULL, &l->env);
	if (rc == BARREL_E_LOCKED) {
		fprintf(stderr, PROG ": %s is in use by another process (a "
			"mount or barrel-syncd); give the mount's database "
			"directory or the server's URL instead\n", real);
		return EXIT_ENDPOINT;
	}
	if (rc < 0) {
		fprintf(stderr, PROG ": %s: %s\n", real, barrel_strerror(rc));
		return EXIT_ENDPOINT;
	}
	c->nlocals++;
	snprintf(l->dir, sizeof(l->dir), "%s/barrelsync-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(l->dir)) {
		l->dir[0] = '\0';
		fprintf(stderr, PROG ": mkdtemp: %s\n", strerror(errno));
		return EXIT_OTHER;
	}
	{
		size_t n = strlen(l->dir);

		memcpy(l->sock, l->dir, n);
		memcpy(l->sock + n, "/api.sock", sizeof("/api.sock"));
	}
	so.unix_path = l->sock;
	if ((rc = catalog_env_new(l->env, NULL, false, &l->cat)) < 0 ||
	    (rc = srv_start(l->cat, &so, &l->srv, err)) < 0) {
		fprintf(stderr, PROG ": serving %s: %s %s\n", real,
			barrel_strerror(rc), err);
		return EXIT_OTHER;
	}
	*out = l;
	return 0;
}

static void local_stop(struct local *l)
{
	srv_stop(l->srv);
	catalog_env_free(l->cat);
	if (l->env)
		benv_close(l->env);
	if (l->sock[0])
		unlink(l->sock);
	if (l->dir[0])
		rmdir(l->dir);
}

/* arg as an endpoint spec into *spec (malloc'ed), and for a DATADIR
 * served here a stable name, "DATADIR/DB", into *label (malloc'ed; the
 * replication id must not change with the socket's directory). 0 or an
 * exit status. A database given as a path is created when it is the
 * target. */
static int endpoint(struct cli *c, const char *arg, bool is_dst, char **spec,
		    char **label)
{
	char parent[PATH_MAX], db[PATH_MAX];
	struct local *l;
	size_t len;
	int rc;

	if (is_spec(arg))
		return (*spec = strdup(arg)) ? 0 : EXIT_OTHER;
	if (!split_path(arg, parent, sizeof(parent), db, sizeof(db)) ||
	    !bdb_name_valid(db)) {
		fprintf(stderr, PROG ": %s: not a URL, nor a path ending in a "
			"database name\n", arg);
		return EXIT_USAGE;
	}
	rc = mount_spec(parent, db, spec);
	if (rc == 1) {
		c->o.create_target |= is_dst;
		return 0;
	}
	if (rc)
		return rc;
	rc = local_serve(c, parent, is_dst, &l);
	if (rc)
		return rc;
	c->o.create_target |= is_dst;
	len = strlen(l->sock) + strlen(l->datadir) + strlen(db) + 8;
	if (!(*spec = malloc(len)) || !(*label = malloc(len)))
		return EXIT_OTHER;
	snprintf(*spec, len, "unix:%s:/%s", l->sock, db);
	snprintf(*label, len, "%s/%s", l->datadir, db);
	return 0;
}

/* ---- progress ---- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Redraw the progress line on stderr every 250 ms until g_done. */
static void *progress_main(void *arg)
{
	struct timespec tick = { 0, 250 * 1000 * 1000 };
	double t0 = now_s();
	struct repl_stats st;

	(void)arg;
	while (!atomic_load(&g_done)) {
		double dt = now_s() - t0;

		repl_stats(atomic_load(&g_repl), &st);
		fprintf(stderr, "\r\033[K" PROG ": %s: %llu read, %llu written, "
			"%llu failed, %llu pending, %.0f docs/s",
			repl_state_name(st.state),
			(unsigned long long)st.docs_read,
			(unsigned long long)st.docs_written,
			(unsigned long long)st.doc_write_failures,
			(unsigned long long)st.pending,
			dt > 0 ? (double)st.docs_written / dt : 0.0);
		nanosleep(&tick, NULL);
	}
	fprintf(stderr, "\r\033[K");
	return NULL;
}

static void on_signal(int sig)
{
	struct repl *r = atomic_load(&g_repl);

	(void)sig;
	atomic_store(&g_stop, true);
	if (r)
		repl_stop(r);          /* async-signal-safe */
}

static void signals_init(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* The exit status of a run that returned rc. */
static int exit_status(int rc, const struct repl_stats *st)
{
	switch (rc) {
	case 0:
		return st->doc_write_failures ? EXIT_DOCS : EXIT_DONE;
	case -ECANCELED:
		return EXIT_STOPPED;
	case BARREL_E_NOTFOUND:
	case -EACCES:
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
	case -ETIMEDOUT:
	case -ECONNRESET:
		return EXIT_ENDPOINT;
	default:
		return EXIT_OTHER;
	}
}

/* Replicate src to dst; the exit status. */
static int run(struct cli *c, const char *src, const char *dst)
{
	char err[REPL_ERRLEN] = "";
	struct repl_stats st;
	pthread_t th;
	bool bar = !c->quiet && isatty(STDERR_FILENO);
	int rc;

	struct repl *r;

	rc = repl_new(src, dst, &c->o, &r, err);
	if (rc < 0) {
		fprintf(stderr, PROG ": %s\n", err);
		return rc == BARREL_E_INVALID ? EXIT_USAGE : EXIT_OTHER;
	}
	atomic_store(&g_repl, r);
	if (atomic_load(&g_stop))
		repl_stop(r);          /* a signal came while starting */
	if (bar && pthread_create(&th, NULL, progress_main, NULL))
		bar = false;
	rc = repl_run(r);
	atomic_store(&g_done, true);
	if (bar)
		pthread_join(th, NULL);
	repl_stats(r, &st);
	if (rc < 0 && rc != -ECANCELED)
		fprintf(stderr, PROG ": %s\n", st.error[0] ? st.error
						    : barrel_strerror(rc));
	else if (st.doc_write_failures && !c->quiet)
		fprintf(stderr, PROG ": last failure: %s\n", st.error);
	if (!c->quiet)
		fprintf(stderr, PROG ": %llu docs read, %llu written, %llu "
			"failed, last_seq %s%s\n",
			(unsigned long long)st.docs_read,
			(unsigned long long)st.docs_written,
			(unsigned long long)st.doc_write_failures,
			st.last_seq[0] ? st.last_seq : "0",
			rc == -ECANCELED ? " (interrupted)" : "");
	atomic_store(&g_repl, NULL);
	repl_free(r);
	return exit_status(rc, &st);
}

int main(int argc, char **argv)
{
	struct cli c;
	char *src = NULL, *dst = NULL, *src_label = NULL, *dst_label = NULL;
	int status;

	memset(&c, 0, sizeof(c));
	status = cli_parse(&c, argc, argv);
	if (status)
		return status < 0 ? EXIT_DONE : status;
	signals_init();
	status = endpoint(&c, c.src, false, &src, &src_label);
	if (!status)
		status = endpoint(&c, c.dst, true, &dst, &dst_label);
	c.o.src_label = src_label;
	c.o.dst_label = dst_label;
	if (!status)
		status = run(&c, src, dst);
	for (size_t i = 0; i < c.nlocals; i++)
		local_stop(&c.locals[i]);
	free(src);
	free(dst);
	free(src_label);
	free(dst_label);
	return status;
}
