#include "config.h"

/*
 * Corruption is found, reported where it is, and never returned as data:
 * a database with several sealed segments has bits flipped inside records
 * (through bio_fault_flip on the in-memory disk, or with pwrite on real
 * files); after reopening, every get returns the exact original value or
 * BARREL_E_CORRUPT, and bdb_check reports each damaged record at its
 * segment and offset -- and nothing on an undamaged database.
 */

#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/db.h"
#include "engine/error.h"
#include "engine/io.h"
#include "engine/segment.h"
#include "tests/engine/testenv.h"

enum { NKEYS = 600, MAXRECS = 50000, MAXFLIPS = 32 };


TU_BASE_FIXTURE("test_corrupt")

/* Where the database lives and how to damage it. */
struct ctx {
	bool real;                 /* real files (pwrite) or the fault io */
	struct bio *io;            /* the fault io, when !real */
	char datadir[PATH_MAX];
	char segdir[PATH_MAX];     /* the directory holding NNNNNNNN.seg */
	struct benv_opts opts;
};

static void ctx_init(struct ctx *c, bool real, uint64_t seed)
{
	memset(c, 0, sizeof(*c));
	c->real = real;
	benv_opts_init(&c->opts);
	c->opts.gc_thread = false;   /* records must stay where they are */
	c->opts.seg_min = 64u << 10;
	c->opts.seg_max = 256u << 10;
	c->opts.checkpoint_bytes = 64u << 10;
	if (real) {
		char dir[PATH_MAX];

		tu_path(dir, sizeof(dir), g_base, "tXXXXXX");
		ck_assert_ptr_nonnull(mkdtemp(dir));
		tu_path(c->datadir, sizeof(c->datadir), dir, "data");
	} else {
		c->io = bio_fault_new(seed);
		ck_assert_ptr_nonnull(c->io);
		c->opts.io = c->io;
		snprintf(c->datadir, sizeof(c->datadir), "/bcorrupt");
	}
}

static void ctx_release(struct ctx *c)
{
	if (c->io)
		c->io->ops->free(c->io);
}

static struct benv *ctx_open(struct ctx *c, struct bdb **db, uint32_t *t)
{
	struct benv *env = NULL;

	OK(benv_open(c->datadir, &c->opts, &env));
	OK(benv_db(env, "db", false, db));
	OK(bdb_table(*db, "docs", t));
	return env;
}

static int key_of(char *buf, size_t size, int k)
{
	return snprintf(buf, size, "ck%06d|", k);
}

static size_t val_len(int k)
{
	return 2000 + (size_t)((k * 7919) % 3000);
}

/* 600 keys of 2-5 KB in commits of 10: many sealed segments. */
static void write_data(struct ctx *c)
{
	struct benv *env = NULL;
	struct bdb *db;
	struct btxn *txn;
	uint32_t t;
	char key[32];
	static char val[8192];

	OK(benv_open(c->datadir, &c->opts, &env));
	OK(benv_db(env, "db", true, &db));
	OK(bdb_begin(db, &txn));
	OK(btxn_table(txn, "docs", BDB_TABLE_SEQ, &t));
	OK(btxn_commit(txn));
	for (int k = 0; k < NKEYS; k += 10) {
		OK(bdb_begin(db, &txn));
		for (int j = k; j < k + 10; j++) {
			int kl = key_of(key, sizeof(key), j);

			tu_value(val, val_len(j), (uint64_t)j, 1);
			OK(btxn_put(txn, t, key, (size_t)kl, val, val_len(j),
				    NULL));
		}
		OK(btxn_commit(txn));
	}
	benv_close(env);
}

/* ---- what bdb_check sees ---- */

struct rec {
	uint32_t seg;
	uint64_t off;
	uint8_t type;
	uint32_t len;
	int key;            /* the key a REC_PUT carries, or -1 */
	bool bad;
	char error[96];
};

struct walk {
	struct rec *recs;
	int n;
	bool overflow;
};

/* The key named in a payload ("ck%06d|"), or -1. */
static int find_key(const void *payload, uint32_t len)
{
	const char *p = payload, *end = p + len;

	while (p && p + 9 <= end) {
		p = memmem(p, (size_t)(end - p), "ck", 2);
		if (!p || p + 9 > end)
			break;
		if (p[8] == '|') {
			int k = 0, i;

			for (i = 2; i < 8 && p[i] >= '0' && p[i] <= '9'; i++)
				k = k * 10 + (p[i] - '0');
			if (i == 8 && k < NKEYS)
				return k;
		}
		p++;
	}
	return -1;
}

static int walk_cb(void *arg, const struct bdb_recinfo *ri)
{
	struct walk *w = arg;
	struct rec *r;

	if (w->n >= MAXRECS) {
		w->overflow = true;
		return 0;
	}
	r = &w->recs[w->n++];
	memset(r, 0, sizeof(*r));
	r->seg = ri->seg;
	r->off = ri->off;
	r->type = ri->type;
	r->len = ri->len;
	r->bad = ri->error != NULL;
	r->key = -1;
	if (ri->error)
		snprintf(r->error, sizeof(r->error), "%s", ri->error);
	else if (ri->type == REC_PUT && ri->payload)
		r->key = find_key(ri->payload, ri->len);
	return 0;
}

static void run_check(struct bdb *db, struct walk *w, uint64_t *corrupt)
{
	w->n = 0;
	w->overflow = false;
	*corrupt = 12345678;
	OK(bdb_check(db, walk_cb, w, corrupt));
	ck_assert(!w->overflow);
}

struct segs {
	uint32_t sealed[4096];
	unsigned nsealed;
	uint32_t open_id;
};

static int seg_cb(void *arg, const struct bdb_seginfo *si)
{
	struct segs *s = arg;

	if (si->open)
		s->open_id = si->id;
	else if (s->nsealed < 4096)
		s->sealed[s->nsealed++] = si->id;
	return 0;
}

static bool is_sealed(const struct segs *s, uint32_t id)
{
	for (unsigned i = 0; i < s->nsealed; i++)
		if (s->sealed[i] == id)
			return true;
	return false;
}

/* ---- finding and damaging the files ---- */

static bool seg_name(const char *name, uint32_t *id)
{
	size_t n = strlen(name);

	if (n != 12 || strcmp(name + 8, ".seg") != 0)
		return false;
	*id = 0;
	for (int i = 0; i < 8; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		*id = *id * 10 + (uint32_t)(name[i] - '0');
	}
	return true;
}

static char g_found_dir[PATH_MAX];

static int find_real_cb(const char *path, const struct stat *sb, int type,
			struct FTW *ftw)
{
	uint32_t id;

	(void)sb;
	if (type == FTW_F && seg_name(path + ftw->base, &id)) {
		snprintf(g_found_dir, sizeof(g_found_dir), "%.*s",
			 ftw->base - 1, path);
		return 1;
	}
	return 0;
}

struct fault_find {
	struct bio *io;
	const char *datadir;
	bool has_seg;
};

static int fault_seg_cb(void *arg, const char *name)
{
	uint32_t id;

	if (seg_name(name, &id)) {
		*(bool *)arg = true;
		return 1;
	}
	return 0;
}

static int fault_dir_cb(void *arg, const char *name)
{
	struct fault_find *f = arg;
	char dir[PATH_MAX];
	bool has = false;

	tu_path(dir, sizeof(dir), f->datadir, name);
	if (f->io->ops->list(f->io, dir, fault_seg_cb, &has) == 0 && has) {
		snprintf(g_found_dir, sizeof(g_found_dir), "%s", dir);
		f->has_seg = true;
		return 1;
	}
	return 0;
}

static void find_segdir(struct ctx *c)
{
	g_found_dir[0] = '\0';
	if (c->real) {
		nftw(c->datadir, find_real_cb, 16, FTW_PHYS);
	} else {
		struct fault_find f = { c->io, c->datadir, false };
		bool top = false;

		c->io->ops->list(c->io, c->datadir, fault_dir_cb, &f);
		/* segments directly in DATADIR? */
		if (!f.has_seg &&
		    c->io->ops->list(c->io, c->datadir, fault_seg_cb, &top) == 0 &&
		    top)
			snprintf(g_found_dir, sizeof(g_found_dir), "%s",
				 c->datadir);
	}
	ck_assert_msg(g_found_dir[0], "no NNNNNNNN.seg file found under %s",
		      c->datadir);
	snprintf(c->segdir, sizeof(c->segdir), "%s", g_found_dir);
}

static void flip_bit(struct ctx *c, uint32_t seg, uint64_t off, int bit)
{
	char name[16], path[PATH_MAX];

	snprintf(name, sizeof(name), "%08u.seg", seg);
	tu_path(path, sizeof(path), c->segdir, name);
	if (c->real) {
		int fd = open(path, O_RDWR);
		uint8_t b;

		ck_assert_msg(fd >= 0, "open %s", path);
		ck_assert_int_eq(pread(fd, &b, 1, (off_t)off), 1);
		b ^= (uint8_t)(1u << bit);
		ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)off), 1);
		ck_assert_int_eq(fsync(fd), 0);
		close(fd);
	} else {
		int rc = bio_fault_flip(c->io, path, off, bit);

		ck_assert_msg(rc == 0, "bio_fault_flip %s @%llu: %d", path,
			      (unsigned long long)off, rc);
	}
}

/* ---- verifying reads ---- */

/*
 * Every key: exact value or BARREL_E_CORRUPT; CORRUPT only where allowed
 * (damaged[k], or anywhere with any_corrupt). Returns how many were CORRUPT.
 */
static int verify_gets(struct bdb *db, uint32_t t, const bool *damaged,
		       bool any_corrupt)
{
	static char want[8192];
	struct bsnap *snap;
	char key[32];
	int ncorrupt = 0;

	OK(bdb_snapshot(db, &snap));
	for (int k = 0; k < NKEYS; k++) {
		struct bval v;
		int kl = key_of(key, sizeof(key), k), rc;

		memset(&v, 0, sizeof(v));
		rc = bsnap_get(snap, t, key, (size_t)kl, &v);
		if (rc == BARREL_E_CORRUPT) {
			ck_assert_msg(any_corrupt || (damaged && damaged[k]),
				      "%s: CORRUPT, but none of its bytes were touched",
				      key);
			ncorrupt++;
			continue;
		}
		ck_assert_msg(rc == 0, "%s: get returned %d (%s): want the value or CORRUPT",
			      key, rc, barrel_strerror(rc));
		tu_value(want, val_len(k), (uint64_t)k, 1);
		ck_assert_msg(v.len == val_len(k) &&
			      memcmp(v.data, want, v.len) == 0,
			      "%s: WRONG DATA returned (len %zu, want %zu)", key,
			      v.len, val_len(k));
		bval_release(&v);
	}
	bsnap_release(snap);
	return ncorrupt;
}

/* A full scan never yields wrong data; it may stop with CORRUPT. */
static void verify_scan(struct bdb *db, uint32_t t, bool allow_corrupt)
{
	static char want[8192];
	struct bsnap *snap;
	struct bcursor *cur;
	struct bentry e;
	int rc, n = 0;

	OK(bdb_snapshot(db, &snap));
	rc = bsnap_scan(snap, t, NULL, 0, NULL, 0, 0, &cur);
	if (rc == BARREL_E_CORRUPT && allow_corrupt) {
		bsnap_release(snap);
		return;
	}
	OK(rc);
	while ((rc = bcursor_next(cur, &e)) == 1) {
		int k = -1;

		if (e.klen == 9)
			k = find_key(e.key, 9);
		ck_assert_msg(k >= 0, "scan: unknown key '%.*s'", (int)e.klen,
			      (const char *)e.key);
		tu_value(want, val_len(k), (uint64_t)k, 1);
		ck_assert_msg(e.vlen == val_len(k) &&
			      memcmp(e.val, want, e.vlen) == 0,
			      "scan: WRONG DATA for key %d", k);
		n++;
	}
	if (rc == BARREL_E_CORRUPT)
		ck_assert_msg(allow_corrupt, "scan: CORRUPT on an undamaged database");
	else
		ck_assert_msg(rc == 0, "scan: %d (%s)", rc, barrel_strerror(rc));
	if (!allow_corrupt)
		ck_assert_int_eq(n, NKEYS);
	bcursor_free(cur);
	bsnap_release(snap);
}

/* ---- the tests ---- */

static struct rec g_recs[MAXRECS];

/* Walk the undamaged database: all records valid, every key's PUT found. */
static void clean_walk(struct ctx *c, struct segs *segs, struct walk *w)
{
	struct benv *env;
	struct bdb *db;
	uint32_t t;
	uint64_t corrupt;
	bool key_seen[NKEYS] = { false };

	env = ctx_open(c, &db, &t);
	memset(segs, 0, sizeof(*segs));
	OK(bdb_segments(db, seg_cb, segs));
	ck_assert_msg(segs->nsealed >= 4, "only %u sealed segments",
		      segs->nsealed);
	w->recs = g_recs;
	run_check(db, w, &corrupt);
	ck_assert_msg(corrupt == 0, "bdb_check counts %llu corrupt records "
		      "on an undamaged database", (unsigned long long)corrupt);
	for (int i = 0; i < w->n; i++) {
		const struct rec *r = &w->recs[i];

		ck_assert_msg(!r->bad, "undamaged: seg=%u off=%llu reported: %s",
			      r->seg, (unsigned long long)r->off, r->error);
		ck_assert_msg(r->off >= SEG_HEADER_SIZE && r->off % REC_ALIGN == 0,
			      "record at seg=%u off=%llu: not a record offset",
			      r->seg, (unsigned long long)r->off);
		ck_assert_msg(r->type >= REC_PUT && r->type <= REC_CHECKPOINT,
			      "record at seg=%u off=%llu: type %u", r->seg,
			      (unsigned long long)r->off, r->type);
		if (i && w->recs[i - 1].seg == r->seg)
			ck_assert_msg(r->off >= w->recs[i - 1].off +
				      rec_size(w->recs[i - 1].len),
				      "records overlap at seg=%u off=%llu",
				      r->seg, (unsigned long long)r->off);
		if (r->key >= 0)
			key_seen[r->key] = true;
	}
	for (int k = 0; k < NKEYS; k++)
		ck_assert_msg(key_seen[k], "no REC_PUT carrying key %d", k);
	verify_gets(db, t, NULL, false);
	verify_scan(db, t, false);
	benv_close(env);
}

/* bdb_check is clean on an undamaged database (fault io and real files). */
START_TEST(test_check_clean)
{
	static struct walk w;
	struct segs segs;
	struct ctx c;

	ctx_init(&c, _i == 1, 11);
	write_data(&c);
	clean_walk(&c, &segs, &w);
	/* twice: checking changes nothing */
	clean_walk(&c, &segs, &w);
	ctx_release(&c);
}
END_TEST

struct flip {
	uint32_t seg;
	uint64_t rec_off;     /* the record damaged */
	uint64_t byte_off;    /* the byte flipped */
	int key;              /* the key of a REC_PUT, else -1 */
};

/*
 * Damage records of sealed segments, reopen, verify reads and check.
 * put_only: one REC_PUT per segment (its key's get may then be CORRUPT,
 * all others must be exact); otherwise any record type, nflips of them,
 * and any get may be CORRUPT (an index node may be damaged).
 */
static void flip_and_verify(bool real, uint64_t seed, bool put_only, int nflips)
{
	static struct walk w;
	static struct rec bad[MAXRECS];
	struct flip flips[MAXFLIPS];
	bool damaged[NKEYS] = { false }, used_seg[4096] = { false };
	struct segs segs;
	struct tu_rng rng;
	struct benv *env = NULL;
	struct bdb *db;
	struct ctx c;
	uint32_t t;
	uint64_t corrupt;
	int nf = 0, nbad = 0, rc;

	ctx_init(&c, real, seed);
	tu_rng_init(&rng, seed);
	write_data(&c);
	clean_walk(&c, &segs, &w);
	find_segdir(&c);

	/* choose records: in sealed segments, one per segment */
	for (int tries = 0; tries < 100000 && nf < nflips; tries++) {
		const struct rec *r = &w.recs[tu_rng_below(&rng, (uint64_t)w.n)];
		unsigned si;
		uint64_t span = REC_HEADER_SIZE + r->len;

		if (!is_sealed(&segs, r->seg))
			continue;
		if (put_only && (r->type != REC_PUT || r->key < 0))
			continue;
		for (si = 0; si < segs.nsealed && segs.sealed[si] != r->seg; si++)
			;
		if (si >= 4096 || used_seg[si])
			continue;
		used_seg[si] = true;
		flips[nf].seg = r->seg;
		flips[nf].rec_off = r->off;
		/* a third in the header, the rest in the payload */
		if (nf % 3 == 0 || r->len == 0)
			flips[nf].byte_off = r->off + tu_rng_below(&rng, REC_HEADER_SIZE);
		else
			flips[nf].byte_off = r->off + REC_HEADER_SIZE +
					     tu_rng_below(&rng, r->len);
		ck_assert_uint_lt(flips[nf].byte_off, r->off + span);
		flips[nf].key = r->type == REC_PUT ? r->key : -1;
		if (flips[nf].key >= 0)
			damaged[flips[nf].key] = true;
		nf++;
	}
	ck_assert_msg(nf >= 3, "found only %d records to damage", nf);
	for (int i = 0; i < nf; i++)
		flip_bit(&c, flips[i].seg, flips[i].byte_off,
			 (int)tu_rng_below(&rng, 8));

	rc = benv_open(c.datadir, &c.opts, &env);
	if (!put_only && rc == BARREL_E_CORRUPT) {
		/* refusing to open a damaged database is honest; done */
		ctx_release(&c);
		return;
	}
	ck_assert_msg(rc == 0, "open after damaging %d records: %d (%s)", nf,
		      rc, barrel_strerror(rc));
	rc = benv_db(env, "db", false, &db);
	if (!put_only && rc == BARREL_E_CORRUPT) {
		/* a damaged index root or catalog: refusing is honest too */
		benv_close(env);
		ctx_release(&c);
		return;
	}
	OK(rc);
	rc = bdb_table(db, "docs", &t);
	if (!put_only && rc == BARREL_E_CORRUPT)
		goto check;
	OK(rc);
	verify_gets(db, t, damaged, !put_only);
	verify_scan(db, t, true);

check:
	w.recs = g_recs;
	run_check(db, &w, &corrupt);
	for (int i = 0; i < w.n; i++)
		if (w.recs[i].bad)
			bad[nbad++] = w.recs[i];
	ck_assert_msg(corrupt >= (uint64_t)nf,
		      "bdb_check counts %llu corrupt records, %d were damaged",
		      (unsigned long long)corrupt, nf);
	ck_assert_msg(corrupt >= (uint64_t)nbad,
		      "bdb_check counts %llu corrupt but reported %d",
		      (unsigned long long)corrupt, nbad);
	for (int i = 0; i < nf; i++) {
		bool found = false;

		for (int j = 0; j < nbad && !found; j++)
			found = bad[j].seg == flips[i].seg &&
				bad[j].off == flips[i].rec_off;
		ck_assert_msg(found,
			      "damaged record seg=%u off=%llu (byte %llu flipped) "
			      "not reported by bdb_check (%d reports)",
			      flips[i].seg, (unsigned long long)flips[i].rec_off,
			      (unsigned long long)flips[i].byte_off, nbad);
	}
	/* no report in an undamaged segment, nor before the damage */
	for (int j = 0; j < nbad; j++) {
		bool ok = false;

		for (int i = 0; i < nf && !ok; i++)
			ok = bad[j].seg == flips[i].seg &&
			     bad[j].off >= flips[i].rec_off;
		ck_assert_msg(ok, "bdb_check reports seg=%u off=%llu (%s), "
			      "where nothing was damaged", bad[j].seg,
			      (unsigned long long)bad[j].off, bad[j].error);
	}
	benv_close(env);
	ctx_release(&c);
}

/* Damaged REC_PUTs: their keys read CORRUPT (or exact), others exact; check finds each. */
START_TEST(test_flip_put_records)
{
	for (uint64_t seed = 1; seed <= 4; seed++)
		flip_and_verify(false, seed, true, 6);
}
END_TEST

/* Random records of any type damaged: never wrong data; check finds each. */
START_TEST(test_flip_any_records)
{
	for (uint64_t seed = 100; seed <= 107; seed++)
		flip_and_verify(false, seed, false, 8);
}
END_TEST

/* The same on real files, damaged with pwrite, read through io_uring. */
START_TEST(test_flip_real_files)
{
	flip_and_verify(true, 7, true, 4);
	flip_and_verify(true, 8, false, 4);
}
END_TEST

static Suite *corrupt_suite(void)
{
	Suite *s = suite_create("corrupt");
	TCase *tc = tcase_create("corrupt");

	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_set_timeout(tc, 120);
	/* _i == 0: fault io, _i == 1: real files */
	tcase_add_loop_test(tc, test_check_clean, 0, 2);
	tcase_add_test(tc, test_flip_put_records);
	tcase_add_test(tc, test_flip_any_records);
	tcase_add_test(tc, test_flip_real_files);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(corrupt_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
