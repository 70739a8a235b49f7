#include "data/shard_index.h"

#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/check.h"
#include "common/hash.h"

namespace cnx::data {
namespace {

using nlohmann::json;

const json& field(const json& obj, const char* name, const std::string& where) {
  auto it = obj.find(name);
  if (it == obj.end()) throw DataError(str(where, ": missing field \"", name, "\""));
  return *it;
}

int64_t int_field(const json& obj, const char* name, const std::string& where) {
  const json& v = field(obj, name, where);
  if (!v.is_number_integer() || v.get<int64_t>() < 0) {
    throw DataError(str(where, ": field \"", name, "\" must be a non-negative integer, got ", v.dump()));
  }
  return v.get<int64_t>();
}

std::string string_field(const json& obj, const char* name, const std::string& where) {
  const json& v = field(obj, name, where);
  if (!v.is_string()) throw DataError(str(where, ": field \"", name, "\" must be a string, got ", v.dump()));
  return v.get<std::string>();
}

}  // namespace

ShardIndex parse_index(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw DataError(str(origin, ": not valid JSON: ", e.what()));
  }
  if (!j.is_object()) throw DataError(str(origin, ": the index must be a JSON object"));
  ShardIndex index;
  index.version = static_cast<int>(int_field(j, "version", origin));
  if (index.version != 1) throw DataError(str(origin, ": unsupported index version ", index.version, " (expected 1)"));
  index.dataset = string_field(j, "dataset", origin);
  index.total_samples = int_field(j, "total_samples", origin);
  if (auto it = j.find("classes"); it != j.end()) {
    if (!it->is_array()) throw DataError(str(origin, ": field \"classes\" must be an array of strings"));
    for (const auto& c : *it) {
      if (!c.is_string()) throw DataError(str(origin, ": field \"classes\" must be an array of strings"));
      index.classes.push_back(c.get<std::string>());
    }
  }
  const json& shards = field(j, "shards", origin);
  if (!shards.is_array()) throw DataError(str(origin, ": field \"shards\" must be an array"));
  int64_t sum = 0;
  std::set<std::string> names;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string where = str(origin, ": shards[", i, "]");
    if (!shards[i].is_object()) throw DataError(str(where, " must be an object"));
    ShardInfo s;
    s.name = string_field(shards[i], "name", where);
    s.samples = int_field(shards[i], "samples", where);
    s.bytes = int_field(shards[i], "bytes", where);
    s.sha256 = string_field(shards[i], "sha256", where);
    if (s.name.empty() || s.name.find("..") != std::string::npos || s.name[0] == '/') {
      throw DataError(str(where, ": bad shard name \"", s.name, "\" (must be a relative path without \"..\")"));
    }
    if (!names.insert(s.name).second) throw DataError(str(where, ": duplicate shard name \"", s.name, "\""));
    if (!is_hex64(s.sha256))
      throw DataError(str(where, ": sha256 must be 64 lowercase hex digits, got \"", s.sha256, "\""));
    sum += s.samples;
    index.shards.push_back(std::move(s));
  }
  if (sum != index.total_samples) {
    throw DataError(str(origin, ": total_samples is ", index.total_samples, " but the shards hold ", sum));
  }
  return index;
}

ShardIndex load_index(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(str("cannot open shard index ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_index(ss.str(), path);
}

std::string index_to_json(const ShardIndex& index) {
  json j = json::object();
  j["version"] = index.version;
  j["dataset"] = index.dataset;
  j["total_samples"] = index.total_samples;
  if (!index.classes.empty()) j["classes"] = index.classes;
  json shards = json::array();
  for (const auto& s : index.shards) {
    shards.push_back({{"name", s.name}, {"samples", s.samples}, {"bytes", s.bytes}, {"sha256", s.sha256}});
  }
  j["shards"] = std::move(shards);
  return j.dump(1) + "\n";
}

void save_index(const ShardIndex& index, const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw DataError(str("cannot write shard index ", tmp));
    out << index_to_json(index);
    if (!out.flush()) throw DataError(str("cannot write shard index ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw DataError(str("cannot rename ", tmp, " to ", path));
}

}  // namespace cnx::data
