#!/usr/bin/env bash
# Installs the system packages vpipe builds against and checks the Rust toolchain.
# Idempotent; safe to run on a machine that already has everything.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
# OpenCV (video files, streams, cameras) and clang for its Rust bindings; SQLite for
# the database sink of examples/custom-head; FFmpeg's command line, which serves the
# live stream the live-source test reads on loopback; the NATS server the NATS tests
# start on loopback.
for pkg in pkg-config build-essential libopencv-dev clang libclang-dev libsqlite3-dev ffmpeg nats-server; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  else
    echo "error: cargo not found; install Rust 1.95 or later (https://rustup.rs)" >&2
    exit 1
  fi
fi
cargo --version
# CI's format and lint checks (.ci/run) need rustfmt and clippy.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy
  else
    echo "error: cargo fmt and cargo clippy are needed (rustup component add rustfmt clippy)" >&2
    exit 1
  fi
fi
