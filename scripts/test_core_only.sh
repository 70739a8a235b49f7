#!/usr/bin/env bash
# Builds and tests the core-only configuration the way a GPU machine with a
# pip PyTorch has it (no MPI, no GoogleTest, no nlohmann-json, no Google
# Benchmark: CMake is told not to look for them), on the CPU, so that this
# configuration cannot rot unnoticed. Called by scripts/test.sh.
# test_fcmae is left out by default: the full build ran the same test (same
# code; only the harness differs) and it is the longest (~2.5 min here).
#   CNX_CORE_BUILD_DIR=dir (default build-core), CNX_JOBS=n, extra args -> ctest
#   CNX_CORE_ONLY_ALL=1          run test_fcmae too
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${CNX_CORE_BUILD_DIR:-build-core}
JOBS=${CNX_JOBS:-$(nproc)}
say() { printf '\033[1m[core-only]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[core-only] FAILED:\033[0m %s\n' "$*" >&2; exit 1; }
start=$(date +%s)
mkdir -p "$BUILD_DIR"
say "configuring $BUILD_DIR: -DCNX_CORE_ONLY=ON without MPI, GoogleTest, nlohmann-json, Google Benchmark"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCNX_CORE_ONLY=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=ON -DCNX_BUILD_BENCH=OFF \
  >"$BUILD_DIR/configure.log" 2>&1 || { tail -40 "$BUILD_DIR/configure.log" >&2; die "cmake configure"; }
grep -q 'core_only=ON mpi=OFF' "$BUILD_DIR/configure.log" || die "configure did not hide MPI (see $BUILD_DIR/configure.log)"
grep -q 'core tests use tests/minitest' "$BUILD_DIR/configure.log" || die "configure did not hide GoogleTest"
say "building with -j$JOBS"
cmake --build "$BUILD_DIR" -j"$JOBS" || die "build (rerun 'cmake --build $BUILD_DIR' to see the error)"
built=$(date +%s)
say "running ctest in $BUILD_DIR"
exclude=(-E '^test_fcmae$')
[ "${CNX_CORE_ONLY_ALL:-0}" = 1 ] && exclude=()
(cd "$BUILD_DIR" && ctest --output-on-failure --timeout 900 -j"${CNX_TEST_JOBS:-1}" "${exclude[@]}" "$@") \
  || die "core-only tests"
say "done: build $(( built - start )) s, tests $(( $(date +%s) - built )) s"
