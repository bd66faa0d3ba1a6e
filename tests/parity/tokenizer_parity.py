"""Tokenizer parity: plm's tiktoken BPE against Python tiktoken with the same file, pattern and specials.

Encodes a varied corpus (many scripts, code, whitespace runs, numbers, emoji, special-token literals, random
Unicode) through `plm text encode --jsonl` and through tiktoken with PLM's Llama3Tokenizer settings, and
checks identical ids and that `plm text decode --jsonl` gives the text back.

Usage: tokenizer_parity.py PLM_BINARY TOKENIZER_MODEL
"""
import json
import random
import subprocess
import sys

import tiktoken
from tiktoken.load import load_tiktoken_bpe

PAT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|image|>", "<|reserved_special_token_1|>",
            "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"] + [
            f"<|reserved_special_token_{i}|>" for i in range(5, 256 - 5)]


def plm_reference_encode(enc, s):
    """PLM's Llama3Tokenizer.encode: 4,000,000-char blocks, runs of at most 250,000 (white)space chars."""
    def split_runs(s, limit):
        n, is_space, start = 0, (s[0].isspace() if s else False), 0
        for i in range(len(s)):
            now = s[i].isspace()
            if is_space ^ now:
                n, is_space = 1, now
            else:
                n += 1
                if n > limit:
                    yield s[start:i]
                    start, n = i, 1
        yield s[start:]
    out = []
    for i in range(0, len(s), 4_000_000):
        for sub in split_runs(s[i:i + 4_000_000], 250_000):
            out.extend(enc.encode(sub, allowed_special="all", disallowed_special=()))
    return out


def corpus():
    fixed = [
        "", " ", "This is a test sentence.", "Hello, world!\n\nHow are you?  I'm fine; you'RE great.",
        "He'll say 'S' and 'LL' and 'ſ' and 'K'.", "   leading spaces and trailing   ", "\t\ttabs\tand\r\nCRLF\r\n",
        "a\u00a0b\u2003c\u3000d\u0085e\u2028f\u1680g\u180eh\u200bi", "1234567890 12 123 1234 ١٢٣٤٥ １２３４",
        "3.14159e-10 + 0x1F == 0b1010", "def f(x):\n    return x**2  # square\n\n\nclass A: pass\n",
        "for (int i = 0; i < n; ++i) { sum += a[i]; }\n", "{\"key\": [1, 2, {\"nested\": null}]}",
        "日本語のテキストと漢字。中文文本。한국어 텍스트.", "Привет, мир! Ελληνικά. עברית. العربية. हिन्दी। ภาษาไทย",
        "emoji: 😀👍🏽👨‍👩‍👧‍👦🇫🇷 ❤️ ✨", "e\u0301 a\u0308 combining marks n\u0303",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>",
        "<|image|><|image|><|image|>What is this?", "<|<|image|>|> <|not_special|> <|eot_id <|reserved_special_token_250|>",
        "<|reserved_special_token_10|><|reserved_special_token_1|>", "<||>", "|>text<|",
        "\n\n\n\n", "          \n          ", "x" * 1000, ("word " * 500).strip(), "🙂" * 300,
        " " * 300_001 + "end",  # a whitespace run longer than PLM's 250,000 cut
        ("a" * 250_001) + " b",
    ]
    rng = random.Random(1234)
    ranges = [(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x6ff), (0x900, 0x97f),
              (0xe00, 0xe7f), (0x3040, 0x30ff), (0x4e00, 0x4fff), (0xac00, 0xad00), (0x1f300, 0x1f64f),
              (0x2000, 0x206f), (0x300, 0x36f), (0xff00, 0xffef), (0x1d400, 0x1d4ff), (0x9, 0xd)]
    pieces = ["'s", "'T", "'re", "'VE", "'m", "'ll", "'D", " ", "  ", "\n", "\r\n", "\t", "<|image|>", "<|eot_id|>",
              "<|", "|>", "123", "4567", ".", "..."]
    rand = []
    for _ in range(3000):
        parts = []
        for _ in range(rng.randint(0, 40)):
            if rng.random() < 0.25:
                parts.append(rng.choice(pieces))
            else:
                lo, hi = rng.choice(ranges)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6))))
        rand.append("".join(parts))
    # Long single pieces (letter runs, symbol runs) on both sides of plm's 64-byte switch between its two
    # merge strategies.
    letters = "abcdefghijklmnopqrstuvwxyzαβγδεжзийкあいうえお漢字語文"
    symbols = "!@#$%^&*()_+-=[]{};:,./<>?~`|\\"
    for _ in range(300):
        alphabet = rng.choice([letters, symbols, letters[:26]])
        rand.append(" " * rng.randint(0, 1) + "".join(rng.choice(alphabet) for _ in range(rng.randint(20, 400))))
    return fixed + rand


def run(plm, args, stdin):
    return subprocess.run([plm] + args, input=stdin, capture_output=True, check=True).stdout.decode("utf-8")


def main():
    plm, model = sys.argv[1], sys.argv[2]
    ranks = load_tiktoken_bpe(model)
    enc = tiktoken.Encoding(name="llama3", pat_str=PAT, mergeable_ranks=ranks,
                            special_tokens={t: len(ranks) + i for i, t in enumerate(SPECIALS)})
    texts = corpus()
    stdin = "".join(json.dumps(t) + "\n" for t in texts).encode()
    got = [[int(x) for x in line.split()] for line in run(plm, ["text", "encode", "--tokenizer", model, "--jsonl"], stdin).split("\n")[:-1]]
    decoded = [json.loads(l) for l in run(plm, ["text", "decode", "--tokenizer", model, "--jsonl"],
                                          "".join(" ".join(map(str, ids)) + "\n" for ids in got).encode()).split("\n")[:-1]]
    passed = failed = 0
    for text, ids, back in zip(texts, got, decoded):
        want = plm_reference_encode(enc, text)
        if ids == want and back == text:
            passed += 1
            continue
        failed += 1
        if failed <= 5:
            print(f"MISMATCH for {text[:80]!r}...\n  plm:      {ids[:30]}\n  tiktoken: {want[:30]}\n  round trip ok: {back == text}")
    if len(got) != len(texts):
        print(f"plm returned {len(got)} lines for {len(texts)} texts")
        failed += 1
    print(f"tokenizer parity: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
