#pragma once
// CNX_SIMD_CLONES marks a hot loop function for GCC function multiversioning:
// it is compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the
// baseline ISA, and the loader picks the best one the running CPU supports
// (ifunc). The levels are checked by CPU features, so AMD and Intel CPUs get
// the same clones ("arch=skylake-avx512"/"arch=haswell" would be chosen by
// CPU model, which no AMD CPU matches). GCC < 12 lacks the level names in
// target_clones and gets the closest feature names. Elsewhere it is a no-op.
// Apply it to plain (non-template, non-lambda) functions only.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#if __GNUC__ >= 12
#define CNX_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CNX_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#else
#define CNX_SIMD_CLONES
#endif
#define CNX_INLINE inline __attribute__((always_inline))
