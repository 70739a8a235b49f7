#pragma once
// What the CPU can do: its vector units (cpuid, with the OS's register-state
// support from xgetbv), its clock and the theoretical fp32 peak they give.
// The benchmarks print that peak beside their measured GEMM ceiling, so a
// ceiling measured with fallback BLAS kernels cannot pass for the machine's
// speed; common/blas_info.h uses the SIMD level to tell whether OpenBLAS has
// fallen back to kernels older than the CPU.
//
// Everything but detect_cpu() / measure_fma_gflops() is a pure function of
// its arguments, so the rules are unit-tested with made-up CPUs
// (tests/common/cpu_features_test.cc).
#include <string>

namespace cnx::cpu {

// The widest vector instruction set the CPU has and the OS saves state for,
// as the BLAS kernel sets group them.
enum class SimdLevel {
  kSse = 0,  // SSE2 (every x86-64 CPU)
  kAvx,      // AVX without FMA (Sandy Bridge, Ivy Bridge)
  kAvx2,     // AVX2 + FMA (Haswell .. Alder Lake, Zen 1-3)
  kAvx512,   // AVX-512 F/CD/BW/DQ/VL (Skylake-SP and later Xeons, Ice Lake, Zen 4/5)
};
const char* simd_level_name(SimdLevel level);  // "SSE2", "AVX", "AVX2+FMA", "AVX-512"

struct CpuFeatures {
  std::string vendor;  // "GenuineIntel", "AuthenticAMD", ... ("" when not x86)
  std::string brand;   // model name, e.g. "Intel(R) Xeon(R) Processor @ 2.80GHz"
  int family = 0;      // display family (base + extended)
  int model = 0;       // display model (base + extended for family 6 / 15+)
  bool sse2 = false, avx = false, fma = false, avx2 = false;
  bool avx512f = false, avx512cd = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512_bf16 = false, amx_bf16 = false;
  bool os_avx = false;     // XCR0 saves YMM state
  bool os_avx512 = false;  // XCR0 saves opmask + ZMM state
  double base_mhz = 0;     // cpuid leaf 0x16 (0 when the hypervisor hides it)
  double max_mhz = 0;      // cpuid leaf 0x16 max (0 when hidden)
  double cpuinfo_mhz = 0;  // /proc/cpuinfo "cpu MHz" of the first CPU (0 when absent)
};

// The CPU this process runs on (cpuid + /proc/cpuinfo); zeros off x86-64.
CpuFeatures detect_cpu();

SimdLevel simd_level(const CpuFeatures& cpu);
// "AVX-512 (bf16)" style summary for logs.
std::string describe_simd(const CpuFeatures& cpu);

// The nominal clock in GHz parsed from a model name ("... @ 2.80GHz" -> 2.8),
// 0 when it has none.
double clock_from_brand(const std::string& brand);

// The theoretical fp32 peak of `cores` cores: cores x clock x FLOP per
// cycle. `assumption` says where each factor came from, in words, because
// neither the FMA unit count nor the sustained clock under AVX-512 can be
// read from cpuid.
struct PeakEstimate {
  double flop_per_cycle = 0;  // per core, fp32
  double ghz = 0;
  int cores = 0;
  double gflops = 0;
  std::string assumption;
};
// fp32 FLOP per cycle per core of the vector units (an FMA = 2 FLOP):
// AVX-512 with two 512-bit FMA units 64 (Intel server cores, Zen 5), AVX-512
// on 256-bit FMA pipes 32 (Zen 4), AVX2 + 2 FMA 32 (Haswell and later, Zen
// 2/3), Zen 1 16, AVX without FMA 16 (one add + one multiply port), SSE 8.
// `why` gets the rule that applied.
int fp32_flop_per_cycle(const CpuFeatures& cpu, std::string* why = nullptr);
// The clock: cpuid leaf 0x16 base frequency, else the model name's "@ x GHz",
// else /proc/cpuinfo's current MHz; `why` says which.
double nominal_ghz(const CpuFeatures& cpu, std::string* why = nullptr);
PeakEstimate fp32_peak(const CpuFeatures& cpu, int cores);

// The verdict on a measured GEMM ceiling (GFLOP/s) against the theoretical
// peak and the measured FMA rate of the same cores: "" when the ceiling is at
// least `min_share` of the peak, else one line saying whether the cores
// themselves run slow (the FMA loop is slow too: shared, throttled, fewer FMA
// units than assumed) or the BLAS kernels do (fallback kernel set).
// `fma_gflops` <= 0: not measured.
std::string judge_ceiling(double ceiling_gflops, double peak_gflops, double fma_gflops, double min_share = 0.5);

// Measured fp32 FMA throughput of this CPU in GFLOP/s on `threads` threads:
// independent vector FMAs in registers for about `seconds` (the widest
// vector unit the CPU and OS support; no memory traffic, no BLAS). The
// practical peak the theoretical one is checked against: it shows the real
// clock under vector load and the FMA unit count.
double measure_fma_gflops(int threads, double seconds = 0.2);

}  // namespace cnx::cpu
