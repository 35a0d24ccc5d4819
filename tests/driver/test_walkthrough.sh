#!/bin/bash
# test_walkthrough.sh: the README's walk-through ("Quantize your own model")
# on a generated Hugging Face Llama directory that holds TinyLlama's
# tokenizer.json: one `mpquant run` of the README's configuration (only the
# model path and sizes for speed changed) calibrates with the directory's
# tokenizer, writes the checkpoint and, in the same job, its GPTQ and GGUF
# exports. Every quantized layer maps exactly (GPTQ modules, Q4_0 blocks);
# `mpquant eval` of each export gives the checkpoint's figures (GPTQ: bit
# for bit; GGUF, whose q/k rows are in interleaved order so that attention
# sums in another order: within 1e-6 relative), and the sizes are printed.
# Usage: test_walkthrough.sh MKLLAMA
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/tokenizers/tinyllama/tokenizer.json
need_shared data/text/wikitext2-valid.txt
need_shared data/text/tinyshakespeare.txt
need_jq
make_work_dir
cd "$dir" || exit 1
"$1" my-llama --hidden 256 --intermediate 768 --layers 2 --heads 4 --kv-heads 2 --vocab 32000 \
    --context 256 >/dev/null || fail "mkllama failed"
cp "$MPQ_SHARED_DIR/data/tokenizers/tinyllama/"tokenizer*.json my-llama/
cat >my-llama.cfg <<CFG
model = {
  path = "my-llama";
  tokenizer = "";
};
calibration = {
  text = "$MPQ_SHARED_DIR/data/text/wikitext2-valid.txt";
  segments = 8;
  seq_len = 64;
};
quant = {
  method = "gptq";
  spec = "int:bits=4,sym=true,group=32";
};
eval = {
  text = "$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt";
  docs = 8;
};
output = {
  path = "out/my-llama-w4.mpq.h5";
  exports = ["gptq:out/gptq/model.safetensors", "gguf:out/my-llama-w4.gguf"];
};
CFG
mkdir -p out/gptq
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run my-llama.cfg --json
expect_rc 0
for f in out/my-llama-w4.mpq.h5 out/gptq/model.safetensors out/gptq/config.json out/my-llama-w4.gguf; do
    [ -s "$f" ] || fail "the job did not write $f"
done
expect_out "gguf: out/my-llama-w4.gguf: 21 tensors, 14 quantized layers as blocks bit-exact, 0 converted"
jq -e '.quantization_config.quant_method == "gptq" and .quantization_config.bits == 4 and
    .quantization_config.group_size == 32 and .quantization_config.sym == true' \
    out/gptq/config.json >/dev/null || fail "config.json lacks the expected quantization_config"

fig() { # fig MODEL: the evaluation's figures as JSON
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval --model "$1" --tokenizer my-llama \
        --text "$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt" --docs 8 --json
    expect_rc 0
    last_json | jq -c '{docs, predictions, mean_nll, ppl}'
}
ck=$(fig out/my-llama-w4.mpq.h5)
gq=$(fig out/gptq)
gg=$(fig out/my-llama-w4.gguf)
[ "$gq" = "$ck" ] || fail "GPTQ export: $gq, checkpoint: $ck"
jq -n --argjson a "$gg" --argjson b "$ck" -e \
    '($a.predictions == $b.predictions) and
     ((($a.mean_nll - $b.mean_nll) | fabs) <= 1e-6 * $b.mean_nll)' >/dev/null ||
    fail "GGUF export: $gg, checkpoint: $ck"
# every quantized layer exported quantized: 14 GPTQ modules, 14 Q4_0 tensors
n=$(head -c 65536 out/gptq/model.safetensors | grep -a -o '"[^"]*\.qweight"' | sort -u | wc -l)
[ "$n" -eq 14 ] || fail "$n GPTQ modules, expected 14"
sizes=$(stat -c '%n %s' out/my-llama-w4.mpq.h5 out/gptq/model.safetensors out/my-llama-w4.gguf |
    tr '\n' ' ')
echo "walk-through: checkpoint $ck; sizes: $sizes"
finish
