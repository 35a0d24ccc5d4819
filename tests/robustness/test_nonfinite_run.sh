#!/bin/bash
# NaN in a layer's weights reaches `mpquant run`: by default an error naming
# the layer on every rank; with robust.nonfinite = "skip" the layer is not
# quantized (a warning names it) -- and since this NaN takes part in the
# forward pass, the next layer's inputs are non-finite, which the Hessian
# stage reports naming that layer. The input file is a copy of stories260K
# with one NaN written into layer 0's q_proj.
set -u
. "$(dirname "$0")/../lib.sh"
need_shared data/models/stories260K/stories260K.bin
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M="$T/nan.bin"
cp "$MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin" "$M"
# Header 28 bytes, embedding 512*64 fp32, attention norms 5*64: wq of layer 0
# starts at byte 132380; element [3][5] is at +4*(3*64+5).
printf '\000\000\300\177' | dd of="$M" bs=1 seek=$((132380 + 4 * (3 * 64 + 5))) conv=notrunc \
    status=none
CFG="$MPQ_SOURCE_DIR/configs/stories260K-w4.cfg"
small=(-q -o model.path="$M" -o calibration.segments=8 -o calibration.seq_len=64 -o eval.docs=5
       -o quant.method=rtn -o round.rtn_loss=true)
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" run "$CFG" "${small[@]}"
expect_rc 1
expect_once "model.layers.0.self_attn.q_proj.*non-finite.*NaN at \[3\]\[5\]"
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" run "$CFG" "${small[@]}" -o robust.nonfinite=skip
expect_rc 1
expect_err "model.layers.0.self_attn.q_proj.*robust.nonfinite = skip"
expect_once "Hessian statistic 'model.layers.0.self_attn.o_proj': non-finite input"
# A calibration set smaller than a layer's input width is reported, naming
# the layer (mnist-cnn-small's fc1 reads 784 values; 20 images give 20 rows).
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" run "$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w3.cfg" \
    -o calibration.segments=20 -o quant.method=rtn -o round.rtn_loss=true -o eval.count=100 \
    -o eval.also_all=false
expect_rc 0
expect_err "warning: layer fc1: the calibration set gives 20 input rows for an input of width 784"
finish
