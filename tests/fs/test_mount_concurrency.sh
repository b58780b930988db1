#!/bin/bash
# Proves that concurrent writers lose nothing and readers never see a torn
# document: 4 writers each rewrite their own document 50 times and 4 others
# rewrite one shared document 50 times each (distinct content every time),
# while readers parse the documents and .changes; then every content
# written is some REV.json in .rev/, the revision counts and update_seq
# add up, and all of it is still there after a remount.
set -u
. "$(dirname "$0")/lib.sh"
fs_init test_mount_concurrency
fs_start history=all
mkdir "$mnt/cc" || { echo "Bail out! mkdir cc failed"; exit 1; }

W=4    # writers of their own document, and writers of the shared one
K=50   # writes per writer
R=4    # readers

# writer FILE PREFIX: write FILE K times, marker PREFIX-k; failures are
# appended to $work/errors.
writer() {
	local k

	for k in $(seq $K); do
		printf '{"writer": "%s", "k": %d, "marker": "%s-%d"}\n' \
			"$2" "$k" "$2" "$k" >"$1" ||
			echo "writer $2: write $k failed" >>"$work/errors"
	done
}

# reader N: parse every document and .changes until $work/stop appears (at
# most 5000 rounds); counts its rounds in $work/reads.N.
reader() {
	local i=0 f

	while [ ! -e "$work/stop" ] && [ $i -lt 5000 ]; do
		for f in "$mnt/cc/shared.json" "$mnt"/cc/own*.json; do
			jq -e 'type == "object" and has("marker")' "$f" \
				>/dev/null 2>>"$work/reader.$1.err" ||
				echo "reader $1: $f is not a whole document" >>"$work/errors"
		done
		jq -c . "$mnt/cc/.changes" >/dev/null 2>>"$work/reader.$1.err" ||
			echo "reader $1: .changes is not JSON lines" >>"$work/errors"
		i=$((i + 1))
	done
	echo $i >"$work/reads.$1"
}

# markers PATTERN...: the markers of the REV.json files PATTERN, sorted.
markers() { cat "$@" | jq -r .marker | sort; }

# want PREFIX...: init plus PREFIX-1..K for each PREFIX, sorted.
want() {
	local p

	{
		echo init
		for p in "$@"; do seq -f "$p-%g" $K; done
	} | sort
}

# check_all: the counts and markers after the run.
check_all() {
	local i

	for i in $(seq $W); do
		[ "$(nrevs cc own$i)" -eq $((K + 1)) ] ||
			die "own$i: $(nrevs cc own$i) revisions, not $((K + 1))"
		[ "$(gen "$(xattr "$mnt/cc/own$i.json" user.barrel.rev)")" -eq $((K + 1)) ] ||
			die "own$i: the current revision is not generation $((K + 1))"
		markers "$mnt"/cc/.rev/own$i/*.json | diff - <(want "own$i") >&2 ||
			die "own$i: markers lost (-) or unexpected (+)"
		jq -e --arg m "own$i-$K" '.marker == $m' "$mnt/cc/own$i.json" \
			>/dev/null || die "own$i.json is not its last write"
	done
	[ "$(nrevs cc shared)" -eq $((W * K + 1)) ] ||
		die "shared: $(nrevs cc shared) revisions, not $((W * K + 1))"
	want $(seq -f 'shared%g' $W) >"$work/shared.want"
	markers "$mnt"/cc/.rev/shared/*.json | diff - "$work/shared.want" >&2 ||
		die "shared: markers lost (-) or unexpected (+)"
	jq -e 'has("marker")' "$mnt/cc/shared.json" >/dev/null ||
		die "shared.json is not a whole document"
	n=$(ls "$mnt/cc/.rev/shared/conflicts" | wc -l)
	xattr "$mnt/cc/shared.json" user.barrel.conflicts |
		jq -e --argjson n "$n" 'length == $n' >/dev/null ||
		die "user.barrel.conflicts does not list the $n files of conflicts/"
	jq -e --argjson seq $((W * (K + 1) + W * K + 1)) \
		'.databases[] | select(.name == "cc") |
		 .doc_count == 5 and (.update_seq | tostring) == ($seq | tostring)' \
		"$mnt/.status" >/dev/null ||
		die ".status: not 5 documents and update_seq $((W * (K + 1) + W * K + 1)):" \
			"$(jq -c '.databases[] | select(.name == "cc")' "$mnt/.status")"
	[ "$(jq -c . "$mnt/cc/.changes" | wc -l)" -eq 5 ] || die ".changes: not 5 lines"
}

# Writers and readers run together; no write fails, no read is torn.
t_concurrent() {
	: >"$work/errors"
	rm -f "$work/stop"
	for i in $(seq $W); do
		printf '{"writer": "own%d", "marker": "init"}\n' $i >"$mnt/cc/own$i.json"
	done
	printf '{"writer": "none", "marker": "init"}\n' >"$mnt/cc/shared.json"
	readers=
	for i in $(seq $R); do
		bg reader $i
		readers="$readers $!"
	done
	writers=
	for i in $(seq $W); do
		bg writer "$mnt/cc/own$i.json" "own$i"
		writers="$writers $!"
		bg writer "$mnt/cc/shared.json" "shared$i"
		writers="$writers $!"
	done
	for p in $writers; do bg_wait "$p"; done
	: >"$work/stop"
	for p in $readers; do bg_wait "$p"; done
	[ ! -s "$work/errors" ] || die "$(sort "$work/errors" | uniq -c | head -20)"
	for i in $(seq $R); do
		[ "$(cat "$work/reads.$i")" -ge 1 ] || die "reader $i never read"
	done
	check_all
}
run_case t_concurrent "4+4 writers and 4 readers: nothing lost or torn" 600

run_step fs_remount "a clean unmount and a new mount"

# The same revisions and contents after the remount.
t_after_remount() {
	check_all
}
run_case t_after_remount "all revisions are still there after a remount" 300

run_step fs_unmount "a clean unmount: barrelfs exits 0"
fs_done
