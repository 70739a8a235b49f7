#pragma once
// Helpers shared by the coordinator tests.
#include <string>
#include <vector>

#include "data/shard_index.h"

namespace cnx::coordinator::test {

inline ShardIndex make_index(const std::vector<int64_t>& samples) {
  ShardIndex idx;
  for (size_t i = 0; i < samples.size(); ++i) {
    ShardInfo s;
    s.name = "train-" + std::to_string(i) + ".tar";
    s.samples = samples[i];
    s.sha256 = std::string(64, '0');
    idx.shards.push_back(s);
    idx.total_samples += samples[i];
  }
  return idx;
}

}  // namespace cnx::coordinator::test
