#!/bin/bash
# test_run_learn_bias.sh: round.learn_bias = on, the output-bias corrections
# learned with the block loss.
#  (a) stories260K at 2 bits (RTN start, block loss): every block logs the
#      corrections of its 4 attention projections and ends at or below its
#      start; the checkpoint gains the q/k/v/o bias tensors (the model has
#      none) and says so in its architecture; `mpquant eval` of it gives the
#      run's own KL divergence (the stored biases are the ones the run
#      evaluated), and so do its GGUF export (blk.N.attn_*.bias) and, within
#      1e-4, its Hugging Face export (attention_bias);
#  (b) the same bits on 1 rank (figures and exported weights and biases);
#  (c) killed after block 2's file, resumed: the same checkpoint (the
#      corrections come back from the block files);
#  (d) mnist-cnn-small at 2 bits (conv and linear layers, batch norms
#      folded): every block corrects its layer, and `mpquant eval` of the
#      checkpoint gives the run's accuracy;
#  (e) round.learn_bias with round.loss = "layer" is refused before the
#      model is loaded, naming both keys.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
need_shared data/mnist/t10k-images-idx3-ubyte
need_jq
make_work_dir
sanitized=${MPQ_TEST_SANITIZED:-0}
lm=(run "$MPQ_SOURCE_DIR/configs/stories260K-w2.cfg" --json -o quant.method=rtn
    -o round.rtn_loss=true -o calibration.segments=4 -o calibration.seq_len=64
    -o round.block_iters=20 -o eval.protocol=generated -o eval.docs=6 -o eval.window=48
    -o round.loss=block -o round.learn_bias=on)
tok="$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin"
ref="$MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin"
evalargs=(--tokenizer "$tok" --reference "$ref" --protocol generated --docs 6 --window 48 --json -q)
biases() { # the bias tensors of a checkpoint, as text
    for b in 0 1 2 3 4; do
        for p in q k v o; do
            h5dump -d "/tensors/model.layers.$b.self_attn.${p}_proj.bias" "$1" | grep -v "^HDF5"
        done
    done
}

# ---- (a) ----
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o output.path="$dir/b2.h5"
expect_rc 0
two=$(last_json | jq -c '.quantized')
kl=$(jq -r .kld <<<"$two")
n=$(grep -c 'block [0-9]: bias corrections of 4 layers, 192 channels' "$ERR")
[ "$n" -eq 5 ] || fail "$n bias-correction lines of 4 layers, expected 5"
bad=$(grep -o 'block loss [^ ]* -> [^ ]*' "$ERR" | awk '$5 > $3 { print }')
[ -z "$bad" ] || fail "a block ended above its start: $bad"
expect_err 'checkpoint: 20 attention bias tensors added'
run "$MPQ_BIN" inspect "$dir/b2.h5"
expect_rc 0
expect_out 'qkv_bias yes, o_bias yes'
h5dump -d /tensors/model.layers.3.self_attn.o_proj.bias "$dir/b2.h5" |
    grep -Eq '[1-9]' || fail "the o_proj bias of block 3 is all zeros"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval --model "$dir/b2.h5" "${evalargs[@]}"
expect_rc 0
[ "$(last_json | jq -r .kld)" = "$kl" ] ||
    fail "eval of the checkpoint gives KLD $(last_json | jq -r .kld), the run $kl"
mkdir -p "$dir/hf"
run "$MPQ_BIN" export "$dir/b2.h5" --format safetensors --output "$dir/hf/model.safetensors"
expect_rc 0
jq -e '.attention_bias == true' "$dir/hf/config.json" >/dev/null ||
    fail "the Hugging Face export does not set attention_bias"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval --model "$dir/hf" "${evalargs[@]}"
expect_rc 0
awk -v a="$(last_json | jq -r .kld)" -v b="$kl" 'BEGIN { d = a - b; exit !(d < 1e-4 && d > -1e-4) }' ||
    fail "eval of the export gives KLD $(last_json | jq -r .kld), the run $kl"
run "$MPQ_BIN" export "$dir/b2.h5" --format gguf --output "$dir/b2.gguf" --tokenizer "$tok"
expect_rc 0
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval --model "$dir/b2.gguf" "${evalargs[@]}"
expect_rc 0
[ "$(last_json | jq -r .kld)" = "$kl" ] ||
    fail "eval of the GGUF export gives KLD $(last_json | jq -r .kld), the run $kl"

# ---- (b) ----
if [ "$sanitized" != 1 ]; then
    run $MPQ_MPIEXEC -n 1 "$MPQ_BIN" "${lm[@]}" -o output.path="$dir/b1.h5"
    expect_rc 0
    [ "$(last_json | jq -c '.quantized')" = "$two" ] || fail "1 and 2 ranks give different figures"
    [ "$(biases "$dir/b1.h5" | md5sum)" = "$(biases "$dir/b2.h5" | md5sum)" ] ||
        fail "1 and 2 ranks give different biases"
fi

# ---- (c) ----
MPQ_TEST_KILL_AT=round:2:saved run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" \
    -o output.path="$dir/r.h5"
[ "$RC" -ne 0 ] || fail "the killed run exited 0"
[ -d "$dir/r.h5.partial" ] || fail "no partial checkpoint after the kill"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o output.path="$dir/r.h5"
expect_rc 0
expect_err "round: resuming after block 3"
[ "$(last_json | jq -c '.quantized')" = "$two" ] || fail "the resumed run gives other figures"
[ "$(biases "$dir/r.h5" | md5sum)" = "$(biases "$dir/b2.h5" | md5sum)" ] ||
    fail "the resumed run gives other biases"

# ---- (d) ----
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w2.cfg" --json \
    -o quant.method=rtn -o round.rtn_loss=true -o calibration.segments=128 \
    -o round.block_iters=40 -o eval.count=1000 -o eval.also_all=false -o round.loss=block \
    -o round.learn_bias=on -o output.path="$dir/c.h5"
expect_rc 0
acc=$(last_json | jq -r .quantized.accuracy)
nb=$(grep -c 'block [0-9]*: bias corrections of 1 layers' "$ERR")
nl=$(grep -c 'block [0-9]*: block loss ' "$ERR")
[ "$nb" -ge 1 ] && [ "$nb" -eq "$nl" ] || fail "$nb bias-correction lines for $nl blocks"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval "$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w2.cfg" \
    -o model.path="$dir/c.h5" -o model.format=auto -o eval.count=1000 -o eval.also_all=false --json -q
expect_rc 0
[ "$(last_json | jq -r .accuracy)" = "$acc" ] ||
    fail "eval of the CNN checkpoint gives accuracy $(last_json | jq -r .accuracy), the run $acc"

# ---- (e) ----
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$MPQ_SOURCE_DIR/configs/stories260K-w2.cfg" \
    -o round.loss=layer -o round.learn_bias=on
expect_rc 1
expect_err 'round.learn_bias = "on" needs round.loss = "block" or "network"'
grep -q '^model ' "$ERR" && fail "the model was loaded before the refusal"

echo "learn_bias: KLD $kl (stories260K, 2 bits, RTN start, block loss); accuracy $acc (mnist-cnn-small, 2 bits)"
finish
