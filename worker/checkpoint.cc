#include "worker/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>

#include "common/hash.h"
#include "model/tensor_file.h"

namespace fs = std::filesystem;

namespace cnx::worker {
namespace {

// The .pt bytes of a checkpoint's tensors (model/tensor_file.h), and back;
// its errors become CheckpointError with the same message.
std::vector<char> pickle_tensors(const CheckpointTensors& tensors) {
  try {
    return model::pickle_tensors(tensors);
  } catch (const model::WeightsError& e) {
    throw CheckpointError(e.what());
  }
}

CheckpointTensors unpickle_tensors(const std::string& path) {
  const std::string data = read_file(path);
  try {
    return model::unpickle_tensors(std::vector<char>(data.begin(), data.end()), path);
  } catch (const model::WeightsError& e) {
    throw CheckpointError(e.what());
  }
}

std::string rng_to_hex(const at::Tensor& bytes) {
  const at::Tensor b = bytes.contiguous();
  return to_hex(b.data_ptr<uint8_t>(), static_cast<size_t>(b.numel()));
}

at::Tensor rng_from_hex(const std::string& s, const std::string& origin) {
  std::string raw;
  if (!from_hex(s, &raw)) throw CheckpointError(origin + ": RNG state is not an even-length hex string");
  at::Tensor t = at::empty({static_cast<int64_t>(raw.size())}, at::kByte);
  std::memcpy(t.data_ptr<uint8_t>(), raw.data(), raw.size());
  // LibTorch checks a state only when it is applied (set_cpu_rng_state, long
  // after this file was read): try it on a scratch generator now, so a bad
  // state is an error naming this file (found by fuzz/checkpoint_fuzz.cc).
  try {
    at::Generator scratch = at::make_generator<at::CPUGeneratorImpl>();
    scratch.set_state(t);
  } catch (const c10::Error& e) {
    throw CheckpointError(origin + ": \"cpu_rng\" is not a CPU generator state (" + e.what_without_backtrace() + ")");
  }
  return t;
}

nlohmann::json parse_json_file(const std::string& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError("'" + path + "' is not valid JSON: " + e.what());
  }
}

TrainerRecord parse_trainer(const std::string& path) {
  const nlohmann::json t = parse_json_file(path);
  auto get_int = [&](const char* key) -> int64_t {
    if (!t.is_object() || !t.contains(key) || !t[key].is_number_integer())
      throw CheckpointError(path + ": missing integer \"" + key + "\"");
    return t[key].get<int64_t>();
  };
  TrainerRecord r;
  r.step = get_int("step");
  r.epoch = get_int("epoch");
  r.world_size = get_int("world_size");
  r.global_batch = get_int("global_batch");
  r.skipped_total = get_int("skipped_total");
  r.skipped_consecutive = get_int("skipped_consecutive");
  if (t.contains("peak_lr") && t["peak_lr"].is_number()) r.peak_lr = t["peak_lr"].get<double>();
  if (t.contains("loss_scale")) {
    if (!t["loss_scale"].is_number() || !(t["loss_scale"].get<double>() > 0))
      throw CheckpointError(path + ": \"loss_scale\" must be a positive number");
    r.loss_scale = t["loss_scale"].get<double>();
    r.loss_scale_growth_tracker = get_int("loss_scale_growth_tracker");
  }
  if (t.contains("steps_per_epoch") && t["steps_per_epoch"].is_number_integer())
    r.steps_per_epoch = t["steps_per_epoch"].get<int64_t>();
  if (t.contains("version") && t["version"].is_string()) r.version = t["version"].get<std::string>();
  return r;
}

CheckpointTensors copy_tensors(const CheckpointTensors& tensors, bool deep) {
  CheckpointTensors out;
  out.reserve(tensors.size());
  for (const auto& [name, t] : tensors) out.emplace_back(name, deep ? t.detach().clone() : t.detach());
  return out;
}

}  // namespace

std::string rank_file_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "rank-%05d.json", rank);
  return buf;
}

int64_t CheckpointSnapshot::bytes() const {
  int64_t n = rank_state.cpu_rng.defined() ? rank_state.cpu_rng.nbytes() : 0;
  for (const auto& [name, t] : model) n += static_cast<int64_t>(t.nbytes());
  for (const auto& [name, t] : optimizer) n += static_cast<int64_t>(t.nbytes());
  return n;
}

CheckpointSnapshot take_snapshot(int rank, bool shared, const CheckpointTensors& model,
                                 const CheckpointTensors& optimizer, const TrainerRecord& trainer,
                                 const std::string& cursor, bool deep) {
  CheckpointSnapshot s;
  s.rank = rank;
  s.step = trainer.step;
  s.shared = shared;
  s.trainer = trainer;
  if (shared) {
    s.model = copy_tensors(model, deep);
    s.optimizer = copy_tensors(optimizer, deep);
  }
  s.rank_state.cursor = cursor;
  s.rank_state.cpu_rng = cpu_rng_state();  // get_state returns a new tensor
  return s;
}

Manifest write_snapshot(const std::string& dir, const CheckpointSnapshot& s) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw CheckpointError("cannot create checkpoint folder '" + dir + "': " + ec.message());
  Manifest files;
  if (s.shared) {
    {
      const std::vector<char> bytes = pickle_tensors(s.model);
      files[kModelFile] = write_file_durable(dir + "/" + kModelFile, bytes.data(), bytes.size());
    }
    {
      const std::vector<char> bytes = pickle_tensors(s.optimizer);
      files[kOptimizerFile] = write_file_durable(dir + "/" + kOptimizerFile, bytes.data(), bytes.size());
    }
    const TrainerRecord& r = s.trainer;
    const nlohmann::json t{{"step", r.step},
                           {"epoch", r.epoch},
                           {"world_size", r.world_size},
                           {"global_batch", r.global_batch},
                           {"peak_lr", r.peak_lr},
                           {"steps_per_epoch", r.steps_per_epoch},
                           {"skipped_total", r.skipped_total},
                           {"skipped_consecutive", r.skipped_consecutive}};
    nlohmann::json tj = t;
    if (r.loss_scale > 0) {
      tj["loss_scale"] = r.loss_scale;
      tj["loss_scale_growth_tracker"] = r.loss_scale_growth_tracker;
    }
    if (!r.version.empty()) tj["version"] = r.version;
    files[kTrainerFile] = write_file_durable(dir + "/" + kTrainerFile, tj.dump(2) + "\n");
  }
  if (s.shared && !s.run_config.empty())
    files[kRunConfigFile] = write_file_durable(dir + "/" + kRunConfigFile, s.run_config);
  const nlohmann::json rj{
      {"rank", s.rank}, {"cursor", s.rank_state.cursor}, {"cpu_rng", rng_to_hex(s.rank_state.cpu_rng)}};
  const std::string mine = rank_file_name(s.rank);
  files[mine] = write_file_durable(dir + "/" + mine, rj.dump(2) + "\n");
  return files;
}

LoadedCheckpoint read_checkpoint(const std::string& dir, int rank) {
  int64_t step = -1;
  const Manifest manifest = verify_checkpoint(dir, {kModelFile, kOptimizerFile, kTrainerFile}, &step);
  LoadedCheckpoint c;
  c.dir = dir;
  c.trainer = parse_trainer(dir + "/" + kTrainerFile);
  if (c.trainer.step != step)
    throw CheckpointError(dir + ": " + kTrainerFile + " and MANIFEST.json disagree on the step");
  c.model = unpickle_tensors(dir + "/" + kModelFile);
  c.optimizer = unpickle_tensors(dir + "/" + kOptimizerFile);
  const std::string mine = rank_file_name(rank);
  if (manifest.count(mine)) {
    const std::string path = dir + "/" + mine;
    const nlohmann::json rj = parse_json_file(path);
    if (!rj.is_object() || !rj.contains("cursor") || !rj["cursor"].is_string() || !rj.contains("cpu_rng") ||
        !rj["cpu_rng"].is_string())
      throw CheckpointError(path + ": needs string fields \"cursor\" and \"cpu_rng\"");
    c.rank_state = RankRecord{rj["cursor"].get<std::string>(), rng_from_hex(rj["cpu_rng"].get<std::string>(), path)};
  }
  return c;
}

std::string verified_model_file(const std::string& dir) {
  int64_t step = 0;
  verify_checkpoint(dir, {kModelFile}, &step);
  return dir + "/" + kModelFile;
}

at::Tensor cpu_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_cpu_rng_state(const at::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

void seed_cpu_rng(uint64_t seed) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_current_seed(seed);
}

}  // namespace cnx::worker
