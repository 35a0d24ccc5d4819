#!/bin/bash
# End-to-end `mpquant eval`: the quick form for language models and the
# configuration form for the MNIST classifier under mpirun at 1, 2 and 4
# ranks, with --json; the printed figures must be identical for every rank
# count and match shared/README.md. Also bad input: usage errors, a missing
# model file, a broken CNN description.
set -u
. "$(dirname "$0")/../lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_shared data/text/tinyshakespeare.txt
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
need_shared data/mnist/t10k-images-idx3-ubyte
S="$MPQ_SHARED_DIR/data"
MODEL="$S/models/stories260K/stories260K.bin"
TOK="$S/models/stories260K/tok512.bin"
TEXT="$S/text/tinyshakespeare.txt"

# Value of a top-level number field of the last JSON line.
jnum() { last_json | grep -o "\"$1\":[-0-9.eE+]*" | head -n 1 | cut -d: -f2; }

# The reference numbers (shared/README.md) at 2 ranks.
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" eval --model "$MODEL" --tokenizer "$TOK" --text "$TEXT" \
    --docs 500 --json
expect_rc 0
expect_out '^predictions: 41817$'
expect_out '^mean_nll: 4\.81140[67]$'
expect_out '^ppl: 122\.904'
[ "$(jnum predictions)" = "41817" ] || fail "JSON predictions $(jnum predictions)"

# Identical figures, to the last printed digit of the JSON doubles, at 1, 2
# and 4 ranks (on fewer documents, to keep the test short).
prev=""
for np in 1 2 4; do
    run $MPQ_MPIEXEC -np $np "$MPQ_BIN" eval --model "$MODEL" --tokenizer "$TOK" --text "$TEXT" \
        --docs 120 --json
    expect_rc 0
    cur="$(jnum predictions) $(jnum mean_nll) $(jnum ppl)"
    [ -n "$(jnum mean_nll)" ] || fail "JSON has no mean_nll"
    if [ -n "$prev" ] && [ "$cur" != "$prev" ]; then
        fail "figures at $np ranks ($cur) differ from 1 rank ($prev)"
    fi
    prev="$cur"
done

# KLD against the same model as reference, and a quick generation.
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" eval --model "$MODEL" --tokenizer "$TOK" --text "$TEXT" \
    --docs 20 --reference "$MODEL" --generate 30 --json
expect_rc 0
[ "$(jnum kld)" = "0" ] || fail "KLD of a model against itself is $(jnum kld)"
[ "$(jnum top1_agreement)" = "1" ] || fail "top-1 agreement with itself is $(jnum top1_agreement)"
expect_out '^generated \(30 tokens\): Once upon a time, there was a little girl named Lily'

# Classifier through the configuration file.
prev=""
for np in 1 4; do
    run $MPQ_MPIEXEC -np $np "$MPQ_BIN" eval "$MPQ_SOURCE_DIR/configs/mnist-cnn-small.cfg" --json
    expect_rc 0
    expect_out '^correct: 9862$'
    [ "$(jnum correct)" = "9862" ] || fail "JSON correct $(jnum correct) at $np ranks"
    [ "$(jnum total)" = "10000" ] || fail "JSON total $(jnum total) at $np ranks"
    [ "$(jnum accuracy)" = "0.9862" ] || fail "JSON accuracy $(jnum accuracy) at $np ranks"
done

# Bad input.
run "$MPQ_BIN" eval
expect_rc 2
expect_err 'eval: expected a configuration file, or --model FILE'
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" eval --model /nonexistent/m.bin --tokenizer "$TOK" --text "$TEXT"
expect_rc 1
expect_err 'model.path: cannot read .*/nonexistent/m.bin'
TMP=$(mktemp -d)
sed 's/weight = "conv2.weight"/weight = "conv9.weight"/' \
    "$MPQ_SOURCE_DIR/configs/mnist-cnn-small.cfg" > "$TMP/bad.cfg"
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" eval "$TMP/bad.cfg"
expect_rc 1
expect_err 'conv9.weight'
printf 'model = { cnn = ( { op = "conv2d"; wieght = "w"; } ); };\n' > "$TMP/typo.cfg"
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" eval "$TMP/typo.cfg"
expect_rc 1
expect_err 'typo.cfg:1: model.cnn: op .conv2d.: unknown field .wieght.'
rm -rf "$TMP"
finish
