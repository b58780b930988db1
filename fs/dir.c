/*
 * Directory listings. A listing is made whole at opendir from one
 * snapshot and served by index; names come from the same codec that
 * lookups decode (names.c).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs.h"

struct dirent_one {
	char *name;
	mode_t type;              /* S_IFDIR, S_IFREG or S_IFLNK */
};

struct dirent_list {
	struct dirent_one *v;
	size_t n, cap;
	struct fs *fs;
	struct node *dir;
	struct bsnap *snap;
};

static int add_owned(struct dirent_list *l, char *name, mode_t type)
{
	if (!name)
		return -ENOMEM;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 32;
		struct dirent_one *v = realloc(l->v, cap * sizeof(*v));

		if (!v) {
			free(name);
			return -ENOMEM;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (struct dirent_one){ name, type };
	return 0;
}

static int add(struct dirent_list *l, const char *name, mode_t type)
{
	return add_owned(l, strdup(name), type);
}

static int add_any(void *arg, const char *name, mode_t type)
{
	return add(arg, name, type);
}

static int add_db(void *arg, const char *name)
{
	return add(arg, name, S_IFDIR);
}

/* A document of a database directory or _design/: ID.json, and ID/
 * when it has attachments. Moved-away documents are hidden. */
static int add_doc(void *arg, const struct doc_row *row)
{
	struct dirent_list *l = arg;
	char *name;
	int rc;

	if (moved_has(l->fs, l->dir->p.db, row->id, row->idlen))
		return 0;
	if (!(name = name_of_doc(row->id, row->idlen)))
		return -ENOMEM;
	rc = add_owned(l, strdup(name), S_IFREG);
	if (!rc && row->doc && row->doc->natts) {
		name[strlen(name) - 5] = '\0';
		rc = add(l, name, S_IFDIR);
	}
	free(name);
	return rc;
}

static int add_scratch(void *arg, const char *name, const struct fsrec *r)
{
	return add(arg, name, r->kind == FSREC_LINK ? S_IFLNK : S_IFREG);
}

static int add_revdir(void *arg, const struct doc_row *row)
{
	return add_owned(arg, name_encode(row->id, row->idlen, true),
			 S_IFDIR);
}

static int list_docs(struct dirent_list *l, bool design)
{
	const char *start = design ? DOC_DESIGN_PREFIX : NULL;
	const char *end = design ? "_design0" : "_";
	struct fsdb *db = l->dir->p.db;
	int rc;

	/* ids other than _design/ ones never start with '_' */
	rc = docdb_all_docs(db->d, l->snap, start, start ? strlen(start) : 0,
			    end, strlen(end), DOC_ROWS_DOCS, add_doc, l);
	if (!rc && !design)
		rc = docdb_all_docs(db->d, l->snap, "`", 1, NULL, 0,
				    DOC_ROWS_DOCS, add_doc, l);
	if (!rc)
		rc = fsrec_list(db, design ? DOC_DESIGN_PREFIX : "",
				add_scratch, l);
	if (!rc && !design)
		rc = add(l, ".rev", S_IFDIR) ?: add(l, ".changes", S_IFREG) ?:
		     add(l, ".views", S_IFDIR) ?: add(l, "_design", S_IFDIR);
	return rc;
}

static int list_atts(struct dirent_list *l)
{
	struct node *n = l->dir;
	struct doc doc = { 0 };
	char *prefix = node_path(n, "");
	int rc = prefix ? 0 : -ENOMEM;

	if (!rc && !(rc = docdb_get(n->p.db->d, l->snap, n->p.id, n->p.idlen,
				    NULL, 0, &doc)))
		for (size_t i = 0; !rc && i < doc.natts; i++)
			rc = add_owned(l, name_encode(doc.atts[i].name,
						      strlen(doc.atts[i].name),
						      false), S_IFREG);
	if (rc == BARREL_E_NOTFOUND && n->pending)
		rc = 0;
	if (!rc)
		rc = fsrec_list(n->p.db, prefix, add_scratch, l);
	doc_release(&doc);
	free(prefix);
	return rc;
}

static int add_rev(void *arg, const struct revtree_info *ri)
{
	struct dirent_list *l = arg;
	char rev[REV_STR_SIZE + 8];
	int n;

	if (!ri->has_body)
		return 0;
	n = (int)rev_text(&ri->rev, rev);
	memcpy(rev + n, ".json", 6);
	if (add(l, rev, S_IFREG))
		return -ENOMEM;
	memcpy(rev + n, ".diff", 6);
	return add(l, rev, S_IFREG);
}

static int list_revs(struct dirent_list *l, bool conflicts)
{
	struct node *n = l->dir;
	struct revtree *tree = NULL;
	struct rev *revs = NULL;
	size_t nrevs = 0;
	char name[REV_STR_SIZE + 8];
	int rc = docdb_tree(n->p.db->d, l->snap, n->p.id, n->p.idlen, &tree,
			    NULL);

	if (!rc && !conflicts)
		rc = revtree_each(tree, add_rev, l) ?:
		     add(l, "conflicts", S_IFDIR);
	if (!rc && conflicts)
		rc = revtree_conflicts(tree, &revs, &nrevs);
	for (size_t i = 0; !rc && i < nrevs; i++) {
		int len = (int)rev_text(&revs[i], name);

		memcpy(name + len, ".json", 6);
		rc = add(l, name, S_IFREG);
	}
	free(revs);
	revtree_free(tree);
	return rc;
}

static int list_kind(struct dirent_list *l)
{
	struct node *n = l->dir;

	switch (n->p.kind) {
	case NODE_ROOT:
		return add(l, ".status", S_IFREG) ?:
		       benv_list(l->fs->env, add_db, l);
	case NODE_DB:
		return list_docs(l, false);
	case NODE_DESIGN:
		return list_docs(l, true);
	case NODE_ATTDIR:
		return list_atts(l);
	case NODE_REVROOT:
		return docdb_all_docs(n->p.db->d, l->snap, NULL, 0, NULL, 0,
				      DOC_ROWS_DELETED, add_revdir, l);
	case NODE_REVDIR:
		return list_revs(l, false);
	case NODE_CONFLICTS:
		return list_revs(l, true);
	default:
		if (viewdir_kind(n->p.kind))
			return viewdir_list(l->fs, n, add_any, l);
		return -ENOTDIR;
	}
}

static void list_free(struct dirent_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].name);
	free(l->v);
	free(l);
}

int dir_open(struct fs *fs, struct node *n, struct fh **out)
{
	struct dirent_list *l = calloc(1, sizeof(*l));
	struct fh *fh = calloc(1, sizeof(*fh));
	bool in_db = n->p.kind != NODE_ROOT;
	int rc = l && fh ? 0 : -ENOMEM;

	if (!rc && in_db)
		rc = fsdb_enter(n->p.db);
	if (rc)
		goto out_free;
	if (n->p.kind == NODE_REVROOT || n->p.kind == NODE_REVDIR ||
	    n->p.kind == NODE_CONFLICTS)
		moved_flush_db(fs, n->p.db);    /* history is looked at */
	l->fs = fs;
	l->dir = n;
	rc = add(l, ".", S_IFDIR) ?: add(l, "..", S_IFDIR);
	if (!rc && in_db)
		rc = bdb_snapshot(docdb_bdb(n->p.db->d), &l->snap);
	if (!rc)
		rc = list_kind(l);
	bsnap_release(l->snap);
	l->snap = NULL;
	if (in_db)
		fsdb_leave(n->p.db);
	if (rc)
		goto out_free;
	fh->node = n;
	fh->dir = l;
	*out = fh;
	return 0;
out_free:
	if (l)
		list_free(l);
	free(fh);
	return fs_err(rc);
}

void dir_release(struct fh *fh)
{
	list_free(fh->dir);
	free(fh);
}

int dir_fill(struct fs *fs, fuse_req_t req, struct fh *fh, char *buf,
	     size_t size, off_t off, size_t *got)
{
	struct dirent_list *l = fh->dir;
	size_t used = 0;

	for (size_t i = (size_t)off; i < l->n; i++) {
		struct node *child = node_find(fs, fh->node->ino, l->v[i].name);
		struct stat st = { .st_mode = l->v[i].type,
				   .st_ino = child ? child->ino :
					     (ino_t)UINT32_MAX + i };
		size_t need = fuse_add_direntry(req, buf + used, size - used,
						l->v[i].name, &st,
						(off_t)i + 1);

		if (need > size - used)
			break;
		used += need;
	}
	*got = used;
	return 0;
}
