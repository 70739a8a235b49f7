#pragma once
// CNX_SIMD_CLONES marks a hot loop function for GCC function multiversioning:
// it is compiled for AVX-512, AVX2+FMA and the baseline ISA, and the loader
// picks the best one for the running CPU (ifunc). Elsewhere it is a no-op.
// Apply it to plain (non-template, non-lambda) functions only.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CNX_SIMD_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define CNX_SIMD_CLONES
#endif
#define CNX_INLINE inline __attribute__((always_inline))
