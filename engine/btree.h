/*
 * A persistent copy-on-write B+tree, paged through a node cache.
 *
 * Keys and values are byte strings compared with memcmp order (shorter
 * prefix first). A tree is named by a root reference (struct bt_ref). A
 * reference either points at an in-memory node (mem != NULL: written since
 * the last flush, "dirty") or at a node record on disk (addr, size: "clean"),
 * loaded on demand through the store's node cache.
 *
 * Nodes are immutable once shared. An update copies the path from the
 * root down to the leaf, reusing in place only nodes it holds the single
 * reference to, and returns a new root; holders of the old root (reader
 * snapshots) keep seeing the old tree. In-memory nodes are reference
 * counted atomically, so a reader never waits for the writer.
 *
 * Threads: any number of readers may use any roots they hold concurrently.
 * Updates (bt_put/bt_del/bt_flush/bt_touch) on the same root are serialized
 * by the caller (the database writer lock).
 */
#ifndef BARREL_BTREE_H
#define BARREL_BTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BT_MAX_KEY 1024u
#define BT_MAX_VAL 1280u
/* Nodes are split when their encoded size would pass this. */
#define BT_NODE_TARGET 4096u

struct bt_node;
struct bcache;

struct bt_ref {
	struct bt_node *mem;   /* a counted reference, or NULL */
	uint64_t addr;         /* when mem == NULL: the node record (0: empty tree) */
	uint32_t size;         /* framed size of that record */
};

/* How the tree reaches storage; supplied by the database. */
struct bt_store_ops {
	/*
	 * Read and validate the node record at addr (framed size). *buf is a
	 * malloc'ed copy of the node payload owned by the caller.
	 */
	int (*read)(void *ctx, uint64_t addr, uint32_t size, void **buf,
		    uint32_t *len);
	/* Append a node payload as a record; returns its address and size. */
	int (*write)(void *ctx, const void *buf, uint32_t len, uint64_t *addr,
		     uint32_t *size);
	/* A clean node record has been replaced by a copy (space accounting). */
	void (*released)(void *ctx, uint64_t addr, uint32_t size);
};

struct bt_store {
	const struct bt_store_ops *ops;
	void *ctx;
	struct bcache *cache;  /* borrowed; shared by every tree of an env */
	uint64_t cache_ns;     /* distinguishes this store's addresses in the cache */
	/* Bytes of dirty in-memory nodes created by updates; writer only. */
	uint64_t dirty_bytes;
	/* Updates made through this store (put, del, flush, touch); writer
	 * only. A memo taken before the last one is stale. */
	uint64_t mods;
	/* bt_flush marks every node it writes with this (0: no mark), so a
	 * tree sharing those nodes can adopt the records (bt_adopt()). */
	uint64_t stamp;
};

/* An empty tree. */
#define BT_REF_EMPTY ((struct bt_ref){ NULL, 0, 0 })

static inline bool bt_ref_is_empty(const struct bt_ref *r)
{
	return r->mem == NULL && r->addr == 0;
}

/* A second counted reference to the same tree (for a snapshot). */
struct bt_ref bt_ref_dup(const struct bt_ref *r);
/* Drop a reference; frees in-memory nodes no longer referenced. */
void bt_ref_release(struct bt_ref *r);

/*
 * Look up key. On success copies the value into val (room for BT_MAX_VAL)
 * and sets *vlen. BARREL_E_NOTFOUND when absent; BARREL_E_CORRUPT or
 * -errno when a node cannot be read.
 */
int bt_get(struct bt_store *st, const struct bt_ref *root, const void *key,
	   size_t klen, void *val, size_t *vlen);

/*
 * Insert or replace key -> val in the tree at *root, replacing *root with
 * the new tree (the old reference is consumed). When old/oldlen are non-NULL
 * and the key existed, its previous value is copied to old (BT_MAX_VAL) and
 * *existed set true. BARREL_E_TOOBIG when klen > BT_MAX_KEY or
 * vlen > BT_MAX_VAL. On error *root is unchanged.
 */
int bt_put(struct bt_store *st, struct bt_ref *root, const void *key,
	   size_t klen, const void *val, size_t vlen, void *old,
	   size_t *oldlen, bool *existed);

/*
 * A remembered descent, for a writer that reads a key and then writes it.
 * bt_get_memo() looks key up as bt_get() does and keeps the path it took
 * in m, its clean nodes pinned; a bt_put_memo() of the same key into the
 * same tree, when no update of the tree came in between (st->mods and the
 * root unchanged), starts from that path instead of descending again. Any
 * bt_put_memo() consumes the memo, used or not. Writer only: m belongs to
 * whoever holds the writer slot, and must be cleared before the tree is
 * released or replaced other than through these calls (a transaction's
 * abort, a table's drop). m may be NULL: no memo.
 */
struct bt_memo;

/* An empty memo, or NULL when out of memory. */
struct bt_memo *bt_memo_new(void);
/* Unpin and forget the path it holds, if any. */
void bt_memo_clear(struct bt_memo *m);
void bt_memo_free(struct bt_memo *m);

int bt_get_memo(struct bt_store *st, const struct bt_ref *root,
		const void *key, size_t klen, void *val, size_t *vlen,
		struct bt_memo *m);
int bt_put_memo(struct bt_store *st, struct bt_ref *root, const void *key,
		size_t klen, const void *val, size_t vlen, void *old,
		size_t *oldlen, bool *existed, struct bt_memo *m);

/* Remove key; BARREL_E_NOTFOUND when absent. old as for bt_put. */
int bt_del(struct bt_store *st, struct bt_ref *root, const void *key,
	   size_t klen, void *old, size_t *oldlen);

/*
 * Write every dirty node reachable from *root, children before parents,
 * through ops->write, and replace *root by a clean reference to the new
 * root record (dropping the in-memory nodes once no one else holds them).
 */
int bt_flush(struct bt_store *st, struct bt_ref *root);

/*
 * The tree at *root shares in-memory nodes with the tree at *flushed,
 * which another store flushed with the nonzero stamp from a reference of
 * its own (a background checkpoint of a frozen version): replace each of
 * them by a clean reference to the record that flush wrote, so the next
 * bt_flush does not write it again. Nodes on the way that the tree shares
 * with other holders are copied first; the rest is changed in place. The
 * records of flushed nodes the tree no longer holds (it changed them
 * since) are reported through st->ops->released. *flushed must still be
 * held, its nodes unchanged, while this runs. Counts as an update;
 * st->dirty_bytes is left for the caller to recount (bt_dirty_size()).
 * -ENOMEM leaves a tree that is whole, with some nodes not adopted (and
 * nothing reported).
 */
int bt_adopt(struct bt_store *st, struct bt_ref *root,
	     const struct bt_ref *flushed, uint64_t stamp);

/*
 * Exact bytes of the in-memory (dirty) nodes reachable from root; walks
 * them. st->dirty_bytes is a running estimate that drifts upward (nodes
 * freed by splits and merges are not subtracted); callers that act on it
 * correct it with this.
 */
uint64_t bt_dirty_size(const struct bt_ref *root);

/*
 * GC support. The clean node record at addr, at tree level `level`
 * (0 = leaf) whose first key is key, is being moved: if it is still part of
 * the tree at *root, copy the path to it so the next bt_flush rewrites it,
 * and return 1; return 0 when it is no longer reachable.
 */
int bt_touch(struct bt_store *st, struct bt_ref *root, unsigned level,
	     const void *key, size_t klen, uint64_t addr);

/*
 * Decode just enough of a node payload (from a REC_NODE record) to name it
 * for bt_touch: its level and first key (borrowed from buf).
 * BARREL_E_CORRUPT when the payload is malformed.
 */
int bt_node_ident(const void *buf, uint32_t len, unsigned *level,
		  const void **key, size_t *klen);

/*
 * Range iteration in key order (or reverse), over [start, end) by default.
 * NULL start/end mean unbounded. The iterator holds its own reference to
 * the root, so the caller may release theirs.
 */
enum bt_iter_flags {
	BT_ITER_REVERSE = 1 << 0,
	BT_ITER_END_INCLUSIVE = 1 << 1,
};

struct bt_iter;

int bt_iter_new(struct bt_store *st, const struct bt_ref *root,
		const void *start, size_t slen, const void *end, size_t elen,
		unsigned flags, struct bt_iter **out);
/*
 * 1 with *key and *val borrowed until the next call or bt_iter_free();
 * 0 at the end; <0 on error (BARREL_E_CORRUPT, -errno).
 */
int bt_iter_next(struct bt_iter *it, const void **key, size_t *klen,
		 const void **val, size_t *vlen);
void bt_iter_free(struct bt_iter *it);

#endif
