/*
 * The head cache: one database's value heads (btxn_put_ex()), the first
 * bytes of values a later writer edits, by the address of the record that
 * holds the value. A record's bytes never change and an address is never
 * reused while the database is open, so a head found under the address a
 * key's index entry names is that value's head: there is nothing to
 * invalidate.
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

/*
 * Copy len bytes at head as the head of the record at addr (not already
 * cached). A head that does not fit the budget, or a failed allocation,
 * is dropped: only a later miss.
 */
void hcache_put(struct hcache *c, uint64_t addr, const void *head,
		size_t len);

/*
 * Take the head of the record at addr out of the cache: *head (malloc'ed,
 * the caller's) and *len. A value's head serves the one edit that
 * supersedes it; that edit's put caches its own. BARREL_E_NOTFOUND when
 * it is not cached.
 */
int hcache_take(struct hcache *c, uint64_t addr, void **head, size_t *len);

/* Heads cached and their charge, in bytes. */
size_t hcache_count(const struct hcache *c);
size_t hcache_bytes(const struct hcache *c);

#endif
