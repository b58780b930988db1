/*
 * A stand-in for libFuzzer's main, so that gcc builds run the fuzz target
 * too (make check): every file of the corpus directories named on the
 * command line (default: $abs_top_srcdir/tests/fuzz/corpus_body) goes
 * through LLVMFuzzerTestOneInput(), then RUNS deterministic mutations of
 * them (fixed seed: every run tries the same inputs). A broken invariant
 * aborts; the exit status is 0 when every input ran.
 *
 *   fuzz_body [-r RUNS] [DIR|FILE]...
 *
 * Mutations, one per run (two to four in a quarter of the runs), on a
 * copy of one corpus file: flip a bit, overwrite a byte, insert JSON
 * punctuation or an escape, delete a range, truncate, duplicate a range,
 * splice a piece of another file.
 * When an input crashes the target, it is written to FUZZ_CRASH_FILE in
 * the current directory and named on stderr, to replay as a FILE.
 *
 * The libFuzzer build (clang -fsanitize=fuzzer) brings its own main and
 * compiles without this file; BARREL_LIBFUZZER empties it should it be
 * given anyway.
 */
#ifndef BARREL_LIBFUZZER
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_RUNS 20000u          /* mutations, over the whole corpus */
#define FUZZ_SEED 0x66757a7a626f6479ULL
#define FUZZ_MAX_INPUT (64u << 10) /* a mutant never grows past this */
#define FUZZ_MAX_FILES 4096u
#define FUZZ_CRASH_FILE "fuzz_body.crash"

/* One corpus file, held in memory. */
struct seed {
	char *path;
	uint8_t *data;
	size_t len;
};

/* The corpus and the run's counts. */
struct corpus {
	struct seed seeds[FUZZ_MAX_FILES];
	size_t n;
	uint64_t runs;                /* inputs given to the target */
	uint64_t accepted;            /* of them, bodies body_parse took */
};

/* The input being run, for the crash handler. */
static struct {
	const uint8_t *data;
	size_t len;
	const char *path;             /* the corpus file, or its source */
	uint64_t mutation;            /* 0: the file itself, else run + 1 */
} current;

static void write_str(int fd, const char *s)
{
	if (write(fd, s, strlen(s)) < 0)
		return;
}

/* On a crash: save the input and say where it came from (signal-safe
 * calls only), then die of the signal as before. */
static void on_crash(int sig)
{
	int fd = open(FUZZ_CRASH_FILE, O_WRONLY | O_CREAT | O_TRUNC |
		      O_CLOEXEC, 0644);
	char num[24];
	size_t i = sizeof(num);
	uint64_t m = current.mutation;

	if (fd >= 0) {
		if (write(fd, current.data, current.len) < 0)
			write_str(2, "fuzz_body: could not save the input\n");
		close(fd);
	}
	num[--i] = '\0';
	do {
		num[--i] = (char)('0' + m % 10);
		m /= 10;
	} while (m);
	write_str(2, "fuzz_body: crashed on ");
	write_str(2, current.mutation ? "mutation run " : "corpus file ");
	write_str(2, current.mutation ? num + i : "");
	write_str(2, current.mutation ? " of " : "");
	write_str(2, current.path ? current.path : "?");
	write_str(2, "; input saved as " FUZZ_CRASH_FILE "\n");
	signal(sig, SIG_DFL);
	raise(sig);
}

static uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* A number in [0, n), n > 0. */
static size_t rng_below(uint64_t *state, size_t n)
{
	return (size_t)(rng_next(state) % n);
}

static int read_file(const char *path, uint8_t **data, size_t *len)
{
	FILE *f = fopen(path, "rbe");
	uint8_t *buf = NULL;
	size_t cap = 0, n = 0, got;

	if (!f)
		return -1;
	do {
		if (n == cap) {
			uint8_t *bigger = realloc(buf, cap ? cap * 2 : 4096);

			if (!bigger)
				goto out_fail;
			buf = bigger;
			cap = cap ? cap * 2 : 4096;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
	} while (got > 0);
	if (ferror(f))
		goto out_fail;
	fclose(f);
	*data = buf;
	*len = n;
	return 0;
out_fail:
	free(buf);
	fclose(f);
	return -1;
}

static int add_file(struct corpus *c, const char *path)
{
	struct seed *s = &c->seeds[c->n];

	if (c->n == FUZZ_MAX_FILES) {
		fprintf(stderr, "fuzz_body: more than %u corpus files\n",
			FUZZ_MAX_FILES);
		return -1;
	}
	if (read_file(path, &s->data, &s->len)) {
		fprintf(stderr, "fuzz_body: %s: %s\n", path, strerror(errno));
		return -1;
	}
	s->path = strdup(path);
	if (!s->path) {
		free(s->data);
		return -1;
	}
	c->n++;
	return 0;
}

/* Add every regular file of dir, in name order (a fixed run order). */
static int add_dir(struct corpus *c, const char *dir)
{
	struct dirent **names;
	int n = scandir(dir, &names, NULL, alphasort), rc = 0;

	if (n < 0) {
		fprintf(stderr, "fuzz_body: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat st;
		int len = snprintf(path, sizeof(path), "%s/%s", dir,
				   names[i]->d_name);

		if (rc == 0 && len > 0 && (size_t)len < sizeof(path) &&
		    stat(path, &st) == 0 && S_ISREG(st.st_mode))
			rc = add_file(c, path);
		free(names[i]);
	}
	free(names);
	return rc;
}

static int add_path(struct corpus *c, const char *path)
{
	struct stat st;

	if (stat(path, &st)) {
		fprintf(stderr, "fuzz_body: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return S_ISDIR(st.st_mode) ? add_dir(c, path) : add_file(c, path);
}

static void run_one(struct corpus *c, const uint8_t *data, size_t len)
{
	struct body b = { 0 };

	current.data = data;
	current.len = len;
	LLVMFuzzerTestOneInput(data, len);
	if (body_parse((const char *)data, len, &b, NULL) == 0)
		c->accepted++;
	body_release(&b);
	c->runs++;
}

/* Insert n bytes at pos of buf (len bytes now, room for FUZZ_MAX_INPUT). */
static void insert_bytes(uint8_t *buf, size_t *len, size_t pos,
			 const void *bytes, size_t n)
{
	if (*len + n > FUZZ_MAX_INPUT)
		return;
	memmove(buf + pos + n, buf + pos, *len - pos);
	memcpy(buf + pos, bytes, n);
	*len += n;
}

/* What mutations insert: JSON's punctuation and its sharp edges. */
static const char *const fuzz_tokens[] = {
	"{", "}", "[", "]", "\"", ":", ",", "\\", " ", "\n", "-", "0", ".",
	"e", "E+", "1e999", "-0", "18446744073709551616", "true", "null",
	"\\u0000", "\\ud800", "\\udc00", "\\ud83d\\ude00", "\\u00e9",
	"\xc3\xa9", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\xff",
	"\"_id\":", "\"_rev\":\"1-abc\"", "\"_deleted\":true",
	"\"_revisions\":{\"start\":2,\"ids\":[\"b\",\"a\"]}",
	"\"_attachments\":{\"a\":{\"stub\":true}}", "\"_x\":1",
	"[[[[[[[[", "]]]]]]]]", "{\"a\":{\"a\":",
};
#define NTOKENS (sizeof(fuzz_tokens) / sizeof(fuzz_tokens[0]))

/* Apply one random mutation to buf; other is a corpus file to splice. */
static void mutate(uint8_t *buf, size_t *len, const struct seed *other,
		   uint64_t *rng)
{
	size_t pos = rng_below(rng, *len + 1), n;
	const char *tok;

	switch (rng_below(rng, 7)) {
	case 0:                           /* flip a bit */
		if (*len)
			buf[pos % *len] ^= (uint8_t)(1u << rng_below(rng, 8));
		break;
	case 1:                           /* overwrite a byte */
		if (*len)
			buf[pos % *len] = (uint8_t)rng_next(rng);
		break;
	case 2:                           /* insert a token */
		tok = fuzz_tokens[rng_below(rng, NTOKENS)];
		insert_bytes(buf, len, pos, tok, strlen(tok));
		break;
	case 3:                           /* delete a range */
		n = rng_below(rng, *len - pos + 1);
		n = n > 16 ? n / 8 : n;
		memmove(buf + pos, buf + pos + n, *len - pos - n);
		*len -= n;
		break;
	case 4:                           /* truncate */
		*len = pos;
		break;
	case 5:                           /* duplicate a range */
		if (*len) {
			size_t from = rng_below(rng, *len);
			uint8_t piece[256];

			n = rng_below(rng, *len - from) + 1;
			n = n > sizeof(piece) ? sizeof(piece) : n;
			memcpy(piece, buf + from, n);
			insert_bytes(buf, len, pos, piece, n);
		}
		break;
	default:                          /* splice from another file */
		if (other->len) {
			size_t from = rng_below(rng, other->len);

			n = rng_below(rng, other->len - from) + 1;
			n = n > 256 ? 256 : n;
			insert_bytes(buf, len, pos, other->data + from, n);
		}
		break;
	}
}

static int run_mutations(struct corpus *c, uint64_t runs)
{
	uint8_t *buf = malloc(FUZZ_MAX_INPUT);
	uint64_t rng = FUZZ_SEED;

	if (!buf)
		return -1;
	for (uint64_t r = 0; r < runs; r++) {
		const struct seed *s = &c->seeds[r % c->n];
		size_t len = s->len < FUZZ_MAX_INPUT ? s->len : FUZZ_MAX_INPUT;
		/* Mostly one mutation: more of them still parse. */
		size_t k = rng_below(&rng, 4) ? 1 : 2 + rng_below(&rng, 3);

		current.path = s->path;
		current.mutation = r + 1;
		memcpy(buf, s->data, len);
		while (k--)
			mutate(buf, &len, &c->seeds[rng_below(&rng, c->n)],
			       &rng);
		run_one(c, buf, len);
	}
	free(buf);
	return 0;
}

static void corpus_release(struct corpus *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free(c->seeds[i].path);
		free(c->seeds[i].data);
	}
}

static int parse_runs(const char *s, uint64_t *runs)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-')
		return -1;
	*runs = v;
	return 0;
}

int main(int argc, char **argv)
{
	static struct corpus c;
	const char *top = getenv("abs_top_srcdir");
	char def[4096];
	uint64_t runs = FUZZ_RUNS, seeded;
	struct timespec t0, t1;
	int opt, rc = 1;

	while ((opt = getopt(argc, argv, "r:")) != -1) {
		if (opt != 'r' || parse_runs(optarg, &runs)) {
			fprintf(stderr, "usage: fuzz_body [-r RUNS] "
				"[DIR|FILE]...\n");
			return 2;
		}
	}
	snprintf(def, sizeof(def), "%s/tests/fuzz/corpus_body",
		 top && *top ? top : ".");
	if (optind == argc && add_path(&c, def))
		goto out;
	for (int i = optind; i < argc; i++)
		if (add_path(&c, argv[i]))
			goto out;
	if (c.n == 0) {
		fprintf(stderr, "fuzz_body: no corpus files\n");
		goto out;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	signal(SIGABRT, on_crash);
	signal(SIGSEGV, on_crash);
	signal(SIGBUS, on_crash);
	for (size_t i = 0; i < c.n; i++) {
		current.path = c.seeds[i].path;
		run_one(&c, c.seeds[i].data, c.seeds[i].len);
	}
	seeded = c.accepted;
	if (run_mutations(&c, runs))
		goto out;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("fuzz_body: %zu corpus files (%" PRIu64 " parse), %" PRIu64
	       " mutations (%" PRIu64 " parse), no invariant broken, "
	       "%.1f s\n", c.n, seeded, runs, c.accepted - seeded,
	       (double)(t1.tv_sec - t0.tv_sec) +
	       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	rc = 0;
out:
	corpus_release(&c);
	return rc;
}
#endif
