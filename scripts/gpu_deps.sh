#!/usr/bin/env bash
# The libraries the GPU machine's trainer needs beyond PyTorch (yaml-cpp,
# spdlog/fmt, CLI11, nlohmann-json, libjpeg-turbo, libpng, libarchive,
# civetweb, OpenSSL, zlib) for a machine that has none of them and can fetch
# nothing: Debian 12's packages, downloaded here and unpacked there into a
# project-local prefix that the build then uses (headers, CMake/pkg-config
# files, libraries, and the shared libraries they load in turn).
#
#   scripts/gpu_deps.sh fetch  [DEBS]          here: apt-get download into DEBS
#                                              (default .gpu-deps/debs, ~19 MB)
#   scripts/gpu_deps.sh unpack [DEBS] [PREFIX] there: dpkg -x each into PREFIX
#                                              (default .gpu-deps/prefix), point the
#                                              pkg-config files at it; prints PREFIX/usr
#
# .gpu-deps/ is ignored by git: a device call names it in `carry`
# (docs/gpu.md). Nothing is installed on either machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# -dev packages (headers, CMake/pkg-config files, the .so links) and every
# shared library they load that is not glibc, libstdc++ or libgcc
# (libarchive: nettle, acl, lzma, zstd, lz4, bz2, xml2 -> icu).
PACKAGES=(
  libyaml-cpp-dev libyaml-cpp0.7
  libspdlog-dev libspdlog1.10 libfmt-dev libfmt9
  libcli11-dev nlohmann-json3-dev
  libturbojpeg0-dev libturbojpeg0 libjpeg62-turbo-dev libjpeg62-turbo libpng-dev libpng16-16 zlib1g-dev zlib1g
  libarchive-dev libarchive13 libnettle8 libacl1 liblzma5 libzstd1 liblz4-1 libbz2-1.0 libxml2 libicu72
  libcivetweb-dev libcivetweb1
  libssl-dev libssl3
)

die() { printf '\033[1;31m[gpu_deps] FAILED:\033[0m %s\n' "$*" >&2; exit 1; }
say() { printf '\033[1m[gpu_deps]\033[0m %s\n' "$*" >&2; }

case "${1:-}" in
fetch)
  debs=${2:-.gpu-deps/debs}
  mkdir -p "$debs"
  debs=$(cd "$debs" && pwd)
  missing=()
  for p in "${PACKAGES[@]}"; do
    compgen -G "$debs/${p}_*.deb" >/dev/null || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "downloading ${#missing[@]} Debian packages into $debs"
    # apt-get download writes into the current folder; as root it warns that
    # the _apt user cannot write there (harmless).
    (cd "$debs" && apt-get download -q "${missing[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) \
      || die "apt-get download ${missing[*]}"
  fi
  for p in "${PACKAGES[@]}"; do
    compgen -G "$debs/${p}_*.deb" >/dev/null || die "$p: no .deb in $debs"
  done
  say "$(ls "$debs"/*.deb | wc -l) packages, $(du -sh "$debs" | cut -f1) in $debs"
  ;;
unpack)
  debs=${2:-.gpu-deps/debs}
  prefix=${3:-.gpu-deps/prefix}
  compgen -G "$debs/*.deb" >/dev/null || die "no .deb files in $debs (run 'scripts/gpu_deps.sh fetch' where apt-get works)"
  command -v dpkg >/dev/null || die "dpkg not found: unpack the .deb files (ar + tar) into $prefix yourself"
  mkdir -p "$prefix"
  prefix=$(cd "$prefix" && pwd)
  if [ ! -f "$prefix/.complete" ] || [ -n "$(find "$debs" -name '*.deb' -newer "$prefix/.complete")" ]; then
    for d in "$debs"/*.deb; do dpkg -x "$d" "$prefix" || die "dpkg -x $d"; done
    # pkg-config files name /usr: point them at the prefix.
    find "$prefix/usr" -name '*.pc' -exec sed -i -E "s#^(prefix|exec_prefix|libdir|includedir)=/usr#\\1=$prefix/usr#" {} +
    touch "$prefix/.complete"
  fi
  echo "$prefix/usr"
  ;;
*)
  echo "usage: scripts/gpu_deps.sh fetch [DEBS] | unpack [DEBS] [PREFIX]" >&2
  exit 2
  ;;
esac
