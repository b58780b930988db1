# Shared by the mount tests (tests/fs/test_mount_*.sh); sourced, not run.
#
# A test script calls, in order:
#   fs_init NAME           find barrelfs (exit 99 when it is not built), skip
#                          (exit 77) without /dev/fuse, fusermount3 or jq,
#                          make $tmp with $data (DATADIR), $mnt, $work, $log
#   fs_start [OPTS]        mount: `barrelfs -f -o grace=1[,OPTS] $data $mnt`
#   run_case FUNC NAME [S] run one case in a subshell under `set -e`, with a
#                          watchdog of S seconds (default 120); prints
#                          `ok N - NAME` or `not ok N - NAME` and the reason
#   run_step FUNC NAME     the same in this shell, for steps that change
#                          the mount (fs_remount, fs_unmount); a failed step
#                          stops the cases after it
#   fs_done                print the plan; exit 1 if a case failed, else 77
#                          if one was skipped, else 0
#
# Only the barrelfs this shell started is ever signalled, by its pid; the
# EXIT trap unmounts it, waits for it, and removes $tmp (never across a
# mount: a $mnt still mounted is left alone and reported).
#
# Environment: abs_top_builddir (set by make check), or BARRELFS and
# BARRELCTL naming the programs; BARRELFS_KEEP=1 keeps $tmp for a look.

export LC_ALL=C
umask 022

t_n=0          # cases run
t_fail=0       # cases failed
t_skip=0       # cases skipped
t_bail=        # why the remaining cases cannot run, once a step failed
fs_pid=        # the barrelfs this shell started, while it runs
wd_pid=        # the watchdog of the running case
tmp=

skip_all() { echo "SKIP: $*" >&2; exit 77; }
error_all() { echo "ERROR: $*" >&2; exit 99; }

# fs_init NAME: the programs, the FUSE checks, the temporary directories.
fs_init() {
	local c

	bfs=${BARRELFS:-${abs_top_builddir:-.}/barrelfs}
	[ -x "$bfs" ] || error_all "barrelfs is not built: no executable $bfs" \
		"(run make, or set BARRELFS=/path/to/barrelfs)"
	ctl=${BARRELCTL:-${abs_top_builddir:-.}/barrelctl}
	[ -x "$ctl" ] || ctl=
	[ -e /dev/fuse ] || skip_all "no /dev/fuse"
	command -v fusermount3 >/dev/null 2>&1 ||
		skip_all "no fusermount3 (Debian package fuse3)"
	command -v jq >/dev/null 2>&1 || skip_all "no jq (Debian package jq)"
	[ -r /proc/self/mountinfo ] || skip_all "no /proc/self/mountinfo"

	tmp=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX") || error_all "mktemp"
	tmp=$(cd "$tmp" && pwd -P) || error_all "cd $tmp"
	data=$tmp/data
	mnt=$tmp/mnt
	work=$tmp/work
	log=$tmp/barrelfs.log
	mkdir "$data" "$mnt" "$work" || error_all "mkdir in $tmp"
	: >"$log"
	trap fs_cleanup EXIT
	trap 'exit 1' HUP INT TERM
	for c in "$bfs" "${ctl:-}"; do
		[ -n "$c" ] && echo "# using $c"
	done
	return 0
}

# alive PID: PID is running (a zombie waiting for `wait` is not).
alive() {
	local st

	{ read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
	st=${st##*) }
	[ "${st%% *}" != Z ]
}

# is_mounted: something is mounted on $mnt. Reads the mount table, never
# the mount itself, so it cannot hang on a stuck server.
is_mounted() {
	awk -v m="$mnt" '$5 == m { found = 1 } END { exit !found }' \
		/proc/self/mountinfo
}

# fs_stop_pid: the mount would not come up or go away; end our barrelfs.
fs_stop_pid() {
	local i=0

	kill -TERM "$fs_pid" 2>/dev/null
	while alive "$fs_pid" && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	alive "$fs_pid" && kill -KILL "$fs_pid" 2>/dev/null
	wait "$fs_pid" 2>/dev/null
	fs_pid=
}

# fs_mount [OPTS]: start barrelfs in the foreground and wait (at most 10 s)
# until $mnt is mounted and answers a stat. 1 with the reason when not.
fs_mount() {
	local opts="grace=1${1:+,$1}" i=0 rc

	echo "=== barrelfs -f -o $opts DATADIR MNT" >>"$log"
	"$bfs" -f -o "$opts" "$data" "$mnt" >>"$log" 2>&1 &
	fs_pid=$!
	until is_mounted; do
		if ! alive "$fs_pid"; then
			wait "$fs_pid"
			rc=$?
			fs_pid=
			echo "barrelfs exited with status $rc before mounting" >&2
			return 1
		fi
		i=$((i + 1))
		if [ $i -gt 100 ]; then
			echo "barrelfs did not mount $mnt within 10 s" >&2
			fs_stop_pid
			return 1
		fi
		sleep 0.1
	done
	if ! timeout 10 stat "$mnt/.status" >/dev/null; then
		echo "the mount does not answer: stat $mnt/.status failed" >&2
		fusermount3 -u -z "$mnt" 2>/dev/null
		fs_stop_pid
		return 1
	fi
	return 0
}

# fs_unmount: fusermount3 -u, then wait for barrelfs (at most 30 s to
# commit and exit). Its exit status; it must be 0 for a clean unmount.
fs_unmount() {
	local i=0 rc

	[ -n "$fs_pid" ] || return 0
	while is_mounted; do
		fusermount3 -u "$mnt" 2>"$tmp/umount.err" && break
		i=$((i + 1))
		if [ $i -ge 50 ]; then
			echo "fusermount3 -u failed for 5 s:" \
				"$(cat "$tmp/umount.err")" >&2
			fs_stop_pid
			fusermount3 -u -z "$mnt" 2>/dev/null
			return 1
		fi
		sleep 0.1
	done
	i=0
	while alive "$fs_pid"; do
		i=$((i + 1))
		if [ $i -gt 300 ]; then
			echo "barrelfs still runs 30 s after the unmount" >&2
			fs_stop_pid
			return 1
		fi
		sleep 0.1
	done
	wait "$fs_pid"
	rc=$?
	fs_pid=
	[ $rc -eq 0 ] || echo "barrelfs exited with status $rc" >&2
	return $rc
}

# fs_remount [OPTS]: a clean unmount (status 0), then mount again.
fs_remount() {
	fs_unmount || return 1
	fs_mount "${1:-}"
}

# fs_start [OPTS]: the first mount of a script. A mount that the system
# refuses (no permission to mount FUSE here) skips; any other failure
# ends the script.
fs_start() {
	fs_mount "${1:-}" 2>"$tmp/mount.err" && return 0
	cat "$tmp/mount.err" >&2
	if grep -Eqi 'fusermount3?: .*(permission denied|not permitted)|fuse: device not found|mount failed: operation not permitted' \
		"$log" "$tmp/mount.err"; then
		tail -n 20 "$log" >&2
		skip_all "FUSE mounts are not permitted here"
	fi
	echo "Bail out! barrelfs does not mount; its log:"
	sed 's/^/# /' "$log" | tail -n 40
	exit 1
}

fs_cleanup() {
	watchdog_stop
	if [ -n "$fs_pid" ]; then
		fs_unmount >/dev/null 2>&1 || true
	fi
	[ -n "$tmp" ] || return
	is_mounted && fusermount3 -u -z "$mnt" 2>/dev/null
	if is_mounted; then
		echo "$mnt is still mounted: left $tmp in place" >&2
	elif [ -n "${BARRELFS_KEEP:-}" ]; then
		echo "kept $tmp" >&2
	else
		rm -rf --one-file-system "$tmp"
	fi
}

# watchdog_start SECONDS NAME: after SECONDS, kill our barrelfs; every
# request waiting on it then fails (ENOTCONN), so a hung case ends.
watchdog_start() {
	local victim=$fs_pid

	(
		s=
		trap '[ -n "$s" ] && kill "$s" 2>/dev/null && wait "$s"; exit 0' TERM
		sleep "$1" &
		s=$!
		wait "$s"
		echo "watchdog: still running after $1 s:" \
			"killed barrelfs${victim:+ (pid $victim)}" >"$tmp/watchdog"
		[ -n "$victim" ] && kill -KILL "$victim" 2>/dev/null
	) &
	wd_pid=$!
}

watchdog_stop() {
	[ -n "$wd_pid" ] || return 0
	kill "$wd_pid" 2>/dev/null
	wait "$wd_pid" 2>/dev/null
	wd_pid=
}

# t_report NAME RC OUTFILE: print the result line of a case.
t_report() {
	case $2 in
	0)
		echo "ok $t_n - $1" ;;
	77)
		t_skip=$((t_skip + 1))
		echo "ok $t_n - $1 # SKIP $(tail -n 1 "$3")" ;;
	*)
		t_fail=$((t_fail + 1))
		echo "not ok $t_n - $1"
		head -n 60 "$3" | sed 's/^/#   /' ;;
	esac
	if [ -e "$tmp/watchdog" ]; then
		sed 's/^/#   /' "$tmp/watchdog"
		rm -f "$tmp/watchdog"
	fi
	if [ -n "$fs_pid" ] && ! alive "$fs_pid"; then
		t_bail="barrelfs (pid $fs_pid) died"
		echo "# $t_bail; its log:"
		tail -n 30 "$log" | sed 's/^/#   /'
	fi
}

# run_case FUNC NAME [SECONDS]
run_case() {
	local rc

	t_n=$((t_n + 1))
	if [ -n "$t_bail" ]; then
		t_fail=$((t_fail + 1))
		echo "not ok $t_n - $2 # not run: $t_bail"
		return
	fi
	watchdog_start "${3:-${FS_CASE_TIMEOUT:-120}}" "$2"
	(
		set -eE
		shopt -s inherit_errexit
		trap 'echo "line $LINENO: \`$BASH_COMMAND\` failed (status $?)" >&2' ERR
		trap case_reap EXIT
		case_pids=" "
		cd "$work"
		"$1"
	) >"$tmp/case.out" 2>&1 </dev/null
	rc=$?
	watchdog_stop
	t_report "$2" $rc "$tmp/case.out"
}

# run_step FUNC NAME: FUNC runs in this shell and returns its status.
run_step() {
	local rc

	t_n=$((t_n + 1))
	if [ -n "$t_bail" ]; then
		t_fail=$((t_fail + 1))
		echo "not ok $t_n - $2 # not run: $t_bail"
		return
	fi
	watchdog_start 120 "$2"
	"$1" >"$tmp/case.out" 2>&1 </dev/null
	rc=$?
	watchdog_stop
	t_report "$2" $rc "$tmp/case.out"
	[ $rc -eq 0 ] || [ -n "$t_bail" ] || t_bail="step \"$2\" failed"
}

fs_done() {
	echo "1..$t_n"
	if [ $t_fail -ne 0 ]; then
		echo "# $t_fail of $t_n failed; the end of the barrelfs log:"
		tail -n 40 "$log" | sed 's/^/#   /'
		exit 1
	fi
	if [ $t_skip -ne 0 ]; then
		echo "# $t_skip of $t_n skipped: the test did not run whole"
		exit 77
	fi
	exit 0
}

# ---- for the cases (they run under set -e; die and skip end one case) ----

die() { echo "$*" >&2; exit 1; }
skip() { echo "$*"; exit 77; }

# need CMD PACKAGE: skip this case without CMD.
need() {
	command -v "$1" >/dev/null 2>&1 || skip "no $1 (Debian package $2)"
}

# bg CMD...: start CMD in the background; the case's exit kills it if it
# is still running. bg_wait PID waits for it and returns its status.
bg() {
	"$@" &
	case_pids="$case_pids$! "
}

bg_wait() {
	local rc=0

	wait "$1" || rc=$?
	case_pids=${case_pids/ $1 / }
	return $rc
}

case_reap() {
	local p

	trap - ERR
	for p in $case_pids; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null || true
	done
}

# daemon_pids: the pids of a detached barrelfs (not our child: mount -t,
# or barrelfs without -f), found by this test's unique mountpoint in its
# command line; a test signals them only when an unmount did not end them.
daemon_pids() {
	local d

	for d in /proc/[0-9]*; do
		tr '\0' ' ' 2>/dev/null <"$d/cmdline" | grep -qF " $mnt" &&
			echo "${d#/proc/}"
	done
	return 0
}

# api PATH [CURL ARGS]: a request to the mount's API socket.
api() {
	local p=$1

	shift
	curl -sS --max-time 30 --unix-socket "$data/api.sock" "$@" \
		"http://localhost$p"
}

# wait_until SECONDS CMD...: poll CMD every 0.1 s; 1 if it never succeeds.
wait_until() {
	local n=$(($1 * 10)) i=0

	shift
	until "$@"; do
		i=$((i + 1))
		[ $i -lt $n ] || return 1
		sleep 0.1
	done
}

# The strerror text of each errno the cases expect (LC_ALL=C).
errno_text() {
	case $1 in
	ENOENT) echo "No such file or directory" ;;
	EEXIST) echo "File exists" ;;
	ENOTEMPTY) echo "Directory not empty" ;;
	EISDIR) echo "Is a directory" ;;
	ENOTDIR) echo "Not a directory" ;;
	ENAMETOOLONG) echo "File name too long" ;;
	EXDEV) echo "Invalid cross-device link" ;;
	EINVAL) echo "Invalid argument" ;;
	EPERM) echo "Operation not permitted" ;;
	EACCES) echo "Permission denied" ;;
	ENOTSUP) echo "Operation not supported" ;;
	EFBIG) echo "File too large" ;;
	*) echo "errno_text: unknown $1" >&2; return 1 ;;
	esac
}

# expect_errno ERRNO WHAT CMD...: CMD fails, saying ERRNO's text.
expect_errno() {
	local e=$1 what=$2 text

	shift 2
	text=$(errno_text "$e")
	if "$@" >"$tmp/cmd.out" 2>"$tmp/cmd.err"; then
		die "$what: succeeded, expected $e"
	fi
	grep -qF "$text" "$tmp/cmd.err" ||
		die "$what: expected $e ($text), got: $(head -c 300 "$tmp/cmd.err")"
}

# expect_fail WHAT CMD...: CMD fails (any reason).
expect_fail() {
	local what=$1

	shift
	if "$@" >"$tmp/cmd.out" 2>"$tmp/cmd.err"; then
		die "$what: succeeded, expected a failure"
	fi
}

# create PATH: `: > PATH` in a shell of its own, for its error message.
create() { sh -c ': >"$1"' sh "$1"; }

# sleep_grace: longer than -o grace=1, so that a document moved away and
# not replaced has had its deletion written.
sleep_grace() { sleep 2; }

# gen REV: the generation of a revision N-hex.
gen() { echo "${1%%-*}"; }

# revs DB NAME: the revisions .rev/NAME/ lists (REV of each REV.json),
# sorted, one per line; nothing when there is no history.
revs() {
	local d="$mnt/$1/.rev/$2"

	[ -d "$d" ] || return 0
	ls "$d" | sed -n 's/\.json$//p' | sort
}

# nrevs DB NAME: how many.
nrevs() { revs "$1" "$2" | grep -c . || true; }

# change_of DB ID: the last .changes line of ID, compact; nothing when ID
# has none. (An open shows each document once, at its latest change; the
# last line is taken all the same, so that a feed listing every change
# fails only the case that checks for that.)
change_of() {
	jq -c --arg id "$2" 'select(.id == $id)' "$mnt/$1/.changes" | tail -n 1
}

# rev_of DB ID: the current revision of ID, from .changes.
rev_of() {
	jq -r --arg id "$2" 'select(.id == $id) | .changes[0].rev' \
		"$mnt/$1/.changes" | tail -n 1
}

# xattr FILE NAME: the value of extended attribute NAME (no newline added).
xattr() {
	need getfattr attr
	getfattr --absolute-names --only-values -n "$2" -- "$1"
}
