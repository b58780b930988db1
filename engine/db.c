/*
 * Environments and databases: the DATADIR lock, opening and closing
 * databases, the segment table, names, statistics and check.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "engine/db_i.h"
#include "engine/log.h"

void benv_opts_init(struct benv_opts *o)
{
	*o = (struct benv_opts){
		.cache_budget = 256u << 20,
		.gc_thread = true,
		.gc_trigger = 1.2,
		.checkpoint_bytes = 64u << 20,
		.seg_min = SEG_MIN_SIZE,
		.seg_max = SEG_MAX_SIZE,
	};
}

bool bdb_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (!strcmp(name, "_replicator") || !strcmp(name, "_users"))
		return true;          /* CouchDB's system databases */
	if (n == 0 || n > BDB_MAX_NAME || !islower((unsigned char)name[0]))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = name[i];

		if (!islower(c) && !isdigit(c) && !strchr("_$()+-/", c))
			return false;
	}
	return true;
}

/* Database directory names escape '/' as "%2F" (reversible: '%' is never
 * part of a database name). */
static void name_to_dir(char *buf, size_t size, const char *name)
{
	size_t o = 0;

	for (; *name && o + 4 < size; name++) {
		if (*name == '/') {
			memcpy(buf + o, "%2F", 3);
			o += 3;
		} else {
			buf[o++] = *name;
		}
	}
	buf[o] = '\0';
}

static bool dir_to_name(char *buf, size_t size, const char *dir)
{
	size_t o = 0;

	for (; *dir && o + 1 < size; dir++) {
		if (strncmp(dir, "%2F", 3) == 0) {
			buf[o++] = '/';
			dir += 2;
		} else {
			buf[o++] = *dir;
		}
	}
	buf[o] = '\0';
	return bdb_name_valid(buf);
}

/* ---- the segment table (segs_lock held by callers) ---- */

struct db_seg *db_seg_find(struct bdb *db, uint32_t id)
{
	size_t lo = 0, hi = db->nsegs;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		uint32_t m = db->segs[mid]->seg->id;

		if (m == id)
			return db->segs[mid];
		if (m < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

int db_seg_insert(struct bdb *db, struct db_seg *s)
{
	size_t i;

	if (db->nsegs == db->segs_cap) {
		size_t cap = db->segs_cap ? db->segs_cap * 2 : 16;
		struct db_seg **n = realloc(db->segs, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		db->segs = n;
		db->segs_cap = cap;
	}
	for (i = db->nsegs; i > 0 && db->segs[i - 1]->seg->id > s->seg->id; i--)
		db->segs[i] = db->segs[i - 1];
	db->segs[i] = s;
	db->nsegs++;
	return 0;
}

int db_seg_drop(struct bdb *db, struct db_seg *s)
{
	uint32_t id = s->seg->id;
	size_t j = 0;

	pthread_rwlock_wrlock(&db->segs_lock);
	for (size_t i = 0; i < db->nsegs; i++)
		if (db->segs[i] != s)
			db->segs[j++] = db->segs[i];
	db->nsegs = j;
	pthread_rwlock_unlock(&db->segs_lock);
	seg_close(s->seg);
	free(s);
	return seg_remove(db->env->io, db->dir, id);
}

int db_seg_add(struct bdb *db, struct segment *seg, uint64_t used,
	       uint64_t live, uint64_t created, bool sealed, struct db_seg **out)
{
	struct db_seg *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return -ENOMEM;
	*s = (struct db_seg){ .seg = seg, .used = used, .live = live,
			      .created_txn = created, .sealed = sealed };
	pthread_rwlock_wrlock(&db->segs_lock);
	err = db_seg_insert(db, s);
	pthread_rwlock_unlock(&db->segs_lock);
	if (err) {
		free(s);
		return err;
	}
	if (out)
		*out = s;
	return 0;
}

uint64_t db_disk_target(struct bdb *db)
{
	const struct benv_opts *o = &db->env->opts;
	uint64_t total = 0, cap = o->seg_min;

	pthread_rwlock_rdlock(&db->segs_lock);
	for (size_t i = 0; i < db->nsegs; i++)
		total += db->segs[i]->used;
	pthread_rwlock_unlock(&db->segs_lock);
	/* Segments grow with the database: about a sixteenth of it. */
	while (cap < total / 16 && cap < o->seg_max)
		cap *= 2;
	return cap;
}

int db_tabinfo_ensure(struct bdb *db, uint32_t id, const char *name,
		      unsigned flags)
{
	struct db_tabinfo **info;
	uint32_t n;

	if (id < db->ninfo && db->info[id]) {
		if (strcmp(db->info[id]->name, name) == 0)
			return 0;
		free(db->info[id]->name);
		db->info[id]->name = strdup(name);
		db->info[id]->flags = flags;
		return db->info[id]->name ? 0 : -ENOMEM;
	}
	if (id >= db->ninfo) {
		n = id + 16;
		info = realloc(db->info, n * sizeof(*info));
		if (!info)
			return -ENOMEM;
		memset(info + db->ninfo, 0, (n - db->ninfo) * sizeof(*info));
		db->info = info;
		db->ninfo = n;
	}
	db->info[id] = calloc(1, sizeof(**db->info));
	if (!db->info[id])
		return -ENOMEM;
	db->info[id]->name = strdup(name);
	db->info[id]->flags = flags;
	if (!db->info[id]->name)
		return -ENOMEM;
	return db_store_init(db, id);
}

const char *bdb_table_name(struct bdb *db, uint32_t id)
{
	return id < db->ninfo && db->info[id] ? db->info[id]->name : NULL;
}

int bdb_table(struct bdb *db, const char *name, uint32_t *id)
{
	struct bsnap *s;
	struct bval v;
	int err;

	err = bdb_snapshot(db, &s);
	if (err)
		return err;
	err = bsnap_get(s, DB_TABLE_CATALOG, name, strlen(name), &v);
	bsnap_release(s);
	if (err)
		return err;
	if (v.len != 8)
		err = BARREL_E_CORRUPT;
	else
		*id = get_le32(v.data);
	bval_release(&v);
	return err;
}

unsigned bdb_table_flags(struct bdb *db, uint32_t id)
{
	struct bsnap *s;
	unsigned flags = 0;

	if (bdb_snapshot(db, &s))
		return 0;
	if (id < s->v->ntables && s->v->tables[id].exists)
		flags = s->v->tables[id].flags;
	bsnap_release(s);
	return flags;
}

const char *bdb_name(const struct bdb *db)
{
	return db->name;
}

/* ---- databases ---- */

static struct bdb *db_alloc(struct benv *env, const char *name)
{
	char dirname[3 * BDB_MAX_NAME + 1];
	struct bdb *db = calloc(1, sizeof(*db));
	size_t n;

	if (!db)
		return NULL;
	db->env = env;
	db->name = strdup(name);
	name_to_dir(dirname, sizeof(dirname), name);
	n = strlen(env->dir) + strlen(dirname) + 2;
	db->dir = malloc(n);
	if (!db->name || !db->dir) {
		free(db->name);
		free(db->dir);
		free(db);
		return NULL;
	}
	snprintf(db->dir, n, "%s/%s", env->dir, dirname);
	db->heads = hcache_new(&env->head_bytes, env->opts.cache_budget / 8);
	db->memo = bt_memo_new();
	if (!db->heads || !db->memo) {
		hcache_free(db->heads);
		free(db->memo);
		free(db->name);
		free(db->dir);
		free(db);
		return NULL;
	}
	db->uid = ++env->next_uid;
	db->next_seg_id = 1;
	db->next_blob_id = 1;
	pthread_mutex_init(&db->write_lock, NULL);
	pthread_cond_init(&db->write_cond, NULL);
	pthread_cond_init(&db->bgc_cond, NULL);
	pthread_mutex_init(&db->flush_lock, NULL);
	pthread_cond_init(&db->flush_cond, NULL);
	pthread_mutex_init(&db->stage_lock, NULL);
	pthread_rwlock_init(&db->segs_lock, NULL);
	pthread_mutex_init(&db->ver_lock, NULL);
	pthread_cond_init(&db->ver_cond, NULL);
	pthread_mutex_init(&db->watch_lock, NULL);
	pthread_mutex_init(&db->gc_lock, NULL);
	return db;
}

static void db_free(struct bdb *db)
{
	for (uint32_t i = 0; i < db->ntables; i++) {
		bt_ref_release(&db->tables[i].root);
		bt_ref_release(&db->tables[i].seq_root);
	}
	free(db->tables);
	for (uint32_t i = 0; i < db->ninfo; i++) {
		if (db->info[i])
			free(db->info[i]->name);
		free(db->info[i]);
	}
	free(db->info);
	for (size_t i = 0; i < db->nsegs; i++) {
		seg_close(db->segs[i]->seg);
		free(db->segs[i]);
	}
	free(db->segs);
	free(db->staged.data);
	free(db->inflight.data);
	hcache_free(db->heads);
	bt_memo_free(db->memo);
	if (db->headf)
		db->env->io->ops->close(db->headf);
	free(db->name);
	free(db->dir);
	free(db);
}

int db_open(struct benv *env, const char *name, bool create, struct bdb **out)
{
	const struct bio_ops *io = env->io->ops;
	struct bdb *db = db_alloc(env, name);
	int err;

	if (!db)
		return -ENOMEM;
	err = io->mkdir(env->io, db->dir);
	if (err == 0) {
		if (!create) {
			io->rmdir(env->io, db->dir);
			err = BARREL_E_NOTFOUND;
		} else {
			err = io->fsync_dir(env->io, env->dir);
		}
	} else if (err == -EEXIST) {
		err = 0;
	}
	if (!err)
		err = db_recover(db);
	if (err) {
		db_versions_release_all(db);
		db_free(db);
		return err;
	}
	*out = db;
	return 0;
}

void db_close(struct bdb *db)
{
	int err = 0;

	db_writer_enter(db);
	if (!db->failed && !db->flush_err)
		err = db_checkpoint_locked(db, true);
	else
		db_checkpoint_install(db, true);
	if (err)
		barrel_log(BLOG_WARN, "%s: final checkpoint failed: %s",
			   db->name, barrel_strerror(err));
	pthread_mutex_lock(&db->ver_lock);
	db->closing = true;
	pthread_cond_broadcast(&db->ver_cond);
	pthread_mutex_unlock(&db->ver_lock);
	db_writer_leave(db);
	db_blobs_release(db);
	db_versions_release_all(db);
	db_free_doomed(db);
	db_watches_free(db);
	bcache_drop_ns(db->env->cache, db->uid);
	db_free(db);
}

/* ---- environments ---- */

static int env_lock(struct benv *env)
{
	char path[4096], pid[32];
	struct iovec iov;
	struct bio_write w;
	int err, n;

	snprintf(path, sizeof(path), "%s/LOCK", env->dir);
	err = env->io->ops->open(env->io, path, BIO_RDWR | BIO_CREATE, &env->lockf);
	if (err)
		return err;
	err = env->io->ops->lock(env->lockf);
	if (err == -EWOULDBLOCK || err == -EAGAIN) {
		n = env->io->ops->read(env->lockf, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		if (pid[0])
			barrel_log(BLOG_ERR, "%s is in use by another process (pid %s)",
				   env->dir, pid);
		else
			barrel_log(BLOG_ERR, "%s is in use by another process",
				   env->dir);
		return BARREL_E_LOCKED;
	}
	if (err)
		return err;
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	iov = (struct iovec){ pid, (size_t)n };
	w = (struct bio_write){ env->lockf, &iov, 1, 0 };
	env->io->ops->truncate(env->lockf, 0);
	return env->io->ops->write_batch(env->io, &w, 1, false);
}

static void env_free(struct benv *env)
{
	if (env->lockf)
		env->io->ops->close(env->lockf);
	if (env->cache)
		bcache_free(env->cache);
	if (env->own_io && env->io)
		env->io->ops->free(env->io);
	pthread_mutex_destroy(&env->lock);
	pthread_cond_destroy(&env->gc_cond);
	free(env->dir);
	free(env->dbs);
	free(env);
}

int benv_open(const char *datadir, const struct benv_opts *opts,
	      struct benv **out)
{
	struct benv *env = calloc(1, sizeof(*env));
	int err;

	if (!env)
		return -ENOMEM;
	pthread_mutex_init(&env->lock, NULL);
	pthread_cond_init(&env->gc_cond, NULL);
	if (opts)
		env->opts = *opts;
	else
		benv_opts_init(&env->opts);
	env->io = env->opts.io;
	if (!env->io) {
		env->io = bio_uring_new();
		env->own_io = true;
	}
	env->dir = strdup(datadir);
	/* One budget: five eighths for clean nodes, a quarter for dirty ones
	 * (a checkpoint writes them out when they pass it), an eighth for
	 * value heads (db->heads). */
	env->cache = bcache_new(env->opts.cache_budget -
				env->opts.cache_budget / 4 -
				env->opts.cache_budget / 8);
	if (!env->io || !env->dir || !env->cache) {
		err = env->io ? -ENOMEM : -errno;
		goto out_free;
	}
	err = env->io->ops->mkdir(env->io, datadir);
	if (err && err != -EEXIST)
		goto out_free;
	err = env_lock(env);
	if (err)
		goto out_free;
	if (env->opts.gc_thread) {
		err = -pthread_create(&env->gc_thread, NULL, env_gc_main, env);
		if (err)
			goto out_free;
		env->gc_running = true;
	}
	*out = env;
	return 0;
out_free:
	env_free(env);
	return err;
}

void benv_close(struct benv *env)
{
	if (env->gc_running) {
		atomic_store(&env->gc_stop, true);	/* ends a pass early */
		pthread_mutex_lock(&env->lock);
		pthread_cond_broadcast(&env->gc_cond);
		pthread_mutex_unlock(&env->lock);
		pthread_join(env->gc_thread, NULL);
	}
	for (size_t i = 0; i < env->ndbs; i++)
		db_close(env->dbs[i]);
	env_free(env);
}

int benv_db(struct benv *env, const char *name, bool create, struct bdb **out)
{
	struct bdb **dbs;
	int err = 0;

	if (!bdb_name_valid(name))
		return BARREL_E_INVALID;
	pthread_mutex_lock(&env->lock);
	for (size_t i = 0; i < env->ndbs; i++) {
		if (strcmp(env->dbs[i]->name, name) == 0) {
			*out = env->dbs[i];
			goto out_unlock;
		}
	}
	dbs = realloc(env->dbs, (env->ndbs + 1) * sizeof(*dbs));
	if (!dbs) {
		err = -ENOMEM;
		goto out_unlock;
	}
	env->dbs = dbs;
	err = db_open(env, name, create, out);
	if (!err)
		env->dbs[env->ndbs++] = *out;
out_unlock:
	pthread_mutex_unlock(&env->lock);
	return err;
}

struct name_list {
	char **names;
	size_t n, cap;
	int err;
};

static int collect_name(void *arg, const char *dirent)
{
	struct name_list *l = arg;
	char name[BDB_MAX_NAME + 1];

	if (!dir_to_name(name, sizeof(name), dirent))
		return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		char **n = realloc(l->names, cap * sizeof(*n));

		if (!n) {
			l->err = -ENOMEM;
			return 1;
		}
		l->names = n;
		l->cap = cap;
	}
	l->names[l->n] = strdup(name);
	if (!l->names[l->n]) {
		l->err = -ENOMEM;
		return 1;
	}
	l->n++;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int benv_spool(struct benv *env, int *fd)
{
	*fd = open(env->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	return *fd < 0 ? -errno : 0;
}

int benv_list(struct benv *env, int (*cb)(void *arg, const char *name),
	      void *arg)
{
	struct name_list l = { 0 };
	int err;

	err = env->io->ops->list(env->io, env->dir, collect_name, &l);
	if (!err)
		err = l.err;
	if (!err && l.n)
		qsort(l.names, l.n, sizeof(*l.names), cmp_str);
	for (size_t i = 0; i < l.n; i++) {
		if (!err && cb(arg, l.names[i]))
			err = 1;
		free(l.names[i]);
	}
	free(l.names);
	return err > 0 ? 0 : err;
}

static int remove_entry(void *arg, const char *name)
{
	struct bdb *db = arg;
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", db->dir, name);
	db->env->io->ops->unlink(db->env->io, path);
	return 0;
}

int benv_drop(struct benv *env, const char *name)
{
	struct bdb *db;
	int err;

	err = benv_db(env, name, false, &db);
	if (err)
		return err;
	pthread_mutex_lock(&env->lock);
	for (size_t i = 0; i < env->ndbs; i++)
		if (env->dbs[i] == db)
			env->dbs[i] = env->dbs[--env->ndbs];
	pthread_mutex_unlock(&env->lock);
	err = env->io->ops->list(env->io, db->dir, remove_entry, db);
	if (!err)
		err = env->io->ops->rmdir(env->io, db->dir);
	if (!err)
		err = env->io->ops->fsync_dir(env->io, env->dir);
	/* The files are gone: close without a final checkpoint. */
	db->failed = true;
	db_close(db);
	return err;
}

/* ---- statistics ---- */

int bdb_stat(struct bdb *db, struct bdb_stat *st)
{
	struct bcache_stats cs;
	struct bsnap *s;
	int err = bdb_snapshot(db, &s);

	if (err)
		return err;
	*st = (struct bdb_stat){ .seq = s->v->seq, .txn = s->v->txn };
	for (uint32_t i = DB_FIRST_USER_TABLE; i < s->v->ntables; i++) {
		if (s->v->tables[i].exists) {
			st->tables++;
			st->entries += s->v->tables[i].entries;
		}
	}
	bsnap_release(s);
	pthread_rwlock_rdlock(&db->segs_lock);
	for (size_t i = 0; i < db->nsegs; i++) {
		const struct db_seg *g = db->segs[i];

		st->segments++;
		st->disk_bytes += g->used;
		st->used_bytes += g->used;
		st->live_bytes += g->live;
	}
	pthread_rwlock_unlock(&db->segs_lock);
	st->bytes_written = atomic_load((_Atomic uint64_t *)&db->bytes_written);
	bcache_stats(db->env->cache, &cs);
	st->cache_bytes = cs.bytes;
	st->cache_budget = cs.budget;
	st->checkpoints = atomic_load(&db->checkpoints);
	st->checkpoint_us = atomic_load(&db->checkpoint_us);
	st->head_hits = atomic_load(&db->head_hits);
	st->head_misses = atomic_load(&db->head_misses);
	return 0;
}

int bdb_segments(struct bdb *db,
		 int (*cb)(void *arg, const struct bdb_seginfo *si), void *arg)
{
	struct bdb_seginfo *all;
	size_t n;

	pthread_rwlock_rdlock(&db->segs_lock);
	n = db->nsegs;
	all = calloc(n ? n : 1, sizeof(*all));
	for (size_t i = 0; all && i < n; i++) {
		const struct db_seg *g = db->segs[i];

		all[i] = (struct bdb_seginfo){ g->seg->id, g->seg->capacity,
					       g->used, g->live, !g->sealed };
	}
	pthread_rwlock_unlock(&db->segs_lock);
	if (!all)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (cb(arg, &all[i]))
			break;
	free(all);
	return 0;
}
