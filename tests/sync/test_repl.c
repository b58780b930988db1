#include "config.h"

/*
 * The replicator (sync/repl.h) and its HTTP client (sync/client.h)
 * between two in-process servers on UNIX sockets: documents, deletions
 * and design documents cross and local ones do not; concurrent edits
 * converge to the same leaves and winner; big attachments cross intact;
 * a rerun reads nothing; an interrupted run resumes from its checkpoint;
 * continuous mode follows new writes and stops on request; unreachable
 * peers fail fast with bounded retries; specs, escaping and redaction.
 */

#include <check.h>
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/error.h"
#include "sync/client.h"
#include "sync/repl.h"
#include "sync/url.h"
#include "tests/engine/testenv.h"
#include "tests/sync/synctest.h"

TU_BASE_FIXTURE("test_repl")

#define MiB (1024u * 1024u)

static const char *const accept_json[] = { "Accept: application/json", NULL };

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* "unix:SOCK:/db" of t's server. */
static void spec_of(const struct synctest *t, const char *db, char *out,
		    size_t size)
{
	snprintf(out, size, "unix:%s:/%s", t->sock, db);
}

/* Options for tests: fast retries. */
static void test_opts(struct repl_opts *o)
{
	repl_opts_init(o);
	o->create_target = true;
	o->client.retries = 2;
	o->client.backoff_ms = 10;
	o->client.backoff_max_ms = 20;
	o->longpoll_ms = 2000;
}

/* Replicate db of a to db of b once; the run's stats into *st. */
static int replicate(struct synctest *a, struct synctest *b, const char *db,
		     const struct repl_opts *o, struct repl_stats *st)
{
	char src[PATH_MAX + 64], dst[PATH_MAX + 64], err[REPL_ERRLEN] = "";
	struct repl_opts def;
	struct repl *r;
	int rc;

	if (!o) {
		test_opts(&def);
		o = &def;
	}
	spec_of(a, db, src, sizeof(src));
	spec_of(b, db, dst, sizeof(dst));
	rc = repl_new(src, dst, o, &r, err);
	ck_assert_msg(rc == 0, "repl_new: %s", err);
	rc = repl_run(r);
	repl_stats(r, st);
	repl_free(r);
	return rc;
}

static void create_db(struct synctest *t, const char *db)
{
	char path[256];
	long s;

	snprintf(path, sizeof(path), "/%s", db);
	s = st_json(t, "PUT", path, NULL, NULL);
	ck_assert_msg(s == 201 || s == 202, "PUT %s: %ld", path, s);
}

/* PUT body as document id of db; returns the new rev (malloc'ed). */
static char *put_doc(struct synctest *t, const char *db, const char *id,
		     const char *body)
{
	struct json_object *rep = NULL;
	char path[1024], *rev;
	char *eid = url_escape(id, true);
	long s;

	snprintf(path, sizeof(path), "/%s/%s", db, eid);
	free(eid);
	s = st_json(t, "PUT", path, body, &rep);
	ck_assert_msg(s == 201 || s == 202, "PUT %s: %ld %s", path, s,
		      rep ? json_object_to_json_string(rep) : "");
	rev = strdup(st_str(rep, "rev"));
	json_object_put(rep);
	return rev;
}

/* GET path (with Accept: application/json); status, parsed reply. */
static long get_json(struct synctest *t, const char *path,
		     struct json_object **out)
{
	char *body;
	long s = st_req_h(t, "GET", path, NULL, NULL, 0, accept_json, &body,
			  NULL);

	*out = json_tokener_parse(body);
	free(body);
	return s;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The leaves of db/id as "rev[ deleted]" lines, sorted (malloc'ed). */
static char *leaves(struct synctest *t, const char *db, const char *id)
{
	struct json_object *arr;
	char path[512], *lines[64], *out;
	size_t n, len = 0;

	snprintf(path, sizeof(path), "/%s/%s?open_revs=all", db, id);
	ck_assert_int_eq(get_json(t, path, &arr), 200);
	ck_assert(json_object_is_type(arr, json_type_array));
	n = json_object_array_length(arr);
	ck_assert_uint_le(n, 64);
	for (size_t i = 0; i < n; i++) {
		struct json_object *ok, *del;
		char buf[256];

		ck_assert(json_object_object_get_ex(
			json_object_array_get_idx(arr, i), "ok", &ok));
		snprintf(buf, sizeof(buf), "%s%s", st_str(ok, "_rev"),
			 json_object_object_get_ex(ok, "_deleted", &del) &&
			 json_object_get_boolean(del) ? " deleted" : "");
		lines[i] = strdup(buf);
		len += strlen(buf) + 1;
	}
	qsort(lines, n, sizeof(lines[0]), cmp_str);
	out = calloc(1, len + 1);
	len = 0;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(lines[i]);

		memcpy(out + len, lines[i], l);
		out[len + l] = '\n';
		len += l + 1;
		free(lines[i]);
	}
	json_object_put(arr);
	return out;
}

/* The winner of db/id as JSON text (malloc'ed). */
static char *winner(struct synctest *t, const char *db, const char *id)
{
	struct json_object *doc;
	char path[512], *out;

	snprintf(path, sizeof(path), "/%s/%s", db, id);
	ck_assert_int_eq(get_json(t, path, &doc), 200);
	out = strdup(json_object_to_json_string_ext(doc,
					JSON_C_TO_STRING_PLAIN));
	json_object_put(doc);
	return out;
}

static long doc_status(struct synctest *t, const char *db, const char *id)
{
	char path[512];

	snprintf(path, sizeof(path), "/%s/%s", db, id);
	return st_json(t, "GET", path, NULL, NULL);
}

/* update_seq of db as JSON text (malloc'ed). */
static char *update_seq(struct synctest *t, const char *db)
{
	struct json_object *info, *seq;
	char path[256], *out;

	snprintf(path, sizeof(path), "/%s", db);
	ck_assert_int_eq(get_json(t, path, &info), 200);
	ck_assert(json_object_object_get_ex(info, "update_seq", &seq));
	out = strdup(json_object_to_json_string(seq));
	json_object_put(info);
	return out;
}

/* A progress callback: counts calls, keeps the last stats. */
struct progress_seen {
	unsigned calls;
	struct repl_stats last;
};

static void on_progress(void *arg, const struct repl_stats *st)
{
	struct progress_seen *p = arg;

	p->calls++;
	p->last = *st;
}

/* ---- tests ---- */

/* Documents, deletions and design documents cross; local ones do not. */
START_TEST(test_docs_cross)
{
	struct synctest a, b;
	struct repl_stats st;
	struct repl_opts o;
	struct progress_seen seen = { 0 };
	char *rev, body[256], *la, *lb;

	st_start(&a, g_base, NULL);
	st_start(&b, g_base, NULL);
	create_db(&a, "db");
	for (int i = 0; i < 20; i++) {
		char id[32];

		snprintf(id, sizeof(id), "doc%02d", i);
		snprintf(body, sizeof(body), "{\"n\":%d,\"s\":\"caf\\u00e9 /\"}",
			 i);
		free(put_doc(&a, "db", id, body));
	}
	rev = put_doc(&a, "db", "gone", "{\"x\":1}");
	snprintf(body, sizeof(body), "/db/gone?rev=%s", rev);
	ck_assert_int_eq(st_json(&a, "DELETE", body, NULL, NULL), 200);
	free(rev);
	free(put_doc(&a, "db", "_design/app",
		     "{\"views\":{\"v\":{\"map\":\"function(d){}\"}}}"));
	free(put_doc(&a, "db", "_local/mine", "{\"secret\":1}"));
	free(put_doc(&a, "db", "with space/and?q", "{\"odd\":true}"));

	test_opts(&o);
	o.batch = 10;
	o.progress = on_progress;
	o.progress_arg = &seen;
	ck_assert_int_eq(replicate(&a, &b, "db", &o, &st), 0);
	ck_assert_uint_eq(st.batches, 3);
	ck_assert_uint_eq(seen.calls, 4);          /* 3 batches, the end */
	ck_assert_int_eq(seen.last.state, REPL_DONE);
	ck_assert_uint_eq(seen.last.docs_written, 23);
	ck_assert_uint_eq(st.docs_read, 23);
	ck_assert_uint_eq(st.docs_written, 23);
	ck_assert_uint_eq(st.doc_write_failures, 0);
	ck_assert_uint_eq(st.missing_found, 23);
	ck_assert_int_eq(st.state, REPL_DONE);

	for (int i = 0; i < 20; i += 7) {
		char id[32];

		snprintf(id, sizeof(id), "doc%02d", i);
		la = winner(&a, "db", id);
		lb = winner(&b, "db", id);
		ck_assert_str_eq(la, lb);
		free(la);
		free(lb);
	}
	ck_assert_int_eq(doc_status(&b, "db", "gone"), 404);
	la = leaves(&a, "db", "gone");
	lb = leaves(&b, "db", "gone");
	ck_assert_str_eq(la, lb);
	ck_assert_ptr_nonnull(strstr(lb, " deleted"));
	free(la);
	free(lb);
	la = winner(&a, "db", "_design/app");
	lb = winner(&b, "db", "_design/app");
	ck_assert_str_eq(la, lb);
	free(la);
	free(lb);
	ck_assert_int_eq(doc_status(&b, "db", "with%20space%2Fand%3Fq"), 200);
	ck_assert_int_eq(doc_status(&a, "db", "_local/mine"), 200);
	ck_assert_int_eq(doc_status(&b, "db", "_local/mine"), 404);
	st_stop(&a);
	st_stop(&b);
}
END_TEST

/* Concurrent edits on both sides, replicated both ways, end with the
 * same leaves and the same winner on both peers; with _bulk_get (loop
 * 0) and with its fallback, GET open_revs (loop 1). */
START_TEST(test_conflicts_converge)
{
	struct synctest a, b;
	struct repl_stats st;
	struct repl_opts o;
	char *rev, body[256];
	const char *ids[] = { "c1", "c2", "c3" };

	st_start(&a, g_base, NULL);
	st_start(&b, g_base, NULL);
	create_db(&a, "db");
	create_db(&b, "db");
	rev = put_doc(&a, "db", "c1", "{\"v\":0}");
	free(put_doc(&a, "db", "c2", "{\"v\":0}"));
	free(rev);
	ck_assert_int_eq(replicate(&a, &b, "db", NULL, &st), 0);

	/* c1: both edit the same revision; c2: A edits twice, B deletes;
	 * c3: created independently on both. */
	for (int side = 0; side < 2; side++) {
		struct synctest *t = side ? &b : &a;
		struct json_object *doc;
		const char *cur;

		ck_assert_int_eq(get_json(t, "/db/c1", &doc), 200);
		snprintf(body, sizeof(body), "{\"_rev\":\"%s\",\"v\":\"%s\"}",
			 st_str(doc, "_rev"), side ? "b" : "a");
		json_object_put(doc);
		free(put_doc(t, "db", "c1", body));
		ck_assert_int_eq(get_json(t, "/db/c2", &doc), 200);
		cur = st_str(doc, "_rev");
		if (side) {
			snprintf(body, sizeof(body), "/db/c2?rev=%s", cur);
			ck_assert_int_eq(st_json(t, "DELETE", body, NULL, NULL),
					 200);
		} else {
			snprintf(body, sizeof(body),
				 "{\"_rev\":\"%s\",\"v\":1}", cur);
			rev = put_doc(t, "db", "c2", body);
			snprintf(body, sizeof(body),
				 "{\"_rev\":\"%s\",\"v\":2}", rev);
			free(rev);
			free(put_doc(t, "db", "c2", body));
		}
		json_object_put(doc);
		snprintf(body, sizeof(body), "{\"from\":\"%s\"}",
			 side ? "b" : "a");
		free(put_doc(t, "db", "c3", body));
	}
	test_opts(&o);
	o.no_bulk_get = _i == 1;
	ck_assert_int_eq(replicate(&a, &b, "db", &o, &st), 0);
	ck_assert_msg(st.doc_write_failures == 0, "%s", st.error);
	ck_assert_uint_eq(st.docs_written, 3);
	ck_assert_int_eq(replicate(&b, &a, "db", &o, &st), 0);
	ck_assert_msg(st.doc_write_failures == 0, "%s", st.error);
	ck_assert_uint_eq(st.docs_written, 3);
	for (size_t i = 0; i < 3; i++) {
		char *la = leaves(&a, "db", ids[i]), *lb = leaves(&b, "db", ids[i]);
		char *wa = winner(&a, "db", ids[i]), *wb = winner(&b, "db", ids[i]);

		ck_assert_msg(strchr(la, '\n') != strrchr(la, '\n'),
			      "%s: expected a conflict, leaves %s", ids[i], la);
		ck_assert_str_eq(la, lb);
		ck_assert_str_eq(wa, wb);
		free(la);
		free(lb);
		free(wa);
		free(wb);
	}
	st_stop(&a);
	st_stop(&b);
}
END_TEST

/* A 5 MiB attachment crosses byte for byte, and a later edit that keeps
 * it (a stub) crosses too. */
START_TEST(test_attachment_5mib)
{
	struct synctest a, b;
	struct repl_stats st;
	size_t n = 5 * MiB, hlen;
	unsigned char *data = malloc(n);
	struct json_object *reply;
	char *got, *rev, body[256];
	uint32_t x = 12345;

	ck_assert_ptr_nonnull(data);
	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245u + 12345u;
		data[i] = (unsigned char)(x >> 16);
	}
	st_start(&a, g_base, NULL);
	st_start(&b, g_base, NULL);
	create_db(&a, "db");
	rev = put_doc(&a, "db", "att", "{\"kind\":\"blob\"}");
	snprintf(body, sizeof(body), "/db/att/big.bin?rev=%s", rev);
	free(rev);
	ck_assert_int_eq(st_req_h(&a, "PUT", body, "application/octet-stream",
				  (const char *)data, n, NULL, &got, NULL), 201);
	reply = json_tokener_parse(got);
	rev = strdup(st_str(reply, "rev"));
	json_object_put(reply);
	free(got);
	ck_assert_int_eq(replicate(&a, &b, "db", NULL, &st), 0);
	ck_assert_msg(st.docs_written == 1, "written %llu: %s",
		      (unsigned long long)st.docs_written, st.error);

	ck_assert_int_eq(st_req_h(&b, "GET", "/db/att/big.bin", NULL, NULL, 0,
				  NULL, &got, &hlen), 200);
	ck_assert_uint_eq(hlen, n);
	ck_assert(memcmp(got, data, n) == 0);
	free(got);

	snprintf(body, sizeof(body), "{\"_rev\":\"%s\",\"kind\":\"blob2\","
		 "\"_attachments\":{\"big.bin\":{\"stub\":true}}}", rev);
	free(rev);
	free(put_doc(&a, "db", "att", body));
	ck_assert_int_eq(replicate(&a, &b, "db", NULL, &st), 0);
	ck_assert_msg(st.docs_written == 1, "written %llu: %s",
		      (unsigned long long)st.docs_written, st.error);
	ck_assert_uint_eq(st.doc_write_failures, 0);
	ck_assert_int_eq(st_req_h(&b, "GET", "/db/att/big.bin", NULL, NULL, 0,
				  NULL, &got, &hlen), 200);
	ck_assert_uint_eq(hlen, n);
	ck_assert(memcmp(got, data, n) == 0);
	free(got);
	got = winner(&b, "db", "att");
	ck_assert_ptr_nonnull(strstr(got, "blob2"));
	free(got);
	free(data);
	st_stop(&a);
	st_stop(&b);
}
END_TEST

/* A second run with nothing new reads nothing and writes nothing. */
START_TEST(test_rerun_reads_nothing)
{
	struct synctest a, b;
	struct repl_stats st;
	char *seq1, *seq2;

	st_start(&a, g_base, NULL);
	st_start(&b, g_base, NULL);
	create_db(&a, "db");
	for (int i = 0; i < 5; i++) {
		char id[16];

		snprintf(id, sizeof(id), "d%d", i);
		free(put_doc(&a, "db", id, "{\"a\":1}"));
	}
	ck_assert_int_eq(replicate(&a, &b, "db", NULL, &st), 0);
	ck_assert_uint_eq(st.docs_read, 5);
	ck_assert_str_ne(st.last_seq, "");
	seq1 = update_seq(&b, "db");
	ck_assert_int_eq(replicate(&a, &b, "db", NULL, &st), 0);
	ck_assert_uint_eq(st.docs_read, 0);
	ck_assert_uint_eq(st.docs_written, 0);
	ck_assert_uint_eq(st.missing_checked, 0);
	seq2 = update_seq(&b, "db");
	ck_assert_str_eq(seq1, seq2);
	free(seq1);
	free(seq2);
	st_stop(&a);
	st_stop(&b);
}
END_TEST

/* A run stopped after its first batch resumes from its checkpoint: the
 * rerun reads only the rest, and both checkpoints name its session. */
START_TEST(test_resume)
{
	struct synctest a, b;
	struct repl_stats st;
	struct repl_opts o;
	struct json_object *ca, *cb;
	char path[128];

	st_start(&a, g_base, NULL);
	st_start(&b, g_base, NULL);
	create_db(&a, "db");
	for (int i = 0; i < 25; i++) {
		char id[16];

		snprintf(id, sizeof(id), "d%02d", i);
		free(put_doc(&a, "db", id, "{\"a\":1}"));
	}
	test_opts(&o);
	o.batch = 10;
	o.max_batches = 1;
	ck_assert_int_eq(replicate(&a, &b, "db", &o, &st), -ECANCELED);
	ck_assert_int_eq(st.state, REPL_STOPPED);
	ck_assert_uint_eq(st.docs_read, 10);
	ck_assert_uint_eq(st.docs_written, 10);
	o.max_batches = 0;
	ck_assert_int_eq(replicate(&a, &b, "db", &o, &st), 0);
	ck_assert_uint_eq(st.docs_read, 15);
	ck_assert_uint_eq(st.batches, 2);

	snprintf(path, sizeof(path), "/db/_local/%s", st.rep_id);
	ck_assert_int_eq(get_json(&a, path, &ca), 200);
	ck_assert_int_eq(get_json(&b, path, &cb), 200);
	ck_assert_str_eq(st_str(ca, "session_id"), st.session_id);
	ck_assert_str_eq(st_str(cb, "session_id"), st.session_id);
	{
		struct json_object *h, *e;

		ck_assert(json_object_object_get_ex(cb, "history", &h));
		ck_assert_uint_eq(json_object_array_length(h), 2);
		e = json_object_array_get_idx(h, 0);
		ck_assert_str_eq(st_str(e, "session_id"), st.session_id);
	}
	json_object_put(ca);
	json_object_put(cb);
	st_stop(&a);
	st_stop(&b);
}
END_TEST

struct cont_run {
	struct repl *r;
	int rc;
	atomic_bool done;
};

static void *cont_thread(void *arg)
{
	struct cont_run *c = arg;

	c->rc = repl_run(c->r);
	atomic_store(&c->done, true);
	return NULL;
}

/* Continuous mode sees a document written after it started, within a
 * bounded wait, and repl_stop() ends it promptly. */
START_TEST(test_continuous)
{
	struct synctest a, b;
	struct repl_opts o;
	struct repl_stats st;
	struct cont_run c = { 0 };
	char src[PATH_MAX + 64], dst[PATH_MAX + 64], err[REPL_ERRLEN];
	pthread_t th;
	uint64_t t0;

	st_start(&a, g_base, NULL);
	st_start(&b, g_base, NULL);
	create_db(&a, "db");
	free(put_doc(&a, "db", "early", "{\"a\":1}"));
	test_opts(&o);
	o.continuous = true;
	spec_of(&a, "db", src, sizeof(src));
	spec_of(&b, "db", dst, sizeof(dst));
	ck_assert_int_eq(repl_new(src, dst, &o, &c.r, err), 0);
	ck_assert_int_eq(pthread_create(&th, NULL, cont_thread, &c), 0);

	t0 = now_ms();
	do {
		repl_stats(c.r, &st);
		if (st.state == REPL_WAITING && st.docs_written == 1)
			break;
		sleep_ms(20);
	} while (now_ms() - t0 < 10000 && !atomic_load(&c.done));
	ck_assert_int_eq(st.state, REPL_WAITING);
	ck_assert_int_eq(doc_status(&b, "db", "early"), 200);

	free(put_doc(&a, "db", "late", "{\"b\":2}"));
	t0 = now_ms();
	while (doc_status(&b, "db", "late") != 200 && now_ms() - t0 < 10000)
		sleep_ms(20);
	ck_assert_int_eq(doc_status(&b, "db", "late"), 200);

	t0 = now_ms();
	repl_stop(c.r);
	while (!atomic_load(&c.done) && now_ms() - t0 < 10000)
		sleep_ms(10);
	ck_assert_msg(atomic_load(&c.done), "repl_stop did not end the run");
	pthread_join(th, NULL);
	ck_assert_uint_lt(now_ms() - t0, 3000);
	ck_assert_int_eq(c.rc, -ECANCELED);
	repl_stats(c.r, &st);
	ck_assert_int_eq(st.state, REPL_STOPPED);
	ck_assert_uint_eq(st.docs_written, 2);
	repl_free(c.r);
	st_stop(&a);
	st_stop(&b);
}
END_TEST

/* An unreachable peer ends the run with an error quickly: the retries
 * are bounded; a missing source database is its own error. */
START_TEST(test_unreachable)
{
	struct synctest a;
	struct repl_opts o;
	struct repl_stats st;
	struct repl *r;
	char src[PATH_MAX + 64], dst[PATH_MAX + 64], err[REPL_ERRLEN];
	uint64_t t0;
	int rc;

	st_start(&a, g_base, NULL);
	create_db(&a, "db");
	test_opts(&o);
	spec_of(&a, "db", src, sizeof(src));
	snprintf(dst, sizeof(dst), "unix:%s/nope.sock:/db", g_base);
	ck_assert_int_eq(repl_new(src, dst, &o, &r, err), 0);
	t0 = now_ms();
	rc = repl_run(r);
	ck_assert_uint_lt(now_ms() - t0, 2000);
	ck_assert_int_eq(rc, -ECONNREFUSED);
	repl_stats(r, &st);
	ck_assert_int_eq(st.state, REPL_FAILED);
	ck_assert_ptr_nonnull(strstr(st.error, "nope.sock"));
	ck_assert_ptr_nonnull(strstr(st.error, "3 attempts"));
	repl_free(r);

	/* TCP, with a password that must not show in the message. */
	ck_assert_int_eq(repl_new(src, "http://me:s3cr3t@127.0.0.1:1/db", &o,
				  &r, err), 0);
	t0 = now_ms();
	rc = repl_run(r);
	ck_assert_uint_lt(now_ms() - t0, 2000);
	ck_assert_int_eq(rc, -ECONNREFUSED);
	repl_stats(r, &st);
	ck_assert_ptr_null(strstr(st.error, "s3cr3t"));
	repl_free(r);

	spec_of(&a, "nosuchdb", src, sizeof(src));
	snprintf(dst, sizeof(dst), "unix:%s:/other", a.sock);
	ck_assert_int_eq(repl_new(src, dst, &o, &r, err), 0);
	ck_assert_int_eq(repl_run(r), BARREL_E_NOTFOUND);
	repl_free(r);
	st_stop(&a);
}
END_TEST

/* Checks, at every progress call (after each checkpoint), that every
 * document of the source up to the checkpointed sequence is on the
 * target: document dNN was written at sequence NN + 1. */
struct ckpt_check {
	struct synctest *target;
	unsigned calls, missing;
	unsigned long max_seq;
};

static void on_checkpoint(void *arg, const struct repl_stats *st)
{
	struct ckpt_check *c = arg;
	unsigned long seq = strtoul(st->last_seq, NULL, 10);
	char id[16];

	c->calls++;
	if (seq > c->max_seq)
		c->max_seq = seq;
	for (unsigned long i = 0; i < seq && i < 1000; i++) {
		snprintf(id, sizeof(id), "d%02lu", i);
		if (doc_status(c->target, "db", id) != 200)
			c->missing++;
	}
}

/* With the reader a batch ahead of the writer, a checkpoint still names
 * only sequences whose documents, and every earlier one's, are on the
 * target: small batches split over several _bulk_docs each. */
START_TEST(test_pipeline_checkpoint)
{
	struct synctest a, b;
	struct repl_stats st;
	struct repl_opts o;
	struct ckpt_check c = { .target = &b };

	st_start(&a, g_base, NULL);
	st_start(&b, g_base, NULL);
	create_db(&a, "db");
	for (int i = 0; i < 60; i++) {
		char id[16];

		snprintf(id, sizeof(id), "d%02d", i);
		free(put_doc(&a, "db", id, "{\"text\":\"some words to make "
			     "the document a little longer than nothing\"}"));
	}
	test_opts(&o);
	o.batch = 7;
	o.max_request = 400;          /* a few documents per _bulk_docs */
	o.progress = on_checkpoint;
	o.progress_arg = &c;
	ck_assert_int_eq(replicate(&a, &b, "db", &o, &st), 0);
	ck_assert_uint_eq(st.docs_written, 60);
	ck_assert_uint_eq(st.batches, 9);
	ck_assert_uint_ge(c.calls, 9);
	ck_assert_uint_eq(c.max_seq, 60);
	ck_assert_uint_eq(c.missing, 0);
	st_stop(&a);
	st_stop(&b);
}
END_TEST

/* Revisions pass from _bulk_get to _bulk_docs as text: ids and bodies
 * with quotes, backslashes, brackets inside strings and non-ASCII text
 * arrive equal to the source's. */
START_TEST(test_text_passthrough)
{
	static const char *const ids[] = { "q\"uote", "back\\slash",
					   "br}ack]et{s[", "caf\xc3\xa9" };
	struct synctest a, b;
	struct repl_stats st;

	st_start(&a, g_base, NULL);
	st_start(&b, g_base, NULL);
	create_db(&a, "db");
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		free(put_doc(&a, "db", ids[i], "{\"s\":\"}]{[\\\",:\\\\\","
			     "\"n\":[1,{\"a\":null,\"b\":[true,false]},-2.5e3],"
			     "\"u\":\"\\u00e9\\ud83d\\ude00\",\"e\":{}}"));
	ck_assert_int_eq(replicate(&a, &b, "db", NULL, &st), 0);
	ck_assert_uint_eq(st.docs_written, 4);
	ck_assert_uint_eq(st.doc_write_failures, 0);
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		struct json_object *ja, *jb;
		char path[256], *e = url_escape(ids[i], true);

		snprintf(path, sizeof(path), "/db/%s?revs=true", e);
		free(e);
		ck_assert_int_eq(get_json(&a, path, &ja), 200);
		ck_assert_int_eq(get_json(&b, path, &jb), 200);
		ck_assert_msg(json_object_equal(ja, jb), "%s: %s != %s", ids[i],
			      json_object_to_json_string(ja),
			      json_object_to_json_string(jb));
		json_object_put(ja);
		json_object_put(jb);
	}
	st_stop(&a);
	st_stop(&b);
}
END_TEST

/* Endpoint specs are parsed (or refused), ids escaped, passwords kept
 * out of URLs and replication ids. */
START_TEST(test_client_specs)
{
	struct client *c;
	struct repl *r1, *r2;
	struct repl_stats s1, s2;
	char err[REPL_ERRLEN];

	ck_assert_int_eq(client_new("http://u:pw@h:5984/pre/my%2Fdb/", NULL,
				    &c, err), 0);
	ck_assert_str_eq(client_url(c), "http://h:5984/pre/my%2Fdb");
	ck_assert_str_eq(client_db(c), "my/db");
	client_free(c);
	ck_assert_int_eq(client_new("unix:/run/x:y/api.sock:/a/b", NULL, &c,
				    err), 0);
	ck_assert_str_eq(client_db(c), "a/b");
	ck_assert_str_eq(client_url(c), "unix:/run/x:y/api.sock:/a/b");
	client_free(c);
	ck_assert_int_eq(client_new("ftp://h/db", NULL, &c, err),
			 BARREL_E_INVALID);
	ck_assert_int_eq(client_new("http://h:5984/", NULL, &c, err),
			 BARREL_E_INVALID);
	ck_assert_int_eq(client_new("unix:/no/db/part", NULL, &c, err),
			 BARREL_E_INVALID);

	/* A bad escape is an error that never shows the credentials. */
	ck_assert_int_eq(client_new("http://h/a%zzb", NULL, &c, err),
			 BARREL_E_INVALID);
	ck_assert_str_eq(err, "http://h/a%zzb: invalid percent-encoding "
			 "(a % is written %25)");
	ck_assert_int_eq(client_new("http://u:p%4@h/db", NULL, &c, err),
			 BARREL_E_INVALID);
	ck_assert_str_eq(err, "URL credentials: invalid percent-encoding "
			 "(a % is written %25)");
	ck_assert_int_eq(client_new("unix:/s:/d%", NULL, &c, err),
			 BARREL_E_INVALID);

	/* The same databases with other credentials: the same id. */
	ck_assert_int_eq(repl_new("http://a:1@h:1/s", "http://h:1/t", NULL,
				  &r1, err), 0);
	ck_assert_int_eq(repl_new("http://b:2@h:1/s", "http://h:1/t", NULL,
				  &r2, err), 0);
	repl_stats(r1, &s1);
	repl_stats(r2, &s2);
	ck_assert_str_eq(s1.rep_id, s2.rep_id);
	ck_assert_uint_eq(strlen(s1.rep_id), 32);
	repl_free(r2);
	ck_assert_int_eq(repl_new("http://h:1/t", "http://h:1/s", NULL, &r2,
				  err), 0);
	repl_stats(r2, &s2);
	ck_assert_str_ne(s1.rep_id, s2.rep_id);
	repl_free(r1);
	repl_free(r2);
}
END_TEST

static Suite *repl_suite(void)
{
	Suite *s = suite_create("repl");
	TCase *tc = tcase_create("repl");

	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_client_specs);
	tcase_add_test(tc, test_docs_cross);
	tcase_add_loop_test(tc, test_conflicts_converge, 0, 2);
	tcase_add_test(tc, test_attachment_5mib);
	tcase_add_test(tc, test_rerun_reads_nothing);
	tcase_add_test(tc, test_resume);
	tcase_add_test(tc, test_pipeline_checkpoint);
	tcase_add_test(tc, test_text_passthrough);
	tcase_add_test(tc, test_continuous);
	tcase_add_test(tc, test_unreachable);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return st_main(repl_suite());
}
