#!/bin/bash
# bench_block.sh MKLLAMA: time and peak memory per rank of `mpquant run` on
# one transformer block of a real model's shape, at several rank counts,
# with a projection to the whole model.
#
# The block is a one-layer Hugging Face Llama directory with random BF16
# weights written by mpq_mkllama (vocabulary 512, so that the stories260K
# tokenizer serves the evaluation and the embedding and head stay small).
# The run: GPTQ int4 g128, random calibration tokens (MPQ_BENCH_TOKENS,
# default 16 x 256), two documents evaluated, the checkpoint written.
#
#   MPQ_BENCH_BLOCK   7b (hidden 4096, intermediate 11008, 32 heads; 32
#                     layers in the projection, the default) or 70b (8192,
#                     28672, 64 heads, 8 key-value heads; 80 layers)
#   MPQ_BENCH_RANKS   rank counts, default "1 2 4" without those above the
#                     number of cores (oversubscribed timings would measure
#                     the scheduler; they are reported as skipped)
#   MPQ_BENCH_TOKENS  calibration "SEGMENTS SEQ_LEN", default "16 256"
#
# One JSON line per rank count: block_s (the block's calibrate, Hessian,
# round and propagate time, max over ranks), speedup and efficiency against
# the 1-rank run of the same invocation (the peer run on the same cores),
# peak_rss_mib (max over ranks), min_mib (the analytic minimum per rank,
# below) and their ratio, and the projection: whole-model hours at that rank
# count (block_s x layers) and the memory per node of a node running that
# many ranks; and each stage's time (max over ranks, hessian_accumulate the
# local accumulation work inside hessian) with its speed-up. A rank count whose estimated memory exceeds the machine's
# available memory is reported as skipped.
#
# Analytic minimum per rank (MiB), the memory the block needs whatever the
# rank count: the block's weights in fp32 (4 P), this rank's share of the
# Hessians of the four distinct layer inputs (8 (3 H^2 + I^2) / ranks: three
# inputs of width H, one of width I, in double), this rank's activations
# (4 rows / ranks x (2 H + I)), and embedding and head as stored, BF16 (4 V H).
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_jq
need_shared data/models/stories260K/tok512.bin
need_shared data/text/tinyshakespeare.txt
mkllama=${1:?usage: bench_block.sh MKLLAMA}
make_work_dir

shape=${MPQ_BENCH_BLOCK:-7b}
case $shape in
7b) hid=4096 inter=11008 heads=32 kv=32 layers=32 ;;
70b) hid=8192 inter=28672 heads=64 kv=8 layers=80 ;;
*)
    echo "FAILED: MPQ_BENCH_BLOCK='$shape': expected 7b or 70b" >&2
    exit 1
    ;;
esac
read -r segs seqlen <<<"${MPQ_BENCH_TOKENS:-16 256}"
rows=$((segs * seqlen))
vocab=512

bench_llama "$mkllama" $hid $inter 1 $heads $kv $segs $seqlen
kvdim=$((hid / heads * kv))
params=$((2 * hid * hid + 2 * hid * kvdim + 3 * hid * inter))
avail_mib=$(awk '/MemAvailable/ { print int($2 / 1024) }' /proc/meminfo)
t1=""
cores=$(nproc)
for np in ${MPQ_BENCH_RANKS:-1 2 4}; do
    if [ -z "${MPQ_BENCH_RANKS:-}" ] && ((np > cores)); then
        printf '{"bench":"block","shape":"%s","ranks":%d,"skipped":"needs %d cores, the machine has %d"}\n' \
            "$shape" "$np" "$np" "$cores"
        continue
    fi
    min_mib=$(awk -v p=$params -v h=$hid -v i=$inter -v r=$rows -v n=$np -v v=$vocab 'BEGIN {
        printf "%.1f", (4 * p + 8 * (3 * h * h + i * i) / n + 4 * r / n * (2 * h + i) + 4 * v * h) / 1048576 }')
    # a bound on what the run holds per rank: about 12 bytes per weight,
    # the accumulator and H of the widest input (12 + 8 bytes per element:
    # an input is summed on one rank) and a share of the other inputs'
    est_mib=$(awk -v p=$params -v h=$hid -v i=$inter -v n=$np 'BEGIN {
        printf "%d", n * (12 * p + 20 * i * i + 20 * 3 * h * h / n) / 1048576 }')
    if ((est_mib > avail_mib * 8 / 10)); then
        printf '{"bench":"block","shape":"%s","ranks":%d,"skipped":"needs about %d MiB, %d MiB available"}\n' \
            "$shape" "$np" "$est_mib" "$avail_mib"
        continue
    fi
    run $MPQ_MPIEXEC -n "$np" "$MPQ_BIN" run "$dir/run.cfg" --json -q
    expect_rc 0
    [ "$RC" -eq 0 ] || continue
    last_json >"$dir/r.json"
    block_s=$(jq '[.times.calibrate.max, .times.hessian.max, .times.round.max,
                   (.times.propagate.max // 0)] | add' "$dir/r.json")
    rss=$(jq '.peak_rss_mib.max' "$dir/r.json")
    stages=$(jq -c '.times | {calibrate, hessian, hessian_accumulate, round, propagate}
                    | map_values(.max // 0)' "$dir/r.json")
    [ -n "$t1" ] || t1=$block_s
    [ -n "${stages1:-}" ] || stages1=$stages
    jq -cn --arg shape "$shape" --argjson np "$np" --argjson hid $hid --argjson inter $inter \
        --argjson params $params --argjson rows $rows --argjson block_s "$block_s" \
        --argjson t1 "$t1" --argjson rss "$rss" --argjson min "$min_mib" \
        --argjson layers $layers --argjson st "$stages" --argjson st1 "$stages1" \
        '{bench: "block", shape: $shape, hidden: $hid,
        intermediate: $inter, block_params: $params, calibration_rows: $rows, ranks: $np,
        block_s: $block_s, speedup_vs_first: ($t1 / $block_s),
        efficiency_vs_first: ($t1 / $block_s / $np), peak_rss_mib: $rss, min_mib: $min,
        rss_over_min: ($rss / $min),
        stages: ($st | with_entries(select(.value > 0.05)
                 | .value = {s: .value, speedup: ($st1[.key] / .value)})),
        projection: {layers: $layers, model_hours: ($block_s * $layers / 3600),
                     node_mib_at_this_rank_count: ($rss * $np)}}'
done
finish
