#!/bin/bash
# test_run_provenance.sh: what `mpquant run` records about a run, and which
# files it refuses to write (small MNIST runs: RTN, 64 calibration images,
# 500 evaluation images).
#  (a) the checkpoint's /provenance/config is the effective configuration:
#      the bytes `mpquant check` prints for the same file and overrides (so
#      it holds the override values), and it reads back as a configuration;
#      config_file is the file's own text, overrides the -o list, and inputs
#      hashes every file the run read (SHA-256 as sha256sum computes it),
#      the configuration file included.
#  (b) output.path equal to eval.labels (also through a symlink), or to the
#      configuration file, with output.overwrite = true, and hessian.save /
#      measure.save equal to an input or to output.path: refused with exit 1
#      on every rank, naming the keys, before the model is loaded; the
#      targets are unchanged.
#  (c) an existing checkpoint without output.overwrite is refused before the
#      model is loaded or calibrated (no such log line), and left unchanged.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
need_shared data/mnist/t10k-images-idx3-ubyte
need_shared data/mnist/t10k-labels-idx1-ubyte
command -v h5dump >/dev/null || { echo "FAILED: h5dump missing (Debian package hdf5-tools)"; exit 1; }
make_work_dir
src="$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w2.cfg"
cfg="$dir/c.cfg"
cp "$src" "$cfg"
small=(-o quant.method=rtn -o round.iters=5 -o round.loss=layer -o calibration.segments=64
       -o eval.count=500 -o eval.also_all=false)

# A provenance dataset's bytes (h5dump -b writes the raw string; the
# fixed-length type has no padding beyond the text).
field() { h5dump -d "/provenance/$2" -b -o "$3" "$1" >/dev/null; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# ---- (a) ----
ck="$dir/p.h5"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${small[@]}" -o output.path="$ck"
expect_rc 0
[ -f "$ck" ] || fail "no checkpoint at $ck"
field "$ck" config "$dir/eff.cfg"
field "$ck" config_file "$dir/file.cfg"
field "$ck" overrides "$dir/over.json"
field "$ck" inputs "$dir/inputs.json"
grep -q '^  method = "rtn";$' "$dir/eff.cfg" || fail "effective config lacks the override quant.method=rtn"
grep -q '^  segments = 64;$' "$dir/eff.cfg" || fail "effective config lacks calibration.segments=64"
grep -q "^  path = \"$ck\";$" "$dir/eff.cfg" || fail "effective config lacks output.path"
grep -q 'adaround' "$dir/eff.cfg" && fail "effective config still names the file's method adaround"
run "$MPQ_BIN" check "$cfg" --no-paths "${small[@]}" -o output.path="$ck"
expect_rc 0
tail -n +2 "$OUT" >"$dir/check.cfg"
cmp -s "$dir/eff.cfg" "$dir/check.cfg" ||
    fail "stored config differs from mpquant check's: $(diff "$dir/eff.cfg" "$dir/check.cfg" | head -4)"
run "$MPQ_BIN" check "$dir/eff.cfg" --no-paths
expect_rc 0
tail -n +2 "$OUT" | cmp -s - "$dir/eff.cfg" || fail "the stored config does not read back to itself"
cmp -s "$dir/file.cfg" "$cfg" || fail "config_file is not the configuration file's text"
grep -q '"quant.method=rtn"' "$dir/over.json" || fail "overrides lack quant.method=rtn"
grep -q "\"output.path=$ck\"" "$dir/over.json" || fail "overrides lack output.path"
for f in "$cfg" "$MPQ_SHARED_DIR/data/models/mnist-cnn-small/model-mnist.safetensors" \
    "$MPQ_SHARED_DIR/data/mnist/t10k-images-idx3-ubyte" \
    "$MPQ_SHARED_DIR/data/mnist/t10k-labels-idx1-ubyte"; do
    grep -q "$(sha "$f")" "$dir/inputs.json" || fail "inputs lack the SHA-256 of $f"
done
[ "$(grep -c '[0-9a-f]\{64\}' "$dir/inputs.json")" -eq 4 ] ||
    fail "inputs: expected 4 hashes (images listed once): $(cat "$dir/inputs.json")"

# ---- (b) ----
# Runs mpquant on 2 ranks; each rank reports its own exit status. The
# wrapper itself exits 0: had it passed a non-zero status on, mpirun could
# kill the other rank's wrapper before it reported.
every_rank() {
    run $MPQ_MPIEXEC -n 2 bash -c '"$0" "$@"; echo "rank exit $?" >&2' \
        "$MPQ_BIN" "$@"
    [ "$(grep -c '^rank exit 1$' "$ERR")" -eq 2 ] || fail "not every rank exited with 1"
    grep -q '^model ' "$ERR" && fail "the model was loaded before the refusal"
}
cp "$MPQ_SHARED_DIR/data/mnist/t10k-labels-idx1-ubyte" "$dir/labels"
ln -s "$dir/labels" "$dir/labels-link"
lab=(-o eval.labels="$dir/labels")
before_lab=$(sha "$dir/labels")
before_cfg=$(sha "$cfg")
before_ck=$(sha "$ck")

every_rank run "$cfg" "${small[@]}" "${lab[@]}" -o output.path="$dir/labels" -o output.overwrite=true
expect_err "output.path: '$dir/labels' is the same file as eval.labels"
every_rank run "$cfg" "${small[@]}" -o eval.labels="$dir/labels-link" -o output.path="$dir/labels" \
    -o output.overwrite=true
expect_err "output.path: .* is the same file as eval.labels \('$dir/labels-link'\)"
every_rank run "$cfg" "${small[@]}" -o output.path="$cfg" -o output.overwrite=true
expect_err "output.path: '$cfg' is the same file as the configuration file"
every_rank run "$cfg" "${small[@]}" "${lab[@]}" -o 'calibration.propagate="fp"' \
    -o hessian.save="$dir/labels"
expect_err "hessian.save: '$dir/labels' is the same file as eval.labels"
every_rank run "$cfg" "${small[@]}" -o output.path="$dir/q.h5" -o measure.save="$dir/q.h5"
expect_err "measure.save: '$dir/q.h5' is the same file as output.path"
[ "$(sha "$dir/labels")" = "$before_lab" ] || fail "the labels file changed"
[ "$(sha "$cfg")" = "$before_cfg" ] || fail "the configuration file changed"
[ ! -e "$dir/q.h5" ] || fail "a refused run wrote $dir/q.h5"

# ---- (c) ----
every_rank run "$cfg" "${small[@]}" -o output.path="$ck"
expect_err "output '$ck' already exists \(set overwrite to replace it\)"
cat "$OUT" "$ERR" | grep -qi 'calibrat' && fail "the refused run got to calibration"
[ "$(sha "$ck")" = "$before_ck" ] || fail "the existing checkpoint changed"
finish
