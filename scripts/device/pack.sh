#!/usr/bin/env bash
# Packs what scripts/device/gpu_checks.sh needs on the GPU machine into .devcarry/ (ignored by git; name it in the
# device tool's carry): the CUDA build's plm (build-cuda/plm, from
# `BUILD_DIR=build-cuda scripts/build.sh -DPLM_CUDA=ON -DPLM_BUILD_TESTS=OFF`) and every library it loads that does
# not come from the torch wheel, with the dynamic loader, xz-compressed (about 53 MB).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-build-cuda/plm}"
grep -qx "/.devcarry/" .git/info/exclude 2>/dev/null || echo "/.devcarry/" >> .git/info/exclude
rm -rf .devcarry && mkdir -p .devcarry/lib
ldd "$bin" | awk '/=>/ {print $3} /ld-linux/ {print $1}' | grep -v site-packages | sort -u |
  while read -r f; do cp -L "$f" .devcarry/lib/; done
tar -C .devcarry -cJf .devcarry/libs.tar.xz lib && rm -rf .devcarry/lib
xz -9 -T2 -c "$bin" > .devcarry/plm.xz
du -sh .devcarry
