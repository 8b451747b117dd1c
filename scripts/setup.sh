#!/usr/bin/env bash
# Installs everything nbtune needs on a fresh Debian/Ubuntu machine with Node, npm and apt:
#   - Debian packages: OpenBLAS (fast matmuls through FFI), gcc (builds the native kernels), Jupyter (nbconvert, nbclient, ipykernel)
#     to run the notebooks, Mesa's software Vulkan (WebGPU path), Chromium (HTML checks), numpy
#     (reference scripts). Skipped when already present; needs root or sudo.
#   - Deno 2.9.6 from the npm package "deno" into .tools/ (then `.tools/node_modules/.bin/deno`).
#   - The project's npm dependencies (pinned in deno.json / deno.lock), cached by `deno install`.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS="libopenblas0-pthread jupyter-nbconvert python3-nbclient jupyter-client python3-ipykernel \
mesa-vulkan-drivers libvulkan1 chromium fonts-dejavu-core python3-numpy gcc libc6-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[setup] installing Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x .tools/node_modules/.bin/deno ] || ! .tools/node_modules/.bin/deno --version | grep -q "deno 2.9.6"; then
  echo "[setup] installing deno 2.9.6 (npm package) into .tools/"
  npm install --prefix .tools --no-audit --no-fund --no-save --loglevel=error deno@2.9.6 >/dev/null
fi
# Native kernels (NF4 dequantization, cross-entropy, bf16 GEMM) loaded through FFI by lib/engine/native.ts.
# Optional: without them everything runs on TypeScript fallbacks, slower, and says so once.
# -z nodelete: the library (and its OpenMP thread pool) must outlive Deno workers that dlclose it.
if command -v gcc >/dev/null 2>&1; then
  mkdir -p .tools/native
  if gcc -O3 -march=native -fopenmp -shared -fPIC -Wl,-z,nodelete lib/engine/native/nbtune_kernels.c \
    -o .tools/native/libnbtune_kernels.so.tmp -lm; then
    mv .tools/native/libnbtune_kernels.so.tmp .tools/native/libnbtune_kernels.so
    echo "[setup] built .tools/native/libnbtune_kernels.so"
  else
    echo "[setup] WARNING: compiling lib/engine/native/nbtune_kernels.c failed; using the slower TypeScript kernels"
  fi
else
  echo "[setup] WARNING: no gcc: native kernels not built; using the slower TypeScript kernels"
fi
.tools/node_modules/.bin/deno install --quiet >/dev/null 2>&1 || .tools/node_modules/.bin/deno install
echo "[setup] ready: $(.tools/node_modules/.bin/deno --version | head -1)"
