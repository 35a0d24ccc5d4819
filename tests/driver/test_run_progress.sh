#!/bin/bash
# test_run_progress.sh: what `mpquant run` reports while it works and at the
# end (stories260K, mixed precision with the sensitivity estimator, 2 ranks):
#   1. the importance stage's sensitivity probes report progress: "progress"
#      events in the event log with done, total (the 35 probed layers), a
#      rate and an ETA, a progress_end event, and progress lines on the log;
#   2. the per-layer table is printed once (standard output), not a second
#      time on the log;
#   3. the evaluation's progress lines and events say which model they are
#      for: the quantized model, then the full-precision reference;
#   4. a classifier's evaluations say which images they classify;
#   5. the block loss reports its steps, per block.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/text/wikitext2-valid.txt
need_jq
make_work_dir
ev="$dir/events.jsonl"
# 16 segments of 256 tokens: each probe is a forward pass over 16 samples,
# so the 35 probes take well over the 0.1 s progress interval; 500
# documents: each block of the evaluation too.
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$MPQ_SOURCE_DIR/configs/stories260K-mixed3.cfg" \
    -o calibration.segments=16 -o importance.samples=16 -o eval.docs=500 \
    -o log.progress_interval=0.1 -o output.path= --event-log "$ev"
expect_rc 0

# ---- 1. importance progress with an ETA
jq -e -s '[.[] | select(.event == "progress" and (.what | startswith("importance: sensitivity")))]
          | length > 0 and all(.unit == "layers" and .total == 35 and .done >= 1 and .done <= 35
                                and .rate > 0 and (.eta_s | type) == "number" and .eta_s >= 0)' \
    "$ev" >/dev/null || fail "no importance progress event with done, total 35, rate and eta_s"
jq -e -s '[.[] | select(.event == "progress_end" and (.what | startswith("importance: sensitivity")))]
          | length == 1 and .[0].done == 35' "$ev" >/dev/null ||
    fail "no importance progress_end event with 35 layers done"
expect_err "^importance: sensitivity probes: [0-9]+/35 layers \([0-9.]+%\), .* ETA "

# ---- 2. the per-layer table once
n=$(cat "$OUT" "$ERR" | grep -c '^layer ')
[ "$n" -eq 1 ] || fail "the per-layer table header appears $n times (stdout and stderr), expected once"
grep -q '^layer ' "$OUT" || fail "the per-layer table is not on standard output"

# ---- 3. evaluation progress names the model: the quantized model's blocks,
# then the reference's, then the output head of both
jq -e -s '{"quantized model": 0, "full-precision reference": 1,
           "quantized model and full-precision reference": 2} as $rank
          | [.[] | select((.event == "progress" or .event == "progress_end")
                          and .what == "evaluating documents") | $rank[.model]] as $r
          | ($r | length) > 2 and all($r[]; . != null) and $r[0] == 0 and ($r | index(1)) != null
            and $r == ($r | sort) and $r[-1] == 2' "$ev" >/dev/null ||
    fail "evaluation progress events: not each naming its model, quantized first, then the reference"
expect_err "^evaluating documents \(quantized model\): "
expect_err "^evaluating documents \(full-precision reference\): "

# ---- 4. a classifier's two evaluations (the evaluation images, then all
# images) say which images they classify
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
need_shared data/mnist/t10k-images-idx3-ubyte
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w4.cfg" \
    -o quant.method=rtn -o calibration.segments=64 -o eval.first=5000 -o eval.count=4000
expect_rc 0
expect_err "^classifying images 5000-8999 \(quantized model and full-precision reference\): "
expect_err "^classifying images 0-9999 \(quantized model and full-precision reference\): "

# ---- 5. the block loss's steps: a progress_end event per block (the lines
# between, every log.progress_interval, are section 1's code)
run "$MPQ_BIN" run "$MPQ_SOURCE_DIR/configs/stories260K-w2.cfg" -o calibration.segments=4 \
    -o calibration.seq_len=64 -o round.loss=block -o round.block_iters=8 -o eval.enabled=false \
    -o output.path= --event-log "$dir/bl.jsonl"
expect_rc 0
expect_err "^block 4: block loss: 8 steps done in "
jq -e -s '[.[] | select(.event == "progress_end" and (.what | test("^block [0-9]: block loss$")))]
          | length == 5 and all(.unit == "steps" and .done == 8 and .total == 8)' \
    "$dir/bl.jsonl" >/dev/null || fail "no progress_end event of 8 steps for each of the 5 blocks"
finish
