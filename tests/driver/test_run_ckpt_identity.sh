#!/bin/bash
# test_run_ckpt_identity.sh: the checkpoint written by `mpquant run` (small
# stories260K mixed-precision run: 16 calibration segments of 128 tokens,
# 20 documents, 8 sensitivity samples) is the same at 1, 2 and 4 ranks apart
# from the fields that legitimately differ between runs: h5dump of every
# group, dataset and attribute with the provenance date, nranks and
# stage_times masked is identical (the effective configuration, the
# overrides and the input hashes included). Then `mpquant inspect` reads it.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/text/wikitext2-valid.txt
command -v h5dump >/dev/null || { echo "FAILED: h5dump missing (Debian package hdf5-tools)"; exit 1; }
make_work_dir
cfg="$MPQ_SOURCE_DIR/configs/stories260K-mixed3.cfg"
small=(-o calibration.segments=16 -o calibration.seq_len=128 -o eval.docs=20 -o importance.samples=8)

# Every rank count writes to the same output path (the provenance records
# the effective configuration, output.path included), and each result is
# moved aside before the next run.
for np in 1 2 4; do
    run $MPQ_MPIEXEC -n $np "$MPQ_BIN" run "$cfg" "${small[@]}" -o output.path="$dir/out.h5" --json
    expect_rc 0
    [ -f "$dir/out.h5" ] || fail "no checkpoint at $dir/out.h5 ($np ranks)"
    last_json | grep -q "\"checkpoint\":\"$dir/out.h5\"" || fail "the JSON line does not name the checkpoint"
    mv "$dir/out.h5" "$dir/np$np.h5"
    masked_h5dump "$dir/np$np.h5" >"$dir/np$np.txt"
done
grep -q '"mpquant-checkpoint"' "$dir/np1.txt" || fail "h5dump shows no format attribute"
grep -q 'DATASET "config"' "$dir/np1.txt" && grep -q 'DATASET "overrides"' "$dir/np1.txt" ||
    fail "h5dump shows no provenance config or overrides"
[ "$(grep -c MASKED "$dir/np1.txt")" -eq 3 ] || fail "expected 3 masked fields"
for np in 2 4; do
    diff "$dir/np1.txt" "$dir/np$np.txt" >"$dir/diff" ||
        fail "masked h5dump at $np ranks differs from 1 rank: $(head -5 "$dir/diff")"
done
run "$MPQ_BIN" inspect "$dir/np2.h5" --json
expect_rc 0
expect_out 'quantized layers: 35'
finish
