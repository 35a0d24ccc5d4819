#!/bin/bash
# test_run_scale.sh MKLLAMA: memory per rank does not grow with depth. Two
# random-weight Hugging Face Llama directories of the same width (hidden
# 512, intermediate 1408, BF16) with 2 and 8 layers go through `mpquant
# run` (GPTQ int4 g128, random calibration, 2 ranks, a checkpoint): the
# peak RSS per rank of the 8-layer run is at most 1.1 x that of the
# 2-layer run (finished blocks leave memory: their codes go to the partial
# checkpoint, their weights leave the working model, the evaluation brings
# one block back at a time and the model's converted pages are dropped).
# Without the bound the 8-layer run needs about 6 bytes per weight more,
# 1.6 x. Both checkpoints hold every layer.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_jq
need_shared data/models/stories260K/tok512.bin
need_shared data/text/tinyshakespeare.txt
mkllama=${1:?usage: test_run_scale.sh MKLLAMA}
make_work_dir
declare -A rss
for layers in 2 8; do
    run "$mkllama" "$dir/m$layers" --layers "$layers" --hidden 512 --intermediate 1408 --vocab 512 \
        --context 256
    expect_rc 0
    cat >"$dir/m$layers.cfg" <<CFG
model = { path = "$dir/m$layers"; tokenizer = "$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin"; };
calibration = { source = "random"; segments = 16; seq_len = 256; };
quant = { spec = "int:bits=4,group=128"; method = "gptq"; };
eval = { text = "$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt"; docs = 4; };
output = { path = "$dir/m$layers.h5"; };
CFG
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/m$layers.cfg" --json -q
    expect_rc 0
    rss[$layers]=$(last_json | jq '.peak_rss_mib.max')
    n=$(last_json | jq '[.layers[] | select(.spec != "fp")] | length')
    [ "$n" -eq $((7 * layers)) ] || fail "$layers layers: $n quantized layers, expected $((7 * layers))"
    [ -f "$dir/m$layers.h5" ] && [ ! -e "$dir/m$layers.h5.partial" ] ||
        fail "$layers layers: no checkpoint, or the partial checkpoint remains"
    rm -rf "$dir/m$layers"
done
echo "peak RSS per rank: 2 layers ${rss[2]} MiB, 8 layers ${rss[8]} MiB"
awk -v a="${rss[2]}" -v b="${rss[8]}" 'BEGIN { exit !(b <= 1.1 * a) }' ||
    fail "peak RSS per rank grows with depth: ${rss[8]} MiB for 8 layers > 1.1 x ${rss[2]} MiB for 2"
finish
