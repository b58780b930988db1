#include "config.h"
#include "engine/collate.h"

#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/ucol.h>
#include <unicode/ustring.h>
#include <unicode/uversion.h>

#include "engine/error.h"

/* ---- the collators (see "Threads" in collate.h) ---- */

static pthread_mutex_t coll_lock = PTHREAD_MUTEX_INITIALIZER;
static UCollator *coll_root;          /* protected by coll_lock */
static pthread_once_t coll_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t coll_key;        /* this thread's clone */
static char coll_version[96];         /* protected by coll_lock */

static void coll_clone_free(void *p)
{
	ucol_close(p);
}

static void coll_key_create(void)
{
	if (pthread_key_create(&coll_key, coll_clone_free) != 0)
		abort();     /* out of keys at startup: nothing works */
}

static int coll_open_root_locked(void)
{
	UErrorCode st = U_ZERO_ERROR;

	if (coll_root)
		return 0;
	coll_root = ucol_open("", &st);
	if (U_FAILURE(st)) {
		coll_root = NULL;
		return st == U_MEMORY_ALLOCATION_ERROR ? -ENOMEM
						       : BARREL_E_INVALID;
	}
	return 0;
}

int collate_init(void)
{
	int rc;

	pthread_once(&coll_key_once, coll_key_create);
	pthread_mutex_lock(&coll_lock);
	rc = coll_open_root_locked();
	pthread_mutex_unlock(&coll_lock);
	return rc;
}

void collate_shutdown(void)
{
	pthread_once(&coll_key_once, coll_key_create);
	ucol_close(pthread_getspecific(coll_key));
	pthread_setspecific(coll_key, NULL);
	pthread_mutex_lock(&coll_lock);
	ucol_close(coll_root);
	coll_root = NULL;
	pthread_mutex_unlock(&coll_lock);
}

static UCollator *coll_clone(const UCollator *root, UErrorCode *st)
{
#if U_ICU_VERSION_MAJOR_NUM >= 71
	return ucol_clone(root, st);
#else
	return ucol_safeClone(root, NULL, NULL, st);
#endif
}

/* This thread's collator, NULL when ICU cannot give one. */
static UCollator *coll_get(void)
{
	UCollator *c;
	UErrorCode st = U_ZERO_ERROR;

	pthread_once(&coll_key_once, coll_key_create);
	c = pthread_getspecific(coll_key);
	if (c)
		return c;
	pthread_mutex_lock(&coll_lock);
	if (coll_open_root_locked() == 0)
		c = coll_clone(coll_root, &st);
	pthread_mutex_unlock(&coll_lock);
	if (!c || U_FAILURE(st)) {
		ucol_close(c);
		return NULL;
	}
	if (pthread_setspecific(coll_key, c) != 0) {
		ucol_close(c);
		return NULL;
	}
	return c;
}

const char *collate_version(void)
{
	UVersionInfo icu, uca, col;
	char a[U_MAX_VERSION_STRING_LENGTH], b[U_MAX_VERSION_STRING_LENGTH];
	char c[U_MAX_VERSION_STRING_LENGTH];

	pthread_mutex_lock(&coll_lock);
	if (!coll_version[0] && coll_open_root_locked() == 0) {
		u_getVersion(icu);
		ucol_getUCAVersion(coll_root, uca);
		ucol_getVersion(coll_root, col);
		u_versionToString(icu, a);
		u_versionToString(uca, b);
		u_versionToString(col, c);
		snprintf(coll_version, sizeof(coll_version),
			 "icu-%s/uca-%s/col-%s", a, b, c);
	}
	pthread_mutex_unlock(&coll_lock);
	return coll_version[0] ? coll_version : "icu-unavailable";
}

/* ---- UTF-16 text of a string value ---- */

/* A UTF-16 copy of UTF-8 text: in stack until it does not fit. */
struct u16 {
	UChar *s;
	int32_t len;
	UChar stack[128];
};

static void u16_release(struct u16 *u)
{
	if (u->s != u->stack)
		free(u->s);
}

/* Convert s[0..len) with U+FFFD for bad bytes. */
static int u16_from_utf8(struct u16 *u, const char *s, size_t len)
{
	UErrorCode st = U_ZERO_ERROR;
	int32_t need;

	u->s = u->stack;
	u->len = 0;
	if (len > INT32_MAX / 2)
		return BARREL_E_TOOBIG;
	u_strFromUTF8WithSub(u->s, 128, &need, s, (int32_t)len, 0xFFFD,
			     NULL, &st);
	if (st == U_BUFFER_OVERFLOW_ERROR) {
		u->s = malloc(((size_t)need + 1) * sizeof(UChar));
		if (!u->s) {
			u->s = u->stack;
			return -ENOMEM;
		}
		st = U_ZERO_ERROR;
		u_strFromUTF8WithSub(u->s, need + 1, &need, s, (int32_t)len,
				     0xFFFD, NULL, &st);
	}
	if (U_FAILURE(st)) {
		u16_release(u);
		u->s = u->stack;
		return BARREL_E_INVALID;
	}
	u->len = need;
	return 0;
}

/* ---- the comparator ---- */

static int type_tag(struct json_object *v)
{
	switch (json_object_get_type(v)) {
	case json_type_null: return COLLATE_NULL;
	case json_type_boolean:
		return json_object_get_boolean(v) ? COLLATE_TRUE
						  : COLLATE_FALSE;
	case json_type_double:
	case json_type_int: return COLLATE_NUMBER;
	case json_type_string: return COLLATE_STRING;
	case json_type_array: return COLLATE_ARRAY;
	case json_type_object: return COLLATE_OBJECT;
	}
	return COLLATE_NULL;
}

/* A number as the encoding orders it: -0 is 0, every NaN one NaN. */
static double num_value(struct json_object *v)
{
	double d = json_object_get_double(v);

	if (d == 0)
		return 0;
	return d;
}

static int num_cmp(double a, double b)
{
	if (isnan(a) || isnan(b))
		return isnan(a) - isnan(b);
	return (a > b) - (a < b);
}

static int bytes_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return (alen > blen) - (alen < blen);
}

static int str_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	UCollator *coll = coll_get();
	struct u16 ua, ub;
	int c;

	if (!coll || u16_from_utf8(&ua, a, alen) < 0)
		return bytes_cmp(a, alen, b, blen);
	if (u16_from_utf8(&ub, b, blen) < 0) {
		u16_release(&ua);
		return bytes_cmp(a, alen, b, blen);
	}
	c = ucol_strcoll(coll, ua.s, ua.len, ub.s, ub.len);
	u16_release(&ua);
	u16_release(&ub);
	return c;
}

static int value_str_cmp(struct json_object *a, struct json_object *b)
{
	return str_cmp(json_object_get_string(a),
		       (size_t)json_object_get_string_len(a),
		       json_object_get_string(b),
		       (size_t)json_object_get_string_len(b));
}

static int array_cmp(struct json_object *a, struct json_object *b)
{
	size_t na = json_object_array_length(a);
	size_t nb = json_object_array_length(b);

	for (size_t i = 0; i < na && i < nb; i++) {
		int c = collate_cmp(json_object_array_get_idx(a, i),
				    json_object_array_get_idx(b, i));
		if (c)
			return c;
	}
	return (na > nb) - (na < nb);
}

static int object_cmp(struct json_object *a, struct json_object *b)
{
	struct json_object_iterator ia = json_object_iter_begin(a);
	struct json_object_iterator ea = json_object_iter_end(a);
	struct json_object_iterator ib = json_object_iter_begin(b);
	struct json_object_iterator eb = json_object_iter_end(b);
	bool enda, endb;

	for (;;) {
		const char *ka, *kb;
		int c;

		enda = json_object_iter_equal(&ia, &ea);
		endb = json_object_iter_equal(&ib, &eb);
		if (enda || endb)
			return (int)endb - (int)enda;
		ka = json_object_iter_peek_name(&ia);
		kb = json_object_iter_peek_name(&ib);
		c = str_cmp(ka, strlen(ka), kb, strlen(kb));
		if (!c)
			c = collate_cmp(json_object_iter_peek_value(&ia),
					json_object_iter_peek_value(&ib));
		if (c)
			return c;
		json_object_iter_next(&ia);
		json_object_iter_next(&ib);
	}
}

int collate_cmp(struct json_object *a, struct json_object *b)
{
	int ta = type_tag(a), tb = type_tag(b);

	if (ta != tb)
		return ta < tb ? -1 : 1;
	switch (ta) {
	case COLLATE_NUMBER: return num_cmp(num_value(a), num_value(b));
	case COLLATE_STRING: return value_str_cmp(a, b);
	case COLLATE_ARRAY: return array_cmp(a, b);
	case COLLATE_OBJECT: return object_cmp(a, b);
	default: return 0;
	}
}

int collate_bytes_cmp(const uint8_t *a, size_t alen, const uint8_t *b,
		      size_t blen)
{
	return bytes_cmp((const char *)a, alen, (const char *)b, blen);
}

/* ---- the encoding ---- */

void collate_buf_init(struct collate_buf *b)
{
	memset(b, 0, sizeof(*b));
}

void collate_buf_release(struct collate_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* Room for n more bytes. */
static int buf_reserve(struct collate_buf *b, size_t n)
{
	size_t cap = b->cap ? b->cap : 64;
	uint8_t *p;

	if (n <= b->cap - b->len)
		return 0;
	while (cap - b->len < n) {
		if (cap > SIZE_MAX / 2)
			return -ENOMEM;
		cap *= 2;
	}
	p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

static int buf_put(struct collate_buf *b, const void *p, size_t n)
{
	int rc = buf_reserve(b, n);

	if (rc < 0)
		return rc;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

static int buf_byte(struct collate_buf *b, uint8_t c)
{
	return buf_put(b, &c, 1);
}

static int enc_number(struct collate_buf *b, double d)
{
	uint8_t out[9];
	uint64_t bits;

	if (isnan(d))
		bits = 0x7ff8000000000000ull;
	else
		memcpy(&bits, &d, sizeof(bits));
	bits = (bits >> 63) ? ~bits : bits | (1ull << 63);
	out[0] = COLLATE_NUMBER;
	for (int i = 0; i < 8; i++)
		out[1 + i] = (uint8_t)(bits >> (56 - 8 * i));
	return buf_put(b, out, sizeof(out));
}

/* Tag and ICU sort key (ends in its one 0x00) of s[0..len). */
static int enc_string(struct collate_buf *b, const char *s, size_t len)
{
	UCollator *coll = coll_get();
	struct u16 u;
	int32_t need, room;
	int rc;

	if (!coll)
		return BARREL_E_INVALID;
	rc = u16_from_utf8(&u, s, len);
	if (rc < 0)
		return rc;
	rc = buf_byte(b, COLLATE_STRING);
	for (room = 64; rc == 0; room = need) {
		rc = buf_reserve(b, (size_t)room);
		if (rc < 0)
			break;
		need = ucol_getSortKey(coll, u.s, u.len, b->data + b->len,
				       room);
		if (need <= 0) {
			rc = BARREL_E_INVALID;
		} else if (need <= room) {
			b->len += (size_t)need;
			break;
		}
	}
	u16_release(&u);
	return rc;
}

static int enc_value(struct collate_buf *b, struct json_object *v,
		     unsigned depth);

static int enc_array(struct collate_buf *b, struct json_object *v,
		     unsigned depth)
{
	size_t n = json_object_array_length(v);
	int rc = buf_byte(b, COLLATE_ARRAY);

	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = enc_value(b, json_object_array_get_idx(v, i), depth + 1);
	return rc ? rc : buf_byte(b, COLLATE_END);
}

static int enc_object(struct collate_buf *b, struct json_object *v,
		      unsigned depth)
{
	int rc = buf_byte(b, COLLATE_OBJECT);

	json_object_object_foreach(v, name, member) {
		if (rc == 0)
			rc = enc_string(b, name, strlen(name));
		if (rc == 0)
			rc = enc_value(b, member, depth + 1);
	}
	return rc ? rc : buf_byte(b, COLLATE_END);
}

static int enc_value(struct collate_buf *b, struct json_object *v,
		     unsigned depth)
{
	int tag = type_tag(v);

	if (depth >= COLLATE_MAX_DEPTH)
		return BARREL_E_INVALID;
	switch (tag) {
	case COLLATE_NUMBER: return enc_number(b, num_value(v));
	case COLLATE_STRING:
		return enc_string(b, json_object_get_string(v),
				  (size_t)json_object_get_string_len(v));
	case COLLATE_ARRAY: return enc_array(b, v, depth);
	case COLLATE_OBJECT: return enc_object(b, v, depth);
	default: return buf_byte(b, (uint8_t)tag);
	}
}

int collate_key_append(struct collate_buf *b, struct json_object *v)
{
	size_t old = b->len;
	int rc = enc_value(b, v, 0);

	if (rc < 0)
		b->len = old;
	return rc;
}

int collate_index_key(struct collate_buf *b, struct json_object *key,
		      const char *docid, size_t idlen)
{
	int rc;

	b->len = 0;
	rc = collate_key_append(b, key);
	if (rc == 0)
		rc = buf_put(b, docid, idlen);
	if (rc < 0)
		b->len = 0;
	return rc;
}

/* ---- reading an encoding back (lengths only) ---- */

static int skip_value(const uint8_t *p, size_t len, size_t *off,
		      unsigned depth);

/* Elements (objects: name, value pairs) up to and over COLLATE_END. */
static int skip_seq(const uint8_t *p, size_t len, size_t *off,
		    unsigned depth, bool pairs)
{
	for (;;) {
		int rc;

		if (*off >= len)
			return BARREL_E_CORRUPT;
		if (p[*off] == COLLATE_END) {
			(*off)++;
			return 0;
		}
		if (pairs && p[*off] != COLLATE_STRING)
			return BARREL_E_CORRUPT;
		rc = skip_value(p, len, off, depth + 1);
		if (rc == 0 && pairs)
			rc = skip_value(p, len, off, depth + 1);
		if (rc < 0)
			return rc;
	}
}

static int skip_value(const uint8_t *p, size_t len, size_t *off,
		      unsigned depth)
{
	const uint8_t *z;

	if (*off >= len || depth >= COLLATE_MAX_DEPTH)
		return BARREL_E_CORRUPT;
	switch (p[(*off)++]) {
	case COLLATE_NULL:
	case COLLATE_FALSE:
	case COLLATE_TRUE:
		return 0;
	case COLLATE_NUMBER:
		if (len - *off < 8)
			return BARREL_E_CORRUPT;
		*off += 8;
		return 0;
	case COLLATE_STRING:
		z = memchr(p + *off, 0, len - *off);
		if (!z)
			return BARREL_E_CORRUPT;
		*off = (size_t)(z - p) + 1;
		return 0;
	case COLLATE_ARRAY: return skip_seq(p, len, off, depth, false);
	case COLLATE_OBJECT: return skip_seq(p, len, off, depth, true);
	default: return BARREL_E_CORRUPT;
	}
}

int collate_key_len(const uint8_t *p, size_t len, size_t *vlen)
{
	size_t off = 0;
	int rc = skip_value(p, len, &off, 0);

	if (rc == 0)
		*vlen = off;
	return rc;
}

int collate_index_split(const uint8_t *p, size_t len, size_t *keylen,
			const uint8_t **docid, size_t *idlen)
{
	size_t k = 0;
	int rc = collate_key_len(p, len, &k);

	if (rc < 0)
		return rc;
	*keylen = k;
	*docid = p + k;
	*idlen = len - k;
	return 0;
}
