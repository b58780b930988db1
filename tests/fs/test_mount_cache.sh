#!/bin/bash
# Proves that documents read through the kernel's page cache always show
# the revision a reader opened, byte for byte: after saves in place that
# shrink and grow the file, after a failed save, a save by rename, a mv
# over a cached document, a change through the HTTP API, while an older
# reader is still open, and through mmap. Reads are repeated, so a stale
# page would be served from the cache rather than from the daemon.
set -u
. "$(dirname "$0")/lib.sh"
fs_init test_mount_cache
fs_start
mkdir "$mnt/pc" || { echo "Bail out! mkdir pc failed"; exit 1; }

# same FILE TEXT: FILE reads as TEXT, twice, and stat gives its size.
same() {
	local want=$2 size

	[ "$(cat "$1")" = "$want" ] || die "$1: $(cat "$1") (want $want)"
	[ "$(cat "$1")" = "$want" ] || die "$1 on a second read: $(cat "$1")"
	size=$(printf '%s' "$want" | wc -c)
	[ "$(stat -c %s "$1")" -eq "$size" ] ||
		die "$1: size $(stat -c %s "$1"), want $size"
}

t_shrink_grow() {
	local f=$mnt/pc/sg.json long

	printf '{"v": 1, "pad": "%s"}' "$(head -c 3000 /dev/zero | tr '\0' x)" \
		>"$f"
	long=$(cat "$f")
	same "$f" "$long"
	printf '{"v": 2}' >"$f"
	same "$f" '{"v": 2}'
	printf '{"v": 3, "more": [1, 2, 3]}' >"$f"
	same "$f" '{"v": 3, "more": [1, 2, 3]}'
	sed -i 's/3, "more"/4, "more"/' "$f"
	same "$f" '{"v": 4, "more": [1, 2, 3]}'
}
run_case t_shrink_grow "saves in place that shrink and grow a cached document"

t_rejected() {
	local f=$mnt/pc/bad.json

	printf '{"ok": true}' >"$f"
	same "$f" '{"ok": true}'
	printf '{not json, longer than before' >"$tmp/bad"
	expect_errno EINVAL "cp of invalid JSON" cp "$tmp/bad" "$f"
	same "$f" '{"ok": true}'
}
run_case t_rejected "a failed save leaves the cached revision as it was"

t_rename_save() {
	local f=$mnt/pc/rn.json

	printf '{"r": 1}' >"$f"
	same "$f" '{"r": 1}'
	printf '{"r": 2, "by": "rename"}' >"$mnt/pc/.rn.json.tmp"
	mv "$mnt/pc/.rn.json.tmp" "$f"
	same "$f" '{"r": 2, "by": "rename"}'
	printf '{"other": 1}' >"$mnt/pc/other.json"
	same "$mnt/pc/other.json" '{"other": 1}'
	mv "$mnt/pc/other.json" "$f"
	same "$f" '{"other": 1}'
}
run_case t_rename_save "saves by rename and mv over a cached document"

t_api_change() {
	local f=$mnt/pc/ext.json rev

	printf '{"e": 1}' >"$f"
	same "$f" '{"e": 1}'
	rev=$(xattr "$f" user.barrel.rev)
	api /pc/ext -X PUT -H 'Content-Type: application/json' \
		-d '{"_rev": "'"$rev"'", "e": 2, "from": "the API"}' >/dev/null ||
		die "PUT through the API"
	jq -e '.e == 2 and .from == "the API"' "$f" >/dev/null ||
		die "after the API's change: $(cat "$f")"
	[ "$(stat -c %s "$f")" -eq "$(cat "$f" | wc -c)" ] ||
		die "size $(stat -c %s "$f") of $(cat "$f" | wc -c) bytes"
}
run_case t_api_change "a change through the HTTP API replaces cached pages"

# across_save HOW FILE OLD NEW: a reader opens FILE (reading OLD), then
# FILE is saved as NEW, by rename or in place (without O_TRUNC, the same
# size: the kernel keeps the reader's pages). New readers read NEW while
# the reader, which still reads OLD, is open, and after it closes: none
# of them is served the old reader's pages.
across_save() {
	python3 - "$@" <<'EOF'
import os, sys
how, f, old, new = sys.argv[1], sys.argv[2], sys.argv[3].encode(), sys.argv[4].encode()
def whole():
    with open(f, "rb") as g:
        return g.read()
fd = os.open(f, os.O_RDONLY)
assert os.pread(fd, 4096, 0) == old
if how == "rename":
    tmp = os.path.join(os.path.dirname(f), ".save.tmp")
    with open(tmp, "wb") as t:
        t.write(new)
    os.rename(tmp, f)
else:
    w = os.open(f, os.O_WRONLY)
    os.pwrite(w, new, 0)
    os.close(w)
for _ in range(2):
    assert whole() == new, whole()
assert os.pread(fd, 4096, 0) == old
os.close(fd)
for _ in range(2):
    assert whole() == new, whole()
EOF
}

t_open_reader() {
	local f=$mnt/pc/open.json

	printf '{"o": "first revision"}' >"$f"
	same "$f" '{"o": "first revision"}'
	across_save rename "$f" '{"o": "first revision"}' \
		'{"o": "second, a longer revision"}' ||
		die "a reader across a save by rename"
	printf '{"s": "aaaa"}' >"$mnt/pc/same.json"
	same "$mnt/pc/same.json" '{"s": "aaaa"}'
	across_save in-place "$mnt/pc/same.json" '{"s": "aaaa"}' \
		'{"s": "bbbb"}' || die "a reader across a save in place"
}
run_case t_open_reader "a reader open across a save, and readers after it"

t_mmap() {
	local f=$mnt/pc/map.json

	printf '{"m": "mapped"}' >"$f"
	python3 - "$f" <<'EOF' || die "mmap"
import mmap, sys
with open(sys.argv[1], "rb") as g:
    m = mmap.mmap(g.fileno(), 0, prot=mmap.PROT_READ)
    assert m[:] == b'{"m": "mapped"}', m[:]
    m.close()
EOF
	printf '{"m": "mapped again"}' >"$f"
	same "$f" '{"m": "mapped again"}'
}
run_case t_mmap "mmap of a document, then a save"

run_step fs_remount "a clean unmount and a new mount"

t_after_remount() {
	same "$mnt/pc/sg.json" '{"v": 4, "more": [1, 2, 3]}'
	same "$mnt/pc/rn.json" '{"other": 1}'
	same "$mnt/pc/open.json" '{"o": "second, a longer revision"}'
}
run_case t_after_remount "a remount reads what was saved"

run_step fs_unmount "a clean unmount: barrelfs exits 0"
fs_done
