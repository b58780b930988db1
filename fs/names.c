/*
 * What a name in a directory of the mount is (DESIGN.md "Names in a
 * database directory"): the codec of engine/docname.h maps file names to
 * document ids and attachment names; everything else is scratch.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "engine/docname.h"
#include "fs/fs.h"

#define JSON_SUFFIX ".json"
#define JSON_SUFFIX_LEN 5

char *name_encode(const char *s, size_t len, bool doc)
{
	size_t n = docname_encode(s, len, doc, NULL, 0);
	char *out = malloc(n + JSON_SUFFIX_LEN + 1);

	if (out)
		docname_encode(s, len, doc, out, n + 1);
	return out;
}

char *name_of_doc(const char *id, size_t idlen)
{
	size_t plen = strlen(DOC_DESIGN_PREFIX);
	char *out;

	if (idlen > plen && !memcmp(id, DOC_DESIGN_PREFIX, plen)) {
		id += plen;
		idlen -= plen;
	}
	out = name_encode(id, idlen, true);
	if (out)
		memcpy(out + strlen(out), JSON_SUFFIX, JSON_SUFFIX_LEN + 1);
	return out;
}

static bool ends_json(const char *name, size_t len)
{
	return len > JSON_SUFFIX_LEN &&
	       !memcmp(name + len - JSON_SUFFIX_LEN, JSON_SUFFIX,
		       JSON_SUFFIX_LEN);
}

/*
 * Decode name[0..len) into a document id in p, with prefix ("" or
 * "_design/"); false unless it is a valid id for that directory (any:
 * also "_design/X" without prefix) whose
 * canonical encoding is exactly name (one name per id).
 */
static bool decode_id(const char *prefix, const char *name, size_t len,
		      bool any, struct proto *p)
{
	size_t plen = strlen(prefix), n;
	char *id = malloc(plen + len + 1), *again = NULL;
	bool ok;

	if (!id)
		return false;
	memcpy(id, prefix, plen);
	ok = !docname_decode(name, len, id + plen, &n) &&
	     docdb_id_valid(id, plen + n) && (any || plen || id[0] != '_') &&
	     (again = name_encode(id + plen, n, true)) &&
	     strlen(again) == len && !memcmp(again, name, len);
	free(again);
	if (!ok) {
		free(id);
		return false;
	}
	p->id = id;
	p->idlen = plen + n;
	return true;
}

/* An attachment name from its file name (canonical encodings only). */
static bool decode_att(const char *name, struct proto *p)
{
	size_t len = strlen(name), n;
	char *att = malloc(len + 1), *again = NULL;
	bool ok;

	if (!att)
		return false;
	ok = !docname_decode(name, len, att, &n) && n && !memchr(att, 0, n) &&
	     (again = name_encode(att, n, false)) && !strcmp(again, name);
	free(again);
	if (!ok) {
		free(att);
		return false;
	}
	p->key = att;
	return true;
}

static bool doc_live(struct fsdb *db, const char *id, size_t idlen)
{
	struct doc doc = { 0 };
	int rc = docdb_get(db->d, NULL, id, idlen, NULL, 0, &doc);

	doc_release(&doc);
	return rc == 0;
}

static int scratch_proto(const char *dirpath, const char *name,
			 struct proto *p)
{
	size_t dl = strlen(dirpath), nl = strlen(name);

	p->kind = NODE_SCRATCH;
	if (!(p->key = malloc(dl + nl + 1)))
		return -ENOMEM;
	memcpy(p->key, dirpath, dl);
	memcpy(p->key + dl, name, nl + 1);
	return 0;
}

/* A name in a database directory (prefix "") or in _design/. */
static int classify_docs(struct fsdb *db, const char *prefix,
			 const char *name, struct proto *p)
{
	size_t len = strlen(name);
	struct fsrec r = { 0 };

	if (ends_json(name, len) &&
	    decode_id(prefix, name, len - JSON_SUFFIX_LEN, false, p)) {
		p->kind = NODE_DOC;
		return 0;
	}
	if (decode_id(prefix, name, len, false, p)) {
		bool scratch = !fsrec_get(db, NULL, name, &r);

		fsrec_release(&r);
		if (!scratch && doc_live(db, p->id, p->idlen)) {
			p->kind = NODE_ATTDIR;
			return 0;
		}
		proto_release(p);
		p->db = db;
	}
	return scratch_proto(*prefix ? "_design/" : "", name, p);
}

/* The path of directory n inside its database ("", "_design/", "ID/"). */
static char *dir_path(const struct node *n)
{
	char *enc, *out;
	size_t len;

	if (n->p.kind == NODE_DB)
		return strdup("");
	if (n->p.kind == NODE_DESIGN)
		return strdup(DOC_DESIGN_PREFIX);
	enc = name_of_doc(n->p.id, n->p.idlen);   /* "ID.json" */
	if (!enc)
		return NULL;
	len = strlen(enc) - JSON_SUFFIX_LEN;
	out = malloc(len + strlen(DOC_DESIGN_PREFIX) + 2);
	if (out) {
		bool design = n->p.idlen > strlen(DOC_DESIGN_PREFIX) &&
			      !memcmp(n->p.id, DOC_DESIGN_PREFIX,
				      strlen(DOC_DESIGN_PREFIX));
		size_t at = design ? strlen(DOC_DESIGN_PREFIX) : 0;

		memcpy(out, DOC_DESIGN_PREFIX, at);
		memcpy(out + at, enc, len);
		memcpy(out + at + len, "/", 2);
	}
	free(enc);
	return out;
}

char *node_path(const struct node *dir, const char *name)
{
	char *dp = dir_path(dir), *out = NULL;

	if (dp && (out = malloc(strlen(dp) + strlen(name) + 1))) {
		memcpy(out, dp, strlen(dp));
		memcpy(out + strlen(dp), name, strlen(name) + 1);
	}
	free(dp);
	return out;
}

static int copy_id(const struct node *dir, struct proto *p)
{
	if (!(p->id = malloc(dir->p.idlen + 1)))
		return -ENOMEM;
	memcpy(p->id, dir->p.id, dir->p.idlen + 1);
	p->idlen = dir->p.idlen;
	return 0;
}

/* NAME.json or NAME.diff in a revision folder: a revision string. */
static bool rev_name(const char *name, const char *suffix, struct proto *p)
{
	size_t len = strlen(name), sl = strlen(suffix);
	struct rev r;

	if (len <= sl || strcmp(name + len - sl, suffix) ||
	    rev_parse(name, len - sl, &r))
		return false;
	p->key = strndup(name, len - sl);
	return p->key != NULL;
}

static int classify_rev(const struct node *dir, const char *name,
			struct proto *p)
{
	if (dir->p.kind == NODE_REVROOT) {
		if (!decode_id("", name, strlen(name), true, p))
			return -ENOENT;
		p->kind = NODE_REVDIR;
		return 0;
	}
	if (copy_id(dir, p))
		return -ENOMEM;
	if (dir->p.kind == NODE_REVDIR && !strcmp(name, "conflicts"))
		p->kind = NODE_CONFLICTS;
	else if (rev_name(name, ".json", p))
		p->kind = dir->p.kind == NODE_REVDIR ? NODE_REVFILE :
			  NODE_CONFLICT;
	else if (dir->p.kind == NODE_REVDIR && rev_name(name, ".diff", p))
		p->kind = NODE_REVDIFF;
	else
		return -ENOENT;
	return 0;
}

static int classify_db(struct fsdb *db, const char *name, struct proto *p)
{
	if (!strcmp(name, ".rev"))
		p->kind = NODE_REVROOT;
	else if (!strcmp(name, ".changes"))
		p->kind = NODE_CHANGES;
	else if (!strcmp(name, ".views"))
		p->kind = NODE_VIEWS;
	else if (!strcmp(name, "_design"))
		p->kind = NODE_DESIGN;
	else
		return classify_docs(db, "", name, p);
	return 0;
}

static int classify_root(struct fs *fs, const char *name, struct proto *p)
{
	if (!strcmp(name, ".status")) {
		p->kind = NODE_STATUS;
		return 0;
	}
	if (!bdb_name_valid(name))
		return -EINVAL;
	p->kind = NODE_DB;
	p->db = fsdb_find(fs, name);
	return 0;
}

int name_classify(struct fs *fs, const struct node *dir, const char *name,
		  struct proto *p)
{
	char *path;
	int rc;

	memset(p, 0, sizeof(*p));
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	p->db = dir->p.db;
	switch (dir->p.kind) {
	case NODE_ROOT:
		return classify_root(fs, name, p);
	case NODE_DB:
		return classify_db(dir->p.db, name, p);
	case NODE_DESIGN:
		return classify_docs(dir->p.db, DOC_DESIGN_PREFIX, name, p);
	case NODE_ATTDIR:
		if (copy_id(dir, p))
			return -ENOMEM;
		if (decode_att(name, p)) {
			p->kind = NODE_ATT;
			return 0;
		}
		free(p->id);
		p->id = NULL;
		p->idlen = 0;
		if (!(path = node_path(dir, "")))
			return -ENOMEM;
		rc = scratch_proto(path, name, p);
		free(path);
		return rc;
	case NODE_REVROOT:
	case NODE_REVDIR:
	case NODE_CONFLICTS:
		return classify_rev(dir, name, p);
	case NODE_VIEWS:          /* .views/D: _design/D */
		if (!decode_id(DOC_DESIGN_PREFIX, name, strlen(name), false, p))
			return -ENOENT;
		p->kind = NODE_VDDOC;
		return 0;
	case NODE_VDDOC:
	case NODE_VIEW:
		return viewdir_classify(dir, name, p);
	default:
		return -ENOTDIR;
	}
}

bool name_as_attdir(const struct node *dir, const char *name,
		    struct proto *p)
{
	struct fsdb *db = dir->p.db;

	proto_release(p);
	p->db = db;
	if (!decode_id(dir->p.kind == NODE_DESIGN ? DOC_DESIGN_PREFIX : "",
		       name, strlen(name), false, p))
		return false;
	p->kind = NODE_ATTDIR;
	return true;
}
