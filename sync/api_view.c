/*
 * CouchDB's view endpoints over a database's view indexer (api.h,
 * engine/view.h):
 *
 *   GET|HEAD|POST /{db}/_design/D/_view/V   rows of one view
 *   GET           /{db}/_design/D/_info     the state of D's indexes
 *
 * A view query runs in three steps:
 *  1. parse the parameters (URL, and for POST the body's members, which
 *     win) into a struct vreq: CouchDB's names, spellings and errors;
 *  2. check them against the view as CouchDB's validate_args does, in
 *     its order and with its reasons (the view's design document is
 *     read here to know whether it has a reduce);
 *  3. run view_query(), building the reply as JSON text: the engine's
 *     key, value and document texts go into it as they are, laid out
 *     as CouchDB streams them ("rows":[\r\n row,\r\n row\r\n]).
 * The reply is built whole in memory, then sent (the database is held
 * only for the handler's call, so the rows cannot be read later from a
 * stream callback).
 *
 * Status codes, error names and reasons follow CouchDB 3 (couch_mrview
 * and chttpd); where a reason is ours the reply says so plainly.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/bbuf.h"
#include "engine/collate.h"
#include "engine/docdb.h"
#include "engine/error.h"
#include "engine/view.h"
#include "sync/api.h"
#include "sync/http.h"

#define VIEW_JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define VREQ_MAX_OWN 32u              /* texts a body can give (vparams) */
#define VREQ_WHYLEN 512u

/* ---- 1. parameters ---- */

/* A parsed query: the engine's options and the reply's. */
struct vreq {
	struct view_query q;
	struct api_render render;      /* conflicts, attachments */
	bool update_seq;               /* add "update_seq" to the reply */
	bool group;                    /* group=true */
	bool group_given;
	bool group_level_given;
	uint64_t group_level;
	bool reduce;                   /* reduce= when reduce_given */
	bool reduce_given;
	bool conflicts_given;
	struct json_object *body;      /* POST body; owned */
	char *own[VREQ_MAX_OWN];       /* texts made from body members */
	size_t nown;
	/* the first error: status, CouchDB's error name and reason */
	int status;
	const char *error;
	char why[VREQ_WHYLEN];
};

enum vkind {
	VK_JSON,        /* JSON text, checked (const char *) */
	VK_TEXT,        /* raw text (const char *) */
	VK_BOOL,        /* bool */
	VK_UINT,        /* uint64_t */
};

/* One parameter: where its value goes, and where "given" is noted. */
struct vparam {
	const char *name;
	enum vkind kind;
	size_t off;                    /* in struct vreq */
	size_t given;                  /* a bool in struct vreq, or 0 */
};

#define VQ(f) offsetof(struct vreq, q.f)
#define VR(f) offsetof(struct vreq, f)

/* CouchDB's parameters (couch_mrview_http:parse_param), later spellings
 * after the earlier ones so that they win as in CouchDB's fold. */
static const struct vparam vparams[] = {
	{ "key", VK_JSON, VQ(key), 0 },
	{ "keys", VK_JSON, VQ(keys), 0 },
	{ "startkey", VK_JSON, VQ(startkey), 0 },
	{ "start_key", VK_JSON, VQ(startkey), 0 },
	{ "endkey", VK_JSON, VQ(endkey), 0 },
	{ "end_key", VK_JSON, VQ(endkey), 0 },
	{ "startkey_docid", VK_TEXT, VQ(startkey_docid), 0 },
	{ "start_key_doc_id", VK_TEXT, VQ(startkey_docid), 0 },
	{ "endkey_docid", VK_TEXT, VQ(endkey_docid), 0 },
	{ "end_key_doc_id", VK_TEXT, VQ(endkey_docid), 0 },
	{ "inclusive_end", VK_BOOL, VQ(inclusive_end), 0 },
	{ "descending", VK_BOOL, VQ(descending), 0 },
	{ "limit", VK_UINT, VQ(limit), 0 },
	{ "skip", VK_UINT, VQ(skip), 0 },
	{ "include_docs", VK_BOOL, VQ(include_docs), 0 },
	{ "reduce", VK_BOOL, VR(reduce), VR(reduce_given) },
	{ "group", VK_BOOL, VR(group), VR(group_given) },
	{ "group_level", VK_UINT, VR(group_level), VR(group_level_given) },
	{ "update_seq", VK_BOOL, VR(update_seq), 0 },
	{ "conflicts", VK_BOOL, VR(render.conflicts), VR(conflicts_given) },
	{ "attachments", VK_BOOL, VR(render.attachments), 0 },
};

static void vreq_release(struct vreq *v)
{
	for (size_t i = 0; i < v->nown; i++)
		free(v->own[i]);
	json_object_put(v->body);
}

/* Note the first error (later ones are dropped). */
static void __attribute__((format(printf, 4, 5)))
vreq_fail(struct vreq *v, int status, const char *error, const char *fmt, ...)
{
	va_list ap;

	if (v->error)
		return;
	v->status = status;
	v->error = error;
	va_start(ap, fmt);
	vsnprintf(v->why, sizeof(v->why), fmt, ap);
	va_end(ap);
}

/* Keep s (malloc'ed) until vreq_release(); NULL without memory. */
static const char *vreq_keep(struct vreq *v, char *s)
{
	if (!s || v->nown == VREQ_MAX_OWN) {
		free(s);
		vreq_fail(v, 500, "unknown_error", "out of memory");
		return NULL;
	}
	v->own[v->nown++] = s;
	return s;
}

/*
 * The value of parameter name: the body's member (JSON text for json,
 * else a string's own text), or the URL's argument; NULL when absent.
 */
static const char *vreq_arg(struct hreq *r, struct vreq *v, const char *name,
			    bool json)
{
	struct json_object *m;

	if (!v->body || !json_object_object_get_ex(v->body, name, &m))
		return hreq_arg(r, name);
	if (!json && json_object_is_type(m, json_type_string))
		return vreq_keep(v, strdup(json_object_get_string(m)));
	return vreq_keep(v, strdup(m ? json_object_to_json_string_ext(m,
				VIEW_JSON_FLAGS) : "null"));
}

/* CouchDB's parse_boolean (case-insensitive). */
static void parse_bool(struct vreq *v, const char *s, bool *out)
{
	if (!strcasecmp(s, "true"))
		*out = true;
	else if (!strcasecmp(s, "false"))
		*out = false;
	else
		vreq_fail(v, 400, "query_parse_error",
			  "Invalid boolean parameter: \"%.400s\"", s);
}

/* CouchDB's parse_pos_int. */
static void parse_uint(struct vreq *v, const char *s, uint64_t *out)
{
	const char *p = s + (*s == '-' || *s == '+');
	char *end = (char *)p;

	errno = 0;
	if (*p >= '0' && *p <= '9')
		*out = strtoull(p, &end, 10);
	if (*p < '0' || *p > '9' || *end || errno == ERANGE)
		vreq_fail(v, 400, "query_parse_error",
			  "Invalid value for integer: \"%.400s\"", s);
	else if (*s == '-' && *out)
		vreq_fail(v, 400, "query_parse_error",
			  "Invalid value for positive integer: \"%.400s\"", s);
}

/* A JSON parameter: one strict JSON value (chttpd's answer otherwise). */
static void parse_json(struct vreq *v, const char *s)
{
	struct json_object *j = api_json_parse(s, strlen(s));

	if (!j && strcmp(s, "null"))
		vreq_fail(v, 400, "bad_request", "invalid UTF-8 JSON");
	json_object_put(j);
}

static void vreq_param(struct hreq *r, struct vreq *v, const struct vparam *p)
{
	const char *s = vreq_arg(r, v, p->name, p->kind == VK_JSON);
	char *field = (char *)v + p->off;

	if (!s)
		return;
	if (p->given)
		*(bool *)((char *)v + p->given) = true;
	switch (p->kind) {
	case VK_JSON:
		parse_json(v, s);
		/* fall through */
	case VK_TEXT:
		*(const char **)field = s;
		break;
	case VK_BOOL:
		parse_bool(v, s, (bool *)field);
		break;
	case VK_UINT:
		parse_uint(v, s, (uint64_t *)field);
		break;
	}
}

/* The values of update= and of the legacy stale=. */
static const struct {
	const char *param;
	const char *value;
	enum view_update update;
} vupdates[] = {
	{ "update", "true", VIEW_UPDATE_TRUE },
	{ "update", "false", VIEW_UPDATE_FALSE },
	{ "update", "lazy", VIEW_UPDATE_LAZY },
	{ "stale", "ok", VIEW_UPDATE_FALSE },
	{ "stale", "update_after", VIEW_UPDATE_LAZY },
};

static void vreq_update(struct hreq *r, struct vreq *v, const char *param)
{
	const char *s = vreq_arg(r, v, param, false);

	for (size_t i = 0; s && i < sizeof(vupdates) / sizeof(vupdates[0]);
	     i++) {
		if (!strcmp(vupdates[i].param, param) &&
		    !strcmp(vupdates[i].value, s)) {
			v->q.update = vupdates[i].update;
			return;
		}
	}
	if (s)
		vreq_fail(v, 400, "query_parse_error",
			  "Invalid value for `%s`.", param);
}

/* A POST body: a JSON object whose members are parameters. */
static void vreq_body(struct hreq *r, struct vreq *v)
{
	struct json_object *m;

	v->body = api_json_parse(r->body, r->len);
	if (!v->body)
		vreq_fail(v, 400, "bad_request", "invalid UTF-8 JSON");
	else if (!json_object_is_type(v->body, json_type_object))
		vreq_fail(v, 400, "bad_request",
			  "Request body must be a JSON object");
	else if (json_object_object_get_ex(v->body, "queries", &m))
		vreq_fail(v, 400, "bad_request", "The `queries` parameter "
			  "is no longer supported at this endpoint");
	else if (json_object_object_get_ex(v->body, "keys", &m) &&
		 !json_object_is_type(m, json_type_array))
		vreq_fail(v, 400, "bad_request",
			  "`keys` member must be an array.");
}

/* Step 1: every parameter; v->error says the first one that failed. */
static void vreq_parse(struct hreq *r, struct vreq *v)
{
	struct json_object *k;

	memset(v, 0, sizeof(*v));
	view_query_init(&v->q);
	if (!strcmp(r->method, "POST"))
		vreq_body(r, v);
	for (size_t i = 0; i < sizeof(vparams) / sizeof(vparams[0]); i++)
		vreq_param(r, v, &vparams[i]);
	vreq_update(r, v, "update");
	vreq_update(r, v, "stale");
	if (v->reduce_given)
		v->q.reduce = v->reduce ? VIEW_REDUCE_TRUE : VIEW_REDUCE_FALSE;
	v->q.group = v->group && !v->group_level_given;
	v->q.group_level = v->group_level > UINT_MAX ? UINT_MAX :
			   (unsigned)v->group_level;
	v->q.offset = true;
	if (v->error || !v->q.keys)
		return;
	k = api_json_parse(v->q.keys, strlen(v->q.keys));
	if (!json_object_is_type(k, json_type_array))
		vreq_fail(v, 400, "query_parse_error",
			  "`keys` must be an array of strings.");
	json_object_put(k);
}

/* ---- 2. checks against the view ---- */

/* The view's definition from its design document. */
struct vdesc {
	struct json_object *ddoc;      /* the design document's body; owned */
	struct json_object *views;     /* its "views" (borrowed from ddoc) */
	bool reduce;                   /* the view has a reduce */
};

/* Read design document name (without "_design/") into *out. */
static int vdesc_ddoc(struct docdb *d, const char *name, struct vdesc *out)
{
	char id[DOC_MAX_ID + 16];
	struct doc doc;
	int rc, n = snprintf(id, sizeof(id), "%s%s", DOC_DESIGN_PREFIX, name);

	memset(out, 0, sizeof(*out));
	if (n < 0 || (size_t)n >= sizeof(id))
		return BARREL_E_NOTFOUND;
	if ((rc = docdb_get(d, NULL, id, (size_t)n, NULL, 0, &doc)))
		return rc;
	out->ddoc = json_tokener_parse(doc.body);
	doc_release(&doc);
	if (!json_object_is_type(out->ddoc, json_type_object))
		return BARREL_E_CORRUPT;
	if (!json_object_object_get_ex(out->ddoc, "views", &out->views) ||
	    !json_object_is_type(out->views, json_type_object))
		out->views = NULL;
	return 0;
}

/* Is member o of "views" a view (an object with a "map" string)? */
static bool vdesc_is_view(struct json_object *o)
{
	struct json_object *m;

	return json_object_is_type(o, json_type_object) &&
	       json_object_object_get_ex(o, "map", &m) &&
	       json_object_is_type(m, json_type_string);
}

/* Find view; BARREL_E_NOTFOUND when the design document has none. */
static int vdesc_view(struct vdesc *vd, const char *view)
{
	struct json_object *o, *red;

	if (!vd->views || !json_object_object_get_ex(vd->views, view, &o) ||
	    !vdesc_is_view(o))
		return BARREL_E_NOTFOUND;
	vd->reduce = json_object_object_get_ex(o, "reduce", &red) &&
		     json_object_is_type(red, json_type_string);
	return 0;
}

/* CouchDB's check_range: startkey and endkey against the direction. */
static void vreq_check_range(struct vreq *v)
{
	struct json_object *sk, *ek;
	int cmp;

	if (v->error || v->q.key || v->q.keys || !v->q.startkey ||
	    !v->q.endkey)
		return;
	sk = api_json_parse(v->q.startkey, strlen(v->q.startkey));
	ek = api_json_parse(v->q.endkey, strlen(v->q.endkey));
	cmp = collate_cmp(sk, ek);
	json_object_put(sk);
	json_object_put(ek);
	if ((cmp > 0 && !v->q.descending) || (cmp < 0 && v->q.descending))
		vreq_fail(v, 400, "query_parse_error", "No rows can match "
			  "your key range, reverse your start_key and end_key "
			  "or set descending=%s",
			  v->q.descending ? "false" : "true");
}

/* Step 2: CouchDB's validate_args for a view with or without reduce. */
static void vreq_check(struct vreq *v, bool has_reduce)
{
	bool red = has_reduce && !(v->reduce_given && !v->reduce);
	bool exact = v->group && !v->group_level_given;
	bool grouping = exact || v->group_level > 0;

	if (v->group_given && !v->group && v->group_level > 0)
		vreq_fail(v, 400, "query_parse_error", "Can't specify "
			  "group=false and group_level>0 at the same time");
	if (!has_reduce && v->reduce_given && v->reduce)
		vreq_fail(v, 400, "query_parse_error",
			  "Reduce is invalid for map-only views.");
	if (red && v->q.keys && !exact)
		vreq_fail(v, 400, "query_parse_error", "Multi-key fetchs for "
			  "reduce views must use `group=true`");
	if (v->q.keys && (v->q.key || v->q.startkey || v->q.endkey))
		vreq_fail(v, 400, "query_parse_error", "`keys` is "
			  "incompatible with `key`, `start_key` and `end_key`");
	if (!red && grouping)
		vreq_fail(v, 400, "query_parse_error",
			  "Invalid use of grouping on a map view.");
	if (red && v->q.include_docs)
		vreq_fail(v, 400, "query_parse_error",
			  "`include_docs` is invalid for reduce");
	if (red && v->conflicts_given)
		vreq_fail(v, 400, "query_parse_error",
			  "`conflicts` is invalid for reduce views.");
	vreq_check_range(v);
}

/* ---- 3. the reply ---- */

/* The rows being built. */
struct vout {
	struct hreq *r;
	struct docdb *d;
	const struct vreq *v;
	struct bsnap *snap;            /* for re-rendered docs; owned */
	struct bbuf rows;              /* row texts, ",\r\n" between */
	bool any;                      /* a row is in rows */
};

/* The "_id" and "_rev" members of a document's JSON text. */
static int doc_ident(const char *text, char **id, struct rev *rev)
{
	struct json_object *j = json_tokener_parse(text), *m;
	int rc = BARREL_E_CORRUPT;

	*id = NULL;
	if (json_object_object_get_ex(j, "_id", &m) &&
	    json_object_is_type(m, json_type_string) &&
	    (*id = strdup(json_object_get_string(m))))
		rc = 0;
	if (!rc && (!json_object_object_get_ex(j, "_rev", &m) ||
		    rev_parse(json_object_get_string(m),
			      (size_t)json_object_get_string_len(m), rev)))
		rc = BARREL_E_CORRUPT;
	json_object_put(j);
	return rc;
}

/*
 * include_docs with conflicts or attachments: the row's document read
 * again (with its tree) and rendered as GET /{db}/{id} does. A document
 * gone since the row was read renders as null.
 */
static int add_rendered(struct vout *o, const char *text)
{
	struct json_object *j = NULL;
	struct doc doc = { 0 };
	struct rev rev;
	char *id;
	int rc = doc_ident(text, &id, &rev);

	if (!rc && !o->snap)
		rc = bdb_snapshot(docdb_bdb(o->d), &o->snap);
	if (!rc)
		rc = docdb_get(o->d, o->snap, id, strlen(id), &rev,
			       DOC_GET_TREE, &doc);
	if (!rc)
		rc = api_render_doc(o->d, o->snap, &doc, &o->v->render, &j);
	free(id);
	doc_release(&doc);
	if (rc == BARREL_E_NOTFOUND)
		return bbuf_adds(&o->rows, "null");
	if (!rc)
		rc = bbuf_adds(&o->rows,
			       json_object_to_json_string_ext(j, VIEW_JSON_FLAGS));
	json_object_put(j);
	return rc;
}

static int add_doc(struct vout *o, const struct view_row *row)
{
	const struct api_render *ro = &o->v->render;
	int rc = bbuf_adds(&o->rows, ",\"doc\":");

	if (rc)
		return rc;
	if (!row->doc)
		return bbuf_adds(&o->rows, "null");
	if (ro->conflicts || ro->attachments)
		return add_rendered(o, row->doc);
	return bbuf_add(&o->rows, row->doc, row->doclen);
}

/* view_query()'s callback: one row, as CouchDB writes it. */
static int vout_row(void *arg, const struct view_row *row)
{
	struct vout *o = arg;
	struct bbuf *b = &o->rows;
	int rc = bbuf_adds(b, o->any ? ",\r\n{" : "{");

	o->any = true;
	if (!rc)
		rc = view_row_members(b, row);
	if (!rc && o->v->q.include_docs && row->id)
		rc = add_doc(o, row);
	return rc ? rc : bbuf_adds(b, "}");
}

/* The whole reply: the head CouchDB sends, the rows, the tail. */
static int vout_reply(struct vout *o, const struct view_result *res)
{
	const struct vreq *v = o->v;
	struct bbuf b = { 0 };
	char head[160];
	size_t n = 0;
	uint64_t off = res->offset + v->q.skip;

	if (!res->reduced)
		n += (size_t)snprintf(head, sizeof(head), "{\"total_rows\":%"
				      PRIu64 ",\"offset\":%" PRIu64 ",",
				      res->total_rows, off < res->total_rows ?
				      off : res->total_rows);
	else
		head[n++] = '{';
	if (v->update_seq)
		n += (size_t)snprintf(head + n, sizeof(head) - n,
				      "\"update_seq\":%" PRIu64 ",",
				      res->update_seq);
	if (bbuf_add(&b, head, n) || bbuf_adds(&b, "\"rows\":[\r\n") ||
	    bbuf_add(&b, o->rows.p ? o->rows.p : "", o->rows.len) ||
	    bbuf_adds(&b, "\r\n]}\n")) {
		bbuf_release(&b);
		return hreq_reply_rc(o->r, -ENOMEM, NULL);
	}
	return hreq_reply(o->r, 200, "application/json", b.p, b.len);
}

/* ---- running a query ---- */

/* An error of view_query() as CouchDB answers it. */
static int reply_query_error(struct hreq *r, struct view_indexer *vi,
			     const char *ddoc, const char *view, int rc)
{
	struct view_info info;
	char why[VIEW_MSGLEN + 64];

	if (rc == BARREL_E_NOTFOUND)
		return hreq_reply_error(r, 404, "not_found",
					"missing_named_view");
	if (rc == -ETIMEDOUT)
		return hreq_reply_error(r, 500, "timeout", "The request could "
			"not be processed in a reasonable amount of time.");
	if (rc == BARREL_E_FUNCTION && !view_status(vi, ddoc, view, &info) &&
	    info.broken) {
		snprintf(why, sizeof(why), "The map function of view `%s` "
			 "cannot run: %s", view, info.last_error[0] ?
			 info.last_error : "it does not compile");
		return hreq_reply_error(r, 500, "compilation_error", why);
	}
	return hreq_reply_rc(r, rc, NULL);
}

/* Step 3: run the query, reply with its rows or its error. */
static int view_run(struct hreq *r, struct docdb *d, struct view_indexer *vi,
		    const struct vreq *v, const char *ddoc, const char *view)
{
	struct vout o = { .r = r, .d = d, .v = v };
	struct view_result res;
	int rc = view_query(vi, ddoc, view, &v->q, vout_row, &o, &res);

	if (o.snap)
		bsnap_release(o.snap);
	rc = rc ? reply_query_error(r, vi, ddoc, view, rc) : vout_reply(&o, &res);
	bbuf_release(&o.rows);
	return rc;
}

/* GET|HEAD|POST /{db}/_design/D/_view/V */
static int api_view(struct hreq *r, struct docdb *d, struct view_indexer *vi,
		    const char *ddoc, const char *view)
{
	struct vdesc vd = { 0 };
	struct vreq v;
	int rc;

	if (strcmp(r->method, "GET") && strcmp(r->method, "HEAD") &&
	    strcmp(r->method, "POST")) {
		hreq_header_add(r, "Allow", "GET,POST,HEAD");
		return hreq_reply_error(r, 405, "method_not_allowed",
					"Only GET,POST,HEAD allowed");
	}
	rc = vdesc_ddoc(d, ddoc, &vd);
	if (rc == BARREL_E_NOTFOUND)
		rc = hreq_reply_error(r, 404, "not_found", "missing");
	else if (!rc && vdesc_view(&vd, view))
		rc = hreq_reply_error(r, 404, "not_found", "missing_named_view");
	else if (rc)
		rc = hreq_reply_rc(r, rc, NULL);
	else {
		vreq_parse(r, &v);
		vreq_check(&v, vd.reduce);
		rc = v.error ? hreq_reply_error(r, v.status, v.error, v.why)
			     : view_run(r, d, vi, &v, ddoc, view);
		vreq_release(&v);
	}
	json_object_put(vd.ddoc);
	return rc;
}

/* ---- _info ---- */

/* What _info sums up over the views of a design document. */
struct dinfo {
	EVP_MD_CTX *md;                /* over the views' signatures */
	uint64_t seq;                  /* the least indexed sequence */
	uint64_t db_seq;
	bool any;
};

static int dinfo_add(struct dinfo *di, struct view_indexer *vi,
		     const char *ddoc, const char *view)
{
	struct view_info info;
	int rc = view_status(vi, ddoc, view, &info);

	if (rc)
		return rc;
	if (!EVP_DigestUpdate(di->md, info.sig, strlen(info.sig)))
		return -ENOMEM;
	if (!di->any || info.seq < di->seq)
		di->seq = info.seq;
	di->db_seq = info.db_seq;
	di->any = true;
	return 0;
}

static struct json_object *dinfo_json(const struct dinfo *di,
				      const char *lang, const char *sig)
{
	struct json_object *j = json_object_new_object();

	json_object_object_add(j, "signature", json_object_new_string(sig));
	json_object_object_add(j, "language", json_object_new_string(lang));
	json_object_object_add(j, "update_seq",
			       json_object_new_uint64(di->seq));
	json_object_object_add(j, "purge_seq", json_object_new_int(0));
	json_object_object_add(j, "updater_running",
			       json_object_new_boolean(di->seq < di->db_seq));
	json_object_object_add(j, "compact_running",
			       json_object_new_boolean(0));
	json_object_object_add(j, "waiting_commit", json_object_new_boolean(0));
	json_object_object_add(j, "waiting_clients", json_object_new_int(0));
	return j;
}

/* The signature: MD5 of the views' own signatures, in the design
 * document's order (it changes when any view's map changes). */
static int dinfo_reply(struct hreq *r, struct dinfo *di,
		       struct json_object *ddoc, const char *name)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	struct json_object *j, *lang;
	char sig[2 * EVP_MAX_MD_SIZE + 1] = "";

	if (!EVP_DigestFinal_ex(di->md, md, &mdlen))
		return hreq_reply_rc(r, -ENOMEM, NULL);
	for (unsigned int i = 0; i < mdlen; i++)
		snprintf(sig + 2 * i, 3, "%02x", md[i]);
	if (!json_object_object_get_ex(ddoc, "language", &lang) ||
	    !json_object_is_type(lang, json_type_string))
		lang = NULL;
	j = json_object_new_object();
	json_object_object_add(j, "name", json_object_new_string(name));
	json_object_object_add(j, "view_index", dinfo_json(di,
		lang ? json_object_get_string(lang) : "javascript", sig));
	return hreq_reply_json(r, 200, j);
}

/* GET /{db}/_design/D/_info */
static int api_design_info(struct hreq *r, struct docdb *d,
			   struct view_indexer *vi, const char *ddoc)
{
	struct dinfo di = { .md = EVP_MD_CTX_new() };
	struct vdesc vd = { 0 };
	int rc = di.md && EVP_DigestInit_ex(di.md, EVP_md5(), NULL) ? 0 :
		 -ENOMEM;

	if (!rc)
		rc = vdesc_ddoc(d, ddoc, &vd);
	if (!rc && vd.views) {
		json_object_object_foreach(vd.views, name, o) {
			if (!rc && vdesc_is_view(o))
				rc = dinfo_add(&di, vi, ddoc, name);
		}
	}
	if (rc == BARREL_E_NOTFOUND)
		rc = hreq_reply_error(r, 404, "not_found", "missing");
	else if (rc)
		rc = hreq_reply_rc(r, rc, NULL);
	else
		rc = dinfo_reply(r, &di, vd.ddoc, ddoc);
	json_object_put(vd.ddoc);
	EVP_MD_CTX_free(di.md);
	return rc;
}

int api_design(struct hreq *r, struct docdb *d, struct view_indexer *vi)
{
	const char *what = r->path[3];

	if (strcmp(what, "_view") && strcmp(what, "_info"))
		return hreq_reply_error(r, 501, "not_implemented",
			"Design document functions other than views are not "
			"supported.");
	if (!vi)
		return hreq_reply_error(r, 501, "not_implemented",
			"This server does not index views.");
	if (!strcmp(what, "_view") && r->npath == 5)
		return api_view(r, d, vi, r->path[2], r->path[4]);
	if (!strcmp(what, "_info") && r->npath == 4) {
		if (strcmp(r->method, "GET") && strcmp(r->method, "HEAD")) {
			hreq_header_add(r, "Allow", "GET");
			return hreq_reply_error(r, 405, "method_not_allowed",
						"Only GET allowed");
		}
		return api_design_info(r, d, vi, r->path[2]);
	}
	return hreq_reply_error(r, 404, "not_found", "missing");
}
