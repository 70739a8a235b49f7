#include "common/cpu_features.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define CNX_X86 1
#endif

namespace cnx::cpu {

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::kSse:
      return "SSE2";
    case SimdLevel::kAvx:
      return "AVX";
    case SimdLevel::kAvx2:
      return "AVX2+FMA";
    case SimdLevel::kAvx512:
      return "AVX-512";
  }
  return "?";
}

namespace {

#ifdef CNX_X86
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};
Regs cpuid(unsigned leaf, unsigned sub = 0) {
  Regs r;
  __cpuid_count(leaf, sub, r.a, r.b, r.c, r.d);
  return r;
}
uint64_t xgetbv0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
#endif

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t");
  const auto e = s.find_last_not_of(" \t\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

double proc_cpuinfo_mhz() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("cpu MHz", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return std::atof(line.c_str() + colon + 1);
    }
  }
  return 0;
}

}  // namespace

CpuFeatures detect_cpu() {
  CpuFeatures f;
#ifdef CNX_X86
  const unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf == 0) return f;
  Regs r0 = cpuid(0);
  char vendor[13] = {};
  std::memcpy(vendor, &r0.b, 4);
  std::memcpy(vendor + 4, &r0.d, 4);
  std::memcpy(vendor + 8, &r0.c, 4);
  f.vendor = vendor;
  const Regs r1 = cpuid(1);
  const int base_family = (r1.a >> 8) & 0xf, base_model = (r1.a >> 4) & 0xf;
  f.family = base_family == 0xf ? base_family + static_cast<int>((r1.a >> 20) & 0xff) : base_family;
  f.model =
      (base_family == 6 || base_family == 0xf) ? base_model + static_cast<int>(((r1.a >> 16) & 0xf) << 4) : base_model;
  f.sse2 = (r1.d >> 26) & 1;
  const bool osxsave = (r1.c >> 27) & 1;
  f.avx = (r1.c >> 28) & 1;
  f.fma = (r1.c >> 12) & 1;
  if (osxsave) {
    const uint64_t xcr0 = xgetbv0();
    f.os_avx = (xcr0 & 0x6) == 0x6;
    f.os_avx512 = f.os_avx && (xcr0 & 0xe0) == 0xe0;
  }
  if (max_leaf >= 7) {
    const Regs r7 = cpuid(7, 0);
    f.avx2 = (r7.b >> 5) & 1;
    f.avx512f = (r7.b >> 16) & 1;
    f.avx512dq = (r7.b >> 17) & 1;
    f.avx512cd = (r7.b >> 28) & 1;
    f.avx512bw = (r7.b >> 30) & 1;
    f.avx512vl = (r7.b >> 31) & 1;
    f.amx_bf16 = (r7.d >> 22) & 1;
    if (r7.a >= 1) f.avx512_bf16 = (cpuid(7, 1).a >> 5) & 1;
  }
  if (max_leaf >= 0x16) {
    const Regs r16 = cpuid(0x16);
    f.base_mhz = r16.a & 0xffff;
    f.max_mhz = r16.b & 0xffff;
  }
  if (__get_cpuid_max(0x80000000, nullptr) >= 0x80000004) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      const Regs r = cpuid(0x80000002 + i);
      std::memcpy(brand + 16 * i, &r.a, 4);
      std::memcpy(brand + 16 * i + 4, &r.b, 4);
      std::memcpy(brand + 16 * i + 8, &r.c, 4);
      std::memcpy(brand + 16 * i + 12, &r.d, 4);
    }
    f.brand = trim(brand);
  }
#endif
  f.cpuinfo_mhz = proc_cpuinfo_mhz();
  return f;
}

SimdLevel simd_level(const CpuFeatures& c) {
  if (c.avx512f && c.avx512cd && c.avx512bw && c.avx512dq && c.avx512vl && c.os_avx512 && c.avx2 && c.fma)
    return SimdLevel::kAvx512;
  if (c.avx2 && c.fma && c.os_avx) return SimdLevel::kAvx2;
  if (c.avx && c.os_avx) return SimdLevel::kAvx;
  return SimdLevel::kSse;
}

std::string describe_simd(const CpuFeatures& c) {
  std::string s = simd_level_name(simd_level(c));
  if (c.avx512_bf16) s += " +bf16";
  if (c.amx_bf16) s += " +AMX";
  return s;
}

double clock_from_brand(const std::string& brand) {
  static const std::regex re(R"(([0-9]+(\.[0-9]+)?)\s*([GM])Hz)", std::regex::icase);
  std::smatch m;
  if (!std::regex_search(brand, m, re)) return 0;
  const double v = std::atof(m[1].str().c_str());
  return (m[3].str() == "M" || m[3].str() == "m") ? v / 1000.0 : v;
}

int fp32_flop_per_cycle(const CpuFeatures& c, std::string* why) {
  auto say = [&](const char* w) {
    if (why) *why = w;
  };
  const bool amd = c.vendor == "AuthenticAMD" || c.vendor == "HygonGenuine";
  switch (simd_level(c)) {
    case SimdLevel::kAvx512:
      if (amd && c.family == 0x19) {
        say("AVX-512 on Zen 4's two 256-bit FMA pipes");
        return 32;
      }
      if (amd) {
        say("AVX-512 with two 512-bit FMA units (Zen 5 server/desktop; mobile Zen 5 has 256-bit pipes: 32)");
        return 64;
      }
      say("AVX-512 with two 512-bit FMA units assumed (Xeon Gold/Platinum/W and later server cores; some "
          "Silver/Bronze and client cores have one: 32)");
      return 64;
    case SimdLevel::kAvx2:
      if (amd && (c.family == 0x17 && c.model < 0x30)) {
        say("AVX2 on Zen 1's two 128-bit FMA pipes");
        return 16;
      }
      if (amd && c.family == 0x18) {
        say("AVX2 on Hygon Dhyana's (Zen 1) two 128-bit FMA pipes");
        return 16;
      }
      say("AVX2 with two 256-bit FMA units");
      return 32;
    case SimdLevel::kAvx:
      say("AVX without FMA: one 256-bit add and one 256-bit multiply per cycle");
      return 16;
    case SimdLevel::kSse:
      say("SSE: one 128-bit add and one 128-bit multiply per cycle");
      return 8;
  }
  return 8;
}

double nominal_ghz(const CpuFeatures& c, std::string* why) {
  std::ostringstream w;
  double ghz = 0;
  if (c.base_mhz > 0) {
    ghz = c.base_mhz / 1000.0;
    w << "base clock from cpuid leaf 0x16";
  } else if (const double b = clock_from_brand(c.brand); b > 0) {
    ghz = b;
    w << "base clock from the model name";
  } else if (c.cpuinfo_mhz > 0) {
    ghz = c.cpuinfo_mhz / 1000.0;
    w << "current clock from /proc/cpuinfo";
  } else {
    w << "clock unknown";
  }
  if (why) *why = w.str();
  return ghz;
}

PeakEstimate fp32_peak(const CpuFeatures& c, int cores) {
  PeakEstimate p;
  std::string why_flop, why_clock;
  p.flop_per_cycle = fp32_flop_per_cycle(c, &why_flop);
  p.ghz = nominal_ghz(c, &why_clock);
  p.cores = std::max(cores, 1);
  p.gflops = p.cores * p.ghz * p.flop_per_cycle;
  std::ostringstream a;
  a.precision(3);
  a << p.cores << " core(s) x " << p.ghz << " GHz (" << why_clock
    << "; turbo and AVX-512 licence clocks not modelled) x " << p.flop_per_cycle << " FLOP/cycle (" << why_flop << ")";
  p.assumption = a.str();
  return p;
}

std::string judge_ceiling(double ceiling, double peak, double fma, double min_share) {
  if (peak <= 0 || ceiling >= min_share * peak) return "";
  std::ostringstream s;
  s.precision(2);
  s << "the measured GEMM ceiling is " << std::fixed << ceiling / peak << " of the theoretical peak (below "
    << min_share << ")";
  if (fma > 0) {
    s << " and " << ceiling / fma << " of the measured FMA rate (" << fma / peak << " of peak)";
    if (ceiling >= min_share * fma) {
      s << ": the cores themselves run below clock x FLOP/cycle (shared or throttled CPU, or fewer FMA units than "
           "assumed), not the BLAS kernels";
      return s.str();
    }
  }
  s << ": the BLAS kernels run far below this CPU's FMA rate (a fallback kernel set? see the BLAS line; or the "
       "load changed between the two measurements)";
  return s.str();
}

// ---------------------------------------------------------------------------
// FMA throughput: 12-16 independent accumulator chains (latency 4 x 2 ports
// needs >= 8), all in registers.
// ---------------------------------------------------------------------------
namespace {

#ifdef CNX_X86
__attribute__((target("avx512f"))) float fma_loop_avx512(int64_t iters) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(0.01f * i);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float out[16];
  _mm512_store_ps(out, s);
  return out[0] + out[15];
}
__attribute__((target("avx2,fma"))) float fma_loop_avx2(int64_t iters) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.01f * i);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  alignas(32) float out[8];
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  _mm256_store_ps(out, s);
  return out[0] + out[7];
}
#endif
// Portable: a multiply and an add per element (the compiler vectorises the
// 4-wide rows with SSE).
float mul_add_loop(int64_t iters) {
  float acc[12][4];
  for (int i = 0; i < 12; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.01f * (i + j);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[i][j] = acc[i][j] * 0.999999f + 1e-7f;
  }
  float s = 0;
  for (auto& row : acc)
    for (float v : row) s += v;
  return s;
}

}  // namespace

double measure_fma_gflops(int threads, double seconds) {
  threads = std::max(threads, 1);
  const SimdLevel level = simd_level(detect_cpu());
  // FLOP per iteration of each loop.
  double flop_per_iter = 12 * 4 * 2;
  std::function<float(int64_t)> loop = mul_add_loop;
#ifdef CNX_X86
  if (level == SimdLevel::kAvx512) {
    loop = fma_loop_avx512;
    flop_per_iter = 16 * 16 * 2;
  } else if (level == SimdLevel::kAvx2) {
    loop = fma_loop_avx2;
    flop_per_iter = 12 * 8 * 2;
  }
#endif
  // Calibrate the iteration count on one thread (also warms the clock up).
  int64_t iters = 1 << 16;
  double dt = 0;
  std::atomic<float> sink{0};
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    sink = sink + loop(iters);
    dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt > seconds / 4 || iters > (int64_t{1} << 34)) break;
    iters *= 2;
  }
  iters = std::max<int64_t>(1, static_cast<int64_t>(iters * (seconds / std::max(dt, 1e-6))));
  std::vector<std::thread> pool;
  std::vector<double> secs(threads, 0);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const auto t0 = std::chrono::steady_clock::now();
      const float v = loop(iters);
      secs[t] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      sink = sink + v;
    });
  }
  for (auto& th : pool) th.join();
  const double slowest = *std::max_element(secs.begin(), secs.end());
  return threads * static_cast<double>(iters) * flop_per_iter / slowest * 1e-9 + 0.0 * sink.load();
}

}  // namespace cnx::cpu
