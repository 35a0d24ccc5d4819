#!/bin/bash
# test_round_bitident.sh: the rounded block (packed codes, serialized
# parameters and losses of every layer) must have the same bits at 1, 2 and
# 4 ranks. Compares SHA-256 of the dumps of test_round_parallel --dump.
set -u
exe="$MPQ_BUILD_DIR/tests/round/test_round_parallel"
[ -x "$exe" ] || { echo "FAILED: $exe not built"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
ref=""
for np in 1 2 4; do
  out="$dir/round_np$np.bin"
  if ! $MPQ_MPIEXEC -n $np "$exe" --dump "$out" > "$dir/log" 2>&1; then
    cat "$dir/log"; echo "FAILED: run at $np ranks"; exit 1
  fi
  [ -s "$out" ] || { echo "FAILED: empty dump at $np ranks"; exit 1; }
  sum=$(sha256sum "$out" | cut -d' ' -f1)
  echo "np=$np bytes=$(stat -c %s "$out") sha256=$sum"
  if [ -z "$ref" ]; then ref=$sum
  elif [ "$sum" != "$ref" ]; then echo "FAILED: results differ at $np ranks"; exit 1; fi
done
echo PASSED
