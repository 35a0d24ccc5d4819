#!/bin/bash
# study-stories260K.sh: the rounding study on stories260K. Each row changes
# one axis of the rounding from the shipped configurations
# (stories260K-w{2,3,4}.cfg: int asymmetric g32, GPTQ, 128 WikiText-2
# segments) with the group ranges of the --fit option (default search: the
# range of least Hessian-weighted error per group): the loss (layer, block, or network: block plus the KL
# divergence from the full-precision model's prediction, or from the one the
# full-precision block gives on the same inputs), the degrees of freedom (codes, or
# codes and scales: signround learns scales unless told not to, and the
# block loss learns them with round.block_scales = on; codes, scales and
# corrections of the attention projections' biases, round.learn_bias = on), the
# rounding variable (offset or sigmoid), the
# optimizer (signsgd, adam, sgdm; for the block loss, signed steps with
# momentum, round.block_momentum), the grid (uniform int, powerexp, nf4,
# fp4) and the data of the network loss (4 times the calibration segments,
# then also twice the steps per block, then that with momentum too), at 2,
# 3 and 4 bits. Every point is evaluated against the
# full-precision model twice: on the shipped tinyshakespeare evaluation
# (KL divergence, top-1 agreement, perplexity) and in the training domain,
# on 32 sequences of 128 tokens the full-precision model samples itself
# (eval.protocol = generated; the same sequences for every point). The main rows (the
# first four and the network loss's best) are run with three calibration seeds.
#
# Usage: configs/study-stories260K.sh OUTDIR [--quick] [--np N] [--bits "2 3 4"]
#        [--seeds "1234 1235 1236"] [--axes "loss freedom variable optimizer grid data"]
#        [--fit search|minmax]
#   --quick  reduced size (4 segments of 64 tokens, 10 steps, 20
#            evaluation documents, 4 generated sequences of 32 tokens): the
#            test's form;
#            its figures are not the study's
# Environment: MPQ_BIN (default build/mpquant), MPQ_MPIEXEC (default
# "mpiexec"), MPQ_SHARED_DIR (default ../shared, beside the repository).
# Writes OUTDIR/study.csv (one line per run), OUTDIR/study.md (the table:
# mean over seeds, with the spread max - min where there are several) and,
# with gnuplot, OUTDIR/study.png (KL divergence against bits per row).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: study-stories260K.sh OUTDIR [--quick] [--np N] [--bits LIST] [--seeds LIST]}
shift
quick=0 np=2 bits="2 3 4" seeds="1234 1235 1236" axes="loss freedom variable optimizer grid data"
fit=search
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=1 ;;
    --np) np=$2; shift ;;
    --bits) bits=$2; shift ;;
    --seeds) seeds=$2; shift ;;
    --axes) axes=$2; shift ;;
    --fit) fit=$2; shift ;;
    *) echo "study-stories260K.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case $fit in search | minmax) ;; *) echo "study-stories260K.sh: --fit $fit: search or minmax" >&2; exit 2 ;; esac
bin=${MPQ_BIN:-$here/../build/mpquant}
mpiexec=${MPQ_MPIEXEC:-mpiexec}
export MPQ_SHARED_DIR=${MPQ_SHARED_DIR:-$(cd "$here/../.." && pwd)/shared}
model="$MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin"
tok="$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin"
for f in "$bin" "$model" "$tok"; do
    [ -r "$f" ] || { echo "study-stories260K.sh: cannot read $f" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "study-stories260K.sh: needs jq" >&2; exit 1; }
mkdir -p "$out"
size=()
gendocs=32 genlen=128
if [ "$quick" = 1 ]; then
    size=(-o calibration.segments=4 -o calibration.seq_len=64 -o round.iters=10
        -o round.block_iters=10 -o eval.docs=20)
    gendocs=4 genlen=32
fi
# the calibration segments and block-loss steps every row starts from (the
# effective configuration at this size): the data axis scales them (SEGS4,
# ITERS2 in a row's overrides)
eff=$("$bin" check "$here/stories260K-w2.cfg" --json -q "${size[@]}" | tail -n 1)
segs=$(jq -r .effective.calibration.segments <<<"$eff")
iters=$(jq -r .effective.round.block_iters <<<"$eff")

# The rows: name | axis | overrides (BITS stands for the bit-width, SEGS4
# for 4 times the calibration segments, ITERS2 for twice the block loss's
# steps). The main rows are repeated for every seed.
rows=(
    "gptq|loss|-o quant.method=gptq"
    "gptq + block loss|loss|-o quant.method=gptq -o round.loss=block"
    "signround|loss|-o quant.method=signround"
    "signround + block loss|loss|-o quant.method=signround -o round.loss=block"
    "gptq + network loss|loss|-o quant.method=gptq -o round.loss=network"
    "gptq + network loss, scales too|loss|-o quant.method=gptq -o round.loss=network -o round.block_scales=on"
    "gptq + network loss against the block's prediction, scales too|loss|-o quant.method=gptq -o round.loss=network -o round.block_scales=on -o round.kl_target=block"
    "signround, codes only|freedom|-o quant.method=signround -o round.learn_scales=off"
    "signround, codes only + block loss|freedom|-o quant.method=signround -o round.learn_scales=off -o round.loss=block"
    "gptq + block loss, scales too|freedom|-o quant.method=gptq -o round.loss=block -o round.block_scales=on"
    "signround + block loss, scales too|freedom|-o quant.method=signround -o round.loss=block -o round.block_scales=on"
    "gptq + block loss, scales and biases too|freedom|-o quant.method=gptq -o round.loss=block -o round.block_scales=on -o round.learn_bias=on"
    "sigmoid variable, adam|variable|-o quant.method=adaround -o round.variable=sigmoid -o round.optimizer=adam"
    "offset variable, adam|optimizer|-o quant.method=signround -o round.optimizer=adam"
    "offset variable, sgdm|optimizer|-o quant.method=signround -o round.optimizer=sgdm"
    "gptq + network loss, scales too, momentum 0.5|optimizer|-o quant.method=gptq -o round.loss=network -o round.block_scales=on -o round.block_momentum=0.5"
    "powerexp grid|grid|-o quant.spec=powerexp:bits=BITS,group=32"
    "powerexp grid + block loss|grid|-o quant.spec=powerexp:bits=BITS,group=32 -o round.loss=block"
    "nf4 grid|grid|-o quant.spec=nf4:group=32"
    "nf4 grid + block loss|grid|-o quant.spec=nf4:group=32 -o round.loss=block"
    "fp4 grid|grid|-o quant.spec=fp4:group=32"
    "fp4 grid + block loss|grid|-o quant.spec=fp4:group=32 -o round.loss=block"
    "gptq + network loss, scales too, 4x the segments|data|-o quant.method=gptq -o round.loss=network -o round.block_scales=on -o calibration.segments=SEGS4"
    "gptq + network loss, scales too, 4x the segments, 2x the steps|data|-o quant.method=gptq -o round.loss=network -o round.block_scales=on -o calibration.segments=SEGS4 -o round.block_iters=ITERS2"
    "gptq + network loss, scales too, momentum 0.5, 4x the segments, 2x the steps|data|-o quant.method=gptq -o round.loss=network -o round.block_scales=on -o round.block_momentum=0.5 -o calibration.segments=SEGS4 -o round.block_iters=ITERS2"
)
csv="$out/study.csv"
echo "row,axis,bits,seed,kld,top1,ppl,kld_generated,top1_generated,bpw,round_s" >"$csv"

# point NAME AXIS BITS SEED OVERRIDES: one run and its two evaluations
point() {
    local name=$1 axis=$2 b=$3 seed=$4 ov=$5 ck="$out/ck.h5"
    local ovs
    ov=${ov//BITS/$b}
    ov=${ov//SEGS4/$((4 * segs))}
    read -r -a ovs <<<"${ov//ITERS2/$((2 * iters))}"
    rm -rf "$ck" "$ck.partial"
    local j g
    j=$($mpiexec -n "$np" "$bin" run "$here/stories260K-w$b.cfg" --json -q "${size[@]}" \
        -o calibration.seed="$seed" -o output.path="$ck" -o output.overwrite=true \
        -o quant.spec="int:bits=$b,sym=false,group=32,fit=$fit" "${ovs[@]}" |
        tail -n 1)
    g=$($mpiexec -n "$np" "$bin" eval --model "$ck" --tokenizer "$tok" --reference "$model" \
        --protocol generated --docs "$gendocs" --window "$genlen" --json -q | tail -n 1)
    local q
    q=$(jq -r '[.quantized.kld, .quantized.top1_agreement, .quantized.ppl] | @csv' <<<"$j")
    printf '"%s","%s",%s,%s,%s,%s,%s,%s\n' "$name" "$axis" "$b" "$seed" "$q" \
        "$(jq -r '[.kld, .top1_agreement] | @csv' <<<"$g")" "$(jq -r .bpw <<<"$j")" \
        "$(jq -r '.times.round.max' <<<"$j")" >>"$csv"
    echo "study: $name, $b bits, seed $seed: KLD $(jq -r .quantized.kld <<<"$j")" >&2
}

for b in $bits; do
    for r in "${rows[@]}"; do
        IFS='|' read -r name axis ov <<<"$r"
        case $name in nf4* | fp4*) [ "$b" = 4 ] || continue ;; esac
        [[ " $axes " == *" $axis "* ]] || continue
        k=0
        for seed in $seeds; do
            # the main rows (the first four and the best of the network
            # loss) with every seed, the others once
            case $name in gptq | "gptq + block loss" | signround | "signround + block loss" | \
                "gptq + network loss, scales too, momentum 0.5, 4x the segments, 2x the steps") ;;
            *) [ "$k" = 0 ] || continue ;;
            esac
            point "$name" "$axis" "$b" "$seed" "$ov"
            k=$((k + 1))
        done
    done
done
rm -rf "$out/ck.h5"

# The table: rows in order, one column per bit-width, mean over seeds and
# the spread (max - min) where there are several.
python3 - "$csv" "$out/study.md" "$bits" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
bits = sys.argv[3].split()
order, cells = [], {}
for r in rows:
    if r["row"] not in order:
        order.append(r["row"])
    cells.setdefault((r["row"], r["bits"]), []).append(r)
def fmt(v, key, digits):
    xs = [float(x[key]) for x in v]
    m = sum(xs) / len(xs)
    s = f"{m:.{digits}f}"
    return s + (f" ±{(max(xs) - min(xs)) / 2:.{digits}f}" if len(xs) > 1 else "")
with open(sys.argv[2], "w") as f:
    f.write("| row | axis | " + " | ".join(
        f"{b} bits: KLD | top-1 | KLD generated" for b in bits) + " |\n")
    f.write("|---|---|" + "---|---|---|" * len(bits) + "\n")
    for name in order:
        axis = next(r["axis"] for r in rows if r["row"] == name)
        line = [name, axis]
        for b in bits:
            v = cells.get((name, b))
            line += [fmt(v, "kld", 3), fmt(v, "top1", 3), fmt(v, "kld_generated", 3)] if v \
                else ["-", "-", "-"]
        f.write("| " + " | ".join(line) + " |\n")
PY

# The plot: KL divergence (log) against bits, one line per row.
if command -v gnuplot >/dev/null; then
    python3 - "$csv" "$out/study.dat" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
order = []
for r in rows:
    if r["row"] not in order:
        order.append(r["row"])
with open(sys.argv[2], "w") as f:
    for name in order:
        f.write(f'"{name}"\n')
        pts = {}
        for r in rows:
            if r["row"] == name:
                pts.setdefault(int(r["bits"]), []).append(float(r["kld"]))
        for b in sorted(pts):
            f.write(f"{b} {sum(pts[b]) / len(pts[b])}\n")
        f.write("\n\n")
PY
    nblocks=$(grep -c '^"' "$out/study.dat")
    gnuplot <<GP
set terminal pngcairo size 1100,1000
set output "$out/study.png"
set title "stories260K: KL divergence from full precision (tinyshakespeare) by rounding"
set xlabel "bits per code"
set ylabel "KL divergence (nats, log scale)"
set logscale y
set xtics 1
set key outside below left Left reverse font ",10"
set grid
plot for [i=0:$((nblocks - 1))] "$out/study.dat" index i using 1:2 with linespoints \
    title columnheader(1)
GP
fi
echo "study: $(($(wc -l <"$csv") - 1)) runs; $out/study.csv, $out/study.md" >&2
