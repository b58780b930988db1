/*
 * Logging. Messages go to stderr by default; a program may install its own
 * sink (syslog, a test's capture buffer) with barrel_log_set_sink().
 */
#ifndef BARREL_LOG_H
#define BARREL_LOG_H

enum barrel_log_level { BLOG_ERR, BLOG_WARN, BLOG_INFO, BLOG_DEBUG };

typedef void (*barrel_log_sink)(void *arg, enum barrel_log_level lvl,
				const char *msg);

void barrel_log(enum barrel_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* NULL restores stderr. Not thread-safe against concurrent logging. */
void barrel_log_set_sink(barrel_log_sink sink, void *arg);

/* Messages above this level are dropped (default BLOG_INFO). */
void barrel_log_set_level(enum barrel_log_level lvl);

#endif
