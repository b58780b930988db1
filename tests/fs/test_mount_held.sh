#!/bin/bash
# Proves that scratch files the mount holds in memory before it stores
# them behave as stored ones (ls, stat, cat, mv, rm, rmdir), that a
# temporary file renamed onto a document leaves no scratch file behind,
# and that fsync, the grace period and an unmount store them (the first
# two across a kill -9).
set -u
. "$(dirname "$0")/lib.sh"
fs_init test_mount_held
fs_start
mkdir "$mnt/hd" || { echo "Bail out! mkdir hd failed"; exit 1; }

# What the fs table holds is seen at once: ls, stat, cat, a second write.
t_visible() {
	printf 'one\n' >"$mnt/hd/notes.txt"
	ls "$mnt/hd" | grep -qx notes.txt || die "notes.txt not listed"
	[ "$(stat -c %s "$mnt/hd/notes.txt")" -eq 4 ] || die "stat size"
	[ "$(cat "$mnt/hd/notes.txt")" = one ] || die "cat"
	printf 'two\n' >>"$mnt/hd/notes.txt"
	[ "$(cat "$mnt/hd/notes.txt")" = "$(printf 'one\ntwo')" ] ||
		die "after append: $(cat "$mnt/hd/notes.txt")"
	expect_errno ENOTEMPTY "rmdir of a database with a scratch file" \
		rmdir "$mnt/hd"
}
run_case t_visible "a held scratch file lists, stats and reads"

# An editor's save through a temporary name: one revision, no scratch left.
t_tmp_rename() {
	printf '{"v": 1}\n' >"$mnt/hd/doc.json"
	printf '{"v": 2}\n' >"$mnt/hd/.doc.json.tmp"
	mv "$mnt/hd/.doc.json.tmp" "$mnt/hd/doc.json"
	[ "$(jq -c . "$mnt/hd/doc.json")" = '{"v":2}' ] || die "doc.json"
	[ "$(nrevs hd doc)" -eq 2 ] || die ".rev/doc: $(revs hd doc)"
	[ ! -e "$mnt/hd/.doc.json.tmp" ] || die "the temporary name is left"
}
run_case t_tmp_rename "a temporary file renamed onto a document"

# Renames and removals among held (and stored) scratch files.
t_moves() {
	printf 'a\n' >"$mnt/hd/a.txt"
	mv "$mnt/hd/a.txt" "$mnt/hd/b.txt"
	[ ! -e "$mnt/hd/a.txt" ] || die "a.txt is left after mv"
	[ "$(cat "$mnt/hd/b.txt")" = a ] || die "b.txt"
	printf 'gone\n' >"$mnt/hd/gone.txt"
	rm "$mnt/hd/gone.txt"
	[ ! -e "$mnt/hd/gone.txt" ] || die "gone.txt is left after rm"
	printf 'stored\n' >"$mnt/hd/old.txt"
	sync "$mnt/hd/old.txt"                # fsync: stored now
	printf 'held\n' >"$mnt/hd/old.txt"   # held over the stored one
	rm "$mnt/hd/old.txt"
	[ ! -e "$mnt/hd/old.txt" ] || die "old.txt is left after rm"
}
run_case t_moves "mv and rm of held scratch files"

# Kept across an unmount right after the writes (stored at unmount).
t_before_remount() {
	printf 'late\n' >"$mnt/hd/late.txt"
}
run_case t_before_remount "a scratch file written just before an unmount"

run_step fs_remount "a clean unmount and a new mount"

t_after_remount() {
	[ "$(cat "$mnt/hd/late.txt")" = late ] || die "late.txt"
	[ "$(cat "$mnt/hd/b.txt")" = a ] || die "b.txt"
	[ "$(cat "$mnt/hd/notes.txt")" = "$(printf 'one\ntwo')" ] ||
		die "notes.txt"
	for f in a.txt gone.txt old.txt .doc.json.tmp; do
		[ ! -e "$mnt/hd/$f" ] || die "$f came back"
	done
	[ "$(jq -c . "$mnt/hd/doc.json")" = '{"v":2}' ] || die "doc.json"
}
run_case t_after_remount "a remount shows what was held, nothing removed"

# fsync and the grace period store a held file: both survive a kill -9.
t_before_kill() {
	printf 'synced\n' >"$mnt/hd/synced.txt"
	sync "$mnt/hd/synced.txt"
	printf 'waited\n' >"$mnt/hd/waited.txt"
	sleep_grace                        # stored by the worker meanwhile
}
run_case t_before_kill "fsync, and the grace period, store a scratch file"

kill_and_mount() {
	kill -KILL "$fs_pid" && wait "$fs_pid" 2>/dev/null
	fs_pid=
	fusermount3 -u -z "$mnt" 2>/dev/null
	fs_mount
}
run_step kill_and_mount "kill -9 of barrelfs and a new mount"

t_after_kill() {
	[ "$(cat "$mnt/hd/synced.txt")" = synced ] || die "synced.txt"
	[ "$(cat "$mnt/hd/waited.txt")" = waited ] || die "waited.txt"
}
run_case t_after_kill "what fsync or the grace period stored survives"

run_step fs_unmount "a clean unmount: barrelfs exits 0"
fs_done
