#pragma once
// The shard index written by cnx-make-shards:
//   {"version":1,"dataset":..,"total_samples":N,"classes":[...],
//    "shards":[{"name":"train-000000.tar","samples":n,"bytes":b,"sha256":"hex"}]}
// A shard's id is its position in "shards".
#include <cstdint>
#include <string>
#include <vector>

namespace cnx::coordinator {

struct ShardInfo {
  std::string name;
  int64_t samples = 0;
  int64_t bytes = 0;
  std::string sha256;
};

struct ShardIndex {
  std::string dataset;
  int64_t total_samples = 0;
  std::vector<ShardInfo> shards;
};

// Parses index JSON text; `origin` names the source in messages. Throws
// cnx::CheckError naming the bad field (e.g. "shards[3].samples").
ShardIndex parse_shard_index(const std::string& json_text, const std::string& origin);
// Reads and parses the file at `path`.
ShardIndex load_shard_index(const std::string& path);

}  // namespace cnx::coordinator
