#!/bin/bash
# test_hf_variants.sh: a Hugging Face Llama with what current models use
# beyond the original architecture (label loading): head_dim different from
# hidden / heads, attention_bias (q/k/v/o biases) and llama3 RoPE scaling,
# written by mkllama. `mpquant run` quantizes it at 2 ranks; the checkpoint
# keeps the architecture (inspect); the safetensors export writes it back
# into config.json and evaluates exactly as the checkpoint does (the same
# mean NLL to the last digit); the llama2.c export is refused, naming what
# llama2.c cannot hold. The forward pass itself is checked against a naive
# reference in tests/loading (io_logits). An export may go beside the
# checkpoint, but never over a file its source was read from (config.json,
# a shard), even with --overwrite. Without a tokenizer, random calibration
# without evaluation runs; generated calibration is refused.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_jq
mk=$1
tok=$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin
text=$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt
need_shared data/models/stories260K/tok512.bin
need_shared data/text/tinyshakespeare.txt
make_work_dir
run "$mk" "$dir/m" --hidden 64 --intermediate 160 --layers 2 --heads 4 --kv-heads 2 \
    --vocab 512 --context 64 --head-dim 24 --attention-bias --rope-scaling llama3:8:1:4:16
expect_rc 0
arch_of() { # the architecture as inspect --json gives it, keys sorted
    run "$MPQ_BIN" inspect "$1" --json
    expect_rc 0
    last_json | jq -S -c '.arch | {head_dim, qkv_bias, o_bias, rope_scaling, dim, n_heads}'
}
want=$(arch_of "$dir/m")
jq -e '.head_dim == 24 and .o_bias and .rope_scaling.rope_type == "llama3" and
       .rope_scaling.original_max_position_embeddings == 16' <<<"$want" >/dev/null ||
    fail "inspect of the generated model: $want"
cat >"$dir/q.cfg" <<CFG
model = { path = "$dir/m"; tokenizer = "$tok"; };
calibration = { source = "random"; segments = 4; seq_len = 32; };
quant = { spec = "int:bits=4,group=24"; method = "gptq"; };
eval = { text = "$text"; docs = 2; };
CFG
# shellcheck disable=SC2086
run timeout -k 5 200 $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/q.cfg" -q --json \
    -o output.path="$dir/q.h5"
expect_rc 0
# without a tokenizer: random calibration and no evaluation go; generated
# calibration needs one, and says so
nt=(-o 'model.tokenizer=""' -o calibration.source=random -o eval.enabled=false)
# shellcheck disable=SC2086
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/q.cfg" -q "${nt[@]}" -o output.path="$dir/nt.h5"
expect_rc 0
[ -s "$dir/nt.h5" ] || fail "no checkpoint without a tokenizer"
# shellcheck disable=SC2086
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/q.cfg" -q "${nt[@]}" -o calibration.source=generated \
    -o output.path="$dir/nt2.h5"
expect_rc 1
expect_err 'needs a tokenizer for calibration.source'
got=$(arch_of "$dir/q.h5")
[ "$got" = "$want" ] || fail "checkpoint architecture $got, expected $want"
mkdir -p "$dir/exp"
run "$MPQ_BIN" export "$dir/q.h5" --format safetensors --output "$dir/exp/model.safetensors"
expect_rc 0
got=$(arch_of "$dir/exp")
[ "$got" = "$want" ] || fail "export architecture $got, expected $want"
jq -e '.attention_bias == true and .rope_scaling.rope_type == "llama3" and .head_dim == 24' \
    "$dir/exp/config.json" >/dev/null || fail "export config.json: $(cat "$dir/exp/config.json")"
nll() {
    # shellcheck disable=SC2086
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval --model "$1" --tokenizer "$tok" --text "$text" --docs 2
    expect_rc 0
    grep '^mean_nll:' "$OUT"
}
a=$(nll "$dir/q.h5")
b=$(nll "$dir/exp")
[ -n "$a" ] && [ "$a" = "$b" ] || fail "checkpoint '$a', export '$b'"
# beside the checkpoint (no config.json there to protect), but never over
# the source model's own config.json
run "$MPQ_BIN" export "$dir/q.h5" --format safetensors --output "$dir/model.safetensors"
expect_rc 0
[ -s "$dir/config.json" ] || fail "no config.json beside an export into the checkpoint's directory"
cp "$dir/m/config.json" "$dir/config.src"
run "$MPQ_BIN" export "$dir/m" --format safetensors --output "$dir/m/again.safetensors" --overwrite
expect_rc 2
expect_err "same file as input '$dir/m/config.json'"
shard=$(ls "$dir"/m/model-*.safetensors | head -n 1)
run "$MPQ_BIN" export "$dir/m" --format safetensors --output "$shard" --overwrite --no-config
expect_rc 2
expect_err 'same file as input'
cmp -s "$dir/m/config.json" "$dir/config.src" || fail "the source's config.json was modified"
[ ! -e "$dir/m/again.safetensors" ] || fail "a refused export left a file"
run "$MPQ_BIN" export "$dir/q.h5" --format llama2c --output "$dir/m.bin"
expect_rc 2
expect_err 'biases'
[ ! -e "$dir/m.bin" ] || fail "a refused export left a file"
echo "variants: architecture kept through checkpoint and export; $a"
finish
