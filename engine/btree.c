#include "config.h"
#include "engine/btree.h"

#include <endian.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cache.h"
#include "engine/error.h"
#include "engine/log.h"

/*
 * Copy-on-write B+tree (FORMAT-btree.md has the node payload).
 *
 * Nodes. A node holds `count` entries in key order. Leaves map key to
 * value. In an internal node entry i pairs a key with the reference to
 * child i; key i (i >= 1) is the separator: every key of child i is >=
 * key i and every key of child i-1 is < key i. Key 0 is the node's fence,
 * a lower bound of its subtree that still routes to the node from the
 * root (empty on the leftmost spine); searches ignore it, and GC names an
 * internal node record by it (bt_node_ident). Invariants:
 *   1. keys of a node are strictly increasing (key 0 included);
 *   2. the fence of an internal node is <= every key in its subtree and
 *      routes to the node; a node the writer modifies gets its exact fence
 *      (the parent's key, or the parent's fence for child 0), a node left
 *      alone may keep an older, higher fence after its left neighbour was
 *      removed, which still satisfies 2;
 *   3. a child is exactly one level below its parent; no node in a tree
 *      is empty (an empty root is BT_REF_EMPTY).
 *
 * Memory. Entry bytes live in one node-owned heap: slot i names key i at
 * heap + off and its value right after it, so a node payload decoded from
 * disk (whose entries are laid out the same way) is used in place. A
 * replaced entry leaves dead bytes; the heap is compacted when it grows.
 * Slots also hold the first 8 key bytes as a number, so a binary search
 * mostly stays in the slot array and touches the heap only on ties.
 *
 * Ownership. In-memory ("dirty") nodes are counted by the bt_refs naming
 * them and are immutable once a second reference exists. Clean nodes are
 * decoded objects owned by the cache (or by the caller when there is no
 * cache) and always immutable; their children are clean references.
 *
 * Updates run in four steps:
 *   1. find: descend to the leaf, pinning clean nodes (read errors stop
 *      here, nothing changed);
 *   2. own: make the path writable top-down, reusing a node only when its
 *      reference is the only one and its parent was reused or copied; the
 *      root is copied into a new reference when shared, so *root stays
 *      valid if this step or step 3 fails (out of memory);
 *   3. change the leaf (room is reserved before anything is written);
 *   4. fix sizes bottom-up (split, or merge/redistribute), collapse the
 *      root, report the replaced clean records, install the new root.
 *      Allocation failures here leave a valid, merely unbalanced tree.
 */

#define BT_HDR 4u                   /* level, flags, count */
#define BT_MAX_DEPTH 40u            /* levels; deeper payloads are corrupt */
#define BT_UNDERFULL (BT_NODE_TARGET / 4)
#define BT_MAX_COUNT 0xffffu        /* the count field is 16 bits */
#define BT_HEAP_SLACK 256u

struct bt_slot {
	uint64_t pfx;       /* bt_prefix() of the key */
	uint32_t off;       /* key at heap + off, value right after it */
	uint16_t klen;
	uint16_t vlen;      /* 0 in internal nodes */
};

struct bt_node {
	atomic_uint refs;   /* counted bt_refs to a dirty node; 0 when cached */
	unsigned level;     /* 0: leaf */
	unsigned count;     /* entries */
	unsigned cap;       /* slots (and kids) allocated */
	uint32_t bytes;     /* size of the encoded payload */
	struct bt_slot *slot;
	struct bt_ref *kid; /* internal nodes: the child of entry i */
	uint8_t *heap;
	uint32_t heap_len, heap_cap, heap_dead;
	/* the record bt_flush last wrote this node to, and the store's stamp
	 * then; set by the flush, read by the next one or by bt_adopt() */
	uint64_t wr_addr;
	uint32_t wr_size;
	uint64_t wr_stamp;
};

/* A clean node in use: pinned in the cache, or owned when there is none. */
struct bt_pin {
	struct bcache_handle *h;
	struct bt_node *own;
};

/* ---- keys and entries ---- */

static int bt_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int c = n ? memcmp(a, b, n) : 0;

	if (c)
		return c;
	return (alen > blen) - (alen < blen);
}

/*
 * The first 8 bytes of a key, zero-padded, as a big-endian number. Keys
 * whose prefixes differ compare as their prefixes do (a zero pad sorts
 * like the end of the shorter key); equal prefixes need the full keys.
 */
static inline uint64_t bt_prefix(const void *key, size_t klen)
{
	uint64_t v = 0;

	if (klen)
		memcpy(&v, key, klen < 8 ? klen : 8);
	return be64toh(v);
}

static inline const uint8_t *bt_key(const struct bt_node *n, unsigned i)
{
	return n->heap + n->slot[i].off;
}

static inline const uint8_t *bt_val(const struct bt_node *n, unsigned i)
{
	return n->heap + n->slot[i].off + n->slot[i].klen;
}

/* Compare key i of n with key, whose bt_prefix() is pfx. */
static inline int bt_cmp_at(const struct bt_node *n, unsigned i,
			    const void *key, size_t klen, uint64_t pfx)
{
	uint64_t p = n->slot[i].pfx;

	if (p != pfx)
		return p < pfx ? -1 : 1;
	return bt_cmp(bt_key(n, i), n->slot[i].klen, key, klen);
}

/* Encoded bytes of one entry (FORMAT-btree.md). */
static inline uint32_t bt_entry_bytes(unsigned level, size_t klen, size_t vlen)
{
	return level ? 2 + (uint32_t)klen + 12 : 4 + (uint32_t)(klen + vlen);
}

static inline uint32_t bt_slot_bytes(const struct bt_node *n, unsigned i)
{
	return bt_entry_bytes(n->level, n->slot[i].klen, n->slot[i].vlen);
}

/* First entry whose key is >= key (count if none); *eq when equal. */
static unsigned bt_lower_bound(const struct bt_node *n, const void *key,
			       size_t klen, bool *eq)
{
	uint64_t pfx = bt_prefix(key, klen);
	unsigned lo = 0, hi = n->count;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (bt_cmp_at(n, mid, key, klen, pfx) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*eq = lo < n->count && bt_cmp_at(n, lo, key, klen, pfx) == 0;
	return lo;
}

/* First entry at or after from whose key is > key (count if none). */
static unsigned bt_upper_from(const struct bt_node *n, unsigned from,
			      const void *key, size_t klen)
{
	uint64_t pfx = bt_prefix(key, klen);
	unsigned lo = from, hi = n->count;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (bt_cmp_at(n, mid, key, klen, pfx) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* First entry whose key is > key (count if none). */
static unsigned bt_upper_bound(const struct bt_node *n, const void *key,
			       size_t klen)
{
	return bt_upper_from(n, 0, key, klen);
}

/* The child of an internal node that holds key (the fence is ignored). */
static unsigned bt_route(const struct bt_node *n, const void *key, size_t klen)
{
	return bt_upper_from(n, 1, key, klen) - 1;
}

/* ---- in-memory nodes ---- */

static void bt_node_free(struct bt_node *n)
{
	if (n->kid)
		for (unsigned i = 0; i < n->count; i++)
			bt_ref_release(&n->kid[i]);
	free(n->slot);
	free(n->kid);
	free(n->heap);
	free(n);
}

/* The cache's destructor for decoded nodes. */
static void bt_node_destroy(void *obj)
{
	bt_node_free(obj);
}

struct bt_ref bt_ref_dup(const struct bt_ref *r)
{
	if (r->mem)
		atomic_fetch_add_explicit(&r->mem->refs, 1, memory_order_relaxed);
	return *r;
}

void bt_ref_release(struct bt_ref *r)
{
	struct bt_node *n = r->mem;

	*r = BT_REF_EMPTY;
	/* acq_rel: the last holder sees every other holder's reads done
	 * (a plain release plus an acquire fence, in a form TSan follows) */
	if (n && atomic_fetch_sub_explicit(&n->refs, 1,
					   memory_order_acq_rel) == 1)
		bt_node_free(n);
}

/* Is this the only reference to its in-memory node? */
static bool bt_ref_exclusive(const struct bt_ref *r)
{
	return r->mem &&
	       atomic_load_explicit(&r->mem->refs, memory_order_acquire) == 1;
}

/* Drop a reference the tree no longer holds, reporting a clean record. */
static void bt_ref_drop(struct bt_store *st, struct bt_ref *r)
{
	if (!r->mem && r->addr && st->ops->released)
		st->ops->released(st->ctx, r->addr, r->size);
	bt_ref_release(r);
}

/* An empty dirty node with one reference (its creator's). */
static struct bt_node *bt_node_new(unsigned level, unsigned cap,
				   uint32_t heap_cap)
{
	struct bt_node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	atomic_init(&n->refs, 1);
	n->level = level;
	n->cap = cap;
	n->bytes = BT_HDR;
	n->heap_cap = heap_cap;
	n->slot = malloc(cap * sizeof(*n->slot));
	n->heap = malloc(heap_cap ? heap_cap : 1);
	if (level)
		n->kid = malloc(cap * sizeof(*n->kid));
	if (!n->slot || !n->heap || (level && !n->kid)) {
		bt_node_free(n);
		return NULL;
	}
	return n;
}

/* Copy entries [from, to) of src to the end of dst (room reserved). */
static void bt_node_append(struct bt_node *dst, const struct bt_node *src,
			   unsigned from, unsigned to)
{
	for (unsigned i = from; i < to; i++) {
		struct bt_slot s = src->slot[i];
		uint32_t len = s.klen + s.vlen;

		memcpy(dst->heap + dst->heap_len, src->heap + s.off, len);
		s.off = dst->heap_len;
		dst->heap_len += len;
		dst->slot[dst->count] = s;
		if (dst->kid)
			dst->kid[dst->count] = bt_ref_dup(&src->kid[i]);
		dst->count++;
		dst->bytes += bt_slot_bytes(src, i);
	}
}

/* Live key and value bytes of entries [from, to). */
static uint32_t bt_live(const struct bt_node *n, unsigned from, unsigned to)
{
	uint32_t sum = 0;

	for (unsigned i = from; i < to; i++)
		sum += n->slot[i].klen + n->slot[i].vlen;
	return sum;
}

static void bt_dirty_sub(struct bt_store *st, uint32_t bytes)
{
	st->dirty_bytes -= st->dirty_bytes < bytes ? st->dirty_bytes : bytes;
}

/* A private, writable copy of n (dirty, one reference). */
static struct bt_node *bt_node_clone(struct bt_store *st,
				     const struct bt_node *n)
{
	struct bt_node *c = bt_node_new(n->level, n->count + 8,
					bt_live(n, 0, n->count) + BT_HEAP_SLACK);

	if (!c)
		return NULL;
	bt_node_append(c, n, 0, n->count);
	st->dirty_bytes += c->bytes;
	return c;
}

/* Rewrite the heap without dead bytes, with room for extra more. */
static int bt_node_compact(struct bt_node *n, uint32_t extra)
{
	uint32_t live = n->heap_len - n->heap_dead;
	uint32_t cap = live + extra;
	uint8_t *heap;

	cap += cap / 2 + BT_HEAP_SLACK;
	heap = malloc(cap);
	if (!heap)
		return -ENOMEM;
	n->heap_len = 0;
	for (unsigned i = 0; i < n->count; i++) {
		uint32_t len = n->slot[i].klen + n->slot[i].vlen;

		memcpy(heap + n->heap_len, n->heap + n->slot[i].off, len);
		n->slot[i].off = n->heap_len;
		n->heap_len += len;
	}
	free(n->heap);
	n->heap = heap;
	n->heap_cap = cap;
	n->heap_dead = 0;
	return 0;
}

/* Make room for `slots` more entries and `bytes` more heap bytes. */
static int bt_node_reserve(struct bt_node *n, unsigned slots, uint32_t bytes)
{
	if (n->count + slots > BT_MAX_COUNT)
		return -ENOMEM;
	if (n->count + slots > n->cap) {
		unsigned cap = n->cap * 2 > n->count + slots ?
			       n->cap * 2 : n->count + slots;
		struct bt_slot *s = realloc(n->slot, cap * sizeof(*s));

		if (!s)
			return -ENOMEM;
		n->slot = s;
		if (n->kid) {
			struct bt_ref *k = realloc(n->kid, cap * sizeof(*k));

			if (!k)
				return -ENOMEM;
			n->kid = k;
		}
		n->cap = cap;
	}
	if (n->heap_len + bytes > n->heap_cap)
		return bt_node_compact(n, bytes);
	return 0;
}

/* Insert an entry at i (room reserved); kid is moved into the node. */
static void bt_node_insert(struct bt_node *n, unsigned i, const void *key,
			   size_t klen, const void *val, size_t vlen,
			   struct bt_ref kid)
{
	memmove(&n->slot[i + 1], &n->slot[i], (n->count - i) * sizeof(*n->slot));
	if (n->kid) {
		memmove(&n->kid[i + 1], &n->kid[i],
			(n->count - i) * sizeof(*n->kid));
		n->kid[i] = kid;
	}
	n->slot[i] = (struct bt_slot){ bt_prefix(key, klen), n->heap_len,
				       (uint16_t)klen, (uint16_t)vlen };
	if (klen)
		memcpy(n->heap + n->heap_len, key, klen);
	if (vlen)
		memcpy(n->heap + n->heap_len + klen, val, vlen);
	n->heap_len += (uint32_t)(klen + vlen);
	n->count++;
	n->bytes += bt_entry_bytes(n->level, klen, vlen);
}

/* Remove entry i; the caller has dealt with its child reference. */
static void bt_node_remove(struct bt_node *n, unsigned i)
{
	n->heap_dead += n->slot[i].klen + n->slot[i].vlen;
	n->bytes -= bt_slot_bytes(n, i);
	n->count--;
	memmove(&n->slot[i], &n->slot[i + 1], (n->count - i) * sizeof(*n->slot));
	if (n->kid)
		memmove(&n->kid[i], &n->kid[i + 1],
			(n->count - i) * sizeof(*n->kid));
}

/* Give entry i a new key and value (room for klen + vlen reserved). */
static void bt_node_set(struct bt_node *n, unsigned i, const void *key,
			size_t klen, const void *val, size_t vlen)
{
	struct bt_slot *s = &n->slot[i];

	n->bytes -= bt_slot_bytes(n, i);
	n->heap_dead += s->klen + s->vlen;
	*s = (struct bt_slot){ bt_prefix(key, klen), n->heap_len,
			       (uint16_t)klen, (uint16_t)vlen };
	if (klen)
		memcpy(n->heap + n->heap_len, key, klen);
	if (vlen)
		memcpy(n->heap + n->heap_len + klen, val, vlen);
	n->heap_len += (uint32_t)(klen + vlen);
	n->bytes += bt_slot_bytes(n, i);
}

/* Set the fence (key 0) of an internal node; a no-op for leaves. */
static int bt_node_set_fence(struct bt_node *n, const void *fence, size_t flen)
{
	int err;

	if (!n->level || !n->count ||
	    bt_cmp_at(n, 0, fence, flen, bt_prefix(fence, flen)) == 0)
		return 0;
	err = bt_node_reserve(n, 0, (uint32_t)flen);
	if (err)
		return err;
	bt_node_set(n, 0, fence, flen, NULL, 0);
	return 0;
}

/* ---- the node payload (FORMAT-btree.md) ---- */

static inline uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static inline uint8_t *put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	return p + 2;
}

static inline uint8_t *put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 4;
}

static inline uint8_t *put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	return put_le32(p + 4, (uint32_t)(v >> 32));
}

/* What bt_check() found: the header, or why the payload is corrupt. */
struct bt_check {
	unsigned level, count;
	char why[96];
};

static int bt_bad(struct bt_check *c, const char *fmt, unsigned have,
		  unsigned expect)
{
	snprintf(c->why, sizeof(c->why), fmt, have, expect);
	return BARREL_E_CORRUPT;
}

/*
 * Check entry i at *off of p[0..len); advance *off past it and return
 * its key in *key, *klen.
 */
static int bt_check_entry(const uint8_t *p, uint32_t len, unsigned i,
			  uint32_t *off, const uint8_t **key, uint32_t *klen,
			  struct bt_check *c)
{
	uint32_t o = *off, need = c->level ? 2 : 4;
	uint32_t vlen = 0;

	if (len - o < need)
		return bt_bad(c, "short entry (have %u, expect >= %u)",
			      len - o, need);
	*klen = get_le16(p + o);
	if (*klen > BT_MAX_KEY)
		return bt_bad(c, "bad key length (have %u, expect <= %u)",
			      *klen, BT_MAX_KEY);
	if (!c->level) {
		vlen = get_le16(p + o + 2);
		if (vlen > BT_MAX_VAL)
			return bt_bad(c, "bad value length (have %u, expect <= %u)",
				      vlen, BT_MAX_VAL);
	}
	*key = p + o + need;
	need += *klen + vlen + (c->level ? 12 : 0);
	if (len - o < need)
		return bt_bad(c, "entry past the end (have %u, expect >= %u)",
			      len - o, need);
	if (c->level && (!get_le64(p + o + 2 + *klen) ||
			 !get_le32(p + o + 10 + *klen)))
		return bt_bad(c, "null child (entry %u of %u)", i, c->count);
	*off = o + need;
	return 0;
}

/*
 * THE validation of a node payload read from disk: header, every length
 * against the buffer, key order, exact size. Nothing of a payload is used
 * before this passes.
 */
static int bt_check(const void *buf, uint32_t len, struct bt_check *c)
{
	const uint8_t *p = buf, *prev = NULL;
	uint32_t off = BT_HDR, prevlen = 0;
	int err;

	if (len < BT_HDR)
		return bt_bad(c, "short header (have %u, expect >= %u)", len,
			      BT_HDR);
	c->level = p[0];
	c->count = get_le16(p + 2);
	if (c->level >= BT_MAX_DEPTH)
		return bt_bad(c, "bad level (have %u, expect < %u)", c->level,
			      BT_MAX_DEPTH);
	if (p[1])
		return bt_bad(c, "unknown flags (have %#x, expect %#x)", p[1], 0);
	if (!c->count)
		return bt_bad(c, "empty node (have %u, expect >= %u)", 0, 1);
	for (unsigned i = 0; i < c->count; i++) {
		const uint8_t *key;
		uint32_t klen;

		err = bt_check_entry(p, len, i, &off, &key, &klen, c);
		if (err)
			return err;
		if (prev && bt_cmp(prev, prevlen, key, klen) >= 0)
			return bt_bad(c, "keys out of order (entry %u of %u)", i,
				      c->count);
		prev = key;
		prevlen = klen;
	}
	if (off != len)
		return bt_bad(c, "trailing bytes (have %u, expect %u)", len, off);
	return 0;
}

/* Build a node over a checked payload; it takes buf as its heap. */
static int bt_decode(void *buf, uint32_t len, const struct bt_check *c,
		     struct bt_node **out)
{
	struct bt_node *n = calloc(1, sizeof(*n));
	const uint8_t *p = buf;
	uint32_t off = BT_HDR, live = 0;

	if (!n)
		return -ENOMEM;
	n->level = c->level;
	n->slot = malloc(c->count * sizeof(*n->slot));
	n->kid = n->level ? malloc(c->count * sizeof(*n->kid)) : NULL;
	if (!n->slot || (n->level && !n->kid)) {
		free(n->slot);
		free(n->kid);
		free(n);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < c->count; i++) {
		struct bt_slot *s = &n->slot[i];

		s->klen = get_le16(p + off);
		s->vlen = n->level ? 0 : get_le16(p + off + 2);
		s->off = off + (n->level ? 2 : 4);
		s->pfx = bt_prefix(p + s->off, s->klen);
		off = s->off + s->klen + s->vlen;
		if (n->level) {
			n->kid[i] = (struct bt_ref){ NULL, get_le64(p + off),
						     get_le32(p + off + 8) };
			off += 12;
		}
		live += s->klen + s->vlen;
	}
	n->count = n->cap = c->count;
	n->bytes = len;
	n->heap = buf;
	n->heap_len = n->heap_cap = len;
	n->heap_dead = len - live;
	*out = n;
	return 0;
}

/* Encode n into buf (n->bytes long); mem children must have been flushed. */
static void bt_encode(const struct bt_node *n, uint8_t *buf)
{
	uint8_t *p = buf;

	*p++ = (uint8_t)n->level;
	*p++ = 0;
	p = put_le16(p, (uint16_t)n->count);
	for (unsigned i = 0; i < n->count; i++) {
		const struct bt_slot *s = &n->slot[i];

		p = put_le16(p, s->klen);
		if (!n->level)
			p = put_le16(p, s->vlen);
		memcpy(p, n->heap + s->off, s->klen + s->vlen);
		p += s->klen + s->vlen;
		if (n->level) {
			const struct bt_ref *k = &n->kid[i];

			p = put_le64(p, k->mem ? k->mem->wr_addr : k->addr);
			p = put_le32(p, k->mem ? k->mem->wr_size : k->size);
		}
	}
}

int bt_node_ident(const void *buf, uint32_t len, unsigned *level,
		  const void **key, size_t *klen)
{
	const uint8_t *p = buf;
	struct bt_check c;
	int err = bt_check(buf, len, &c);

	if (err)
		return err;
	*level = c.level;
	*klen = get_le16(p + BT_HDR);
	*key = p + BT_HDR + (c.level ? 2 : 4);
	return 0;
}

/* ---- loading clean nodes ---- */

/* Check and decode a payload; takes buf. addr only names it in the log. */
static int bt_node_parse(void *buf, uint32_t len, uint64_t addr,
			 struct bt_node **out)
{
	struct bt_check c;
	int err = bt_check(buf, len, &c);

	if (err) {
		barrel_log(BLOG_ERR, "corrupt node: addr=%#llx: %s",
			   (unsigned long long)addr, c.why);
		goto out_free_buf;
	}
	err = bt_decode(buf, len, &c, out);
	if (err)
		goto out_free_buf;
	return 0;

out_free_buf:
	free(buf);
	return err;
}

static int bt_node_read(struct bt_store *st, uint64_t addr, uint32_t size,
			struct bt_node **out)
{
	void *buf = NULL;
	uint32_t len = 0;
	int err = st->ops->read(st->ctx, addr, size, &buf, &len);

	if (err)
		return err;
	return bt_node_parse(buf, len, addr, out);
}

static size_t bt_node_charge(const struct bt_node *n)
{
	return sizeof(*n) + n->heap_cap + n->cap * (sizeof(*n->slot) +
	       (n->kid ? sizeof(*n->kid) : 0));
}

/* Loader for the cache: read (or, after a write, take) and decode a node. */
struct bt_loader {
	struct bt_store *st;
	uint64_t addr;
	uint32_t size;
	void *buf;          /* a payload just written, or NULL to read it */
	uint32_t len;
};

static int bt_load_cb(void *arg, void **obj, size_t *charge)
{
	struct bt_loader *l = arg;
	struct bt_node *n;
	int err;

	if (l->buf) {
		err = bt_node_parse(l->buf, l->len, l->addr, &n);
		l->buf = NULL;
	} else {
		err = bt_node_read(l->st, l->addr, l->size, &n);
	}
	if (err)
		return err;
	*obj = n;
	*charge = bt_node_charge(n);
	return 0;
}

static void bt_unpin(struct bt_store *st, struct bt_pin *pin)
{
	if (pin->h)
		bcache_put(st->cache, pin->h);
	else if (pin->own)
		bt_node_free(pin->own);
	pin->h = NULL;
	pin->own = NULL;
}

/*
 * The node ref names, for reading: an in-memory node directly, a clean one
 * pinned (unpin with bt_unpin). want: the level the parent implies, or -1.
 */
static int bt_load(struct bt_store *st, const struct bt_ref *ref, int want,
		   struct bt_node **out, struct bt_pin *pin)
{
	struct bt_loader l = { st, ref->addr, ref->size, NULL, 0 };
	struct bt_node *n;
	int err;

	pin->h = NULL;
	pin->own = NULL;
	if (ref->mem) {
		*out = ref->mem;
		return 0;
	}
	if (st->cache) {
		err = bcache_get(st->cache, st->cache_ns, ref->addr, bt_load_cb,
				 &l, bt_node_destroy, &pin->h);
		n = err ? NULL : bcache_value(pin->h);
	} else {
		err = bt_node_read(st, ref->addr, ref->size, &pin->own);
		n = pin->own;
	}
	if (err)
		return err;
	if (want >= 0 && n->level != (unsigned)want) {
		barrel_log(BLOG_ERR, "corrupt node: addr=%#llx: bad level "
			   "(have %u, expect %d)", (unsigned long long)ref->addr,
			   n->level, want);
		bt_unpin(st, pin);
		return BARREL_E_CORRUPT;
	}
	*out = n;
	return 0;
}

/* Offer a just-written payload to the cache (takes buf). */
static void bt_cache_written(struct bt_store *st, uint64_t addr,
			     uint32_t size, void *buf, uint32_t len)
{
	struct bt_loader l = { st, addr, size, buf, len };
	struct bcache_handle *h;

	if (st->cache && !bcache_get(st->cache, st->cache_ns, addr, bt_load_cb,
				     &l, bt_node_destroy, &h))
		bcache_put(st->cache, h);
	free(l.buf);
}

/* ---- lookups ---- */

int bt_get(struct bt_store *st, const struct bt_ref *root, const void *key,
	   size_t klen, void *val, size_t *vlen)
{
	const struct bt_ref *ref = root;
	struct bt_pin pin = { NULL, NULL }, up;
	struct bt_node *n;
	int want = -1, err;
	unsigned i;
	bool eq;

	if (bt_ref_is_empty(root))
		return BARREL_E_NOTFOUND;
	for (;;) {
		up = pin;
		err = bt_load(st, ref, want, &n, &pin);
		bt_unpin(st, &up);
		if (err)
			return err;
		if (!n->level)
			break;
		i = bt_route(n, key, klen);
		ref = &n->kid[i];
		want = (int)n->level - 1;
	}
	i = bt_lower_bound(n, key, klen, &eq);
	if (eq) {
		*vlen = n->slot[i].vlen;
		memcpy(val, bt_val(n, i), *vlen);
	}
	bt_unpin(st, &pin);
	return eq ? 0 : BARREL_E_NOTFOUND;
}

/* ---- the update path ---- */

struct bt_level {
	struct bt_node *node;
	struct bt_pin pin;
	unsigned idx;           /* child taken, or the key's slot in a leaf */
};

struct bt_path {
	unsigned depth;
	bool eq;                /* the leaf holds the key */
	bool reused;            /* step 2 kept the root node: *root moved to nr */
	struct bt_level lv[BT_MAX_DEPTH];
	unsigned nrel;          /* clean records copied by step 2 */
	struct { uint64_t addr; uint32_t size; } rel[BT_MAX_DEPTH];
};

static void bt_path_unpin(struct bt_store *st, struct bt_path *p)
{
	for (unsigned d = 0; d < p->depth; d++)
		bt_unpin(st, &p->lv[d].pin);
}

/* Step 1: descend towards key down to level `stop`, pinning clean nodes. */
static int bt_path_find(struct bt_store *st, const struct bt_ref *root,
			const void *key, size_t klen, unsigned stop,
			struct bt_path *p)
{
	const struct bt_ref *ref = root;
	int want = -1, err;

	p->depth = 0;
	p->nrel = 0;
	p->eq = false;
	p->reused = false;
	for (;;) {
		struct bt_level *lv = &p->lv[p->depth];

		err = bt_load(st, ref, want, &lv->node, &lv->pin);
		if (err) {
			bt_path_unpin(st, p);
			return err;
		}
		p->depth++;
		if (!lv->node->level) {
			lv->idx = bt_lower_bound(lv->node, key, klen, &p->eq);
			return 0;
		}
		lv->idx = bt_route(lv->node, key, klen);
		if (lv->node->level <= stop)
			return 0;
		ref = &lv->node->kid[lv->idx];
		want = (int)lv->node->level - 1;
	}
}

/*
 * Copy the node at level d of the path, which old names, into *slot
 * (which may be old itself: the reference is then dropped).
 */
static int bt_path_copy(struct bt_store *st, struct bt_path *p, unsigned d,
			const struct bt_ref *old, struct bt_ref *slot)
{
	struct bt_level *lv = &p->lv[d];
	struct bt_node *c = bt_node_clone(st, lv->node);

	if (!c)
		return -ENOMEM;
	if (old->mem)	/* the copy replaces a dirty node in the tree */
		bt_dirty_sub(st, old->mem->bytes);
	if (!old->mem && old->addr) {
		p->rel[p->nrel].addr = old->addr;
		p->rel[p->nrel].size = old->size;
		p->nrel++;
	}
	bt_ref_release(slot);
	*slot = (struct bt_ref){ c, 0, 0 };
	bt_unpin(st, &lv->pin);
	lv->node = c;
	return 0;
}

/*
 * Step 2: make the path writable (see the top of the file). *nr gets the
 * new root: *root when its node was reused, else a copy (*root untouched).
 * Internal nodes get their exact fence.
 */
static int bt_path_own(struct bt_store *st, const struct bt_ref *root,
		       struct bt_path *p, struct bt_ref *nr)
{
	const uint8_t *fence = NULL;
	size_t flen = 0;
	int err;

	*nr = BT_REF_EMPTY;
	p->reused = bt_ref_exclusive(root);
	if (p->reused)
		*nr = *root;
	else if (bt_path_copy(st, p, 0, root, nr))
		return -ENOMEM;
	for (unsigned d = 0;; d++) {
		struct bt_node *n = p->lv[d].node;
		unsigned i = p->lv[d].idx;
		struct bt_ref *ref;

		err = bt_node_set_fence(n, fence, flen);
		if (err)
			return err;
		if (d + 1 == p->depth)
			return 0;
		if (i) {
			fence = bt_key(n, i);
			flen = n->slot[i].klen;
		}
		ref = &n->kid[i];
		if (!bt_ref_exclusive(ref) &&
		    bt_path_copy(st, p, d + 1, ref, ref))
			return -ENOMEM;
	}
}

/* Report the clean records the update replaced. */
static void bt_path_released(struct bt_store *st, struct bt_path *p)
{
	for (unsigned i = 0; i < p->nrel; i++)
		if (st->ops->released)
			st->ops->released(st->ctx, p->rel[i].addr,
					  p->rel[i].size);
	p->nrel = 0;
}

/*
 * Undo step 2 after a failure: a copied root is dropped with every copy
 * under it (*root never changed); copies linked under a reused root stay
 * (they hold the same entries) and their originals are reported.
 */
static void bt_path_abort(struct bt_store *st, struct bt_path *p,
			  struct bt_ref *nr)
{
	bt_path_unpin(st, p);
	if (!p->reused) {
		bt_ref_release(nr);
		p->nrel = 0;
	}
	bt_path_released(st, p);
}

/* Step 4's end: report replaced records and install the new root. */
static void bt_path_finish(struct bt_store *st, struct bt_ref *root,
			   struct bt_path *p, struct bt_ref *nr)
{
	bt_path_unpin(st, p);
	bt_path_released(st, p);
	if (!p->reused)
		bt_ref_release(root);
	*root = *nr;
}

/* ---- splitting ---- */

/* The split point of n minimizing the larger half's bytes (1..count-1). */
static unsigned bt_split_point(const struct bt_node *n)
{
	uint32_t total = n->bytes - BT_HDR, left = 0, best_max = UINT32_MAX;
	unsigned best = 1;

	for (unsigned m = 1; m < n->count; m++) {
		uint32_t hi;

		left += bt_slot_bytes(n, m - 1);
		hi = left > total - left ? left : total - left;
		if (hi < best_max) {
			best_max = hi;
			best = m;
		}
	}
	return best;
}

/* Move the upper part of n into a new node; NULL when out of memory. */
static struct bt_node *bt_node_split(struct bt_node *n)
{
	unsigned m = bt_split_point(n);
	struct bt_node *r = bt_node_new(n->level, n->count - m + 8,
					bt_live(n, m, n->count) + BT_HEAP_SLACK);

	if (!r)
		return NULL;
	bt_node_append(r, n, m, n->count);
	while (n->count > m) {
		if (n->kid)
			bt_ref_release(&n->kid[n->count - 1]);
		bt_node_remove(n, n->count - 1);
	}
	return r;
}

/*
 * Split the (writable) child i of p, and the halves, until they fit.
 * The right halves are inserted after it with their first key as the
 * separator. Out of memory leaves an oversized child: valid, retried on
 * the next update.
 */
static void bt_split_kids(struct bt_store *st, struct bt_node *p, unsigned i)
{
	unsigned end = i + 1;

	while (i < end) {
		struct bt_node *c = p->kid[i].mem, *r;

		if (c->bytes <= BT_NODE_TARGET || c->count < 2) {
			i++;
			continue;
		}
		if (bt_node_reserve(p, 1, c->slot[bt_split_point(c)].klen))
			return;
		r = bt_node_split(c);
		if (!r)
			return;
		bt_node_insert(p, i + 1, bt_key(r, 0), r->slot[0].klen, NULL, 0,
			       (struct bt_ref){ r, 0, 0 });
		st->dirty_bytes += bt_entry_bytes(p->level, r->slot[0].klen, 0);
		end++;
	}
}

/* Grow the tree while its root is oversized: a new root above it. */
static void bt_split_root(struct bt_store *st, struct bt_ref *nr)
{
	while (nr->mem->bytes > BT_NODE_TARGET && nr->mem->count > 1 &&
	       nr->mem->level + 1 < BT_MAX_DEPTH) {
		struct bt_node *up = bt_node_new(nr->mem->level + 1, 8,
						 BT_HEAP_SLACK);

		if (!up)
			return;
		bt_node_insert(up, 0, NULL, 0, NULL, 0, *nr);
		st->dirty_bytes += up->bytes;
		*nr = (struct bt_ref){ up, 0, 0 };
		bt_split_kids(st, up, 0);
	}
}

/* ---- putting ---- */

/* A tree of one leaf holding key -> val. */
static int bt_put_first(struct bt_store *st, struct bt_ref *root,
			const void *key, size_t klen, const void *val,
			size_t vlen)
{
	struct bt_node *n = bt_node_new(0, 8, (uint32_t)(klen + vlen) +
					BT_HEAP_SLACK);

	if (!n)
		return -ENOMEM;
	bt_node_insert(n, 0, key, klen, val, vlen, BT_REF_EMPTY);
	st->dirty_bytes += n->bytes;
	*root = (struct bt_ref){ n, 0, 0 };
	return 0;
}

/* Step 3 of a put: write the entry into the (writable) leaf. */
static int bt_put_leaf(struct bt_store *st, struct bt_path *p,
		       const void *key, size_t klen, const void *val,
		       size_t vlen, void *old, size_t *oldlen, bool *existed)
{
	struct bt_node *n = p->lv[p->depth - 1].node;
	unsigned i = p->lv[p->depth - 1].idx;
	uint32_t before = n->bytes;
	int err;

	err = bt_node_reserve(n, !p->eq, (uint32_t)(klen + vlen));
	if (err)
		return err;
	if (p->eq && old && oldlen) {
		*oldlen = n->slot[i].vlen;
		memcpy(old, bt_val(n, i), *oldlen);
	}
	if (existed)
		*existed = p->eq;
	if (p->eq && vlen <= n->slot[i].vlen) {
		/* same key: overwrite the value where it is */
		if (vlen)
			memcpy(n->heap + n->slot[i].off + klen, val, vlen);
		n->heap_dead += n->slot[i].vlen - (uint32_t)vlen;
		n->bytes -= n->slot[i].vlen - (uint32_t)vlen;
		n->slot[i].vlen = (uint16_t)vlen;
	} else if (p->eq)
		bt_node_set(n, i, key, klen, val, vlen);
	else
		bt_node_insert(n, i, key, klen, val, vlen, BT_REF_EMPTY);
	if (n->bytes > before)
		st->dirty_bytes += n->bytes - before;
	return 0;
}

/* ---- memos ---- */

struct bt_memo {
	struct bt_store *st;    /* NULL: empty */
	uint64_t mods;          /* st->mods when taken */
	struct bt_node *root_mem;
	uint64_t root_addr;
	size_t klen;
	uint8_t key[BT_MAX_KEY];
	struct bt_path path;    /* pinned while st is set */
};

struct bt_memo *bt_memo_new(void)
{
	return calloc(1, sizeof(struct bt_memo));
}

void bt_memo_clear(struct bt_memo *m)
{
	if (!m || !m->st)
		return;
	bt_path_unpin(m->st, &m->path);
	m->st = NULL;
}

void bt_memo_free(struct bt_memo *m)
{
	bt_memo_clear(m);
	free(m);
}

int bt_get_memo(struct bt_store *st, const struct bt_ref *root,
		const void *key, size_t klen, void *val, size_t *vlen,
		struct bt_memo *m)
{
	struct bt_level *leaf;
	int err;

	if (!m || klen > BT_MAX_KEY)
		return bt_get(st, root, key, klen, val, vlen);
	bt_memo_clear(m);
	if (bt_ref_is_empty(root))
		return BARREL_E_NOTFOUND;
	err = bt_path_find(st, root, key, klen, 0, &m->path);
	if (err)
		return err;
	leaf = &m->path.lv[m->path.depth - 1];
	if (m->path.eq) {
		*vlen = leaf->node->slot[leaf->idx].vlen;
		memcpy(val, bt_val(leaf->node, leaf->idx), *vlen);
	}
	m->st = st;
	m->mods = st->mods;
	m->root_mem = root->mem;
	m->root_addr = root->addr;
	m->klen = klen;
	memcpy(m->key, key, klen);
	return m->path.eq ? 0 : BARREL_E_NOTFOUND;
}

/* The path m remembers, when it is still the way to key in root: the
 * caller then owns it (and its pins); else NULL, and m is cleared. */
static struct bt_path *bt_memo_take(struct bt_store *st, struct bt_memo *m,
				    const struct bt_ref *root,
				    const void *key, size_t klen)
{
	if (!m || !m->st)
		return NULL;
	if (m->st != st || m->mods != st->mods || m->root_mem != root->mem ||
	    m->root_addr != root->addr || m->klen != klen ||
	    memcmp(m->key, key, klen)) {
		bt_memo_clear(m);
		return NULL;
	}
	m->st = NULL;
	return &m->path;
}

/* ---- bt_put ---- */

int bt_put_memo(struct bt_store *st, struct bt_ref *root, const void *key,
		size_t klen, const void *val, size_t vlen, void *old,
		size_t *oldlen, bool *existed, struct bt_memo *m)
{
	struct bt_path local, *p;
	struct bt_ref nr;
	int err;

	p = bt_memo_take(st, m, root, key, klen);
	if (klen > BT_MAX_KEY || vlen > BT_MAX_VAL) {
		if (p)
			bt_path_unpin(st, p);
		return BARREL_E_TOOBIG;
	}
	st->mods++;
	if (bt_ref_is_empty(root)) {
		if (existed)
			*existed = false;
		return bt_put_first(st, root, key, klen, val, vlen);
	}
	if (!p) {
		p = &local;
		err = bt_path_find(st, root, key, klen, 0, p);
		if (err)
			return err;
	}
	err = bt_path_own(st, root, p, &nr);
	if (!err)
		err = bt_put_leaf(st, p, key, klen, val, vlen, old, oldlen,
				  existed);
	if (err) {
		bt_path_abort(st, p, &nr);
		return err;
	}
	for (unsigned d = p->depth - 1; d-- > 0;)
		bt_split_kids(st, p->lv[d].node, p->lv[d].idx);
	bt_split_root(st, &nr);
	bt_path_finish(st, root, p, &nr);
	return 0;
}

int bt_put(struct bt_store *st, struct bt_ref *root, const void *key,
	   size_t klen, const void *val, size_t vlen, void *old,
	   size_t *oldlen, bool *existed)
{
	return bt_put_memo(st, root, key, klen, val, vlen, old, oldlen,
			   existed, NULL);
}

/* ---- bt_del ---- */

/* Child l of p, writable (copied when shared or clean). */
static int bt_own_kid(struct bt_store *st, struct bt_node *p, unsigned l,
		      struct bt_node **out)
{
	struct bt_ref *ref = &p->kid[l];
	struct bt_node *n, *c;
	struct bt_pin pin;
	int err;

	if (bt_ref_exclusive(ref)) {
		*out = ref->mem;
		return 0;
	}
	err = bt_load(st, ref, (int)p->level - 1, &n, &pin);
	if (err)
		return err;
	c = bt_node_clone(st, n);
	bt_unpin(st, &pin);
	if (!c)
		return -ENOMEM;
	if (ref->mem)	/* the copy replaces a dirty node in the tree */
		bt_dirty_sub(st, ref->mem->bytes);
	bt_ref_drop(st, ref);
	*ref = (struct bt_ref){ c, 0, 0 };
	*out = c;
	return 0;
}

/*
 * Merge child l+1 of p into child l (then split the result if it is too
 * big, which redistributes the entries of the two).
 */
static int bt_merge_kids(struct bt_store *st, struct bt_node *p, unsigned l)
{
	unsigned r = l + 1, from;
	/* child l's exact fence: its separator, or p's fence for child 0 */
	const uint8_t *fence = bt_key(p, l);
	size_t flen = p->slot[l].klen;
	struct bt_node *left, *right;
	struct bt_pin pin;
	int err;

	err = bt_own_kid(st, p, l, &left);
	if (err)
		return err;
	err = bt_load(st, &p->kid[r], (int)p->level - 1, &right, &pin);
	if (err)
		return err;
	err = bt_node_set_fence(left, fence, flen);
	if (!err)
		err = bt_node_reserve(left, right->count, p->slot[r].klen +
				      bt_live(right, 0, right->count));
	if (err)
		goto out_unpin;
	from = 0;
	if (left->level) {
		/* right's first child, under the separator p holds for it */
		bt_node_insert(left, left->count, bt_key(p, r), p->slot[r].klen,
			       NULL, 0, bt_ref_dup(&right->kid[0]));
		from = 1;
	}
	bt_node_append(left, right, from, right->count);
	bt_unpin(st, &pin);
	bt_ref_drop(st, &p->kid[r]);
	bt_node_remove(p, r);
	bt_split_kids(st, p, l);
	return 0;

out_unpin:
	bt_unpin(st, &pin);
	return err;
}

/*
 * Step 4 of a delete, at one level: child i of p was changed. Remove it
 * when empty, split it when a merge below made it too big, merge it with
 * a neighbour when under a quarter full.
 */
static void bt_rebalance(struct bt_store *st, struct bt_node *p, unsigned i)
{
	struct bt_node *c = p->kid[i].mem;
	int err;

	if (!c->count) {
		bt_ref_release(&p->kid[i]);
		bt_node_remove(p, i);
		return;
	}
	if (c->bytes > BT_NODE_TARGET) {
		bt_split_kids(st, p, i);
		return;
	}
	if (c->bytes >= BT_UNDERFULL || p->count < 2)
		return;
	err = bt_merge_kids(st, p, i + 1 < p->count ? i : i - 1);
	if (err)
		barrel_log(BLOG_WARN, "btree: cannot merge nodes: %s",
			   barrel_strerror(err));
}

/* Replace a root with a single child by that child; drop an empty root. */
static void bt_collapse_root(struct bt_ref *nr)
{
	for (;;) {
		struct bt_node *n = nr->mem;
		struct bt_ref kid;

		if (!n->count) {
			bt_ref_release(nr);
			return;
		}
		if (!n->level || n->count > 1)
			return;
		kid = n->kid[0];
		n->count = 0;
		bt_ref_release(nr);
		*nr = kid;
	}
}

int bt_del(struct bt_store *st, struct bt_ref *root, const void *key,
	   size_t klen, void *old, size_t *oldlen)
{
	struct bt_path p;
	struct bt_ref nr;
	struct bt_node *leaf;
	unsigned i;
	int err;

	if (bt_ref_is_empty(root))
		return BARREL_E_NOTFOUND;
	st->mods++;
	err = bt_path_find(st, root, key, klen, 0, &p);
	if (err)
		return err;
	if (!p.eq) {
		bt_path_unpin(st, &p);
		return BARREL_E_NOTFOUND;
	}
	err = bt_path_own(st, root, &p, &nr);
	if (err) {
		bt_path_abort(st, &p, &nr);
		return err;
	}
	leaf = p.lv[p.depth - 1].node;
	i = p.lv[p.depth - 1].idx;
	if (old && oldlen) {
		*oldlen = leaf->slot[i].vlen;
		memcpy(old, bt_val(leaf, i), *oldlen);
	}
	bt_node_remove(leaf, i);
	for (unsigned d = p.depth - 1; d-- > 0;)
		bt_rebalance(st, p.lv[d].node, p.lv[d].idx);
	bt_collapse_root(&nr);
	if (nr.mem)
		bt_split_root(st, &nr);
	bt_path_finish(st, root, &p, &nr);
	return 0;
}

/* ---- bt_flush ---- */

/* Encode and write one node whose children are all clean or written. */
static int bt_write_node(struct bt_store *st, struct bt_node *n)
{
	uint8_t *buf = malloc(n->bytes);
	int err;

	if (!buf)
		return -ENOMEM;
	bt_encode(n, buf);
	err = st->ops->write(st->ctx, buf, n->bytes, &n->wr_addr, &n->wr_size);
	if (err) {
		free(buf);
		return err;
	}
	n->wr_stamp = st->stamp;
	bt_dirty_sub(st, n->bytes);
	bt_cache_written(st, n->wr_addr, n->wr_size, buf, n->bytes);
	return 0;
}

/*
 * Post-order write of the dirty nodes under n. When n is held exclusively
 * (excl), its written children become clean references, dropping the
 * in-memory copies; shared nodes stay as they are for their other holders.
 */
static int bt_flush_node(struct bt_store *st, struct bt_node *n, bool excl)
{
	for (unsigned i = 0; n->kid && i < n->count; i++) {
		struct bt_ref *k = &n->kid[i];
		int err;

		if (!k->mem)
			continue;
		err = bt_flush_node(st, k->mem, excl && bt_ref_exclusive(k));
		if (err)
			return err;
		if (excl) {
			struct bt_ref clean = { NULL, k->mem->wr_addr,
						k->mem->wr_size };

			bt_ref_release(k);
			*k = clean;
		}
	}
	return bt_write_node(st, n);
}

int bt_flush(struct bt_store *st, struct bt_ref *root)
{
	struct bt_ref old = *root;
	int err;

	if (!root->mem)
		return 0;
	st->mods++;
	err = bt_flush_node(st, root->mem, bt_ref_exclusive(root));
	if (err)
		return err;
	*root = (struct bt_ref){ NULL, old.mem->wr_addr, old.mem->wr_size };
	bt_ref_release(&old);
	return 0;
}

/* ---- bt_adopt ---- */

static bool bt_has_mem_kid(const struct bt_node *n)
{
	for (unsigned i = 0; n->kid && i < n->count; i++)
		if (n->kid[i].mem)
			return true;
	return false;
}

/* bt_adopt() below *ref, which the caller may change. */
static int bt_adopt_ref(struct bt_store *st, struct bt_ref *ref,
			uint64_t stamp)
{
	struct bt_node *n = ref->mem;

	if (!n)
		return 0;
	if (n->wr_stamp == stamp) {
		struct bt_ref clean = { NULL, n->wr_addr, n->wr_size };

		n->wr_stamp = 0;        /* adopted: its record stays live */
		bt_ref_release(ref);
		*ref = clean;
		return 0;
	}
	if (!bt_has_mem_kid(n))
		return 0;
	if (!bt_ref_exclusive(ref)) {
		struct bt_node *c = bt_node_clone(st, n);

		if (!c)
			return -ENOMEM;
		bt_ref_release(ref);
		*ref = (struct bt_ref){ c, 0, 0 };
		n = c;
	}
	for (unsigned i = 0; i < n->count; i++) {
		int err = bt_adopt_ref(st, &n->kid[i], stamp);

		if (err)
			return err;
	}
	return 0;
}

/* Report the records of stamped nodes under ref that nothing adopted. */
static void bt_adopt_release(struct bt_store *st, const struct bt_ref *ref,
			     uint64_t stamp)
{
	const struct bt_node *n = ref->mem;

	if (!n || n->wr_stamp != stamp)
		return;
	if (st->ops->released)
		st->ops->released(st->ctx, n->wr_addr, n->wr_size);
	for (unsigned i = 0; n->kid && i < n->count; i++)
		bt_adopt_release(st, &n->kid[i], stamp);
}

int bt_adopt(struct bt_store *st, struct bt_ref *root,
	     const struct bt_ref *flushed, uint64_t stamp)
{
	int err;

	if (!stamp)
		return 0;
	st->mods++;
	err = bt_adopt_ref(st, root, stamp);
	if (!err)
		bt_adopt_release(st, flushed, stamp);
	return err;
}

/* ---- bt_touch ---- */

int bt_touch(struct bt_store *st, struct bt_ref *root, unsigned level,
	     const void *key, size_t klen, uint64_t addr)
{
	const struct bt_ref *ref;
	struct bt_path p;
	struct bt_ref nr;
	int err;

	if (bt_ref_is_empty(root))
		return 0;
	st->mods++;
	err = bt_path_find(st, root, key, klen, level, &p);
	if (err)
		return err;
	ref = p.depth == 1 ? root :
	      &p.lv[p.depth - 2].node->kid[p.lv[p.depth - 2].idx];
	if (p.lv[p.depth - 1].node->level != level || ref->mem ||
	    ref->addr != addr) {
		bt_path_unpin(st, &p);
		return 0;
	}
	err = bt_path_own(st, root, &p, &nr);
	if (err) {
		bt_path_abort(st, &p, &nr);
		return err;
	}
	bt_path_finish(st, root, &p, &nr);
	return 1;
}

/* ---- iterators ---- */

struct bt_iter_level {
	struct bt_node *node;
	struct bt_pin pin;
	int idx;                /* next entry (leaf) or child (internal) */
};

struct bt_iter {
	struct bt_store *st;
	struct bt_ref root;     /* our own reference */
	unsigned flags;
	uint8_t *bound;         /* end (forward) or start (reverse); owned */
	size_t blen;
	bool has_bound;
	bool done;
	int err;                /* sticky error */
	unsigned depth;
	struct bt_iter_level lv[BT_MAX_DEPTH];
};

static bool bt_iter_rev(const struct bt_iter *it)
{
	return it->flags & BT_ITER_REVERSE;
}

/* The first index of n to visit, seeking key (NULL: from the edge). */
static int bt_iter_seek(const struct bt_iter *it, const struct bt_node *n,
			const void *key, size_t klen)
{
	bool eq;

	if (!key)
		return bt_iter_rev(it) ? (int)n->count - 1 : 0;
	if (n->level)
		return (int)bt_route(n, key, klen);
	if (!bt_iter_rev(it))
		return (int)bt_lower_bound(n, key, klen, &eq);
	if (it->flags & BT_ITER_END_INCLUSIVE)
		return (int)bt_upper_bound(n, key, klen) - 1;
	return (int)bt_lower_bound(n, key, klen, &eq) - 1;
}

/* Push ref's node and keep descending to a leaf, seeking key. */
static int bt_iter_push(struct bt_iter *it, const struct bt_ref *ref,
			int want, const void *key, size_t klen)
{
	for (;;) {
		struct bt_iter_level *lv = &it->lv[it->depth];
		int err = bt_load(it->st, ref, want, &lv->node, &lv->pin);

		if (err)
			return err;
		it->depth++;
		lv->idx = bt_iter_seek(it, lv->node, key, klen);
		if (!lv->node->level)
			return 0;
		ref = &lv->node->kid[lv->idx];
		want = (int)lv->node->level - 1;
	}
}

/* Move to the next leaf in iteration order: 1, 0 at the end, or <0. */
static int bt_iter_step(struct bt_iter *it)
{
	int dir = bt_iter_rev(it) ? -1 : 1, err;

	while (it->depth > 1) {
		struct bt_iter_level *up;

		bt_unpin(it->st, &it->lv[--it->depth].pin);
		up = &it->lv[it->depth - 1];
		up->idx += dir;
		if (up->idx < 0 || up->idx >= (int)up->node->count)
			continue;
		err = bt_iter_push(it, &up->node->kid[up->idx],
				   (int)up->node->level - 1, NULL, 0);
		return err ? err : 1;
	}
	return 0;
}

static void bt_iter_unpin(struct bt_iter *it)
{
	while (it->depth)
		bt_unpin(it->st, &it->lv[--it->depth].pin);
}

int bt_iter_new(struct bt_store *st, const struct bt_ref *root,
		const void *start, size_t slen, const void *end, size_t elen,
		unsigned flags, struct bt_iter **out)
{
	struct bt_iter *it = calloc(1, sizeof(*it));
	const void *seek = flags & BT_ITER_REVERSE ? end : start;
	size_t seeklen = flags & BT_ITER_REVERSE ? elen : slen;
	const void *bound = flags & BT_ITER_REVERSE ? start : end;
	size_t blen = flags & BT_ITER_REVERSE ? slen : elen;
	int err;

	if (!it)
		return -ENOMEM;
	it->st = st;
	it->flags = flags;
	it->root = bt_ref_dup(root);
	if (bound) {
		it->bound = malloc(blen ? blen : 1);
		if (!it->bound) {
			err = -ENOMEM;
			goto out_free;
		}
		if (blen)
			memcpy(it->bound, bound, blen);
		it->blen = blen;
		it->has_bound = true;
	}
	it->done = bt_ref_is_empty(root);
	if (!it->done) {
		err = bt_iter_push(it, &it->root, -1, seek, seeklen);
		if (err)
			goto out_free;
	}
	*out = it;
	return 0;

out_free:
	bt_iter_free(it);
	return err;
}

/* Is key past the end of the range? */
static bool bt_iter_past(const struct bt_iter *it, const void *key, size_t klen)
{
	int c;

	if (!it->has_bound)
		return false;
	c = bt_cmp(key, klen, it->bound, it->blen);
	if (bt_iter_rev(it))
		return c < 0;
	return c > 0 || (c == 0 && !(it->flags & BT_ITER_END_INCLUSIVE));
}

int bt_iter_next(struct bt_iter *it, const void **key, size_t *klen,
		 const void **val, size_t *vlen)
{
	for (;;) {
		struct bt_iter_level *lv;
		int err;

		if (it->err || it->done)
			return it->err;
		lv = &it->lv[it->depth - 1];
		if (lv->idx >= 0 && lv->idx < (int)lv->node->count) {
			const struct bt_node *n = lv->node;
			unsigned i = (unsigned)lv->idx;

			if (bt_iter_past(it, bt_key(n, i), n->slot[i].klen))
				break;
			*key = bt_key(n, i);
			*klen = n->slot[i].klen;
			*val = bt_val(n, i);
			*vlen = n->slot[i].vlen;
			lv->idx += bt_iter_rev(it) ? -1 : 1;
			return 1;
		}
		err = bt_iter_step(it);
		if (err < 0) {
			it->err = err;
			return err;
		}
		if (!err)
			break;
	}
	it->done = true;
	bt_iter_unpin(it);
	return 0;
}

void bt_iter_free(struct bt_iter *it)
{
	if (!it)
		return;
	bt_iter_unpin(it);
	bt_ref_release(&it->root);
	free(it->bound);
	free(it);
}

uint64_t bt_dirty_size(const struct bt_ref *root)
{
	const struct bt_node *n = root->mem;
	uint64_t sum;

	if (!n)
		return 0;
	sum = n->bytes;
	if (n->level)
		for (unsigned i = 0; i < n->count; i++)
			sum += bt_dirty_size(&n->kid[i]);
	return sum;
}
