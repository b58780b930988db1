#include "config.h"

/*
 * The document layer (docdb.h) on the engine's tables (FORMAT.md
 * "Documents"). A document record holds the revision tree and the
 * winner's revision record, so reading a document is one lookup; every
 * other kept body is in "revs" under a body number from a counter, so
 * that a bulk's bodies append there in order. DESIGN.md "Documents"
 * gives the write steps that docdb_put() follows.
 */

#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/bbuf.h"
#include "engine/docdb_i.h"
#include "engine/log.h"

#define DOCREC_VERSION 2
#define DOCREC_DELETED 0x01
#define DOCREC_HEAD 6u                /* version, flags, tree_len */
#define REVS_KEY 8u                   /* body number, big-endian */
/* A body_ref with this bit is the address of a retained "docs" record
 * whose winner is the body; without it, a body number in "revs". */
#define REF_RETAINED (1ull << 63)
#define NEXT_BODY "next_body"         /* meta: the next body number */
#define DIGEST_STACK 8u               /* attachments hashed without malloc */
#define DEFAULT_TYPE "application/octet-stream"
#define DOC_ROWS_SKIP_DELETED (1u << 16)   /* all_docs without DELETED */

static const char *const table_names[] = {
	"docs", "revs", "atts", "local", "meta",
};

/* ---- little-endian fields ---- */

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int put_fail(struct doc_put *r, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int put_fail(struct doc_put *r, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
	return rc;
}

/* ---- revision records ---- */

void doc_atts_free(struct doc_att *atts, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(atts[i].name);
		free(atts[i].content_type);
	}
	free(atts);
}

int doc_att_copy(struct doc_att *dst, const struct doc_att *src)
{
	*dst = *src;
	dst->name = strdup(src->name);
	dst->content_type = strdup(src->content_type ? src->content_type
						     : DEFAULT_TYPE);
	if (!dst->name || !dst->content_type) {
		free(dst->name);
		free(dst->content_type);
		dst->name = dst->content_type = NULL;
		return -ENOMEM;
	}
	return 0;
}

static int revrec_corrupt(const char *why)
{
	barrel_log(BLOG_ERR, "corrupt revision record: %s", why);
	return BARREL_E_CORRUPT;
}

/* A length-prefixed string at *p into a new NUL-terminated copy. */
static int take_str(const uint8_t **p, const uint8_t *end, char **out)
{
	size_t n;

	if (end - *p < 2)
		return revrec_corrupt("truncated attachment");
	n = (size_t)get_le(*p, 2);
	if ((size_t)(end - *p - 2) < n)
		return revrec_corrupt("truncated attachment string");
	if (!(*out = strndup((const char *)*p + 2, n)))
		return -ENOMEM;
	*p += 2 + n;
	return 0;
}

static int take_att(const uint8_t **p, const uint8_t *end, struct doc_att *a)
{
	int rc;

	if ((rc = take_str(p, end, &a->name)) ||
	    (rc = take_str(p, end, &a->content_type)))
		return rc;
	if (end - *p < 40)
		return revrec_corrupt("truncated attachment fields");
	a->length = get_le(*p, 8);
	a->revpos = get_le(*p + 8, 8);
	a->blob = get_le(*p + 16, 8);
	memcpy(a->md5, *p + 24, 16);
	*p += 40;
	return 0;
}

int revrec_decode(const void *buf, size_t len, struct revrec *out)
{
	const uint8_t *p = buf, *end = p + len;
	uint64_t natt;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (len < REVREC_HEAD || p[0] != REVREC_VERSION ||
	    (p[1] & ~REVREC_DELETED))
		return revrec_corrupt("bad header");
	out->deleted = p[1] & REVREC_DELETED;
	out->time_ms = (int64_t)get_le(p + 2, 8);
	natt = get_le(p + 10, 4);
	if (natt > (len - REVREC_HEAD) / 44)
		return revrec_corrupt("attachment count over the record");
	p += REVREC_HEAD;
	if (natt && !(out->atts = calloc(natt, sizeof(*out->atts))))
		return -ENOMEM;
	for (out->natts = 0; out->natts < natt && !rc; out->natts++)
		rc = take_att(&p, end, &out->atts[out->natts]);
	if (rc) {
		revrec_release(out);
		return rc;
	}
	out->body = (const char *)p;
	out->len = (size_t)(end - p);
	return 0;
}

void revrec_release(struct revrec *r)
{
	doc_atts_free(r->atts, r->natts);
	memset(r, 0, sizeof(*r));
}

/* A revision record to write; borrowed. atts sorted by name. */
struct revrec_src {
	bool deleted;
	int64_t time_ms;
	const struct doc_att *atts;
	size_t natts;
	const char *body;
	size_t len;
};

/* Bytes of src's record: BARREL_E_INVALID for a name or content type
 * over 64 KiB, BARREL_E_TOOBIG over BDB_MAX_VALUE. */
static int revrec_size(const struct revrec_src *src, size_t *size)
{
	*size = REVREC_HEAD + src->len;
	for (size_t i = 0; i < src->natts; i++) {
		size_t nl = strlen(src->atts[i].name);
		size_t tl = strlen(src->atts[i].content_type);

		if (nl > UINT16_MAX || tl > UINT16_MAX)
			return BARREL_E_INVALID;
		*size += 44 + nl + tl;
	}
	return *size > BDB_MAX_VALUE ? BARREL_E_TOOBIG : 0;
}

/* A length-prefixed string at p; returns the byte after it. */
static uint8_t *put_str(uint8_t *p, const char *s)
{
	size_t n = strlen(s);

	put_le(p, n, 2);
	memcpy(p + 2, s, n);
	return p + 2 + n;
}

/* Write src's record up to its body at p; returns where the body goes. */
static uint8_t *revrec_write_meta(const struct revrec_src *src, uint8_t *p)
{
	p[0] = REVREC_VERSION;
	p[1] = src->deleted ? REVREC_DELETED : 0;
	put_le(p + 2, (uint64_t)src->time_ms, 8);
	put_le(p + 10, src->natts, 4);
	p += REVREC_HEAD;
	for (size_t i = 0; i < src->natts; i++) {
		const struct doc_att *a = &src->atts[i];

		p = put_str(put_str(p, a->name), a->content_type);
		put_le(p, a->length, 8);
		put_le(p + 8, a->revpos, 8);
		put_le(p + 16, a->blob, 8);
		memcpy(p + 24, a->md5, 16);
		p += 40;
	}
	return p;
}

/* Write src's record at p (revrec_size() bytes). */
static void revrec_write(const struct revrec_src *src, uint8_t *p)
{
	memcpy(revrec_write_meta(src, p), src->body, src->len);
}

/* ---- document records ---- */

/* A document record split into its parts (borrowed from the value). */
struct docrec {
	bool deleted;
	const uint8_t *tree;
	size_t tree_len;
	const uint8_t *winner;        /* the winner's revision record */
	size_t winner_len;
};

static int docrec_split(const void *val, size_t len, struct docrec *out)
{
	const uint8_t *p = val;

	if (len && p[0] != DOCREC_VERSION) {
		barrel_log(BLOG_ERR, "document record version %u (know %u)",
			   p[0], DOCREC_VERSION);
		return BARREL_E_VERSION;
	}
	if (len < DOCREC_HEAD || (p[1] & ~DOCREC_DELETED) ||
	    get_le(p + 2, 4) > len - DOCREC_HEAD) {
		barrel_log(BLOG_ERR, "corrupt document record: bad header");
		return BARREL_E_CORRUPT;
	}
	out->deleted = p[1] & DOCREC_DELETED;
	out->tree_len = (size_t)get_le(p + 2, 4);
	out->tree = p + DOCREC_HEAD;
	out->winner = out->tree + out->tree_len;
	out->winner_len = len - DOCREC_HEAD - out->tree_len;
	return 0;
}

/* A document record built to be put: its head (the record up to the
 * winner's body: what an edit reads), and the body. */
struct docbuf {
	uint8_t *head;                /* malloc'ed; v.head */
	struct bput_value v;          /* v.rest borrowed from the winner */
};

/* Bytes of a revision record before its body: header and attachments. */
static int revrec_meta_len(const uint8_t *rec, size_t len, size_t *meta)
{
	struct revrec rr;
	int rc = revrec_decode(rec, len, &rr);

	if (!rc)
		*meta = (size_t)((const uint8_t *)rr.body - rec);
	revrec_release(&rr);
	return rc;
}

/*
 * The document record of t and the winner's revision record into out: wlen
 * bytes at winner, or (winner NULL) src's record of wlen bytes. The body
 * is borrowed from winner or src, not copied.
 */
static int docrec_build(const struct revtree *t, const uint8_t *winner,
			size_t wlen, const struct revrec_src *src,
			struct docbuf *out)
{
	size_t tlen = revtree_encoded_size(t), meta;
	uint8_t *p;
	int rc;

	if (DOCREC_HEAD + tlen + wlen > BDB_MAX_VALUE)
		return BARREL_E_TOOBIG;
	if (!winner)
		meta = wlen - src->len;
	else if ((rc = revrec_meta_len(winner, wlen, &meta)))
		return rc;
	if (!(p = malloc(DOCREC_HEAD + tlen + meta)))
		return -ENOMEM;
	p[0] = DOCREC_VERSION;
	p[1] = revtree_is_deleted(t) ? DOCREC_DELETED : 0;
	put_le(p + 2, tlen, 4);
	if ((rc = revtree_encode_to(t, p + DOCREC_HEAD))) {
		free(p);
		return rc;
	}
	if (winner)
		memcpy(p + DOCREC_HEAD + tlen, winner, meta);
	else
		revrec_write_meta(src, p + DOCREC_HEAD + tlen);
	out->head = p;
	out->v = (struct bput_value){
		p, DOCREC_HEAD + tlen + meta,
		winner ? winner + meta : (const uint8_t *)src->body, wlen - meta };
	return 0;
}

/* Key of body number n in "revs": big-endian, so numbers sort. */
static void revs_key(uint64_t n, uint8_t key[REVS_KEY])
{
	for (int i = 0; i < (int)REVS_KEY; i++)
		key[i] = (uint8_t)(n >> (8 * (REVS_KEY - 1 - i)));
}

/* The revision record inside a document record read into *v: moved to
 * the start of v->data (a retained record's body). */
static int retained_body(struct bval *v)
{
	struct docrec r;
	int rc = docrec_split(v->data, v->len, &r);

	if (rc) {
		bval_release(v);
		return rc;
	}
	memmove(v->data, r.winner, r.winner_len);
	v->len = r.winner_len;
	return 0;
}

/* ---- open ---- */

/* A number of "meta" from a get that returned rc into v: size bytes,
 * at least 1; *out stays as it is when the entry is absent. */
static int meta_number(int rc, struct bval *v, size_t size, uint64_t *out)
{
	if (rc == BARREL_E_NOTFOUND)
		return 0;
	if (!rc && v->len == size && get_le(v->data, (int)size) >= 1)
		*out = get_le(v->data, (int)size);
	else if (!rc)
		rc = BARREL_E_CORRUPT;
	bval_release(v);
	return rc;
}

static int read_revs_limit(struct docdb *d)
{
	struct bsnap *snap;
	struct bval v = { 0 };
	uint64_t limit = DOC_REVS_LIMIT;
	int rc = bdb_snapshot(d->db, &snap);

	if (rc)
		return rc;
	rc = bsnap_get(snap, d->t_meta, "revs_limit", 10, &v);
	bsnap_release(snap);
	rc = meta_number(rc, &v, 4, &limit);
	d->revs_limit = (uint32_t)limit;
	return rc;
}

/* Look the tables up, creating the missing ones in one commit. */
static int open_tables(struct docdb *d)
{
	uint32_t *ids[] = { &d->t_docs, &d->t_revs, &d->t_atts, &d->t_local,
			    &d->t_meta };
	struct btxn *txn;
	bool missing = false;
	int rc = 0;

	for (size_t i = 0; i < 5; i++) {
		rc = bdb_table(d->db, table_names[i], ids[i]);
		if (rc == BARREL_E_NOTFOUND)
			missing = true;
		else if (rc)
			return rc;
	}
	/* A database made before retained records gains the flag once. */
	if (!missing && bdb_table_flags(d->db, d->t_docs) & BDB_TABLE_RETAIN)
		return 0;
	if ((rc = bdb_begin(d->db, &txn)))
		return rc;
	for (size_t i = 0; i < 5 && !rc; i++)
		rc = btxn_table(txn, table_names[i], i == 0 ?
				BDB_TABLE_SEQ | BDB_TABLE_RETAIN : 0, ids[i]);
	if (rc) {
		btxn_abort(txn);
		return rc;
	}
	return btxn_commit(txn);
}

int docdb_open(struct benv *env, const char *name, bool create,
	       const struct docdb_opts *opts, struct docdb **out)
{
	struct docdb *d = calloc(1, sizeof(*d));
	int rc;

	if (!d)
		return -ENOMEM;
	if (opts)
		d->keep_bodies = opts->keep_bodies;
	if ((rc = benv_db(env, name, create, &d->db)) ||
	    (rc = open_tables(d)) || (rc = read_revs_limit(d)) ||
	    (rc = docdb_gc_attach(d->db))) {
		free(d);
		return rc;
	}
	pthread_mutex_init(&d->pool_lock, NULL);
	*out = d;
	return 0;
}

void docdb_close(struct docdb *d)
{
	if (!d)
		return;
	body_pool_free(d->spare_pool);
	pthread_mutex_destroy(&d->pool_lock);
	free(d);
}

/* The parse memory of a bulk: the one the last bulk left, or a new one.
 * Bulks in parallel each take their own. */
static int pool_take(struct docdb *d, struct body_pool **out)
{
	pthread_mutex_lock(&d->pool_lock);
	*out = d->spare_pool;
	d->spare_pool = NULL;
	pthread_mutex_unlock(&d->pool_lock);
	return *out ? 0 : body_pool_new(out);
}

/* Keep a bulk's pool for the next one (one is kept; the rest freed). */
static void pool_give(struct docdb *d, struct body_pool *pool)
{
	body_pool_reset(pool);
	pthread_mutex_lock(&d->pool_lock);
	if (!d->spare_pool) {
		d->spare_pool = pool;
		pool = NULL;
	}
	pthread_mutex_unlock(&d->pool_lock);
	body_pool_free(pool);
}

struct bdb *docdb_bdb(struct docdb *d)
{
	return d->db;
}

int docdb_history_parse(const char *s, uint32_t *keep_bodies)
{
	char *end;
	unsigned long v;

	if (!s || !strcmp(s, "all")) {
		*keep_bodies = 0;
		return 0;
	}
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || !v || v > UINT32_MAX || *s == '-')
		return BARREL_E_INVALID;
	*keep_bodies = (uint32_t)v;
	return 0;
}

int docdb_set_revs_limit(struct docdb *d, uint32_t limit)
{
	struct btxn *txn;
	uint8_t v[4];
	int rc;

	if (limit < 1)
		return BARREL_E_INVALID;
	if ((rc = bdb_begin(d->db, &txn)))
		return rc;
	put_le(v, limit, 4);
	rc = btxn_put(txn, d->t_meta, "revs_limit", 10, v, 4, NULL);
	if (rc) {
		btxn_abort(txn);
		return rc;
	}
	if (!(rc = btxn_commit(txn)))
		d->revs_limit = limit;
	return rc;
}

uint32_t docdb_revs_limit(struct docdb *d)
{
	return d->revs_limit;
}

bool docdb_id_valid(const char *id, size_t len)
{
	size_t dp = strlen(DOC_DESIGN_PREFIX);

	if (len == 0 || len > DOC_MAX_ID || !body_utf8_valid(id, len))
		return false;
	if (id[0] != '_')
		return true;
	return len > dp && !memcmp(id, DOC_DESIGN_PREFIX, dp);
}

/* ---- writes: preparing a request (outside the transaction) ---- */

/* What a request says, checked before the transaction. */
struct prep {
	struct body b;
	const char *id;
	size_t idlen;
	const char *text;             /* the body as stored */
	size_t tlen;
	char *owned;                  /* text when normalized */
	bool deleted;
	struct doc_att *inl;          /* "data" attachments, already blobs */
	size_t ninl;
};

static void prep_release(struct prep *p)
{
	body_release(&p->b);
	free(p->owned);
	doc_atts_free(p->inl, p->ninl);
	memset(p, 0, sizeof(*p));
}

static const char *entry_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static bool entry_true(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) &&
	       json_object_is_type(v, json_type_boolean) &&
	       json_object_get_boolean(v);
}

static uint64_t entry_u64(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_int) ||
	    json_object_get_int64(v) < 0)
		return 0;
	return (uint64_t)json_object_get_int64(v);
}

/* Store every "_attachments" entry that carries "data" as a blob. */
static int prep_inline_atts(struct docdb *d, struct doc_put *r, struct prep *p)
{
	size_t n;
	int rc;

	if (!p->b.attachments)
		return 0;
	n = (size_t)json_object_object_length(p->b.attachments);
	if (n && !(p->inl = calloc(n, sizeof(*p->inl))))
		return -ENOMEM;
	json_object_object_foreach(p->b.attachments, name, e) {
		struct json_object *data;
		struct doc_att a = { .name = name };

		if (!json_object_is_type(e, json_type_object))
			return put_fail(r, BARREL_E_INVALID,
					"attachment %.80s: not an object", name);
		if (!json_object_object_get_ex(e, "data", &data))
			continue;
		if (!json_object_is_type(data, json_type_string))
			return put_fail(r, BARREL_E_INVALID,
					"attachment %.80s: data is not a string", name);
		a.content_type = (char *)entry_str(e, "content_type");
		a.revpos = entry_u64(e, "revpos");
		rc = docdb_att_from_base64(d, json_object_get_string(data),
					   (size_t)json_object_get_string_len(data),
					   &a);
		if (rc == BARREL_E_INVALID)
			return put_fail(r, rc, "attachment %.80s: data is not base64",
					name);
		if (rc || (rc = doc_att_copy(&p->inl[p->ninl], &a)))
			return rc;
		p->ninl++;
	}
	return 0;
}

/* Parse and check one request (the part that needs no transaction). */
static int prep_request(struct docdb *d, struct body_pool *pool,
			struct doc_put *r, struct prep *p)
{
	const char *text = r->body ? r->body : "{}";
	size_t len = r->body ? r->len : 2;
	int rc;

	if (!r->body && !r->deleted)
		return put_fail(r, BARREL_E_INVALID, "no document body");
	if ((rc = body_parse_in(pool, text, len, &p->b, r->error)))
		return rc;
	p->id = r->id ? r->id : p->b.id;
	p->idlen = r->id ? r->idlen : p->b.idlen;
	if (!p->id)
		return put_fail(r, BARREL_E_INVALID, "the document has no id");
	if (!docdb_id_valid(p->id, p->idlen))
		return put_fail(r, BARREL_E_INVALID, "invalid document id");
	p->deleted = r->deleted || p->b.deleted;
	if (p->b.plain && !(r->flags & DOC_PUT_NORMALIZE)) {
		p->text = text;
		p->tlen = len;
	} else if ((rc = body_normalize(&p->b, &p->owned, &p->tlen))) {
		return rc;
	} else {
		p->text = p->owned;
	}
	if (p->tlen > BODY_MAX_LEN)
		return put_fail(r, BARREL_E_TOOBIG, "document body of %zu bytes "
				"without its attachments (limit %u)", p->tlen,
				BODY_MAX_LEN);
	if ((r->flags & DOC_PUT_REPLICATED) && !p->b.revisions && !r->parent &&
	    !p->b.has_rev)
		return put_fail(r, BARREL_E_INVALID,
				"a replicated write needs _revisions or _rev");
	return prep_inline_atts(d, r, p);
}

/* ---- writes: one document inside the transaction ---- */

/* The body numbers of one bulk: meta "next_body", read once inside the
 * transaction and written back at its end when any was taken. */
struct bodynums {
	uint64_t next;
	bool taken;
};

/* meta "next_body" (1 when absent), read once in a transaction (a bulk,
 * or a GC batch moving retained bodies). */
static int nums_load(struct btxn *txn, uint32_t t_meta,
		     struct bodynums *nums)
{
	struct bval v = { 0 };
	int rc = btxn_get(txn, t_meta, NEXT_BODY, strlen(NEXT_BODY), &v);

	*nums = (struct bodynums){ .next = 1 };
	return meta_number(rc, &v, 8, &nums->next);
}

static int nums_store(struct btxn *txn, uint32_t t_meta,
		      const struct bodynums *nums)
{
	uint8_t v[8];

	if (!nums->taken)
		return 0;
	put_le(v, nums->next, 8);
	return btxn_put(txn, t_meta, NEXT_BODY, strlen(NEXT_BODY), v, 8, NULL);
}

/* A body the policy drops: its revision and where it is. */
struct drop {
	struct rev rev;
	uint64_t body_ref;
};

/* A document being edited (DESIGN.md "Documents", write steps). */
struct edit {
	struct docdb *d;
	struct btxn *txn;
	struct doc_put *r;
	struct prep *p;
	struct bodynums *nums;
	struct revtree *tree;
	struct bval old;              /* document record before, if any */
	bool old_whole;               /* old is all of it, not only its head */
	struct docrec rec;            /* old split */
	bool have_w0;                 /* the document existed */
	struct rev w0;                /* its winner then */
	struct doc_att *atts;         /* the new revision's, sorted, owned */
	size_t natts;
	struct rev rev;               /* the new revision */
	struct drop *drop;            /* bodies the policy drops */
	size_t ndrop, capdrop;
	uint8_t *newrec;              /* the new revision's record, when it
	                                 goes to "revs" */
	size_t newrec_len;
	uint64_t ref_new, ref_w0;     /* body numbers given to the new
	                                 revision and the old winner, or 0 */
	uint64_t ref_w1;              /* of a winner that leaves "revs", or 0 */
	bool wrote;                   /* writes began: a failure now fails
	                                 the whole transaction */
};

static void edit_release(struct edit *e)
{
	revtree_free(e->tree);
	bval_release(&e->old);
	doc_atts_free(e->atts, e->natts);
	free(e->drop);
	free(e->newrec);
}

/* Step 1: the document as it is (or an empty tree for a new one): only
 * the head of its record when the cache has it (edit_whole() reads the
 * rest if the old winner's body is needed). */
static int edit_load(struct edit *e)
{
	int rc = btxn_get_head(e->txn, e->d->t_docs, e->p->id, e->p->idlen,
			       &e->old, &e->old_whole);

	if (rc == BARREL_E_NOTFOUND)
		return revtree_new(&e->tree);
	if (rc || (rc = docrec_split(e->old.data, e->old.len, &e->rec)) ||
	    (rc = revtree_decode(e->rec.tree, e->rec.tree_len, &e->tree)) ||
	    (rc = revtree_winner(e->tree, &e->w0, NULL)))
		return rc;
	e->have_w0 = true;
	return 0;
}

/* The whole old document record, when edit_load() read only its head:
 * e->rec.winner gets the old winner's body too. */
static int edit_whole(struct edit *e)
{
	int rc;

	if (e->old_whole)
		return 0;
	e->old_whole = true;
	bval_release(&e->old);
	rc = btxn_get(e->txn, e->d->t_docs, e->p->id, e->p->idlen, &e->old);
	return rc ? rc : docrec_split(e->old.data, e->old.len, &e->rec);
}

/* The raw record of body number ref in "revs" into *v; a number the
 * tree names that is not there is corruption. */
static int get_revs(struct edit *e, uint64_t ref, struct bval *v)
{
	uint8_t key[REVS_KEY];
	int rc;

	if (ref & REF_RETAINED) {
		rc = btxn_get_at(e->txn, e->d->t_docs, e->p->id, e->p->idlen,
				 ref & ~REF_RETAINED, v);
		return rc ? rc : retained_body(v);
	}
	revs_key(ref, key);
	rc = btxn_get(e->txn, e->d->t_revs, key, REVS_KEY, v);
	return rc == BARREL_E_NOTFOUND ? BARREL_E_CORRUPT : rc;
}

/* The record of a kept revision: the old winner's (inline), or body
 * number ref's. *v holds the bytes *out borrows. */
static int load_revrec(struct edit *e, const struct rev *rev, uint64_t ref,
		       struct bval *v, struct revrec *out)
{
	int rc;

	*v = (struct bval){ 0 };
	if (e->have_w0 && rev_eq(rev, &e->w0))
		return revrec_decode(e->rec.winner, e->rec.winner_len, out);
	if ((rc = get_revs(e, ref, v)))
		return rc;
	if ((rc = revrec_decode(v->data, v->len, out)))
		bval_release(v);
	return rc;
}

/* Is name usable for an attachment? UTF-8, and not '_' first (CouchDB). */
static bool att_name_valid(const char *name)
{
	size_t n = strlen(name);

	return n > 0 && n <= UINT16_MAX && name[0] != '_' &&
	       body_utf8_valid(name, n);
}

/* Add a (or replace the one of its name) in the new revision's set. */
static int set_att(struct edit *e, const struct doc_att *a)
{
	struct doc_att copy, *grown;
	size_t i;
	int rc;

	if (!att_name_valid(a->name))
		return put_fail(e->r, BARREL_E_INVALID,
				"invalid attachment name (UTF-8, not starting "
				"with '_')");
	if ((rc = doc_att_copy(&copy, a)))
		return rc;
	copy.remove = false;
	for (i = 0; i < e->natts; i++)
		if (!strcmp(e->atts[i].name, a->name))
			break;
	if (i < e->natts) {
		free(e->atts[i].name);
		free(e->atts[i].content_type);
		e->atts[i] = copy;
		return 0;
	}
	grown = realloc(e->atts, (e->natts + 1) * sizeof(*grown));
	if (!grown) {
		free(copy.name);
		free(copy.content_type);
		return -ENOMEM;
	}
	e->atts = grown;
	e->atts[e->natts++] = copy;
	return 0;
}

static void remove_att(struct edit *e, const char *name)
{
	for (size_t i = 0; i < e->natts; i++) {
		if (strcmp(e->atts[i].name, name))
			continue;
		free(e->atts[i].name);
		free(e->atts[i].content_type);
		e->atts[i] = e->atts[--e->natts];
		return;
	}
}

static const struct doc_att *find_att(const struct doc_att *atts, size_t n,
				      const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(atts[i].name, name))
			return &atts[i];
	return NULL;
}

static int att_name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct doc_att *)a)->name,
		      ((const struct doc_att *)b)->name);
}

/* One "_attachments" entry applied to the new set; base is the parent's. */
static int apply_att_entry(struct edit *e, const char *name,
			   struct json_object *o, const struct revrec *base,
			   uint64_t gen)
{
	const struct doc_att *a;
	struct doc_att t;

	if (entry_true(o, "stub")) {
		const char *dg = entry_str(o, "digest");
		uint8_t md5[16];

		a = base ? find_att(base->atts, base->natts, name) : NULL;
		if (!a || (dg && (doc_digest_parse(dg, md5) ||
				  memcmp(md5, a->md5, 16))))
			return put_fail(e->r, BARREL_E_NOTFOUND,
					"attachment stub %.80s: the parent has no such "
					"attachment", name);
		return set_att(e, a);
	}
	if ((a = find_att(e->p->inl, e->p->ninl, name))) {
		t = *a;
	} else if (entry_true(o, "follows") &&
		   (a = find_att(e->r->atts, e->r->natts, name)) && !a->remove) {
		t = *a;
	} else {
		return put_fail(e->r, BARREL_E_INVALID,
				"attachment %.80s: needs stub, data or follows",
				name);
	}
	if (!t.revpos || !(e->r->flags & DOC_PUT_REPLICATED))
		t.revpos = gen;
	return set_att(e, &t);
}

/*
 * Step 2b: the new revision's attachments: the parent's (with
 * DOC_PUT_KEEP_ATTS), then "_attachments", then req.atts; sorted by name,
 * each naming the stored blob when its content is already stored.
 */
static int resolve_atts(struct edit *e, const struct revrec *base,
			uint64_t gen)
{
	const struct doc_put *r = e->r;
	int rc = 0;

	for (size_t i = 0; base && (r->flags & DOC_PUT_KEEP_ATTS) &&
			   i < base->natts && !rc; i++)
		rc = set_att(e, &base->atts[i]);
	if (e->p->b.attachments) {
		json_object_object_foreach(e->p->b.attachments, name, o) {
			if (!rc)
				rc = apply_att_entry(e, name, o, base, gen);
		}
	}
	for (size_t i = 0; i < r->natts && !rc; i++) {
		struct doc_att t = r->atts[i];

		if (!t.name || (!t.remove && (t.blob == 0 && t.length != 0)))
			return put_fail(e->r, BARREL_E_INVALID,
					"attachment %zu has no name or content", i);
		if (t.remove) {
			remove_att(e, t.name);
			continue;
		}
		if (!t.revpos || !(r->flags & DOC_PUT_REPLICATED))
			t.revpos = gen;
		rc = set_att(e, &t);
	}
	if (rc)
		return rc;
	if (e->natts > 1)
		qsort(e->atts, e->natts, sizeof(*e->atts), att_name_cmp);
	for (size_t i = 0; i < e->natts && !rc; i++) {
		uint64_t blob;

		rc = att_find(e->d, e->txn, &e->atts[i], &blob);
		if (!rc)
			e->atts[i].blob = blob;
		else if (rc == BARREL_E_NOTFOUND)
			rc = 0;
	}
	return rc;
}

/* The nearest revision from base up (base first) whose record is kept
 * into *ri; BARREL_E_NOTFOUND when the policy dropped every one. */
static int kept_ancestor(struct edit *e, const struct rev *base,
			 struct revtree_info *ri)
{
	size_t max = revtree_count(e->tree), n = 0;
	struct rev *path = malloc((max ? max : 1) * sizeof(*path));
	int rc;

	if (!path)
		return -ENOMEM;
	rc = revtree_path(e->tree, base, path, max, &n);
	for (size_t i = 0; !rc && i < n; i++)
		if (!(rc = revtree_find(e->tree, &path[i], ri)) && ri->has_body)
			goto out_free;
	if (!rc)
		rc = BARREL_E_NOTFOUND;
out_free:
	free(path);
	return rc;
}

/*
 * Attachments from the record of base (NULL: none). When the history
 * policy dropped base's record (a stale save of an old revision), those
 * of its nearest kept ancestor, or else of the current winner: what the
 * document has now is the best guess at what the editor left alone.
 */
static int resolve_atts_from(struct edit *e, const struct rev *base,
			     uint64_t gen)
{
	struct revtree_info ri;
	struct bval v = { 0 };
	struct revrec rr;
	int rc;

	if (!base)
		return resolve_atts(e, NULL, gen);
	if ((rc = kept_ancestor(e, base, &ri)) == BARREL_E_NOTFOUND)
		rc = e->have_w0 ? revtree_find(e->tree, &e->w0, &ri)
				: BARREL_E_NOTFOUND;
	if (rc == BARREL_E_NOTFOUND)
		return resolve_atts(e, NULL, gen);
	if (rc)
		return rc;
	if ((rc = load_revrec(e, &ri.rev, ri.body_ref, &v, &rr)))
		return rc;
	rc = resolve_atts(e, &rr, gen);
	revrec_release(&rr);
	bval_release(&v);
	return rc;
}

/* The id of the edit: body_rev over the body and the new attachments. */
static int edit_rev_id(struct edit *e, const struct rev *hp)
{
	struct body_att_digest stack[DIGEST_STACK] = { { 0 } }, *dd = stack;
	int rc;

	if (e->natts > DIGEST_STACK && !(dd = calloc(e->natts, sizeof(*dd))))
		return -ENOMEM;
	for (size_t i = 0; i < e->natts; i++)
		dd[i] = (struct body_att_digest){ e->atts[i].name,
			strlen(e->atts[i].name), e->atts[i].md5,
			e->atts[i].length };
	rc = body_rev(&e->p->b, hp, e->p->deleted, dd, e->natts, &e->rev);
	if (dd != stack)
		free(dd);
	return rc;
}

/* Step 2 with DOC_PUT_BRANCH on a parent that is no longer a leaf: the
 * edit becomes a conflicting branch, grafted beside the newer ones. */
static int edit_branch(struct edit *e, const struct rev *parent)
{
	struct rev path[2];
	bool added;
	int rc;

	if ((rc = resolve_atts_from(e, parent, parent->gen + 1)) ||
	    (rc = edit_rev_id(e, parent)))
		return rc;
	path[0] = e->rev;
	path[1] = *parent;
	rc = revtree_graft(e->tree, path, 2, e->p->deleted, 0, &added);
	if (!rc && !added)
		rc = put_fail(e->r, BARREL_E_CONFLICT, "document update "
			      "conflict: the same edit was already made");
	return rc;
}

/* Step 2, new_edits=true: the parent, the new id, the edit. */
static int edit_new_rev(struct edit *e)
{
	const struct rev *parent = e->r->parent, *hp;
	bool w0_deleted = e->have_w0 && revtree_is_deleted(e->tree);
	struct revtree_info ri;
	int rc;

	if (!parent && e->p->b.has_rev)
		parent = &e->p->b.rev;
	if (e->r->flags & DOC_PUT_ON_WINNER)
		parent = e->have_w0 && !w0_deleted ? &e->w0 : NULL;
	if (parent && (revtree_find(e->tree, parent, &ri) ||
		       (!ri.is_leaf && !(e->r->flags & DOC_PUT_BRANCH))))
		return put_fail(e->r, BARREL_E_CONFLICT,
				"document update conflict: the parent is not a "
				"current revision");
	if (parent && !ri.is_leaf)
		return edit_branch(e, parent);
	if (!parent && e->have_w0 && !w0_deleted)
		return put_fail(e->r, BARREL_E_CONFLICT,
				"document update conflict: the document exists");
	/* a deleted document is recreated on its winning tombstone */
	hp = parent ? parent : e->have_w0 ? &e->w0 : NULL;
	if ((rc = resolve_atts_from(e, parent, hp ? hp->gen + 1 : 1)) ||
	    (rc = edit_rev_id(e, hp)))
		return rc;
	rc = revtree_add_edit(e->tree, parent, &e->rev, e->p->deleted, 0);
	if (rc == BARREL_E_CONFLICT)
		return put_fail(e->r, rc, "document update conflict: the same "
				"edit was already made");
	return rc;
}

/* Step 2, new_edits=false: graft the path; *added false is a no-op. */
static int edit_graft(struct edit *e, bool *added)
{
	struct rev one = e->r->parent ? *e->r->parent : e->p->b.rev;
	const struct rev *path = e->p->b.revisions ? e->p->b.revisions : &one;
	size_t n = e->p->b.revisions ? e->p->b.nrevisions : 1;
	const struct rev *base = NULL;
	struct revtree_info ri;
	int rc;

	e->rev = path[0];
	if (!revtree_find(e->tree, &path[0], &ri) && !ri.missing) {
		*added = false;
		return 0;
	}
	for (size_t i = 1; i < n && !base; i++)
		if (!revtree_find(e->tree, &path[i], &ri) && ri.has_body)
			base = &path[i];
	if ((rc = resolve_atts_from(e, base, path[0].gen)))
		return rc;
	rc = revtree_graft(e->tree, path, n, e->p->deleted, 0, added);
	if (rc == BARREL_E_CONFLICT || rc == BARREL_E_INVALID)
		return put_fail(e->r, rc, "_revisions do not fit the document's "
				"history");
	return rc;
}

/* Steps 3 and 4: stem to revs_limit and prune bodies by the policy; the
 * bodies dropped are listed in e->drop. */
static int note_drop(void *arg, const struct rev *rev, uint64_t body_ref)
{
	struct edit *e = arg;

	if (e->ndrop == e->capdrop) {
		size_t cap = e->capdrop ? e->capdrop * 2 : 8;
		struct drop *grown = realloc(e->drop, cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		e->drop = grown;
		e->capdrop = cap;
	}
	e->drop[e->ndrop++] = (struct drop){ *rev, body_ref };
	return 0;
}

static int edit_policy(struct edit *e)
{
	int rc = revtree_stem(e->tree, e->d->revs_limit, note_drop, e, NULL);

	if (!rc && e->d->keep_bodies)
		rc = revtree_prune_bodies(e->tree, e->d->keep_bodies, note_drop,
					  e, NULL);
	return rc;
}

static bool kept(const struct edit *e, const struct rev *rev)
{
	struct revtree_info ri;

	return !revtree_find(e->tree, rev, &ri) && ri.has_body;
}

/* Put a revision record in "revs" as body number ref. */
static int put_revs(struct edit *e, uint64_t ref, const void *rec, size_t len)
{
	uint8_t key[REVS_KEY];

	revs_key(ref, key);
	return btxn_put(e->txn, e->d->t_revs, key, REVS_KEY, rec, len, NULL);
}

/* A body leaves where ref says it is: its "revs" entry is deleted, or
 * its retained record released. */
static int forget_body(struct edit *e, uint64_t ref)
{
	uint8_t key[REVS_KEY];

	if (ref & REF_RETAINED)
		return btxn_release(e->txn, e->d->t_docs, ref & ~REF_RETAINED);
	revs_key(ref, key);
	return btxn_del(e->txn, e->d->t_revs, key, REVS_KEY);
}

/* Drop one body the policy dropped, and its attachment references. */
static int drop_body(struct edit *e, const struct drop *dr)
{
	struct bval v = { 0 };
	struct revrec rr;
	int rc = load_revrec(e, &dr->rev, dr->body_ref, &v, &rr);

	for (size_t i = 0; !rc && i < rr.natts; i++)
		rc = att_ref(e->d, e->txn, &rr.atts[i], -1);
	if (!rc)
		revrec_release(&rr);
	bval_release(&v);
	if (rc || (e->have_w0 && rev_eq(&dr->rev, &e->w0)))
		return rc;
	return forget_body(e, dr->body_ref);
}

/* A new body number, and rev's body noted there in the tree. */
static int take_body_number(struct edit *e, const struct rev *rev,
			    uint64_t *ref)
{
	if (e->nums->next >= REF_RETAINED)
		return BARREL_E_FULL;
	*ref = e->nums->next;
	e->nums->taken = true;
	e->nums->next++;
	return revtree_set_body(e->tree, rev, true, *ref);
}

/*
 * Step 5: where each body goes; the tree notes it. The winner's record
 * is inline (body_ref 0); a new revision that does not win (its record
 * made into e->newrec), and an old winner still kept that no longer
 * wins, take body numbers in "revs"; a winner from another branch leaves
 * "revs" (its record read into *v, its number in e->ref_w1). *wrec gets
 * the winner's record, NULL for the new revision's (of *wlen bytes).
 */
static int edit_place(struct edit *e, const struct rev *w1,
		      const struct revrec_src *src, struct bval *v,
		      const uint8_t **wrec, size_t *wlen)
{
	struct revtree_info ri;
	int rc = 0;

	if (!rev_eq(w1, &e->rev) && kept(e, &e->rev)) {
		if (!(e->newrec = malloc(e->newrec_len)))
			return -ENOMEM;
		revrec_write(src, e->newrec);
		rc = take_body_number(e, &e->rev, &e->ref_new);
	}
	if (!rc && e->have_w0 && !rev_eq(w1, &e->w0) && kept(e, &e->w0) &&
	    !rev_eq(&e->w0, &e->rev)) {
		/* The old record stays where it is, when it can (not one this
		 * transaction wrote: its address is not final). */
		if (e->old.addr)
			rc = revtree_set_body(e->tree, &e->w0, true,
					      REF_RETAINED | e->old.addr);
		else if (!(rc = edit_whole(e)))
			rc = take_body_number(e, &e->w0, &e->ref_w0);
	}
	if (rc)
		return rc;
	if (rev_eq(w1, &e->rev)) {
		*wrec = NULL;
		*wlen = e->newrec_len;
	} else if (e->have_w0 && rev_eq(w1, &e->w0)) {
		if ((rc = edit_whole(e)))
			return rc;
		*wrec = e->rec.winner;
		*wlen = e->rec.winner_len;
	} else {                      /* another branch wins now */
		if ((rc = revtree_find(e->tree, w1, &ri)) ||
		    (rc = get_revs(e, ri.body_ref, v)))
			return rc;
		e->ref_w1 = ri.body_ref;
		*wrec = v->data;
		*wlen = v->len;
	}
	return revtree_set_body(e->tree, w1, true, 0);
}

/* Does the tree name the old document record for the old winner's body
 * (edit_place retained it)? */
static bool retains_w0(const struct edit *e)
{
	struct revtree_info ri;

	return e->have_w0 && e->old.addr &&
	       !revtree_find(e->tree, &e->w0, &ri) && ri.has_body &&
	       ri.body_ref == (REF_RETAINED | e->old.addr);
}

/*
 * Step 6: write. References for the new revision's attachments, the
 * dropped bodies, the bodies that move into or out of "revs", and the
 * document record (the changes feed moves the document to the new
 * sequence). A failure here fails the whole transaction.
 */
static int edit_put(struct edit *e, const struct docbuf *doc)
{
	bool new_kept = kept(e, &e->rev);
	int rc = 0;

	if (e->ref_w1)
		rc = forget_body(e, e->ref_w1);
	for (size_t i = 0; !rc && new_kept && i < e->natts; i++)
		rc = att_ref(e->d, e->txn, &e->atts[i], +1);
	for (size_t i = 0; !rc && i < e->ndrop; i++)
		rc = drop_body(e, &e->drop[i]);
	if (!rc && e->ref_new)
		rc = put_revs(e, e->ref_new, e->newrec, e->newrec_len);
	if (!rc && e->ref_w0)
		rc = put_revs(e, e->ref_w0, e->rec.winner, e->rec.winner_len);
	if (rc)
		return rc;
	return btxn_put_ex(e->txn, e->d->t_docs, e->p->id, e->p->idlen,
			   &doc->v, retains_w0(e) ? BPUT_RETAIN : 0,
			   &e->r->seq);
}

/*
 * Steps 5 and 6: the document record with the new winner's record inline;
 * bodies move between it and "revs". Builds the record before writing
 * anything, so a record too big fails alone.
 */
static int edit_write(struct edit *e, int64_t now)
{
	struct revrec_src src = { e->p->deleted, now, e->atts, e->natts,
				  e->p->text, e->p->tlen };
	struct bval v1 = { 0 };
	const uint8_t *wrec;
	struct docbuf doc = { 0 };
	size_t wlen;
	struct rev w1;
	int rc;

	if ((rc = revtree_winner(e->tree, &w1, NULL)))
		return rc;
	rc = revrec_size(&src, &e->newrec_len);
	if (rc == BARREL_E_TOOBIG)
		return put_fail(e->r, rc, "revision record over %u bytes",
				BDB_MAX_VALUE);
	if (!rc)
		rc = edit_place(e, &w1, &src, &v1, &wrec, &wlen);
	if (!rc)
		rc = docrec_build(e->tree, wrec, wlen, &src, &doc);
	if (rc == BARREL_E_TOOBIG)
		rc = put_fail(e->r, rc, "document record over %u bytes",
			      BDB_MAX_VALUE);
	/* nothing is written before this point */
	e->wrote = !rc;
	if (!rc)
		rc = edit_put(e, &doc);
	free(doc.head);
	bval_release(&v1);
	return rc;
}

/* One request inside the transaction (DESIGN.md "Documents", steps 1-6). */
static int put_one(struct docdb *d, struct btxn *txn, struct doc_put *r,
		   struct prep *p, struct bodynums *nums, int64_t now,
		   bool *wrote)
{
	struct edit e = { .d = d, .txn = txn, .r = r, .p = p, .nums = nums };
	bool added = true;
	int rc = edit_load(&e);

	if (!rc)
		rc = r->flags & DOC_PUT_REPLICATED ? edit_graft(&e, &added)
						   : edit_new_rev(&e);
	if (!rc && added)
		rc = edit_policy(&e);
	if (!rc && added)
		rc = edit_write(&e, now);
	r->rev = e.rev;
	*wrote = e.wrote;
	edit_release(&e);
	return rc;
}

static void put_result(struct doc_put *r, int rc)
{
	r->rc = rc;
	if (rc && !r->error[0])
		snprintf(r->error, sizeof(r->error), "%s", barrel_strerror(rc));
	if (rc)
		r->seq = 0;
}

/* Every write that had succeeded fails with the transaction's rc. */
static int put_fail_all(struct doc_put *req, size_t n, int rc)
{
	for (size_t i = 0; i < n; i++)
		if (!req[i].rc) {
			req[i].error[0] = '\0';
			put_result(&req[i], rc);
		}
	return rc;
}

/* May the bulk's commit return before it is durable (DOC_PUT_NOSYNC)? */
static bool all_lazy(const struct doc_put *req, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!(req[i].flags & DOC_PUT_NOSYNC))
			return false;
	return true;
}

/* The transaction of a bulk: each prepared request in turn (steps 1-6),
 * the body counter, one commit. */
static int put_bulk(struct docdb *d, struct btxn *txn, struct doc_put *req,
		    struct prep *p, size_t n)
{
	int64_t now = now_ms();
	struct bodynums nums;
	bool any = false, wrote;
	int rc = nums_load(txn, d->t_meta, &nums);

	for (size_t i = 0; i < n && !rc; i++) {
		if (req[i].rc)
			continue;
		if (i + 1 < n && !req[i + 1].rc)
			btxn_prefetch_head(txn, d->t_docs, p[i + 1].id,
					   p[i + 1].idlen);
		rc = put_one(d, txn, &req[i], &p[i], &nums, now, &wrote);
		put_result(&req[i], rc);
		any |= wrote;
		if (!wrote)
			rc = 0;       /* that request's failure alone */
	}
	if (!rc && any)
		rc = nums_store(txn, d->t_meta, &nums);
	if (rc || !any) {
		btxn_abort(txn);
		return rc ? put_fail_all(req, n, rc) : 0;
	}
	rc = all_lazy(req, n) ? btxn_commit_lazy(txn) : btxn_commit(txn);
	return rc ? put_fail_all(req, n, rc) : 0;
}

int docdb_put(struct docdb *d, struct doc_put *req, size_t n)
{
	struct body_pool *pool = NULL;
	struct prep *p = NULL;
	struct btxn *txn;
	int rc;

	if (pool_take(d, &pool) ||
	    !(p = body_pool_zalloc(pool, (n ? n : 1) * sizeof(*p)))) {
		body_pool_free(pool);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		req[i].error[0] = '\0';
		req[i].seq = 0;
		memset(&req[i].rev, 0, sizeof(req[i].rev));
		put_result(&req[i], prep_request(d, pool, &req[i], &p[i]));
	}
	if ((rc = bdb_begin(d->db, &txn)))
		put_fail_all(req, n, rc);
	else
		rc = put_bulk(d, txn, req, p, n);
	for (size_t i = 0; i < n; i++)
		prep_release(&p[i]);
	pool_give(d, pool);
	return rc;
}

/* ---- GC: retained records ---- */

struct ref_find {
	uint64_t ref;
	struct rev rev;
};

static int ref_match(void *arg, const struct revtree_info *ri)
{
	struct ref_find *f = arg;

	if (!ri->has_body || ri->body_ref != f->ref)
		return 0;
	f->rev = ri->rev;
	return 1;
}

/*
 * The retain hook of "docs" (bdb_retain_fn): GC found the document record
 * at addr superseded. When the current tree still names it for a body,
 * that body moves to "revs" under a new number and the current record is
 * rewritten at its sequence to say so; else it is garbage. The current
 * tree comes from the head cache when it is there: most superseded
 * records are garbage, and telling costs no read of the current record.
 */
static int retained_move(void *arg, struct btxn *txn, uint32_t table,
			 const void *key, size_t klen, const void *val,
			 size_t vlen, uint64_t addr)
{
	struct bdb *db = arg;
	struct ref_find f = { .ref = REF_RETAINED | addr };
	struct bval cur = { 0 };
	struct revtree *t = NULL;
	struct bodynums nums;
	struct docrec now, old;
	struct docbuf doc = { 0 };
	uint32_t t_revs, t_meta;
	uint8_t rkey[REVS_KEY];
	bool whole;
	int rc = btxn_get_head(txn, table, key, klen, &cur, &whole);

	if (rc == BARREL_E_NOTFOUND)
		return 0;
	if (rc || (rc = docrec_split(cur.data, cur.len, &now)) ||
	    (rc = revtree_decode(now.tree, now.tree_len, &t)))
		goto out;
	if ((rc = revtree_each(t, ref_match, &f)) != 1)
		goto out;             /* 0: not named, garbage; or an error */
	if (!whole) {                 /* the current winner's body moves too */
		bval_release(&cur);
		if ((rc = btxn_get(txn, table, key, klen, &cur)) ||
		    (rc = docrec_split(cur.data, cur.len, &now)))
			goto out;
	}
	if ((rc = docrec_split(val, vlen, &old)) ||
	    (rc = bdb_table(db, "revs", &t_revs)) ||
	    (rc = bdb_table(db, "meta", &t_meta)) ||
	    (rc = nums_load(txn, t_meta, &nums)))
		goto out;
	revs_key(nums.next, rkey);
	if ((rc = revtree_set_body(t, &f.rev, true, nums.next)) ||
	    (rc = btxn_put(txn, t_revs, rkey, REVS_KEY, old.winner,
			   old.winner_len, NULL)))
		goto out;
	nums.next++;
	nums.taken = true;
	if ((rc = nums_store(txn, t_meta, &nums)) ||
	    (rc = docrec_build(t, now.winner, now.winner_len, NULL, &doc)) ||
	    (rc = btxn_rewrite(txn, table, key, klen, &doc.v)))
		goto out;
	rc = 1;
out:
	free(doc.head);
	revtree_free(t);
	bval_release(&cur);
	return rc;
}

int docdb_gc_attach(struct bdb *db)
{
	uint32_t docs;
	int rc = bdb_table(db, "docs", &docs);

	if (rc == BARREL_E_NOTFOUND)
		return 0;
	return rc ? rc : bdb_retain_hook(db, docs, retained_move, db);
}

/* ---- purge ---- */

/* The purged tree's new winner w1 (not the old one) moves its record
 * inline: read into *v, its "revs" entry deleted. */
static int purge_new_winner(struct edit *e, const struct rev *w1,
			    struct bval *v)
{
	struct revtree_info ri;
	int rc;

	if ((rc = revtree_find(e->tree, w1, &ri)) ||
	    (rc = get_revs(e, ri.body_ref, v)) ||
	    (rc = forget_body(e, ri.body_ref)))
		return rc;
	return revtree_set_body(e->tree, w1, true, 0);
}

/* The document record after a purge: removed when no revision is left,
 * else rebuilt around the winner (the old one's record, or a new one's
 * moved inline). */
static int purge_write(struct edit *e, uint64_t *seq)
{
	struct bval v = { 0 };
	const uint8_t *wrec;
	size_t wlen;
	struct docbuf doc = { 0 };
	struct rev w1;
	int rc = revtree_winner(e->tree, &w1, NULL);

	if (rc == BARREL_E_NOTFOUND)
		return btxn_del(e->txn, e->d->t_docs, e->p->id, e->p->idlen);
	if (!rc && !rev_eq(&w1, &e->w0))
		rc = purge_new_winner(e, &w1, &v);
	else if (!rc)
		rc = edit_whole(e);
	wrec = v.data ? v.data : e->rec.winner;
	wlen = v.data ? v.len : e->rec.winner_len;
	if (!rc)
		rc = docrec_build(e->tree, wrec, wlen, NULL, &doc);
	if (!rc)
		rc = btxn_put_ex(e->txn, e->d->t_docs, e->p->id, e->p->idlen,
				 &doc.v, 0, seq);
	free(doc.head);
	bval_release(&v);
	return rc;
}

/* Inside the transaction: the tree loses the leaves, their bodies go. */
static int purge_one(struct edit *e, const struct rev *revs, size_t n,
		     bool *purged, bool *any)
{
	uint64_t seq;
	int rc = edit_load(e);

	*any = false;
	if (!rc && !e->have_w0)
		return BARREL_E_NOTFOUND;
	if (!rc)
		rc = revtree_purge(e->tree, revs, n, note_drop, e, purged);
	for (size_t i = 0; !rc && i < n; i++)
		*any |= purged[i];
	for (size_t i = 0; !rc && *any && i < e->ndrop; i++)
		rc = drop_body(e, &e->drop[i]);
	if (!rc && *any)
		rc = purge_write(e, &seq);
	return rc;
}

/* The revs marked gone, in order, into a malloc'ed array. */
static int purged_list(const struct rev *revs, size_t n, const bool *gone,
		       struct rev **out, size_t *nout)
{
	size_t k = 0;

	if (!(*out = malloc((n ? n : 1) * sizeof(**out))))
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (gone[i])
			(*out)[k++] = revs[i];
	if (nout)
		*nout = k;
	return 0;
}

int docdb_purge(struct docdb *d, const char *id, size_t idlen,
		const struct rev *revs, size_t n, struct rev **purged,
		size_t *npurged)
{
	struct prep p = { .id = id, .idlen = idlen };
	struct edit e = { .d = d, .p = &p };
	bool *gone = calloc(n ? n : 1, sizeof(*gone)), any = false;
	int rc;

	if (purged)
		*purged = NULL;
	if (npurged)
		*npurged = 0;
	if (!gone)
		return -ENOMEM;
	if ((rc = bdb_begin(d->db, &e.txn)))
		goto out_free;
	rc = purge_one(&e, revs, n, gone, &any);
	if (rc || !any)
		btxn_abort(e.txn);
	else
		rc = btxn_commit(e.txn);
	if (!rc && purged)
		rc = purged_list(revs, n, gone, purged, npurged);
out_free:
	edit_release(&e);
	free(gone);
	return rc;
}

/* ---- reads ---- */

/* The snapshot to read from: snap, or a fresh one into *own. */
static int use_snap(struct docdb *d, struct bsnap **snap, struct bsnap **own)
{
	*own = NULL;
	if (*snap)
		return 0;
	int rc = bdb_snapshot(d->db, own);

	*snap = *own;
	return rc;
}

void doc_release(struct doc *doc)
{
	free(doc->id);
	free(doc->body);
	doc_atts_free(doc->atts, doc->natts);
	revtree_free(doc->tree);
	memset(doc, 0, sizeof(*doc));
}

/* Fill out from a revision record (copies what it keeps). */
static int fill_doc(struct doc *out, const char *id, size_t idlen,
		    const struct rev *rev, uint64_t seq, const void *rec,
		    size_t len)
{
	struct revrec rr;
	int rc = revrec_decode(rec, len, &rr);

	if (rc)
		return rc;
	out->id = strndup(id, idlen);
	out->body = malloc(rr.len + 1);
	if (!out->id || !out->body) {
		revrec_release(&rr);
		doc_release(out);
		return -ENOMEM;
	}
	out->idlen = idlen;
	out->rev = *rev;
	out->seq = seq;
	out->deleted = rr.deleted;
	out->time_ms = rr.time_ms;
	memcpy(out->body, rr.body, rr.len);
	out->body[rr.len] = '\0';
	out->len = rr.len;
	out->atts = rr.atts;          /* moved into the doc */
	out->natts = rr.natts;
	return 0;
}

/* The record of rev (not the winner): in "revs", or retained. */
static int get_body(struct docdb *d, struct bsnap *snap, const char *id,
		    size_t idlen, const struct revtree *t,
		    const struct rev *rev, struct bval *v)
{
	struct revtree_info ri;
	uint8_t key[REVS_KEY];
	int rc;

	if (revtree_find(t, rev, &ri) || !ri.has_body)
		return BARREL_E_NOTFOUND;
	if (ri.body_ref & REF_RETAINED) {
		rc = bsnap_get_at(snap, d->t_docs, id, idlen,
				  ri.body_ref & ~REF_RETAINED, v);
		return rc ? rc : retained_body(v);
	}
	revs_key(ri.body_ref, key);
	rc = bsnap_get(snap, d->t_revs, key, REVS_KEY, v);
	return rc == BARREL_E_NOTFOUND ? BARREL_E_CORRUPT : rc;
}

/* A document record read into out (see docdb_get). */
static int read_doc(struct docdb *d, struct bsnap *snap, const char *id,
		    size_t idlen, const void *val, size_t vlen, uint64_t seq,
		    const struct rev *rev, unsigned flags, struct doc *out)
{
	struct revtree *t = NULL;
	struct bval body = { 0 };
	struct docrec rec;
	struct rev w;
	int rc;

	if ((rc = docrec_split(val, vlen, &rec)) ||
	    (rc = revtree_decode(rec.tree, rec.tree_len, &t)) ||
	    (rc = revtree_winner(t, &w, NULL)))
		goto out_free;
	if (!rev && rec.deleted && !(flags & DOC_GET_DELETED)) {
		out->deleted = true;
		rc = BARREL_E_NOTFOUND;
		goto out_free;
	}
	if (!rev || rev_eq(rev, &w))
		rc = fill_doc(out, id, idlen, &w, seq, rec.winner, rec.winner_len);
	else if (!(rc = get_body(d, snap, id, idlen, t, rev, &body)))
		rc = fill_doc(out, id, idlen, rev, seq, body.data, body.len);
	if (!rc && (flags & DOC_GET_TREE)) {
		out->tree = t;
		t = NULL;
	}
out_free:
	bval_release(&body);
	revtree_free(t);
	return rc;
}

int docdb_get(struct docdb *d, struct bsnap *snap, const char *id,
	      size_t idlen, const struct rev *rev, unsigned flags,
	      struct doc *out)
{
	struct bsnap *own;
	struct bval v = { 0 };
	int rc = use_snap(d, &snap, &own);

	memset(out, 0, sizeof(*out));
	if (rc)
		return rc;
	if (!(rc = bsnap_get(snap, d->t_docs, id, idlen, &v)))
		rc = read_doc(d, snap, id, idlen, v.data, v.len, v.seq, rev,
			      flags, out);
	bval_release(&v);
	if (own)
		bsnap_release(own);
	return rc;
}

int docdb_get_many(struct docdb *d, struct bsnap *snap, struct doc_get *req,
		   size_t n)
{
	struct bsnap *own;
	int rc = use_snap(d, &snap, &own);

	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++)
		req[i].rc = docdb_get(d, snap, req[i].id, req[i].idlen,
				      req[i].rev, req[i].flags, &req[i].doc);
	if (own)
		bsnap_release(own);
	return 0;
}

int docdb_tree(struct docdb *d, struct bsnap *snap, const char *id,
	       size_t idlen, struct revtree **out, uint64_t *seq)
{
	struct bsnap *own;
	struct bval v = { 0 };
	struct docrec rec;
	int rc = use_snap(d, &snap, &own);

	if (rc)
		return rc;
	if (!(rc = bsnap_get(snap, d->t_docs, id, idlen, &v)) &&
	    !(rc = docrec_split(v.data, v.len, &rec)))
		rc = revtree_decode(rec.tree, rec.tree_len, out);
	if (!rc && seq)
		*seq = v.seq;
	bval_release(&v);
	if (own)
		bsnap_release(own);
	return rc;
}

/* ---- CouchDB's JSON form ---- */

static struct json_object *rev_json(const struct rev *r)
{
	char buf[REV_STR_SIZE];

	rev_format(r, buf, sizeof(buf));
	return json_object_new_string(buf);
}

static int add_rev_list(struct json_object *o, const char *key,
			const struct rev *revs, size_t n)
{
	struct json_object *a = json_object_new_array();

	for (size_t i = 0; a && i < n; i++)
		json_object_array_add(a, rev_json(&revs[i]));
	return a ? json_object_object_add(o, key, a) : -ENOMEM;
}

static int add_conflicts(struct json_object *o, const struct doc *doc,
			 bool deleted)
{
	struct rev *revs;
	size_t n;
	int rc = deleted ? revtree_deleted_conflicts(doc->tree, &revs, &n)
			 : revtree_conflicts(doc->tree, &revs, &n);

	if (!rc && n)
		rc = add_rev_list(o, deleted ? "_deleted_conflicts" : "_conflicts",
				  revs, n);
	free(revs);
	return rc;
}

static int add_revisions(struct json_object *o, const struct doc *doc)
{
	size_t max = revtree_count(doc->tree);
	struct rev *path = calloc(max ? max : 1, sizeof(*path));
	struct json_object *r = json_object_new_object();
	struct json_object *ids = json_object_new_array();
	size_t n = 0;
	int rc = path && r && ids ? 0 : -ENOMEM;

	if (!rc)
		rc = revtree_path(doc->tree, &doc->rev, path, max, &n);
	for (size_t i = 0; !rc && i < n; i++) {
		char buf[REV_STR_SIZE];

		rev_format(&path[i], buf, sizeof(buf));
		json_object_array_add(ids, json_object_new_string(strchr(buf, '-') + 1));
	}
	if (!rc) {
		json_object_object_add(r, "start",
				       json_object_new_int64((int64_t)doc->rev.gen));
		json_object_object_add(r, "ids", ids);
		ids = NULL;
		rc = json_object_object_add(o, "_revisions", r);
		r = NULL;
	}
	json_object_put(ids);
	json_object_put(r);
	free(path);
	return rc;
}

static int add_att_stubs(struct json_object *o, const struct doc *doc)
{
	struct json_object *all = json_object_new_object();

	if (!all)
		return -ENOMEM;
	for (size_t i = 0; i < doc->natts; i++) {
		const struct doc_att *a = &doc->atts[i];
		struct json_object *e = json_object_new_object();
		char dg[DOC_DIGEST_SIZE];

		if (!e)
			break;
		doc_digest_format(a->md5, dg);
		json_object_object_add(e, "content_type",
				       json_object_new_string(a->content_type));
		json_object_object_add(e, "revpos",
				       json_object_new_int64((int64_t)a->revpos));
		json_object_object_add(e, "digest", json_object_new_string(dg));
		json_object_object_add(e, "length",
				       json_object_new_int64((int64_t)a->length));
		json_object_object_add(e, "stub", json_object_new_boolean(1));
		json_object_object_add(all, a->name, e);
	}
	return json_object_object_add(o, "_attachments", all);
}

int doc_json(const struct doc *doc, unsigned flags, struct json_object **out)
{
	struct json_object *o = json_object_new_object();
	struct body b;
	int rc = body_parse_json(doc->body, doc->len, &b, NULL);

	if (!rc && !o)
		rc = -ENOMEM;
	if (!rc && (flags & (DOC_JSON_CONFLICTS | DOC_JSON_DELETED_CONFLICTS |
			     DOC_JSON_REVISIONS)) && !doc->tree)
		rc = BARREL_E_INVALID;
	if (!rc && (flags & DOC_JSON_META)) {
		json_object_object_add(o, "_id",
				       json_object_new_string_len(doc->id,
								  (int)doc->idlen));
		json_object_object_add(o, "_rev", rev_json(&doc->rev));
		if (doc->deleted)
			json_object_object_add(o, "_deleted",
					       json_object_new_boolean(1));
	}
	if (!rc) {
		json_object_object_foreach(b.obj, key, val) {
			if (key[0] != '_')
				json_object_object_add(o, key, json_object_get(val));
		}
	}
	if (!rc && (flags & DOC_JSON_ATTS) && doc->natts)
		rc = add_att_stubs(o, doc);
	if (!rc && (flags & DOC_JSON_CONFLICTS))
		rc = add_conflicts(o, doc, false);
	if (!rc && (flags & DOC_JSON_DELETED_CONFLICTS))
		rc = add_conflicts(o, doc, true);
	if (!rc && (flags & DOC_JSON_REVISIONS))
		rc = add_revisions(o, doc);
	body_release(&b);
	if (rc) {
		json_object_put(o);
		return rc;
	}
	*out = o;
	return 0;
}

/*
 * May the stored body (a valid JSON object) be spliced after _id and
 * _rev? Not when a top-level member's name starts with '_' (or with an
 * escape, which might spell one), nor, unless space_ok, when there is
 * whitespace outside strings.
 */
static bool body_spliceable(const char *p, size_t n, bool space_ok)
{
	int depth = 0;
	bool name = false;            /* depth 1: a string here is a name */

	for (size_t i = 0; i < n; i++) {
		switch (p[i]) {
		case '"':
			if (name && i + 1 < n && (p[i + 1] == '_' || p[i + 1] == '\\'))
				return false;
			for (i++; i < n && p[i] != '"'; i++)
				i += p[i] == '\\';
			name = false;
			break;
		case '{':
		case '[':
			name = ++depth == 1;
			break;
		case '}':
		case ']':
			depth--;
			break;
		case ',':
			name = depth == 1;
			break;
		case ' ':
		case '\t':
		case '\n':
		case '\r':
			if (!space_ok)
				return false;
			break;
		}
	}
	return true;
}

/* _id, _rev and the body's members, spliced from its bytes. */
static int doc_splice(const struct doc *doc, struct bbuf *out)
{
	char rev[REV_STR_SIZE];
	const char *p = memchr(doc->body, '{', doc->len);
	const char *end = doc->body + doc->len;
	const char *q;
	int rc;

	if (!p || rev_format(&doc->rev, rev, sizeof(rev)) < 0)
		return BARREL_E_CORRUPT;
	for (q = p + 1; q < end && strchr(" \t\n\r", *q); q++)
		;
	if ((rc = bbuf_add(out, "{\"_id\":", 7)) ||
	    (rc = bbuf_add_jstr(out, doc->id, doc->idlen)) ||
	    (rc = bbuf_add(out, ",\"_rev\":\"", 9)) ||
	    (rc = bbuf_add(out, rev, strlen(rev))) ||
	    (rc = bbuf_add(out, "\"", 1)))
		return rc;
	if (q < end && *q == '}')
		return bbuf_add(out, "}", 1);
	if ((rc = bbuf_add(out, ",", 1)))
		return rc;
	while (end > p && strchr(" \t\n\r", end[-1]))
		end--;
	return bbuf_add(out, p + 1, (size_t)(end - p - 1));
}

int doc_json_text(const struct doc *doc, unsigned flags, struct bbuf *out)
{
	struct json_object *o;
	const char *t;
	int rc;

	if (!(flags & ~(DOC_JSON_META | DOC_JSON_ATTS | DOC_JSON_ANY_SPACE)) &&
	    (flags & DOC_JSON_META) && !doc->deleted &&
	    !(doc->natts && (flags & DOC_JSON_ATTS)) &&
	    body_spliceable(doc->body, doc->len, flags & DOC_JSON_ANY_SPACE))
		return doc_splice(doc, out);
	if ((rc = doc_json(doc, flags & ~DOC_JSON_ANY_SPACE, &o)))
		return rc;
	t = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
					   JSON_C_TO_STRING_NOSLASHESCAPE);
	rc = t ? bbuf_add(out, t, strlen(t)) : -ENOMEM;
	json_object_put(o);
	return rc;
}

/* ---- listings ---- */

/* One document entry of "docs" as a row for cb. */
static int emit_row(struct docdb *d, struct bsnap *snap,
		    const struct bentry *en, unsigned flags, doc_row_cb cb,
		    void *arg)
{
	struct revtree_info *leaves = NULL;
	struct revtree *t = NULL;
	struct doc doc = { 0 };
	struct rev *revs = NULL;
	struct docrec rec;
	size_t n = 0;
	int rc;

	if ((rc = docrec_split(en->val, en->vlen, &rec)))
		return rc;
	if (rec.deleted && (flags & DOC_ROWS_SKIP_DELETED))
		return 0;
	if ((rc = revtree_decode(rec.tree, rec.tree_len, &t)) ||
	    (rc = revtree_leaves(t, &leaves, &n)))
		goto out_free;
	if (!(flags & DOC_ROWS_ALL_LEAVES))
		n = n ? 1 : 0;
	if (!(revs = calloc(n ? n : 1, sizeof(*revs)))) {
		rc = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < n; i++)
		revs[i] = leaves[i].rev;
	if ((flags & DOC_ROWS_DOCS) && n)
		rc = read_doc(d, snap, en->key, en->klen, en->val, en->vlen,
			      en->seq, NULL, DOC_GET_DELETED, &doc);
	if (!rc)
		rc = cb(arg, &(struct doc_row){
			.id = en->key, .idlen = en->klen, .seq = en->seq,
			.deleted = rec.deleted, .revs = revs, .nrevs = n,
			.doc = (flags & DOC_ROWS_DOCS) ? &doc : NULL });
out_free:
	doc_release(&doc);
	free(revs);
	free(leaves);
	revtree_free(t);
	return rc;
}

/* Every entry of cursor c as a row, at most limit (0: all). */
static int emit_rows(struct docdb *d, struct bsnap *snap, struct bcursor *c,
		     uint64_t limit, unsigned flags, doc_row_cb cb, void *arg,
		     uint64_t *last)
{
	struct bentry en;
	uint64_t rows = 0;
	int rc;

	while ((!limit || rows < limit) && (rc = bcursor_next(c, &en)) == 1) {
		if ((rc = emit_row(d, snap, &en, flags, cb, arg)))
			return rc;
		if (last)
			*last = en.seq;
		rows++;
	}
	return rc < 0 ? rc : 0;
}

int docdb_changes(struct docdb *d, struct bsnap *snap, uint64_t since,
		  uint64_t limit, unsigned flags, doc_row_cb cb, void *arg,
		  uint64_t *last)
{
	struct bsnap *own;
	struct bcursor *c;
	int rc = use_snap(d, &snap, &own);

	if (rc)
		return rc;
	if (last)
		*last = (flags & DOC_ROWS_DESCENDING) ? 0 : bsnap_seq(snap);
	rc = bsnap_changes(snap, d->t_docs, since,
			   flags & DOC_ROWS_DESCENDING ? BCURSOR_REVERSE : 0, &c);
	if (!rc) {
		rc = emit_rows(d, snap, c, limit, flags & ~DOC_ROWS_SKIP_DELETED,
			       cb, arg, last);
		bcursor_free(c);
	}
	if (own)
		bsnap_release(own);
	return rc;
}

int docdb_all_docs(struct docdb *d, struct bsnap *snap, const char *start,
		   size_t slen, const char *end, size_t elen, unsigned flags,
		   doc_row_cb cb, void *arg)
{
	struct bsnap *own;
	struct bcursor *c;
	int rc = use_snap(d, &snap, &own);

	if (rc)
		return rc;
	if (!(flags & DOC_ROWS_DELETED))
		flags |= DOC_ROWS_SKIP_DELETED;
	rc = bsnap_scan(snap, d->t_docs, start, slen, end, elen,
			flags & DOC_ROWS_DESCENDING ? BCURSOR_REVERSE : 0, &c);
	if (!rc) {
		rc = emit_rows(d, snap, c, 0, flags, cb, arg, NULL);
		bcursor_free(c);
	}
	if (own)
		bsnap_release(own);
	return rc;
}

/* ---- local documents ---- */

static int local_check(struct docdb *d, struct btxn *txn, const char *id,
		       size_t idlen, uint64_t parent, uint64_t *cur)
{
	struct bval v = { 0 };
	int rc = btxn_get(txn, d->t_local, id, idlen, &v);

	*cur = 0;
	if (rc == BARREL_E_NOTFOUND)
		rc = 0;
	else if (!rc && v.len < 8)
		rc = BARREL_E_CORRUPT;
	else if (!rc)
		*cur = get_le(v.data, 8);
	bval_release(&v);
	if (!rc && *cur != parent)
		rc = BARREL_E_CONFLICT;
	return rc;
}

static bool local_id_valid(const char *id, size_t idlen)
{
	return idlen > 0 && idlen <= DOC_MAX_ID && body_utf8_valid(id, idlen);
}

/* One local write in its own commit: put (body) or delete (NULL). */
static int local_write(struct docdb *d, const char *id, size_t idlen,
		       const char *body, size_t len, uint64_t parent,
		       uint64_t *rev)
{
	struct btxn *txn;
	uint64_t cur;
	uint8_t *val = NULL;
	int rc;

	if (body && !(val = malloc(8 + len)))
		return -ENOMEM;
	if ((rc = bdb_begin(d->db, &txn)))
		goto out_free;
	rc = local_check(d, txn, id, idlen, parent, &cur);
	if (!rc && body) {
		put_le(val, cur + 1, 8);
		memcpy(val + 8, body, len);
		rc = btxn_put(txn, d->t_local, id, idlen, val, 8 + len, NULL);
	} else if (!rc) {
		rc = cur ? btxn_del(txn, d->t_local, id, idlen)
			 : BARREL_E_NOTFOUND;
	}
	if (rc)
		btxn_abort(txn);
	else if (!(rc = btxn_commit(txn)) && rev)
		*rev = cur + 1;
out_free:
	free(val);
	return rc;
}

int docdb_local_put(struct docdb *d, const char *id, size_t idlen,
		    const char *body, size_t len, uint64_t parent,
		    uint64_t *rev, char *err)
{
	struct body b;
	int rc;

	if (!local_id_valid(id, idlen)) {
		if (err)
			snprintf(err, DOC_ERRLEN, "invalid local document id");
		return BARREL_E_INVALID;
	}
	rc = body_parse(body, len, &b, err);
	body_release(&b);
	if (rc)
		return rc;
	rc = local_write(d, id, idlen, body, len, parent, rev);
	if (rc == BARREL_E_CONFLICT && err)
		snprintf(err, DOC_ERRLEN, "local document update conflict");
	return rc;
}

int docdb_local_get(struct docdb *d, struct bsnap *snap, const char *id,
		    size_t idlen, char **body, size_t *len, uint64_t *rev)
{
	struct bsnap *own;
	struct bval v = { 0 };
	int rc = use_snap(d, &snap, &own);

	if (rc)
		return rc;
	rc = bsnap_get(snap, d->t_local, id, idlen, &v);
	if (!rc && v.len < 8)
		rc = BARREL_E_CORRUPT;
	if (!rc && !(*body = malloc(v.len - 8 + 1)))
		rc = -ENOMEM;
	if (!rc) {
		memcpy(*body, (uint8_t *)v.data + 8, v.len - 8);
		(*body)[v.len - 8] = '\0';
		*len = v.len - 8;
		if (rev)
			*rev = get_le(v.data, 8);
	}
	bval_release(&v);
	if (own)
		bsnap_release(own);
	return rc;
}

int docdb_local_del(struct docdb *d, const char *id, size_t idlen,
		    uint64_t parent)
{
	return local_write(d, id, idlen, NULL, 0, parent, NULL);
}

int docdb_local_list(struct docdb *d, struct bsnap *snap, const char *prefix,
		     size_t plen, int (*cb)(void *arg, const char *id,
					     size_t idlen, uint64_t rev),
		     void *arg)
{
	struct bsnap *own;
	struct bcursor *c = NULL;
	struct bentry en;
	int rc = use_snap(d, &snap, &own);

	if (rc)
		return rc;
	rc = bsnap_scan(snap, d->t_local, prefix, plen, NULL, 0, 0, &c);
	while (!rc && (rc = bcursor_next(c, &en)) == 1) {
		if (en.klen < plen || memcmp(en.key, prefix, plen)) {
			rc = 0;
			break;
		}
		rc = en.vlen < 8 ? BARREL_E_CORRUPT
				 : cb(arg, en.key, en.klen, get_le(en.val, 8));
	}
	if (!rc || rc == 1)
		rc = 0;
	if (c)
		bcursor_free(c);
	if (own)
		bsnap_release(own);
	return rc;
}
