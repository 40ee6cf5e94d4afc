#!/usr/bin/env bash
# Set-up from nothing and the main job: installs missing packages, builds Release, runs `qround demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
qround_install_packages

cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DQROUND_BUILD_TESTS=OFF \
      -DQROUND_BUILD_BENCH=OFF -DQROUND_BUILD_EXAMPLES=OFF -DQROUND_BUILD_CLI=ON >/dev/null
cmake --build build/release --target qround_cli -j "$(qround_jobs)"
./build/release/qround info
echo
./build/release/qround demo "$@"
