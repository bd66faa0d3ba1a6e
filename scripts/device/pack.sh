#!/usr/bin/env bash
# Packs what scripts/device/gpu_checks.sh needs on the GPU machine into .devcarry/ (ignored by git; name it in the
# device tool's carry): the CUDA build's plm (build-cuda/plm, from
# `BUILD_DIR=build-cuda scripts/build.sh -DPLM_CUDA=ON`), its ops_test when built (the ops' CUDA cases, checked
# against the ATen path on the CPU) and every library they load that does not come from the torch wheel, with the
# dynamic loader, xz-compressed (about 53 MB for plm alone).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-build-cuda/plm}"
ops_test="${2:-$(dirname "$bin")/tests/ops_test}"
grep -qx "/.devcarry/" .git/info/exclude 2>/dev/null || echo "/.devcarry/" >> .git/info/exclude
rm -rf .devcarry && mkdir -p .devcarry/lib
bins=("$bin"); [ -x "$ops_test" ] && bins+=("$ops_test")
for b in "${bins[@]}"; do ldd "$b"; done | awk '/=>/ {print $3} /ld-linux/ {print $1}' | grep -v site-packages |
  sort -u | while read -r f; do cp -L "$f" .devcarry/lib/; done
tar -C .devcarry -cJf .devcarry/libs.tar.xz lib && rm -rf .devcarry/lib
xz -9 -T2 -c "$bin" > .devcarry/plm.xz
if [ -x "$ops_test" ]; then xz -9 -T2 -c "$ops_test" > .devcarry/ops_test.xz; fi
du -sh .devcarry
