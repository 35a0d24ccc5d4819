#!/bin/bash
# test_run_block_loss.sh: round.loss = "block", the codes of a block's layers
# refined together against the full-precision block's output.
#  (a) stories260K at 2 bits (RTN start, generated evaluation set): the
#      KL divergence from full precision is below the layer loss's; every
#      block's logged block loss ends at or below its start;
#  (b) the same bits on 1 and 2 ranks (the run's figures and the exported
#      weights), also with mini-batch steps (round.block_rows) and with
#      QDrop's mixed inputs (round.input_drop = 0.5), which still end every
#      block at or below its start;
#  (c) mnist-cnn-small at 2 bits per channel: accuracy above the layer
#      loss's (the CNN's backward pass);
#  (d) calibration.propagate = "fp" is refused before loading, naming both
#      keys;
#  (e) round.block_scales = on (the group scales learned too): the same bits
#      on 1 and 2 ranks, every block at or below its start, scales that
#      differ from the layer rounding's in the checkpoint, and `mpquant eval`
#      of that checkpoint gives the run's own KL divergence (the stored
#      scales are the ones the run evaluated);
#  (f) round.loss = network (the KL divergence of the prediction added): the
#      same bits on 1 and 2 ranks, one KL line per block whose divergence
#      ends below its start, every block's loss at or below its start, and
#      round.input_drop refused with it, naming both keys. With
#      round.kl_target = block instead of the default model: block 0's KL
#      line is the same (its input is the embedding in both models, so both
#      targets are the same), and every later block starts at a lower KL
#      (the model's target also counts the earlier blocks' error);
#  (g) round.block_descent = on (judged steps) on mnist-cnn-small at 3 bits:
#      one descent line per block, every block at or below its start and
#      one strictly below, the same bits on 1 and 2 ranks; refused before
#      loading with a window smaller than the calibration set and with
#      round.loss = "layer".
#  (h) round.block_momentum = 0.5 with the mini-batch steps of (b): other
#      codes than (b)'s, every block at or below its start, the same bits on
#      1 and 2 ranks (the running averages are the same on every rank); with
#      round.block_scales = on too, the same on 1 and 2 ranks; refused with
#      round.block_descent = on before loading, naming both keys.
# Under the sanitizers (MPQ_TEST_SANITIZED=1) the 1-rank runs, which only
# repeat the 2-rank ones for the rank-count identity, are skipped.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
need_shared data/mnist/t10k-images-idx3-ubyte

# no_block_above_start WHAT: the last run's log has no block whose loss
# ended above its start
no_block_above_start() {
    local bad
    bad=$(grep -o 'block loss [^ ]* -> [^ ]*' "$ERR" | awk '$5 > $3 { print }')
    [ -z "$bad" ] || fail "$1: a block ended above its start: $bad"
}

# one_rank_same WHAT FIGURES ARGS...: a 1-rank run of ARGS gives the
# 2-rank run's FIGURES (.quantized), skipped under the sanitizers
one_rank_same() {
    local what=$1 want=$2
    shift 2
    [ "$sanitized" != 1 ] || return 0
    run $MPQ_MPIEXEC -n 1 "$MPQ_BIN" "$@"
    expect_rc 0
    [ "$(last_json | jq -c '.quantized')" = "$want" ] || fail "$what: 1 and 2 ranks differ"
}
need_jq
make_work_dir
lm=(run "$MPQ_SOURCE_DIR/configs/stories260K-w2.cfg" --json -o quant.method=rtn
    -o round.rtn_loss=true -o calibration.segments=4 -o calibration.seq_len=64
    -o round.block_iters=20 -o eval.protocol=generated -o eval.docs=6 -o eval.window=48)

# ---- (a) ----
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o round.loss=layer
expect_rc 0
kl_layer=$(last_json | jq -r .quantized.kld)
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o round.loss=block -o output.path="$dir/b2.h5"
expect_rc 0
kl_block=$(last_json | jq -r .quantized.kld)
two=$(last_json | jq -c '.quantized')
awk -v b="$kl_block" -v l="$kl_layer" 'BEGIN { exit !(b > 0 && b < l) }' ||
    fail "KL divergence with the block loss ($kl_block) is not below the layer loss's ($kl_layer)"
n=$(grep -c 'block [0-9]*: block loss [0-9.e+-]* -> ' "$ERR")
[ "$n" -eq 5 ] || fail "$n block-loss lines, expected 5 (one per block)"
no_block_above_start "block"

# ---- (b) ----
# Under the sanitizers (MPQ_TEST_SANITIZED=1) the 1-rank runs of (b), (e)
# and (f) are left to the release pass: they only repeat the 2-rank runs.
sanitized=${MPQ_TEST_SANITIZED:-0}
if [ "$sanitized" != 1 ]; then
    run $MPQ_MPIEXEC -n 1 "$MPQ_BIN" "${lm[@]}" -o round.loss=block -o output.path="$dir/b1.h5"
    expect_rc 0
    [ "$(last_json | jq -c '.quantized')" = "$two" ] || fail "1 and 2 ranks give different figures"
    mkdir -p "$dir/e1" "$dir/e2"
    "$MPQ_BIN" export "$dir/b1.h5" --format safetensors --output "$dir/e1/model.safetensors" \
        >/dev/null &&
        "$MPQ_BIN" export "$dir/b2.h5" --format safetensors --output "$dir/e2/model.safetensors" \
            >/dev/null || fail "export failed"
    cmp -s "$dir/e1/model.safetensors" "$dir/e2/model.safetensors" ||
        fail "1 and 2 ranks give different weights"
fi
# mini-batch steps (one 64-token sample of the four per step; the loss on
# all four measured at steps 0, 5, 10, 15, 20): 2 and 1 ranks, same bits
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o round.loss=block -o round.block_rows=64
expect_rc 0
mb2=$(last_json | jq -c '.quantized')
grep -q 'block 0: block loss .*, 20 steps of 1 of 4 samples, loss measured 5 times' "$ERR" ||
    fail "the mini-batch run does not log 20 steps of 1 of 4 samples, loss measured 5 times"
no_block_above_start "mini-batch"
[ "$mb2" != "$two" ] || fail "block_rows = 64 changed nothing"
one_rank_same "mini-batch" "$mb2" "${lm[@]}" -o round.loss=block -o round.block_rows=64
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o round.loss=block -o round.input_drop=0.5
expect_rc 0
drop2=$(last_json | jq -c '.quantized')
[ "$drop2" != "$two" ] || fail "input_drop = 0.5 changed nothing"
no_block_above_start "input_drop"
one_rank_same "input_drop" "$drop2" "${lm[@]}" -o round.loss=block -o round.input_drop=0.5

# ---- (c) ----
cnn=(run "$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w2.cfg" --json -o quant.method=rtn
    -o round.rtn_loss=true -o calibration.segments=128 -o round.block_iters=40 -o eval.count=1000
    -o eval.also_all=false)
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${cnn[@]}" -o round.loss=layer
expect_rc 0
acc_layer=$(last_json | jq -r .quantized.accuracy)
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${cnn[@]}" -o round.loss=block
expect_rc 0
acc_block=$(last_json | jq -r .quantized.accuracy)
awk -v b="$acc_block" -v l="$acc_layer" 'BEGIN { exit !(b > l) }' ||
    fail "accuracy with the block loss ($acc_block) is not above the layer loss's ($acc_layer)"

# ---- (d) ----
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$MPQ_SOURCE_DIR/configs/stories260K-w2.cfg" \
    -o round.loss=block -o calibration.propagate=fp
expect_rc 1
expect_err 'round.loss = "block" needs calibration.propagate = "quantized"'
grep -q '^model ' "$ERR" && fail "the model was loaded before the refusal"
# ---- (e) ----
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o round.loss=block -o round.block_scales=on \
    -o output.path="$dir/s2.h5"
expect_rc 0
sc2=$(last_json | jq -c '.quantized')
no_block_above_start "block_scales"
[ "$sc2" != "$two" ] || fail "block_scales = on changed nothing"
one_rank_same "block_scales" "$sc2" "${lm[@]}" -o round.loss=block -o round.block_scales=on
kl_scales=$(jq -r .kld <<<"$sc2")
params() { h5dump -d "/layers/$1/params" "$2" | grep -v "^HDF5" | md5sum; }
w=model.layers.1.mlp.down_proj.weight
[ "$(params "$w" "$dir/s2.h5")" != "$(params "$w" "$dir/b2.h5")" ] ||
    fail "block_scales: the stored scales of $w are the layer rounding's"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval --model "$dir/s2.h5" \
    --tokenizer "$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin" \
    --reference "$MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin" --protocol generated \
    --docs 6 --window 48 --json -q
expect_rc 0
[ "$(last_json | jq -r .kld)" = "$kl_scales" ] ||
    fail "block_scales: eval of the checkpoint gives KLD $(last_json | jq -r .kld), the run $kl_scales"

# ---- (f) ----
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o round.loss=network
expect_rc 0
net2=$(last_json | jq -c '.quantized')
kl_lines() { grep -o 'block [0-9]*: network loss: KL divergence of the prediction [^ ]* -> [^ ]*' "$ERR"; }
model_kl=$(kl_lines)
n=$(grep -c 'block [0-9]*: network loss: KL divergence of the prediction' "$ERR")
[ "$n" -eq 5 ] || fail "network: $n KL lines, expected 5"
bad=$(grep -o 'prediction [^ ]* -> [^ ]*' "$ERR" | awk '!($4 < $2) { print }')
[ -z "$bad" ] || fail "network: a block's KL did not fall: $bad"
no_block_above_start "network"
one_rank_same "network" "$net2" "${lm[@]}" -o round.loss=network
kl_net=$(jq -r .kld <<<"$net2")
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o round.loss=network -o round.kl_target=block
expect_rc 0
block_kl=$(kl_lines)
[ "$(head -n 1 <<<"$model_kl")" = "$(head -n 1 <<<"$block_kl")" ] ||
    fail "kl_target: block 0 differs between the targets: $(head -n 1 <<<"$model_kl") / $(head -n 1 <<<"$block_kl")"
bad=$(paste -d ' ' <(tail -n +2 <<<"$model_kl") <(tail -n +2 <<<"$block_kl") |
    awk '{ if (!($10 > $22)) print }')
[ -z "$bad" ] || fail "kl_target: a later block's start KL is not above the block target's: $bad"
kl_netb=$(last_json | jq -r .quantized.kld)
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o round.loss=network -o round.input_drop=0.5
expect_rc 1
expect_err 'round.loss = "network" takes no round.input_drop'

# ---- (g) ----
desc=(run "$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w3.cfg" --json -o round.loss=block
    -o round.block_descent=on -o calibration.segments=256 -o round.iters=100 -o eval.count=1000
    -o eval.also_all=false)
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${desc[@]}"
expect_rc 0
desc2=$(last_json | jq -c '.quantized')
n=$(grep -c 'block [0-9]*: descent: [0-9]* steps undone' "$ERR")
[ "$n" -eq 3 ] || fail "block_descent: $n descent lines, expected 3"
no_block_above_start "block_descent"
lower=$(grep -o 'block loss [^ ]* -> [^ ]*' "$ERR" | awk '$5 < $3 { print }' | wc -l)
[ "$lower" -ge 1 ] || fail "block_descent: no block's loss fell"
one_rank_same "block_descent" "$desc2" "${desc[@]}"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${desc[@]}" -o round.block_rows=100
expect_rc 1
expect_err 'round.block_descent = "on" needs every step to see every calibration sample'
grep -q '^model ' "$ERR" && fail "block_descent: the model was loaded before the refusal"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${desc[@]}" -o round.loss=layer
expect_rc 1
expect_err 'round.block_descent = "on" needs round.loss = "block" or "network"'

# ---- (h) ----
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o round.loss=block -o round.block_rows=64 \
    -o round.block_momentum=0.5
expect_rc 0
mom2=$(last_json | jq -c '.quantized')
[ "$mom2" != "$mb2" ] || fail "block_momentum = 0.5 changed nothing"
no_block_above_start "block_momentum"
one_rank_same "block_momentum" "$mom2" "${lm[@]}" -o round.loss=block -o round.block_rows=64 \
    -o round.block_momentum=0.5
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${lm[@]}" -o round.loss=network -o round.block_rows=64 \
    -o round.block_momentum=0.5 -o round.block_scales=on
expect_rc 0
moms2=$(last_json | jq -c '.quantized')
no_block_above_start "block_momentum with scales"
one_rank_same "block_momentum with scales" "$moms2" "${lm[@]}" -o round.loss=network \
    -o round.block_rows=64 -o round.block_momentum=0.5 -o round.block_scales=on
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${desc[@]}" -o round.block_momentum=0.5
expect_rc 1
expect_err 'round.block_descent = "on" judges each step by its own gradient: it takes no round.block_momentum'
grep -q '^model ' "$ERR" && fail "block_momentum: the model was loaded before the refusal"

echo "block loss: KLD $kl_layer -> $kl_block (stories260K, 2 bits, RTN start), $kl_scales with scales, $kl_net network ($kl_netb against the block's prediction);" \
    "$(jq -r .kld <<<"$mom2") with momentum 0.5 on mini-batches ($(jq -r .kld <<<"$mb2") without);" \
    "accuracy $acc_layer -> $acc_block (mnist-cnn-small, 2 bits); descent: KLD $(jq -r .kld <<<"$desc2") (mnist-cnn-small, 3 bits)"
finish
