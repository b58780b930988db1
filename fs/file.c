/*
 * Open files (DESIGN.md "Writing a document").
 *
 * A document opened for writing gets a private spool and remembers the
 * revision it showed (its base); flush, fsync and a rename onto ID.json
 * commit the spool as one revision on that base. Attachments and scratch
 * files share one spool per node among their writers, as on ext4; the
 * last writer's release (or a flush with changes) stores it. Read-only
 * opens read a copy of the body (documents, virtual files) or a blob.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/log.h"
#include "fs/fs.h"

#define DOC_MAX_BODY (8u << 20)
#define COPY_CHUNK (1u << 20)

/* ---- which revision a process opened ---- */

void note_open(struct fs *fs, struct fsdb *db, const char *id, pid_t pid,
	       const struct rev *rev)
{
	struct open_note *o;
	char *copy = strdup(id);

	if (!copy)
		return;
	pthread_mutex_lock(&fs->lock);
	o = &fs->notes[fs->next_note++ % FS_NOTES];
	free(o->id);
	*o = (struct open_note){ db, copy, pid, *rev };
	pthread_mutex_unlock(&fs->lock);
}

bool note_find(struct fs *fs, struct fsdb *db, const char *id, pid_t pid,
	       struct rev *rev)
{
	bool found = false, exact = false;

	pthread_mutex_lock(&fs->lock);
	for (unsigned i = 0; i < FS_NOTES && !exact; i++) {
		/* newest first */
		struct open_note *o =
			&fs->notes[(fs->next_note - 1 - i) % FS_NOTES];

		if (!o->id || o->db != db || strcmp(o->id, id))
			continue;
		if (o->pid == pid || !found)
			*rev = o->rev;
		exact = o->pid == pid;
		found = true;
	}
	pthread_mutex_unlock(&fs->lock);
	return found;
}

void notes_release(struct fs *fs)
{
	for (unsigned i = 0; i < FS_NOTES; i++) {
		free(fs->notes[i].id);
		fs->notes[i].id = NULL;
	}
}

/* ---- committing ---- */

/* Was every commit of db up to seq made through the mount (fs->lock
 * held)? The worker needs waking only for the others. */
static bool all_own(struct fs *fs, struct fsdb *db, uint64_t seq)
{
	uint64_t from = db->checked_seq;

	db->checked_seq = seq;
	if (seq - from > FS_OWN)
		return false;
	for (uint64_t s = from + 1; s <= seq; s++)
		if (fs->own[s % FS_OWN].db != db ||
		    fs->own[s % FS_OWN].seq != s)
			return false;
	return true;
}

int fs_put(struct fs *fs, struct fsdb *db, struct doc_put *req, size_t n)
{
	int rc;

	for (size_t i = 0; i < n; i++)
		req[i].flags |= DOC_PUT_NOSYNC;   /* durable at fsync */
	pthread_mutex_lock(&fs->lock);
	db->own_puts++;
	pthread_mutex_unlock(&fs->lock);
	rc = docdb_put(db->d, req, n);

	pthread_mutex_lock(&fs->lock);
	for (size_t i = 0; !rc && i < n; i++)
		if (!req[i].rc && req[i].seq)
			fs->own[req[i].seq % FS_OWN] =
				(struct own_seq){ db, req[i].seq };
	if (!--db->own_puts && db->wake_owed) {
		db->wake_owed = false;
		if (!all_own(fs, db, bdb_seq(docdb_bdb(db->d))))
			worker_wake(fs);
	}
	pthread_mutex_unlock(&fs->lock);
	return rc;
}

/* A slot per sequence modulo FS_OWN: a commit pushed out by a later one
 * (or another database's) only costs an invalidation the kernel did not
 * need. */
bool fs_own(struct fs *fs, struct fsdb *db, uint64_t seq)
{
	const struct own_seq *o;
	bool own;

	pthread_mutex_lock(&fs->lock);
	o = &fs->own[seq % FS_OWN];
	own = o->db == db && o->seq == seq;
	pthread_mutex_unlock(&fs->lock);
	return own;
}

void keep_creator(struct fs *fs, struct node *n)
{
	struct fsrec r = n->creator;
	struct node *dir = node_get(fs, n->parent);
	char *path;

	if (!r.kind || (r.uid == fs->uid && r.gid == fs->gid &&
			r.mode == 0644) || !dir || !(path = node_path(dir, n->name)))
		return;
	if (fsrec_put(n->p.db, path, &r))
		barrel_log(BLOG_WARN, "%s: owner and mode not kept", n->name);
	free(path);
}

static bool bad_input(int rc)
{
	return rc == BARREL_E_BADJSON || rc == BARREL_E_NOTOBJECT ||
	       rc == BARREL_E_INVALID || rc == BARREL_E_BADREV ||
	       rc == BARREL_E_TOOBIG;
}

/* Keep rejected bytes (body, len) as the scratch file
 * "ID.json.rejected". */
static void keep_rejected(struct fs *fs, struct node *n, const char *body,
			  size_t len)
{
	struct node *dir = node_get(fs, n->parent);
	char *name = name_of_doc(n->p.id, n->p.idlen), *path = NULL;
	struct fsrec r = { .kind = FSREC_FILE, .mode = 0644,
			   .uid = fs->uid, .gid = fs->gid };
	char *full = NULL;
	int fd = -1;

	if (name && (full = malloc(strlen(name) + 10))) {
		memcpy(full, name, strlen(name));
		memcpy(full + strlen(name), ".rejected", 10);
	}
	if (dir && full && (path = node_path(dir, full))) {
		clock_gettime(CLOCK_REALTIME, &r.mtime);
		r.ctime = r.atime = r.mtime;
		if (benv_spool(fs->env, &fd) ||
		    spool_write_all(fd, body, len, 0) ||
		    fsrec_put_spool(n->p.db, path, &r, fd))
			path[0] = '\0';
	}
	if (fd >= 0)
		close(fd);
	barrel_log(BLOG_ERR, "%s: rejected bytes kept in %s", n->name,
		   path && path[0] ? path : "(nowhere: could not store them)");
	fsrec_release(&r);
	free(path);
	free(full);
	free(name);
}

/* Read a document spool whole (at most DOC_MAX_BODY bytes). */
static int spool_slurp(int fd, char **out, size_t *len)
{
	struct stat st;
	int rc;

	*out = NULL;
	if (fstat(fd, &st))
		return -errno;
	if ((uint64_t)st.st_size > DOC_MAX_BODY)
		return -EFBIG;
	*len = (size_t)st.st_size;
	if (!(*out = malloc(*len + 1)))
		return -ENOMEM;
	if ((rc = spool_read_all(fd, *out, *len))) {
		free(*out);
		*out = NULL;
	}
	return rc;
}

/* Is body (len bytes) the body of revision base: known (klen bytes),
 * or when known is NULL, the stored one? */
static bool same_body(struct node *n, const struct rev *base,
		      const char *known, size_t klen, const char *body,
		      size_t len)
{
	struct doc doc = { 0 };
	bool same;

	if (!known && !docdb_get(n->p.db->d, NULL, n->p.id, n->p.idlen, base,
				 0, &doc)) {
		known = doc.body;
		klen = doc.len;
	}
	same = known && klen == len && !memcmp(known, body, len);
	doc_release(&doc);
	return same;
}

int doc_commit_fd(struct fs *fs, struct node *n, int fd,
		  const struct rev *base, const char *base_body,
		  size_t base_len, struct rev *out)
{
	char *body;
	size_t len = 0;
	int rc = spool_slurp(fd, &body, &len);

	if (rc)
		return rc;
	body[len] = '\0';
	rc = doc_commit(fs, n, body, len, base, base_body, base_len, out,
			NULL);
	free(body);
	return rc;
}

int doc_commit(struct fs *fs, struct node *n, const char *body, size_t len,
	       const struct rev *base, const char *base_body,
	       size_t base_len, struct rev *out, uint64_t *seq)
{
	struct doc_put req = { .id = n->p.id, .idlen = n->p.idlen,
			       .parent = base, .body = body, .len = len,
			       .flags = DOC_PUT_KEEP_ATTS | DOC_PUT_BRANCH };
	int rc;

	if (seq)
		*seq = 0;
	if (len > DOC_MAX_BODY)
		return -EFBIG;
	if (base && same_body(n, base, base_body, base_len, body, len)) {
		*out = *base;              /* saved unchanged: no revision */
		return 0;
	}
	rc = fs_put(fs, n->p.db, &req, 1);
	if (!rc)
		rc = req.rc;
	if (!rc) {
		*out = req.rev;
		if (seq)
			*seq = req.seq;
	} else if (bad_input(rc)) {
		barrel_log(BLOG_ERR, "%s/%s: not saved: %s", n->p.db->name,
			   n->name, req.error[0] ? req.error :
			   barrel_strerror(rc));
		keep_rejected(fs, n, body, len);
		rc = -EINVAL;
	} else {
		barrel_log(BLOG_ERR, "%s/%s: not saved: %s", n->p.db->name,
			   n->name, req.error[0] ? req.error :
			   barrel_strerror(rc));
	}
	return fs_err(rc);
}

static const char *content_type(const char *name)
{
	static const char *const types[][2] = {
		{ ".txt", "text/plain" }, { ".json", "application/json" },
		{ ".html", "text/html" }, { ".css", "text/css" },
		{ ".js", "application/javascript" }, { ".png", "image/png" },
		{ ".jpg", "image/jpeg" }, { ".jpeg", "image/jpeg" },
		{ ".gif", "image/gif" }, { ".svg", "image/svg+xml" },
		{ ".pdf", "application/pdf" }, { ".md", "text/markdown" },
		{ ".csv", "text/csv" }, { ".xml", "application/xml" },
	};
	const char *dot = strrchr(name, '.');

	for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
		if (!strcasecmp(dot, types[i][0]))
			return types[i][1];
	return "application/octet-stream";
}

/* A new revision of id that changes one attachment (added or removed);
 * the body stays the winner's ("{}" for a new document). */
static int att_put(struct fs *fs, struct fsdb *db, const char *id,
		   size_t idlen, struct doc_att *a)
{
	struct doc_put req = { .id = id, .idlen = idlen, .body = "{}",
			       .len = 2, .atts = a, .natts = 1,
			       .flags = DOC_PUT_KEEP_ATTS | DOC_PUT_ON_WINNER };
	struct doc cur = { 0 };
	int rc;

	if (!docdb_get(db->d, NULL, id, idlen, NULL, 0, &cur)) {
		req.body = cur.body;
		req.len = cur.len;
	}
	rc = fs_put(fs, db, &req, 1);
	if (!rc)
		rc = req.rc;
	if (rc)
		barrel_log(BLOG_ERR, "%s/%s: attachment %s not %s: %s",
			   db->name, id, a->name,
			   a->remove ? "removed" : "saved",
			   req.error[0] ? req.error : barrel_strerror(rc));
	doc_release(&cur);
	return fs_err(rc);
}

int att_remove(struct fs *fs, const struct proto *p, struct doc_att *a)
{
	return att_put(fs, p->db, p->id, p->idlen, a);
}

int att_commit_fd(struct fs *fs, struct node *n, int fd)
{
	struct doc_att a = { .name = n->p.key };
	struct doc_att_writer *w;
	char *buf = malloc(COPY_CHUNK);
	uint64_t off = 0;
	int rc = buf ? docdb_att_create(n->p.db->d, &w) : -ENOMEM;

	if (rc)
		goto out_free;
	for (ssize_t got; !rc; off += (uint64_t)got) {
		if ((got = pread(fd, buf, COPY_CHUNK, (off_t)off)) <= 0) {
			rc = got < 0 ? -errno : 0;
			break;
		}
		rc = doc_att_write(w, buf, (size_t)got);
	}
	if (rc) {
		doc_att_abort(w);
		goto out_free;
	}
	a.content_type = (char *)content_type(a.name);
	if (!(rc = doc_att_finish(w, &a)))
		rc = att_put(fs, n->p.db, n->p.id, n->p.idlen, &a);
out_free:
	free(buf);
	return fs_err(rc);
}

/* ---- opening ---- */

static bool writes(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY;
}

static int new_spool(struct fs *fs, int *fd)
{
	return fs_err(benv_spool(fs->env, fd));
}

/* ---- the page cache of documents (DESIGN.md "Kernel caches") ---- */

#define CACHE_STORE_MAX (256u << 10)   /* bodies pushed to the kernel */

/* A reader of the revision at seq: on the page cache when no writer is
 * open and the cache holds that revision or no reader is on it (then
 * the kernel drops what it holds at this open); else direct I/O. */
static void cache_open(struct fs *fs, struct node *n, struct fh *fh,
		       uint64_t seq)
{
	uint64_t held;

	pthread_mutex_lock(&n->lock);
	held = atomic_load(&n->cache_seq);
	if (!n->editors && (held == seq || !n->cached_opens) &&
	    (held == seq ||
	     atomic_compare_exchange_strong(&n->cache_seq, &held, seq))) {
		fh->cached = true;
		fh->keep_cache = held == seq;
		n->cached_opens++;
	}
	pthread_mutex_unlock(&n->lock);
	/* the size the kernel holds may be another revision's */
	if (fh->cached && !fh->keep_cache)
		fuse_lowlevel_notify_inval_inode(fs->se, n->ino, -1, 0);
}

/* After a save of n that committed body (len bytes) at seq (0: nothing
 * was committed): when the saving open is n's only writer and no reader
 * is on the page cache, replace the pages with the new body, so the next
 * reader reads none; otherwise drop the attributes only (a stat made
 * mid-save may hold another size). Neither waits on a request: no
 * reader holds a page of this inode (DESIGN.md "Kernel caches"). */
static void cache_saved(struct fs *fs, struct node *n, uint64_t seq,
			const char *body, size_t len)
{
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(len);
	bool store;

	pthread_mutex_lock(&n->lock);
	store = seq && n->editors == 1 && !n->cached_opens;
	if (store) {
		fuse_lowlevel_notify_inval_inode(fs->se, n->ino, 0, 0);
		bv.buf[0].mem = (void *)body;
		if (len && len <= CACHE_STORE_MAX &&
		    fuse_lowlevel_notify_store(fs->se, n->ino, 0, &bv, 0))
			seq = 0;
		atomic_store(&n->cache_seq, seq);
	}
	pthread_mutex_unlock(&n->lock);
	if (!store)
		fuse_lowlevel_notify_inval_inode(fs->se, n->ino, -1, 0);
}

/* A document: its body at open; writers also get a spool and a base. */
static int open_doc(struct fs *fs, fuse_req_t req, struct node *n,
		    struct fh *fh)
{
	struct doc doc = { 0 };
	int rc = docdb_get(n->p.db->d, NULL, n->p.id, n->p.idlen, NULL, 0,
			   &doc);

	if (rc == BARREL_E_NOTFOUND && n->pending) {
		rc = 0;
		pthread_mutex_lock(&n->lock);
		fh->has_base = n->has_opened;
		fh->base = n->opened;
		pthread_mutex_unlock(&n->lock);
	} else if (!rc) {
		fh->base = doc.rev;
		fh->has_base = true;
		fh->buf = doc.body;
		fh->len = doc.len;
		doc.body = NULL;
		note_open(fs, n->p.db, n->p.id, fuse_req_ctx(req)->pid,
			  &doc.rev);
		if (!fh->writes)
			cache_open(fs, n, fh, doc.seq);
	}
	doc_release(&doc);
	if (rc || !fh->writes)
		return fs_err(rc);
	pthread_mutex_lock(&n->lock);
	n->editors++;
	/* its O_TRUNC and writes change the size the kernel holds */
	atomic_store(&n->cache_seq, 0);
	pthread_mutex_unlock(&n->lock);
	fh->editing = true;
	if (!(fh->flags & O_TRUNC) && fh->len)
		rc = bbuf_add(&fh->edit, fh->buf, fh->len);
	return rc;
}

/* The node's shared spool, filled from the stored content unless trunc
 * (node->lock held). */
static int node_spool(struct fs *fs, struct node *n, bool trunc)
{
	struct bsnap *snap = NULL;
	struct doc doc = { 0 };
	struct fsrec r = { 0 };
	int rc;

	if (n->spool >= 0)
		return trunc && ftruncate(n->spool, 0) ? -errno : 0;
	if ((rc = new_spool(fs, &n->spool)))
		return rc;
	if (trunc || n->pending)
		return 0;
	if ((rc = bdb_snapshot(docdb_bdb(n->p.db->d), &snap)))
		goto out;
	if (n->p.kind == NODE_SCRATCH) {
		if (!(rc = fsrec_get(n->p.db, snap, n->p.key, &r)))
			rc = fsrec_to_spool(snap, &r, n->spool);
	} else if (!(rc = docdb_get(n->p.db->d, snap, n->p.id, n->p.idlen,
				    NULL, 0, &doc))) {
		rc = BARREL_E_NOTFOUND;
		for (size_t i = 0; i < doc.natts; i++)
			if (!strcmp(doc.atts[i].name, n->p.key))
				rc = blob_to_spool(snap, doc.atts[i].blob,
						   n->spool);
	}
out:
	fsrec_release(&r);
	doc_release(&doc);
	bsnap_release(snap);
	if (rc) {
		close(n->spool);
		n->spool = -1;
	}
	return fs_err(rc);
}

/* A read of stored content without a spool: scratch data or a blob. */
static int open_stored(struct node *n, struct fh *fh)
{
	struct doc doc = { 0 };
	struct fsrec r = { 0 };
	uint64_t blob = 0;
	int rc = bdb_snapshot(docdb_bdb(n->p.db->d), &fh->snap);

	if (rc)
		return fs_err(rc);
	if (n->p.kind == NODE_SCRATCH) {
		if (!(rc = fsrec_get(n->p.db, fh->snap, n->p.key, &r))) {
			blob = r.blob;
			fh->buf = r.data;
			fh->len = r.dlen;
			r.data = NULL;
		}
	} else if (!(rc = docdb_get(n->p.db->d, fh->snap, n->p.id,
				    n->p.idlen, NULL, 0, &doc))) {
		rc = BARREL_E_NOTFOUND;
		for (size_t i = 0; i < doc.natts; i++)
			if (!strcmp(doc.atts[i].name, n->p.key)) {
				blob = doc.atts[i].blob;
				rc = 0;
			}
	}
	if (!rc && blob)
		rc = bsnap_blob_open(fh->snap, blob, &fh->blob);
	fsrec_release(&r);
	doc_release(&doc);
	return fs_err(rc);
}

static int open_shared(struct fs *fs, struct node *n, struct fh *fh)
{
	int rc = 0;

	pthread_mutex_lock(&n->lock);
	if (fh->writes) {
		if (!(rc = node_spool(fs, n, fh->flags & O_TRUNC))) {
			n->writers++;
			fh->shared = true;
			if (fh->flags & O_TRUNC)
				n->dirty = true;
		}
	}
	pthread_mutex_unlock(&n->lock);
	if (!rc && !fh->writes && n->spool < 0 && !n->pending)
		rc = open_stored(n, fh);
	return rc;
}

int fh_open(struct fs *fs, fuse_req_t req, struct node *n, int flags,
	    struct fh **out)
{
	struct fh *fh = calloc(1, sizeof(*fh));
	int rc;

	if (!fh)
		return -ENOMEM;
	fh->node = n;
	fh->flags = flags;
	fh->writes = writes(flags);
	pthread_mutex_init(&fh->blob_lock, NULL);
	switch (n->p.kind) {
	case NODE_DOC:
	case NODE_ATT:
	case NODE_SCRATCH:
		if ((rc = fsdb_enter(n->p.db)))
			break;
		rc = n->p.kind == NODE_DOC ? open_doc(fs, req, n, fh) :
		     open_shared(fs, n, fh);
		fsdb_leave(n->p.db);
		break;
	case NODE_STATUS:
	case NODE_REVFILE:
	case NODE_REVDIFF:
	case NODE_CONFLICT:
		rc = fh->writes ? -EACCES : view_render(fs, n, fh);
		break;
	case NODE_CHANGES:
		rc = fh->writes ? -EACCES : changes_open(fs, n, fh);
		break;
	case NODE_VKEY:
	case NODE_VALL:
	case NODE_VREDUCE:
	case NODE_VGROUP:
	case NODE_VSTATUS:
		rc = fh->writes ? -EACCES : viewdir_open(fs, n, fh);
		break;
	default:
		rc = -EISDIR;
	}
	if (rc) {
		fh_release(fs, fh);
		return rc;
	}
	node_open(fs, n);
	*out = fh;
	return 0;
}

/* ---- reading and writing ---- */

static int pread_some(int fd, char *buf, size_t size, off_t off, size_t *got)
{
	ssize_t n = pread(fd, buf, size, off);

	if (n < 0)
		return -errno;
	*got = (size_t)n;
	return 0;
}

/* A read at off of the len bytes at from. */
static int copy_out(const char *from, size_t len, char *buf, size_t size,
		    off_t off, size_t *got)
{
	*got = 0;
	if (off >= 0 && (size_t)off < len) {
		*got = len - (size_t)off < size ? len - (size_t)off : size;
		memcpy(buf, from + off, *got);
	}
	return 0;
}

/* Make a writer's copy size bytes long: cut, or grown with zeros. */
static int edit_resize(struct bbuf *b, uint64_t size)
{
	if (size > DOC_MAX_BODY)
		return -EFBIG;
	if (size > b->len) {
		if (bbuf_reserve(b, (size_t)size - b->len))
			return -ENOMEM;
		memset(b->p + b->len, 0, (size_t)size - b->len);
	}
	b->len = (size_t)size;
	if (b->p)
		b->p[b->len] = '\0';
	return 0;
}

/* pwrite(2) into a writer's copy. */
static int edit_write(struct bbuf *b, const char *buf, size_t size, off_t off)
{
	uint64_t end = (uint64_t)off + size;
	int rc = end > b->len ? edit_resize(b, end) : 0;

	if (!rc && size)
		memcpy(b->p + off, buf, size);
	return rc;
}

int fh_read(struct fs *fs, struct fh *fh, char *buf, size_t size, off_t off,
	    size_t *got)
{
	struct node *n = fh->node;
	ssize_t r;
	int rc = 1;

	(void)fs;
	*got = 0;
	/* a private mapping of a direct open fills the page cache with
	 * that open's bytes */
	if (n->p.kind == NODE_DOC && !fh->cached)
		atomic_store(&n->cache_seq, 0);
	if (fh->editing)
		return copy_out(fh->edit.p, fh->edit.len, buf, size, off, got);
	if (n->p.kind == NODE_CHANGES)
		return changes_read(fh, buf, size, off, got);
	if (n->p.kind == NODE_ATT || n->p.kind == NODE_SCRATCH) {
		pthread_mutex_lock(&n->lock);
		if (n->spool >= 0)
			rc = pread_some(n->spool, buf, size, off, got);
		pthread_mutex_unlock(&n->lock);
		if (rc <= 0)
			return rc;
	}
	if (fh->blob) {
		pthread_mutex_lock(&fh->blob_lock);
		r = bblob_read(fh->blob, buf, size, (uint64_t)off);
		pthread_mutex_unlock(&fh->blob_lock);
		if (r < 0)
			return fs_err((int)r);
		*got = (size_t)r;
		return 0;
	}
	return copy_out(fh->buf, fh->len, buf, size, off, got);
}

static int pwrite_all(int fd, const char *buf, size_t size, off_t off)
{
	return spool_write_all(fd, buf, size, (uint64_t)off);
}

int fh_write(struct fs *fs, struct fh *fh, const char *buf, size_t size,
	     off_t off)
{
	struct node *n = fh->node;
	int rc;

	(void)fs;
	if (!fh->writes)
		return -EBADF;
	if (fh->editing) {
		/* the kernel's size of the file follows this write */
		atomic_store(&fh->node->cache_seq, 0);
		if (!(rc = edit_write(&fh->edit, buf, size, off)))
			fh->dirty = true;
		return rc;
	}
	pthread_mutex_lock(&n->lock);
	rc = n->spool >= 0 ? pwrite_all(n->spool, buf, size, off) : -EBADF;
	if (!rc)
		n->dirty = n->written = true;
	pthread_mutex_unlock(&n->lock);
	return rc;
}

/* ---- committing on close ---- */

static int flush_doc(struct fs *fs, struct fh *fh)
{
	struct node *n = fh->node;
	struct rev rev;
	uint64_t seq;
	int rc;

	/* a close before any write (the shell's dup2 of "> x.json") is
	 * not a save: only written (or truncated) content is committed */
	if (!fh->dirty)
		return 0;
	if (!fh->has_base && !fh->edit.len)
		return 0;                   /* not a document yet */
	/* fh->buf, while kept, is the body of fh->base as opened */
	rc = doc_commit(fs, n, fh->edit.p ? fh->edit.p : "", fh->edit.len,
			fh->has_base ? &fh->base : NULL, fh->buf, fh->len, &rev,
			&seq);
	fh->dirty = false;
	if (rc)
		return rc;
	pthread_mutex_lock(&n->lock);
	if (n->pending)
		keep_creator(fs, n);
	n->pending = false;
	pthread_mutex_unlock(&n->lock);
	/* written again: a deletion pending for it is void */
	moved_take(fs, n->p.db, n->p.id, n->p.idlen, &fh->base);
	fh->base = rev;
	fh->has_base = true;
	free(fh->buf);
	fh->buf = NULL;
	fh->len = 0;
	cache_saved(fs, n, seq, fh->edit.p, fh->edit.len);
	return 0;
}

/* Store a shared spool (node->lock held): at a close only what was
 * written since the last store (the shell's dup2 for "> FILE" closes
 * before the write), at the last release also a truncation or an empty
 * new file. */
static int flush_shared(struct fs *fs, struct node *n, bool release)
{
	struct fsrec r = { 0 };
	int rc;

	if (!n->dirty || (!release && !n->written) || n->spool < 0 ||
	    !n->linked ||
	    (n->p.kind != NODE_ATT && n->p.kind != NODE_SCRATCH))
		return 0;
	if (n->p.kind == NODE_ATT) {
		rc = att_commit_fd(fs, n, n->spool);
	} else {
		rc = fsrec_get(n->p.db, NULL, n->p.key, &r);
		if (rc == BARREL_E_NOTFOUND)
			return 0;          /* removed meanwhile */
		clock_gettime(CLOCK_REALTIME, &r.mtime);
		r.ctime = r.mtime;
		rc = rc ? fs_err(rc) :
		     fs_err(fsrec_put_spool(n->p.db, n->p.key, &r, n->spool));
		fsrec_release(&r);
	}
	if (!rc) {
		if (n->pending && n->p.kind == NODE_ATT)
			keep_creator(fs, n);
		n->dirty = n->written = false;
		n->pending = false;
	}
	return rc;
}

int fh_flush(struct fs *fs, fuse_req_t req, struct fh *fh, bool durable)
{
	struct node *n = fh->node;
	int rc = 0;

	(void)req;
	if (!fh->writes && !durable)
		return 0;
	if ((rc = fsdb_enter(n->p.db)))
		return rc;
	if (!fh->writes) {
		rc = 0;
	} else if (n->p.kind == NODE_DOC) {
		rc = flush_doc(fs, fh);
	} else {
		pthread_mutex_lock(&n->lock);
		rc = flush_shared(fs, n, false);
		pthread_mutex_unlock(&n->lock);
	}
	if (!rc && durable && n->p.kind == NODE_SCRATCH)
		rc = fs_err(fsrec_settle(n->p.db, n->p.key, false));
	if (!rc && durable)
		rc = fs_err(bdb_sync(docdb_bdb(n->p.db->d)));
	fsdb_leave(n->p.db);
	return rc;
}

void fh_release(struct fs *fs, struct fh *fh)
{
	struct node *n = fh->node;

	if (fh->shared && !fsdb_enter(n->p.db)) {
		pthread_mutex_lock(&n->lock);
		if (n->writers && !--n->writers) {
			if (flush_shared(fs, n, true))
				barrel_log(BLOG_ERR, "%s: lost on close",
					   n->name);
			close(n->spool);
			n->spool = -1;
		}
		pthread_mutex_unlock(&n->lock);
		fsdb_leave(n->p.db);
	}
	if (n->p.kind == NODE_DOC && (fh->cached || fh->editing)) {
		pthread_mutex_lock(&n->lock);
		if (fh->cached)
			n->cached_opens--;
		if (fh->editing)
			n->editors--;
		pthread_mutex_unlock(&n->lock);
	}
	if (n->p.kind == NODE_CHANGES)
		changes_close(n, fh);
	bbuf_release(&fh->edit);
	if (fh->blob)
		bblob_close(fh->blob);
	bsnap_release(fh->snap);
	pthread_mutex_destroy(&fh->blob_lock);
	free(fh->buf);
	free(fh);
}

/* ---- truncate(2) ---- */

static int truncate_doc(struct fs *fs, struct node *n, off_t size)
{
	struct doc doc = { 0 };
	struct rev rev;
	int fd = -1;
	int rc = docdb_get(n->p.db->d, NULL, n->p.id, n->p.idlen, NULL, 0,
			   &doc);

	if (!rc && (size_t)size == doc.len)
		goto out;
	if (!rc && !(rc = new_spool(fs, &fd)) &&
	    !(rc = spool_write_all(fd, doc.body,
				   (size_t)size < doc.len ? (size_t)size :
				   doc.len, 0)) &&
	    !(rc = ftruncate(fd, size) ? -errno : 0))
		rc = doc_commit_fd(fs, n, fd, &doc.rev, doc.body, doc.len,
				   &rev);
out:
	if (fd >= 0)
		close(fd);
	doc_release(&doc);
	return fs_err(rc);
}

int node_truncate(struct fs *fs, struct node *n, off_t size, struct fh *fh)
{
	int rc;

	if (fh && fh->editing) {
		atomic_store(&n->cache_seq, 0);
		fh->dirty = true;
		return size < 0 ? -EINVAL : edit_resize(&fh->edit, (uint64_t)size);
	}
	if (n->p.kind == NODE_DOC)
		return n->pending ? 0 : truncate_doc(fs, n, size);
	if (n->p.kind != NODE_ATT && n->p.kind != NODE_SCRATCH)
		return -EACCES;
	pthread_mutex_lock(&n->lock);
	rc = node_spool(fs, n, false);
	if (!rc && ftruncate(n->spool, size))
		rc = -errno;
	if (!rc) {
		n->dirty = true;
		if (!n->writers) {
			rc = flush_shared(fs, n, true);
			close(n->spool);
			n->spool = -1;
		}
	}
	pthread_mutex_unlock(&n->lock);
	return rc;
}
