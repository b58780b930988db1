/*
 * The storage engine's public API: environments, databases, tables,
 * transactions, snapshots, blobs, checkpoints and GC. fs/, sync/ and
 * tools/ use the engine through this header (and error.h) only.
 *
 * An environment (benv) is a DATADIR: one directory per database, locked
 * exclusively by one process. A database (bdb) holds named tables; each
 * table is an ordered map of byte keys (<= BDB_MAX_KEY) to byte values
 * (<= BDB_MAX_VALUE; bigger data goes in blobs). A table created with
 * BDB_TABLE_SEQ also gets a sequence index: every put or delete takes the
 * next number of the database's sequence, and a changes cursor lists the
 * table's live entries in sequence order.
 *
 * Writes: one transaction at a time per database (bdb_begin() waits for
 * the previous one to commit or abort). btxn_commit() returns once the
 * transaction is durable and visible; commits of concurrent threads share
 * one fdatasync (group commit).
 *
 * Reads: a snapshot (bdb_snapshot()) sees the last durable commit and
 * never waits for the writer or GC.
 *
 * Errors: 0 or a negative code (error.h). Ownership is stated per call.
 */
#ifndef BARREL_DB_H
#define BARREL_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine/error.h"

struct bio;
struct benv;
struct bdb;
struct btxn;
struct bsnap;
struct bcursor;
struct bblob_writer;
struct bblob_reader;

#define BDB_MAX_KEY 1000u
#define BDB_MAX_VALUE (8u << 20)
#define BDB_MAX_HEAD 4096u    /* bytes of a value's head (btxn_put_ex()) */
#define BDB_MAX_NAME 200u     /* database and table names */

struct benv_opts {
	size_t cache_budget;        /* index memory: 3/4 clean node cache, 1/4 dirty
	                               nodes before a checkpoint; default 256 MiB */
	struct bio *io;             /* borrowed; NULL: the io_uring implementation */
	bool gc_thread;             /* run GC in the background; default true */
	double gc_trigger;          /* start GC when disk/live exceeds; default 1.2 */
	uint64_t checkpoint_bytes;  /* log bytes between checkpoints; default 64 MiB */
	uint32_t seg_min, seg_max;  /* segment sizes; default 64 KiB, 64 MiB */
};

/* Fill opts with the defaults. */
void benv_opts_init(struct benv_opts *opts);

/*
 * Open (creating if missing) DATADIR and lock it. BARREL_E_LOCKED when
 * another process holds it (the message names the holder's pid when
 * known). *out is owned by the caller; close it with benv_close().
 */
int benv_open(const char *datadir, const struct benv_opts *opts,
	      struct benv **out);

/*
 * Checkpoint and close every database, stop GC, release the lock.
 * Snapshots, cursors and transactions must be released first.
 */
void benv_close(struct benv *env);

/* Call cb with each database name (sorted); a non-zero return stops. */
int benv_list(struct benv *env, int (*cb)(void *arg, const char *name),
	      void *arg);

/*
 * An unnamed temporary file on DATADIR's filesystem (O_TMPFILE), for data
 * being edited before it becomes a value or a blob: the mount's open
 * files. *fd is owned by the caller (close() it; the file vanishes).
 */
int benv_spool(struct benv *env, int *fd);

/* Is name usable for a database or table? (1..BDB_MAX_NAME bytes of
 * [a-z0-9_$()+/-] starting with a letter, as CouchDB's database names;
 * and CouchDB's system databases "_replicator" and "_users") */
bool bdb_name_valid(const char *name);

/*
 * Open database name; with create, make it if missing. BARREL_E_NOTFOUND
 * when missing and !create, BARREL_E_INVALID for a bad name. The handle is
 * owned by env (the same one for every open of a name) and lives until
 * benv_drop() or benv_close(); do not free it.
 */
int benv_db(struct benv *env, const char *name, bool create,
	    struct bdb **out);

/* Remove a database and all its files. No handle of it may be in use. */
int benv_drop(struct benv *env, const char *name);

const char *bdb_name(const struct bdb *db);

/* ---- tables ---- */

enum bdb_table_flags {
	BDB_TABLE_SEQ = 1 << 0,   /* keep a sequence index */
	BDB_TABLE_RETAIN = 1 << 1,/* values replaced by btxn_put_retain() may
	                             stay live (see "retained records") */
};

/*
 * Id of table name; BARREL_E_NOTFOUND when it does not exist. Ids are
 * stable for the life of the table.
 */
int bdb_table(struct bdb *db, const char *name, uint32_t *id);

/* The flags of table id as of the last commit (0 when it does not exist). */
unsigned bdb_table_flags(struct bdb *db, uint32_t id);

/* ---- transactions (the single writer) ---- */

/* Wait for the writer slot and start a transaction; *out owned until
 * btxn_commit() or btxn_abort(). */
int bdb_begin(struct bdb *db, struct btxn **out);

/* Create table name if missing (takes effect with the commit). An
 * existing table gains BDB_TABLE_RETAIN when flags ask for it; no other
 * flag of an existing table changes. */
int btxn_table(struct btxn *txn, const char *name, unsigned flags,
	       uint32_t *id);

/* Drop a table and every entry in it. */
int btxn_table_drop(struct btxn *txn, const char *name);

/*
 * Put key -> val. For SEQ tables *seq (may be NULL) gets the entry's new
 * sequence number. BARREL_E_TOOBIG over the limits.
 */
int btxn_put(struct btxn *txn, uint32_t table, const void *key, size_t klen,
	     const void *val, size_t vlen, uint64_t *seq);

/* How btxn_put_ex() writes. */
enum bput_flags {
	BPUT_RETAIN = 1 << 0,     /* keep the replaced record (btxn_put_retain()) */
};

/* A value in two parts, head then rest (either may be empty), both
 * borrowed for the call. */
struct bput_value {
	const void *head;
	size_t hlen;
	const void *rest;
	size_t rlen;
};

/*
 * btxn_put() of the value head ‖ rest, with flags. The head is what a
 * later writer edits without the rest: after the commit the environment
 * keeps it in memory by the record's address (an eighth of
 * benv_opts.cache_budget, shared by the databases), and btxn_get_head()
 * of the key returns it without reading the record, while it stays. A
 * layer that keeps a small header in front of a large value (a document's
 * revision tree before its body) edits the header for one index lookup.
 * A head over BDB_MAX_HEAD bytes is not kept. BARREL_E_INVALID for
 * unknown flags, or BPUT_RETAIN on a table without BDB_TABLE_RETAIN.
 */
int btxn_put_ex(struct btxn *txn, uint32_t table, const void *key,
		size_t klen, const struct bput_value *val, unsigned flags,
		uint64_t *seq);

/* Delete key; BARREL_E_NOTFOUND when absent. */
int btxn_del(struct btxn *txn, uint32_t table, const void *key, size_t klen);

/* A value as returned by a lookup: data is malloc'ed, owned by the caller,
 * freed with bval_release(). */
struct bval {
	void *data;
	size_t len;
	uint64_t seq;     /* the entry's sequence number (SEQ tables), else 0 */
	uint64_t addr;    /* the record holding the value; 0 for a value kept
	                     in the index (at most 48 bytes) and for one the
	                     reading transaction wrote (its place is final
	                     only at the commit) */
};
void bval_release(struct bval *v);

/* Read through the transaction: sees its own writes and every commit. */
int btxn_get(struct btxn *txn, uint32_t table, const void *key, size_t klen,
	     struct bval *out);

/*
 * btxn_get(), or only the head btxn_put_ex() gave the value when the cache
 * still has it: *whole tells which. out->seq and out->addr are the
 * value's either way.
 */
int btxn_get_head(struct btxn *txn, uint32_t table, const void *key,
		  size_t klen, struct bval *out, bool *whole);

/* A hint that a btxn_get_head() of key comes soon (the next of a batch):
 * starts loading what the cache has for it, so the two lookups overlap.
 * Changes nothing. */
void btxn_prefetch_head(struct btxn *txn, uint32_t table, const void *key,
			size_t klen);

/*
 * Make the transaction durable and visible, then free it. On error nothing
 * of it is visible (and the database may have turned read-only: a failed
 * fsync is not retried, as its outcome is unknown; BARREL_E_CLOSED after).
 */
int btxn_commit(struct btxn *txn);

/*
 * Like btxn_commit(), but return once the transaction is visible, before
 * it is durable: a crash may lose it (and every later lazy commit), never
 * an earlier durable one. bdb_sync() or any later btxn_commit() makes it
 * durable.
 */
int btxn_commit_lazy(struct btxn *txn);

/* Make every commit so far durable. */
int bdb_sync(struct bdb *db);

/* Drop the transaction's changes and free it. */
void btxn_abort(struct btxn *txn);

/*
 * ---- retained records ----
 *
 * A table created with BDB_TABLE_RETAIN can keep the record of a value it
 * replaces: the layer above names it by address (bval.addr) in the new
 * value, instead of copying it elsewhere. The engine counts a retained
 * record as live; GC never reclaims one on its own. When GC finds a
 * record of such a table that its key no longer names, it asks the
 * table's retain hook; without a hook it leaves the segment alone
 * (bdb_gc() says BARREL_E_CLOSED: the layer that knows is not open).
 */

/*
 * btxn_put(), keeping the record of the value replaced (the one whose
 * address a btxn_get() of key in this transaction gave in bval.addr;
 * nothing is kept when that was 0). BARREL_E_INVALID when the table is
 * not BDB_TABLE_RETAIN.
 */
int btxn_put_retain(struct btxn *txn, uint32_t table, const void *key,
		    size_t klen, const void *val, size_t vlen, uint64_t *seq);

/* A retained record of table at addr is no longer named: GC may reclaim
 * it. BARREL_E_CORRUPT when addr holds no record of the table. */
int btxn_release(struct btxn *txn, uint32_t table, uint64_t addr);

/*
 * Replace the value of an existing key without moving it in the sequence
 * index (a retain hook re-homing what the current value names; the
 * changes feed does not see it); val as for btxn_put_ex().
 * BARREL_E_NOTFOUND when key is absent.
 */
int btxn_rewrite(struct btxn *txn, uint32_t table, const void *key,
		 size_t klen, const struct bput_value *val);

/*
 * The value of key held by the record at addr: a retained record, or the
 * current one. BARREL_E_CORRUPT unless addr holds a put of that table and
 * key. out->addr is addr, out->seq the record's sequence number.
 */
int btxn_get_at(struct btxn *txn, uint32_t table, const void *key,
		size_t klen, uint64_t addr, struct bval *out);

/*
 * The retain hook of a table, called by GC with the writer slot held: the
 * record at addr, of key -> val, is no longer named by key. Return 0 when
 * nothing names it (garbage), 1 when it was retained and the hook, inside
 * txn, made every name of it point elsewhere (copying what it needs), <0
 * on error (the GC round stops). fn NULL removes the hook; either call
 * waits for a GC batch in progress, so once removed it is never called.
 */
typedef int (*bdb_retain_fn)(void *arg, struct btxn *txn, uint32_t table,
			     const void *key, size_t klen, const void *val,
			     size_t vlen, uint64_t addr);
int bdb_retain_hook(struct bdb *db, uint32_t table, bdb_retain_fn fn,
		    void *arg);

/* ---- snapshots (readers) ---- */

/* A consistent view of the last commit; owned, release with bsnap_release. */
int bdb_snapshot(struct bdb *db, struct bsnap **out);
void bsnap_release(struct bsnap *snap);

/* The database sequence number the snapshot sees. */
uint64_t bsnap_seq(const struct bsnap *snap);

int bsnap_get(struct bsnap *snap, uint32_t table, const void *key,
	      size_t klen, struct bval *out);

/* btxn_get_at() through a snapshot: addr must be named by something the
 * snapshot sees (its segment lives as long as the snapshot). */
int bsnap_get_at(struct bsnap *snap, uint32_t table, const void *key,
		 size_t klen, uint64_t addr, struct bval *out);

/*
 * Cursors. Key order: entries with start <= key < end (NULL: unbounded;
 * BCURSOR_END_INCLUSIVE makes it <= end), ascending or BCURSOR_REVERSE.
 * Sequence order (SEQ tables): entries whose seq > since, ascending or
 * reverse. A cursor holds its snapshot; free it before bsnap_release().
 */
enum bcursor_flags {
	BCURSOR_REVERSE = 1 << 0,
	BCURSOR_END_INCLUSIVE = 1 << 1,
};

int bsnap_scan(struct bsnap *snap, uint32_t table, const void *start,
	       size_t slen, const void *end, size_t elen, unsigned flags,
	       struct bcursor **out);
int bsnap_changes(struct bsnap *snap, uint32_t table, uint64_t since,
		  unsigned flags, struct bcursor **out);

/* One entry; key and val borrowed until the next call or bcursor_free(). */
struct bentry {
	const void *key;
	size_t klen;
	const void *val;
	size_t vlen;
	uint64_t seq;
};

/* 1 and *e filled; 0 at the end; <0 on error. */
int bcursor_next(struct bcursor *c, struct bentry *e);
void bcursor_free(struct bcursor *c);

/* ---- commit notification ---- */

/* The sequence number of the last durable commit. */
uint64_t bdb_seq(struct bdb *db);

/*
 * Wait until bdb_seq(db) > seq or timeout_ms passes (-1: forever; 0: poll).
 * Returns 1 when it moved, 0 on timeout, BARREL_E_CLOSED when the database
 * closes meanwhile.
 */
int bdb_wait(struct bdb *db, uint64_t seq, int timeout_ms);

/*
 * Call cb(arg, seq) after every durable commit (from the committing
 * thread; keep it short and do not call into the writer). Returns a watch
 * id for bdb_unwatch().
 */
int bdb_watch(struct bdb *db, void (*cb)(void *arg, uint64_t seq),
	      void *arg, uint64_t *id);
void bdb_unwatch(struct bdb *db, uint64_t id);

/* ---- blobs: large values, streamed ---- */

/*
 * Write a blob in pieces, never holding it whole. The bytes are written to
 * the log as they come; the blob exists only once linked by a committed
 * transaction (btxn_blob_link); an unlinked blob is reclaimed by GC.
 * The writer does not hold the writer slot between calls.
 */
int bdb_blob_create(struct bdb *db, struct bblob_writer **out);
int bblob_write(struct bblob_writer *w, const void *buf, size_t len);
/* Finish writing; *id names the blob for btxn_blob_link. Frees w. */
int bblob_finish(struct bblob_writer *w, uint64_t *id, uint64_t *length);
/* Abandon the blob; frees w. */
void bblob_abort(struct bblob_writer *w);

/* Make a finished blob part of the database with this transaction. */
int btxn_blob_link(struct btxn *txn, uint64_t id);
/* Remove a linked blob (its space is reclaimed by GC). */
int btxn_blob_unlink(struct btxn *txn, uint64_t id);

/* Open a linked blob for reading at any offset; owned, closed with
 * bblob_close(). BARREL_E_NOTFOUND when not linked in the snapshot. A
 * reader keeps the chunk it read last: use it from one thread at a time. */
int bsnap_blob_open(struct bsnap *snap, uint64_t id, struct bblob_reader **out);
uint64_t bblob_length(const struct bblob_reader *r);
/* Read up to len bytes at off; returns bytes read (0 at the end) or <0. */
ssize_t bblob_read(struct bblob_reader *r, void *buf, size_t len, uint64_t off);
void bblob_close(struct bblob_reader *r);

/* ---- maintenance ---- */

/* Write every dirty index node and a checkpoint record; durable on return. */
int bdb_checkpoint(struct bdb *db);

struct bgc_stats {
	unsigned segments_freed;
	uint64_t bytes_moved;
	uint64_t bytes_freed;
};

/*
 * Collect garbage now: choose victim segments by LFS cost-benefit, move
 * their live records to the open segment, checkpoint, free the victims.
 * Stops when disk use <= target_ratio * live bytes or no segment is worth
 * collecting (target_ratio <= 1 collects every sealed segment with garbage).
 * Runs alongside readers and the writer.
 */
int bdb_gc(struct bdb *db, double target_ratio, struct bgc_stats *st);

struct bdb_seginfo {
	uint32_t id;
	uint64_t capacity;     /* bytes reserved */
	uint64_t used;         /* bytes of records */
	uint64_t live;         /* bytes of live records */
	bool open;             /* the one being appended to */
};

struct bdb_stat {
	uint64_t seq;              /* last durable sequence */
	uint64_t txn;              /* last durable transaction number */
	unsigned segments;
	uint64_t disk_bytes;       /* sum of segment file sizes */
	uint64_t used_bytes;       /* bytes of records */
	uint64_t live_bytes;       /* bytes of live records */
	uint64_t entries;          /* entries across all tables */
	uint64_t bytes_written;    /* handed to the device since open */
	unsigned tables;
	uint64_t cache_bytes;      /* index nodes and heads cached, whole
	                              environment */
	uint64_t cache_budget;     /* the clean node cache's share of the budget */
	uint64_t head_hits;        /* btxn_get_head() answered from the cache, */
	uint64_t head_misses;      /* or by reading the record, since open */
	uint64_t checkpoints;      /* written since open, */
	uint64_t checkpoint_us;    /* and the time they held the writer slot */
};

int bdb_stat(struct bdb *db, struct bdb_stat *st);

/* Per-segment figures, ascending id; cb returns non-zero to stop. */
int bdb_segments(struct bdb *db,
		 int (*cb)(void *arg, const struct bdb_seginfo *si), void *arg);

/* One record as seen by check and dump. */
struct bdb_recinfo {
	uint32_t seg;
	uint64_t off;
	uint8_t type;          /* record type (bdb_rec_type_name); 0 if corrupt */
	uint32_t len;          /* payload bytes */
	uint64_t txn;
	const char *error;     /* NULL if valid, else why it is corrupt */
	const void *payload;   /* borrowed for the callback */
};

/*
 * Read every record of every segment and verify its checksum and frame,
 * and that every index entry points at a valid record. cb sees each record
 * (valid and corrupt ones); *corrupt counts the bad ones. Returns 0 when
 * the walk finished (whatever it found) or <0 when it could not.
 */
int bdb_check(struct bdb *db, int (*cb)(void *arg,
		const struct bdb_recinfo *ri), void *arg, uint64_t *corrupt);

/* Name of a record type of bdb_recinfo ("put", "commit", ...), or NULL
 * when unknown. Static. */
const char *bdb_rec_type_name(uint8_t type);

/* Table name of id for dump output; NULL if unknown. Borrowed. */
const char *bdb_table_name(struct bdb *db, uint32_t id);

#endif
