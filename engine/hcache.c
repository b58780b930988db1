#include "config.h"
#include "engine/hcache.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xxhash.h>

#include "engine/error.h"

/*
 * An open-addressed table of slots, linear probing from the key's hash;
 * a deletion shifts the rest of its cluster back, so there are no
 * tombstones and a probe ends at the first empty slot. Address 0 (never
 * a record's: the segment header is at offset 0) marks an empty slot.
 * The table grows fourfold at half full.
 *
 * Heads of up to HC_CELL bytes (a document's tree of a few revisions)
 * live in cells of that size, carved from slabs the cache keeps and
 * reuses: a database's worth of small allocations of the general heap
 * would make every other malloc slower. Bigger heads are malloc'ed.
 */

#define HC_MIN_BITS 10u
#define HC_AHEAD 16u          /* slots a rehash looks ahead to prefetch */
#define HC_CELL 128u
#define HC_SLAB_CELLS 512u
/* What an entry costs besides its head: its share of the table, which is
 * at most half full and at least an eighth (it grows fourfold). */
#define HC_ENTRY_COST (4 * sizeof(struct hc_slot))

struct hc_slot {
	uint64_t key;
	uint64_t addr;                /* 0: empty */
	void *head;                   /* a cell, or malloc'ed (hc_alloc()) */
	size_t len;
};

/* A block of HC_SLAB_CELLS cells. */
struct hc_slab {
	struct hc_slab *next;
	max_align_t cells[];
};

struct hcache {
	struct hc_slot *slots;
	unsigned bits;                /* 1 << bits slots */
	size_t count;
	size_t bytes;                 /* this cache's charge */
	size_t hand;                  /* where eviction looks next */
	_Atomic size_t *total;
	size_t budget;
	void *free_cells;             /* linked through their first bytes */
	struct hc_slab *slabs;
};

static size_t hc_mask(const struct hcache *c)
{
	return ((size_t)1 << c->bits) - 1;
}

static size_t hc_home(const struct hcache *c, uint64_t key)
{
	return (size_t)(key >> (64 - c->bits));
}

static size_t hc_charge(size_t len)
{
	return (len <= HC_CELL ? HC_CELL : len + 16) + HC_ENTRY_COST;
}

/* Room for a head of len bytes; NULL on ENOMEM. */
static void *hc_alloc(struct hcache *c, size_t len)
{
	void *p;

	if (len > HC_CELL)
		return malloc(len);
	if (!c->free_cells) {
		struct hc_slab *sl = malloc(sizeof(*sl) +
					    (size_t)HC_SLAB_CELLS * HC_CELL);

		if (!sl)
			return NULL;
		sl->next = c->slabs;
		c->slabs = sl;
		for (unsigned i = 0; i < HC_SLAB_CELLS; i++) {
			void **cell = (void **)((char *)sl->cells +
						(size_t)i * HC_CELL);

			*cell = c->free_cells;
			c->free_cells = cell;
		}
	}
	p = c->free_cells;
	c->free_cells = *(void **)p;
	return p;
}

static void hc_release(struct hcache *c, void *head, size_t len)
{
	if (len > HC_CELL) {
		free(head);
		return;
	}
	*(void **)head = c->free_cells;
	c->free_cells = head;
}

uint64_t hcache_key(uint32_t table, const void *key, size_t klen)
{
	return XXH3_64bits_withSeed(key, klen, table);
}

/*
 * A zeroed table of 1 << bits slots. One of 2 MiB or more asks for huge
 * pages: its lookups land anywhere in it, and with 4 KiB pages nearly
 * each one also misses the TLB.
 */
static struct hc_slot *hc_table(unsigned bits)
{
	size_t size = sizeof(struct hc_slot) << bits, huge = 2u << 20;
	struct hc_slot *t;

	if (size < huge)
		return calloc(1, size);
	if (!(t = aligned_alloc(huge, size)))
		return NULL;
	madvise(t, size, MADV_HUGEPAGE);      /* a hint; fine if refused */
	return memset(t, 0, size);
}

struct hcache *hcache_new(_Atomic size_t *total, size_t budget)
{
	struct hcache *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->bits = HC_MIN_BITS;
	c->slots = hc_table(c->bits);
	if (!c->slots) {
		free(c);
		return NULL;
	}
	c->total = total;
	c->budget = budget;
	return c;
}

void hcache_free(struct hcache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i <= hc_mask(c); i++)
		if (c->slots[i].addr && c->slots[i].len > HC_CELL)
			free(c->slots[i].head);
	while (c->slabs) {
		struct hc_slab *next = c->slabs->next;

		free(c->slabs);
		c->slabs = next;
	}
	atomic_fetch_sub(c->total, c->bytes);
	free(c->slots);
	free(c);
}

/* The slot of key, or the empty slot where its probe ends. */
static size_t hc_probe(const struct hcache *c, uint64_t key)
{
	size_t i = hc_home(c, key);

	while (c->slots[i].addr && c->slots[i].key != key)
		i = (i + 1) & hc_mask(c);
	return i;
}

/* Charge (or give back, delta < 0) bytes of this cache. */
static void hc_account(struct hcache *c, ptrdiff_t delta)
{
	c->bytes += (size_t)delta;
	atomic_fetch_add(c->total, (size_t)delta);
}

/* Free slot i's head and empty the slot, shifting back the entries after
 * it that probed past it. */
static void hc_remove(struct hcache *c, size_t i)
{
	size_t mask = hc_mask(c), j = i;

	hc_release(c, c->slots[i].head, c->slots[i].len);
	hc_account(c, -(ptrdiff_t)hc_charge(c->slots[i].len));
	for (;;) {
		j = (j + 1) & mask;
		if (!c->slots[j].addr)
			break;
		/* the entry at j may fill i if i lies on its probe path */
		if (((j - hc_home(c, c->slots[j].key)) & mask) >=
		    ((j - i) & mask)) {
			c->slots[i] = c->slots[j];
			i = j;
		}
	}
	c->slots[i] = (struct hc_slot){ 0 };
	c->count--;
}

/* Evict one entry, the first at or after the hand. */
static void hc_evict(struct hcache *c)
{
	size_t i = c->hand & hc_mask(c);

	while (!c->slots[i].addr)
		i = (i + 1) & hc_mask(c);
	hc_remove(c, i);
	c->hand = i;
}

/* Grow the table fourfold until n entries keep it at most half full (a
 * rehash touches every entry: growing by four rehashes a third as many
 * as doubling). */
static int hc_grow(struct hcache *c, size_t n)
{
	struct hcache bigger = *c;
	size_t oldn = hc_mask(c) + 1;

	while (n * 2 > ((size_t)1 << bigger.bits))
		bigger.bits += 2;
	if (bigger.bits == c->bits)
		return 0;
	bigger.slots = hc_table(bigger.bits);
	if (!bigger.slots)
		return -ENOMEM;
	for (size_t i = 0; i < oldn; i++) {
		if (i + HC_AHEAD < oldn && c->slots[i + HC_AHEAD].addr)
			hcache_prefetch(&bigger, c->slots[i + HC_AHEAD].key);
		if (c->slots[i].addr)
			bigger.slots[hc_probe(&bigger, c->slots[i].key)] =
				c->slots[i];
	}
	free(c->slots);
	c->slots = bigger.slots;
	c->bits = bigger.bits;
	return 0;
}

static bool hc_over(const struct hcache *c, size_t charge)
{
	return atomic_load_explicit(c->total, memory_order_relaxed) + charge >
	       c->budget;
}

void hcache_put(struct hcache *c, uint64_t key, uint64_t addr,
		const void *head, size_t len)
{
	size_t charge = hc_charge(len), i = hc_probe(c, key);
	void *copy;

	if (c->slots[i].addr)         /* the head of key's earlier value */
		hc_remove(c, i);
	if (!addr || charge > c->budget)
		return;
	while (c->count && hc_over(c, charge))
		hc_evict(c);
	if (hc_over(c, charge))
		return;               /* the other caches hold the budget */
	if (hc_grow(c, c->count + 1) || !(copy = hc_alloc(c, len)))
		return;
	memcpy(copy, head, len);
	c->slots[hc_probe(c, key)] = (struct hc_slot){ key, addr, copy, len };
	c->count++;
	hc_account(c, (ptrdiff_t)charge);
}

int hcache_get(struct hcache *c, uint64_t key, uint64_t addr, void **head,
	       size_t *len)
{
	const struct hc_slot *s = &c->slots[hc_probe(c, key)];

	if (!addr || s->addr != addr)
		return BARREL_E_NOTFOUND;
	if (!(*head = malloc(s->len ? s->len : 1)))
		return -ENOMEM;
	memcpy(*head, s->head, s->len);
	*len = s->len;
	return 0;
}

void hcache_prefetch(const struct hcache *c, uint64_t key)
{
	__builtin_prefetch(&c->slots[hc_home(c, key)]);
}

void hcache_prefetch_head(const struct hcache *c, uint64_t key)
{
	const struct hc_slot *s = &c->slots[hc_home(c, key)];

	if (s->key == key && s->head)
		__builtin_prefetch(s->head);
}

void hcache_reserve(struct hcache *c, size_t n)
{
	size_t most = c->budget / HC_ENTRY_COST;   /* what can ever fit */

	if (c->count + n > most)
		n = most > c->count ? most - c->count : 0;
	hc_grow(c, c->count + n);     /* a failure is only a later one */
}

size_t hcache_count(const struct hcache *c)
{
	return c->count;
}

size_t hcache_bytes(const struct hcache *c)
{
	return c->bytes;
}
