/*
 * barrelctl: look after a DATADIR through the engine's public API.
 *
 *   barrelctl [-d DATADIR] COMMAND [options]
 *
 * check, stat, dump and gc work on every database of the DATADIR, or on
 * the one named by -b. put, get, rm, log, diff, changes, export and
 * import work on the documents of one database (ctl_docs.c). bench
 * measures the engine against its peers (bench.c). Exit status: 0 all
 * well, 1 trouble found (corruption) or an error, 2 bad usage.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/db.h"
#include "engine/docdb.h"
#include "engine/error.h"
#include "tools/bench.h"
#include "tools/ctl.h"

#define PREVIEW_BYTES 64        /* of a record's payload, for dump --values */

static int cmd_check(struct ctl *, const struct cmd *, int, char **);
static int cmd_stat(struct ctl *, const struct cmd *, int, char **);
static int cmd_dump(struct ctl *, const struct cmd *, int, char **);
static int cmd_gc(struct ctl *, const struct cmd *, int, char **);
static int cmd_bench(struct ctl *, const struct cmd *, int, char **);

#define DOC_OPTIONS_HELP \
	"  -d, --datadir DIR    the DATADIR (default: $BARREL_DATADIR)\n" \
	"  -h, --help           show this help\n"
#define DB_OPTIONS_HELP \
	"  -b, --db DB          only database DB (default: every one)\n" \
	DOC_OPTIONS_HELP

static const struct cmd cmds[] = {
	{ "check", true, "[-b DB]",
	  "Verify the checksum and frame of every record and that every index\n"
	  "entry points at a valid record. Prints each corrupt record as\n"
	  "'DB: corrupt record: seg=S off=O: REASON'; exits 1 if any.\n\n"
	  DB_OPTIONS_HELP, cmd_check },
	{ "stat", true, "[-b DB]",
	  "Print each database's sequence, sizes, live ratio, entries and\n"
	  "tables, then one line per segment.\n\n" DB_OPTIONS_HELP, cmd_stat },
	{ "dump", true, "[-b DB] [--values]",
	  "Print every record: segment, offset, type, length, transaction.\n\n"
	  "  -v, --values         also show the first bytes of each payload\n"
	  DB_OPTIONS_HELP, cmd_dump },
	{ "gc", true, "[-b DB] [--ratio R]",
	  "Collect garbage now, until disk use is at most R times the live\n"
	  "bytes or no segment is worth collecting; print what was freed.\n\n"
	  "  -r, --ratio R        target disk/live ratio (default 1.0: every\n"
	  "                       sealed segment with garbage)\n"
	  DB_OPTIONS_HELP, cmd_gc },
	{ "put", true, "DB ID [FILE|-] [--rev REV] [--attach NAME=PATH[:TYPE]]... "
	  "[--detach NAME]...",
	  "Write the JSON object in FILE (default or '-': standard input) as a\n"
	  "new revision of document ID, creating database DB if missing, and\n"
	  "print the new revision. Its parent is REV, else the body's \"_rev\",\n"
	  "else the current winner. The body is stored byte for byte.\n"
	  "Attachments the command does not name are kept.\n\n"
	  "  -r, --rev REV        edit revision REV (a stale one is a conflict)\n"
	  "  -a, --attach NAME=PATH[:TYPE]\n"
	  "                       store file PATH as attachment NAME, of MIME\n"
	  "                       type TYPE (default application/octet-stream);\n"
	  "                       repeatable\n"
	  "      --detach NAME    drop attachment NAME; repeatable\n"
	  DOC_OPTIONS_HELP, cmd_put },
	{ "get", true,
	  "DB ID [--rev REV] [--meta] [--conflicts] [--attachment NAME]",
	  "Print the winning revision of document ID (or REV) of database DB:\n"
	  "its body exactly as stored, by default.\n\n"
	  "  -r, --rev REV        that revision instead of the winner\n"
	  "  -m, --meta           CouchDB's form, pretty: _id, _rev, _deleted,\n"
	  "                       the members, _attachments stubs\n"
	  "  -c, --conflicts      --meta with _conflicts and _deleted_conflicts\n"
	  "  -a, --attachment NAME\n"
	  "                       the bytes of attachment NAME instead\n"
	  DOC_OPTIONS_HELP, cmd_get },
	{ "rm", true, "DB ID [--rev REV]",
	  "Delete document ID of database DB: write a deletion on its winner\n"
	  "(or on REV, which resolves a conflict) and print its revision.\n"
	  "The history stays.\n\n"
	  "  -r, --rev REV        delete leaf revision REV\n"
	  DOC_OPTIONS_HELP, cmd_rm },
	{ "log", true, "DB ID [--oneline]",
	  "Show the revisions of document ID, newest first: the winner's\n"
	  "branch, then each other branch down to where it forks; each with\n"
	  "its parent, date and size, and marks (winner), (conflict),\n"
	  "(deleted), (body not kept).\n\n"
	  "      --oneline        one line per revision: REV (marks)\n"
	  DOC_OPTIONS_HELP, cmd_log },
	{ "diff", true, "DB ID REV1 REV2 [--pretty] [-U N]",
	  "Unified diff of two revisions' bodies, as stored (byte for byte),\n"
	  "labelled a/ID@REV1 and b/ID@REV2. Exits 0 whether they differ.\n\n"
	  "  -p, --pretty         diff the stable pretty forms instead, one\n"
	  "                       member per line (reserved members dropped)\n"
	  "  -U, --unified N      lines of context (default 3)\n"
	  DOC_OPTIONS_HELP, cmd_diff },
	{ "changes", true,
	  "DB [--since N] [--limit N] [--descending] [--style STYLE] "
	  "[--include-docs]",
	  "Print the changes feed of database DB, one JSON line per document\n"
	  "in sequence order, as CouchDB's continuous feed:\n"
	  "  {\"seq\":N,\"id\":ID,\"changes\":[{\"rev\":REV}],\"deleted\":true,\"doc\":{..}}\n"
	  "then {\"last_seq\":N}.\n\n"
	  "  -s, --since N        only changes after sequence N (default 0)\n"
	  "  -l, --limit N        at most N changes\n"
	  "      --descending     newest first\n"
	  "      --style STYLE    main_only (the winner; default) or all_docs\n"
	  "                       (every leaf revision)\n"
	  "      --include-docs   add each winner as \"doc\"\n"
	  DOC_OPTIONS_HELP, cmd_changes },
	{ "export", true, "DB [--format dir|alldocs] [--attachments] OUT",
	  "Write the live documents of database DB to OUT.\n"
	  "dir: OUT is a new or empty directory; each body goes to OUT/ID.json\n"
	  "byte for byte, each attachment to OUT/ID/NAME (IDs and NAMEs as file\n"
	  "names: see barrelctl(1)). alldocs: OUT is a file, or '-' for standard\n"
	  "output, of CouchDB _all_docs?include_docs=true JSON.\n\n"
	  "  -f, --format FORMAT  dir (default) or alldocs\n"
	  "      --attachments    alldocs: attachments inline (base64 \"data\")\n"
	  "                       instead of stubs\n"
	  DOC_OPTIONS_HELP, cmd_export },
	{ "import", true, "DB SRC",
	  "Write the documents of SRC into database DB (created if missing), as\n"
	  "new revisions. SRC is a directory as export --format dir writes it,\n"
	  "or a file ('-': standard input) of _all_docs JSON (rows[].doc, whose\n"
	  "_rev is kept) or _bulk_docs JSON (docs[]). A document that cannot be\n"
	  "imported is named with the reason; the others still are, and the\n"
	  "exit status is 1.\n\n"
	  DOC_OPTIONS_HELP, cmd_import },
	{ "bench", false,
	  "[--docs N] [--updates PCT] [--rounds N] [--quick] [--keep] "
	  "[--dir DIR]\n       [--stores LIST]",
	  "Run the same durable document workload against barrelfs, SQLite,\n"
	  "LMDB, RocksDB and a bare log, and compare them.\n\n"
	  "  -n, --docs N         documents (default 100000)\n"
	  "  -u, --updates PCT    update this percentage of them (default 20)\n"
	  "  -r, --rounds N       run every store N times, interleaved, and\n"
	  "                       report the median of each figure (default 3)\n"
	  "  -q, --quick          10000 documents, one round\n"
	  "  -k, --keep           keep the stores' files; print where\n"
	  "  -D, --dir DIR        run in DIR (created, or empty); default: a\n"
	  "                       fresh directory under $TMPDIR or /var/tmp\n"
	  "  -s, --stores LIST    only these, comma-separated: barrelfs,\n"
	  "                       documents, sqlite, lmdb, rocksdb, log\n"
	  "  -h, --help           show this help\n", cmd_bench },
};
#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

/* ---- usage ---- */

static int main_usage(FILE *out, int status)
{
	fprintf(out, "usage: barrelctl [-d DATADIR] COMMAND [options]\n\n"
		"commands:\n");
	for (size_t i = 0; i < NCMDS; i++)
		fprintf(out, "  %-7s %s\n", cmds[i].name, cmds[i].synopsis);
	fprintf(out, "\n  -d, --datadir DIR    the DATADIR (default: "
		"$BARREL_DATADIR)\n"
		"  -h, --help           show this help\n"
		"  -V, --version        show the version\n\n"
		"'barrelctl COMMAND --help' describes a command.\n");
	return status;
}

int cmd_usage(const struct cmd *c, FILE *out, int status)
{
	fprintf(out, "usage: barrelctl %s%s %s\n\n%s", c->name,
		c->datadir ? " [-d DATADIR]" : "", c->synopsis, c->help);
	return status;
}

/* Options every DATADIR command takes; -1 when opt was one of them and
 * parsing goes on, else the exit status to return. */
#define DB_SHORTOPTS "b:" CTL_SHORTOPTS
#define DB_LONGOPTS \
	{ "db", required_argument, NULL, 'b' }, \
	CTL_LONGOPTS

int ctl_option(struct ctl *ctl, const struct cmd *c, int opt)
{
	switch (opt) {
	case 'd':
		ctl->datadir = optarg;
		return -1;
	case 'h':
		return cmd_usage(c, stdout, 0);
	default:
		return cmd_usage(c, stderr, EXIT_USAGE);
	}
}

static int db_option(struct ctl *ctl, const struct cmd *c, int opt)
{
	if (opt != 'b')
		return ctl_option(ctl, c, opt);
	ctl->db = optarg;
	return -1;
}

static int no_operands(const struct cmd *c, int argc, char **argv)
{
	if (optind >= argc)
		return 0;
	fprintf(stderr, "barrelctl %s: unexpected argument '%s'\n", c->name,
		argv[optind]);
	return cmd_usage(c, stderr, EXIT_USAGE);
}

/* ---- opening the DATADIR and walking its databases ---- */

int ctl_open(const struct ctl *ctl, struct benv **env)
{
	struct benv_opts opts;
	struct stat st;
	int rc;

	if (!ctl->datadir || !*ctl->datadir) {
		fprintf(stderr, "barrelctl: no DATADIR: use -d DATADIR or set "
			"BARREL_DATADIR\n");
		return EXIT_USAGE;
	}
	errno = 0;
	if (stat(ctl->datadir, &st) || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "barrelctl: %s: %s\n", ctl->datadir,
			errno ? strerror(errno) : "not a directory");
		return EXIT_TROUBLE;
	}
	benv_opts_init(&opts);
	opts.gc_thread = false;       /* a tool changes nothing unasked */
	rc = benv_open(ctl->datadir, &opts, env);
	if (rc) {
		fprintf(stderr, "barrelctl: %s: %s\n", ctl->datadir,
			barrel_strerror(rc));
		return EXIT_TROUBLE;
	}
	return 0;
}

struct names {
	char **v;
	size_t n, cap;
	bool nomem;
};

static int names_add(void *arg, const char *name)
{
	struct names *ns = arg;

	if (ns->n == ns->cap) {
		size_t cap = ns->cap ? ns->cap * 2 : 16;
		char **v = realloc(ns->v, cap * sizeof(*v));

		if (!v)
			goto out_nomem;
		ns->v = v;
		ns->cap = cap;
	}
	ns->v[ns->n] = strdup(name);
	if (!ns->v[ns->n])
		goto out_nomem;
	ns->n++;
	return 0;
out_nomem:
	ns->nomem = true;
	return 1;
}

static void names_release(struct names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
}

/* Per database: returns 0, or EXIT_TROUBLE when it found or hit trouble. */
typedef int (*db_fn)(struct bdb *db, void *arg);

/* Open the DATADIR and run fn on -b's database or on every one. */
static int ctl_each_db(const struct ctl *ctl, db_fn fn, void *arg)
{
	struct names ns = { 0 };
	struct benv *env;
	int status = ctl_open(ctl, &env), rc;

	if (status)
		return status;
	rc = ctl->db ? names_add(&ns, ctl->db) : benv_list(env, names_add, &ns);
	if (rc < 0 || ns.nomem) {
		fprintf(stderr, "barrelctl: %s: listing databases: %s\n",
			ctl->datadir, barrel_strerror(ns.nomem ? -ENOMEM : rc));
		status = EXIT_TROUBLE;
		goto out_release;
	}
	if (ns.n == 0)
		printf("%s: no databases\n", ctl->datadir);
	for (size_t i = 0; i < ns.n; i++) {
		struct bdb *db;

		rc = benv_db(env, ns.v[i], false, &db);
		if (rc) {
			fprintf(stderr, "barrelctl: database %s: %s\n", ns.v[i],
				barrel_strerror(rc));
			status = EXIT_TROUBLE;
		} else if (fn(db, arg)) {
			status = EXIT_TROUBLE;
		}
	}
out_release:
	names_release(&ns);
	benv_close(env);
	return status;
}

/* "12345 (12.1 KiB)", or "512 B" */
static const char *human(uint64_t bytes, char *buf, size_t size)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)bytes;
	size_t u = 0;

	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, size, "%" PRIu64 " B", bytes);
	else
		snprintf(buf, size, "%" PRIu64 " (%.1f %s)", bytes, v,
			 units[u]);
	return buf;
}

/* ---- check ---- */

struct check_state {
	const char *db;
	uint64_t records;
};

static int check_record(void *arg, const struct bdb_recinfo *ri)
{
	struct check_state *cs = arg;

	cs->records++;
	if (ri->error)
		printf("%s: corrupt record: seg=%" PRIu32 " off=%" PRIu64
		       ": %s\n", cs->db, ri->seg, ri->off, ri->error);
	return 0;
}

static int check_db(struct bdb *db, void *arg)
{
	struct check_state cs = { .db = bdb_name(db) };
	uint64_t corrupt = 0;
	int rc = bdb_check(db, check_record, &cs, &corrupt);

	(void)arg;
	if (rc < 0) {
		fprintf(stderr, "barrelctl: %s: check: %s\n", cs.db,
			barrel_strerror(rc));
		return EXIT_TROUBLE;
	}
	printf("%s: %" PRIu64 " records, %" PRIu64 " corrupt\n", cs.db,
	       cs.records, corrupt);
	return corrupt ? EXIT_TROUBLE : 0;
}

/* A subcommand that takes only the database options and no operands. */
static int cmd_db_only(struct ctl *ctl, const struct cmd *c, int argc,
		       char **argv, db_fn fn)
{
	static const struct option longopts[] = { DB_LONGOPTS, { 0 } };
	int opt, rc;

	while ((opt = getopt_long(argc, argv, DB_SHORTOPTS, longopts,
				  NULL)) != -1)
		if ((rc = db_option(ctl, c, opt)) >= 0)
			return rc;
	if ((rc = no_operands(c, argc, argv)))
		return rc;
	return ctl_each_db(ctl, fn, NULL);
}

static int cmd_check(struct ctl *ctl, const struct cmd *c, int argc,
		     char **argv)
{
	return cmd_db_only(ctl, c, argc, argv, check_db);
}

/* ---- stat ---- */

static int stat_segment(void *arg, const struct bdb_seginfo *si)
{
	(void)arg;
	printf("  %8" PRIu32 " %12" PRIu64 " %12" PRIu64 " %12" PRIu64
	       " %6.1f%% %s\n", si->id, si->capacity, si->used, si->live,
	       si->used ? 100.0 * (double)si->live / (double)si->used : 0.0,
	       si->open ? "open" : "sealed");
	return 0;
}

static int stat_db(struct bdb *db, void *arg)
{
	struct bdb_stat st;
	char b[64];
	int rc = bdb_stat(db, &st);

	(void)arg;
	if (rc) {
		fprintf(stderr, "barrelctl: %s: stat: %s\n", bdb_name(db),
			barrel_strerror(rc));
		return EXIT_TROUBLE;
	}
	printf("database %s\n", bdb_name(db));
	printf("  seq          %" PRIu64 "\n", st.seq);
	printf("  txn          %" PRIu64 "\n", st.txn);
	printf("  tables       %u\n", st.tables);
	printf("  entries      %" PRIu64 "\n", st.entries);
	printf("  segments     %u\n", st.segments);
	printf("  disk bytes   %s\n", human(st.disk_bytes, b, sizeof(b)));
	printf("  used bytes   %s\n", human(st.used_bytes, b, sizeof(b)));
	printf("  live bytes   %s\n", human(st.live_bytes, b, sizeof(b)));
	printf("  live ratio   %.3f (live / disk)\n", st.disk_bytes ?
	       (double)st.live_bytes / (double)st.disk_bytes : 0.0);
	printf("  %8s %12s %12s %12s %7s %s\n", "segment", "capacity", "used",
	       "live", "live%", "state");
	rc = bdb_segments(db, stat_segment, NULL);
	if (rc < 0) {
		fprintf(stderr, "barrelctl: %s: segments: %s\n", bdb_name(db),
			barrel_strerror(rc));
		return EXIT_TROUBLE;
	}
	return 0;
}

static int cmd_stat(struct ctl *ctl, const struct cmd *c, int argc,
		    char **argv)
{
	return cmd_db_only(ctl, c, argc, argv, stat_db);
}

/* ---- dump ---- */

struct dump_state {
	const char *db;
	bool values;
	uint64_t corrupt;
};

/* hexdump -C style lines of the first PREVIEW_BYTES of p. */
static void dump_preview(const unsigned char *p, size_t len)
{
	size_t n = len < PREVIEW_BYTES ? len : PREVIEW_BYTES;

	for (size_t row = 0; row < n; row += 16) {
		printf("    %04zx ", row);
		for (size_t i = row; i < row + 16; i++)
			if (i < n)
				printf(" %02x", p[i]);
			else
				printf("   ");
		printf("  |");
		for (size_t i = row; i < row + 16 && i < n; i++)
			putchar(p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '.');
		printf("|\n");
	}
	if (len > n)
		printf("    ... %zu more bytes\n", len - n);
}

static int dump_record(void *arg, const struct bdb_recinfo *ri)
{
	struct dump_state *ds = arg;
	const char *type = bdb_rec_type_name(ri->type);

	printf("%s seg=%" PRIu32 " off=%" PRIu64, ds->db, ri->seg, ri->off);
	if (ri->error) {
		ds->corrupt++;
		printf(" corrupt: %s\n", ri->error);
		return 0;
	}
	if (type)
		printf(" type=%s", type);
	else
		printf(" type=%u", ri->type);
	printf(" len=%" PRIu32 " txn=%" PRIu64 "\n", ri->len, ri->txn);
	if (ds->values && ri->payload)
		dump_preview(ri->payload, ri->len);
	return 0;
}

static int dump_db(struct bdb *db, void *arg)
{
	struct dump_state *ds = arg;
	uint64_t corrupt = 0;
	int rc;

	ds->db = bdb_name(db);
	ds->corrupt = 0;
	rc = bdb_check(db, dump_record, ds, &corrupt);
	if (rc < 0) {
		fprintf(stderr, "barrelctl: %s: dump: %s\n", ds->db,
			barrel_strerror(rc));
		return EXIT_TROUBLE;
	}
	return corrupt || ds->corrupt ? EXIT_TROUBLE : 0;
}

static int cmd_dump(struct ctl *ctl, const struct cmd *c, int argc,
		    char **argv)
{
	static const struct option longopts[] = {
		{ "values", no_argument, NULL, 'v' }, DB_LONGOPTS, { 0 }
	};
	struct dump_state ds = { 0 };
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "v" DB_SHORTOPTS, longopts,
				  NULL)) != -1) {
		if (opt == 'v')
			ds.values = true;
		else if ((rc = db_option(ctl, c, opt)) >= 0)
			return rc;
	}
	if ((rc = no_operands(c, argc, argv)))
		return rc;
	return ctl_each_db(ctl, dump_db, &ds);
}

/* ---- gc ---- */

static int gc_db(struct bdb *db, void *arg)
{
	const double *ratio = arg;
	struct bdb_stat before, after;
	struct bgc_stats gs = { 0 };
	char b1[64], b2[64], b3[64];
	int rc;

	if ((rc = bdb_stat(db, &before)) ||
	    (rc = docdb_gc_attach(db)) ||
	    (rc = bdb_gc(db, *ratio, &gs)) ||
	    (rc = bdb_stat(db, &after))) {
		fprintf(stderr, "barrelctl: %s: gc: %s\n", bdb_name(db),
			barrel_strerror(rc));
		return EXIT_TROUBLE;
	}
	printf("%s: freed %u segments, %s; moved %s\n", bdb_name(db),
	       gs.segments_freed, human(gs.bytes_freed, b1, sizeof(b1)),
	       human(gs.bytes_moved, b2, sizeof(b2)));
	printf("%s: disk %s -> %s\n", bdb_name(db),
	       human(before.disk_bytes, b1, sizeof(b1)),
	       human(after.disk_bytes, b3, sizeof(b3)));
	return 0;
}

static int cmd_gc(struct ctl *ctl, const struct cmd *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "ratio", required_argument, NULL, 'r' }, DB_LONGOPTS, { 0 }
	};
	double ratio = 1.0;
	char *end;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "r:" DB_SHORTOPTS, longopts,
				  NULL)) != -1) {
		if (opt != 'r') {
			if ((rc = db_option(ctl, c, opt)) >= 0)
				return rc;
			continue;
		}
		errno = 0;
		ratio = strtod(optarg, &end);
		if (errno || end == optarg || *end || !isfinite(ratio) ||
		    ratio <= 0) {
			fprintf(stderr, "barrelctl gc: bad ratio '%s'\n",
				optarg);
			return cmd_usage(c, stderr, EXIT_USAGE);
		}
	}
	if ((rc = no_operands(c, argc, argv)))
		return rc;
	return ctl_each_db(ctl, gc_db, &ratio);
}

/* ---- bench ---- */

/* A decimal number in 1..max. */
static int parse_count(const char *s, uint64_t max, uint64_t *n)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v == 0 || v > max)
		return -1;
	*n = v;
	return 0;
}

static int cmd_bench(struct ctl *ctl, const struct cmd *c, int argc,
		     char **argv)
{
	static const struct option longopts[] = {
		{ "docs", required_argument, NULL, 'n' },
		{ "quick", no_argument, NULL, 'q' },
		{ "keep", no_argument, NULL, 'k' },
		{ "dir", required_argument, NULL, 'D' },
		{ "stores", required_argument, NULL, 's' },
		{ "updates", required_argument, NULL, 'u' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct bench_opts o = { .docs = 100000, .update_percent = 20,
				.rounds = 3 };
	bool docs_set = false, rounds_set = false, quick = false;
	uint64_t v;
	int opt, rc;

	(void)ctl;
	while ((opt = getopt_long(argc, argv, "n:qkD:s:u:r:h", longopts,
				  NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (parse_count(optarg, UINT32_MAX, &o.docs)) {
				fprintf(stderr, "barrelctl bench: bad --docs "
					"'%s'\n", optarg);
				return cmd_usage(c, stderr, EXIT_USAGE);
			}
			docs_set = true;
			break;
		case 'u':
			if (parse_count(optarg, 100, &v)) {
				fprintf(stderr, "barrelctl bench: bad --updates "
					"'%s' (a percentage, 1..100)\n",
					optarg);
				return cmd_usage(c, stderr, EXIT_USAGE);
			}
			o.update_percent = (unsigned)v;
			break;
		case 'r':
			if (parse_count(optarg, BENCH_MAX_ROUNDS, &v)) {
				fprintf(stderr, "barrelctl bench: bad --rounds "
					"'%s' (1..%d)\n", optarg,
					BENCH_MAX_ROUNDS);
				return cmd_usage(c, stderr, EXIT_USAGE);
			}
			o.rounds = (unsigned)v;
			rounds_set = true;
			break;
		case 'q': quick = true; break;
		case 'k': o.keep = true; break;
		case 'D': o.dir = optarg; break;
		case 's': o.stores = optarg; break;
		case 'h': return cmd_usage(c, stdout, 0);
		default: return cmd_usage(c, stderr, EXIT_USAGE);
		}
	}
	if ((rc = no_operands(c, argc, argv)))
		return rc;
	if (quick && !docs_set)
		o.docs = 10000;
	if (quick && !rounds_set)
		o.rounds = 1;
	return bench_run(&o);
}

/* ---- main ---- */

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "datadir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 }
	};
	struct ctl ctl = { .datadir = getenv("BARREL_DATADIR") };
	int opt;

	while ((opt = getopt_long(argc, argv, "+d:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd': ctl.datadir = optarg; break;
		case 'h': return main_usage(stdout, 0);
		case 'V': puts(PACKAGE_STRING); return 0;
		default: return main_usage(stderr, EXIT_USAGE);
		}
	}
	if (optind >= argc)
		return main_usage(stderr, EXIT_USAGE);
	for (size_t i = 0; i < NCMDS; i++) {
		if (strcmp(argv[optind], cmds[i].name))
			continue;
		argc -= optind;
		argv += optind;
		optind = 0;             /* restart getopt for the command */
		return cmds[i].run(&ctl, &cmds[i], argc, argv);
	}
	fprintf(stderr, "barrelctl: unknown command '%s'\n", argv[optind]);
	return main_usage(stderr, EXIT_USAGE);
}
