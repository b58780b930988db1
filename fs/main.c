/*
 * barrelfs: mount a DATADIR (barrelfs(8)).
 *
 *   barrelfs [-f] [-d] [-o OPT[,OPT...]] DATADIR MOUNTPOINT
 *
 * Steps: parse options; detach unless -f (the parent waits for the
 * start's outcome); open (lock) DATADIR and every database; mount;
 * serve with libfuse's multi-threaded loop until unmounted or
 * signalled; then write pending deletions, close every
 * database (a checkpoint: everything is durable) and unmount.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "engine/log.h"
#include "fs/fs.h"

struct cli {
	char *datadir;
	char *history;
	char *listen, *passwd, *tls_cert, *tls_key;
	unsigned grace;
	double cache_timeout;
	int show_help;
	int show_version;
};

#define CLI_OPT(t, p) { t, offsetof(struct cli, p), 1 }
static const struct fuse_opt cli_opts[] = {
	CLI_OPT("grace=%u", grace),
	CLI_OPT("cache_timeout=%lf", cache_timeout),
	CLI_OPT("history=%s", history),
	CLI_OPT("listen=%s", listen),
	CLI_OPT("passwd=%s", passwd),
	CLI_OPT("tls_cert=%s", tls_cert),
	CLI_OPT("tls_key=%s", tls_key),
	CLI_OPT("-h", show_help),
	CLI_OPT("--help", show_help),
	CLI_OPT("-V", show_version),
	CLI_OPT("--version", show_version),
	FUSE_OPT_END
};

/* path made absolute against the working directory (a daemon leaves
 * it); malloc'ed, NULL without memory. */
static char *absolute(const char *path)
{
	char cwd[PATH_MAX], *out;
	size_t n;

	if (path[0] == '/' || !getcwd(cwd, sizeof(cwd)))
		return strdup(path);
	n = strlen(cwd) + strlen(path) + 2;
	if ((out = malloc(n)))
		snprintf(out, n, "%s/%s", cwd, path);
	return out;
}

static int cli_proc(void *data, const char *arg, int key,
		    struct fuse_args *args)
{
	struct cli *c = data;

	(void)args;
	if (key == FUSE_OPT_KEY_NONOPT && !c->datadir) {
		c->datadir = realpath(arg, NULL);
		if (!c->datadir && errno == ENOENT)
			c->datadir = absolute(arg);  /* created by benv_open */
		return 0;
	}
	return 1;
}

static void usage(const char *prog)
{
	printf("usage: %s [-f] [-o OPT[,OPT...]] DATADIR MOUNTPOINT\n\n"
	       "Mount DATADIR: every database a directory, every document a\n"
	       "JSON file, every revision under .rev/ (barrelfs(8)).\n\n"
	       "options:\n"
	       "  -f                     stay in the foreground, log to stderr\n"
	       "  -d                     debug: foreground, FUSE requests logged\n"
	       "  -o allow_other         let other users in (see fuse(8))\n"
	       "  -o history=all|N       bodies kept per branch (default all)\n"
	       "  -o grace=SECONDS       a document renamed away is deleted,\n"
	       "                         a scratch file stored, after this\n"
	       "                         long (default 5)\n"
	       "  -o cache_timeout=SECS  kernel entry/attribute cache (60)\n"
	       "  -o listen=ADDR:PORT    serve the HTTP API on TCP too (it is\n"
	       "                         always on DATADIR/api.sock)\n"
	       "  -o passwd=FILE         its basic authentication (needed\n"
	       "                         off loopback; barrel-syncd(8))\n"
	       "  -o tls_cert=FILE,tls_key=FILE  HTTPS on TCP\n"
	       "  -h, --help, -V, --version\n", prog);
}

static void log_syslog(void *arg, enum barrel_log_level lvl, const char *msg)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

	(void)arg;
	syslog(prio[lvl], "%s", msg);
}

/*
 * Detach before anything starts a thread (the engine's GC, the view
 * indexers, the HTTP server): a fork keeps only the calling thread. The
 * parent waits until the child reports through *fd that it serves
 * (daemon_ready) and exits 0, or exits 1 when the child ends first; so
 * a failure to start reaches the terminal and the exit status. Returns
 * in the child; -1 (errno) when fork or pipe fails.
 */
static int daemon_begin(int *fd)
{
	int p[2];
	char ok;
	pid_t pid;

	if (pipe(p))
		return -1;
	if ((pid = fork()) < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid > 0) {
		close(p[1]);
		_exit(read(p[0], &ok, 1) == 1 && ok == 0 ? 0 : 1);
	}
	close(p[0]);
	setsid();
	*fd = p[1];
	return 0;
}

/* Tell the waiting parent that the child serves, and let go of the
 * terminal: from here the log goes to syslog. */
static void daemon_ready(int fd)
{
	char ok = 0;
	int null = open("/dev/null", O_RDWR);

	barrel_log_set_sink(log_syslog, NULL);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	if (chdir("/"))
		barrel_log(BLOG_WARN, "chdir /: %s", strerror(errno));
	if (write(fd, &ok, 1) != 1)
		barrel_log(BLOG_WARN, "reporting the start: %s", strerror(errno));
	close(fd);
}

/* -o fsname=DATADIR, so that mount(8) and df show the data directory
 * (',' and '\\' escaped as fuse_opt wants). */
static void add_fsname(struct fuse_args *args, const char *datadir)
{
	size_t len = strlen(datadir);
	char *opt = malloc(2 * len + sizeof("-ofsname="));
	char *p;

	if (!opt)
		return;
	p = opt + snprintf(opt, 2 * len + sizeof("-ofsname="), "-ofsname=");
	for (const char *s = datadir; *s; s++) {
		if (*s == ',' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	*p = '\0';
	fuse_opt_add_arg(args, opt);
	free(opt);
}

static int fs_setup(struct fs *fs, const struct cli *c)
{
	struct benv_opts eo;
	int rc;

	fs->datadir = c->datadir;
	fs->uid = getuid();
	fs->gid = getgid();
	pthread_mutex_init(&fs->lock, NULL);
	pthread_cond_init(&fs->wake, NULL);
	if (!(fs->own = calloc(FS_OWN, sizeof(*fs->own))))
		return -ENOMEM;
	if ((rc = nodes_init(fs)))
		return rc;
	benv_opts_init(&eo);
	if ((rc = benv_open(c->datadir, &eo, &fs->env))) {
		fprintf(stderr, "barrelfs: %s: %s\n", c->datadir,
			barrel_strerror(rc));
		return rc;
	}
	if ((rc = fsdb_open_all(fs)))
		fprintf(stderr, "barrelfs: %s: %s\n", c->datadir,
			barrel_strerror(rc));
	return rc;
}

static void fs_teardown(struct fs *fs)
{
	worker_stop(fs);
	moved_flush(fs);
	fsdb_close_all(fs);
	viewdir_release(fs);
	if (fs->env)
		benv_close(fs->env);
	notes_release(fs);
	nodes_release(fs);
	free(fs->own);
	pthread_cond_destroy(&fs->wake);
	pthread_mutex_destroy(&fs->lock);
}

/* Mount and serve until unmounted; 0 on a clean end. ready_fd >= 0:
 * daemon_ready() once serving. */
static int serve(struct fs *fs, struct fuse_args *args,
		 struct fuse_cmdline_opts *o, int ready_fd)
{
	struct fuse_loop_config *lc;
	int rc = 1;

	fs->se = fuse_session_new(args, &fs_ops, sizeof(fs_ops), fs);
	if (!fs->se)
		return 1;
	if (fuse_set_signal_handlers(fs->se))
		goto out_destroy;
	if (fuse_session_mount(fs->se, o->mountpoint))
		goto out_signals;
	if (worker_start(fs))
		goto out_unmount;
	if (serve_start(fs))
		goto out_worker;
	if (ready_fd >= 0)
		daemon_ready(ready_fd);
	lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(lc, o->clone_fd);
	fuse_loop_cfg_set_max_threads(lc, o->max_threads);
	rc = o->singlethread ? fuse_session_loop(fs->se) :
	     fuse_session_loop_mt(fs->se, lc);
	fuse_loop_cfg_destroy(lc);
	serve_stop(fs);
out_worker:
	worker_stop(fs);
out_unmount:
	fuse_session_unmount(fs->se);
out_signals:
	fuse_remove_signal_handlers(fs->se);
out_destroy:
	fuse_session_destroy(fs->se);
	fs->se = NULL;
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct cli c = { .grace = 5, .cache_timeout = 60 };
	struct fuse_cmdline_opts o = { 0 };
	struct fs fs = { .opts = { 0 } };
	int status = 1, ready_fd = -1;

	if (fuse_opt_parse(&args, &c, cli_opts, cli_proc))
		return 1;
	if (c.show_help || c.show_version) {
		if (c.show_help)
			usage(argv[0]);
		else
			printf("barrelfs %s\n", PACKAGE_VERSION);
		status = 0;
		goto out_args;
	}
	fuse_opt_add_arg(&args, "-odefault_permissions");
	fuse_opt_add_arg(&args, "-osubtype=barrelfs");
	if (c.datadir)
		add_fsname(&args, c.datadir);
	if (fuse_parse_cmdline(&args, &o))
		goto out_args;
	if (!c.datadir || !o.mountpoint) {
		fprintf(stderr, "barrelfs: expected DATADIR and MOUNTPOINT "
			"(barrelfs --help)\n");
		goto out_opts;
	}
	if (docdb_history_parse(c.history, &fs.opts.keep_bodies)) {
		fprintf(stderr, "barrelfs: history=%s: expected 'all' or a "
			"positive number\n", c.history);
		goto out_opts;
	}
	fs.opts.grace_s = c.grace;
	fs.opts.cache_timeout = c.cache_timeout;
	fs.opts.foreground = o.foreground;
	fs.opts.listen = c.listen;
	fs.opts.passwd = c.passwd;
	fs.opts.tls_cert = c.tls_cert;
	fs.opts.tls_key = c.tls_key;
	if (!o.foreground && daemon_begin(&ready_fd)) {
		fprintf(stderr, "barrelfs: detaching: %s\n", strerror(errno));
		goto out_opts;
	}
	if (!fs_setup(&fs, &c))
		status = serve(&fs, &args, &o, ready_fd);
	fs_teardown(&fs);
out_opts:
	free(o.mountpoint);
out_args:
	fuse_opt_free_args(&args);
	free(c.datadir);
	free(c.history);
	free(c.listen);
	free(c.passwd);
	free(c.tls_cert);
	free(c.tls_key);
	return status;
}
