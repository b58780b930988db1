#!/usr/bin/env bash
# The sync benchmark of `make bench`: N JSON documents of ~1 KiB
# (deterministic content), copied in full to an empty target, then C of
# them changed at the source and synced again, by three tools, all on
# this machine over 127.0.0.1 TCP:
#
#   rsync       the documents as files SRC/ID.json, `rsync -a` to an
#               rsync daemon (rsync --daemon --no-detach, a module that
#               writes into the temporary area); the C changed files get
#               a new body (a few more bytes) and a later mtime;
#   barrelsync  BUILDDIR/barrelsync between two BUILDDIR/barrel-syncd
#               peers (-o listen=127.0.0.1:0); the source loaded with
#               POST /db/_bulk_docs beforehand, the change C new
#               revisions through _bulk_docs with their _rev;
#   PouchDB     PouchDB's own replicator (tests/sync/pouch_replicate.js)
#               between two tests/sync/pouchdb_server.js (express-pouchdb,
#               in memory), loaded and changed as for barrelsync.
#
# Each round syncs into a fresh target (a new directory, a new database)
# and runs the full sync then the incremental one; the report shows the
# median of the rounds. Loading the sources and making the changes are
# not timed. After every sync the target is checked (rsync: `diff -r`
# with the source; the others: doc_count, the summary of the tool, and
# the revisions of the C changed documents equal to the source's): a
# sync that did not do its job is a failure, never a fast figure.
#
# Bytes on the wire come from a first round, not counted in the times,
# where every tool talks through tools/bench_sync_proxy.js, a TCP proxy
# on 127.0.0.1 that counts what goes through it both ways (the same
# basis for all three; rsync's own --stats figures are shown beside).
# The timed rounds talk to the daemons directly.
#
# Skipped ("skipped", exit 0, as make bench wants) without rsync, node,
# tests/sync/node_modules (`npm ci --prefix tests/sync`), curl or jq. A
# barrel-syncd or barrelsync that is not built shows as "not built".
# Exit status 1 when a tool failed (a sync failed, timed out, or left a
# target that is not the source), 2 on bad usage; a missed goal is not a
# failure.
#
# Everything lives under TMPDIR/bench-sync.XXXXXX (TMPDIR: --tmpdir, by
# default BUILDDIR: the filesystem a user would sync on, not a tmpfs, as
# barrel-syncd's DATADIR is on a disk); before each sync, `sync -f` (not
# timed) writes back what the one before left, and nothing is removed
# before the end (a removal leaves work, discards, to the next one). On
# exit, even on an error or a signal, it stops every process it started
# (by pid: SIGTERM, then SIGKILL; every wait is bounded) and removes that
# directory.

# cleanup runs from a trap and bench_<tool> by name: shellcheck cannot
# see that they and what they call are reachable.
# shellcheck disable=SC2317

set -u

prog=bench_sync.sh
srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=tools/bench_lib.sh
. "$srcdir/tools/bench_lib.sh"
ROW_LABEL_WIDTH=12 ROW_CELL_WIDTH=12
builddir=.
tmpbase=
docs=10000
changes=100
rounds=3
batch=1000                  # documents per _bulk_docs request, to load

tools=(rsync barrelsync pouchdb)
phases=(full incr)
declare -A label=([rsync]=rsync [barrelsync]=barrelsync [pouchdb]=PouchDB)

declare -A secs=()          # [tool.phase]: every timed round's, spaced
declare -A med=()           # [tool.phase]: their median
declare -A psecs=()         # [tool.phase]: the seconds through the proxy
declare -A wire=()          # [tool.phase]: the proxy's "UP DOWN CONNS
                            # PORT:UP:DOWN:CONNS..." (bench_sync_proxy.js)
declare -A stats=()         # [rsync.phase]: "SENT RECEIVED", its --stats
declare -A state=()         # [tool]: ok, FAILED, "not built: why"
declare -A reason=()        # [tool]: why it FAILED, in a few words
notes=()                    # printed under the report
failed=0

tmp=                        # the temporary area, once made
declare -A pid=()           # [name]: every daemon running, by name
runner=                     # the pid of the sync running now
declare -A port=()          # [name]: the TCP port of a daemon
declare -A via=()           # [port]: the proxy's port in front of it
proxy_lines=0               # "bytes" lines the proxy printed so far
counted=                    # the last of them, without "bytes "
elapsed=                    # seconds of the last timed_run

usage() {
	[ "$1" = 0 ] || exec >&2
	cat <<EOF
usage: $prog [--builddir DIR] [--docs N] [--changes C] [--rounds R]
       [--tmpdir DIR]

Time a full sync of N JSON documents of ~1 KiB, then of C changed ones,
with rsync (to an rsync daemon), barrelsync (between two barrel-syncd)
and PouchDB's replicator (between two express-pouchdb servers), all over
127.0.0.1, and compare barrelsync with the others.

  --builddir DIR   where barrel-syncd and barrelsync are built (default .)
  --docs N         documents (default 10000)
  --changes C      documents changed for the incremental sync (default 100)
  --rounds R       timed rounds, the median shown (default 3)
  --tmpdir DIR     where the data goes (default: the build directory)
  -h, --help       show this help
EOF
	exit "$1"
}

skip() {
	echo "sync benchmark skipped: $*"
	exit 0
}

# ---- processes ----

# Wait up to $2 seconds for our child $1 to exit (and reap it); 0 when
# it has.
wait_gone() {
	local p=$1 tenths=$(($2 * 10))

	while kill -0 "$p" 2>/dev/null; do
		[ "$tenths" -gt 0 ] || return 1
		tenths=$((tenths - 1))
		sleep 0.1
	done
	wait "$p" 2>/dev/null
	return 0
}

# Stop our child $1: SIGTERM, at most 10 s, then SIGKILL.
stop_pid() {
	kill -TERM "$1" 2>/dev/null
	wait_gone "$1" 10 ||
		{ kill -KILL "$1" 2>/dev/null; wait_gone "$1" 5; } ||
		echo "$prog: process $1 did not exit" >&2
}

# Start the daemon "${@:2}" as our child named $1, its stdout and stderr
# in $tmp/$1.out and $tmp/$1.err.
start_daemon() {
	local name=$1

	shift
	"$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
	pid[$name]=$!
}

stop_daemon() {
	[ -n "${pid[$1]:-}" ] || return 0
	stop_pid "${pid[$1]}"
	unset "pid[$1]"
}

# Wait up to $3 seconds until the file $1 has a line matching the
# extended regex $2; 1 when the daemon $4 exits first or time runs out.
wait_line() {
	local tenths=$(($3 * 10))

	until grep -Eq -- "$2" "$1" 2>/dev/null; do
		if ! kill -0 "${pid[$4]}" 2>/dev/null; then
			grep -Eq -- "$2" "$1" 2>/dev/null
			return
		fi
		[ "$tenths" -gt 0 ] || return 1
		tenths=$((tenths - 1))
		sleep 0.1
	done
}

# Why the daemon $1 did not come up, for the notes.
daemon_failed() {
	local why

	why=$(tail -n 3 "$tmp/$1.err" "$tmp/$1.out" 2>/dev/null | grep -v '^==>' |
		grep -v '^$' | tail -n 3)
	notes+=("$1 did not start: ${why:-no output}")
	stop_daemon "$1"
	return 1
}

cleanup() {
	local name

	trap - EXIT INT TERM HUP
	# A signal may come while a tool's stderr goes to a file.
	exec 2>&3
	if [ -n "$runner" ]; then
		kill -TERM "$runner" 2>/dev/null
		wait_gone "$runner" 10 || kill -KILL "$runner" 2>/dev/null
	fi
	for name in "${!pid[@]}"; do
		stop_daemon "$name"
	done
	[ -n "$tmp" ] && [ -d "$tmp" ] && rm -rf --one-file-system -- "$tmp"
}

# Run "$@" for at most $1 seconds, its output in $tmp/run.out and
# $tmp/run.err; its exit status (124 when it timed out), the seconds it
# took in elapsed. The clock brackets the fork and the wait only.
timed_run() {
	local limit=$1 t0 t1 rc

	shift
	t0=$EPOCHREALTIME
	timeout -k 5 "$limit" "$@" >"$tmp/run.out" 2>"$tmp/run.err" &
	runner=$!
	wait "$runner"
	rc=$?
	t1=$EPOCHREALTIME
	runner=
	elapsed=$(awk "BEGIN { printf \"%.6f\", ${t1/,/.} - ${t0/,/.} }")
	return "$rc"
}

# ---- the documents ----

# Write the N documents (deterministic: a Park-Miller generator picks
# words) and what every tool needs of them, under $tmp/data:
#   src/ID.json          each document's body, for rsync
#   orig/ID.json         the C documents to change, as they were
#   new/ID.json          ... and as they are changed (edited, new title)
#   bulk.K.json          {"docs": [...]} with _id, $batch per file
#   changed.json         the changed ones, with _id, as a JSON array
#   keys.json            {"keys": [their ids]}
#   size                 the bytes of all the files of src/
make_docs() {
	local d=$tmp/data

	mkdir -p "$d/src" "$d/orig" "$d/new" || return 1
	awk -v n="$docs" -v c="$changes" -v batch="$batch" -v d="$d" '
	function rnd(m) { seed = (seed * 16807) % 2147483647; return seed % m }
	function words(k,   s, i) {
		s = w[1 + rnd(nw)]
		for (i = 1; i < k; i++)
			s = s " " w[1 + rnd(nw)]
		return s
	}
	function text(len,   s) {
		s = words(8)
		while (length(s) < len)
			s = s ". " words(6 + rnd(10))
		return s "."
	}
	function body(i, title, edited) {
		return sprintf("{\"type\":\"note\",\"n\":%d,%s\"title\":\"%s\"," \
			"\"tags\":[\"%s\",\"%s\",\"%s\"],\"author\":\"%s\"," \
			"\"created\":\"2024-%02d-%02dT%02d:%02d:00Z\"," \
			"\"text\":\"%s\"}", i, edited, title, w[1 + rnd(nw)],
			w[1 + rnd(nw)], w[1 + rnd(nw)], words(2), 1 + rnd(12),
			1 + rnd(28), rnd(24), rnd(60), text(760))
	}
	BEGIN {
		nw = split("alpha bravo charlie delta echo foxtrot golf hotel " \
			"india juliett kilo lima mike november oscar papa quebec " \
			"romeo sierra tango uniform victor whiskey xray yankee " \
			"zulu amber basalt cedar dune ember fjord glacier harbor " \
			"island jasper kelp lagoon meadow nectar orchard pebble " \
			"quartz river summit tundra upland valley willow yarrow " \
			"zephyr anchor beacon canyon delta estuary forest grove " \
			"heath inlet jungle knoll", w, " ")
		seed = 42
		step = int(n / c)
		keys = ""
		printf "[" >(d "/changed.json")
		for (i = 0; i < n; i++) {
			id = sprintf("doc%06d", i)
			b = body(i, words(4), "")
			total += length(b) + 1
			f = d "/src/" id ".json"
			print b >f
			close(f)
			if (i % batch == 0) {
				if (bf != "") {
					print "]}" >bf
					close(bf)
				}
				bf = sprintf("%s/bulk.%06d.json", d, i / batch)
				printf "{\"docs\":[" >bf
			} else {
				printf "," >bf
			}
			printf "{\"_id\":\"%s\",%s", id, substr(b, 2) >bf
			if (i % step == 0 && i / step < c) {
				f = d "/orig/" id ".json"
				print b >f
				close(f)
				nb = body(i, words(4), "\"edited\":1,")
				f = d "/new/" id ".json"
				print nb >f
				close(f)
				printf "%s{\"_id\":\"%s\",%s", (keys == "" ? "" : ","),
					id, substr(nb, 2) >(d "/changed.json")
				keys = keys (keys == "" ? "" : ",") "\"" id "\""
			}
		}
		print "]}" >bf
		print "]" >(d "/changed.json")
		print "{\"keys\":[" keys "]}" >(d "/keys.json")
		print total >(d "/size")
	}' || return 1
	# Fixed mtimes: the originals a day before the changed files.
	find "$d/src" "$d/orig" -type f -exec touch -d @1704067200 {} + &&
		find "$d/new" -type f -exec touch -d @1704153600 {} +
}

# ---- HTTP (curl; loading and checking, never timed) ----

# http METHOD URL [CURL-ARGS...]: the body of a 2xx reply on stdout;
# 1 (and the reply on stderr) otherwise.
http() {
	local m=$1 url=$2 st

	shift 2
	st=$(curl -sS --max-time 120 -X "$m" -o "$tmp/reply" -w '%{http_code}' \
		"$@" "$url") || { echo "$m $url: curl failed" >&2; return 1; }
	case $st in
	2??) cat "$tmp/reply" ;;
	*) echo "$m $url -> $st $(head -c 300 "$tmp/reply")" >&2; return 1 ;;
	esac
}

# post_json URL FILE: POST the JSON in FILE.
post_json() {
	http POST "$1" -H 'Content-Type: application/json' --data-binary "@$2"
}

# load URL: the documents into the new database URL, $batch at a time.
load() {
	local f

	http PUT "$1" >/dev/null || return 1
	for f in "$tmp"/data/bulk.*.json; do
		post_json "$1/_bulk_docs" "$f" |
			jq -e 'length > 0 and all(.[]; .ok == true)' >/dev/null ||
			{ echo "_bulk_docs into $1 failed" >&2; return 1; }
	done
}

# revs URL: {"ID": "REV", ...} of the changed documents in URL.
revs() {
	post_json "$1/_all_docs" "$tmp/data/keys.json" |
		jq -cS '[.rows[] | {(.key): (.value.rev // null)}] | add'
}

# change URL ROUND: a new revision of each changed document in URL.
change() {
	local cur

	cur=$(revs "$1") || return 1
	jq -c --argjson revs "$cur" --argjson r "$2" '{docs: [.[] |
		. + {_rev: $revs[._id], edited: ($r + 1)}]}' \
		"$tmp/data/changed.json" >"$tmp/change.json" || return 1
	post_json "$1/_bulk_docs" "$tmp/change.json" |
		jq -e "length == $changes and all(.[]; .ok == true)" >/dev/null
}

doc_count() {
	http GET "$1" | jq -r .doc_count
}

# ---- the daemons ----

# A TCP port of 127.0.0.1 that was free a moment ago.
free_port() {
	timeout 10 node -e 'const s = require("net").createServer();
		s.listen(0, "127.0.0.1", () => {
			console.log(s.address().port); s.close(); });'
}

# The rsync daemon, module "bench" writing into $tmp/rsync-dst, on a free
# port (tried again, at most 5 times, when another process takes it).
start_rsyncd() {
	local try p conf=$tmp/rsyncd.conf

	mkdir -p "$tmp/rsync-dst" || return 1
	{
		echo "use chroot = no"
		# As root the daemon would write as nobody.
		if [ "$(id -u)" = 0 ]; then
			echo "uid = 0"
			echo "gid = 0"
		fi
		echo "[bench]"
		echo "path = $tmp/rsync-dst"
		echo "read only = no"
	} >"$conf"
	for try in 1 2 3 4 5; do
		p=$(free_port) || return 1
		: >"$tmp/rsyncd.log"
		start_daemon rsyncd rsync --daemon --no-detach --address=127.0.0.1 \
			--port="$p" --config="$conf" --log-file="$tmp/rsyncd.log"
		if wait_line "$tmp/rsyncd.log" "listening on port $p\$" 10 rsyncd; then
			port[rsyncd]=$p
			return 0
		fi
		[ "$try" = 5 ] && cat "$tmp/rsyncd.log" >>"$tmp/rsyncd.err"
		stop_daemon rsyncd
	done
	daemon_failed rsyncd
}

# barrel-syncd NAME on a fresh DATADIR, TCP on a free port of 127.0.0.1.
start_syncd() {
	local name=$1 url

	mkdir -p "$tmp/$name" || return 1
	start_daemon "$name" "$syncd" -o listen=127.0.0.1:0 "$tmp/$name"
	wait_line "$tmp/$name.err" '^barrel-syncd: listening on http://' 20 \
		"$name" || { daemon_failed "$name"; return 1; }
	url=$(sed -En 's|^barrel-syncd: listening on http://127\.0\.0\.1:([0-9]+).*|\1|p' \
		"$tmp/$name.err" | head -n 1)
	[ -n "$url" ] || { daemon_failed "$name"; return 1; }
	port[$name]=$url
}

# pouchdb_server.js NAME on a free port of 127.0.0.1.
start_pouch() {
	local name=$1 p

	start_daemon "$name" node "$srcdir/tests/sync/pouchdb_server.js" 0
	wait_line "$tmp/$name.out" '^listening on http://' 30 "$name" ||
		{ daemon_failed "$name"; return 1; }
	p=$(sed -En 's|^listening on http://127\.0\.0\.1:([0-9]+).*|\1|p' \
		"$tmp/$name.out" | head -n 1)
	[ -n "$p" ] || { daemon_failed "$name"; return 1; }
	port[$name]=$p
}

# The counting proxy, in front of every daemon's port.
start_proxy() {
	local l t _

	start_daemon proxy node "$srcdir/tools/bench_sync_proxy.js" "${port[@]}"
	wait_line "$tmp/proxy.out" '^ready$' 20 proxy ||
		{ daemon_failed proxy; return 1; }
	while read -r _ l t; do
		via[$t]=$l
	done < <(grep '^proxy ' "$tmp/proxy.out")
}

# The proxy's counts since the last call: "UP DOWN CONNS" in counted.
# (Not in a subshell: it counts the lines the proxy printed.)
proxy_count() {
	local n i=0

	kill -USR2 "${pid[proxy]}" 2>/dev/null || return 1
	proxy_lines=$((proxy_lines + 1))
	while n=$(grep -c '^bytes ' "$tmp/proxy.out"); [ "$n" -lt "$proxy_lines" ]; do
		[ "$i" -lt 1000 ] || return 1
		i=$((i + 1))
		sleep 0.01
	done
	counted=$(grep '^bytes ' "$tmp/proxy.out" | sed -n "${proxy_lines}p" |
		cut -d' ' -f2-)
}

# ---- the tools ----

# Mark tool $1 failed for the reason $2 (a few words); $3, if any, goes
# under the report.
fail() {
	state[$1]=FAILED
	reason[$1]=$2
	notes+=("${label[$1]}: ${3:-$2}")
	failed=1
}

# The host:port to reach the daemon $1 at in round mode $2 (direct, or
# proxy: through the counting proxy).
addr() {
	local p=${port[$1]}

	[ "$2" = proxy ] && p=${via[$p]}
	echo "127.0.0.1:$p"
}

# sync_phase TOOL PHASE MODE CMD...: run the sync CMD, timed; record its
# seconds (direct) or its bytes and seconds (proxy). Its exit status.
sync_phase() {
	local tool=$1 phase=$2 mode=$3 rc

	shift 3
	if [ "$mode" = proxy ]; then
		proxy_count || { fail "$tool" "the proxy does not answer"; return 1; }
	fi
	# Every sync starts with nothing of the others left to write back.
	timeout 60 sync -f "$tmp/data" 2>/dev/null
	timed_run "$limit" "$@"
	rc=$?
	if [ "$mode" = proxy ]; then
		proxy_count || { fail "$tool" "the proxy does not answer"; return 1; }
		wire[$tool.$phase]=$counted
		psecs[$tool.$phase]=$(calc '%.3f' "$elapsed")
	else
		secs[$tool.$phase]+="$elapsed "
	fi
	[ "$rc" != 124 ] || { fail "$tool" "$phase sync timed out after $limit s"; return 1; }
	return "$rc"
}

# What the failed sync said, for a note.
sync_said() {
	tail -c 400 "$tmp/run.err"
	tail -c 200 "$tmp/run.out"
}

rsync_stats() {
	local s r

	s=$(sed -n 's/^Total bytes sent: //p' "$tmp/run.out" | tr -d ',')
	r=$(sed -n 's/^Total bytes received: //p' "$tmp/run.out" | tr -d ',')
	stats[rsync.$1]="${s:-?} ${r:-?}"
}

# rsync_check DIR: the copy DIR is the source, every file.
rsync_check() {
	diff -r "$tmp/data/src" "$1" >"$tmp/diff.out" 2>&1
}

bench_rsync() {
	local round=$1 mode=$2 url dst=$tmp/rsync-dst/r$1 d=$tmp/data

	url=rsync://$(addr rsyncd "$mode")/bench/r$round/
	cp -p "$d"/orig/*.json "$d/src/" || { fail rsync "cp failed"; return; }
	sync_phase rsync full "$mode" rsync -a --stats "$d/src/" "$url" ||
		{ [ "${state[rsync]}" = FAILED ] ||
			fail rsync "full sync failed" "$(sync_said)"; return; }
	[ "$mode" = proxy ] && rsync_stats full
	rsync_check "$dst" ||
		{ fail rsync "the copy differs" "$(head -n 5 "$tmp/diff.out")"; return; }
	cp -p "$d"/new/*.json "$d/src/" || { fail rsync "cp failed"; return; }
	sync_phase rsync incr "$mode" rsync -a --stats "$d/src/" "$url" ||
		{ [ "${state[rsync]}" = FAILED ] ||
			fail rsync "incremental sync failed" "$(sync_said)"; return; }
	[ "$mode" = proxy ] && rsync_stats incr
	rsync_check "$dst" ||
		{ fail rsync "the update differs" "$(head -n 5 "$tmp/diff.out")"; return; }
}

# How many documents the last barrelsync wrote ("" without a summary),
# after checking it failed none.
written_barrelsync() {
	local line

	line=$(grep -E '^barrelsync: [0-9]+ docs read, [0-9]+ written, [0-9]+ failed' \
		"$tmp/run.err" | tail -n 1)
	[[ $line =~ \ ([0-9]+)\ written,\ 0\ failed ]] && echo "${BASH_REMATCH[1]}"
}

# The same from pouch_replicate.js's result.
written_pouchdb() {
	jq -r 'select(.ok == true and (.doc_write_failures // 0) == 0) |
		.docs_written' "$tmp/run.out" 2>/dev/null
}

# bench_peers TOOL ROUND MODE SRCDAEMON DSTDAEMON CMD...: the source
# database "bench" of SRCDAEMON synced by CMD SRC_URL DST_URL into a new
# database of DSTDAEMON, checked, changed, synced again, checked.
bench_peers() {
	local tool=$1 round=$2 mode=$3 sd=$4 dd=$5 src dst db=r$2 n s1 s2

	shift 5
	src=http://$(addr "$sd" "$mode")/bench
	dst=http://$(addr "$dd" "$mode")/$db
	sync_phase "$tool" full "$mode" "$@" "$src" "$dst" ||
		{ [ "${state[$tool]}" = FAILED ] ||
			fail "$tool" "full sync failed" "$(sync_said)"; return; }
	n=$("written_$tool")
	[ "$n" = "$docs" ] || { fail "$tool" "full sync wrote ${n:-?} of $docs" \
		"full sync wrote ${n:-?} of $docs: $(sync_said)"; return; }
	n=$(doc_count "http://$(addr "$dd" direct)/$db")
	[ "$n" = "$docs" ] || { fail "$tool" "the target holds ${n:-?} of $docs"; return; }

	change "http://$(addr "$sd" direct)/bench" "$round" ||
		{ fail "$tool" "changing the source failed"; return; }
	sync_phase "$tool" incr "$mode" "$@" "$src" "$dst" ||
		{ [ "${state[$tool]}" = FAILED ] ||
			fail "$tool" "incremental sync failed" "$(sync_said)"; return; }
	n=$("written_$tool")
	[ "$n" = "$changes" ] || { fail "$tool" "incremental sync wrote ${n:-?} of $changes" \
		"incremental sync wrote ${n:-?} of $changes: $(sync_said)"; return; }
	s1=$(revs "http://$(addr "$sd" direct)/bench")
	s2=$(revs "http://$(addr "$dd" direct)/$db")
	if [ -z "$s1" ] || [ "$s1" != "$s2" ]; then
		fail "$tool" "the changes did not arrive" \
			"the changed documents differ: source ${s1:0:200}..., target ${s2:0:200}..."
		return
	fi
	n=$(doc_count "http://$(addr "$dd" direct)/$db")
	[ "$n" = "$docs" ] || { fail "$tool" "the target holds ${n:-?} of $docs"; return; }
	# PouchDB's memory only: files are removed at the end, as a removal
	# in the middle would leave the filesystem work (discards) to later.
	[ "$tool" != pouchdb ] || http DELETE "http://$(addr "$dd" direct)/$db" >/dev/null
}

bench_barrelsync() {
	bench_peers barrelsync "$1" "$2" syncd_src syncd_dst "$bsync" --create-target
}

bench_pouchdb() {
	bench_peers pouchdb "$1" "$2" pouch_src pouch_dst \
		node "$srcdir/tests/sync/pouch_replicate.js" --create-target
}

# ---- the report ----

# The bytes both ways of tool $1, phase $2 ("" when not measured).
wire_total() {
	local up down _

	[ -n "${wire[$1.$2]:-}" ] || return 0
	read -r up down _ <<<"${wire[$1.$2]}"
	echo $((up + down))
}

# The bytes both ways of tool $1, phase $2, on the link to the daemon $3
# alone ("" when not measured).
wire_link() {
	local w p=${port[$3]:-none} up down _

	for w in ${wire[$1.$2]:-}; do
		[[ $w == "$p":* ]] || continue
		IFS=: read -r _ up down _ <<<"$w"
		echo $((up + down))
	done
}

# The daemon at the target's end of tool $1's link.
declare -A target=([rsync]=rsyncd [barrelsync]=syncd_dst [pouchdb]=pouch_dst)
declare -A source=([barrelsync]=syncd_src [pouchdb]=pouch_src)

# goal_row WHAT BARREL OTHER OP GOAL: the ratio BARREL/OTHER against
# the goal "OP GOAL" (<= or <).
goal_row() {
	local what=$1 b=$2 o=$3 op=$4 g=$5 x verdict

	if [ -z "$b" ] || [ -z "$o" ] || [ "$o" = 0 ]; then
		printf '%-40s %8s %9s\n' "$what" - "$op $g"
		return
	fi
	x=$(calc '%.3f' "$b / $o")
	if awk "BEGIN { exit !($x $op $g) }"; then verdict=PASS; else verdict=MISS; fi
	printf '%-40s %7.2fx %9s  %s\n' "$what" "$x" "$op $g" "$verdict"
}

report() {
	local t p cell st size up down conns

	echo
	size=$(cat "$tmp/data/size")
	echo "sync benchmark: $docs JSON documents of ~1 KiB ($size bytes), then"
	echo "$changes of them changed; over 127.0.0.1 TCP; median of $rounds timed rounds"
	row tool "full (s)" "incr (s)" "bytes full" "bytes incr"
	for t in "${tools[@]}"; do
		st=${state[$t]:-ok}
		if [ "$st" != ok ] && [ -z "${med[$t.full]:-}" ]; then
			printf '%-12s %s\n' "${label[$t]}" "$st${reason[$t]:+: ${reason[$t]}}"
			continue
		fi
		cell=()
		for p in "${phases[@]}"; do
			cell+=("${med[$t.$p]:--}")
		done
		for p in "${phases[@]}"; do
			cell+=("$(wire_total "$t" "$p")")
			[ -n "${cell[-1]}" ] || cell[-1]=-
		done
		row "${label[$t]}" "${cell[@]}"
		[ "$st" = ok ] || printf '%-12s %s\n' "" "$st: ${reason[$t]}"
	done

	echo
	goal_row "barrelsync / rsync, full time" "${med[barrelsync.full]:-}" \
		"${med[rsync.full]:-}" "<=" 2
	goal_row "barrelsync / rsync, incremental time" \
		"${med[barrelsync.incr]:-}" "${med[rsync.incr]:-}" "<" 1
	goal_row "barrelsync / rsync, incremental bytes" \
		"$(wire_total barrelsync incr)" "$(wire_total rsync incr)" "<" 1
	goal_row "  the same, the target's link alone" \
		"$(wire_link barrelsync incr syncd_dst)" "$(wire_total rsync incr)" "<" 1
	goal_row "barrelsync / PouchDB, full time" "${med[barrelsync.full]:-}" \
		"${med[pouchdb.full]:-}" "<" 1
	goal_row "barrelsync / PouchDB, incremental time" \
		"${med[barrelsync.incr]:-}" "${med[pouchdb.incr]:-}" "<" 1

	echo
	echo "bytes: counted by tools/bench_sync_proxy.js in a first, untimed round"
	echo "where every tool went through it (TCP payload, both ways, every"
	echo "connection). barrelsync and PouchDB's replicator are clients of both"
	echo "peers: every document crosses the source's link and the target's;"
	echo "rsync's client is the source. The target's link alone is what would"
	echo "cross the network with barrelsync run on the source's machine."
	echo "client->server / server->client, connections:"
	for t in "${tools[@]}"; do
		for p in "${phases[@]}"; do
			[ -n "${wire[$t.$p]:-}" ] || continue
			read -r up down conns _ <<<"${wire[$t.$p]}"
			printf '  %-11s %-5s %10s / %-10s %4s conn  (%s s through the proxy)\n' \
				"${label[$t]}" "$p" "$up" "$down" "$conns" "${psecs[$t.$p]:-?}"
			[ -n "${source[$t]:-}" ] || continue
			printf '  %-17s source link %s, target link %s\n' "" \
				"$(wire_link "$t" "$p" "${source[$t]}")" \
				"$(wire_link "$t" "$p" "${target[$t]}")"
		done
	done
	for p in "${phases[@]}"; do
		[ -n "${stats[rsync.$p]:-}" ] || continue
		read -r up down <<<"${stats[rsync.$p]}"
		echo "  rsync --stats, $p: Total bytes sent $up, received $down"
	done
	echo "times: wall clock of the whole command (process start included: rsync,"
	echo "barrelsync, node pouch_replicate.js), each round into a new target;"
	for t in "${tools[@]}"; do
		for p in "${phases[@]}"; do
			[ -n "${secs[$t.$p]:-}" ] || continue
			printf '  %-11s %-5s' "${label[$t]}" "$p"
			# Word splitting of the list of seconds is wanted.
			# shellcheck disable=SC2086
			printf ' %.3f' ${secs[$t.$p]}
			printf '\n'
		done
	done
	if [ "$fstype" = tmpfs ]; then
		echo "data on tmpfs ($tmpbase): no tool pays for a disk (barrel-syncd's"
		echo "fdatasync of every _bulk_docs is free there);"
	else
		echo "data on $fstype ($tmpbase): rsync does not fsync, barrel-syncd makes"
		echo "every _bulk_docs durable (fdatasync);"
	fi
	echo "PouchDB keeps all in memory; express-pouchdb gzips its replies,"
	echo "barrel-syncd does not."
	echo "source loaded beforehand with _bulk_docs of $batch documents (not timed):" \
		"${load_note:-}"
	[ "${#notes[@]}" -eq 0 ] || printf '%s\n' "${notes[@]}"
}

# ---- main ----

while [ $# -gt 0 ]; do
	case $1 in
	--builddir) [ $# -ge 2 ] || usage 2; builddir=$2; shift 2 ;;
	--builddir=*) builddir=${1#*=}; shift ;;
	--docs) [ $# -ge 2 ] || usage 2; docs=$2; shift 2 ;;
	--docs=*) docs=${1#*=}; shift ;;
	--changes) [ $# -ge 2 ] || usage 2; changes=$2; shift 2 ;;
	--changes=*) changes=${1#*=}; shift ;;
	--rounds) [ $# -ge 2 ] || usage 2; rounds=$2; shift 2 ;;
	--rounds=*) rounds=${1#*=}; shift ;;
	--tmpdir) [ $# -ge 2 ] || usage 2; tmpbase=$2; shift 2 ;;
	--tmpdir=*) tmpbase=${1#*=}; shift ;;
	-h | --help) usage 0 ;;
	*) echo "$prog: unknown argument '$1'" >&2; usage 2 ;;
	esac
done
number --docs "$docs"
number --changes "$changes"
number --rounds "$rounds"
[ "$docs" -le 1000000 ] || { echo "$prog: --docs: at most 1000000" >&2; usage 2; }
[ "$changes" -le "$docs" ] || { echo "$prog: --changes: at most --docs" >&2; usage 2; }
[ "$rounds" -le 99 ] || { echo "$prog: --rounds: at most 99" >&2; usage 2; }
builddir=$(cd "$builddir" && pwd -P) || die "no build directory"
tmpbase=$(cd "${tmpbase:-$builddir}" && pwd -P) || die "no directory ${tmpbase:-$builddir}"
syncd=$builddir/barrel-syncd
bsync=$builddir/barrelsync
limit=$((60 + docs / 50))   # seconds for one sync

command -v rsync >/dev/null 2>&1 || skip "no rsync (Debian package rsync)"
command -v node >/dev/null 2>&1 || skip "no node (Debian package nodejs)"
command -v curl >/dev/null 2>&1 || skip "no curl (Debian package curl)"
command -v jq >/dev/null 2>&1 || skip "no jq (Debian package jq)"
for m in express-pouchdb pouchdb-core pouchdb-replication; do
	[ -d "$srcdir/tests/sync/node_modules/$m" ] ||
		skip "no $srcdir/tests/sync/node_modules/$m: run 'npm ci --prefix tests/sync'"
done

exec 3>&2                   # the standard error, for cleanup
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
tmp=$(mktemp -d "$tmpbase/bench-sync.XXXXXX") || die "cannot make a temporary directory"
case $tmp in *[[:space:]]*) die "white space in $tmp" ;; esac
fstype=$(stat -f -c %T "$tmp")

echo "sync benchmark: writing $docs documents"
make_docs || die "could not write the documents"

start_rsyncd || fail rsync "the rsync daemon did not start"
if [ ! -x "$syncd" ]; then
	state[barrelsync]="not built: no $syncd"
elif [ ! -x "$bsync" ]; then
	state[barrelsync]="not built: no $bsync"
elif ! start_syncd syncd_src || ! start_syncd syncd_dst; then
	fail barrelsync "barrel-syncd did not start"
fi
if ! start_pouch pouch_src || ! start_pouch pouch_dst; then
	fail pouchdb "the PouchDB server did not start"
fi

for t in barrelsync pouchdb; do
	[ "${state[$t]:-ok}" = ok ] || continue
	case $t in
	barrelsync) d=syncd_src ;;
	pouchdb) d=pouch_src ;;
	esac
	t0=$EPOCHREALTIME
	if load "http://$(addr "$d" direct)/bench" 2>"$tmp/load.err"; then
		load_note+="${load_note:+, }${label[$t]} $(calc '%.1f' "${EPOCHREALTIME/,/.} - ${t0/,/.}") s"
	else
		fail "$t" "loading the source failed" "$(head -c 400 "$tmp/load.err")"
	fi
done
[ "${#port[@]}" -gt 0 ] && { start_proxy || die "the counting proxy did not start"; }

# Round 0 counts the bytes through the proxy (and warms every cache);
# rounds 1.. are timed. Rounds go over every tool in turn, so that a
# noisy moment of the machine falls on all of them.
for ((round = 0; round <= rounds; round++)); do
	for t in "${tools[@]}"; do
		[ "${state[$t]:-ok}" = ok ] || continue
		if [ "$round" = 0 ]; then
			mode=proxy
			printf 'sync benchmark: bytes round: %s ' "${label[$t]}"
		else
			mode=direct
			printf 'sync benchmark: round %d/%d: %s ' "$round" "$rounds" "${label[$t]}"
		fi
		start=$SECONDS
		"bench_$t" "$round" "$mode" 2>"$tmp/$t.stderr"
		echo "${state[$t]:-ok} in $((SECONDS - start)) s"
		[ ! -s "$tmp/$t.stderr" ] || notes+=("${label[$t]}: $(head -c 600 "$tmp/$t.stderr")")
	done
done
# A tool that failed has no figures: a broken sync is never a fast one.
for t in "${tools[@]}"; do
	[ "${state[$t]:-ok}" = FAILED ] || continue
	for p in "${phases[@]}"; do
		unset "secs[$t.$p]" "wire[$t.$p]" "stats[$t.$p]"
	done
done
for key in "${!secs[@]}"; do
	# Word splitting of the list of seconds is wanted.
	# shellcheck disable=SC2086
	med[$key]=$(calc '%.3f' "$(median ${secs[$key]})")
done
report
exit "$failed"
