#!/bin/bash
# `mpquant inspect`: listings of the shared and generated models and data
# files (parameter counts computed independently from the format
# descriptions), and corrupted inputs failing with their specific message
# and a non-zero exit status on every rank under mpirun -np 2.
# Usage: test_io_inspect.sh MKFILES_EXE
source "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
need_shared data/mnist/t10k-images-idx3-ubyte
S="$MPQ_SHARED_DIR/data"
T=$(mktemp -d)
trap 'rm -rf "$T" "$OUT" "$ERR"' EXIT
"$1" "$T" || { echo "FAILED: cannot generate the test files"; exit 1; }

# stories260K: (1056540 - 28) / 4 floats minus two RoPE tables of 512 x 4.
run "$MPQ_BIN" inspect "$S/models/stories260K/stories260K.bin" --json
expect_rc 0
expect_out "^format: +llama2c$"
expect_out "^family: +llama \(llama2.c\)$"
expect_out "dim 64, hidden_dim 172, n_layers 5, n_heads 8, n_kv_heads 4, head_dim 8, vocab_size 512, seq_len 512"
expect_out "model.layers.4.mlp.down_proj.weight +F32 +\[64, 172\] +11008"
expect_out "^parameters: 260032$"
last_json | grep -q '"parameters":260032' || fail "JSON lacks the parameter count"
last_json | grep -q '"tied_embeddings":true' || fail "JSON lacks tied_embeddings"

# MNIST CNN: 8*9 + 8 + 16*8*9 + 16 + 10*784 + 10 = 9098 parameters, no family.
run "$MPQ_BIN" inspect "$S/models/mnist-cnn-small/model-mnist.safetensors"
expect_rc 0
expect_out "^format: +safetensors$"
expect_out "plain tensor container"
expect_out "conv2.weight +F32 +\[16, 8, 3, 3\] +1152"
expect_out "^parameters: 9098$"

# IDX images and labels
run "$MPQ_BIN" inspect "$S/mnist/t10k-images-idx3-ubyte" --json
expect_rc 0
expect_out "images, 10000 items, shape \[10000, 28, 28\]"
last_json | grep -q '"numel":7840000' || fail "IDX JSON lacks numel"
run "$MPQ_BIN" inspect "$S/mnist/t10k-labels-idx1-ubyte"
expect_rc 0
expect_out "labels, 10000 items"

# generated tiny model (dim 16, hidden 24, 2 layers, kv_dim 8, vocab 270, untied):
# 270*16*2 + 16 + 2*(16 + 16*16 + 8*16*2 + 16*16 + 16 + 3*24*16) = 8656 + 3904 = 12560
for f in tiny.bin tiny-v1.bin hf hf/model.safetensors.index.json; do
    run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" inspect "$T/$f"
    expect_rc 0
    expect_out "^parameters: 12560$"
    expect_once "^parameters:"
done
run "$MPQ_BIN" inspect "$T/hf"
expect_out "BF16 +\[16, 16\]"
expect_out "rope half-rotation, tied_embeddings no"

# tensors of dtypes no model computes with (the I64 num_batches_tracked of
# every PyTorch batch norm) open and are listed apart, outside the count
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" inspect "$T/dtype.safetensors" --json
expect_rc 0
expect_out "^parameters: 4$"
expect_out "^unused:  1 "
expect_out "^  b +I64 +\[2\]$"
last_json | grep -q '"unused_tensors":\[{"name":"b","dtype":"I64","shape":\[2\]}\]' ||
    fail "unused tensors JSON: $(last_json)"
run "$MPQ_BIN" inspect "$T/bn-cnn.safetensors"
expect_rc 0
expect_out "^  bn2.num_batches_tracked +I64 +\[\]$"

# corrupted inputs: specific message, exit status 1 on both ranks
bad() { # FILE PATTERN
    run $MPQ_MPIEXEC -np 2 bash -c '"$0" inspect "$1"; echo "rank-exit=$?"' "$MPQ_BIN" "$T/$1"
    expect_err "$2"
    [ "$(grep -c '^rank-exit=1$' "$OUT")" -eq 2 ] || fail "$1: not every rank exited with status 1"
    grep -q '^parameters' "$OUT" && fail "$1: printed a listing"
}
bad truncated.bin "truncated.bin: truncated"
bad past-end.safetensors "past-end.safetensors: tensor 'b'.*past the end"
bad overlap.safetensors "overlap.safetensors: tensor 'b'.*overlaps tensor 'a'"
bad i32used "i32used/model.safetensors: tensor 'model.norm.weight' has dtype I32, but the model uses it"
bad nulshard "model.safetensors.index.json: byte [0-9]+: the JSON string \"model-00002-of-00002.safetensors\" continues after a NUL character"
bad kvheads "kvheads/config.json: key \"num_key_value_heads\" is 3, which does not divide num_attention_heads 2"
bad headdim "headdim/config.json: key \"head_dim\" is 7: rotary embeddings need an even head dimension"
bad dotdot "model.safetensors.index.json: tensor '.*': shard name \"../model-00002-of-00002.safetensors\" has a '..' component"
bad nokey "nokey/config.json: required key \"hidden_size\" is missing"
bad missing-file "missing-file: cannot open"

# the llama2.c tokenizer: recognised by its structure; a cut one is refused
tok="${MPQ_SHARED_DIR:-}/data/models/stories260K/tok512.bin"
if [[ -f $tok ]]; then
    run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" inspect "$tok" --json
    expect_rc 0
    expect_out "^format:  llama2.c tokenizer$"
    expect_out "^vocab:   512 tokens, longest 7 bytes$"
    expect_once "^vocab:"
    last_json | grep -q '"format":"tokenizer","vocab_size":512,"max_token_length":7' ||
        fail "tokenizer JSON: $(last_json)"
    head -c 2999 "$tok" >"$T/cut-tok.bin"
    run "$MPQ_BIN" inspect "$T/cut-tok.bin" --format=tokenizer
    expect_rc 1
    expect_err "cut-tok.bin: not a llama2.c tokenizer file: truncated at token 214 \(offset 2998\)"
    # the reasons of the loader (eval), not just "not a tokenizer"
    printf '\x07\x00\x00\x00\x00\x00\x80\x3f\x09\x00\x00\x00abc' >"$T/long-tok.bin"
    run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" inspect "$T/long-tok.bin" --format=tokenizer
    expect_rc 1
    expect_err "long-tok.bin: not a llama2.c tokenizer file: token 0 has length 9 outside \[0, max_token_length = 7\]"
    # a Hugging Face tokenizer: the loader's reason, naming the JSON path
    printf '{"model": {"type": "WordPiece", "vocab": {}}}' >"$T/wp.json"
    run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" inspect "$T/wp.json" --format=tokenizer
    expect_rc 1
    expect_err "wp.json: model.type: \"WordPiece\" is not supported"
elif [[ ${CI:-} == true ]]; then
    fail "shared tokenizer $tok missing"
fi
hftok="${MPQ_SHARED_DIR:-}/data/tokenizers/tinyllama"
if [[ -d $hftok ]]; then
    run "$MPQ_BIN" inspect "$hftok" --format=tokenizer --json
    expect_rc 0
    expect_out "^vocab:   32000 ids, bos 1, eos 2, add_bos yes$"
    last_json | grep -q '"kind":"hf-bpe","vocab_size":32000' || fail "HF tokenizer JSON: $(last_json)"
elif [[ ${CI:-} == true ]]; then
    fail "shared tokenizer $hftok missing"
fi
finish
