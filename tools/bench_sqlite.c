/*
 * SQLite as a peer: WAL journal, synchronous=FULL (every commit fsyncs
 * the WAL), one table with the key as PRIMARY KEY and an index on seq,
 * one transaction per batch.
 */
#include "config.h"
#include "tools/bench.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const sqlite_schema =
	"PRAGMA journal_mode=WAL;"
	"PRAGMA synchronous=FULL;"
	"CREATE TABLE IF NOT EXISTS docs ("
	"  key TEXT PRIMARY KEY NOT NULL,"
	"  seq INTEGER NOT NULL,"
	"  value BLOB NOT NULL);"
	"CREATE UNIQUE INDEX IF NOT EXISTS docs_seq ON docs(seq);";

enum sqlite_stmt {
	ST_BEGIN, ST_COMMIT, ST_ROLLBACK, ST_INSERT, ST_UPDATE, ST_GET,
	ST_SCAN, ST_MAXSEQ, ST_COUNT
};

static const char *const sqlite_sql[ST_COUNT] = {
	[ST_BEGIN] = "BEGIN",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_INSERT] = "INSERT INTO docs (key, seq, value) VALUES (?1, ?2, ?3)",
	[ST_UPDATE] = "UPDATE docs SET seq = ?2, value = ?3 WHERE key = ?1",
	[ST_GET] = "SELECT value FROM docs WHERE key = ?1",
	[ST_SCAN] = "SELECT key, value FROM docs ORDER BY key",
	[ST_MAXSEQ] = "SELECT coalesce(max(seq), 0) FROM docs",
};

struct sqlite_store {
	struct bench_store base;
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
	int64_t seq;              /* last sequence number written */
};

static int sqlite_err(struct sqlite_store *s, char *err, const char *what)
{
	return bench_fail(err, "%s: %s", what, sqlite3_errmsg(s->db));
}

static void sqlite_free(struct sqlite_store *s)
{
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(s->st[i]);
	sqlite3_close(s->db);
	free(s);
}

/* Run a statement that returns no rows (or whose rows are ignored). */
static int sqlite_step(struct sqlite_store *s, enum sqlite_stmt i)
{
	int rc;

	while ((rc = sqlite3_step(s->st[i])) == SQLITE_ROW)
		;
	sqlite3_reset(s->st[i]);
	return rc == SQLITE_DONE ? 0 : sqlite_err(s, s->base.err,
						  sqlite_sql[i]);
}

static int sqlite_connect(const char *dir, struct bench_store **out,
			  char *err)
{
	struct sqlite_store *s = calloc(1, sizeof(*s));
	char path[4096];

	if (!s)
		return bench_fail(err, "out of memory");
	if (bench_store_init(&s->base, &bench_sqlite_ops, dir, err) ||
	    bench_path(path, sizeof(path), dir, "bench.db", err))
		goto out_free;
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE |
			    SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
		sqlite_err(s, err, path);
		goto out_free;
	}
	if (sqlite3_exec(s->db, sqlite_schema, NULL, NULL, NULL) != SQLITE_OK) {
		sqlite_err(s, err, "schema");
		goto out_free;
	}
	for (int i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v2(s->db, sqlite_sql[i], -1, &s->st[i],
				       NULL) != SQLITE_OK) {
			sqlite_err(s, err, sqlite_sql[i]);
			goto out_free;
		}
	}
	if (sqlite3_step(s->st[ST_MAXSEQ]) != SQLITE_ROW) {
		sqlite_err(s, err, sqlite_sql[ST_MAXSEQ]);
		goto out_free;
	}
	s->seq = sqlite3_column_int64(s->st[ST_MAXSEQ], 0);
	sqlite3_reset(s->st[ST_MAXSEQ]);
	*out = &s->base;
	return 0;
out_free:
	sqlite_free(s);
	return -1;
}

/* One transaction: insert (ST_INSERT) or update (ST_UPDATE) every doc. */
static int sqlite_write(struct sqlite_store *s, enum sqlite_stmt op,
			const struct bench_doc *d, size_t n)
{
	sqlite3_stmt *st = s->st[op];

	if (sqlite_step(s, ST_BEGIN))
		return -1;
	for (size_t i = 0; i < n; i++) {
		int rc;

		sqlite3_bind_text(st, 1, d[i].key, (int)d[i].klen,
				  SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, ++s->seq);
		sqlite3_bind_blob(st, 3, d[i].val, (int)d[i].vlen,
				  SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE || sqlite3_changes(s->db) != 1) {
			if (rc != SQLITE_DONE)
				sqlite_err(s, s->base.err, sqlite_sql[op]);
			else
				bench_fail(s->base.err, "%.*s: no such key",
					   (int)d[i].klen, d[i].key);
			sqlite_step(s, ST_ROLLBACK);
			return -1;
		}
	}
	return sqlite_step(s, ST_COMMIT);
}

static int sqlite_insert(struct bench_store *bs, const struct bench_doc *d,
			 size_t n)
{
	return sqlite_write((struct sqlite_store *)bs, ST_INSERT, d, n);
}

static int sqlite_update(struct bench_store *bs, const struct bench_doc *d,
			 size_t n)
{
	return sqlite_write((struct sqlite_store *)bs, ST_UPDATE, d, n);
}

static int sqlite_get(struct bench_store *bs, const char *key, size_t klen,
		      void *buf, size_t cap, size_t *len)
{
	struct sqlite_store *s = (struct sqlite_store *)bs;
	sqlite3_stmt *st = s->st[ST_GET];
	int rc, found = 0;

	sqlite3_bind_text(st, 1, key, (int)klen, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const void *v = sqlite3_column_blob(st, 0);

		*len = (size_t)sqlite3_column_bytes(st, 0);
		found = 1;
		if (*len > cap)
			found = bench_fail(bs->err, "value of %zu bytes", *len);
		else if (*len)
			memcpy(buf, v, *len);
	} else if (rc != SQLITE_DONE) {
		found = sqlite_err(s, bs->err, sqlite_sql[ST_GET]);
	}
	sqlite3_reset(st);
	return found;
}

static int sqlite_scan(struct bench_store *bs, bench_scan_cb cb, void *arg)
{
	struct sqlite_store *s = (struct sqlite_store *)bs;
	sqlite3_stmt *st = s->st[ST_SCAN];
	int rc, stop = 0;

	while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *k = (const char *)sqlite3_column_text(st, 0);
		size_t kl = (size_t)sqlite3_column_bytes(st, 0);
		const void *v = sqlite3_column_blob(st, 1);
		size_t vl = (size_t)sqlite3_column_bytes(st, 1);

		stop = cb(arg, k, kl, v, vl);
	}
	sqlite3_reset(st);
	if (stop)
		return stop;
	return rc == SQLITE_DONE ? 0 : sqlite_err(s, bs->err,
						  sqlite_sql[ST_SCAN]);
}

static int sqlite_close(struct bench_store *bs, char *err)
{
	struct sqlite_store *s = (struct sqlite_store *)bs;
	int rc;

	for (int i = 0; i < ST_COUNT; i++) {
		sqlite3_finalize(s->st[i]);
		s->st[i] = NULL;
	}
	rc = sqlite3_close(s->db);
	if (rc != SQLITE_OK)
		bench_fail(err, "close: %s", sqlite3_errstr(rc));
	else
		s->db = NULL;
	sqlite_free(s);
	return rc == SQLITE_OK ? 0 : -1;
}

const struct bench_ops bench_sqlite_ops = {
	.name = "sqlite",
	.open = sqlite_connect,
	.insert_batch = sqlite_insert,
	.get = sqlite_get,
	.update_batch = sqlite_update,
	.scan = sqlite_scan,
	.close = sqlite_close,
	.reopen = sqlite_connect,
	.disk_usage = bench_store_usage,
};
