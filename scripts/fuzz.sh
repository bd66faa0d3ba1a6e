#!/usr/bin/env bash
# libFuzzer harnesses (tests/fuzz/fuzz_*.cpp) under AddressSanitizer + UndefinedBehaviorSanitizer, built with clang
# straight from the sources they exercise (instrumented; system libraries are not).
#   scripts/fuzz.sh build                 builds build-fuzz/fuzz_{config,sample,tokenizer,safetensors,pickle,image,video}
#   scripts/fuzz.sh run NAME SECONDS [RUNS]  fuzzes NAME for SECONDS (or RUNS inputs, whichever ends first) from
#                                         tests/fuzz/corpus/NAME (new inputs kept in build-fuzz/corpus/NAME; a crash
#                                         is written to build-fuzz/crash-*)
#   scripts/fuzz.sh smoke NAME [RUNS]     builds if needed and runs RUNS (default 20000) inputs from the seeds alone:
#                                         the CI smoke
# Every harness treats only the component's own refusal type as expected; any other exception, a crash, a leak,
# an out-of-memory (-rss_limit_mb=2048) or a slow input (-timeout=10) is a finding.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${FUZZ_DIR:-build-fuzz}"
CXX="${FUZZ_CXX:-clang++}"
FLAGS=(-std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc
       -DPLM_SOURCE_DIR="\"$PWD\"" -DFMT_HEADER_ONLY)
CONFIG_SRC=(src/plm/config/emit.cpp src/plm/config/load.cpp src/plm/config/source.cpp src/plm/config/suggest.cpp
            src/plm/config/validate.cpp src/plm/common/log.cpp)
TEXT_SRC=(src/plm/text/conversation.cpp src/plm/text/pretokenizer.cpp src/plm/text/region.cpp
          src/plm/text/sample_tokens.cpp src/plm/text/sentencepiece_tokenizer.cpp src/plm/text/tiktoken_bpe.cpp
          src/plm/text/tokenizer.cpp src/plm/common/log.cpp)
LIBS_CONFIG=(-lyaml-cpp -lspdlog -lfmt)
# The checkpoint readers need LibTorch (the wheel in .venv, built with gcc: linked uninstrumented, as are the system
# libraries). UBSan's vptr check is off for them: it needs RTTI from instrumented code on both sides.
TORCH_DIR="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null || true)"
TORCH_FLAGS=(-isystem "$TORCH_DIR/include" -isystem "$TORCH_DIR/include/torch/csrc/api/include"
             -D_GLIBCXX_USE_CXX11_ABI=1 -fno-sanitize=vptr)
LIBS_TORCH=(-L"$TORCH_DIR/lib" -Wl,-rpath,"$TORCH_DIR/lib" -ltorch_cpu -lc10)
CKPT_SRC=(src/plm/ckpt/safetensors.cpp)
LIBS_IMAGE=($(pkg-config --libs libjpeg libpng libwebp libwebpdemux libavcodec libswscale libavutil))
LIBS_VIDEO=($(pkg-config --libs libavformat libavcodec libswscale libavutil))
LIBS_TEXT=($(pkg-config --libs libpcre2-8 sentencepiece) -lspdlog -lfmt)

build_one() {  # name, sources..., -- libs...
  local name=$1; shift
  local srcs=() libs=()
  while [ "$1" != "--" ]; do srcs+=("$1"); shift; done; shift
  libs=("$@")
  local bin="$OUT/fuzz_$name"
  if [ -x "$bin" ] && [ -z "$(find tests/fuzz src \( -name '*.h' -o -name '*.cpp' \) -newer "$bin" | head -1)" ]; then
    return
  fi
  echo "[fuzz] building $bin"
  "$CXX" "${FLAGS[@]}" "tests/fuzz/fuzz_$name.cpp" "${srcs[@]}" "${libs[@]}" -o "$bin"
}

build() {  # [name]: one harness, or all
  command -v "$CXX" >/dev/null || { echo "[fuzz] $CXX is missing: apt-get install clang" >&2; exit 1; }
  mkdir -p "$OUT"
  case "${1:-all}" in config | all) build_one config "${CONFIG_SRC[@]}" -- "${LIBS_CONFIG[@]}" ;; esac
  case "${1:-all}" in sample | all) build_one sample src/plm/data/sample.cpp "${TEXT_SRC[@]}" -- "${LIBS_TEXT[@]}" ;; esac
  case "${1:-all}" in tokenizer | all) build_one tokenizer "${TEXT_SRC[@]}" -- "${LIBS_TEXT[@]}" ;; esac
  case "${1:-all}" in safetensors | pickle | image | video | all)
    [ -n "$TORCH_DIR" ] || { echo "[fuzz] no torch in .venv: run scripts/setup.sh" >&2; exit 1; }
    seeds "${1:-all}" ;;
  esac
  case "${1:-all}" in safetensors | all)
    build_one safetensors "${TORCH_FLAGS[@]}" "${CKPT_SRC[@]}" -- "${LIBS_TORCH[@]}" ;; esac
  case "${1:-all}" in pickle | all)
    build_one pickle "${TORCH_FLAGS[@]}" "${CKPT_SRC[@]}" src/plm/ckpt/torch_pickle.cpp -- "${LIBS_TORCH[@]}" ;; esac
  case "${1:-all}" in image | all)
    build_one image "${TORCH_FLAGS[@]}" src/plm/media/image.cpp -- "${LIBS_IMAGE[@]}" "${LIBS_TORCH[@]}" ;; esac
  case "${1:-all}" in video | all)
    build_one video "${TORCH_FLAGS[@]}" src/plm/media/video.cpp src/plm/media/frame_sampling.cpp -- \
      "${LIBS_VIDEO[@]}" "${LIBS_TORCH[@]}" ;; esac
}

# Binary seed corpora are made by the reference libraries and the ffmpeg CLI (tests/fuzz/make_seeds.py), not kept in the repository.
seeds() {
  local kind
  for kind in safetensors pickle image video; do [ -d "$OUT/seeds/$kind" ] || break; done
  [ -d "$OUT/seeds/$kind" ] && return
  .venv/bin/python tests/fuzz/make_seeds.py "$OUT/seeds"
}

run() {  # name, corpus folder for new inputs, libFuzzer options...
  local name=$1 kept=$2; shift 2
  mkdir -p "$kept"
  local corpora=("$kept")
  for c in "tests/fuzz/corpus/$name" "$OUT/seeds/$name"; do [ -d "$c" ] && corpora+=("$c"); done
  "$OUT/fuzz_$name" -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$OUT/crash-$name-" "$@" "${corpora[@]}"
}

case "${1:-}" in
  build) build ;;
  run) build "$2"; run "$2" "$OUT/corpus/$2" -max_total_time="$3" ${4:+-runs="$4"} -print_final_stats=1 ;;
  # The smoke starts from the seeds alone (a long run's corpus would make it slower, ~5x for images) and keeps
  # nothing.
  smoke) build "$2"; scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
         run "$2" "$scratch" -runs="${3:-20000}" ;;
  *) echo "usage: scripts/fuzz.sh build | run NAME SECONDS [RUNS] | smoke NAME [RUNS]" >&2; exit 2 ;;
esac
