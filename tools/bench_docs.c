/*
 * barrelfs's document layer, through engine/docdb.h only: the same engine
 * as bench_barrel.c (a DATADIR holding one database "bench"), used as
 * CouchDB documents. A batch is one docdb_put() of its documents (the
 * key is the id, the value the body, stored byte for byte); an update
 * edits the winner (DOC_PUT_ON_WINNER); a read takes the winner from a
 * fresh snapshot; the scan is docdb_all_docs() with the bodies.
 * Comparing this store with "barrelfs" prices the document layer.
 */
#include "config.h"
#include "tools/bench.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/docdb.h"

#define DOCS_BENCH_DB "bench"
#define DOCS_BATCH_MAX 100        /* the driver's commits are this big */

struct docs_store {
	struct bench_store base;
	struct benv *env;         /* owned */
	struct docdb *docs;       /* owned; closed before env */
	struct doc_put req[DOCS_BATCH_MAX];   /* one batch's requests */
	struct bench_cp cp;       /* checkpoints before the updates */
};

static int docs_fail(char *err, const char *what, int rc)
{
	return bench_fail(err, "%s: %s", what, barrel_strerror(rc));
}

static int docs_connect(const char *dir, bool create,
			struct bench_store **out, char *err)
{
	struct docs_store *s = calloc(1, sizeof(*s));
	struct benv_opts opts;
	int rc;

	if (!s)
		return bench_fail(err, "out of memory");
	if (bench_store_init(&s->base, &bench_docs_ops, dir, err))
		goto out_free;
	benv_opts_init(&opts);
	rc = benv_open(dir, &opts, &s->env);
	if (rc) {
		docs_fail(err, dir, rc);
		goto out_free;
	}
	rc = docdb_open(s->env, DOCS_BENCH_DB, create, NULL, &s->docs);
	if (rc) {
		docs_fail(err, DOCS_BENCH_DB, rc);
		goto out_close;
	}
	*out = &s->base;
	return 0;
out_close:
	benv_close(s->env);
out_free:
	free(s);
	return -1;
}

static int docs_open(const char *dir, struct bench_store **out, char *err)
{
	return docs_connect(dir, true, out, err);
}

static int docs_reopen(const char *dir, struct bench_store **out, char *err)
{
	return docs_connect(dir, false, out, err);
}

/* One docdb_put() of n documents, each with the given flags; any write
 * that fails fails the batch, naming the first such document. */
static int docs_write(struct bench_store *bs, const struct bench_doc *d,
		      size_t n, unsigned flags)
{
	struct docs_store *s = (struct docs_store *)bs;
	int rc;

	if (n > DOCS_BATCH_MAX)
		return bench_fail(bs->err, "batch of %zu documents", n);
	memset(s->req, 0, n * sizeof(s->req[0]));
	for (size_t i = 0; i < n; i++) {
		s->req[i].id = d[i].key;
		s->req[i].idlen = d[i].klen;
		s->req[i].body = d[i].val;
		s->req[i].len = d[i].vlen;
		s->req[i].flags = flags;
	}
	rc = docdb_put(s->docs, s->req, n);
	if (rc)
		return docs_fail(bs->err, "docdb_put", rc);
	for (size_t i = 0; i < n; i++)
		if (s->req[i].rc)
			return bench_fail(bs->err, "docdb_put %.*s: %s: %s",
					  (int)d[i].klen, d[i].key,
					  barrel_strerror(s->req[i].rc),
					  s->req[i].error);
	return 0;
}

static int docs_insert(struct bench_store *bs, const struct bench_doc *d,
		       size_t n)
{
	return docs_write(bs, d, n, 0);
}

static int docs_update(struct bench_store *bs, const struct bench_doc *d,
		       size_t n)
{
	return docs_write(bs, d, n, DOC_PUT_ON_WINNER);
}

static int docs_get(struct bench_store *bs, const char *key, size_t klen,
		    void *buf, size_t cap, size_t *len)
{
	struct docs_store *s = (struct docs_store *)bs;
	struct doc doc = { 0 };
	int rc = docdb_get(s->docs, NULL, key, klen, NULL, 0, &doc);
	int found = 1;

	if (rc == BARREL_E_NOTFOUND)
		found = 0;
	else if (rc)
		found = docs_fail(bs->err, "docdb_get", rc);
	else if (doc.len > cap)
		found = bench_fail(bs->err, "body of %zu bytes", doc.len);
	if (found == 1) {
		memcpy(buf, doc.body, doc.len);
		*len = doc.len;
	}
	doc_release(&doc);
	return found;
}

/* Carries the driver's callback through docdb_all_docs(). */
struct docs_scan {
	bench_scan_cb cb;
	void *arg;
	int stop;                 /* what cb returned to stop the scan */
	bool nodoc;               /* a row came without its document */
};

static int docs_scan_row(void *arg, const struct doc_row *row)
{
	struct docs_scan *sc = arg;

	if (!row->doc) {
		sc->nodoc = true;
		return -1;
	}
	sc->stop = sc->cb(sc->arg, row->id, row->idlen, row->doc->body,
			  row->doc->len);
	return sc->stop;
}

static int docs_scan(struct bench_store *bs, bench_scan_cb cb, void *arg)
{
	struct docs_store *s = (struct docs_store *)bs;
	struct docs_scan sc = { .cb = cb, .arg = arg };
	int rc = docdb_all_docs(s->docs, NULL, NULL, 0, NULL, 0,
				DOC_ROWS_DOCS, docs_scan_row, &sc);

	if (sc.nodoc)
		return bench_fail(bs->err, "docdb_all_docs: a row without "
				  "its document");
	if (sc.stop)
		return sc.stop;
	return rc ? docs_fail(bs->err, "docdb_all_docs", rc) : 0;
}

static int docs_close(struct bench_store *bs, char *err)
{
	struct docs_store *s = (struct docs_store *)bs;

	(void)err;
	docdb_close(s->docs);
	benv_close(s->env);
	free(s);
	return 0;
}

static void docs_mark(struct bench_store *bs)
{
	struct docs_store *s = (struct docs_store *)bs;

	bench_cp_mark(docdb_bdb(s->docs), &s->cp);
}

/* How many updates found the document's tree in the engine's head cache
 * (the rest read the document's record), and the checkpoints. */
static void docs_note(struct bench_store *bs, char *buf, size_t size)
{
	struct docs_store *s = (struct docs_store *)bs;
	char cp[96];
	struct bdb_stat st;

	if (bdb_stat(docdb_bdb(s->docs), &st))
		return;
	bench_cp_note(&st, &s->cp, cp, sizeof(cp));
	snprintf(buf, size, "%" PRIu64 " of %" PRIu64 " updates read the "
		 "revision tree from the engine's head cache, the others the "
		 "document's record; %s", st.head_hits,
		 st.head_hits + st.head_misses, cp);
}

const struct bench_ops bench_docs_ops = {
	.name = "documents",
	.open = docs_open,
	.insert_batch = docs_insert,
	.get = docs_get,
	.update_batch = docs_update,
	.scan = docs_scan,
	.close = docs_close,
	.reopen = docs_reopen,
	.disk_usage = bench_store_usage,
	.mark = docs_mark,
	.note = docs_note,
};
