#!/bin/sh
# README command 2: install dependencies, build and run the whole test suite
# (every label except the benchmarks). CI runs exactly this (.ci/run).
#
#   sh tests/run-tests.sh [extra ctest arguments, e.g. -L models]
set -eu
cd "$(dirname "$0")/.."
sh pipeline/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
# -LE bench: benchmarks are built but only run on request (ctest -L bench).
ctest --test-dir build -LE bench --output-on-failure --timeout 600 "$@"
