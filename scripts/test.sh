#!/usr/bin/env bash
# Sets up (if needed), builds, and runs the whole test suite with CTest.
#   scripts/test.sh              everything
#   scripts/test.sh -L unit      extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${CNX_BUILD_DIR:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
printf '\033[1m[test]\033[0m running ctest in %s\n' "$BUILD_DIR" >&2
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 -j"${CNX_TEST_JOBS:-1}" "$@"
