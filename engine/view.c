#include "config.h"
#include "engine/bbuf.h"
#include "engine/view.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define XXH_STATIC_LINKING_ONLY   /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "engine/collate.h"
#include "engine/db.h"
#include "engine/docdb.h"
#include "engine/error.h"
#include "engine/log.h"

/*
 * Layout of this file:
 *  1. byte buffers and the records of FORMAT.md "Views" (state, row,
 *     by-document log, index key)
 *  2. design documents: parsing, signatures
 *  3. the indexer's registry: loading design documents, compiling, and
 *     reconciling the stored indexes with them
 *  4. indexing one batch: map, then one transaction
 *  5. the indexer thread, start and stop
 *  6. queries: resolving a view, waiting for freshness, key ranges,
 *     map rows, reduce rows
 *  7. status
 */

#define STATE_TABLE "views"
#define STATE_VERSION 1
#define STATE_BROKEN 0x01
#define STATE_HEAD 34u              /* version, flags, 4 x u64 */
#define COLL_MAX 128u
#define DUP_SUFFIX 5u               /* 0x00 + u32 BE duplicate number */
#define ROW_HEAD 4u                 /* u32 key_len */
#define LOG_ENTRY_HEAD 6u           /* u16 enc_len, u32 dup */
#define REDUCE_CHUNK 1000u          /* rows per reduce call */
#define STOP_SCAN 1                 /* a callback's "enough" */

/* ---- 1. buffers and records ---- */

static int vbuf_u16(struct bbuf *b, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)v, (uint8_t)(v >> 8) };

	return bbuf_add(b, x, 2);
}

static int vbuf_u32(struct bbuf *b, uint32_t v)
{
	uint8_t x[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
			 (uint8_t)(v >> 24) };

	return bbuf_add(b, x, 4);
}

static int vbuf_u64(struct bbuf *b, uint64_t v)
{
	int rc = vbuf_u32(b, (uint32_t)v);

	return rc ? rc : vbuf_u32(b, (uint32_t)(v >> 32));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* Copy at most size-1 bytes of s[0..n) into dst, NUL-terminated. */
static void str_copy(char *dst, size_t size, const char *s, size_t n)
{
	if (n >= size)
		n = size - 1;
	memcpy(dst, s, n);
	dst[n] = '\0';
}

/* A view's stored state (FORMAT.md "View state record"). */
struct vstate {
	uint8_t flags;                  /* STATE_BROKEN */
	uint64_t seq;                   /* indexed up to */
	uint64_t rows;                  /* entries in the key index */
	uint64_t mapped;                /* documents mapped since built */
	uint64_t errors;                /* documents a function failed on */
	char coll[COLL_MAX];            /* collate_version() it was built with */
	char err[VIEW_MSGLEN];          /* latest error */
	char errid[VIEW_MSGLEN];        /* its document */
};

static int put_str16(struct bbuf *b, const char *s)
{
	size_t n = strlen(s);
	int rc = vbuf_u16(b, (uint16_t)n);

	return rc ? rc : bbuf_add(b, s, n);
}

static int state_encode(const struct vstate *s, struct bbuf *b)
{
	uint8_t head[2] = { STATE_VERSION, s->flags };
	int rc;

	b->len = 0;
	if ((rc = bbuf_add(b, head, 2)) || (rc = vbuf_u64(b, s->seq)) ||
	    (rc = vbuf_u64(b, s->rows)) || (rc = vbuf_u64(b, s->mapped)) ||
	    (rc = vbuf_u64(b, s->errors)) || (rc = put_str16(b, s->coll)) ||
	    (rc = put_str16(b, s->err)))
		return rc;
	return put_str16(b, s->errid);
}

/* One u16-counted string at *off of p[0..n) into dst. */
static int get_str16(const uint8_t *p, size_t n, size_t *off, char *dst,
		     size_t size)
{
	size_t len;

	if (n - *off < 2)
		return BARREL_E_CORRUPT;
	len = get16(p + *off);
	*off += 2;
	if (n - *off < len || len >= size)
		return BARREL_E_CORRUPT;
	str_copy(dst, size, (const char *)p + *off, len);
	*off += len;
	return 0;
}

/* Validate and decode a state record; BARREL_E_VERSION for another
 * version (the index is rebuilt), BARREL_E_CORRUPT (logged). */
static int state_decode(const void *buf, size_t n, struct vstate *s)
{
	const uint8_t *p = buf;
	size_t off = STATE_HEAD;
	int rc;

	memset(s, 0, sizeof(*s));
	if (n >= 1 && p[0] != STATE_VERSION)
		return BARREL_E_VERSION;
	rc = n < STATE_HEAD || (p[1] & ~STATE_BROKEN) ? BARREL_E_CORRUPT : 0;
	if (!rc) {
		s->flags = p[1];
		s->seq = get64(p + 2);
		s->rows = get64(p + 10);
		s->mapped = get64(p + 18);
		s->errors = get64(p + 26);
		rc = get_str16(p, n, &off, s->coll, sizeof(s->coll));
	}
	if (!rc)
		rc = get_str16(p, n, &off, s->err, sizeof(s->err));
	if (!rc)
		rc = get_str16(p, n, &off, s->errid, sizeof(s->errid));
	if (!rc && off != n)
		rc = BARREL_E_CORRUPT;
	if (rc == BARREL_E_CORRUPT)
		barrel_log(BLOG_ERR, "corrupt record: view state: bad layout "
			   "(%zu bytes)", n);
	return rc;
}

/*
 * An index key: encoding(key) || docid, then for the second and later
 * emits of the same key by one document 0x00 || u32 BE dup. Returns its
 * length, or BARREL_E_TOOBIG past BDB_MAX_KEY. out has BDB_MAX_KEY bytes.
 */
static int ikey_build(uint8_t *out, const uint8_t *enc, size_t enclen,
		      const char *id, size_t idlen, uint32_t dup)
{
	size_t n = enclen + idlen + (dup ? DUP_SUFFIX : 0);

	if (n > BDB_MAX_KEY)
		return BARREL_E_TOOBIG;
	memcpy(out, enc, enclen);
	memcpy(out + enclen, id, idlen);
	if (dup) {
		uint8_t *d = out + enclen + idlen;

		d[0] = 0;
		d[1] = (uint8_t)(dup >> 24);
		d[2] = (uint8_t)(dup >> 16);
		d[3] = (uint8_t)(dup >> 8);
		d[4] = (uint8_t)dup;
	}
	return (int)n;
}

/* The doc id of an index key (the dup suffix dropped): borrowed. */
static int ikey_split(const uint8_t *k, size_t klen, size_t *enclen,
		      const char **id, size_t *idlen)
{
	const uint8_t *d;
	const uint8_t *nul;
	int rc = collate_index_split(k, klen, enclen, &d, idlen);

	if (rc)
		return rc;
	if ((nul = memchr(d, 0, *idlen)))
		*idlen = (size_t)(nul - d);
	*id = (const char *)d;
	return 0;
}

/* A row value: u32 key_len, the key's JSON text, the value's. */
static int row_split(const uint8_t *v, size_t n, const char **key,
		     size_t *keylen, const char **val, size_t *vallen)
{
	if (n < ROW_HEAD || get32(v) > n - ROW_HEAD) {
		barrel_log(BLOG_ERR, "corrupt record: view row: bad key length "
			   "(%zu bytes)", n);
		return BARREL_E_CORRUPT;
	}
	*keylen = get32(v);
	*key = (const char *)v + ROW_HEAD;
	*val = *key + *keylen;
	*vallen = n - ROW_HEAD - *keylen;
	return 0;
}

/* Walk a by-document log: cb(arg, enc, enclen, dup) per entry. */
static int log_each(const uint8_t *p, size_t n,
		    int (*cb)(void *arg, const uint8_t *enc, size_t enclen,
			      uint32_t dup), void *arg)
{
	size_t off = 0;
	int rc = 0;

	while (!rc && off < n) {
		size_t len;

		if (n - off < LOG_ENTRY_HEAD ||
		    (len = get16(p + off)) > n - off - LOG_ENTRY_HEAD) {
			barrel_log(BLOG_ERR, "corrupt record: view log: bad "
				   "entry at %zu of %zu", off, n);
			return BARREL_E_CORRUPT;
		}
		rc = cb(arg, p + off + LOG_ENTRY_HEAD, len, get32(p + off + 2));
		off += LOG_ENTRY_HEAD + len;
	}
	return rc;
}

/* ---- 2. design documents ---- */

/* One view of a design document. */
struct vdef {
	char *name;
	char *map;                     /* source, NUL-terminated */
	size_t maplen;
	char *reduce;                  /* NULL: none */
	uint8_t sig[16];               /* XXH3-128 of language and map */
	char hex[VIEW_SIG_HEX];
	bool owner;                    /* the first view with sig: indexes it */
	bool broken;                   /* does not compile, or not JS */
	char msg[VIEW_MSGLEN];         /* why broken */
	uint32_t t_keys, t_docs;       /* owner: its tables */
	struct vstate st;              /* owner: as stored (indexer thread) */
};

struct jsctx;

/* One design document as the indexer holds it. */
struct ddef {
	char *id;
	size_t idlen;
	struct rev rev;
	char *lang;
	struct vdef *views;
	size_t nviews;
	struct jsctx *main;            /* every indexable view */
	struct jsctx *part;            /* a subset catching up */
};

static void view_sig(const char *lang, const char *map, size_t maplen,
		     uint8_t sig[16], char hex[VIEW_SIG_HEX])
{
	static const char tag[16] = "barrel-view-v1";
	XXH3_state_t st;
	XXH128_canonical_t c;

	XXH3_128bits_reset(&st);
	XXH3_128bits_update(&st, tag, sizeof(tag));
	XXH3_128bits_update(&st, lang, strlen(lang) + 1);
	XXH3_128bits_update(&st, map, maplen);
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&st));
	memcpy(sig, c.digest, 16);
	for (size_t i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", sig[i]);
}

static void vdef_release(struct vdef *v)
{
	free(v->name);
	free(v->map);
	free(v->reduce);
}

/* The design document's "language" ("javascript" when absent). */
static const char *ddoc_lang(struct json_object *o)
{
	struct json_object *l;

	if (json_object_object_get_ex(o, "language", &l) &&
	    json_object_is_type(l, json_type_string))
		return json_object_get_string(l);
	return "javascript";
}

/* Fill v from one member of "views"; 1 when it is not a view (no map). */
static int vdef_parse(const char *lang, const char *name,
		      struct json_object *o, struct vdef *v)
{
	struct json_object *m, *r;

	memset(v, 0, sizeof(*v));
	if (!json_object_object_get_ex(o, "map", &m) ||
	    !json_object_is_type(m, json_type_string))
		return 1;
	v->maplen = (size_t)json_object_get_string_len(m);
	v->name = strdup(name);
	v->map = strndup(json_object_get_string(m), v->maplen);
	if (json_object_object_get_ex(o, "reduce", &r) &&
	    json_object_is_type(r, json_type_string))
		v->reduce = strdup(json_object_get_string(r));
	if (!v->name || !v->map || (json_object_object_get_ex(o, "reduce", &r) &&
				    json_object_is_type(r, json_type_string) &&
				    !v->reduce)) {
		vdef_release(v);
		return -ENOMEM;
	}
	view_sig(lang, v->map, v->maplen, v->sig, v->hex);
	return 0;
}

/* The views of a design document's body (json-c object). */
static int ddef_parse_views(struct ddef *dd, struct json_object *body)
{
	struct json_object *views;
	size_t cap;

	if (!json_object_object_get_ex(body, "views", &views) ||
	    !json_object_is_type(views, json_type_object))
		return 0;
	cap = (size_t)json_object_object_length(views);
	if (!cap || !(dd->views = calloc(cap, sizeof(*dd->views))))
		return cap ? -ENOMEM : 0;
	json_object_object_foreach(views, name, o) {
		int rc = vdef_parse(dd->lang, name, o, &dd->views[dd->nviews]);

		if (rc < 0)
			return rc;
		if (rc == 0)
			dd->nviews++;
	}
	return 0;
}

static void jsctx_free(struct jsctx *c);

static void ddef_release(struct ddef *dd)
{
	jsctx_free(dd->main);
	jsctx_free(dd->part);
	for (size_t i = 0; i < dd->nviews; i++)
		vdef_release(&dd->views[i]);
	free(dd->views);
	free(dd->id);
	free(dd->lang);
	memset(dd, 0, sizeof(*dd));
}

/* Parse the design document doc (JSON text of its body) into dd. */
static int ddef_parse(const struct doc *doc, struct ddef *dd)
{
	struct json_object *body = json_tokener_parse(doc->body);
	int rc = 0;

	memset(dd, 0, sizeof(*dd));
	dd->id = strndup(doc->id, doc->idlen);
	dd->idlen = doc->idlen;
	dd->rev = doc->rev;
	dd->lang = strdup(body ? ddoc_lang(body) : "javascript");
	if (!dd->id || !dd->lang)
		rc = -ENOMEM;
	if (!rc && body && json_object_is_type(body, json_type_object))
		rc = ddef_parse_views(dd, body);
	json_object_put(body);
	if (rc)
		ddef_release(dd);
	return rc;
}

static struct vdef *ddef_view(struct ddef *dd, const char *name)
{
	for (size_t i = 0; i < dd->nviews; i++)
		if (!strcmp(dd->views[i].name, name))
			return &dd->views[i];
	return NULL;
}

/* "_design/D" for D or "_design/D" into buf. */
static int ddoc_id(const char *ddoc, char *buf, size_t size)
{
	const char *pre = strncmp(ddoc, DOC_DESIGN_PREFIX,
				  strlen(DOC_DESIGN_PREFIX)) ? DOC_DESIGN_PREFIX : "";
	int n = snprintf(buf, size, "%s%s", pre, ddoc);

	return n < 0 || (size_t)n >= size ? BARREL_E_NOTFOUND : 0;
}

static bool is_design(const char *id, size_t idlen)
{
	size_t n = strlen(DOC_DESIGN_PREFIX);

	return idlen >= n && !memcmp(id, DOC_DESIGN_PREFIX, n);
}

static void table_name(char *buf, size_t size, const char *hex,
		       const char *what)
{
	snprintf(buf, size, "view$%s$%s", hex, what);
}

/* ---- 3. the indexer's registry ---- */

struct view_indexer {
	struct docdb *d;               /* borrowed */
	struct bdb *db;
	struct view_indexer_opts opts;
	uint32_t t_state;              /* STATE_TABLE */
	pthread_t thread;
	bool started;
	uint64_t watch_id;
	bool watching;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;                     /* protected by lock */
	uint64_t seen_seq;             /* protected by lock: latest commit */
	uint64_t gen;                  /* protected by lock: index commits */
	bool idle;                     /* by lock: no design document, so a
	                                  commit does not wake the thread */
	bool kicked;                   /* by lock: a query wants a pass */

	/* the indexer thread's own */
	struct ddef *ddocs;            /* by id */
	size_t nddocs;
	size_t rr;                     /* round robin over ddocs */
	json_tokener *tok;
	struct bbuf scratch;
	struct bbuf doctext;           /* the document being mapped */
};

/* A mapjs context of one design document: which view each function is. */
struct jsctx {
	struct view_indexer *vi;
	struct ddef *dd;
	struct mapjs *m;
	size_t *view;                  /* view index of function i */
	size_t n;
};

static void jsctx_free(struct jsctx *c)
{
	if (!c)
		return;
	mapjs_free(c->m);
	free(c->view);
	free(c);
}

static void jsctx_log(void *arg, int fn, const char *msg, size_t len)
{
	struct jsctx *c = arg;
	struct view_indexer *vi = c->vi;

	const char *view;

	if (fn < 0 || (size_t)fn >= c->n)
		return;
	view = c->dd->views[c->view[fn]].name;
	if (vi->opts.log)
		vi->opts.log(vi->opts.log_arg, c->dd->id, view, msg, len);
	else
		barrel_log(BLOG_INFO, "%s/_view/%s: log: %.*s", c->dd->id,
			   view, len > INT_MAX ? INT_MAX : (int)len, msg);
}

/* A context for the views of dd listed in which[0..n); a view that does
 * not compile is marked broken and left out. */
static int jsctx_new(struct view_indexer *vi, struct ddef *dd,
		     const size_t *which, size_t n, struct jsctx **out)
{
	struct jsctx *c = calloc(1, sizeof(*c));
	struct mapjs_opts o = vi->opts.js;
	int rc;

	if (!c || !(c->view = calloc(n ? n : 1, sizeof(*c->view)))) {
		free(c);
		return -ENOMEM;
	}
	c->vi = vi;
	c->dd = dd;
	o.log = jsctx_log;
	o.log_arg = c;
	if ((rc = mapjs_new(&o, &c->m))) {
		jsctx_free(c);
		return rc;
	}
	for (size_t i = 0; i < n; i++) {
		struct vdef *v = &dd->views[which[i]];
		int fn = mapjs_add_map(c->m, v->map, v->maplen);

		if (fn == -ENOMEM) {
			jsctx_free(c);
			return fn;
		}
		if (fn < 0) {
			v->broken = true;
			snprintf(v->msg, sizeof(v->msg), "map function: %s",
				 mapjs_errmsg(c->m));
			continue;
		}
		c->view[fn] = which[i];
		c->n = (size_t)fn + 1;
	}
	*out = c;
	return 0;
}

/* Is v indexed by this indexer (and not failing to compile)? */
static bool vdef_live(const struct vdef *v)
{
	return v->owner && !v->broken;
}

/* Build dd's main context over its owned views. */
static int ddef_compile(struct view_indexer *vi, struct ddef *dd)
{
	size_t *which = calloc(dd->nviews ? dd->nviews : 1, sizeof(*which));
	size_t n = 0;
	int rc;

	if (!which)
		return -ENOMEM;
	for (size_t i = 0; i < dd->nviews; i++) {
		struct vdef *v = &dd->views[i];

		if (v->owner && strcmp(dd->lang, "javascript")) {
			v->broken = true;
			snprintf(v->msg, sizeof(v->msg), "language %.64s is not "
				 "supported", dd->lang);
		}
		if (vdef_live(v))
			which[n++] = i;
	}
	rc = jsctx_new(vi, dd, which, n, &dd->main);
	free(which);
	return rc;
}

/* The first view (design documents by id, views in order) with each
 * signature owns its index. */
static void mark_owners(struct ddef *dds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < dds[i].nviews; j++) {
			struct vdef *v = &dds[i].views[j];
			bool seen = false;

			for (size_t a = 0; a <= i && !seen; a++)
				for (size_t b = 0; b < dds[a].nviews && !seen; b++) {
					if (a == i && b == j)
						break;
					seen = !memcmp(dds[a].views[b].sig, v->sig, 16);
				}
			v->owner = !seen;
		}
	}
}

/* The ids and revisions of the live design documents. */
struct ddlist {
	struct ddef *dds;
	size_t n;
	size_t cap;
};

static int ddlist_add(void *arg, const struct doc_row *row)
{
	struct ddlist *l = arg;
	struct ddef *dd;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 8;
		struct ddef *p = realloc(l->dds, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		l->dds = p;
		l->cap = cap;
	}
	dd = &l->dds[l->n];
	memset(dd, 0, sizeof(*dd));
	if (!(dd->id = strndup(row->id, row->idlen)))
		return -ENOMEM;
	dd->idlen = row->idlen;
	dd->rev = row->revs[0];
	l->n++;
	return 0;
}

static void ddlist_free(struct ddef *dds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ddef_release(&dds[i]);
	free(dds);
}

static int ddlist_read(struct docdb *d, struct bsnap *snap, struct ddlist *l)
{
	const char *lo = DOC_DESIGN_PREFIX, *hi = "_design0";

	memset(l, 0, sizeof(*l));
	return docdb_all_docs(d, snap, lo, strlen(lo), hi, strlen(hi), 0,
			      ddlist_add, l);
}

static bool ddlist_same(const struct view_indexer *vi, const struct ddlist *l)
{
	if (l->n != vi->nddocs)
		return false;
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->dds[i].id, vi->ddocs[i].id) ||
		    !rev_eq(&l->dds[i].rev, &vi->ddocs[i].rev))
			return false;
	return true;
}

/* Replace each listed entry by its parsed design document. */
static int ddlist_load(struct docdb *d, struct bsnap *snap, struct ddlist *l)
{
	int rc = 0;

	for (size_t i = 0; i < l->n && !rc; i++) {
		struct doc doc;

		rc = docdb_get(d, snap, l->dds[i].id, l->dds[i].idlen, NULL, 0,
			       &doc);
		if (!rc) {
			free(l->dds[i].id);
			l->dds[i].id = NULL;
			rc = ddef_parse(&doc, &l->dds[i]);
			doc_release(&doc);
		}
	}
	return rc;
}

static int state_read(struct bsnap *snap, uint32_t t, const uint8_t sig[16],
		      struct vstate *st)
{
	struct bval v;
	int rc = bsnap_get(snap, t, sig, 16, &v);

	if (rc)
		return rc;
	rc = state_decode(v.data, v.len, st);
	bval_release(&v);
	return rc;
}

static int state_write(struct btxn *txn, uint32_t t, const uint8_t sig[16],
		       const struct vstate *st, struct bbuf *b)
{
	int rc = state_encode(st, b);

	return rc ? rc : btxn_put(txn, t, sig, 16, b->p, b->len, NULL);
}

static bool owned_sig(const struct ddef *dds, size_t n, const void *sig)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < dds[i].nviews; j++)
			if (dds[i].views[j].owner &&
			    !memcmp(dds[i].views[j].sig, sig, 16))
				return true;
	return false;
}

static int drop_tables(struct btxn *txn, const char *hex)
{
	char name[64];
	int rc;

	table_name(name, sizeof(name), hex, "keys");
	rc = btxn_table_drop(txn, name);
	if (rc && rc != BARREL_E_NOTFOUND)
		return rc;
	table_name(name, sizeof(name), hex, "docs");
	rc = btxn_table_drop(txn, name);
	return rc == BARREL_E_NOTFOUND ? 0 : rc;
}

/* Drop the indexes whose signature no design document owns any more. */
static int drop_orphans(struct view_indexer *vi, struct bsnap *snap,
			struct btxn *txn, const struct ddlist *l, bool *wrote)
{
	struct bcursor *c = NULL;
	struct bentry e;
	int rc = bsnap_scan(snap, vi->t_state, NULL, 0, NULL, 0, 0, &c);

	while (!rc && (rc = bcursor_next(c, &e)) == 1) {
		char hex[VIEW_SIG_HEX];

		if (e.klen != 16 || owned_sig(l->dds, l->n, e.key)) {
			rc = 0;
			continue;
		}
		for (size_t i = 0; i < 16; i++)
			snprintf(hex + 2 * i, 3, "%02x", ((const uint8_t *)e.key)[i]);
		if (!(rc = drop_tables(txn, hex)))
			rc = btxn_del(txn, vi->t_state, e.key, 16);
		*wrote = true;
	}
	if (c)
		bcursor_free(c);
	return rc < 0 ? rc : 0;
}

/* (Re)create v's index when it has none, or one of another format or
 * collation: empty tables and a fresh state. */
static int ensure_index(struct view_indexer *vi, struct bsnap *snap,
			struct btxn *txn, struct vdef *v, bool *wrote)
{
	const char *coll = collate_version();
	char name[64];
	int rc = state_read(snap, vi->t_state, v->sig, &v->st);

	if (rc == 0 && !strcmp(v->st.coll, coll) &&
	    (v->st.flags & STATE_BROKEN) == (v->broken ? STATE_BROKEN : 0))
		return 0;
	if (rc && rc != BARREL_E_NOTFOUND && rc != BARREL_E_VERSION &&
	    rc != BARREL_E_CORRUPT)
		return rc;
	*wrote = true;
	memset(&v->st, 0, sizeof(v->st));
	str_copy(v->st.coll, sizeof(v->st.coll), coll, strlen(coll));
	if (v->broken) {
		v->st.flags = STATE_BROKEN;
		str_copy(v->st.err, sizeof(v->st.err), v->msg, strlen(v->msg));
	}
	if ((rc = drop_tables(txn, v->hex)))
		return rc;
	table_name(name, sizeof(name), v->hex, "keys");
	if ((rc = btxn_table(txn, name, 0, &v->t_keys)))
		return rc;
	table_name(name, sizeof(name), v->hex, "docs");
	if ((rc = btxn_table(txn, name, 0, &v->t_docs)))
		return rc;
	return state_write(txn, vi->t_state, v->sig, &v->st, &vi->scratch);
}

static int table_ids(struct view_indexer *vi, struct vdef *v)
{
	char name[64];
	int rc;

	table_name(name, sizeof(name), v->hex, "keys");
	if ((rc = bdb_table(vi->db, name, &v->t_keys)))
		return rc;
	table_name(name, sizeof(name), v->hex, "docs");
	return bdb_table(vi->db, name, &v->t_docs);
}

/* Make the stored indexes match the design documents of l: one txn. */
static int reconcile(struct view_indexer *vi, struct bsnap *snap,
		     struct ddlist *l)
{
	struct btxn *txn;
	bool wrote = false;
	int rc = bdb_begin(vi->db, &txn);

	if (rc)
		return rc;
	rc = drop_orphans(vi, snap, txn, l, &wrote);
	for (size_t i = 0; i < l->n && !rc; i++)
		for (size_t j = 0; j < l->dds[i].nviews && !rc; j++)
			if (l->dds[i].views[j].owner)
				rc = ensure_index(vi, snap, txn,
						  &l->dds[i].views[j], &wrote);
	if (rc || !wrote) {
		btxn_abort(txn);
		return rc;
	}
	return btxn_commit_lazy(txn);
}

/* Reload the design documents when their list changed since the last
 * look, and reconcile the indexes with them. */
static int reg_refresh(struct view_indexer *vi, struct bsnap *snap)
{
	struct ddlist l;
	int rc = ddlist_read(vi->d, snap, &l);

	if (!rc && ddlist_same(vi, &l)) {
		ddlist_free(l.dds, l.n);
		return 0;
	}
	if (!rc)
		rc = ddlist_load(vi->d, snap, &l);
	if (!rc)
		mark_owners(l.dds, l.n);
	for (size_t i = 0; i < l.n && !rc; i++)
		rc = ddef_compile(vi, &l.dds[i]);
	if (!rc)
		rc = reconcile(vi, snap, &l);
	for (size_t i = 0; i < l.n && !rc; i++)
		for (size_t j = 0; j < l.dds[i].nviews && !rc; j++)
			if (l.dds[i].views[j].owner)
				rc = table_ids(vi, &l.dds[i].views[j]);
	if (rc) {
		ddlist_free(l.dds, l.n);
		return rc;
	}
	for (size_t i = 0; i < l.n; i++) {
		if (l.dds[i].main)
			l.dds[i].main->dd = &l.dds[i];
	}
	ddlist_free(vi->ddocs, vi->nddocs);
	vi->ddocs = l.dds;
	vi->nddocs = l.n;
	vi->rr = 0;
	return 0;
}

/* ---- 4. indexing one batch ---- */

/* One document's new rows for one view; offsets into vbatch.arena. */
struct bop {
	size_t id_off;
	size_t idlen;
	size_t rows_off;               /* rows: u16 enc_len, u32 dup, u32
	                                  row_len, enc, row value */
	size_t rows_len;
	size_t nrows;
};

/* What a batch does to one view. */
struct vbatch {
	struct vdef *v;
	struct bbuf arena;
	struct bop *ops;
	size_t nops;
	size_t cap;
	uint64_t mapped;
	uint64_t errors;
	char err[VIEW_MSGLEN];
	char errid[VIEW_MSGLEN];
};

/* One batch: the documents of the changes feed after `since`, up to
 * `hi`, for the views of one context. */
struct step {
	struct view_indexer *vi;
	struct bsnap *snap;
	struct jsctx *ctx;
	struct vbatch *vb;             /* one per function of ctx */
	uint64_t hi;
	uint64_t last;                 /* seq of the last document taken */
	size_t ndocs;
	struct collate_buf enc;
};

static int op_begin(struct vbatch *b, const char *id, size_t idlen)
{
	struct bop *op;
	int rc;

	if (b->nops == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 64;
		struct bop *p = realloc(b->ops, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		b->ops = p;
		b->cap = cap;
	}
	op = &b->ops[b->nops];
	memset(op, 0, sizeof(*op));
	op->id_off = b->arena.len;
	op->idlen = idlen;
	if ((rc = bbuf_add(&b->arena, id, idlen)))
		return rc;
	op->rows_off = b->arena.len;
	b->nops++;
	return 0;
}

/* Drop the rows op collected (the function failed on the document). */
static void op_fail(struct vbatch *b, const char *id, size_t idlen,
		    const char *msg)
{
	struct bop *op = &b->ops[b->nops - 1];

	b->arena.len = op->rows_off;
	op->rows_len = op->nrows = 0;
	b->errors++;
	str_copy(b->err, sizeof(b->err), msg, strlen(msg));
	str_copy(b->errid, sizeof(b->errid), id, idlen);
}

/* Append one emit (key and value JSON text) to the open op. */
static int op_row(struct step *s, struct vbatch *b, const struct mapjs_kv *kv)
{
	struct bop *op = &b->ops[b->nops - 1];
	enum json_tokener_error jerr;
	struct json_object *key;
	size_t rowlen = ROW_HEAD + kv->keylen + kv->valuelen;
	int rc;

	json_tokener_reset(s->vi->tok);
	/* with its NUL: a number ends only there */
	key = json_tokener_parse_ex(s->vi->tok, kv->key, (int)kv->keylen + 1);
	jerr = json_tokener_get_error(s->vi->tok);
	if (jerr != json_tokener_success)
		return BARREL_E_BADJSON;
	s->enc.len = 0;
	rc = collate_key_append(&s->enc, key);
	json_object_put(key);
	if (rc)
		return rc;
	if (s->enc.len + op->idlen + DUP_SUFFIX > BDB_MAX_KEY ||
	    rowlen > BDB_MAX_VALUE)
		return BARREL_E_TOOBIG;
	if ((rc = vbuf_u16(&b->arena, (uint16_t)s->enc.len)) ||
	    (rc = vbuf_u32(&b->arena, 0)) ||
	    (rc = vbuf_u32(&b->arena, (uint32_t)rowlen)) ||
	    (rc = bbuf_add(&b->arena, s->enc.data, s->enc.len)) ||
	    (rc = vbuf_u32(&b->arena, (uint32_t)kv->keylen)) ||
	    (rc = bbuf_add(&b->arena, kv->key, kv->keylen)) ||
	    (rc = bbuf_add(&b->arena, kv->value, kv->valuelen)))
		return rc;
	op->nrows++;
	op->rows_len = b->arena.len - op->rows_off;
	return 0;
}

/* Walk the rows of op: cb(arg, enc, enclen, dupfield, row, rowlen). */
typedef int (*row_fn)(void *arg, const uint8_t *enc, size_t enclen,
		      uint8_t *dup, const uint8_t *row, size_t rowlen);

static int op_rows(struct vbatch *b, const struct bop *op, row_fn cb,
		   void *arg)
{
	uint8_t *p = (uint8_t *)b->arena.p + op->rows_off;
	int rc = 0;

	for (size_t i = 0, off = 0; i < op->nrows && !rc; i++) {
		size_t enclen = get16(p + off), rowlen = get32(p + off + 6);
		uint8_t *enc = p + off + 10;

		rc = cb(arg, enc, enclen, p + off + 2, enc + enclen, rowlen);
		off += 10 + enclen + rowlen;
	}
	return rc;
}

/* Number the repeats of a key within one document: 0, 1, 2... */
struct dupent {
	const uint8_t *enc;
	size_t enclen;
	uint8_t *dup;
	size_t pos;
};

static int dup_cmp(const void *a, const void *b)
{
	const struct dupent *x = a, *y = b;
	int c = collate_bytes_cmp(x->enc, x->enclen, y->enc, y->enclen);

	return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

static int dup_collect(void *arg, const uint8_t *enc, size_t enclen,
		       uint8_t *dup, const uint8_t *row, size_t rowlen)
{
	struct dupent **e = arg;

	(void)row;
	(void)rowlen;
	(*e)->enc = enc;
	(*e)->enclen = enclen;
	(*e)->dup = dup;
	(*e)++;
	return 0;
}

static int op_number_dups(struct vbatch *b, const struct bop *op)
{
	struct dupent *e, *p;
	uint32_t n = 0;

	if (op->nrows < 2)
		return 0;
	if (!(e = calloc(op->nrows, sizeof(*e))))
		return -ENOMEM;
	p = e;
	op_rows(b, op, dup_collect, &p);
	for (size_t i = 0; i < op->nrows; i++)
		e[i].pos = i;
	qsort(e, op->nrows, sizeof(*e), dup_cmp);
	for (size_t i = 0; i < op->nrows; i++) {
		n = i && !collate_bytes_cmp(e[i].enc, e[i].enclen, e[i - 1].enc,
					    e[i - 1].enclen) ? n + 1 : 0;
		e[i].dup[0] = (uint8_t)n;
		e[i].dup[1] = (uint8_t)(n >> 8);
		e[i].dup[2] = (uint8_t)(n >> 16);
		e[i].dup[3] = (uint8_t)(n >> 24);
	}
	free(e);
	return 0;
}

/* The JSON text a map function gets: the winner with _id, _rev,
 * _attachments stubs, and _conflicts when there are any. */
static int doc_text(struct step *s, const struct doc_row *row,
		    struct bbuf *out)
{
	struct doc doc = *row->doc;
	struct revtree *t = NULL;
	unsigned flags = DOC_JSON_META | DOC_JSON_ATTS | DOC_JSON_ANY_SPACE;
	int rc = 0;

	if (row->nrevs > 1) {
		rc = docdb_tree(s->vi->d, s->snap, row->id, row->idlen, &t, NULL);
		doc.tree = t;
		flags |= DOC_JSON_CONFLICTS;
	}
	out->len = 0;
	if (!rc)
		rc = doc_json_text(&doc, flags, out);
	revtree_free(t);
	return rc;
}

/* Collect one function's result on a document into its batch. */
static int take_result(struct step *s, const struct doc_row *row,
		       const struct mapjs_result *r)
{
	struct vbatch *b = &s->vb[r->fn];
	int rc = 0;

	b->mapped++;
	if (r->err) {
		op_fail(b, row->id, row->idlen, r->msg);
		return 0;
	}
	for (size_t i = 0; i < r->nkv && !rc; i++)
		rc = op_row(s, b, &r->kv[i]);
	if (rc == BARREL_E_TOOBIG || rc == BARREL_E_BADJSON ||
	    rc == BARREL_E_INVALID) {
		op_fail(b, row->id, row->idlen, rc == BARREL_E_TOOBIG ?
			"emitted key or value too large for the index" :
			"emitted key cannot be collated");
		return 0;
	}
	return rc ? rc : op_number_dups(b, &b->ops[b->nops - 1]);
}

/* Map one document of the changes feed with the step's context. */
static int map_doc(struct step *s, const struct doc_row *row)
{
	const struct mapjs_result *res;
	struct bbuf *text = &s->vi->doctext;
	size_t nres;
	int rc = 0;

	for (size_t i = 0; i < s->ctx->n && !rc; i++)
		rc = op_begin(&s->vb[i], row->id, row->idlen);
	if (rc || row->deleted || !row->doc || is_design(row->id, row->idlen))
		return rc;
	if ((rc = doc_text(s, row, text)))
		return rc;
	rc = mapjs_map(s->ctx->m, text->p, text->len, &res, &nres);
	if (rc && rc != -ENOMEM) {
		for (size_t i = 0; i < s->ctx->n; i++)
			op_fail(&s->vb[i], row->id, row->idlen,
				mapjs_errmsg(s->ctx->m));
		return 0;
	}
	for (size_t i = 0; i < nres && !rc; i++)
		rc = take_result(s, row, &res[i]);
	return rc;
}

static int step_row(void *arg, const struct doc_row *row)
{
	struct step *s = arg;
	int rc;

	if (row->seq > s->hi)
		return STOP_SCAN;
	if ((rc = map_doc(s, row)))
		return rc;
	s->last = row->seq;
	s->ndocs++;
	return 0;
}

/* Delete the index entries a document's log names. */
struct unrow {
	struct btxn *txn;
	uint32_t t;
	const char *id;
	size_t idlen;
	uint64_t removed;
};

static int unrow_one(void *arg, const uint8_t *enc, size_t enclen,
		     uint32_t dup)
{
	struct unrow *u = arg;
	uint8_t k[BDB_MAX_KEY];
	int n = ikey_build(k, enc, enclen, u->id, u->idlen, dup);
	int rc;

	if (n < 0)
		return n;
	rc = btxn_del(u->txn, u->t, k, (size_t)n);
	if (rc == 0)
		u->removed++;
	return rc == BARREL_E_NOTFOUND ? 0 : rc;
}

/* Put one new row, and its entry in the new log. */
struct inrow {
	struct btxn *txn;
	uint32_t t;
	const char *id;
	size_t idlen;
	struct bbuf *log;
};

static int inrow_one(void *arg, const uint8_t *enc, size_t enclen,
		     uint8_t *dupf, const uint8_t *row, size_t rowlen)
{
	struct inrow *in = arg;
	uint8_t k[BDB_MAX_KEY];
	uint32_t dup = get32(dupf);
	int n = ikey_build(k, enc, enclen, in->id, in->idlen, dup);
	int rc;

	if (n < 0)
		return n;
	if ((rc = btxn_put(in->txn, in->t, k, (size_t)n, row, rowlen, NULL)) ||
	    (rc = vbuf_u16(in->log, (uint16_t)enclen)) ||
	    (rc = bbuf_add(in->log, dupf, 4)))
		return rc;
	return bbuf_add(in->log, enc, enclen);
}

/* Replace one document's rows in one view. */
static int op_apply(struct btxn *txn, struct vbatch *b, const struct bop *op,
		    struct vstate *st, struct bbuf *log)
{
	const char *id = (const char *)b->arena.p + op->id_off;
	struct unrow un = { txn, b->v->t_keys, id, op->idlen, 0 };
	struct inrow in = { txn, b->v->t_keys, id, op->idlen, log };
	struct bval old;
	int rc = btxn_get(txn, b->v->t_docs, id, op->idlen, &old);

	if (rc == 0) {
		rc = log_each(old.data, old.len, unrow_one, &un);
		bval_release(&old);
	} else if (rc == BARREL_E_NOTFOUND) {
		rc = 0;
	}
	st->rows -= un.removed < st->rows ? un.removed : st->rows;
	log->len = 0;
	if (!rc)
		rc = op_rows(b, op, inrow_one, &in);
	if (rc)
		return rc;
	st->rows += op->nrows;
	if (op->nrows)
		return btxn_put(txn, b->v->t_docs, id, op->idlen, log->p,
				log->len, NULL);
	rc = btxn_del(txn, b->v->t_docs, id, op->idlen);
	return rc == BARREL_E_NOTFOUND ? 0 : rc;
}

/* Write a step's batches and the views' new states: one transaction.
 * The states in memory change only once it committed. */
static int step_commit(struct step *s, uint64_t seq)
{
	struct view_indexer *vi = s->vi;
	struct vstate *st = calloc(s->ctx->n ? s->ctx->n : 1, sizeof(*st));
	struct bbuf log = { 0 };
	struct btxn *txn = NULL;
	int rc = st ? bdb_begin(vi->db, &txn) : -ENOMEM;

	for (size_t i = 0; i < s->ctx->n && !rc; i++) {
		struct vbatch *b = &s->vb[i];

		st[i] = b->v->st;
		for (size_t j = 0; j < b->nops && !rc; j++)
			rc = op_apply(txn, b, &b->ops[j], &st[i], &log);
		st[i].seq = seq;
		st[i].mapped += b->mapped;
		st[i].errors += b->errors;
		if (b->errors) {
			memcpy(st[i].err, b->err, sizeof(st[i].err));
			memcpy(st[i].errid, b->errid, sizeof(st[i].errid));
		}
		if (!rc)
			rc = state_write(txn, vi->t_state, b->v->sig, &st[i],
					 &vi->scratch);
	}
	if (rc && txn)
		btxn_abort(txn);
	else if (!rc)
		rc = btxn_commit_lazy(txn);
	for (size_t i = 0; i < s->ctx->n && !rc; i++)
		s->vb[i].v->st = st[i];
	bbuf_release(&log);
	free(st);
	return rc;
}

static void step_release(struct step *s)
{
	for (size_t i = 0; s->vb && i < s->ctx->n; i++) {
		bbuf_release(&s->vb[i].arena);
		free(s->vb[i].ops);
	}
	free(s->vb);
	collate_buf_release(&s->enc);
}

/* Index the changes after `lo` up to `hi` (at most one batch) for the
 * views of ctx, all at sequence lo. */
static int step_run(struct view_indexer *vi, struct bsnap *snap,
		    struct jsctx *ctx, uint64_t lo, uint64_t hi)
{
	struct step s = { .vi = vi, .snap = snap, .ctx = ctx, .hi = hi };
	unsigned limit = vi->opts.batch_docs;
	int rc = 0;

	collate_buf_init(&s.enc);
	if (!(s.vb = calloc(ctx->n ? ctx->n : 1, sizeof(*s.vb))))
		return -ENOMEM;
	for (size_t i = 0; i < ctx->n; i++)
		s.vb[i].v = &ctx->dd->views[ctx->view[i]];
	rc = docdb_changes(vi->d, snap, lo, limit, DOC_ROWS_DOCS |
			   DOC_ROWS_ALL_LEAVES, step_row, &s, NULL);
	if (rc == STOP_SCAN || (rc == 0 && s.ndocs < limit))
		s.last = hi;
	else if (rc == 0 && s.ndocs == 0)
		s.last = lo;
	if (rc == STOP_SCAN)
		rc = 0;
	if (!rc && s.last > lo)
		rc = step_commit(&s, s.last);
	step_release(&s);
	return rc;
}

/* ---- 5. the indexer thread ---- */

static bool ddef_work(const struct ddef *dd, uint64_t target, uint64_t *lo,
		      uint64_t *hi)
{
	*lo = UINT64_MAX;
	for (size_t i = 0; i < dd->nviews; i++)
		if (vdef_live(&dd->views[i]) && dd->views[i].st.seq < *lo)
			*lo = dd->views[i].st.seq;
	if (*lo >= target)
		return false;
	*hi = target;
	for (size_t i = 0; i < dd->nviews; i++) {
		uint64_t s = dd->views[i].st.seq;

		if (vdef_live(&dd->views[i]) && s > *lo && s < *hi)
			*hi = s;
	}
	return true;
}

static bool part_is(const struct jsctx *c, const size_t *which, size_t n)
{
	return c && c->n == n && !memcmp(c->view, which, n * sizeof(*which));
}

/* The context for the views of dd at sequence lo: the main one when
 * they are all of them, else a context of that subset alone (so views
 * already further on are not mapped again). */
static int group_ctx(struct view_indexer *vi, struct ddef *dd, uint64_t lo,
		     struct jsctx **out)
{
	size_t *which = calloc(dd->nviews, sizeof(*which));
	size_t n = 0, live = 0;
	int rc = 0;

	if (!which)
		return -ENOMEM;
	for (size_t i = 0; i < dd->nviews; i++) {
		if (!vdef_live(&dd->views[i]))
			continue;
		live++;
		if (dd->views[i].st.seq == lo)
			which[n++] = i;
	}
	if (n == live) {
		*out = dd->main;
	} else if (part_is(dd->part, which, n)) {
		*out = dd->part;
	} else {
		jsctx_free(dd->part);
		dd->part = NULL;
		rc = jsctx_new(vi, dd, which, n, &dd->part);
		*out = dd->part;
	}
	free(which);
	return rc;
}

/* One batch for the next design document (round robin) with work. */
static int index_step(struct view_indexer *vi, struct bsnap *snap,
		      uint64_t target, bool *did)
{
	*did = false;
	for (size_t k = 0; k < vi->nddocs; k++) {
		size_t i = (vi->rr + k) % vi->nddocs;
		struct ddef *dd = &vi->ddocs[i];
		struct jsctx *ctx;
		uint64_t lo, hi;
		int rc;

		if (!ddef_work(dd, target, &lo, &hi))
			continue;
		vi->rr = i + 1;
		*did = true;
		if ((rc = group_ctx(vi, dd, lo, &ctx)))
			return rc;
		return ctx->n ? step_run(vi, snap, ctx, lo, hi) : 0;
	}
	return 0;
}

static int indexer_pass(struct view_indexer *vi, uint64_t *target, bool *did)
{
	struct bsnap *snap;
	int rc = bdb_snapshot(vi->db, &snap);

	*did = false;
	if (rc)
		return rc;
	*target = bsnap_seq(snap);
	rc = reg_refresh(vi, snap);
	if (!rc)
		rc = index_step(vi, snap, *target, did);
	bsnap_release(snap);
	return rc;
}

static void deadline_in(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Sleep until a commit after target (any, with backoff), stop, or one
 * wait slice. Without design documents (idle) only the slice's end or
 * a query's kick ends it: a database that has no views pays no thread
 * wake-up per commit, and a first design document is read within one
 * slice, or at once when a query asks for it. */
static void wait_commit(struct view_indexer *vi, uint64_t target,
			bool backoff)
{
	struct timespec ts;

	deadline_in(&ts, vi->opts.wait_ms);
	pthread_mutex_lock(&vi->lock);
	vi->idle = vi->nddocs == 0;
	while (!vi->stop && !vi->kicked &&
	       (backoff || vi->idle || vi->seen_seq <= target))
		if (pthread_cond_timedwait(&vi->cond, &vi->lock, &ts) == ETIMEDOUT)
			break;
	vi->kicked = false;
	vi->idle = false;
	pthread_mutex_unlock(&vi->lock);
}

static void wake_waiters(struct view_indexer *vi)
{
	pthread_mutex_lock(&vi->lock);
	vi->gen++;
	pthread_cond_broadcast(&vi->cond);
	pthread_mutex_unlock(&vi->lock);
}

static bool stopping(struct view_indexer *vi)
{
	bool s;

	pthread_mutex_lock(&vi->lock);
	s = vi->stop;
	pthread_mutex_unlock(&vi->lock);
	return s;
}

/* bdb_watch callback, from a committing thread: note the sequence. */
static void on_commit(void *arg, uint64_t seq)
{
	struct view_indexer *vi = arg;

	pthread_mutex_lock(&vi->lock);
	if (seq > vi->seen_seq)
		vi->seen_seq = seq;
	if (!vi->idle)
		pthread_cond_broadcast(&vi->cond);
	pthread_mutex_unlock(&vi->lock);
}

/* Stop the map contexts' timers while the thread waits. */
static void contexts_idle(struct view_indexer *vi)
{
	for (size_t i = 0; i < vi->nddocs; i++) {
		if (vi->ddocs[i].main)
			mapjs_idle(vi->ddocs[i].main->m);
		if (vi->ddocs[i].part)
			mapjs_idle(vi->ddocs[i].part->m);
	}
}

static void *indexer_main(void *arg)
{
	struct view_indexer *vi = arg;

	while (!stopping(vi)) {
		uint64_t target = 0;
		bool did;
		int rc = indexer_pass(vi, &target, &did);

		wake_waiters(vi);
		if (rc)
			barrel_log(BLOG_ERR, "views of %s: indexing failed: %s",
				   bdb_name(vi->db), barrel_strerror(rc));
		if (rc || !did) {
			contexts_idle(vi);
			wait_commit(vi, target, rc != 0);
		}
	}
	ddlist_free(vi->ddocs, vi->nddocs);
	vi->ddocs = NULL;
	vi->nddocs = 0;
	return NULL;
}

void view_indexer_opts_init(struct view_indexer_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->batch_docs = VIEW_DEFAULT_BATCH;
	opts->wait_ms = VIEW_DEFAULT_WAIT_MS;
}

/* The state table, created when missing. */
static int state_table(struct bdb *db, uint32_t *id)
{
	struct btxn *txn;
	int rc = bdb_table(db, STATE_TABLE, id);

	if (rc != BARREL_E_NOTFOUND)
		return rc;
	if ((rc = bdb_begin(db, &txn)))
		return rc;
	if ((rc = btxn_table(txn, STATE_TABLE, 0, id))) {
		btxn_abort(txn);
		return rc;
	}
	return btxn_commit(txn);
}

static void indexer_free(struct view_indexer *vi)
{
	if (vi->watching)
		bdb_unwatch(vi->db, vi->watch_id);
	if (vi->tok)
		json_tokener_free(vi->tok);
	bbuf_release(&vi->scratch);
	bbuf_release(&vi->doctext);
	pthread_cond_destroy(&vi->cond);
	pthread_mutex_destroy(&vi->lock);
	free(vi);
}

static void indexer_init_sync(struct view_indexer *vi)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&vi->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vi->cond, &ca);
	pthread_condattr_destroy(&ca);
}

int view_indexer_start(struct docdb *d, const struct view_indexer_opts *opts,
		       struct view_indexer **out)
{
	struct view_indexer *vi = calloc(1, sizeof(*vi));
	int rc;

	if (!vi)
		return -ENOMEM;
	indexer_init_sync(vi);
	vi->d = d;
	vi->db = docdb_bdb(d);
	if (opts)
		vi->opts = *opts;
	else
		view_indexer_opts_init(&vi->opts);
	if (!vi->opts.batch_docs)
		vi->opts.batch_docs = VIEW_DEFAULT_BATCH;
	if (!vi->opts.wait_ms)
		vi->opts.wait_ms = VIEW_DEFAULT_WAIT_MS;
	vi->seen_seq = bdb_seq(vi->db);
	rc = (vi->tok = json_tokener_new()) ? 0 : -ENOMEM;
	if (!rc)
		rc = state_table(vi->db, &vi->t_state);
	if (!rc && !(rc = bdb_watch(vi->db, on_commit, vi, &vi->watch_id)))
		vi->watching = true;
	if (!rc)
		rc = -pthread_create(&vi->thread, NULL, indexer_main, vi);
	if (rc) {
		indexer_free(vi);
		return rc;
	}
	vi->started = true;
	*out = vi;
	return 0;
}

void view_indexer_stop(struct view_indexer *vi)
{
	if (!vi)
		return;
	pthread_mutex_lock(&vi->lock);
	vi->stop = true;
	pthread_cond_broadcast(&vi->cond);
	pthread_mutex_unlock(&vi->lock);
	if (vi->started)
		pthread_join(vi->thread, NULL);
	indexer_free(vi);
}

/* ---- 6. queries ---- */

/* A view as a query finds it in its design document. */
struct vref {
	uint8_t sig[16];
	char hex[VIEW_SIG_HEX];
	char *reduce;                  /* owned; NULL: none */
};

static int view_resolve(struct docdb *d, struct bsnap *snap,
			const char *ddoc, const char *view, struct vref *out)
{
	char id[DOC_MAX_ID + 16];
	struct ddef dd;
	struct doc doc;
	struct vdef *v;
	int rc = ddoc_id(ddoc, id, sizeof(id));

	memset(out, 0, sizeof(*out));
	if (rc || (rc = docdb_get(d, snap, id, strlen(id), NULL, 0, &doc)))
		return rc;
	rc = ddef_parse(&doc, &dd);
	doc_release(&doc);
	if (rc)
		return rc;
	if ((v = ddef_view(&dd, view))) {
		memcpy(out->sig, v->sig, 16);
		memcpy(out->hex, v->hex, sizeof(out->hex));
		out->reduce = v->reduce;
		v->reduce = NULL;
	}
	ddef_release(&dd);
	return v ? 0 : BARREL_E_NOTFOUND;
}

/* Was the index built with this collation? (else it is being rebuilt
 * and reads as empty) */
static bool state_current(const struct vstate *st)
{
	return !strcmp(st->coll, collate_version());
}

static int state_now(struct view_indexer *vi, const struct vref *r,
		     struct vstate *st, uint64_t *db_seq)
{
	struct bsnap *snap;
	int rc = bdb_snapshot(vi->db, &snap);

	if (rc)
		return rc;
	if (db_seq)
		*db_seq = bsnap_seq(snap);
	rc = state_read(snap, vi->t_state, r->sig, st);
	bsnap_release(snap);
	return rc;
}

/* Wait until r's index reaches target (CouchDB's update=true). */
static int view_wait(struct view_indexer *vi, const struct vref *r,
		     uint64_t target, unsigned timeout_ms)
{
	struct timespec ts;
	struct vstate st;

	deadline_in(&ts, timeout_ms);
	for (;;) {
		uint64_t gen;
		int rc, w = 0;

		pthread_mutex_lock(&vi->lock);
		gen = vi->gen;
		pthread_mutex_unlock(&vi->lock);
		rc = state_now(vi, r, &st, NULL);
		if (rc == 0 && (st.flags & STATE_BROKEN))
			return 0;
		if (rc == 0 && st.seq >= target && state_current(&st))
			return 0;
		if (rc && rc != BARREL_E_NOTFOUND && rc != BARREL_E_VERSION)
			return rc;
		pthread_mutex_lock(&vi->lock);
		if (vi->idle) {            /* an idle indexer waits for this */
			vi->kicked = true;
			pthread_cond_broadcast(&vi->cond);
		}
		while (vi->gen == gen && w != ETIMEDOUT)
			w = pthread_cond_timedwait(&vi->cond, &vi->lock, &ts);
		pthread_mutex_unlock(&vi->lock);
		if (w == ETIMEDOUT)
			return -ETIMEDOUT;
	}
}

/* A key range of the index: lo <= k < hi (or <= hi). */
struct qrange {
	struct bbuf lo;
	struct bbuf hi;
	bool has_lo;
	bool has_hi;
	bool hi_incl;
	bool empty;                    /* the bounds cross: no rows */
};

static void range_release(struct qrange *r)
{
	bbuf_release(&r->lo);
	bbuf_release(&r->hi);
}

/* Append the collation encoding of JSON text s to b. */
static int enc_text(struct bbuf *b, const char *s)
{
	struct json_object *o;
	struct collate_buf c;
	int rc = 0;
	enum json_tokener_error e;

	if (!s)
		return BARREL_E_INVALID;
	o = json_tokener_parse_verbose(s, &e);
	if (e != json_tokener_success)
		return BARREL_E_BADJSON;
	collate_buf_init(&c);
	rc = collate_key_append(&c, o);
	if (!rc)
		rc = bbuf_add(b, c.data, c.len);
	collate_buf_release(&c);
	json_object_put(o);
	return rc;
}

static const uint8_t MAX_DUP[DUP_SUFFIX + 1] = { 0, 0xff, 0xff, 0xff, 0xff, 0 };
static const uint8_t KEY_END = 0xff;   /* above every doc id byte */

/* Every row of one key. */
static int range_key(struct qrange *r, const char *key)
{
	int rc = enc_text(&r->lo, key);

	if (!rc)
		rc = bbuf_add(&r->hi, r->lo.p, r->lo.len);
	if (!rc)
		rc = bbuf_add(&r->hi, &KEY_END, 1);
	r->has_lo = r->has_hi = true;
	return rc;
}

/* The upper bound "key (and docid), inclusive or not". */
static int bound_high(struct qrange *r, const char *key, const char *docid,
		      bool incl)
{
	int rc = enc_text(&r->hi, key);

	r->has_hi = true;
	if (rc || !incl)
		return rc ? rc : (docid ? bbuf_add(&r->hi, docid, strlen(docid)) : 0);
	if (!docid)
		return bbuf_add(&r->hi, &KEY_END, 1);
	r->hi_incl = true;
	if ((rc = bbuf_add(&r->hi, docid, strlen(docid))))
		return rc;
	return bbuf_add(&r->hi, MAX_DUP, DUP_SUFFIX);
}

/* The lower bound "key (and docid), inclusive or not". */
static int bound_low(struct qrange *r, const char *key, const char *docid,
		     bool incl)
{
	int rc = enc_text(&r->lo, key);

	r->has_lo = true;
	if (rc)
		return rc;
	if (incl)
		return docid ? bbuf_add(&r->lo, docid, strlen(docid)) : 0;
	if (!docid)
		return bbuf_add(&r->lo, &KEY_END, 1);
	if ((rc = bbuf_add(&r->lo, docid, strlen(docid))))
		return rc;
	return bbuf_add(&r->lo, MAX_DUP, sizeof(MAX_DUP));
}

/*
 * Bounds that cross: BARREL_E_INVALID when the keys themselves are in
 * the wrong order for the direction (CouchDB: reverse them), else (equal
 * keys, emptied by the doc ids or inclusive_end=false) *empty, as
 * CouchDB answers no rows.
 */
static int keys_reversed(const struct view_query *q, bool *empty)
{
	struct bbuf a = { 0 }, b = { 0 };
	int rc = enc_text(&a, q->startkey), cmp;

	if (!rc)
		rc = enc_text(&b, q->endkey);
	if (!rc) {
		cmp = collate_bytes_cmp((const uint8_t *)a.p, a.len,
					(const uint8_t *)b.p, b.len);
		if (q->descending ? cmp < 0 : cmp > 0)
			rc = BARREL_E_INVALID;
		else
			*empty = true;
	}
	bbuf_release(&a);
	bbuf_release(&b);
	return rc;
}

/* startkey/endkey (with their doc ids) as a range; descending swaps. */
static int range_bounds(struct qrange *r, const struct view_query *q)
{
	int rc = 0;

	if (!q->descending) {
		if (q->startkey)
			rc = bound_low(r, q->startkey, q->startkey_docid, true);
		if (!rc && q->endkey)
			rc = bound_high(r, q->endkey, q->endkey_docid,
					q->inclusive_end);
	} else {
		if (q->startkey)
			rc = bound_high(r, q->startkey, q->startkey_docid, true);
		if (!rc && q->endkey)
			rc = bound_low(r, q->endkey, q->endkey_docid,
				       q->inclusive_end);
	}
	if (!rc && r->has_lo && r->has_hi &&
	    collate_bytes_cmp((const uint8_t *)r->lo.p, r->lo.len,
			      (const uint8_t *)r->hi.p, r->hi.len) > 0)
		rc = keys_reversed(q, &r->empty);
	return rc;
}

/* The ranges a query reads, in order. */
static int ranges_build(const struct view_query *q, struct qrange **out,
			size_t *n)
{
	struct json_object *keys = NULL;
	size_t cnt = 1;
	int rc = 0;

	if (q->keys) {
		keys = json_tokener_parse(q->keys);
		if (!keys || !json_object_is_type(keys, json_type_array)) {
			json_object_put(keys);
			return BARREL_E_BADJSON;
		}
		cnt = json_object_array_length(keys);
	}
	if (!(*out = calloc(cnt ? cnt : 1, sizeof(**out)))) {
		json_object_put(keys);
		return -ENOMEM;
	}
	*n = cnt;
	for (size_t i = 0; keys && i < cnt && !rc; i++)
		rc = range_key(&(*out)[i], json_object_to_json_string_ext(
			json_object_array_get_idx(keys, i), JSON_C_TO_STRING_PLAIN));
	if (!keys)
		rc = q->key ? range_key(&(*out)[0], q->key) : range_bounds(&(*out)[0], q);
	json_object_put(keys);
	return rc;
}

/* What a reduce query accumulates for the group being read. */
struct group {
	bool open;
	bool skipped;                  /* counted by skip, not reduced */
	struct bbuf ident;             /* encoded prefix that names it */
	struct bbuf keytext;           /* its key, JSON */
	struct bbuf rows;              /* u32 len + text: key, id, value */
	size_t nrows;
	char **part;                   /* reductions of full chunks */
	size_t *partlen;
	size_t npart;
	size_t cap;
};

struct qctx {
	struct view_indexer *vi;
	struct bsnap *snap;
	const struct view_query *q;
	view_row_cb cb;
	void *arg;
	struct view_result *res;
	uint32_t t_keys;
	uint64_t skip;                 /* rows still to skip */
	uint64_t left;                 /* rows still to deliver */
	bool done;                     /* the limit is reached */
	struct bbuf key, val, doc;     /* NUL-terminated copies for rows */
	/* reduce */
	bool reduce;
	struct mapjs *m;
	int fn;
	unsigned level;                /* group_level, or 0 */
	bool exact;                    /* group=true */
	struct group g;
};

static int deliver(struct qctx *qc, const struct view_row *row)
{
	int rc = qc->cb(qc->arg, row);

	qc->res->rows++;
	if (--qc->left == 0)
		qc->done = true;
	return rc;
}

/* The document of a row (include_docs): the row's, or the one its value
 * names by "_id" (and "_rev"), CouchDB's linked documents. */
static int doc_fetch(struct qctx *qc, const char *id, size_t idlen,
		     const char *val, const char **out, size_t *outlen)
{
	struct json_object *v = val[0] == '{' && strstr(val, "\"_id\"")
				? json_tokener_parse(val) : NULL;
	struct json_object *jid, *jrev;
	struct rev rev, *prev = NULL;
	struct doc doc;
	int rc;

	if (v && json_object_object_get_ex(v, "_id", &jid) &&
	    json_object_is_type(jid, json_type_string)) {
		id = json_object_get_string(jid);
		idlen = (size_t)json_object_get_string_len(jid);
		if (json_object_object_get_ex(v, "_rev", &jrev) &&
		    json_object_is_type(jrev, json_type_string) &&
		    !rev_parse(json_object_get_string(jrev),
			       (size_t)json_object_get_string_len(jrev), &rev))
			prev = &rev;
	}
	*out = NULL;
	*outlen = 0;
	rc = docdb_get(qc->vi->d, qc->snap, id, idlen, prev, 0, &doc);
	json_object_put(v);
	if (rc)
		return rc == BARREL_E_NOTFOUND ? 0 : rc;
	qc->doc.len = 0;
	if (!(rc = doc_json_text(&doc, DOC_JSON_META | DOC_JSON_ATTS,
				 &qc->doc))) {
		*out = qc->doc.p;          /* NUL-terminated, as bbufs are */
		*outlen = qc->doc.len;
	}
	doc_release(&doc);
	return rc;
}

int view_row_members(struct bbuf *b, const struct view_row *row)
{
	int rc = 0;

	if (row->id && !(rc = bbuf_adds(b, "\"id\":")) &&
	    !(rc = bbuf_add_jstr(b, row->id, row->idlen)))
		rc = bbuf_adds(b, ",");
	if (!rc && !(rc = bbuf_adds(b, "\"key\":")) &&
	    !(rc = bbuf_add(b, row->key, row->keylen)) &&
	    !(rc = bbuf_adds(b, ",\"value\":")))
		rc = bbuf_add(b, row->value, row->valuelen);
	return rc;
}

/* One index entry as a map row. */
static int map_entry(struct qctx *qc, const struct bentry *e)
{
	struct view_row row = { 0 };
	const char *k, *v;
	size_t enclen, kl, vl;
	int rc = ikey_split(e->key, e->klen, &enclen, &row.id, &row.idlen);

	if (!rc)
		rc = row_split(e->val, e->vlen, &k, &kl, &v, &vl);
	if (rc || qc->skip) {
		qc->skip -= rc ? 0 : 1;
		return rc;
	}
	qc->key.len = qc->val.len = 0;
	if ((rc = bbuf_add(&qc->key, k, kl)) || (rc = bbuf_add(&qc->val, v, vl)))
		return rc;
	row.key = (const char *)qc->key.p;
	row.keylen = kl;
	row.value = (const char *)qc->val.p;
	row.valuelen = vl;
	if (qc->q->include_docs &&
	    (rc = doc_fetch(qc, row.id, row.idlen, row.value, &row.doc,
			    &row.doclen)))
		return rc;
	return deliver(qc, &row);
}

/* ---- reduce rows ---- */

static int group_part(struct group *g, char *s, size_t n)
{
	if (g->npart == g->cap) {
		size_t cap = g->cap ? 2 * g->cap : 8;
		char **p = realloc(g->part, cap * sizeof(*p));
		size_t *l = p ? realloc(g->partlen, cap * sizeof(*l)) : NULL;

		if (p)
			g->part = p;
		if (!p || !l) {
			free(s);
			return -ENOMEM;
		}
		g->partlen = l;
		g->cap = cap;
	}
	g->part[g->npart] = s;
	g->partlen[g->npart++] = n;
	return 0;
}

static void group_parts_free(struct group *g)
{
	for (size_t i = 0; i < g->npart; i++)
		free(g->part[i]);
	g->npart = 0;
}

static void group_release(struct group *g)
{
	group_parts_free(g);
	free(g->part);
	free(g->partlen);
	bbuf_release(&g->ident);
	bbuf_release(&g->keytext);
	bbuf_release(&g->rows);
}

static const char *rows_text(const uint8_t **p, size_t *len)
{
	const char *s = (const char *)*p + 4;

	*len = get32(*p);
	*p += 4 + *len + 1;
	return s;
}

/* A reduce function that throws, runs away, does not compile or
 * outgrows its limits is the view's fault, not the query's. */
static int fn_error(int rc)
{
	if (rc == BARREL_E_INVALID || rc == BARREL_E_TOOBIG ||
	    rc == -ETIMEDOUT)
		return BARREL_E_FUNCTION;
	return rc;
}

static int reduce_call(struct qctx *qc, const struct mapjs_row *r, size_t n,
		       bool rereduce, char **out, size_t *outlen)
{
	int rc = fn_error(mapjs_reduce(qc->m, qc->fn, r, n, rereduce, out,
				       outlen));

	if (rc == BARREL_E_FUNCTION)
		barrel_log(BLOG_WARN, "a reduce function failed: %s",
			   mapjs_errmsg(qc->m));
	return rc;
}

/* Reduce the rows collected (rereduce false) into one partial. */
static int group_chunk(struct qctx *qc)
{
	struct group *g = &qc->g;
	struct mapjs_row *r = calloc(g->nrows ? g->nrows : 1, sizeof(*r));
	const uint8_t *p = (const uint8_t *)g->rows.p;
	char *out;
	size_t outlen;
	int rc;

	if (!r)
		return -ENOMEM;
	for (size_t i = 0; i < g->nrows; i++) {
		r[i].key = rows_text(&p, &r[i].keylen);
		r[i].id = rows_text(&p, &r[i].idlen);
		r[i].value = rows_text(&p, &r[i].valuelen);
	}
	rc = reduce_call(qc, r, g->nrows, false, &out, &outlen);
	free(r);
	g->rows.len = 0;
	g->nrows = 0;
	return rc ? rc : group_part(g, out, outlen);
}

/* Rereduce the partials, REDUCE_CHUNK at a time, down to one. */
static int group_fold(struct qctx *qc)
{
	struct group *g = &qc->g;
	int rc = 0;

	while (!rc && g->npart > 1) {
		size_t n = g->npart < REDUCE_CHUNK ? g->npart : REDUCE_CHUNK;
		struct mapjs_row *r = calloc(n, sizeof(*r));
		char *out;
		size_t outlen;

		if (!r)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++) {
			r[i].value = g->part[g->npart - n + i];
			r[i].valuelen = g->partlen[g->npart - n + i];
		}
		rc = reduce_call(qc, r, n, true, &out, &outlen);
		free(r);
		for (size_t i = 0; i < n; i++)
			free(g->part[--g->npart]);
		if (!rc)
			rc = group_part(g, out, outlen);
	}
	return rc;
}

/* Close the group being read: reduce it and deliver its row. */
static int group_finish(struct qctx *qc)
{
	struct group *g = &qc->g;
	struct view_row row = { 0 };
	int rc = 0;

	if (!g->open)
		return 0;
	g->open = false;
	if (g->skipped)
		return 0;
	if (g->nrows)
		rc = group_chunk(qc);
	if (!rc)
		rc = group_fold(qc);
	if (!rc && g->npart == 1) {
		row.key = (const char *)g->keytext.p;
		row.keylen = g->keytext.len;
		row.value = g->part[0];
		row.valuelen = g->partlen[0];
		rc = deliver(qc, &row);
	}
	group_parts_free(g);
	return rc;
}

/* The prefix of an encoded key that names its group. */
static int group_ident(const struct qctx *qc, const uint8_t *enc,
		       size_t enclen, size_t *n)
{
	size_t p = 1;

	if (!qc->level) {
		*n = qc->exact ? enclen : 0;
		return 0;
	}
	if (enc[0] != COLLATE_ARRAY) {
		*n = enclen;
		return 0;
	}
	for (unsigned i = 0; i < qc->level && p < enclen &&
			     enc[p] != COLLATE_END; i++) {
		size_t l;
		int rc = collate_key_len(enc + p, enclen - p, &l);

		if (rc)
			return rc;
		p += l;
	}
	*n = p;
	return 0;
}

/* The key JSON of a group: null, the key, or its first level elements. */
static int group_key(struct qctx *qc, const char *key, size_t keylen)
{
	struct json_object *k, *a;
	const char *t;
	int rc;

	qc->g.keytext.len = 0;
	if (!qc->level && !qc->exact)
		return bbuf_add(&qc->g.keytext, "null", 4);
	qc->key.len = 0;
	if ((rc = bbuf_add(&qc->key, key, keylen)))       /* NUL-terminated */
		return rc;
	k = qc->level ? json_tokener_parse((const char *)qc->key.p) : NULL;
	if (!k || !json_object_is_type(k, json_type_array) ||
	    json_object_array_length(k) <= qc->level) {
		json_object_put(k);
		return bbuf_add(&qc->g.keytext, key, keylen);
	}
	if (!(a = json_object_new_array())) {
		json_object_put(k);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < qc->level; i++)
		json_object_array_add(a, json_object_get(
			json_object_array_get_idx(k, i)));
	t = json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN |
					   JSON_C_TO_STRING_NOSLASHESCAPE);
	rc = bbuf_add(&qc->g.keytext, t, strlen(t));
	json_object_put(a);
	json_object_put(k);
	return rc;
}

static int group_start(struct qctx *qc, const uint8_t *ident, size_t n,
		       const char *key, size_t keylen)
{
	struct group *g = &qc->g;
	int rc;

	g->open = true;
	g->skipped = qc->skip > 0;
	if (g->skipped)
		qc->skip--;
	g->ident.len = 0;
	if ((rc = bbuf_add(&g->ident, ident, n)))
		return rc;
	return g->skipped ? 0 : group_key(qc, key, keylen);
}

static int rows_add(struct bbuf *b, const char *s, size_t n)
{
	int rc = vbuf_u32(b, (uint32_t)n);

	return rc ? rc : bbuf_add(b, s, n);
}

/* One index entry into the reduction of its group. */
static int reduce_entry(struct qctx *qc, const struct bentry *e)
{
	struct group *g = &qc->g;
	const char *id, *k, *v;
	size_t enclen, idlen, kl, vl, n;
	int rc = ikey_split(e->key, e->klen, &enclen, &id, &idlen);

	if (!rc)
		rc = row_split(e->val, e->vlen, &k, &kl, &v, &vl);
	if (!rc)
		rc = group_ident(qc, e->key, enclen, &n);
	if (rc)
		return rc;
	if (!g->open || n != g->ident.len || memcmp(g->ident.p, e->key, n)) {
		if ((rc = group_finish(qc)) || qc->done)
			return rc;
		if ((rc = group_start(qc, e->key, n, k, kl)))
			return rc;
	}
	if (g->skipped)
		return 0;
	/* each text is followed by a NUL byte of its own (rows_text) */
	if ((rc = rows_add(&g->rows, k, kl)) || (rc = bbuf_add(&g->rows, "", 1)) ||
	    (rc = rows_add(&g->rows, id, idlen)) || (rc = bbuf_add(&g->rows, "", 1)) ||
	    (rc = rows_add(&g->rows, v, vl)) || (rc = bbuf_add(&g->rows, "", 1)))
		return rc;
	return ++g->nrows == REDUCE_CHUNK ? group_chunk(qc) : 0;
}

/* ---- running a query ---- */

static int scan_range(struct qctx *qc, const struct qrange *r)
{
	unsigned flags = (qc->q->descending ? BCURSOR_REVERSE : 0) |
			 (r->hi_incl ? BCURSOR_END_INCLUSIVE : 0);
	struct bcursor *c = NULL;
	struct bentry e;
	int rc;

	if (r->empty)
		return 0;
	rc = bsnap_scan(qc->snap, qc->t_keys, r->has_lo ? r->lo.p : NULL,
			r->has_lo ? r->lo.len : 0, r->has_hi ? r->hi.p : NULL,
			r->has_hi ? r->hi.len : 0, flags, &c);

	while (!rc && !qc->done && (rc = bcursor_next(c, &e)) == 1)
		rc = qc->reduce ? reduce_entry(qc, &e) : map_entry(qc, &e);
	if (c)
		bcursor_free(c);
	return rc;                     /* an error, or cb's non-zero return */
}

/* Rows before the range (ascending) or after it (descending). */
static int count_offset(struct qctx *qc, const struct qrange *r)
{
	struct bcursor *c = NULL;
	struct bentry e;
	int rc = 0;

	if (!qc->q->descending && r->has_lo)
		rc = bsnap_scan(qc->snap, qc->t_keys, NULL, 0, r->lo.p,
				r->lo.len, 0, &c);
	else if (qc->q->descending && r->has_hi)
		rc = bsnap_scan(qc->snap, qc->t_keys, r->hi.p, r->hi.len, NULL,
				0, 0, &c);
	while (!rc && c && (rc = bcursor_next(c, &e)) == 1) {
		rc = 0;
		if (!(qc->q->descending && r->hi_incl && e.klen == r->hi.len &&
		      !memcmp(e.key, r->hi.p, e.klen)))
			qc->res->offset++;
	}
	if (c)
		bcursor_free(c);
	return rc < 0 ? rc : 0;
}

/* Check the options against the view; set up reducing. */
static int query_setup(struct qctx *qc, const struct vref *r)
{
	const struct view_query *q = qc->q;
	bool grouping = q->group || q->group_level;
	int fn, rc;

	qc->reduce = q->reduce == VIEW_REDUCE_TRUE ||
		     (q->reduce == VIEW_REDUCE_AUTO && r->reduce);
	if ((q->reduce == VIEW_REDUCE_TRUE && !r->reduce) ||
	    (q->key && q->keys) || (grouping && !qc->reduce) ||
	    (qc->reduce && q->include_docs) ||
	    (qc->reduce && q->keys && !grouping))
		return BARREL_E_INVALID;
	qc->skip = q->skip;
	qc->left = q->limit;
	qc->done = q->limit == 0;
	if (!qc->reduce)
		return 0;
	qc->level = q->group_level;
	qc->exact = q->group && !q->group_level;
	if ((rc = mapjs_new(NULL, &qc->m)))
		return rc;
	fn = mapjs_add_reduce(qc->m, r->reduce, strlen(r->reduce));
	qc->fn = fn;
	return fn < 0 ? fn_error(fn) : 0;
}

static int query_run(struct qctx *qc)
{
	struct qrange *rs = NULL;
	size_t n = 0;
	int rc = ranges_build(qc->q, &rs, &n);

	if (!rc && qc->q->offset && !qc->reduce && n)
		rc = count_offset(qc, &rs[0]);
	for (size_t i = 0; i < n && !rc && !qc->done; i++) {
		rc = scan_range(qc, &rs[i]);
		if (!rc && qc->reduce && qc->q->keys)
			rc = group_finish(qc);
	}
	if (!rc && qc->reduce && !qc->done)
		rc = group_finish(qc);
	for (size_t i = 0; rs && i < n; i++)
		range_release(&rs[i]);
	free(rs);
	return rc;
}

static void qctx_release(struct qctx *qc)
{
	bbuf_release(&qc->key);
	bbuf_release(&qc->val);
	bbuf_release(&qc->doc);
	group_release(&qc->g);
	mapjs_free(qc->m);
	if (qc->snap)
		bsnap_release(qc->snap);
}

/* Read r's state and table from qc->snap; 1 when it has no index yet. */
static int query_index(struct qctx *qc, const struct vref *r)
{
	char name[64];
	struct vstate st;
	int rc = state_read(qc->snap, qc->vi->t_state, r->sig, &st);

	if (rc == BARREL_E_NOTFOUND || rc == BARREL_E_VERSION ||
	    (rc == 0 && !state_current(&st)))
		return 1;                  /* not (re)built yet */
	if (rc)
		return rc;
	if (st.flags & STATE_BROKEN)
		return BARREL_E_FUNCTION;
	qc->res->update_seq = st.seq;
	qc->res->total_rows = st.rows;
	table_name(name, sizeof(name), r->hex, "keys");
	rc = bdb_table(qc->vi->db, name, &qc->t_keys);
	return rc == BARREL_E_NOTFOUND ? 1 : rc;
}

void view_query_init(struct view_query *q)
{
	memset(q, 0, sizeof(*q));
	q->inclusive_end = true;
	q->limit = UINT64_MAX;
}

int view_query(struct view_indexer *vi, const char *ddoc, const char *view,
	       const struct view_query *q, view_row_cb cb, void *arg,
	       struct view_result *res)
{
	struct view_result own;
	struct qctx qc = { .vi = vi, .q = q, .cb = cb, .arg = arg };
	struct vref r = { 0 };
	int rc;

	qc.res = res ? res : &own;
	memset(qc.res, 0, sizeof(*qc.res));
	rc = bdb_snapshot(vi->db, &qc.snap);
	if (!rc)
		rc = view_resolve(vi->d, qc.snap, ddoc, view, &r);
	if (!rc)
		qc.res->db_seq = bsnap_seq(qc.snap);
	if (!rc && q->update == VIEW_UPDATE_TRUE) {
		bsnap_release(qc.snap);
		qc.snap = NULL;
		rc = view_wait(vi, &r, qc.res->db_seq, q->timeout_ms ?
			       q->timeout_ms : VIEW_DEFAULT_TIMEOUT_MS);
		if (!rc)
			rc = bdb_snapshot(vi->db, &qc.snap);
	}
	if (!rc)
		rc = query_setup(&qc, &r);
	if (!rc && (rc = query_index(&qc, &r)) == 1)
		rc = 0;                    /* no index yet: no rows */
	else if (!rc)
		rc = query_run(&qc);
	qc.res->reduced = qc.reduce;
	free(r.reduce);
	qctx_release(&qc);
	return rc;
}

/* ---- 7. status ---- */

int view_status(struct view_indexer *vi, const char *ddoc, const char *view,
		struct view_info *out)
{
	struct bsnap *snap;
	struct vstate st;
	struct vref r;
	int rc = bdb_snapshot(vi->db, &snap);

	memset(out, 0, sizeof(*out));
	if (rc)
		return rc;
	out->db_seq = bsnap_seq(snap);
	rc = view_resolve(vi->d, snap, ddoc, view, &r);
	if (!rc) {
		memcpy(out->sig, r.hex, sizeof(out->sig));
		free(r.reduce);
		rc = state_read(snap, vi->t_state, r.sig, &st);
	}
	bsnap_release(snap);
	if (rc)
		return rc == BARREL_E_NOTFOUND && out->sig[0] ? 0 : rc;
	out->exists = true;
	out->broken = st.flags & STATE_BROKEN;
	out->seq = st.seq;
	out->total_rows = st.rows;
	out->mapped = st.mapped;
	out->errors = st.errors;
	memcpy(out->last_error, st.err, sizeof(out->last_error));
	memcpy(out->last_error_id, st.errid, sizeof(out->last_error_id));
	return 0;
}
