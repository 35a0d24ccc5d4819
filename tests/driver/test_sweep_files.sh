#!/bin/bash
# test_sweep_files.sh: `mpquant sweep` never writes over an input, as
# `mpquant run` does not (label driver). Every file a sweep writes under
# sweep.output_dir (measure.h5, points/*.json, report.*) is checked against
# every input the configuration names before any work, at every stage that
# writes:
#   1. eval.text is OUT/report.md (a copy of the text): the single job at 2
#      ranks is refused naming sweep.output_dir, the file and eval.text;
#   2. OUT/points/point-0001.json is a hard link to the tokenizer (a copy):
#      --stage measure and --stage point are refused naming model.tokenizer;
#   3. OUT/report.csv is a symbolic link to the configuration file:
#      --stage merge is refused naming the configuration file;
#   4. --stage plan writes nothing and still answers;
# and every input is unchanged (SHA-256), no point or report was written.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
. "$MPQ_SOURCE_DIR/tests/driver/sweep_cfg.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_shared data/text/wikitext2-valid.txt
need_shared data/text/tinyshakespeare.txt
make_work_dir
MPI=$MPQ_MPIEXEC
S=$MPQ_SHARED_DIR
out="$dir/out"
mkdir -p "$out/points"
cp "$S/data/text/tinyshakespeare.txt" "$out/report.md"
cp "$S/data/models/stories260K/tok512.bin" "$dir/tok.bin"
ln "$dir/tok.bin" "$out/points/point-0001.json"
lm_sweep_cfg "$dir/lm.cfg" 2 '{ budgets = [3.0]; output_dir = "'"$out"'"; plot = false; }'
inputs=("$out/report.md" "$dir/tok.bin" "$dir/lm.cfg")
sums_before=$(sha256sum "${inputs[@]}")

# refused PATTERN: a clean failure with the message, nothing measured.
refused() {
    [ "$RC" -ne 0 ] || fail "exit status 0, expected a refusal"
    expect_err "$1"
    expect_err "an output may not replace an input"
    [ -e "$out/measure.h5" ] && fail "measure.h5 written although the sweep was refused"
}

# 1. the single job
run $MPI -n 2 "$MPQ_BIN" sweep "$dir/lm.cfg" -q -o eval.text="$out/report.md"
refused "sweep.output_dir: '$out/report.md' is the same file as eval.text"

# 2. a point file is the tokenizer
eval_ok=(-o eval.text="$S/data/text/tinyshakespeare.txt")
for stage in measure point; do
    extra=()
    [ "$stage" = point ] && extra=(--index 0)
    run "$MPQ_BIN" sweep "$dir/lm.cfg" -q --stage "$stage" "${extra[@]}" "${eval_ok[@]}" \
        -o model.tokenizer="$dir/tok.bin"
    refused "'$out/points/point-0001.json' is the same file as model.tokenizer"
done

# 3. merge: a report file is the configuration file
rm -f "$out/points/point-0001.json"
ln -s "$dir/lm.cfg" "$out/report.csv"
run "$MPQ_BIN" sweep "$dir/lm.cfg" -q --stage merge "${eval_ok[@]}"
refused "'$out/report.csv' is the same file as the configuration file"

# 4. the plan writes nothing: not refused
run "$MPQ_BIN" sweep "$dir/lm.cfg" --stage plan "${eval_ok[@]}"
expect_rc 0
expect_out '^3$'

[ "$(sha256sum "${inputs[@]}")" = "$sums_before" ] || fail "an input changed"
ls "$out/points" | grep -q . && fail "point files written: $(ls "$out/points")"
[ -e "$out/report.json" ] && fail "a report was written"
finish
