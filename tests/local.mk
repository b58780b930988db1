# Unit tests (Check) mirror the sources: tests/engine/test_<module>.c.
# Programs without their own _LDADD (the tests) link the engine and Check.
LDADD = $(BARREL_LIBS) $(CHECK_LIBS)
AM_CFLAGS += $(CHECK_CFLAGS)

ENGINE_TESTS = \
	tests/engine/test_error \
	tests/engine/test_io \
	tests/engine/test_segment \
	tests/engine/test_cache \
	tests/engine/test_hcache \
	tests/engine/test_btree \
	tests/engine/test_db \
	tests/engine/test_blob \
	tests/engine/test_gc \
	tests/engine/test_crash \
	tests/engine/test_corrupt \
	tests/engine/test_revtree \
	tests/engine/test_body \
	tests/engine/test_docdb \
	tests/engine/test_collate \
	tests/engine/test_mapjs \
	tests/engine/test_view

check_PROGRAMS += $(ENGINE_TESTS) tests/engine/killnine_writer \
	tests/fuzz/fuzz_body
TESTS += $(ENGINE_TESTS) tests/engine/test_killnine.sh \
	tests/tools/test_barrelctl.sh tests/tools/test_docs.sh \
	tests/fuzz/test_fuzz_body.sh
EXTRA_DIST += tests/engine/test_killnine.sh tests/tools/test_barrelctl.sh \
	tests/tools/test_docs.sh tests/fuzz/test_fuzz_body.sh \
	tests/engine/testutil.h tests/engine/testenv.h tests/fuzz/corpus_body

tests_engine_test_error_SOURCES = tests/engine/test_error.c
tests_engine_test_io_SOURCES = tests/engine/test_io.c
tests_engine_test_segment_SOURCES = tests/engine/test_segment.c
tests_engine_test_cache_SOURCES = tests/engine/test_cache.c
tests_engine_test_hcache_SOURCES = tests/engine/test_hcache.c
tests_engine_test_btree_SOURCES = tests/engine/test_btree.c
tests_engine_test_db_SOURCES = tests/engine/test_db.c
tests_engine_test_blob_SOURCES = tests/engine/test_blob.c
tests_engine_test_gc_SOURCES = tests/engine/test_gc.c
tests_engine_test_crash_SOURCES = tests/engine/test_crash.c
tests_engine_test_corrupt_SOURCES = tests/engine/test_corrupt.c
tests_engine_test_revtree_SOURCES = tests/engine/test_revtree.c
tests_engine_test_body_SOURCES = tests/engine/test_body.c
tests_engine_test_docdb_SOURCES = tests/engine/test_docdb.c
tests_engine_test_collate_SOURCES = tests/engine/test_collate.c
tests_engine_test_mapjs_SOURCES = tests/engine/test_mapjs.c
tests_engine_test_view_SOURCES = tests/engine/test_view.c
# The body fuzz target: under gcc a standalone driver replays the corpus
# and mutations of it; test_fuzz_body.sh also runs it under libFuzzer when
# clang has it.
tests_fuzz_fuzz_body_SOURCES = tests/fuzz/fuzz_body.c tests/fuzz/fuzz_main.c
tests_engine_killnine_writer_SOURCES = tests/engine/killnine_writer.c


# The mount, driven by real programs (exit 77 without /dev/fuse).
FS_TESTS = \
	tests/fs/test_mount_layout.sh \
	tests/fs/test_mount_editors.sh \
	tests/fs/test_mount_conflicts.sh \
	tests/fs/test_mount_posix.sh \
	tests/fs/test_mount_concurrency.sh \
	tests/fs/test_mount_large.sh \
	tests/fs/test_mount_helper.sh \
	tests/fs/test_mount_daemon.sh \
	tests/fs/test_mount_views.sh \
	tests/fs/test_mount_held.sh \
	tests/fs/test_mount_cache.sh
TESTS += $(FS_TESTS)
EXTRA_DIST += $(FS_TESTS) tests/fs/lib.sh

# Sync: the HTTP API and the replicator over in-process servers (Check).
SYNC_TESTS = \
	tests/sync/test_url \
	tests/sync/test_http \
	tests/sync/test_api_doc \
	tests/sync/test_api_view \
	tests/sync/test_repl \
	tests/sync/test_jobs
check_PROGRAMS += $(SYNC_TESTS)
TESTS += $(SYNC_TESTS)
EXTRA_DIST += tests/sync/synctest.h
SYNC_TEST_CFLAGS = $(AM_CFLAGS) $(JSONC_CFLAGS) $(CURL_CFLAGS)
SYNC_TEST_LIBS = $(SYNC_LIBS) $(CHECK_LIBS)
tests_sync_test_url_SOURCES = tests/sync/test_url.c
tests_sync_test_url_CFLAGS = $(SYNC_TEST_CFLAGS)
tests_sync_test_url_LDADD = $(SYNC_TEST_LIBS)
tests_sync_test_http_SOURCES = tests/sync/test_http.c
tests_sync_test_http_CFLAGS = $(SYNC_TEST_CFLAGS)
tests_sync_test_http_LDADD = $(SYNC_TEST_LIBS)
tests_sync_test_api_doc_SOURCES = tests/sync/test_api_doc.c
tests_sync_test_api_doc_CFLAGS = $(SYNC_TEST_CFLAGS)
tests_sync_test_api_doc_LDADD = $(SYNC_TEST_LIBS)
tests_sync_test_api_view_SOURCES = tests/sync/test_api_view.c
tests_sync_test_api_view_CFLAGS = $(SYNC_TEST_CFLAGS)
tests_sync_test_api_view_LDADD = $(SYNC_TEST_LIBS)
tests_sync_test_repl_SOURCES = tests/sync/test_repl.c
tests_sync_test_repl_CFLAGS = $(SYNC_TEST_CFLAGS)
tests_sync_test_repl_LDADD = $(SYNC_TEST_LIBS)
tests_sync_test_jobs_SOURCES = tests/sync/test_jobs.c
tests_sync_test_jobs_CFLAGS = $(SYNC_TEST_CFLAGS)
tests_sync_test_jobs_LDADD = $(SYNC_TEST_LIBS)

# Sync between real programs: barrel-syncd, barrelsync, two barrelfs mounts
# and a PouchDB peer (node; skips without tests/sync/node_modules).
SYNC_SH_TESTS = \
	tests/sync/test_sync_pouchdb.sh \
	tests/sync/test_sync_mounts.sh \
	tests/sync/test_sync_security.sh
TESTS += $(SYNC_SH_TESTS)
EXTRA_DIST += $(SYNC_SH_TESTS) tests/sync/lib.sh tests/sync/package.json \
	tests/sync/package-lock.json tests/sync/pouchdb_server.js \
	tests/sync/pouch_replicate.js
