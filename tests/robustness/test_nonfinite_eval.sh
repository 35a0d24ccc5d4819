#!/bin/bash
# Evaluation refuses non-finite numbers, naming where they are, at 2 ranks:
#  (a) NaN in a model's tensor (stories260K's layer-0 q_proj): `mpquant eval`
#      names the file and the tensor;
#  (b) NaN in a plain tensor of an mpquant checkpoint (a norm weight, kept
#      by a run that quantized the model without evaluating it): the
#      checkpoint and the tensor are named;
#  (c) weights of +-3e38 (finite, but the forward pass overflows fp32): the
#      language model names the model, the document and the block, the
#      classifier the image and its file; `mpquant run` names the
#      quantized model and the full-precision reference;
#  (d) a weight of 1e6 in mnist-cnn-small's fc1 needs a scale above fp16's
#      65504: `mpquant run` warns naming the layer and the group, and the
#      accuracy's change is in percentage points (never "+338 %").
# The hostile files are copies of the shared models with values written in.
set -u
. "$(dirname "$0")/../lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
T=$(mktemp -d)
trap 'rm -rf "$T" "$OUT" "$ERR"' EXIT
LM="$MPQ_SOURCE_DIR/configs/stories260K-w4.cfg"
CNN="$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w4.cfg"
MNIST="$MPQ_SHARED_DIR/data/models/mnist-cnn-small/model-mnist.safetensors"

# stories260K: header 28 bytes, embedding 512*64 fp32, attention norms 5*64,
# then wq of layer 0 at byte 132380.
lm_copy() { cp "$MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin" "$1"; }
# f32 VALUE at byte OFFSET of FILE (little-endian)
put_f32() {
    python3 -c 'import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); f.write(struct.pack("<f", float(sys.argv[3])))' "$@"
}
# mnist-cnn-small with element I of tensor NAME set to VALUE: FILE
cnn_copy() {
    cp "$MNIST" "$1"
    python3 -c 'import json, struct, sys
path, name, i, v = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with open(path, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
    f.seek(8 + n + h[name]["data_offsets"][0] + 4 * i)
    f.write(struct.pack("<f", v))' "$@"
}

# (a) NaN at wq[3][5] of layer 0
lm_copy "$T/nan.bin"
put_f32 "$T/nan.bin" $((132380 + 4 * (3 * 64 + 5))) nan
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" eval "$LM" -q -o model.path="$T/nan.bin" -o eval.docs=5
expect_rc 1
expect_once "nan.bin: tensor 'model.layers.0.self_attn.q_proj.weight': 1 non-finite value \(first: NaN at \[3\]\[5\] of 64 x 64\)"

# (b) NaN in layer 1's attention norm [7], kept by a run without evaluation
lm_copy "$T/norm.bin"
put_f32 "$T/norm.bin" $((28 + 512 * 64 * 4 + 4 * (64 + 7))) nan
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" run "$LM" -q -o model.path="$T/norm.bin" -o quant.method=rtn \
    -o eval.enabled=false -o output.path="$T/ck.h5"
expect_rc 0
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" eval "$LM" -q -o model.path="$T/ck.h5" -o eval.docs=5
expect_rc 1
expect_once "ck.h5: tensor 'model.layers.1.input_layernorm.weight': 1 non-finite value \(first: NaN at \[7\] of 64\)"
[ -e "$T/ck.h5" ] || fail "the checkpoint was removed"

# (c) row 0 of layer 0's wq: +3e38, -3e38, ... (the forward pass overflows)
lm_copy "$T/huge.bin"
for c in 0 1 2 3; do
    v=3e38
    [ $((c % 2)) -eq 1 ] && v=-3e38
    put_f32 "$T/huge.bin" $((132380 + 4 * c)) $v
done
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" eval "$LM" -q -o model.path="$T/huge.bin" -o eval.docs=5
expect_rc 1
expect_once "evaluating [^ ]*huge.bin: document 0 \(43 tokens\): the output of block 0 \(model.layers.0\) of the model is not finite"
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" run "$LM" -q -o model.path="$T/huge.bin" -o quant.method=rtn \
    -o eval.docs=5
expect_rc 1
expect_err "warning: layer model.layers.0.self_attn.q_proj: 1 quantization group with the scale clamped to the largest fp16 value 65504 \(first: group 0, row 0, columns 0..31"
expect_once "evaluating the quantized model of [^ ]*huge.bin \(reference [^ ]*huge.bin\): document 0 \(43 tokens\): the output of block 0 \(model.layers.0\) of the reference is not finite"
cnn_copy "$T/huge.safetensors" fc1.weight 5 3e38
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" eval "$CNN" -q -o model.path="$T/huge.safetensors" \
    -o eval.first=0 -o eval.count=300
expect_rc 1
expect_once "evaluating [^ ]*huge.safetensors: image 15 of [^ ]*t10k-images-idx3-ubyte: the output of block 2 \(fc1\) of the model is not finite \(\+Inf at value 0 of 10\)"

# (d) a weight of 1e6: fp16 scales top out at 65504 (grid +-65504 * 15)
cnn_copy "$T/big.safetensors" fc1.weight 5 1e6
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" run "$CNN" -o model.path="$T/big.safetensors" \
    -o quant.method=rtn -o eval.first=0 -o eval.count=200 -o eval.also_all=false
expect_rc 0
expect_once "warning: layer fc1: 1 quantization group with the scale clamped to the largest fp16 value 65504 \(first: group 0, row 0, columns 0..783, max \|w\| 1e\+06, the grid reaches \+-982560\)"
expect_out "^accuracy +0\.[0-9]+ +0\.[0-9]+ +[-+][0-9]?[0-9]\.[0-9][0-9] pts$"
finish
