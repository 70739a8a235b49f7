#include "common/config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include "common/variants.h"

namespace cnx {
namespace {

// The top-level key that names a config file to inherit from, and how many
// bases may stand above the file passed to load_config.
constexpr const char* kBaseKey = "base";
constexpr int kMaxBases = 8;

// ---------------------------------------------------------------------------
// Field descriptions. describe(v, section) lists every key of a section with
// its constraint; the Reader and the Writer below walk the same list, so a
// key cannot be readable without also being written back and vice versa.
// ---------------------------------------------------------------------------

// A constraint returns "" when the value is fine, else what was expected.
template <class T>
using Check = std::function<std::string(const T&)>;

template <class T>
Check<T> any() {
  return [](const T&) { return std::string(); };
}
Check<int64_t> at_least(int64_t lo) {
  return [lo](const int64_t& v) { return v >= lo ? "" : "an integer >= " + std::to_string(lo); };
}
Check<int64_t> int_range(int64_t lo, int64_t hi) {
  return [lo, hi](const int64_t& v) {
    return v >= lo && v <= hi ? "" : "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  };
}
// Readable bounds: %g, "max" for the largest double, inf for infinity.
std::string fmt_double(double d) {
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == std::numeric_limits<double>::max()) return "max";
  if (d == std::numeric_limits<double>::lowest()) return "-max";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", d);
  return buf;
}
Check<double> range(double lo, double hi, bool hi_open = false) {
  return [=](const double& v) {
    bool ok = std::isfinite(v) && v >= lo && (hi_open ? v < hi : v <= hi);
    return ok ? "" : "a number in [" + fmt_double(lo) + ", " + fmt_double(hi) + (hi_open ? ")" : "]");
  };
}
Check<double> non_negative() {
  return [](const double& v) { return std::isfinite(v) && v >= 0 ? "" : "a finite number >= 0"; };
}
Check<std::string> one_of(std::vector<std::string> options) {
  return [options](const std::string& v) {
    for (const auto& o : options)
      if (v == o) return std::string();
    std::string s = "one of ";
    for (size_t i = 0; i < options.size(); ++i) s += (i ? "|" : "") + options[i];
    return s;
  };
}
Check<std::string> host_port() {
  return [](const std::string& v) {
    auto colon = v.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 >= v.size()) return std::string("HOST:PORT");
    for (size_t i = colon + 1; i < v.size(); ++i)
      if (v[i] < '0' || v[i] > '9') return std::string("HOST:PORT with a numeric port");
    // At most 5 digits: a longer number is out of range for any integer type.
    if (v.size() - colon - 1 > 5) return std::string("HOST:PORT with port in [1, 65535]");
    long port = std::stol(v.substr(colon + 1));
    return port > 0 && port < 65536 ? std::string() : std::string("HOST:PORT with port in [1, 65535]");
  };
}

template <class V>
void describe(V& v, JobConfig& c) {
  v("id", c.id, Check<std::string>([](const std::string& s) {
      if (s.empty() || s.size() > 128) return std::string("a non-empty id of at most 128 characters");
      for (char ch : s)
        if (!(isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.'))
          return std::string("an id of letters, digits, '-', '_' or '.'");
      return std::string();
    }));
  v("seed", c.seed, at_least(0));
  v("log_level", c.log_level, one_of({"trace", "debug", "info", "warn", "error", "off"}));
}
template <class V>
void describe(V& v, ModelConfig& c) {
  v("name", c.name, one_of({"atto", "femto", "pico", "nano", "tiny", "base", "large", "huge", "custom"}));
  v("depths", c.depths, at_least(1));
  v("dims", c.dims, at_least(1));
  v("in_chans", c.in_chans, int_range(1, 64));
  v("num_classes", c.num_classes, at_least(0));
  v("drop_path_rate", c.drop_path_rate, range(0, 1, true));
  v("head_init_scale", c.head_init_scale, non_negative());
  v("decoder_dim", c.decoder_dim, int_range(1, 8192));
  v("decoder_depth", c.decoder_depth, int_range(1, 64));
  v("encoder", c.encoder, one_of({"sparse", "dense_masked", "dense"}));
  v("block", c.block, one_of({"v2", "v1"}));
  v("init", c.init, one_of({"reference", "std02"}));
  v("norm_pix_loss", c.norm_pix_loss, any<bool>());
}
template <class V>
void describe(V& v, MaskConfig& c) {
  v("ratio", c.ratio, range(0, 1));
}
template <class V>
void describe(V& v, OptimizerConfig& c) {
  v("name", c.name, one_of({"adamw"}));
  v("blr", c.blr, non_negative());
  v("lr", c.lr, non_negative());
  v("min_lr", c.min_lr, non_negative());
  v("weight_decay", c.weight_decay, non_negative());
  v("betas", c.betas, range(0, 1, true));
  v("eps", c.eps, range(0, 1));
  v("no_decay", c.no_decay, any<std::string>());
  v("clip_grad", c.clip_grad, non_negative());
  v("accum_steps", c.accum_steps, int_range(1, 1 << 20));
  v("global_batch", c.global_batch, int_range(0, int64_t{1} << 30));
}
template <class V>
void describe(V& v, ScheduleConfig& c) {
  v("epochs", c.epochs, range(0, 1e6));
  v("warmup_epochs", c.warmup_epochs, range(0, 1e6));
  v("max_steps", c.max_steps, at_least(0));
  v("log_every", c.log_every, at_least(1));
}
template <class V>
void describe(V& v, DataConfig& c) {
  v("index", c.index, any<std::string>());
  v("shard_root", c.shard_root, any<std::string>());
  v("input_size", c.input_size, Check<int64_t>([](const int64_t& s) {
      return s >= 32 && s <= 4096 && s % 32 == 0 ? "" : "a multiple of 32 in [32, 4096]";
    }));
  v("crop_scale", c.crop_scale, range(0, 1));
  v("crop_ratio", c.crop_ratio, range(0.01, 100));
  v("eval_crop_pct", c.eval_crop_pct,
    Check<double>([](const double& p) { return p > 0.0 && p <= 1.0 ? "" : "a number in (0, 1]"; }));
  v("hflip", c.hflip, any<bool>());
  v("mean", c.mean, range(-10, 10));
  v("std", c.std, range(1e-6, 10));
  v("batch_size", c.batch_size, int_range(1, 1 << 16));
  v("num_threads", c.num_threads, int_range(0, 256));
  v("queue_mb", c.queue_mb, int_range(1, 1 << 20));
  v("shuffle_buffer", c.shuffle_buffer, int_range(1, 1 << 24));
  v("bad_shard", c.bad_shard, one_of({"fail", "skip"}));
  v("drop_last", c.drop_last, any<bool>());
}
template <class V>
void describe(V& v, TrainConfig& c) {
  v("threads", c.threads, int_range(0, 1024));
  v("nonfinite", c.nonfinite, one_of({"skip", "stop"}));
  v("max_skipped", c.max_skipped, at_least(1));
  v("device", c.device, one_of({"auto", "cpu", "cuda"}));
  v("precision", c.precision, one_of({"fp32", "bf16", "fp16"}));
  v("sample_log", c.sample_log, Check<std::string>([](const std::string& s) {
      return s.find_first_of("\n\r") == std::string::npos ? "" : "a folder path without line breaks (\"\" = off)";
    }));
}
template <class V>
void describe(V& v, DistributedConfig& c) {
  v("backend", c.backend, one_of({"auto", "mpi", "nccl"}));
  v("bucket_cap_mb", c.bucket_cap_mb, Check<double>([](const double& mb) {
      return mb == 0 || (std::isfinite(mb) && mb >= 0.001 && mb <= 4096) ? "" : "0 (auto) or a number in [0.001, 4096]";
    }));
  v("first_bucket_mb", c.first_bucket_mb, range(0.001, 4096));
  v("overlap", c.overlap, any<bool>());
  v("interface", c.interface, any<std::string>());
  v("peer_timeout_s", c.peer_timeout_s, range(0, 86400));
}
template <class V>
void describe(V& v, CheckpointConfig& c) {
  v("root", c.root,
    Check<std::string>([](const std::string& s) { return s.empty() ? "a non-empty folder path" : ""; }));
  v("every_steps", c.every_steps, at_least(0));
  v("every_minutes", c.every_minutes, non_negative());
  v("keep", c.keep, int_range(1, 1000));
  v("async", c.async, any<bool>());
  v("resume", c.resume,
    Check<std::string>([](const std::string& s) { return s.empty() ? "auto, none or a checkpoint path" : ""; }));
}
template <class V>
void describe(V& v, CoordinatorConfig& c) {
  v("listen", c.listen, host_port());
  v("token_file", c.token_file, any<std::string>());
  v("token_env", c.token_env, any<std::string>());
  v("operator_token_file", c.operator_token_file, any<std::string>());
  v("operator_token_env", c.operator_token_env, any<std::string>());
  v("allow_plaintext", c.allow_plaintext, any<bool>());
  v("tls_cert", c.tls_cert, any<std::string>());
  v("tls_key", c.tls_key, any<std::string>());
  v("tls_client_ca", c.tls_client_ca, any<std::string>());
  v("tls_ca", c.tls_ca, any<std::string>());
  v("tls_client_cert", c.tls_client_cert, any<std::string>());
  v("tls_client_key", c.tls_client_key, any<std::string>());
  v("state_db", c.state_db, any<std::string>());
  v("heartbeat_s", c.heartbeat_s, range(0.01, 3600));
  v("heartbeat_timeout_s", c.heartbeat_timeout_s, range(0.1, 86400));
  v("lease_s", c.lease_s, range(0.1, 86400 * 7));
  v("stall_s", c.stall_s, range(0.1, 86400));
  v("unreachable_s", c.unreachable_s, range(0.1, 86400 * 7));
  v("protocol", c.protocol, one_of({"auto", "host", "rank"}));
  v("world_size", c.world_size, int_range(0, 1 << 16));
  v("max_world_size", c.max_world_size, int_range(1, 1 << 16));
}
template <class V>
void describe(V& v, MetricsConfig& c) {
  v("enabled", c.enabled, any<bool>());
  v("listen_host", c.listen_host, any<std::string>());
  v("worker_port", c.worker_port, int_range(1, 65535));
  v("coordinator_port", c.coordinator_port, int_range(1, 65535));
}
template <class V>
void describe(V& v, Config& c) {
  v.section("job", c.job);
  v.section("model", c.model);
  v.section("mask", c.mask);
  v.section("optimizer", c.optimizer);
  v.section("schedule", c.schedule);
  v.section("data", c.data);
  v.section("train", c.train);
  v.section("distributed", c.distributed);
  v.section("checkpoint", c.checkpoint);
  v.section("coordinator", c.coordinator);
  v.section("metrics", c.metrics);
}

// ---------------------------------------------------------------------------
// Reader: YAML node -> struct, with strict checks.
// ---------------------------------------------------------------------------
// A short rendering of `n` for messages. Bounded: anchors and aliases can
// make a small document expand to an exponential tree, so the walk stops
// after kShowLimit characters instead of emitting the whole node.
constexpr size_t kShowLimit = 120;

void show_into(const YAML::Node& n, std::string& out) {
  if (out.size() > kShowLimit) return;
  switch (n.Type()) {
    case YAML::NodeType::Scalar:
      out += n.Scalar().substr(0, kShowLimit + 1);
      return;
    case YAML::NodeType::Sequence: {
      out += "[";
      bool first = true;
      for (const auto& item : n) {
        if (out.size() > kShowLimit) return;
        if (!first) out += ", ";
        first = false;
        show_into(item, out);
      }
      out += "]";
      return;
    }
    case YAML::NodeType::Map: {
      out += "{";
      bool first = true;
      for (const auto& kv : n) {
        if (out.size() > kShowLimit) return;
        if (!first) out += ", ";
        first = false;
        show_into(kv.first, out);
        out += ": ";
        show_into(kv.second, out);
      }
      out += "}";
      return;
    }
    default:
      out += "~";
  }
}

std::string show(const YAML::Node& n) {
  std::string out;
  show_into(n, out);
  if (out.size() > kShowLimit) out = out.substr(0, kShowLimit) + "...";
  return n.IsScalar() ? "'" + out + "'" : out;
}

// Duplicate keys are refused: yaml-cpp keeps both and reads the first, so a
// second "lr:" lower in a file would be ignored without a word. The walk is
// bounded (aliases can make a small document an exponential tree).
void check_duplicate_keys(const YAML::Node& n, const std::string& origin, const std::string& prefix, int* budget,
                          int depth = 0) {
  // The config's keys are at most a few levels deep; an alias may make a
  // node contain itself ("a: &m {b: *m}"), so the walk stops at depth 32.
  if (--*budget < 0 || depth > 32) return;
  if (n.IsSequence()) {
    size_t i = 0;
    for (const auto& item : n)
      check_duplicate_keys(item, origin, prefix + "[" + std::to_string(i++) + "]", budget, depth + 1);
    return;
  }
  if (!n.IsMap()) return;
  std::map<std::string, int> first_line;
  for (const auto& kv : n) {
    if (!kv.first.IsScalar()) continue;  // refused later by Reader::finish, with its own message
    const std::string key = kv.first.Scalar();
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    const int line = kv.first.Mark().line + 1;
    auto [it, fresh] = first_line.emplace(key, line);
    if (!fresh)
      throw ConfigError(
          origin + ": " + path + ": duplicate key" + (line > 0 ? " at line " + std::to_string(line) : std::string()) +
          (it->second > 0 ? " (first at line " + std::to_string(it->second) + ")" : std::string()) + "; keep one");
    check_duplicate_keys(kv.second, origin, path, budget, depth + 1);
  }
}

class Reader {
 public:
  Reader(const YAML::Node& node, std::string origin, std::string prefix)
      : node_(node), origin_(std::move(origin)), prefix_(std::move(prefix)) {}

  template <class T>
  void operator()(const char* key, T& value, const Check<T>& check) {
    seen_.insert(key);
    if (!node_[key]) return;  // keep the default
    read_scalar(node_[key], path(key), value, check);
  }
  template <class T>
  void operator()(const char* key, std::vector<T>& value, const Check<T>& check) {
    seen_.insert(key);
    YAML::Node n = node_[key];
    if (!n) return;
    if (n.IsNull()) {
      value.clear();
      return;
    }
    if (!n.IsSequence()) fail(path(key), show(n), "a list");
    std::vector<T> out(n.size());
    for (size_t i = 0; i < n.size(); ++i) read_scalar(n[i], path(key) + "[" + std::to_string(i) + "]", out[i], check);
    value = std::move(out);
  }
  template <class S>
  void section(const char* key, S& s) {
    seen_.insert(key);
    YAML::Node n = node_[key];
    if (!n || n.IsNull()) return;
    if (!n.IsMap()) fail(path(key), show(n), "a mapping of keys");
    Reader sub(n, origin_, path(key));
    describe(sub, s);
    sub.finish();
  }
  // Unknown keys are errors: they are usually typos that would otherwise
  // silently keep a default.
  void finish() {
    for (const auto& kv : node_) {
      if (!kv.first.IsScalar())
        throw ConfigError(origin_ + ": " + (prefix_.empty() ? "top level" : prefix_) +
                          ": keys must be plain names, got the key " + show(kv.first));
      const std::string k = kv.first.Scalar();
      if (!seen_.count(k)) {
        std::string known;
        for (const auto& s : seen_) known += (known.empty() ? "" : ", ") + s;
        throw ConfigError(origin_ + ": " + path(k.c_str()) + ": unknown key (known keys here: " + known + ")");
      }
    }
  }

 private:
  std::string path(const char* key) const { return prefix_.empty() ? key : prefix_ + "." + key; }
  [[noreturn]] void fail(const std::string& p, const std::string& got, const std::string& expected) const {
    throw ConfigError(origin_ + ": " + p + ": expected " + expected + ", got " + got);
  }
  template <class T>
  void read_scalar(const YAML::Node& n, const std::string& p, T& out, const Check<T>& check) {
    if (!n.IsScalar()) fail(p, show(n), type_name<T>());
    T v{};
    if constexpr (std::is_same_v<T, bool>) {
      const std::string& s = n.Scalar();
      if (s == "true" || s == "True" || s == "TRUE")
        v = true;
      else if (s == "false" || s == "False" || s == "FALSE")
        v = false;
      else
        fail(p, show(n), "true or false");
    } else if constexpr (std::is_same_v<T, std::string>) {
      v = n.Scalar();
    } else {
      try {
        v = n.as<T>();
      } catch (const YAML::Exception&) {
        fail(p, show(n), type_name<T>());
      }
    }
    std::string why = check(v);
    if (!why.empty()) fail(p, show(n), why);
    out = v;
  }
  template <class T>
  static std::string type_name() {
    if constexpr (std::is_same_v<T, bool>)
      return "true or false";
    else if constexpr (std::is_same_v<T, int64_t>)
      return "an integer";
    else if constexpr (std::is_same_v<T, double>)
      return "a number";
    else
      return "a string";
  }

  YAML::Node node_;
  std::string origin_, prefix_;
  std::set<std::string> seen_;
};

// ---------------------------------------------------------------------------
// Writer: struct -> YAML emitter.
// ---------------------------------------------------------------------------
class Writer {
 public:
  explicit Writer(YAML::Emitter& e) : e_(e) {}
  template <class T>
  void operator()(const char* key, T& value, const Check<T>&) {
    e_ << YAML::Key << key << YAML::Value;
    emit(value);
  }
  template <class T>
  void operator()(const char* key, std::vector<T>& value, const Check<T>&) {
    e_ << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (auto& x : value) emit(x);
    e_ << YAML::EndSeq;
  }
  template <class S>
  void section(const char* key, S& s) {
    e_ << YAML::Key << key << YAML::Value << YAML::BeginMap;
    describe(*this, s);
    e_ << YAML::EndMap;
  }

 private:
  template <class T>
  void emit(const T& v) {
    if constexpr (std::is_same_v<T, double>) {
      std::ostringstream os;
      os.precision(17);
      os << v;
      std::string s = os.str();
      if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
      e_ << s;
    } else if constexpr (std::is_same_v<T, std::string>) {
      e_ << YAML::DoubleQuoted << v;
    } else {
      e_ << v;
    }
  }
  YAML::Emitter& e_;
};

// Applies "a.b.c=value" to the tree. The value is parsed as YAML so that
// numbers, booleans and flow lists ("[0.9, 0.95]") work.
void apply_override(YAML::Node& root, const std::string& spec) {
  auto eq = spec.find('=');
  if (eq == std::string::npos || eq == 0) throw ConfigError("--set '" + spec + "': expected key.path=value");
  std::string key = spec.substr(0, eq);
  std::string text = spec.substr(eq + 1);
  if (key == kBaseKey || key.rfind(std::string(kBaseKey) + ".", 0) == 0)
    throw ConfigError("--set " + key + ": '" + kBaseKey +
                      "' names a config file to inherit from and is read only from a config file, not from --set");
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) {
    if (part.empty()) throw ConfigError("--set '" + spec + "': empty component in key path '" + key + "'");
    parts.push_back(part);
  }
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError("--set " + key + ": value '" + text + "' is not valid YAML: " + e.msg);
  }
  if (!value.IsDefined() || value.IsNull()) value = YAML::Node(text);
  // Walk with explicit copies: yaml-cpp nodes are handles, so assigning into
  // a child updates the tree.
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node child = chain.back()[parts[i]];
    if (child.IsDefined() && !child.IsNull() && !child.IsMap())
      throw ConfigError("--set " + key + ": '" + parts[i] + "' is not a section");
    if (!child.IsDefined() || child.IsNull()) {
      chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
      child = chain.back()[parts[i]];
    }
    chain.push_back(child);
  }
  chain.back()[parts.back()] = value;
}

// Cross-field checks that the per-key constraints cannot express.
void validate(Config& c, const std::string& origin) {
  auto fail = [&](const std::string& p, const std::string& msg) { throw ConfigError(origin + ": " + p + ": " + msg); };
  auto& m = c.model;
  if (m.name == "custom") {
    if (m.depths.size() != 4)
      fail("model.depths", "expected 4 stage depths for a custom model, got " + std::to_string(m.depths.size()));
    if (m.dims.size() != 4)
      fail("model.dims", "expected 4 stage widths for a custom model, got " + std::to_string(m.dims.size()));
  } else {
    std::vector<int64_t> d, w;
    variant_shape(m.name, &d, &w);
    if (!m.depths.empty() && m.depths != d)
      fail("model.depths", "does not match variant '" + m.name + "' (use name: custom to change it)");
    if (!m.dims.empty() && m.dims != w)
      fail("model.dims", "does not match variant '" + m.name + "' (use name: custom to change it)");
    m.depths = d;
    m.dims = w;
  }
  if (c.optimizer.betas.size() != 2)
    fail("optimizer.betas", "expected 2 values, got " + std::to_string(c.optimizer.betas.size()));
  if (c.optimizer.global_batch > 0 && c.optimizer.global_batch % c.data.batch_size != 0)
    fail("optimizer.global_batch", "expected a multiple of data.batch_size (" + std::to_string(c.data.batch_size) +
                                       "), got " + std::to_string(c.optimizer.global_batch));
  if (c.data.crop_scale.size() != 2 || c.data.crop_scale[0] > c.data.crop_scale[1] || c.data.crop_scale[0] <= 0)
    fail("data.crop_scale", "expected [lo, hi] with 0 < lo <= hi <= 1");
  if (c.data.crop_ratio.size() != 2 || c.data.crop_ratio[0] > c.data.crop_ratio[1])
    fail("data.crop_ratio", "expected [lo, hi] with lo <= hi");
  if (c.data.mean.size() != static_cast<size_t>(c.model.in_chans) && c.data.mean.size() != 3)
    fail("data.mean", "expected one value per channel");
  if (c.data.mean.size() != c.data.std.size()) fail("data.std", "expected as many values as data.mean");
  if (c.schedule.warmup_epochs > c.schedule.epochs && c.schedule.epochs > 0)
    fail("schedule.warmup_epochs", "expected <= schedule.epochs (" + fmt_double(c.schedule.epochs) + ")");
  if (c.distributed.bucket_cap_mb > 0 && c.distributed.first_bucket_mb > c.distributed.bucket_cap_mb)
    fail("distributed.first_bucket_mb", "expected <= distributed.bucket_cap_mb");
  if (!c.coordinator.tls_cert.empty() != !c.coordinator.tls_key.empty())
    fail("coordinator.tls_key", "tls_cert and tls_key must be given together");
  if (c.coordinator.world_size > c.coordinator.max_world_size)
    fail("coordinator.world_size",
         "expected <= coordinator.max_world_size (" + std::to_string(c.coordinator.max_world_size) + ")");
  if (c.metrics.worker_port == c.metrics.coordinator_port)
    fail("metrics.worker_port", "must differ from metrics.coordinator_port");
}

// One document: parsed, a mapping at the top level (an empty one for an
// empty file), free of duplicate keys. Every file of a base chain goes
// through here, so each is checked on its own before the merge.
YAML::Node parse_document(const std::string& yaml, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw ConfigError(origin + ": malformed YAML at line " + std::to_string(e.mark.line + 1) + ", column " +
                      std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw ConfigError(origin + ": expected a mapping of sections at the top level, got " + show(root));
  int budget = 100000;
  check_duplicate_keys(root, origin, "", &budget);
  return root;
}

// Merges `over` into `base`: maps key by key (recursively), anything else
// replaces. An empty section over a section changes nothing (the Reader
// reads both as "keep what is there").
void merge_into(YAML::Node base, const YAML::Node& over, const std::string& origin, const std::string& prefix) {
  for (const auto& kv : over) {
    if (!kv.first.IsScalar())
      throw ConfigError(origin + ": " + (prefix.empty() ? "top level" : prefix) +
                        ": keys must be plain names, got the key " + show(kv.first));
    const std::string key = kv.first.Scalar();
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    const YAML::Node& cbase = base;
    const YAML::Node below = cbase[key];
    if (below.IsDefined() && below.IsMap() && (kv.second.IsMap() || kv.second.IsNull())) {
      YAML::Node child = base[key];
      merge_into(child, kv.second, origin, path);
    } else {
      base[key] = kv.second;
    }
  }
}

// The file at `path` with its base chain resolved: the base's tree (itself
// resolved) with the file's keys merged over it, `base` removed. `chain`
// holds the files named so far (as named, for messages) and `canonical`
// the same files' canonical paths (for cycles).
YAML::Node load_tree(const std::string& path, std::vector<std::string>* chain, std::vector<std::string>* canonical) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string named_by = chain->empty() ? std::string() : chain->back();
  auto where = [&] { return named_by + ": " + kBaseKey + ": "; };
  if (fs::is_directory(path, ec)) {
    if (named_by.empty())
      throw ConfigError(path + ": is a folder; --config takes a YAML file (e.g. configs/fcmae_atto.yaml)");
    throw ConfigError(where() + "'" + path + "' is a folder; expected a YAML config file");
  }
  std::ifstream in(path);
  if (!in) {
    if (named_by.empty()) throw ConfigError(path + ": cannot open config file (does it exist and is it readable?)");
    throw ConfigError(where() + "cannot open '" + path + "' (does it exist and is it readable?)");
  }
  std::stringstream text;
  text << in.rdbuf();
  if (canonical->empty()) {  // the file passed to load_config; a base's is known from its caller
    std::string canon = fs::weakly_canonical(path, ec).string();
    canonical->push_back(ec ? fs::absolute(path).lexically_normal().string() : canon);
  }
  chain->push_back(path);
  YAML::Node root = parse_document(text.str(), path);
  const YAML::Node& croot = root;
  const YAML::Node base_name = croot[kBaseKey];
  if (!base_name.IsDefined()) return root;
  if (!base_name.IsScalar() || base_name.Scalar().empty())
    throw ConfigError(path + ": " + kBaseKey +
                      ": expected the path of a config file to inherit from (relative to this file's folder), got " +
                      show(base_name));
  // Relative to the folder of the file that names it, as that file was named
  // (an absolute path stays as it is). Messages show the shorter spelling
  // ("configs/x.yaml" for "configs/ablations/../x.yaml") unless a symlinked
  // folder makes the two differ.
  const fs::path joined = fs::path(path).parent_path() / base_name.Scalar();
  auto canonical_of = [&](const fs::path& p) {
    std::string c = fs::weakly_canonical(p, ec).string();
    return ec ? fs::absolute(p).lexically_normal().string() : c;
  };
  const std::string base_canon = canonical_of(joined);
  const std::string base_path =
      canonical_of(joined.lexically_normal()) == base_canon ? joined.lexically_normal().string() : joined.string();
  for (size_t i = 0; i < canonical->size(); ++i) {
    if ((*canonical)[i] != base_canon) continue;
    std::string cycle;
    for (size_t j = i; j < chain->size(); ++j) cycle += (*chain)[j] + " -> ";
    throw ConfigError(path + ": " + kBaseKey + ": '" + base_name.Scalar() + "' makes a cycle: " + cycle + base_path);
  }
  if (static_cast<int>(chain->size()) > kMaxBases) {
    std::string names;
    for (const auto& c : *chain) names += c + " -> ";
    throw ConfigError(path + ": " + kBaseKey + ": more than " + std::to_string(kMaxBases) +
                      " bases above the config file: " + names + base_path);
  }
  canonical->push_back(base_canon);
  YAML::Node merged = load_tree(base_path, chain, canonical);
  root.remove(kBaseKey);
  merge_into(merged, root, path, "");
  return merged;
}

// Anything yaml-cpp or the standard library throws on a strange document
// becomes a ConfigError, so callers handle exactly one exception type.
template <class F>
Config guarded(const std::string& origin, F&& load) {
  try {
    return load();
  } catch (const ConfigError&) {
    throw;
  } catch (const YAML::Exception& e) {
    throw ConfigError(origin + ": unsupported YAML structure: " + e.msg);
  } catch (const std::exception& e) {
    throw ConfigError(origin + ": unsupported YAML content: " + e.what());
  }
}

Config load_node(YAML::Node root, const std::string& origin, const std::vector<std::string>& overrides) {
  for (const auto& o : overrides) apply_override(root, o);
  Config c;
  std::string where = overrides.empty() ? origin : origin + " (with --set overrides)";
  Reader r(root, where, "");
  describe(r, c);
  r.finish();
  validate(c, where);
  return c;
}

}  // namespace

void variant_shape(const std::string& name, std::vector<int64_t>* depths, std::vector<int64_t>* dims) {
  const VariantShape* v = find_variant(name);
  if (v == nullptr) {
    std::string accepted;
    for (const auto& e : variant_table()) accepted += std::string(accepted.empty() ? "" : "|") + e.name;
    throw ConfigError("unknown model variant '" + name + "' (expected " + accepted + ")");
  }
  *depths = v->depths;
  *dims = v->dims;
}

Config load_config_text(const std::string& yaml, const std::string& origin, const std::vector<std::string>& overrides) {
  return guarded(origin, [&] {
    YAML::Node root = parse_document(yaml, origin);
    const YAML::Node& croot = root;
    if (croot[kBaseKey].IsDefined())
      throw ConfigError(origin + ": " + kBaseKey +
                        ": needs a config file (its path is relative to the file that names it); load this text "
                        "from a file with --config FILE");
    return load_node(root, origin, overrides);
  });
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return guarded(path, [&] {
    std::vector<std::string> chain, canonical;
    YAML::Node root = load_tree(path, &chain, &canonical);
    std::string origin = path;
    if (chain.size() > 1) {
      origin += chain.size() == 2 ? " (merged over its base " : " (merged over its bases ";
      for (size_t i = 1; i < chain.size(); ++i) origin += (i > 1 ? ", " : "") + chain[i];
      origin += ")";
    }
    return load_node(root, origin, overrides);
  });
}

std::string to_yaml(const Config& config) {
  Config copy = config;
  YAML::Emitter e;
  e << YAML::BeginMap;
  Writer w(e);
  describe(w, copy);
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace cnx
