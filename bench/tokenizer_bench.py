"""tiktoken's encode throughput with PLM's Llama 3 settings, one thread (the reference for tokenizer_bench.cpp).

Like PLM's Llama3Tokenizer.encode it encodes 4,000,000-character blocks separately (so the ids equal plm's);
it skips the reference's pure-Python scan for 250,000-character runs, which only makes tiktoken look faster.
"""
import sys
import time

import tiktoken
from tiktoken.load import load_tiktoken_bpe

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/tests/parity")
from tokenizer_parity import PAT, SPECIALS  # noqa: E402

model, path = sys.argv[1], sys.argv[2]
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
ranks = load_tiktoken_bpe(model)
enc = tiktoken.Encoding(name="llama3", pat_str=PAT, mergeable_ranks=ranks,
                        special_tokens={t: len(ranks) + i for i, t in enumerate(SPECIALS)})
text = open(path, "rb").read().decode("utf-8")
nbytes = len(text.encode("utf-8"))
best, n = 1e30, 0
for _ in range(repeats):
    t0 = time.perf_counter()
    n = sum(len(enc.encode(text[i:i + 4_000_000], allowed_special="all", disallowed_special=()))
            for i in range(0, len(text), 4_000_000))
    best = min(best, time.perf_counter() - t0)
print(f"tiktoken {nbytes} bytes {n} tokens {best} s {nbytes / best / 1e6} MB/s  (tiktoken {tiktoken.__version__})")
