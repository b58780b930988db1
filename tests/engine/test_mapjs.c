#include "config.h"

/*
 * The JavaScript sandbox of views (engine/mapjs.h): emits of every JSON
 * type, several functions and emits per document, errors that skip one
 * document, the time limit (runaway loops of several kinds) and the
 * memory limit with the context usable afterwards, the absence of I/O
 * globals, CouchDB's helpers and log(), the built-in reduces and a
 * JavaScript reduce with rereduce, bad sources and documents, and a
 * throughput figure.
 */

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/error.h"
#include "engine/mapjs.h"
#include "tests/engine/testenv.h"

#define EXPECT_RC(expr, want)                                            \
	do {                                                             \
		int rc_ = (expr);                                        \
		ck_assert_msg(rc_ == (want), "%s returned %d (%s), want %d (%s)", \
			      #expr, rc_, barrel_strerror(rc_), (int)(want), \
			      barrel_strerror(want));                    \
	} while (0)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct mapjs *ctx_new(unsigned timeout_ms, size_t mem)
{
	struct mapjs_opts o;
	struct mapjs *m = NULL;

	memset(&o, 0, sizeof(o));
	o.timeout_ms = timeout_ms;
	o.mem_limit = mem;
	OK(mapjs_new(&o, &m));
	return m;
}

static int add_map(struct mapjs *m, const char *src)
{
	int fn = mapjs_add_map(m, src, strlen(src));

	ck_assert_msg(fn >= 0, "add_map: %d %s", fn, mapjs_errmsg(m));
	return fn;
}

static int add_reduce(struct mapjs *m, const char *src)
{
	int fn = mapjs_add_reduce(m, src, strlen(src));

	ck_assert_msg(fn >= 0, "add_reduce: %d %s", fn, mapjs_errmsg(m));
	return fn;
}

/* Map doc and return the single function's result (asserting count). */
static const struct mapjs_result *map1(struct mapjs *m, const char *doc)
{
	const struct mapjs_result *res = NULL;
	size_t n = 0;

	OK(mapjs_map(m, doc, strlen(doc), &res, &n));
	ck_assert_uint_eq(n, 1);
	return &res[0];
}

static void expect_kv(const struct mapjs_kv *kv, const char *key,
		      const char *value)
{
	ck_assert_str_eq(kv->key, key);
	ck_assert_uint_eq(kv->keylen, strlen(key));
	ck_assert_str_eq(kv->value, value);
	ck_assert_uint_eq(kv->valuelen, strlen(value));
}

/* Every JSON type goes through emit; undefined and functions become null. */
START_TEST(test_emit_types)
{
	struct mapjs *m = ctx_new(0, 0);
	const struct mapjs_result *r;

	add_map(m, "function(doc) {\n"
		   "  emit(null, null); emit(false, true); emit(1.5, -2);\n"
		   "  emit('s', 't\\u00e9'); emit([1, 'a'], {k: [null]});\n"
		   "  emit(doc._id, undefined); emit({a: 1}, function () {});\n"
		   "  emit(1e21, 0.1); emit('\\ud83d\\ude00', doc.e);\n"
		   "}");
	r = map1(m, "{\"_id\":\"d1\",\"_rev\":\"1-a\",\"e\":\"\xc3\xa9\"}");
	EXPECT_RC(r->err, 0);
	ck_assert_str_eq(r->msg, "");
	ck_assert_uint_eq(r->nkv, 9);
	expect_kv(&r->kv[0], "null", "null");
	expect_kv(&r->kv[1], "false", "true");
	expect_kv(&r->kv[2], "1.5", "-2");
	expect_kv(&r->kv[3], "\"s\"", "\"t\xc3\xa9\"");
	expect_kv(&r->kv[4], "[1,\"a\"]", "{\"k\":[null]}");
	expect_kv(&r->kv[5], "\"d1\"", "null");
	expect_kv(&r->kv[6], "{\"a\":1}", "null");
	expect_kv(&r->kv[7], "1e+21", "0.1");
	expect_kv(&r->kv[8], "\"\xf0\x9f\x98\x80\"", "\"\xc3\xa9\"");
	mapjs_free(m);
}
END_TEST

/* Two functions, several emits each, over several documents, in order. */
START_TEST(test_several_functions)
{
	struct mapjs *m = ctx_new(0, 0);
	const struct mapjs_result *res;
	size_t n;
	int f0, f1, red;

	f0 = add_map(m, "function(doc) { for (var i = 0; i < doc.n; i++) "
			"emit([doc._id, i], i * i); }");
	red = add_reduce(m, "_count");
	f1 = add_map(m, "function(doc) { if (doc.n > 1) emit(doc.n, null); }");
	ck_assert_int_eq(f0, 0);
	ck_assert_int_eq(red, 1);
	ck_assert_int_eq(f1, 2);
	for (int d = 0; d < 5; d++) {
		char doc[64], key[32], val[16];

		snprintf(doc, sizeof(doc), "{\"_id\":\"x%d\",\"n\":%d}", d, d);
		OK(mapjs_map(m, doc, strlen(doc), &res, &n));
		ck_assert_uint_eq(n, 2);
		ck_assert_int_eq(res[0].fn, f0);
		ck_assert_int_eq(res[1].fn, f1);
		ck_assert_uint_eq(res[0].nkv, (size_t)d);
		for (int i = 0; i < d; i++) {
			snprintf(key, sizeof(key), "[\"x%d\",%d]", d, i);
			snprintf(val, sizeof(val), "%d", i * i);
			expect_kv(&res[0].kv[i], key, val);
		}
		ck_assert_uint_eq(res[1].nkv, d > 1 ? 1u : 0u);
	}
	mapjs_free(m);
}
END_TEST

/* A throw skips that document for that function only, with the JS text. */
START_TEST(test_throw_skips_document)
{
	struct mapjs *m = ctx_new(0, 0);
	const struct mapjs_result *res;
	size_t n;
	const char *bad = "{\"_id\":\"b\",\"bad\":true}";
	const char *good = "{\"_id\":\"g\"}";

	add_map(m, "function(doc) { emit('before', 1);\n"
		   "  if (doc.bad) throw new TypeError('no good: ' + doc._id);\n"
		   "  emit(doc._id, 1); }");
	add_map(m, "function(doc) { emit(doc._id, doc.bad.length); }");
	OK(mapjs_map(m, bad, strlen(bad), &res, &n));
	ck_assert_uint_eq(n, 2);
	EXPECT_RC(res[0].err, BARREL_E_INVALID);
	ck_assert_msg(strstr(res[0].msg, "TypeError: no good: b"), "%s",
		      res[0].msg);
	ck_assert_uint_eq(res[0].nkv, 0);     /* 'before' is dropped too */
	EXPECT_RC(res[1].err, 0);
	expect_kv(&res[1].kv[0], "\"b\"", "null");
	OK(mapjs_map(m, good, strlen(good), &res, &n));
	EXPECT_RC(res[0].err, 0);
	ck_assert_uint_eq(res[0].nkv, 2);
	EXPECT_RC(res[1].err, BARREL_E_INVALID);
	ck_assert_msg(strstr(res[1].msg, "TypeError"), "%s", res[1].msg);
	ck_assert_uint_eq(mapjs_resets(m), 0);
	mapjs_free(m);
}
END_TEST

/* Runaway loops of several kinds stop within the limit; the next doc maps. */
START_TEST(test_time_limit)
{
	static const char *const loops[] = {
		"while (true) {}",
		"for (;;) { var o = {a: [1, 2, 3]}; }",
		"var s = ''; while (true) { s = s + 'x'; if (s.length > 1000) s = ''; }",
		"while (true) { try { throw new Error('x'); } catch (e) {} }",
		"while (true) { new Date(2020, 1, 1).getHours(); Date.now(); }",
		"while (true) { JSON.parse(JSON.stringify({a: [1, 'b']})); }",
		"(function f() { try { f(); } catch (e) { f(); } })();",
		"while (true) { emit(1, 1); }",
	};
	const unsigned limit_ms = 200;

	for (size_t i = 0; i < sizeof(loops) / sizeof(loops[0]); i++) {
		struct mapjs *m = ctx_new(limit_ms, 0);
		const struct mapjs_result *r;
		char src[256];
		double t0, dt;

		snprintf(src, sizeof(src), "function(doc) { if (doc.loop) { %s }"
			 " emit(doc._id, 1); }", loops[i]);
		add_map(m, src);
		t0 = now_s();
		r = map1(m, "{\"_id\":\"spin\",\"loop\":true}");
		dt = now_s() - t0;
		ck_assert_msg(r->err == -ETIMEDOUT || (i == 7 &&
			      r->err == BARREL_E_TOOBIG),
			      "loop %zu: err %d %s", i, r->err, r->msg);
		/* CPU time: generous wall bound for loaded machines */
		ck_assert_msg(dt >= 0.15 && dt < 10.0, "loop %zu took %.3f s",
			      i, dt);
		if (r->err == -ETIMEDOUT)
			ck_assert_msg(strstr(r->msg, "time limit"), "%s", r->msg);
		ck_assert_uint_eq(r->nkv, 0);
		r = map1(m, "{\"_id\":\"next\"}");
		EXPECT_RC(r->err, 0);
		expect_kv(&r->kv[0], "\"next\"", "1");
		mapjs_free(m);
	}
}
END_TEST

/* A timed-out heap is rebuilt: globals reset, functions recompiled. */
START_TEST(test_rebuild_after_timeout)
{
	struct mapjs *m = ctx_new(100, 0);
	const struct mapjs_result *r;

	add_map(m, "function(doc) { if (typeof counter === 'undefined') "
		   "counter = 0; counter++; if (doc.loop) while (1) {} "
		   "emit(doc._id, counter); }");
	r = map1(m, "{\"_id\":\"a\"}");
	expect_kv(&r->kv[0], "\"a\"", "1");
	r = map1(m, "{\"_id\":\"b\"}");
	expect_kv(&r->kv[0], "\"b\"", "2");
	r = map1(m, "{\"_id\":\"c\",\"loop\":1}");
	EXPECT_RC(r->err, -ETIMEDOUT);
	ck_assert_uint_eq(mapjs_resets(m), 1);
	r = map1(m, "{\"_id\":\"d\"}");
	EXPECT_RC(r->err, 0);
	expect_kv(&r->kv[0], "\"d\"", "1");
	mapjs_free(m);
}
END_TEST

/* Memory hogs hit the heap limit; the context maps the next document. */
START_TEST(test_memory_limit)
{
	static const char *const hogs[] = {
		"var a = []; while (true) a.push(new Array(1000).join('x') + a.length);",
		"if (typeof keep === 'undefined') keep = [];"
		" while (true) keep.push({s: 'y' + keep.length, n: [1, 2, 3]});",
		"var s = 'x'; while (true) s = s + s;",
	};

	for (size_t i = 0; i < sizeof(hogs) / sizeof(hogs[0]); i++) {
		struct mapjs *m = ctx_new(5000, 8u << 20);
		const struct mapjs_result *r;
		char src[256];

		snprintf(src, sizeof(src), "function(doc) { if (doc.hog) { %s }"
			 " emit(doc._id, 2); }", hogs[i]);
		add_map(m, src);
		r = map1(m, "{\"_id\":\"hog\",\"hog\":true}");
		ck_assert_msg(r->err == BARREL_E_TOOBIG, "hog %zu: %d %s", i,
			      r->err, r->msg);
		ck_assert_msg(strstr(r->msg, "memory limit"), "%s", r->msg);
		r = map1(m, "{\"_id\":\"after\"}");
		EXPECT_RC(r->err, 0);
		expect_kv(&r->kv[0], "\"after\"", "2");
		mapjs_free(m);
	}
}
END_TEST

/* A hog that catches the RangeError and goes on is stopped by the clock. */
START_TEST(test_memory_hog_catching)
{
	struct mapjs *m = ctx_new(300, 4u << 20);
	const struct mapjs_result *r;

	add_map(m, "function(doc) { if (doc.hog) for (;;) { try { var a = [];"
		   " while (true) a.push('x' + a.length); } catch (e) {} }"
		   " emit(1, 1); }");
	r = map1(m, "{\"hog\":1}");
	ck_assert_msg(r->err == -ETIMEDOUT || r->err == BARREL_E_TOOBIG,
		      "%d %s", r->err, r->msg);
	r = map1(m, "{}");
	EXPECT_RC(r->err, 0);
	mapjs_free(m);
}
END_TEST

/* No I/O or host globals: only ECMAScript and CouchDB's helpers exist. */
START_TEST(test_no_io_globals)
{
	static const char *const allowed[] = {
		"NaN", "Infinity", "undefined", "Object", "Function", "Array",
		"String", "Boolean", "Number", "Date", "RegExp", "Error",
		"EvalError", "RangeError", "ReferenceError", "SyntaxError",
		"TypeError", "URIError", "Math", "JSON", "eval", "parseInt",
		"parseFloat", "isNaN", "isFinite", "decodeURI",
		"decodeURIComponent", "encodeURI", "encodeURIComponent",
		"escape", "unescape", "Symbol", "Proxy", "Reflect",
		"ArrayBuffer", "DataView", "Int8Array", "Uint8Array",
		"Uint8ClampedArray", "Int16Array", "Uint16Array", "Int32Array",
		"Uint32Array", "Float32Array", "Float64Array", "globalThis",
		"emit", "log", "sum", "isArray", "toJSON",
	};
	struct mapjs *m = ctx_new(0, 0);
	const struct mapjs_result *r;

	add_map(m, "function(doc) {\n"
		   "  var g = (function () { return this; })();\n"
		   "  ['require', 'print', 'alert', 'console', 'Duktape',\n"
		   "   'performance', 'TextEncoder', 'TextDecoder', 'process',\n"
		   "   'module', 'exports', 'load', 'readFile', 'XMLHttpRequest',\n"
		   "   'setTimeout'].forEach(function (n) {\n"
		   "    emit(n, typeof g[n]); });\n"
		   "  Object.getOwnPropertyNames(g).forEach(function (n) {\n"
		   "    emit(['global', n], null); });\n"
		   "}");
	r = map1(m, "{}");
	EXPECT_RC(r->err, 0);
	for (size_t i = 0; i < 15; i++)
		ck_assert_msg(strcmp(r->kv[i].value, "\"undefined\"") == 0,
			      "%s is %s", r->kv[i].key, r->kv[i].value);
	for (size_t i = 15; i < r->nkv; i++) {
		bool ok = false;

		for (size_t j = 0; j < sizeof(allowed) / sizeof(allowed[0]); j++) {
			char want[64];

			snprintf(want, sizeof(want), "[\"global\",\"%s\"]",
				 allowed[j]);
			ok = ok || strcmp(r->kv[i].key, want) == 0;
		}
		ck_assert_msg(ok, "unexpected global %s", r->kv[i].key);
	}
	ck_assert_uint_gt(r->nkv, 30);
	mapjs_free(m);
}
END_TEST

struct logs {
	char text[1024];
	int fn;
	int count;
};

static void on_log(void *arg, int fn, const char *msg, size_t len)
{
	struct logs *l = arg;
	size_t have = strlen(l->text);

	l->fn = fn;
	l->count++;
	snprintf(l->text + have, sizeof(l->text) - have, "%.*s|", (int)len,
		 msg);
}

/* sum, isArray, toJSON, JSON and log() behave as CouchDB's. */
START_TEST(test_helpers)
{
	struct logs logs;
	struct mapjs_opts o;
	struct mapjs *m = NULL;
	const struct mapjs_result *r;
	int fn;

	memset(&logs, 0, sizeof(logs));
	memset(&o, 0, sizeof(o));
	o.log = on_log;
	o.log_arg = &logs;
	OK(mapjs_new(&o, &m));
	fn = add_map(m, "function(doc) {\n"
			"  emit('sum', sum([1, 2, 3.5]));\n"
			"  emit('isArray', [isArray([]), isArray({}), isArray('a')]);\n"
			"  emit('toJSON', toJSON({a: [1, 'x']}));\n"
			"  emit('JSON', JSON.parse('{\"b\":2}').b);\n"
			"  log('hello ' + doc._id); log({n: 1}); log(7);\n"
			"}");
	r = map1(m, "{\"_id\":\"h\"}");
	EXPECT_RC(r->err, 0);
	expect_kv(&r->kv[0], "\"sum\"", "6.5");
	expect_kv(&r->kv[1], "\"isArray\"", "[true,false,false]");
	expect_kv(&r->kv[2], "\"toJSON\"", "\"{\\\"a\\\":[1,\\\"x\\\"]}\"");
	expect_kv(&r->kv[3], "\"JSON\"", "2");
	ck_assert_str_eq(logs.text, "hello h|{\"n\":1}|7|");
	ck_assert_int_eq(logs.count, 3);
	ck_assert_int_eq(logs.fn, fn);
	mapjs_free(m);
}
END_TEST

/* Each function sees the document as stored, whatever another did to it. */
START_TEST(test_doc_isolation)
{
	struct mapjs *m = ctx_new(0, 0);
	const struct mapjs_result *res;
	size_t n;
	const char *doc = "{\"_id\":\"i\",\"x\":1,\"a\":[1]}";

	add_map(m, "function(doc) { doc.x = 5; doc.a.push(2); emit(doc.x, doc.a); }");
	add_map(m, "function(doc) { emit(doc.x, doc.a); }");
	OK(mapjs_map(m, doc, strlen(doc), &res, &n));
	expect_kv(&res[0].kv[0], "5", "[1,2]");
	expect_kv(&res[1].kv[0], "1", "[1]");
	mapjs_free(m);
}
END_TEST

static void expect_reduce(struct mapjs *m, int fn, const struct mapjs_row *rows,
			  size_t n, bool rereduce, const char *want)
{
	char *out = NULL;
	size_t len = 0;
	int rc = mapjs_reduce(m, fn, rows, n, rereduce, &out, &len);

	ck_assert_msg(rc == 0, "reduce %d: %d %s", fn, rc, mapjs_errmsg(m));
	ck_assert_str_eq(out, want);
	ck_assert_uint_eq(len, strlen(want));
	free(out);
}

static void rows_of(struct mapjs_row *rows, const char *const *values,
		    size_t n)
{
	for (size_t i = 0; i < n; i++) {
		rows[i].key = "\"k\"";
		rows[i].keylen = 3;
		rows[i].id = "doc";
		rows[i].idlen = 3;
		rows[i].value = values[i];
		rows[i].valuelen = strlen(values[i]);
	}
}

/* _count, _sum and _stats give CouchDB's values, with rereduce. */
START_TEST(test_builtin_reduces)
{
	static const char *const nums[] = { "1", "2.5", "-4", "10" };
	static const char *const arrs[] = { "2", "[3,5,7]", "[0,0,0,42]" };
	static const char *const objs[] = { "{\"a\":1,\"b\":{\"c\":[1,2]}}",
					    "{\"a\":2,\"b\":{\"c\":[3],\"d\":1}}" };
	static const char *const pre[] = {
		"3", "{\"sum\":10,\"count\":2,\"min\":4,\"max\":6,\"sumsqr\":52}" };
	static const char *const sarr[] = { "[1,10]", "[3,-2]" };
	static const char *const counts[] = { "3", "4" };
	static const char *const bad[] = { "1", "\"x\"" };
	static const char *const mixed[] = { "{\"a\":1}", "1" };
	struct mapjs *m = ctx_new(0, 0);
	struct mapjs_row rows[4];
	int cnt = add_reduce(m, "_count"), sum = add_reduce(m, "_sum");
	int stats = add_reduce(m, "_stats");
	char *out = NULL;
	size_t len;

	rows_of(rows, nums, 4);
	expect_reduce(m, cnt, rows, 4, false, "4");
	expect_reduce(m, sum, rows, 4, false, "9.5");
	expect_reduce(m, stats, rows, 4, false,
		      "{\"sum\":9.5,\"count\":4,\"min\":-4,\"max\":10,"
		      "\"sumsqr\":123.25}");
	rows_of(rows, counts, 2);
	expect_reduce(m, cnt, rows, 2, true, "7");
	expect_reduce(m, sum, rows, 2, true, "7");
	rows_of(rows, arrs, 3);
	expect_reduce(m, sum, rows, 3, false, "[5,5,7,42]");
	rows_of(rows, objs, 2);
	expect_reduce(m, sum, rows, 2, false,
		      "{\"a\":3,\"b\":{\"c\":[4,2],\"d\":1}}");
	rows_of(rows, pre, 2);
	expect_reduce(m, stats, rows, 2, true,
		      "{\"sum\":13,\"count\":3,\"min\":3,\"max\":6,\"sumsqr\":61}");
	rows_of(rows, sarr, 2);
	expect_reduce(m, stats, rows, 2, false,
		      "[{\"sum\":4,\"count\":2,\"min\":1,\"max\":3,\"sumsqr\":10},"
		      "{\"sum\":8,\"count\":2,\"min\":-2,\"max\":10,"
		      "\"sumsqr\":104}]");
	expect_reduce(m, cnt, rows, 0, false, "0");
	expect_reduce(m, sum, rows, 0, false, "0");
	rows_of(rows, bad, 2);
	EXPECT_RC(mapjs_reduce(m, sum, rows, 2, false, &out, &len),
		  BARREL_E_INVALID);
	ck_assert_ptr_nonnull(strstr(mapjs_errmsg(m), "_sum function requires"));
	EXPECT_RC(mapjs_reduce(m, stats, rows, 2, false, &out, &len),
		  BARREL_E_INVALID);
	ck_assert_ptr_nonnull(strstr(mapjs_errmsg(m), "_stats"));
	rows_of(rows, mixed, 2);
	EXPECT_RC(mapjs_reduce(m, sum, rows, 2, false, &out, &len),
		  BARREL_E_INVALID);
	rows_of(rows, (const char *const[]){ "{nope" }, 1);
	EXPECT_RC(mapjs_reduce(m, sum, rows, 1, false, &out, &len),
		  BARREL_E_BADJSON);
	rows_of(rows, (const char *const[]){ "1 2" }, 1);
	EXPECT_RC(mapjs_reduce(m, sum, rows, 1, false, &out, &len),
		  BARREL_E_BADJSON);
	rows_of(rows, (const char *const[]){ " 2 \n" }, 1);
	expect_reduce(m, sum, rows, 1, false, "2");
	ck_assert_ptr_null(out);
	mapjs_free(m);
}
END_TEST

/* A JS reduce sees [[key, id], ...] and values; rereduce sees null keys. */
START_TEST(test_js_reduce)
{
	struct mapjs *m = ctx_new(200, 0);
	struct mapjs_row rows[3] = {
		{ "[\"a\",1]", 7, "d\"1", 3, "1", 1 },
		{ "\"b\"", 3, "d2", 2, "2", 1 },
		{ "null", 4, "d3", 2, "3", 1 },
	};
	struct mapjs_row re[2] = {
		{ NULL, 0, NULL, 0, "6", 1 },
		{ NULL, 0, NULL, 0, "10", 2 },
	};
	int echo = add_reduce(m, "function(keys, values, rereduce) {\n"
				 "  return {keys: keys, values: values, re: rereduce}; }");
	int total = add_reduce(m, "function(keys, values, rereduce) {\n"
				  "  return rereduce ? sum(values) * 10 : sum(values); }");
	int thrower = add_reduce(m, "function(k, v) {\n"
				    "  throw new Error('red ' + v.length); }");
	int spin = add_reduce(m, "function(k, v) { while (true) {} }");
	char *out = NULL;
	size_t len;

	expect_reduce(m, echo, rows, 3, false,
		      "{\"keys\":[[[\"a\",1],\"d\\\"1\"],[\"b\",\"d2\"],"
		      "[null,\"d3\"]],\"values\":[1,2,3],\"re\":false}");
	expect_reduce(m, echo, re, 2, true,
		      "{\"keys\":null,\"values\":[6,10],\"re\":true}");
	expect_reduce(m, total, rows, 3, false, "6");
	expect_reduce(m, total, re, 2, true, "160");
	EXPECT_RC(mapjs_reduce(m, thrower, rows, 3, false, &out, &len),
		  BARREL_E_INVALID);
	ck_assert_ptr_nonnull(strstr(mapjs_errmsg(m), "Error: red 3"));
	EXPECT_RC(mapjs_reduce(m, spin, rows, 3, false, &out, &len),
		  -ETIMEDOUT);
	expect_reduce(m, total, rows, 3, false, "6");
	EXPECT_RC(mapjs_reduce(m, 99, rows, 1, false, &out, &len),
		  BARREL_E_INVALID);
	mapjs_free(m);
}
END_TEST

/* Bad sources are clean errors; numbering and other functions go on. */
START_TEST(test_bad_sources)
{
	struct mapjs *m = ctx_new(200, 0);
	const struct mapjs_result *r;
	const char *src;

	src = "function(doc) { emit(doc._id, ; }";
	EXPECT_RC(mapjs_add_map(m, src, strlen(src)), BARREL_E_INVALID);
	ck_assert_msg(strstr(mapjs_errmsg(m), "SyntaxError"), "%s",
		      mapjs_errmsg(m));
	src = "42";
	EXPECT_RC(mapjs_add_map(m, src, strlen(src)), BARREL_E_INVALID);
	ck_assert_msg(strstr(mapjs_errmsg(m), "not a function"), "%s",
		      mapjs_errmsg(m));
	src = "";
	EXPECT_RC(mapjs_add_map(m, src, 0), BARREL_E_INVALID);
	src = "(function () { while (true) {} })()";
	EXPECT_RC(mapjs_add_map(m, src, strlen(src)), -ETIMEDOUT);
	src = "_median";
	EXPECT_RC(mapjs_add_reduce(m, src, strlen(src)), BARREL_E_INVALID);
	src = "function(k, v) {";
	EXPECT_RC(mapjs_add_reduce(m, src, strlen(src)), BARREL_E_INVALID);
	ck_assert_int_eq(add_map(m, "  function (doc) { emit(1, 2); }  \n"), 0);
	ck_assert_int_eq(add_reduce(m, "_sum\n"), 1);
	r = map1(m, "{}");
	EXPECT_RC(r->err, 0);
	expect_kv(&r->kv[0], "1", "2");
	mapjs_free(m);
}
END_TEST

/* A document that is not a JSON object is refused as a whole. */
START_TEST(test_bad_documents)
{
	struct mapjs *m = ctx_new(0, 0);
	const struct mapjs_result *res;
	size_t n;

	add_map(m, "function(doc) { emit(1, 1); }");
	EXPECT_RC(mapjs_map(m, "{nope", 5, &res, &n), BARREL_E_BADJSON);
	EXPECT_RC(mapjs_map(m, "[1]", 3, &res, &n), BARREL_E_BADJSON);
	EXPECT_RC(mapjs_map(m, "3", 1, &res, &n), BARREL_E_BADJSON);
	res = map1(m, "{\"ok\":1}");
	EXPECT_RC(res->err, 0);
	mapjs_free(m);
}
END_TEST

/* One emit past the emit limit skips the document with a RangeError. */
START_TEST(test_emit_limit)
{
	struct mapjs_opts o;
	struct mapjs *m = NULL;
	const struct mapjs_result *r;

	memset(&o, 0, sizeof(o));
	o.emit_limit = 1000;
	OK(mapjs_new(&o, &m));
	add_map(m, "function(doc) { for (var i = 0; i < doc.n; i++) "
		   "emit(i, 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'); }");
	r = map1(m, "{\"n\":100}");
	EXPECT_RC(r->err, BARREL_E_INVALID);
	ck_assert_msg(strstr(r->msg, "RangeError"), "%s", r->msg);
	r = map1(m, "{\"n\":3}");
	EXPECT_RC(r->err, 0);
	ck_assert_uint_eq(r->nkv, 3);
	mapjs_free(m);
}
END_TEST

struct thr_arg {
	struct mapjs *m;
	int err;
	int err_next;
};

static void *thr_map(void *p)
{
	struct thr_arg *a = p;
	const struct mapjs_result *res;
	size_t n;

	if (mapjs_map(a->m, "{\"loop\":1}", 10, &res, &n) == 0)
		a->err = res[0].err;
	if (mapjs_map(a->m, "{}", 2, &res, &n) == 0)
		a->err_next = res[0].err;
	return NULL;
}

/* A context used by another thread (signals blocked) still stops loops. */
START_TEST(test_other_thread)
{
	struct mapjs *m = ctx_new(100, 0);
	struct thr_arg a = { m, 1, 1 };
	sigset_t all, old;
	pthread_t th;

	add_map(m, "function(doc) { if (doc.loop) while (1) {} emit(1, 1); }");
	map1(m, "{}");
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);    /* as libfuse's workers */
	ck_assert_int_eq(pthread_create(&th, NULL, thr_map, &a), 0);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	EXPECT_RC(a.err, -ETIMEDOUT);
	EXPECT_RC(a.err_next, 0);
	mapjs_free(m);
}
END_TEST

/* Throughput of a small map over 100000 documents (printed). */
START_TEST(test_throughput)
{
	enum { N = 100000 };
	struct mapjs *m = ctx_new(0, 0);
	const struct mapjs_result *res;
	size_t n, emitted = 0;
	double t0, dt;

	add_map(m, "function(doc){emit(doc.x, 1)}");
	t0 = now_s();
	for (int i = 0; i < N; i++) {
		char doc[96];
		int len = snprintf(doc, sizeof(doc),
				   "{\"_id\":\"doc%06d\",\"_rev\":\"1-abc\","
				   "\"x\":%d}", i, i % 977);

		OK(mapjs_map(m, doc, (size_t)len, &res, &n));
		emitted += res[0].nkv;
	}
	dt = now_s() - t0;
	ck_assert_uint_eq(emitted, N);
	printf("mapjs throughput: %d docs in %.3f s = %.0f docs/s "
	       "(%.2f us/doc)\n", N, dt, N / dt, dt * 1e6 / N);
	mapjs_free(m);
}
END_TEST

static Suite *mapjs_suite(void)
{
	Suite *s = suite_create("mapjs");
	TCase *tc = tcase_create("mapjs");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_emit_types);
	tcase_add_test(tc, test_several_functions);
	tcase_add_test(tc, test_throw_skips_document);
	tcase_add_test(tc, test_time_limit);
	tcase_add_test(tc, test_rebuild_after_timeout);
	tcase_add_test(tc, test_memory_limit);
	tcase_add_test(tc, test_memory_hog_catching);
	tcase_add_test(tc, test_no_io_globals);
	tcase_add_test(tc, test_helpers);
	tcase_add_test(tc, test_doc_isolation);
	tcase_add_test(tc, test_builtin_reduces);
	tcase_add_test(tc, test_js_reduce);
	tcase_add_test(tc, test_bad_sources);
	tcase_add_test(tc, test_bad_documents);
	tcase_add_test(tc, test_emit_limit);
	tcase_add_test(tc, test_other_thread);
	tcase_add_test(tc, test_throughput);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(mapjs_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
