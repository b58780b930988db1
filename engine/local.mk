# The storage engine: a static library that fs/, sync/ and tools/ link.
noinst_LIBRARIES += libbarrel.a
libbarrel_a_SOURCES = \
	engine/banned.h \
	engine/error.h engine/error.c \
	engine/log.h engine/log.c \
	engine/io.h engine/io_uring.c engine/io_fault.c \
	engine/segment.h engine/segment.c \
	engine/cache.h engine/cache.c engine/hcache.h engine/hcache.c \
	engine/btree.h engine/btree.c \
	engine/db.h engine/db_i.h engine/db.c engine/txn.c engine/snap.c \
	engine/checkpoint.c engine/recover.c engine/blob.c engine/gc.c \
	engine/revtree.h engine/revtree.c \
	engine/body.h engine/body_i.h engine/body.c engine/bodyscan.c \
	engine/docdb.h engine/docdb_i.h engine/docdb.c engine/docatt.c \
	engine/docname.h engine/docname.c engine/docdiff.h engine/docdiff.c \
	engine/hex.h engine/bbuf.h engine/bbuf.c \
	engine/collate.h engine/collate.c engine/mapjs.h engine/mapjs.c \
	engine/view.h engine/view.c
libbarrel_a_CFLAGS = $(AM_CFLAGS) $(URING_CFLAGS) $(XXHASH_CFLAGS) \
	$(JSONC_CFLAGS) $(CRYPTO_CFLAGS) $(GIT2_CFLAGS) $(ICU_CFLAGS) \
	$(DUKTAPE_CFLAGS)

BARREL_LIBS = libbarrel.a $(URING_LIBS) $(XXHASH_LIBS) $(JSONC_LIBS) \
	$(CRYPTO_LIBS) $(GIT2_LIBS) $(ICU_LIBS) $(DUKTAPE_LIBS) -lm
