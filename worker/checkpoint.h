#pragma once
// What a trainer checkpoint holds, and its files. The durable-file
// primitives (write + fsync, MANIFEST.json, commit, `latest`) are in
// checkpoint_files.h; this unit knows the contents.
//
// Files of one checkpoint folder:
//   model.pt        rank 0: parameters and buffers by name (a .pt as in
//                   model/tensor_file.h; torch.load in Python gives a dict)
//   optimizer.pt    rank 0: AdamW state (AdamW::state_dict names)
//   trainer.json    rank 0: step, epoch, world size, global batch, schedule,
//                   skipped-step counters, the fp16 loss scaler's state (TrainerRecord)
//   config.yaml     rank 0: the run's effective config (after --set), headed
//                   by the build version; read back by cnx-export,
//                   cnx-visualize and cnx-eval (absent in older checkpoints)
//   rank-<r>.json   every rank r: its data cursor and CPU generator state
//   MANIFEST.json   rank 0, written last: sha256 and size of every file
//
// A CheckpointSnapshot is one rank's part of a checkpoint held in memory.
// take_snapshot copies the tensors (deep) so that training may go on while
// write_snapshot serialises them on another thread; with deep = false it
// holds references, valid only while the model and optimizer stand still.
//
// Errors: I/O and format problems throw CheckpointError naming the file and
// what did not match (for the .pt files, model/tensor_file.h's message).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "worker/checkpoint_files.h"

namespace cnx::worker {

using CheckpointTensors = std::vector<std::pair<std::string, at::Tensor>>;

inline constexpr const char* kModelFile = "model.pt";
inline constexpr const char* kOptimizerFile = "optimizer.pt";
inline constexpr const char* kTrainerFile = "trainer.json";
inline constexpr const char* kRunConfigFile = "config.yaml";
// "rank-00003.json"
std::string rank_file_name(int rank);

// trainer.json: the global position of the run after `step` steps.
struct TrainerRecord {
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t world_size = 0;
  int64_t global_batch = 0;
  double peak_lr = 0;
  int64_t steps_per_epoch = 0;
  int64_t skipped_total = 0;
  int64_t skipped_consecutive = 0;
  // The fp16 loss scaler (loss_scaler.h); 0 = none (written only with one).
  double loss_scale = 0;
  int64_t loss_scale_growth_tracker = 0;
  std::string version;  // the build that wrote it (git describe); "" in older checkpoints
};

// rank-<r>.json: one rank's data position and generator.
struct RankRecord {
  std::string cursor;
  at::Tensor cpu_rng;  // uint8, at::CPUGeneratorImpl state
};

struct CheckpointSnapshot {
  int rank = 0;
  int64_t step = 0;
  bool shared = false;  // holds model, optimizer and trainer.json (rank 0)
  CheckpointTensors model, optimizer;
  TrainerRecord trainer;
  RankRecord rank_state;
  std::string run_config;  // rank 0: config.yaml's text ("" = no file)
  // Bytes of tensor data held (model + optimizer + RNG state).
  int64_t bytes() const;
};

// A snapshot of rank `rank`'s state: `model` and `optimizer` only when
// `shared` (rank 0), copied when `deep`. The CPU generator and `cursor` are
// always copied.
CheckpointSnapshot take_snapshot(int rank, bool shared, const CheckpointTensors& model,
                                 const CheckpointTensors& optimizer, const TrainerRecord& trainer,
                                 const std::string& cursor, bool deep);

// Writes the files of `snapshot` into `dir` (created when missing), each
// written and fsynced; returns their digests (file name -> sha256, bytes).
// Touches no state but the snapshot: safe on a background thread.
Manifest write_snapshot(const std::string& dir, const CheckpointSnapshot& snapshot);

struct LoadedCheckpoint {
  std::string dir;
  TrainerRecord trainer;
  CheckpointTensors model, optimizer;
  std::optional<RankRecord> rank_state;  // when the checkpoint has a file for this rank
};

// Verifies `dir` against its MANIFEST.json (every file's size and sha256),
// then reads what rank `rank` needs. Throws CheckpointError.
LoadedCheckpoint read_checkpoint(const std::string& dir, int rank);

// model.pt of the committed checkpoint `dir`, after verifying the folder.
std::string verified_model_file(const std::string& dir);

// The process-wide CPU generator (drop path and other torch randomness).
at::Tensor cpu_rng_state();
void set_cpu_rng_state(const at::Tensor& state);
void seed_cpu_rng(uint64_t seed);

}  // namespace cnx::worker
