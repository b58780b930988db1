/*
 * The JavaScript sandbox of views: one design document's map and reduce
 * functions (CouchDB's format) run in a duktape heap of their own, with
 * a CPU-time limit per call and a memory limit per heap.
 *
 * A struct mapjs holds the functions of one design document, added by
 * source: map functions (the source is a function expression,
 * "function(doc){ emit(k, v); }") and reduce functions (the built-ins
 * "_count", "_sum", "_stats", done in C, or a JavaScript
 * "function(keys, values, rereduce){...}"). mapjs_map() runs every map
 * function on one document; mapjs_reduce() runs one reduce.
 *
 * What the JavaScript sees: the ECMAScript built-ins of duktape 2 (ES5.1
 * with parts of ES2015+), no I/O and nothing else: the globals
 * `Duktape`, `performance`, `TextEncoder` and `TextDecoder` are
 * removed; duktape 2 has no require, print or alert. CouchDB's helpers:
 * emit(key, value) (map only), log(msg) (strings as given, anything
 * else as JSON), toJSON(v) (JSON.stringify), sum(array), isArray(v),
 * and JSON. Each map function gets its own fresh copy of the document,
 * so one cannot change what the next sees. Strings are duktape's:
 * characters past U+FFFF count as one in .length.
 *
 * Data in and out is JSON text (UTF-8). The document given to mapjs_map
 * is what CouchDB gives map functions: the body with _id, _rev and
 * _attachments stubs; the caller builds it. An emitted key or value is
 * what JSON.stringify makes of it; undefined, functions and values
 * JSON.stringify drops become null; a cycle makes emit() throw.
 *
 * Limits (struct mapjs_opts):
 *  - time: each call of a JavaScript function (one map function on one
 *    document, one reduce, a compile) may use timeout_ms of its thread's
 *    CPU time (up to an eighth more). A POSIX CPU-time timer of the
 *    calling thread ticks every timeout_ms / 8 of its CPU time, sending
 *    MAPJS_SIGNAL; it is armed by the first call and keeps ticking, with
 *    no system call per call, until mapjs_idle() or mapjs_free() (a
 *    thread that goes on to other work calls mapjs_idle(): its system
 *    calls may otherwise see EINTR). A call that sees more than 8 ticks
 *    is over its time: the handler siglongjmp()s out of the
 *    interpreter when the thread is executing duktape's own code, or
 *    retries 1 ms later when it is in libc or in our C (allocator,
 *    helpers), which never leave a lock or a malloc'ed block behind. The
 *    heap, possibly inconsistent then, is discarded whole: every block it
 *    has is freed by our allocator, no finalizer runs. The next call
 *    rebuilds it and recompiles the functions. See DESIGN.md "Views".
 *  - memory: the heap's allocator refuses past mem_limit bytes; duktape
 *    then collects garbage, and throws a RangeError if that is not
 *    enough. A call that hit the limit fails and the heap is rebuilt
 *    (the garbage may sit in a global).
 * A function that throws or runs past a limit skips that document for
 * that function (mapjs_result.err, msg); the other functions and the
 * next documents go on.
 *
 * Signals: mapjs installs a handler for MAPJS_SIGNAL (a real-time signal)
 * for the process once, and unblocks it in each calling thread on its
 * first call (libfuse's worker threads start with every signal blocked).
 * Nothing else may use that signal.
 *
 * Threads: a struct mapjs is used by one thread at a time (the caller
 * serializes); distinct contexts run in parallel without sharing.
 *
 * Errors: 0 or negative: -ENOMEM (the host, not the heap), -errno of
 * timer_create; BARREL_E_INVALID (a bad source, a function that threw,
 * a built-in reduce refusing its values), -ETIMEDOUT (the time limit),
 * BARREL_E_TOOBIG (the memory or emit limit), BARREL_E_BADJSON (the
 * document or a reduce value is not JSON). The message of the latest
 * failure is in mapjs_errmsg().
 */
#ifndef BARREL_MAPJS_H
#define BARREL_MAPJS_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#define MAPJS_SIGNAL (SIGRTMIN + 5)
#define MAPJS_DEFAULT_TIMEOUT_MS 5000u           /* os_process_timeout */
#define MAPJS_DEFAULT_MEM_LIMIT (64u << 20)      /* bytes of one heap */
#define MAPJS_DEFAULT_EMIT_LIMIT (16u << 20)     /* bytes emitted per doc */
#define MAPJS_LOG_LIMIT (64u << 10)              /* log() bytes per call */
#define MAPJS_MSGLEN 512u

struct mapjs;

struct mapjs_opts {
	unsigned timeout_ms;     /* CPU time per call; 0: the default */
	size_t mem_limit;        /* bytes of the heap; 0: the default */
	size_t emit_limit;       /* bytes of JSON one map function may emit
	                            for one document; 0: the default */
	/* log(msg) of function fn (as mapjs_add_* numbered it), called once
	 * per message after the call that logged it returns; msg is
	 * borrowed for the call. NULL: messages are dropped. Past
	 * MAPJS_LOG_LIMIT bytes per call the rest are dropped. */
	void (*log)(void *arg, int fn, const char *msg, size_t len);
	void *log_arg;
};

/* One emit(key, value): JSON text, NUL-terminated, borrowed from m. */
struct mapjs_kv {
	const char *key;
	size_t keylen;
	const char *value;
	size_t valuelen;
};

/* What one map function did with one document. */
struct mapjs_result {
	int fn;                      /* the function (mapjs_add_map's number) */
	int err;                     /* 0, or why it skipped the document */
	const char *msg;             /* "" or the error text ("TypeError:
	                                ...", "time limit of 5000 ms") */
	const struct mapjs_kv *kv;   /* its emits in order (none on error) */
	size_t nkv;
};

/* A row given to a reduce. */
struct mapjs_row {
	const char *key;             /* JSON text; ignored when rereducing */
	size_t keylen;
	const char *id;              /* doc id, raw UTF-8 (not JSON); ignored
	                                when rereducing */
	size_t idlen;
	const char *value;           /* JSON text: an emitted value, or a
	                                reduction when rereducing */
	size_t valuelen;
};

/* opts may be NULL (all defaults). *out is owned by the caller. */
int mapjs_new(const struct mapjs_opts *opts, struct mapjs **out);
void mapjs_free(struct mapjs *m);              /* NULL is a no-op */

/*
 * Compile a map function from its source (len bytes, no NUL needed) and
 * return its number (>= 0; numbers count up from 0 across map and reduce
 * functions), or BARREL_E_INVALID with the compiler's message in
 * mapjs_errmsg() when the source is not a function expression or does
 * not compile, or a limit error if evaluating it runs away.
 */
int mapjs_add_map(struct mapjs *m, const char *src, size_t len);

/* The same for a reduce function: "_count", "_sum", "_stats" or a JS
 * function expression; BARREL_E_INVALID for another "_name". */
int mapjs_add_reduce(struct mapjs *m, const char *src, size_t len);

/*
 * Run every map function, in the order added, on the document doc[0..len)
 * (JSON text of an object). *res points at one result per map function
 * (*nres of them), borrowed from m until the next call on m. Returns 0
 * when the document was mapped, even if some function failed on it (see
 * res[i].err); BARREL_E_BADJSON when doc is not a JSON object, -ENOMEM.
 */
int mapjs_map(struct mapjs *m, const char *doc, size_t len,
	      const struct mapjs_result **res, size_t *nres);

/*
 * Reduce n rows by reduce function fn: reduce(keys, values, false) with
 * keys [[key, id], ...] or, rereduce true, reduce(null, values, true).
 * *out is the JSON text of the result, malloc'ed, NUL-terminated, owned
 * by the caller (free()); *outlen its length. The built-ins follow
 * CouchDB: _count counts (rereduce: sums), _sum adds numbers, arrays of
 * numbers elementwise (a number is a one-element array, short arrays
 * padded with 0) and objects field by field, _stats gives
 * {"sum","count","min","max","sumsqr"} from numbers, pre-aggregated
 * objects of those fields, or arrays of either (all the same length).
 * Numbers come out as JavaScript prints them (3, not 3.0). Errors as
 * mapjs_map's, with the message in mapjs_errmsg().
 */
int mapjs_reduce(struct mapjs *m, int fn, const struct mapjs_row *rows,
		 size_t n, bool rereduce, char **out, size_t *outlen);

/* Stop the time limit's timer until the next call: for a thread that
 * is done with JavaScript for a while (an indexer between batches).
 * NULL is a no-op. */
void mapjs_idle(struct mapjs *m);

/* The message of m's latest failed call ("" if none); borrowed from m. */
const char *mapjs_errmsg(const struct mapjs *m);

/* How many times m's heap was discarded and rebuilt (after a limit). */
unsigned long mapjs_resets(const struct mapjs *m);

#endif
