#!/bin/bash
# results.sh: measures every figure of RESULTS.md and prints the file.
#
#   bash tests/tools/results.sh [OPTIONS] [BUILD_DIR] > RESULTS.md
#
# BUILD_DIR (default: build) is configured (Release) when it holds no build
# yet, and brought up to date with cmake --build in any case. Then, in this
# order:
#  1. quality of the shipped configurations: `mpquant run configs/X.cfg --json`
#     for every configs/*.cfg that quantizes (not sweep-*.cfg, not the
#     evaluation-only mnist-cnn-small.cfg), and the full-precision checks
#     (`mpquant eval`) against the reference numbers of the shared data's
#     README.md;
#  2. variants of the shipped configurations (--no-variants skips them):
#     every rounding method at every shipped width, the error-minimising fit,
#     the importance estimators and budget kinds of the mixed configuration,
#     the calibration sources;
#  3. the shipped sweeps (configs/sweep-*.cfg; --no-sweeps skips them), their
#     Markdown reports;
#  4. the rounding study (configs/study-stories260K.sh: each rounding axis
#     at 2, 3 and 4 bits, the main rows with three calibration seeds;
#     --no-study skips it), its table (its plot is copied to the file
#     --study-plot names), and the rate-distortion comparison
#     (configs/pareto-rate-stories260K.sh: fixed-length against zstd-coded
#     codes with rate-aware GPTQ; skipped with the study), its table;
#  5. the benchmarks (ctest -L bench, one test at a time; --no-bench skips
#     them all, --skip-bench REGEX the tests whose name matches): every JSON
#     line they print, as one table per kind of line. A benchmark registered
#     at more ranks than the machine has cores (NAME_npN, N > nproc) is
#     skipped, since oversubscribed timings measure the scheduler; the file
#     says so (--all-bench runs it anyway).
# Every figure in the output comes from a command run here; the reference
# numbers are read from $MPQ_SHARED_DIR/README.md. Progress and the logs of
# failed commands go to standard error. Exit status 1 when a command failed
# (its row says so), 2 on a usage error.
#
# Options:
#   --np N              ranks of every mpirun (default 2)
#   --no-variants       skip part 2
#   --no-sweeps         skip part 3
#   --no-study          skip part 4
#   --study-plot FILE   copy the study's plot (PNG, needs gnuplot) to FILE
#   --study-from FILE   instead of running part 4, carry its two sections over
#                       from an earlier output FILE, headed by the commit and
#                       date they were measured at, which a FILE carried
#                       over itself names (for a change that leaves
#                       the study's figures alone: part 4 takes hours; not
#                       the file the output goes to, which the shell empties)
#   --no-bench          skip part 5
#   --skip-bench REGEX  skip the benchmarks whose ctest name matches (ctest -E)
#   --all-bench         also run benchmarks that need more ranks than cores
# Needs jq and mpirun; MPQ_SHARED_DIR defaults to the build's MPQ_SHARED_DIR.
set -u -o pipefail
args="$*"

usage() {
    sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

np=2 variants=1 sweeps=1 study=1 bench=1 all_bench=0 skip_bench="" build="" study_plot=""
study_from=""
while [ $# -gt 0 ]; do
    case "$1" in
    --np) np=${2:?--np needs a value}; shift ;;
    --no-variants) variants=0 ;;
    --no-sweeps) sweeps=0 ;;
    --no-study) study=0 ;;
    --study-plot) study_plot=${2:?--study-plot needs a file}; shift ;;
    --study-from) study_from=${2:?--study-from needs a file}; study=0; shift ;;
    --no-bench) bench=0 ;;
    --skip-bench) skip_bench=${2:?--skip-bench needs a regular expression}; shift ;;
    --all-bench) all_bench=1 ;;
    -h | --help) usage ;;
    -*) echo "results.sh: unknown option $1" >&2; usage ;;
    *) [ -z "$build" ] || usage; build=$1 ;;
    esac
    shift
done
build=${build:-build}
src=$(cd "$(dirname "$0")/../.." && pwd)
case "$build" in /*) ;; *) build=$PWD/$build ;; esac
case "$study_plot" in "" | /*) ;; *) study_plot=$PWD/$study_plot ;; esac
command -v jq >/dev/null || { echo "results.sh: jq is missing (Debian package jq)" >&2; exit 2; }
if [ -n "$study_from" ]; then
    from_commit=$(sed -n 's/^| commit | \(.*\) |$/\1/p' "$study_from" 2>/dev/null)
    from_date=$(sed -n 's/^| date | \(.*\) |$/\1/p' "$study_from" 2>/dev/null)
    grep -q '^## Rounding study$' "$study_from" 2>/dev/null && [ -n "$from_commit" ] || {
        echo "results.sh: --study-from $study_from: no results file with a commit and a" \
            "'## Rounding study' section" >&2
        exit 2
    }
    study_copy=$(mktemp)
    sed -n '/^## Rounding study$/,/^## Benchmarks$/p' "$study_from" | sed '$d' >"$study_copy"
    # a study FILE carried over itself: the run that measured it (the last
    # such header), each header's two lines and the blank line after them
    # dropped
    carried='^This section and the next are those of the run at commit '
    if grep -q "$carried" "$study_copy"; then
        from_commit=$(sed -n "s/${carried}\(.*\)\$/\1/p" "$study_copy" | tail -n 1)
        from_date=$(sed -n 's/^(\(.*\)), not measured again.*$/\1/p' "$study_copy" | tail -n 1)
        sed -i "/${carried}/{N;N;d}" "$study_copy"
    fi
fi

say() { printf '[results %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- build ------------------------------------------------------------------------
if [ ! -f "$build/CMakeCache.txt" ]; then
    say "configuring $build"
    cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
        ${MPQ_SHARED_DIR:+-DMPQ_SHARED_DIR="$MPQ_SHARED_DIR"} >&2 || exit 1
fi
say "building $build"
cmake --build "$build" -j"$(nproc)" >&2 || exit 1
bin=$build/mpquant
cache_shared=$(sed -n 's/^MPQ_SHARED_DIR:[A-Z]*=//p' "$build/CMakeCache.txt")
export MPQ_SHARED_DIR=${MPQ_SHARED_DIR:-$cache_shared}
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")
shared_readme=$MPQ_SHARED_DIR/README.md
[ -f "$shared_readme" ] || { echo "results.sh: $shared_readme is missing (MPQ_SHARED_DIR)" >&2; exit 2; }

launcher="mpirun --oversubscribe"
[ "$(id -u)" -eq 0 ] && launcher+=" --allow-run-as-root"
mpi=($launcher -np "$np")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0

# ---- reference numbers (shared README) ---------------------------------------------
ref_ppl=$(grep -oE 'PPL [0-9]+\.[0-9]+' "$shared_readme" | head -n 1 | cut -d' ' -f2)
ref_pred=$(grep -oE '[0-9]{1,3}(,[0-9]{3})+ predictions' "$shared_readme" | head -n 1 | cut -d' ' -f1 | tr -d ,)
ref_mnist=$(grep -oE '[0-9][0-9,]* of the [0-9][0-9,]* MNIST test images' "$shared_readme" | head -n 1)
ref_correct=$(cut -d' ' -f1 <<<"$ref_mnist" | tr -d ,)
ref_total=$(cut -d' ' -f4 <<<"$ref_mnist" | tr -d ,)
if [ -z "$ref_ppl" ] || [ -z "$ref_pred" ] || [ -z "$ref_correct" ] || [ -z "$ref_total" ]; then
    echo "results.sh: cannot find the reference numbers in $shared_readme" >&2
    exit 2
fi

# ---- helpers ------------------------------------------------------------------------
# run_json NAME ARGS...: runs mpquant under mpirun in a scratch directory;
# the --json line goes to $work/NAME.json, the wall seconds to $work/NAME.s.
# Returns the exit status (the log is shown on failure).
run_json() {
    local name=$1 t0 rc
    shift
    mkdir -p "$work/$name.d"
    t0=$(date +%s.%N)
    (cd "$work/$name.d" && "${mpi[@]}" "$bin" "$@" --json -q >"$work/$name.out" 2>"$work/$name.err")
    rc=$?
    awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}' >"$work/$name.s"
    tail -n 1 "$work/$name.out" >"$work/$name.json"
    if [ $rc -ne 0 ] || ! jq -e . "$work/$name.json" >/dev/null 2>&1; then
        say "FAILED ($rc): mpquant $*"
        tail -n 20 "$work/$name.err" >&2
        failed=1
        return 1
    fi
    return 0
}

# quant_run NAME CONFIG [-o ...]: `mpquant run CONFIG` with its checkpoint
# written into the scratch directory (the shipped paths are left alone).
quant_run() {
    local name=$1 cfg=$2
    shift 2
    say "run $(basename "$cfg") $*"
    run_json "$name" run "$cfg" -o "output.path=$work/$name.d/ckpt.h5" -o output.overwrite=true "$@"
}

# j NAME FILTER: a figure of NAME's JSON line ("-" when missing).
j() { jq -r "$2 // \"-\"" "$work/$1.json" 2>/dev/null || echo "-"; }
f4() { if [ "$1" = "-" ]; then echo "-"; else printf '%.4f' "$1"; fi; }
pct() { if [ "$1" = "-" ]; then echo "-"; else awk -v x="$1" 'BEGIN {printf "%.2f %%", 100 * x}'; fi; }
chg() { # relative change of $2 against $1, in %
    if [ "$1" = "-" ] || [ "$2" = "-" ]; then echo "-"; else
        awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.2f %%", 100 * (b - a) / a}'
    fi
}
f1() { if [ "$1" = "-" ]; then echo "-"; else printf '%.1f' "$1"; fi; }
f5() { if [ "$1" = "-" ]; then echo "-"; else printf '%.5f' "$1"; fi; }
secs() { printf '%.0f' "$(cat "$work/$1.s" 2>/dev/null || echo 0)"; }
# lm_cell NAME: "PPL (KLD)" of a language-model run; cls_cell NAME: "accuracy
# (accuracy on all images)" of a classifier run.
lm_cell() { printf '%s (%s)' "$(f4 "$(j "$1" .quantized.ppl)")" "$(f4 "$(j "$1" .quantized.kld)")"; }
cls_cell() { printf '%s (%s)' "$(pct "$(j "$1" .quantized.accuracy)")" "$(pct "$(j "$1" .quantized.all.accuracy)")"; }

# ---- header ---------------------------------------------------------------------------
commit=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git -C "$src" status --porcelain --untracked-files=no 2>/dev/null)" ] &&
    commit="$commit (with uncommitted changes)"
cpu=$(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
cores=$(grep -c '^processor' /proc/cpuinfo)
cores_avail=$(nproc)
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
os=$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release 2>/dev/null)
load0=$(cut -d' ' -f1-3 /proc/loadavg)
blas=$("$build/mpquant" --version | sed -n 's/^BLAS: *//p')
date0=$(date -u '+%Y-%m-%d %H:%M UTC')
skipped=()
[ $variants -eq 0 ] && skipped+=("the variants (--no-variants)")
[ $sweeps -eq 0 ] && skipped+=("the sweeps (--no-sweeps)")
[ $study -eq 0 ] && [ -z "$study_from" ] && skipped+=("the rounding study (--no-study)")
[ -n "$study_from" ] &&
    skipped+=("the rounding study, carried over from the run at commit $from_commit ($from_date)")
[ $bench -eq 0 ] && skipped+=("all benchmarks (--no-bench)")
[ $bench -eq 1 ] && [ -n "$skip_bench" ] && skipped+=("the benchmarks matching \`$skip_bench\` (--skip-bench)")
# Benchmarks to run, and those left out for needing more ranks than cores.
bench_names=()
if [ $bench -eq 1 ]; then
    for t in $(ctest --test-dir "$build" -N -L bench ${skip_bench:+-E "$skip_bench"} |
        sed -n 's/^ *Test *#[0-9]*: *//p'); do
        r=$(sed -n 's/.*_np\([0-9][0-9]*\)$/\1/p' <<<"$t")
        if [ $all_bench -eq 0 ] && [ -n "$r" ] && [ "$r" -gt "$cores_avail" ]; then
            skipped+=("\`$t\` (needs $r ranks, the machine has $cores_avail cores: oversubscribed timings would measure the scheduler; --all-bench runs it)")
        else
            bench_names+=("$t")
        fi
    done
fi

out=$work/RESULTS.md
{
    echo "# mpquant: measured results"
    echo
    echo "Generated by \`bash tests/tools/results.sh${args:+ $args}\` (do not edit by hand: run it again)."
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| commit | $commit |"
    echo "| date | $date0 |"
    echo "| machine | $cpu, $cores cores, $mem memory${os:+, $os} |"
    echo "| build | $build_type, $(basename "$build")/ |"
    echo "| BLAS | ${blas:-unknown} |"
    echo "| MPI ranks | $np (\`mpirun -np $np\`), ${OPENBLAS_NUM_THREADS:-1} BLAS thread(s) per rank |"
    echo "| load average at the start | $load0 |"
    if [ ${#skipped[@]} -gt 0 ]; then
        echo "| left out | $(printf '%s; ' "${skipped[@]}" | sed 's/; $//') |"
    fi
    echo
    echo "Every quality figure below is the same at any number of ranks (the pipeline is"
    echo "bit-identical across rank counts); times and benchmark figures depend on the"
    echo "machine and on its load. The BLAS kernels follow the CPU: on a CPU of another"
    echo "kind their last bits can differ, and the learned roundings (signround, the"
    echo "offset variable) can then settle on other codes."
    echo
} >"$out"

# ---- 1. shipped configurations ---------------------------------------------------------
lm_cfgs=() cls_cfgs=()
for cfg in "$src"/configs/*.cfg; do
    name=$(basename "$cfg" .cfg)
    case "$name" in sweep-* | mnist-cnn-small) continue ;; esac
    if grep -q '^ *family *= *"cnn"' "$cfg"; then cls_cfgs+=("$name"); else lm_cfgs+=("$name"); fi
done

say "full-precision checks"
run_json fp-lm eval --model "$MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin" \
    --tokenizer "$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin" \
    --text "$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt" --docs 500
run_json fp-cls eval "$src/configs/mnist-cnn-small.cfg"
for name in "${lm_cfgs[@]}" "${cls_cfgs[@]}"; do
    quant_run "cfg-$name" "$src/configs/$name.cfg"
done
# WikiText-2 test, windows protocol, of every language-model checkpoint
wiki=(--tokenizer "$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin"
    --text "$MPQ_SHARED_DIR/data/text/wikitext2-test.txt" --protocol windows)
say "WikiText-2 windows"
run_json wiki-fp eval --model "$MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin" "${wiki[@]}"
for name in "${lm_cfgs[@]}"; do
    run_json "wiki-$name" eval --model "$work/cfg-$name.d/ckpt.h5" "${wiki[@]}" \
        --reference "$MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin"
done

{
    echo "## Shipped configurations"
    echo
    echo "\`mpirun -np $np build/mpquant run configs/NAME.cfg --json\` (checkpoint written to a"
    echo "scratch directory). Bits per weight count the whole storage of the quantized layers:"
    echo "codes, scales and zero-points."
    echo
    echo "### Full precision against the reference numbers"
    echo
    echo "| model | measured by | measured | reference (shared data README) |"
    echo "|---|---|---|---|"
    echo "| stories260K, first 500 documents of tinyshakespeare.txt | \`mpquant eval --model stories260K.bin --docs 500\` | PPL $(f4 "$(j fp-lm .ppl)"), $(j fp-lm .predictions) predictions | PPL $ref_ppl, $ref_pred predictions |"
    echo "| mnist-cnn-small, the 10,000 MNIST test images | \`mpquant eval configs/mnist-cnn-small.cfg\` | $(j fp-cls .correct) of $(j fp-cls .total) correct ($(pct "$(j fp-cls .accuracy)")) | $ref_correct of $ref_total correct |"
    echo
    echo "### Language model: stories260K"
    echo
    echo "Perplexity on the first 500 documents of tinyshakespeare.txt; KLD (nats per"
    echo "prediction) and top-1 agreement against the full-precision model."
    echo
    echo "| configuration | mode | method | bits/weight | PPL full precision | PPL quantized | change | KLD | top-1 agreement | seconds |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for name in "${lm_cfgs[@]}"; do
        n=cfg-$name
        echo "| $name | $(j "$n" .mode) | $(j "$n" .method) | $(f4 "$(j "$n" .bpw)") | $(f4 "$(j "$n" .fp.ppl)") | $(f4 "$(j "$n" .quantized.ppl)") | $(chg "$(j "$n" .fp.ppl)" "$(j "$n" .quantized.ppl)") | $(f4 "$(j "$n" .quantized.kld)") | $(f4 "$(j "$n" .quantized.top1_agreement)") | $(secs "$n") |"
    done
    echo
    echo "The same checkpoints on the WikiText-2 test text, windows protocol (\`mpquant eval"
    echo "--protocol windows\`: the whole text as one token stream in windows of the model's"
    echo "context, $(j wiki-fp .window) tokens; $(j wiki-fp .docs) windows, $(j wiki-fp .predictions) predictions)."
    echo "Full precision: PPL $(f4 "$(j wiki-fp .ppl)")."
    echo
    echo "| configuration | PPL quantized | change | KLD | top-1 agreement |"
    echo "|---|---:|---:|---:|---:|"
    for name in "${lm_cfgs[@]}"; do
        n=wiki-$name
        echo "| $name | $(f4 "$(j "$n" .ppl)") | $(chg "$(j wiki-fp .ppl)" "$(j "$n" .ppl)") | $(f4 "$(j "$n" .kld)") | $(f4 "$(j "$n" .top1_agreement)") |"
    done
    echo
    echo "### Classifier: mnist-cnn-small"
    echo
    echo "Accuracy on the evaluation range of each configuration (images 1024-9999; the"
    echo "calibration uses images 0-1023) and, in the last columns, on all 10,000 images."
    echo
    echo "| configuration | mode | method | bits/weight | accuracy full precision | accuracy quantized | agreement | all images: full precision | all images: quantized | seconds |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for name in "${cls_cfgs[@]}"; do
        n=cfg-$name
        echo "| $name | $(j "$n" .mode) | $(j "$n" .method) | $(f4 "$(j "$n" .bpw)") | $(pct "$(j "$n" .fp.accuracy)") | $(pct "$(j "$n" .quantized.accuracy)") | $(f4 "$(j "$n" .quantized.top1_agreement)") | $(pct "$(j "$n" .fp.all.accuracy)") | $(pct "$(j "$n" .quantized.all.accuracy)") | $(secs "$n") |"
    done
    echo
} >>"$out"

# ---- 2. variants --------------------------------------------------------------------------
methods=(rtn gptq adaround signround)
if [ $variants -eq 1 ]; then
    for b in 4 3 2; do
        for m in "${methods[@]}"; do
            quant_run "lm-w$b-$m" "$src/configs/stories260K-w$b.cfg" -o "quant.method=$m"
            quant_run "lm-w$b-$m-search" "$src/configs/stories260K-w$b.cfg" -o "quant.method=$m" \
                -o "quant.spec=int:bits=$b,sym=false,group=32,fit=search"
            quant_run "cls-w$b-$m" "$src/configs/mnist-cnn-small-w$b.cfg" -o "quant.method=$m"
        done
        quant_run "cls-w$b-layer" "$src/configs/mnist-cnn-small-w$b.cfg" -o round.loss=layer
        for d in off on; do
            quant_run "cls-w$b-block-$d" "$src/configs/mnist-cnn-small-w$b.cfg" \
                -o round.loss=block -o "round.block_descent=$d"
        done
    done
    for imp in sensitivity normalized error; do
        for count in codes all; do
            quant_run "mixed-$imp-$count" "$src/configs/stories260K-mixed3.cfg" \
                -o "importance.method=$imp" -o "budget.count=$count"
        done
        quant_run "cls-mixed-$imp" "$src/configs/mnist-cnn-small-w2.5-mixed.cfg" -o "importance.method=$imp"
    done
    for s in text generated random; do
        quant_run "calib-$s" "$src/configs/stories260K-w3.cfg" -o "calibration.source=$s" \
            -o calibration.segments=64 -o calibration.seq_len=128
    done
    {
        echo "## Variants of the shipped configurations"
        echo
        echo "### Rounding methods, stories260K"
        echo
        echo "\`configs/stories260K-wB.cfg -o quant.method=M\`: asymmetric integers in groups of 32"
        echo "(fp16 scales, zero-points at code width), every linear layer of every block."
        echo "Cells: perplexity (KLD). Full precision: PPL $(f4 "$(j fp-lm .ppl)")."
        echo
        echo "| code bits | fit | bits/weight | rtn | gptq | adaround | signround |"
        echo "|---|---|---:|---:|---:|---:|---:|"
        for b in 4 3 2; do
            for fit in minmax search; do
                sfx=""
                [ $fit = search ] && sfx=-search
                row="| $b | $fit | $(f4 "$(j "lm-w$b-gptq$sfx" .bpw)") |"
                for m in "${methods[@]}"; do row="$row $(lm_cell "lm-w$b-$m$sfx") |"; done
                echo "$row"
            done
        done
        echo
        echo "(\`fit=search\`: \`-o quant.spec=int:bits=B,sym=false,group=32,fit=search\`, per group"
        echo "the clipping ratio with the least Hessian-diagonal-weighted error.)"
        echo
        echo "### Rounding methods, mnist-cnn-small"
        echo
        echo "\`configs/mnist-cnn-small-wB.cfg -o quant.method=M\`: per-channel asymmetric integers."
        echo "Cells: accuracy on images 1024-9999 (on all 10,000). Full precision: $(pct "$(j cfg-mnist-cnn-small-w4 .fp.accuracy)") ($(pct "$(j cfg-mnist-cnn-small-w4 .fp.all.accuracy)"))."
        echo
        echo "| code bits | bits/weight | rtn | gptq | adaround | signround |"
        echo "|---|---:|---:|---:|---:|---:|"
        for b in 4 3 2; do
            row="| $b | $(f4 "$(j "cls-w$b-gptq" .bpw)") |"
            for m in "${methods[@]}"; do row="$row $(cls_cell "cls-w$b-$m") |"; done
            echo "$row"
        done
        echo
        echo "### Block loss, mnist-cnn-small"
        echo
        echo "\`configs/mnist-cnn-small-wB.cfg -o round.loss=L\` (AdaRound, 500 steps, from GPTQ),"
        echo "then for \`block\` 200 steps per block: signed steps (\`round.block_descent = off\`) or"
        echo "judged steps (\`on\`). Cells: KL divergence from full precision on images 1024-9999"
        echo "(accuracy); round stage seconds."
        echo
        echo "| code bits | layer loss | block, signed steps | block, judged steps | seconds (layer, signed, judged) |"
        echo "|---|---:|---:|---:|---|"
        for b in 4 3 2; do
            row="| $b |"
            for n in layer block-off block-on; do
                row="$row $(f5 "$(j "cls-w$b-$n" .quantized.kld)") ($(pct "$(j "cls-w$b-$n" .quantized.accuracy)")) |"
            done
            echo "$row $(f1 "$(j "cls-w$b-layer" .times.round.max)"), $(f1 "$(j "cls-w$b-block-off" .times.round.max)"), $(f1 "$(j "cls-w$b-block-on" .times.round.max)") |"
        done
        echo
        echo "### Importance estimators and budget kinds, mixed precision"
        echo
        echo "\`configs/stories260K-mixed3.cfg -o importance.method=I -o budget.count=C\`: an average"
        echo "of 3.0 bits per weight, counting the codes alone (\`codes\`, the shipped setting) or"
        echo "the whole storage (\`all\`). Uniform 3-bit with the same rounding, for comparison:"
        echo "$(f4 "$(j cfg-stories260K-w3 .bpw)") bits per weight, PPL $(f4 "$(j cfg-stories260K-w3 .quantized.ppl)"), KLD $(f4 "$(j cfg-stories260K-w3 .quantized.kld)")."
        echo
        echo "| importance | budget counts | bits/weight | PPL | KLD | top-1 agreement |"
        echo "|---|---|---:|---:|---:|---:|"
        for imp in sensitivity normalized error; do
            for count in codes all; do
                n=mixed-$imp-$count
                echo "| $imp | $count | $(f4 "$(j "$n" .bpw)") | $(f4 "$(j "$n" .quantized.ppl)") | $(f4 "$(j "$n" .quantized.kld)") | $(f4 "$(j "$n" .quantized.top1_agreement)") |"
            done
        done
        echo
        echo "\`configs/mnist-cnn-small-w2.5-mixed.cfg -o importance.method=I\` (2.5 bits per weight):"
        echo
        echo "| importance | bits/weight | accuracy (images 1024-9999) | accuracy (all) | code bits per layer |"
        echo "|---|---:|---:|---:|---|"
        for imp in sensitivity normalized error; do
            n=cls-mixed-$imp
            echo "| $imp | $(f4 "$(j "$n" .bpw)") | $(pct "$(j "$n" .quantized.accuracy)") | $(pct "$(j "$n" .quantized.all.accuracy)") | $(j "$n" '[.layers[] | "\(.layer) \(.code_bits)"] | join(", ")') |"
        done
        echo
        echo "### Calibration sources"
        echo
        echo "\`configs/stories260K-w3.cfg -o calibration.source=S\`, 64 samples of 128 tokens each"
        echo "(\`generated\`: sampled from the full-precision model itself, no text needed)."
        echo
        echo "| source | PPL | KLD | top-1 agreement | calibrate seconds (max over ranks) |"
        echo "|---|---:|---:|---:|---:|"
        for s in text generated random; do
            n=calib-$s
            echo "| $s | $(f4 "$(j "$n" .quantized.ppl)") | $(f4 "$(j "$n" .quantized.kld)") | $(f4 "$(j "$n" .quantized.top1_agreement)") | $(f1 "$(j "$n" .times.calibrate.max)") |"
        done
        echo
    } >>"$out"
fi

# ---- 3. sweeps ------------------------------------------------------------------------------
if [ $sweeps -eq 1 ]; then
    echo "## Sweeps" >>"$out"
    echo >>"$out"
    for cfg in "$src"/configs/sweep-*.cfg; do
        name=$(basename "$cfg" .cfg)
        say "sweep $name"
        d=$work/$name
        run_json "$name" sweep "$cfg" -o "sweep.output_dir=$d" -o sweep.plot=false
        {
            echo "### $name"
            echo
            echo "\`mpirun -np $np build/mpquant sweep configs/$name.cfg\` ($(secs "$name") s)."
            echo
            if [ -f "$d/report.md" ]; then
                sed -E 's/^#+ /#### /' "$d/report.md"
            else
                echo "failed: no report"
            fi
            echo
        } >>"$out"
    done
fi

# ---- 4. the rounding study -------------------------------------------------------------------
if [ $study -eq 1 ]; then
    say "rounding study"
    d=$work/study
    t0=$(date +%s)
    if MPQ_BIN="$build/mpquant" MPQ_MPIEXEC="$launcher" bash "$src/configs/study-stories260K.sh" \
        "$d" --np "$np" 2>"$work/study.log"; then
        status=ok
    else
        status=failed
        sed 's/^/  study: /' "$work/study.log" >&2
    fi
    if [ -n "$study_plot" ]; then
        cp "$d/study.png" "$study_plot" || { say "no study plot to copy to $study_plot"; failed=1; }
    fi
    {
        echo "## Rounding study"
        echo
        echo "\`configs/study-stories260K.sh DIR --np $np\` ($(($(date +%s) - t0)) s, $status):"
        echo "stories260K, int asymmetric g32 unless the grid says otherwise, 128 WikiText-2"
        echo "segments; KL divergence (nats) and top-1 agreement with full precision on the first"
        echo "500 documents of tinyshakespeare, and KL divergence on 32 sequences of 128 tokens"
        echo "the full-precision model samples (in domain). Main rows: mean ± half the spread over"
        echo "calibration seeds 1234, 1235, 1236."
        echo
        [ -f "$d/study.md" ] && cat "$d/study.md" || echo "failed: no table"
        echo
    } >>"$out"
    say "rate-distortion comparison"
    d=$work/pareto
    t0=$(date +%s)
    if MPQ_BIN="$build/mpquant" MPQ_MPIEXEC="$launcher" \
        bash "$src/configs/pareto-rate-stories260K.sh" "$d" --np "$np" 2>"$work/pareto.log"; then
        status=ok
    else
        status=failed
        sed 's/^/  pareto: /' "$work/pareto.log" >&2
    fi
    {
        echo "## Rate-distortion: fixed-length against entropy-coded codes"
        echo
        echo "\`configs/pareto-rate-stories260K.sh DIR --np $np\` ($(($(date +%s) - t0)) s, $status):"
        echo "stories260K, GPTQ int asymmetric g32 at 2, 3 and 4 bits, 128 WikiText-2 segments,"
        echo "full-precision propagation; KL divergence (nats) on the first 500 documents of"
        echo "tinyshakespeare against the bits per weight the quantized layers take as stored"
        echo "(scales and zero-points included). Fixed: fixed-length codes. Coded: zstd-coded"
        echo "codes, with each bit-width also at round.rate_lambda 2 and 8. The best point of"
        echo "each within every budget:"
        echo
        [ -f "$d/pareto.md" ] && cat "$d/pareto.md" || echo "failed: no table"
        echo
    } >>"$out"
fi

if [ -n "$study_from" ]; then
    {
        echo "## Rounding study"
        echo
        echo "This section and the next are those of the run at commit $from_commit"
        echo "($from_date), not measured again (\`--study-from\`)."
        sed '1d' "$study_copy"
    } >>"$out"
    rm -f "$study_copy"
fi

# ---- 5. benchmarks -------------------------------------------------------------------------
# bench_table FILE: the JSON lines of FILE as Markdown tables, one per kind
# of line (the same "bench" value and the same keys), in the order printed.
bench_table() {
    jq -rs '
        [.[] | {sig: ([.bench] + keys_unsorted), row: .}] as $all
        | ($all | map(.sig)
           | reduce .[] as $s ([]; if any(.[]; . == $s) then . else . + [$s] end))[] as $sig
        | ($all | map(select(.sig == $sig) | .row)) as $rows
        | ($sig[1:] | map(select(. != "bench"))) as $cols
        | "`" + ($rows[0].bench | tostring) + "`:", "",
          ("| " + ($cols | join(" | ")) + " |"),
          ("|" + ($cols | map("---") | join("|")) + "|"),
          ($rows[] | . as $r | "| " + ($cols | map($r[.] | tostring) | join(" | ")) + " |"),
          ""
    ' "$1"
}

if [ $bench -eq 1 ]; then
    {
        echo "## Benchmarks"
        echo
        echo "\`ctest --test-dir build -L bench\`, one test at a time. Each benchmark prints JSON"
        echo "lines; a speed is given as a ratio to a reference operation timed in the same run"
        echo "(memcpy, SGEMM, DGEMM, DSYRK, qsort, or the naive encoder), which makes the ratio"
        echo "less sensitive to the machine's load than the absolute figures. Tables: the"
        echo "lines as printed, one table per kind."
        echo
    } >>"$out"
    for t in "${bench_names[@]}"; do
        say "benchmark $t"
        t0=$(date +%s)
        ctest --test-dir "$build" -R "^$t\$" -V --timeout 3600 >"$work/$t.log" 2>&1
        rc=$?
        sec=$(($(date +%s) - t0))
        sed -nE 's/^[0-9]+: (\{"bench".*)$/\1/p' "$work/$t.log" >"$work/$t.jsonl"
        {
            echo "### $t"
            echo
            if [ $rc -ne 0 ]; then
                echo "failed (ctest exit status $rc after $sec s)."
                failed=1
                tail -n 30 "$work/$t.log" >&2
            else
                echo "$sec s."
            fi
            echo
            [ -s "$work/$t.jsonl" ] && bench_table "$work/$t.jsonl"
        } >>"$out"
    done
fi

{
    echo "---"
    echo
    echo "Finished $(date -u '+%Y-%m-%d %H:%M UTC'); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
} >>"$out"
cat "$out"
[ $failed -eq 0 ] || say "some commands failed: see the rows marked failed and the log above"
exit $failed
