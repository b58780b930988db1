#!/bin/bash
# Proves barrelctl's document commands: byte-exact put/get, revisions, conflicts, deletions, log, diff, changes, attachments, export/import round trips, per-file import errors and usage exits.
set -eu

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }

ctl=
for c in "${abs_top_builddir:-}/barrelctl" ./barrelctl; do
	[ -x "$c" ] && { ctl=$c; break; }
done
[ -n "$ctl" ] || skip "barrelctl is not built"
command -v jq >/dev/null 2>&1 || skip "no jq"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_docs.XXXXXX") || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
dd="$tmp/data"
mkdir "$dd"

# Run barrelctl on $dd; $tmp/out and $tmp/err hold what it printed, $rc
# its exit status (set -e does not stop on a failing run).
run() {
	rc=0
	"$ctl" -d "$dd" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
}

# expect RC WHAT: the last run exited with RC; else show what it said.
expect() {
	if [ "$rc" -ne "$1" ]; then
		echo "--- stdout:" >&2; head -c 2000 "$tmp/out" >&2
		echo "--- stderr:" >&2; head -c 2000 "$tmp/err" >&2
		fail "$2: exit $rc, expected $1"
	fi
}

# err_has WORD WHAT: the last run's stderr mentions WORD.
err_has() {
	grep -qi -- "$1" "$tmp/err" ||
		fail "$2: stderr does not say '$1': $(cat "$tmp/err")"
}

revpat='^[1-9][0-9]*-[0-9a-f]{32}$'

# 1. put then get: the very bytes, and a generation-1 revision.
printf '{"name": "ada",\n  "n": 1, "list": [1, 2.5, "\\u00e9"] }\n' \
	>"$tmp/v1.json"
run put db1 doc1 "$tmp/v1.json"
expect 0 "put doc1"
rev1=$(cat "$tmp/out")
echo "$rev1" | grep -Eq '^1-[0-9a-f]{32}$' ||
	fail "put doc1: '$rev1' is not a generation-1 revision"
run get db1 doc1
expect 0 "get doc1"
cmp -s "$tmp/out" "$tmp/v1.json" ||
	fail "get doc1: the body read is not the body written"
run get db1 doc1 --meta
expect 0 "get doc1 --meta"
[ "$(jq -r ._rev "$tmp/out")" = "$rev1" ] ||
	fail "get --meta: _rev is not $rev1: $(cat "$tmp/out")"
[ "$(jq -r ._id "$tmp/out")" = doc1 ] || fail "get --meta: _id is not doc1"

# 2. An update from standard input: generation 2 on the winner.
printf '{"name": "ada",\n  "n": 2, "list": [1, 2.5, "\\u00e9"] }\n' \
	>"$tmp/v2.json"
rc=0
"$ctl" -d "$dd" put db1 doc1 - <"$tmp/v2.json" >"$tmp/out" 2>"$tmp/err" ||
	rc=$?
expect 0 "put doc1 from stdin"
rev2=$(cat "$tmp/out")
echo "$rev2" | grep -Eq "$revpat" || fail "put: '$rev2' is not a revision"
[ "${rev2%%-*}" = 2 ] || fail "update: generation of $rev2 is not 2"

# 3. A stale --rev is a conflict: exit 1, said so, nothing written.
run put db1 doc1 "$tmp/v1.json" --rev "$rev1"
expect 1 "put --rev stale"
err_has conflict "put --rev stale"
run get db1 doc1 --meta
[ "$(jq -r ._rev "$tmp/out")" = "$rev2" ] ||
	fail "a conflicting put changed the winner"

# 4. diff shows the changed member as - and + lines.
run diff db1 doc1 "$rev1" "$rev2"
expect 0 "diff"
grep -q '^-.*"n": 1' "$tmp/out" || fail "diff: no '-' line: $(cat "$tmp/out")"
grep -q '^+.*"n": 2' "$tmp/out" || fail "diff: no '+' line: $(cat "$tmp/out")"
grep -q "^--- a/doc1@$rev1" "$tmp/out" || fail "diff: no a/doc1@REV1 label"
run diff db1 doc1 "$rev1" "$rev2" --pretty
expect 0 "diff --pretty"
grep -q '^+  "n": 2' "$tmp/out" || fail "diff --pretty: no '+' line"

# 5. rm writes a deletion; get then fails saying so; log shows 3.
run rm db1 doc1
expect 0 "rm doc1"
rev3=$(cat "$tmp/out")
[ "${rev3%%-*}" = 3 ] || fail "rm: '$rev3' is not generation 3"
run get db1 doc1
expect 1 "get a deleted document"
err_has deleted "get a deleted document"
run get db1 doc1 --rev "$rev1"
expect 0 "get --rev of an old revision"
cmp -s "$tmp/out" "$tmp/v1.json" || fail "get --rev: not the old body"
run log db1 doc1
expect 0 "log"
[ "$(grep -c '^revision ' "$tmp/out")" -eq 3 ] ||
	fail "log: not 3 revisions: $(cat "$tmp/out")"
grep -q "^revision $rev3 (winner, deleted)" "$tmp/out" ||
	fail "log: the deletion is not first, marked: $(cat "$tmp/out")"
grep -q '^Date: ' "$tmp/out" || fail "log: no Date: line"
run log db1 doc1 --oneline
[ "$(wc -l <"$tmp/out")" -eq 3 ] || fail "log --oneline: not 3 lines"
# barrelctl gc collects every segment, moving the retained records that
# hold the old revisions; they still read back, and check finds no damage.
run gc -b db1
expect 0 "gc of a document database"
grep -q 'freed [1-9]' "$tmp/out" || fail "gc freed nothing: $(cat "$tmp/out")"
run get db1 doc1 --rev "$rev1"
expect 0 "get --rev after gc"
cmp -s "$tmp/out" "$tmp/v1.json" || fail "get --rev after gc: not the old body"
run check -b db1
expect 0 "check after gc"

# 6. changes: JSON lines, increasing seq, the deletion flagged.
run put db1 doc2 "$tmp/v1.json"
expect 0 "put doc2"
run changes db1
expect 0 "changes"
jq -e . "$tmp/out" >/dev/null || fail "changes: not JSON lines"
jq -c 'select(has("seq"))' "$tmp/out" >"$tmp/feed"
[ "$(wc -l <"$tmp/feed")" -eq 2 ] || fail "changes: not 2 rows"
jq -s -e '[.[].seq] | . == sort and (. | unique | length) == length' \
	"$tmp/feed" >/dev/null || fail "changes: seq does not increase"
# (jq -s: jq 1.6's -e misjudges a last input that yields nothing)
jq -s -e --arg rev "$rev3" 'map(select(.id == "doc1")) | length == 1 and
	.[0].deleted == true and .[0].changes[0].rev == $rev' "$tmp/feed" \
	>/dev/null || fail "changes: doc1 is not flagged deleted at $rev3"
jq -s -e 'map(select(.id == "doc2")) | length == 1 and
	(.[0] | has("deleted") | not)' "$tmp/feed" >/dev/null ||
	fail "changes: doc2 is not there, or flagged deleted"
run changes db1 --include-docs --since 3 --limit 1
expect 0 "changes --include-docs"
jq -s -e 'map(select(has("seq"))) | length == 1 and
	.[0].doc._id == "doc2"' "$tmp/out" >/dev/null ||
	fail "changes --include-docs --since 3 --limit 1: not doc2 alone"

# 7. A 3 MiB attachment, streamed in and out, and the others kept.
head -c 3145728 /dev/urandom >"$tmp/big.bin"
printf 'small\n' >"$tmp/small.txt"
run put db1 doc2 "$tmp/v2.json" --attach "big.bin=$tmp/big.bin" \
	--attach "notes/s.txt=$tmp/small.txt:text/plain"
expect 0 "put --attach"
run put db1 doc2 "$tmp/v1.json"
expect 0 "put doc2 without naming its attachments"
run get db1 doc2 --attachment big.bin
expect 0 "get --attachment big.bin"
cmp -s "$tmp/out" "$tmp/big.bin" || fail "attachment big.bin differs"
run get db1 doc2 --meta
[ "$(jq -r '._attachments["notes/s.txt"].content_type' "$tmp/out")" = \
	text/plain ] || fail "attachment notes/s.txt lost or retyped"

# 8. export dir, import into a new database: every body byte for byte.
printf '{"views": {}}' >"$tmp/ddoc.json"
run put db1 _design/app "$tmp/ddoc.json"
expect 0 "put _design/app"
for id in a/b .dot x.json x 'sp ace'; do
	printf '{"id": "%s"}\n' "$id" >"$tmp/odd.json"
	run put db1 "$id" "$tmp/odd.json"
	expect 0 "put '$id'"
done
run export db1 "$tmp/exp"
expect 0 "export --format dir"
[ -f "$tmp/exp/_design/app.json" ] || fail "export: no _design/app.json"
[ -f "$tmp/exp/a%2Fb.json" ] || fail "export: '/' in an id not escaped"
[ -f "$tmp/exp/%2Edot.json" ] || fail "export: leading '.' not escaped"
cmp -s "$tmp/exp/doc2/big.bin" "$tmp/big.bin" ||
	fail "export: attachment file differs"
run import db2 "$tmp/exp"
expect 0 "import a directory"
n=0
for id in doc2 _design/app a/b .dot x.json x 'sp ace'; do
	"$ctl" -d "$dd" get db1 "$id" >"$tmp/b1" || fail "get db1 '$id'"
	"$ctl" -d "$dd" get db2 "$id" >"$tmp/b2" || fail "get db2 '$id'"
	cmp -s "$tmp/b1" "$tmp/b2" || fail "import: body of '$id' differs"
	n=$((n + 1))
done
[ $n -eq 7 ] || fail "compared $n bodies, not 7"
run get db2 doc2 --attachment big.bin
cmp -s "$tmp/out" "$tmp/big.bin" || fail "import: attachment differs"
run get db2 doc1
expect 1 "get a document deleted before the export"

# 9. alldocs: valid _all_docs JSON; imported, the same documents.
run export db1 --format alldocs --attachments "$tmp/all.json"
expect 0 "export --format alldocs"
jq -e '.total_rows == (.rows | length) and .offset == 0 and
	(.rows | length) == 7 and
	all(.rows[]; .id == .key and .doc._id == .id and
	    .doc._rev == .value.rev)' "$tmp/all.json" >/dev/null ||
	fail "alldocs export is not _all_docs JSON of 7 rows"
run import db3 "$tmp/all.json"
expect 0 "import alldocs"
run export db3 --format alldocs -
expect 0 "export db3 to stdout"
jq -e '.total_rows == 7' "$tmp/out" >/dev/null ||
	fail "alldocs export of db3 is not _all_docs JSON of 7 rows"
jq -S '.rows' "$tmp/all.json" >"$tmp/rows1"
"$ctl" -d "$dd" export db3 --format alldocs --attachments - |
	jq -S '.rows' >"$tmp/rows3" || fail "export db3 --attachments"
cmp -s "$tmp/rows1" "$tmp/rows3" ||
	fail "import alldocs: documents differ: $(diff "$tmp/rows1" "$tmp/rows3" | head -20)"
run get db3 doc2 --attachment big.bin
cmp -s "$tmp/out" "$tmp/big.bin" || fail "alldocs import: attachment differs"

# 10. A bad file is named and fails the import; the others still import.
mkdir "$tmp/bad"
printf '{"ok": 1}' >"$tmp/bad/good.json"
printf '{"ok": ' >"$tmp/bad/broken.json"
printf '{"ok": 2}' >"$tmp/bad/fine.json"
run import db4 "$tmp/bad"
expect 1 "import with a bad JSON file"
err_has broken.json "import with a bad JSON file"
for id in good fine; do
	run get db4 "$id"
	expect 0 "get '$id' imported beside a bad file"
done
run get db4 broken
expect 1 "get the document of the bad file"

# 11. Bad usage exits 2, with the reason on stderr.
for cmd in put get rm log diff changes export import; do
	run "$cmd" --help
	expect 0 "$cmd --help"
	grep -q "usage: barrelctl $cmd" "$tmp/out" || fail "$cmd --help: no usage"
	run "$cmd" --no-such-option
	expect 2 "$cmd --no-such-option"
	run "$cmd"
	expect 2 "$cmd without operands"
	err_has missing "$cmd without operands"
done
run get db1 doc2 extra
expect 2 "get with an extra operand"
run put db1 doc1 "$tmp/v1.json" --rev not-a-rev
expect 2 "put --rev not-a-rev"
run get Bad-Name doc1
expect 2 "get from a bad database name"
run changes db1 --limit zero
expect 2 "changes --limit zero"
run export db1 --format xml "$tmp/x"
expect 2 "export --format xml"
run get nosuchdb doc1
expect 1 "get from a missing database"
exit 0
