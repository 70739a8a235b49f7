#include "model/tensor_file.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/unpickler.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <tuple>
#include <unordered_map>

namespace cnx::model {
namespace {

// The bytes of a .pt for PyTorchStreamReader, reads bounded by the buffer.
class BytesReader final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BytesReader(const std::vector<char>& bytes) : bytes_(bytes) {}
  size_t size() const override { return bytes_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= bytes_.size()) return 0;
    n = static_cast<size_t>(std::min<uint64_t>(n, bytes_.size() - pos));
    std::memcpy(buf, bytes_.data() + pos, n);
    return n;
  }

 private:
  const std::vector<char>& bytes_;
};

// LibTorch's unpickler (1.13) allocates and zero-fills the length that a
// length-prefixed opcode announces before it checks that so many bytes
// follow: a 2 KB .pt announcing a 4 GiB string cost 4 GiB of memory and a
// minute; and it sizes its memo table by a LONG_BINPUT index (found by
// fuzz/pt_fuzz.cc: fuzz/corpus/pt/oom-unpickler-readbytes-4gib,
// oom-unpickler-memo-index).
// This walks the opcodes of data.pkl first and returns the problem ("" when
// none) of a length beyond the end of the pickle. An opcode it does not know
// ends the walk: LibTorch then refuses it itself.
std::string check_pickle_lengths(const uint8_t* p, size_t n) {
  size_t i = 0;
  auto le = [&](size_t k) {
    uint64_t v = 0;
    for (size_t j = 0; j < k; ++j) v |= uint64_t{p[i + j]} << (8 * j);
    return v;
  };
  auto skip_line = [&]() {
    const void* nl = std::memchr(p + i, '\n', n - i);
    if (!nl) return false;
    i = static_cast<size_t>(static_cast<const uint8_t*>(nl) - p) + 1;
    return true;
  };
  while (i < n) {
    const uint8_t op = p[i++];
    size_t fixed = 0, len_bytes = 0, lines = 0;
    switch (op) {
      case '.':  // STOP
        return "";
      case 'K':
      case 'q':
      case 'h':
      case 0x80:  // BININT1 BINPUT BINGET PROTO
        fixed = 1;
        break;
      case 'M':  // BININT2
        fixed = 2;
        break;
      case 'J':
      case 'r':
      case 'j':  // BININT LONG_BINPUT LONG_BINGET
        fixed = 4;
        break;
      case 'G':
      case 0x95:  // BINFLOAT FRAME
        fixed = 8;
        break;
      case 'U':
      case 0x8c:
      case 'C':
      case 0x8a:  // SHORT_BINSTRING SHORT_BINUNICODE SHORT_BINBYTES LONG1
        len_bytes = 1;
        break;
      case 'X':
      case 'T':
      case 'B':
      case 0x8b:  // BINUNICODE BINSTRING BINBYTES LONG4
        len_bytes = 4;
        break;
      case 0x8d:
      case 0x8e:
      case 0x96:  // BINUNICODE8 BINBYTES8 BYTEARRAY8
        len_bytes = 8;
        break;
      case 'c':
      case 'i':  // GLOBAL INST: module and name lines
        lines = 2;
        break;
      case 'I':
      case 'L':
      case 'S':
      case 'V':
      case 'F':
      case 'p':
      case 'g':
      case 'P':
        lines = 1;
        break;
      case '(':
      case ')':
      case '}':
      case ']':
      case 'R':
      case 'b':
      case 'Q':
      case 's':
      case 'u':
      case 'a':
      case 'e':
      case 't':
      case 0x85:
      case 0x86:
      case 0x87:
      case 0x88:
      case 0x89:
      case 'N':
      case '0':
      case '1':
      case '2':
      case 0x81:
      case 0x94:
      case 'd':
      case 'l':
      case 'o':
      case 0x93:
      case 0x8f:
      case 0x90:
      case 0x91:
      case 0x92:
        break;  // no argument
      default:
        return "";
    }
    for (size_t l = 0; l < lines; ++l)
      if (!skip_line()) return "";
    if (n - i < fixed + len_bytes) return "opcode at offset " + std::to_string(i - 1) + " runs past the end";
    // LONG_BINPUT: LibTorch sizes its memo table by the index (a 4-byte
    // index of 2^31 asked for 32 GiB). A pickler numbers its memo entries
    // from 0, one per put of at least two bytes: an index beyond the pickle's
    // size is no pickle's.
    if (op == 'r' && le(4) >= n) return "memo index at offset " + std::to_string(i - 1) + " is out of range";
    if (len_bytes > 0) {
      const uint64_t len = le(len_bytes);
      i += len_bytes;
      if (len > n - i)
        return "opcode at offset " + std::to_string(i - 1 - len_bytes) + " announces " + std::to_string(len) +
               " bytes, " + std::to_string(n - i) + " remain";
      i += static_cast<size_t>(len);
    }
    i += fixed;
  }
  return "";
}

}  // namespace

std::vector<char> pickle_tensors(const NamedTensors& tensors, const std::string& outer_key) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, t] : tensors) {
    if (dict.contains(name)) throw WeightsError("pickle: duplicate tensor name '" + name + "'");
    dict.insert(name, t.detach().contiguous());
  }
  c10::IValue value(dict);
  if (!outer_key.empty()) {
    c10::impl::GenericDict outer(c10::StringType::get(),
                                 c10::DictType::create(c10::StringType::get(), c10::TensorType::get()));
    outer.insert(outer_key, value);
    value = c10::IValue(outer);
  }
  return torch::jit::pickle_save(value);
}

NamedTensors unpickle_tensors(const std::vector<char>& bytes, const std::string& origin) {
  // One archive reader, ours, for both the length check and the load:
  // torch::jit::pickle_load reads through LibTorch's own VectorReader, which
  // copies whatever range miniz asks for without a bounds check (a 577-byte
  // zip with a lying central directory made it read past the heap block:
  // found by fuzz/pt_fuzz.cc in CI, fuzz/corpus/pt/regress-segv-vector-reader).
  // BytesReader clamps every read to the buffer and miniz refuses short reads.
  c10::IValue value;
  auto not_pt = [&](const std::exception& e) {
    return WeightsError("'" + origin + "' is not a .pt written by torch::pickle_save (" +
                        std::string(e.what()).substr(0, 200) +
                        "); Python torch.save files are not supported: convert them to safetensors");
  };
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(std::make_shared<BytesReader>(bytes));
  } catch (const std::exception& e) {
    throw not_pt(e);
  }
  std::string problem;
  at::DataPtr pkl;
  size_t pkl_size = 0;
  try {
    if (!reader->hasRecord("data.pkl")) throw std::runtime_error("no data.pkl");
    std::tie(pkl, pkl_size) = reader->getRecord("data.pkl");
    problem = check_pickle_lengths(static_cast<const uint8_t*>(pkl.get()), pkl_size);
  } catch (const std::exception& e) {
    throw not_pt(e);
  }
  if (!problem.empty()) throw WeightsError("'" + origin + "' has a damaged pickle (data.pkl: " + problem + ")");
  // What torch::jit::pickle_load does (readArchiveAndTensors), on our reader,
  // remembering the byte size of every tensor record it hands out: the
  // unpickler sizes each storage from the pickle's element count, not from
  // the record, so a pickle that declares more elements than its record
  // holds would give a tensor over a smaller buffer (found by
  // fuzz/pt_fuzz.cc; fuzz/corpus/pt/regress-storage-larger-than-record).
  std::unordered_map<const void*, size_t> record_bytes;
  try {
    size_t pos = 0;
    auto read = [&](char* buf, size_t n) -> size_t {
      const size_t k = std::min(n, pkl_size - pos);
      if (k > 0) std::memcpy(buf, static_cast<const char*>(pkl.get()) + pos, k);
      pos += k;
      return k;
    };
    auto read_record = [&](const std::string& name) -> at::DataPtr {
      auto [ptr, size] = reader->getRecord("data/" + name);
      record_bytes[ptr.get()] = size;
      return std::move(ptr);
    };
    torch::jit::Unpickler unpickler(read, /*type_resolver=*/nullptr, /*obj_loader=*/nullptr, read_record,
                                    /*device=*/{});
    unpickler.set_version(reader->version());
    value = unpickler.parse_ivalue();
  } catch (const std::exception& e) {
    throw not_pt(e);
  }
  if (!value.isGenericDict()) {
    throw WeightsError("'" + origin + "' does not hold a dict of tensors (got " + value.tagKind() +
                       "); convert Python checkpoints to safetensors");
  }
  // {"model": {name: tensor}} as the reference's checkpoints nest it.
  for (const auto& entry : value.toGenericDict()) {
    if (entry.key().isString() && entry.key().toStringRef() == "model" && entry.value().isGenericDict()) {
      value = entry.value();
      break;
    }
  }
  NamedTensors out;
  for (const auto& entry : value.toGenericDict()) {
    if (!entry.key().isString() || !entry.value().isTensor()) {
      throw WeightsError("'" + origin + "' holds a dict that is not str -> Tensor");
    }
    const at::Tensor t = entry.value().toTensor();
    if (t.has_storage() && t.storage().nbytes() > 0) {
      const auto it = record_bytes.find(t.storage().data_ptr().get());
      const size_t have = it == record_bytes.end() ? 0 : it->second;
      if (t.storage().nbytes() > have)
        throw WeightsError("'" + origin + "': tensor '" + entry.key().toStringRef() + "' declares a storage of " +
                           std::to_string(t.storage().nbytes()) + " bytes over a record of " + std::to_string(have) +
                           " bytes");
    }
    out.emplace_back(entry.key().toStringRef(), t);
  }
  return out;
}

void save_pt(const std::string& path, const NamedTensors& tensors, const std::string& pt_key) {
  NamedTensors cpu;
  cpu.reserve(tensors.size());
  for (const auto& [name, t] : tensors) cpu.emplace_back(name, t.detach().to(at::kCPU));
  const std::vector<char> bytes = pickle_tensors(cpu, pt_key);
  write_file_replacing(path, bytes.data(), bytes.size());
}

void write_file_replacing(const std::string& path, const char* data, size_t size) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw WeightsError("cannot open '" + tmp + "' for writing");
    out.write(data, static_cast<std::streamsize>(size));
    out.flush();
    if (!out) throw WeightsError("write to '" + tmp + "' failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw WeightsError("cannot rename '" + tmp + "' to '" + path + "': " + ec.message());
}

NamedTensors read_pt(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw WeightsError("cannot open '" + path + "' for reading");
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw WeightsError("cannot read '" + path + "'");
  return unpickle_tensors(bytes, path);
}

}  // namespace cnx::model
