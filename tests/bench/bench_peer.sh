#!/bin/bash
# bench_peer.sh BENCH_ROUND: mpquant's GPTQ layer solve against a PyTorch
# GPTQ (tests/bench/gptq_peer.py) on the same shapes and thread count, timed
# in the same run.
#
# Shapes (rows x cols, H cols x cols): 4096 x 4096 and 4096 x 11008, int4
# asymmetric groups of 128, columns in natural order, one thread each
# (MPQ_BENCH_THREADS to change). mpquant's side is `BENCH_ROUND --gptq ROWS
# COLS --natural` (groups fitted when the sweep reaches them), once with
# round.gptq_precision = "double" (float64 factor and updates) and once with
# "float" (float32 factor where its probe passes, float32 updates); the
# peer's is float32 as the usual PyTorch implementations run it.
#
# The peer runs in a virtual environment, MPQ_BENCH_VENV (default
# ~/.cache/mpquant/peer-venv), created with torch==2.5.1 from PyPI when
# missing (PyPI's Linux wheel brings its CUDA libraries, about 3 GB, though
# only the CPU is used).
#
# One JSON line per shape: mpquant_s (double updates), mpquant_float_s
# (round.gptq_precision = "float"), mpquant_unguarded_s (float with
# round.rtn_guard = false: no RTN loss measured, the peer's work) and
# torch_s, each factor plus rounding, mpquant's in tiles of
# round.tile_rows rows as in a run; speedup = torch_s / mpquant_s,
# speedup_float and speedup_unguarded (above 1: mpquant is faster); the
# parts; both losses relative to round-to-nearest.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_jq
bench_round=${1:?usage: bench_peer.sh BENCH_ROUND}
venv=${MPQ_BENCH_VENV:-$HOME/.cache/mpquant/peer-venv}
threads=${MPQ_BENCH_THREADS:-1}
if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    echo "bench_peer: installing torch==2.5.1 into $venv" >&2
    python3 -m venv "$venv" && "$venv/bin/pip" install -q torch==2.5.1 >&2 ||
        { echo "FAILED: cannot install torch==2.5.1 into $venv" >&2; exit 1; }
fi
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
for shape in "4096 4096" "4096 11008"; do
    read -r rows cols <<<"$shape"
    run "$bench_round" --gptq "$rows" "$cols" --natural
    expect_rc 0
    mine=$(grep '"bench":"gptq","precision":"double","groups":"refit","order":"natural","rtn_guard":true' "$OUT")
    minef=$(grep '"bench":"gptq","precision":"float","groups":"refit","order":"natural","rtn_guard":true' "$OUT")
    mineu=$(grep '"bench":"gptq","precision":"float","groups":"refit","order":"natural","rtn_guard":false' "$OUT")
    run "$venv/bin/python" "$MPQ_SOURCE_DIR/tests/bench/gptq_peer.py" "$rows" "$cols" "$threads"
    expect_rc 0
    peer=$(grep '"bench": "gptq_torch"' "$OUT")
    if [ -z "$mine" ] || [ -z "$minef" ] || [ -z "$mineu" ] || [ -z "$peer" ]; then
        fail "shape $rows x $cols: a side printed no result"
        continue
    fi
    jq -cn --argjson m "$mine" --argjson f "$minef" --argjson u "$mineu" --argjson p "$peer" \
        --argjson t "$threads" 'def r3: . * 1000 | round / 1000; {
        bench: "gptq_peer", rows: $m.rows, cols: $m.cols, threads: $t, torch: $p.torch,
        mpquant_s: ($m.factor_s + $m.round_s | r3), torch_s: ($p.factor_s + $p.round_s | r3),
        speedup: (($p.factor_s + $p.round_s) / ($m.factor_s + $m.round_s) | r3),
        mpquant_float_s: ($f.factor_s + $f.round_s | r3),
        speedup_float: (($p.factor_s + $p.round_s) / ($f.factor_s + $f.round_s) | r3),
        mpquant_unguarded_s: ($u.factor_s + $u.round_s | r3),
        speedup_unguarded: (($p.factor_s + $p.round_s) / ($u.factor_s + $u.round_s) | r3),
        mpquant_factor_s: $m.factor_s, mpquant_round_s: $m.round_s,
        mpquant_float_factor_s: $f.factor_s, mpquant_float_round_s: $f.round_s,
        mpquant_unguarded_round_s: $u.round_s,
        mpquant_float_form: $f.form, mpquant_float_factor_precision: $f.factor_precision,
        torch_factor_s: $p.factor_s, torch_round_s: $p.round_s,
        mpquant_loss_vs_rtn: $m.loss_vs_rtn, mpquant_float_loss_vs_rtn: $f.loss_vs_rtn,
        torch_loss_vs_rtn: $p.loss_vs_rtn}' ||
        fail "shape $rows x $cols: cannot combine the two sides' lines"
done
finish
