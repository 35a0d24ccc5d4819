#!/usr/bin/env python3
"""gguf_check.py: checks an `mpquant export --format gguf` file with gguf-py
(GGUFReader, gguf.quants.dequantize) against independent references:

- the architecture, from a llama2.c model file's own header (7 int32: dim,
  hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (negative: separate
  classifier), seq_len) or a Hugging Face directory's config.json;
- the tokenizer, read from llama2.c's tokenizer.bin (pieces with ' ' turned
  back into U+2581, BOS/EOS without their newlines, token types), or from a
  Hugging Face tokenizer.json (with --pre NAME: a byte-level BPE written as
  llama.cpp's "gpt2" vocabulary with its merges, pre-tokenizer NAME);
- the weights of `mpquant export --format safetensors` of the same model
  (mpquant's own dequantized values; q/k rows in rotate-half order there,
  interleaved in GGUF): exact tensors must equal them bit for bit, lossy
  ones are measured and compared with the export's own report;
- llama3 RoPE scaling: rope_freqs.weight as llama.cpp's converter computes it.

Usage: gguf_check.py FILE.gguf REF.safetensors MODEL TOKENIZER
           --qtype TYPE [--lossy] [--report EXPORT_STDOUT] [--pre NAME]
MODEL is the llama2.c .bin or the Hugging Face directory. TYPE is the ggml
type expected for the linear layers (q, k, v, o, gate, up, down) whose rows
are a multiple of 32 long (of 256 for the K-quants); every other tensor
must be F32, except matrices
that MODEL stores as F16 or BF16 and that are not quantized layers (TYPE
F32: none is), which keep that type. With --lossy the
quantized layers may differ from the reference (within the fp16 rounding of
m; Q4_K/Q5_K within the bound of check_kquant); otherwise every tensor
must be bit-exact. Prints one JSON line; exit
status 1 on any failure.
"""
import argparse
import json
import math
import os
import re
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, file=sys.stderr)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack_from("<Q", raw, 0)
    hdr = json.loads(raw[8:8 + hlen])
    base = 8 + hlen
    out = {}
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", name
        a, b = e["data_offsets"]
        out[name] = np.frombuffer(raw[base + a:base + b], dtype="<f4").reshape(e["shape"])
    return out


def read_arch(path):
    """The architecture from a llama2.c file's header or a Hugging Face config.json."""
    if os.path.isdir(path):
        with open(os.path.join(path, "config.json")) as f:
            c = json.load(f)
        h = {"dim": c["hidden_size"], "hidden_dim": c["intermediate_size"],
             "n_layers": c["num_hidden_layers"], "n_heads": c["num_attention_heads"],
             "n_kv_heads": c.get("num_key_value_heads", c["num_attention_heads"]),
             "vocab_size": c["vocab_size"], "seq_len": c["max_position_embeddings"],
             "eps": c["rms_norm_eps"], "theta": c.get("rope_theta", 10000.0),
             "shared": c.get("tie_word_embeddings", False), "rope": c.get("rope_scaling")}
        h["head_dim"] = c.get("head_dim") or h["dim"] // h["n_heads"]
        return h
    with open(path, "rb") as f:
        v = struct.unpack("<7i", f.read(28))
    keys = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"]
    h = dict(zip(keys, v))
    h["shared"] = h["vocab_size"] > 0
    h["vocab_size"] = abs(h["vocab_size"])
    h.update(eps=1e-5, theta=10000.0, rope=None, head_dim=h["dim"] // h["n_heads"])
    return h


def source_dtypes(path):
    """Matrix name -> dtype in a Hugging Face directory's safetensors files
    (a llama2.c file is all F32: empty)."""
    out = {}
    if not os.path.isdir(path):
        return out
    for fn in sorted(os.listdir(path)):
        if fn.endswith(".safetensors"):
            with open(os.path.join(path, fn), "rb") as f:
                (hlen,) = struct.unpack("<Q", f.read(8))
                hdr = json.loads(f.read(hlen))
            out.update({k: v["dtype"] for k, v in hdr.items()
                        if k != "__metadata__" and len(v["shape"]) == 2})
    return out


def llama3_factors(h):
    """rope_freqs as llama.cpp's converter computes it for llama3 scaling."""
    r = h["rope"]
    factor, low, high = r["factor"], r["low_freq_factor"], r["high_freq_factor"]
    old = r["original_max_position_embeddings"]
    out = []
    for i in range(0, h["head_dim"], 2):
        freq = 1.0 / (h["theta"] ** (i / h["head_dim"]))
        wl = 2 * math.pi / freq
        if wl < old / high:
            out.append(1.0)
        elif wl > old / low:
            out.append(factor)
        else:
            sm = (old / wl - low) / (high - low)
            out.append(1 / ((1 - sm) / factor + sm))
    return np.array(out, dtype=np.float32)


def read_llama2c_tokenizer(path, vocab):
    with open(path, "rb") as f:
        raw = f.read()
    off = 4
    toks = []
    for _ in range(vocab):
        score, n = struct.unpack_from("<fi", raw, off)
        off += 8
        toks.append((raw[off:off + n], score))
        off += n
    assert off == len(raw)
    return toks


HF_TO_GGUF = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf):
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
           "output_norm.weight", "lm_head.weight": "output.weight"}
    if hf in top:
        return top[hf]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", hf)
    return f"blk.{m.group(1)}.{HF_TO_GGUF[m.group(2)]}.{m.group(3)}"


def to_interleaved(w, hd):
    """Rotate-half rows (i, i + hd/2) of every head to pairs (2i, 2i+1)."""
    rows = w.shape[0]
    src = np.empty(rows, dtype=np.int64)
    for r in range(rows):
        h, j = divmod(r, hd)
        src[r] = h * hd + (j % 2) * (hd // 2) + j // 2
    return w[src]


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()


def check_metadata(reader, hdr, qtype, tok_path, pre, ft16):
    hd = hdr["head_dim"]
    want = {
        "general.architecture": "llama", "general.quantization_version": 2,
        "general.alignment": 32, "llama.context_length": hdr["seq_len"],
        "llama.embedding_length": hdr["dim"], "llama.block_count": hdr["n_layers"],
        "llama.feed_forward_length": hdr["hidden_dim"], "llama.rope.dimension_count": hd,
        "llama.attention.head_count": hdr["n_heads"],
        "llama.attention.head_count_kv": hdr["n_kv_heads"],
        "llama.vocab_size": hdr["vocab_size"],
        "tokenizer.ggml.model": "gpt2" if pre else "llama", "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
        "general.file_type": {"F32": 0, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8,
                              "Q5_1": 9, "Q4_K": 15, "Q5_K": 17, "Q6_K": 18}[qtype] or ft16,
        "llama.attention.key_length": hd if hd * hdr["n_heads"] != hdr["dim"] else None,
        "llama.attention.value_length": hd if hd * hdr["n_heads"] != hdr["dim"] else None,
    }
    if os.path.isdir(tok_path):  # checked by check_hf_tokenizer
        for k in ("bos_token_id", "eos_token_id", "unknown_token_id", "add_bos_token"):
            del want["tokenizer.ggml." + k]
    rope = hdr["rope"] or {}
    rtype = rope.get("rope_type", rope.get("type"))
    want["llama.rope.scaling.type"] = "linear" if rtype == "linear" else None
    for k, v in want.items():
        got = field(reader, k)
        if got != v:
            fail(f"metadata {k} is {got!r}, expected {v!r}")
    floats = [("llama.attention.layer_norm_rms_epsilon", hdr["eps"]),
              ("llama.rope.freq_base", hdr["theta"])]
    if rtype == "linear":
        floats.append(("llama.rope.scaling.factor", rope["factor"]))
    for k, v in floats:
        got = field(reader, k)
        if got is None or np.float32(got) != np.float32(v):
            fail(f"metadata {k} is {got!r}, expected float32({v})")
    if os.path.isdir(tok_path):
        if pre:
            check_gpt2_tokenizer(reader, tok_path, hdr["vocab_size"])
        else:
            check_hf_tokenizer(reader, tok_path, hdr["vocab_size"])
        return
    # tokenizer against tokenizer.bin
    ref = read_llama2c_tokenizer(tok_path, hdr["vocab_size"])
    toks = field(reader, "tokenizer.ggml.tokens")
    scores = field(reader, "tokenizer.ggml.scores")
    types = field(reader, "tokenizer.ggml.token_type")
    if not (len(toks) == len(scores) == len(types) == hdr["vocab_size"]):
        fail("tokenizer arrays do not have vocab_size entries")
        return
    for i, (b, s) in enumerate(ref):
        t = b.decode("utf-8")
        if i in (1, 2):
            t = t.strip("\n")
        t = t.replace(" ", "\u2581")
        want_type = 2 if i == 0 else 3 if i in (1, 2) else \
            6 if re.fullmatch(r"<0x[0-9A-F]{2}>", t) else 1
        if toks[i] != t or np.float32(scores[i]) != np.float32(s) or types[i] != want_type:
            fail(f"token {i}: ({toks[i]!r}, {scores[i]}, {types[i]}) expected "
                 f"({t!r}, {s}, {want_type})")
            return


def check_hf_tokenizer(reader, tok_dir, vocab):
    """A Hugging Face SentencePiece-style BPE: the vocabulary strings, score -id
    for normal tokens, 0 for the others, [PAD<id>] up to vocab_size; added
    tokens (other than unk, BOS, EOS, bytes) control when special, else
    user-defined."""
    with open(os.path.join(tok_dir, "tokenizer.json")) as f:
        tj = json.load(f)
    with open(os.path.join(tok_dir, "tokenizer_config.json")) as f:
        tc = json.load(f)
    text = {i: t for t, i in tj["model"]["vocab"].items()}
    text.update({a["id"]: a["content"] for a in tj.get("added_tokens", [])})
    added = {a["id"]: 3 if a.get("special") else 4 for a in tj.get("added_tokens", [])}
    name = lambda v: v["content"] if isinstance(v, dict) else v
    ids = {t: i for i, t in text.items()}
    bos, eos = ids[name(tc["bos_token"])], ids[name(tc["eos_token"])]
    unk = ids.get("<unk>")
    toks = field(reader, "tokenizer.ggml.tokens")
    scores = field(reader, "tokenizer.ggml.scores")
    types = field(reader, "tokenizer.ggml.token_type")
    if not (len(toks) == len(scores) == len(types) == vocab):
        fail("tokenizer arrays do not have vocab_size entries")
        return
    keys = [("tokenizer.ggml.bos_token_id", bos), ("tokenizer.ggml.eos_token_id", eos),
            ("tokenizer.ggml.unknown_token_id", unk)]
    if tc.get("add_bos_token") is not None:
        keys.append(("tokenizer.ggml.add_bos_token", tc["add_bos_token"]))
    for k, v in keys:
        if field(reader, k) != v:
            fail(f"metadata {k} is {field(reader, k)!r}, expected {v!r}")
    for i in range(vocab):
        t = text.get(i)
        if t is None:
            want = (f"[PAD{i}]", -1000.0, 5)
        else:
            ty = 2 if i == unk else 3 if i in (bos, eos) else \
                6 if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", t) else added.get(i, 1)
            want = (t, -float(i) if ty == 1 else 0.0, ty)
        if (toks[i], np.float32(scores[i]), types[i]) != (want[0], np.float32(want[1]), want[2]):
            fail(f"token {i}: ({toks[i]!r}, {scores[i]}, {types[i]}) expected {want}")
            return


def check_gpt2_tokenizer(reader, tok_dir, vocab):
    """A byte-level BPE: the vocabulary strings as they are in tokenizer.json,
    [PAD<id>] up to vocab_size (unused), added tokens control when special,
    else user-defined, the others normal; no scores; the merges as "a b" in
    file order; BOS/EOS from tokenizer_config.json where there is one."""
    with open(os.path.join(tok_dir, "tokenizer.json")) as f:
        tj = json.load(f)
    text = {i: t for t, i in tj["model"]["vocab"].items()}
    text.update({a["id"]: a["content"] for a in tj.get("added_tokens", [])})
    added = {a["id"]: 3 if a.get("special") else 4 for a in tj.get("added_tokens", [])}
    toks = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    if field(reader, "tokenizer.ggml.scores") is not None:
        fail("a gpt2 vocabulary with scores")
    if not (len(toks) == len(types) == vocab):
        fail("tokenizer arrays do not have vocab_size entries")
        return
    for i in range(vocab):
        want = (text[i], added.get(i, 1)) if i in text else (f"[PAD{i}]", 5)
        if (toks[i], types[i]) != want:
            fail(f"token {i}: ({toks[i]!r}, {types[i]}) expected {want}")
            return
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    got = field(reader, "tokenizer.ggml.merges")
    if got != merges:
        n = next((k for k, (a, b) in enumerate(zip(got or [], merges)) if a != b), None)
        fail(f"merges differ from tokenizer.json ({len(got or [])} vs {len(merges)}, first at {n})")
    cfg = os.path.join(tok_dir, "tokenizer_config.json")
    if os.path.exists(cfg):
        with open(cfg) as f:
            tc = json.load(f)
        ids = {t: i for i, t in text.items()}
        name = lambda v: v["content"] if isinstance(v, dict) else v
        for k in ("bos", "eos"):
            want = ids[name(tc[k + "_token"])]
            if field(reader, f"tokenizer.ggml.{k}_token_id") != want:
                fail(f"{k}_token_id is {field(reader, f'tokenizer.ggml.{k}_token_id')}, "
                     f"expected {want}")


def check_kquant(name, tname, raw, got, want):
    """Q4_K / Q5_K converted from int layers in groups of 32 (one group per
    sub-block j): ggml's (d*sc_j)*q - dmin*m_j against mpquant's
    s_j*q - min_j with the same q, an error of (d*sc_j - s_j)*q -
    (dmin*m_j - min_j). With sc_j and m_j the integers nearest s_j/d and
    min_j/dmin (d >= max s/63.5, dmin >= max min/63.5: none saturates), every
    error is at most B = (2^bits-1)*d/2 + dmin/2; the export may pick another
    neighbour pair, but only one with a smaller sum of squares over the
    group, so each group's RMS error is at most B (plus float rounding,
    2^-20 of the block's largest term). And d, dmin are fp16(max/63) of the
    layer's own scales and minimums (recovered from the reference values:
    s_j = range of w / range of q), at most one fp16 step above: within
    2^-9 relative (normal halves)."""
    bits = 4 if tname == "Q4_K" else 5
    blocks = np.ascontiguousarray(raw).reshape(-1, 144 if bits == 4 else 176)
    nb = blocks.shape[0]
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float64).reshape(-1)
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float64).reshape(-1)
    qs = blocks[:, 16:144] if bits == 4 else blocks[:, 48:176]
    q = np.empty((nb, 8, 32), dtype=np.int64)
    for j in range(8):
        q[:, j] = (qs[:, 32 * (j // 2):32 * (j // 2) + 32] >> (4 * (j % 2))) & 15
        if bits == 5:
            q[:, j] |= ((blocks[:, 16:48] >> j) & 1).astype(np.int64) << 4
    w = want.astype(np.float64).reshape(nb, 8, 32)
    e = got.astype(np.float64).reshape(nb, 8, 32) - w
    bound = (2 ** bits - 1) * d / 2 + dmin / 2
    eps = 2.0 ** -20 * (63 * (2 ** bits - 1) * d + 63 * dmin)
    rms = np.sqrt(np.mean(e * e, axis=2))
    bad = np.argwhere(rms > (bound + eps)[:, None])
    if len(bad):
        b, j = bad[0]
        fail(f"{name}: block {b} group {j}: RMS error {rms[b, j]:g} above {bound[b]:g}")
    qr = q.max(2) - q.min(2)
    s = (w.max(2) - w.min(2)) / np.where(qr > 0, qr, 1)
    mins = (s[:, :, None] * q - w).mean(2)
    ok = (qr > 0).all(1) & (d >= 2.0 ** -14) & (dmin >= 2.0 ** -14)
    tol = 1e-6 * float(np.abs(w).max())
    for v, ref, what in ((d, s.max(1), "d"), (dmin, mins.max(1), "dmin")):
        over = np.argwhere(ok & (v > ref / 63 * (1 + 2.0 ** -9) + tol))
        if len(over):
            b = over[0][0]
            fail(f"{name}: block {b}: {what} {v[b]:g} above fp16({ref[b]:g} / 63)")


def parse_report(path):
    rep = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"gguf: (\S+)\s+(\S+)\s+(.*)$", line)
            if m and not m.group(1).endswith(":"):
                e = {"type": m.group(2), "text": m.group(3)}
                mm = re.search(r"(\d+) of (\d+) weights differ, added max \|err\| (\S+), "
                               r"rms (\S+)$", m.group(3))
                if mm:
                    e["differ"], e["n"] = int(mm.group(1)), int(mm.group(2))
                    e["max_abs"], e["rms"] = float(mm.group(3)), float(mm.group(4))
                rep[m.group(1)] = e
    return rep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("ref")
    ap.add_argument("model")
    ap.add_argument("tokenizer")
    ap.add_argument("--qtype", required=True)
    ap.add_argument("--lossy", action="store_true")
    ap.add_argument("--report")
    ap.add_argument("--pre", help="a byte-level tokenizer: the expected tokenizer.ggml.pre")
    args = ap.parse_args()
    hdr = read_arch(args.model)
    hd = hdr["head_dim"]
    reader = GGUFReader(args.gguf)
    dtypes = source_dtypes(args.model)
    kinds = set(dtypes.values())
    # without blocks, the file type of the 16-bit matrices (MOSTLY_BF16 32, MOSTLY_F16 1)
    ft16 = 32 if "BF16" in kinds else 1 if "F16" in kinds else 0
    check_metadata(reader, hdr, args.qtype, args.tokenizer, args.pre, ft16)
    ref = {gguf_name(k): (k, v) for k, v in read_safetensors(args.ref).items()}
    report = parse_report(args.report) if args.report else {}
    rope = hdr["rope"] or {}
    rtype = rope.get("rope_type", rope.get("type"))
    seen, exact, lossy, types = set(), 0, 0, {}
    worst = 0.0
    for t in reader.tensors:
        seen.add(t.name)
        tname = GGMLQuantizationType(t.tensor_type).name
        types[tname] = types.get(tname, 0) + 1
        if t.data_offset % 32:
            fail(f"{t.name}: data offset {t.data_offset} is not a multiple of 32")
        if t.name == "rope_freqs.weight" and rtype == "llama3":
            got = dequantize(t.data, t.tensor_type).reshape(-1)
            want = llama3_factors(hdr)
            if tname != "F32" or not np.array_equal(got, want):
                fail(f"rope_freqs {tname} {got} differs from {want}")
            exact += 1
            continue
        if t.name not in ref:
            fail(f"{t.name}: not a tensor of the model")
            continue
        hf, w = ref[t.name]
        if re.search(r"\.self_attn\.[qk]_proj\.", hf):
            w = to_interleaved(w, hd)
        linear = re.search(r"attn_(q|k|v|output)\.weight|ffn_(gate|up|down)\.weight", t.name)
        kq = args.qtype.endswith("_K")
        want = args.qtype if linear and w.shape[-1] % (256 if kq else 32) == 0 else "F32"
        # a matrix stored as F16/BF16 and not quantized stays so
        if want == "F32" and w.ndim == 2 and not (linear and args.qtype != "F32"):
            want = dtypes.get(hf, "F32") if dtypes.get(hf) in ("F16", "BF16") else "F32"
        if tname != want:
            fail(f"{t.name}: type {tname}, expected {want}")
        if [int(x) for x in t.shape] != list(reversed(w.shape)):
            fail(f"{t.name}: ne {list(t.shape)}, expected {list(reversed(w.shape))}")
            continue
        got = dequantize(t.data, t.tensor_type).reshape(w.shape)
        same = np.array_equal(got.view(np.uint32), w.view(np.uint32))
        if same:
            exact += 1
        diff = np.abs(got.astype(np.float64) - w.astype(np.float64))
        mx, rms = float(diff.max()), float(np.sqrt(np.mean(diff * diff)))
        r = report.get(t.name)
        if args.report and r is None:
            fail(f"{t.name}: missing from the export's report")
        if not same and not (args.lossy and linear):
            fail(f"{t.name}: {tname} differs from mpquant's weights (max |err| {mx:g})")
        if not same:
            lossy += 1
            worst = max(worst, mx)
            # Q4_1/Q5_1: the fp16 rounding of m = -s*z, half an fp16 ulp of
            # |s*z| <= 2^-11 * 2 * max|w|; Q6_K: the sub-scale rounding, at most
            # d/2 * 32 with d = max s / 127 and s <= max|w| / 31
            bound = (2.0 ** -7 if tname == "Q6_K" else 2.0 ** -10) * float(np.abs(w).max()) + 1e-7
            if tname in ("Q4_K", "Q5_K"):
                check_kquant(t.name, tname, t.data, got, w)
            elif mx > bound:
                fail(f"{t.name}: added error {mx:g} above {bound:g}")
            differ = int(np.count_nonzero(got.view(np.uint32) != w.view(np.uint32)))
            if r is not None and ("max_abs" not in r or r["differ"] != differ or
                                  r["n"] != w.size or abs(r["max_abs"] - mx) > 1e-6 * mx or
                                  abs(r["rms"] - rms) > 1e-6 * rms):
                fail(f"{t.name}: report says {r['text']!r}, measured {differ} of {w.size} differ, "
                     f"max {mx:.9g} rms {rms:.9g}")
        elif r is not None and "max_abs" in r:
            fail(f"{t.name}: reported lossy but bit-exact")
    missing = set(ref) - seen
    if missing:
        fail(f"tensors missing from the GGUF: {sorted(missing)}")
    if rtype == "llama3" and "rope_freqs.weight" not in seen:
        fail("rope_freqs.weight missing (llama3 RoPE scaling)")
    if hdr["shared"] and "output.weight" in seen:
        fail("output.weight written although the embeddings are tied")
    print(json.dumps({"tensors": len(reader.tensors), "exact": exact, "lossy": lossy,
                      "max_abs": worst, "types": types, "failures": len(failures)}))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
