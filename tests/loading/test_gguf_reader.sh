#!/bin/bash
# test_gguf_reader.sh: mpquant reads GGUF files (model format "gguf") as
# llama.cpp's reference Python writer, gguf-py, writes them.
#
# 1. Values: tests/loading/gguf_make.py writes random Llama GGUF files whose
#    matrices are F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (gguf-py's
#    quantize), Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (random blocks), and a mixed
#    file (a different type per matrix, biases, untied output, alignment 64,
#    keys of every value type, nested arrays, linear RoPE scaling), with
#    gguf.quants.dequantize of every tensor as the reference. `mpquant
#    export --format safetensors` of each must equal the reference bit for
#    bit (q/k rows in the export's rotate-half order); a deliberate mismatch
#    (F16 reference against the F32 file) must be seen. The architecture of
#    `inspect --json` is checked against the keys written.
# 2. stories260K written as an F32 GGUF from the llama2.c file: `mpquant
#    eval` gives the same predictions, mean NLL and perplexity, bit for bit
#    (the JSON numbers are compared as printed, 17 significant digits), as
#    the llama2.c file, at 1 and 2 ranks; `mpquant run` quantizes the GGUF.
# 3. Corrupt files: truncated counts, key-value pairs, tensor infos and data,
#    an unknown value type, an unknown and an unsupported tensor type, an
#    alignment that is not a power of two, architecture gpt2, a repeated
#    key, a missing key, GGUF version 1: exit status 1 and a message naming
#    the file and the field; then test_gguf_damage (ARGS: its path) opens
#    20,000 randomly damaged headers and every truncation of a valid file in
#    one process: each opens or fails with MPQ_ERR_FORMAT naming the file,
#    never a crash.
#
# gguf-py runs in a virtual environment, MPQ_GGUF_VENV (default
# ~/.cache/mpquant/gguf-venv), created with numpy==2.2.6 and gguf==0.19.0
# from PyPI when missing (Debian package python3-venv).
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_shared data/text/tinyshakespeare.txt
need_jq
make_work_dir
need_venv "${MPQ_GGUF_VENV:-$HOME/.cache/mpquant/gguf-venv}" numpy==2.2.6 gguf==0.19.0
mk="$MPQ_SOURCE_DIR/tests/loading/gguf_make.py"
damage=$1
s260="$MPQ_SHARED_DIR/data/models/stories260K"
text="$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt"

# ---- 1. dequantized values against gguf-py ------------------------------------
mkdir -p "$dir/r"
run "$py" "$mk" random "$dir/r"
expect_rc 0
[ "$FAILS" -eq 0 ] || finish
for t in F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K mixed; do
    mkdir -p "$dir/r/ex_$t"
    run "$MPQ_BIN" export "$dir/r/$t.gguf" --format safetensors \
        --output "$dir/r/ex_$t/model.safetensors"
    expect_rc 0
    run "$py" "$mk" compare "$dir/r/$t.npz" "$dir/r/ex_$t/model.safetensors"
    expect_rc 0
    expect_out ", 0 mismatching$"
    echo "$t: $(cat "$OUT")"
done
# the comparison sees a difference: F16-rounded values against the F32 file
run "$py" "$mk" compare "$dir/r/F16.npz" "$dir/r/ex_F32/model.safetensors"
expect_rc 1
expect_out "values differ in their bits"

run "$MPQ_BIN" inspect "$dir/r/mixed.gguf" --json
expect_rc 0
arch='{"dim":256,"hidden_dim":512,"n_layers":2,"n_heads":4,"n_kv_heads":2,"head_dim":64,"vocab_size":96,"seq_len":128,"norm_eps":1e-05,"rope_theta":10000,"rope_interleaved":true,"tied_embeddings":false,"qkv_bias":true,"o_bias":true,"rope_scaling":{"rope_type":"linear","factor":2}}'
[ "$(last_json | jq -c .arch)" = "$arch" ] || fail "mixed.gguf architecture: $(last_json | jq -c .arch)"
[ "$(last_json | jq -r '.format + " " + .model_type + " " + (.n_tensors|tostring)')" = "gguf llama 29" ] ||
    fail "mixed.gguf: format, model_type or tensor count"
run "$MPQ_BIN" inspect "$dir/r/Q4_K.gguf" --json
expect_rc 0
[ "$(last_json | jq -c '[.arch.tied_embeddings, .arch.qkv_bias, .n_tensors]')" = "[true,false,20]" ] ||
    fail "Q4_K.gguf: tied embeddings, no biases, 20 tensors"

# ---- 2. stories260K: the same perplexity as the llama2.c file -----------------
run "$py" "$mk" llama2c "$s260/stories260K.bin" "$dir/s260.gguf"
expect_rc 0
evals=()
for np_model in "1 $s260/stories260K.bin" "1 $dir/s260.gguf" "2 $dir/s260.gguf"; do
    run $MPQ_MPIEXEC -n "${np_model%% *}" "$MPQ_BIN" eval --model "${np_model#* }" \
        --tokenizer "$s260/tok512.bin" --text "$text" --docs 40 --json
    expect_rc 0
    evals+=("$(last_json | jq -r '[.predictions, .mean_nll, .ppl] | map(tostring) | join(" ")')")
done
echo "llama2.c:          ${evals[0]}"
echo "GGUF:              ${evals[1]}"
echo "GGUF, 2 ranks:     ${evals[2]}"
[ -n "${evals[0]}" ] && [ "${evals[0]}" = "${evals[1]}" ] && [ "${evals[0]}" = "${evals[2]}" ] ||
    fail "perplexity of the GGUF (${evals[1]}; 2 ranks: ${evals[2]}) differs from the llama2.c file's (${evals[0]})"
run "$MPQ_BIN" run "$MPQ_SOURCE_DIR/configs/stories260K-w4.cfg" -q -o quant.method=rtn \
    -o eval.enabled=false -o calibration.segments=1 -o calibration.seq_len=16 \
    -o output.overwrite=true -o "quant.spec=\"int:bits=4,group=32\"" \
    -o "model.path=\"$dir/s260.gguf\"" -o "output.path=\"$dir/s260-w4.h5\""
expect_rc 0
[ -s "$dir/s260-w4.h5" ] || fail "mpquant run on the GGUF wrote no checkpoint"

# ---- 3. corrupt files ------------------------------------------------------------
mkdir -p "$dir/c"
run "$py" "$mk" corrupt "$dir/c"
expect_rc 0
run "$MPQ_BIN" inspect "$dir/c/base.gguf"
expect_rc 0
bad() { # FILE PATTERN: exit status 1, one message naming the file and the field
    run "$MPQ_BIN" inspect "$dir/c/$1.gguf"
    expect_rc 1
    expect_err "$1\.gguf: $2"
}
bad trunc_counts "truncated or corrupt: header field metadata_kv_count"
bad trunc_kv "truncated: reading the value of key 'llama.attention.head_count_kv'"
bad trunc_tinfo "truncated: reading the dimensions of tensor 'blk.0.ffn_norm.weight'"
bad trunc_data "tensor 'blk.0.ffn_down.weight': data .* passes the end of the file"
bad bad_vtype "key 'general.architecture': unknown value type 77"
bad unknown_type "tensor 'blk.0.ffn_up.weight' has unknown ggml type 99"
bad iq4_type "tensor 'blk.0.attn_q.weight' has ggml type IQ4_NL, which is not supported"
bad bad_align "key 'general.alignment' = 48 is not a power of two"
bad gpt2 "key 'general.architecture' is 'gpt2'; only 'llama' is supported"
bad no_block_count "required key 'llama.block_count' is missing"
bad dup_key "key 'llama.context_length' appears twice"
bad version1 "header field version = 1 is not supported"

# random damage, in one process: never a crash, every error names the file
data_offset=$("$py" -c 'import gguf, sys; print(gguf.GGUFReader(sys.argv[1]).data_offset)' \
    "$dir/c/base.gguf")
run "$damage" "$dir/c/base.gguf" "$data_offset" "$dir/c" 20000
expect_rc 0
expect_out "PASSED"
echo "damage: $(head -1 "$OUT")"
finish
