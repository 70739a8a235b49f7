#pragma once
// The shard index: the JSON file cnx-make-shards writes next to the shards.
//
//   {"version": 1, "dataset": "<name>", "total_samples": N,
//    "classes": ["T-shirt/top", ...],                       (optional)
//    "shards": [{"name": "train-000000.tar", "samples": n,
//                "bytes": b, "sha256": "<64 hex>"}, ...]}
//
// A shard id is the shard's position in "shards". The coordinator parses the
// same file; the field names are a contract.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/hash.h"  // sha256_file / is_hex64 for the digests the index carries

namespace cnx::data {

// Expected data failures (bad index, missing or tampered shard, bad input
// files for cnx-make-shards). The message names the file and what was wrong.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ShardInfo {
  std::string name;     // file name relative to the shard root
  int64_t samples = 0;  // number of samples (keys) in the tar
  int64_t bytes = 0;    // file size in bytes
  std::string sha256;   // lowercase hex of the whole file
};

struct ShardIndex {
  int version = 1;
  std::string dataset;
  int64_t total_samples = 0;
  std::vector<std::string> classes;  // empty when the dataset has no class names
  std::vector<ShardInfo> shards;
};

// Parses and validates (version 1, non-negative counts, total == sum of
// samples, unique names without "..", 64-hex sha256). Throws DataError naming
// `path` and the offending field.
ShardIndex load_index(const std::string& path);
ShardIndex parse_index(const std::string& json_text, const std::string& origin);

// Writes the index as pretty JSON (stable key order); throws DataError.
void save_index(const ShardIndex& index, const std::string& path);
std::string index_to_json(const ShardIndex& index);

}  // namespace cnx::data
