#include "config.h"
#include "engine/hcache.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"

/*
 * An open-addressed table of slots, linear probing from the address's
 * hash; a deletion shifts the rest of its cluster back, so there are no
 * tombstones and a probe ends at the first empty slot. Address 0 (never
 * a record's: the segment header is at offset 0) marks an empty slot.
 * The table doubles at half full.
 */

#define HC_MIN_BITS 10u
/* What an entry costs besides its bytes: two slots (the table is at most
 * half full) and the allocator's header. */
#define HC_ENTRY_COST (2 * sizeof(struct hc_slot) + 16)

struct hc_slot {
	uint64_t addr;                /* 0: empty */
	void *head;                   /* malloc'ed */
	size_t len;
};

struct hcache {
	struct hc_slot *slots;
	unsigned bits;                /* 1 << bits slots */
	size_t count;
	size_t bytes;                 /* this cache's charge */
	size_t hand;                  /* where eviction looks next */
	_Atomic size_t *total;
	size_t budget;
};

static size_t hc_mask(const struct hcache *c)
{
	return ((size_t)1 << c->bits) - 1;
}

static size_t hc_home(const struct hcache *c, uint64_t addr)
{
	return (size_t)((addr * 0x9E3779B97F4A7C15ull) >> (64 - c->bits));
}

static size_t hc_charge(size_t len)
{
	return len + HC_ENTRY_COST;
}

struct hcache *hcache_new(_Atomic size_t *total, size_t budget)
{
	struct hcache *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->bits = HC_MIN_BITS;
	c->slots = calloc((size_t)1 << c->bits, sizeof(*c->slots));
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
		free(c->slots[i].head);
	atomic_fetch_sub(c->total, c->bytes);
	free(c->slots);
	free(c);
}

/* The slot of addr, or of the empty slot where its probe ends. */
static size_t hc_probe(const struct hcache *c, uint64_t addr)
{
	size_t i = hc_home(c, addr);

	while (c->slots[i].addr && c->slots[i].addr != addr)
		i = (i + 1) & hc_mask(c);
	return i;
}

/* Empty slot i, shifting back the entries after it that probed past it. */
static void hc_remove(struct hcache *c, size_t i)
{
	size_t mask = hc_mask(c), j = i;
	size_t charge = hc_charge(c->slots[i].len);

	for (;;) {
		j = (j + 1) & mask;
		if (!c->slots[j].addr)
			break;
		/* the entry at j may fill i if i lies on its probe path */
		if (((j - hc_home(c, c->slots[j].addr)) & mask) >=
		    ((j - i) & mask)) {
			c->slots[i] = c->slots[j];
			i = j;
		}
	}
	c->slots[i] = (struct hc_slot){ 0 };
	c->count--;
	c->bytes -= charge;
	atomic_fetch_sub(c->total, charge);
}

/* Evict one entry, the first at or after the hand. */
static void hc_evict(struct hcache *c)
{
	size_t i = c->hand & hc_mask(c);

	while (!c->slots[i].addr)
		i = (i + 1) & hc_mask(c);
	free(c->slots[i].head);
	hc_remove(c, i);
	c->hand = i;
}

static int hc_grow(struct hcache *c)
{
	struct hcache bigger = *c;
	size_t oldn = hc_mask(c) + 1;

	bigger.bits = c->bits + 1;
	bigger.slots = calloc((size_t)1 << bigger.bits, sizeof(*bigger.slots));
	if (!bigger.slots)
		return -ENOMEM;
	for (size_t i = 0; i < oldn; i++)
		if (c->slots[i].addr)
			bigger.slots[hc_probe(&bigger, c->slots[i].addr)] =
				c->slots[i];
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

void hcache_put(struct hcache *c, uint64_t addr, const void *head,
		size_t len)
{
	size_t charge = hc_charge(len);
	void *copy;

	size_t i = hc_probe(c, addr);

	if (c->slots[i].addr) {       /* not expected: replace it */
		free(c->slots[i].head);
		hc_remove(c, i);
	}
	if (!addr || charge > c->budget)
		return;
	while (c->count && hc_over(c, charge))
		hc_evict(c);
	if (hc_over(c, charge))
		return;               /* the other caches hold the budget */
	if ((c->count + 1) * 2 > hc_mask(c) + 1 && hc_grow(c))
		return;
	if (!(copy = malloc(len ? len : 1)))
		return;
	memcpy(copy, head, len);
	c->slots[hc_probe(c, addr)] = (struct hc_slot){ addr, copy, len };
	c->count++;
	c->bytes += charge;
	atomic_fetch_add(c->total, charge);
}

int hcache_take(struct hcache *c, uint64_t addr, void **head, size_t *len)
{
	size_t i = hc_probe(c, addr);

	if (!addr || !c->slots[i].addr)
		return BARREL_E_NOTFOUND;
	*head = c->slots[i].head;
	*len = c->slots[i].len;
	hc_remove(c, i);
	return 0;
}

size_t hcache_count(const struct hcache *c)
{
	return c->count;
}

size_t hcache_bytes(const struct hcache *c)
{
	return c->bytes;
}
