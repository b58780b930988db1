#include "config.h"

/*
 * The document layer (engine/docdb.h) end to end on a real DATADIR:
 * bodies stored byte for byte, deterministic revision ids, the update
 * rules, deletion and recreation, replication grafts and conflicts with
 * CouchDB's winner, revs_limit and body retention, the changes feed and
 * subscription, local documents, streamed and inline attachments, bulk
 * writes as one commit with per-document errors, bad input, all_docs and
 * persistence across a reopen.
 */

#include <check.h>
#include <json-c/json.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/bbuf.h"
#include "engine/body.h"
#include "engine/db.h"
#include "engine/docdb.h"
#include "engine/error.h"
#include "engine/revtree.h"
#include "tests/engine/testenv.h"

TU_BASE_FIXTURE("test_docdb")

#define KiB 1024u
#define MiB (1024u * 1024u)

#define EXPECT_RC(expr, want)                                            \
	do {                                                             \
		int rc_ = (expr);                                        \
		ck_assert_msg(rc_ == (want), "%s returned %d (%s), want %d (%s)", \
			      #expr, rc_, barrel_strerror(rc_), (int)(want), \
			      barrel_strerror(want));                    \
	} while (0)

/* ---- fixture: one DATADIR, one environment, database "db" ---- */

struct fx {
	char dir[PATH_MAX];
	struct benv *env;
	struct docdb *d;
	struct docdb_opts opts;
	bool has_opts;
};

static struct benv *env_open(const char *dir)
{
	struct benv_opts o;
	struct benv *env = NULL;

	benv_opts_init(&o);
	o.gc_thread = false;
	o.seg_min = 64u << 10;
	o.seg_max = 4u << 20;
	OK(benv_open(dir, &o, &env));
	ck_assert_ptr_nonnull(env);
	return env;
}

static void fx_docdb(struct fx *f, bool create)
{
	f->d = NULL;
	OK(docdb_open(f->env, "db", create, f->has_opts ? &f->opts : NULL,
		      &f->d));
	ck_assert_ptr_nonnull(f->d);
}

static void fx_open_opts(struct fx *f, const struct docdb_opts *opts)
{
	memset(f, 0, sizeof(*f));
	if (opts) {
		f->opts = *opts;
		f->has_opts = true;
	}
	tu_new_datadir(g_base, f->dir, sizeof(f->dir));
	f->env = env_open(f->dir);
	fx_docdb(f, true);
}

static void fx_open(struct fx *f)
{
	fx_open_opts(f, NULL);
}

static void fx_close(struct fx *f)
{
	docdb_close(f->d);
	f->d = NULL;
	benv_close(f->env);
	f->env = NULL;
}

static void fx_reopen(struct fx *f)
{
	fx_close(f);
	f->env = env_open(f->dir);
	fx_docdb(f, false);
}

/* ---- revisions ---- */

static struct rev R(const char *s)
{
	struct rev r;

	ck_assert_msg(rev_parse(s, strlen(s), &r) == 0, "parse %s", s);
	return r;
}

struct rs {
	char s[REV_STR_SIZE];
};

static struct rs RS(const struct rev *r)
{
	struct rs o;

	ck_assert_int_eq(rev_format(r, o.s, sizeof(o.s)), 0);
	return o;
}

static void assert_rev_eq(const struct rev *got, const struct rev *want)
{
	ck_assert_msg(rev_eq(got, want), "revision %s, want %s", RS(got).s,
		      RS(want).s);
}

/* ---- writes ---- */

static void req_init(struct doc_put *p, const char *id, const char *body)
{
	memset(p, 0, sizeof(*p));
	p->id = id;
	p->idlen = id ? strlen(id) : 0;
	p->body = body;
	p->len = body ? strlen(body) : 0;
}

/* One write in its own docdb_put; the commit must succeed. Returns rc. */
static int put_req(struct docdb *d, struct doc_put *p)
{
	OK(docdb_put(d, p, 1));
	if (p->rc)
		ck_assert_msg(p->error[0] != '\0',
			      "rc %d (%s) without a reason", p->rc,
			      barrel_strerror(p->rc));
	return p->rc;
}

/* A new document from len bytes of body (not NUL-terminated). */
static int put_n(struct docdb *d, const char *id, const char *body,
		 size_t len)
{
	struct doc_put p;

	req_init(&p, id, body);
	p.len = len;
	return put_req(d, &p);
}

static int put(struct docdb *d, const char *id, const char *body,
	       const struct rev *parent, unsigned flags, struct rev *out)
{
	struct doc_put p;
	int rc;

	req_init(&p, id, body);
	p.parent = parent;
	p.flags = flags;
	rc = put_req(d, &p);
	if (out)
		*out = p.rev;
	return rc;
}

static struct rev put_ok(struct docdb *d, const char *id, const char *body,
			 const struct rev *parent)
{
	struct doc_put p;

	req_init(&p, id, body);
	p.parent = parent;
	ck_assert_msg(put_req(d, &p) == 0, "put %s: %d (%s) %s", id, p.rc,
		      barrel_strerror(p.rc), p.error);
	ck_assert(rev_valid(&p.rev));
	ck_assert_uint_eq(p.rev.gen, parent ? parent->gen + 1 : p.rev.gen);
	ck_assert_uint_gt(p.seq, 0);
	return p.rev;
}

static struct rev del_ok(struct docdb *d, const char *id,
			 const struct rev *parent)
{
	struct doc_put p;

	req_init(&p, id, NULL);
	p.parent = parent;
	p.deleted = true;
	ck_assert_msg(put_req(d, &p) == 0, "delete %s: %d (%s) %s", id, p.rc,
		      barrel_strerror(p.rc), p.error);
	ck_assert_uint_eq(p.rev.gen, parent->gen + 1);
	return p.rev;
}

/*
 * A replicated write of id: a body with "_revisions" made of the path
 * (revision strings newest first, NULL-terminated) and members (the text
 * of further members, "" for none). Returns rc; *seq gets the output seq.
 */
static int rep(struct docdb *d, const char *id, const char *members,
	       bool deleted, uint64_t *seq, ...)
{
	char body[4096];
	struct doc_put p;
	const char *s;
	size_t n;
	va_list ap;
	int k;

	va_start(ap, seq);
	s = va_arg(ap, const char *);
	k = snprintf(body, sizeof(body), "{\"_revisions\":{\"start\":%llu,"
		     "\"ids\":[", (unsigned long long)R(s).gen);
	n = (size_t)k;
	for (bool first = true; s; s = va_arg(ap, const char *), first = false)
		n += (size_t)snprintf(body + n, sizeof(body) - n, "%s\"%s\"",
				      first ? "" : ",", strchr(s, '-') + 1);
	va_end(ap);
	n += (size_t)snprintf(body + n, sizeof(body) - n, "]}%s%s}",
			      members[0] ? "," : "", members);
	ck_assert_uint_lt(n, sizeof(body));
	req_init(&p, id, body);
	p.flags = DOC_PUT_REPLICATED;
	p.deleted = deleted;
	put_req(d, &p);
	if (seq)
		*seq = p.seq;
	return p.rc;
}

/* ---- reads ---- */

static int get(struct docdb *d, const char *id, const struct rev *rev,
	       unsigned flags, struct doc *out)
{
	memset(out, 0, sizeof(*out));
	return docdb_get(d, NULL, id, strlen(id), rev, flags, out);
}

/* The body of id (at rev, NULL: the winner) must be exactly want. */
static void expect_body(struct docdb *d, const char *id,
			const struct rev *rev, const char *want)
{
	struct doc doc;
	int rc = get(d, id, rev, 0, &doc);

	ck_assert_msg(rc == 0, "get %s %s: %d (%s)", id,
		      rev ? RS(rev).s : "", rc, barrel_strerror(rc));
	ck_assert_msg(doc.len == strlen(want) &&
		      memcmp(doc.body, want, doc.len) == 0,
		      "get %s: body \"%s\", want \"%s\"", id, doc.body, want);
	ck_assert_int_eq(doc.body[doc.len], '\0');
	doc_release(&doc);
}

/* get of id at rev fails with want. */
static void expect_get_rc(struct docdb *d, const char *id,
			  const struct rev *rev, unsigned flags, int want)
{
	struct doc doc;
	int rc = get(d, id, rev, flags, &doc);

	ck_assert_msg(rc == want, "get %s %s: %d (%s), want %d (%s)", id,
		      rev ? RS(rev).s : "(winner)", rc, barrel_strerror(rc),
		      want, barrel_strerror(want));
	doc_release(&doc);
}

static struct json_object *jparse(const char *text)
{
	struct json_object *o = json_tokener_parse(text);

	ck_assert_msg(o != NULL, "not JSON: %s", text);
	return o;
}

static struct json_object *jget(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	if (!json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

/* Member key of the body of id at rev is the string want (bodies stored
 * in normal form are compared by value). */
static void expect_member(struct docdb *d, const char *id,
			  const struct rev *rev, unsigned flags,
			  const char *key, const char *want)
{
	struct json_object *o, *v;
	struct doc doc;
	int rc = get(d, id, rev, flags, &doc);

	ck_assert_msg(rc == 0, "get %s %s: %d (%s)", id,
		      rev ? RS(rev).s : "(winner)", rc, barrel_strerror(rc));
	o = jparse(doc.body);
	v = jget(o, key);
	ck_assert_msg(v && json_object_is_type(v, json_type_string) &&
		      strcmp(json_object_get_string(v), want) == 0,
		      "%s %s: %s is not \"%s\" in %s", id, RS(&doc.rev).s,
		      key, want, doc.body);
	json_object_put(o);
	doc_release(&doc);
}

static struct revtree *tree_of(struct docdb *d, const char *id, uint64_t *seq)
{
	struct revtree *t = NULL;

	OK(docdb_tree(d, NULL, id, strlen(id), &t, seq));
	ck_assert_ptr_nonnull(t);
	return t;
}

struct enc {
	uint8_t *buf;
	size_t len;
};

/* Forget where a body is kept (for the tree_enc() below). */
static int clear_body_ref(void *arg, const struct revtree_info *ri)
{
	return revtree_set_body(arg, &ri->rev, ri->has_body, 0);
}

/* The encoded tree of id without body_ref: where bodies are kept is the
 * database's own (FORMAT.md "Documents"), not part of the history. */
static struct enc tree_enc(struct docdb *d, const char *id)
{
	struct revtree *t = tree_of(d, id, NULL);
	struct enc e;

	OK(revtree_each(t, clear_body_ref, t));
	OK(revtree_encode(t, &e.buf, &e.len));
	revtree_free(t);
	return e;
}

static void expect_winner(struct docdb *d, const char *id, const char *want,
			  bool want_deleted)
{
	struct revtree *t = tree_of(d, id, NULL);
	struct rev w, wr = R(want);
	bool del;

	OK(revtree_winner(t, &w, &del));
	assert_rev_eq(&w, &wr);
	ck_assert_int_eq(del, want_deleted);
	revtree_free(t);
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct bdb_stat stat_of(struct docdb *d)
{
	struct bdb_stat st;

	OK(bdb_stat(docdb_bdb(d), &st));
	return st;
}

/* ---- rows ---- */

struct row {
	char id[64];
	uint64_t seq;
	bool deleted;
	struct rev revs[8];
	size_t nrevs;
	bool has_doc;
	char body[256];
	bool doc_deleted;
};

struct rows {
	struct row r[64];
	size_t n;
	size_t stop_after;   /* return 7 after this many rows (0: never) */
};

static int row_cb(void *arg, const struct doc_row *row)
{
	struct rows *rs = arg;
	struct row *r;

	ck_assert_uint_lt(rs->n, 64);
	r = &rs->r[rs->n++];
	memset(r, 0, sizeof(*r));
	ck_assert_uint_lt(row->idlen, sizeof(r->id));
	memcpy(r->id, row->id, row->idlen);
	r->seq = row->seq;
	r->deleted = row->deleted;
	ck_assert_uint_ge(row->nrevs, 1);
	ck_assert_uint_le(row->nrevs, 8);
	memcpy(r->revs, row->revs, row->nrevs * sizeof(*row->revs));
	r->nrevs = row->nrevs;
	if (row->doc) {
		r->has_doc = true;
		r->doc_deleted = row->doc->deleted;
		snprintf(r->body, sizeof(r->body), "%s", row->doc->body);
		ck_assert_uint_eq(row->doc->idlen, row->idlen);
		ck_assert_mem_eq(row->doc->id, row->id, row->idlen);
	}
	return rs->stop_after && rs->n == rs->stop_after ? 7 : 0;
}

static struct rows *changes(struct docdb *d, struct bsnap *snap,
			    uint64_t since, uint64_t limit, unsigned flags,
			    uint64_t *last)
{
	struct rows *rs = calloc(1, sizeof(*rs));

	ck_assert_ptr_nonnull(rs);
	OK(docdb_changes(d, snap, since, limit, flags, row_cb, rs, last));
	return rs;
}

/* The ids of rows, space-separated, into a static buffer. */
static const char *row_ids(const struct rows *rs)
{
	static char buf[1024];
	size_t n = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < rs->n; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s",
				      i ? " " : "", rs->r[i].id);
	return buf;
}

static struct rows *all_docs(struct docdb *d, const char *start,
			     const char *end, unsigned flags)
{
	struct rows *rs = calloc(1, sizeof(*rs));

	ck_assert_ptr_nonnull(rs);
	OK(docdb_all_docs(d, NULL, start, start ? strlen(start) : 0, end,
			  end ? strlen(end) : 0, flags, row_cb, rs));
	return rs;
}

/* ---- attachments ---- */

static void md5_of(const void *buf, size_t len, uint8_t out[16])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned n = 0;

	ck_assert_ptr_nonnull(ctx);
	ck_assert_int_eq(EVP_DigestInit_ex(ctx, EVP_md5(), NULL), 1);
	ck_assert_int_eq(EVP_DigestUpdate(ctx, buf, len), 1);
	ck_assert_int_eq(EVP_DigestFinal_ex(ctx, out, &n), 1);
	ck_assert_uint_eq(n, 16);
	EVP_MD_CTX_free(ctx);
}

/* Stream len bytes of pattern seed in pieces into a finished attachment
 * named name; *md5 (may be NULL) gets the MD5 the test computed. */
static void att_stream(struct docdb *d, uint64_t seed, uint64_t len,
		       size_t piece, char *name, char *type,
		       struct doc_att *a, uint8_t md5[16])
{
	struct doc_att_writer *w = NULL;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t *buf = malloc(piece ? piece : 1);
	unsigned n = 0;
	uint8_t want[16];

	ck_assert_ptr_nonnull(ctx);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(EVP_DigestInit_ex(ctx, EVP_md5(), NULL), 1);
	OK(docdb_att_create(d, &w));
	ck_assert_ptr_nonnull(w);
	for (uint64_t off = 0; off < len; off += piece) {
		size_t k = len - off < piece ? (size_t)(len - off) : piece;

		tu_pattern(seed, off, buf, k);
		OK(doc_att_write(w, buf, k));
		ck_assert_int_eq(EVP_DigestUpdate(ctx, buf, k), 1);
	}
	ck_assert_int_eq(EVP_DigestFinal_ex(ctx, want, &n), 1);
	memset(a, 0, sizeof(*a));
	OK(doc_att_finish(w, a));
	a->name = name;
	a->content_type = type;
	ck_assert_uint_eq(a->length, len);
	ck_assert_mem_eq(a->md5, want, 16);
	if (md5)
		memcpy(md5, want, 16);
	EVP_MD_CTX_free(ctx);
	free(buf);
}

/* An attachment of bytes (small) streamed in one piece. */
static void att_bytes(struct docdb *d, const void *bytes, size_t len,
		      char *name, char *type, struct doc_att *a)
{
	struct doc_att_writer *w = NULL;

	OK(docdb_att_create(d, &w));
	if (len)
		OK(doc_att_write(w, bytes, len));
	memset(a, 0, sizeof(*a));
	OK(doc_att_finish(w, a));
	a->name = name;
	a->content_type = type;
	ck_assert_uint_eq(a->length, len);
}

/* Read attachment a of a doc got from snap whole into a malloc'ed buffer
 * (the caller frees), checking its length against a's. */
static uint8_t *att_read(struct docdb *d, struct bsnap *snap,
			 const struct doc_att *a)
{
	struct bblob_reader *r = NULL;
	uint8_t *buf = malloc(a->length ? a->length : 1);
	uint64_t off = 0;

	ck_assert_ptr_nonnull(buf);
	OK(docdb_att_open(d, snap, a, &r));
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(bblob_length(r), a->length);
	while (off < a->length) {
		size_t want = a->length - off < 256 * KiB ?
			(size_t)(a->length - off) : 256 * KiB;
		ssize_t n = bblob_read(r, buf + off, want, off);

		ck_assert_msg(n > 0, "read at %llu: %zd",
			      (unsigned long long)off, n);
		off += (uint64_t)n;
	}
	ck_assert_int_eq(bblob_read(r, buf, 1, a->length), 0);
	bblob_close(r);
	return buf;
}

/* Attachment name of doc, or NULL. */
static const struct doc_att *att_named(const struct doc *doc,
				       const char *name)
{
	for (size_t i = 0; i < doc->natts; i++)
		if (!strcmp(doc->atts[i].name, name))
			return &doc->atts[i];
	return NULL;
}

/* ================================================================== */
/* ---- opening ---- */

/* A missing db is NOTFOUND without create; a new one has the defaults. */
START_TEST(test_open)
{
	char dir[PATH_MAX];
	struct benv *env;
	struct docdb *d = NULL;

	tu_new_datadir(g_base, dir, sizeof(dir));
	env = env_open(dir);
	EXPECT_RC(docdb_open(env, "db", false, NULL, &d), BARREL_E_NOTFOUND);
	OK(docdb_open(env, "db", true, NULL, &d));
	ck_assert_ptr_nonnull(docdb_bdb(d));
	ck_assert_str_eq(bdb_name(docdb_bdb(d)), "db");
	ck_assert_uint_eq(docdb_revs_limit(d), DOC_REVS_LIMIT);
	docdb_close(d);
	docdb_close(NULL);
	/* now it exists */
	OK(docdb_open(env, "db", false, NULL, &d));
	docdb_close(d);
	benv_close(env);
}
END_TEST

/* ---- bodies and revision ids ---- */

/* A body with odd whitespace and order reads back byte for byte. */
START_TEST(test_roundtrip_bytes)
{
	const char *text = "  {\n\t\"b\" :[ 1,2 ] ,\"a\":\"\\u0041\\/\" ,"
		"\"_id\":\"doc1\"}\r\n ";
	char text2[256];
	struct fx f;
	struct doc_put p;
	struct doc doc;
	struct body b;
	struct rev want, r2;
	int64_t t0, t1;

	fx_open(&f);
	t0 = wall_ms();
	req_init(&p, NULL, text);   /* the id comes from "_id" */
	OK(put_req(f.d, &p));
	t1 = wall_ms();
	/* the id hashes the canonical body, as body_rev() computes it */
	ck_assert_int_eq(body_parse(text, strlen(text), &b, NULL), 0);
	OK(body_rev(&b, NULL, false, NULL, 0, &want));
	body_release(&b);
	assert_rev_eq(&p.rev, &want);
	ck_assert_uint_gt(p.seq, 0);

	OK(get(f.d, "doc1", NULL, 0, &doc));
	ck_assert_str_eq(doc.id, "doc1");
	ck_assert_uint_eq(doc.idlen, 4);
	ck_assert_uint_eq(doc.len, strlen(text));
	ck_assert_mem_eq(doc.body, text, doc.len);
	ck_assert_int_eq(doc.body[doc.len], '\0');
	assert_rev_eq(&doc.rev, &p.rev);
	ck_assert(!doc.deleted);
	ck_assert_uint_eq(doc.seq, p.seq);
	ck_assert_msg(doc.time_ms >= t0 - 1000 && doc.time_ms <= t1 + 1000,
		      "time_ms %lld not in [%lld, %lld]",
		      (long long)doc.time_ms, (long long)t0, (long long)t1);
	ck_assert_uint_eq(doc.natts, 0);
	ck_assert_ptr_null(doc.tree);
	doc_release(&doc);
	doc_release(&doc);   /* idempotent */
	ck_assert_ptr_null(doc.body);

	/* the same by its revision, and with the tree */
	OK(get(f.d, "doc1", &p.rev, DOC_GET_TREE, &doc));
	ck_assert_mem_eq(doc.body, text, strlen(text));
	ck_assert_ptr_nonnull(doc.tree);
	ck_assert_uint_eq(revtree_count(doc.tree), 1);
	doc_release(&doc);

	/* an edit naming its parent in "_rev" is stored as given too */
	snprintf(text2, sizeof(text2), "{ \"_rev\" : \"%s\",\"v\":2 }  ",
		 RS(&p.rev).s);
	ck_assert_int_eq(put(f.d, "doc1", text2, NULL, 0, &r2), 0);
	ck_assert_uint_eq(r2.gen, 2);
	expect_body(f.d, "doc1", NULL, text2);
	expect_body(f.d, "doc1", &p.rev, text);
	/* an older revision reads with the document's latest seq and its own
	 * time */
	{
		struct doc cur;
		uint64_t tseq;
		struct revtree *t = tree_of(f.d, "doc1", &tseq);

		revtree_free(t);
		OK(get(f.d, "doc1", NULL, 0, &cur));
		OK(get(f.d, "doc1", &p.rev, 0, &doc));
		ck_assert_uint_gt(cur.seq, p.seq);
		ck_assert_uint_eq(doc.seq, cur.seq);
		ck_assert_uint_eq(tseq, cur.seq);
		ck_assert_int_le(doc.time_ms, cur.time_ms);
		assert_rev_eq(&cur.rev, &r2);
		doc_release(&cur);
		doc_release(&doc);
	}
	fx_close(&f);
}
END_TEST

/* The same edits in two databases give the same revision ids. */
START_TEST(test_rev_deterministic)
{
	struct fx a, b;
	struct rev a1, a2, a3, b1, b2, b3, other;

	fx_open(&a);
	fx_open(&b);
	a1 = put_ok(a.d, "x", "{\"k\":1,\"s\":\"A\"}", NULL);
	b1 = put_ok(b.d, "x", "{ \"s\" : \"\\u0041\", \"k\" : 1 }\n", NULL);
	assert_rev_eq(&a1, &b1);
	ck_assert_uint_eq(a1.gen, 1);
	ck_assert(a1.bin);
	a2 = put_ok(a.d, "x", "{\"k\":2}", &a1);
	b2 = put_ok(b.d, "x", "{\"k\":2}", &b1);
	assert_rev_eq(&a2, &b2);
	a3 = del_ok(a.d, "x", &a2);
	b3 = del_ok(b.d, "x", &b2);
	assert_rev_eq(&a3, &b3);
	/* another body, another id; another document id, the same id */
	other = put_ok(b.d, "y", "{\"k\":1,\"s\":\"B\"}", NULL);
	ck_assert(!rev_eq(&other, &a1));
	other = put_ok(b.d, "z", "{\"k\":1,\"s\":\"A\"}", NULL);
	assert_rev_eq(&other, &a1);
	fx_close(&a);
	fx_close(&b);
}
END_TEST

/* Edits need the current leaf; failed ones write nothing; _rev is a parent. */
START_TEST(test_update_rules)
{
	char body[256];
	struct fx f;
	struct rev bogus = R("1-00000000000000000000000000000000");
	struct rev r1, r2, r3, r4;
	struct rev bogus2 = R("2-abc");
	struct revtree *t;
	uint64_t seq_before, seq_after;

	fx_open(&f);
	r1 = put_ok(f.d, "d", "{\"v\":1}", NULL);
	EXPECT_RC(put(f.d, "d", "{\"v\":\"again\"}", NULL, 0, NULL),
		  BARREL_E_CONFLICT);
	r2 = put_ok(f.d, "d", "{\"v\":2}", &r1);
	ck_assert_uint_eq(r2.gen, 2);
	t = tree_of(f.d, "d", &seq_before);
	revtree_free(t);
	/* stale parent */
	EXPECT_RC(put(f.d, "d", "{\"v\":\"stale\"}", &r1, 0, NULL),
		  BARREL_E_CONFLICT);
	/* unknown parents fail (which code: test_update_unknown_parent) */
	ck_assert_int_ne(put(f.d, "d", "{\"v\":\"unknown\"}", &bogus, 0, NULL),
			 0);
	ck_assert_int_ne(put(f.d, "d", "{\"v\":\"unknown\"}", &bogus2, 0,
			     NULL), 0);
	ck_assert_int_ne(put(f.d, "nodoc", "{}", &r1, 0, NULL), 0);
	expect_get_rc(f.d, "nodoc", NULL, DOC_GET_DELETED, BARREL_E_NOTFOUND);
	/* nothing of those was written */
	t = tree_of(f.d, "d", &seq_after);
	ck_assert_uint_eq(revtree_count(t), 2);
	ck_assert_uint_eq(seq_after, seq_before);
	revtree_free(t);
	expect_body(f.d, "d", NULL, "{\"v\":2}");

	/* the parent from the body's "_rev" */
	snprintf(body, sizeof(body), "{\"_rev\":\"%s\",\"v\":3}", RS(&r2).s);
	ck_assert_int_eq(put(f.d, "d", body, NULL, 0, &r3), 0);
	ck_assert_uint_eq(r3.gen, 3);
	/* a stale "_rev" conflicts */
	EXPECT_RC(put(f.d, "d", body, NULL, 0, NULL), BARREL_E_CONFLICT);
	/* an explicit parent is used over the body's "_rev" */
	ck_assert_int_eq(put(f.d, "d", body, &r3, 0, &r4), 0);
	ck_assert_uint_eq(r4.gen, 4);
	expect_winner(f.d, "d", RS(&r4).s, false);
	fx_close(&f);
}
END_TEST

/* A parent not in the tree is a conflict with a message, as CouchDB's 409,
 * and writes nothing. */
START_TEST(test_update_unknown_parent)
{
	struct fx f;
	struct rev r1, r2, unknown = R("1-0123456789abcdef0123456789abcdef");
	struct rev gen5 = R("5-abc");
	struct doc_put p;

	fx_open(&f);
	r1 = put_ok(f.d, "d", "{\"v\":1}", NULL);
	r2 = put_ok(f.d, "d", "{\"v\":2}", &r1);
	EXPECT_RC(put(f.d, "d", "{}", &r1, 0, NULL), BARREL_E_CONFLICT);
	req_init(&p, "d", "{\"v\":\"unknown parent\"}");
	p.parent = &unknown;
	EXPECT_RC(put_req(f.d, &p), BARREL_E_CONFLICT);
	ck_assert_uint_eq(p.seq, 0);
	ck_assert(strstr(p.error, "conflict"));
	EXPECT_RC(put(f.d, "d", "{}", &gen5, 0, NULL), BARREL_E_CONFLICT);
	EXPECT_RC(put(f.d, "nodoc", "{}", &r2, 0, NULL), BARREL_E_CONFLICT);
	expect_winner(f.d, "d", RS(&r2).s, false);
	fx_close(&f);
}
END_TEST

/* DOC_PUT_ON_WINNER edits the winner, creates, and recreates a deleted doc. */
START_TEST(test_put_on_winner)
{
	char body[256];
	struct fx f;
	struct rev r1, r2, r3, r4, w;

	fx_open(&f);
	r1 = put_ok(f.d, "d", "{\"v\":1}", NULL);
	r2 = put_ok(f.d, "d", "{\"v\":2}", &r1);
	/* stale "_rev" in the body, no parent */
	snprintf(body, sizeof(body), "{\"_rev\":\"%s\",\"v\":3}", RS(&r1).s);
	ck_assert_int_eq(put(f.d, "d", body, NULL, DOC_PUT_ON_WINNER, &r3), 0);
	ck_assert_uint_eq(r3.gen, 3);
	/* a stale explicit parent too */
	ck_assert_int_eq(put(f.d, "d", "{\"v\":4}", &r1, DOC_PUT_ON_WINNER,
			     &r4), 0);
	ck_assert_uint_eq(r4.gen, 4);
	expect_winner(f.d, "d", RS(&r4).s, false);
	{
		struct revtree *t = tree_of(f.d, "d", NULL);

		ck_assert_uint_eq(revtree_count(t), 4);  /* one branch */
		revtree_free(t);
	}
	expect_body(f.d, "d", &r2, "{\"v\":2}");
	/* creates */
	ck_assert_int_eq(put(f.d, "new", "{}", NULL, DOC_PUT_ON_WINNER, &w), 0);
	ck_assert_uint_eq(w.gen, 1);
	/* recreates on the deleted winner */
	w = del_ok(f.d, "new", &w);
	ck_assert_int_eq(put(f.d, "new", "{\"back\":1}", NULL,
			     DOC_PUT_ON_WINNER, &w), 0);
	ck_assert_uint_eq(w.gen, 3);
	expect_body(f.d, "new", NULL, "{\"back\":1}");
	fx_close(&f);
}
END_TEST

/* DOC_PUT_BRANCH turns an edit of a superseded revision into a conflict
 * branch (the mount's stale save); without it that edit is a conflict. */
START_TEST(test_put_branch)
{
	struct fx f;
	struct rev r1, r2, b, again;
	struct rev *conf = NULL;
	size_t nconf = 0;
	struct revtree *t;

	fx_open(&f);
	r1 = put_ok(f.d, "d", "{\"v\":1}", NULL);
	r2 = put_ok(f.d, "d", "{\"v\":2}", &r1);
	ck_assert_int_eq(put(f.d, "d", "{\"v\":\"stale\"}", &r1, 0, NULL),
			 BARREL_E_CONFLICT);
	ck_assert_int_eq(put(f.d, "d", "{\"v\":\"stale\"}", &r1,
			     DOC_PUT_BRANCH, &b), 0);
	ck_assert_uint_eq(b.gen, 2);
	ck_assert(!rev_eq(&b, &r2));
	/* the same stale edit again is the same revision: a conflict */
	ck_assert_int_eq(put(f.d, "d", "{\"v\":\"stale\"}", &r1,
			     DOC_PUT_BRANCH, &again), BARREL_E_CONFLICT);
	t = tree_of(f.d, "d", NULL);
	OK(revtree_conflicts(t, &conf, &nconf));
	ck_assert_uint_eq(nconf, 1);
	free(conf);
	revtree_free(t);
	expect_body(f.d, "d", &b, "{\"v\":\"stale\"}");
	expect_body(f.d, "d", &r2, "{\"v\":2}");
	/* on a leaf, BRANCH is a plain edit */
	ck_assert_int_eq(put(f.d, "d", "{\"v\":3}", &b, DOC_PUT_BRANCH, &b), 0);
	ck_assert_uint_eq(b.gen, 3);
	fx_close(&f);
}
END_TEST

/* A stale save of a revision whose record the history policy dropped
 * (and every ancestor's) branches with the winner's attachments. */
START_TEST(test_put_branch_pruned)
{
	struct docdb_opts o = { .keep_bodies = 1 };
	struct rev r[4], b;
	struct doc_att a;
	struct doc doc;
	struct doc_put p;
	struct fx f;

	fx_open_opts(&f, &o);
	att_bytes(f.d, "hello", 5, "a.txt", "text/plain", &a);
	req_init(&p, "d", "{\"v\":0}");
	p.atts = &a;
	p.natts = 1;
	ck_assert_int_eq(put_req(f.d, &p), 0);
	r[0] = p.rev;
	for (int i = 1; i < 4; i++)
		ck_assert_int_eq(put(f.d, "d", "{\"v\":1}", &r[i - 1],
				     DOC_PUT_KEEP_ATTS, &r[i]), 0);
	expect_get_rc(f.d, "d", &r[1], 0, BARREL_E_NOTFOUND);
	ck_assert_int_eq(put(f.d, "d", "{\"v\":\"stale\"}", &r[1],
			     DOC_PUT_BRANCH | DOC_PUT_KEEP_ATTS, &b), 0);
	ck_assert_uint_eq(b.gen, 3);
	OK(get(f.d, "d", &b, 0, &doc));
	ck_assert_uint_eq(doc.natts, 1);
	ck_assert_str_eq(doc.atts[0].name, "a.txt");
	doc_release(&doc);
	fx_close(&f);
}
END_TEST

/* A DOC_PUT_NOSYNC bulk is visible on return and durable after
 * bdb_sync(); a bulk with one durable write commits durably. */
START_TEST(test_put_nosync)
{
	struct fx f;
	struct doc_put p[2];
	struct rev r;

	fx_open(&f);
	req_init(&p[0], "lazy", "{\"l\":1}");
	p[0].flags = DOC_PUT_NOSYNC;
	req_init(&p[1], "durable", "{\"d\":1}");
	OK(docdb_put(f.d, p, 1));
	ck_assert_int_eq(p[0].rc, 0);
	expect_body(f.d, "lazy", NULL, "{\"l\":1}");
	OK(bdb_sync(docdb_bdb(f.d)));
	req_init(&p[0], "lazy2", "{\"l\":2}");
	p[0].flags = DOC_PUT_NOSYNC;
	OK(docdb_put(f.d, p, 2));
	ck_assert_int_eq(p[0].rc, 0);
	ck_assert_int_eq(p[1].rc, 0);
	fx_reopen(&f);
	expect_body(f.d, "lazy", NULL, "{\"l\":1}");
	expect_body(f.d, "lazy2", NULL, "{\"l\":2}");
	ck_assert_int_eq(put(f.d, "durable", "{}", NULL, 0, &r),
			 BARREL_E_CONFLICT);
	fx_close(&f);
}
END_TEST

/* DOC_PUT_NORMALIZE stores body_normalize()'s form under the same rev id. */
START_TEST(test_put_normalize)
{
	const char *text = "{ \"b\":1,  \"a\":\"x\\/y\", \"_id\":\"n\" }";
	struct fx f;
	struct body b;
	struct rev r1, r2;
	char *norm;
	size_t nlen;
	struct doc doc;

	fx_open(&f);
	ck_assert_int_eq(body_parse(text, strlen(text), &b, NULL), 0);
	OK(body_normalize(&b, &norm, &nlen));
	body_release(&b);
	ck_assert_int_eq(put(f.d, "n", text, NULL, DOC_PUT_NORMALIZE, &r1), 0);
	ck_assert_int_eq(put(f.d, "m", text, NULL, 0, &r2), 0);
	assert_rev_eq(&r1, &r2);
	OK(get(f.d, "n", NULL, 0, &doc));
	ck_assert_uint_eq(doc.len, nlen);
	ck_assert_mem_eq(doc.body, norm, nlen);
	doc_release(&doc);
	expect_body(f.d, "m", NULL, text);
	free(norm);
	fx_close(&f);
}
END_TEST

/* doc_json drops '_' members and adds _id/_rev first, _deleted, _revisions. */
START_TEST(test_doc_json)
{
	char body[256];
	struct fx f;
	struct rev r1, r2, r3;
	struct doc doc;
	struct json_object *o, *v, *ids;
	struct json_object_iterator it;

	fx_open(&f);
	r1 = put_ok(f.d, "j", "{\"x\":1}", NULL);
	snprintf(body, sizeof(body), "{\"_id\":\"j\",\"_rev\":\"%s\",\"x\":2}",
		 RS(&r1).s);
	r2 = put_ok(f.d, "j", body, NULL);
	OK(get(f.d, "j", NULL, DOC_GET_TREE, &doc));
	OK(doc_json(&doc, 0, &o));
	ck_assert_int_eq(json_object_object_length(o), 1);
	ck_assert_int_eq(json_object_get_int(jget(o, "x")), 2);
	json_object_put(o);

	OK(doc_json(&doc, DOC_JSON_META | DOC_JSON_REVISIONS, &o));
	it = json_object_iter_begin(o);
	ck_assert_str_eq(json_object_iter_peek_name(&it), "_id");
	json_object_iter_next(&it);
	ck_assert_str_eq(json_object_iter_peek_name(&it), "_rev");
	ck_assert_str_eq(json_object_get_string(jget(o, "_id")), "j");
	ck_assert_str_eq(json_object_get_string(jget(o, "_rev")), RS(&r2).s);
	ck_assert_ptr_null(jget(o, "_deleted"));
	ck_assert_int_eq(json_object_get_int(jget(o, "x")), 2);
	v = jget(o, "_revisions");
	ck_assert_ptr_nonnull(v);
	ck_assert_int_eq(json_object_get_int64(jget(v, "start")), 2);
	ids = jget(v, "ids");
	ck_assert_uint_eq(json_object_array_length(ids), 2);
	ck_assert_str_eq(json_object_get_string(
		json_object_array_get_idx(ids, 0)), strchr(RS(&r2).s, '-') + 1);
	ck_assert_str_eq(json_object_get_string(
		json_object_array_get_idx(ids, 1)), strchr(RS(&r1).s, '-') + 1);
	json_object_put(o);
	doc_release(&doc);

	/* a deletion says so */
	r3 = del_ok(f.d, "j", &r2);
	OK(get(f.d, "j", NULL, DOC_GET_DELETED, &doc));
	OK(doc_json(&doc, DOC_JSON_META, &o));
	ck_assert_str_eq(json_object_get_string(jget(o, "_rev")), RS(&r3).s);
	ck_assert(json_object_get_boolean(jget(o, "_deleted")));
	json_object_put(o);
	doc_release(&doc);
	fx_close(&f);
}
END_TEST

/* doc_json_text() splices a body with no reserved member after _id and
 * _rev, byte for byte, and otherwise gives doc_json()'s document. */
static void check_text(struct docdb *d, const char *id, unsigned flags,
		       const char *want)
{
	struct bbuf b = { 0 };
	struct doc doc;
	struct json_object *o, *t;
	char *exp = NULL;
	struct rev r;

	OK(get(d, id, NULL, DOC_GET_DELETED, &doc));
	r = doc.rev;
	OK(doc_json_text(&doc, flags, &b));
	if (want) {                   /* spliced: want has %s for _rev */
		ck_assert_int_gt(asprintf(&exp, want, RS(&r).s), 0);
		ck_assert_str_eq(b.p, exp);
		free(exp);
	}
	OK(doc_json(&doc, flags & ~DOC_JSON_ANY_SPACE, &o));
	t = json_tokener_parse(b.p);
	ck_assert_msg(t && json_object_equal(o, t), "%s", b.p);
	ck_assert_msg(!strncmp(b.p, "{\"_id\":", 7), "%s", b.p);
	json_object_put(o);
	json_object_put(t);
	bbuf_release(&b);
	doc_release(&doc);
}

START_TEST(test_doc_json_text)
{
	const unsigned m = DOC_JSON_META | DOC_JSON_ATTS;
	const unsigned sp = m | DOC_JSON_ANY_SPACE;
	struct fx f;
	struct rev r;

	fx_open(&f);
	put_ok(f.d, "p", "{\"a\":1,\"b\":[1,{\"_c\":\"\\\"_d\"}]}", NULL);
	check_text(f.d, "p", m,
		   "{\"_id\":\"p\",\"_rev\":\"%s\",\"a\":1,\"b\":[1,{\"_c\":\"\\\"_d\"}]}");
	put_ok(f.d, "q\"x\\y", "{}", NULL);
	check_text(f.d, "q\"x\\y", m,
		   "{\"_id\":\"q\\\"x\\\\y\",\"_rev\":\"%s\"}");
	put_ok(f.d, "e", " { \n} ", NULL);
	check_text(f.d, "e", sp, "{\"_id\":\"e\",\"_rev\":\"%s\"}");
	/* whitespace: kept only when allowed, else compact */
	put_ok(f.d, "s", "{ \"a\" : \"x y\" }\n", NULL);
	check_text(f.d, "s", sp,
		   "{\"_id\":\"s\",\"_rev\":\"%s\", \"a\" : \"x y\" }");
	check_text(f.d, "s", m, "{\"_id\":\"s\",\"_rev\":\"%s\",\"a\":\"x y\"}");
	/* a reserved member, or a name that may spell one: doc_json() */
	put_ok(f.d, "r", "{\"_id\":\"r\",\"a\":2}", NULL);
	check_text(f.d, "r", m, NULL);
	put_ok(f.d, "u", "{\"\\u0061\":1}", NULL);
	check_text(f.d, "u", m, NULL);
	/* a deletion has _deleted */
	r = put_ok(f.d, "x", "{\"a\":1}", NULL);
	del_ok(f.d, "x", &r);
	check_text(f.d, "x", m, NULL);
	fx_close(&f);
}
END_TEST

/* ---- deletion ---- */

/* A deleted doc is NOTFOUND (deleted set), "{}" when asked, recreatable. */
START_TEST(test_delete_recreate)
{
	char body[128];
	struct fx f;
	struct rev r1, r2, r3, r4;
	struct doc doc;
	struct revtree *t;

	fx_open(&f);
	r1 = put_ok(f.d, "d", "{\"v\":1}", NULL);
	r2 = del_ok(f.d, "d", &r1);

	memset(&doc, 0, sizeof(doc));
	EXPECT_RC(docdb_get(f.d, NULL, "d", 1, NULL, 0, &doc),
		  BARREL_E_NOTFOUND);
	ck_assert(doc.deleted);
	doc_release(&doc);

	OK(get(f.d, "d", NULL, DOC_GET_DELETED, &doc));
	ck_assert(doc.deleted);
	assert_rev_eq(&doc.rev, &r2);
	ck_assert_str_eq(doc.body, "{}");
	doc_release(&doc);
	expect_body(f.d, "d", &r1, "{\"v\":1}");
	t = tree_of(f.d, "d", NULL);
	ck_assert(revtree_is_deleted(t));
	revtree_free(t);

	/* an unknown document is not "deleted" */
	memset(&doc, 0, sizeof(doc));
	EXPECT_RC(docdb_get(f.d, NULL, "zz", 2, NULL, 0, &doc),
		  BARREL_E_NOTFOUND);
	ck_assert(!doc.deleted);
	doc_release(&doc);

	/* recreate: a new document on top of the deleted leaf */
	r3 = put_ok(f.d, "d", "{\"v\":\"again\"}", NULL);
	ck_assert_uint_eq(r3.gen, 3);
	expect_body(f.d, "d", NULL, "{\"v\":\"again\"}");
	t = tree_of(f.d, "d", NULL);
	ck_assert(!revtree_is_deleted(t));
	ck_assert_uint_eq(revtree_count(t), 3);
	revtree_free(t);

	/* "_deleted": true in the body deletes too */
	snprintf(body, sizeof(body), "{\"_rev\":\"%s\",\"_deleted\":true}",
		 RS(&r3).s);
	ck_assert_int_eq(put(f.d, "d", body, NULL, 0, &r4), 0);
	ck_assert_uint_eq(r4.gen, 4);
	expect_get_rc(f.d, "d", NULL, 0, BARREL_E_NOTFOUND);
	OK(get(f.d, "d", NULL, DOC_GET_DELETED, &doc));
	ck_assert(doc.deleted);
	assert_rev_eq(&doc.rev, &r4);
	doc_release(&doc);
	fx_close(&f);
}
END_TEST

/* ---- replication ---- */

/* Grafts in any order, and repeated, give the same tree; repeats are no-ops. */
START_TEST(test_replicated_graft_order)
{
	struct fx a, b;
	struct enc ea, eb;
	struct doc_put p;
	uint64_t seq, tseq0, tseq1;

	fx_open(&a);
	fx_open(&b);
	/* A: 3-c 2-b 1-a; B: 4-e 3-d 2-b 1-a; C: 2-x 1-a */
	ck_assert_int_eq(rep(a.d, "r", "\"v\":\"A\"", false, &seq,
			     "3-c", "2-b", "1-a", NULL), 0);
	ck_assert_uint_gt(seq, 0);
	ck_assert_int_eq(rep(a.d, "r", "\"v\":\"B\"", false, NULL,
			     "4-e", "3-d", "2-b", "1-a", NULL), 0);
	ck_assert_int_eq(rep(a.d, "r", "\"v\":\"C\"", false, NULL,
			     "2-x", "1-a", NULL), 0);

	ck_assert_int_eq(rep(b.d, "r", "\"v\":\"C\"", false, NULL,
			     "2-x", "1-a", NULL), 0);
	ck_assert_int_eq(rep(b.d, "r", "\"v\":\"B\"", false, NULL,
			     "4-e", "3-d", "2-b", "1-a", NULL), 0);
	ck_assert_int_eq(rep(b.d, "r", "\"v\":\"A\"", false, NULL,
			     "3-c", "2-b", "1-a", NULL), 0);
	/* again: a no-op that succeeds and names the revision */
	{
		struct revtree *t = tree_of(b.d, "r", &tseq0);

		revtree_free(t);
	}
	req_init(&p, "r", "{\"_revisions\":{\"start\":3,\"ids\":[\"c\",\"b\","
		 "\"a\"]},\"v\":\"A\"}");
	p.flags = DOC_PUT_REPLICATED;
	ck_assert_int_eq(put_req(b.d, &p), 0);
	ck_assert_uint_eq(p.seq, 0);
	{
		struct rev want = R("3-c");

		assert_rev_eq(&p.rev, &want);
	}
	{
		struct revtree *t = tree_of(b.d, "r", &tseq1);

		revtree_free(t);
	}
	ck_assert_uint_eq(tseq1, tseq0);

	ea = tree_enc(a.d, "r");
	eb = tree_enc(b.d, "r");
	ck_assert_msg(ea.len == eb.len && memcmp(ea.buf, eb.buf, ea.len) == 0,
		      "trees differ (%zu and %zu bytes)", ea.len, eb.len);
	free(ea.buf);
	free(eb.buf);

	/* the same winner and bodies in both; ancestors only named are not
	 * readable */
	for (int i = 0; i < 2; i++) {
		struct docdb *d = i ? b.d : a.d;
		struct rev c = R("3-c"), e = R("4-e"), x = R("2-x");
		struct rev b2 = R("2-b"), a1 = R("1-a");

		expect_winner(d, "r", "4-e", false);
		expect_member(d, "r", NULL, 0, "v", "B");
		expect_member(d, "r", &e, 0, "v", "B");
		expect_member(d, "r", &c, 0, "v", "A");
		expect_member(d, "r", &x, 0, "v", "C");
		expect_get_rc(d, "r", &b2, 0, BARREL_E_NOTFOUND);
		expect_get_rc(d, "r", &a1, 0, BARREL_E_NOTFOUND);
	}
	fx_close(&a);
	fx_close(&b);
}
END_TEST

/* A replicated body without _revisions is grafted at its _rev or parent. */
START_TEST(test_replicated_rev_alone)
{
	struct fx f;
	struct doc_put p;
	struct rev r6 = R("6-def");

	fx_open(&f);
	req_init(&p, "s", "{\"_rev\":\"5-abc\",\"v\":\"five\"}");
	p.flags = DOC_PUT_REPLICATED;
	ck_assert_int_eq(put_req(f.d, &p), 0);
	{
		struct rev want = R("5-abc");

		assert_rev_eq(&p.rev, &want);
	}
	expect_winner(f.d, "s", "5-abc", false);
	expect_member(f.d, "s", NULL, 0, "v", "five");

	req_init(&p, "t", "{\"v\":\"six\"}");
	p.flags = DOC_PUT_REPLICATED;
	p.parent = &r6;
	ck_assert_int_eq(put_req(f.d, &p), 0);
	assert_rev_eq(&p.rev, &r6);
	expect_winner(f.d, "t", "6-def", false);
	expect_member(f.d, "t", &r6, 0, "v", "six");
	fx_close(&f);
}
END_TEST

/* CouchDB's winner, _conflicts, _deleted_conflicts, deletion of branches. */
START_TEST(test_conflicts)
{
	struct fx f;
	struct doc doc;
	struct json_object *o, *c;
	struct rev a1 = R("1-a"), b2 = R("2-b"), c2 = R("2-c"), a3 = R("3-a");
	struct rev d4, d3, w;
	struct rows *rs;

	fx_open(&f);
	ck_assert_int_eq(rep(f.d, "k", "\"v\":\"1a\"", false, NULL, "1-a",
			     NULL), 0);
	ck_assert_int_eq(rep(f.d, "k", "\"v\":\"2b\"", false, NULL, "2-b",
			     "1-a", NULL), 0);
	ck_assert_int_eq(rep(f.d, "k", "\"v\":\"2c\"", false, NULL, "2-c",
			     "1-a", NULL), 0);
	/* same generation: the greater hash wins */
	expect_winner(f.d, "k", "2-c", false);
	expect_member(f.d, "k", NULL, 0, "v", "2c");
	OK(get(f.d, "k", NULL, DOC_GET_TREE, &doc));
	assert_rev_eq(&doc.rev, &c2);
	OK(doc_json(&doc, DOC_JSON_CONFLICTS | DOC_JSON_DELETED_CONFLICTS, &o));
	c = jget(o, "_conflicts");
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(json_object_array_length(c), 1);
	ck_assert_str_eq(json_object_get_string(
		json_object_array_get_idx(c, 0)), "2-b");
	c = jget(o, "_deleted_conflicts");
	ck_assert(c == NULL || json_object_array_length(c) == 0);
	ck_assert_str_eq(json_object_get_string(jget(o, "v")), "2c");
	json_object_put(o);
	doc_release(&doc);

	/* a higher generation wins over a greater hash */
	ck_assert_int_eq(rep(f.d, "k", "\"v\":\"3a\"", false, NULL, "3-a",
			     "2-b", "1-a", NULL), 0);
	expect_winner(f.d, "k", "3-a", false);
	expect_member(f.d, "k", NULL, 0, "v", "3a");

	/* delete the winning branch: the live one wins, its body readable */
	d4 = del_ok(f.d, "k", &a3);
	expect_winner(f.d, "k", "2-c", false);
	expect_member(f.d, "k", NULL, 0, "v", "2c");
	OK(get(f.d, "k", NULL, DOC_GET_TREE, &doc));
	ck_assert(!doc.deleted);
	assert_rev_eq(&doc.rev, &c2);
	OK(doc_json(&doc, DOC_JSON_CONFLICTS | DOC_JSON_DELETED_CONFLICTS, &o));
	c = jget(o, "_conflicts");
	ck_assert(c == NULL || json_object_array_length(c) == 0);
	c = jget(o, "_deleted_conflicts");
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(json_object_array_length(c), 1);
	ck_assert_str_eq(json_object_get_string(
		json_object_array_get_idx(c, 0)), RS(&d4).s);
	json_object_put(o);
	doc_release(&doc);

	/* every revision that has a body is readable by it */
	expect_member(f.d, "k", &a1, 0, "v", "1a");
	expect_member(f.d, "k", &b2, 0, "v", "2b");
	expect_member(f.d, "k", &c2, 0, "v", "2c");
	expect_member(f.d, "k", &a3, 0, "v", "3a");
	OK(get(f.d, "k", &d4, DOC_GET_DELETED, &doc));
	ck_assert(doc.deleted);
	assert_rev_eq(&doc.rev, &d4);
	doc_release(&doc);

	/* live while one leaf is */
	rs = changes(f.d, NULL, 0, 0, DOC_ROWS_ALL_LEAVES, NULL);
	ck_assert_uint_eq(rs->n, 1);
	ck_assert(!rs->r[0].deleted);
	assert_rev_eq(&rs->r[0].revs[0], &c2);
	ck_assert_uint_eq(rs->r[0].nrevs, 2);
	assert_rev_eq(&rs->r[0].revs[1], &d4);
	free(rs);

	/* delete the other leaf: now the document is deleted */
	d3 = del_ok(f.d, "k", &c2);
	memset(&doc, 0, sizeof(doc));
	EXPECT_RC(docdb_get(f.d, NULL, "k", 1, NULL, 0, &doc),
		  BARREL_E_NOTFOUND);
	ck_assert(doc.deleted);
	doc_release(&doc);
	/* among deleted leaves the higher generation wins */
	expect_winner(f.d, "k", RS(&d4).s, true);
	OK(get(f.d, "k", NULL, DOC_GET_DELETED, &doc));
	assert_rev_eq(&doc.rev, &d4);
	doc_release(&doc);
	rs = changes(f.d, NULL, 0, 0, 0, NULL);
	ck_assert_uint_eq(rs->n, 1);
	ck_assert(rs->r[0].deleted);
	free(rs);
	expect_get_rc(f.d, "k", &d3, DOC_GET_DELETED, 0);

	/* DOC_PUT_ON_WINNER recreates on the deleted winner */
	ck_assert_int_eq(put(f.d, "k", "{\"v\":\"5\"}", NULL,
			     DOC_PUT_ON_WINNER, &w), 0);
	ck_assert_uint_eq(w.gen, 5);
	expect_body(f.d, "k", NULL, "{\"v\":\"5\"}");
	fx_close(&f);
}
END_TEST

static size_t table_count(struct docdb *d, const char *name);

/* Purge removes a losing leaf (its body and unshared ancestors), then
 * the winner (another branch's record moves inline), then the document. */
START_TEST(test_purge)
{
	struct fx f;
	struct doc doc;
	struct rev b2 = R("2-b"), c2 = R("2-c"), a1 = R("1-a"), nope = R("9-z");
	struct rev *gone = NULL;
	struct rows *rs;
	size_t n;

	fx_open(&f);
	ck_assert_int_eq(rep(f.d, "k", "\"v\":\"2b\"", false, NULL, "2-b",
			     "1-a", NULL), 0);
	ck_assert_int_eq(rep(f.d, "k", "\"v\":\"2c\"", false, NULL, "2-c",
			     "1-a", NULL), 0);
	expect_winner(f.d, "k", "2-c", false);
	/* not leaves, or unknown: nothing happens */
	OK(docdb_purge(f.d, "k", 1, (struct rev[]){ a1, nope }, 2, &gone, &n));
	ck_assert_uint_eq(n, 0);
	free(gone);
	/* the loser goes; the ancestor stays (the winner descends from it) */
	OK(docdb_purge(f.d, "k", 1, &b2, 1, &gone, &n));
	ck_assert_uint_eq(n, 1);
	assert_rev_eq(&gone[0], &b2);
	free(gone);
	expect_get_rc(f.d, "k", &b2, 0, BARREL_E_NOTFOUND);
	OK(get(f.d, "k", NULL, DOC_GET_TREE, &doc));
	ck_assert_uint_eq(revtree_count(doc.tree), 2);
	doc_release(&doc);
	/* a new loser, then the winner goes: the loser's record wins */
	ck_assert_int_eq(rep(f.d, "k", "\"v\":\"2b\"", false, NULL, "2-b",
			     "1-a", NULL), 0);
	OK(docdb_purge(f.d, "k", 1, &c2, 1, NULL, NULL));
	expect_winner(f.d, "k", "2-b", false);
	expect_member(f.d, "k", NULL, 0, "v", "2b");
	fx_reopen(&f);
	expect_member(f.d, "k", NULL, 0, "v", "2b");
	/* the last leaf: the document is gone from reads and the feed */
	OK(docdb_purge(f.d, "k", 1, &b2, 1, NULL, NULL));
	expect_get_rc(f.d, "k", NULL, DOC_GET_DELETED, BARREL_E_NOTFOUND);
	rs = changes(f.d, NULL, 0, 0, 0, NULL);
	ck_assert_uint_eq(rs->n, 0);
	free(rs);
	EXPECT_RC(docdb_purge(f.d, "k", 1, &b2, 1, NULL, NULL),
		  BARREL_E_NOTFOUND);
	ck_assert_uint_eq(table_count(f.d, "revs"), 0);
	fx_close(&f);
}
END_TEST

/* ---- history limits ---- */

/* revs_limit 5 keeps 5 revisions after 20 edits; stemmed bodies are gone. */
START_TEST(test_revs_limit)
{
	struct fx f;
	struct rev r[21], path[32];
	struct revtree *t;
	size_t n = 0;
	char body[64];

	fx_open(&f);
	OK(docdb_set_revs_limit(f.d, 5));
	ck_assert_uint_eq(docdb_revs_limit(f.d), 5);
	for (int i = 1; i <= 20; i++) {
		snprintf(body, sizeof(body), "{\"i\":%d}", i);
		r[i] = put_ok(f.d, "d", body, i > 1 ? &r[i - 1] : NULL);
		ck_assert_uint_eq(r[i].gen, (uint64_t)i);
	}
	t = tree_of(f.d, "d", NULL);
	ck_assert_uint_eq(revtree_count(t), 5);
	OK(revtree_path(t, &r[20], path, 32, &n));
	ck_assert_uint_eq(n, 5);
	assert_rev_eq(&path[4], &r[16]);
	revtree_free(t);
	for (int i = 1; i <= 20; i++) {
		if (i <= 15) {
			expect_get_rc(f.d, "d", &r[i], 0, BARREL_E_NOTFOUND);
		} else {
			snprintf(body, sizeof(body), "{\"i\":%d}", i);
			expect_body(f.d, "d", &r[i], body);
		}
	}
	/* editing a stemmed revision is refused */
	ck_assert_int_ne(put(f.d, "d", "{}", &r[3], 0, NULL), 0);
	/* what was stemmed is gone from storage: 20 more edits leave as
	 * many entries */
	{
		uint64_t e20 = stat_of(f.d).entries;
		uint64_t l20 = stat_of(f.d).live_bytes;
		struct rev last = r[20];

		for (int i = 21; i <= 40; i++) {
			snprintf(body, sizeof(body), "{\"i\":%d}", i);
			last = put_ok(f.d, "d", body, &last);
		}
		ck_assert_uint_eq(stat_of(f.d).entries, e20);
		/* the retained records of stemmed revisions were released:
		 * live bytes stay put (20 more kept would double them) */
		ck_assert_uint_lt(stat_of(f.d).live_bytes, l20 + l20 / 5);
	}
	fx_close(&f);
}
END_TEST

/* Entries of the table name of d's database (FORMAT.md "Documents"). */
static size_t table_count(struct docdb *d, const char *name)
{
	struct bsnap *snap;
	struct bcursor *c;
	struct bentry en;
	uint32_t id;
	size_t n = 0;
	int rc;

	OK(bdb_table(docdb_bdb(d), name, &id));
	OK(bdb_snapshot(docdb_bdb(d), &snap));
	OK(bsnap_scan(snap, id, NULL, 0, NULL, 0, 0, &c));
	while ((rc = bcursor_next(c, &en)) == 1)
		n++;
	ck_assert_int_eq(rc, 0);
	bcursor_free(c);
	bsnap_release(snap);
	return n;
}

/* Collect every segment with garbage; retained records move to "revs". */
static void gc_all(struct docdb *d)
{
	struct bgc_stats st;

	OK(bdb_gc(docdb_bdb(d), 1.0, &st));
}

/* Bodies follow the winner: the old winner of an edit stays in its old
 * document record (retained), a winner from another branch moves inline,
 * a new revision that does not win goes to "revs"; GC moves retained
 * bodies to "revs"; every one stays readable, and body numbers are not
 * reused after a reopen. */
START_TEST(test_bodies_follow_winner)
{
	struct docdb_opts o = { .keep_bodies = 1 };
	struct rev r1, r2, r3, b3, b4, r5;
	char b3s[REV_STR_SIZE];
	struct fx f;

	fx_open(&f);
	r1 = put_ok(f.d, "b", "{\"v\":1}", NULL);
	ck_assert_uint_eq(table_count(f.d, "revs"), 0);
	r2 = put_ok(f.d, "b", "{\"v\":2}", &r1);
	ck_assert_uint_eq(table_count(f.d, "revs"), 0);     /* r1 retained */
	/* a longer branch from r1 wins: r2 stays in its record too */
	snprintf(b3s, sizeof(b3s), "3-%s", "ffffffffffffffffffffffffffffffff");
	ck_assert_int_eq(rep(f.d, "b", "\"v\":\"b\"", false, NULL, b3s,
			     "2-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", RS(&r1).s,
			     NULL), 0);
	b3 = R(b3s);
	expect_winner(f.d, "b", b3s, false);
	ck_assert_uint_eq(table_count(f.d, "revs"), 0);
	expect_body(f.d, "b", &r2, "{\"v\":2}");
	/* deleting it lets r2 win again: r2 moves inline from its retained
	 * record, b3 is retained, the tombstone b4 goes to "revs" */
	b4 = del_ok(f.d, "b", &b3);
	expect_winner(f.d, "b", RS(&r2).s, false);
	ck_assert_uint_eq(table_count(f.d, "revs"), 1);          /* b4 */
	expect_body(f.d, "b", NULL, "{\"v\":2}");
	expect_body(f.d, "b", &r1, "{\"v\":1}");
	expect_member(f.d, "b", &b3, 0, "v", "b");
	expect_get_rc(f.d, "b", &b4, 0, 0);

	/* GC moves the retained bodies (r1, b3) to "revs" */
	gc_all(f.d);
	ck_assert_uint_eq(table_count(f.d, "revs"), 3);
	expect_body(f.d, "b", &r1, "{\"v\":1}");
	expect_member(f.d, "b", &b3, 0, "v", "b");

	/* after a reopen the counter goes on: nothing is overwritten */
	fx_reopen(&f);
	r3 = put_ok(f.d, "b", "{\"v\":3}", &r2);
	ck_assert_uint_eq(table_count(f.d, "revs"), 3);     /* r2 retained */
	gc_all(f.d);
	ck_assert_uint_eq(table_count(f.d, "revs"), 4);
	expect_winner(f.d, "b", RS(&r3).s, false);
	expect_body(f.d, "b", NULL, "{\"v\":3}");
	expect_body(f.d, "b", &r2, "{\"v\":2}");
	expect_body(f.d, "b", &r1, "{\"v\":1}");
	expect_member(f.d, "b", &b3, 0, "v", "b");
	expect_get_rc(f.d, "b", &b4, 0, 0);
	fx_close(&f);

	/* keep_bodies 1 on a line of edits: the winner's body only, and
	 * nothing is retained for GC to move */
	fx_open_opts(&f, &o);
	r1 = put_ok(f.d, "k", "{\"v\":1}", NULL);
	r2 = put_ok(f.d, "k", "{\"v\":2}", &r1);
	r5 = put_ok(f.d, "k", "{\"v\":3}", &r2);
	gc_all(f.d);
	ck_assert_uint_eq(table_count(f.d, "revs"), 0);
	expect_body(f.d, "k", &r5, "{\"v\":3}");
	expect_get_rc(f.d, "k", &r1, 0, BARREL_E_NOTFOUND);
	fx_close(&f);
}
END_TEST

/* One bulk writes a document twice (replicated revisions 1-a, then 2-b on
 * it): the record the first write made is not final before the commit,
 * so 1-a's body takes a number in "revs" instead of being retained; it
 * reads back before and after GC. */
START_TEST(test_bulk_twice_not_retained)
{
	struct rev a = R("1-a");
	struct doc_put p[2];
	struct fx f;

	fx_open(&f);
	req_init(&p[0], "t", "{\"_rev\":\"1-a\",\"v\":\"one\"}");
	req_init(&p[1], "t", "{\"_revisions\":{\"start\":2,\"ids\":[\"b\","
		 "\"a\"]},\"v\":\"two\"}");
	p[0].flags = p[1].flags = DOC_PUT_REPLICATED;
	OK(docdb_put(f.d, p, 2));
	OK(p[0].rc);
	OK(p[1].rc);
	expect_winner(f.d, "t", "2-b", false);
	ck_assert_uint_eq(table_count(f.d, "revs"), 1);
	expect_member(f.d, "t", NULL, 0, "v", "two");
	expect_member(f.d, "t", &a, 0, "v", "one");
	gc_all(f.d);
	fx_reopen(&f);
	expect_member(f.d, "t", &a, 0, "v", "one");
	ck_assert_uint_eq(table_count(f.d, "revs"), 1);
	fx_close(&f);
}
END_TEST

/* keep_bodies 2 keeps the last 2 bodies per branch and the branch point. */
START_TEST(test_keep_bodies)
{
	struct docdb_opts o = { .keep_bodies = 2 };
	struct fx f;
	struct rev r[11], a[9], b6 = R("6-b"), b7 = R("7-b"), b8 = R("8-b");
	struct revtree *t;
	char body[64];

	fx_open_opts(&f, &o);
	for (int i = 1; i <= 10; i++) {
		snprintf(body, sizeof(body), "{\"i\":%d}", i);
		r[i] = put_ok(f.d, "d", body, i > 1 ? &r[i - 1] : NULL);
	}
	t = tree_of(f.d, "d", NULL);
	ck_assert_uint_eq(revtree_count(t), 10);
	revtree_free(t);
	for (int i = 1; i <= 10; i++) {
		if (i <= 8) {
			expect_get_rc(f.d, "d", &r[i], 0, BARREL_E_NOTFOUND);
		} else {
			snprintf(body, sizeof(body), "{\"i\":%d}", i);
			expect_body(f.d, "d", &r[i], body);
		}
	}

	/* dropped bodies are gone from storage: more edits, same entries */
	{
		uint64_t e10 = stat_of(f.d).entries;
		struct rev last = r[10];

		for (int i = 11; i <= 20; i++) {
			snprintf(body, sizeof(body), "{\"i\":%d}", i);
			last = put_ok(f.d, "d", body, &last);
		}
		ck_assert_uint_eq(stat_of(f.d).entries, e10);
	}

	/* c: 1..5, then 6a, the branch 6-b off 5, then both go on to 8 */
	for (int i = 1; i <= 6; i++) {
		snprintf(body, sizeof(body), "{\"a\":%d}", i);
		a[i] = put_ok(f.d, "c", body, i > 1 ? &a[i - 1] : NULL);
	}
	{
		char ids5[REV_STR_SIZE + 2];

		snprintf(ids5, sizeof(ids5), "%s", RS(&a[5]).s);
		ck_assert_int_eq(rep(f.d, "c", "\"b\":\"6\"", false, NULL,
				     "6-b", ids5, NULL), 0);
	}
	ck_assert_int_eq(rep(f.d, "c", "\"b\":\"7\"", false, NULL, "7-b", "6-b",
			     NULL), 0);
	ck_assert_int_eq(rep(f.d, "c", "\"b\":\"8\"", false, NULL, "8-b", "7-b",
			     NULL), 0);
	for (int i = 7; i <= 8; i++) {
		snprintf(body, sizeof(body), "{\"a\":%d}", i);
		a[i] = put_ok(f.d, "c", body, &a[i - 1]);
	}
	/* kept: both leaves and the revision before each, the ancestor */
	expect_body(f.d, "c", &a[8], "{\"a\":8}");
	expect_body(f.d, "c", &a[7], "{\"a\":7}");
	expect_member(f.d, "c", &b8, 0, "b", "8");
	expect_member(f.d, "c", &b7, 0, "b", "7");
	expect_body(f.d, "c", &a[5], "{\"a\":5}");
	/* dropped: older revisions on each branch */
	expect_get_rc(f.d, "c", &a[6], 0, BARREL_E_NOTFOUND);
	expect_get_rc(f.d, "c", &b6, 0, BARREL_E_NOTFOUND);
	for (int i = 1; i <= 4; i++)
		expect_get_rc(f.d, "c", &a[i], 0, BARREL_E_NOTFOUND);
	fx_close(&f);
}
END_TEST

/* ---- changes feed ---- */

/* The feed: one row per doc at its latest seq; since, limit, order, last. */
START_TEST(test_changes)
{
	struct fx f;
	struct rev ra1, ra2, rb, rc1, rc2;
	struct rows *rs;
	uint64_t sa, sb, sc, last = 0;
	struct doc_put p;
	struct bsnap *snap;
	uint64_t lrev = 0;

	fx_open(&f);
	/* empty: last is the snapshot's sequence */
	OK(bdb_snapshot(docdb_bdb(f.d), &snap));
	rs = changes(f.d, snap, 0, 0, 0, &last);
	ck_assert_uint_eq(rs->n, 0);
	ck_assert_uint_eq(last, bsnap_seq(snap));
	free(rs);
	bsnap_release(snap);

	ra1 = put_ok(f.d, "a", "{\"n\":\"a1\"}", NULL);
	req_init(&p, "b", "{\"n\":\"b\"}");
	ck_assert_int_eq(put_req(f.d, &p), 0);
	rb = p.rev;
	sb = p.seq;
	rc1 = put_ok(f.d, "c", "{\"n\":\"c\"}", NULL);
	OK(docdb_local_put(f.d, "loc", 3, "{}", 2, 0, &lrev, NULL));
	req_init(&p, "a", "{\"n\":\"a2\"}");
	p.parent = &ra1;
	ck_assert_int_eq(put_req(f.d, &p), 0);
	ra2 = p.rev;
	sa = p.seq;
	req_init(&p, "c", NULL);
	p.parent = &rc1;
	p.deleted = true;
	ck_assert_int_eq(put_req(f.d, &p), 0);
	rc2 = p.rev;
	sc = p.seq;
	ck_assert_uint_lt(sb, sa);
	ck_assert_uint_lt(sa, sc);

	/* everything: b, a (moved by its update), c (deleted) */
	rs = changes(f.d, NULL, 0, 0, 0, &last);
	ck_assert_str_eq(row_ids(rs), "b a c");
	ck_assert_uint_eq(rs->r[0].seq, sb);
	ck_assert_uint_eq(rs->r[1].seq, sa);
	ck_assert_uint_eq(rs->r[2].seq, sc);
	ck_assert(!rs->r[0].deleted);
	ck_assert(!rs->r[1].deleted);
	ck_assert(rs->r[2].deleted);
	assert_rev_eq(&rs->r[0].revs[0], &rb);
	assert_rev_eq(&rs->r[1].revs[0], &ra2);
	assert_rev_eq(&rs->r[2].revs[0], &rc2);
	for (size_t i = 0; i < rs->n; i++) {
		ck_assert_uint_eq(rs->r[i].nrevs, 1);
		ck_assert(!rs->r[i].has_doc);
	}
	ck_assert_uint_eq(last, sc);
	free(rs);

	/* since */
	rs = changes(f.d, NULL, sb, 0, 0, &last);
	ck_assert_str_eq(row_ids(rs), "a c");
	ck_assert_uint_eq(last, sc);
	free(rs);
	rs = changes(f.d, NULL, sa, 0, 0, &last);
	ck_assert_str_eq(row_ids(rs), "c");
	free(rs);
	OK(bdb_snapshot(docdb_bdb(f.d), &snap));
	rs = changes(f.d, snap, sc, 0, 0, &last);
	ck_assert_uint_eq(rs->n, 0);
	ck_assert_uint_eq(last, bsnap_seq(snap));
	ck_assert_uint_ge(last, sc);
	free(rs);
	bsnap_release(snap);

	/* limit */
	rs = changes(f.d, NULL, 0, 2, 0, &last);
	ck_assert_str_eq(row_ids(rs), "b a");
	ck_assert_uint_eq(last, sa);
	free(rs);

	/* descending */
	rs = changes(f.d, NULL, 0, 0, DOC_ROWS_DESCENDING, &last);
	ck_assert_str_eq(row_ids(rs), "c a b");
	ck_assert_uint_eq(last, sb);
	free(rs);
	rs = changes(f.d, NULL, 0, 1, DOC_ROWS_DESCENDING, &last);
	ck_assert_str_eq(row_ids(rs), "c");
	ck_assert_uint_eq(last, sc);
	free(rs);
	rs = changes(f.d, NULL, sb, 0, DOC_ROWS_DESCENDING, NULL);
	ck_assert_str_eq(row_ids(rs), "c a");
	free(rs);

	/* include_docs */
	rs = changes(f.d, NULL, 0, 0, DOC_ROWS_DOCS, NULL);
	ck_assert_uint_eq(rs->n, 3);
	ck_assert(rs->r[0].has_doc);
	ck_assert_str_eq(rs->r[0].body, "{\"n\":\"b\"}");
	ck_assert(rs->r[1].has_doc);
	ck_assert_str_eq(rs->r[1].body, "{\"n\":\"a2\"}");
	ck_assert(rs->r[2].has_doc);
	ck_assert(rs->r[2].doc_deleted);
	free(rs);

	/* a callback's non-zero return stops the feed and is returned */
	rs = calloc(1, sizeof(*rs));
	ck_assert_ptr_nonnull(rs);
	rs->stop_after = 1;
	ck_assert_int_eq(docdb_changes(f.d, NULL, 0, 0, 0, row_cb, rs, NULL),
			 7);
	ck_assert_uint_eq(rs->n, 1);
	free(rs);

	/* a snapshot does not see later writes */
	OK(bdb_snapshot(docdb_bdb(f.d), &snap));
	put_ok(f.d, "b", "{\"n\":\"b2\"}", &rb);
	rs = changes(f.d, snap, 0, 0, 0, NULL);
	ck_assert_str_eq(row_ids(rs), "b a c");
	free(rs);
	bsnap_release(snap);
	rs = changes(f.d, NULL, 0, 0, 0, NULL);
	ck_assert_str_eq(row_ids(rs), "a c b");
	free(rs);
	fx_close(&f);
}
END_TEST

/* DOC_ROWS_ALL_LEAVES lists every leaf of a conflict, winner first. */
START_TEST(test_changes_all_leaves)
{
	struct fx f;
	struct rows *rs;
	struct rev x = R("2-x"), y = R("2-y"), z = R("3-z");

	fx_open(&f);
	ck_assert_int_eq(rep(f.d, "k", "", false, NULL, "2-x", "1-a", NULL), 0);
	ck_assert_int_eq(rep(f.d, "k", "", false, NULL, "2-y", "1-a", NULL), 0);
	ck_assert_int_eq(rep(f.d, "k", "", true, NULL, "3-z", "2-w", "1-a",
			     NULL), 0);
	rs = changes(f.d, NULL, 0, 0, DOC_ROWS_ALL_LEAVES, NULL);
	ck_assert_uint_eq(rs->n, 1);
	ck_assert_uint_eq(rs->r[0].nrevs, 3);
	assert_rev_eq(&rs->r[0].revs[0], &y);
	assert_rev_eq(&rs->r[0].revs[1], &x);
	assert_rev_eq(&rs->r[0].revs[2], &z);
	ck_assert(!rs->r[0].deleted);
	free(rs);
	rs = changes(f.d, NULL, 0, 0, 0, NULL);
	ck_assert_uint_eq(rs->r[0].nrevs, 1);
	assert_rev_eq(&rs->r[0].revs[0], &y);
	free(rs);
	fx_close(&f);
}
END_TEST

struct waiter {
	struct bdb *db;
	uint64_t seq;
	int rc;
	uint64_t elapsed_ms;
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;
	uint64_t t0 = tu_now_ms();

	w->rc = bdb_wait(w->db, w->seq, 5000);
	w->elapsed_ms = tu_now_ms() - t0;
	return NULL;
}

/* bdb_wait on docdb_bdb() wakes when another thread puts a document. */
START_TEST(test_subscription_wakes)
{
	struct fx f;
	struct waiter w;
	pthread_t th;
	struct rows *rs;
	uint64_t t0;

	fx_open(&f);
	put_ok(f.d, "first", "{}", NULL);
	memset(&w, 0, sizeof(w));
	w.db = docdb_bdb(f.d);
	w.seq = bdb_seq(w.db);
	/* nothing written: a bounded wait times out */
	t0 = tu_now_ms();
	ck_assert_int_eq(bdb_wait(w.db, w.seq, 100), 0);
	ck_assert_uint_ge(tu_now_ms() - t0, 90);

	ck_assert_int_eq(pthread_create(&th, NULL, wait_thread, &w), 0);
	tu_sleep_ms(200);
	put_ok(f.d, "second", "{\"x\":1}", NULL);
	pthread_join(th, NULL);
	ck_assert_int_eq(w.rc, 1);
	ck_assert_msg(w.elapsed_ms < 4000, "woke after %llu ms",
		      (unsigned long long)w.elapsed_ms);
	rs = changes(f.d, NULL, w.seq, 0, 0, NULL);
	ck_assert_str_eq(row_ids(rs), "second");
	free(rs);
	fx_close(&f);
}
END_TEST

/* ---- local documents ---- */

struct lrow {
	char id[32];
	uint64_t rev;
};

struct lrows {
	struct lrow r[16];
	size_t n;
};

static int local_cb(void *arg, const char *id, size_t idlen, uint64_t rev)
{
	struct lrows *l = arg;

	ck_assert_uint_lt(l->n, 16);
	ck_assert_uint_lt(idlen, 32);
	memset(l->r[l->n].id, 0, 32);
	memcpy(l->r[l->n].id, id, idlen);
	l->r[l->n++].rev = rev;
	return 0;
}

/* Local docs: 0-N revisions, CONFLICT on a wrong N, listed, never in feeds. */
START_TEST(test_local_docs)
{
	const char *b1 = " {\"cp\": 1 } ", *b2 = "{\"cp\":2}";
	char err[DOC_ERRLEN];
	struct fx f;
	uint64_t rev = 99, got = 0;
	char *body = NULL;
	size_t len = 0;
	struct lrows l;
	struct rows *rs;

	fx_open(&f);
	OK(docdb_local_put(f.d, "sync-a", 6, b1, strlen(b1), 0, &rev, err));
	ck_assert_uint_eq(rev, 1);
	OK(docdb_local_get(f.d, NULL, "sync-a", 6, &body, &len, &got));
	ck_assert_uint_eq(got, 1);
	ck_assert_uint_eq(len, strlen(b1));
	ck_assert_mem_eq(body, b1, len);
	ck_assert_int_eq(body[len], '\0');
	free(body);

	/* the current N is needed */
	EXPECT_RC(docdb_local_put(f.d, "sync-a", 6, b2, strlen(b2), 0, &rev,
				  err), BARREL_E_CONFLICT);
	EXPECT_RC(docdb_local_put(f.d, "sync-a", 6, b2, strlen(b2), 2, &rev,
				  err), BARREL_E_CONFLICT);
	EXPECT_RC(docdb_local_put(f.d, "new", 3, b2, strlen(b2), 1, &rev,
				  err), BARREL_E_CONFLICT);
	OK(docdb_local_put(f.d, "sync-a", 6, b2, strlen(b2), 1, &rev, err));
	ck_assert_uint_eq(rev, 2);
	OK(docdb_local_get(f.d, NULL, "sync-a", 6, &body, &len, &got));
	ck_assert_uint_eq(got, 2);
	ck_assert_str_eq(body, b2);
	free(body);
	/* a body must be a JSON object */
	err[0] = '\0';
	ck_assert_int_eq(docdb_local_put(f.d, "bad", 3, "[1]", 3, 0, &rev,
					 err), BARREL_E_NOTOBJECT);
	ck_assert(err[0] != '\0');
	err[0] = '\0';
	ck_assert_int_eq(docdb_local_put(f.d, "bad", 3, "{\"a\":", 5, 0, &rev,
					 err), BARREL_E_BADJSON);
	ck_assert(err[0] != '\0');
	EXPECT_RC(docdb_local_get(f.d, NULL, "bad", 3, &body, &len, &got),
		  BARREL_E_NOTFOUND);

	OK(docdb_local_put(f.d, "sync-b", 6, "{}", 2, 0, &rev, NULL));
	OK(docdb_local_put(f.d, "other", 5, "{}", 2, 0, &rev, NULL));
	memset(&l, 0, sizeof(l));
	OK(docdb_local_list(f.d, NULL, "sync-", 5, local_cb, &l));
	ck_assert_uint_eq(l.n, 2);
	ck_assert_str_eq(l.r[0].id, "sync-a");
	ck_assert_uint_eq(l.r[0].rev, 2);
	ck_assert_str_eq(l.r[1].id, "sync-b");
	ck_assert_uint_eq(l.r[1].rev, 1);
	memset(&l, 0, sizeof(l));
	OK(docdb_local_list(f.d, NULL, "", 0, local_cb, &l));
	ck_assert_uint_eq(l.n, 3);
	ck_assert_str_eq(l.r[0].id, "other");

	/* never in the changes feed or all_docs */
	rs = changes(f.d, NULL, 0, 0, 0, NULL);
	ck_assert_uint_eq(rs->n, 0);
	free(rs);
	rs = all_docs(f.d, NULL, NULL, DOC_ROWS_DELETED);
	ck_assert_uint_eq(rs->n, 0);
	free(rs);
	expect_get_rc(f.d, "sync-a", NULL, DOC_GET_DELETED, BARREL_E_NOTFOUND);

	/* delete with the current N only; then it starts again at 0-1 */
	EXPECT_RC(docdb_local_del(f.d, "sync-a", 6, 1), BARREL_E_CONFLICT);
	OK(docdb_local_del(f.d, "sync-a", 6, 2));
	EXPECT_RC(docdb_local_get(f.d, NULL, "sync-a", 6, &body, &len, &got),
		  BARREL_E_NOTFOUND);
	ck_assert_int_ne(docdb_local_del(f.d, "sync-a", 6, 2), 0);
	memset(&l, 0, sizeof(l));
	OK(docdb_local_list(f.d, NULL, "sync-", 5, local_cb, &l));
	ck_assert_uint_eq(l.n, 1);
	OK(docdb_local_put(f.d, "sync-a", 6, b1, strlen(b1), 0, &rev, err));
	ck_assert_uint_eq(rev, 1);
	fx_close(&f);
}
END_TEST

/* ---- attachments ---- */

/* A 5 MiB attachment streamed in 64 KiB pieces reads back with its MD5. */
START_TEST(test_att_stream_5mib)
{
	const uint64_t len = 5 * MiB;
	char name[] = "big.bin", type[] = "application/octet-stream";
	struct fx f;
	struct doc_att a;
	struct doc_put p;
	struct doc doc;
	struct bsnap *snap;
	uint8_t md5[16], got_md5[16], *data, *want;
	struct body b;
	struct body_att_digest dg;
	struct rev rv;

	fx_open(&f);
	att_stream(f.d, 42, len, 64 * KiB, name, type, &a, md5);
	req_init(&p, "f", "{\"kind\":\"file\"}");
	p.atts = &a;
	p.natts = 1;
	ck_assert_msg(put_req(f.d, &p) == 0, "%s", p.error);

	/* the revision id hashes the attachment's digest */
	ck_assert_int_eq(body_parse(p.body, p.len, &b, NULL), 0);
	dg.name = name;
	dg.namelen = strlen(name);
	dg.md5 = md5;
	dg.length = len;
	OK(body_rev(&b, NULL, false, &dg, 1, &rv));
	body_release(&b);
	assert_rev_eq(&p.rev, &rv);

	OK(bdb_snapshot(docdb_bdb(f.d), &snap));
	OK(docdb_get(f.d, snap, "f", 1, NULL, 0, &doc));
	ck_assert_uint_eq(doc.natts, 1);
	ck_assert_str_eq(doc.atts[0].name, "big.bin");
	ck_assert_str_eq(doc.atts[0].content_type, "application/octet-stream");
	ck_assert_uint_eq(doc.atts[0].length, len);
	ck_assert_mem_eq(doc.atts[0].md5, md5, 16);
	ck_assert_uint_eq(doc.atts[0].revpos, 1);
	ck_assert_str_eq(doc.body, "{\"kind\":\"file\"}");
	data = att_read(f.d, snap, &doc.atts[0]);
	want = malloc(len);
	ck_assert_ptr_nonnull(want);
	tu_pattern(42, 0, want, len);
	ck_assert_msg(memcmp(data, want, len) == 0, "attachment bytes differ");
	md5_of(data, len, got_md5);
	ck_assert_mem_eq(got_md5, md5, 16);
	free(want);
	free(data);
	doc_release(&doc);
	bsnap_release(snap);
	fx_close(&f);
}
END_TEST

/* doc_digest_format/parse: "md5-" and base64, round trip, bad input. */
START_TEST(test_digest_format_parse)
{
	static const uint8_t empty[16] = { 0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00,
					   0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98,
					   0xec, 0xf8, 0x42, 0x7e };
	static const char *bad[] = {
		"", "md5-", "md5", "sha1-1B2M2Y8AsgTpgAmY7PhCfg==",
		"MD5-1B2M2Y8AsgTpgAmY7PhCfg==",
		"md5-1B2M2Y8AsgTpgAmY7PhCfg=",          /* short */
		"md5-1B2M2Y8AsgTpgAmY7PhCfg===",        /* long */
		"md5-1B2M2Y8AsgTpgAmY7PhC!g==",         /* not base64 */
		"md5-1B2M2Y8AsgTpgAmY7PhCfg==x",
		"md5-1B2M2Y8Asg",                       /* too few bytes */
		"md5-1B2M2Y8AsgTpgAmY7PhCfgAAAAAA",     /* too many bytes */
		"md5- 1B2M2Y8AsgTpgAmY7PhCfg==",
	};
	char buf[DOC_DIGEST_SIZE];
	uint8_t md5[16], back[16];
	struct tu_rng rng;

	doc_digest_format(empty, buf);
	ck_assert_str_eq(buf, "md5-1B2M2Y8AsgTpgAmY7PhCfg==");
	ck_assert_uint_eq(strlen(buf), DOC_DIGEST_SIZE - 1);
	memset(back, 0, sizeof(back));
	OK(doc_digest_parse(buf, back));
	ck_assert_mem_eq(back, empty, 16);
	tu_rng_init(&rng, 7);
	for (int i = 0; i < 200; i++) {
		for (int j = 0; j < 16; j++)
			md5[j] = (uint8_t)tu_rng_next(&rng);
		doc_digest_format(md5, buf);
		ck_assert_uint_eq(strlen(buf), DOC_DIGEST_SIZE - 1);
		ck_assert(strncmp(buf, "md5-", 4) == 0);
		OK(doc_digest_parse(buf, back));
		ck_assert_mem_eq(back, md5, 16);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(back, empty, 16);
		ck_assert_msg(doc_digest_parse(bad[i], back) ==
			      BARREL_E_INVALID, "accepted \"%s\"", bad[i]);
	}
}
END_TEST

/* Inline base64 past BODY_MAX_LEN is accepted (the data becomes a blob,
 * not body); members past it without attachments are still refused. */
START_TEST(test_att_inline_big)
{
	size_t raw = 6u << 20, b64 = (raw + 2) / 3 * 4;
	size_t cap = b64 + 256, n;
	char *body = malloc(cap);
	struct doc doc;
	struct fx f;

	ck_assert_ptr_nonnull(body);
	fx_open(&f);
	n = (size_t)snprintf(body, cap, "{\"v\":1,\"_attachments\":{\"big.bin\":"
			     "{\"content_type\":\"application/octet-stream\","
			     "\"data\":\"");
	for (size_t i = 0; i < b64; i += 4)
		memcpy(body + n + i, "QUJD", 4);       /* "ABC" */
	n += b64;
	n += (size_t)snprintf(body + n, cap - n, "\"}}}");
	ck_assert_int_eq(put_n(f.d, "big", body, n), 0);
	OK(get(f.d, "big", NULL, 0, &doc));
	ck_assert_uint_eq(doc.natts, 1);
	ck_assert_uint_eq(doc.atts[0].length, raw);
	ck_assert_uint_lt(doc.len, 100);
	doc_release(&doc);
	/* the same size as a member: too big */
	body[8] = 'x';                /* "xattachments": a member */
	ck_assert_int_eq(put_n(f.d, "big2", body, n), BARREL_E_TOOBIG);
	free(body);
	fx_close(&f);
}
END_TEST

/* The same content attached twice (two commits, or one bulk) is one blob. */
START_TEST(test_att_dedup)
{
	char n1[] = "one.bin", n2[] = "two.bin", ty[] = "x/y";
	struct fx f;
	struct doc_att a1, a2, a3, a4;
	struct doc_put p[2];
	struct doc d1, d2;
	struct bsnap *snap;
	uint8_t *data, want[200 * 1024];

	fx_open(&f);
	att_stream(f.d, 9, sizeof(want), 50 * KiB, n1, ty, &a1, NULL);
	req_init(&p[0], "d1", "{}");
	p[0].atts = &a1;
	p[0].natts = 1;
	ck_assert_int_eq(put_req(f.d, &p[0]), 0);
	att_stream(f.d, 9, sizeof(want), 64 * KiB, n2, ty, &a2, NULL);
	req_init(&p[0], "d2", "{}");
	p[0].atts = &a2;
	p[0].natts = 1;
	ck_assert_int_eq(put_req(f.d, &p[0]), 0);

	OK(bdb_snapshot(docdb_bdb(f.d), &snap));
	OK(docdb_get(f.d, snap, "d1", 2, NULL, 0, &d1));
	OK(docdb_get(f.d, snap, "d2", 2, NULL, 0, &d2));
	ck_assert_uint_eq(d1.natts, 1);
	ck_assert_uint_eq(d2.natts, 1);
	ck_assert_mem_eq(d1.atts[0].md5, d2.atts[0].md5, 16);
	ck_assert_uint_eq(d1.atts[0].blob, d2.atts[0].blob);
	tu_pattern(9, 0, want, sizeof(want));
	data = att_read(f.d, snap, &d2.atts[0]);
	ck_assert(memcmp(data, want, sizeof(want)) == 0);
	free(data);
	doc_release(&d1);
	doc_release(&d2);
	bsnap_release(snap);

	/* two writers of one new content in one bulk */
	att_stream(f.d, 10, 100 * KiB, 64 * KiB, n1, ty, &a3, NULL);
	att_stream(f.d, 10, 100 * KiB, 64 * KiB, n2, ty, &a4, NULL);
	req_init(&p[0], "d3", "{}");
	p[0].atts = &a3;
	p[0].natts = 1;
	req_init(&p[1], "d4", "{}");
	p[1].atts = &a4;
	p[1].natts = 1;
	OK(docdb_put(f.d, p, 2));
	ck_assert_int_eq(p[0].rc, 0);
	ck_assert_int_eq(p[1].rc, 0);
	OK(get(f.d, "d3", NULL, 0, &d1));
	OK(get(f.d, "d4", NULL, 0, &d2));
	ck_assert_uint_eq(d1.atts[0].blob, d2.atts[0].blob);
	doc_release(&d1);
	doc_release(&d2);
	fx_close(&f);
}
END_TEST

/* KEEP_ATTS and stubs keep attachments (same revpos); otherwise dropped. */
START_TEST(test_att_keep_and_drop)
{
	char name[] = "a.txt", type[] = "text/plain";
	char body[256];
	struct fx f;
	struct doc_att a;
	struct doc_put p;
	struct doc doc;
	struct rev r1, r2, r3, r4;
	struct json_object *o, *atts, *s;
	char digest[DOC_DIGEST_SIZE];
	struct bsnap *snap;
	uint8_t *data;

	fx_open(&f);
	att_bytes(f.d, "hello", 5, name, type, &a);
	req_init(&p, "d", "{\"v\":1}");
	p.atts = &a;
	p.natts = 1;
	ck_assert_int_eq(put_req(f.d, &p), 0);
	r1 = p.rev;

	ck_assert_int_eq(put(f.d, "d", "{\"v\":2}", &r1, DOC_PUT_KEEP_ATTS,
			     &r2), 0);
	OK(get(f.d, "d", NULL, 0, &doc));
	assert_rev_eq(&doc.rev, &r2);
	ck_assert_uint_eq(doc.natts, 1);
	ck_assert_str_eq(doc.atts[0].name, "a.txt");
	ck_assert_str_eq(doc.atts[0].content_type, "text/plain");
	ck_assert_uint_eq(doc.atts[0].revpos, 1);
	ck_assert_uint_eq(doc.atts[0].length, 5);
	ck_assert_mem_eq(doc.atts[0].md5, a.md5, 16);
	OK(doc_json(&doc, DOC_JSON_ATTS, &o));
	atts = jget(o, "_attachments");
	ck_assert_ptr_nonnull(atts);
	s = jget(atts, "a.txt");
	ck_assert_ptr_nonnull(s);
	ck_assert(json_object_get_boolean(jget(s, "stub")));
	ck_assert_int_eq(json_object_get_int64(jget(s, "revpos")), 1);
	ck_assert_int_eq(json_object_get_int64(jget(s, "length")), 5);
	ck_assert_str_eq(json_object_get_string(jget(s, "content_type")),
			 "text/plain");
	doc_digest_format(a.md5, digest);
	ck_assert_str_eq(json_object_get_string(jget(s, "digest")), digest);
	ck_assert_ptr_null(jget(s, "data"));
	json_object_put(o);
	doc_release(&doc);

	/* a stub in "_attachments" keeps it without the flag */
	snprintf(body, sizeof(body), "{\"_rev\":\"%s\",\"v\":3,\"_attachments\":"
		 "{\"a.txt\":{\"stub\":true}}}", RS(&r2).s);
	ck_assert_int_eq(put(f.d, "d", body, NULL, 0, &r3), 0);
	OK(get(f.d, "d", NULL, 0, &doc));
	ck_assert_uint_eq(doc.natts, 1);
	ck_assert_uint_eq(doc.atts[0].revpos, 1);
	ck_assert_mem_eq(doc.atts[0].md5, a.md5, 16);
	ck_assert_ptr_null(strstr(doc.body, "_attachments"));
	doc_release(&doc);

	/* neither: dropped (CouchDB's rule) */
	ck_assert_int_eq(put(f.d, "d", "{\"v\":4}", &r3, 0, &r4), 0);
	OK(get(f.d, "d", NULL, 0, &doc));
	ck_assert_uint_eq(doc.natts, 0);
	doc_release(&doc);
	/* the older revision still has it, readable */
	OK(bdb_snapshot(docdb_bdb(f.d), &snap));
	OK(docdb_get(f.d, snap, "d", 1, &r2, 0, &doc));
	ck_assert_uint_eq(doc.natts, 1);
	data = att_read(f.d, snap, &doc.atts[0]);
	ck_assert_mem_eq(data, "hello", 5);
	free(data);
	doc_release(&doc);
	bsnap_release(snap);
	fx_close(&f);
}
END_TEST

/* Inline base64 data is stored; a missing stub or bad base64 fails. */
START_TEST(test_att_inline_and_bad_stub)
{
	const char *body = "{\"v\":1,\"_attachments\":{\"hello.txt\":"
		"{\"content_type\":\"text/plain\",\"data\":\"aGVsbG8gd29ybGQ=\"}}}";
	char b2[256];
	struct fx f;
	struct doc doc;
	struct bsnap *snap;
	struct rev r1;
	uint8_t md5[16], *data;
	struct revtree *t;

	fx_open(&f);
	ck_assert_int_eq(put(f.d, "i", body, NULL, 0, &r1), 0);
	OK(bdb_snapshot(docdb_bdb(f.d), &snap));
	OK(docdb_get(f.d, snap, "i", 1, NULL, 0, &doc));
	ck_assert_uint_eq(doc.natts, 1);
	ck_assert_str_eq(doc.atts[0].name, "hello.txt");
	ck_assert_str_eq(doc.atts[0].content_type, "text/plain");
	ck_assert_uint_eq(doc.atts[0].length, 11);
	ck_assert_uint_eq(doc.atts[0].revpos, 1);
	md5_of("hello world", 11, md5);
	ck_assert_mem_eq(doc.atts[0].md5, md5, 16);
	data = att_read(f.d, snap, &doc.atts[0]);
	ck_assert_mem_eq(data, "hello world", 11);
	free(data);
	/* the stored body does not carry the data */
	ck_assert_ptr_null(strstr(doc.body, "aGVsbG8"));
	ck_assert_ptr_null(strstr(doc.body, "_attachments"));
	{
		struct json_object *o = jparse(doc.body);

		ck_assert_int_eq(json_object_get_int(jget(o, "v")), 1);
		json_object_put(o);
	}
	doc_release(&doc);
	bsnap_release(snap);

	/* a stub for an attachment the parent does not have */
	snprintf(b2, sizeof(b2), "{\"_rev\":\"%s\",\"_attachments\":"
		 "{\"nope.txt\":{\"stub\":true}}}", RS(&r1).s);
	EXPECT_RC(put(f.d, "i", b2, NULL, 0, NULL), BARREL_E_NOTFOUND);
	EXPECT_RC(put(f.d, "j", "{\"_attachments\":{\"x\":{\"stub\":true}}}",
		      NULL, 0, NULL), BARREL_E_NOTFOUND);
	/* base64 that is not */
	EXPECT_RC(put(f.d, "k", "{\"_attachments\":{\"x\":{\"content_type\":"
		      "\"a/b\",\"data\":\"!!not base64!!\"}}}", NULL, 0, NULL),
		  BARREL_E_INVALID);
	t = tree_of(f.d, "i", NULL);
	ck_assert_uint_eq(revtree_count(t), 1);
	revtree_free(t);
	expect_get_rc(f.d, "j", NULL, DOC_GET_DELETED, BARREL_E_NOTFOUND);
	expect_get_rc(f.d, "k", NULL, DOC_GET_DELETED, BARREL_E_NOTFOUND);
	fx_close(&f);
}
END_TEST

/*
 * One history of edits, each in its own commit: an update, a replicated
 * branch that loses (the old winner's body stays inline), an attachment
 * and an update that keeps it as a stub, a deletion that hands the win
 * to the branch. reopen: between every edit, so each reads its record.
 * Returns the revisions made, in order.
 */
static void edit_history(struct fx *f, bool reopen, struct rev out[6])
{
	char b[512];
	const char *lose = "2-00000000000000000000000000000000";

	out[0] = put_ok(f->d, "d", "{\"v\":1}", NULL);
	if (reopen)
		fx_reopen(f);
	out[1] = put_ok(f->d, "d", "{\"v\":2}", &out[0]);
	if (reopen)
		fx_reopen(f);
	ck_assert_int_eq(rep(f->d, "d", "\"v\":\"branch\"", false, NULL, lose,
			     RS(&out[0]).s, NULL), 0);
	out[2] = R(lose);
	if (reopen)
		fx_reopen(f);
	snprintf(b, sizeof(b), "{\"_rev\":\"%s\",\"v\":3,\"_attachments\":"
		 "{\"a.txt\":{\"content_type\":\"text/plain\",\"data\":"
		 "\"aGVsbG8gd29ybGQ=\"}}}", RS(&out[1]).s);
	ck_assert_int_eq(put(f->d, "d", b, NULL, 0, &out[3]), 0);
	if (reopen)
		fx_reopen(f);
	snprintf(b, sizeof(b), "{\"_rev\":\"%s\",\"v\":4,\"_attachments\":"
		 "{\"a.txt\":{\"stub\":true}}}", RS(&out[3]).s);
	ck_assert_int_eq(put(f->d, "d", b, NULL, 0, &out[4]), 0);
	if (reopen)
		fx_reopen(f);
	out[5] = del_ok(f->d, "d", &out[4]);
}

/* An edit that reads the old tree from the engine's head cache makes the
 * very same history as one that reads the old record. */
START_TEST(test_edit_from_cached_head)
{
	struct fx a, b;
	struct rev ra[6], rb[6];
	struct enc ea, eb;
	struct doc da, db;
	struct bdb_stat st;

	fx_open(&a);
	edit_history(&a, false, ra);
	st = stat_of(a.d);
	/* every edit after the first found the tree cached */
	ck_assert_uint_eq(st.head_hits, 5);
	ck_assert_uint_eq(st.head_misses, 0);

	fx_open(&b);
	edit_history(&b, true, rb);
	st = stat_of(b.d);
	ck_assert_uint_eq(st.head_hits, 0);

	for (int i = 0; i < 6; i++)
		assert_rev_eq(&ra[i], &rb[i]);
	ea = tree_enc(a.d, "d");
	eb = tree_enc(b.d, "d");
	ck_assert_uint_eq(ea.len, eb.len);
	ck_assert_mem_eq(ea.buf, eb.buf, ea.len);
	free(ea.buf);
	free(eb.buf);
	expect_winner(a.d, "d", "2-00000000000000000000000000000000", false);
	expect_member(a.d, "d", NULL, 0, "v", "branch");
	/* every body kept, the same in both */
	for (int i = 0; i < 6; i++) {
		ck_assert_int_eq(get(a.d, "d", &ra[i], DOC_GET_DELETED, &da),
				 0);
		ck_assert_int_eq(get(b.d, "d", &rb[i], DOC_GET_DELETED, &db),
				 0);
		ck_assert_uint_eq(da.len, db.len);
		ck_assert_mem_eq(da.body, db.body, da.len);
		ck_assert_uint_eq(da.natts, db.natts);
		ck_assert_uint_eq(da.natts, i == 3 || i == 4 ? 1 : 0);
		doc_release(&da);
		doc_release(&db);
	}
	fx_close(&a);
	fx_close(&b);
}
END_TEST

/* remove drops one attachment; "follows" takes its content from atts. */
START_TEST(test_att_remove_and_follows)
{
	char na[] = "a.txt", nb[] = "b.txt", nf[] = "f.bin", ty[] = "t/x";
	char body[512], digest[DOC_DIGEST_SIZE];
	struct fx f;
	struct doc_att two[2], rm, fa;
	struct doc_put p;
	struct doc doc;
	struct rev r1, r2, r3;

	fx_open(&f);
	att_bytes(f.d, "AAA", 3, na, ty, &two[0]);
	att_bytes(f.d, "BBBB", 4, nb, ty, &two[1]);
	req_init(&p, "d", "{}");
	p.atts = two;
	p.natts = 2;
	ck_assert_int_eq(put_req(f.d, &p), 0);
	r1 = p.rev;
	OK(get(f.d, "d", NULL, 0, &doc));
	ck_assert_uint_eq(doc.natts, 2);
	ck_assert_str_eq(doc.atts[0].name, "a.txt");   /* sorted by name */
	ck_assert_str_eq(doc.atts[1].name, "b.txt");
	doc_release(&doc);

	memset(&rm, 0, sizeof(rm));
	rm.name = na;
	rm.remove = true;
	req_init(&p, "d", "{\"v\":2}");
	p.parent = &r1;
	p.flags = DOC_PUT_KEEP_ATTS;
	p.atts = &rm;
	p.natts = 1;
	ck_assert_msg(put_req(f.d, &p) == 0, "%s", p.error);
	r2 = p.rev;
	OK(get(f.d, "d", NULL, 0, &doc));
	ck_assert_uint_eq(doc.natts, 1);
	ck_assert_str_eq(doc.atts[0].name, "b.txt");
	ck_assert_uint_eq(doc.atts[0].revpos, 1);
	doc_release(&doc);

	/* "follows": the content comes in atts, announced in the body */
	att_bytes(f.d, "follow me", 9, nf, ty, &fa);
	doc_digest_format(fa.md5, digest);
	snprintf(body, sizeof(body), "{\"_rev\":\"%s\",\"_attachments\":{"
		 "\"b.txt\":{\"stub\":true},\"f.bin\":{\"follows\":true,"
		 "\"content_type\":\"t/x\",\"length\":9,\"digest\":\"%s\"}}}",
		 RS(&r2).s, digest);
	req_init(&p, "d", body);
	p.atts = &fa;
	p.natts = 1;
	ck_assert_msg(put_req(f.d, &p) == 0, "%s", p.error);
	r3 = p.rev;
	ck_assert_uint_eq(r3.gen, 3);
	OK(get(f.d, "d", NULL, 0, &doc));
	ck_assert_uint_eq(doc.natts, 2);
	ck_assert_ptr_nonnull(att_named(&doc, "b.txt"));
	ck_assert_ptr_nonnull(att_named(&doc, "f.bin"));
	ck_assert_uint_eq(att_named(&doc, "f.bin")->revpos, 3);
	ck_assert_uint_eq(att_named(&doc, "f.bin")->length, 9);
	ck_assert_uint_eq(att_named(&doc, "b.txt")->revpos, 1);
	doc_release(&doc);
	fx_close(&f);
}
END_TEST

/* ---- bulk ---- */

/* 1000 docs in one docdb_put are one commit; a bad one fails alone. */
START_TEST(test_bulk)
{
	enum { N = 1000 };
	static char ids[N][16], bodies[N][32];
	static struct rev parents[N];
	struct doc_put *p = calloc(N, sizeof(*p));
	struct bdb_stat s0, s1;
	struct fx f;
	struct rows *rs;

	ck_assert_ptr_nonnull(p);
	fx_open(&f);
	for (int i = 0; i < N; i++) {
		snprintf(ids[i], sizeof(ids[i]), "doc%04d", i);
		snprintf(bodies[i], sizeof(bodies[i]), "{\"i\":%d}", i);
		req_init(&p[i], ids[i], bodies[i]);
	}
	s0 = stat_of(f.d);
	OK(docdb_put(f.d, p, N));
	s1 = stat_of(f.d);
	ck_assert_uint_eq(s1.txn, s0.txn + 1);
	for (int i = 0; i < N; i++) {
		ck_assert_msg(p[i].rc == 0, "%s: %d %s", ids[i], p[i].rc,
			      p[i].error);
		ck_assert_uint_eq(p[i].rev.gen, 1);
		if (i)
			ck_assert_uint_ne(p[i].seq, p[i - 1].seq);
	}
	expect_body(f.d, "doc0000", NULL, "{\"i\":0}");
	expect_body(f.d, "doc0999", NULL, "{\"i\":999}");

	/* edits of all but a bad one in the middle */
	for (int i = 0; i < N; i++) {
		parents[i] = p[i].rev;
		snprintf(bodies[i], sizeof(bodies[i]), "{\"i\":%d,\"v\":2}", i);
		req_init(&p[i], ids[i], bodies[i]);
		p[i].parent = &parents[i];
	}
	p[500].body = "[\"not an object\"]";
	p[500].len = strlen(p[500].body);
	s0 = stat_of(f.d);
	OK(docdb_put(f.d, p, N));
	s1 = stat_of(f.d);
	ck_assert_uint_eq(s1.txn, s0.txn + 1);
	for (int i = 0; i < N; i++) {
		if (i == 500) {
			EXPECT_RC(p[i].rc, BARREL_E_NOTOBJECT);
			ck_assert(p[i].error[0] != '\0');
		} else {
			ck_assert_msg(p[i].rc == 0, "%s: %d %s", ids[i],
				      p[i].rc, p[i].error);
			ck_assert_uint_eq(p[i].rev.gen, 2);
		}
	}
	expect_body(f.d, "doc0500", NULL, "{\"i\":500}");
	expect_body(f.d, "doc0499", NULL, "{\"i\":499,\"v\":2}");
	expect_body(f.d, "doc0501", NULL, "{\"i\":501,\"v\":2}");
	/* doc0500 kept its first seq: it now leads the feed */
	rs = changes(f.d, NULL, 0, 2, 0, NULL);
	ck_assert_str_eq(row_ids(rs), "doc0500 doc0000");
	free(rs);
	free(p);
	fx_close(&f);
}
END_TEST

/* docdb_get_many reads docs and revisions from one snapshot, rc each. */
START_TEST(test_get_many)
{
	struct fx f;
	struct rev a1, a2, none = R("9-abc");
	struct doc_get g[5];
	struct bsnap *snap;

	fx_open(&f);
	a1 = put_ok(f.d, "a", "{\"v\":1}", NULL);
	a2 = put_ok(f.d, "a", "{\"v\":2}", &a1);
	put_ok(f.d, "b", "{\"b\":true}", NULL);
	OK(bdb_snapshot(docdb_bdb(f.d), &snap));
	put_ok(f.d, "c", "{}", NULL);   /* after the snapshot */

	memset(g, 0, sizeof(g));
	g[0].id = "a", g[0].idlen = 1;
	g[1].id = "a", g[1].idlen = 1, g[1].rev = &a1;
	g[2].id = "b", g[2].idlen = 1;
	g[3].id = "a", g[3].idlen = 1, g[3].rev = &none;
	g[4].id = "c", g[4].idlen = 1;
	OK(docdb_get_many(f.d, snap, g, 5));
	ck_assert_int_eq(g[0].rc, 0);
	assert_rev_eq(&g[0].doc.rev, &a2);
	ck_assert_str_eq(g[0].doc.body, "{\"v\":2}");
	ck_assert_int_eq(g[1].rc, 0);
	assert_rev_eq(&g[1].doc.rev, &a1);
	ck_assert_str_eq(g[1].doc.body, "{\"v\":1}");
	ck_assert_int_eq(g[2].rc, 0);
	ck_assert_str_eq(g[2].doc.body, "{\"b\":true}");
	EXPECT_RC(g[3].rc, BARREL_E_NOTFOUND);
	EXPECT_RC(g[4].rc, BARREL_E_NOTFOUND);
	for (int i = 0; i < 5; i++)
		if (g[i].rc == 0)
			doc_release(&g[i].doc);
	bsnap_release(snap);

	/* a fresh snapshot sees c */
	memset(g, 0, sizeof(g));
	g[0].id = "c", g[0].idlen = 1;
	OK(docdb_get_many(f.d, NULL, g, 1));
	ck_assert_int_eq(g[0].rc, 0);
	doc_release(&g[0].doc);
	fx_close(&f);
}
END_TEST

/* Bad bodies fail one by one with a reason and write nothing. */
START_TEST(test_bad_input)
{
	enum { NB = 9 };
	struct fx f;
	struct doc_put p[NB + 1];
	struct bdb_stat s0, s1;
	struct rev good;
	struct revtree *t;
	struct rows *rs;
	char *deep, *huge;
	size_t deeplen;
	int want[NB];

	fx_open(&f);
	good = put_ok(f.d, "good", "{\"v\":1}", NULL);
	deep = tu_nested_object(100000, &deeplen);
	ck_assert_ptr_nonnull(deep);
	huge = malloc(BODY_MAX_LEN + 2);
	ck_assert_ptr_nonnull(huge);
	memcpy(huge, "{\"a\":\"", 6);
	memset(huge + 6, 'x', BODY_MAX_LEN - 7);
	memcpy(huge + BODY_MAX_LEN - 1, "\"}", 2);   /* BODY_MAX_LEN + 1 */

	req_init(&p[0], "bad0", "[1,2]");
	want[0] = BARREL_E_NOTOBJECT;
	req_init(&p[1], "bad1", "{\"a\":\"\xc0\xaf\"}");
	want[1] = BARREL_E_BADJSON;
	req_init(&p[2], "bad2", "{\"a\":\"\xed\xa0\x80\"}");
	want[2] = BARREL_E_BADJSON;
	req_init(&p[3], "bad3", NULL);
	p[3].body = deep;
	p[3].len = deeplen;
	want[3] = BARREL_E_BADJSON;
	req_init(&p[4], "bad4", NULL);
	p[4].body = huge;
	p[4].len = BODY_MAX_LEN + 1;
	want[4] = BARREL_E_TOOBIG;
	req_init(&p[5], "bad5", "{\"_rev\":\"one-abc\"}");
	want[5] = BARREL_E_BADREV;
	req_init(&p[6], "good", "{\"v\":\"no parent\"}");
	want[6] = BARREL_E_CONFLICT;   /* exists (unknown parents: above) */
	req_init(&p[7], "bad7", "{\"v\":1} trailing");
	want[7] = BARREL_E_BADJSON;
	req_init(&p[8], "bad8", "{\"_unknown\":1}");
	want[8] = BARREL_E_INVALID;
	req_init(&p[NB], "fine", "{\"ok\":true}");

	s0 = stat_of(f.d);
	OK(docdb_put(f.d, p, NB + 1));
	s1 = stat_of(f.d);
	for (int i = 0; i < NB; i++) {
		if (i == 3)   /* too deep: a clean error of either kind */
			ck_assert_msg(p[i].rc == BARREL_E_BADJSON ||
				      p[i].rc == BARREL_E_TOOBIG,
				      "deep: %d (%s)", p[i].rc,
				      barrel_strerror(p[i].rc));
		else
			ck_assert_msg(p[i].rc == want[i],
				      "write %d: %d (%s), want %d (%s): %s", i,
				      p[i].rc, barrel_strerror(p[i].rc),
				      want[i], barrel_strerror(want[i]),
				      p[i].error);
		ck_assert_msg(p[i].error[0] != '\0', "write %d: no reason", i);
		ck_assert_uint_eq(p[i].seq, 0);
	}
	ck_assert_int_eq(p[NB].rc, 0);
	ck_assert_uint_eq(s1.txn, s0.txn + 1);
	/* only "fine" was written */
	rs = changes(f.d, NULL, 0, 0, 0, NULL);
	ck_assert_str_eq(row_ids(rs), "good fine");
	free(rs);
	t = tree_of(f.d, "good", NULL);
	ck_assert_uint_eq(revtree_count(t), 1);
	revtree_free(t);
	expect_body(f.d, "good", &good, "{\"v\":1}");
	for (int i = 0; i < NB; i++) {
		char id[16];

		snprintf(id, sizeof(id), "bad%d", i);
		expect_get_rc(f.d, id, NULL, DOC_GET_DELETED,
			      BARREL_E_NOTFOUND);
	}

	/* the same writes alone change nothing at all */
	s0 = stat_of(f.d);
	for (int i = 0; i < NB; i++) {
		p[i].rc = 0;
		p[i].error[0] = '\0';
		OK(docdb_put(f.d, &p[i], 1));
		ck_assert_int_ne(p[i].rc, 0);
	}
	s1 = stat_of(f.d);
	ck_assert_uint_eq(s1.entries, s0.entries);
	ck_assert_uint_eq(s1.seq, s0.seq);
	free(deep);
	free(huge);
	fx_close(&f);
}
END_TEST

/* Ids: 1..DOC_MAX_ID bytes of UTF-8, no NUL, '_' only for _design/. */
START_TEST(test_ids)
{
	char longid[DOC_MAX_ID + 2];
	struct fx f;
	struct doc_put p;
	static const struct {
		const char *id;
		size_t len;
		bool ok;
	} cases[] = {
		{ "a", 1, true },
		{ "caf\xc3\xa9", 5, true },
		{ "with space/and:colon", 20, true },
		{ "_design/x", 9, true },
		{ "", 0, false },
		{ "_", 1, false },
		{ "_foo", 4, false },
		{ "_local/x", 8, false },
		{ "_design", 7, false },
		{ "_designx", 8, false },
		{ "\xff", 1, false },
		{ "a\xc0\xaf", 3, false },
		{ "a\0b", 3, false },
	};

	memset(longid, 'x', sizeof(longid));
	ck_assert(docdb_id_valid(longid, DOC_MAX_ID));
	ck_assert(!docdb_id_valid(longid, DOC_MAX_ID + 1));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_msg(docdb_id_valid(cases[i].id, cases[i].len) ==
			      cases[i].ok, "id case %zu: want %d", i,
			      cases[i].ok);

	fx_open(&f);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		req_init(&p, NULL, "{}");
		p.id = cases[i].id;
		p.idlen = cases[i].len;
		put_req(f.d, &p);
		if (cases[i].ok)
			ck_assert_msg(p.rc == 0, "id case %zu: %d %s", i,
				      p.rc, p.error);
		else
			ck_assert_msg(p.rc == BARREL_E_INVALID,
				      "id case %zu: %d (%s)", i, p.rc,
				      barrel_strerror(p.rc));
	}
	req_init(&p, NULL, "{}");
	p.id = longid;
	p.idlen = DOC_MAX_ID + 1;
	EXPECT_RC(put_req(f.d, &p), BARREL_E_INVALID);
	p.idlen = DOC_MAX_ID;
	EXPECT_RC(put_req(f.d, &p), 0);
	/* no id at all, or a bad one in "_id" */
	EXPECT_RC(put(f.d, NULL, "{\"v\":1}", NULL, 0, NULL), BARREL_E_INVALID);
	EXPECT_RC(put(f.d, NULL, "{\"_id\":\"_bad\"}", NULL, 0, NULL),
		  BARREL_E_INVALID);
	EXPECT_RC(put(f.d, NULL, "{\"_id\":\"\"}", NULL, 0, NULL),
		  BARREL_E_INVALID);
	EXPECT_RC(put(f.d, NULL, "{\"_id\":\"a\\u0000b\"}", NULL, 0, NULL),
		  BARREL_E_INVALID);
	EXPECT_RC(put(f.d, NULL, "{\"_id\":\"from-body\"}", NULL, 0, NULL), 0);
	expect_body(f.d, "from-body", NULL, "{\"_id\":\"from-body\"}");
	fx_close(&f);
}
END_TEST

/* ---- all_docs ---- */

/* all_docs: id order within [start, end), deleted on request, no locals. */
START_TEST(test_all_docs)
{
	struct fx f;
	struct rows *rs;
	struct rev rd, ra;
	uint64_t lrev = 0;

	fx_open(&f);
	put_ok(f.d, "b", "{\"n\":\"b\"}", NULL);
	ra = put_ok(f.d, "a", "{\"n\":\"a\"}", NULL);
	put_ok(f.d, "c", "{\"n\":\"c\"}", NULL);
	put_ok(f.d, "_design/x", "{}", NULL);
	rd = put_ok(f.d, "d", "{}", NULL);
	del_ok(f.d, "d", &rd);
	OK(docdb_local_put(f.d, "aa", 2, "{}", 2, 0, &lrev, NULL));

	rs = all_docs(f.d, NULL, NULL, 0);
	ck_assert_str_eq(row_ids(rs), "_design/x a b c");
	assert_rev_eq(&rs->r[1].revs[0], &ra);
	ck_assert(!rs->r[1].has_doc);
	free(rs);
	rs = all_docs(f.d, "a", "c", 0);
	ck_assert_str_eq(row_ids(rs), "a b");
	free(rs);
	rs = all_docs(f.d, "aa", NULL, 0);
	ck_assert_str_eq(row_ids(rs), "b c");
	free(rs);
	rs = all_docs(f.d, NULL, "b", 0);
	ck_assert_str_eq(row_ids(rs), "_design/x a");
	free(rs);
	rs = all_docs(f.d, NULL, NULL, DOC_ROWS_DELETED);
	ck_assert_str_eq(row_ids(rs), "_design/x a b c d");
	ck_assert(rs->r[4].deleted);
	ck_assert(!rs->r[3].deleted);
	free(rs);
	rs = all_docs(f.d, NULL, NULL, DOC_ROWS_DESCENDING);
	ck_assert_str_eq(row_ids(rs), "c b a _design/x");
	free(rs);
	rs = all_docs(f.d, "b", NULL, DOC_ROWS_DOCS);
	ck_assert_str_eq(row_ids(rs), "b c");
	ck_assert(rs->r[0].has_doc);
	ck_assert_str_eq(rs->r[0].body, "{\"n\":\"b\"}");
	free(rs);
	fx_close(&f);
}
END_TEST

/* ---- persistence ---- */

/* Bodies, trees, feed, locals, attachments, revs_limit survive a reopen. */
START_TEST(test_persistence)
{
	char name[] = "p.bin", ty[] = "a/b";
	struct fx f;
	struct rev r1, r2, rc;
	struct doc_att a;
	struct doc_put p;
	struct doc doc;
	struct enc e0, e1;
	struct rows *before, *after;
	struct bsnap *snap;
	uint8_t *data, *want;
	char *lbody;
	size_t llen;
	uint64_t lrev;

	fx_open(&f);
	OK(docdb_set_revs_limit(f.d, 7));
	r1 = put_ok(f.d, "doc", " { \"v\" : 1 } ", NULL);
	r2 = put_ok(f.d, "doc", "{\"v\":2}", &r1);
	ck_assert_int_eq(rep(f.d, "doc", "\"v\":\"branch\"", false, NULL,
			     "3-zz", "2-yy", RS(&r1).s, NULL), 0);
	rc = put_ok(f.d, "gone", "{}", NULL);
	del_ok(f.d, "gone", &rc);
	OK(docdb_local_put(f.d, "cp", 2, "{\"at\":5}", 8, 0, &lrev, NULL));
	att_stream(f.d, 77, 300 * KiB, 64 * KiB, name, ty, &a, NULL);
	req_init(&p, "att", "{}");
	p.atts = &a;
	p.natts = 1;
	ck_assert_int_eq(put_req(f.d, &p), 0);
	e0 = tree_enc(f.d, "doc");
	before = changes(f.d, NULL, 0, 0, DOC_ROWS_ALL_LEAVES, NULL);

	fx_reopen(&f);
	ck_assert_uint_eq(docdb_revs_limit(f.d), 7);
	e1 = tree_enc(f.d, "doc");
	ck_assert(e0.len == e1.len && memcmp(e0.buf, e1.buf, e0.len) == 0);
	free(e0.buf);
	free(e1.buf);
	expect_body(f.d, "doc", &r1, " { \"v\" : 1 } ");
	expect_member(f.d, "doc", NULL, 0, "v", "branch");   /* 3-zz wins */
	expect_body(f.d, "doc", &r2, "{\"v\":2}");
	expect_get_rc(f.d, "gone", NULL, 0, BARREL_E_NOTFOUND);
	after = changes(f.d, NULL, 0, 0, DOC_ROWS_ALL_LEAVES, NULL);
	ck_assert_uint_eq(after->n, before->n);
	ck_assert_str_eq(row_ids(after), "doc gone att");
	for (size_t i = 0; i < after->n; i++) {
		ck_assert_uint_eq(after->r[i].seq, before->r[i].seq);
		ck_assert_uint_eq(after->r[i].nrevs, before->r[i].nrevs);
		ck_assert_int_eq(after->r[i].deleted, before->r[i].deleted);
		for (size_t j = 0; j < after->r[i].nrevs; j++)
			assert_rev_eq(&after->r[i].revs[j],
				      &before->r[i].revs[j]);
	}
	free(before);
	free(after);
	OK(docdb_local_get(f.d, NULL, "cp", 2, &lbody, &llen, &lrev));
	ck_assert_str_eq(lbody, "{\"at\":5}");
	ck_assert_uint_eq(lrev, 1);
	free(lbody);
	OK(bdb_snapshot(docdb_bdb(f.d), &snap));
	OK(docdb_get(f.d, snap, "att", 3, NULL, 0, &doc));
	ck_assert_uint_eq(doc.natts, 1);
	data = att_read(f.d, snap, &doc.atts[0]);
	want = malloc(300 * KiB);
	ck_assert_ptr_nonnull(want);
	tu_pattern(77, 0, want, 300 * KiB);
	ck_assert(memcmp(data, want, 300 * KiB) == 0);
	free(want);
	free(data);
	doc_release(&doc);
	bsnap_release(snap);
	/* and it takes new writes on top */
	put_ok(f.d, "doc", "{\"v\":3}", &r2);
	fx_close(&f);
}
END_TEST

/* ---- more edge cases ---- */

/* Writes of one doc in one bulk see each other's effects. */
START_TEST(test_bulk_same_doc)
{
	const char *b1 = "{\"n\":1}", *b2 = "{\"n\":2}";
	struct fx f;
	struct doc_put p[4];
	struct body b;
	struct rev r1;
	struct revtree *t;
	struct rows *rs;

	fx_open(&f);
	ck_assert_int_eq(body_parse(b1, strlen(b1), &b, NULL), 0);
	OK(body_rev(&b, NULL, false, NULL, 0, &r1));
	body_release(&b);
	req_init(&p[0], "x", b1);
	req_init(&p[1], "x", b2);
	p[1].parent = &r1;
	req_init(&p[2], "x", "{\"n\":3}");
	req_init(&p[3], "x", "{\"n\":4}");
	p[3].parent = &r1;
	OK(docdb_put(f.d, p, 4));
	ck_assert_msg(p[0].rc == 0, "%s", p[0].error);
	assert_rev_eq(&p[0].rev, &r1);
	ck_assert_msg(p[1].rc == 0, "%s", p[1].error);
	ck_assert_uint_eq(p[1].rev.gen, 2);
	EXPECT_RC(p[2].rc, BARREL_E_CONFLICT);
	EXPECT_RC(p[3].rc, BARREL_E_CONFLICT);
	t = tree_of(f.d, "x", NULL);
	ck_assert_uint_eq(revtree_count(t), 2);
	revtree_free(t);
	expect_body(f.d, "x", NULL, b2);
	expect_body(f.d, "x", &r1, b1);
	rs = changes(f.d, NULL, 0, 0, 0, NULL);
	ck_assert_str_eq(row_ids(rs), "x");
	ck_assert_uint_eq(rs->r[0].seq, p[1].seq);
	free(rs);
	fx_close(&f);
}
END_TEST

struct editor {
	struct docdb *d;
	int t;
	int fails;
};

static void *winner_editor(void *arg)
{
	struct editor *e = arg;
	char body[64];

	for (int i = 0; i < 50; i++) {
		struct doc_put p;

		snprintf(body, sizeof(body), "{\"t\":%d,\"i\":%d}", e->t, i);
		req_init(&p, "ctr", body);
		p.flags = DOC_PUT_ON_WINNER;
		if (docdb_put(e->d, &p, 1) || p.rc)
			e->fails++;
	}
	return NULL;
}

/* Two threads editing on the winner never conflict: one linear history. */
START_TEST(test_on_winner_concurrent)
{
	struct fx f;
	struct editor e[2];
	pthread_t th[2];
	struct revtree *t;
	struct revtree_info *leaves;
	size_t n;

	fx_open(&f);
	for (int i = 0; i < 2; i++) {
		e[i] = (struct editor){ f.d, i, 0 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, winner_editor,
						&e[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	ck_assert_int_eq(e[0].fails + e[1].fails, 0);
	t = tree_of(f.d, "ctr", NULL);
	ck_assert_uint_eq(revtree_count(t), 100);
	OK(revtree_leaves(t, &leaves, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(leaves[0].rev.gen, 100);
	free(leaves);
	revtree_free(t);
	fx_close(&f);
}
END_TEST

/* A BODY_MAX_LEN body is stored and readable by rev once superseded. */
START_TEST(test_max_body)
{
	size_t len = BODY_MAX_LEN;
	char *big = malloc(len + 1);
	struct fx f;
	struct doc_put p;
	struct doc doc;
	struct rev r1;

	ck_assert_ptr_nonnull(big);
	memcpy(big, "{\"a\":\"", 6);
	tu_pattern(3, 0, big + 6, len - 8);
	for (size_t i = 6; i < len - 2; i++)   /* printable, no quote */
		big[i] = (char)('a' + (uint8_t)big[i] % 26);
	memcpy(big + len - 2, "\"}", 3);
	fx_open(&f);
	req_init(&p, "big", big);
	ck_assert_msg(put_req(f.d, &p) == 0, "%s", p.error);
	r1 = p.rev;
	put_ok(f.d, "big", "{}", &r1);
	OK(get(f.d, "big", &r1, 0, &doc));
	ck_assert_uint_eq(doc.len, len);
	ck_assert(memcmp(doc.body, big, len) == 0);
	doc_release(&doc);
	fx_reopen(&f);
	OK(get(f.d, "big", &r1, 0, &doc));
	ck_assert_uint_eq(doc.len, len);
	ck_assert(memcmp(doc.body, big, len) == 0);
	doc_release(&doc);
	fx_close(&f);
	free(big);
}
END_TEST

/* Replication: stubs carry over, _deleted is read, paths are stemmed. */
START_TEST(test_replicated_stubs_deleted_stem)
{
	char body[4096];
	struct fx f;
	struct doc doc;
	struct bsnap *snap;
	struct rev b2 = R("2-b");
	struct revtree *t;
	uint8_t *data;
	size_t n;

	fx_open(&f);
	ck_assert_int_eq(rep(f.d, "r", "\"_attachments\":{\"f\":{\"content_type"
			     "\":\"t/p\",\"data\":\"aGk=\"}}", false, NULL,
			     "1-a", NULL), 0);
	ck_assert_int_eq(rep(f.d, "r", "\"v\":2,\"_attachments\":{\"f\":"
			     "{\"stub\":true,\"revpos\":1}}", false, NULL,
			     "2-b", "1-a", NULL), 0);
	OK(bdb_snapshot(docdb_bdb(f.d), &snap));
	OK(docdb_get(f.d, snap, "r", 1, &b2, 0, &doc));
	ck_assert_uint_eq(doc.natts, 1);
	ck_assert_str_eq(doc.atts[0].name, "f");
	ck_assert_uint_eq(doc.atts[0].revpos, 1);
	ck_assert_uint_eq(doc.atts[0].length, 2);
	data = att_read(f.d, snap, &doc.atts[0]);
	ck_assert_mem_eq(data, "hi", 2);
	free(data);
	doc_release(&doc);
	bsnap_release(snap);

	/* "_deleted": true in a replicated body */
	ck_assert_int_eq(rep(f.d, "r", "\"_deleted\":true", false, NULL,
			     "3-c", "2-b", NULL), 0);
	expect_winner(f.d, "r", "3-c", true);
	expect_get_rc(f.d, "r", NULL, 0, BARREL_E_NOTFOUND);

	/* a 20-revision path into a database with revs_limit 5 */
	OK(docdb_set_revs_limit(f.d, 5));
	n = (size_t)snprintf(body, sizeof(body),
			     "{\"_revisions\":{\"start\":20,\"ids\":[");
	for (int g = 20; g >= 1; g--)
		n += (size_t)snprintf(body + n, sizeof(body) - n, "\"h%d\"%s",
				      g, g > 1 ? "," : "");
	snprintf(body + n, sizeof(body) - n, "]},\"v\":20}");
	{
		struct doc_put p;

		req_init(&p, "long", body);
		p.flags = DOC_PUT_REPLICATED;
		ck_assert_msg(put_req(f.d, &p) == 0, "%s", p.error);
	}
	t = tree_of(f.d, "long", NULL);
	ck_assert_uint_eq(revtree_count(t), 5);
	revtree_free(t);
	expect_winner(f.d, "long", "20-h20", false);
	fx_close(&f);
}
END_TEST

/* Replicating a revision known only as an ancestor stores its body. */
START_TEST(test_replicated_fills_missing)
{
	struct fx f;
	struct doc_put p;
	struct rev b2 = R("2-b");

	fx_open(&f);
	ck_assert_int_eq(rep(f.d, "r", "\"v\":\"A\"", false, NULL, "3-c",
			     "2-b", "1-a", NULL), 0);
	expect_get_rc(f.d, "r", &b2, 0, BARREL_E_NOTFOUND);
	req_init(&p, "r", "{\"_revisions\":{\"start\":2,\"ids\":[\"b\",\"a\"]},"
		 "\"v\":\"B\"}");
	p.flags = DOC_PUT_REPLICATED;
	ck_assert_int_eq(put_req(f.d, &p), 0);
	assert_rev_eq(&p.rev, &b2);
	ck_assert_uint_gt(p.seq, 0);
	expect_member(f.d, "r", &b2, 0, "v", "B");
	expect_winner(f.d, "r", "3-c", false);
	expect_member(f.d, "r", NULL, 0, "v", "A");
	/* again: now a no-op */
	p.rc = 0;
	OK(docdb_put(f.d, &p, 1));
	ck_assert_int_eq(p.rc, 0);
	ck_assert_uint_eq(p.seq, 0);
	fx_close(&f);
}
END_TEST

/* Bad attachments (name, follows, no content) are INVALID, write nothing. */
START_TEST(test_att_bad_input)
{
	char bad[] = "\xff\xfe.bin", ty[] = "a/b";
	struct fx f;
	struct doc_att a, rm;
	struct doc_put p;

	fx_open(&f);
	att_bytes(f.d, "data", 4, bad, ty, &a);
	req_init(&p, "n1", "{}");
	p.atts = &a;
	p.natts = 1;
	a.name = NULL;
	EXPECT_RC(put_req(f.d, &p), BARREL_E_INVALID);
	memset(&rm, 0, sizeof(rm));
	rm.remove = true;
	req_init(&p, "n2", "{}");
	p.atts = &rm;
	p.natts = 1;
	EXPECT_RC(put_req(f.d, &p), BARREL_E_INVALID);
	EXPECT_RC(put(f.d, "n3", "{\"_attachments\":{\"x\":{\"follows\":true,"
		      "\"content_type\":\"a/b\",\"length\":3}}}", NULL, 0, NULL),
		  BARREL_E_INVALID);
	EXPECT_RC(put(f.d, "n4", "{\"_attachments\":{\"x\":{\"content_type\":"
		      "\"a/b\"}}}", NULL, 0, NULL), BARREL_E_INVALID);
	EXPECT_RC(put(f.d, "n5", "{\"_attachments\":{\"x\":\"data\"}}", NULL, 0,
		      NULL), BARREL_E_INVALID);
	for (int i = 1; i <= 5; i++) {
		char id[8];

		snprintf(id, sizeof(id), "n%d", i % 10);
		expect_get_rc(f.d, id, NULL, DOC_GET_DELETED,
			      BARREL_E_NOTFOUND);
	}
	/* a name that is not UTF-8 (doc_json could not show it) */
	a.name = bad;
	req_init(&p, "n1", "{}");
	p.atts = &a;
	p.natts = 1;
	EXPECT_RC(put_req(f.d, &p), BARREL_E_INVALID);
	expect_get_rc(f.d, "n1", NULL, DOC_GET_DELETED, BARREL_E_NOTFOUND);
	fx_close(&f);
}
END_TEST

/* Empty attachments, streamed or inline, are kept with length 0. */
START_TEST(test_att_empty)
{
	static const uint8_t empty_md5[16] = { 0xd4, 0x1d, 0x8c, 0xd9, 0x8f,
					       0x00, 0xb2, 0x04, 0xe9, 0x80,
					       0x09, 0x98, 0xec, 0xf8, 0x42,
					       0x7e };
	char name[] = "empty", ty[] = "text/plain";
	struct fx f;
	struct doc_att a;
	struct doc_put p;
	struct doc doc;
	struct bsnap *snap;
	struct bblob_reader *r = NULL;
	uint8_t byte;

	fx_open(&f);
	att_bytes(f.d, NULL, 0, name, ty, &a);
	ck_assert_mem_eq(a.md5, empty_md5, 16);
	req_init(&p, "streamed", "{}");
	p.atts = &a;
	p.natts = 1;
	ck_assert_msg(put_req(f.d, &p) == 0, "%s", p.error);
	ck_assert_int_eq(put(f.d, "inline", "{\"_attachments\":{\"empty\":"
			     "{\"content_type\":\"text/plain\",\"data\":\"\"}}}",
			     NULL, 0, NULL), 0);
	OK(bdb_snapshot(docdb_bdb(f.d), &snap));
	for (int i = 0; i < 2; i++) {
		const char *id = i ? "inline" : "streamed";

		OK(docdb_get(f.d, snap, id, strlen(id), NULL, 0, &doc));
		ck_assert_msg(doc.natts == 1, "%s: %zu attachments", id,
			      doc.natts);
		ck_assert_str_eq(doc.atts[0].name, "empty");
		ck_assert_uint_eq(doc.atts[0].length, 0);
		ck_assert_mem_eq(doc.atts[0].md5, empty_md5, 16);
		OK(docdb_att_open(f.d, snap, &doc.atts[0], &r));
		ck_assert_uint_eq(bblob_length(r), 0);
		ck_assert_int_eq(bblob_read(r, &byte, 1, 0), 0);
		bblob_close(r);
		doc_release(&doc);
	}
	bsnap_release(snap);
	fx_close(&f);
}
END_TEST

static int blob_rc(struct docdb *d, uint64_t blob)
{
	struct bsnap *snap;
	struct bblob_reader *r = NULL;
	int rc;

	OK(bdb_snapshot(docdb_bdb(d), &snap));
	rc = bsnap_blob_open(snap, blob, &r);
	if (!rc)
		bblob_close(r);
	bsnap_release(snap);
	return rc;
}

/* Check that the winner of id has one attachment of pattern seed and
 * len bytes; returns its blob. */
static uint64_t expect_att(struct docdb *d, const char *id, uint64_t seed,
			   size_t len)
{
	struct bsnap *snap;
	struct doc doc;
	uint8_t *data, *want = malloc(len);
	uint64_t blob;

	ck_assert_ptr_nonnull(want);
	OK(bdb_snapshot(docdb_bdb(d), &snap));
	OK(docdb_get(d, snap, id, strlen(id), NULL, 0, &doc));
	ck_assert_uint_eq(doc.natts, 1);
	data = att_read(d, snap, &doc.atts[0]);
	tu_pattern(seed, 0, want, len);
	ck_assert_msg(memcmp(data, want, len) == 0, "%s: content differs", id);
	blob = doc.atts[0].blob;
	free(data);
	free(want);
	doc_release(&doc);
	bsnap_release(snap);
	return blob;
}

/* Shared content lives while any revision names it, then is unlinked. */
START_TEST(test_att_refcount)
{
	struct docdb_opts o = { .keep_bodies = 1 };
	char n1[] = "x.bin", ty[] = "a/b";
	struct fx f;
	struct doc_att a1, a2;
	struct doc_put p;
	struct rev r1, r2;
	struct bgc_stats gs;
	uint64_t blob;

	fx_open_opts(&f, &o);
	att_stream(f.d, 5, 256 * KiB, 64 * KiB, n1, ty, &a1, NULL);
	req_init(&p, "d1", "{}");
	p.atts = &a1;
	p.natts = 1;
	ck_assert_int_eq(put_req(f.d, &p), 0);
	r1 = p.rev;
	att_stream(f.d, 5, 256 * KiB, 64 * KiB, n1, ty, &a2, NULL);
	req_init(&p, "d2", "{}");
	p.atts = &a2;
	p.natts = 1;
	ck_assert_int_eq(put_req(f.d, &p), 0);
	r2 = p.rev;
	blob = expect_att(f.d, "d2", 5, 256 * KiB);
	ck_assert_uint_eq(expect_att(f.d, "d1", 5, 256 * KiB), blob);

	/* d1 drops it (and its old revision's body goes): d2 still has it */
	put_ok(f.d, "d1", "{\"v\":2}", &r1);
	OK(blob_rc(f.d, blob));
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(put(f.d, "d2", i % 2 ? "{\"odd\":1}" : "{}",
				     &r2, DOC_PUT_KEEP_ATTS, &r2), 0);
		ck_assert_uint_eq(expect_att(f.d, "d2", 5, 256 * KiB), blob);
	}
	memset(&gs, 0, sizeof(gs));
	OK(bdb_gc(docdb_bdb(f.d), 1.0, &gs));
	expect_att(f.d, "d2", 5, 256 * KiB);
	fx_reopen(&f);
	expect_att(f.d, "d2", 5, 256 * KiB);

	/* nothing names it any more */
	put_ok(f.d, "d2", "{\"v\":9}", &r2);
	EXPECT_RC(blob_rc(f.d, blob), BARREL_E_NOTFOUND);
	fx_close(&f);
}
END_TEST

/* An attachment of a failed write is reusable and left no reference. */
START_TEST(test_att_retry_and_abort)
{
	struct docdb_opts o = { .keep_bodies = 1 };
	char n1[] = "r.bin", ty[] = "a/b";
	struct fx f;
	struct doc_att a;
	struct doc_att_writer *w = NULL;
	struct doc_put p;
	struct rev r1, r2;
	uint64_t blob;
	uint8_t buf[1000];

	fx_open_opts(&f, &o);
	OK(docdb_att_create(f.d, &w));
	tu_pattern(1, 0, buf, sizeof(buf));
	OK(doc_att_write(w, buf, sizeof(buf)));
	doc_att_abort(w);

	r1 = put_ok(f.d, "x", "{}", NULL);
	att_stream(f.d, 6, 100 * KiB, 64 * KiB, n1, ty, &a, NULL);
	req_init(&p, "x", "{\"v\":2}");   /* no parent: the doc exists */
	p.atts = &a;
	p.natts = 1;
	EXPECT_RC(put_req(f.d, &p), BARREL_E_CONFLICT);
	req_init(&p, "x", "{\"v\":2}");
	p.parent = &r1;
	p.atts = &a;
	p.natts = 1;
	ck_assert_msg(put_req(f.d, &p) == 0, "%s", p.error);
	r2 = p.rev;
	blob = expect_att(f.d, "x", 6, 100 * KiB);
	put_ok(f.d, "x", "{\"v\":3}", &r2);
	EXPECT_RC(blob_rc(f.d, blob), BARREL_E_NOTFOUND);
	fx_close(&f);
}
END_TEST

static Suite *docdb_suite(void)
{
	Suite *s = suite_create("docdb");
	TCase *tc = tcase_create("docs");
	TCase *att = tcase_create("attachments");

	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_open);
	tcase_add_test(tc, test_roundtrip_bytes);
	tcase_add_test(tc, test_rev_deterministic);
	tcase_add_test(tc, test_update_rules);
	tcase_add_test(tc, test_update_unknown_parent);
	tcase_add_test(tc, test_put_on_winner);
	tcase_add_test(tc, test_put_branch);
	tcase_add_test(tc, test_put_branch_pruned);
	tcase_add_test(tc, test_put_nosync);
	tcase_add_test(tc, test_put_normalize);
	tcase_add_test(tc, test_doc_json);
	tcase_add_test(tc, test_doc_json_text);
	tcase_add_test(tc, test_delete_recreate);
	tcase_add_test(tc, test_replicated_graft_order);
	tcase_add_test(tc, test_replicated_rev_alone);
	tcase_add_test(tc, test_conflicts);
	tcase_add_test(tc, test_purge);
	tcase_add_test(tc, test_revs_limit);
	tcase_add_test(tc, test_keep_bodies);
	tcase_add_test(tc, test_bodies_follow_winner);
	tcase_add_test(tc, test_bulk_twice_not_retained);
	tcase_add_test(tc, test_changes);
	tcase_add_test(tc, test_changes_all_leaves);
	tcase_add_test(tc, test_subscription_wakes);
	tcase_add_test(tc, test_local_docs);
	tcase_add_test(tc, test_bulk);
	tcase_add_test(tc, test_get_many);
	tcase_add_test(tc, test_bad_input);
	tcase_add_test(tc, test_ids);
	tcase_add_test(tc, test_all_docs);
	tcase_add_test(tc, test_persistence);
	tcase_add_test(tc, test_bulk_same_doc);
	tcase_add_test(tc, test_on_winner_concurrent);
	tcase_add_test(tc, test_max_body);
	tcase_add_test(tc, test_replicated_fills_missing);
	suite_add_tcase(s, tc);

	tcase_add_unchecked_fixture(att, base_setup, base_teardown);
	tcase_set_timeout(att, 180);
	tcase_add_test(att, test_att_stream_5mib);
	tcase_add_test(att, test_digest_format_parse);
	tcase_add_test(att, test_att_inline_big);
	tcase_add_test(att, test_att_dedup);
	tcase_add_test(att, test_att_keep_and_drop);
	tcase_add_test(att, test_att_inline_and_bad_stub);
	tcase_add_test(att, test_edit_from_cached_head);
	tcase_add_test(att, test_att_remove_and_follows);
	tcase_add_test(att, test_replicated_stubs_deleted_stem);
	tcase_add_test(att, test_att_refcount);
	tcase_add_test(att, test_att_bad_input);
	tcase_add_test(att, test_att_empty);
	tcase_add_test(att, test_att_retry_and_abort);
	suite_add_tcase(s, att);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(docdb_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
