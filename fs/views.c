/*
 * The content of the mount's virtual files: .status, .rev/ID/REV.json,
 * .rev/ID/REV.diff, .rev/ID/conflicts/REV.json, and .changes (an
 * append-only spool per database, filled from the changes feed as
 * commits happen: DESIGN.md "What the virtual files hold").
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/docdiff.h"
#include "engine/log.h"
#include "fs/fs.h"
#include "sync/http.h"
#include "sync/jobs.h"

/* fh's content: len bytes of s, and a newline when nl. */
static int buf_set(struct fh *fh, const char *s, size_t len, bool nl)
{
	char *p = malloc(len + 2);

	if (!p)
		return -ENOMEM;
	memcpy(p, s, len);
	if (nl)
		p[len++] = '\n';
	p[len] = '\0';
	free(fh->buf);
	fh->buf = p;
	fh->len = len;
	return 0;
}

static int count_row(void *arg, const struct doc_row *row)
{
	(void)row;
	++*(uint64_t *)arg;
	return 0;
}

static void status_db(struct fsdb *db, json_object *list)
{
	json_object *o = json_object_new_object();
	struct bdb_stat st;
	uint64_t count = 0;

	if (bdb_stat(docdb_bdb(db->d), &st))
		memset(&st, 0, sizeof(st));
	docdb_all_docs(db->d, NULL, NULL, 0, NULL, 0, 0, count_row, &count);
	json_object_object_add(o, "name", json_object_new_string(db->name));
	json_object_object_add(o, "doc_count", json_object_new_int64((int64_t)count));
	json_object_object_add(o, "update_seq",
			       json_object_new_int64((int64_t)bdb_seq(docdb_bdb(db->d))));
	json_object_object_add(o, "disk_bytes",
			       json_object_new_int64((int64_t)st.disk_bytes));
	json_object_object_add(o, "live_bytes",
			       json_object_new_int64((int64_t)st.live_bytes));
	json_object_array_add(list, o);
}

static int render_status(struct fs *fs, struct fh *fh)
{
	json_object *o = json_object_new_object();
	json_object *list = json_object_new_array();
	json_object *sync = json_object_new_object();
	struct fsdb *first;
	const char *s;
	int rc;

	json_object_object_add(o, "version", json_object_new_string(PACKAGE_VERSION));
	json_object_object_add(o, "datadir", json_object_new_string(fs->datadir));
	pthread_mutex_lock(&fs->lock);
	first = fs->dbs;
	pthread_mutex_unlock(&fs->lock);
	/* entries are never freed while mounted; new ones are prepended */
	for (struct fsdb *db = first; db; db = db->next)
		if (!fsdb_enter(db)) {
			status_db(db, list);
			fsdb_leave(db);
		}
	json_object_object_add(o, "databases", list);
	if (fs->srv) {
		json_object_object_add(o, "socket",
				       json_object_new_string(fs->sock));
		if (srv_url(fs->srv))
			json_object_object_add(o, "url",
				json_object_new_string(srv_url(fs->srv)));
	}
	json_object_object_add(sync, "replications", jobs_status(fs->jobs));
	json_object_object_add(o, "sync", sync);
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
					   JSON_C_TO_STRING_SPACED |
					   JSON_C_TO_STRING_NOSLASHESCAPE);
	rc = buf_set(fh, s, strlen(s), true);
	json_object_put(o);
	return rc;
}

/* The stored body of revision key of n's document. */
static int render_rev(struct node *n, struct fh *fh)
{
	struct doc doc = { 0 };
	struct rev r;
	int rc = rev_parse(n->p.key, strlen(n->p.key), &r);

	if (!rc)
		rc = docdb_get(n->p.db->d, NULL, n->p.id, n->p.idlen, &r,
			       DOC_GET_DELETED, &doc);
	if (!rc)
		rc = buf_set(fh, doc.body, doc.len, false);
	doc_release(&doc);
	return fs_err(rc);
}

/* The body of a revision, or "" when it or its body is gone. */
static void body_of(struct node *n, const struct rev *r, struct doc *doc)
{
	if (!r || docdb_get(n->p.db->d, NULL, n->p.id, n->p.idlen, r,
			    DOC_GET_DELETED, doc))
		doc_release(doc);
}

static int render_diff(struct node *n, struct fh *fh)
{
	struct doc old = { 0 }, new = { 0 };
	struct revtree *tree = NULL;
	struct rev path[2], *parent = NULL;
	size_t np = 0;
	char la[DOC_MAX_ID + REV_STR_SIZE + 2], lb[sizeof(la)];
	char err[DOCDIFF_ERRLEN], *out;
	struct rev r;
	size_t len;
	int rc = rev_parse(n->p.key, strlen(n->p.key), &r);

	if (!rc)
		rc = docdb_tree(n->p.db->d, NULL, n->p.id, n->p.idlen, &tree,
				NULL);
	if (!rc && !(rc = docdb_get(n->p.db->d, NULL, n->p.id, n->p.idlen,
				    &r, DOC_GET_DELETED, &new))) {
		if (!revtree_path(tree, &r, path, 2, &np) && np == 2)
			parent = &path[1];
		body_of(n, parent, &old);
		snprintf(la, sizeof(la), "empty");
		if (parent)
			rev_text(parent, la);
		snprintf(la + strlen(la), sizeof(la) - strlen(la), ".json");
		snprintf(lb, sizeof(lb), "%s.json", n->p.key);
		rc = doc_diff(old.body ? old.body : "", old.len, la, new.body,
			      new.len, lb, 3, &out, &len, err);
		if (!rc) {
			free(fh->buf);
			fh->buf = out;
			fh->len = len;
		}
	}
	doc_release(&old);
	doc_release(&new);
	revtree_free(tree);
	return fs_err(rc);
}

int view_render(struct fs *fs, struct node *n, struct fh *fh)
{
	int rc;

	if (n->p.kind == NODE_STATUS)
		return render_status(fs, fh);
	if ((rc = fsdb_enter(n->p.db)))
		return rc;
	rc = n->p.kind == NODE_REVDIFF ? render_diff(n, fh) : render_rev(n, fh);
	fsdb_leave(n->p.db);
	return rc;
}

int view_size(struct fs *fs, struct node *n, off_t *size)
{
	struct fh fh = { 0 };
	int rc = view_render(fs, n, &fh);

	*size = (off_t)fh.len;
	free(fh.buf);
	return rc;
}

/* ---- .changes ---- */

/*
 * An open of .changes sees every document once, at its latest change,
 * then every later change appended (fh->buf, fh->seq). Its size only
 * grows while open; stat shows the largest of a fresh listing and every
 * open's content, so `tail -f` (which polls the size) follows it.
 */
static int change_line(void *arg, const struct doc_row *row)
{
	struct fh *fh = arg;
	json_object *o = json_object_new_object(), *ch = json_object_new_array();
	json_object *r = json_object_new_object();
	char rev[REV_STR_SIZE];
	const char *s;
	size_t len;
	int rc = 0;

	json_object_object_add(o, "seq", json_object_new_int64((int64_t)row->seq));
	json_object_object_add(o, "id", json_object_new_string_len(row->id,
								 (int)row->idlen));
	rev_text(&row->revs[0], rev);
	json_object_object_add(r, "rev", json_object_new_string(rev));
	json_object_array_add(ch, r);
	json_object_object_add(o, "changes", ch);
	if (row->deleted)
		json_object_object_add(o, "deleted", json_object_new_boolean(1));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
					   JSON_C_TO_STRING_NOSLASHESCAPE);
	len = strlen(s);
	if (fh->len + len + 2 > fh->cap) {
		size_t cap = (fh->len + len + 2) * 2;
		char *p = realloc(fh->buf, cap);

		if (!p)
			rc = -ENOMEM;
		else
			fh->buf = p, fh->cap = cap;
	}
	if (!rc) {
		memcpy(fh->buf + fh->len, s, len);
		fh->buf[fh->len + len] = '\n';
		fh->len += len + 1;
		fh->seq = row->seq;
	}
	json_object_put(o);
	return rc;
}

/* Append the changes after fh->seq (db entered). */
static int changes_more(struct fsdb *db, struct fh *fh)
{
	return fs_err(docdb_changes(db->d, NULL, fh->seq, 0, 0, change_line,
				    fh, NULL));
}

int changes_open(struct fs *fs, struct node *n, struct fh *fh)
{
	int rc = fsdb_enter(n->p.db);

	if (rc)
		return rc;
	moved_flush_db(fs, n->p.db);
	rc = changes_more(n->p.db, fh);
	fsdb_leave(n->p.db);
	if (rc)
		return rc;
	pthread_mutex_lock(&n->lock);
	fh->next_open = n->opens;
	n->opens = fh;
	pthread_mutex_unlock(&n->lock);
	return 0;
}

void changes_close(struct node *n, struct fh *fh)
{
	struct fh **pp;

	pthread_mutex_lock(&n->lock);
	for (pp = &n->opens; *pp && *pp != fh; pp = &(*pp)->next_open)
		;
	if (*pp)
		*pp = fh->next_open;
	pthread_mutex_unlock(&n->lock);
}

int changes_read(struct fh *fh, char *buf, size_t size, off_t off,
		 size_t *got)
{
	struct node *n = fh->node;
	int rc = fsdb_enter(n->p.db);

	if (rc)
		return rc;
	pthread_mutex_lock(&n->lock);
	if ((size_t)off + size > fh->len)
		rc = changes_more(n->p.db, fh);
	*got = 0;
	if (!rc && (size_t)off < fh->len) {
		*got = fh->len - (size_t)off < size ? fh->len - (size_t)off : size;
		memcpy(buf, fh->buf + off, *got);
	}
	pthread_mutex_unlock(&n->lock);
	fsdb_leave(n->p.db);
	return rc;
}

int changes_size(struct fs *fs, struct node *n, off_t *size)
{
	struct fh fresh = { 0 };
	size_t max;
	int rc;

	moved_flush_db(fs, n->p.db);
	rc = changes_more(n->p.db, &fresh);
	max = fresh.len;
	free(fresh.buf);
	pthread_mutex_lock(&n->lock);
	for (struct fh *fh = n->opens; !rc && fh; fh = fh->next_open) {
		rc = changes_more(n->p.db, fh);
		if (fh->len > max)
			max = fh->len;
	}
	pthread_mutex_unlock(&n->lock);
	*size = (off_t)max;
	return rc;
}
