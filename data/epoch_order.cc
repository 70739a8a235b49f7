#include "data/epoch_order.h"

#include <algorithm>
#include <climits>
#include <numeric>
#include <utility>

#include "common/check.h"
#include "common/rng.h"

namespace cnx::data {

std::vector<SampleRef> epoch_order(const std::vector<int64_t>& counts, uint64_t seed, int64_t epoch,
                                   const std::vector<int64_t>& shard_ids, int64_t shuffle_buffer) {
  CNX_CHECK(shuffle_buffer >= 1, "shuffle_buffer must be >= 1, got ", shuffle_buffer);
  uint64_t list_hash = 0x5eed5eed5eedULL;
  for (int64_t id : shard_ids) list_hash = mix_seed(list_hash, static_cast<uint64_t>(id));
  SplitMix64 rng(mix_seed(mix_seed(mix_seed(seed, 0x6f72646572ULL), static_cast<uint64_t>(epoch)), list_hash));

  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  std::vector<SampleRef> out;
  out.reserve(static_cast<size_t>(total));
  std::vector<SampleRef> buffer;
  buffer.reserve(static_cast<size_t>(std::min<int64_t>(shuffle_buffer, total)));
  for (size_t p = 0; p < counts.size(); ++p) {
    for (int64_t i = 0; i < counts[p]; ++i) {
      SampleRef r{static_cast<int32_t>(p), static_cast<int32_t>(i)};
      if (static_cast<int64_t>(buffer.size()) < shuffle_buffer) {
        buffer.push_back(r);
        continue;
      }
      const size_t j = rng.below(buffer.size());
      out.push_back(buffer[j]);
      buffer[j] = r;
    }
  }
  while (!buffer.empty()) {
    const size_t j = rng.below(buffer.size());
    out.push_back(buffer[j]);
    buffer[j] = buffer.back();
    buffer.pop_back();
  }
  return out;
}

std::vector<int32_t> shard_permutation(uint64_t seed, int64_t epoch, int64_t shard_id, int64_t samples) {
  CNX_CHECK(samples >= 0 && samples <= INT32_MAX, "shard sample count out of range: ", samples);
  std::vector<int32_t> perm(static_cast<size_t>(samples));
  std::iota(perm.begin(), perm.end(), int32_t{0});
  SplitMix64 rng(mix_seed(mix_seed(mix_seed(seed, 0x7069656365ULL), static_cast<uint64_t>(epoch)),
                          static_cast<uint64_t>(shard_id)));
  for (int64_t i = samples - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)));
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

std::vector<int64_t> static_shard_split(int64_t num_shards, int64_t epoch, uint64_t seed, int rank, int world) {
  CNX_CHECK(num_shards >= 0, "num_shards must be >= 0, got ", num_shards);
  CNX_CHECK(world >= 1 && rank >= 0 && rank < world, "bad rank ", rank, " of world ", world);
  std::vector<int64_t> perm(static_cast<size_t>(num_shards));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  SplitMix64 rng(mix_seed(mix_seed(seed, 0x7368617264ULL), static_cast<uint64_t>(epoch)));
  for (int64_t i = num_shards - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)));
    std::swap(perm[i], perm[j]);
  }
  std::vector<int64_t> mine;
  for (int64_t p = rank; p < num_shards; p += world) mine.push_back(perm[p]);
  return mine;
}

}  // namespace cnx::data
