/*
 * The HTTP server of the replication API (http.h) on libmicrohttpd.
 *
 * Two daemons at most, one per listener (UNIX socket, TCP), each with a
 * thread per connection, so that a feed blocks only its connection. We
 * make the listening sockets ourselves and hand them over
 * (MHD_OPTION_LISTEN_SOCKET), which gives one code path for UNIX, IPv4
 * and IPv6 and lets getsockname() report the port bound.
 *
 * A request goes through these steps (access_cb):
 *  1. first call (headers read): authenticate (TCP with a password
 *     file), refuse a Content-Length over SRV_MAX_BODY, decode the path
 *     and query;
 *  2. next calls: append the body (413 once it passes SRV_MAX_BODY);
 *  3. last call: inflate a body sent with Content-Encoding gzip (400
 *     when it is not gzip, 413 past SRV_MAX_BODY inflated), then
 *     api_dispatch(), which replies once through hreq_reply*().
 *
 * Replies of text, JSON or multipart are gzipped when the request's
 * Accept-Encoding allows it and they are at least SRV_GZIP_MIN bytes
 * (streams of unknown size always), with Content-Encoding: gzip; every
 * such reply says Vary: Accept-Encoding. Streams are deflated as they
 * come, each piece flushed, so a feed is never held back.
 *
 * MHD's own unescaping is replaced by a callback that leaves text as it
 * is, so "%2F" inside a segment survives; we split the path on '/' and
 * decode each segment and query value ourselves.
 *
 * Threads: srv fields are set before the daemons start and read-only
 * after, except stopping (atomic) and the password cache (pw_lock).
 */
#include "config.h"

#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "engine/error.h"
#include "sync/api.h"
#include "sync/catalog.h"
#include "sync/http.h"
#include "sync/url.h"

#define SRV_DEFAULT_NAME "barrelfs"
#define SRV_STREAM_BLOCK (32u << 10)
#define SRV_MAX_PASSWD (1u << 20)     /* bytes of a password file */
#define SRV_MAX_TLS_FILE (1u << 20)
#define SRV_GZIP_MIN 1024u            /* smaller replies go plain */
#define SRV_GZIP_LEVEL 1              /* deflate level: speed first */

/* One listening daemon; the cls of its callbacks. */
struct listener {
	struct srv *srv;
	struct MHD_Daemon *daemon;
	bool tcp;                 /* TCP: authenticated when srv->passwd */
};

struct srv {
	const struct catalog *cat;
	struct listener unix_l, tcp_l;
	char *unix_path;          /* the socket file we made, removed at stop */
	uint16_t port;
	char url[INET6_ADDRSTRLEN + 32];
	bool has_url;
	char *server_name;
	char *tls_cert, *tls_key; /* PEM text; MHD borrows it */
	atomic_bool stopping;

	char *passwd;             /* the password file's path, or NULL */
	pthread_mutex_t pw_lock;
	char *pw_text;            /* its contents; protected by pw_lock */
	struct timespec pw_mtime; /* protected by pw_lock */
	off_t pw_size;            /* protected by pw_lock */
};

struct harg {
	char *name, *value;
};

struct hhdr {
	char *name, *value;
};

/* A request's state, the con_cls of its connection's callbacks. */
struct hctx {
	struct hreq r;            /* handed to the API */
	struct MHD_Connection *conn;
	struct listener *l;
	bool started;             /* step 1 done */
	bool replied;             /* a reply was claimed */
	bool queued;              /* ... and handed to MHD */
	bool too_large;
	bool bad_arg;             /* a query argument failed to decode */
	bool gzip_ok;             /* Accept-Encoding allows gzip */
	char *body;
	size_t len, cap;
	struct harg *args;
	size_t nargs;
	struct hhdr *hdrs;        /* reply headers added by the handler */
	size_t nhdrs;
	char *user;
};

static struct hctx *hctx_of(struct hreq *r)
{
	return (struct hctx *)((char *)r - offsetof(struct hctx, r));
}

/* ---- small helpers ---- */

/* Read a whole small file into a NUL-terminated *out. */
static int read_file(const char *path, size_t max, char **out, struct stat *st)
{
	char *buf = NULL;
	ssize_t n;
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, st) < 0) {
		rc = -errno;
		goto out_close;
	}
	if ((size_t)st->st_size > max) {
		rc = BARREL_E_TOOBIG;
		goto out_close;
	}
	if (!(buf = malloc((size_t)st->st_size + 1))) {
		rc = -ENOMEM;
		goto out_close;
	}
	while (len < (size_t)st->st_size &&
	       (n = read(fd, buf + len, (size_t)st->st_size - len)) > 0)
		len += (size_t)n;
	buf[len] = '\0';
	*out = buf;
out_close:
	close(fd);
	return rc;
}

/* ---- gzip (Content-Encoding) ---- */

/* Does an Accept-Encoding value allow gzip ("gzip" or "*", q > 0)? */
static bool gzip_accepted(const char *ae)
{
	while (ae && *ae) {
		size_t n = strcspn(ae, ",");
		const char *semi = memchr(ae, ';', n), *q;
		size_t tok = semi ? (size_t)(semi - ae) : n;
		bool zero = false;

		while (tok && (*ae == ' ' || *ae == '\t'))
			ae++, tok--, n--;
		while (tok && (ae[tok - 1] == ' ' || ae[tok - 1] == '\t'))
			tok--;
		if (semi && (q = strstr(semi, "q=")) && q < ae + n)
			zero = strtod(q + 2, NULL) <= 0.0;
		if (!zero && ((tok == 4 && !strncasecmp(ae, "gzip", 4)) ||
			      (tok == 6 && !strncasecmp(ae, "x-gzip", 6)) ||
			      (tok == 1 && *ae == '*')))
			return true;
		ae += n;
		if (*ae == ',')
			ae++;
	}
	return false;
}

/* Is a reply of type ctype worth compressing (text, JSON, multipart)? */
static bool gzip_type(const char *ctype)
{
	static const char *const types[] = {
		"application/json", "text/", "multipart/",
		"application/javascript", "application/xml",
	};

	for (size_t i = 0; ctype && i < sizeof(types) / sizeof(types[0]); i++)
		if (!strncasecmp(ctype, types[i], strlen(types[i])))
			return true;
	return false;
}

/* Has the handler added reply header name? */
static bool has_reply_header(const struct hctx *c, const char *name)
{
	for (size_t i = 0; i < c->nhdrs; i++)
		if (!strcasecmp(c->hdrs[i].name, name))
			return true;
	return false;
}

/* Is a reply of this status and type to be gzipped (when big enough)?
 * Adds "Vary: Accept-Encoding" to every reply that could be. */
static bool gzip_want(struct hctx *c, int status, const char *ctype)
{
	if (!gzip_type(ctype) || status < 200 || status == 204 ||
	    status == 206 || status == 304 ||
	    has_reply_header(c, "Content-Range") ||
	    has_reply_header(c, "Content-Encoding"))
		return false;
	if (hreq_header_add(&c->r, "Vary", "Accept-Encoding"))
		return false;
	return c->gzip_ok;
}

static int gzip_init(z_stream *z)
{
	memset(z, 0, sizeof(*z));
	/* 15 + 16: a gzip header and trailer around the deflate stream */
	return deflateInit2(z, SRV_GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8,
			    Z_DEFAULT_STRATEGY) == Z_OK ? 0 : -ENOMEM;
}

/* Deflate len bytes of in (flush: Z_SYNC_FLUSH or Z_FINISH) onto the
 * end of *out (*len bytes used of *cap, grown by realloc). */
static int gzip_deflate(z_stream *z, const void *in, size_t len, int flush,
			unsigned char **out, size_t *olen, size_t *cap)
{
	int zr;

	z->next_in = (unsigned char *)in;
	z->avail_in = (uInt)len;
	do {
		if (*cap - *olen < 64) {
			size_t ncap = *cap ? *cap * 2 : 4096;
			unsigned char *p = realloc(*out, ncap);

			if (!p)
				return -ENOMEM;
			*out = p;
			*cap = ncap;
		}
		z->next_out = *out + *olen;
		z->avail_out = (uInt)(*cap - *olen);
		zr = deflate(z, flush);
		*olen = *cap - z->avail_out;
		if (zr == Z_STREAM_ERROR)
			return -EIO;
	} while (z->avail_out == 0 || z->avail_in ||
		 (flush == Z_FINISH && zr != Z_STREAM_END));
	return 0;
}

/* buf[0..len) gzipped into *out (malloc'ed); 1 when not smaller. */
static int gzip_buf(const char *buf, size_t len, char **out, size_t *olen)
{
	unsigned char *p = NULL;
	size_t n = 0, cap = len / 3 + 256;
	z_stream z;
	int rc;

	if (len > UINT32_MAX || (rc = gzip_init(&z)))
		return len > UINT32_MAX ? 1 : rc;
	if (!(p = malloc(cap))) {
		deflateEnd(&z);
		return -ENOMEM;
	}
	rc = gzip_deflate(&z, buf, len, Z_FINISH, &p, &n, &cap);
	deflateEnd(&z);
	if (!rc && n >= len)
		rc = 1;
	if (rc) {
		free(p);
		return rc;
	}
	*out = (char *)p;
	*olen = n;
	return 0;
}

/*
 * The request body, sent with Content-Encoding gzip (or deflate), inflated
 * in place of c->body. BARREL_E_INVALID for a bad stream, BARREL_E_TOOBIG
 * past SRV_MAX_BODY, -EOPNOTSUPP for another encoding.
 */
static int gunzip_body(struct hctx *c)
{
	const char *ce = hreq_header(&c->r, "Content-Encoding");
	unsigned char *out = NULL;
	size_t n = 0, cap = 0;
	z_stream z = { 0 };
	int zr = Z_OK, rc = 0;

	if (!ce || !strcasecmp(ce, "identity"))
		return 0;
	if (strcasecmp(ce, "gzip") && strcasecmp(ce, "x-gzip") &&
	    strcasecmp(ce, "deflate"))
		return -EOPNOTSUPP;
	/* 15 + 32: a gzip or zlib header, detected */
	if (inflateInit2(&z, 15 + 32) != Z_OK)
		return -ENOMEM;
	z.next_in = (unsigned char *)c->body;
	z.avail_in = (uInt)c->len;
	while (!rc && zr != Z_STREAM_END) {
		if (n == cap) {          /* full: grow, up to SRV_MAX_BODY + 1 */
			size_t ncap = cap ? cap * 2 : c->len * 4 + 4096;
			unsigned char *p;

			if (ncap > SRV_MAX_BODY + 1u)
				ncap = SRV_MAX_BODY + 1u;
			if (cap == ncap) {
				rc = BARREL_E_TOOBIG;
				break;
			}
			if (!(p = realloc(out, ncap + 1))) {
				rc = -ENOMEM;
				break;
			}
			out = p;
			cap = ncap;
		}
		z.next_out = out + n;
		z.avail_out = (uInt)(cap - n);
		zr = inflate(&z, Z_NO_FLUSH);
		n = cap - z.avail_out;
		if (zr == Z_NEED_DICT || zr == Z_DATA_ERROR ||
		    (zr == Z_BUF_ERROR && z.avail_out) ||
		    (zr == Z_STREAM_END && z.avail_in))
			rc = BARREL_E_INVALID;
		else if (zr == Z_MEM_ERROR)
			rc = -ENOMEM;
	}
	inflateEnd(&z);
	if (!rc && n > SRV_MAX_BODY)
		rc = BARREL_E_TOOBIG;
	if (rc) {
		free(out);
		return rc;
	}
	out[n] = '\0';
	free(c->body);
	c->body = (char *)out;
	c->len = n;
	c->cap = cap + 1;
	return 0;
}

/* ---- replies ---- */

static int add_std_headers(struct hctx *c, struct MHD_Response *resp,
			   const char *ctype)
{
	struct srv *s = c->l->srv;

	if (MHD_add_response_header(resp, "Server", s->server_name) != MHD_YES ||
	    MHD_add_response_header(resp, "Cache-Control",
				    "must-revalidate") != MHD_YES)
		return -ENOMEM;
	if (ctype && MHD_add_response_header(resp, "Content-Type",
					     ctype) != MHD_YES)
		return -ENOMEM;
	for (size_t i = 0; i < c->nhdrs; i++)
		if (MHD_add_response_header(resp, c->hdrs[i].name,
					    c->hdrs[i].value) != MHD_YES)
			return -ENOMEM;
	return 0;
}

/* Add the headers to resp, queue it and drop our reference. */
static int queue(struct hctx *c, int status, const char *ctype,
		 struct MHD_Response *resp)
{
	int rc = add_std_headers(c, resp, ctype);

	if (!rc && MHD_queue_response(c->conn, (unsigned)status, resp) != MHD_YES)
		rc = -EIO;
	c->queued = !rc;
	MHD_destroy_response(resp);
	return rc;
}

/* Claim the one reply of r; false (logged) on a second one. */
static bool claim_reply(struct hctx *c)
{
	if (c->replied) {
		fprintf(stderr, "barrel-sync: second reply to %s ignored\n",
			c->r.method);
		return false;
	}
	c->replied = true;
	return true;
}

int hreq_reply(struct hreq *r, int status, const char *ctype, char *buf,
	       size_t len)
{
	struct hctx *c = hctx_of(r);
	struct MHD_Response *resp;

	if (!claim_reply(c)) {
		free(buf);
		return BARREL_E_INVALID;
	}
	if (len >= SRV_GZIP_MIN && gzip_want(c, status, ctype)) {
		char *gz;
		size_t gzlen;
		int rc = gzip_buf(buf, len, &gz, &gzlen);

		if (rc < 0) {
			free(buf);
			return rc;
		}
		if (rc == 0 && hreq_header_add(r, "Content-Encoding", "gzip")) {
			free(gz);
			rc = 1;
		}
		if (rc == 0) {
			free(buf);
			buf = gz;
			len = gzlen;
		}
	}
	resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(buf);
		return -ENOMEM;
	}
	return queue(c, status, ctype, resp);
}

int hreq_reply_json(struct hreq *r, int status, struct json_object *j)
{
	size_t len;
	const char *s = json_object_to_json_string_length(j,
		JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	char *buf = s ? malloc(len + 2) : NULL;

	if (buf) {
		memcpy(buf, s, len);
		buf[len++] = '\n';
		buf[len] = '\0';
	}
	json_object_put(j);
	if (!buf) {
		hctx_of(r)->replied = true;
		return -ENOMEM;
	}
	return hreq_reply(r, status, "application/json", buf, len);
}

int hreq_reply_error(struct hreq *r, int status, const char *error,
		     const char *reason)
{
	struct json_object *j = json_object_new_object();

	if (!j) {
		hctx_of(r)->replied = true;
		return -ENOMEM;
	}
	json_object_object_add(j, "error", json_object_new_string(error));
	json_object_object_add(j, "reason", json_object_new_string(reason));
	return hreq_reply_json(r, status, j);
}

int hreq_reply_rc(struct hreq *r, int rc, const char *reason)
{
	return hreq_reply_error(r, barrel_http_status(rc),
				barrel_http_error(rc),
				reason ? reason : barrel_strerror(rc));
}

/* A streamed reply's state, the cls of MHD's content reader. */
struct hstream {
	struct srv *srv;
	hreq_stream_fn fn;
	void *arg;
	void (*free_fn)(void *arg);
};

/* MHD's content reader: call fn until it gives bytes or ends; fn blocks
 * at most about a second per call, and stopping cuts the stream. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct hstream *st = cls;

	for (;;) {
		ssize_t n;

		if (atomic_load(&st->srv->stopping))
			return MHD_CONTENT_READER_END_OF_STREAM;
		n = st->fn(st->arg, pos, buf, max);
		if (n > 0)
			return n;
		if (n == HREQ_STREAM_END)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (n < 0)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		/* 0: nothing yet; fn should have waited, do not spin */
		nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 },
			  NULL);
	}
}

static void stream_free(void *cls)
{
	struct hstream *st = cls;

	if (st->free_fn)
		st->free_fn(st->arg);
	free(st);
}

/*
 * A streamed reply gzipped on the fly: what the handler's fn gives is
 * deflated and flushed (Z_SYNC_FLUSH) at once, so that a feed's rows
 * and heartbeats reach the client as they are made.
 */
struct gzstream {
	z_stream z;
	hreq_stream_fn fn;
	void *arg;
	void (*free_fn)(void *arg);
	uint64_t ipos;            /* bytes fn gave */
	char in[SRV_STREAM_BLOCK];
	unsigned char *out;       /* deflated, not yet sent: [opos, olen) */
	size_t opos, olen, ocap;
	bool ended;               /* fn ended, the trailer is in out */
};

static ssize_t gz_read(void *arg, uint64_t pos, char *buf, size_t max)
{
	struct gzstream *g = arg;
	ssize_t n;

	(void)pos;
	while (g->opos == g->olen) {
		if (g->ended)
			return HREQ_STREAM_END;
		g->opos = g->olen = 0;
		n = g->fn(g->arg, g->ipos, g->in, sizeof(g->in));
		if (n == 0 || n == HREQ_STREAM_ERROR)
			return n;
		if (n > 0)
			g->ipos += (uint64_t)n;
		g->ended = n < 0;
		if (gzip_deflate(&g->z, g->in, n > 0 ? (size_t)n : 0,
				 n > 0 ? Z_SYNC_FLUSH : Z_FINISH, &g->out,
				 &g->olen, &g->ocap))
			return HREQ_STREAM_ERROR;
	}
	n = (ssize_t)(g->olen - g->opos < max ? g->olen - g->opos : max);
	memcpy(buf, g->out + g->opos, (size_t)n);
	g->opos += (size_t)n;
	return n;
}

static void gz_free(void *arg)
{
	struct gzstream *g = arg;

	if (g->free_fn)
		g->free_fn(g->arg);
	deflateEnd(&g->z);
	free(g->out);
	free(g);
}

/* Wrap the stream *fn, *arg, *free_fn in a gzstream (0, or -ENOMEM
 * with the handler's stream untouched). */
static int gz_wrap(hreq_stream_fn *fn, void **arg, void (**free_fn)(void *))
{
	struct gzstream *g = calloc(1, sizeof(*g));

	if (!g)
		return -ENOMEM;
	if (gzip_init(&g->z)) {
		free(g);
		return -ENOMEM;
	}
	g->fn = *fn;
	g->arg = *arg;
	g->free_fn = *free_fn;
	*fn = gz_read;
	*arg = g;
	*free_fn = gz_free;
	return 0;
}

int hreq_reply_stream(struct hreq *r, int status, const char *ctype,
		      uint64_t size, hreq_stream_fn fn, void *arg,
		      void (*free_fn)(void *arg))
{
	struct hctx *c = hctx_of(r);
	struct MHD_Response *resp;
	struct hstream *st;

	if (!claim_reply(c)) {
		if (free_fn)
			free_fn(arg);
		return BARREL_E_INVALID;
	}
	if (size >= SRV_GZIP_MIN && gzip_want(c, status, ctype)) {
		if (!gz_wrap(&fn, &arg, &free_fn) &&
		    !hreq_header_add(r, "Content-Encoding", "gzip"))
			size = HREQ_SIZE_UNKNOWN;
		else if (fn == gz_read)
			goto out_nomem;
	}
	if (!(st = malloc(sizeof(*st))))
		goto out_nomem;
	*st = (struct hstream){ c->l->srv, fn, arg, free_fn };
	resp = MHD_create_response_from_callback(
		size == HREQ_SIZE_UNKNOWN ? MHD_SIZE_UNKNOWN : size,
		SRV_STREAM_BLOCK, stream_read, st, stream_free);
	if (!resp) {
		stream_free(st);
		return -ENOMEM;
	}
	return queue(c, status, ctype, resp);
out_nomem:
	if (free_fn)
		free_fn(arg);
	return -ENOMEM;
}

int hreq_header_add(struct hreq *r, const char *name, const char *value)
{
	struct hctx *c = hctx_of(r);
	struct hhdr *h = realloc(c->hdrs, (c->nhdrs + 1) * sizeof(*h));

	if (!h)
		return -ENOMEM;
	c->hdrs = h;
	h[c->nhdrs].name = strdup(name);
	h[c->nhdrs].value = strdup(value);
	if (!h[c->nhdrs].name || !h[c->nhdrs].value) {
		free(h[c->nhdrs].name);
		free(h[c->nhdrs].value);
		return -ENOMEM;
	}
	c->nhdrs++;
	return 0;
}

/* ---- request accessors ---- */

const char *hreq_arg(struct hreq *r, const char *name)
{
	struct hctx *c = hctx_of(r);

	for (size_t i = 0; i < c->nargs; i++)
		if (!strcmp(c->args[i].name, name))
			return c->args[i].value;
	return NULL;
}

const char *hreq_header(struct hreq *r, const char *name)
{
	return MHD_lookup_connection_value(hctx_of(r)->conn, MHD_HEADER_KIND,
					   name);
}

/* ---- decoding the request ---- */

/* Split url on '/' into percent-decoded segments (empty ones skipped). */
static int split_path(struct hctx *c, const char *url)
{
	size_t n = 0, i = 0;
	const char *p;

	for (p = url; *p; p++)
		n += *p == '/';
	if (!(c->r.path = calloc(n + 1, sizeof(char *))))
		return -ENOMEM;
	for (p = url; *p && i <= n;) {
		const char *e = strchr(p, '/');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		int rc;

		if (len && (rc = url_unescape(p, len, false, &c->r.path[i++])))
			return rc;
		c->r.npath = i;
		p += len + (e != NULL);
	}
	return 0;
}

/* MHD_get_connection_values() callback: decode one query argument. */
static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind,
				   const char *key, const char *value)
{
	struct hctx *c = cls;
	struct harg *a = realloc(c->args, (c->nargs + 1) * sizeof(*a));

	(void)kind;
	if (!a)
		return MHD_NO;
	c->args = a;
	a = &c->args[c->nargs];
	a->name = a->value = NULL;
	if (url_unescape(key, strlen(key), true, &a->name) ||
	    url_unescape(value ? value : "", value ? strlen(value) : 0, true,
		       &a->value)) {
		free(a->name);
		c->bad_arg = true;
		return MHD_NO;
	}
	c->nargs++;
	return MHD_YES;
}

static int decode_args(struct hctx *c)
{
	MHD_get_connection_values(c->conn, MHD_GET_ARGUMENT_KIND, collect_arg,
				  c);
	return c->bad_arg ? BARREL_E_INVALID : 0;
}

/* MHD's unescaping, disabled: we decode segments and values ourselves. */
static size_t unescape_none(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	return strlen(s);
}

/* ---- authentication ---- */

/* Reload the password file when it changed (s->pw_lock held). */
static int pw_refresh(struct srv *s)
{
	struct stat st;
	char *text;
	int rc;

	if (stat(s->passwd, &st) < 0)
		return -errno;
	if (s->pw_text && st.st_mtim.tv_sec == s->pw_mtime.tv_sec &&
	    st.st_mtim.tv_nsec == s->pw_mtime.tv_nsec &&
	    st.st_size == s->pw_size)
		return 0;
	if ((rc = read_file(s->passwd, SRV_MAX_PASSWD, &text, &st)))
		return rc;
	free(s->pw_text);
	s->pw_text = text;
	s->pw_mtime = st.st_mtim;
	s->pw_size = st.st_size;
	return 0;
}

/* The hash of user from the password file into *hash (malloc'ed). */
static int pw_lookup(struct srv *s, const char *user, char **hash)
{
	size_t ulen = strlen(user);
	const char *p;
	int rc;

	*hash = NULL;
	pthread_mutex_lock(&s->pw_lock);
	rc = pw_refresh(s);
	for (p = s->pw_text; !rc && p && *p;) {
		const char *e = strchr(p, '\n');
		size_t len = e ? (size_t)(e - p) : strlen(p);

		if (len > ulen && !memcmp(p, user, ulen) && p[ulen] == ':') {
			*hash = strndup(p + ulen + 1, len - ulen - 1);
			rc = *hash ? 0 : -ENOMEM;
			break;
		}
		p = e ? e + 1 : NULL;
	}
	pthread_mutex_unlock(&s->pw_lock);
	if (!rc && !*hash)
		rc = BARREL_E_NOTFOUND;
	return rc;
}

/* Does pass match hash? crypt_r, compared in constant time. */
static bool pw_match(const char *pass, const char *hash)
{
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	const char *out;
	bool ok = false;
	size_t len = strlen(hash);

	if (!cd)
		return false;
	out = crypt_r(pass, hash, cd);
	if (out && out[0] != '*' && strlen(out) == len)
		ok = CRYPTO_memcmp(out, hash, len) == 0;
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	return ok;
}

/* Decode "Basic BASE64" into user and password (*user malloc'ed). */
static int basic_decode(const char *hdr, char **user, char **pass)
{
	size_t len, pad = 0;
	unsigned char *dec;
	char *colon;
	int n;

	if (!hdr || strncasecmp(hdr, "Basic ", 6))
		return BARREL_E_INVALID;
	hdr += 6;
	while (*hdr == ' ')
		hdr++;
	len = strlen(hdr);
	if (!len || len % 4 || len > 4096)
		return BARREL_E_INVALID;
	pad = (hdr[len - 1] == '=') + (hdr[len - 2] == '=');
	if (!(dec = malloc(len / 4 * 3 + 1)))
		return -ENOMEM;
	n = EVP_DecodeBlock(dec, (const unsigned char *)hdr, (int)len);
	if (n < 0 || (size_t)n < pad) {
		free(dec);
		return BARREL_E_INVALID;
	}
	dec[(size_t)n - pad] = '\0';
	if (strlen((char *)dec) != (size_t)n - pad ||
	    !(colon = strchr((char *)dec, ':'))) {
		free(dec);
		return BARREL_E_INVALID;
	}
	*colon = '\0';
	*user = (char *)dec;
	*pass = colon + 1;
	return 0;
}

/* Check the request's credentials; sets c->user. */
static bool authenticate(struct hctx *c)
{
	struct srv *s = c->l->srv;
	char *user = NULL, *pass, *hash = NULL;
	bool ok = false;

	if (!c->l->tcp || !s->passwd)
		return true;
	if (basic_decode(hreq_header(&c->r, "Authorization"), &user, &pass))
		return false;
	if (!pw_lookup(s, user, &hash))
		ok = pw_match(pass, hash);
	if (ok) {
		c->user = strdup(user);
		c->r.user = c->user;
		ok = c->user != NULL;
	}
	explicit_bzero(user, strlen(user) + strlen(pass) + 1);
	free(user);
	free(hash);
	return ok;
}

static int reply_unauthorized(struct hctx *c)
{
	int rc = hreq_header_add(&c->r, "WWW-Authenticate",
				 "Basic realm=\"barrelfs\"");

	if (rc)
		return rc;
	return hreq_reply_error(&c->r, 401, "unauthorized",
				"Name or password is incorrect.");
}

/* ---- the request cycle ---- */

static void hctx_free(struct hctx *c)
{
	for (size_t i = 0; i < c->r.npath; i++)
		free(c->r.path[i]);
	free(c->r.path);
	for (size_t i = 0; i < c->nargs; i++) {
		free(c->args[i].name);
		free(c->args[i].value);
	}
	free(c->args);
	for (size_t i = 0; i < c->nhdrs; i++) {
		free(c->hdrs[i].name);
		free(c->hdrs[i].value);
	}
	free(c->hdrs);
	free(c->body);
	free(c->user);
	free(c);
}

static void completed_cb(void *cls, struct MHD_Connection *conn,
			 void **con_cls, enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	if (*con_cls)
		hctx_free(*con_cls);
	*con_cls = NULL;
}

/* Step 1: the headers are in. Returns 0, or replies (c->replied). */
static int request_start(struct hctx *c, const char *url)
{
	const char *cl = hreq_header(&c->r, "Content-Length");
	int rc;

	c->started = true;
	c->gzip_ok = gzip_accepted(hreq_header(&c->r, "Accept-Encoding"));
	if (!authenticate(c))
		return reply_unauthorized(c);
	if (cl && strtoull(cl, NULL, 10) > SRV_MAX_BODY)
		return hreq_reply_error(&c->r, 413, "too_large",
					"the request body is too large");
	rc = split_path(c, url);
	if (!rc)
		rc = decode_args(c);
	if (rc == BARREL_E_INVALID)
		return hreq_reply_error(&c->r, 400, "bad_request",
					"invalid percent-encoding in the URL");
	return rc;
}

/* Step 2: append a piece of the body. */
static int request_body(struct hctx *c, const char *data, size_t len)
{
	size_t cap = c->cap ? c->cap : 4096;

	if (c->too_large || len > SRV_MAX_BODY - c->len) {
		c->too_large = true;
		return 0;
	}
	while (cap < c->len + len + 1)
		cap *= 2;
	if (cap != c->cap) {
		char *p = realloc(c->body, cap);

		if (!p)
			return -ENOMEM;
		c->body = p;
		c->cap = cap;
	}
	memcpy(c->body + c->len, data, len);
	c->len += len;
	c->body[c->len] = '\0';
	return 0;
}

/* Step 3: the whole request is in: dispatch. */
static int request_run(struct hctx *c)
{
	int rc;

	if (c->too_large)
		return hreq_reply_error(&c->r, 413, "too_large",
					"the request body is too large");
	rc = gunzip_body(c);
	if (rc == BARREL_E_INVALID)
		return hreq_reply_error(&c->r, 400, "bad_request", "the request "
					"body is not a valid gzip stream");
	if (rc == BARREL_E_TOOBIG)
		return hreq_reply_error(&c->r, 413, "too_large",
					"the request body is too large");
	if (rc == -EOPNOTSUPP)
		return hreq_reply_error(&c->r, 415, "bad_content_type",
					"unsupported Content-Encoding");
	if (rc)
		return rc;
	c->r.body = c->body ? c->body : "";
	c->r.len = c->len;
	rc = api_dispatch(&c->r);
	if (!c->replied && rc >= 0)
		rc = hreq_reply_error(&c->r, 500, "unknown_error",
				      "no reply was made");
	return rc;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn,
				 const char *url, const char *method,
				 const char *version, const char *upload,
				 size_t *upload_size, void **con_cls)
{
	struct listener *l = cls;
	struct hctx *c = *con_cls;
	int rc = 0;

	(void)version;
	if (!c) {
		if (!(c = calloc(1, sizeof(*c))))
			return MHD_NO;
		c->conn = conn;
		c->l = l;
		c->r.srv = l->srv;
		c->r.cat = l->srv->cat;
		c->r.method = method;
		*con_cls = c;
		rc = request_start(c, url);
		if (c->replied)
			return c->queued ? MHD_YES : MHD_NO;
		return rc < 0 ? MHD_NO : MHD_YES;
	}
	if (c->replied) {               /* refused early: drop the body */
		*upload_size = 0;
		return c->queued ? MHD_YES : MHD_NO;
	}
	if (*upload_size) {
		rc = request_body(c, upload, *upload_size);
		*upload_size = 0;
		return rc ? MHD_NO : MHD_YES;
	}
	request_run(c);
	/* without a response MHD would call us again: cut the connection */
	return c->queued ? MHD_YES : MHD_NO;
}

/* ---- listeners ---- */

/* A UNIX socket at path, replacing a stale socket file; mode 0660. */
static int listen_unix(const char *path, int *fd_out, char *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd = -1, rc;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, SRV_ERRLEN, "socket path too long: %s", path);
		return BARREL_E_INVALID;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -errno;
	if (!lstat(path, &st) && S_ISSOCK(st.st_mode)) {
		if (!connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
			snprintf(err, SRV_ERRLEN, "%s: a server is listening",
				 path);
			close(fd);
			return -EADDRINUSE;
		}
		unlink(path);
		close(fd);
		if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
			return -errno;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, 0660) < 0 || listen(fd, 128) < 0) {
		rc = -errno;
		snprintf(err, SRV_ERRLEN, "%s: %s", path, strerror(-rc));
		close(fd);
		return rc;
	}
	*fd_out = fd;
	return 0;
}

/* Parse "ADDR:PORT" ("[v6]:PORT", "localhost:PORT") into sa. */
static int parse_addr(const char *s, struct sockaddr_storage *sa,
		      socklen_t *salen, char *err)
{
	char host[INET6_ADDRSTRLEN + 8];
	const char *colon = strrchr(s, ':');
	size_t hlen;
	char *end;
	unsigned long port;

	if (!colon || !colon[1])
		goto out_bad;
	hlen = (size_t)(colon - s);
	if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
		s++;
		hlen -= 2;
	}
	if (!hlen || hlen >= sizeof(host))
		goto out_bad;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (*end || errno || port > 65535)
		goto out_bad;
	if (!strcmp(host, "localhost"))
		memcpy(host, "127.0.0.1", sizeof("127.0.0.1"));
	memset(sa, 0, sizeof(*sa));
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)sa)->sin_addr)) {
		((struct sockaddr_in *)sa)->sin_family = AF_INET;
		((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
		*salen = sizeof(struct sockaddr_in);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)sa)->sin6_addr)) {
		((struct sockaddr_in6 *)sa)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
		*salen = sizeof(struct sockaddr_in6);
		return 0;
	}
out_bad:
	snprintf(err, SRV_ERRLEN, "bad listen address \"%s\" (want ADDR:PORT)",
		 s);
	return BARREL_E_INVALID;
}

static bool addr_loopback(const struct sockaddr_storage *sa)
{
	if (sa->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr)
			>> 24) == 127;
	return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

/* Bind and listen on sa; fills s->port and s->url. */
static int listen_tcp(struct srv *s, const struct sockaddr_storage *sa,
		      socklen_t salen, int *fd_out, char *err)
{
	struct sockaddr_storage got;
	socklen_t glen = sizeof(got);
	char host[INET6_ADDRSTRLEN];
	int one = 1, rc;
	int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)sa, salen) < 0 ||
	    listen(fd, 128) < 0 ||
	    getsockname(fd, (struct sockaddr *)&got, &glen) < 0) {
		rc = -errno;
		snprintf(err, SRV_ERRLEN, "listen: %s", strerror(-rc));
		close(fd);
		return rc;
	}
	if (got.ss_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&got)->sin_addr,
			  host, sizeof(host));
		s->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
	} else {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&got)->sin6_addr,
			  host, sizeof(host));
		s->port = ntohs(((struct sockaddr_in6 *)&got)->sin6_port);
	}
	snprintf(s->url, sizeof(s->url), "%s://%s%s%s:%u",
		 s->tls_cert ? "https" : "http",
		 got.ss_family == AF_INET6 ? "[" : "", host,
		 got.ss_family == AF_INET6 ? "]" : "", s->port);
	s->has_url = true;
	*fd_out = fd;
	return 0;
}

/* Start a daemon on the listening socket fd (taken, even on error). */
static int daemon_start(struct srv *s, struct listener *l, int fd, char *err)
{
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION |
			 MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
	struct MHD_OptionItem tls[3] = {
		{ MHD_OPTION_END, 0, NULL }, { MHD_OPTION_END, 0, NULL },
		{ MHD_OPTION_END, 0, NULL },
	};

	l->srv = s;
	if (l->tcp && s->tls_cert) {
		flags |= MHD_USE_TLS;
		tls[0] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0,
						  s->tls_key };
		tls[1] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0,
						  s->tls_cert };
	}
	l->daemon = MHD_start_daemon(flags, 0, NULL, NULL, access_cb, l,
		MHD_OPTION_LISTEN_SOCKET, fd,
		MHD_OPTION_UNESCAPE_CALLBACK, unescape_none, NULL,
		MHD_OPTION_NOTIFY_COMPLETED, completed_cb, NULL,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64u << 10),
		MHD_OPTION_ARRAY, tls,
		MHD_OPTION_END);
	if (!l->daemon) {
		close(fd);
		snprintf(err, SRV_ERRLEN, "cannot start the HTTP daemon%s",
			 l->tcp && s->tls_cert ? " (bad TLS key or certificate?)"
					       : "");
		return BARREL_E_INVALID;
	}
	return 0;
}

/* Read the TLS and password files named by o. */
static int load_files(struct srv *s, const struct srv_opts *o, char *err)
{
	struct stat st;
	int rc;

	if (!o->tls_cert != !o->tls_key) {
		snprintf(err, SRV_ERRLEN, "TLS needs both a certificate and a key");
		return BARREL_E_INVALID;
	}
	if (o->tls_cert &&
	    ((rc = read_file(o->tls_cert, SRV_MAX_TLS_FILE, &s->tls_cert, &st)) ||
	     (rc = read_file(o->tls_key, SRV_MAX_TLS_FILE, &s->tls_key, &st)))) {
		snprintf(err, SRV_ERRLEN, "cannot read TLS files %s, %s: %s",
			 o->tls_cert, o->tls_key, barrel_strerror(rc));
		return BARREL_E_INVALID;
	}
	if (o->passwd) {
		if (!(s->passwd = strdup(o->passwd)))
			return -ENOMEM;
		if ((rc = pw_refresh(s))) {
			snprintf(err, SRV_ERRLEN, "cannot read password file %s: %s",
				 o->passwd, barrel_strerror(rc));
			return BARREL_E_INVALID;
		}
	}
	return 0;
}

/* The TCP listener of o, checking the loopback rule. */
static int start_tcp(struct srv *s, const struct srv_opts *o, char *err)
{
	struct sockaddr_storage sa;
	socklen_t salen;
	int fd = -1, rc;

	if ((rc = parse_addr(o->listen, &sa, &salen, err)))
		return rc;
	if (!o->passwd && !addr_loopback(&sa)) {
		snprintf(err, SRV_ERRLEN, "refusing to listen on %s without a "
			 "password file (only loopback is open)", o->listen);
		return BARREL_E_INVALID;
	}
	if ((rc = listen_tcp(s, &sa, salen, &fd, err)))
		return rc;
	s->tcp_l.tcp = true;
	return daemon_start(s, &s->tcp_l, fd, err);
}

int srv_start(const struct catalog *cat, const struct srv_opts *o,
	      struct srv **out, char *err)
{
	struct srv *s = calloc(1, sizeof(*s));
	int fd = -1, rc;

	err[0] = '\0';
	if (!s)
		return -ENOMEM;
	s->cat = cat;
	pthread_mutex_init(&s->pw_lock, NULL);
	atomic_init(&s->stopping, false);
	s->server_name = strdup(o->server_name ? o->server_name
					       : SRV_DEFAULT_NAME);
	if (!s->server_name) {
		rc = -ENOMEM;
		goto out_stop;
	}
	if (!o->unix_path && !o->listen) {
		snprintf(err, SRV_ERRLEN, "no listener (UNIX socket or TCP)");
		rc = BARREL_E_INVALID;
		goto out_stop;
	}
	if ((rc = load_files(s, o, err)))
		goto out_stop;
	if (o->listen && (rc = start_tcp(s, o, err)))
		goto out_stop;
	if (o->unix_path) {
		if ((rc = listen_unix(o->unix_path, &fd, err)))
			goto out_stop;
		if (!(s->unix_path = strdup(o->unix_path))) {
			close(fd);
			rc = -ENOMEM;
			goto out_stop;
		}
		if ((rc = daemon_start(s, &s->unix_l, fd, err)))
			goto out_stop;
	}
	*out = s;
	return 0;
out_stop:
	srv_stop(s);
	return rc;
}

void srv_stop(struct srv *s)
{
	if (!s)
		return;
	atomic_store(&s->stopping, true);
	if (s->tcp_l.daemon)
		MHD_stop_daemon(s->tcp_l.daemon);
	if (s->unix_l.daemon)
		MHD_stop_daemon(s->unix_l.daemon);
	if (s->unix_path)
		unlink(s->unix_path);
	free(s->unix_path);
	free(s->server_name);
	free(s->tls_cert);
	if (s->tls_key)
		explicit_bzero(s->tls_key, strlen(s->tls_key));
	free(s->tls_key);
	free(s->passwd);
	free(s->pw_text);
	pthread_mutex_destroy(&s->pw_lock);
	free(s);
}

uint16_t srv_port(const struct srv *s)
{
	return s->port;
}

const char *srv_url(const struct srv *s)
{
	return s->has_url ? s->url : NULL;
}

bool srv_stopping(const struct srv *s)
{
	return atomic_load(&((struct srv *)s)->stopping);
}
