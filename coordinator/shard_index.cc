#include "coordinator/shard_index.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "common/check.h"

namespace cnx::coordinator {
namespace {

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

ShardIndex parse_shard_index(const std::string& text, const std::string& origin) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    CNX_CHECK(false, origin, ": malformed shard index JSON: ", e.what());
  }
  CNX_CHECK(j.is_object(), origin, ": shard index must be a JSON object");
  CNX_CHECK(j.contains("version") && j["version"].is_number_integer() && j["version"].get<int64_t>() == 1,
            origin, ": version: expected 1");
  ShardIndex idx;
  if (j.contains("dataset") && j["dataset"].is_string()) idx.dataset = j["dataset"].get<std::string>();
  CNX_CHECK(j.contains("shards") && j["shards"].is_array(), origin, ": shards: expected a list");
  int64_t total = 0;
  for (size_t i = 0; i < j["shards"].size(); ++i) {
    const auto& s = j["shards"][i];
    const std::string where = origin + ": shards[" + std::to_string(i) + "]";
    CNX_CHECK(s.is_object(), where, ": expected an object");
    ShardInfo info;
    CNX_CHECK(s.contains("name") && s["name"].is_string() && !s["name"].get<std::string>().empty(), where,
              ".name: expected a non-empty string");
    info.name = s["name"].get<std::string>();
    CNX_CHECK(s.contains("samples") && s["samples"].is_number_integer() && s["samples"].get<int64_t>() >= 0, where,
              ".samples: expected an integer >= 0");
    info.samples = s["samples"].get<int64_t>();
    if (s.contains("bytes")) {
      CNX_CHECK(s["bytes"].is_number_integer() && s["bytes"].get<int64_t>() >= 0, where,
                ".bytes: expected an integer >= 0");
      info.bytes = s["bytes"].get<int64_t>();
    }
    if (s.contains("sha256")) {
      CNX_CHECK(s["sha256"].is_string() && is_hex64(s["sha256"].get<std::string>()), where,
                ".sha256: expected 64 lowercase hex digits");
      info.sha256 = s["sha256"].get<std::string>();
    }
    total += info.samples;
    idx.shards.push_back(std::move(info));
  }
  if (j.contains("total_samples")) {
    CNX_CHECK(j["total_samples"].is_number_integer() && j["total_samples"].get<int64_t>() == total, origin,
              ": total_samples: expected the sum of shards[].samples (", total, ")");
  }
  idx.total_samples = total;
  return idx;
}

ShardIndex load_shard_index(const std::string& path) {
  std::ifstream in(path);
  CNX_CHECK(in.good(), path, ": cannot open shard index (data.index)");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_shard_index(ss.str(), path);
}

}  // namespace cnx::coordinator
