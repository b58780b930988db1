#include "config.h"
#include "engine/error.h"

#include <errno.h>

struct err_entry {
	int code;
	const char *msg;
	int errnum;
	int http;
	const char *http_name;
};

/* The one table: engine error -> message, errno, HTTP status. */
static const struct err_entry err_table[] = {
	{ BARREL_E_CORRUPT, "corrupt data on disk", EIO, 500, "corrupt" },
	{ BARREL_E_NOTFOUND, "not found", ENOENT, 404, "not_found" },
	{ BARREL_E_EXISTS, "already exists", EEXIST, 412, "file_exists" },
	{ BARREL_E_CONFLICT, "document update conflict", EAGAIN, 409, "conflict" },
	{ BARREL_E_INVALID, "invalid argument", EINVAL, 400, "bad_request" },
	{ BARREL_E_TOOBIG, "too large", EFBIG, 413, "too_large" },
	{ BARREL_E_LOCKED, "data directory is locked by another process", EBUSY, 503, "locked" },
	{ BARREL_E_VERSION, "unsupported on-disk format version", EPROTO, 500, "bad_version" },
	{ BARREL_E_FULL, "no space left", ENOSPC, 507, "insufficient_storage" },
	{ BARREL_E_BADJSON, "invalid JSON", EINVAL, 400, "bad_request" },
	{ BARREL_E_NOTOBJECT, "document must be a JSON object", EINVAL, 400, "doc_validation" },
	{ BARREL_E_BADREV, "invalid revision format", EINVAL, 400, "bad_request" },
	{ BARREL_E_CLOSED, "database is closed", ESHUTDOWN, 503, "unavailable" },
	{ BARREL_E_FUNCTION, "a design document's function cannot run", ENOEXEC,
	  500, "compilation_error" },
};

static const struct err_entry *err_lookup(int err)
{
	for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
		if (err_table[i].code == err)
			return &err_table[i];
	return NULL;
}

const char *barrel_strerror(int err)
{
	const struct err_entry *e;

	if (err == 0)
		return "success";
	e = err_lookup(err);
	if (e)
		return e->msg;
	if (err < 0 && err > -4096)
		return strerror(-err);
	return "unknown error";
}

int barrel_errno(int err)
{
	const struct err_entry *e = err_lookup(err);

	if (err == 0)
		return 0;
	if (e)
		return e->errnum;
	if (err < 0 && err > -4096)
		return -err;
	return EIO;
}

int barrel_http_status(int err)
{
	const struct err_entry *e = err_lookup(err);

	if (err == 0)
		return 200;
	if (e)
		return e->http;
	switch (-err) {
	case ENOENT: return 404;
	case EEXIST: return 412;
	case EINVAL: return 400;
	case EACCES: case EPERM: return 403;
	case ENOSPC: return 507;
	default: return 500;
	}
}

const char *barrel_http_error(int err)
{
	const struct err_entry *e = err_lookup(err);

	if (e)
		return e->http_name;
	switch (barrel_http_status(err)) {
	case 404: return "not_found";
	case 412: return "file_exists";
	case 400: return "bad_request";
	case 403: return "forbidden";
	default: return "unknown_error";
	}
}
