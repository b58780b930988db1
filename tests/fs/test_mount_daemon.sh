#!/bin/bash
# Proves that barrelfs without -f detaches only once it serves: it exits 0
# with the mount up and answering, its background threads (HTTP API, view
# indexer) run in the detached daemon, a start that fails (a bad listen=)
# exits non-zero with the reason on the terminal and leaves nothing
# mounted or locked, and an unmount ends the daemon.
set -u
. "$(dirname "$0")/lib.sh"
fs_init test_mount_daemon
need_curl() { command -v curl >/dev/null 2>&1; }
need_curl || skip_all "no curl (Debian package curl)"

unlocked() { "$ctl" -d "$data" stat >/dev/null 2>&1; }
no_daemon() { [ -z "$(daemon_pids)" ]; }

t_bad_start() {
	local rc=0

	"$bfs" -o listen=999.1.1.1:5 "$data" "$mnt" 2>"$work/err" || rc=$?
	[ $rc -ne 0 ] || die "barrelfs with a bad listen= exited 0"
	grep -q 'listen' "$work/err" ||
		die "the reason is not on stderr: $(cat "$work/err")"
	! is_mounted || die "$mnt is mounted after a failed start"
	wait_until 10 no_daemon || die "a daemon is left: $(daemon_pids)"
	[ -z "$ctl" ] || unlocked || die "DATADIR is still locked"
}
run_case t_bad_start "a start that fails exits non-zero with the reason"

t_detached() {
	local rows

	"$bfs" -o grace=1 "$data" "$mnt" 2>"$work/err" ||
		die "barrelfs: $(cat "$work/err")"
	# no wait: barrelfs returns once the mount serves
	is_mounted || die "barrelfs returned before $mnt was mounted"
	[ -n "$(daemon_pids)" ] || die "no daemon for $mnt"
	timeout 10 jq -e 'has("version")' "$mnt/.status" >/dev/null ||
		die ".status"
	api / | jq -e '.couchdb == "Welcome"' >/dev/null || die "GET /"
	timeout 10 mkdir "$mnt/dd"
	printf '{"n":%d}\n' 1 >"$mnt/dd/a.json"
	printf '{"n":%d}\n' 2 >"$mnt/dd/b.json"
	cat >"$mnt/dd/_design/v.json" <<'EOF'
{"views": {"n": {"map": "function(doc){ emit(doc.n, null); }"}}}
EOF
	# update=true waits for the indexer thread of the daemon
	rows=$(api '/dd/_design/v/_view/n' | jq -c '[.rows[].id]')
	[ "$rows" = '["a","b"]' ] || die "view rows: $rows"
	timeout 30 fusermount3 -u "$mnt" || die "fusermount3 -u"
	if ! wait_until 30 no_daemon; then
		for p in $(daemon_pids); do kill -TERM "$p"; done
		die "the daemon still runs 30 s after the unmount"
	fi
	[ -z "$ctl" ] || unlocked || die "DATADIR is still locked"
}
run_case t_detached "detached: serves at once, views index, unmount ends it"

fs_done
