/*
 * The HTTP/1.1 server of the replication API (DESIGN.md "Sync"), on
 * libmicrohttpd with a thread per connection, so that a continuous feed
 * or a longpoll blocks only its own connection.
 *
 * A server listens on a UNIX socket, on TCP, or both; TCP may use TLS
 * (GnuTLS inside libmicrohttpd) and HTTP basic authentication against a
 * password file of crypt(3) hashes, one "user:hash" a line. A TCP
 * listener on an address other than loopback refuses to start without a
 * password file. Every request is read whole (at most SRV_MAX_BODY
 * bytes, else 413), handed to api_dispatch() (api.h), which replies
 * exactly once through the hreq_reply*() calls below.
 *
 * Errors: 0 or a negative code of error.h; messages for a person go to
 * the err buffer (SRV_ERRLEN bytes) where a call takes one.
 */
#ifndef BARREL_SYNC_HTTP_H
#define BARREL_SYNC_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct catalog;
struct json_object;
struct srv;
struct hreq;

#define SRV_ERRLEN 256
#define SRV_MAX_BODY (256u << 20)       /* bytes of a request body */

struct srv_opts {
	const char *unix_path;    /* listen on this UNIX socket (NULL: no);
	                             a stale socket file is replaced */
	const char *listen;       /* "ADDR:PORT" on TCP (NULL: no); port 0
	                             picks one (srv_port()) */
	const char *passwd;       /* password file (NULL: no authentication;
	                             then only loopback TCP is allowed) */
	const char *tls_cert;     /* PEM certificate and key: TCP is HTTPS */
	const char *tls_key;
	const char *server_name;  /* "Server:" header and GET / vendor */
};

/*
 * Start serving cat (borrowed: it must outlive the server) as o says.
 * *out is owned by the caller: srv_stop(). Errors: BARREL_E_INVALID
 * (bad address, no listener, non-loopback TCP without a password file,
 * unreadable TLS or password files; err says which), -errno of socket
 * calls (-EADDRINUSE, ...).
 */
int srv_start(const struct catalog *cat, const struct srv_opts *o,
	      struct srv **out, char *err);
/* Stop listening, end open feeds (within a second) and free s. */
void srv_stop(struct srv *s);                /* NULL is a no-op */
/* The TCP port bound (0 without TCP). */
uint16_t srv_port(const struct srv *s);
/* The URL of the TCP listener, "http(s)://ADDR:PORT" (NULL without). */
const char *srv_url(const struct srv *s);
/* Is the server stopping? Long responses poll this. */
bool srv_stopping(const struct srv *s);

/* ---- requests, for the handlers of api.h ---- */

/* One request, read whole. Everything is borrowed for the request. */
struct hreq {
	struct srv *srv;
	const struct catalog *cat;
	const char *method;       /* "GET", "PUT", ... */
	char **path;              /* the path's segments, percent-decoded;
	                             "/db/_design/x" is {"db","_design","x"} */
	size_t npath;
	const char *body;         /* NUL-terminated ("" when none) */
	size_t len;
	const char *user;         /* the authenticated user, or NULL */
};

/* Query argument name, percent-decoded ("+" is a space); NULL if absent. */
const char *hreq_arg(struct hreq *r, const char *name);
/* Request header name (case-insensitive); NULL if absent. */
const char *hreq_header(struct hreq *r, const char *name);
/* Add a header to the reply (copied); before the reply call. */
int hreq_header_add(struct hreq *r, const char *name, const char *value);

/*
 * Replies; exactly one per request, each returns 0 or -ENOMEM.
 *  - hreq_reply: buf (malloc'ed, taken even on error) of len bytes;
 *  - hreq_reply_json: j as JSON text, taken (json_object_put());
 *  - hreq_reply_error: CouchDB's {"error":error,"reason":reason};
 *  - hreq_reply_rc: an error code of error.h as CouchDB's error body,
 *    status and name from error.c's table; reason NULL: its message.
 */
int hreq_reply(struct hreq *r, int status, const char *ctype, char *buf,
	       size_t len);
int hreq_reply_json(struct hreq *r, int status, struct json_object *j);
int hreq_reply_error(struct hreq *r, int status, const char *error,
		     const char *reason);
int hreq_reply_rc(struct hreq *r, int rc, const char *reason);

/*
 * A streamed reply: fn fills buf (at most max bytes) with what follows
 * pos and returns the count, HREQ_STREAM_END when done, or
 * HREQ_STREAM_ERROR to cut the connection. fn may block (a continuous
 * feed waits for commits) but should return within a second to let
 * srv_stopping() be seen; returning 0 sends nothing yet and calls again.
 * size is the total (HREQ_SIZE_UNKNOWN: chunked). free_fn(arg) runs once
 * the reply is done or abandoned, also when this call fails.
 */
#define HREQ_SIZE_UNKNOWN UINT64_MAX
#define HREQ_STREAM_END ((ssize_t)-1)
#define HREQ_STREAM_ERROR ((ssize_t)-2)
typedef ssize_t (*hreq_stream_fn)(void *arg, uint64_t pos, char *buf,
				  size_t max);
int hreq_reply_stream(struct hreq *r, int status, const char *ctype,
		      uint64_t size, hreq_stream_fn fn, void *arg,
		      void (*free_fn)(void *arg));

#endif
