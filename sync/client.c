/*
 * One database over HTTP with libcurl (client.h): endpoint specs, one
 * kept-alive CURL handle, JSON bodies, retries with backoff, passwords
 * kept out of every message.
 */
#include "config.h"

#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <zlib.h>

#include "engine/error.h"
#include "sync/client.h"
#include "sync/url.h"

#define CLIENT_MAX_REPLY (1ull << 30)   /* bytes of a reply body */
#define CLIENT_CANCEL_POLL_MS 50u
#define CLIENT_GZIP_MIN 1024u           /* smaller request bodies go plain */

struct client {
	CURL *curl;
	struct client_opts o;
	char *base;            /* URL of the database, without credentials */
	char *display;         /* client_url() */
	char *db;              /* decoded database name */
	char *sock;            /* UNIX socket path, or NULL */
	char *user, *pass;     /* decoded credentials, or NULL */
	bool gzip_requests;    /* compress JSON request bodies */
	char curl_err[CURL_ERROR_SIZE];
};

/* What a transfer in progress checks (the xferinfo callback). */
struct client_xfer {
	const struct client *c;
	unsigned flags;
	curl_off_t moved;          /* bytes up + down at the last change */
	uint64_t moved_at_ms;      /* when they last changed */
	bool canceled, idle;       /* why the callback aborted */
};

struct client_buf {
	char *p;
	size_t len, cap;
};

static pthread_once_t client_once = PTHREAD_ONCE_INIT;

static void client_global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static uint64_t client_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void client_opts_init(struct client_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->retries = 8;
	o->backoff_ms = 250;
	o->backoff_max_ms = 10000;
	o->connect_ms = 10000;
	o->idle_ms = 60000;
}

/* ---- specs ---- */

/* a, b and c (each may be "") joined, malloc'ed. */
static char *client_cat(const char *a, const char *b, const char *c)
{
	size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
	char *out = malloc(la + lb + lc + 1);

	if (!out)
		return NULL;
	memcpy(out, a, la);
	memcpy(out + la, b, lb);
	memcpy(out + la + lb, c, lc + 1);
	return out;
}

/* s[0..len), a part of the spec that what names, percent-decoded into
 * *out; a bad escape is BARREL_E_INVALID, explained in err. */
static int client_unescape(const char *what, const char *s, size_t len,
			   char **out, char *err)
{
	int rc = url_unescape(s, len, false, out);

	if (rc == BARREL_E_INVALID)
		snprintf(err, CLIENT_ERRLEN, "%s: invalid percent-encoding "
			 "(a %% is written %%25)", what);
	return rc;
}

/* "unix:/path/api.sock:/db" */
static int client_parse_unix(struct client *c, const char *spec, char *err)
{
	const char *rest = spec + 5, *colon = strrchr(rest, ':');
	char *enc;
	int rc;

	if (!colon || colon == rest || colon[1] != '/' || !colon[2]) {
		snprintf(err, CLIENT_ERRLEN,
			 "%s: expected unix:/path/to/socket:/db", spec);
		return BARREL_E_INVALID;
	}
	c->sock = strndup(rest, (size_t)(colon - rest));
	if (!c->sock)
		return -ENOMEM;
	if ((rc = client_unescape(spec, colon + 2, strlen(colon + 2), &c->db,
				  err)))
		return rc;
	enc = url_escape(c->db, false);
	if (!enc)
		return -ENOMEM;
	c->base = client_cat("http://localhost/", enc, "");
	c->display = client_cat("unix:", c->sock, "");
	if (c->display) {
		char *d = client_cat(c->display, ":/", c->db);

		free(c->display);
		c->display = d;
	}
	free(enc);
	return c->base && c->display ? 0 : -ENOMEM;
}

/* Split "user:pass@" off the authority [auth, at) into c->user/pass
 * (err never shows them). */
static int client_parse_userinfo(struct client *c, const char *auth,
				 const char *at, char *err)
{
	const char *colon = memchr(auth, ':', (size_t)(at - auth));
	int rc;

	if (!colon)
		colon = at;
	if ((rc = client_unescape("URL credentials", auth,
				  (size_t)(colon - auth), &c->user, err)))
		return rc;
	if (colon == at)
		return (c->pass = strdup("")) ? 0 : -ENOMEM;
	return client_unescape("URL credentials", colon + 1,
			       (size_t)(at - colon - 1), &c->pass, err);
}

/* "http(s)://[user:pass@]host[:port][/prefix]/db" */
static int client_parse_url(struct client *c, const char *spec, char *err)
{
	const char *auth = strstr(spec, "://") + 3;
	const char *path = strchr(auth, '/'), *at, *dbseg, *host;
	size_t plen, hlen, scheme = (size_t)(auth - spec);
	int rc;

	if (!path)
		path = auth + strlen(auth);
	at = memchr(auth, '@', (size_t)(path - auth));
	if (at && (rc = client_parse_userinfo(c, auth, at, err)) < 0)
		return rc;
	plen = strlen(path);
	while (plen > 0 && path[plen - 1] == '/')
		plen--;
	dbseg = path + plen;
	while (dbseg > path && dbseg[-1] != '/')
		dbseg--;
	if (dbseg == path + plen || (at ? at + 1 : auth) == path) {
		/* no database, or no host */
		snprintf(err, CLIENT_ERRLEN,
			 "%s%s: expected http(s)://host[:port]/db",
			 at ? "URL" : spec, at ? " with credentials" : "");
		return BARREL_E_INVALID;
	}
	host = at ? at + 1 : auth;
	hlen = (size_t)(path - host) + plen;       /* host, port, path */
	if ((rc = client_unescape(at ? "URL" : spec, dbseg,
				  (size_t)(path + plen - dbseg), &c->db, err)))
		return rc;
	c->base = malloc(scheme + hlen + 1);
	if (!c->base)
		return -ENOMEM;
	memcpy(c->base, spec, scheme);
	memcpy(c->base + scheme, host, hlen);
	c->base[scheme + hlen] = '\0';
	c->display = strdup(c->base);
	return c->display ? 0 : -ENOMEM;
}

int client_new(const char *spec, const struct client_opts *o,
	       struct client **out, char *err)
{
	struct client *c = calloc(1, sizeof(*c));
	int rc;

	*out = NULL;
	if (!c)
		return -ENOMEM;
	if (o)
		c->o = *o;
	else
		client_opts_init(&c->o);
	if (!strncmp(spec, "unix:", 5)) {
		rc = client_parse_unix(c, spec, err);
	} else if (!strncmp(spec, "http://", 7) ||
		   !strncmp(spec, "https://", 8)) {
		rc = client_parse_url(c, spec, err);
	} else {
		snprintf(err, CLIENT_ERRLEN, "not an endpoint (http(s)://host"
			 ":port/db or unix:/path/to/socket:/db)");
		rc = BARREL_E_INVALID;
	}
	if (rc < 0)
		goto out_free;
	pthread_once(&client_once, client_global_init);
	c->curl = curl_easy_init();
	if (!c->curl) {
		rc = -ENOMEM;
		goto out_free;
	}
	*out = c;
	return 0;

out_free:
	if (rc == -ENOMEM)
		snprintf(err, CLIENT_ERRLEN, "out of memory");
	client_free(c);
	return rc;
}

void client_free(struct client *c)
{
	if (!c)
		return;
	if (c->curl)
		curl_easy_cleanup(c->curl);
	free(c->base);
	free(c->display);
	free(c->db);
	free(c->sock);
	free(c->user);
	free(c->pass);
	free(c);
}

const char *client_url(const struct client *c)
{
	return c->display;
}

const char *client_db(const struct client *c)
{
	return c->db;
}

void client_reply_release(struct client_reply *r)
{
	if (r->json)
		json_object_put(r->json);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

/* ---- waiting ---- */

static bool client_canceled(const struct client_opts *o, int level)
{
	return o->cancel && atomic_load(o->cancel) >= level;
}

int client_sleep(const struct client_opts *o, unsigned ms)
{
	uint64_t end = client_now_ms() + ms;

	for (;;) {
		uint64_t now = client_now_ms();
		unsigned step;
		struct timespec ts;

		if (client_canceled(o, 1))
			return -ECANCELED;
		if (now >= end)
			return 0;
		step = (unsigned)(end - now);
		if (step > CLIENT_CANCEL_POLL_MS)
			step = CLIENT_CANCEL_POLL_MS;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)step * 1000000L;
		nanosleep(&ts, NULL);
	}
}

/* Replace every occurrence of the password in msg by "***". */
static void client_redact(const struct client *c, char *msg, size_t size)
{
	size_t plen = c->pass ? strlen(c->pass) : 0;
	char *p, *from = msg;

	if (plen < 1)
		return;
	while ((p = strstr(from, c->pass))) {
		size_t tail = strlen(p + plen);

		if ((size_t)(p - msg) + 3 + tail >= size)
			break;
		memmove(p + 3, p + plen, tail + 1);
		memcpy(p, "***", 3);
		from = p + 3;
	}
}

/* ---- transfers ---- */

static size_t client_collect(char *ptr, size_t size, size_t n, void *arg)
{
	struct client_buf *b = arg;
	size_t add = size * n;

	if (b->len + add + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;

		while (cap < b->len + add + 1)
			cap *= 2;
		if (cap > CLIENT_MAX_REPLY)
			return 0;
		p = realloc(b->p, cap);
		if (!p)
			return 0;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, ptr, add);
	b->len += add;
	b->p[b->len] = '\0';
	return add;
}

static int client_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
			   curl_off_t ultotal, curl_off_t ulnow)
{
	struct client_xfer *x = arg;
	uint64_t now = client_now_ms();

	(void)dltotal;
	(void)ultotal;
	if (client_canceled(&x->c->o, x->flags & CLIENT_IDLE ? 1 : 2)) {
		x->canceled = true;
		return 1;
	}
	if (dlnow + ulnow != x->moved) {
		x->moved = dlnow + ulnow;
		x->moved_at_ms = now;
	} else if (x->c->o.idle_ms && now - x->moved_at_ms > x->c->o.idle_ms) {
		x->idle = true;
		return 1;
	}
	return 0;
}

/* Does extra name a Content-Type? Then the body is not ours (JSON). */
static bool client_own_type(const char *const *extra)
{
	for (size_t i = 0; extra && extra[i]; i++)
		if (!strncasecmp(extra[i], "Content-Type:", 13))
			return true;
	return false;
}

static struct curl_slist *client_headers(const char *body, bool gzipped,
					 const char *const *extra)
{
	struct curl_slist *h = NULL, *t;
	bool ctype = client_own_type(extra);

	h = curl_slist_append(h, "Accept: application/json");
	if (h && body && !ctype && (t = curl_slist_append(h,
				"Content-Type: application/json")))
		h = t;
	if (h && gzipped && (t = curl_slist_append(h,
				"Content-Encoding: gzip")))
		h = t;
	for (size_t i = 0; h && extra && extra[i]; i++)
		if ((t = curl_slist_append(h, extra[i])))
			h = t;
	if (h && (t = curl_slist_append(h, "Expect:")))
		h = t;
	return h;
}

/* Set up c->curl for one attempt. */
static void client_setup(struct client *c, const char *method,
			 const char *url, const char *body, size_t len,
			 struct curl_slist *h, struct client_buf *b,
			 struct client_xfer *x)
{
	CURL *e = c->curl;

	curl_easy_reset(e);
	curl_easy_setopt(e, CURLOPT_URL, url);
	if (c->sock)
		curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, c->sock);
	if (c->user) {
		curl_easy_setopt(e, CURLOPT_USERNAME, c->user);
		curl_easy_setopt(e, CURLOPT_PASSWORD, c->pass);
	}
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->curl_err);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->o.connect_ms);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	/* every encoding libcurl decodes: a peer may gzip its replies */
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	if (!strcmp(method, "HEAD"))
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	if (body || !strcmp(method, "PUT") || !strcmp(method, "POST")) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)(body ? len : 0));
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, client_collect);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, client_progress);
	curl_easy_setopt(e, CURLOPT_XFERINFODATA, x);
}

static int client_curl_rc(CURLcode cc, const struct client_xfer *x)
{
	if (x->canceled)
		return -ECANCELED;
	if (x->idle)
		return -ETIMEDOUT;
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return -ECONNRESET;
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EPROTO;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

static bool client_retryable(int rc)
{
	return rc == -ECONNREFUSED || rc == -EHOSTUNREACH ||
	       rc == -ETIMEDOUT || rc == -ECONNRESET;
}

/* One attempt: 0 with rep filled, or an error with err set. */
static int client_attempt(struct client *c, const char *method,
			  const char *url, const char *body, size_t len,
			  struct curl_slist *h, unsigned flags,
			  struct client_reply *rep, char *err)
{
	struct client_buf b = { 0 };
	struct client_xfer x = { .c = c, .flags = flags,
				 .moved_at_ms = client_now_ms() };
	CURLcode cc;
	int rc;

	c->curl_err[0] = '\0';
	client_setup(c, method, url, body, len, h, &b, &x);
	cc = curl_easy_perform(c->curl);
	if (cc != CURLE_OK) {
		rc = client_curl_rc(cc, &x);
		snprintf(err, CLIENT_ERRLEN, "%s %s: %s", method, c->display,
			 x.canceled ? "canceled" : x.idle ? "no data moved "
			 "within the timeout" : c->curl_err[0] ? c->curl_err
			 : curl_easy_strerror(cc));
		client_redact(c, err, CLIENT_ERRLEN);
		free(b.p);
		return rc;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &rep->status);
	rep->body = b.p ? b.p : strdup("");
	rep->len = b.len;
	if (!rep->body)
		return -ENOMEM;
	if (rep->len && !(flags & CLIENT_NO_PARSE))
		rep->json = json_tokener_parse(rep->body);
	return 0;
}

/* body[0..len) gzipped into *out (malloc'ed); false when it would not
 * be smaller or memory is short: then it goes plain. */
static bool client_gzip(const char *body, size_t len, char **out,
			size_t *olen)
{
	z_stream z = { 0 };
	size_t cap = deflateBound(&z, (uLong)len) + 32;
	unsigned char *p;
	int zr;

	if (len > UINT32_MAX || !(p = malloc(cap)))
		return false;
	/* level 1: speed first; 15 + 16: gzip's header and trailer */
	if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8,
			 Z_DEFAULT_STRATEGY) != Z_OK) {
		free(p);
		return false;
	}
	z.next_in = (unsigned char *)body;
	z.avail_in = (uInt)len;
	z.next_out = p;
	z.avail_out = (uInt)cap;
	zr = deflate(&z, Z_FINISH);
	*olen = cap - z.avail_out;
	deflateEnd(&z);
	if (zr != Z_STREAM_END || *olen >= len) {
		free(p);
		return false;
	}
	*out = (char *)p;
	return true;
}

int client_call(struct client *c, const char *method, const char *path,
		const char *body, size_t len, const char *const *headers,
		unsigned flags, struct client_reply *rep, char *err)
{
	unsigned delay = c->o.backoff_ms, attempts = 0;
	char *gz = NULL;
	bool gzipped = c->gzip_requests && body && len >= CLIENT_GZIP_MIN &&
		       !client_own_type(headers) &&
		       client_gzip(body, len, &gz, &len);
	struct curl_slist *h = client_headers(body, gzipped, headers);
	char *url = client_cat(c->base, path, "");
	int rc;

	memset(rep, 0, sizeof(*rep));
	if (gzipped)
		body = gz;
	if (!h || !url) {
		rc = -ENOMEM;
		goto out_free;
	}
	for (;;) {
		rc = client_attempt(c, method, url, body, len, h, flags, rep,
				    err);
		attempts++;
		if (rc == 0 && rep->status < 500)
			break;
		if (rc < 0 && !client_retryable(rc))
			break;
		if (attempts > c->o.retries || flags & CLIENT_NO_RETRY)
			break;
		if (rc == 0)
			client_reply_release(rep);
		if (client_sleep(&c->o, delay) < 0) {
			snprintf(err, CLIENT_ERRLEN, "%s %s: canceled", method,
				 c->display);
			rc = -ECANCELED;
			break;
		}
		delay = delay * 2 > c->o.backoff_max_ms ? c->o.backoff_max_ms
							: delay * 2;
	}
	if (rc < 0 && client_retryable(rc) && attempts > 1) {
		size_t n = strlen(err);

		snprintf(err + n, CLIENT_ERRLEN - n, " (after %u attempts)",
			 attempts);
	}
out_free:
	if (rc == -ENOMEM)
		snprintf(err, CLIENT_ERRLEN, "out of memory");
	curl_slist_free_all(h);
	free(url);
	free(gz);
	return rc;
}

int client_json(struct client *c, const char *method, const char *path,
		struct json_object *j, struct client_reply *rep, char *err)
{
	const char *body = NULL;
	size_t len = 0;

	if (j)
		body = json_object_to_json_string_length(
			j, JSON_C_TO_STRING_PLAIN, &len);
	if (j && !body) {
		memset(rep, 0, sizeof(*rep));
		snprintf(err, CLIENT_ERRLEN, "out of memory");
		return -ENOMEM;
	}
	return client_call(c, method, path, body, len, NULL, 0, rep, err);
}

void client_gzip_requests(struct client *c, bool on)
{
	c->gzip_requests = on;
}

int client_server(struct client *c, struct client_reply *rep, char *err)
{
	char *slash = strrchr(c->base, '/');
	char *saved = c->base, *root;
	int rc;

	memset(rep, 0, sizeof(*rep));
	if (!slash || !(root = strndup(c->base, (size_t)(slash - c->base) + 1))) {
		snprintf(err, CLIENT_ERRLEN, "out of memory");
		return -ENOMEM;
	}
	c->base = root;
	rc = client_call(c, "GET", "", NULL, 0, NULL, CLIENT_NO_RETRY, rep,
			 err);
	c->base = saved;
	free(root);
	return rc;
}
