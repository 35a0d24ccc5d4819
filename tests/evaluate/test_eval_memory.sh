#!/bin/bash
# Evaluation buffers are sized from the data, not from the knobs: with
# eval.batch = 1000000 (the configuration's largest) and 200 images, a rank
# holds one batch of 200 images, not 1,000,000 x 784 floats (3 GB, zero
# filled). `mpquant run` reports each rank's peak resident memory in its
# JSON (peak_rss_mib); the model, the images and the program stay far below
# 300 MiB per rank. Memory is asserted, not time. RTN with the minmax fit
# reads no calibration data, so the figure is the evaluation's.
set -u
. "$(dirname "$0")/../lib.sh"
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
need_jq
CNN="$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w4.cfg"
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" run "$CNN" -q --json -o quant.method=rtn \
    -o quant.spec=int:bits=4,sym=false,gran=channel,fit=minmax -o eval.batch=1000000 \
    -o eval.first=0 -o eval.count=200 -o eval.also_all=false
expect_rc 0
peak=$(last_json | jq -r '.peak_rss_mib.max')
total=$(last_json | jq -r '.quantized.total')
[ "$total" = "200" ] || fail "evaluated $total images, expected 200"
awk -v p="$peak" 'BEGIN { exit !(p > 0 && p < 300) }' ||
    fail "peak resident memory $peak MiB per rank with eval.batch = 1000000 (expected < 300)"
finish
