/*
 * bench_view: barrelfs's side of the view benchmark of `make bench`
 * (tools/bench_view.sh runs it and tools/bench_view.js, PouchDB's side,
 * and prints the report).
 *
 *     bench_view [--tmpdir DIR] [-n N] [-q Q]
 *
 * In a new data directory under DIR (default $TMPDIR, else /dev/shm,
 * else /tmp), removed at the end, it writes N documents (default 100000)
 * into database "bench" with docdb_put() in bulks of 1000, then the
 * design document _design/bench, whose view by_type is
 *
 *     map:    function(doc){ if (doc.type) emit([doc.type, doc.n], doc.n); }
 *     reduce: _count
 *
 * and times, each phase once:
 *   index   from view_indexer_start() until a query with update=true
 *           (limit=0) returns: every document mapped and committed
 *           (also the CPU seconds of the process meanwhile, which a
 *           busy machine does not inflate);
 *   map     Q range queries, reduce=false: query q covers type
 *           TYPE[q % 5], startkey [type, a], endkey [type, a + 499] with
 *           a = (q * 7919) % (N - 499): exactly 100 rows;
 *   docs    the same with include_docs=true;
 *   bydoc   the same 100 documents of each query read by id instead
 *           (docdb_get_many() of one snapshot per query: the ids come
 *           from the formula, not from a view);
 *   reduce  the same ranges with the _count reduce, group_level=1
 *           (one row of 100 each);
 *   group   the whole view reduced with group_level=1, 10 times.
 * Every answer is checked against the formula (row counts, the sum of
 * the values); a wrong one fails the run.
 *
 * The documents (tools/bench_view.js makes the same; keep them in
 * step). W(k) = WORDS[k % 32], i = 0 .. N-1, "/" is integer division:
 *   _id   "doc%07d" of i
 *   body  {"type":TYPE[i % 5],"n":i,
 *          "name":"W(i*7+1) W(i*13+3) W(i/32)",
 *          "tags":[W(i),W(i*3+5),W(i/7)],
 *          "created":"2024-MM-DDTHH:mm:00Z" with MM = 1 + i % 12,
 *                    DD = 1 + (i/12) % 28, HH = i % 24, mm = (i*7) % 60,
 *          "text":"W(i*1+0) W(i*2+1) ... W(i*(k+1)+k*k) ... (k = 0..19)."}
 *         as compact JSON in that member order (250 to 330 bytes).
 * doc_hash is FNV-1a (32 bits) over every body in order, so both sides
 * can show they stored the same bytes.
 *
 * Output: one "key=value" line per figure on standard output (seconds
 * as decimals); see bv_report(). Exit status 0; 1 when a call failed or
 * an answer was wrong (why, on standard error); 2 on bad usage.
 */
#include "config.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "engine/db.h"
#include "engine/docdb.h"
#include "engine/error.h"
#include "engine/view.h"

#define BV_DOCS_DEFAULT 100000u
#define BV_DOCS_MAX 1000000u
#define BV_QUERIES_DEFAULT 1000u
#define BV_QUERIES_MAX 1000000u
#define BV_BATCH 1000u             /* documents per docdb_put() */
#define BV_NTYPES 5u
#define BV_SPAN 500u               /* values of n in one range */
#define BV_ROWS (BV_SPAN / BV_NTYPES)  /* rows of one range: 100 */
#define BV_STEP 7919u              /* between the ranges' starts */
#define BV_GROUP_RUNS 10u
#define BV_TEXT_WORDS 20u
#define BV_BODY_CAP 512u
#define BV_ID_CAP 16u              /* "doc1000000" and its NUL */
#define BV_KEY_CAP 48u             /* ["contact",1000000] and its NUL */
#define BV_GROUP_CAP 256u
#define BV_TIMEOUT_MS 3600000u     /* the index build's wait */
#define BV_DB "bench"
#define BV_DDOC "bench"
#define BV_VIEW "by_type"
#define BV_DDOC_BODY                                                     \
	"{\"language\":\"javascript\",\"views\":{\"by_type\":{\"map\":" \
	"\"function(doc){ if (doc.type) emit([doc.type, doc.n], doc.n); }\"," \
	"\"reduce\":\"_count\"}}}"

static const char *const bv_types[BV_NTYPES] = {
	"note", "task", "event", "contact", "photo",
};

static const char *const bv_words[] = {
	"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
	"hotel", "india", "juliett", "kilo", "lima", "mike", "november",
	"oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform",
	"victor", "whiskey", "xray", "yankee", "zulu", "amber", "basalt",
	"cedar", "dune", "ember", "fjord",
};
#define BV_NWORDS (sizeof(bv_words) / sizeof(bv_words[0]))

/* One run: the database, its indexer and the queries' inputs. */
struct bv_run {
	uint32_t ndocs;
	uint32_t nqueries;
	char dir[PATH_MAX];        /* the data directory; "" until made */
	struct benv *env;          /* owned */
	struct docdb *d;           /* owned; closed before env */
	struct view_indexer *vi;   /* owned; stopped before d */
	char (*start)[BV_KEY_CAP]; /* query q's startkey, JSON */
	char (*end)[BV_KEY_CAP];   /* and endkey */
	char (*ids)[BV_ID_CAP];    /* query q's document ids at
	                              q * BV_ROWS .. + BV_ROWS - 1 */
	uint64_t want_sum;         /* of the values of every query's rows */
	uint64_t doc_bytes;        /* of every body */
	uint32_t doc_hash;         /* FNV-1a of every body */
};

/* What the rows of a phase added up to. */
struct bv_tally {
	uint64_t rows;
	uint64_t sum;              /* of the values: doc.n or the counts */
	uint64_t docs;             /* rows that came with their document */
	bool bad;                  /* a value that was not a number */
	char group[BV_GROUP_CAP];  /* group phase: KEY=COUNT;... */
};

static double bv_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds of the whole process (every thread) so far: on a shared
 * machine, what the work cost apart from waiting for a core. */
static double bv_cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int bv_fail(const char *what, int rc)
{
	fprintf(stderr, "bench_view: %s: %s\n", what, barrel_strerror(rc));
	return -1;
}

static int bv_wrong(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static int bv_wrong(const char *fmt, ...)
{
	va_list ap;

	fputs("bench_view: wrong answer: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -1;
}

/* ---- the documents ---- */

static const char *bv_word(uint64_t k)
{
	return bv_words[k % BV_NWORDS];
}

/* Append to buf (cap bytes, len used) what fmt makes. */
static size_t bv_append(char *buf, size_t cap, size_t len, const char *fmt,
			...) __attribute__((format(printf, 4, 5)));

static size_t bv_append(char *buf, size_t cap, size_t len, const char *fmt,
			...)
{
	va_list ap;
	int n;

	if (len >= cap)
		return len;
	va_start(ap, fmt);
	n = vsnprintf(buf + len, cap - len, fmt, ap);
	va_end(ap);
	return n < 0 ? cap : len + (size_t)n;
}

/* The body of document i (the formula at the top) into buf
 * (BV_BODY_CAP); its length. */
static size_t bv_body(uint32_t i, char *buf)
{
	uint64_t n = i;
	size_t len;

	len = bv_append(buf, BV_BODY_CAP, 0,
			"{\"type\":\"%s\",\"n\":%" PRIu32 ",\"name\":\"%s %s %s\","
			"\"tags\":[\"%s\",\"%s\",\"%s\"],"
			"\"created\":\"2024-%02u-%02uT%02u:%02u:00Z\",\"text\":\"",
			bv_types[i % BV_NTYPES], i, bv_word(n * 7 + 1),
			bv_word(n * 13 + 3), bv_word(n / 32), bv_word(n),
			bv_word(n * 3 + 5), bv_word(n / 7),
			(unsigned)(1 + i % 12), (unsigned)(1 + i / 12 % 28),
			(unsigned)(i % 24), (unsigned)(n * 7 % 60));
	for (uint64_t k = 0; k < BV_TEXT_WORDS; k++)
		len = bv_append(buf, BV_BODY_CAP, len, "%s%s", k ? " " : "",
				bv_word(n * (k + 1) + k * k));
	return bv_append(buf, BV_BODY_CAP, len, ".\"}");
}

static void bv_id(uint32_t i, char *buf)
{
	snprintf(buf, BV_ID_CAP, "doc%07" PRIu32, i);
}

static uint32_t bv_fnv(uint32_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

/* One docdb_put() of the documents first .. first + n - 1 (n <=
 * BV_BATCH); any write that fails fails the load. */
static int bv_put_batch(struct bv_run *r, uint32_t first, uint32_t n,
			char (*ids)[BV_ID_CAP], char (*bodies)[BV_BODY_CAP],
			struct doc_put *req)
{
	int rc;

	memset(req, 0, n * sizeof(*req));
	for (uint32_t j = 0; j < n; j++) {
		bv_id(first + j, ids[j]);
		req[j].id = ids[j];
		req[j].idlen = strlen(ids[j]);
		req[j].body = bodies[j];
		req[j].len = bv_body(first + j, bodies[j]);
		if (req[j].len >= BV_BODY_CAP)
			return bv_wrong("body of document %u too long", first + j);
		r->doc_bytes += req[j].len;
		r->doc_hash = bv_fnv(r->doc_hash, bodies[j], req[j].len);
	}
	if ((rc = docdb_put(r->d, req, n)))
		return bv_fail("docdb_put", rc);
	for (uint32_t j = 0; j < n; j++)
		if (req[j].rc)
			return bv_fail(ids[j], req[j].rc);
	return 0;
}

/* Write the N documents, then the design document. */
static int bv_load(struct bv_run *r)
{
	char (*ids)[BV_ID_CAP] = calloc(BV_BATCH, sizeof(*ids));
	char (*bodies)[BV_BODY_CAP] = calloc(BV_BATCH, sizeof(*bodies));
	struct doc_put *req = calloc(BV_BATCH, sizeof(*req));
	int rc = ids && bodies && req ? 0 : bv_fail("load", -ENOMEM);

	r->doc_hash = 2166136261u;
	for (uint32_t i = 0; i < r->ndocs && !rc; i += BV_BATCH)
		rc = bv_put_batch(r, i, r->ndocs - i < BV_BATCH ?
				  r->ndocs - i : BV_BATCH, ids, bodies, req);
	if (!rc) {
		memset(req, 0, sizeof(*req));
		req->id = DOC_DESIGN_PREFIX BV_DDOC;
		req->idlen = strlen(req->id);
		req->body = BV_DDOC_BODY;
		req->len = strlen(BV_DDOC_BODY);
		if ((rc = docdb_put(r->d, req, 1)) || (rc = req->rc))
			rc = bv_fail(req->id, rc);
	}
	free(req);
	free(bodies);
	free(ids);
	return rc;
}

/* ---- the queries ---- */

/* Every query's keys, ids and the sum of its values (n). */
static int bv_plan(struct bv_run *r)
{
	r->start = calloc(r->nqueries, sizeof(*r->start));
	r->end = calloc(r->nqueries, sizeof(*r->end));
	r->ids = calloc((size_t)r->nqueries * BV_ROWS, sizeof(*r->ids));
	if (!r->start || !r->end || !r->ids)
		return bv_fail("plan", -ENOMEM);
	for (uint32_t q = 0; q < r->nqueries; q++) {
		uint32_t t = q % BV_NTYPES;
		uint32_t a = (uint32_t)((uint64_t)q * BV_STEP %
					(r->ndocs - BV_SPAN + 1));
		size_t k = (size_t)q * BV_ROWS;

		snprintf(r->start[q], BV_KEY_CAP, "[\"%s\",%" PRIu32 "]",
			 bv_types[t], a);
		snprintf(r->end[q], BV_KEY_CAP, "[\"%s\",%" PRIu32 "]",
			 bv_types[t], a + BV_SPAN - 1);
		for (uint32_t i = a; i < a + BV_SPAN; i++) {
			if (i % BV_NTYPES != t)
				continue;
			bv_id(i, r->ids[k++]);
			r->want_sum += i;
		}
	}
	return 0;
}

/* A value that is a JSON natural number, added to t->sum. */
static void bv_add_value(struct bv_tally *t, const char *v, size_t n)
{
	uint64_t x = 0;

	if (n == 0)
		t->bad = true;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			t->bad = true;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	t->sum += x;
}

static int bv_on_row(void *arg, const struct view_row *row)
{
	struct bv_tally *t = arg;

	t->rows++;
	t->docs += row->doc != NULL;
	bv_add_value(t, row->value, row->valuelen);
	return 0;
}

/* A group row also goes into t->group as KEY=COUNT; */
static int bv_on_group(void *arg, const struct view_row *row)
{
	struct bv_tally *t = arg;
	size_t len = strlen(t->group);

	bv_append(t->group, sizeof(t->group), len, "%.*s=%.*s;",
		  (int)row->keylen, row->key, (int)row->valuelen, row->value);
	return bv_on_row(arg, row);
}

/* Q range queries with the given options, timed. */
static int bv_ranges(struct bv_run *r, enum view_reduce reduce, bool docs,
		     struct bv_tally *t, double *secs)
{
	struct view_query q;
	double t0 = bv_now();
	int rc = 0;

	view_query_init(&q);
	q.reduce = reduce;
	q.include_docs = docs;
	q.group_level = reduce == VIEW_REDUCE_TRUE ? 1 : 0;
	for (uint32_t i = 0; i < r->nqueries && !rc; i++) {
		q.startkey = r->start[i];
		q.endkey = r->end[i];
		rc = view_query(r->vi, BV_DDOC, BV_VIEW, &q, bv_on_row, t, NULL);
	}
	*secs = bv_now() - t0;
	return rc ? bv_fail("view_query", rc) : 0;
}

/* The documents of one query read by id, from one snapshot. */
static int bv_get_query(struct bv_run *r, uint32_t q, struct doc_get *req,
			struct bv_tally *t)
{
	int rc;

	memset(req, 0, BV_ROWS * sizeof(*req));
	for (size_t j = 0; j < BV_ROWS; j++) {
		req[j].id = r->ids[(size_t)q * BV_ROWS + j];
		req[j].idlen = strlen(req[j].id);
	}
	if ((rc = docdb_get_many(r->d, NULL, req, BV_ROWS)))
		return bv_fail("docdb_get_many", rc);
	for (size_t j = 0; j < BV_ROWS; j++) {
		if (!rc && req[j].rc)
			rc = bv_fail(req[j].id, req[j].rc);
		t->rows++;
		t->docs += req[j].rc == 0 && req[j].doc.body;
		doc_release(&req[j].doc);
	}
	return rc;
}

static int bv_bydoc(struct bv_run *r, struct bv_tally *t, double *secs)
{
	struct doc_get req[BV_ROWS];
	double t0 = bv_now();
	int rc = 0;

	for (uint32_t q = 0; q < r->nqueries && !rc; q++)
		rc = bv_get_query(r, q, req, t);
	*secs = bv_now() - t0;
	return rc;
}

/* The whole view by type, BV_GROUP_RUNS times; t holds the last. */
static int bv_group(struct bv_run *r, struct bv_tally *t, double *secs)
{
	struct view_query q;
	double t0 = bv_now();
	int rc = 0;

	view_query_init(&q);
	q.group_level = 1;
	for (unsigned i = 0; i < BV_GROUP_RUNS && !rc; i++) {
		memset(t, 0, sizeof(*t));
		rc = view_query(r->vi, BV_DDOC, BV_VIEW, &q, bv_on_group, t,
				NULL);
	}
	*secs = bv_now() - t0;
	return rc ? bv_fail("view_query", rc) : 0;
}

/* ---- the index ---- */

/* Start the indexer and wait, with update=true, until the view is
 * built; then check its status. *cpu: the CPU seconds it took. */
static int bv_index(struct bv_run *r, double *secs, double *cpu)
{
	struct view_result res;
	struct view_query q;
	struct view_info info;
	struct bv_tally t = { 0 };
	double c0 = bv_cpu(), t0 = bv_now();
	int rc = view_indexer_start(r->d, NULL, &r->vi);

	view_query_init(&q);
	q.reduce = VIEW_REDUCE_FALSE;
	q.limit = 0;
	q.timeout_ms = BV_TIMEOUT_MS;
	if (!rc)
		rc = view_query(r->vi, BV_DDOC, BV_VIEW, &q, bv_on_row, &t, &res);
	*secs = bv_now() - t0;
	*cpu = bv_cpu() - c0;
	if (rc || (rc = view_status(r->vi, BV_DDOC, BV_VIEW, &info)))
		return bv_fail("indexing", rc);
	if (info.seq < info.db_seq || info.total_rows != r->ndocs ||
	    info.errors || res.total_rows != r->ndocs)
		return bv_wrong("index at seq %" PRIu64 " of %" PRIu64 ", %"
				PRIu64 " rows, %" PRIu64 " errors (%s)",
				info.seq, info.db_seq, info.total_rows,
				info.errors, info.last_error);
	return 0;
}

/* ---- the run ---- */

/* The figures of every phase. */
struct bv_figures {
	double load, index, index_cpu, map, docs, bydoc, reduce, group;
	struct bv_tally tmap, tdocs, tbydoc, treduce, tgroup;
};

/* Is every answer what the formula says? */
static int bv_check(const struct bv_run *r, const struct bv_figures *f)
{
	uint64_t rows = (uint64_t)r->nqueries * BV_ROWS;

	if (f->tmap.rows != rows || f->tmap.sum != r->want_sum || f->tmap.bad)
		return bv_wrong("map: %" PRIu64 " rows, sum %" PRIu64,
				f->tmap.rows, f->tmap.sum);
	if (f->tdocs.rows != rows || f->tdocs.docs != rows ||
	    f->tdocs.sum != r->want_sum || f->tdocs.bad)
		return bv_wrong("include_docs: %" PRIu64 " rows, %" PRIu64
				" docs", f->tdocs.rows, f->tdocs.docs);
	if (f->tbydoc.docs != rows)
		return bv_wrong("by document: %" PRIu64 " documents",
				f->tbydoc.docs);
	if (f->treduce.rows != r->nqueries || f->treduce.sum != rows ||
	    f->treduce.bad)
		return bv_wrong("reduce: %" PRIu64 " rows, count %" PRIu64,
				f->treduce.rows, f->treduce.sum);
	if (f->tgroup.rows != BV_NTYPES || f->tgroup.sum != r->ndocs ||
	    f->tgroup.bad)
		return bv_wrong("group: %" PRIu64 " rows, count %" PRIu64,
				f->tgroup.rows, f->tgroup.sum);
	return 0;
}

static void bv_report(const struct bv_run *r, const struct bv_figures *f)
{
	printf("side=barrelfs\ndocs=%" PRIu32 "\ndoc_bytes=%" PRIu64
	       "\ndoc_hash=%08" PRIx32 "\nqueries=%" PRIu32 "\n",
	       r->ndocs, r->doc_bytes, r->doc_hash, r->nqueries);
	printf("load_s=%.6f\nindex_s=%.6f\nindex_cpu_s=%.6f\nmap_s=%.6f\n"
	       "docs_s=%.6f\nbydoc_s=%.6f\nreduce_s=%.6f\ngroup_s=%.6f\n"
	       "group_runs=%u\n", f->load, f->index, f->index_cpu, f->map,
	       f->docs, f->bydoc, f->reduce, f->group, BV_GROUP_RUNS);
	printf("map_rows=%" PRIu64 "\nmap_sum=%" PRIu64 "\ndocs_rows=%" PRIu64
	       "\nbydoc_docs=%" PRIu64 "\nreduce_count=%" PRIu64
	       "\ngroup=%s\n", f->tmap.rows, f->tmap.sum, f->tdocs.docs,
	       f->tbydoc.docs, f->treduce.sum, f->tgroup.group);
}

/* Every phase in order, then the checks; 0 or -1. */
static int bv_phases(struct bv_run *r, struct bv_figures *f)
{
	double t0 = bv_now();

	if (bv_load(r))
		return -1;
	f->load = bv_now() - t0;
	if (bv_plan(r) || bv_index(r, &f->index, &f->index_cpu) ||
	    bv_ranges(r, VIEW_REDUCE_FALSE, false, &f->tmap, &f->map) ||
	    bv_ranges(r, VIEW_REDUCE_FALSE, true, &f->tdocs, &f->docs) ||
	    bv_bydoc(r, &f->tbydoc, &f->bydoc) ||
	    bv_ranges(r, VIEW_REDUCE_TRUE, false, &f->treduce, &f->reduce) ||
	    bv_group(r, &f->tgroup, &f->group))
		return -1;
	return bv_check(r, f);
}

static int bv_rm_one(const char *path, const struct stat *st, int flag,
		     struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if ((flag == FTW_DP ? rmdir(path) : unlink(path)) && errno != ENOENT)
		fprintf(stderr, "bench_view: remove %s: %s\n", path,
			strerror(errno));
	return 0;
}

/* Make the data directory under tmpdir and open the database. */
static int bv_open(struct bv_run *r, const char *tmpdir)
{
	int rc;

	if (snprintf(r->dir, sizeof(r->dir), "%s/bench-view.XXXXXX", tmpdir) >=
	    (int)sizeof(r->dir))
		return bv_fail(tmpdir, -ENAMETOOLONG);
	if (!mkdtemp(r->dir)) {
		rc = -errno;
		r->dir[0] = '\0';
		return bv_fail(tmpdir, rc);
	}
	if ((rc = benv_open(r->dir, NULL, &r->env)))
		return bv_fail(r->dir, rc);
	if ((rc = docdb_open(r->env, BV_DB, true, NULL, &r->d)))
		return bv_fail(BV_DB, rc);
	return 0;
}

static void bv_close(struct bv_run *r)
{
	view_indexer_stop(r->vi);
	docdb_close(r->d);
	if (r->env)
		benv_close(r->env);
	if (r->dir[0])
		nftw(r->dir, bv_rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(r->start);
	free(r->end);
	free(r->ids);
}

/* ---- the command line ---- */

static void bv_usage(FILE *f)
{
	fprintf(f, "usage: bench_view [--tmpdir DIR] [-n DOCS] [-q QUERIES]\n"
		"Index DOCS documents (default %u, at least %u) with a map and "
		"_count, then\ntime QUERIES key-range queries (default %u) and "
		"the same documents by id.\n", BV_DOCS_DEFAULT, BV_SPAN,
		BV_QUERIES_DEFAULT);
}

/* A number in min..max from s, or 0. */
static uint32_t bv_number(const char *s, uint32_t min, uint32_t max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
		return 0;
	return (uint32_t)v;
}

static const char *bv_default_tmpdir(void)
{
	const char *t = getenv("TMPDIR");

	if (t && *t)
		return t;
	return access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "tmpdir", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bv_run r = { .ndocs = BV_DOCS_DEFAULT,
			    .nqueries = BV_QUERIES_DEFAULT };
	struct bv_figures f = { 0 };
	const char *tmpdir = bv_default_tmpdir();
	int c, rc;

	while ((c = getopt_long(argc, argv, "n:q:h", longopts, NULL)) != -1) {
		switch (c) {
		case 't':
			tmpdir = optarg;
			break;
		case 'n':
			r.ndocs = bv_number(optarg, BV_SPAN, BV_DOCS_MAX);
			break;
		case 'q':
			r.nqueries = bv_number(optarg, 1, BV_QUERIES_MAX);
			break;
		case 'h':
			bv_usage(stdout);
			return 0;
		default:
			bv_usage(stderr);
			return 2;
		}
	}
	if (optind != argc || !r.ndocs || !r.nqueries) {
		bv_usage(stderr);
		return 2;
	}
	rc = bv_open(&r, tmpdir) || bv_phases(&r, &f) ? 1 : 0;
	bv_close(&r);
	if (!rc)
		bv_report(&r, &f);
	return rc;
}
