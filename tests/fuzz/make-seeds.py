#!/usr/bin/env python3
"""make-seeds.py: writes the committed seed corpus of the fuzz targets
(tests/fuzz/corpus/<target>/): small synthetic valid and near-valid inputs,
generated from scratch (no shared data). Deterministic; re-run after a
format change:  python3 tests/fuzz/make-seeds.py"""
import json
import os
import random
import struct

here = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(20240501)


def out(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def floats(n):
    return struct.pack("<%df" % n, *[rng.uniform(-1, 1) for _ in range(n)])


# ---- llama2c: dim 8, hidden 12, 1 layer, 2 heads, 1 kv head, vocab 6, seq 4
def l2c_arrays(dim, hid, L, nh, nkv, vocab, seq, classifier, v1):
    hd = dim // nh
    kv = nkv * hd
    sizes = dict(embed=vocab * dim, attn=L * dim, wq=L * dim * dim, wk=L * kv * dim,
                 wv=L * kv * dim, wo=L * dim * dim, ffn=L * dim, w1=L * hid * dim,
                 w2=L * dim * hid, w3=L * hid * dim, final=dim, rope=seq * hd,
                 cls=vocab * dim if classifier else 0)
    order = (["attn", "ffn", "final", "embed", "wq", "wk", "wv", "wo", "w1", "w2", "w3", "cls"]
             if v1 else ["embed", "attn", "wq", "wk", "wv", "wo", "ffn", "w1", "w2", "w3",
                         "final", "rope", "cls"])
    return b"".join(floats(sizes[k]) for k in order)


hdr = (8, 12, 1, 2, 1, 6, 4)
legacy = struct.pack("<7i", *hdr) + l2c_arrays(*hdr, False, False)
out("llama2c", "legacy-shared", legacy)
neg = struct.pack("<7i", *hdr[:5], -6, 4) + l2c_arrays(*hdr, True, False)
out("llama2c", "legacy-classifier", neg)
v1h = struct.pack("<Ii7iB", 0x616b3432, 1, *hdr, 1)
v1h += b"\0" * (256 - len(v1h))
out("llama2c", "v1-shared", v1h + l2c_arrays(*hdr, False, True))
out("llama2c", "legacy-truncated", legacy[:len(legacy) // 2])
out("llama2c", "legacy-bad-heads", struct.pack("<7i", 8, 12, 1, 3, 1, 6, 4) + legacy[28:])
out("llama2c", "v1-version2", struct.pack("<Ii", 0x616b3432, 2) + v1h[8:])
out("llama2c", "huge-dims", struct.pack("<7i", 2**30, 2**30, 2**30, 2, 1, 2**30, 2**30))

# ---- tokenizer: byte 0 picks vocab 259 + b % 16; file; last 64 bytes: text


def tokenizer(extra):
    toks = [(0.0, b"<unk>"), (0.0, b"\n<s>\n"), (0.0, b"\n</s>\n")]
    toks += [(0.0, b"<0x%02X>" % b) for b in range(256)]
    toks += extra
    body = b"".join(struct.pack("<fi", s, len(t)) + t for s, t in toks)
    return struct.pack("<i", max(len(t) for _, t in toks)) + body, len(toks) - 259


text = b" the cat sat on the mat. Ein Kaetzchen \xc3\xa4\xc3\xb6 - \xe2\x82\xac42 end!!"[:64]
text = text.ljust(64, b".")
merges = [(-1.0, b" t"), (-2.0, b"th"), (-0.5, b"he"), (-3.0, b" the"), (-1.5, b"at"),
          (-2.5, b"a"), (-0.1, b"t"), (-0.2, b"h"), (-0.3, b"e"), (-0.4, b" ")]
f, k = tokenizer(merges)
out("tokenizer", "merges", bytes([k]) + f + text)
f, k = tokenizer([])
out("tokenizer", "bytes-only", bytes([k]) + f + text)
out("tokenizer", "truncated", bytes([k]) + f[:400] + text)
f, k = tokenizer([(0.0, b"a\0b"), (1.0, b"\xff\xfe"), (0.5, b"")])
out("tokenizer", "odd-tokens", bytes([k]) + f + text)


# Hugging Face tokenizer.json (a file opening a JSON object): 269 ids, below
# the 274 of byte 0 = 15 (models pad their embedding).
def hf_tokenizer(pre, dec, norm):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({"<0x%02X>" % b: 3 + b for b in range(256)})
    for w in ["\u2581", "t", "h", "e", "\u2581t", "th", "\u2581th", "he", "\u2581the"]:
        vocab[w] = len(vocab)
    added = [{"id": i, "content": c, "special": True, "lstrip": False, "rstrip": False,
              "normalized": False, "single_word": False} for c, i in (("<unk>", 0), ("<s>", 1),
                                                                      ("</s>", 2))]
    added.append({"id": 268, "content": "<|end|>", "special": True, "rstrip": True})
    return json.dumps({
        "version": "1.0", "added_tokens": added, "normalizer": norm, "pre_tokenizer": pre,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1]}}},
        "decoder": dec,
        "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True,
                  "vocab": vocab, "merges": ["\u2581 t", "t h", ["\u2581t", "h"], "h e",
                                             "\u2581th e"]}}).encode()


hf_text = "the <|end|>  th\u00e9 \u20ac42\nthe end".encode().ljust(64, b".")
llama_norm = {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "\u2581"},
    {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
llama_dec = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
ms = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
out("tokenizer", "hf-llama", bytes([15]) + hf_tokenizer(None, llama_dec, llama_norm) + hf_text)
out("tokenizer", "hf-metaspace", bytes([15]) + hf_tokenizer(ms, ms, None) + hf_text)
nf_norm = {"type": "Sequence", "normalizers": [{"type": "NFKD"}, {"type": "NFC"}]}
nf_text = "the\u0301 \ufb01 <|end|> \u1100\u1161\u11a8 th\u00e9".encode() + b"\xed\xa0\x80"
nf_text = nf_text.ljust(64, b".")
out("tokenizer", "hf-nfc", bytes([15]) + hf_tokenizer(ms, ms, nf_norm) + nf_text)

# ---- safetensors


def safetensors(tensors, meta=True, pad=True):
    header, data = {}, b""
    if meta:
        header["__metadata__"] = {"format": "pt"}
    for name, dtype, shape in tensors:
        n = 1
        for s in shape:
            n *= s
        size = {"F32": 4, "F16": 2, "BF16": 2}.get(dtype, 4) * n
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + size]}
        data += bytes(rng.randrange(256) for _ in range(size))
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


out("safetensors", "three-dtypes", safetensors(
    [("a.weight", "F32", [3, 4]), ("b", "F16", [5]), ("c.bias", "BF16", [2, 1, 2])]))
out("safetensors", "scalar-empty", safetensors([("s", "F32", []), ("e", "F32", [0, 3])]))
out("safetensors", "conv", safetensors([("conv1.weight", "F32", [2, 1, 3, 3]),
                                        ("conv1.bias", "F32", [2])], meta=False))
bad = safetensors([("a", "F32", [2, 2])])
out("safetensors", "truncated", bad[:-3])
out("safetensors", "i8-dtype", safetensors([("q", "I8", [4])]))

# ---- sharded: index ##### config ##### shard1 ##### shard2
SEP = b"\n#####\n"


def llama_tensors(dim=8, hid=12, L=1, nh=2, nkv=1, vocab=6):
    hd = dim // nh
    t = [("model.embed_tokens.weight", [vocab, dim]), ("model.norm.weight", [dim])]
    for i in range(L):
        p = "model.layers.%d." % i
        t += [(p + "input_layernorm.weight", [dim]),
              (p + "self_attn.q_proj.weight", [nh * hd, dim]),
              (p + "self_attn.k_proj.weight", [nkv * hd, dim]),
              (p + "self_attn.v_proj.weight", [nkv * hd, dim]),
              (p + "self_attn.o_proj.weight", [dim, nh * hd]),
              (p + "post_attention_layernorm.weight", [dim]),
              (p + "mlp.gate_proj.weight", [hid, dim]),
              (p + "mlp.up_proj.weight", [hid, dim]),
              (p + "mlp.down_proj.weight", [dim, hid])]
    return t


lt = llama_tensors()
s1 = [(n, "F32", s) for n, s in lt[:5]]
s2 = [(n, "BF16", s) for n, s in lt[5:]]
wm = {n: "model-00001.safetensors" for n, _, _ in s1}
wm.update({n: "model-00002.safetensors" for n, _, _ in s2})
index = json.dumps({"metadata": {"total_size": 0}, "weight_map": wm}).encode()
config = json.dumps({"model_type": "llama", "hidden_size": 8, "intermediate_size": 12,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "vocab_size": 6, "max_position_embeddings": 16, "rms_norm_eps": 1e-5,
                     "tie_word_embeddings": True}).encode()
out("sharded", "llama-two-shards", SEP.join([index, config, safetensors(s1), safetensors(s2)]))
out("sharded", "no-config", SEP.join([index, b"", safetensors(s1), safetensors(s2)]))
wm_esc = dict(wm)
wm_esc["x"] = "../outside.safetensors"
out("sharded", "escape-dotdot",
    SEP.join([json.dumps({"weight_map": wm_esc}).encode(), b"", safetensors(s1),
              safetensors(s2)]))
wm_abs = {"x": "/etc/passwd"}
out("sharded", "escape-absolute", SEP.join([json.dumps({"weight_map": wm_abs}).encode()]))
qcfg = json.loads(config)
qcfg.update(model_type="qwen2", head_dim=4, tie_word_embeddings=False)
out("sharded", "qwen2-config", SEP.join([index, json.dumps(qcfg).encode(), safetensors(s1),
                                        safetensors(s2)]))

# ---- idx


def idx(dims, data=None):
    n = 1
    for d in dims:
        n *= d
    head = struct.pack(">I", 0x800 | len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    return head + (data if data is not None else bytes(rng.randrange(10) for _ in range(n)))


out("idx", "labels", idx([12]))
out("idx", "images", idx([2, 5, 5]))
out("idx", "four-dims", idx([1, 2, 2, 2]))
out("idx", "short", idx([4, 4, 4])[:-5])
out("idx", "huge-dims", struct.pack(">IIII", 0x803, 0xffffffff, 0xffffffff, 0xffffffff))
out("idx", "float-type", struct.pack(">II", 0xd01, 2) + b"\0" * 8)

# ---- ckpt: recipe bytes (see fuzz_ckpt.c); mostly small values = valid
out("ckpt", "empty", b"")
for i in range(8):
    n = 40 + 30 * i
    out("ckpt", "recipe-%d" % i,
        bytes(rng.randrange(200) if rng.random() < 0.9 else rng.randrange(256) for _ in range(n)))

# ---- config
out("config", "minimal", 'model = { path = "m.bin"; format = "llama2c"; };\n')
out("config", "sections", """model = { path = "/tmp/m"; tokenizer = ""; family = "llama"; };
eval = { docs = 3; batch = 8; generate_tokens = 4; };
hessian = { damping = 0.01; damping_max = 1.0; scalapack = "never"; save = ""; };
calibration = { source = "random"; segments = 16; seq_len = 32; seed = 7; };
quant = { spec = "int:bits=4,group=32"; method = "gptq"; };
round = { block_size = 64; act_order = true; };
log = { level = "warn"; all_ranks = false; progress_interval = 1.5; };
""")
out("config", "override", 'log = { level = "info"; };\n%%\nquant.spec=int:bits=3,sym=true\n')
out("config", "cnn", """model = {
  path = "mnist.safetensors"; family = "cnn"; input_shape = [1.0, 28.0, 28.0];
  input_scale = 0.00392156862745098;
  cnn = ( { op = "conv2d"; weight = "conv1.weight"; bias = "conv1.bias"; padding = 1; },
          { op = "relu"; }, { op = "maxpool"; }, { op = "flatten"; },
          { op = "linear"; weight = "fc1.weight"; bias = "fc1.bias"; } );
};
""")
out("config", "errors", 'modle = { path = 3; };\nlog = { level = "loud"; }\n@include "x"\n')
out("config", "env", 'model = { path = "${HOME}/x/${MPQ_UNSET_VAR}"; };\n')
