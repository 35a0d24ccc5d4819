#!/bin/bash
# test_study.sh: configs/study-stories260K.sh at its reduced size, on the
# loss and data axes at 2 bits with two calibration seeds (the network
# rows once but for the network loss's main row): one CSV line per run, the
# table with the seeds' spread on the main rows, the plot; and three points
# of the table (a main row, and two data rows whose segments (4x) and steps
# (2x) the script scales, one of them a main row with momentum at its second
# seed) equal `mpquant run` with the same keys, run here on their own.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_jq
make_work_dir
export MPQ_BIN MPQ_MPIEXEC
run "$MPQ_SOURCE_DIR/configs/study-stories260K.sh" "$dir/s" --quick --bits 2 \
    --seeds "1234 1235" --axes "loss data"
expect_rc 0
csv="$dir/s/study.csv"
[ "$(($(wc -l <"$csv") - 1))" = 15 ] ||
    fail "expected 15 runs (5 main rows x 2 seeds, 5 network rows once), got $(($(wc -l <"$csv") - 1))"
for r in '"gptq"' '"gptq + block loss"' '"signround"' '"signround + block loss"'; do
    [ "$(grep -c "^$r,\"loss\",2," "$csv")" = 2 ] || fail "row $r: not 2 seeds in the CSV"
done
r='"gptq + network loss, scales too, momentum 0.5, 4x the segments, 2x the steps"'
[ "$(grep -c "^$r,\"data\",2," "$csv")" = 2 ] || fail "row $r: not 2 seeds in the CSV"
md="$dir/s/study.md"
[ "$(grep -c '^| ' "$md")" = 11 ] || fail "the table does not have a header and 10 rows"
[ "$(grep -c '^"gptq + network loss' "$csv")" = 7 ] || fail "the network rows are not in the CSV"
grep -q '^| gptq + block loss | loss | [0-9.]* ±[0-9.]* |' "$md" ||
    fail "the table lacks the seeds' spread on 'gptq + block loss'"
if command -v gnuplot >/dev/null; then
    [ -s "$dir/s/study.png" ] || fail "no plot"
fi
# own ROW AXIS SEED SEGMENTS BLOCK_ITERS KEYS...: the row's point from
# mpquant run on its own, with the quick size's 4 segments and 10 steps
# written out.
own() {
    local r=$1 axis=$2 seed=$3 segs=$4 iters=$5
    shift 5
    local a=()
    for k in "$@"; do a+=(-o "$k"); done
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$MPQ_SOURCE_DIR/configs/stories260K-w2.cfg" --json -q \
        -o calibration.segments="$segs" -o calibration.seq_len=64 -o round.iters=10 \
        -o round.block_iters="$iters" -o eval.docs=20 -o calibration.seed="$seed" \
        -o output.path="$dir/own.h5" -o output.overwrite=true -o quant.spec=int:bits=2,sym=false,group=32,fit=search \
        "${a[@]}"
    expect_rc 0
    local mine row
    mine=$(last_json | jq -r '[.quantized.kld, .quantized.top1_agreement, .quantized.ppl] | @csv')
    # KL, top-1 and perplexity: the 7th to 5th fields from the end (names hold commas)
    row=$(grep "^\"$r\",\"$axis\",2,$seed," "$csv" | awk -F, '{print $(NF-6) "," $(NF-5) "," $(NF-4)}')
    if [ -z "$row" ] || [ "$row" != "$mine" ]; then
        fail "study row '$r' ($row) differs from the run on its own ($mine)"
    fi
}
own "gptq + block loss" loss 1235 4 10 quant.method=gptq round.loss=block
own "gptq + network loss, scales too, 4x the segments, 2x the steps" data 1234 16 20 \
    quant.method=gptq round.loss=network round.block_scales=on
own "gptq + network loss, scales too, momentum 0.5, 4x the segments, 2x the steps" data 1235 16 20 \
    quant.method=gptq round.loss=network round.block_scales=on round.block_momentum=0.5
finish
