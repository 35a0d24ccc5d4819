#!/bin/bash
# test_ckpt_kill.sh: atomic output and refusals through real processes.
#  - a writer killed (SIGKILL) in the middle of the write leaves no file at
#    the output name (only its temporary ".NAME.tmp.PID.HEX", documented);
#  - the next run writes the checkpoint; a run without overwrite refuses to
#    replace it and leaves it unchanged;
#  - `mpquant export`: llama2c and safetensors (+ config.json) files that
#    evaluate like the checkpoint; refusal to overwrite without --overwrite
#    and to write over its input.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_shared data/text/tinyshakespeare.txt
exe="$MPQ_BUILD_DIR/tests/checkpoint/test_ckpt_writer"
[ -x "$exe" ] || { echo "FAILED: $exe not built"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir" "$OUT" "$ERR"' EXIT
out="$dir/q.h5"

# Killed after 20 of the model's 47 tensors.
run $MPQ_MPIEXEC -n 2 "$exe" "$out" --kill-after 20
[ "$RC" -ne 0 ] || fail "the killed writer exited with status 0"
[ ! -e "$out" ] || fail "a killed writer left a file at the output name"
ntmp=$(find "$dir" -maxdepth 1 -name '.q.h5.tmp.*' | wc -l)
[ "$ntmp" -eq 1 ] || fail "expected the killed run's temporary, found $ntmp"
rm -f "$dir"/.q.h5.tmp.*

run $MPQ_MPIEXEC -n 2 "$exe" "$out"
expect_rc 0
[ -s "$out" ] || fail "no checkpoint after a complete run"
[ "$(find "$dir" -maxdepth 1 -name '.q.h5.tmp.*' | wc -l)" -eq 0 ] || fail "temporary left after commit"
sum=$(sha256sum "$out" | cut -d' ' -f1)
run $MPQ_MPIEXEC -n 2 "$exe" "$out"
[ "$RC" -ne 0 ] || fail "an existing checkpoint was replaced without overwrite"
expect_err "already exists"
[ "$(sha256sum "$out" | cut -d' ' -f1)" = "$sum" ] || fail "the refused run changed the checkpoint"

# Exports through the command line.
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" export "$out" --format llama2c --output "$dir/q.bin"
expect_rc 0
expect_out "exported .* \(llama2c, 47 tensors, 1056540 bytes\)"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" export "$out" --format llama2c --output "$dir/q.bin"
[ "$RC" -ne 0 ] || fail "export replaced an existing file without --overwrite"
expect_err "already exists"
run "$MPQ_BIN" export "$out" --format safetensors --output "$out" --overwrite
[ "$RC" -ne 0 ] || fail "export wrote over its input"
expect_err "same file as input"
mkdir "$dir/st"
run "$MPQ_BIN" export "$out" --format safetensors --output "$dir/st/model.safetensors" --json
expect_rc 0
bytes=$(stat -c %s "$dir/st/model.safetensors")
last_json | grep -q "^{\"command\":\"export\",.*\"format\":\"safetensors\",\"tensors\":[0-9]*,\"bytes\":$bytes}$" ||
    fail "export --json: $(last_json) (file of $bytes bytes)"
[ -s "$dir/st/config.json" ] || fail "no config.json beside the safetensors export"
run "$MPQ_BIN" export "$out" --format=bogus --output "$dir/x"
[ "$RC" -ne 0 ] || fail "unknown export format accepted"
expect_err "unknown --format 'bogus'"

# The llama2.c writer against an independent reference: exporting the
# original fp32 model gives back its file byte for byte, except for the
# float rounding of the two RoPE tables at the end (2 x 512 x 4 fp32 =
# 16384 bytes; run.c ignores them).
orig="$MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin"
run "$MPQ_BIN" export "$orig" --format llama2c --output "$dir/orig.bin"
expect_rc 0
size=$(stat -c %s "$orig")
[ "$(stat -c %s "$dir/orig.bin")" -eq "$size" ] || fail "llama2c export of the original has another size"
first=$(cmp -l "$orig" "$dir/orig.bin" | head -n 1 | awk '{print $1}')
[ -z "$first" ] || [ "$first" -gt $((size - 16384)) ] ||
    fail "llama2c export of the original differs at byte $first, before the RoPE tables"

tok="$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin"
text="$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt"
nll() {
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval --model "$1" --tokenizer "$tok" --text "$text" --docs 12
    expect_rc 0
    grep '^mean_nll:' "$OUT" | awk '{print $2}'
}
a=$(nll "$out")
b=$(nll "$dir/q.bin")
c=$(nll "$dir/st")
echo "mean_nll: checkpoint $a, llama2c $b, safetensors $c"
[ -n "$a" ] && [ "$a" = "$b" ] || fail "llama2c export evaluates to $b, checkpoint to $a"
awk -v a="$a" -v c="$c" 'BEGIN { d = a - c; if (d < 0) d = -d; exit !(d <= 1e-5) }' ||
    fail "safetensors export evaluates to $c, checkpoint to $a"
finish
