#!/bin/bash
# test_ckpt_integrity.sh: checksums of a checkpoint's stored bytes.
#  - one bit flipped below HDF5 in a layer's codes, in its params, or in a
#    plain tensor: `inspect`, `export` and `eval` (2 ranks) all refuse the
#    file, naming it, the dataset and the CRC-32 attribute; none exits 0;
#  - the undamaged file passes all three.
# Usage: test_ckpt_integrity.sh TEST_CKPT_FLIP
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_shared data/text/tinyshakespeare.txt
need_jq
flip=$1
writer="$MPQ_BUILD_DIR/tests/checkpoint/test_ckpt_writer"
[ -x "$writer" ] || { echo "FAILED: $writer not built"; exit 1; }
make_work_dir
tok="$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin"
text="$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt"
good="$dir/good.h5"

run $MPQ_MPIEXEC -n 2 "$writer" "$good"
expect_rc 0
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" inspect "$good" --json
expect_rc 0
layer=$(last_json | jq -r '.layers[1].name')
if [ -z "$layer" ] || [ "$layer" = null ]; then fail "no layer in the checkpoint"; fi

# all_refuse FILE PATTERN...: inspect, export and eval fail at 2 ranks, and
# stderr matches every pattern.
all_refuse() {
    local f=$1
    shift
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" inspect "$f"
    [ "$RC" -ne 0 ] || fail "inspect accepted $f"
    for p in "$@"; do expect_err "$p"; done
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" export "$f" --format safetensors --output "$dir/x.safetensors"
    [ "$RC" -ne 0 ] || fail "export accepted $f"
    [ ! -e "$dir/x.safetensors" ] || fail "export of $f left an output"
    for p in "$@"; do expect_err "$p"; done
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval --model "$f" --tokenizer "$tok" --text "$text" --docs 2
    [ "$RC" -ne 0 ] || fail "eval accepted $f"
    for p in "$@"; do expect_err "$p"; done
}

# One bit of the codes.
cp "$good" "$dir/codes.h5"
run "$flip" "$dir/codes.h5" "/layers/$layer/codes" 5 3
expect_rc 0
all_refuse "$dir/codes.h5" "$dir/codes.h5" "/layers/$layer/codes: CRC-32 of the stored bytes" \
    "attribute 'codes_crc32'" "the codes are damaged"

# One bit of the parameters (the first scale's low byte).
cp "$good" "$dir/params.h5"
run "$flip" "$dir/params.h5" "/layers/$layer/params" 0 0
expect_rc 0
all_refuse "$dir/params.h5" "/layers/$layer/params: CRC-32" "'params_crc32'" \
    "the parameters are damaged"

# One bit of a plain tensor (the sign of the final norm's first weight).
cp "$good" "$dir/tensor.h5"
run "$flip" "$dir/tensor.h5" "/tensors/model.norm.weight" 3 7
expect_rc 0
all_refuse "$dir/tensor.h5" "/tensors/model.norm.weight: CRC-32" "attribute 'crc32'" \
    "the data are damaged"

# The undamaged file still passes.
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" export "$good" --format safetensors --output "$dir/ok.safetensors"
expect_rc 0
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval --model "$good" --tokenizer "$tok" --text "$text" --docs 2
expect_rc 0
finish
