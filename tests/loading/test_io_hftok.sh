#!/bin/bash
# test_io_hftok.sh TEST_IO_HFTOK: mpquant's Hugging Face tokenizer.json reader
# against the Hugging Face `tokenizers` library (PyPI, pinned below).
#
# The library runs in a virtual environment, MPQ_HFTOK_VENV (default
# ~/.cache/mpquant/hftok-venv), created with tokenizers==0.23.3 when missing
# or at another version. hftok_ref.py writes into a scratch directory the
# test strings, four variants of the TinyLlama tokenizer (metaspace,
# metaspace-nfkc, metaspace-split, unk), one of Phi-3 (lstrip), ten
# byte-level ones of GPT-2 and dolma2 (bl-*, four of them Qwen2-like with a
# Unicode normalizer: bl-nf*; see hftok_ref.py), and the reference ids and decoded texts of
# TinyLlama, Phi-3-mini, GPT-2, SmolLM2, dolma2 and the variants; the C
# test (test_io_hftok.c) compares mpquant's with them.
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
need_venv "${MPQ_HFTOK_VENV:-$HOME/.cache/mpquant/hftok-venv}" "tokenizers==$ver"
make_work_dir
ref=$MPQ_SOURCE_DIR/tests/loading/hftok_ref.py
tok=$MPQ_SHARED_DIR/data/tokenizers
run "$py" "$ref" gen "$MPQ_SHARED_DIR" "$dir/strings.jsonl" "$dir/strings-bl.jsonl"
expect_rc 0
bl="bl-prefix bl-split bl-next bl-removed bl-llama3 bl-qwen2"
nf="bl-nfc bl-nfd bl-nfkc bl-nf-seq metaspace-nfkc"
for v in metaspace metaspace-split unk lstrip $bl $nf; do
    mkdir -p "$dir/$v"
    case $v in
    lstrip) src=$tok/phi-3-mini/tokenizer.json ;;
    bl-llama3 | bl-qwen2 | bl-nf*) src=$tok/dolma2/tokenizer.json ;;
    bl-*) src=$tok/gpt2/tokenizer.json ;;
    *) src=$tok/tinyllama/tokenizer.json ;;
    esac
    run "$py" "$ref" variant "$v" "$src" "$dir/$v/tokenizer.json"
    expect_rc 0
done
# The reference ids, two tokenizers at a time: the Llama-2 family on
# strings.jsonl, byte-level ones on strings-bl.jsonl, the real byte-level
# ones on whole.jsonl too (ref-NAME-whole.jsonl), the normalizer variants
# ($nf) on strings-nfc.jsonl too (ref-NAME-nfs.jsonl).
for name in tinyllama phi-3-mini metaspace metaspace-split unk lstrip gpt2 smollm2 dolma2 $bl \
    gpt2-whole smollm2-whole dolma2-whole $nf ${nf// /-nfs }-nfs; do
    base=${name%-whole}
    base=${base%-nfs}
    src=$tok/$base/tokenizer.json
    [ -d "$tok/$base" ] || src=$dir/$base/tokenizer.json
    strings=$dir/strings.jsonl
    case $name in *-whole) strings=$dir/whole.jsonl ;; *-nfs) strings=$dir/strings-nfc.jsonl ;;
    gpt2 | smollm2 | dolma2 | bl-*)
        strings=$dir/strings-bl.jsonl ;;
    esac
    if [ "$(jobs -rp | wc -l)" -ge 2 ]; then
        wait -n || { echo "FAIL: hftok_ref.py ids" >&2; FAILS=$((FAILS + 1)); }
    fi
    "$py" "$ref" ids "$src" "$strings" "$dir/ref-$name.jsonl" &
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do
    wait -n || { echo "FAIL: hftok_ref.py ids" >&2; FAILS=$((FAILS + 1)); }
done
[ "$FAILS" -eq 0 ] || finish
# The C test's own output (cmocka, counts) goes straight to the log.
"$bin" "$dir" || { echo "FAIL: $bin $dir" >&2; FAILS=$((FAILS + 1)); }
finish
