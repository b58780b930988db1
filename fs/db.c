/*
 * The databases of the mount: every database of DATADIR open as
 * documents, with the mount's own "fs" table, created by mkdir and
 * removed by rmdir.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/view.h"
#include "fs/fs.h"

#define FS_TABLE "fs"

/* A commit of db: wake the worker, or leave it to the commits through
 * the mount under way (fs_put), which know whether it was theirs. */
static void on_commit(void *arg, uint64_t seq)
{
	struct fsdb *db = arg;

	(void)seq;
	pthread_mutex_lock(&db->fs->lock);
	if (db->own_puts)
		db->wake_owed = true;
	else
		worker_wake(db->fs);
	pthread_mutex_unlock(&db->fs->lock);
}

static int fs_table(struct bdb *bdb, uint32_t *id)
{
	struct btxn *txn;
	int rc = bdb_table(bdb, FS_TABLE, id);

	if (rc != BARREL_E_NOTFOUND)
		return rc;
	if ((rc = bdb_begin(bdb, &txn)))
		return rc;
	rc = btxn_table(txn, FS_TABLE, 0, id);
	if (rc) {
		btxn_abort(txn);
		return rc;
	}
	return btxn_commit(txn);
}

/* Open name's documents into db (db->name set; fs->lock held). */
static int open_docs(struct fs *fs, struct fsdb *db, bool create)
{
	struct docdb_opts o = { .keep_bodies = fs->opts.keep_bodies };
	struct docdb *d;
	int rc = docdb_open(fs->env, db->name, create, &o, &d);

	if (rc)
		return rc;
	if ((rc = fs_table(docdb_bdb(d), &db->fs_table)))
		goto out_close;
	db->seen_seq = db->checked_seq = bdb_seq(docdb_bdb(d));
	rc = bdb_watch(docdb_bdb(d), on_commit, db, &db->watch_id);
	if (rc)
		goto out_close;
	if ((rc = view_indexer_start(d, NULL, &db->views))) {
		bdb_unwatch(docdb_bdb(d), db->watch_id);
		goto out_close;
	}
	db->d = d;
	return 0;
out_close:
	docdb_close(d);
	return rc;
}

static struct fsdb *find_locked(struct fs *fs, const char *name)
{
	struct fsdb *db = fs->dbs;

	while (db && strcmp(db->name, name))
		db = db->next;
	return db;
}

/* The entry for name, made if missing (fs->lock held). */
static struct fsdb *entry(struct fs *fs, const char *name)
{
	struct fsdb *db = find_locked(fs, name);

	if (db)
		return db;
	if (!(db = calloc(1, sizeof(*db))) || !(db->name = strdup(name))) {
		free(db);
		return NULL;
	}
	db->fs = fs;
	pthread_rwlock_init(&db->use, NULL);
	fsrec_hold_init(db);
	db->next = fs->dbs;
	fs->dbs = db;
	return db;
}

static int open_one(void *arg, const char *name)
{
	struct fs *fs = arg;
	struct fsdb *db = entry(fs, name);

	return db ? open_docs(fs, db, false) : -ENOMEM;
}

int fsdb_open_all(struct fs *fs)
{
	int rc;

	pthread_mutex_lock(&fs->lock);
	rc = benv_list(fs->env, open_one, fs);
	pthread_mutex_unlock(&fs->lock);
	return rc;
}

/* Close db's documents, its held scratch records stored first (store)
 * or forgotten (the database is being removed). */
static void close_docs(struct fsdb *db, bool store)
{
	fsrec_hold_end(db, store);
	view_indexer_stop(db->views);
	db->views = NULL;
	bdb_unwatch(docdb_bdb(db->d), db->watch_id);
	docdb_close(db->d);
	db->d = NULL;
}

void fsdb_close_all(struct fs *fs)
{
	struct fsdb *db;

	while ((db = fs->dbs)) {
		fs->dbs = db->next;
		if (db->d)
			close_docs(db, true);
		pthread_rwlock_destroy(&db->use);
		pthread_mutex_destroy(&db->table_lock);
		pthread_mutex_destroy(&db->hold_lock);
		free(db->name);
		free(db);
	}
}

struct fsdb *fsdb_find(struct fs *fs, const char *name)
{
	struct fsdb *db;

	pthread_mutex_lock(&fs->lock);
	db = find_locked(fs, name);
	if (db && !db->d)
		db = NULL;
	pthread_mutex_unlock(&fs->lock);
	return db;
}

int fsdb_enter(struct fsdb *db)
{
	if (!db)
		return -ENOENT;
	pthread_rwlock_rdlock(&db->use);
	if (db->d)
		return 0;
	pthread_rwlock_unlock(&db->use);
	return -ENOENT;
}

void fsdb_leave(struct fsdb *db)
{
	pthread_rwlock_unlock(&db->use);
}

int fsdb_create(struct fs *fs, const char *name, struct fsdb **out)
{
	struct fsdb *db;
	int rc = 0;

	pthread_mutex_lock(&fs->lock);
	db = entry(fs, name);
	if (!db)
		rc = -ENOMEM;
	else if (db->d)
		rc = -EEXIST;
	else
		rc = open_docs(fs, db, true);
	pthread_mutex_unlock(&fs->lock);
	*out = rc ? NULL : db;
	return fs_err(rc);
}

static int any_row(void *arg, const struct doc_row *row)
{
	(void)arg;
	(void)row;
	return 1;
}

static int any_file(void *arg, const char *name, const struct fsrec *r)
{
	(void)arg;
	(void)name;
	(void)r;
	return 1;
}

/* -ENOTEMPTY when db shows any document or scratch file. */
static int check_empty(struct fsdb *db)
{
	int rc = docdb_all_docs(db->d, NULL, NULL, 0, NULL, 0, 0, any_row,
				NULL);

	if (!rc)
		rc = fsrec_list(db, "", any_file, NULL);
	if (!rc)
		rc = fsrec_list(db, DOC_DESIGN_PREFIX, any_file, NULL);
	return rc == 1 ? -ENOTEMPTY : rc;
}

int fsdb_remove(struct fs *fs, const char *name, bool only_empty)
{
	struct fsdb *db;
	int rc;

	pthread_mutex_lock(&fs->lock);
	db = find_locked(fs, name);
	pthread_mutex_unlock(&fs->lock);
	if (!db)
		return -ENOENT;
	pthread_rwlock_wrlock(&db->use);
	rc = db->d ? 0 : -ENOENT;
	if (!rc && only_empty)
		rc = check_empty(db);
	if (!rc) {
		close_docs(db, false);
		viewdir_forget(fs, db);
		rc = benv_drop(fs->env, name);
	}
	pthread_rwlock_unlock(&db->use);
	return rc;
}
