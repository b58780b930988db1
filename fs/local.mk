# The mount: barrelfs(8), on libfuse's low-level API.
bin_PROGRAMS += barrelfs
barrelfs_SOURCES = fs/fs.h fs/main.c fs/ops.c fs/node.c fs/names.c \
	fs/db.c fs/attr.c fs/stat.c fs/file.c fs/dir.c fs/views.c \
	fs/worker.c fs/serve.c fs/viewdir.c
barrelfs_CFLAGS = $(AM_CFLAGS) $(FUSE_CFLAGS) $(JSONC_CFLAGS)
barrelfs_LDADD = $(SYNC_LIBS) $(FUSE_LIBS)
dist_man_MANS += man/barrelfs.8
