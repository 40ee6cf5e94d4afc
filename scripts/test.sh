#!/usr/bin/env bash
# Builds everything and runs the whole ctest suite. With CI=true it also builds the unit tests
# under AddressSanitizer + UndefinedBehaviorSanitizer and runs them again, and runs the real-engine
# check (scripts/interop.sh: stock llama.cpp reads qround's GGUF files).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
qround_install_packages
jobs=$(qround_jobs)
start=$SECONDS

echo "== Release build: library, tool, tests, benchmarks, examples"
cmake -S . -B build/test -G Ninja -DCMAKE_BUILD_TYPE=Release -DQROUND_BUILD_TESTS=ON \
      -DQROUND_BUILD_BENCH=ON -DQROUND_BUILD_EXAMPLES=ON -DQROUND_BUILD_CLI=ON >/dev/null
cmake --build build/test -j "$jobs"

echo "== ctest (best SIMD path of this CPU)"
ctest --test-dir build/test --output-on-failure -j "$jobs" --timeout 900

# The kernels again on every narrower path this CPU supports (dispatch override).
if ./build/test/qround info 2>/dev/null | grep -q '^isa'; then
  for isa in avx2 scalar; do
    if ./build/test/qround info | grep -q "supported:.*\b$isa\b"; then
      echo "== kernel tests with QROUND_ISA=$isa"
      QROUND_ISA=$isa ./build/test/tests/qround_tests --gtest_brief=1 \
        --gtest_filter='PackedMatrix*:Qgemm*:ActivationQuantizer*:Dispatch*:Check*:*/QgemmIsa*:*/PackRoundTrip*:Dense*:SgemmPacked*:GptqKernels*'
    fi
  done
fi

if [ "${CI:-}" = "true" ]; then
  # Stock llama.cpp reads qround's GGUF files (installs the pinned engine once; fails loudly).
  echo "== real-engine check (scripts/interop.sh)"
  QROUND_BUILD_DIR=build/test scripts/interop.sh
fi

if [ "${CI:-}" = "true" ]; then
  echo "== ASan + UBSan build of the unit tests"
  cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQROUND_SANITIZE=ON \
        -DQROUND_BUILD_TESTS=ON -DQROUND_BUILD_BENCH=OFF -DQROUND_BUILD_EXAMPLES=OFF \
        -DQROUND_BUILD_CLI=ON >/dev/null
  cmake --build build/asan -j "$jobs"
  # The whole-model accuracy runs (tens of seconds in Release, 30x that under the sanitizers)
  # repeat code the smaller model tests already cover under ASan; they ran above in Release.
  heavy='^(PipelineLlama2c\.(ThreeBits|FourBits)|CliModel\.MixedBudgetLands|BlockReconstruction\.Stories)'
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build/asan --output-on-failure -j "$jobs" --timeout 900 -E "$heavy"
fi
echo "== all tests passed in $((SECONDS - start)) s"
