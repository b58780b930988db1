#!/bin/bash
# Proves that `mount -t fuse.barrelfs DATADIR MNT` mounts through the
# installed helper (mount.fuse.barrelfs, or mount.fuse running the barrelfs
# on the system PATH) and that umount ends the daemon cleanly: what was
# written is in DATADIR, which is unlocked again. Skips unless root and
# installed: mount(8) runs helpers with a clean PATH, so the build tree's
# barrelfs cannot be used.
set -u
. "$(dirname "$0")/lib.sh"
fs_init test_mount_helper

[ "$(id -u)" = 0 ] || skip_all "mount -t needs root"
sys_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
helper=$(PATH=$sys_path command -v mount.fuse.barrelfs) ||
	helper=$(PATH=$sys_path command -v mount.fuse3) ||
	helper=$(PATH=$sys_path command -v mount.fuse) ||
	skip_all "no mount.fuse.barrelfs, mount.fuse3 or mount.fuse"
installed=$(PATH=$sys_path command -v barrelfs) ||
	[ "${helper##*/}" = mount.fuse.barrelfs ] ||
	skip_all "barrelfs is not installed on $sys_path (make install)"
[ -n "$ctl" ] || skip_all "no barrelctl to read DATADIR afterwards"
echo "# mount -t fuse.barrelfs: $helper${installed:+, $installed}"

# unlocked: barrelctl can open DATADIR (the daemon has let it go).
unlocked() { "$ctl" -d "$data" stat >/dev/null 2>"$work/stat.err"; }

# mount -t works, the mount serves files, umount ends the daemon.
t_mount_t() {
	mount -t fuse.barrelfs "$data" "$mnt" 2>"$work/mount.err" ||
		die "mount -t fuse.barrelfs: $(cat "$work/mount.err")"
	wait_until 10 is_mounted || die "$mnt is not mounted"
	timeout 10 stat "$mnt/.status" >/dev/null || die "the mount does not answer"
	# (timeouts: the watchdog cannot end a daemon that is not our child)
	timeout 10 jq -e 'has("version")' "$mnt/.status" >/dev/null || die ".status"
	timeout 10 mkdir "$mnt/hp" || die "mkdir hp"
	printf '{"via": "mount -t"}\n' >"$work/m.json"
	timeout 10 cp "$work/m.json" "$mnt/hp/m.json" || die "cp m.json"
	timeout 30 umount "$mnt" || die "umount failed"
	if ! wait_until 30 unlocked; then
		for p in $(daemon_pids); do kill -TERM "$p"; done
		die "DATADIR is still locked 30 s after umount: $(cat "$work/stat.err")"
	fi
	"$ctl" -d "$data" get hp m >"$work/m.out" 2>"$work/m.err" ||
		die "barrelctl get hp m: $(cat "$work/m.err")"
	cmp -s "$work/m.out" "$work/m.json" ||
		die "barrelctl get hp m: $(cat "$work/m.out")"
}
run_case t_mount_t "mount -t fuse.barrelfs and umount"

fs_done
