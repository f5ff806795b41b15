#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages zerotrain builds against (skips apt when all are present).
# The CUDA toolkit is optional and not installed here: with nvcc on the machine (or at
# /usr/local/cuda/bin/nvcc) the CUDA backend is built too.
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config
          libopenmpi-dev openmpi-bin libhdf5-dev libtomlplusplus-dev libgtest-dev
          python3 procps)  # python3: scripts/scaling_sweep.py and its test; procps: pgrep/ps in the fault tests
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
