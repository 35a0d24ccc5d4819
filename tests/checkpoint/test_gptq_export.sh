#!/bin/bash
# test_gptq_export.sh: `mpquant export --format gptq | gptq-v2` and mpquant's
# GPTQ reader. For quantizers that map to GPTQ and some that do not, `mpquant
# run` (RTN, stories260K) writes a checkpoint and the GPTQ export is decoded
# by tests/checkpoint/gptq_check.py, written from the published format alone
# (qweight/qzeros bit streams, v1 zero + 1, g_idx, fp16 scales, the
# "dynamic" overrides of config.json): every module and every dense tensor
# must equal `mpquant export --format safetensors` of the same checkpoint bit
# for bit. stories260K has dim 64 and hidden 172: gate/up (172 outputs) and
# down (172 inputs, not a multiple of 32) map only at 8 bits per channel;
# the rest stay dense F32 and are excluded through "-:" keys. A random
# Llama with attention biases (tests/tools/mkllama, the first argument)
# maps entirely. `mpquant eval` of an export prints the figures of its
# checkpoint (one in Hugging Face row order; for a llama2.c-ordered one,
# whose q/k rows every export permutes, those of its safetensors export);
# mpquant's reader honours g_idx in any order and a missing g_idx. Errors:
# a zero-point of 0 in v1, an output that is an input, --no-config, a
# non-checkpoint source, corrupted exports (g_idx out of range, qweight of
# the wrong shape, zero-point out of range, scales of the wrong shape, a
# quantized module that "dynamic" excludes).
#
# The checker runs in a virtual environment, MPQ_GPTQ_VENV (default
# ~/.cache/mpquant/gptq-venv), created with numpy==2.2.6 and
# safetensors==0.5.3 from PyPI when missing (Debian package python3-venv).
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_shared data/text/tinyshakespeare.txt
need_jq
make_work_dir
need_venv "${MPQ_GPTQ_VENV:-$HOME/.cache/mpquant/gptq-venv}" numpy==2.2.6 safetensors==0.5.3
check="$MPQ_SOURCE_DIR/tests/checkpoint/gptq_check.py"
cfg="$MPQ_SOURCE_DIR/configs/stories260K-w4.cfg"
model="$MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin"
tok="$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin"
text="$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt"
fast=(-q -o quant.method=rtn -o eval.enabled=false -o calibration.segments=1
    -o calibration.seq_len=16 -o output.overwrite=true)

# quantize NAME SPEC [ARGS...]: $dir/NAME.h5 and its safetensors export $dir/NAME.ref/.
quantize() {
    local name=$1 spec=$2
    shift 2
    run "$MPQ_BIN" run "$cfg" "${fast[@]}" -o "quant.spec=\"$spec\"" -o output.path="$dir/$name.h5" "$@"
    expect_rc 0
    mkdir -p "$dir/$name.ref"
    run "$MPQ_BIN" export "$dir/$name.h5" --format safetensors --output "$dir/$name.ref/model.safetensors"
    expect_rc 0
}

# export_check NAME FORMAT MODULES DENSE SETTINGS: the export decodes to the
# reference, with MODULES GPTQ modules, DENSE dense linear layers (each
# reported on stdout) and the settings histogram SETTINGS (jq -c).
export_check() {
    local name=$1 fmt=$2 out="$dir/$1.$2"
    mkdir -p "$out"
    run "$MPQ_BIN" export "$dir/$name.h5" --format "$fmt" --output "$out/model.safetensors"
    expect_rc 0
    local reported
    reported=$(grep -c 'stays dense' "$OUT")
    [ "$reported" -eq "$4" ] || fail "$name $fmt: $reported dense layers reported, expected $4"
    run "$py" "$check" "$out" --reference "$dir/$name.ref/model.safetensors"
    expect_rc 0
    local s
    s=$(last_json)
    [ "$(jq -r .modules <<<"$s")" = "$3" ] || fail "$name $fmt: modules $(jq -r .modules <<<"$s"), expected $3"
    [ "$(jq -r .dense_linear <<<"$s")" = "$4" ] || fail "$name $fmt: dense $(jq -r .dense_linear <<<"$s"), expected $4"
    [ "$(jq -c .settings <<<"$s")" = "$5" ] || fail "$name $fmt: settings $(jq -c .settings <<<"$s"), expected $5"
    [ "$(jq -r .mismatches <<<"$s")" = 0 ] || fail "$name $fmt: export and reference differ"
}

# eval_json MODEL: the figures of `mpquant eval` (JSON without timers and path).
eval_json() {
    run "$MPQ_BIN" eval --model "$1" --tokenizer "$tok" --text "$text" --docs 20 --json
    expect_rc 0
    last_json | jq -c 'del(.timers, .model)'
}

quantize q4a "int:bits=4,group=32"
export_check q4a gptq 20 15 '{"4/32/asym":20}'
export_check q4a gptq-v2 20 15 '{"4/32/asym":20}'
[ "$(jq -r .quantization_config.checkpoint_format "$dir/q4a.gptq/config.json")" = gptq ] ||
    fail "q4a: checkpoint_format of v1 is not gptq"
[ "$(jq -r .quantization_config.checkpoint_format "$dir/q4a.gptq-v2/config.json")" = gptq_v2 ] ||
    fail "q4a: checkpoint_format of v2 is not gptq_v2"
# vLLM matches "dynamic" against its fused modules: gate and up, both dense,
# exclude gate_up_proj too.
[ "$(jq -r '.quantization_config.dynamic | has("-:^model\\.layers\\.4\\.mlp\\.gate_up_proj$")' \
    "$dir/q4a.gptq/config.json")" = true ] || fail "q4a: no rule for vLLM's fused gate_up_proj"
grep -q 'down_proj.weight stays dense .*172 input columns are not a whole number of groups of 32' \
    <(cd "$dir" && "$MPQ_BIN" export q4a.h5 --format gptq --output q4a.gptq/model.safetensors --overwrite) ||
    fail "q4a: the reason down_proj stays dense is not reported"
quantize q4s "int:bits=4,sym=true,group=32"
export_check q4s gptq 20 15 '{"4/32/sym":20}'
quantize q8c "int:bits=8,sym=true,gran=channel"
export_check q8c gptq 35 0 '{"8/-1/sym":35}'
quantize q8t "int:bits=8,gran=tensor"
export_check q8t gptq 35 0 '{"8/-1/asym":35}'
quantize q3 "int:bits=3,group=32"
export_check q3 gptq 20 15 '{"3/32/asym":20}'
quantize nf4 "nf4"
export_check nf4 gptq 0 35 '{}'
grep -q 'quantizer family nf4' <(cd "$dir" && "$MPQ_BIN" export nf4.h5 --format gptq --output nf4.gptq/model.safetensors --overwrite) ||
    fail "nf4: the reason is not reported"
# GPTQ with act order: desc_act true, g_idx still each row's group.
quantize act "int:bits=4,sym=true,group=32" -o quant.method=gptq -o round.act_order=true
export_check act gptq 20 15 '{"4/32/sym":20}'
[ "$(jq -r .quantization_config.desc_act "$dir/act.gptq/config.json")" = true ] || fail "act: desc_act is not true"
[ "$(jq -r .quantization_config.desc_act "$dir/q4a.gptq/config.json")" = false ] || fail "q4a: desc_act is not false"

# int2: some group has a zero-point of 0 (a skewed group), which v1 cannot
# store: refused naming the layer; v2 stores it.
quantize q2 "int:bits=2,group=32"
mkdir -p "$dir/q2.gptq"
run "$MPQ_BIN" export "$dir/q2.h5" --format gptq --output "$dir/q2.gptq/model.safetensors"
expect_rc 2
expect_err "layer 'model\.layers\.[0-9]+\.[a-z_]+\.[a-z_]+\.weight', group [0-9]+ .*zero-point 0 cannot be stored in GPTQ v1.*gptq-v2"
[ -z "$(ls -A "$dir/q2.gptq")" ] || fail "q2: the refused export left files: $(ls -A "$dir/q2.gptq")"
export_check q2 gptq-v2 20 15 '{"2/32/asym":20}'
[ "$(jq -r .min_zero <<<"$(last_json)")" = 0 ] || fail "q2: no zero-point 0 in the v2 export"

# Mixed precision: 4-bit groups and 8-bit channels chosen per layer; the
# minority becomes "+:" overrides of "dynamic", anchored and escaped.
cat >"$dir/mixed.cfg" <<EOF
model = { path = "$model"; tokenizer = "$tok"; };
calibration = { source = "random"; seq_len = 16; segments = 1; };
quant = { method = "rtn"; candidates = [ "int:bits=4,sym=false,group=32", "int:bits=8,sym=true,gran=channel" ]; };
budget = { avg_bits = 7.0; count = "codes"; };
importance = { method = "error"; };
eval = { enabled = false; };
output = { path = "$dir/mx.h5"; overwrite = true; };
EOF
run "$MPQ_BIN" run "$dir/mixed.cfg" -q
expect_rc 0
mkdir -p "$dir/mx.ref"
run "$MPQ_BIN" export "$dir/mx.h5" --format safetensors --output "$dir/mx.ref/model.safetensors"
expect_rc 0
mkdir -p "$dir/mx.gptq"
run "$MPQ_BIN" export "$dir/mx.h5" --format gptq --output "$dir/mx.gptq/model.safetensors"
expect_rc 0
run "$py" "$check" "$dir/mx.gptq" --reference "$dir/mx.ref/model.safetensors"
expect_rc 0
s=$(last_json)
[ "$(jq -r '.settings | length' <<<"$s")" = 2 ] || fail "mixed: settings $(jq -c .settings <<<"$s"), expected two"
[ "$(jq -r .mismatches <<<"$s")" = 0 ] || fail "mixed: export and reference differ"
jq -r '.quantization_config.dynamic | keys[]' "$dir/mx.gptq/config.json" |
    grep -Eq '^\+:\^model\\\.layers\\\.[0-9]+\\\.(self_attn|mlp)\\\.[a-z]+_proj\$$' ||
    fail "mixed: no anchored, escaped \"+:\" override in dynamic"
n_plus=$(jq -r '[.quantization_config.dynamic | keys[] | select(startswith("+:"))
    | select(test("qkv_proj|gate_up_proj") | not)] | length' "$dir/mx.gptq/config.json")
bits=$(jq -r .quantization_config.bits "$dir/mx.gptq/config.json")
n_base=$(jq -r --arg k "$bits/" '[.settings | to_entries[] | select(.key | startswith($k)) | .value] | add' <<<"$s")
n_other=$(jq -r --arg k "$bits/" '[.settings | to_entries[] | select(.key | startswith($k) | not) | .value] | add' <<<"$s")
[ "$n_plus" = "$n_other" ] && [ "$n_base" -ge "$n_other" ] ||
    fail "mixed: base $bits bits for $n_base modules, $n_plus overrides for $n_other others"

# The comparison is not vacuous: another checkpoint's reference differs.
run "$py" "$check" "$dir/q4a.gptq" --reference "$dir/q4s.ref/model.safetensors"
expect_rc 1
expect_out '^MISMATCH: model\.layers\.0\.self_attn\.q_proj\.weight'

# mpquant reads the exports: v1, v2, dynamic, act order give the figures of
# the safetensors export of the same checkpoint, bit for bit.
for name in q4a.gptq q4a.gptq-v2 q3.gptq q2.gptq-v2 mx.gptq act.gptq q8t.gptq; do
    ref=$(eval_json "$dir/${name%%.*}.ref")
    got=$(eval_json "$dir/$name")
    [ -n "$ref" ] && [ "$got" = "$ref" ] || fail "eval of $name: $got, expected $ref"
done
# Of a checkpoint in Hugging Face row order (stories260K converted with the
# safetensors export), the export evaluates exactly as the checkpoint.
mkdir -p "$dir/hf"
run "$MPQ_BIN" export "$model" --format safetensors --output "$dir/hf/model.safetensors"
expect_rc 0
quantize h4 "int:bits=4,group=32" -o model.path="$dir/hf"
export_check h4 gptq 20 15 '{"4/32/asym":20}'
export_check h4 gptq-v2 20 15 '{"4/32/asym":20}'
ref=$(eval_json "$dir/h4.h5")
for name in h4.gptq h4.gptq-v2 h4.gptq/model.safetensors; do
    got=$(eval_json "$dir/$name")
    [ -n "$ref" ] && [ "$got" = "$ref" ] || fail "eval of $name: $got, expected the checkpoint's $ref"
done
run "$MPQ_BIN" inspect "$dir/h4.gptq"
expect_rc 0
expect_out '^format: +gptq'

# A random Llama (tests/tools/mkllama, the first argument) whose every
# linear layer maps, with q/k/v/o biases: all 14 modules quantized, the
# biases and the head in their stored BF16; the export evaluates exactly as
# the checkpoint.
run "$1" "$dir/mk" --hidden 256 --intermediate 768 --layers 2 --heads 8 --kv-heads 4 \
    --vocab 512 --context 64 --attention-bias
expect_rc 0
cat >"$dir/mk.cfg" <<EOF
model = { path = "$dir/mk"; tokenizer = "$tok"; };
calibration = { source = "random"; segments = 1; seq_len = 16; };
quant = { spec = "int:bits=4,sym=true,group=64"; method = "rtn"; };
eval = { enabled = false; };
output = { path = "$dir/mk.h5"; overwrite = true; };
EOF
run "$MPQ_BIN" run "$dir/mk.cfg" -q
expect_rc 0
mkdir -p "$dir/mk.ref"
run "$MPQ_BIN" export "$dir/mk.h5" --format safetensors --output "$dir/mk.ref/model.safetensors"
expect_rc 0
export_check mk gptq 14 0 '{"4/64/sym":14}'
# mkllama stores BF16: the 7 dense tensors (embeddings, head, 5 norms) and
# the 8 biases stay BF16; only the GPTQ tensors are I32 / F16.
[ "$(last_json | jq -c .dtypes)" = '{"BF16":15,"F16":14,"I32":42}' ] ||
    fail "mk: dtypes $(last_json | jq -c .dtypes), expected the dense tensors BF16"
got=$(eval_json "$dir/mk.gptq")
ref=$(eval_json "$dir/mk.h5")
[ -n "$ref" ] && [ "$got" = "$ref" ] || fail "eval of mk.gptq: $got, expected the checkpoint's $ref"

# Errors of the writer.
run "$MPQ_BIN" export "$dir/q4a.h5" --format gptq --output "$dir/q4a.h5" --overwrite
expect_rc 2
expect_err "is the same file as input"
run "$MPQ_BIN" export "$dir/q4a.h5" --format gptq --output "$dir/q4a.gptq/model.safetensors"
expect_rc 1
expect_err "already exists"
run "$MPQ_BIN" export "$dir/q4a.h5" --format gptq --output "$dir/nc/model.safetensors" --no-config
expect_rc 2
expect_err "config.json carries quantization_config"
run "$MPQ_BIN" export "$model" --format gptq --output "$dir/x/model.safetensors"
expect_rc 2
expect_err "GPTQ export needs an mpquant checkpoint"

# Errors of the reader: exports edited with safetensors' numpy API.
edit() { # edit DIR PYTHON-STATEMENTS (t: the tensors; m: "model.layers.0.self_attn.q_proj")
    cp -r "$dir/q4a.gptq" "$dir/$1"
    "$py" -c "import numpy as np, sys
from safetensors.numpy import load_file, save_file
p = sys.argv[1] + '/model.safetensors'
t = load_file(p)
m = 'model.layers.0.self_attn.q_proj'
$2
save_file(t, p, metadata={'format': 'pt'})" "$dir/$1"
}
edit bad_gidx "t[m + '.g_idx'][5] = 7" || fail "cannot edit bad_gidx"
run "$MPQ_BIN" inspect "$dir/bad_gidx"
expect_rc 1
expect_err "tensor 'model\.layers\.0\.self_attn\.q_proj\.g_idx': entry 5 is group 7, outside \[0, 2\)"
edit bad_qw "t[m + '.qweight'] = t[m + '.qweight'][:7].copy()" || fail "cannot edit bad_qw"
run "$MPQ_BIN" eval --model "$dir/bad_qw" --tokenizer "$tok" --text "$text" --docs 2
expect_rc 1
expect_err "tensor 'model\.layers\.0\.self_attn\.q_proj\.qweight' \[7, 64\] holds 56 input rows"
edit bad_zero "t[m + '.qzeros'][1, 0] |= 15" || fail "cannot edit bad_zero"
run "$MPQ_BIN" inspect "$dir/bad_zero"
expect_rc 1
expect_err "tensor 'model\.layers\.0\.self_attn\.q_proj\.qzeros': the zero-point of group 1, output [0-7] is 16"
edit bad_scales "t[m + '.scales'] = t[m + '.scales'].astype(np.float32)[:1].copy()" ||
    fail "cannot edit bad_scales"
run "$MPQ_BIN" inspect "$dir/bad_scales"
expect_rc 1
expect_err "tensor 'model\.layers\.0\.self_attn\.q_proj\.scales' has shape \[1, 64\]"

# The reader honours g_idx (any group per input row, as act-order files
# have): rows of q_proj reassigned to groups out of order; mpquant's own
# safetensors export of that GPTQ model equals the checker's decoding.
edit perm "t[m + '.g_idx'] = ((np.arange(64) * 37) % 64 // 32).astype(np.int32)" ||
    fail "cannot edit perm"
mkdir -p "$dir/perm.st"
run "$MPQ_BIN" export "$dir/perm" --format safetensors --output "$dir/perm.st/model.safetensors"
expect_rc 0
run "$py" "$check" "$dir/perm" --reference "$dir/perm.st/model.safetensors"
expect_rc 0
run "$py" "$check" "$dir/perm" --reference "$dir/q4a.ref/model.safetensors"
expect_rc 1
expect_out '^MISMATCH: model\.layers\.0\.self_attn\.q_proj\.weight$'
# Without g_idx, rows go to group row / group_size: the same model.
edit nogidx "
for k in [k for k in t if k.endswith('.g_idx')]:
    del t[k]" || fail "cannot edit nogidx"
got=$(eval_json "$dir/nogidx")
ref=$(eval_json "$dir/q4a.ref")
[ -n "$ref" ] && [ "$got" = "$ref" ] || fail "eval without g_idx: $got, expected $ref"
# A module that "dynamic" excludes but that has a qweight.
cp -r "$dir/q4a.gptq" "$dir/bad_dyn"
jq '.quantization_config.dynamic = {"-:^model\\.layers\\.0\\.self_attn\\.q_proj$": {}}' \
    "$dir/q4a.gptq/config.json" >"$dir/bad_dyn/config.json"
run "$MPQ_BIN" inspect "$dir/bad_dyn"
expect_rc 1
expect_err "tensor 'model\.layers\.0\.self_attn\.q_proj\.qweight': quantization_config\.dynamic leaves module"

echo "gptq: exports of 11 checkpoints decoded bit-exact by gptq_check.py; eval identical"
finish
