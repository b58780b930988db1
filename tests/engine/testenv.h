/*
 * Shared fixture of the engine tests that open environments: a base
 * directory per test program for their DATADIRs (removed at the end), a
 * fresh DATADIR path per test, and OK(), which fails a test with the
 * engine's message when a call does not return 0. Include after <check.h>.
 */
#ifndef BARREL_TESTENV_H
#define BARREL_TESTENV_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/error.h"
#include "tests/engine/testutil.h"

#define OK(expr)                                                         \
	do {                                                             \
		int rc_ = (expr);                                        \
		ck_assert_msg(rc_ == 0, "%s returned %d (%s)", #expr,    \
			      rc_, barrel_strerror(rc_));                \
	} while (0)

/* Defines g_base, base_setup() and base_teardown() for program `name`. */
#define TU_BASE_FIXTURE(name)                                            \
	static char g_base[PATH_MAX];                                    \
	static void base_setup(void)                                     \
	{                                                                \
		if (tu_mkdtemp(g_base, sizeof(g_base), name) < 0) {      \
			perror("mkdtemp");                               \
			abort();                                         \
		}                                                        \
	}                                                                \
	static void base_teardown(void)                                  \
	{                                                                \
		tu_rmtree(g_base);                                       \
	}

/* A DATADIR path that does not exist yet, in a fresh directory of base. */
static inline void tu_new_datadir(const char *base, char *out, size_t size)
{
	char dir[PATH_MAX];

	tu_path(dir, sizeof(dir), base, "tXXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	tu_path(out, size, dir, "data");
}

#endif
