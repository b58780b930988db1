/*
 * Internals of the database layer (db.c, txn.c, snap.c, checkpoint.c,
 * recover.c, blob.c, gc.c). Not for use outside engine/.
 *
 * Locks, in the order they are taken (DESIGN.md "Threads and locks"):
 *   db->write_lock   the single writer: a transaction, a checkpoint, a GC
 *                    batch, a blob chunk append. Protects the pending state:
 *                    tables[], tail, open segment, counters.
 *   db->flush_lock   group commit: leader election, written_gen,
 *                    durable_gen, lazy_dirty, lazy_seg.
 *   db->stage_lock   the staged and in-flight write buffers.
 *   db->segs_lock    (rwlock) the segment table and per-segment accounting.
 *   db->ver_lock     the published version and the list of live versions.
 */
#ifndef BARREL_DB_I_H
#define BARREL_DB_I_H

#include <pthread.h>
#include <stdatomic.h>

#include "engine/btree.h"
#include "engine/cache.h"
#include "engine/hcache.h"
#include "engine/db.h"
#include "engine/io.h"
#include "engine/segment.h"

#define DB_TABLE_CATALOG 0u   /* name -> {id, flags} */
#define DB_TABLE_BLOBS 1u     /* (blob id, chunk) -> chunk location */
#define DB_FIRST_USER_TABLE 2u
#define DB_INLINE_MAX 48u     /* values up to this size live in the index */
#define BLOB_CHUNK (256u << 10)
#define BLOB_META_CHUNK 0xffffffffu
#define HEAD_SLOT_SIZE 512u
#define HEAD_SIZE 64u

/* Index entry kinds (FORMAT.md "Index entries"). */
enum { ENT_INLINE = 0, ENT_RECORD = 1 };

/* A decoded index entry. */
struct db_entry {
	uint8_t kind;
	uint64_t seq;
	const void *val;      /* ENT_INLINE: the value (borrowed) */
	uint32_t vlen;
	bptr addr;            /* ENT_RECORD: the PUT record */
	uint32_t size;        /* its framed size */
};

/* Which index of a table a B-tree store serves. */
enum { IDX_KEY = 0, IDX_SEQ = 1 };

struct db_store_ctx {
	struct bdb *db;
	uint32_t table;
	uint8_t which;
};

/* One table of the pending (writer) state; protected by db->write_lock. */
struct db_table {
	bool exists;
	unsigned flags;
	struct bt_ref root;       /* key -> entry */
	struct bt_ref seq_root;   /* be64(seq) -> klen, key, entry */
	uint64_t entries;
};

/* Name and stores of a table id; never freed before the db closes. */
struct db_tabinfo {
	char *name;
	unsigned flags;
	bdb_retain_fn retain;     /* GC's question for BDB_TABLE_RETAIN */
	void *retain_arg;         /* (both under the writer slot) */
	struct db_store_ctx ctx[2];
	struct bt_store store[2];
};

/* A published, immutable state that snapshots hold. */
struct db_version {
	atomic_int refs;
	uint64_t number;          /* publication counter */
	uint64_t seq, txn;
	uint32_t ntables;
	struct db_table *tables;  /* roots dup'ed for this version */
	struct db_version *prev, *next;   /* live list; db->ver_lock */
};

struct bsnap {
	struct bdb *db;
	struct db_version *v;     /* counted reference */
};

/* One segment and its accounting. */
struct db_seg {
	struct segment *seg;
	uint64_t used;            /* bytes up to the end of the last record */
	uint64_t live;            /* bytes of live records (heuristic for GC) */
	uint64_t created_txn;     /* age for cost-benefit */
	bool sealed;
	bool index;               /* index nodes only (a background checkpoint's) */
	bool doomed;              /* collected; delete once no version needs it */
	uint64_t doomed_version;
};

/* A write buffer: bytes destined for seg at [off, off + len). */
struct db_wbuf {
	uint8_t *data;
	size_t len, cap;
	uint32_t seg;
	uint64_t off;
	uint64_t gen;             /* staging generation of the last byte */
};

struct bdb {
	struct benv *env;
	char *name;
	char *dir;
	uint64_t uid;             /* cache namespace */

	pthread_mutex_t write_lock;
	pthread_cond_t write_cond;
	bool writer_busy;         /* a transaction holds the writer slot */
	pthread_cond_t bgc_cond;  /* with write_lock: bgc_ended moved */
	uint64_t bgc_ended;       /* background checkpoints whose thread ended */

	/* pending state: write_lock */
	struct db_table *tables;
	uint32_t ntables;         /* allocated slots == next table id */
	struct db_tabinfo **info; /* per table id */
	uint32_t ninfo;
	uint64_t seq, txn, next_blob_id;
	uint32_t next_seg_id;
	struct db_seg *open;      /* NULL: create one on the next append */
	uint64_t tail;            /* next append offset in open */
	uint64_t log_since_cp;    /* bytes appended since the last checkpoint */
	bptr cp_addr;             /* the last durable checkpoint */
	uint32_t cp_size;
	bptr cp_replay;           /* where its replay starts */
	uint64_t cp_ver;          /* the first version published that it covers */
	struct db_bgc *bgc;       /* a background checkpoint, or NULL */
	uint64_t bgc_stamp;       /* the last one's node mark (bt_adopt()) */
	uint64_t head_gen;
	struct bio_file *headf;   /* DBDIR/HEAD, owned */
	bool failed;              /* an fsync failed: read-only from now */
	bool head_clean;          /* HEAD says clean: clear before appending */
	struct db_blobreg *blobs; /* finished, not yet linked blobs */

	/* group commit */
	pthread_mutex_t flush_lock;
	pthread_cond_t flush_cond;
	bool flushing;
	uint64_t flushes;         /* log writes done (db_flush_yield()) */
	uint64_t durable_gen;
	uint64_t written_gen;     /* written and visible, maybe not durable */
	bool lazy_dirty;          /* written_gen > durable_gen: bytes of */
	uint32_t lazy_seg;        /* this segment await an fsync */
	int flush_err;

	pthread_mutex_t stage_lock;
	struct db_wbuf staged;    /* appended, not yet submitted */
	struct db_wbuf inflight;  /* being written */
	uint64_t stage_gen;       /* generation of the last staged unit */
	struct db_version *staged_ver;   /* to publish with the staged bytes */
	uint64_t staged_seq;

	pthread_rwlock_t segs_lock;
	struct db_seg **segs;     /* sorted by id */
	size_t nsegs, segs_cap;

	pthread_mutex_t ver_lock;
	pthread_cond_t ver_cond;  /* bdb_wait */
	struct db_version *current;
	struct db_version *live_head;   /* oldest first */
	uint64_t ver_number;
	bool closing;

	pthread_mutex_t watch_lock;
	struct db_watch *watches; /* watch_lock */
	uint64_t next_watch;

	uint64_t bytes_written;   /* atomic add */
	struct hcache *heads;     /* value heads (btxn_put_ex()); write_lock */
	_Atomic uint64_t head_hits, head_misses;   /* btxn_get_head() */
	_Atomic uint64_t checkpoints, checkpoint_us;  /* bdb_stat() */
	/* The key-index descent of the writer's last lookup, for its put of
	 * the same key (bt_get_memo()); writer only, empty between
	 * transactions. */
	struct bt_memo *memo;
	pthread_mutex_t gc_lock;  /* one GC pass, doomed frees or check at a time */
};

struct benv {
	char *dir;
	struct bio *io;
	bool own_io;
	struct bio_file *lockf;
	struct bcache *cache;
	struct benv_opts opts;
	pthread_mutex_t lock;     /* dbs list */
	struct bdb **dbs;
	size_t ndbs;
	uint64_t next_uid;
	_Atomic size_t head_bytes;   /* charge of every db->heads */
	pthread_t gc_thread;
	bool gc_running;
	atomic_bool gc_stop;      /* set before taking env->lock; polled by GC */
	pthread_cond_t gc_cond;
};

/* ---- byte order helpers (all on-disk integers are little-endian) ---- */
static inline void put_le16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static inline void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = v >> (8 * i);
}
static inline void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = v >> (8 * i);
}
static inline uint16_t get_le16(const uint8_t *p) { return p[0] | p[1] << 8; }
static inline uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}
static inline uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}
static inline void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = v >> (56 - 8 * i);
}
static inline uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* ---- PUT / DEL payloads (FORMAT.md) ---- */
#define PUT_HDR 24u
#define DEL_HDR 16u
#define PUT_RETAIN 1u     /* PUT flags: the replaced value's record stays
                             live (a retained record) */

struct db_put {
	uint32_t table;
	unsigned flags;           /* PUT_RETAIN; 0 for a DEL */
	uint64_t seq;
	const uint8_t *key;
	uint16_t klen;
	const uint8_t *val;
	uint32_t vlen;
};

/* Decode a PUT/DEL payload; BARREL_E_CORRUPT when malformed. */
int db_put_decode(const void *p, uint32_t len, struct db_put *out);
int db_del_decode(const void *p, uint32_t len, struct db_put *out);

/* ---- entries ---- */
/* Encode an entry into buf (room for BT_MAX_VAL); returns its length. */
size_t db_entry_encode(uint8_t *buf, const struct db_entry *e);
int db_entry_decode(const void *buf, size_t len, struct db_entry *e);

/* ---- db.c ---- */
int db_open(struct benv *env, const char *name, bool create, struct bdb **out);
void db_close(struct bdb *db);
struct db_seg *db_seg_find(struct bdb *db, uint32_t id);    /* segs_lock held */
int db_seg_insert(struct bdb *db, struct db_seg *s);         /* segs_lock held */
/* Enter an open segment into the table (takes segs_lock); on error the
 * caller still owns seg. */
int db_seg_add(struct bdb *db, struct segment *seg, uint64_t used,
	       uint64_t live, uint64_t created, bool sealed, struct db_seg **out);
/* Create the next segment, of capacity cap (rounded to what a segment
 * can be), and enter it into the table unsealed (writer slot held). */
int db_seg_new(struct bdb *db, uint64_t cap, struct db_seg **out);
/* Take a segment out of the table, close it and delete its file: one
 * that nothing on disk names yet. */
int db_seg_drop(struct bdb *db, struct db_seg *s);
void db_live_add(struct bdb *db, bptr addr, int64_t bytes);
int db_tabinfo_ensure(struct bdb *db, uint32_t id, const char *name,
		      unsigned flags);
uint64_t db_disk_target(struct bdb *db);   /* capacity for a new segment */

/* ---- txn.c: the writer ---- */
void db_writer_enter(struct bdb *db);
void db_writer_leave(struct bdb *db);
/*
 * Apply one PUT or DEL record (already appended at addr/size) to the
 * pending state. Used by transactions, replay and GC alike.
 */
int db_apply(struct bdb *db, uint8_t type, const void *payload, uint32_t len,
	     bptr addr, uint32_t size);
/* Append a framed record to the log (writer held); *addr where it lands. */
int db_append(struct bdb *db, uint8_t type, uint64_t txn,
	      const struct iovec *iov, int n, bptr *addr, uint32_t *size);
/* Stage a version for publication with everything appended so far. */
uint64_t db_stage_version(struct bdb *db);
/* Transactions with the writer slot already held (GC, blobs). */
int db_txn_begin_locked(struct bdb *db, bool internal, struct btxn **out);
int db_txn_put_seq(struct btxn *t, uint32_t table, const void *key,
		   size_t klen, const void *val, size_t vlen, uint64_t seq);
/* The same of a value in parts, with PUT flags (PUT_RETAIN). */
int db_txn_put_flags(struct btxn *t, uint32_t table, const void *key,
		     size_t klen, const struct bput_value *val, uint64_t seq,
		     unsigned flags);
/* Stage the commit; *gen is 0 when there was nothing to commit. */
int db_txn_commit_locked(struct btxn *t, uint64_t *gen);
void db_txn_abort_locked(struct btxn *t);
/* Wait until staging generation gen is durable (group commit). */
int db_sync(struct bdb *db, uint64_t gen);
/* Wait until gen is written and visible; durable too when durable. */
int db_flush(struct bdb *db, uint64_t gen, bool durable);
/* Wait for the log write in progress, if any, to end: a background writer
 * lets a commit's fdatasync go first. Does not wait for the next one. */
void db_flush_yield(struct bdb *db);
/* Flush, seal the open segment, and forget it (writer held). */
int db_roll(struct bdb *db);

/* ---- snap.c ---- */
struct db_version *db_version_new(struct bdb *db);   /* from pending state */
void db_version_put(struct bdb *db, struct db_version *v);
void db_publish(struct bdb *db, struct db_version *v, uint64_t seq);
uint64_t db_oldest_version(struct bdb *db);
/* Read a record through the buffers or the file; *payload malloc'ed. */
int db_read_record(struct bdb *db, bptr addr, uint32_t size, uint8_t type,
		   void **payload, uint32_t *len);
/* The first n bytes of the record at addr (frame, then payload), through
 * the buffers or the file, unvalidated but for a sane length. */
int db_read_head(struct bdb *db, bptr addr, uint8_t *head, size_t n);
/* Read the record at addr whatever its size (read from its frame). */
int db_read_record_at(struct bdb *db, bptr addr, uint8_t type,
		      void **payload, uint32_t *len);
/* The value of the PUT payload (malloc'ed, len bytes) into out, when it is
 * a put of table and key; else BARREL_E_CORRUPT (logged with addr). The
 * payload is consumed either way. */
int db_put_value(struct bdb *db, void *payload, uint32_t len, uint32_t table,
		 const void *key, size_t klen, bptr addr, struct bval *out);
/* Fetch an entry's value (copy, malloc'ed) into out. */
int db_entry_value(struct bdb *db, const struct db_entry *e, uint32_t table,
		   const void *key, size_t klen, struct bval *out);
void db_versions_release_all(struct bdb *db);
void db_watches_free(struct bdb *db);

/* ---- checkpoint.c ---- */
/* A checkpoint now, in the caller's thread, after any background one has
 * ended (writer slot held). */
int db_checkpoint_locked(struct bdb *db, bool clean);
/*
 * Start a checkpoint of the pending state on a thread of its own (writer
 * slot held): the state is frozen as an unpublished version and the
 * writer goes on while its index nodes are written to a segment of their
 * own. A no-op while one is running. Falls back to db_checkpoint_locked()
 * when the thread cannot start.
 */
int db_checkpoint_background(struct bdb *db);
/* If a background checkpoint has ended, make it the database's last one
 * (writer slot held); with wait, wait for a running one first. */
int db_checkpoint_install(struct bdb *db, bool wait);
/*
 * A checkpoint of the pending state made in the background, waited for
 * with the writer slot released, so writers go on meanwhile (GC's). The
 * slot is held on entry and on return; the pending state may have moved
 * on in between. 0 once a checkpoint covering the state at entry is the
 * database's last (db->cp_ver: the first version published that it
 * covers).
 */
int db_checkpoint_yield(struct bdb *db);
int db_head_write(struct bdb *db, bool clean);
int db_store_init(struct bdb *db, uint32_t table);
uint64_t db_dirty_bytes(struct bdb *db);
/* The same, recomputed by walking the dirty nodes (writer slot held). */
uint64_t db_dirty_bytes_exact(struct bdb *db);

struct db_head {
	bool clean;
	uint64_t gen;
	bptr cp_addr;
	uint32_t cp_size;
	bptr replay;              /* where replay starts */
};
int db_head_decode(const uint8_t *slot, struct db_head *h);

/* A segment entry of a CHECKPOINT record. */
struct db_cp_seg {
	uint32_t id;
	uint32_t flags;           /* DB_CP_SEG_INDEX */
	uint64_t used, live, created;
};
#define DB_CP_SEG_INDEX 1u        /* index nodes only: replay skips it */

/* A decoded CHECKPOINT payload; tables and segs borrow the payload. */
struct db_cp {
	uint64_t txn, seq, next_blob_id;
	uint32_t ntables, next_seg_id, nt, ns;
	const uint8_t *tables, *segs;
};
int db_cp_decode(const uint8_t *p, uint32_t len, struct db_cp *cp);
void db_cp_table(const struct db_cp *cp, uint32_t i, uint32_t *id,
		 struct db_table *t);
void db_cp_seg(const struct db_cp *cp, uint32_t i, struct db_cp_seg *out);

/* ---- recover.c ---- */
int db_recover(struct bdb *db);

struct bdb *db_txn_db(struct btxn *t);
struct bdb *db_snap_db(struct bsnap *s);

/* ---- blob.c ---- */
void db_blobs_release(struct bdb *db);
/* Lowest segment holding chunks of a blob not yet linked (writer slot). */
uint32_t db_blobs_min_seg(struct bdb *db);

/* ---- gc.c ---- */
void db_free_doomed(struct bdb *db);
void *env_gc_main(void *arg);

#endif
