/*
 * Revision trees: the history of one document, with CouchDB's rules.
 *
 * A revision id is "N-HASH": the generation N (decimal, >= 1, no leading
 * zeros, <= REV_GEN_MAX) and a hash of 1..REV_HASH_MAX characters of
 * [0-9a-zA-Z]. A hash of exactly 32 lowercase hex digits (what CouchDB
 * and we generate) is held as its 16 bytes, as CouchDB does; any other
 * hash (replicated from elsewhere) is held as its characters.
 *
 * A tree is a forest: every revision but a root has one parent whose
 * generation is one lower. Roots have generation 1, or higher once
 * stemming (revs_limit) has cut their ancestors off. A revision appears
 * at most once in a tree, so paths that share revisions share nodes:
 * branches joined by a graft or left over by stemming meet by themselves.
 *
 * Each revision carries:
 *  - deleted: it is a deletion (tombstone);
 *  - has_body / body_ref: whether the layer above keeps its body, and an
 *    opaque number it uses to find it (never interpreted here);
 *  - missing: known only as an ancestor named by a `_revisions` list
 *    (CouchDB's ?REV_MISSING); its deleted flag is unknown (false).
 *    Never true for a leaf.
 *
 * The winner (CouchDB's rule) is the leaf that sorts first by: not
 * deleted before deleted, then higher generation, then greater hash
 * compared as bytes (the 16 bytes of a 32-hex hash, the characters of any
 * other; a proper prefix is smaller).
 *
 * No I/O and no locking: a tree belongs to one thread at a time.
 * Errors: 0 or a negative code of error.h; -ENOMEM when out of memory.
 * A failed call leaves the tree as it was.
 */
#ifndef BARREL_REVTREE_H
#define BARREL_REVTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REV_HASH_MAX 64u
#define REV_GEN_MAX ((1ull << 53) - 1)   /* exact in a JSON number */
/* Buffer size that holds any formatted revision id and its NUL. */
#define REV_STR_SIZE 96u

/* A revision id. Plain value: copy it freely. */
struct rev {
	uint64_t gen;                 /* generation, 1..REV_GEN_MAX */
	uint8_t len;                  /* bytes used in hash: 16 if bin */
	bool bin;                     /* hash is the 16 bytes of 32 hex digits */
	uint8_t hash[REV_HASH_MAX];   /* bytes past len are zero */
};

/* Parse "N-HASH" (len bytes, no NUL needed). BARREL_E_BADREV if malformed. */
int rev_parse(const char *s, size_t len, struct rev *out);

/* Write r as a NUL-terminated "N-HASH" into buf; BARREL_E_INVALID when it
 * does not fit (REV_STR_SIZE always does) or r is not a valid id. */
int rev_format(const struct rev *r, char *buf, size_t size);

/* Is r a valid id (as rev_parse() makes them)? */
bool rev_valid(const struct rev *r);

bool rev_eq(const struct rev *a, const struct rev *b);

/* Total order: generation, then hash bytes, then a prefix before its
 * extensions, then a 16-byte binary hash before equal characters.
 * <0, 0, >0 as memcmp. */
int rev_cmp(const struct rev *a, const struct rev *b);

/* ---- trees ---- */

struct revtree;

/* What a tree knows of one revision. */
struct revtree_info {
	struct rev rev;
	bool deleted;
	bool has_body;
	bool missing;        /* only known as an ancestor (see above) */
	bool is_leaf;
	uint64_t body_ref;   /* meaningful only when has_body */
};

/* An empty tree in *out, owned by the caller: revtree_free() it. */
int revtree_new(struct revtree **out);
void revtree_free(struct revtree *t);   /* NULL is a no-op */

/* Number of revisions in the tree. */
size_t revtree_count(const struct revtree *t);

/*
 * An edit with new_edits=true: new_rev becomes a child of parent, with
 * has_body set and body_ref. parent must be a leaf. parent NULL creates
 * the document: allowed when the tree is empty (new_rev.gen must be 1),
 * or when every leaf is deleted, in which case new_rev is grafted onto
 * the winning (deleted) leaf, as CouchDB recreates a deleted document.
 * Errors: BARREL_E_CONFLICT when parent is unknown or not a leaf, when
 * parent is NULL and a live leaf exists, or when new_rev already exists;
 * BARREL_E_INVALID when new_rev's generation is not the parent's + 1 or
 * a rev is not valid.
 */
int revtree_add_edit(struct revtree *t, const struct rev *parent,
		     const struct rev *new_rev, bool deleted,
		     uint64_t body_ref);

/*
 * An edit with new_edits=false (replication): path is a `_revisions`
 * list, newest first, n >= 1: path[0] is the new leaf, path[i + 1] is the
 * parent of path[i], so generations fall by exactly one per step.
 * Merged by revision id: known revisions are reused, a root the tree got
 * by stemming is joined to the parent the path names, the rest is added
 * (ancestors as missing; the oldest unknown one as a new root when the
 * path goes no further). path[0] gets deleted/body_ref/has_body unless
 * it was already known other than as missing.
 * Idempotent and order-independent: the same set of grafts in any order
 * gives the same tree (the same revtree_encode() bytes).
 * *added (may be NULL) tells whether anything changed.
 * Errors: BARREL_E_INVALID for n == 0, an invalid rev or generations that
 * do not fall by one; BARREL_E_CONFLICT when the path names a parent for
 * a revision that already has a different one.
 */
int revtree_graft(struct revtree *t, const struct rev *path, size_t n,
		  bool deleted, uint64_t body_ref, bool *added);

/*
 * Keep at most limit (>= 1, CouchDB revs_limit) revisions along each
 * path from a leaf up; older ones are dropped and the oldest kept become
 * roots. Before anything changes, cb (may be NULL) is called for each
 * revision to be dropped that has a body; a non-zero return stops,
 * leaves the tree as it was, and is returned. *removed (may be NULL)
 * gets the number dropped.
 */
typedef int (*revtree_prune_cb)(void *arg, const struct rev *rev,
				uint64_t body_ref);
int revtree_stem(struct revtree *t, uint32_t limit, revtree_prune_cb cb,
		 void *arg, size_t *removed);

/*
 * CouchDB's purge: remove each of revs (n of them) that is a leaf, and
 * its ancestors that no remaining leaf descends from; revisions that are
 * not leaves are ignored. Before anything changes, cb (may be NULL) is
 * called for each revision to be removed that has a body; a non-zero
 * return stops, leaves the tree as it was, and is returned. purged (may
 * be NULL; caller's array of n) tells which of revs were removed.
 */
int revtree_purge(struct revtree *t, const struct rev *revs, size_t n,
		  revtree_prune_cb cb, void *arg, bool *purged);

/* The winning leaf; BARREL_E_NOTFOUND when the tree is empty. Either
 * out pointer may be NULL. */
int revtree_winner(const struct revtree *t, struct rev *rev, bool *deleted);

/* true when the tree is not empty and every leaf is deleted. */
bool revtree_is_deleted(const struct revtree *t);

/*
 * Every leaf, best first (out[0] is the winner). *out is malloc'ed and
 * owned by the caller (free()); NULL with *n = 0 for an empty tree.
 */
int revtree_leaves(const struct revtree *t, struct revtree_info **out,
		   size_t *n);

/*
 * `_conflicts`: the live leaves other than the winner; and
 * `_deleted_conflicts`: the deleted leaves other than the winner. Both
 * best first. *out is malloc'ed, owned by the caller (free()); NULL with
 * *n = 0 when there are none.
 */
int revtree_conflicts(const struct revtree *t, struct rev **out, size_t *n);
int revtree_deleted_conflicts(const struct revtree *t, struct rev **out,
			      size_t *n);

/* Call cb for every revision, in the encoding's order (ascending ids, so
 * parents before children); a non-zero return stops and is returned. */
int revtree_each(const struct revtree *t,
		 int (*cb)(void *arg, const struct revtree_info *ri),
		 void *arg);

/* What the tree knows of rev; BARREL_E_NOTFOUND when it is not in it. */
int revtree_find(const struct revtree *t, const struct rev *rev,
		 struct revtree_info *out);

/*
 * The ancestry of rev, newest first (out[0] = rev), for `_revisions`:
 * at most max entries into out (caller's array), the count in *n.
 * BARREL_E_NOTFOUND when rev is not in the tree.
 */
int revtree_path(const struct revtree *t, const struct rev *rev,
		 struct rev *out, size_t max, size_t *n);

/*
 * `_revs_diff` for one document: missing[i] (caller's array of n) tells
 * whether revs[i] is absent from the tree (a missing ancestor counts as
 * present, as in CouchDB). *anc gets possible_ancestors: the leaves whose
 * generation is lower than that of some missing rev, best first;
 * malloc'ed, owned by the caller (free()), NULL with *nanc = 0 if none.
 */
int revtree_revs_diff(const struct revtree *t, const struct rev *revs,
		      size_t n, bool *missing, struct rev **anc,
		      size_t *nanc);

/* Set whether rev's body is kept, and where. BARREL_E_NOTFOUND. */
int revtree_set_body(struct revtree *t, const struct rev *rev,
		     bool has_body, uint64_t body_ref);

/* revtree_prune_cb: called by revtree_prune_bodies() for a body that may
 * go; a non-zero return stops the walk, is returned, and leaves that
 * revision as it was. */

/*
 * Drop bodies no longer needed. Kept: every leaf's, those of the
 * keep_last_n revisions nearest each leaf (the leaf counting as one),
 * and those of every branch point (a revision with two or more children:
 * the nearest common ancestor of the leaves of its branches, which a
 * conflict resolution or a 3-way merge needs). For every other revision
 * with a body, cb is called, then has_body is cleared. *pruned (may be
 * NULL) counts them.
 */
int revtree_prune_bodies(struct revtree *t, uint32_t keep_last_n,
			 revtree_prune_cb cb, void *arg, size_t *pruned);

/*
 * Serialize (FORMAT.md "Revision tree"): canonical, so equal trees give
 * equal bytes. *buf is malloc'ed, owned by the caller (free()).
 */
int revtree_encode(const struct revtree *t, uint8_t **buf, size_t *len);

/* The same into the caller's buf of revtree_encoded_size(t) bytes. */
size_t revtree_encoded_size(const struct revtree *t);
int revtree_encode_to(const struct revtree *t, uint8_t *buf);

/*
 * Parse and validate an encoding. *out is owned by the caller
 * (revtree_free()). BARREL_E_VERSION for an unknown version,
 * BARREL_E_CORRUPT for anything else malformed (logged).
 */
int revtree_decode(const void *buf, size_t len, struct revtree **out);

#endif
