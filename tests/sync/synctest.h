/*
 * Shared fixture of the sync tests: an environment with a catalog served
 * by srv_start() on a UNIX socket in a fresh directory, and requests to
 * it through libcurl. Include after <check.h> and tests/engine/testenv.h.
 */
#ifndef BARREL_SYNCTEST_H
#define BARREL_SYNCTEST_H

#include <curl/curl.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "engine/db.h"
#include "sync/catalog.h"
#include "sync/http.h"

struct synctest {
	char datadir[PATH_MAX];
	char sock[PATH_MAX];
	struct benv *env;
	struct catalog *cat;
	struct srv *srv;
};

/* Start a server over a new DATADIR of base; extra (may be NULL) adds
 * listeners and options, its unix_path is replaced. */
static inline void st_start(struct synctest *t, const char *base,
			    const struct srv_opts *extra)
{
	struct srv_opts o = { 0 };
	char err[SRV_ERRLEN] = "";
	int rc;

	if (extra)
		o = *extra;
	tu_new_datadir(base, t->datadir, sizeof(t->datadir));
	OK(benv_open(t->datadir, NULL, &t->env));
	OK(catalog_env_new(t->env, NULL, true, &t->cat));
	tu_path(t->sock, sizeof(t->sock), t->datadir, "api.sock");
	o.unix_path = t->sock;
	rc = srv_start(t->cat, &o, &t->srv, err);
	ck_assert_msg(rc == 0, "srv_start: %s (%s)", barrel_strerror(rc), err);
}

static inline void st_stop(struct synctest *t)
{
	srv_stop(t->srv);
	catalog_env_free(t->cat);
	benv_close(t->env);
	memset(t, 0, sizeof(*t));
}

struct st_buf {
	char *p;
	size_t len;
};

static inline size_t st_collect(char *ptr, size_t size, size_t n, void *arg)
{
	struct st_buf *b = arg;
	char *p = realloc(b->p, b->len + size * n + 1);

	if (!p)
		return 0;
	memcpy(p + b->len, ptr, size * n);
	b->len += size * n;
	p[b->len] = '\0';
	b->p = p;
	return size * n;
}

/*
 * method path (with its query) on t's socket, with body of ctype (NULL:
 * none) and extra headers (NULL-terminated, may be NULL). Returns the
 * status; the reply body is appended to *out and, when hdrs is not NULL,
 * the reply's header lines to *hdrs (both malloc'ed, the caller frees).
 */
static inline long st_perform(struct synctest *t, const char *method,
			      const char *path, const char *ctype,
			      const char *body, size_t len,
			      const char *const *headers, struct st_buf *out,
			      struct st_buf *hdrs)
{
	struct curl_slist *h = NULL;
	char url[4096], ct[512];
	long status = 0;
	CURL *c = curl_easy_init();

	ck_assert_ptr_nonnull(c);
	snprintf(url, sizeof(url), "http://localhost%s", path);
	curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, t->sock);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (!strcmp(method, "HEAD"))
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)len);
	}
	if (ctype) {
		snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
		h = curl_slist_append(h, ct);
	}
	for (size_t i = 0; headers && headers[i]; i++)
		h = curl_slist_append(h, headers[i]);
	h = curl_slist_append(h, "Expect:");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, st_collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	if (hdrs) {
		curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, st_collect);
		curl_easy_setopt(c, CURLOPT_HEADERDATA, hdrs);
	}
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return status;
}

/* st_perform() with the reply body into *out (may be NULL), malloc'ed,
 * and its length into *outlen (may be NULL). */
static inline long st_req_h(struct synctest *t, const char *method,
			    const char *path, const char *ctype,
			    const char *body, size_t len,
			    const char *const *headers, char **out,
			    size_t *outlen)
{
	struct st_buf b = { 0 };
	long status = st_perform(t, method, path, ctype, body, len, headers,
				 &b, NULL);

	if (outlen)
		*outlen = b.len;
	if (out)
		*out = b.p ? b.p : strdup("");
	else
		free(b.p);
	return status;
}

/* A JSON request (body NULL: none); *reply (may be NULL) gets the
 * parsed reply (json_object_put() it), NULL when it is not JSON. */
static inline long st_json(struct synctest *t, const char *method,
			   const char *path, const char *body,
			   struct json_object **reply)
{
	char *out;
	long status = st_req_h(t, method, path,
			       body ? "application/json" : NULL, body,
			       body ? strlen(body) : 0, NULL, &out, NULL);

	if (reply)
		*reply = json_tokener_parse(out);
	free(out);
	return status;
}

/* Member path "a" of j as a string ("" when missing). */
static inline const char *st_str(struct json_object *j, const char *key)
{
	struct json_object *v;

	if (!j || !json_object_object_get_ex(j, key, &v))
		return "";
	return json_object_get_string(v);
}

/* A sync test's main(): run suite s with libcurl set up; the exit
 * status. */
static inline int st_main(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	curl_global_init(CURL_GLOBAL_ALL);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	curl_global_cleanup();
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
