#include "config.h"

/*
 * The view index (engine/view.h) on a real DATADIR: the background
 * indexer follows puts, updates, deletes and conflicts; design-document
 * edits rebuild the edited view only; state persists across a reopen;
 * rows come in collation order; every query option; the built-in and
 * JavaScript reduces with grouping; failing and endless map functions
 * are isolated; queries wait for freshness; and a throughput figure.
 */

#include <check.h>
#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/db.h"
#include "engine/docdb.h"
#include "engine/error.h"
#include "engine/revtree.h"
#include "engine/view.h"
#include "tests/engine/testenv.h"

TU_BASE_FIXTURE("test_view")

#define EXPECT_RC(expr, want)                                            \
	do {                                                             \
		int rc_ = (expr);                                        \
		ck_assert_msg(rc_ == (want), "%s returned %d (%s), want %d", \
			      #expr, rc_, barrel_strerror(rc_), (int)(want)); \
	} while (0)

/* ---- log() calls of map functions, counted per view ---- */

static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_log_views[16][64];
static unsigned long g_log_count[16];

static void on_log(void *arg, const char *ddoc, const char *view,
		   const char *msg, size_t len)
{
	(void)arg;
	(void)ddoc;
	(void)msg;
	(void)len;
	pthread_mutex_lock(&g_log_lock);
	for (size_t i = 0; i < 16; i++) {
		if (!g_log_views[i][0])
			snprintf(g_log_views[i], sizeof(g_log_views[i]), "%s", view);
		if (!strcmp(g_log_views[i], view)) {
			g_log_count[i]++;
			break;
		}
	}
	pthread_mutex_unlock(&g_log_lock);
}

static unsigned long logs_of(const char *view)
{
	unsigned long n = 0;

	pthread_mutex_lock(&g_log_lock);
	for (size_t i = 0; i < 16; i++)
		if (!strcmp(g_log_views[i], view))
			n = g_log_count[i];
	pthread_mutex_unlock(&g_log_lock);
	return n;
}

static void logs_reset(void)
{
	pthread_mutex_lock(&g_log_lock);
	memset(g_log_views, 0, sizeof(g_log_views));
	memset(g_log_count, 0, sizeof(g_log_count));
	pthread_mutex_unlock(&g_log_lock);
}

/* ---- fixture: one DATADIR, database "db", its indexer ---- */

struct fx {
	char dir[PATH_MAX];
	struct benv *env;
	struct docdb *d;
	struct view_indexer *vi;
	struct view_indexer_opts o;
};

static void fx_start(struct fx *f, bool create)
{
	struct benv_opts o;

	benv_opts_init(&o);
	o.gc_thread = false;
	OK(benv_open(f->dir, &o, &f->env));
	OK(docdb_open(f->env, "db", create, NULL, &f->d));
	OK(view_indexer_start(f->d, &f->o, &f->vi));
}

static void fx_open(struct fx *f)
{
	memset(f, 0, sizeof(*f));
	logs_reset();
	view_indexer_opts_init(&f->o);
	f->o.js.timeout_ms = 300;
	f->o.wait_ms = 100;
	f->o.log = on_log;
	tu_new_datadir(g_base, f->dir, sizeof(f->dir));
	fx_start(f, true);
}

static void fx_close(struct fx *f)
{
	view_indexer_stop(f->vi);
	f->vi = NULL;
	docdb_close(f->d);
	benv_close(f->env);
}

static void fx_reopen(struct fx *f)
{
	fx_close(f);
	fx_start(f, false);
}

/* ---- documents ---- */

static struct rev put_full(struct fx *f, const char *id, const char *body,
			   const struct rev *parent, bool deleted,
			   unsigned flags)
{
	struct doc_put p = { .id = id, .idlen = strlen(id), .body = body,
			     .len = body ? strlen(body) : 0, .parent = parent,
			     .deleted = deleted, .flags = flags };

	OK(docdb_put(f->d, &p, 1));
	ck_assert_msg(p.rc == 0, "put %s: %s %s", id, barrel_strerror(p.rc),
		      p.error);
	return p.rev;
}

static struct rev put(struct fx *f, const char *id, const char *body,
		      const struct rev *parent)
{
	return put_full(f, id, body, parent, false, 0);
}

static struct rev del(struct fx *f, const char *id, const struct rev *parent)
{
	return put_full(f, id, NULL, parent, true, 0);
}

static struct rev R(const char *s)
{
	struct rev r;

	ck_assert_int_eq(rev_parse(s, strlen(s), &r), 0);
	return r;
}

/* A design document _design/NAME with views given as "V", map, reduce
 * (NULL: none) triples, NULL-terminated; parent as put(). */
static struct rev ddoc(struct fx *f, const char *name,
		       const struct rev *parent, ...)
{
	struct json_object *o = json_object_new_object();
	struct json_object *views = json_object_new_object();
	char id[256];
	const char *v;
	va_list ap;
	struct rev r;

	va_start(ap, parent);
	while ((v = va_arg(ap, const char *))) {
		const char *map = va_arg(ap, const char *);
		const char *red = va_arg(ap, const char *);
		struct json_object *one = json_object_new_object();

		json_object_object_add(one, "map", json_object_new_string(map));
		if (red)
			json_object_object_add(one, "reduce",
					       json_object_new_string(red));
		json_object_object_add(views, v, one);
	}
	va_end(ap);
	json_object_object_add(o, "language", json_object_new_string("javascript"));
	json_object_object_add(o, "views", views);
	snprintf(id, sizeof(id), "_design/%s", name);
	r = put(f, id, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
		parent);
	json_object_put(o);
	return r;
}

/* ---- queries: rows as one string "id key value, ..." ---- */

struct out {
	char s[1 << 16];
	size_t n;
	bool docs;                 /* append the doc's _id too */
};

static int collect(void *arg, const struct view_row *r)
{
	struct out *o = arg;
	const char *sep = o->n ? ", " : "";
	int k;

	if (r->id)
		k = snprintf(o->s + o->n, sizeof(o->s) - o->n, "%s%.*s %s %s",
			     sep, (int)r->idlen, r->id, r->key, r->value);
	else
		k = snprintf(o->s + o->n, sizeof(o->s) - o->n, "%s%s %s", sep,
			     r->key, r->value);
	o->n += (size_t)k;
	ck_assert_uint_eq(strlen(r->key), r->keylen);
	ck_assert_uint_eq(strlen(r->value), r->valuelen);
	if (o->docs) {
		struct json_object *d = r->doc ? json_tokener_parse(r->doc) : NULL;
		struct json_object *id = NULL;

		json_object_object_get_ex(d, "_id", &id);
		k = snprintf(o->s + o->n, sizeof(o->s) - o->n, " doc=%s",
			     id ? json_object_get_string(id) : "null");
		o->n += (size_t)k;
		json_object_put(d);
	}
	ck_assert_uint_lt(o->n, sizeof(o->s) - 1);
	return 0;
}

static struct out g_out;

/* Stops a query after its first row with 7. */
static int stop_at_first(void *arg, const struct view_row *r)
{
	collect(arg, r);
	return 7;
}

/* Run a query (fresh: update=true) and return its rows as a string. */
static const char *Q(struct fx *f, const char *dd, const char *v,
		     const struct view_query *q, struct view_result *res)
{
	memset(&g_out, 0, sizeof(g_out));
	g_out.docs = q->include_docs;
	OK(view_query(f->vi, dd, v, q, collect, &g_out, res));
	return g_out.s;
}

#define EXPECT_ROWS(f, dd, v, q, want)                                   \
	do {                                                             \
		const char *got_ = Q(f, dd, v, q, NULL);                 \
		ck_assert_msg(!strcmp(got_, want), "%s/%s: rows\n  %s\nwant\n  %s", \
			      dd, v, got_, want);                        \
	} while (0)

static struct view_query qdef(void)
{
	struct view_query q;

	view_query_init(&q);
	q.timeout_ms = 20000;
	return q;
}

static struct view_info status(struct fx *f, const char *dd, const char *v)
{
	struct view_info vi;

	OK(view_status(f->vi, dd, v, &vi));
	return vi;
}

static const char *MAP_KV =
	"function(doc){ if (doc.k !== undefined) emit(doc.k, doc.v); }";

/* ---- the index follows the documents ---- */

/* Puts, updates (old rows gone), deletes and design docs (never mapped)
 * show in the index; an emit-twice doc keeps both rows. */
START_TEST(t_follows_docs)
{
	struct view_query q = qdef();
	struct fx f;
	struct rev a, b;

	fx_open(&f);
	ddoc(&f, "d", NULL, "kv", MAP_KV, NULL, NULL);
	EXPECT_ROWS(&f, "d", "kv", &q, "");
	a = put(&f, "a", "{\"k\":2,\"v\":\"x\"}", NULL);
	b = put(&f, "b", "{\"k\":1,\"v\":null}", NULL);
	put(&f, "c", "{\"other\":1}", NULL);
	EXPECT_ROWS(&f, "d", "kv", &q, "b 1 null, a 2 \"x\"");
	a = put(&f, "a", "{\"k\":0,\"v\":[1]}", &a);
	EXPECT_ROWS(&f, "d", "kv", &q, "a 0 [1], b 1 null");
	del(&f, "b", &b);
	EXPECT_ROWS(&f, "d", "kv", &q, "a 0 [1]");
	ddoc(&f, "twice", NULL, "t",
	     "function(doc){ if (doc.k !== undefined) { emit(doc.k, 1); "
	     "emit(doc.k, 2); emit('z', 3); } }", NULL, NULL);
	EXPECT_ROWS(&f, "twice", "t", &q, "a 0 1, a 0 2, a \"z\" 3");
	put(&f, "a", "{\"k\":5}", &a);
	EXPECT_ROWS(&f, "twice", "t", &q, "a 5 1, a 5 2, a \"z\" 3");
	ck_assert_uint_eq(status(&f, "twice", "t").total_rows, 3);
	ck_assert_uint_eq(status(&f, "d", "kv").total_rows, 1);
	fx_close(&f);
}
END_TEST

/* Only the winner of a conflicted document is mapped, it sees
 * _conflicts, and resolving the conflict switches the rows. */
START_TEST(t_conflicts)
{
	const char *ra = "1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	const char *rb = "1-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
	struct view_query q = qdef();
	struct rev wb = R(rb);
	char body[256];
	struct fx f;

	fx_open(&f);
	ddoc(&f, "d", NULL, "kv", MAP_KV, NULL,
	     "conf", "function(doc){ if (doc._conflicts) emit(doc._id, "
	     "doc._conflicts); }", NULL, NULL);
	snprintf(body, sizeof(body), "{\"_rev\":\"%s\",\"k\":\"A\"}", ra);
	put_full(&f, "c", body, NULL, false, DOC_PUT_REPLICATED);
	snprintf(body, sizeof(body), "{\"_rev\":\"%s\",\"k\":\"B\"}", rb);
	put_full(&f, "c", body, NULL, false, DOC_PUT_REPLICATED);
	EXPECT_ROWS(&f, "d", "kv", &q, "c \"B\" null");
	EXPECT_ROWS(&f, "d", "conf", &q,
		    "c \"c\" [\"1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]");
	del(&f, "c", &wb);
	EXPECT_ROWS(&f, "d", "kv", &q, "c \"A\" null");
	EXPECT_ROWS(&f, "d", "conf", &q, "");
	fx_close(&f);
}
END_TEST

/* Editing one view rebuilds it alone: its sibling is not mapped again
 * (no log() calls, same mapped count); a removed view's tables go. */
START_TEST(t_ddoc_edit)
{
	const char *mapA = "function(doc){ log('a'); emit(doc.n, 1); }";
	const char *mapA2 = "function(doc){ log('a'); emit(-doc.n, 2); }";
	const char *mapB = "function(doc){ log('b'); emit(doc.n, null); }";
	struct view_query q = qdef();
	struct view_info ia, ib;
	struct doc_put p[20];
	char ids[20][16], bodies[20][32];
	struct rev r;
	uint32_t t;
	char name[64];
	struct fx f;

	fx_open(&f);
	for (int i = 0; i < 20; i++) {
		snprintf(ids[i], sizeof(ids[i]), "d%02d", i);
		snprintf(bodies[i], sizeof(bodies[i]), "{\"n\":%d}", i);
		p[i] = (struct doc_put){ .id = ids[i], .idlen = 3,
					 .body = bodies[i],
					 .len = strlen(bodies[i]) };
	}
	OK(docdb_put(f.d, p, 20));
	r = ddoc(&f, "d", NULL, "A", mapA, NULL, "B", mapB, NULL, NULL);
	Q(&f, "d", "A", &q, NULL);
	Q(&f, "d", "B", &q, NULL);
	ck_assert_uint_eq(logs_of("A"), 20);
	ck_assert_uint_eq(logs_of("B"), 20);
	ib = status(&f, "d", "B");
	ck_assert_uint_eq(ib.mapped, 20);

	r = ddoc(&f, "d", &r, "A", mapA2, NULL, "B", mapB, NULL, NULL);
	q.limit = 2;
	EXPECT_ROWS(&f, "d", "A", &q, "d19 -19 2, d18 -18 2");
	Q(&f, "d", "B", &q, NULL);
	ia = status(&f, "d", "A");
	ck_assert_uint_eq(ia.mapped, 20);
	ck_assert_uint_eq(status(&f, "d", "B").mapped, 20);
	ck_assert_uint_eq(status(&f, "d", "B").seq, status(&f, "d", "B").db_seq);
	ck_assert_uint_eq(logs_of("A"), 40);
	ck_assert_uint_eq(logs_of("B"), 20);
	ck_assert_str_ne(ia.sig, ib.sig);

	/* a new doc after the edit: both map it once, from one context */
	put(&f, "zz", "{\"n\":100}", NULL);
	Q(&f, "d", "A", &q, NULL);
	Q(&f, "d", "B", &q, NULL);
	ck_assert_uint_eq(logs_of("A"), 41);
	ck_assert_uint_eq(logs_of("B"), 21);

	/* removing A drops its index */
	snprintf(name, sizeof(name), "view$%s$keys", ia.sig);
	OK(bdb_table(docdb_bdb(f.d), name, &t));
	r = ddoc(&f, "d", &r, "B", mapB, NULL, NULL);
	EXPECT_RC(view_query(f.vi, "d", "A", &q, collect, &g_out, NULL),
		  BARREL_E_NOTFOUND);
	Q(&f, "d", "B", &q, NULL);
	EXPECT_RC(bdb_table(docdb_bdb(f.d), name, &t), BARREL_E_NOTFOUND);
	ck_assert_uint_eq(status(&f, "d", "B").mapped, 21);
	ck_assert_uint_eq(logs_of("B"), 21);

	/* deleting the design document drops its last index (bounded poll:
	 * nothing to query once it is gone) */
	snprintf(name, sizeof(name), "view$%s$keys", ib.sig);
	OK(bdb_table(docdb_bdb(f.d), name, &t));
	del(&f, "_design/d", &r);
	EXPECT_RC(view_query(f.vi, "d", "B", &q, collect, &g_out, NULL),
		  BARREL_E_NOTFOUND);
	for (int i = 0; i < 500 && !bdb_table(docdb_bdb(f.d), name, &t); i++)
		nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
	EXPECT_RC(bdb_table(docdb_bdb(f.d), name, &t), BARREL_E_NOTFOUND);
	fx_close(&f);
}
END_TEST

/* The index and its state survive a reopen: nothing is mapped again. */
START_TEST(t_reopen)
{
	struct view_query q = qdef();
	struct view_info a, b;
	char id[16], body[32];
	struct fx f;

	fx_open(&f);
	ddoc(&f, "d", NULL, "kv",
	     "function(doc){ log('x'); emit(doc.k, doc.v); }", "_count", NULL);
	for (int i = 0; i < 30; i++) {
		snprintf(id, sizeof(id), "k%02d", i);
		snprintf(body, sizeof(body), "{\"k\":%d,\"v\":%d}", i % 7, i);
		put(&f, id, body, NULL);
	}
	EXPECT_ROWS(&f, "d", "kv", &q, "null 30");
	a = status(&f, "d", "kv");
	ck_assert_uint_eq(logs_of("kv"), 30);
	fx_reopen(&f);
	logs_reset();
	q.update = VIEW_UPDATE_FALSE;
	EXPECT_ROWS(&f, "d", "kv", &q, "null 30");
	q.update = VIEW_UPDATE_TRUE;
	EXPECT_ROWS(&f, "d", "kv", &q, "null 30");
	b = status(&f, "d", "kv");
	ck_assert_uint_eq(b.seq, a.seq);
	ck_assert_uint_eq(b.mapped, 30);
	ck_assert_uint_eq(b.total_rows, 30);
	ck_assert_uint_eq(logs_of("kv"), 0);
	put(&f, "new", "{\"k\":1,\"v\":1}", NULL);
	EXPECT_ROWS(&f, "d", "kv", &q, "null 31");
	ck_assert_uint_eq(logs_of("kv"), 1);
	fx_close(&f);
}
END_TEST

/* Rewrite the collation version stored in a view's state record
 * (FORMAT.md "View state record": a u16-counted string at offset 34). */
static void patch_collation(struct fx *f, const char *hex, const char *coll)
{
	struct bdb *db = docdb_bdb(f->d);
	uint8_t sig[16], rec[4096];
	struct btxn *txn;
	struct bval v;
	uint32_t t;
	size_t old, n = strlen(coll);

	for (int i = 0; i < 16; i++)
		sscanf(hex + 2 * i, "%2hhx", &sig[i]);
	OK(bdb_table(db, "views", &t));
	OK(bdb_begin(db, &txn));
	OK(btxn_get(txn, t, sig, 16, &v));
	ck_assert_uint_lt(v.len, sizeof(rec) - n);
	old = ((const uint8_t *)v.data)[34] | ((const uint8_t *)v.data)[35] << 8;
	memcpy(rec, v.data, 34);
	rec[34] = (uint8_t)n;
	rec[35] = 0;
	memcpy(rec + 36, coll, n);
	memcpy(rec + 36 + n, (const uint8_t *)v.data + 36 + old,
	       v.len - 36 - old);
	OK(btxn_put(txn, t, sig, 16, rec, v.len - old + n, NULL));
	bval_release(&v);
	OK(btxn_commit(txn));
}

/* An index built under another collation version is rebuilt at open;
 * one built under this one is not. */
START_TEST(t_collation_version)
{
	struct view_query q = qdef();
	struct view_info st;
	struct fx f;

	fx_open(&f);
	ddoc(&f, "d", NULL, "kv", "function(doc){ log('m'); emit(doc.k, 1); }",
	     "_sum", NULL);
	put(&f, "a", "{\"k\":\"x\"}", NULL);
	put(&f, "b", "{\"k\":\"y\"}", NULL);
	EXPECT_ROWS(&f, "d", "kv", &q, "null 2");
	ck_assert_uint_eq(logs_of("kv"), 2);
	st = status(&f, "d", "kv");
	view_indexer_stop(f.vi);
	patch_collation(&f, st.sig, "icu-0/uca-0/col-0");
	logs_reset();
	OK(view_indexer_start(f.d, &f.o, &f.vi));
	EXPECT_ROWS(&f, "d", "kv", &q, "null 2");
	ck_assert_uint_eq(logs_of("kv"), 2);
	fx_reopen(&f);
	EXPECT_ROWS(&f, "d", "kv", &q, "null 2");
	ck_assert_uint_eq(logs_of("kv"), 2);
	fx_close(&f);
}
END_TEST

/* Rows come in CouchDB's collation order of mixed key types, then by
 * doc id. */
START_TEST(t_collation)
{
	static const char *keys[] = {
		"null", "false", "true", "-1.5", "0", "1", "2", "10",
		"\"a\"", "\"A\"", "\"aa\"", "\"b\"", "\"B\"", "[]", "[1]",
		"[1,2]", "[2]", "[\"a\"]", "{}", "{\"a\":1}", "{\"b\":0}",
	};
	size_t n = sizeof(keys) / sizeof(keys[0]);
	struct view_query q = qdef();
	char want[4096] = "", body[128], id[32];
	size_t w = 0;
	struct fx f;

	fx_open(&f);
	ddoc(&f, "d", NULL, "kv", "function(doc){ emit(doc.k, null); }", NULL,
	     NULL);
	for (size_t i = 0; i < n; i++) {           /* reversed insert order */
		size_t j = n - 1 - i;

		snprintf(id, sizeof(id), "x%02zu", j);
		snprintf(body, sizeof(body), "{\"k\":%s}", keys[j]);
		put(&f, id, body, NULL);
	}
	put(&f, "w", "{\"k\":1}", NULL);            /* same key, id first */
	for (size_t i = 0; i < n; i++) {
		if (i == 5)
			w += (size_t)snprintf(want + w, sizeof(want) - w,
					      ", w 1 null");
		w += (size_t)snprintf(want + w, sizeof(want) - w,
				      "%sx%02zu %s null", i ? ", " : "", i,
				      keys[i]);
	}
	EXPECT_ROWS(&f, "d", "kv", &q, want);
	fx_close(&f);
}
END_TEST

/* Every query option gives the rows CouchDB gives. */
START_TEST(t_query_options)
{
	struct view_query q;
	struct view_result res;
	struct fx f;

	fx_open(&f);
	ddoc(&f, "d", NULL, "kv", MAP_KV, NULL, NULL);
	put(&f, "a", "{\"k\":1,\"v\":\"a\"}", NULL);
	put(&f, "b", "{\"k\":2,\"v\":\"b\"}", NULL);
	put(&f, "c", "{\"k\":2,\"v\":\"c\"}", NULL);
	put(&f, "d", "{\"k\":3,\"v\":{\"_id\":\"a\"}}", NULL);
	put(&f, "e", "{\"k\":4,\"v\":\"e\"}", NULL);

	q = qdef();
	EXPECT_ROWS(&f, "d", "kv", &q,
		    "a 1 \"a\", b 2 \"b\", c 2 \"c\", d 3 {\"_id\":\"a\"}, e 4 \"e\"");
	q.key = "2";
	EXPECT_ROWS(&f, "d", "kv", &q, "b 2 \"b\", c 2 \"c\"");
	q.descending = true;
	EXPECT_ROWS(&f, "d", "kv", &q, "c 2 \"c\", b 2 \"b\"");
	q = qdef();
	q.keys = "[4, 2, 9, 1]";
	EXPECT_ROWS(&f, "d", "kv", &q,
		    "e 4 \"e\", b 2 \"b\", c 2 \"c\", a 1 \"a\"");
	q = qdef();
	q.startkey = "2";
	q.endkey = "3";
	EXPECT_ROWS(&f, "d", "kv", &q,
		    "b 2 \"b\", c 2 \"c\", d 3 {\"_id\":\"a\"}");
	q.inclusive_end = false;
	EXPECT_ROWS(&f, "d", "kv", &q, "b 2 \"b\", c 2 \"c\"");
	q.startkey_docid = "c";
	EXPECT_ROWS(&f, "d", "kv", &q, "c 2 \"c\"");
	q = qdef();
	q.startkey = "2";
	q.endkey = "2";
	q.endkey_docid = "b";
	EXPECT_ROWS(&f, "d", "kv", &q, "b 2 \"b\"");
	q = qdef();
	q.descending = true;
	q.startkey = "3";
	q.endkey = "2";
	EXPECT_ROWS(&f, "d", "kv", &q,
		    "d 3 {\"_id\":\"a\"}, c 2 \"c\", b 2 \"b\"");
	q.inclusive_end = false;
	EXPECT_ROWS(&f, "d", "kv", &q, "d 3 {\"_id\":\"a\"}");
	q.inclusive_end = true;
	q.endkey_docid = "c";
	EXPECT_ROWS(&f, "d", "kv", &q, "d 3 {\"_id\":\"a\"}, c 2 \"c\"");
	q = qdef();
	q.descending = true;
	EXPECT_ROWS(&f, "d", "kv", &q,
		    "e 4 \"e\", d 3 {\"_id\":\"a\"}, c 2 \"c\", b 2 \"b\", a 1 \"a\"");
	q.skip = 1;
	q.limit = 2;
	EXPECT_ROWS(&f, "d", "kv", &q, "d 3 {\"_id\":\"a\"}, c 2 \"c\"");
	q = qdef();
	q.limit = 0;
	EXPECT_ROWS(&f, "d", "kv", &q, "");
	q = qdef();
	q.skip = 10;
	EXPECT_ROWS(&f, "d", "kv", &q, "");

	/* total_rows and offset */
	q = qdef();
	q.startkey = "2";
	q.offset = true;
	q.limit = 1;
	Q(&f, "d", "kv", &q, &res);
	ck_assert_uint_eq(res.total_rows, 5);
	ck_assert_uint_eq(res.offset, 1);
	ck_assert_uint_eq(res.rows, 1);
	ck_assert_uint_eq(res.update_seq, res.db_seq);
	q.descending = true;
	Q(&f, "d", "kv", &q, &res);
	ck_assert_uint_eq(res.offset, 2);
	ck_assert_str_eq(g_out.s, "c 2 \"c\"");

	/* include_docs, with a linked document */
	q = qdef();
	q.include_docs = true;
	q.startkey = "3";
	EXPECT_ROWS(&f, "d", "kv", &q,
		    "d 3 {\"_id\":\"a\"} doc=a, e 4 \"e\" doc=e");

	/* a callback's non-zero return stops the query and is returned */
	q = qdef();
	q.keys = "[1, 2]";
	memset(&g_out, 0, sizeof(g_out));
	EXPECT_RC(view_query(f.vi, "d", "kv", &q, stop_at_first, &g_out, NULL),
		  7);
	ck_assert_str_eq(g_out.s, "a 1 \"a\"");

	/* bad options */
	q = qdef();
	q.startkey = "3";
	q.endkey = "1";
	EXPECT_RC(view_query(f.vi, "d", "kv", &q, collect, &g_out, NULL),
		  BARREL_E_INVALID);
	q.descending = true;                  /* the right order descending */
	EXPECT_ROWS(&f, "d", "kv", &q,
		    "d 3 {\"_id\":\"a\"}, c 2 \"c\", b 2 \"b\", a 1 \"a\"");
	q = qdef();
	q.startkey = "1";
	q.endkey = "3";
	q.descending = true;
	EXPECT_RC(view_query(f.vi, "d", "kv", &q, collect, &g_out, NULL),
		  BARREL_E_INVALID);
	/* equal keys emptied by the doc ids: no rows, as CouchDB */
	q = qdef();
	q.startkey = q.endkey = "3";
	q.startkey_docid = "z";
	q.endkey_docid = "a";
	EXPECT_ROWS(&f, "d", "kv", &q, "");
	q = qdef();
	q.startkey = q.endkey = "3";
	q.inclusive_end = false;
	EXPECT_ROWS(&f, "d", "kv", &q, "");
	q = qdef();
	q.key = "{bad";
	EXPECT_RC(view_query(f.vi, "d", "kv", &q, collect, &g_out, NULL),
		  BARREL_E_BADJSON);
	q = qdef();
	q.reduce = VIEW_REDUCE_TRUE;
	EXPECT_RC(view_query(f.vi, "d", "kv", &q, collect, &g_out, NULL),
		  BARREL_E_INVALID);
	q = qdef();
	q.group = true;
	EXPECT_RC(view_query(f.vi, "d", "kv", &q, collect, &g_out, NULL),
		  BARREL_E_INVALID);
	EXPECT_RC(view_query(f.vi, "nope", "kv", &q, collect, &g_out, NULL),
		  BARREL_E_NOTFOUND);
	EXPECT_RC(view_query(f.vi, "d", "nope", &q, collect, &g_out, NULL),
		  BARREL_E_NOTFOUND);
	fx_close(&f);
}
END_TEST

/* _count, _sum and _stats with group=false, group=true and group_level
 * over array keys; reduce=false gives the map rows; ranges and keys. */
START_TEST(t_reduce_builtin)
{
	static const char *docs[][2] = {
		{ "a", "{\"k\":[2020,1,5],\"v\":1}" },
		{ "b", "{\"k\":[2020,1,7],\"v\":2}" },
		{ "c", "{\"k\":[2020,2,1],\"v\":3}" },
		{ "d", "{\"k\":[2021,1,1],\"v\":4}" },
		{ "e", "{\"k\":[2021,1,1],\"v\":5}" },
		{ "f", "{\"k\":\"s\",\"v\":6}" },
	};
	struct view_query q;
	struct fx f;

	fx_open(&f);
	ddoc(&f, "d", NULL, "cnt", MAP_KV, "_count", "sum", MAP_KV, "_sum",
	     "st", MAP_KV, "_stats", NULL);
	for (size_t i = 0; i < 6; i++)
		put(&f, docs[i][0], docs[i][1], NULL);
	q = qdef();
	EXPECT_ROWS(&f, "d", "cnt", &q, "null 6");
	EXPECT_ROWS(&f, "d", "sum", &q, "null 21");
	EXPECT_ROWS(&f, "d", "st", &q,
		    "null {\"sum\":21,\"count\":6,\"min\":1,\"max\":6,\"sumsqr\":91}");
	q.group = true;
	EXPECT_ROWS(&f, "d", "sum", &q,
		    "\"s\" 6, [2020,1,5] 1, [2020,1,7] 2, [2020,2,1] 3, [2021,1,1] 9");
	q.group_level = 1;
	EXPECT_ROWS(&f, "d", "sum", &q, "\"s\" 6, [2020] 6, [2021] 9");
	q.group_level = 2;
	EXPECT_ROWS(&f, "d", "cnt", &q,
		    "\"s\" 1, [2020,1] 2, [2020,2] 1, [2021,1] 2");
	q.descending = true;
	EXPECT_ROWS(&f, "d", "cnt", &q,
		    "[2021,1] 2, [2020,2] 1, [2020,1] 2, \"s\" 1");
	q.descending = false;
	q.skip = 1;
	q.limit = 2;
	EXPECT_ROWS(&f, "d", "cnt", &q, "[2020,1] 2, [2020,2] 1");
	q = qdef();
	q.group_level = 1;
	q.startkey = "[2020,1,6]";
	q.endkey = "[2021]";
	EXPECT_ROWS(&f, "d", "sum", &q, "[2020] 5");
	q = qdef();
	q.startkey = "[2020,2]";
	EXPECT_ROWS(&f, "d", "sum", &q, "null 12");
	q = qdef();
	q.group = true;
	q.keys = "[\"s\", [2021,1,1], [9]]";
	EXPECT_ROWS(&f, "d", "sum", &q, "\"s\" 6, [2021,1,1] 9");
	q = qdef();
	q.keys = "[\"s\"]";
	EXPECT_RC(view_query(f.vi, "d", "sum", &q, collect, &g_out, NULL),
		  BARREL_E_INVALID);
	q = qdef();
	q.reduce = VIEW_REDUCE_FALSE;
	q.limit = 1;
	EXPECT_ROWS(&f, "d", "sum", &q, "f \"s\" 6");
	q = qdef();
	q.key = "[9]";
	EXPECT_ROWS(&f, "d", "cnt", &q, "");
	fx_close(&f);
}
END_TEST

/* A JavaScript reduce with rereduce over more than one chunk, grouped. */
START_TEST(t_reduce_js)
{
	const char *red = "function(keys, values, rereduce) {"
			  " if (rereduce) return sum(values);"
			  " return values.length * 1000 + sum(values); }";
	struct view_query q = qdef();
	struct doc_put p[2500];
	char ids[2500][16], bodies[2500][48], want[64];
	struct fx f;

	fx_open(&f);
	ddoc(&f, "d", NULL, "r", MAP_KV, red, NULL);
	for (int i = 0; i < 2500; i++) {
		snprintf(ids[i], sizeof(ids[i]), "%04d", i);
		snprintf(bodies[i], sizeof(bodies[i]),
			 "{\"k\":[%d,%d],\"v\":1}", i % 2, i);
		p[i] = (struct doc_put){ .id = ids[i], .idlen = 4,
					 .body = bodies[i],
					 .len = strlen(bodies[i]) };
	}
	OK(docdb_put(f.d, p, 2500));
	/* 2500 rows: chunks of 1000 each count 1000 + their values */
	snprintf(want, sizeof(want), "null %d", 2500 * 1000 + 2500);
	EXPECT_ROWS(&f, "d", "r", &q, want);
	q.group_level = 1;
	EXPECT_ROWS(&f, "d", "r", &q, "[0] 1251250, [1] 1251250");
	q.group_level = 0;
	q.group = true;
	q.limit = 1;
	EXPECT_ROWS(&f, "d", "r", &q, "[0,0] 1001");
	ddoc(&f, "bad", NULL, "r", MAP_KV, "function(){ throw 'no'; }", NULL);
	q = qdef();
	EXPECT_RC(view_query(f.vi, "bad", "r", &q, collect, &g_out, NULL),
		  BARREL_E_FUNCTION);
	fx_close(&f);
}
END_TEST

/* A map function that throws on some documents skips them alone; the
 * error is counted with its document; a sibling view is unaffected; a
 * function that does not compile makes its view report broken. */
START_TEST(t_throwing_map)
{
	struct view_query q = qdef();
	struct view_info st;
	struct fx f;

	fx_open(&f);
	ddoc(&f, "d", NULL,
	     "t", "function(doc){ if (doc.bad) throw new Error('boom'); "
	     "emit(doc._id, null); }", NULL,
	     "ok", "function(doc){ emit(doc._id, null); }", NULL,
	     "broken", "function(doc){ emit(", NULL, NULL);
	put(&f, "a", "{}", NULL);
	put(&f, "b", "{\"bad\":true}", NULL);
	put(&f, "c", "{}", NULL);
	EXPECT_ROWS(&f, "d", "t", &q, "a \"a\" null, c \"c\" null");
	EXPECT_ROWS(&f, "d", "ok", &q,
		    "a \"a\" null, b \"b\" null, c \"c\" null");
	st = status(&f, "d", "t");
	ck_assert_uint_eq(st.errors, 1);
	ck_assert_str_eq(st.last_error_id, "b");
	ck_assert_msg(strstr(st.last_error, "boom"), "%s", st.last_error);
	ck_assert_uint_eq(status(&f, "d", "ok").errors, 0);
	EXPECT_RC(view_query(f.vi, "d", "broken", &q, collect, &g_out, NULL),
		  BARREL_E_FUNCTION);
	st = status(&f, "d", "broken");
	ck_assert(st.broken);
	ck_assert_msg(st.last_error[0], "no message");
	fx_close(&f);
}
END_TEST

/* An endless map function is stopped by the time limit on each document
 * it loops on; the other documents are indexed. */
START_TEST(t_endless_map)
{
	struct view_query q = qdef();
	struct view_info st;
	struct fx f;

	fx_open(&f);
	ddoc(&f, "d", NULL, "loop",
	     "function(doc){ while (doc.spin) {} emit(doc._id, 1); }", "_sum",
	     NULL);
	put(&f, "a", "{}", NULL);
	put(&f, "spin", "{\"spin\":true}", NULL);
	put(&f, "z", "{}", NULL);
	EXPECT_ROWS(&f, "d", "loop", &q, "null 2");
	st = status(&f, "d", "loop");
	ck_assert_uint_eq(st.errors, 1);
	ck_assert_str_eq(st.last_error_id, "spin");
	fx_close(&f);
}
END_TEST

/* update=false reads what is indexed (and says how far); update=true
 * waits until the index reaches the sequence current at the call, or
 * fails with -ETIMEDOUT after the timeout. */
START_TEST(t_freshness)
{
	const char *slow = "function(doc){ var t = Date.now(); "
			   "while (Date.now() - t < 30) {} emit(1, 1); }";
	struct view_query q = qdef();
	struct view_result res;
	char id[16];
	struct fx f;

	fx_open(&f);
	ddoc(&f, "d", NULL, "s", slow, "_count", NULL);
	Q(&f, "d", "s", &q, &res);
	for (int i = 0; i < 20; i++) {
		snprintf(id, sizeof(id), "s%02d", i);
		put(&f, id, "{}", NULL);
	}
	q.update = VIEW_UPDATE_FALSE;
	Q(&f, "d", "s", &q, &res);
	ck_assert_uint_lt(res.update_seq, res.db_seq);
	ck_assert_str_ne(g_out.s, "null 20");
	q.update = VIEW_UPDATE_TRUE;
	q.timeout_ms = 1;
	EXPECT_RC(view_query(f.vi, "d", "s", &q, collect, &g_out, NULL),
		  -ETIMEDOUT);
	q.timeout_ms = 20000;
	Q(&f, "d", "s", &q, &res);
	ck_assert_str_eq(g_out.s, "null 20");
	ck_assert_uint_ge(res.update_seq, res.db_seq);
	fx_close(&f);
}
END_TEST

/* ---- throughput ---- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t bench_docs(void)
{
	const char *e = getenv("VIEW_BENCH_DOCS");

	return e ? strtoul(e, NULL, 10) : 100000;
}

/* Write n docs "bNNNNNN" {"x": i % 1000} in bulks of 1000; seconds. */
static double write_docs(struct fx *f, size_t base, size_t n)
{
	static struct doc_put p[1000];
	static char ids[1000][16], bodies[1000][32];
	double t0 = now_s();

	for (size_t i = 0; i < n; i += 1000) {
		size_t m = n - i < 1000 ? n - i : 1000;

		for (size_t j = 0; j < m; j++) {
			snprintf(ids[j], sizeof(ids[j]), "b%07zu", base + i + j);
			snprintf(bodies[j], sizeof(bodies[j]), "{\"x\":%zu}",
				 (base + i + j) % 1000);
			p[j] = (struct doc_put){ .id = ids[j],
						 .idlen = strlen(ids[j]),
						 .body = bodies[j],
						 .len = strlen(bodies[j]) };
		}
		OK(docdb_put(f->d, p, m));
	}
	return now_s() - t0;
}

static int count_row(void *arg, const struct doc_row *row)
{
	(void)row;
	(*(size_t *)arg)++;
	return 0;
}

static int count_vrow(void *arg, const struct view_row *row)
{
	(void)row;
	(*(size_t *)arg)++;
	return 0;
}

/* Single-document commits, timed: mean and worst latency in ms. */
static void put_latency(struct fx *f, const char *prefix, int n,
			double *mean, double *worst)
{
	char id[32];

	*mean = *worst = 0;
	for (int i = 0; i < n; i++) {
		double t0 = now_s(), dt;

		snprintf(id, sizeof(id), "%s%04d", prefix, i);
		put(f, id, "{\"x\":7}", NULL);
		dt = (now_s() - t0) * 1000;
		*mean += dt / n;
		if (dt > *worst)
			*worst = dt;
	}
}

/* Index 100 000 small docs with emit(doc.x, 1) and _count: docs/s; a
 * key range against reading the same documents by id; and document
 * writes with and without the indexer committing alongside. */
START_TEST(t_throughput)
{
	struct view_query q = qdef();
	struct view_result res;
	size_t n = bench_docs(), got = 0;
	double t0, t_index, t_q, t_docs, w_alone, w_busy;
	double lat_mean, lat_max, busy_mean, busy_max;
	struct fx f;

	fx_open(&f);
	w_alone = write_docs(&f, 0, n);
	put_latency(&f, "alone", 200, &lat_mean, &lat_max);
	ddoc(&f, "d", NULL, "x", "function(doc){ emit(doc.x, 1); }", "_count",
	     NULL);
	t0 = now_s();
	q.timeout_ms = 600000;
	Q(&f, "d", "x", &q, &res);
	t_index = now_s() - t0;
	ck_assert_uint_eq(res.rows, 1);
	ck_assert_uint_eq(status(&f, "d", "x").total_rows, n + 200);

	/* key range 100..199: about n/10 rows, vs the same number of
	 * documents read by id */
	q.reduce = VIEW_REDUCE_FALSE;
	q.startkey = "100";
	q.endkey = "199";
	q.update = VIEW_UPDATE_FALSE;
	t0 = now_s();
	OK(view_query(f.vi, "d", "x", &q, count_vrow, &got, &res));
	t_q = now_s() - t0;
	ck_assert_uint_eq(got, n / 10);
	t0 = now_s();
	got = 0;
	OK(docdb_all_docs(f.d, NULL, "b", 1, "b0100000", 8, DOC_ROWS_DOCS,
			  count_row, &got));
	t_docs = now_s() - t0;
	ck_assert_uint_eq(got, n < 100000 ? n : 100000);

	/* single commits while a second view builds; then bulks while
	 * both views follow */
	ddoc(&f, "e", NULL, "y", "function(doc){ emit([doc.x, doc._id], 1); }",
	     NULL, NULL);
	put_latency(&f, "busy", 200, &busy_mean, &busy_max);
	w_busy = write_docs(&f, n, n);
	q = qdef();
	q.timeout_ms = 600000;
	Q(&f, "d", "x", &q, &res);
	q.limit = 1;
	Q(&f, "e", "y", &q, &res);
	ck_assert_uint_eq(status(&f, "e", "y").total_rows, 2 * n + 400);
	printf("view index: %zu docs in %.2f s = %.0f docs/s\n", n, t_index,
	       (double)n / t_index);
	printf("view range query: %zu rows in %.4f s (%.0f rows/s); documents "
	       "by id (all_docs, include_docs): %.0f docs/s\n", n / 10, t_q,
	       (double)(n / 10) / t_q,
	       (double)(n < 100000 ? n : 100000) / t_docs);
	printf("doc bulk writes: %zu docs in %.2f s idle, %.2f s while "
	       "indexing\n", n, w_alone, w_busy);
	printf("single-doc commits: mean %.2f ms (max %.2f) idle, mean %.2f ms "
	       "(max %.2f) while a view builds\n", lat_mean, lat_max,
	       busy_mean, busy_max);
	fx_close(&f);
}
END_TEST

static Suite *view_suite(void)
{
	Suite *s = suite_create("view");
	TCase *tc = tcase_create("index");
	TCase *tb = tcase_create("throughput");

	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, t_follows_docs);
	tcase_add_test(tc, t_conflicts);
	tcase_add_test(tc, t_ddoc_edit);
	tcase_add_test(tc, t_reopen);
	tcase_add_test(tc, t_collation);
	tcase_add_test(tc, t_collation_version);
	tcase_add_test(tc, t_query_options);
	tcase_add_test(tc, t_reduce_builtin);
	tcase_add_test(tc, t_reduce_js);
	tcase_add_test(tc, t_throwing_map);
	tcase_add_test(tc, t_endless_map);
	tcase_add_test(tc, t_freshness);
	suite_add_tcase(s, tc);
	tcase_add_unchecked_fixture(tb, base_setup, base_teardown);
	tcase_set_timeout(tb, 600);
	tcase_add_test(tb, t_throughput);
	suite_add_tcase(s, tb);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(view_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
