#!/bin/bash
# test_run_pareto_rate.sh: configs/pareto-rate-stories260K.sh at its reduced
# size: both sweeps, the budget table with one row per budget and the
# verdict, both fronts, the plot; and a point of the coded front (int2 g32 at
# rate_lambda 8, zstd-coded) equals `mpquant run` of the same setting, run
# here on its own: the same KL divergence and coded bits per weight.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_jq
make_work_dir
export MPQ_BIN MPQ_MPIEXEC
run "$MPQ_SOURCE_DIR/configs/pareto-rate-stories260K.sh" "$dir/p" --quick --bits 2 --lambdas 8 \
    --budgets "2.3 2.6"
expect_rc 0
md="$dir/p/pareto.md"
[ "$(grep -c '^| 2\.[36] | ' "$md")" = 2 ] || fail "the budget table lacks a row per budget"
grep -Eq '^At 2 budgets the coded front is better at [0-2], equal at [0-2] and worse at [0-2]\.$' \
    "$md" || fail "no verdict line"
grep -q '^fixed front: .*int2 g32 (' "$md" || fail "the fixed front lacks the int2 point"
grep -q '^coded front: .*int2 g32 rate=8 (' "$md" || fail "the coded front lacks the rate point"
if command -v gnuplot >/dev/null; then
    [ -s "$dir/p/pareto.png" ] || fail "no plot"
fi
pt=$(jq -c '.points[] | select(.spec | test(";rate=8$")) | [.kld, .bpw]' "$dir/p/coded/report.json")
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$MPQ_SOURCE_DIR/configs/stories260K-w2.cfg" --json -q \
    -o quant.method=gptq -o calibration.segments=8 -o calibration.seq_len=64 \
    -o calibration.propagate=fp -o eval.docs=20 -o round.rate_lambda=8 \
    -o output.code_coding=zstd -o output.path="$dir/own.h5"
expect_rc 0
own=$(last_json | jq -c '[.quantized.kld, .coded_bpw]')
[ "$pt" = "$own" ] || fail "the sweep's int2 rate=8 point ($pt) differs from the run on its own ($own)"
finish
