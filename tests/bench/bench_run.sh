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
#
# One JSON line per rank count: total_s and every stage's time (max over
# ranks), each stage's speed-up against the first rank count run, the
# parallel efficiency of the whole run, and peak RSS per rank.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_jq
need_shared data/models/stories260K/tok512.bin
need_shared data/text/tinyshakespeare.txt
mkllama=${1:?usage: bench_run.sh MKLLAMA}
make_work_dir
read -r segs seqlen <<<"${MPQ_BENCH_TOKENS:-32 256}"
bench_llama "$mkllama" 1024 2816 8 16 16 "$segs" "$seqlen"
first=""
for np in ${MPQ_BENCH_RANKS:-1 2 4}; do
    if [ -z "${MPQ_BENCH_RANKS:-}" ] && ((np > $(nproc))); then
        printf '{"bench":"run","ranks":%d,"skipped":"needs %d cores, the machine has %d"}\n' \
            "$np" "$np" "$(nproc)"
        continue
    fi
    run $MPQ_MPIEXEC -n "$np" "$MPQ_BIN" run "$dir/run.cfg" --json -q
    expect_rc 0
    [ "$RC" -eq 0 ] || continue
    last_json | jq -c '{ranks: .ranks, times: (.times | map_values(.max)),
                        rss: .peak_rss_mib.max}' >"$dir/now.json"
    [ -n "$first" ] || first=$(cat "$dir/now.json")
    jq -c --argjson f "$first" --arg segs "$segs" --arg len "$seqlen" '
        {bench: "run", model: "llama 1024 x 2816, 8 layers", calibration_tokens:
         (($segs | tonumber) * ($len | tonumber)), ranks: .ranks, total_s: .times.total,
         efficiency_vs_first: ($f.times.total / .times.total * $f.ranks / .ranks),
         stages: (.times | with_entries(select(.key != "total" and .value > 0.05)
                  | .value = {s: .value, speedup: ($f.times[.key] / .value)})),
         peak_rss_mib: .rss}' "$dir/now.json"
done
finish
