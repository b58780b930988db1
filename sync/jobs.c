/*
 * The replications of the "_replicator" database (jobs.h).
 *
 * The watcher reads the database's changes feed; each change of a
 * document stops the job of that id (after its batch in progress) and,
 * unless the document is deleted, starts a new one from its content.
 * A job's thread runs repl_run() and, when it fails, runs it again
 * after a backoff (1 s doubling to a minute), until it completes
 * (one-shot) or is stopped.
 *
 * Locks: jobs->lock guards the job list and the stop flag; a job's
 * counters are read through repl_stats(), which locks the replication.
 */
#include "config.h"

#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/docdb.h"
#include "engine/log.h"
#include "sync/catalog.h"
#include "sync/jobs.h"
#include "sync/repl.h"

#define JOB_WHY REPL_ERRLEN
#define JOB_BACKOFF_MAX_MS 60000u

struct job {
	char *id;
	char *src_shown, *dst_shown;  /* without credentials */
	bool continuous;
	struct repl *r;           /* NULL when the document is not usable */
	char why[JOB_WHY];        /* why it is not */
	pthread_t thread;
	bool started;
	atomic_bool stop;
	struct job *next;         /* protected by jobs->lock */
};

struct jobs {
	const struct catalog *cat;
	char *sock;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;                /* protected by lock */
	struct job *list;         /* protected by lock */
	uint64_t seq;             /* changes applied (watcher thread only) */
	pthread_t watcher;
};

/* ---- one job ---- */

/* Sleep ms in slices, unless the job is stopped: false if it was. */
static bool job_nap(struct job *jb, unsigned ms)
{
	struct timespec ts = { 0, 100 * 1000 * 1000 };

	for (unsigned t = 0; t < ms; t += 100) {
		if (atomic_load(&jb->stop))
			return false;
		nanosleep(&ts, NULL);
	}
	return !atomic_load(&jb->stop);
}

static void *job_main(void *arg)
{
	struct job *jb = arg;
	unsigned delay = 1000;
	struct repl_stats st;
	int rc;

	while (!atomic_load(&jb->stop)) {
		rc = repl_run(jb->r);
		if (rc == -ECANCELED || (rc == 0 && !jb->continuous))
			break;
		repl_stats(jb->r, &st);
		barrel_log(BLOG_WARN, "replication %s: %s; again in %u s",
			   jb->id, st.error[0] ? st.error : barrel_strerror(rc),
			   delay / 1000);
		if (!job_nap(jb, delay))
			break;
		delay = delay * 2 > JOB_BACKOFF_MAX_MS ? JOB_BACKOFF_MAX_MS
						       : delay * 2;
	}
	return NULL;
}

static void job_free(struct job *jb)
{
	if (jb->started) {
		atomic_store(&jb->stop, true);
		repl_stop(jb->r);
		pthread_join(jb->thread, NULL);
	}
	repl_free(jb->r);
	free(jb->id);
	free(jb->src_shown);
	free(jb->dst_shown);
	free(jb);
}

/* url without "user:pass@" (malloc'ed). */
static char *url_shown(const char *url)
{
	const char *scheme = strstr(url, "://");
	const char *at, *slash;
	size_t head;
	char *out;

	if (!scheme || !(at = strchr(scheme + 3, '@')))
		return strdup(url);
	slash = strchr(scheme + 3, '/');
	if (slash && slash < at)
		return strdup(url);
	head = (size_t)(scheme + 3 - url);
	if (!(out = malloc(strlen(url) + 1)))
		return NULL;
	memcpy(out, url, head);
	memcpy(out + head, at + 1, strlen(at + 1) + 1);
	return out;
}

/* An endpoint of a job document as a spec of client.h (malloc'ed into
 * *spec): a URL string, {"url": URL}, or a database of this peer. */
static int endpoint_spec(struct jobs *j, struct json_object *v, char **spec)
{
	struct json_object *u;
	const char *s;
	size_t len;

	if (json_object_is_type(v, json_type_object) &&
	    json_object_object_get_ex(v, "url", &u))
		v = u;
	if (!json_object_is_type(v, json_type_string))
		return BARREL_E_INVALID;
	s = json_object_get_string(v);
	if (!strncmp(s, "http://", 7) || !strncmp(s, "https://", 8))
		return (*spec = strdup(s)) ? 0 : -ENOMEM;
	if (!bdb_name_valid(s))
		return BARREL_E_INVALID;
	len = strlen(j->sock) + strlen(s) + sizeof("unix::/");
	if (!(*spec = malloc(len)))
		return -ENOMEM;
	snprintf(*spec, len, "unix:%s:/%s", j->sock, s);
	return 0;
}

static bool member_true(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) &&
	       json_object_get_boolean(v);
}

/* Fill jb from its document: its replication, or why it has none. */
static int job_setup(struct jobs *j, struct job *jb, struct json_object *o)
{
	struct json_object *sv, *dv;
	struct repl_opts ro;
	char *src = NULL, *dst = NULL, err[REPL_ERRLEN] = "";
	int rc;

	if (!json_object_object_get_ex(o, "source", &sv) ||
	    !json_object_object_get_ex(o, "target", &dv) ||
	    endpoint_spec(j, sv, &src) || endpoint_spec(j, dv, &dst)) {
		snprintf(jb->why, sizeof(jb->why), "needs a \"source\" and a "
			 "\"target\": URLs or database names");
		rc = 0;
		goto out_free;
	}
	jb->continuous = member_true(o, "continuous");
	repl_opts_init(&ro);
	ro.continuous = jb->continuous;
	ro.create_target = member_true(o, "create_target");
	jb->src_shown = url_shown(src);
	jb->dst_shown = url_shown(dst);
	rc = repl_new(src, dst, &ro, &jb->r, err);
	if (rc == BARREL_E_INVALID) {
		snprintf(jb->why, sizeof(jb->why), "%s", err);
		rc = 0;
	}
out_free:
	free(src);
	free(dst);
	return rc;
}

/* A job for document id with body text; started when usable. */
static struct job *job_new(struct jobs *j, const char *id, const char *text)
{
	struct json_object *o = json_tokener_parse(text);
	struct job *jb = calloc(1, sizeof(*jb));

	if (!jb || !(jb->id = strdup(id)))
		goto out_fail;
	if (!json_object_is_type(o, json_type_object))
		snprintf(jb->why, sizeof(jb->why), "not a JSON object");
	else if (job_setup(j, jb, o))
		goto out_fail;
	if (jb->r && !pthread_create(&jb->thread, NULL, job_main, jb))
		jb->started = true;
	json_object_put(o);
	return jb;
out_fail:
	json_object_put(o);
	if (jb)
		job_free(jb);
	return NULL;
}

/* ---- the watcher ---- */

/* Take the job of id out of the list (NULL if none). */
static struct job *job_take(struct jobs *j, const char *id)
{
	struct job **pp, *jb = NULL;

	pthread_mutex_lock(&j->lock);
	for (pp = &j->list; *pp; pp = &(*pp)->next) {
		if (!strcmp((*pp)->id, id)) {
			jb = *pp;
			*pp = jb->next;
			break;
		}
	}
	pthread_mutex_unlock(&j->lock);
	return jb;
}

static int on_change(void *arg, const struct doc_row *row)
{
	struct jobs *j = arg;
	struct job *old, *jb = NULL;
	char id[DOC_MAX_ID + 1];

	snprintf(id, sizeof(id), "%.*s", (int)row->idlen, row->id);
	if ((old = job_take(j, id)))
		job_free(old);
	if (row->deleted || !row->doc ||
	    !strncmp(id, DOC_DESIGN_PREFIX, strlen(DOC_DESIGN_PREFIX)))
		return 0;
	if (!(jb = job_new(j, id, row->doc->body)))
		return -ENOMEM;
	pthread_mutex_lock(&j->lock);
	jb->next = j->list;
	j->list = jb;
	pthread_mutex_unlock(&j->lock);
	return 0;
}

static bool stopping(struct jobs *j)
{
	bool stop;

	pthread_mutex_lock(&j->lock);
	stop = j->stop;
	pthread_mutex_unlock(&j->lock);
	return stop;
}

/* Wait up to a second for jobs_stop() (the database does not exist). */
static void idle(struct jobs *j)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec++;
	pthread_mutex_lock(&j->lock);
	if (!j->stop)
		pthread_cond_timedwait(&j->wake, &j->lock, &ts);
	pthread_mutex_unlock(&j->lock);
}

static void *watch_main(void *arg)
{
	struct jobs *j = arg;
	struct docdb *d;
	void *hold;
	int rc;

	while (!stopping(j)) {
		if (j->cat->acquire(j->cat->arg, JOBS_DB, &d, &hold)) {
			j->seq = 0;           /* a new database starts over */
			idle(j);
			continue;
		}
		rc = docdb_changes(d, NULL, j->seq, 0, DOC_ROWS_DOCS,
				   on_change, j, &j->seq);
		if (rc)
			barrel_log(BLOG_ERR, "%s: %s", JOBS_DB,
				   barrel_strerror(rc));
		bdb_wait(docdb_bdb(d), j->seq, rc ? 1000 : 500);
		j->cat->release(j->cat->arg, hold);
	}
	return NULL;
}

int jobs_start(const struct catalog *cat, const char *sock,
	       struct jobs **out)
{
	struct jobs *j = calloc(1, sizeof(*j));

	if (!j || !(j->sock = strdup(sock))) {
		free(j);
		return -ENOMEM;
	}
	j->cat = cat;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->wake, NULL);
	if (pthread_create(&j->watcher, NULL, watch_main, j)) {
		free(j->sock);
		free(j);
		return -EAGAIN;
	}
	*out = j;
	return 0;
}

void jobs_stop(struct jobs *j)
{
	struct job *jb;

	if (!j)
		return;
	pthread_mutex_lock(&j->lock);
	j->stop = true;
	pthread_cond_broadcast(&j->wake);
	pthread_mutex_unlock(&j->lock);
	pthread_join(j->watcher, NULL);
	while ((jb = j->list)) {
		j->list = jb->next;
		job_free(jb);
	}
	pthread_cond_destroy(&j->wake);
	pthread_mutex_destroy(&j->lock);
	free(j->sock);
	free(j);
}

/* ---- status ---- */

static void add_str(struct json_object *o, const char *key, const char *s)
{
	json_object_object_add(o, key, s ? json_object_new_string(s) : NULL);
}

static void add_u64(struct json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_int64((int64_t)v));
}

static struct json_object *job_status(struct job *jb)
{
	struct json_object *o = json_object_new_object();
	struct repl_stats st = { 0 };

	if (!o)
		return NULL;
	add_str(o, "id", jb->id);
	add_str(o, "source", jb->src_shown);
	add_str(o, "target", jb->dst_shown);
	json_object_object_add(o, "continuous",
			       json_object_new_boolean(jb->continuous));
	if (!jb->r) {
		add_str(o, "state", "invalid");
		add_str(o, "error", jb->why);
		return o;
	}
	repl_stats(jb->r, &st);
	add_str(o, "state", repl_state_name(st.state));
	add_u64(o, "docs_read", st.docs_read);
	add_u64(o, "docs_written", st.docs_written);
	add_u64(o, "doc_write_failures", st.doc_write_failures);
	add_u64(o, "pending", st.pending);
	add_str(o, "last_seq", st.last_seq);
	add_str(o, "error", st.error[0] ? st.error : NULL);
	return o;
}

struct json_object *jobs_status(struct jobs *j)
{
	struct json_object *a = json_object_new_array();

	if (!a || !j)
		return a;
	pthread_mutex_lock(&j->lock);
	for (struct job *jb = j->list; jb; jb = jb->next)
		json_object_array_add(a, job_status(jb));
	pthread_mutex_unlock(&j->lock);
	return a;
}
