#!/usr/bin/env bash
# One command from a fresh Debian/Ubuntu machine to a trained model: installs the packages,
# builds, and trains gptj-tiny on the CPU on the built-in synthetic corpus (no download).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build/launch/zerotrain train examples/tiny-cpu.toml --set train.overwrite=true "$@"
