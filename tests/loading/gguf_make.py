#!/usr/bin/env python3
"""gguf_make.py: GGUF test files for mpquant's GGUF reader, written with the
gguf package (gguf-py, llama.cpp's reference writer), and their checks.

  gguf_make.py random OUTDIR
      OUTDIR/<TYPE>.gguf for F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
      Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: a random Llama (dim 256, hidden 512,
      2 layers, 4 heads, 2 kv heads, vocab 96) whose matrices have that type
      (norms F32), plus OUTDIR/mixed.gguf (a different type per matrix,
      q/k/v/o biases, an untied output, alignment 64, linear RoPE scaling,
      keys of every value type and nested arrays). The first five quantized
      types come from gguf.quants.quantize; the K-quants, which gguf-py can
      only dequantize, are random block bytes with finite random half
      scales. OUTDIR/<name>.npz holds gguf.quants.dequantize of every tensor
      under mpquant's Hugging Face names, q/k rows as stored (interleaved).
  gguf_make.py compare REF.npz EXPORT.safetensors
      The F32 export must hold exactly the reference's tensors, bit for bit,
      q/k rows (weights and biases) in rotate-half order as the export
      writes them (head_dim from REF's __head_dim__).
  gguf_make.py llama2c MODEL.bin OUT.gguf
      The llama2.c legacy file as an F32 GGUF (llama.cpp's names, q/k rows
      as stored, tied output when the file shares its classifier).
  gguf_make.py corrupt OUTDIR
      Broken files next to a valid base (base.gguf): truncated header counts,
      key-value pairs and tensor infos, an unknown value type, tensor past the
      end, unknown type, unsupported type, bad alignment, wrong
      architecture, a repeated key, missing key, wrong version.
"""
import json
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

QTYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
          "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
KQUANTS = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}
# byte offsets of the half-float scales inside one block
HALF_FIELDS = {"Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2],
               "Q6_K": [208]}

LAYER = {"attn_norm.weight": "input_layernorm.weight",
         "attn_q.weight": "self_attn.q_proj.weight",
         "attn_k.weight": "self_attn.k_proj.weight",
         "attn_v.weight": "self_attn.v_proj.weight",
         "attn_q.bias": "self_attn.q_proj.bias",
         "attn_k.bias": "self_attn.k_proj.bias",
         "attn_v.bias": "self_attn.v_proj.bias",
         "attn_output.weight": "self_attn.o_proj.weight",
         "attn_output.bias": "self_attn.o_proj.bias",
         "ffn_norm.weight": "post_attention_layernorm.weight",
         "ffn_gate.weight": "mlp.gate_proj.weight",
         "ffn_up.weight": "mlp.up_proj.weight",
         "ffn_down.weight": "mlp.down_proj.weight"}
GLOBAL = {"token_embd.weight": "model.embed_tokens.weight",
          "output_norm.weight": "model.norm.weight",
          "output.weight": "lm_head.weight"}


def hf_name(name):
    if name in GLOBAL:
        return GLOBAL[name]
    _, layer, rest = name.split(".", 2)
    return f"model.layers.{layer}.{LAYER[rest]}"


def random_halves(rng, n):
    return rng.uniform(0.002, 0.05, n).astype(np.float16) * rng.choice([-1, 1], n).astype(np.float16)


def encode(rng, x, qtype):
    """(raw array for GGUFWriter, raw dtype or None, dequantized reference)."""
    if qtype == "F32":
        return x, None, x
    if qtype == "F16":
        h = x.astype(np.float16)
        return h, None, h.astype(np.float32)
    qt = T[qtype]
    if qtype in KQUANTS:
        block, size = gguf.GGML_QUANT_SIZES[qt]
        rows, cols = x.shape
        nb = rows * cols // block
        raw = rng.integers(0, 256, size=(nb, size), dtype=np.uint8)
        for off in HALF_FIELDS[qtype]:
            raw[:, off:off + 2] = random_halves(rng, nb).view(np.uint8).reshape(nb, 2)
        raw = raw.reshape(rows, cols // block * size)
    else:
        raw = quants.quantize(x, qt)
    return raw, qt, quants.dequantize(raw, qt).astype(np.float32)


def shape_of(dim, hidden, heads, kv, vocab, hd):
    return {"token_embd.weight": (vocab, dim), "output_norm.weight": (dim,),
            "output.weight": (vocab, dim), "attn_norm.weight": (dim,),
            "attn_q.weight": (heads * hd, dim), "attn_k.weight": (kv * hd, dim),
            "attn_v.weight": (kv * hd, dim), "attn_q.bias": (heads * hd,),
            "attn_k.bias": (kv * hd,), "attn_v.bias": (kv * hd,),
            "attn_output.weight": (dim, heads * hd), "attn_output.bias": (dim,),
            "ffn_norm.weight": (dim,), "ffn_gate.weight": (hidden, dim),
            "ffn_up.weight": (hidden, dim), "ffn_down.weight": (dim, hidden)}


def llama_keys(w, dim, hidden, layers, heads, kv, ctx=128, eps=1e-5, theta=10000.0):
    w.add_context_length(ctx)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(hidden)
    w.add_block_count(layers)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_freq_base(theta)
    w.add_rope_dimension_count(dim // heads)


def write_random(path, rng, types, biases=False, untied=False, extra=None):
    """types: GGUF tensor suffix -> qtype (default F32). Returns the reference."""
    dim, hidden, layers, heads, kv, vocab = 256, 512, 2, 4, 2, 96
    shapes = shape_of(dim, hidden, heads, kv, vocab, dim // heads)
    w = gguf.GGUFWriter(path, "llama")
    llama_keys(w, dim, hidden, layers, heads, kv)
    if extra:
        extra(w)
    names = ["token_embd.weight", "output_norm.weight"] + (["output.weight"] if untied else [])
    per = [k for k in LAYER if biases or not k.endswith(".bias")]
    names += [f"blk.{i}.{k}" for i in range(layers) for k in per]
    ref = {"__head_dim__": np.array(dim // heads)}
    for name in names:
        key = name.split(".", 2)[2] if name.startswith("blk.") else name
        x = rng.standard_normal(shapes[key]).astype(np.float32)
        qtype = types.get(key, "F32")
        raw, qt, deq = encode(rng, x, qtype)
        w.add_tensor(name, raw, raw_dtype=qt)
        ref[hf_name(name)] = deq.reshape(shapes[key])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return ref


def every_value_type(w):
    """Keys of every GGUF value type, nested arrays, a linear RoPE scaling and
    alignment 64 (the reader must step over all of them)."""
    w.data_alignment = 64
    w.add_uint32("general.alignment", 64)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_int32("test.i32", -7)
    w.add_uint64("test.u64", 1 << 40)
    w.add_int64("test.i64", -(1 << 40))
    w.add_float64("test.f64", 0.125)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo")
    w.add_array("test.strings", ["a", "", "ccc"])
    w.add_array("test.nested", [[1, 2, 3], [4]])
    w.add_key_value("test.deep", [[["x", "yy"], ["z"]], [["w"]]], gguf.GGUFValueType.ARRAY)
    w.add_array("test.floats", [0.5, 1.5])
    w.add_string("llama.rope.scaling.type", "linear")
    w.add_float32("llama.rope.scaling.factor", 2.0)


def cmd_random(out):
    rng = np.random.default_rng(1234)
    mats = ["token_embd.weight", "output.weight", "attn_q.weight", "attn_k.weight",
            "attn_v.weight", "attn_output.weight", "ffn_gate.weight", "ffn_up.weight",
            "ffn_down.weight"]
    for qtype in QTYPES:
        ref = write_random(f"{out}/{qtype}.gguf", rng, {m: qtype for m in mats})
        np.savez(f"{out}/{qtype}.npz", **ref)
    mixed = dict(zip(mats, ["Q6_K", "Q4_K", "Q5_K", "Q3_K", "Q2_K", "Q8_0", "Q5_1", "BF16",
                            "F16"]))
    ref = write_random(f"{out}/mixed.gguf", rng, mixed, biases=True, untied=True,
                       extra=every_value_type)
    np.savez(f"{out}/mixed.npz", **ref)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    hdr = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", (k, v["dtype"])
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(data[base + b:base + e], dtype=np.float32).reshape(v["shape"])
    return out


def to_half_order(x, hd):
    """Rows of each head: (2i + t) -> (t * hd/2 + i)."""
    rows = x.shape[0]
    idx = np.arange(rows)
    h, j = idx // hd, idx % hd
    src = h * hd + 2 * (j % (hd // 2)) + j // (hd // 2)
    return x[src]


def cmd_compare(ref_path, st_path):
    ref = dict(np.load(ref_path))
    hd = int(ref.pop("__head_dim__"))
    got = read_safetensors(st_path)
    bad = 0
    if set(ref) != set(got):
        print(f"tensor names differ: only in reference {sorted(set(ref) - set(got))}, "
              f"only in export {sorted(set(got) - set(ref))}")
        bad += 1
    for k in sorted(set(ref) & set(got)):
        r = ref[k]
        if ".q_proj." in k or ".k_proj." in k:
            r = to_half_order(r, hd)
        g = got[k]
        if r.shape != g.shape:
            print(f"{k}: shape {g.shape}, reference {r.shape}")
            bad += 1
            continue
        diff = int(np.count_nonzero(r.view(np.uint32) != g.view(np.uint32)))
        if diff:
            print(f"{k}: {diff} of {r.size} values differ in their bits")
            bad += 1
    print(f"{len(got)} tensors, {sum(v.size for v in got.values())} values compared, "
          f"{bad} mismatching")
    return 1 if bad else 0


def cmd_llama2c(src, dst):
    raw = np.fromfile(src, dtype=np.uint8)
    dim, hidden, layers, heads, kv, vocab, ctx = struct.unpack("<7i", raw[:28].tobytes())
    shared = vocab > 0
    vocab = abs(vocab)
    hd = dim // heads
    f = raw[28:].view(np.float32)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        a = f[pos:pos + n].reshape(shape)
        pos += n
        return a

    emb = take(vocab, dim)
    arrays = {}
    for key, shp in [("attn_norm.weight", (dim,)), ("attn_q.weight", (dim, dim)),
                     ("attn_k.weight", (kv * hd, dim)), ("attn_v.weight", (kv * hd, dim)),
                     ("attn_output.weight", (dim, dim)), ("ffn_norm.weight", (dim,)),
                     ("ffn_gate.weight", (hidden, dim)), ("ffn_down.weight", (dim, hidden)),
                     ("ffn_up.weight", (hidden, dim))]:
        arrays[key] = take(layers, *shp)
    norm = take(dim)
    take(ctx * hd)  # the two RoPE tables
    w = gguf.GGUFWriter(dst, "llama")
    llama_keys(w, dim, hidden, layers, heads, kv, ctx=ctx)
    w.add_tensor("token_embd.weight", emb)
    w.add_tensor("output_norm.weight", norm)
    if not shared:
        w.add_tensor("output.weight", take(vocab, dim))
    assert pos == f.size, "llama2.c file size"
    for i in range(layers):
        for key, a in arrays.items():
            w.add_tensor(f"blk.{i}.{key}", np.ascontiguousarray(a[i]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def small_base(path, arch="llama", extra=None, types=None):
    rng = np.random.default_rng(7)
    dim, hidden, layers, heads, kv, vocab = 64, 96, 1, 4, 2, 32
    shapes = shape_of(dim, hidden, heads, kv, vocab, dim // heads)
    w = gguf.GGUFWriter(path, arch)
    llama_keys(w, dim, hidden, layers, heads, kv)
    if extra:
        extra(w)
    names = ["token_embd.weight", "output_norm.weight"]
    names += [f"blk.0.{k}" for k in LAYER if not k.endswith(".bias")]
    for name in names:
        key = name.split(".", 2)[2] if name.startswith("blk.") else name
        x = rng.standard_normal(shapes[key]).astype(np.float32)
        raw, qt, _ = encode(rng, x, (types or {}).get(key, "F32"))
        w.add_tensor(name, raw, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def patch_type(data, name, new_type):
    """Sets the ggml type of 2-D tensor `name` in the tensor infos."""
    key = struct.pack("<Q", len(name)) + name.encode()
    at = data.find(key)
    assert at > 0
    at += len(key)
    nd = struct.unpack("<I", data[at:at + 4])[0]
    at += 4 + 8 * nd
    data[at:at + 4] = struct.pack("<I", new_type)


def cmd_corrupt(out):
    base = f"{out}/base.gguf"
    small_base(base, types={"attn_q.weight": "Q4_0"})
    data = bytearray(open(base, "rb").read())
    open(f"{out}/trunc_counts.gguf", "wb").write(data[:60])
    at = data.find(b"llama.attention.head_count_kv")
    open(f"{out}/trunc_kv.gguf", "wb").write(data[:at + 35])
    at = data.find(b"blk.0.ffn_norm.weight")
    open(f"{out}/trunc_tinfo.gguf", "wb").write(data[:at + 30])
    d = bytearray(data)
    key = struct.pack("<Q", 20) + b"general.architecture"
    at = d.find(key) + len(key)
    d[at:at + 4] = struct.pack("<I", 77)
    open(f"{out}/bad_vtype.gguf", "wb").write(d)
    open(f"{out}/trunc_data.gguf", "wb").write(data[:len(data) - 100])
    d = bytearray(data)
    patch_type(d, "blk.0.ffn_up.weight", 99)
    open(f"{out}/unknown_type.gguf", "wb").write(d)
    d = bytearray(data)
    patch_type(d, "blk.0.attn_q.weight", 20)  # IQ4_NL: the size of Q4_0
    open(f"{out}/iq4_type.gguf", "wb").write(d)
    d = bytearray(data)
    d[4:8] = struct.pack("<I", 1)
    open(f"{out}/version1.gguf", "wb").write(d)

    def bad_align(w):
        w.data_alignment = 48
        w.add_uint32("general.alignment", 48)
    small_base(f"{out}/bad_align.gguf", extra=bad_align)
    small_base(f"{out}/gpt2.gguf", arch="gpt2")

    d = bytearray(data)
    at = d.find(b"llama.rope.freq_base")
    d[at:at + 20] = b"llama.context_length"
    open(f"{out}/dup_key.gguf", "wb").write(d)
    small_base(f"{out}/no_block_count.gguf")
    d = bytearray(open(f"{out}/no_block_count.gguf", "rb").read())
    key = b"llama.block_count"
    at = d.find(key)
    d[at:at + len(key)] = b"llama.block_cOunt"
    open(f"{out}/no_block_count.gguf", "wb").write(d)


def main(argv):
    if len(argv) == 3 and argv[1] == "random":
        cmd_random(argv[2])
    elif len(argv) == 4 and argv[1] == "compare":
        return cmd_compare(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "llama2c":
        cmd_llama2c(argv[2], argv[3])
    elif len(argv) == 3 and argv[1] == "corrupt":
        cmd_corrupt(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
