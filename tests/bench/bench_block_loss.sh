#!/bin/bash
# bench_block_loss.sh MKLLAMA: the cost of the block loss against layer-loss
# learned rounding at the same number of steps, on one generated Hugging
# Face Llama block (random BF16 weights, mpq_mkllama) of hidden 256, 512 and
# 1024 (intermediate 2.75 x hidden), and on stories260K (hidden 64).
#
# Four runs per model, calibration 32 random sequences of 256 tokens,
# quantized propagation, int4 asymmetric g32, 1 rank, STEPS steps
# (MPQ_BENCH_STEPS, default 20):
#   layer    signround with round.iters = STEPS (its learned rounding);
#   gptq     GPTQ alone;
#   block    GPTQ then round.loss = "block" with round.block_iters = STEPS
#            (round.block_rows at its default of 2048 rows per step);
#   network  the same with round.loss = "network";
#   descent  (generated models only) the block loss with judged steps
#            (round.block_descent = on, round.block_rows = 0: every step
#            sees all 8192 rows, and the steps may end before STEPS).
# One JSON line per model: layer_s (the round stage of `layer`), block_s
# and network_s (the round stage of `block` or `network` minus that of
# `gptq`: the refinement's own time), their ratios to layer_s (issue 17's
# target for the block loss: at most 3), and each run's peak RSS in MiB
# with the block loss's extra memory over GPTQ beside the analytic size of
# its state (26 bytes per weight of a block, run_block_loss.c, plus the
# full-precision block outputs: 4 bytes x calibration rows x hidden;
# stories260K calibrates as its configuration does, 128 x 256 tokens); the
# rest of the extra is the working copy of the block's weights and the
# backward pass's activations of one step's rows. For the descent: its
# refinement time and its peak RSS over the signed steps', beside the
# analytic 5 bytes per weight of its own state (the best offsets and a tabu
# byte): its 4 times larger window goes through the forward and backward
# passes chunk by chunk, as the signed steps' does, so the activations do
# not grow with it. Per step the layer loss costs about rows x cols^2 per
# layer and the block loss about block_rows x the block's weights, so the
# ratio falls as the width grows.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_jq
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
mkllama=${1:?usage: bench_block_loss.sh MKLLAMA}
make_work_dir
steps=${MPQ_BENCH_STEPS:-20}

# round_s CONFIG ARGS...: the round stage's time and the peak RSS (MiB,
# the largest rank's) of one run and the weights of one block (the quantized
# weights over the blocks), as a JSON array
round_s() {
    local cfg=$1
    shift
    run "$MPQ_BIN" run "$cfg" --json -q -o calibration.propagate=quantized \
        -o quant.spec=int:bits=4,sym=false,group=32 -o eval.enabled=false -o output.path= "$@"
    expect_rc 0
    last_json | jq -c '[.times.round.max, .peak_rss_mib.max,
                         ([.layers[] | .weights] | add)
                         / ([.layers[] | .layer | capture("layers\\.(?<n>[0-9]+)\\.").n
                             | tonumber] | max + 1)]'
}

measure() { # measure NAME HIDDEN CONFIG ROWS (calibration rows)
    local name=$1 hid=$2 cfg=$3 rows=$4 l g b n d
    l=$(round_s "$cfg" -o quant.method=signround -o round.iters="$steps")
    g=$(round_s "$cfg" -o quant.method=gptq)
    b=$(round_s "$cfg" -o quant.method=gptq -o round.loss=block -o round.block_iters="$steps")
    n=$(round_s "$cfg" -o quant.method=gptq -o round.loss=network -o round.block_iters="$steps")
    d='[null, null]'
    [ "$name" = stories260K ] ||
        d=$(round_s "$cfg" -o quant.method=gptq -o round.loss=block -o round.block_iters="$steps" \
            -o round.block_descent=on -o round.block_rows=0)
    [ "$FAILS" -eq 0 ] || finish
    jq -cn --arg m "$name" --argjson h "$hid" --argjson s "$steps" --argjson l "$l" \
        --argjson g "$g" --argjson b "$b" --argjson n "$n" --argjson d "$d" --argjson r "$rows" \
        '{bench: "block_loss", model: $m, hidden: $h, steps: $s, layer_s: $l[0], gptq_s: $g[0],
          block_s: ($b[0] - $g[0]), block_over_layer: (($b[0] - $g[0]) / $l[0]),
          network_s: ($n[0] - $g[0]), network_over_layer: (($n[0] - $g[0]) / $l[0]),
          peak_rss_mib: {layer: $l[1], gptq: $g[1], block: $b[1], network: $n[1]},
          block_extra_mib: ($b[1] - $g[1]),
          block_state_mib: ((26 * $g[2] + 4 * $r * $h) / 1048576),
          descent_s: (if $d[0] then $d[0] - $g[0] else null end),
          descent_extra_over_block_mib: (if $d[1] then $d[1] - $b[1] else null end),
          descent_state_mib: (if $d[1] then 5 * $g[2] / 1048576 else null end)}'
}

for hid in 256 512 1024; do
    inter=$((hid * 11 / 4))
    rm -rf "$dir/m"
    bench_llama "$mkllama" "$hid" "$inter" 1 8 8 32 256
    cp "$dir/run.cfg" "$dir/g$hid.cfg"
    measure "generated" "$hid" "$dir/g$hid.cfg" $((32 * 256))
done
measure "stories260K" 64 "$MPQ_SOURCE_DIR/configs/stories260K-w4.cfg" $((128 * 256))
finish
