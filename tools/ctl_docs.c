/*
 * barrelctl's document commands: put, get, rm, log, diff, changes, export
 * and import, on one database of a DATADIR through the document layer
 * (engine/docdb.h).
 *
 * Each command parses its options, checks its operands, opens the DATADIR
 * (ctl_open) and the database (docdb_open), does its work from one
 * snapshot or in one write, and closes both. Errors are said on stderr as
 * "barrelctl CMD: WHAT: WHY" and exit 1; bad usage exits 2 (ctl.h).
 *
 * Attachments are streamed in and out in PIECE bytes at a time; only
 * export --format alldocs --attachments holds one attachment whole, as its
 * JSON needs the base64 text in one string.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/body.h"
#include "engine/db.h"
#include "engine/docdb.h"
#include "engine/docdiff.h"
#include "engine/docname.h"
#include "engine/error.h"
#include "tools/ctl.h"

#define PIECE (64u << 10)              /* attachment bytes per read/write */
#define IMPORT_BULK 500u               /* documents per docdb_put() */
#define IMPORT_BULK_BYTES (16u << 20)  /* ...or fewer when bodies reach this */
#define DEFAULT_TYPE "application/octet-stream"
#define JSON_OUT (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define JSON_PRETTY (JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | \
		     JSON_C_TO_STRING_NOSLASHESCAPE)

/* ---- messages and options ---- */

static int fail(const struct cmd *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int usage_error(const struct cmd *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* "barrelctl CMD: ..." on stderr; returns EXIT_TROUBLE. */
static int fail(const struct cmd *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "barrelctl %s: ", c->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_TROUBLE;
}

/* The same, then the command's usage; returns EXIT_USAGE. */
static int usage_error(const struct cmd *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "barrelctl %s: ", c->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n\n", stderr);
	return cmd_usage(c, stderr, EXIT_USAGE);
}

/* Between min and max operands after the options; names[i] says what the
 * i-th one is. 0, or EXIT_USAGE after saying what is wrong. */
static int operands(const struct cmd *c, int argc, char **argv,
		    const char *const *names, int min, int max)
{
	int n = argc - optind;

	if (n < min)
		return usage_error(c, "missing %s", names[n]);
	if (n > max)
		return usage_error(c, "unexpected argument '%s'",
				   argv[optind + max]);
	return 0;
}

static int check_db_name(const struct cmd *c, const char *db)
{
	if (bdb_name_valid(db))
		return 0;
	return usage_error(c, "'%s' is not a database name (lowercase "
			   "letters, digits and _$()+/-, starting with a "
			   "letter)", db);
}

static int check_id(const struct cmd *c, const char *id)
{
	if (docdb_id_valid(id, strlen(id)))
		return 0;
	return usage_error(c, "'%s' is not a document id (1 to %u bytes of "
			   "UTF-8; '_' starts only _design/ ids)", id,
			   DOC_MAX_ID);
}

static int parse_rev(const struct cmd *c, const char *s, struct rev *r)
{
	if (!rev_parse(s, strlen(s), r))
		return 0;
	return usage_error(c, "'%s' is not a revision (N-HASH)", s);
}

/* A decimal count; allow_zero or not. -1 when malformed. */
static int parse_count(const char *s, bool allow_zero, uint64_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || *s == '+' ||
	    (v == 0 && !allow_zero))
		return -1;
	*out = v;
	return 0;
}

static const char *rev_str(const struct rev *r, char buf[REV_STR_SIZE])
{
	if (rev_format(r, buf, REV_STR_SIZE))
		snprintf(buf, REV_STR_SIZE, "(bad revision)");
	return buf;
}

/* Flush standard output: a write error (full disk, closed pipe) fails. */
static int out_flush(const struct cmd *c, int status)
{
	if (fflush(stdout) || ferror(stdout))
		return fail(c, "writing standard output: %s",
			    strerror(errno ? errno : EIO));
	return status;
}

/* ---- the database ---- */

/* A database opened for a command. */
struct docs {
	struct benv *env;
	struct docdb *d;
	struct bsnap *snap;     /* docs_snapshot(); NULL until then */
};

static int docs_open(const struct ctl *ctl, const struct cmd *c,
		     const char *name, bool create, struct docs *ds)
{
	int status = ctl_open(ctl, &ds->env), rc;

	ds->d = NULL;
	ds->snap = NULL;
	if (status)
		return status;
	rc = docdb_open(ds->env, name, create, NULL, &ds->d);
	if (!rc)
		return 0;
	if (rc == BARREL_E_NOTFOUND)
		fail(c, "%s: no database %s", ctl->datadir, name);
	else
		fail(c, "database %s: %s", name, barrel_strerror(rc));
	benv_close(ds->env);
	return EXIT_TROUBLE;
}

/* Read from one snapshot from now on. */
static int docs_snapshot(const struct cmd *c, struct docs *ds)
{
	int rc = bdb_snapshot(docdb_bdb(ds->d), &ds->snap);

	if (rc)
		return fail(c, "snapshot: %s", barrel_strerror(rc));
	return 0;
}

static void docs_close(struct docs *ds)
{
	if (ds->snap)
		bsnap_release(ds->snap);
	docdb_close(ds->d);
	benv_close(ds->env);
}

/* Why docdb_get() found no id at rev (NULL: the winner), for a person. */
static int explain_missing(const struct cmd *c, struct docs *ds,
			   const char *id, const struct rev *rev)
{
	char rb[REV_STR_SIZE];
	struct revtree *t = NULL;
	struct revtree_info ri;
	int rc = docdb_tree(ds->d, ds->snap, id, strlen(id), &t, NULL);

	if (rc == BARREL_E_NOTFOUND)
		fail(c, "%s: no such document", id);
	else if (rc)
		fail(c, "%s: %s", id, barrel_strerror(rc));
	else if (!rev)
		fail(c, "%s: not found", id);
	else if (revtree_find(t, rev, &ri))
		fail(c, "%s: no revision %s", id, rev_str(rev, rb));
	else if (!ri.has_body)
		fail(c, "%s: revision %s: body not kept", id, rev_str(rev, rb));
	else
		fail(c, "%s: revision %s: not found", id, rev_str(rev, rb));
	revtree_free(t);
	return EXIT_TROUBLE;
}

/* id at rev, or its winner, which must not be a deletion, into *doc
 * (the caller's to doc_release()). 0, or an exit status once said. */
static int doc_read(const struct cmd *c, struct docs *ds, const char *id,
		    const struct rev *rev, unsigned flags, struct doc *doc)
{
	char rb[REV_STR_SIZE];
	int rc = docdb_get(ds->d, ds->snap, id, strlen(id), rev,
			   flags | DOC_GET_DELETED, doc);

	if (rc == BARREL_E_NOTFOUND)
		return explain_missing(c, ds, id, rev);
	if (rc)
		return fail(c, "%s: %s", id, barrel_strerror(rc));
	if (!rev && doc->deleted) {
		fail(c, "%s: deleted (at %s)", id, rev_str(&doc->rev, rb));
		doc_release(doc);
		return EXIT_TROUBLE;
	}
	return 0;
}

/* Say why write req (of what) failed; the current winner on a conflict. */
static int put_failed(const struct cmd *c, struct docs *ds, const char *what,
		      const struct doc_put *req)
{
	char rb[REV_STR_SIZE], winner[REV_STR_SIZE + 40] = "";
	const char *reason;
	struct revtree *t;
	struct rev w;

	if (req->rc == BARREL_E_CONFLICT && req->id) {
		int rc = docdb_tree(ds->d, NULL, req->id, req->idlen, &t, NULL);

		if (rc == BARREL_E_NOTFOUND)
			snprintf(winner, sizeof(winner), " (there is no such "
				 "document)");
		if (!rc && !revtree_winner(t, &w, NULL))
			snprintf(winner, sizeof(winner), " (the winner is %s)",
				 rev_str(&w, rb));
		if (!rc)
			revtree_free(t);
	}
	reason = barrel_strerror(req->rc);
	if (req->error[0] && !strncmp(req->error, reason, strlen(reason)))
		return fail(c, "%s: %s%s", what, req->error, winner);
	if (req->error[0])
		return fail(c, "%s: %s: %s%s", what, reason, req->error,
			    winner);
	return fail(c, "%s: %s%s", what, reason, winner);
}

/* ---- buffers, files, base64 ---- */

/* A growing byte string, NUL-terminated once anything was added. */
struct sbuf {
	char *p;
	size_t len, cap;
};

/* Append n bytes left for the caller to fill at b->p + b->len - n. */
static int sb_grow(struct sbuf *b, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		if (!(p = realloc(b->p, cap)))
			return -ENOMEM;
		b->p = p;
		b->cap = cap;
	}
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static int sb_add(struct sbuf *b, const void *s, size_t n)
{
	int rc = sb_grow(b, n);

	if (!rc)
		memcpy(b->p + b->len - n, s, n);
	return rc;
}

static void sb_release(struct sbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* Read fd to its end into *out (malloc'ed, NUL-terminated, the caller's):
 * 0, -errno, or BARREL_E_TOOBIG past max bytes. */
static int read_all(int fd, size_t max, char **out, size_t *outlen)
{
	char *buf = NULL, *p;
	size_t len = 0, cap = 0;
	ssize_t n;
	int rc;

	for (;;) {
		if (len + 1 >= cap) {     /* room for a byte and the NUL */
			size_t ncap = cap ? cap * 2 : PIECE;

			if (ncap > max + 2)
				ncap = max + 2;
			if (len + 1 >= ncap) {
				rc = BARREL_E_TOOBIG;
				goto out_free;
			}
			if (!(p = realloc(buf, ncap))) {
				rc = -ENOMEM;
				goto out_free;
			}
			buf = p;
			cap = ncap;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n == 0)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto out_free;
		}
		len += (size_t)n;
	}
	buf[len] = '\0';
	*out = buf;
	*outlen = len;
	return 0;
out_free:
	free(buf);
	return rc;
}

/* The file at path ("-": standard input), read whole. */
static int read_path(const char *path, size_t max, char **out, size_t *len)
{
	int fd, rc;

	if (!strcmp(path, "-"))
		return read_all(STDIN_FILENO, max, out, len);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = read_all(fd, max, out, len);
	close(fd);
	return rc;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Create the file path (it must not exist) holding len bytes of buf. */
static int write_new_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	int rc;

	if (fd < 0)
		return -errno;
	rc = write_all(fd, buf, len);
	if (close(fd) && !rc)
		rc = -errno;
	return rc;
}

/* dir/name into out (size bytes); -ENAMETOOLONG when it does not fit. */
static int path_join(char *out, size_t size, const char *dir,
		     const char *name, const char *suffix)
{
	int n = snprintf(out, size, "%s/%s%s", dir, name, suffix);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int mkdir_ok(const char *path)
{
	return mkdir(path, 0777) && errno != EEXIST ? -errno : 0;
}

/* ---- attachments in and out ---- */

/* Stream from fd into a new attachment of d: fills a's length, md5 and
 * blob (the caller sets name and content type). */
static int att_from_fd(struct docdb *d, int fd, struct doc_att *a)
{
	struct doc_att_writer *w;
	char *buf = malloc(PIECE);
	ssize_t n;
	int rc;

	if (!buf)
		return -ENOMEM;
	if ((rc = docdb_att_create(d, &w)))
		goto out_free;
	while ((n = read(fd, buf, PIECE)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			break;
		}
		if ((rc = doc_att_write(w, buf, (size_t)n)))
			break;
	}
	if (rc)
		doc_att_abort(w);
	else
		rc = doc_att_finish(w, a);
out_free:
	free(buf);
	return rc;
}

static int att_from_file(struct docdb *d, const char *path, struct doc_att *a)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

	if (fd < 0)
		return -errno;
	rc = att_from_fd(d, fd, a);
	close(fd);
	return rc;
}

/* Copy attachment a of a document read from snap to fd. */
static int att_to_fd(struct docdb *d, struct bsnap *snap,
		     const struct doc_att *a, int fd)
{
	struct bblob_reader *r;
	char *buf = malloc(PIECE);
	uint64_t off = 0;
	ssize_t n;
	int rc;

	if (!buf)
		return -ENOMEM;
	if ((rc = docdb_att_open(d, snap, a, &r)))
		goto out_free;
	while ((n = bblob_read(r, buf, PIECE, off)) > 0) {
		if ((rc = write_all(fd, buf, (size_t)n)))
			break;
		off += (uint64_t)n;
	}
	if (!rc && n < 0)
		rc = (int)n;
	else if (!rc && off != a->length)
		rc = BARREL_E_CORRUPT;       /* shorter than it says */
	bblob_close(r);
out_free:
	free(buf);
	return rc;
}

/* Attachment a whole, as base64, into out. */
static int att_to_base64(struct docdb *d, struct bsnap *snap,
			 const struct doc_att *a, struct sbuf *out)
{
	struct bblob_reader *r;
	uint8_t *raw;
	uint64_t off = 0;
	ssize_t n = 0;
	int rc;

	if (a->length > INT32_MAX / 4 * 3)
		return BARREL_E_TOOBIG;      /* a json-c string's limit */
	if (!(raw = malloc(a->length + 1)))
		return -ENOMEM;
	if ((rc = docdb_att_open(d, snap, a, &r)))
		goto out_free;
	while (off < a->length &&
	       (n = bblob_read(r, raw + off, a->length - off, off)) > 0)
		off += (uint64_t)n;
	bblob_close(r);
	if (n < 0)
		rc = (int)n;
	else if (off != a->length)
		rc = BARREL_E_CORRUPT;
	else if (!(rc = sb_grow(out, (a->length + 2) / 3 * 4)))
		EVP_EncodeBlock((unsigned char *)out->p + out->len -
				(a->length + 2) / 3 * 4, raw, (int)a->length);
out_free:
	free(raw);
	return rc;
}

/* ---- file names of ids and attachment names ---- */

/* The file-name codec (engine/docname.h) into b. */
static int name_encode(const char *s, size_t len, bool doc, struct sbuf *out)
{
	size_t n = docname_encode(s, len, doc, NULL, 0);
	int rc = sb_grow(out, n);

	if (!rc)
		docname_encode(s, len, doc, out->p + out->len - n, n + 1);
	return rc;
}

/* BARREL_E_INVALID for a '%' not followed by two hex digits. */
static int name_decode(const char *s, size_t len, struct sbuf *out)
{
	size_t n;
	int rc = sb_grow(out, len);

	if (rc)
		return rc;
	out->len -= len;
	rc = docname_decode(s, len, out->p + out->len, &n);
	out->len += rc ? 0 : n;
	out->p[out->len] = '\0';
	return rc;
}

/* Where id's files go under an export directory, without ".json":
 * "_design/" and NAME encoded for "_design/NAME", else the id encoded. */
static int id_path(const char *id, size_t len, struct sbuf *out)
{
	size_t plen = strlen(DOC_DESIGN_PREFIX);

	if (len > plen && !memcmp(id, DOC_DESIGN_PREFIX, plen)) {
		if (sb_add(out, id, plen))
			return -ENOMEM;
		id += plen;
		len -= plen;
	}
	return name_encode(id, len, true, out);
}

/* ---- put ---- */

/* --attach NAME=PATH[:TYPE] into a (strings borrowed from arg). */
static int parse_attach(const struct cmd *c, char *arg, struct doc_att *a,
			const char **path)
{
	char *eq = strchr(arg, '='), *colon;

	if (!eq || eq == arg || !eq[1])
		return usage_error(c, "--attach '%s': expected NAME=PATH"
				   "[:TYPE]", arg);
	*eq = '\0';
	a->name = arg;
	a->content_type = (char *)DEFAULT_TYPE;
	*path = eq + 1;
	colon = strrchr(eq + 1, ':');
	if (colon && colon > eq + 1 && strchr(colon + 1, '/')) {
		*colon = '\0';
		a->content_type = colon + 1;
	}
	return 0;
}

/* The body to write (FILE or "-") for id, and the "_rev" it names. */
static int put_body(const struct cmd *c, const char *file, const char *id,
		    char **body, size_t *len, struct rev *rev, bool *has_rev)
{
	const char *what = strcmp(file, "-") ? file : "standard input";
	char err[BODY_ERRLEN];
	struct body b;
	int rc = read_path(file, BODY_MAX_LEN, body, len);

	if (rc == BARREL_E_TOOBIG)
		return fail(c, "%s: too large: a body has at most %u bytes",
			    what, BODY_MAX_LEN);
	if (rc)
		return fail(c, "%s: %s", what, barrel_strerror(rc));
	rc = body_parse(*body, *len, &b, err);
	if (rc)
		fail(c, "%s: %s", what, err[0] ? err : barrel_strerror(rc));
	else if (b.id && (b.idlen != strlen(id) || memcmp(b.id, id, b.idlen)))
		rc = fail(c, "%s: its _id \"%.*s\" is not %s", what,
			  (int)b.idlen, b.id, id);
	if (rc) {
		body_release(&b);
		free(*body);
		*body = NULL;
		return EXIT_TROUBLE;
	}
	*has_rev = b.has_rev;
	if (b.has_rev)
		*rev = b.rev;
	body_release(&b);
	return 0;
}

/* What put writes, from its options and operands. */
struct put_args {
	const char *db, *id, *file;
	struct rev rev;
	bool has_rev;           /* --rev, else the body's "_rev" */
	struct doc_att *atts;   /* --attach and --detach, in order */
	const char **paths;     /* the file of each --attach */
	size_t natts;
};

/* -1 when the options and operands are good, else the exit status. */
static int put_args_parse(struct ctl *ctl, const struct cmd *c, int argc,
			  char **argv, struct put_args *pa)
{
	static const struct option longopts[] = {
		{ "rev", required_argument, NULL, 'r' },
		{ "attach", required_argument, NULL, 'a' },
		{ "detach", required_argument, NULL, 'x' },
		CTL_LONGOPTS, { 0 }
	};
	static const char *const names[] = { "DB", "ID", "FILE" };
	int opt, status;

	while ((opt = getopt_long(argc, argv, "r:a:" CTL_SHORTOPTS, longopts,
				  NULL)) != -1) {
		if (opt == 'r') {
			if ((status = parse_rev(c, optarg, &pa->rev)))
				return status;
			pa->has_rev = true;
		} else if (opt == 'a') {
			if ((status = parse_attach(c, optarg,
						   &pa->atts[pa->natts],
						   &pa->paths[pa->natts])))
				return status;
			pa->natts++;
		} else if (opt == 'x') {
			pa->atts[pa->natts].name = optarg;
			pa->atts[pa->natts++].remove = true;
		} else if ((status = ctl_option(ctl, c, opt)) >= 0) {
			return status;
		}
	}
	if ((status = operands(c, argc, argv, names, 2, 3)) ||
	    (status = check_db_name(c, argv[optind])) ||
	    (status = check_id(c, argv[optind + 1])))
		return status;
	pa->db = argv[optind];
	pa->id = argv[optind + 1];
	pa->file = optind + 2 < argc ? argv[optind + 2] : "-";
	return -1;
}

/* Stream the attachments in, then write the revision and print it. */
static int put_write(const struct cmd *c, struct docs *ds,
		     struct put_args *pa, const char *body, size_t len)
{
	struct doc_put req = {
		.id = pa->id, .idlen = strlen(pa->id),
		.body = body, .len = len,
		.parent = pa->has_rev ? &pa->rev : NULL,
		.flags = DOC_PUT_KEEP_ATTS |
			 (pa->has_rev ? 0 : DOC_PUT_ON_WINNER),
		.atts = pa->atts, .natts = pa->natts,
	};
	char rb[REV_STR_SIZE];
	int rc;

	for (size_t i = 0; i < pa->natts; i++) {
		if (pa->atts[i].remove)
			continue;
		if ((rc = att_from_file(ds->d, pa->paths[i], &pa->atts[i])))
			return fail(c, "%s: %s", pa->paths[i],
				    barrel_strerror(rc));
	}
	rc = docdb_put(ds->d, &req, 1);
	if (rc && !req.rc)
		req.rc = rc;
	if (req.rc)
		return put_failed(c, ds, pa->id, &req);
	printf("%s\n", rev_str(&req.rev, rb));
	return 0;
}

int cmd_put(struct ctl *ctl, const struct cmd *c, int argc, char **argv)
{
	struct put_args pa = {
		.atts = calloc((size_t)argc, sizeof(*pa.atts)),
		.paths = calloc((size_t)argc, sizeof(*pa.paths)),
	};
	struct docs ds;
	char *body = NULL;
	struct rev body_rev;
	bool has_body_rev = false;
	size_t len = 0;
	int status;

	if (!pa.atts || !pa.paths) {
		status = fail(c, "%s", strerror(ENOMEM));
		goto out_free;
	}
	if ((status = put_args_parse(ctl, c, argc, argv, &pa)) >= 0)
		goto out_free;
	/* The body first, then the lock: "get | put" works. */
	if ((status = put_body(c, pa.file, pa.id, &body, &len, &body_rev,
			       &has_body_rev)))
		goto out_free;
	if (!pa.has_rev && has_body_rev) {
		pa.rev = body_rev;
		pa.has_rev = true;
	}
	if (!(status = docs_open(ctl, c, pa.db, true, &ds))) {
		status = put_write(c, &ds, &pa, body, len);
		docs_close(&ds);
	}
out_free:
	free(body);
	free(pa.atts);
	free(pa.paths);
	return out_flush(c, status);
}

/* ---- get ---- */

static const struct doc_att *att_find(const struct doc *doc, const char *name)
{
	for (size_t i = 0; i < doc->natts; i++)
		if (!strcmp(doc->atts[i].name, name))
			return &doc->atts[i];
	return NULL;
}

/* doc as CouchDB shows it, pretty, on standard output. */
static int print_meta(const struct cmd *c, const struct doc *doc,
		      unsigned flags)
{
	struct json_object *o;
	int rc = doc_json(doc, flags, &o);

	if (rc)
		return fail(c, "%s: %s", doc->id, barrel_strerror(rc));
	printf("%s\n", json_object_to_json_string_ext(o, JSON_PRETTY));
	json_object_put(o);
	return 0;
}

int cmd_get(struct ctl *ctl, const struct cmd *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "rev", required_argument, NULL, 'r' },
		{ "meta", no_argument, NULL, 'm' },
		{ "conflicts", no_argument, NULL, 'c' },
		{ "attachment", required_argument, NULL, 'a' },
		CTL_LONGOPTS, { 0 }
	};
	static const char *const names[] = { "DB", "ID" };
	const char *att_name = NULL, *id;
	const struct doc_att *a = NULL;
	bool meta = false, conflicts = false, has_rev = false;
	struct doc doc = { 0 };
	struct docs ds;
	struct rev rev;
	int opt, status, rc;

	while ((opt = getopt_long(argc, argv, "r:mca:" CTL_SHORTOPTS,
				  longopts, NULL)) != -1) {
		switch (opt) {
		case 'r':
			if ((status = parse_rev(c, optarg, &rev)))
				return status;
			has_rev = true;
			break;
		case 'm': meta = true; break;
		case 'c': meta = conflicts = true; break;
		case 'a': att_name = optarg; break;
		default:
			if ((status = ctl_option(ctl, c, opt)) >= 0)
				return status;
		}
	}
	if ((status = operands(c, argc, argv, names, 2, 2)) ||
	    (status = check_db_name(c, argv[optind])) ||
	    (status = check_id(c, argv[optind + 1])))
		return status;
	if (meta && att_name)
		return usage_error(c, "--attachment goes with neither --meta "
				   "nor --conflicts");
	id = argv[optind + 1];
	if ((status = docs_open(ctl, c, argv[optind], false, &ds)))
		return status;
	if ((status = docs_snapshot(c, &ds)) ||
	    (status = doc_read(c, &ds, id, has_rev ? &rev : NULL,
			       conflicts ? DOC_GET_TREE : 0, &doc)))
		goto out_close;
	if (att_name && !(a = att_find(&doc, att_name))) {
		status = fail(c, "%s: no attachment %s", id, att_name);
	} else if (att_name) {
		fflush(stdout);
		if ((rc = att_to_fd(ds.d, ds.snap, a, STDOUT_FILENO)))
			status = fail(c, "%s: attachment %s: %s", id, att_name,
				      barrel_strerror(rc));
	} else if (meta) {
		status = print_meta(c, &doc, DOC_JSON_META | DOC_JSON_ATTS |
				    (conflicts ? DOC_JSON_CONFLICTS |
				     DOC_JSON_DELETED_CONFLICTS : 0));
	} else {
		fwrite(doc.body, 1, doc.len, stdout);
	}
	doc_release(&doc);
out_close:
	docs_close(&ds);
	return out_flush(c, status);
}

/* ---- rm ---- */

/* The winner of id, which must be alive, into *rev. */
static int live_winner(const struct cmd *c, struct docs *ds, const char *id,
		       struct rev *rev)
{
	char rb[REV_STR_SIZE];
	struct revtree *t;
	bool deleted = false;
	int rc = docdb_tree(ds->d, ds->snap, id, strlen(id), &t, NULL);

	if (rc == BARREL_E_NOTFOUND)
		return fail(c, "%s: no such document", id);
	if (rc)
		return fail(c, "%s: %s", id, barrel_strerror(rc));
	rc = revtree_winner(t, rev, &deleted);
	revtree_free(t);
	if (rc)
		return fail(c, "%s: %s", id, barrel_strerror(rc));
	if (deleted)
		return fail(c, "%s: already deleted (at %s)", id,
			    rev_str(rev, rb));
	return 0;
}

int cmd_rm(struct ctl *ctl, const struct cmd *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "rev", required_argument, NULL, 'r' }, CTL_LONGOPTS, { 0 }
	};
	static const char *const names[] = { "DB", "ID" };
	struct doc_put req = { .deleted = true };
	char rb[REV_STR_SIZE];
	bool has_rev = false;
	struct docs ds;
	struct rev rev;
	int opt, status, rc;

	while ((opt = getopt_long(argc, argv, "r:" CTL_SHORTOPTS, longopts,
				  NULL)) != -1) {
		if (opt == 'r') {
			if ((status = parse_rev(c, optarg, &rev)))
				return status;
			has_rev = true;
		} else if ((status = ctl_option(ctl, c, opt)) >= 0) {
			return status;
		}
	}
	if ((status = operands(c, argc, argv, names, 2, 2)) ||
	    (status = check_db_name(c, argv[optind])) ||
	    (status = check_id(c, argv[optind + 1])))
		return status;
	req.id = argv[optind + 1];
	req.idlen = strlen(req.id);
	if ((status = docs_open(ctl, c, argv[optind], false, &ds)))
		return status;
	/* The DATADIR lock keeps every other writer out: the winner read
	 * here is still the winner when the deletion commits. */
	if (!has_rev && (status = live_winner(c, &ds, req.id, &rev)))
		goto out_close;
	req.parent = &rev;
	rc = docdb_put(ds.d, &req, 1);
	if (rc && !req.rc)
		req.rc = rc;
	if (req.rc)
		status = put_failed(c, &ds, req.id, &req);
	else
		printf("%s\n", rev_str(&req.rev, rb));
out_close:
	docs_close(&ds);
	return out_flush(c, status);
}

/* ---- log ---- */

struct log_state {
	struct docs *ds;
	const char *id;
	struct revtree *tree;
	struct rev winner;
	bool oneline;
	struct rev *seen;       /* revisions shown so far */
	size_t nseen;
};

static bool log_seen(const struct log_state *ls, const struct rev *r)
{
	for (size_t i = 0; i < ls->nseen; i++)
		if (rev_eq(&ls->seen[i], r))
			return true;
	return false;
}

/* " (winner, deleted)": what is special about revision ri. */
static void log_marks(const struct log_state *ls,
		      const struct revtree_info *ri, char *buf, size_t size)
{
	const char *m[3];
	size_t n = 0, off = 0;

	if (rev_eq(&ri->rev, &ls->winner))
		m[n++] = "winner";
	else if (ri->is_leaf && !ri->deleted)
		m[n++] = "conflict";
	if (ri->deleted)
		m[n++] = "deleted";
	if (!ri->has_body)
		m[n++] = "body not kept";
	buf[0] = '\0';
	for (size_t i = 0; i < n && off < size; i++)
		off += (size_t)snprintf(buf + off, size - off, "%s%s%s",
					i ? ", " : " (", m[i],
					i + 1 == n ? ")" : "");
}

/* The date and size of a revision whose body is kept. */
static void log_body(struct log_state *ls, const struct rev *r)
{
	struct doc doc = { 0 };
	char date[64];
	time_t t;
	struct tm tm;
	int rc = docdb_get(ls->ds->d, ls->ds->snap, ls->id, strlen(ls->id), r,
			   DOC_GET_DELETED, &doc);

	if (rc) {
		printf("\n    (body unreadable: %s)\n", barrel_strerror(rc));
		return;
	}
	t = (time_t)(doc.time_ms / 1000);
	if (!localtime_r(&t, &tm) ||
	    !strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y %z", &tm))
		snprintf(date, sizeof(date), "%" PRId64 " ms", doc.time_ms);
	printf("Date:   %s\n\n    %zu bytes", date, doc.len);
	for (size_t i = 0; i < doc.natts; i++)
		printf("%s%s", i ? ", " : "; attachments: ", doc.atts[i].name);
	printf("\n");
	doc_release(&doc);
}

static void log_one(struct log_state *ls, const struct rev *r,
		    const struct rev *parent)
{
	char rb[REV_STR_SIZE], marks[64] = "";
	struct revtree_info ri;

	if (!revtree_find(ls->tree, r, &ri))
		log_marks(ls, &ri, marks, sizeof(marks));
	else
		memset(&ri, 0, sizeof(ri));
	ls->seen[ls->nseen++] = *r;
	if (ls->oneline) {
		printf("%s%s\n", rev_str(r, rb), marks);
		return;
	}
	printf("revision %s%s\n", rev_str(r, rb), marks);
	if (parent)
		printf("Parent: %s\n", rev_str(parent, rb));
	if (ri.has_body)
		log_body(ls, r);
	printf("\n");
}

/* Each leaf's branch, newest first, down to a revision already shown. */
static int log_tree(struct log_state *ls)
{
	size_t count = revtree_count(ls->tree), nleaves = 0, np;
	struct revtree_info *leaves = NULL;
	struct rev *path = calloc(count, sizeof(*path));
	int rc;

	ls->seen = calloc(count, sizeof(*ls->seen));
	if (!path || !ls->seen) {
		rc = -ENOMEM;
		goto out_free;
	}
	if ((rc = revtree_leaves(ls->tree, &leaves, &nleaves)))
		goto out_free;
	if (nleaves)
		ls->winner = leaves[0].rev;
	for (size_t l = 0; l < nleaves; l++) {
		if ((rc = revtree_path(ls->tree, &leaves[l].rev, path, count,
				       &np)))
			goto out_free;
		for (size_t i = 0; i < np && !log_seen(ls, &path[i]); i++)
			log_one(ls, &path[i], i + 1 < np ? &path[i + 1] : NULL);
	}
out_free:
	free(leaves);
	free(path);
	free(ls->seen);
	return rc;
}

int cmd_log(struct ctl *ctl, const struct cmd *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "oneline", no_argument, NULL, 'o' }, CTL_LONGOPTS, { 0 }
	};
	static const char *const names[] = { "DB", "ID" };
	struct log_state ls = { 0 };
	struct docs ds;
	int opt, status, rc;

	while ((opt = getopt_long(argc, argv, CTL_SHORTOPTS, longopts,
				  NULL)) != -1) {
		if (opt == 'o')
			ls.oneline = true;
		else if ((status = ctl_option(ctl, c, opt)) >= 0)
			return status;
	}
	if ((status = operands(c, argc, argv, names, 2, 2)) ||
	    (status = check_db_name(c, argv[optind])) ||
	    (status = check_id(c, argv[optind + 1])))
		return status;
	ls.id = argv[optind + 1];
	ls.ds = &ds;
	if ((status = docs_open(ctl, c, argv[optind], false, &ds)))
		return status;
	if ((status = docs_snapshot(c, &ds)))
		goto out_close;
	rc = docdb_tree(ds.d, ds.snap, ls.id, strlen(ls.id), &ls.tree, NULL);
	if (rc == BARREL_E_NOTFOUND)
		status = fail(c, "%s: no such document", ls.id);
	else if (rc || (rc = log_tree(&ls)))
		status = fail(c, "%s: %s", ls.id, barrel_strerror(rc));
	revtree_free(ls.tree);
out_close:
	docs_close(&ds);
	return out_flush(c, status);
}

/* ---- diff ---- */

/* The text diff compares: the body as stored, or its pretty form. */
static int diff_text(const struct cmd *c, const struct doc *doc, bool pretty,
		     char **text, size_t *len)
{
	char err[BODY_ERRLEN], rb[REV_STR_SIZE];
	struct body b;
	int rc;

	if (!pretty) {
		*text = NULL;
		*len = doc->len;
		return 0;
	}
	err[0] = '\0';
	if (!(rc = body_parse(doc->body, doc->len, &b, err)))
		rc = body_normalize(&b, text, len);
	body_release(&b);
	if (rc)
		return fail(c, "%s@%s: %s", doc->id, rev_str(&doc->rev, rb),
			    err[0] ? err : barrel_strerror(rc));
	return 0;
}

/* A unified diff of a and b (docdiff.h), labelled a/ID@REV1, b/ID@REV2. */
static int diff_print(const struct cmd *c, const char *id,
		      const char *const revs[2], const char *const text[2],
		      const size_t len[2], uint32_t context)
{
	struct sbuf la = { 0 }, lb = { 0 };
	char err[DOCDIFF_ERRLEN], *out = NULL;
	size_t outlen;
	int status = 0, rc;

	if (sb_add(&la, id, strlen(id)) || sb_add(&la, "@", 1) ||
	    sb_add(&la, revs[0], strlen(revs[0])) ||
	    sb_add(&lb, id, strlen(id)) || sb_add(&lb, "@", 1) ||
	    sb_add(&lb, revs[1], strlen(revs[1]))) {
		status = fail(c, "%s", strerror(ENOMEM));
		goto out_free;
	}
	rc = doc_diff(text[0], len[0], la.p, text[1], len[1], lb.p, context,
		      &out, &outlen, err);
	if (rc)
		status = fail(c, "%s: %s", id,
			      rc == -ENOMEM ? strerror(ENOMEM) : err);
	else
		fwrite(out, 1, outlen, stdout);
	free(out);
out_free:
	sb_release(&la);
	sb_release(&lb);
	return status;
}

int cmd_diff(struct ctl *ctl, const struct cmd *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "pretty", no_argument, NULL, 'p' },
		{ "unified", required_argument, NULL, 'U' },
		CTL_LONGOPTS, { 0 }
	};
	static const char *const names[] = { "DB", "ID", "REV1", "REV2" };
	struct doc doc[2] = { { 0 }, { 0 } };
	char *pretty_text[2] = { NULL, NULL };
	const char *text[2], *id, *revs[2];
	size_t len[2];
	uint64_t context = 3;
	bool pretty = false;
	struct rev rev[2];
	struct docs ds;
	int opt, status;

	while ((opt = getopt_long(argc, argv, "pU:" CTL_SHORTOPTS, longopts,
				  NULL)) != -1) {
		if (opt == 'p') {
			pretty = true;
		} else if (opt == 'U') {
			if (parse_count(optarg, true, &context) ||
			    context > 1000000)
				return usage_error(c, "bad --unified '%s'",
						   optarg);
		} else if ((status = ctl_option(ctl, c, opt)) >= 0) {
			return status;
		}
	}
	if ((status = operands(c, argc, argv, names, 4, 4)) ||
	    (status = check_db_name(c, argv[optind])) ||
	    (status = check_id(c, argv[optind + 1])) ||
	    (status = parse_rev(c, argv[optind + 2], &rev[0])) ||
	    (status = parse_rev(c, argv[optind + 3], &rev[1])))
		return status;
	id = argv[optind + 1];
	revs[0] = argv[optind + 2];
	revs[1] = argv[optind + 3];
	if ((status = docs_open(ctl, c, argv[optind], false, &ds)))
		return status;
	if ((status = docs_snapshot(c, &ds)))
		goto out_close;
	for (int i = 0; i < 2 && !status; i++)
		if (!(status = doc_read(c, &ds, id, &rev[i], 0, &doc[i])))
			status = diff_text(c, &doc[i], pretty, &pretty_text[i],
					   &len[i]);
	if (!status) {
		for (int i = 0; i < 2; i++)
			text[i] = pretty ? pretty_text[i] : doc[i].body;
		status = diff_print(c, id, revs, text, len,
				    (uint32_t)context);
	}
	for (int i = 0; i < 2; i++) {
		free(pretty_text[i]);
		doc_release(&doc[i]);
	}
out_close:
	docs_close(&ds);
	return out_flush(c, status);
}

/* ---- changes ---- */

struct changes_state {
	const struct cmd *c;
	bool docs;
	int rc;                 /* why a row stopped the feed */
};

/* {"rev":"N-HASH"} of each of n revisions. */
static struct json_object *json_revs(const struct rev *revs, size_t n)
{
	struct json_object *a = json_object_new_array();
	char rb[REV_STR_SIZE];

	for (size_t i = 0; a && i < n; i++) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "rev",
				       json_object_new_string(rev_str(&revs[i],
								      rb)));
		json_object_array_add(a, o);
	}
	return a;
}

static int change_row(void *arg, const struct doc_row *row)
{
	struct changes_state *cs = arg;
	struct json_object *o = json_object_new_object(), *doc = NULL;

	if (!o)
		return cs->rc = -ENOMEM;
	json_object_object_add(o, "seq", json_object_new_uint64(row->seq));
	json_object_object_add(o, "id", json_object_new_string_len(row->id,
						(int)row->idlen));
	json_object_object_add(o, "changes", json_revs(row->revs, row->nrevs));
	if (row->deleted)
		json_object_object_add(o, "deleted",
				       json_object_new_boolean(1));
	if (cs->docs && row->doc &&
	    (cs->rc = doc_json(row->doc, DOC_JSON_META | DOC_JSON_ATTS,
			       &doc))) {
		json_object_put(o);
		return cs->rc;
	}
	if (cs->docs)
		json_object_object_add(o, "doc", doc);
	printf("%s\n", json_object_to_json_string_ext(o, JSON_OUT));
	json_object_put(o);
	return ferror(stdout) ? (cs->rc = -EIO) : 0;
}

int cmd_changes(struct ctl *ctl, const struct cmd *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "since", required_argument, NULL, 's' },
		{ "limit", required_argument, NULL, 'l' },
		{ "descending", no_argument, NULL, 'D' },
		{ "style", required_argument, NULL, 'S' },
		{ "include-docs", no_argument, NULL, 'i' },
		CTL_LONGOPTS, { 0 }
	};
	static const char *const names[] = { "DB" };
	struct changes_state cs = { .c = c };
	uint64_t since = 0, limit = 0, last = 0;
	unsigned flags = 0;
	struct docs ds;
	int opt, status, rc;

	while ((opt = getopt_long(argc, argv, "s:l:" CTL_SHORTOPTS, longopts,
				  NULL)) != -1) {
		switch (opt) {
		case 's':
			if (parse_count(optarg, true, &since))
				return usage_error(c, "bad --since '%s'",
						   optarg);
			break;
		case 'l':
			if (parse_count(optarg, false, &limit))
				return usage_error(c, "bad --limit '%s' (a "
						   "count from 1)", optarg);
			break;
		case 'D': flags |= DOC_ROWS_DESCENDING; break;
		case 'S':
			if (!strcmp(optarg, "all_docs"))
				flags |= DOC_ROWS_ALL_LEAVES;
			else if (strcmp(optarg, "main_only"))
				return usage_error(c, "bad --style '%s' "
						   "(main_only or all_docs)",
						   optarg);
			break;
		case 'i':
			flags |= DOC_ROWS_DOCS;
			cs.docs = true;
			break;
		default:
			if ((status = ctl_option(ctl, c, opt)) >= 0)
				return status;
		}
	}
	if ((status = operands(c, argc, argv, names, 1, 1)) ||
	    (status = check_db_name(c, argv[optind])))
		return status;
	if ((status = docs_open(ctl, c, argv[optind], false, &ds)))
		return status;
	if ((status = docs_snapshot(c, &ds)))
		goto out_close;
	rc = docdb_changes(ds.d, ds.snap, since, limit, flags, change_row,
			   &cs, &last);
	if (rc)
		status = fail(c, "%s: changes: %s", argv[optind],
			      barrel_strerror(cs.rc ? cs.rc : rc));
	else
		printf("{\"last_seq\":%" PRIu64 "}\n", last);
out_close:
	docs_close(&ds);
	return out_flush(c, status);
}

/* ---- export ---- */

struct export_state {
	const struct cmd *c;
	struct docs *ds;
	const char *out;        /* the directory, or the file ("-": stdout) */
	FILE *f;                /* alldocs: where rows go */
	bool inline_atts;       /* alldocs: data instead of stubs */
	uint64_t docs, atts, failed, rows;
	int err;                /* a write error: stops the export */
};

/* OUT must be a new or empty directory. */
static int export_dir_prepare(const struct cmd *c, const char *out)
{
	struct dirent *e;
	DIR *dir;

	if (!mkdir(out, 0777))
		return 0;
	if (errno != EEXIST)
		return fail(c, "%s: %s", out, strerror(errno));
	if (!(dir = opendir(out)))
		return fail(c, "%s: %s", out, strerror(errno));
	while ((e = readdir(dir)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			break;
	closedir(dir);
	if (e)
		return fail(c, "%s: not empty: export writes only into a new "
			    "or empty directory", out);
	return 0;
}

/* Attachment a of a document into the folder base (OUT/ID). */
static int export_att(struct export_state *es, const struct doc_att *a,
		      const char *base)
{
	struct sbuf name = { 0 };
	char path[PATH_MAX];
	int fd, rc = name_encode(a->name, strlen(a->name), false, &name);

	if (!rc)
		rc = path_join(path, sizeof(path), base, name.p, "");
	sb_release(&name);
	if (rc)
		return rc;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (fd < 0)
		return -errno;
	rc = att_to_fd(es->ds->d, es->ds->snap, a, fd);
	if (close(fd) && !rc)
		rc = -errno;
	return rc;
}

/* The attachments of doc into the folder base; says why one failed. */
static int export_atts(struct export_state *es, const struct doc *doc,
		       const char *base)
{
	int rc = mkdir_ok(base);

	if (rc)
		fail(es->c, "%s: %s", base, barrel_strerror(rc));
	for (size_t i = 0; i < doc->natts && !rc; i++) {
		if ((rc = export_att(es, &doc->atts[i], base)))
			fail(es->c, "%s: attachment %s: %s", doc->id,
			     doc->atts[i].name, barrel_strerror(rc));
		else
			es->atts++;
	}
	return rc;
}

/* One document: OUT/ID.json and OUT/ID/NAME. */
static int export_dir_row(void *arg, const struct doc_row *row)
{
	struct export_state *es = arg;
	const struct doc *doc = row->doc;
	struct sbuf rel = { 0 };
	char path[PATH_MAX], base[PATH_MAX];
	int rc;

	if (!doc)
		return es->err = BARREL_E_INVALID;  /* asked DOC_ROWS_DOCS */
	if ((rc = id_path(row->id, row->idlen, &rel)) ||
	    (rc = path_join(path, sizeof(path), es->out, rel.p, ".json")) ||
	    (rc = path_join(base, sizeof(base), es->out, rel.p, "")))
		goto out_failed;
	if (rel.p[0] == '_' && strchr(rel.p, '/')) {  /* _design/NAME */
		char dir[PATH_MAX];

		if ((rc = path_join(dir, sizeof(dir), es->out, "_design", "")) ||
		    (rc = mkdir_ok(dir)))
			goto out_failed;
	}
	if ((rc = write_new_file(path, doc->body, doc->len)))
		goto out_failed;
	if (doc->natts && (rc = export_atts(es, doc, base))) {
		es->failed++;               /* export_atts said why */
		goto out_release;
	}
	es->docs++;
	goto out_release;
out_failed:
	fail(es->c, "%.*s: %s%s", (int)row->idlen, row->id,
	     barrel_strerror(rc), rc == -ENAMETOOLONG ?
	     " (the id is too long for a file name: use --format alldocs)" :
	     "");
	es->failed++;
out_release:
	sb_release(&rel);
	/* A full disk or a read-only OUT fails every document alike. */
	if (rc == -ENOSPC || rc == -EROFS || rc == -EDQUOT || rc == -EIO)
		return es->err = rc;
	return 0;
}

static int count_row(void *arg, const struct doc_row *row)
{
	(void)row;
	(*(uint64_t *)arg)++;
	return 0;
}

/* Replace the stubs of dj's "_attachments" by their data. */
static int inline_atts(struct export_state *es, const struct doc *doc,
		       struct json_object *dj)
{
	struct json_object *atts, *entry;
	int rc = 0;

	if (!json_object_object_get_ex(dj, "_attachments", &atts))
		return 0;
	for (size_t i = 0; i < doc->natts && !rc; i++) {
		struct sbuf data = { 0 };

		if (!json_object_object_get_ex(atts, doc->atts[i].name, &entry))
			continue;
		rc = att_to_base64(es->ds->d, es->ds->snap, &doc->atts[i],
				   &data);
		if (!rc) {
			json_object_object_del(entry, "stub");
			json_object_object_add(entry, "data",
				json_object_new_string_len(data.p ? data.p : "",
							   (int)data.len));
		} else {
			fail(es->c, "%s: attachment %s: %s", doc->id,
			     doc->atts[i].name, barrel_strerror(rc));
		}
		sb_release(&data);
	}
	return rc;
}

/* One row of _all_docs?include_docs=true. */
static int export_alldocs_row(void *arg, const struct doc_row *row)
{
	struct export_state *es = arg;
	struct json_object *o = json_object_new_object(), *v, *dj = NULL;
	char rb[REV_STR_SIZE];
	int rc;

	if (!o || !row->doc)
		return es->err = o ? BARREL_E_INVALID : -ENOMEM;
	if ((rc = doc_json(row->doc, DOC_JSON_META | DOC_JSON_ATTS, &dj)))
		fail(es->c, "%.*s: %s", (int)row->idlen, row->id,
		     barrel_strerror(rc));
	else if (es->inline_atts)
		rc = inline_atts(es, row->doc, dj);     /* says why */
	if (rc) {
		json_object_put(dj);
		json_object_put(o);
		es->failed++;
		return 0;
	}
	json_object_object_add(o, "id", json_object_new_string_len(row->id,
						(int)row->idlen));
	json_object_object_add(o, "key", json_object_new_string_len(row->id,
						(int)row->idlen));
	v = json_object_new_object();
	json_object_object_add(v, "rev", json_object_new_string(
				       rev_str(&row->doc->rev, rb)));
	json_object_object_add(o, "value", v);
	json_object_object_add(o, "doc", dj);
	fprintf(es->f, "%s%s", es->rows++ ? ",\n" : "",
		json_object_to_json_string_ext(o, JSON_OUT));
	json_object_put(o);
	es->docs++;
	es->atts += row->doc->natts;
	return ferror(es->f) ? (es->err = -EIO) : 0;
}

static int export_alldocs(struct export_state *es)
{
	const struct cmd *c = es->c;
	bool to_stdout = !strcmp(es->out, "-");
	uint64_t total = 0;
	int rc;

	rc = docdb_all_docs(es->ds->d, es->ds->snap, NULL, 0, NULL, 0, 0,
			    count_row, &total);
	if (rc)
		return fail(c, "listing documents: %s", barrel_strerror(rc));
	es->f = to_stdout ? stdout : fopen(es->out, "w");
	if (!es->f)
		return fail(c, "%s: %s", es->out, strerror(errno));
	fprintf(es->f, "{\"total_rows\":%" PRIu64 ",\"offset\":0,\"rows\":[\n",
		total);
	rc = docdb_all_docs(es->ds->d, es->ds->snap, NULL, 0, NULL, 0,
			    DOC_ROWS_DOCS, export_alldocs_row, es);
	fprintf(es->f, "\n]}\n");
	if ((fflush(es->f) || ferror(es->f)) && !rc)
		rc = -(errno ? errno : EIO);
	if (!to_stdout && fclose(es->f) && !rc)
		rc = -errno;
	if (rc)
		return fail(c, "%s: %s", es->out,
			    barrel_strerror(es->err ? es->err : rc));
	return 0;
}

int cmd_export(struct ctl *ctl, const struct cmd *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "format", required_argument, NULL, 'f' },
		{ "attachments", no_argument, NULL, 'A' },
		CTL_LONGOPTS, { 0 }
	};
	static const char *const names[] = { "DB", "OUT" };
	struct export_state es = { .c = c };
	bool alldocs = false, ran = false;
	struct docs ds;
	int opt, status, rc;

	while ((opt = getopt_long(argc, argv, "f:" CTL_SHORTOPTS, longopts,
				  NULL)) != -1) {
		if (opt == 'f') {
			alldocs = !strcmp(optarg, "alldocs");
			if (!alldocs && strcmp(optarg, "dir"))
				return usage_error(c, "bad --format '%s' (dir "
						   "or alldocs)", optarg);
		} else if (opt == 'A') {
			es.inline_atts = true;
		} else if ((status = ctl_option(ctl, c, opt)) >= 0) {
			return status;
		}
	}
	if ((status = operands(c, argc, argv, names, 2, 2)) ||
	    (status = check_db_name(c, argv[optind])))
		return status;
	if (es.inline_atts && !alldocs)
		return usage_error(c, "--attachments goes with --format "
				   "alldocs (dir writes attachments as files)");
	es.out = argv[optind + 1];
	es.ds = &ds;
	if ((status = docs_open(ctl, c, argv[optind], false, &ds)))
		return status;
	if ((status = docs_snapshot(c, &ds)))
		goto out_close;
	if (alldocs) {
		status = export_alldocs(&es);
		ran = es.f != NULL;
	} else if (!(status = export_dir_prepare(c, es.out))) {
		ran = true;
		rc = docdb_all_docs(ds.d, ds.snap, NULL, 0, NULL, 0,
				    DOC_ROWS_DOCS, export_dir_row, &es);
		if (rc)
			status = fail(c, "%s: %s", es.out,
				      barrel_strerror(es.err ? es.err : rc));
	}
	if (!status && es.failed)
		status = EXIT_TROUBLE;
	if (ran && strcmp(es.out, "-"))
		printf("%s: exported %" PRIu64 " documents and %" PRIu64
		       " attachments to %s%s\n", argv[optind], es.docs,
		       es.atts, es.out, es.failed || status ?
		       "; some failed (see above)" : "");
out_close:
	docs_close(&ds);
	return out_flush(c, status);
}

/* ---- import ---- */

/* One document waiting for its bulk; everything owned. */
struct import_item {
	char *what;             /* the file, or "SRC: row N", for messages */
	char *id;
	char *body;
	size_t len;
	unsigned flags;         /* enum doc_put_flags */
	struct doc_att *atts;   /* names and types owned too */
	size_t natts;
};

struct import_state {
	const struct cmd *c;
	struct docs *ds;
	const char *src;
	struct import_item items[IMPORT_BULK];
	struct doc_put reqs[IMPORT_BULK];
	size_t n, bytes;        /* items waiting, bytes of their bodies */
	uint64_t docs, atts, failed;
	int err;                /* a failed commit: stops the import */
};

static void item_release(struct import_item *it)
{
	free(it->what);
	free(it->id);
	free(it->body);
	doc_atts_free(it->atts, it->natts);
	memset(it, 0, sizeof(*it));
}

/* A document (what) that is not imported, and why. */
static void import_failed(struct import_state *is, const char *what,
			  const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void import_failed(struct import_state *is, const char *what,
			  const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "barrelctl %s: %s: ", is->c->name, what);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	is->failed++;
}

/* Write the waiting documents in one docdb_put(). */
static int import_flush(struct import_state *is)
{
	int rc;

	if (!is->n)
		return 0;
	memset(is->reqs, 0, is->n * sizeof(is->reqs[0]));
	for (size_t i = 0; i < is->n; i++) {
		struct doc_put *r = &is->reqs[i];
		struct import_item *it = &is->items[i];

		r->id = it->id;
		r->idlen = strlen(it->id);
		r->body = it->body;
		r->len = it->len;
		r->flags = it->flags;
		r->atts = it->atts;
		r->natts = it->natts;
	}
	rc = docdb_put(is->ds->d, is->reqs, is->n);
	for (size_t i = 0; i < is->n; i++) {
		struct doc_put *r = &is->reqs[i];

		if (rc && !r->rc)
			r->rc = rc;
		if (r->rc) {
			is->failed++;
			put_failed(is->c, is->ds, is->items[i].what, r);
		} else {
			is->docs++;
			is->atts += is->items[i].natts;
		}
		item_release(&is->items[i]);
	}
	is->n = is->bytes = 0;
	if (rc) {
		fail(is->c, "%s: commit: %s; stopping", is->src,
		     barrel_strerror(rc));
		is->err = rc;
	}
	return rc;
}

/* Queue *it (taken over) for the next bulk. */
static int import_add(struct import_state *is, struct import_item *it)
{
	is->items[is->n++] = *it;
	is->bytes += it->len;
	memset(it, 0, sizeof(*it));
	if (is->n == IMPORT_BULK || is->bytes >= IMPORT_BULK_BYTES)
		return import_flush(is);
	return 0;
}

static int name_cmp(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

/* Entries of dir sorted by name, without "." and ".." and dot-files:
 * the codec never starts a name with '.', so they are scratch. */
static int dot_filter(const struct dirent *e)
{
	return e->d_name[0] != '.';
}

static void dirents_free(struct dirent **ents, int n)
{
	for (int i = 0; i < n; i++)
		free(ents[i]);
	free(ents);
}

static bool ends_with_json(const char *name)
{
	size_t len = strlen(name);

	return len > 5 && !strcmp(name + len - 5, ".json");
}

/* The file folder/fname as the next attachment of it; 0, or -1 once
 * said why the document fails. */
static int import_att_file(struct import_state *is, struct import_item *it,
			   const char *folder, const char *fname)
{
	struct doc_att *a = &it->atts[it->natts];
	struct sbuf name = { 0 };
	char path[PATH_MAX];
	struct stat st;
	int rc = path_join(path, sizeof(path), folder, fname, "");

	if (!rc && stat(path, &st))
		rc = -errno;
	if (rc) {
		import_failed(is, it->what, "%s/%s: %s", folder, fname,
			      barrel_strerror(rc));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		import_failed(is, it->what, "%s: not a regular file, so not "
			      "an attachment", path);
		return -1;
	}
	if (name_decode(fname, strlen(fname), &name)) {
		import_failed(is, it->what, "%s: not an encoded attachment "
			      "name (a '%%' without two hex digits)", path);
		sb_release(&name);
		return -1;
	}
	a->name = name.p;
	it->natts++;                    /* item_release() frees it now */
	rc = (a->content_type = strdup(DEFAULT_TYPE)) ? 0 : -ENOMEM;
	if (!rc)
		rc = att_from_file(is->ds->d, path, a);
	if (rc) {
		import_failed(is, it->what, "attachment %s: %s", path,
			      barrel_strerror(rc));
		return -1;
	}
	return 0;
}

/* The files of folder (ID/) as the attachments of it. */
static int import_atts(struct import_state *is, const char *folder,
		       struct import_item *it)
{
	struct dirent **ents;
	int n = scandir(folder, &ents, dot_filter, name_cmp), rc = 0;

	if (n < 0) {
		import_failed(is, it->what, "%s: %s", folder, strerror(errno));
		return -1;
	}
	if (!(it->atts = calloc((size_t)n + 1, sizeof(*it->atts)))) {
		import_failed(is, it->what, "%s", strerror(ENOMEM));
		rc = -1;
	}
	for (int i = 0; i < n && !rc; i++)
		rc = import_att_file(is, it, folder, ents[i]->d_name);
	dirents_free(ents, n);
	return rc;
}

/* The id of a document file: its name decoded, which the body's "_id",
 * when it has one, must match; the "_id" alone when the name is no
 * encoded id. NULL once said why. */
static char *import_file_id(struct import_state *is, const char *what,
			    const char *prefix, const char *name,
			    const struct body *b)
{
	struct sbuf id = { 0 };
	int rc = sb_add(&id, prefix, strlen(prefix));

	if (!rc)
		rc = name_decode(name, strlen(name) - 5, &id);
	if (rc == BARREL_E_INVALID && b->id) {
		sb_release(&id);
		return strndup(b->id, b->idlen);
	}
	if (rc) {
		import_failed(is, what, "the file name is not an encoded "
			      "document id (a '%%' without two hex digits) "
			      "and the body has no _id");
		sb_release(&id);
		return NULL;
	}
	if (b->id && (b->idlen != id.len || memcmp(b->id, id.p, id.len))) {
		import_failed(is, what, "its _id \"%.*s\" is not the id its "
			      "name gives (\"%s\")", (int)b->idlen, b->id,
			      id.p);
		sb_release(&id);
		return NULL;
	}
	return id.p;
}

/* One document file, dir/NAME.json, and its folder dir/NAME/. */
static void import_file(struct import_state *is, const char *dir,
			const char *name, const char *prefix)
{
	struct import_item it = { .flags = DOC_PUT_ON_WINNER };
	char path[PATH_MAX], folder[PATH_MAX], err[BODY_ERRLEN];
	struct body b;
	struct stat st;
	int rc;

	if (path_join(path, sizeof(path), dir, name, "") ||
	    !(it.what = strdup(path))) {
		import_failed(is, name, "%s", strerror(ENAMETOOLONG));
		return;
	}
	rc = read_path(path, BODY_MAX_LEN, &it.body, &it.len);
	if (rc == BARREL_E_TOOBIG) {
		import_failed(is, path, "too large: a body has at most %u "
			      "bytes", BODY_MAX_LEN);
		goto out_release;
	}
	if (rc) {
		import_failed(is, path, "%s", barrel_strerror(rc));
		goto out_release;
	}
	rc = body_parse(it.body, it.len, &b, err);
	if (rc)
		import_failed(is, path, "%s", err[0] ? err :
			      barrel_strerror(rc));
	else
		it.id = import_file_id(is, path, prefix, name, &b);
	body_release(&b);
	if (!it.id)
		goto out_release;
	memcpy(folder, path, strlen(path) - 5);
	folder[strlen(path) - 5] = '\0';
	if (!stat(folder, &st) && S_ISDIR(st.st_mode) &&
	    import_atts(is, folder, &it))
		goto out_release;
	import_add(is, &it);
out_release:
	item_release(&it);
}

/* Is there a document file for the folder ents[i] among the n entries? */
static bool has_doc_file(struct dirent **ents, int n, const char *folder)
{
	for (int i = 0; i < n; i++) {
		const char *f = ents[i]->d_name;
		size_t len = strlen(folder);

		if (!strncmp(f, folder, len) && !strcmp(f + len, ".json"))
			return true;
	}
	return false;
}

/* A directory of NAME.json files and NAME/ attachment folders; at the
 * top, _design/ holds the design documents the same way. */
static int import_dir(struct import_state *is, const char *dir,
		      const char *prefix)
{
	struct dirent **ents;
	char path[PATH_MAX];
	struct stat st;
	int n = scandir(dir, &ents, dot_filter, name_cmp);

	if (n < 0)
		return fail(is->c, "%s: %s", dir, strerror(errno));
	for (int i = 0; i < n && !is->err; i++) {
		const char *name = ents[i]->d_name;

		int rc = path_join(path, sizeof(path), dir, name, "");

		if (!rc && stat(path, &st))
			rc = -errno;
		if (rc) {
			import_failed(is, name, "%s", barrel_strerror(rc));
		} else if (S_ISDIR(st.st_mode) && !*prefix &&
			   !strcmp(name, "_design")) {
			import_dir(is, path, DOC_DESIGN_PREFIX);
		} else if (S_ISDIR(st.st_mode)) {
			if (!has_doc_file(ents, n, name))
				import_failed(is, path, "attachments of no "
					      "document (no %s.json); not "
					      "imported", name);
		} else if (S_ISREG(st.st_mode) && ends_with_json(name)) {
			import_file(is, dir, name, prefix);
		} else {
			import_failed(is, path, "not a document (no .json "
				      "ending); not imported");
		}
	}
	dirents_free(ents, n);
	return 0;
}

/* An attachment of an _all_docs document: its inline data into it->atts;
 * 0, 1 when skipped (a stub, said), -1 when the document fails (said). */
static int import_json_att(struct import_state *is, struct import_item *it,
			   const char *name, struct json_object *entry)
{
	struct json_object *data, *type, *revpos;
	struct doc_att *a = &it->atts[it->natts];
	int rc;

	if (!json_object_is_type(entry, json_type_object)) {
		import_failed(is, it->what, "attachment %s: not an object",
			      name);
		return -1;
	}
	if (!json_object_object_get_ex(entry, "data", &data) ||
	    !json_object_is_type(data, json_type_string)) {
		/* The failure is counted, the document still imported. */
		import_failed(is, it->what, "attachment %s: no data (a stub: "
			      "export with --attachments); not imported",
			      name);
		return 1;
	}
	a->name = strdup(name);
	a->content_type = strdup(json_object_object_get_ex(entry,
			"content_type", &type) && json_object_is_type(type,
			json_type_string) ? json_object_get_string(type) :
			DEFAULT_TYPE);
	if (json_object_object_get_ex(entry, "revpos", &revpos) &&
	    json_object_is_type(revpos, json_type_int) &&
	    json_object_get_int64(revpos) > 0)   /* kept by replicated writes */
		a->revpos = (uint64_t)json_object_get_int64(revpos);
	it->natts++;
	rc = a->name && a->content_type ? 0 : -ENOMEM;
	if (!rc)
		rc = docdb_att_from_base64(is->ds->d, json_object_get_string(data),
				     (size_t)json_object_get_string_len(data),
				     a);
	if (rc) {
		import_failed(is, it->what, "attachment %s: %s", name,
			      rc == BARREL_E_INVALID ? "data is not base64" :
			      barrel_strerror(rc));
		return -1;
	}
	return 0;
}

/* One document of an _all_docs or _bulk_docs file. Its "_rev" is kept
 * (new_edits=false, as replication does); without one it is a new
 * revision on the winner. Inline attachments are streamed in first. */
static void import_json_doc(struct import_state *is, struct json_object *doc,
			    const char *what)
{
	struct import_item it = { .flags = DOC_PUT_NORMALIZE };
	struct json_object *id, *rev, *atts;
	const char *body;

	if (!(it.what = strdup(what)))
		goto out_nomem;
	if (!doc || !json_object_is_type(doc, json_type_object)) {
		import_failed(is, what, "no document (export _all_docs with "
			      "include_docs=true)");
		goto out_release;
	}
	if (!json_object_object_get_ex(doc, "_id", &id) ||
	    !json_object_is_type(id, json_type_string)) {
		import_failed(is, what, "no \"_id\"");
		goto out_release;
	}
	if (!(it.id = strdup(json_object_get_string(id))))
		goto out_nomem;
	it.flags |= json_object_object_get_ex(doc, "_rev", &rev) ?
		    DOC_PUT_REPLICATED : DOC_PUT_ON_WINNER;
	if (json_object_object_get_ex(doc, "_attachments", &atts) &&
	    json_object_is_type(atts, json_type_object)) {
		size_t n = (size_t)json_object_object_length(atts);

		if (!(it.atts = calloc(n + 1, sizeof(*it.atts))))
			goto out_nomem;
		json_object_object_foreach(atts, name, entry)
			if (import_json_att(is, &it, name, entry) < 0)
				goto out_release;
		json_object_object_del(doc, "_attachments");
	}
	body = json_object_to_json_string_length(doc, JSON_OUT, &it.len);
	if (!body || !(it.body = strdup(body)))
		goto out_nomem;
	import_add(is, &it);
	goto out_release;
out_nomem:
	import_failed(is, what, "%s", strerror(ENOMEM));
out_release:
	item_release(&it);
}

/* An _all_docs file (rows[].doc) or a _bulk_docs one (docs[]). */
static int import_json(struct import_state *is)
{
	struct json_object *root = NULL, *list, *row, *doc;
	struct json_tokener *tok = json_tokener_new_ex(BODY_MAX_DEPTH + 8);
	enum json_tokener_error jerr;
	bool rows = true;
	char *text = NULL, what[64];
	size_t len = 0, end;
	int rc, status = 0;

	if (!tok)
		return fail(is->c, "%s", strerror(ENOMEM));
	if ((rc = read_path(is->src, SIZE_MAX / 2, &text, &len))) {
		status = fail(is->c, "%s: %s", is->src, barrel_strerror(rc));
		goto out_free;
	}
	if (len > INT_MAX) {
		status = fail(is->c, "%s: too large for one JSON text",
			      is->src);
		goto out_free;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	root = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	while (root && end < len && text[end] && strchr(" \t\r\n", text[end]))
		end++;
	if (!root || jerr != json_tokener_success || end < len) {
		status = fail(is->c, "%s: not JSON: %s at byte %zu", is->src,
			      jerr == json_tokener_continue ?
			      "unexpected end of text" :
			      jerr != json_tokener_success ?
			      json_tokener_error_desc(jerr) :
			      root ? "text after the value" : "incomplete",
			      end);
		goto out_free;
	}
	if (json_object_is_type(root, json_type_array)) {
		rows = false;           /* a bare list of documents */
		list = root;
	} else if (!json_object_object_get_ex(root, "rows", &list)) {
		rows = false;
		json_object_object_get_ex(root, "docs", &list);
	}
	if (!json_object_is_type(list, json_type_array)) {
		status = fail(is->c, "%s: neither _all_docs JSON (\"rows\") "
			      "nor _bulk_docs JSON (\"docs\")", is->src);
		goto out_free;
	}
	for (size_t i = 0; i < json_object_array_length(list) && !is->err;
	     i++) {
		row = json_object_array_get_idx(list, i);
		doc = row;
		if (rows && !json_object_object_get_ex(row, "doc", &doc))
			doc = NULL;
		snprintf(what, sizeof(what), "%s %zu", rows ? "row" : "doc",
			 i + 1);
		import_json_doc(is, doc, what);
	}
out_free:
	json_object_put(root);
	json_tokener_free(tok);
	free(text);
	return status;
}

int cmd_import(struct ctl *ctl, const struct cmd *c, int argc, char **argv)
{
	static const struct option longopts[] = { CTL_LONGOPTS, { 0 } };
	static const char *const names[] = { "DB", "SRC" };
	struct import_state *is;
	struct docs ds;
	struct stat st;
	bool dir;
	int opt, status;

	while ((opt = getopt_long(argc, argv, CTL_SHORTOPTS, longopts,
				  NULL)) != -1)
		if ((status = ctl_option(ctl, c, opt)) >= 0)
			return status;
	if ((status = operands(c, argc, argv, names, 2, 2)) ||
	    (status = check_db_name(c, argv[optind])))
		return status;
	if (strcmp(argv[optind + 1], "-") && stat(argv[optind + 1], &st))
		return fail(c, "%s: %s", argv[optind + 1], strerror(errno));
	dir = strcmp(argv[optind + 1], "-") && S_ISDIR(st.st_mode);
	if (!(is = calloc(1, sizeof(*is))))
		return fail(c, "%s", strerror(ENOMEM));
	is->c = c;
	is->ds = &ds;
	is->src = argv[optind + 1];
	if ((status = docs_open(ctl, c, argv[optind], true, &ds)))
		goto out_free;
	status = dir ? import_dir(is, is->src, "") : import_json(is);
	if (!is->err)
		import_flush(is);
	for (size_t i = 0; i < is->n; i++)
		item_release(&is->items[i]);
	printf("%s: imported %" PRIu64 " documents and %" PRIu64
	       " attachments from %s", argv[optind], is->docs, is->atts,
	       is->src);
	if (is->failed)
		printf("; %" PRIu64 " problem%s (see above)", is->failed,
		       is->failed == 1 ? "" : "s");
	printf("\n");
	if (!status && (is->failed || is->err))
		status = EXIT_TROUBLE;
	docs_close(&ds);
out_free:
	free(is);
	return out_flush(c, status);
}
