#!/bin/bash
# Proves replication between two barrelfs mounts with barrelsync
# (PRODUCT.md "Sync" and "The mount"): each mount serves the API on
# DATADIR/api.sock and names it in .status; edits made with shell tools
# cross and show in the other mount's files; the same document edited on
# both mounts ends, after syncs both ways, with the same winner and leaves
# on both and the loser in .rev/ID/conflicts/; --continuous follows the
# changes within seconds; a run killed with SIGKILL resumes from its
# checkpoint; an attachment of several MiB crosses intact.
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
sync_init test_sync_mounts fuse

mount_start m1 || { echo "Bail out! barrelfs does not mount"; exit 1; }
mount_start m2 || { echo "Bail out! barrelfs does not mount"; exit 1; }
M1=$tmp/m1.mnt
M2=$tmp/m2.mnt
K1=unix:$tmp/m1.data/api.sock
K2=unix:$tmp/m2.data/api.sock
BIG=${SYNC_BIG_DOCS:-5000}

# doc_count PEER DB: its doc_count (0 while DB does not exist).
doc_count() {
	local st

	st=$(call GET "$1" "/$2") || st=0
	if [ "$st" = 200 ]; then
		jq -r .doc_count "$work/reply"
	else
		echo 0
	fi
}

# body_is FILE JQ-EXPR: FILE exists and is JSON for which EXPR is true
# (for wait_until).
body_is() {
	[ -e "$1" ] && jq -e "$2" "$1" >/dev/null 2>&1
}

# deleted_on PEER DB ID: ID has no live revision on PEER (for wait_until).
deleted_on() {
	[ -z "$(rev_on "$@")" ]
}

# .status names the socket, and the socket serves the API.
t_socket() {
	for m in m1 m2; do
		s=$(jq -r .socket "$tmp/$m.mnt/.status")
		[ "$s" = "$tmp/$m.data/api.sock" ] ||
			die "$m: .status says socket \"$s\", not $tmp/$m.data/api.sock"
		[ -S "$s" ] || die "$m: $s is not a socket"
		req GET "unix:$s" / | jq -e 'has("version")' >/dev/null ||
			die "$m: GET / over $s: $(cat "$work/reply")"
	done
}
run_case t_socket ".status names DATADIR/api.sock, which serves the API"

# Files written with echo, printf, sed -i, cp and rm cross both ways.
t_shell_edits() {
	mkdir "$M1/db" "$M2/db"
	echo '{"a": 1}' >"$M1/db/x.json"
	printf '{"name": "y", "list": [1, 2, 3]}\n' >"$M1/db/y.json"
	bsync "$M1/db" "$M2/db"
	expect_summary 2 2 0
	wait_until 5 body_is "$M2/db/x.json" '.a == 1' ||
		die "x.json on m2: $(cat "$M2/db/x.json" 2>&1)"
	body_is "$M2/db/y.json" '.list == [1, 2, 3]' ||
		die "y.json on m2: $(cat "$M2/db/y.json" 2>&1)"
	sed -i 's/1/2/' "$M2/db/x.json"
	cp "$M2/db/y.json" "$M2/db/z.json"
	bsync "$M2/db" "$M1/db"
	expect_summary 2 2 0
	wait_until 5 body_is "$M1/db/x.json" '.a == 2' ||
		die "x.json on m1 after sed -i on m2: $(cat "$M1/db/x.json" 2>&1)"
	body_is "$M1/db/z.json" '.name == "y"' ||
		die "z.json on m1: $(cat "$M1/db/z.json" 2>&1)"
	rm "$M1/db/y.json"
	wait_until 10 deleted_on "$K1" db y ||
		die "rm y.json on m1 wrote no deletion"
	bsync "$M1/db" "$M2/db"
	wait_until 5 test ! -e "$M2/db/y.json" || die "y.json is still on m2"
	same_state "$K1" db "$K2" db
}
run_case t_shell_edits "edits made with shell tools cross both ways"

# One document edited on both mounts, synced both ways: the same winner
# (user.barrel.rev) and leaves on both, the winner's body in c.json, the
# loser in .rev/c/conflicts/ on both.
t_conflict() {
	need getfattr attr
	echo '{"v": 0}' >"$M1/db/c.json"
	bsync "$M1/db" "$M2/db"
	wait_until 5 body_is "$M2/db/c.json" '.v == 0' || die "c.json did not cross"
	echo '{"v": "one"}' >"$M1/db/c.json"
	echo '{"v": "two"}' >"$M2/db/c.json"
	bsync "$M1/db" "$M2/db"
	bsync "$M2/db" "$M1/db"
	same_state "$K1" db "$K2" db
	line=$(grep '^c ' "$work/state1")
	[ "$(echo "$line" | sed 's/.*leaves=//' | tr ',' '\n' | grep -c .)" -eq 2 ] ||
		die "c: expected 2 leaves: $line"
	win=$(rev_on "$K1" db c)
	lose=$(echo "$line" | sed 's/.*leaves=//' | tr ',' '\n' | grep -vx "$win")
	for m in "$M1" "$M2"; do
		r=$(xattr "$m/db/c.json" user.barrel.rev)
		[ "$r" = "$win" ] || die "$m/db/c.json: user.barrel.rev $r, winner $win"
		v=$(jq -r .v "$m/db/c.json")
		w=$(req GET "$K1" /db/c | jq -r .v)
		[ "$v" = "$w" ] || die "$m/db/c.json shows \"$v\", the winner is \"$w\""
		[ "$(ls "$m/db/.rev/c/conflicts")" = "$lose.json" ] ||
			die "$m: .rev/c/conflicts lists '$(ls "$m/db/.rev/c/conflicts")', not $lose.json"
		xattr "$m/db/c.json" user.barrel.conflicts |
			jq -e --arg l "$lose" '. == [$l]' >/dev/null ||
			die "$m: user.barrel.conflicts is not [$lose]"
	done
	# Resolving on m2 (rm of the conflict file) crosses to m1.
	rm "$M2/db/.rev/c/conflicts/$lose.json"
	bsync "$M2/db" "$M1/db"
	wait_until 5 test -z "$(ls "$M1/db/.rev/c/conflicts")" ||
		die "m1: still in conflict: $(ls "$M1/db/.rev/c/conflicts")"
	same_state "$K1" db "$K2" db
}
run_case t_conflict "concurrent edits on two mounts converge"

# barrelsync --continuous carries each write within seconds, and stops
# on SIGTERM (status 4, interrupted, or 0).
t_continuous() {
	local rc=0

	bg "$bsync" --continuous --quiet "$M1/db" "$M2/db" 2>"$work/cont.err"
	pid=$!
	echo '{"n": 1}' >"$M1/db/live.json"
	wait_until 10 body_is "$M2/db/live.json" '.n == 1' ||
		die "live.json did not reach m2 within 10 s: $(tail -c 400 "$work/cont.err")"
	sed -i 's/1/2/' "$M1/db/live.json"
	wait_until 10 body_is "$M2/db/live.json" '.n == 2' ||
		die "the edit of live.json did not reach m2 within 10 s"
	rm "$M1/db/live.json"
	wait_until 15 test ! -e "$M2/db/live.json" ||
		die "the deletion of live.json did not reach m2 within 15 s"
	alive "$pid" || die "barrelsync --continuous exited: $(tail -c 400 "$work/cont.err")"
	kill -TERM "$pid"
	wait_until 10 eval "! alive $pid" || die "barrelsync ignores SIGTERM for 10 s"
	bg_wait "$pid" || rc=$?
	[ "$rc" -eq 4 ] || [ "$rc" -eq 0 ] ||
		die "barrelsync --continuous: status $rc after SIGTERM: $(tail -c 400 "$work/cont.err")"
}
run_case t_continuous "barrelsync --continuous converges within seconds"

# kill -9 in the middle of a big run; the rerun starts from the
# checkpoint (reads fewer documents than there are) and completes.
t_killnine() {
	local rc=0 n

	req PUT "$K1" /big >/dev/null
	bulk_docs "$K1" big "$BIG" b
	bg "$bsync" --batch 50 --quiet --create-target "$M1/big" "$M2/big" \
		2>"$work/kill.err"
	pid=$!
	# Poll without sleeping much: the run must be caught in its middle.
	for _ in $(seq 1 3000); do
		n=$(doc_count "$K2" big)
		[ "$n" -ge $((BIG / 10)) ] && break
		alive "$pid" || break
		sleep 0.02
	done
	kill -KILL "$pid" 2>/dev/null || true
	bg_wait "$pid" || rc=$?
	n=$(doc_count "$K2" big)
	[ "$n" -lt "$BIG" ] || die "the run ended (status $rc, $n docs) before" \
		"the kill: nothing to resume; try a larger SYNC_BIG_DOCS"
	[ "$n" -gt 0 ] || die "nothing written within 60 s: $(tail -c 400 "$work/kill.err")"
	echo "killed with $n of $BIG documents written (status $rc)"
	# The kill may fall between the writes of the two checkpoints.
	seq1=$(checkpoint "$K1" big | jq -c .source_last_seq)
	seq2=$(checkpoint "$K2" big | jq -c .source_last_seq)
	[ "$seq1" != null ] && [ "$seq2" != null ] ||
		die "a checkpoint names no sequence: $seq1 on m1, $seq2 on m2"
	bsync --batch 50 "$M1/big" "$M2/big"
	echo "rerun: $(summary)"
	[ "$(summary read)" -lt "$BIG" ] ||
		die "the rerun read all $BIG documents: it did not resume: $(summary)"
	for k in "$K1" "$K2"; do
		checkpoint "$k" big >"$work/ck.json"
		jq -e --argjson a "$seq1" --argjson b "$seq2" \
			'.history[0].start_last_seq | . == $a or . == $b' \
			"$work/ck.json" >/dev/null ||
			die "the rerun did not start from $seq1 or $seq2 ($k):" \
				"$(head -c 600 "$work/ck.json")"
	done
	[ "$(summary failed)" -eq 0 ] || die "failures: $(summary)"
	[ "$(doc_count "$K2" big)" -eq "$BIG" ] ||
		die "m2/big has $(doc_count "$K2" big) of $BIG documents"
	all_docs "$K1" big >"$work/big1"
	all_docs "$K2" big >"$work/big2"
	cmp -s "$work/big1" "$work/big2" ||
		die "big differs: $(diff "$work/big1" "$work/big2" | head -n 10)"
	[ "$(find "$M2/big" -maxdepth 1 -name '*.json' | wc -l)" -eq "$BIG" ] ||
		die "ls m2/big does not list $BIG documents"
}
run_case t_killnine "kill -9 mid-run; the rerun resumes from the checkpoint" 300

# An attachment of several MiB copied into m1 crosses byte for byte.
t_big_attachment() {
	head -c $((6 * 1024 * 1024 + 123)) /dev/urandom >"$work/big.bin"
	echo '{"att": true}' >"$M1/db/att.json"
	cp "$work/big.bin" "$M1/db/att/file.bin"
	bsync "$M1/db" "$M2/db"
	wait_until 5 test -e "$M2/db/att/file.bin" || die "att/file.bin is not on m2"
	cmp "$work/big.bin" "$M2/db/att/file.bin" || die "att/file.bin differs on m2"
	body_is "$M2/db/att.json" '.att == true' || die "att.json on m2: $(cat "$M2/db/att.json")"
	same_state "$K1" db "$K2" db
}
run_case t_big_attachment "an attachment of several MiB crosses intact" 180

# Both mounts unmount cleanly after all this.
t_unmount() {
	mount_stop m1 && mount_stop m2
}
run_step t_unmount "both mounts unmount cleanly"

sync_done
