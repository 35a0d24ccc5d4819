#!/bin/bash
# test_run_measure.sh: mixed-precision measurements saved with measure.save
# and reused with measure.load give the same assignment and figures (the
# JSON line without times; the final pass re-rounds the chosen candidates
# on the same inputs); a measurement file made for other candidates is
# refused naming the file; an infeasible budget is an error stating the
# smallest and largest achievable averages; a pin to a spec that is not a
# candidate is honoured and its bits counted; the end of the run reports
# the ranks' peak resident memory (log line and "peak_rss_mib" in the JSON).
# mnist-cnn-small, 2 ranks.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
need_shared data/mnist/t10k-images-idx3-ubyte
need_jq
make_work_dir
cfg="$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w2.5-mixed.cfg"
small=(-o round.iters=20 -o eval.count=1000 -o eval.also_all=false)
mpi=($MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${small[@]}")

run "${mpi[@]}" -o measure.save="$dir/m.h5" --json
expect_rc 0
[ -f "$dir/m.h5" ] || fail "measure.save wrote no file"
# Peak resident memory: 0 < min <= mean <= max < 64 GiB (MiB), and the log line.
last_json | jq -e '.peak_rss_mib | (.min > 0) and (.min <= .mean) and (.mean <= .max)
                   and (.max < 65536)' >/dev/null ||
    fail "peak_rss_mib missing or out of order: $(last_json | jq -c .peak_rss_mib)"
expect_err "^peak_rss +[0-9.]+ +[0-9.]+ +[0-9.]+  \(peak resident memory, MiB over 2 ranks\)"
last_json | jq -S 'del(.times, .peak_rss_mib)' >"$dir/a.json"
run "${mpi[@]}" -o measure.load="$dir/m.h5" --json
expect_rc 0
expect_err "measurements loaded from"
last_json | jq -S 'del(.times, .peak_rss_mib)' >"$dir/b.json"
diff "$dir/a.json" "$dir/b.json" >/dev/null || fail "measure.load changed the result: $(diff "$dir/a.json" "$dir/b.json" | head -6)"
jq -e '.budget.bits_used == .bits and .bpw <= 2.5' "$dir/a.json" >/dev/null || fail "budget figures inconsistent"

# Variants of the configuration (list items with commas cannot be given
# with -o, which splits lists at commas).
sed '/"int:bits=4,sym=false,gran=channel,fit=search",$/d; /"int:bits=8,sym=false,gran=channel,fit=search" ];/d; s/"int:bits=3,sym=false,gran=channel,fit=search",$/"int:bits=3,sym=false,gran=channel,fit=search" ];/' \
    "$cfg" >"$dir/two.cfg"
grep -q 'bits=3,sym=false,gran=channel,fit=search" \];' "$dir/two.cfg" || fail "could not edit the candidate list"
sed 's/^  avg_bits = 2.5;/  avg_bits = 2.5;\n  pin = [ "conv1=int:bits=6,sym=false,gran=channel" ];/' "$cfg" >"$dir/pin.cfg"
grep -q 'pin = \[ "conv1' "$dir/pin.cfg" || fail "could not add the pin"

run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/two.cfg" "${small[@]}" -o measure.load="$dir/m.h5"
[ "$RC" -ne 0 ] || fail "a measurement for other candidates was accepted"
expect_err "m.h5 \(measure.load\): measured for another"

run "${mpi[@]}" -o budget.avg_bits=1.0
[ "$RC" -ne 0 ] || fail "an infeasible budget was accepted"
expect_err "budget.avg_bits"
expect_err "smallest"

run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/pin.cfg" "${small[@]}" --json
expect_rc 0
last_json | jq -e '.layers[] | select(.layer == "conv1") | .pinned == true and .code_bits == 6' >/dev/null ||
    fail "the pin of conv1 to 6 bits was not applied: $(last_json | jq -c '.layers[] | {layer, spec}')"
finish
