#!/bin/bash
# Proves that barrelsync and barrel-syncd replicate with a real PouchDB
# (express-pouchdb over an in-memory PouchDB, pouchdb_server.js), both
# ways (PRODUCT.md "Sync"): documents and deletions, resumption from the
# checkpoint, conflicts made on both sides converging to the same leaves
# and winner, attachments byte for byte, _local documents never
# replicated while checkpoints exist on both ends, a DATADIR/db endpoint,
# and PouchDB's own replicator pulling from and pushing to barrel-syncd;
# at the end every database has, per document, the same leaves and the
# same winner on PouchDB and on barrel-syncd.
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
sync_init test_sync_pouchdb
need_pouchdb

pouch_start || { echo "Bail out! the PouchDB server does not start"; exit 1; }
syncd_start s1 listen=127.0.0.1:0 ||
	{ echo "Bail out! barrel-syncd does not start"; sync_done; }
S=${syncd_url[s1]}
P=$pouch
D2=$tmp/d2             # a DATADIR no daemon holds, for DATADIR/db endpoints
mkdir "$D2"
echo "# PouchDB at $P, barrel-syncd at $S"

# pouch_repl ARGS...: pouch_replicate.js (at most 120 s); its JSON result
# in $work/pouch.json; dies with it on failure.
pouch_repl() {
	timeout 120 node "$sync_srcdir/pouch_replicate.js" "$@" \
		>"$work/pouch.json" 2>"$work/pouch.err" ||
		die "pouch_replicate.js $* failed: $(head -c 800 "$work/pouch.json")" \
			"$(head -c 400 "$work/pouch.err")"
}

# del_doc PEER DB ID: delete the winner of ID.
del_doc() {
	req DELETE "$1" "/$2/$3?rev=$(rev_on "$1" "$2" "$3")" >/dev/null
}

# Documents and a deletion pushed from barrel-syncd to PouchDB; a second
# run reads nothing (it starts from its checkpoint); _local/ stays home.
t_push() {
	req PUT "$S" /docs >/dev/null
	for i in $(seq -w 1 20); do
		put_doc "$S" docs "d$i" "{\"i\": $((10#$i)), \"s\": \"é\\u00e9\"}" >/dev/null
	done
	put_doc "$S" docs d03 "{\"i\": 33, \"s\": \"\\u00e9é\", \"_rev\": \"$(rev_on "$S" docs d03)\"}" >/dev/null
	del_doc "$S" docs d05
	json PUT "$S" /docs/_local/mine '{"private": true}' >/dev/null
	bsync --create-target "$S/docs" "$P/docs"
	expect_summary 20 20 0
	same_state "$S" docs "$P" docs
	[ "$(req GET "$P" /docs/d03 | jq -c '[.i, .s]')" = '[33,"éé"]' ] ||
		die "d03 on PouchDB: $(cat "$work/reply")"
	expect_status 404 GET "$P" /docs/d05
	grep -q '^d05 winner=deleted leaves=2-[0-9a-f]*!deleted$' "$work/state2" ||
		die "d05 on PouchDB: not a deletion: $(grep '^d05 ' "$work/state2")"
	expect_status 404 GET "$P" /docs/_local/mine
	bsync "$S/docs" "$P/docs"
	expect_summary 0 0 0
	put_doc "$S" docs d21 '{"late": 1}' >/dev/null
	bsync "$S/docs" "$P/docs"
	expect_summary 1 1 0
	same_state "$S" docs "$P" docs
}
run_case t_push "push barrel-syncd -> PouchDB: docs, deletions, resumes"

# Documents made on PouchDB pulled into barrel-syncd, then more of them.
t_pull() {
	req PUT "$P" /pdocs >/dev/null
	for i in $(seq -w 1 15); do
		put_doc "$P" pdocs "p$i" "{\"p\": $((10#$i))}" >/dev/null
	done
	put_doc "$P" pdocs p02 "{\"p\": 22, \"_rev\": \"$(rev_on "$P" pdocs p02)\"}" >/dev/null
	del_doc "$P" pdocs p04
	json PUT "$P" /pdocs/_local/mine '{"private": true}' >/dev/null
	bsync --create-target "$P/pdocs" "$S/pdocs"
	expect_summary 15 15 0
	same_state "$P" pdocs "$S" pdocs
	expect_status 404 GET "$S" /pdocs/_local/mine
	expect_status 404 GET "$S" /pdocs/p04
	for i in 16 17 18; do
		put_doc "$P" pdocs "p$i" "{\"p\": $i}" >/dev/null
	done
	bsync "$P/pdocs" "$S/pdocs"
	expect_summary 3 3 0
	same_state "$P" pdocs "$S" pdocs
}
run_case t_pull "pull PouchDB -> barrel-syncd: docs, deletions, resumes"

# A DATADIR/db endpoint: PouchDB -> DATADIR/db -> another PouchDB
# database ends with the same documents; incremental the second time.
t_datadir() {
	bsync --create-target "$P/pdocs" "$D2/pdocs"
	expect_summary 18 18 0
	bsync --create-target "$D2/pdocs" "$P/copy"
	expect_summary 18 18 0
	same_state "$P" pdocs "$P" copy
	put_doc "$P" pdocs p19 '{"p": 19}' >/dev/null
	bsync "$P/pdocs" "$D2/pdocs"
	expect_summary 1 1 0
	bsync "$D2/pdocs" "$P/copy"
	expect_summary 1 1 0
	same_state "$P" pdocs "$P" copy
	bsync "$P/pdocs" "$S/pdocs"
	expect_summary 1 1 0
}
run_case t_datadir "a DATADIR/db endpoint, both ways"

# The same documents edited on both sides between syncs, synced both ways:
# the same leaves and winner on both, the loser in _conflicts; an edit
# beats a concurrent deletion; a resolution on one side crosses.
t_conflicts() {
	req PUT "$S" /cf >/dev/null
	r=$(put_doc "$S" cf c '{"v": 0}')
	rx=$(put_doc "$S" cf x '{"v": 0}')
	bsync --create-target "$S/cf" "$P/cf"
	rs=$(put_doc "$S" cf c "{\"v\": \"s\", \"_rev\": \"$r\"}")
	rp=$(put_doc "$P" cf c "{\"v\": \"p\", \"_rev\": \"$r\"}")
	req DELETE "$S" "/cf/x?rev=$rx" >/dev/null
	rxp=$(put_doc "$P" cf x "{\"v\": \"kept\", \"_rev\": \"$rx\"}")
	bsync "$S/cf" "$P/cf"
	bsync "$P/cf" "$S/cf"
	same_state "$S" cf "$P" cf
	# CouchDB's rule: same generation, the greater revision id wins.
	if [[ $rs > $rp ]]; then win=$rs lose=$rp; else win=$rp lose=$rs; fi
	for peer in "$S" "$P"; do
		req GET "$peer" "/cf/c?conflicts=true" >"$work/c.json"
		jq -e --arg w "$win" --arg l "$lose" \
			'._rev == $w and ._conflicts == [$l]' "$work/c.json" >/dev/null ||
			die "c on $peer: expected winner $win, conflict $lose:" \
				"$(cat "$work/c.json")"
		[ "$(rev_on "$peer" cf x)" = "$rxp" ] ||
			die "x on $peer: the edit $rxp should beat the deletion"
	done
	# Resolve on PouchDB: delete the loser; it crosses to barrel-syncd.
	req DELETE "$P" "/cf/c?rev=$lose" >/dev/null
	bsync "$P/cf" "$S/cf"
	req GET "$S" "/cf/c?conflicts=true" >"$work/c.json"
	jq -e --arg w "$win" '._rev == $w and ((._conflicts // []) == [])' \
		"$work/c.json" >/dev/null ||
		die "c on barrel-syncd after the resolution: $(cat "$work/c.json")"
	# A longer branch on barrel-syncd beats a concurrent edit on PouchDB.
	r=$(rev_on "$S" cf c)
	r2=$(put_doc "$S" cf c "{\"v\": \"s2\", \"_rev\": \"$r\"}")
	r3=$(put_doc "$S" cf c "{\"v\": \"s3\", \"_rev\": \"$r2\"}")
	put_doc "$P" cf c "{\"v\": \"p2\", \"_rev\": \"$r\"}" >/dev/null
	bsync "$P/cf" "$S/cf"
	bsync "$S/cf" "$P/cf"
	same_state "$S" cf "$P" cf
	[ "$(rev_on "$P" cf c)" = "$r3" ] || die "c on PouchDB: not $r3"
}
run_case t_conflicts "conflicts made on both sides converge"

# Attachments of a few hundred KiB cross both ways byte for byte, with the
# same digest; a later edit of the body keeps them.
t_attachments() {
	head -c 300000 /dev/urandom >"$work/a.bin"
	head -c 250001 /dev/urandom >"$work/b.bin"
	req PUT "$S" /att >/dev/null
	r=$(put_doc "$S" att a '{"k": "a"}')
	req PUT "$S" "/att/a/blob.bin?rev=$r" \
		-H 'Content-Type: application/octet-stream' \
		--data-binary @"$work/a.bin" >/dev/null
	bsync --create-target "$S/att" "$P/att"
	req GET "$P" /att/a/blob.bin >"$work/a.out"
	cmp "$work/a.bin" "$work/a.out" || die "blob.bin differs on PouchDB"
	req PUT "$P" /att/b/pic.bin -H 'Content-Type: image/png' \
		--data-binary @"$work/b.bin" >/dev/null
	bsync "$P/att" "$S/att"
	req GET "$S" /att/b/pic.bin >"$work/b.out"
	cmp "$work/b.bin" "$work/b.out" || die "pic.bin differs on barrel-syncd"
	for id in a b; do
		d1=$(req GET "$S" "/att/$id" | jq -c '._attachments | map_values({digest, length, content_type})')
		d2=$(req GET "$P" "/att/$id" | jq -c '._attachments | map_values({digest, length, content_type})')
		[ "$d1" = "$d2" ] || die "$id: attachments differ: $d1 vs $d2"
	done
	r=$(rev_on "$P" att b)
	req GET "$P" /att/b | jq -c '.k = "edited"' >"$work/b.json"
	json PUT "$P" /att/b @"$work/b.json" >/dev/null
	bsync "$P/att" "$S/att"
	[ "$(req GET "$S" /att/b | jq -r .k)" = edited ] || die "the edit of b did not cross"
	req GET "$S" /att/b/pic.bin >"$work/b.out"
	cmp "$work/b.bin" "$work/b.out" || die "pic.bin changed with the edit of b"
	same_state "$S" att "$P" att
}
run_case t_attachments "attachments cross both ways byte for byte"

# Checkpoints: each replication left the same _local/ document (same
# session) on both ends: PouchDB lists its own with _local_docs, the other
# end is barrel-syncd or, for t_datadir's, DATADIR d2 (served here for a
# look). The _local/mine of either side never crossed.
t_checkpoints() {
	case_syncd_start d2
	D=unix:${syncd_sock[d2]}
	for db in docs pdocs cf att; do
		req GET "$P" "/$db/_local_docs" | jq -r '.rows[].id' >"$work/locals"
		grep -v '^_local/mine$' "$work/locals" >"$work/ckpts" ||
			die "no checkpoint on PouchDB in $db: $(cat "$work/locals")"
		while IFS= read -r id; do
			u="/$db/_local/$(uri "${id#_local/}")"
			req GET "$P" "$u" >"$work/ck.pouch"
			st=$(call GET "$S" "$u")
			[ "$st" = 200 ] || st=$(call GET "$D" "$u")
			[ "$st" = 200 ] ||
				die "checkpoint $db/$id is on PouchDB, not on the other end:" \
					"$(what_failed "$st")"
			s1=$(jq -r .session_id "$work/ck.pouch")
			s2=$(jq -r .session_id "$work/reply")
			[ "$s1" = "$s2" ] || die "checkpoint $db/$id: session $s1 on" \
				"PouchDB, $s2 on the other end"
		done <"$work/ckpts"
	done
	expect_status 404 GET "$P" /docs/_local/mine
	expect_status 404 GET "$S" /pdocs/_local/mine
	req GET "$S" /docs/_local/mine | jq -e '.private == true' >/dev/null
	syncd_stop d2
}
run_case t_checkpoints "checkpoints on both ends, _local docs stay home"

# kill -9 in the middle of a big push: the checkpoint on PouchDB names a
# sequence already; the rerun reads fewer documents than there are, and
# its session starts from that sequence (the checkpoint's history says
# start_last_seq), and ends with every document on PouchDB.
t_resume() {
	local n rc=0 total=3000

	req PUT "$S" /bigp >/dev/null
	bulk_docs "$S" bigp "$total" b
	bg "$bsync" --batch 50 --quiet --create-target "$S/bigp" "$P/bigp" \
		2>"$work/kill.err"
	pid=$!
	for _ in $(seq 1 3000); do
		n=$(call GET "$P" /bigp >/dev/null && jq -r '.doc_count // 0' "$work/reply" || echo 0)
		[ "$n" -ge $((total / 5)) ] && break
		alive "$pid" || break
		sleep 0.02
	done
	kill -KILL "$pid" 2>/dev/null || true
	bg_wait "$pid" || rc=$?
	n=$(req GET "$P" /bigp | jq -r .doc_count)
	[ "$n" -lt "$total" ] || die "the push ended (status $rc) before the kill"
	echo "killed with $n of $total documents on PouchDB"
	# The kill may fall between the writes of the two checkpoints.
	seq1=$(checkpoint "$P" bigp | jq -c .source_last_seq)
	seq2=$(checkpoint "$S" bigp | jq -c .source_last_seq)
	[ "$seq1" != null ] && [ "$seq2" != null ] ||
		die "a checkpoint names no sequence: $seq1 on PouchDB, $seq2 on barrel-syncd"
	bsync --batch 50 "$S/bigp" "$P/bigp"
	echo "rerun: $(summary)"
	[ "$(summary read)" -lt "$total" ] || die "the rerun read all: $(summary)"
	checkpoint "$P" bigp >"$work/ck.json"
	jq -e --argjson a "$seq1" --argjson b "$seq2" \
		'.history[0].start_last_seq | . == $a or . == $b' \
		"$work/ck.json" >/dev/null ||
		die "the rerun did not start from $seq1 or $seq2:" \
			"$(head -c 600 "$work/ck.json")"
	all_docs "$S" bigp >"$work/b1"
	all_docs "$P" bigp >"$work/b2"
	[ "$(wc -l <"$work/b2")" -eq "$total" ] || die "$(wc -l <"$work/b2") docs on PouchDB"
	cmp -s "$work/b1" "$work/b2" || die "bigp differs between the peers"
}
run_case t_resume "kill -9 mid-push; the rerun resumes from the checkpoint" 300

# PouchDB's replicator pulls from barrel-syncd: documents, conflicts and
# attachments; a second run reads nothing (its checkpoint on barrel-syncd
# is read back).
t_pouch_pull() {
	pouch_repl --create-target "$S/cf" "$P/pcf"
	same_state "$S" cf "$P" pcf
	pouch_repl --create-target "$S/att" "$P/patt"
	req GET "$S" /att/a/blob.bin >"$work/want"
	req GET "$P" /patt/a/blob.bin >"$work/got"
	cmp "$work/want" "$work/got" || die "blob.bin differs after PouchDB's pull"
	same_state "$S" att "$P" patt
	pouch_repl "$S/cf" "$P/pcf"
	jq -e '.docs_read == 0' "$work/pouch.json" >/dev/null ||
		die "a second pull read documents again: $(cat "$work/pouch.json")"
}
run_case t_pouch_pull "PouchDB's replicator pulls from barrel-syncd"

# PouchDB's replicator pushes into barrel-syncd: documents, deletions,
# conflicts, attachments.
t_pouch_push() {
	pouch_repl --create-target "$P/pdocs" "$S/ppdocs"
	same_state "$P" pdocs "$S" ppdocs
	pouch_repl --create-target "$P/cf" "$S/pcf2"
	same_state "$P" cf "$S" pcf2
	pouch_repl --create-target "$P/att" "$S/patt2"
	for f in a/blob.bin b/pic.bin; do
		req GET "$P" "/att/$f" >"$work/want"
		req GET "$S" "/patt2/$f" >"$work/got"
		cmp "$work/want" "$work/got" || die "$f differs after PouchDB's push"
	done
	same_state "$P" att "$S" patt2
	pouch_repl "$P/pdocs" "$S/ppdocs"
	jq -e '.docs_read == 0' "$work/pouch.json" >/dev/null ||
		die "a second push read documents again: $(cat "$work/pouch.json")"
}
run_case t_pouch_push "PouchDB's replicator pushes into barrel-syncd"

# Finally, per document, the same leaves and winner on both peers.
t_final() {
	for db in docs pdocs cf att; do
		same_state "$P" "$db" "$S" "$db"
	done
}
run_case t_final "every database agrees between PouchDB and barrel-syncd"

# barrel-syncd ends with status 0 on SIGTERM.
t_stop() { syncd_stop s1; }
run_step t_stop "barrel-syncd stops cleanly on SIGTERM"
sync_done
