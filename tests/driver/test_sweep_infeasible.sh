#!/bin/bash
# test_sweep_infeasible.sh: a budget below what quant.candidates reach is a
# skipped point, not the end of the study. A small stories260K sweep with
# int2/int4 g32 candidates (smallest about 2.5 bits per weight) and the
# budgets 1.58 (infeasible) and 3.0, plus two uniform points:
#   1. the single job at 2 ranks exits 0 and warns, naming the budget and
#      the achievable range;
#   2. the reports: the CSV row of point 0 says "infeasible" in its status
#      column and leaves the measured fields empty, the JSON point has
#      status "infeasible", null measurements and the range, which brackets
#      the budgets as expected; the Markdown row says infeasible and a note
#      follows the table; the three other points are evaluated (status ok,
#      numbers); the infeasible one is not on the Pareto front nor in the plot
#      data;
#   3. the job-array path by hand (measure, each point alone, merge; the
#      infeasible point at 1 rank) exits 0 at every stage and writes the
#      same report as the single job (without times).
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
. "$MPQ_SOURCE_DIR/tests/driver/sweep_cfg.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/text/wikitext2-valid.txt
need_shared data/text/tinyshakespeare.txt
need_jq
make_work_dir
MPI=$MPQ_MPIEXEC

lm_sweep_cfg "$dir/lm.cfg" 4 '{ budgets = [1.58, 3.0]; output_dir = "'"$dir"'/single"; plot = true; }'

# ---- 1. the single job
run $MPI -n 2 "$MPQ_BIN" sweep "$dir/lm.cfg" --json
expect_rc 0
expect_err "sweep point 0: budget 1.58 bits per weight is infeasible: quant.candidates reach [0-9.]+ \.\. [0-9.]+ bits per weight"
expect_err "1 of 4 points skipped \(infeasible budget\)"
last_json | jq -e '.points == 4' >/dev/null || fail "the plan does not have 4 points"
last_json | jq -e '.peak_rss_mib | .min > 0 and .min <= .mean and .mean <= .max' >/dev/null ||
    fail "sweep --json: peak_rss_mib missing or out of order"
expect_err "^peak_rss .*\(peak resident memory, MiB over 2 ranks\)"

# ---- 2. the reports
check_report() { # DIR
    local d=$1
    for f in report.csv report.json report.md; do
        [ -s "$d/$f" ] || fail "$d: $f missing or empty"
    done
    head -n 1 "$d/report.csv" | grep -q ',pareto,seconds,status$' || fail "$d: CSV header lacks status"
    # Point 0: status infeasible, the measured fields (bits, bpw, size_bytes,
    # value, rel_change, ppl, kld, agreement) empty, pareto 0; the metric is
    # the default, kld.
    awk -F, '$1 == "0"' "$d/report.csv" |
        grep -Eq '^0,"budget","avg 1.58 bits","rtn","int","mixed",1.58,,[0-9]+,,,"kld",,[0-9.e+-]+,,,,,0,[0-9.]+,infeasible$' ||
        fail "$d: CSV row of point 0 is not an infeasible row: $(awk -F, '$1 == "0"' "$d/report.csv")"
    [ "$(grep -c ',ok$' "$d/report.csv")" -eq 4 ] || fail "$d: expected 4 rows with status ok (fp + 3)"
    jq -e '.points[0] | .status == "infeasible" and .value == null and .bpw == null
           and .size_bytes == null and .pareto == false and .budget == 1.58
           and (.achievable_bpw | length == 2 and .[0] > 1.58 and .[0] < 3.0 and .[1] > .[0])' \
        "$d/report.json" >/dev/null || fail "$d: JSON point 0 is not marked infeasible with its range"
    jq -e '[.points[1:][] | .status == "ok" and (.value | type) == "number" and .value > 0
            and .bpw > 0] | length == 3 and all' "$d/report.json" >/dev/null ||
        fail "$d: the other three points are not all evaluated"
    jq -e '(.points[1].bpw <= 3.0) and (.points[1].bpw > .points[0].achievable_bpw[0] - 1e-9)' \
        "$d/report.json" >/dev/null || fail "$d: the 3.0 budget point is outside its budget"
    jq -e '(.pareto | index(0)) == null' "$d/report.json" >/dev/null ||
        fail "$d: the infeasible point is on the Pareto front"
    grep -Eq '^\| 0 \| budget \| avg 1.58 bits \| rtn \| int \| infeasible \|' "$d/report.md" ||
        fail "$d: Markdown row of point 0 is not marked infeasible"
    grep -Eq '^- point 0: 1.58 bits per weight is below what quant.candidates reach \([0-9.]+ \.\. [0-9.]+ bits per weight\)' \
        "$d/report.md" || fail "$d: Markdown note on the infeasible budget missing"
}
check_report "$dir/single"
[ -s "$dir/single/report.png" ] || fail "no plot"
# Without comparison points the front is still the block after the last
# kind's (an empty block once shifted it off the file).
grep -q "no valid points" "$ERR" && fail "gnuplot skipped a data block"
grep -q '1.58 bpw' "$dir/single/report-plot.dat" && fail "the infeasible point is in the plot data"
grep -q '3 bpw' "$dir/single/report-plot.dat" || fail "the 3.0 budget point is not in the plot data"
# Readable at a glance: ticks listed on the size axis (more than one within
# the data), a legend, a label for every drawable front point (none for the
# infeasible one), full precision (KLD 0, off a log axis) a dashed line.
gp="$dir/single/report.gp"
ticks=$(grep -E '^set xtics \(' "$gp" | tr -cd ',' | wc -c)
[ "$ticks" -ge 2 ] || fail "report.gp: fewer than three size ticks: $(grep xtics "$gp")"
grep -q '^set key inside' "$gp" || fail "report.gp: no legend"
grep -q '^set logscale y' "$gp" || fail "report.gp: the KLD axis is not logarithmic"
nfront=$(jq '[.reference, .points[]] | map(select(.pareto and .value > 0)) | length' "$dir/single/report.json")
[ "$(grep -c '^set label ' "$gp")" -eq "$nfront" ] ||
    fail "report.gp: $(grep -c '^set label ' "$gp") labels for $nfront front points"
grep -q '1.58 bpw' "$gp" && fail "report.gp: the infeasible point is labelled"
grep -q "title 'full precision (kld 0)'" "$gp" || fail "report.gp: no full-precision line for KLD 0"

# ---- 3. the job-array path by hand
arr=(-o "sweep.output_dir=$dir/array" -o sweep.plot=false)
run $MPI -n 1 "$MPQ_BIN" sweep "$dir/lm.cfg" --stage=measure "${arr[@]}"
expect_rc 0
for i in 3 0 2 1; do
    run $MPI -n $((i == 0 ? 1 : 2)) "$MPQ_BIN" sweep "$dir/lm.cfg" --stage=point --index="$i" "${arr[@]}"
    expect_rc 0
done
jq -e '.status == "infeasible"' "$dir/array/points/point-0000.json" >/dev/null ||
    fail "array: point file 0 is not marked infeasible"
run $MPI -n 2 "$MPQ_BIN" sweep "$dir/lm.cfg" --stage=merge "${arr[@]}"
expect_rc 0
check_report "$dir/array"
for d in single array; do
    cut -d, -f1-19,21 "$dir/$d/report.csv" >"$dir/$d.csv"
    sed -E 's/ [0-9.]+ \|$//' "$dir/$d/report.md" >"$dir/$d.md"
    jq 'del(.. | .seconds?)' "$dir/$d/report.json" >"$dir/$d.json"
done
for x in csv md json; do
    cmp -s "$dir/single.$x" "$dir/array.$x" ||
        fail "array vs single job: report.$x differs: $(diff "$dir/single.$x" "$dir/array.$x" | head -4)"
done

# ---- a damaged infeasible point file is an error naming it and the field
jq 'del(.achievable_bpw)' "$dir/array/points/point-0000.json" >"$dir/p0" &&
    mv "$dir/p0" "$dir/array/points/point-0000.json"
run "$MPQ_BIN" sweep "$dir/lm.cfg" --stage=merge "${arr[@]}"
[ "$RC" -ne 0 ] || fail "merge of an infeasible point without its range succeeded"
expect_err "point-0000.json: field 'achievable_bpw'"
finish
