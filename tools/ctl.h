/*
 * What barrelctl.c (dispatch, usage, opening a DATADIR) shares with the
 * files of its commands: ctl_docs.c holds the document commands.
 *
 * A command returns its exit status: 0, EXIT_TROUBLE (an error, said on
 * stderr) or EXIT_USAGE (bad usage: the reason, then its usage).
 */
#ifndef BARREL_CTL_H
#define BARREL_CTL_H

#include <stdbool.h>
#include <stdio.h>

struct benv;

#define EXIT_TROUBLE 1
#define EXIT_USAGE 2

/* Where a command works. */
struct ctl {
	const char *datadir;    /* -d, else $BARREL_DATADIR */
	const char *db;         /* -b: one database; NULL: every one */
};

struct cmd {
	const char *name;
	bool datadir;           /* works on a DATADIR (takes -d) */
	const char *synopsis;   /* its operands and options, for usage lines */
	const char *help;       /* what it does, then its options */
	int (*run)(struct ctl *ctl, const struct cmd *c, int argc, char **argv);
};

/* Print c's usage and help on out; returns status. */
int cmd_usage(const struct cmd *c, FILE *out, int status);

/* -d DATADIR and -h, which every command takes; anything else is bad
 * usage. -1 when opt was one of them and parsing goes on, else the exit
 * status to return. */
#define CTL_SHORTOPTS "d:h"
#define CTL_LONGOPTS \
	{ "datadir", required_argument, NULL, 'd' }, \
	{ "help", no_argument, NULL, 'h' }
int ctl_option(struct ctl *ctl, const struct cmd *c, int opt);

/*
 * Open ctl's DATADIR without background GC. Returns 0 with *env owned by
 * the caller (benv_close()), or an exit status after saying why.
 */
int ctl_open(const struct ctl *ctl, struct benv **env);

/* The document commands (ctl_docs.c). argv[0] is the command's name. */
int cmd_put(struct ctl *ctl, const struct cmd *c, int argc, char **argv);
int cmd_get(struct ctl *ctl, const struct cmd *c, int argc, char **argv);
int cmd_rm(struct ctl *ctl, const struct cmd *c, int argc, char **argv);
int cmd_log(struct ctl *ctl, const struct cmd *c, int argc, char **argv);
int cmd_diff(struct ctl *ctl, const struct cmd *c, int argc, char **argv);
int cmd_changes(struct ctl *ctl, const struct cmd *c, int argc,
		char **argv);
int cmd_export(struct ctl *ctl, const struct cmd *c, int argc, char **argv);
int cmd_import(struct ctl *ctl, const struct cmd *c, int argc, char **argv);

#endif
