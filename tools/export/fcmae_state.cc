#include "tools/export/fcmae_state.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "common/check.h"
#include "model/complexity.h"
#include "model/weights.h"
#include "worker/checkpoint.h"
#include "worker/checkpoint_files.h"

namespace cnx::tools {

namespace fs = std::filesystem;
using model::NamedTensors;
using model::WeightsError;

namespace {

std::map<std::string, at::Tensor> by_name(const NamedTensors& state) {
  std::map<std::string, at::Tensor> m;
  for (const auto& [name, t] : state) m.emplace(name, t);
  return m;
}

const at::Tensor& need(const std::map<std::string, at::Tensor>& m, const std::string& key, int64_t dim,
                       const std::string& source) {
  auto it = m.find(key);
  if (it == m.end())
    throw WeightsError("'" + source + "' has no tensor '" + key + "' (not a ConvNeXt V2 / FCMAE state)");
  if (it->second.dim() != dim) {
    std::ostringstream os;
    os << "'" << source << "': tensor '" << key << "' has shape " << it->second.sizes() << ", expected " << dim
       << " dimensions";
    throw WeightsError(os.str());
  }
  return it->second;
}

// Scalars held by the tensors whose names start with `prefix`.
int64_t values_under(const NamedTensors& state, const std::string& prefix) {
  int64_t n = 0;
  for (const auto& [name, t] : state)
    if (name.rfind(prefix, 0) == 0) n += t.numel();
  return n;
}

void check_size(int64_t value, int64_t lo, int64_t hi, const std::string& what, const std::string& source) {
  if (value < lo || value > hi) {
    throw WeightsError("'" + source + "': " + what + " is " + std::to_string(value) + ", outside [" +
                       std::to_string(lo) + ", " + std::to_string(hi) +
                       "] (the bounds of a ConvNeXt V2 architecture read from a file)");
  }
}

// Consecutive blocks `<base>0<suffix>`, `<base>1<suffix>`, ... present in m;
// stops (and refuses) past `limit` so a file cannot make this count grow.
int64_t count_blocks(const std::map<std::string, at::Tensor>& m, const std::string& base, const std::string& suffix,
                     int64_t limit, const std::string& what, const std::string& source) {
  int64_t depth = 0;
  while (m.count(base + std::to_string(depth) + suffix)) {
    if (++depth > limit)
      throw WeightsError("'" + source + "' has more than " + std::to_string(limit) + " " + what + " ('" + base +
                         std::to_string(depth - 1) + suffix + "'): not a ConvNeXt V2 / FCMAE state");
  }
  return depth;
}

// The architecture needs `needed` scalars; a file that holds fewer cannot
// fill it (zero-size or missing tensors posing as blocks).
void check_values_present(int64_t needed, int64_t present, const std::string& what, const std::string& source) {
  if (present < needed) {
    throw WeightsError("'" + source + "': the inferred " + what + " needs " + std::to_string(needed) +
                       " parameters but the file holds only " + std::to_string(present) +
                       " values (missing or empty tensors)");
  }
}

}  // namespace

namespace {

struct CoordinatorCheckpoint {
  int64_t id = 0, step = 0;
  std::string dir;
};

// The ckpt-<id>-step-<S> folders of a coordinator job folder (<root>/<job>,
// coordinator/scheduler.cc), newest (step, then id) first.
std::vector<CoordinatorCheckpoint> coordinator_checkpoints(const std::string& job_dir) {
  std::vector<CoordinatorCheckpoint> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(job_dir, ec)) {
    if (!e.is_directory(ec)) continue;
    const std::string name = e.path().filename().string();
    long long id = 0, step = 0;
    char tail = 0;
    if (std::sscanf(name.c_str(), "ckpt-%lld-step-%lld%c", &id, &step, &tail) != 2) continue;
    out.push_back({id, step, e.path().string()});
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.step != b.step ? a.step > b.step : a.id > b.id; });
  return out;
}

const char* kLatestHint =
    "; with a coordinator, `cnx-ctl --config JOB.yaml latest` prints the job's latest committed checkpoint";

// The model.pt of the newest complete checkpoint in a coordinator job folder.
std::string newest_coordinator_model(const std::string& job_dir, const std::vector<CoordinatorCheckpoint>& all) {
  std::string problems;
  for (const auto& c : all) {
    std::error_code ec;
    if (!fs::exists(c.dir + "/MANIFEST.json", ec)) continue;  // being written, or abandoned
    try {
      const std::string file = worker::verified_model_file(c.dir);
      std::fprintf(stderr,
                   "reading %s: the newest complete checkpoint in %s (step %lld; `cnx-ctl latest` names the "
                   "coordinator's latest committed one)\n",
                   c.dir.c_str(), job_dir.c_str(), static_cast<long long>(c.step));
      return file;
    } catch (const worker::CheckpointError& e) {
      problems += std::string(problems.empty() ? "" : "; ") + e.what();
    }
  }
  throw WeightsError("'" + job_dir + "' holds " + std::to_string(all.size()) +
                     " coordinator checkpoint folder(s) but none is complete" +
                     (problems.empty() ? std::string(" (no MANIFEST.json)") : " (" + problems + ")") + kLatestHint);
}

}  // namespace

std::string resolve_state_file(const std::string& path, const std::string& job_id) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw WeightsError("'" + path + "' does not exist");
  if (!fs::is_directory(path, ec)) return path;
  if (fs::exists(path + "/latest", ec)) return worker::verified_model_file(*worker::latest_checkpoint(path));
  if (fs::exists(path + "/MANIFEST.json", ec)) return worker::verified_model_file(path);
  // The coordinator's layout: <root>/<job>/ckpt-<id>-step-<S>.
  if (const auto here = coordinator_checkpoints(path); !here.empty()) return newest_coordinator_model(path, here);
  if (!job_id.empty() && fs::is_directory(path + "/" + job_id, ec)) {
    const std::string job_dir = path + "/" + job_id;
    if (fs::exists(job_dir + "/latest", ec) || fs::exists(job_dir + "/MANIFEST.json", ec))
      return resolve_state_file(job_dir);
    if (const auto mine = coordinator_checkpoints(job_dir); !mine.empty())
      return newest_coordinator_model(job_dir, mine);
  }
  std::vector<std::string> jobs;
  for (const auto& e : fs::directory_iterator(path, ec))
    if (e.is_directory(ec) && !coordinator_checkpoints(e.path().string()).empty()) jobs.push_back(e.path().string());
  std::sort(jobs.begin(), jobs.end());
  if (jobs.size() == 1) return newest_coordinator_model(jobs[0], coordinator_checkpoints(jobs[0]));
  if (jobs.size() > 1) {
    std::string list;
    for (const auto& j : jobs) list += (list.empty() ? "" : ", ") + j;
    throw WeightsError("'" + path + "' holds the coordinator checkpoints of several jobs (" + list +
                       "): pass one of them" + kLatestHint);
  }
  throw WeightsError("'" + path +
                     "' is a folder but no checkpoint: no 'latest' file (a local checkpoint root), no "
                     "MANIFEST.json (a checkpoint folder), no ckpt-* folders (a coordinator job folder "
                     "<checkpoint.root>/<job.id>)" +
                     kLatestHint);
}

NamedTensors read_state_file(const std::string& path) {
  return model::read_tensor_file(path);
}

NamedTensors read_state(const std::string& path) {
  return read_state_file(resolve_state_file(path));
}

std::string encoder_prefix(const NamedTensors& state) {
  for (const auto& [name, t] : state) {
    if (name.rfind("encoder.", 0) == 0) return "encoder.";
  }
  return "";
}

model::ConvNeXtV2Options infer_encoder_options(const NamedTensors& state, const std::string& prefix,
                                               const std::string& source) {
  const auto m = by_name(state);
  model::ConvNeXtV2Options o;
  o.num_classes = 0;
  o.drop_path_rate = 0.0;
  const at::Tensor& stem = need(m, prefix + "downsample_layers.0.0.weight", 4, source);
  if (stem.size(2) != 4 || stem.size(3) != 4)
    throw WeightsError("'" + source + "': the stem conv '" + prefix + "downsample_layers.0.0.weight' is not 4x4");
  check_size(stem.size(0), 1, kMaxFileDim, "the stem's output channels", source);
  check_size(stem.size(1), 1, kMaxFileInChans, "the stem's input channels", source);
  o.in_chans = stem.size(1);
  o.dims = {stem.size(0)};
  for (int s = 1; s < 4; ++s) {
    const std::string key = prefix + "downsample_layers." + std::to_string(s) + ".1.weight";
    const at::Tensor& w = need(m, key, 4, source);
    if (w.size(1) != o.dims.back() || w.size(2) != 2 || w.size(3) != 2) {
      std::ostringstream os;
      os << "'" << source << "': downsample conv '" << key << "' has shape " << w.sizes() << ", expected [C, "
         << o.dims.back() << ", 2, 2]";
      throw WeightsError(os.str());
    }
    check_size(w.size(0), 1, kMaxFileDim, "the output channels of '" + key + "'", source);
    o.dims.push_back(w.size(0));
  }
  for (int s = 0; s < 4; ++s) {
    const int64_t depth = count_blocks(m, prefix + "stages." + std::to_string(s) + ".", ".dwconv.weight", kMaxFileDepth,
                                       "blocks in stage " + std::to_string(s), source);
    if (depth == 0)
      throw WeightsError("'" + source + "' has no block in stage " + std::to_string(s) + " (no '" + prefix + "stages." +
                         std::to_string(s) + ".0.dwconv.weight')");
    o.depths.push_back(depth);
  }
  // V1 blocks (the GRN ablation) carry a layer scale and no GRN.
  const bool has_grn = m.count(prefix + "stages.0.0.grn.gamma") > 0;
  const bool has_layer_scale = m.count(prefix + "stages.0.0.gamma") > 0;
  if (has_grn && has_layer_scale)
    throw WeightsError("'" + source + "': block 0 of stage 0 has both a GRN and a layer scale ('" + prefix +
                       "stages.0.0.grn.gamma' and '" + prefix + "stages.0.0.gamma')");
  if (has_layer_scale) o.block = "v1";
  try {
    model::validate(o);
  } catch (const std::invalid_argument& e) {
    throw WeightsError("'" + source + "': inferred encoder options are invalid: " + e.what());
  }
  // Encoder-only files may lack the final norm (2 x C3 values).
  check_values_present(encoder_values_needed(o), values_under(state, prefix), "encoder (" + model::describe(o) + ")",
                       source);
  return o;
}

int64_t encoder_values_needed(const model::ConvNeXtV2Options& options) {
  model::ConvNeXtV2Options o = options;
  o.num_classes = 0;
  return model::count_params(o) - 2 * o.dims.back();
}

model::FcmaeOptions infer_fcmae_options(const NamedTensors& state, const std::string& source) {
  if (encoder_prefix(state) != "encoder.")
    throw WeightsError("'" + source + "' is not an FCMAE state (no 'encoder.*' tensors)");
  const auto m = by_name(state);
  model::FcmaeOptions o;
  o.encoder = infer_encoder_options(state, "encoder.", source);
  const at::Tensor& token = need(m, "mask_token", 4, source);
  check_size(token.size(1), 1, kMaxFileDim, "the decoder width (mask_token channels)", source);
  o.decoder_dim = token.size(1);
  const int64_t depth = count_blocks(m, "decoder.", ".dwconv.weight", kMaxFileDepth, "decoder blocks", source);
  if (depth == 0) throw WeightsError("'" + source + "' has no decoder block ('decoder.0.dwconv.weight')");
  o.decoder_depth = depth;
  const at::Tensor& pred = need(m, "pred.weight", 4, source);
  const int64_t p = 32;
  if (pred.size(0) != p * p * o.encoder.in_chans) {
    throw WeightsError("'" + source + "': pred.weight has " + std::to_string(pred.size(0)) + " output channels, " +
                       "expected 32*32*" + std::to_string(o.encoder.in_chans) + " (patch size 32)");
  }
  try {
    model::validate(o);
  } catch (const std::invalid_argument& e) {
    throw WeightsError("'" + source + "': inferred FCMAE options are invalid: " + e.what());
  }
  // Lower bound of the decoder's parameters: proj, the blocks' two Linear
  // layers (4D x D each), pred.
  const int64_t d = o.decoder_dim, p2c = pred.size(0);
  const int64_t decoder = d * o.encoder.dims.back() + o.decoder_depth * 8 * d * d + d * p2c;
  check_values_present(encoder_values_needed(o.encoder) + decoder, values_under(state, ""),
                       "FCMAE (decoder width " + std::to_string(d) + ", depth " + std::to_string(o.decoder_depth) + ")",
                       source);
  return o;
}

void load_fcmae_state(model::FcmaeImpl& net, const NamedTensors& state, const std::string& source) {
  auto file = by_name(state);
  std::vector<std::pair<std::string, at::Tensor>> targets;
  for (const auto& item : net.named_parameters(true)) targets.emplace_back(item.key(), item.value());
  for (const auto& item : net.named_buffers(true)) targets.emplace_back(item.key(), item.value());
  std::vector<std::string> problems;
  std::set<std::string> used;
  for (const auto& [name, t] : targets) {
    auto it = file.find(name);
    if (it == file.end()) {
      problems.push_back("missing '" + name + "'");
      continue;
    }
    used.insert(name);
    if (it->second.sizes() != t.sizes()) {
      std::ostringstream os;
      os << "'" << name << "' has shape " << it->second.sizes() << ", the model expects " << t.sizes();
      problems.push_back(os.str());
    }
  }
  for (const auto& [name, t] : file) {
    if (!used.count(name)) problems.push_back("unexpected '" + name + "'");
  }
  if (!problems.empty()) {
    std::string msg = "'" + source + "' does not match the FCMAE model:";
    const size_t shown = std::min<size_t>(problems.size(), 20);
    for (size_t i = 0; i < shown; ++i) msg += "\n  " + problems[i];
    if (shown < problems.size()) msg += "\n  ... and " + std::to_string(problems.size() - shown) + " more";
    throw WeightsError(msg);
  }
  at::NoGradGuard no_grad;
  for (auto& [name, t] : targets) t.copy_(file.at(name).to(t.dtype()));
}

EncoderExport extract_encoder(const NamedTensors& state, model::Naming naming, const std::string& source) {
  CNX_CHECK(naming == model::Naming::kReference || naming == model::Naming::kTimm,
            "extract_encoder: naming must be reference or timm");
  const std::string prefix = encoder_prefix(state);
  EncoderExport out;
  out.options = infer_encoder_options(state, prefix, source);
  model::ConvNeXtV2 net(out.options);
  model::LoadOptions lo;
  lo.naming = model::Naming::kReference;
  lo.prefix = prefix;
  lo.allow_missing_head = true;
  lo.ignore_file_head = true;
  model::load_state_dict(*net, state, lo, source);
  const std::set<std::string> excluded = naming == model::Naming::kTimm
                                             ? std::set<std::string>{"head.norm.weight", "head.norm.bias"}
                                             : std::set<std::string>{"norm.weight", "norm.bias"};
  for (auto& [name, t] : model::export_state_dict(*net, naming)) {
    if (!excluded.count(name)) out.tensors.emplace_back(name, t);
  }
  return out;
}

}  // namespace cnx::tools
