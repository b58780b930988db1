#!/bin/bash
# Proves that kill -9 at a random moment never loses an acknowledged commit
# nor leaves half a transaction: killnine_writer commits until killed,
# printing each committed transaction number; after every kill,
# `killnine_writer --verify DATADIR LAST` checks the recovered database.
#
# Automake test: exit 0 pass, 77 skip, 99 hard error, anything else fail.
# KILLNINE_ROUNDS (default 20) sets the number of kills.

set -u

writer=${KILLNINE_WRITER:-./tests/engine/killnine_writer}
rounds=${KILLNINE_ROUNDS:-20}

if [ ! -x "$writer" ]; then
	echo "test_killnine: $writer not built" >&2
	exit 99
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/barrel-killnine-XXXXXX") || exit 99
pid=

cleanup() {
	# only the writer this script started, by its pid
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

datadir=$tmp/data
last=0
total_kills=0

for round in $(seq 1 "$rounds"); do
	out=$tmp/out.$round
	err=$tmp/err.$round
	"$writer" "$datadir" >"$out" 2>"$err" &
	pid=$!
	ms=$((100 + RANDOM % 401))
	sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
	if ! kill -0 "$pid" 2>/dev/null; then
		wait "$pid"
		status=$?
		echo "test_killnine: round $round: writer exited by itself (status $status) before the kill" >&2
		cat "$err" >&2
		exit 1
	fi
	kill -9 "$pid"
	wait "$pid" 2>/dev/null
	pid=
	total_kills=$((total_kills + 1))

	# the last complete line printed: the last acknowledged commit
	printed=$(grep -E '^[0-9]+$' "$out" | tail -n 1)
	if [ -n "$printed" ]; then
		if [ "$printed" -lt "$last" ]; then
			echo "test_killnine: round $round: writer resumed at $printed, below $last" >&2
			exit 1
		fi
		last=$printed
	fi

	if ! "$writer" --verify "$datadir" "$last" >"$tmp/verify.$round" 2>&1; then
		echo "test_killnine: round $round (killed after ${ms} ms, last printed $last): verification failed:" >&2
		cat "$tmp/verify.$round" >&2
		echo "--- writer stderr:" >&2
		cat "$err" >&2
		exit 1
	fi
done

if [ "$last" -eq 0 ]; then
	echo "test_killnine: no commit was ever acknowledged in $total_kills runs" >&2
	exit 1
fi
echo "test_killnine: $total_kills kills, $last transactions verified"
exit 0
