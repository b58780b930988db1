#include "config.h"
#include "engine/bbuf.h"
#include "engine/mapjs.h"

#include <dlfcn.h>
#include <duktape.h>
#include <errno.h>
#include <json-c/json.h>
#include <link.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "engine/error.h"

/*
 * Layout of this file:
 *  1. growable byte strings
 *  2. the process-wide part of the sandbox: the signal handler and where
 *     duktape's code is
 *  3. the heap's allocator (counts, refuses past the limit, can free
 *     everything at once)
 *  4. guarded runs: the timer, sigsetjmp, discarding the heap
 *  5. the heap: globals, helpers, compiling
 *  6. map, reduce (JavaScript), the public calls
 *  7. the built-in reduces, in C on json-c
 */

/* ---- 1. JSON text into byte strings (engine/bbuf.h) ---- */

/* s as a JSON string (quotes, escapes; UTF-8 passes as is). */
static int sbuf_json_string(struct bbuf *b, const char *s, size_t n)
{
	int rc = bbuf_add(b, "\"", 1);

	for (size_t i = 0; rc == 0 && i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			rc = bbuf_add(b, esc, 2);
		} else if (c < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			rc = bbuf_add(b, esc, 6);
		} else {
			rc = bbuf_add(b, &s[i], 1);
		}
	}
	return rc ? rc : bbuf_add(b, "\"", 1);
}

/*
 * Copy duktape's string s[0..n) to dst as UTF-8: duktape keeps
 * characters built from surrogate escapes as CESU-8; a pair becomes its
 * 4-byte form, a lone surrogate U+FFFD. Writes at most n bytes.
 */
static size_t utf8_from_cesu(char *dst, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, o = 0;

	while (i < n) {
		bool hi = n - i >= 3 && u[i] == 0xed && (u[i + 1] & 0xf0) == 0xa0;
		bool lo = n - i >= 3 && u[i] == 0xed && (u[i + 1] & 0xf0) == 0xb0;

		if (hi && n - i >= 6 && u[i + 3] == 0xed &&
		    (u[i + 4] & 0xf0) == 0xb0) {
			uint32_t h = 0xd000u | ((u[i + 1] & 0x3fu) << 6) |
				     (u[i + 2] & 0x3fu);
			uint32_t l = 0xd000u | ((u[i + 4] & 0x3fu) << 6) |
				     (u[i + 5] & 0x3fu);
			uint32_t cp = 0x10000u + ((h - 0xd800u) << 10) +
				      (l - 0xdc00u);

			dst[o++] = (char)(0xf0 | (cp >> 18));
			dst[o++] = (char)(0x80 | ((cp >> 12) & 0x3f));
			dst[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			dst[o++] = (char)(0x80 | (cp & 0x3f));
			i += 6;
		} else if (hi || lo) {
			memcpy(dst + o, "\xef\xbf\xbd", 3);
			o += 3;
			i += 3;
		} else {
			dst[o++] = s[i++];
		}
	}
	return o;
}

/* ---- 2. the process-wide part ---- */

enum { JUMP_TIME = 1, JUMP_FATAL = 2 };

/*
 * One guarded run (section 4) of the calling thread. The signal handler
 * reads it; nojump counts the critical sections we are in (allocator,
 * helpers: C that holds libc state); pending says the limit passed while
 * a jump was not safe.
 */
struct jsrun {
	sigjmp_buf jb;
	struct mapjs *m;
	volatile sig_atomic_t nojump;
	volatile sig_atomic_t pending;
	volatile sig_atomic_t fired;
	volatile sig_atomic_t done;
	volatile sig_atomic_t ticks;   /* of the timer since the run began */
};

static _Thread_local struct jsrun *tls_run;
static _Thread_local pid_t tls_tid;
static _Thread_local bool tls_unblocked;   /* MAPJS_SIGNAL, in this thread */

/* The executable code of libduktape: a jump is safe only from there. */
struct range {
	uintptr_t lo, hi;
};
static struct range duk_text[8];
static int duk_ntext;
static pthread_once_t sandbox_once = PTHREAD_ONCE_INIT;
static int sandbox_err;

static void text_add(struct dl_phdr_info *info)
{
	for (int i = 0; i < info->dlpi_phnum && duk_ntext < 8; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];

		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
			continue;
		duk_text[duk_ntext].lo = info->dlpi_addr + ph->p_vaddr;
		duk_text[duk_ntext].hi = duk_text[duk_ntext].lo + ph->p_memsz;
		duk_ntext++;
	}
}

static int phdr_by_name(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	(void)arg;
	if (info->dlpi_name && strstr(info->dlpi_name, "libduktape")) {
		text_add(info);
		return 1;
	}
	return 0;
}

/* Fallback (duktape linked in): the object holding duk_create_heap. */
static int phdr_by_addr(struct dl_phdr_info *info, size_t size, void *arg)
{
	uintptr_t want = (uintptr_t)arg;

	(void)size;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;

		if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) &&
		    want >= lo && want < lo + ph->p_memsz) {
			text_add(info);
			return 1;
		}
	}
	return 0;
}

static bool pc_in_duktape(void *ucv)
{
	ucontext_t *uc = ucv;
	uintptr_t pc;

#if defined(__x86_64__)
	pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
	pc = (uintptr_t)uc->uc_mcontext.pc;
#else
	(void)uc;
	return true;     /* no PC: jump (documented in DESIGN.md) */
#endif
	for (int i = 0; i < duk_ntext; i++)
		if (pc >= duk_text[i].lo && pc < duk_text[i].hi)
			return true;
	return duk_ntext == 0;
}

/* Fire after first_ms of CPU time, then every every_ms (0: once). */
static void timer_arm(timer_t t, unsigned first_ms, unsigned every_ms)
{
	struct itimerspec its;

	memset(&its, 0, sizeof(its));
	its.it_value.tv_sec = first_ms / 1000;
	its.it_value.tv_nsec = (long)(first_ms % 1000) * 1000000L;
	its.it_interval.tv_sec = every_ms / 1000;
	its.it_interval.tv_nsec = (long)(every_ms % 1000) * 1000000L;
	timer_settime(t, 0, &its, NULL);
}

static void timer_disarm(timer_t t)
{
	struct itimerspec its;

	memset(&its, 0, sizeof(its));
	timer_settime(t, 0, &its, NULL);
}

struct mapjs_timer {
	timer_t id;
	bool ok;
	bool armed;          /* ticking (until mapjs_idle) */
	unsigned tick_ms;    /* timeout_ms / MAPJS_TICKS, at least 1 */
	pid_t tid;           /* the thread whose CPU time it measures */
};

/* A run is over its time when more than this many ticks came in it. */
#define MAPJS_TICKS 8

static timer_t run_timer(const struct jsrun *r);
static unsigned run_tick(const struct jsrun *r);

/* MAPJS_SIGNAL: the time limit of the thread's current run passed. */
static void on_signal(int sig, siginfo_t *si, void *uc)
{
	struct jsrun *r = tls_run;
	int saved = errno;

	(void)sig;
	if (!r || r->done || si->si_code != SI_TIMER ||
	    ++r->ticks <= MAPJS_TICKS)
		return;
	r->fired = 1;
	if (r->nojump == 0 && pc_in_duktape(uc))
		siglongjmp(r->jb, JUMP_TIME);
	r->pending = 1;
	timer_arm(run_timer(r), 1, run_tick(r));
	errno = saved;
}

static void sandbox_init(void)
{
	struct sigaction sa;

	dl_iterate_phdr(phdr_by_name, NULL);
	if (duk_ntext == 0)
		dl_iterate_phdr(phdr_by_addr, (void *)(uintptr_t)&duk_create_heap);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_signal;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(MAPJS_SIGNAL, &sa, NULL) < 0)
		sandbox_err = -errno;
}

/* ---- 3. the heap's allocator ---- */

/* Header of every block of a heap: a ring through the mapjs. */
union blk {
	struct {
		union blk *prev, *next;
		size_t size;
	} h;
	max_align_t align;
};

enum fn_kind { FN_MAP, FN_REDUCE, FN_COUNT, FN_SUM, FN_STATS };
enum mode { MODE_BUILD, MODE_MAP, MODE_REDUCE };

struct jsfn {
	enum fn_kind kind;
	char *src;               /* "(" source ")", owned; NULL: built-in */
	size_t len;
};

struct kvoff {
	size_t key, keylen, value, valuelen;
};

struct mapjs {
	struct mapjs_opts opts;
	duk_context *ctx;        /* NULL until built, and after a discard */
	union blk ring;          /* the heap's blocks */
	size_t used;             /* bytes the heap holds */
	bool refused;            /* the allocator said no in this run */
	unsigned long resets;
	struct mapjs_timer timer;

	struct jsfn *fns;        /* every function, numbered by index */
	size_t nfns;

	/* the current run */
	enum mode mode;
	int cur_fn;
	bool stage_called;       /* the input decoded; the function called */
	const char *doc;         /* borrowed for mapjs_map */
	size_t doclen;
	bool rereduce;
	struct bbuf keys, values; /* a reduce's arguments as JSON */
	struct bbuf out;          /* a JavaScript reduce's result */
	size_t emit_start;        /* text.len when the function began */

	/* mapjs_map's results: offsets into text until the end */
	struct bbuf text;
	struct kvoff *kvo;
	size_t nkv, capkv;
	struct mapjs_kv *kv;
	size_t capkvp;
	struct mapjs_result *res;
	size_t *resoff;          /* per result: first kv, msg offset */
	size_t *msgoff;
	size_t capres;

	struct bbuf logs;        /* (size_t len, bytes) records of log() */
	char msg[MAPJS_MSGLEN];
};

static timer_t run_timer(const struct jsrun *r)
{
	return r->m->timer.id;
}

static unsigned run_tick(const struct jsrun *r)
{
	return r->m->timer.tick_ms;
}

/* Enter/leave C that holds libc state: no jump from the handler inside;
 * a jump the handler deferred happens at the leave. */
static struct jsrun *crit_enter(void)
{
	struct jsrun *r = tls_run;

	if (r)
		r->nojump++;
	atomic_signal_fence(memory_order_seq_cst);
	return r;
}

static void crit_leave(struct jsrun *r)
{
	atomic_signal_fence(memory_order_seq_cst);
	if (!r)
		return;
	r->nojump--;
	if (r->nojump == 0 && r->pending && !r->done)
		siglongjmp(r->jb, JUMP_TIME);
}

static void ring_link(struct mapjs *m, union blk *b)
{
	b->h.next = m->ring.h.next;
	b->h.prev = &m->ring;
	m->ring.h.next->h.prev = b;
	m->ring.h.next = b;
}

static void ring_unlink(union blk *b)
{
	b->h.prev->h.next = b->h.next;
	b->h.next->h.prev = b->h.prev;
}

static bool over_limit(struct mapjs *m, size_t add)
{
	if (add > m->opts.mem_limit || m->used > m->opts.mem_limit - add) {
		m->refused = true;
		return true;
	}
	return false;
}

static void *js_alloc(void *udata, duk_size_t size)
{
	struct mapjs *m = udata;
	struct jsrun *r;
	union blk *b = NULL;

	if (over_limit(m, size))
		return NULL;
	r = crit_enter();
	if (size <= SIZE_MAX - sizeof(*b))
		b = malloc(sizeof(*b) + size);
	if (b) {
		b->h.size = size;
		m->used += size;
		ring_link(m, b);
	}
	crit_leave(r);
	return b ? b + 1 : NULL;
}

static void js_free(void *udata, void *ptr)
{
	struct mapjs *m = udata;
	struct jsrun *r;
	union blk *b;

	if (!ptr)
		return;
	b = (union blk *)ptr - 1;
	r = crit_enter();
	ring_unlink(b);
	m->used -= b->h.size;
	free(b);
	crit_leave(r);
}

static void *js_realloc(void *udata, void *ptr, duk_size_t size)
{
	struct mapjs *m = udata;
	struct jsrun *r;
	union blk *b, *nb;

	if (!ptr)
		return js_alloc(udata, size);
	b = (union blk *)ptr - 1;
	if (size > b->h.size && over_limit(m, size - b->h.size))
		return NULL;
	if (size > SIZE_MAX - sizeof(*b))
		return NULL;
	r = crit_enter();
	ring_unlink(b);
	nb = realloc(b, sizeof(*b) + size);
	if (!nb) {
		ring_link(m, b);
	} else {
		m->used = m->used - nb->h.size + size;
		nb->h.size = size;
		ring_link(m, nb);
	}
	crit_leave(r);
	return nb ? nb + 1 : NULL;
}

/* Free every block of the heap: its end, without running anything. */
static void heap_discard(struct mapjs *m)
{
	union blk *b = m->ring.h.next;

	while (b != &m->ring) {
		union blk *next = b->h.next;

		free(b);
		b = next;
	}
	m->ring.h.next = m->ring.h.prev = &m->ring;
	m->used = 0;
	if (m->ctx)
		m->resets++;
	m->ctx = NULL;
}

/* ---- 4. guarded runs ---- */

static void on_fatal(void *udata, const char *msg)
{
	struct mapjs *m = udata;
	struct jsrun *r = tls_run;

	snprintf(m->msg, sizeof(m->msg), "fatal: %s", msg ? msg : "?");
	if (r && r->m == m)
		siglongjmp(r->jb, JUMP_FATAL);
	abort();     /* duktape outside a run: cannot happen */
}

/* The timer of the calling thread's CPU time, made on first use. */
static int timer_ensure(struct mapjs *m)
{
	struct sigevent sev;
	clockid_t cid;
	sigset_t set;

	if (!tls_tid)
		tls_tid = gettid();
	if (!tls_unblocked) {
		sigemptyset(&set);
		sigaddset(&set, MAPJS_SIGNAL);
		pthread_sigmask(SIG_UNBLOCK, &set, NULL);
		tls_unblocked = true;
	}
	if (m->timer.ok && m->timer.tid == tls_tid)
		return 0;
	if (m->timer.ok)
		timer_delete(m->timer.id);
	m->timer.ok = m->timer.armed = false;
	m->timer.tick_ms = m->opts.timeout_ms / MAPJS_TICKS;
	if (!m->timer.tick_ms)
		m->timer.tick_ms = 1;
	if (pthread_getcpuclockid(pthread_self(), &cid) != 0)
		return -EINVAL;
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = MAPJS_SIGNAL;
#ifdef sigev_notify_thread_id
	sev.sigev_notify_thread_id = tls_tid;
#else
	sev._sigev_un._tid = tls_tid;
#endif
	if (timer_create(cid, &sev, &m->timer.id) < 0)
		return -errno;
	m->timer.ok = true;
	m->timer.tid = tls_tid;
	return 0;
}

typedef int (*run_body)(struct mapjs *m);

static void run_end(struct jsrun *r)
{
	r->done = 1;
	atomic_signal_fence(memory_order_seq_cst);
	tls_run = NULL;
}

/* After a jump: the heap may be torn; it goes, whole. */
static int run_aborted(struct mapjs *m, struct jsrun *r, int how)
{
	sigset_t set;

	run_end(r);
	sigemptyset(&set);
	sigaddset(&set, MAPJS_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);   /* left blocked by the
	                                               handler we jumped from */
	heap_discard(m);
	if (how == JUMP_TIME) {
		snprintf(m->msg, sizeof(m->msg), "time limit of %u ms exceeded",
			 m->opts.timeout_ms);
		return -ETIMEDOUT;
	}
	if (m->refused) {
		snprintf(m->msg, sizeof(m->msg), "memory limit of %zu bytes "
			 "exceeded", m->opts.mem_limit);
		return BARREL_E_TOOBIG;
	}
	return BARREL_E_INVALID;    /* m->msg from on_fatal */
}

/*
 * Run body (all of whose duktape calls are protected) under the time
 * limit. A body reports failure by its return and m->msg. When the
 * heap's allocator refused memory during a failed run, the heap goes.
 */
static int run_guarded(struct mapjs *m, run_body body)
{
	struct jsrun r;
	int rc;

	memset(&r, 0, sizeof(r));
	r.m = m;
	m->refused = false;
	tls_run = &r;
	switch (sigsetjmp(r.jb, 0)) {
	case 0:
		break;
	case JUMP_TIME:
		return run_aborted(r.m, &r, JUMP_TIME);
	default:
		return run_aborted(r.m, &r, JUMP_FATAL);
	}
	if (!m->timer.armed) {
		timer_arm(m->timer.id, m->timer.tick_ms, m->timer.tick_ms);
		m->timer.armed = true;
	}
	rc = body(m);
	run_end(&r);
	if (rc < 0 && m->refused) {
		heap_discard(m);
		snprintf(m->msg, sizeof(m->msg), "memory limit of %zu bytes "
			 "exceeded", m->opts.mem_limit);
		rc = BARREL_E_TOOBIG;
	}
	return rc;
}

/* The message of the error at the top of the stack, into m->msg. */
static void take_error(struct mapjs *m, duk_context *ctx)
{
	snprintf(m->msg, sizeof(m->msg), "%s", duk_safe_to_string(ctx, -1));
}

/* Give the log() messages of the last run to the callback. */
static void logs_deliver(struct mapjs *m, int fn)
{
	size_t off = 0;

	while (m->opts.log && off + sizeof(size_t) <= m->logs.len) {
		size_t len;

		memcpy(&len, m->logs.p + off, sizeof(len));
		off += sizeof(len);
		m->opts.log(m->opts.log_arg, fn, m->logs.p + off, len);
		off += len + 1;
	}
	m->logs.len = 0;
}

/* ---- 5. the heap ---- */

/* JSON text of the value at idx (replaced by it); undefined: "null". */
static const char *js_json(duk_context *ctx, duk_idx_t idx, size_t *len)
{
	const char *s;

	duk_json_encode(ctx, idx);
	s = duk_get_lstring(ctx, idx, len);
	if (!s) {
		*len = 4;
		return "null";
	}
	return s;
}

/* Append s to m->text as UTF-8 with a NUL; its offset in *off. */
static int text_put(struct mapjs *m, const char *s, size_t n, size_t *off)
{
	int rc = bbuf_reserve(&m->text, n + 1);

	if (rc < 0)
		return rc;
	*off = m->text.len;
	m->text.len += utf8_from_cesu(m->text.p + m->text.len, s, n);
	m->text.p[m->text.len++] = '\0';
	return 0;
}

static int emit_store(struct mapjs *m, const char *k, size_t klen,
		      const char *v, size_t vlen)
{
	struct kvoff *kv;
	int rc;

	if (m->text.len - m->emit_start + klen + vlen + 2 > m->opts.emit_limit)
		return BARREL_E_TOOBIG;
	if (m->nkv == m->capkv) {
		size_t cap = m->capkv ? 2 * m->capkv : 64;

		kv = realloc(m->kvo, cap * sizeof(*kv));
		if (!kv)
			return -ENOMEM;
		m->kvo = kv;
		m->capkv = cap;
	}
	kv = &m->kvo[m->nkv];
	rc = text_put(m, k, klen, &kv->key);
	if (rc == 0)
		rc = text_put(m, v, vlen, &kv->value);
	if (rc < 0)
		return rc;
	kv->keylen = strlen(m->text.p + kv->key);
	kv->valuelen = strlen(m->text.p + kv->value);
	m->nkv++;
	return 0;
}

static duk_ret_t js_emit(duk_context *ctx)
{
	struct jsrun *r = tls_run;
	struct mapjs *m = r->m;
	const char *k, *v;
	size_t klen, vlen;
	int rc;

	if (m->mode != MODE_MAP)
		return duk_error(ctx, DUK_ERR_ERROR,
				 "emit() is for map functions");
	duk_set_top(ctx, 2);
	k = js_json(ctx, 0, &klen);
	v = js_json(ctx, 1, &vlen);
	r = crit_enter();
	rc = emit_store(m, k, klen, v, vlen);
	crit_leave(r);
	if (rc == BARREL_E_TOOBIG)
		return duk_error(ctx, DUK_ERR_RANGE_ERROR,
				 "emit limit of %lu bytes per document",
				 (unsigned long)m->opts.emit_limit);
	if (rc < 0)
		return duk_error(ctx, DUK_ERR_ERROR, "out of memory");
	return 0;
}

static void log_store(struct mapjs *m, const char *s, size_t n)
{
	size_t need = sizeof(n) + n + 1, at = m->logs.len, len;

	if (m->logs.len + need > MAPJS_LOG_LIMIT ||
	    bbuf_reserve(&m->logs, need) < 0)
		return;
	len = utf8_from_cesu(m->logs.p + at + sizeof(len), s, n);
	memcpy(m->logs.p + at, &len, sizeof(len));
	m->logs.len = at + sizeof(len) + len;
	m->logs.p[m->logs.len++] = '\0';
}

static duk_ret_t js_log(duk_context *ctx)
{
	struct jsrun *r = tls_run;
	const char *s;
	size_t n;

	duk_set_top(ctx, 1);
	if (!duk_is_string(ctx, 0)) {
		duk_dup(ctx, 0);
		duk_json_encode(ctx, -1);
		if (!duk_is_string(ctx, -1))
			duk_safe_to_string(ctx, 0);
		else
			duk_replace(ctx, 0);
	}
	s = duk_get_lstring(ctx, 0, &n);
	r = crit_enter();
	log_store(r->m, s ? s : "", s ? n : 0);
	crit_leave(r);
	return 0;
}

/* Removes what is not ECMAScript; defines CouchDB's helpers. */
static const char sandbox_js[] =
	"(function (g) {\n"
	"  ['Duktape', 'performance', 'TextEncoder', 'TextDecoder',\n"
	"   'CBOR', 'Buffer', 'print', 'alert', 'require', 'module',\n"
	"   'exports'].forEach(\n"
	"    function (n) { delete g[n]; });\n"
	"  g.sum = function (values) {\n"
	"    var s = 0;\n"
	"    for (var i = 0; i < values.length; i++) s += values[i];\n"
	"    return s;\n"
	"  };\n"
	"  g.isArray = function (v) { return Array.isArray(v); };\n"
	"  g.toJSON = function (v) { return JSON.stringify(v); };\n"
	"})";

static duk_ret_t build_globals(duk_context *ctx, void *udata)
{
	(void)udata;
	duk_push_c_function(ctx, js_emit, 2);
	duk_put_global_string(ctx, "emit");
	duk_push_c_function(ctx, js_log, 1);
	duk_put_global_string(ctx, "log");
	duk_eval_string(ctx, sandbox_js);
	duk_push_global_object(ctx);
	duk_call(ctx, 1);
	return 0;
}

/* Compile function number m->cur_fn into the stash. */
static duk_ret_t compile_fn(duk_context *ctx, void *udata)
{
	struct mapjs *m = udata;
	const struct jsfn *f = &m->fns[m->cur_fn];

	duk_push_global_stash(ctx);
	duk_push_string(ctx, "view");     /* the file name in messages */
	duk_compile_lstring_filename(ctx, DUK_COMPILE_EVAL, f->src, f->len);
	duk_call(ctx, 0);
	if (!duk_is_function(ctx, -1))
		return duk_error(ctx, DUK_ERR_TYPE_ERROR,
				 "the source is not a function expression");
	duk_put_prop_index(ctx, -2, (duk_uarridx_t)m->cur_fn);
	return 0;
}

static int compile_body(struct mapjs *m)
{
	if (duk_safe_call(m->ctx, compile_fn, m, 0, 1) != DUK_EXEC_SUCCESS) {
		take_error(m, m->ctx);
		duk_pop(m->ctx);
		return BARREL_E_INVALID;
	}
	duk_pop(m->ctx);
	return 0;
}

static int build_body(struct mapjs *m)
{
	duk_context *ctx = duk_create_heap(js_alloc, js_realloc, js_free, m,
					   on_fatal);

	if (!ctx) {
		snprintf(m->msg, sizeof(m->msg), "cannot create a JS heap");
		return m->refused ? BARREL_E_TOOBIG : -ENOMEM;
	}
	m->ctx = ctx;
	if (duk_safe_call(ctx, build_globals, NULL, 0, 1) != DUK_EXEC_SUCCESS) {
		take_error(m, ctx);
		return BARREL_E_INVALID;
	}
	duk_pop(ctx);
	for (size_t i = 0; i < m->nfns; i++) {
		if (!m->fns[i].src)
			continue;
		m->cur_fn = (int)i;
		compile_body(m);     /* compiled once before: a failure now
		                        shows when the function is called */
	}
	return 0;
}

/* The heap, built (again) when needed. */
static int heap_ensure(struct mapjs *m)
{
	int rc;

	if (m->ctx)
		return 0;
	m->mode = MODE_BUILD;
	rc = run_guarded(m, build_body);
	logs_deliver(m, -1);
	if (rc < 0)
		heap_discard(m);
	return rc;
}

/* ---- 6. map, reduce, the public calls ---- */

/* Map: the function m->cur_fn on a fresh decode of the document. */
static duk_ret_t map_call(duk_context *ctx, void *udata)
{
	struct mapjs *m = udata;

	duk_push_global_stash(ctx);
	duk_get_prop_index(ctx, -1, (duk_uarridx_t)m->cur_fn);
	duk_push_lstring(ctx, m->doc, m->doclen);
	duk_json_decode(ctx, -1);
	if (!duk_is_object(ctx, -1) || duk_is_array(ctx, -1) ||
	    duk_is_function(ctx, -1))
		return duk_error(ctx, DUK_ERR_TYPE_ERROR,
				 "the document is not a JSON object");
	m->stage_called = true;
	duk_call(ctx, 1);
	return 0;
}

static int map_body(struct mapjs *m)
{
	duk_context *ctx = m->ctx;
	int rc = 0;

	m->stage_called = false;
	if (duk_safe_call(ctx, map_call, m, 0, 1) != DUK_EXEC_SUCCESS) {
		take_error(m, ctx);
		rc = m->stage_called ? BARREL_E_INVALID : BARREL_E_BADJSON;
	}
	duk_pop(ctx);
	return rc;
}

static int res_reserve(struct mapjs *m, size_t n)
{
	struct mapjs_result *res;
	size_t *ro, *mo;

	if (n <= m->capres)
		return 0;
	res = realloc(m->res, n * sizeof(*res));
	if (res)
		m->res = res;
	ro = realloc(m->resoff, n * sizeof(*ro));
	if (ro)
		m->resoff = ro;
	mo = realloc(m->msgoff, n * sizeof(*mo));
	if (mo)
		m->msgoff = mo;
	if (!res || !ro || !mo)
		return -ENOMEM;
	m->capres = n;
	return 0;
}

/* One map function on the document: its emits, or its error. */
static int map_one(struct mapjs *m, int fn, size_t i)
{
	size_t nkv0 = m->nkv, text0 = m->text.len;
	int rc;

	m->res[i].fn = fn;
	m->resoff[i] = nkv0;
	m->emit_start = text0;
	rc = heap_ensure(m);
	if (rc == 0) {
		m->mode = MODE_MAP;
		m->cur_fn = fn;
		rc = run_guarded(m, map_body);
	}
	logs_deliver(m, fn);
	m->res[i].err = rc;
	m->msgoff[i] = SIZE_MAX;
	if (rc < 0) {
		m->nkv = nkv0;
		m->text.len = text0;
		if (text_put(m, m->msg, strlen(m->msg), &m->msgoff[i]) < 0)
			m->msgoff[i] = SIZE_MAX;
	}
	return rc;
}

/* Offsets into pointers, now that text will not move. */
static int map_finish(struct mapjs *m, size_t nres)
{
	if (m->nkv > m->capkvp) {
		struct mapjs_kv *kv = realloc(m->kv, m->nkv * sizeof(*kv));

		if (!kv)
			return -ENOMEM;
		m->kv = kv;
		m->capkvp = m->nkv;
	}
	for (size_t j = 0; j < m->nkv; j++) {
		m->kv[j].key = m->text.p + m->kvo[j].key;
		m->kv[j].keylen = m->kvo[j].keylen;
		m->kv[j].value = m->text.p + m->kvo[j].value;
		m->kv[j].valuelen = m->kvo[j].valuelen;
	}
	for (size_t i = 0; i < nres; i++) {
		size_t end = i + 1 < nres ? m->resoff[i + 1] : m->nkv;

		m->res[i].kv = m->kv ? m->kv + m->resoff[i] : NULL;
		m->res[i].nkv = end - m->resoff[i];
		m->res[i].msg = m->msgoff[i] == SIZE_MAX
					? "" : m->text.p + m->msgoff[i];
	}
	return 0;
}

int mapjs_map(struct mapjs *m, const char *doc, size_t len,
	      const struct mapjs_result **res, size_t *nres)
{
	size_t n = 0;
	int rc;

	m->msg[0] = '\0';
	m->nkv = 0;
	m->text.len = 0;
	rc = timer_ensure(m);
	if (rc == 0)
		rc = res_reserve(m, m->nfns);
	if (rc < 0)
		return rc;
	m->doc = doc;
	m->doclen = len;
	for (size_t i = 0; i < m->nfns; i++) {
		if (m->fns[i].kind != FN_MAP)
			continue;
		rc = map_one(m, (int)i, n++);
		if (rc == BARREL_E_BADJSON || rc == -ENOMEM)
			return rc;
	}
	rc = map_finish(m, n);
	if (rc < 0)
		return rc;
	*res = m->res;
	*nres = n;
	return 0;
}

/* Store the source of a function of kind k; its number. */
static int fn_add(struct mapjs *m, enum fn_kind k, const char *src,
		  size_t len)
{
	struct jsfn *fns = realloc(m->fns, (m->nfns + 1) * sizeof(*fns));
	struct jsfn *f;

	if (!fns)
		return -ENOMEM;
	m->fns = fns;
	f = &fns[m->nfns];
	memset(f, 0, sizeof(*f));
	f->kind = k;
	if (k == FN_MAP || k == FN_REDUCE) {
		f->src = malloc(len + 4);
		if (!f->src)
			return -ENOMEM;
		f->src[0] = '(';
		memcpy(f->src + 1, src, len);
		memcpy(f->src + 1 + len, "\n)", 3);
		f->len = len + 3;
	}
	return (int)m->nfns++;
}

/* Compile the function just stored; drop it again if it fails. */
static int fn_compile(struct mapjs *m, int fn)
{
	int rc = timer_ensure(m);

	if (rc == 0)
		rc = heap_ensure(m);
	if (rc == 0) {
		m->cur_fn = fn;
		m->mode = MODE_BUILD;
		rc = run_guarded(m, compile_body);
		logs_deliver(m, fn);
	}
	if (rc < 0) {
		free(m->fns[fn].src);
		m->nfns--;
		return rc;
	}
	return fn;
}

int mapjs_add_map(struct mapjs *m, const char *src, size_t len)
{
	int fn;

	m->msg[0] = '\0';
	fn = fn_add(m, FN_MAP, src, len);
	return fn < 0 ? fn : fn_compile(m, fn);
}

static bool src_is(const char *src, size_t len, const char *name)
{
	return len == strlen(name) && memcmp(src, name, len) == 0;
}

int mapjs_add_reduce(struct mapjs *m, const char *src, size_t len)
{
	static const struct {
		const char *name;
		enum fn_kind kind;
	} builtins[] = {
		{ "_count", FN_COUNT }, { "_sum", FN_SUM }, { "_stats", FN_STATS },
	};
	int fn;

	m->msg[0] = '\0';
	while (len > 0 && (src[len - 1] == ' ' || src[len - 1] == '\n'))
		len--;
	for (size_t i = 0; i < 3; i++)
		if (src_is(src, len, builtins[i].name))
			return fn_add(m, builtins[i].kind, NULL, 0);
	if (len > 0 && src[0] == '_') {
		snprintf(m->msg, sizeof(m->msg), "unknown built-in reduce "
			 "function %.*s", (int)(len > 64 ? 64 : len), src);
		return BARREL_E_INVALID;
	}
	fn = fn_add(m, FN_REDUCE, src, len);
	return fn < 0 ? fn : fn_compile(m, fn);
}

static duk_ret_t reduce_call(duk_context *ctx, void *udata)
{
	struct mapjs *m = udata;
	struct jsrun *r;
	const char *s;
	size_t n;

	duk_push_global_stash(ctx);
	duk_get_prop_index(ctx, -1, (duk_uarridx_t)m->cur_fn);
	if (m->rereduce) {
		duk_push_null(ctx);
	} else {
		duk_push_lstring(ctx, m->keys.p, m->keys.len);
		duk_json_decode(ctx, -1);
	}
	duk_push_lstring(ctx, m->values.p, m->values.len);
	duk_json_decode(ctx, -1);
	duk_push_boolean(ctx, m->rereduce);
	m->stage_called = true;
	duk_call(ctx, 3);
	s = js_json(ctx, -1, &n);
	r = crit_enter();
	m->out.len = 0;
	if (bbuf_reserve(&m->out, n + 1) == 0) {
		m->out.len = utf8_from_cesu(m->out.p, s, n);
		m->out.p[m->out.len] = '\0';
	}
	crit_leave(r);
	return 0;
}

static int reduce_body(struct mapjs *m)
{
	int rc = 0;

	m->stage_called = false;
	if (duk_safe_call(m->ctx, reduce_call, m, 0, 1) != DUK_EXEC_SUCCESS) {
		take_error(m, m->ctx);
		rc = m->stage_called ? BARREL_E_INVALID : BARREL_E_BADJSON;
	}
	duk_pop(m->ctx);
	return rc;
}

/* The arguments of a JavaScript reduce as JSON text in m->keys/values. */
static int reduce_args(struct mapjs *m, const struct mapjs_row *rows,
		       size_t n)
{
	int rc = 0;

	m->keys.len = m->values.len = 0;
	rc = bbuf_adds(&m->keys, "[");
	if (rc == 0)
		rc = bbuf_adds(&m->values, "[");
	for (size_t i = 0; rc == 0 && i < n; i++) {
		const char *sep = i ? "," : "";

		rc = bbuf_adds(&m->values, sep);
		if (rc == 0)
			rc = bbuf_add(&m->values, rows[i].value,
				      rows[i].valuelen);
		if (rc || m->rereduce)
			continue;
		rc = bbuf_adds(&m->keys, i ? ",[" : "[");
		if (rc == 0)
			rc = bbuf_add(&m->keys, rows[i].key, rows[i].keylen);
		if (rc == 0)
			rc = bbuf_adds(&m->keys, ",");
		if (rc == 0)
			rc = sbuf_json_string(&m->keys, rows[i].id,
					      rows[i].idlen);
		if (rc == 0)
			rc = bbuf_adds(&m->keys, "]");
	}
	if (rc == 0)
		rc = bbuf_adds(&m->keys, "]");
	if (rc == 0)
		rc = bbuf_adds(&m->values, "]");
	return rc;
}

static int reduce_js(struct mapjs *m, int fn, const struct mapjs_row *rows,
		     size_t n, char **out, size_t *outlen)
{
	int rc = timer_ensure(m);

	if (rc == 0)
		rc = reduce_args(m, rows, n);
	if (rc == 0)
		rc = heap_ensure(m);
	if (rc < 0)
		return rc;
	m->mode = MODE_REDUCE;
	m->cur_fn = fn;
	m->out.len = 0;
	rc = run_guarded(m, reduce_body);
	logs_deliver(m, fn);
	if (rc < 0)
		return rc;
	*out = strndup(m->out.p ? m->out.p : "null", m->out.p ? m->out.len : 4);
	if (!*out)
		return -ENOMEM;
	*outlen = strlen(*out);
	return 0;
}

static int reduce_builtin(struct mapjs *m, enum fn_kind k,
			  const struct mapjs_row *rows, size_t n,
			  bool rereduce, char **out, size_t *outlen);

int mapjs_reduce(struct mapjs *m, int fn, const struct mapjs_row *rows,
		 size_t n, bool rereduce, char **out, size_t *outlen)
{
	m->msg[0] = '\0';
	*out = NULL;
	*outlen = 0;
	if (fn < 0 || (size_t)fn >= m->nfns || m->fns[fn].kind == FN_MAP) {
		snprintf(m->msg, sizeof(m->msg), "no reduce function %d", fn);
		return BARREL_E_INVALID;
	}
	m->rereduce = rereduce;
	if (m->fns[fn].kind == FN_REDUCE)
		return reduce_js(m, fn, rows, n, out, outlen);
	return reduce_builtin(m, m->fns[fn].kind, rows, n, rereduce, out,
			      outlen);
}

int mapjs_new(const struct mapjs_opts *opts, struct mapjs **out)
{
	struct mapjs *m;

	pthread_once(&sandbox_once, sandbox_init);
	if (sandbox_err)
		return sandbox_err;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	if (opts)
		m->opts = *opts;
	if (!m->opts.timeout_ms)
		m->opts.timeout_ms = MAPJS_DEFAULT_TIMEOUT_MS;
	if (!m->opts.mem_limit)
		m->opts.mem_limit = MAPJS_DEFAULT_MEM_LIMIT;
	if (!m->opts.emit_limit)
		m->opts.emit_limit = MAPJS_DEFAULT_EMIT_LIMIT;
	m->ring.h.next = m->ring.h.prev = &m->ring;
	*out = m;
	return 0;
}

void mapjs_idle(struct mapjs *m)
{
	if (m && m->timer.ok && m->timer.armed) {
		timer_disarm(m->timer.id);
		m->timer.armed = false;
	}
}

void mapjs_free(struct mapjs *m)
{
	if (!m)
		return;
	heap_discard(m);
	if (m->timer.ok)
		timer_delete(m->timer.id);
	for (size_t i = 0; i < m->nfns; i++)
		free(m->fns[i].src);
	free(m->fns);
	bbuf_release(&m->keys);
	bbuf_release(&m->values);
	bbuf_release(&m->out);
	bbuf_release(&m->text);
	bbuf_release(&m->logs);
	free(m->kvo);
	free(m->kv);
	free(m->res);
	free(m->resoff);
	free(m->msgoff);
	free(m);
}

const char *mapjs_errmsg(const struct mapjs *m)
{
	return m->msg;
}

unsigned long mapjs_resets(const struct mapjs *m)
{
	return m->resets;
}

/* ---- 7. the built-in reduces ---- */

/* A number as JavaScript prints it: integers plain, else shortest. */
static struct json_object *num_new(double d)
{
	char buf[32];

	if (!isfinite(d))
		return NULL;     /* JSON.stringify: null */
	if (d == floor(d) && fabs(d) < 9007199254740992.0)
		return json_object_new_int64((int64_t)d);
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			break;
	}
	return json_object_new_double_s(d, buf);
}

static bool is_num(struct json_object *v)
{
	return json_object_is_type(v, json_type_int) ||
	       json_object_is_type(v, json_type_double);
}

static const char sum_error[] =
	"The _sum function requires that map values be numbers, arrays of "
	"numbers, or objects. Objects cannot be mixed with other data "
	"structures. Objects can be arbitrarily nested, provided that the "
	"values for all fields are themselves numbers, arrays of numbers, "
	"or objects.";

static int sum_value(struct json_object *acc, struct json_object *v,
		     struct json_object **out);

/* acc (an array, owned) += v (a number or an array of numbers). */
static int sum_array(struct json_object *acc, struct json_object *v)
{
	size_t n = is_num(v) ? 1 : json_object_array_length(v);

	for (size_t i = 0; i < n; i++) {
		struct json_object *x = is_num(v) ? v
						  : json_object_array_get_idx(v, i);
		struct json_object *a = json_object_array_get_idx(acc, i);
		double s;

		if (!is_num(x))
			return BARREL_E_INVALID;
		s = json_object_get_double(x) + (a ? json_object_get_double(a) : 0);
		if (json_object_array_put_idx(acc, i, num_new(s)) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int sum_object(struct json_object *acc, struct json_object *v)
{
	json_object_object_foreach(v, name, field) {
		struct json_object *a = NULL, *na = NULL;
		int rc;

		if (json_object_object_get_ex(acc, name, &a))
			json_object_get(a);
		rc = sum_value(a, field, &na);
		if (rc < 0)
			return rc;
		if (json_object_object_add(acc, name, na) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* *out := acc + v by _sum's rules; consumes acc (may be NULL). */
static int sum_value(struct json_object *acc, struct json_object *v,
		     struct json_object **out)
{
	int rc = 0;

	*out = NULL;
	if (json_object_is_type(v, json_type_object)) {
		if (!acc)
			acc = json_object_new_object();
		rc = json_object_is_type(acc, json_type_object)
			     ? sum_object(acc, v) : BARREL_E_INVALID;
	} else if (is_num(v) && (!acc || is_num(acc))) {
		double s = json_object_get_double(v) +
			   (acc ? json_object_get_double(acc) : 0);

		json_object_put(acc);
		acc = num_new(s);
	} else if (is_num(v) || json_object_is_type(v, json_type_array)) {
		if (!acc || is_num(acc)) {
			struct json_object *arr = json_object_new_array();

			if (acc)
				json_object_array_add(arr, acc);
			acc = arr;
		}
		rc = json_object_is_type(acc, json_type_array)
			     ? sum_array(acc, v) : BARREL_E_INVALID;
	} else {
		rc = BARREL_E_INVALID;
	}
	if (rc < 0) {
		json_object_put(acc);
		return rc;
	}
	*out = acc;
	return 0;
}

struct stats {
	double sum, count, min, max, sumsqr;
};

static bool stats_field(struct json_object *o, const char *name, double *d)
{
	struct json_object *f;

	if (!json_object_object_get_ex(o, name, &f) || !is_num(f))
		return false;
	*d = json_object_get_double(f);
	return true;
}

/* One number or pre-aggregated object as stats. */
static bool stats_of(struct json_object *v, struct stats *s)
{
	if (is_num(v)) {
		double d = json_object_get_double(v);

		*s = (struct stats){ d, 1, d, d, d * d };
		return true;
	}
	return json_object_is_type(v, json_type_object) &&
	       stats_field(v, "sum", &s->sum) &&
	       stats_field(v, "count", &s->count) &&
	       stats_field(v, "min", &s->min) &&
	       stats_field(v, "max", &s->max) &&
	       stats_field(v, "sumsqr", &s->sumsqr);
}

static void stats_merge(struct stats *acc, const struct stats *s, bool first)
{
	if (first) {
		*acc = *s;
		return;
	}
	acc->sum += s->sum;
	acc->count += s->count;
	acc->min = fmin(acc->min, s->min);
	acc->max = fmax(acc->max, s->max);
	acc->sumsqr += s->sumsqr;
}

static struct json_object *stats_json(const struct stats *s)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "sum", num_new(s->sum));
	json_object_object_add(o, "count", num_new(s->count));
	json_object_object_add(o, "min", num_new(s->min));
	json_object_object_add(o, "max", num_new(s->max));
	json_object_object_add(o, "sumsqr", num_new(s->sumsqr));
	return o;
}

/* Fold value v into acc[0..width) (width 0: v is not an array). */
static int stats_add(struct json_object *v, struct stats *acc, size_t width,
		     bool first, char *msg)
{
	struct stats s;

	if (width == 0) {
		if (!stats_of(v, &s))
			goto out_bad;
		stats_merge(acc, &s, first);
		return 0;
	}
	if (!json_object_is_type(v, json_type_array) ||
	    json_object_array_length(v) != width) {
		snprintf(msg, MAPJS_MSGLEN, "The _stats function requires "
			 "that all array values have the same length");
		return BARREL_E_INVALID;
	}
	for (size_t i = 0; i < width; i++) {
		if (!stats_of(json_object_array_get_idx(v, i), &s))
			goto out_bad;
		stats_merge(&acc[i], &s, first);
	}
	return 0;
out_bad:
	snprintf(msg, MAPJS_MSGLEN, "The _stats function requires that map "
		 "values be numbers or arrays of numbers, not '%.200s'",
		 json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
	return BARREL_E_INVALID;
}

/* The built-ins' state across the rows. */
struct fold {
	enum fn_kind kind;
	struct json_object *sum;     /* _sum, owned */
	double count;                /* _count */
	struct stats *st;            /* _stats: one, or one per element */
	size_t width;                /* 0: plain _stats */
	size_t rows;
};

static int fold_row(struct fold *f, struct json_object *v, bool rereduce,
		    char *msg)
{
	int rc = 0;

	if (f->kind == FN_COUNT) {
		if (!rereduce)
			f->count += 1;
		else if (is_num(v))
			f->count += json_object_get_double(v);
		else
			rc = BARREL_E_INVALID;
		if (rc < 0)
			snprintf(msg, MAPJS_MSGLEN, "_count: rereduce values "
				 "must be numbers");
		return rc;
	}
	if (f->kind == FN_SUM) {
		struct json_object *acc = f->sum;

		rc = sum_value(acc, v, &f->sum);
		if (rc == BARREL_E_INVALID)
			snprintf(msg, MAPJS_MSGLEN, "%s", sum_error);
		return rc;
	}
	if (f->rows == 0) {
		f->width = json_object_is_type(v, json_type_array)
				   ? json_object_array_length(v) : 0;
		f->st = calloc(f->width ? f->width : 1, sizeof(*f->st));
		if (!f->st)
			return -ENOMEM;
	}
	return stats_add(v, f->st, f->width, f->rows == 0, msg);
}

static struct json_object *fold_result(const struct fold *f)
{
	struct json_object *arr;

	switch (f->kind) {
	case FN_COUNT: return num_new(f->count);
	case FN_SUM: return f->sum ? json_object_get(f->sum) : num_new(0);
	default: break;
	}
	if (f->rows == 0)
		return stats_json(&(struct stats){ 0, 0, 0, 0, 0 });
	if (f->width == 0)
		return stats_json(f->st);
	arr = json_object_new_array();
	for (size_t i = 0; i < f->width; i++)
		json_object_array_add(arr, stats_json(&f->st[i]));
	return arr;
}

static bool all_space(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strchr(" \t\r\n", s[i]) || s[i] == '\0')
			return false;
	return true;
}

static int parse_value(const char *s, size_t len, struct json_object **v,
		       char *msg)
{
	struct json_tokener *tok = json_tokener_new();
	bool trailing = false;
	int rc = 0;

	if (!tok)
		return -ENOMEM;
	*v = len > INT32_MAX ? NULL : json_tokener_parse_ex(tok, s, (int)len);
	if (json_tokener_get_error(tok) == json_tokener_continue)
		*v = json_tokener_parse_ex(tok, " ", 1);   /* ends a number */
	else if (*v)
		trailing = !all_space(s + json_tokener_get_parse_end(tok),
				      len - json_tokener_get_parse_end(tok));
	if (json_tokener_get_error(tok) != json_tokener_success || trailing ||
	    len > INT32_MAX) {
		json_object_put(*v);
		*v = NULL;
		snprintf(msg, MAPJS_MSGLEN, "a reduce value is not JSON: %.60s",
			 s);
		rc = BARREL_E_BADJSON;
	}
	json_tokener_free(tok);
	return rc;
}

static int reduce_builtin(struct mapjs *m, enum fn_kind k,
			  const struct mapjs_row *rows, size_t n,
			  bool rereduce, char **out, size_t *outlen)
{
	struct fold f = { .kind = k };
	struct json_object *res;
	const char *text;
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < n; i++) {
		struct json_object *v = NULL;

		if (k == FN_COUNT && !rereduce) {
			f.count += 1;
			continue;
		}
		rc = parse_value(rows[i].value, rows[i].valuelen, &v, m->msg);
		if (rc == 0)
			rc = fold_row(&f, v, rereduce, m->msg);
		f.rows++;
		json_object_put(v);
	}
	if (rc < 0)
		goto out_free;
	res = fold_result(&f);
	text = json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN |
					      JSON_C_TO_STRING_NOSLASHESCAPE);
	*out = strdup(text ? text : "null");
	json_object_put(res);
	if (!*out)
		rc = -ENOMEM;
	else
		*outlen = strlen(*out);
out_free:
	json_object_put(f.sum);
	free(f.st);
	return rc;
}
