#!/bin/bash
# test_run_block_comm.sh: round.block_comm = "int8", the block loss's
# gradient sums sent as 8-bit codes with error feedback (mpq_ef_sum), on
# stories260K at 2 bits (the setup of test_run_block_loss.sh):
#  (a) at 2 ranks the run completes, logs one traffic line per block with
#      at least 3x less sent than the exact sums, every block still ends at
#      or below its start, and the blocks' mean final / start block loss is
#      within 5 % of the exact sums';
#  (b) a second int8 run at 2 ranks gives the same figures (the same bits
#      for a given rank count), which differ from the exact run's (the
#      property given up); at 1 rank int8 is the exact sum: the figures of
#      the exact run;
#  (c) a value other than exact or int8 is refused on every rank.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_jq
make_work_dir
lm=(run "$MPQ_SOURCE_DIR/configs/stories260K-w2.cfg" --json -o quant.method=rtn
    -o round.rtn_loss=true -o calibration.segments=4 -o calibration.seq_len=64
    -o round.block_iters=20 -o eval.protocol=generated -o eval.docs=6 -o eval.window=48
    -o round.loss=block)

# mean over the blocks of final / start block loss, from the log in $ERR
mean_ratio() {
    grep -o 'block loss [^ ]* -> [^ ]*' "$ERR" | awk '{ s += $5 / $3 } END { printf "%.6f", s / NR }'
}

# ---- (a) ----
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}"
expect_rc 0
exact=$(last_json | jq -c '.quantized')
r_exact=$(mean_ratio)
grep -q 'int8 gradient sums' "$ERR" && fail "the exact sums log an int8 traffic line"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o round.block_comm=int8
expect_rc 0
int8=$(last_json | jq -c '.quantized')
r_int8=$(mean_ratio)
n=$(grep -c 'block [0-9]*: int8 gradient sums: [0-9]* bytes sent per rank, exact would send' "$ERR")
[ "$n" -eq 5 ] || fail "$n int8 traffic lines, expected 5 (one per block)"
bad=$(grep -o 'sums: [0-9]* bytes sent per rank, exact would send [0-9]*' "$ERR" |
    awk '!($2 > 0 && $10 >= 3 * $2) { print }')
[ -z "$bad" ] || fail "the int8 sums saved less than 3x: $bad"
bad=$(grep -o 'block loss [^ ]* -> [^ ]*' "$ERR" | awk '$5 > $3 { print }')
[ -z "$bad" ] || fail "int8: a block ended above its start: $bad"
awk -v a="$r_int8" -v e="$r_exact" 'BEGIN { exit !(a > 0 && a <= 1.05 * e && a >= 0.95 * e) }' ||
    fail "int8: mean final / start block loss $r_int8, not within 5 % of the exact sums' $r_exact"
saving=$(grep -o '([0-9.]*x less)' "$ERR" | head -n 1)

# ---- (b) ----
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o round.block_comm=int8
expect_rc 0
[ "$(last_json | jq -c '.quantized')" = "$int8" ] || fail "two int8 runs at 2 ranks differ"
[ "$int8" != "$exact" ] || fail "int8 at 2 ranks gives the exact sums' figures"
run $MPQ_MPIEXEC -n 1 "$MPQ_BIN" "${lm[@]}" -o round.block_comm=int8
expect_rc 0
[ "$(last_json | jq -c '.quantized')" = "$exact" ] || fail "int8 at 1 rank is not the exact sum"
expect_err 'block 0: int8 gradient sums: 0 bytes sent per rank, .*one rank: the exact sum'

# ---- (c) ----
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o round.block_comm=fp8
expect_rc 1
expect_err "round.block_comm: 'fp8' is not one of exact[|]int8"
grep -q '^model ' "$ERR" && fail "the model was loaded before the refusal"
echo "int8 gradient sums: $saving traffic, mean final / start block loss $r_exact (exact) ->" \
    "$r_int8 (int8)"
finish
