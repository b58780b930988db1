/*
 * One database of a CouchDB-compatible server, reached over HTTP(S) with
 * libcurl: the replicator's view of a peer (repl.h).
 *
 * An endpoint spec is either a URL, "http(s)://[user:pass@]host[:port]
 * [/prefix]/db" (db percent-encoded as CouchDB wants: "/" as %2F), or a
 * UNIX socket, "unix:/path/to/api.sock:/db" (db as is or
 * percent-encoded; the requests go to http://localhost/db on the
 * socket).
 *
 * Requests carry JSON bodies and their replies are parsed with json-c.
 * Replies may come gzipped (every request accepts it); request bodies
 * are gzipped only after client_gzip_requests().
 * A request that cannot reach the peer (connection refused or reset,
 * timeout) or that gets a 5xx status is retried with exponential backoff
 * (opts.backoff_ms doubling up to opts.backoff_max_ms, opts.retries more
 * attempts); a 4xx status is an answer, never retried. Passwords never
 * appear in a message or in client_url().
 *
 * One CURL handle per client, so that connections are kept alive; a
 * client is NOT thread-safe: one thread at a time uses it (another
 * thread may only raise *opts.cancel).
 *
 * Errors: 0 or a negative code of error.h; messages for a person go to
 * the err buffer (CLIENT_ERRLEN bytes) where a call takes one.
 */
#ifndef BARREL_SYNC_CLIENT_H
#define BARREL_SYNC_CLIENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct json_object;
struct client;

#define CLIENT_ERRLEN 512

struct client_opts {
	unsigned retries;         /* attempts after the first (default 8) */
	unsigned backoff_ms;      /* first delay (default 250) */
	unsigned backoff_max_ms;  /* delay cap (default 10000) */
	unsigned connect_ms;      /* connect timeout (default 10000) */
	unsigned idle_ms;         /* a transfer with no byte moving for this
	                             long fails (default 60000) */
	/*
	 * Borrowed, may be NULL; another thread (or a signal handler) raises
	 * it: at 1 backoff waits and CLIENT_IDLE requests give up, at 2
	 * every transfer does; they return -ECANCELED.
	 */
	const atomic_int *cancel;
};

/* Fill o with the defaults (cancel NULL). */
void client_opts_init(struct client_opts *o);

/*
 * A client of the database spec names. o may be NULL (defaults) and is
 * copied. *out is owned by the caller: client_free(). Errors:
 * BARREL_E_INVALID (err says what is wrong with spec), -ENOMEM.
 */
int client_new(const char *spec, const struct client_opts *o,
	       struct client **out, char *err);
void client_free(struct client *c);          /* NULL is a no-op */

/* The database's URL without credentials ("http://h:5984/db", or
 * "unix:/path/api.sock:/db"): for messages and replication ids.
 * Borrowed from c. */
const char *client_url(const struct client *c);
/* The database name, percent-decoded. Borrowed from c. */
const char *client_db(const struct client *c);

/* A reply: the status and the body, parsed when it is JSON. */
struct client_reply {
	long status;
	struct json_object *json; /* NULL when the body is not JSON; owned */
	char *body;               /* NUL-terminated, malloc'ed; owned */
	size_t len;
};
void client_reply_release(struct client_reply *r);   /* zeroes it */

enum client_req_flags {
	CLIENT_IDLE = 1 << 0,     /* may wait for events (a longpoll):
	                             no idle timeout, cancel at level 1 */
	CLIENT_NO_RETRY = 1 << 1, /* one attempt only */
	CLIENT_NO_PARSE = 1 << 2, /* leave the body as text (json NULL):
	                             the caller scans it itself */
};

/*
 * method on the database URL followed by path ("" for the database,
 * "/_changes?since=0", "/_local/x"; the caller escapes it, see
 * url_escape() of sync/url.h), with body (len bytes of JSON, NULL: none) and
 * extra headers (NULL-terminated, may be NULL). On return 0, *rep holds
 * the peer's answer whatever its status (release it). A body is sent as
 * application/json unless headers name another Content-Type. Errors, after
 * the retries: -ECONNREFUSED, -EHOSTUNREACH, -ETIMEDOUT, -ECONNRESET,
 * -EPROTO (not HTTP), -EIO (other transfer errors), -ECANCELED,
 * -ENOMEM; a 5xx after the last retry is returned as a reply.
 */
int client_call(struct client *c, const char *method, const char *path,
		const char *body, size_t len, const char *const *headers,
		unsigned flags, struct client_reply *rep, char *err);

/* client_call() with body j (NULL: none) sent as JSON text. */
int client_json(struct client *c, const char *method, const char *path,
		struct json_object *j, struct client_reply *rep, char *err);

/*
 * GET on the server's root ("/", or "/prefix/" of a URL with one): its
 * welcome ({"couchdb":"Welcome","vendor":{"name":...}}), one attempt.
 * As client_call().
 */
int client_server(struct client *c, struct client_reply *rep, char *err);

/*
 * Send JSON request bodies of at least a KiB gzip-compressed
 * (Content-Encoding: gzip) from now on; only to a peer known to accept
 * them (barrelfs). Replies are always accepted gzipped (libcurl
 * decodes them). Off by default.
 */
void client_gzip_requests(struct client *c, bool on);

/* Sleep ms unless *o->cancel rises (checked every 50 ms): 0 or
 * -ECANCELED. */
int client_sleep(const struct client_opts *o, unsigned ms);

#endif
