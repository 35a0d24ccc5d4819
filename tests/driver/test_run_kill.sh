#!/bin/bash
# test_run_kill.sh: a `mpquant run` killed (SIGKILL of rank 0, through the
# test hook MPQ_TEST_KILL_AT_TENSOR) in the middle of writing its checkpoint
# leaves no file at the output name; a second run with the same
# configuration then writes it; a third one refuses to replace it without
# output.overwrite and names the file.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
need_shared data/mnist/t10k-images-idx3-ubyte
make_work_dir
cfg="$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w2.5-mixed.cfg"
args=(-o round.iters=10 -o eval.count=500 -o eval.also_all=false -o output.path="$dir/m.h5")

MPQ_TEST_KILL_AT_TENSOR=3 run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${args[@]}"
[ "$RC" -ne 0 ] || fail "the killed run exited 0"
[ ! -e "$dir/m.h5" ] || fail "a file exists at the output name after the kill"
ls -a "$dir" | grep -q '^\.m\.h5\.tmp\.' || fail "no temporary file: the kill did not happen during the write"
rm -f "$dir"/.m.h5.tmp.*

run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${args[@]}"
expect_rc 0
[ -f "$dir/m.h5" ] || fail "no checkpoint after a complete run"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${args[@]}"
[ "$RC" -ne 0 ] || fail "an existing checkpoint was replaced without output.overwrite"
expect_err "m.h5"
finish
