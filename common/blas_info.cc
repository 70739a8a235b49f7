#include "common/blas_info.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace cnx::blas {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

template <class Fn>
Fn lookup(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}

}  // namespace

BlasInfo query_blas() {
  BlasInfo info;
  info.library = "unknown";
  if (void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_")) {
    Dl_info dl{};
    if (dladdr(sgemm, &dl) && dl.dli_fname) {
      char real[PATH_MAX];
      info.path = realpath(dl.dli_fname, real) ? real : dl.dli_fname;
    }
  } else {
    info.library = "none";  // no BLAS loaded in this process
  }
  using StrFn = char* (*)();
  if (auto config = lookup<StrFn>("openblas_get_config")) {
    info.library = "OpenBLAS";
    info.config = config();
    std::istringstream words(info.config);
    std::string name, version;
    words >> name >> version;
    if (lower(name) == "openblas") info.version = version;
    if (auto core = lookup<StrFn>("openblas_get_corename")) info.core = core();
    return info;
  }
  using BlisStr = const char* (*)();
  if (auto blis = lookup<BlisStr>("bli_info_get_version_str")) {
    info.library = "BLIS";
    info.version = blis();
    if (auto arch_id = lookup<int (*)()>("bli_arch_query_id")) {
      if (auto arch_name = lookup<const char* (*)(int)>("bli_arch_string")) info.core = arch_name(arch_id());
    }
    return info;
  }
  if (auto mkl = lookup<void (*)(char*, int)>("MKL_Get_Version_String")) {
    char buf[256] = {};
    mkl(buf, sizeof buf - 1);
    info.library = "MKL";
    info.version = buf;
    return info;
  }
  return info;
}

bool openblas_core_level(const std::string& core, cpu::SimdLevel* level) {
  const std::string c = lower(core);
  if (c.empty()) return false;
  using L = cpu::SimdLevel;
  L l = L::kSse;
  if (c == "skylakex" || c == "cooperlake" || c == "sapphirerapids") {
    l = L::kAvx512;
  } else if (c == "haswell" || c == "zen") {
    l = L::kAvx2;
  } else if (c == "sandybridge" || c == "bulldozer" || c == "piledriver" || c == "steamroller" || c == "excavator") {
    l = L::kAvx;
  }
  *level = l;
  return true;
}

std::string better_openblas_coretype(const std::string& core, const cpu::CpuFeatures& cpu) {
  cpu::SimdLevel have;
  if (!openblas_core_level(core, &have)) return "";
  const cpu::SimdLevel can = cpu::simd_level(cpu);
  if (static_cast<int>(have) >= static_cast<int>(can)) return "";
  switch (can) {
    case cpu::SimdLevel::kAvx512:
      return "SKYLAKEX";
    case cpu::SimdLevel::kAvx2:
      return "HASWELL";
    case cpu::SimdLevel::kAvx:
      return "SANDYBRIDGE";
    case cpu::SimdLevel::kSse:
      return "";
  }
  return "";
}

AutoDecision decide_coretype(const BlasInfo& blas, const cpu::CpuFeatures& cpu, const std::string& user_coretype,
                             const std::string& auto_env, const std::string& already, bool test_fallback) {
  AutoDecision d;
  if (blas.library != "OpenBLAS") return d;
  const std::string better = better_openblas_coretype(blas.core, cpu);
  if (better.empty()) return d;
  d.fallback = true;
  std::ostringstream why;
  why << "OpenBLAS runs its " << blas.core << " kernels on a CPU with " << cpu::simd_level_name(cpu::simd_level(cpu))
      << " (family " << cpu.family << " model " << cpu.model << ")";
  if (!already.empty()) {
    why << " although cnx chose OPENBLAS_CORETYPE=" << already
        << " (this OpenBLAS lacks those kernels?); GEMMs run several times slower than they could";
  } else if (!user_coretype.empty() && !test_fallback) {
    why << " because OPENBLAS_CORETYPE=" << user_coretype << " is set; unset it or set OPENBLAS_CORETYPE=" << better
        << " for full speed";
  } else if (auto_env == "0") {
    why << "; CNX_BLAS_AUTO=0 keeps them; set OPENBLAS_CORETYPE=" << better << " for full speed";
  } else {
    d.coretype = better;
    why << ": restarting with OPENBLAS_CORETYPE=" << better << " (CNX_BLAS_AUTO=0 disables this)";
  }
  d.reason = why.str();
  return d;
}

std::string describe_compute_environment() {
  const BlasInfo b = query_blas();
  const cpu::CpuFeatures c = cpu::detect_cpu();
  std::ostringstream s;
  s << "BLAS " << b.library;
  if (!b.version.empty()) s << " " << b.version;
  if (!b.core.empty()) s << ", kernels " << b.core;
  if (!b.path.empty()) s << " (" << b.path << ")";
  const std::string chosen = env("CNX_BLAS_AUTO_CHOSEN");
  if (!chosen.empty()) s << ", chosen by cnx: " << chosen;
  s << "; CPU " << (c.brand.empty() ? "unknown" : c.brand) << " (" << c.vendor << " family " << c.family << " model "
    << c.model << ", " << cpu::describe_simd(c) << ")";
  return s.str();
}

std::string init_compute_environment(const char* program, int argc, char** argv) {
  (void)argc;
  const BlasInfo blas = query_blas();
  const cpu::CpuFeatures cpu = cpu::detect_cpu();
  const AutoDecision d = decide_coretype(blas, cpu, env("OPENBLAS_CORETYPE"), env("CNX_BLAS_AUTO"),
                                         env("CNX_BLAS_AUTO_CHOSEN"), env("CNX_BLAS_TEST_FALLBACK") == "1");
  if (!d.coretype.empty()) {
    std::fprintf(stderr, "%s: %s\n", program, d.reason.c_str());
    std::fflush(stdout);
    std::fflush(stderr);
    const std::string chosen = d.coretype + " (OpenBLAS had picked " + blas.core + ")";
    setenv("OPENBLAS_CORETYPE", d.coretype.c_str(), 1);
    setenv("CNX_BLAS_AUTO_CHOSEN", chosen.c_str(), 1);
    execv("/proc/self/exe", argv);
    // Only reached when the exec failed: go on with the kernels we have.
    std::fprintf(stderr, "%s: re-exec for OPENBLAS_CORETYPE=%s failed (%s); continuing with %s kernels\n", program,
                 d.coretype.c_str(), std::strerror(errno), blas.core.c_str());
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("CNX_BLAS_AUTO_CHOSEN");
  }
  const std::string line = describe_compute_environment();
  std::fprintf(stderr, "%s: %s\n", program, line.c_str());
  if (d.fallback && d.coretype.empty()) std::fprintf(stderr, "%s: WARNING: %s\n", program, d.reason.c_str());
  return line;
}

}  // namespace cnx::blas
