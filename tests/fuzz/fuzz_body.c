/*
 * The fuzz target of body_parse() (engine/body.h): whatever the bytes,
 * body_parse() either fails with a reason or gives a body whose derived
 * facts hold together. A broken invariant abort()s, which libFuzzer and
 * the gcc driver (fuzz_main.c) report as a crash. The invariants:
 *  1. an error is a body.h error code with a one-line reason in err;
 *  2. accepted text is at most BODY_MAX_LEN bytes of valid UTF-8, and a
 *     reference recognizer of RFC 8259 finds in it one object nested at
 *     most BODY_MAX_DEPTH deep (counting the object) and only whitespace
 *     after it;
 *  3. body_rev() succeeds, gives generation 1 (the parent's + 1 on top of
 *     the body's "_rev"), is deterministic (twice the same id) and hashes
 *     the deleted flag;
 *  4. body_normalize()'s text parses again, without reserved members, to
 *     the same revision id (the canonical form is stable under
 *     normalization), and normalizing that gives the same text again;
 *  5. an extracted "_id" is valid UTF-8 and NUL-terminated; "_rev" and
 *     "_revisions" are valid ids, the path's generations falling by one;
 *     a plain body has neither "_revisions" nor "_attachments";
 *  6. body_utf8_valid() agrees with a reference decoder on the input;
 *  7. body_parse_json(), the json-c parse, agrees with body_parse()'s
 *     scan: the same code, and for a body both accept the same reserved
 *     members and the same revision ids.
 * Built two ways: with fuzz_main.c by gcc for make check, and alone by
 * clang -fsanitize=fuzzer (test_fuzz_body.sh).
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/body.h"
#include "engine/error.h"
#include "engine/revtree.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Report which invariant broke, then crash for the fuzzer to notice. */
#define CHECK(cond)							\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "fuzz_body: %s:%d: invariant "	\
				"failed: %s\n", __FILE__, __LINE__,	\
				#cond);					\
			abort();					\
		}							\
	} while (0)

/* RFC 3629 UTF-8, written out independently of body.c: shortest forms
 * only, no surrogates, nothing above U+10FFFF. NUL is valid UTF-8. */
static bool ref_utf8_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint8_t c = s[i];
		uint8_t lo = 0x80, hi = 0xbf;
		size_t more;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			more = 1;
		else if (c >= 0xe0 && c <= 0xef)
			more = 2;
		else if (c >= 0xf0 && c <= 0xf4)
			more = 3;
		else
			return false;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
		else if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
		if (len - i <= more || s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= more; k++)
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
		i += more + 1;
	}
	return true;
}

/* A reference recognizer of RFC 8259 text, independent of json-c. */
struct ref_scan {
	const uint8_t *p, *end;
};

static void ref_ws(struct ref_scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' ||
				 *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static bool ref_eat(struct ref_scan *s, char c)
{
	if (s->p >= s->end || *s->p != (uint8_t)c)
		return false;
	s->p++;
	return true;
}

static bool ref_literal(struct ref_scan *s, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n))
		return false;
	s->p += n;
	return true;
}

static bool ref_digits(struct ref_scan *s)
{
	const uint8_t *start = s->p;

	while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
		s->p++;
	return s->p > start;
}

/* number = [ minus ] int [ frac ] [ exp ] */
static bool ref_number(struct ref_scan *s)
{
	ref_eat(s, '-');
	if (!ref_eat(s, '0') && (s->p >= s->end || *s->p < '1' ||
				 *s->p > '9' || !ref_digits(s)))
		return false;
	if (ref_eat(s, '.') && !ref_digits(s))
		return false;
	if (ref_eat(s, 'e') || ref_eat(s, 'E')) {
		if (!ref_eat(s, '+'))
			ref_eat(s, '-');
		if (!ref_digits(s))
			return false;
	}
	return true;
}

static bool ref_hex(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
	       (c >= 'A' && c <= 'F');
}

/* string: no raw control character, only the escapes of RFC 8259. */
static bool ref_string(struct ref_scan *s)
{
	static const char escapes[] = "\"\\/bfnrt";

	if (!ref_eat(s, '"'))
		return false;
	while (s->p < s->end) {
		uint8_t c = *s->p++;

		if (c == '"')
			return true;
		if (c < 0x20)
			return false;
		if (c != '\\')
			continue;
		if (s->p >= s->end)
			return false;
		c = *s->p++;
		if (c != 'u') {
			if (!memchr(escapes, c, sizeof(escapes) - 1))
				return false;
			continue;
		}
		for (int k = 0; k < 4; k++, s->p++)
			if (s->p >= s->end || !ref_hex(*s->p))
				return false;
	}
	return false;
}

static bool ref_value(struct ref_scan *s, unsigned depth);

/* The members of an object or the values of an array, after its opener. */
static bool ref_container(struct ref_scan *s, char close, unsigned depth)
{
	ref_ws(s);
	if (ref_eat(s, close))
		return true;
	do {
		ref_ws(s);
		if (close == '}') {
			if (!ref_string(s))
				return false;
			ref_ws(s);
			if (!ref_eat(s, ':'))
				return false;
		}
		if (!ref_value(s, depth))
			return false;
		ref_ws(s);
	} while (ref_eat(s, ','));
	return ref_eat(s, close);
}

/* One value whose containers would be at depth + 1. */
static bool ref_value(struct ref_scan *s, unsigned depth)
{
	ref_ws(s);
	if (s->p >= s->end)
		return false;
	switch (*s->p) {
	case '{':
	case '[':
		if (depth + 1 > BODY_MAX_DEPTH)
			return false;
		return ref_container(s, *s->p++ == '{' ? '}' : ']',
				     depth + 1);
	case '"':
		return ref_string(s);
	case 't':
		return ref_literal(s, "true");
	case 'f':
		return ref_literal(s, "false");
	case 'n':
		return ref_literal(s, "null");
	default:
		return ref_number(s);
	}
}

/* Is text one JSON object within BODY_MAX_DEPTH, then only whitespace? */
static bool ref_json_object(const uint8_t *text, size_t len)
{
	struct ref_scan s = { text, text + len };

	ref_ws(&s);
	if (s.p >= s.end || *s.p != '{' || !ref_value(&s, 0))
		return false;
	ref_ws(&s);
	return s.p == s.end;
}

static bool is_body_error(int rc)
{
	return rc == BARREL_E_TOOBIG || rc == BARREL_E_BADJSON ||
	       rc == BARREL_E_NOTOBJECT || rc == BARREL_E_BADREV ||
	       rc == BARREL_E_INVALID || rc == -ENOMEM;
}

/* Invariant 1: a negative code of body.h and one line of reason. */
static void check_error(int rc, const char *err)
{
	const char *nul = memchr(err, '\0', BODY_ERRLEN);

	CHECK(is_body_error(rc));
	CHECK(nul != NULL);
	CHECK(nul > err);
	CHECK(memchr(err, '\n', (size_t)(nul - err)) == NULL);
}

/* Invariant 5, the reserved members that were read. */
static void check_reserved(const struct body *b)
{
	if (b->id) {
		CHECK(b->id[b->idlen] == '\0');
		CHECK(ref_utf8_valid((const uint8_t *)b->id, b->idlen));
	}
	if (b->has_rev)
		CHECK(rev_valid(&b->rev));
	CHECK((b->revisions == NULL) == (b->nrevisions == 0));
	CHECK(!b->plain || (!b->revisions && !b->attachments));
	for (size_t i = 0; i < b->nrevisions; i++) {
		CHECK(rev_valid(&b->revisions[i]));
		CHECK(b->revisions[i].gen + i == b->revisions[0].gen);
	}
}

/* Invariant 3: the id of an edit of b on parent (NULL: a new document). */
static void check_rev(const struct body *b, const struct rev *parent,
		      struct rev *out)
{
	struct rev again, deleted;

	CHECK(body_rev(b, parent, false, NULL, 0, out) == 0);
	CHECK(rev_valid(out));
	CHECK(out->gen == (parent ? parent->gen + 1 : 1));
	CHECK(body_rev(b, parent, false, NULL, 0, &again) == 0);
	CHECK(rev_eq(out, &again));
	CHECK(body_rev(b, parent, true, NULL, 0, &deleted) == 0);
	CHECK(!rev_eq(out, &deleted));
}

/* Invariant 4: normalize, parse again, compare; normalize once more. */
static void check_normalize(struct body *b, const struct rev *rev)
{
	struct body again = { 0 };
	char err[BODY_ERRLEN];
	char *text = NULL, *text2 = NULL;
	size_t len = 0, len2 = 0;
	struct rev rev2;
	int rc = body_normalize(b, &text, &len);

	CHECK(rc == 0 || rc == -ENOMEM);
	if (rc)
		return;
	CHECK(text != NULL && len > 0 && text[len - 1] == '\n');
	rc = body_parse(text, len, &again, err);
	if (rc)
		fprintf(stderr, "fuzz_body: normalized text does not parse "
			"(%s): %.*s\n", err, (int)len, text);
	CHECK(rc == 0);
	CHECK(again.id == NULL && !again.has_rev && !again.deleted &&
	      again.revisions == NULL && again.attachments == NULL);
	CHECK(body_rev(&again, NULL, false, NULL, 0, &rev2) == 0);
	CHECK(rev_eq(rev, &rev2));
	CHECK(body_normalize(&again, &text2, &len2) == 0);
	CHECK(len2 == len && memcmp(text, text2, len) == 0);
	free(text2);
	body_release(&again);
	free(text);
}

/* Invariant 7: the json-c parse of the input against the scan's (rc, b,
 * and rev: b's id as a new document). */
static void check_json_agrees(const uint8_t *data, size_t size, int rc,
			      const struct body *b, const struct rev *rev)
{
	struct body j = { 0 };
	struct rev jrev;
	int jrc = body_parse_json((const char *)data, size, &j, NULL);

	if (jrc != rc)
		fprintf(stderr, "fuzz_body: body_parse %d, body_parse_json %d\n",
			rc, jrc);
	CHECK(jrc == rc);
	if (rc) {
		body_release(&j);
		return;
	}
	CHECK((j.id == NULL) == (b->id == NULL));
	CHECK(!j.id || (j.idlen == b->idlen && !memcmp(j.id, b->id, j.idlen)));
	CHECK(j.has_rev == b->has_rev && (!j.has_rev || rev_eq(&j.rev, &b->rev)));
	CHECK(j.deleted == b->deleted && j.plain == b->plain);
	CHECK((j.attachments == NULL) == (b->attachments == NULL));
	CHECK(j.nrevisions == b->nrevisions);
	for (size_t i = 0; i < j.nrevisions; i++)
		CHECK(rev_eq(&j.revisions[i], &b->revisions[i]));
	CHECK(body_rev(&j, NULL, false, NULL, 0, &jrev) == 0);
	CHECK(rev_eq(&jrev, rev));
	body_release(&j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool has_nul = size > 0 && memchr(data, '\0', size) != NULL;
	struct body b = { 0 };
	char err[BODY_ERRLEN];
	struct rev rev, child;
	int rc;

	CHECK(body_utf8_valid((const char *)data, size) ==
	      (ref_utf8_valid(data, size) && !has_nul));
	memset(err, 'x', sizeof(err));
	rc = body_parse((const char *)data, size, &b, err);
	if (rc) {
		check_error(rc, err);
		check_json_agrees(data, size, rc, &b, NULL);
		body_release(&b);
		return 0;
	}
	CHECK(size <= BODY_MAX_LEN);
	CHECK(ref_utf8_valid(data, size) && !has_nul);
	CHECK(ref_json_object(data, size));
	check_reserved(&b);
	check_rev(&b, NULL, &rev);
	check_json_agrees(data, size, rc, &b, &rev);
	if (b.has_rev && b.rev.gen < REV_GEN_MAX)
		check_rev(&b, &b.rev, &child);
	check_normalize(&b, &rev);
	body_release(&b);
	return 0;
}
