/*
 * View collation: CouchDB's order of JSON values, as a comparator and as
 * byte strings that sort the same way under memcmp (for the B-tree).
 *
 * The order (CouchDB "Views Collation"):
 *   null < false < true < numbers < strings < arrays < objects
 *  - numbers by value, compared as IEEE doubles (what JavaScript emits;
 *    json-c integers are converted, so integers past 2^53 may tie);
 *    -0 == 0; NaN (json-c accepts it, JSON has none) sorts after +Inf;
 *  - strings by the Unicode Collation Algorithm: ICU's root locale at its
 *    default strength (tertiary), as CouchDB does ("a" < "A" < "aa" <
 *    "b"). Strings the collator calls equal are equal here too (same
 *    sort key), though their bytes differ. Invalid UTF-8 is read with
 *    U+FFFD in place of the bad bytes;
 *  - arrays element by element, a proper prefix first;
 *  - objects member by member in their stored order: name (collated as a
 *    string), then value; a proper prefix first.
 *
 * Encoding (collate_key_append): one tag byte per value, then
 *   null 0x10 | false 0x20 | true 0x30
 *   number 0x40 + 8 bytes: the big-endian IEEE double with the sign bit
 *                flipped (positive) or all bits flipped (negative)
 *   string 0x50 + ICU sort key (ucol_getSortKey), which ends in its only
 *                0x00 byte
 *   array  0x60 + each element + 0x00
 *   object 0x70 + (string-encoded name, value) per member + 0x00
 * Every value's encoding is self-delimiting and no encoding is a proper
 * prefix of another, so memcmp of two encodings (shorter first on a tie)
 * is the collation order, and encodings can be concatenated.
 *
 * Index keys: an entry of a view index is [key, docid]:
 *   collate_key(key) || docid bytes
 * which sorts by key, then by doc id as raw bytes (CouchDB collates the
 * doc id with ICU too; raw bytes are a deliberate simplification).
 * collate_index_split() recovers the doc id. ICU sort keys cannot be
 * turned back into strings: the index stores the key's JSON text in the
 * entry's value and uses the encoding only to order. Since doc ids are
 * UTF-8 (never byte 0xFF), key || 0xFF is above every entry of key: the
 * bound for an inclusive endkey.
 *
 * Sort keys depend on ICU's collation data: an index records
 * collate_version() and is rebuilt when it changes.
 *
 * Threads: the root collator is opened once (lazily, or by
 * collate_init()); each thread uses its own ucol_clone() of it, made on
 * first use and closed when the thread exits, so calls from any number
 * of threads never contend. collate_shutdown() closes the root and the
 * calling thread's clone; call it at exit once no other thread collates
 * (a later call reopens).
 *
 * Errors: 0 or -ENOMEM, BARREL_E_INVALID (a json-c type we cannot order),
 * BARREL_E_CORRUPT (collate_index_split on bytes that are no encoding),
 * or an ICU failure as BARREL_E_INVALID. Allocation goes through malloc.
 */
#ifndef BARREL_COLLATE_H
#define BARREL_COLLATE_H

#include <stddef.h>
#include <stdint.h>

struct json_object;

/* Tags of the encoding (above); COLLATE_END closes arrays and objects. */
enum collate_tag {
	COLLATE_END = 0x00,
	COLLATE_NULL = 0x10,
	COLLATE_FALSE = 0x20,
	COLLATE_TRUE = 0x30,
	COLLATE_NUMBER = 0x40,
	COLLATE_STRING = 0x50,
	COLLATE_ARRAY = 0x60,
	COLLATE_OBJECT = 0x70,
};

/* A growable byte string an encoding is built in; owns data. */
struct collate_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

/* Open the root collator now (optional: first use does it). */
int collate_init(void);

/* Close the root collator and this thread's clone (see the top). */
void collate_shutdown(void);

/* "icu-<ICU version>/uca-<UCA version>/col-<collator version>", static. */
const char *collate_version(void);

/*
 * CouchDB's order of a and b (NULL is JSON null): <0, 0 or >0. Equals
 * the memcmp order of their encodings. On an ICU failure the strings
 * compare by their UTF-8 bytes.
 */
int collate_cmp(struct json_object *a, struct json_object *b);

/* Order of two encodings: memcmp, then the shorter first. */
int collate_bytes_cmp(const uint8_t *a, size_t alen, const uint8_t *b,
		      size_t blen);

void collate_buf_init(struct collate_buf *b);
void collate_buf_release(struct collate_buf *b);   /* frees data */

/* Append the encoding of v (NULL is JSON null) to b. On error b keeps
 * its length from before the call. */
int collate_key_append(struct collate_buf *b, struct json_object *v);

/* b := encoding of key, then the docid bytes (an index entry's key). */
int collate_index_key(struct collate_buf *b, struct json_object *key,
		      const char *docid, size_t idlen);

/*
 * Length of the one encoded value at p[0..len): *vlen. BARREL_E_CORRUPT
 * when p does not start with a whole encoding (bad tag, truncated,
 * nesting deeper than COLLATE_MAX_DEPTH).
 */
#define COLLATE_MAX_DEPTH 512u
int collate_key_len(const uint8_t *p, size_t len, size_t *vlen);

/*
 * Split an index key made by collate_index_key(): *keylen bytes of
 * encoded key, then the doc id at *docid (borrowed from p, *idlen bytes,
 * not NUL-terminated). BARREL_E_CORRUPT as collate_key_len().
 */
int collate_index_split(const uint8_t *p, size_t len, size_t *keylen,
			const uint8_t **docid, size_t *idlen);

#endif
