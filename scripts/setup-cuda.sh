#!/usr/bin/env bash
# Prepares a Debian 12 / Ubuntu machine to build vpipe with `--features cuda`.
#
# burn's `cuda` backend depends (not optionally) on cubecl-llvm, whose build script
# (tracel-llvm-bundler) downloads a prebuilt LLVM 23 from GitHub. Where that
# download is not possible, this script stands Debian's LLVM 22 in for it: the
# bundler skips the download when its install marker exists, and then runs
# `bin/llvm-config` from the same folder, here a wrapper around LLVM 22's.
#
# Usage:  bash scripts/setup-cuda.sh
#         export CUDARC_CUDA_VERSION=13000   # the CUDA version of the target's driver
#         cargo build --release -p vpipe-cli --features cuda
#
# Idempotent. No GPU, CUDA toolkit or nvcc is needed to build: the CUDA libraries
# (libcuda, libnvrtc) are loaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# LLVM 22 (Debian 12: bookworm-security / llvm.org apt), its Polly library and zstd.
need=()
for pkg in llvm-22-dev libpolly-22-dev libzstd-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
LLVM_CONFIG=/usr/lib/llvm-22/bin/llvm-config
if [ ! -x "$LLVM_CONFIG" ]; then
  echo "error: $LLVM_CONFIG not found after installing llvm-22-dev" >&2
  exit 1
fi

# The bundler version pinned by Cargo.lock names its install folder.
version=$(awk '/^name = "tracel-llvm-bundler"/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
if [ -z "$version" ]; then
  echo "error: tracel-llvm-bundler is not in Cargo.lock" >&2
  exit 1
fi
prefix="${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-$version"
mkdir -p "$prefix/bin"
# Debian's llvm-config prints system libraries as absolute .so paths (libz3); the
# bundler wants -l flags, so the wrapper rewrites them.
cat >"$prefix/bin/llvm-config" <<EOF
#!/bin/sh
# Written by vpipe's scripts/setup-cuda.sh: LLVM 22 standing in for tracel's LLVM bundle.
$LLVM_CONFIG "\$@" | sed -e 's#/usr/lib/x86_64-linux-gnu/lib\([A-Za-z0-9_]*\)\.so#-l\1#g'
EOF
chmod +x "$prefix/bin/llvm-config"
touch "$prefix/.tracel-llvm-installed"

echo "LLVM for the cuda feature: $prefix -> $($prefix/bin/llvm-config --version)"
if [ -z "${CUDARC_CUDA_VERSION:-}" ] && ! command -v nvcc >/dev/null 2>&1; then
  echo "note: without nvcc, set CUDARC_CUDA_VERSION to the target driver's CUDA version"
  echo "      (for example 13000 for CUDA 13.0), else the newest supported one is assumed"
fi
