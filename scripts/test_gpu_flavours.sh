#!/usr/bin/env bash
# Builds both GPU flavours against the GPU machine's LibTorch (PyTorch 2.11.0
# from PyPI, CUDA 13.0; scripts/setup.sh puts it in deps/torch-cu130) with the
# CUDA kernels for Hopper (TORCH_CUDA_ARCH_LIST=9.0), so that neither can rot
# unnoticed on a machine without a GPU. Called by scripts/test.sh.
#
#   (a) gpu: the GPU machine's trainer (docs/gpu.md): CUDA kernels + NCCL, no
#       MPI, no gRPC/coordinator (ranks meet through the rendezvous store), no
#       GoogleTest (tests/minitest), configured and built by
#       `scripts/gpu_check.sh --dry-run` exactly as on the GPU machine
#       (every gpu-labelled test, cnx-fcmae-step-bench, cnx-worker, cnx-eval,
#       cnx-finetune), whose dry run also configures against the Debian
#       packages the GPU machine gets (scripts/gpu_deps.sh) and runs every
#       cnx-worker command line of the check up to its device test. Then the
#       CPU unit tests of that build (our code on PyTorch 2.11's CPU ops), the
#       gpu tests (they skip without a GPU), and a check that each of them
#       FAILS under CNX_REQUIRE_GPU=1 (a missing device cannot pass there).
#   (b) cluster: the cluster node (deploy/docker/Dockerfile.cuda): MPI + gRPC
#       + coordinator + worker + CUDA + NCCL. Builds the programs and one test
#       that puts LibTorch 2.11, gRPC/Protobuf and Open MPI in one process
#       (worker_lease_source_test), runs it and the programs' --help.
#
#   CNX_GPU_FLAVOURS="gpu cluster"   which to build (default, or 1: both)
#   CNX_JOBS=n, extra args -> ctest of flavour (a)'s CPU tests
# Needs nvcc (CUDA 13.0 toolkit: CUDACXX, else PATH, else /usr/local/cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=${CNX_JOBS:-$(nproc)}
FLAVOURS=${CNX_GPU_FLAVOURS:-gpu cluster}
[ "$FLAVOURS" = 1 ] && FLAVOURS="gpu cluster"
say() { printf '\033[1m[gpu-flavours]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[gpu-flavours] FAILED:\033[0m %s\n' "$*" >&2; exit 1; }

NVCC=${CUDACXX:-$(command -v nvcc || true)}
[ -n "$NVCC" ] || NVCC=/usr/local/cuda/bin/nvcc
[ -x "$NVCC" ] || die "no nvcc (CUDA 13.0 toolkit): set CUDACXX or put nvcc on PATH (CNX_SKIP_GPU_FLAVOURS=1 scripts/test.sh skips this step)"
[ -f deps/torch-cu130/.complete ] || CNX_SKIP_APT=1 CNX_TORCH_CU130=only scripts/setup.sh
TORCH_PREFIX="$ROOT/deps/torch-cu130/torch"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
COMMON=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=$TORCH_PREFIX" "-DCMAKE_CUDA_COMPILER=$NVCC"
  -DCNX_WITH_CUDA=ON -DCNX_WITH_NCCL=ON -DCNX_REQUIRE_NCCL=ON -DCNX_BUILD_BENCH=OFF)  # (b); (a): gpu_check.sh

# configure NAME DIR EXPECT ARGS...: configures and checks the summary line.
configure() {
  local name=$1 dir=$2 expect=$3
  shift 3
  mkdir -p "$dir"
  say "$name: configuring $dir against LibTorch 2.11.0 (CUDA 13.0, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
  cmake -S . -B "$dir" "${GEN[@]}" "${COMMON[@]}" "$@" >"$dir/configure.log" 2>&1 \
    || { tail -40 "$dir/configure.log" >&2; die "$name: cmake configure (log: $dir/configure.log)"; }
  grep -q "$expect" "$dir/configure.log" \
    || { grep 'cnx:' "$dir/configure.log" >&2; die "$name: configure did not give '$expect'"; }
}

# timed NAME CMD...: runs CMD, prints its wall time.
timed() {
  local name=$1 s=$(date +%s)
  shift
  "$@" || die "$name (rerun: $*)"
  say "$name: $(( $(date +%s) - s )) s"
}

for flavour in $FLAVOURS; do
  case "$flavour" in
  gpu)
    dir=${CNX_GPU_BUILD_DIR:-build-gpu}
    # Configure + build exactly as the GPU machine does, and the dry run of
    # the whole check (everything up to the first device use).
    s=$(date +%s)
    mkdir -p "$dir"
    CNX_GPU_BUILD_DIR="$dir" CNX_TORCH_PREFIX="$TORCH_PREFIX" CUDACXX="$NVCC" CNX_JOBS="$JOBS" \
      scripts/gpu_check.sh --dry-run "$dir/gpu_check_dry_run" >"$dir/gpu_check_dry_run.log" 2>&1 \
      || { cat "$dir/gpu_check_dry_run.log" >&2; die "(a) gpu: scripts/gpu_check.sh --dry-run (log: $dir/gpu_check_dry_run/)"; }
    grep -E '^(ok|skipped|FAILED) ' "$dir/gpu_check_dry_run/summary.txt" >&2
    say "(a) gpu: configure + build + gpu_check.sh --dry-run: $(( $(date +%s) - s )) s"
    # Our code on PyTorch 2.11's CPU ops. test_fcmae is left out: the main
    # build runs the same test (same code, LibTorch 1.13) and it is the longest.
    timed "(a) gpu: CPU unit tests" \
      ctest --test-dir "$dir" -L unit -E '^test_fcmae$' --output-on-failure --timeout 600 -j"${CNX_TEST_JOBS:-1}" "$@"
    gpu_tests=$(ctest --test-dir "$dir" -L gpu -N | awk '/Test +#/{print $3}')
    [ "$(echo "$gpu_tests" | wc -w)" -ge 3 ] || die "(a) gpu: expected the gpu-labelled tests, found: $gpu_tests"
    timed "(a) gpu: gpu tests without a GPU (they skip)" ctest --test-dir "$dir" -L gpu --output-on-failure --timeout 300
    for t in $gpu_tests; do
      if CNX_REQUIRE_GPU=1 ctest --test-dir "$dir" -R "^$t\$" --timeout 300 >"$dir/require_gpu_$t.log" 2>&1; then
        die "(a) gpu: $t passed under CNX_REQUIRE_GPU=1 without a GPU (it must fail; log: $dir/require_gpu_$t.log)"
      fi
    done
    say "(a) gpu: each of $(echo $gpu_tests) fails under CNX_REQUIRE_GPU=1 without a GPU, as it must"
    ;;
  cluster)
    dir=${CNX_CLUSTER_BUILD_DIR:-build-cluster}
    configure "(b) cluster" "$dir" 'mpi=ON coordinator=ON cuda=ON nccl=ON torch=2.11'
    timed "(b) cluster: build" cmake --build "$dir" -j"$JOBS" --target cnx-worker cnx-coordinator cnx-ctl \
      cnx-eval cnx-finetune cnx-export cnx-make-shards worker_lease_source_test
    timed "(b) cluster: LibTorch 2.11 + gRPC/Protobuf + Open MPI in one process" \
      ctest --test-dir "$dir" -R '^worker_lease_source_test$' --output-on-failure --timeout 300
    for p in worker/cnx-worker coordinator/cnx-coordinator tools/eval/cnx-eval; do
      "$dir/$p" --help >"$dir/help.log" 2>&1 || { cat "$dir/help.log" >&2; die "(b) cluster: $p --help"; }
    done
    say "(b) cluster: cnx-worker, cnx-coordinator, cnx-eval start (--help)"
    ;;
  *) die "CNX_GPU_FLAVOURS: unknown flavour '$flavour' (gpu, cluster)" ;;
  esac
done
say "done: $FLAVOURS"
