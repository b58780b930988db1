/*
 * The worker thread (DESIGN.md "Kernel caches"): it wakes on every commit
 * of every database and on queued invalidations, tells the kernel which
 * entries and inodes changed, keeps each open .changes spool growing, and
 * writes the deletion of documents moved away once their grace period
 * ends. It runs outside every request, so a notification never waits on
 * a request that waits on it.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/log.h"
#include "fs/fs.h"

struct inval {
	fuse_ino_t ino;           /* 0: an entry */
	fuse_ino_t parent;
	char *name;
	struct inval *next;
};

struct moved {
	struct fsdb *db;
	char *id;
	size_t idlen;
	struct rev rev;
	struct timespec due;
	struct moved *next;
};

void worker_wake(struct fs *fs)
{
	fs->wake_pending = true;
	pthread_cond_signal(&fs->wake);
}

static void queue(struct fs *fs, fuse_ino_t ino, fuse_ino_t parent,
		  const char *name, bool wake)
{
	struct inval *iv = calloc(1, sizeof(*iv));

	if (!iv || (name && !(iv->name = strdup(name)))) {
		free(iv);
		return;           /* the timeouts still bound staleness */
	}
	iv->ino = ino;
	iv->parent = parent;
	pthread_mutex_lock(&fs->lock);
	iv->next = fs->invals;
	fs->invals = iv;
	if (wake)
		worker_wake(fs);
	pthread_mutex_unlock(&fs->lock);
}

void inval_inode(struct fs *fs, fuse_ino_t ino)
{
	queue(fs, ino, 0, NULL, true);
}

void inval_inode_later(struct fs *fs, fuse_ino_t ino)
{
	queue(fs, ino, 0, NULL, false);
}

void inval_entry(struct fs *fs, fuse_ino_t parent, const char *name)
{
	queue(fs, 0, parent, name, true);
}

/* ---- documents moved away ---- */

static size_t moved_bucket(struct fsdb *db, const char *id, size_t idlen)
{
	uint64_t h = 0xcbf29ce484222325ull ^ (uintptr_t)db;

	for (size_t i = 0; i < idlen; i++)
		h = (h ^ (unsigned char)id[i]) * 0x100000001b3ull;
	return (size_t)(h ^ h >> 31) % FS_MOVED_BUCKETS;
}

static struct moved **moved_find(struct fs *fs, struct fsdb *db,
				 const char *id, size_t idlen)
{
	struct moved **pp = &fs->moved[moved_bucket(db, id, idlen)];

	while (*pp && ((*pp)->db != db || (*pp)->idlen != idlen ||
		       memcmp((*pp)->id, id, idlen)))
		pp = &(*pp)->next;
	return pp;
}

void moved_add(struct fs *fs, struct fsdb *db, const char *id, size_t idlen,
	       const struct rev *rev)
{
	struct moved *m = calloc(1, sizeof(*m)), **pp, *old;

	if (!m || !(m->id = malloc(idlen + 1))) {
		free(m);
		return;
	}
	memcpy(m->id, id, idlen);
	m->id[idlen] = '\0';
	m->idlen = idlen;
	m->db = db;
	m->rev = *rev;
	clock_gettime(CLOCK_MONOTONIC, &m->due);
	m->due.tv_sec += fs->opts.grace_s;
	pthread_mutex_lock(&fs->lock);
	pp = moved_find(fs, db, id, idlen);
	if ((old = *pp)) {            /* hidden again: the first one counts */
		*pp = old->next;
		m->rev = old->rev;
		free(old->id);
		free(old);
	}
	m->next = fs->moved[moved_bucket(db, id, idlen)];
	fs->moved[moved_bucket(db, id, idlen)] = m;
	/* the worker's tick finds it due; only a zero grace needs it now */
	if (!fs->opts.grace_s)
		worker_wake(fs);
	pthread_mutex_unlock(&fs->lock);
}

bool moved_has(struct fs *fs, struct fsdb *db, const char *id, size_t idlen)
{
	bool has;

	pthread_mutex_lock(&fs->lock);
	has = *moved_find(fs, db, id, idlen) != NULL;
	pthread_mutex_unlock(&fs->lock);
	return has;
}

bool moved_take(struct fs *fs, struct fsdb *db, const char *id,
		size_t idlen, struct rev *rev)
{
	struct moved **pp, *m;

	pthread_mutex_lock(&fs->lock);
	pp = moved_find(fs, db, id, idlen);
	if ((m = *pp))
		*pp = m->next;
	pthread_mutex_unlock(&fs->lock);
	if (!m)
		return false;
	*rev = m->rev;
	free(m->id);
	free(m);
	return true;
}

/* Write the deletions of the moves of one database in list (or only
 * the one given), as one bulk, each on the revision that was hidden. */
static void moved_delete(struct fs *fs, struct fsdb *db, struct moved *list,
			 const struct moved *only)
{
	struct doc_put *req;
	size_t n = 0, i = 0;

	for (struct moved *m = list; m; m = m->next)
		n += m->db == db && (!only || m == only);
	if (!(req = calloc(n, sizeof(*req))) || fsdb_enter(db)) {
		free(req);
		return;
	}
	for (struct moved *m = list; m; m = m->next)
		if (m->db == db && (!only || m == only))
			req[i++] = (struct doc_put){ .id = m->id,
				.idlen = m->idlen, .parent = &m->rev,
				.deleted = true,
				.flags = DOC_PUT_KEEP_ATTS | DOC_PUT_BRANCH };
	if (fs_put(fs, db, req, n))
		barrel_log(BLOG_ERR, "%s: deletions not written", db->name);
	for (i = 0; i < n; i++)
		if (req[i].rc)
			barrel_log(BLOG_ERR, "%s/%s: deletion not written: %s",
				   db->name, req[i].id, req[i].error[0] ?
				   req[i].error : barrel_strerror(req[i].rc));
	fsdb_leave(db);
	free(req);
}

/* Take the moves due by now (all: every one; db: only db's) off the
 * list (lock held). */
static struct moved *moved_due(struct fs *fs, struct fsdb *db, bool all)
{
	struct moved *due = NULL, *m;
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	for (size_t b = 0; b < FS_MOVED_BUCKETS; b++) {
		struct moved **pp = &fs->moved[b];

		while ((m = *pp)) {
			bool ripe = all || m->due.tv_sec < now.tv_sec ||
				    (m->due.tv_sec == now.tv_sec &&
				     m->due.tv_nsec <= now.tv_nsec);

			if ((db && m->db != db) || !ripe) {
				pp = &m->next;
				continue;
			}
			*pp = m->next;
			m->next = due;
			due = m;
		}
	}
	return due;
}

static void moved_run(struct fs *fs, struct moved *due)
{
	struct fsdb *done[16];
	size_t ndone = 0;

	/* one bulk per database (a few of them; past 16, one per move) */
	for (struct moved *m = due; m; m = m->next) {
		bool seen = false;

		for (size_t i = 0; i < ndone && !seen; i++)
			seen = done[i] == m->db;
		if (seen)
			continue;
		if (ndone < 16) {
			done[ndone++] = m->db;
			moved_delete(fs, m->db, due, NULL);
		} else {
			moved_delete(fs, m->db, due, m);
		}
	}
	for (struct moved *m; (m = due); free(m)) {
		due = m->next;
		free(m->id);
	}
}

void moved_flush(struct fs *fs)
{
	struct moved *due;

	pthread_mutex_lock(&fs->lock);
	due = moved_due(fs, NULL, true);
	pthread_mutex_unlock(&fs->lock);
	moved_run(fs, due);
}

void moved_flush_db(struct fs *fs, struct fsdb *db)
{
	struct moved *due;

	pthread_mutex_lock(&fs->lock);
	due = moved_due(fs, db, true);
	pthread_mutex_unlock(&fs->lock);
	moved_run(fs, due);
}

/* ---- invalidation ---- */

static void notify(struct fs *fs, struct inval *iv)
{
	if (iv->ino)
		fuse_lowlevel_notify_inval_inode(fs->se, iv->ino, 0, 0);
	else
		fuse_lowlevel_notify_inval_entry(fs->se, iv->parent, iv->name,
						 strlen(iv->name));
}

/* .rev/ID of a new document: a lookup made before its first revision
 * is cached as absent. */
static int changed_history(struct fs *fs, struct node *dbn,
			   const struct doc_row *row)
{
	struct node *rev = node_find(fs, dbn->ino, ".rev");
	char *enc;

	if (row->revs[0].gen != 1)
		return 0;
	if (rev && (enc = name_encode(row->id, row->idlen, true))) {
		inval_entry(fs, rev->ino, enc);
		free(enc);
	}
	return 0;
}

/* The names a changed document shows under, as the kernel may cache
 * them: ID.json (and ID/) in its folder, .rev/ID, and .changes. */
static int changed_doc(void *arg, const struct doc_row *row)
{
	struct fsdb *db = arg;
	struct fs *fs = db->fs;
	struct node *dbn = node_find(fs, FUSE_ROOT_ID, db->name), *dir, *n;
	size_t plen = strlen(DOC_DESIGN_PREFIX);
	char *name, *enc;

	if (!dbn)
		return 0;
	if (fs_own(fs, db, row->seq))
		return changed_history(fs, dbn, row);   /* the kernel saw it */
	dir = dbn;
	if (row->idlen > plen && !memcmp(row->id, DOC_DESIGN_PREFIX, plen) &&
	    !(dir = node_find(fs, dbn->ino, "_design")))
		return 0;
	if ((name = name_of_doc(row->id, row->idlen))) {
		if ((n = node_find(fs, dir->ino, name)))
			inval_inode(fs, n->ino);
		inval_entry(fs, dir->ino, name);
		name[strlen(name) - 5] = '\0';
		inval_entry(fs, dir->ino, name);
		free(name);
	}
	if ((n = node_find(fs, dbn->ino, ".rev")) &&
	    (enc = name_encode(row->id, row->idlen, true))) {
		struct node *rd = node_find(fs, n->ino, enc);

		if (rd)
			inval_inode(fs, rd->ino);
		inval_entry(fs, n->ino, enc);
		free(enc);
	}
	return 0;
}

/* The changes of db since the worker last looked. */
static void db_changed(struct fs *fs, struct fsdb *db)
{
	uint64_t seq = bdb_seq(docdb_bdb(db->d)), last;
	struct node *dbn, *ch;

	if (seq == db->seen_seq)
		return;
	docdb_changes(db->d, NULL, db->seen_seq, 0, 0, changed_doc, db, &last);
	db->seen_seq = seq;
	if ((dbn = node_find(fs, FUSE_ROOT_ID, db->name)) &&
	    (ch = node_find(fs, dbn->ino, ".changes")))
		inval_inode(fs, ch->ino);
}

static void scan_dbs(struct fs *fs)
{
	struct fsdb *db;

	pthread_mutex_lock(&fs->lock);
	db = fs->dbs;
	pthread_mutex_unlock(&fs->lock);
	/* entries are never freed while mounted; new ones are prepended */
	for (; db; db = db->next)
		if (!fsdb_enter(db)) {
			db_changed(fs, db);
			if (fsrec_settle(db, NULL, true))
				barrel_log(BLOG_ERR, "%s: scratch files not "
					   "stored yet", db->name);
			fsdb_leave(db);
		}
}

static void *worker_main(void *arg)
{
	struct fs *fs = arg;
	struct inval *ivs;
	struct moved *due;

	pthread_mutex_lock(&fs->lock);
	while (!fs->stop) {
		struct timespec t;

		clock_gettime(CLOCK_REALTIME, &t);
		t.tv_nsec += 200 * 1000000;
		if (t.tv_nsec >= 1000000000) {
			t.tv_sec++;
			t.tv_nsec -= 1000000000;
		}
		if (!fs->wake_pending)
			pthread_cond_timedwait(&fs->wake, &fs->lock, &t);
		fs->wake_pending = false;
		ivs = fs->invals;
		fs->invals = NULL;
		due = moved_due(fs, NULL, false);
		pthread_mutex_unlock(&fs->lock);
		moved_run(fs, due);
		scan_dbs(fs);
		for (struct inval *iv; (iv = ivs); free(iv)) {
			ivs = iv->next;
			notify(fs, iv);
			free(iv->name);
		}
		pthread_mutex_lock(&fs->lock);
	}
	pthread_mutex_unlock(&fs->lock);
	return NULL;
}

int worker_start(struct fs *fs)
{
	int rc = pthread_create(&fs->worker, NULL, worker_main, fs);

	fs->worker_running = !rc;
	return -rc;
}

void worker_stop(struct fs *fs)
{
	struct inval *iv;

	if (!fs->worker_running)
		return;
	pthread_mutex_lock(&fs->lock);
	fs->stop = true;
	worker_wake(fs);
	pthread_mutex_unlock(&fs->lock);
	pthread_join(fs->worker, NULL);
	fs->worker_running = false;
	while ((iv = fs->invals)) {
		fs->invals = iv->next;
		free(iv->name);
		free(iv);
	}
}
