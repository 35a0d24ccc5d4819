#!/usr/bin/env python3
"""hftok_ref.py: the Hugging Face `tokenizers` library as the reference of
test_io_hftok (mpquant's tokenizer.json reader).

  hftok_ref.py ids TOKENIZER_JSON STRINGS OUT
      For each line of STRINGS (one JSON string a line), one JSON line in OUT:
      {"ids": encode(s, add_special_tokens=False).ids,
       "ids_special": encode(s, add_special_tokens=True).ids,
       "decoded": decode(ids, skip_special_tokens=True)}, with the file's
      padding and truncation turned off.
  hftok_ref.py gen SHARED_DIR OUT [OUT_BYTELEVEL]
      Writes the test strings (seeded, so every run compares the same ones);
      OUT_BYTELEVEL: those of the byte-level tokenizers (the same without the
      4 KB chunks, plus 3,000 random mixes of contractions, digit runs,
      whitespace runs, accented, CJK, emoji and other characters), and
      beside it whole.jsonl: both text files whole, and strings-nfc.jsonl:
      those of the Unicode normalizers (see nf_strings).
  hftok_ref.py variant NAME TOKENIZER_JSON OUT
      Writes the same vocabulary and merges with other components. NAME
      metaspace: the newer Llama conversion (no normalizer, a Metaspace
      pre-tokenizer with prepend_scheme "first" and split false, a Metaspace
      decoder); metaspace-nfkc: the same with an NFKC normalizer;
      metaspace-split: Metaspace with prepend_scheme "always" and split true; unk: byte_fallback off, so that characters missing from the
      vocabulary become <unk> (fused); lstrip (for the Phi-3 file): lstrip
      on every added token from id 32000 (they take the whitespace before).
      For the GPT-2 file: bl-prefix (ByteLevel add_prefix_space), bl-split
      (Split on whitespace runs MergedWithPrevious, Digits, ByteLevel without
      its regex), bl-next (String " " MergedWithNext, a Contiguous inverted
      vowel Split, ByteLevel with prefix), bl-removed (punctuation Removed);
      for dolma2: bl-llama3 (the Llama-3 form: Isolated, not inverted,
      ignore_merges, a BOS template after a ByteLevel post-processor),
      bl-qwen2 (Qwen2's pattern, one digit a piece); the same with a Unicode
      normalizer: bl-nfc (Qwen2's own NFC), bl-nfd, bl-nfkc, bl-nf-seq (a
      Sequence: NFKD, Replace of U+0301 by nothing, NFC).

Merges given as "a b" strings that do not split at a single space (the
TinyLlama file has three: "   ", "     ", "▁  ") make every released
`tokenizers` refuse the file ("Merges text file invalid"). They are rewritten
as ["a", "b"] pairs at the one space whose two sides are both vocabulary
entries (an error if there is not exactly one), the rule mpquant's reader
applies too; everything else is the library's own reading of the file.
"""
import json
import os
import random
import sys


def fix_merges(path, j):
    model = j.get("model", {})
    merges = model.get("merges")
    if not isinstance(merges, list):
        return
    vocab = model["vocab"]
    pairs = []
    for k, m in enumerate(merges):
        if not isinstance(m, str):
            pairs.append(m)
            continue
        parts = m.split(" ")
        if len(parts) == 2:
            pairs.append(parts)
            continue
        cuts = [i for i, c in enumerate(m) if c == " " and m[:i] in vocab and m[i + 1:] in vocab]
        if len(cuts) != 1:
            sys.exit(f"{path}: merge {k} {m!r}: {len(cuts)} possible splits")
        pairs.append([m[:cuts[0]], m[cuts[0] + 1:]])
    model["merges"] = pairs


def cmd_ids(tok_path, strings, out_path):
    import tokenizers

    with open(tok_path, encoding="utf-8") as f:
        j = json.load(f)
    fix_merges(tok_path, j)
    tok = tokenizers.Tokenizer.from_str(json.dumps(j))
    # padding and truncation are batch settings mpquant does not apply (the
    # SmolLM2 file pads and cuts to 128 tokens)
    tok.no_padding()
    tok.no_truncation()
    with open(strings, encoding="utf-8") as f:
        texts = [json.loads(line) for line in f]
    encs = tok.encode_batch(texts, add_special_tokens=False)
    ids = [e.ids for e in encs]
    decs = tok.decode_batch(ids, skip_special_tokens=True)
    with open(out_path, "w", encoding="utf-8") as out:
        for e, i, dec in zip(encs, ids, decs):
            # what encode(s, add_special_tokens=True) gives, without a second encode
            special = tok.post_process(e, add_special_tokens=True).ids
            out.write(json.dumps({"ids": i, "ids_special": special, "decoded": dec},
                                 ensure_ascii=False) + "\n")


def snap(b, i):
    """The first UTF-8 character boundary at or after byte i."""
    while i < len(b) and (b[i] & 0xC0) == 0x80:
        i += 1
    return i


# Characters for the mixed strings: ASCII, accents, CJK, emoji, rare
# scripts (absent from the Llama vocabulary: byte fallback), whitespace.
POOL = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()-_/")
        + list("éèêàçñöüßøåÉÀ") + list("日本語中文字한국어") + ["😀", "🦙", "👍🏽", "🇫🇷"]
        + list("ꙮ𝔘𝔫ᚠᛇ𓀀ꝏ") + [" ", " ", " ", "  ", "\n", "\t", "\u00a0", "\u3000"])

SPECIAL = [
    "", " ", "  ", "   ", "\n", "\n\n", "\t", " \n ", "   \t\n", "\u3000", "\u00a0", " \u00a0 ",
    "hello", " hello", "hello ", "  hello  ", "hello  world", "a   b    c", " a b ",
    "Hello, world! How are you?", "tab\tseparated\tvalues", "line\nbreaks\n\nhere",
    "café crème brûlée", "naïve façade", "Ελληνικά", "русский текст", "עברית", "العربية",
    "日本語のテキスト", "中文文本", "한국어 텍스트", "emoji 😀🦙 ok", "👍🏽🇫🇷", "ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀",
    "a\u0301e\u0300", "zero\u200bwidth", "x" * 300, "the " * 100, "1234567890 3.14159",
    "<|user|>\nHello<|end|>\n<|assistant|>", "a<|endoftext|>b", "</s> x", "x</s>  y",
    "  <|system|>  text  ", "<|end|><|end|>", "<|end|", "<<|user|>>", "<s>hi", "hi<s>",
    "<unk>", "text <|placeholder1|> more <|placeholder6|>", "<|assistant|>", "<s></s>",
]


# Characters for the byte-level mixes: GPT-2's pattern cuts at contractions,
# letters, digits, other symbols and whitespace (runs, before a non-space).
BL_POOL = (POOL + ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "n't", "'x"]
           + ["123", "4567890", "1,000", "3.14", "٣٤", "²", "Ⅻ", "½"]
           + ["   ", "\n\n", "\r\n", " \n ", "\t\t", "\u2028", "\u0085", "\u2003", "\u180e"]
           + ["ſ", "\u212a", "ǅ", "ß", "Ω", "\u200b", "\ufeff", "\u0301", "\ufffd", "\x7f"]
           + list("„“”«»…—–•·¿¡§°±×÷€£¥©®™") + ["Ġ", "Ċ", "ĠĠ", "Ã©"])


def cmd_gen(shared, out_path, bl_path=None):
    rng = random.Random(20241205)
    out, whole = [], []
    for name in ("tinyshakespeare.txt", "wikitext2-test.txt"):
        with open(f"{shared}/data/text/{name}", "rb") as f:
            b = f.read()
        whole.append(b.decode("utf-8"))
        # the whole file in chunks of about 4 KB
        i = 0
        while i < len(b):
            j = snap(b, min(i + 4096, len(b)))
            out.append(b[i:j].decode("utf-8"))
            i = j
        # random substrings, cut at random byte offsets snapped to characters
        for _ in range(3000):
            i = snap(b, rng.randrange(len(b)))
            j = snap(b, min(len(b), i + rng.randrange(1, 400)))
            out.append(b[i:j].decode("utf-8"))
    for _ in range(1000):
        out.append("".join(rng.choice(POOL) for _ in range(rng.randrange(0, 40))))
    added = ["<|user|>", "<|end|>", "<|assistant|>", "<|endoftext|>", "</s>", "<s>"]
    for _ in range(300):
        parts = [rng.choice(POOL + added) for _ in range(rng.randrange(0, 20))]
        out.append("".join(parts))
    out += SPECIAL
    with open(out_path, "w", encoding="utf-8") as f:
        for s in out:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    if bl_path is None:
        return
    bl = [s for s in out if len(s.encode("utf-8")) < 4000]
    tags = ["<|endoftext|>", "<|im_start|>", "<|extra_id_0|>", "|||EMAIL_ADDRESS|||", "ï¿½"]
    for _ in range(3000):
        parts = [rng.choice(BL_POOL) for _ in range(rng.randrange(0, 30))]
        if rng.random() < 0.1:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(tags))
        bl.append("".join(parts))
    with open(bl_path, "w", encoding="utf-8") as f:
        for s in bl:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    with open(os.path.join(os.path.dirname(bl_path), "whole.jsonl"), "w", encoding="utf-8") as f:
        for s in whole:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    nfc = nf_strings(rng, bl)
    with open(os.path.join(os.path.dirname(bl_path), "strings-nfc.jsonl"), "w",
              encoding="utf-8") as f:
        for s in nfc:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")


# Decomposed and compatibility characters, combining marks (out of canonical
# order too), Hangul jamo, for the Unicode normalizers.
NF_POOL = (BL_POOL + ["e\u0301", "A\u030a", "o\u0308", "n\u0303", "c\u0327", "\u1e9b\u0323"]
           + list("\u0301\u0300\u0323\u0302\u0334\u0327\u031b\u0345\u05b8\u0e48\u093c\u3099")
           + list("\ufb01\ufb02\u2460\u210c\u338f\uff76\u2126\u212b\u0344\u1100\u1161\u11a8")
           + ["\u1100\u1161", "\uac00\u11a8", "\u0915\u093c", "\u304b\u3099", "\uff76\uff9e"])

NF_SPECIAL = [
    "cafe\u0301", "caf\u00e9", "e\u0301", "\u1100\u1161\u11a8", "\u1100\u1161 \u1112\u1161\u11ab",
    "\ufb01le \ufb02ow", "a\u0323\u0302", "a\u0302\u0323", "q\u0307\u0323", "\u0301start",
    "\u1e0b\u0323", "\u212b\u2126", "\u0958\u0915\u093c", "x\u0334\u0301\u0323\u031b",
    "\u00c5\u030a", "\u0041\u030a\u0301", "\u0fb2\u0f80\u0f71", "\u1100\u1100\u1161\u1161",
]


def nf_strings(rng, bl):
    """The strings of the normalizer variants: edge cases, every character
    with a combining class or a decomposition (in twos, between marks of
    classes 230 and 1, or before an acute), 300 random Hangul jamo runs, 3,000
    random mixes of NF_POOL, and the NFD and NFKD of the non-ASCII strings of
    `bl` (the shared texts' substrings among them). Characters whose
    normalization differs between the library's Unicode 9 tables and
    Python's (those of libunistring, Unicode 14: marks assigned since) are
    left out and counted."""
    import unicodedata
    from tokenizers import normalizers

    forms = {f: getattr(normalizers, f)() for f in ("NFC", "NFD", "NFKC", "NFKD")}
    pieces, gap = [], 0
    for c in map(chr, range(0x110000)):
        if not (unicodedata.combining(c) or unicodedata.decomposition(c)) or 0xD800 <= ord(c) < 0xE000:
            continue
        ps = ["a\u0301" + c + "\u0334", c + "\u0301"]
        if any(n.normalize_str(p) != unicodedata.normalize(f, p) for f, n in forms.items()
               for p in ps):
            gap += 1
            continue
        pieces += ps
    print(f"hftok_ref.py: {gap} characters normalized otherwise by Unicode 9 and 14, skipped",
          file=sys.stderr)
    out = NF_SPECIAL + [" ".join(pieces[i:i + 4]) for i in range(0, len(pieces), 4)]
    for _ in range(300):
        out.append("".join(chr(rng.choice([0x1100 + rng.randrange(19), 0x1161 + rng.randrange(21),
                                           0x11a8 + rng.randrange(27), 0xac00 + rng.randrange(11172)]))
                           for _ in range(rng.randrange(1, 12))))
    for _ in range(3000):
        out.append("".join(rng.choice(NF_POOL) for _ in range(rng.randrange(0, 30))))
    for s in bl:
        if not s.isascii():
            out += [unicodedata.normalize("NFD", s), unicodedata.normalize("NFKD", s)]
    return out


def bl_variant(name, j):
    """The pre-tokenizer of byte-level variant NAME (see the module doc)."""
    def split(pat, behavior, invert=False, literal=False):
        return {"type": "Split", "pattern": {"String" if literal else "Regex": pat},
                "behavior": behavior, "invert": invert}

    def bytelevel(prefix, regex):
        return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True,
                "use_regex": regex}

    def seq(*steps):
        return {"type": "Sequence", "pretokenizers": list(steps)}

    dolma = j["pre_tokenizer"].get("pretokenizers")
    if name == "bl-prefix":
        return bytelevel(True, True)
    if name == "bl-split":
        return seq(split("\\s+", "MergedWithPrevious"),
                   {"type": "Digits", "individual_digits": False}, bytelevel(False, False))
    if name == "bl-next":
        return seq(split(" ", "MergedWithNext", literal=True),
                   split("[aeiouAEIOU]", "Contiguous", invert=True), bytelevel(True, False))
    if name == "bl-removed":
        return seq(split("\\p{P}", "Removed"), bytelevel(False, True))
    if name == "bl-llama3":
        j["model"]["ignore_merges"] = True
        bos = {"id": "<|endoftext|>", "ids": [100257], "tokens": ["<|endoftext|>"]}
        single = [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                  {"Sequence": {"id": "A", "type_id": 0}}]
        pair = single + [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}},
                         {"Sequence": {"id": "B", "type_id": 1}}]
        j["post_processor"] = {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            {"type": "TemplateProcessing", "single": single, "pair": pair,
             "special_tokens": {"<|endoftext|>": bos}}]}
        return seq(split(dolma[0]["pattern"]["Regex"], "Isolated"), dolma[1])
    if name in ("bl-qwen2", "bl-nfc", "bl-nfd", "bl-nfkc", "bl-nf-seq"):
        pat = dolma[0]["pattern"]["Regex"].replace("\\p{N}{1,3}", "\\p{N}")
        nf = {"bl-nfc": {"type": "NFC"}, "bl-nfd": {"type": "NFD"}, "bl-nfkc": {"type": "NFKC"},
              "bl-nf-seq": {"type": "Sequence", "normalizers": [
                  {"type": "NFKD"},
                  {"type": "Replace", "pattern": {"String": "\u0301"}, "content": ""},
                  {"type": "NFC"}]}}
        j["normalizer"] = nf.get(name)
        return seq(split(pat, "Isolated"), dolma[1])
    sys.exit(f"unknown variant {name}")


def cmd_variant(name, tok_path, out_path):
    with open(tok_path, encoding="utf-8") as f:
        j = json.load(f)
    if name.startswith("metaspace"):
        scheme, split = ("always", True) if name == "metaspace-split" else ("first", False)
        ms = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme,
              "split": split}
        j["normalizer"] = {"type": "NFKC"} if name == "metaspace-nfkc" else None
        j["pre_tokenizer"] = ms
        j["decoder"] = ms
    elif name == "unk":
        j["model"]["byte_fallback"] = False
    elif name.startswith("bl-"):
        j["pre_tokenizer"] = bl_variant(name, j)
    elif name == "lstrip":
        for a in j["added_tokens"]:
            a["lstrip"] = a["lstrip"] or a["id"] >= 32000
    else:
        sys.exit(f"unknown variant {name}")
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "ids" and len(sys.argv) == 5:
        cmd_ids(*sys.argv[2:])
    elif cmd == "gen" and len(sys.argv) in (4, 5):
        cmd_gen(*sys.argv[2:])
    elif cmd == "variant" and len(sys.argv) == 5:
        cmd_variant(*sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
