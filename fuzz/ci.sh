#!/usr/bin/env bash
# CI's fuzzing step (called from .ci/run): installs the pinned cargo-fuzz
# when it is missing, then runs every fuzz target for 60 s (fuzz/run.sh).
# Stable toolchain only: run.sh uses `-s none`, which needs no nightly.
set -euo pipefail
cd "$(dirname "$0")"

cargo_fuzz_version=0.13.1
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
# libfuzzer-sys compiles libFuzzer itself from C++.
if ! command -v c++ >/dev/null; then
  apt-get update -qq && apt-get install -y -qq g++
fi
exec ./run.sh "${FUZZ_SECONDS:-60}"
