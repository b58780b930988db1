#include "config.h"

/*
 * Revision trees (revtree.h). The tree is a flat array of nodes linked to
 * their parent by index; revision ids are unique in it, so a lookup is a
 * scan by id. Trees are small (revs_limit, 1000 by default, bounds a
 * path), which keeps a scan cheaper than an index to maintain.
 */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/log.h"
#include "engine/revtree.h"

#define RT_NONE UINT32_MAX
#define RT_MAX_NODES (UINT32_MAX - 1)
#define REV_GEN_DIGITS 16u   /* digits of REV_GEN_MAX */
#define REV_HEX_LEN 32u      /* a hash held as 16 bytes */
#define REV_BIN_LEN 16u

enum rt_flags {
	RT_DELETED = 1 << 0,
	RT_BODY = 1 << 1,
	RT_MISSING = 1 << 2,
};

struct rt_node {
	struct rev rev;
	uint64_t body_ref;   /* 0 unless RT_BODY */
	uint32_t parent;     /* index in revtree.node, RT_NONE for a root */
	uint32_t nchild;     /* 0 for a leaf */
	uint8_t flags;       /* enum rt_flags */
};

struct revtree {
	struct rt_node *node;   /* owned; n used of cap */
	uint32_t n, cap;
};

/* ---- revision ids ---- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static bool hash_char_ok(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	       (c >= 'A' && c <= 'Z');
}

/* Is s[0..len) 32 lowercase hex digits (then held as 16 bytes)? */
static bool is_hex32(const uint8_t *s, size_t len)
{
	if (len != REV_HEX_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (hexval((char)s[i]) < 0)
			return false;
	return true;
}

/* Generation: 1..16 digits, no leading zero, <= REV_GEN_MAX. */
static int parse_gen(const char *s, size_t len, uint64_t *gen)
{
	uint64_t v = 0;

	if (len == 0 || len > REV_GEN_DIGITS || s[0] == '0')
		return BARREL_E_BADREV;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return BARREL_E_BADREV;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > REV_GEN_MAX)
		return BARREL_E_BADREV;
	*gen = v;
	return 0;
}

static int parse_hash(const char *s, size_t len, struct rev *out)
{
	const uint8_t *u = (const uint8_t *)s;

	if (len == 0 || len > REV_HASH_MAX)
		return BARREL_E_BADREV;
	for (size_t i = 0; i < len; i++)
		if (!hash_char_ok(u[i]))
			return BARREL_E_BADREV;
	if (!is_hex32(u, len)) {
		memcpy(out->hash, s, len);
		out->len = (uint8_t)len;
		return 0;
	}
	for (size_t i = 0; i < REV_BIN_LEN; i++)
		out->hash[i] = (uint8_t)(hexval(s[2 * i]) << 4 |
					 hexval(s[2 * i + 1]));
	out->len = REV_BIN_LEN;
	out->bin = true;
	return 0;
}

int rev_parse(const char *s, size_t len, struct rev *out)
{
	const char *dash;
	struct rev r;
	int err;

	memset(&r, 0, sizeof(r));
	if (len > REV_GEN_DIGITS + 1 + REV_HASH_MAX)
		return BARREL_E_BADREV;
	dash = memchr(s, '-', len);
	if (!dash)
		return BARREL_E_BADREV;
	err = parse_gen(s, (size_t)(dash - s), &r.gen);
	if (err)
		return err;
	err = parse_hash(dash + 1, len - (size_t)(dash - s) - 1, &r);
	if (err)
		return err;
	*out = r;
	return 0;
}

bool rev_valid(const struct rev *r)
{
	if (r->gen < 1 || r->gen > REV_GEN_MAX)
		return false;
	if (r->bin)
		return r->len == REV_BIN_LEN;
	if (r->len < 1 || r->len > REV_HASH_MAX)
		return false;
	for (size_t i = 0; i < r->len; i++)
		if (!hash_char_ok(r->hash[i]))
			return false;
	return !is_hex32(r->hash, r->len);
}

int rev_format(const struct rev *r, char *buf, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	char gen[20];                 /* the generation's digits, reversed */
	size_t glen = 0, len;
	uint64_t g = r->gen;
	char *p;

	if (!rev_valid(r))
		return BARREL_E_INVALID;
	do {
		gen[glen++] = (char)('0' + g % 10);
		g /= 10;
	} while (g);
	len = r->bin ? REV_HEX_LEN : r->len;
	if (glen + 1 + len >= size)
		return BARREL_E_INVALID;
	for (p = buf; glen; p++)
		*p = gen[--glen];
	*p++ = '-';
	if (r->bin) {
		for (size_t i = 0; i < REV_BIN_LEN; i++) {
			*p++ = hex[r->hash[i] >> 4];
			*p++ = hex[r->hash[i] & 15];
		}
	} else {
		memcpy(p, r->hash, len);
		p += len;
	}
	*p = '\0';
	return 0;
}

static int hash_cmp(const struct rev *a, const struct rev *b)
{
	size_t m = a->len < b->len ? a->len : b->len;
	int c = memcmp(a->hash, b->hash, m);

	if (c)
		return c;
	if (a->len != b->len)
		return a->len < b->len ? -1 : 1;
	return (int)b->bin - (int)a->bin;
}

int rev_cmp(const struct rev *a, const struct rev *b)
{
	if (a->gen != b->gen)
		return a->gen < b->gen ? -1 : 1;
	return hash_cmp(a, b);
}

bool rev_eq(const struct rev *a, const struct rev *b)
{
	return rev_cmp(a, b) == 0;
}

/* ---- nodes ---- */

int revtree_new(struct revtree **out)
{
	struct revtree *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	*out = t;
	return 0;
}

void revtree_free(struct revtree *t)
{
	if (!t)
		return;
	free(t->node);
	free(t);
}

size_t revtree_count(const struct revtree *t)
{
	return t->n;
}

static uint32_t rt_find(const struct revtree *t, const struct rev *rev)
{
	for (uint32_t i = 0; i < t->n; i++)
		if (rev_eq(&t->node[i].rev, rev))
			return i;
	return RT_NONE;
}

/* Room for extra more nodes, so the pushes that follow cannot fail. */
static int rt_reserve(struct revtree *t, size_t extra)
{
	struct rt_node *node;
	size_t cap;

	if (extra > RT_MAX_NODES - t->n)
		return BARREL_E_TOOBIG;
	if (t->n + extra <= t->cap)
		return 0;
	cap = t->cap ? t->cap : 8;
	while (cap < t->n + extra)
		cap *= 2;
	if (cap > RT_MAX_NODES)
		cap = RT_MAX_NODES;
	node = realloc(t->node, cap * sizeof(*node));
	if (!node)
		return -ENOMEM;
	t->node = node;
	t->cap = (uint32_t)cap;
	return 0;
}

/* Append a node (room reserved) under parent; returns its index. */
static uint32_t rt_push(struct revtree *t, const struct rev *rev,
			uint32_t parent, uint8_t flags, uint64_t body_ref)
{
	struct rt_node *nd = &t->node[t->n];

	memset(nd, 0, sizeof(*nd));
	nd->rev = *rev;
	nd->parent = parent;
	nd->flags = flags;
	nd->body_ref = flags & RT_BODY ? body_ref : 0;
	if (parent != RT_NONE)
		t->node[parent].nchild++;
	return t->n++;
}

static uint8_t leaf_flags(bool deleted)
{
	return (uint8_t)(RT_BODY | (deleted ? RT_DELETED : 0));
}

static void rt_info(const struct rt_node *nd, struct revtree_info *out)
{
	out->rev = nd->rev;
	out->deleted = nd->flags & RT_DELETED;
	out->has_body = nd->flags & RT_BODY;
	out->missing = nd->flags & RT_MISSING;
	out->is_leaf = nd->nchild == 0;
	out->body_ref = nd->body_ref;
}

/* ---- winner order ---- */

/* <0 when leaf a is the better one (CouchDB's winner rule). */
static int leaf_order(const struct rt_node *a, const struct rt_node *b)
{
	bool adel = a->flags & RT_DELETED, bdel = b->flags & RT_DELETED;

	if (adel != bdel)
		return adel ? 1 : -1;
	return -rev_cmp(&a->rev, &b->rev);
}

static int info_order(const void *pa, const void *pb)
{
	const struct revtree_info *a = pa, *b = pb;

	if (a->deleted != b->deleted)
		return a->deleted ? 1 : -1;
	return -rev_cmp(&a->rev, &b->rev);
}

static uint32_t rt_winner(const struct revtree *t)
{
	uint32_t best = RT_NONE;

	for (uint32_t i = 0; i < t->n; i++) {
		if (t->node[i].nchild)
			continue;
		if (best == RT_NONE || leaf_order(&t->node[i],
						  &t->node[best]) < 0)
			best = i;
	}
	return best;
}

int revtree_winner(const struct revtree *t, struct rev *rev, bool *deleted)
{
	uint32_t w = rt_winner(t);

	if (w == RT_NONE)
		return BARREL_E_NOTFOUND;
	if (rev)
		*rev = t->node[w].rev;
	if (deleted)
		*deleted = t->node[w].flags & RT_DELETED;
	return 0;
}

bool revtree_is_deleted(const struct revtree *t)
{
	uint32_t w = rt_winner(t);

	return w != RT_NONE && (t->node[w].flags & RT_DELETED);
}

int revtree_leaves(const struct revtree *t, struct revtree_info **out,
		   size_t *n)
{
	struct revtree_info *v;
	size_t k = 0;

	*out = NULL;
	*n = 0;
	if (!t->n)
		return 0;
	v = malloc(t->n * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint32_t i = 0; i < t->n; i++)
		if (!t->node[i].nchild)
			rt_info(&t->node[i], &v[k++]);
	qsort(v, k, sizeof(*v), info_order);
	*out = v;
	*n = k;
	return 0;
}

/* The leaves after the winner whose deleted flag is want, best first. */
static int other_leaves(const struct revtree *t, bool want,
			struct rev **out, size_t *n)
{
	struct revtree_info *v;
	struct rev *r = NULL;
	size_t nv, k = 0;
	int err;

	*out = NULL;
	*n = 0;
	err = revtree_leaves(t, &v, &nv);
	if (err || nv < 2)
		goto out_free_leaves;
	r = malloc((nv - 1) * sizeof(*r));
	if (!r) {
		err = -ENOMEM;
		goto out_free_leaves;
	}
	for (size_t i = 1; i < nv; i++)
		if (v[i].deleted == want)
			r[k++] = v[i].rev;
	if (!k) {
		free(r);
		r = NULL;
	}
	*out = r;
	*n = k;
out_free_leaves:
	free(v);
	return err;
}

int revtree_conflicts(const struct revtree *t, struct rev **out, size_t *n)
{
	return other_leaves(t, false, out, n);
}

int revtree_deleted_conflicts(const struct revtree *t, struct rev **out,
			      size_t *n)
{
	return other_leaves(t, true, out, n);
}

/* ---- edits ---- */

/* The node a new edit hangs under, or RT_NONE for a first revision. */
static int edit_parent(const struct revtree *t, const struct rev *parent,
		       uint32_t *p)
{
	if (parent) {
		*p = rt_find(t, parent);
		if (*p == RT_NONE || t->node[*p].nchild)
			return BARREL_E_CONFLICT;
		return 0;
	}
	*p = RT_NONE;
	if (!t->n)
		return 0;
	if (!revtree_is_deleted(t))
		return BARREL_E_CONFLICT;
	*p = rt_winner(t);
	return 0;
}

int revtree_add_edit(struct revtree *t, const struct rev *parent,
		     const struct rev *new_rev, bool deleted,
		     uint64_t body_ref)
{
	uint64_t want;
	uint32_t p;
	int err;

	if (!rev_valid(new_rev) || (parent && !rev_valid(parent)))
		return BARREL_E_INVALID;
	if (rt_find(t, new_rev) != RT_NONE)
		return BARREL_E_CONFLICT;
	err = edit_parent(t, parent, &p);
	if (err)
		return err;
	want = p == RT_NONE ? 1 : t->node[p].rev.gen + 1;
	if (new_rev->gen != want)
		return BARREL_E_INVALID;
	err = rt_reserve(t, 1);
	if (err)
		return err;
	rt_push(t, new_rev, p, leaf_flags(deleted), body_ref);
	return 0;
}

/* Checks of a graft path done before any change: see revtree_graft(). */
static int graft_check(const struct revtree *t, const struct rev *path,
		       size_t n)
{
	if (n == 0)
		return BARREL_E_INVALID;
	for (size_t i = 0; i < n; i++) {
		if (!rev_valid(&path[i]))
			return BARREL_E_INVALID;
		if (i + 1 < n && path[i + 1].gen + 1 != path[i].gen)
			return BARREL_E_INVALID;
	}
	for (size_t i = 0; i + 1 < n; i++) {
		uint32_t x = rt_find(t, &path[i]);
		uint32_t p = x == RT_NONE ? RT_NONE : t->node[x].parent;

		if (p != RT_NONE && !rev_eq(&t->node[p].rev, &path[i + 1]))
			return BARREL_E_CONFLICT;
	}
	return 0;
}

/* Merge path[i] under prev (RT_NONE: no parent named); its index. */
static uint32_t graft_one(struct revtree *t, const struct rev *rev,
			  uint32_t prev, bool leaf, bool deleted,
			  uint64_t body_ref, bool *added)
{
	uint32_t x = rt_find(t, rev);
	struct rt_node *nd;

	if (x == RT_NONE) {
		*added = true;
		if (leaf)
			return rt_push(t, rev, prev, leaf_flags(deleted),
				       body_ref);
		return rt_push(t, rev, prev, RT_MISSING, 0);
	}
	nd = &t->node[x];
	if (prev != RT_NONE && nd->parent == RT_NONE) {
		nd->parent = prev;
		t->node[prev].nchild++;
		*added = true;
	}
	if (leaf && (nd->flags & RT_MISSING)) {
		nd->flags = leaf_flags(deleted);
		nd->body_ref = body_ref;
		*added = true;
	}
	return x;
}

int revtree_graft(struct revtree *t, const struct rev *path, size_t n,
		  bool deleted, uint64_t body_ref, bool *added)
{
	uint32_t prev = RT_NONE;
	bool any = false;
	int err;

	err = graft_check(t, path, n);
	if (!err)
		err = rt_reserve(t, n);
	if (err)
		return err;
	for (size_t i = n; i-- > 0;)
		prev = graft_one(t, &path[i], prev, i == 0, deleted, body_ref,
				 &any);
	if (added)
		*added = any;
	return 0;
}

/* ---- stemming and body pruning ---- */

/* Mark in keep[] the depth nearest revisions of every leaf path. */
static void mark_near_leaves(const struct revtree *t, uint32_t depth,
			     bool *keep)
{
	for (uint32_t i = 0; i < t->n; i++) {
		uint32_t x = i;

		if (t->node[i].nchild)
			continue;
		for (uint32_t d = 0; d < depth && x != RT_NONE; d++) {
			keep[x] = true;
			x = t->node[x].parent;
		}
	}
}

/* Drop the nodes not in keep[], renumbering the rest in place. */
static void rt_compact(struct revtree *t, const bool *keep, uint32_t *map)
{
	uint32_t k = 0;

	for (uint32_t i = 0; i < t->n; i++)
		map[i] = keep[i] ? k++ : RT_NONE;
	for (uint32_t i = 0; i < t->n; i++) {
		struct rt_node nd = t->node[i];

		if (!keep[i])
			continue;
		nd.parent = nd.parent == RT_NONE ? RT_NONE : map[nd.parent];
		nd.nchild = 0;
		t->node[map[i]] = nd;
	}
	t->n = k;
	for (uint32_t i = 0; i < t->n; i++)
		if (t->node[i].parent != RT_NONE)
			t->node[t->node[i].parent].nchild++;
}

int revtree_stem(struct revtree *t, uint32_t limit, revtree_prune_cb cb,
		 void *arg, size_t *removed)
{
	uint32_t *map = NULL, before = t->n;
	bool *keep;
	int err = 0;

	if (limit < 1)
		return BARREL_E_INVALID;
	if (removed)
		*removed = 0;
	if (t->n <= limit)            /* no path is longer than limit */
		return 0;
	keep = calloc(t->n, sizeof(*keep));
	if (!keep)
		return -ENOMEM;
	map = malloc(t->n * sizeof(*map));
	if (!map) {
		err = -ENOMEM;
		goto out_free_keep;
	}
	mark_near_leaves(t, limit, keep);
	for (uint32_t i = 0; cb && i < t->n && !err; i++)
		if (!keep[i] && (t->node[i].flags & RT_BODY))
			err = cb(arg, &t->node[i].rev, t->node[i].body_ref);
	if (err)
		goto out_free_map;
	rt_compact(t, keep, map);
	if (removed)
		*removed = before - t->n;
out_free_map:
	free(map);
out_free_keep:
	free(keep);
	return err;
}

/* Unmark in keep[] leaf x and the ancestors left without children
 * (left[] counts the children still kept). */
static void purge_up(const struct revtree *t, uint32_t x, bool *keep,
		     uint32_t *left)
{
	while (x != RT_NONE && keep[x] && !left[x]) {
		keep[x] = false;
		x = t->node[x].parent;
		if (x != RT_NONE)
			left[x]--;
	}
}

int revtree_purge(struct revtree *t, const struct rev *revs, size_t n,
		  revtree_prune_cb cb, void *arg, bool *purged)
{
	bool *keep = malloc((t->n ? t->n : 1) * sizeof(*keep));
	uint32_t *left = malloc((t->n ? t->n : 1) * sizeof(*left));
	int err = 0;

	if (!keep || !left) {
		err = -ENOMEM;
		goto out_free;
	}
	for (uint32_t i = 0; i < t->n; i++) {
		keep[i] = true;
		left[i] = t->node[i].nchild;
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t x = rt_find(t, &revs[i]);
		bool leaf = x != RT_NONE && !t->node[x].nchild && keep[x];

		if (purged)
			purged[i] = leaf;
		if (leaf)
			purge_up(t, x, keep, left);
	}
	for (uint32_t i = 0; cb && i < t->n && !err; i++)
		if (!keep[i] && (t->node[i].flags & RT_BODY))
			err = cb(arg, &t->node[i].rev, t->node[i].body_ref);
	if (!err)
		rt_compact(t, keep, left);
out_free:
	free(keep);
	free(left);
	return err;
}

int revtree_set_body(struct revtree *t, const struct rev *rev,
		     bool has_body, uint64_t body_ref)
{
	uint32_t x = rt_find(t, rev);

	if (x == RT_NONE)
		return BARREL_E_NOTFOUND;
	if (has_body) {
		t->node[x].flags |= RT_BODY;
		t->node[x].body_ref = body_ref;
	} else {
		t->node[x].flags &= (uint8_t)~RT_BODY;
		t->node[x].body_ref = 0;
	}
	return 0;
}

int revtree_prune_bodies(struct revtree *t, uint32_t keep_last_n,
			 revtree_prune_cb cb, void *arg, size_t *pruned)
{
	size_t count = 0;
	bool *keep;
	int err = 0;

	keep = calloc(t->n ? t->n : 1, sizeof(*keep));
	if (!keep)
		return -ENOMEM;
	mark_near_leaves(t, keep_last_n > 0 ? keep_last_n : 1, keep);
	for (uint32_t i = 0; i < t->n; i++) {
		struct rt_node *nd = &t->node[i];

		if (keep[i] || nd->nchild >= 2 || !(nd->flags & RT_BODY))
			continue;
		err = cb(arg, &nd->rev, nd->body_ref);
		if (err)
			break;
		nd->flags &= (uint8_t)~RT_BODY;
		nd->body_ref = 0;
		count++;
	}
	if (pruned)
		*pruned = count;
	free(keep);
	return err;
}

/* ---- queries ---- */

int revtree_each(const struct revtree *t,
		 int (*cb)(void *arg, const struct revtree_info *ri),
		 void *arg)
{
	for (uint32_t i = 0; i < t->n; i++) {
		struct revtree_info ri;
		int rc;

		rt_info(&t->node[i], &ri);
		if ((rc = cb(arg, &ri)))
			return rc;
	}
	return 0;
}

int revtree_find(const struct revtree *t, const struct rev *rev,
		 struct revtree_info *out)
{
	uint32_t x = rt_find(t, rev);

	if (x == RT_NONE)
		return BARREL_E_NOTFOUND;
	rt_info(&t->node[x], out);
	return 0;
}

int revtree_path(const struct revtree *t, const struct rev *rev,
		 struct rev *out, size_t max, size_t *n)
{
	uint32_t x = rt_find(t, rev);
	size_t k = 0;

	if (x == RT_NONE)
		return BARREL_E_NOTFOUND;
	for (; x != RT_NONE && k < max; x = t->node[x].parent)
		out[k++] = t->node[x].rev;
	*n = k;
	return 0;
}

/* Leaves with a generation below gen, best first, into *anc. */
static int leaves_below(const struct revtree *t, uint64_t gen,
			struct rev **anc, size_t *nanc)
{
	struct revtree_info *v;
	struct rev *r;
	size_t nv, k = 0;
	int err;

	err = revtree_leaves(t, &v, &nv);
	if (err || !nv)
		return err;
	r = malloc(nv * sizeof(*r));
	if (!r) {
		err = -ENOMEM;
		goto out_free_leaves;
	}
	for (size_t i = 0; i < nv; i++)
		if (v[i].rev.gen < gen)
			r[k++] = v[i].rev;
	if (!k) {
		free(r);
		r = NULL;
	}
	*anc = r;
	*nanc = k;
out_free_leaves:
	free(v);
	return err;
}

int revtree_revs_diff(const struct revtree *t, const struct rev *revs,
		      size_t n, bool *missing, struct rev **anc,
		      size_t *nanc)
{
	uint64_t maxgen = 0;

	*anc = NULL;
	*nanc = 0;
	for (size_t i = 0; i < n; i++) {
		missing[i] = rt_find(t, &revs[i]) == RT_NONE;
		if (missing[i] && revs[i].gen > maxgen)
			maxgen = revs[i].gen;
	}
	if (!maxgen)
		return 0;
	return leaves_below(t, maxgen, anc, nanc);
}

/* ---- encoding (FORMAT.md "Revision tree") ---- */

#define RT_VERSION 1u
#define RT_HDR_SIZE 5u
#define RT_ENTRY_MIN 7u   /* flags, hash_len, parent, one hash byte */
#define RT_ENCODE_STACK 32u   /* nodes encoded without malloc */

enum rt_enc_flags {
	RTE_DELETED = 1 << 0,
	RTE_BODY = 1 << 1,
	RTE_MISSING = 1 << 2,
	RTE_BIN = 1 << 3,
	RTE_ROOT = 1 << 4,
	RTE_KNOWN = 0x1f,
};

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static size_t entry_size(const struct rt_node *nd)
{
	return 2 + (nd->parent == RT_NONE ? 8 : 4) +
	       (nd->flags & RT_BODY ? 8 : 0) + nd->rev.len;
}

static int node_ptr_cmp(const void *pa, const void *pb)
{
	const struct rt_node *const *a = pa, *const *b = pb;

	return rev_cmp(&(*a)->rev, &(*b)->rev);
}

/* Write one entry at p; pos maps a node index to its entry number. */
static uint8_t *put_entry(uint8_t *p, const struct rt_node *nd,
			  const uint32_t *pos)
{
	uint8_t f = (uint8_t)(nd->flags & (RT_DELETED | RT_BODY | RT_MISSING));

	f |= nd->rev.bin ? RTE_BIN : 0;
	f |= nd->parent == RT_NONE ? RTE_ROOT : 0;
	*p++ = f;
	*p++ = nd->rev.len;
	if (nd->parent == RT_NONE) {
		put_le64(p, nd->rev.gen);
		p += 8;
	} else {
		put_le32(p, pos[nd->parent]);
		p += 4;
	}
	if (nd->flags & RT_BODY) {
		put_le64(p, nd->body_ref);
		p += 8;
	}
	memcpy(p, nd->rev.hash, nd->rev.len);
	return p + nd->rev.len;
}

size_t revtree_encoded_size(const struct revtree *t)
{
	size_t size = RT_HDR_SIZE;

	for (uint32_t i = 0; i < t->n; i++)
		size += entry_size(&t->node[i]);
	return size;
}

/* The encoding into buf, given the nodes sorted (order) and each node's
 * entry number (pos). */
static void encode_sorted(const struct revtree *t,
			  const struct rt_node **order, uint32_t *pos,
			  uint8_t *buf)
{
	uint8_t *p = buf + RT_HDR_SIZE;

	for (uint32_t i = 0; i < t->n; i++)
		order[i] = &t->node[i];
	qsort(order, t->n, sizeof(*order), node_ptr_cmp);
	for (uint32_t i = 0; i < t->n; i++)
		pos[order[i] - t->node] = i;
	buf[0] = RT_VERSION;
	put_le32(buf + 1, t->n);
	for (uint32_t i = 0; i < t->n; i++)
		p = put_entry(p, order[i], pos);
}

int revtree_encode_to(const struct revtree *t, uint8_t *buf)
{
	const struct rt_node *order_stack[RT_ENCODE_STACK], **order = order_stack;
	uint32_t pos_stack[RT_ENCODE_STACK], *pos = pos_stack;

	if (t->n > RT_ENCODE_STACK) {
		order = malloc(t->n * sizeof(*order));
		pos = malloc(t->n * sizeof(*pos));
	}
	if (order && pos)
		encode_sorted(t, order, pos, buf);
	if (order != order_stack) {
		free(order);
		free(pos);
	}
	return order && pos ? 0 : -ENOMEM;
}

int revtree_encode(const struct revtree *t, uint8_t **buf, size_t *len)
{
	size_t size = revtree_encoded_size(t);
	uint8_t *out = malloc(size);
	int err;

	if (!out)
		return -ENOMEM;
	if ((err = revtree_encode_to(t, out))) {
		free(out);
		return err;
	}
	*buf = out;
	*len = size;
	return 0;
}

/* A bounded reader over the encoding; fail names the first problem. */
struct rt_reader {
	const uint8_t *p;
	size_t left, off;
	const char *fail;
};

static bool take(struct rt_reader *r, size_t n, const uint8_t **out)
{
	if (r->left < n) {
		r->fail = "truncated entry";
		return false;
	}
	*out = r->p;
	r->p += n;
	r->left -= n;
	r->off += n;
	return true;
}

static int corrupt(const struct rt_reader *r, uint32_t entry)
{
	barrel_log(BLOG_ERR, "corrupt revtree: off=%zu entry=%u: %s",
		   r->off, entry, r->fail);
	return BARREL_E_CORRUPT;
}

/* Flags and hash of one entry, checked against the rules of FORMAT.md. */
static bool check_entry_head(struct rt_reader *r, uint8_t f, uint8_t hlen)
{
	if (f & ~RTE_KNOWN)
		r->fail = "unknown flag bits";
	else if ((f & RTE_MISSING) && (f & RTE_DELETED))
		r->fail = "missing revision marked deleted";
	else if (hlen < 1 || hlen > REV_HASH_MAX)
		r->fail = "bad hash length";
	else if ((f & RTE_BIN) && hlen != REV_BIN_LEN)
		r->fail = "binary hash not 16 bytes";
	return !r->fail;
}

/* The generation of an entry: stored for a root, else parent's + 1. */
static bool read_gen(struct rt_reader *r, const struct revtree *t,
		     uint8_t f, struct rt_node *nd)
{
	const uint8_t *b;

	if (f & RTE_ROOT) {
		if (!take(r, 8, &b))
			return false;
		nd->parent = RT_NONE;
		nd->rev.gen = get_le64(b);
	} else {
		if (!take(r, 4, &b))
			return false;
		nd->parent = get_le32(b);
		if (nd->parent >= t->n) {
			r->fail = "parent is not an earlier entry";
			return false;
		}
		nd->rev.gen = t->node[nd->parent].rev.gen + 1;
	}
	return true;   /* the range is checked with the id (read_entry) */
}

static bool read_entry(struct rt_reader *r, const struct revtree *t,
		       struct rt_node *nd)
{
	const uint8_t *b;
	uint8_t f, hlen;

	memset(nd, 0, sizeof(*nd));
	if (!take(r, 2, &b))
		return false;
	f = b[0];
	hlen = b[1];
	if (!check_entry_head(r, f, hlen) || !read_gen(r, t, f, nd))
		return false;
	if ((f & RTE_BODY) && take(r, 8, &b))
		nd->body_ref = get_le64(b);
	if (r->fail || !take(r, hlen, &b))
		return false;
	memcpy(nd->rev.hash, b, hlen);
	nd->rev.len = hlen;
	nd->rev.bin = f & RTE_BIN;
	nd->flags = f & (RT_DELETED | RT_BODY | RT_MISSING);
	if (!rev_valid(&nd->rev))
		r->fail = "bad revision id (generation or hash)";
	return !r->fail;
}

/* Entries strictly ascending, and no missing leaf. */
static bool check_tree(struct rt_reader *r, const struct revtree *t)
{
	for (uint32_t i = 0; i < t->n; i++)
		if (!t->node[i].nchild && (t->node[i].flags & RT_MISSING)) {
			r->fail = "missing revision is a leaf";
			return false;
		}
	return true;
}

/*
 * Decode steps: 1. header and version; 2. count bounded by the bytes
 * left; 3. each entry read and checked, in strictly ascending order;
 * 4. no trailing bytes; 5. whole-tree checks.
 */
int revtree_decode(const void *buf, size_t len, struct revtree **out)
{
	struct rt_reader r = { .p = buf, .left = len };
	struct revtree *t = NULL;
	const uint8_t *b;
	uint32_t count, i = 0;
	int err;

	if (len >= 1 && ((const uint8_t *)buf)[0] != RT_VERSION) {
		barrel_log(BLOG_ERR, "revtree: unknown version %u",
			   ((const uint8_t *)buf)[0]);
		return BARREL_E_VERSION;
	}
	if (!take(&r, RT_HDR_SIZE, &b)) {
		r.fail = "short header";
		return corrupt(&r, 0);
	}
	count = get_le32(b + 1);
	if (count > r.left / RT_ENTRY_MIN) {
		r.fail = "count exceeds the bytes present";
		return corrupt(&r, 0);
	}
	err = revtree_new(&t);
	if (!err)
		err = rt_reserve(t, count);
	if (err)
		goto out_free_tree;
	for (i = 0; i < count; i++) {
		struct rt_node nd;

		if (!read_entry(&r, t, &nd))
			goto out_corrupt;
		if (i && rev_cmp(&t->node[i - 1].rev, &nd.rev) >= 0) {
			r.fail = "entries out of order or duplicated";
			goto out_corrupt;
		}
		rt_push(t, &nd.rev, nd.parent, nd.flags, nd.body_ref);
	}
	if (r.left) {
		r.fail = "trailing bytes";
		goto out_corrupt;
	}
	if (!check_tree(&r, t))
		goto out_corrupt;
	*out = t;
	return 0;
out_corrupt:
	err = corrupt(&r, i);
out_free_tree:
	revtree_free(t);
	return err;
}
