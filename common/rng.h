#pragma once
// Counter-free deterministic randomness: SplitMix64 and seed mixing, the one
// home for every generator that must be a pure function of its inputs
// (FCMAE masks, the coordinator's shard deal, the data pipeline's epoch
// shuffles and per-sample augmentation, per-rank torch generator seeds).
//
// A stream's seed is a hash of (seed, epoch, name, ...), so its values never
// depend on thread timing or on how many draws another thread made.
// Header-only, no shared state.
#include <cmath>
#include <cstdint>
#include <string_view>

namespace cnx {

// FNV-1a over bytes: stable across platforms and runs (std::hash is not).
inline uint64_t fnv1a64(std::string_view s, uint64_t h = 0xcbf29ce484222325ULL) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

inline uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// One SplitMix64 step on an external state (advances it).
inline uint64_t splitmix64(uint64_t& state) {
  return splitmix64_mix(state += 0x9e3779b97f4a7c15ULL);
}

// Combines values into one seed (order matters).
inline uint64_t mix_seed(uint64_t a, uint64_t b) {
  return splitmix64_mix(a ^ (splitmix64_mix(b) + 0x9e3779b97f4a7c15ULL + (a << 6) + (a >> 2)));
}

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return splitmix64_mix(state_);
  }
  // Uniform double in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n) (n > 0), unbiased (rejection sampling).
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do {
      r = next();
    } while (r >= limit);
    return r % n;
  }

 private:
  uint64_t state_;
};

// The augmentation stream of one sample in one epoch.
inline SplitMix64 sample_rng(uint64_t seed, int64_t epoch, std::string_view key) {
  return SplitMix64(mix_seed(mix_seed(seed, static_cast<uint64_t>(epoch)), fnv1a64(key)));
}

}  // namespace cnx
