#!/bin/bash
# hessian.save / hessian.load in `mpquant run`: statistics measured once (at
# 2 ranks) and loaded by a later run (at 1 and 3 ranks) give the same
# quantized model as measuring again: identical --json figures apart from
# times. Loading statistics of another model, and hessian.load with quantized
# propagation in a uniform run, are clear errors.
set -u
. "$(dirname "$0")/../lib.sh"
need_shared data/models/stories260K/stories260K.bin
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
CFG="$MPQ_SOURCE_DIR/configs/stories260K-w3.cfg"
small=(-q --json -o calibration.propagate=fp -o calibration.segments=16 -o calibration.seq_len=128
       -o eval.docs=20)
figures() { tail -n 1 "$OUT" | jq -c 'del(.times, .ranks, .peak_rss_mib)'; }

run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" run "$CFG" "${small[@]}" -o hessian.save="$T/h.h5"
expect_rc 0
[ -s "$T/h.h5" ] || fail "no statistics file written"
ref=$(figures)
for np in 1 3; do
    run $MPQ_MPIEXEC -np "$np" "$MPQ_BIN" run "$CFG" "${small[@]}" -o hessian.load="$T/h.h5"
    expect_rc 0
    [ "$(figures)" = "$ref" ] || fail "loaded statistics at $np ranks give other figures"
done

# Statistics of another model (mnist-cnn-small's inputs) are refused.
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" run "$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w3.cfg" -q \
    -o calibration.propagate=fp -o calibration.segments=64 -o quant.method=rtn -o eval.count=64 \
    -o hessian.load="$T/h.h5"
expect_rc 1
expect_once "hessian.load: .* has no statistics of width"

run "$MPQ_BIN" run "$CFG" -q -o hessian.load="$T/h.h5"
expect_rc 1
expect_err "hessian.load needs calibration.propagate = \"fp\""
finish
