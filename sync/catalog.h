/*
 * The databases a server serves, behind a small table of operations.
 *
 * barrel-syncd and barrelsync serve an environment of their own
 * (catalog_env_new()); the mount serves its own databases, which it
 * also shows as directories (fs/db.c fills the table). The HTTP API
 * (api.h) and the replication endpoints reach databases only through a
 * catalog, so one server serves both.
 *
 * Errors: 0 or a negative code of error.h.
 */
#ifndef BARREL_SYNC_CATALOG_H
#define BARREL_SYNC_CATALOG_H

#include <stdbool.h>

#include "engine/docdb.h"

struct view_indexer;

struct catalog {
	void *arg;
	/*
	 * Open database name for one request: *d is borrowed until
	 * release(arg, *hold); while held the database is not removed.
	 * BARREL_E_NOTFOUND when there is none, BARREL_E_INVALID for a
	 * name that is not a database name (bdb_name_valid()).
	 */
	int (*acquire)(void *arg, const char *name, struct docdb **d,
		       void **hold);
	void (*release)(void *arg, void *hold);
	/* The view indexer of the database held by hold, borrowed like the
	 * database; NULL when this catalog does not index views. */
	struct view_indexer *(*views)(void *arg, void *hold);
	/* Create name; BARREL_E_EXISTS when it exists. */
	int (*create)(void *arg, const char *name);
	/* Remove name and its data; BARREL_E_NOTFOUND when missing. */
	int (*drop)(void *arg, const char *name);
	/* Every database, in name order; a non-zero cb return stops and is
	 * returned. */
	int (*list)(void *arg, int (*cb)(void *cbarg, const char *name),
		    void *cbarg);
};

/*
 * A catalog over env's databases, opened as documents with opts (NULL:
 * defaults) on first use and kept open until catalog_env_free(). With
 * views, each open database has a view indexer (view.h) running. env is
 * borrowed and must outlive the catalog; *out is owned by the caller.
 */
int catalog_env_new(struct benv *env, const struct docdb_opts *opts,
		    bool views, struct catalog **out);
void catalog_env_free(struct catalog *cat);   /* NULL is a no-op */

#endif
