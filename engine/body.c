#include "config.h"

/*
 * Document bodies (body.h). body_parse() scans the text once into flat
 * tokens (bodyscan.c) and reads the reserved members from them; body_rev()
 * streams the canonical form into XXH3-128 from them, never writing it
 * out. json-c builds a tree only on demand (body_object()) and in
 * body_parse_json(), whose reserved members and canonical form come from
 * the tree: the reference the token path is tested against. Both paths
 * share the checks of the reserved members and the canonical encoding.
 */

#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY   /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "engine/body.h"
#include "engine/body_i.h"
#include "engine/error.h"

#define BODY_MAX_REVISIONS 100000u   /* entries of "_revisions".ids */
#define REV_DOMAIN "barrel-rev-v1"   /* FORMAT.md "Revision ids", step 1 */
#define MEMBER_STACK 32u             /* object members sorted without malloc */
#define SORT_INSERTION 16u           /* members insertion-sorted, not qsort */
#define CANON_BUF 1024u              /* canonical bytes hashed at a time */

static int body_fail(char *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int body_fail(char *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		va_start(ap, fmt);
		vsnprintf(err, BODY_ERRLEN, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len, i;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, cp = c & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* Where a run of ASCII bytes without NUL from i ends: sixteen (SSE2)
 * bytes at a time, then eight; the last few are left to the caller. */
static size_t ascii_run(const unsigned char *p, size_t i, size_t len)
{
	uint64_t w;

#ifdef __SSE2__
	const __m128i zero = _mm_setzero_si128();

	while (len - i >= 16) {
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)(p + i));

		if (_mm_movemask_epi8(_mm_or_si128(x, _mm_cmpeq_epi8(x, zero))))
			break;
		i += 16;
	}
#endif
	while (len - i >= 8) {
		memcpy(&w, p + i, 8);
		if ((w & 0x8080808080808080ull) ||
		    ((w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull))
			break;
		i += 8;
	}
	return i;
}

/* Offset of the first byte that is not valid UTF-8 (or is NUL), or len. */
static size_t utf8_bad_at(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		size_t k;

		i = ascii_run(p, i, len);
		if (i == len)
			break;
		k = p[i] ? utf8_seq(p + i, len - i) : 0;

		if (!k)
			return i;
		i += k;
	}
	return len;
}

bool body_utf8_valid(const char *s, size_t len)
{
	return utf8_bad_at(s, len) == len;
}

/* ---- checking the text (both parses) ---- */

static const char *kind_name(enum btok_kind k)
{
	switch (k) {
	case BTOK_ARRAY:
		return "an array";
	case BTOK_STRING:
		return "a string";
	case BTOK_TRUE:
	case BTOK_FALSE:
		return "a boolean";
	case BTOK_NULL:
		return "null";
	default:
		return "a number";
	}
}

/* Size, UTF-8, grammar and an object: the scan into *s (released by the
 * caller, also after an error). */
static int parse_check(const char *text, size_t len, struct bscan *s,
		       char *err)
{
	size_t bad;
	int rc;

	if (len > BODY_MAX_INPUT)
		return body_fail(err, BARREL_E_TOOBIG,
				 "document body of %zu bytes (limit %u)", len,
				 BODY_MAX_INPUT);
	bad = utf8_bad_at(text, len);
	if (bad < len)
		return body_fail(err, BARREL_E_BADJSON, "%s at byte %zu",
				 text[bad] ? "invalid UTF-8" : "NUL byte", bad);
	rc = bscan_text(s, text, len);
	if (rc == BARREL_E_BADJSON)
		return body_fail(err, rc, "invalid JSON: %s at byte %zu", s->why,
				 s->at);
	if (rc)
		return rc;
	if (s->toks[0].kind != BTOK_OBJECT)
		return body_fail(err, BARREL_E_NOTOBJECT,
				 "document body must be a JSON object, not %s",
				 kind_name((enum btok_kind)s->toks[0].kind));
	return 0;
}

/* The json-c tree of text the scan took. */
static int json_tree(const char *text, size_t len, struct json_object **out,
		     char *err)
{
	struct json_tokener *tok = json_tokener_new_ex(BODY_MAX_DEPTH + 1);

	if (!tok)
		return -ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	*out = json_tokener_parse_ex(tok, text, (int)len);
	if (!*out)   /* RFC 8259 JSON that json-c refuses */
		body_fail(err, BARREL_E_BADJSON, "invalid JSON: %s at byte %zu",
			  json_tokener_error_desc(json_tokener_get_error(tok)),
			  json_tokener_get_parse_end(tok));
	json_tokener_free(tok);
	return *out ? 0 : BARREL_E_BADJSON;
}

/* ---- reserved members (both parses) ---- */

enum reserved {
	RES_ID,
	RES_REV,
	RES_DELETED,
	RES_REVISIONS,
	RES_ATTACHMENTS,
	RES_OUTPUT,       /* _conflicts and the like: accepted, ignored */
	RES_UNKNOWN,      /* any other '_' name: an error */
	RES_KINDS,
};

static enum reserved reserved_kind(const char *key, size_t len)
{
	static const struct {
		const char *name;
		enum reserved kind;
	} names[] = {
		{ "_id", RES_ID }, { "_rev", RES_REV },
		{ "_deleted", RES_DELETED }, { "_revisions", RES_REVISIONS },
		{ "_attachments", RES_ATTACHMENTS },
		{ "_conflicts", RES_OUTPUT }, { "_deleted_conflicts", RES_OUTPUT },
		{ "_revs_info", RES_OUTPUT }, { "_local_seq", RES_OUTPUT },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i].name) == len && !memcmp(names[i].name, key, len))
			return names[i].kind;
	return RES_UNKNOWN;
}

/* A reserved member's value, as either parse holds it. */
struct rval {
	enum { RV_OTHER, RV_STRING, RV_BOOL, RV_INT, RV_OBJECT, RV_ARRAY } type;
	const char *s;                /* RV_STRING: bytes (NUL-terminated) */
	size_t len;
	bool b;                       /* RV_BOOL */
	int64_t i;                    /* RV_INT: json-c's int64 of it */
};

/* Up to 64 bytes of s for a one-line message: control bytes become '?'. */
static const char *printable(const char *s, size_t len, char buf[68])
{
	size_t i;

	for (i = 0; i < len && i < 64; i++)
		buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	memcpy(buf + i, i < len ? "..." : "", i < len ? 4 : 1);
	return buf;
}

/* "_revisions" first: its shape, then room for n ids from generation gen. */
static int revisions_start(struct body *b, bool shape, int64_t gen, size_t n,
			   char *err)
{
	if (!shape)
		return body_fail(err, BARREL_E_INVALID,
				 "_revisions must be {\"start\": N, \"ids\": [...]}");
	if (n == 0 || n > BODY_MAX_REVISIONS || gen < (int64_t)n ||
	    (uint64_t)gen > REV_GEN_MAX)
		return body_fail(err, BARREL_E_INVALID,
				 "_revisions: start %lld with %zu ids",
				 (long long)gen, n);
	b->revisions = calloc(n, sizeof(*b->revisions));
	return b->revisions ? 0 : -ENOMEM;
}

/* "_revisions".ids[i], the revision of generation gen - i. A hash is read
 * up to a NUL, as a C string. */
static int revisions_entry(struct body *b, size_t i, int64_t gen,
			   const struct rval *h, char *err)
{
	char buf[REV_STR_SIZE], name[68];
	int k;

	if (h->type != RV_STRING || h->len > REV_HASH_MAX)
		return body_fail(err, BARREL_E_BADREV,
				 "_revisions: ids[%zu] is not a revision hash", i);
	k = snprintf(buf, sizeof(buf), "%lld-%.*s", (long long)gen - (long long)i,
		     (int)strnlen(h->s, h->len), h->s);
	if (rev_parse(buf, (size_t)k, &b->revisions[i]))
		return body_fail(err, BARREL_E_BADREV, "_revisions: bad revision %s",
				 printable(buf, (size_t)k, name));
	return 0;
}

/* One checked reserved member but _revisions (their own calls above). */
static int reserved_check(struct body *b, enum reserved kind,
			  const struct rval *v, char *err)
{
	switch (kind) {
	case RES_ID:
		if (v->type != RV_STRING)
			return body_fail(err, BARREL_E_INVALID, "_id must be a string");
		b->id = v->s;
		b->idlen = v->len;
		return 0;
	case RES_REV:
		if (v->type != RV_STRING || rev_parse(v->s, v->len, &b->rev))
			return body_fail(err, BARREL_E_BADREV,
					 "_rev is not a revision (N-HASH)");
		b->has_rev = true;
		return 0;
	case RES_DELETED:
		if (v->type != RV_BOOL)
			return body_fail(err, BARREL_E_INVALID,
					 "_deleted must be true or false");
		b->deleted = v->b;
		return 0;
	case RES_ATTACHMENTS:
		if (v->type != RV_OBJECT)
			return body_fail(err, BARREL_E_INVALID,
					 "_attachments must be an object");
		return 0;
	default:
		return 0;
	}
}

static int reserved_unknown(const char *key, size_t len, char *err)
{
	char name[68];

	return body_fail(err, BARREL_E_INVALID, "bad special document member: %s",
			 printable(key, len, name));
}

/* ---- reserved members from the json-c tree ---- */

static struct rval json_rval(struct json_object *v)
{
	struct rval r = { .type = RV_OTHER };

	switch (json_object_get_type(v)) {
	case json_type_string:
		r.type = RV_STRING;
		r.s = json_object_get_string(v);
		r.len = (size_t)json_object_get_string_len(v);
		break;
	case json_type_boolean:
		r.type = RV_BOOL;
		r.b = json_object_get_boolean(v);
		break;
	case json_type_int:
		r.type = RV_INT;
		r.i = json_object_get_int64(v);
		break;
	case json_type_object:
		r.type = RV_OBJECT;
		break;
	case json_type_array:
		r.type = RV_ARRAY;
		break;
	default:
		break;
	}
	return r;
}

/* "_revisions": {"start": N, "ids": ["hash", ...]} as a path. */
static int json_revisions(struct json_object *v, struct body *b, char *err)
{
	struct json_object *start = NULL, *ids = NULL;
	bool shape = json_object_is_type(v, json_type_object) &&
		     json_object_object_get_ex(v, "start", &start) &&
		     json_object_object_get_ex(v, "ids", &ids) &&
		     json_object_is_type(start, json_type_int) &&
		     json_object_is_type(ids, json_type_array);
	int64_t gen = shape ? json_object_get_int64(start) : 0;
	size_t n = shape ? json_object_array_length(ids) : 0;
	int rc = revisions_start(b, shape, gen, n, err);

	for (size_t i = 0; i < n && !rc; i++) {
		struct rval h = json_rval(json_object_array_get_idx(ids, i));

		rc = revisions_entry(b, i, gen, &h, err);
	}
	if (!rc)
		b->nrevisions = n;
	return rc;
}

/* One top-level reserved member, in json-c's order (first appearance). */
static int json_reserved(const char *key, struct json_object *v,
			 struct body *b, char *err)
{
	enum reserved kind = reserved_kind(key, strlen(key));
	struct rval r = json_rval(v);
	int rc;

	if (kind > RES_DELETED)
		b->plain = false;
	if (kind == RES_UNKNOWN)
		return reserved_unknown(key, strlen(key), err);
	if (kind == RES_REVISIONS)
		return json_revisions(v, b, err);
	rc = reserved_check(b, kind, &r, err);
	if (!rc && kind == RES_ATTACHMENTS)
		b->attachments = v;
	return rc;
}

/* ---- reserved members from the tokens ---- */

static const char *tok_bytes(const struct body *b, uint32_t i)
{
	return btok_bytes(b->text, b->dec, &b->toks[i]);
}

static bool tok_key_is(const struct body *b, uint32_t i, const char *name)
{
	return b->toks[i].str.len == strlen(name) &&
	       !memcmp(tok_bytes(b, i), name, strlen(name));
}

/* The value token i as the checks see it. */
static struct rval tok_rval(const struct body *b, uint32_t i)
{
	const struct btok *t = &b->toks[i];
	struct rval r = { .type = RV_OTHER };

	switch ((enum btok_kind)t->kind) {
	case BTOK_STRING:
		r.type = RV_STRING;
		r.s = tok_bytes(b, i);
		r.len = t->str.len;
		break;
	case BTOK_TRUE:
	case BTOK_FALSE:
		r.type = RV_BOOL;
		r.b = t->kind == BTOK_TRUE;
		break;
	case BTOK_INT:
	case BTOK_UINT:
		r.type = RV_INT;
		r.i = t->kind == BTOK_UINT ? INT64_MAX : t->i;   /* json-c clamps */
		break;
	case BTOK_OBJECT:
		r.type = RV_OBJECT;
		break;
	case BTOK_ARRAY:
		r.type = RV_ARRAY;
		break;
	default:
		break;
	}
	return r;
}

static void *pool_alloc(struct body_pool *pool, size_t n);

/* "_id" needs a NUL after it: a string the scan did not decode (so not
 * NUL-terminated) is copied into b->idbuf. */
static int tok_terminate(struct body *b, uint32_t i, struct rval *r)
{
	if (r->type != RV_STRING || b->toks[i].esc)
		return 0;
	b->idbuf = b->pool ? pool_alloc(b->pool, r->len + 1) : malloc(r->len + 1);
	if (!b->idbuf)
		return -ENOMEM;
	memcpy(b->idbuf, r->s, r->len);
	b->idbuf[r->len] = '\0';
	r->s = b->idbuf;
	return 0;
}

/* "_revisions" at token v (the last "start" and "ids" count). */
static int tok_revisions(struct body *b, uint32_t v, char *err)
{
	const struct btok *t = b->toks;
	uint32_t start = 0, ids = 0, k;   /* 0: absent */
	bool shape;
	int64_t gen;
	size_t n;
	int rc;

	for (k = v + 1; t[v].kind == BTOK_OBJECT && k < t[v].box.end;
	     k = btok_after(t, k + 1)) {
		if (tok_key_is(b, k, "start"))
			start = k + 1;
		else if (tok_key_is(b, k, "ids"))
			ids = k + 1;
	}
	shape = start && ids && (t[start].kind == BTOK_INT ||
				 t[start].kind == BTOK_UINT) &&
		t[ids].kind == BTOK_ARRAY;
	gen = !shape ? 0 : t[start].kind == BTOK_UINT ? INT64_MAX : t[start].i;
	n = shape ? t[ids].box.count : 0;
	rc = revisions_start(b, shape, gen, n, err);
	k = ids + 1;
	for (size_t i = 0; i < n && !rc; i++, k = btok_after(t, k)) {
		struct rval h = tok_rval(b, k);

		rc = revisions_entry(b, i, gen, &h, err);
	}
	if (!rc)
		b->nrevisions = n;
	return rc;
}

/* Where a reserved name first appears among the members, and its last
 * value: json-c keeps a repeated name once, in its first place. */
struct rslot {
	bool seen;
	uint32_t first;               /* member number */
	uint32_t key, val;            /* tokens */
};

static int tok_reserved_one(struct body *b, enum reserved kind,
			    const struct rslot *s, char *err)
{
	struct rval r = tok_rval(b, s->val);
	int rc;

	if (kind == RES_UNKNOWN)
		return reserved_unknown(tok_bytes(b, s->key), b->toks[s->key].str.len,
					err);
	if (kind == RES_REVISIONS)
		return tok_revisions(b, s->val, err);
	if (kind == RES_ID && (rc = tok_terminate(b, s->val, &r)))
		return rc;
	return reserved_check(b, kind, &r, err);
}

/* Every top-level reserved member, checked in json-c's order; with
 * "_attachments", the json-c tree the caller reads them from. */
static int tok_reserved(struct body *b, char *err)
{
	const struct btok *t = b->toks;
	struct rslot slot[RES_KINDS] = { 0 };
	bool atts = false;
	uint32_t m = 0;
	int rc = 0;

	for (uint32_t k = 1; k < t[0].box.end; k = btok_after(t, k + 1), m++) {
		enum reserved kind;

		if (!t[k].str.len || tok_bytes(b, k)[0] != '_')
			continue;
		kind = reserved_kind(tok_bytes(b, k), t[k].str.len);
		if (!slot[kind].seen)
			slot[kind] = (struct rslot){ true, m, k, 0 };
		slot[kind].val = k + 1;
		atts |= kind == RES_ATTACHMENTS;
	}
	for (;;) {
		int next = -1;

		for (int i = 0; i < RES_KINDS; i++)
			if (slot[i].seen && (next < 0 || slot[i].first < slot[next].first))
				next = i;
		if (next < 0 || rc)
			break;
		slot[next].seen = false;
		if (next > RES_DELETED)
			b->plain = false;
		rc = tok_reserved_one(b, (enum reserved)next, &slot[next], err);
	}
	return rc || !atts ? rc : body_object(b, err);
}

/* ---- the memory of a bulk ---- */

#define POOL_CHUNK (64u << 10)

/* One block of a pool, carved from the front. */
struct pool_chunk {
	struct pool_chunk *next;
	size_t used, cap;
	uint64_t mem[];               /* 8-aligned, cap bytes */
};

struct body_pool {
	struct bscan scan;            /* every body_parse_in()'s */
	struct pool_chunk *chunks;    /* in use, newest first */
	struct pool_chunk *spare;     /* emptied by body_pool_reset() */
};

int body_pool_new(struct body_pool **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

static void pool_chunks_free(struct pool_chunk *c)
{
	while (c) {
		struct pool_chunk *next = c->next;

		free(c);
		c = next;
	}
}

void body_pool_free(struct body_pool *pool)
{
	if (!pool)
		return;
	pool_chunks_free(pool->chunks);
	pool_chunks_free(pool->spare);
	bscan_release(&pool->scan);
	free(pool);
}

void body_pool_reset(struct body_pool *pool)
{
	while (pool->chunks) {
		struct pool_chunk *c = pool->chunks;

		pool->chunks = c->next;
		c->used = 0;
		c->next = pool->spare;
		pool->spare = c;
	}
}

/* n bytes of pool, 8-aligned; NULL when out of memory. */
static void *pool_alloc(struct body_pool *pool, size_t n)
{
	struct pool_chunk *c = pool->chunks;
	size_t need = (n + 7) & ~(size_t)7;

	if (!c || c->cap - c->used < need) {
		size_t cap = need > POOL_CHUNK ? need : POOL_CHUNK;

		if (pool->spare && pool->spare->cap >= need) {
			c = pool->spare;
			pool->spare = c->next;
		} else if ((c = malloc(sizeof(*c) + cap))) {
			c->used = 0;
			c->cap = cap;
		} else {
			return NULL;
		}
		c->next = pool->chunks;
		pool->chunks = c;
	}
	c->used += need;
	return (char *)c->mem + c->used - need;
}

void *body_pool_zalloc(struct body_pool *pool, size_t n)
{
	void *p = pool_alloc(pool, n);

	return p ? memset(p, 0, n) : NULL;
}

/* The tokens and decoded strings of the pool's scan, copied into it for
 * b: the scan's buffers serve the next body. */
static int pool_keep(struct body_pool *pool, const struct bscan *s,
		     struct body *b)
{
	b->toks = pool_alloc(pool, s->n * sizeof(*s->toks));
	b->dec = s->declen ? pool_alloc(pool, s->declen) : NULL;
	if (!b->toks || (s->declen && !b->dec))
		return -ENOMEM;
	memcpy(b->toks, s->toks, s->n * sizeof(*s->toks));
	if (s->declen)
		memcpy(b->dec, s->dec, s->declen);
	b->ntoks = s->n;
	return 0;
}

/* ---- the two parses ---- */

static void body_init(struct body *b, const char *text, size_t len)
{
	memset(b, 0, sizeof(*b));
	b->plain = true;
	b->text = text;
	b->len = len;
}

/* Past BODY_MAX_LEN only with inline attachments, whose data leaves the
 * body (the document layer checks what remains). */
static int size_check(const struct body *b, char *err)
{
	if (b->len <= BODY_MAX_LEN || b->attachments)
		return 0;
	return body_fail(err, BARREL_E_TOOBIG, "document body of %zu bytes "
			 "(limit %u)", b->len, BODY_MAX_LEN);
}

/*
 * body_parse:
 *  1. check the text and scan it into tokens (size, UTF-8, JSON, depth,
 *     nothing after the value, an object);
 *  2. read and check every reserved top-level member from the tokens
 *     (with "_attachments", build the json-c tree too).
 */
int body_parse_in(struct body_pool *pool, const char *text, size_t len,
		  struct body *out, char *err)
{
	struct bscan own = { 0 }, *s = pool ? &pool->scan : &own;
	int rc;

	body_init(out, text, len);
	out->pool = pool;
	rc = parse_check(text, len, s, err);
	if (!pool) {                  /* the body owns the scan from here */
		out->toks = own.toks;
		out->ntoks = own.n;
		out->dec = own.dec;
	} else if (!rc) {
		rc = pool_keep(pool, s, out);
	}
	if (!rc)
		rc = tok_reserved(out, err);
	return rc ? rc : size_check(out, err);
}

int body_parse(const char *text, size_t len, struct body *out, char *err)
{
	return body_parse_in(NULL, text, len, out, err);
}

/* The same by json-c: 1. check the text; 2. parse it into a tree;
 * 3. read the reserved members from the tree. */
int body_parse_json(const char *text, size_t len, struct body *out,
		    char *err)
{
	struct bscan s = { 0 };
	int rc;

	body_init(out, text, len);
	rc = parse_check(text, len, &s, err);
	bscan_release(&s);
	if (!rc)
		rc = json_tree(text, len, &out->obj, err);
	if (rc)
		return rc;
	json_object_object_foreach(out->obj, key, val) {
		if (key[0] == '_' && (rc = json_reserved(key, val, out, err)))
			return rc;
	}
	return size_check(out, err);
}

int body_object(struct body *b, char *err)
{
	struct json_object *v;
	int rc;

	if (b->obj)
		return 0;
	if ((rc = json_tree(b->text, b->len, &b->obj, err)))
		return rc;
	if (json_object_object_get_ex(b->obj, "_attachments", &v) &&
	    json_object_is_type(v, json_type_object))
		b->attachments = v;
	return 0;
}

void body_release(struct body *b)
{
	json_object_put(b->obj);
	free(b->revisions);
	if (!b->pool) {
		free(b->toks);
		free(b->dec);
		free(b->idbuf);
	}
	memset(b, 0, sizeof(*b));
}

/* ---- the canonical form, streamed into a hash ---- */

/* An object member being sorted: its name, and where its value is. */
struct member {
	const char *key;
	size_t len;
	uint32_t at;                  /* tokens: the name's index */
	struct json_object *val;      /* json-c: the value (NULL is null) */
};

/* The hash input, staged in buf; members of the objects being walked on
 * a stack (an object's sit above its parent's). */
struct canon {
	XXH3_state_t *h;
	const struct body *b;
	struct member *m;             /* stack, or malloc'ed when it grew */
	size_t top, cap;
	size_t n;                     /* bytes staged in buf */
	uint8_t buf[CANON_BUF];
	struct member stack[MEMBER_STACK];
};

static void canon_init(struct canon *c, XXH3_state_t *h, const struct body *b)
{
	XXH3_INITSTATE(h);
	XXH3_128bits_reset(h);
	c->h = h;
	c->b = b;
	c->m = c->stack;
	c->top = c->n = 0;
	c->cap = MEMBER_STACK;
}

static void canon_flush(struct canon *c)
{
	XXH3_128bits_update(c->h, c->buf, c->n);
	c->n = 0;
}

/* The last staged bytes into the hash; c is done. */
static void canon_finish(struct canon *c)
{
	canon_flush(c);
	if (c->m != c->stack)
		free(c->m);
}

static void canon_put(struct canon *c, const void *p, size_t len)
{
	if (len > sizeof(c->buf) - c->n) {
		canon_flush(c);
		if (len > sizeof(c->buf) / 2) {
			XXH3_128bits_update(c->h, p, len);
			return;
		}
	}
	memcpy(c->buf + c->n, p, len);
	c->n += len;
}

static void canon_u32(struct canon *c, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
			 (uint8_t)(v >> 24) };

	canon_put(c, b, sizeof(b));
}

static void canon_u64(struct canon *c, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	canon_put(c, b, sizeof(b));
}

static void canon_tag(struct canon *c, char tag)
{
	canon_put(c, &tag, 1);
}

static void canon_bytes(struct canon *c, const void *p, size_t len)
{
	canon_u32(c, (uint32_t)len);
	canon_put(c, p, len);
}

static void canon_double(struct canon *c, double d)
{
	uint64_t u;

	memcpy(&u, &d, sizeof(u));
	canon_tag(c, 'd');
	canon_u64(c, u);
}

static int members_push(struct canon *c, const struct member *m)
{
	if (c->top == c->cap) {
		size_t cap = 2 * c->cap;
		struct member *grown = malloc(cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		memcpy(grown, c->m, c->top * sizeof(*grown));
		if (c->m != c->stack)
			free(c->m);
		c->m = grown;
		c->cap = cap;
	}
	c->m[c->top++] = *m;
	return 0;
}

/* By name (bytes; a prefix first, as strcmp, names hold no NUL), then by
 * place: of a repeated name the last comes last. */
static int member_cmp(const void *pa, const void *pb)
{
	const struct member *a = pa, *b = pb;
	int d = memcmp(a->key, b->key, a->len < b->len ? a->len : b->len);

	if (d)
		return d;
	if (a->len != b->len)
		return a->len < b->len ? -1 : 1;
	return (a->at > b->at) - (a->at < b->at);
}

/* Sort n members; keep the last of each name. Returns how many remain. */
static size_t members_sort(struct member *m, size_t n)
{
	size_t out = 0;

	if (n > SORT_INSERTION) {
		qsort(m, n, sizeof(*m), member_cmp);
	} else {
		for (size_t i = 1; i < n; i++) {
			struct member x = m[i];
			size_t j = i;

			for (; j > 0 && member_cmp(&m[j - 1], &x) > 0; j--)
				m[j] = m[j - 1];
			m[j] = x;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (i + 1 == n || m[i].len != m[i + 1].len ||
		    memcmp(m[i].key, m[i + 1].key, m[i].len))
			m[out++] = m[i];
	return out;
}

static int canon_json(struct canon *c, struct json_object *v, bool top);
static int canon_tok(struct canon *c, uint32_t i, bool top);

/* The members pushed since base, sorted, each name then its value. */
static int canon_members(struct canon *c, size_t base)
{
	size_t n = members_sort(c->m + base, c->top - base);
	int rc = 0;

	c->top = base + n;
	canon_tag(c, 'o');
	canon_u32(c, (uint32_t)n);
	for (size_t k = 0; k < n && !rc; k++) {
		struct member m = c->m[base + k];   /* the stack may move */

		canon_bytes(c, m.key, m.len);
		rc = c->b->toks ? canon_tok(c, m.at + 1, false)
				: canon_json(c, m.val, false);
	}
	c->top = base;
	return rc;
}

/* ---- ... from the json-c tree ---- */

/* An object's members sorted by name; top drops the reserved ones. */
static int canon_json_object(struct canon *c, struct json_object *o, bool top)
{
	size_t base = c->top;
	int rc = 0;

	json_object_object_foreach(o, key, val) {
		if (!rc && !(top && key[0] == '_'))
			rc = members_push(c, &(struct member){ key, strlen(key), 0,
							       val });
	}
	return rc ? rc : canon_members(c, base);
}

static void canon_json_number(struct canon *c, struct json_object *v)
{
	int64_t i = json_object_get_int64(v);
	uint64_t u;

	if (json_object_is_type(v, json_type_double)) {
		canon_double(c, json_object_get_double(v));
	} else if (i == INT64_MAX && (u = json_object_get_uint64(v)) > INT64_MAX) {
		canon_tag(c, 'u');
		canon_u64(c, u);
	} else {
		canon_tag(c, 'i');
		canon_u64(c, (uint64_t)i);
	}
}

static int canon_json(struct canon *c, struct json_object *v, bool top)
{
	int rc = 0;

	switch (json_object_get_type(v)) {
	case json_type_object:
		return canon_json_object(c, v, top);
	case json_type_array:
		canon_tag(c, 'a');
		canon_u32(c, (uint32_t)json_object_array_length(v));
		for (size_t i = 0; i < json_object_array_length(v) && !rc; i++)
			rc = canon_json(c, json_object_array_get_idx(v, i), false);
		return rc;
	case json_type_string:
		canon_tag(c, 's');
		canon_bytes(c, json_object_get_string(v),
			    (size_t)json_object_get_string_len(v));
		return 0;
	case json_type_int:
	case json_type_double:
		canon_json_number(c, v);
		return 0;
	case json_type_boolean:
		canon_tag(c, json_object_get_boolean(v) ? 't' : 'f');
		return 0;
	case json_type_null:
		canon_tag(c, 'n');
		return 0;
	}
	return BARREL_E_INVALID;
}

/* ---- ... from the tokens ---- */

static int canon_tok_object(struct canon *c, uint32_t i, bool top)
{
	const struct btok *t = c->b->toks;
	size_t base = c->top;
	int rc = 0;

	for (uint32_t k = i + 1; k < t[i].box.end && !rc;
	     k = btok_after(t, k + 1)) {
		const char *key = btok_bytes(c->b->text, c->b->dec, &t[k]);

		if (!(top && t[k].str.len && key[0] == '_'))
			rc = members_push(c, &(struct member){ key, t[k].str.len,
							       k, NULL });
	}
	return rc ? rc : canon_members(c, base);
}

static int canon_tok(struct canon *c, uint32_t i, bool top)
{
	const struct btok *t = &c->b->toks[i];
	int rc = 0;

	switch ((enum btok_kind)t->kind) {
	case BTOK_OBJECT:
		return canon_tok_object(c, i, top);
	case BTOK_ARRAY:
		canon_tag(c, 'a');
		canon_u32(c, t->box.count);
		for (uint32_t k = i + 1; k < t->box.end && !rc;
		     k = btok_after(c->b->toks, k))
			rc = canon_tok(c, k, false);
		return rc;
	case BTOK_STRING:
		canon_tag(c, 's');
		canon_bytes(c, btok_bytes(c->b->text, c->b->dec, t), t->str.len);
		return 0;
	case BTOK_INT:
	case BTOK_UINT:
		canon_tag(c, t->kind == BTOK_INT ? 'i' : 'u');
		canon_u64(c, t->u);
		return 0;
	case BTOK_DOUBLE:
		canon_double(c, t->d);
		return 0;
	case BTOK_TRUE:
	case BTOK_FALSE:
	case BTOK_NULL:
		canon_tag(c, t->kind == BTOK_TRUE ? 't' :
			     t->kind == BTOK_FALSE ? 'f' : 'n');
		return 0;
	}
	return BARREL_E_INVALID;
}

/* FORMAT.md "Revision ids", steps 1-5. */
int body_rev(const struct body *b, const struct rev *parent, bool deleted,
	     const struct body_att_digest *atts, size_t n, struct rev *out)
{
	uint8_t domain[16] = { 0 };
	char pbuf[REV_STR_SIZE];
	XXH128_canonical_t digest;
	XXH3_state_t state;
	struct canon c;
	int rc;

	if (parent && parent->gen >= REV_GEN_MAX)
		return BARREL_E_INVALID;
	if (parent && (rc = rev_format(parent, pbuf, sizeof(pbuf))))
		return rc;
	canon_init(&c, &state, b);
	memcpy(domain, REV_DOMAIN, strlen(REV_DOMAIN));
	canon_put(&c, domain, sizeof(domain));
	canon_put(&c, parent ? pbuf : "", parent ? strlen(pbuf) + 1 : 1);
	canon_tag(&c, deleted ? 1 : 0);
	rc = b->toks ? canon_tok(&c, 0, true) : canon_json(&c, b->obj, true);
	for (size_t i = 0; i < n && !rc; i++) {
		canon_bytes(&c, atts[i].name, atts[i].namelen);
		canon_put(&c, atts[i].md5, 16);
		canon_u64(&c, atts[i].length);
	}
	canon_finish(&c);
	if (rc)
		return rc;
	XXH128_canonicalFromHash(&digest, XXH3_128bits_digest(&state));
	memset(out, 0, sizeof(*out));
	out->gen = parent ? parent->gen + 1 : 1;
	out->bin = true;
	out->len = 16;
	memcpy(out->hash, digest.digest, 16);
	return 0;
}

int body_normalize(struct body *b, char **text, size_t *len)
{
	struct json_object *o;
	const char *s;
	size_t n;
	int rc = body_object(b, NULL);

	if (rc)
		return rc;
	if (!(o = json_object_new_object()))
		return -ENOMEM;
	json_object_object_foreach(b->obj, key, val) {
		if (key[0] == '_')
			continue;
		if (json_object_object_add(o, key, json_object_get(val))) {
			rc = -ENOMEM;
			goto out_put;
		}
	}
	s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PRETTY |
					      JSON_C_TO_STRING_SPACED |
					      JSON_C_TO_STRING_NOSLASHESCAPE, &n);
	if (!s || !(*text = malloc(n + 2))) {
		rc = -ENOMEM;
		goto out_put;
	}
	memcpy(*text, s, n);
	(*text)[n] = '\n';
	(*text)[n + 1] = '\0';
	*len = n + 1;
out_put:
	json_object_put(o);
	return rc;
}
