#!/usr/bin/env bash
# Tokenizer throughput, plm vs Python tiktoken, same text, same machine, one thread each.
# Builds a ~16 MB mixed corpus (license prose, Python source, multilingual text) unless a file is given.
# Usage: bench/tokenizer_bench.sh [TEXT_FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
TOK=tests/fixtures/llama3/tokenizer.model
corpus="${1:-}"
if [ -z "$corpus" ]; then
  corpus="$(mktemp /tmp/plm-tok-corpus.XXXX)"; trap 'rm -f "$corpus"' EXIT
  { for _ in 1 2 3 4; do cat /usr/share/common-licenses/*; done
    find .venv/lib/python3*/site-packages/torch -name '*.py' | sort | head -1500 | xargs cat
    .venv/bin/python -c "import random; r=random.Random(0); print(''.join(chr(r.choice([r.randint(0x4e00,0x4fff), r.randint(0x400,0x44f), r.randint(0x61,0x7a), 0x20, 0x20, 0xa])) for _ in range(600000)))"
  } 2>/dev/null | head -c 16000000 > "$corpus" || true   # head closes the pipe early: SIGPIPE upstream is expected
fi
cmake -S . -B build -DPLM_BUILD_BENCH=ON >/dev/null && cmake --build build --target tokenizer_bench >/dev/null
export OMP_NUM_THREADS=1 RAYON_NUM_THREADS=1
plm_line="$(build/bench/tokenizer_bench "$TOK" "$corpus" 3)"
ref_line="$(.venv/bin/python bench/tokenizer_bench.py "$TOK" "$corpus" 3)"
echo "$plm_line"; echo "$ref_line"
plm_mbs="$(echo "$plm_line" | awk '{print $(NF-1)}')"; ref_mbs="$(echo "$ref_line" | awk '{print $(NF-3)}')"
plm_n="$(echo "$plm_line" | awk '{print $4}')"; ref_n="$(echo "$ref_line" | awk '{print $4}')"
[ "$plm_n" = "$ref_n" ] || echo "WARNING: token counts differ ($plm_n vs $ref_n)"
echo "throughput ratio plm/tiktoken: $(echo "scale=2; $plm_mbs / $ref_mbs" | bc)"
