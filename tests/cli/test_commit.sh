#!/bin/bash
# test_commit.sh CMAKE SCRIPT: cmake/mpq_commit.cmake, the build-time
# provenance commit, on a scratch repository:
#   - a clean tree gives HEAD's 12 digits; a second run leaves the file
#     untouched (same mtime: the build stays incremental);
#   - a new commit changes it; an untracked file does not mark the tree
#     dirty, a modified tracked file does ("-dirty");
#   - outside a repository, or without git: "unknown".
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
CMAKE=$1
SCRIPT=$2
command -v git >/dev/null || { echo "SKIPPED: git missing"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir" "$OUT" "$ERR"' EXIT
repo=$dir/repo
out=$dir/commit.c
gen() { # SRC [GIT]
    run "$CMAKE" -DSRC="$1" -DOUT="$out" -DGIT="${2-$(command -v git)}" -P "$SCRIPT"
    expect_rc 0
}
value() { sed -n 's/^const char mpq_git_commit\[\] = "\(.*\)";$/\1/p' "$out"; }
g() { git -C "$repo" -c user.name=t -c user.email=t@t "$@" >/dev/null 2>&1; }

mkdir -p "$repo" && g init -q && echo a >"$repo/f" && g add f && g commit -qm one
gen "$repo"
[ "$(value)" = "$(git -C "$repo" rev-parse --short=12 HEAD)" ] ||
    fail "clean tree: '$(value)', expected HEAD $(git -C "$repo" rev-parse --short=12 HEAD)"
touch -d '2000-01-01' "$out"
before=$(stat -c %Y "$out")
gen "$repo"
[ "$(stat -c %Y "$out")" = "$before" ] || fail "an unchanged commit rewrote the file"

echo b >"$repo/f" && g commit -qam two
gen "$repo"
[ "$(value)" = "$(git -C "$repo" rev-parse --short=12 HEAD)" ] || fail "new commit not picked up: '$(value)'"
[ "$(stat -c %Y "$out")" != "$before" ] || fail "a new commit did not rewrite the file"

echo u >"$repo/untracked"
gen "$repo"
[ "$(value)" = "$(git -C "$repo" rev-parse --short=12 HEAD)" ] || fail "an untracked file marked the tree: '$(value)'"
echo c >"$repo/f"
gen "$repo"
[ "$(value)" = "$(git -C "$repo" rev-parse --short=12 HEAD)-dirty" ] || fail "modified tree: '$(value)', expected -dirty"

mkdir "$dir/plain"
GIT_CEILING_DIRECTORIES=$dir gen "$dir/plain"
[ "$(value)" = "unknown" ] || fail "outside a repository: '$(value)', expected unknown"
gen "$repo" ""
[ "$(value)" = "unknown" ] || fail "without git: '$(value)', expected unknown"
grep -q '#include "mpq_version.h"' "$out" || fail "the generated source does not include its declaration"
finish
