#!/usr/bin/env python3
"""ckpt_reader.py: an mpquant checkpoint reader written from
stages/checkpoint/README.md, section "Reading a checkpoint without mpquant",
and nothing else (no mpquant source, no constants of its own): numpy + h5py.

    ckpt_reader.py CKPT                     decode every quantized layer, print a summary
    ckpt_reader.py CKPT --compare EXPORT    ... and compare each layer bit for bit with
                                            the tensor of that name in EXPORT, the
                                            safetensors file of `mpquant export CKPT
                                            --format safetensors` (q/k rows permuted as the
                                            section's "Row order" says)

Every layer is decoded twice: with its layout attributes (packing, params_layout,
dequant, levels, ...) and with the layout derived from its `spec` alone, as the section
tells for files written before those attributes; the two layouts must agree and, with
--compare, both decodings must equal the export. The last line of stdout is a JSON
summary; exit status 0 when every layer decoded (and matched), 1 otherwise.
"""
import json
import re
import struct
import sys
import zlib

import h5py
import numpy as np

F32 = np.float32


def text(v):
    return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)


# ---- bit streams -------------------------------------------------------------------


def unpack_bits(buf, n, k):
    """n unsigned k-bit values of a little-endian bit stream, LSB first."""
    need = (n * k + 7) // 8
    if len(buf) < need:
        raise ValueError(f"{need} bytes needed for {n} values of {k} bits, {len(buf)} given")
    bits = np.unpackbits(buf[:need], bitorder="little")[: n * k].reshape(n, k)
    return bits.astype(np.int64) @ (np.int64(1) << np.arange(k, dtype=np.int64))


def unpack_base3(buf, n):
    """n ternary digits, 5 per byte, first code the least significant digit."""
    need = (n + 4) // 5
    b = buf[:need].astype(np.int64)
    if len(b) != need or (b >= 243).any():
        raise ValueError("base-3 code stream is short or holds a byte >= 243")
    digits = np.empty((need, 5), dtype=np.int64)
    for d in range(5):
        digits[:, d] = b % 3
        b //= 3
    return digits.reshape(-1)[:n]


def decode_zstd(buf, n, k, packing):
    """The n codes of a `codes_coding = zstd` dataset (README "Entropy-coded codes"):
    one zstd frame of the codes in byte-aligned fields of f bits."""
    import zstandard  # only files with entropy-coded codes need it

    f = 1
    while f < (2 if packing == "base3" else k):
        f *= 2
    need = (n * f + 7) // 8
    raw = bytes(buf)
    if zstandard.frame_content_size(raw) != need:
        raise ValueError(f"zstd frame does not declare its {need} decoded bytes")
    d = zstandard.ZstdDecompressor().decompressobj()
    out = d.decompress(raw)
    if len(out) != need or d.unused_data or not d.eof:
        raise ValueError("zstd frame decodes to the wrong length or has bytes after it")
    per = 8 // f
    fields = unpack_bits(np.frombuffer(out, dtype=np.uint8), need * per, f)
    limit = 3 if packing == "base3" else 1 << k
    if (fields[:n] >= limit).any() or fields[n:].any():
        raise ValueError("zstd frame holds a code out of range or non-zero padding")
    return fields[:n]


# ---- number formats ----------------------------------------------------------------


def e4m3_value(b):
    """OCP FP8 E4M3 bytes to float32 (sign included, NaN for 0x7F/0xFF)."""
    b = b.astype(np.int64)
    e, m = (b >> 3) & 15, b & 7
    v = np.where(e == 0, m * 2.0**-9, (1.0 + m / 8.0) * np.exp2(e - 7.0))
    v = np.where((b & 0x7F) == 0x7F, np.nan, v)
    return np.where(b & 0x80, -v, v).astype(F32)


def section_bytes(typ, count):
    if typ == "fp16":
        return 2 * count
    if typ == "fp32":
        return 4 * count
    if typ in ("e8m0", "e4m3"):
        return count
    m = re.fullmatch(r"u(\d+)", typ)
    if not m:
        raise ValueError(f"unknown params section type '{typ}'")
    return (count * int(m.group(1)) + 7) // 8


def decode_section(typ, raw, count):
    if typ == "fp16":
        return np.frombuffer(raw.tobytes(), dtype="<f2").astype(F32)
    if typ == "fp32":
        return np.frombuffer(raw.tobytes(), dtype="<f4").astype(F32)
    if typ == "e8m0":
        return np.ldexp(F32(1.0), raw.astype(np.int32) - 127).astype(F32)
    if typ == "e4m3":
        return e4m3_value(raw)
    return unpack_bits(raw, count, int(typ[1:]))


def parse_params(layout, blob):
    """{name: decoded array} of the params blob described by params_layout."""
    out, off = {}, 0
    for sec in layout.split("; "):
        m = re.fullmatch(r"(\w+):(\w+)\[(\d+)\]", sec)
        if not m:
            raise ValueError(f"params_layout section '{sec}' is not name:type[count]")
        name, typ, count = m.group(1), m.group(2), int(m.group(3))
        nb = section_bytes(typ, count)
        if off + nb > len(blob):
            raise ValueError(f"params section '{sec}' runs past the {len(blob)}-byte blob")
        out[name] = decode_section(typ, blob[off : off + nb], count)
        off += nb
    if off != len(blob):
        raise ValueError(f"params_layout covers {off} bytes, the blob has {len(blob)}")
    return out


# ---- the layout of one layer -------------------------------------------------------

LAYOUT = ("packing", "scale_format", "group_cols", "groups_per_row", "n_groups",
          "params_layout", "dequant", "levels")

NF4 = [-1, -0.6961928056323431, -0.5250729594465008, -0.39491742591990736,
       -0.28444130892108227, -0.1847734028004558, -0.09104997598578048, 0,
       0.07958031495840909, 0.16093014438029074, 0.2461122513474596, 0.33791513671312795,
       0.4407097318642166, 0.5626168879699852, 0.7229566441594739, 1]


def stored_layout(a):
    """The layout attributes as stored."""
    y = {k: a[k] for k in LAYOUT}
    for k in ("packing", "scale_format", "params_layout", "dequant"):
        y[k] = text(y[k])
    for k in ("group_cols", "groups_per_row", "n_groups"):
        y[k] = int(y[k])
    y["levels"] = np.asarray(y["levels"], dtype=F32)
    return y


def level_table(family, keys, k, params):
    """The section's level tables, for a file without the `levels` attribute."""
    c = np.arange(1 << k)
    if family == "int":
        return (c - (1 << (k - 1)) if keys["sym"] == "true" else c).astype(F32)
    fixed = {"binary": [-1, 1], "signed_binary": [[0, 1], [0, -1]],
             "ternary": [-1, 0, 1, np.nan], "seq2": [-0.75, -0.25, 0.25, 0.75],
             "ternary_seq": [-F32(2) / F32(3), 0, F32(2) / F32(3), np.nan], "nf4": NF4}
    if family in fixed:
        return np.array(fixed[family], dtype=F32)
    if family == "pow2":
        H = 1 << (k - 1)
        m = c % H
        v = np.where(m == 0, 0.0, np.exp2((m - (H - 1)).astype(np.float64)))
        return np.where(c >= H, -v, v).astype(F32)
    if family == "powerexp":
        a, qmax = float(params["a"][0]), (1 << (k - 1)) - 1
        v = [np.nan if i == (1 << k) - 1 else
             (-1 if i < qmax else 1) * (abs(i - qmax) / qmax) ** (1.0 / a) for i in c]
        return np.array(v, dtype=F32)
    if family in ("fp4", "mxfp4", "nvfp4"):
        e, m = (c >> 1) & 3, c & 1
        v = np.where(e == 0, 0.5 * m, (1 + m / 2) * np.exp2(e - 1.0))
        return np.where(c & 8, -v, v).astype(F32)
    if family == "fp8":
        return e4m3_value(c)
    raise ValueError(f"unknown family '{family}'")


def derived_layout(a, blob):
    """The layout from `spec` alone (section: files without the layout attributes)."""
    family, _, rest = text(a["spec"]).partition(":")
    keys = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    R, C, k = int(a["rows"]), int(a["cols"]), int(a["code_bits"])
    y = {"packing": "base3" if keys.get("pack") == "base3" else "bits",
         "scale_format": {"mxfp4": "e8m0", "nvfp4": "e4m3"}.get(family, keys.get("scale"))}
    if keys.get("gran") == "tensor":
        GC, GPR, G = C, 0, 1
    elif keys.get("gran") == "channel":
        GC, GPR, G = C, 1, R
    else:
        GC = min(int(keys["group"]), C)
        GPR = -(-C // GC)
        G = R * GPR
    y.update(group_cols=GC, groups_per_row=GPR, n_groups=G)
    secs = [f"scale:{y['scale_format']}[{G}]"]
    formula = "w = scale[g] * levels[code]"
    if family == "int" and keys["sym"] == "false":
        secs.append(f"zero:u{k}[{G}]")
        formula = "w = scale[g] * (levels[code] - zero[g])"
    if family == "signed_binary":
        secs.append(f"sign:u1[{R}]")
        formula = "w = scale[g] * levels[sign[r]][code]"
    if family == "nvfp4":
        secs.append("tensor_scale:fp32[1]")
        formula = "w = (scale[g] * tensor_scale) * levels[code]"
    if family == "powerexp":
        secs.append("a:fp32[1]")
    y["params_layout"], y["dequant"] = "; ".join(secs), formula
    y["levels"] = level_table(family, keys, k, parse_params(y["params_layout"], blob))
    return y


# ---- one layer ---------------------------------------------------------------------


def decode_layer(g, y):
    """The float32 matrix [rows][cols] of the layer group g with layout y."""
    a = g.attrs
    R, C, k = int(a["rows"]), int(a["cols"]), int(a["code_bits"])
    n = R * C
    codes_buf = np.asarray(g["codes"][()], dtype=np.uint8)
    # The checksums (README "Checksums"): zlib's CRC-32 of each dataset's bytes.
    for name in ("codes", "params"):
        if name + "_crc32" in a:
            crc = zlib.crc32(np.asarray(g[name][()], dtype=np.uint8).tobytes())
            want = int(a[name + "_crc32"])
            if crc != want:
                raise ValueError(f"{name}: CRC-32 {crc:#010x}, attribute {want:#010x}")
    coding = text(a["codes_coding"]) if "codes_coding" in a else "fixed"
    if coding == "zstd":
        codes = decode_zstd(codes_buf, n, k, y["packing"])
    elif coding != "fixed":
        raise ValueError(f"unknown codes_coding '{coding}'")
    elif y["packing"] == "bits":
        codes = unpack_bits(codes_buf, n, k)
    elif y["packing"] == "base3":
        codes = unpack_base3(codes_buf, n)
    else:
        raise ValueError(f"unknown packing '{y['packing']}'")
    p = parse_params(y["params_layout"], np.asarray(g["params"][()], dtype=np.uint8))
    GC, GPR = y["group_cols"], y["groups_per_row"]
    r = np.repeat(np.arange(R, dtype=np.int64), C)
    c = np.tile(np.arange(C, dtype=np.int64), R)
    gi = r * GPR + c // GC
    if gi.max() >= y["n_groups"] or len(p["scale"]) != y["n_groups"]:
        raise ValueError("group index past n_groups")
    levels, scale, formula = y["levels"], p["scale"][gi], y["dequant"]
    if formula == "w = scale[g] * (levels[code] - zero[g])":
        w = scale * (levels[codes] - p["zero"][gi].astype(F32))
    elif formula == "w = scale[g] * levels[code]":
        w = scale * levels[codes]
    elif formula == "w = scale[g] * levels[sign[r]][code]":
        w = scale * levels[p["sign"][r], codes]
    elif formula == "w = (scale[g] * tensor_scale) * levels[code]":
        w = (scale * p["tensor_scale"][0]) * levels[codes]
    else:
        raise ValueError(f"unknown dequant formula '{formula}'")
    w = np.asarray(w, dtype=F32)
    if np.isnan(w).any():
        raise ValueError("a code of level NaN")
    return w.reshape(R, C)


def same_layout(x, y):
    """Names of the entries where two layouts differ (levels: bit for bit, any NaN)."""
    bad = [k for k in LAYOUT if k != "levels" and x[k] != y[k]]
    lx, ly = x["levels"], y["levels"]
    if lx.shape != ly.shape or not np.all(
        (lx.view(np.uint32) == ly.view(np.uint32)) | (np.isnan(lx) & np.isnan(ly))
    ):
        bad.append("levels")
    return bad


def read_checkpoint(path):
    """{name: (stored-layout matrix or None, derived-layout matrix, attrs, layout
    disagreements)} of every quantized layer; stored is None for a file without the
    layout attributes."""
    out = {}
    with h5py.File(path, "r") as f:
        arch = {k: f["arch"].attrs[k] for k in f["arch"].attrs}
        for name, g in f["layers"].items():
            a = {k: g.attrs[k] for k in g.attrs}
            dy = derived_layout(g.attrs, np.asarray(g["params"][()], dtype=np.uint8))
            stored, bad = None, []
            if all(k in a for k in LAYOUT):
                sy = stored_layout(a)
                bad = same_layout(sy, dy)
                stored = decode_layer(g, sy)
            out[name] = (stored, decode_layer(g, dy), a, bad)
    return out, arch


# ---- the comparison with mpquant's export ---------------------------------------------


def read_safetensors(path):
    """{name: float32 array} of an F32 safetensors file (8-byte LE header length,
    JSON header, raw data)."""
    with open(path, "rb") as fh:
        data = fh.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    hdr = json.loads(data[8 : 8 + hlen])
    base, out = 8 + hlen, {}
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        if e["dtype"] != "F32":
            raise ValueError(f"{name}: dtype {e['dtype']}, expected F32")
        lo, hi = e["data_offsets"]
        out[name] = np.frombuffer(data[base + lo : base + hi], dtype="<f4").reshape(e["shape"])
    return out


def to_rotate_half(w, hd):
    """Rows of each head of hd rows: destination t*(hd/2) + i <- source 2i + t."""
    R = w.shape[0]
    j = np.arange(R) % hd
    src = (np.arange(R) // hd) * hd + 2 * (j % (hd // 2)) + j // (hd // 2)
    return w[src]


def compare(layers, arch, export):
    exp = read_safetensors(export)
    interleaved = int(arch.get("rope_interleaved", 0)) != 0
    hd = int(arch["head_dim"])
    bad = []
    for name, (ws, wd, a, lay_bad) in layers.items():
        spec = text(a["spec"])
        if lay_bad:
            bad.append(f"{name} ({spec}): stored and derived layout differ in {lay_bad}")
        if name not in exp:
            bad.append(f"{name}: not in {export}")
            continue
        e = exp[name]
        shape = [int(x) for x in np.asarray(a["shape"]).reshape(-1)]
        if list(e.shape) != shape:
            bad.append(f"{name}: export shape {list(e.shape)}, layer shape {shape}")
            continue
        for how, w in (("stored layout", ws), ("derived layout", wd)):
            if w is None:
                continue
            if interleaved and (".self_attn.q_proj." in name or ".self_attn.k_proj." in name):
                w = to_rotate_half(w, hd)
            w = w.reshape(shape)
            diff = np.flatnonzero(w.view(np.uint32).ravel() != e.view(np.uint32).ravel())
            if diff.size:
                i = diff[0]
                bad.append(f"{name} ({spec}, {how}): {diff.size} values differ, first at "
                           f"{i}: reader {w.ravel()[i]!r} export {e.ravel()[i]!r}")
    return bad


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--compare"):
        print(__doc__, file=sys.stderr)
        return 2
    layers, arch = read_checkpoint(argv[1])
    vals = layers.values()
    bad = compare(layers, arch, argv[3]) if len(argv) == 4 else []
    for b in bad:
        print("MISMATCH: " + b)
    print(json.dumps({
        "checkpoint": argv[1], "layers": len(layers),
        "with_layout_attributes": sum(ws is not None for ws, _, _, _ in vals),
        "specs": sorted({text(a["spec"]) for _, _, a, _ in vals}),
        "scale_formats": sorted({text(a["scale_format"]) for _, _, a, _ in vals
                                 if "scale_format" in a}),
        "weights": int(sum(wd.size for _, wd, _, _ in vals)),
        "compared": len(argv) == 4, "mismatches": len(bad)}))
    return 1 if bad or not layers else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
