#pragma once
// ConvNeXt V2 weight import/export with strict checking.
//
// Two namings exist for the same tensors (docs/model.md, "Weight names"):
//   reference: downsample_layers.0.0.weight, stages.1.0.grn.gamma (1,1,1,4C),
//              norm.weight, head.weight                  (what the model uses)
//   timm:      stem.0.weight, stages.1.blocks.0.mlp.grn.weight (4C),
//              head.norm.weight, head.fc.weight
// Import detects the naming (or takes it explicitly), converts to reference
// names and GRN shapes, and refuses to load unless every model parameter is
// matched exactly: missing, unexpected, wrong-shape and wrong-dtype keys are
// reported together in one WeightsError. Nothing is written to the model
// unless the whole file checks out.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/convnextv2.h"
#include "model/safetensors.h"
#include "model/tensor_file.h"  // save_pt, read_pt

namespace cnx::model {

enum class Naming { kAuto, kReference, kTimm };

std::string to_string(Naming naming);
// "auto" | "reference" | "timm"; throws std::invalid_argument otherwise.
Naming parse_naming(const std::string& text);

// Name translation of one key; nullopt when the key is not a ConvNeXt V2
// parameter in the source naming.
std::optional<std::string> reference_to_timm(const std::string& name);
std::optional<std::string> timm_to_reference(const std::string& name);

// Which naming a set of keys uses (after the prefix has been stripped);
// throws WeightsError when it is mixed or none.
Naming detect_naming(const std::vector<std::string>& keys, const std::string& source);

struct LoadOptions {
  Naming naming = Naming::kAuto;
  // Only keys starting with prefix are considered (and the prefix is
  // stripped), e.g. "encoder." for an FCMAE checkpoint; other keys are
  // ignored and counted in LoadReport::ignored.
  std::string prefix;
  // Encoder-only files (pretrained FCMAE releases): the final norm and the
  // head may be absent and are then left at their init.
  bool allow_missing_head = false;
  // Skip the file's head.* (e.g. a different number of classes when
  // fine-tuning); the model's head stays at init. The final norm still loads.
  bool ignore_file_head = false;
};

struct LoadReport {
  Naming naming = Naming::kReference;
  std::vector<std::string> loaded;        // reference names written
  std::vector<std::string> left_at_init;  // reference names allowed missing
  std::vector<std::string> ignored;       // file keys outside the prefix or skipped head
};

// Strictly loads named tensors (file dtype converted to the parameter's).
LoadReport load_state_dict(ConvNeXtV2Impl& model, const NamedTensors& tensors, const LoadOptions& options = {},
                           const std::string& source = "<memory>");

// The tensors of a .pt (model/tensor_file.h) or a .safetensors file, told
// apart by the file's first bytes, not its name.
NamedTensors read_tensor_file(const std::string& path);

// Loads read_tensor_file(path) strictly (load_state_dict).
LoadReport load_weights(ConvNeXtV2Impl& model, const std::string& path, const LoadOptions& options = {});

// The model's parameters in the chosen naming (timm GRN tensors reshaped to
// (4C)); tensors are detached CPU copies.
NamedTensors export_state_dict(const ConvNeXtV2Impl& model, Naming naming = Naming::kReference);

// Writes .safetensors, or a .pt (torch::pickle_save of a
// c10::Dict<std::string, Tensor>; Python's torch.load returns a dict of
// tensors) when path ends in ".pt" or ".pth". With pt_key non-empty the .pt
// holds {pt_key: {name: tensor}}, e.g. "model" for the reference's
// fine-tuning script (torch.load(path)["model"]); ignored for safetensors.
void save_weights(const ConvNeXtV2Impl& model, const std::string& path, Naming naming = Naming::kReference,
                  const std::map<std::string, std::string>& metadata = {}, const std::string& pt_key = "");

}  // namespace cnx::model
