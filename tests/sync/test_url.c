#include "config.h"

/*
 * The percent-encoding codec (sync/url.c): what is escaped, the doc id
 * prefixes that keep their slash, and decoding with and without '+',
 * including every malformed escape it must refuse.
 */

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "sync/url.h"

/* url_escape(s, doc_id) is want. */
static void escapes_to(const char *s, bool doc_id, const char *want)
{
	char *e = url_escape(s, doc_id);

	ck_assert_ptr_nonnull(e);
	ck_assert_str_eq(e, want);
	free(e);
}

/* url_unescape() of s is want (NULL: BARREL_E_INVALID). */
static void unescapes_to(const char *s, bool plus, const char *want)
{
	char *d = NULL;
	int rc = url_unescape(s, strlen(s), plus, &d);

	if (!want) {
		ck_assert_msg(rc == BARREL_E_INVALID, "%s: rc %d", s, rc);
		ck_assert_ptr_null(d);
		return;
	}
	ck_assert_msg(rc == 0, "%s: rc %d", s, rc);
	ck_assert_str_eq(d, want);
	free(d);
}

/* Only [A-Za-z0-9._~-] stay as they are; bytes over 0x7f are escaped
 * one by one; "_design/" and "_local/" keep their slash as doc ids. */
START_TEST(test_escape)
{
	escapes_to("", false, "");
	escapes_to("aZ09-._~", false, "aZ09-._~");
	escapes_to("a b/c?d#e%f+g", false, "a%20b%2Fc%3Fd%23e%25f%2Bg");
	escapes_to("\xc3\xa9", false, "%C3%A9");
	escapes_to("_design/a b/c", true, "_design/a%20b%2Fc");
	escapes_to("_design/a", false, "_design%2Fa");
	escapes_to("_local/x", true, "_local/x");
	escapes_to("_local/x", false, "_local%2Fx");
	escapes_to("_localx/y", true, "_localx%2Fy");
}
END_TEST

/* Escapes in either case decode; '+' is a space only when asked; a
 * decoded string round-trips through url_escape(). */
START_TEST(test_unescape)
{
	char *d = NULL, *e;

	unescapes_to("", false, "");
	unescapes_to("plain", false, "plain");
	unescapes_to("a%20b%2fc%2F", false, "a b/c/");
	unescapes_to("a+b", false, "a+b");
	unescapes_to("a+b%2B", true, "a b+");
	unescapes_to("%C3%a9", false, "\xc3\xa9");
	ck_assert_int_eq(url_unescape("ab%41cd", 5, false, &d), 0);
	ck_assert_str_eq(d, "abA");     /* only len bytes are read */
	free(d);
	e = url_escape("x /%+\xff", false);
	ck_assert_int_eq(url_unescape(e, strlen(e), true, &d), 0);
	ck_assert_str_eq(d, "x /%+\xff");
	free(d);
	free(e);
}
END_TEST

/* A '%' without two hex digits after it, and %00, are refused. */
START_TEST(test_unescape_bad)
{
	unescapes_to("%", false, NULL);
	unescapes_to("a%", false, NULL);
	unescapes_to("a%4", false, NULL);
	unescapes_to("%zz", false, NULL);
	unescapes_to("%4g", false, NULL);
	unescapes_to("%g4", false, NULL);
	unescapes_to("a%00b", false, NULL);
	unescapes_to("%%41", false, NULL);
}
END_TEST

static Suite *url_suite(void)
{
	Suite *s = suite_create("url");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_escape);
	tcase_add_test(tc, test_unescape);
	tcase_add_test(tc, test_unescape_bad);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(url_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
