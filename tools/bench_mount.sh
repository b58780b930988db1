#!/usr/bin/env bash
# The mount benchmark of `make bench`: the small-file workload of bench_fs
# (tools/bench_fs.c: create, stat, read, rewrite through a rename, delete
# N JSON files of ~1 KiB) on three targets, each on a fresh mount:
#
#   tmpfs                 a tmpfs: the kernel alone, no FUSE;
#   passthrough_ll/tmpfs  libfuse's passthrough_ll example, with its
#                         defaults, over a tmpfs: FUSE with a daemon that
#                         does next to nothing; built here, at each run,
#                         from the libfuse3-dev examples, into the temporary
#                         area (never part of the tree);
#   barrelfs              BUILDDIR/barrelfs -f DATADIR MNT, DATADIR a fresh
#                         directory on a tmpfs, the files in MNT/bench (a
#                         database); "not built" until the build makes it.
#
# Every target's files live on tmpfs so that none pays for a disk: with
# DATADIR on a disk, a mount that makes close() durable would pay a flush
# per file that tmpfs and passthrough_ll never pay.
#
# The report: ops/s per target and phase; barrelfs against passthrough_ll,
# PASS or MISS per phase against the goals; the time per operation; and the
# cost of one bare FUSE round trip (statfs, which the kernel never caches).
#
# Needs root (mount) and /dev/fuse; without them it prints "skipped" and
# exits 0. Exit status 1 when a target failed (a call failed, data came
# back wrong, a mount did not come up), 2 on bad usage. A missed goal and
# a target that is not built are not failures.
#
# Everything it mounts is under BUILDDIR/bench-mount.XXXXXX; on exit, even
# on an error or a signal, it unmounts all of it, stops the daemons it
# started (their pids only; every wait is bounded), and removes the area.

# cleanup runs from a trap and bench_<target> by name: shellcheck cannot
# see that they and what they call are reachable.
# shellcheck disable=SC2317

set -u

prog=bench_mount.sh
# shellcheck source=tools/bench_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
ROW_LABEL_WIDTH=24 ROW_CELL_WIDTH=11
builddir=.
files=10000
rounds=3
pt_src=${PASSTHROUGH_LL_SRC:-/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c}

targets=(tmpfs passthrough barrelfs)
phases=(create stat read rewrite delete)
declare -A label=([tmpfs]=tmpfs [passthrough]=passthrough_ll/tmpfs
		  [barrelfs]=barrelfs)
# barrelfs / passthrough_ll, ops/s: at least this many times.
declare -A goal=([create]=1.5 [stat]=3 [read]=3 [rewrite]=1.5 [delete]=1.5)

declare -A rate=() usop=()  # [target.phase]: ops/s, microseconds per op
declare -A rates=() usops=()  # the same, every round's, space-separated
declare -A state=()         # [target]: ok, FAILED, "not built[: why]"
declare -A reason=()        # [target]: why it FAILED, in a few words
notes=()                    # printed under the report
failed=0

tmp=                        # the temporary area, once made
mounts=()                   # every mount point mounted, in order
declare -A daemon=()        # [FUSE mount point]: pid of its daemon
runner=                     # pid of the bench_fs or mkdir running now
gone_status=0               # exit status of the child wait_gone saw end

# Print the usage, on standard error unless $1 is 0, and exit $1.
usage() {
	[ "$1" = 0 ] || exec >&2
	cat <<EOF
usage: $prog [--builddir DIR] [--files N] [--rounds R]

Time create, stat, read, rewrite and delete of N JSON files of ~1 KiB on
tmpfs, on libfuse's passthrough_ll over tmpfs, and on barrelfs (DATADIR on
tmpfs), and compare barrelfs with passthrough_ll. Needs root and /dev/fuse.

  --builddir DIR   where bench_fs and barrelfs are built (default .)
  --files N        files per target (default 10000)
  --rounds R       rounds over every target, the median shown (default 3)
  -h, --help       show this help
EOF
	exit "$1"
}

# ---- mounts ----

# Whether the path $1 is a mount point, from /proc/self/mountinfo alone
# (never touching the path: a hung FUSE daemon cannot block this).
is_mounted() {
	local want=$1 mp _

	want=${want//\\/\\134}
	want=${want// /\\040}
	want=${want//$'\t'/\\011}
	while read -r _ _ _ _ mp _; do
		[ "$mp" = "$want" ] && return 0
	done </proc/self/mountinfo
	return 1
}

# Whether anything is mounted at or below the directory $1.
any_mounted_under() {
	local base=$1 mp _

	base=${base//\\/\\134}
	base=${base// /\\040}
	base=${base//$'\t'/\\011}
	while read -r _ _ _ _ mp _; do
		case $mp in "$base" | "$base"/*) return 0 ;; esac
	done </proc/self/mountinfo
	return 1
}

mount_tmpfs() {
	mkdir -p "$1" || return 1
	mount -t tmpfs -o mode=0755 bench-mount "$1" || return 1
	mounts+=("$1")
}

umount_tmpfs() {
	is_mounted "$1" || return 0
	timeout 10 umount "$1" 2>/dev/null || umount -l "$1"
}

# Wait up to $2 seconds for our child $1 to exit; 0 when it has, with its
# exit status in gone_status.
wait_gone() {
	local pid=$1 tenths=$(($2 * 10))

	while kill -0 "$pid" 2>/dev/null; do
		[ "$tenths" -gt 0 ] || return 1
		tenths=$((tenths - 1))
		sleep 0.1
	done
	wait "$pid" 2>/dev/null
	gone_status=$?
	return 0
}

# Start the FUSE daemon "$@" (in the foreground mode, as our child) for the
# mount point $1, its output in $tmp/$2.log; wait up to 20 s for the mount.
# passthrough_ll holds a descriptor per file it has seen: every daemon may
# open as many files as the hard limit allows.
start_fuse() {
	local mnt=$1 name=$2 pid tenths=200 hard

	shift 2
	mkdir -p "$mnt" || return 1
	hard=$(ulimit -Hn)
	(
		ulimit -Sn "$hard"
		exec "$@"
	) >"$tmp/$name.log" 2>&1 &
	pid=$!
	mounts+=("$mnt")
	daemon[$mnt]=$pid
	until is_mounted "$mnt"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid"
			notes+=("$name exited with status $? before mounting; its output:")
			notes+=("$(tail -n 5 "$tmp/$name.log")")
			return 1
		fi
		if [ "$tenths" -le 0 ]; then
			notes+=("$name: no mount at $mnt after 20 s")
			return 1
		fi
		tenths=$((tenths - 1))
		sleep 0.1
	done
}

# Unmount the FUSE mount $1 and stop its daemon: the unmount ends it; if
# not within 10 s, SIGTERM, then SIGKILL (which aborts the connection).
stop_fuse() {
	local mnt=$1 pid=${daemon[$1]:-}

	if is_mounted "$mnt"; then
		timeout 10 fusermount3 -u "$mnt" 2>/dev/null ||
			timeout 10 umount "$mnt" 2>/dev/null
	fi
	if [ -n "$pid" ]; then
		wait_gone "$pid" 10 ||
			{ kill -TERM "$pid" 2>/dev/null; wait_gone "$pid" 5; } ||
			{ kill -KILL "$pid" 2>/dev/null; wait_gone "$pid" 5; } ||
			echo "$prog: daemon $pid of $mnt did not exit" >&2
		unset "daemon[$mnt]"
	fi
	if is_mounted "$mnt"; then
		umount -l "$mnt" 2>/dev/null ||
			echo "$prog: could not unmount $mnt" >&2
	fi
}

cleanup() {
	local i mnt

	trap - EXIT INT TERM HUP
	# A runner stuck on a FUSE request ends once its daemon is stopped.
	[ -z "$runner" ] || kill -KILL "$runner" 2>/dev/null
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
		mnt=${mounts[i]}
		if [ -n "${daemon[$mnt]+set}" ]; then
			stop_fuse "$mnt"
		else
			umount_tmpfs "$mnt"
		fi
	done
	[ -z "$runner" ] || wait_gone "$runner" 5 ||
		echo "$prog: $runner did not exit" >&2
	[ -n "$tmp" ] && [ -d "$tmp" ] || return 0
	if any_mounted_under "$tmp"; then
		echo "$prog: left $tmp: something is still mounted there" >&2
	else
		rm -rf --one-file-system -- "$tmp"
	fi
}

# ---- running a target ----

# Run "$@" as our child for at most $1 seconds; return its exit status, or
# 124 when it timed out and was killed. A process waiting on a FUSE request
# that the daemon took and never answers cannot be killed: then the daemon
# of the mount $2 (none for "") is stopped, which aborts the request.
run_bounded() {
	local secs=$1 mnt=$2

	shift 2
	"$@" &
	runner=$!
	if wait_gone "$runner" "$secs"; then
		runner=
		return "$gone_status"
	fi
	kill -TERM "$runner" 2>/dev/null
	wait_gone "$runner" 5 ||
		{ kill -KILL "$runner" 2>/dev/null; wait_gone "$runner" 5; } ||
		{ [ -n "$mnt" ] && stop_fuse "$mnt" && wait_gone "$runner" 10; } ||
		echo "$prog: $1 ($runner) did not exit" >&2
	runner=
	return 124
}

# Run bench_fs in the new directory $2 of target $1, which is on the FUSE
# mount $3 (or "" for none); fill rate and usop.
run_bench() {
	local t=$1 dir=$2 mnt=$3 out=$tmp/$1.out err=$tmp/$1.err rc
	local phase r u _

	run_bounded 30 "$mnt" mkdir "$dir" 2>"$err"
	rc=$?
	if [ "$rc" = 124 ]; then
		fail "$t" "mkdir timed out after 30 s"
		return
	elif [ "$rc" != 0 ]; then
		fail "$t" "mkdir failed" "$(head -n 1 "$err")"
		return
	fi
	run_bounded "$limit" "$mnt" "$bench_fs" --files "$files" "$dir" \
		>"$out" 2>"$err"
	rc=$?
	while read -r phase _ _ r u; do
		rates[$t.$phase]+="$r "
		usops[$t.$phase]+="$u "
	done <"$out"
	case $rc in
	0) state[$t]=ok ;;
	124) fail "$t" "bench_fs timed out after $limit s" ;;
	*) fail "$t" "bench_fs failed" "$(head -n 3 "$err")" ;;
	esac
}

# Mark target $1 failed for the reason $2 (a few words); $3, if any, goes
# under the report.
fail() {
	state[$1]=FAILED
	reason[$1]=$2
	notes+=("${label[$1]}: ${3:-$2}")
	failed=1
}

bench_tmpfs() {
	mount_tmpfs "$tmp/tmpfs" || { fail tmpfs "mount failed"; return; }
	run_bench tmpfs "$tmp/tmpfs/bench" ""
	umount_tmpfs "$tmp/tmpfs"
}

# Build passthrough_ll into the temporary area; 1 (why in notes) when not.
build_passthrough() {
	local src=$pt_src flags

	if [ ! -r "$src" ]; then
		state[passthrough]="not built: no $src (libfuse3-dev)"
		return 1
	fi
	if ! flags=$(pkg-config --cflags --libs fuse3 2>/dev/null); then
		state[passthrough]="not built: pkg-config finds no fuse3"
		return 1
	fi
	# $flags is a list of words: unquoted on purpose.
	# shellcheck disable=SC2086
	if ! ${CC:-cc} -O2 -I"${src%/*}" -o "$tmp/passthrough_ll" "$src" \
		$flags >"$tmp/passthrough_ll.cc.log" 2>&1; then
		state[passthrough]="not built: the compiler failed"
		notes+=("passthrough_ll: $(tail -n 3 "$tmp/passthrough_ll.cc.log")")
		return 1
	fi
}

bench_passthrough() {
	local back=$tmp/passthrough-source mnt=$tmp/passthrough hard

	build_passthrough || return
	hard=$(ulimit -Hn)
	if [ "$hard" != unlimited ] && [ "$hard" -lt $((files + 1024)) ]; then
		notes+=("passthrough_ll: warning: it keeps a descriptor per file;
  the open file limit, $hard, is low for $files files")
	fi
	mount_tmpfs "$back" || { fail passthrough "mount failed"; return; }
	# fuse -o values escape their commas.
	if start_fuse "$mnt" passthrough_ll "$tmp/passthrough_ll" -f \
		-o "source=${back//,/\\,}" "$mnt"; then
		run_bench passthrough "$mnt/bench" "$mnt"
	else
		fail passthrough "the mount did not come up"
	fi
	stop_fuse "$mnt"
	umount_tmpfs "$back"
}

bench_barrelfs() {
	local back=$tmp/barrelfs-data mnt=$tmp/barrelfs

	if [ ! -x "$builddir/barrelfs" ]; then
		state[barrelfs]="not built"
		return
	fi
	mount_tmpfs "$back" || { fail barrelfs "mount failed"; return; }
	mkdir "$back/data" || { fail barrelfs "mkdir DATADIR failed"; return; }
	if start_fuse "$mnt" barrelfs "$builddir/barrelfs" -f "$back/data" \
		"$mnt"; then
		run_bench barrelfs "$mnt/bench" "$mnt"
	else
		fail barrelfs "the mount did not come up"
	fi
	stop_fuse "$mnt"
	umount_tmpfs "$back"
}

# ---- the report ----

# The cells of target $1 from the array named $2, in format $3.
cells() {
	local t=$1 fmt=$3 p v seen_gap=0
	local -n a=$2

	for p in "${phases[@]}" "${@:4}"; do
		v=${a[$t.$p]:-}
		if [ -n "$v" ]; then
			calc "$fmt" "$v"
			echo
		elif [ "${state[$t]}" = FAILED ] && [ "$seen_gap" = 0 ]; then
			echo FAILED
			seen_gap=1
		else
			echo -
		fi
	done
}

print_rows() {
	local arr=$1 fmt=$2 t cell

	shift 2
	for t in "${targets[@]}"; do
		if [ -z "${rate[$t.${phases[0]}]:-}" ]; then
			printf '%-24s %s\n' "${label[$t]}" \
				"${state[$t]:-}${reason[$t]:+: ${reason[$t]}}"
			continue
		fi
		mapfile -t cell < <(cells "$t" "$arr" "$fmt" "$@")
		row "${label[$t]}" "${cell[@]}"
	done
}

ratio_cells() {
	local p b a x

	for p in "${phases[@]}"; do
		b=${rate[barrelfs.$p]:-} a=${rate[passthrough.$p]:-}
		if [ -z "$b" ] || [ -z "$a" ]; then
			echo -
			continue
		fi
		x=$(calc '%.2f' "($a > 0 ? $b / $a : 0)")
		if awk "BEGIN { exit !($x >= ${goal[$p]}) }"; then
			echo "${x}x PASS"
		else
			echo "${x}x MISS"
		fi
	done
}

report() {
	local cell p

	echo
	echo "mount benchmark: $files JSON files of ~1 KiB (ops/s)"
	row target "${phases[@]}"
	print_rows rate '%.0f'
	mapfile -t cell < <(ratio_cells)
	row "barrelfs / passthrough" "${cell[@]}"
	cell=()
	for p in "${phases[@]}"; do cell+=(">= ${goal[$p]}x"); done
	row "goal" "${cell[@]}"

	echo
	echo "time per operation (us); statfs: never cached, on FUSE one bare round trip"
	row target "${phases[@]}" statfs
	print_rows usop '%.2f' statfs
	if [ -n "${usop[passthrough.statfs]:-}" ] && [ -n "${usop[tmpfs.statfs]:-}" ]; then
		echo "FUSE round trip (passthrough_ll statfs - tmpfs statfs):" \
			"$(calc '%.2f' "${usop[passthrough.statfs]} - ${usop[tmpfs.statfs]}") us"
	fi
	echo
	echo "files on tmpfs for every target (barrelfs: DATADIR on tmpfs), so no disk"
	echo "and no fsync cost anywhere; warm page cache; each phase once per round,"
	echo "in order; the median of the rounds."
	echo "passthrough_ll runs with its defaults: cache=auto (1 s entry and"
	echo "attribute timeout, kept page cache), no writeback cache, multi-threaded."
	[ "${#notes[@]}" -eq 0 ] || printf '%s\n' "${notes[@]}"
}

# ---- main ----

while [ $# -gt 0 ]; do
	case $1 in
	--builddir) [ $# -ge 2 ] || usage 2; builddir=$2; shift 2 ;;
	--builddir=*) builddir=${1#*=}; shift ;;
	--files) [ $# -ge 2 ] || usage 2; files=$2; shift 2 ;;
	--files=*) files=${1#*=}; shift ;;
	--rounds) [ $# -ge 2 ] || usage 2; rounds=$2; shift 2 ;;
	--rounds=*) rounds=${1#*=}; shift ;;
	-h | --help) usage 0 ;;
	*) echo "$prog: unknown argument '$1'" >&2; usage 2 ;;
	esac
done
number --files "$files"
number --rounds "$rounds"
if [ "$files" -gt 1000000 ]; then
	echo "$prog: --files: at most 1000000" >&2
	usage 2
fi
builddir=$(cd "$builddir" && pwd -P) || die "no build directory"
bench_fs=$builddir/bench_fs
[ -x "$bench_fs" ] || die "$bench_fs is missing: run make first"
limit=$((60 + files / 50))  # seconds for one target's bench_fs

if [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ]; then
	echo "mount benchmark skipped: needs root and /dev/fuse"
	exit 0
fi

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
tmp=$(mktemp -d "$builddir/bench-mount.XXXXXX") || die "cannot make a temporary directory"
case $tmp in *$'\n'*) die "a newline in $tmp" ;; esac
if ! mount_tmpfs "$tmp/probe" 2>/dev/null; then
	echo "mount benchmark skipped: needs root and /dev/fuse (mount -t tmpfs failed)"
	exit 0
fi
umount_tmpfs "$tmp/probe"

# What goes to standard error while a target runs (ours, and the shell's
# word on a daemon it had to kill) is put under the report.
# Rounds go over every target in turn, so that a noisy moment of the
# machine falls on all of them; the report shows each phase's median.
for ((round = 1; round <= rounds; round++)); do
	for t in "${targets[@]}"; do
		[ "${state[$t]:-ok}" = ok ] || continue
		printf 'mount benchmark: round %d/%d: running %s ' "$round" \
			"$rounds" "${label[$t]}"
		start=$SECONDS
		"bench_$t" 2>"$tmp/$t.stderr"
		echo "${state[$t]:-} in $((SECONDS - start)) s"
		[ ! -s "$tmp/$t.stderr" ] || notes+=("$(cat "$tmp/$t.stderr")")
	done
done
for key in "${!rates[@]}"; do
	rate[$key]=$(median ${rates[$key]})
	usop[$key]=$(median ${usops[$key]})
done
report
exit "$failed"
