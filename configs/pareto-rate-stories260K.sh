#!/bin/bash
# pareto-rate-stories260K.sh: the rate-distortion comparison of issue 19 on
# stories260K: quality (KL divergence from full precision on the shipped
# tinyshakespeare evaluation) against the real size of the quantized layers,
# for fixed-length codes and for entropy-coded codes with rate-aware GPTQ.
# Two sweeps of the same model and calibration (GPTQ, int asymmetric g32,
# 128 WikiText-2 segments, full-precision propagation):
#   fixed  candidates int BITS, sizes as stored with fixed-length codes
#          (budget.count = "all", output.code_coding = "fixed");
#   coded  the same candidates plus each at round.rate_lambda = LAMBDA
#          ("spec;rate=LAMBDA"), sizes as stored zstd-coded
#          (budget.count = "coded", output.code_coding = "zstd").
# Each sweep has one uniform point per candidate and one budget point per
# average size in BUDGETS (real bits per weight, scales and zero-points
# included). The comparison takes, at every budget, the best KL divergence
# each front reaches within it.
#
# Usage: configs/pareto-rate-stories260K.sh OUTDIR [--quick] [--np N]
#        [--bits "2 3 4"] [--lambdas "2 8"] [--budgets "2.25 2.5 ... 4"]
#   --quick  reduced size (8 segments of 64 tokens, 20 evaluation documents,
#            budgets 2.5 and 3): the test's form; its figures are not the study's
# Environment: MPQ_BIN (default build/mpquant), MPQ_MPIEXEC (default
# "mpiexec"), MPQ_SHARED_DIR (default ../shared, beside the repository).
# Writes OUTDIR/fixed/ and OUTDIR/coded/ (the sweeps' reports) and
# OUTDIR/pareto.md: both fronts, the budget table and the verdict; with
# gnuplot also OUTDIR/pareto.png.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: pareto-rate-stories260K.sh OUTDIR [--quick] [--np N] [--bits LIST] [--lambdas LIST] [--budgets LIST]}
shift
quick=0 np=2 bits="2 3 4" lambdas="2 8" budgets="2.25 2.5 2.75 3 3.25 3.5 3.75 4 4.25 4.5"
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=1 budgets="2.5 3" ;;
    --np) np=$2; shift ;;
    --bits) bits=$2; shift ;;
    --lambdas) lambdas=$2; shift ;;
    --budgets) budgets=$2; shift ;;
    *) echo "pareto-rate-stories260K.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
bin=${MPQ_BIN:-$here/../build/mpquant}
mpiexec=${MPQ_MPIEXEC:-mpiexec}
export MPQ_SHARED_DIR=${MPQ_SHARED_DIR:-$(cd "$here/../.." && pwd)/shared}
[ -x "$bin" ] || { echo "pareto-rate-stories260K.sh: cannot run $bin" >&2; exit 1; }
mkdir -p "$out"
segments=128 seq_len=256 docs=500
[ "$quick" = 0 ] || { segments=8 seq_len=64 docs=20; }

# config KIND: the sweep configuration of one front
config() {
    local kind=$1 items="" b l
    for b in $bits; do
        items+="\"int:bits=$b,sym=false,group=32\", "
        if [ "$kind" = coded ]; then
            for l in $lambdas; do items+="\"int:bits=$b,sym=false,group=32;rate=$l\", "; done
        fi
    done
    cat <<CFG
model = { path = "\${MPQ_SHARED_DIR}/data/models/stories260K/stories260K.bin";
          tokenizer = "\${MPQ_SHARED_DIR}/data/models/stories260K/tok512.bin"; };
calibration = { source = "text"; text = "\${MPQ_SHARED_DIR}/data/text/wikitext2-valid.txt";
                seq_len = $seq_len; segments = $segments; seed = 1234; propagate = "fp"; };
quant = { method = "gptq"; candidates = [ ${items%, } ]; };
round = { act_order = true; static_groups = true; };
budget = { count = "$([ "$kind" = coded ] && echo coded || echo all)"; };
importance = { method = "sensitivity"; samples = 16; };
eval = { text = "\${MPQ_SHARED_DIR}/data/text/tinyshakespeare.txt"; docs = $docs; };
output = { code_coding = "$([ "$kind" = coded ] && echo zstd || echo fixed)"; };
sweep = { budgets = [ $(for x in $budgets; do [[ $x == *.* ]] || x+=.0; printf '%s, ' "$x"; done | sed 's/, $//') ];
          output_dir = "$out/$kind";
          metric = "kld"; plot = false; };
CFG
}
for kind in fixed coded; do
    config "$kind" >"$out/$kind.cfg"
    echo "pareto: the $kind sweep" >&2
    $mpiexec -n "$np" "$bin" sweep "$out/$kind.cfg" -q
done

python3 - "$out" "$budgets" <<'PY'
import json, sys
out, budgets = sys.argv[1], [float(b) for b in sys.argv[2].split()]
def points(kind):
    r = json.load(open(f"{out}/{kind}/report.json"))
    return [p for p in r["points"] if p.get("status", "ok") == "ok" and not p.get("infeasible")]
fx, cd = points("fixed"), points("coded")
def short(p):  # "int2 g32 rate=8" for "gptq int:bits=2,sym=false,group=32,...;rate=8"
    s = p["label"].replace("gptq int:bits=", "int").replace(",scale=fp16,fit=minmax", "")
    return s.replace(",sym=false,group=", " g").replace(";", " ")
def best(pts, b):  # the least KLD within b bits per weight
    ok = [p for p in pts if p["bpw"] <= b + 1e-12]
    return min(ok, key=lambda p: p["kld"]) if ok else None
def front(pts):
    f = [p for p in pts if not any(q["bpw"] <= p["bpw"] and q["kld"] <= p["kld"] and
                                   (q["bpw"], q["kld"]) != (p["bpw"], p["kld"]) for q in pts)]
    return sorted(f, key=lambda p: p["bpw"])
with open(f"{out}/pareto.md", "w") as f:
    f.write("| budget (bits/weight) | fixed: KLD | bits/weight | setting | coded: KLD | "
            "bits/weight | setting |\n|---:|---:|---:|---|---:|---:|---|\n")
    wins = ties = losses = 0
    for b in budgets:
        a, c = best(fx, b), best(cd, b)
        cell = lambda p: f"{p['kld']:.4f} | {p['bpw']:.3f} | {short(p)}" if p else "- | - | -"
        f.write(f"| {b:g} | {cell(a)} | {cell(c)} |\n")
        if a and c:
            wins += c["kld"] < a["kld"]
            ties += c["kld"] == a["kld"]
            losses += c["kld"] > a["kld"]
    f.write(f"\nAt {len(budgets)} budgets the coded front is better at {wins}, equal at {ties} "
            f"and worse at {losses}.\n")
    for kind, pts in (("fixed", fx), ("coded", cd)):
        f.write(f"\n{kind} front: " + ", ".join(
            f"{short(p)} ({p['bpw']:.3f}, {p['kld']:.4f})" for p in front(pts)) + "\n")
    with open(f"{out}/pareto.dat", "w") as d:
        for kind, pts in (("fixed-length codes", fx), ("zstd-coded, rate-aware GPTQ", cd)):
            d.write(f'"{kind}"\n' + "".join(f"{p['bpw']} {p['kld']}\n" for p in front(pts)) + "\n\n")
print(f"pareto: coded better at {wins}, equal at {ties}, worse at {losses} of {len(budgets)} budgets",
      file=sys.stderr)
PY
if command -v gnuplot >/dev/null; then
    gnuplot <<GP
set terminal pngcairo size 900,600
set output "$out/pareto.png"
set title "stories260K: KL divergence against real bits per weight (Pareto fronts)"
set xlabel "bits per weight of the quantized layers, as stored"
set ylabel "KL divergence (nats, log scale)"
set logscale y
set grid
plot for [i=0:1] "$out/pareto.dat" index i using 1:2 with linespoints title columnheader(1)
GP
fi
echo "pareto: $out/pareto.md" >&2
