#pragma once
// Which BLAS this process computes with, and never a fallback kernel set
// without saying so.
//
// Every GEMM of the project goes through LibTorch to the system BLAS
// (libblas.so.3: OpenBLAS on Debian). OpenBLAS built with DYNAMIC_ARCH picks
// its kernel set ("core") from the CPU model when it is loaded; a CPU newer
// than the library's model table gets a generic one (Prescott: SSE3 kernels,
// about 5x slower than SkylakeX on an AVX-512 Xeon). OpenBLAS reads
// OPENBLAS_CORETYPE only when it is loaded, so the remedy is to run the
// program again with it set:
//
//   int main(int argc, char** argv) {
//     cnx::blas::init_compute_environment("cnx-worker", argc, argv);  // first
//     ...
//
// init_compute_environment() re-executes the program (execv of
// /proc/self/exe: same pid, same arguments, so it is safe under mpirun
// before MPI_Init) with OPENBLAS_CORETYPE=SKYLAKEX or HASWELL when
//   * OpenBLAS reports a core below the CPU's SIMD level (cpu_features.h),
//   * the user has not set OPENBLAS_CORETYPE, and
//   * CNX_BLAS_AUTO is not "0";
// the re-executed process finds CNX_BLAS_AUTO_CHOSEN set and never does it
// again. Then it logs one line on stderr: library, version, kernel set,
// CPU, SIMD level, and a warning when a fallback is still running.
//
// Test-only: CNX_BLAS_TEST_FALLBACK=1 treats a set OPENBLAS_CORETYPE as if
// OpenBLAS had picked that core itself (so a test can force PRESCOTT and see
// the program switch).
#include <string>

#include "common/cpu_features.h"

namespace cnx::blas {

struct BlasInfo {
  std::string library;  // "OpenBLAS", "BLIS", "MKL" or "unknown"
  std::string version;  // "0.3.21" ("" when unknown)
  std::string core;     // OpenBLAS kernel set ("SkylakeX", "Prescott", ...), else ""
  std::string config;   // openblas_get_config(), else ""
  std::string path;     // the shared object sgemm_ resolves to
};

// Queries the BLAS loaded in this process (dlsym; works whichever library
// libblas.so.3 points at).
BlasInfo query_blas();

// The SIMD level an OpenBLAS core name's kernels use (case-insensitive):
// SkylakeX/Cooperlake/SapphireRapids AVX-512; Haswell/Zen AVX2; Sandybridge
// and the Bulldozer family AVX; everything else (Prescott, Core2, Nehalem,
// Katmai, Atom, Generic, ...) SSE. Returns false for an empty name.
bool openblas_core_level(const std::string& core, cpu::SimdLevel* level);

// The OPENBLAS_CORETYPE that matches `cpu` when `core` is a fallback (its
// level is below the CPU's): "SKYLAKEX" or "HASWELL"; "" when the core is
// fine or nothing better exists.
std::string better_openblas_coretype(const std::string& core, const cpu::CpuFeatures& cpu);

// What init_compute_environment decides, as a pure function of its inputs.
struct AutoDecision {
  std::string coretype;   // set OPENBLAS_CORETYPE to this and re-exec ("" = don't)
  std::string reason;     // one line for the log
  bool fallback = false;  // a fallback core runs (and stays, when coretype is "")
};
// `user_coretype`: OPENBLAS_CORETYPE as found ("" = unset); `auto_env`:
// CNX_BLAS_AUTO ("" = unset); `already`: CNX_BLAS_AUTO_CHOSEN ("" = unset);
// `test_fallback`: CNX_BLAS_TEST_FALLBACK=1.
AutoDecision decide_coretype(const BlasInfo& blas, const cpu::CpuFeatures& cpu, const std::string& user_coretype,
                             const std::string& auto_env, const std::string& already, bool test_fallback);

// The whole start-up check: decide, maybe re-exec (does not return then),
// log one line on stderr prefixed with `program`. Returns the line (also for
// callers that want it in their own log). Never throws: a failed re-exec is
// logged and the program goes on with the kernels it has.
std::string init_compute_environment(const char* program, int argc, char** argv);

// The one-line description init_compute_environment logs (without the
// program prefix).
std::string describe_compute_environment();

}  // namespace cnx::blas
