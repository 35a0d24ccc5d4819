#!/bin/bash
# bench_block_loss.sh MKLLAMA: the cost of the block loss against layer-loss
# learned rounding at the same number of steps, on one generated Hugging
# Face Llama block (random BF16 weights, mpq_mkllama) of hidden 256, 512 and
# 1024 (intermediate 2.75 x hidden), and on stories260K (hidden 64).
#
# Three runs per model, calibration 32 random sequences of 256 tokens,
# quantized propagation, int4 asymmetric g32, 1 rank, STEPS steps
# (MPQ_BENCH_STEPS, default 20):
#   layer  signround with round.iters = STEPS (its learned rounding);
#   gptq   GPTQ alone;
#   block  GPTQ then round.loss = "block" with round.block_iters = STEPS
#          (round.block_rows at its default of 2048 rows per step).
# One JSON line per model: layer_s (the round stage of `layer`), block_s
# (the round stage of `block` minus that of `gptq`: the block loss's own
# time), and their ratio (issue 17's target: at most 3). Per step the
# layer loss costs about rows x cols^2 per layer and the block loss about
# block_rows x the block's weights, so the ratio falls as the width grows.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_jq
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
mkllama=${1:?usage: bench_block_loss.sh MKLLAMA}
make_work_dir
steps=${MPQ_BENCH_STEPS:-20}

# round_s CONFIG ARGS...: the round stage's time of one run
round_s() {
    local cfg=$1
    shift
    run "$MPQ_BIN" run "$cfg" --json -q -o calibration.propagate=quantized \
        -o quant.spec=int:bits=4,sym=false,group=32 -o eval.enabled=false -o output.path= "$@"
    expect_rc 0
    last_json | jq '.times.round.max'
}

measure() { # measure NAME HIDDEN CONFIG
    local name=$1 hid=$2 cfg=$3 l g b
    l=$(round_s "$cfg" -o quant.method=signround -o round.iters="$steps")
    g=$(round_s "$cfg" -o quant.method=gptq)
    b=$(round_s "$cfg" -o quant.method=gptq -o round.loss=block -o round.block_iters="$steps")
    [ "$FAILS" -eq 0 ] || finish
    jq -cn --arg m "$name" --argjson h "$hid" --argjson s "$steps" --argjson l "$l" \
        --argjson g "$g" --argjson b "$b" \
        '{bench: "block_loss", model: $m, hidden: $h, steps: $s, layer_s: $l, gptq_s: $g,
          block_s: ($b - $g), block_over_layer: (($b - $g) / $l)}'
}

for hid in 256 512 1024; do
    inter=$((hid * 11 / 4))
    rm -rf "$dir/m"
    bench_llama "$mkllama" "$hid" "$inter" 1 8 8 32 256
    cp "$dir/run.cfg" "$dir/g$hid.cfg"
    measure "generated" "$hid" "$dir/g$hid.cfg"
done
measure "stories260K" 64 "$MPQ_SOURCE_DIR/configs/stories260K-w4.cfg"
finish
