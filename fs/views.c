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

static int buf_set(struct fh *fh, const char *s, size_t len)
{
	char *p = malloc(len + 1);

	if (!p)
		return -ENOMEM;
	memcpy(p, s, len);
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
	const char *s;
	int rc;

	json_object_object_add(o, "version", json_object_new_string(PACKAGE_VERSION));
	json_object_object_add(o, "datadir", json_object_new_string(fs->datadir));
	pthread_mutex_lock(&fs->lock);
	for (struct fsdb *db = fs->dbs; db; db = db->next)
		if (!fsdb_enter(db)) {
			status_db(db, list);
			fsdb_leave(db);
		}
	pthread_mutex_unlock(&fs->lock);
	json_object_object_add(o, "databases", list);
	json_object_object_add(sync, "replications", json_object_new_array());
	json_object_object_add(o, "sync", sync);
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
					   JSON_C_TO_STRING_SPACED |
					   JSON_C_TO_STRING_NOSLASHESCAPE);
	rc = buf_set(fh, s, strlen(s));
	if (!rc && fh->len && (rc = buf_set(fh, fh->buf, fh->len + 1)) == 0)
		fh->buf[fh->len - 1] = '\n';
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
		rc = buf_set(fh, doc.body, doc.len);
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
			rev_format(parent, la, sizeof(la));
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

static int change_line(void *arg, const struct doc_row *row)
{
	struct fsdb *db = arg;
	json_object *o = json_object_new_object(), *ch = json_object_new_array();
	char rev[REV_STR_SIZE];
	const char *s;
	size_t len;
	struct stat st;
	int rc;

	json_object_object_add(o, "seq", json_object_new_int64((int64_t)row->seq));
	json_object_object_add(o, "id", json_object_new_string_len(row->id,
								 (int)row->idlen));
	for (size_t i = 0; i < row->nrevs; i++) {
		json_object *r = json_object_new_object();

		rev_format(&row->revs[i], rev, sizeof(rev));
		json_object_object_add(r, "rev", json_object_new_string(rev));
		json_object_array_add(ch, r);
	}
	json_object_object_add(o, "changes", ch);
	if (row->deleted)
		json_object_object_add(o, "deleted", json_object_new_boolean(1));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
					   JSON_C_TO_STRING_NOSLASHESCAPE);
	len = strlen(s);
	rc = fstat(db->changes_fd, &st) ? -errno : 0;
	if (!rc)
		rc = spool_write_all(db->changes_fd, s, len, (uint64_t)st.st_size);
	if (!rc)
		rc = spool_write_all(db->changes_fd, "\n", 1,
				     (uint64_t)st.st_size + len);
	json_object_put(o);
	db->changes_seq = row->seq;
	return rc;
}

int changes_update(struct fs *fs, struct fsdb *db)
{
	int rc = 0;

	pthread_mutex_lock(&db->changes_lock);
	if (db->changes_fd < 0)
		rc = benv_spool(fs->env, &db->changes_fd);
	if (!rc && !fsdb_enter(db)) {
		rc = docdb_changes(db->d, NULL, db->changes_seq, 0,
				   DOC_ROWS_ALL_LEAVES, change_line, db, NULL);
		fsdb_leave(db);
	}
	pthread_mutex_unlock(&db->changes_lock);
	return rc;
}

int changes_size(struct fs *fs, struct fsdb *db, off_t *size)
{
	struct stat st;
	int rc = changes_update(fs, db);

	if (!rc && fstat(db->changes_fd, &st))
		rc = -errno;
	*size = rc ? 0 : st.st_size;
	return rc;
}
