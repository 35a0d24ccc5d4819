#!/bin/bash
# bench_run.sh MKLLAMA: a whole `mpquant run` at several rank counts, with
# the speed-up of every stage against the 1-rank run of the same invocation
# (the peer run on the same cores).
#
# The model: a Hugging Face Llama directory with random BF16 weights written
# by mpq_mkllama, hidden 1024, intermediate 2816, 8 layers, 16 heads,
# vocabulary 512 (the stories260K tokenizer serves the evaluation). The run:
# GPTQ int4 g128, random calibration tokens (MPQ_BENCH_TOKENS, default
# 32 x 256), two documents evaluated, the checkpoint written.
#
#   MPQ_BENCH_RANKS   rank counts, default "1 2 4" without those above the
#                     number of cores (reported as skipped)
#   MPQ_BENCH_TOKENS  calibration "SEGMENTS SEQ_LEN", default "32 256"
#   MPQ_BENCH_FEW     the few-samples runs' "SEGMENTS SEQ_LEN", default
#                     "8 256" (one chunk, which the ranks share)
#   MPQ_BENCH_REPEAT  repetitions, default 3, each running every rank
#                     count in turn: the fastest run of each is reported
#                     (other jobs on a shared machine only ever slow a run
#                     down, and a run on every core the most)
#
# With N > 1 ranks, each repetition also starts N single-rank runs of the
# same job at once (unbound, each writing its own checkpoint): the time of
# the slowest, best over the repetitions, is what the machine gives N
# independent jobs, with its caches, memory bandwidth and clock shared as
# the N ranks share them. Against it, the speed-up the machine allows and
# the run's efficiency without the machine's share of the loss.
#
# One JSON line per rank count, from its fastest run (repeats: how many
# ran): total_s, the speed-up and parallel efficiency against the first
# rank count, concurrent_singles_s with speedup_bound (N x the 1-rank time
# over it) and efficiency_vs_concurrent (it over N x total_s), every
# stage's time (max over ranks) with its speed-up against the first rank
# count, and peak RSS per rank; and the rate of H accumulation
# inside the run (stage hessian_accumulate, the slowest rank, counting
# rows x d x (d + 1) per input group and its share of the rows) as a
# fraction of DSYRK at the same widths, measured by BENCH_HESSIAN
# (one rank, before the runs). Then the same lines ("bench":
# "run_few_samples", without concurrent runs) for the few-samples runs.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_jq
need_shared data/models/stories260K/tok512.bin
need_shared data/text/tinyshakespeare.txt
mkllama=${1:?usage: bench_run.sh MKLLAMA BENCH_HESSIAN}
bhess=${2:?usage: bench_run.sh MKLLAMA BENCH_HESSIAN}
make_work_dir
# DSYRK's rate at the run's two input widths (1024: q/k/v, o, gate/up; 2816: down)
for d in 1024 2816; do
    run "$bhess" --d "$d" --rows 4096 --chunk-rows 2048 --no-factor
    expect_rc 0
    grep '"bench":"hessian_accumulate"' "$OUT" | jq -r .dsyrk_gflops >"$dir/dsyrk$d"
done
dsyrk1024=$(cat "$dir/dsyrk1024")
dsyrk2816=$(cat "$dir/dsyrk2816")
read -r segs seqlen <<<"${MPQ_BENCH_TOKENS:-32 256}"
bench_llama "$mkllama" 1024 2816 8 16 16 "$segs" "$seqlen"
# The rank counts to run: those above the number of cores are reported as
# skipped unless MPQ_BENCH_RANKS names them.
ranks=""
for np in ${MPQ_BENCH_RANKS:-1 2 4}; do
    if [ -z "${MPQ_BENCH_RANKS:-}" ] && ((np > $(nproc))); then
        printf '{"bench":"run","ranks":%d,"skipped":"needs %d cores, the machine has %d"}\n' \
            "$np" "$np" "$(nproc)"
    else
        ranks="$ranks $np"
    fi
done
# keep_faster NEW KEPT: NEW (a JSON file with .total) replaces KEPT when
# KEPT is missing or slower.
keep_faster() {
    if [ ! -f "$2" ] || jq -e --slurpfile n "$2" '.total < $n[0].total' "$1" >/dev/null; then
        mv "$1" "$2"
    fi
}
# Keeps $dir/best$1.json, the faster of it and the run of $2 (--json
# output): the total, the stage times (max over ranks) and memory.
keep_best() {
    tail -n 1 "$2" | jq -c '{ranks: .ranks, total: .times.total.max,
                             times: (.times | map_values(.max)), rss: .peak_rss_mib.max}' \
        >"$dir/rep.json" && keep_faster "$dir/rep.json" "$dir/best$1.json"
}
# NP single-rank runs of the same job at once, each with its own output,
# unbound (the scheduler gives each a core): what the machine does with NP
# independent jobs. Keeps $dir/concNP.json, the slowest of them, when it
# beats the one kept.
concurrent() {
    local n=$1 i pids="" bad=0
    LAST_CMD="$n x $MPQ_MPIEXEC -n 1 --bind-to none $MPQ_BIN run $dir/run-cI.cfg --json -q"
    for i in $(seq "$n"); do
        sed "s#$dir/out.h5#$dir/out-c$i.h5#" "$dir/run.cfg" >"$dir/run-c$i.cfg"
        $MPQ_MPIEXEC -n 1 --bind-to none "$MPQ_BIN" run "$dir/run-c$i.cfg" --json -q \
            >"$dir/c$i.out" 2>"$dir/c$i.err" &
        pids="$pids $!"
    done
    for i in $pids; do wait "$i" || bad=1; done
    if [ "$bad" -ne 0 ]; then
        fail "a concurrent single-rank run failed: $(head -c 2000 "$dir"/c*.err)"
        return
    fi
    for i in $(seq "$n"); do tail -n 1 "$dir/c$i.out"; done |
        jq -s -c '{total: (map(.times.total.max) | max)}' >"$dir/rep.json" &&
        keep_faster "$dir/rep.json" "$dir/conc$n.json"
}
# Repetitions interleave the rank counts, so that a slow spell of a shared
# machine falls on all of them alike. The few-samples runs (MPQ_BENCH_FEW
# tokens, default 8 x 256: one chunk, shared by the ranks) are timed the
# same way, without concurrent single-rank runs.
read -r fsegs fseqlen <<<"${MPQ_BENCH_FEW:-8 256}"
sed "s#segments = $segs; seq_len = $seqlen;#segments = $fsegs; seq_len = $fseqlen;#" \
    "$dir/run.cfg" >"$dir/run-few.cfg"
for rep in $(seq "${MPQ_BENCH_REPEAT:-3}"); do
    for np in $ranks; do
        run $MPQ_MPIEXEC -n "$np" "$MPQ_BIN" run "$dir/run.cfg" --json -q
        expect_rc 0
        [ "$RC" -eq 0 ] && keep_best "$np" "$OUT"
        ((np > 1)) && concurrent "$np"
    done
done
for rep in $(seq "${MPQ_BENCH_REPEAT:-3}"); do
    for np in $ranks; do
        run $MPQ_MPIEXEC -n "$np" "$MPQ_BIN" run "$dir/run-few.cfg" --json -q
        expect_rc 0
        [ "$RC" -eq 0 ] && keep_best "few$np" "$OUT"
    done
done
# report BENCH TAG SEGMENTS SEQ_LEN: one line per rank count from
# $dir/bestTAGNP.json.
report() {
    local first="" np conc
    for np in $ranks; do
        [ -f "$dir/best$2$np.json" ] || continue
        [ -n "$first" ] || first=$(cat "$dir/best$2$np.json")
        conc=null
        [ -f "$dir/conc$np.json" ] && [ -z "$2" ] && conc=$(jq .total "$dir/conc$np.json")
        jq -c --argjson f "$first" --arg bench "$1" --arg segs "$3" --arg len "$4" \
            --argjson rep "${MPQ_BENCH_REPEAT:-3}" --argjson conc "$conc" '
            {bench: $bench, model: "llama 1024 x 2816, 8 layers", calibration_tokens:
             (($segs | tonumber) * ($len | tonumber)), ranks: .ranks, repeats: $rep,
             total_s: .times.total,
             speedup: ($f.times.total / .times.total),
             efficiency_vs_first: ($f.times.total / .times.total * $f.ranks / .ranks),
             concurrent_singles_s: $conc,
             speedup_bound: (if $conc == null or $f.ranks != 1 then null
                             else .ranks * $f.times.total / $conc end),
             efficiency_vs_concurrent: (if $conc == null then null
                                        else $conc / (.ranks * .times.total) end),
             stages: (.times | with_entries(select(.key != "total" and .value > 0.05)
                      | .value = {s: .value, speedup: ($f.times[.key] / .value)})),
             peak_rss_mib: .rss,
             hessian_accumulate: ((($segs | tonumber) * ($len | tonumber) / .ranks * 8) as $rows
                 | {s: .times.hessian_accumulate,
                    dsyrk_gflops_1024: $d1, dsyrk_gflops_2816: $d2,
                    ratio_vs_dsyrk: (($rows * 3 * 1024 * 1025 / ($d1 * 1e9)
                                      + $rows * 2816 * 2817 / ($d2 * 1e9))
                                     / .times.hessian_accumulate)})}' \
            --argjson d1 "$dsyrk1024" --argjson d2 "$dsyrk2816" "$dir/best$2$np.json"
    done
}
report run "" "$segs" "$seqlen"
report run_few_samples few "$fsegs" "$fseqlen"
finish
