/*
 * The replicator (repl.h): CouchDB's replication protocol over two
 * clients (client.h). The functions are named after the protocol's
 * steps, listed in repl.h; repl_run() drives them.
 */
#include "config.h"

#include <errno.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "engine/error.h"
#include "sync/client.h"
#include "sync/repl.h"
#include "sync/url.h"

#define REPL_ID_VERSION 4         /* "replication_id_version" written */
#define REPL_HISTORY_MAX 50       /* sessions kept in a checkpoint */
#define REPL_FETCH_CHUNK 100u     /* revisions per _bulk_get request */
#define REPL_MULTIPART_MIN (1u << 20) /* attachment bytes of a document
                                         sent as multipart/related */
#define REPL_JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

struct repl {
	struct client *src, *dst;      /* the writer's (repl_run()'s thread) */
	struct client *rsrc, *rdst;    /* the reader thread's */
	struct repl_opts o;
	atomic_int stop;               /* repl_stop() calls since the run;
	                                  the cancel of src and dst */
	atomic_int rstop;              /* the cancel of rsrc and rdst: as
	                                  stop, and 2 when the writer ends */
	char id[33];                   /* replication id, md5 hex */
	char *local_path;              /* "/_local/<id>" */
	char *src_label, *dst_label;   /* names of the peers, malloc'ed */
	pthread_mutex_t lock;
	struct repl_stats st;          /* protected by lock (written only
	                                  by repl_run()'s thread) */

	/* One run's state, only touched by repl_run()'s thread. */
	struct json_object *history;   /* earlier sessions, newest first */
	char *start_seq;               /* JSON text: where the session began */
	char *since;                   /* JSON text: last checkpointed seq */
	char *src_rev, *dst_rev;       /* the checkpoints' "_rev", or NULL */
	char start_time[48];
	atomic_bool no_multipart;      /* the target refused a multipart PUT
	                                  (set by the writer) */

	/* The reader thread's state (steps 4-6). */
	char *rsince;                  /* JSON text: the last seq it read */
	bool no_bulk_get;              /* the source lacks _bulk_get */
	uint64_t b_checked, b_found, b_read;  /* the batch's counters */

	/* What the reader hands the writer, in order (repl_item). */
	pthread_mutex_t qlock;
	pthread_cond_t qcond;
	struct repl_item *qhead, *qtail;  /* protected by qlock */
	size_t qbytes;                 /* of the queued docs; qlock */
	bool qdone;                    /* the reader ended with qrc; qlock */
	int qrc;
	bool qquit;                    /* the writer ended; qlock */
};

/*
 * Work for the writer, queued by the reader: revisions to write (steps
 * 7), and each batch's end (8, 9). The writer takes them in order, so a
 * batch is checkpointed after its revisions and every earlier batch's
 * are written.
 */
enum repl_item_kind {
	REPL_ITEM_DOCS,                /* JSON texts of revisions */
	REPL_ITEM_MULTIPART,           /* one revision with big attachments */
	REPL_ITEM_BATCH,               /* a batch read whole: its last seq */
};

struct repl_item {
	struct repl_item *next;
	enum repl_item_kind kind;
	char **docs;                   /* DOCS: n texts, owned; MULTIPART: 1 */
	size_t *lens;
	size_t n, bytes;
	char *last_seq;                /* BATCH: JSON text, owned */
	size_t nrows;                  /* BATCH: changes read */
	uint64_t checked, found, read; /* BATCH: its counters */
};

/* A growing string; oom set once an allocation failed. */
struct repl_buf {
	char *p;
	size_t len, cap;
	bool oom;
};

/* Revisions for the target, in pieces of bounded size: the reader's
 * (queue set) go to the writer, the writer's to _bulk_docs (step 7). */
struct repl_writer {
	char **docs;                   /* JSON texts, owned */
	size_t *lens;
	size_t n, cap, bytes;
	struct json_object *seen;      /* reader: "id\nrev" already queued */
	bool queue;                    /* a flush queues for the writer */
	bool sent;                     /* something went on (this batch) */
};

void repl_opts_init(struct repl_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->batch = REPL_BATCH;
	o->max_request = REPL_MAX_REQUEST;
	o->longpoll_ms = 30000;
	client_opts_init(&o->client);
}

const char *repl_state_name(enum repl_state s)
{
	static const char *const names[] = {
		[REPL_IDLE] = "idle", [REPL_STARTING] = "starting",
		[REPL_RUNNING] = "running", [REPL_WAITING] = "waiting",
		[REPL_DONE] = "done", [REPL_STOPPED] = "stopped",
		[REPL_FAILED] = "failed",
	};

	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s]
							      : "unknown";
}

/* ---- small helpers ---- */

/* Room for n more bytes (and a NUL) in b. */
static bool rb_reserve(struct repl_buf *b, size_t n)
{
	size_t cap = b->cap ? b->cap : 256;
	char *p;

	if (b->oom)
		return false;
	if (b->len + n + 1 <= b->cap)
		return true;
	while (cap < b->len + n + 1)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p) {
		b->oom = true;
		return false;
	}
	b->p = p;
	b->cap = cap;
	return true;
}

static void rb_add(struct repl_buf *b, const char *s, size_t n)
{
	if (!rb_reserve(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void rb_str(struct repl_buf *b, const char *s)
{
	rb_add(b, s, strlen(s));
}

/* s percent-encoded (url_escape()). */
static void rb_esc(struct repl_buf *b, const char *s, bool doc_id)
{
	char *e = url_escape(s, doc_id);

	if (!e) {
		b->oom = true;
		return;
	}
	rb_str(b, e);
	free(e);
}

static void rb_uint(struct repl_buf *b, unsigned long long v)
{
	char num[24];

	snprintf(num, sizeof(num), "%llu", v);
	rb_str(b, num);
}

static struct json_object *jget(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	if (!o || !json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

/* Member key of o if it is a string, else NULL. */
static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v = jget(o, key);

	return json_object_is_type(v, json_type_string)
		       ? json_object_get_string(v) : NULL;
}

static bool jis_array(struct json_object *o)
{
	return o && json_object_is_type(o, json_type_array);
}

/* How peer c is named in messages. */
static const char *repl_label(const struct repl *r, const struct client *c)
{
	return c == r->src || c == r->rsrc ? r->src_label : r->dst_label;
}

/* The JSON text of a sequence (NULL: 0), malloc'ed. */
static char *repl_seq_text(struct json_object *seq)
{
	return strdup(seq ? json_object_to_json_string_ext(seq,
						REPL_JSON_FLAGS) : "0");
}

/* Record the run's error (err is a message of a client, or NULL: fmt). */
static int repl_fail(struct repl *r, int rc, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&r->lock);
	va_start(ap, fmt);
	vsnprintf(r->st.error, sizeof(r->st.error), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&r->lock);
	return rc;
}

/* The error of an unexpected reply: status and CouchDB's reason. */
static int repl_bad_reply(struct repl *r, struct client *c, const char *what,
			  const struct client_reply *rep)
{
	const char *error = jstr(rep->json, "error");
	const char *reason = jstr(rep->json, "reason");
	int rc = rep->status == 401 || rep->status == 403 ? -EACCES
		 : rep->status == 404 ? BARREL_E_NOTFOUND
		 : rep->status >= 500 ? -EIO : -EPROTO;

	return repl_fail(r, rc, "%s %s: HTTP %ld%s%s%s%s", what, repl_label(r, c),
			 rep->status, error ? " " : "", error ? error : "",
			 reason ? ": " : "", reason ? reason : "");
}

static void repl_add(struct repl *r, uint64_t *field, uint64_t n)
{
	pthread_mutex_lock(&r->lock);
	*field += n;
	pthread_mutex_unlock(&r->lock);
}

static void repl_set_state(struct repl *r, enum repl_state s)
{
	pthread_mutex_lock(&r->lock);
	r->st.state = s;
	pthread_mutex_unlock(&r->lock);
}

/* stats.last_seq from a sequence's JSON text: a string's contents, or
 * the text of a number. */
static void repl_set_last_seq(struct repl *r, const char *text)
{
	struct json_object *j = json_tokener_parse(text);
	const char *show = json_object_is_type(j, json_type_string)
				   ? json_object_get_string(j) : text;

	pthread_mutex_lock(&r->lock);
	snprintf(r->st.last_seq, sizeof(r->st.last_seq), "%s", show);
	pthread_mutex_unlock(&r->lock);
	json_object_put(j);
}

static void repl_progress(struct repl *r)
{
	struct repl_stats st;

	if (!r->o.progress)
		return;
	repl_stats(r, &st);
	r->o.progress(r->o.progress_arg, &st);
}

static void repl_hex(const unsigned char *in, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static void repl_http_time(char *buf, size_t size)
{
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(buf, size, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* ---- step 2: the replication id ---- */

static int repl_make_id(struct repl *r)
{
	struct repl_buf b = { 0 };
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int ok;

	/* Options that change what is replicated would go here too: there
	 * are none yet (no filters, doc_ids or selectors). */
	rb_str(&b, r->src_label);
	rb_str(&b, "\n");
	rb_str(&b, r->dst_label);
	rb_str(&b, "\n");
	if (b.oom)
		return -ENOMEM;
	ok = EVP_Digest(b.p, b.len, md, &mdlen, EVP_md5(), NULL);
	free(b.p);
	if (!ok || mdlen != 16)
		return -ENOMEM;
	repl_hex(md, 16, r->id);
	r->local_path = malloc(sizeof("/_local/") + 32);
	if (!r->local_path)
		return -ENOMEM;
	snprintf(r->local_path, sizeof("/_local/") + 32, "/_local/%s", r->id);
	return 0;
}

int repl_new(const char *src, const char *dst, const struct repl_opts *o,
	     struct repl **out, char *err)
{
	struct repl *r = calloc(1, sizeof(*r));
	struct client_opts co;
	char cerr[CLIENT_ERRLEN] = "";
	int rc;

	*out = NULL;
	if (!r)
		return -ENOMEM;
	if (o)
		r->o = *o;
	else
		repl_opts_init(&r->o);
	if (!r->o.batch)
		r->o.batch = REPL_BATCH;
	if (!r->o.max_request)
		r->o.max_request = REPL_MAX_REQUEST;
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->qlock, NULL);
	pthread_cond_init(&r->qcond, NULL);
	atomic_init(&r->stop, 0);
	atomic_init(&r->rstop, 0);
	co = r->o.client;
	co.cancel = &r->stop;
	rc = client_new(src, &co, &r->src, cerr);
	if (rc == 0)
		rc = client_new(dst, &co, &r->dst, cerr);
	co.cancel = &r->rstop;
	if (rc == 0)
		rc = client_new(src, &co, &r->rsrc, cerr);
	if (rc == 0)
		rc = client_new(dst, &co, &r->rdst, cerr);
	if (rc == 0) {
		r->src_label = strdup(o && o->src_label ? o->src_label
					  : client_url(r->src));
		r->dst_label = strdup(o && o->dst_label ? o->dst_label
					  : client_url(r->dst));
		rc = r->src_label && r->dst_label ? repl_make_id(r) : -ENOMEM;
		r->o.src_label = r->o.dst_label = NULL;     /* borrowed */
	}
	if (rc < 0) {
		snprintf(err, REPL_ERRLEN, "%s", rc == -ENOMEM ? "out of memory"
						      : cerr);
		repl_free(r);
		return rc;
	}
	memcpy(r->st.rep_id, r->id, sizeof(r->id));
	*out = r;
	return 0;
}

/* Drop one run's state. */
static void repl_reset_run(struct repl *r)
{
	json_object_put(r->history);
	r->history = NULL;
	free(r->start_seq);
	free(r->since);
	free(r->rsince);
	free(r->src_rev);
	free(r->dst_rev);
	r->start_seq = r->since = r->rsince = r->src_rev = r->dst_rev = NULL;
	r->no_bulk_get = r->o.no_bulk_get;
	atomic_store(&r->no_multipart, false);
}

void repl_free(struct repl *r)
{
	if (!r)
		return;
	repl_reset_run(r);
	client_free(r->src);
	client_free(r->dst);
	client_free(r->rsrc);
	client_free(r->rdst);
	free(r->local_path);
	free(r->src_label);
	free(r->dst_label);
	pthread_mutex_destroy(&r->lock);
	pthread_mutex_destroy(&r->qlock);
	pthread_cond_destroy(&r->qcond);
	free(r);
}

void repl_stop(struct repl *r)
{
	atomic_fetch_add(&r->stop, 1);
	atomic_fetch_add(&r->rstop, 1);
}

void repl_stats(struct repl *r, struct repl_stats *out)
{
	pthread_mutex_lock(&r->lock);
	*out = r->st;
	pthread_mutex_unlock(&r->lock);
}

/* Should the reader read no further batch? */
static bool repl_stopping(struct repl *r)
{
	return atomic_load(&r->rstop) > 0;
}

/* A client call whose transport error becomes the run's error. */
static int repl_call(struct repl *r, struct client *c, const char *method,
		     const char *path, const char *body, size_t len,
		     unsigned flags, struct client_reply *rep)
{
	char err[CLIENT_ERRLEN] = "";
	int rc = client_call(c, method, path, body, len, NULL, flags, rep,
			     err);

	if (rc < 0)
		repl_fail(r, rc, "%s", err);
	return rc;
}

static int repl_call_json(struct repl *r, struct client *c,
			  const char *method, const char *path,
			  struct json_object *j, struct client_reply *rep)
{
	size_t len = 0;
	const char *body = j ? json_object_to_json_string_length(
				       j, REPL_JSON_FLAGS, &len) : NULL;

	if (j && !body) {
		memset(rep, 0, sizeof(*rep));
		return repl_fail(r, -ENOMEM, "out of memory");
	}
	return repl_call(r, c, method, path, body, len, 0, rep);
}

/* ---- step 1: verify both peers ---- */

static int repl_verify_peer(struct repl *r, struct client *c,
			    const char *which, bool create)
{
	struct client_reply rep;
	int rc = repl_call(r, c, "GET", "", NULL, 0, 0, &rep);

	if (rc < 0)
		return rc;
	if (rep.status == 404 && create) {
		client_reply_release(&rep);
		rc = repl_call(r, c, "PUT", "", NULL, 0, 0, &rep);
		if (rc < 0)
			return rc;
		if (rep.status == 412)        /* created meanwhile */
			rep.status = 201;
	}
	if (rep.status == 404)
		rc = repl_fail(r, BARREL_E_NOTFOUND,
			       "%s database %s does not exist", which,
			       repl_label(r, c));
	else if (rep.status < 200 || rep.status > 299)
		rc = repl_bad_reply(r, c, rep.status == 201 ? "PUT" : "GET",
				    &rep);
	client_reply_release(&rep);
	return rc;
}

/*
 * Is c's server barrelfs (GET / names it the vendor)? Then it takes
 * gzipped request bodies, which CouchDB and PouchDB peers are not
 * assumed to: compress what goes to it. Any failure: plain bodies.
 */
static void repl_probe_gzip(struct client *c, struct client *c2)
{
	struct client_reply rep;
	char err[CLIENT_ERRLEN];
	const char *vendor;

	if (client_server(c, &rep, err) < 0)
		return;
	vendor = rep.status == 200 ? jstr(jget(rep.json, "vendor"), "name")
				   : NULL;
	client_gzip_requests(c, vendor && !strcmp(vendor, "barrelfs"));
	client_gzip_requests(c2, vendor && !strcmp(vendor, "barrelfs"));
	client_reply_release(&rep);
}

static int repl_verify(struct repl *r)
{
	int rc = repl_verify_peer(r, r->src, "source", false);

	if (rc == 0)
		rc = repl_verify_peer(r, r->dst, "target",
				      r->o.create_target);
	if (rc == 0) {
		repl_probe_gzip(r->src, r->rsrc);
		repl_probe_gzip(r->dst, r->rdst);
	}
	return rc;
}

/* ---- step 3: read both checkpoints, find where to start ---- */

/* The checkpoint of peer c into *doc (NULL: none) and its rev. */
static int repl_read_checkpoint(struct repl *r, struct client *c,
				struct json_object **doc, char **rev)
{
	struct client_reply rep;
	int rc = repl_call(r, c, "GET", r->local_path, NULL, 0, 0, &rep);
	const char *s;

	*doc = NULL;
	free(*rev);
	*rev = NULL;
	if (rc < 0)
		return rc;
	if (rep.status == 200 && rep.json &&
	    json_object_is_type(rep.json, json_type_object)) {
		*doc = json_object_get(rep.json);
		if ((s = jstr(rep.json, "_rev")) && !(*rev = strdup(s)))
			rc = -ENOMEM;
	} else if (rep.status != 404) {
		rc = repl_bad_reply(r, c, "GET checkpoint of", &rep);
	}
	client_reply_release(&rep);
	return rc;
}

/* Is session id in h[from..]? */
static bool repl_has_session(struct json_object *h, size_t from,
			     const char *id)
{
	size_t n = json_object_array_length(h);

	for (size_t i = from; id && i < n; i++) {
		const char *s = jstr(json_object_array_get_idx(h, i),
				     "session_id");

		if (s && !strcmp(s, id))
			return true;
	}
	return false;
}

/* A new array of h[from..]. */
static struct json_object *repl_history_tail(struct json_object *h,
					     size_t from)
{
	struct json_object *out = json_object_new_array();
	size_t n = json_object_array_length(h);

	for (size_t i = from; out && i < n; i++)
		json_object_array_add(out, json_object_get(
					json_object_array_get_idx(h, i)));
	return out;
}

/*
 * CouchDB's compare_rep_history: walk both histories newest first; the
 * first source session the target knows (or target session the rest of
 * the source knows) gives its recorded_seq. *seq is borrowed from s or
 * t, NULL for none (start from 0); *hist is new.
 */
static void repl_compare_history(struct json_object *s, struct json_object *t,
				 struct json_object **seq,
				 struct json_object **hist)
{
	size_t ns = jis_array(s) ? json_object_array_length(s) : 0;
	size_t nt = jis_array(t) ? json_object_array_length(t) : 0;

	*seq = NULL;
	for (size_t i = 0; i < ns && i < nt; i++) {
		struct json_object *se = json_object_array_get_idx(s, i);
		struct json_object *te = json_object_array_get_idx(t, i);

		if (repl_has_session(t, i, jstr(se, "session_id"))) {
			*seq = jget(se, "recorded_seq");
			*hist = repl_history_tail(s, i + 1);
			return;
		}
		if (repl_has_session(s, i + 1, jstr(te, "session_id"))) {
			*seq = jget(te, "recorded_seq");
			*hist = repl_history_tail(t, i + 1);
			return;
		}
	}
	*hist = json_object_new_array();
}

static int repl_find_start(struct repl *r)
{
	struct json_object *sdoc = NULL, *tdoc = NULL, *seq = NULL, *hist;
	const char *ssess, *tsess;
	int rc;

	rc = repl_read_checkpoint(r, r->src, &sdoc, &r->src_rev);
	if (rc == 0)
		rc = repl_read_checkpoint(r, r->dst, &tdoc, &r->dst_rev);
	if (rc < 0)
		goto out_put;
	ssess = jstr(sdoc, "session_id");
	tsess = jstr(tdoc, "session_id");
	if (ssess && tsess && !strcmp(ssess, tsess)) {
		seq = jget(sdoc, "source_last_seq");
		hist = jis_array(jget(sdoc, "history"))
			       ? repl_history_tail(jget(sdoc, "history"), 0)
			       : json_object_new_array();
	} else {
		repl_compare_history(jget(sdoc, "history"),
				     jget(tdoc, "history"), &seq, &hist);
	}
	r->history = hist;
	r->start_seq = repl_seq_text(seq);
	r->since = repl_seq_text(seq);
	if (!r->history || !r->start_seq || !r->since)
		rc = repl_fail(r, -ENOMEM, "out of memory");
	else
		repl_set_last_seq(r, r->since);
out_put:
	json_object_put(sdoc);
	json_object_put(tdoc);
	return rc;
}

/* ---- step 4: a batch of the source's changes ---- */

/* Append since=... for a sequence's JSON text. */
static void repl_add_since(struct repl_buf *b, const char *text)
{
	struct json_object *j = json_tokener_parse(text);

	rb_str(b, "&since=");
	if (json_object_is_type(j, json_type_string))
		rb_esc(b, json_object_get_string(j), false);
	else
		rb_esc(b, text, false);
	json_object_put(j);
}

static int repl_read_changes(struct repl *r, bool longpoll,
			     struct client_reply *rep)
{
	struct repl_buf b = { 0 };
	unsigned hb = r->o.longpoll_ms / 3 ? r->o.longpoll_ms / 3 : 1;
	int rc;

	rb_str(&b, longpoll ? "/_changes?feed=longpoll" : "/_changes?feed=normal");
	rb_str(&b, "&style=all_docs");
	repl_add_since(&b, r->rsince);
	rb_str(&b, "&limit=");
	rb_uint(&b, r->o.batch);
	if (longpoll) {
		rb_str(&b, "&timeout=");
		rb_uint(&b, r->o.longpoll_ms);
		rb_str(&b, "&heartbeat=");
		rb_uint(&b, hb);
	}
	if (b.oom)
		return repl_fail(r, -ENOMEM, "out of memory");
	rc = repl_call(r, r->rsrc, "GET", b.p, NULL, 0,
		       longpoll ? CLIENT_IDLE : 0, rep);
	free(b.p);
	if (rc == 0 && (rep->status != 200 ||
			!jis_array(jget(rep->json, "results")) ||
			!jget(rep->json, "last_seq"))) {
		rc = rep->status == 200
			     ? repl_fail(r, -EPROTO, "GET %s/_changes: not a "
					 "changes feed", r->src_label)
			     : repl_bad_reply(r, r->rsrc, "GET _changes of",
					      rep);
		client_reply_release(rep);
	}
	return rc;
}

/* ---- step 5: which leaf revisions does the target lack? ---- */

/* {"id": ["rev", ...]} of a batch's rows into *out; *nrevs counted. */
static int repl_diff_request(struct json_object *rows,
			     struct json_object **out, uint64_t *nrevs)
{
	struct json_object *req = json_object_new_object();
	size_t n = json_object_array_length(rows);

	*nrevs = 0;
	for (size_t i = 0; req && i < n; i++) {
		struct json_object *row = json_object_array_get_idx(rows, i);
		struct json_object *ch = jget(row, "changes"), *revs;
		const char *id = jstr(row, "id");
		size_t nch = jis_array(ch) ? json_object_array_length(ch) : 0;

		if (!id || !nch)
			continue;
		revs = jget(req, id);
		if (!revs) {
			revs = json_object_new_array();
			json_object_object_add(req, id, revs);
		}
		for (size_t k = 0; k < nch; k++) {
			const char *rev = jstr(json_object_array_get_idx(ch, k),
					       "rev");

			if (rev && !json_object_array_add(revs,
					json_object_new_string(rev)))
				(*nrevs)++;
		}
	}
	*out = req;
	return req ? 0 : -ENOMEM;
}

static int repl_revs_diff(struct repl *r, struct json_object *rows,
			  struct client_reply *rep)
{
	struct json_object *req;
	uint64_t nrevs;
	int rc = repl_diff_request(rows, &req, &nrevs);

	if (rc < 0)
		return repl_fail(r, rc, "out of memory");
	rc = repl_call_json(r, r->rdst, "POST", "/_revs_diff", req, rep);
	json_object_put(req);
	if (rc == 0 && (rep->status != 200 || !rep->json ||
			!json_object_is_type(rep->json, json_type_object))) {
		rc = repl_bad_reply(r, r->rdst, "POST _revs_diff to", rep);
		client_reply_release(rep);
	}
	if (rc == 0)
		r->b_checked += nrevs;
	return rc;
}

/* ---- step 7: write revisions to the target ---- */

/* A document the target refused or the source could not give. */
static void repl_doc_failed(struct repl *r, const char *id, const char *rev,
			    const char *error, const char *reason)
{
	pthread_mutex_lock(&r->lock);
	r->st.doc_write_failures++;
	snprintf(r->st.error, sizeof(r->st.error), "%s %s: %s%s%s",
		 id ? id : "?", rev ? rev : "", error ? error : "error",
		 reason ? ": " : "", reason ? reason : "");
	pthread_mutex_unlock(&r->lock);
}

/* Count the per-document errors of a _bulk_docs reply. */
static void repl_bulk_docs_result(struct repl *r, struct json_object *res,
				  size_t n)
{
	size_t nres = jis_array(res) ? json_object_array_length(res) : 0;
	uint64_t failed = 0;

	for (size_t i = 0; i < nres; i++) {
		struct json_object *e = json_object_array_get_idx(res, i);

		if (!jget(e, "error"))
			continue;
		repl_doc_failed(r, jstr(e, "id"), jstr(e, "rev"),
				jstr(e, "error"), jstr(e, "reason"));
		failed++;
	}
	repl_add(r, &r->st.docs_written, n > failed ? n - failed : 0);
}

/* POST docs[0..n) to the target's _bulk_docs; a 413 splits them. */
static int repl_bulk_docs(struct repl *r, char **docs, size_t *lens, size_t n)
{
	struct repl_buf b = { 0 };
	struct client_reply rep;
	int rc;

	rb_str(&b, "{\"new_edits\":false,\"docs\":[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			rb_str(&b, ",");
		rb_add(&b, docs[i], lens[i]);
	}
	rb_str(&b, "]}");
	if (b.oom) {
		free(b.p);
		return repl_fail(r, -ENOMEM, "out of memory");
	}
	rc = repl_call(r, r->dst, "POST", "/_bulk_docs", b.p, b.len, 0, &rep);
	free(b.p);
	if (rc < 0)
		return rc;
	if (rep.status == 413 && n > 1) {
		rc = repl_bulk_docs(r, docs, lens, n / 2);
		if (rc == 0)
			rc = repl_bulk_docs(r, docs + n / 2, lens + n / 2,
					    n - n / 2);
	} else if (rep.status == 200 || rep.status == 201 ||
		   rep.status == 202) {
		repl_bulk_docs_result(r, rep.json, n);
	} else if (rep.status >= 400 && rep.status < 500 &&
		   rep.status != 401 && rep.status != 403) {
		for (size_t i = 0; i < n; i++)
			repl_doc_failed(r, "_bulk_docs", "",
					jstr(rep.json, "error"),
					jstr(rep.json, "reason"));
	} else {
		rc = repl_bad_reply(r, r->dst, "POST _bulk_docs to", &rep);
	}
	client_reply_release(&rep);
	return rc;
}

static void repl_item_free(struct repl_item *it)
{
	for (size_t i = 0; it && i < it->n; i++)
		free(it->docs[i]);
	if (it) {
		free(it->docs);
		free(it->lens);
		free(it->last_seq);
	}
	free(it);
}

/*
 * Queue it (taken, also on error) for the writer. The reader waits while
 * the queue holds more than twice max_request bytes of documents: it
 * stays at most a request or two ahead. -ECANCELED once the writer has
 * ended.
 */
static int repl_enqueue(struct repl *r, struct repl_item *it)
{
	int rc = 0;

	pthread_mutex_lock(&r->qlock);
	while (!r->qquit && r->qbytes &&
	       r->qbytes + it->bytes > 2 * r->o.max_request)
		pthread_cond_wait(&r->qcond, &r->qlock);
	if (r->qquit) {
		rc = -ECANCELED;
	} else {
		if (r->qtail)
			r->qtail->next = it;
		else
			r->qhead = it;
		r->qtail = it;
		r->qbytes += it->bytes;
		pthread_cond_broadcast(&r->qcond);
	}
	pthread_mutex_unlock(&r->qlock);
	if (rc)
		repl_item_free(it);
	return rc;
}

/* Send w's documents on: the reader's to the writer (one DOCS item), the
 * writer's to the target's _bulk_docs. */
static int repl_writer_flush(struct repl *r, struct repl_writer *w)
{
	struct repl_item *it;
	int rc = 0;

	if (w->n && w->queue) {
		if (!(it = calloc(1, sizeof(*it))))
			return repl_fail(r, -ENOMEM, "out of memory");
		it->kind = REPL_ITEM_DOCS;
		it->docs = w->docs;
		it->lens = w->lens;
		it->n = w->n;
		it->bytes = w->bytes;
		w->docs = NULL;
		w->lens = NULL;
		w->n = w->cap = w->bytes = 0;
		w->sent = true;
		return repl_enqueue(r, it);
	}
	if (w->n) {
		rc = repl_bulk_docs(r, w->docs, w->lens, w->n);
		w->sent = true;
	}
	for (size_t i = 0; i < w->n; i++)
		free(w->docs[i]);
	w->n = 0;
	w->bytes = 0;
	return rc;
}

/* Append text (len bytes, malloc'ed, taken) to w, flushing first when
 * the request would grow past max_request. */
static int repl_writer_take(struct repl *r, struct repl_writer *w,
			    char *text, size_t len)
{
	int rc = 0;

	if (w->n && w->bytes + len > r->o.max_request)
		rc = repl_writer_flush(r, w);
	if (rc == 0 && w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 64;
		char **d = realloc(w->docs, cap * sizeof(*d));
		size_t *l = d ? realloc(w->lens, cap * sizeof(*l)) : NULL;

		if (d)
			w->docs = d;
		if (!d || !l)
			rc = repl_fail(r, -ENOMEM, "out of memory");
		else
			w->lens = l;
		if (d && l)
			w->cap = cap;
	}
	if (rc < 0) {
		free(text);
		return rc;
	}
	w->docs[w->n] = text;
	w->lens[w->n++] = len;
	w->bytes += len + 1;
	return 0;
}

static void repl_writer_release(struct repl_writer *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->docs[i]);
	free(w->docs);
	free(w->lens);
	json_object_put(w->seen);
	memset(w, 0, sizeof(*w));
}

/* ---- step 7, big attachments: one multipart/related PUT ---- */

/* Bytes of attachment data (decoded) doc carries inline. */
static size_t repl_inline_bytes(struct json_object *doc)
{
	struct json_object *all = jget(doc, "_attachments");
	size_t n = 0;

	if (!all || !json_object_is_type(all, json_type_object))
		return 0;
	json_object_object_foreach(all, name, e) {
		struct json_object *data = jget(e, "data");

		(void)name;
		if (json_object_is_type(data, json_type_string))
			n += (size_t)json_object_get_string_len(data) / 4 * 3;
	}
	return n;
}

/* Base64 text into raw bytes appended to b; false when not base64. */
static bool repl_unbase64(struct repl_buf *b, const char *s, size_t len)
{
	size_t pad = 0, need = len / 4 * 3;
	int n;

	if (len % 4)
		return false;
	while (pad < 2 && len > pad && s[len - 1 - pad] == '=')
		pad++;
	if (!rb_reserve(b, need))
		return true;           /* b->oom tells */
	n = EVP_DecodeBlock((unsigned char *)b->p + b->len,
			    (const unsigned char *)s, (int)len);
	if (n < 0 || (size_t)n < pad)
		return false;
	b->len += (size_t)n - pad;
	b->p[b->len] = '\0';
	return true;
}

/* Append one attachment part: its headers, then its decoded data. */
static bool repl_mp_part(struct repl_buf *b, const char *bnd,
			 const char *name, struct json_object *e)
{
	struct json_object *data = jget(e, "data");
	const char *ct = jstr(e, "content_type");
	size_t at;

	rb_str(b, "\r\n--");
	rb_str(b, bnd);
	rb_str(b, "\r\nContent-Type: ");
	rb_str(b, ct ? ct : "application/octet-stream");
	if (!strpbrk(name, "\"\\\r\n")) {
		rb_str(b, "\r\nContent-Disposition: attachment; filename=\"");
		rb_str(b, name);
		rb_str(b, "\"");
	}
	rb_str(b, "\r\n\r\n");
	at = b->len;
	if (!repl_unbase64(b, json_object_get_string(data),
			   (size_t)json_object_get_string_len(data)))
		return false;
	json_object_object_del(e, "data");
	json_object_object_add(e, "follows", json_object_new_boolean(1));
	json_object_object_add(e, "length",
			       json_object_new_int64((int64_t)(b->len - at)));
	return true;
}

/* The multipart/related body of doc (changed: its data follows) into
 * *out; false when an attachment is not base64. */
static bool repl_mp_body(struct json_object *doc, const char *bnd,
			 struct repl_buf *out)
{
	struct repl_buf parts = { 0 };
	struct json_object *all = jget(doc, "_attachments");
	bool ok = true;

	json_object_object_foreach(all, name, e) {
		if (ok && json_object_is_type(jget(e, "data"),
					      json_type_string))
			ok = repl_mp_part(&parts, bnd, name, e);
	}
	rb_str(out, "--");
	rb_str(out, bnd);
	rb_str(out, "\r\nContent-Type: application/json\r\n\r\n");
	rb_str(out, json_object_to_json_string_ext(doc, REPL_JSON_FLAGS));
	if (parts.p)
		rb_add(out, parts.p, parts.len);
	rb_str(out, "\r\n--");
	rb_str(out, bnd);
	rb_str(out, "--");
	out->oom |= parts.oom;
	free(parts.p);
	return ok;
}

/*
 * PUT target/{id}?new_edits=false of doc with its attachments as parts,
 * as CouchDB's replicator sends documents with attachments: the JSON
 * body stays small. *fallback when the target refuses the form (then
 * doc is untouched: send it inline).
 */
static int repl_put_multipart(struct repl *r, struct json_object *doc,
			      bool *fallback)
{
	struct json_object *copy = NULL;
	struct repl_buf path = { 0 }, body = { 0 };
	struct client_reply rep = { 0 };
	unsigned char rnd[12];
	char bnd[32], hdr[96], err[CLIENT_ERRLEN] = "";
	const char *hdrs[] = { hdr, NULL };
	const char *id = jstr(doc, "_id");
	int rc = 0;

	*fallback = false;
	if (json_object_deep_copy(doc, &copy, NULL) < 0)
		return repl_fail(r, -ENOMEM, "out of memory");
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0x5a, sizeof(rnd));
	repl_hex(rnd, sizeof(rnd), bnd);
	snprintf(hdr, sizeof(hdr),
		 "Content-Type: multipart/related; boundary=\"%s\"", bnd);
	rb_str(&path, "/");
	rb_esc(&path, id ? id : "", true);
	rb_str(&path, "?new_edits=false");
	if (!repl_mp_body(copy, bnd, &body)) {
		repl_doc_failed(r, id, jstr(doc, "_rev"), "bad_request",
				"attachment data is not base64");
		goto out_free;
	}
	if (path.oom || body.oom) {
		rc = repl_fail(r, -ENOMEM, "out of memory");
		goto out_free;
	}
	rc = client_call(r->dst, "PUT", path.p, body.p, body.len, hdrs, 0,
			 &rep, err);
	if (rc < 0) {
		repl_fail(r, rc, "%s", err);
		goto out_free;
	}
	if (rep.status == 200 || rep.status == 201 || rep.status == 202)
		repl_add(r, &r->st.docs_written, 1);
	else if (rep.status == 400 || rep.status == 415)
		*fallback = true;
	else if (rep.status == 401 || rep.status == 403 || rep.status >= 500)
		rc = repl_bad_reply(r, r->dst, "PUT document to", &rep);
	else
		repl_doc_failed(r, id, jstr(doc, "_rev"),
				jstr(rep.json, "error"),
				jstr(rep.json, "reason"));
out_free:
	client_reply_release(&rep);
	free(path.p);
	free(body.p);
	json_object_put(copy);
	return rc;
}

/* Queue for the writer one DOCS item of text, a revision with big
 * attachments it sends as multipart (text taken). */
static int repl_enqueue_multipart(struct repl *r, struct repl_writer *w,
				  char *text, size_t len)
{
	struct repl_item *it = calloc(1, sizeof(*it));
	int rc = repl_writer_flush(r, w);        /* keep the order */

	if (it && rc == 0) {
		it->docs = malloc(sizeof(*it->docs));
		it->lens = malloc(sizeof(*it->lens));
	}
	if (rc == 0 && (!it || !it->docs || !it->lens))
		rc = repl_fail(r, -ENOMEM, "out of memory");
	if (rc < 0) {
		repl_item_free(it);
		free(text);
		return rc;
	}
	it->kind = REPL_ITEM_MULTIPART;
	it->docs[0] = text;
	it->lens[0] = len;
	it->n = 1;
	it->bytes = len;
	w->sent = true;
	return repl_enqueue(r, it);
}

/* Queue a fetched revision (the reader); a revision queued before in
 * the batch is skipped. */
static int repl_writer_add(struct repl *r, struct repl_writer *w,
			   struct json_object *doc)
{
	const char *id = jstr(doc, "_id"), *rev = jstr(doc, "_rev");
	char key[2048];
	const char *text;
	char *copy;
	size_t len;

	snprintf(key, sizeof(key), "%s\n%s", id ? id : "", rev ? rev : "");
	if (json_object_object_get_ex(w->seen, key, NULL))
		return 0;
	json_object_object_add(w->seen, key, NULL);
	r->b_read++;
	text = json_object_to_json_string_length(doc, REPL_JSON_FLAGS, &len);
	if (!text || !(copy = strndup(text, len)))
		return repl_fail(r, -ENOMEM, "out of memory");
	if (!atomic_load(&r->no_multipart) &&
	    repl_inline_bytes(doc) >= REPL_MULTIPART_MIN)
		return repl_enqueue_multipart(r, w, copy, len);
	return repl_writer_take(r, w, copy, len);
}

/* ---- step 6: fetch the missing revisions from the source ---- */

/* One item of a _bulk_get result or of an open_revs array. */
static int repl_fetched(struct repl *r, struct repl_writer *w,
			struct json_object *item, const char *id)
{
	struct json_object *ok = jget(item, "ok"), *e = jget(item, "error");

	if (ok && json_object_is_type(ok, json_type_object))
		return repl_writer_add(r, w, ok);
	if (e)
		repl_doc_failed(r, jstr(e, "id") ? jstr(e, "id") : id,
				jstr(e, "rev"), jstr(e, "error"),
				jstr(e, "reason"));
	else
		repl_doc_failed(r, id, jstr(item, "missing"), "not_found",
				"missing on the source");
	return 0;
}

/*
 * A _bulk_get reply is read as text, not as a tree: each revision's
 * JSON goes to the target as the source wrote it (the target parses
 * it anyway), which spares parsing and printing megabytes here. The
 * scan is shallow — strings, nesting, delimiters — and what it finds
 * malformed is the protocol error it would be as a tree.
 */

static const char *js_ws(const char *s, const char *end)
{
	while (s < end && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
		s++;
	return s;
}

/* Past the string at s ('"'), or NULL. */
static const char *js_string(const char *s, const char *end)
{
	for (s++; s < end; s++) {
		if (*s == '\\')
			s++;
		else if (*s == '"')
			return s + 1;
	}
	return NULL;
}

/* Past the JSON value at s (whitespace first), or NULL. */
static const char *js_value(const char *s, const char *end)
{
	size_t depth = 0;

	do {
		s = js_ws(s, end);
		if (s >= end)
			return NULL;
		if (*s == '"') {
			if (!(s = js_string(s, end)))
				return NULL;
		} else if (*s == '{' || *s == '[') {
			depth++;
			s++;
		} else if (*s == '}' || *s == ']') {
			if (!depth--)
				return NULL;
			s++;
		} else if ((*s == ',' || *s == ':') && depth) {
			s++;
		} else {
			const char *from = s;

			while (s < end && !strchr(",:{}[]\" \t\r\n", *s))
				s++;
			if (s == from)
				return NULL;
		}
	} while (depth);
	return s;
}

/*
 * The next element of the array or member of the object being read at
 * *pos (just past its '[' or '{', or past the previous one): the value
 * [*val, *vend) and, for an object (key non-NULL), the key's text
 * between its quotes. 1 for one, 0 at the end, -1 for bad text.
 */
static int js_next(const char **pos, const char *end, const char **key,
		   size_t *klen, const char **val, const char **vend)
{
	const char *s = js_ws(*pos, end), *k;

	if (s < end && (*s == '}' || *s == ']')) {
		*pos = s + 1;
		return 0;
	}
	if (s < end && *s == ',')
		s = js_ws(s + 1, end);
	if (key) {
		if (s >= end || *s != '"' || !(k = js_string(s, end)))
			return -1;
		*key = s + 1;
		*klen = (size_t)(k - s) - 2;
		s = js_ws(k, end);
		if (s >= end || *s != ':')
			return -1;
		s++;
	}
	*val = js_ws(s, end);
	if (!(*vend = js_value(*val, end)))
		return -1;
	*pos = *vend;
	return 1;
}

static bool js_key(const char *key, size_t klen, const char *want)
{
	return klen == strlen(want) && !memcmp(key, want, klen);
}

/* The member want of the object [s, end) as a span; false if none. */
static bool js_member(const char *s, const char *end, const char *want,
		      const char **val, const char **vend)
{
	const char *key;
	size_t klen;

	s = js_ws(s, end);
	if (s >= end || *s != '{')
		return false;
	s++;
	while (js_next(&s, end, &key, &klen, val, vend) == 1)
		if (js_key(key, klen, want))
			return true;
	return false;
}

/* Queue revision text [s, e) (its JSON as the source wrote it); a
 * revision queued before in the batch is skipped. One with big inline
 * attachments goes the tree's way (multipart). */
static int repl_writer_add_text(struct repl *r, struct repl_writer *w,
				const char *s, const char *e)
{
	const char *id = "", *ide = id, *rev = "", *reve = rev;
	size_t len = (size_t)(e - s);
	struct repl_buf key = { 0 };
	char *copy;
	bool seen;

	if (len >= REPL_MULTIPART_MIN) {
		struct json_object *doc;
		int rc;

		if (!(copy = strndup(s, len)))
			return repl_fail(r, -ENOMEM, "out of memory");
		doc = json_tokener_parse(copy);
		rc = doc ? repl_writer_add(r, w, doc)
			 : repl_fail(r, -EPROTO, "_bulk_get of %s: a bad "
				     "document", r->src_label);

		json_object_put(doc);
		free(copy);
		return rc;
	}
	js_member(s, e, "_id", &id, &ide);
	js_member(s, e, "_rev", &rev, &reve);
	rb_add(&key, id, (size_t)(ide - id));
	rb_add(&key, "\n", 1);
	rb_add(&key, rev, (size_t)(reve - rev));
	if (key.oom) {
		free(key.p);
		return repl_fail(r, -ENOMEM, "out of memory");
	}
	seen = json_object_object_get_ex(w->seen, key.p, NULL);
	if (!seen)
		json_object_object_add(w->seen, key.p, NULL);
	free(key.p);
	if (seen)
		return 0;
	r->b_read++;
	if (!(copy = strndup(s, len)))
		return repl_fail(r, -ENOMEM, "out of memory");
	return repl_writer_take(r, w, copy, len);
}

/* An item of a result's "docs" that is not {"ok": doc}: parsed, for its
 * error. id is the result's "id" as JSON text. */
static int repl_fetched_text(struct repl *r, struct repl_writer *w,
			     const char *s, const char *e, const char *id,
			     const char *ide)
{
	char *text = strndup(s, (size_t)(e - s));
	char *idtext = strndup(id, (size_t)(ide - id));
	struct json_object *item = text ? json_tokener_parse(text) : NULL;
	struct json_object *idj = idtext ? json_tokener_parse(idtext) : NULL;
	int rc = item ? repl_fetched(r, w, item, json_object_get_string(idj))
		      : repl_fail(r, -EPROTO, "_bulk_get of %s: a bad result",
				  r->src_label);

	json_object_put(item);
	json_object_put(idj);
	free(text);
	free(idtext);
	return rc;
}

/* One element of "results": {"id": ..., "docs": [item, ...]}. */
static int repl_bulk_get_result(struct repl *r, struct repl_writer *w,
				const char *s, const char *end)
{
	const char *id = "null", *ide = id + 4, *docs, *de, *v, *ve, *pos;
	int more, rc = 0;

	js_member(s, end, "id", &id, &ide);
	if (!js_member(s, end, "docs", &docs, &de))
		return 0;                       /* nothing for this id */
	if (*docs != '[')
		return -EPROTO;
	pos = docs + 1;
	while (rc == 0 && (more = js_next(&pos, de, NULL, NULL, &v, &ve)) == 1) {
		const char *ok, *oke;

		if (js_member(v, ve, "ok", &ok, &oke) && *ok == '{')
			rc = repl_writer_add_text(r, w, ok, oke);
		else
			rc = repl_fetched_text(r, w, v, ve, id, ide);
	}
	return rc ? rc : more < 0 ? -EPROTO : 0;
}

/* The revisions of a _bulk_get reply's text. */
static int repl_bulk_get_reply(struct repl *r, struct repl_writer *w,
			       const struct client_reply *rep)
{
	const char *end = rep->body + rep->len, *res, *rese, *pos, *v, *ve;
	int more, rc = 0;

	if (!js_member(rep->body, end, "results", &res, &rese) || *res != '[')
		return repl_fail(r, -EPROTO, "POST %s/_bulk_get: not a "
				 "_bulk_get reply", r->src_label);
	pos = res + 1;
	while (rc == 0 && (more = js_next(&pos, rese, NULL, NULL, &v, &ve)) == 1)
		rc = repl_bulk_get_result(r, w, v, ve);
	if (rc == -EPROTO || (rc == 0 && more < 0))
		rc = repl_fail(r, -EPROTO, "POST %s/_bulk_get: a malformed "
			       "reply", r->src_label);
	return rc;
}

/* POST source/_bulk_get for docs; *unsupported when the source has none. */
static int repl_bulk_get(struct repl *r, struct repl_writer *w,
			 struct json_object *docs, bool *unsupported)
{
	struct json_object *req = json_object_new_object();
	struct client_reply rep;
	const char *body = NULL;
	size_t len = 0;
	int rc;

	if (req) {
		json_object_object_add(req, "docs", json_object_get(docs));
		body = json_object_to_json_string_length(req, REPL_JSON_FLAGS,
							 &len);
	}
	if (!body) {
		json_object_put(req);
		return repl_fail(r, -ENOMEM, "out of memory");
	}
	rc = repl_call(r, r->rsrc, "POST",
		       "/_bulk_get?revs=true&attachments=true&latest=true",
		       body, len, CLIENT_NO_PARSE, &rep);
	json_object_put(req);
	if (rc < 0)
		return rc;
	*unsupported = rep.status == 404 || rep.status == 405 ||
		       rep.status == 400;
	if (*unsupported) {
		client_reply_release(&rep);
		return 0;
	}
	if (rep.status != 200) {
		rep.json = json_tokener_parse(rep.body);
		rc = repl_bad_reply(r, r->rsrc, "POST _bulk_get to", &rep);
	} else {
		rc = repl_bulk_get_reply(r, w, &rep);
	}
	client_reply_release(&rep);
	if (rc == 0)            /* to the writer while the next is fetched */
		rc = repl_writer_flush(r, w);
	return rc;
}

/* GET source/{id}?open_revs=[...]: the fallback without _bulk_get. */
static int repl_open_revs(struct repl *r, struct repl_writer *w,
			  const char *id, struct json_object *missing,
			  struct json_object *ancestors)
{
	struct repl_buf b = { 0 };
	struct client_reply rep;
	size_t n;
	int rc;

	rb_str(&b, "/");
	rb_esc(&b, id, true);
	rb_str(&b, "?revs=true&latest=true&attachments=true&open_revs=");
	rb_esc(&b, json_object_to_json_string_ext(missing, REPL_JSON_FLAGS),
	       false);
	if (jis_array(ancestors) && json_object_array_length(ancestors)) {
		rb_str(&b, "&atts_since=");
		rb_esc(&b, json_object_to_json_string_ext(ancestors,
							  REPL_JSON_FLAGS),
		       false);
	}
	if (b.oom) {
		free(b.p);
		return repl_fail(r, -ENOMEM, "out of memory");
	}
	rc = repl_call(r, r->rsrc, "GET", b.p, NULL, 0, 0, &rep);
	free(b.p);
	if (rc < 0)
		return rc;
	if (rep.status == 404) {
		repl_doc_failed(r, id, "", "not_found", "missing on the source");
	} else if (rep.status != 200 || !jis_array(rep.json)) {
		rc = repl_bad_reply(r, r->rsrc, "GET open_revs of", &rep);
	} else {
		n = json_object_array_length(rep.json);
		for (size_t i = 0; rc == 0 && i < n; i++)
			rc = repl_fetched(r, w, json_object_array_get_idx(
						rep.json, i), id);
	}
	client_reply_release(&rep);
	return rc;
}

/* The fallback for every document of a _revs_diff reply. */
static int repl_fetch_open_revs(struct repl *r, struct repl_writer *w,
				struct json_object *diff)
{
	int rc = 0;

	json_object_object_foreach(diff, id, v) {
		struct json_object *missing = jget(v, "missing");

		if (!jis_array(missing) || !json_object_array_length(missing))
			continue;
		rc = repl_open_revs(r, w, id, missing,
				    jget(v, "possible_ancestors"));
		if (rc < 0)
			break;
	}
	return rc;
}

/* The _bulk_get requests of a _revs_diff reply, REPL_FETCH_CHUNK
 * revisions each; *unsupported when the source has no _bulk_get. */
static int repl_fetch_bulk(struct repl *r, struct repl_writer *w,
			   struct json_object *diff, bool *unsupported)
{
	struct json_object *docs = json_object_new_array();
	int rc = 0;

	*unsupported = false;
	json_object_object_foreach(diff, id, v) {
		struct json_object *missing = jget(v, "missing");
		struct json_object *anc = jget(v, "possible_ancestors");
		size_t n = jis_array(missing) ? json_object_array_length(missing)
					      : 0;

		for (size_t i = 0; docs && i < n && rc == 0; i++) {
			struct json_object *d = json_object_new_object();

			json_object_object_add(d, "id", json_object_new_string(id));
			json_object_object_add(d, "rev", json_object_get(
				json_object_array_get_idx(missing, i)));
			if (jis_array(anc) && json_object_array_length(anc))
				json_object_object_add(d, "atts_since",
						       json_object_get(anc));
			json_object_array_add(docs, d);
			if (json_object_array_length(docs) < REPL_FETCH_CHUNK)
				continue;
			rc = repl_bulk_get(r, w, docs, unsupported);
			json_object_put(docs);
			docs = *unsupported ? NULL : json_object_new_array();
		}
		if (rc < 0 || *unsupported || !docs)
			break;
	}
	if (!docs && !*unsupported && rc == 0)
		rc = repl_fail(r, -ENOMEM, "out of memory");
	if (rc == 0 && docs && json_object_array_length(docs))
		rc = repl_bulk_get(r, w, docs, unsupported);
	json_object_put(docs);
	return rc;
}

static int repl_fetch(struct repl *r, struct repl_writer *w,
		      struct json_object *diff)
{
	uint64_t found = 0;
	bool unsupported = false;
	int rc = 0;

	json_object_object_foreach(diff, id, v) {
		struct json_object *missing = jget(v, "missing");

		(void)id;
		if (jis_array(missing))
			found += json_object_array_length(missing);
	}
	r->b_found += found;
	if (!found)
		return 0;
	if (!r->no_bulk_get)
		rc = repl_fetch_bulk(r, w, diff, &unsupported);
	if (rc == 0 && unsupported) {
		/* Nothing of this batch was queued: _bulk_get answers all or
		 * nothing, and its first request was refused. */
		r->no_bulk_get = true;
		rc = w->n || w->sent ? repl_fail(r, -EPROTO, "_bulk_get of %s "
				"stopped working", r->src_label) : 0;
	}
	if (rc == 0 && r->no_bulk_get)
		rc = repl_fetch_open_revs(r, w, diff);
	return rc;
}

/* ---- step 8: make the writes durable ---- */

static int repl_ensure_full_commit(struct repl *r)
{
	struct client_reply rep;
	int rc = repl_call(r, r->dst, "POST", "/_ensure_full_commit", "{}", 2,
			   0, &rep);

	if (rc < 0)
		return rc;
	/* Peers without it (404, 405, 400) commit every write anyway. */
	if (rep.status >= 300 && rep.status != 404 && rep.status != 405 &&
	    rep.status != 400)
		rc = repl_bad_reply(r, r->dst, "POST _ensure_full_commit to",
				    &rep);
	client_reply_release(&rep);
	return rc;
}

/* ---- step 9: checkpoint on both peers ---- */

static void jadd_u64(struct json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_int64((int64_t)v));
}

/* This session's entry of the history, with seq recorded. */
static struct json_object *repl_history_entry(struct repl *r,
					      const char *seq)
{
	struct json_object *e = json_object_new_object();
	struct repl_stats st;
	char now[48];

	if (!e)
		return NULL;
	repl_stats(r, &st);
	repl_http_time(now, sizeof(now));
	json_object_object_add(e, "session_id",
			       json_object_new_string(st.session_id));
	json_object_object_add(e, "start_time",
			       json_object_new_string(r->start_time));
	json_object_object_add(e, "end_time", json_object_new_string(now));
	json_object_object_add(e, "start_last_seq",
			       json_tokener_parse(r->start_seq));
	json_object_object_add(e, "end_last_seq", json_tokener_parse(seq));
	json_object_object_add(e, "recorded_seq", json_tokener_parse(seq));
	jadd_u64(e, "docs_read", st.docs_read);
	jadd_u64(e, "docs_written", st.docs_written);
	jadd_u64(e, "missing_checked", st.missing_checked);
	jadd_u64(e, "missing_found", st.missing_found);
	jadd_u64(e, "doc_write_failures", st.doc_write_failures);
	return e;
}

/* The checkpoint document (without "_rev") recording seq. */
static struct json_object *repl_checkpoint_doc(struct repl *r, const char *seq)
{
	struct json_object *doc = json_object_new_object();
	struct json_object *hist = json_object_new_array();
	size_t n = json_object_array_length(r->history);

	if (!doc || !hist) {
		json_object_put(doc);
		json_object_put(hist);
		return NULL;
	}
	json_object_array_add(hist, repl_history_entry(r, seq));
	for (size_t i = 0; i < n && i + 1 < REPL_HISTORY_MAX; i++)
		json_object_array_add(hist, json_object_get(
				json_object_array_get_idx(r->history, i)));
	json_object_object_add(doc, "_id", json_object_new_string(
				       r->local_path + 1));
	json_object_object_add(doc, "session_id",
			       json_object_new_string(r->st.session_id));
	json_object_object_add(doc, "source_last_seq", json_tokener_parse(seq));
	json_object_object_add(doc, "replication_id_version",
			       json_object_new_int(REPL_ID_VERSION));
	json_object_object_add(doc, "history", hist);
	return doc;
}

/* PUT doc as c's checkpoint, with *rev; a 409 re-reads it and retries
 * once. *rev gets the new revision. */
static int repl_put_checkpoint(struct repl *r, struct client *c,
			       struct json_object *doc, char **rev)
{
	struct client_reply rep = { 0 };
	int rc = 0;

	for (int attempt = 0; attempt < 2; attempt++) {
		if (*rev)
			json_object_object_add(doc, "_rev",
					       json_object_new_string(*rev));
		else
			json_object_object_del(doc, "_rev");
		rc = repl_call_json(r, c, "PUT", r->local_path, doc, &rep);
		if (rc < 0 || rep.status != 409)
			break;
		client_reply_release(&rep);
		{
			struct json_object *cur = NULL;

			rc = repl_read_checkpoint(r, c, &cur, rev);
			json_object_put(cur);
		}
		if (rc < 0)
			return rc;
	}
	if (rc < 0)
		return rc;
	if (rep.status == 200 || rep.status == 201 || rep.status == 202) {
		const char *nrev = jstr(rep.json, "rev");

		free(*rev);
		*rev = nrev ? strdup(nrev) : NULL;
	} else {
		rc = repl_bad_reply(r, c, "PUT checkpoint to", &rep);
	}
	client_reply_release(&rep);
	return rc;
}

/* Record seq (JSON text) as done on both peers. */
static int repl_checkpoint(struct repl *r, const char *seq)
{
	struct json_object *doc = repl_checkpoint_doc(r, seq);
	char *copy = strdup(seq);
	int rc;

	if (!doc || !copy) {
		rc = repl_fail(r, -ENOMEM, "out of memory");
		goto out_free;
	}
	rc = repl_put_checkpoint(r, r->src, doc, &r->src_rev);
	if (rc == 0)
		rc = repl_put_checkpoint(r, r->dst, doc, &r->dst_rev);
	if (rc == 0) {
		free(r->since);
		r->since = copy;
		copy = NULL;
		repl_set_last_seq(r, r->since);
	}
out_free:
	free(copy);
	json_object_put(doc);
	return rc;
}

/* ---- the reader thread: steps 4 to 6, batch after batch ---- */

/* Steps 5-6 for the rows of a batch: the revisions go to the writer. */
static int repl_copy_rows(struct repl *r, struct json_object *rows)
{
	struct repl_writer w = { .queue = true };
	struct client_reply diff;
	int rc = repl_revs_diff(r, rows, &diff);

	if (rc < 0)
		return rc;
	w.seen = json_object_new_object();
	if (!w.seen)
		rc = repl_fail(r, -ENOMEM, "out of memory");
	if (rc == 0)
		rc = repl_fetch(r, &w, diff.json);
	if (rc == 0)
		rc = repl_writer_flush(r, &w);
	repl_writer_release(&w);
	client_reply_release(&diff);
	return rc;
}

/* The end of a batch for the writer: last (JSON text, taken). */
static int repl_enqueue_batch(struct repl *r, char *last, size_t nrows)
{
	struct repl_item *it = calloc(1, sizeof(*it));

	if (!it) {
		free(last);
		return repl_fail(r, -ENOMEM, "out of memory");
	}
	it->kind = REPL_ITEM_BATCH;
	it->last_seq = last;
	it->nrows = nrows;
	it->checked = r->b_checked;
	it->found = r->b_found;
	it->read = r->b_read;
	return repl_enqueue(r, it);
}

/*
 * One batch: read changes after r->rsince (step 4), fetch what the
 * target lacks (5-6) for the writer, then the batch's end. *caught_up
 * tells whether the source had no more.
 */
static int repl_read_batch(struct repl *r, bool longpoll, bool *caught_up)
{
	struct client_reply ch;
	struct json_object *rows, *pending;
	size_t nrows;
	char *last = NULL, *copy = NULL;
	int rc = repl_read_changes(r, longpoll, &ch);

	if (rc < 0)
		return rc;
	rows = jget(ch.json, "results");
	pending = jget(ch.json, "pending");
	nrows = json_object_array_length(rows);
	/* "pending", when the source gives it, says more than a short
	 * batch: a server may cap limit. */
	*caught_up = nrows == 0 ||
		     (pending ? json_object_get_int64(pending) <= 0
			      : nrows < r->o.batch);
	pthread_mutex_lock(&r->lock);
	r->st.pending = pending ? (uint64_t)json_object_get_int64(pending) : 0;
	pthread_mutex_unlock(&r->lock);
	last = repl_seq_text(jget(ch.json, "last_seq"));
	copy = last ? strdup(last) : NULL;
	if (!copy) {
		rc = repl_fail(r, -ENOMEM, "out of memory");
		goto out_release;
	}
	if (nrows && !strcmp(last, r->rsince)) {
		rc = repl_fail(r, -EPROTO, "the changes feed of %s does not "
			       "advance past %s", r->src_label, last);
		goto out_release;
	}
	r->b_checked = r->b_found = r->b_read = 0;
	if (nrows)
		rc = repl_copy_rows(r, rows);
	if (rc == 0) {
		rc = repl_enqueue_batch(r, copy, nrows);
		copy = NULL;
	}
	if (rc == 0) {
		free(r->rsince);
		r->rsince = last;
		last = NULL;
	}
out_release:
	free(copy);
	free(last);
	client_reply_release(&ch);
	return rc;
}

/* Batch after batch until caught up (one-shot) or stopped. */
static int repl_read_loop(struct repl *r)
{
	bool longpoll = false, caught_up;
	int rc;

	for (;;) {
		if (repl_stopping(r))
			return -ECANCELED;
		repl_set_state(r, longpoll ? REPL_WAITING : REPL_RUNNING);
		rc = repl_read_batch(r, longpoll, &caught_up);
		if (rc < 0)
			return rc;
		if (caught_up && !r->o.continuous)
			return 0;
		longpoll = caught_up;
	}
}

static void *repl_reader(void *arg)
{
	struct repl *r = arg;
	int rc = repl_read_loop(r);

	pthread_mutex_lock(&r->qlock);
	r->qdone = true;
	r->qrc = rc;
	pthread_cond_broadcast(&r->qcond);
	pthread_mutex_unlock(&r->qlock);
	return NULL;
}

/* ---- the writer, repl_run()'s thread: steps 7 to 9 ---- */

/*
 * The next item into *out, or NULL when the reader has ended (its
 * result returned). While none is there, w's documents are written:
 * the writer merges what queued up while it was busy into one
 * _bulk_docs, and waits for nothing when the reader is behind.
 */
static int repl_dequeue(struct repl *r, struct repl_writer *w,
			struct repl_item **out)
{
	int rc = 0;

	*out = NULL;
	pthread_mutex_lock(&r->qlock);
	while (rc == 0 && !r->qhead && !r->qdone) {
		if (!w->n) {
			pthread_cond_wait(&r->qcond, &r->qlock);
			continue;
		}
		pthread_mutex_unlock(&r->qlock);
		rc = repl_writer_flush(r, w);
		pthread_mutex_lock(&r->qlock);
	}
	if (rc == 0 && r->qhead) {
		*out = r->qhead;
		r->qhead = (*out)->next;
		if (!r->qhead)
			r->qtail = NULL;
		r->qbytes -= (*out)->bytes;
		pthread_cond_broadcast(&r->qcond);
	} else if (rc == 0) {
		rc = r->qrc;
	}
	pthread_mutex_unlock(&r->qlock);
	return rc;
}

/* A revision the reader left for a multipart PUT (its text). */
static int repl_write_multipart(struct repl *r, struct repl_writer *w,
				struct repl_item *it)
{
	struct json_object *doc = json_tokener_parse(it->docs[0]);
	bool fallback = true;
	int rc = repl_writer_flush(r, w);

	if (rc == 0 && !doc)
		rc = repl_fail(r, -ENOMEM, "out of memory");
	if (rc == 0 && !atomic_load(&r->no_multipart)) {
		rc = repl_put_multipart(r, doc, &fallback);
		w->sent = true;
	}
	json_object_put(doc);
	if (rc < 0 || !fallback)
		return rc;
	atomic_store(&r->no_multipart, true);
	rc = repl_writer_take(r, w, it->docs[0], it->lens[0]);
	it->n = 0;                 /* taken */
	return rc;
}

/* The end of a batch: steps 8 and 9 once its revisions are written. */
static int repl_write_batch_end(struct repl *r, struct repl_writer *w,
				const struct repl_item *it)
{
	int rc = repl_writer_flush(r, w);

	if (rc == 0 && w->sent)
		rc = repl_ensure_full_commit(r);        /* step 8 */
	w->sent = false;
	pthread_mutex_lock(&r->lock);
	r->st.docs_read += it->read;
	r->st.missing_checked += it->checked;
	r->st.missing_found += it->found;
	pthread_mutex_unlock(&r->lock);
	if (rc == 0 && strcmp(it->last_seq, r->since))
		rc = repl_checkpoint(r, it->last_seq);  /* step 9 */
	if (rc < 0 || !it->nrows)
		return rc;
	repl_add(r, &r->st.batches, 1);
	repl_progress(r);
	if (r->o.max_batches && r->st.batches >= r->o.max_batches)
		return -ECANCELED;
	/* repl_stop(): the batches the reader read ahead are dropped */
	return atomic_load(&r->stop) > 0 ? -ECANCELED : 0;
}

static int repl_write_item(struct repl *r, struct repl_writer *w,
			   struct repl_item *it)
{
	int rc = 0;

	switch (it->kind) {
	case REPL_ITEM_DOCS:
		for (size_t i = 0; rc == 0 && i < it->n; i++) {
			rc = repl_writer_take(r, w, it->docs[i], it->lens[i]);
			it->docs[i] = NULL;
		}
		return rc;
	case REPL_ITEM_MULTIPART:
		return repl_write_multipart(r, w, it);
	case REPL_ITEM_BATCH:
		return repl_write_batch_end(r, w, it);
	}
	return repl_fail(r, -EPROTO, "bad queue item");
}

/* The writer's loop: the reader's items in order, until it ends. */
static int repl_write_loop(struct repl *r)
{
	struct repl_writer w = { 0 };
	struct repl_item *it;
	int rc;

	while ((rc = repl_dequeue(r, &w, &it)) == 0 && it) {
		rc = repl_write_item(r, &w, it);
		repl_item_free(it);
		if (rc < 0)
			break;
	}
	repl_writer_release(&w);
	return rc;
}

/*
 * Steps 4-9: the reader thread reads and fetches batches (4-6) while
 * this thread writes and checkpoints them (7-9), in order. When the
 * writer ends first (an error, max_batches), the reader is cut short
 * (its transfer canceled) and what it read is dropped; its message does
 * not replace the writer's.
 */
static int repl_pipeline(struct repl *r)
{
	char saved[REPL_ERRLEN];
	pthread_t th;
	int rc;

	free(r->rsince);
	if (!(r->rsince = strdup(r->since)))
		return repl_fail(r, -ENOMEM, "out of memory");
	r->qhead = r->qtail = NULL;
	r->qbytes = 0;
	r->qdone = r->qquit = false;
	r->qrc = 0;
	if ((rc = pthread_create(&th, NULL, repl_reader, r)))
		return repl_fail(r, -rc, "cannot start a thread: %s",
				 strerror(rc));
	rc = repl_write_loop(r);
	pthread_mutex_lock(&r->lock);
	memcpy(saved, r->st.error, sizeof(saved));
	pthread_mutex_unlock(&r->lock);
	pthread_mutex_lock(&r->qlock);
	r->qquit = true;
	pthread_cond_broadcast(&r->qcond);
	pthread_mutex_unlock(&r->qlock);
	atomic_store(&r->rstop, 2);
	pthread_join(th, NULL);
	pthread_mutex_lock(&r->lock);
	memcpy(r->st.error, saved, sizeof(saved));
	pthread_mutex_unlock(&r->lock);
	while (r->qhead) {
		struct repl_item *it = r->qhead;

		r->qhead = it->next;
		repl_item_free(it);
	}
	r->qtail = NULL;
	return rc;
}

/* A new session: counters reset, a random session id. */
static int repl_begin_session(struct repl *r)
{
	unsigned char rnd[16];

	repl_reset_run(r);
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -errno;
	pthread_mutex_lock(&r->lock);
	memset(&r->st, 0, sizeof(r->st));
	memcpy(r->st.rep_id, r->id, sizeof(r->id));
	repl_hex(rnd, sizeof(rnd), r->st.session_id);
	r->st.state = REPL_STARTING;
	pthread_mutex_unlock(&r->lock);
	repl_http_time(r->start_time, sizeof(r->start_time));
	return 0;
}

int repl_run(struct repl *r)
{
	int rc = repl_begin_session(r);

	if (rc < 0) {
		repl_fail(r, rc, "session id: %s", barrel_strerror(rc));
		goto out;
	}
	rc = repl_verify(r);                   /* step 1 (2: repl_new) */
	if (rc == 0)
		rc = repl_find_start(r);       /* step 3 */
	if (rc == 0)
		rc = repl_pipeline(r);         /* steps 4-9 */
	if (rc == -ECANCELED) {
		pthread_mutex_lock(&r->lock);
		if (!strcmp(r->st.error, "") || strstr(r->st.error, "canceled"))
			snprintf(r->st.error, sizeof(r->st.error), "stopped");
		pthread_mutex_unlock(&r->lock);
	}
out:
	repl_set_state(r, rc == 0 ? REPL_DONE : rc == -ECANCELED
			  ? REPL_STOPPED : REPL_FAILED);
	repl_progress(r);
	atomic_store(&r->stop, 0);
	atomic_store(&r->rstop, 0);
	return rc;
}
