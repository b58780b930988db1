#!/bin/bash
# Proves that large content goes through the mount intact: a 64 MiB
# attachment copied in and out (and read at random offsets), an in-place
# write into a 5 MiB attachment, a 4 MB JSON document, each one revision,
# all identical after a remount; a body over the 4 MiB limit is refused.
set -u
. "$(dirname "$0")/lib.sh"
fs_init test_mount_large
fs_start
mkdir "$mnt/lg" || { echo "Bail out! mkdir lg failed"; exit 1; }

# A 64 MiB attachment: cp in, cmp, cp out, random reads, one revision.
t_big_attachment() {
	dd if=/dev/urandom of="$work/big" bs=1M count=64 status=none
	printf '{"big": true}\n' >"$mnt/lg/x.json"
	g=$(gen "$(rev_of lg x)")
	cp "$work/big" "$mnt/lg/x/big.bin"
	[ "$(stat -c %s "$mnt/lg/x/big.bin")" -eq 67108864 ] ||
		die "size $(stat -c %s "$mnt/lg/x/big.bin")"
	cmp "$mnt/lg/x/big.bin" "$work/big" || die "big.bin reads back different"
	cp "$mnt/lg/x/big.bin" "$work/big.out"
	cmp "$work/big.out" "$work/big" || die "cp out differs"
	rm "$work/big.out"
	for mb in 0 37 63; do
		dd if="$mnt/lg/x/big.bin" bs=1M skip=$mb count=1 status=none |
			cmp - <(dd if="$work/big" bs=1M skip=$mb count=1 status=none) ||
			die "MiB $mb differs"
	done
	dd if="$mnt/lg/x/big.bin" bs=1 skip=67108863 count=1 status=none |
		cmp - <(tail -c 1 "$work/big") || die "the last byte differs"
	[ "$(gen "$(rev_of lg x)")" -eq $((g + 1)) ] || die "not one revision"
	cmp -s "$mnt/lg/x.json" - <<<'{"big": true}' || die "the body changed"
}
run_case t_big_attachment "a 64 MiB attachment in and out" 600

# An in-place write into an attachment: the same bytes as on a plain file.
t_attachment_in_place() {
	head -c 5242880 /dev/urandom >"$work/mid"
	head -c 100000 /dev/urandom >"$work/patch"
	cp "$work/mid" "$mnt/lg/x/mid.bin"
	g=$(gen "$(rev_of lg x)")
	dd if="$work/patch" of="$work/mid" bs=1000 seek=2500 conv=notrunc status=none
	dd if="$work/patch" of="$mnt/lg/x/mid.bin" bs=1000 seek=2500 conv=notrunc \
		status=none || die "dd into the attachment failed"
	cmp "$mnt/lg/x/mid.bin" "$work/mid" || die "mid.bin differs from the plain file"
	[ "$(gen "$(rev_of lg x)")" -eq $((g + 1)) ] || die "not one revision"
	cmp "$mnt/lg/x/big.bin" "$work/big" || die "big.bin changed"
}
run_case t_attachment_in_place "an in-place write into a 5 MiB attachment" 300

# A JSON document near the body limit (4 MiB, BODY_MAX_LEN in
# engine/body.h): the very bytes, one revision, in .rev too.
t_big_doc() {
	{
		printf '{"data": "'
		head -c 3000000 /dev/urandom | base64 -w 0
		printf '", "n": 1}\n'
	} >"$work/doc.json"
	cp "$work/doc.json" "$mnt/lg/doc.json"
	cmp "$mnt/lg/doc.json" "$work/doc.json" || die "doc.json reads back different"
	rev=$(rev_of lg doc)
	[ "$(gen "$rev")" = 1 ] || die "$rev is not revision 1"
	cmp "$mnt/lg/.rev/doc/$rev.json" "$work/doc.json" || die ".rev/doc/$rev.json"
	[ "$(stat -c %s "$mnt/lg/doc.json")" -eq "$(stat -c %s "$work/doc.json")" ] ||
		die "stat size"
}
run_case t_big_doc "a 4 MB JSON document" 300

# A body over the limit is refused when the file is closed (EFBIG, the
# engine's BARREL_E_TOOBIG, or EINVAL as for any rejected body); the
# document keeps its body and gets no revision.
t_too_big_doc() {
	{
		printf '{"data": "'
		head -c 4000000 /dev/urandom | base64 -w 0
		printf '"}\n'
	} >"$work/huge.json"
	printf '{"small": 1}\n' >"$mnt/lg/huge.json"
	expect_fail "cp of a 5 MiB body" cp "$work/huge.json" "$mnt/lg/huge.json"
	grep -Eq "$(errno_text EFBIG)|$(errno_text EINVAL)" "$tmp/cmd.err" ||
		die "cp of a 5 MiB body: not EFBIG nor EINVAL: $(cat "$tmp/cmd.err")"
	cmp -s "$mnt/lg/huge.json" - <<<'{"small": 1}' || die "the body changed"
	[ "$(nrevs lg huge)" -eq 1 ] || die ".rev/huge: $(revs lg huge)"
}
run_case t_too_big_doc "a body over 4 MiB is refused (EFBIG)" 300

run_step fs_remount "a clean unmount and a new mount"

# The large content is the same after the remount.
t_after_remount() {
	cmp "$mnt/lg/x/big.bin" "$work/big" || die "big.bin"
	cmp "$mnt/lg/x/mid.bin" "$work/mid" || die "mid.bin"
	cmp "$mnt/lg/doc.json" "$work/doc.json" || die "doc.json"
}
run_case t_after_remount "large content survives a remount" 300

# rm of the big attachment: one revision; the others stay.
t_rm_big() {
	g=$(gen "$(rev_of lg x)")
	rm "$mnt/lg/x/big.bin"
	[ "$(ls "$mnt/lg/x")" = mid.bin ] || die "ls x: $(ls "$mnt/lg/x")"
	[ "$(gen "$(rev_of lg x)")" -eq $((g + 1)) ] || die "not one revision"
	cmp "$mnt/lg/x/mid.bin" "$work/mid" || die "mid.bin"
}
run_case t_rm_big "rm of a large attachment"

run_step fs_unmount "a clean unmount: barrelfs exits 0"
fs_done
