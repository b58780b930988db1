#include "config.h"

/*
 * Documents, attachments, open_revs and _bulk_get (api.h), with
 * CouchDB 3's semantics: its status codes, headers and error bodies.
 *
 * Every read takes one snapshot and renders revisions from it
 * (api_render_doc()). Attachments are never held whole: a GET streams
 * them from their blobs (struct ostream below, which also streams the
 * multipart/mixed form of open_revs), and an upload is written into a
 * blob a piece at a time. Inline base64 ("data", attachments=true) is
 * the one form that is built in memory, as it is part of a JSON text.
 */

#include <errno.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "engine/bbuf.h"
#include "engine/error.h"
#include "sync/api.h"
#include "sync/url.h"

#define B64_PIECE 49152u        /* attachment bytes encoded at a time (3k) */
#define ATT_PIECE (1u << 20)    /* upload bytes written at a time */
#define BOUNDARY_LEN 32u        /* hex digits of a multipart boundary */
#define MP_MAX_BOUNDARY 200u    /* characters of a boundary we accept */
#define MP_MAX_CTYPE 256u       /* bytes of a part's Content-Type kept */
#define JSON_OUT (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* ---- small helpers ---- */

static bool arg_true(struct hreq *r, const char *name)
{
	const char *v = hreq_arg(r, name);

	return v && !strcmp(v, "true");
}

static struct json_object *json_rev(const struct rev *rv)
{
	char buf[REV_STR_SIZE];

	if (rev_format(rv, buf, sizeof(buf)))
		return NULL;
	return json_object_new_string(buf);
}

static struct json_object *json_strn(const char *s, size_t n)
{
	return json_object_new_string_len(s, (int)n);
}

/* CouchDB's error replies for the codes documents produce. */
static int reply_rc(struct hreq *r, int rc, const char *reason)
{
	switch (rc) {
	case BARREL_E_NOTFOUND:
		return hreq_reply_error(r, 404, "not_found",
					reason ? reason : "missing");
	case BARREL_E_CONFLICT:
		return hreq_reply_error(r, 409, "conflict",
					"Document update conflict.");
	case BARREL_E_BADREV:
		return hreq_reply_error(r, 400, "bad_request",
					"Invalid rev format");
	case BARREL_E_BADJSON:
		return hreq_reply_error(r, 400, "bad_request",
					"invalid UTF-8 JSON");
	case BARREL_E_NOTOBJECT:
		return hreq_reply_error(r, 400, "bad_request",
					"Document must be a JSON object");
	default:
		return hreq_reply_rc(r, rc, reason && *reason ? reason : NULL);
	}
}

static int reply_bad(struct hreq *r, const char *reason)
{
	return hreq_reply_error(r, 400, "bad_request", reason);
}

/* Parse a revision string; BARREL_E_BADREV when s is not one. */
static int parse_rev_str(const char *s, struct rev *out)
{
	return rev_parse(s, strlen(s), out);
}

/* The same from query text. */
static int parse_rev_json(const char *text, struct rev **out, size_t *n)
{
	struct json_object *a = json_tokener_parse(text);
	int rc;

	if (!a)
		return BARREL_E_BADJSON;
	rc = api_revs_parse(a, out, n);
	json_object_put(a);
	return rc;
}

/* If-Match as a revision (quotes stripped): 1 and *out, 0 when absent. */
static int if_match_rev(struct hreq *r, struct rev *out)
{
	const char *h = hreq_header(r, "If-Match");
	size_t len;

	if (!h)
		return 0;
	len = strlen(h);
	if (len >= 2 && h[0] == '"' && h[len - 1] == '"') {
		h++;
		len -= 2;
	}
	return rev_parse(h, len, out) ? BARREL_E_BADREV : 1;
}

static void random_hex(char *out, size_t ndigits)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char raw[64];
	size_t n = ndigits / 2 < sizeof(raw) ? ndigits / 2 : sizeof(raw);

	if (getrandom(raw, n, 0) != (ssize_t)n) {
		uint64_t x = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)out;

		for (size_t i = 0; i < n; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			raw[i] = (unsigned char)(x >> 56);
		}
	}
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Percent-encode s (n bytes) for a URL path, keeping keep_slash '/'. */
static void add_url(struct bbuf *b, const char *s, size_t n, bool keep_slash)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		    c == '_' || c == '~' || (c == '/' && keep_slash))
			bbuf_add(b, s + i, 1);
		else
			bbuf_addf(b, "%%%02X", c);
	}
}

/* Location: http://HOST/DB/ID[/NAME] */
static int add_location(struct hreq *r, const char *id, size_t idlen,
			const char *name)
{
	const char *host = hreq_header(r, "Host");
	struct bbuf b = { 0 };
	bool design = idlen > strlen(DOC_DESIGN_PREFIX) &&
		      !memcmp(id, DOC_DESIGN_PREFIX, strlen(DOC_DESIGN_PREFIX));
	int rc;

	bbuf_addf(&b, "http://%s/", host ? host : "localhost");
	if (r->npath)
		add_url(&b, r->path[0], strlen(r->path[0]), false);
	bbuf_adds(&b, "/");
	add_url(&b, id, idlen, design);
	if (name) {
		bbuf_adds(&b, "/");
		add_url(&b, name, strlen(name), false);
	}
	rc = b.err ? b.err : hreq_header_add(r, "Location", b.p);
	bbuf_release(&b);
	return rc;
}

static int add_etag_rev(struct hreq *r, const struct rev *rv)
{
	char rs[REV_STR_SIZE], buf[REV_STR_SIZE + 2];

	if (rev_format(rv, rs, sizeof(rs)))
		return BARREL_E_INVALID;
	snprintf(buf, sizeof(buf), "\"%s\"", rs);
	return hreq_header_add(r, "ETag", buf);
}

/* {"ok":true,"id":ID,"rev":REV} */
static int reply_ok_rev(struct hreq *r, int status, const char *id,
			size_t idlen, const struct rev *rv)
{
	struct json_object *o = json_object_new_object();

	if (!o)
		return -ENOMEM;
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	json_object_object_add(o, "id", json_strn(id, idlen));
	if (rv)
		json_object_object_add(o, "rev", json_rev(rv));
	return hreq_reply_json(r, status, o);
}

/* ---- rendering a revision ---- */

static bool render_needs_tree(const struct api_render *o)
{
	return o->revs || o->revs_info || o->conflicts ||
	       o->deleted_conflicts || (o->attachments && o->natts_since);
}

/* The ancestry of rv in t, newest first, at most max entries (0: all);
 * *out is malloc'ed, owned by the caller. */
static int rev_path(const struct revtree *t, const struct rev *rv,
		    size_t max, struct rev **out, size_t *n)
{
	size_t cnt = revtree_count(t);
	struct rev *p;
	int rc;

	if (!max || max > cnt)
		max = cnt;
	if (!(p = calloc(max ? max : 1, sizeof(*p))))
		return -ENOMEM;
	if ((rc = revtree_path(t, rv, p, max, n))) {
		free(p);
		return rc;
	}
	*out = p;
	return 0;
}

/* "_revisions": {"start":N,"ids":[hashes]}, at most limit of them. */
static int add_revisions(struct json_object *o, const struct revtree *t,
			 const struct rev *rv, uint32_t limit)
{
	struct json_object *r, *ids;
	struct rev *path;
	size_t n;
	int rc = rev_path(t, rv, limit, &path, &n);

	if (rc)
		return rc;
	r = json_object_new_object();
	ids = json_object_new_array();
	for (size_t i = 0; r && ids && i < n; i++) {
		char buf[REV_STR_SIZE];

		rev_format(&path[i], buf, sizeof(buf));
		json_object_array_add(ids,
				      json_object_new_string(strchr(buf, '-') + 1));
	}
	free(path);
	if (!r || !ids) {
		json_object_put(r);
		json_object_put(ids);
		return -ENOMEM;
	}
	json_object_object_add(r, "start", json_object_new_int64((int64_t)rv->gen));
	json_object_object_add(r, "ids", ids);
	return json_object_object_add(o, "_revisions", r);
}

/* "_revs_info": the ancestry with what is known of each revision. */
static int add_revs_info(struct json_object *o, const struct revtree *t,
			 const struct rev *rv, uint32_t limit)
{
	struct json_object *a;
	struct rev *path;
	size_t n;
	int rc = rev_path(t, rv, limit, &path, &n);

	if (rc)
		return rc;
	if (!(a = json_object_new_array())) {
		free(path);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_new_object();
		struct revtree_info ri = { 0 };
		const char *st = "missing";

		if (!revtree_find(t, &path[i], &ri))
			st = ri.deleted ? "deleted" :
			     ri.missing || !ri.has_body ? "missing" : "available";
		json_object_object_add(e, "rev", json_rev(&path[i]));
		json_object_object_add(e, "status", json_object_new_string(st));
		json_object_array_add(a, e);
	}
	free(path);
	return json_object_object_add(o, "_revs_info", a);
}

/* "_conflicts" or "_deleted_conflicts", when there are any. */
static int add_conflicts(struct json_object *o, const struct revtree *t,
			 bool deleted)
{
	struct json_object *a;
	struct rev *revs = NULL;
	size_t n = 0;
	int rc = deleted ? revtree_deleted_conflicts(t, &revs, &n)
			 : revtree_conflicts(t, &revs, &n);

	if (rc || !n) {
		free(revs);
		return rc;
	}
	if (!(a = json_object_new_array())) {
		free(revs);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		json_object_array_add(a, json_rev(&revs[i]));
	free(revs);
	return json_object_object_add(o, deleted ? "_deleted_conflicts"
						 : "_conflicts", a);
}

/*
 * CouchDB's atts_since: the generation of the newest of o->atts_since
 * that is rv or one of its ancestors (0: none is). Attachments added
 * after it carry their data, the others are stubs.
 */
static int atts_since_gen(const struct revtree *t, const struct rev *rv,
			  const struct api_render *o, uint64_t *gen)
{
	struct rev *path;
	size_t n;
	int rc = rev_path(t, rv, 0, &path, &n);

	*gen = 0;
	if (rc)
		return rc;
	for (size_t i = 0; i < n && !*gen; i++)
		for (size_t j = 0; j < o->natts_since; j++)
			if (rev_eq(&path[i], &o->atts_since[j]))
				*gen = path[i].gen;
	free(path);
	return 0;
}

/* Read exactly want bytes of rd at off into buf. */
static int blob_read_full(struct bblob_reader *rd, void *buf, size_t want,
			  uint64_t off)
{
	size_t got = 0;

	while (got < want) {
		ssize_t n = bblob_read(rd, (char *)buf + got, want - got,
				       off + got);

		if (n < 0)
			return (int)n;
		if (n == 0)
			return BARREL_E_CORRUPT;   /* shorter than its length */
		got += (size_t)n;
	}
	return 0;
}

/* An attachment's bytes as base64 text, encoded a piece at a time. */
static int att_base64(struct docdb *d, struct bsnap *snap,
		      const struct doc_att *a, struct json_object **out)
{
	struct bblob_reader *rd = NULL;
	unsigned char *piece = NULL;
	char *txt = NULL;
	size_t pos = 0;
	uint64_t off = 0;
	int rc;

	if (a->length > (uint64_t)INT32_MAX / 4 * 3)
		return BARREL_E_TOOBIG;
	if ((rc = docdb_att_open(d, snap, a, &rd)))
		return rc;
	piece = malloc(B64_PIECE);
	txt = malloc(4 * ((size_t)a->length / 3 + 1) + 1);
	if (!piece || !txt) {
		rc = -ENOMEM;
		goto out_free;
	}
	while (off < a->length) {
		size_t want = a->length - off < B64_PIECE ?
			      (size_t)(a->length - off) : B64_PIECE;

		if ((rc = blob_read_full(rd, piece, want, off)))
			goto out_free;
		pos += (size_t)EVP_EncodeBlock((unsigned char *)txt + pos,
					       piece, (int)want);
		off += want;
	}
	txt[pos] = '\0';
	if (!(*out = json_object_new_string_len(txt, (int)pos)))
		rc = -ENOMEM;
out_free:
	free(txt);
	free(piece);
	bblob_close(rd);
	return rc;
}

/* Does attachment a carry its data under ro with atts_since at since? */
static bool att_has_data(const struct doc_att *a,
			 const struct api_render *ro, uint64_t since)
{
	return ro->attachments && a->revpos > since;
}

/* "_attachments": stubs, "follows" entries or inline data. */
static int add_atts(struct docdb *d, struct bsnap *snap,
		    struct json_object *o, const struct doc *doc,
		    const struct api_render *ro, uint64_t since, bool follows)
{
	struct json_object *all = json_object_new_object();
	int rc = all ? 0 : -ENOMEM;

	for (size_t i = 0; !rc && i < doc->natts; i++) {
		const struct doc_att *a = &doc->atts[i];
		struct json_object *e = json_object_new_object(), *data = NULL;
		char dg[DOC_DIGEST_SIZE];

		if (!e) {
			rc = -ENOMEM;
			break;
		}
		doc_digest_format(a->md5, dg);
		json_object_object_add(e, "content_type",
				       json_object_new_string(a->content_type));
		json_object_object_add(e, "revpos",
				       json_object_new_int64((int64_t)a->revpos));
		json_object_object_add(e, "digest", json_object_new_string(dg));
		if (!att_has_data(a, ro, since) || follows)
			json_object_object_add(e, "length",
					       json_object_new_int64((int64_t)a->length));
		if (!att_has_data(a, ro, since))
			json_object_object_add(e, "stub", json_object_new_boolean(1));
		else if (follows)
			json_object_object_add(e, "follows", json_object_new_boolean(1));
		else if (!(rc = att_base64(d, snap, a, &data)))
			json_object_object_add(e, "data", data);
		json_object_object_add(all, a->name, e);
	}
	if (rc) {
		json_object_put(all);
		return rc;
	}
	return json_object_object_add(o, "_attachments", all);
}

/* _id, _rev, the body's members and _deleted. */
static int render_base(const struct doc *doc, struct json_object **out)
{
	struct json_object *body, *o;
	int rc = doc_json(doc, 0, &body);

	if (rc)
		return rc;
	if (!(o = json_object_new_object())) {
		json_object_put(body);
		return -ENOMEM;
	}
	json_object_object_add(o, "_id", json_strn(doc->id, doc->idlen));
	json_object_object_add(o, "_rev", json_rev(&doc->rev));
	json_object_object_foreach(body, key, val)
		json_object_object_add(o, key, json_object_get(val));
	json_object_put(body);
	if (doc->deleted)
		json_object_object_add(o, "_deleted", json_object_new_boolean(1));
	*out = o;
	return 0;
}

/* The meta members ro asks for that need the tree t. */
static int render_meta(struct docdb *d, const struct revtree *t,
		       const struct doc *doc, const struct api_render *ro,
		       struct json_object *o)
{
	uint32_t limit = docdb_revs_limit(d);
	int rc = 0;

	if (!rc && ro->revs)
		rc = add_revisions(o, t, &doc->rev, limit);
	if (!rc && ro->revs_info)
		rc = add_revs_info(o, t, &doc->rev, limit);
	if (!rc && ro->conflicts)
		rc = add_conflicts(o, t, false);
	if (!rc && ro->deleted_conflicts)
		rc = add_conflicts(o, t, true);
	return rc;
}

/*
 * doc as CouchDB shows it under ro; with follows, the attachments that
 * carry data are written {"follows":true} (multipart) and *since gets
 * the generation of atts_since they are newer than.
 */
static int render(struct docdb *d, struct bsnap *snap, const struct doc *doc,
		  const struct api_render *ro, bool follows,
		  struct json_object **out, uint64_t *since_out)
{
	const struct revtree *t = doc->tree;
	struct revtree *own = NULL;
	struct json_object *o = NULL;
	uint64_t since = 0;
	int rc = 0;

	if (!t && render_needs_tree(ro)) {
		if ((rc = docdb_tree(d, snap, doc->id, doc->idlen, &own, NULL)))
			return rc;
		t = own;
	}
	if ((rc = render_base(doc, &o)) ||
	    (t && (rc = render_meta(d, t, doc, ro, o))))
		goto out_free;
	if (ro->local_seq)
		json_object_object_add(o, "_local_seq",
				       json_object_new_int64((int64_t)doc->seq));
	if (ro->attachments && ro->natts_since &&
	    (rc = atts_since_gen(t, &doc->rev, ro, &since)))
		goto out_free;
	if (doc->natts)
		rc = add_atts(d, snap, o, doc, ro, since, follows);
out_free:
	revtree_free(own);
	if (rc) {
		json_object_put(o);
		return rc;
	}
	if (since_out)
		*since_out = since;
	*out = o;
	return 0;
}

int api_render_doc(struct docdb *d, struct bsnap *snap,
		   const struct doc *doc, const struct api_render *o,
		   struct json_object **out)
{
	static const struct api_render plain;
	struct bsnap *own = NULL;
	int rc;

	if (!o)
		o = &plain;
	if (!snap && o->attachments && doc->natts) {
		if ((rc = bdb_snapshot(docdb_bdb(d), &own)))
			return rc;
		snap = own;
	}
	rc = render(d, snap, doc, o, false, out, NULL);
	if (own)
		bsnap_release(own);
	return rc;
}

/* ---- streamed replies: text and attachment ranges, in order ---- */

/* One piece of a streamed reply: text (buf) or a range of a blob. */
struct oseg {
	char *buf;                /* owned; NULL for a blob range */
	uint64_t len;
	struct doc_att att;       /* the blob (name and type not used) */
	uint64_t off;
};

/*
 * A reply made of pieces, read from snap, which it owns until the
 * stream's free function. Pieces are built with os_text()/os_flush()
 * and os_blob(); the stream reads them in order (pos only grows).
 */
struct ostream {
	struct docdb *d;
	struct bsnap *snap;       /* owned */
	struct oseg *segs;
	size_t nsegs, cap;
	uint64_t total;
	struct bbuf text;         /* text not yet made a piece */
	bool oom;
	size_t cur;               /* stream state: piece at curpos */
	uint64_t curpos;
	struct bblob_reader *rd;  /* open on segs[cur] when a blob */
};

static void os_free(void *arg)
{
	struct ostream *os = arg;

	if (!os)
		return;
	bblob_close(os->rd);
	for (size_t i = 0; i < os->nsegs; i++)
		free(os->segs[i].buf);
	free(os->segs);
	bbuf_release(&os->text);
	if (os->snap)
		bsnap_release(os->snap);
	free(os);
}

static struct oseg *os_push(struct ostream *os)
{
	if (os->nsegs == os->cap) {
		size_t cap = os->cap ? os->cap * 2 : 8;
		struct oseg *g = realloc(os->segs, cap * sizeof(*g));

		if (!g) {
			os->oom = true;
			return NULL;
		}
		os->segs = g;
		os->cap = cap;
	}
	memset(&os->segs[os->nsegs], 0, sizeof(os->segs[0]));
	return &os->segs[os->nsegs++];
}

/* Make the pending text a piece. */
static void os_flush(struct ostream *os)
{
	struct oseg *s;

	if (os->text.err)
		os->oom = true;
	if (!os->text.len || os->oom)
		return;
	if (!(s = os_push(os)))
		return;
	s->buf = os->text.p;
	s->len = os->text.len;
	os->total += s->len;
	memset(&os->text, 0, sizeof(os->text));
}

static void os_blob(struct ostream *os, const struct doc_att *a,
		    uint64_t off, uint64_t len)
{
	struct oseg *s;

	os_flush(os);
	if (!len || !(s = os_push(os)))
		return;
	s->att = *a;
	s->att.name = NULL;
	s->att.content_type = NULL;
	s->off = off;
	s->len = len;
	os->total += len;
}

static ssize_t os_read(void *arg, uint64_t pos, char *buf, size_t max)
{
	struct ostream *os = arg;
	struct oseg *s;
	uint64_t within;
	size_t n;

	if (pos < os->curpos) {       /* never expected: start over */
		bblob_close(os->rd);
		os->rd = NULL;
		os->cur = 0;
		os->curpos = 0;
	}
	while (os->cur < os->nsegs &&
	       pos >= os->curpos + os->segs[os->cur].len) {
		os->curpos += os->segs[os->cur++].len;
		bblob_close(os->rd);
		os->rd = NULL;
	}
	if (os->cur == os->nsegs)
		return HREQ_STREAM_END;
	s = &os->segs[os->cur];
	within = pos - os->curpos;
	n = s->len - within < max ? (size_t)(s->len - within) : max;
	if (s->buf) {
		memcpy(buf, s->buf + within, n);
		return (ssize_t)n;
	}
	if (!os->rd && docdb_att_open(os->d, os->snap, &s->att, &os->rd))
		return HREQ_STREAM_ERROR;
	if (blob_read_full(os->rd, buf, n, s->off + within))
		return HREQ_STREAM_ERROR;
	return (ssize_t)n;
}

/* A new stream over snap (taken, also on error). */
static int os_new(struct docdb *d, struct bsnap *snap, struct ostream **out)
{
	struct ostream *os = calloc(1, sizeof(*os));

	if (!os) {
		bsnap_release(snap);
		return -ENOMEM;
	}
	os->d = d;
	os->snap = snap;
	*out = os;
	return 0;
}

/* Send os (taken) as the reply. */
static int os_reply(struct hreq *r, struct ostream *os, int status,
		    const char *ctype)
{
	os_flush(os);
	if (os->oom) {
		os_free(os);
		return hreq_reply_rc(r, -ENOMEM, NULL);
	}
	return hreq_reply_stream(r, status, ctype, os->total, os_read, os,
				 os_free);
}

/* ---- open_revs: the revisions asked for, read from one snapshot ---- */

/* One revision asked for (open_revs, _bulk_get, latest). */
struct orev {
	struct rev rev;
	int rc;                   /* 0: doc read; else it is missing */
	struct doc doc;
};

struct orevs {
	struct orev *v;
	size_t n, cap;
};

static void orevs_release(struct orevs *o)
{
	for (size_t i = 0; i < o->n; i++)
		doc_release(&o->v[i].doc);
	free(o->v);
	memset(o, 0, sizeof(*o));
}

static int orevs_add(struct orevs *o, const struct rev *rv)
{
	for (size_t i = 0; i < o->n; i++)
		if (rev_eq(&o->v[i].rev, rv))
			return 0;
	if (o->n == o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 4;
		struct orev *g = realloc(o->v, cap * sizeof(*g));

		if (!g)
			return -ENOMEM;
		o->v = g;
		o->cap = cap;
	}
	memset(&o->v[o->n], 0, sizeof(o->v[0]));
	o->v[o->n].rev = *rv;
	o->v[o->n++].rc = BARREL_E_NOTFOUND;
	return 0;
}

/* The leaves that descend from rv (or are it), best first; rv itself
 * when it is not in the tree. */
static int orevs_add_latest(struct orevs *o, const struct revtree *t,
			    const struct revtree_info *leaves, size_t nleaves,
			    const struct rev *rv)
{
	struct revtree_info ri;
	bool any = false;
	int rc = 0;

	if (!t || revtree_find(t, rv, &ri))
		return orevs_add(o, rv);
	for (size_t i = 0; !rc && i < nleaves; i++) {
		struct rev *path;
		size_t n;

		if ((rc = rev_path(t, &leaves[i].rev, 0, &path, &n)))
			break;
		for (size_t j = 0; j < n && !rc; j++) {
			if (rev_eq(&path[j], rv)) {
				rc = orevs_add(o, &leaves[i].rev);
				any = true;
				break;
			}
		}
		free(path);
	}
	return rc || any ? rc : orevs_add(o, rv);
}

/*
 * The revisions of id that open_revs asks for, read from snap: every
 * leaf (all), or revs, each replaced by the leaves that descend from it
 * with latest. Reads use flags (DOC_GET_*). BARREL_E_NOTFOUND with all
 * when the document was never written.
 */
static int orevs_collect(struct docdb *d, struct bsnap *snap, const char *id,
			 size_t idlen, bool all, const struct rev *revs,
			 size_t n, bool latest, unsigned flags,
			 struct orevs *out)
{
	struct revtree_info *leaves = NULL;
	struct revtree *t = NULL;
	size_t nleaves = 0;
	int rc = docdb_tree(d, snap, id, idlen, &t, NULL);

	if (rc == BARREL_E_NOTFOUND && !all)
		rc = 0;
	if (rc || (t && (rc = revtree_leaves(t, &leaves, &nleaves))))
		goto out_free;
	for (size_t i = 0; all && !rc && i < nleaves; i++)
		rc = orevs_add(out, &leaves[i].rev);
	for (size_t i = 0; !all && !rc && i < n; i++)
		rc = latest ? orevs_add_latest(out, t, leaves, nleaves, &revs[i])
			    : orevs_add(out, &revs[i]);
	for (size_t i = 0; !rc && t && i < out->n; i++) {
		struct orev *v = &out->v[i];

		v->rc = docdb_get(d, snap, id, idlen, &v->rev,
				  flags | DOC_GET_DELETED, &v->doc);
		if (v->rc && v->rc != BARREL_E_NOTFOUND)
			rc = v->rc;
	}
out_free:
	free(leaves);
	revtree_free(t);
	return rc;
}

/* ---- GET and HEAD /{db}/{id} ---- */

/* What the query of a document read asks. */
struct docq {
	struct api_render ro;
	bool has_rev;
	struct rev rev;
	bool latest;
	bool deleted;             /* ?deleted=true: a deleted winner too */
	bool open;                /* open_revs given */
	bool open_all;
	struct rev *open_revs;    /* owned */
	size_t nopen;
	struct rev *since;        /* owned; ro.atts_since */
};

static void docq_release(struct docq *q)
{
	free(q->open_revs);
	free(q->since);
}

/* Parse the query of a read; 0, or an error with *why for a 400. */
static int docq_parse(struct hreq *r, struct docq *q, const char **why)
{
	const char *v;
	int rc;

	memset(q, 0, sizeof(*q));
	q->ro.revs = arg_true(r, "revs");
	q->ro.revs_info = arg_true(r, "revs_info") || arg_true(r, "meta");
	q->ro.conflicts = arg_true(r, "conflicts") || arg_true(r, "meta");
	q->ro.deleted_conflicts = arg_true(r, "deleted_conflicts") ||
				  arg_true(r, "meta");
	q->ro.local_seq = arg_true(r, "local_seq");
	q->ro.attachments = arg_true(r, "attachments");
	q->latest = arg_true(r, "latest");
	q->deleted = arg_true(r, "deleted");
	*why = "Invalid rev format";
	if ((v = hreq_arg(r, "rev"))) {
		if ((rc = parse_rev_str(v, &q->rev)))
			return rc;
		q->has_rev = true;
	}
	if ((v = hreq_arg(r, "open_revs"))) {
		q->open = true;
		q->open_all = !strcmp(v, "all");
		if (!q->open_all &&
		    (rc = parse_rev_json(v, &q->open_revs, &q->nopen)))
			return rc;
	}
	if ((v = hreq_arg(r, "atts_since"))) {
		*why = "atts_since must be a JSON array of revisions";
		if ((rc = parse_rev_json(v, &q->since, &q->ro.natts_since)))
			return rc;
		q->ro.atts_since = q->since;
		q->ro.attachments = true;
	}
	return 0;
}

/* Does the client take open_revs as multipart/mixed (CouchDB's
 * accepts_content_type: no Accept header takes anything)? */
static bool wants_multipart(struct hreq *r)
{
	const char *a = hreq_header(r, "Accept");

	return !a || strstr(a, "multipart/mixed") || strstr(a, "multipart/*") ||
	       strstr(a, "*/*");
}

/* {"ok":doc} or {"missing":rev} for a JSON list of open_revs. */
static int orev_json(struct docdb *d, struct bsnap *snap, struct orev *v,
		     const struct api_render *ro, struct json_object **out)
{
	struct json_object *o = json_object_new_object(), *doc;
	int rc;

	if (!o)
		return -ENOMEM;
	if (v->rc) {
		json_object_object_add(o, "missing", json_rev(&v->rev));
	} else if ((rc = render(d, snap, &v->doc, ro, false, &doc, NULL))) {
		json_object_put(o);
		return rc;
	} else {
		json_object_object_add(o, "ok", doc);
	}
	*out = o;
	return 0;
}

static int open_revs_json(struct hreq *r, struct docdb *d, struct bsnap *snap,
			  struct orevs *ov, const struct api_render *ro)
{
	struct json_object *a = json_object_new_array(), *e;
	int rc = a ? 0 : -ENOMEM;

	for (size_t i = 0; !rc && i < ov->n; i++)
		if (!(rc = orev_json(d, snap, &ov->v[i], ro, &e)))
			json_object_array_add(a, e);
	if (rc) {
		json_object_put(a);
		return reply_rc(r, rc, NULL);
	}
	return hreq_reply_json(r, 200, a);
}

/* Append s to os's text as a quoted-string body (no quotes added). */
static void os_quoted(struct ostream *os, const char *s)
{
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			bbuf_add(&os->text, "\\", 1);
		bbuf_add(&os->text, s, 1);
	}
}

/*
 * One revision of a multipart/mixed open_revs reply, after "--OB":
 * its headers and body, then "\r\n--OB". A revision whose attachments
 * follow is a nested multipart/related: the JSON, then each one.
 */
static int mp_orev(struct ostream *os, const char *ob, struct orev *v,
		   const struct api_render *ro)
{
	struct json_object *j;
	char ib[BOUNDARY_LEN + 1], rs[REV_STR_SIZE];
	uint64_t since;
	size_t nfollow = 0;
	int rc;

	if (v->rc) {
		rev_format(&v->rev, rs, sizeof(rs));
		bbuf_addf(&os->text, "\r\nContent-Type: application/json; "
			  "error=\"true\"\r\n\r\n{\"missing\":\"%s\"}\r\n--%s",
			  rs, ob);
		return 0;
	}
	if ((rc = render(os->d, os->snap, &v->doc, ro, true, &j, &since)))
		return rc;
	for (size_t i = 0; i < v->doc.natts; i++)
		nfollow += att_has_data(&v->doc.atts[i], ro, since);
	if (!nfollow) {
		bbuf_adds(&os->text, "\r\nContent-Type: application/json\r\n\r\n");
		bbuf_adds(&os->text, json_object_to_json_string_ext(j, JSON_OUT));
		bbuf_addf(&os->text, "\r\n--%s", ob);
		json_object_put(j);
		return 0;
	}
	random_hex(ib, BOUNDARY_LEN);
	bbuf_addf(&os->text, "\r\nContent-Type: multipart/related; "
		  "boundary=\"%s\"\r\n\r\n--%s\r\nContent-Type: "
		  "application/json\r\n\r\n", ib, ib);
	bbuf_adds(&os->text, json_object_to_json_string_ext(j, JSON_OUT));
	json_object_put(j);
	for (size_t i = 0; i < v->doc.natts; i++) {
		const struct doc_att *a = &v->doc.atts[i];

		if (!att_has_data(a, ro, since))
			continue;
		bbuf_addf(&os->text, "\r\n--%s\r\nContent-Disposition: "
			  "attachment; filename=\"", ib);
		os_quoted(os, a->name);
		bbuf_addf(&os->text, "\"\r\nContent-Type: %s\r\n"
			  "Content-Length: %llu\r\n\r\n", a->content_type,
			  (unsigned long long)a->length);
		os_blob(os, a, 0, a->length);
	}
	bbuf_addf(&os->text, "\r\n--%s--\r\n--%s", ib, ob);
	return 0;
}

/* The multipart/mixed reply (CouchDB's replicator asks for it); every
 * attachment's data follows, as in CouchDB. Takes snap. */
static int open_revs_multipart(struct hreq *r, struct docdb *d,
			       struct bsnap *snap, struct orevs *ov,
			       const struct api_render *ro0)
{
	struct api_render ro = *ro0;
	struct ostream *os;
	char ob[BOUNDARY_LEN + 1], ctype[BOUNDARY_LEN + 40];
	int rc = os_new(d, snap, &os);

	if (rc)
		return reply_rc(r, rc, NULL);
	ro.attachments = true;
	random_hex(ob, BOUNDARY_LEN);
	snprintf(ctype, sizeof(ctype), "multipart/mixed; boundary=\"%s\"", ob);
	bbuf_addf(&os->text, "--%s", ob);
	for (size_t i = 0; !rc && i < ov->n; i++)
		rc = mp_orev(os, ob, &ov->v[i], &ro);
	bbuf_adds(&os->text, "--");
	if (rc) {
		os_free(os);
		return reply_rc(r, rc, NULL);
	}
	return os_reply(r, os, 200, ctype);
}

/* GET with open_revs. Takes snap. */
static int open_revs_get(struct hreq *r, struct docdb *d, struct bsnap *snap,
			 const char *id, size_t idlen, const struct docq *q)
{
	struct orevs ov = { 0 };
	unsigned flags = render_needs_tree(&q->ro) ? DOC_GET_TREE : 0;
	int rc = orevs_collect(d, snap, id, idlen, q->open_all, q->open_revs,
			       q->nopen, q->latest, flags, &ov);

	if (!rc && q->open_all && !ov.n)
		rc = BARREL_E_NOTFOUND;
	if (rc) {
		bsnap_release(snap);
		orevs_release(&ov);
		return reply_rc(r, rc, "missing");
	}
	if (wants_multipart(r)) {
		rc = open_revs_multipart(r, d, snap, &ov, &q->ro);
	} else {
		rc = open_revs_json(r, d, snap, &ov, &q->ro);
		bsnap_release(snap);
	}
	orevs_release(&ov);
	return rc;
}

/* The one revision a plain GET reads into *doc: rev, the best leaf that
 * descends from it (latest), or the winner. */
static int doc_read(struct docdb *d, struct bsnap *snap, const char *id,
		    size_t idlen, const struct docq *q, struct doc *doc)
{
	unsigned flags = render_needs_tree(&q->ro) ? DOC_GET_TREE : 0;
	struct orevs ov = { 0 };
	int rc;

	if (q->deleted || q->has_rev)
		flags |= DOC_GET_DELETED;
	if (!q->has_rev || !q->latest)
		return docdb_get(d, snap, id, idlen, q->has_rev ? &q->rev : NULL,
				 flags, doc);
	rc = orevs_collect(d, snap, id, idlen, false, &q->rev, 1, true, flags,
			   &ov);
	if (!rc)
		rc = BARREL_E_NOTFOUND;
	for (size_t i = 0; rc == BARREL_E_NOTFOUND && i < ov.n; i++) {
		if (!ov.v[i].rc) {
			*doc = ov.v[i].doc;
			memset(&ov.v[i].doc, 0, sizeof(ov.v[i].doc));
			rc = 0;
		}
	}
	orevs_release(&ov);
	return rc;
}

static int doc_get(struct hreq *r, struct docdb *d, const char *id,
		   size_t idlen)
{
	struct json_object *j = NULL;
	struct bsnap *snap = NULL;
	struct doc doc = { 0 };
	struct docq q;
	const char *why, *inm;
	char etag[REV_STR_SIZE + 2], rs[REV_STR_SIZE];
	int rc = docq_parse(r, &q, &why);

	if (rc) {
		docq_release(&q);
		return rc == -ENOMEM ? reply_rc(r, rc, NULL) : reply_bad(r, why);
	}
	if ((rc = bdb_snapshot(docdb_bdb(d), &snap)))
		goto out_reply;
	if (q.open) {
		rc = open_revs_get(r, d, snap, id, idlen, &q);
		docq_release(&q);
		return rc;
	}
	rc = doc_read(d, snap, id, idlen, &q, &doc);
	if (rc == BARREL_E_NOTFOUND) {
		rc = reply_rc(r, rc, !q.has_rev && doc.deleted ? "deleted"
							       : "missing");
		goto out_free;
	}
	if (rc)
		goto out_reply;
	rev_format(&doc.rev, rs, sizeof(rs));
	snprintf(etag, sizeof(etag), "\"%s\"", rs);
	inm = hreq_header(r, "If-None-Match");
	if (inm && !strcmp(inm, etag)) {
		hreq_header_add(r, "ETag", etag);
		rc = hreq_reply(r, 304, "application/json", NULL, 0);
		goto out_free;
	}
	if ((rc = render(d, snap, &doc, &q.ro, false, &j, NULL)))
		goto out_reply;
	hreq_header_add(r, "ETag", etag);
	rc = hreq_reply_json(r, 200, j);
	goto out_free;
out_reply:
	rc = reply_rc(r, rc, NULL);
out_free:
	doc_release(&doc);
	if (snap)
		bsnap_release(snap);
	docq_release(&q);
	return rc;
}

/* ---- PUT, DELETE and COPY /{db}/{id} ---- */

/* A new attachment a with the len bytes of buf, written a piece at a
 * time (the caller sets a's name, type and revpos after). */
static int att_from_buf(struct docdb *d, const char *buf, size_t len,
			struct doc_att *a)
{
	struct doc_att_writer *w;
	int rc = docdb_att_create(d, &w);

	if (rc)
		return rc;
	for (size_t off = 0; off < len && !rc; off += ATT_PIECE)
		rc = doc_att_write(w, buf + off,
				   len - off < ATT_PIECE ? len - off : ATT_PIECE);
	if (rc) {
		doc_att_abort(w);
		return rc;
	}
	return doc_att_finish(w, a);
}

static int reply_illegal_id(struct hreq *r, const char *id)
{
	return hreq_reply_error(r, 400, "illegal_docid", id[0] == '_' ?
		"Only reserved document ids may start with underscore." :
		"Document id must be a valid UTF-8 string");
}

/*
 * The parent a write names: the body's "_rev" (brev, may be NULL), ?rev=
 * and If-Match, which must agree (CouchDB's couch_doc_from_req). 1 and
 * *out when one is named, 0 when none, or an error with *why.
 */
static int write_parent(struct hreq *r, const struct rev *brev,
			struct rev *out, const char **why)
{
	const char *qs = hreq_arg(r, "rev");
	bool named = false;
	struct rev qr, hr;
	int rc;

	*why = "Invalid rev format";
	if (qs && (rc = parse_rev_str(qs, &qr)))
		return rc;
	if (brev && qs && !rev_eq(brev, &qr)) {
		*why = "Document rev from request body and query string have "
		       "different values";
		return BARREL_E_INVALID;
	}
	if (brev || qs) {
		*out = brev ? *brev : qr;
		named = true;
	}
	if ((rc = if_match_rev(r, &hr)) < 0)
		return rc;
	if (rc == 1 && named && !rev_eq(out, &hr)) {
		*why = "Document rev and etag have different values";
		return BARREL_E_INVALID;
	}
	if (rc == 1) {
		*out = hr;
		named = true;
	}
	return named;
}

/* The reply to the write p that docdb_put() returned rc for. */
static int reply_put(struct hreq *r, int rc, const struct doc_put *p,
		     int status, const char *att_name)
{
	if (!rc)
		rc = p->rc;
	switch (rc) {
	case 0:
		break;
	case BARREL_E_NOTFOUND:
		return hreq_reply_error(r, 412, "missing_stub", p->error);
	case BARREL_E_INVALID:
		return reply_bad(r, p->error[0] ? p->error : "invalid document");
	default:
		return reply_rc(r, rc, p->error);
	}
	if (status == 202)
		return reply_ok_rev(r, status, p->id, p->idlen, NULL);
	if (!att_name)
		add_etag_rev(r, &p->rev);
	if (status == 201)
		add_location(r, p->id, p->idlen, att_name);
	return reply_ok_rev(r, status, p->id, p->idlen, &p->rev);
}

/* PUT of a document: body (len bytes), with atts (finished, may be 0)
 * that its "_attachments" say follow. */
static int doc_write(struct hreq *r, struct docdb *d, const char *id,
		     size_t idlen, const char *body, size_t len,
		     const struct doc_att *atts, size_t natts)
{
	const char *ne = hreq_arg(r, "new_edits"), *batch = hreq_arg(r, "batch");
	bool replicated = ne && !strcmp(ne, "false");
	struct doc_put p = { .id = id, .idlen = idlen, .body = body,
			     .len = len, .atts = atts, .natts = natts };
	char err[BODY_ERRLEN] = "";
	bool in_body, deleted;
	const char *why;
	struct rev parent;
	struct body b;
	int named, rc;

	if (!docdb_id_valid(id, idlen))
		return reply_illegal_id(r, id);
	if ((rc = body_parse(body, len, &b, err))) {
		body_release(&b);
		return reply_rc(r, rc, err);
	}
	named = write_parent(r, b.has_rev ? &b.rev : NULL, &parent, &why);
	in_body = b.has_rev || b.revisions;
	deleted = b.deleted;
	body_release(&b);
	if (named < 0)
		return named == -ENOMEM ? reply_rc(r, named, NULL)
					: reply_bad(r, why);
	if (named && !(replicated && in_body))
		p.parent = &parent;
	if (replicated)
		p.flags |= DOC_PUT_REPLICATED | DOC_PUT_NORMALIZE;
	if (batch && !strcmp(batch, "ok"))
		p.flags |= DOC_PUT_NOSYNC;
	rc = docdb_put(d, &p, 1);
	return reply_put(r, rc, &p, p.flags & DOC_PUT_NOSYNC ? 202 :
			 deleted ? 200 : 201, NULL);
}

/* One part of a multipart body: its header lines and its content. */
struct mpart {
	const char *hdr;
	size_t hlen;
	const char *data;
	size_t len;
};

/* The boundary parameter of a multipart Content-Type into out. */
static int mp_boundary(const char *ct, char *out, size_t size)
{
	const char *p = strcasestr(ct, "boundary="), *end;
	size_t n;

	if (!p)
		return BARREL_E_INVALID;
	p += strlen("boundary=");
	if (*p == '"')
		end = strchr(++p, '"');
	else
		end = p + strcspn(p, "; \t");
	if (!end || end == p || (size_t)(end - p) >= size)
		return BARREL_E_INVALID;
	n = (size_t)(end - p);
	memcpy(out, p, n);
	out[n] = '\0';
	return 0;
}

/* The next delimiter (dlen bytes) in [p, end) that is one: followed by
 * "--" or by optional white space and CRLF (RFC 2046); NULL if none. */
static const char *mp_next_delim(const char *p, const char *end,
				 const char *delim, size_t dlen)
{
	while (p < end) {
		const char *q = memmem(p, (size_t)(end - p), delim, dlen), *t;

		if (!q)
			return NULL;
		t = q + dlen;
		if (end - t >= 2 && t[0] == '-' && t[1] == '-')
			return q;
		while (t < end && (*t == ' ' || *t == '\t'))
			t++;
		if (end - t >= 2 && t[0] == '\r' && t[1] == '\n')
			return q;
		p = q + 1;
	}
	return NULL;
}

/* The parts of a multipart body (RFC 2046) delimited by bnd; *out is
 * malloc'ed (pointing into body), owned by the caller. */
static int mp_split(const char *body, size_t len, const char *bnd,
		    struct mpart **out, size_t *n)
{
	const char *end = body + len, *p;
	char delim[MP_MAX_BOUNDARY + 8];
	size_t dlen = (size_t)snprintf(delim, sizeof(delim), "\r\n--%s", bnd);
	struct mpart *v = NULL;
	size_t cnt = 0, cap = 0;

	if (len >= dlen - 2 && !memcmp(body, delim + 2, dlen - 2))
		p = body + dlen - 2;
	else if ((p = mp_next_delim(body, end, delim, dlen)))
		p += dlen;
	else
		return BARREL_E_INVALID;
	while (!(end - p >= 2 && p[0] == '-' && p[1] == '-')) {
		const char *data, *next;
		struct mpart *g;

		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
			goto out_invalid;
		p += 2;
		if (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
			data = p + 2;
		else if ((data = memmem(p, (size_t)(end - p), "\r\n\r\n", 4)))
			data += 4;
		else
			goto out_invalid;
		if (!(next = mp_next_delim(data, end, delim, dlen)))
			goto out_invalid;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 4;
			if (!(g = realloc(v, cap * sizeof(*g)))) {
				free(v);
				return -ENOMEM;
			}
			v = g;
		}
		v[cnt++] = (struct mpart){ p, (size_t)(data - p), data,
					   (size_t)(next - data) };
		p = next + dlen;
	}
	*out = v;
	*n = cnt;
	return 0;
out_invalid:
	free(v);
	return BARREL_E_INVALID;
}

/* Header name of part pt into buf ("" when absent). */
static void mp_header(const struct mpart *pt, const char *name, char *buf,
		      size_t size)
{
	const char *p = pt->hdr, *end = pt->hdr + pt->hlen;
	size_t nlen = strlen(name);

	buf[0] = '\0';
	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		size_t l = eol ? (size_t)(eol - p) : (size_t)(end - p);

		if (l > nlen && !strncasecmp(p, name, nlen) && p[nlen] == ':') {
			const char *v = p + nlen + 1;
			size_t vl = l - nlen - 1;

			while (vl && (*v == ' ' || *v == '\t'))
				v++, vl--;
			if (vl >= size)
				vl = size - 1;
			memcpy(buf, v, vl);
			buf[vl] = '\0';
			return;
		}
		p += l + 2;
	}
}

static int64_t json_member_int(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_int))
		return -1;
	return json_object_get_int64(v);
}

/* Store the parts that follow the JSON as the attachments its
 * "_attachments" mark {"follows":true}, in order, into atts. */
static int mp_atts(struct docdb *d, struct json_object *doc,
		   const struct mpart *parts, size_t nparts,
		   struct doc_att *atts, char (*ctypes)[MP_MAX_CTYPE],
		   size_t *natts, const char **why)
{
	struct json_object *all, *f;
	size_t i = 0;
	int rc = 0;

	*why = "the parts of the multipart body do not match the attachments "
	       "that follow";
	if (!json_object_object_get_ex(doc, "_attachments", &all) ||
	    !json_object_is_type(all, json_type_object))
		return nparts ? BARREL_E_INVALID : 0;
	json_object_object_foreach(all, name, e) {
		struct doc_att *a = &atts[i];
		int64_t want;

		if (!json_object_is_type(e, json_type_object) ||
		    !json_object_object_get_ex(e, "follows", &f) ||
		    !json_object_get_boolean(f))
			continue;
		if (rc || i == nparts) {
			rc = rc ? rc : BARREL_E_INVALID;
			break;
		}
		if ((rc = att_from_buf(d, parts[i].data, parts[i].len, a)))
			break;
		want = json_member_int(e, "length");
		a->name = name;
		mp_header(&parts[i], "Content-Type", ctypes[i], MP_MAX_CTYPE);
		a->content_type = ctypes[i][0] ? ctypes[i]
					       : (char *)"application/octet-stream";
		if (json_object_object_get_ex(e, "content_type", &f) &&
		    json_object_is_type(f, json_type_string))
			a->content_type = (char *)json_object_get_string(f);
		a->revpos = (uint64_t)(json_member_int(e, "revpos") > 0 ?
				       json_member_int(e, "revpos") : 0);
		*natts = ++i;
		if (want >= 0 && (uint64_t)want != a->length) {
			*why = "an attachment's length does not match its part";
			rc = BARREL_E_INVALID;
		}
	}
	if (!rc && i != nparts)
		rc = BARREL_E_INVALID;
	return rc;
}

/* PUT of a multipart/related body: the JSON, then the attachments. */
static int doc_put_multipart(struct hreq *r, struct docdb *d, const char *id,
			     size_t idlen, const char *ctype)
{
	char bnd[MP_MAX_BOUNDARY + 1];
	struct json_tokener *tok = NULL;
	struct json_object *doc = NULL;
	struct mpart *parts = NULL;
	struct doc_att *atts = NULL;
	char (*ctypes)[MP_MAX_CTYPE] = NULL;
	size_t nparts = 0, natts = 0;
	const char *why = "invalid multipart body";
	int rc;

	if ((rc = mp_boundary(ctype, bnd, sizeof(bnd))) ||
	    (rc = mp_split(r->body, r->len, bnd, &parts, &nparts)) ||
	    (rc = nparts ? 0 : BARREL_E_INVALID))
		goto out_reply;
	if (!(tok = json_tokener_new()) ||
	    !(atts = calloc(nparts, sizeof(*atts))) ||
	    !(ctypes = calloc(nparts, sizeof(*ctypes)))) {
		rc = -ENOMEM;
		goto out_reply;
	}
	doc = json_tokener_parse_ex(tok, parts[0].data, (int)parts[0].len);
	if (!doc || json_tokener_get_error(tok) != json_tokener_success) {
		rc = BARREL_E_BADJSON;
		goto out_reply;
	}
	if (!json_object_is_type(doc, json_type_object)) {
		rc = BARREL_E_NOTOBJECT;
		goto out_reply;
	}
	if ((rc = mp_atts(d, doc, parts + 1, nparts - 1, atts, ctypes, &natts,
			  &why)))
		goto out_reply;
	rc = doc_write(r, d, id, idlen, parts[0].data, parts[0].len, atts, natts);
	goto out_free;
out_reply:
	rc = rc == BARREL_E_INVALID ? reply_bad(r, why) : reply_rc(r, rc, NULL);
out_free:
	free(ctypes);
	free(atts);
	json_object_put(doc);
	if (tok)
		json_tokener_free(tok);
	free(parts);
	return rc;
}

static int doc_put_req(struct hreq *r, struct docdb *d, const char *id,
		       size_t idlen)
{
	const char *ct = hreq_header(r, "Content-Type");

	if (ct && !strncasecmp(ct, "multipart/related", strlen("multipart/related")))
		return doc_put_multipart(r, d, id, idlen, ct);
	return doc_write(r, d, id, idlen, r->body, r->len, NULL, 0);
}

/* 404 unless id has a live winner: CouchDB's check before a delete. */
static int doc_exists(struct docdb *d, const char *id, size_t idlen,
		      const char **why)
{
	struct revtree *t = NULL;
	int rc = docdb_tree(d, NULL, id, idlen, &t, NULL);

	*why = "missing";
	if (!rc && revtree_is_deleted(t)) {
		*why = "deleted";
		rc = BARREL_E_NOTFOUND;
	}
	revtree_free(t);
	return rc;
}

static int doc_delete(struct hreq *r, struct docdb *d, const char *id,
		      size_t idlen)
{
	struct doc_put p = { .id = id, .idlen = idlen, .deleted = true };
	struct rev parent;
	const char *why;
	int rc = doc_exists(d, id, idlen, &why), named;

	if (rc)
		return reply_rc(r, rc, why);
	if ((named = write_parent(r, NULL, &parent, &why)) < 0)
		return reply_bad(r, why);
	if (!named)
		return reply_rc(r, BARREL_E_CONFLICT, NULL);
	p.parent = &parent;
	rc = docdb_put(d, &p, 1);
	return reply_put(r, rc, &p, 200, NULL);
}

/* COPY /{db}/{id} with Destination: "ID" or "ID?rev=R". */
static int doc_copy(struct hreq *r, struct docdb *d, const char *id,
		    size_t idlen)
{
	const char *dest = hreq_header(r, "Destination"), *q, *qs;
	struct doc_put p = { 0 };
	struct json_object *j = NULL;
	struct doc src = { 0 };
	char *did = NULL;
	struct rev srev, drev;
	int rc;

	if (!dest)
		return reply_bad(r, "Destination header is mandatory for COPY.");
	q = strchr(dest, '?');
	rc = url_unescape(dest, q ? (size_t)(q - dest) : strlen(dest), false,
			  &did);
	if (rc == BARREL_E_INVALID)
		return reply_bad(r, "Invalid percent-encoding in the "
				 "Destination header");
	if (rc)
		return reply_rc(r, rc, NULL);
	if (!docdb_id_valid(did, strlen(did)))
		rc = reply_illegal_id(r, did);
	else if (q && (strncmp(q, "?rev=", 5) || parse_rev_str(q + 5, &drev)))
		rc = reply_bad(r, "Invalid rev format");
	else if ((qs = hreq_arg(r, "rev")) && parse_rev_str(qs, &srev))
		rc = reply_bad(r, "Invalid rev format");
	else if ((rc = docdb_get(d, NULL, id, idlen, qs ? &srev : NULL, 0,
				 &src)))
		rc = reply_rc(r, rc, src.deleted && !qs ? "deleted" : "missing");
	else if (!(rc = doc_json(&src, 0, &j))) {
		p.id = did;
		p.idlen = strlen(did);
		p.body = json_object_to_json_string_ext(j, JSON_OUT);
		p.len = strlen(p.body);
		p.parent = q ? &drev : NULL;
		p.atts = src.atts;
		p.natts = src.natts;
		rc = docdb_put(d, &p, 1);
		rc = reply_put(r, rc, &p, 201, NULL);
	} else {
		rc = reply_rc(r, rc, NULL);
	}
	json_object_put(j);
	doc_release(&src);
	free(did);
	return rc;
}

int api_doc(struct hreq *r, struct docdb *d, const char *id, size_t idlen)
{
	const char *m = r->method;

	if (!strcmp(m, "GET") || !strcmp(m, "HEAD"))
		return doc_get(r, d, id, idlen);
	if (!strcmp(m, "PUT"))
		return doc_put_req(r, d, id, idlen);
	if (!strcmp(m, "DELETE"))
		return doc_delete(r, d, id, idlen);
	if (!strcmp(m, "COPY"))
		return doc_copy(r, d, id, idlen);
	hreq_header_add(r, "Allow", "DELETE,GET,HEAD,PUT,COPY");
	return hreq_reply_error(r, 405, "method_not_allowed",
				"Only DELETE,GET,HEAD,PUT,COPY allowed");
}

/* ---- attachments: /{db}/{id}/{name} ---- */

static const struct doc_att *att_lookup(const struct doc *doc,
					const char *name)
{
	for (size_t i = 0; i < doc->natts; i++)
		if (!strcmp(doc->atts[i].name, name))
			return &doc->atts[i];
	return NULL;
}

/*
 * A single range of Range (RFC 7233) over len bytes, as CouchDB reads
 * it: 1 and [*from, *to], 0 to send everything (no header, another
 * unit, several ranges, "bytes=0-", bad syntax), BARREL_E_INVALID when
 * unsatisfiable.
 */
static int parse_range(const char *h, uint64_t len, uint64_t *from,
		       uint64_t *to)
{
	unsigned long long a, b;
	char *e;

	if (!h || strncasecmp(h, "bytes=", 6) || strchr(h, ','))
		return 0;
	h += 6;
	if (*h == '-') {
		b = strtoull(h + 1, &e, 10);
		if (e == h + 1 || *e)
			return 0;
		if (!b || !len)
			return BARREL_E_INVALID;
		*from = b >= len ? 0 : len - b;
		*to = len - 1;
		return 1;
	}
	if (*h < '0' || *h > '9')
		return 0;
	a = strtoull(h, &e, 10);
	if (*e++ != '-')
		return 0;
	if (!*e) {
		b = len ? len - 1 : 0;
		if (!a)
			return 0;
	} else {
		h = e;
		b = strtoull(h, &e, 10);
		if (e == h || *e)
			return 0;
	}
	if (b < a || a >= len)
		return BARREL_E_INVALID;
	*from = a;
	*to = b >= len ? len - 1 : b;
	return 1;
}

/* The headers of an attachment reply: ETag (its digest), ranges. */
static void att_headers(struct hreq *r, const struct doc_att *a, int ranged,
			uint64_t from, uint64_t to)
{
	char dg[DOC_DIGEST_SIZE], buf[96];

	doc_digest_format(a->md5, dg);
	snprintf(buf, sizeof(buf), "\"%s\"", dg + 4);
	hreq_header_add(r, "ETag", buf);
	hreq_header_add(r, "Accept-Ranges", "bytes");
	if (ranged) {
		snprintf(buf, sizeof(buf), "bytes %llu-%llu/%llu",
			 (unsigned long long)from, (unsigned long long)to,
			 (unsigned long long)a->length);
		hreq_header_add(r, "Content-Range", buf);
	} else {
		hreq_header_add(r, "Content-MD5", dg + 4);
	}
}

/* Reply with attachment a of a revision read from snap (taken): 304
 * for its ETag, the range the request asks (416 when it cannot be
 * satisfied), or all of it, streamed from its blob. */
static int att_send(struct hreq *r, struct docdb *d, struct bsnap *snap,
		    const struct doc_att *a)
{
	const char *inm = hreq_header(r, "If-None-Match");
	char etag[64], dg[DOC_DIGEST_SIZE], rbuf[64];
	struct ostream *os;
	uint64_t from = 0, to = a->length ? a->length - 1 : 0;
	int rc, ranged;

	doc_digest_format(a->md5, dg);
	snprintf(etag, sizeof(etag), "\"%s\"", dg + 4);
	if (inm && !strcmp(inm, etag)) {
		bsnap_release(snap);
		hreq_header_add(r, "ETag", etag);
		return hreq_reply(r, 304, a->content_type, NULL, 0);
	}
	ranged = parse_range(hreq_header(r, "Range"), a->length, &from, &to);
	if (ranged < 0) {
		bsnap_release(snap);
		snprintf(rbuf, sizeof(rbuf), "bytes */%llu",
			 (unsigned long long)a->length);
		hreq_header_add(r, "Content-Range", rbuf);
		return hreq_reply_error(r, 416, "requested_range_not_satisfiable",
					"Requested range not satisfiable");
	}
	if ((rc = os_new(d, snap, &os)))
		return reply_rc(r, rc, NULL);
	os_blob(os, a, from, a->length ? to - from + 1 : 0);
	att_headers(r, a, ranged, from, to);
	return os_reply(r, os, ranged ? 206 : 200, a->content_type);
}

static int att_get(struct hreq *r, struct docdb *d, const char *id,
		   size_t idlen, const char *name)
{
	const char *qs = hreq_arg(r, "rev");
	const struct doc_att *a;
	struct bsnap *snap = NULL;
	struct doc doc = { 0 };
	struct rev rv;
	int rc;

	if (qs && parse_rev_str(qs, &rv))
		return reply_bad(r, "Invalid rev format");
	if ((rc = bdb_snapshot(docdb_bdb(d), &snap)))
		return reply_rc(r, rc, NULL);
	rc = docdb_get(d, snap, id, idlen, qs ? &rv : NULL,
		       qs ? DOC_GET_DELETED : 0, &doc);
	if (rc) {
		bsnap_release(snap);
		rc = reply_rc(r, rc, !qs && doc.deleted ? "deleted" : "missing");
	} else if (!(a = att_lookup(&doc, name))) {
		bsnap_release(snap);
		rc = reply_rc(r, BARREL_E_NOTFOUND,
			      "Document is missing attachment");
	} else {
		rc = att_send(r, d, snap, a);
	}
	doc_release(&doc);
	return rc;
}

/* The revision parent of id an attachment edit starts from, into *base;
 * replies (and returns 1) when there is none to edit. */
static int att_base(struct hreq *r, struct docdb *d, const char *id,
		    size_t idlen, const struct rev *parent, struct doc *base,
		    int *reply)
{
	struct revtree_info ri;
	struct revtree *t = NULL;
	int rc = docdb_get(d, NULL, id, idlen, parent, DOC_GET_DELETED, base);

	if (!rc)
		return 0;
	if (rc == BARREL_E_NOTFOUND && parent &&
	    !docdb_tree(d, NULL, id, idlen, &t, NULL) &&
	    !revtree_find(t, parent, &ri))
		rc = BARREL_E_CONFLICT;     /* a stale revision */
	revtree_free(t);
	*reply = reply_rc(r, rc, !parent && base->deleted ? "deleted" : NULL);
	return 1;
}

static int att_name_check(struct hreq *r, const char *id, size_t idlen,
			  const char *name, int *reply)
{
	if (!docdb_id_valid(id, idlen))
		*reply = reply_illegal_id(r, id);
	else if (!*name || name[0] == '_')
		*reply = reply_bad(r, "Attachment name can't start with '_'");
	else if (!body_utf8_valid(name, strlen(name)))
		*reply = reply_bad(r, "Attachment name is not UTF-8 encoded");
	else
		return 0;
	return 1;
}

/* PUT: a new revision with the attachment added or replaced. */
static int att_put(struct hreq *r, struct docdb *d, const char *id,
		   size_t idlen, const char *name)
{
	const char *ct = hreq_header(r, "Content-Type"), *why;
	struct doc_put p = { .id = id, .idlen = idlen, .body = "{}", .len = 2,
			     .flags = DOC_PUT_KEEP_ATTS, .natts = 1 };
	struct doc_att a = { 0 };
	struct doc base = { 0 };
	struct rev parent;
	int named, rc = 0;

	if (att_name_check(r, id, idlen, name, &rc))
		return rc;
	if ((named = write_parent(r, NULL, &parent, &why)) < 0)
		return reply_bad(r, why);
	if (named && att_base(r, d, id, idlen, &parent, &base, &rc))
		return rc;
	if ((rc = att_from_buf(d, r->body, r->len, &a))) {
		doc_release(&base);
		return reply_rc(r, rc, NULL);
	}
	a.name = (char *)name;
	a.content_type = (char *)(ct && *ct ? ct : "application/octet-stream");
	p.atts = &a;
	if (named) {
		p.body = base.body;
		p.len = base.len;
		p.parent = &parent;
	}
	rc = docdb_put(d, &p, 1);
	rc = reply_put(r, rc, &p, 201, name);
	doc_release(&base);
	return rc;
}

/* DELETE: a new revision without the attachment. */
static int att_delete(struct hreq *r, struct docdb *d, const char *id,
		      size_t idlen, const char *name)
{
	struct doc_put p = { .id = id, .idlen = idlen,
			     .flags = DOC_PUT_KEEP_ATTS, .natts = 1 };
	struct doc_att a = { .name = (char *)name, .remove = true };
	struct doc base = { 0 };
	struct rev parent;
	const char *why;
	int named, rc = 0;

	if ((named = write_parent(r, NULL, &parent, &why)) < 0)
		return reply_bad(r, why);
	if (att_base(r, d, id, idlen, named ? &parent : NULL, &base, &rc))
		return rc;
	if (!att_lookup(&base, name)) {
		rc = reply_rc(r, BARREL_E_NOTFOUND, "Document is missing attachment");
	} else if (!named) {
		rc = reply_rc(r, BARREL_E_CONFLICT, NULL);
	} else {
		p.body = base.body;
		p.len = base.len;
		p.parent = &parent;
		p.atts = &a;
		rc = docdb_put(d, &p, 1);
		rc = reply_put(r, rc, &p, 200, name);
	}
	doc_release(&base);
	return rc;
}

int api_att(struct hreq *r, struct docdb *d, const char *id, size_t idlen,
	    const char *name)
{
	const char *m = r->method;

	if (!strcmp(m, "GET") || !strcmp(m, "HEAD"))
		return att_get(r, d, id, idlen, name);
	if (!strcmp(m, "PUT"))
		return att_put(r, d, id, idlen, name);
	if (!strcmp(m, "DELETE"))
		return att_delete(r, d, id, idlen, name);
	hreq_header_add(r, "Allow", "DELETE,GET,HEAD,PUT");
	return hreq_reply_error(r, 405, "method_not_allowed",
				"Only DELETE,GET,HEAD,PUT allowed");
}

/* ---- POST /{db}/_bulk_get ---- */

/* {"error":{"id","rev","error","reason"}}; id and rev are taken. */
static struct json_object *bg_error(struct json_object *id,
				    struct json_object *rev, const char *error,
				    const char *reason)
{
	struct json_object *o = json_object_new_object();
	struct json_object *e = json_object_new_object();

	if (!o || !e) {
		json_object_put(o);
		json_object_put(e);
		json_object_put(id);
		json_object_put(rev);
		return NULL;
	}
	json_object_object_add(e, "id", id);
	json_object_object_add(e, "rev", rev);
	json_object_object_add(e, "error", json_object_new_string(error));
	json_object_object_add(e, "reason", json_object_new_string(reason));
	json_object_object_add(o, "error", e);
	return o;
}

/* What one item of "docs" asks, or why it is refused (*err set). */
struct bg_item {
	struct json_object *id;   /* borrowed */
	bool has_rev;
	struct rev rev;
	struct rev *since;        /* owned */
	size_t nsince;
};

static struct json_object *bg_parse(struct json_object *item,
				    struct bg_item *it)
{
	struct json_object *v;

	if (!json_object_is_type(item, json_type_object) ||
	    !json_object_object_get_ex(item, "id", &it->id) || !it->id)
		return bg_error(NULL, NULL, "bad_request", "document id missed");
	if (!json_object_is_type(it->id, json_type_string) ||
	    !docdb_id_valid(json_object_get_string(it->id),
			    (size_t)json_object_get_string_len(it->id)))
		return bg_error(json_object_get(it->id), NULL, "illegal_docid",
				"Document id must be a valid string");
	if (json_object_object_get_ex(item, "rev", &v) && v) {
		if (!json_object_is_type(v, json_type_string) ||
		    parse_rev_str(json_object_get_string(v), &it->rev))
			return bg_error(json_object_get(it->id),
					json_object_get(v), "bad_request",
					"Invalid rev format");
		it->has_rev = true;
	}
	if (json_object_object_get_ex(item, "atts_since", &v) && v &&
	    api_revs_parse(v, &it->since, &it->nsince))
		return bg_error(json_object_get(it->id), json_object_get(v),
				"bad_request",
				"att_since value must be array of revs.");
	return NULL;
}

/* The "docs" of one result: each revision, or its error. */
static int bg_docs(struct docdb *d, struct bsnap *snap, struct bg_item *it,
		   const struct api_render *ro, bool latest,
		   struct json_object *docs)
{
	const char *id = json_object_get_string(it->id);
	size_t idlen = (size_t)json_object_get_string_len(it->id);
	unsigned flags = render_needs_tree(ro) ? DOC_GET_TREE : 0;
	struct orevs ov = { 0 };
	int rc = orevs_collect(d, snap, id, idlen, !it->has_rev, &it->rev,
			       it->has_rev, latest, flags, &ov);

	if (rc == BARREL_E_NOTFOUND || (!rc && !ov.n)) {
		rc = 0;
		json_object_array_add(docs, bg_error(json_object_get(it->id),
			it->has_rev ? json_rev(&it->rev)
				    : json_object_new_string("undefined"),
			"not_found", "missing"));
	}
	for (size_t i = 0; !rc && i < ov.n; i++) {
		struct json_object *doc;

		if (ov.v[i].rc) {
			json_object_array_add(docs, bg_error(
				json_object_get(it->id), json_rev(&ov.v[i].rev),
				"not_found", "missing"));
		} else if (!(rc = render(d, snap, &ov.v[i].doc, ro, false, &doc,
					 NULL))) {
			struct json_object *ok = json_object_new_object();

			json_object_object_add(ok, "ok", doc);
			json_object_array_add(docs, ok);
		}
	}
	orevs_release(&ov);
	return rc;
}

/* One element of "results": {"id":ID,"docs":[...]}. */
static int bg_result(struct docdb *d, struct bsnap *snap,
		     struct json_object *item, const struct api_render *ro0,
		     bool latest, struct json_object *results)
{
	struct json_object *res = json_object_new_object();
	struct json_object *docs = json_object_new_array(), *err;
	struct bg_item it = { 0 };
	struct api_render ro = *ro0;
	int rc = 0;

	if (!res || !docs) {
		json_object_put(res);
		json_object_put(docs);
		return -ENOMEM;
	}
	if ((err = bg_parse(item, &it))) {
		json_object_array_add(docs, err);
	} else {
		if (it.nsince) {
			ro.atts_since = it.since;
			ro.natts_since = it.nsince;
			ro.attachments = true;
		}
		rc = bg_docs(d, snap, &it, &ro, latest, docs);
	}
	json_object_object_add(res, "id", it.id && json_object_is_type(it.id,
			       json_type_string) ? json_object_get(it.id) : NULL);
	json_object_object_add(res, "docs", docs);
	json_object_array_add(results, res);
	free(it.since);
	return rc;
}

int api_bulk_get(struct hreq *r, struct docdb *d)
{
	static const char *const refused[] = { "open_revs", "new_edits", "w",
					       "rev", "atts_since" };
	struct api_render ro = { 0 };
	struct json_object *req, *docs, *results = NULL, *out;
	struct bsnap *snap = NULL;
	char why[80];
	int rc = 0;

	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		if (hreq_arg(r, refused[i])) {
			snprintf(why, sizeof(why), "\"%s\" query parameter is "
				 "not acceptable", refused[i]);
			return reply_bad(r, why);
		}
	}
	req = json_tokener_parse(r->body);
	if (!req || !json_object_object_get_ex(req, "docs", &docs) ||
	    !json_object_is_type(docs, json_type_array)) {
		json_object_put(req);
		return reply_bad(r, "Missing JSON list of 'docs'.");
	}
	ro.revs = arg_true(r, "revs");
	ro.revs_info = arg_true(r, "revs_info");
	ro.conflicts = arg_true(r, "conflicts");
	ro.deleted_conflicts = arg_true(r, "deleted_conflicts");
	ro.attachments = arg_true(r, "attachments");
	ro.local_seq = arg_true(r, "local_seq");
	if (!(rc = bdb_snapshot(docdb_bdb(d), &snap)) &&
	    !(results = json_object_new_array()))
		rc = -ENOMEM;
	for (size_t i = 0; !rc && i < json_object_array_length(docs); i++)
		rc = bg_result(d, snap, json_object_array_get_idx(docs, i), &ro,
			       arg_true(r, "latest"), results);
	if (snap)
		bsnap_release(snap);
	json_object_put(req);
	if (rc || !(out = json_object_new_object())) {
		json_object_put(results);
		return reply_rc(r, rc ? rc : -ENOMEM, NULL);
	}
	json_object_object_add(out, "results", results);
	return hreq_reply_json(r, 200, out);
}
