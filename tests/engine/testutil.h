/*
 * Helpers shared by the engine's tests: a scratch directory per run,
 * removing a tree, a deterministic PRNG and deterministic value contents.
 * Header-only (static inline) so each test program stays one source file.
 */
#ifndef BARREL_TESTUTIL_H
#define BARREL_TESTUTIL_H

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * Make a fresh directory "$TMPDIR/barrel-PREFIX-XXXXXX" into out.
 * Returns 0 or -errno.
 */
static inline int tu_mkdtemp(char *out, size_t size, const char *prefix)
{
	const char *tmp = getenv("TMPDIR");
	int n;

	if (!tmp || !*tmp)
		tmp = "/tmp";
	n = snprintf(out, size, "%s/barrel-%s-XXXXXX", tmp, prefix);
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	if (!mkdtemp(out))
		return -errno;
	return 0;
}

static inline int tu_rm_one(const char *path, const struct stat *sb,
			    int type, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	if (type == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

/* Remove path and everything under it (best effort, never follows links). */
static inline void tu_rmtree(const char *path)
{
	nftw(path, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Make "base/name" into out; aborts the program when it does not fit. */
static inline void tu_path(char *out, size_t size, const char *base,
			   const char *name)
{
	int n = snprintf(out, size, "%s/%s", base, name);

	if (n < 0 || (size_t)n >= size) {
		fprintf(stderr, "path too long: %s/%s\n", base, name);
		abort();
	}
}

/* ---- deterministic randomness ---- */

/* SplitMix64: a good 64-bit mix of one word. */
static inline uint64_t tu_mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* A small PRNG (SplitMix64 stream); the same seed gives the same numbers. */
struct tu_rng {
	uint64_t state;
};

static inline void tu_rng_init(struct tu_rng *r, uint64_t seed)
{
	r->state = seed;
}

static inline uint64_t tu_rng_next(struct tu_rng *r)
{
	r->state += 0x9e3779b97f4a7c15ull;
	return tu_mix64(r->state);
}

/* Uniform in [0, n); n > 0. */
static inline uint64_t tu_rng_below(struct tu_rng *r, uint64_t n)
{
	return tu_rng_next(r) % n;
}

/* Uniform in [lo, hi]. */
static inline uint64_t tu_rng_range(struct tu_rng *r, uint64_t lo, uint64_t hi)
{
	return lo + tu_rng_below(r, hi - lo + 1);
}

/* true with probability pct / 100. */
static inline bool tu_rng_pct(struct tu_rng *r, unsigned pct)
{
	return tu_rng_below(r, 100) < pct;
}

/* ---- deterministic contents ---- */

/*
 * The byte at absolute offset off of the endless stream named by seed.
 * tu_pattern() fills a window of that stream, so any range of a large
 * object can be regenerated (and compared) without holding the whole.
 */
static inline void tu_pattern(uint64_t seed, uint64_t off, void *buf,
			      size_t len)
{
	uint8_t *p = buf;
	uint64_t word_idx = off / 8, w;
	unsigned shift = (unsigned)(off % 8);

	w = tu_mix64(seed ^ tu_mix64(word_idx));
	for (size_t i = 0; i < len; i++) {
		p[i] = (uint8_t)(w >> (8 * shift));
		if (++shift == 8) {
			shift = 0;
			word_idx++;
			w = tu_mix64(seed ^ tu_mix64(word_idx));
		}
	}
}

/*
 * A value of len bytes that identifies (key, version): a printable header
 * "v:KEY:VERSION:LEN|" (truncated when len is short) followed by pattern
 * bytes seeded by key and version. tu_value_check() tells whether buf is
 * exactly such a value and returns its version.
 */
static inline void tu_value(void *buf, size_t len, uint64_t key,
			    uint64_t version)
{
	char hdr[64];
	int n = snprintf(hdr, sizeof(hdr), "v:%llu:%llu:%zu|",
			 (unsigned long long)key,
			 (unsigned long long)version, len);
	size_t h = (size_t)n < len ? (size_t)n : len;

	memcpy(buf, hdr, h);
	tu_pattern(tu_mix64(key * 1000003ull + version), h,
		   (uint8_t *)buf + h, len - h);
}

/*
 * true when buf[0..len) is exactly tu_value(key, v, len) for the version v
 * named in its header (stored into *version). Values too short to carry a
 * whole header cannot be checked this way and return false.
 */
static inline bool tu_value_check(const void *buf, size_t len, uint64_t key,
				  uint64_t *version)
{
	char hdr[64];
	unsigned long long k, v;
	size_t l;
	const char *bar;
	void *want;
	bool ok;

	if (len < 8)
		return false;
	memset(hdr, 0, sizeof(hdr));
	memcpy(hdr, buf, len < sizeof(hdr) - 1 ? len : sizeof(hdr) - 1);
	bar = memchr(hdr, '|', sizeof(hdr));
	if (!bar)
		return false;
	if (sscanf(hdr, "v:%llu:%llu:%zu|", &k, &v, &l) != 3)
		return false;
	if (k != key || l != len)
		return false;
	want = malloc(len);
	if (!want)
		return false;
	tu_value(want, len, key, v);
	ok = memcmp(want, buf, len) == 0;
	free(want);
	if (ok && version)
		*version = v;
	return ok;
}

/* Milliseconds on the monotonic clock. */
static inline uint64_t tu_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void tu_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* The JSON text {"a":[[...]]} nested depth levels in all (the object
 * counting as one), for depth-limit tests; malloc'ed, NUL-terminated,
 * NULL when out of memory. */
static inline char *tu_nested_object(size_t depth, size_t *len)
{
	size_t inner = depth - 1, n = 5;
	char *s = malloc(2 * inner + 16);

	if (!s)
		return NULL;
	memcpy(s, "{\"a\":", 5);
	memset(s + n, '[', inner);
	n += inner;
	memset(s + n, ']', inner);
	n += inner;
	s[n++] = '}';
	s[n] = '\0';
	*len = n;
	return s;
}

#endif
