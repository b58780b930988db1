#!/bin/sh
# Proves barrelctl's contract: help and usage exits, bench leaves a usable
# DATADIR, stat/check/dump read it, check finds a flipped byte in a sealed
# segment (exit 1, naming seg= and off=), and a locked DATADIR fails cleanly.
set -u

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }

ctl=
for c in "${abs_top_builddir:-}/barrelctl" ./barrelctl; do
	[ -x "$c" ] && { ctl=$c; break; }
done
[ -n "$ctl" ] || skip "barrelctl is not built"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_barrelctl.XXXXXX") || fail "mktemp"
holder=
cleanup() {
	if [ -n "$holder" ]; then
		kill "$holder" 2>/dev/null
		wait "$holder" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# Run barrelctl; $out and $err hold what it printed, $rc its exit status.
run() {
	"$ctl" "$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	out=$(cat "$tmp/out")
	err=$(cat "$tmp/err")
}

expect() {  # expect RC WHAT: the last run exited with RC
	[ "$rc" -eq "$1" ] || {
		cat "$tmp/out" "$tmp/err" >&2
		fail "$2: exit $rc, expected $1"
	}
}

# 1. Help on stdout with status 0; bad usage on stderr with status 2.
run --help
expect 0 "barrelctl --help"
[ -n "$out" ] || fail "barrelctl --help printed nothing on stdout"
for cmd in check stat dump gc bench; do
	run "$cmd" --help
	expect 0 "barrelctl $cmd --help"
	echo "$out" | grep -q "usage: barrelctl $cmd" ||
		fail "barrelctl $cmd --help: no usage line on stdout"
	run "$cmd" --no-such-option
	expect 2 "barrelctl $cmd --no-such-option"
	echo "$err" | grep -q "usage:" ||
		fail "barrelctl $cmd --no-such-option: no usage on stderr"
done
for bad in "--rounds 0" "--rounds 16" "--rounds x" "--updates 0" \
	"--updates 101" "--updates 5%"; do
	# shellcheck disable=SC2086  # two words: the option and its value
	run bench $bad
	expect 2 "barrelctl bench $bad"
	echo "$err" | grep -q "bad ${bad%% *}" ||
		fail "barrelctl bench $bad: no message naming the option: $err"
done
run no-such-command
expect 2 "barrelctl no-such-command"
run
expect 2 "barrelctl without a command"

# 2. A quick bench, kept: its barrelfs store is a DATADIR to look at.
bench="$tmp/bench"
run bench --quick --docs 2000 --keep --dir "$bench"
expect 0 "barrelctl bench"
echo "$out" | grep -q "^running barrelfs  *done" ||
	fail "bench did not run the barrelfs store: $out"
datadir="$bench/barrelfs"
[ -d "$datadir" ] || fail "bench left no $datadir"
# every update of the 400 (20% of 2000) found its tree in the head cache
echo "$out" | grep -q "^documents: 400 of 400 updates read the revision tree" ||
	fail "bench: the documents store's updates missed the head cache: $out"
# 2000 small documents write far less than a checkpoint's worth of log
echo "$out" | grep -q "^barrelfs: 0 checkpoints during the updates (" ||
	fail "bench: no checkpoint count for the barrelfs store: $out"
echo "$out" | grep -q "^documents: .*; 0 checkpoints during the updates (" ||
	fail "bench: no checkpoint count for the documents store: $out"

# Rounds: each starts from an empty store (the documents store would
# refuse to insert its documents again), and the report is their median.
run bench --docs 500 --rounds 2 --stores barrelfs,documents \
	--dir "$tmp/rounds"
expect 0 "barrelctl bench --rounds 2"
echo "$out" | grep -q "^running documents (round 2 of 2) done" ||
	fail "bench --rounds 2: no second round of documents: $out"
echo "$out" | grep -q "the median of 2 rounds" ||
	fail "bench --rounds 2: the report does not say it is a median: $out"

run -d "$datadir" stat
expect 0 "barrelctl stat"
echo "$out" | grep -q "^database bench" || fail "stat: no database bench"
BARREL_DATADIR=$datadir
export BARREL_DATADIR
run check
unset BARREL_DATADIR
expect 0 "barrelctl check (clean)"
echo "$out" | grep -q "bench: .* 0 corrupt" || fail "check: no summary: $out"
run -d "$datadir" dump -b bench --values
expect 0 "barrelctl dump"
echo "$out" | grep -q "^bench seg=[0-9]* off=[0-9]* type=put " ||
	fail "dump: no put record"

# 3. A DATADIR locked by another process: a clean error, status 1.
command -v flock >/dev/null 2>&1 || fail "no flock(1) for the lock test"
[ -e "$datadir/LOCK" ] || fail "no lock file $datadir/LOCK"
(
	exec 9>>"$datadir/LOCK"
	flock -n 9 || exit 1
	: >"$tmp/locked"
	exec sleep 300
) &
holder=$!
i=0
while [ ! -e "$tmp/locked" ]; do
	i=$((i + 1))
	[ $i -le 100 ] || fail "the lock holder did not start"
	kill -0 "$holder" 2>/dev/null || fail "the lock holder exited"
	sleep 0.1
done
run -d "$datadir" stat
expect 1 "barrelctl stat on a locked DATADIR"
echo "$err" | grep -q "locked" || fail "no lock error message: $err"
kill "$holder"
wait "$holder" 2>/dev/null
holder=
run -d "$datadir" stat
expect 0 "barrelctl stat once the lock is released"

# 4. Flip one byte of a put record in a sealed segment: check must say so.
run -d "$datadir" stat -b bench
sealed=$(echo "$out" | awk '$NF == "sealed" { printf " seg=%s ", $1 }')
[ -n "$sealed" ] || fail "stat shows no sealed segment: $out"
run -d "$datadir" dump -b bench
# The second put record of the first sealed segment holding two or more.
rec=$(echo "$out" | awk -v sealed="$sealed" '
	$4 == "type=put" && index(sealed, " " $2 " ") && ++n[$2] == 2 {
		print $2, $3, $5; exit
	}' | tr '=' ' ')
[ -n "$rec" ] || fail "no sealed segment with two put records"
set -- $rec
seg=$2 off=$4 len=$6
file=$(find "$datadir" -name "$(printf '%08d' "$seg").seg" | head -n 1)
[ -f "$file" ] || fail "no file for segment $seg"
pos=$((off + 16 + len / 2))
byte=$(od -An -tu1 -j "$pos" -N 1 "$file" | tr -d ' \n')
[ -n "$byte" ] || fail "cannot read byte $pos of $file"
printf "\\$(printf '%03o' $((byte ^ 255)))" |
	dd of="$file" bs=1 seek="$pos" count=1 conv=notrunc 2>/dev/null ||
	fail "dd"
run -d "$datadir" check
expect 1 "barrelctl check after a flipped byte"
all="$out
$err"
echo "$all" | grep -q "seg=$seg" || fail "check did not name seg=$seg: $all"
echo "$all" | grep -q "off=[0-9]" || fail "check did not name off=: $all"
exit 0
