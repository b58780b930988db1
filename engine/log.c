#include "config.h"
#include "engine/log.h"

#include <stdarg.h>

static barrel_log_sink log_sink;
static void *log_arg;
static enum barrel_log_level log_level = BLOG_INFO;

static const char *const level_names[] = { "error", "warning", "info", "debug" };

void barrel_log(enum barrel_log_level lvl, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (lvl > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_sink)
		log_sink(log_arg, lvl, msg);
	else
		fprintf(stderr, "barrel: %s: %s\n", level_names[lvl], msg);
}

void barrel_log_set_sink(barrel_log_sink sink, void *arg)
{
	log_sink = sink;
	log_arg = arg;
}

void barrel_log_set_level(enum barrel_log_level lvl)
{
	log_level = lvl;
}
