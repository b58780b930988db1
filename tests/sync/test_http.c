#include "config.h"

/*
 * The HTTP server (sync/http.c) and the server and database endpoints
 * (sync/api.c) against an in-process server: CouchDB's responses and
 * errors for /, _all_dbs, _uuids, _session, /{db}, _all_docs,
 * _design_docs, _changes in every feed mode, _revs_diff, _bulk_docs,
 * _local, _ensure_full_commit, _revs_limit, _compact and _purge;
 * percent-encoded names; gzip replies and request bodies; basic
 * authentication over TCP, the loopback rule, TLS; and malformed
 * requests that must not hurt the server.
 */

#include <check.h>
#include <crypt.h>
#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "engine/error.h"
#include "tests/engine/testenv.h"
#include "tests/sync/synctest.h"

TU_BASE_FIXTURE("test_http")

/* ---- helpers ---- */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A request with everything a test may want to set or see. */
struct rq {
	const char *unix_path;    /* NULL: TCP (url) */
	const char *url;          /* full URL, or the path on the socket */
	const char *method;
	const char *body;         /* NULL: none */
	const char *userpwd;      /* basic auth */
	const char *cainfo;       /* TLS trust */
	struct curl_slist *resolve;
	long timeout_ms;          /* 0: 30 s */
	/* out */
	long status;
	struct st_buf out, hdrs;
	CURLcode cc;
};

static void rq_run(struct rq *q)
{
	char url[4096];
	struct curl_slist *h = NULL;
	CURL *c = curl_easy_init();

	ck_assert_ptr_nonnull(c);
	if (q->unix_path) {
		snprintf(url, sizeof(url), "http://localhost%s", q->url);
		curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, q->unix_path);
	} else {
		snprintf(url, sizeof(url), "%s", q->url);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
	if (!strcmp(q->method, "HEAD"))
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	if (q->body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)strlen(q->body));
		h = curl_slist_append(h, "Content-Type: application/json");
	}
	h = curl_slist_append(h, "Expect:");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	if (q->userpwd)
		curl_easy_setopt(c, CURLOPT_USERPWD, q->userpwd);
	if (q->cainfo)
		curl_easy_setopt(c, CURLOPT_CAINFO, q->cainfo);
	if (q->resolve)
		curl_easy_setopt(c, CURLOPT_RESOLVE, q->resolve);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, st_collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &q->out);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, st_collect);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &q->hdrs);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
			 q->timeout_ms ? q->timeout_ms : 30000L);
	q->cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &q->status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	if (!q->out.p)
		q->out.p = strdup("");
	if (!q->hdrs.p)
		q->hdrs.p = strdup("");
}

static void rq_release(struct rq *q)
{
	free(q->out.p);
	free(q->hdrs.p);
}

/* method path [body] on t's socket: the status, *reply the parsed JSON
 * (NULL if not JSON). The reply must be JSON ending in "\n". */
static long J(struct synctest *t, const char *method, const char *path,
	      const char *body, struct json_object **reply)
{
	struct rq q = { .unix_path = t->sock, .url = path, .method = method,
			.body = body };

	rq_run(&q);
	ck_assert_int_eq(q.cc, CURLE_OK);
	if (strcmp(method, "HEAD")) {
		ck_assert_msg(q.out.len && q.out.p[q.out.len - 1] == '\n',
			      "%s %s: reply does not end in a newline: %s",
			      method, path, q.out.p);
		ck_assert_msg(strstr(q.hdrs.p, "application/json"),
			      "%s %s: not JSON: %s", method, path, q.hdrs.p);
	}
	if (reply)
		*reply = json_tokener_parse(q.out.p);
	rq_release(&q);
	return q.status;
}

/* Expect status and a CouchDB error body {"error":error[,"reason":reason]}. */
static void expect_error(struct synctest *t, const char *method,
			 const char *path, const char *body, long status,
			 const char *error, const char *reason)
{
	struct json_object *j;
	long got = J(t, method, path, body, &j);

	ck_assert_msg(got == status, "%s %s: status %ld, want %ld", method,
		      path, got, status);
	ck_assert_str_eq(st_str(j, "error"), error);
	if (reason)
		ck_assert_str_eq(st_str(j, "reason"), reason);
	json_object_put(j);
}

static struct json_object *jat(struct json_object *j, const char *key)
{
	struct json_object *v = NULL;

	if (j && json_object_is_type(j, json_type_array))
		return json_object_array_get_idx(j, (size_t)atoi(key));
	ck_assert_msg(j && json_object_object_get_ex(j, key, &v),
		      "no member %s in %s", key,
		      j ? json_object_to_json_string(j) : "(null)");
	return v;
}

static bool jhas(struct json_object *j, const char *key)
{
	return json_object_object_get_ex(j, key, NULL);
}

static int64_t jint(struct json_object *j, const char *key)
{
	struct json_object *v = jat(j, key);

	ck_assert_msg(json_object_is_type(v, json_type_int), "%s not an int",
		      key);
	return json_object_get_int64(v);
}

static size_t jlen(struct json_object *a)
{
	ck_assert(json_object_is_type(a, json_type_array));
	return json_object_array_length(a);
}

/* The ids of rows (all_docs or changes) joined by ',' into buf. */
static const char *row_ids(struct json_object *rows, char *buf, size_t size)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < jlen(rows); i++) {
		struct json_object *row = json_object_array_get_idx(rows, i);
		struct json_object *id;
		int n;

		if (!json_object_object_get_ex(row, "id", &id))
			json_object_object_get_ex(row, "key", &id);
		n = snprintf(buf + off, size - off, "%s%s", i ? "," : "",
			     json_object_get_string(id));
		ck_assert(n > 0 && (size_t)n < size - off);
		off += (size_t)n;
	}
	return buf;
}

static void mkdb(struct synctest *t, const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "/%s", name);
	ck_assert_int_eq(J(t, "PUT", path, NULL, NULL), 201);
}

/* POST docs to /db/_bulk_docs; returns the reply (json_object_put). */
static struct json_object *bulk(struct synctest *t, const char *db,
				const char *body)
{
	struct json_object *j;
	char path[256];

	snprintf(path, sizeof(path), "/%s/_bulk_docs", db);
	ck_assert_int_eq(J(t, "POST", path, body, &j), 201);
	return j;
}

/* The winning rev of id via _all_docs?keys (into buf). */
static const char *winner(struct synctest *t, const char *id, char *buf,
			  size_t size)
{
	struct json_object *j, *row;
	char path[512];

	snprintf(path, sizeof(path), "/db/_all_docs?key=%%22%s%%22", id);
	ck_assert_int_eq(J(t, "GET", path, NULL, &j), 200);
	ck_assert_uint_eq(jlen(jat(j, "rows")), 1);
	row = jat(jat(j, "rows"), "0");
	snprintf(buf, size, "%s", st_str(jat(row, "value"), "rev"));
	json_object_put(j);
	return buf;
}

static struct synctest g_t;

static void t_start(void)
{
	st_start(&g_t, g_base, NULL);
}

/* ---- server endpoints ---- */

/* GET / is CouchDB's welcome; HEAD works; other methods are 405. */
START_TEST(test_root)
{
	struct json_object *j;
	struct rq q = { .unix_path = NULL, .url = "/", .method = "GET" };

	t_start();
	ck_assert_int_eq(J(&g_t, "GET", "/", NULL, &j), 200);
	ck_assert_str_eq(st_str(j, "couchdb"), "Welcome");
	ck_assert_str_eq(st_str(j, "version"), "3.3.3");
	ck_assert_str_eq(st_str(jat(j, "vendor"), "name"), "barrelfs");
	ck_assert_str_eq(st_str(jat(j, "vendor"), "version"), PACKAGE_VERSION);
	ck_assert(json_object_is_type(jat(j, "features"), json_type_array));
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "HEAD", "/", NULL, NULL), 200);
	expect_error(&g_t, "POST", "/", "{}", 405, "method_not_allowed",
		     "Only GET,HEAD allowed");
	q.unix_path = g_t.sock;
	rq_run(&q);
	ck_assert(strstr(q.hdrs.p, "Server: barrelfs"));
	ck_assert(strstr(q.hdrs.p, "Cache-Control: must-revalidate"));
	rq_release(&q);
	st_stop(&g_t);
}
END_TEST

/* _up, _uuids (count, distinct 32-hex, bad count) and _session. */
START_TEST(test_up_uuids_session)
{
	struct json_object *j, *a;

	t_start();
	ck_assert_int_eq(J(&g_t, "GET", "/_up", NULL, &j), 200);
	ck_assert_str_eq(st_str(j, "status"), "ok");
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/_uuids?count=3", NULL, &j), 200);
	a = jat(j, "uuids");
	ck_assert_uint_eq(jlen(a), 3);
	for (size_t i = 0; i < 3; i++) {
		const char *u = json_object_get_string(
			json_object_array_get_idx(a, i));

		ck_assert_uint_eq(strlen(u), 32);
		ck_assert_uint_eq(strspn(u, "0123456789abcdef"), 32);
		for (size_t k = 0; k < i; k++)
			ck_assert_str_ne(u, json_object_get_string(
				json_object_array_get_idx(a, k)));
	}
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/_uuids", NULL, &j), 200);
	ck_assert_uint_eq(jlen(jat(j, "uuids")), 1);
	json_object_put(j);
	expect_error(&g_t, "GET", "/_uuids?count=x", NULL, 400,
		     "query_parse_error", NULL);
	ck_assert_int_eq(J(&g_t, "GET", "/_session", NULL, &j), 200);
	ck_assert(json_object_get_boolean(jat(j, "ok")));
	ck_assert(json_object_is_type(jat(jat(j, "userCtx"), "name"),
				      json_type_null));
	ck_assert_uint_eq(jlen(jat(jat(j, "userCtx"), "roles")), 0);
	json_object_put(j);
	st_stop(&g_t);
}
END_TEST

/* PUT, GET, HEAD, DELETE /{db} with CouchDB's errors; names decoded. */
START_TEST(test_db_lifecycle)
{
	struct json_object *j;

	t_start();
	ck_assert_int_eq(J(&g_t, "PUT", "/db", NULL, &j), 201);
	ck_assert(json_object_get_boolean(jat(j, "ok")));
	json_object_put(j);
	expect_error(&g_t, "PUT", "/db", NULL, 412, "file_exists",
		     "The database could not be created, the file already exists.");
	expect_error(&g_t, "PUT", "/Bad", NULL, 400, "illegal_database_name",
		     NULL);
	expect_error(&g_t, "PUT", "/1db", NULL, 400, "illegal_database_name",
		     NULL);
	ck_assert_int_eq(J(&g_t, "GET", "/db", NULL, &j), 200);
	ck_assert_str_eq(st_str(j, "db_name"), "db");
	ck_assert_int_eq(jint(j, "doc_count"), 0);
	ck_assert_int_eq(jint(j, "doc_del_count"), 0);
	ck_assert(jhas(j, "update_seq") && jhas(j, "purge_seq"));
	ck_assert(jhas(jat(j, "sizes"), "file"));
	ck_assert_str_eq(st_str(j, "instance_start_time"), "0");
	ck_assert(!json_object_get_boolean(jat(j, "compact_running")));
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "HEAD", "/db", NULL, NULL), 200);
	ck_assert_int_eq(J(&g_t, "HEAD", "/nope", NULL, NULL), 404);
	expect_error(&g_t, "GET", "/nope", NULL, 404, "not_found",
		     "Database does not exist.");
	expect_error(&g_t, "GET", "/nope/_all_docs", NULL, 404, "not_found",
		     "Database does not exist.");
	expect_error(&g_t, "PATCH", "/db", NULL, 405, "method_not_allowed",
		     NULL);
	/* "a/b" percent-encoded */
	ck_assert_int_eq(J(&g_t, "PUT", "/a%2Fb", NULL, NULL), 201);
	ck_assert_int_eq(J(&g_t, "GET", "/a%2fb", NULL, &j), 200);
	ck_assert_str_eq(st_str(j, "db_name"), "a/b");
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/_all_dbs", NULL, &j), 200);
	ck_assert_str_eq(json_object_to_json_string_ext(j,
		JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
		"[\"a/b\",\"db\"]");
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "DELETE", "/db", NULL, &j), 200);
	ck_assert(json_object_get_boolean(jat(j, "ok")));
	json_object_put(j);
	expect_error(&g_t, "DELETE", "/db", NULL, 404, "not_found",
		     "Database does not exist.");
	expect_error(&g_t, "GET", "/db", NULL, 404, "not_found", NULL);
	st_stop(&g_t);
}
END_TEST

/* _all_dbs honours startkey, endkey, limit, skip and descending. */
START_TEST(test_all_dbs)
{
	struct json_object *j;
	const char *s;

	t_start();
	mkdb(&g_t, "a");
	mkdb(&g_t, "b");
	mkdb(&g_t, "c");
	mkdb(&g_t, "d");
#define DBS(path, want)                                                   \
	do {                                                              \
		ck_assert_int_eq(J(&g_t, "GET", path, NULL, &j), 200);    \
		s = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN); \
		ck_assert_str_eq(s, want);                                \
		json_object_put(j);                                       \
	} while (0)
	DBS("/_all_dbs", "[\"a\",\"b\",\"c\",\"d\"]");
	DBS("/_all_dbs?startkey=%22b%22", "[\"b\",\"c\",\"d\"]");
	DBS("/_all_dbs?startkey=%22b%22&endkey=%22c%22", "[\"b\",\"c\"]");
	DBS("/_all_dbs?limit=2&skip=1", "[\"b\",\"c\"]");
	DBS("/_all_dbs?descending=true", "[\"d\",\"c\",\"b\",\"a\"]");
	DBS("/_all_dbs?descending=true&startkey=%22c%22&limit=2",
	    "[\"c\",\"b\"]");
#undef DBS
	expect_error(&g_t, "GET", "/_all_dbs?limit=-1", NULL, 400,
		     "query_parse_error", NULL);
	st_stop(&g_t);
}
END_TEST

/* POST /{db} makes a document with a generated id and a Location. */
START_TEST(test_post_doc)
{
	struct json_object *j;
	struct rq q = { .url = "/db", .method = "POST", .body = "{\"x\":1}" };
	char rev[REV_STR_SIZE], loc[128];

	t_start();
	mkdb(&g_t, "db");
	q.unix_path = g_t.sock;
	rq_run(&q);
	ck_assert_int_eq(q.status, 201);
	j = json_tokener_parse(q.out.p);
	ck_assert(json_object_get_boolean(jat(j, "ok")));
	ck_assert_uint_eq(strlen(st_str(j, "id")), 32);
	ck_assert(!strncmp(st_str(j, "rev"), "1-", 2));
	snprintf(loc, sizeof(loc), "Location: /db/%s\r\n", st_str(j, "id"));
	ck_assert_msg(strstr(q.hdrs.p, loc), "headers: %s", q.hdrs.p);
	ck_assert_str_eq(winner(&g_t, st_str(j, "id"), rev, sizeof(rev)),
			 st_str(j, "rev"));
	json_object_put(j);
	rq_release(&q);
	ck_assert_int_eq(J(&g_t, "POST", "/db", "{\"_id\":\"mine\"}", &j), 201);
	ck_assert_str_eq(st_str(j, "id"), "mine");
	json_object_put(j);
	/* the Location of an id that needs escaping */
	q = (struct rq){ .url = "/db", .method = "POST",
			 .body = "{\"_id\":\"_design/a b+c\"}",
			 .unix_path = g_t.sock };
	rq_run(&q);
	ck_assert_int_eq(q.status, 201);
	ck_assert_msg(strstr(q.hdrs.p, "Location: /db/_design/a%20b%2Bc\r\n"),
		      "headers: %s", q.hdrs.p);
	rq_release(&q);
	expect_error(&g_t, "POST", "/db", "{\"_id\":\"mine\"}", 409, "conflict",
		     "Document update conflict.");
	expect_error(&g_t, "POST", "/db", "{\"x\":", 400, "bad_request",
		     "invalid UTF-8 JSON");
	expect_error(&g_t, "POST", "/db", "{\"x\":\"\xff\xfe\"}", 400,
		     "bad_request", "invalid UTF-8 JSON");
	expect_error(&g_t, "POST", "/db", "[1]", 400, "bad_request", NULL);
	expect_error(&g_t, "POST", "/nope", "{}", 404, "not_found", NULL);
	st_stop(&g_t);
}
END_TEST

/* Documents a, b, c (deleted), d, _design/x in "db". */
static void fill_abcd(struct synctest *t)
{
	struct json_object *j;
	char rev[REV_STR_SIZE], body[256];

	mkdb(t, "db");
	j = bulk(t, "db", "{\"docs\":[{\"_id\":\"a\",\"v\":1},{\"_id\":\"b\","
		 "\"v\":2},{\"_id\":\"c\",\"v\":3},{\"_id\":\"d\",\"v\":4},"
		 "{\"_id\":\"_design/x\",\"views\":{}}]}");
	ck_assert_uint_eq(jlen(j), 5);
	json_object_put(j);
	snprintf(body, sizeof(body), "{\"docs\":[{\"_id\":\"c\",\"_rev\":\"%s\","
		 "\"_deleted\":true}]}", winner(t, "c", rev, sizeof(rev)));
	json_object_put(bulk(t, "db", body));
}

/* _all_docs ranges, inclusive_end, descending, limit/skip, key, keys
 * (missing and deleted rows), include_docs, counts, _design_docs. */
START_TEST(test_all_docs)
{
	struct json_object *j, *rows;
	char ids[512];

	t_start();
	fill_abcd(&g_t);
#define ROWS(method, path, body, want)                                    \
	do {                                                              \
		ck_assert_int_eq(J(&g_t, method, path, body, &j), 200);   \
		ck_assert_str_eq(row_ids(jat(j, "rows"), ids, sizeof(ids)), \
				 want);                                   \
		json_object_put(j);                                       \
	} while (0)
	ROWS("GET", "/db/_all_docs", NULL, "_design/x,a,b,d");
	ROWS("GET", "/db/_all_docs?startkey=%22b%22", NULL, "b,d");
	ROWS("GET", "/db/_all_docs?start_key=%22b%22", NULL, "b,d");
	ROWS("GET", "/db/_all_docs?endkey=%22b%22", NULL, "_design/x,a,b");
	ROWS("GET", "/db/_all_docs?endkey=%22b%22&inclusive_end=false", NULL,
	     "_design/x,a");
	ROWS("GET", "/db/_all_docs?descending=true", NULL, "d,b,a,_design/x");
	ROWS("GET", "/db/_all_docs?descending=true&startkey=%22b%22&endkey=%22a%22",
	     NULL, "b,a");
	ROWS("GET", "/db/_all_docs?descending=true&startkey=%22b%22&endkey=%22a%22"
	     "&inclusive_end=false", NULL, "b");
	ROWS("GET", "/db/_all_docs?limit=2&skip=1", NULL, "a,b");
	ROWS("GET", "/db/_all_docs?key=%22b%22", NULL, "b");
	ROWS("GET", "/db/_all_docs?startkey=%22z%22&endkey=%22a%22", NULL, "");
	ROWS("GET", "/db/_all_docs?keys=%5B%22d%22%2C%22a%22%5D", NULL, "d,a");
	ROWS("GET", "/db/_design_docs", NULL, "_design/x");
#undef ROWS
	ck_assert_int_eq(J(&g_t, "GET", "/db/_all_docs?startkey=%22b%22", NULL,
			   &j), 200);
	ck_assert_int_eq(jint(j, "total_rows"), 4);
	ck_assert_int_eq(jint(j, "offset"), 2);
	rows = jat(j, "rows");
	ck_assert(!strncmp(st_str(jat(jat(rows, "0"), "value"), "rev"), "1-", 2));
	ck_assert_str_eq(st_str(jat(rows, "0"), "key"), "b");
	json_object_put(j);
	/* keys: order kept, deleted and missing rows */
	ck_assert_int_eq(J(&g_t, "POST", "/db/_all_docs?include_docs=true",
			   "{\"keys\":[\"c\",\"zz\",\"a\"]}", &j), 200);
	rows = jat(j, "rows");
	ck_assert_uint_eq(jlen(rows), 3);
	ck_assert_str_eq(st_str(jat(rows, "0"), "id"), "c");
	ck_assert(json_object_get_boolean(jat(jat(jat(rows, "0"), "value"),
					      "deleted")));
	ck_assert(!strncmp(st_str(jat(jat(rows, "0"), "value"), "rev"), "2-", 2));
	ck_assert(json_object_is_type(jat(jat(rows, "0"), "doc"),
				      json_type_null));
	ck_assert_str_eq(st_str(jat(rows, "1"), "key"), "zz");
	ck_assert_str_eq(st_str(jat(rows, "1"), "error"), "not_found");
	ck_assert(!jhas(jat(rows, "1"), "id"));
	ck_assert_str_eq(st_str(jat(jat(rows, "2"), "doc"), "_id"), "a");
	ck_assert_int_eq(jint(jat(jat(rows, "2"), "doc"), "v"), 1);
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/db", NULL, &j), 200);
	ck_assert_int_eq(jint(j, "doc_count"), 4);
	ck_assert_int_eq(jint(j, "doc_del_count"), 1);
	json_object_put(j);
	expect_error(&g_t, "GET", "/db/_all_docs?limit=x", NULL, 400,
		     "query_parse_error", NULL);
	expect_error(&g_t, "POST", "/db/_all_docs", "{\"keys\":3}", 400,
		     "bad_request", NULL);
	expect_error(&g_t, "PUT", "/db/_all_docs", "{}", 405,
		     "method_not_allowed", "Only GET,HEAD,POST allowed");
	st_stop(&g_t);
}
END_TEST

/* ---- _changes ---- */

/* Normal feed: since, limit, pending, descending, style=all_docs with a
 * conflict, include_docs, deleted rows, doc_ids in the query and in a
 * POST body, filter=_design, integer seqs. */
START_TEST(test_changes_normal)
{
	struct json_object *j, *res, *row;
	char ids[512];
	int64_t last, s_b;

	t_start();
	fill_abcd(&g_t);
	ck_assert_int_eq(J(&g_t, "GET", "/db/_changes", NULL, &j), 200);
	res = jat(j, "results");
	ck_assert_str_eq(row_ids(res, ids, sizeof(ids)), "a,b,d,_design/x,c");
	row = jat(res, "4");
	ck_assert(json_object_get_boolean(jat(row, "deleted")));
	ck_assert_uint_eq(jlen(jat(row, "changes")), 1);
	ck_assert(!strncmp(st_str(jat(jat(row, "changes"), "0"), "rev"), "2-",
			   2));
	last = jint(j, "last_seq");
	ck_assert_int_eq(last, jint(row, "seq"));
	ck_assert_int_eq(jint(j, "pending"), 0);
	s_b = jint(jat(res, "1"), "seq");
	json_object_put(j);
	{
		char path[128];

		snprintf(path, sizeof(path), "/db/_changes?since=%lld",
			 (long long)s_b);
		ck_assert_int_eq(J(&g_t, "GET", path, NULL, &j), 200);
		ck_assert_str_eq(row_ids(jat(j, "results"), ids, sizeof(ids)),
				 "d,_design/x,c");
		json_object_put(j);
	}
	ck_assert_int_eq(J(&g_t, "GET", "/db/_changes?limit=2", NULL, &j), 200);
	ck_assert_str_eq(row_ids(jat(j, "results"), ids, sizeof(ids)), "a,b");
	ck_assert_int_eq(jint(j, "last_seq"), s_b);
	ck_assert_int_eq(jint(j, "pending"), 3);
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/db/_changes?descending=true&limit=2",
			   NULL, &j), 200);
	ck_assert_str_eq(row_ids(jat(j, "results"), ids, sizeof(ids)),
			 "c,_design/x");
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/db/_changes?since=now", NULL, &j),
			 200);
	ck_assert_uint_eq(jlen(jat(j, "results")), 0);
	ck_assert_int_eq(jint(j, "last_seq"), last);
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/db/_changes?include_docs=true&limit=1",
			   NULL, &j), 200);
	row = jat(jat(j, "results"), "0");
	ck_assert_str_eq(st_str(jat(row, "doc"), "_id"), "a");
	ck_assert_int_eq(jint(jat(row, "doc"), "v"), 1);
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/db/_changes?filter=_doc_ids&doc_ids="
			   "%5B%22d%22%2C%22a%22%5D", NULL, &j), 200);
	ck_assert_str_eq(row_ids(jat(j, "results"), ids, sizeof(ids)), "a,d");
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "POST", "/db/_changes?filter=_doc_ids",
			   "{\"doc_ids\":[\"b\"]}", &j), 200);
	ck_assert_str_eq(row_ids(jat(j, "results"), ids, sizeof(ids)), "b");
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/db/_changes?filter=_design", NULL, &j),
			 200);
	ck_assert_str_eq(row_ids(jat(j, "results"), ids, sizeof(ids)),
			 "_design/x");
	json_object_put(j);
	/* a conflict: style=all_docs lists both leaves, winner first */
	json_object_put(bulk(&g_t, "db", "{\"new_edits\":false,\"docs\":["
		"{\"_id\":\"k\",\"_rev\":\"2-b\",\"_revisions\":{\"start\":2,"
		"\"ids\":[\"b\",\"a\"]},\"v\":1},"
		"{\"_id\":\"k\",\"_rev\":\"2-c\",\"_revisions\":{\"start\":2,"
		"\"ids\":[\"c\",\"a\"]},\"v\":2}]}"));
	ck_assert_int_eq(J(&g_t, "GET", "/db/_changes?style=all_docs&filter="
			   "_doc_ids&doc_ids=%5B%22k%22%5D", NULL, &j), 200);
	row = jat(jat(j, "results"), "0");
	ck_assert_uint_eq(jlen(jat(row, "changes")), 2);
	ck_assert_str_eq(st_str(jat(jat(row, "changes"), "0"), "rev"), "2-c");
	ck_assert_str_eq(st_str(jat(jat(row, "changes"), "1"), "rev"), "2-b");
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/db/_changes?filter=_doc_ids&doc_ids="
			   "%5B%22k%22%5D", NULL, &j), 200);
	ck_assert_uint_eq(jlen(jat(jat(jat(j, "results"), "0"), "changes")), 1);
	json_object_put(j);
	expect_error(&g_t, "GET", "/db/_changes?since=x", NULL, 400,
		     "query_parse_error", NULL);
	expect_error(&g_t, "GET", "/db/_changes?feed=x", NULL, 400,
		     "query_parse_error", NULL);
	expect_error(&g_t, "GET", "/db/_changes?filter=_doc_ids", NULL, 400,
		     "bad_request", NULL);
	expect_error(&g_t, "GET", "/db/_changes?filter=app/f", NULL, 400,
		     "bad_request", NULL);
	expect_error(&g_t, "DELETE", "/db/_changes", NULL, 405,
		     "method_not_allowed", NULL);
	st_stop(&g_t);
}
END_TEST

/* A writer thread: after delay_ms, POST body to path on the socket. */
struct writer {
	struct synctest *t;
	const char *path, *body;
	int delay_ms;
	long status;
	pthread_t th;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct rq q = { .unix_path = w->t->sock, .url = w->path,
			.method = "POST", .body = w->body };

	/* not synchronization: either order of writer and feed is valid */
	nanosleep(&(struct timespec){ .tv_nsec = w->delay_ms * 1000000L },
		  NULL);
	rq_run(&q);
	w->status = q.status;
	rq_release(&q);
	return NULL;
}

static int64_t db_seq(struct synctest *t)
{
	struct json_object *j;
	int64_t seq;

	ck_assert_int_eq(J(t, "GET", "/db/_changes?since=now", NULL, &j), 200);
	seq = jint(j, "last_seq");
	json_object_put(j);
	return seq;
}

/* longpoll waits for a commit after since and returns with it, well
 * before its timeout; without a commit it returns empty at its timeout. */
START_TEST(test_changes_longpoll)
{
	struct writer w = { .path = "/db", .body = "{\"_id\":\"late\"}",
			    .delay_ms = 300 };
	struct json_object *j;
	char path[256], ids[256];
	int64_t seq, t0, dt;

	t_start();
	mkdb(&g_t, "db");
	w.t = &g_t;
	seq = db_seq(&g_t);
	snprintf(path, sizeof(path),
		 "/db/_changes?feed=longpoll&since=%lld&timeout=20000",
		 (long long)seq);
	t0 = mono_ms();
	ck_assert_int_eq(pthread_create(&w.th, NULL, writer_main, &w), 0);
	ck_assert_int_eq(J(&g_t, "GET", path, NULL, &j), 200);
	dt = mono_ms() - t0;
	pthread_join(w.th, NULL);
	ck_assert_int_eq(w.status, 201);
	ck_assert_str_eq(row_ids(jat(j, "results"), ids, sizeof(ids)), "late");
	ck_assert_msg(dt < 10000, "longpoll took %lld ms", (long long)dt);
	json_object_put(j);
	/* nothing happens: empty at the timeout */
	seq = db_seq(&g_t);
	snprintf(path, sizeof(path),
		 "/db/_changes?feed=longpoll&since=%lld&timeout=400",
		 (long long)seq);
	t0 = mono_ms();
	ck_assert_int_eq(J(&g_t, "GET", path, NULL, &j), 200);
	dt = mono_ms() - t0;
	ck_assert_msg(dt >= 350 && dt < 5000, "took %lld ms", (long long)dt);
	ck_assert_uint_eq(jlen(jat(j, "results")), 0);
	ck_assert_int_eq(jint(j, "last_seq"), seq);
	json_object_put(j);
	st_stop(&g_t);
}
END_TEST

/* Split text into lines; returns the count (at most max). */
static size_t split_lines(char *text, char **lines, size_t max)
{
	size_t n = 0;

	for (char *p = text; *p && n < max;) {
		char *e = strchr(p, '\n');

		if (!e)
			e = p + strlen(p);
		lines[n++] = p;
		if (!*e)
			break;
		*e = '\0';
		p = e + 1;
	}
	return n;
}

/* continuous: existing rows, a change made after the request started,
 * and the final last_seq line at its timeout. */
START_TEST(test_changes_continuous)
{
	struct writer w = { .path = "/db", .body = "{\"_id\":\"late\"}",
			    .delay_ms = 300 };
	struct rq q = { .method = "GET" };
	struct json_object *j;
	char path[256], *lines[64];
	size_t n, nobj = 0;
	int64_t seq, t0, dt;
	bool saw_late = false, saw_last = false;

	t_start();
	mkdb(&g_t, "db");
	ck_assert_int_eq(J(&g_t, "POST", "/db", "{\"_id\":\"early\"}", NULL), 201);
	w.t = &g_t;
	seq = db_seq(&g_t);
	snprintf(path, sizeof(path),
		 "/db/_changes?feed=continuous&since=0&timeout=1500");
	q.unix_path = g_t.sock;
	q.url = path;
	t0 = mono_ms();
	ck_assert_int_eq(pthread_create(&w.th, NULL, writer_main, &w), 0);
	rq_run(&q);
	dt = mono_ms() - t0;
	pthread_join(w.th, NULL);
	ck_assert_int_eq(q.cc, CURLE_OK);
	ck_assert_int_eq(q.status, 200);
	ck_assert_msg(dt >= 1400 && dt < 10000, "took %lld ms", (long long)dt);
	n = split_lines(q.out.p, lines, 64);
	for (size_t i = 0; i < n; i++) {
		if (!*lines[i])
			continue;
		ck_assert_ptr_nonnull(j = json_tokener_parse(lines[i]));
		if (jhas(j, "id") && !strcmp(st_str(j, "id"), "late")) {
			saw_late = true;
			ck_assert_int_gt(jint(j, "seq"), seq);
		}
		if (jhas(j, "last_seq")) {
			saw_last = true;
			ck_assert_int_eq(jint(j, "pending"), 0);
			ck_assert_int_gt(jint(j, "last_seq"), seq);
			ck_assert_uint_eq(i, n - 1);
		}
		nobj++;
		json_object_put(j);
	}
	ck_assert_msg(saw_late && saw_last && nobj == 3, "feed: %s", q.out.p);
	rq_release(&q);
	st_stop(&g_t);
}
END_TEST

/* continuous with limit ends after limit rows; heartbeats are
 * newlines; eventsource frames rows as "data:" events. */
START_TEST(test_changes_heartbeat_eventsource)
{
	struct rq q = { .method = "GET" };

	t_start();
	fill_abcd(&g_t);
	q.unix_path = g_t.sock;
	q.url = "/db/_changes?feed=continuous&limit=2";
	rq_run(&q);
	ck_assert_int_eq(q.cc, CURLE_OK);
	ck_assert_msg(strstr(q.out.p, "\"id\":\"b\"") &&
		      !strstr(q.out.p, "\"id\":\"d\"") &&
		      strstr(q.out.p, "{\"last_seq\":"), "%s", q.out.p);
	ck_assert(strstr(q.out.p, "\"pending\":3}\n"));
	rq_release(&q);
	memset(&q, 0, sizeof(q));
	q.unix_path = g_t.sock;
	q.method = "GET";
	q.url = "/db/_changes?feed=continuous&since=now&heartbeat=100";
	q.timeout_ms = 700;
	rq_run(&q);
	ck_assert_int_eq(q.cc, CURLE_OPERATION_TIMEDOUT);
	ck_assert_int_ge(q.out.len, 3);
	ck_assert_uint_eq(strspn(q.out.p, "\n"), q.out.len);
	rq_release(&q);
	memset(&q, 0, sizeof(q));
	q.unix_path = g_t.sock;
	q.method = "GET";
	q.url = "/db/_changes?feed=eventsource&limit=1&timeout=100";
	rq_run(&q);
	ck_assert_int_eq(q.cc, CURLE_OK);
	ck_assert_msg(!strncmp(q.out.p, "data: {", 7) &&
		      strstr(q.out.p, "\nid: "), "%s", q.out.p);
	ck_assert(strstr(q.hdrs.p, "text/event-stream"));
	rq_release(&q);
	st_stop(&g_t);
}
END_TEST

struct feeder {
	struct synctest *t;
	struct rq q;
	pthread_t th;
};

static void *feeder_main(void *arg)
{
	struct feeder *f = arg;

	rq_run(&f->q);
	return NULL;
}

/* srv_stop ends an endless continuous feed within about a second. */
START_TEST(test_stop_ends_feed)
{
	struct feeder f = { 0 };
	int64_t t0, dt;

	t_start();
	mkdb(&g_t, "db");
	f.q.unix_path = g_t.sock;
	f.q.method = "GET";
	f.q.url = "/db/_changes?feed=continuous&heartbeat=200";
	ck_assert_int_eq(pthread_create(&f.th, NULL, feeder_main, &f), 0);
	/* wait (bounded) until the feed has sent a heartbeat */
	for (int i = 0; i < 500 && !__atomic_load_n(&f.q.out.len,
						     __ATOMIC_SEQ_CST); i++)
		poll(NULL, 0, 10);
	t0 = mono_ms();
	srv_stop(g_t.srv);
	g_t.srv = NULL;
	dt = mono_ms() - t0;
	pthread_join(f.th, NULL);
	ck_assert_msg(dt < 2500, "srv_stop took %lld ms", (long long)dt);
	ck_assert_int_ge(f.q.out.len, 1);
	rq_release(&f.q);
	st_stop(&g_t);
}
END_TEST

/* DELETE /{db} is not held up by an endless feed of it, which ends. */
START_TEST(test_drop_ends_feed)
{
	struct feeder f = { 0 };

	t_start();
	mkdb(&g_t, "db");
	f.q.unix_path = g_t.sock;
	f.q.method = "GET";
	f.q.url = "/db/_changes?feed=continuous&heartbeat=200";
	ck_assert_int_eq(pthread_create(&f.th, NULL, feeder_main, &f), 0);
	for (int i = 0; i < 500 && !__atomic_load_n(&f.q.out.len,
						     __ATOMIC_SEQ_CST); i++)
		poll(NULL, 0, 10);
	ck_assert_int_eq(J(&g_t, "DELETE", "/db", NULL, NULL), 200);
	pthread_join(f.th, NULL);
	ck_assert_int_eq(f.q.cc, CURLE_OK);
	ck_assert_int_eq(f.q.status, 200);
	rq_release(&f.q);
	st_stop(&g_t);
}
END_TEST

/* ---- replication endpoints ---- */

/* _revs_diff lists only ids with missing revisions, with
 * possible_ancestors; bad input is 400. */
START_TEST(test_revs_diff)
{
	struct json_object *j, *d;

	t_start();
	mkdb(&g_t, "db");
	json_object_put(bulk(&g_t, "db", "{\"new_edits\":false,\"docs\":["
		"{\"_id\":\"d\",\"_rev\":\"2-b\",\"_revisions\":{\"start\":2,"
		"\"ids\":[\"b\",\"a\"]}},{\"_id\":\"have\",\"_rev\":"
		"\"2-b\",\"_revisions\":{\"start\":2,\"ids\":[\"b\",\"a\"]}}]}"));
	ck_assert_int_eq(J(&g_t, "POST", "/db/_revs_diff",
			   "{\"d\":[\"2-b\",\"3-c\",\"1-a\",\"1-z\"],"
			   "\"new\":[\"1-x\"],\"have\":[\"2-b\"]}", &j), 200);
	ck_assert(!jhas(j, "have"));
	d = jat(j, "d");
	ck_assert_str_eq(json_object_to_json_string_ext(jat(d, "missing"),
			 JSON_C_TO_STRING_PLAIN), "[\"3-c\",\"1-z\"]");
	ck_assert_str_eq(json_object_to_json_string_ext(
			 jat(d, "possible_ancestors"), JSON_C_TO_STRING_PLAIN),
			 "[\"2-b\"]");
	ck_assert_str_eq(json_object_to_json_string_ext(jat(j, "new"),
			 JSON_C_TO_STRING_PLAIN), "{\"missing\":[\"1-x\"]}");
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "POST", "/db/_revs_diff", "{}", &j), 200);
	ck_assert_int_eq(json_object_object_length(j), 0);
	json_object_put(j);
	expect_error(&g_t, "POST", "/db/_revs_diff", "{\"d\":[\"bad\"]}", 400,
		     "bad_request", NULL);
	expect_error(&g_t, "POST", "/db/_revs_diff", "nope", 400, "bad_request",
		     "invalid UTF-8 JSON");
	expect_error(&g_t, "GET", "/db/_revs_diff", NULL, 405,
		     "method_not_allowed", "Only POST allowed");
	st_stop(&g_t);
}
END_TEST

/* _bulk_docs with new_edits=true: ids generated, conflicts per doc;
 * new_edits=false: [] and conflicting branches kept; bad input. */
START_TEST(test_bulk_docs)
{
	struct json_object *j, *r0, *r1, *r2;
	char body[512], rev[REV_STR_SIZE];

	t_start();
	mkdb(&g_t, "db");
	j = bulk(&g_t, "db", "{\"docs\":[{\"_id\":\"x\",\"v\":1},{\"v\":2}]}");
	ck_assert_uint_eq(jlen(j), 2);
	r0 = jat(j, "0");
	r1 = jat(j, "1");
	ck_assert(json_object_get_boolean(jat(r0, "ok")));
	ck_assert_str_eq(st_str(r0, "id"), "x");
	ck_assert(!strncmp(st_str(r0, "rev"), "1-", 2));
	ck_assert_uint_eq(strlen(st_str(r1, "id")), 32);
	snprintf(rev, sizeof(rev), "%s", st_str(r0, "rev"));
	json_object_put(j);
	snprintf(body, sizeof(body), "{\"docs\":[{\"_id\":\"x\",\"_rev\":\"%s\","
		 "\"v\":3},{\"_id\":\"x\",\"v\":4},{\"_id\":\"x\",\"_rev\":"
		 "\"%s\",\"v\":5}]}", rev, rev);
	j = bulk(&g_t, "db", body);
	ck_assert_uint_eq(jlen(j), 3);
	r0 = jat(j, "0");
	r1 = jat(j, "1");
	r2 = jat(j, "2");
	ck_assert(json_object_get_boolean(jat(r0, "ok")));
	ck_assert(!strncmp(st_str(r0, "rev"), "2-", 2));
	ck_assert_str_eq(st_str(r1, "id"), "x");
	ck_assert_str_eq(st_str(r1, "error"), "conflict");
	ck_assert_str_eq(st_str(r1, "reason"), "Document update conflict.");
	ck_assert_str_eq(st_str(r2, "error"), "conflict");
	json_object_put(j);
	/* replicated: branches of y, an already known revision, and [] */
	j = bulk(&g_t, "db", "{\"new_edits\":false,\"docs\":["
		 "{\"_id\":\"y\",\"_rev\":\"2-b\",\"_revisions\":{\"start\":2,"
		 "\"ids\":[\"b\",\"a\"]},\"v\":1},"
		 "{\"_id\":\"y\",\"_rev\":\"2-c\",\"_revisions\":{\"start\":2,"
		 "\"ids\":[\"c\",\"a\"]},\"v\":2},"
		 "{\"_id\":\"y\",\"_rev\":\"2-b\",\"_revisions\":{\"start\":2,"
		 "\"ids\":[\"b\",\"a\"]},\"v\":1}]}");
	ck_assert_uint_eq(jlen(j), 0);
	json_object_put(j);
	ck_assert_str_eq(winner(&g_t, "y", rev, sizeof(rev)), "2-c");
	ck_assert_int_eq(J(&g_t, "GET", "/db/_changes?style=all_docs&filter="
			   "_doc_ids&doc_ids=%5B%22y%22%5D", NULL, &j), 200);
	ck_assert_uint_eq(jlen(jat(jat(jat(j, "results"), "0"), "changes")), 2);
	json_object_put(j);
	/* a replicated write without a revision fails alone */
	j = bulk(&g_t, "db", "{\"new_edits\":false,\"docs\":[{\"_id\":\"z\"},"
		 "{\"_id\":\"w\",\"_rev\":\"1-q\"}]}");
	ck_assert_uint_eq(jlen(j), 1);
	ck_assert_str_eq(st_str(jat(j, "0"), "id"), "z");
	ck_assert(*st_str(jat(j, "0"), "error"));
	json_object_put(j);
	ck_assert_str_eq(winner(&g_t, "w", rev, sizeof(rev)), "1-q");
	/* a bad id is this document's error, not the request's */
	j = bulk(&g_t, "db", "{\"docs\":[{\"_id\":\"_bad\"},{\"_id\":\"ok\"}]}");
	ck_assert_str_eq(st_str(jat(j, "0"), "id"), "_bad");
	ck_assert(*st_str(jat(j, "0"), "error"));
	ck_assert(json_object_get_boolean(jat(jat(j, "1"), "ok")));
	json_object_put(j);
	/* _local documents in a bulk */
	j = bulk(&g_t, "db", "{\"docs\":[{\"_id\":\"_local/cp\",\"s\":7}]}");
	ck_assert_str_eq(st_str(jat(j, "0"), "id"), "_local/cp");
	ck_assert_str_eq(st_str(jat(j, "0"), "rev"), "0-1");
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/db/_local/cp", NULL, &j), 200);
	ck_assert_int_eq(jint(j, "s"), 7);
	json_object_put(j);
	expect_error(&g_t, "POST", "/db/_bulk_docs", "{}", 400, "bad_request",
		     "POST body must include `docs` parameter.");
	expect_error(&g_t, "POST", "/db/_bulk_docs", "{\"docs\":[1]}", 400,
		     "bad_request", NULL);
	expect_error(&g_t, "POST", "/db/_bulk_docs", "{\"docs\":[", 400,
		     "bad_request", "invalid UTF-8 JSON");
	expect_error(&g_t, "GET", "/db/_bulk_docs", NULL, 405,
		     "method_not_allowed", "Only POST allowed");
	st_stop(&g_t);
}
END_TEST

/* _local round trip: 0-N revisions, 409 on a stale one, delete, 404,
 * ids with "/" percent-encoded, _local_docs. */
START_TEST(test_local)
{
	struct json_object *j;

	t_start();
	mkdb(&g_t, "db");
	expect_error(&g_t, "GET", "/db/_local/cp", NULL, 404, "not_found",
		     "missing");
	ck_assert_int_eq(J(&g_t, "PUT", "/db/_local/cp", "{\"h\":[1,2]}", &j),
			 201);
	ck_assert(json_object_get_boolean(jat(j, "ok")));
	ck_assert_str_eq(st_str(j, "id"), "_local/cp");
	ck_assert_str_eq(st_str(j, "rev"), "0-1");
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/db/_local/cp", NULL, &j), 200);
	ck_assert_str_eq(st_str(j, "_id"), "_local/cp");
	ck_assert_str_eq(st_str(j, "_rev"), "0-1");
	ck_assert_uint_eq(jlen(jat(j, "h")), 2);
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "PUT", "/db/_local/cp",
			   "{\"_id\":\"_local/cp\",\"_rev\":\"0-1\",\"h\":3}",
			   &j), 201);
	ck_assert_str_eq(st_str(j, "rev"), "0-2");
	json_object_put(j);
	expect_error(&g_t, "PUT", "/db/_local/cp", "{\"_rev\":\"0-1\"}", 409,
		     "conflict", "Document update conflict.");
	expect_error(&g_t, "PUT", "/db/_local/cp", "{}", 409, "conflict", NULL);
	expect_error(&g_t, "PUT", "/db/_local/cp", "{\"_rev\":\"x\"}", 400,
		     "bad_request", NULL);
	expect_error(&g_t, "DELETE", "/db/_local/cp?rev=0-1", NULL, 409,
		     "conflict", NULL);
	ck_assert_int_eq(J(&g_t, "DELETE", "/db/_local/cp?rev=0-2", NULL, &j),
			 200);
	ck_assert_str_eq(st_str(j, "id"), "_local/cp");
	json_object_put(j);
	expect_error(&g_t, "GET", "/db/_local/cp", NULL, 404, "not_found", NULL);
	ck_assert_int_eq(J(&g_t, "PUT", "/db/_local/a%2Fb", "{}", NULL), 201);
	ck_assert_int_eq(J(&g_t, "GET", "/db/_local/a/b", NULL, &j), 200);
	ck_assert_str_eq(st_str(j, "_id"), "_local/a/b");
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/db/_local_docs", NULL, &j), 200);
	ck_assert_uint_eq(jlen(jat(j, "rows")), 1);
	ck_assert_str_eq(st_str(jat(jat(j, "rows"), "0"), "id"), "_local/a/b");
	json_object_put(j);
	/* local documents are not in _changes or _all_docs */
	ck_assert_int_eq(J(&g_t, "GET", "/db/_all_docs", NULL, &j), 200);
	ck_assert_uint_eq(jlen(jat(j, "rows")), 0);
	json_object_put(j);
	expect_error(&g_t, "POST", "/db/_local/x", "{}", 405,
		     "method_not_allowed", NULL);
	st_stop(&g_t);
}
END_TEST

/* _ensure_full_commit, _revs_limit, _compact, _purge, the view and
 * unknown endpoints, and wrong methods. */
START_TEST(test_db_endpoints)
{
	struct json_object *j;
	char body[256], rev[REV_STR_SIZE];

	t_start();
	mkdb(&g_t, "db");
	ck_assert_int_eq(J(&g_t, "POST", "/db/_ensure_full_commit", "", &j), 201);
	ck_assert(json_object_get_boolean(jat(j, "ok")));
	ck_assert_str_eq(st_str(j, "instance_start_time"), "0");
	json_object_put(j);
	expect_error(&g_t, "GET", "/db/_ensure_full_commit", NULL, 405,
		     "method_not_allowed", "Only POST allowed");
	ck_assert_int_eq(J(&g_t, "GET", "/db/_revs_limit", NULL, &j), 200);
	ck_assert_int_eq(json_object_get_int(j), 1000);
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "PUT", "/db/_revs_limit", "5", NULL), 200);
	ck_assert_int_eq(J(&g_t, "GET", "/db/_revs_limit", NULL, &j), 200);
	ck_assert_int_eq(json_object_get_int(j), 5);
	json_object_put(j);
	expect_error(&g_t, "PUT", "/db/_revs_limit", "0", 400, "bad_request",
		     NULL);
	expect_error(&g_t, "PUT", "/db/_revs_limit", "\"x\"", 400,
		     "bad_request", NULL);
	ck_assert_int_eq(J(&g_t, "POST", "/db/_compact", "", &j), 202);
	ck_assert(json_object_get_boolean(jat(j, "ok")));
	json_object_put(j);
	/* purge */
	ck_assert_int_eq(J(&g_t, "POST", "/db", "{\"_id\":\"p\"}", NULL), 201);
	snprintf(body, sizeof(body), "{\"p\":[\"%s\"],\"nope\":[\"1-a\"]}",
		 winner(&g_t, "p", rev, sizeof(rev)));
	ck_assert_int_eq(J(&g_t, "POST", "/db/_purge", body, &j), 201);
	ck_assert(json_object_is_type(jat(j, "purge_seq"), json_type_null));
	ck_assert_str_eq(json_object_get_string(
		jat(jat(jat(j, "purged"), "p"), "0")), rev);
	ck_assert_uint_eq(jlen(jat(jat(j, "purged"), "nope")), 0);
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "POST", "/db/_all_docs", "{\"keys\":[\"p\"]}",
			   &j), 200);
	ck_assert_str_eq(st_str(jat(jat(j, "rows"), "0"), "error"),
			 "not_found");
	json_object_put(j);
	expect_error(&g_t, "POST", "/db/_purge", "{\"p\":\"x\"}", 400,
		     "bad_request", NULL);
	expect_error(&g_t, "GET", "/db/_design/d/_show/v", NULL, 501,
		     "not_implemented", NULL);
	expect_error(&g_t, "GET", "/db/_nothing", NULL, 404, "not_found", NULL);
	expect_error(&g_t, "PUT", "/db/_nothing", "{}", 400, "illegal_docid",
		     NULL);
	expect_error(&g_t, "GET", "/_nothing", NULL, 400,
		     "illegal_database_name", NULL);
	st_stop(&g_t);
}
END_TEST

/* Ids and names percent-decoded per segment: "%2F" stays inside a
 * segment; bad escapes are 400; query values decode '+' and escapes. */
START_TEST(test_percent)
{
	struct json_object *j;
	char ids[256];

	t_start();
	mkdb(&g_t, "db");
	json_object_put(bulk(&g_t, "db", "{\"docs\":[{\"_id\":\"a/b\"},"
			     "{\"_id\":\"c d+e\"}]}"));
	ck_assert_int_eq(J(&g_t, "GET", "/db/_all_docs?key=%22a%2Fb%22", NULL,
			   &j), 200);
	ck_assert_str_eq(row_ids(jat(j, "rows"), ids, sizeof(ids)), "a/b");
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/db/_all_docs?key=%22c+d%2Be%22", NULL,
			   &j), 200);
	ck_assert_str_eq(row_ids(jat(j, "rows"), ids, sizeof(ids)), "c d+e");
	json_object_put(j);
	expect_error(&g_t, "GET", "/db/a%zzb", NULL, 400, "bad_request", NULL);
	expect_error(&g_t, "GET", "/db/a%2", NULL, 400, "bad_request", NULL);
	expect_error(&g_t, "GET", "/db/a%00b", NULL, 400, "bad_request", NULL);
	expect_error(&g_t, "GET", "/db/_all_docs?key=%2", NULL, 400,
		     "bad_request", NULL);
	st_stop(&g_t);
}
END_TEST

/* ---- TCP: authentication, the loopback rule, TLS ---- */

/* Write "user:crypt(pass)" into path. */
static void make_passwd(const char *path, const char *user, const char *pass)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	const char *hash;
	FILE *f;

	ck_assert_ptr_nonnull(cd);
	ck_assert_ptr_nonnull(crypt_gensalt_rn("$y$", 0, NULL, 0, salt,
					       sizeof(salt)));
	hash = crypt_r(pass, salt, cd);
	ck_assert(hash && hash[0] != '*');
	ck_assert_ptr_nonnull(f = fopen(path, "w"));
	fprintf(f, "bob:$y$j9T$x$y\n%s:%s\n", user, hash);
	fclose(f);
	free(cd);
}

static long tcp_get(const char *base, const char *path, const char *userpwd,
		    char **hdrs, struct json_object **reply)
{
	char url[512];
	struct rq q = { .url = url, .method = "GET", .userpwd = userpwd };

	snprintf(url, sizeof(url), "%s%s", base, path);
	rq_run(&q);
	ck_assert_int_eq(q.cc, CURLE_OK);
	if (reply)
		*reply = json_tokener_parse(q.out.p);
	if (hdrs)
		*hdrs = strdup(q.hdrs.p);
	rq_release(&q);
	return q.status;
}

/* With a password file, TCP needs the right basic credentials (401 and
 * WWW-Authenticate otherwise); the UNIX socket needs none. */
START_TEST(test_auth)
{
	struct srv_opts o = { .listen = "127.0.0.1:0" };
	struct json_object *j;
	char pw[PATH_MAX], *hdrs;
	const char *url;

	tu_path(pw, sizeof(pw), g_base, "passwd");
	make_passwd(pw, "alice", "s3cret");
	o.passwd = pw;
	st_start(&g_t, g_base, &o);
	ck_assert_int_gt(srv_port(g_t.srv), 0);
	ck_assert_ptr_nonnull(url = srv_url(g_t.srv));
	ck_assert(!strncmp(url, "http://127.0.0.1:", 17));
	ck_assert_int_eq(tcp_get(url, "/", "alice:s3cret", NULL, &j), 200);
	ck_assert_str_eq(st_str(j, "couchdb"), "Welcome");
	json_object_put(j);
	ck_assert_int_eq(tcp_get(url, "/_session", "alice:s3cret", NULL, &j),
			 200);
	ck_assert_str_eq(st_str(jat(j, "userCtx"), "name"), "alice");
	json_object_put(j);
	ck_assert_int_eq(tcp_get(url, "/", "alice:wrong", &hdrs, &j), 401);
	ck_assert_str_eq(st_str(j, "error"), "unauthorized");
	ck_assert_str_eq(st_str(j, "reason"), "Name or password is incorrect.");
	ck_assert_msg(strstr(hdrs, "WWW-Authenticate: Basic realm=\"barrelfs\""),
		      "%s", hdrs);
	free(hdrs);
	json_object_put(j);
	ck_assert_int_eq(tcp_get(url, "/", NULL, NULL, NULL), 401);
	ck_assert_int_eq(tcp_get(url, "/", "bob:x", NULL, NULL), 401);
	ck_assert_int_eq(tcp_get(url, "/", "nobody:s3cret", NULL, NULL), 401);
	ck_assert_int_eq(tcp_get(url, "/_all_dbs", "alice:s3cre", NULL, NULL),
			 401);
	ck_assert_int_eq(J(&g_t, "GET", "/", NULL, NULL), 200);
	/* the file is read again when it changes */
	make_passwd(pw, "carol", "other");
	ck_assert_int_eq(tcp_get(url, "/", "carol:other", NULL, NULL), 200);
	st_stop(&g_t);
}
END_TEST

/* srv_start refuses a non-loopback listener without a password file,
 * bad addresses and no listener; loopback works without one. */
START_TEST(test_listen_rules)
{
	struct srv_opts o = { .listen = "0.0.0.0:0" };
	char err[SRV_ERRLEN], sock[PATH_MAX];
	struct srv *s = NULL;
	struct json_object *j;

	ck_assert_int_eq(srv_start(NULL, &o, &s, err), BARREL_E_INVALID);
	ck_assert_msg(strstr(err, "password"), "%s", err);
	o.listen = "[::]:0";
	ck_assert_int_eq(srv_start(NULL, &o, &s, err), BARREL_E_INVALID);
	o.listen = "nonsense";
	ck_assert_int_eq(srv_start(NULL, &o, &s, err), BARREL_E_INVALID);
	o.listen = "127.0.0.1:99999";
	ck_assert_int_eq(srv_start(NULL, &o, &s, err), BARREL_E_INVALID);
	o.listen = NULL;
	ck_assert_int_eq(srv_start(NULL, &o, &s, err), BARREL_E_INVALID);
	o.listen = "127.0.0.1:0";
	o.tls_cert = "/nonexistent/cert.pem";
	o.tls_key = "/nonexistent/key.pem";
	ck_assert_int_eq(srv_start(NULL, &o, &s, err), BARREL_E_INVALID);
	o.tls_cert = o.tls_key = NULL;
	o.passwd = "/nonexistent/passwd";
	ck_assert_int_eq(srv_start(NULL, &o, &s, err), BARREL_E_INVALID);
	o.passwd = NULL;
	o.listen = "localhost:0";
	st_start(&g_t, g_base, &o);
	ck_assert_int_eq(tcp_get(srv_url(g_t.srv), "/", NULL, NULL, &j), 200);
	json_object_put(j);
	/* a second server on the same socket path is refused */
	snprintf(sock, sizeof(sock), "%s", g_t.sock);
	o.listen = NULL;
	o.unix_path = sock;
	ck_assert_int_eq(srv_start(g_t.cat, &o, &s, err), -EADDRINUSE);
	st_stop(&g_t);
	/* IPv6 loopback, when the host has it */
	{
		int fd = socket(AF_INET6, SOCK_STREAM, 0);
		struct sockaddr_in6 sa = { .sin6_family = AF_INET6,
					   .sin6_addr = IN6ADDR_LOOPBACK_INIT };
		bool v6 = fd >= 0 && !bind(fd, (struct sockaddr *)&sa,
					   sizeof(sa));

		if (fd >= 0)
			close(fd);
		if (v6) {
			o.unix_path = NULL;
			o.listen = "[::1]:0";
			st_start(&g_t, g_base, &o);
			ck_assert(!strncmp(srv_url(g_t.srv), "http://[::1]:", 13));
			ck_assert_int_eq(tcp_get(srv_url(g_t.srv), "/_up", NULL,
						 NULL, NULL), 200);
			st_stop(&g_t);
		}
	}
}
END_TEST

/* HTTPS with a self-signed certificate: GET / over TLS. */
START_TEST(test_tls)
{
	struct srv_opts o = { .listen = "127.0.0.1:0" };
	char dir[PATH_MAX], key[PATH_MAX], cert[PATH_MAX], cmd[3 * PATH_MAX];
	char url[256], res[128];
	struct rq q = { .method = "GET" };
	struct json_object *j;

	tu_path(dir, sizeof(dir), g_base, "tlsXXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	tu_path(key, sizeof(key), dir, "key.pem");
	tu_path(cert, sizeof(cert), dir, "cert.pem");
	snprintf(cmd, sizeof(cmd), "openssl req -x509 -newkey rsa:2048 -nodes "
		 "-subj /CN=localhost -days 1 -keyout '%s' -out '%s' "
		 ">/dev/null 2>&1", key, cert);
	ck_assert_msg(system(cmd) == 0, "openssl failed: %s", cmd);
	o.tls_cert = cert;
	o.tls_key = key;
	st_start(&g_t, g_base, &o);
	ck_assert(!strncmp(srv_url(g_t.srv), "https://127.0.0.1:", 18));
	snprintf(res, sizeof(res), "localhost:%u:127.0.0.1", srv_port(g_t.srv));
	snprintf(url, sizeof(url), "https://localhost:%u/", srv_port(g_t.srv));
	q.url = url;
	q.cainfo = cert;
	q.resolve = curl_slist_append(NULL, res);
	rq_run(&q);
	ck_assert_msg(q.cc == CURLE_OK, "curl: %s", curl_easy_strerror(q.cc));
	ck_assert_int_eq(q.status, 200);
	ck_assert_ptr_nonnull(j = json_tokener_parse(q.out.p));
	ck_assert_str_eq(st_str(j, "couchdb"), "Welcome");
	json_object_put(j);
	curl_slist_free_all(q.resolve);
	rq_release(&q);
	/* plain HTTP on the TLS port gets no reply */
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/", srv_port(g_t.srv));
	memset(&q, 0, sizeof(q));
	q.url = url;
	q.method = "GET";
	q.timeout_ms = 5000;
	rq_run(&q);
	ck_assert(q.cc != CURLE_OK || q.status != 200);
	rq_release(&q);
	st_stop(&g_t);
}
END_TEST

/* ---- malformed requests ---- */

/* Send raw bytes on the socket and read the reply until the server
 * closes or 2 s pass; returns the reply's first line (static). */
static const char *raw(struct synctest *t, const char *data, size_t len,
		       bool half_close)
{
	static char reply[4096];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t got = 0, off = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int64_t until = mono_ms() + 2000;

	ck_assert_int_ge(fd, 0);
	memcpy(sa.sun_path, t->sock, strlen(t->sock) + 1);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	while (off < len) {
		ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL);

		if (n <= 0)
			break;              /* the server may close early */
		off += (size_t)n;
	}
	if (half_close)
		shutdown(fd, SHUT_WR);
	while (got < sizeof(reply) - 1 && mono_ms() < until) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = recv(fd, reply + got, sizeof(reply) - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	reply[got] = '\0';
	reply[strcspn(reply, "\r\n")] = '\0';
	return reply;
}

/* Garbage, huge request lines and headers, bad methods, bad bodies and
 * truncated ones: each answered or closed, and the server still works. */
START_TEST(test_malformed)
{
	static const char *const bad[] = {
		"\x01\x02\x03garbage\r\n\r\n",
		"GET\r\n\r\n",
		"GET / HTTP/9.9\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
		"POST /db/_bulk_docs HTTP/1.1\r\nHost: x\r\n"
		"Content-Length: 100\r\n\r\n{\"docs\":",
		"POST /db/_bulk_docs HTTP/1.1\r\nHost: x\r\n"
		"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc",
		"",
	};
	static const char *const json[] = {
		"", "{", "nul", "{\"docs\":[{]}", "[", "\"\xc3\x28\"", "{}}",
		"{\"docs\":[{\"_id\":\"\xed\xa0\x80\"}]}",
	};
	char *big;
	const char *line;
	struct json_object *j;
	const size_t bigsz = 100u << 10;

	t_start();
	mkdb(&g_t, "db");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		raw(&g_t, bad[i], strlen(bad[i]), true);
	big = malloc(bigsz + 64);
	ck_assert_ptr_nonnull(big);
	memcpy(big, "GET /", 5);
	memset(big + 5, 'a', bigsz);
	memcpy(big + 5 + bigsz, " HTTP/1.1\r\nHost: x\r\n\r\n", 23);
	line = raw(&g_t, big, 5 + bigsz + 22, false);
	ck_assert_msg(!*line || strstr(line, " 414") || strstr(line, " 431") ||
		      strstr(line, " 400"), "long line: %s", line);
	memcpy(big, "GET / HTTP/1.1\r\nX-Big: ", 23);
	memset(big + 23, 'b', bigsz);
	memcpy(big + 23 + bigsz, "\r\n\r\n", 5);
	line = raw(&g_t, big, 23 + bigsz + 4, false);
	ck_assert_msg(!*line || strstr(line, " 431") || strstr(line, " 400") ||
		      strstr(line, " 414"), "big header: %s", line);
	free(big);
	line = raw(&g_t, "BREW /db HTTP/1.1\r\nHost: x\r\n\r\n", 30, false);
	ck_assert_msg(strstr(line, " 405"), "%s", line);
	line = raw(&g_t, "POST /db HTTP/1.1\r\nHost: x\r\n"
		   "Content-Length: 999999999999\r\n\r\n", 61, false);
	ck_assert_msg(strstr(line, " 413"), "%s", line);
	for (size_t i = 0; i < sizeof(json) / sizeof(json[0]); i++) {
		expect_error(&g_t, "POST", "/db/_bulk_docs", json[i], 400,
			     "bad_request", NULL);
		expect_error(&g_t, "POST", "/db/_revs_diff", json[i], 400,
			     "bad_request", NULL);
		expect_error(&g_t, "PUT", "/db/_local/x", json[i], 400,
			     "bad_request", NULL);
	}
	ck_assert_int_eq(J(&g_t, "GET", "/", NULL, &j), 200);
	ck_assert_str_eq(st_str(j, "couchdb"), "Welcome");
	json_object_put(j);
	ck_assert_int_eq(J(&g_t, "GET", "/db", NULL, &j), 200);
	ck_assert_int_eq(jint(j, "doc_count"), 0);
	json_object_put(j);
	st_stop(&g_t);
}
END_TEST

/* ---- gzip ---- */

/* gzip (in a buffer of its own) of len bytes of s; *outlen its size. */
static char *gz_make(const char *s, size_t len, size_t *outlen)
{
	z_stream z = { 0 };
	size_t cap = len + 1024;
	char *out = malloc(cap);

	ck_assert_ptr_nonnull(out);
	ck_assert_int_eq(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8,
				      Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (unsigned char *)s;
	z.avail_in = (uInt)len;
	z.next_out = (unsigned char *)out;
	z.avail_out = (uInt)cap;
	ck_assert_int_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
	*outlen = cap - z.avail_out;
	deflateEnd(&z);
	return out;
}

/* The gunzipped text of in[0..len) (malloc'ed, NUL-terminated); NULL
 * when it is not one whole gzip stream. */
static char *gz_text(const char *in, size_t len)
{
	z_stream z = { 0 };
	size_t cap = 64 * len + 4096;
	char *out = malloc(cap + 1);
	int zr;

	ck_assert_ptr_nonnull(out);
	ck_assert_int_eq(inflateInit2(&z, 15 + 16), Z_OK);
	z.next_in = (unsigned char *)in;
	z.avail_in = (uInt)len;
	z.next_out = (unsigned char *)out;
	z.avail_out = (uInt)cap;
	zr = inflate(&z, Z_FINISH);
	out[cap - z.avail_out] = '\0';
	inflateEnd(&z);
	if (zr != Z_STREAM_END || z.avail_in) {
		free(out);
		return NULL;
	}
	return out;
}

/* A raw request on t's socket: headers sent as given (no decoding by
 * libcurl); the reply's status, body and headers. */
static long gz_req(struct synctest *t, const char *method, const char *path,
		   const char *const *headers, const char *body, size_t len,
		   struct st_buf *out, struct st_buf *hdrs)
{
	struct curl_slist *h = NULL;
	char url[1024];
	long status = 0;
	CURL *c = curl_easy_init();

	ck_assert_ptr_nonnull(c);
	snprintf(url, sizeof(url), "http://localhost%s", path);
	curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, t->sock);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)len);
	}
	for (size_t i = 0; headers && headers[i]; i++)
		h = curl_slist_append(h, headers[i]);
	h = curl_slist_append(h, "Expect:");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, st_collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, st_collect);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, hdrs);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	if (!out->p)
		out->p = strdup("");
	if (!hdrs->p)
		hdrs->p = strdup("");
	return status;
}

static void gz_release(struct st_buf *out, struct st_buf *hdrs)
{
	free(out->p);
	free(hdrs->p);
	memset(out, 0, sizeof(*out));
	memset(hdrs, 0, sizeof(*hdrs));
}

/* A _bulk_docs body of n documents of about 200 bytes each. */
static char *gz_docs(int n, const char *prefix)
{
	size_t cap = (size_t)n * 256 + 64, len;
	char *b = malloc(cap);

	ck_assert_ptr_nonnull(b);
	len = (size_t)snprintf(b, cap, "{\"docs\":[");
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(b + len, cap - len, "%s{\"_id\":\"%s%03d\","
			"\"text\":\"the quick brown fox jumps over the lazy "
			"dog, again and again and again and again\"}",
			i ? "," : "", prefix, i);
	snprintf(b + len, cap - len, "]}");
	return b;
}

/* Big JSON replies come gzipped only to a client that accepts gzip, with
 * Content-Encoding and Vary; small ones and other clients get plain
 * text; the changes feed is gzipped as a stream. */
START_TEST(test_gzip_replies)
{
	static const char *const acc[] = { "Accept-Encoding: gzip, deflate",
					   NULL };
	static const char *const no[] = { "Accept-Encoding: gzip;q=0, br",
					  NULL };
	struct st_buf out = { 0 }, hdrs = { 0 };
	struct json_object *j;
	char *body = gz_docs(100, "d"), *text;

	t_start();
	mkdb(&g_t, "db");
	json_object_put(bulk(&g_t, "db", body));
	free(body);
	/* big and accepted: gzip */
	ck_assert_int_eq(gz_req(&g_t, "GET", "/db/_all_docs?include_docs=true",
				acc, NULL, 0, &out, &hdrs), 200);
	ck_assert_ptr_nonnull(strcasestr(hdrs.p, "Content-Encoding: gzip"));
	ck_assert_ptr_nonnull(strcasestr(hdrs.p, "Vary: Accept-Encoding"));
	text = gz_text(out.p, out.len);
	ck_assert_ptr_nonnull(text);
	j = json_tokener_parse(text);
	ck_assert_uint_eq(jlen(jat(j, "rows")), 100);
	ck_assert_uint_lt(out.len, strlen(text) / 2);
	json_object_put(j);
	free(text);
	gz_release(&out, &hdrs);
	/* no Accept-Encoding, or gzip refused: plain */
	ck_assert_int_eq(gz_req(&g_t, "GET", "/db/_all_docs?include_docs=true",
				NULL, NULL, 0, &out, &hdrs), 200);
	ck_assert_ptr_null(strcasestr(hdrs.p, "Content-Encoding"));
	j = json_tokener_parse(out.p);
	ck_assert_uint_eq(jlen(jat(j, "rows")), 100);
	json_object_put(j);
	gz_release(&out, &hdrs);
	ck_assert_int_eq(gz_req(&g_t, "GET", "/db/_all_docs?include_docs=true",
				no, NULL, 0, &out, &hdrs), 200);
	ck_assert_ptr_null(strcasestr(hdrs.p, "Content-Encoding"));
	gz_release(&out, &hdrs);
	/* small: plain even when accepted */
	ck_assert_int_eq(gz_req(&g_t, "GET", "/db", acc, NULL, 0, &out,
				&hdrs), 200);
	ck_assert_ptr_null(strcasestr(hdrs.p, "Content-Encoding"));
	j = json_tokener_parse(out.p);
	ck_assert_str_eq(st_str(j, "db_name"), "db");
	json_object_put(j);
	gz_release(&out, &hdrs);
	/* the changes feed, a stream */
	ck_assert_int_eq(gz_req(&g_t, "GET", "/db/_changes", acc, NULL, 0,
				&out, &hdrs), 200);
	ck_assert_ptr_nonnull(strcasestr(hdrs.p, "Content-Encoding: gzip"));
	text = gz_text(out.p, out.len);
	ck_assert_ptr_nonnull(text);
	j = json_tokener_parse(text);
	ck_assert_uint_eq(jlen(jat(j, "results")), 100);
	ck_assert_int_eq(jint(j, "last_seq"), 100);
	json_object_put(j);
	free(text);
	gz_release(&out, &hdrs);
	st_stop(&g_t);
}
END_TEST

/* What a gzipped stream has inflated so far, for gz_watch(). */
struct gz_watch {
	z_stream z;
	char text[65536];
	size_t len;
	const char *want;          /* stop once this is in text */
	bool found;
};

/* curl's write callback: inflate as bytes come; 0 (abort) once the
 * wanted text showed. */
static size_t gz_watch(char *ptr, size_t size, size_t n, void *arg)
{
	struct gz_watch *w = arg;

	w->z.next_in = (unsigned char *)ptr;
	w->z.avail_in = (uInt)(size * n);
	while (w->z.avail_in && w->len < sizeof(w->text) - 1) {
		w->z.next_out = (unsigned char *)w->text + w->len;
		w->z.avail_out = (uInt)(sizeof(w->text) - 1 - w->len);
		if (inflate(&w->z, Z_SYNC_FLUSH) < 0)
			return 0;
		w->len = sizeof(w->text) - 1 - w->z.avail_out;
	}
	w->text[w->len] = '\0';
	if (strstr(w->text, w->want)) {
		w->found = true;
		return 0;
	}
	return size * n;
}

/* A continuous feed gzipped delivers each row as it is made: every
 * piece is flushed, none waits for the end of the feed. */
START_TEST(test_gzip_feed_flushes)
{
	struct gz_watch w = { .want = "\"id\":\"a\"" };
	struct curl_slist *h;
	int64_t t0;
	CURL *c;

	t_start();
	mkdb(&g_t, "db");
	json_object_put(bulk(&g_t, "db", "{\"docs\":[{\"_id\":\"a\"}]}"));
	ck_assert_int_eq(inflateInit2(&w.z, 15 + 16), Z_OK);
	c = curl_easy_init();
	h = curl_slist_append(NULL, "Accept-Encoding: gzip");
	curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, g_t.sock);
	curl_easy_setopt(c, CURLOPT_URL, "http://localhost/db/_changes?"
			 "feed=continuous&timeout=20000");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, gz_watch);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &w);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	t0 = mono_ms();
	ck_assert_int_eq(curl_easy_perform(c), CURLE_WRITE_ERROR);
	ck_assert_msg(w.found, "the row never came: %s", w.text);
	ck_assert_int_lt(mono_ms() - t0, 10000);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	inflateEnd(&w.z);
	st_stop(&g_t);
}
END_TEST

/* A request body sent gzipped is inflated before the handler; a body
 * that is not gzip is 400, an unknown encoding 415, and a body that
 * inflates past the limit 413. */
START_TEST(test_gzip_requests)
{
	static const char *const gz[] = { "Content-Type: application/json",
					  "Content-Encoding: gzip", NULL };
	static const char *const br[] = { "Content-Type: application/json",
					  "Content-Encoding: br", NULL };
	struct st_buf out = { 0 }, hdrs = { 0 };
	struct json_object *j;
	char *body = gz_docs(50, "g"), *zipped, *bomb;
	size_t zlen, blen;

	t_start();
	mkdb(&g_t, "db");
	zipped = gz_make(body, strlen(body), &zlen);
	ck_assert_int_eq(gz_req(&g_t, "POST", "/db/_bulk_docs", gz, zipped,
				zlen, &out, &hdrs), 201);
	j = json_tokener_parse(out.p);
	ck_assert_uint_eq(jlen(j), 50);
	ck_assert(json_object_get_boolean(jat(jat(j, "49"), "ok")));
	json_object_put(j);
	gz_release(&out, &hdrs);
	ck_assert_int_eq(J(&g_t, "GET", "/db/g049", NULL, &j), 200);
	json_object_put(j);
	/* not gzip, a truncated stream, trailing garbage */
	ck_assert_int_eq(gz_req(&g_t, "POST", "/db/_bulk_docs", gz, body,
				strlen(body), &out, &hdrs), 400);
	ck_assert_ptr_nonnull(strstr(out.p, "bad_request"));
	gz_release(&out, &hdrs);
	ck_assert_int_eq(gz_req(&g_t, "POST", "/db/_bulk_docs", gz, zipped,
				zlen - 9, &out, &hdrs), 400);
	gz_release(&out, &hdrs);
	memcpy(body, zipped, zlen);
	memcpy(body + zlen, "xyz", 3);
	ck_assert_int_eq(gz_req(&g_t, "POST", "/db/_bulk_docs", gz, body,
				zlen + 3, &out, &hdrs), 400);
	gz_release(&out, &hdrs);
	ck_assert_int_eq(gz_req(&g_t, "POST", "/db/_bulk_docs", br, zipped,
				zlen, &out, &hdrs), 415);
	gz_release(&out, &hdrs);
	free(zipped);
	free(body);
	/* a small body that inflates past SRV_MAX_BODY */
	body = calloc(1, (size_t)SRV_MAX_BODY + 2);
	ck_assert_ptr_nonnull(body);
	memset(body, ' ', (size_t)SRV_MAX_BODY + 1);
	bomb = gz_make(body, (size_t)SRV_MAX_BODY + 1, &blen);
	free(body);
	ck_assert_uint_lt(blen, 1u << 20);
	ck_assert_int_eq(gz_req(&g_t, "POST", "/db/_bulk_docs", gz, bomb,
				blen, &out, &hdrs), 413);
	gz_release(&out, &hdrs);
	free(bomb);
	st_stop(&g_t);
}
END_TEST

static Suite *http_suite(void)
{
	Suite *s = suite_create("http");
	TCase *tc = tcase_create("api");
	TCase *net = tcase_create("net");

	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_root);
	tcase_add_test(tc, test_up_uuids_session);
	tcase_add_test(tc, test_db_lifecycle);
	tcase_add_test(tc, test_all_dbs);
	tcase_add_test(tc, test_post_doc);
	tcase_add_test(tc, test_all_docs);
	tcase_add_test(tc, test_changes_normal);
	tcase_add_test(tc, test_changes_longpoll);
	tcase_add_test(tc, test_changes_continuous);
	tcase_add_test(tc, test_changes_heartbeat_eventsource);
	tcase_add_test(tc, test_stop_ends_feed);
	tcase_add_test(tc, test_drop_ends_feed);
	tcase_add_test(tc, test_revs_diff);
	tcase_add_test(tc, test_bulk_docs);
	tcase_add_test(tc, test_local);
	tcase_add_test(tc, test_db_endpoints);
	tcase_add_test(tc, test_percent);
	tcase_add_test(tc, test_gzip_replies);
	tcase_add_test(tc, test_gzip_feed_flushes);
	tcase_add_test(tc, test_gzip_requests);
	suite_add_tcase(s, tc);
	tcase_add_unchecked_fixture(net, base_setup, base_teardown);
	tcase_set_timeout(net, 60);
	tcase_add_test(net, test_auth);
	tcase_add_test(net, test_listen_rules);
	tcase_add_test(net, test_tls);
	tcase_add_test(net, test_malformed);
	suite_add_tcase(s, net);
	return s;
}

int main(void)
{
	return st_main(http_suite());
}
