#!/bin/bash
# test_bitident.sh: the reduced H (with count and absmax) must have the same
# bits whatever the number of ranks (1, 2, 3, 4) and whatever assignment of
# chunks to ranks (round-robin or contiguous blocks). Compares SHA-256 of
# the dumps written by test_hessian_hstat --dump.
set -u
exe="$MPQ_BUILD_DIR/tests/hessian/test_hessian_hstat"
[ -x "$exe" ] || { echo "FAILED: $exe not built"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
ref=""
for np in 1 2 3 4; do
  for assign in rr block; do
    out="$dir/H_np${np}_${assign}.bin"
    if ! $MPQ_MPIEXEC -n $np "$exe" --dump "$out" --assign $assign > "$dir/log" 2>&1; then
      cat "$dir/log"; echo "FAILED: run at $np ranks ($assign)"; exit 1
    fi
    sum=$(sha256sum "$out" | cut -d' ' -f1)
    echo "np=$np assign=$assign sha256=$sum"
    if [ -z "$ref" ]; then ref=$sum
    elif [ "$sum" != "$ref" ]; then echo "FAILED: H differs at $np ranks ($assign)"; exit 1; fi
  done
done
# The dump is not trivially constant: it must be 61*61*8 + 8 + 61*8 bytes.
size=$(stat -c %s "$dir/H_np1_rr.bin")
[ "$size" -eq $((61*61*8 + 8 + 61*8)) ] || { echo "FAILED: dump has $size bytes"; exit 1; }
echo PASSED
