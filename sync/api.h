/*
 * CouchDB's HTTP API over a catalog (catalog.h): the replication
 * protocol and the everyday endpoints, with CouchDB's status codes and
 * error bodies (DESIGN.md "Sync", "The HTTP API").
 *
 * api.c routes a request and serves the server and database endpoints
 * (/, _all_dbs, _uuids, /{db}, _all_docs, _changes, _revs_diff,
 * _bulk_docs, _local, _ensure_full_commit, _revs_limit, _compact,
 * _purge); api_doc.c serves documents, attachments, open_revs and
 * _bulk_get, and renders a revision as CouchDB does for all of them;
 * api_view.c serves the views of design documents (_view, _info).
 *
 * Handlers reply exactly once (http.h) and return 0, or a negative code
 * only when no reply could be made (the server then cuts the
 * connection).
 */
#ifndef BARREL_SYNC_API_H
#define BARREL_SYNC_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/docdb.h"
#include "sync/http.h"

struct json_object;

/* Route r (http.c calls this for every request). */
int api_dispatch(struct hreq *r);

/* Text (NUL-terminated at len) as one strict UTF-8 JSON value; NULL when
 * it is not one, or is "null". Owned by the caller (json_object_put()). */
struct json_object *api_json_parse(const char *s, size_t len);

/* A JSON array of revision strings into *out (malloc'ed, owned by the
 * caller; NULL when empty) and *n. BARREL_E_INVALID when a is not an
 * array, BARREL_E_BADREV for a member that is not a revision. */
int api_revs_parse(struct json_object *a, struct rev **out, size_t *n);

/* ---- api_doc.c ---- */

/*
 * GET, HEAD, PUT, DELETE, COPY of /{db}/{id} (id may be "_design/X"):
 * rev, revs, revs_info, conflicts, deleted_conflicts, open_revs, latest,
 * attachments, atts_since, new_edits; JSON and multipart bodies.
 */
int api_doc(struct hreq *r, struct docdb *d, const char *id, size_t idlen);

/* GET, HEAD, PUT, DELETE of /{db}/{id}/{name}, with Range. */
int api_att(struct hreq *r, struct docdb *d, const char *id, size_t idlen,
	    const char *name);

/* POST /{db}/_bulk_get (revs, attachments, latest). */
int api_bulk_get(struct hreq *r, struct docdb *d);

/* How a revision is rendered (CouchDB's GET /{db}/{id} options). */
struct api_render {
	bool revs;                /* _revisions */
	bool revs_info;           /* _revs_info */
	bool conflicts;           /* _conflicts */
	bool deleted_conflicts;   /* _deleted_conflicts */
	bool attachments;         /* attachment data inline (base64) */
	bool local_seq;           /* _local_seq */
	const struct rev *atts_since;   /* with attachments: only data of
	                                   attachments newer than these */
	size_t natts_since;
};

/*
 * doc (read with DOC_GET_TREE when the options need the tree) from snap
 * as CouchDB shows it, into *out (owned by the caller). Shared by
 * GET /{db}/{id}, include_docs and _bulk_get.
 */
int api_render_doc(struct docdb *d, struct bsnap *snap,
		   const struct doc *doc, const struct api_render *o,
		   struct json_object **out);

/* ---- api_view.c ---- */

struct view_indexer;

/*
 * /{db}/_design/D/_X...: GET, HEAD, POST of _view/V and GET of _info,
 * over vi, the database's view indexer (NULL: 501 not_implemented);
 * other _X: 501.
 */
int api_design(struct hreq *r, struct docdb *d, struct view_indexer *vi);

#endif
