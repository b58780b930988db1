#include "config.h"
/*
 * The fault-injecting I/O table (io.h): an in-memory filesystem for crash
 * tests, in the method of SQLite's crash VFS (src/test6.c).
 *
 * Files: each node keeps the contents reads see (cur), the durable image
 * as of its last successful fsync (dur), and the log of changes since
 * (writes, truncates, allocates), so that cur == dur + log. An fsync, or a
 * write_batch with sync, replays the log onto dur and empties it.
 *
 * Directories: a tree of nodes; entries hold references to children. Every
 * create, mkdir, unlink, rmdir and rename is logged until fsync_dir of a
 * directory it changed makes it durable.
 *
 * bio_fault_crash() (a power cut):
 *   1. Walk the directory log newest first; undo each change with
 *      probability 1/2, when the tree still shows its outcome (a change
 *      that a kept later one builds on stays).
 *   2. For every file, replay its log onto dur: each change is kept,
 *      dropped or (writes only) torn -- a random subset of the 512-byte
 *      sectors it covers is kept, the rest keep what was there before.
 *   3. cur = dur; every open file becomes stale (-EIO); locks are gone;
 *      the dead disk and a pending fsync failure are reset.
 *
 * One mutex protects everything: this is for tests, not for speed. Every
 * random choice comes from one splitmix64 stream seeded by the caller.
 */
#include "engine/io.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>

#define SECTOR 512u
#define FAULT_MAX_FILE (1ull << 32)   /* bigger contents: -EFBIG */
#define FAULT_MAX_NAME 255u

/* Growable bytes: a file's contents. */
struct fbuf {
	uint8_t *data;
	uint64_t size, cap;
};

enum fop_kind { FOP_WRITE, FOP_TRUNCATE, FOP_ALLOCATE };

/* A change to a file not yet covered by an fsync. */
struct fop {
	enum fop_kind kind;
	uint64_t off;       /* FOP_WRITE: where */
	uint64_t len;       /* bytes written, or the new / reserved size */
	uint8_t *data;      /* FOP_WRITE: a copy of the bytes, owned */
};

struct fnode;
struct ffile;

struct fdirent {
	char *name;         /* owned */
	struct fnode *node; /* holds a reference */
};

struct fnode {
	bool is_dir;
	unsigned refs;              /* dir entries, open files, dirops naming it */
	struct fnode *prev, *next;  /* fault_bio.nodes, in creation order */
	/* files */
	struct fbuf cur;            /* what reads see */
	struct fbuf dur;            /* what survives a crash for sure */
	struct fop *ops;            /* changes since the last fsync, in order */
	size_t nops, ops_cap;
	const struct ffile *locker; /* the open file holding the lock */
	/* directories */
	struct fdirent *ents;
	size_t nents, ents_cap;
};

enum dirop_kind { DOP_CREATE, DOP_MKDIR, DOP_UNLINK, DOP_RMDIR, DOP_RENAME };

/* A directory change not yet made durable by fsync_dir. */
struct dirop {
	enum dirop_kind kind;
	struct fnode *dir;          /* entry added, removed or renamed from */
	char *name;
	struct fnode *node;         /* what the entry names */
	struct fnode *dir2;         /* DOP_RENAME: the new entry */
	char *name2;
	struct fnode *replaced;     /* DOP_RENAME: what name2 named, or NULL */
};

struct fault_bio {
	struct bio base;
	pthread_mutex_t lock;       /* protects all below and every node */
	uint64_t rng;               /* splitmix64 state */
	struct fnode *root;
	struct fnode *nodes_head, *nodes_tail;  /* every live node */
	struct dirop *dirops;       /* oldest first */
	size_t ndirops, dirops_cap;
	unsigned gen;               /* bumped by a crash: older files are stale */
	unsigned fail_fsync;        /* the nth sync from now fails; 0: none */
	unsigned die_left;          /* write_batches until the disk dies */
	bool dead;                  /* every write and sync fails */
	uint64_t written;
};

/* What a struct bio_file * handed out by this table points at. */
struct ffile {
	struct fault_bio *io;
	struct fnode *node;         /* holds a reference */
	unsigned gen;               /* io->gen when opened */
	int flags;
};

/* A resolved path: the entry name in dir, and the node it names if any. */
struct fpath {
	struct fnode *dir;          /* NULL when the path is the root */
	const char *name;           /* points into the caller's path */
	size_t len;
	struct fnode *node;
};

static const struct bio_ops fault_ops;

static struct fault_bio *fbio(struct bio *io)
{
	return (struct fault_bio *)io;
}

static struct ffile *ffile(struct bio_file *f)
{
	return (struct ffile *)f;
}

static uint64_t rnd(struct fault_bio *io)
{
	uint64_t z = (io->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/*
 * arr (of *cap elements of size elem) with room for need elements: arr
 * itself, a reallocation of it, or NULL when memory ran out.
 */
static void *grow(void *arr, size_t *cap, size_t need, size_t elem)
{
	size_t ncap = *cap ? *cap : 8;

	if (need <= *cap)
		return arr;
	while (ncap < need)
		ncap *= 2;
	arr = realloc(arr, ncap * elem);
	if (arr)
		*cap = ncap;
	return arr;
}

/* ---- file contents ---- */

/* Set the size; new bytes read as zero. */
static int fbuf_resize(struct fbuf *b, uint64_t size)
{
	if (size > FAULT_MAX_FILE)
		return -EFBIG;
	if (size > b->cap) {
		uint64_t cap = b->cap ? b->cap : 4096;
		uint8_t *n;

		while (cap < size)
			cap *= 2;
		n = realloc(b->data, cap);
		if (!n)
			return -ENOMEM;
		b->data = n;
		b->cap = cap;
	}
	if (size > b->size)
		memset(b->data + b->size, 0, size - b->size);
	b->size = size;
	return 0;
}

static int fbuf_write(struct fbuf *b, uint64_t off, const void *src,
		      uint64_t len)
{
	int err;

	if (off > FAULT_MAX_FILE || len > FAULT_MAX_FILE - off)
		return -EFBIG;
	if (off + len > b->size) {
		err = fbuf_resize(b, off + len);
		if (err)
			return err;
	}
	memcpy(b->data + off, src, len);
	return 0;
}

static int fbuf_copy(struct fbuf *dst, const struct fbuf *src)
{
	int err = fbuf_resize(dst, src->size);

	if (!err && src->size)
		memcpy(dst->data, src->data, src->size);
	return err;
}

static int fop_apply(struct fbuf *b, const struct fop *op)
{
	switch (op->kind) {
	case FOP_WRITE:
		return fbuf_write(b, op->off, op->data, op->len);
	case FOP_TRUNCATE:
		return fbuf_resize(b, op->len);
	case FOP_ALLOCATE:
		return op->len > b->size ? fbuf_resize(b, op->len) : 0;
	}
	return -EINVAL;
}

/* Crash step 2 for one write: keep a random subset of its sectors. */
static void fop_tear(struct fault_bio *io, struct fbuf *b, const struct fop *op)
{
	uint64_t end = op->off + op->len;

	for (uint64_t s = op->off & ~(uint64_t)(SECTOR - 1); s < end; s += SECTOR) {
		uint64_t from = s > op->off ? s : op->off;
		uint64_t to = s + SECTOR < end ? s + SECTOR : end;

		if (rnd(io) & 1)
			fbuf_write(b, from, op->data + (from - op->off), to - from);
	}
}

/* Crash step 2 for one change: keep, drop or tear it. */
static void fop_crash(struct fault_bio *io, struct fbuf *b, const struct fop *op)
{
	switch (rnd(io) % 3) {
	case 0:
		fop_apply(b, op);
		break;
	case 1:
		break;
	default:
		if (op->kind == FOP_WRITE)
			fop_tear(io, b, op);
		else if (rnd(io) & 1)   /* a size change is all or nothing */
			fop_apply(b, op);
	}
}

static void fops_clear(struct fnode *n)
{
	for (size_t i = 0; i < n->nops; i++)
		free(n->ops[i].data);
	n->nops = 0;
}

/* Log a change (taking ownership of op->data) and apply it to cur. */
static int fop_add(struct fnode *n, struct fop *op)
{
	struct fop *ops = grow(n->ops, &n->ops_cap, n->nops + 1, sizeof(*ops));
	int err = -ENOMEM;

	if (ops) {
		n->ops = ops;
		err = fop_apply(&n->cur, op);
	}
	if (err) {
		free(op->data);
		return err;
	}
	n->ops[n->nops++] = *op;
	return 0;
}

/* Make a file's changes durable: replay its log onto dur. */
static int fnode_sync(struct fnode *n)
{
	int err = 0;

	for (size_t i = 0; !err && i < n->nops; i++)
		err = fop_apply(&n->dur, &n->ops[i]);
	if (err)
		return err;
	fops_clear(n);
	return 0;
}

/* True when this sync is the one bio_fault_fail_fsync() asked to fail. */
static bool sync_fails(struct fault_bio *io)
{
	return io->fail_fsync && --io->fail_fsync == 0;
}

/* ---- nodes ---- */

static struct fnode *node_new(struct fault_bio *io, bool is_dir)
{
	struct fnode *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->is_dir = is_dir;
	n->prev = io->nodes_tail;
	if (io->nodes_tail)
		io->nodes_tail->next = n;
	else
		io->nodes_head = n;
	io->nodes_tail = n;
	return n;
}

static void node_get(struct fnode *n)
{
	if (n)
		n->refs++;
}

static void node_put(struct fault_bio *io, struct fnode *n);

static void node_free(struct fault_bio *io, struct fnode *n)
{
	if (n->prev)
		n->prev->next = n->next;
	else
		io->nodes_head = n->next;
	if (n->next)
		n->next->prev = n->prev;
	else
		io->nodes_tail = n->prev;
	for (size_t i = 0; i < n->nents; i++) {
		free(n->ents[i].name);
		node_put(io, n->ents[i].node);
	}
	fops_clear(n);
	free(n->ops);
	free(n->ents);
	free(n->cur.data);
	free(n->dur.data);
	free(n);
}

static void node_put(struct fault_bio *io, struct fnode *n)
{
	if (n && --n->refs == 0)
		node_free(io, n);
}

/* ---- directory entries ---- */

static struct fdirent *ent_find(struct fnode *dir, const char *name,
				size_t len)
{
	for (size_t i = 0; i < dir->nents; i++)
		if (strlen(dir->ents[i].name) == len &&
		    !memcmp(dir->ents[i].name, name, len))
			return &dir->ents[i];
	return NULL;
}

static struct fnode *ent_get(struct fnode *dir, const char *name, size_t len)
{
	struct fdirent *e = ent_find(dir, name, len);

	return e ? e->node : NULL;
}

/* Point name in dir at node, adding or replacing the entry. */
static int ent_set(struct fault_bio *io, struct fnode *dir, const char *name,
		   size_t len, struct fnode *node)
{
	struct fdirent *e = ent_find(dir, name, len);

	node_get(node);
	if (e) {
		node_put(io, e->node);
		e->node = node;
		return 0;
	}
	e = grow(dir->ents, &dir->ents_cap, dir->nents + 1, sizeof(*e));
	if (!e)
		goto out_put;
	dir->ents = e;
	e = &dir->ents[dir->nents];
	e->name = strndup(name, len);
	if (!e->name)
		goto out_put;
	e->node = node;
	dir->nents++;
	return 0;

out_put:
	node_put(io, node);
	return -ENOMEM;
}

static void ent_remove(struct fault_bio *io, struct fnode *dir,
		       const char *name, size_t len)
{
	struct fdirent *e = ent_find(dir, name, len);

	if (!e)
		return;
	free(e->name);
	node_put(io, e->node);
	*e = dir->ents[--dir->nents];
}

/* ---- paths ---- */

/* The next component of *s (skipping "/" and "."); false at the end. */
static bool path_next(const char **s, const char **name, size_t *len)
{
	for (;;) {
		while (**s == '/')
			(*s)++;
		if (!**s)
			return false;
		*name = *s;
		*len = strcspn(*s, "/");
		*s += *len;
		if (*len != 1 || **name != '.')
			return true;
	}
}

/* Walk path: its last component's directory and node (if present). */
static int path_resolve(struct fault_bio *io, const char *path,
			struct fpath *p)
{
	const char *s = path, *name;
	size_t len;

	p->dir = NULL;
	p->node = io->root;
	p->name = NULL;
	p->len = 0;
	while (path_next(&s, &name, &len)) {
		if (len > FAULT_MAX_NAME)
			return -ENAMETOOLONG;
		if (len == 2 && !memcmp(name, "..", 2))
			return -EINVAL;   /* not modelled */
		if (!p->node)
			return -ENOENT;
		if (!p->node->is_dir)
			return -ENOTDIR;
		p->dir = p->node;
		p->name = name;
		p->len = len;
		p->node = ent_get(p->dir, name, len);
	}
	return 0;
}

/* ---- the directory log ---- */

/* Log a directory change; references and names are taken. */
static int dirop_add(struct fault_bio *io, const struct dirop *tmpl,
		     const struct fpath *from, const struct fpath *to)
{
	struct dirop *op;

	op = grow(io->dirops, &io->dirops_cap, io->ndirops + 1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	io->dirops = op;
	op = &io->dirops[io->ndirops];
	*op = *tmpl;
	op->name = strndup(from->name, from->len);
	op->name2 = to ? strndup(to->name, to->len) : NULL;
	if (!op->name || (to && !op->name2)) {
		free(op->name);
		free(op->name2);
		return -ENOMEM;
	}
	node_get(op->dir);
	node_get(op->node);
	node_get(op->dir2);
	node_get(op->replaced);
	io->ndirops++;
	return 0;
}

static void dirop_release(struct fault_bio *io, struct dirop *op)
{
	free(op->name);
	free(op->name2);
	node_put(io, op->dir);
	node_put(io, op->node);
	node_put(io, op->dir2);
	node_put(io, op->replaced);
}

static bool dir_empty(const struct fnode *n)
{
	return !n->is_dir || n->nents == 0;
}

/* Crash step 1 for one change: put the tree back as it was before it. */
static void dirop_undo(struct fault_bio *io, const struct dirop *op)
{
	size_t len = strlen(op->name);

	switch (op->kind) {
	case DOP_CREATE:
	case DOP_MKDIR:
		if (ent_get(op->dir, op->name, len) == op->node &&
		    dir_empty(op->node))
			ent_remove(io, op->dir, op->name, len);
		break;
	case DOP_UNLINK:
	case DOP_RMDIR:
		if (!ent_get(op->dir, op->name, len))
			ent_set(io, op->dir, op->name, len, op->node);
		break;
	case DOP_RENAME:
		if (ent_get(op->dir2, op->name2, strlen(op->name2)) != op->node ||
		    ent_get(op->dir, op->name, len))
			break;
		ent_set(io, op->dir, op->name, len, op->node);
		if (op->replaced)
			ent_set(io, op->dir2, op->name2, strlen(op->name2),
				op->replaced);
		else
			ent_remove(io, op->dir2, op->name2, strlen(op->name2));
		break;
	}
}

/* fsync_dir: changes to dir are durable now. */
static void dirops_sync(struct fault_bio *io, const struct fnode *dir)
{
	size_t kept = 0;

	for (size_t i = 0; i < io->ndirops; i++) {
		struct dirop *op = &io->dirops[i];

		if (op->dir == dir || op->dir2 == dir)
			dirop_release(io, op);
		else
			io->dirops[kept++] = *op;
	}
	io->ndirops = kept;
}

/* Crash step 1. */
static void dirops_crash(struct fault_bio *io)
{
	for (size_t i = io->ndirops; i-- > 0;)
		if (rnd(io) & 1)
			dirop_undo(io, &io->dirops[i]);
	for (size_t i = 0; i < io->ndirops; i++)
		dirop_release(io, &io->dirops[i]);
	io->ndirops = 0;
}

/* ---- files ---- */

/* -EIO when f predates a crash. */
static int ffile_check(const struct ffile *f)
{
	return f->gen == f->io->gen ? 0 : -EIO;
}

/* Checks for a change to f's contents. */
static int ffile_check_write(const struct ffile *f)
{
	if (ffile_check(f) || f->io->dead)
		return -EIO;
	return (f->flags & BIO_RDWR) ? 0 : -EBADF;
}

/* Create a file at p (resolved, missing) and log it. */
static int file_create(struct fault_bio *io, const struct fpath *p)
{
	struct dirop op = { .kind = DOP_CREATE, .dir = p->dir };
	struct fnode *n;
	int err;

	if (io->dead)
		return -EIO;
	n = node_new(io, false);
	if (!n)
		return -ENOMEM;
	op.node = n;
	err = ent_set(io, p->dir, p->name, p->len, n);
	if (err) {
		node_free(io, n);
		return err;
	}
	err = dirop_add(io, &op, p, NULL);
	if (err)   /* frees n with its only reference */
		ent_remove(io, p->dir, p->name, p->len);
	return err;
}

/* Resolve (and with BIO_CREATE make) the file an open names. */
static int open_node(struct fault_bio *io, const char *path, int flags,
		     struct fnode **out)
{
	struct fpath p;
	int err = path_resolve(io, path, &p);

	if (err)
		return err;
	if (p.node && (flags & BIO_CREATE) && (flags & BIO_EXCL))
		return -EEXIST;
	if (p.node && p.node->is_dir)
		return -EISDIR;
	if (!p.node && !(flags & BIO_CREATE))
		return -ENOENT;
	if (!p.node) {
		err = file_create(io, &p);
		p.node = ent_get(p.dir, p.name, p.len);
	}
	*out = p.node;
	return err;
}

static int fault_open(struct bio *bio, const char *path, int flags,
		      struct bio_file **out)
{
	struct fault_bio *io = fbio(bio);
	struct ffile *f;
	int err;

	if (flags & ~(BIO_RDWR | BIO_CREATE | BIO_EXCL))
		return -EINVAL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	pthread_mutex_lock(&io->lock);
	err = open_node(io, path, flags, &f->node);
	if (!err) {
		node_get(f->node);
		f->io = io;
		f->gen = io->gen;
		f->flags = flags;
		*out = (struct bio_file *)f;
	}
	pthread_mutex_unlock(&io->lock);
	if (err)
		free(f);
	return err;
}

static void fault_close(struct bio_file *bf)
{
	struct ffile *f = ffile(bf);
	struct fault_bio *io;

	if (!f)
		return;
	io = f->io;
	pthread_mutex_lock(&io->lock);
	if (f->node->locker == f)
		f->node->locker = NULL;
	node_put(io, f->node);
	pthread_mutex_unlock(&io->lock);
	free(f);
}

static ssize_t fault_read(struct bio_file *bf, void *buf, size_t len,
			  uint64_t off)
{
	struct ffile *f = ffile(bf);
	const struct fbuf *b = &f->node->cur;
	ssize_t got = 0;

	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	pthread_mutex_lock(&f->io->lock);
	if (ffile_check(f)) {
		got = -EIO;
	} else if (off < b->size) {
		got = (ssize_t)(b->size - off < len ? b->size - off : len);
		memcpy(buf, b->data + off, (size_t)got);
	}
	pthread_mutex_unlock(&f->io->lock);
	return got;
}

/* Copy one write's gathered bytes and log it on its file. */
static int file_write(struct fault_bio *io, const struct bio_write *w)
{
	struct fop op = { .kind = FOP_WRITE, .off = w->off };
	uint64_t len;
	uint8_t *p;
	int err;

	for (int i = 0; i < w->iovcnt; i++)
		op.len += w->iov[i].iov_len;
	op.data = malloc(op.len ? op.len : 1);
	if (!op.data)
		return -ENOMEM;
	p = op.data;
	for (int i = 0; i < w->iovcnt; i++) {
		memcpy(p, w->iov[i].iov_base, w->iov[i].iov_len);
		p += w->iov[i].iov_len;
	}
	len = op.len;
	err = fop_add(ffile(w->file)->node, &op);
	if (!err)
		io->written += len;
	return err;
}

/* Sync each distinct file of a batch, in order; stops at a failure. */
static int batch_sync(struct fault_bio *io, const struct bio_write *w, int n)
{
	for (int i = 0; i < n; i++) {
		struct fnode *node = ffile(w[i].file)->node;
		bool seen = false;
		int err;

		for (int j = 0; j < i && !seen; j++)
			seen = ffile(w[j].file)->node == node;
		if (seen)
			continue;
		err = sync_fails(io) ? -EIO : fnode_sync(node);
		if (err)
			return err;
	}
	return 0;
}

static int batch_check(const struct bio_write *w, int n)
{
	for (int i = 0; i < n; i++) {
		int err;

		if (!w[i].file || w[i].iovcnt < 0)
			return -EINVAL;
		err = ffile_check_write(ffile(w[i].file));
		if (err)
			return err;
	}
	return 0;
}

static int fault_write_batch(struct bio *bio, const struct bio_write *w,
			     int n, bool sync)
{
	struct fault_bio *io = fbio(bio);
	int err;

	if (n < 0 || (n > 0 && !w))
		return -EINVAL;
	pthread_mutex_lock(&io->lock);
	err = io->dead ? -EIO : batch_check(w, n);
	for (int i = 0; !err && i < n; i++)
		err = file_write(io, &w[i]);
	if (!err && sync)
		err = batch_sync(io, w, n);
	if (!err && io->die_left && --io->die_left == 0)
		io->dead = true;
	pthread_mutex_unlock(&io->lock);
	return err;
}

static int fault_fsync(struct bio_file *bf)
{
	struct ffile *f = ffile(bf);
	int err;

	pthread_mutex_lock(&f->io->lock);
	err = ffile_check(f);
	if (!err && (f->io->dead || sync_fails(f->io)))
		err = -EIO;
	if (!err)
		err = fnode_sync(f->node);
	pthread_mutex_unlock(&f->io->lock);
	return err;
}

/* Log and apply a size change (truncate or allocate). */
static int file_resize(struct bio_file *bf, enum fop_kind kind, uint64_t len)
{
	struct ffile *f = ffile(bf);
	struct fop op = { .kind = kind, .len = len };
	int err;

	if (len > FAULT_MAX_FILE)
		return -EFBIG;
	pthread_mutex_lock(&f->io->lock);
	err = ffile_check_write(f);
	if (!err)
		err = fop_add(f->node, &op);
	pthread_mutex_unlock(&f->io->lock);
	return err;
}

/* Like fallocate(2) mode 0: extends the size when len is larger. */
static int fault_allocate(struct bio_file *f, uint64_t len)
{
	return file_resize(f, FOP_ALLOCATE, len);
}

static int fault_truncate(struct bio_file *f, uint64_t len)
{
	return file_resize(f, FOP_TRUNCATE, len);
}

static int fault_size(struct bio_file *bf, uint64_t *len)
{
	struct ffile *f = ffile(bf);
	int err;

	pthread_mutex_lock(&f->io->lock);
	err = ffile_check(f);
	if (!err)
		*len = f->node->cur.size;
	pthread_mutex_unlock(&f->io->lock);
	return err;
}

/* One lock per file, as flock(2) between two opens. */
static int fault_lock(struct bio_file *bf)
{
	struct ffile *f = ffile(bf);
	int err;

	pthread_mutex_lock(&f->io->lock);
	err = ffile_check(f);
	if (!err && f->node->locker && f->node->locker != f)
		err = -EWOULDBLOCK;
	if (!err)
		f->node->locker = f;
	pthread_mutex_unlock(&f->io->lock);
	return err;
}

/* ---- directories ---- */

/* Resolve path under the lock for a change: -EIO on a dead disk. */
static int dir_change_begin(struct fault_bio *io, const char *path,
			    struct fpath *p)
{
	pthread_mutex_lock(&io->lock);
	if (io->dead)
		return -EIO;
	return path_resolve(io, path, p);
}

static int dir_change_end(struct fault_bio *io, int err)
{
	pthread_mutex_unlock(&io->lock);
	return err;
}

static int do_mkdir(struct fault_bio *io, const struct fpath *p)
{
	struct dirop op = { .kind = DOP_MKDIR, .dir = p->dir };
	int err;

	if (p->node)
		return -EEXIST;
	op.node = node_new(io, true);
	if (!op.node)
		return -ENOMEM;
	err = ent_set(io, p->dir, p->name, p->len, op.node);
	if (err) {
		node_free(io, op.node);
		return err;
	}
	err = dirop_add(io, &op, p, NULL);
	if (err)
		ent_remove(io, p->dir, p->name, p->len);
	return err;
}

static int fault_mkdir(struct bio *bio, const char *path)
{
	struct fault_bio *io = fbio(bio);
	struct fpath p;
	int err = dir_change_begin(io, path, &p);

	if (!err)
		err = do_mkdir(io, &p);
	return dir_change_end(io, err);
}

/* Remove the entry at p, logging it as kind. */
static int do_remove(struct fault_bio *io, const struct fpath *p,
		     enum dirop_kind kind)
{
	struct dirop op = { .kind = kind, .dir = p->dir, .node = p->node };
	int err;

	if (!p->node)
		return -ENOENT;
	if (!p->dir)
		return -EBUSY;
	if (kind == DOP_RMDIR && !p->node->is_dir)
		return -ENOTDIR;
	if (kind == DOP_RMDIR && p->node->nents)
		return -ENOTEMPTY;
	if (kind == DOP_UNLINK && p->node->is_dir)
		return -EISDIR;
	err = dirop_add(io, &op, p, NULL);
	if (!err)
		ent_remove(io, p->dir, p->name, p->len);
	return err;
}

static int fault_rmdir(struct bio *bio, const char *path)
{
	struct fault_bio *io = fbio(bio);
	struct fpath p;
	int err = dir_change_begin(io, path, &p);

	if (!err)
		err = do_remove(io, &p, DOP_RMDIR);
	return dir_change_end(io, err);
}

static int fault_unlink(struct bio *bio, const char *path)
{
	struct fault_bio *io = fbio(bio);
	struct fpath p;
	int err = dir_change_begin(io, path, &p);

	if (!err)
		err = do_remove(io, &p, DOP_UNLINK);
	return dir_change_end(io, err);
}

/* Is n, or a directory below it, the directory d? */
static bool dir_contains(const struct fnode *n, const struct fnode *d)
{
	if (n == d)
		return true;
	for (size_t i = 0; n->is_dir && i < n->nents; i++)
		if (dir_contains(n->ents[i].node, d))
			return true;
	return false;
}

/* rename(2)'s checks of source and target. */
static int rename_check(const struct fpath *from, const struct fpath *to)
{
	const struct fnode *src = from->node, *dst = to->node;

	if (!src)
		return -ENOENT;
	if (!from->dir || !to->dir)
		return -EBUSY;
	if (src->is_dir && dir_contains(src, to->dir))
		return -EINVAL;
	if (dst && src->is_dir && !dst->is_dir)
		return -ENOTDIR;
	if (dst && !src->is_dir && dst->is_dir)
		return -EISDIR;
	if (dst && dst != src && !dir_empty(dst))
		return -ENOTEMPTY;
	return 0;
}

static int do_rename(struct fault_bio *io, const struct fpath *from,
		     const struct fpath *to)
{
	struct dirop op = {
		.kind = DOP_RENAME, .dir = from->dir, .node = from->node,
		.dir2 = to->dir, .replaced = to->node,
	};
	int err = rename_check(from, to);

	if (err || from->node == to->node)
		return err;   /* the same file: nothing to do */
	err = dirop_add(io, &op, from, to);
	if (err)
		return err;
	err = ent_set(io, to->dir, to->name, to->len, from->node);
	if (err)
		return err;
	ent_remove(io, from->dir, from->name, from->len);
	return 0;
}

static int fault_rename(struct bio *bio, const char *from, const char *to)
{
	struct fault_bio *io = fbio(bio);
	struct fpath pf, pt;
	int err = dir_change_begin(io, from, &pf);

	if (!err)
		err = path_resolve(io, to, &pt);
	if (!err)
		err = do_rename(io, &pf, &pt);
	return dir_change_end(io, err);
}

static void names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Copy the entry names of dir (so callbacks run without the lock). */
static int list_names(struct fault_bio *io, const char *dir, char ***out,
		      size_t *n)
{
	struct fpath p;
	char **names;
	int err = path_resolve(io, dir, &p);

	if (err)
		return err;
	if (!p.node)
		return -ENOENT;
	if (!p.node->is_dir)
		return -ENOTDIR;
	names = calloc(p.node->nents + 1, sizeof(*names));
	if (!names)
		return -ENOMEM;
	for (*n = 0; *n < p.node->nents; (*n)++) {
		names[*n] = strdup(p.node->ents[*n].name);
		if (!names[*n]) {
			names_free(names, *n);
			return -ENOMEM;
		}
	}
	*out = names;
	return 0;
}

/* As the io_uring table: a positive callback return stops with 0. */
static int fault_list(struct bio *bio, const char *dir, bio_list_cb cb,
		      void *arg)
{
	struct fault_bio *io = fbio(bio);
	char **names = NULL;
	size_t n = 0;
	int err;

	pthread_mutex_lock(&io->lock);
	err = list_names(io, dir, &names, &n);
	pthread_mutex_unlock(&io->lock);
	for (size_t i = 0; !err && i < n; i++)
		err = cb(arg, names[i]);
	names_free(names, n);
	return err < 0 ? err : 0;
}

/* Also counts as an fsync for bio_fault_fail_fsync(). */
static int fault_fsync_dir(struct bio *bio, const char *dir)
{
	struct fault_bio *io = fbio(bio);
	struct fpath p;
	int err = dir_change_begin(io, dir, &p);

	if (!err && !p.node)
		err = -ENOENT;
	if (!err && !p.node->is_dir)
		err = -ENOTDIR;
	if (!err && sync_fails(io))
		err = -EIO;
	if (!err)
		dirops_sync(io, p.node);
	return dir_change_end(io, err);
}

static uint64_t fault_bytes_written(struct bio *bio)
{
	struct fault_bio *io = fbio(bio);
	uint64_t n;

	pthread_mutex_lock(&io->lock);
	n = io->written;
	pthread_mutex_unlock(&io->lock);
	return n;
}

/* ---- lifecycle and fault control ---- */

/* Files must be closed first. */
static void fault_free(struct bio *bio)
{
	struct fault_bio *io = fbio(bio);

	if (!io)
		return;
	for (size_t i = 0; i < io->ndirops; i++) {
		free(io->dirops[i].name);
		free(io->dirops[i].name2);
	}
	free(io->dirops);
	while (io->nodes_head) {
		struct fnode *n = io->nodes_head;

		for (size_t i = 0; i < n->nents; i++)
			n->ents[i].node = NULL;   /* freed by this loop */
		node_free(io, n);
	}
	pthread_mutex_destroy(&io->lock);
	free(io);
}

struct bio *bio_fault_new(uint64_t seed)
{
	struct fault_bio *io = calloc(1, sizeof(*io));

	if (!io)
		return NULL;
	io->base.ops = &fault_ops;
	io->rng = seed;
	io->root = node_new(io, true);
	if (!io->root) {
		free(io);
		errno = ENOMEM;
		return NULL;
	}
	io->root->refs = 1;
	pthread_mutex_init(&io->lock, NULL);
	return &io->base;
}

static struct fault_bio *as_fault(struct bio *bio)
{
	return bio && bio->ops == &fault_ops ? fbio(bio) : NULL;
}

/* Crash step 2 for one file, then step 3's cur = dur. */
static void file_crash(struct fault_bio *io, struct fnode *n)
{
	for (size_t i = 0; i < n->nops; i++)
		fop_crash(io, &n->dur, &n->ops[i]);
	fops_clear(n);
	fbuf_copy(&n->cur, &n->dur);
	n->locker = NULL;
}

void bio_fault_crash(struct bio *bio)
{
	struct fault_bio *io = as_fault(bio);

	if (!io)
		return;
	pthread_mutex_lock(&io->lock);
	dirops_crash(io);
	for (struct fnode *n = io->nodes_head; n; n = n->next)
		if (!n->is_dir)
			file_crash(io, n);
	io->gen++;
	io->dead = false;
	io->die_left = 0;
	io->fail_fsync = 0;
	pthread_mutex_unlock(&io->lock);
}

void bio_fault_fail_fsync(struct bio *bio, unsigned nth)
{
	struct fault_bio *io = as_fault(bio);

	if (!io)
		return;
	pthread_mutex_lock(&io->lock);
	io->fail_fsync = nth;
	pthread_mutex_unlock(&io->lock);
}

void bio_fault_die_after(struct bio *bio, unsigned k)
{
	struct fault_bio *io = as_fault(bio);

	if (!io)
		return;
	pthread_mutex_lock(&io->lock);
	io->die_left = k;
	pthread_mutex_unlock(&io->lock);
}

/* Flip the bit in cur, dur and every logged write over off. */
static void node_flip(struct fnode *n, uint64_t off, uint8_t mask)
{
	n->cur.data[off] ^= mask;
	if (off < n->dur.size)
		n->dur.data[off] ^= mask;
	for (size_t i = 0; i < n->nops; i++) {
		struct fop *op = &n->ops[i];

		if (op->kind == FOP_WRITE && off >= op->off &&
		    off - op->off < op->len)
			op->data[off - op->off] ^= mask;
	}
}

int bio_fault_flip(struct bio *bio, const char *path, uint64_t off, int bit)
{
	struct fault_bio *io = as_fault(bio);
	struct fpath p;
	int err;

	if (!io || bit < 0 || bit > 7)
		return -EINVAL;
	pthread_mutex_lock(&io->lock);
	err = path_resolve(io, path, &p);
	if (!err && !p.node)
		err = -ENOENT;
	if (!err && p.node->is_dir)
		err = -EISDIR;
	if (!err && off >= p.node->cur.size)
		err = -EINVAL;
	if (!err)
		node_flip(p.node, off, (uint8_t)(1u << bit));
	pthread_mutex_unlock(&io->lock);
	return err;
}

static const struct bio_ops fault_ops = {
	.open = fault_open,
	.close = fault_close,
	.read = fault_read,
	.write_batch = fault_write_batch,
	.fsync = fault_fsync,
	.allocate = fault_allocate,
	.truncate = fault_truncate,
	.size = fault_size,
	.lock = fault_lock,
	.mkdir = fault_mkdir,
	.rmdir = fault_rmdir,
	.unlink = fault_unlink,
	.rename = fault_rename,
	.list = fault_list,
	.fsync_dir = fault_fsync_dir,
	.bytes_written = fault_bytes_written,
	.free = fault_free,
};
