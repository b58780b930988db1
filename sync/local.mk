# Sync: the CouchDB HTTP API and the replicator, a static library that
# barrel-syncd, barrelsync and barrelfs link.
noinst_LIBRARIES += libbarrelsync.a
libbarrelsync_a_SOURCES = \
	sync/catalog.h sync/catalog.c \
	sync/url.h sync/url.c \
	sync/http.h sync/http.c \
	sync/api.h sync/api.c sync/api_doc.c sync/api_view.c \
	sync/client.h sync/client.c \
	sync/repl.h sync/repl.c \
	sync/jobs.h sync/jobs.c
libbarrelsync_a_CFLAGS = $(AM_CFLAGS) $(JSONC_CFLAGS) $(MHD_CFLAGS) \
	$(CURL_CFLAGS) $(XCRYPT_CFLAGS) $(ZLIB_CFLAGS)

SYNC_LIBS = libbarrelsync.a $(BARREL_LIBS) $(MHD_LIBS) $(CURL_LIBS) \
	$(XCRYPT_LIBS) $(ZLIB_LIBS)

bin_PROGRAMS += barrel-syncd barrelsync
barrel_syncd_SOURCES = sync/syncd.c
barrel_syncd_CFLAGS = $(AM_CFLAGS) $(JSONC_CFLAGS)
barrel_syncd_LDADD = $(SYNC_LIBS)
barrelsync_SOURCES = tools/barrelsync.c
barrelsync_CFLAGS = $(AM_CFLAGS) $(JSONC_CFLAGS)
barrelsync_LDADD = $(SYNC_LIBS)
dist_man_MANS += man/barrel-syncd.8 man/barrelsync.1
EXTRA_DIST += contrib/barrel-syncd.service
