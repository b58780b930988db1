bin_PROGRAMS += barrelctl
barrelctl_SOURCES = tools/barrelctl.c tools/ctl.h tools/ctl_docs.c \
	tools/bench.h tools/bench.c \
	tools/bench_barrel.c tools/bench_sqlite.c tools/bench_lmdb.c \
	tools/bench_rocksdb.c tools/bench_log.c tools/bench_docs.c
barrelctl_CFLAGS = $(AM_CFLAGS) $(JSONC_CFLAGS) $(GIT2_CFLAGS) \
	$(SQLITE_CFLAGS) $(LMDB_CFLAGS) $(ROCKSDB_CFLAGS)
barrelctl_LDADD = $(BARREL_LIBS) $(GIT2_LIBS) $(SQLITE_LIBS) $(LMDB_LIBS) \
	$(ROCKSDB_LIBS)
dist_man_MANS += man/barrelctl.1

# The mount benchmark of `make bench`: bench_fs times the small-file
# workload in one directory; bench_mount.sh mounts tmpfs, libfuse's
# passthrough_ll and barrelfs, runs it on each and prints the report.
noinst_PROGRAMS = bench_fs
bench_fs_SOURCES = tools/bench_fs.c
bench_fs_LDADD =
EXTRA_DIST += tools/bench_lib.sh tools/bench_mount.sh tools/bench_sync.sh tools/bench_sync_proxy.js

# The view benchmark of `make bench`: bench_view indexes and queries a
# view of barrelfs, tools/bench_view.js the same in PouchDB, and
# bench_view.sh runs both and prints the report.
noinst_PROGRAMS += bench_view
bench_view_SOURCES = tools/bench_view.c
bench_view_LDADD = $(BARREL_LIBS)
EXTRA_DIST += tools/bench_view.sh tools/bench_view.js
