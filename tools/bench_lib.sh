# shellcheck shell=bash
# The helpers of the shell benchmarks (bench_mount.sh, bench_sync.sh,
# bench_view.sh), sourced by them: errors, option checking, and the
# report (awk does the arithmetic; each prints one formatted number or
# one row).

# die MESSAGE: the script's name and MESSAGE on stderr, exit 1.
# shellcheck disable=SC2154  # prog is the sourcing script's
die() {
	echo "$prog: $*" >&2
	exit 1
}

# number OPTION VALUE: VALUE must be a positive decimal of at most seven
# digits, else the script's usage (it defines $prog and usage()).
# shellcheck disable=SC2154  # prog is the sourcing script's
number() {
	case $2 in
	'' | *[!0-9]* | 0*) echo "$prog: bad $1 '$2'" >&2; usage 2 ;;
	esac
	[ "${#2}" -le 7 ] || { echo "$prog: $1: too large" >&2; usage 2; }
}

# The median of the numbers given.
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
		END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# calc FORMAT EXPR: EXPR computed by awk, printed with printf FORMAT.
calc() {
	awk "BEGIN { printf \"$1\", $2 }"
}

# Print row label $1 then the cells "${@:2}", right-aligned: the label in
# $ROW_LABEL_WIDTH columns, each cell in $ROW_CELL_WIDTH.
row() {
	printf "%-${ROW_LABEL_WIDTH}s" "$1"
	shift
	printf " %${ROW_CELL_WIDTH}s" "$@"
	printf '\n'
}
