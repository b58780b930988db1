#!/bin/bash
# Proves the mount's layout (PRODUCT.md "The mount", DESIGN.md "The mount
# (fs/)"): .status, databases made and removed with mkdir/rmdir, ID.json
# documents byte for byte with their xattrs, escaped ids and _design/,
# attachment folders, .rev/ID/ history with diffs, .changes and tail -f,
# invalid JSON refused and kept, rm and restore, a read-only .rev, ls/stat
# sanity, everything again after a remount, and a DATADIR that barrelctl
# reads the same after the unmount.
# shellcheck disable=SC2010 # ls | grep: the test is of readdir itself
set -u
. "$(dirname "$0")/lib.sh"
fs_init test_mount_layout

# Written with barrelctl before the mount: ids that need the codec.
pre_ok=
if [ -n "$ctl" ]; then
	printf '{"id": "a/b"}\n' >"$work/ab.json"
	printf '{"id": ".dot"}\n' >"$work/dot.json"
	printf '{"id": "x.json"}\n' >"$work/xjson.json"
	printf '{"views": {}}' >"$work/ddoc.json"
	"$ctl" -d "$data" put pre 'a/b' "$work/ab.json" >/dev/null &&
	"$ctl" -d "$data" put pre '.dot' "$work/dot.json" >/dev/null &&
	"$ctl" -d "$data" put pre 'x.json' "$work/xjson.json" >/dev/null &&
	"$ctl" -d "$data" put pre _design/app "$work/ddoc.json" >/dev/null &&
	pre_ok=1
	[ -n "$pre_ok" ] || error_all "barrelctl put failed before mounting"
fi

fs_start

# Odd spacing, a tab, an escape and UTF-8: the bytes must come back as is.
printf '{ "a" : 1,\n\t"s": "\\u00e9 \303\251",\n  "n": 1 }\n' >"$work/v1.json"
printf '{ "a" : 1,\n\t"s": "\\u00e9 \303\251",\n  "n": 2 }\n' >"$work/v2.json"

# .status is JSON with the version and the list of databases.
t_status() {
	jq -e 'has("version") and (.databases | type == "array")' \
		"$mnt/.status" >/dev/null || die ".status: $(head -c 300 "$mnt/.status")"
	[ -f "$mnt/.status" ] || die ".status is not a regular file"
}
run_case t_status ".status is JSON with version and databases"

# mkdir of a valid name creates a database that ls and .status list.
t_mkdir() {
	mkdir "$mnt/db1"
	[ -d "$mnt/db1" ] || die "db1 is not a directory"
	ls "$mnt" | grep -qx db1 || die "ls does not list db1"
	jq -e '.databases | map(.name) | index("db1") != null' \
		"$mnt/.status" >/dev/null || die ".status does not list db1"
	mkdir "$mnt/b0_\$()+-"
	[ -d "$mnt/b0_\$()+-" ] || die "b0_\$()+- was not created"
}
run_case t_mkdir "mkdir creates a database"

# mkdir of a bad name is EINVAL, of an existing database EEXIST; root takes
# no plain files.
t_mkdir_bad() {
	expect_errno EINVAL "mkdir BadName" mkdir "$mnt/BadName"
	expect_errno EINVAL "mkdir 9lives" mkdir "$mnt/9lives"
	expect_errno EEXIST "mkdir db1 again" mkdir "$mnt/db1"
	[ ! -e "$mnt/BadName" ] || die "BadName exists after a failed mkdir"
	expect_fail "a plain file at the root" create "$mnt/plain"
}
run_case t_mkdir_bad "bad and existing database names are refused"

# rmdir removes an empty database; one with a document is ENOTEMPTY.
t_rmdir() {
	mkdir "$mnt/gone"
	rmdir "$mnt/gone"
	[ ! -e "$mnt/gone" ] || die "gone still exists"
	jq -e '.databases | map(.name) | index("gone") == null' \
		"$mnt/.status" >/dev/null || die ".status still lists gone"
	mkdir "$mnt/full"
	printf '{"k": 1}\n' >"$mnt/full/k.json"
	expect_errno ENOTEMPTY "rmdir full" rmdir "$mnt/full"
	[ -d "$mnt/full" ] || die "full is gone after a failed rmdir"
	cmp -s "$mnt/full/k.json" - <<<'{"k": 1}' || die "full/k.json changed"
}
run_case t_rmdir "rmdir removes an empty database only"

# Writing ID.json makes revision 1; cat returns the very bytes; xattrs.
t_doc() {
	cat "$work/v1.json" >"$mnt/db1/x.json"
	cmp "$mnt/db1/x.json" "$work/v1.json" || die "cat x.json: not the bytes written"
	rev=$(xattr "$mnt/db1/x.json" user.barrel.rev)
	[[ $rev =~ ^1-[0-9a-f]{32}$ ]] || die "user.barrel.rev '$rev' is not 1-<32 hex>"
	seq=$(xattr "$mnt/db1/x.json" user.barrel.seq)
	[[ $seq =~ ^[0-9]+$ ]] || die "user.barrel.seq '$seq' is not decimal"
	conf=$(xattr "$mnt/db1/x.json" user.barrel.conflicts)
	[ "$conf" = "[]" ] || die "user.barrel.conflicts is '$conf', not []"
	[ "$(rev_of db1 x)" = "$rev" ] || die ".changes does not show $rev"
	[ "$(revs db1 x)" = "$rev" ] || die ".rev/x lists '$(revs db1 x)', not $rev"
	[ "$(stat -c %s "$mnt/db1/x.json")" -eq "$(wc -c <"$work/v1.json")" ] ||
		die "stat size of x.json is not its byte count"
}
run_case t_doc "a document: exact bytes, revision 1, seq, no conflicts"

# The xattrs are read-only (EPERM); other names are not supported.
t_xattr_ro() {
	need setfattr attr
	expect_errno EPERM "setfattr user.barrel.rev" \
		setfattr -n user.barrel.rev -v 9-x "$mnt/db1/x.json"
	expect_errno ENOTSUP "setfattr user.other" \
		setfattr -n user.other -v 1 "$mnt/db1/x.json"
	xattr "$mnt/db1/x.json" user.barrel.rev | grep -q '^1-' ||
		die "user.barrel.rev changed"
}
run_case t_xattr_ro "xattrs are read-only"

# An update is revision 2 on 1; .rev keeps both bodies and the diff.
t_update() {
	rev1=$(rev_of db1 x)
	cat "$work/v2.json" >"$mnt/db1/x.json"
	cmp "$mnt/db1/x.json" "$work/v2.json" || die "cat: not the new bytes"
	rev2=$(xattr "$mnt/db1/x.json" user.barrel.rev)
	[ "$(gen "$rev2")" = 2 ] || die "the update is $rev2, not generation 2"
	[ "$(nrevs db1 x)" -eq 2 ] || die ".rev/x: $(revs db1 x | tr '\n' ' ')"
	cmp "$mnt/db1/.rev/x/$rev1.json" "$work/v1.json" || die "$rev1.json differs"
	cmp "$mnt/db1/.rev/x/$rev2.json" "$work/v2.json" || die "$rev2.json differs"
	d=$mnt/db1/.rev/x/$rev2.diff
	grep -q '^-.*"n": 1' "$d" || die "$rev2.diff has no -\"n\": 1 line: $(cat "$d")"
	grep -q '^+.*"n": 2' "$d" || die "$rev2.diff has no +\"n\": 2 line: $(cat "$d")"
	d=$mnt/db1/.rev/x/$rev1.diff
	grep -q '^+.*"n": 1' "$d" || die "$rev1.diff does not add the body: $(cat "$d")"
	! grep -q '^-[^-]' "$d" || die "$rev1.diff removes lines from nothing"
}
run_case t_update "an update: revision 2, .rev/x/ bodies and REV.diff"

# Reads make no revision: cat, cp out, stat, ls.
t_reads() {
	n=$(nrevs db1 x)
	cat "$mnt/db1/x.json" >/dev/null
	cp "$mnt/db1/x.json" "$work/copy.json"
	stat "$mnt/db1/x.json" >/dev/null
	ls -la "$mnt/db1" >/dev/null
	[ "$(nrevs db1 x)" -eq "$n" ] || die "reading made a revision"
	cmp "$work/copy.json" "$work/v2.json" || die "cp out: not the body"
}
run_case t_reads "reading makes no revision"

# .changes: one JSON line per document, at its latest change, seq rising.
t_changes() {
	mkdir "$mnt/feed"
	for id in c1 c2 c3; do printf '{"id": "%s"}\n' $id >"$mnt/feed/$id.json"; done
	printf '{"id": "c1", "v": 2}\n' >"$mnt/feed/c1.json"
	jq -c . "$mnt/feed/.changes" >"$work/feed" || die ".changes is not JSON lines"
	[ "$(wc -l <"$work/feed")" -eq 3 ] || die ".changes: not 3 lines: $(cat "$work/feed")"
	[ "$(jq -r .id "$work/feed" | tr '\n' ' ')" = "c2 c3 c1 " ] ||
		die ".changes is not in seq order c2 c3 c1: $(cat "$work/feed")"
	jq -s -e 'map(.seq) | . == sort and (unique | length) == 3' "$work/feed" \
		>/dev/null || die ".changes: seq does not increase"
	seq=$(xattr "$mnt/feed/c1.json" user.barrel.seq)
	jq -e --arg s "$seq" 'select(.id == "c1") | (.seq | tostring) == $s' \
		"$work/feed" >/dev/null || die ".changes seq of c1 is not user.barrel.seq $seq"
	rev=$(xattr "$mnt/feed/c1.json" user.barrel.rev)
	[ "$(rev_of feed c1)" = "$rev" ] || die ".changes rev of c1 is not $rev"
	! grep -q deleted "$work/feed" || die "a change is marked deleted"
}
run_case t_changes ".changes: one JSON line per document, rising seq"

# tail -f .changes sees a document written after it started.
t_tail() {
	bg timeout 30 tail -n +1 -s 0.2 -f "$mnt/feed/.changes" >"$work/tail" 2>&1
	tailpid=$!
	wait_until 10 grep -q '"c1"' "$work/tail" ||
		die "tail -f did not show the existing lines: $(cat "$work/tail")"
	printf '{"late": true}\n' >"$mnt/feed/late.json"
	wait_until 15 grep -q '"late"' "$work/tail" ||
		die "tail -f did not see the new document: $(cat "$work/tail")"
	kill "$tailpid"
	bg_wait "$tailpid" || true
	grep '"late"' "$work/tail" | jq -e '.id == "late" and has("seq")' >/dev/null ||
		die "the new line is not a change: $(grep '"late"' "$work/tail")"
}
run_case t_tail "tail -f .changes follows new changes" 60

# Attachments: cp attaches, cmp reads back, rm detaches, one revision each.
t_attach() {
	printf '{"doc": "a"}\n' >"$mnt/db1/a.json"
	head -c 200000 /dev/urandom >"$work/pic.png"
	printf 'small\n' >"$work/notes.txt"
	g=$(gen "$(rev_of db1 a)")
	cp "$work/pic.png" "$mnt/db1/a/pic.png"
	cmp "$mnt/db1/a/pic.png" "$work/pic.png" || die "pic.png reads back different"
	[ "$(stat -c %s "$mnt/db1/a/pic.png")" -eq 200000 ] || die "pic.png size"
	[ "$(gen "$(rev_of db1 a)")" -eq $((g + 1)) ] || die "cp made not one revision"
	ls "$mnt/db1" | grep -qx a || die "ls db1 does not list the folder a"
	cp "$work/notes.txt" "$mnt/db1/a/notes.txt"
	[ "$(gen "$(rev_of db1 a)")" -eq $((g + 2)) ] || die "2nd cp: not one revision"
	[ "$(ls "$mnt/db1/a" | tr '\n' ' ')" = "notes.txt pic.png " ] ||
		die "ls a: $(ls "$mnt/db1/a")"
	cp "$work/pic.png" "$mnt/db1/a/notes.txt"
	cmp "$mnt/db1/a/notes.txt" "$work/pic.png" || die "overwritten notes.txt differs"
	[ "$(gen "$(rev_of db1 a)")" -eq $((g + 3)) ] || die "overwrite: not one revision"
	rm "$mnt/db1/a/pic.png"
	[ ! -e "$mnt/db1/a/pic.png" ] || die "pic.png still there after rm"
	[ "$(gen "$(rev_of db1 a)")" -eq $((g + 4)) ] || die "rm: not one revision"
	[ "$(ls "$mnt/db1/a")" = notes.txt ] || die "ls a after rm: $(ls "$mnt/db1/a")"
	cmp -s "$mnt/db1/a.json" - <<<'{"doc": "a"}' || die "the body of a changed"
	cp "$mnt/db1/a/notes.txt" "$work/pic.out"
	cmp "$work/pic.out" "$work/pic.png" || die "cp out of the folder differs"
}
run_case t_attach "attachments: cp, cmp, overwrite, rm; one revision each"

# Escaped ids (a%2Fb.json is a/b) and _design/NAME.json, both ways.
t_escapes() {
	if [ -n "$pre_ok" ]; then
		cmp "$mnt/pre/a%2Fb.json" "$work/ab.json" || die "a%2Fb.json"
		cmp "$mnt/pre/%2Edot.json" "$work/dot.json" || die "%2Edot.json"
		cmp "$mnt/pre/x%2Ejson.json" "$work/xjson.json" || die "x%2Ejson.json"
		cmp "$mnt/pre/_design/app.json" "$work/ddoc.json" || die "_design/app.json"
		[ ! -e "$mnt/pre/.dot.json" ] || die ".dot.json is shown unescaped"
	else
		mkdir "$mnt/pre"
	fi
	printf '{"id": "c/d"}\n' >"$mnt/pre/c%2Fd.json"
	printf '{"views": {"v": {"map": "function (doc) { emit(doc._id); }"}}}\n' \
		>"$mnt/pre/_design/two.json"
	jq -r .id "$mnt/pre/.changes" | sort >"$work/ids"
	grep -qx 'c/d' "$work/ids" || die ".changes has no id c/d: $(cat "$work/ids")"
	grep -qx '_design/two' "$work/ids" || die ".changes has no _design/two"
	! grep -q '%' "$work/ids" || die ".changes shows an encoded id"
	[ -n "$pre_ok" ] || skip "no barrelctl: ids written before the mount not checked"
}
run_case t_escapes "escaped ids and _design documents"

# ls -la and stat: documents are regular files of their size, folders are
# directories, link counts >= 1, the owner is the user who made them.
t_stat() {
	uid=$(id -u)
	ls -la "$mnt" "$mnt/db1" "$mnt/db1/a" >/dev/null
	ls -a "$mnt/db1" | grep -qFx .rev || die "ls -a db1 does not list .rev"
	ls -a "$mnt/db1" | grep -qFx .changes || die "ls -a db1 does not list .changes"
	for f in "$mnt/db1/x.json" "$mnt/db1/a/notes.txt" "$mnt/.status" \
		"$mnt/db1/.changes"; do
		[ "$(stat -c %F "$f")" = "regular file" ] || die "$f: $(stat -c %F "$f")"
	done
	for d in "$mnt" "$mnt/db1" "$mnt/db1/a" "$mnt/db1/.rev" "$mnt/db1/.rev/x"; do
		[ "$(stat -c %F "$d")" = directory ] || die "$d: $(stat -c %F "$d")"
	done
	for f in "$mnt/db1" "$mnt/db1/x.json" "$mnt/db1/a" "$mnt/db1/a/notes.txt"; do
		[ "$(stat -c %h "$f")" -ge 1 ] || die "$f: link count $(stat -c %h "$f")"
		[ "$(stat -c %u "$f")" = "$uid" ] || die "$f: owner $(stat -c %u "$f"), not $uid"
	done
	[ "$(stat -c %s "$mnt/db1/x.json")" -eq "$(wc -c <"$mnt/db1/x.json")" ] ||
		die "x.json: stat size is not the bytes read"
	rev=$(rev_of db1 x)
	[ "$(stat -c %s "$mnt/db1/.rev/x/$rev.json")" -eq \
		"$(wc -c <"$mnt/db1/.rev/x/$rev.json")" ] || die "REV.json: size"
	stat -f "$mnt" >/dev/null || die "statfs fails"
}
run_case t_stat "ls -la and stat: types, sizes, links, owner"

# Invalid JSON or a non-object: the write fails with EINVAL, the body stays,
# the rejected bytes are in ID.json.rejected.
t_invalid() {
	rev=$(rev_of db1 x)
	printf '{bad' >"$work/bad"
	expect_errno EINVAL "dd conv=fsync of {bad" \
		dd if="$work/bad" of="$mnt/db1/x.json" conv=fsync status=none
	cmp "$mnt/db1/x.json" "$work/v2.json" || die "the body changed"
	[ "$(rev_of db1 x)" = "$rev" ] || die "the revision changed"
	cmp "$mnt/db1/x.json.rejected" "$work/bad" || die "x.json.rejected is not {bad"
	printf '[1, 2]\n' >"$work/array"
	expect_errno EINVAL "cp of an array (close fails)" \
		cp "$work/array" "$mnt/db1/x.json"
	cmp "$mnt/db1/x.json" "$work/v2.json" || die "the body changed"
	cmp "$mnt/db1/x.json.rejected" "$work/array" || die "x.json.rejected is not the array"
	[ "$(rev_of db1 x)" = "$rev" ] || die "the revision changed"
	[ "$(nrevs db1 x)" -eq 2 ] || die "a rejected write made a revision"
	expect_errno EINVAL "dd conv=fsync of {bad to a new name" \
		dd if="$work/bad" of="$mnt/db1/nova.json" conv=fsync status=none
	cmp "$mnt/db1/nova.json.rejected" "$work/bad" || die "nova.json.rejected"
	[ -z "$(change_of db1 nova)" ] || die "the rejected new document has a change"
	[ -z "$(change_of db1 x.json.rejected)" ] || die "x.json.rejected is a document"
	rm -f "$mnt/db1/nova.json" "$mnt/db1/nova.json.rejected"
}
run_case t_invalid "invalid JSON fails with EINVAL and is kept as .rejected"

# cp .rev/ID/1-*.json ID.json restores revision 1 as a new revision.
t_restore() {
	cp "$mnt"/db1/.rev/x/1-*.json "$mnt/db1/x.json"
	cmp "$mnt/db1/x.json" "$work/v1.json" || die "x.json is not revision 1's body"
	rev=$(rev_of db1 x)
	[ "$(gen "$rev")" = 3 ] || die "the restore is $rev, not generation 3"
	cmp "$mnt/db1/.rev/x/$rev.json" "$work/v1.json" || die ".rev/x/$rev.json"
}
run_case t_restore "cp .rev/ID/1-*.json ID.json restores"

# rm writes a deletion; .rev keeps the history; cp from .rev recreates.
t_rm() {
	printf '{"r": 1}\n' >"$mnt/db1/r.json"
	r1=$(rev_of db1 r)
	printf '{"r": 2}\n' >"$mnt/db1/r.json"
	rm "$mnt/db1/r.json"
	[ ! -e "$mnt/db1/r.json" ] || die "r.json is still there"
	expect_errno ENOENT "cat a deleted document" cat "$mnt/db1/r.json"
	! ls "$mnt/db1" | grep -qFx r.json || die "ls still lists r.json"
	change_of db1 r | jq -e '.deleted == true' >/dev/null ||
		die ".changes does not mark r deleted: $(change_of db1 r)"
	del=$(rev_of db1 r)
	[ "$(gen "$del")" = 3 ] || die "the deletion is $del, not generation 3"
	revs db1 r | grep -qx "$r1" || die ".rev/r lost $r1: $(revs db1 r)"
	[ "$(nrevs db1 r)" -ge 2 ] || die ".rev/r: $(revs db1 r)"
	cp "$mnt/db1/.rev/r/$r1.json" "$mnt/db1/r.json"
	cmp -s "$mnt/db1/r.json" - <<<'{"r": 1}' || die "restored r.json differs"
	change_of db1 r | jq -e 'has("deleted") | not' >/dev/null ||
		die "r is still deleted: $(change_of db1 r)"
	[ "$(gen "$(rev_of db1 r)")" = 4 ] || die "the restore is not generation 4"
}
run_case t_rm "rm writes a deletion; history stays; cp restores"

# .rev, .changes and .status cannot be written.
t_readonly() {
	rev=$(rev_of db1 x)
	expect_fail "create in .rev/x" create "$mnt/db1/.rev/x/9-new.json"
	expect_fail "overwrite a REV.json" cp "$work/v2.json" "$mnt/db1/.rev/x/$rev.json"
	expect_fail "rm a REV.json" rm "$mnt/db1/.rev/x/$rev.json"
	expect_fail "mkdir in .rev" mkdir "$mnt/db1/.rev/new"
	expect_fail "write .changes" cp "$work/v2.json" "$mnt/db1/.changes"
	expect_fail "write .status" cp "$work/v2.json" "$mnt/.status"
	cmp "$mnt/db1/.rev/x/$rev.json" "$mnt/db1/x.json" || die "$rev.json changed"
	[ "$(nrevs db1 x)" -eq 3 ] || die ".rev/x changed: $(revs db1 x)"
}
run_case t_readonly ".rev, .changes and .status are read-only"

# What a remount must show again: names, types, sizes, modes, owners,
# link targets and contents; documents' revisions and conflicts.
manifest() {
	(
		cd "$mnt"
		find . \( -name .changes -o -name .status \) -prune -o \
			-type d -printf '%p d %m %U\n' -o \
			-printf '%p %y %s %m %U %l\n' | sort
		find . \( -name .changes -o -name .status \) -prune -o \
			-type f -print0 | sort -z | xargs -0 cksum
		for f in */*.json; do
			printf '%s %s %s\n' "$f" \
				"$(getfattr --absolute-names --only-values -n user.barrel.rev "$f" \
					2>/dev/null || echo -)" \
				"$(getfattr --absolute-names --only-values -n user.barrel.conflicts "$f" \
					2>/dev/null || echo -)"
		done
	)
}

# Everything is listed before the remount (kept for the next case).
t_manifest() {
	need getfattr attr
	manifest >"$tmp/manifest.before"
	grep -q '^\./db1/a/notes.txt f ' "$tmp/manifest.before" || die "no notes.txt"
}
run_case t_manifest "list everything before the remount"
run_step fs_remount "a clean unmount and a new mount"

# A remount shows the same documents, attachments, history, scratch files.
t_after_remount() {
	need getfattr attr
	[ -s "$tmp/manifest.before" ] || die "no manifest from before"
	manifest >"$tmp/manifest.after"
	diff "$tmp/manifest.before" "$tmp/manifest.after" >&2 ||
		die "the remount shows something else"
	cmp "$mnt/db1/x.json" "$work/v1.json" || die "x.json"
	cmp "$mnt/db1/a/notes.txt" "$work/pic.png" || die "a/notes.txt"
	cmp "$mnt/db1/x.json.rejected" "$work/array" || die "x.json.rejected"
	jq -e '.databases | map(.name) | (index("db1") != null and
		index("feed") != null)' "$mnt/.status" >/dev/null || die ".status"
	[ "$(jq -c . "$mnt/feed/.changes" | wc -l)" -eq 4 ] || die "feed/.changes"
}
run_case t_after_remount "a remount shows everything again"

run_step fs_unmount "a clean unmount: barrelfs exits 0"

# After the unmount barrelctl sees what the mount wrote; check is clean.
t_ctl() {
	[ -n "$ctl" ] || skip "no barrelctl"
	"$ctl" -d "$data" check >"$work/check" 2>&1 || die "check: $(cat "$work/check")"
	"$ctl" -d "$data" get db1 x >"$work/x.out" || die "get db1 x"
	cmp "$work/x.out" "$work/v1.json" || die "barrelctl get x: other bytes"
	"$ctl" -d "$data" get pre c/d >"$work/cd.out" || die "get pre c/d"
	cmp -s "$work/cd.out" - <<<'{"id": "c/d"}' || die "c/d differs"
	"$ctl" -d "$data" get pre _design/two >/dev/null || die "get _design/two"
	"$ctl" -d "$data" get db1 a --attachment notes.txt >"$work/n.out" ||
		die "get the attachment notes.txt"
	cmp "$work/n.out" "$work/pic.png" || die "attachment notes.txt differs"
	[ "$("$ctl" -d "$data" log db1 x --oneline | wc -l)" -eq 3 ] ||
		die "barrelctl log db1 x: not 3 revisions"
}
run_case t_ctl "barrelctl reads what the mount wrote"

fs_done
