#include "config.h"
#include "engine/cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

/*
 * The node cache.
 *
 * Entries hash by (ns, addr) into one of BCACHE_STRIPES stripes; a stripe
 * owns a chained hash table, a CLOCK ring of its entries and its share of
 * the counters, all under its mutex. The byte total is global (atomic).
 *
 * Eviction: whoever pushes the total over the budget (an insert, or an
 * unpin after everything was pinned) sweeps stripes round-robin, taking
 * at most one victim per stripe visit: the stripe's CLOCK hand skips
 * pinned entries, clears set reference bits and takes the first unpinned
 * entry whose bit is clear, turning at most once around the stripe (so a
 * stripe holding only recently used entries is passed over this time).
 * It stops when under budget or after two rounds of stripes without a
 * victim (everything pinned: the cache stays over budget until unpins).
 * Objects are destroyed outside the locks.
 *
 * Lock order: a thread holds at most one stripe lock at a time, and never
 * calls a loader or destructor while holding it.
 */

#define BCACHE_STRIPES 16u
#define BCACHE_MIN_BUCKETS 64u
#define BCACHE_LINE 64u

/* One cache entry; a pinned entry is what bcache_get() hands out. */
struct bcache_handle {
	struct bcache_handle *hnext;    /* hash chain */
	struct bcache_handle *cprev;    /* CLOCK ring */
	struct bcache_handle *cnext;
	uint64_t ns, addr;
	uint64_t hash;
	void *obj;                      /* owned; freed with destroy */
	bcache_free_fn destroy;
	size_t charge;
	unsigned pins;                  /* protected by the stripe lock */
	bool ref;                       /* CLOCK bit; protected likewise */
};

struct bcache_stripe {
	pthread_mutex_t lock;
	/* the rest is protected by lock */
	struct bcache_handle **buckets;
	size_t nbuckets;                /* a power of two */
	size_t count;
	struct bcache_handle *hand;     /* CLOCK hand; NULL when empty */
	uint64_t hits, misses, evictions;
	size_t bytes;                   /* charge of this stripe's entries */
} __attribute__((aligned(BCACHE_LINE)));

struct bcache {
	struct bcache_stripe stripe[BCACHE_STRIPES];
	size_t budget;
	atomic_size_t bytes;            /* charge of every entry */
	atomic_uint victim;             /* stripe the next sweep visits */
};

static uint64_t bcache_hash(uint64_t ns, uint64_t addr)
{
	uint64_t h = addr * 0x9E3779B97F4A7C15ull ^ ns * 0xC2B2AE3D27D4EB4Full;

	h ^= h >> 31;
	h *= 0xBF58476D1CE4E5B9ull;
	h ^= h >> 29;
	return h;
}

static struct bcache_stripe *bcache_stripe_of(struct bcache *c, uint64_t hash)
{
	return &c->stripe[hash % BCACHE_STRIPES];
}

static struct bcache_handle **bcache_bucket(struct bcache_stripe *s,
					    uint64_t hash)
{
	return &s->buckets[(hash / BCACHE_STRIPES) & (s->nbuckets - 1)];
}

struct bcache *bcache_new(size_t budget)
{
	struct bcache *c;
	size_t size = (sizeof(*c) + BCACHE_LINE - 1) & ~(size_t)(BCACHE_LINE - 1);
	unsigned i;

	c = aligned_alloc(BCACHE_LINE, size);
	if (!c)
		return NULL;
	memset(c, 0, size);
	c->budget = budget;
	atomic_init(&c->bytes, 0);
	atomic_init(&c->victim, 0);
	for (i = 0; i < BCACHE_STRIPES; i++) {
		struct bcache_stripe *s = &c->stripe[i];

		s->buckets = calloc(BCACHE_MIN_BUCKETS, sizeof(*s->buckets));
		if (!s->buckets)
			goto out_free_stripes;
		s->nbuckets = BCACHE_MIN_BUCKETS;
		pthread_mutex_init(&s->lock, NULL);
	}
	return c;

out_free_stripes:
	while (i--) {
		pthread_mutex_destroy(&c->stripe[i].lock);
		free(c->stripe[i].buckets);
	}
	free(c);
	return NULL;
}

static void bcache_destroy_list(struct bcache_handle *e)
{
	while (e) {
		struct bcache_handle *next = e->hnext;

		e->destroy(e->obj);
		free(e);
		e = next;
	}
}

void bcache_free(struct bcache *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < BCACHE_STRIPES; i++) {
		struct bcache_stripe *s = &c->stripe[i];

		for (size_t b = 0; b < s->nbuckets; b++)
			bcache_destroy_list(s->buckets[b]);
		free(s->buckets);
		pthread_mutex_destroy(&s->lock);
	}
	free(c);
}

/* ---- one stripe; the caller holds s->lock ---- */

static struct bcache_handle *stripe_find(struct bcache_stripe *s, uint64_t ns,
					 uint64_t addr, uint64_t hash)
{
	struct bcache_handle *e = *bcache_bucket(s, hash);

	while (e && (e->addr != addr || e->ns != ns))
		e = e->hnext;
	return e;
}

/* Double the buckets when chains get long; a failed allocation is harmless. */
static void stripe_grow(struct bcache_stripe *s)
{
	struct bcache_handle **old = s->buckets;
	size_t oldn = s->nbuckets;
	struct bcache_handle **nb = calloc(oldn * 2, sizeof(*nb));

	if (!nb)
		return;
	s->buckets = nb;
	s->nbuckets = oldn * 2;
	for (size_t b = 0; b < oldn; b++) {
		struct bcache_handle *e = old[b], *next;

		for (; e; e = next) {
			struct bcache_handle **head = bcache_bucket(s, e->hash);

			next = e->hnext;
			e->hnext = *head;
			*head = e;
		}
	}
	free(old);
}

/* Link a new entry into the hash and just behind the CLOCK hand. */
static void stripe_insert(struct bcache_stripe *s, struct bcache_handle *e)
{
	struct bcache_handle **head;

	if (s->count >= s->nbuckets)
		stripe_grow(s);
	head = bcache_bucket(s, e->hash);
	e->hnext = *head;
	*head = e;
	if (!s->hand) {
		e->cprev = e->cnext = e;
		s->hand = e;
	} else {
		e->cnext = s->hand;
		e->cprev = s->hand->cprev;
		e->cprev->cnext = e;
		s->hand->cprev = e;
	}
	s->count++;
	s->bytes += e->charge;
}

static void stripe_unlink(struct bcache_stripe *s, struct bcache_handle *e)
{
	struct bcache_handle **pp = bcache_bucket(s, e->hash);

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->cnext == e) {
		s->hand = NULL;
	} else {
		e->cprev->cnext = e->cnext;
		e->cnext->cprev = e->cprev;
		if (s->hand == e)
			s->hand = e->cnext;
	}
	s->count--;
	s->bytes -= e->charge;
}

/*
 * CLOCK, one turn of the hand at most: unlink and return the first
 * unpinned entry whose reference bit is clear, clearing the bits it
 * passes; NULL when every entry was pinned or referenced.
 */
static struct bcache_handle *stripe_evict_one(struct bcache_stripe *s)
{
	size_t steps = s->count;

	while (s->hand && steps--) {
		struct bcache_handle *e = s->hand;

		s->hand = e->cnext;
		if (e->pins)
			continue;
		if (e->ref) {
			e->ref = false;
			continue;
		}
		stripe_unlink(s, e);
		s->evictions++;
		return e;
	}
	return NULL;
}

/* ---- the whole cache ---- */

static bool bcache_over(struct bcache *c)
{
	return atomic_load_explicit(&c->bytes, memory_order_relaxed) > c->budget;
}

/* Evict by CLOCK, one victim per stripe visit, until under budget. */
static void bcache_shrink(struct bcache *c)
{
	unsigned idle = 0;

	/* two rounds without a victim: the first may only clear bits */
	while (bcache_over(c) && idle < 2 * BCACHE_STRIPES) {
		unsigned v = atomic_fetch_add_explicit(&c->victim, 1,
						       memory_order_relaxed);
		struct bcache_stripe *s = &c->stripe[v % BCACHE_STRIPES];
		struct bcache_handle *e;

		pthread_mutex_lock(&s->lock);
		e = stripe_evict_one(s);
		if (e)
			atomic_fetch_sub_explicit(&c->bytes, e->charge,
						  memory_order_relaxed);
		pthread_mutex_unlock(&s->lock);
		if (!e) {
			idle++;
			continue;
		}
		idle = 0;
		e->hnext = NULL;
		bcache_destroy_list(e);
	}
}

/* Pin an entry found in the table; s->lock held. */
static void bcache_pin(struct bcache_handle *e)
{
	e->pins++;
	e->ref = true;
}

/*
 * Insert a freshly loaded object, unless another thread got there first:
 * then pin theirs and destroy ours. Returns the pinned entry.
 */
static int bcache_insert(struct bcache *c, struct bcache_handle *e,
			 struct bcache_handle **h)
{
	struct bcache_stripe *s = bcache_stripe_of(c, e->hash);
	struct bcache_handle *other;

	pthread_mutex_lock(&s->lock);
	other = stripe_find(s, e->ns, e->addr, e->hash);
	if (other) {
		bcache_pin(other);
		pthread_mutex_unlock(&s->lock);
		e->hnext = NULL;
		bcache_destroy_list(e);
		*h = other;
		return 0;
	}
	e->pins = 1;
	stripe_insert(s, e);
	atomic_fetch_add_explicit(&c->bytes, e->charge, memory_order_relaxed);
	pthread_mutex_unlock(&s->lock);
	*h = e;
	if (bcache_over(c))
		bcache_shrink(c);
	return 0;
}

int bcache_get(struct bcache *c, uint64_t ns, uint64_t addr,
	       bcache_load_fn load, void *arg, bcache_free_fn destroy,
	       struct bcache_handle **h)
{
	uint64_t hash = bcache_hash(ns, addr);
	struct bcache_stripe *s = bcache_stripe_of(c, hash);
	struct bcache_handle *e;
	int err;

	pthread_mutex_lock(&s->lock);
	e = stripe_find(s, ns, addr, hash);
	if (e) {
		bcache_pin(e);
		s->hits++;
		pthread_mutex_unlock(&s->lock);
		*h = e;
		return 0;
	}
	s->misses++;
	pthread_mutex_unlock(&s->lock);

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	err = load(arg, &e->obj, &e->charge);
	if (err) {
		free(e);
		return err;
	}
	e->ns = ns;
	e->addr = addr;
	e->hash = hash;
	e->destroy = destroy;
	return bcache_insert(c, e, h);
}

void *bcache_value(const struct bcache_handle *h)
{
	return h->obj;
}

void bcache_put(struct bcache *c, struct bcache_handle *h)
{
	struct bcache_stripe *s = bcache_stripe_of(c, h->hash);

	pthread_mutex_lock(&s->lock);
	h->pins--;
	pthread_mutex_unlock(&s->lock);
	if (bcache_over(c))
		bcache_shrink(c);
}

void bcache_drop_ns(struct bcache *c, uint64_t ns)
{
	for (unsigned i = 0; i < BCACHE_STRIPES; i++) {
		struct bcache_stripe *s = &c->stripe[i];
		struct bcache_handle *dead = NULL;

		pthread_mutex_lock(&s->lock);
		for (size_t b = 0; b < s->nbuckets; b++) {
			struct bcache_handle *e = s->buckets[b], *next;

			for (; e; e = next) {
				next = e->hnext;
				if (e->ns != ns || e->pins)
					continue;
				stripe_unlink(s, e);
				atomic_fetch_sub_explicit(&c->bytes, e->charge,
							  memory_order_relaxed);
				e->hnext = dead;
				dead = e;
			}
		}
		pthread_mutex_unlock(&s->lock);
		bcache_destroy_list(dead);
	}
}

void bcache_stats(struct bcache *c, struct bcache_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->budget = c->budget;
	for (unsigned i = 0; i < BCACHE_STRIPES; i++) {
		struct bcache_stripe *s = &c->stripe[i];

		pthread_mutex_lock(&s->lock);
		st->hits += s->hits;
		st->misses += s->misses;
		st->evictions += s->evictions;
		st->bytes += s->bytes;
		pthread_mutex_unlock(&s->lock);
	}
}
