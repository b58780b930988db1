#!/bin/bash
# Proves that editors and tools save a document as exactly one new
# revision, never a deletion, and that their temporary, backup, lock and
# probe files stay scratch files: vim (backupcopy=yes, backupcopy=no with
# writebackup, defaults), sed -i, cp, mv into the mount, mv within it and
# across databases, rsync in and out, emacs and gedit habits, jq.
# A save is checked after the grace period (-o grace=1) has passed, so a
# deletion written late for a file moved away would be seen.
# shellcheck disable=SC2010 # ls | grep: the test is of readdir itself
set -u
. "$(dirname "$0")/lib.sh"
fs_init test_mount_editors
fs_start

# All documents live in database ed; each case records the ids it makes
# in $work/ids, so the last case can check that nothing else became one.
mkdir "$mnt/ed" || { echo "Bail out! mkdir ed failed"; exit 1; }

# mkdoc NAME: ed/NAME.json holds $work/NAME.1, {"name": NAME, "n": 1};
# $work/NAME.2 is the same with "n": 2. NAME has no digit 1.
mkdoc() {
	printf '{\n  "name": "%s",\n  "n": 1\n}\n' "$1" >"$work/$1.1"
	printf '{\n  "name": "%s",\n  "n": 2\n}\n' "$1" >"$work/$1.2"
	cp "$work/$1.1" "$mnt/ed/$1.json"
	echo "$1" >>"$work/ids"
}

# one_rev NAME WANT CMD...: CMD, then the grace period; ed/NAME.json then
# holds WANT, and .rev/NAME/ lists exactly one revision more than before:
# WANT, one generation on, the current one in .changes, not a deletion.
# Nothing listed before is gone.
one_rev() {
	local name=$1 want=$2 old g new n lost

	shift 2
	old=$(rev_of ed "$name")
	g=0
	[ -z "$old" ] || g=$(gen "$old")
	revs ed "$name" >"$work/revs.before"
	"$@" >"$work/cmd.out" 2>&1 ||
		die "$*: status $?: $(head -c 500 "$work/cmd.out")"
	sleep_grace
	[ -f "$mnt/ed/$name.json" ] ||
		die "$name.json is gone after $1 and the grace period"
	cmp -s "$mnt/ed/$name.json" "$want" ||
		die "$name.json is not the saved body: $(head -c 300 "$mnt/ed/$name.json")"
	revs ed "$name" >"$work/revs.after"
	lost=$(comm -23 "$work/revs.before" "$work/revs.after")
	[ -z "$lost" ] || die ".rev/$name no longer lists $lost"
	new=$(comm -13 "$work/revs.before" "$work/revs.after")
	n=$(printf '%s' "$new" | grep -c . || true)
	[ "$n" -eq 1 ] || die "$1 made $n revisions, not 1: $(echo $new)"
	cmp -s "$mnt/ed/.rev/$name/$new.json" "$want" ||
		die ".rev/$name/$new.json is not the saved body (a deletion?)"
	[ "$(gen "$new")" -eq $((g + 1)) ] ||
		die "$new is not generation $((g + 1)) (a deletion in between?)"
	change_of ed "$name" | jq -e --arg r "$new" \
		'(has("deleted") | not) and .changes[0].rev == $r' >/dev/null ||
		die ".changes: $(change_of ed "$name"), expected $new, not deleted"
}

# no_rev NAME CMD...: CMD leaves ed/NAME.json and its history as they were.
no_rev() {
	local name=$1

	shift
	revs ed "$name" >"$work/revs.before"
	cp "$mnt/ed/$name.json" "$work/body.before"
	"$@" >"$work/cmd.out" 2>&1 ||
		die "$*: status $?: $(head -c 500 "$work/cmd.out")"
	sleep_grace
	cmp -s "$mnt/ed/$name.json" "$work/body.before" || die "$1 changed $name.json"
	revs ed "$name" >"$work/revs.after"
	cmp -s "$work/revs.before" "$work/revs.after" ||
		die "$1 changed .rev/$name: $(comm -3 "$work/revs.before" "$work/revs.after")"
}

# no_scratch_left NAME: no editor leftovers of NAME.json in ed.
no_scratch_left() {
	ls -a "$mnt/ed" >"$work/ls"
	! grep -Fx -e "$1.json~" -e ".$1.json.swp" -e 4913 -e "#$1.json#" \
		"$work/ls" >/dev/null || die "leftovers: $(grep -F "$1" "$work/ls")"
}

# vim in ex mode, as on a home directory: backupskip would skip backups
# for files under /tmp, where the mount is.
vim_ex() {  # vim_ex SETTINGS FILE
	vim -u NONE -i NONE -N -es -c 'set backupskip=' -c "$1" \
		-c '%s/1/2/' -c 'wq' "$2"
}

# vim with backupcopy=yes (copy to ID.json~, overwrite ID.json): one revision.
t_vim_yes() {
	need vim vim
	mkdoc vimyes
	one_rev vimyes "$work/vimyes.2" vim_ex 'set backupcopy=yes' "$mnt/ed/vimyes.json"
	no_scratch_left vimyes
}
run_case t_vim_yes "vim backupcopy=yes: one revision"

# vim with backupcopy=no writebackup renames ID.json to ID.json~ first, then
# writes a new ID.json: one revision on the moved one, no deletion.
t_vim_no() {
	need vim vim
	mkdoc vimno
	one_rev vimno "$work/vimno.2" vim_ex 'set backupcopy=no writebackup' \
		"$mnt/ed/vimno.json"
	no_scratch_left vimno
}
run_case t_vim_no "vim backupcopy=no writebackup (rename away): one revision"

# vim's defaults (backupcopy=auto: the 4913 probe, then rename): one revision.
t_vim_default() {
	need vim vim
	mkdoc vimdef
	one_rev vimdef "$work/vimdef.2" vim_ex 'set backupcopy&' "$mnt/ed/vimdef.json"
	no_scratch_left vimdef
}
run_case t_vim_default "vim with default settings: one revision"

# sed -i (a temporary file renamed over ID.json): one revision.
t_sed() {
	mkdoc bysed
	one_rev bysed "$work/bysed.2" sed -i 's/1/2/' "$mnt/ed/bysed.json"
	! ls "$mnt/ed" | grep -q '^sed' || die "sed left $(ls "$mnt/ed" | grep '^sed')"
}
run_case t_sed "sed -i: one revision"

# A save that changes nothing makes no revision (sed -i, touch, append).
t_noop() {
	mkdoc noop
	bad=
	(no_rev noop sed -i 's/zzz/yyy/' "$mnt/ed/noop.json") || bad="$bad sed-i"
	(no_rev noop touch "$mnt/ed/noop.json") || bad="$bad touch"
	(no_rev noop sh -c ': >>"$1"' sh "$mnt/ed/noop.json") || bad="$bad append"
	(no_rev noop cp "$work/noop.1" "$mnt/ed/noop.json") || bad="$bad cp"
	[ -z "$bad" ] || die "a revision (or a failure) from:$bad"
}
run_case t_noop "saving the same bytes makes no revision"

# cp over a document: one revision.
t_cp() {
	mkdoc cpdoc
	one_rev cpdoc "$work/cpdoc.2" cp "$work/cpdoc.2" "$mnt/ed/cpdoc.json"
}
run_case t_cp "cp over a document: one revision"

# mv from outside the mount to a new name: a new document, revision 1.
t_mv_in_new() {
	printf '{"moved": "in"}\n' >"$work/mvnew.json"
	cp "$work/mvnew.json" "$work/mvnew.want"
	echo mvnew >>"$work/ids"
	one_rev mvnew "$work/mvnew.want" mv "$work/mvnew.json" "$mnt/ed/mvnew.json"
	[ ! -e "$work/mvnew.json" ] || die "mv left the source"
}
run_case t_mv_in_new "mv from outside to a new name: revision 1"

# mv from outside over a document: one revision, no deletion. (GNU mv
# unlinks the target and creates it again, O_EXCL, when it copies across
# file systems.)
t_mv_in_over() {
	mkdoc mvover
	cp "$work/mvover.2" "$work/mvover.src"
	one_rev mvover "$work/mvover.2" mv "$work/mvover.src" "$mnt/ed/mvover.json"
}
run_case t_mv_in_over "mv from outside over a document: one revision"

# mv ed/rena.json ed/renb.json: rena is deleted, renb created with its body.
t_mv_rename() {
	mkdoc rena
	echo renb >>"$work/ids"
	mv "$mnt/ed/rena.json" "$mnt/ed/renb.json"
	sleep_grace
	[ ! -e "$mnt/ed/rena.json" ] || die "rena.json is still there"
	cmp "$mnt/ed/renb.json" "$work/rena.1" || die "renb.json is not rena's body"
	change_of ed rena | jq -e '.deleted == true' >/dev/null ||
		die "rena is not deleted: $(change_of ed rena)"
	change_of ed renb | jq -e 'has("deleted") | not' >/dev/null ||
		die "renb: $(change_of ed renb)"
	[ "$(nrevs ed renb)" -eq 1 ] || die ".rev/renb: $(revs ed renb)"
	[ "$(nrevs ed rena)" -ge 1 ] || die ".rev/rena lost the history"
}
run_case t_mv_rename "mv a.json b.json: a deleted, b created"

# mv ed/xdb.json edb/: deleted in ed, created in edb with the same bytes.
t_mv_db() {
	mkdoc xdb
	mkdir "$mnt/edb"
	mv "$mnt/ed/xdb.json" "$mnt/edb/"
	sleep_grace
	[ ! -e "$mnt/ed/xdb.json" ] || die "ed/xdb.json is still there"
	cmp "$mnt/edb/xdb.json" "$work/xdb.1" || die "edb/xdb.json differs"
	change_of ed xdb | jq -e '.deleted == true' >/dev/null ||
		die "xdb is not deleted in ed: $(change_of ed xdb)"
	change_of edb xdb | jq -e 'has("deleted") | not' >/dev/null ||
		die "edb has no xdb: $(change_of edb xdb)"
	[ "$(nrevs edb xdb)" -eq 1 ] || die "edb/.rev/xdb: $(revs edb xdb)"
}
run_case t_mv_db "mv db1/a.json db2/: moved across databases"

# rsync -a into the mount: new documents at revision 1, an updated one one
# revision on, scratch files too; a second rsync changes nothing.
t_rsync_in() {
	need rsync rsync
	mkdoc rsu
	mkdir "$work/rs"
	printf '{"rs": "a"}\n' >"$work/rs/rsa.json"
	printf '{"rs": "b"}\n' >"$work/rs/rsb.json"
	cp "$work/rsu.2" "$work/rs/rsu.json"
	printf 'notes\n' >"$work/rs/notes.txt"
	printf 'hidden\n' >"$work/rs/.hidden"
	chmod 640 "$work/rs/rsa.json"
	touch -d '2020-01-02 03:04:05' "$work/rs/"*.json "$work/rs/notes.txt"
	printf 'rsa\nrsb\n' >>"$work/ids"
	g=$(gen "$(rev_of ed rsu)")
	rsync -a "$work/rs/" "$mnt/ed/" || die "rsync in: status $?"
	sleep_grace
	for f in rsa.json rsb.json rsu.json notes.txt .hidden; do
		cmp "$mnt/ed/$f" "$work/rs/$f" || die "$f differs"
	done
	[ "$(nrevs ed rsa)" -eq 1 ] || die ".rev/rsa: $(revs ed rsa)"
	[ "$(nrevs ed rsb)" -eq 1 ] || die ".rev/rsb: $(revs ed rsb)"
	[ "$(gen "$(rev_of ed rsu)")" -eq $((g + 1)) ] || die "rsu: not one revision"
	[ "$(nrevs ed rsu)" -eq 2 ] || die ".rev/rsu: $(revs ed rsu)"
	! ls -a "$mnt/ed" | grep -q '^\.rs.\.json\.' || die "rsync temp files left"
	for d in rsa rsb rsu; do
		change_of ed $d | jq -e 'has("deleted") | not' >/dev/null || die "$d"
	done
	rsync -a "$work/rs/" "$mnt/ed/" || die "rsync again: status $?"
	[ "$(nrevs ed rsa)" -eq 1 ] && [ "$(nrevs ed rsb)" -eq 1 ] &&
		[ "$(nrevs ed rsu)" -eq 2 ] || die "a second rsync made revisions"
}
run_case t_rsync_in "rsync -a into the mount" 180

# rsync -a kept the times and modes it set on its temporary files, which
# it renamed over the documents.
t_rsync_times() {
	need rsync rsync
	[ -f "$work/rs/rsa.json" ] || die "no rsync source from the case before"
	for f in rsa.json rsu.json notes.txt; do
		[ "$(stat -c %Y "$mnt/ed/$f")" = "$(stat -c %Y "$work/rs/$f")" ] ||
			die "$f: mtime $(stat -c %y "$mnt/ed/$f") is not rsync's"
	done
	[ "$(stat -c %a "$mnt/ed/rsa.json")" = 640 ] || die "rsa.json: mode not 640"
}
run_case t_rsync_times "rsync -a into the mount keeps times and modes"

# rsync -a out of the mount: documents and scratch files byte for byte.
t_rsync_out() {
	need rsync rsync
	rsync -a "$mnt/ed/" "$work/out/" || die "rsync out: status $?"
	n=0
	for f in "$mnt"/ed/*.json; do
		cmp "$f" "$work/out/${f##*/}" || die "${f##*/} differs"
		[ "$(stat -c %Y "$f")" = "$(stat -c %Y "$work/out/${f##*/}")" ] ||
			die "${f##*/}: the mtime did not come out"
		n=$((n + 1))
	done
	[ $n -ge 5 ] || die "only $n documents"
	for f in notes.txt .hidden; do
		cmp "$mnt/ed/$f" "$work/out/$f" || die "scratch $f differs"
	done
}
run_case t_rsync_out "rsync -a out of the mount" 180

# emacs: a .#ID.json lock symlink, a #ID.json# autosave, the original
# renamed to ID.json~ and a new ID.json written: one revision; the backup
# and the rest are scratch.
emacs_save() {
	local lock='user@host.4242:1700000000'

	ln -s "$lock" "$mnt/ed/.#em.json" || return 1
	[ "$(readlink "$mnt/ed/.#em.json")" = "$lock" ] ||
		{ echo "readlink .#em.json: not $lock"; return 1; }
	cp "$work/em.2" "$mnt/ed/#em.json#" &&
	mv "$mnt/ed/em.json" "$mnt/ed/em.json~" &&
	cat "$work/em.2" >"$mnt/ed/em.json" &&
	rm "$mnt/ed/#em.json#" "$mnt/ed/.#em.json"
}
t_emacs() {
	mkdoc em
	one_rev em "$work/em.2" emacs_save
	cmp "$mnt/ed/em.json~" "$work/em.1" || die "em.json~ is not the old body"
	[ -z "$(change_of ed 'em.json~')" ] || die "em.json~ became a document"
	[ ! -e "$mnt/ed/.#em.json" ] && [ ! -e "$mnt/ed/#em.json#" ] ||
		die "the lock or autosave is still there"
	rm "$mnt/ed/em.json~"
	[ "$(nrevs ed em)" -eq 2 ] || die "rm of the backup touched em"
}
run_case t_emacs "emacs lock, autosave and backup: one revision"

# gedit: write .goutputstream-XXXXXX, rename it over ID.json: one revision.
gedit_save() {
	cat "$work/ge.2" >"$mnt/ed/.goutputstream-AB12CD" &&
	mv "$mnt/ed/.goutputstream-AB12CD" "$mnt/ed/ge.json"
}
t_gedit() {
	mkdoc ge
	one_rev ge "$work/ge.2" gedit_save
	[ ! -e "$mnt/ed/.goutputstream-AB12CD" ] || die "the temp file is still there"
}
run_case t_gedit "gedit's write and rename: one revision"

# vim's 4913 probe is a scratch file, never a document nor a folder.
t_4913() {
	touch "$mnt/ed/4913"
	[ -f "$mnt/ed/4913" ] || die "4913 is not a regular file"
	rm "$mnt/ed/4913"
	[ ! -e "$mnt/ed/4913" ] || die "4913 is still there"
	[ -z "$(change_of ed 4913)" ] || die "4913 became a document"
	[ ! -e "$mnt/ed/.rev/4913" ] || die ".rev/4913 exists"
}
run_case t_4913 "vim's 4913 probe is a scratch file"

# jq reads without a revision; jq to a temp file and mv: one revision.
jq_save() {
	jq '.n = 2' "$mnt/ed/jqdoc.json" >"$mnt/ed/jqdoc.json.tmp" &&
	mv "$mnt/ed/jqdoc.json.tmp" "$mnt/ed/jqdoc.json"
}
t_jq() {
	mkdoc jqdoc
	jq . "$mnt/ed/jqdoc.json" >"$work/jq.out"
	jq . "$work/jqdoc.1" | cmp - "$work/jq.out" || die "jq . reads other JSON"
	no_rev jqdoc jq . "$mnt/ed/jqdoc.json"
	jq '.n = 2' "$work/jqdoc.1" >"$work/jqdoc.want"
	one_rev jqdoc "$work/jqdoc.want" jq_save
}
run_case t_jq "jq reads; jq > tmp && mv: one revision"

# Only the documents the cases made are in .changes: no scratch name
# (swap, backup, probe, temp, lock) ever became a document.
t_only_docs() {
	[ -s "$work/ids" ] || die "no ids recorded"
	sort -u "$work/ids" >"$work/ids.want"
	jq -r .id "$mnt/ed/.changes" | sort -u >"$work/ids.have"
	diff "$work/ids.want" "$work/ids.have" >&2 ||
		die ".changes lists other ids (+) or misses some (-)"
	jq -r -s 'reduce .[] as $c ({}; .[$c.id] = $c) | .[] |
		select(.deleted == true) | .id' "$mnt/ed/.changes" | sort |
		tr '\n' ' ' >"$work/deleted"
	[ "$(cat "$work/deleted")" = "rena xdb " ] ||
		die "deleted: $(cat "$work/deleted"), expected rena and xdb only"
}
run_case t_only_docs "scratch names never became documents"

run_step fs_unmount "a clean unmount: barrelfs exits 0"
fs_done
