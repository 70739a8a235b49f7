#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan; fuzz/README.md) into
# build-fuzz/ and runs each one from its committed seed corpus.
#
#   scripts/fuzz.sh                       CI: every target for CNX_FUZZ_SECONDS (default 30) s
#   scripts/fuzz.sh --campaign SECONDS [TARGET...]
#                                         a longer run of each target (or the named ones)
#   scripts/fuzz.sh --build-only          just build
#   scripts/fuzz.sh --regen-corpus        rewrite fuzz/corpus/ with cnx-fuzz-corpus (our writers)
#   scripts/fuzz.sh --reproduce TARGET FILE
#                                         run one input (a crash file) once, with the full report
#
# TARGET is a name such as safetensors or coordinator_rpc (fuzz/corpus/<name>).
# Inputs found in a run are kept in build-fuzz/corpus/<name> (so campaigns
# build on each other); crash, leak, timeout and OOM inputs are written to
# build-fuzz/artifacts/<name>/. Any finding fails the run (exit 1) and is
# printed with the command that reproduces it. A summary (executions,
# CPU seconds, executions/s, coverage: edges "cov" and features "ft", corpus size, peak
# RSS) is printed and written to build-fuzz/fuzz-summary.tsv.
#   CNX_FUZZ_BUILD_DIR=dir (build-fuzz)  CNX_JOBS=n  CNX_FUZZ_SECONDS=s
#   CNX_FUZZ_WORK_DIR=dir: corpus/, artifacts/, logs/ and the summary go there (default: the build folder)
#   CNX_FUZZ_NO_BUILD=1: use the targets as built (a campaign next to a build)
#   CNX_FUZZ_NICE=n: run the targets under nice -n n (campaigns on a shared machine)
#   CNX_FUZZ_SEED=n: libFuzzer's -seed (CI mode default 1, so a CI run is
#     repeatable on the same commit up to machine speed; campaigns: random)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${CNX_FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${CNX_JOBS:-$(nproc)}
SECONDS_EACH=${CNX_FUZZ_SECONDS:-30}
WORK_DIR=${CNX_FUZZ_WORK_DIR:-$BUILD_DIR}
TARGETS=(safetensors pt checkpoint shard_index tar image fashion_mnist config coordinator_rpc state_store)
say() { printf '\033[1m[fuzz]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[fuzz] FAILED:\033[0m %s\n' "$*" >&2; exit 1; }

mode=ci
case "${1:-}" in
  --campaign) mode=campaign; SECONDS_EACH=${2:?--campaign needs SECONDS}; shift 2
              [ $# -gt 0 ] && TARGETS=("$@") ;;
  --build-only) mode=build ;;
  --regen-corpus) mode=regen ;;
  --reproduce) mode=reproduce; [ $# -eq 3 ] || die "usage: scripts/fuzz.sh --reproduce TARGET FILE" ;;
  "") ;;
  -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
  *) die "unknown argument '$1' (see scripts/fuzz.sh --help)" ;;
esac
case "$SECONDS_EACH" in ''|*[!0-9]*) die "SECONDS must be a whole number, got '$SECONDS_EACH'" ;; esac

command -v clang++ >/dev/null || die "clang++ not found (scripts/setup.sh installs clang and libclang-rt-14-dev)"
start=$(date +%s)
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  say "configuring $BUILD_DIR (clang, -DCNX_FUZZ=ON)"
  mkdir -p "$BUILD_DIR"
  CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCNX_FUZZ=ON \
    >"$BUILD_DIR/configure.log" 2>&1 || { tail -40 "$BUILD_DIR/configure.log" >&2; die "cmake configure"; }
fi
build_targets=(cnx_fuzz_all)
[ "$mode" = regen ] && build_targets=(cnx-fuzz-corpus)
if [ "${CNX_FUZZ_NO_BUILD:-0}" != 1 ]; then
  say "building ${build_targets[*]} with -j$JOBS"
  cmake --build "$BUILD_DIR" -j"$JOBS" --target "${build_targets[@]}" >"$BUILD_DIR/build.log" 2>&1 \
    || { grep -E 'error|Error' "$BUILD_DIR/build.log" | head -40 >&2; die "build (full log: $BUILD_DIR/build.log)"; }
  say "build done in $(( $(date +%s) - start )) s"
fi

# Findings abort with a report; LeakSanitizer runs at exit and per input.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1:detect_stack_use_after_return=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Bounds of one execution: a hang or an allocation beyond these is a finding.
LIMITS=(-timeout=25 -rss_limit_mb=3072 -malloc_limit_mb=1024)
SEED=()
if [ -n "${CNX_FUZZ_SEED:-}" ]; then SEED=(-seed="$CNX_FUZZ_SEED")
elif [ "$mode" = ci ]; then SEED=(-seed=1); fi

binary() { echo "$BUILD_DIR/fuzz/fuzz_$1"; }

case "$mode" in
  build) exit 0 ;;
  regen)
    say "rewriting fuzz/corpus/ with $BUILD_DIR/fuzz/cnx-fuzz-corpus"
    "$BUILD_DIR/fuzz/cnx-fuzz-corpus" fuzz/corpus . || die "cnx-fuzz-corpus"
    exit 0 ;;
  reproduce)
    [ -f "fuzz/lsan/$2.supp" ] && export LSAN_OPTIONS="suppressions=fuzz/lsan/$2.supp:print_suppressions=0"
    exec "$(binary "$2")" "${LIMITS[@]}" "$3" ;;
esac

nice_cmd=()
[ -n "${CNX_FUZZ_NICE:-}" ] && nice_cmd=(nice -n "$CNX_FUZZ_NICE")
summary="$WORK_DIR/fuzz-summary.tsv"
mkdir -p "$WORK_DIR"
printf 'target\tseconds\tcpu_s\texecs\texecs_per_s\tcov\tft\tcorpus\tpeak_rss_mb\tresult\n' >"$summary"
status=0
for t in "${TARGETS[@]}"; do
  bin=$(binary "$t")
  [ -x "$bin" ] || die "no fuzz target '$t' ($bin)"
  [ -d "fuzz/corpus/$t" ] || die "no seed corpus fuzz/corpus/$t"
  work="$WORK_DIR/corpus/$t" art="$WORK_DIR/artifacts/$t" log="$WORK_DIR/logs/$t.log"
  mkdir -p "$work" "$art" "$(dirname "$log")"
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  lsan=${LSAN_OPTIONS:-}
  [ -f "fuzz/lsan/$t.supp" ] && lsan="suppressions=fuzz/lsan/$t.supp:print_suppressions=0${lsan:+:$lsan}"
  say "$t: ${SECONDS_EACH} s from fuzz/corpus/$t ($(ls "fuzz/corpus/$t" | wc -l) seeds)"
  t0=$(date +%s)
  rc=0
  TIMEFORMAT='%U %S'
  { time LSAN_OPTIONS="$lsan" "${nice_cmd[@]}" "$bin" "$work" "fuzz/corpus/$t" "${dict[@]}" "${LIMITS[@]}" "${SEED[@]}" \
      -max_total_time="$SECONDS_EACH" -print_final_stats=1 -artifact_prefix="$art/" >"$log" 2>&1 || rc=$?; } 2>"$log.time"
  cpu=$(tail -1 "$log.time" | awk '{printf "%.1f", $1 + $2}')
  secs=$(( $(date +%s) - t0 ))
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last"); ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log"); eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
  result=ok
  if [ $rc -ne 0 ]; then
    result=FINDING status=1
    found=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    printf '\033[1;31m[fuzz] %s: finding (exit %d)\033[0m\n' "$t" "$rc" >&2
    grep -E 'ERROR: |CONTRACT VIOLATION|runtime error|SUMMARY|terminate called|what\(\)' "$log" | head -12 >&2 || true
    sed -n '/^==[0-9]*==ERROR\|CONTRACT VIOLATION/,/^SUMMARY/p' "$log" | head -60 >&2 || true
    if [ -n "$found" ]; then
      say "reproducer: $found ($(stat -c %s "$found") bytes); first bytes:"
      head -c 256 "$found" | od -A d -c | head -12 >&2
      say "reproduce: scripts/fuzz.sh --reproduce $t $found"
    fi
    say "full log: $log"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$secs" "$cpu" "${execs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "${rss:-?}" "$result" >>"$summary"
done
say "summary ($summary):"
column -t -s $'\t' "$summary" >&2 || cat "$summary" >&2
[ $status -eq 0 ] && say "no findings ($(( $(date +%s) - start )) s in all)" || say "FINDINGS: see above"
exit $status
