#include "model/tensor_file.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <filesystem>
#include <fstream>
#include <iterator>

namespace cnx::model {

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
  c10::IValue value;
  try {
    value = torch::jit::pickle_load(bytes);
  } catch (const std::exception& e) {
    throw WeightsError("'" + origin + "' is not a .pt written by torch::pickle_save (" +
                       std::string(e.what()).substr(0, 200) +
                       "); Python torch.save files are not supported: convert them to safetensors");
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
    out.emplace_back(entry.key().toStringRef(), entry.value().toTensor());
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
