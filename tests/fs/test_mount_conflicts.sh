#!/bin/bash
# Proves that an edit through a stale open never overwrites: it becomes a
# conflicting branch, both revisions are kept, CouchDB's rule picks the
# winner, the loser is in .rev/ID/conflicts/ and user.barrel.conflicts,
# and rm of the conflict file (or of the winner) resolves; conflicts
# survive a remount.
set -u
. "$(dirname "$0")/lib.sh"
fs_init test_mount_conflicts
fs_start
mkdir "$mnt/cf" || { echo "Bail out! mkdir cf failed"; exit 1; }

# make_conflict NAME: cf/NAME.json holds $work/NAME.base; fd 3 opens it
# read-write (its base: that revision); another open writes NAME.a; then
# NAME.b is written through fd 3 and closed. Sets r_base, r_a, r_b (the
# three revisions), winner/loser and wbody/lbody (their bodies' files).
make_conflict() {
	local f=$mnt/cf/$1.json

	printf '{"a":1}\n' >"$work/$1.base"
	printf '{"b":2}\n' >"$work/$1.a"
	printf '{"c":333}\n' >"$work/$1.b"   # longer: covers the whole spool
	cp "$work/$1.base" "$f"
	r_base=$(xattr "$f" user.barrel.rev)
	exec 3<>"$f"
	cat "$work/$1.a" >"$f"
	r_a=$(xattr "$f" user.barrel.rev)
	[ "$(gen "$r_a")" = 2 ] || die "the other write is $r_a, not generation 2"
	cat "$work/$1.b" >&3
	exec 3>&-
	revs cf "$1" >"$work/$1.revs"
	[ "$(wc -l <"$work/$1.revs")" -eq 3 ] ||
		die ".rev/$1 does not list 3 revisions: $(cat "$work/$1.revs")"
	r_b=$(grep -vx -e "$r_base" -e "$r_a" "$work/$1.revs")
	[ "$(gen "$r_b")" = 2 ] || die "the stale write is $r_b, not generation 2"
	if [[ $r_a > $r_b ]]; then
		winner=$r_a wbody=$work/$1.a loser=$r_b lbody=$work/$1.b
	else
		winner=$r_b wbody=$work/$1.b loser=$r_a lbody=$work/$1.a
	fi
}

# check_conflict NAME: NAME shows the winner and lists the loser.
check_conflict() {
	local f=$mnt/cf/$1.json

	cmp "$f" "$wbody" || die "$1.json is not the winner's body"
	[ "$(xattr "$f" user.barrel.rev)" = "$winner" ] ||
		die "user.barrel.rev is not the winner $winner"
	xattr "$f" user.barrel.conflicts | jq -e --arg l "$loser" '. == [$l]' \
		>/dev/null || die "user.barrel.conflicts: $(xattr "$f" user.barrel.conflicts), not [$loser]"
	[ "$(ls "$mnt/cf/.rev/$1/conflicts")" = "$loser.json" ] ||
		die "conflicts/ lists '$(ls "$mnt/cf/.rev/$1/conflicts")', not $loser.json"
	cmp "$mnt/cf/.rev/$1/conflicts/$loser.json" "$lbody" ||
		die "conflicts/$loser.json is not the loser's body"
	[ "$(rev_of cf "$1")" = "$winner" ] || die ".changes does not show $winner"
}

# A write through a stale open: both revisions kept, the higher one wins,
# the other is listed in conflicts/ and user.barrel.conflicts.
t_conflict() {
	make_conflict x
	cmp "$mnt/cf/.rev/x/$r_a.json" "$work/x.a" || die "$r_a.json"
	cmp "$mnt/cf/.rev/x/$r_b.json" "$work/x.b" || die "$r_b.json"
	cmp "$mnt/cf/.rev/x/$r_base.json" "$work/x.base" || die "$r_base.json"
	check_conflict x
}
run_case t_conflict "a stale open makes a conflict, nothing lost"

# rm .rev/ID/conflicts/REV.json resolves: no conflicts, the winner stays.
t_resolve() {
	f=$mnt/cf/x.json
	winner=$(xattr "$f" user.barrel.rev)
	loser=$(xattr "$f" user.barrel.conflicts | jq -r '.[0]')
	[ -n "$loser" ] && [ "$loser" != null ] || die "x is not in conflict"
	cp "$f" "$work/x.winner"
	rm "$mnt/cf/.rev/x/conflicts/$loser.json"
	[ "$(xattr "$f" user.barrel.conflicts)" = "[]" ] ||
		die "still in conflict: $(xattr "$f" user.barrel.conflicts)"
	[ -z "$(ls "$mnt/cf/.rev/x/conflicts")" ] || die "conflicts/ is not empty"
	cmp "$f" "$work/x.winner" || die "the body changed"
	[ "$(xattr "$f" user.barrel.rev)" = "$winner" ] || die "the winner changed"
	change_of cf x | jq -e 'has("deleted") | not' >/dev/null || die "x is deleted"
}
run_case t_resolve "rm of the conflict file resolves"

# Resolve to the loser: cp its conflict file over ID.json, then rm it.
t_pick_loser() {
	make_conflict y
	cp "$mnt/cf/.rev/y/conflicts/$loser.json" "$mnt/cf/y.json"
	cmp "$mnt/cf/y.json" "$lbody" || die "y.json is not the loser's body"
	[ "$(gen "$(xattr "$mnt/cf/y.json" user.barrel.rev)")" = 3 ] ||
		die "the copy is not generation 3 on the winner"
	rm "$mnt/cf/.rev/y/conflicts/$loser.json"
	[ "$(xattr "$mnt/cf/y.json" user.barrel.conflicts)" = "[]" ] ||
		die "still in conflict"
	cmp "$mnt/cf/y.json" "$lbody" || die "y.json changed with the rm"
}
run_case t_pick_loser "resolve to the loser's body"

# Two opens of the same revision, both written and closed: a conflict.
t_two_fds() {
	f=$mnt/cf/z.json
	printf '{"z":0}\n' >"$f"
	exec 3<>"$f" 4<>"$f"
	printf '{"z":"four"}\n' >&4
	exec 4>&-
	printf '{"z":"three"}\n' >&3
	exec 3>&-
	[ "$(nrevs cf z)" -eq 3 ] || die ".rev/z: $(revs cf z | tr '\n' ' ')"
	xattr "$f" user.barrel.conflicts | jq -e 'length == 1' >/dev/null ||
		die "conflicts: $(xattr "$f" user.barrel.conflicts)"
	cat "$mnt"/cf/.rev/z/2-*.json | jq -r .z | sort | tr '\n' ' ' >"$work/z"
	[ "$(cat "$work/z")" = "four three " ] || die "bodies: $(cat "$work/z")"
	cp "$f" "$work/z.json"
	ls "$mnt/cf/.rev/z/conflicts" >"$work/z.conflicts"
}
run_case t_two_fds "two opens of one revision: a conflict"

# A stale open that writes nothing makes no revision and no conflict.
t_stale_noop() {
	f=$mnt/cf/n.json
	printf '{"n":1}\n' >"$f"
	exec 3<>"$f"
	printf '{"n":2}\n' >"$f"
	exec 3>&-
	[ "$(nrevs cf n)" -eq 2 ] || die ".rev/n: $(revs cf n | tr '\n' ' ')"
	[ "$(xattr "$f" user.barrel.conflicts)" = "[]" ] || die "a conflict"
	cmp -s "$f" - <<<'{"n":2}' || die "n.json is not the second write"
}
run_case t_stale_noop "a stale open closed unwritten changes nothing"

# A stale write over a deletion brings the document back: live beats
# deleted, and a deleted leaf is no conflict.
t_stale_after_rm() {
	f=$mnt/cf/d.json
	printf '{"d":1}\n' >"$f"
	exec 3<>"$f"
	rm "$f"
	printf '{"d":"kept"}\n' >&3
	exec 3>&-
	[ -f "$f" ] || die "the stale write was lost"
	cmp -s "$f" - <<<'{"d":"kept"}' || die "d.json is not the stale write"
	change_of cf d | jq -e 'has("deleted") | not' >/dev/null ||
		die "d is still deleted: $(change_of cf d)"
	[ "$(xattr "$f" user.barrel.conflicts)" = "[]" ] || die "a deleted leaf is listed"
}
run_case t_stale_after_rm "a stale write after rm is kept"

# rm of a conflicted document's winner: the other branch wins.
t_rm_winner() {
	make_conflict w
	check_conflict w
	rm "$mnt/cf/w.json"
	[ -f "$mnt/cf/w.json" ] || die "w.json is gone: the loser did not win"
	cmp "$mnt/cf/w.json" "$lbody" || die "w.json is not the loser's body"
	[ "$(xattr "$mnt/cf/w.json" user.barrel.rev)" = "$loser" ] || die "rev"
	[ "$(xattr "$mnt/cf/w.json" user.barrel.conflicts)" = "[]" ] ||
		die "conflicts: $(xattr "$mnt/cf/w.json" user.barrel.conflicts)"
}
run_case t_rm_winner "rm of the winner lets the other branch win"

# conflicts/ refuses what is not a resolution.
t_conflicts_errors() {
	d=$mnt/cf/.rev/z/conflicts
	expect_errno ENOENT "rm a revision that is no conflict" \
		rm "$d/2-00000000000000000000000000000000.json"
	expect_fail "create in conflicts/" create "$d/3-new.json"
	expect_fail "rmdir conflicts/" rmdir "$d"
	[ "$(ls "$d")" = "$(cat "$work/z.conflicts")" ] || die "conflicts/ changed"
}
run_case t_conflicts_errors "conflicts/ takes only rm of a conflict"

run_step fs_remount "a clean unmount and a new mount"

# After the remount z is still in conflict, the same way.
t_after_remount() {
	[ -s "$work/z.conflicts" ] || die "no state from before"
	cmp "$mnt/cf/z.json" "$work/z.json" || die "z.json"
	[ "$(ls "$mnt/cf/.rev/z/conflicts")" = "$(cat "$work/z.conflicts")" ] ||
		die "conflicts/ differs"
	xattr "$mnt/cf/z.json" user.barrel.conflicts | jq -e --arg l \
		"$(sed 's/\.json$//' "$work/z.conflicts")" '. == [$l]' >/dev/null ||
		die "user.barrel.conflicts differs"
	[ "$(xattr "$mnt/cf/x.json" user.barrel.conflicts)" = "[]" ] ||
		die "x is in conflict again"
	[ "$(nrevs cf z)" -eq 3 ] || die ".rev/z"
}
run_case t_after_remount "conflicts survive a remount"

run_step fs_unmount "a clean unmount: barrelfs exits 0"
fs_done
