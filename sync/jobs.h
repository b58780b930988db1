/*
 * Replications configured as documents of the "_replicator" database,
 * in CouchDB's format, each run by the replicator (repl.h) in a thread
 * of its own: barrel-syncd's and the mount's configured replications.
 *
 *   {"source": URL | {"url": URL} | "db", "target": ...,
 *    "continuous": bool, "create_target": bool}
 *
 * A plain database name is one of this peer's own databases, reached
 * through its UNIX socket. Writing the document starts (or restarts)
 * the job; deleting it stops the job. A job that fails is retried with
 * backoff; a one-shot job that completed stays as it ended. Design
 * documents and documents without a source and a target are ignored
 * (their status says why).
 *
 * Threads: one watcher (follows the database's changes feed), one per
 * running job. Errors: 0 or a negative code of error.h.
 */
#ifndef BARREL_SYNC_JOBS_H
#define BARREL_SYNC_JOBS_H

struct catalog;
struct json_object;
struct jobs;

#define JOBS_DB "_replicator"

/*
 * Start following cat's "_replicator" database (borrowed; it need not
 * exist yet) for a server whose UNIX socket is sock (copied). *out is
 * owned by the caller: jobs_stop().
 */
int jobs_start(const struct catalog *cat, const char *sock,
	       struct jobs **out);
/* Stop every job (after its batch in progress) and the watcher; free j. */
void jobs_stop(struct jobs *j);                /* NULL is a no-op */

/*
 * The status of every job, as a JSON array of {"id", "source", "target"
 * (without credentials), "continuous", "state", "docs_read",
 * "docs_written", "doc_write_failures", "pending", "last_seq", "error"}.
 * Owned by the caller (json_object_put()); NULL without memory.
 */
struct json_object *jobs_status(struct jobs *j);

#endif
