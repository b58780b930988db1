#!/bin/sh
# The demo: a quick benchmark against SQLite, LMDB, RocksDB and a bare log
# that keeps its barrelfs DATADIR, then barrelctl's stat, check and dump on
# that DATADIR; then documents: a put, an edit, the history, a diff between
# revisions, the changes feed and an export; then the same data mounted with
# barrelfs: edits with echo, sed -i and vim, history under .rev, a diff,
# an attachment, .changes, a view under .views and .status; and
# barrelsync copying the database to another data directory, then only a
# change. Run from the build directory,
# or set BARRELCTL.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
ctl=${BARRELCTL:-}
if [ -z "$ctl" ]; then
	for c in ./barrelctl "$top/build/barrelctl" "$top/barrelctl"; do
		if [ -x "$c" ]; then
			ctl=$c
			break
		fi
	done
fi
[ -n "$ctl" ] || { echo "demo: barrelctl is not built (see README.md)" >&2; exit 1; }
ctl=$(cd "$(dirname "$ctl")" && pwd)/$(basename "$ctl")

work=$(mktemp -d "${TMPDIR:-/var/tmp}/barrel-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$ctl" bench --quick --keep --dir "$work/bench"
datadir=$work/bench/barrelfs

echo
echo "\$ barrelctl -d $datadir stat"
"$ctl" -d "$datadir" stat
echo
echo "\$ barrelctl -d $datadir check"
"$ctl" -d "$datadir" check
echo
echo "\$ barrelctl -d $datadir dump | head -n 12"
"$ctl" -d "$datadir" dump >"$work/dump"
head -n 12 "$work/dump"
echo "... $(wc -l <"$work/dump") records in all"

# Documents: every edit is a revision, and history stays browsable.
docs=$work/docs
run() {
	echo
	echo "\$ barrelctl -d \$DOCS $*"
	"$ctl" -d "$docs" "$@"
}
printf '{"title": "barrelfs", "tags": ["fs"], "stars": 1}\n' >"$work/v1.json"
printf '{"title": "barrelfs", "tags": ["fs", "couchdb"], "stars": 2}\n' >"$work/v2.json"
mkdir -p "$docs"
echo
echo "DOCS=$docs"
put() {
	echo
	echo "\$ barrelctl -d \$DOCS put demo readme $1"
	"$ctl" -d "$docs" put demo readme "$work/$1"
}
rev1=$(put v1.json | tee /dev/stderr | tail -n 1)
rev2=$(put v2.json | tee /dev/stderr | tail -n 1)
run get demo readme --meta
run log demo readme
run diff demo readme "$rev1" "$rev2"
run changes demo
run export --format alldocs demo -

# The mount: a database is a folder, a document a JSON file, every save a
# revision under .rev/. Needs root (or fuse3's fusermount3) and /dev/fuse.
fs=${BARRELFS:-$(dirname "$ctl")/barrelfs}
if [ ! -x "$fs" ] || [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null; then
	echo
	echo "(the mount demo needs barrelfs, /dev/fuse and fusermount3; skipped)"
	exit 0
fi
mnt=$work/mnt
mkdir -p "$mnt"
"$fs" -o grace=1 "$docs" "$mnt"
trap 'fusermount3 -u "$mnt" 2>/dev/null; rm -rf "$work"' EXIT
sh_run() {
	echo
	echo "\$ $*"
	sh -c "$*"
}
cd "$mnt"
echo
echo "mounted: barrelfs \$DOCS $mnt"
sh_run "ls -la demo"
sh_run "cat demo/readme.json"
sh_run "echo '{\"title\": \"notes\", \"body\": \"written with echo\"}' > demo/notes.json"
sh_run "sed -i 's/echo/sed -i/' demo/notes.json"
sh_run "vim -u NONE -es -c '%s/sed -i/vim/' -c wq demo/notes.json 2>/dev/null || true"
sh_run "cat demo/notes.json"
sh_run "ls demo/.rev/notes/"
sh_run "cat demo/.rev/notes/3-*.diff"
sh_run "getfattr -n user.barrel.rev --only-values demo/notes.json 2>/dev/null; echo"
sh_run "mkdir -p demo/notes && echo 'an attachment' > demo/notes/hello.txt && ls -l demo/notes/"
sh_run "tail -n 3 demo/.changes"
sh_run "jq -c . demo/*.json"

# Views: a design document's JavaScript map/reduce, indexed in the
# background, read as files (and over HTTP as CouchDB's _view).
sh_run "echo '{\"views\": {\"by_tag\": {\"map\": \"function(doc){ (doc.tags || []).forEach(function(t){ emit(t, doc.title); }); }\", \"reduce\": \"_count\"}}}' > demo/_design/tags.json"
sh_run "ls demo/.views/tags/by_tag/"
sh_run "cat demo/.views/tags/by_tag/couchdb.json"
sh_run "jq -c '.rows[]' demo/.views/tags/by_tag/.group.json"
sh_run "curl -s --unix-socket '$docs/api.sock' 'http://localhost/demo/_design/tags/_view/by_tag?reduce=false&key=\"fs\"'"
sh_run "cat .status"

# Sync: the mount serves CouchDB's replication protocol on
# DATADIR/api.sock; barrelsync copies a database into another data
# directory, then only what changed.
sync=$(dirname "$ctl")/barrelsync
backup=$work/backup
export BACKUP="$backup"
echo
echo "BACKUP=$backup"
sh_run "'$sync' demo \$BACKUP/demo"
sh_run "echo '{\"title\": \"todo\", \"body\": \"after the first sync\"}' > demo/todo.json"
sh_run "'$sync' demo \$BACKUP/demo"
cd /
fusermount3 -u "$mnt"
echo
echo "unmounted; the same data through barrelctl:"
run log demo notes
echo
echo "\$ barrelctl -d \$BACKUP get demo todo"
"$ctl" -d "$backup" get demo todo
