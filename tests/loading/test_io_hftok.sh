#!/bin/bash
# test_io_hftok.sh TEST_IO_HFTOK: mpquant's Hugging Face tokenizer.json reader
# against the Hugging Face `tokenizers` library (PyPI, pinned below).
#
# The library runs in a virtual environment, MPQ_HFTOK_VENV (default
# ~/.cache/mpquant/hftok-venv), created with tokenizers==0.23.3 when missing
# or at another version. hftok_ref.py writes into a scratch directory the
# test strings, three variants of the TinyLlama tokenizer (metaspace,
# metaspace-split, unk) and one of Phi-3 (lstrip; see hftok_ref.py), and the
# reference ids and decoded
# texts of TinyLlama, Phi-3-mini and the variants; the C test
# (test_io_hftok.c) compares mpquant's with them.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
bin=${1:?usage: test_io_hftok.sh TEST_IO_HFTOK}
ver=0.23.3
for f in tinyllama/tokenizer.json phi-3-mini/tokenizer.json gpt2/tokenizer.json \
    smollm2/tokenizer.json dolma2/tokenizer.json; do
    need_shared "data/tokenizers/$f"
done
need_shared data/text/tinyshakespeare.txt
need_shared data/text/wikitext2-test.txt
need_shared data/models/stories260K/tok512.bin
venv=${MPQ_HFTOK_VENV:-$HOME/.cache/mpquant/hftok-venv}
if [ "$("$venv/bin/python" -c 'import tokenizers; print(tokenizers.__version__)' 2>/dev/null)" \
    != "$ver" ]; then
    echo "test_io_hftok: installing tokenizers==$ver into $venv" >&2
    python3 -m venv "$venv" && "$venv/bin/pip" install -q "tokenizers==$ver" >&2 ||
        { echo "FAILED: cannot install tokenizers==$ver into $venv" >&2; exit 1; }
fi
make_work_dir
py=$venv/bin/python
ref=$MPQ_SOURCE_DIR/tests/loading/hftok_ref.py
tok=$MPQ_SHARED_DIR/data/tokenizers
run "$py" "$ref" gen "$MPQ_SHARED_DIR" "$dir/strings.jsonl"
expect_rc 0
for v in metaspace metaspace-split unk lstrip; do
    mkdir -p "$dir/$v"
    src=$tok/tinyllama/tokenizer.json
    [ "$v" = lstrip ] && src=$tok/phi-3-mini/tokenizer.json
    run "$py" "$ref" variant "$v" "$src" "$dir/$v/tokenizer.json"
    expect_rc 0
done
for name in tinyllama phi-3-mini metaspace metaspace-split unk lstrip; do
    src=$tok/$name/tokenizer.json
    [ -d "$tok/$name" ] || src=$dir/$name/tokenizer.json
    run "$py" "$ref" ids "$src" "$dir/strings.jsonl" "$dir/ref-$name.jsonl"
    expect_rc 0
done
[ "$FAILS" -eq 0 ] || finish
# The C test's own output (cmocka, counts) goes straight to the log.
"$bin" "$dir" || { echo "FAIL: $bin $dir" >&2; FAILS=$((FAILS + 1)); }
finish
