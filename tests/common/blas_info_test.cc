// The BLAS kernel-set check (common/blas_info.h): the fallback rules on
// made-up CPUs and core names, then real processes: cnx-blas-probe with
// OPENBLAS_CORETYPE forced to each kernel set this CPU runs (each checked
// against float64 on the FCMAE step's GEMM shapes), forced to PRESCOTT (the
// program must say so), and the automatic switch away from PRESCOTT through
// the test-only CNX_BLAS_TEST_FALLBACK, also in cnx-fcmae-step-bench.
#include "common/blas_info.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace cnx::blas {
namespace {

cpu::CpuFeatures make_cpu(cpu::SimdLevel level) {
  cpu::CpuFeatures c;
  c.vendor = "GenuineIntel";
  c.family = 6;
  c.model = 207;  // Emerald Rapids: newer than OpenBLAS 0.3.21's table
  c.sse2 = true;
  if (level >= cpu::SimdLevel::kAvx) c.avx = c.os_avx = true;
  if (level >= cpu::SimdLevel::kAvx2) c.avx2 = c.fma = true;
  if (level >= cpu::SimdLevel::kAvx512) {
    c.avx512f = c.avx512cd = c.avx512bw = c.avx512dq = c.avx512vl = c.os_avx512 = true;
  }
  return c;
}

BlasInfo openblas(const std::string& core) {
  BlasInfo b;
  b.library = "OpenBLAS";
  b.version = "0.3.21";
  b.core = core;
  return b;
}

TEST(BlasInfo, CoreLevels) {
  using L = cpu::SimdLevel;
  const std::array<std::pair<const char*, L>, 14> cases = {{{"SkylakeX", L::kAvx512},
                                                            {"COOPERLAKE", L::kAvx512},
                                                            {"SapphireRapids", L::kAvx512},
                                                            {"Haswell", L::kAvx2},
                                                            {"Zen", L::kAvx2},
                                                            {"Sandybridge", L::kAvx},
                                                            {"Piledriver", L::kAvx},
                                                            {"Prescott", L::kSse},
                                                            {"Nehalem", L::kSse},
                                                            {"Core2", L::kSse},
                                                            {"Katmai", L::kSse},
                                                            {"Penryn", L::kSse},
                                                            {"Atom", L::kSse},
                                                            {"Generic", L::kSse}}};
  for (const auto& [name, want] : cases) {
    L got;
    ASSERT_TRUE(openblas_core_level(name, &got)) << name;
    EXPECT_EQ(got, want) << name;
  }
  L unused;
  EXPECT_FALSE(openblas_core_level("", &unused));
}

TEST(BlasInfo, FallbackDetection) {
  using L = cpu::SimdLevel;
  const auto avx512 = make_cpu(L::kAvx512), avx2 = make_cpu(L::kAvx2), avx = make_cpu(L::kAvx), sse = make_cpu(L::kSse);
  // The case: Emerald Rapids, OpenBLAS 0.3.21 picks Prescott.
  EXPECT_EQ(better_openblas_coretype("Prescott", avx512), "SKYLAKEX");
  EXPECT_EQ(better_openblas_coretype("Nehalem", avx512), "SKYLAKEX");
  EXPECT_EQ(better_openblas_coretype("Haswell", avx512), "SKYLAKEX");  // e.g. Zen 4 in an older table
  EXPECT_EQ(better_openblas_coretype("Zen", avx512), "SKYLAKEX");
  EXPECT_EQ(better_openblas_coretype("SkylakeX", avx512), "");
  EXPECT_EQ(better_openblas_coretype("Cooperlake", avx512), "");
  EXPECT_EQ(better_openblas_coretype("Core2", avx2), "HASWELL");
  EXPECT_EQ(better_openblas_coretype("Sandybridge", avx2), "HASWELL");
  EXPECT_EQ(better_openblas_coretype("Haswell", avx2), "");
  EXPECT_EQ(better_openblas_coretype("Zen", avx2), "");
  EXPECT_EQ(better_openblas_coretype("Prescott", avx), "SANDYBRIDGE");
  EXPECT_EQ(better_openblas_coretype("Prescott", sse), "");  // nothing better exists
  EXPECT_EQ(better_openblas_coretype("", avx512), "");       // not OpenBLAS
  // AVX-512 in the CPU but not enabled by the OS: Haswell is right.
  auto no_zmm = avx512;
  no_zmm.os_avx512 = false;
  EXPECT_EQ(better_openblas_coretype("Haswell", no_zmm), "");
  EXPECT_EQ(better_openblas_coretype("Prescott", no_zmm), "HASWELL");
}

TEST(BlasInfo, DecisionHonoursTheUserAndNeverLoops) {
  const auto cpu = make_cpu(cpu::SimdLevel::kAvx512);
  // Fallback picked by OpenBLAS: switch.
  auto d = decide_coretype(openblas("Prescott"), cpu, "", "", "", false);
  EXPECT_TRUE(d.fallback);
  EXPECT_EQ(d.coretype, "SKYLAKEX");
  EXPECT_NE(d.reason.find("Prescott"), std::string::npos) << d.reason;
  EXPECT_EQ(decide_coretype(openblas("Prescott"), cpu, "", "1", "", false).coretype, "SKYLAKEX");
  // The user chose it: keep it, warn.
  d = decide_coretype(openblas("Prescott"), cpu, "PRESCOTT", "", "", false);
  EXPECT_TRUE(d.fallback);
  EXPECT_EQ(d.coretype, "");
  EXPECT_NE(d.reason.find("OPENBLAS_CORETYPE=PRESCOTT is set"), std::string::npos) << d.reason;
  // ... unless the test switch says to treat it as OpenBLAS's own pick.
  EXPECT_EQ(decide_coretype(openblas("Prescott"), cpu, "PRESCOTT", "", "", true).coretype, "SKYLAKEX");
  // Disabled: keep, warn.
  d = decide_coretype(openblas("Prescott"), cpu, "", "0", "", false);
  EXPECT_EQ(d.coretype, "");
  EXPECT_TRUE(d.fallback);
  EXPECT_NE(d.reason.find("CNX_BLAS_AUTO=0"), std::string::npos) << d.reason;
  // Already re-executed once and still a fallback: never again.
  d = decide_coretype(openblas("Prescott"), cpu, "SKYLAKEX", "", "SKYLAKEX (OpenBLAS had picked Prescott)", true);
  EXPECT_EQ(d.coretype, "");
  EXPECT_TRUE(d.fallback);
  // Fine core, or another BLAS: nothing to do.
  d = decide_coretype(openblas("SkylakeX"), cpu, "", "", "", false);
  EXPECT_FALSE(d.fallback);
  EXPECT_EQ(d.coretype, "");
  BlasInfo blis;
  blis.library = "BLIS";
  EXPECT_FALSE(decide_coretype(blis, cpu, "", "", "", false).fallback);
}

// ---- real processes ---------------------------------------------------------

struct ProcessRun {
  int status = -1;
  std::string output;  // stdout + stderr
};

ProcessRun run(const std::string& env, const std::string& cmd) {
  const std::string line =
      "env -u OPENBLAS_CORETYPE -u CNX_BLAS_AUTO -u CNX_BLAS_AUTO_CHOSEN -u CNX_BLAS_TEST_FALLBACK " + env + " " + cmd +
      " 2>&1";
  ProcessRun r;
  FILE* p = popen(line.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string probe() {
  return CNX_PROBE_STR;
}

std::string core_of(const std::string& out) {
  const auto at = out.find("core=");
  if (at == std::string::npos) return "";
  return out.substr(at + 5, out.find('\n', at) - at - 5);
}

bool is_openblas() {
  return run("", probe() + " --core-only").output.find("BLAS OpenBLAS") != std::string::npos;
}

// Whether LibTorch does its BLAS through libblas.so.3 (Debian's LibTorch;
// CMake reads libtorch_cpu.so's needed libraries). PyPI's LibTorch (the GPU
// flavours) carries MKL inside libtorch_cpu.so: no OpenBLAS kernel sets.
constexpr bool kTorchUsesLibblas = CNX_TORCH_USES_LIBBLAS;
constexpr const char* kNoLibblas = "this LibTorch carries its own BLAS (not libblas.so.3): no OpenBLAS kernel sets";

TEST(BlasInfoProcess, DefaultKernelsAreCorrectAndNotAFallback) {
  const ProcessRun r = run("", probe());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("cnx-blas-probe: BLAS "), std::string::npos) << r.output;
  if (!kTorchUsesLibblas) {
    // The probe names the BLAS inside LibTorch and warns about nothing.
    EXPECT_FALSE(is_openblas()) << r.output;
    EXPECT_EQ(r.output.find("WARNING"), std::string::npos) << r.output;
    return;
  }
  ASSERT_TRUE(is_openblas()) << "libblas.so.3 is not OpenBLAS (scripts/setup.sh points it there)";
  EXPECT_EQ(better_openblas_coretype(core_of(r.output), cpu::detect_cpu()), "") << r.output;
  EXPECT_EQ(r.output.find("WARNING"), std::string::npos) << r.output;
}

TEST(BlasInfoProcess, EveryKernelSetThisCpuRunsMatchesFloat64) {
  if (!kTorchUsesLibblas) GTEST_SKIP() << kNoLibblas;
  ASSERT_TRUE(is_openblas()) << "libblas.so.3 is not OpenBLAS (scripts/setup.sh points it there)";
  const auto level = cpu::simd_level(cpu::detect_cpu());
  std::vector<std::pair<std::string, std::string>> sets = {{"PRESCOTT", "Prescott"}};
  if (level >= cpu::SimdLevel::kAvx2) sets.push_back({"HASWELL", "Haswell"});
  if (level >= cpu::SimdLevel::kAvx512) sets.push_back({"SKYLAKEX", "SkylakeX"});
  for (const auto& [coretype, name] : sets) {
    const ProcessRun r = run("OPENBLAS_CORETYPE=" + coretype, probe());
    EXPECT_EQ(r.status, 0) << coretype << "\n" << r.output;
    EXPECT_EQ(core_of(r.output), name) << r.output;
    EXPECT_EQ(r.output.find("FAIL"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("shape fc1.wgrad"), std::string::npos) << r.output;
  }
}

TEST(BlasInfoProcess, ForcedPrescottIsReportedAndSwitchedAway) {
  if (!kTorchUsesLibblas) GTEST_SKIP() << kNoLibblas;
  ASSERT_TRUE(is_openblas()) << "libblas.so.3 is not OpenBLAS (scripts/setup.sh points it there)";
  const std::string better = better_openblas_coretype("Prescott", cpu::detect_cpu());
  // The user forces Prescott: it runs, and the program says it is a fallback.
  ProcessRun r = run("OPENBLAS_CORETYPE=PRESCOTT", probe() + " --core-only");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(core_of(r.output), "Prescott") << r.output;
  EXPECT_NE(r.output.find("kernels Prescott"), std::string::npos) << r.output;
  if (better.empty()) GTEST_SKIP() << "this CPU has nothing better than Prescott";
  EXPECT_NE(r.output.find("WARNING: OpenBLAS runs its Prescott kernels"), std::string::npos) << r.output;

  // As if OpenBLAS had picked Prescott itself: the program restarts with the
  // matching kernel set, once, and says so.
  r = run("OPENBLAS_CORETYPE=PRESCOTT CNX_BLAS_TEST_FALLBACK=1", probe() + " --core-only");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("restarting with OPENBLAS_CORETYPE=" + better), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("chosen by cnx: " + better + " (OpenBLAS had picked Prescott)"), std::string::npos)
      << r.output;
  cpu::SimdLevel got, want = cpu::simd_level(cpu::detect_cpu());
  ASSERT_TRUE(openblas_core_level(core_of(r.output), &got)) << r.output;
  EXPECT_EQ(got, want) << r.output;
  EXPECT_EQ(r.output.find("WARNING"), std::string::npos) << r.output;

  // CNX_BLAS_AUTO=0 turns the switch off.
  r = run("OPENBLAS_CORETYPE=PRESCOTT CNX_BLAS_TEST_FALLBACK=1 CNX_BLAS_AUTO=0", probe() + " --core-only");
  EXPECT_EQ(core_of(r.output), "Prescott") << r.output;
  EXPECT_NE(r.output.find("CNX_BLAS_AUTO=0 keeps them"), std::string::npos) << r.output;

  // A real program: the step benchmark on a tiny model reports the switch and
  // the kernels it then runs.
  r = run("OPENBLAS_CORETYPE=PRESCOTT CNX_BLAS_TEST_FALLBACK=1",
          std::string(CNX_STEP_BENCH_STR) +
              " --device cpu --variant atto --size 64 --batch 2 --steps 1 --warmup 0 --ceiling off --profile-steps 0"
              " --threads 1");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("cnx-fcmae-step-bench: OpenBLAS runs its Prescott kernels"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("chosen by cnx: " + better), std::string::npos) << r.output;
  const std::string core_name = better == "SKYLAKEX" ? "SkylakeX" : better == "HASWELL" ? "Haswell" : "Sandybridge";
  EXPECT_NE(r.output.find("\"blas_core\": \"" + core_name + "\""), std::string::npos) << r.output;
}

}  // namespace
}  // namespace cnx::blas
