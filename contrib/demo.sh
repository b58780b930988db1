#!/bin/sh
# The demo: a quick benchmark against SQLite, LMDB, RocksDB and a bare log
# that keeps its barrelfs DATADIR, then barrelctl's stat, check and dump on
# that DATADIR; then documents: a put, an edit, the history, a diff between
# revisions, the changes feed and an export. Run from the build directory,
# or set BARRELCTL.
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

# Documents: every edit is a revision, and history stays browsable.
docs=$work/docs
run() {
	echo
	echo "\$ barrelctl -d \$DOCS $*"
	"$ctl" -d "$docs" "$@"
}
printf '{"title": "barrelfs", "tags": ["fs"], "stars": 1}\n' >"$work/v1.json"
printf '{"title": "barrelfs", "tags": ["fs", "couchdb"], "stars": 2}\n' >"$work/v2.json"
mkdir -p "$docs"
echo
echo "DOCS=$docs"
put() {
	echo
	echo "\$ barrelctl -d \$DOCS put demo readme $1"
	"$ctl" -d "$docs" put demo readme "$work/$1"
}
rev1=$(put v1.json | tee /dev/stderr | tail -n 1)
rev2=$(put v2.json | tee /dev/stderr | tail -n 1)
run get demo readme --meta
run log demo readme
run diff demo readme "$rev1" "$rev2"
run changes demo
run export --format alldocs demo -
