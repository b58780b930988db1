#include "config.h"

/*
 * Documents, attachments, open_revs and _bulk_get over HTTP
 * (sync/api_doc.c) against an in-process server: CouchDB's shapes,
 * status codes, headers and error bodies; bodies stored and returned
 * member for member; revision trees built by replicated writes and read
 * back with every GET option; attachments inline, as stubs, streamed,
 * by range, in multipart/related and multipart/mixed; bad input.
 */

#include <check.h>
#include <json-c/json.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/error.h"
#include "sync/api.h"
#include "tests/engine/testenv.h"
#include "tests/sync/synctest.h"

TU_BASE_FIXTURE("test_api_doc")

#define MiB (1024u * 1024u)

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

/* ---- requests that keep the reply's headers ---- */

struct resp {
	long status;
	char *body;
	size_t len;
	struct st_buf hdrs;
};

static void resp_free(struct resp *r)
{
	free(r->body);
	free(r->hdrs.p);
	memset(r, 0, sizeof(*r));
}

/* Header name of the reply into buf (NULL when absent). */
static const char *resp_header(const struct resp *r, const char *name,
			       char *buf, size_t size)
{
	size_t nlen = strlen(name);
	const char *p = r->hdrs.p;

	for (int guard = 0; p && *p && guard < 200; guard++) {
		const char *eol = strstr(p, "\r\n");
		size_t l = eol ? (size_t)(eol - p) : strlen(p);

		if (l > nlen && !strncasecmp(p, name, nlen) && p[nlen] == ':') {
			const char *v = p + nlen + 1;

			while (*v == ' ')
				v++;
			l -= (size_t)(v - p);
			if (l >= size)
				l = size - 1;
			memcpy(buf, v, l);
			buf[l] = '\0';
			return buf;
		}
		p = eol ? eol + 2 : p + l;
	}
	return NULL;
}

static void req(const char *method, const char *path, const char *ctype,
		const char *body, size_t len, const char *const *headers,
		struct resp *out)
{
	struct st_buf b = { 0 };

	memset(out, 0, sizeof(*out));
	out->status = st_perform(&T, method, path, ctype, body, len, headers,
				 &b, &out->hdrs);
	out->body = b.p ? b.p : strdup("");
	out->len = b.len;
}

/* A JSON request; the status, and the reply parsed into *j (may be
 * NULL; json_object_put() it). */
static long jreq(const char *method, const char *path, const char *body,
		 const char *const *headers, struct json_object **j)
{
	struct resp r;
	long status;

	req(method, path, body ? "application/json" : NULL, body,
	    body ? strlen(body) : 0, headers, &r);
	if (j)
		*j = json_tokener_parse(r.body);
	status = r.status;
	resp_free(&r);
	return status;
}

static struct json_object *member(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	json_object_object_get_ex(o, key, &v);
	return v;
}

/* Assert an error reply: status, "error" and "reason"; j is put. */
static void check_error(int line, long status, struct json_object *j,
			long want, const char *error, const char *reason)
{
	ck_assert_msg(status == want, "line %d: status %ld, want %ld (%s)",
		      line, status, want,
		      j ? json_object_to_json_string(j) : "not JSON");
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(st_str(j, "error"), error);
	if (reason)
		ck_assert_str_eq(st_str(j, "reason"), reason);
	json_object_put(j);
}

/* jreq() expected to fail: want, error and reason (NULL: any). */
#define expect_error(st_, j_, ...)                                       \
	do {                                                             \
		long s_ = (st_);                                         \
		check_error(__LINE__, s_, j_, __VA_ARGS__);                        \
	} while (0)

/* PUT body as path; the new revision into rev (asserts 201). */
static void put_ok(const char *path, const char *body, char *rev)
{
	struct json_object *j;
	long st = jreq("PUT", path, body, NULL, &j);

	ck_assert_msg(st == 201 || (st == 200 && strstr(body, "\"_deleted\"")),
		      "PUT %s: %ld %s", path, st,
		      j ? json_object_to_json_string(j) : "");
	ck_assert(json_object_get_boolean(member(j, "ok")));
	if (rev)
		snprintf(rev, 96, "%s", st_str(j, "rev"));
	json_object_put(j);
}

/* Put doc "t" with a tree: 1-a1 -> 2-b2 -> 3-c3 (the winner), 1-a1 ->
 * 2-d2 (deleted), 1-a1 -> 2-e2 (a live conflict). */
static void make_tree(void)
{
	put_ok("/db/t?new_edits=false",
	       "{\"_rev\":\"3-c3\",\"_revisions\":{\"start\":3,\"ids\":"
	       "[\"c3\",\"b2\",\"a1\"]},\"v\":\"c\"}", NULL);
	put_ok("/db/t?new_edits=false",
	       "{\"_rev\":\"2-d2\",\"_deleted\":true,\"_revisions\":{\"start\":2,"
	       "\"ids\":[\"d2\",\"a1\"]}}", NULL);
	put_ok("/db/t?new_edits=false",
	       "{\"_rev\":\"2-e2\",\"_revisions\":{\"start\":2,\"ids\":"
	       "[\"e2\",\"a1\"]},\"v\":\"e\"}", NULL);
}

static char *b64(const void *buf, size_t len)
{
	char *out = malloc(4 * (len / 3 + 1) + 1);

	ck_assert_ptr_nonnull(out);
	EVP_EncodeBlock((unsigned char *)out, buf, (int)len);
	return out;
}

static void fill(uint8_t *buf, size_t len, uint32_t seed)
{
	uint64_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < len; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		buf[i] = (uint8_t)(x >> 56);
	}
}

/* JSON text of len bytes (no NUL needed), parsed; NULL if it is not. */
static struct json_object *parse_n(const char *text, int len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *j = json_tokener_parse_ex(tok, text, len);

	json_tokener_free(tok);
	return j;
}

/* ---- documents ---- */

START_TEST(test_put_get_roundtrip)
/* A PUT body comes back member for member (numbers as written), with
 * _id, _rev, ETag and Location as CouchDB gives them. */
{
	const char *body = "{\"a\":1,\"b\":1.50,\"c\":\"str \\u00e9 \\\"q\\\" /\","
			   "\"d\":[1,{\"x\":null},[]],\"e\":true,\"f\":-1e3,"
			   "\"g\":{},\"h\":9007199254740993}";
	struct json_object *in = json_tokener_parse(body), *out;
	char rev[96], buf[256], want[128];
	struct resp r;

	req("PUT", "/db/doc1", "application/json", body, strlen(body), NULL, &r);
	ck_assert_int_eq(r.status, 201);
	out = json_tokener_parse(r.body);
	snprintf(rev, sizeof(rev), "%s", st_str(out, "rev"));
	ck_assert_str_eq(st_str(out, "id"), "doc1");
	ck_assert(!strncmp(rev, "1-", 2));
	json_object_put(out);
	snprintf(want, sizeof(want), "\"%s\"", rev);
	ck_assert_str_eq(resp_header(&r, "ETag", buf, sizeof(buf)), want);
	ck_assert_ptr_nonnull(resp_header(&r, "Location", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "/db/doc1"));
	resp_free(&r);

	req("GET", "/db/doc1", NULL, NULL, 0, NULL, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(resp_header(&r, "ETag", buf, sizeof(buf)), want);
	ck_assert_ptr_nonnull(strstr(r.body, "\"b\":1.50"));
	ck_assert_ptr_nonnull(strstr(r.body, "\"f\":-1e3"));
	out = json_tokener_parse(r.body);
	ck_assert_str_eq(st_str(out, "_id"), "doc1");
	ck_assert_str_eq(st_str(out, "_rev"), rev);
	ck_assert_int_eq(json_object_object_length(out),
			 json_object_object_length(in) + 2);
	json_object_object_foreach(in, key, val)
		ck_assert_msg(json_object_equal(val, member(out, key)),
			      "member %s differs", key);
	json_object_put(out);
	resp_free(&r);

	/* If-None-Match with the current ETag: 304 */
	{
		char inm[160];
		const char *hs[2] = { inm, NULL };

		snprintf(inm, sizeof(inm), "If-None-Match: %s", want);
		req("GET", "/db/doc1", NULL, NULL, 0, hs, &r);
		ck_assert_int_eq(r.status, 304);
		ck_assert_uint_eq(r.len, 0);
		resp_free(&r);
	}

	/* HEAD: the same status and ETag, no body */
	req("HEAD", "/db/doc1", NULL, NULL, 0, NULL, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(resp_header(&r, "ETag", buf, sizeof(buf)), want);
	ck_assert_uint_eq(r.len, 0);
	resp_free(&r);

	/* a design document */
	put_ok("/db/_design/dd", "{\"language\":\"javascript\"}", NULL);
	ck_assert_int_eq(jreq("GET", "/db/_design/dd", NULL, NULL, &out), 200);
	ck_assert_str_eq(st_str(out, "_id"), "_design/dd");
	json_object_put(out);
	json_object_put(in);
}
END_TEST

START_TEST(test_put_rev_rules)
/* The parent of an edit comes from _rev, ?rev= or If-Match, which must
 * agree; stale and missing parents conflict with CouchDB's body. */
{
	char r1[96], r2[96], r3[96], body[256], hdr[160];
	const char *hs[2] = { hdr, NULL };
	struct json_object *j;

	put_ok("/db/d", "{\"n\":1}", r1);
	expect_error(jreq("PUT", "/db/d", "{\"n\":9}", NULL, &j), j, 409,
		     "conflict", "Document update conflict.");
	snprintf(body, sizeof(body), "{\"_rev\":\"%s\",\"n\":2}", r1);
	put_ok("/db/d", body, r2);
	expect_error(jreq("PUT", "/db/d", body, NULL, &j), j, 409,
		     "conflict", "Document update conflict.");
	snprintf(body, sizeof(body), "/db/d?rev=%s", r2);
	put_ok(body, "{\"n\":3}", r3);
	snprintf(hdr, sizeof(hdr), "If-Match: \"%s\"", r3);
	ck_assert_int_eq(jreq("PUT", "/db/d", "{\"n\":4}", hs, &j), 201);
	json_object_put(j);
	/* disagreements */
	snprintf(body, sizeof(body), "{\"_rev\":\"%s\",\"n\":5}", r1);
	snprintf(hdr, sizeof(hdr), "/db/d?rev=%s", r2);
	expect_error(jreq("PUT", hdr, body, NULL, &j), j, 400, "bad_request",
		     "Document rev from request body and query string have "
		     "different values");
	snprintf(hdr, sizeof(hdr), "If-Match: \"%s\"", r2);
	expect_error(jreq("PUT", "/db/d", body, hs, &j), j, 400, "bad_request",
		     "Document rev and etag have different values");
	expect_error(jreq("PUT", "/db/d?rev=nonsense", "{}", NULL, &j), j, 400,
		     "bad_request", "Invalid rev format");
	expect_error(jreq("PUT", "/db/d", "{\"_rev\":\"x-y\"}", NULL, &j), j,
		     400, "bad_request", NULL);
	/* batch=ok is accepted with 202 */
	ck_assert_int_eq(jreq("PUT", "/db/b?batch=ok", "{\"a\":1}", NULL, &j),
			 202);
	ck_assert_str_eq(st_str(j, "id"), "b");
	json_object_put(j);
	ck_assert_int_eq(jreq("GET", "/db/b", NULL, NULL, &j), 200);
	json_object_put(j);
	/* _deleted:true in a PUT is a deletion, answered 200 */
	snprintf(body, sizeof(body), "{\"_deleted\":true}");
	ck_assert_int_eq(jreq("GET", "/db/d", NULL, NULL, &j), 200);
	snprintf(hdr, sizeof(hdr), "/db/d?rev=%s", st_str(j, "_rev"));
	json_object_put(j);
	ck_assert_int_eq(jreq("PUT", hdr, body, NULL, &j), 200);
	json_object_put(j);
	expect_error(jreq("GET", "/db/d", NULL, NULL, &j), j, 404, "not_found",
		     "deleted");
}
END_TEST

START_TEST(test_bad_input)
/* Bad bodies, ids, revisions and query values get 400 with CouchDB's
 * error body, never a crash. */
{
	struct json_object *j;

	expect_error(jreq("PUT", "/db/x", "[1,2]", NULL, &j), j, 400,
		     "bad_request", "Document must be a JSON object");
	expect_error(jreq("PUT", "/db/x", "\"s\"", NULL, &j), j, 400,
		     "bad_request", "Document must be a JSON object");
	expect_error(jreq("PUT", "/db/x", "{\"a\":", NULL, &j), j, 400,
		     "bad_request", "invalid UTF-8 JSON");
	expect_error(jreq("PUT", "/db/x", "", NULL, &j), j, 400,
		     "bad_request", NULL);
	expect_error(jreq("PUT", "/db/x", "{\"_attachments\":{\"f\":{"
			  "\"content_type\":\"text/plain\",\"data\":\"@@@!\"}}}",
			  NULL, &j), j, 400, "bad_request", NULL);
	expect_error(jreq("PUT", "/db/x", "{\"_bogus\":1}", NULL, &j), j, 400,
		     "bad_request", NULL);
	expect_error(jreq("GET", "/db/x?rev=12", NULL, NULL, &j), j, 400,
		     "bad_request", "Invalid rev format");
	expect_error(jreq("GET", "/db/x?open_revs=%5Bnope", NULL, NULL, &j), j,
		     400, "bad_request", NULL);
	expect_error(jreq("GET", "/db/x?open_revs=%5B%22zz%22%5D", NULL, NULL,
			  &j), j, 400, "bad_request", NULL);
	expect_error(jreq("GET", "/db/x?atts_since=7", NULL, NULL, &j), j, 400,
		     "bad_request", NULL);
	expect_error(jreq("POST", "/db/_bulk_get", "{\"docs\":3}", NULL, &j),
		     j, 400, "bad_request", NULL);
	expect_error(jreq("POST", "/db/_bulk_get", "nope", NULL, &j), j, 400,
		     "bad_request", NULL);
	expect_error(jreq("POST", "/db/_bulk_get?rev=1-a", "{\"docs\":[]}",
			  NULL, &j), j, 400, "bad_request", NULL);
	expect_error(jreq("PUT", "/db/x/_att", "abc", NULL, &j), j, 400,
		     "bad_request", NULL);
	expect_error(jreq("PATCH", "/db/x", "{}", NULL, &j), j, 405,
		     "method_not_allowed", NULL);
	/* nothing was created */
	expect_error(jreq("GET", "/db/x", NULL, NULL, &j), j, 404, "not_found",
		     "missing");
}
END_TEST

START_TEST(test_delete_and_missing)
/* 404 missing vs deleted; DELETE needs the current rev (query or
 * If-Match) and answers 200; a deleted revision read by rev= shows
 * _deleted. */
{
	char r1[96], path[256], hdr[160];
	const char *hs[2] = { hdr, NULL };
	struct json_object *j;

	expect_error(jreq("GET", "/db/m", NULL, NULL, &j), j, 404, "not_found",
		     "missing");
	expect_error(jreq("DELETE", "/db/m?rev=1-abc", NULL, NULL, &j), j, 404,
		     "not_found", "missing");
	put_ok("/db/m", "{\"k\":1}", r1);
	expect_error(jreq("DELETE", "/db/m", NULL, NULL, &j), j, 409,
		     "conflict", "Document update conflict.");
	expect_error(jreq("DELETE", "/db/m?rev=1-0123456789abcdef0123456789abcdef",
			  NULL, NULL, &j), j, 409, "conflict", NULL);
	snprintf(path, sizeof(path), "/db/m?rev=%s", r1);
	ck_assert_int_eq(jreq("DELETE", path, NULL, NULL, &j), 200);
	ck_assert(json_object_get_boolean(member(j, "ok")));
	ck_assert_str_eq(st_str(j, "id"), "m");
	snprintf(path, sizeof(path), "/db/m?rev=%s", st_str(j, "rev"));
	ck_assert(!strncmp(st_str(j, "rev"), "2-", 2));
	json_object_put(j);
	expect_error(jreq("GET", "/db/m", NULL, NULL, &j), j, 404, "not_found",
		     "deleted");
	ck_assert_int_eq(jreq("GET", path, NULL, NULL, &j), 200);
	ck_assert(json_object_get_boolean(member(j, "_deleted")));
	ck_assert_ptr_null(member(j, "k"));
	json_object_put(j);
	expect_error(jreq("DELETE", path, NULL, NULL, &j), j, 404, "not_found",
		     "deleted");
	/* recreate, then delete by If-Match */
	put_ok("/db/m", "{\"k\":2}", r1);
	ck_assert(!strncmp(r1, "3-", 2));
	snprintf(hdr, sizeof(hdr), "If-Match: \"%s\"", r1);
	ck_assert_int_eq(jreq("DELETE", "/db/m", NULL, hs, &j), 200);
	json_object_put(j);
	/* ?deleted=true shows the deleted winner */
	ck_assert_int_eq(jreq("GET", "/db/m?deleted=true", NULL, NULL, &j), 200);
	ck_assert(json_object_get_boolean(member(j, "_deleted")));
	json_object_put(j);
}
END_TEST

START_TEST(test_tree_options)
/* revs, revs_info, conflicts, deleted_conflicts, meta, local_seq, rev and
 * latest over a tree with a deleted branch and a live conflict. */
{
	struct json_object *j, *v;

	make_tree();
	ck_assert_int_eq(jreq("GET", "/db/t?revs=true", NULL, NULL, &j), 200);
	ck_assert_str_eq(st_str(j, "_rev"), "3-c3");
	ck_assert_str_eq(st_str(j, "v"), "c");
	v = member(j, "_revisions");
	ck_assert_int_eq(json_object_get_int(member(v, "start")), 3);
	ck_assert_str_eq(json_object_to_json_string_ext(member(v, "ids"),
			 JSON_C_TO_STRING_PLAIN), "[\"c3\",\"b2\",\"a1\"]");
	ck_assert_ptr_null(member(j, "_conflicts"));
	json_object_put(j);

	ck_assert_int_eq(jreq("GET", "/db/t?meta=true&local_seq=true", NULL,
			      NULL, &j), 200);
	ck_assert_str_eq(json_object_to_json_string_ext(member(j, "_conflicts"),
			 JSON_C_TO_STRING_PLAIN), "[\"2-e2\"]");
	ck_assert_str_eq(json_object_to_json_string_ext(
			 member(j, "_deleted_conflicts"), JSON_C_TO_STRING_PLAIN),
			 "[\"2-d2\"]");
	ck_assert_str_eq(json_object_to_json_string_ext(member(j, "_revs_info"),
			 JSON_C_TO_STRING_PLAIN),
			 "[{\"rev\":\"3-c3\",\"status\":\"available\"},"
			 "{\"rev\":\"2-b2\",\"status\":\"missing\"},"
			 "{\"rev\":\"1-a1\",\"status\":\"missing\"}]");
	ck_assert(json_object_is_type(member(j, "_local_seq"), json_type_int));
	ck_assert_int_gt(json_object_get_int64(member(j, "_local_seq")), 0);
	json_object_put(j);

	ck_assert_int_eq(jreq("GET", "/db/t?conflicts=true&deleted_conflicts=true",
			      NULL, NULL, &j), 200);
	ck_assert_ptr_nonnull(member(j, "_conflicts"));
	ck_assert_ptr_nonnull(member(j, "_deleted_conflicts"));
	ck_assert_ptr_null(member(j, "_revs_info"));
	json_object_put(j);

	/* a conflicting and a deleted revision by rev= */
	ck_assert_int_eq(jreq("GET", "/db/t?rev=2-e2&revs=true", NULL, NULL, &j),
			 200);
	ck_assert_str_eq(st_str(j, "v"), "e");
	ck_assert_str_eq(json_object_to_json_string_ext(
			 member(member(j, "_revisions"), "ids"),
			 JSON_C_TO_STRING_PLAIN), "[\"e2\",\"a1\"]");
	json_object_put(j);
	ck_assert_int_eq(jreq("GET", "/db/t?rev=2-d2", NULL, NULL, &j), 200);
	ck_assert(json_object_get_boolean(member(j, "_deleted")));
	json_object_put(j);
	/* a revision without a body, a revision not in the tree */
	expect_error(jreq("GET", "/db/t?rev=2-b2", NULL, NULL, &j), j, 404,
		     "not_found", "missing");
	expect_error(jreq("GET", "/db/t?rev=7-zz", NULL, NULL, &j), j, 404,
		     "not_found", "missing");
	/* latest: the best leaf that descends from the rev asked */
	ck_assert_int_eq(jreq("GET", "/db/t?rev=2-b2&latest=true", NULL, NULL,
			      &j), 200);
	ck_assert_str_eq(st_str(j, "_rev"), "3-c3");
	json_object_put(j);
	ck_assert_int_eq(jreq("GET", "/db/t?rev=1-a1&latest=true", NULL, NULL,
			      &j), 200);
	ck_assert_str_eq(st_str(j, "_rev"), "3-c3");
	json_object_put(j);
	ck_assert_int_eq(jreq("GET", "/db/t?rev=2-e2&latest=true", NULL, NULL,
			      &j), 200);
	ck_assert_str_eq(st_str(j, "_rev"), "2-e2");
	json_object_put(j);
}
END_TEST

START_TEST(test_revs_limit)
/* _revisions and _revs_info honour the database's revs_limit. */
{
	struct json_object *j;

	make_tree();
	ck_assert_int_eq(jreq("PUT", "/db/_revs_limit", "2", NULL, &j), 200);
	json_object_put(j);
	ck_assert_int_eq(jreq("GET", "/db/t?revs=true&revs_info=true", NULL,
			      NULL, &j), 200);
	ck_assert_str_eq(json_object_to_json_string_ext(
			 member(member(j, "_revisions"), "ids"),
			 JSON_C_TO_STRING_PLAIN), "[\"c3\",\"b2\"]");
	ck_assert_int_eq(json_object_array_length(member(j, "_revs_info")), 2);
	json_object_put(j);
}
END_TEST

START_TEST(test_open_revs_json)
/* open_revs=all and a list, with missing revisions and latest, as JSON
 * when the client accepts only JSON. */
{
	const char *hs[] = { "Accept: application/json", NULL };
	struct json_object *j, *e;

	make_tree();
	ck_assert_int_eq(jreq("GET", "/db/t?open_revs=all&revs=true", NULL, hs,
			      &j), 200);
	ck_assert(json_object_is_type(j, json_type_array));
	ck_assert_int_eq(json_object_array_length(j), 3);
	e = member(json_object_array_get_idx(j, 0), "ok");
	ck_assert_str_eq(st_str(e, "_rev"), "3-c3");
	ck_assert_ptr_nonnull(member(e, "_revisions"));
	for (size_t i = 0; i < 3; i++) {
		e = member(json_object_array_get_idx(j, i), "ok");
		if (!strcmp(st_str(e, "_rev"), "2-d2"))
			ck_assert(json_object_get_boolean(member(e, "_deleted")));
	}
	json_object_put(j);

	ck_assert_int_eq(jreq("GET", "/db/t?open_revs=%5B%222-e2%22,%229-zz%22,"
			      "%222-b2%22%5D", NULL, hs, &j), 200);
	ck_assert_int_eq(json_object_array_length(j), 3);
	ck_assert_str_eq(st_str(member(json_object_array_get_idx(j, 0), "ok"),
				"_rev"), "2-e2");
	ck_assert_str_eq(st_str(json_object_array_get_idx(j, 1), "missing"),
			 "9-zz");
	ck_assert_str_eq(st_str(json_object_array_get_idx(j, 2), "missing"),
			 "2-b2");
	json_object_put(j);

	ck_assert_int_eq(jreq("GET", "/db/t?latest=true&open_revs=%5B%222-b2%22,"
			      "%229-zz%22%5D", NULL, hs, &j), 200);
	ck_assert_int_eq(json_object_array_length(j), 2);
	ck_assert_str_eq(st_str(member(json_object_array_get_idx(j, 0), "ok"),
				"_rev"), "3-c3");
	ck_assert_str_eq(st_str(json_object_array_get_idx(j, 1), "missing"),
			 "9-zz");
	json_object_put(j);

	expect_error(jreq("GET", "/db/nope?open_revs=all", NULL, hs, &j), j,
		     404, "not_found", "missing");
	ck_assert_int_eq(jreq("GET", "/db/nope?open_revs=%5B%221-a%22%5D", NULL,
			      hs, &j), 200);
	ck_assert_str_eq(st_str(json_object_array_get_idx(j, 0), "missing"),
			 "1-a");
	json_object_put(j);
}
END_TEST

/* One part of a multipart body. */
struct part {
	const char *hdr;
	size_t hlen;
	const char *data;
	size_t len;
};

/* Split body by boundary (test side, independent of the server's). */
static size_t split_parts(const char *body, size_t len, const char *bnd,
			  struct part *parts, size_t max)
{
	char delim[256];
	size_t dlen = (size_t)snprintf(delim, sizeof(delim), "--%s", bnd);
	const char *end = body + len, *p;
	size_t n = 0;

	ck_assert_int_eq(memcmp(body, delim, dlen), 0);
	p = body + dlen;
	while (n < max && !(end - p >= 2 && !memcmp(p, "--", 2))) {
		const char *hend, *next;

		ck_assert(!memcmp(p, "\r\n", 2));
		p += 2;
		hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
		ck_assert_ptr_nonnull(hend);
		snprintf(delim, sizeof(delim), "\r\n--%s", bnd);
		next = memmem(hend + 4, (size_t)(end - hend - 4), delim,
			      dlen + 2);
		ck_assert_ptr_nonnull(next);
		parts[n++] = (struct part){ p, (size_t)(hend - p), hend + 4,
					    (size_t)(next - hend - 4) };
		p = next + dlen + 2;
	}
	ck_assert(end - p >= 2 && !memcmp(p, "--", 2));
	return n;
}

/* The boundary="..." of a Content-Type (in hdr) into out. */
static void boundary_of(const char *ct, char *out, size_t size)
{
	const char *p = strstr(ct, "boundary=\"");
	const char *e;

	ck_assert_ptr_nonnull(p);
	p += strlen("boundary=\"");
	e = strchr(p, '"');
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_lt((size_t)(e - p), size);
	memcpy(out, p, (size_t)(e - p));
	out[e - p] = '\0';
}

START_TEST(test_open_revs_multipart)
/* open_revs as multipart/mixed: a JSON part per plain revision, a
 * nested multipart/related with the attachment's bytes when it has one,
 * and error="true" parts for missing revisions. */
{
	const char *hs[] = { "Accept: multipart/mixed", NULL };
	char rev[96], path[512], ct[256], ob[128], ib[128];
	struct part outer[8], inner[8];
	struct json_object *j, *a;
	size_t n;
	struct resp r;

	make_tree();
	put_ok("/db/w", "{\"_attachments\":{\"f.txt\":{\"content_type\":"
	       "\"text/plain\",\"data\":\"aGVsbG8gd29ybGQ=\"}},\"k\":1}", rev);
	snprintf(path, sizeof(path), "/db/w?revs=true&open_revs=%%5B%%22%s%%22,"
		 "%%229-zz%%22%%5D", rev);
	req("GET", path, NULL, NULL, 0, hs, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(resp_header(&r, "Content-Type", ct, sizeof(ct)));
	ck_assert(!strncmp(ct, "multipart/mixed", 15));
	boundary_of(ct, ob, sizeof(ob));
	n = split_parts(r.body, r.len, ob, outer, 8);
	ck_assert_uint_eq(n, 2);
	ck_assert_ptr_nonnull(memmem(outer[0].hdr, outer[0].hlen,
				     "multipart/related", 17));
	memcpy(ct, outer[0].hdr, outer[0].hlen);
	ct[outer[0].hlen] = '\0';
	boundary_of(ct, ib, sizeof(ib));
	n = split_parts(outer[0].data, outer[0].len, ib, inner, 8);
	ck_assert_uint_eq(n, 2);
	ck_assert_ptr_nonnull(memmem(inner[0].hdr, inner[0].hlen,
				     "application/json", 16));
	j = parse_n(inner[0].data,
				  (int)inner[0].len);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(st_str(j, "_rev"), rev);
	ck_assert_ptr_nonnull(member(j, "_revisions"));
	a = member(member(j, "_attachments"), "f.txt");
	ck_assert(json_object_get_boolean(member(a, "follows")));
	ck_assert_int_eq(json_object_get_int(member(a, "length")), 11);
	json_object_put(j);
	ck_assert_ptr_nonnull(memmem(inner[1].hdr, inner[1].hlen,
				     "filename=\"f.txt\"", 16));
	ck_assert_uint_eq(inner[1].len, 11);
	ck_assert_int_eq(memcmp(inner[1].data, "hello world", 11), 0);
	ck_assert_ptr_nonnull(memmem(outer[1].hdr, outer[1].hlen,
				     "error=\"true\"", 12));
	ck_assert_int_eq(memcmp(outer[1].data, "{\"missing\":\"9-zz\"}", 18), 0);
	resp_free(&r);

	/* atts_since the revision itself: the attachment is a stub and no
	 * nested multipart is sent */
	snprintf(path, sizeof(path), "/db/w?open_revs=%%5B%%22%s%%22%%5D&"
		 "atts_since=%%5B%%22%s%%22%%5D", rev, rev);
	req("GET", path, NULL, NULL, 0, hs, &r);
	ck_assert_int_eq(r.status, 200);
	resp_header(&r, "Content-Type", ct, sizeof(ct));
	boundary_of(ct, ob, sizeof(ob));
	ck_assert_uint_eq(split_parts(r.body, r.len, ob, outer, 8), 1);
	ck_assert_ptr_nonnull(memmem(outer[0].hdr, outer[0].hlen,
				     "Content-Type: application/json", 30));
	j = parse_n(outer[0].data, (int)outer[0].len);
	a = member(member(j, "_attachments"), "f.txt");
	ck_assert(json_object_get_boolean(member(a, "stub")));
	json_object_put(j);
	resp_free(&r);

	/* all leaves of the tree, each a plain JSON part */
	req("GET", "/db/t?open_revs=all", NULL, NULL, 0, hs, &r);
	ck_assert_int_eq(r.status, 200);
	resp_header(&r, "Content-Type", ct, sizeof(ct));
	boundary_of(ct, ob, sizeof(ob));
	n = split_parts(r.body, r.len, ob, outer, 8);
	ck_assert_uint_eq(n, 3);
	for (size_t i = 0; i < n; i++) {
		ck_assert_ptr_nonnull(memmem(outer[i].hdr, outer[i].hlen,
					     "Content-Type: application/json", 30));
		j = parse_n(outer[i].data,
					  (int)outer[i].len);
		ck_assert_ptr_nonnull(j);
		ck_assert_str_eq(st_str(j, "_id"), "t");
		json_object_put(j);
	}
	resp_free(&r);
}
END_TEST

/* ---- attachments ---- */

START_TEST(test_atts_inline_and_since)
/* Attachments as stubs, inline with attachments=true, and with
 * atts_since only those newer than the revisions given carry data. */
{
	char r1[96], r2[96], path[512];
	struct json_object *j, *a, *b;

	put_ok("/db/ai", "{\"_attachments\":{\"a.txt\":{\"content_type\":"
	       "\"text/plain\",\"data\":\"aGVsbG8=\"}}}", r1);
	snprintf(path, sizeof(path), "/db/ai/b.bin?rev=%s", r1);
	{
		struct resp r;

		req("PUT", path, "application/octet-stream", "\x01\x02\x03", 3,
		    NULL, &r);
		ck_assert_int_eq(r.status, 201);
		j = json_tokener_parse(r.body);
		snprintf(r2, sizeof(r2), "%s", st_str(j, "rev"));
		json_object_put(j);
		resp_free(&r);
	}
	ck_assert_int_eq(jreq("GET", "/db/ai", NULL, NULL, &j), 200);
	a = member(member(j, "_attachments"), "a.txt");
	ck_assert(json_object_get_boolean(member(a, "stub")));
	ck_assert_str_eq(st_str(a, "content_type"), "text/plain");
	ck_assert_int_eq(json_object_get_int(member(a, "length")), 5);
	ck_assert_int_eq(json_object_get_int(member(a, "revpos")), 1);
	ck_assert(!strncmp(st_str(a, "digest"), "md5-", 4));
	ck_assert_ptr_null(member(a, "data"));
	b = member(member(j, "_attachments"), "b.bin");
	ck_assert_int_eq(json_object_get_int(member(b, "revpos")), 2);
	json_object_put(j);

	ck_assert_int_eq(jreq("GET", "/db/ai?attachments=true", NULL, NULL, &j),
			 200);
	a = member(member(j, "_attachments"), "a.txt");
	ck_assert_str_eq(st_str(a, "data"), "aGVsbG8=");
	ck_assert_ptr_null(member(a, "stub"));
	b = member(member(j, "_attachments"), "b.bin");
	ck_assert_str_eq(st_str(b, "data"), "AQID");
	json_object_put(j);

	snprintf(path, sizeof(path), "/db/ai?atts_since=%%5B%%22%s%%22,"
		 "%%229-zz%%22%%5D", r1);
	ck_assert_int_eq(jreq("GET", path, NULL, NULL, &j), 200);
	a = member(member(j, "_attachments"), "a.txt");
	ck_assert(json_object_get_boolean(member(a, "stub")));
	b = member(member(j, "_attachments"), "b.bin");
	ck_assert_str_eq(st_str(b, "data"), "AQID");
	json_object_put(j);
	/* since the current revision: all stubs */
	snprintf(path, sizeof(path), "/db/ai?atts_since=%%5B%%22%s%%22%%5D", r2);
	ck_assert_int_eq(jreq("GET", path, NULL, NULL, &j), 200);
	b = member(member(j, "_attachments"), "b.bin");
	ck_assert(json_object_get_boolean(member(b, "stub")));
	json_object_put(j);
	/* since an unrelated revision: all data */
	ck_assert_int_eq(jreq("GET", "/db/ai?atts_since=%5B%229-zz%22%5D", NULL,
			      NULL, &j), 200);
	a = member(member(j, "_attachments"), "a.txt");
	ck_assert_str_eq(st_str(a, "data"), "aGVsbG8=");
	json_object_put(j);
}
END_TEST

START_TEST(test_att_put_get_delete)
/* Attachment PUT creates or edits a document keeping the others, GET
 * streams it with its type and digest, Range gives 206 or 416, DELETE
 * removes it; stale and missing revisions are refused. */
{
	char r1[96], r2[96], r3[96], path[512], buf[256];
	const char *hs[2] = { buf, NULL };
	struct json_object *j;
	struct resp r;

	req("PUT", "/db/ad/hello.txt", "text/plain", "0123456789", 10, NULL, &r);
	ck_assert_int_eq(r.status, 201);
	ck_assert_ptr_nonnull(resp_header(&r, "Location", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "/db/ad/hello.txt"));
	j = json_tokener_parse(r.body);
	snprintf(r1, sizeof(r1), "%s", st_str(j, "rev"));
	json_object_put(j);
	resp_free(&r);
	/* no rev on an existing document: conflict */
	req("PUT", "/db/ad/other.txt", "text/plain", "x", 1, NULL, &r);
	ck_assert_int_eq(r.status, 409);
	resp_free(&r);
	snprintf(path, sizeof(path), "/db/ad/sub%%2Fdir.bin?rev=%s", r1);
	req("PUT", path, NULL, "abc", 3, NULL, &r);
	ck_assert_int_eq(r.status, 201);
	j = json_tokener_parse(r.body);
	snprintf(r2, sizeof(r2), "%s", st_str(j, "rev"));
	json_object_put(j);
	resp_free(&r);
	/* a stale rev conflicts */
	snprintf(path, sizeof(path), "/db/ad/x.txt?rev=%s", r1);
	req("PUT", path, "text/plain", "x", 1, NULL, &r);
	ck_assert_int_eq(r.status, 409);
	resp_free(&r);

	req("GET", "/db/ad/hello.txt", NULL, NULL, 0, NULL, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_uint_eq(r.len, 10);
	ck_assert_int_eq(memcmp(r.body, "0123456789", 10), 0);
	ck_assert_str_eq(resp_header(&r, "Content-Type", buf, sizeof(buf)),
			 "text/plain");
	ck_assert_str_eq(resp_header(&r, "Accept-Ranges", buf, sizeof(buf)),
			 "bytes");
	ck_assert_ptr_nonnull(resp_header(&r, "ETag", buf, sizeof(buf)));
	ck_assert_int_eq(buf[0], '"');
	memmove(buf + strlen("If-None-Match: "), buf, strlen(buf) + 1);
	memcpy(buf, "If-None-Match: ", strlen("If-None-Match: "));
	resp_free(&r);
	req("GET", "/db/ad/hello.txt", NULL, NULL, 0, hs, &r);
	ck_assert_int_eq(r.status, 304);
	resp_free(&r);
	req("GET", "/db/ad/sub/dir.bin", NULL, NULL, 0, NULL, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(resp_header(&r, "Content-Type", buf, sizeof(buf)),
			 "application/x-www-form-urlencoded");
	ck_assert_int_eq(memcmp(r.body, "abc", 3), 0);
	resp_free(&r);
	req("HEAD", "/db/ad/hello.txt", NULL, NULL, 0, NULL, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(resp_header(&r, "Content-Length", buf, sizeof(buf)),
			 "10");
	resp_free(&r);
	/* the first revision still has only the first attachment */
	snprintf(path, sizeof(path), "/db/ad/sub%%2Fdir.bin?rev=%s", r1);
	expect_error(jreq("GET", path, NULL, NULL, &j), j, 404, "not_found",
		     "Document is missing attachment");

	/* ranges */
	snprintf(buf, sizeof(buf), "Range: bytes=2-5");
	req("GET", "/db/ad/hello.txt", NULL, NULL, 0, hs, &r);
	ck_assert_int_eq(r.status, 206);
	ck_assert_uint_eq(r.len, 4);
	ck_assert_int_eq(memcmp(r.body, "2345", 4), 0);
	ck_assert_str_eq(resp_header(&r, "Content-Range", path, sizeof(path)),
			 "bytes 2-5/10");
	resp_free(&r);
	snprintf(buf, sizeof(buf), "Range: bytes=-3");
	req("GET", "/db/ad/hello.txt", NULL, NULL, 0, hs, &r);
	ck_assert_int_eq(r.status, 206);
	ck_assert_int_eq(memcmp(r.body, "789", 3), 0);
	resp_free(&r);
	snprintf(buf, sizeof(buf), "Range: bytes=7-100");
	req("GET", "/db/ad/hello.txt", NULL, NULL, 0, hs, &r);
	ck_assert_int_eq(r.status, 206);
	ck_assert_str_eq(resp_header(&r, "Content-Range", path, sizeof(path)),
			 "bytes 7-9/10");
	resp_free(&r);
	snprintf(buf, sizeof(buf), "Range: bytes=10-20");
	expect_error(jreq("GET", "/db/ad/hello.txt", NULL, hs, &j), j, 416,
		     "requested_range_not_satisfiable", NULL);
	snprintf(buf, sizeof(buf), "Range: bytes=5-2");
	expect_error(jreq("GET", "/db/ad/hello.txt", NULL, hs, &j), j, 416,
		     "requested_range_not_satisfiable", NULL);

	/* DELETE: needs the rev; a missing attachment is 404 */
	expect_error(jreq("DELETE", "/db/ad/hello.txt", NULL, NULL, &j), j, 409,
		     "conflict", NULL);
	snprintf(path, sizeof(path), "/db/ad/nope.txt?rev=%s", r2);
	expect_error(jreq("DELETE", path, NULL, NULL, &j), j, 404, "not_found",
		     "Document is missing attachment");
	snprintf(path, sizeof(path), "/db/ad/hello.txt?rev=%s", r2);
	ck_assert_int_eq(jreq("DELETE", path, NULL, NULL, &j), 200);
	snprintf(r3, sizeof(r3), "%s", st_str(j, "rev"));
	ck_assert(!strncmp(r3, "3-", 2));
	json_object_put(j);
	expect_error(jreq("GET", "/db/ad/hello.txt", NULL, NULL, &j), j, 404,
		     "not_found", "Document is missing attachment");
	ck_assert_int_eq(jreq("GET", "/db/ad", NULL, NULL, &j), 200);
	ck_assert_int_eq(json_object_object_length(member(j, "_attachments")), 1);
	json_object_put(j);
	expect_error(jreq("GET", "/db/none/a.txt", NULL, NULL, &j), j, 404,
		     "not_found", "missing");
}
END_TEST

START_TEST(test_att_5mib)
/* A 5 MiB attachment goes in and comes out intact, whole, by range and
 * inline as base64. */
{
	size_t len = 5 * MiB + 7;
	uint8_t *data = malloc(len);
	char buf[128];
	const char *hs[2] = { buf, NULL };
	struct json_object *j;
	struct resp r;
	char *enc;

	ck_assert_ptr_nonnull(data);
	fill(data, len, 5);
	req("PUT", "/db/big/blob.bin", "application/octet-stream",
	    (const char *)data, len, NULL, &r);
	ck_assert_int_eq(r.status, 201);
	resp_free(&r);
	req("GET", "/db/big/blob.bin", NULL, NULL, 0, NULL, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_uint_eq(r.len, len);
	ck_assert_int_eq(memcmp(r.body, data, len), 0);
	resp_free(&r);
	snprintf(buf, sizeof(buf), "Range: bytes=%zu-%zu", len - 1000, len - 1);
	req("GET", "/db/big/blob.bin", NULL, NULL, 0, hs, &r);
	ck_assert_int_eq(r.status, 206);
	ck_assert_uint_eq(r.len, 1000);
	ck_assert_int_eq(memcmp(r.body, data + len - 1000, 1000), 0);
	resp_free(&r);
	ck_assert_int_eq(jreq("GET", "/db/big?attachments=true", NULL, NULL, &j),
			 200);
	enc = b64(data, len);
	ck_assert_str_eq(st_str(member(member(j, "_attachments"), "blob.bin"),
				"data"), enc);
	free(enc);
	json_object_put(j);
	free(data);
}
END_TEST

/* A multipart/related body: the JSON, then each attachment. */
static char *multipart_body(const char *json, const char *const *atts,
			    const size_t *lens, size_t n, size_t *len)
{
	size_t cap = strlen(json) + 512, off = 0;
	char *b;

	for (size_t i = 0; i < n; i++)
		cap += lens[i] + 256;
	b = malloc(cap);
	ck_assert_ptr_nonnull(b);
	off += (size_t)snprintf(b + off, cap - off, "--XyZ\r\nContent-Type: "
				"application/json\r\n\r\n%s", json);
	for (size_t i = 0; i < n; i++) {
		off += (size_t)snprintf(b + off, cap - off, "\r\n--XyZ\r\n"
					"Content-Length: %zu\r\n\r\n", lens[i]);
		memcpy(b + off, atts[i], lens[i]);
		off += lens[i];
	}
	off += (size_t)snprintf(b + off, cap - off, "\r\n--XyZ--");
	*len = off;
	return b;
}

START_TEST(test_multipart_put)
/* A multipart/related PUT (CouchDB's replicator pushes attachments so)
 * stores each part as the attachment that follows, in order; a replicated
 * one keeps its revision and revpos; mismatches are 400. */
{
	const char *parts[2] = { "first\r\n--XyZ-not-a-boundary", "second" };
	size_t lens[2] = { strlen(parts[0]), 6 }, len;
	struct json_object *j;
	struct resp r;
	char *body;

	body = multipart_body("{\"k\":1,\"_attachments\":{\"one.txt\":{"
			      "\"follows\":true,\"content_type\":\"text/plain\","
			      "\"length\":27},\"two\":{\"follows\":true,"
			      "\"content_type\":\"application/x-two\"}}}",
			      parts, lens, 2, &len);
	req("PUT", "/db/mp", "multipart/related; boundary=\"XyZ\"", body, len,
	    NULL, &r);
	ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
	resp_free(&r);
	free(body);
	req("GET", "/db/mp/one.txt", NULL, NULL, 0, NULL, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_uint_eq(r.len, lens[0]);
	ck_assert_int_eq(memcmp(r.body, parts[0], lens[0]), 0);
	resp_free(&r);
	ck_assert_int_eq(jreq("GET", "/db/mp", NULL, NULL, &j), 200);
	ck_assert_int_eq(json_object_get_int(member(j, "k")), 1);
	ck_assert_str_eq(st_str(member(member(j, "_attachments"), "two"),
				"content_type"), "application/x-two");
	json_object_put(j);

	/* replicated: the revision and revpos are kept */
	body = multipart_body("{\"_rev\":\"2-bb\",\"_revisions\":{\"start\":2,"
			      "\"ids\":[\"bb\",\"aa\"]},\"_attachments\":{\"f\":{"
			      "\"follows\":true,\"content_type\":\"text/plain\","
			      "\"revpos\":1,\"digest\":\"md5-x\"}}}",
			      parts + 1, lens + 1, 1, &len);
	req("PUT", "/db/mr?new_edits=false", "multipart/related; boundary=XyZ",
	    body, len, NULL, &r);
	ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
	resp_free(&r);
	free(body);
	ck_assert_int_eq(jreq("GET", "/db/mr", NULL, NULL, &j), 200);
	ck_assert_str_eq(st_str(j, "_rev"), "2-bb");
	ck_assert_int_eq(json_object_get_int(member(member(member(j,
			 "_attachments"), "f"), "revpos")), 1);
	json_object_put(j);

	/* a part too few, a wrong length, no boundary, bad JSON */
	body = multipart_body("{\"_attachments\":{\"a\":{\"follows\":true},"
			      "\"b\":{\"follows\":true}}}", parts, lens, 1, &len);
	req("PUT", "/db/bad", "multipart/related; boundary=\"XyZ\"", body, len,
	    NULL, &r);
	ck_assert_int_eq(r.status, 400);
	resp_free(&r);
	req("PUT", "/db/bad", "multipart/related", body, len, NULL, &r);
	ck_assert_int_eq(r.status, 400);
	resp_free(&r);
	free(body);
	body = multipart_body("{\"_attachments\":{\"a\":{\"follows\":true,"
			      "\"length\":3}}}", parts + 1, lens + 1, 1, &len);
	req("PUT", "/db/bad", "multipart/related; boundary=\"XyZ\"", body, len,
	    NULL, &r);
	ck_assert_int_eq(r.status, 400);
	resp_free(&r);
	free(body);
	body = multipart_body("{nope", NULL, NULL, 0, &len);
	req("PUT", "/db/bad", "multipart/related; boundary=\"XyZ\"", body, len,
	    NULL, &r);
	ck_assert_int_eq(r.status, 400);
	resp_free(&r);
	free(body);
	req("PUT", "/db/bad", "multipart/related; boundary=\"XyZ\"", "junk", 4,
	    NULL, &r);
	ck_assert_int_eq(r.status, 400);
	resp_free(&r);
	expect_error(jreq("GET", "/db/bad", NULL, NULL, &j), j, 404,
		     "not_found", "missing");
}
END_TEST

START_TEST(test_copy)
/* COPY makes a new document from a revision, with its attachments. */
{
	char r1[96], buf[160];
	const char *hs[2] = { buf, NULL };
	struct json_object *j;

	put_ok("/db/src", "{\"_attachments\":{\"a\":{\"content_type\":"
	       "\"text/plain\",\"data\":\"aGk=\"}},\"v\":1}", r1);
	snprintf(buf, sizeof(buf), "Destination: dst");
	ck_assert_int_eq(jreq("COPY", "/db/src", NULL, hs, &j), 201);
	json_object_put(j);
	ck_assert_int_eq(jreq("GET", "/db/dst?attachments=true", NULL, NULL, &j),
			 200);
	ck_assert_int_eq(json_object_get_int(member(j, "v")), 1);
	ck_assert_str_eq(st_str(member(member(j, "_attachments"), "a"), "data"),
			 "aGk=");
	json_object_put(j);
	expect_error(jreq("COPY", "/db/src", NULL, hs, &j), j, 409, "conflict",
		     NULL);
	expect_error(jreq("COPY", "/db/src", NULL, NULL, &j), j, 400,
		     "bad_request", NULL);
	snprintf(buf, sizeof(buf), "Destination: _bad");
	expect_error(jreq("COPY", "/db/src", NULL, hs, &j), j, 400,
		     "illegal_docid", NULL);
	snprintf(buf, sizeof(buf), "Destination: bad%%zz");
	expect_error(jreq("COPY", "/db/src", NULL, hs, &j), j, 400,
		     "bad_request", "Invalid percent-encoding in the "
		     "Destination header");
	/* an escaped destination is the decoded id */
	snprintf(buf, sizeof(buf), "Destination: a%%20b%%2Fc");
	ck_assert_int_eq(jreq("COPY", "/db/src", NULL, hs, &j), 201);
	ck_assert_str_eq(st_str(j, "id"), "a b/c");
	json_object_put(j);
	/* to an existing document, with its rev */
	ck_assert_int_eq(jreq("GET", "/db/dst", NULL, NULL, &j), 200);
	snprintf(buf, sizeof(buf), "Destination: dst?rev=%s", st_str(j, "_rev"));
	json_object_put(j);
	ck_assert_int_eq(jreq("COPY", "/db/src", NULL, hs, &j), 201);
	ck_assert(!strncmp(st_str(j, "rev"), "2-", 2));
	json_object_put(j);
}
END_TEST

START_TEST(test_bulk_get)
/* _bulk_get: every leaf without rev, a given rev, latest, attachments
 * and atts_since per item, and CouchDB's error entries. */
{
	char rw[96], body[1024];
	struct json_object *j, *res, *docs, *e;

	make_tree();
	put_ok("/db/w", "{\"_attachments\":{\"f.txt\":{\"content_type\":"
	       "\"text/plain\",\"data\":\"aGVsbG8=\"}}}", rw);
	snprintf(body, sizeof(body), "{\"docs\":["
		 "{\"id\":\"t\"},"
		 "{\"id\":\"t\",\"rev\":\"2-e2\"},"
		 "{\"id\":\"nope\"},"
		 "{\"id\":\"t\",\"rev\":\"9-zz\"},"
		 "{\"id\":\"t\",\"rev\":\"bad\"},"
		 "{\"rev\":\"1-a\"},"
		 "{\"id\":\"w\"},"
		 "{\"id\":\"w\",\"atts_since\":[\"%s\"]},"
		 "{\"id\":\"t\",\"rev\":\"2-b2\"}]}", rw);
	ck_assert_int_eq(jreq("POST", "/db/_bulk_get?revs=true&attachments=true"
			      "&latest=true", body, NULL, &j), 200);
	res = member(j, "results");
	ck_assert_int_eq(json_object_array_length(res), 9);
	/* every leaf of t */
	e = json_object_array_get_idx(res, 0);
	ck_assert_str_eq(st_str(e, "id"), "t");
	docs = member(e, "docs");
	ck_assert_int_eq(json_object_array_length(docs), 3);
	ck_assert_str_eq(st_str(member(json_object_array_get_idx(docs, 0), "ok"),
				"_rev"), "3-c3");
	ck_assert_ptr_nonnull(member(member(json_object_array_get_idx(docs, 0),
					    "ok"), "_revisions"));
	/* one revision */
	docs = member(json_object_array_get_idx(res, 1), "docs");
	ck_assert_int_eq(json_object_array_length(docs), 1);
	ck_assert_str_eq(st_str(member(json_object_array_get_idx(docs, 0), "ok"),
				"v"), "e");
	/* a missing document */
	e = member(json_object_array_get_idx(member(json_object_array_get_idx(
		   res, 2), "docs"), 0), "error");
	ck_assert_str_eq(st_str(e, "id"), "nope");
	ck_assert_str_eq(st_str(e, "rev"), "undefined");
	ck_assert_str_eq(st_str(e, "error"), "not_found");
	ck_assert_str_eq(st_str(e, "reason"), "missing");
	/* a missing revision */
	e = member(json_object_array_get_idx(member(json_object_array_get_idx(
		   res, 3), "docs"), 0), "error");
	ck_assert_str_eq(st_str(e, "rev"), "9-zz");
	ck_assert_str_eq(st_str(e, "error"), "not_found");
	/* a bad rev, no id */
	e = member(json_object_array_get_idx(member(json_object_array_get_idx(
		   res, 4), "docs"), 0), "error");
	ck_assert_str_eq(st_str(e, "rev"), "bad");
	ck_assert_str_eq(st_str(e, "error"), "bad_request");
	e = json_object_array_get_idx(res, 5);
	ck_assert_ptr_null(member(e, "id"));
	ck_assert_str_eq(st_str(member(json_object_array_get_idx(member(e,
			 "docs"), 0), "error"), "error"), "bad_request");
	/* attachments inline, then as stubs since the current revision */
	e = member(json_object_array_get_idx(member(json_object_array_get_idx(
		   res, 6), "docs"), 0), "ok");
	ck_assert_str_eq(st_str(member(member(e, "_attachments"), "f.txt"),
				"data"), "aGVsbG8=");
	e = member(json_object_array_get_idx(member(json_object_array_get_idx(
		   res, 7), "docs"), 0), "ok");
	ck_assert(json_object_get_boolean(member(member(member(e,
			"_attachments"), "f.txt"), "stub")));
	/* latest: 2-b2 has no body, its leaf 3-c3 is given */
	e = member(json_object_array_get_idx(member(json_object_array_get_idx(
		   res, 8), "docs"), 0), "ok");
	ck_assert_str_eq(st_str(e, "_rev"), "3-c3");
	json_object_put(j);

	/* without latest, 2-b2 is missing */
	ck_assert_int_eq(jreq("POST", "/db/_bulk_get", "{\"docs\":[{\"id\":\"t\","
			      "\"rev\":\"2-b2\"}]}", NULL, &j), 200);
	e = member(json_object_array_get_idx(member(json_object_array_get_idx(
		   member(j, "results"), 0), "docs"), 0), "error");
	ck_assert_str_eq(st_str(e, "reason"), "missing");
	json_object_put(j);
}
END_TEST

START_TEST(test_render_direct)
/* api_render_doc() as _changes?include_docs uses it: with a NULL
 * snapshot, inline attachments and the tree read on demand. */
{
	struct api_render o = { .revs = true, .conflicts = true,
				.attachments = true };
	struct json_object *j;
	struct docdb *d;
	struct doc doc = { 0 };
	void *hold;

	make_tree();
	put_ok("/db/w", "{\"_attachments\":{\"f\":{\"content_type\":"
	       "\"text/plain\",\"data\":\"aGk=\"}}}", NULL);
	OK(T.cat->acquire(T.cat->arg, "db", &d, &hold));
	OK(docdb_get(d, NULL, "t", 1, NULL, 0, &doc));
	OK(api_render_doc(d, NULL, &doc, &o, &j));
	ck_assert_str_eq(st_str(j, "_rev"), "3-c3");
	ck_assert_ptr_nonnull(member(j, "_revisions"));
	ck_assert_ptr_nonnull(member(j, "_conflicts"));
	json_object_put(j);
	doc_release(&doc);
	OK(docdb_get(d, NULL, "w", 1, NULL, 0, &doc));
	OK(api_render_doc(d, NULL, &doc, NULL, &j));
	ck_assert(json_object_get_boolean(member(member(member(j,
			"_attachments"), "f"), "stub")));
	json_object_put(j);
	OK(api_render_doc(d, NULL, &doc, &o, &j));
	ck_assert_str_eq(st_str(member(member(j, "_attachments"), "f"), "data"),
			 "aGk=");
	json_object_put(j);
	doc_release(&doc);
	T.cat->release(T.cat->arg, hold);
}
END_TEST

static Suite *api_doc_suite(void)
{
	Suite *s = suite_create("api_doc");
	TCase *tc = tcase_create("api_doc");

	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_add_checked_fixture(tc, srv_setup, srv_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_put_get_roundtrip);
	tcase_add_test(tc, test_put_rev_rules);
	tcase_add_test(tc, test_bad_input);
	tcase_add_test(tc, test_delete_and_missing);
	tcase_add_test(tc, test_tree_options);
	tcase_add_test(tc, test_revs_limit);
	tcase_add_test(tc, test_open_revs_json);
	tcase_add_test(tc, test_open_revs_multipart);
	tcase_add_test(tc, test_atts_inline_and_since);
	tcase_add_test(tc, test_att_put_get_delete);
	tcase_add_test(tc, test_att_5mib);
	tcase_add_test(tc, test_multipart_put);
	tcase_add_test(tc, test_copy);
	tcase_add_test(tc, test_bulk_get);
	tcase_add_test(tc, test_render_direct);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return st_main(api_doc_suite());
}
