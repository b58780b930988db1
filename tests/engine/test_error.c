#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"

/* Every BARREL_E_* code has its own message, an errno and an HTTP error. */
START_TEST(test_every_code_mapped)
{
	for (int e = BARREL_E_FIRST; e < BARREL_E_LAST; e++) {
		const char *msg = barrel_strerror(e);
		int status = barrel_http_status(e);

		ck_assert_msg(strcmp(msg, "unknown error") != 0,
			      "code %d has no message", e);
		ck_assert_msg(strcmp(msg, strerror(-e)) != 0, "code %d", e);
		ck_assert_int_gt(barrel_errno(e), 0);
		ck_assert_msg(status >= 400 && status <= 599,
			      "code %d: status %d", e, status);
		ck_assert_ptr_nonnull(barrel_http_error(e));
		for (int o = BARREL_E_FIRST; o < e; o++)
			ck_assert_str_ne(barrel_strerror(o), msg);
	}
}
END_TEST

/* System errors keep their errno; ENOENT is a 404, success is a 200. */
START_TEST(test_errno_passthrough)
{
	ck_assert_int_eq(barrel_errno(-ENOENT), ENOENT);
	ck_assert_int_eq(barrel_http_status(-ENOENT), 404);
	ck_assert_str_eq(barrel_http_error(-ENOENT), "not_found");
	ck_assert_str_eq(barrel_strerror(-ENOENT), strerror(ENOENT));
	ck_assert_int_eq(barrel_errno(-EIO), EIO);
	ck_assert_int_eq(barrel_http_status(-EIO), 500);
	ck_assert_int_eq(barrel_errno(0), 0);
	ck_assert_int_eq(barrel_http_status(0), 200);
	ck_assert_str_eq(barrel_strerror(0), "success");
}
END_TEST

/* The table's key entries: corruption is EIO/500, conflict 409, etc. */
START_TEST(test_known_mappings)
{
	ck_assert_int_eq(barrel_errno(BARREL_E_CORRUPT), EIO);
	ck_assert_int_eq(barrel_http_status(BARREL_E_CORRUPT), 500);
	ck_assert_int_eq(barrel_errno(BARREL_E_NOTFOUND), ENOENT);
	ck_assert_int_eq(barrel_http_status(BARREL_E_NOTFOUND), 404);
	ck_assert_int_eq(barrel_http_status(BARREL_E_CONFLICT), 409);
	ck_assert_str_eq(barrel_http_error(BARREL_E_CONFLICT), "conflict");
	ck_assert_int_eq(barrel_errno(BARREL_E_TOOBIG), EFBIG);
	ck_assert_int_eq(barrel_errno(BARREL_E_FIRST - 1), EIO);
	ck_assert_str_eq(barrel_strerror(BARREL_E_FIRST - 1), "unknown error");
}
END_TEST

static Suite *error_suite(void)
{
	Suite *s = suite_create("error");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_every_code_mapped);
	tcase_add_test(tc, test_errno_passthrough);
	tcase_add_test(tc, test_known_mappings);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(error_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
