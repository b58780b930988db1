/*
 * Errors of barrelfs.
 *
 * Every function returns 0 or a negative code: -errno for system errors,
 * or one of the BARREL_E_* codes below for our own. barrel_strerror()
 * names either kind. One table (error.c) maps each code to the errno a
 * FUSE reply carries and to the HTTP status the sync server answers.
 */
#ifndef BARREL_ERROR_H
#define BARREL_ERROR_H

/* Project codes sit far below any -errno value. */
enum barrel_error {
	BARREL_E_FIRST = -30000,
	BARREL_E_CORRUPT = BARREL_E_FIRST, /* on-disk data failed validation */
	BARREL_E_NOTFOUND,                 /* no such key, document or table */
	BARREL_E_EXISTS,                   /* already exists */
	BARREL_E_CONFLICT,                 /* stale parent revision */
	BARREL_E_INVALID,                  /* bad argument or input */
	BARREL_E_TOOBIG,                   /* key or value over its limit */
	BARREL_E_LOCKED,                   /* DATADIR held by another process */
	BARREL_E_VERSION,                  /* unknown on-disk format version */
	BARREL_E_FULL,                     /* no space left for the operation */
	BARREL_E_BADJSON,                  /* body is not valid JSON */
	BARREL_E_NOTOBJECT,                /* JSON body is not an object */
	BARREL_E_BADREV,                   /* malformed revision string */
	BARREL_E_CLOSED,                   /* handle already closed / shutting down */
	BARREL_E_FUNCTION,                 /* a design document's function cannot run */
	BARREL_E_LAST
};

/* Static string for any 0, -errno or BARREL_E_* code; never NULL. */
const char *barrel_strerror(int err);

/* The positive errno to reply to the kernel with (EIO for corruption). */
int barrel_errno(int err);

/* The HTTP status code for err (0 maps to 200). */
int barrel_http_status(int err);

/* CouchDB's short error name for err ("not_found", "conflict", ...). */
const char *barrel_http_error(int err);

#endif
