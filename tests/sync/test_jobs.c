#include "config.h"

/*
 * Replications configured in "_replicator" (sync/jobs.h), over an
 * in-process server: a one-shot job copies and ends "done"; a continuous
 * one follows new writes until its document is deleted; a document
 * without a source and target is listed as invalid, with the reason;
 * credentials never show in the status.
 */

#include <check.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "engine/error.h"
#include "sync/jobs.h"
#include "tests/engine/testenv.h"
#include "tests/sync/synctest.h"

TU_BASE_FIXTURE("test_jobs")

#define WAIT_MS 10000u

/* Poll GET path until it answers want (bounded); the last status. */
static long wait_status(struct synctest *t, const char *path, long want)
{
	long st = 0;

	for (unsigned ms = 0; ms < WAIT_MS; ms += 50) {
		if ((st = st_json(t, "GET", path, NULL, NULL)) == want)
			break;
		tu_sleep_ms(50);
	}
	return st;
}

/* The status entry of job id (owned by the caller), NULL if none. */
static struct json_object *job_entry(struct jobs *j, const char *id)
{
	struct json_object *all = jobs_status(j), *found = NULL;

	ck_assert_ptr_nonnull(all);
	for (size_t i = 0; i < json_object_array_length(all); i++) {
		struct json_object *e = json_object_array_get_idx(all, i);

		if (!strcmp(st_str(e, "id"), id))
			found = json_object_get(e);
	}
	json_object_put(all);
	return found;
}

/* Wait (bounded) until job id is in state want. */
static void wait_state(struct jobs *j, const char *id, const char *want)
{
	struct json_object *e = NULL;

	for (unsigned ms = 0; ms < WAIT_MS; ms += 50) {
		json_object_put(e);
		e = job_entry(j, id);
		if (e && !strcmp(st_str(e, "state"), want))
			break;
		tu_sleep_ms(50);
	}
	ck_assert_msg(e && !strcmp(st_str(e, "state"), want),
		      "job %s: state %s, want %s", id,
		      e ? st_str(e, "state") : "(none)", want);
	json_object_put(e);
}

/* A one-shot job copies and ends done; a continuous one follows writes
 * until its document goes; an unusable document is listed as invalid. */
START_TEST(test_jobs_run)
{
	struct synctest t;
	struct json_object *e, *r = NULL;
	struct jobs *j;
	char path[128];

	st_start(&t, g_base, NULL);
	ck_assert_int_eq(st_json(&t, "PUT", "/src", NULL, NULL), 201);
	ck_assert_int_eq(st_json(&t, "PUT", "/src/a", "{\"v\":1}", NULL), 201);
	OK(jobs_start(t.cat, t.sock, &j));
	/* the database appears after the watcher started */
	ck_assert_int_eq(st_json(&t, "PUT", "/_replicator", NULL, NULL), 201);
	ck_assert_int_eq(st_json(&t, "PUT", "/_replicator/once",
		"{\"source\":\"src\",\"target\":\"dst\",\"create_target\":true}",
		NULL), 201);
	ck_assert_int_eq(wait_status(&t, "/dst/a", 200), 200);
	wait_state(j, "once", "done");
	e = job_entry(j, "once");
	ck_assert_int_eq(json_object_get_int64(
		json_object_object_get(e, "docs_written")), 1);
	json_object_put(e);

	/* continuous: a later write crosses; deleting the job stops it */
	ck_assert_int_eq(st_json(&t, "PUT", "/_replicator/live",
		"{\"source\":\"src\",\"target\":{\"url\":\"dst2\"},"
		"\"create_target\":true,\"continuous\":true}", &r), 201);
	ck_assert_int_eq(wait_status(&t, "/dst2/a", 200), 200);
	ck_assert_int_eq(st_json(&t, "PUT", "/src/b", "{\"v\":2}", NULL), 201);
	ck_assert_int_eq(wait_status(&t, "/dst2/b", 200), 200);
	snprintf(path, sizeof(path), "/_replicator/live?rev=%s",
		 st_str(r, "rev"));
	json_object_put(r);
	ck_assert_int_eq(st_json(&t, "DELETE", path, NULL, NULL), 200);
	for (unsigned ms = 0; ms < WAIT_MS && (e = job_entry(j, "live"));
	     ms += 50) {
		json_object_put(e);
		tu_sleep_ms(50);
	}
	ck_assert_ptr_null(job_entry(j, "live"));
	ck_assert_int_eq(st_json(&t, "PUT", "/src/c", "{\"v\":3}", NULL), 201);
	tu_sleep_ms(300);
	ck_assert_int_eq(st_json(&t, "GET", "/dst2/c", NULL, NULL), 404);

	/* unusable: listed with the reason; credentials never shown */
	ck_assert_int_eq(st_json(&t, "PUT", "/_replicator/bad",
				 "{\"source\":\"src\"}", NULL), 201);
	ck_assert_int_eq(st_json(&t, "PUT", "/_replicator/far",
		"{\"source\":\"http://alice:s3cret@127.0.0.1:9/x\","
		"\"target\":\"dst\"}", NULL), 201);
	wait_state(j, "bad", "invalid");
	e = job_entry(j, "bad");
	ck_assert_ptr_nonnull(strstr(st_str(e, "error"), "source"));
	json_object_put(e);
	for (unsigned ms = 0; ms < WAIT_MS && !(e = job_entry(j, "far"));
	     ms += 50)
		tu_sleep_ms(50);
	ck_assert_ptr_nonnull(e);
	ck_assert_str_eq(st_str(e, "source"), "http://127.0.0.1:9/x");
	ck_assert_ptr_null(strstr(json_object_to_json_string(e), "s3cret"));
	json_object_put(e);
	jobs_stop(j);
	st_stop(&t);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("jobs");
	TCase *tc = tcase_create("core");

	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_jobs_run);
	suite_add_tcase(s, tc);
	return st_main(s);
}
