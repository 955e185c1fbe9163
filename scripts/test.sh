#!/usr/bin/env bash
# The whole test suite: installs the dependencies, builds (with the CUDA backend when
# nvcc is present), runs every test, then rebuilds the C unit tests with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs them again.
# Tests that need a GPU report "Skipped" (not passed) on machines without one.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
jobs=$(nproc)

echo "== release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== ASan/UBSan build of the unit tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DREAP_SANITIZE=ON
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan -L unit --output-on-failure -j"$jobs"
echo "== all tests passed"
