// The CPU-feature rules (common/cpu_features.h) on made-up CPUs, plus a
// sanity check of what detect_cpu() finds here.
#include "common/cpu_features.h"

#include <gtest/gtest.h>

namespace cnx::cpu {
namespace {

CpuFeatures sse_cpu() {
  CpuFeatures c;
  c.vendor = "GenuineIntel";
  c.family = 6;
  c.sse2 = true;
  return c;
}
CpuFeatures avx_cpu() {
  auto c = sse_cpu();
  c.avx = c.os_avx = true;
  return c;
}
CpuFeatures avx2_cpu() {
  auto c = avx_cpu();
  c.avx2 = c.fma = true;
  return c;
}
CpuFeatures avx512_cpu() {
  auto c = avx2_cpu();
  c.avx512f = c.avx512cd = c.avx512bw = c.avx512dq = c.avx512vl = true;
  c.os_avx512 = true;
  return c;
}
CpuFeatures amd(CpuFeatures c, int family, int model) {
  c.vendor = "AuthenticAMD";
  c.family = family;
  c.model = model;
  return c;
}

TEST(CpuFeatures, SimdLevelNeedsTheOsToSaveTheRegisters) {
  EXPECT_EQ(simd_level(sse_cpu()), SimdLevel::kSse);
  EXPECT_EQ(simd_level(avx_cpu()), SimdLevel::kAvx);
  EXPECT_EQ(simd_level(avx2_cpu()), SimdLevel::kAvx2);
  EXPECT_EQ(simd_level(avx512_cpu()), SimdLevel::kAvx512);
  auto no_zmm = avx512_cpu();
  no_zmm.os_avx512 = false;  // a kernel or hypervisor that does not enable ZMM state
  EXPECT_EQ(simd_level(no_zmm), SimdLevel::kAvx2);
  auto no_ymm = avx2_cpu();
  no_ymm.os_avx = false;
  EXPECT_EQ(simd_level(no_ymm), SimdLevel::kSse);
  auto avx512f_only = avx512_cpu();  // Xeon Phi style: F + CD without BW/DQ/VL
  avx512f_only.avx512bw = false;
  EXPECT_EQ(simd_level(avx512f_only), SimdLevel::kAvx2);
  auto avx2_no_fma = avx2_cpu();
  avx2_no_fma.fma = false;
  EXPECT_EQ(simd_level(avx2_no_fma), SimdLevel::kAvx);
}

TEST(CpuFeatures, FlopPerCycleByVectorUnits) {
  std::string why;
  EXPECT_EQ(fp32_flop_per_cycle(avx512_cpu(), &why), 64);  // Intel server: 2 x 512-bit FMA assumed
  EXPECT_NE(why.find("assumed"), std::string::npos) << why;
  EXPECT_EQ(fp32_flop_per_cycle(amd(avx512_cpu(), 0x19, 0x11)), 32);  // Zen 4
  EXPECT_EQ(fp32_flop_per_cycle(amd(avx512_cpu(), 0x1a, 0x02)), 64);  // Zen 5
  EXPECT_EQ(fp32_flop_per_cycle(avx2_cpu()), 32);                     // Haswell .. Alder Lake
  EXPECT_EQ(fp32_flop_per_cycle(amd(avx2_cpu(), 0x17, 0x01)), 16);    // Zen 1
  EXPECT_EQ(fp32_flop_per_cycle(amd(avx2_cpu(), 0x17, 0x31)), 32);    // Zen 2
  EXPECT_EQ(fp32_flop_per_cycle(amd(avx2_cpu(), 0x19, 0x01)), 32);    // Zen 3
  EXPECT_EQ(fp32_flop_per_cycle(avx_cpu()), 16);
  EXPECT_EQ(fp32_flop_per_cycle(sse_cpu()), 8);
}

TEST(CpuFeatures, ClockFromModelName) {
  EXPECT_DOUBLE_EQ(clock_from_brand("Intel(R) Xeon(R) Processor @ 2.80GHz"), 2.8);
  EXPECT_DOUBLE_EQ(clock_from_brand("Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz"), 3.4);
  EXPECT_DOUBLE_EQ(clock_from_brand("Some CPU 2400MHz"), 2.4);
  EXPECT_DOUBLE_EQ(clock_from_brand("AMD EPYC 9R14 96-Core Processor"), 0.0);
  EXPECT_DOUBLE_EQ(clock_from_brand(""), 0.0);
}

TEST(CpuFeatures, ClockPrecedenceAndPeak) {
  auto c = avx512_cpu();
  c.brand = "Intel(R) Xeon(R) Processor @ 2.80GHz";
  c.cpuinfo_mhz = 2793.4;
  std::string why;
  EXPECT_DOUBLE_EQ(nominal_ghz(c, &why), 2.8);  // no leaf 0x16 (KVM): the model name
  EXPECT_NE(why.find("model name"), std::string::npos);
  c.base_mhz = 2600;
  EXPECT_DOUBLE_EQ(nominal_ghz(c, &why), 2.6);  // leaf 0x16 wins
  EXPECT_NE(why.find("0x16"), std::string::npos);
  c.base_mhz = 0;
  c.brand = "AMD EPYC 9R14 96-Core Processor";
  EXPECT_DOUBLE_EQ(nominal_ghz(c, &why), 2.7934);  // then /proc/cpuinfo
  EXPECT_NE(why.find("cpuinfo"), std::string::npos);

  c = avx512_cpu();
  c.brand = "Intel(R) Xeon(R) Processor @ 2.80GHz";
  const PeakEstimate p = fp32_peak(c, 2);
  EXPECT_EQ(p.cores, 2);
  EXPECT_DOUBLE_EQ(p.flop_per_cycle, 64);
  EXPECT_NEAR(p.gflops, 2 * 2.8 * 64, 1e-9);  // 358.4
  EXPECT_NE(p.assumption.find("2 core(s) x 2.8 GHz"), std::string::npos) << p.assumption;
  EXPECT_NE(p.assumption.find("64 FLOP/cycle"), std::string::npos) << p.assumption;
  EXPECT_EQ(fp32_peak(c, 0).cores, 1);
}

TEST(CpuFeatures, CeilingVerdict) {
  // 2 Ice Lake cores: peak 358 GFLOP/s.
  EXPECT_EQ(judge_ceiling(250, 358.4, 300), "");  // healthy
  EXPECT_EQ(judge_ceiling(180, 358.4, 0), "");    // exactly half: not flagged
  // Fallback kernels: the FMA loop reaches the peak, the GEMM does not.
  std::string v = judge_ceiling(60, 358.4, 340);
  EXPECT_NE(v.find("0.17 of the theoretical peak"), std::string::npos) << v;
  EXPECT_NE(v.find("fallback kernel set"), std::string::npos) << v;
  // A busy or throttled machine: the FMA loop is slow too.
  v = judge_ceiling(100, 358.4, 150);
  EXPECT_NE(v.find("the cores themselves"), std::string::npos) << v;
  EXPECT_EQ(v.find("fallback"), std::string::npos) << v;
  // No FMA measurement: blame the kernels, with the peak share.
  v = judge_ceiling(60, 358.4, 0);
  EXPECT_NE(v.find("fallback kernel set"), std::string::npos) << v;
  EXPECT_EQ(judge_ceiling(60, 0, 0), "");  // no peak known: no verdict
}

TEST(CpuFeatures, ThisMachine) {
  const CpuFeatures c = detect_cpu();
#if defined(__x86_64__)
  EXPECT_TRUE(c.sse2);  // every x86-64 CPU
  EXPECT_FALSE(c.vendor.empty());
  EXPECT_GT(c.family, 0);
#endif
  // The measured FMA rate is a positive number (its size is the bench's business).
  EXPECT_GT(measure_fma_gflops(1, 0.02), 0.0);
  std::printf("this CPU: %s, %s, family %d model %d, peak %s\n", c.brand.c_str(), describe_simd(c).c_str(), c.family,
              c.model, fp32_peak(c, 1).assumption.c_str());
}

}  // namespace
}  // namespace cnx::cpu
