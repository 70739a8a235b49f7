// Fuzz target: the shard index (data/shard_index.h: parse_index), which the
// coordinator and every worker read.
//
// Contract: DataError, or an index that satisfies every documented rule
// (version 1, non-negative counts, total == sum of samples, unique relative
// names without "..", 64 lowercase hex digests) and that index_to_json ->
// parse_index reproduces field by field.
#include <set>

#include "data/shard_index.h"
#include "fuzz/fuzz_util.h"

namespace {

using cnx::data::ShardIndex;

bool same(const ShardIndex& a, const ShardIndex& b) {
  if (a.version != b.version || a.dataset != b.dataset || a.total_samples != b.total_samples ||
      a.classes != b.classes || a.shards.size() != b.shards.size())
    return false;
  for (size_t i = 0; i < a.shards.size(); ++i) {
    const auto &x = a.shards[i], &y = b.shards[i];
    if (x.name != y.name || x.samples != y.samples || x.bytes != y.bytes || x.sha256 != y.sha256) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ShardIndex idx;
  try {
    idx = cnx::data::parse_index(text, "fuzz-index.json");
  } catch (const cnx::data::DataError&) {
    return 0;
  }
  FUZZ_REQUIRE(idx.version == 1, "version is not 1");
  int64_t sum = 0;
  std::set<std::string> names;
  for (const auto& s : idx.shards) {
    FUZZ_REQUIRE(s.samples >= 0 && s.bytes >= 0, "negative count in shard '" + s.name + "'");
    FUZZ_REQUIRE(!s.name.empty() && s.name[0] != '/' && s.name.find("..") == std::string::npos,
                 "unsafe shard name '" + s.name + "'");
    FUZZ_REQUIRE(names.insert(s.name).second, "duplicate shard name '" + s.name + "'");
    FUZZ_REQUIRE(cnx::is_hex64(s.sha256), "bad digest of '" + s.name + "'");
    FUZZ_REQUIRE(sum <= INT64_MAX - s.samples, "sample count overflows");
    sum += s.samples;
  }
  FUZZ_REQUIRE(sum == idx.total_samples, "total_samples differs from the sum of the shards");
  ShardIndex again;
  try {
    again = cnx::data::parse_index(cnx::data::index_to_json(idx), "round trip");
  } catch (const cnx::data::DataError& e) {
    FUZZ_REQUIRE(false, std::string("the reader refuses what the writer wrote: ") + e.what());
  }
  FUZZ_REQUIRE(same(idx, again), "round trip changed the index");
  return 0;
}
