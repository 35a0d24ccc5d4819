#!/bin/bash
# test_run_resume.sh: a `mpquant run` killed (SIGKILL of rank 0 through the
# test hook MPQ_TEST_KILL_AT) or stopped (SIGUSR1 through MPQ_TEST_SIGNAL)
# resumes from its partial checkpoint, and the finished checkpoint is the
# same (masked h5dump: date, nranks and stage_times) as an uninterrupted
# run's, also when the resumed run uses another rank count. Kill points:
# while a block is computed, in the middle of writing its block file, and
# after it; in the measuring pass and in the final pass of a mixed-precision
# run (quantized and full-precision propagation) and in a uniform GPTQ run.
# A stop exits with status 75 at the next block boundary. A changed
# configuration key or input is refused with a message naming it; a
# changed log level is not a change. Under the sanitizers
# (MPQ_TEST_SANITIZED=1) one interruption per pass and propagation runs,
# with another rank count each; the release pass runs them all.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/text/wikitext2-valid.txt
command -v h5dump >/dev/null || { echo "FAILED: h5dump missing (Debian package hdf5-tools)"; exit 1; }
make_work_dir
uniform="$MPQ_SOURCE_DIR/configs/stories260K-w4.cfg"
mixed="$MPQ_SOURCE_DIR/configs/stories260K-mixed3.cfg"
out="$dir/out.h5"
part="$out.partial"
small=(-o calibration.segments=16 -o calibration.seq_len=128 -o eval.docs=20
    -o importance.samples=8 -o output.path="$out")
# The uninterrupted reference of a configuration (2 ranks), masked.
reference() {
    rm -rf "$out" "$part"
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$@" "${small[@]}"
    expect_rc 0
    [ ! -e "$part" ] || fail "the partial checkpoint remains after a complete run"
    masked_h5dump "$out" >"$dir/ref.txt"
    rm -f "$out"
}
# interrupted NP_KILLED NP_RESUMED KILL_AT RESUMED_AFTER CONFIG ARGS...:
# kill at KILL_AT, resume with another rank count, compare with the
# reference; RESUMED_AFTER is the "PHASE: resuming after block K" expected.
interrupted() {
    local np1=$1 np2=$2 at=$3 after=$4
    shift 4
    MPQ_TEST_KILL_AT=$at run $MPQ_MPIEXEC -n "$np1" "$MPQ_BIN" run "$@" "${small[@]}"
    [ "$RC" -ne 0 ] || fail "the run killed at $at exited 0"
    [ ! -e "$out" ] || fail "a checkpoint exists after the kill at $at"
    [ -f "$part/manifest.json" ] || fail "no partial checkpoint after the kill at $at"
    if [[ $at == *:write ]]; then
        ls -A "$part" | grep -q '\.tmp\.' || fail "no temporary block file: the kill at $at was not during a write"
    fi
    run $MPQ_MPIEXEC -n "$np2" "$MPQ_BIN" run "$@" "${small[@]}"
    expect_rc 0
    expect_err "$after of 5"
    [ ! -e "$part" ] || fail "the partial checkpoint remains after the resumed run"
    masked_h5dump "$out" >"$dir/res.txt"
    diff "$dir/ref.txt" "$dir/res.txt" >"$dir/diff" ||
        fail "killed at $at ($np1 ranks), resumed at $np2 ranks: the checkpoint differs: $(head -c 600 "$dir/diff")"
    rm -f "$out"
}

# 1. uniform GPTQ, quantized propagation
reference "$uniform"
interrupted 2 1 round:2:compute "round: resuming after block 2" "$uniform"
sanitized=${MPQ_TEST_SANITIZED:-0}
if [ "$sanitized" != 1 ]; then
    interrupted 2 3 round:1:write "round: resuming after block 1" "$uniform"
    interrupted 1 2 round:3:saved "round: resuming after block 4" "$uniform"
fi

# 2. mixed precision, quantized propagation: measuring and final pass
reference "$mixed"
interrupted 2 3 measure:2:write "measure: resuming after block 2" "$mixed"
if [ "$sanitized" != 1 ]; then
    interrupted 2 1 measure:4:saved "measure: resuming after block 5" "$mixed"
fi
interrupted 3 2 round:1:saved "round: resuming after block 2" "$mixed"

# 3. mixed precision, full-precision propagation (the measured codes are final)
reference "$mixed" -o calibration.propagate=fp
interrupted 2 1 measure:1:saved "measure: resuming after block 2" "$mixed" -o calibration.propagate=fp

# 4. a stop request: SIGUSR1 reaches the last rank while block 1 is
#    computed; the ranks stop after it with status 75 and resume.
reference "$uniform"
MPQ_TEST_SIGNAL=1 run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$uniform" "${small[@]}"
expect_rc 75
expect_err "stopped by SIGUSR1 after block 2 of 5 \(round\)"
expect_err "run the same command again to resume"
[ ! -e "$out" ] && [ -f "$part/round-000001.h5" ] && [ ! -e "$part/round-000002.h5" ] ||
    fail "the stop did not keep exactly blocks 0 and 1: $(ls -A "$part" 2>&1)"

# 5. what a resume refuses, and what it accepts
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$uniform" "${small[@]}" -o eval.docs=21
[ "$RC" -ne 0 ] || fail "a changed configuration was resumed"
expect_err "$part holds the finished blocks of another run"
expect_err "configuration key eval.docs: was 20, now 21"
cp "$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt" "$dir/eval.txt"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$uniform" "${small[@]}" -o eval.text="$dir/eval.txt"
[ "$RC" -ne 0 ] || fail "a changed eval.text was resumed"
expect_err "configuration key eval.text"
rm -rf "$part"
MPQ_TEST_KILL_AT=round:1:saved run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$uniform" "${small[@]}" \
    -o eval.text="$dir/eval.txt"
printf 'x' >>"$dir/eval.txt"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$uniform" "${small[@]}" -o eval.text="$dir/eval.txt"
[ "$RC" -ne 0 ] || fail "a run whose input changed was resumed"
expect_err "input '$dir/eval.txt' changed"
head -c -1 "$dir/eval.txt" >"$dir/eval2.txt" && mv "$dir/eval2.txt" "$dir/eval.txt"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$uniform" "${small[@]}" -o eval.text="$dir/eval.txt" \
    -o log.level=debug
expect_rc 0
expect_err "round: resuming after block 2 of 5"
finish
