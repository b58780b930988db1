/*
 * The mount's HTTP API: its databases as a catalog (sync/catalog.h),
 * served by sync/http.h on DATADIR/api.sock and, when asked, on TCP.
 * Databases made or removed over HTTP appear in the mount at once (the
 * root's entries are invalidated); documents written over HTTP reach
 * the kernel's caches through the worker, like any other writer's. The
 * replications configured in "_replicator" run here too (jobs.h).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/log.h"
#include "fs/fs.h"
#include "sync/catalog.h"
#include "sync/http.h"
#include "sync/jobs.h"

/* A -errno of fs/db.c as the engine's code, for CouchDB's error bodies. */
static int cat_err(int rc)
{
	if (rc == -ENOENT)
		return BARREL_E_NOTFOUND;
	if (rc == -EEXIST)
		return BARREL_E_EXISTS;
	return rc;
}

static int cat_acquire(void *arg, const char *name, struct docdb **d,
		       void **hold)
{
	struct fsdb *db;

	if (!bdb_name_valid(name))
		return BARREL_E_INVALID;
	db = fsdb_find(arg, name);
	if (fsdb_enter(db))
		return BARREL_E_NOTFOUND;
	*d = db->d;
	*hold = db;
	return 0;
}

static void cat_release(void *arg, void *hold)
{
	(void)arg;
	fsdb_leave(hold);
}

static struct view_indexer *cat_views(void *arg, void *hold)
{
	(void)arg;
	return ((struct fsdb *)hold)->views;
}

static int cat_create(void *arg, const char *name)
{
	struct fsdb *db;
	int rc;

	if (!bdb_name_valid(name))
		return BARREL_E_INVALID;
	if (!(rc = fsdb_create(arg, name, &db)))
		inval_entry(arg, FUSE_ROOT_ID, name);
	return cat_err(rc);
}

static int cat_drop(void *arg, const char *name)
{
	int rc;

	if (!bdb_name_valid(name))
		return BARREL_E_INVALID;
	if (!(rc = fsdb_remove(arg, name, false)))
		inval_entry(arg, FUSE_ROOT_ID, name);
	return cat_err(rc);
}

static int cat_list(void *arg, int (*cb)(void *cbarg, const char *name),
		    void *cbarg)
{
	struct fs *fs = arg;

	return benv_list(fs->env, cb, cbarg);
}

int serve_start(struct fs *fs)
{
	struct srv_opts o = {
		.listen = fs->opts.listen, .passwd = fs->opts.passwd,
		.tls_cert = fs->opts.tls_cert, .tls_key = fs->opts.tls_key,
		.server_name = "barrelfs",
	};
	char err[SRV_ERRLEN] = "";
	int rc;

	fs->cat = (struct catalog){
		.arg = fs, .acquire = cat_acquire, .release = cat_release,
		.views = cat_views, .create = cat_create, .drop = cat_drop,
		.list = cat_list,
	};
	snprintf(fs->sock, sizeof(fs->sock), "%s/api.sock", fs->datadir);
	o.unix_path = fs->sock;
	if ((rc = srv_start(&fs->cat, &o, &fs->srv, err))) {
		barrel_log(BLOG_ERR, "the HTTP API: %s%s%s",
			   barrel_strerror(rc), *err ? ": " : "", err);
		return rc;
	}
	if ((rc = jobs_start(&fs->cat, fs->sock, &fs->jobs))) {
		barrel_log(BLOG_ERR, "replications: %s", barrel_strerror(rc));
		serve_stop(fs);
	}
	return rc;
}

void serve_stop(struct fs *fs)
{
	jobs_stop(fs->jobs);
	fs->jobs = NULL;
	srv_stop(fs->srv);
	fs->srv = NULL;
}
