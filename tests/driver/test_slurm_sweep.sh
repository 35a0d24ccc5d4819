#!/bin/bash
# shellcheck disable=SC2317 # on_exit runs through trap
# test_slurm_sweep.sh: slurm/sweep-submit.sh on a private one-node Slurm
# cluster (tests/driver/slurm_cluster.sh): a 4-point `mpquant sweep` of
# mnist-cnn-small (one budget below what the candidates reach: a skipped
# point, which must not fail its array task and block the merge) as a measure job, a 2-task job array (2 points per task,
# the last task short) depending on it, and a merge job depending on the
# array; every job ends COMPLETED 0:0 and the merged report equals the
# single-job report (CSV without the time column, JSON without "seconds").
# Exit 0 pass, 1 fail, 77 skip (never under CI=true).
set -u -o pipefail
cl_deadline=$((SECONDS + ${MPQ_SLURM_TEST_BUDGET:-150}))
say() { printf '[slurm sweep test] %s\n' "$*"; }
fail() {
    printf '[slurm sweep test] FAIL: %s\n' "$*" >&2
    exit 1
}
skip() {
    [[ ${CI:-} == true ]] && fail "$* (CI=true: this test must not be skipped)"
    say "SKIP: $*"
    exit 77
}
[[ -n ${MPQ_BIN:-} && -x ${MPQ_BIN:-} ]] || fail "MPQ_BIN is not set (run through ctest)"
[[ -n ${MPQ_SOURCE_DIR:-} ]] || fail "MPQ_SOURCE_DIR is not set (run through ctest)"
mnist=${MPQ_SHARED_DIR:-}/data/models/mnist-cnn-small/model-mnist.safetensors
images=${MPQ_SHARED_DIR:-}/data/mnist/t10k-images-idx3-ubyte
[[ -f $mnist && -f $images ]] || skip "shared MNIST data missing (MPQ_SHARED_DIR)"
command -v jq >/dev/null || fail "jq missing (Debian package jq)"
# shellcheck source=tests/driver/slurm_cluster.sh
. "$MPQ_SOURCE_DIR/tests/driver/slurm_cluster.sh"
work=""
on_exit() {
    local rc=$?
    trap - EXIT
    if [[ $rc -ne 0 && $rc -ne 77 ]]; then
        cluster_logs
        [[ -n $work ]] && tail -n 30 "$work"/*.err >&2 2>/dev/null
    fi
    cluster_stop
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cluster_start
work=$cl_tmp/work
mkdir -p "$work"
say "cluster up after $SECONDS s"

cfg=$work/sweep.cfg
{
    echo '# Written by tests/driver/test_slurm_sweep.sh: a 4-point sweep.'
    echo "model = { path = \"$mnist\"; format = \"safetensors\"; tokenizer = \"\"; family = \"cnn\";"
    echo '  input_shape = [1, 28, 28]; input_scale = 0.00392156862745098;'
    echo '  cnn = ( { op = "conv2d"; weight = "conv1.weight"; bias = "conv1.bias"; padding = 1; },'
    echo '    { op = "relu"; }, { op = "maxpool"; kernel = 2; stride = 2; },'
    echo '    { op = "conv2d"; weight = "conv2.weight"; bias = "conv2.bias"; padding = 1; },'
    echo '    { op = "relu"; }, { op = "maxpool"; kernel = 2; stride = 2; },'
    echo '    { op = "flatten"; }, { op = "linear"; weight = "fc1.weight"; bias = "fc1.bias"; } ); };'
    echo "calibration = { source = \"images\"; images = \"$images\"; segments = 128; };"
    echo 'quant = { method = "gptq"; candidates = [ "int:bits=2,sym=false,gran=channel",'
    echo '                                          "int:bits=4,sym=false,gran=channel" ]; };'
    echo 'importance = { method = "error"; };'
    echo "eval = { images = \"$images\"; labels = \"$MPQ_SHARED_DIR/data/mnist/t10k-labels-idx1-ubyte\";"
    echo '         first = 1024; count = 500; batch = 250; };'
    echo "sweep = { budgets = [1.0, 3.0]; output_dir = \"$work/array\"; plot = false; };"
} >"$cfg"
"$MPQ_BIN" sweep "$cfg" -o "sweep.output_dir=$work/single" >"$work/single.log" 2>&1 ||
    fail "single-job sweep failed: $(tail -n 3 "$work/single.log")"
ids=$(cd "$work" && MPQ_SWEEP_GROUP=2 "$MPQ_SOURCE_DIR/slurm/sweep-submit.sh" "$cfg" \
    -n 2 --mem-per-cpu=200M --time=00:05:00 2>&1) || fail "sweep-submit.sh failed: $ids"
line=$(head -n 1 <<<"$ids")
say "submitted: $line"
for id in $(grep -o '=[0-9]*' <<<"$line" | tr -d =); do
    cl_jobs+=("$id")
done
[[ ${#cl_jobs[@]} -eq 3 ]] || fail "expected three job ids from sweep-submit.sh, got: $line"
grep -q '(4 points in 2 array tasks)' <<<"$line" || fail "expected 4 points in 2 array tasks: $line"
merge=$(tail -n 1 <<<"$ids")
[[ $merge == "${cl_jobs[2]}" ]] || fail "the last line '$merge' is not the merge job id"
cl_wait "merge job $merge" 120 cl_job_done "$merge"
for id in "${cl_jobs[@]}"; do
    states=$(scontrol show job -o "$id" | grep -o 'JobState=[A-Z_]*' | sort -u | tr '\n' ' ')
    codes=$(scontrol show job -o "$id" | grep -o ' ExitCode=[0-9:]*' | sort -u | tr -d ' ' | tr '\n' ' ')
    [[ $states == "JobState=COMPLETED " && $codes == "ExitCode=0:0 " ]] ||
        fail "job $id: $states$codes(expected every task COMPLETED 0:0)"
done
ntask=$(scontrol show job -o "${cl_jobs[1]}" | grep -c 'ArrayTaskId=')
[[ $ntask -eq 2 ]] || fail "the point array has $ntask tasks, expected 2"
for d in single array; do
    [[ -s $work/$d/report.csv ]] || fail "$d: no report.csv"
    cut -d, -f1-19,21 "$work/$d/report.csv" >"$work/$d.csv"
    jq 'del(.. | .seconds?)' "$work/$d/report.json" >"$work/$d.json" || fail "$d: report.json is not JSON"
done
[[ $(wc -l <"$work/single.csv") -eq 6 ]] || fail "expected a header, the reference and 4 points"
cmp -s "$work/single.csv" "$work/array.csv" ||
    fail "report.csv of the job array differs: $(diff "$work/single.csv" "$work/array.csv" | head -n 4)"
cmp -s "$work/single.json" "$work/array.json" || fail "report.json of the job array differs"
jq -e '.points[0].status == "infeasible" and ([.points[1:][] | .status == "ok"] | all)' \
    "$work/array/report.json" >/dev/null || fail "the job array's report does not mark point 0 infeasible"
say "PASS in $SECONDS s: measure, 2-task array, merge = single-job report"
exit 0
