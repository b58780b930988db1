/*
 * The replicator: CouchDB's replication protocol between two databases
 * given as endpoint specs (client.h), pull and push alike — barrelfs,
 * CouchDB or PouchDB at either end.
 *
 * A run (repl_run()) follows the protocol's steps:
 *   1. verify both peers (GET /db); create the target when asked;
 *   2. the replication id: md5 of both URLs (no credentials) and of the
 *      options that change what is replicated; the checkpoint is the
 *      document "_local/<id>" on both peers;
 *   3. read both checkpoints and compare their session histories: the
 *      start sequence (0 without a common history);
 *   4. read a batch of the source's changes (style=all_docs), after the
 *      last one; caught up in continuous mode: a longpoll that waits;
 *   5. ask the target which leaf revisions it lacks (_revs_diff);
 *   6. fetch those from the source (_bulk_get, or GET with open_revs
 *      from a peer without it), attachments inline;
 *   7. write them to the target (_bulk_docs, new_edits=false), in
 *      requests of at most opts.max_request bytes;
 *   8. make them durable (_ensure_full_commit);
 *   9. checkpoint the batch's last sequence on both peers.
 * A checkpoint never names a sequence whose changes are not all written
 * (steps 7 and 8 of its batch and of every earlier one done).
 *
 * Pipelined: a reader thread of the run does steps 4-6 with clients of
 * its own and queues what it fetched (at most about two requests'
 * worth, 2 * max_request bytes); repl_run()'s thread takes the queue in
 * order and does steps 7-9, merging what queued up while it was busy
 * into one _bulk_docs. So the next batch is read while one is written,
 * and the rule above holds as each batch's end is taken after its
 * revisions. Request bodies to a barrelfs peer (GET / says so) go
 * gzipped; replies are taken gzipped from any peer.
 *
 * Sequences are opaque JSON values: kept as JSON, only compared for
 * equality.
 *
 * Threads: repl_run() blocks in the calling thread (and runs the reader
 * thread, joined before it returns); repl_stop() and
 * repl_stats() may be called from any thread meanwhile (repl_stop() is
 * also async-signal-safe).
 *
 * Errors: 0 or a negative code of error.h; the message for a person is
 * in repl_stats().error.
 */
#ifndef BARREL_SYNC_REPL_H
#define BARREL_SYNC_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sync/client.h"

struct repl;
struct repl_stats;

#define REPL_ERRLEN 512
#define REPL_SEQLEN 256          /* of repl_stats.last_seq (truncated) */
#define REPL_BATCH 2000u        /* fewer, bigger batches: a source may
                                   count "pending" by a scan */
#define REPL_MAX_REQUEST (16u << 20)

struct repl_opts {
	bool continuous;          /* follow the source until repl_stop() */
	bool create_target;       /* PUT the target database if missing */
	unsigned batch;           /* changes per batch (default REPL_BATCH) */
	unsigned max_batches;     /* stop (as repl_stop()) after this many
	                             batches with changes; 0: no limit */
	size_t max_request;       /* JSON bytes per _bulk_docs request
	                             (default REPL_MAX_REQUEST; one bigger
	                             document goes alone) */
	unsigned longpoll_ms;     /* continuous: the longpoll's timeout
	                             (default 30000, below client.idle_ms);
	                             its heartbeat is a third of it */
	/* Names of the peers in messages and in the replication id instead
	 * of their URLs (NULL: client_url()): for a URL that changes from
	 * run to run, as a socket in a temporary directory. Copied. */
	const char *src_label, *dst_label;
	bool no_bulk_get;         /* fetch with GET open_revs, as from a
	                             peer without _bulk_get (which is
	                             detected anyway): for tests */
	struct client_opts client;  /* retries, backoff, timeouts of both
	                               peers; its cancel is ignored */
	/* Called in repl_run()'s thread after each batch with changes and
	 * at the end; st is borrowed for the call. NULL: none. */
	void (*progress)(void *arg, const struct repl_stats *st);
	void *progress_arg;
};

/* Fill o with the defaults. */
void repl_opts_init(struct repl_opts *o);

enum repl_state {
	REPL_IDLE,                /* not run yet */
	REPL_STARTING,            /* steps 1-3 */
	REPL_RUNNING,             /* copying batches */
	REPL_WAITING,             /* continuous: caught up, waiting */
	REPL_DONE,                /* one-shot run complete */
	REPL_STOPPED,             /* ended by repl_stop() or max_batches */
	REPL_FAILED,              /* ended by an error */
};

/* Name of a state ("running", ...); static. */
const char *repl_state_name(enum repl_state s);

/* Counters of the current (or last) run. */
struct repl_stats {
	uint64_t docs_read;          /* revisions fetched from the source */
	uint64_t docs_written;       /* revisions the target accepted */
	uint64_t doc_write_failures; /* revisions refused or unreadable */
	uint64_t missing_checked;    /* leaf revisions asked about */
	uint64_t missing_found;      /* of those, missing on the target */
	uint64_t pending;            /* changes left, as the source said */
	uint64_t batches;            /* batches with changes */
	enum repl_state state;
	char last_seq[REPL_SEQLEN];  /* last checkpointed source sequence,
	                                as text ("" before any) */
	char session_id[33];
	char rep_id[33];             /* the replication id */
	char error[REPL_ERRLEN];     /* the last error ("" when none) */
};

/*
 * A replication from src to dst (endpoint specs of client.h); o may be
 * NULL (defaults) and is copied. *out is owned by the caller:
 * repl_free(). Errors: BARREL_E_INVALID for a bad spec (err, of
 * REPL_ERRLEN bytes, says which), -ENOMEM.
 */
int repl_new(const char *src, const char *dst, const struct repl_opts *o,
	     struct repl **out, char *err);
/* Free r; no repl_run() may be running. NULL is a no-op. */
void repl_free(struct repl *r);

/*
 * Replicate, blocking: one-shot until the source's changes are all
 * copied, or continuous until repl_stop(). Every batch is checkpointed
 * as it completes. May be called again on r after it returns (a new
 * session, counters reset). Returns:
 *  - 0: complete (documents the target refused are counted in
 *    doc_write_failures; they do not stop the run);
 *  - -ECANCELED: stopped by repl_stop() or max_batches, after
 *    checkpointing every complete batch;
 *  - BARREL_E_NOTFOUND: the source, or the target without
 *    create_target, does not exist;
 *  - -EACCES: a peer refused the credentials (401, 403);
 *  - -ECONNREFUSED, -EHOSTUNREACH, -ETIMEDOUT, -ECONNRESET: a peer could
 *    not be reached, after the retries;
 *  - -EPROTO: a peer answered what the protocol does not allow; -EIO: a
 *    peer kept failing (5xx); -ENOMEM.
 */
int repl_run(struct repl *r);

/*
 * Ask a running repl_run() to end: the first call stops it after the
 * batch in progress is written and checkpointed (a longpoll or a
 * backoff wait is cut short), a second call also cuts the transfer in
 * progress (the batch is then read again by the next run). Any thread;
 * async-signal-safe. A stop requested before repl_run() applies to it.
 */
void repl_stop(struct repl *r);

/* A copy of r's counters, taken under its lock. */
void repl_stats(struct repl *r, struct repl_stats *out);

#endif
