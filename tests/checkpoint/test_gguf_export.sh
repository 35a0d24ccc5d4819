#!/bin/bash
# test_gguf_export.sh: `mpquant export --format gguf`. stories260K is
# quantized with RTN under several specs (int sym 8/4/5 group 32 -> Q8_0,
# Q4_0, Q5_0 bit-exact; asym int4/int5 group 32 -> refused without --lossy,
# Q4_1/Q5_1 with it; nf4 and fp32 scales -> F32), the plain model is exported
# all F32, random Hugging Face Llamas (mkllama) are exported: rotate-half
# q/k, head_dim != dim / heads, q/k/v/o biases, llama3 RoPE scaling as Q8_0;
# sym int6 group 16 as Q6_K (--lossy); with --kquants int4/int5 group 32 as
# Q4_K/Q5_K (--lossy); TinyLlama's and Phi-3's tokenizer.json
# (SentencePiece-style), GPT-2's, SmolLM2's and OLMo-2's (byte-level).
# tests/checkpoint/gguf_check.py reads each file with gguf-py (GGUFReader,
# gguf.quants.dequantize) and compares every tensor with `mpquant export
# --format safetensors` of the same model (bit for bit where exact; the
# lossy error measured and compared with the export's report), the metadata
# with the model's own header or config.json, and the vocabulary with
# tokenizer.bin. Then the refusals: no --tokenizer, asym without --lossy
# (naming the layer, leaving no file), an output that is an input, a model
# that is not a Llama.
#
# Arguments: the mkllama tool. The reader runs in a virtual environment,
# MPQ_GGUF_VENV (default ~/.cache/mpquant/gguf-venv), created with
# numpy==2.2.6 and gguf==0.19.0 from PyPI when missing.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_jq
make_work_dir
mkllama=$1
need_venv "${MPQ_GGUF_VENV:-$HOME/.cache/mpquant/gguf-venv}" numpy==2.2.6 gguf==0.19.0
check="$MPQ_SOURCE_DIR/tests/checkpoint/gguf_check.py"
model="$MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin"
tok="$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin"
cfg="$MPQ_SOURCE_DIR/configs/stories260K-w4.cfg"
fast=(-q -o quant.method=rtn -o eval.enabled=false -o calibration.segments=1
    -o calibration.seq_len=16 -o output.overwrite=true)

# quant NAME SPEC [run options...]: $dir/NAME.h5 and its safetensors export
quant() {
    local name=$1 spec=$2
    shift 2
    run "$MPQ_BIN" run "$cfg" "${fast[@]}" -o "quant.spec=\"$spec\"" \
        -o output.path="$dir/$name.h5" "$@"
    expect_rc 0
    mkdir -p "$dir/ref_$name"
    run "$MPQ_BIN" export "$dir/$name.h5" --format safetensors \
        --output "$dir/ref_$name/model.safetensors"
    expect_rc 0
}

# gguf NAME SOURCE MODEL TYPE [export options...]: export, then check
gguf() {
    local name=$1 src=$2 mdl=$3 type=$4
    shift 4
    run "$MPQ_BIN" export "$src" --format gguf --output "$dir/$name.gguf" --tokenizer "$tok" "$@"
    expect_rc 0
    cp "$OUT" "$dir/$name.report"
    local lossy=()
    case " $* " in *" --lossy "*) lossy=(--lossy) ;; esac
    [ -n "${pre:-}" ] && lossy+=(--pre "$pre")
    run "$py" "$check" "$dir/$name.gguf" "$dir/ref_$name/model.safetensors" "$mdl" "$tok" \
        --qtype "$type" --report "$dir/$name.report" "${lossy[@]}"
    expect_rc 0
    echo "gguf $name: $(last_json)"
}

# Exact block types: 30 of the 35 layers (down_proj rows of 172 stay F32).
quant s8 "int:bits=8,sym=true,group=32"
gguf s8 "$dir/s8.h5" "$model" Q8_0
[ "$(last_json | jq -r '.types.Q8_0, .exact, .tensors' | tr '\n' ' ')" = "30 47 47 " ] ||
    fail "s8: expected 30 Q8_0 tensors, all 47 exact"
quant s4 "int:bits=4,sym=true,group=32"
gguf s4 "$dir/s4.h5" "$model" Q4_0
quant s5 "int:bits=5,sym=true,group=32"
gguf s5 "$dir/s5.h5" "$model" Q5_0
grep -q 'blk.0.ffn_down.weight *F32 *dense, exact (quantized layer: row length is not a multiple of 32)' \
    "$dir/s5.report" || fail "s5: ffn_down not reported dense with its reason"

# The comparison is not vacuous: another checkpoint's weights differ.
run "$py" "$check" "$dir/s4.gguf" "$dir/ref_s5/model.safetensors" "$model" "$tok" --qtype Q4_0
expect_rc 1

# Asymmetric: refused without --lossy (naming the layer, no file left),
# converted with it and the added error reported.
quant a4 "int:bits=4,sym=false,group=32"
run "$MPQ_BIN" export "$dir/a4.h5" --format gguf --output "$dir/a4.gguf" --tokenizer "$tok"
expect_rc 2
expect_err "layer 'model.layers.0.self_attn.q_proj.weight' \(int:bits=4,sym=false,group=32"
expect_err "pass --lossy"
[ ! -e "$dir/a4.gguf" ] || fail "a refused export left $dir/a4.gguf"
[ -z "$(ls -A "$dir" | grep '\.tmp\.')" ] || fail "a refused export left a temporary file"
gguf a4 "$dir/a4.h5" "$model" Q4_1 --lossy
n=$(last_json | jq -r .lossy)
[ "$n" = 30 ] || fail "a4: $n lossy tensors, expected 30"
grep -Eq '30 converted with added error \(max \|err\| [0-9.e-]+, rms [0-9.e-]+' "$dir/a4.report" ||
    fail "a4: the totals line lacks the added error"
quant a5 "int:bits=5,sym=false,group=32"
gguf a5 "$dir/a5.h5" "$model" Q5_1 --lossy
# scale=fp16z (halves whose product with any zero-point is a half): the
# same asymmetric layers are exact Q4_1 / Q5_1, without --lossy.
quant z4 "int:bits=4,sym=false,group=32,scale=fp16z"
gguf z4 "$dir/z4.h5" "$model" Q4_1
[ "$(last_json | jq -r '.types.Q4_1, .exact, .lossy' | tr '\n' ' ')" = "30 47 0 " ] ||
    fail "z4: expected 30 exact Q4_1 tensors"
quant z5 "int:bits=5,sym=false,group=32,scale=fp16z"
gguf z5 "$dir/z5.h5" "$model" Q5_1
[ "$(last_json | jq -r '.types.Q5_1, .exact' | tr '\n' ' ')" = "30 47 " ] ||
    fail "z5: expected 30 exact Q5_1 tensors"

# No ggml type: every tensor F32, with the reason.
quant nf4 "nf4:group=32"
gguf nf4 "$dir/nf4.h5" "$model" F32
grep -q 'attn_q.weight *F32 *dense, exact (quantized layer: quantizer family has no ggml block type)' \
    "$dir/nf4.report" || fail "nf4: reason not reported"
quant f32s "int:bits=4,sym=true,group=32,scale=fp32"
gguf f32s "$dir/f32s.h5" "$model" F32
grep -q 'fp32 scales that are not fp16 values' "$dir/f32s.report" || fail "fp32 scales: no reason"

# A plain model (not a checkpoint): all F32.
mkdir -p "$dir/ref_plain"
run "$MPQ_BIN" export "$model" --format safetensors --output "$dir/ref_plain/model.safetensors"
expect_rc 0
gguf plain "$model" "$model" F32
grep -q ' 0 quantized layers dense F32, 47 other tensors dense in their stored float type; general.file_type 0' \
    "$dir/plain.report" || fail "plain: totals"

# Hugging Face layout: q/k permuted from rotate-half, head_dim 32 with
# 4 heads of a 64-wide model, biases, llama3 RoPE scaling (rope_freqs).
run "$mkllama" "$dir/hf" --hidden 64 --intermediate 96 --layers 2 --heads 4 --kv-heads 2 \
    --head-dim 32 --vocab 512 --context 64 --attention-bias --rope-scaling llama3:8:1:4:32
expect_rc 0
quant hf "int:bits=8,sym=true,group=32" -o "model.path=\"$dir/hf\""
gguf hf "$dir/hf.h5" "$dir/hf" Q8_0
grep -q 'rope_freqs.weight' "$dir/hf.report" || fail "hf: no rope_freqs"
grep -q 'blk.1.attn_k.bias' "$dir/hf.report" || fail "hf: no k bias"

# Q6_K (sym int6 in groups of 16, rows of 256): F32 without --lossy, the
# converted sub-scales with it.
run "$mkllama" "$dir/hf256" --hidden 256 --intermediate 512 --layers 1 --heads 4 --kv-heads 2 \
    --vocab 512 --context 64
expect_rc 0
quant q6 "int:bits=6,sym=true,group=16" -o "model.path=\"$dir/hf256\""
run "$MPQ_BIN" export "$dir/q6.h5" --format gguf --output "$dir/q6.gguf" --tokenizer "$tok"
expect_rc 0
expect_out 'blk.0.ffn_down.weight +F32 +dense, exact \(quantized layer: Q6_K would re-express'
gguf q6 "$dir/q6.h5" "$dir/hf256" Q6_K --lossy --overwrite
[ "$(last_json | jq -r .types.Q6_K)" = 7 ] || fail "q6: expected 7 Q6_K tensors"

# Q4_K / Q5_K (--kquants: int4 / int5 in groups of 32, rows of 256, sym or
# asym): F32 without --lossy, with the reason; with it the converted 6-bit
# sub-scales and minimums, every tensor within gguf_check's bound and its
# added error as reported; general.file_type MOSTLY_Q4_K_M 15 / Q5_K_M 17.
# kq NAME SPEC TYPE FTYPE
kq() {
    quant "$1" "$2" -o "model.path=\"$dir/hf256\""
    run "$MPQ_BIN" export "$dir/$1.h5" --format gguf --output "$dir/$1.gguf" --tokenizer "$tok" \
        --kquants
    expect_rc 0
    expect_out "blk.0.ffn_down.weight +F32 +dense, exact \\(quantized layer: $3 would re-express its scales and minimums"
    gguf "$1" "$dir/$1.h5" "$dir/hf256" "$3" --kquants --lossy --overwrite
    [ "$(last_json | jq -r ".types.$3, .lossy, .failures" | tr '\n' ' ')" = "7 7 0 " ] ||
        fail "$1: expected 7 lossy $3 tensors"
    grep -q "general.file_type $4\$" "$dir/$1.report" || fail "$1: file type is not $4"
}
kq ka4 "int:bits=4,sym=false,group=32" Q4_K 15
kq ks4 "int:bits=4,sym=true,group=32" Q4_K 15
kq ka5 "int:bits=5,sym=false,group=32" Q5_K 17
# Without --kquants the same layers stay Q4_0 (exact); with it, rows that
# are not a multiple of 256 (stories260K) keep the 32-weight types: the
# same file as without it.
ln -sfn "$dir/ref_ks4" "$dir/ref_ks4x"
gguf ks4x "$dir/ks4.h5" "$dir/hf256" Q4_0
run "$MPQ_BIN" export "$dir/a4.h5" --format gguf --output "$dir/a4k.gguf" --tokenizer "$tok" \
    --kquants --lossy
expect_rc 0
cmp -s "$dir/a4.gguf" "$dir/a4k.gguf" || fail "--kquants changed a file without rows of 256"
# --kquants is a gguf option (refused on every rank)
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" export "$dir/ka4.h5" --format safetensors \
    --output "$dir/ka4.safetensors" --kquants
expect_rc 2
expect_err "export: --kquants applies to --format gguf only \\(not safetensors\\)"

# A Hugging Face tokenizer (TinyLlama's SentencePiece-style BPE, 32000 ids)
# with a tied model of that vocabulary: no output.weight.
tinyllama="$MPQ_SHARED_DIR/data/tokenizers/tinyllama"
if [ -r "$tinyllama/tokenizer.json" ]; then
    run "$mkllama" "$dir/hf32k" --hidden 64 --intermediate 96 --layers 1 --heads 4 --kv-heads 2 \
        --vocab 32000 --context 64 --tied
    expect_rc 0
    mkdir -p "$dir/ref_hf32k"
    run "$MPQ_BIN" export "$dir/hf32k" --format safetensors --output "$dir/ref_hf32k/model.safetensors"
    expect_rc 0
    tok="$tinyllama" gguf hf32k "$dir/hf32k" "$dir/hf32k" F32
fi
# Phi-3's: special and plain added tokens, ids padded up to 32064.
phi3="$MPQ_SHARED_DIR/data/tokenizers/phi-3-mini"
if [ -r "$phi3/tokenizer.json" ]; then
    run "$mkllama" "$dir/phi" --hidden 64 --intermediate 96 --layers 1 --heads 4 --kv-heads 2 \
        --vocab 32064 --context 64 --tied
    expect_rc 0
    mkdir -p "$dir/ref_phi"
    run "$MPQ_BIN" export "$dir/phi" --format safetensors --output "$dir/ref_phi/model.safetensors"
    expect_rc 0
    tok="$phi3" gguf phi "$dir/phi" "$dir/phi" F32
fi

# Byte-level BPE tokenizers as llama.cpp's "gpt2" vocabulary, each with the
# pre-tokenizer name whose patterns split text as its tokenizer.json does:
# GPT-2 (ByteLevel), SmolLM2 (Digits, ByteLevel), OLMo-2's dolma2 (the
# Llama-3 Split pattern, kept as Removed + invert).
# hfbpe NAME TOKENIZER_DIR VOCAB PRE: a tied model of that vocabulary, exported
hfbpe() {
    local name=$1 tdir=$2 vocab=$3
    [ -r "$tdir/tokenizer.json" ] || return 0
    run "$mkllama" "$dir/$name" --hidden 32 --intermediate 64 --layers 1 --heads 2 --kv-heads 1 \
        --vocab "$vocab" --context 64 --tied
    expect_rc 0
    mkdir -p "$dir/ref_$name"
    run "$MPQ_BIN" export "$dir/$name" --format safetensors --output "$dir/ref_$name/model.safetensors"
    expect_rc 0
    tok="$tdir" pre=$4 gguf "$name" "$dir/$name" "$dir/$name" F32
}
T="$MPQ_SHARED_DIR/data/tokenizers"
hfbpe gpt2 "$T/gpt2" 50257 gpt-2
hfbpe smollm2 "$T/smollm2" 49153 smollm
hfbpe dolma2 "$T/dolma2" 100278 llama-bpe
# A byte-level pre-tokenizer llama.cpp has no name for (ByteLevel adding a
# prefix space): refused, naming it, no file left.
if [ -r "$T/gpt2/tokenizer.json" ]; then
    mkdir -p "$dir/gpt2x"
    "$py" -c 'import json, sys
j = json.load(open(sys.argv[1]))
j["pre_tokenizer"]["add_prefix_space"] = True
json.dump(j, open(sys.argv[2], "w"))' "$T/gpt2/tokenizer.json" "$dir/gpt2x/tokenizer.json" ||
        fail "cannot write gpt2x/tokenizer.json"
    run "$MPQ_BIN" export "$dir/gpt2" --format gguf --output "$dir/gpt2x.gguf" --tokenizer "$dir/gpt2x"
    expect_rc 2
    expect_err "gpt2x/tokenizer.json: gguf export: no llama.cpp pre-tokenizer splits text as pre_tokenizer"
    expect_err '"add_prefix_space":true'
    [ ! -e "$dir/gpt2x.gguf" ] || fail "a refused export left gpt2x.gguf"
fi

# Refusals.
run "$MPQ_BIN" export "$dir/s4.h5" --format gguf --output "$dir/x.gguf"
expect_rc 2
expect_err "pass --tokenizer PATH"
cp "$dir/s4.h5" "$dir/keep.h5"
run "$MPQ_BIN" export "$dir/s4.h5" --format gguf --output "$dir/s4.h5" --tokenizer "$tok" --overwrite
expect_rc 2
expect_err "is the same file as input"
cmp -s "$dir/s4.h5" "$dir/keep.h5" || fail "the input was changed"
cp "$tok" "$dir/tok.bin"
run "$MPQ_BIN" export "$dir/s4.h5" --format gguf --output "$dir/tok.bin" --tokenizer "$dir/tok.bin" \
    --overwrite
expect_rc 2
expect_err "is the same file as input"
run "$MPQ_BIN" export "$dir/s4.h5" --format gguf --output "$dir/s4.gguf" --tokenizer "$tok"
expect_rc 1
expect_err "already exists"
# a plain tensor container (safetensors without config.json) is no Llama
"$py" -c 'import json, struct, sys
h = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"\0" * 8)' "$dir/plain.safetensors" ||
    fail "cannot write plain.safetensors"
run "$MPQ_BIN" export "$dir/plain.safetensors" --format gguf --output "$dir/p.gguf" --tokenizer "$tok"
expect_rc 2
expect_err "gguf export needs a Llama-family model"
finish
