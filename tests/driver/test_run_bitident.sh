#!/bin/bash
# test_run_bitident.sh: `mpquant run --json` gives the same figures at 1, 2
# and 4 ranks: every field of the JSON line (quantized and full-precision
# evaluation, bits per weight, per-layer specs, bits, losses, scores) except
# the times, the peak memory and the rank count, compared as text (so bit for bit: cJSON
# prints 17 significant digits). Small configurations: stories260K W3
# adaround (20 steps, 16 segments, 20 documents), stories260K nvfp4 GPTQ and
# mnist-cnn-small W2 signround (50 steps, 1000 images).
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/text/wikitext2-valid.txt
need_shared data/mnist/t10k-images-idx3-ubyte
need_jq
make_work_dir
cfgs="$MPQ_SOURCE_DIR/configs"

one() { # NAME CONFIG OVERRIDES...
    local name=$1 cfg=$2
    shift 2
    local args=()
    for o in "$@"; do args+=(-o "$o"); done
    for np in 1 2 4; do
        run $MPQ_MPIEXEC -n $np "$MPQ_BIN" run "$cfg" --json "${args[@]}"
        expect_rc 0
        last_json | jq -S 'del(.times, .ranks, .peak_rss_mib)' >"$dir/$name.$np.json" ||
            fail "$name at $np ranks: the last line is not JSON"
    done
    grep -q '"quantized"' "$dir/$name.1.json" || fail "$name: no quantized figures"
    for np in 2 4; do
        diff "$dir/$name.1.json" "$dir/$name.$np.json" >/dev/null ||
            fail "$name: the JSON at $np ranks differs from 1 rank: $(diff "$dir/$name.1.json" "$dir/$name.$np.json" | head -5)"
    done
}

one stories "$cfgs/stories260K-w3.cfg" quant.method=adaround round.iters=20 calibration.segments=16 \
    calibration.seq_len=128 eval.docs=20
# nvfp4's tensor and E4M3 scales are fitted on every rank from the layer's
# weights, which the ranks that do not round the layer read only then
one nvfp4 "$cfgs/stories260K-w3.cfg" quant.method=gptq quant.spec=nvfp4 calibration.segments=16 \
    calibration.seq_len=128 eval.docs=20
one mnist "$cfgs/mnist-cnn-small-w2.cfg" quant.method=signround round.iters=50 round.loss=layer \
    eval.count=1000 eval.also_all=false
finish
