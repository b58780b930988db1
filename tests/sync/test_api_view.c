#include "config.h"

/*
 * The view endpoints over HTTP (sync/api_view.c) against an in-process
 * server whose catalog indexes views: every query parameter checked
 * against the exact rows (ids, keys, values, order) CouchDB gives,
 * reduce with _count/_sum/_stats and grouping, include_docs, freshness
 * (update=false), POST keys, _info, documents that change or leave the
 * view, and CouchDB's error bodies.
 */

#include <check.h>
#include <ctype.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "tests/engine/testenv.h"
#include "tests/sync/synctest.h"

TU_BASE_FIXTURE("test_api_view")

static struct synctest T;

static void srv_setup(void)
{
	st_start(&T, g_base, NULL);
	ck_assert_int_eq(st_json(&T, "PUT", "/db", NULL, NULL), 201);
}

static void srv_teardown(void)
{
	st_stop(&T);
}

/* ---- the data: twelve documents, one key of each JSON type ---- */

/*
 * Keys in CouchDB's collation: null < false < true < numbers < strings
 * (ICU: "a" < "B") < arrays < objects; d and l share the key 1 (then
 * ordered by id). Values are n.
 */
#define DOCS "{\"docs\":[" \
	"{\"_id\":\"a\",\"k\":null,\"n\":1}," \
	"{\"_id\":\"b\",\"k\":false,\"n\":2}," \
	"{\"_id\":\"c\",\"k\":true,\"n\":3}," \
	"{\"_id\":\"d\",\"k\":1,\"n\":4}," \
	"{\"_id\":\"e\",\"k\":2.5,\"n\":5}," \
	"{\"_id\":\"f\",\"k\":\"a\",\"n\":6}," \
	"{\"_id\":\"g\",\"k\":\"B\",\"n\":7}," \
	"{\"_id\":\"h\",\"k\":[\"x\",1],\"n\":8}," \
	"{\"_id\":\"i\",\"k\":[\"x\",2],\"n\":9}," \
	"{\"_id\":\"j\",\"k\":[\"y\",1],\"n\":10}," \
	"{\"_id\":\"k\",\"k\":{\"o\":1},\"n\":11}," \
	"{\"_id\":\"l\",\"k\":1,\"n\":12}]}"

#define MAP_K "function(doc){ if ('k' in doc) emit(doc.k, doc.n); }"
#define MAP_ARR "function(doc){ if (Array.isArray(doc.k)) emit(doc.k, doc.n); }"
#define MAP_LINK "function(doc){ if (doc.n === 1) emit('g', {_id: 'g'}); " \
	"if (doc.n === 2) emit('gone', {_id: 'nothere'}); }"

#define DDOC "{\"language\":\"javascript\",\"views\":{" \
	"\"by_k\":{\"map\":\"" MAP_K "\"}," \
	"\"count\":{\"map\":\"" MAP_K "\",\"reduce\":\"_count\"}," \
	"\"sum\":{\"map\":\"" MAP_K "\",\"reduce\":\"_sum\"}," \
	"\"stats\":{\"map\":\"" MAP_K "\",\"reduce\":\"_stats\"}," \
	"\"arr\":{\"map\":\"" MAP_ARR "\",\"reduce\":\"_sum\"}," \
	"\"link\":{\"map\":\"" MAP_LINK "\"}}}"

/* All of by_k, in order, as summary() writes it. */
#define ALL_ROWS "a:null=1 b:false=2 c:true=3 d:1=4 l:1=12 e:2.5=5 " \
	"f:\"a\"=6 g:\"B\"=7 h:[\"x\",1]=8 i:[\"x\",2]=9 j:[\"y\",1]=10 " \
	"k:{\"o\":1}=11"

static void load(void)
{
	struct json_object *j;
	long st = st_json(&T, "POST", "/db/_bulk_docs", DOCS, &j);

	ck_assert_msg(st == 201, "bulk_docs: %ld", st);
	ck_assert_int_eq(json_object_array_length(j), 12);
	json_object_put(j);
	ck_assert_int_eq(st_json(&T, "PUT", "/db/_design/t", DDOC, NULL), 201);
}

/* ---- requests ---- */

/* q with every byte but [A-Za-z0-9-_.~&=] percent-encoded. */
static void url_query(char *out, size_t size, const char *q)
{
	size_t n = 0;

	for (; *q && n + 4 < size; q++) {
		unsigned char c = (unsigned char)*q;

		if (isalnum(c) || strchr("-_.~&=", c))
			out[n++] = (char)c;
		else
			n += (size_t)snprintf(out + n, size - n, "%%%02X", c);
	}
	out[n] = '\0';
}

/* method on view V of _design/t with query q (raw; NULL: none). */
static long vreq(const char *method, const char *view, const char *q,
		 const char *body, struct json_object **j)
{
	char path[4096], enc[3000] = "";

	if (q)
		url_query(enc, sizeof(enc), q);
	snprintf(path, sizeof(path), "/db/_design/t/_view/%s%s%s", view,
		 q ? "?" : "", enc);
	return st_json(&T, method, path, body, j);
}

static struct json_object *member(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	json_object_object_get_ex(o, key, &v);
	return v;
}

static const char *jtext(struct json_object *v)
{
	return json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
					      JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* The rows as "id:key=value ..." (map) or "key=value ..." (reduce). */
static void summary(struct json_object *j, char *out, size_t size)
{
	struct json_object *rows = member(j, "rows");
	size_t n = 0, cnt = rows ? json_object_array_length(rows) : 0;

	out[0] = '\0';
	for (size_t i = 0; i < cnt && n < size; i++) {
		struct json_object *row = json_object_array_get_idx(rows, i);
		struct json_object *id = member(row, "id");

		n += (size_t)snprintf(out + n, size - n, "%s%s%s", i ? " " : "",
				      id ? json_object_get_string(id) : "",
				      id ? ":" : "");
		if (n < size)
			n += (size_t)snprintf(out + n, size - n, "%s=",
					      jtext(member(row, "key")));
		if (n < size)
			n += (size_t)snprintf(out + n, size - n, "%s",
					      jtext(member(row, "value")));
	}
}

/* GET view?q answers 200 with exactly the rows want; the reply is
 * returned (json_object_put() it). */
static struct json_object *expect_at(int line, const char *view,
				     const char *q, const char *want)
{
	struct json_object *j;
	char got[4096];
	long st = vreq("GET", view, q, NULL, &j);

	ck_assert_msg(st == 200, "line %d: %s?%s: status %ld %s", line, view,
		      q ? q : "", st, j ? jtext(j) : "");
	summary(j, got, sizeof(got));
	ck_assert_msg(!strcmp(got, want), "line %d: %s?%s:\n got  %s\n want %s",
		      line, view, q ? q : "", got, want);
	return j;
}

/* expect_at(), and the map figures total_rows and offset. */
static void expect_map_at(int line, const char *view, const char *q,
			  const char *want, int64_t total, int64_t offset)
{
	struct json_object *j = expect_at(line, view, q, want);

	ck_assert_msg(json_object_get_int64(member(j, "total_rows")) == total &&
		      json_object_get_int64(member(j, "offset")) == offset,
		      "line %d: %s?%s: %s, want total %lld offset %lld", line,
		      view, q ? q : "", jtext(j), (long long)total,
		      (long long)offset);
	json_object_put(j);
}

#define expect_map(...) expect_map_at(__LINE__, __VA_ARGS__)
#define expect_red(view, q, want) \
	json_object_put(expect_at(__LINE__, view, q, want))

/* method view?q (body may be NULL) fails with status, error, reason. */
static void expect_err_at(int line, const char *method, const char *view,
			  const char *q, const char *body, long status,
			  const char *error, const char *reason)
{
	struct json_object *j;
	long st = vreq(method, view, q, body, &j);

	ck_assert_msg(st == status && !strcmp(st_str(j, "error"), error) &&
		      (!reason || !strcmp(st_str(j, "reason"), reason)),
		      "line %d: %s %s?%s: %ld %s, want %ld %s %s", line,
		      method, view, q ? q : "", st, j ? jtext(j) : "", status,
		      error, reason ? reason : "");
	json_object_put(j);
}

#define expect_err(...) expect_err_at(__LINE__, __VA_ARGS__)
#define QPE "query_parse_error"

/* The body of GET path, raw. */
static char *raw_get(const char *path)
{
	char *out;

	ck_assert_int_eq(st_req_h(&T, "GET", path, NULL, NULL, 0, NULL, &out,
				  NULL), 200);
	return out;
}

/* The database's update_seq. */
static int64_t db_seq(void)
{
	struct json_object *j;
	int64_t seq;

	ck_assert_int_eq(st_json(&T, "GET", "/db", NULL, &j), 200);
	seq = json_object_get_int64(member(j, "update_seq"));
	json_object_put(j);
	return seq;
}

/* The current revision of doc id into rev (96 bytes). */
static void doc_rev(const char *id, char *rev)
{
	char path[256];
	struct json_object *j;

	snprintf(path, sizeof(path), "/db/%s", id);
	ck_assert_int_eq(st_json(&T, "GET", path, NULL, &j), 200);
	snprintf(rev, 96, "%s", st_str(j, "_rev"));
	json_object_put(j);
}

/* ---- map queries ---- */

/* Every row comes back in CouchDB's collation order, laid out as
 * CouchDB writes it. */
START_TEST(test_map_order)
{
	char *raw;

	load();
	expect_map("by_k", NULL, ALL_ROWS, 12, 0);
	raw = raw_get("/db/_design/t/_view/by_k?limit=1");
	ck_assert_str_eq(raw, "{\"total_rows\":12,\"offset\":0,\"rows\":[\r\n"
			 "{\"id\":\"a\",\"key\":null,\"value\":1}\r\n]}\n");
	free(raw);
	raw = raw_get("/db/_design/t/_view/by_k?limit=0");
	ck_assert_str_eq(raw, "{\"total_rows\":12,\"offset\":0,\"rows\":[\r\n"
			 "\r\n]}\n");
	free(raw);
}
END_TEST

/* key= selects one key's rows (by doc id); keys= gives each key's rows
 * in the order given, duplicates repeated, unknown keys nothing. */
START_TEST(test_key_keys)
{
	load();
	expect_map("by_k", "key=1", "d:1=4 l:1=12", 12, 3);
	expect_map("by_k", "key=\"a\"", "f:\"a\"=6", 12, 6);
	expect_map("by_k", "key=[\"x\",2]", "i:[\"x\",2]=9", 12, 9);
	expect_map("by_k", "key=null", "a:null=1", 12, 0);
	expect_map("by_k", "key=\"nope\"", "", 12, 8);
	expect_map("by_k", "keys=[\"B\",1,\"B\",\"zz\"]",
		   "g:\"B\"=7 d:1=4 l:1=12 g:\"B\"=7", 12, 7);
	expect_map("by_k", "keys=[]", "", 12, 0);
	expect_map("by_k", "keys=[1]&descending=true", "l:1=12 d:1=4", 12, 7);
}
END_TEST

/* startkey/endkey (both spellings) with inclusive_end both ways,
 * descending with swapped bounds, and CouchDB's error for bounds in
 * the wrong order. */
START_TEST(test_ranges)
{
	load();
	expect_map("by_k", "startkey=1&endkey=\"a\"",
		   "d:1=4 l:1=12 e:2.5=5 f:\"a\"=6", 12, 3);
	expect_map("by_k", "start_key=1&end_key=\"a\"",
		   "d:1=4 l:1=12 e:2.5=5 f:\"a\"=6", 12, 3);
	expect_map("by_k", "startkey=1&endkey=\"a\"&inclusive_end=false",
		   "d:1=4 l:1=12 e:2.5=5", 12, 3);
	expect_map("by_k", "startkey=[\"x\"]&endkey=[\"x\",{}]",
		   "h:[\"x\",1]=8 i:[\"x\",2]=9", 12, 8);
	expect_map("by_k", "endkey=true", "a:null=1 b:false=2 c:true=3",
		   12, 0);
	expect_map("by_k", "startkey={}", "k:{\"o\":1}=11", 12, 11);
	expect_map("by_k", "descending=true&startkey=\"a\"&endkey=1",
		   "f:\"a\"=6 e:2.5=5 l:1=12 d:1=4", 12, 5);
	expect_map("by_k", "descending=true&startkey=\"a\"&endkey=1"
		   "&inclusive_end=false", "f:\"a\"=6 e:2.5=5", 12, 5);
	expect_err("GET", "by_k", "descending=true&startkey=1&endkey=\"a\"",
		   NULL, 400, QPE, "No rows can match your key range, reverse "
		   "your start_key and end_key or set descending=false");
	expect_err("GET", "by_k", "startkey=\"a\"&endkey=1", NULL, 400, QPE,
		   "No rows can match your key range, reverse your start_key "
		   "and end_key or set descending=true");
	/* equal keys: the doc ids may empty the range, which is no error;
	 * the offset counts the rows before (1, "l"): key 1's "d" too */
	expect_map("by_k", "startkey=1&endkey=1&startkey_docid=l"
		   "&endkey_docid=d", "", 12, 4);
	expect_map("by_k", "startkey=1&endkey=1&inclusive_end=false", "",
		   12, 3);
}
END_TEST

/* limit, skip (and the offset it adds to), startkey_docid and
 * endkey_docid (both spellings), descending. */
START_TEST(test_limit_skip_docid)
{
	load();
	expect_map("by_k", "limit=3", "a:null=1 b:false=2 c:true=3", 12, 0);
	expect_map("by_k", "skip=2&limit=2", "c:true=3 d:1=4", 12, 2);
	expect_map("by_k", "skip=20", "", 12, 12);
	expect_map("by_k", "startkey=1&skip=1&limit=1", "l:1=12", 12, 4);
	expect_map("by_k", "descending=true&limit=2",
		   "k:{\"o\":1}=11 j:[\"y\",1]=10", 12, 0);
	expect_map("by_k", "startkey=1&startkey_docid=l&limit=2",
		   "l:1=12 e:2.5=5", 12, 4);
	expect_map("by_k", "start_key=1&start_key_doc_id=l&limit=2",
		   "l:1=12 e:2.5=5", 12, 4);
	expect_map("by_k", "endkey=1&endkey_docid=d",
		   "a:null=1 b:false=2 c:true=3 d:1=4", 12, 0);
	expect_map("by_k", "end_key=1&end_key_doc_id=d&inclusive_end=false",
		   "a:null=1 b:false=2 c:true=3", 12, 0);
	expect_map("by_k", "descending=true&startkey=1&startkey_docid=d",
		   "d:1=4 c:true=3 b:false=2 a:null=1", 12, 8);
}
END_TEST

/* ---- reduce ---- */

/* _count, _sum, _stats over the whole view, a key, a range; group=true
 * and group_level on array keys; reduce=false gives the map rows. */
START_TEST(test_reduce)
{
	struct json_object *j, *v;
	char *raw;

	load();
	expect_red("count", NULL, "null=12");
	expect_red("sum", NULL, "null=78");
	expect_red("count", "key=1", "null=2");
	expect_red("sum", "startkey=1&endkey=\"a\"", "null=27");
	j = expect_at(__LINE__, "stats", NULL, "null=" "{\"sum\":78,"
		      "\"count\":12,\"min\":1,\"max\":12,\"sumsqr\":650}");
	v = member(json_object_array_get_idx(member(j, "rows"), 0), "value");
	ck_assert_int_eq(json_object_get_int(member(v, "sumsqr")), 650);
	ck_assert_ptr_null(member(j, "total_rows"));
	json_object_put(j);
	expect_red("count", "group=true", "null=1 false=1 true=1 1=2 2.5=1 "
		   "\"a\"=1 \"B\"=1 [\"x\",1]=1 [\"x\",2]=1 [\"y\",1]=1 "
		   "{\"o\":1}=1");
	expect_red("count", "group=true&skip=1&limit=2", "false=1 true=1");
	expect_red("count", "group=true&descending=true&limit=2",
		   "{\"o\":1}=1 [\"y\",1]=1");
	expect_red("arr", "group_level=1", "[\"x\"]=17 [\"y\"]=10");
	expect_red("arr", "group=true&group_level=1", "[\"x\"]=17 [\"y\"]=10");
	expect_red("arr", "group_level=2",
		   "[\"x\",1]=8 [\"x\",2]=9 [\"y\",1]=10");
	expect_red("arr", "group=true&group_level=0", "null=27");
	expect_red("count", "keys=[1,\"a\",1]&group=true", "1=2 \"a\"=1 1=2");
	expect_map("count", "reduce=false&limit=2", "a:null=1 b:false=2",
		   12, 0);
	raw = raw_get("/db/_design/t/_view/count");
	ck_assert_str_eq(raw, "{\"rows\":[\r\n{\"key\":null,\"value\":12}"
			 "\r\n]}\n");
	free(raw);
}
END_TEST

/* ---- include_docs ---- */

/* include_docs gives each row's document (or the one its value links
 * to by _id, null when there is none); conflicts=true adds _conflicts. */
START_TEST(test_include_docs)
{
	struct json_object *j, *doc;

	load();
	j = expect_at(__LINE__, "by_k", "key=\"a\"&include_docs=true",
		      "f:\"a\"=6");
	doc = member(json_object_array_get_idx(member(j, "rows"), 0), "doc");
	ck_assert_str_eq(st_str(doc, "_id"), "f");
	ck_assert_str_eq(st_str(doc, "k"), "a");
	ck_assert_int_eq(json_object_get_int(member(doc, "n")), 6);
	ck_assert_int_eq(strncmp(st_str(doc, "_rev"), "1-", 2), 0);
	ck_assert_ptr_null(member(doc, "_conflicts"));
	json_object_put(j);

	j = expect_at(__LINE__, "link", "include_docs=true",
		      "a:\"g\"={\"_id\":\"g\"} b:\"gone\"={\"_id\":\"nothere\"}");
	doc = member(json_object_array_get_idx(member(j, "rows"), 0), "doc");
	ck_assert_str_eq(st_str(doc, "k"), "B");
	doc = json_object_array_get_idx(member(j, "rows"), 1);
	ck_assert(json_object_object_get_ex(doc, "doc", &doc));
	ck_assert_ptr_null(doc);
	json_object_put(j);

	ck_assert_int_eq(st_json(&T, "POST", "/db/_bulk_docs", "{\"docs\":[{"
		"\"_id\":\"f\",\"_rev\":\"1-ffffffffffffffffffffffffffffffff\","
		"\"k\":\"a\",\"n\":6}],\"new_edits\":false}", NULL), 201);
	j = expect_at(__LINE__, "by_k",
		      "key=\"a\"&include_docs=true&conflicts=true", "f:\"a\"=6");
	doc = member(json_object_array_get_idx(member(j, "rows"), 0), "doc");
	ck_assert_str_eq(st_str(doc, "_id"), "f");
	ck_assert_int_eq(json_object_array_length(member(doc, "_conflicts")),
			 1);
	json_object_put(j);
	expect_map("count", "reduce=false&include_docs=true&limit=0", "",
		   12, 0);

	ck_assert_int_eq(st_json(&T, "PUT", "/db/w", "{\"k\":\"w\",\"n\":0,"
		"\"_attachments\":{\"f\":{\"content_type\":\"text/plain\","
		"\"data\":\"aGk=\"}}}", NULL), 201);
	j = expect_at(__LINE__, "by_k", "key=\"w\"&include_docs=true",
		      "w:\"w\"=0");
	doc = member(json_object_array_get_idx(member(j, "rows"), 0), "doc");
	ck_assert(json_object_get_boolean(member(member(member(doc,
			"_attachments"), "f"), "stub")));
	json_object_put(j);
	j = expect_at(__LINE__, "by_k", "key=\"w\"&include_docs=true"
		      "&attachments=true", "w:\"w\"=0");
	doc = member(json_object_array_get_idx(member(j, "rows"), 0), "doc");
	ck_assert_str_eq(st_str(member(member(doc, "_attachments"), "f"),
				"data"), "aGk=");
	json_object_put(j);
}
END_TEST

/* ---- freshness ---- */

#define SLOW_DDOC "{\"views\":{\"s\":{\"map\":\"function(doc){ if " \
	"(doc.slow) { var t = Date.now(); while (Date.now() - t < 2000) {} } " \
	"emit(doc._id, null); }\"}}}"

/* update=false and stale=ok read what is indexed without waiting (a
 * document whose map takes two seconds is not there yet); update=true
 * waits for it. */
START_TEST(test_update_false)
{
	const char *path = "/db/_design/slow/_view/s";
	char p[256];
	struct json_object *j;
	int64_t seq;

	ck_assert_int_eq(st_json(&T, "PUT", "/db/x", "{}", NULL), 201);
	ck_assert_int_eq(st_json(&T, "PUT", "/db/_design/slow", SLOW_DDOC,
				 NULL), 201);
	ck_assert_int_eq(st_json(&T, "GET", path, NULL, &j), 200);
	ck_assert_int_eq(json_object_get_int(member(j, "total_rows")), 1);
	json_object_put(j);
	ck_assert_int_eq(st_json(&T, "PUT", "/db/z", "{\"slow\":true}", NULL),
			 201);
	seq = db_seq();
	snprintf(p, sizeof(p), "%s?update=false&update_seq=true", path);
	ck_assert_int_eq(st_json(&T, "GET", p, NULL, &j), 200);
	ck_assert_int_eq(json_object_get_int(member(j, "total_rows")), 1);
	ck_assert_int_lt(json_object_get_int64(member(j, "update_seq")), seq);
	json_object_put(j);
	snprintf(p, sizeof(p), "%s?stale=ok", path);
	ck_assert_int_eq(st_json(&T, "GET", p, NULL, &j), 200);
	ck_assert_int_eq(json_object_get_int(member(j, "total_rows")), 1);
	json_object_put(j);
	snprintf(p, sizeof(p), "%s?update=true&update_seq=true", path);
	ck_assert_int_eq(st_json(&T, "GET", p, NULL, &j), 200);
	ck_assert_int_eq(json_object_get_int(member(j, "total_rows")), 2);
	ck_assert_int_eq(json_object_get_int64(member(j, "update_seq")), seq);
	json_object_put(j);
	snprintf(p, sizeof(p), "%s?stale=update_after", path);
	ck_assert_int_eq(st_json(&T, "GET", p, NULL, &j), 200);
	ck_assert_int_eq(json_object_get_int(member(j, "total_rows")), 2);
	json_object_put(j);
}
END_TEST

/* update_seq=true adds the view's sequence, before "rows". */
START_TEST(test_update_seq)
{
	char *raw, want[64];
	int n;

	load();
	json_object_put(expect_at(__LINE__, "by_k", "limit=0", ""));
	n = snprintf(want, sizeof(want), "{\"update_seq\":%lld,\"rows\":[",
		     (long long)db_seq());
	raw = raw_get("/db/_design/t/_view/count?update_seq=true");
	ck_assert_msg(!strncmp(raw, want, (size_t)n), "%s", raw);
	free(raw);
	n = snprintf(want, sizeof(want), "{\"total_rows\":12,\"offset\":0,"
		     "\"update_seq\":%lld,\"rows\":[", (long long)db_seq());
	raw = raw_get("/db/_design/t/_view/by_k?update_seq=true&limit=0");
	ck_assert_msg(!strncmp(raw, want, (size_t)n), "%s", raw);
	free(raw);
}
END_TEST

/* ---- POST ---- */

/* POST {"keys":[...]} as keys=, with other parameters from the URL or
 * the body; bad bodies are refused as CouchDB does. */
START_TEST(test_post_keys)
{
	struct json_object *j;

	load();
	ck_assert_int_eq(vreq("POST", "by_k", NULL, "{\"keys\":[\"B\",1]}",
			      &j), 200);
	ck_assert_int_eq(json_object_array_length(member(j, "rows")), 3);
	ck_assert_str_eq(st_str(json_object_array_get_idx(member(j, "rows"),
							  0), "id"), "g");
	json_object_put(j);
	ck_assert_int_eq(vreq("POST", "by_k", "include_docs=true&limit=2",
			      "{\"keys\":[1]}", &j), 200);
	ck_assert_int_eq(json_object_array_length(member(j, "rows")), 2);
	ck_assert_str_eq(st_str(member(json_object_array_get_idx(member(j,
			"rows"), 1), "doc"), "_id"), "l");
	json_object_put(j);
	ck_assert_int_eq(vreq("POST", "by_k", NULL,
			      "{\"keys\":[1],\"limit\":1,\"descending\":true}",
			      &j), 200);
	ck_assert_int_eq(json_object_array_length(member(j, "rows")), 1);
	ck_assert_str_eq(st_str(json_object_array_get_idx(member(j, "rows"),
							  0), "id"), "l");
	json_object_put(j);
	ck_assert_int_eq(vreq("POST", "count", "group=true",
			      "{\"keys\":[\"a\",1]}", &j), 200);
	ck_assert_int_eq(json_object_get_int(member(json_object_array_get_idx(
		member(j, "rows"), 1), "value")), 2);
	json_object_put(j);
	expect_err("POST", "by_k", NULL, "[1]", 400, "bad_request",
		   "Request body must be a JSON object");
	expect_err("POST", "by_k", NULL, "{\"keys\":", 400, "bad_request",
		   "invalid UTF-8 JSON");
	expect_err("POST", "by_k", NULL, "{\"keys\":5}", 400, "bad_request",
		   "`keys` member must be an array.");
	expect_err("POST", "by_k", NULL, "{\"queries\":[]}", 400,
		   "bad_request", NULL);
}
END_TEST

/* ---- documents that change ---- */

/* An updated document moves to its new key; a deleted one leaves the
 * view and its reductions. */
START_TEST(test_doc_moves)
{
	char rev[96], path[256];

	load();
	expect_map("by_k", "key=1", "d:1=4 l:1=12", 12, 3);
	doc_rev("d", rev);
	snprintf(path, sizeof(path), "{\"_rev\":\"%s\",\"k\":\"zz\",\"n\":4}",
		 rev);
	ck_assert_int_eq(st_json(&T, "PUT", "/db/d", path, NULL), 201);
	expect_map("by_k", "key=1", "l:1=12", 12, 3);
	expect_map("by_k", "key=\"zz\"", "d:\"zz\"=4", 12, 7);
	doc_rev("l", rev);
	snprintf(path, sizeof(path), "/db/l?rev=%s", rev);
	ck_assert_int_eq(st_json(&T, "DELETE", path, NULL, NULL), 200);
	expect_map("by_k", "key=1", "", 11, 3);
	expect_red("count", NULL, "null=11");
	expect_red("sum", NULL, "null=66");
}
END_TEST

/* ---- errors ---- */

/* CouchDB's status, error and reason for each kind of bad request. */
START_TEST(test_errors)
{
	load();
	ck_assert_int_eq(st_json(&T, "GET", "/db/_design/nope/_view/v", NULL,
				 NULL), 404);
	expect_err("GET", "nope", NULL, NULL, 404, "not_found",
		   "missing_named_view");
	expect_err("GET", "by_k", "key=abc", NULL, 400, "bad_request",
		   "invalid UTF-8 JSON");
	expect_err("GET", "by_k", "startkey=[1", NULL, 400, "bad_request",
		   "invalid UTF-8 JSON");
	expect_err("GET", "by_k", "limit=abc", NULL, 400, QPE,
		   "Invalid value for integer: \"abc\"");
	expect_err("GET", "by_k", "skip=-1", NULL, 400, QPE,
		   "Invalid value for positive integer: \"-1\"");
	expect_err("GET", "by_k", "descending=maybe", NULL, 400, QPE,
		   "Invalid boolean parameter: \"maybe\"");
	expect_err("GET", "by_k", "reduce=true", NULL, 400, QPE,
		   "Reduce is invalid for map-only views.");
	expect_err("GET", "by_k", "group=true", NULL, 400, QPE,
		   "Invalid use of grouping on a map view.");
	expect_err("GET", "count", "reduce=false&group_level=1", NULL, 400,
		   QPE, "Invalid use of grouping on a map view.");
	expect_err("GET", "count", "include_docs=true", NULL, 400, QPE,
		   "`include_docs` is invalid for reduce");
	expect_err("GET", "count", "conflicts=true", NULL, 400, QPE,
		   "`conflicts` is invalid for reduce views.");
	expect_err("GET", "count", "keys=[1]", NULL, 400, QPE,
		   "Multi-key fetchs for reduce views must use `group=true`");
	expect_err("GET", "by_k", "keys=[1]&key=1", NULL, 400, QPE,
		   "`keys` is incompatible with `key`, `start_key` and "
		   "`end_key`");
	expect_err("GET", "count", "group=false&group_level=1", NULL, 400,
		   QPE, "Can't specify group=false and group_level>0 at the "
		   "same time");
	expect_err("GET", "by_k", "update=sometimes", NULL, 400, QPE,
		   "Invalid value for `update`.");
	expect_err("GET", "by_k", "stale=never", NULL, 400, QPE,
		   "Invalid value for `stale`.");
	expect_err("GET", "by_k", "keys=5", NULL, 400, QPE,
		   "`keys` must be an array of strings.");
	expect_err("PUT", "by_k", NULL, "{}", 405, "method_not_allowed",
		   "Only GET,POST,HEAD allowed");
	ck_assert_int_eq(st_json(&T, "GET", "/db/_design/t/_show/x", NULL,
				 NULL), 501);
}
END_TEST

/* A view whose map function does not compile answers 500
 * compilation_error, and does not hurt the views of other designs. */
START_TEST(test_broken_view)
{
	struct json_object *j;

	load();
	ck_assert_int_eq(st_json(&T, "PUT", "/db/_design/bad", "{\"views\":{"
		"\"v\":{\"map\":\"function(doc) { this is not js\"}}}", NULL),
		201);
	ck_assert_int_eq(st_json(&T, "GET", "/db/_design/bad/_view/v", NULL,
				 &j), 500);
	ck_assert_str_eq(st_str(j, "error"), "compilation_error");
	json_object_put(j);
	expect_map("by_k", "key=1", "d:1=4 l:1=12", 12, 3);
}
END_TEST

/* ---- _info ---- */

static struct json_object *info(void)
{
	struct json_object *j, *vi;

	ck_assert_int_eq(st_json(&T, "GET", "/db/_design/t/_info", NULL, &j),
			 200);
	ck_assert_str_eq(st_str(j, "name"), "t");
	vi = json_object_get(member(j, "view_index"));
	json_object_put(j);
	ck_assert_ptr_nonnull(vi);
	return vi;
}

/* _info reports the design's index: a signature that follows its map
 * functions, its sequence once queried, no updater running then. */
START_TEST(test_info)
{
	struct json_object *a, *b;
	char sig[64];

	load();
	json_object_put(expect_at(__LINE__, "by_k", "limit=0", ""));
	json_object_put(expect_at(__LINE__, "arr", "reduce=false&limit=0", ""));
	json_object_put(expect_at(__LINE__, "link", "limit=0", ""));
	a = info();
	ck_assert_int_eq(strlen(st_str(a, "signature")), 32);
	ck_assert_str_eq(st_str(a, "language"), "javascript");
	ck_assert_int_eq(json_object_get_int64(member(a, "update_seq")),
			 db_seq());
	ck_assert_int_eq(json_object_get_int(member(a, "purge_seq")), 0);
	ck_assert(!json_object_get_boolean(member(a, "updater_running")));
	snprintf(sig, sizeof(sig), "%s", st_str(a, "signature"));
	b = info();
	ck_assert_str_eq(st_str(b, "signature"), sig);
	json_object_put(b);
	json_object_put(a);
	ck_assert_int_eq(st_json(&T, "GET", "/db/_design/nope/_info", NULL,
				 NULL), 404);
	ck_assert_int_eq(st_json(&T, "POST", "/db/_design/t/_info", "{}",
				 NULL), 405);
}
END_TEST

/* Changing one map function changes the design's signature. */
START_TEST(test_info_signature)
{
	char rev[96], body[2048], sig[64];
	struct json_object *a;

	load();
	a = info();
	snprintf(sig, sizeof(sig), "%s", st_str(a, "signature"));
	json_object_put(a);
	doc_rev("_design/t", rev);
	snprintf(body, sizeof(body), "{\"_rev\":\"%s\",\"views\":{\"by_k\":{"
		 "\"map\":\"function(doc){ emit(doc.n, null); }\"}}}", rev);
	ck_assert_int_eq(st_json(&T, "PUT", "/db/_design/t", body, NULL), 201);
	a = info();
	ck_assert_str_ne(st_str(a, "signature"), sig);
	json_object_put(a);
	expect_map("by_k", "limit=2", "a:1=null b:2=null", 12, 0);
}
END_TEST

/* ---- a server without views ---- */

/* A catalog that does not index views answers 501 with a reason. */
START_TEST(test_no_views)
{
	struct synctest u = { 0 };
	struct srv_opts o = { 0 };
	char err[SRV_ERRLEN] = "";
	struct json_object *j;
	long st;

	tu_new_datadir(g_base, u.datadir, sizeof(u.datadir));
	OK(benv_open(u.datadir, NULL, &u.env));
	OK(catalog_env_new(u.env, NULL, false, &u.cat));
	tu_path(u.sock, sizeof(u.sock), u.datadir, "api.sock");
	o.unix_path = u.sock;
	ck_assert_msg(srv_start(u.cat, &o, &u.srv, err) == 0, "%s", err);
	ck_assert_int_eq(st_json(&u, "PUT", "/db", NULL, NULL), 201);
	ck_assert_int_eq(st_json(&u, "PUT", "/db/_design/t", DDOC, NULL), 201);
	st = st_json(&u, "GET", "/db/_design/t/_view/by_k", NULL, &j);
	ck_assert_int_eq(st, 501);
	ck_assert_str_eq(st_str(j, "error"), "not_implemented");
	ck_assert_str_ne(st_str(j, "reason"), "");
	json_object_put(j);
	st_stop(&u);
}
END_TEST

static Suite *api_view_suite(void)
{
	Suite *s = suite_create("api_view");
	TCase *tc = tcase_create("api_view");

	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_add_checked_fixture(tc, srv_setup, srv_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_map_order);
	tcase_add_test(tc, test_key_keys);
	tcase_add_test(tc, test_ranges);
	tcase_add_test(tc, test_limit_skip_docid);
	tcase_add_test(tc, test_reduce);
	tcase_add_test(tc, test_include_docs);
	tcase_add_test(tc, test_update_false);
	tcase_add_test(tc, test_update_seq);
	tcase_add_test(tc, test_post_keys);
	tcase_add_test(tc, test_doc_moves);
	tcase_add_test(tc, test_errors);
	tcase_add_test(tc, test_broken_view);
	tcase_add_test(tc, test_info);
	tcase_add_test(tc, test_info_signature);
	tcase_add_test(tc, test_no_views);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return st_main(api_view_suite());
}
