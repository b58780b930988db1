/*
 * Views: CouchDB's JavaScript map/reduce over one document database, as
 * incremental indexes kept in the same engine database.
 *
 * A design document {"_id":"_design/D","language":"javascript",
 * "views":{"V":{"map":"function(doc){...}","reduce":"_count"}}} defines
 * views. Each view's index is identified by its signature, a hash of its
 * language and map source: editing one view rebuilds that view alone,
 * an unchanged view keeps its index across design-document edits and
 * reopens, and two views with the same source share one index. An index
 * whose signature no design document names any more is dropped.
 *
 * A struct view_indexer keeps every view of a database up to date: a
 * thread waits for commits (bdb_wait) and indexes what changed since
 * each view's sequence, mapping the winner of each document (never a
 * deleted or a design document) with one mapjs context per design
 * document, in batches of one transaction each. A map function that
 * throws or runs out of time skips that document for that view; the
 * error is counted in the view's status and the others go on. Run one
 * indexer per database (it is the only writer of the view tables).
 *
 * Queries read the index from a snapshot with CouchDB's options and
 * semantics (rows ordered by key collation, then doc id; reduce with
 * group / group_level). A query never builds an index: with
 * VIEW_UPDATE_TRUE (the default, CouchDB's update=true) it waits, up to
 * a timeout, for the indexer to reach the database sequence current at
 * the call; VIEW_UPDATE_FALSE / _LAZY read what is indexed.
 *
 * Errors: 0 or a negative code of error.h: BARREL_E_NOTFOUND for an
 * unknown design document or view, BARREL_E_INVALID for bad query
 * options (keys in the wrong order for the direction included; equal
 * keys whose doc ids empty the range give no rows), BARREL_E_FUNCTION
 * for a view whose map function cannot run (its message in view_info),
 * BARREL_E_BADJSON for a key that is not JSON, -ETIMEDOUT when waiting
 * for freshness timed out. Storage: FORMAT.md "Views"; design:
 * DESIGN.md "The index (view.c)".
 */
#ifndef BARREL_VIEW_H
#define BARREL_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/mapjs.h"

struct docdb;
struct view_indexer;

#define VIEW_SIG_HEX 33u               /* 32 hex digits and a NUL */
#define VIEW_MSGLEN 256u
#define VIEW_DEFAULT_BATCH 1000u       /* documents per index transaction */
#define VIEW_DEFAULT_WAIT_MS 500u      /* longest bdb_wait() slice */
#define VIEW_DEFAULT_TIMEOUT_MS 60000u /* VIEW_UPDATE_TRUE's wait */

struct view_indexer_opts {
	unsigned batch_docs;     /* documents per transaction; 0: default */
	unsigned wait_ms;        /* bdb_wait() slice; 0: default */
	struct mapjs_opts js;    /* limits of the map functions (its log
	                            fields are ignored: see log below) */
	/* log(msg) of a map function, with the design document's id and
	 * the view's name; borrowed for the call, from the indexer's
	 * thread. NULL: barrel_log() at BLOG_INFO. */
	void (*log)(void *arg, const char *ddoc, const char *view,
		    const char *msg, size_t len);
	void *log_arg;
};

/* Fill opts with the defaults. */
void view_indexer_opts_init(struct view_indexer_opts *opts);

/*
 * Start indexing d's views in a thread of its own. d is borrowed: stop
 * the indexer before docdb_close(). opts may be NULL. *out is owned by
 * the caller: view_indexer_stop() it.
 */
int view_indexer_start(struct docdb *d, const struct view_indexer_opts *opts,
		       struct view_indexer **out);

/* Stop the thread (within one batch) and free vi. NULL is a no-op. */
void view_indexer_stop(struct view_indexer *vi);

/* ---- queries ---- */

enum view_update {
	VIEW_UPDATE_TRUE = 0,    /* wait until indexed up to the call's seq */
	VIEW_UPDATE_FALSE,       /* read what is indexed now */
	VIEW_UPDATE_LAZY,        /* the same (the indexer runs anyway) */
};

enum view_reduce {
	VIEW_REDUCE_AUTO = 0,    /* reduce when the view has a reduce */
	VIEW_REDUCE_FALSE,
	VIEW_REDUCE_TRUE,        /* BARREL_E_INVALID without one */
};

/*
 * A query: CouchDB's options. JSON values are text (NUL-terminated);
 * NULL is "not given". Fill with view_query_init(), then set fields.
 * Borrowed for the call.
 */
struct view_query {
	const char *key;               /* rows whose key equals key */
	const char *keys;              /* a JSON array: rows of each key, in
	                                  the order given */
	const char *startkey;
	const char *endkey;
	const char *startkey_docid;    /* doc id (raw) bounding startkey */
	const char *endkey_docid;
	bool inclusive_end;            /* default true */
	bool descending;
	uint64_t limit;                /* default UINT64_MAX (none) */
	uint64_t skip;
	enum view_reduce reduce;
	bool group;                    /* group by exact key */
	unsigned group_level;          /* > 0: group arrays by their first N
	                                  elements (wins over group) */
	bool include_docs;             /* map rows only */
	bool offset;                   /* compute view_result.offset: costs
	                                  a scan of the rows before the range */
	enum view_update update;
	unsigned timeout_ms;           /* VIEW_UPDATE_TRUE; 0: the default */
};

void view_query_init(struct view_query *q);

/* One result row; every pointer borrowed for the callback. */
struct view_row {
	const char *id;                /* raw doc id; NULL in a reduce row */
	size_t idlen;
	const char *key;               /* JSON text ("null" for group=false) */
	size_t keylen;
	const char *value;             /* JSON text */
	size_t valuelen;
	const char *doc;               /* include_docs: the document's JSON
	                                  text, or NULL when it is gone */
	size_t doclen;
};

/* Append row's members as CouchDB writes them, without the braces:
 * "id":ID,"key":K,"value":V ("id" left out of a reduce row). 0 or
 * -ENOMEM. */
struct bbuf;
int view_row_members(struct bbuf *b, const struct view_row *row);

/* A non-zero return stops the query and is returned by view_query(). */
typedef int (*view_row_cb)(void *arg, const struct view_row *row);

struct view_result {
	bool reduced;                  /* rows are reductions */
	uint64_t total_rows;           /* rows of the whole view (map form) */
	uint64_t offset;               /* rows before the first one returned
	                                  (with view_query.offset) */
	uint64_t rows;                 /* rows delivered */
	uint64_t update_seq;           /* the sequence the view is indexed to */
	uint64_t db_seq;               /* the database's, at the query */
};

/*
 * Query view (a name) of design document ddoc ("D" or "_design/D") of
 * vi's database: rows go to cb in order; *res (may be NULL) gets the
 * figures. See the top for errors.
 */
int view_query(struct view_indexer *vi, const char *ddoc, const char *view,
	       const struct view_query *q, view_row_cb cb, void *arg,
	       struct view_result *res);

/* ---- status ---- */

struct view_info {
	char sig[VIEW_SIG_HEX];        /* the index's signature, hex */
	bool exists;                   /* the indexer has created the index */
	bool broken;                   /* the map function does not compile
	                                  or the language is not javascript */
	uint64_t seq;                  /* indexed up to */
	uint64_t db_seq;               /* the database's */
	uint64_t total_rows;
	uint64_t mapped;               /* documents mapped since the index
	                                  was (re)built */
	uint64_t errors;               /* documents a function failed on */
	char last_error[VIEW_MSGLEN];  /* "" or the latest error's message */
	char last_error_id[VIEW_MSGLEN];  /* and the document's id */
};

/* The state of one view (NOTFOUND as view_query). */
int view_status(struct view_indexer *vi, const char *ddoc, const char *view,
		struct view_info *out);

#endif
