#!/bin/bash
# test_run_scalapack.sh: `mpquant run` factors the Hessians of wide layers
# with ScaLAPACK over a process grid, and the results agree with the
# single-rank LAPACK path.
#  - stories260K W3 GPTQ (every layer forced to ScaLAPACK, block size 16 so
#    that the 64- and 172-wide H are spread over the grid) at 2 and 4 ranks,
#    each H on a grid of the ranks that own it: every number of the JSON line
#    (evaluation figures, per-layer losses, RTN losses, bits) equals the
#    1-rank LAPACK run within 1e-9 relative, and the log names the grid of
#    each layer (gate/up's over two ranks at 4).
#  - mnist-cnn-small W2 GPTQ in auto mode with scalapack_min_width = 100:
#    only fc1 (784 inputs) goes to ScaLAPACK, conv1/conv2 (9, 72) stay on
#    LAPACK; figures again equal the LAPACK run within 1e-9.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/text/wikitext2-valid.txt
need_shared data/mnist/t10k-images-idx3-ubyte
need_jq
make_work_dir
cfgs="$MPQ_SOURCE_DIR/configs"

# numbers FILE: "path value" for every number of the JSON line but times, ranks, memory.
numbers() { jq -r 'del(.times, .ranks, .peak_rss_mib) | paths(numbers) as $p | "\($p | tostring) \(getpath($p))"' "$1"; }

# close A B: every number of A equals B's within 1e-9 relative (same paths).
close() {
    numbers "$1" >"$dir/a.txt"
    numbers "$2" >"$dir/b.txt"
    [[ -s $dir/a.txt ]] || fail "no numbers in $1"
    paste -d' ' "$dir/a.txt" "$dir/b.txt" | awk '
        $1 != $3 { print "path " $1 " vs " $3; bad = 1; next }
        { d = $2 - $4; if (d < 0) d = -d; m = $2 < 0 ? -$2 : $2;
          if (d > 1e-9 * m && d > 1e-300) { print $1 ": " $2 " vs " $4; bad = 1 } }
        END { exit bad }' >&2 || fail "$3: figures differ from the LAPACK run"
}

runj() { # NAME NP OVERRIDES... -> $dir/NAME.json, log in $dir/NAME.log
    local name=$1 np=$2 cfg=$3
    shift 3
    local args=()
    for o in "$@"; do args+=(-o "$o"); done
    run $MPQ_MPIEXEC -n "$np" "$MPQ_BIN" run "$cfg" --json "${args[@]}"
    expect_rc 0
    last_json >"$dir/$name.json"
    cat "$OUT" "$ERR" >"$dir/$name.log"
}

s_over=(quant.method=gptq calibration.segments=16 calibration.seq_len=128 eval.docs=20)
runj s_lapack 1 "$cfgs/stories260K-w3.cfg" "${s_over[@]}" hessian.scalapack=never
grep -q "factored with" "$dir/s_lapack.log" && fail "LAPACK run logged a ScaLAPACK factorisation"
for np in 2 4; do
    runj s_sc$np $np "$cfgs/stories260K-w3.cfg" "${s_over[@]}" hessian.scalapack=always \
        hessian.block_size=16
    n=$(grep -c "factored with scalapack on a" "$dir/s_sc$np.log")
    # one factorisation per distinct layer input (q/k/v share one, gate/up
    # share one): 4 per block, 20 for the 35 layers
    [[ $n == 20 ]] || fail "stories260K at $np ranks: $n ScaLAPACK factorisations, expected 20"
    close "$dir/s_lapack.json" "$dir/s_sc$np.json" "stories260K at $np ranks"
done
# each factorisation runs on a grid of its input's owners (stages/round);
# at 4 ranks gate/up's input has two (the plan of a stories260K block)
grep -qE "gate_proj: H \(64 x 64\) factored with scalapack on a 1 x 2 grid of ranks 1 to 2, block 16" \
    "$dir/s_sc4.log" || fail "4 ranks: gate/up's H not factored on a grid of its two owners"

m_over=(quant.method=gptq round.loss=layer eval.count=1000 eval.also_all=false)
runj m_lapack 1 "$cfgs/mnist-cnn-small-w2.cfg" "${m_over[@]}"
runj m_auto 2 "$cfgs/mnist-cnn-small-w2.cfg" "${m_over[@]}" hessian.scalapack_min_width=100
grep "factored with scalapack" "$dir/m_auto.log" >"$dir/m_fact.txt"
[[ $(wc -l <"$dir/m_fact.txt") == 1 ]] && grep -q "fc1" "$dir/m_fact.txt" ||
    fail "mnist auto mode: expected only fc1 on ScaLAPACK, got: $(cat "$dir/m_fact.txt")"
close "$dir/m_lapack.json" "$dir/m_auto.json" "mnist-cnn-small auto at 2 ranks"
finish
