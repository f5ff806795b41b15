#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds, then CTest. Tests labelled `cuda`
# skip themselves on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
