/*
 * The FUSE callbacks (libfuse low-level API). Each one finds its nodes,
 * calls a helper that returns 0 or a negative errno, and replies exactly
 * once — the two layers of passthrough_ll.c.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "engine/log.h"
#include "fs/fs.h"

#define XATTR_REV "user.barrel.rev"
#define XATTR_SEQ "user.barrel.seq"
#define XATTR_CONFLICTS "user.barrel.conflicts"

static struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct fh *fh_of(struct fuse_file_info *fi)
{
	return (struct fh *)(uintptr_t)fi->fh;
}

/* Files whose content changes without a write through the mount are
 * never cached. */
static bool volatile_kind(enum node_kind k)
{
	return k == NODE_STATUS || k == NODE_CHANGES || viewdir_kind(k);
}

static double attr_timeout(struct fs *fs, const struct node *n)
{
	return volatile_kind(n->p.kind) ? 0 : fs->opts.cache_timeout;
}

/* Names in .views/ come and go with the index: neither they nor their
 * absence are cached. in_views: the name is in a directory there. */
static double entry_timeout(struct fs *fs, bool in_views)
{
	return in_views ? 0 : fs->opts.cache_timeout;
}

static void reply_err(fuse_req_t req, int rc)
{
	fuse_reply_err(req, rc < 0 ? -rc : rc);
}

/* Fill e for n, whose lookup was just counted (undone on error). */
static int entry_of(struct fs *fs, struct node *n, struct fuse_entry_param *e)
{
	int rc;

	memset(e, 0, sizeof(*e));
	if ((rc = node_stat(fs, n, &e->attr))) {
		node_forget(fs, n->ino, 1);
		return rc;
	}
	e->ino = n->ino;
	e->attr_timeout = attr_timeout(fs, n);
	e->entry_timeout = entry_timeout(fs, viewdir_kind(n->p.kind) &&
					     n->p.kind != NODE_VIEWS);
	return 0;
}

/* Count one lookup of (parent, name) as p, fill e (0 or -errno; the
 * lookup is undone on error). */
static int enter(struct fs *fs, fuse_ino_t parent, const char *name,
		 struct proto *p, struct fuse_entry_param *e)
{
	struct node *n = node_enter(fs, parent, name, p);

	return n ? entry_of(fs, n, e) : -ENOMEM;
}

/* What name in parent is, or an errno. */
static int classify(struct fs *fs, fuse_ino_t parent, const char *name,
		    struct node **dir, struct proto *p)
{
	*dir = node_get(fs, parent);
	if (!*dir)
		return -ENOENT;
	return name_classify(fs, *dir, name, p);
}

static bool hidden(struct fs *fs, const struct proto *p)
{
	return p->kind == NODE_DOC && moved_has(fs, p->db, p->id, p->idlen);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct proto p;
	struct node *dir, *old;
	int rc = classify(fs, parent, name, &dir, &p);

	if (rc == -EINVAL)
		rc = -ENOENT;
	if (!rc && p.kind == NODE_DB && !p.db)
		rc = -ENOENT;
	if (!rc && hidden(fs, &p))
		rc = -ENOENT;
	if (!rc && (p.kind == NODE_REVROOT || dir->p.kind == NODE_REVROOT))
		moved_flush_db(fs, p.db);       /* history is looked at */
	if (!rc && p.kind == NODE_SCRATCH && (old = node_find(fs, parent, name)) &&
	    old->pending && old->p.kind == NODE_ATTDIR) {
		proto_release(&p);         /* a folder made by mkdir */
		p.kind = NODE_ATTDIR;
		p.db = old->p.db;
		p.id = strndup(old->p.id, old->p.idlen);
		p.idlen = old->p.idlen;
	}
	if (!rc)
		rc = enter(fs, parent, name, &p, &e);
	proto_release(&p);
	if (rc == -ENOENT) {
		memset(&e, 0, sizeof(e));
		e.entry_timeout = entry_timeout(fs, dir &&
						viewdir_kind(dir->p.kind));
		fuse_reply_entry(req, &e);
	} else if (rc) {
		reply_err(req, rc);
	} else {
		fuse_reply_entry(req, &e);
	}
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	node_forget(fs_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		node_forget(fs_of(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	struct stat st;
	int rc = n ? node_stat(fs, n, &st) : -ENOENT;

	(void)fi;
	if (rc)
		reply_err(req, rc);
	else
		fuse_reply_attr(req, &st, attr_timeout(fs, n));
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int valid, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	struct stat st;
	int rc = n ? node_setattr(fs, req, n, attr, valid,
				  fi ? fh_of(fi) : NULL) : -ENOENT;

	if (!rc)
		rc = node_stat(fs, n, &st);
	if (rc)
		reply_err(req, rc);
	else
		fuse_reply_attr(req, &st, attr_timeout(fs, n));
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	struct fsrec r = { 0 };
	int rc = !n || n->p.kind != NODE_SCRATCH ? -EINVAL :
		 fsdb_enter(n->p.db);

	if (!rc) {
		rc = fs_err(fsrec_get(n->p.db, NULL, n->p.key, &r));
		fsdb_leave(n->p.db);
	}
	if (!rc && r.kind != FSREC_LINK)
		rc = -EINVAL;
	if (rc)
		reply_err(req, rc);
	else
		fuse_reply_readlink(req, r.data);
	fsrec_release(&r);
}

/* A new scratch record: an empty file, or a symlink to target. */
static int scratch_new(fuse_req_t req, struct proto *p, mode_t mode,
		       const char *target)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fsrec r = { .kind = target ? FSREC_LINK : FSREC_FILE,
			   .mode = target ? 0777 : mode & 07777,
			   .uid = ctx->uid, .gid = ctx->gid };
	int rc;

	clock_gettime(CLOCK_REALTIME, &r.mtime);
	r.ctime = r.atime = r.mtime;
	if (target) {
		r.data = (char *)target;
		r.dlen = r.size = strlen(target);
	}
	rc = fsrec_put(p->db, p->key, &r);
	return fs_err(rc);
}

/* Refuse to make kind p as a new file: -EEXIST, -EACCES, or 0. */
static int can_create(struct fs *fs, struct node *dir, const char *name,
		      const struct proto *p)
{
	struct node *n = node_find(fs, dir->ino, name);
	struct stat st;

	switch (p->kind) {
	case NODE_DOC:
	case NODE_ATT:
	case NODE_SCRATCH:
		break;
	default:
		return -EACCES;
	}
	if (n && !node_stat(fs, n, &st))
		return -EEXIST;
	return 0;
}

/* Make the file (not yet open): documents and attachments are pending
 * until their first commit; scratch files exist at once. */
static int make_file(struct fs *fs, fuse_req_t req, fuse_ino_t parent,
		     const char *name, mode_t mode, struct fuse_entry_param *e,
		     struct node **out)
{
	struct node *dir, *n;
	struct proto p;
	struct rev moved;
	bool was_moved = false;
	int rc = classify(fs, parent, name, &dir, &p);

	if (!rc)
		rc = can_create(fs, dir, name, &p);
	if (!rc && (rc = fsdb_enter(p.db)) == 0) {
		if (p.kind == NODE_SCRATCH)
			rc = scratch_new(req, &p, mode, NULL);
		else if (p.kind == NODE_DOC)
			was_moved = moved_take(fs, p.db, p.id, p.idlen, &moved);
		fsdb_leave(p.db);
	}
	if (rc || !(n = node_enter(fs, parent, name, &p))) {
		proto_release(&p);
		return rc ? rc : -ENOMEM;
	}
	pthread_mutex_lock(&n->lock);
	if (n->p.kind != NODE_SCRATCH) {
		struct stat st;

		n->pending = node_stat(fs, n, &st) != 0;
		n->has_opened = was_moved;
		n->opened = moved;
		n->creator = (struct fsrec){ .kind = FSREC_ATTRS,
			.mode = mode & 07777, .uid = fuse_req_ctx(req)->uid,
			.gid = fuse_req_ctx(req)->gid };
	}
	pthread_mutex_unlock(&n->lock);
	if ((rc = entry_of(fs, n, e)))
		return rc;
	*out = n;
	return 0;
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	struct fuse_entry_param e;
	struct node *n;
	int rc = S_ISREG(mode) ? make_file(fs_of(req), req, parent, name,
					   mode, &e, &n) : -EPERM;

	(void)rdev;
	if (rc)
		reply_err(req, rc);
	else
		fuse_reply_entry(req, &e);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct node *n;
	struct fh *fh;
	int rc = make_file(fs, req, parent, name, mode, &e, &n);

	if (!rc && (rc = fh_open(fs, req, n, fi->flags, &fh)))
		node_forget(fs, n->ino, 1);
	if (rc) {
		reply_err(req, rc);
		return;
	}
	fi->fh = (uintptr_t)fh;
	fi->direct_io = n->p.kind == NODE_DOC;
	if (fuse_reply_create(req, &e, fi)) {
		node_close(fs, n);
		fh_release(fs, fh);
	}
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct node *dir;
	struct proto p;
	int rc = classify(fs, parent, name, &dir, &p);

	if (!rc && p.kind != NODE_SCRATCH)
		rc = p.kind == NODE_DOC || p.kind == NODE_ATT ? -EPERM : -EACCES;
	if (!rc)
		rc = can_create(fs, dir, name, &p);
	if (!rc && !(rc = fsdb_enter(p.db))) {
		rc = scratch_new(req, &p, 0777, link);
		fsdb_leave(p.db);
	}
	if (!rc)
		rc = enter(fs, parent, name, &p, &e);
	proto_release(&p);
	if (rc)
		reply_err(req, rc);
	else
		fuse_reply_entry(req, &e);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	(void)ino;
	(void)newparent;
	(void)newname;
	fuse_reply_err(req, EPERM);
}

/* mkdir in a database or _design/: an attachment folder, empty until a
 * file is written into it. */
static int make_attdir(struct fs *fs, struct node *dir, const char *name,
		       struct proto *p)
{
	struct node *n;

	if (p->kind == NODE_ATTDIR)
		return -EEXIST;
	if (p->kind != NODE_SCRATCH || fsrec_exists(dir->p.db, p->key) ||
	    !name_as_attdir(dir, name, p))
		return -EPERM;
	if (!(n = node_enter(fs, dir->ino, name, p)))
		return -ENOMEM;
	n->pending = true;
	node_forget(fs, n->ino, 1);
	return 0;
}

/* mkdir of name (p) in dir: a database at the root, an attachment
 * folder in a database or _design/, nothing elsewhere. */
static int make_dir(struct fs *fs, struct node *dir, const char *name,
		    struct proto *p)
{
	struct fsdb *db;
	int rc;

	if (p->kind == NODE_DB) {
		if (p->db)
			return -EEXIST;
		if ((rc = fsdb_create(fs, name, &db)))
			return rc;
		p->db = db;
		return 0;
	}
	if (dir->p.kind == NODE_DB || dir->p.kind == NODE_DESIGN)
		return make_attdir(fs, dir, name, p);
	return dir->p.kind == NODE_ATTDIR ? -EPERM : -EACCES;
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct node *dir;
	struct proto p;
	int rc = classify(fs, parent, name, &dir, &p);

	(void)mode;
	if (!rc)
		rc = make_dir(fs, dir, name, &p);
	if (!rc)
		rc = enter(fs, parent, name, &p, &e);
	proto_release(&p);
	if (rc)
		reply_err(req, rc);
	else
		fuse_reply_entry(req, &e);
}

/*
 * rm ID.json: hidden at once; the deletion is written when the grace
 * period ends or history is next looked at, unless ID.json is written
 * again first (mv across file systems and some editors unlink, then
 * create: one revision, never a deletion and a re-creation). A document
 * in conflict loses its winner at once, so the other branch shows.
 */
static int remove_doc(struct fs *fs, const struct proto *p)
{
	struct doc_put put = { .id = p->id, .idlen = p->idlen, .deleted = true,
			       .flags = DOC_PUT_ON_WINNER };
	struct rev *conflicts = NULL;
	struct doc doc = { 0 };
	size_t nconflicts = 0;
	int rc = docdb_get(p->db->d, NULL, p->id, p->idlen, NULL, DOC_GET_TREE,
			   &doc);

	if (!rc)
		rc = revtree_conflicts(doc.tree, &conflicts, &nconflicts);
	if (!rc && !nconflicts)
		moved_add(fs, p->db, p->id, p->idlen, &doc.rev);
	else if (!rc && !(rc = fs_put(fs, p->db, &put, 1)))
		rc = put.rc;
	free(conflicts);
	doc_release(&doc);
	return fs_err(rc);
}

/* rm of a document, attachment, conflict leaf or scratch file. */
static int remove_file(struct fs *fs, fuse_req_t req, struct node *dir,
		       const char *name)
{
	struct doc_put put = { 0 };
	struct doc_att att = { 0 };
	struct node *n;
	struct proto p;
	struct stat st;
	struct rev r;
	int rc = name_classify(fs, dir, name, &p);

	(void)req;
	if (rc)
		return rc;
	if (!(rc = fsdb_enter(p.db))) {
		put.id = p.id;
		put.idlen = p.idlen;
		switch (p.kind) {
		case NODE_DOC:
			n = node_find(fs, dir->ino, name);
			if (n && n->pending) {
				n->pending = false;
				break;
			}
			rc = hidden(fs, &p) ? -ENOENT : remove_doc(fs, &p);
			break;
		case NODE_ATT:
			att.name = p.key;
			att.remove = true;
			rc = att_remove(fs, &p, &att);
			break;
		case NODE_CONFLICT:
			if ((rc = fs_err(rev_parse(p.key, strlen(p.key), &r))))
				break;
			put.deleted = true;
			put.parent = &r;
			rc = fs_err(fs_put(fs, p.db, &put, 1)) ?:
			     fs_err(put.rc);
			break;
		case NODE_SCRATCH:
			rc = fs_err(fsrec_del(p.db, p.key));
			break;
		default:
			rc = (n = node_find(fs, dir->ino, name)) &&
			     !node_stat(fs, n, &st) && S_ISDIR(st.st_mode) ?
			     -EISDIR : -EACCES;
		}
		fsdb_leave(p.db);
	}
	if (!rc && (n = node_find(fs, dir->ino, name)))
		node_unlink(fs, n);
	proto_release(&p);
	return rc;
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct node *dir = node_get(fs, parent);

	reply_err(req, dir ? remove_file(fs, req, dir, name) : -ENOENT);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct node *dir = node_get(fs, parent), *n;
	struct proto p = { 0 };
	struct stat st;
	int rc = dir ? name_classify(fs, dir, name, &p) : -ENOENT;

	if (!rc && p.kind == NODE_DB)
		rc = p.db ? fsdb_remove(fs, name, true) : -ENOENT;
	else if (!rc && p.kind == NODE_ATTDIR)
		rc = (n = node_find(fs, parent, name)) && n->pending ? 0 :
		     -ENOTEMPTY;
	else if (!rc && (p.kind == NODE_DOC || p.kind == NODE_SCRATCH))
		rc = (n = node_find(fs, parent, name)) && !node_stat(fs, n, &st) ?
		     -ENOTDIR : -ENOENT;
	else if (!rc)
		rc = -EACCES;
	if (!rc && (n = node_find(fs, parent, name)))
		node_unlink(fs, n);
	if (!rc && p.kind == NODE_DB)
		inval_entry(fs, parent, name);
	proto_release(&p);
	reply_err(req, rc);
}

/* ---- rename ---- */

struct move {
	struct fs *fs;
	fuse_req_t req;
	struct node *sdir, *ddir, *src;       /* src: may be NULL */
	const char *sname, *dname;
	struct proto s, d;
	int fd;                   /* the content moved, as a spool */
};

/* The content of scratch file m->s into m->fd. */
static int scratch_content(struct move *m)
{
	struct bsnap *snap = NULL;
	struct fsrec r = { 0 };
	int rc = benv_spool(m->fs->env, &m->fd);

	if (!rc && m->src) {
		pthread_mutex_lock(&m->src->lock);
		if (m->src->spool >= 0)
			rc = spool_copy(m->src->spool, m->fd) ?: 1;
		pthread_mutex_unlock(&m->src->lock);
		if (rc)
			return rc < 0 ? rc : 0;
	}
	if (!rc && !(rc = bdb_snapshot(docdb_bdb(m->s.db->d), &snap)) &&
	    !(rc = fsrec_get(m->s.db, snap, m->s.key, &r)))
		rc = r.kind == FSREC_FILE ? fsrec_to_spool(snap, &r, m->fd) :
		     -EXDEV;
	fsrec_release(&r);
	bsnap_release(snap);
	return fs_err(rc);
}

/* A stand-in node for committing to the destination name. */
static void dest_node(struct move *m, struct node *n)
{
	memset(n, 0, sizeof(*n));
	n->parent = m->ddir->ino;
	n->name = (char *)m->dname;
	n->p = m->d;
	n->spool = -1;
}

/* The scratch file's mode, owner and times become the document's (rsync
 * sets them on its temporary file before the rename), for revision rev. */
static int keep_attrs(struct move *m, const struct rev *rev)
{
	struct fsrec r = { 0 };
	char *path = node_path(m->ddir, m->dname);
	int rc = path ? fsrec_get(m->s.db, NULL, m->s.key, &r) : -ENOMEM;

	if (!rc && !(r.flags & FSREC_TIMES) && r.mode == 0644 &&
	    r.uid == m->fs->uid && r.gid == m->fs->gid)
		goto out;                 /* nothing but the defaults */
	if (!rc) {
		fsrec_release(&r);
		r.kind = FSREC_ATTRS;
		r.size = r.blob = 0;
		r.rev = *rev;
		rc = fsrec_put(m->d.db, path, &r);
	}
out:
	fsrec_release(&r);
	free(path);
	return fs_err(rc);
}

/* The content of scratch file m->s into r->data when it is inline and
 * no writer has it open (r->kind 0 otherwise: it is in m->fd). */
static int scratch_body(struct move *m, struct fsrec *r)
{
	bool open = false;
	int rc;

	if (m->src) {
		pthread_mutex_lock(&m->src->lock);
		open = m->src->spool >= 0;
		pthread_mutex_unlock(&m->src->lock);
	}
	if (!open && !(rc = fsrec_get(m->s.db, NULL, m->s.key, r)) &&
	    r->kind == FSREC_FILE && !r->blob)
		return 0;
	fsrec_release(r);
	r->kind = 0;
	return scratch_content(m);
}

/* An editor's save: a scratch file renamed onto ID.json is one revision
 * on the revision that process opened (DESIGN.md "Writing a document"). */
static int scratch_to_doc(struct move *m)
{
	struct doc cur = { 0 };
	struct fsrec body = { 0 };
	struct node dst;
	struct rev base, rev;
	bool has_base;
	int rc = scratch_body(m, &body);

	if (rc)
		return rc;
	has_base = moved_take(m->fs, m->d.db, m->d.id, m->d.idlen, &base);
	if (note_find(m->fs, m->d.db, m->d.id, fuse_req_ctx(m->req)->pid,
		      &rev)) {
		base = rev;
		has_base = true;
	}
	if (!has_base && !docdb_get(m->d.db->d, NULL, m->d.id, m->d.idlen,
				    NULL, 0, &cur)) {
		base = cur.rev;
		has_base = true;
	}
	dest_node(m, &dst);
	/* cur, when read, is base's body: no second read to compare */
	if (body.kind)
		rc = doc_commit(m->fs, &dst, body.data, body.dlen,
				has_base ? &base : NULL, cur.body, cur.len,
				&rev, NULL);
	else
		rc = doc_commit_fd(m->fs, &dst, m->fd, has_base ? &base : NULL,
				   cur.body, cur.len, &rev);
	doc_release(&cur);
	fsrec_release(&body);
	if (rc == -EINVAL && has_base)
		moved_add(m->fs, m->d.db, m->d.id, m->d.idlen, &base);
	if (!rc)
		rc = keep_attrs(m, &rev);
	if (!rc)
		rc = fs_err(fsrec_del(m->s.db, m->s.key));
	return rc;
}

static int scratch_to_att(struct move *m)
{
	struct node dst;
	int rc = scratch_content(m);

	dest_node(m, &dst);
	if (!rc)
		rc = att_commit_fd(m->fs, &dst, m->fd);
	if (!rc)
		rc = fs_err(fsrec_del(m->s.db, m->s.key));
	return rc;
}

/* vim's writebackup renames ID.json away: the body goes to the scratch
 * name and the deletion waits for the grace period. */
static int doc_to_scratch(struct move *m)
{
	struct doc doc = { 0 };
	struct fsrec r = { .kind = FSREC_FILE, .mode = 0644,
			   .uid = m->fs->uid, .gid = m->fs->gid };
	int rc;

	if (m->src && m->src->pending)
		return fs_err(fsrec_put(m->d.db, m->d.key, &r));
	rc = docdb_get(m->s.db->d, NULL, m->s.id, m->s.idlen, NULL, 0, &doc);
	if (!rc)
		rc = benv_spool(m->fs->env, &m->fd);
	if (!rc)
		rc = spool_write_all(m->fd, doc.body, doc.len, 0);
	if (!rc) {
		r.mtime = r.ctime = r.atime = (struct timespec){
			doc.time_ms / 1000, doc.time_ms % 1000 * 1000000 };
		rc = fsrec_put_spool(m->d.db, m->d.key, &r, m->fd);
	}
	if (!rc)
		moved_add(m->fs, m->s.db, m->s.id, m->s.idlen, &doc.rev);
	fsrec_release(&r);
	doc_release(&doc);
	return fs_err(rc);
}

/* mv a.json b.json (also across databases): b gets a's body as a new
 * revision, a is deleted. */
static int doc_to_doc(struct move *m)
{
	struct doc doc = { 0 };
	struct doc_put put = { .id = m->d.id, .idlen = m->d.idlen,
			       .flags = DOC_PUT_ON_WINNER | DOC_PUT_KEEP_ATTS };
	struct doc_put del = { .id = m->s.id, .idlen = m->s.idlen,
			       .deleted = true, .flags = DOC_PUT_ON_WINNER };
	int rc = docdb_get(m->s.db->d, NULL, m->s.id, m->s.idlen, NULL, 0,
			   &doc);

	if (rc)
		goto out;
	put.body = doc.body;
	put.len = doc.len;
	if (!(rc = fs_put(m->fs, m->d.db, &put, 1)) && !(rc = put.rc) &&
	    !(rc = fs_put(m->fs, m->s.db, &del, 1)))
		rc = del.rc;
out:
	doc_release(&doc);
	return fs_err(rc);
}

static int move_kinds(struct move *m)
{
	enum node_kind s = m->s.kind, d = m->d.kind;

	if (s == NODE_SCRATCH && d == NODE_DOC)
		return scratch_to_doc(m);
	if (s == NODE_SCRATCH && d == NODE_ATT)
		return scratch_to_att(m);
	if (s == NODE_DOC && d == NODE_SCRATCH)
		return m->s.db == m->d.db ? doc_to_scratch(m) : -EXDEV;
	if (s == NODE_DOC && d == NODE_DOC)
		return doc_to_doc(m);
	if (s == NODE_SCRATCH && d == NODE_SCRATCH)
		return m->s.db == m->d.db ?
		       fs_err(fsrec_move(m->s.db, m->s.key, m->d.key)) : -EXDEV;
	if (s == NODE_DB || s == NODE_ATTDIR || s == NODE_ATT ||
	    s == NODE_DOC || s == NODE_SCRATCH)
		return -EXDEV;
	return -EACCES;
}

/* The checks of rename(2) before anything moves. */
static int move_check(struct move *m, unsigned flags)
{
	struct node *dst = node_find(m->fs, m->ddir->ino, m->dname);
	struct stat st;
	int rc;

	if (flags & ~RENAME_NOREPLACE)
		return -EINVAL;
	if (!m->src || (rc = node_stat(m->fs, m->src, &st)))
		return -ENOENT;
	if (!strcmp(m->sname, m->dname) && m->sdir == m->ddir)
		return 1;
	if (dst && !node_stat(m->fs, dst, &st)) {
		if (flags & RENAME_NOREPLACE)
			return -EEXIST;
		if (S_ISDIR(st.st_mode))
			return -EISDIR;
	}
	return 0;
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	struct move m = { .fs = fs_of(req), .req = req, .sname = name,
			  .dname = newname, .fd = -1 };
	int rc = classify(m.fs, parent, name, &m.sdir, &m.s) ?:
		 classify(m.fs, newparent, newname, &m.ddir, &m.d);

	if (!rc) {
		m.src = node_find(m.fs, parent, name);
		rc = move_check(&m, flags);
	}
	if (!rc && (m.s.kind == NODE_DB || m.d.kind == NODE_DB ||
		    m.s.kind == NODE_ATTDIR))
		rc = m.s.kind == NODE_DB || m.s.kind == NODE_ATTDIR ? -EXDEV :
		     -EACCES;
	if (!rc && !(rc = fsdb_enter(m.s.db))) {
		if (!(rc = m.d.db == m.s.db ? 0 : fsdb_enter(m.d.db))) {
			rc = move_kinds(&m);
			if (m.d.db != m.s.db)
				fsdb_leave(m.d.db);
		}
		fsdb_leave(m.s.db);
	}
	if (!rc && m.src) {
		pthread_mutex_lock(&m.src->lock);
		m.src->pending = false;
		m.src->dirty = false;
		pthread_mutex_unlock(&m.src->lock);
		rc = node_move(m.fs, m.src, newparent, newname, &m.d);
		/* what the kernel holds of it is another kind's: its
		 * attributes now (no page lock, so this cannot wait on a
		 * request), its pages by the worker at its next round */
		fuse_lowlevel_notify_inval_inode(m.fs->se, m.src->ino, -1, 0);
		inval_inode_later(m.fs, m.src->ino);
	}
	if (m.fd >= 0)
		close(m.fd);
	proto_release(&m.s);
	proto_release(&m.d);
	reply_err(req, rc > 0 ? 0 : rc);
}

/* ---- files ---- */

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	struct fh *fh;
	int rc = n ? fh_open(fs, req, n, fi->flags, &fh) : -ENOENT;

	if (rc) {
		reply_err(req, rc);
		return;
	}
	fi->fh = (uintptr_t)fh;
	/* Each open of a document is a revision of its own: a writer edits
	 * a private copy; a reader reads the revision it opened, through
	 * the page cache while that holds only this revision (cache_open),
	 * else directly, whatever size the kernel believes. */
	fi->direct_io = (n->p.kind == NODE_DOC && !fh->cached) ||
			volatile_kind(n->p.kind) || n->p.kind == NODE_REVDIFF;
	fi->keep_cache = fh->cached ? fh->keep_cache :
			 !fi->direct_io && !fh->writes;
	fi->noflush = !fh->writes;      /* a reader's close saves nothing */
	if (fuse_reply_open(req, fi)) {
		node_close(fs, n);
		fh_release(fs, fh);
	}
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	char *buf = malloc(size ? size : 1);
	size_t got = 0;
	int rc = buf ? fh_read(fs_of(req), fh_of(fi), buf, size, off, &got) :
		 -ENOMEM;

	(void)ino;
	if (rc)
		reply_err(req, rc);
	else
		fuse_reply_buf(req, buf, got);
	free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	int rc = fh_write(fs_of(req), fh_of(fi), buf, size, off);

	(void)ino;
	if (rc)
		reply_err(req, rc);
	else
		fuse_reply_write(req, size);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	reply_err(req, fh_flush(fs_of(req), req, fh_of(fi), false));
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	reply_err(req, fh_flush(fs_of(req), req, fh_of(fi), true));
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	struct node *n = fh_of(fi)->node;
	int rc = 0;

	(void)ino;
	(void)datasync;
	if (n->p.kind != NODE_ROOT && !(rc = fsdb_enter(n->p.db))) {
		rc = fs_err(fsrec_settle(n->p.db, NULL, false));
		if (!rc)
			rc = fs_err(bdb_sync(docdb_bdb(n->p.db->d)));
		fsdb_leave(n->p.db);
	}
	reply_err(req, rc);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fh *fh = fh_of(fi);
	struct node *n = fh->node;

	(void)ino;
	fh_release(fs, fh);
	node_close(fs, n);
	fuse_reply_err(req, 0);
}

/* ---- directories ---- */

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct node *n = node_get(fs, ino);
	struct fh *fh;
	int rc = n ? dir_open(fs, n, &fh) : -ENOENT;

	if (rc) {
		reply_err(req, rc);
		return;
	}
	node_open(fs, n);
	fi->fh = (uintptr_t)fh;
	if (fuse_reply_open(req, fi)) {
		node_close(fs, n);
		dir_release(fh);
	}
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
		       off_t off, struct fuse_file_info *fi)
{
	char *buf = malloc(size ? size : 1);
	size_t got = 0;
	int rc = buf ? dir_fill(fs_of(req), req, fh_of(fi), buf, size, off,
				&got) : -ENOMEM;

	(void)ino;
	if (rc)
		reply_err(req, rc);
	else
		fuse_reply_buf(req, buf, got);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fh *fh = fh_of(fi);
	struct node *n = fh->node;

	(void)ino;
	dir_release(fh);
	node_close(fs, n);
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	struct statvfs sv;

	(void)ino;
	if (statvfs(fs->datadir, &sv)) {
		reply_err(req, -errno);
		return;
	}
	sv.f_namemax = NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

/* ---- xattrs ---- */

/* The value of one of our xattrs of a document into buf. */
static int xattr_value(struct node *n, const char *name, char *buf,
		       size_t cap, size_t *len)
{
	struct doc doc = { 0 };
	struct rev *revs = NULL;
	size_t nrevs = 0, at = 0;
	int rc;

	if (n->p.kind != NODE_DOC)
		return -ENODATA;
	if (strcmp(name, XATTR_REV) && strcmp(name, XATTR_SEQ) &&
	    strcmp(name, XATTR_CONFLICTS))
		return -ENODATA;
	if ((rc = fsdb_enter(n->p.db)))
		return rc;
	moved_flush_db(n->p.db->fs, n->p.db);
	rc = docdb_get(n->p.db->d, NULL, n->p.id, n->p.idlen, NULL,
		       DOC_GET_TREE, &doc);
	if (rc)
		goto out;
	if (!strcmp(name, XATTR_REV)) {
		at = rev_text(&doc.rev, buf);
	} else if (!strcmp(name, XATTR_SEQ)) {
		at = (size_t)snprintf(buf, cap, "%llu",
				      (unsigned long long)doc.seq);
	} else if (!(rc = revtree_conflicts(doc.tree, &revs, &nrevs))) {
		buf[at++] = '[';
		for (size_t i = 0; i < nrevs && at + REV_STR_SIZE + 4 < cap;
		     i++) {
			if (i)
				buf[at++] = ',';
			buf[at++] = '"';
			at += rev_text(&revs[i], buf + at);
			buf[at++] = '"';
		}
		buf[at++] = ']';
	}
	*len = at;
out:
	free(revs);
	doc_release(&doc);
	fsdb_leave(n->p.db);
	return fs_err(rc);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	struct node *n = node_get(fs_of(req), ino);
	char buf[8192];
	size_t len = 0;
	int rc = n ? xattr_value(n, name, buf, sizeof(buf), &len) : -ENOENT;

	if (!rc && len >= sizeof(buf))
		rc = -E2BIG;
	if (rc)
		reply_err(req, rc);
	else if (!size)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, len);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	static const char names[] = XATTR_REV "\0" XATTR_SEQ "\0"
				    XATTR_CONFLICTS;
	struct node *n = node_get(fs_of(req), ino);
	size_t len = n && n->p.kind == NODE_DOC ? sizeof(names) : 0;

	if (!n)
		fuse_reply_err(req, ENOENT);
	else if (!size)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, names, len);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	(void)ino;
	(void)value;
	(void)size;
	(void)flags;
	fuse_reply_err(req, !strncmp(name, "user.barrel.", 12) ? EPERM :
			    ENOTSUP);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino;
	fuse_reply_err(req, !strncmp(name, "user.barrel.", 12) ? EPERM :
			    ENOTSUP);
}

/* ---- the session ---- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	if (conn->capable & FUSE_CAP_EXPORT_SUPPORT)
		conn->want |= FUSE_CAP_EXPORT_SUPPORT;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	/* every change is invalidated exactly (DESIGN.md "Kernel caches");
	 * dropping pages whenever a new mtime is seen would drop those the
	 * mount stored after a save at the next stat */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

static void op_destroy(void *userdata)
{
	moved_flush(userdata);
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.destroy = op_destroy,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.create = op_create,
};
