/*
 * CouchDB's HTTP API: routing and the server and database endpoints
 * (api.h). Documents, attachments and _bulk_get are in api_doc.c.
 *
 * Every handler replies exactly once (http.h) and returns 0, or a
 * negative code when no reply could be made. A handler of /{db}/...
 * runs with the database acquired from the catalog; a streamed
 * _changes feed acquires it again for the life of the stream.
 *
 * Status codes, error names and reasons follow CouchDB 3.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "engine/bbuf.h"
#include "engine/db.h"
#include "engine/docdb.h"
#include "engine/error.h"
#include "engine/revtree.h"
#include "sync/api.h"
#include "sync/catalog.h"
#include "sync/http.h"
#include "sync/url.h"

#define API_COUCH_VERSION "3.3.3"
#define API_JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define API_MAX_UUIDS 1000u
#define API_FEED_BATCH 256u             /* rows scanned per changes step */
#define API_CHANGES_TIMEOUT 60000       /* ms, CouchDB's changes_timeout */
#define API_ILLEGAL_DB "Name: '%s'. Only lowercase characters (a-z), " \
	"digits (0-9), and any of the characters _, $, (, ), +, -, and / " \
	"are allowed. Must begin with a letter."

/* ---- small helpers ---- */

static struct json_object *jstr(const char *s)
{
	return json_object_new_string(s);
}

static struct json_object *jstrn(const char *s, size_t len)
{
	return json_object_new_string_len(s, (int)len);
}

static struct json_object *jrev(const struct rev *rv)
{
	char buf[REV_STR_SIZE];

	if (rev_format(rv, buf, sizeof(buf)))
		return NULL;
	return jstr(buf);
}

static int reply_ok(struct hreq *r, int status)
{
	struct json_object *j = json_object_new_object();

	json_object_object_add(j, "ok", json_object_new_boolean(1));
	return hreq_reply_json(r, status, j);
}

static int reply_method(struct hreq *r, const char *allowed)
{
	char reason[128];

	snprintf(reason, sizeof(reason), "Only %s allowed", allowed);
	hreq_header_add(r, "Allow", allowed);
	return hreq_reply_error(r, 405, "method_not_allowed", reason);
}

static int reply_bad(struct hreq *r, const char *fmt, ...)
{
	char reason[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	return hreq_reply_error(r, 400, "bad_request", reason);
}

static int reply_query(struct hreq *r, const char *name, const char *value)
{
	char reason[512];

	snprintf(reason, sizeof(reason), "Invalid value for %s: \"%.400s\"",
		 name, value);
	return hreq_reply_error(r, 400, "query_parse_error", reason);
}

static int reply_no_db(struct hreq *r)
{
	return hreq_reply_error(r, 404, "not_found", "Database does not exist.");
}

static int reply_illegal_db(struct hreq *r, const char *name)
{
	char reason[512];

	snprintf(reason, sizeof(reason), API_ILLEGAL_DB, name);
	return hreq_reply_error(r, 400, "illegal_database_name", reason);
}

static bool is(const struct hreq *r, const char *method)
{
	return !strcmp(r->method, method);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 32 random lowercase hex digits (CouchDB's uuids) into buf[33]. */
static int api_uuid(char buf[33])
{
	uint8_t raw[16];
	size_t got = 0;

	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);

		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0)
			got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(buf + 2 * i, 3, "%02x", raw[i]);
	return 0;
}

/* Is s[0..len) UTF-8 (no overlong forms, surrogates or NUL)? */
static bool utf8_valid(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len;) {
		unsigned c = s[i], n, min, cp;

		if (!c)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			n = 1, min = 0x80, cp = c & 0x1f;
		else if ((c & 0xf0) == 0xe0)
			n = 2, min = 0x800, cp = c & 0x0f;
		else if ((c & 0xf8) == 0xf0)
			n = 3, min = 0x10000, cp = c & 0x07;
		else
			return false;
		if (len - i <= n)
			return false;
		for (unsigned k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

/*
 * Parse text (NUL-terminated at len) as one JSON value, strictly, and
 * only when it is UTF-8. NULL when invalid; the caller replies.
 */
static struct json_object *json_parse_text(const char *s, size_t len)
{
	struct json_tokener *tok;
	struct json_object *j;
	size_t end;

	if (len >= INT32_MAX || !utf8_valid((const unsigned char *)s, len) ||
	    !(tok = json_tokener_new()))
		return NULL;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT |
				    JSON_TOKENER_VALIDATE_UTF8);
	/* the NUL ends a number at the end of the text */
	j = json_tokener_parse_ex(tok, s, (int)len + 1);
	end = json_tokener_get_parse_end(tok);
	if (j && (end < len ||
		  (json_tokener_get_error(tok) != json_tokener_success))) {
		json_object_put(j);
		j = NULL;
	}
	json_tokener_free(tok);
	return j;
}

struct json_object *api_json_parse(const char *s, size_t len)
{
	return json_parse_text(s, len);
}

/* The request body as JSON; NULL after replying 400 (*rc: the reply's). */
static struct json_object *req_json(struct hreq *r, int *rc)
{
	struct json_object *j = NULL;

	if (!(j = json_parse_text(r->body, r->len)))
		*rc = hreq_reply_error(r, 400, "bad_request",
				       "invalid UTF-8 JSON");
	return j;
}

/* The body as a JSON object; NULL after replying 400. */
static struct json_object *req_object(struct hreq *r, int *rc)
{
	struct json_object *j = req_json(r, rc);

	if (j && !json_object_is_type(j, json_type_object)) {
		json_object_put(j);
		*rc = reply_bad(r, "Request body must be a JSON object");
		return NULL;
	}
	return j;
}

/* Query booleans, integers and JSON: 0, or BARREL_E_INVALID (the caller
 * replies query_parse_error). Absent arguments leave *out alone. */
static int arg_bool(struct hreq *r, const char *name, bool *out)
{
	const char *v = hreq_arg(r, name);

	if (!v)
		return 0;
	if (!strcmp(v, "true"))
		*out = true;
	else if (!strcmp(v, "false"))
		*out = false;
	else
		return BARREL_E_INVALID;
	return 0;
}

static int arg_u64(struct hreq *r, const char *name, uint64_t *out)
{
	const char *v = hreq_arg(r, name);
	char *end;

	if (!v)
		return 0;
	errno = 0;
	if (!*v || *v == '-' || *v == '+')
		return BARREL_E_INVALID;
	*out = strtoull(v, &end, 10);
	return *end || errno ? BARREL_E_INVALID : 0;
}

static int arg_json(struct hreq *r, const char *name, struct json_object **out)
{
	const char *v = hreq_arg(r, name);

	*out = NULL;
	if (!v)
		return 0;
	if (!(*out = json_parse_text(v, strlen(v))))
		return strcmp(v, "null") ? BARREL_E_INVALID : 0;
	return 0;
}

/* ---- server endpoints ---- */

static int api_root(struct hreq *r)
{
	struct json_object *j, *vendor;

	if (!is(r, "GET") && !is(r, "HEAD"))
		return reply_method(r, "GET,HEAD");
	j = json_object_new_object();
	vendor = json_object_new_object();
	json_object_object_add(j, "couchdb", jstr("Welcome"));
	json_object_object_add(j, "version", jstr(API_COUCH_VERSION));
	json_object_object_add(vendor, "name", jstr("barrelfs"));
	json_object_object_add(vendor, "version", jstr(PACKAGE_VERSION));
	json_object_object_add(j, "vendor", vendor);
	json_object_object_add(j, "features", json_object_new_array());
	return hreq_reply_json(r, 200, j);
}

static int api_up(struct hreq *r)
{
	struct json_object *j;

	if (!is(r, "GET") && !is(r, "HEAD"))
		return reply_method(r, "GET,HEAD");
	j = json_object_new_object();
	json_object_object_add(j, "status", jstr("ok"));
	json_object_object_add(j, "seeds", json_object_new_object());
	return hreq_reply_json(r, 200, j);
}

static int api_session(struct hreq *r)
{
	struct json_object *j, *ctx, *info, *h;

	if (!is(r, "GET") && !is(r, "HEAD"))
		return reply_method(r, "GET,HEAD");
	j = json_object_new_object();
	ctx = json_object_new_object();
	info = json_object_new_object();
	h = json_object_new_array();
	json_object_object_add(j, "ok", json_object_new_boolean(1));
	json_object_object_add(ctx, "name", r->user ? jstr(r->user) : NULL);
	json_object_object_add(ctx, "roles", json_object_new_array());
	json_object_object_add(j, "userCtx", ctx);
	json_object_array_add(h, jstr("default"));
	json_object_object_add(info, "authentication_handlers", h);
	if (r->user)
		json_object_object_add(info, "authenticated", jstr("default"));
	json_object_object_add(j, "info", info);
	return hreq_reply_json(r, 200, j);
}

static int api_uuids(struct hreq *r)
{
	struct json_object *j, *a;
	uint64_t count = 1;
	char buf[33];
	int rc;

	if (!is(r, "GET") && !is(r, "HEAD"))
		return reply_method(r, "GET,HEAD");
	if (arg_u64(r, "count", &count))
		return reply_query(r, "count", hreq_arg(r, "count"));
	if (count > API_MAX_UUIDS)
		return hreq_reply_error(r, 400, "bad_request",
					"count parameter too large");
	a = json_object_new_array();
	for (uint64_t i = 0; i < count; i++) {
		if ((rc = api_uuid(buf))) {
			json_object_put(a);
			return hreq_reply_rc(r, rc, NULL);
		}
		json_object_array_add(a, jstr(buf));
	}
	j = json_object_new_object();
	json_object_object_add(j, "uuids", a);
	return hreq_reply_json(r, 200, j);
}

static int all_dbs_cb(void *arg, const char *name)
{
	return json_object_array_add(arg, jstr(name)) ? -ENOMEM : 0;
}

/* A start/end key argument as a string (NULL when absent). */
static int arg_key(struct hreq *r, const char *name, const char *alt,
		   struct json_object **out)
{
	int rc = arg_json(r, name, out);

	if (!rc && !*out && alt)
		rc = arg_json(r, alt, out);
	if (!rc && *out && !json_object_is_type(*out, json_type_string)) {
		json_object_put(*out);
		*out = NULL;
		rc = BARREL_E_INVALID;
	}
	return rc;
}

static int api_all_dbs(struct hreq *r)
{
	struct json_object *all, *out, *sk = NULL, *ek = NULL;
	uint64_t limit = UINT64_MAX, skip = 0;
	bool desc = false;
	int rc;

	if (!is(r, "GET") && !is(r, "HEAD"))
		return reply_method(r, "GET,HEAD");
	if (arg_u64(r, "limit", &limit) || arg_u64(r, "skip", &skip) ||
	    arg_bool(r, "descending", &desc) ||
	    arg_key(r, "startkey", "start_key", &sk) ||
	    arg_key(r, "endkey", "end_key", &ek)) {
		json_object_put(sk);
		return hreq_reply_error(r, 400, "query_parse_error",
					"Invalid query parameter");
	}
	all = json_object_new_array();
	if ((rc = r->cat->list(r->cat->arg, all_dbs_cb, all))) {
		json_object_put(all);
		json_object_put(sk);
		json_object_put(ek);
		return hreq_reply_rc(r, rc, NULL);
	}
	out = json_object_new_array();
	for (size_t k = 0, n = json_object_array_length(all); k < n; k++) {
		struct json_object *v = json_object_array_get_idx(all,
			desc ? n - 1 - k : k);
		const char *name = json_object_get_string(v);
		int cs = sk ? strcmp(name, json_object_get_string(sk)) : 0;
		int ce = ek ? strcmp(name, json_object_get_string(ek)) : 0;

		if (desc ? cs > 0 : cs < 0)
			continue;
		if (desc ? ce < 0 : ce > 0)
			break;
		if (skip) {
			skip--;
			continue;
		}
		if (json_object_array_length(out) >= limit)
			break;
		json_object_array_add(out, json_object_get(v));
	}
	json_object_put(all);
	json_object_put(sk);
	json_object_put(ek);
	return hreq_reply_json(r, 200, out);
}

/* ---- /{db} ---- */

/* "Location: /db[/id]" (CouchDB gives a URL; a path resolves the same). */
static int add_location(struct hreq *r, const char *db, const char *id)
{
	char *edb = url_escape(db, false);
	char *eid = id ? url_escape(id, true) : NULL;
	struct bbuf b = { 0 };
	int rc = -ENOMEM;

	if (edb && (!id || eid) &&
	    !(rc = bbuf_addf(&b, "/%s%s%s", edb, id ? "/" : "", id ? eid : "")))
		rc = hreq_header_add(r, "Location", b.p);
	bbuf_release(&b);
	free(eid);
	free(edb);
	return rc;
}

static int db_create(struct hreq *r, const char *name)
{
	int rc;

	if (!bdb_name_valid(name))
		return reply_illegal_db(r, name);
	rc = r->cat->create(r->cat->arg, name);
	if (rc == BARREL_E_EXISTS)
		return hreq_reply_error(r, 412, "file_exists",
			"The database could not be created, the file already exists.");
	if (rc == BARREL_E_INVALID)
		return reply_illegal_db(r, name);
	if (rc)
		return hreq_reply_rc(r, rc, NULL);
	if ((rc = add_location(r, name, NULL)))
		return hreq_reply_rc(r, rc, NULL);
	return reply_ok(r, 201);
}

static int db_drop(struct hreq *r, const char *name)
{
	int rc;

	if (hreq_arg(r, "rev"))
		return reply_bad(r, "You tried to DELETE a database with a "
				 "?rev= parameter. Did you mean to DELETE a "
				 "document instead?");
	rc = r->cat->drop(r->cat->arg, name);
	if (rc == BARREL_E_NOTFOUND)
		return reply_no_db(r);
	if (rc == BARREL_E_INVALID)
		return reply_illegal_db(r, name);
	if (rc)
		return hreq_reply_rc(r, rc, NULL);
	return reply_ok(r, 200);
}

struct doc_count {
	uint64_t live, deleted;
};

static int count_cb(void *arg, const struct doc_row *row)
{
	struct doc_count *c = arg;

	if (row->deleted)
		c->deleted++;
	else
		c->live++;
	return 0;
}

/*
 * Count the documents of [start, end) in snap. A scan of the id index:
 * the engine keeps no running count yet, so GET /{db} and total_rows cost
 * O(documents).
 */
static int count_docs(struct docdb *d, struct bsnap *snap, const char *start,
		      size_t slen, const char *end, size_t elen, bool deleted,
		      struct doc_count *c)
{
	memset(c, 0, sizeof(*c));
	return docdb_all_docs(d, snap, start, slen, end, elen,
			      deleted ? DOC_ROWS_DELETED : 0, count_cb, c);
}

static int db_info(struct hreq *r, struct docdb *d, const char *name)
{
	struct json_object *j, *sizes;
	struct bdb_stat st;
	struct doc_count c;
	struct bsnap *snap;
	int rc;

	if ((rc = bdb_snapshot(docdb_bdb(d), &snap)))
		return hreq_reply_rc(r, rc, NULL);
	rc = count_docs(d, snap, NULL, 0, NULL, 0, true, &c);
	if (!rc)
		rc = bdb_stat(docdb_bdb(d), &st);
	if (rc) {
		bsnap_release(snap);
		return hreq_reply_rc(r, rc, NULL);
	}
	j = json_object_new_object();
	sizes = json_object_new_object();
	json_object_object_add(j, "db_name", jstr(name));
	json_object_object_add(j, "purge_seq", json_object_new_int(0));
	json_object_object_add(j, "update_seq",
			       json_object_new_uint64(bsnap_seq(snap)));
	json_object_object_add(sizes, "file",
			       json_object_new_uint64(st.disk_bytes));
	json_object_object_add(sizes, "external",
			       json_object_new_uint64(st.live_bytes));
	json_object_object_add(sizes, "active",
			       json_object_new_uint64(st.live_bytes));
	json_object_object_add(j, "sizes", sizes);
	json_object_object_add(j, "props", json_object_new_object());
	json_object_object_add(j, "doc_del_count",
			       json_object_new_uint64(c.deleted));
	json_object_object_add(j, "doc_count", json_object_new_uint64(c.live));
	json_object_object_add(j, "disk_format_version", json_object_new_int(8));
	json_object_object_add(j, "compact_running",
			       json_object_new_boolean(0));
	json_object_object_add(j, "instance_start_time", jstr("0"));
	bsnap_release(snap);
	return hreq_reply_json(r, 200, j);
}

/* CouchDB's name and reason for a failed document write. */
static void put_error(const struct doc_put *p, const char **error,
		      const char **reason)
{
	*error = barrel_http_error(p->rc);
	*reason = p->error[0] ? p->error : barrel_strerror(p->rc);
	if (p->rc == BARREL_E_CONFLICT) {
		*error = "conflict";
		*reason = "Document update conflict.";
	}
}

/* The status of a single failed write (POST /{db}, PUT _local). */
static int reply_put_error(struct hreq *r, const struct doc_put *p)
{
	const char *error, *reason;

	put_error(p, &error, &reason);
	return hreq_reply_error(r, barrel_http_status(p->rc), error, reason);
}

/* {"ok":true,"id":id,"rev":rev} */
static struct json_object *ok_id_rev(const char *id, size_t idlen,
				     struct json_object *rev)
{
	struct json_object *j = json_object_new_object();

	json_object_object_add(j, "ok", json_object_new_boolean(1));
	json_object_object_add(j, "id", jstrn(id, idlen));
	json_object_object_add(j, "rev", rev);
	return j;
}

/* POST /{db}: a new document, with a generated id unless it has one. */
static int db_post(struct hreq *r, struct docdb *d, const char *db)
{
	struct json_object *j, *idv;
	struct doc_put p = { 0 };
	char uuid[33], rev[REV_STR_SIZE];
	int rc;

	if (!(j = req_object(r, &rc)))
		return rc;
	if (json_object_object_get_ex(j, "_id", &idv)) {
		if (!json_object_is_type(idv, json_type_string)) {
			json_object_put(j);
			return reply_bad(r, "Document id must be a string");
		}
		p.id = json_object_get_string(idv);
		p.idlen = (size_t)json_object_get_string_len(idv);
	} else {
		if ((rc = api_uuid(uuid))) {
			json_object_put(j);
			return hreq_reply_rc(r, rc, NULL);
		}
		p.id = uuid;
		p.idlen = 32;
	}
	p.body = r->body;
	p.len = r->len;
	rc = docdb_put(d, &p, 1);
	if (!rc && p.rc)
		rc = p.rc;
	if (rc) {
		p.rc = rc;
		rc = reply_put_error(r, &p);
		json_object_put(j);
		return rc;
	}
	rev_format(&p.rev, rev, sizeof(rev));
	add_location(r, db, p.id);
	hreq_header_add(r, "ETag", rev);
	rc = hreq_reply_json(r, 201, ok_id_rev(p.id, p.idlen, jstr(rev)));
	json_object_put(j);
	return rc;
}

/* ---- _all_docs, _design_docs ---- */

struct all_docs {
	struct docdb *d;
	struct bsnap *snap;
	uint64_t skip, limit;
	bool include_docs;
	struct api_render render;
	struct json_object *rows;
};

/* The rendered winner of id for include_docs (NULL: JSON null). */
static int render_winner(struct docdb *d, struct bsnap *snap, const char *id,
			 size_t idlen, const struct api_render *o,
			 struct json_object **out)
{
	struct doc doc = { 0 };
	int rc = docdb_get(d, snap, id, idlen, NULL,
			   DOC_GET_TREE | DOC_GET_DELETED, &doc);

	*out = NULL;
	if (rc == BARREL_E_NOTFOUND)
		return 0;
	if (!rc)
		rc = api_render_doc(d, snap, &doc, o, out);
	doc_release(&doc);
	return rc;
}

/* One row {"id","key","value":{"rev"[,"deleted"]}[,"doc"]}. */
static int all_docs_row(struct all_docs *a, const char *id, size_t idlen,
			const struct rev *rev, bool deleted)
{
	struct json_object *row = json_object_new_object();
	struct json_object *val = json_object_new_object();
	struct json_object *doc = NULL;
	int rc = 0;

	json_object_object_add(row, "id", jstrn(id, idlen));
	json_object_object_add(row, "key", jstrn(id, idlen));
	json_object_object_add(val, "rev", jrev(rev));
	if (deleted)
		json_object_object_add(val, "deleted",
				       json_object_new_boolean(1));
	json_object_object_add(row, "value", val);
	if (a->include_docs && !deleted)
		rc = render_winner(a->d, a->snap, id, idlen, &a->render, &doc);
	if (a->include_docs)
		json_object_object_add(row, "doc", doc);
	json_object_array_add(a->rows, row);
	return rc;
}

static int all_docs_cb(void *arg, const struct doc_row *row)
{
	struct all_docs *a = arg;

	if (a->skip) {
		a->skip--;
		return 0;
	}
	if (json_object_array_length(a->rows) >= a->limit)
		return 1;
	return all_docs_row(a, row->id, row->idlen, &row->revs[0],
			    row->deleted);
}

/* keys=[...]: one row per key, in order, with not_found and deleted. */
static int all_docs_keys(struct all_docs *a, struct json_object *keys)
{
	int rc = 0;

	for (size_t i = 0; !rc && i < json_object_array_length(keys); i++) {
		struct json_object *k = json_object_array_get_idx(keys, i);
		struct revtree *t = NULL;
		struct json_object *row;
		struct rev win;
		bool deleted;

		if (a->skip) {
			a->skip--;
			continue;
		}
		if (json_object_array_length(a->rows) >= a->limit)
			break;
		if (json_object_is_type(k, json_type_string)) {
			rc = docdb_tree(a->d, a->snap, json_object_get_string(k),
					(size_t)json_object_get_string_len(k),
					&t, NULL);
			if (!rc)
				rc = revtree_winner(t, &win, &deleted);
			revtree_free(t);
			if (!rc) {
				rc = all_docs_row(a, json_object_get_string(k),
					(size_t)json_object_get_string_len(k),
					&win, deleted);
				continue;
			}
			if (rc != BARREL_E_NOTFOUND)
				break;
			rc = 0;
		}
		row = json_object_new_object();
		json_object_object_add(row, "key", json_object_get(k));
		json_object_object_add(row, "error", jstr("not_found"));
		json_object_array_add(a->rows, row);
	}
	return rc;
}

/* The query of _all_docs, from the URL and (POST) the body. */
struct all_docs_q {
	bool desc, inclusive_end, conflicts, include_docs;
	uint64_t skip, limit;
	struct json_object *keys, *key, *sk, *ek;
	struct json_object *body;
};

static void all_docs_q_release(struct all_docs_q *q)
{
	json_object_put(q->keys);
	json_object_put(q->key);
	json_object_put(q->sk);
	json_object_put(q->ek);
	json_object_put(q->body);
}

/* Parse the query; on error reply and return it in *rc. */
static int all_docs_parse(struct hreq *r, struct all_docs_q *q, int *rc)
{
	struct json_object *k;

	memset(q, 0, sizeof(*q));
	q->inclusive_end = true;
	q->limit = UINT64_MAX;
	if (arg_bool(r, "descending", &q->desc) ||
	    arg_bool(r, "inclusive_end", &q->inclusive_end) ||
	    arg_bool(r, "include_docs", &q->include_docs) ||
	    arg_bool(r, "conflicts", &q->conflicts) ||
	    arg_u64(r, "skip", &q->skip) || arg_u64(r, "limit", &q->limit) ||
	    arg_json(r, "keys", &q->keys) || arg_key(r, "key", NULL, &q->key) ||
	    arg_key(r, "startkey", "start_key", &q->sk) ||
	    arg_key(r, "endkey", "end_key", &q->ek)) {
		*rc = hreq_reply_error(r, 400, "query_parse_error",
				       "Invalid query parameter");
		return BARREL_E_INVALID;
	}
	if (is(r, "POST")) {
		if (!(q->body = req_object(r, rc)))
			return BARREL_E_INVALID;
		if (json_object_object_get_ex(q->body, "keys", &k)) {
			json_object_put(q->keys);
			q->keys = json_object_get(k);
		}
	}
	if (q->keys && !json_object_is_type(q->keys, json_type_array)) {
		*rc = hreq_reply_error(r, 400, "bad_request",
				       "`keys` member must be an array.");
		return BARREL_E_INVALID;
	}
	return 0;
}

/* [lo, hi) of the query as id bounds; buffers hold "key\0" forms. */
struct id_range {
	const char *lo, *hi;
	size_t lolen, hilen;
	char *lobuf, *hibuf;
};

/* key, or key + "\0" (the smallest id after key) when past is set. */
static int range_key(struct json_object *k, bool past, const char **out,
		     size_t *len, char **buf)
{
	size_t n = (size_t)json_object_get_string_len(k);

	*out = json_object_get_string(k);
	*len = n;
	if (!past)
		return 0;
	if (!(*buf = malloc(n + 1)))
		return -ENOMEM;
	memcpy(*buf, *out, n);
	(*buf)[n] = '\0';
	*out = *buf;
	*len = n + 1;
	return 0;
}

static int range_make(struct all_docs_q *q, struct id_range *g)
{
	struct json_object *start = q->key ? q->key : q->sk;
	struct json_object *end = q->key ? q->key : q->ek;
	bool incl = q->key ? true : q->inclusive_end;
	int rc = 0;

	memset(g, 0, sizeof(*g));
	if (!q->desc) {
		if (start)
			rc = range_key(start, false, &g->lo, &g->lolen, &g->lobuf);
		if (!rc && end)
			rc = range_key(end, incl, &g->hi, &g->hilen, &g->hibuf);
	} else {
		if (start)
			rc = range_key(start, true, &g->hi, &g->hilen, &g->hibuf);
		if (!rc && end)
			rc = range_key(end, !incl, &g->lo, &g->lolen, &g->lobuf);
	}
	return rc;
}

static void range_release(struct id_range *g)
{
	free(g->lobuf);
	free(g->hibuf);
}

/* Rows of the range, and offset: the rows before it in its order. */
static int all_docs_range(struct all_docs *a, struct all_docs_q *q,
			  uint64_t *offset)
{
	struct doc_count before = { 0 };
	struct id_range g;
	int rc = range_make(q, &g);

	if (!rc && g.lo && g.hi &&
	    (memcmp(g.lo, g.hi, g.lolen < g.hilen ? g.lolen : g.hilen) > 0 ||
	     (g.lolen >= g.hilen && !memcmp(g.lo, g.hi, g.hilen)))) {
		range_release(&g);          /* empty range */
		*offset = 0;
		return 0;
	}
	if (!rc && !q->desc && g.lo)
		rc = count_docs(a->d, a->snap, NULL, 0, g.lo, g.lolen, false,
				&before);
	else if (!rc && q->desc && g.hi)
		rc = count_docs(a->d, a->snap, g.hi, g.hilen, NULL, 0, false,
				&before);
	*offset = before.live + a->skip;
	if (!rc)
		rc = docdb_all_docs(a->d, a->snap, g.lo, g.lolen, g.hi, g.hilen,
				    q->desc ? DOC_ROWS_DESCENDING : 0,
				    all_docs_cb, a);
	range_release(&g);
	return rc < 0 ? rc : 0;
}

/* Narrow the query to the ids between "_design/" and "_design0". */
static void design_range(struct all_docs_q *q)
{
	const char *lo = "_design/", *hi = "_design0";
	struct json_object **first = q->desc ? &q->ek : &q->sk;
	struct json_object **last = q->desc ? &q->sk : &q->ek;

	if (!*first || strcmp(json_object_get_string(*first), lo) < 0) {
		json_object_put(*first);
		*first = jstr(lo);
	}
	if (!*last || strcmp(json_object_get_string(*last), hi) > 0) {
		json_object_put(*last);
		*last = jstr(hi);
	}
}

/* GET/POST /{db}/_all_docs (design: /{db}/_design_docs). */
static int api_all_docs(struct hreq *r, struct docdb *d, bool design)
{
	struct all_docs_q q;
	struct all_docs a = { .d = d };
	struct doc_count total;
	struct json_object *j;
	uint64_t offset = 0;
	int rc;

	if (!is(r, "GET") && !is(r, "HEAD") && !is(r, "POST"))
		return reply_method(r, "GET,HEAD,POST");
	if (all_docs_parse(r, &q, &rc)) {
		all_docs_q_release(&q);
		return rc;
	}
	if (design && !q.key)
		design_range(&q);
	a.skip = q.skip;
	a.limit = q.limit;
	a.include_docs = q.include_docs;
	a.render.conflicts = q.conflicts;
	a.rows = json_object_new_array();
	rc = bdb_snapshot(docdb_bdb(d), &a.snap);
	if (!rc)
		rc = count_docs(d, a.snap, design ? "_design/" : NULL,
				design ? 8 : 0, design ? "_design0" : NULL,
				design ? 8 : 0, false, &total);
	if (!rc)
		rc = q.keys ? all_docs_keys(&a, q.keys)
			    : all_docs_range(&a, &q, &offset);
	if (a.snap)
		bsnap_release(a.snap);
	if (rc) {
		json_object_put(a.rows);
		all_docs_q_release(&q);
		return hreq_reply_rc(r, rc, NULL);
	}
	j = json_object_new_object();
	json_object_object_add(j, "total_rows", json_object_new_uint64(total.live));
	json_object_object_add(j, "offset",
			       q.keys ? NULL : json_object_new_uint64(offset));
	json_object_object_add(j, "rows", a.rows);
	all_docs_q_release(&q);
	return hreq_reply_json(r, 200, j);
}

/* ---- _changes ---- */

static void bbuf_addj(struct bbuf *b, struct json_object *j)
{
	size_t len;
	const char *s = json_object_to_json_string_length(j, API_JSON_FLAGS,
							  &len);

	if (!s && !b->err)
		b->err = -ENOMEM;
	else if (s)
		bbuf_add(b, s, len);
}

enum feed_mode { FEED_NORMAL, FEED_LONGPOLL, FEED_CONTINUOUS, FEED_EVENTSOURCE };
enum feed_filter { FILTER_NONE, FILTER_DOC_IDS, FILTER_DESIGN };
enum feed_phase { PH_PREFIX, PH_ROWS, PH_SUFFIX, PH_END };

/*
 * A changes feed, normal or not, produced a step at a time as a
 * streamed reply. Steps (feed_step):
 *  1. PREFIX: '{"results":[' (normal and longpoll);
 *  2. ROWS: scan API_FEED_BATCH rows after since into the text; when the
 *     feed is caught up, a normal feed (or a longpoll one that sent a
 *     row) moves on; the others wait for a commit in slices of at most a
 *     second, sending heartbeats, until their timeout;
 *  3. SUFFIX: last_seq and pending.
 * Each step acquires the database by name and releases it after, so
 * that a feed never keeps DELETE /{db} waiting for more than a step; a
 * feed whose database went away ends.
 */
struct feed {
	const struct catalog *cat;
	char *db;                     /* the database's name */
	struct docdb *d;              /* during a step (and feed_parse) */
	struct srv *srv;
	enum feed_mode mode;
	enum feed_filter filter;
	struct json_object *doc_ids;  /* FILTER_DOC_IDS: array of strings */
	bool all_leaves, include_docs, desc;
	struct api_render render;
	uint64_t since;               /* rows after this are next */
	uint64_t limit, sent;         /* limit 0: none */
	bool limited;                 /* stopped by limit */
	uint64_t last_seq;            /* for the suffix */
	int64_t heartbeat;            /* ms, 0: none */
	int64_t timeout;              /* ms, -1: none */
	int64_t deadline, next_beat;  /* now_ms() times */
	enum feed_phase phase;
	struct bsnap *snap;           /* during a scan */
	uint64_t scanned;             /* rows scanned by this scan */
	struct bbuf out;
	size_t outpos;
};

static void feed_free(void *arg)
{
	struct feed *f = arg;

	free(f->db);
	json_object_put(f->doc_ids);
	free(f->out.p);
	free(f);
}

static bool feed_match(const struct feed *f, const struct doc_row *row)
{
	if (f->filter == FILTER_DESIGN)
		return row->idlen > 8 && !memcmp(row->id, "_design/", 8);
	if (f->filter != FILTER_DOC_IDS)
		return true;
	for (size_t i = 0; i < json_object_array_length(f->doc_ids); i++) {
		struct json_object *v = json_object_array_get_idx(f->doc_ids, i);

		if ((size_t)json_object_get_string_len(v) == row->idlen &&
		    !memcmp(json_object_get_string(v), row->id, row->idlen))
			return true;
	}
	return false;
}

/* The JSON of one change. */
static int feed_row_json(struct feed *f, const struct doc_row *row,
			 struct json_object **out)
{
	struct json_object *j = json_object_new_object();
	struct json_object *ch = json_object_new_array(), *doc = NULL;
	int rc = 0;

	json_object_object_add(j, "seq", json_object_new_uint64(row->seq));
	json_object_object_add(j, "id", jstrn(row->id, row->idlen));
	for (size_t i = 0; i < row->nrevs; i++) {
		struct json_object *c = json_object_new_object();

		json_object_object_add(c, "rev", jrev(&row->revs[i]));
		json_object_array_add(ch, c);
	}
	json_object_object_add(j, "changes", ch);
	if (row->deleted)
		json_object_object_add(j, "deleted", json_object_new_boolean(1));
	if (f->include_docs) {
		rc = render_winner(f->d, f->snap, row->id, row->idlen,
				   &f->render, &doc);
		json_object_object_add(j, "doc", doc);
	}
	if (rc)
		json_object_put(j);
	else
		*out = j;
	return rc;
}

static int feed_cb(void *arg, const struct doc_row *row)
{
	struct feed *f = arg;
	struct json_object *j;
	int rc;

	f->scanned++;
	if (!f->desc)
		f->since = row->seq;
	if (!feed_match(f, row))
		return 0;
	if ((rc = feed_row_json(f, row, &j)))
		return rc;
	if (f->mode == FEED_EVENTSOURCE)
		bbuf_add(&f->out, "data: ", 6);
	else if (f->mode != FEED_CONTINUOUS && f->sent)
		bbuf_add(&f->out, ",\n", 2);
	bbuf_addj(&f->out, j);
	json_object_put(j);
	if (f->mode == FEED_EVENTSOURCE)
		bbuf_addf(&f->out, "\nid: %" PRIu64 "\n\n", row->seq);
	else if (f->mode == FEED_CONTINUOUS)
		bbuf_add(&f->out, "\n", 1);
	f->last_seq = row->seq;
	f->sent++;
	if (f->limit && f->sent >= f->limit) {
		f->limited = true;
		return 1;
	}
	return f->out.err;
}

/* Step 2's scan: rows after since (descending: all, once). Returns 0 or
 * an error; f->scanned tells whether the feed is caught up. */
static int feed_scan(struct feed *f)
{
	uint64_t batch = f->desc ? 0 : API_FEED_BATCH, last;
	unsigned flags = (f->desc ? DOC_ROWS_DESCENDING : 0) |
			 (f->all_leaves ? DOC_ROWS_ALL_LEAVES : 0);
	int rc = bdb_snapshot(docdb_bdb(f->d), &f->snap);

	if (rc)
		return rc;
	f->scanned = 0;
	rc = docdb_changes(f->d, f->snap, f->since, batch, flags, feed_cb, f,
			   &last);
	if (rc == 1)
		rc = 0;
	if (!rc && !f->desc && (!batch || f->scanned < batch) && !f->limited &&
	    bsnap_seq(f->snap) > f->since)
		f->since = bsnap_seq(f->snap);  /* caught up with the snapshot */
	if (!rc && f->desc && !f->sent)
		f->last_seq = bsnap_seq(f->snap);
	bsnap_release(f->snap);
	f->snap = NULL;
	return rc;
}

static int pending_cb(void *arg, const struct doc_row *row)
{
	struct feed *f = arg;

	if (feed_match(f, row))
		f->scanned++;
	return 0;
}

/* Changes left after the feed stopped at its limit. */
static uint64_t feed_pending(struct feed *f)
{
	if (!f->limited || f->desc)
		return 0;
	f->scanned = 0;
	if (docdb_changes(f->d, NULL, f->since, 0, 0, pending_cb, f, NULL))
		return 0;
	return f->scanned;
}

/* Wait for a commit, a heartbeat or the timeout, at most a second. */
static void feed_wait(struct feed *f)
{
	int64_t now = now_ms(), until = now + 1000;

	if (f->heartbeat && now >= f->next_beat) {
		bbuf_add(&f->out, "\n", 1);
		f->next_beat = now + f->heartbeat;
		return;
	}
	if (f->timeout >= 0 && now >= f->deadline) {
		f->phase = PH_SUFFIX;
		return;
	}
	if (f->heartbeat && f->next_beat < until)
		until = f->next_beat;
	if (f->timeout >= 0 && f->deadline < until)
		until = f->deadline;
	if (bdb_wait(docdb_bdb(f->d), f->since, (int)(until - now)) < 0)
		f->phase = PH_SUFFIX;
}

static int feed_rows(struct feed *f)
{
	uint64_t sent = f->sent;
	int rc = feed_scan(f);

	if (rc)
		return rc;
	if (f->limited || f->desc) {
		f->phase = PH_SUFFIX;
		return 0;
	}
	if (f->sent > sent && f->mode == FEED_CONTINUOUS && f->timeout >= 0)
		f->deadline = now_ms() + f->timeout;
	if (f->scanned)
		return 0;
	if (!f->desc)
		f->last_seq = f->since;
	if (f->mode == FEED_NORMAL || (f->mode == FEED_LONGPOLL && f->sent))
		f->phase = PH_SUFFIX;
	else
		feed_wait(f);
	return 0;
}

static int feed_step(struct feed *f)
{
	switch (f->phase) {
	case PH_PREFIX:
		if (f->mode == FEED_NORMAL || f->mode == FEED_LONGPOLL)
			bbuf_add(&f->out, "{\"results\":[\n", 13);
		f->phase = PH_ROWS;
		return 0;
	case PH_ROWS:
		return feed_rows(f);
	case PH_SUFFIX:
		if (!f->desc && !f->limited)
			f->last_seq = f->since;
		if (f->mode == FEED_NORMAL || f->mode == FEED_LONGPOLL)
			bbuf_addf(&f->out, "%s],\n\"last_seq\":%" PRIu64
				  ",\"pending\":%" PRIu64 "}\n",
				  f->sent ? "\n" : "", f->last_seq,
				  feed_pending(f));
		else if (f->mode == FEED_CONTINUOUS)
			bbuf_addf(&f->out, "{\"last_seq\":%" PRIu64
				  ",\"pending\":%" PRIu64 "}\n", f->last_seq,
				  feed_pending(f));
		f->phase = PH_END;
		return 0;
	default:
		return 0;
	}
}

/* One step with the database held; BARREL_E_NOTFOUND when it is gone. */
static int feed_step_held(struct feed *f)
{
	void *hold;
	int rc = f->cat->acquire(f->cat->arg, f->db, &f->d, &hold);

	if (rc)
		return rc;
	rc = feed_step(f);
	f->cat->release(f->cat->arg, hold);
	f->d = NULL;
	return rc;
}

static ssize_t feed_stream(void *arg, uint64_t pos, char *buf, size_t max)
{
	struct feed *f = arg;
	size_t n;
	int rc;

	(void)pos;
	while (f->outpos == f->out.len) {
		f->out.len = f->outpos = 0;
		if (f->phase == PH_END || srv_stopping(f->srv))
			return HREQ_STREAM_END;
		rc = feed_step_held(f);
		if (rc == BARREL_E_NOTFOUND)
			return HREQ_STREAM_END;
		if (rc || f->out.err)
			return HREQ_STREAM_ERROR;
	}
	n = f->out.len - f->outpos;
	if (n > max)
		n = max;
	memcpy(buf, f->out.p + f->outpos, n);
	f->outpos += n;
	return (ssize_t)n;
}

/* The feed's filter: filter=_doc_ids (doc_ids in the query or body),
 * filter=_design. On error reply and return it in *rc. */
static int feed_filter_parse(struct hreq *r, struct feed *f, int *rc)
{
	const char *filter = hreq_arg(r, "filter");
	struct json_object *body = NULL, *ids = NULL;

	if (!filter || !*filter)
		return 0;
	if (!strcmp(filter, "_design")) {
		f->filter = FILTER_DESIGN;
		return 0;
	}
	if (strcmp(filter, "_doc_ids")) {
		*rc = hreq_reply_error(r, 400, "bad_request",
				       "filter parameter is not supported");
		return BARREL_E_INVALID;
	}
	f->filter = FILTER_DOC_IDS;
	if (is(r, "POST") && r->len) {
		if (!(body = req_object(r, rc)))
			return BARREL_E_INVALID;
		if (json_object_object_get_ex(body, "doc_ids", &ids))
			f->doc_ids = json_object_get(ids);
		json_object_put(body);
	}
	if (!f->doc_ids && arg_json(r, "doc_ids", &f->doc_ids)) {
		*rc = reply_query(r, "doc_ids", hreq_arg(r, "doc_ids"));
		return BARREL_E_INVALID;
	}
	for (size_t i = 0; f->doc_ids &&
	     json_object_is_type(f->doc_ids, json_type_array) &&
	     i < json_object_array_length(f->doc_ids); i++)
		if (!json_object_is_type(json_object_array_get_idx(f->doc_ids, i),
					 json_type_string))
			break;
	if (!f->doc_ids || !json_object_is_type(f->doc_ids, json_type_array)) {
		*rc = hreq_reply_error(r, 400, "bad_request",
				       "`doc_ids` filter parameter is not a list of doc ids.");
		return BARREL_E_INVALID;
	}
	return 0;
}

/* heartbeat and timeout as CouchDB reads them. */
static int feed_times(struct hreq *r, struct feed *f)
{
	const char *hb = hreq_arg(r, "heartbeat");
	uint64_t timeout = API_CHANGES_TIMEOUT, hbv = 0;

	f->timeout = API_CHANGES_TIMEOUT;
	if (arg_u64(r, "timeout", &timeout))
		return BARREL_E_INVALID;
	if (hb && !strcmp(hb, "true"))
		hbv = API_CHANGES_TIMEOUT;
	else if (hb && strcmp(hb, "false") && arg_u64(r, "heartbeat", &hbv))
		return BARREL_E_INVALID;
	if (hbv) {
		f->heartbeat = hbv > API_CHANGES_TIMEOUT ? API_CHANGES_TIMEOUT
							 : (int64_t)hbv;
		f->timeout = -1;            /* heartbeats go on forever */
	} else {
		f->timeout = timeout < API_CHANGES_TIMEOUT ? (int64_t)timeout
							   : API_CHANGES_TIMEOUT;
	}
	f->deadline = now_ms() + (f->timeout >= 0 ? f->timeout : 0);
	f->next_beat = now_ms() + f->heartbeat;
	return 0;
}

/* Query of _changes into f. On error reply and return it in *rc. */
static int feed_parse(struct hreq *r, struct feed *f, int *rc)
{
	const char *feed = hreq_arg(r, "feed"), *since = hreq_arg(r, "since");
	const char *style = hreq_arg(r, "style");
	bool conflicts = false, atts = false;

	if (!feed || !strcmp(feed, "normal"))
		f->mode = FEED_NORMAL;
	else if (!strcmp(feed, "longpoll"))
		f->mode = FEED_LONGPOLL;
	else if (!strcmp(feed, "continuous"))
		f->mode = FEED_CONTINUOUS;
	else if (!strcmp(feed, "eventsource"))
		f->mode = FEED_EVENTSOURCE;
	else
		goto out_bad;
	if (since && !strcmp(since, "now"))
		f->since = bdb_seq(docdb_bdb(f->d));
	else if (arg_u64(r, "since", &f->since))
		goto out_bad;
	if (style && strcmp(style, "all_docs") && strcmp(style, "main_only"))
		goto out_bad;
	f->all_leaves = style && !strcmp(style, "all_docs");
	if (arg_u64(r, "limit", &f->limit) ||
	    arg_bool(r, "descending", &f->desc) ||
	    arg_bool(r, "include_docs", &f->include_docs) ||
	    arg_bool(r, "conflicts", &conflicts) ||
	    arg_bool(r, "attachments", &atts) || feed_times(r, f))
		goto out_bad;
	if (f->desc)
		f->mode = FEED_NORMAL;
	f->render.conflicts = conflicts;
	f->render.attachments = atts;
	return feed_filter_parse(r, f, rc);
out_bad:
	*rc = hreq_reply_error(r, 400, "query_parse_error",
			       "Invalid query parameter for _changes");
	return BARREL_E_INVALID;
}

static int api_changes(struct hreq *r, struct docdb *d, const char *db)
{
	struct feed *f;
	int rc;

	if (!is(r, "GET") && !is(r, "HEAD") && !is(r, "POST"))
		return reply_method(r, "GET,HEAD,POST");
	if (!(f = calloc(1, sizeof(*f))))
		return hreq_reply_rc(r, -ENOMEM, NULL);
	f->cat = r->cat;
	f->srv = r->srv;
	f->d = d;
	if (feed_parse(r, f, &rc)) {
		feed_free(f);
		return rc;
	}
	f->d = NULL;
	if (!(f->db = strdup(db))) {
		feed_free(f);
		return hreq_reply_rc(r, -ENOMEM, NULL);
	}
	return hreq_reply_stream(r, 200, f->mode == FEED_EVENTSOURCE
				 ? "text/event-stream" : "application/json",
				 HREQ_SIZE_UNKNOWN, feed_stream, f, feed_free);
}

/* ---- _revs_diff ---- */

int api_revs_parse(struct json_object *a, struct rev **out, size_t *n)
{
	size_t len = json_object_is_type(a, json_type_array)
		     ? json_object_array_length(a) : 0;
	struct rev *revs;

	*out = NULL;
	*n = 0;
	if (!json_object_is_type(a, json_type_array))
		return BARREL_E_INVALID;
	if (!(revs = calloc(len ? len : 1, sizeof(*revs))))
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		struct json_object *v = json_object_array_get_idx(a, i);

		if (!json_object_is_type(v, json_type_string) ||
		    rev_parse(json_object_get_string(v),
			      (size_t)json_object_get_string_len(v), &revs[i])) {
			free(revs);
			return BARREL_E_BADREV;
		}
	}
	*out = revs;
	*n = len;
	return 0;
}

static struct json_object *revs_json(const struct rev *revs, size_t n)
{
	struct json_object *a = json_object_new_array();

	for (size_t i = 0; i < n; i++)
		json_object_array_add(a, jrev(&revs[i]));
	return a;
}

/* One id of _revs_diff into out (nothing when no rev is missing). */
static int revs_diff_one(struct docdb *d, struct bsnap *snap, const char *id,
			 const struct rev *revs, size_t n,
			 struct json_object *out)
{
	bool *missing = calloc(n ? n : 1, sizeof(bool));
	struct revtree *t = NULL;
	struct rev *anc = NULL;
	size_t nanc = 0, nmiss = 0;
	struct json_object *o, *m;
	int rc;

	if (!missing)
		return -ENOMEM;
	rc = docdb_tree(d, snap, id, strlen(id), &t, NULL);
	if (rc == BARREL_E_NOTFOUND) {
		for (size_t i = 0; i < n; i++)
			missing[i] = true;
		rc = 0;
	} else if (!rc) {
		rc = revtree_revs_diff(t, revs, n, missing, &anc, &nanc);
	}
	m = json_object_new_array();
	for (size_t i = 0; !rc && i < n; i++)
		if (missing[i] && ++nmiss)
			json_object_array_add(m, jrev(&revs[i]));
	if (!rc && nmiss) {
		o = json_object_new_object();
		json_object_object_add(o, "missing", json_object_get(m));
		if (nanc)
			json_object_object_add(o, "possible_ancestors",
					       revs_json(anc, nanc));
		json_object_object_add(out, id, o);
	}
	json_object_put(m);
	free(anc);
	free(missing);
	revtree_free(t);
	return rc;
}

static int api_revs_diff(struct hreq *r, struct docdb *d)
{
	struct json_object *body, *out;
	struct bsnap *snap;
	int rc;

	if (!is(r, "POST"))
		return reply_method(r, "POST");
	if (!(body = req_object(r, &rc)))
		return rc;
	if ((rc = bdb_snapshot(docdb_bdb(d), &snap))) {
		json_object_put(body);
		return hreq_reply_rc(r, rc, NULL);
	}
	out = json_object_new_object();
	json_object_object_foreach(body, id, v) {
		struct rev *revs;
		size_t n;

		if ((rc = api_revs_parse(v, &revs, &n)))
			break;
		rc = revs_diff_one(d, snap, id, revs, n, out);
		free(revs);
		if (rc)
			break;
	}
	bsnap_release(snap);
	json_object_put(body);
	if (rc) {
		json_object_put(out);
		return rc == BARREL_E_BADREV || rc == BARREL_E_INVALID
		       ? reply_bad(r, "Invalid rev format")
		       : hreq_reply_rc(r, rc, NULL);
	}
	return hreq_reply_json(r, 200, out);
}

/* ---- local documents ---- */

/* Parse "0-N" (CouchDB's local revisions). */
static int local_rev_parse(const char *s, uint64_t *out)
{
	char *end;

	if (!s || strncmp(s, "0-", 2) || !s[2] || s[2] == '-' || s[2] == '+')
		return BARREL_E_BADREV;
	errno = 0;
	*out = strtoull(s + 2, &end, 10);
	return *end || errno ? BARREL_E_BADREV : 0;
}

static struct json_object *local_rev_json(uint64_t rev)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "0-%" PRIu64, rev);
	return jstr(buf);
}

/* "_local/" + id as JSON. */
static struct json_object *local_id_json(const char *id)
{
	char buf[DOC_MAX_ID + 16];

	snprintf(buf, sizeof(buf), "%s%s", DOC_LOCAL_PREFIX, id);
	return jstr(buf);
}

static int local_get(struct hreq *r, struct docdb *d, const char *id)
{
	struct json_object *stored, *j;
	char *body = NULL;
	size_t len;
	uint64_t rev;
	int rc = docdb_local_get(d, NULL, id, strlen(id), &body, &len, &rev);

	if (rc == BARREL_E_NOTFOUND)
		return hreq_reply_error(r, 404, "not_found", "missing");
	if (rc)
		return hreq_reply_rc(r, rc, NULL);
	stored = json_parse_text(body, len);
	free(body);
	if (!stored || !json_object_is_type(stored, json_type_object)) {
		json_object_put(stored);
		return hreq_reply_rc(r, BARREL_E_CORRUPT, NULL);
	}
	j = json_object_new_object();
	json_object_object_add(j, "_id", local_id_json(id));
	json_object_object_add(j, "_rev", local_rev_json(rev));
	json_object_object_foreach(stored, k, v)
		if (strcmp(k, "_id") && strcmp(k, "_rev"))
			json_object_object_add(j, k, json_object_get(v));
	json_object_put(stored);
	return hreq_reply_json(r, 200, j);
}

/*
 * Write local document id from the object doc (its _id and _rev are
 * dropped; _rev, or rev when given, names the parent). Returns 0 with
 * *out the new N, or an error code with err filled.
 */
static int local_write(struct docdb *d, const char *id, struct json_object *doc,
		       const char *rev, uint64_t *out, char *err)
{
	struct json_object *rv;
	uint64_t parent = 0;
	const char *text;
	size_t len;
	int rc;

	if (!rev && json_object_object_get_ex(doc, "_rev", &rv))
		rev = json_object_get_string(rv);
	if (rev && (rc = local_rev_parse(rev, &parent))) {
		snprintf(err, DOC_ERRLEN, "Invalid rev format");
		return rc;
	}
	json_object_object_del(doc, "_id");
	json_object_object_del(doc, "_rev");
	json_object_object_del(doc, "_revisions");
	text = json_object_to_json_string_length(doc, API_JSON_FLAGS, &len);
	if (!text)
		return -ENOMEM;
	return docdb_local_put(d, id, strlen(id), text, len, parent, out, err);
}

static int reply_local_error(struct hreq *r, int rc, const char *err)
{
	if (rc == BARREL_E_CONFLICT)
		return hreq_reply_error(r, 409, "conflict",
					"Document update conflict.");
	if (rc == BARREL_E_BADREV)
		return reply_bad(r, "Invalid rev format");
	return hreq_reply_rc(r, rc, err && *err ? err : NULL);
}

static int local_put(struct hreq *r, struct docdb *d, const char *id)
{
	char err[DOC_ERRLEN] = "", full[DOC_MAX_ID + 16];
	struct json_object *doc;
	uint64_t rev;
	int rc;

	if (!(doc = req_object(r, &rc)))
		return rc;
	rc = local_write(d, id, doc, hreq_arg(r, "rev"), &rev, err);
	json_object_put(doc);
	if (rc)
		return reply_local_error(r, rc, err);
	snprintf(full, sizeof(full), "%s%s", DOC_LOCAL_PREFIX, id);
	return hreq_reply_json(r, 201, ok_id_rev(full, strlen(full),
					      local_rev_json(rev)));
}

static int local_del(struct hreq *r, struct docdb *d, const char *id)
{
	const char *rev = hreq_arg(r, "rev");
	char full[DOC_MAX_ID + 16];
	uint64_t parent = 0;
	int rc;

	if (!rev)
		rev = hreq_header(r, "If-Match");
	if (!rev)
		return hreq_reply_error(r, 409, "conflict",
					"Document update conflict.");
	if (local_rev_parse(rev, &parent))
		return reply_bad(r, "Invalid rev format");
	rc = docdb_local_del(d, id, strlen(id), parent);
	if (rc == BARREL_E_NOTFOUND)
		return hreq_reply_error(r, 404, "not_found", "missing");
	if (rc)
		return reply_local_error(r, rc, NULL);
	snprintf(full, sizeof(full), "%s%s", DOC_LOCAL_PREFIX, id);
	return hreq_reply_json(r, 200, ok_id_rev(full, strlen(full),
					      local_rev_json(0)));
}

/* /{db}/_local/{id} (id: the rest of the path, joined by '/'). */
static int api_local(struct hreq *r, struct docdb *d, const char *id)
{
	if (!*id || strlen(id) > DOC_MAX_ID)
		return reply_bad(r, "Invalid local document id");
	if (is(r, "GET") || is(r, "HEAD"))
		return local_get(r, d, id);
	if (is(r, "PUT"))
		return local_put(r, d, id);
	if (is(r, "DELETE"))
		return local_del(r, d, id);
	return reply_method(r, "GET,HEAD,PUT,DELETE");
}

struct local_list {
	struct json_object *rows;
	uint64_t skip, limit;
};

static int local_list_cb(void *arg, const char *id, size_t idlen, uint64_t rev)
{
	struct local_list *l = arg;
	struct json_object *row, *val;
	char full[DOC_MAX_ID + 16];

	if (l->skip) {
		l->skip--;
		return 0;
	}
	if (json_object_array_length(l->rows) >= l->limit)
		return 1;
	snprintf(full, sizeof(full), "%s%.*s", DOC_LOCAL_PREFIX, (int)idlen, id);
	row = json_object_new_object();
	val = json_object_new_object();
	json_object_object_add(row, "id", jstr(full));
	json_object_object_add(row, "key", jstr(full));
	json_object_object_add(val, "rev", local_rev_json(rev));
	json_object_object_add(row, "value", val);
	json_object_array_add(l->rows, row);
	return 0;
}

/* GET /{db}/_local_docs: every local document, in id order. */
static int api_local_docs(struct hreq *r, struct docdb *d)
{
	struct local_list l = { .limit = UINT64_MAX };
	struct json_object *j;
	int rc;

	if (!is(r, "GET") && !is(r, "HEAD"))
		return reply_method(r, "GET,HEAD");
	if (arg_u64(r, "skip", &l.skip) || arg_u64(r, "limit", &l.limit))
		return hreq_reply_error(r, 400, "query_parse_error",
					"Invalid query parameter");
	l.rows = json_object_new_array();
	rc = docdb_local_list(d, NULL, "", 0, local_list_cb, &l);
	if (rc < 0) {
		json_object_put(l.rows);
		return hreq_reply_rc(r, rc, NULL);
	}
	j = json_object_new_object();
	json_object_object_add(j, "total_rows", NULL);
	json_object_object_add(j, "offset", NULL);
	json_object_object_add(j, "rows", l.rows);
	return hreq_reply_json(r, 200, j);
}

/* ---- _bulk_docs ---- */

/* One document of a _bulk_docs request. */
struct bulk_item {
	struct json_object *doc;      /* borrowed from the request */
	char *local;                  /* "_local/" id without its prefix */
	char uuid[33];                /* a generated id */
	char *text;                   /* the body given to docdb_put() */
	size_t put;                   /* index in the docdb_put() array */
	int rc;                       /* a local write's result */
	uint64_t local_rev;
	char error[DOC_ERRLEN];
};

/* The result row of item i. */
static struct json_object *bulk_result(const struct bulk_item *it,
				       const struct doc_put *p, bool new_edits)
{
	struct json_object *j = json_object_new_object();
	const char *error, *reason;
	struct doc_put lp = { 0 };

	if (it->local) {
		char full[DOC_MAX_ID + 16];

		snprintf(full, sizeof(full), "%s%s", DOC_LOCAL_PREFIX,
			 it->local);
		lp.rc = it->rc;
		memcpy(lp.error, it->error, sizeof(lp.error));
		if (!it->rc) {
			json_object_put(j);
			return ok_id_rev(full, strlen(full),
					 local_rev_json(it->local_rev));
		}
		json_object_object_add(j, "id", jstr(full));
		p = &lp;
	} else if (!p->rc) {
		json_object_put(j);
		if (!new_edits)
			return NULL;
		return ok_id_rev(p->id, p->idlen, jrev(&p->rev));
	} else {
		json_object_object_add(j, "id", p->id ? jstrn(p->id, p->idlen)
						      : NULL);
	}
	put_error(p, &error, &reason);
	json_object_object_add(j, "error", jstr(error));
	json_object_object_add(j, "reason", jstr(reason));
	return j;
}

/* Fill put for item it (a regular document). */
static int bulk_prepare(struct bulk_item *it, struct doc_put *put,
			bool new_edits)
{
	struct json_object *idv;
	size_t len;
	const char *s;

	put->flags = new_edits ? 0 : DOC_PUT_REPLICATED | DOC_PUT_NORMALIZE;
	if (json_object_object_get_ex(it->doc, "_id", &idv) &&
	    json_object_is_type(idv, json_type_string)) {
		put->id = json_object_get_string(idv);
		put->idlen = (size_t)json_object_get_string_len(idv);
	} else if (!idv && new_edits) {
		int rc = api_uuid(it->uuid);

		if (rc)
			return rc;
		put->id = it->uuid;
		put->idlen = 32;
	}
	s = json_object_to_json_string_length(it->doc, API_JSON_FLAGS, &len);
	if (!s || !(it->text = strndup(s, len)))
		return -ENOMEM;
	put->body = it->text;
	put->len = len;
	return 0;
}

/* The writes of a _bulk_docs: local ones one by one, the rest as one
 * docdb_put(). Returns the commit's error or 0. */
static int bulk_write(struct docdb *d, struct bulk_item *items, size_t n,
		      struct doc_put *puts, size_t *nputs, bool new_edits)
{
	int rc = 0;

	*nputs = 0;
	for (size_t i = 0; !rc && i < n; i++) {
		struct json_object *idv;
		const char *id = NULL;

		if (json_object_object_get_ex(items[i].doc, "_id", &idv) &&
		    json_object_is_type(idv, json_type_string))
			id = json_object_get_string(idv);
		if (id && !strncmp(id, DOC_LOCAL_PREFIX, 7)) {
			/* a copy: local_write() drops the doc's "_id" */
			if (!(items[i].local = strdup(id + 7))) {
				rc = -ENOMEM;
				break;
			}
			items[i].rc = local_write(d, items[i].local,
						  items[i].doc, NULL,
						  &items[i].local_rev,
						  items[i].error);
			continue;
		}
		items[i].put = (*nputs)++;
		rc = bulk_prepare(&items[i], &puts[items[i].put], new_edits);
	}
	if (!rc && *nputs)
		rc = docdb_put(d, puts, *nputs);
	return rc;
}

static int api_bulk_docs(struct hreq *r, struct docdb *d)
{
	struct json_object *body, *docs, *ne, *out = NULL;
	struct bulk_item *items = NULL;
	struct doc_put *puts = NULL;
	bool new_edits = true;
	size_t n, nputs = 0;
	int rc;

	if (!is(r, "POST"))
		return reply_method(r, "POST");
	if (!(body = req_object(r, &rc)))
		return rc;
	if (!json_object_object_get_ex(body, "docs", &docs) ||
	    !json_object_is_type(docs, json_type_array)) {
		json_object_put(body);
		return reply_bad(r, "POST body must include `docs` parameter.");
	}
	if (json_object_object_get_ex(body, "new_edits", &ne))
		new_edits = json_object_get_boolean(ne);
	n = json_object_array_length(docs);
	for (size_t i = 0; i < n; i++)
		if (!json_object_is_type(json_object_array_get_idx(docs, i),
					 json_type_object)) {
			json_object_put(body);
			return reply_bad(r, "Document must be a JSON object");
		}
	items = calloc(n ? n : 1, sizeof(*items));
	puts = calloc(n ? n : 1, sizeof(*puts));
	if (!items || !puts) {
		rc = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < n; i++)
		items[i].doc = json_object_array_get_idx(docs, i);
	if ((rc = bulk_write(d, items, n, puts, &nputs, new_edits)))
		goto out_free;
	out = json_object_new_array();
	for (size_t i = 0; i < n; i++) {
		struct json_object *res = bulk_result(&items[i],
			items[i].local ? NULL : &puts[items[i].put], new_edits);

		if (res)
			json_object_array_add(out, res);
	}
out_free:
	for (size_t i = 0; items && i < n; i++) {
		free(items[i].text);
		free(items[i].local);
	}
	free(items);
	free(puts);
	json_object_put(body);
	if (rc)
		return hreq_reply_rc(r, rc, NULL);
	return hreq_reply_json(r, 201, out);
}

/* ---- maintenance endpoints ---- */

static int api_full_commit(struct hreq *r, struct docdb *d)
{
	struct json_object *j;
	int rc;

	if (!is(r, "POST"))
		return reply_method(r, "POST");
	if ((rc = bdb_sync(docdb_bdb(d))))
		return hreq_reply_rc(r, rc, NULL);
	j = json_object_new_object();
	json_object_object_add(j, "ok", json_object_new_boolean(1));
	json_object_object_add(j, "instance_start_time", jstr("0"));
	return hreq_reply_json(r, 201, j);
}

static int api_revs_limit(struct hreq *r, struct docdb *d)
{
	struct json_object *j;
	int64_t v;
	int rc;

	if (is(r, "GET") || is(r, "HEAD"))
		return hreq_reply_json(r, 200,
			json_object_new_uint64(docdb_revs_limit(d)));
	if (!is(r, "PUT"))
		return reply_method(r, "GET,HEAD,PUT");
	if (!(j = req_json(r, &rc)))
		return rc;
	v = json_object_get_int64(j);
	if (!json_object_is_type(j, json_type_int) || v <= 0 ||
	    v > UINT32_MAX) {
		json_object_put(j);
		return reply_bad(r, "`revs_limit` must be a positive integer");
	}
	json_object_put(j);
	if ((rc = docdb_set_revs_limit(d, (uint32_t)v)))
		return hreq_reply_rc(r, rc, NULL);
	return reply_ok(r, 200);
}

static int api_compact(struct hreq *r, struct docdb *d)
{
	int rc;

	if (!is(r, "POST"))
		return reply_method(r, "POST");
	if ((rc = bdb_gc(docdb_bdb(d), 1.0, NULL)))
		return hreq_reply_rc(r, rc, NULL);
	return reply_ok(r, 202);
}

/* One id of _purge: docdb_purge() and its purged revisions into out. */
static int purge_one(struct docdb *d, const char *id, struct json_object *v,
		     struct json_object *out)
{
	struct rev *revs, *purged = NULL;
	size_t n, npurged = 0;
	int rc = api_revs_parse(v, &revs, &n);

	if (rc)
		return rc;
	rc = docdb_purge(d, id, strlen(id), revs, n, &purged, &npurged);
	if (rc == BARREL_E_NOTFOUND)
		rc = 0;
	if (!rc)
		json_object_object_add(out, id, revs_json(purged, npurged));
	free(purged);
	free(revs);
	return rc;
}

static int api_purge(struct hreq *r, struct docdb *d)
{
	struct json_object *body, *purged, *j;
	int rc = 0;

	if (!is(r, "POST"))
		return reply_method(r, "POST");
	if (!(body = req_object(r, &rc)))
		return rc;
	purged = json_object_new_object();
	json_object_object_foreach(body, id, v) {
		if ((rc = purge_one(d, id, v, purged)))
			break;
	}
	json_object_put(body);
	if (rc) {
		json_object_put(purged);
		return rc == BARREL_E_BADREV || rc == BARREL_E_INVALID
		       ? reply_bad(r, "Invalid rev format")
		       : hreq_reply_rc(r, rc, NULL);
	}
	j = json_object_new_object();
	json_object_object_add(j, "purge_seq", NULL);
	json_object_object_add(j, "purged", purged);
	return hreq_reply_json(r, 201, j);
}

/* ---- routing ---- */

/* path[from..] joined by '/' (malloc'ed), NULL without memory. */
static char *path_join(struct hreq *r, size_t from)
{
	size_t len = 0, off = 0;
	char *s;

	for (size_t i = from; i < r->npath; i++)
		len += strlen(r->path[i]) + 1;
	if (!(s = malloc(len + 1)))
		return NULL;
	s[0] = '\0';
	for (size_t i = from; i < r->npath; i++) {
		size_t n = strlen(r->path[i]);

		if (i > from)
			s[off++] = '/';
		memcpy(s + off, r->path[i], n);
		off += n;
		s[off] = '\0';
	}
	return s;
}

/* /{db}/_design/NAME[/...]: the design document, its attachments, or
 * the view endpoints (api_view.c, over vi). */
static int route_design(struct hreq *r, struct docdb *d,
			struct view_indexer *vi)
{
	char id[DOC_MAX_ID + 16], *name;
	int rc, n;

	if (r->npath < 3)
		return hreq_reply_error(r, 404, "not_found", "missing");
	n = snprintf(id, sizeof(id), "%s%s", DOC_DESIGN_PREFIX, r->path[2]);
	if (n < 0 || (size_t)n >= sizeof(id))
		return reply_bad(r, "Document id is too long");
	if (r->npath == 3)
		return api_doc(r, d, id, (size_t)n);
	if (r->path[3][0] == '_')
		return api_design(r, d, vi);
	if (!(name = path_join(r, 3)))
		return hreq_reply_rc(r, -ENOMEM, NULL);
	rc = api_att(r, d, id, (size_t)n, name);
	free(name);
	return rc;
}

/* /{db}/_local/ID, _local_docs and the endpoints of one database. */
static int route_special(struct hreq *r, struct docdb *d,
			 struct view_indexer *vi, const char *db)
{
	const char *what = r->path[1];
	char *id;
	int rc;

	if (!strcmp(what, "_all_docs") && r->npath == 2)
		return api_all_docs(r, d, false);
	if (!strcmp(what, "_design_docs") && r->npath == 2)
		return api_all_docs(r, d, true);
	if (!strcmp(what, "_changes") && r->npath == 2)
		return api_changes(r, d, db);
	if (!strcmp(what, "_revs_diff") && r->npath == 2)
		return api_revs_diff(r, d);
	if (!strcmp(what, "_bulk_docs") && r->npath == 2)
		return api_bulk_docs(r, d);
	if (!strcmp(what, "_bulk_get") && r->npath == 2)
		return api_bulk_get(r, d);
	if (!strcmp(what, "_ensure_full_commit") && r->npath == 2)
		return api_full_commit(r, d);
	if (!strcmp(what, "_revs_limit") && r->npath == 2)
		return api_revs_limit(r, d);
	if (!strcmp(what, "_compact"))
		return api_compact(r, d);
	if (!strcmp(what, "_purge") && r->npath == 2)
		return api_purge(r, d);
	if (!strcmp(what, "_local_docs") && r->npath == 2)
		return api_local_docs(r, d);
	if (!strcmp(what, "_design"))
		return route_design(r, d, vi);
	if (!strcmp(what, "_local") && r->npath >= 3) {
		if (!(id = path_join(r, 2)))
			return hreq_reply_rc(r, -ENOMEM, NULL);
		rc = api_local(r, d, id);
		free(id);
		return rc;
	}
	if (r->npath == 2 && (is(r, "PUT") || is(r, "DELETE")))
		return hreq_reply_error(r, 400, "illegal_docid", "Only reserved "
					"document ids may start with underscore.");
	return hreq_reply_error(r, 404, "not_found", "missing");
}

/* Everything under /{db}/ with the database held. */
static int route_db(struct hreq *r, struct docdb *d,
		    struct view_indexer *vi, const char *db)
{
	char *name;
	int rc;

	if (r->npath == 1) {
		if (is(r, "GET") || is(r, "HEAD"))
			return db_info(r, d, db);
		if (is(r, "POST"))
			return db_post(r, d, db);
		return reply_method(r, "DELETE,GET,HEAD,POST,PUT");
	}
	if (r->path[1][0] == '_')
		return route_special(r, d, vi, db);
	if (r->npath == 2)
		return api_doc(r, d, r->path[1], strlen(r->path[1]));
	if (!(name = path_join(r, 2)))
		return hreq_reply_rc(r, -ENOMEM, NULL);
	rc = api_att(r, d, r->path[1], strlen(r->path[1]), name);
	free(name);
	return rc;
}

/* /{db}...: create and drop, or acquire the database for the rest. */
static int api_db(struct hreq *r)
{
	const char *db = r->path[0];
	struct docdb *d;
	void *hold;
	int rc;

	if (r->npath == 1 && is(r, "PUT"))
		return db_create(r, db);
	if (r->npath == 1 && is(r, "DELETE"))
		return db_drop(r, db);
	if (!bdb_name_valid(db))
		return reply_illegal_db(r, db);
	rc = r->cat->acquire(r->cat->arg, db, &d, &hold);
	if (rc == BARREL_E_NOTFOUND)
		return reply_no_db(r);
	if (rc == BARREL_E_INVALID)
		return reply_illegal_db(r, db);
	if (rc)
		return hreq_reply_rc(r, rc, NULL);
	rc = route_db(r, d, r->cat->views ? r->cat->views(r->cat->arg, hold)
					  : NULL, db);
	r->cat->release(r->cat->arg, hold);
	return rc;
}

int api_dispatch(struct hreq *r)
{
	const char *top;

	if (r->npath == 0)
		return api_root(r);
	top = r->path[0];
	if (top[0] != '_')
		return api_db(r);
	if (r->npath == 1 && !strcmp(top, "_up"))
		return api_up(r);
	if (r->npath == 1 && !strcmp(top, "_all_dbs"))
		return api_all_dbs(r);
	if (r->npath == 1 && !strcmp(top, "_uuids"))
		return api_uuids(r);
	if (r->npath == 1 && !strcmp(top, "_session"))
		return api_session(r);
	/* system databases (_users, _replicator) are names like any other */
	if (bdb_name_valid(top))
		return api_db(r);
	return reply_illegal_db(r, top);
}
