#!/usr/bin/env bash
# Sets up (if needed), builds, and runs the whole test suite with CTest; then
# (without arguments) builds and tests the core-only configuration without
# MPI or GoogleTest (scripts/test_core_only.sh), then both GPU flavours
# against PyTorch 2.11.0 (CUDA 13.0, the GPU machine's LibTorch; needs the
# CUDA 13.0 toolkit's nvcc): the GPU machine's trainer (no MPI, no gRPC) with
# its CPU tests and the dry run of scripts/gpu_check.sh, and the cluster
# node's MPI + gRPC + CUDA build (scripts/test_gpu_flavours.sh; docs/gpu.md),
# so a CUDA compile error or a missing NCCL symbol fails the test command.
# Cost: ~3 min with a warm ccache; from a bare machine an estimated 20-25 min
# on 2 cores (1,800-2,400 CPU-s of LibTorch 2.11 and nvcc compiles, 762 MB of
# wheels downloaded once per machine; docs/gpu.md, "Build cost").
#   scripts/test.sh              everything
#   scripts/test.sh -L unit      extra arguments go to ctest (later steps skipped)
#   CNX_SKIP_CORE_ONLY=1         skip the core-only step
#   CNX_GPU_FLAVOURS=0           skip the GPU flavours (a machine without the CUDA 13.0
#                                toolkit); gpu or cluster: only that one
#   CNX_SKIP_FUZZ=1              skip the fuzz step (scripts/fuzz.sh: clang + libFuzzer
#                                targets built in build-fuzz, each run CNX_FUZZ_SECONDS=30 s)
# Without arguments it first checks that every C++ file is clang-formatted
# (scripts/format.sh --check; fix with scripts/format.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${CNX_BUILD_DIR:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
status=0
if [ $# -eq 0 ]; then
  printf '\033[1m[test]\033[0m checking formatting (scripts/format.sh --check)\n' >&2
  scripts/format.sh --check || { printf '\033[1;31m[test] formatting differs: run scripts/format.sh\033[0m\n' >&2; status=1; }
fi
printf '\033[1m[test]\033[0m running ctest in %s\n' "$BUILD_DIR" >&2
(cd "$BUILD_DIR" && ctest --output-on-failure --timeout 900 -j"${CNX_TEST_JOBS:-1}" "$@") || status=$?
if [ $# -eq 0 ] && [ "${CNX_SKIP_CORE_ONLY:-0}" != 1 ]; then
  scripts/test_core_only.sh || status=1
fi
if [ $# -eq 0 ] && [ "${CNX_GPU_FLAVOURS:-1}" != 0 ]; then
  printf '\033[1m[test]\033[0m building and testing the GPU flavours (scripts/test_gpu_flavours.sh)\n' >&2
  CNX_GPU_FLAVOURS=${CNX_GPU_FLAVOURS:-1} scripts/test_gpu_flavours.sh || status=1
fi
if [ $# -eq 0 ] && [ "${CNX_SKIP_FUZZ:-0}" != 1 ]; then
  printf '\033[1m[test]\033[0m fuzzing every parser of untrusted input from its corpus (scripts/fuzz.sh)\n' >&2
  scripts/fuzz.sh || status=1
fi
exit $status
