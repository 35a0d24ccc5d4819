#!/bin/bash
# test_address_limit.sh: an address-space limit (ulimit -v) never hangs a
# run (label robustness). OpenBLAS retries a failed buffer allocation
# forever, so below some limit a BLAS call would never return; mpquant
# allocates the BLAS buffers at start-up after checking the room for them.
# For limits from too small to start up to enough for the whole run, each
# run must end by itself within the time limit: exit 0, or a non-zero exit
# with a message about memory or the limit (never a time-out).
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
model=data/models/stories260K/stories260K.bin
tok=data/models/stories260K/tok512.bin
text=data/text/tinyshakespeare.txt
need_shared "$model"
need_shared "$tok"
need_shared "$text"
S="$MPQ_SHARED_DIR"
make_work_dir
cat >"$dir/q.cfg" <<CFG
model = { path = "$S/$model"; tokenizer = "$S/$tok"; };
calibration = { source = "random"; segments = 8; seq_len = 32; };
quant = { spec = "int:bits=4,group=32"; method = "gptq"; };
eval = { text = "$S/$text"; docs = 2; };
CFG
ok=0 refused=0
for kib in 300000 450000 500000 550000 600000 700000 1000000; do
    run bash -c "ulimit -v $kib && exec timeout -k 5 150 \"\$0\" run \"\$1\" -q" "$MPQ_BIN" "$dir/q.cfg"
    case $RC in
    0) ok=$((ok + 1)) ;;
    124 | 137) fail "ulimit -v $kib: the run did not end within 150 s" ;;
    *)
        refused=$((refused + 1))
        expect_err "(out of memory|address-space limit)"
        ;;
    esac
done
echo "address-space limits: $ok runs completed, $refused refused cleanly"
[ "$refused" -ge 1 ] || fail "no limit was small enough to refuse: the test checks nothing"
[ "$ok" -ge 1 ] || fail "no run completed, not even under the largest limit"
finish
