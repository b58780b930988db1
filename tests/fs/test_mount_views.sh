#!/bin/bash
# Proves DB/.views/ (DESIGN.md "The mount (fs/)": "Names in a database
# directory", "What the virtual files hold"): one directory per design
# document with views and per view, one KEY.json per distinct key in
# collation order with CouchDB's view response, .all.json, .reduce.json,
# .group.json and .status.json; reads see every write made before them;
# editing and removing documents and design documents moves rows; a view
# that does not compile is empty and broken in its status; everything is
# read-only (EACCES, as .rev); a remount shows the same.
# shellcheck disable=SC2010 # ls | grep: the test is of readdir itself
set -u
. "$(dirname "$0")/lib.sh"
fs_init test_mount_views

fs_start

db=$mnt/vw
V=$mnt/vw/.views/app

# put NAME JSON: write a document file through the mount.
put() { printf '%s\n' "$2" >"$db/$1.json"; }

# The design document: a map-only view, a view with _sum whose keys are
# numbers, strings (one with a '/', one that reads as JSON) and arrays,
# and a view whose map does not compile.
ddoc_v1='{"views": {
 "by_type": {"map": "function (doc) { if (doc.type) emit(doc.type, doc.n); }"},
 "mixed": {"map": "function (doc) { if (!doc.n) return; emit(doc.n, doc.n); emit([doc.type, doc.n], 1); emit(\"a/b\", 1); emit(\"42\", doc.n); }",
           "reduce": "_sum"},
 "broken": {"map": "function (doc) { emit(doc.n "}}}'

# The documents and the design document, all written through the mount.
t_setup() {
	mkdir "$db"
	put apple '{"type": "fruit", "n": 1}'
	put kale '{"type": "leaf", "n": 2}'
	put pear '{"type": "fruit", "n": 3}'
	put note '{"text": "no type, no n"}'
	printf '%s\n' "$ddoc_v1" >"$db/_design/app.json"
	ls -a "$db" | grep -qFx .views || die "ls -a DB does not list .views"
	[ -d "$db/.views" ] || die ".views is not a directory"
}
run_case t_setup "documents and a design document written as files"

# ls .views lists the design document; ls .views/app lists its views.
t_dirs() {
	[ "$(ls "$db/.views")" = app ] || die "ls .views: $(ls "$db/.views")"
	[ "$(ls "$V" | tr '\n' ' ')" = "broken by_type mixed " ] ||
		die "ls .views/app: $(ls "$V" | tr '\n' ' ')"
	[ "$(ls -a "$V/by_type" | grep '^\.[a-z]' | tr '\n' ' ')" = \
		".all.json .status.json " ] ||
		die "by_type's files: $(ls -a "$V/by_type" | tr '\n' ' ')"
	[ "$(ls -a "$V/mixed" | grep '^\.[a-z]' | tr '\n' ' ')" = \
		".all.json .group.json .reduce.json .status.json " ] ||
		die "mixed's files: $(ls -a "$V/mixed" | tr '\n' ' ')"
	expect_errno ENOENT "no view nope" ls "$V/nope"
	expect_errno ENOENT "no design document nope" ls "$db/.views/nope"
}
run_case t_dirs "one directory per design document and per view"

# readdir lists one KEY.json per distinct key in collation order: numbers,
# then strings ("42" quoted since it reads as JSON, a/b escaped), then
# arrays.
t_keys() {
	ls -U "$V/mixed" | grep -v '^\.' >"$work/keys"
	cat >"$work/keys.want" <<-'EOF'
	1.json
	2.json
	3.json
	"42".json
	a%2Fb.json
	["fruit",1].json
	["fruit",3].json
	["leaf",2].json
	EOF
	diff "$work/keys.want" "$work/keys" >&2 || die "the keys of mixed"
	[ "$(ls "$V/by_type" | tr '\n' ' ')" = "fruit.json leaf.json " ] ||
		die "by_type: $(ls "$V/by_type" | tr '\n' ' ')"
}
run_case t_keys "ls lists each key once, in collation order"

# KEY.json is CouchDB's view response for that key, one row per line.
t_key_file() {
	f=$V/by_type/fruit.json
	jq -e '.total_rows == 3 and .offset == 0 and
		([.rows[].id] == ["apple", "pear"]) and
		([.rows[].value] == [1, 3]) and
		(.rows | all(.key == "fruit"))' "$f" >/dev/null ||
		die "fruit.json: $(cat "$f")"
	jq -e '.offset == 2 and .rows == [{"id": "kale", "key": "leaf",
		"value": 2}]' "$V/by_type/leaf.json" >/dev/null ||
		die "leaf.json: $(cat "$V/by_type/leaf.json")"
	[ "$(grep -c '"id":' "$f")" -eq 2 ] || die "not one row per line: $(cat "$f")"
	grep -qx '{"id":"pear","key":"fruit","value":3}' "$f" ||
		die "no line for pear: $(cat "$f")"
	jq -e '.rows[0].key == "a/b" and (.rows | length) == 3' \
		"$V/mixed/a%2Fb.json" >/dev/null || die "a%2Fb.json"
	jq -e '.rows[0].key == "42" and .offset == 3' "$V/mixed/\"42\".json" \
		>/dev/null || die "\"42\".json: $(cat "$V/mixed/\"42\".json")"
	jq -e '.rows == [{"id": "pear", "key": ["fruit", 3], "value": 1}]' \
		"$V/mixed/[\"fruit\",3].json" >/dev/null || die "[\"fruit\",3].json"
	[ "$(stat -c %s "$f")" -eq "$(wc -c <"$f")" ] || die "stat size of fruit.json"
}
run_case t_key_file "KEY.json holds that key's rows, one per line"

# A name is looked up by collation: 1.0.json is key 1; a key with no rows
# is ENOENT.
t_lookup() {
	cmp "$V/mixed/1.0.json" "$V/mixed/1.json" || die "1.0.json is not 1.json"
	jq -e '.rows[0].id == "apple"' "$V/mixed/1.0.json" >/dev/null || die "1.0"
	expect_errno ENOENT "cat 7.json" cat "$V/mixed/7.json"
	expect_errno ENOENT "cat veg.json" cat "$V/by_type/veg.json"
	expect_errno ENOENT "cat .reduce.json of a map-only view" \
		cat "$V/by_type/.reduce.json"
}
run_case t_lookup "lookups by collation; missing keys are ENOENT"

# .all.json is the whole view; .reduce.json and .group.json reduce it.
t_all() {
	[ "$(jq -r '.rows[].id' "$V/by_type/.all.json" | tr '\n' ' ')" = \
		"apple pear kale " ] || die ".all.json ids: $(cat "$V/by_type/.all.json")"
	jq -e '.total_rows == 12 and .offset == 0 and (.rows | length) == 12' \
		"$V/mixed/.all.json" >/dev/null || die "mixed/.all.json"
	[ "$(jq '[.rows[] | .value] | add' "$V/by_type/.all.json")" -eq 6 ] ||
		die "the values of by_type"
	[ "$(jq '.rows[0].value' "$V/mixed/.reduce.json")" -eq 18 ] ||
		die ".reduce.json: $(cat "$V/mixed/.reduce.json")"
	jq -e '.rows[0].key == null and (.rows | length) == 1' \
		"$V/mixed/.reduce.json" >/dev/null || die ".reduce.json key"
	jq -e '(.rows | length) == 8 and .rows[3] == {"key": "42", "value": 6}' \
		"$V/mixed/.group.json" >/dev/null ||
		die ".group.json: $(cat "$V/mixed/.group.json")"
	for f in "$V/mixed/.all.json" "$V/mixed/.group.json"; do
		[ "$(stat -c %s "$f")" -eq "$(wc -c <"$f")" ] || die "stat size of $f"
	done
}
run_case t_all ".all.json, .reduce.json and .group.json"

# .status.json: the index's state, caught up after the reads above.
t_status() {
	jq -e '(.signature | length) == 32 and .broken == false and
		.pending == 0 and .update_seq == .db_seq and .total_rows == 3 and
		.errors == 0 and .last_error == null and (.mapped >= 4)' \
		"$V/by_type/.status.json" >/dev/null ||
		die "by_type/.status.json: $(cat "$V/by_type/.status.json")"
}
run_case t_status ".status.json shows the index's state"

# A map that does not compile: the directory is there, empty, and its
# status says broken with the message.
t_broken() {
	[ -d "$V/broken" ] || die "no directory broken"
	[ -z "$(ls "$V/broken")" ] || die "broken lists $(ls "$V/broken")"
	jq -e '.broken == true and (.last_error | test("SyntaxError"))' \
		"$V/broken/.status.json" >/dev/null ||
		die "broken/.status.json: $(cat "$V/broken/.status.json")"
	jq -e '.total_rows == 0 and .rows == []' "$V/broken/.all.json" \
		>/dev/null || die "broken/.all.json: $(cat "$V/broken/.all.json")"
}
run_case t_broken "a view that does not compile is empty and broken"

# A read sees the writes made before it: an edit moves a document to its
# new key, a removal drops its rows (no wait: reads wait for the index).
t_edits() {
	put kale '{"type": "fruit", "n": 2}'
	[ "$(ls "$V/by_type")" = fruit.json ] || die "by_type: $(ls "$V/by_type")"
	[ ! -e "$V/by_type/leaf.json" ] || die "leaf.json is still there"
	[ "$(jq -r '.rows[].id' "$V/by_type/fruit.json" | tr '\n' ' ')" = \
		"apple kale pear " ] || die "fruit.json: $(cat "$V/by_type/fruit.json")"
	rm "$db/pear.json"
	[ "$(jq -r '.rows[].id' "$V/by_type/fruit.json" | tr '\n' ' ')" = \
		"apple kale " ] || die "pear still in fruit.json"
	! ls "$V/mixed" | grep -qFx 3.json || die "3.json is still listed"
	[ "$(jq '.rows[0].value' "$V/mixed/.reduce.json")" -eq 10 ] ||
		die ".reduce.json after rm: $(cat "$V/mixed/.reduce.json")"
}
run_case t_edits "edits move rows between keys, removals drop them"

# Editing the design document: a changed map gives other rows, a view
# removed goes away, a design document with views appears in .views.
t_ddoc_edit() {
	jq '.views.by_type.map = "function (doc) { if (doc.type) emit(doc.type.toUpperCase(), null); }" |
		del(.views.mixed)' "$db/_design/app.json" >"$work/app2.json"
	cp "$work/app2.json" "$db/_design/app.json"
	[ "$(ls "$V/by_type")" = FRUIT.json ] || die "by_type: $(ls "$V/by_type")"
	jq -e '.rows | map(.value) == [null, null]' "$V/by_type/FRUIT.json" \
		>/dev/null || die "FRUIT.json: $(cat "$V/by_type/FRUIT.json")"
	[ ! -e "$V/mixed" ] || die "mixed is still there"
	[ "$(ls "$V" | tr '\n' ' ')" = "broken by_type " ] || die "ls app: $(ls "$V")"
	printf '{"views": {"n": {"map": "function (doc) { emit(doc._id, 1); }"}}}\n' \
		>"$db/_design/two.json"
	printf '{"language": "javascript"}\n' >"$db/_design/none.json"
	[ "$(ls "$db/.views" | tr '\n' ' ')" = "app two " ] ||
		die "ls .views: $(ls "$db/.views")"
	jq -e '.total_rows == 3' "$db/.views/two/n/.all.json" >/dev/null ||
		die "two/n: $(cat "$db/.views/two/n/.all.json")"
	rm "$db/_design/two.json"
	[ "$(ls "$db/.views")" = app ] || die "two is still listed"
	expect_errno ENOENT "ls .views/two" ls "$db/.views/two"
}
run_case t_ddoc_edit "design document edits change views and rows"

# Nothing under .views can be written, made, removed or renamed: EACCES,
# as in .rev.
t_readonly() {
	f=$V/by_type/FRUIT.json
	expect_errno EACCES "write a key file" sh -c 'echo x >"$1"' sh "$f"
	expect_errno EACCES "write .all.json" sh -c 'echo x >>"$1"' sh \
		"$V/by_type/.all.json"
	expect_errno EACCES "create a key file" create "$V/by_type/new.json"
	expect_errno EACCES "mkdir in a view" mkdir "$V/by_type/d"
	expect_errno EACCES "mkdir in .views" mkdir "$db/.views/d"
	expect_errno EACCES "rm a key file" rm -f "$f"
	expect_errno EACCES "mv a key file" mv "$f" "$V/by_type/b.json"
	expect_errno EACCES "rmdir a view" rmdir "$V/broken"
	expect_errno EACCES "rmdir .views" rmdir "$db/.views"
	expect_errno EACCES "chmod a key file" chmod 600 "$f"
	expect_errno EACCES "truncate a key file" truncate -s 0 "$f"
	[ "$(stat -c %a "$f")" = 444 ] || die "mode of a key file: $(stat -c %a "$f")"
	[ "$(stat -c %a "$V/by_type")" = 555 ] || die "mode of a view directory"
	jq -e '.rows | length == 2' "$f" >/dev/null || die "FRUIT.json changed"
}
run_case t_readonly "everything under .views is read-only (EACCES)"

ls -U "$V/by_type" >"$work/before" 2>&1
cat "$V/by_type/FRUIT.json" >"$work/fruit.before" 2>&1

run_step fs_remount "a clean unmount and a new mount"

# After a remount the views show the same.
t_after_remount() {
	ls -U "$V/by_type" | diff "$work/before" - >&2 || die "the listing differs"
	cmp "$V/by_type/FRUIT.json" "$work/fruit.before" || die "FRUIT.json differs"
	jq -e '.broken == true' "$V/broken/.status.json" >/dev/null ||
		die "broken is not broken any more"
	[ "$(ls "$db/.views")" = app ] || die "ls .views: $(ls "$db/.views")"
}
run_case t_after_remount "a remount shows the same views"

run_step fs_unmount "a clean unmount: barrelfs exits 0"

fs_done
