#!/bin/bash
# test_ckpt_coding.sh: entropy-coded codes (output.code_coding = "zstd",
# stages/checkpoint/README.md "Entropy-coded codes"). stories260K at int2 and
# int3 g32 (RTN, the same codes in both files), written at 2 ranks with fixed
# and with zstd-coded codes:
#  - `mpquant eval` of both checkpoints prints the same figures, and their
#    safetensors exports are the same bytes;
#  - the run's coded_bits (per layer and in total) equal 8 x the storage of
#    the codes and params datasets (HDF5's own count, through h5py), and its
#    bits / bpw are the fixed-length sizes;
#  - the coded codes are smaller than the fixed-length ones (the reduction is
#    printed; at least 4 % at int2 and 2 % at int3: with these roundings the
#    codes' empirical entropy allows 7.7 % and 5.4 %);
#  - the Python reader (tests/checkpoint/ckpt_reader.py, from the README)
#    decodes the coded layers to the export's values bit for bit;
#  - coded streams that pass the CRC (recomputed after the edit) but are not
#    one valid frame of the right codes are refused at 2 ranks naming the
#    file, the layer's dataset and the offset or reason, with no output.
# The Python side runs in the reader's virtual environment (numpy, h5py and
# zstandard pinned, see test_ckpt_reader.sh).
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_shared data/text/tinyshakespeare.txt
need_jq
make_work_dir
need_venv "${MPQ_CKPT_READER_VENV:-$HOME/.cache/mpquant/ckpt-reader-venv}" numpy==2.2.6 \
    h5py==3.14.0 zstandard==0.25.0
reader="$MPQ_SOURCE_DIR/tests/checkpoint/ckpt_reader.py"
tok="$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin"
text="$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt"
fast=(-q --json -o quant.method=rtn -o eval.enabled=false -o calibration.segments=1
    -o calibration.seq_len=16 -o output.overwrite=true)

# 8 x storage of codes and params per layer, and the fixed-length code bytes
# (ceil(rows * cols * code_bits / 8)) against the stored ones.
sizes() {
    "$py" -c "import h5py, json, sys
f = h5py.File(sys.argv[1], 'r')
out = {'layers': {}, 'coded': 0, 'fixed_codes': 0, 'stored_codes': 0}
for name, g in f['layers'].items():
    c, p = g['codes'].id.get_storage_size(), g['params'].id.get_storage_size()
    a = g.attrs
    out['layers'][name] = 8 * (c + p)
    out['coded'] += 8 * (c + p)
    out['stored_codes'] += c
    out['fixed_codes'] += (int(a['rows']) * int(a['cols']) * int(a['code_bits']) + 7) // 8
print(json.dumps(out))" "$1"
}

# Under the sanitizers (MPQ_TEST_SANITIZED=1) int3 alone: the hostile cases
# below edit its file.
widths="2 3"
[ "${MPQ_TEST_SANITIZED:-0}" != 1 ] || widths=3
for b in $widths; do
    cfg="$MPQ_SOURCE_DIR/configs/stories260K-w$b.cfg"
    fx="$dir/w$b-fixed.h5"
    zs="$dir/w$b-zstd.h5"
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${fast[@]}" -o output.path="$fx"
    expect_rc 0
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${fast[@]}" -o output.path="$zs" \
        -o output.code_coding=zstd
    expect_rc 0
    last_json >"$dir/w$b.json"
    [ "$FAILS" -eq 0 ] || finish
    # The same figures and the same exported weights.
    for f in fixed zstd; do
        run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval --model "$dir/w$b-$f.h5" --tokenizer "$tok" \
            --text "$text" --docs 20 --json
        expect_rc 0
        last_json | jq -S 'del(.model) | del(.timers)' >"$dir/eval-$f.json"
        mkdir -p "$dir/ex$b-$f"
        run "$MPQ_BIN" export "$dir/w$b-$f.h5" --format safetensors \
            --output "$dir/ex$b-$f/model.safetensors"
        expect_rc 0
    done
    grep -q '"ppl"' "$dir/eval-fixed.json" || fail "w$b: no perplexity in the evaluation"
    cmp -s "$dir/eval-fixed.json" "$dir/eval-zstd.json" ||
        fail "w$b: eval of the coded checkpoint differs: $(diff "$dir/eval-fixed.json" "$dir/eval-zstd.json")"
    cmp -s "$dir/ex$b-fixed/model.safetensors" "$dir/ex$b-zstd/model.safetensors" ||
        fail "w$b: the safetensors exports differ"
    # Every layer coded, the reported size the file's.
    n=$("$py" -c "import h5py, sys
f = h5py.File(sys.argv[1], 'r')
print(sum(g.attrs['codes_coding'] == b'zstd' for g in f['layers'].values()))" "$zs")
    [ "${n:-0}" -ge 20 ] || fail "w$b: only ${n:-no} of 35 layers zstd-coded"
    s=$(sizes "$zs")
    sf=$(sizes "$fx")
    rep=$(jq -c '[.coded_bits, .bits, ([.layers[] | select(.coded_bits) |
        {key: .tensor, value: .coded_bits}] | from_entries)]' "$dir/w$b.json")
    [ "$(jq -r '.[0]' <<<"$rep")" = "$(jq -r .coded <<<"$s")" ] ||
        fail "w$b: coded_bits $(jq -r '.[0]' <<<"$rep") but the file stores $(jq -r .coded <<<"$s")"
    [ "$(jq -r '.[1]' <<<"$rep")" = "$(jq -r .coded <<<"$sf")" ] ||
        fail "w$b: bits $(jq -r '.[1]' <<<"$rep") is not the fixed-length file's $(jq -r .coded <<<"$sf")"
    [ "$(jq -S -c '.[2]' <<<"$rep")" = "$(jq -S -c .layers <<<"$s")" ] ||
        fail "w$b: per-layer coded_bits differ from the datasets' storage"
    jq -e '.coded_bpw > 0 and .coded_bpw < .bpw' "$dir/w$b.json" >/dev/null ||
        fail "w$b: coded_bpw missing or not below bpw"
    pct=$(jq -r '100 * (1 - .stored_codes / .fixed_codes)' <<<"$s")
    echo "int$b g32: codes $(jq -r .fixed_codes <<<"$s") bytes fixed, $(jq -r .stored_codes <<<"$s") coded: $(printf %.2f "$pct") % smaller; total bits $(jq -r '.[1]' <<<"$rep") -> $(jq -r '.[0]' <<<"$rep")"
    min=$((b == 2 ? 4 : 2))
    awk -v p="$pct" -v m="$min" 'BEGIN { exit !(p >= m) }' ||
        fail "w$b: the coded codes are only $pct % smaller (expected >= $min %)"
    run "$py" "$reader" "$zs" --compare "$dir/ex$b-zstd/model.safetensors"
    expect_rc 0
    [ "$(last_json | jq -r .mismatches)" = 0 ] || fail "w$b: the reader's decoding differs"
done

# Hostile coded streams (the CRC recomputed, so that the decoder is reached).
layer=model.layers.0.mlp.down_proj.weight
edit() { # edit FILE PYTHON (g: the layer group, fr: its frame, cz: zstandard, need: decoded bytes)
    "$py" -c "import h5py, numpy as np, sys, zlib, zstandard
f = h5py.File(sys.argv[1], 'r+')
g = f['layers/$layer']
fr = bytes(np.asarray(g['codes'][()], dtype=np.uint8))
cz = zstandard.ZstdCompressor(level=3, write_content_size=True)
need = len(zstandard.ZstdDecompressor().decompress(fr))
def put(b):
    del g['codes']
    g.create_dataset('codes', data=np.frombuffer(b, dtype=np.uint8))
    g.attrs['codes_crc32'] = np.uint32(zlib.crc32(b))
    g.attrs['bits'] = np.int64(8 * (len(b) + g['params'].shape[0]))
$2
f.close()" "$1"
}
refuse() { # refuse FILE PATTERN...: eval and export at 2 ranks refuse it
    local f=$1
    shift
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" export "$f" --format safetensors --output "$dir/x.safetensors"
    [ "$RC" -ne 0 ] || fail "export accepted $f"
    [ ! -e "$dir/x.safetensors" ] || fail "export of $f left an output"
    for p in "$@"; do expect_err "$p"; done
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" eval --model "$f" --tokenizer "$tok" --text "$text" --docs 2
    [ "$RC" -ne 0 ] || fail "eval accepted $f"
    for p in "$@"; do expect_err "$p"; done
}
z3="$dir/w3-zstd.h5"
cases=(
    "short|put(fr[:-4])|damaged or cut short"
    "trail|put(fr + bytes(3))|offset [0-9]+: 3 bytes follow the end of the zstd frame"
    "size|put(cz.compress(bytes(need - 1)))|declares [0-9]+ decoded bytes but the layer needs"
    "nosize|put(zstandard.ZstdCompressor(write_content_size=False).compress(bytes(need)))|does not declare its decoded size"
    "magic|put(bytes(len(fr)))|offset 0: the coded codes do not start with a whole zstd frame header"
    "range|put(cz.compress(bytes([0x98]) + bytes(need - 1)))|decoded byte 0 holds code 8 in field 0"
    "tiny|put(fr[:1])|offset 0: the coded codes do not start with a whole zstd frame header"
    "coding|g.attrs['codes_coding'] = np.bytes_(b'lz4')|attribute codes_coding = 'lz4' is not fixed or zstd"
)
for c in "${cases[@]}"; do
    IFS='|' read -r name stmt pat <<<"$c"
    cp "$z3" "$dir/$name.h5"
    edit "$dir/$name.h5" "$stmt" || fail "cannot edit $name.h5"
    refuse "$dir/$name.h5" "$dir/$name.h5" "/layers/$layer" "$pat"
done
# The CRC still comes first: a flipped byte with the old CRC.
cp "$z3" "$dir/flip.h5"
edit "$dir/flip.h5" "b = bytearray(fr); b[len(b) // 2] ^= 0x10
g['codes'][len(b) // 2] = b[len(b) // 2]" || fail "cannot edit flip.h5"
refuse "$dir/flip.h5" "/layers/$layer/codes: CRC-32 of the stored bytes"
finish
