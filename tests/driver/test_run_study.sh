#!/bin/bash
# test_study.sh: configs/study-stories260K.sh at its reduced size, on the
# loss axis at 2 bits with two calibration seeds (the network rows once):
# one CSV line per run, the
# table with the seeds' spread on the main rows, the plot; and a point of
# the table equals `mpquant run` with the same keys, run here on its own.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_jq
make_work_dir
export MPQ_BIN MPQ_MPIEXEC
run "$MPQ_SOURCE_DIR/configs/study-stories260K.sh" "$dir/s" --quick --bits 2 \
    --seeds "1234 1235" --axes loss
expect_rc 0
csv="$dir/s/study.csv"
[ "$(($(wc -l <"$csv") - 1))" = 11 ] ||
    fail "expected 11 runs (4 main rows x 2 seeds, 3 network rows once), got $(($(wc -l <"$csv") - 1))"
for r in '"gptq"' '"gptq + block loss"' '"signround"' '"signround + block loss"'; do
    [ "$(grep -c "^$r,\"loss\",2," "$csv")" = 2 ] || fail "row $r: not 2 seeds in the CSV"
done
md="$dir/s/study.md"
[ "$(grep -c '^| ' "$md")" = 8 ] || fail "the table does not have a header and 7 rows"
[ "$(grep -c '^"gptq + network loss' "$csv")" = 3 ] || fail "the network rows are not in the CSV"
grep -q '^| gptq + block loss | loss | [0-9.]* ±[0-9.]* |' "$md" ||
    fail "the table lacks the seeds' spread on 'gptq + block loss'"
if command -v gnuplot >/dev/null; then
    [ -s "$dir/s/study.png" ] || fail "no plot"
fi
# The point (gptq + block loss, seed 1235) from mpquant run on its own.
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$MPQ_SOURCE_DIR/configs/stories260K-w2.cfg" --json -q \
    -o calibration.segments=4 -o calibration.seq_len=64 -o round.iters=10 \
    -o round.block_iters=10 -o eval.docs=20 -o calibration.seed=1235 \
    -o output.path="$dir/own.h5" -o quant.spec=int:bits=2,sym=false,group=32,fit=search \
    -o quant.method=gptq -o round.loss=block
expect_rc 0
own=$(last_json | jq -r '[.quantized.kld, .quantized.top1_agreement, .quantized.ppl] | @csv')
row=$(grep '^"gptq + block loss","loss",2,1235,' "$csv" | cut -d, -f5-7)
[ "$row" = "$own" ] || fail "study row ($row) differs from the run on its own ($own)"
finish
