/*
 * Inodes: the table of nodes, by number and by (parent, name), with the
 * kernel's lookup counts (fs.h). A node is freed when the kernel forgot
 * it and no open file uses it; inode numbers are never reused.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/fs.h"

void proto_release(struct proto *p)
{
	free(p->id);
	free(p->key);
	memset(p, 0, sizeof(*p));
}

static size_t hash_ino(fuse_ino_t ino, size_t n)
{
	return (size_t)(ino * 0x9e3779b97f4a7c15ull >> 17) & (n - 1);
}

static size_t hash_name(fuse_ino_t parent, const char *name, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull ^ parent;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 0x100000001b3ull;
	return (size_t)(h ^ h >> 29) & (n - 1);
}

static void insert_ino(struct fs *fs, struct node *n)
{
	size_t b = hash_ino(n->ino, fs->nbuckets);

	n->next_ino = fs->by_ino[b];
	fs->by_ino[b] = n;
}

static void insert_name(struct fs *fs, struct node *n)
{
	size_t b = hash_name(n->parent, n->name, fs->nbuckets);

	n->next_name = fs->by_name[b];
	fs->by_name[b] = n;
	n->linked = true;
}

static void remove_ino(struct fs *fs, struct node *n)
{
	struct node **pp = &fs->by_ino[hash_ino(n->ino, fs->nbuckets)];

	while (*pp != n)
		pp = &(*pp)->next_ino;
	*pp = n->next_ino;
}

static void remove_name(struct fs *fs, struct node *n)
{
	struct node **pp;

	if (!n->linked)
		return;
	pp = &fs->by_name[hash_name(n->parent, n->name, fs->nbuckets)];
	while (*pp != n)
		pp = &(*pp)->next_name;
	*pp = n->next_name;
	n->linked = false;
}

/* Double the buckets when the table is full (fs->lock held). */
static void grow(struct fs *fs)
{
	size_t old = fs->nbuckets, nb = old * 2;
	struct node **oi = fs->by_ino, **on = fs->by_name;
	struct node **bi = calloc(nb, sizeof(*bi));
	struct node **bn = calloc(nb, sizeof(*bn));

	if (!bi || !bn) {       /* stay at this size: chains grow longer */
		free(bi);
		free(bn);
		return;
	}
	fs->by_ino = bi;
	fs->by_name = bn;
	fs->nbuckets = nb;
	for (size_t i = 0; i < old; i++) {
		for (struct node *n = oi[i], *next; n; n = next) {
			next = n->next_ino;
			insert_ino(fs, n);
		}
		for (struct node *n = on[i], *next; n; n = next) {
			next = n->next_name;
			insert_name(fs, n);
		}
	}
	free(oi);
	free(on);
}

static struct node *node_new(struct fs *fs, fuse_ino_t ino, fuse_ino_t parent,
			     const char *name, struct proto *p)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n || !(n->name = strdup(name))) {
		free(n);
		return NULL;
	}
	n->ino = ino;
	n->parent = parent;
	n->p = *p;
	memset(p, 0, sizeof(*p));
	n->spool = -1;
	pthread_mutex_init(&n->lock, NULL);
	if (fs->nnodes + 1 > fs->nbuckets)
		grow(fs);
	insert_ino(fs, n);
	insert_name(fs, n);
	fs->nnodes++;
	return n;
}

static void node_free(struct fs *fs, struct node *n)
{
	remove_ino(fs, n);
	remove_name(fs, n);
	fs->nnodes--;
	if (n->spool >= 0)
		close(n->spool);
	pthread_mutex_destroy(&n->lock);
	proto_release(&n->p);
	free(n->name);
	free(n);
}

int nodes_init(struct fs *fs)
{
	struct proto root = { .kind = NODE_ROOT };

	fs->nbuckets = 1024;
	fs->by_ino = calloc(fs->nbuckets, sizeof(*fs->by_ino));
	fs->by_name = calloc(fs->nbuckets, sizeof(*fs->by_name));
	if (!fs->by_ino || !fs->by_name)
		return -ENOMEM;
	fs->next_ino = FUSE_ROOT_ID + 1;
	if (!node_new(fs, FUSE_ROOT_ID, 0, "", &root))
		return -ENOMEM;
	return 0;
}

void nodes_release(struct fs *fs)
{
	for (size_t i = 0; fs->by_ino && i < fs->nbuckets; i++)
		while (fs->by_ino[i])
			node_free(fs, fs->by_ino[i]);
	free(fs->by_ino);
	free(fs->by_name);
	fs->by_ino = fs->by_name = NULL;
}

static struct node *find_ino(struct fs *fs, fuse_ino_t ino)
{
	struct node *n = fs->by_ino[hash_ino(ino, fs->nbuckets)];

	while (n && n->ino != ino)
		n = n->next_ino;
	return n;
}

static struct node *find_name(struct fs *fs, fuse_ino_t parent,
			      const char *name)
{
	struct node *n = fs->by_name[hash_name(parent, name, fs->nbuckets)];

	while (n && (n->parent != parent || strcmp(n->name, name)))
		n = n->next_name;
	return n;
}

struct node *node_get(struct fs *fs, fuse_ino_t ino)
{
	struct node *n;

	pthread_mutex_lock(&fs->lock);
	n = find_ino(fs, ino);
	pthread_mutex_unlock(&fs->lock);
	return n;
}

struct node *node_find(struct fs *fs, fuse_ino_t parent, const char *name)
{
	struct node *n;

	pthread_mutex_lock(&fs->lock);
	n = find_name(fs, parent, name);
	pthread_mutex_unlock(&fs->lock);
	return n;
}

/* A linked node whose identity changed (a scratch name that became an
 * attachment folder) is replaced: the old one leaves the name index. */
static bool same_thing(const struct node *n, const struct proto *p)
{
	return n->p.kind == p->kind && n->p.db == p->db &&
	       n->p.idlen == p->idlen &&
	       (!p->id || !memcmp(n->p.id, p->id, p->idlen)) &&
	       !(n->p.key ? !p->key || strcmp(n->p.key, p->key) : !!p->key);
}

struct node *node_enter(struct fs *fs, fuse_ino_t parent, const char *name,
			struct proto *p)
{
	struct node *n;

	pthread_mutex_lock(&fs->lock);
	n = find_name(fs, parent, name);
	if (n && !same_thing(n, p)) {
		remove_name(fs, n);
		n = NULL;
	}
	if (n)
		proto_release(p);
	else
		n = node_new(fs, fs->next_ino++, parent, name, p);
	if (n)
		n->nlookup++;
	pthread_mutex_unlock(&fs->lock);
	return n;
}

static void maybe_free(struct fs *fs, struct node *n)
{
	if (!n->nlookup && !n->nopen && n->ino != FUSE_ROOT_ID)
		node_free(fs, n);
}

void node_forget(struct fs *fs, fuse_ino_t ino, uint64_t count)
{
	struct node *n;

	pthread_mutex_lock(&fs->lock);
	n = find_ino(fs, ino);
	if (n) {
		n->nlookup = count < n->nlookup ? n->nlookup - count : 0;
		maybe_free(fs, n);
	}
	pthread_mutex_unlock(&fs->lock);
}

void node_unlink(struct fs *fs, struct node *n)
{
	pthread_mutex_lock(&fs->lock);
	remove_name(fs, n);
	pthread_mutex_unlock(&fs->lock);
}

int node_move(struct fs *fs, struct node *n, fuse_ino_t parent,
	      const char *name, struct proto *p)
{
	char *copy = strdup(name);
	struct node *old;

	if (!copy)
		return -ENOMEM;
	pthread_mutex_lock(&fs->lock);
	old = find_name(fs, parent, name);
	if (old && old != n)
		remove_name(fs, old);
	remove_name(fs, n);
	free(n->name);
	n->name = copy;
	n->parent = parent;
	proto_release(&n->p);
	n->p = *p;
	memset(p, 0, sizeof(*p));
	atomic_store(&n->cache_seq, 0);     /* its pages are another file's */
	insert_name(fs, n);
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

void node_open(struct fs *fs, struct node *n)
{
	pthread_mutex_lock(&fs->lock);
	n->nopen++;
	pthread_mutex_unlock(&fs->lock);
}

void node_close(struct fs *fs, struct node *n)
{
	pthread_mutex_lock(&fs->lock);
	n->nopen--;
	maybe_free(fs, n);
	pthread_mutex_unlock(&fs->lock);
}
