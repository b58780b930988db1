/*
 * A catalog over an environment of its own (barrel-syncd, barrelsync):
 * each database is opened as documents on first use and stays open.
 * An entry is never freed before the catalog, so a request holding one
 * is safe while another drops the database: drop takes the entry's lock
 * for writing, which waits for the holders.
 *
 * Locks, outermost first: ent->use (rwlock: a request reads it, drop
 * and create write it), cat->lock (the entry list: held briefly).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/view.h"
#include "sync/catalog.h"

struct ent {
	char *name;
	struct docdb *d;          /* NULL when closed or dropped; by use */
	struct view_indexer *vi;  /* d's, when the catalog has views */
	pthread_rwlock_t use;
	struct ent *next;         /* protected by env_cat->lock */
};

struct env_cat {
	struct catalog cat;
	struct benv *env;
	struct docdb_opts opts;
	bool views;
	pthread_mutex_t lock;
	struct ent *ents;         /* protected by lock */
};

/* The entry for name, made if missing; NULL without memory. */
static struct ent *ent_get(struct env_cat *c, const char *name)
{
	struct ent *e;

	pthread_mutex_lock(&c->lock);
	for (e = c->ents; e && strcmp(e->name, name); e = e->next)
		;
	if (!e && (e = calloc(1, sizeof(*e)))) {
		if (!(e->name = strdup(name))) {
			free(e);
			e = NULL;
		} else {
			pthread_rwlock_init(&e->use, NULL);
			e->next = c->ents;
			c->ents = e;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return e;
}

/* Open e's documents if they are not (e->use held for writing). */
static int ent_open(struct env_cat *c, struct ent *e, bool create)
{
	int rc;

	if (e->d)
		return 0;
	if ((rc = docdb_open(c->env, e->name, create, &c->opts, &e->d)))
		return rc;
	if (c->views && (rc = view_indexer_start(e->d, NULL, &e->vi))) {
		docdb_close(e->d);
		e->d = NULL;
	}
	return rc;
}

/* Close e's documents (e->use held for writing, or the last user). */
static void ent_close(struct ent *e)
{
	view_indexer_stop(e->vi);
	e->vi = NULL;
	docdb_close(e->d);
	e->d = NULL;
}

static int cat_acquire(void *arg, const char *name, struct docdb **d,
		       void **hold)
{
	struct env_cat *c = arg;
	struct ent *e;
	int rc;

	if (!bdb_name_valid(name))
		return BARREL_E_INVALID;
	if (!(e = ent_get(c, name)))
		return -ENOMEM;
	pthread_rwlock_rdlock(&e->use);
	if (e->d)
		goto out_held;
	pthread_rwlock_unlock(&e->use);
	pthread_rwlock_wrlock(&e->use);
	rc = ent_open(c, e, false);
	pthread_rwlock_unlock(&e->use);
	if (rc)
		return rc;
	pthread_rwlock_rdlock(&e->use);
	if (!e->d) {                    /* dropped in between */
		pthread_rwlock_unlock(&e->use);
		return BARREL_E_NOTFOUND;
	}
out_held:
	*d = e->d;
	*hold = e;
	return 0;
}

static void cat_release(void *arg, void *hold)
{
	struct ent *e = hold;

	(void)arg;
	pthread_rwlock_unlock(&e->use);
}

static struct view_indexer *cat_views(void *arg, void *hold)
{
	(void)arg;
	return ((struct ent *)hold)->vi;
}

/* name's entry, locked for writing (unlock e->use after). */
static int ent_write(struct env_cat *c, const char *name, struct ent **e)
{
	if (!bdb_name_valid(name))
		return BARREL_E_INVALID;
	if (!(*e = ent_get(c, name)))
		return -ENOMEM;
	pthread_rwlock_wrlock(&(*e)->use);
	return 0;
}

static int cat_create(void *arg, const char *name)
{
	struct env_cat *c = arg;
	struct ent *e;
	struct bdb *db;
	int rc = ent_write(c, name, &e);

	if (rc)
		return rc;
	rc = benv_db(c->env, name, false, &db);
	if (rc == 0 || e->d)
		rc = BARREL_E_EXISTS;
	else if (rc == BARREL_E_NOTFOUND)
		rc = ent_open(c, e, true);
	pthread_rwlock_unlock(&e->use);
	return rc;
}

static int cat_drop(void *arg, const char *name)
{
	struct env_cat *c = arg;
	struct ent *e;
	int rc = ent_write(c, name, &e);

	if (rc)
		return rc;
	if (!(rc = ent_open(c, e, false))) {
		ent_close(e);
		rc = benv_drop(c->env, name);
	}
	pthread_rwlock_unlock(&e->use);
	return rc;
}

static int cat_list(void *arg, int (*cb)(void *cbarg, const char *name),
		    void *cbarg)
{
	struct env_cat *c = arg;

	return benv_list(c->env, cb, cbarg);
}

int catalog_env_new(struct benv *env, const struct docdb_opts *opts,
		    bool views, struct catalog **out)
{
	struct env_cat *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->env = env;
	c->views = views;
	if (opts)
		c->opts = *opts;
	pthread_mutex_init(&c->lock, NULL);
	c->cat = (struct catalog){
		.arg = c,
		.acquire = cat_acquire,
		.release = cat_release,
		.views = cat_views,
		.create = cat_create,
		.drop = cat_drop,
		.list = cat_list,
	};
	*out = &c->cat;
	return 0;
}

void catalog_env_free(struct catalog *cat)
{
	struct env_cat *c;
	struct ent *e;

	if (!cat)
		return;
	c = cat->arg;
	while ((e = c->ents)) {
		c->ents = e->next;
		ent_close(e);
		pthread_rwlock_destroy(&e->use);
		free(e->name);
		free(e);
	}
	pthread_mutex_destroy(&c->lock);
	free(c);
}
