#include "config.h"

#include <check.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/btree.h"
#include "engine/cache.h"
#include "engine/error.h"
#include "engine/log.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

/*
 * Check's ck_assert_* report every passing check through a pipe, which
 * dominates loops of millions of checks; these call into Check only when
 * they fail.
 */
#define OK(c) do { \
	if (!(c)) \
		ck_abort_msg("assertion '%s' failed", #c); \
} while (0)
#define OKMSG(c, ...) do { \
	if (!(c)) \
		ck_abort_msg(__VA_ARGS__); \
} while (0)
#define CMP_(T, F, a, op, b) do { \
	T a_ = (T)(a), b_ = (T)(b); \
	if (!(a_ op b_)) \
		ck_abort_msg("'%s %s %s' failed: " F " vs " F, #a, #op, #b, \
			     a_, b_); \
} while (0)
#define EQ(a, b) CMP_(long long, "%lld", a, ==, b)
#define GE(a, b) CMP_(long long, "%lld", a, >=, b)
#define UEQ(a, b) CMP_(unsigned long long, "%llu", a, ==, b)
#define UGE(a, b) CMP_(unsigned long long, "%llu", a, >=, b)
#define UGT(a, b) CMP_(unsigned long long, "%llu", a, >, b)
#define ULE(a, b) CMP_(unsigned long long, "%llu", a, <=, b)
#define ULT(a, b) CMP_(unsigned long long, "%llu", a, <, b)
#define NONNULL(p) OK((p) != NULL)
#define ISNULL(p) OK((p) == NULL)

/* ---- an in-memory store: record i+1 is the i-th payload written ---- */

struct frec {
	uint8_t *buf;
	uint32_t len;
	bool released;
};

struct fstore {
	pthread_mutex_t lock;
	struct frec *rec;
	size_t n, cap;
	unsigned long reads, writes, released, bad_releases;
};

static struct fstore fs;
static struct bcache *cache;
static struct bt_store st;

static int fs_read(void *ctx, uint64_t addr, uint32_t size, void **buf,
		   uint32_t *len)
{
	struct fstore *f = ctx;
	int err = 0;

	pthread_mutex_lock(&f->lock);
	if (!addr || addr > f->n || f->rec[addr - 1].len != size) {
		err = BARREL_E_CORRUPT;
		goto out_unlock;
	}
	*buf = malloc(size ? size : 1);
	if (!*buf) {
		err = -12;
		goto out_unlock;
	}
	memcpy(*buf, f->rec[addr - 1].buf, size);
	*len = size;
	f->reads++;
out_unlock:
	pthread_mutex_unlock(&f->lock);
	return err;
}

static uint64_t fs_add(struct fstore *f, const void *buf, uint32_t len)
{
	uint64_t addr;

	pthread_mutex_lock(&f->lock);
	if (f->n == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 1024;
		f->rec = realloc(f->rec, f->cap * sizeof(*f->rec));
		NONNULL(f->rec);
	}
	f->rec[f->n].buf = malloc(len ? len : 1);
	NONNULL(f->rec[f->n].buf);
	memcpy(f->rec[f->n].buf, buf, len);
	f->rec[f->n].len = len;
	f->rec[f->n].released = false;
	addr = ++f->n;
	pthread_mutex_unlock(&f->lock);
	return addr;
}

static int fs_write(void *ctx, const void *buf, uint32_t len, uint64_t *addr,
		    uint32_t *size)
{
	struct fstore *f = ctx;

	*addr = fs_add(f, buf, len);
	*size = len;
	pthread_mutex_lock(&f->lock);
	f->writes++;
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static void fs_released(void *ctx, uint64_t addr, uint32_t size)
{
	struct fstore *f = ctx;

	pthread_mutex_lock(&f->lock);
	if (!addr || addr > f->n || f->rec[addr - 1].len != size ||
	    f->rec[addr - 1].released)
		f->bad_releases++;
	else
		f->rec[addr - 1].released = true;
	f->released++;
	pthread_mutex_unlock(&f->lock);
}

static const struct bt_store_ops fs_ops = { fs_read, fs_write, fs_released };
/* For probes that must not touch the space accounting. */
static const struct bt_store_ops fs_ops_quiet = { fs_read, fs_write, NULL };

static unsigned long log_errors;
/* When set, every third key and some values are near their limits. */
static bool big;

static void log_count(void *arg, enum barrel_log_level lvl, const char *msg)
{
	(void)arg;
	(void)msg;
	if (lvl == BLOG_ERR)
		log_errors++;
}

static void leak_check(void)
{
#if defined(__SANITIZE_ADDRESS__)
	OKMSG(__lsan_do_recoverable_leak_check() == 0,
	      "LeakSanitizer found leaks");
#endif
}

static void setup(void)
{
	memset(&fs, 0, sizeof(fs));
	pthread_mutex_init(&fs.lock, NULL);
	cache = bcache_new(64u << 20);
	NONNULL(cache);
	st = (struct bt_store){ .ops = &fs_ops, .ctx = &fs, .cache = cache,
				.cache_ns = 1 };
	log_errors = 0;
	big = false;
	barrel_log_set_sink(log_count, NULL);
}

static void teardown(void)
{
	bcache_free(cache);
	for (size_t i = 0; i < fs.n; i++)
		free(fs.rec[i].buf);
	free(fs.rec);
	pthread_mutex_destroy(&fs.lock);
	barrel_log_set_sink(NULL, NULL);
	leak_check();
}

/* ---- keys, values and the reference model ---- */

#define NKEYS 50000u

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static int kcmp(const void *a, size_t alen, const void *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int c = n ? memcmp(a, b, n) : 0;

	return c ? c : (alen > blen) - (alen < blen);
}

/* "u<id>": varied lengths, and "u1" < "u10" < "u2" in key order. Big keys
 * are padded with 'z' (never a digit, so keys stay distinct). */
static size_t mkkey(unsigned id, uint8_t *buf)
{
	size_t n = (size_t)snprintf((char *)buf, 16, "u%u", id);

	if (big && id % 3 == 0) {
		size_t len = BT_MAX_KEY - id % 225;

		memset(buf + n, 'z', len - n);
		n = len;
	}
	return n;
}

static size_t mkval(unsigned id, unsigned ver, uint8_t *buf)
{
	size_t n = (id * 7u + ver * 13u) % 61u;

	if (big && (id + ver) % 4 == 0)
		n = BT_MAX_VAL - ver % 300;

	for (size_t j = 0; j < n; j++)
		buf[j] = (uint8_t)(id + ver * 31u + j);
	return n;
}

struct model {
	int *ver;               /* -1: absent */
	unsigned *order;        /* ids sorted by key */
	unsigned long count;
};

static int cmp_ids(const void *a, const void *b)
{
	uint8_t ka[BT_MAX_KEY], kb[BT_MAX_KEY];
	size_t la = mkkey(*(const unsigned *)a, ka);
	size_t lb = mkkey(*(const unsigned *)b, kb);

	return kcmp(ka, la, kb, lb);
}

static void model_init(struct model *m)
{
	m->ver = malloc(NKEYS * sizeof(*m->ver));
	m->order = malloc(NKEYS * sizeof(*m->order));
	OK(m->ver && m->order);
	for (unsigned i = 0; i < NKEYS; i++) {
		m->ver[i] = -1;
		m->order[i] = i;
	}
	qsort(m->order, NKEYS, sizeof(*m->order), cmp_ids);
	m->count = 0;
}

static void model_free(struct model *m)
{
	free(m->ver);
	free(m->order);
}

/* Put id at version ver, through memo when there is one. */
static void memo_put(struct bt_ref *root, struct model *m, unsigned id,
		     unsigned ver, struct bt_memo *memo)
{
	uint8_t k[BT_MAX_KEY], v[BT_MAX_VAL], old[BT_MAX_VAL], want[BT_MAX_VAL];
	size_t kl = mkkey(id, k), vl = mkval(id, ver, v), oldlen = 0, wl;
	bool existed = true;

	if (memo)
		EQ(bt_put_memo(&st, root, k, kl, v, vl, old, &oldlen,
			       &existed, memo), 0);
	else
		EQ(bt_put(&st, root, k, kl, v, vl, old, &oldlen, &existed),
		   0);
	EQ(existed, m->ver[id] >= 0);
	if (existed) {
		wl = mkval(id, (unsigned)m->ver[id], want);
		UEQ(oldlen, wl);
		OK(memcmp(old, want, wl) == 0);
	} else {
		m->count++;
	}
	m->ver[id] = (int)ver;
}

static void do_put(struct bt_ref *root, struct model *m, unsigned id,
		   unsigned ver)
{
	memo_put(root, m, id, ver, NULL);
}

static void do_del(struct bt_ref *root, struct model *m, unsigned id)
{
	uint8_t k[BT_MAX_KEY], old[BT_MAX_VAL], want[BT_MAX_VAL];
	size_t kl = mkkey(id, k), oldlen = 0, wl;
	int err = bt_del(&st, root, k, kl, old, &oldlen);

	if (m->ver[id] < 0) {
		EQ(err, BARREL_E_NOTFOUND);
		return;
	}
	EQ(err, 0);
	wl = mkval(id, (unsigned)m->ver[id], want);
	UEQ(oldlen, wl);
	OK(memcmp(old, want, wl) == 0);
	m->ver[id] = -1;
	m->count--;
}

/* Read id and compare it with the model; through memo when there is one
 * (as a writer does before writing it). */
static void memo_get(const struct bt_ref *root, const struct model *m,
		     unsigned id, struct bt_memo *memo)
{
	uint8_t k[BT_MAX_KEY], v[BT_MAX_VAL], want[BT_MAX_VAL];
	size_t kl = mkkey(id, k), vl = 0, wl;
	int err = memo ? bt_get_memo(&st, root, k, kl, v, &vl, memo)
		       : bt_get(&st, root, k, kl, v, &vl);

	if (m->ver[id] < 0) {
		EQ(err, BARREL_E_NOTFOUND);
		return;
	}
	EQ(err, 0);
	wl = mkval(id, (unsigned)m->ver[id], want);
	UEQ(vl, wl);
	OK(memcmp(v, want, wl) == 0);
}

static void check_get(const struct bt_ref *root, const struct model *m,
		      unsigned id)
{
	memo_get(root, m, id, NULL);
}

static void check_all(const struct bt_ref *root, const struct model *m)
{
	for (unsigned id = 0; id < NKEYS; id++)
		check_get(root, m, id);
}

/* Iterate [lo, hi) (or per flags) and compare with the model. */
static void check_range(const struct bt_ref *root, const struct model *m,
			const uint8_t *lo, size_t lolen, const uint8_t *hi,
			size_t hilen, unsigned flags)
{
	struct bt_iter *it;
	bool rev = flags & BT_ITER_REVERSE;
	bool incl = flags & BT_ITER_END_INCLUSIVE;
	unsigned long seen = 0;

	EQ(bt_iter_new(&st, root, lo, lolen, hi, hilen, flags,
		       &it), 0);
	for (unsigned n = 0; n < NKEYS; n++) {
		unsigned id = m->order[rev ? NKEYS - 1 - n : n];
		uint8_t k[BT_MAX_KEY], v[BT_MAX_VAL];
		size_t kl, vl;
		const void *ik, *iv;
		size_t ikl, ivl;
		int c;

		if (m->ver[id] < 0)
			continue;
		kl = mkkey(id, k);
		if (lo && kcmp(k, kl, lo, lolen) < 0)
			continue;
		if (hi && ((c = kcmp(k, kl, hi, hilen)) > 0 || (c == 0 && !incl)))
			continue;
		EQ(bt_iter_next(it, &ik, &ikl, &iv, &ivl), 1);
		vl = mkval(id, (unsigned)m->ver[id], v);
		OKMSG(ikl == kl && memcmp(ik, k, kl) == 0,
		      "iterator key %.*s, want %.*s (entry %lu)",
		      (int)ikl, (const char *)ik, (int)kl, k, seen);
		UEQ(ivl, vl);
		OK(vl == 0 || memcmp(iv, v, vl) == 0);
		seen++;
	}
	{
		const void *ik, *iv;
		size_t ikl, ivl;

		EQ(bt_iter_next(it, &ik, &ikl, &iv, &ivl), 0);
		EQ(bt_iter_next(it, &ik, &ikl, &iv, &ivl), 0);
	}
	bt_iter_free(it);
}

/* ---- an auditor of flushed trees, decoding FORMAT-btree.md itself ---- */

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return le32(p) | (uint64_t)le32(p + 4) << 32;
}

struct bound {
	const uint8_t *key;     /* NULL: unbounded */
	size_t len;
};

struct audit {
	unsigned long entries;
	bool *reach;            /* by record address */
	bool fill;              /* non-root nodes must be >= 1/4 full */
	unsigned height;
};

struct anode {
	unsigned level, count;
	const uint8_t *key[2048];
	size_t klen[2048];
	uint64_t addr[2048];
	uint32_t size[2048];
};

static void audit_parse(const struct frec *r, struct anode *n)
{
	const uint8_t *p = r->buf;
	uint32_t off = 4;

	UGE(r->len, 4);
	n->level = p[0];
	UEQ(p[1], 0);
	n->count = le16(p + 2);
	UGE(n->count, 1);
	ULE(n->count, 2048);
	for (unsigned i = 0; i < n->count; i++) {
		size_t kl = le16(p + off), vl = n->level ? 0 : le16(p + off + 2);

		off += n->level ? 2 : 4;
		n->key[i] = p + off;
		n->klen[i] = kl;
		off += (uint32_t)(kl + vl);
		if (n->level) {
			n->addr[i] = le64(p + off);
			n->size[i] = le32(p + off + 8);
			off += 12;
		}
	}
	UEQ(off, r->len);
}

static bool in_range(const uint8_t *k, size_t kl, struct bound lo,
		     struct bound hi)
{
	return (!lo.key || kcmp(k, kl, lo.key, lo.len) >= 0) &&
	       (!hi.key || kcmp(k, kl, hi.key, hi.len) < 0);
}

/* Check the subtree at addr; *min gets its smallest key. */
static void audit_node(struct audit *a, uint64_t addr, uint32_t size,
		       int want, struct bound lo, struct bound hi, bool root,
		       struct bound *min)
{
	struct anode *n = malloc(sizeof(*n));
	const struct frec *r;

	NONNULL(n);
	OK(addr >= 1 && addr <= fs.n);
	r = &fs.rec[addr - 1];
	UEQ(r->len, size);
	OKMSG(!a->reach[addr], "node %llu reached twice",
	      (unsigned long long)addr);
	a->reach[addr] = true;
	audit_parse(r, n);
	if (want >= 0)
		UEQ(n->level, (unsigned)want);
	else
		a->height = n->level + 1;
	OKMSG(r->len <= BT_NODE_TARGET || n->count == 1,
	      "oversized node: %u bytes, %u entries", r->len, n->count);
	if (a->fill && !root)
		OKMSG(r->len >= BT_NODE_TARGET / 4,
		      "underfull node: %u bytes", r->len);
	for (unsigned i = 0; i < n->count; i++) {
		OK(in_range(n->key[i], n->klen[i], lo, hi));
		if (i)
			OK(kcmp(n->key[i - 1], n->klen[i - 1], n->key[i],
				n->klen[i]) < 0);
	}
	*min = (struct bound){ n->key[0], n->klen[0] };
	if (!n->level) {
		a->entries += n->count;
		free(n);
		return;
	}
	for (unsigned i = 0; i < n->count; i++) {
		struct bound key_i = { n->key[i], n->klen[i] };
		struct bound clo = i ? key_i : lo;
		struct bound chi = i + 1 < n->count ?
			(struct bound){ n->key[i + 1], n->klen[i + 1] } : hi;
		struct bound cmin;

		audit_node(a, n->addr[i], n->size[i], (int)n->level - 1, clo,
			   chi, false, &cmin);
		if (!i)
			*min = cmin;
	}
	/* the fence is a lower bound of the subtree */
	OK(kcmp(n->key[0], n->klen[0], min->key, min->len) <= 0);
	free(n);
}

/* Audit the clean tree at root; returns the entries. reach: optional. */
static unsigned long audit(const struct bt_ref *root, bool fill, bool *reach)
{
	struct audit a = { 0, reach, fill, 0 };
	struct bound none = { NULL, 0 }, min;
	bool *own = NULL;

	ISNULL(root->mem);
	if (bt_ref_is_empty(root))
		return 0;
	if (!a.reach) {
		own = calloc(fs.n + 1, sizeof(*own));
		NONNULL(own);
		a.reach = own;
	}
	audit_node(&a, root->addr, root->size, -1, none, none, true, &min);
	free(own);
	return a.entries;
}

/* Every record is either reachable from root or was reported released. */
static void check_accounting(const struct bt_ref *root)
{
	bool *reach = calloc(fs.n + 1, sizeof(*reach));

	NONNULL(reach);
	audit(root, false, reach);
	UEQ(fs.bad_releases, 0);
	for (size_t a = 1; a <= fs.n; a++)
		OKMSG(reach[a] != fs.rec[a - 1].released,
		      "record %zu: reachable %d, released %d", a,
		      reach[a], fs.rec[a - 1].released);
	free(reach);
}

static size_t check_touch_probe(const struct bt_ref *root);

/* ---- tests ---- */

/* Random puts/deletes over 50k keys agree with a model, with flushes in
 * between, and the flushed tree is well formed and fully accounted. */
START_TEST(test_model_random)
{
	struct bt_ref root = BT_REF_EMPTY;
	struct model m;

	rng_state = 0x9e3779b97f4a7c15ull;
	model_init(&m);
	for (unsigned op = 0; op < 200000; op++) {
		unsigned id = (unsigned)(rnd() % NKEYS);
		unsigned r = (unsigned)(rnd() % 10);

		if (r < 6)
			do_put(&root, &m, id, op);
		else if (r < 9)
			do_del(&root, &m, id);
		else
			check_get(&root, &m, id);
		if (op % 40000 == 39999) {
			check_all(&root, &m);
			EQ(bt_flush(&st, &root), 0);
			ISNULL(root.mem);
			UEQ(audit(&root, true, NULL), m.count);
			check_accounting(&root);
			check_all(&root, &m);
		}
	}
	check_all(&root, &m);
	EQ(bt_flush(&st, &root), 0);
	UEQ(audit(&root, true, NULL), m.count);
	check_accounting(&root);
	check_all(&root, &m);
	bt_ref_release(&root);
	model_free(&m);
}
END_TEST

/*
 * Read-then-write through a memo agrees with the model whatever comes
 * between the read and the write: nothing (the memo's path is used), a
 * put or delete of another key (which may split or merge the nodes on
 * that path), a flush, a snapshot taken or dropped (which makes the path
 * shared), or a write of another key through the memo. Flushed trees stay
 * well formed and fully accounted.
 */
START_TEST(test_memo_model)
{
	struct bt_ref root = BT_REF_EMPTY, snap = BT_REF_EMPTY;
	struct bt_memo *memo = bt_memo_new();
	struct model m;

	NONNULL(memo);
	rng_state = 0x2545f4914f6cdd1dull;
	model_init(&m);
	for (unsigned op = 0; op < 120000; op++) {
		unsigned id = (unsigned)(rnd() % NKEYS);
		unsigned other = (unsigned)(rnd() % NKEYS);
		unsigned between = (unsigned)(rnd() % 16);

		memo_get(&root, &m, id, memo);
		if (between == 1)
			do_put(&root, &m, other, op);
		else if (between == 2)
			do_del(&root, &m, other);
		else if (between == 3 && op % 64 == 3)
			EQ(bt_flush(&st, &root), 0);
		else if (between == 4 && bt_ref_is_empty(&snap))
			snap = bt_ref_dup(&root);
		else if (between == 5)
			bt_ref_release(&snap);
		else if (between == 6)
			id = other;
		memo_put(&root, &m, id, op, memo);
		if (rnd() % 4 == 0)
			do_del(&root, &m, (unsigned)(rnd() % NKEYS));
		if (op % 30000 == 29999) {
			check_all(&root, &m);
			EQ(bt_flush(&st, &root), 0);
			UEQ(audit(&root, true, NULL), m.count);
			check_accounting(&root);
		}
	}
	/* a memo left unused is cleared without a put */
	memo_get(&root, &m, 7, memo);
	bt_memo_clear(memo);
	bt_memo_clear(memo);
	memo_get(&root, &m, 8, memo);
	bt_memo_free(memo);
	check_all(&root, &m);
	bt_ref_release(&snap);
	bt_ref_release(&root);
	model_free(&m);
}
END_TEST

/* A background flush of a frozen tree, by a store of its own. */
struct bgflush {
	struct bt_store st;
	struct bt_ref ref;
	int err;
};

static void *bgflush_main(void *arg)
{
	struct bgflush *b = arg;

	b->err = bt_flush(&b->st, &b->ref);
	return NULL;
}

/*
 * A background checkpoint, in the small: a frozen copy of the tree is
 * flushed on another thread by a store with a stamp while the tree goes
 * on changing; then the tree adopts the records. It agrees with the model;
 * the flushed tree holds the frozen state; the next flush writes only
 * what changed since the freeze (nothing when nothing did, a few paths
 * after a few changes); and every record is reachable from the tree or
 * reported released.
 */
START_TEST(test_adopt_model)
{
	static const unsigned after[] = { 0, 40, 400, 4000, 0, 25 };
	struct bt_ref root = BT_REF_EMPTY;
	struct model m;

	rng_state = 0x7a3c9e1f5b2d4c68ull;
	model_init(&m);
	for (unsigned round = 0; round < 6; round++) {
		struct bgflush bg = { st, BT_REF_EMPTY, 0 };
		struct bt_ref frozen;
		unsigned long w0, bg_writes, count;
		pthread_t th;

		for (unsigned op = 0; op < 20000; op++) {
			unsigned id = (unsigned)(rnd() % NKEYS);

			if (rnd() % 10 < 7)
				do_put(&root, &m, id, round * 100000 + op);
			else
				do_del(&root, &m, id);
		}
		frozen = bt_ref_dup(&root);
		count = m.count;
		bg.st.stamp = round + 1;
		bg.ref = bt_ref_dup(&frozen);
		w0 = fs.writes;
		EQ(pthread_create(&th, NULL, bgflush_main, &bg), 0);
		for (unsigned op = 0; op < after[round]; op++) {
			unsigned id = (unsigned)(rnd() % NKEYS);

			if (rnd() % 10 < 7)
				do_put(&root, &m, id, round * 100000 + 50000 + op);
			else
				do_del(&root, &m, id);
		}
		EQ(pthread_join(th, NULL), 0);
		EQ(bg.err, 0);
		ISNULL(bg.ref.mem);
		UEQ(audit(&bg.ref, true, NULL), count);
		EQ(bt_adopt(&st, &root, &frozen, bg.st.stamp), 0);
		bt_ref_release(&frozen);
		check_all(&root, &m);
		bg_writes = fs.writes - w0;
		OK(bg_writes > 100);
		w0 = fs.writes;
		EQ(bt_flush(&st, &root), 0);
		if (after[round] == 0)
			UEQ(fs.writes - w0, 0);
		else if (after[round] <= 40)   /* at most a path per change */
			OKMSG(fs.writes - w0 < bg_writes / 2,
			      "round %u: %lu written again after %lu", round,
			      fs.writes - w0, bg_writes);
		UEQ(audit(&root, true, NULL), m.count);
		check_accounting(&root);
		check_all(&root, &m);
		bt_ref_release(&bg.ref);
	}
	bt_ref_release(&root);
	model_free(&m);
}
END_TEST

/* Random puts/deletes mixing keys and values near their limits with tiny
 * ones (where merges often cannot happen) agree with the model; flushed
 * trees stay well formed (order, fences, sizes), fully accounted, and
 * bt_touch finds exactly their live records. */
START_TEST(test_model_mixed_sizes)
{
	struct bt_ref root = BT_REF_EMPTY;
	struct model m;

	big = true;
	rng_state = 0xfeedull;
	model_init(&m);
	for (unsigned op = 0; op < 40000; op++) {
		unsigned id = (unsigned)(rnd() % 3000);
		unsigned r = (unsigned)(rnd() % 10);

		if (r < 5)
			do_put(&root, &m, id, op);
		else if (r < 9)
			do_del(&root, &m, id);
		else
			check_get(&root, &m, id);
		if (op % 5000 == 4999) {
			EQ(bt_flush(&st, &root), 0);
			UEQ(audit(&root, false, NULL), m.count);
			check_accounting(&root);
			check_touch_probe(&root);
		}
	}
	for (unsigned id = 0; id < 3000; id++)
		check_get(&root, &m, id);
	check_range(&root, &m, NULL, 0, NULL, 0, 0);
	check_range(&root, &m, NULL, 0, NULL, 0, BT_ITER_REVERSE);
	while (m.count)
		do_del(&root, &m, (unsigned)(rnd() % 3000));
	OK(bt_ref_is_empty(&root));
	model_free(&m);
}
END_TEST

/* Deleting every key, in random order and across flushes, shrinks the
 * tree back to BT_REF_EMPTY with every record released. */
START_TEST(test_delete_all)
{
	struct bt_ref root = BT_REF_EMPTY;
	struct model m;
	unsigned *perm;

	rng_state = 42;
	model_init(&m);
	perm = malloc(NKEYS * sizeof(*perm));
	NONNULL(perm);
	for (unsigned i = 0; i < NKEYS; i++) {
		perm[i] = i;
		do_put(&root, &m, i, 1);
	}
	EQ(bt_flush(&st, &root), 0);
	for (unsigned i = NKEYS - 1; i > 0; i--) {
		unsigned j = (unsigned)(rnd() % (i + 1)), t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
	for (unsigned i = 0; i < NKEYS; i++) {
		do_del(&root, &m, perm[i]);
		if (i % 10000 == 5000) {
			EQ(bt_flush(&st, &root), 0);
			UEQ(audit(&root, true, NULL), m.count);
			check_accounting(&root);
		}
	}
	OK(bt_ref_is_empty(&root));
	for (size_t a = 0; a < fs.n; a++)
		OK(fs.rec[a].released);
	UEQ(fs.bad_releases, 0);
	EQ(bt_flush(&st, &root), 0);
	OK(bt_ref_is_empty(&root));
	free(perm);
	model_free(&m);
}
END_TEST

/* Sequential inserts (the common append pattern) keep nodes filled and
 * an exclusively held path is updated without copying or flushing. */
START_TEST(test_sequential_and_dirty_bytes)
{
	struct bt_ref root = BT_REF_EMPTY;
	uint8_t k[16], v[16] = { 0 };
	uint64_t before;
	unsigned long rel;

	for (unsigned i = 0; i < 20000; i++) {
		size_t kl = (size_t)snprintf((char *)k, sizeof(k), "s%08u", i);

		EQ(bt_put(&st, &root, k, kl, v, 8, NULL, NULL,
			  NULL), 0);
	}
	UGT(st.dirty_bytes, 20000u * 20);
	UEQ(fs.writes, 0);
	before = st.dirty_bytes;
	EQ(bt_flush(&st, &root), 0);
	ULT(st.dirty_bytes, before / 10);
	UEQ(audit(&root, true, NULL), 20000);
	/* overwrite in a clean tree: one path copied, then reused in place */
	st.dirty_bytes = 0;
	EQ(bt_put(&st, &root, k, 9, v, 8, NULL, NULL, NULL), 0);
	before = st.dirty_bytes;
	UGT(before, 0);
	rel = fs.released;                      /* the path, root to leaf */
	UGE(rel, 2);
	EQ(bt_put(&st, &root, k, 9, v, 4, NULL, NULL, NULL), 0);
	EQ(bt_put(&st, &root, k, 8, v, 4, NULL, NULL, NULL), 0);
	UEQ(st.dirty_bytes, before + 4 + 8 + 4);
	UEQ(fs.released, rel);
	bt_ref_release(&root);
}
END_TEST

/* A snapshot (bt_ref_dup) keeps seeing its tree while the writer puts,
 * deletes and flushes, whether the snapshot is in memory or clean. */
START_TEST(test_snapshots)
{
	struct bt_ref root = BT_REF_EMPTY, snap1, snap2;
	struct model m, m1;

	rng_state = 7;
	model_init(&m);
	model_init(&m1);
	for (unsigned i = 0; i < NKEYS; i += 2)
		do_put(&root, &m, i, 1);
	snap1 = bt_ref_dup(&root);          /* in-memory snapshot */
	memcpy(m1.ver, m.ver, NKEYS * sizeof(*m.ver));
	m1.count = m.count;
	for (unsigned op = 0; op < 30000; op++) {
		unsigned id = (unsigned)(rnd() % NKEYS);

		if (rnd() % 3)
			do_put(&root, &m, id, op + 2);
		else
			do_del(&root, &m, id);
		if (op == 15000)
			EQ(bt_flush(&st, &root), 0);
	}
	check_all(&snap1, &m1);
	check_range(&snap1, &m1, NULL, 0, NULL, 0, 0);
	check_all(&root, &m);

	EQ(bt_flush(&st, &root), 0);
	snap2 = bt_ref_dup(&root);          /* clean snapshot */
	memcpy(m1.ver, m.ver, NKEYS * sizeof(*m.ver));
	m1.count = m.count;
	for (unsigned op = 0; op < 20000; op++)
		do_del(&root, &m, (unsigned)(rnd() % NKEYS));
	check_all(&snap2, &m1);
	check_range(&snap2, &m1, NULL, 0, NULL, 0, BT_ITER_REVERSE);
	check_all(&root, &m);
	/* the snapshot can be flushed by nobody; dropping it frees it all */
	bt_ref_release(&snap1);
	bt_ref_release(&snap2);
	check_all(&root, &m);
	bt_ref_release(&root);
	model_free(&m);
	model_free(&m1);
}
END_TEST

/* Flushing a tree shared with a reader leaves the reader's in-memory
 * nodes alone: an iterator standing in them keeps working (under ASan a
 * freed node would be caught here). */
START_TEST(test_flush_shared)
{
	struct bt_ref root = BT_REF_EMPTY;
	struct model m;
	struct bt_iter *it;
	const void *k, *v;
	size_t kl, vl;
	unsigned long n = 0, j = 0;

	model_init(&m);
	for (unsigned i = 0; i < 20000; i++)
		do_put(&root, &m, i, 1);
	EQ(bt_iter_new(&st, &root, NULL, 0, NULL, 0, 0, &it), 0);
	for (; n < 100; n++)
		EQ(bt_iter_next(it, &k, &kl, &v, &vl), 1);
	EQ(bt_flush(&st, &root), 0);
	ISNULL(root.mem);
	for (unsigned i = 0; i < 20000; i += 3)
		do_del(&root, &m, i);
	/* the iterator still sees ids 0..19999, in key order */
	for (unsigned long skip = 0; skip < 100; j++)
		skip += m.order[j] < 20000;
	while (bt_iter_next(it, &k, &kl, &v, &vl) == 1) {
		uint8_t want[16];

		while (m.order[j] >= 20000)
			j++;
		OK(kl == mkkey(m.order[j], want) && memcmp(k, want, kl) == 0);
		j++;
		n++;
	}
	UEQ(n, 20000);
	bt_iter_free(it);
	check_all(&root, &m);
	bt_ref_release(&root);
	model_free(&m);
}
END_TEST

static void random_bound(const struct model *m, uint8_t *buf, size_t *len)
{
	if (rnd() % 2) {
		*len = mkkey(m->order[rnd() % NKEYS], buf);     /* a key */
		return;
	}
	*len = (size_t)snprintf((char *)buf, 16, "u%u%c", /* between keys */
				(unsigned)(rnd() % 60000), (char)('0' + rnd() % 12));
	if (rnd() % 8 == 0)
		*len = rnd() % 2;       /* "" or "u" */
}

static void check_ranges(const struct bt_ref *root, const struct model *m)
{
	static const unsigned fl[] = { 0, BT_ITER_REVERSE, BT_ITER_END_INCLUSIVE,
		BT_ITER_REVERSE | BT_ITER_END_INCLUSIVE };

	for (unsigned f = 0; f < 4; f++) {
		check_range(root, m, NULL, 0, NULL, 0, fl[f]);
		for (unsigned r = 0; r < 12; r++) {
			uint8_t lo[16], hi[16];
			size_t lol, hil;

			random_bound(m, lo, &lol);
			random_bound(m, hi, &hil);
			check_range(root, m, lo, lol, hi, hil, fl[f]);
			check_range(root, m, lo, lol, NULL, 0, fl[f]);
			check_range(root, m, NULL, 0, hi, hil, fl[f]);
		}
	}
}

/* Iterators walk forward, reverse, over ranges with exclusive and
 * inclusive ends, across many leaves: dirty, clean, and mixed trees. */
START_TEST(test_iterators)
{
	struct bt_ref root = BT_REF_EMPTY;
	struct model m;
	uint8_t k[BT_MAX_KEY];

	rng_state = 99;
	model_init(&m);
	check_range(&root, &m, NULL, 0, NULL, 0, 0);
	for (unsigned i = 0; i < NKEYS; i++)
		if (rnd() % 3)
			do_put(&root, &m, i, i);
	check_ranges(&root, &m);
	EQ(bt_flush(&st, &root), 0);
	check_ranges(&root, &m);
	for (unsigned i = 0; i < 3000; i++)
		do_put(&root, &m, (unsigned)(rnd() % NKEYS), 7);
	check_ranges(&root, &m);
	/* a single key, exact bounds */
	check_range(&root, &m, k, mkkey(m.order[100], k), k,
		    mkkey(m.order[100], k), BT_ITER_END_INCLUSIVE);
	check_range(&root, &m, k, mkkey(m.order[100], k), k,
		    mkkey(m.order[100], k), BT_ITER_END_INCLUSIVE |
		    BT_ITER_REVERSE);
	bt_ref_release(&root);
	model_free(&m);
}
END_TEST

/* An iterator holds its own reference: it outlives the caller's root and
 * sees the tree as of its creation while the writer changes it. */
START_TEST(test_iter_own_ref)
{
	struct bt_ref root = BT_REF_EMPTY, copy;
	struct model m;
	struct bt_iter *it;
	const void *k, *v;
	size_t kl, vl;
	unsigned long n = 0;

	model_init(&m);
	for (unsigned i = 0; i < 5000; i++)
		do_put(&root, &m, i, 1);
	copy = bt_ref_dup(&root);
	EQ(bt_iter_new(&st, &copy, NULL, 0, NULL, 0, 0, &it), 0);
	bt_ref_release(&copy);
	for (unsigned i = 0; i < 5000; i++)
		do_del(&root, &m, i);
	OK(bt_ref_is_empty(&root));
	while (bt_iter_next(it, &k, &kl, &v, &vl) == 1)
		n++;
	UEQ(n, 5000);
	bt_iter_free(it);
	model_free(&m);
}
END_TEST

static void huge_key(unsigned id, uint8_t *k)
{
	memset(k, 'h', BT_MAX_KEY);
	snprintf((char *)k + BT_MAX_KEY - 12, 12, "%011u", id);
}

/* Keys of BT_MAX_KEY and values of BT_MAX_VAL, alone and mixed with
 * small entries, are stored, iterated, flushed and deleted. */
START_TEST(test_huge_entries)
{
	struct bt_ref root = BT_REF_EMPTY;
	static uint8_t k[BT_MAX_KEY], v[BT_MAX_VAL], out[BT_MAX_VAL];
	size_t ol;
	struct bt_iter *it;
	const void *ik, *iv;
	size_t ikl, ivl;
	unsigned n = 0;

	for (unsigned i = 0; i < 3000; i++) {
		huge_key(i * 2, k);
		memset(v, (int)(i & 0xff), BT_MAX_VAL);
		EQ(bt_put(&st, &root, k, BT_MAX_KEY, v, BT_MAX_VAL,
			  NULL, NULL, NULL), 0);
		/* a small neighbour */
		EQ(bt_put(&st, &root, k + BT_MAX_KEY - 20, 20, v,
			  1, NULL, NULL, NULL), 0);
		if (i == 1500)
			EQ(bt_flush(&st, &root), 0);
	}
	EQ(bt_flush(&st, &root), 0);
	UEQ(audit(&root, false, NULL), 6000);
	for (unsigned i = 0; i < 3000; i += 7) {
		huge_key(i * 2, k);
		EQ(bt_get(&st, &root, k, BT_MAX_KEY, out, &ol), 0);
		UEQ(ol, BT_MAX_VAL);
		UEQ(out[BT_MAX_VAL - 1], i & 0xff);
		huge_key(i * 2 + 1, k);
		EQ(bt_get(&st, &root, k, BT_MAX_KEY, out, &ol),
		   BARREL_E_NOTFOUND);
	}
	EQ(bt_iter_new(&st, &root, NULL, 0, NULL, 0,
		       BT_ITER_REVERSE, &it), 0);
	while (bt_iter_next(it, &ik, &ikl, &iv, &ivl) == 1)
		n += ikl == BT_MAX_KEY;
	bt_iter_free(it);
	UEQ(n, 3000);
	for (unsigned i = 0; i < 3000; i += 2) {
		huge_key(i * 2, k);
		EQ(bt_del(&st, &root, k, BT_MAX_KEY, out, &ol), 0);
		UEQ(ol, BT_MAX_VAL);
	}
	EQ(bt_flush(&st, &root), 0);
	UEQ(audit(&root, false, NULL), 4500);
	check_accounting(&root);
	bt_ref_release(&root);
}
END_TEST

/* Keys over BT_MAX_KEY and values over BT_MAX_VAL fail with
 * BARREL_E_TOOBIG and leave the tree unchanged. */
START_TEST(test_toobig)
{
	struct bt_ref root = BT_REF_EMPTY, before;
	static uint8_t k[BT_MAX_KEY + 1], v[BT_MAX_VAL + 1], out[BT_MAX_VAL];
	size_t ol;

	EQ(bt_put(&st, &root, k, BT_MAX_KEY + 1, v, 1, NULL,
		  NULL, NULL), BARREL_E_TOOBIG);
	OK(bt_ref_is_empty(&root));
	EQ(bt_put(&st, &root, k, 1, v, BT_MAX_VAL, NULL, NULL,
		  NULL), 0);
	before = root;
	EQ(bt_put(&st, &root, k, 1, v, BT_MAX_VAL + 1, NULL,
		  NULL, NULL), BARREL_E_TOOBIG);
	OK(root.mem == before.mem);
	EQ(bt_get(&st, &root, k, 1, out, &ol), 0);
	UEQ(ol, BT_MAX_VAL);
	/* the empty key and the empty value are fine */
	EQ(bt_put(&st, &root, NULL, 0, NULL, 0, NULL, NULL,
		  NULL), 0);
	EQ(bt_get(&st, &root, "", 0, out, &ol), 0);
	UEQ(ol, 0);
	bt_ref_release(&root);
}
END_TEST

/* ---- hand-built payloads ---- */

struct pbuf {
	uint8_t b[8192];
	uint32_t len;
	uint16_t count;
};

static void pb_init(struct pbuf *p, unsigned level)
{
	p->b[0] = (uint8_t)level;
	p->b[1] = 0;
	p->len = 4;
	p->count = 0;
}

static void pb_u16(struct pbuf *p, unsigned v)
{
	p->b[p->len++] = (uint8_t)v;
	p->b[p->len++] = (uint8_t)(v >> 8);
}

static void pb_bytes(struct pbuf *p, const void *d, size_t n)
{
	memcpy(p->b + p->len, d, n);
	p->len += (uint32_t)n;
}

static void pb_leaf(struct pbuf *p, const char *k, const char *v)
{
	pb_u16(p, (unsigned)strlen(k));
	pb_u16(p, (unsigned)strlen(v));
	pb_bytes(p, k, strlen(k));
	pb_bytes(p, v, strlen(v));
	p->count++;
}

static void pb_kid(struct pbuf *p, const char *k, uint64_t addr, uint32_t sz)
{
	pb_u16(p, (unsigned)strlen(k));
	pb_bytes(p, k, strlen(k));
	for (int i = 0; i < 8; i++)
		p->b[p->len++] = (uint8_t)(addr >> (8 * i));
	for (int i = 0; i < 4; i++)
		p->b[p->len++] = (uint8_t)(sz >> (8 * i));
	p->count++;
}

static uint32_t pb_done(struct pbuf *p)
{
	p->b[2] = (uint8_t)p->count;
	p->b[3] = (uint8_t)(p->count >> 8);
	return p->len;
}

/* Look a key up in a tree whose root is the payload; returns bt_get's
 * result (and checks bt_node_ident and an iterator agree on validity). */
static int probe(const void *buf, uint32_t len)
{
	struct bt_ref r = { NULL, fs_add(&fs, buf, len), len };
	uint8_t out[BT_MAX_VAL];
	size_t ol, kl;
	unsigned level;
	const void *key;
	struct bt_iter *it;
	int err = bt_get(&st, &r, "b", 1, out, &ol), ierr;

	ierr = bt_node_ident(buf, len, &level, &key, &kl);
	if (ierr == 0) {
		ULT(level, 64);
		OK((const uint8_t *)key + kl <= (const uint8_t *)buf + len);
	}
	if (bt_iter_new(&st, &r, NULL, 0, NULL, 0, 0, &it) == 0) {
		const void *k, *v;
		size_t a, b;

		while (bt_iter_next(it, &k, &a, &v, &b) == 1)
			;
		bt_iter_free(it);
	}
	return err;
}

/* Well-formed hand-built payloads decode: the format is as documented. */
START_TEST(test_format_handbuilt)
{
	struct pbuf leaf, leaf2, top;
	uint64_t a1, a2, at;
	struct bt_ref r;
	uint8_t out[16];
	size_t ol;
	unsigned level;
	const void *key;
	size_t kl;

	pb_init(&leaf, 0);
	pb_leaf(&leaf, "a", "1");
	pb_leaf(&leaf, "b", "22");
	a1 = fs_add(&fs, leaf.b, pb_done(&leaf));
	pb_init(&leaf2, 0);
	pb_leaf(&leaf2, "m", "3");
	a2 = fs_add(&fs, leaf2.b, pb_done(&leaf2));
	pb_init(&top, 1);
	pb_kid(&top, "", a1, leaf.len);
	pb_kid(&top, "m", a2, leaf2.len);
	at = fs_add(&fs, top.b, pb_done(&top));
	r = (struct bt_ref){ NULL, at, top.len };
	EQ(bt_get(&st, &r, "b", 1, out, &ol), 0);
	UEQ(ol, 2);
	OK(memcmp(out, "22", 2) == 0);
	EQ(bt_get(&st, &r, "m", 1, out, &ol), 0);
	EQ(bt_get(&st, &r, "l", 1, out, &ol), BARREL_E_NOTFOUND);
	EQ(bt_node_ident(leaf2.b, leaf2.len, &level, &key, &kl), 0);
	UEQ(level, 0);
	UEQ(kl, 1);
	OK(memcmp(key, "m", 1) == 0);
	EQ(bt_node_ident(top.b, top.len, &level, &key, &kl), 0);
	UEQ(level, 1);
	UEQ(kl, 0);
	UEQ(log_errors, 0);
}
END_TEST

/* Malformed node payloads are BARREL_E_CORRUPT (and logged), never a
 * crash: each rule of FORMAT-btree.md, and every truncation. */
START_TEST(test_corrupt_payloads)
{
	struct pbuf p, leaf;
	uint64_t al;
	uint32_t len;

	pb_init(&leaf, 0);
	pb_leaf(&leaf, "a", "1");
	al = fs_add(&fs, leaf.b, pb_done(&leaf));

	pb_init(&p, 0);                        /* empty node */
	EQ(probe(p.b, pb_done(&p)), BARREL_E_CORRUPT);
	pb_init(&p, 0);                        /* unknown flags */
	pb_leaf(&p, "a", "1");
	pb_done(&p);
	p.b[1] = 0x80;
	EQ(probe(p.b, p.len), BARREL_E_CORRUPT);
	pb_init(&p, 40);                       /* level too deep */
	pb_kid(&p, "", al, leaf.len);
	EQ(probe(p.b, pb_done(&p)), BARREL_E_CORRUPT);
	pb_init(&p, 0);                        /* keys out of order */
	pb_leaf(&p, "b", "1");
	pb_leaf(&p, "a", "1");
	EQ(probe(p.b, pb_done(&p)), BARREL_E_CORRUPT);
	pb_init(&p, 0);                        /* duplicate keys */
	pb_leaf(&p, "a", "1");
	pb_leaf(&p, "a", "2");
	EQ(probe(p.b, pb_done(&p)), BARREL_E_CORRUPT);
	pb_init(&p, 0);                        /* trailing bytes */
	pb_leaf(&p, "a", "1");
	len = pb_done(&p);
	p.b[len] = 0;
	EQ(probe(p.b, len + 1), BARREL_E_CORRUPT);
	pb_init(&p, 0);                        /* key length over the limit */
	pb_u16(&p, BT_MAX_KEY + 1);
	pb_u16(&p, 0);
	memset(p.b + p.len, 'x', BT_MAX_KEY + 1);
	p.len += BT_MAX_KEY + 1;
	p.count = 1;
	EQ(probe(p.b, pb_done(&p)), BARREL_E_CORRUPT);
	pb_init(&p, 0);                        /* value length over the limit */
	pb_u16(&p, 1);
	pb_u16(&p, BT_MAX_VAL + 1);
	memset(p.b + p.len, 'x', BT_MAX_VAL + 2);
	p.len += BT_MAX_VAL + 2;
	p.count = 1;
	EQ(probe(p.b, pb_done(&p)), BARREL_E_CORRUPT);
	pb_init(&p, 1);                        /* null child */
	pb_kid(&p, "", 0, leaf.len);
	EQ(probe(p.b, pb_done(&p)), BARREL_E_CORRUPT);
	pb_init(&p, 2);                        /* child one level too low */
	pb_kid(&p, "", al, leaf.len);
	EQ(probe(p.b, pb_done(&p)), BARREL_E_CORRUPT);
	pb_init(&p, 1);                        /* child record unreadable */
	pb_kid(&p, "", al + 1000000, leaf.len);
	EQ(probe(p.b, pb_done(&p)), BARREL_E_CORRUPT);

	/* every proper prefix of a valid node is corrupt */
	pb_init(&p, 0);
	pb_leaf(&p, "a", "1");
	pb_leaf(&p, "bcd", "");
	pb_leaf(&p, "e", "xyz");
	len = pb_done(&p);
	EQ(probe(p.b, len), BARREL_E_NOTFOUND);
	for (uint32_t l = 0; l < len; l++)
		EQ(probe(p.b, l), BARREL_E_CORRUPT);
	UGT(log_errors, 10);
}
END_TEST

/* Random garbage, truncations and bit flips of real nodes are handled
 * without crashing (run under ASan/UBSan): an error or a valid answer. */
START_TEST(test_corrupt_fuzz)
{
	struct bt_ref root = BT_REF_EMPTY;
	static uint8_t buf[8192];
	size_t nreal;

	rng_state = 1234;
	for (unsigned i = 0; i < 3000; i++) {
		uint8_t k[BT_MAX_KEY], v[BT_MAX_VAL];

		EQ(bt_put(&st, &root, k, mkkey(i, k), v,
			  mkval(i, 1, v), NULL, NULL, NULL), 0);
	}
	EQ(bt_flush(&st, &root), 0);
	nreal = fs.n;
	for (unsigned t = 0; t < 20000; t++) {
		uint32_t len = (uint32_t)(rnd() % 600);
		int err;

		for (uint32_t j = 0; j < len; j++)
			buf[j] = (uint8_t)rnd();
		if (len >= 4 && t % 2) {        /* plausible header */
			buf[0] = (uint8_t)(rnd() % 3);
			buf[1] = 0;
			buf[2] = (uint8_t)(rnd() % 8 + 1);
			buf[3] = 0;
		}
		err = probe(buf, len);
		OK(err == 0 || err == BARREL_E_NOTFOUND ||
		   err == BARREL_E_CORRUPT);
	}
	for (unsigned t = 0; t < 5000; t++) {
		const struct frec *r = &fs.rec[rnd() % nreal];
		uint32_t len = r->len;
		int err;

		memcpy(buf, r->buf, len);
		if (t % 3 == 0)
			len = (uint32_t)(rnd() % len);
		else
			buf[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
		err = probe(buf, len);
		OK(err == 0 || err == BARREL_E_NOTFOUND ||
		   err == BARREL_E_CORRUPT);
	}
	bt_ref_release(&root);
}
END_TEST

static int touch_record(struct bt_store *s, struct bt_ref *root, uint64_t addr)
{
	const struct frec *r = &fs.rec[addr - 1];
	unsigned level;
	const void *key;
	size_t kl;

	EQ(bt_node_ident(r->buf, r->len, &level, &key, &kl), 0);
	return bt_touch(s, root, level, key, kl, addr);
}

/*
 * bt_touch on a copy of the clean root, for every record: it must find
 * exactly the reachable ones. Returns how many are live.
 */
static size_t check_touch_probe(const struct bt_ref *root)
{
	struct bt_store probe_st = st;
	bool *reach = calloc(fs.n + 1, sizeof(*reach));
	size_t live = 0;

	NONNULL(reach);
	audit(root, false, reach);
	probe_st.ops = &fs_ops_quiet;
	for (uint64_t a = 1; a <= fs.n; a++) {
		struct bt_ref tmp = bt_ref_dup(root);
		int got = touch_record(&probe_st, &tmp, a);

		OKMSG(got == reach[a], "touch record %llu: got %d, reachable %d",
		      (unsigned long long)a, got, reach[a]);
		OK(got ? tmp.mem != NULL : tmp.addr == root->addr);
		live += reach[a];
		bt_ref_release(&tmp);
	}
	free(reach);
	return live;
}

/* bt_touch finds every reachable node record by its ident (level, first
 * key) and no unreachable one; touching every live record and flushing
 * relocates the whole tree with its content unchanged. */
START_TEST(test_touch)
{
	struct bt_ref root = BT_REF_EMPTY;
	struct model m;
	bool *reach;
	size_t old_n, live, touched = 0;

	rng_state = 5;
	model_init(&m);
	for (unsigned op = 0; op < 60000; op++) {
		unsigned id = (unsigned)(rnd() % NKEYS);

		if (rnd() % 4)
			do_put(&root, &m, id, op);
		else
			do_del(&root, &m, id);
		if (op % 15000 == 14999)
			EQ(bt_flush(&st, &root), 0);
	}
	live = check_touch_probe(&root);
	UGT(live, 50);
	ULT(live, fs.n);          /* some garbage exists */

	/* GC: move every live record, oldest first */
	old_n = fs.n;
	for (uint64_t a = 1; a <= old_n; a++) {
		int got = touch_record(&st, &root, a);

		GE(got, 0);
		touched += got;
	}
	UGT(touched, 0);
	ULE(touched, live);
	EQ(bt_flush(&st, &root), 0);
	reach = calloc(fs.n + 1, sizeof(*reach));
	NONNULL(reach);
	UEQ(audit(&root, true, reach), m.count);
	for (uint64_t a = 1; a <= old_n; a++)
		OK(!reach[a]);
	check_accounting(&root);
	check_all(&root, &m);
	free(reach);
	bt_ref_release(&root);
	model_free(&m);
}
END_TEST

/* Without a cache every clean node is read and freed per use. */
START_TEST(test_no_cache)
{
	struct bt_ref root = BT_REF_EMPTY;
	struct model m;

	st.cache = NULL;
	rng_state = 11;
	model_init(&m);
	for (unsigned op = 0; op < 20000; op++) {
		unsigned id = (unsigned)(rnd() % 5000);

		if (rnd() % 3)
			do_put(&root, &m, id, op);
		else
			do_del(&root, &m, id);
		if (op % 5000 == 4999)
			EQ(bt_flush(&st, &root), 0);
	}
	for (unsigned id = 0; id < 5000; id++)
		check_get(&root, &m, id);
	check_range(&root, &m, NULL, 0, NULL, 0, BT_ITER_REVERSE);
	bt_ref_release(&root);
	model_free(&m);
}
END_TEST

/* A clean tree is served from the cache: warm lookups read nothing. */
START_TEST(test_cache_use)
{
	struct bt_ref root = BT_REF_EMPTY;
	struct model m;
	struct bcache_stats cs;
	unsigned long reads;

	model_init(&m);
	for (unsigned i = 0; i < 10000; i++)
		do_put(&root, &m, i, 1);
	EQ(bt_flush(&st, &root), 0);
	reads = fs.reads;
	check_all(&root, &m);                  /* written nodes were cached */
	UEQ(fs.reads, reads);
	bcache_drop_ns(cache, st.cache_ns);
	check_all(&root, &m);
	UGT(fs.reads, reads);
	reads = fs.reads;
	check_all(&root, &m);
	UEQ(fs.reads, reads);
	bcache_stats(cache, &cs);
	UGT(cs.hits, cs.misses);
	bt_ref_release(&root);
	model_free(&m);
}
END_TEST

/* ---- threads: one writer publishing roots, three readers ---- */

#define TW_KEYS 40000u

struct published {
	pthread_mutex_t lock;
	struct bt_ref root;     /* protected by lock */
	bool done;              /* protected by lock */
};

static struct published pub;

static size_t tkey(unsigned i, uint8_t *k)
{
	return (size_t)snprintf((char *)k, 16, "t%u", i);
}

static void publish(const struct bt_ref *root, bool done)
{
	struct bt_ref old;

	pthread_mutex_lock(&pub.lock);
	old = pub.root;
	pub.root = bt_ref_dup(root);
	pub.done = done;
	pthread_mutex_unlock(&pub.lock);
	bt_ref_release(&old);
}

/* A reader's verdict: Check's assertions may only fail in the main thread. */
struct reader {
	pthread_t th;
	uint64_t seed;
	char why[128];          /* empty while all is well */
};

#define RCHECK(r, c) do { \
	if (!(c)) { \
		snprintf((r)->why, sizeof((r)->why), "line %d: %s", \
			 __LINE__, #c); \
		goto out_release; \
	} \
} while (0)

/* Check one snapshot: it holds "t0".."tM" for M in "meta", nothing else. */
static void reader_check(struct reader *r, struct bt_ref *snap, bool scan)
{
	uint8_t k[16], v[16];
	size_t kl, vl;
	unsigned m;

	RCHECK(r, bt_get(&st, snap, "meta", 4, v, &vl) == 0);
	RCHECK(r, vl == sizeof(m));
	memcpy(&m, v, sizeof(m));
	for (unsigned j = 0; j < 64; j++) {
		unsigned i;

		r->seed = r->seed * 6364136223846793005ull + 1;
		i = (unsigned)((r->seed >> 33) % (m + 2));
		kl = tkey(i, k);
		if (i > m) {
			RCHECK(r, bt_get(&st, snap, k, kl, v, &vl) ==
				  BARREL_E_NOTFOUND);
			continue;
		}
		RCHECK(r, bt_get(&st, snap, k, kl, v, &vl) == 0);
		RCHECK(r, vl == sizeof(i) && memcmp(v, &i, sizeof(i)) == 0);
	}
	if (scan) {
		struct bt_iter *it;
		const void *ik, *iv;
		size_t ikl, ivl;
		unsigned long n = 0;

		RCHECK(r, bt_iter_new(&st, snap, "t", 1, "u", 1, 0, &it) == 0);
		while (bt_iter_next(it, &ik, &ikl, &iv, &ivl) == 1)
			n++;
		bt_iter_free(it);
		RCHECK(r, n == (unsigned long)m + 1);
	}
out_release:
	bt_ref_release(snap);
}

static void *reader(void *arg)
{
	struct reader *r = arg;
	unsigned long rounds = 0;
	bool done = false;

	while (!done && !r->why[0]) {
		struct bt_ref snap;

		pthread_mutex_lock(&pub.lock);
		snap = bt_ref_dup(&pub.root);
		done = pub.done;
		pthread_mutex_unlock(&pub.lock);
		if (!bt_ref_is_empty(&snap))
			reader_check(r, &snap, rounds++ % 50 == 0);
	}
	return NULL;
}

/* Readers of published snapshots always see a consistent tree while one
 * writer keeps putting, deleting, flushing and publishing. */
START_TEST(test_threads)
{
	struct bt_ref root = BT_REF_EMPTY;
	struct reader rd[3];
	uint8_t k[16];

	pthread_mutex_init(&pub.lock, NULL);
	pub.root = BT_REF_EMPTY;
	pub.done = false;
	for (unsigned t = 0; t < 3; t++) {
		rd[t] = (struct reader){ .seed = t * 7919 + 1 };
		EQ(pthread_create(&rd[t].th, NULL, reader, &rd[t]), 0);
	}
	for (unsigned i = 0; i < TW_KEYS; i++) {
		unsigned junk = i + TW_KEYS;

		/* a transient key, visible to no published snapshot */
		EQ(bt_put(&st, &root, k, tkey(junk, k), &junk, sizeof(junk),
			  NULL, NULL, NULL), 0);
		EQ(bt_put(&st, &root, k, tkey(i, k), &i, sizeof(i), NULL, NULL,
			  NULL), 0);
		EQ(bt_del(&st, &root, k, tkey(junk, k), NULL, NULL), 0);
		EQ(bt_put(&st, &root, "meta", 4, &i, sizeof(i), NULL, NULL,
			  NULL), 0);
		if (i % 4000 == 3999)
			EQ(bt_flush(&st, &root), 0);
		if (i % 50 == 0 || i + 1 == TW_KEYS)
			publish(&root, i + 1 == TW_KEYS);
	}
	for (unsigned t = 0; t < 3; t++)
		pthread_join(rd[t].th, NULL);
	bt_ref_release(&pub.root);
	bt_ref_release(&root);
	pthread_mutex_destroy(&pub.lock);
	for (unsigned t = 0; t < 3; t++)
		OKMSG(!rd[t].why[0], "reader %u: %s", t, rd[t].why);
}
END_TEST

static Suite *btree_suite(void)
{
	Suite *s = suite_create("btree");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_model_random);
	tcase_add_test(tc, test_memo_model);
	tcase_add_test(tc, test_adopt_model);
	tcase_add_test(tc, test_model_mixed_sizes);
	tcase_add_test(tc, test_delete_all);
	tcase_add_test(tc, test_sequential_and_dirty_bytes);
	tcase_add_test(tc, test_snapshots);
	tcase_add_test(tc, test_flush_shared);
	tcase_add_test(tc, test_iterators);
	tcase_add_test(tc, test_iter_own_ref);
	tcase_add_test(tc, test_huge_entries);
	tcase_add_test(tc, test_toobig);
	tcase_add_test(tc, test_format_handbuilt);
	tcase_add_test(tc, test_corrupt_payloads);
	tcase_add_test(tc, test_corrupt_fuzz);
	tcase_add_test(tc, test_touch);
	tcase_add_test(tc, test_no_cache);
	tcase_add_test(tc, test_cache_use);
	tcase_add_test(tc, test_threads);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(btree_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
