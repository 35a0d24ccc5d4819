#!/bin/bash
# test_eval_generated.sh: the generated evaluation protocol (stories260K):
# sequences sampled from the full-precision model itself, an evaluation set
# in the model's training domain (TinyStories) without any text.
#  (a) the figures are the same bits on 1 and 2 ranks; the same seed gives
#      the same set, another seed another one;
#  (b) in-domain: full-precision perplexity on its own samples is far below
#      its perplexity on the Shakespeare documents;
#  (c) `mpquant run` with eval.protocol = generated evaluates the full-
#      precision model on exactly the set `mpquant eval` makes (same figures,
#      bit for bit), reports the protocol, and a 2-bit model has a positive
#      KL divergence, larger than a 4-bit model's;
#  (d) eval.docs = 0 and an eval.seed equal to the generated calibration's
#      seed are refused before loading, naming the key.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_shared data/text/tinyshakespeare.txt
need_jq
S="$MPQ_SHARED_DIR/data/models/stories260K"
cfg="$MPQ_SOURCE_DIR/configs/stories260K-w4.cfg"
ev=(eval --model "$S/stories260K.bin" --tokenizer "$S/tok512.bin" --protocol generated --docs 6
    --window 48 --json)
fig() { last_json | jq -c '[.docs, .predictions, .mean_nll, .ppl]' 2>/dev/null; }

# ---- (a) ----
run $MPQ_MPIEXEC -n 1 "$MPQ_BIN" "${ev[@]}"
expect_rc 0
one=$(fig)
[ "$(last_json | jq -r .protocol)" = generated ] || fail "protocol is not reported as generated"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${ev[@]}"
expect_rc 0
two=$(fig)
[ -n "$one" ] && [ "$one" = "$two" ] || fail "1 and 2 ranks differ: $one vs $two"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" "${ev[@]}" --seed 99
expect_rc 0
[ "$(fig)" != "$one" ] || fail "another seed gave the same set"
gen_ppl=$(jq -r '.[3]' <<<"$one")

# ---- (b) ----
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval --model "$S/stories260K.bin" --tokenizer "$S/tok512.bin" \
    --text "$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt" --docs 20 --json
expect_rc 0
txt_ppl=$(last_json | jq -r .ppl)
awk -v g="$gen_ppl" -v t="$txt_ppl" 'BEGIN { exit !(g > 1 && g * 10 < t) }' ||
    fail "perplexity on its own samples ($gen_ppl) is not far below Shakespeare's ($txt_ppl)"

# ---- (c) ----
q=(-q --json -o quant.method=rtn -o calibration.segments=2 -o calibration.seq_len=32
    -o eval.protocol=generated -o eval.docs=6 -o eval.window=48)
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${q[@]}" -o 'quant.spec="int:bits=2,group=32"'
expect_rc 0
[ "$(last_json | jq -c '[.fp.docs, .fp.predictions, .fp.mean_nll, .fp.ppl]')" = "$one" ] ||
    fail "the run's full-precision figures differ from mpquant eval's on the same set"
[ "$(last_json | jq -r .quantized.protocol)" = generated ] || fail "the run does not report the protocol"
kld2=$(last_json | jq -r .quantized.kld)
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${q[@]}" -o 'quant.spec="int:bits=4,group=32"'
expect_rc 0
kld4=$(last_json | jq -r .quantized.kld)
awk -v a="$kld2" -v b="$kld4" 'BEGIN { exit !(b > 0 && a > b) }' ||
    fail "KL divergence: 2 bits $kld2, 4 bits $kld4 (expected 2 bits > 4 bits > 0)"

# ---- (d) ----
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" -q -o eval.protocol=generated -o eval.docs=0
expect_rc 1
expect_err "eval.docs: the generated protocol needs a number of sequences"
grep -q '^model ' "$ERR" && fail "the model was loaded before the refusal"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" -q -o eval.protocol=generated \
    -o calibration.source=generated -o calibration.seed=5 -o eval.seed=5
expect_rc 1
expect_err "eval.seed 5 equals calibration.seed with generated calibration"
finish
