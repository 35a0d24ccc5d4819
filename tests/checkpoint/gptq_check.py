#!/usr/bin/env python3
"""gptq_check.py: decodes a GPTQ checkpoint (model.safetensors + config.json)
from the published format alone and compares it with a reference F32
safetensors file, bit for bit.

The format (AutoGPTQ / GPTQModel / transformers): for each quantized module M
with b = bits (quantization_config, or the first matching "dynamic" key:
"-:RE" leaves M unquantized, "+:RE" or "RE" overrides bits / group_size /
sym; RE is matched from the start of the module name, as re.match does):
  M.qweight int32 [in*b/32][out]: column j holds the codes of input rows
            0..in-1 as one continuous bit stream, LSB first, b bits each,
            in little-endian 32-bit words
  M.qzeros  int32 [groups][out*b/32]: zero-points, same packing along out;
            checkpoint_format "gptq" stores zero - 1, "gptq_v2" the zero
  M.scales  float16 [groups][out]
  M.g_idx   int32 [in]: group of each input row
  weight[j][i] = scales[g][j] * (q[j][i] - zero[g][j]), g = g_idx[i], float32.

usage: gptq_check.py DIR --reference REF.safetensors
Prints one JSON line: modules decoded, dense tensors, mismatches, ...
Exit status 0 when everything matches, 1 on a mismatch (line MISMATCH: ...).
"""
import argparse
import json
import os
import re
import sys

import numpy as np
from safetensors import deserialize

NP_TYPES = {"I32": "<i4", "F16": "<f2", "F32": "<f4", "BF16": "<u2"}


def load(path):
    """Every tensor of a safetensors file, read by the safetensors library:
    name -> (array, dtype). BF16, which numpy lacks, becomes the float32 of
    the same value (the 16 bits above 16 zero bits)."""
    with open(path, "rb") as f:
        items = deserialize(f.read())
    out = {}
    for name, e in items:
        a = np.frombuffer(bytes(e["data"]), dtype=NP_TYPES[e["dtype"]]).reshape(e["shape"])
        if e["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = (a, e["dtype"])
    return out


def unpack_stream(words, bits, count):
    """words: uint32 [..., W] (the stream's words along the last axis);
    returns the first `count` b-bit fields of each stream, LSB first."""
    raw = np.ascontiguousarray(words.astype("<u4")).view(np.uint8)  # [..., 4W] little-endian
    allbits = np.unpackbits(raw, axis=-1, bitorder="little")  # [..., 32W], bit k of the stream
    fields = allbits[..., : count * bits].reshape(*allbits.shape[:-1], count, bits)
    weights = (1 << np.arange(bits)).astype(np.int64)
    return (fields.astype(np.int64) * weights).sum(axis=-1)


def module_setting(qc, module):
    s = {"bits": qc["bits"], "group_size": qc.get("group_size", -1), "sym": qc.get("sym", True)}
    for key, val in (qc.get("dynamic") or {}).items():
        if key.startswith("-:"):
            if re.match(key[2:], module):
                return None
        elif re.match(key[2:] if key.startswith("+:") else key, module):
            s.update({k: val[k] for k in ("bits", "group_size", "sym") if k in val})
            return s
    return s


def decode(t, module, s, v2):
    b = s["bits"]
    qweight, qzeros = t[module + ".qweight"], t[module + ".qzeros"]
    scales, g_idx = t[module + ".scales"], t[module + ".g_idx"]
    assert qweight.dtype == np.int32 and qzeros.dtype == np.int32 and g_idx.dtype == np.int32
    assert scales.dtype == np.float16, f"{module}.scales is {scales.dtype}"
    words_in, out = qweight.shape
    n_in = words_in * 32 // b
    assert words_in * 32 == n_in * b
    ngroups = scales.shape[0]
    assert scales.shape == (ngroups, out), f"{module}.scales shape {scales.shape}"
    assert qzeros.shape == (ngroups, out * b // 32), f"{module}.qzeros shape {qzeros.shape}"
    assert g_idx.shape == (n_in,), f"{module}.g_idx shape {g_idx.shape}"
    gs = s["group_size"]
    assert ngroups == (1 if gs == -1 else -(-n_in // gs)), f"{module}: {ngroups} groups, gs {gs}"
    assert g_idx.min() >= 0 and g_idx.max() < ngroups, f"{module}.g_idx out of range"
    # codes: the stream of column j runs down qweight[:, j]
    q = unpack_stream(qweight.view(np.uint32).T, b, n_in)  # [out][in]
    z = unpack_stream(qzeros.view(np.uint32), b, out)  # [groups][out]
    if not v2:
        z = z + 1
    assert z.max() < (1 << b), f"{module}: zero-point {z.max()} out of the {b}-bit range"
    zz = z[g_idx, :].T  # [out][in]
    sc = scales.astype(np.float32)[g_idx, :].T  # [out][in]
    diff = (q - zz).astype(np.float32)
    return (sc * diff).astype(np.float32), int(z.min())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--reference", required=True)
    a = ap.parse_args()
    with open(os.path.join(a.dir, "config.json")) as f:
        cfg = json.load(f)
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "gptq"
    v2 = qc.get("checkpoint_format", "gptq") == "gptq_v2"
    loaded = load(os.path.join(a.dir, "model.safetensors"))
    t = {k: v for k, (v, _) in loaded.items()}
    dtypes = {k: d for k, (_, d) in loaded.items()}
    ref = {k: v for k, (v, _) in load(a.reference).items()}
    mism, seen, bits, dense, min_zero = [], set(), {}, [], None
    for name in sorted(t):
        if not name.endswith(".qweight"):
            continue
        module = name[: -len(".qweight")]
        s = module_setting(qc, module)
        assert s is not None, f"{module} has a qweight but dynamic excludes it"
        w, zmin = decode(t, module, s, v2)
        min_zero = zmin if min_zero is None else min(min_zero, zmin)
        r = ref[module + ".weight"]
        if r.dtype != np.float32 or r.shape != w.shape or not np.array_equal(
            r.view(np.uint32), w.view(np.uint32)
        ):
            mism.append(module + ".weight")
        seen.update(module + "." + p for p in ("qweight", "qzeros", "scales", "g_idx"))
        seen.add(module + ".weight")
        key = f"{s['bits']}/{s['group_size']}/{'sym' if s['sym'] else 'asym'}"
        bits[key] = bits.get(key, 0) + 1
    for name in sorted(t):
        if name in seen:
            continue
        seen.add(name)
        if name.endswith("_proj.weight"):
            module = name[: -len(".weight")]
            assert module_setting(qc, module) is None, f"{name} is dense but not excluded"
            dense.append(name)
        r, x = ref.get(name), t[name]
        if dtypes[name] == "F16":  # dense: F32, or a stored F16/BF16 kept
            x = x.astype(np.float32)
        if r is None or x.dtype != np.float32 or r.shape != x.shape or not np.array_equal(
            r.view(np.uint32), x.view(np.uint32)
        ):
            mism.append(name)
    missing = sorted(set(ref) - seen)
    for m in mism:
        print("MISMATCH: " + m)
    for m in missing:
        print("MISSING: " + m)
    print(
        json.dumps(
            {
                "modules": sum(bits.values()),
                "settings": bits,
                "dense_linear": len(dense),
                "dense_names": dense,
                "checkpoint_format": "gptq_v2" if v2 else "gptq",
                "dtypes": {d: sum(1 for x in dtypes.values() if x == d) for d in sorted(
                    set(dtypes.values()))},
                "min_zero": min_zero,
                "desc_act": qc.get("desc_act"),
                "mismatches": len(mism) + len(missing),
            }
        )
    )
    sys.exit(1 if mism or missing else 0)


if __name__ == "__main__":
    main()
