/*
 * The document layer: CouchDB's document model on one engine database.
 * fs/, sync/ and tools/ use documents through this header.
 *
 * A document is a JSON object (body.h) with a revision tree (revtree.h).
 * Every write makes revisions; every revision's body is kept unless the
 * retention policy drops it; conflicting branches are kept and a winner
 * is chosen by CouchDB's rule. Local documents ("_local/ID") are plain
 * key/value records with revisions "0-N", never in the changes feed.
 * Attachments are streamed blobs, stored once per digest.
 *
 * Reads take a snapshot (struct bsnap of db.h: bdb_snapshot(docdb_bdb()))
 * or NULL for a fresh one per call; reads never wait for writers. Writes
 * are bulk: docdb_put() applies many documents in one durable commit.
 *
 * Subscription: every commit wakes bdb_wait() and bdb_watch() of db.h on
 * docdb_bdb(); a listener then reads docdb_changes() since its last seq.
 *
 * Errors: 0 or a negative code of error.h. Ownership is stated per call.
 * Storage (tables, records): FORMAT.md "Documents"; design: DESIGN.md.
 */
#ifndef BARREL_DOCDB_H
#define BARREL_DOCDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/body.h"
#include "engine/db.h"
#include "engine/revtree.h"

struct bbuf;
struct json_object;
struct docdb;
struct doc_att_writer;

#define DOC_MAX_ID 900u            /* bytes of a document id */
#define DOC_ERRLEN BODY_ERRLEN
#define DOC_LOCAL_PREFIX "_local/"
#define DOC_DESIGN_PREFIX "_design/"
#define DOC_REVS_LIMIT 1000u       /* default revs_limit */

struct docdb_opts {
	uint32_t keep_bodies;   /* history: bodies kept along each branch,
	                           counting its leaf; 0 keeps all (default) */
};

/* Parse a history policy ("all" or NULL: keep every body; N > 0: the
 * last N of each branch) into *keep_bodies. BARREL_E_INVALID otherwise. */
int docdb_history_parse(const char *s, uint32_t *keep_bodies);

/*
 * Open database name of env as documents (creating its tables, and with
 * create the database). *out is owned by the caller: docdb_close() it
 * before benv_close(). opts may be NULL (defaults). Errors of benv_db().
 */
int docdb_open(struct benv *env, const char *name, bool create,
	       const struct docdb_opts *opts, struct docdb **out);
void docdb_close(struct docdb *d);           /* NULL is a no-op */

/*
 * Let GC of db collect the document records it retains (docdb_open()
 * does it; a tool that opens a database with benv_db() alone calls this
 * before bdb_gc(), which otherwise refuses with BARREL_E_CLOSED). 0 when
 * db holds no documents.
 */
int docdb_gc_attach(struct bdb *db);

/* The engine database underneath (borrowed): snapshots, wait/watch, stat. */
struct bdb *docdb_bdb(struct docdb *d);

/* revs_limit (CouchDB _revs_limit), stored in the database. */
int docdb_set_revs_limit(struct docdb *d, uint32_t limit);
uint32_t docdb_revs_limit(struct docdb *d);

/* Is id usable as a document id? 1..DOC_MAX_ID bytes of UTF-8 without
 * NUL, not starting with '_' unless "_design/X" (local ids go through
 * docdb_local_*, without their prefix). */
bool docdb_id_valid(const char *id, size_t len);

/* ---- attachments ---- */

/* One attachment of a revision. In a doc_put it is borrowed; in a struct
 * doc it is owned by the doc. */
struct doc_att {
	char *name;              /* UTF-8, NUL-terminated */
	char *content_type;      /* NUL-terminated */
	uint64_t length;         /* bytes */
	uint8_t md5[16];         /* digest "md5-" + base64 of these */
	uint64_t revpos;         /* generation that added this content */
	uint64_t blob;           /* engine blob id */
	bool remove;             /* doc_put only: drop the attachment name */
};

/*
 * Stream an attachment into the database: create, write pieces, finish.
 * finish fills a->length, a->md5 and a->blob (the caller sets name and
 * content_type) and frees w; the blob becomes part of the database only
 * when a committed docdb_put() names it, and a blob whose digest is
 * already stored is dropped for the stored one then.
 */
int docdb_att_create(struct docdb *d, struct doc_att_writer **out);
int doc_att_write(struct doc_att_writer *w, const void *buf, size_t len);
int doc_att_finish(struct doc_att_writer *w, struct doc_att *a);
void doc_att_abort(struct doc_att_writer *w);

/* An attachment given as base64 text (CouchDB's inline "data"), decoded
 * into a blob a piece at a time: like a writer's create/write/finish.
 * BARREL_E_INVALID when the text is not base64. */
int docdb_att_from_base64(struct docdb *d, const char *b64, size_t len,
			  struct doc_att *a);

/* Free n attachments' strings, then the array (NULL is a no-op). */
void doc_atts_free(struct doc_att *atts, size_t n);

/* Read an attachment of a document got from snap (not NULL): bblob_read()
 * on *out, owned by the caller (bblob_close() before releasing snap). */
int docdb_att_open(struct docdb *d, struct bsnap *snap,
		   const struct doc_att *a, struct bblob_reader **out);

/* "md5-<base64>" of a digest into buf (DOC_DIGEST_SIZE bytes). */
#define DOC_DIGEST_SIZE 29u
void doc_digest_format(const uint8_t md5[16], char *buf);
/* Parse "md5-<base64>"; BARREL_E_INVALID when malformed. */
int doc_digest_parse(const char *s, uint8_t md5[16]);

/* ---- writes ---- */

enum doc_put_flags {
	/* new_edits=false (replication): graft the body's "_revisions" (or
	 * its "_rev" alone) into the tree; an already known revision is a
	 * no-op that succeeds. */
	DOC_PUT_REPLICATED = 1 << 0,
	/* The parent is the current winner (created if there is none or it
	 * is deleted), whatever "_rev" says: for tools that edit "the"
	 * document. Inside the commit, so it never races another writer. */
	DOC_PUT_ON_WINNER = 1 << 1,
	/* Store the body in body_normalize()'s pretty form (as replicated
	 * documents are), not as given. */
	DOC_PUT_NORMALIZE = 1 << 2,
	/* Attachments the edit does not name carry over from the parent
	 * (the mount edits a body without touching its files). Without it,
	 * CouchDB's rule: the revision has exactly the attachments its
	 * "_attachments" and atts name. */
	DOC_PUT_KEEP_ATTS = 1 << 3,
	/* An edit (new_edits=true) whose parent is in the tree but no
	 * longer a leaf (someone edited it meanwhile) becomes a conflicting
	 * branch instead of failing: the mount's stale saves. */
	DOC_PUT_BRANCH = 1 << 4,
	/* The commit may return once it is visible, before it is durable
	 * (btxn_commit_lazy() of db.h), when every write of the bulk says
	 * so; bdb_sync(docdb_bdb()) makes it durable. The mount's close. */
	DOC_PUT_NOSYNC = 1 << 5,
};

/*
 * One document write of a bulk. Inputs are borrowed for the call.
 *  - id: the document id (NULL: the body's "_id"; one of them is needed);
 *  - body: the JSON text, stored byte for byte unless it holds reserved
 *    members other than _id/_rev/_deleted or DOC_PUT_NORMALIZE is set;
 *    NULL with deleted: an empty body "{}";
 *  - parent: the revision edited (NULL: the body's "_rev"; neither: a
 *    new document); with DOC_PUT_REPLICATED, the new revision itself
 *    when the body has no "_revisions";
 *  - deleted: write a deletion (also when the body says "_deleted":true);
 *  - atts: attachments added (a finished doc_att_writer, name and type
 *    set) or removed (remove set), applied after the body's
 *    "_attachments": stubs there ({"stub":true}) carry over from the
 *    parent, "data" (base64) is stored, "follows" must be one of atts.
 *    A new attachment's revpos is the new generation, except in a
 *    replicated write, which keeps a non-zero revpos it is given.
 * Outputs: rc (0 or an error code), error (why, for a person), rev (the
 * new revision, or the one a no-op replicated write named), seq (the
 * document's sequence number after the commit; 0 for a no-op).
 */
struct doc_put {
	const char *id;
	size_t idlen;
	const char *body;
	size_t len;
	const struct rev *parent;
	bool deleted;
	unsigned flags;               /* enum doc_put_flags */
	const struct doc_att *atts;
	size_t natts;

	int rc;
	char error[DOC_ERRLEN];
	struct rev rev;
	uint64_t seq;
};

/*
 * Apply n writes in one transaction and one durable commit. Each write
 * succeeds or fails on its own (req[i].rc): bad input (errors of body.h,
 * BARREL_E_INVALID for a bad id or attachment), BARREL_E_CONFLICT (the
 * parent is unknown or not a current leaf, a new document already
 * exists, or the same edit was made before), BARREL_E_NOTFOUND (a stub
 * naming no attachment of the parent), BARREL_E_TOOBIG. A
 * failed write changes nothing. Returns 0 when the commit succeeded (the
 * writes with rc 0 are durable; only visible with DOC_PUT_NOSYNC), or the
 * commit's error, also put in the
 * rc of every write that had succeeded.
 */
int docdb_put(struct docdb *d, struct doc_put *req, size_t n);

/*
 * CouchDB's _purge: remove the leaf revisions revs of id, and the
 * ancestors that no remaining leaf needs, as if they were never written
 * here (nothing is replicated; a peer may send them again). Revisions
 * that are not leaves of id are ignored. The document is removed when no
 * leaf remains. *purged (may be NULL) gets the revisions removed, in the
 * order given (owned: free()), *npurged their count. One commit.
 * BARREL_E_NOTFOUND when id was never written.
 */
int docdb_purge(struct docdb *d, const char *id, size_t idlen,
		const struct rev *revs, size_t n, struct rev **purged,
		size_t *npurged);

/* ---- reads ---- */

/* A document revision as read. Every pointer is owned by the doc. */
struct doc {
	char *id;                     /* NUL-terminated */
	size_t idlen;
	struct rev rev;               /* the revision read */
	bool deleted;                 /* it is a deletion */
	uint64_t seq;                 /* the document's latest sequence */
	int64_t time_ms;              /* when this revision was stored here */
	char *body;                   /* stored bytes, NUL-terminated */
	size_t len;
	struct doc_att *atts;         /* sorted by name */
	size_t natts;
	struct revtree *tree;         /* with DOC_GET_TREE, else NULL */
};

enum doc_get_flags {
	DOC_GET_TREE = 1 << 0,        /* also return the revision tree */
	DOC_GET_DELETED = 1 << 1,     /* a deleted winner is returned, not
	                                 BARREL_E_NOTFOUND */
};

/*
 * Read revision rev of id (NULL: the winner) from snap (NULL: a fresh
 * snapshot). *out is owned by the caller: doc_release(). Errors:
 * BARREL_E_NOTFOUND when the document does not exist, its winner is
 * deleted (without DOC_GET_DELETED; out->deleted is set), the revision is
 * not in its tree, or the revision's body was not kept.
 */
int docdb_get(struct docdb *d, struct bsnap *snap, const char *id,
	      size_t idlen, const struct rev *rev, unsigned flags,
	      struct doc *out);
void doc_release(struct doc *doc);             /* zeroes it; idempotent */

/* One read of a bulk (_bulk_get): inputs borrowed, rc and doc outputs. */
struct doc_get {
	const char *id;
	size_t idlen;
	const struct rev *rev;        /* NULL: the winner */
	unsigned flags;
	int rc;
	struct doc doc;               /* owned by the caller when rc == 0 */
};

/* Read n documents from one snapshot (NULL: one fresh for the bulk).
 * Returns 0 (each read has its own rc) or an error taking the snapshot. */
int docdb_get_many(struct docdb *d, struct bsnap *snap, struct doc_get *req,
		   size_t n);

/* The revision tree of id into *out (owned: revtree_free()) and its latest
 * sequence into *seq (may be NULL). BARREL_E_NOTFOUND if never written. */
int docdb_tree(struct docdb *d, struct bsnap *snap, const char *id,
	       size_t idlen, struct revtree **out, uint64_t *seq);

enum doc_json_flags {
	DOC_JSON_META = 1 << 0,          /* _id, _rev (and _deleted) first */
	DOC_JSON_CONFLICTS = 1 << 1,     /* _conflicts (needs doc->tree) */
	DOC_JSON_DELETED_CONFLICTS = 1 << 2,  /* (needs doc->tree) */
	DOC_JSON_REVISIONS = 1 << 3,     /* _revisions (needs doc->tree) */
	DOC_JSON_ATTS = 1 << 4,          /* _attachments as stubs */
	DOC_JSON_ANY_SPACE = 1 << 5,     /* doc_json_text: the body's own
	                                    whitespace may stay */
};

/*
 * The document as CouchDB shows it: its body's members (reserved ones
 * dropped) with the fields flags ask for. *out is owned by the caller
 * (json_object_put()).
 */
int doc_json(const struct doc *doc, unsigned flags, struct json_object **out);

/*
 * doc_json() as JSON text appended to out (engine/bbuf.h). With only
 * DOC_JSON_META (and DOC_JSON_ATTS for a document without attachments),
 * a body with no reserved member is spliced after _id and _rev as it is
 * stored, with no parse: its strings and numbers are spelled as stored
 * (an equal JSON value, maybe other escapes), and it is taken only when
 * it is compact unless DOC_JSON_ANY_SPACE. Else through doc_json(),
 * compact. Errors as doc_json(), -ENOMEM.
 */
int doc_json_text(const struct doc *doc, unsigned flags, struct bbuf *out);

/* ---- listings ---- */

/* One row of the changes feed or of all_docs; borrowed for the callback. */
struct doc_row {
	const char *id;
	size_t idlen;
	uint64_t seq;                 /* the document's latest sequence */
	bool deleted;                 /* the winner is a deletion */
	const struct rev *revs;       /* winner first; all leaves with
	                                 DOC_ROWS_ALL_LEAVES */
	size_t nrevs;
	const struct doc *doc;        /* the winner with DOC_ROWS_DOCS */
};

enum doc_rows_flags {
	DOC_ROWS_DESCENDING = 1 << 0,
	DOC_ROWS_ALL_LEAVES = 1 << 1,    /* changes style=all_docs */
	DOC_ROWS_DOCS = 1 << 2,          /* include_docs */
	DOC_ROWS_DELETED = 1 << 3,       /* docdb_all_docs: deleted ones too */
};

typedef int (*doc_row_cb)(void *arg, const struct doc_row *row);

/*
 * The changes feed: one row per document whose latest sequence is after
 * since, in sequence order (descending: newest first), at most limit rows
 * (0: no limit). *last (may be NULL) gets the sequence of the last row, or
 * the snapshot's sequence when no row came. A non-zero return of cb stops
 * and is returned.
 */
int docdb_changes(struct docdb *d, struct bsnap *snap, uint64_t since,
		  uint64_t limit, unsigned flags, doc_row_cb cb, void *arg,
		  uint64_t *last);

/*
 * Documents by id, start <= id < end (NULL: unbounded), skipping deleted
 * ones unless DOC_ROWS_DELETED; local documents are not listed.
 */
int docdb_all_docs(struct docdb *d, struct bsnap *snap, const char *start,
		   size_t slen, const char *end, size_t elen, unsigned flags,
		   doc_row_cb cb, void *arg);

/* ---- local documents ---- */

/*
 * Local documents are identified without their "_local/" prefix, hold a
 * JSON object body stored as given, and have revisions "0-N" (here N).
 * Writing needs the current N (0 for a new document), else
 * BARREL_E_CONFLICT; *rev gets the new N. Each write is one commit.
 */
int docdb_local_put(struct docdb *d, const char *id, size_t idlen,
		    const char *body, size_t len, uint64_t parent,
		    uint64_t *rev, char *err);
/* *body is malloc'ed (NUL-terminated), owned by the caller. */
int docdb_local_get(struct docdb *d, struct bsnap *snap, const char *id,
		    size_t idlen, char **body, size_t *len, uint64_t *rev);
int docdb_local_del(struct docdb *d, const char *id, size_t idlen,
		    uint64_t parent);
/* Local ids starting with prefix, in order; cb returns non-zero to stop. */
int docdb_local_list(struct docdb *d, struct bsnap *snap, const char *prefix,
		     size_t plen, int (*cb)(void *arg, const char *id,
					     size_t idlen, uint64_t rev),
		     void *arg);

#endif
