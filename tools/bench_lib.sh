# shellcheck shell=bash
# The report helpers of the shell benchmarks (bench_mount.sh,
# bench_sync.sh), sourced by them. awk does the arithmetic; each prints
# one formatted number or one row.

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
