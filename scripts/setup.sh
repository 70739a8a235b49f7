#!/usr/bin/env bash
# Installs every Debian 12 package the project needs, then configures and
# builds into build/. Idempotent: packages already present are not
# reinstalled and the build is incremental (ccache makes clean builds fast).
#
#   scripts/setup.sh            install + configure + build
#   CNX_SKIP_APT=1 scripts/setup.sh   only configure + build
#   CNX_BUILD_DIR=dir, CNX_JOBS=n     override the build folder / parallelism
#   CNX_BUILD_TARGETS="a b"           build only these targets (the demo builds its
#                                     programs only, not the tests and benchmarks)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[setup] FAILED:\033[0m %s\n' "$*" >&2; exit 1; }

PACKAGES=(
  build-essential cmake ccache git pkg-config ca-certificates
  libtorch-dev libopenblas0-openmp           # LibTorch; OpenBLAS replaces reference BLAS (~40x matmul)
  libopenmpi-dev openmpi-bin                 # workers under mpirun
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libyaml-cpp-dev libsqlite3-dev sqlite3 libcivetweb-dev libspdlog-dev libfmt-dev libcli11-dev
  nlohmann-json3-dev libturbojpeg0-dev libpng-dev zlib1g-dev libarchive-dev libssl-dev openssl
  libgtest-dev libgmock-dev libbenchmark-dev
  prometheus                                 # promtool + a real server for the metrics tests
  dataset-fashion-mnist                      # the demo dataset
  python3 curl procps clang-format
  iproute2 nftables                          # the namespace cluster tests (tests/cluster)
  python3-torch                              # PyTorch reference for the equivalence tests (tests only)
  libdnnl-dev libxsmm-dev libblis-dev        # optional GEMM libraries compared in bench/model/small_gemm_bench
)

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || die "not root and no sudo: install ${PACKAGES[*]} yourself, then rerun with CNX_SKIP_APT=1"
  SUDO=sudo
fi

if [ "${CNX_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${#missing[@]} Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q || die "apt-get update"
    if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
      for p in "${missing[@]}"; do
        $SUDO apt-get install -y -q --no-install-recommends "$p" >/dev/null 2>&1 || die "apt-get install $p"
      done
    fi
  else
    say "all ${#PACKAGES[@]} Debian packages already installed"
  fi
fi

# LibTorch links libblas.so.3; make sure the alternative points at OpenBLAS.
if command -v update-alternatives >/dev/null; then
  blas=$(update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | awk '/^Value:/{print $2}')
  case "$blas" in
    *openblas*) ;;
    "") ;;
    *) say "libblas.so.3 -> $blas; switching to OpenBLAS"
       alt=$(update-alternatives --list libblas.so.3-x86_64-linux-gnu | grep openblas | head -1)
       [ -n "$alt" ] && $SUDO update-alternatives --set libblas.so.3-x86_64-linux-gnu "$alt" ;;
  esac
fi

BUILD_DIR=${CNX_BUILD_DIR:-build}
JOBS=${CNX_JOBS:-$(nproc)}
say "configuring into $BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${CNX_CMAKE_ARGS:-} >"$BUILD_DIR.configure.log" 2>&1 \
  || { tail -40 "$BUILD_DIR.configure.log" >&2; die "cmake configure (full log: $BUILD_DIR.configure.log)"; }
TARGET_ARGS=()
for t in ${CNX_BUILD_TARGETS:-}; do TARGET_ARGS+=(--target "$t"); done
say "building ${CNX_BUILD_TARGETS:-everything} with -j$JOBS (first build takes a while: LibTorch translation units are heavy)"
start=$(date +%s)
cmake --build "$BUILD_DIR" -j"$JOBS" "${TARGET_ARGS[@]}" || die "build (rerun 'cmake --build $BUILD_DIR' to see the error)"
say "build done in $(( $(date +%s) - start )) s"
