#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds, then CTest. Tests labelled `cuda`
# skip themselves on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"

# Issue 8: the fault tests (malformed configs, datasets, checkpoints, safetensors files) once more
# under AddressSanitizer and UndefinedBehaviorSanitizer, in their own CPU-only tree that builds
# only that suite and the libraries it links (-O1 keeps the sanitized build and run short).
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DZT_CUDA=OFF \
  -DZT_SANITIZE=address,undefined
cmake --build build-asan --target zt_tests_faults
UBSAN_OPTIONS=print_stacktrace=1 OMP_NUM_THREADS=2 build-asan/tests/zt_tests_faults
