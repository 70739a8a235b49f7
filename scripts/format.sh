#!/usr/bin/env bash
# clang-format every C++ file we own.  --check: report files that differ, exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-fix}
files=$(git ls-files '*.h' '*.cc' '*.cu' '*.cuh')
if [ "$mode" = "--check" ]; then
  bad=0
  for f in $files; do
    if ! clang-format --style=file "$f" | cmp -s - "$f"; then echo "needs formatting: $f"; bad=1; fi
  done
  exit $bad
fi
echo "$files" | xargs -r clang-format --style=file -i
