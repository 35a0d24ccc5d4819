#!/bin/bash
# test_sweep_report.sh: `mpquant sweep` end to end on mnist-cnn-small (7
# points: 2 budgets, 3 uniform, 2 RTN comparisons) and a small
# stories260K sweep (3 points, perplexity and KLD):
#   1. single job at 2 ranks: report.{csv,json,md,png} written;
#   2. the report files agree: every CSV number equals the JSON number
#      exactly (both print round-trip digits), every Markdown cell equals
#      the JSON number to its printed digits, the Pareto flags agree, and
#      the front is recomputed by brute force from the JSON rows;
#   3. points equal separately run `mpquant run` (calibration.propagate =
#      fp): a uniform point and a budget point, same accuracy / perplexity
#      and bits per weight (exactly, through --json);
#   4. the job-array path by hand (measure at 1 rank, every point alone in
#      a random order at 1, 2 or 4 ranks, merge) writes the same report as
#      the single job: CSV and Markdown without the time column, JSON
#      without "seconds", byte for byte;
#   5. errors: a missing point file, a measurement of another configuration,
#      an index out of range, an unknown stage;
#   6. --json carries the figures: the single job's and the merge's "report"
#      holds every point with the numbers of report.csv, --stage=point's
#      "results" the point it ran (as its point file);
#   7. the language model's default metric is kld (the KL divergence from
#      full precision), perplexity beside it in every report.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
. "$MPQ_SOURCE_DIR/tests/driver/sweep_cfg.sh"
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
need_shared data/mnist/t10k-images-idx3-ubyte
need_shared data/models/stories260K/stories260K.bin
need_shared data/text/wikitext2-valid.txt
need_jq
make_work_dir
MPI=$MPQ_MPIEXEC

cat >"$dir/mnist.cfg" <<CFG
model = {
  path = "\${MPQ_SHARED_DIR}/data/models/mnist-cnn-small/model-mnist.safetensors";
  format = "safetensors"; tokenizer = ""; family = "cnn";
  input_shape = [1, 28, 28]; input_scale = 0.00392156862745098;
  cnn = (
    { op = "conv2d"; weight = "conv1.weight"; bias = "conv1.bias"; stride = 1; padding = 1; },
    { op = "relu"; }, { op = "maxpool"; kernel = 2; stride = 2; },
    { op = "conv2d"; weight = "conv2.weight"; bias = "conv2.bias"; stride = 1; padding = 1; },
    { op = "relu"; }, { op = "maxpool"; kernel = 2; stride = 2; },
    { op = "flatten"; }, { op = "linear"; weight = "fc1.weight"; bias = "fc1.bias"; }
  );
};
calibration = { source = "images"; images = "\${MPQ_SHARED_DIR}/data/mnist/t10k-images-idx3-ubyte";
                first = 0; segments = 256; propagate = "fp"; };
quant = { method = "gptq"; candidates = [ "int:bits=2,sym=false,gran=channel",
          "int:bits=3,sym=false,gran=channel", "int:bits=4,sym=false,gran=channel" ]; };
importance = { method = "sensitivity"; samples = 64; };
eval = { images = "\${MPQ_SHARED_DIR}/data/mnist/t10k-images-idx3-ubyte";
         labels = "\${MPQ_SHARED_DIR}/data/mnist/t10k-labels-idx1-ubyte";
         first = 1024; count = 1000; batch = 250; };
sweep = { budgets = [2.5, 3.5]; methods = ["rtn"];
          compare = ["int:bits=4,sym=false,gran=channel", "nf4:group=16"];
          output_dir = "$dir/single"; };
CFG

lm_sweep_cfg "$dir/lm.cfg" 10 '{ budgets = [3.0]; output_dir = "'"$dir"'/lm"; plot = false; }'

# ---- 1. single job
run $MPI -n 2 "$MPQ_BIN" sweep "$dir/mnist.cfg" --json
expect_rc 0
last_json | jq -e '.points == 7' >/dev/null || fail "the plan does not have 7 points"
for f in report.csv report.json report.md report.png measure.h5 points/fp.json points/point-0006.json; do
    [ -s "$dir/single/$f" ] || fail "single job: $f missing or empty"
done
[ "$(head -c 4 "$dir/single/report.png" | od -An -c | tr -d ' ')" = "211PNG" ] ||
    fail "report.png is not a PNG file"

# ---- 2. the report files agree
# The compared fields of the rows of a report object (report.json, or the
# "report" of --json).
rows='[.reference, .points[]] | map({index, kind, "label": .label, bits, bpw, size_bytes, value,
                                   rel_change, ppl, kld, agreement, pareto})'
check_consistency() { # DIR
    local d=$1 n
    n=$(jq '.points | length' "$d/report.json")
    [ "$(($(wc -l <"$d/report.csv") - 2))" -eq "$n" ] || fail "$d: CSV rows != JSON points + reference"
    # CSV -> JSON numbers (jq parses the quoted CSV fields).
    jq -R -s '[split("\n")[1:][] | select(length > 0)
               | [scan("(?:^|,)(\"(?:[^\"]|\"\")*\"|[^,]*)") | .[0]]
               | {index: (.[0] | tonumber), kind: (.[1] | fromjson), label: (.[2] | fromjson),
                  bits: (.[7] | tonumber), bpw: (.[9] | tonumber), size_bytes: (.[10] | tonumber),
                  value: (.[12] | tonumber), rel_change: (.[14] | tonumber),
                  ppl: (if .[15] == "" then null else (.[15] | tonumber) end),
                  kld: (.[16] | tonumber), agreement: (.[17] | tonumber), pareto: (.[18] == "1")}]' \
        "$d/report.csv" >"$d/csv.json" || fail "$d: report.csv does not parse"
    jq "$rows" "$d/report.json" >"$d/json.json"
    cmp -s "$d/csv.json" "$d/json.json" ||
        fail "$d: CSV and JSON numbers differ: $(diff "$d/csv.json" "$d/json.json" | head -6)"
    # Markdown cells vs JSON to the printed digits: bpw %.4f, size, value %.4f, change %+.2f%%.
    jq -r '[.reference, .points[]][] | [.bpw, .size_bytes, .value, .rel_change * 100, (.pareto | tostring)] | @tsv' \
        "$d/report.json" >"$d/want.tsv"
    grep -E '^\| (-|[0-9]+) \|' "$d/report.md" |
        awk -F'|' '{ gsub(/ /, ""); gsub(/%/, ""); print $7 "\t" $8 "\t" $9 "\t" $10 "\t" ($(NF-2) == "yes" ? "true" : "false") }' \
            >"$d/md.tsv"
    paste "$d/want.tsv" "$d/md.tsv" | awk -F'\t' '
        function bad(m) { print "row " NR ": " m; err = 1 }
        { if (($1 - $6) > 0.00005 || ($6 - $1) > 0.00005) bad("bpw " $1 " vs " $6)
          if ($2 != $7) bad("size " $2 " vs " $7)
          if (($3 - $8) > 0.00005 || ($8 - $3) > 0.00005) bad("value " $3 " vs " $8)
          if (($4 - $9) > 0.005 || ($9 - $4) > 0.005) bad("change " $4 " vs " $9)
          if ($5 != $10) bad("pareto " $5 " vs " $10) }
        END { if (NR == 0) bad("no rows"); exit err }' >"$d/md.err" ||
        fail "$d: Markdown and JSON differ: $(head -3 "$d/md.err")"
    # The front by brute force from the JSON rows.
    jq -e '(.higher_is_better) as $h | [.reference, .points[]] as $p
           | [$p[] | (if $h then -.value else .value end) as $q | .size_bytes as $s
              | (any($p[]; (if $h then -.value else .value end) as $r
                     | .size_bytes <= $s and $r <= $q and (.size_bytes < $s or $r < $q)) | not)
                == .pareto] | all' "$d/report.json" >/dev/null ||
        fail "$d: a Pareto flag disagrees with the brute-force front"
}
check_consistency "$dir/single"
# ---- 6. --json carries every point with its figures, as the CSV has them
last_json | jq "(.report | $rows)" >"$dir/single/stdout.json"
cmp -s "$dir/single/csv.json" "$dir/single/stdout.json" ||
    fail "sweep --json: the report's points differ from report.csv: $(diff "$dir/single/csv.json" "$dir/single/stdout.json" | head -6)"
last_json | jq -e '.report.metric == "accuracy" and (.report.points | length) == 7
                   and (.report.pareto | length) > 0' >/dev/null ||
    fail "sweep --json: no report, or not 7 points with the classifier's default metric accuracy"
jq -e '[.reference, .points[]] | all(.ppl == null)' "$dir/single/report.json" >/dev/null ||
    fail "a classifier's rows have a perplexity"

# ---- 3. points equal separately run `mpquant run`
pt() { jq -r ".$2" "$dir/single/points/point-$(printf %04d "$1").json"; }
run $MPI -n 2 "$MPQ_BIN" run "$dir/mnist.cfg" --json -o 'quant.candidates=[]' \
    -o "quant.spec=int:bits=3,sym=false,gran=channel"
expect_rc 0
[ "$(last_json | jq -r .quantized.accuracy)" = "$(pt 3 value)" ] ||
    fail "uniform int3: sweep accuracy $(pt 3 value), mpquant run $(last_json | jq -r .quantized.accuracy)"
[ "$(last_json | jq -r .bpw)" = "$(pt 3 bpw)" ] || fail "uniform int3: bits per weight differ"
run $MPI -n 2 "$MPQ_BIN" run "$dir/mnist.cfg" --json -o budget.avg_bits=2.5
expect_rc 0
[ "$(last_json | jq -r .quantized.accuracy)" = "$(pt 0 value)" ] ||
    fail "budget 2.5: sweep accuracy $(pt 0 value), mpquant run $(last_json | jq -r .quantized.accuracy)"
[ "$(last_json | jq -r .bpw)" = "$(pt 0 bpw)" ] || fail "budget 2.5: bits per weight differ"
[ "$(last_json | jq -r .quantized.top1_agreement)" = "$(pt 0 agreement)" ] || fail "budget 2.5: agreement differs"

# ---- 4. the job-array path by hand
arr=(-o "sweep.output_dir=$dir/array")
run $MPI -n 1 "$MPQ_BIN" sweep "$dir/mnist.cfg" --stage=measure "${arr[@]}"
expect_rc 0
ranks=(1 2 4)
k=0
for i in $(seq 0 6 | shuf); do
    run $MPI -n "${ranks[k % 3]}" "$MPQ_BIN" sweep "$dir/mnist.cfg" --stage=point --index="$i" "${arr[@]}" --json
    expect_rc 0
    last_json | jq -c '.results' >"$dir/results.json"
    jq -c --slurpfile r "$dir/results.json" '$r[0] == [.]' "$dir/array/points/point-$(printf %04d "$i").json" |
        grep -qx true || fail "sweep --stage=point --json: results differ from point $i's file"
    k=$((k + 1))
done
run $MPI -n 2 "$MPQ_BIN" sweep "$dir/mnist.cfg" --stage=merge "${arr[@]}" --json
expect_rc 0
check_consistency "$dir/array"
last_json | jq "(.report | $rows)" >"$dir/array/stdout.json"
cmp -s "$dir/array/csv.json" "$dir/array/stdout.json" ||
    fail "sweep --stage=merge --json: the report's points differ from report.csv"
for d in single array; do
    cut -d, -f1-19 "$dir/$d/report.csv" >"$dir/$d.csv"
    sed -E 's/ [0-9.]+ \|$//' "$dir/$d/report.md" >"$dir/$d.md"
    jq 'del(.. | .seconds?)' "$dir/$d/report.json" >"$dir/$d.json"
done
for x in csv md json; do
    cmp -s "$dir/single.$x" "$dir/array.$x" ||
        fail "array vs single job: report.$x differs: $(diff "$dir/single.$x" "$dir/array.$x" | head -4)"
done
grep -q '"seconds"' "$dir/single.json" && fail "the JSON comparison did not remove the times"

# ---- 5. errors
rm "$dir/array/points/point-0001.json"
run "$MPQ_BIN" sweep "$dir/mnist.cfg" --stage=merge "${arr[@]}"
[ "$RC" -ne 0 ] || fail "merge with a missing point succeeded"
expect_err "point-0001.json"
run "$MPQ_BIN" sweep "$dir/mnist.cfg" --stage=point --index=1 "${arr[@]}" -o round.block_size=64
[ "$RC" -ne 0 ] || fail "a point from a measurement of another configuration succeeded"
expect_err "measure.h5: measured with another configuration \(round differs\)"
run "$MPQ_BIN" sweep "$dir/mnist.cfg" --stage=point --index=7 "${arr[@]}"
[ "$RC" -ne 0 ] || fail "index 7 of 7 points accepted"
expect_err "index"
run "$MPQ_BIN" sweep "$dir/mnist.cfg" --stage=everything
[ "$RC" -ne 0 ] || fail "an unknown stage was accepted"
expect_err "expected measure, point, merge or plan"

# ---- 7. the language-model path: KLD by default, perplexity beside it, a
# uniform point = mpquant run
run $MPI -n 2 "$MPQ_BIN" sweep "$dir/lm.cfg" --json
expect_rc 0
check_consistency "$dir/lm"
last_json | jq "(.report | $rows)" >"$dir/lm/stdout.json"
cmp -s "$dir/lm/csv.json" "$dir/lm/stdout.json" || fail "LM sweep --json: points differ from report.csv"
grep -q '| kld | change | PPL | agreement |' "$dir/lm/report.md" ||
    fail "LM report: no kld metric column with PPL beside it: $(grep '^| #' "$dir/lm/report.md")"
jq -e '.metric == "kld" and (.points | length) == 3 and (.points[1].kld > 0)
       and .points[1].value == .points[1].kld and .reference.value == 0
       and ([.reference, .points[]] | all(.ppl > 1))' "$dir/lm/report.json" \
    >/dev/null || fail "LM report: the default metric is not kld, or a KLD or perplexity is missing"
head -n 1 "$dir/lm/report.csv" | grep -q ',rel_change,ppl,kld,agreement,' || fail "LM CSV: no ppl column"
run $MPI -n 2 "$MPQ_BIN" run "$dir/lm.cfg" --json -o 'quant.candidates=[]' \
    -o "quant.spec=int:bits=2,sym=false,group=32"
expect_rc 0
[ "$(last_json | jq -r .quantized.ppl)" = "$(jq -r .points[1].ppl "$dir/lm/report.json")" ] ||
    fail "LM uniform int2: sweep ppl $(jq -r .points[1].ppl "$dir/lm/report.json"), run $(last_json | jq -r .quantized.ppl)"
[ "$(last_json | jq -r .quantized.kld)" = "$(jq -r .points[1].value "$dir/lm/report.json")" ] ||
    fail "LM uniform int2: KLD differs"
finish
