#include "model/weights.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "common/strings.h"

namespace cnx::model {
namespace {

bool is_index(const std::string& s) {
  return !s.empty() && s.size() < 6 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
         (s == "0" || s[0] != '0');
}

bool is_wb(const std::string& s) {
  return s == "weight" || s == "bias";
}

std::string shape_str(at::IntArrayRef shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? "," : "") << shape[i];
  os << "]";
  return os.str();
}

bool is_grn(const std::string& ref_name) {
  return ref_name.size() > 10 &&
         (ref_name.find(".grn.gamma") == ref_name.size() - 10 || ref_name.find(".grn.beta") == ref_name.size() - 9);
}

// GRN tensors are (1,1,1,C) here, (C) in timm, (1,C) in the sparse reference:
// accept any shape that is all ones but a last dimension of C.
bool grn_compatible(at::IntArrayRef file, at::IntArrayRef model) {
  if (file.empty()) return false;
  for (size_t i = 0; i + 1 < file.size(); ++i) {
    if (file[i] != 1) return false;
  }
  return file.back() == model.back();
}

bool is_head_name(const std::string& ref) {
  return starts_with(ref, "head.");
}
bool is_final_norm_name(const std::string& ref) {
  return starts_with(ref, "norm.");
}

}  // namespace

std::string to_string(Naming naming) {
  switch (naming) {
    case Naming::kAuto:
      return "auto";
    case Naming::kReference:
      return "reference";
    case Naming::kTimm:
      return "timm";
  }
  return "?";
}

Naming parse_naming(const std::string& text) {
  if (text == "auto") return Naming::kAuto;
  if (text == "reference") return Naming::kReference;
  if (text == "timm") return Naming::kTimm;
  throw std::invalid_argument("unknown weight naming '" + text + "' (expected auto, reference or timm)");
}

std::optional<std::string> reference_to_timm(const std::string& name) {
  const auto p = split(name, '.');
  if (p.size() == 4 && p[0] == "downsample_layers" && is_index(p[1]) && (p[2] == "0" || p[2] == "1") && is_wb(p[3])) {
    if (p[1] == "0") return "stem." + p[2] + "." + p[3];
    return "stages." + p[1] + ".downsample." + p[2] + "." + p[3];
  }
  if (p.size() == 5 && p[0] == "stages" && is_index(p[1]) && is_index(p[2])) {
    const std::string base = "stages." + p[1] + ".blocks." + p[2] + ".";
    if (p[3] == "dwconv" && is_wb(p[4])) return base + "conv_dw." + p[4];
    if (p[3] == "norm" && is_wb(p[4])) return base + "norm." + p[4];
    if (p[3] == "pwconv1" && is_wb(p[4])) return base + "mlp.fc1." + p[4];
    if (p[3] == "pwconv2" && is_wb(p[4])) return base + "mlp.fc2." + p[4];
    if (p[3] == "grn" && p[4] == "gamma") return base + "mlp.grn.weight";
    if (p[3] == "grn" && p[4] == "beta") return base + "mlp.grn.bias";
  }
  if (p.size() == 4 && p[0] == "stages" && is_index(p[1]) && is_index(p[2]) && p[3] == "gamma")
    return "stages." + p[1] + ".blocks." + p[2] + ".gamma";  // V1 layer scale
  if (p.size() == 2 && p[0] == "norm" && is_wb(p[1])) return "head.norm." + p[1];
  if (p.size() == 2 && p[0] == "head" && is_wb(p[1])) return "head.fc." + p[1];
  return std::nullopt;
}

std::optional<std::string> timm_to_reference(const std::string& name) {
  const auto p = split(name, '.');
  if (p.size() == 3 && p[0] == "stem" && (p[1] == "0" || p[1] == "1") && is_wb(p[2])) {
    return "downsample_layers.0." + p[1] + "." + p[2];
  }
  if (p.size() == 5 && p[0] == "stages" && is_index(p[1]) && p[1] != "0" && p[2] == "downsample" &&
      (p[3] == "0" || p[3] == "1") && is_wb(p[4])) {
    return "downsample_layers." + p[1] + "." + p[3] + "." + p[4];
  }
  if (p.size() >= 5 && p[0] == "stages" && is_index(p[1]) && p[2] == "blocks" && is_index(p[3])) {
    const std::string base = "stages." + p[1] + "." + p[3] + ".";
    if (p.size() == 6 && p[4] == "conv_dw" && is_wb(p[5])) return base + "dwconv." + p[5];
    if (p.size() == 6 && p[4] == "norm" && is_wb(p[5])) return base + "norm." + p[5];
    if (p.size() == 7 && p[4] == "mlp" && p[5] == "fc1" && is_wb(p[6])) return base + "pwconv1." + p[6];
    if (p.size() == 7 && p[4] == "mlp" && p[5] == "fc2" && is_wb(p[6])) return base + "pwconv2." + p[6];
    if (p.size() == 7 && p[4] == "mlp" && p[5] == "grn" && p[6] == "weight") return base + "grn.gamma";
    if (p.size() == 7 && p[4] == "mlp" && p[5] == "grn" && p[6] == "bias") return base + "grn.beta";
    if (p.size() == 5 && p[4] == "gamma") return base + "gamma";  // V1 layer scale
  }
  if (p.size() == 3 && p[0] == "head" && p[1] == "norm" && is_wb(p[2])) return "norm." + p[2];
  if (p.size() == 3 && p[0] == "head" && p[1] == "fc" && is_wb(p[2])) return "head." + p[2];
  return std::nullopt;
}

Naming detect_naming(const std::vector<std::string>& keys, const std::string& source) {
  std::string ref_example, timm_example;
  for (const auto& k : keys) {
    if (ref_example.empty() && reference_to_timm(k)) ref_example = k;
    if (timm_example.empty() && timm_to_reference(k)) timm_example = k;
  }
  if (!ref_example.empty() && !timm_example.empty()) {
    throw WeightsError("'" + source + "' mixes reference names (e.g. '" + ref_example + "') and timm names (e.g. '" +
                       timm_example + "')");
  }
  if (!ref_example.empty()) return Naming::kReference;
  if (!timm_example.empty()) return Naming::kTimm;
  std::string first;
  for (size_t i = 0; i < keys.size() && i < 3; ++i) first += (i ? ", " : "") + keys[i];
  throw WeightsError("'" + source + "' has no ConvNeXt V2 keys in reference or timm naming (" +
                     std::to_string(keys.size()) + " keys" + (first.empty() ? "" : ", first: " + first) +
                     "; wrong file, or set the key prefix?)");
}

LoadReport load_state_dict(ConvNeXtV2Impl& model, const NamedTensors& tensors, const LoadOptions& options,
                           const std::string& source) {
  LoadReport report;
  // 1. Keys under the prefix, prefix stripped.
  NamedTensors candidates;
  for (const auto& [name, t] : tensors) {
    if (starts_with(name, options.prefix) && name.size() > options.prefix.size()) {
      candidates.emplace_back(name.substr(options.prefix.size()), t);
    } else {
      report.ignored.push_back(name);
    }
  }
  std::vector<std::string> stripped;
  for (const auto& kv : candidates) stripped.push_back(kv.first);
  const std::string where = "'" + source + "'" + (options.prefix.empty() ? "" : " (prefix '" + options.prefix + "')");
  if (candidates.empty()) {
    throw WeightsError("cannot load " + where + ": no keys" + (options.prefix.empty() ? "" : " start with the prefix") +
                       " (" + std::to_string(tensors.size()) + " keys in file)");
  }
  report.naming = options.naming == Naming::kAuto ? detect_naming(stripped, where) : options.naming;

  // 2. File keys in reference naming; unmappable ones stay as they are (and
  //    will be reported as unexpected under their file name).
  std::map<std::string, std::pair<std::string, at::Tensor>> file;  // ref name -> (file name, tensor)
  for (const auto& [name, t] : candidates) {
    std::string ref = name;
    if (report.naming == Naming::kTimm) ref = timm_to_reference(name).value_or("<unmapped>" + name);
    if (options.ignore_file_head && is_head_name(ref)) {
      report.ignored.push_back(options.prefix + name);
      continue;
    }
    file.emplace(ref, std::make_pair(options.prefix + name, t));
  }

  // 3. Match against the model's parameters.
  std::vector<std::string> missing, wrong_shape, wrong_dtype;
  std::vector<std::pair<at::Tensor, at::Tensor>> writes;  // (param, file tensor)
  std::set<std::string> used;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    const at::Tensor& param = item.value();
    auto it = file.find(name);
    if (it == file.end()) {
      const bool head_ok = (options.allow_missing_head && (is_head_name(name) || is_final_norm_name(name))) ||
                           (options.ignore_file_head && is_head_name(name));
      if (head_ok) {
        report.left_at_init.push_back(name);
      } else {
        missing.push_back(report.naming == Naming::kTimm ? reference_to_timm(name).value_or(name) + " (" + name + ")"
                                                         : name);
      }
      continue;
    }
    used.insert(name);
    const at::Tensor& t = it->second.second;
    const bool shape_ok = t.sizes() == param.sizes() || (is_grn(name) && grn_compatible(t.sizes(), param.sizes()));
    if (!shape_ok) {
      wrong_shape.push_back(it->second.first + ": file " + shape_str(t.sizes()) + " vs model " +
                            shape_str(param.sizes()));
    } else if (!at::isFloatingType(t.scalar_type())) {
      wrong_dtype.push_back(it->second.first + ": file dtype " + std::string(c10::toString(t.scalar_type())) +
                            " is not floating point");
    } else {
      writes.emplace_back(param, t);
      report.loaded.push_back(name);
    }
  }
  std::vector<std::string> unexpected;
  for (const auto& [ref, entry] : file) {
    if (!used.count(ref)) unexpected.push_back(entry.first);
  }

  const size_t problems = missing.size() + unexpected.size() + wrong_shape.size() + wrong_dtype.size();
  if (problems > 0) {
    std::ostringstream os;
    os << "cannot load " << where << " into ConvNeXtV2 (" << describe(model.options()) << "; file naming "
       << to_string(report.naming) << "): " << problems << " problem(s)";
    auto list = [&os](const char* title, const std::vector<std::string>& v) {
      if (v.empty()) return;
      os << "\n  " << title << " (" << v.size() << "):";
      for (const auto& s : v) os << "\n    " << s;
    };
    list("missing in file", missing);
    list("unexpected in file", unexpected);
    list("wrong shape", wrong_shape);
    list("wrong dtype", wrong_dtype);
    if (!missing.empty() && !options.allow_missing_head &&
        std::all_of(missing.begin(), missing.end(), [](const std::string& m) {
          return is_head_name(m) || is_final_norm_name(m) || starts_with(m, "head.fc.") || starts_with(m, "head.norm.");
        })) {
      os << "\n  (an encoder-only file? set allow_missing_head to keep the head at init)";
    }
    throw WeightsError(os.str());
  }

  // 4. Everything checked: write.
  torch::NoGradGuard no_grad;
  for (auto& [param, t] : writes) {
    param.copy_(t.reshape(param.sizes()).to(param.scalar_type()));
  }
  return report;
}

NamedTensors export_state_dict(const ConvNeXtV2Impl& model, Naming naming) {
  if (naming == Naming::kAuto) naming = Naming::kReference;
  NamedTensors out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    at::Tensor t = item.value().detach().to(at::kCPU).clone();
    if (naming == Naming::kReference) {
      out.emplace_back(item.key(), t);
      continue;
    }
    auto timm = reference_to_timm(item.key());
    if (!timm) throw WeightsError("export: parameter '" + item.key() + "' has no timm name");
    if (is_grn(item.key())) t = t.reshape({t.numel()});
    out.emplace_back(*timm, t);
  }
  return out;
}

NamedTensors read_tensor_file(const std::string& path) {
  char magic[4] = {0, 0, 0, 0};
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw WeightsError("cannot open '" + path + "' for reading");
    in.read(magic, 4);
  }
  // torch::pickle_save writes a zip archive ("PK\3\4"); anything else is
  // parsed (and validated) as safetensors.
  const bool is_zip = magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4;
  return is_zip ? read_pt(path) : read_safetensors(path).tensors;
}

LoadReport load_weights(ConvNeXtV2Impl& model, const std::string& path, const LoadOptions& options) {
  return load_state_dict(model, read_tensor_file(path), options, path);
}

void save_weights(const ConvNeXtV2Impl& model, const std::string& path, Naming naming,
                  const std::map<std::string, std::string>& metadata, const std::string& pt_key) {
  const NamedTensors tensors = export_state_dict(model, naming);
  if (ends_with(path, ".pt") || ends_with(path, ".pth")) {
    save_pt(path, tensors, pt_key);
  } else {
    std::map<std::string, std::string> meta = metadata;
    meta.emplace("format", "pt");
    meta.emplace("naming", to_string(naming == Naming::kAuto ? Naming::kReference : naming));
    write_safetensors(path, tensors, meta);
  }
}

}  // namespace cnx::model
