/*
 * The benchmark behind `barrelctl bench`: one workload run against several
 * stores through a small operations table, each store in a forked child
 * process of its own (bench.c is the driver, bench_<store>.c the stores).
 *
 * Every store keeps two indexes, as barrelfs does: documents by key (read
 * and scanned in key order) and by sequence number (each write takes the
 * next number; an update moves the key to its new number).
 *
 * Conventions of the table: functions return 0 or -1; on -1 the reason is
 * in the store's err buffer (or in err for open/reopen, which have no store
 * yet). Every write call is one durable commit: it returns only once the
 * batch would survive a power cut.
 */
#ifndef BARREL_BENCH_H
#define BARREL_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_ERRLEN 256

/* One document of a batch; the bytes are borrowed for the call. */
struct bench_doc {
	const char *key;
	size_t klen;
	const char *val;
	size_t vlen;
};

/* The common head of every store's state (the first member). */
struct bench_store {
	const struct bench_ops *ops;
	char dir[4096];              /* the store's own directory */
	char err[BENCH_ERRLEN];      /* why the last call failed */
};

/* Visits one document of a scan; key and val are borrowed for the call. */
typedef int (*bench_scan_cb)(void *arg, const char *key, size_t klen,
			     const void *val, size_t vlen);

struct bench_ops {
	const char *name;            /* also the name of its directory */
	/* Create a store in the empty directory dir; *out owned until close. */
	int (*open)(const char *dir, struct bench_store **out, char *err);
	/* Insert n new documents in one durable commit. */
	int (*insert_batch)(struct bench_store *s, const struct bench_doc *d,
			    size_t n);
	/*
	 * Copy the value of key into buf (cap bytes) and set *len to its
	 * length. Returns 1 when found, 0 when missing, -1 on error.
	 */
	int (*get)(struct bench_store *s, const char *key, size_t klen,
		   void *buf, size_t cap, size_t *len);
	/* Replace the values of n existing keys in one durable commit; each
	 * takes a new sequence number. */
	int (*update_batch)(struct bench_store *s, const struct bench_doc *d,
			    size_t n);
	/* Call cb for every document in ascending key order; a non-zero
	 * return from cb stops the scan and is returned. */
	int (*scan)(struct bench_store *s, bench_scan_cb cb, void *arg);
	/* Close the store and free s, whatever happens; err gets why a
	 * close failed. */
	int (*close)(struct bench_store *s, char *err);
	/* Open the store a previous close left in dir. */
	int (*reopen)(const char *dir, struct bench_store **out, char *err);
	/* Bytes the store's files take on disk now. */
	int (*disk_usage)(struct bench_store *s, uint64_t *bytes);
	/* Optional: called right before the updates, untimed, so that note
	 * can tell what happened during them. */
	void (*mark)(struct bench_store *s);
	/* Optional: a line for the report on how the store did the updates
	 * (called right after them). */
	void (*note)(struct bench_store *s, char *buf, size_t size);
};

extern const struct bench_ops bench_barrel_ops;
extern const struct bench_ops bench_docs_ops;
extern const struct bench_ops bench_sqlite_ops;
extern const struct bench_ops bench_lmdb_ops;
extern const struct bench_ops bench_rocksdb_ops;
extern const struct bench_ops bench_log_ops;

struct bench_opts {
	uint64_t docs;               /* documents to insert */
	unsigned update_percent;     /* of them updated, 1..100 */
	unsigned rounds;             /* runs of every store; the report
	                                gives the median of each figure */
	const char *dir;             /* run here; NULL: a fresh temporary dir */
	const char *stores;          /* comma-separated names; NULL: all */
	bool keep;                   /* keep the directory afterwards */
};

#define BENCH_MAX_ROUNDS 15

/* Run the benchmark and print its report on stdout. Returns an exit
 * status: 0, or 1 when it could not run or a store returned wrong data. */
int bench_run(const struct bench_opts *o);

/* Names of the stores, comma-separated, for usage messages. */
const char *bench_store_names(void);

/* ---- helpers for the stores ---- */

/* Format a message into err (BENCH_ERRLEN bytes); returns -1. */
int bench_fail(char *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Fill the common head of a new store. Returns -1 (err set) when the
 * path does not fit. */
int bench_store_init(struct bench_store *s, const struct bench_ops *ops,
		     const char *dir, char *err);

/* Join dir and name into buf; -1 (err set) when it does not fit. */
int bench_path(char *buf, size_t size, const char *dir, const char *name,
	       char *err);

/* Bytes allocated on disk (st_blocks) by every file under dir. */
int bench_dir_usage(const char *dir, uint64_t *bytes);

/* The usual disk_usage: bench_dir_usage of the store's directory. */
int bench_store_usage(struct bench_store *s, uint64_t *bytes);

/* The two stores on barrelfs's engine: the checkpoints a database wrote
 * between bench_cp_mark() and the bdb_stat() now, for the report. */
struct bdb;
struct bdb_stat;
struct bench_cp {
	uint64_t checkpoints;
	uint64_t us;
};

void bench_cp_mark(struct bdb *db, struct bench_cp *at);
/* "N checkpoints during the updates (X ms)" into buf. */
void bench_cp_note(const struct bdb_stat *now, const struct bench_cp *at,
		   char *buf, size_t size);

/* Big-endian 64-bit encoding, so sequence keys sort as numbers. */
void bench_put_be64(unsigned char *p, uint64_t v);
uint64_t bench_get_be64(const unsigned char *p);

#endif
