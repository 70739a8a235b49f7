#include "model/safetensors.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

namespace cnx::model {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // as the Rust reference

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  uint64_t size;
};

const std::vector<DtypeInfo>& dtype_table() {
  static const std::vector<DtypeInfo> kTable = {
      {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2},  {"BF16", at::kBFloat16, 2},
      {"I64", at::kLong, 8},   {"I32", at::kInt, 4},   {"I16", at::kShort, 2}, {"I8", at::kChar, 1},
      {"U8", at::kByte, 1},    {"BOOL", at::kBool, 1},
  };
  return kTable;
}

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : dtype_table()) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const DtypeInfo* find_dtype(at::ScalarType type) {
  for (const auto& d : dtype_table()) {
    if (type == d.type) return &d;
  }
  return nullptr;
}

bool host_is_little_endian() {
  const uint16_t probe = 1;
  uint8_t first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw WeightsError("safetensors '" + source + "': " + what);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

uint64_t read_u64_le(const std::string& bytes) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(bytes[i]);
  return v;
}

// Builds the header's JSON tree from SAX events, rejecting duplicate keys
// (at any depth) and nesting deeper than the format needs, so hostile headers
// can neither blow the stack nor hide a second definition of a tensor.
// Linear in the header size: each key is checked against its own object once
// (a map lookup), nothing is rescanned when an object closes.
class HeaderBuilder {
 public:
  explicit HeaderBuilder(const std::string& source) : source_(source) {}

  json root;

  bool null() { return put(json(nullptr)); }
  bool boolean(bool v) { return put(json(v)); }
  bool number_integer(json::number_integer_t v) { return put(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return put(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t&) { return put(json(v)); }
  bool string(json::string_t& v) { return put(json(std::move(v))); }
  bool binary(json::binary_t&) { fail(source_, "header holds binary data"); }
  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(json::string_t& k) {
    if (open_.back()->contains(k)) fail(source_, "duplicate key '" + k + "' in header");
    key_ = std::move(k);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const json::exception& e) {
    fail(source_, std::string("header is not valid JSON: ") + e.what());
  }

 private:
  // root object -> tensor entry -> shape / data_offsets array.
  static constexpr size_t kMaxDepth = 3;

  // Stores v where the parser stands: the root, under the pending key of the
  // innermost object, or at the end of the innermost array. Pointers on the
  // stack stay valid: an open container is always its parent's last element.
  json* place(json v) {
    if (open_.empty()) {
      root = std::move(v);
      return &root;
    }
    json& parent = *open_.back();
    if (parent.is_object()) {
      json& slot = parent[key_];
      slot = std::move(v);
      return &slot;
    }
    parent.push_back(std::move(v));
    return &parent.back();
  }
  bool put(json v) {
    place(std::move(v));
    return true;
  }
  bool open(json v) {
    if (open_.size() >= kMaxDepth) fail(source_, "header JSON nests deeper than the format allows");
    open_.push_back(place(std::move(v)));
    return true;
  }
  bool close() {
    open_.pop_back();
    return true;
  }

  const std::string& source_;
  std::vector<json*> open_;
  std::string key_;
};

json parse_header_json(const std::string& text, const std::string& source) {
  HeaderBuilder builder(source);
  try {
    json::sax_parse(text, &builder);
  } catch (const json::exception& e) {
    fail(source, std::string("header is not valid JSON: ") + e.what());
  }
  return std::move(builder.root);
}

uint64_t as_u64(const json& v, const std::string& source, const std::string& what) {
  if (!v.is_number_unsigned()) fail(source, what + " must be a non-negative integer, got " + v.dump());
  return v.get<uint64_t>();
}

SafetensorsEntry parse_entry(const std::string& name, const json& v, const std::string& source) {
  const std::string where = "tensor '" + name + "'";
  if (name.empty()) fail(source, "empty tensor name in header");
  if (!v.is_object()) fail(source, where + ": entry must be an object");
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets") {
      fail(source, where + ": unknown field '" + it.key() + "'");
    }
  }
  if (!v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets")) {
    fail(source, where + ": needs dtype, shape and data_offsets");
  }
  SafetensorsEntry e;
  e.name = name;
  if (!v["dtype"].is_string()) fail(source, where + ": dtype must be a string");
  e.dtype = v["dtype"].get<std::string>();
  const DtypeInfo* dt = find_dtype(e.dtype);
  if (!dt) {
    std::string ok;
    for (const auto& d : dtype_table()) ok += std::string(ok.empty() ? "" : " ") + d.name;
    fail(source, where + ": unsupported dtype '" + e.dtype + "' (supported: " + ok + ")");
  }
  const json& shape = v["shape"];
  if (!shape.is_array()) fail(source, where + ": shape must be an array");
  uint64_t numel = 1;
  uint64_t strides = 1;  // product of the non-zero dims: LibTorch's strides must fit in int64
  bool overflow = false;
  for (const auto& d : shape) {
    const uint64_t n = as_u64(d, source, where + ": shape entry");
    if (n > static_cast<uint64_t>(INT64_MAX)) fail(source, where + ": shape entry too large");
    e.shape.push_back(static_cast<int64_t>(n));
    overflow = overflow || __builtin_mul_overflow(numel, n, &numel);
    overflow = overflow || (n > 0 && __builtin_mul_overflow(strides, n, &strides));
  }
  overflow = overflow || strides > static_cast<uint64_t>(INT64_MAX);
  uint64_t nbytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, dt->size, &nbytes);
  if (overflow) fail(source, where + ": shape " + shape_str(e.shape) + " overflows");
  const json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2) fail(source, where + ": data_offsets must be [begin, end]");
  e.begin = as_u64(off[0], source, where + ": data_offsets begin");
  e.end = as_u64(off[1], source, where + ": data_offsets end");
  if (e.end < e.begin) fail(source, where + ": data_offsets end < begin");
  if (e.end - e.begin != nbytes) {
    fail(source, where + ": data_offsets span " + std::to_string(e.end - e.begin) + " bytes but dtype " + e.dtype +
                     " x shape " + shape_str(e.shape) + " needs " + std::to_string(nbytes));
  }
  return e;
}

// Reads [offset, offset + n) of the source into dst; the caller has checked the range.
using ReadAt = std::function<void(uint64_t offset, uint64_t n, void* dst)>;

SafetensorsData load_tensors(const SafetensorsHeader& header, const ReadAt& read_at, const std::string& source) {
  if (!host_is_little_endian()) fail(source, "big-endian hosts are not supported");
  SafetensorsData out;
  out.metadata = header.metadata;
  for (const auto& e : header.entries) {
    const DtypeInfo* dt = find_dtype(e.dtype);
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(dt->type));
    if (e.end > e.begin) read_at(header.data_start + e.begin, e.end - e.begin, t.data_ptr());
    if (dt->type == at::kBool) {
      const auto* p = static_cast<const uint8_t*>(t.data_ptr());
      for (uint64_t i = 0; i < e.end - e.begin; ++i) {
        if (p[i] > 1) fail(source, "tensor '" + e.name + "': BOOL byte " + std::to_string(p[i]) + " is not 0/1");
      }
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

}  // namespace

const at::Tensor& SafetensorsData::at(const std::string& name) const {
  for (const auto& kv : tensors) {
    if (kv.first == name) return kv.second;
  }
  throw WeightsError("safetensors: no tensor named '" + name + "'");
}

const std::vector<std::string>& safetensors_dtypes() {
  static const std::vector<std::string> kNames = [] {
    std::vector<std::string> v;
    for (const auto& d : dtype_table()) v.emplace_back(d.name);
    return v;
  }();
  return kNames;
}

SafetensorsHeader parse_safetensors_header(const std::string& prefix, uint64_t file_size, const std::string& source) {
  if (file_size < 8 || prefix.size() < 8) {
    fail(source, "truncated: " + std::to_string(file_size) + " bytes, the header length alone needs 8");
  }
  const uint64_t n = read_u64_le(prefix);
  if (n > kMaxHeaderBytes) fail(source, "header length " + std::to_string(n) + " exceeds the 100 MB limit");
  if (n > file_size - 8) {
    fail(source, "header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(file_size) +
                     " bytes)");
  }
  if (prefix.size() < 8 + n) fail(source, "truncated header");
  if (n < 2 || prefix[8] != '{') fail(source, "header must be a JSON object starting with '{'");
  const json root = parse_header_json(prefix.substr(8, n), source);
  if (!root.is_object()) fail(source, "header must be a JSON object");

  SafetensorsHeader h;
  h.data_start = 8 + n;
  const uint64_t data_size = file_size - h.data_start;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) fail(source, "__metadata__ must be an object of strings");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) fail(source, "__metadata__['" + m.key() + "'] must be a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    h.entries.push_back(parse_entry(it.key(), it.value(), source));
    const auto& e = h.entries.back();
    if (e.end > data_size) {
      fail(source, "tensor '" + e.name + "': data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                       ") out of range: the data block has " + std::to_string(data_size) + " bytes (file truncated?)");
    }
  }
  std::sort(h.entries.begin(), h.entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  const SafetensorsEntry* prev = nullptr;
  for (const auto& e : h.entries) {
    if (e.begin < expected) {
      fail(source, "tensor '" + e.name + "' overlaps tensor '" + (prev ? prev->name : "") + "' (offset " +
                       std::to_string(e.begin) + " < " + std::to_string(expected) + ")");
    }
    if (e.begin > expected) {
      fail(source, "gap of " + std::to_string(e.begin - expected) + " bytes before tensor '" + e.name +
                       "' (offsets must tile the data block)");
    }
    expected = e.end;
    prev = &e;
  }
  if (expected != data_size) {
    fail(source, std::to_string(data_size - expected) + " bytes after the last tensor (data block has " +
                     std::to_string(data_size) + ", tensors cover " + std::to_string(expected) + ")");
  }
  return h;
}

SafetensorsData parse_safetensors(const void* bytes, size_t size, const std::string& source) {
  const char* p = static_cast<const char*>(bytes);
  std::string prefix(p, std::min<size_t>(size, 8));
  if (size >= 8) {
    const uint64_t n = read_u64_le(prefix);
    if (n <= size - 8) prefix.assign(p, 8 + n);
  }
  const SafetensorsHeader h = parse_safetensors_header(prefix, size, source);
  return load_tensors(
      h, [&](uint64_t off, uint64_t n, void* dst) { std::memcpy(dst, p + off, n); }, source);
}

SafetensorsData read_safetensors(const std::string& path) {
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) throw WeightsError("safetensors '" + path + "': cannot stat: " + ec.message());
  std::ifstream in(path, std::ios::binary);
  if (!in) throw WeightsError("safetensors '" + path + "': cannot open for reading");
  std::string prefix(std::min<uint64_t>(size, 8), '\0');
  in.read(prefix.data(), static_cast<std::streamsize>(prefix.size()));
  if (size >= 8) {
    const uint64_t n = read_u64_le(prefix);
    if (n <= kMaxHeaderBytes && n <= size - 8) {
      prefix.resize(8 + n);
      in.read(prefix.data() + 8, static_cast<std::streamsize>(n));
    }
  }
  if (!in) fail(path, "read error in the header");
  const SafetensorsHeader h = parse_safetensors_header(prefix, size, path);
  return load_tensors(
      h,
      [&](uint64_t off, uint64_t n, void* dst) {
        in.seekg(static_cast<std::streamoff>(off));
        in.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
        if (!in) fail(path, "read error at offset " + std::to_string(off) + " (file changed while reading?)");
      },
      path);
}

std::string serialize_safetensors(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  if (!host_is_little_endian()) throw WeightsError("safetensors: big-endian hosts are not supported");
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> blobs;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty() || name == "__metadata__") throw WeightsError("safetensors: invalid tensor name '" + name + "'");
    if (!seen.insert(name).second) throw WeightsError("safetensors: duplicate tensor name '" + name + "'");
    if (!tensor.defined()) throw WeightsError("safetensors: tensor '" + name + "' is undefined");
    const DtypeInfo* dt = find_dtype(tensor.scalar_type());
    if (!dt) {
      throw WeightsError("safetensors: tensor '" + name + "' has unsupported dtype " +
                         std::string(c10::toString(tensor.scalar_type())));
    }
    at::Tensor blob = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(blob.numel()) * dt->size;
    header[name] = {{"dtype", dt->name}, {"shape", blob.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    blobs.push_back(blob);
  }
  // nlohmann sorts object keys; offsets are explicit, so data order stays ours.
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  std::string out;
  out.reserve(8 + text.size() + offset);
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += text;
  for (const auto& b : blobs) {
    out.append(static_cast<const char*>(b.data_ptr()), static_cast<size_t>(b.numel()) * b.element_size());
  }
  return out;
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string bytes = serialize_safetensors(tensors, metadata);
  write_file_replacing(path, bytes.data(), bytes.size());
}

}  // namespace cnx::model
