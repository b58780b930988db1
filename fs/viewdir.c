/*
 * DB/.views/: each design document's views as read-only directories of
 * JSON files (DESIGN.md "The mount", "What the virtual files hold"):
 *
 *   .views/D/                  a design document _design/D with views
 *   .views/D/V/                one of its views
 *   .views/D/V/KEY.json        the map rows of one key
 *   .views/D/V/.all.json       every map row
 *   .views/D/V/.reduce.json    the reduction (views with a reduce)
 *   .views/D/V/.group.json     the reduction by key (group=true)
 *   .views/D/V/.status.json    view_status()
 *
 * The map rows of a view are read once per state of its index (its
 * signature and sequence) into a key set: the rows' text and, per
 * distinct key, its file name, its rows and their offset. Listings,
 * sizes and the content of KEY.json and .all.json come from it; a few
 * recent ones are kept (fs->views), so `ls -la` of a view is one scan.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/bbuf.h"
#include "engine/collate.h"
#include "engine/docname.h"
#include "engine/log.h"
#include "engine/view.h"
#include "fs/fs.h"

#define VIEW_WAIT_MS 10000u       /* a read waits this long for the index */
#define VIEW_LATE_S 10            /* ...then reads of that view do not wait
				     for this long */
#define VIEW_SLOTS 8              /* views whose key set is kept */
#define JSON_SUFFIX ".json"
#define JSON_SUFFIX_LEN 5
#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* One distinct key of a view. */
struct vkey {
	char *name;               /* "KEY.json"; NULL: longer than NAME_MAX */
	char *key;                /* the JSON text of its first row's key */
	size_t start, end;        /* its rows in keyset.rows */
	uint64_t first;           /* rows of the view before it (offset) */
};

/* The map rows of a view at one state of its index. */
struct keyset {
	char sig[VIEW_SIG_HEX];   /* the state it was read at */
	uint64_t seq;
	uint64_t total_rows;
	struct bbuf rows;         /* each row as one line and ",\n" */
	struct vkey *keys;        /* in collation order */
	size_t n, cap;
	unsigned refs;            /* protected by fs->lock */
	uint64_t nrows;           /* building: rows read */
	json_object *last;        /* building: keys[n - 1]'s key, parsed */
};

/* A view the cache knows. */
struct vslot {
	struct fsdb *db;          /* NULL: a free slot */
	char *ddoc, *view;
	struct keyset *ks;        /* NULL: none kept */
	time_t late;              /* reads do not wait before this (monotonic) */
	uint64_t used;
};

struct viewcache {
	struct vslot slot[VIEW_SLOTS];
	uint64_t clock;
};

/* ---- JSON texts and file names ---- */

/* Parse all of s (len bytes, NUL at s[len]) strictly; false when it is
 * not one JSON value. *out (may be NULL) gets it, NULL for null. */
static bool json_whole(const char *s, size_t len, json_object **out)
{
	json_tokener *tok;
	json_object *o;
	bool ok;

	if (out)
		*out = NULL;
	if (!len || memchr(s, 0, len) || !(tok = json_tokener_new()))
		return false;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, s, (int)len + 1);
	ok = json_tokener_get_error(tok) == json_tokener_success &&
	     json_tokener_get_parse_end(tok) == len;
	json_tokener_free(tok);
	if (ok && out)
		*out = o;
	else
		json_object_put(o);
	return ok;
}

/* A name of the codec with ".json" after it (name_encode leaves room). */
static char *json_name(const char *s, size_t len)
{
	char *out = name_encode(s, len, true);

	if (out)
		memcpy(out + strlen(out), JSON_SUFFIX, JSON_SUFFIX_LEN + 1);
	return out;
}

/*
 * The file name of a key (text, parsed as k): a string shows as itself
 * unless it is empty or would parse as JSON, then as its JSON literal;
 * any other key as its JSON text. *out NULL when the name is too long.
 */
static int key_name(const char *text, size_t len, json_object *k,
		    char **out)
{
	const char *s = text;

	if (json_object_is_type(k, json_type_string)) {
		size_t slen = (size_t)json_object_get_string_len(k);

		if (slen && !json_whole(json_object_get_string(k), slen, NULL)) {
			s = json_object_get_string(k);
			len = slen;
		}
	}
	*out = NULL;
	if (docname_encode(s, len, true, NULL, 0) + JSON_SUFFIX_LEN > NAME_MAX)
		return 0;
	return (*out = json_name(s, len)) ? 0 : -ENOMEM;
}

/* The key a file name shows, as JSON text into b (the reverse of
 * key_name); -ENOENT when name is no key's. */
static int name_key(const char *name, struct bbuf *b)
{
	size_t len = strlen(name), n;
	char *text;
	int rc;

	if (len <= JSON_SUFFIX_LEN ||
	    strcmp(name + len - JSON_SUFFIX_LEN, JSON_SUFFIX))
		return -ENOENT;
	len -= JSON_SUFFIX_LEN;
	if (!(text = malloc(len + 1)))
		return -ENOMEM;
	rc = docname_decode(name, len, text, &n) ? -ENOENT : 0;
	if (!rc && json_whole(text, n, NULL))
		rc = bbuf_add(b, text, n);
	else if (!rc)
		rc = bbuf_add_jstr(b, text, n);
	free(text);
	return rc;
}

/* ---- design documents ---- */

/* The body of design document id, parsed (owned: json_object_put), and
 * its "views" object (borrowed from it), or -ENOENT. */
static int ddoc_views(struct fs *fs, struct fsdb *db, const char *id,
		      size_t idlen, json_object **body, json_object **views)
{
	struct doc doc = { 0 };
	int rc = moved_has(fs, db, id, idlen) ? BARREL_E_NOTFOUND :
		 docdb_get(db->d, NULL, id, idlen, NULL, 0, &doc);

	*body = NULL;
	if (!rc && !(*body = json_tokener_parse(doc.body)))
		rc = BARREL_E_NOTFOUND;
	doc_release(&doc);
	if (!rc && (!json_object_object_get_ex(*body, "views", views) ||
		    !json_object_is_type(*views, json_type_object)))
		rc = BARREL_E_NOTFOUND;
	if (rc) {
		json_object_put(*body);
		*body = NULL;
	}
	return fs_err(rc);
}

/* A member of "views" is a view when it has a string "map" (view.c). */
static bool is_view(json_object *v)
{
	json_object *m;

	return json_object_object_get_ex(v, "map", &m) &&
	       json_object_is_type(m, json_type_string);
}

static bool has_reduce(json_object *v)
{
	json_object *r;

	return json_object_object_get_ex(v, "reduce", &r) &&
	       json_object_is_type(r, json_type_string);
}

static size_t count_views(json_object *views)
{
	size_t n = 0;

	json_object_object_foreach(views, name, v) {
		(void)name;
		n += is_view(v);
	}
	return n;
}

/* The definition of n's view (borrowed from *body), or -ENOENT. */
static int view_def(struct fs *fs, struct node *n, json_object **body,
		    json_object **def)
{
	json_object *views;
	int rc = ddoc_views(fs, n->p.db, n->p.id, n->p.idlen, body, &views);

	if (!rc && (!json_object_object_get_ex(views, n->p.key, def) ||
		    !is_view(*def)))
		rc = -ENOENT;
	return rc;
}

/* ---- the cache (fs->lock held in these) ---- */

static struct vslot *slot_find(struct fs *fs, struct node *n)
{
	struct viewcache *c = fs->views;

	for (size_t i = 0; c && i < VIEW_SLOTS; i++) {
		struct vslot *s = &c->slot[i];

		if (s->db == n->p.db && !strcmp(s->ddoc, n->p.id) &&
		    !strcmp(s->view, n->p.key)) {
			s->used = ++c->clock;
			return s;
		}
	}
	return NULL;
}

static void ks_free(struct keyset *ks)
{
	for (size_t i = 0; i < ks->n; i++) {
		free(ks->keys[i].name);
		free(ks->keys[i].key);
	}
	free(ks->keys);
	bbuf_release(&ks->rows);
	json_object_put(ks->last);
	free(ks);
}

static void ks_unref_locked(struct keyset *ks)
{
	if (ks && !--ks->refs)
		ks_free(ks);
}

static void slot_clear(struct vslot *s)
{
	ks_unref_locked(s->ks);
	free(s->ddoc);
	free(s->view);
	memset(s, 0, sizeof(*s));
}

/* n's slot, made (the least recently used one replaced) if missing;
 * NULL without memory. */
static struct vslot *slot_get(struct fs *fs, struct node *n)
{
	struct vslot *s = slot_find(fs, n), *old;

	if (s)
		return s;
	if (!fs->views && !(fs->views = calloc(1, sizeof(*fs->views))))
		return NULL;
	old = &fs->views->slot[0];
	for (size_t i = 1; i < VIEW_SLOTS; i++)
		if (fs->views->slot[i].used < old->used)
			old = &fs->views->slot[i];
	slot_clear(old);
	old->ddoc = strdup(n->p.id);
	old->view = strdup(n->p.key);
	if (!old->ddoc || !old->view) {
		slot_clear(old);
		return NULL;
	}
	old->db = n->p.db;
	old->used = ++fs->views->clock;
	return old;
}

static time_t now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec;
}

static void ks_unref(struct fs *fs, struct keyset *ks)
{
	pthread_mutex_lock(&fs->lock);
	ks_unref_locked(ks);
	pthread_mutex_unlock(&fs->lock);
}

void viewdir_forget(struct fs *fs, struct fsdb *db)
{
	pthread_mutex_lock(&fs->lock);
	for (size_t i = 0; fs->views && i < VIEW_SLOTS; i++)
		if (fs->views->slot[i].db && (!db || fs->views->slot[i].db == db))
			slot_clear(&fs->views->slot[i]);
	pthread_mutex_unlock(&fs->lock);
}

void viewdir_release(struct fs *fs)
{
	viewdir_forget(fs, NULL);
	free(fs->views);
	fs->views = NULL;
}

/* ---- freshness ---- */

/* A query's error, none when the view turned out broken (it shows no
 * rows). */
static int query_err(struct node *n, int rc)
{
	struct view_info st;

	if (rc && !view_status(n->p.db->views, n->p.id, n->p.key, &st) &&
	    st.broken)
		return 0;
	return rc;
}

static bool late(struct fs *fs, struct node *n)
{
	struct vslot *s;
	bool is_late;

	pthread_mutex_lock(&fs->lock);
	s = slot_find(fs, n);
	is_late = s && s->late > now_s();
	pthread_mutex_unlock(&fs->lock);
	return is_late;
}

static void set_late(struct fs *fs, struct node *n)
{
	struct vslot *s;

	pthread_mutex_lock(&fs->lock);
	if ((s = slot_get(fs, n)))
		s->late = now_s() + VIEW_LATE_S;
	pthread_mutex_unlock(&fs->lock);
}

/*
 * Look at n's view as the database is now: write its pending deletions,
 * then wait (at most VIEW_WAIT_MS) until the index has caught up with
 * the database (CouchDB's update=true). A wait that times out is
 * logged; reads of the view then take the index as it is, and for
 * VIEW_LATE_S more seconds do not wait. *st: the view's state after.
 */
static int view_fresh(struct fs *fs, struct node *n, struct view_info *st)
{
	struct view_query q;
	int rc;

	moved_flush_db(fs, n->p.db);
	if ((rc = fs_err(view_status(n->p.db->views, n->p.id, n->p.key, st))))
		return rc;
	if (st->broken || (st->exists && st->seq >= st->db_seq) || late(fs, n))
		return 0;
	view_query_init(&q);
	q.limit = 0;
	q.reduce = VIEW_REDUCE_FALSE;
	q.timeout_ms = VIEW_WAIT_MS;
	rc = query_err(n, view_query(n->p.db->views, n->p.id, n->p.key, &q,
				     NULL, NULL, NULL));
	if (rc == -ETIMEDOUT) {
		barrel_log(BLOG_WARN, "%s/.views/%s/%s: the index is behind "
			   "after %u s; read as it is (see .status.json)",
			   n->p.db->name, n->p.id + strlen(DOC_DESIGN_PREFIX),
			   n->p.key, VIEW_WAIT_MS / 1000);
		set_late(fs, n);
	} else if (rc) {
		return fs_err(rc);
	}
	return fs_err(view_status(n->p.db->views, n->p.id, n->p.key, st));
}

/* ---- key sets ---- */

/* Append a map row as one line and ",\n". */
static int row_line(struct bbuf *b, const struct view_row *row)
{
	int rc = bbuf_adds(b, "{");

	if (!rc)
		rc = view_row_members(b, row);
	return rc ? rc : bbuf_adds(b, "},\n");
}

/* A key not seen yet: text (owned by the set from now) parsed as k
 * (owned too). */
static int ks_new_key(struct keyset *ks, char *text, json_object *k,
		      size_t start)
{
	struct vkey *v;

	if (ks->n == ks->cap) {
		size_t cap = ks->cap ? ks->cap * 2 : 64;

		if (!(v = realloc(ks->keys, cap * sizeof(*v)))) {
			free(text);
			json_object_put(k);
			return -ENOMEM;
		}
		ks->keys = v;
		ks->cap = cap;
	}
	json_object_put(ks->last);
	ks->last = k;
	v = &ks->keys[ks->n++];
	*v = (struct vkey){ .key = text, .start = start, .end = ks->rows.len,
			    .first = ks->nrows - 1 };
	return key_name(text, strlen(text), k, &v->name);
}

/* A map row: its line, and a new key unless it collates equal to the
 * previous row's (rows come in key order). */
static int ks_row(void *arg, const struct view_row *row)
{
	struct keyset *ks = arg;
	struct vkey *prev = ks->n ? &ks->keys[ks->n - 1] : NULL;
	size_t start = ks->rows.len;
	json_object *k;
	char *text;
	int rc = row_line(&ks->rows, row);

	if (rc)
		return rc;
	ks->nrows++;
	if (prev && strlen(prev->key) == row->keylen &&
	    !memcmp(prev->key, row->key, row->keylen)) {
		prev->end = ks->rows.len;
		return 0;
	}
	if (!(text = strndup(row->key, row->keylen)))
		return -ENOMEM;
	if (!json_whole(text, row->keylen, &k)) {
		free(text);
		return BARREL_E_BADJSON;
	}
	if (prev && !collate_cmp(ks->last, k)) {   /* equal, other text */
		free(text);
		json_object_put(k);
		prev->end = ks->rows.len;
		return 0;
	}
	return ks_new_key(ks, text, k, start);
}

/* Read n's map rows (index state st) into a new key set (one ref). */
static int ks_build(struct node *n, const struct view_info *st,
		    struct keyset **out)
{
	struct keyset *ks = calloc(1, sizeof(*ks));
	struct view_result res;
	struct view_query q;
	int rc = ks ? 0 : -ENOMEM;

	if (!rc && !st->broken) {
		view_query_init(&q);
		q.reduce = VIEW_REDUCE_FALSE;
		q.update = VIEW_UPDATE_FALSE;
		rc = view_query(n->p.db->views, n->p.id, n->p.key, &q,
				ks_row, ks, &res);
		/* broken since the status was read: no rows (not kept) */
		rc = fs_err(query_err(n, rc));
		ks->seq = res.update_seq;
		ks->total_rows = res.total_rows;
	}
	if (rc) {
		if (ks)
			ks_free(ks);
		return rc;
	}
	json_object_put(ks->last);
	ks->last = NULL;
	ks->refs = 1;
	*out = ks;
	return 0;
}

/* Keep ks as n's (one more ref) if the index did not move during its
 * read: its state then and after are both st's. */
static void ks_keep(struct fs *fs, struct node *n, struct keyset *ks,
		    const struct view_info *st)
{
	struct view_info after;
	struct vslot *s;

	if (view_status(n->p.db->views, n->p.id, n->p.key, &after) ||
	    strcmp(after.sig, st->sig) || after.seq != st->seq ||
	    after.broken != st->broken || (!st->broken && ks->seq != st->seq))
		return;
	memcpy(ks->sig, st->sig, sizeof(ks->sig));
	ks->seq = st->seq;
	pthread_mutex_lock(&fs->lock);
	if ((s = slot_get(fs, n))) {
		ks_unref_locked(s->ks);
		s->ks = ks;
		ks->refs++;
	}
	pthread_mutex_unlock(&fs->lock);
}

/* The key set of n's view, fresh (view_fresh); release with ks_unref. */
static int ks_get(struct fs *fs, struct node *n, struct keyset **out)
{
	struct view_info st;
	struct vslot *s;
	int rc = view_fresh(fs, n, &st);

	if (rc)
		return rc;
	*out = NULL;
	pthread_mutex_lock(&fs->lock);
	if ((s = slot_find(fs, n)) && s->ks && !strcmp(s->ks->sig, st.sig) &&
	    s->ks->seq == st.seq) {
		*out = s->ks;
		s->ks->refs++;
	}
	pthread_mutex_unlock(&fs->lock);
	if (*out)
		return 0;
	if ((rc = ks_build(n, &st, out)))
		return rc;
	ks_keep(fs, n, *out, &st);
	return 0;
}

/* The key of ks that k (JSON text) collates equal to, or NULL. */
static struct vkey *ks_find(struct keyset *ks, const char *text, size_t len)
{
	json_object *k, *e;
	size_t lo = 0, hi = ks->n;
	struct vkey *found = NULL;

	if (!json_whole(text, len, &k))
		return NULL;
	while (lo < hi && !found) {
		size_t mid = lo + (hi - lo) / 2;
		int c = 1;

		if (json_whole(ks->keys[mid].key, strlen(ks->keys[mid].key), &e))
			c = collate_cmp(k, e);
		json_object_put(e);
		if (c < 0)
			hi = mid;
		else if (c > 0)
			lo = mid + 1;
		else
			found = &ks->keys[mid];
	}
	json_object_put(k);
	return found;
}

/* ---- content ---- */

/* The size of a view response over rows[start, end) (each ",\n"-ended)
 * with the given head: rows one per line, then "]}\n". */
static size_t wrapped_size(size_t head, size_t start, size_t end)
{
	return head + (start == end ? 3 : 1 + (end - start - 2) + 4);
}

static int wrap(struct bbuf *b, const char *head, const char *rows,
		size_t start, size_t end)
{
	int rc = bbuf_adds(b, head);

	if (!rc && start == end)
		return bbuf_adds(b, "]}\n");
	return rc ?: bbuf_adds(b, "\n") ?:
	       bbuf_add(b, rows + start, end - start - 2) ?:
	       bbuf_adds(b, "\n]}\n");
}

/* CouchDB's map response head. */
static size_t map_head(char *buf, size_t cap, uint64_t total,
		       uint64_t offset)
{
	int n = snprintf(buf, cap, "{\"total_rows\":%" PRIu64 ",\"offset\":%"
			 PRIu64 ",\"rows\":[", total, offset);

	return n < 0 ? 0 : (size_t)n;
}

/* The key file n's rows in ks (v: NULL for .all.json): its size, and
 * its content into b when b is not NULL. */
static int map_file(struct keyset *ks, const struct vkey *v, struct bbuf *b,
		    off_t *size)
{
	char head[96];
	size_t start = v ? v->start : 0, end = v ? v->end : ks->rows.len;
	size_t hl = map_head(head, sizeof(head), ks->total_rows,
			     v ? v->first : 0);

	*size = (off_t)wrapped_size(hl, start, end);
	return b ? wrap(b, head, ks->rows.p, start, end) : 0;
}

/* KEY.json or .all.json of n: size, and content into b (may be NULL). */
static int render_map(struct fs *fs, struct node *n, struct bbuf *b,
		      off_t *size)
{
	struct bbuf key = { 0 };
	struct keyset *ks;
	struct vkey *v = NULL;
	int rc = n->p.kind == NODE_VKEY ? name_key(n->name, &key) : 0;

	if (rc || (rc = ks_get(fs, n, &ks))) {
		bbuf_release(&key);
		return rc;
	}
	if (n->p.kind == NODE_VKEY && !(v = ks_find(ks, key.p, key.len)))
		rc = -ENOENT;
	if (!rc)
		rc = map_file(ks, v, b, size);
	ks_unref(fs, ks);
	bbuf_release(&key);
	return rc;
}

static int reduce_row(void *arg, const struct view_row *row)
{
	return row_line(arg, row);      /* a reduce row has no id */
}

/* .reduce.json (group=false) or .group.json (group=true). */
static int render_reduce(struct fs *fs, struct node *n, struct bbuf *b)
{
	struct bbuf rows = { 0 };
	struct view_info st;
	struct view_query q;
	json_object *body = NULL, *def;
	int rc = view_def(fs, n, &body, &def);

	if (!rc && !has_reduce(def))
		rc = -ENOENT;
	json_object_put(body);
	if (!rc)
		rc = view_fresh(fs, n, &st);
	if (!rc && !st.broken) {
		view_query_init(&q);
		q.reduce = VIEW_REDUCE_TRUE;
		q.group = n->p.kind == NODE_VGROUP;
		q.update = VIEW_UPDATE_FALSE;
		rc = query_err(n, view_query(n->p.db->views, n->p.id,
					     n->p.key, &q, reduce_row, &rows,
					     NULL));
		/* INVALID: the reduce was removed since the check above */
		rc = rc == BARREL_E_INVALID ? -ENOENT : fs_err(rc);
	}
	if (!rc)
		rc = wrap(b, "{\"rows\":[", rows.p, 0, rows.len);
	bbuf_release(&rows);
	return rc;
}

static void add_u64(json_object *o, const char *name, uint64_t v)
{
	json_object_object_add(o, name, json_object_new_int64((int64_t)v));
}

static json_object *str_or_null(const char *s)
{
	return s[0] ? json_object_new_string(s) : NULL;
}

/* .status.json: the index's state, without waiting for it. */
static int render_status(struct node *n, struct bbuf *b)
{
	struct view_info st;
	json_object *o;
	int rc = fs_err(view_status(n->p.db->views, n->p.id, n->p.key, &st));

	if (rc)
		return rc;
	o = json_object_new_object();
	json_object_object_add(o, "signature", str_or_null(st.sig));
	add_u64(o, "update_seq", st.seq);
	add_u64(o, "db_seq", st.db_seq);
	add_u64(o, "pending", st.db_seq > st.seq ? st.db_seq - st.seq : 0);
	add_u64(o, "total_rows", st.total_rows);
	add_u64(o, "mapped", st.mapped);
	add_u64(o, "errors", st.errors);
	json_object_object_add(o, "last_error", str_or_null(st.last_error));
	json_object_object_add(o, "last_error_id",
			       str_or_null(st.last_error_id));
	json_object_object_add(o, "broken", json_object_new_boolean(st.broken));
	rc = bbuf_adds(b, json_object_to_json_string_ext(o,
			JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
			JSON_C_TO_STRING_NOSLASHESCAPE)) ?: bbuf_adds(b, "\n");
	json_object_put(o);
	return rc;
}

/* The content of file n into b; its size into *size. */
static int render(struct fs *fs, struct node *n, struct bbuf *b,
		  off_t *size)
{
	int rc;

	switch (n->p.kind) {
	case NODE_VKEY:
	case NODE_VALL:
		return render_map(fs, n, b, size);
	case NODE_VREDUCE:
	case NODE_VGROUP:
		rc = render_reduce(fs, n, b);
		break;
	case NODE_VSTATUS:
		rc = render_status(n, b);
		break;
	default:
		return -EISDIR;
	}
	*size = (off_t)b->len;
	return rc;
}

/* ---- the entry points ---- */

static int classify(const struct node *dir, const char *name,
		    struct proto *p)
{
	static const struct { const char *name; enum node_kind kind; } files[] = {
		{ ".all.json", NODE_VALL }, { ".reduce.json", NODE_VREDUCE },
		{ ".group.json", NODE_VGROUP }, { ".status.json", NODE_VSTATUS },
	};
	size_t len = strlen(name), n;
	char *again;

	p->kind = NODE_VKEY;
	if (dir->p.kind == NODE_VDDOC) {
		p->kind = NODE_VIEW;
		if (!(p->key = malloc(len + 1)))
			return -ENOMEM;
		if (docname_decode(name, len, p->key, &n) || n != strlen(p->key) ||
		    !(again = name_encode(p->key, n, true)))
			return -ENOENT;
		n = strcmp(again, name);
		free(again);
		if (n)
			return -ENOENT;
	} else if (dir->p.kind == NODE_VIEW) {
		/* any other name is a key's: it exists while it has rows
		 * (so that making one is EACCES, not ENOENT) */
		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
			if (!strcmp(name, files[i].name))
				p->kind = files[i].kind;
		if (!(p->key = strdup(dir->p.key)))
			return -ENOMEM;
	} else {
		return -ENOTDIR;
	}
	p->idlen = dir->p.idlen;
	return (p->id = strndup(dir->p.id, dir->p.idlen)) ? 0 : -ENOMEM;
}

int viewdir_classify(const struct node *dir, const char *name,
		     struct proto *p)
{
	int rc = classify(dir, name, p);

	if (rc)
		proto_release(p);
	return rc;
}

/* .views/D/ exists while _design/D has a view; .views/D/V/ while it has
 * V. st_size: the views of D. */
static int stat_dir(struct fs *fs, struct node *n, struct stat *st)
{
	json_object *body = NULL, *views, *def;
	int rc = 0;

	st->st_mode = S_IFDIR | 0555;
	if (n->p.kind == NODE_VDDOC &&
	    !(rc = ddoc_views(fs, n->p.db, n->p.id, n->p.idlen, &body, &views)))
		rc = (st->st_size = (off_t)count_views(views)) ? 0 : -ENOENT;
	else if (n->p.kind == NODE_VIEW)
		rc = view_def(fs, n, &body, &def);
	json_object_put(body);
	return rc;
}

int viewdir_stat(struct fs *fs, struct node *n, struct stat *st)
{
	struct bbuf b = { 0 };
	int rc;

	switch (n->p.kind) {
	case NODE_VIEWS:
	case NODE_VDDOC:
	case NODE_VIEW:
		return stat_dir(fs, n, st);
	case NODE_VKEY:
	case NODE_VALL:
		st->st_mode = S_IFREG | 0444;
		return render_map(fs, n, NULL, &st->st_size);
	default:
		st->st_mode = S_IFREG | 0444;
		rc = render(fs, n, &b, &st->st_size);
		bbuf_release(&b);
		return rc;
	}
}

/* add(arg, s through the codec) as a directory. */
static int add_dir(int (*add)(void *arg, const char *name, mode_t type),
		   void *arg, const char *s, size_t len)
{
	char *name = name_encode(s, len, true);
	int rc = name ? add(arg, name, S_IFDIR) : -ENOMEM;

	free(name);
	return rc;
}

struct ddoc_list {
	int (*add)(void *arg, const char *name, mode_t type);
	void *arg;
	struct fs *fs;
	struct fsdb *db;
};

/* A design document in .views/: D/ when it has a view. */
static int list_ddoc(void *arg, const struct doc_row *row)
{
	struct ddoc_list *l = arg;
	size_t plen = strlen(DOC_DESIGN_PREFIX);
	json_object *body, *views;
	int rc = 0;

	if (ddoc_views(l->fs, l->db, row->id, row->idlen, &body, &views))
		return 0;
	if (count_views(views))
		rc = add_dir(l->add, l->arg, row->id + plen, row->idlen - plen);
	json_object_put(body);
	return rc;
}

static int list_views(struct fs *fs, struct node *n,
		      int (*add)(void *arg, const char *name, mode_t type),
		      void *arg)
{
	json_object *body, *views;
	int rc = ddoc_views(fs, n->p.db, n->p.id, n->p.idlen, &body, &views);

	if (rc)
		return rc;
	json_object_object_foreach(views, view, def)
		if (!rc && is_view(def))
			rc = add_dir(add, arg, view, strlen(view));
	json_object_put(body);
	return rc;
}

/* .views/D/V/: its files, then one KEY.json per key, in key order. */
static int list_keys(struct fs *fs, struct node *n,
		     int (*add)(void *arg, const char *name, mode_t type),
		     void *arg)
{
	json_object *body = NULL, *def;
	struct keyset *ks;
	int rc = view_def(fs, n, &body, &def);

	if (!rc)
		rc = add(arg, ".all.json", S_IFREG) ?:
		     add(arg, ".status.json", S_IFREG);
	if (!rc && has_reduce(def))
		rc = add(arg, ".reduce.json", S_IFREG) ?:
		     add(arg, ".group.json", S_IFREG);
	json_object_put(body);
	if (rc || (rc = ks_get(fs, n, &ks)))
		return rc;
	for (size_t i = 0; !rc && i < ks->n; i++)
		if (ks->keys[i].name)
			rc = add(arg, ks->keys[i].name, S_IFREG);
	ks_unref(fs, ks);
	return rc;
}

int viewdir_list(struct fs *fs, struct node *n,
		 int (*add)(void *arg, const char *name, mode_t type),
		 void *arg)
{
	struct ddoc_list l = { add, arg, fs, n->p.db };
	const char *pre = DOC_DESIGN_PREFIX;

	switch (n->p.kind) {
	case NODE_VIEWS:
		return fs_err(docdb_all_docs(n->p.db->d, NULL, pre, strlen(pre),
					     "_design0", 8, 0, list_ddoc, &l));
	case NODE_VDDOC:
		return list_views(fs, n, add, arg);
	case NODE_VIEW:
		return list_keys(fs, n, add, arg);
	default:
		return -ENOTDIR;
	}
}

int viewdir_open(struct fs *fs, struct node *n, struct fh *fh)
{
	struct bbuf b = { 0 };
	off_t size;
	int rc = fsdb_enter(n->p.db);

	if (rc)
		return rc;
	if (!(rc = render(fs, n, &b, &size)) && !b.p)
		rc = bbuf_adds(&b, "");
	fsdb_leave(n->p.db);
	if (rc) {
		bbuf_release(&b);
		return rc;
	}
	free(fh->buf);
	fh->buf = b.p;
	fh->len = b.len;
	return 0;
}
