#!/bin/sh
# The engine demo: a quick benchmark against SQLite, LMDB, RocksDB and a
# bare log that keeps its barrelfs DATADIR, then barrelctl's stat, check
# and dump on that DATADIR. Run from the build directory, or set BARRELCTL.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
ctl=${BARRELCTL:-}
if [ -z "$ctl" ]; then
	for c in ./barrelctl "$top/build/barrelctl" "$top/barrelctl"; do
		if [ -x "$c" ]; then
			ctl=$c
			break
		fi
	done
fi
[ -n "$ctl" ] || { echo "demo: barrelctl is not built (see README.md)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/barrel-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$ctl" bench --quick --keep --dir "$work/bench"
datadir=$work/bench/barrelfs

echo
echo "\$ barrelctl -d $datadir stat"
"$ctl" -d "$datadir" stat
echo
echo "\$ barrelctl -d $datadir check"
"$ctl" -d "$datadir" check
echo
echo "\$ barrelctl -d $datadir dump | head -n 12"
"$ctl" -d "$datadir" dump >"$work/dump"
head -n 12 "$work/dump"
echo "... $(wc -l <"$work/dump") records in all"
