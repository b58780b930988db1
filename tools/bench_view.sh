#!/usr/bin/env bash
# The view benchmark of `make bench`: N documents (~260 bytes of JSON,
# deterministic) indexed by a view with a simple map and the _count
# reduce, then Q key-range queries of 100 rows each, in barrelfs
# (BUILDDIR/bench_view, the engine through engine/view.h) and in PouchDB
# (tools/bench_view.js: pouchdb-core, pouchdb-adapter-memory and
# pouchdb-mapreduce of tests/sync/node_modules), one after the other in
# the same run. The two programs make the same documents and run the
# same queries (bench_view.c's top comment has the formula); each checks
# its own answers against the formula, and this script checks that both
# stored the same bytes (FNV-1a of every body) and got the same answers
# (row counts, sums of the values, the _count by type).
#
# Goals, from the issue: indexing at least 10 times PouchDB's documents
# per second, and a view query (the rows of a range) faster than reading
# the same documents by id (docdb_get_many(), one snapshot per query).
# A missed goal prints MISSED, not a failure.
#
# barrelfs's data directory goes under TMPDIR/bench-view.XXXXXX (--tmpdir;
# default $TMPDIR, else /dev/shm, else /tmp: PouchDB's memory adapter
# keeps everything in memory, so a tmpfs is the like for like), removed
# on exit, even on an error or a signal.
#
# Skipped ("skipped", exit 0, as make bench wants) when bench_view is
# not built; PouchDB's column shows "skipped" without node or its
# modules (`npm ci --prefix tests/sync`). Exit status 1 when a side
# failed (an error, a timeout, a wrong answer) or the two sides disagree,
# 2 on bad usage.

# cleanup runs from a trap: shellcheck cannot see that it is reachable.
# shellcheck disable=SC2317

set -u

prog=bench_view.sh
srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=tools/bench_lib.sh
. "$srcdir/tools/bench_lib.sh"
builddir=.
tmpbase=
docs=100000
queries=1000

sides=(barrelfs pouchdb)
declare -A label=([barrelfs]=barrelfs [pouchdb]=PouchDB)
declare -A fig=()           # [side.key]: the figures each side printed
declare -A state=()         # [side]: ok, skipped: why, FAILED: why
# What both sides must agree on.
agree=(docs doc_bytes doc_hash queries map_rows map_sum docs_rows
	reduce_count group)
failed=0
tmp=

usage() {
	[ "$1" = 0 ] || exec >&2
	cat <<EOF
usage: $prog [--builddir DIR] [--tmpdir DIR] [-n N] [-q Q]

Index N documents with a view (a map and _count) in barrelfs and in
PouchDB, then time Q key-range queries of 100 rows each, and compare.

  --builddir DIR   where bench_view is built (default .)
  --tmpdir DIR     where barrelfs's data goes (default \$TMPDIR, else
                   /dev/shm, else /tmp)
  -n N             documents (default 100000, at least 500)
  -q Q             range queries (default 1000)
  -h, --help       show this help
EOF
	exit "$1"
}

cleanup() {
	trap - EXIT INT TERM HUP
	[ -n "$tmp" ] && [ -d "$tmp" ] && rm -rf --one-file-system -- "$tmp"
}

# ---- the two sides ----

# Run side $1 ("$@" after it) for at most $limit seconds; its key=value
# lines into fig[], or state[$1] says why it failed.
run_side() {
	local side=$1 rc line why

	shift
	echo "view benchmark: ${label[$side]}: $docs documents, $queries queries"
	timeout -k 5 "$limit" "$@" >"$tmp/$side.out" 2>"$tmp/$side.err"
	rc=$?
	if [ "$rc" != 0 ]; then
		why=$(tail -n 5 "$tmp/$side.err" | tr '\n' ' ')
		[ "$rc" = 124 ] && why="timed out after $limit s $why"
		state[$side]="FAILED: exit $rc: ${why:-no output}"
		failed=1
		return
	fi
	while IFS= read -r line; do
		fig[$side.${line%%=*}]=${line#*=}
	done <"$tmp/$side.out"
	state[$side]=ok
}

# Do the sides that ran agree on every figure of agree[]?
check_agree() {
	local k

	[ "${state[barrelfs]}" = ok ] && [ "${state[pouchdb]}" = ok ] || return 0
	for k in "${agree[@]}"; do
		[ "${fig[barrelfs.$k]:-}" = "${fig[pouchdb.$k]:-}" ] && continue
		echo "$prog: the sides disagree on $k: barrelfs '${fig[barrelfs.$k]:-}'," \
			"PouchDB '${fig[pouchdb.$k]:-}'" >&2
		failed=1
	done
}

# ---- the report ----

# Figure $2 of side $1 as milliseconds per call ($3 calls), or "-".
per_call() {
	local v=${fig[$1.$2]:-}

	[ -n "$v" ] || { echo -; return; }
	calc '%.3f' "$v * 1000 / $3"
}

# A row: what, barrelfs's, PouchDB's and how many times faster barrelfs
# is (PouchDB's / barrelfs's; "higher" when a bigger figure is better).
row() {
	local what=$1 b=$2 p=$3 ratio=-

	if [ "$b" != - ] && [ "$p" != - ]; then
		if [ "$4" = higher ]; then
			ratio=$(calc '%.1fx' "$b / $p")
		else
			ratio=$(calc '%.1fx' "$p / $b")
		fi
	fi
	printf '%-34s %12s %12s %10s\n' "$what" "$b" "$p" "$ratio"
}

# A goal: text, how many times better, and the goal's minimum.
goal() {
	local met=MISSED times=$2x

	if [ "$2" = - ]; then
		met="n/a"
		times=-
	elif awk "BEGIN { exit !($2 >= $3) }"; then
		met=MET
	fi
	printf '  %-52s %-12s %8s  %s\n' "$1" "(goal >= $3x)" "$times" "$met"
}

side_cell() {
	[ "${state[$1]}" = ok ] || { echo -; return; }
	per_call "$1" "$2" "$3"
}

side_secs() {
	[ "${state[$1]}" = ok ] || { echo -; return; }
	calc '%.3f' "${fig[$1.$2]}"
}

index_rate() {
	[ "${state[$1]}" = ok ] || { echo -; return; }
	calc '%.0f' "$docs / ${fig[$1.index_s]}"
}

report() {
	local s b p br pr q=$queries g=${fig[barrelfs.group_runs]:-10}

	echo
	echo "view benchmark: $docs documents (${fig[barrelfs.doc_bytes]:-${fig[pouchdb.doc_bytes]:-?}} bytes" \
		"of JSON), map emit([doc.type, doc.n], doc.n), reduce _count;"
	echo "$queries key-range queries of 100 rows; barrelfs's data on $fstype ($tmpbase)"
	for s in "${sides[@]}"; do
		[ "${state[$s]}" = ok ] || printf '%-10s %s\n' "${label[$s]}" "${state[$s]}"
	done
	printf '%-34s %12s %12s %10s\n' "" barrelfs PouchDB "speedup"
	br=$(index_rate barrelfs)
	pr=$(index_rate pouchdb)
	row "index, documents/s" "$br" "$pr" higher
	row "index, s" "$(side_secs barrelfs index_s)" \
		"$(side_secs pouchdb index_s)" lower
	row "index, CPU s" "$(side_secs barrelfs index_cpu_s)" \
		"$(side_secs pouchdb index_cpu_s)" lower
	row "range query, ms" "$(side_cell barrelfs map_s "$q")" \
		"$(side_cell pouchdb map_s "$q")" lower
	row "range query include_docs, ms" "$(side_cell barrelfs docs_s "$q")" \
		"$(side_cell pouchdb docs_s "$q")" lower
	row "the same documents by id, ms" "$(side_cell barrelfs bydoc_s "$q")" - lower
	row "range _count group_level=1, ms" "$(side_cell barrelfs reduce_s "$q")" \
		"$(side_cell pouchdb reduce_s "$q")" lower
	row "whole view group_level=1, ms" "$(side_cell barrelfs group_s "$g")" \
		"$(side_cell pouchdb group_s "$g")" lower
	echo
	echo "goals:"
	p=-
	[ "$br" != - ] && [ "$pr" != - ] && p=$(calc '%.1f' "$br / $pr")
	goal "indexing, barrelfs / PouchDB documents/s" "$p" 10
	p=-
	[ "$br" != - ] && [ "$pr" != - ] &&
		p=$(calc '%.1f' "${fig[pouchdb.index_cpu_s]} / ${fig[barrelfs.index_cpu_s]}")
	goal "  the same in CPU time" "$p" 10
	b=-
	[ "${state[barrelfs]}" = ok ] &&
		b=$(calc '%.1f' "${fig[barrelfs.bydoc_s]} / ${fig[barrelfs.map_s]}")
	goal "range query, times faster than by id" "$b" 1
	echo
	echo "load (not timed above): barrelfs docdb_put of 1000 a commit" \
		"$(side_secs barrelfs load_s) s, PouchDB bulkDocs of 1000" \
		"$(side_secs pouchdb load_s) s"
	echo "each side alone, one after the other; figures of one run (ms: the mean"
	echo "of the $queries queries, of $g for the whole view); queries wait for"
	echo "freshness (barrelfs update=true, PouchDB's default); CPU s: of the"
	echo "whole process while indexing (on a busy machine the wall clock also"
	echo "counts the waits for a core); load average at the start: $load"
}

# ---- main ----

while [ $# -gt 0 ]; do
	case $1 in
	--builddir) [ $# -ge 2 ] || usage 2; builddir=$2; shift 2 ;;
	--builddir=*) builddir=${1#*=}; shift ;;
	--tmpdir) [ $# -ge 2 ] || usage 2; tmpbase=$2; shift 2 ;;
	--tmpdir=*) tmpbase=${1#*=}; shift ;;
	-n) [ $# -ge 2 ] || usage 2; docs=$2; shift 2 ;;
	-q) [ $# -ge 2 ] || usage 2; queries=$2; shift 2 ;;
	-h | --help) usage 0 ;;
	*) echo "$prog: unknown argument '$1'" >&2; usage 2 ;;
	esac
done
number -n "$docs"
number -q "$queries"
[ "$queries" -le 1000000 ] || { echo "$prog: -q: at most 1000000" >&2; usage 2; }
if [ "$docs" -lt 500 ] || [ "$docs" -gt 1000000 ]; then
	echo "$prog: -n: 500 to 1000000" >&2
	usage 2
fi
builddir=$(cd "$builddir" && pwd -P) || die "no build directory"
if [ -z "$tmpbase" ]; then
	tmpbase=${TMPDIR:-}
	[ -n "$tmpbase" ] || { [ -w /dev/shm ] && tmpbase=/dev/shm; } || tmpbase=/tmp
fi
tmpbase=$(cd "$tmpbase" && pwd -P) || die "no directory $tmpbase"
limit=$((120 + docs / 50 + queries / 10))   # seconds for one side

[ -x "$builddir/bench_view" ] || {
	echo "view benchmark skipped: no $builddir/bench_view"
	exit 0
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
tmp=$(mktemp -d "$tmpbase/bench-view.XXXXXX") || die "cannot make a temporary directory"
fstype=$(stat -f -c %T "$tmp")
read -r load _ </proc/loadavg || load='?'

run_side barrelfs "$builddir/bench_view" --tmpdir "$tmp" -n "$docs" -q "$queries"
if ! command -v node >/dev/null 2>&1; then
	state[pouchdb]="skipped: no node (Debian package nodejs)"
else
	state[pouchdb]=
	for m in pouchdb-core pouchdb-adapter-memory pouchdb-mapreduce; do
		[ -d "$srcdir/tests/sync/node_modules/$m" ] ||
			state[pouchdb]="skipped: no tests/sync/node_modules/$m: run 'npm ci --prefix tests/sync'"
	done
	[ -n "${state[pouchdb]}" ] ||
		run_side pouchdb node "$srcdir/tools/bench_view.js" -n "$docs" -q "$queries"
fi
check_agree
report
exit "$failed"
