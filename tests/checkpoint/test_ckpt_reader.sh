#!/bin/bash
# test_ckpt_reader.sh: a checkpoint is readable without mpquant. For every
# quantizer family and every scale format (fp16, fp32, e8m0, e4m3), with
# zero-points, channel signs, per-tensor fp32 values, short last groups
# (down_proj: 172 = 5·32 + 12 columns), both ternary packings and odd code
# widths, `mpquant run` (RTN, stories260K) writes a checkpoint; the Python
# reader tests/checkpoint/ckpt_reader.py, written from the README section
# "Reading a checkpoint without mpquant" alone, decodes every quantized layer
# twice (with the layout attributes, and from the spec alone as for older
# files) and both must equal `mpquant export --format safetensors` bit for
# bit (q/k rows permuted to rotate-half order as the export does).
# Then the checks on read: a layout attribute that contradicts the spec, or
# a level table that contradicts the parameters, is refused naming the
# attribute; a file without the layout attributes (as written before they
# existed) still exports to the same bytes.
#
# The reader runs in a virtual environment, MPQ_CKPT_READER_VENV (default
# ~/.cache/mpquant/ckpt-reader-venv), created with numpy==2.2.6 and
# h5py==3.14.0 from PyPI when missing (Debian package python3-venv).
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/models/stories260K/tok512.bin
need_jq
make_work_dir
need_venv "${MPQ_CKPT_READER_VENV:-$HOME/.cache/mpquant/ckpt-reader-venv}" numpy==2.2.6 h5py==3.14.0
reader="$MPQ_SOURCE_DIR/tests/checkpoint/ckpt_reader.py"
cfg="$MPQ_SOURCE_DIR/configs/stories260K-w4.cfg"
fast=(-q -o quant.method=rtn -o eval.enabled=false -o calibration.segments=1
    -o calibration.seq_len=16 -o output.overwrite=true)

# Every family (13) and scale format, each default once and varied.
specs=(
    "int:bits=4,group=32"
    "int:bits=3,sym=true,gran=channel,scale=fp32"
    "int:bits=5,gran=tensor"
    "int:bits=8,group=48"
    "int:bits=1,group=16"
    "int:bits=7,sym=true,group=20"
    "binary:group=16"
    "binary:gran=tensor,scale=fp32"
    "signed_binary"
    "signed_binary:scale=fp32"
    "ternary"
    "ternary:pack=base3,group=32"
    "ternary_seq:pack=base3,scale=fp32"
    "ternary_seq:group=24"
    "seq2:group=32"
    "pow2:bits=3"
    "pow2:bits=8,scale=fp32"
    "powerexp:bits=4"
    "powerexp:bits=6,a=0.5,scale=fp32,group=40"
    "fp4"
    "fp4:gran=channel,scale=fp32"
    "mxfp4"
    "nvfp4"
    "fp8"
    "fp8:group=32,scale=fp16"
    "nf4"
    "nf4:gran=tensor,scale=fp32"
)
layers=0
families=" "
formats=" "
i=0
for spec in "${specs[@]}"; do
    i=$((i + 1))
    ck="$dir/q$i.h5"
    mkdir -p "$dir/ex$i"
    run "$MPQ_BIN" run "$cfg" "${fast[@]}" -o "quant.spec=\"$spec\"" -o output.path="$ck"
    expect_rc 0
    run "$MPQ_BIN" export "$ck" --format safetensors --output "$dir/ex$i/model.safetensors"
    expect_rc 0
    run "$py" "$reader" "$ck" --compare "$dir/ex$i/model.safetensors"
    expect_rc 0
    summary=$(last_json)
    n=$(jq -r .layers <<<"$summary" 2>/dev/null)
    [ "${n:-0}" -eq 35 ] || fail "$spec: the reader decoded ${n:-no} layers, expected 35"
    [ "$(jq -r .with_layout_attributes <<<"$summary" 2>/dev/null)" = 35 ] ||
        fail "$spec: layers without the layout attributes"
    [ "$(jq -r .mismatches <<<"$summary" 2>/dev/null)" = 0 ] || fail "$spec: reader and export differ"
    layers=$((layers + ${n:-0}))
    case "$families" in *" ${spec%%:*} "*) ;; *) families="$families${spec%%:*} " ;; esac
    for f in $(jq -r '.scale_formats[]' <<<"$summary" 2>/dev/null); do
        case "$formats" in *" $f "*) ;; *) formats="$formats$f " ;; esac
    done
done
for f in int binary signed_binary ternary ternary_seq seq2 pow2 powerexp fp4 mxfp4 nvfp4 fp8 nf4; do
    case "$families" in *" $f "*) ;; *) fail "family $f was not covered" ;; esac
done
for f in fp16 fp32 e8m0 e4m3; do
    case "$formats" in *" $f "*) ;; *) fail "scale format $f was not covered" ;; esac
done

# The comparison is not vacuous: another checkpoint's export differs.
run "$py" "$reader" "$dir/q1.h5" --compare "$dir/ex2/model.safetensors"
expect_rc 1
expect_out '^MISMATCH: '

# Hostile or older files (edited with h5py): q1 is int asymmetric groups,
# q9 signed_binary.
edit() { # edit FILE.h5 PYTHON-STATEMENTS (g: the first layer's group, f: the file)
    "$py" -c "import h5py, numpy as np, sys
f = h5py.File(sys.argv[1], 'r+')
g = f['layers'][sorted(f['layers'])[0]]
$2
f.close()" "$1"
}
cp "$dir/q1.h5" "$dir/bad1.h5"
edit "$dir/bad1.h5" "g.attrs.create('params_layout', np.bytes_(b'scale:fp16[1]'))" || fail "cannot edit bad1.h5"
run "$MPQ_BIN" export "$dir/bad1.h5" --format safetensors --output "$dir/bad1.safetensors"
expect_rc 1
expect_err "attribute 'params_layout' is \"scale:fp16\[1\]\" but spec 'int:"
cp "$dir/q1.h5" "$dir/bad2.h5"
edit "$dir/bad2.h5" "g.attrs.create('group_cols', np.int64(31))" || fail "cannot edit bad2.h5"
run "$MPQ_BIN" inspect "$dir/bad2.h5"
expect_rc 1
expect_err "attribute 'group_cols' is 31 but spec"
cp "$dir/q9.h5" "$dir/bad3.h5"
edit "$dir/bad3.h5" "g.attrs.create('levels', np.array([[0, 1], [0, 1]], dtype='<f4'))" ||
    fail "cannot edit bad3.h5"
run "$MPQ_BIN" export "$dir/bad3.h5" --format safetensors --output "$dir/bad3.safetensors"
expect_rc 1
expect_err "attribute 'levels' entry 3 is 1 but spec 'signed_binary"
cp "$dir/q1.h5" "$dir/bad4.h5"
edit "$dir/bad4.h5" "g.attrs.create('dequant', np.bytes_(b'w = scale[g] * levels[code]'))" ||
    fail "cannot edit bad4.h5"
run "$MPQ_BIN" inspect "$dir/bad4.h5"
expect_rc 1
expect_err "attribute 'dequant' is"
cp "$dir/q1.h5" "$dir/old.h5"
edit "$dir/old.h5" "
for name in f['layers']:
    for a in ('packing', 'scale_format', 'group_cols', 'groups_per_row', 'n_groups',
              'params_layout', 'dequant', 'levels'):
        del f['layers'][name].attrs[a]" || fail "cannot edit old.h5"
mkdir -p "$dir/exold"
run "$MPQ_BIN" export "$dir/old.h5" --format safetensors --output "$dir/exold/model.safetensors"
expect_rc 0
cmp -s "$dir/exold/model.safetensors" "$dir/ex1/model.safetensors" ||
    fail "a file without the layout attributes exports differently"
run "$py" "$reader" "$dir/old.h5" --compare "$dir/ex1/model.safetensors"
expect_rc 0
last_json | grep -q '"layers": 35, "with_layout_attributes": 0,' ||
    fail "the reader did not decode old.h5 from its specs alone"

echo "reader: $layers layers of ${#specs[@]} specs ($families), scale formats ($formats), bit-exact"
finish
