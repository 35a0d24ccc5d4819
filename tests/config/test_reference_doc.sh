#!/bin/bash
# The committed configuration reference (configs/REFERENCE.md) must be exactly
# what `mpquant check --keys` prints, so that the documentation of every key
# cannot drift from the key table; and every key must have a description.
set -u
. "$(dirname "$0")/../lib.sh"
REF="$MPQ_SOURCE_DIR/configs/REFERENCE.md"
run "$MPQ_BIN" check --keys
expect_rc 0
sed -n '/^| key |/,$p' "$REF" > "$OUT.ref"
if ! cmp -s "$OUT" "$OUT.ref"; then
    fail "configs/REFERENCE.md is stale; regenerate its table with: mpquant check --keys"
    diff "$OUT.ref" "$OUT" | head -20 >&2
fi
rm -f "$OUT.ref"
awk -F'|' 'NR > 2 && $6 ~ /^ *$/ { print "no description: " $2; bad = 1 } END { exit bad }' \
    "$OUT" >&2 || fail "a key has no description"
finish
