#include "config.h"

/*
 * Attachments (docdb.h): streamed into engine blobs with their MD5
 * computed on the way, stored once per content in the "atts" table
 * (FORMAT.md "Attachment entry") with a count of the revision records
 * that name them. OpenSSL's libcrypto gives MD5 and base64.
 */

#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "engine/docdb_i.h"

#define B64_PIECE 65536u      /* base64 characters decoded at a time */

struct doc_att_writer {
	struct bblob_writer *blob;
	EVP_MD_CTX *md5;
};

int docdb_att_create(struct docdb *d, struct doc_att_writer **out)
{
	struct doc_att_writer *w = calloc(1, sizeof(*w));
	int rc;

	if (!w)
		return -ENOMEM;
	w->md5 = EVP_MD_CTX_new();
	if (!w->md5 || !EVP_DigestInit_ex(w->md5, EVP_md5(), NULL)) {
		rc = -ENOMEM;
		goto out_free;
	}
	rc = bdb_blob_create(d->db, &w->blob);
	if (rc)
		goto out_free;
	*out = w;
	return 0;
out_free:
	EVP_MD_CTX_free(w->md5);
	free(w);
	return rc;
}

int doc_att_write(struct doc_att_writer *w, const void *buf, size_t len)
{
	if (!EVP_DigestUpdate(w->md5, buf, len))
		return -ENOMEM;
	return bblob_write(w->blob, buf, len);
}

int doc_att_finish(struct doc_att_writer *w, struct doc_att *a)
{
	unsigned int n = 0;
	int rc;

	if (!EVP_DigestFinal_ex(w->md5, a->md5, &n) || n != 16) {
		doc_att_abort(w);
		return -ENOMEM;
	}
	a->remove = false;
	rc = bblob_finish(w->blob, &a->blob, &a->length);
	EVP_MD_CTX_free(w->md5);
	free(w);
	return rc;
}

void doc_att_abort(struct doc_att_writer *w)
{
	if (!w)
		return;
	bblob_abort(w->blob);
	EVP_MD_CTX_free(w->md5);
	free(w);
}

int docdb_att_open(struct docdb *d, struct bsnap *snap,
		   const struct doc_att *a, struct bblob_reader **out)
{
	(void)d;
	if (!snap)
		return BARREL_E_INVALID;
	return bsnap_blob_open(snap, a->blob, out);
}

/* ---- digests ---- */

void doc_digest_format(const uint8_t md5[16], char *buf)
{
	memcpy(buf, "md5-", 4);
	EVP_EncodeBlock((unsigned char *)buf + 4, md5, 16);
}

static bool b64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '+' || c == '/';
}

int doc_digest_parse(const char *s, uint8_t md5[16])
{
	unsigned char raw[18];

	if (strncmp(s, "md5-", 4) || strlen(s) != DOC_DIGEST_SIZE - 1 ||
	    strcmp(s + 26, "=="))
		return BARREL_E_INVALID;
	for (int i = 4; i < 26; i++)
		if (!b64_char(s[i]))
			return BARREL_E_INVALID;
	if (EVP_DecodeBlock(raw, (const unsigned char *)s + 4, 24) != 18)
		return BARREL_E_INVALID;
	memcpy(md5, raw, 16);
	return 0;
}

/* ---- the store ---- */

static void att_key(const struct doc_att *a, uint8_t key[24])
{
	memcpy(key, a->md5, 16);
	for (int i = 0; i < 8; i++)
		key[16 + i] = (uint8_t)(a->length >> (56 - 8 * i));
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* The entry of a's content: blob and references. */
static int att_entry(struct docdb *d, struct btxn *txn, const uint8_t *key,
		     uint64_t *blob, uint64_t *refs)
{
	struct bval v = { 0 };
	int rc = btxn_get(txn, d->t_atts, key, 24, &v);

	if (rc)
		return rc;
	if (v.len != 16) {
		bval_release(&v);
		return BARREL_E_CORRUPT;
	}
	*blob = le64(v.data);
	*refs = le64((uint8_t *)v.data + 8);
	bval_release(&v);
	return 0;
}

int att_find(struct docdb *d, struct btxn *txn, const struct doc_att *a,
	     uint64_t *blob)
{
	uint8_t key[24];
	uint64_t refs;

	att_key(a, key);
	return att_entry(d, txn, key, blob, &refs);
}

int att_ref(struct docdb *d, struct btxn *txn, struct doc_att *a, int delta)
{
	uint8_t key[24], val[16];
	uint64_t blob = 0, refs = 0;
	int rc;

	att_key(a, key);
	rc = att_entry(d, txn, key, &blob, &refs);
	if (rc && rc != BARREL_E_NOTFOUND)
		return rc;
	if (delta > 0 && rc == BARREL_E_NOTFOUND) {
		if ((rc = btxn_blob_link(txn, a->blob)))
			return rc;
		blob = a->blob;
	} else if (rc == BARREL_E_NOTFOUND) {
		return 0;                   /* nothing to drop */
	}
	a->blob = blob;
	refs = delta > 0 ? refs + 1 : refs - 1;
	if (refs == 0) {
		if ((rc = btxn_blob_unlink(txn, blob)))
			return rc;
		return btxn_del(txn, d->t_atts, key, sizeof(key));
	}
	put_le64(val, blob);
	put_le64(val + 8, refs);
	return btxn_put(txn, d->t_atts, key, sizeof(key), val, sizeof(val),
			NULL);
}

/* Decode base64 in pieces of whole quads into w; the text was checked. */
static int b64_stream(struct doc_att_writer *w, const char *s, size_t len)
{
	unsigned char *out = malloc(B64_PIECE / 4 * 3);
	int rc = 0;

	if (!out)
		return -ENOMEM;
	for (size_t off = 0; off < len && !rc; off += B64_PIECE) {
		size_t n = len - off < B64_PIECE ? len - off : B64_PIECE;
		int k = EVP_DecodeBlock(out, (const unsigned char *)s + off,
					(int)n);

		if (k < 0) {
			rc = BARREL_E_INVALID;
			break;
		}
		if (off + n == len)     /* padding decodes to zero bytes */
			k -= (n >= 1 && s[len - 1] == '=') +
			     (n >= 2 && s[len - 2] == '=');
		rc = doc_att_write(w, out, (size_t)k);
	}
	free(out);
	return rc;
}

static bool b64_valid(const char *s, size_t len)
{
	size_t pad = 0;

	if (len % 4)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '=' && i >= len - 2)
			pad++;
		else if (pad || !b64_char(s[i]))
			return false;
	}
	return true;
}

int docdb_att_from_base64(struct docdb *d, const char *b64, size_t len,
			  struct doc_att *a)
{
	struct doc_att_writer *w;
	int rc;

	if (!b64_valid(b64, len))
		return BARREL_E_INVALID;
	if ((rc = docdb_att_create(d, &w)))
		return rc;
	if ((rc = b64_stream(w, b64, len))) {
		doc_att_abort(w);
		return rc;
	}
	return doc_att_finish(w, a);
}
