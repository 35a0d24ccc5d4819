#!/bin/bash
# Inputs accepted or refused as they should be, with messages that blame the
# right thing (issue 18), every refusal at 2 ranks with status 1 on both:
# - a batch-norm CNN whose I64 num_batches_tracked it never uses evaluates;
#   one that uses an I64 tensor is refused naming file, tensor and dtype;
# - a calibration seq_len beyond the model's context is refused, naming the
#   key, where it was set and both lengths;
# - an infeasible budget (or a budget.exclude matching nothing) set by -o
#   names the override, not the file;
# - model.format = mpqckpt does not apply to eval.reference;
# - a config.json that is a device or a dangling link is refused, naming it.
# Usage: test_inputs.sh MKFILES_EXE MKLLAMA_EXE
set -u
. "$(dirname "$0")/../lib.sh"
need_shared data/mnist/t10k-images-idx3-ubyte
need_shared data/models/stories260K/tok512.bin
S="$MPQ_SHARED_DIR/data"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$1" "$T" || fail "cannot generate the test files"
"$2" "$T/llama" --hidden 32 --intermediate 64 --layers 2 --heads 2 --vocab 512 --context 64 \
    >/dev/null || fail "mkllama failed"

# Both ranks exit with status 1, printing the message.
refused() { # PATTERN COMMAND...
    local pat=$1
    shift
    run $MPQ_MPIEXEC -np 2 bash -c '"$@"; echo "rank-exit=$?"' _ "$@"
    expect_err "$pat"
    [ "$(grep -c '^rank-exit=1$' "$OUT")" -eq 2 ] || fail "not every rank exited with status 1: $*"
}

cat >"$T/bn.cfg" <<CFG
model = {
  path = "$T/bn-cnn.safetensors";
  family = "cnn";
  input_shape = [1, 28, 28];
  input_scale = 0.00392156862745098;
  cnn = (
    { op = "conv2d"; weight = "conv.weight"; padding = 1; },
    { op = "batchnorm"; weight = "bn.weight"; bias = "bn.bias";
      mean = "bn.running_mean"; var = "bn.running_var"; },
    { op = "relu"; },
    { op = "conv2d"; weight = "conv2.weight"; padding = 1; },
    { op = "batchnorm"; weight = "bn2.weight"; bias = "bn2.bias";
      mean = "bn2.running_mean"; var = "bn2.running_var"; },
    { op = "flatten"; },
    { op = "linear"; weight = "fc.weight"; }
  );
};
eval = { images = "$S/mnist/t10k-images-idx3-ubyte"; labels = "$S/mnist/t10k-labels-idx1-ubyte";
         count = 50; batch = 25; };
CFG
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" eval "$T/bn.cfg"
expect_rc 0
expect_out "^total: 50$"
sed 's/mean = "bn2.running_mean"/mean = "bn2.num_batches_tracked"/' "$T/bn.cfg" >"$T/bn-used.cfg"
refused "bn-cnn.safetensors: tensor 'bn2.num_batches_tracked' has dtype I64, but the model uses it" \
    "$MPQ_BIN" eval "$T/bn-used.cfg"

# calibration.seq_len against the context (64)
cat >"$T/llama.cfg" <<CFG
model = { path = "$T/llama"; tokenizer = "$S/models/stories260K/tok512.bin"; };
quant = { method = "rtn"; };
calibration = { source = "text"; text = "$S/text/tinyshakespeare.txt"; segments = 2;
                seq_len = 128; };
eval = { enabled = false; };
CFG
refused "llama.cfg:4: calibration.seq_len = 128 is longer than the model's context of 64 tokens \(max_position_embeddings of config.json" \
    "$MPQ_BIN" run "$T/llama.cfg"
refused "override '-o calibration.seq_len=65': calibration.seq_len = 65 is longer than the model's context of 64" \
    "$MPQ_BIN" run "$T/llama.cfg" -o calibration.seq_len=65 -o calibration.source=random
sed -i 's/seq_len = 128;/seq_len = 16;/' "$T/llama.cfg"

# an infeasible budget from -o names the override
refused "override '-o budget.avg_bits=1.0': budget.avg_bits: budget: a budget of .* is infeasible" \
    "$MPQ_BIN" run "$T/llama.cfg" -o budget.avg_bits=1.0
refused "override '-o budget.exclude=nope': budget.exclude: pattern \"nope\" matches no quantizable layer" \
    "$MPQ_BIN" run "$T/llama.cfg" -o budget.avg_bits=4 -o budget.exclude=nope

# model.format = mpqckpt is the model's; the reference is detected on its own
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" run "$T/llama.cfg" -o output.path="$T/q.h5"
expect_rc 0
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" eval "$T/llama.cfg" -o model.path="$T/q.h5" \
    -o model.format=mpqckpt -o eval.reference="$T/llama" -o eval.enabled=true \
    -o eval.text="$S/text/tinyshakespeare.txt" --docs 2
expect_rc 0
expect_out "^kld: "
# A config.json that is not a regular file (a device, a dangling link) is an
# error naming it, not a model without a configuration.
mkdir -p "$T/dz"
cp "$T"/llama/*.safetensors* "$T/dz/"
ln -s /dev/zero "$T/dz/config.json"
refused "dz/config.json: not a regular file \\(it is a character device\\)" \
    "$MPQ_BIN" inspect "$T/dz"
rm "$T/dz/config.json"
ln -s "$T/none/config.json" "$T/dz/config.json"
refused "dz/config.json: cannot open" "$MPQ_BIN" inspect "$T/dz"
finish
