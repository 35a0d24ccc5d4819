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
#   MPQ_BENCH_REPEAT  runs per rank count, default 2: the fastest is
#                     reported (other jobs on a shared machine only ever
#                     slow a run down, and a run on every core the most)
#
# One JSON line per rank count, from its fastest run (repeats: how many
# ran): total_s and every stage's time (max over ranks), each stage's
# speed-up against the first rank count run, the parallel efficiency of
# the whole run, and peak RSS per rank; and the rate of H accumulation
# inside the run (stage hessian_accumulate, the slowest rank, counting
# rows x d x (d + 1) per input group and its share of the rows) as a
# fraction of DSYRK at the same widths, measured by BENCH_HESSIAN
# (one rank, before the runs).
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
first=""
for np in ${MPQ_BENCH_RANKS:-1 2 4}; do
    if [ -z "${MPQ_BENCH_RANKS:-}" ] && ((np > $(nproc))); then
        printf '{"bench":"run","ranks":%d,"skipped":"needs %d cores, the machine has %d"}\n' \
            "$np" "$np" "$(nproc)"
        continue
    fi
    rm -f "$dir/now.json"
    for rep in $(seq "${MPQ_BENCH_REPEAT:-2}"); do
        run $MPQ_MPIEXEC -n "$np" "$MPQ_BIN" run "$dir/run.cfg" --json -q
        expect_rc 0
        [ "$RC" -eq 0 ] || continue
        last_json | jq -c '{ranks: .ranks, times: (.times | map_values(.max)),
                            rss: .peak_rss_mib.max}' >"$dir/rep.json"
        # the fastest repetition, stage times and memory of that run
        if [ ! -f "$dir/now.json" ] ||
            jq -e --slurpfile n "$dir/now.json" '.times.total < $n[0].times.total' \
                "$dir/rep.json" >/dev/null; then
            mv "$dir/rep.json" "$dir/now.json"
        fi
    done
    [ -f "$dir/now.json" ] || continue
    [ -n "$first" ] || first=$(cat "$dir/now.json")
    jq -c --argjson f "$first" --arg segs "$segs" --arg len "$seqlen" \
        --argjson rep "${MPQ_BENCH_REPEAT:-2}" '
        {bench: "run", model: "llama 1024 x 2816, 8 layers", calibration_tokens:
         (($segs | tonumber) * ($len | tonumber)), ranks: .ranks, repeats: $rep,
         total_s: .times.total,
         efficiency_vs_first: ($f.times.total / .times.total * $f.ranks / .ranks),
         stages: (.times | with_entries(select(.key != "total" and .value > 0.05)
                  | .value = {s: .value, speedup: ($f.times[.key] / .value)})),
         peak_rss_mib: .rss,
         hessian_accumulate: ((($segs | tonumber) * ($len | tonumber) / .ranks * 8) as $rows
             | {s: .times.hessian_accumulate,
                dsyrk_gflops_1024: $d1, dsyrk_gflops_2816: $d2,
                ratio_vs_dsyrk: (($rows * 3 * 1024 * 1025 / ($d1 * 1e9)
                                  + $rows * 2816 * 2817 / ($d2 * 1e9))
                                 / .times.hessian_accumulate)})}' \
        --argjson d1 "$dsyrk1024" --argjson d2 "$dsyrk2816" "$dir/now.json"
done
finish
