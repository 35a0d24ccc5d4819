#!/bin/bash
# test_run_exports.sh: one `mpquant run` job goes from a model to its
# exports (output.exports), and a Hugging Face directory brings its own
# tokenizer.
#  (a) stories260K, RTN: output.exports = [safetensors, llama2c] writes the
#      same bytes as `mpquant export` of the run's checkpoint.
#  (b) bad entries (unknown format, no "FORMAT:" part, exports without
#      output.path, an existing destination without output.overwrite, a
#      destination equal to an input) are refused before the model is
#      loaded, naming output.exports, with no checkpoint left behind.
#  (c) a generated Hugging Face Llama directory holding TinyLlama's
#      tokenizer.json, with model.tokenizer = "": the run calibrates on text
#      and evaluates with that tokenizer (the provenance lists it); the same
#      directory without tokenizer.json is refused naming model.tokenizer.
# Usage: test_run_exports.sh MKLLAMA
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_shared data/tokenizers/tinyllama/tokenizer.json
need_shared data/text/tinyshakespeare.txt
command -v h5dump >/dev/null || { echo "FAILED: h5dump missing (Debian package hdf5-tools)"; exit 1; }
make_work_dir
mkllama=$1
cfg="$MPQ_SOURCE_DIR/configs/stories260K-w4.cfg"
fast=(-q -o quant.method=rtn -o eval.enabled=false -o calibration.segments=1
    -o calibration.seq_len=16)

# ---- (a) ----
mkdir -p "$dir/st"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${fast[@]}" -o output.path="$dir/q.h5" \
    -o "output.exports=[\"safetensors:$dir/st/model.safetensors\", \"llama2c:$dir/q.bin\"]"
expect_rc 0
mkdir -p "$dir/ref"
run "$MPQ_BIN" export "$dir/q.h5" --format safetensors --output "$dir/ref/model.safetensors"
expect_rc 0
run "$MPQ_BIN" export "$dir/q.h5" --format llama2c --output "$dir/ref.bin"
expect_rc 0
for f in model.safetensors config.json; do
    cmp -s "$dir/st/$f" "$dir/ref/$f" || fail "output.exports' $f differs from mpquant export's"
done
cmp -s "$dir/q.bin" "$dir/ref.bin" || fail "output.exports' llama2.c file differs from mpquant export's"

# ---- (b) ----
refused() { # refused PATTERN: exit 1, the message, nothing loaded, no checkpoint
    expect_rc 1
    expect_err "$1"
    grep -q '^model ' "$ERR" && fail "the model was loaded before the refusal"
    [ -e "$dir/b.h5" ] && fail "a checkpoint was written"
}
bad() { run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" -o quant.method=rtn -o eval.enabled=false "$@"; }
bad -o output.path="$dir/b.h5" -o 'output.exports=["onnx:x.onnx"]'
refused "output.exports\[0\]: \"onnx:x.onnx\": unknown export format 'onnx' \(formats: safetensors, llama2c"
bad -o output.path="$dir/b.h5" -o "output.exports=[\"llama2c:$dir/a.bin\", \"$dir/x.bin\"]"
refused "output.exports\[1\]: \"$dir/x.bin\" is not FORMAT:PATH"
bad -o "output.exports=[\"llama2c:$dir/a.bin\"]"
refused "output.exports\[0\]: \"llama2c:$dir/a.bin\" needs output.path"
bad -o output.path="$dir/b.h5" -o "output.exports=[\"llama2c:$dir/q.bin\"]"
refused "$dir/q.bin.*exists"
cmp -s "$dir/q.bin" "$dir/ref.bin" || fail "a refused run changed an existing export"
bad -o output.path="$dir/b.h5" -o output.overwrite=true \
    -o "output.exports=[\"llama2c:$MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin\"]"
refused "output.exports: .* is the same file as model.path"

# ---- (c) ----
hf="$dir/hf"
"$mkllama" "$hf" --hidden 64 --intermediate 128 --layers 2 --heads 4 --vocab 32000 \
    --context 128 >/dev/null || fail "mkllama failed"
cp "$MPQ_SHARED_DIR/data/tokenizers/tinyllama/"tokenizer*.json "$hf/"
text="$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt"
hfrun=(-o model.path="$hf" -o model.tokenizer='""' -o quant.method=rtn -o calibration.source=text
    -o calibration.text="$text" -o calibration.segments=2 -o calibration.seq_len=32
    -o eval.text="$text" -o eval.docs=2 -o eval.protocol=windows -o eval.window=64)
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${hfrun[@]}" -o output.path="$dir/hf.h5" --json
expect_rc 0
ppl=$(last_json | jq -r '.quantized.ppl' 2>/dev/null)
case "$ppl" in [0-9]*) ;; *) fail "no quantized perplexity in the run's JSON ($ppl)" ;; esac
h5dump -d /provenance/inputs -b -o "$dir/inputs.txt" "$dir/hf.h5" >/dev/null
grep -q "$hf/tokenizer.json" "$dir/inputs.txt" || fail "the provenance does not list the tokenizer"
rm "$hf/tokenizer.json"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${hfrun[@]}" -o output.path="$dir/hf2.h5"
expect_rc 1
expect_err "model.tokenizer: a language model needs a tokenizer"
finish
