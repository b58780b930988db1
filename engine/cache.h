/*
 * The node cache: decoded clean B-tree nodes keyed by (namespace, address),
 * shared by every database of an environment and bounded by a byte budget
 * (default 256 MiB). Entries in use are pinned by a reference count and
 * are never evicted; unpinned ones are evicted by CLOCK when over budget.
 *
 * The cache stores opaque objects: the B-tree hands it a loader that reads
 * and decodes a node and a destructor. Thread-safe (striped locks).
 */
#ifndef BARREL_CACHE_H
#define BARREL_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct bcache;

struct bcache_stats {
	uint64_t hits, misses, evictions;
	size_t bytes;      /* charged bytes currently cached */
	size_t budget;
};

/* Returns NULL on ENOMEM. */
struct bcache *bcache_new(size_t budget);
/* Every entry must be unpinned. */
void bcache_free(struct bcache *c);

/*
 * Load: on a miss, called (without cache locks held) to produce the object
 * and its charge in bytes; returns 0 or an error, which bcache_get returns.
 */
typedef int (*bcache_load_fn)(void *arg, void **obj, size_t *charge);
typedef void (*bcache_free_fn)(void *obj);

struct bcache_handle;

/*
 * Find or load the object for (ns, addr); the entry is pinned until
 * bcache_put(h). Concurrent misses on one key may both load; one wins and
 * the other's object is destroyed.
 */
int bcache_get(struct bcache *c, uint64_t ns, uint64_t addr,
	       bcache_load_fn load, void *arg, bcache_free_fn destroy,
	       struct bcache_handle **h);

/* The object of a pinned entry; borrowed until bcache_put(h). */
void *bcache_value(const struct bcache_handle *h);

/* Unpin an entry returned by bcache_get(). */
void bcache_put(struct bcache *c, struct bcache_handle *h);

/* Drop every unpinned entry of namespace ns (a database closed). */
void bcache_drop_ns(struct bcache *c, uint64_t ns);

void bcache_stats(struct bcache *c, struct bcache_stats *st);

#endif
