/*
 * The head cache: one database's value heads (btxn_put_ex()), the first
 * bytes of values a later writer edits. An entry is a key's (named by a
 * 64-bit hash of table and key) with the address of the record whose
 * head it holds. A record's bytes never change and an address is never
 * reused while the database is open, so a head is good exactly when the
 * key's index entry names its address: there is nothing to invalidate,
 * and a hash collision only makes a miss.
 *
 * Not thread-safe: the database's writer uses it, with the writer slot
 * held. Bounded by a byte budget shared by every cache of an environment
 * (a counter the caches add their charge to); a put over the budget first
 * evicts entries of its own cache, in table order from a moving hand (the
 * entries are in hash order: random).
 */
#ifndef BARREL_HCACHE_H
#define BARREL_HCACHE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct hcache;

/* total: the charge of every cache sharing budget (borrowed, outlives the
 * cache). Returns NULL on ENOMEM. */
struct hcache *hcache_new(_Atomic size_t *total, size_t budget);

/* Frees every head and gives back their charge. NULL is a no-op. */
void hcache_free(struct hcache *c);

/* The name of key of table in the cache. */
uint64_t hcache_key(uint32_t table, const void *key, size_t klen);

/*
 * Copy len bytes at head as key's head, of the record at addr (never 0),
 * replacing what key had. A head that does not fit the budget, or a
 * failed allocation, only drops key's entry: a later miss.
 */
void hcache_put(struct hcache *c, uint64_t key, uint64_t addr,
		const void *head, size_t len);

/*
 * A copy of key's head when it is of the record at addr: *head (malloc'ed,
 * the caller's) and *len. BARREL_E_NOTFOUND when key has no head of that
 * record; -ENOMEM.
 */
int hcache_get(struct hcache *c, uint64_t key, uint64_t addr, void **head,
	       size_t *len);

/*
 * Hints, which change nothing: start loading the slot of key (a lookup
 * to come), or, when that slot is already at hand, the head it holds.
 * A writer hints the next key of a batch, then the head at the start of
 * its lookup, so the cache's misses overlap with the index's.
 */
void hcache_prefetch(const struct hcache *c, uint64_t key);
void hcache_prefetch_head(const struct hcache *c, uint64_t key);

/* For a batch of puts: room for n more heads without growing the table. */
void hcache_reserve(struct hcache *c, size_t n);

/* Heads cached and their charge, in bytes. */
size_t hcache_count(const struct hcache *c);
size_t hcache_bytes(const struct hcache *c);

#endif
