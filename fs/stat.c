/*
 * Attributes of nodes: what stat shows, and chmod/chown/utimens/truncate.
 * Documents take their times from the revision unless utimens set one
 * for that revision; ownership and mode come from the fs table, else
 * from the mount's owner.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs.h"

static bool is_dir(enum node_kind k)
{
	return k == NODE_ROOT || k == NODE_DB || k == NODE_ATTDIR ||
	       k == NODE_DESIGN || k == NODE_REVROOT || k == NODE_REVDIR ||
	       k == NODE_CONFLICTS;
}

static void set_time(struct stat *st, struct timespec t)
{
	st->st_mtim = st->st_ctim = st->st_atim = t;
}

/* The record's mode and owner; its times unless they belong to another
 * revision than cur (a document changed since utimens). */
static void apply_rec(struct stat *st, const struct fsrec *r,
		      const struct rev *cur)
{
	st->st_mode = (st->st_mode & S_IFMT) | (r->mode & 07777);
	st->st_uid = r->uid;
	st->st_gid = r->gid;
	if (r->rev.gen && !rev_eq(&r->rev, cur))
		return;
	if (r->mtime.tv_sec || r->mtime.tv_nsec) {
		st->st_mtim = r->mtime;
		st->st_atim = r->atime;
		st->st_ctim = r->ctime;
	}
}

/* The fs-table path of a node's attributes, or NULL if it has none. */
char *node_attr_path(struct fs *fs, struct node *n)
{
	struct node *dir = node_get(fs, n->parent);

	switch (n->p.kind) {
	case NODE_DB:
		return strdup("/");     /* no file name can be "/" */
	case NODE_DOC:
	case NODE_ATTDIR:
	case NODE_ATT:
	case NODE_SCRATCH:
		return dir ? node_path(dir, n->name) : NULL;
	default:
		return NULL;
	}
}

/* Documents, attachments and revision files: size and times from the
 * stored revision. */
static int stat_doc(struct node *n, struct stat *st, struct rev *cur)
{
	const struct rev *rev = NULL;
	struct doc doc = { 0 };
	struct rev r;
	unsigned flags = 0;
	int rc;

	if (n->p.kind == NODE_REVFILE || n->p.kind == NODE_CONFLICT) {
		if (rev_parse(n->p.key, strlen(n->p.key), &r))
			return -ENOENT;
		rev = &r;
		flags = DOC_GET_DELETED;
	}
	rc = docdb_get(n->p.db->d, NULL, n->p.id, n->p.idlen, rev, flags, &doc);
	if (rc) {
		doc_release(&doc);
		return fs_err(rc);
	}
	set_time(st, (struct timespec){ doc.time_ms / 1000,
					(doc.time_ms % 1000) * 1000000 });
	st->st_size = (off_t)doc.len;
	*cur = doc.rev;
	if (n->p.kind == NODE_ATT) {
		rc = -ENOENT;
		for (size_t i = 0; i < doc.natts; i++)
			if (!strcmp(doc.atts[i].name, n->p.key)) {
				st->st_size = (off_t)doc.atts[i].length;
				rc = 0;
			}
	} else if (n->p.kind == NODE_ATTDIR) {
		st->st_size = (off_t)doc.natts;
	}
	doc_release(&doc);
	return rc;
}

static int stat_scratch(struct node *n, const struct fsrec *r,
			struct stat *st)
{
	struct stat sp;

	st->st_mode = r->kind == FSREC_LINK ? S_IFLNK : S_IFREG;
	st->st_size = (off_t)r->size;
	pthread_mutex_lock(&n->lock);
	if (n->spool >= 0 && !fstat(n->spool, &sp))
		st->st_size = sp.st_size;
	pthread_mutex_unlock(&n->lock);
	return 0;
}

/* Was n's document ever written? */
static bool has_history(struct node *n)
{
	struct revtree *tree = NULL;
	int rc = docdb_tree(n->p.db->d, NULL, n->p.id, n->p.idlen, &tree, NULL);

	revtree_free(tree);
	return rc == 0;
}

static int stat_kind(struct fs *fs, struct node *n, struct stat *st,
		     struct rev *cur)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	set_time(st, now);
	st->st_mode = is_dir(n->p.kind) ? S_IFDIR | 0755 : S_IFREG | 0644;
	if (viewdir_kind(n->p.kind))
		return viewdir_stat(fs, n, st);
	switch (n->p.kind) {
	case NODE_STATUS:
	case NODE_REVDIFF:
		st->st_mode = S_IFREG | 0444;
		return view_size(fs, n, &st->st_size);
	case NODE_CHANGES:
		st->st_mode = S_IFREG | 0444;
		return changes_size(fs, n, &st->st_size);
	case NODE_DOC:
		if (n->pending)
			return 0;
		return stat_doc(n, st, cur);
	case NODE_ATTDIR:
	case NODE_ATT:
		return n->pending ? 0 : stat_doc(n, st, cur);
	case NODE_REVFILE:
	case NODE_CONFLICT:
		st->st_mode = S_IFREG | 0444;
		return stat_doc(n, st, cur);
	case NODE_REVDIR:
		return has_history(n) ? 0 : -ENOENT;
	default:
		return 0;
	}
}

/* An attachment folder without attributes of its own has its
 * document's owner, and its mode with x wherever r is. */
static bool folder_of_doc(struct node *n, const char *path, struct fsrec *r)
{
	size_t len = strlen(path);
	char *doc = malloc(len + 6);
	bool found;

	if (!doc)
		return false;
	memcpy(doc, path, len);               /* "ID" -> "ID.json" */
	memcpy(doc + len, ".json", 6);
	found = !fsrec_get(n->p.db, NULL, doc, r);
	free(doc);
	if (found) {
		r->mode |= (r->mode & 0444) >> 2;
		r->rev = (struct rev){ 0 };
		r->mtime = (struct timespec){ 0 };
	}
	return found;
}

int node_stat(struct fs *fs, struct node *n, struct stat *st)
{
	struct fsrec r = { 0 };
	struct rev cur = { 0 };
	bool has_rec = false;
	char *path = NULL;
	int rc;

	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = 4096;
	st->st_nlink = 1;
	if (n->p.kind == NODE_ROOT || n->p.kind == NODE_STATUS)
		return stat_kind(fs, n, st, &cur);
	if ((rc = fsdb_enter(n->p.db)))
		return rc;
	if ((path = node_attr_path(fs, n))) {
		rc = fsrec_get(n->p.db, NULL, path, &r);
		has_rec = !rc;
		if (rc == BARREL_E_NOTFOUND && n->p.kind == NODE_ATTDIR)
			has_rec = folder_of_doc(n, path, &r);
		else if (rc && rc != BARREL_E_NOTFOUND)
			goto out;
	}
	if (n->p.kind == NODE_SCRATCH)
		rc = has_rec ? stat_scratch(n, &r, st) : -ENOENT;
	else
		rc = stat_kind(fs, n, st, &cur);
	if (!rc && has_rec)
		apply_rec(st, &r, &cur);
out:
	fsrec_release(&r);
	free(path);
	fsdb_leave(n->p.db);
	st->st_nlink = S_ISDIR(st->st_mode) ? 2 : 1;
	st->st_blocks = (st->st_size + 511) / 512;
	return fs_err(rc);
}

/* ---- changing attributes ---- */

static mode_t default_mode(const struct node *n)
{
	return n->p.kind == NODE_DB || n->p.kind == NODE_ATTDIR ? 0755 : 0644;
}

/* chmod, chown, utimens: the node's fs record. */
static int set_meta(struct fs *fs, struct node *n, const struct stat *a,
		    int valid)
{
	struct stat cur;
	struct fsrec r = { 0 };
	struct timespec now;
	char *path = node_attr_path(fs, n);
	int rc;

	if (!path)
		return -EACCES;
	if ((rc = node_stat(fs, n, &cur)))
		goto out;
	rc = fsrec_get(n->p.db, NULL, path, &r);
	if (rc == BARREL_E_NOTFOUND)
		r = (struct fsrec){ .kind = FSREC_ATTRS,
				    .mode = default_mode(n) };
	else if (rc)
		goto out;
	clock_gettime(CLOCK_REALTIME, &now);
	r.mode = valid & FUSE_SET_ATTR_MODE ? a->st_mode & 07777 :
		 cur.st_mode & 07777;
	r.uid = valid & FUSE_SET_ATTR_UID ? a->st_uid : cur.st_uid;
	r.gid = valid & FUSE_SET_ATTR_GID ? a->st_gid : cur.st_gid;
	r.mtime = valid & FUSE_SET_ATTR_MTIME_NOW ? now :
		  valid & FUSE_SET_ATTR_MTIME ? a->st_mtim : cur.st_mtim;
	r.atime = valid & FUSE_SET_ATTR_ATIME_NOW ? now :
		  valid & FUSE_SET_ATTR_ATIME ? a->st_atim : cur.st_atim;
	r.ctime = now;
	if (valid & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME |
		     FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_ATIME_NOW))
		r.flags |= FSREC_TIMES;
	if (n->p.kind == NODE_DOC) {
		struct doc doc = { 0 };

		if (!docdb_get(n->p.db->d, NULL, n->p.id, n->p.idlen, NULL, 0,
			       &doc))
			r.rev = doc.rev;
		doc_release(&doc);
	}
	rc = fsrec_put(n->p.db, path, &r);
out:
	fsrec_release(&r);
	free(path);
	return fs_err(rc);
}

int node_setattr(struct fs *fs, fuse_req_t req, struct node *n,
		 struct stat *attr, int valid, struct fh *fh)
{
	int rc = 0;

	(void)req;
	if (n->p.kind == NODE_ROOT)
		return -EPERM;
	if ((rc = fsdb_enter(n->p.db)))
		return rc;
	if (valid & FUSE_SET_ATTR_SIZE)
		rc = node_truncate(fs, n, attr->st_size, fh);
	if (!rc && (valid & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
			     FUSE_SET_ATTR_GID | FUSE_SET_ATTR_ATIME |
			     FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
			     FUSE_SET_ATTR_MTIME_NOW)))
		rc = set_meta(fs, n, attr, valid);
	fsdb_leave(n->p.db);
	return rc;
}
