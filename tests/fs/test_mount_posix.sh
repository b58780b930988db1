#!/bin/bash
# Proves the POSIX face of the mount: the errnos of PRODUCT.md and
# DESIGN.md, chmod/chown/touch/truncate on documents and scratch files kept
# across a remount, scratch files that behave like files (random writes,
# holes, truncation, symlinks, renames), edits invisible until close, fsync,
# a new empty file that is not yet a document, options, and the DATADIR lock.
set -u
. "$(dirname "$0")/lib.sh"
fs_init test_mount_posix
fs_start
mkdir "$mnt/px" || { echo "Bail out! mkdir px failed"; exit 1; }

long=$(printf 'a%.0s' $(seq 256))   # a 256-byte name

# rename_ul: util-linux rename(1), which calls rename(2) and never copies
# (mv falls back to copy and delete on EXDEV).
rename_ul() {
	if command -v rename.ul >/dev/null 2>&1; then
		rename.ul "$@"
	elif rename --version 2>/dev/null | grep -q util-linux; then
		rename "$@"
	else
		skip "no util-linux rename (rename.ul)"
	fi
}

# keep_attrs NAME FILE...: record the mode, owner, group and mtime of each
# FILE in $work/attrs.NAME (the names in $work/attrs.NAME.files), for
# t_after_remount to compare.
attr_fmt='%n %a %u %g %Y'
keep_attrs() {
	local name=$1

	shift
	printf '%s\n' "$@" >"$work/attrs.$name.files"
	stat -c "$attr_fmt" "$@" >"$work/attrs.$name"
}

# ENOENT for what does not exist.
t_enoent() {
	expect_errno ENOENT "cat a missing document" cat "$mnt/px/nosuch.json"
	expect_errno ENOENT "ls a missing database" ls "$mnt/nodb"
	expect_errno ENOENT "rm a missing document" rm "$mnt/px/nosuch.json"
	expect_errno ENOENT "ls the history of nothing" ls "$mnt/px/.rev/nosuch"
	expect_errno ENOENT "touch in a missing database" touch "$mnt/nodb/x.json"
}
run_case t_enoent "ENOENT"

# EEXIST for databases, folders and symlinks that exist.
t_eexist() {
	printf '{"e": 1}\n' >"$mnt/px/e.json"
	printf 'att\n' >"$mnt/px/e/att.txt"
	expect_errno EEXIST "mkdir an existing database" mkdir "$mnt/px"
	expect_errno EEXIST "mkdir an existing attachment folder" mkdir "$mnt/px/e"
	expect_errno EEXIST "mkdir .rev" mkdir "$mnt/px/.rev"
	ln -s target "$mnt/px/.sl"
	expect_errno EEXIST "ln -s over a symlink" ln -s other "$mnt/px/.sl"
	rm "$mnt/px/.sl"
}
run_case t_eexist "EEXIST"

# ENOTEMPTY for a database with documents.
t_enotempty() {
	expect_errno ENOTEMPTY "rmdir a database with documents" rmdir "$mnt/px"
	[ -d "$mnt/px" ] || die "px is gone"
}
run_case t_enotempty "ENOTEMPTY"

# EISDIR for writing to a directory.
t_eisdir() {
	expect_errno EISDIR "write to a database" create "$mnt/px"
	expect_errno EISDIR "write to an attachment folder" create "$mnt/px/e"
	expect_errno EISDIR "cat .rev" cat "$mnt/px/.rev"
}
run_case t_eisdir "EISDIR"

# ENOTDIR for a file used as a directory.
t_enotdir() {
	expect_errno ENOTDIR "ls doc.json/x" ls "$mnt/px/e.json/x"
	expect_errno ENOTDIR "mkdir doc.json/x" mkdir "$mnt/px/e.json/x"
	expect_errno ENOTDIR "cat .status/x" cat "$mnt/.status/x"
	expect_errno ENOTDIR "rmdir a document" rmdir "$mnt/px/e.json"
}
run_case t_enotdir "ENOTDIR"

# ENAMETOOLONG for a name over 255 bytes, in every kind of directory.
t_enametoolong() {
	expect_errno ENAMETOOLONG "create a long document name" \
		create "$mnt/px/$long.json"
	expect_errno ENAMETOOLONG "create a long scratch name" create "$mnt/px/.$long"
	expect_errno ENAMETOOLONG "mkdir a long database name" mkdir "$mnt/$long"
	expect_errno ENAMETOOLONG "stat a long name" stat "$mnt/px/$long"
	expect_errno ENAMETOOLONG "a long attachment name" create "$mnt/px/e/$long"
}
run_case t_enametoolong "ENAMETOOLONG"

# EXDEV for renaming a database or moving an attachment folder.
t_exdev() {
	(cd "$mnt" && expect_errno EXDEV "rename a database" rename_ul px pz px)
	[ -d "$mnt/px" ] && [ ! -e "$mnt/pz" ] || die "the database moved"
	(cd "$mnt/px" && expect_errno EXDEV "move an attachment folder" rename_ul e f e)
	cmp -s "$mnt/px/e/att.txt" - <<<'att' || die "the attachment moved"
	[ ! -e "$mnt/px/f" ] || die "px/f exists"
}
run_case t_exdev "EXDEV"

# Attributes of documents and attachments: chmod, chown, touch -d; no
# revision; kept in $work/attrs.doc for the remount.
t_attrs() {
	printf '{"attr": 1}\n' >"$mnt/px/at.json"
	printf 'file\n' >"$mnt/px/at/file.txt"
	n=$(nrevs px at)
	chmod 600 "$mnt/px/at.json"
	chmod 640 "$mnt/px/at/file.txt"
	touch -d '2001-02-03 04:05:06' "$mnt/px/at.json"
	touch -m -d '2002-03-04 05:06:07' "$mnt/px/at/file.txt"
	if [ "$(id -u)" = 0 ]; then
		chown 12345:23456 "$mnt/px/at.json"
	fi
	[ "$(stat -c %a "$mnt/px/at.json")" = 600 ] || die "chmod 600"
	[ "$(stat -c %a "$mnt/px/at/file.txt")" = 640 ] || die "chmod 640"
	[ "$(stat -c %Y "$mnt/px/at.json")" = "$(date -d '2001-02-03 04:05:06' +%s)" ] ||
		die "touch -d: $(stat -c %y "$mnt/px/at.json")"
	[ "$(stat -c %Y "$mnt/px/at/file.txt")" = "$(date -d '2002-03-04 05:06:07' +%s)" ] ||
		die "touch -m -d on an attachment"
	if [ "$(id -u)" = 0 ]; then
		[ "$(stat -c %u:%g "$mnt/px/at.json")" = 12345:23456 ] || die "chown"
	fi
	[ "$(nrevs px at)" -eq "$n" ] || die "attributes made a revision"
	cmp -s "$mnt/px/at.json" - <<<'{"attr": 1}' || die "the body changed"
	keep_attrs doc "$mnt/px/at.json" "$mnt/px/at/file.txt"
}
run_case t_attrs "chmod, chown, touch -d on documents and attachments"

# Attributes of a database directory; kept in $work/attrs.db.
t_attrs_db() {
	mkdir "$mnt/pa"
	chmod 750 "$mnt/pa"
	touch -d '2004-05-06 07:08:09' "$mnt/pa"
	[ "$(stat -c %a "$mnt/pa")" = 750 ] || die "chmod 750"
	[ "$(stat -c %Y "$mnt/pa")" = "$(date -d '2004-05-06 07:08:09' +%s)" ] ||
		die "touch -d"
	keep_attrs db "$mnt/pa"
}
run_case t_attrs_db "chmod, touch -d on a database"

# truncate of a document commits on close: to valid JSON, one revision; to
# nothing or to NULs, refused (EINVAL) and the body stays.
t_truncate_doc() {
	printf '{"t": 1}          \n' >"$mnt/px/tr.json"
	truncate -s 8 "$mnt/px/tr.json"
	[ "$(stat -c %s "$mnt/px/tr.json")" -eq 8 ] || die "size after truncate -s 8"
	printf '{"t": 1}' | cmp - "$mnt/px/tr.json" || die "body after truncate -s 8"
	[ "$(nrevs px tr)" -eq 2 ] || die ".rev/tr: $(revs px tr)"
	expect_errno EINVAL "truncate -s 0" truncate -s 0 "$mnt/px/tr.json"
	expect_errno EINVAL "truncate -s 100" truncate -s 100 "$mnt/px/tr.json"
	printf '{"t": 1}' | cmp - "$mnt/px/tr.json" || die "a refused truncate changed it"
	[ "$(nrevs px tr)" -eq 2 ] || die "a refused truncate made a revision"
}
run_case t_truncate_doc "truncate of a document"

# The same operations on a scratch file and on a file in $work give the
# same bytes: random writes, holes, truncation, appends; small (inline) and
# large (a blob).
scratch_ops() {  # scratch_ops FILE
	local f=$1

	dd if="$work/p1" of="$f" bs=4096 count=3 conv=notrunc status=none &&
	dd if="$work/p2" of="$f" bs=1000 seek=50 count=2 conv=notrunc status=none &&
	truncate -s 30000 "$f" &&
	dd if="$work/p3" of="$f" bs=1 seek=100000 count=10 conv=notrunc status=none &&
	truncate -s 200000 "$f" &&
	printf 'tail' >>"$f" &&
	dd if="$work/p1" of="$f" bs=512 seek=7 count=1 conv=notrunc status=none &&
	dd if="$work/p2" of="$f" bs=1 seek=199990 count=20 conv=notrunc status=none
}
t_scratch() {
	head -c 65536 /dev/urandom >"$work/p1"
	head -c 4096 /dev/urandom >"$work/p2"
	head -c 64 /dev/urandom >"$work/p3"
	scratch_ops "$work/ref.bin"
	scratch_ops "$mnt/px/.scratch.bin"
	cmp "$mnt/px/.scratch.bin" "$work/ref.bin" || die "the scratch file differs"
	[ "$(stat -c %s "$mnt/px/.scratch.bin")" -eq "$(stat -c %s "$work/ref.bin")" ] ||
		die "sizes differ"
	printf 'hello' >"$mnt/px/notes.txt"
	printf ' world\n' >>"$mnt/px/notes.txt"
	cmp -s "$mnt/px/notes.txt" - <<<'hello world' || die "small scratch file"
	head -c 3000 "$work/p1" >"$mnt/px/small~"
	head -c 3000 "$work/p1" | cmp - "$mnt/px/small~" || die "small~"
	[ -z "$(change_of px notes.txt)" ] || die "notes.txt became a document"
	[ -z "$(change_of px .scratch.bin)" ] || die ".scratch.bin became a document"
}
run_case t_scratch "scratch files: random writes, holes, truncate, append"

# Scratch files rename, link symbolically and take attributes like files.
t_scratch_meta() {
	printf 'moved\n' >"$mnt/px/.a.tmp"
	mv "$mnt/px/.a.tmp" "$mnt/px/.b.tmp"
	[ ! -e "$mnt/px/.a.tmp" ] || die ".a.tmp is still there"
	cmp -s "$mnt/px/.b.tmp" - <<<'moved' || die ".b.tmp"
	ln -s 'some/target' "$mnt/px/.link"
	[ "$(readlink "$mnt/px/.link")" = some/target ] || die "readlink .link"
	[ -L "$mnt/px/.link" ] || die ".link is not a symlink"
	chmod 604 "$mnt/px/notes.txt"
	touch -d '2003-04-05 06:07:08' "$mnt/px/notes.txt"
	head -c 100 "$work/p1" >"$mnt/px/.cut"
	truncate -s 10 "$mnt/px/.cut"
	head -c 10 "$work/p1" | cmp - "$mnt/px/.cut" || die "truncate -s 10 of .cut"
	if [ "$(id -u)" = 0 ]; then
		chown 4242:4343 "$mnt/px/notes.txt"
	fi
	keep_attrs scratch "$mnt/px/notes.txt" "$mnt/px/.cut" "$mnt/px/.scratch.bin"
	[ "$(stat -c %a "$mnt/px/notes.txt")" = 604 ] || die "chmod 604"
	rm "$mnt/px/.b.tmp"
	[ ! -e "$mnt/px/.b.tmp" ] || die "rm .b.tmp"
}
run_case t_scratch_meta "scratch files: rename, symlink, chmod, chown, touch"

# An edit in progress is invisible to other opens until it is flushed.
# The writer is a subshell whose stdout is the open and that runs only
# builtins without redirecting stdout: every close of a copy of the
# descriptor (a child exiting, a redirection restored) would flush, and
# flush commits.
t_invisible() {
	f=$mnt/px/inv.json
	printf '{"v": "old"}\n' >"$f"
	mkfifo "$work/go"
	# shellcheck disable=SC2034 # set by the trap, read through eval
	got=
	trap 'got=1' USR1
	me=$BASHPID
	(
		printf '{"v": "new"}\n'
		kill -USR1 "$me"
		read -r _ <"$work/go"
	) 1<>"$f" &
	w=$!
	case_pids="$case_pids$w "
	wait_until 10 eval '[ -n "$got" ]' || die "the writer did not write"
	cmp -s "$f" - <<<'{"v": "old"}' || die "another open sees the edit: $(cat "$f")"
	[ "$(nrevs px inv)" -eq 1 ] || die "a revision before the flush"
	echo go >"$work/go"
	bg_wait "$w"
	cmp -s "$f" - <<<'{"v": "new"}' || die "the close did not commit"
	[ "$(nrevs px inv)" -eq 2 ] || die ".rev/inv: $(revs px inv)"
}
run_case t_invisible "an edit is invisible until flushed"

# dd conv=fsync of valid JSON succeeds and commits.
t_fsync() {
	printf '{"synced": true}\n' >"$work/s.json"
	dd if="$work/s.json" of="$mnt/px/sync.json" conv=fsync status=none ||
		die "dd conv=fsync failed"
	cmp "$mnt/px/sync.json" "$work/s.json" || die "sync.json"
	[ "$(nrevs px sync)" -eq 1 ] || die ".rev/sync: $(revs px sync)"
}
run_case t_fsync "fsync of a valid document succeeds"

# A new file still empty at close is not a document yet; writing makes it one.
t_empty_new() {
	touch "$mnt/px/empty.json"
	[ -f "$mnt/px/empty.json" ] || die "empty.json is not visible"
	[ "$(stat -c %s "$mnt/px/empty.json")" -eq 0 ] || die "empty.json is not empty"
	[ -z "$(change_of px empty)" ] || die "an empty file is a document"
	printf '{"now": "full"}\n' >"$mnt/px/empty.json"
	[ "$(gen "$(rev_of px empty)")" = 1 ] || die "writing it did not make revision 1"
}
run_case t_empty_new "an empty new file is not a document until written"

# mounted_on DIR: something is mounted on DIR.
mounted_on() {
	awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' \
		/proc/self/mountinfo
}

# refused CMD...: CMD (a barrelfs that must not mount on $work/m2) exits
# non-zero within 10 s and mounts nothing.
refused() {
	local p rc=0

	bg "$@" 2>"$work/refused.log"
	p=$!
	if ! wait_until 10 eval '! alive $p'; then
		mounted_on "$work/m2" && fusermount3 -u -z "$work/m2"
		die "$* still runs after 10 s"
	fi
	bg_wait "$p" || rc=$?
	if mounted_on "$work/m2"; then
		fusermount3 -u "$work/m2"
		die "$* mounted $work/m2"
	fi
	[ $rc -ne 0 ] || die "$* exited 0"
}

# The mount locks DATADIR: barrelctl and a second barrelfs are refused.
t_lock() {
	if [ -n "$ctl" ]; then
		rc=0
		"$ctl" -d "$data" stat >"$work/out" 2>"$work/err" || rc=$?
		[ $rc -eq 1 ] || die "barrelctl on a mounted DATADIR: status $rc"
		grep -q locked "$work/err" || die "barrelctl: $(cat "$work/err")"
	fi
	mkdir -p "$work/m2"
	refused "$bfs" -f "$data" "$work/m2"
}
run_case t_lock "DATADIR is locked while mounted"

# Bad usage and an unknown option fail without mounting.
t_usage() {
	mkdir -p "$work/m2" "$work/d2"
	refused "$bfs" -f -o no_such_option "$work/d2" "$work/m2"
	refused "$bfs" -f "$work/d2"
	refused "$bfs" -f -o grace=soon "$work/d2" "$work/m2"
}
run_case t_usage "bad usage and unknown options fail"

remount_opts() {
	local o="cache_timeout=0,history=all"

	[ "$(id -u)" = 0 ] && o="$o,allow_other"
	fs_remount "$o"
}
run_step remount_opts "remount with cache_timeout, history (and allow_other)"

# Attributes, scratch contents, symlinks and sizes came back. (What a
# failed case before the remount did not record is not compared again.)
t_after_remount() {
	n=0
	for k in doc db scratch; do
		[ -s "$work/attrs.$k" ] || continue
		n=$((n + 1))
		xargs -d '\n' stat -c "$attr_fmt" <"$work/attrs.$k.files" |
			diff "$work/attrs.$k" - >&2 || die "attributes ($k) differ"
	done
	[ $n -gt 0 ] || die "no attributes were recorded before the remount"
	cmp "$mnt/px/.scratch.bin" "$work/ref.bin" || die ".scratch.bin differs"
	head -c 10 "$work/p1" | cmp - "$mnt/px/.cut" || die ".cut differs"
	cmp -s "$mnt/px/notes.txt" - <<<'hello world' || die "notes.txt differs"
	head -c 3000 "$work/p1" | cmp - "$mnt/px/small~" || die "small~ differs"
	[ "$(readlink "$mnt/px/.link")" = some/target ] || die ".link"
	printf '{"t": 1}' | cmp - "$mnt/px/tr.json" || die "tr.json"
	cmp -s "$mnt/px/e/att.txt" - <<<'att' || die "e/att.txt"
}
run_case t_after_remount "a remount keeps attributes and scratch files"

run_step fs_unmount "a clean unmount: barrelfs exits 0"
fs_done
