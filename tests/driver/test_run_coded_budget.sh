#!/bin/bash
# test_run_coded_budget.sh: budgets in entropy-coded bits (budget.count =
# "coded", issue 19 item 3) and rate-constrained candidates
# ("spec;rate=LAMBDA"). stories260K, GPTQ g32 at 2, 3 and 4 bits plus a
# rate-constrained 2- and 3-bit candidate, full-precision propagation (the
# measured codes are the final ones), 2 ranks:
#  - the budget's bits_used is the checkpoint's coded size (coded_bits, which
#    is checked against HDF5's own dataset sizes through h5py), within the
#    budget; each layer's coded_bits is the size of its datasets;
#  - a rate-constrained candidate is chosen somewhere, and it stores fewer
#    bits than the fixed-length size of its codes;
#  - counting coded bits leaves room: at the same avg_bits the objective is
#    not above the one of budget.count = "all";
#  - 1 rank chooses the same candidates with the same sizes;
#  - measure.save / measure.load give the same result; a file measured
#    without coded sizes is refused for a coded budget, naming the file;
#  - a run killed after measuring block 2 resumes to the same result;
#  - mpquant sweep scans lambda ("spec;rate=LAMBDA" points) and, with
#    budget.count = "coded", sizes every point coded: the rate point is
#    smaller than the plain one, which is smaller than its fixed-length size
#    (the same in both sweeps without a rate), and the budget point keeps
#    its budget;
#  - under the sanitizers (MPQ_TEST_SANITIZED=1) the comparisons that only
#    repeat runs (budget.count = "all", 1 rank, the fixed-length sweep) are
#    left to the release pass;
#  - refused, naming the keys: budget.count = "coded" without
#    output.code_coding = "zstd"; a rate item that is not rate=LAMBDA; a
#    rate-constrained candidate with a method other than gptq.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/text/wikitext2-valid.txt
need_jq
make_work_dir
need_venv "${MPQ_CKPT_READER_VENV:-$HOME/.cache/mpquant/ckpt-reader-venv}" numpy==2.2.6 \
    h5py==3.14.0 zstandard==0.25.0
# config CANDIDATES: the settings both configurations share, GPTQ over
# the candidates CANDIDATES (the items of a libconfig list).
config() {
    cat <<CFG
model = { path = "\${MPQ_SHARED_DIR}/data/models/stories260K/stories260K.bin";
          tokenizer = "\${MPQ_SHARED_DIR}/data/models/stories260K/tok512.bin"; };
calibration = { source = "text"; text = "\${MPQ_SHARED_DIR}/data/text/wikitext2-valid.txt";
                seq_len = 64; segments = 16; propagate = "fp"; };
quant = { method = "gptq"; candidates = [ $1 ]; };
round = { act_order = true; static_groups = true; };
importance = { method = "error"; };
CFG
}
w2='"int:bits=2,sym=false,group=32"' w2r='"int:bits=2,sym=false,group=32;rate=8"'
w3='"int:bits=3,sym=false,group=32"'
{
    config "$w2, $w2r, $w3, \"int:bits=3,sym=false,group=32;rate=4\", \"int:bits=4,sym=false,group=32\""
    cat <<CFG
budget = { avg_bits = 3.0; count = "coded"; };
eval = { enabled = false; };
output = { path = "$dir/out.h5"; overwrite = true; code_coding = "zstd"; };
CFG
} >"$dir/c.cfg"
# The layers' choices and sizes, and the budget's figures (no times).
digest() { last_json | jq -S -c '{budget, coded_bits, layers: [.layers[] | {layer, spec, bits, coded_bits}]}'; }

run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/c.cfg" --json -o measure.save="$dir/m.h5"
expect_rc 0
expect_err "coded bits of [0-9]+, [0-9.]+ coded bits per weight"
last_json >"$dir/a.json"
digest >"$dir/a.digest"
jq -e '.budget.count == "coded" and .budget.bits_used == .coded_bits and
       .budget.bits_used <= .budget.budget_bits and .coded_bpw <= 3.0' "$dir/a.json" >/dev/null ||
    fail "the coded budget is not the checkpoint's coded size: $(jq -c '{budget, coded_bits, coded_bpw}' "$dir/a.json")"
sizes=$("$py" -c "import h5py, json, sys
f = h5py.File(sys.argv[1], 'r')
print(json.dumps({n: 8 * (g['codes'].id.get_storage_size() + g['params'].id.get_storage_size())
                  for n, g in f['layers'].items()}, sort_keys=True, separators=(',', ':')))" "$dir/out.h5")
[ "$(jq -S -c '[.layers[] | {key: .tensor, value: .coded_bits}] | from_entries' "$dir/a.json")" = "$sizes" ] ||
    fail "the layers' coded_bits are not their datasets' sizes"
n=$(jq '[.layers[] | select(.spec | test(";rate=")) | select(.coded_bits < .bits)] | length' "$dir/a.json")
[ "${n:-0}" -ge 1 ] || fail "no rate-constrained candidate chosen with a coded size below its fixed one"
echo "coded budget: $(jq -r '.budget.bits_used' "$dir/a.json") of $(jq -r '.budget.budget_bits' "$dir/a.json") bits, $n layers at a rate-constrained candidate, fixed-length size $(jq -r .bits "$dir/a.json")"

sanitized=${MPQ_TEST_SANITIZED:-0}
# The same budget counting stored bits: no better objective.
if [ "$sanitized" != 1 ]; then
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/c.cfg" --json -o budget.count=all
    expect_rc 0
    obj_all=$(last_json | jq -r .budget.objective)
    jq -e --argjson o "$obj_all" '.budget.objective <= $o' "$dir/a.json" >/dev/null ||
        fail "coded budget objective $(jq -r .budget.objective "$dir/a.json") above the stored-bits one $obj_all"

    # 1 rank: the same choices and sizes.
    run "$MPQ_BIN" run "$dir/c.cfg" --json
    expect_rc 0
    digest | cmp -s - "$dir/a.digest" || fail "1 rank chose differently from 2 ranks"
fi

# measure.load: the same result; a file without coded sizes is refused.
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/c.cfg" --json -o measure.load="$dir/m.h5"
expect_rc 0
digest | cmp -s - "$dir/a.digest" || fail "measure.load changed the result"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/c.cfg" -o budget.count=all -o measure.save="$dir/all.h5" \
    -o output.path=
expect_rc 0
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/c.cfg" -o measure.load="$dir/all.h5" -o output.path=
[ "$RC" -ne 0 ] || fail "a measurement without coded sizes was accepted"
expect_err "all.h5 \(measure.load\): layer .* has no coded size: budget.count = \"coded\" needs"

# Killed after measuring block 2, resumed at 1 rank.
rm -f "$dir/out.h5"
MPQ_TEST_KILL_AT=measure:2:saved run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$dir/c.cfg" --json
[ "$RC" -ne 0 ] || fail "the killed run exited 0"
[ -d "$dir/out.h5.partial" ] || fail "no partial checkpoint after the kill"
run "$MPQ_BIN" run "$dir/c.cfg" --json
expect_rc 0
expect_err "measure: resuming after block 3"
digest | cmp -s - "$dir/a.digest" || fail "the resumed run differs"

# The sweep scans lambda: uniform points at rate 0 and 8, and a budget point,
# counted coded; the same sweep counting fixed-length storage.
{
    config "$w2, $w2r, $w3"
    cat <<CFG
budget = { count = "coded"; };
eval = { text = "\${MPQ_SHARED_DIR}/data/text/tinyshakespeare.txt"; docs = 10; };
output = { code_coding = "zstd"; };
sweep = { budgets = [ 2.6 ]; uniform = [ $w2, $w2r ]; output_dir = "$dir/sweep"; };
CFG
} >"$dir/s.cfg"
pts() { jq -c '[.points[] | {spec, bpw, budget}]' "$dir/sweep/report.json"; }
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" sweep "$dir/s.cfg"
expect_rc 0
grep -q "kld against zstd-coded model size" "$dir/sweep/report.md" || fail "the report does not name coded sizes"
coded=$(pts)
if [ "$sanitized" != 1 ]; then
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" sweep "$dir/s.cfg" -o budget.count=all \
        -o output.code_coding=fixed
    expect_rc 0
    fixed=$(pts)
    echo "sweep coded: $coded"
    echo "sweep fixed: $fixed"
    jq -e -n --argjson c "$coded" --argjson f "$fixed" '
        ($c[0].bpw <= 2.6) and ($c[2].spec | test(";rate=8$")) and ($c[2].bpw < $c[1].bpw) and
        ($c[1].bpw < $f[1].bpw) and ($f[1].bpw == $f[2].bpw)' >/dev/null ||
        fail "sweep sizes: the coded budget point, the rate point below the plain one, coded below fixed"
fi

# Refusals, every rank, no output.
rm -f "$dir/out.h5"
refused() { # refused CONFIG PATTERN ARGS...
    local cfg=$1 pat=$2
    shift 2
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "$@"
    [ "$RC" -ne 0 ] || fail "accepted: $cfg $*"
    expect_err "$pat"
    [ ! -e "$dir/out.h5" ] || fail "an output was written: $cfg $*"
}
refused "$dir/c.cfg" 'c.cfg: budget.count = "coded" needs output.code_coding = "zstd"' \
    -o output.code_coding=fixed
sed 's/group=32;rate=8"/group=32;rate=x"/' "$dir/c.cfg" >"$dir/x.cfg"
refused "$dir/x.cfg" 'x.cfg.*: quant.candidates\[1\]: ".*;rate=x": after .;. expected rate=LAMBDA'
sed 's/group=32;rate=8"/group=32;lambda=8"/' "$dir/c.cfg" >"$dir/y.cfg"
refused "$dir/y.cfg" 'quant.candidates\[1\]: ".*;lambda=8": after .;. expected rate=LAMBDA'
refused "$dir/c.cfg" \
    'quant.candidates\[1\]: .*a rate-constrained candidate is rounded by gptq only \(got "signround"\)' \
    -o quant.method=signround
sed 's|^sweep = { |sweep = { methods = [ "rtn" ]; compare = [ "int:bits=3,group=32;rate=2" ]; |' \
    "$dir/s.cfg" >"$dir/z.cfg"
grep -q 'compare = \[ "int:bits=3' "$dir/z.cfg" || fail "could not edit the sweep configuration"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" sweep "$dir/z.cfg"
[ "$RC" -ne 0 ] || fail "a rate item rounded by rtn was accepted"
expect_err 'sweep.compare\[0\]: "int:bits=3,group=32;rate=2": a rate-constrained candidate is rounded by gptq only \(got "rtn"\)'
finish
