/*
 * The mount's private API between its files (DESIGN.md "The mount").
 *
 * A node is a name the kernel has looked up (its inode); an open file is
 * a struct fh. Nodes name things and hold no content: documents,
 * revisions and attachments are read from the database, scratch files and
 * attributes from each database's "fs" table (FORMAT.md "Mount
 * attributes").
 *
 * Helpers return 0 or a negative errno and never reply; the FUSE
 * callbacks in ops.c call them and reply exactly once.
 *
 * Locks, outermost first: fsdb->use (rwlock: every operation on a
 * database reads it; rmdir writes it), node->lock (an open node's shared
 * spool), fsdb->table_lock (writes of the fs table, across their commit),
 * fsdb->hold_lock and fs->lock (held records; nodes, databases, pending
 * moves: each held briefly, never both).
 */
#ifndef BARREL_FS_H
#define BARREL_FS_H

#define FUSE_USE_VERSION 314

#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/bbuf.h"
#include "engine/docdb.h"
#include "sync/catalog.h"

struct fs;

struct fs_opts {
	unsigned grace_s;         /* a document moved away waits this long */
	double cache_timeout;     /* entry and attribute timeouts, seconds */
	uint32_t keep_bodies;     /* history=N (0: all) */
	bool foreground;
	const char *listen;       /* the HTTP API on TCP (sync/http.h) */
	const char *passwd;
	const char *tls_cert, *tls_key;
};

#define FS_HELD_BUCKETS 256

/* One database of the environment, open as documents. Never freed
 * before the mount ends, so nodes may point at it after rmdir. */
struct fsdb {
	struct fs *fs;
	char *name;
	struct docdb *d;          /* NULL once removed; read under use */
	struct view_indexer *views;   /* d's view indexer, while d is open */
	uint32_t fs_table;        /* the mount's table: attributes, scratch */
	pthread_rwlock_t use;
	uint64_t watch_id;
	uint64_t seen_seq;        /* inval thread: changes processed up to */
	struct fsdb *next;        /* protected by fs->lock */
	/* By fs->lock: commits through the mount under way; a commit seen
	 * meanwhile (on_commit) leaves waking the worker to the last of
	 * them, which wakes it unless every commit up to now was its own
	 * (checked_seq: the sequence checked up to). */
	unsigned own_puts;
	bool wake_owed;
	uint64_t checked_seq;
	/* Scratch records not yet stored in the fs table (attr.c "held"):
	 * table_lock orders every write of the table (held across its
	 * commit); hold_lock guards held and held_bytes (held briefly). */
	pthread_mutex_t table_lock;
	pthread_mutex_t hold_lock;
	struct held *held[FS_HELD_BUCKETS];
	size_t held_bytes;
};

enum fsrec_kind { FSREC_ATTRS = 1, FSREC_FILE = 2, FSREC_LINK = 3 };

/* A record of the fs table (FORMAT.md "Mount attributes"). */
enum fsrec_flags { FSREC_TIMES = 1 << 0 };   /* set by utimens */

struct fsrec {
	uint8_t kind;
	uint8_t flags;            /* enum fsrec_flags */
	uint32_t mode, uid, gid;
	struct timespec mtime, ctime, atime;
	uint64_t size;
	uint64_t blob;            /* 0: data inline */
	struct rev rev;           /* documents: mtime belongs to this revision */
	char *data;               /* inline content or link target; owned */
	size_t dlen;
};

enum node_kind {
	NODE_ROOT = 1,
	NODE_STATUS,              /* .status */
	NODE_DB,                  /* DB/ */
	NODE_DOC,                 /* ID.json */
	NODE_ATTDIR,              /* ID/ */
	NODE_ATT,                 /* ID/NAME */
	NODE_DESIGN,              /* _design/ */
	NODE_REVROOT,             /* .rev/ */
	NODE_REVDIR,              /* .rev/ID/ */
	NODE_REVFILE,             /* .rev/ID/REV.json */
	NODE_REVDIFF,             /* .rev/ID/REV.diff */
	NODE_CONFLICTS,           /* .rev/ID/conflicts/ */
	NODE_CONFLICT,            /* .rev/ID/conflicts/REV.json */
	NODE_CHANGES,             /* .changes */
	NODE_SCRATCH,             /* anything else: a file or symlink */
	NODE_VIEWS,               /* .views/ (the kinds below: viewdir.c) */
	NODE_VDDOC,               /* .views/D/ (id: "_design/D") */
	NODE_VIEW,                /* .views/D/V/ (key: the view's name) */
	NODE_VKEY,                /* .views/D/V/KEY.json (the key: its name) */
	NODE_VALL,                /* .views/D/V/.all.json */
	NODE_VREDUCE,             /* .views/D/V/.reduce.json */
	NODE_VGROUP,              /* .views/D/V/.group.json */
	NODE_VSTATUS,             /* .views/D/V/.status.json */
};

/* Is k .views/ or anything in it? (read-only, never cached) */
static inline bool viewdir_kind(enum node_kind k)
{
	return k >= NODE_VIEWS && k <= NODE_VSTATUS;
}

/*
 * What a name is, before it is a node: kind, database, document id, and
 * key (an attachment name, a revision, or a scratch path "NAME",
 * "ID/NAME" or "_design/NAME" inside the database). Strings are owned.
 */
struct proto {
	enum node_kind kind;
	struct fsdb *db;
	char *id;
	size_t idlen;
	char *key;
};

struct node {
	fuse_ino_t ino;
	fuse_ino_t parent;        /* with name: the name index key */
	char *name;
	struct proto p;
	uint64_t nlookup;         /* protected by fs->lock */
	unsigned nopen;           /* protected by fs->lock */
	bool linked;              /* in the name index */
	struct node *next_ino, *next_name;    /* hash chains */

	pthread_mutex_t lock;     /* the fields below */
	int spool;                /* scratch/attachment being written, -1 */
	unsigned writers;         /* open handles that may write */
	bool dirty;               /* spool differs from the database */
	bool written;             /* ... by a write (not only truncated) */
	bool pending;             /* created, not yet a document (empty) */
	struct rev opened;        /* the revision last opened (base hint) */
	bool has_opened;
	struct fh *opens;         /* .changes: its open handles */
	struct fsrec creator;     /* pending: who made it, with what mode */
	/* Documents (DESIGN.md "Kernel caches"): open writers, readers on
	 * the page cache, and the sequence of the revision whose bytes the
	 * page cache may hold (0: unknown; atomic, as a read clears it
	 * without the lock). */
	unsigned editors;
	unsigned cached_opens;
	_Atomic uint64_t cache_seq;
};

/* An open file or directory. */
struct fh {
	struct node *node;
	int flags;                /* open flags */
	struct bbuf edit;         /* documents: a writer's private copy */
	bool editing;             /* ... which this open has */
	bool writes;              /* opened for writing */
	bool shared;              /* counted in node->writers */
	bool dirty;               /* written since the last commit */
	bool cached;              /* a document reader on the page cache */
	bool keep_cache;          /* ... whose pages are its revision's */
	struct rev base;          /* documents: the revision opened */
	bool has_base;
	char *buf;                /* content of a read-only view */
	size_t len, cap;
	uint64_t seq;             /* .changes: feed read up to */
	struct bsnap *snap;       /* attachments, blob scratch files */
	struct bblob_reader *blob;        /* not thread-safe: */
	pthread_mutex_t blob_lock;        /* the kernel reads in parallel */
	struct dirent_list *dir;  /* directories */
	struct fh *next_open;     /* .changes: node->opens, by node->lock */
};

/* Which revision a process last opened a document at (rename saves). */
struct open_note {
	struct fsdb *db;
	char *id;                 /* owned */
	pid_t pid;
	struct rev rev;
};
#define FS_NOTES 128

/* A commit made through the mount: the kernel saw it happen, so the
 * worker need not invalidate what it already knows. */
struct own_seq {
	struct fsdb *db;
	uint64_t seq;
};
#define FS_OWN 16384          /* more than the commits between two ticks */
#define FS_MOVED_BUCKETS 1024

struct fs {
	struct benv *env;
	struct fuse_session *se;
	struct fs_opts opts;
	uid_t uid;                /* the owner of what has no attributes */
	gid_t gid;
	char *datadir;

	pthread_mutex_t lock;
	struct fsdb *dbs;         /* protected by lock */
	struct node **by_ino, **by_name;      /* protected by lock */
	size_t nbuckets, nnodes;
	fuse_ino_t next_ino;
	struct moved *moved[FS_MOVED_BUCKETS];  /* documents moved away or
	                                           removed, by lock */
	struct open_note notes[FS_NOTES];     /* by lock, a ring */
	unsigned next_note;
	struct own_seq *own;      /* by lock: recent commits made through
	                             the mount, at [seq % FS_OWN] */

	pthread_t worker;         /* invalidation and grace timer */
	bool worker_running;
	bool stop;                /* protected by lock */
	bool wake_pending;        /* by lock: a round is owed (worker_wake) */
	pthread_cond_t wake;
	struct inval *invals;     /* queued kernel invalidations, by lock */

	struct catalog cat;       /* the databases, for the HTTP API */
	struct srv *srv;          /* serving it (serve.c) */
	struct jobs *jobs;        /* the replications of "_replicator" */
	char sock[PATH_MAX];      /* its UNIX socket: DATADIR/api.sock */
	struct viewcache *views;  /* viewdir.c: recent key listings, by lock */
};

/* Any error code as a negative errno (error.c's table). */
static inline int fs_err(int rc)
{
	return rc ? -barrel_errno(rc) : 0;
}

/* r as "N-HASH" into buf (REV_STR_SIZE bytes); its length. */
static inline size_t rev_text(const struct rev *r, char *buf)
{
	if (rev_format(r, buf, REV_STR_SIZE))
		buf[0] = '\0';
	return strlen(buf);
}

/* ---- node.c ---- */
int nodes_init(struct fs *fs);
void nodes_release(struct fs *fs);
/* The node of ino (the kernel keeps it alive during a request on it). */
struct node *node_get(struct fs *fs, fuse_ino_t ino);
/* The node of (parent, name), creating it from *p (whose strings it then
 * owns; p is zeroed) and counting one lookup. */
struct node *node_enter(struct fs *fs, fuse_ino_t parent, const char *name,
			struct proto *p);
/* The node of (parent, name) if one is linked; no lookup counted. */
struct node *node_find(struct fs *fs, fuse_ino_t parent, const char *name);
void node_forget(struct fs *fs, fuse_ino_t ino, uint64_t n);
/* Take the node out of the name index (unlinked, or renamed over). */
void node_unlink(struct fs *fs, struct node *n);
/* Give the node a new name and identity (rename); takes *p's strings. */
int node_move(struct fs *fs, struct node *n, fuse_ino_t parent,
	      const char *name, struct proto *p);
void node_open(struct fs *fs, struct node *n);
void node_close(struct fs *fs, struct node *n);
void proto_release(struct proto *p);

/* ---- names.c ---- */
/*
 * What name is in directory dir (no database read beyond what the kind
 * needs: a scratch file or a document's existence decides between a
 * scratch file and an attachment folder). -ENOENT when it cannot exist,
 * -ENAMETOOLONG, -EINVAL for a bad database name.
 */
int name_classify(struct fs *fs, const struct node *dir, const char *name,
		  struct proto *out);
/* dir's name that decodes to a document id as its attachment folder
 * (p is replaced); false when it does not decode. */
bool name_as_attdir(const struct node *dir, const char *name,
		    struct proto *p);
/* The file name of a document id in its directory ("ID.json"), malloc'ed. */
char *name_of_doc(const char *id, size_t idlen);
/* The path of name in directory dir inside its database ("NAME",
 * "_design/NAME", "ID/NAME"): the key of its fs record; malloc'ed. */
char *node_path(const struct node *dir, const char *name);
/* The name of an id (.rev/ID) or attachment without suffix, malloc'ed. */
char *name_encode(const char *s, size_t len, bool doc);

/* ---- db.c (databases) ---- */
int fsdb_open_all(struct fs *fs);
void fsdb_close_all(struct fs *fs);
/* The database named name, or NULL. */
struct fsdb *fsdb_find(struct fs *fs, const char *name);
/* Enter db for an operation: -ENOENT when it was removed. */
int fsdb_enter(struct fsdb *db);
void fsdb_leave(struct fsdb *db);
int fsdb_create(struct fs *fs, const char *name, struct fsdb **out);
/* Remove database name: only an empty one (rmdir), or with everything
 * in it (the HTTP API's DELETE). */
int fsdb_remove(struct fs *fs, const char *name, bool only_empty);

/* ---- attr.c: attributes and scratch files in the "fs" table ---- */

int fsrec_get(struct fsdb *db, struct bsnap *snap, const char *path,
	      struct fsrec *out);
bool fsrec_exists(struct fsdb *db, const char *path);
int fsrec_put(struct fsdb *db, const char *path, const struct fsrec *r);
int fsrec_del(struct fsdb *db, const char *path);
/* Rename a record (replacing one at to) in one transaction. */
int fsrec_move(struct fsdb *db, const char *from, const char *to);
/*
 * A scratch file's record with inline content (or a symlink's) is held
 * in memory when written and stored in the table once it has been left
 * alone for the grace period (a temporary file renamed onto a document
 * or removed before then is never stored); every fsrec_ call sees held
 * records as stored. fsrec_settle() stores db's held records now: the
 * one at path (NULL: all), or with due only those whose time has come.
 * fsrec_hold_end() settles (store) or forgets every held record of db,
 * whose documents are about to close.
 */
void fsrec_hold_init(struct fsdb *db);
int fsrec_settle(struct fsdb *db, const char *path, bool due);
void fsrec_hold_end(struct fsdb *db, bool store);
void fsrec_release(struct fsrec *r);
/* Store the spool fd's content as scratch file path, attributes r. */
int fsrec_put_spool(struct fsdb *db, const char *path, struct fsrec *r,
		    int fd);
/* Copy the content of scratch record r (read from snap) into fd. */
int fsrec_to_spool(struct bsnap *snap, const struct fsrec *r, int fd);
/* Copy a blob into fd from offset 0. */
int blob_to_spool(struct bsnap *snap, uint64_t blob, int fd);
/* pread/pwrite of exactly len bytes at off (0) of a spool. */
int spool_read_all(int fd, char *buf, size_t len);
int spool_write_all(int fd, const char *buf, size_t len, uint64_t off);
/* Copy all of spool from into spool to (from offset 0). */
int spool_copy(int from, int to);
/* List scratch names directly in directory prefix ("" or "ID/"); a
 * non-zero return of cb stops and is returned. */
int fsrec_list(struct fsdb *db, const char *prefix,
	       int (*cb)(void *arg, const char *name, const struct fsrec *r),
	       void *arg);

/* ---- stat.c: attributes of nodes ---- */
/* The fs-table path of a node's attributes (malloc'ed), NULL if none. */
char *node_attr_path(struct fs *fs, struct node *n);
int node_stat(struct fs *fs, struct node *n, struct stat *st);
int node_setattr(struct fs *fs, fuse_req_t req, struct node *n,
		 struct stat *attr, int valid, struct fh *fh);

/* ---- file.c: open files ---- */
int fh_open(struct fs *fs, fuse_req_t req, struct node *n, int flags,
	    struct fh **out);
int fh_read(struct fs *fs, struct fh *fh, char *buf, size_t size, off_t off,
	    size_t *got);
int fh_write(struct fs *fs, struct fh *fh, const char *buf, size_t size,
	     off_t off);
int fh_flush(struct fs *fs, fuse_req_t req, struct fh *fh, bool durable);
void fh_release(struct fs *fs, struct fh *fh);
/* truncate(2) of a file (through fh's spool when it has one). */
int node_truncate(struct fs *fs, struct node *n, off_t size, struct fh *fh);
/* Commit a document body (the spool fd) with parent base, unless it is
 * base's body (base_body when the caller has it, else read); on invalid
 * JSON keep the bytes as "ID.json.rejected". */
int doc_commit_fd(struct fs *fs, struct node *n, int fd,
		  const struct rev *base, const char *base_body,
		  size_t base_len, struct rev *out);
/* The same for a body in memory (len bytes, a NUL after them). With
 * seq, *seq is the new revision's sequence (0: none was written). */
int doc_commit(struct fs *fs, struct node *n, const char *body, size_t len,
	       const struct rev *base, const char *base_body,
	       size_t base_len, struct rev *out, uint64_t *seq);
/* Remember that pid opened (db, id) at rev; the revision pid (else
 * anyone) last opened it at. */
/* A new file's first store: its creator's owner and mode, when they are
 * not the defaults (node->lock held). */
void keep_creator(struct fs *fs, struct node *n);
void note_open(struct fs *fs, struct fsdb *db, const char *id, pid_t pid,
	       const struct rev *rev);
bool note_find(struct fs *fs, struct fsdb *db, const char *id, pid_t pid,
	       struct rev *rev);
void notes_release(struct fs *fs);
/* Store the content of fd as attachment n->p.key of n's document. */
int att_commit_fd(struct fs *fs, struct node *n, int fd);
/* A revision of p's document without attachment a->name (a->remove). */
int att_remove(struct fs *fs, const struct proto *p, struct doc_att *a);

/* ---- views.c: the content of virtual files ---- */
int view_render(struct fs *fs, struct node *n, struct fh *fh);
/* The size a virtual file shows (it is rendered to know). */
int view_size(struct fs *fs, struct node *n, off_t *size);
/* .changes: an open's content (fh->buf), reads that follow new changes,
 * and the size stat shows (db entered for size). */
int changes_open(struct fs *fs, struct node *n, struct fh *fh);
void changes_close(struct node *n, struct fh *fh);
int changes_read(struct fh *fh, char *buf, size_t size, off_t off,
		 size_t *got);
int changes_size(struct fs *fs, struct node *n, off_t *size);

/* ---- viewdir.c: DB/.views/ (db entered by the caller unless said) ---- */
/* What name is in .views/D/ or .views/D/V/ (dir); -ENOENT if nothing. */
int viewdir_classify(const struct node *dir, const char *name,
		     struct proto *p);
/* Mode and size of a node under .views; -ENOENT when it is gone. */
int viewdir_stat(struct fs *fs, struct node *n, struct stat *st);
/* A directory under .views, each name to add (a non-zero return stops
 * and is returned). */
int viewdir_list(struct fs *fs, struct node *n,
		 int (*add)(void *arg, const char *name, mode_t type),
		 void *arg);
/* A file under .views: its content, made now, into fh->buf (enters the
 * database itself). */
int viewdir_open(struct fs *fs, struct node *n, struct fh *fh);
/* Drop what is kept of db's views (it was removed), or everything. */
void viewdir_forget(struct fs *fs, struct fsdb *db);
void viewdir_release(struct fs *fs);

/* ---- dir.c: directory listings ---- */
int dir_open(struct fs *fs, struct node *n, struct fh **out);
int dir_fill(struct fs *fs, fuse_req_t req, struct fh *fh, char *buf,
	     size_t size, off_t off, size_t *got);
void dir_release(struct fh *fh);

/* docdb_put() through the mount: remembers the commits' sequences. */
int fs_put(struct fs *fs, struct fsdb *db, struct doc_put *req, size_t n);
/* Was seq of db committed through the mount (recently)? */
bool fs_own(struct fs *fs, struct fsdb *db, uint64_t seq);

/* ---- worker.c: invalidations and the grace period ---- */
int worker_start(struct fs *fs);
void worker_stop(struct fs *fs);
/* Have the worker make a round now (fs->lock held). */
void worker_wake(struct fs *fs);

/* serve.c: the HTTP API on DATADIR/api.sock (and TCP when asked). */
int serve_start(struct fs *fs);
void serve_stop(struct fs *fs);
/* Queue invalidations of the kernel's caches (done by the worker). */
void inval_inode(struct fs *fs, fuse_ino_t ino);
/* The same at the worker's next round (it wakes every 200 ms). */
void inval_inode_later(struct fs *fs, fuse_ino_t ino);
void inval_entry(struct fs *fs, fuse_ino_t parent, const char *name);
/* Remember a document moved away (vim's writebackup); the worker writes
 * its deletion after the grace period unless moved_take() claims it. */
void moved_add(struct fs *fs, struct fsdb *db, const char *id, size_t idlen,
	       const struct rev *rev);
bool moved_has(struct fs *fs, struct fsdb *db, const char *id,
	       size_t idlen);
bool moved_take(struct fs *fs, struct fsdb *db, const char *id,
		size_t idlen, struct rev *rev);
/* Write every pending deletion now (unmount), or db's (before history
 * is shown: .changes, .rev, xattrs). */
void moved_flush(struct fs *fs);
void moved_flush_db(struct fs *fs, struct fsdb *db);

/* ---- ops.c ---- */
extern const struct fuse_lowlevel_ops fs_ops;

#endif
