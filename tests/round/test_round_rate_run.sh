#!/bin/bash
# test_round_rate_run.sh: rate-aware GPTQ (round.rate_lambda) end to end on
# stories260K: every layer's code_entropy and the total entropy_bits are in
# the run's --json, fewer bits with lambda 2 than 0 and the same at 1 and 2
# ranks (tiles of 16 rows spread a layer over both); a learned method or the
# block loss with a positive lambda is refused on every rank, naming the
# keys, with no checkpoint written.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
model=data/models/stories260K/stories260K.bin
tok=data/models/stories260K/tok512.bin
text=data/text/tinyshakespeare.txt
need_shared "$model"
need_shared "$tok"
need_shared "$text"
need_jq
S="$MPQ_SHARED_DIR"
make_work_dir
cat >"$dir/q.cfg" <<CFG
model = { path = "$S/$model"; tokenizer = "$S/$tok"; };
calibration = { source = "random"; segments = 8; seq_len = 32; };
quant = { spec = "int:bits=2,sym=false,group=32"; method = "gptq"; };
round = { tile_rows = 16; };
eval = { text = "$S/$text"; docs = 2; };
CFG
bits() { # lambda ranks -> entropy_bits
    run $MPQ_MPIEXEC -n "$2" "$MPQ_BIN" run "$dir/q.cfg" --json -q -o "round.rate_lambda=$1"
    expect_rc 0
    last_json | jq -e '[.. | objects | select(has("code_bits")) | .code_entropy
                        | select(type == "number" and . > 0 and . <= 2)] | length == 35' \
        >/dev/null || fail "lambda $1 at $2 ranks: a layer without code_entropy in (0, 2]"
    last_json | jq -r '.. | objects | select(has("entropy_bits")) | .entropy_bits'
}
b0=$(bits 0 1)
b2=$(bits 2 1)
b2p=$(bits 2 2)
echo "entropy_bits: lambda 0: $b0, lambda 2: $b2 (1 rank), $b2p (2 ranks)"
[ -n "$b0" ] && [ -n "$b2" ] || fail "no entropy_bits in the --json line"
awk -v a="$b2" -v b="$b0" 'BEGIN { exit !(a < 0.99 * b) }' || fail "lambda 2 did not lower the bits"
[ "$b2" = "$b2p" ] || fail "entropy_bits differ at 1 and 2 ranks: $b2 vs $b2p"

for bad in "quant.method=adaround" "quant.method=signround" "round.loss=block"; do
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/q.cfg" -q -o round.rate_lambda=1 -o "$bad" \
        -o "output.path=$dir/out.h5"
    [ "$RC" -ne 0 ] || fail "$bad with round.rate_lambda = 1 accepted"
    expect_err "q.cfg: round.rate_lambda = 1 needs (quant.method = gptq|round.loss = \"layer\")"
    [ ! -e "$dir/out.h5" ] || fail "$bad: a checkpoint was written"
done
finish
