#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/log.h"
#include "engine/revtree.h"
#include "tests/engine/testutil.h"

/* ---- helpers ---- */

static void quiet(void *arg, enum barrel_log_level lvl, const char *msg)
{
	(void)arg;
	(void)lvl;
	(void)msg;
}

static struct rev R(const char *s)
{
	struct rev r;

	ck_assert_msg(rev_parse(s, strlen(s), &r) == 0, "parse %s", s);
	return r;
}

static struct revtree *tree_new(void)
{
	struct revtree *t;

	ck_assert_int_eq(revtree_new(&t), 0);
	return t;
}

/* add_edit from string ids; parent NULL for none. */
static int edit(struct revtree *t, const char *parent, const char *rev,
		bool deleted)
{
	struct rev p, r = R(rev);

	if (parent)
		p = R(parent);
	return revtree_add_edit(t, parent ? &p : NULL, &r, deleted, r.gen);
}

/* graft a NULL-terminated list of ids, newest first. */
static int graft(struct revtree *t, bool deleted, bool *added, ...)
{
	struct rev path[32];
	const char *s;
	size_t n = 0;
	va_list ap;

	va_start(ap, added);
	while ((s = va_arg(ap, const char *)) && n < 32)
		path[n++] = R(s);
	va_end(ap);
	return revtree_graft(t, path, n, deleted, 7, added);
}

static void assert_rev(const struct rev *r, const char *want)
{
	char buf[REV_STR_SIZE];

	ck_assert_int_eq(rev_format(r, buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, want);
}

static void assert_winner(const struct revtree *t, const char *want,
			  bool want_deleted)
{
	struct rev w;
	bool del;

	ck_assert_int_eq(revtree_winner(t, &w, &del), 0);
	assert_rev(&w, want);
	ck_assert_int_eq(del, want_deleted);
}

struct enc {
	uint8_t *buf;
	size_t len;
};

static struct enc encode(const struct revtree *t)
{
	struct enc e;

	ck_assert_int_eq(revtree_encode(t, &e.buf, &e.len), 0);
	return e;
}

static bool enc_eq(struct enc a, struct enc b)
{
	return a.len == b.len && memcmp(a.buf, b.buf, a.len) == 0;
}

static bool same_tree(const struct revtree *a, const struct revtree *b)
{
	struct enc ea = encode(a), eb = encode(b);
	bool eq = enc_eq(ea, eb);

	free(ea.buf);
	free(eb.buf);
	return eq;
}

/* ---- revision ids ---- */

/* Ids round-trip; 32 lowercase hex is held as 16 bytes, others as text. */
START_TEST(test_rev_parse_format)
{
	static const char *ok[] = {
		"1-967a00dff5e02add41819138abb3284d", "3-abc", "12-ABCdef",
		"9007199254740991-x", "1-967A00DFF5E02ADD41819138ABB3284D",
	};
	char s[REV_STR_SIZE];
	struct rev r;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		r = R(ok[i]);
		assert_rev(&r, ok[i]);
	}
	r = R("1-967a00dff5e02add41819138abb3284d");
	ck_assert(r.bin);
	ck_assert_int_eq(r.len, 16);
	ck_assert_int_eq(r.hash[0], 0x96);
	ck_assert(!R("1-967A00DFF5E02ADD41819138ABB3284D").bin);
	/* 16 text bytes equal to a binary hash's are still another id */
	r = R("1-61616161616161616161616161616161");
	ck_assert(memcmp(r.hash, "aaaaaaaaaaaaaaaa", 16) == 0);
	ck_assert(!rev_eq(&r, &(struct rev){ 0 }));
	{
		struct rev text = R("1-aaaaaaaaaaaaaaaa");

		ck_assert(!rev_eq(&r, &text));
		ck_assert_int_lt(rev_cmp(&r, &text), 0);
	}
	memset(s, 'a', 66);
	s[0] = '1';
	s[1] = '-';
	s[66] = '\0';
	ck_assert_int_eq(rev_parse(s, 66, &r), 0);
	ck_assert_int_eq(r.len, 64);
	ck_assert_int_eq(rev_format(&r, s, 10), BARREL_E_INVALID);
	/* the NUL must fit too; nothing is written past size */
	r = R("12-967a00dff5e02add41819138abb3284d");
	memset(s, '#', sizeof(s));
	ck_assert_int_eq(rev_format(&r, s, 35), BARREL_E_INVALID);
	ck_assert_int_eq(rev_format(&r, s, 36), 0);
	ck_assert_str_eq(s, "12-967a00dff5e02add41819138abb3284d");
	ck_assert_int_eq(s[36], '#');
}
END_TEST

/* Malformed ids are BARREL_E_BADREV and leave *out untouched. */
START_TEST(test_rev_parse_malformed)
{
	static const char *bad[] = {
		"", "1", "1-", "0-abc", "-1-abc", "x-abc", "1-zz!", "01-abc",
		"1-a-b", "1 -abc", "1-ab c", "9007199254740992-a",
		"99999999999999999-a", "-", "--", "1-\xc3\xa9",
	};
	char longer[100];
	struct rev r, keep;

	memset(&keep, 0x5a, sizeof(keep));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = keep;
		ck_assert_msg(rev_parse(bad[i], strlen(bad[i]), &r) ==
			      BARREL_E_BADREV, "accepted \"%s\"", bad[i]);
		ck_assert(memcmp(&r, &keep, sizeof(r)) == 0);
	}
	memset(longer, 'a', sizeof(longer));
	longer[0] = '1';
	longer[1] = '-';
	ck_assert_int_eq(rev_parse(longer, 67, &r), BARREL_E_BADREV);
	ck_assert_int_eq(rev_parse(longer, sizeof(longer), &r),
			 BARREL_E_BADREV);
	/* an embedded NUL is not a hash character */
	ck_assert_int_eq(rev_parse("1-ab\0c", 6, &r), BARREL_E_BADREV);
}
END_TEST

/* ---- winner ---- */

/* A live leaf beats a deleted one even of a higher generation. */
START_TEST(test_winner_live_beats_deleted)
{
	struct revtree *t = tree_new();

	ck_assert_int_eq(revtree_winner(t, NULL, NULL), BARREL_E_NOTFOUND);
	ck_assert(!revtree_is_deleted(t));
	ck_assert_int_eq(edit(t, NULL, "1-a", false), 0);
	ck_assert_int_eq(edit(t, "1-a", "2-x", false), 0);
	ck_assert_int_eq(graft(t, false, NULL, "2-y", "1-a", NULL), 0);
	ck_assert_int_eq(edit(t, "2-y", "3-z", true), 0);
	assert_winner(t, "2-x", false);
	ck_assert(!revtree_is_deleted(t));
	ck_assert_int_eq(edit(t, "2-x", "3-w", true), 0);
	/* every leaf deleted: the highest deleted one wins */
	assert_winner(t, "3-z", true);
	ck_assert(revtree_is_deleted(t));
	revtree_free(t);
}
END_TEST

/* Equal generations: the greater hash wins, compared as bytes. */
START_TEST(test_winner_hash_bytes)
{
	struct revtree *t = tree_new();

	ck_assert_int_eq(edit(t, NULL, "1-r", false), 0);
	ck_assert_int_eq(graft(t, false, NULL, "2-b", "1-r", NULL), 0);
	ck_assert_int_eq(graft(t, false, NULL, "2-abc", "1-r", NULL), 0);
	assert_winner(t, "2-b", false);
	/* 0xa0... (16 bytes) beats 'b' (0x62), though "a0" < "b" as text */
	ck_assert_int_eq(graft(t, false, NULL,
			       "2-a0000000000000000000000000000000", "1-r",
			       NULL), 0);
	assert_winner(t, "2-a0000000000000000000000000000000", false);
	/* '1' (0x31) beats 0x30..., though "30" > "1" as text */
	ck_assert_int_eq(graft(t, false, NULL,
			       "3-30000000000000000000000000000000", "2-b",
			       NULL), 0);
	ck_assert_int_eq(graft(t, false, NULL, "3-1", "2-abc", NULL), 0);
	assert_winner(t, "3-1", false);
	/* higher generation first; a prefix loses to its extension */
	ck_assert_int_eq(edit(t, "3-1", "4-a", false), 0);
	assert_winner(t, "4-a", false);
	ck_assert_int_eq(graft(t, false, NULL, "4-aa",
			       "3-30000000000000000000000000000000", NULL), 0);
	assert_winner(t, "4-aa", false);
	revtree_free(t);
}
END_TEST

/* CouchDB's conflicts documentation: 2-7051... wins over its siblings. */
START_TEST(test_couchdb_conflict_example)
{
	struct revtree *t = tree_new();
	struct rev *c;
	size_t n;

	ck_assert_int_eq(edit(t, NULL, "1-967a00dff5e02add41819138abb3284d",
			      false), 0);
	ck_assert_int_eq(graft(t, false, NULL,
			       "2-65db2a11b5172bf928e3bcf59f728970",
			       "1-967a00dff5e02add41819138abb3284d", NULL), 0);
	ck_assert_int_eq(graft(t, false, NULL,
			       "2-7051cbe5c8faecd085a3fa619e6e6337",
			       "1-967a00dff5e02add41819138abb3284d", NULL), 0);
	ck_assert_int_eq(graft(t, false, NULL,
			       "2-5bc3c6319edf62d4c624277fdd0ae191",
			       "1-967a00dff5e02add41819138abb3284d", NULL), 0);
	assert_winner(t, "2-7051cbe5c8faecd085a3fa619e6e6337", false);
	ck_assert_int_eq(revtree_conflicts(t, &c, &n), 0);
	ck_assert_uint_eq(n, 2);
	assert_rev(&c[0], "2-65db2a11b5172bf928e3bcf59f728970");
	assert_rev(&c[1], "2-5bc3c6319edf62d4c624277fdd0ae191");
	free(c);
	/* deleting the winner promotes the next, as CouchDB does */
	ck_assert_int_eq(edit(t, "2-7051cbe5c8faecd085a3fa619e6e6337",
			      "3-0000000000000000000000000000ffff", true), 0);
	assert_winner(t, "2-65db2a11b5172bf928e3bcf59f728970", false);
	ck_assert_int_eq(revtree_deleted_conflicts(t, &c, &n), 0);
	ck_assert_uint_eq(n, 1);
	assert_rev(&c[0], "3-0000000000000000000000000000ffff");
	free(c);
	revtree_free(t);
}
END_TEST

/* COUCHDB-462's example: conflicts and deleted_conflicts, best first. */
START_TEST(test_conflict_lists)
{
	struct revtree *t = tree_new();
	struct rev *c;
	size_t n;

	ck_assert_int_eq(edit(t, NULL, "1-r", false), 0);
	ck_assert_int_eq(graft(t, false, NULL,
			       "5-dd31186f5aa11ebd47eb664fb342f1b1", "4-a",
			       "3-a", "2-a", "1-r", NULL), 0);
	ck_assert_int_eq(graft(t, false, NULL,
			       "5-a0efbb1990c961a078dc5308d03b7044", "4-b",
			       "3-a", NULL), 0);
	ck_assert_int_eq(graft(t, true, NULL,
			       "2-cce334eeeb02d04870e37dac6d33198a", "1-r",
			       NULL), 0);
	ck_assert_int_eq(graft(t, true, NULL,
			       "3-bdc15320c0850d4ee90ff43d1d298d5d", "2-b",
			       "1-r", NULL), 0);
	assert_winner(t, "5-dd31186f5aa11ebd47eb664fb342f1b1", false);
	ck_assert_int_eq(revtree_conflicts(t, &c, &n), 0);
	ck_assert_uint_eq(n, 1);
	assert_rev(&c[0], "5-a0efbb1990c961a078dc5308d03b7044");
	free(c);
	ck_assert_int_eq(revtree_deleted_conflicts(t, &c, &n), 0);
	ck_assert_uint_eq(n, 2);
	assert_rev(&c[0], "3-bdc15320c0850d4ee90ff43d1d298d5d");
	assert_rev(&c[1], "2-cce334eeeb02d04870e37dac6d33198a");
	free(c);
	revtree_free(t);
	/* a lone leaf has no conflicts of either kind */
	t = tree_new();
	ck_assert_int_eq(edit(t, NULL, "1-r", true), 0);
	ck_assert_int_eq(revtree_conflicts(t, &c, &n), 0);
	ck_assert_ptr_null(c);
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(revtree_deleted_conflicts(t, &c, &n), 0);
	ck_assert_uint_eq(n, 0);
	revtree_free(t);
}
END_TEST

/* ---- edits ---- */

/* new_edits=true: parent must be a leaf; duplicates and stale are 409. */
START_TEST(test_add_edit_rules)
{
	struct revtree *t = tree_new();
	struct revtree_info info;
	struct rev path[4];
	size_t n;

	ck_assert_int_eq(edit(t, NULL, "2-a", false), BARREL_E_INVALID);
	ck_assert_int_eq(edit(t, NULL, "1-a", false), 0);
	ck_assert_int_eq(edit(t, NULL, "1-b", false), BARREL_E_CONFLICT);
	ck_assert_int_eq(edit(t, "1-a", "2-a", false), 0);
	ck_assert_int_eq(edit(t, "1-a", "2-b", false), BARREL_E_CONFLICT);
	ck_assert_int_eq(edit(t, "1-zz", "2-b", false), BARREL_E_CONFLICT);
	ck_assert_int_eq(edit(t, "2-a", "2-a", false), BARREL_E_CONFLICT);
	ck_assert_int_eq(edit(t, "2-a", "4-b", false), BARREL_E_INVALID);
	ck_assert_int_eq(edit(t, "2-a", "3-d", true), 0);
	ck_assert(revtree_is_deleted(t));
	/* recreate: NULL parent grafts onto the deleted winner */
	ck_assert_int_eq(edit(t, NULL, "3-e", false), BARREL_E_INVALID);
	ck_assert_int_eq(edit(t, NULL, "4-e", false), 0);
	ck_assert(!revtree_is_deleted(t));
	assert_winner(t, "4-e", false);
	path[0] = R("9-q");
	ck_assert_int_eq(revtree_path(t, &path[0], path, 4, &n),
			 BARREL_E_NOTFOUND);
	path[0] = R("4-e");
	ck_assert_int_eq(revtree_path(t, &path[0], path, 4, &n), 0);
	ck_assert_uint_eq(n, 4);
	assert_rev(&path[1], "3-d");
	assert_rev(&path[3], "1-a");
	ck_assert_int_eq(revtree_path(t, &path[0], path, 2, &n), 0);
	ck_assert_uint_eq(n, 2);
	path[0] = R("3-d");
	ck_assert_int_eq(revtree_find(t, &path[0], &info), 0);
	ck_assert(info.deleted && info.has_body && !info.is_leaf);
	ck_assert_uint_eq(info.body_ref, 3);
	ck_assert_uint_eq(revtree_count(t), 4);
	revtree_free(t);
}
END_TEST

/* new_edits=false: out of order and repeated grafts give equal trees. */
START_TEST(test_graft_order_and_idempotence)
{
	struct revtree *a = tree_new(), *b = tree_new();
	struct revtree_info info;
	struct rev r;
	bool added;

	/* a: full history first, then a branch, then a stemmed tail */
	ck_assert_int_eq(graft(a, false, &added, "3-c", "2-b", "1-a", NULL),
			 0);
	ck_assert(added);
	ck_assert_int_eq(graft(a, false, &added, "3-x", "2-b", NULL), 0);
	ck_assert_int_eq(graft(a, true, &added, "5-e", "4-d", "3-c", NULL),
			 0);
	/* b: the reverse; 5-e arrives stemmed, its root joined later */
	ck_assert_int_eq(graft(b, true, &added, "5-e", "4-d", "3-c", NULL),
			 0);
	ck_assert_int_eq(graft(b, false, &added, "3-x", "2-b", NULL), 0);
	ck_assert(!same_tree(a, b));
	ck_assert_int_eq(graft(b, false, &added, "3-c", "2-b", "1-a", NULL),
			 0);
	ck_assert(added);
	ck_assert(same_tree(a, b));
	/* twice: nothing new */
	ck_assert_int_eq(graft(b, false, &added, "3-c", "2-b", "1-a", NULL),
			 0);
	ck_assert(!added);
	ck_assert_int_eq(graft(b, true, &added, "5-e", "4-d", NULL), 0);
	ck_assert(!added);
	ck_assert(same_tree(a, b));
	/* ancestors only named by a path are missing, not deleted */
	r = R("4-d");
	ck_assert_int_eq(revtree_find(a, &r, &info), 0);
	ck_assert(info.missing && !info.has_body && !info.deleted);
	assert_winner(a, "3-x", false);
	revtree_free(a);
	revtree_free(b);
}
END_TEST

/* A graft contradicting a known parent, or with gaps, changes nothing. */
START_TEST(test_graft_rejects)
{
	struct revtree *t = tree_new();
	struct enc before, after;
	struct rev none[1];

	ck_assert_int_eq(graft(t, false, NULL, "3-c", "2-b", "1-a", NULL), 0);
	before = encode(t);
	ck_assert_int_eq(graft(t, false, NULL, "4-d", "3-c", "2-q", "1-a",
			       NULL), BARREL_E_CONFLICT);
	ck_assert_int_eq(graft(t, false, NULL, "4-d", "2-b", NULL),
			 BARREL_E_INVALID);
	ck_assert_int_eq(revtree_graft(t, none, 0, false, 0, NULL),
			 BARREL_E_INVALID);
	after = encode(t);
	ck_assert(enc_eq(before, after));
	free(before.buf);
	free(after.buf);
	revtree_free(t);
}
END_TEST

/* ---- property: any order of the same grafts and edits converges ---- */

#define PROP_MAX 40

struct ref_tree {
	struct rev rev[PROP_MAX];
	int parent[PROP_MAX];
	bool deleted[PROP_MAX];
	bool has_child[PROP_MAX];
	int n;
};

static void random_rev(struct tu_rng *g, uint64_t gen, struct rev *r)
{
	static const char alnum[] =
		"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

	memset(r, 0, sizeof(*r));
	r->gen = gen;
	if (tu_rng_pct(g, 70)) {
		r->bin = true;
		r->len = 16;
		for (int i = 0; i < 16; i++)
			r->hash[i] = (uint8_t)tu_rng_next(g);
		return;
	}
	r->len = (uint8_t)tu_rng_range(g, 1, 3);
	for (int i = 0; i < r->len; i++)
		r->hash[i] = (uint8_t)alnum[tu_rng_below(g, 62)];
	if (!rev_valid(r))
		random_rev(g, gen, r);
}

static bool ref_has(const struct ref_tree *ref, const struct rev *r)
{
	for (int i = 0; i < ref->n; i++)
		if (rev_eq(&ref->rev[i], r))
			return true;
	return false;
}

static void ref_build(struct tu_rng *g, struct ref_tree *ref)
{
	int n = (int)tu_rng_range(g, 1, PROP_MAX);

	memset(ref, 0, sizeof(*ref));
	for (int i = 0; i < n; i++) {
		int p = i ? (int)tu_rng_below(g, (uint64_t)i) : -1;

		ref->n = i;   /* ids so far, for ref_has() */
		do
			random_rev(g, p < 0 ? 1 : ref->rev[p].gen + 1,
				   &ref->rev[i]);
		while (ref_has(ref, &ref->rev[i]));
		ref->parent[i] = p;
		ref->deleted[i] = tu_rng_pct(g, 25);
		if (p >= 0)
			ref->has_child[p] = true;
	}
	ref->n = n;
}

/* An operation: graft the path from node up `len` steps, or an edit. */
struct op {
	int node;
	int len;       /* path length; 0: an add_edit of node */
};

static size_t path_of(const struct ref_tree *ref, int node, int len,
		      struct rev *out)
{
	size_t n = 0;

	for (int x = node; x >= 0 && (len < 0 || (int)n < len);
	     x = ref->parent[x])
		out[n++] = ref->rev[x];
	return n;
}

static void apply(struct revtree *t, const struct ref_tree *ref,
		  const struct op *op)
{
	struct rev path[PROP_MAX];
	int p = ref->parent[op->node];
	size_t n;
	int err;

	if (op->len == 0) {
		err = revtree_add_edit(t, p < 0 ? NULL : &ref->rev[p],
				       &ref->rev[op->node],
				       ref->deleted[op->node], op->node);
		if (err != BARREL_E_CONFLICT && err != BARREL_E_INVALID) {
			ck_assert_int_eq(err, 0);
			return;
		}
		n = path_of(ref, op->node, 2, path);
	} else {
		n = path_of(ref, op->node, op->len, path);
	}
	err = revtree_graft(t, path, n, ref->deleted[op->node], op->node,
			    NULL);
	ck_assert_int_eq(err, 0);
}

static void shuffle(struct tu_rng *g, struct op *ops, int n)
{
	for (int i = n - 1; i > 0; i--) {
		int j = (int)tu_rng_below(g, (uint64_t)i + 1);
		struct op tmp = ops[i];

		ops[i] = ops[j];
		ops[j] = tmp;
	}
}

/* The winner by the rule, computed on the reference directly. */
static int ref_winner(const struct ref_tree *ref)
{
	int best = -1;

	for (int i = 0; i < ref->n; i++) {
		if (ref->has_child[i])
			continue;
		if (best < 0 || (ref->deleted[best] && !ref->deleted[i]) ||
		    (ref->deleted[best] == ref->deleted[i] &&
		     rev_cmp(&ref->rev[i], &ref->rev[best]) > 0))
			best = i;
	}
	return best;
}

static int make_ops(struct tu_rng *g, const struct ref_tree *ref,
		    struct op *ops)
{
	int n = 0;

	/* every leaf's full path, so the union is the whole reference */
	for (int i = 0; i < ref->n; i++)
		if (!ref->has_child[i])
			ops[n++] = (struct op){ i, PROP_MAX };
	for (int k = (int)tu_rng_below(g, 20); k > 0; k--)
		ops[n++] = (struct op){ (int)tu_rng_below(g, ref->n),
					(int)tu_rng_below(g, 5) };
	return n;
}

/* 500 random histories: every order of the same operations converges. */
START_TEST(test_property_convergence)
{
	struct tu_rng g;

	tu_rng_init(&g, 0x7e57f00d);
	for (int iter = 0; iter < 500; iter++) {
		struct ref_tree ref;
		struct op ops[PROP_MAX + 20];
		struct enc first = { 0 };
		int nops, w;

		ref_build(&g, &ref);
		nops = make_ops(&g, &ref, ops);
		w = ref_winner(&ref);
		for (int round = 0; round < 4; round++) {
			struct revtree *t = tree_new();
			struct rev win;
			struct enc e;

			shuffle(&g, ops, nops);
			for (int i = 0; i < nops; i++)
				apply(t, &ref, &ops[i]);
			ck_assert_uint_eq(revtree_count(t), (size_t)ref.n);
			ck_assert_int_eq(revtree_winner(t, &win, NULL), 0);
			ck_assert(rev_eq(&win, &ref.rev[w]));
			e = encode(t);
			if (round == 0)
				first = e;
			else
				ck_assert_msg(enc_eq(first, e),
					      "iter %d round %d", iter, round);
			if (round)
				free(e.buf);
			revtree_free(t);
		}
		free(first.buf);
	}
}
END_TEST

/* ---- stemming ---- */

/* limit 1 keeps leaves, 2 a parent too, 1000 all; kept nodes stay linked. */
START_TEST(test_stem)
{
	struct revtree *t = tree_new(), *u;
	struct rev path[8], r;
	size_t removed, n;

	ck_assert_int_eq(graft(t, false, NULL, "5-a", "4-a", "3-x", "2-x",
			       "1-x", NULL), 0);
	ck_assert_int_eq(graft(t, false, NULL, "4-b", "3-x", NULL), 0);
	ck_assert_int_eq(revtree_stem(t, 0, NULL, NULL, NULL), BARREL_E_INVALID);
	ck_assert_int_eq(revtree_stem(t, 1000, NULL, NULL, &removed), 0);
	ck_assert_uint_eq(removed, 0);
	ck_assert_uint_eq(revtree_count(t), 6);
	/* 3-x is within 2 of 4-b, so 4-a stays its child */
	ck_assert_int_eq(revtree_stem(t, 2, NULL, NULL, &removed), 0);
	ck_assert_uint_eq(removed, 2);
	r = R("5-a");
	ck_assert_int_eq(revtree_path(t, &r, path, 8, &n), 0);
	ck_assert_uint_eq(n, 3);
	assert_rev(&path[2], "3-x");
	ck_assert_int_eq(revtree_stem(t, 1, NULL, NULL, &removed), 0);
	ck_assert_uint_eq(removed, 2);
	ck_assert_uint_eq(revtree_count(t), 2);
	ck_assert_int_eq(revtree_path(t, &r, path, 8, &n), 0);
	ck_assert_uint_eq(n, 1);
	assert_winner(t, "5-a", false);
	revtree_free(t);

	/* a cut branch meets its history again when a full path arrives */
	t = tree_new();
	u = tree_new();
	ck_assert_int_eq(graft(t, false, NULL, "4-a", "3-a", "2-a", "1-r",
			       NULL), 0);
	ck_assert_int_eq(graft(t, false, NULL, "2-b", "1-r", NULL), 0);
	ck_assert_int_eq(revtree_stem(t, 2, NULL, NULL, &removed), 0);
	ck_assert_uint_eq(removed, 1);   /* 2-a */
	r = R("4-a");
	ck_assert_int_eq(revtree_path(t, &r, path, 8, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(graft(t, false, NULL, "4-a", "3-a", "2-a", "1-r",
			       NULL), 0);
	ck_assert_int_eq(revtree_path(t, &r, path, 8, &n), 0);
	ck_assert_uint_eq(n, 4);
	ck_assert_int_eq(graft(u, false, NULL, "4-a", "3-a", "2-a", "1-r",
			       NULL), 0);
	ck_assert_int_eq(graft(u, false, NULL, "2-b", "1-r", NULL), 0);
	ck_assert_int_eq(revtree_set_body(u, &(struct rev){ 0 }, false, 0),
			 BARREL_E_NOTFOUND);
	r = R("2-a");
	ck_assert_int_eq(revtree_set_body(t, &r, false, 0), 0);
	ck_assert_int_eq(revtree_set_body(u, &r, false, 0), 0);
	ck_assert(same_tree(t, u));
	revtree_free(t);
	revtree_free(u);
}
END_TEST

/* ---- revs_diff ---- */

/* Missing revs, and leaves of lower generation as possible_ancestors. */
/* stem's callback names each dropped body first; a refusal changes nothing;
 * revtree_each visits every revision parents first. */
static int count_cb(void *arg, const struct rev *rev, uint64_t body_ref)
{
	(void)rev;
	(void)body_ref;
	return ++*(int *)arg > 100 ? -EPERM : 0;
}

/* Purge takes leaves and the ancestors only they needed; a failing
 * callback leaves the tree as it was; non-leaves are ignored. */
START_TEST(test_purge)
{
	struct revtree *t = tree_new();
	struct rev d3 = R("3-d"), b2 = R("2-b"), a1 = R("1-a"), c2 = R("2-c");
	struct revtree_info ri;
	bool gone[2];
	int calls = 0;

	ck_assert_int_eq(edit(t, NULL, "1-a", false), 0);
	ck_assert_int_eq(edit(t, "1-a", "2-b", false), 0);
	ck_assert_int_eq(graft(t, false, NULL, "3-d", "2-c", "1-a", NULL), 0);
	ck_assert_uint_eq(revtree_count(t), 4);
	calls = 100;                  /* count_cb fails on its next call */
	ck_assert_int_eq(revtree_purge(t, &d3, 1, count_cb, &calls, NULL),
			 -EPERM);
	ck_assert_uint_eq(revtree_count(t), 4);
	calls = 0;
	ck_assert_int_eq(revtree_purge(t, (struct rev[]){ d3, a1 }, 2,
				       count_cb, &calls, gone), 0);
	ck_assert(gone[0] && !gone[1]);
	ck_assert_int_eq(calls, 1);   /* 3-d had a body; 2-c was missing */
	ck_assert_uint_eq(revtree_count(t), 2);
	ck_assert_int_eq(revtree_find(t, &c2, &ri), BARREL_E_NOTFOUND);
	assert_winner(t, "2-b", false);
	ck_assert_int_eq(revtree_purge(t, &b2, 1, NULL, NULL, gone), 0);
	ck_assert(gone[0]);
	ck_assert_uint_eq(revtree_count(t), 0);
	revtree_free(t);
}
END_TEST

static int each_cb(void *arg, const struct revtree_info *ri)
{
	struct rev *last = arg;

	ck_assert_int_lt(rev_cmp(last, &ri->rev), 0);
	*last = ri->rev;
	return 0;
}

START_TEST(test_stem_callback_and_each)
{
	struct revtree *t = tree_new();
	struct rev r = { 0 };
	int calls = 0;
	size_t removed;

	ck_assert_int_eq(revtree_add_edit(t, NULL, &(struct rev){ 0 }, false,
					  0), BARREL_E_INVALID);
	r = R("1-a");
	ck_assert_int_eq(revtree_add_edit(t, NULL, &r, false, 1), 0);
	for (int g = 2; g <= 5; g++) {
		struct rev p = r;
		char buf[16];

		snprintf(buf, sizeof(buf), "%d-a", g);
		r = R(buf);
		ck_assert_int_eq(revtree_add_edit(t, &p, &r, false,
						  (uint64_t)g), 0);
	}
	calls = 100;   /* the first call refuses */
	ck_assert_int_eq(revtree_stem(t, 2, count_cb, &calls, &removed),
			 -EPERM);
	ck_assert_uint_eq(revtree_count(t), 5);
	calls = 0;
	ck_assert_int_eq(revtree_stem(t, 2, count_cb, &calls, &removed), 0);
	ck_assert_int_eq(calls, 3);
	ck_assert_uint_eq(removed, 3);
	r = (struct rev){ 0 };
	ck_assert_int_eq(revtree_each(t, each_cb, &r), 0);
	assert_rev(&r, "5-a");
	revtree_free(t);
}
END_TEST

START_TEST(test_revs_diff)
{
	struct revtree *t = tree_new();
	struct rev q[5], *anc;
	bool missing[5];
	size_t nanc;

	ck_assert_int_eq(graft(t, false, NULL, "3-c", "2-b", "1-a", NULL), 0);
	ck_assert_int_eq(graft(t, true, NULL, "3-d", "2-b", NULL), 0);
	ck_assert_int_eq(graft(t, false, NULL, "4-f", "3-e", NULL), 0);
	q[0] = R("3-c");
	q[1] = R("4-x");
	q[2] = R("2-b");
	q[3] = R("3-e");   /* a missing ancestor counts as present */
	q[4] = R("1-zz");
	ck_assert_int_eq(revtree_revs_diff(t, q, 5, missing, &anc, &nanc), 0);
	ck_assert(!missing[0] && missing[1] && !missing[2] && !missing[3] &&
		  missing[4]);
	ck_assert_uint_eq(nanc, 2);
	assert_rev(&anc[0], "3-c");
	assert_rev(&anc[1], "3-d");
	free(anc);
	/* only missing revs count: 4-f is present, 1-zz is below all */
	q[3] = R("4-f");
	ck_assert_int_eq(revtree_revs_diff(t, q + 3, 2, missing, &anc, &nanc),
			 0);
	ck_assert(!missing[0] && missing[1]);
	ck_assert_uint_eq(nanc, 0);
	ck_assert_ptr_null(anc);
	q[0] = R("5-y");
	ck_assert_int_eq(revtree_revs_diff(t, q, 1, missing, &anc, &nanc), 0);
	ck_assert_uint_eq(nanc, 3);
	assert_rev(&anc[0], "4-f");
	free(anc);
	revtree_free(t);
}
END_TEST

/* ---- bodies ---- */

struct pruned {
	char rev[16][REV_STR_SIZE];
	int n;
	int fail_at;   /* return an error on this call (1-based), 0 never */
};

static int on_prune(void *arg, const struct rev *rev, uint64_t body_ref)
{
	struct pruned *p = arg;

	ck_assert_uint_eq(body_ref, rev->gen);
	if (p->fail_at && p->n + 1 == p->fail_at)
		return -EIO;
	ck_assert_int_eq(rev_format(rev, p->rev[p->n++], REV_STR_SIZE), 0);
	return 0;
}

static bool has_body(const struct revtree *t, const char *s)
{
	struct revtree_info info;
	struct rev r = R(s);

	ck_assert_int_eq(revtree_find(t, &r, &info), 0);
	return info.has_body;
}

/* Pruning keeps leaves, the last N of each path and branch points. */
START_TEST(test_prune_bodies)
{
	static const char *chain[] = { "1-a", "2-a", "3-a", "4-a", "5-a",
				       "6-a", "7-a", "8-a" };
	static const char *kept[] = { "8-a", "7-a", "5-a", "7-b", "6-b",
				      "3-a", "4-c" };
	static const char *gone[] = { "1-a", "2-a", "4-a", "6-a" };
	struct revtree *t = tree_new();
	struct pruned p = { .fail_at = 2 };
	size_t n;

	ck_assert_int_eq(edit(t, NULL, chain[0], false), 0);
	for (int i = 1; i < 8; i++)
		ck_assert_int_eq(edit(t, chain[i - 1], chain[i], false), 0);
	ck_assert_int_eq(graft(t, false, NULL, "7-b", "6-b", "5-a", NULL), 0);
	ck_assert_int_eq(graft(t, true, NULL, "4-c", "3-a", NULL), 0);
	ck_assert_int_eq(revtree_set_body(t, &(struct rev){ 0 }, true, 1),
			 BARREL_E_NOTFOUND);
	{
		struct rev r = R("7-b"), q = R("6-b");

		ck_assert_int_eq(revtree_set_body(t, &r, true, 7), 0);
		ck_assert_int_eq(revtree_set_body(t, &q, true, 6), 0);
		r = R("4-c");
		ck_assert_int_eq(revtree_set_body(t, &r, true, 4), 0);
	}
	/* a failing callback stops and keeps that body */
	ck_assert_int_eq(revtree_prune_bodies(t, 2, on_prune, &p, &n), -EIO);
	ck_assert_uint_eq(n, 1);
	p.fail_at = 0;
	ck_assert_int_eq(revtree_prune_bodies(t, 2, on_prune, &p, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_int_eq(p.n, 4);
	for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
		ck_assert_msg(has_body(t, kept[i]), "lost %s", kept[i]);
	for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
		ck_assert_msg(!has_body(t, gone[i]), "kept %s", gone[i]);
	ck_assert_int_eq(revtree_prune_bodies(t, 2, on_prune, &p, &n), 0);
	ck_assert_uint_eq(n, 0);
	/* N = 0 still keeps every leaf and branch point */
	ck_assert_int_eq(revtree_prune_bodies(t, 0, on_prune, &p, &n), 0);
	ck_assert_uint_eq(n, 2);   /* 7-a, 6-b */
	ck_assert(has_body(t, "8-a") && has_body(t, "5-a") &&
		  has_body(t, "3-a") && has_body(t, "4-c"));
	revtree_free(t);
}
END_TEST

/* ---- encoding ---- */

static struct revtree *random_tree(struct tu_rng *g)
{
	struct revtree *t = tree_new();
	struct ref_tree ref;
	struct op ops[PROP_MAX + 20];
	int n;

	ref_build(g, &ref);
	n = make_ops(g, &ref, ops);
	for (int i = 0; i < n; i++)
		apply(t, &ref, &ops[i]);
	if (tu_rng_pct(g, 30))
		ck_assert_int_eq(revtree_stem(t, (uint32_t)tu_rng_range(g, 1, 4),
					      NULL, NULL, NULL), 0);
	return t;
}

/* decode(encode(t)) is t: same bytes, same answers. */
START_TEST(test_encode_roundtrip)
{
	struct tu_rng g;

	tu_rng_init(&g, 42);
	for (int iter = 0; iter < 200; iter++) {
		struct revtree *t = iter ? random_tree(&g) : tree_new(), *u;
		struct enc a = encode(t), b;

		ck_assert_int_eq(revtree_decode(a.buf, a.len, &u), 0);
		b = encode(u);
		ck_assert(enc_eq(a, b));
		ck_assert_uint_eq(revtree_count(u), revtree_count(t));
		if (revtree_count(t)) {
			struct rev wt, wu;

			ck_assert_int_eq(revtree_winner(t, &wt, NULL), 0);
			ck_assert_int_eq(revtree_winner(u, &wu, NULL), 0);
			ck_assert(rev_eq(&wt, &wu));
		}
		free(a.buf);
		free(b.buf);
		revtree_free(t);
		revtree_free(u);
	}
}
END_TEST

/* The documented layout, byte for byte, for a two-revision tree. */
START_TEST(test_encode_layout)
{
	static const uint8_t want[] = {
		1, 2, 0, 0, 0,                          /* version, count */
		0x12, 1, 1, 0, 0, 0, 0, 0, 0, 0,        /* root|body, gen 1 */
		1, 0, 0, 0, 0, 0, 0, 0, 'a',            /* body_ref 1, "a" */
		0x0b, 16, 0, 0, 0, 0,                   /* del|body|bin, p 0 */
		2, 0, 0, 0, 0, 0, 0, 0,                 /* body_ref 2 */
		0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
	};
	struct revtree *t = tree_new();
	struct enc e;

	ck_assert_int_eq(edit(t, NULL, "1-a", false), 0);
	ck_assert_int_eq(edit(t, "1-a", "2-ff000000000000000000000000000001",
			      true), 0);
	e = encode(t);
	ck_assert_uint_eq(e.len, sizeof(want));
	ck_assert(memcmp(e.buf, want, sizeof(want)) == 0);
	free(e.buf);
	revtree_free(t);
}
END_TEST

/* Every strict prefix of a valid encoding is corrupt, never a crash. */
START_TEST(test_decode_truncations)
{
	struct tu_rng g;

	barrel_log_set_sink(quiet, NULL);
	tu_rng_init(&g, 7);
	for (int iter = 0; iter < 30; iter++) {
		struct revtree *t = random_tree(&g), *u;
		struct enc e = encode(t);

		for (size_t len = 0; len < e.len; len++) {
			uint8_t *copy = malloc(len ? len : 1);

			memcpy(copy, e.buf, len);
			ck_assert_msg(revtree_decode(copy, len, &u) ==
				      BARREL_E_CORRUPT, "prefix %zu", len);
			free(copy);
		}
		free(e.buf);
		revtree_free(t);
	}
	barrel_log_set_sink(NULL, NULL);
}
END_TEST

/* Decoding (re-encoded iff accepted) of one result, for fuzz tests. */
static int decode_check(const uint8_t *buf, size_t len)
{
	struct revtree *u;
	int err = revtree_decode(buf, len, &u);

	if (err == 0) {
		struct enc e = encode(u);

		/* canonical: what is accepted re-encodes to itself */
		ck_assert(e.len == len && memcmp(e.buf, buf, len) == 0);
		free(e.buf);
		revtree_free(u);
	} else if (len && buf[0] != 1) {
		ck_assert_int_eq(err, BARREL_E_VERSION);
	} else {
		ck_assert_int_eq(err, BARREL_E_CORRUPT);
	}
	return err;
}

/* Random garbage and bit flips: corrupt (or version), never a crash. */
START_TEST(test_decode_garbage)
{
	struct tu_rng g;
	int corrupt = 0;

	barrel_log_set_sink(quiet, NULL);
	tu_rng_init(&g, 99);
	for (int iter = 0; iter < 20000; iter++) {
		size_t len = tu_rng_below(&g, 120);
		uint8_t *buf = malloc(len ? len : 1);

		tu_pattern(tu_rng_next(&g), 0, buf, len);
		if (len && tu_rng_pct(&g, 90))
			buf[0] = 1;
		if (len >= 5 && tu_rng_pct(&g, 50))
			buf[1] = (uint8_t)tu_rng_below(&g, 4), buf[2] = 0,
			buf[3] = 0, buf[4] = 0;
		corrupt += decode_check(buf, len) == BARREL_E_CORRUPT;
		free(buf);
	}
	ck_assert_int_gt(corrupt, 15000);
	for (int iter = 0; iter < 100; iter++) {
		struct revtree *t = random_tree(&g);
		struct enc e = encode(t);

		for (size_t i = 0; i < e.len; i++) {
			uint8_t bit = (uint8_t)(1u << tu_rng_below(&g, 8));

			e.buf[i] ^= bit;
			decode_check(e.buf, e.len);
			e.buf[i] ^= bit;
		}
		free(e.buf);
		revtree_free(t);
	}
	barrel_log_set_sink(NULL, NULL);
}
END_TEST

/* Each structural rule of the format is enforced. */
START_TEST(test_decode_rules)
{
	/* 1-a (root) and 2-b under it: a valid base to break */
	uint8_t ok[] = {
		1, 2, 0, 0, 0,
		0x12, 1, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 'a',
		0x02, 1, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 'b',
	};
	struct { size_t off; uint8_t val; int err; } cases[] = {
		{ 0, 2, BARREL_E_VERSION },       /* unknown version */
		{ 1, 3, BARREL_E_CORRUPT },       /* count too big */
		{ 1, 1, BARREL_E_CORRUPT },       /* trailing bytes */
		{ 5, 0x32, BARREL_E_CORRUPT },    /* unknown flag bit */
		{ 5, 0x1a, BARREL_E_CORRUPT },    /* bin with a 1-byte hash */
		{ 7, 0, BARREL_E_CORRUPT },       /* root generation 0 */
		{ 23, '!', BARREL_E_CORRUPT },    /* bad hash character */
		{ 24, 0x06, BARREL_E_CORRUPT },   /* missing leaf */
		{ 24, 0x07, BARREL_E_CORRUPT },   /* missing and deleted */
		{ 25, 0, BARREL_E_CORRUPT },      /* empty hash */
		{ 26, 1, BARREL_E_CORRUPT },      /* parent not earlier */
	};
	/* the root 1-a twice, then out of order (1-b before 1-a) */
	uint8_t twice[] = {
		1, 2, 0, 0, 0,
		0x10, 1, 1, 0, 0, 0, 0, 0, 0, 0, 'a',
		0x10, 1, 1, 0, 0, 0, 0, 0, 0, 0, 'a',
	};
	struct revtree *t;

	barrel_log_set_sink(quiet, NULL);
	ck_assert_int_eq(revtree_decode(ok, sizeof(ok), &t), 0);
	revtree_free(t);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t old = ok[cases[i].off];

		ok[cases[i].off] = cases[i].val;
		ck_assert_msg(revtree_decode(ok, sizeof(ok), &t) ==
			      cases[i].err, "case %zu", i);
		ok[cases[i].off] = old;
	}
	ck_assert_int_eq(revtree_decode(twice, sizeof(twice), &t),
			 BARREL_E_CORRUPT);
	twice[15] = 'b';
	ck_assert_int_eq(revtree_decode(twice, sizeof(twice), &t),
			 BARREL_E_CORRUPT);
	twice[15] = 'a';
	twice[26] = 'b';
	ck_assert_int_eq(revtree_decode(twice, sizeof(twice), &t), 0);
	ck_assert_uint_eq(revtree_count(t), 2);
	revtree_free(t);
	barrel_log_set_sink(NULL, NULL);
}
END_TEST

static Suite *revtree_suite(void)
{
	Suite *s = suite_create("revtree");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_rev_parse_format);
	tcase_add_test(tc, test_rev_parse_malformed);
	tcase_add_test(tc, test_winner_live_beats_deleted);
	tcase_add_test(tc, test_winner_hash_bytes);
	tcase_add_test(tc, test_couchdb_conflict_example);
	tcase_add_test(tc, test_conflict_lists);
	tcase_add_test(tc, test_add_edit_rules);
	tcase_add_test(tc, test_graft_order_and_idempotence);
	tcase_add_test(tc, test_graft_rejects);
	tcase_add_test(tc, test_property_convergence);
	tcase_add_test(tc, test_stem);
	tcase_add_test(tc, test_purge);
	tcase_add_test(tc, test_stem_callback_and_each);
	tcase_add_test(tc, test_revs_diff);
	tcase_add_test(tc, test_prune_bodies);
	tcase_add_test(tc, test_encode_roundtrip);
	tcase_add_test(tc, test_encode_layout);
	tcase_add_test(tc, test_decode_truncations);
	tcase_add_test(tc, test_decode_garbage);
	tcase_add_test(tc, test_decode_rules);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(revtree_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
