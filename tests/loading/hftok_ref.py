#!/usr/bin/env python3
"""hftok_ref.py: the Hugging Face `tokenizers` library as the reference of
test_io_hftok (mpquant's tokenizer.json reader).

  hftok_ref.py ids TOKENIZER_JSON STRINGS OUT
      For each line of STRINGS (one JSON string a line), one JSON line in OUT:
      {"ids": encode(s, add_special_tokens=False).ids,
       "ids_special": encode(s, add_special_tokens=True).ids,
       "decoded": decode(ids, skip_special_tokens=True)}.
  hftok_ref.py gen SHARED_DIR OUT
      Writes the test strings (seeded, so every run compares the same ones).
  hftok_ref.py variant NAME TOKENIZER_JSON OUT
      Writes the same vocabulary and merges with other components. NAME
      metaspace: the newer Llama conversion (no normalizer, a Metaspace
      pre-tokenizer with prepend_scheme "first" and split false, a Metaspace
      decoder); metaspace-split: Metaspace with prepend_scheme "always" and
      split true; unk: byte_fallback off, so that characters missing from the
      vocabulary become <unk> (fused); lstrip (for the Phi-3 file): lstrip
      on every added token from id 32000 (they take the whitespace before).

Merges given as "a b" strings that do not split at a single space (the
TinyLlama file has three: "   ", "     ", "▁  ") make every released
`tokenizers` refuse the file ("Merges text file invalid"). They are rewritten
as ["a", "b"] pairs at the one space whose two sides are both vocabulary
entries (an error if there is not exactly one), the rule mpquant's reader
applies too; everything else is the library's own reading of the file.
"""
import json
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
    with open(strings, encoding="utf-8") as f, open(out_path, "w", encoding="utf-8") as out:
        for line in f:
            s = json.loads(line)
            ids = tok.encode(s, add_special_tokens=False).ids
            ids_special = tok.encode(s, add_special_tokens=True).ids
            dec = tok.decode(ids, skip_special_tokens=True)
            out.write(json.dumps({"ids": ids, "ids_special": ids_special, "decoded": dec},
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


def cmd_gen(shared, out_path):
    rng = random.Random(20241205)
    out = []
    for name in ("tinyshakespeare.txt", "wikitext2-test.txt"):
        with open(f"{shared}/data/text/{name}", "rb") as f:
            b = f.read()
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


def cmd_variant(name, tok_path, out_path):
    with open(tok_path, encoding="utf-8") as f:
        j = json.load(f)
    if name.startswith("metaspace"):
        scheme, split = ("always", True) if name == "metaspace-split" else ("first", False)
        ms = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme,
              "split": split}
        j["normalizer"] = None
        j["pre_tokenizer"] = ms
        j["decoder"] = ms
    elif name == "unk":
        j["model"]["byte_fallback"] = False
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
    elif cmd == "gen" and len(sys.argv) == 4:
        cmd_gen(*sys.argv[2:])
    elif cmd == "variant" and len(sys.argv) == 5:
        cmd_variant(*sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
