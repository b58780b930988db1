# Shared by the sync tests (tests/sync/test_sync_*.sh); sourced, not run.
# It sources tests/fs/lib.sh for the case runner and the helpers of the
# cases (run_case, run_step, die, skip, need, bg, bg_wait, wait_until,
# alive, expect_fail), and adds:
#
#   sync_init NAME [fuse]  find barrel-syncd, barrelsync (and barrelfs with
#                          fuse): exit 99 when one is not built; skip (77)
#                          without curl or jq, and with fuse without
#                          /dev/fuse or fusermount3; make $tmp and $work
#   need_pouchdb           skip the script (77) without node or without
#                          tests/sync/node_modules (`npm ci --prefix
#                          tests/sync` installs them; .ci/run does)
#   syncd_start NAME [OPTS]  barrel-syncd -f [-o OPTS] $tmp/NAME: wait for
#                          its "listening on" lines; 1 (and the reason) if
#                          it exits or says nothing within 10 s. The TCP
#                          URL is in syncd_url[NAME] ("" without listen=),
#                          the socket in syncd_sock[NAME]
#   syncd_stop NAME        SIGTERM, then wait (at most 10 s) for status 0
#   case_syncd_start NAME [OPTS]  syncd_start within a case (run_case):
#                          the end of the case stops it
#   pouch_start            the PouchDB server (pouchdb_server.js) on a free
#                          port; its URL in $pouch
#   mount_start NAME       barrelfs -f -o grace=1 $tmp/NAME.data
#                          $tmp/NAME.mnt (tests/fs/lib.sh's fs_mount); a
#                          refused mount skips the script
#   mount_stop NAME        a clean unmount (barrelfs exits 0)
#   sync_done              the plan; exit 1 if a case failed, 77 if one
#                          skipped, else 0
#
# For the cases: HTTP requests to a peer (call, req, json, expect_status,
# put_doc, rev_on, bulk_docs), the comparison of two peers (peer_state,
# same_state, all_docs), the one checkpoint of a database (checkpoint),
# and barrelsync runs with their summary line (bsync, run_bsync, summary,
# expect_summary). A peer is a base URL "http(s)://H:P" or "unix:SOCKET"
# (a DATADIR/api.sock, of barrel-syncd or of a mount). A failed request
# dies with the request and the reply.
#
# Only what this shell started is ever signalled, by its pid; the EXIT
# trap stops the daemons, unmounts, and removes $tmp (not while something
# is still mounted there). A case that outlives its watchdog gets every
# daemon killed, so that whatever it waits on fails.
#
# Environment: abs_top_builddir (set by make check), or BARREL_SYNCD,
# BARRELSYNC, BARRELFS naming the programs; BARRELFS_KEEP=1 keeps $tmp;
# SYNC_VERBOSE=1 shows what the cases that passed printed.

. "$(dirname "${BASH_SOURCE[0]}")/../fs/lib.sh"

sync_srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
declare -A syncd_pid=() syncd_url=() syncd_sock=() mount_pid=()
pouch_pid=
pouch=
sync_mounts=         # the mount points of mount_start, space-separated

# sync_init NAME [fuse]
sync_init() {
	local b=${abs_top_builddir:-.}

	syncd=${BARREL_SYNCD:-$b/barrel-syncd}
	bsync=${BARRELSYNC:-$b/barrelsync}
	bfs=${BARRELFS:-$b/barrelfs}
	ctl=
	for c in "$syncd" "$bsync"; do
		[ -x "$c" ] || error_all "not built: no executable $c (run make," \
			"or set BARREL_SYNCD, BARRELSYNC)"
	done
	if [ "${2:-}" = fuse ]; then
		[ -x "$bfs" ] || error_all "barrelfs is not built: no executable $bfs"
		[ -e /dev/fuse ] || skip_all "no /dev/fuse"
		command -v fusermount3 >/dev/null 2>&1 ||
			skip_all "no fusermount3 (Debian package fuse3)"
		[ -r /proc/self/mountinfo ] || skip_all "no /proc/self/mountinfo"
	fi
	command -v curl >/dev/null 2>&1 || skip_all "no curl (Debian package curl)"
	command -v jq >/dev/null 2>&1 || skip_all "no jq (Debian package jq)"

	tmp=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX") || error_all "mktemp"
	tmp=$(cd "$tmp" && pwd -P) || error_all "cd $tmp"
	work=$tmp/work
	log=$tmp/daemons.log     # what sync_done shows when a case failed
	mkdir "$work" || error_all "mkdir $work"
	# barrelsync's private socket directories go here, so that a run
	# killed with -9 leaves nothing behind once the test removes $tmp
	export TMPDIR=$tmp
	: >"$log"
	trap sync_cleanup EXIT
	trap 'exit 1' HUP INT TERM
	echo "# using $syncd and $bsync"
}

need_pouchdb() {
	command -v node >/dev/null 2>&1 || skip_all "no node (Debian package nodejs)"
	[ -d "$sync_srcdir/node_modules/express-pouchdb" ] &&
		[ -d "$sync_srcdir/node_modules/pouchdb-core" ] ||
		skip_all "no $sync_srcdir/node_modules: run" \
			"'npm ci --prefix tests/sync' (.ci/run does)"
}

# stop_pid PID: SIGTERM, at most 10 s, then SIGKILL; reaps PID. Its
# status when it exited on its own after the SIGTERM, else 1.
stop_pid() {
	local pid=$1 i=0 rc

	kill -TERM "$pid" 2>/dev/null
	while alive "$pid" && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if alive "$pid"; then
		echo "pid $pid still runs 10 s after SIGTERM: SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		return 1
	fi
	wait "$pid"
	rc=$?
	return $rc
}

# wait_line FILE PATTERN PID SECONDS: wait until FILE has a line matching
# the extended regex PATTERN; 1 if PID exits first or time runs out.
wait_line() {
	local n=$(($4 * 10)) i=0

	until grep -Eq -- "$2" "$1" 2>/dev/null; do
		alive "$3" || { grep -Eq -- "$2" "$1" 2>/dev/null; return; }
		i=$((i + 1))
		[ $i -lt $n ] || return 1
		sleep 0.1
	done
}

# syncd_start NAME [OPTS]
# shellcheck disable=SC2034 # syncd_url, syncd_sock: for the scripts
syncd_start() {
	local name=$1 dir=$tmp/$1 out=$tmp/$1.syncd.log pid url

	mkdir -p "$dir"
	echo "=== barrel-syncd -f ${2:+-o $2 }$name" >>"$log"
	if [ -n "${2:-}" ]; then
		"$syncd" -f -o "$2" "$dir" 2>"$out" >&2 &
	else
		"$syncd" -f "$dir" 2>"$out" >&2 &
	fi
	pid=$!
	if ! wait_line "$out" '^barrel-syncd: listening on unix:' $pid 10 ||
	   { [[ ${2:-} == *listen=* ]] &&
	     ! wait_line "$out" '^barrel-syncd: listening on https?://' $pid 10; }; then
		cat "$out" >>"$log"
		if alive $pid; then
			echo "barrel-syncd $name: no 'listening on' line within 10 s:" \
				"$(head -c 500 "$out")" >&2
			stop_pid $pid
		else
			wait $pid
			echo "barrel-syncd $name exited with status $? before" \
				"listening: $(head -c 500 "$out")" >&2
		fi
		return 1
	fi
	url=$(sed -En 's/^barrel-syncd: listening on (https?:\/\/[^ ]*).*/\1/p' \
		"$out" | head -n 1)
	# A wildcard listener is reached over loopback.
	url=${url/\/\/0.0.0.0:/\/\/127.0.0.1:}
	syncd_pid[$name]=$pid
	syncd_url[$name]=${url%/}
	syncd_sock[$name]=$dir/api.sock
	return 0
}

# case_syncd_start NAME [OPTS]: syncd_start within a case; the case's end
# kills it if the case did not stop it.
case_syncd_start() {
	syncd_start "$@" || return 1
	case_pids="$case_pids${syncd_pid[$1]} "
}

# syncd_stop NAME: its exit status after SIGTERM (0 for a clean stop).
syncd_stop() {
	local pid=${syncd_pid[$1]:-} rc=0

	[ -n "$pid" ] || return 0
	stop_pid "$pid" || rc=$?
	unset "syncd_pid[$1]"
	case_pids=${case_pids:+${case_pids/ $pid / }}
	cat "$tmp/$1.syncd.log" >>"$log"
	[ $rc -eq 0 ] || echo "barrel-syncd $1 exited with status $rc" >&2
	return $rc
}

# shellcheck disable=SC2034 # pouch: for the scripts
pouch_start() {
	local out=$tmp/pouch.out

	echo "=== node pouchdb_server.js 0" >>"$log"
	node "$sync_srcdir/pouchdb_server.js" 0 >"$out" 2>"$tmp/pouch.err" &
	pouch_pid=$!
	if ! wait_line "$out" '^listening on http://' $pouch_pid 30; then
		cat "$out" "$tmp/pouch.err" >>"$log"
		echo "the PouchDB server did not start: $(head -c 500 "$tmp/pouch.err")" >&2
		alive $pouch_pid && stop_pid $pouch_pid
		pouch_pid=
		return 1
	fi
	pouch=$(sed -n 's/^listening on //p' "$out" | head -n 1)
}

pouch_stop() {
	[ -n "$pouch_pid" ] || return 0
	stop_pid "$pouch_pid"
	pouch_pid=
	cat "$tmp/pouch.err" >>"$log"
}

# mount_start NAME: mounts $tmp/NAME.data on $tmp/NAME.mnt with
# tests/fs/lib.sh's fs_mount (its globals data, mnt, log and fs_pid are
# set for the call only).
mount_start() {
	local data=$tmp/$1.data mnt=$tmp/$1.mnt log=$tmp/$1.barrelfs.log
	local fs_pid='' rc=0

	mkdir -p "$data" "$mnt"
	: >"$log"
	fs_mount 2>"$tmp/mount.err" || rc=1
	if [ $rc -ne 0 ]; then
		cat "$tmp/mount.err" >&2
		if grep -Eqi 'fusermount3?: .*(permission denied|not permitted)|fuse: device not found|mount failed: operation not permitted' \
			"$log" "$tmp/mount.err"; then
			skip_all "FUSE mounts are not permitted here"
		fi
		sed 's/^/# /' "$log" | tail -n 40 >&2
		return 1
	fi
	mount_pid[$1]=$fs_pid
	sync_mounts="$sync_mounts $mnt"
}

# mount_stop NAME: 0 when the unmount was clean and barrelfs exited 0.
mount_stop() {
	local data=$tmp/$1.data mnt=$tmp/$1.mnt log=$tmp/$1.barrelfs.log
	local fs_pid=${mount_pid[$1]:-} rc=0

	[ -n "$fs_pid" ] || return 0
	fs_unmount || rc=$?
	unset "mount_pid[$1]"
	return $rc
}

# Every daemon this shell started, for the watchdog.
sync_pids() {
	echo "${syncd_pid[*]} ${mount_pid[*]} $pouch_pid"
}

# watchdog_start SECONDS NAME (replaces tests/fs/lib.sh's): after SECONDS
# kill every daemon; a case waiting on one then fails, and the cases
# after it are not run (t_report sees a dead daemon).
watchdog_start() {
	local victims

	victims=$(sync_pids)
	(
		s=
		trap '[ -n "$s" ] && kill "$s" 2>/dev/null && wait "$s"; exit 0' TERM
		sleep "$1" &
		s=$!
		wait "$s"
		echo "watchdog: still running after $1 s: killed the daemons" \
			"($victims)" >"$tmp/watchdog"
		for v in $victims; do
			kill -KILL "$v" 2>/dev/null
		done
	) &
	wd_pid=$!
}

# t_report NAME RC OUTFILE (replaces tests/fs/lib.sh's): the result line;
# a daemon that died stops the cases after it.
t_report() {
	local n

	case $2 in
	0)
		echo "ok $t_n - $1"
		[ -z "${SYNC_VERBOSE:-}" ] || sed 's/^/#   /' "$3" ;;
	77)
		t_skip=$((t_skip + 1))
		echo "ok $t_n - $1 # SKIP $(tail -n 1 "$3")" ;;
	*)
		t_fail=$((t_fail + 1))
		echo "not ok $t_n - $1"
		head -n 80 "$3" | sed 's/^/#   /' ;;
	esac
	if [ -e "$tmp/watchdog" ]; then
		sed 's/^/#   /' "$tmp/watchdog"
		rm -f "$tmp/watchdog"
	fi
	for n in "${!syncd_pid[@]}"; do
		alive "${syncd_pid[$n]}" && continue
		t_bail="barrel-syncd $n (pid ${syncd_pid[$n]}) died"
		echo "# $t_bail; its log:"
		tail -n 30 "$tmp/$n.syncd.log" | sed 's/^/#   /'
		unset "syncd_pid[$n]"
	done
	for n in "${!mount_pid[@]}"; do
		alive "${mount_pid[$n]}" && continue
		t_bail="barrelfs $n (pid ${mount_pid[$n]}) died"
		echo "# $t_bail; its log:"
		tail -n 30 "$tmp/$n.barrelfs.log" | sed 's/^/#   /'
		unset "mount_pid[$n]"
	done
	if [ -n "$pouch_pid" ] && ! alive "$pouch_pid"; then
		t_bail="the PouchDB server (pid $pouch_pid) died"
		echo "# $t_bail; its stderr:"
		tail -n 30 "$tmp/pouch.err" | sed 's/^/#   /'
		pouch_pid=
	fi
}

sync_done() {
	local f

	echo "1..$t_n"
	if [ $t_fail -ne 0 ]; then
		echo "# $t_fail of $t_n failed; the ends of the daemons' logs:"
		for f in "$tmp"/*.syncd.log "$tmp"/*.barrelfs.log "$tmp/pouch.err"; do
			[ -s "$f" ] || continue
			echo "# --- ${f##*/}"
			tail -n 20 "$f" | sed 's/^/#   /'
		done
		exit 1
	fi
	if [ $t_skip -ne 0 ]; then
		echo "# $t_skip of $t_n skipped: the test did not run whole"
		exit 77
	fi
	exit 0
}

sync_cleanup() {
	local n m busy=

	watchdog_stop
	for n in "${!syncd_pid[@]}"; do
		syncd_stop "$n" >/dev/null 2>&1
	done
	for n in "${!mount_pid[@]}"; do
		mount_stop "$n" >/dev/null 2>&1
	done
	pouch_stop >/dev/null 2>&1
	[ -n "$tmp" ] || return
	for m in $sync_mounts; do
		mnt=$m
		is_mounted && fusermount3 -u -z "$m" 2>/dev/null
		is_mounted && busy=$m
	done
	if [ -n "$busy" ]; then
		echo "$busy is still mounted: left $tmp in place" >&2
	elif [ -n "${BARRELFS_KEEP:-}" ]; then
		echo "kept $tmp" >&2
	else
		rm -rf --one-file-system "$tmp"
	fi
}

# ---- for the cases: HTTP ----

# peer_curl PEER PATH CURL-ARGS...: curl PATH (with its query) of PEER,
# at most 60 s. $curl_auth (an array, may be empty) is added: -u, --cacert.
curl_auth=()
peer_curl() {
	local peer=$1 path=$2

	shift 2
	case $peer in
	unix:*)
		curl -sS --max-time 60 --unix-socket "${peer#unix:}" \
			${curl_auth[@]+"${curl_auth[@]}"} "$@" "http://localhost$path" ;;
	*)
		curl -sS --max-time 60 ${curl_auth[@]+"${curl_auth[@]}"} "$@" \
			"$peer$path" ;;
	esac
}

# call METHOD PEER PATH [CURL-ARGS...]: the status on stdout, the body in
# $work/reply, the request in $work/request (for the messages).
call() {
	local m=$1 peer=$2 path=$3

	shift 3
	printf '%s %s%s\n' "$m" "$peer" "$path" >"$work/request"
	: >"$work/reply"
	peer_curl "$peer" "$path" -X "$m" -o "$work/reply" -w '%{http_code}' "$@"
}

# what_failed STATUS: the request and the reply, for a message.
what_failed() {
	printf '%s -> %s %s' "$(cat "$work/request")" "$1" \
		"$(head -c 600 "$work/reply")"
}

# req METHOD PEER PATH [CURL-ARGS...]: the body of a 2xx reply on stdout;
# dies with the request and the reply otherwise.
req() {
	local st

	st=$(call "$@") || die "$(what_failed "curl exit $?")"
	case $st in
	2??) cat "$work/reply" ;;
	*) die "$(what_failed "$st")" ;;
	esac
}

# json METHOD PEER PATH JSON: req with a JSON body.
json() {
	req "$1" "$2" "$3" -H 'Content-Type: application/json' \
		--data-binary "$4"
}

# expect_status CODE METHOD PEER PATH [CURL-ARGS...]: the reply has
# status CODE (a regex: 40[01]); its body is in $work/reply.
expect_status() {
	local want=$1 st

	shift
	st=$(call "$@") || st="curl exit $?"
	[[ $st =~ ^($want)$ ]] || die "expected $want: $(what_failed "$st")"
}

# uri TEXT: TEXT percent-encoded for a path segment.
uri() { jq -rn --arg s "$1" '$s | @uri'; }

# put_doc PEER DB ID JSON: a new revision of ID; its rev on stdout.
put_doc() {
	json PUT "$1" "/$2/$(uri "$3")" "$4" | jq -r .rev
}

# rev_on PEER DB ID: the winning revision ("" when deleted or missing).
rev_on() {
	local st

	st=$(call GET "$1" "/$2/$(uri "$3")") || die "$(what_failed "curl exit $?")"
	case $st in
	200) jq -r ._rev "$work/reply" ;;
	404) ;;
	*) die "$(what_failed "$st")" ;;
	esac
}

# bulk_docs PEER DB COUNT PREFIX: COUNT new documents PREFIX0000... in
# batches of 500 through _bulk_docs.
bulk_docs() {
	local i=0 n

	while [ $i -lt "$3" ]; do
		n=$(($3 - i < 500 ? $3 - i : 500))
		jq -cn --arg p "$4" --argjson a $i --argjson n $n \
			'{docs: [range($a; $a + $n) |
			  {_id: ($p + (tostring | "0000\(.)"[-5:])), n: .}]}' \
			>"$work/bulk.json"
		json POST "$1" "/$2/_bulk_docs" @"$work/bulk.json" |
			jq -e 'all(.[]; has("ok") or (has("error") | not))' >/dev/null ||
			die "_bulk_docs on $1/$2: $(head -c 400 "$work/reply")"
		i=$((i + n))
	done
}

# ---- for the cases: comparing two peers ----

# peer_ids PEER DB: every document id of DB (deleted ones too), sorted.
peer_ids() {
	req GET "$1" "/$2/_changes?style=all_docs" |
		jq -r '.results[].id' | LC_ALL=C sort -u
}

# peer_state PEER DB: one line per document, sorted by id:
#   ID winner=REV|deleted leaves=REV[,REV...]
# where the leaves come from GET /DB/ID?open_revs=all (a deleted leaf
# is REV!deleted), the winner from GET /DB/ID. Two peers that converged
# print the same lines.
peer_state() {
	local id u leaves winner

	peer_ids "$1" "$2" >"$work/ids.$BASHPID"
	while IFS= read -r id; do
		u=$(uri "$id")
		leaves=$(req GET "$1" "/$2/$u?open_revs=all" \
			-H 'Accept: application/json' |
			jq -r '[.[] | select(.ok) | .ok |
			  ._rev + (if ._deleted then "!deleted" else "" end)] |
			  sort | join(",")') || die "open_revs=all of $id on $1/$2"
		winner=$(rev_on "$1" "$2" "$id")
		printf '%s winner=%s leaves=%s\n' "$id" "${winner:-deleted}" "$leaves"
	done <"$work/ids.$BASHPID"
	rm -f "$work/ids.$BASHPID"
}

# same_state PEER1 DB1 PEER2 DB2: both show the same documents, leaves
# and winners; dies with the difference.
same_state() {
	peer_state "$1" "$2" >"$work/state1"
	peer_state "$3" "$4" >"$work/state2"
	[ -s "$work/state1" ] || die "no documents in $1/$2"
	diff -u "$work/state1" "$work/state2" >"$work/state.diff" ||
		die "$1/$2 and $3/$4 differ:" "$(head -n 40 "$work/state.diff")"
}

# all_docs PEER DB: "ID REV" of every live document, sorted (one request;
# for databases too big for peer_state).
all_docs() {
	req GET "$1" "/$2/_all_docs" | jq -r '.rows[] | "\(.id) \(.value.rev)"' |
		LC_ALL=C sort
}

# checkpoint PEER DB: the one _local/ document of DB on PEER (as
# _local_docs lists them), as JSON; dies when there is not exactly one.
checkpoint() {
	local ids

	ids=$(req GET "$1" "/$2/_local_docs" | jq -r '.rows[].id')
	[ "$(printf '%s\n' "$ids" | grep -c .)" -eq 1 ] ||
		die "expected one checkpoint in $1/$2, got: $ids"
	req GET "$1" "/$2/_local/$(uri "${ids#_local/}")"
}

# ---- for the cases: barrelsync ----

# run_bsync ARGS...: barrelsync ARGS (at most 120 s); its stderr in
# $work/bsync.err; its exit status, also in $work/bsync.rc.
run_bsync() {
	local rc=0

	echo "barrelsync $*" >"$work/bsync.cmd"
	timeout 120 "$bsync" "$@" >"$work/bsync.out" 2>"$work/bsync.err" || rc=$?
	echo $rc >"$work/bsync.rc"
	return $rc
}

# bsync ARGS...: run_bsync that must succeed (exit 0 and a summary).
bsync() {
	local rc=0

	run_bsync "$@" || rc=$?
	[ $rc -eq 0 ] ||
		die "barrelsync $* exited $rc: $(tail -c 800 "$work/bsync.err")"
	summary >/dev/null
}

# summary [FIELD]: from the last run's summary line "barrelsync: N docs
# read, M written, F failed, last_seq S": the line, or one of read,
# written, failed, last_seq.
summary() {
	local line

	line=$(grep -E '^barrelsync: [0-9]+ docs read, [0-9]+ written, [0-9]+ failed, last_seq ' \
		"$work/bsync.err" | tail -n 1)
	[ -n "$line" ] || die "no summary line from $(cat "$work/bsync.cmd"):" \
		"$(tail -c 600 "$work/bsync.err")"
	case ${1:-} in
	'') echo "$line" ;;
	read) echo "$line" | sed -E 's/^barrelsync: ([0-9]+) docs read.*/\1/' ;;
	written) echo "$line" | sed -E 's/.* ([0-9]+) written.*/\1/' ;;
	failed) echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/' ;;
	last_seq) echo "$line" | sed -E 's/.*, last_seq (.*)$/\1/' ;;
	esac
}

# expect_summary READ WRITTEN FAILED: the last run's counts.
expect_summary() {
	local got

	got="$(summary read) $(summary written) $(summary failed)"
	[ "$got" = "$1 $2 $3" ] || die "$(cat "$work/bsync.cmd"): expected" \
		"$1 read, $2 written, $3 failed; got: $(summary)"
}
