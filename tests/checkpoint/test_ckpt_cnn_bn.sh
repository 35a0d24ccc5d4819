#!/bin/bash
# test_ckpt_cnn_bn.sh: checkpoints of a CNN with batch norms (the MNIST CNN
# with three added by cnn_bn_model.py: one folded into a conv without a bias
# tensor, one after a ReLU that stays a separate op, one folded into the
# linear layer). At 2 ranks:
#  - `run` writes the checkpoint (it was refused), the folded batch norms
#    marked with the attribute `folded`;
#  - `eval` of the checkpoint classifies exactly as many images correctly as
#    the run reported for its quantized model; `inspect` accepts it;
#  - `export` to safetensors, reloaded with the same configuration, too;
#  - likewise with the folded conv kept in full precision (budget.exclude).
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
need_shared data/mnist/t10k-images-idx3-ubyte
need_shared data/mnist/t10k-labels-idx1-ubyte
need_jq
make_work_dir
S=$MPQ_SHARED_DIR
run python3 "$MPQ_SOURCE_DIR/tests/checkpoint/cnn_bn_model.py" \
    "$S/data/models/mnist-cnn-small/model-mnist.safetensors" "$dir/bn.safetensors"
expect_rc 0
bn() { # NAME [eps]
    echo "    { op = \"batchnorm\"; weight = \"$1.weight\"; bias = \"$1.bias\";" \
        "mean = \"$1.running_mean\"; var = \"$1.running_var\"; eps = ${2:-1e-5}; },"
}
cat >"$dir/bn.cfg" <<CFG
model = {
  path = "$dir/bn.safetensors";
  format = "safetensors";
  tokenizer = "";
  family = "cnn";
  input_shape = [1, 28, 28];
  input_scale = 0.00392156862745098;
  cnn = (
    { op = "conv2d"; weight = "conv1.weight"; stride = 1; padding = 1; },
$(bn bn1)
    { op = "relu"; },
    { op = "maxpool"; kernel = 2; stride = 2; },
    { op = "conv2d"; weight = "conv2.weight"; bias = "conv2.bias"; stride = 1; padding = 1; },
    { op = "relu"; },
$(bn bn2 0.001)
    { op = "maxpool"; kernel = 2; stride = 2; },
    { op = "flatten"; },
    { op = "linear"; weight = "fc1.weight"; bias = "fc1.bias"; },
$(bn bn3 | sed 's/},$/}/')
  );
};
calibration = { source = "images"; images = "$S/data/mnist/t10k-images-idx3-ubyte"; segments = 128; };
quant = { spec = "int:bits=4,sym=false,gran=channel"; method = "gptq"; };
eval = {
  images = "$S/data/mnist/t10k-images-idx3-ubyte";
  labels = "$S/data/mnist/t10k-labels-idx1-ubyte";
  first = 1024; count = 1000; batch = 500;
};
output = { path = "$dir/bn.h5"; overwrite = true; };
CFG

# correct FILE [overrides...]: images `eval` classifies correctly with the
# configuration's network on model FILE (2 ranks).
correct() {
    local f=$1
    shift
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval "$dir/bn.cfg" --json -o "model.path=$f" "$@"
    expect_rc 0
    last_json | jq -r '.correct'
}

# check NAME [run overrides...]
check() {
    local h5="$dir/$1.h5"
    shift
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/bn.cfg" --json -o "output.path=$h5" "$@"
    expect_rc 0
    local want
    want=$(last_json | jq -r '.quantized.correct')
    [ -s "$h5" ] || { fail "no checkpoint $h5"; return; }
    local got
    got=$(correct "$h5" -o model.format=auto)
    echo "$h5: run $want, checkpoint $got of 1000"
    [ "$got" = "$want" ] || fail "checkpoint $h5: $got correct, the run reported $want"
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" inspect "$h5"
    expect_rc 0
    h5dump -a /tensors/bn1.weight/folded "$h5" >"$dir/note" 2>&1
    grep -q "batch norm folded into conv1.weight: stored as the identity" "$dir/note" ||
        fail "bn1.weight is not marked folded: $(cat "$dir/note")"
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" export "$h5" --format safetensors \
        --output "$h5.safetensors" --overwrite
    expect_rc 0
    got=$(correct "$h5.safetensors")
    [ "$got" = "$want" ] || fail "export of $h5: $got correct, the run reported $want"
}
check all
check fp1 -o 'budget.exclude=["conv1.weight"]'
finish
