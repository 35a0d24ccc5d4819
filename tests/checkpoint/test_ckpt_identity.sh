#!/bin/bash
# test_ckpt_identity.sh: the checkpoint is the same bytes at 1, 2 and 4
# ranks apart from the fields that legitimately differ between runs
# (provenance date, nranks, stage_times; see include/mpq_ckpt.h).
#  1. Same date and stage times given: the files differ in exactly one byte,
#     the value of nranks (1, 2, 4).
#  2. A run with the real date and no stage times: h5dump of every group,
#     dataset and attribute, with date/nranks/stage_times masked, is
#     identical to the first file's.
# Then mpquant reads it: inspect (JSON), eval at 1 and 4 ranks (same PPL).
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_shared data/text/tinyshakespeare.txt
command -v h5dump >/dev/null || { echo "FAILED: h5dump missing (Debian package hdf5-tools)"; exit 1; }
exe="$MPQ_BUILD_DIR/tests/checkpoint/test_ckpt_writer"
[ -x "$exe" ] || { echo "FAILED: $exe not built"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir" "$OUT" "$ERR"' EXIT

for np in 1 2 4; do
    run $MPQ_MPIEXEC -n $np "$exe" "$dir/np$np.h5" --date 2000-01-01T00:00:00Z --times '{"round": 1}'
    expect_rc 0
done
for np in 2 4; do
    n=$(cmp -l "$dir/np1.h5" "$dir/np$np.h5" | wc -l)
    [ "$n" -eq 1 ] || fail "np1.h5 and np$np.h5 differ in $n bytes (expected 1: nranks)"
    # cmp -l prints: offset, byte in file 1, byte in file 2 (octal).
    read -r _ b1 b2 < <(cmp -l "$dir/np1.h5" "$dir/np$np.h5")
    [ "$b1" = "1" ] && [ "$b2" = "$np" ] || fail "the differing byte is $b1 -> $b2, not nranks 1 -> $np"
done
[ "$(stat -c %s "$dir/np1.h5")" -gt 400000 ] || fail "checkpoint suspiciously small"

run $MPQ_MPIEXEC -n 2 "$exe" "$dir/real.h5"
expect_rc 0
masked_h5dump "$dir/np1.h5" >"$dir/a.txt"
masked_h5dump "$dir/real.h5" >"$dir/b.txt"
grep -q '"mpquant-checkpoint"' "$dir/a.txt" || fail "h5dump shows no format attribute"
[ "$(grep -c MASKED "$dir/a.txt")" -eq 3 ] || fail "expected 3 masked fields"
[ "$(wc -l <"$dir/a.txt")" -gt 1000 ] || fail "h5dump output too short"
diff "$dir/a.txt" "$dir/b.txt" >"$dir/diff" || { cat "$dir/diff" >&2; fail "masked h5dump differs"; }

# The reader: inspect and eval.
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" inspect "$dir/np4.h5" --json
expect_rc 0
expect_out 'quantized layers: 28'
last_json | grep -q '"nranks":4' || fail "inspect --json lacks nranks 4"
last_json | grep -q '"quantized_bits":830880' || fail "inspect --json: quantized_bits is not 830880"
tok="$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin"
text="$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt"
run $MPQ_MPIEXEC -n 1 "$MPQ_BIN" eval --model "$dir/np1.h5" --tokenizer "$tok" --text "$text" --docs 12
expect_rc 0
p1=$(grep '^mean_nll:' "$OUT")
run $MPQ_MPIEXEC -n 4 "$MPQ_BIN" eval --model "$dir/np4.h5" --tokenizer "$tok" --text "$text" --docs 12
expect_rc 0
p4=$(grep '^mean_nll:' "$OUT")
[ -n "$p1" ] && [ "$p1" = "$p4" ] || fail "eval differs: '$p1' at 1 rank, '$p4' at 4 ranks"
echo "identity: 1 differing byte (nranks); masked h5dump identical; $p1"
finish
