/*
 * barrel-syncd: a headless peer (barrel-syncd(8)).
 *
 *   barrel-syncd [-f] [-o OPT[,OPT...]] DATADIR
 *   barrel-syncd passwd FILE USER
 *
 * Steps: parse options; open (lock) DATADIR; serve CouchDB's HTTP API
 * for its databases on DATADIR/api.sock and, when asked, on TCP; wait
 * and run the replications of its "_replicator" database (jobs.h); wait
 * for SIGINT or SIGTERM; stop them and the server (open feeds end), close every
 * database (a checkpoint) and release DATADIR. It stays in the
 * foreground and logs to stderr, as systemd wants.
 *
 * The passwd form reads a password (one line) on stdin and writes USER's
 * crypt(3) hash into the password file FILE, replacing an older line.
 */
#include "config.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/docdb.h"
#include "engine/error.h"
#include "sync/catalog.h"
#include "sync/http.h"
#include "sync/jobs.h"

#define PROG "barrel-syncd"

struct cli {
	const char *datadir;
	char *listen, *passwd, *tls_cert, *tls_key, *history; /* in argv */
};

static void usage(FILE *f)
{
	fprintf(f, "usage: " PROG " [-f] [-o OPT[,OPT...]] DATADIR\n"
		"       " PROG " passwd FILE USER   (password on stdin)\n\n"
		"Serve DATADIR's databases over CouchDB's HTTP API and\n"
		"replication protocol (barrel-syncd(8)).\n\n"
		"options:\n"
		"  -o listen=ADDR:PORT   also serve on TCP (off by default);\n"
		"                        not loopback needs passwd=\n"
		"  -o passwd=FILE        HTTP basic authentication on TCP\n"
		"  -o tls_cert=FILE,tls_key=FILE   HTTPS on TCP (PEM)\n"
		"  -o history=all|N      bodies kept per branch (default all)\n"
		"  -f                    foreground (always; for symmetry)\n"
		"  -h, --help, -V, --version\n");
}

/* One "key=value" of -o into c; -EINVAL for an unknown key. */
static int cli_opt(struct cli *c, char *kv)
{
	static const struct { const char *key; size_t off; } keys[] = {
		{ "listen", offsetof(struct cli, listen) },
		{ "passwd", offsetof(struct cli, passwd) },
		{ "tls_cert", offsetof(struct cli, tls_cert) },
		{ "tls_key", offsetof(struct cli, tls_key) },
		{ "history", offsetof(struct cli, history) },
	};
	char *eq = strchr(kv, '=');

	if (!eq)
		return -EINVAL;
	*eq = '\0';
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (!strcmp(kv, keys[i].key)) {
			*(char **)((char *)c + keys[i].off) = eq + 1;
			return 0;
		}
	}
	*eq = '=';
	return -EINVAL;
}

/* The comma-separated list of one -o into c (list is kept: c points
 * into it). */
static int cli_opts(struct cli *c, char *list)
{
	for (char *kv = list, *next; kv; kv = next) {
		if ((next = strchr(kv, ',')))
			*next++ = '\0';
		if (*kv && cli_opt(c, kv)) {
			fprintf(stderr, PROG ": unknown option -o %s\n", kv);
			return -1;
		}
	}
	return 0;
}

/* Split every -o list into c. 0, 1 (help or version done) or -1. */
static int cli_parse(struct cli *c, int argc, char **argv)
{
	int i;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 1;
		}
		if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
			printf(PROG " %s\n", PACKAGE_VERSION);
			return 1;
		}
		if (!strcmp(a, "-f"))
			continue;
		if (strcmp(a, "-o") || i + 1 == argc)
			goto out_usage;
		if (cli_opts(c, argv[++i]))
			return -1;
	}
	if (i + 1 != argc)
		goto out_usage;
	c->datadir = argv[i];
	return 0;
out_usage:
	usage(stderr);
	return -1;
}

/* Read one line (the password) from stdin without its newline. */
static int read_secret(char *buf, size_t size)
{
	size_t len;

	if (!fgets(buf, (int)size, stdin))
		return -EINVAL;
	len = strcspn(buf, "\r\n");
	buf[len] = '\0';
	return len ? 0 : -EINVAL;
}

/* Copy file's lines to out except user's; 0 or -errno. */
static int copy_others(const char *file, const char *user, FILE *out)
{
	size_t ulen = strlen(user);
	char line[4096];
	FILE *in = fopen(file, "r");

	if (!in)
		return errno == ENOENT ? 0 : -errno;
	while (fgets(line, sizeof(line), in))
		if (strncmp(line, user, ulen) || line[ulen] != ':')
			fputs(line, out);
	fclose(in);
	return 0;
}

/* barrel-syncd passwd FILE USER: write USER's hash into FILE through a
 * temporary file renamed over it (mode 0600). */
static int cmd_passwd(const char *file, const char *user)
{
	char secret[1024], salt[CRYPT_GENSALT_OUTPUT_SIZE], tmp[PATH_MAX];
	struct crypt_data cd = { 0 };
	const char *hash;
	FILE *out;
	int fd, rc;

	if (!*user || strchr(user, ':') || strchr(user, '\n')) {
		fprintf(stderr, PROG ": %s: a user name has no ':'\n", user);
		return 1;
	}
	if (read_secret(secret, sizeof(secret))) {
		fprintf(stderr, PROG ": expected a password on stdin\n");
		return 1;
	}
	if (!crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt)) ||
	    !(hash = crypt_r(secret, salt, &cd)) || hash[0] == '*') {
		fprintf(stderr, PROG ": crypt: %s\n", strerror(errno));
		return 1;
	}
	snprintf(tmp, sizeof(tmp), "%s.XXXXXX", file);
	if ((fd = mkstemp(tmp)) < 0 || !(out = fdopen(fd, "w"))) {
		fprintf(stderr, PROG ": %s: %s\n", tmp, strerror(errno));
		return 1;
	}
	rc = copy_others(file, user, out);
	fprintf(out, "%s:%s\n", user, hash);
	if (fflush(out) || fsync(fd))
		rc = -errno;
	fclose(out);
	if (rc || rename(tmp, file)) {
		fprintf(stderr, PROG ": %s: %s\n", file,
			strerror(rc ? -rc : errno));
		unlink(tmp);
		return 1;
	}
	return 0;
}

/* Block the stop signals in every thread; main waits for them. */
static void block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void say_listening(const struct srv *s, const char *sock)
{
	fprintf(stderr, PROG ": listening on unix:%s\n", sock);
	if (srv_url(s))
		fprintf(stderr, PROG ": listening on %s\n", srv_url(s));
}

/* Serve the open environment until a stop signal. */
static int serve(struct benv *env, const struct cli *c, const sigset_t *set)
{
	struct docdb_opts dopts = { 0 };
	struct srv_opts so = {
		.listen = c->listen, .passwd = c->passwd,
		.tls_cert = c->tls_cert, .tls_key = c->tls_key,
		.server_name = PROG,
	};
	char sock[PATH_MAX], err[SRV_ERRLEN] = "";
	struct catalog *cat;
	struct jobs *jobs = NULL;
	struct srv *srv;
	int rc, sig;

	if (docdb_history_parse(c->history, &dopts.keep_bodies)) {
		fprintf(stderr, PROG ": history=%s: expected 'all' or a "
			"positive number\n", c->history);
		return 1;
	}
	if ((rc = catalog_env_new(env, &dopts, true, &cat)))
		goto out_err;
	snprintf(sock, sizeof(sock), "%s/api.sock", c->datadir);
	so.unix_path = sock;
	if ((rc = srv_start(cat, &so, &srv, err))) {
		fprintf(stderr, PROG ": %s%s%s\n", barrel_strerror(rc),
			*err ? ": " : "", err);
		catalog_env_free(cat);
		return 1;
	}
	say_listening(srv, sock);
	if ((rc = jobs_start(cat, sock, &jobs)))
		fprintf(stderr, PROG ": replications: %s\n",
			barrel_strerror(rc));
	while (!rc && sigwait(set, &sig) == 0 && sig == SIGHUP)
		;
	fprintf(stderr, PROG ": stopping\n");
	jobs_stop(jobs);
	srv_stop(srv);
	catalog_env_free(cat);
	return rc ? 1 : 0;
out_err:
	fprintf(stderr, PROG ": %s\n", barrel_strerror(rc));
	return 1;
}

int main(int argc, char **argv)
{
	struct cli c = { 0 };
	struct benv *env;
	sigset_t set;
	int rc, status;

	if (argc >= 2 && !strcmp(argv[1], "passwd")) {
		if (argc != 4) {
			usage(stderr);
			return 1;
		}
		return cmd_passwd(argv[2], argv[3]);
	}
	if ((rc = cli_parse(&c, argc, argv)))
		return rc > 0 ? 0 : 1;
	block_signals(&set);
	if ((rc = benv_open(c.datadir, NULL, &env))) {
		fprintf(stderr, PROG ": %s: %s\n", c.datadir,
			barrel_strerror(rc));
		return 1;
	}
	status = serve(env, &c, &set);
	benv_close(env);
	return status;
}
