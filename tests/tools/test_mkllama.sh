#!/bin/bash
# test_mkllama.sh: the Hugging Face Llama generator (label loading). A
# 3-layer model with grouped-query attention in 3 shards: `mpquant inspect`
# reads it (architecture, parameter count computed here from the shape,
# BF16 tensors, every shard), and `mpquant run` quantizes it end to end at
# 2 ranks (random calibration; the vocabulary of 512 fits the shared
# stories260K tokenizer, which the evaluation of one document needs).
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_jq
mk=$1
tok=data/models/stories260K/tok512.bin
text=data/text/tinyshakespeare.txt
need_shared "$tok"
need_shared "$text"
make_work_dir
H=128 I=352 L=3 A=8 K=2 V=512 C=64
run "$mk" "$dir/m" --hidden $H --intermediate $I --layers $L --heads $A --kv-heads $K \
    --vocab $V --context $C --shard-mib 1
expect_rc 0
kv=$((K * H / A))
per_layer=$((2 * H + H * H + 2 * kv * H + H * H + 3 * H * I))
want=$((2 * V * H + L * per_layer + H))
[ "$(ls "$dir"/m/model-*-of-*.safetensors | wc -l)" -ge 2 ] || fail "expected several shards"
run "$MPQ_BIN" inspect "$dir/m" --json
expect_rc 0
j=$(last_json)
[ "$(jq -r '.parameters // .n_params // .params' <<<"$j")" = "$want" ] ||
    fail "parameter count $(jq -c '.parameters // .n_params // .params' <<<"$j"), expected $want"
jq -e '[.tensors[] | .dtype] | all(. == "BF16")' <<<"$j" >/dev/null || fail "not every tensor is BF16"
cat >"$dir/q.cfg" <<CFG
model = { path = "$dir/m"; tokenizer = "$MPQ_SHARED_DIR/$tok"; };
calibration = { source = "random"; segments = 4; seq_len = 32; };
quant = { spec = "int:bits=4,group=32"; method = "gptq"; };
eval = { text = "$MPQ_SHARED_DIR/$text"; docs = 1; };
CFG
# shellcheck disable=SC2086
run timeout -k 5 200 $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/q.cfg" -q --json -o output.path="$dir/q.h5"
expect_rc 0
[ -s "$dir/q.h5" ] || fail "no checkpoint written"
finish
