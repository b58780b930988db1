/*
 * Percent-encoding of URL parts (RFC 3986 section 2.1), one codec for the
 * HTTP server (request paths and query strings, the COPY Destination
 * header, Location replies) and the replication client (remote URLs).
 */
#ifndef BARREL_URL_H
#define BARREL_URL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * s percent-encoded for a URL path segment or query value: every byte
 * but [A-Za-z0-9._~-] becomes %XX. With doc_id, a leading "_design/" or
 * "_local/" keeps its slash, as CouchDB writes those ids in paths.
 * Returns a malloc'ed string (free()), NULL on ENOMEM.
 */
char *url_escape(const char *s, bool doc_id);

/*
 * s[0..len) percent-decoded into a new NUL-terminated string (*out,
 * malloc'ed, free()); plus turns '+' into a space (query strings).
 * BARREL_E_INVALID when a '%' is not followed by two hex digits, or for
 * %00 (the result is a C string); -ENOMEM.
 */
int url_unescape(const char *s, size_t len, bool plus, char **out);

#endif
