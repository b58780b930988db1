/*
 * Internals of the document layer shared by docdb.c and docatt.c:
 * the handle, revision records (FORMAT.md "Revision record") and the
 * attachment store.
 */
#ifndef BARREL_DOCDB_I_H
#define BARREL_DOCDB_I_H

#include <pthread.h>
#include <stdatomic.h>

#include "engine/docdb.h"

struct docdb {
	struct bdb *db;               /* owned by the environment */
	uint32_t t_docs, t_revs, t_atts, t_local, t_meta;   /* table ids */
	uint32_t keep_bodies;         /* docdb_opts.keep_bodies */
	_Atomic uint32_t revs_limit;  /* cached "meta" revs_limit */
	pthread_mutex_t pool_lock;
	struct body_pool *spare_pool; /* pool_lock: a bulk's parse memory,
	                                 kept for the next bulk */
};

#define REVREC_VERSION 1
#define REVREC_DELETED 0x01
#define REVREC_HEAD 14u               /* version, flags, time_ms, natt */

/* A decoded revision record (docdb.c writes them). atts (names and
 * types) are owned; body is borrowed from the buffer decoded. */
struct revrec {
	bool deleted;
	int64_t time_ms;
	struct doc_att *atts;
	size_t natts;
	const char *body;
	size_t len;
};

/* Validate and decode; BARREL_E_CORRUPT (logged) when malformed. */
int revrec_decode(const void *buf, size_t len, struct revrec *out);
void revrec_release(struct revrec *r);

/* Deep copy of src's strings into dst (other fields copied). */
int doc_att_copy(struct doc_att *dst, const struct doc_att *src);

/*
 * The attachment store (docatt.c), inside a transaction.
 * att_find: the stored blob of that content, BARREL_E_NOTFOUND if none.
 * att_ref: +1 links the content (a->blob becomes the stored blob when the
 * content is already there); -1 drops a reference and unlinks the blob
 * at zero.
 */
int att_find(struct docdb *d, struct btxn *txn, const struct doc_att *a,
	     uint64_t *blob);
int att_ref(struct docdb *d, struct btxn *txn, struct doc_att *a, int delta);

#endif
