#pragma once
// Where a rank's micro-batches come from, and the FCMAE masks for them.
//
// Determinism contract (what makes resume bit-exact): a source's batches are
// a pure function of (seed, epoch, world, rank, its restored cursor); masks
// are a pure function of (seed, epoch, sample key) (make_masks); neither
// depends on generator state consumed elsewhere.
//
// Sources:
// * SyntheticSource: a virtual data set of `samples` images whose pixels are
//   drawn from a generator seeded by (seed, sample index). In epoch e, global
//   micro-batch g, rank r gets samples [g*W*b + r*b, g*W*b + (r+1)*b) — so
//   2 ranks x batch b see exactly the samples of 1 rank x batch 2b.
// * ShardSource: the data pipeline (data/) over this rank's shards of
//   the epoch: a static per-rank split (data::static_shard_split) without a
//   coordinator, or a shard list handed in by the coordinator.
//
// Threading: the training thread owns a source.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/pipeline.h"

namespace cnx::worker {

struct TrainBatch {
  at::Tensor images;              // float32 [b, 3, H, W], normalised
  std::vector<std::string> keys;  // globally unique sample keys (mask seeds)
  int64_t epoch = 0;
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Begins `epoch` from its start.
  virtual void start_epoch(int64_t epoch) = 0;
  // The next micro-batch of this rank, or nullopt when its part of the epoch
  // is exhausted.
  virtual std::optional<TrainBatch> next() = 0;
  // The position after the last batch returned, as a string for checkpoints;
  // restore() continues right after it (same world size).
  virtual std::string cursor() const = 0;
  virtual void restore(const std::string& cursor) = 0;
  // Samples of one epoch over the whole job (for the lr schedule).
  virtual int64_t epoch_samples_total() const = 0;
  // True when ranks may run out at different steps (so the trainer must
  // agree on the end of the epoch each step).
  virtual bool uneven() const = 0;
  // Samples skipped for bad data so far on this rank (for metrics).
  virtual int64_t samples_skipped() const { return 0; }
  // The same, by reason (data::DataCounters::skipped: "decode_error",
  // "bad_shard", ...); cumulative since construction.
  virtual std::map<std::string, int64_t> skipped_by_reason() const { return {}; }
};

struct SyntheticOptions {
  int64_t samples = 1024;  // virtual data set size
  int64_t image_size = 64;
  int64_t batch_size = 4;  // per rank
  uint64_t seed = 0;
  int rank = 0;
  int world = 1;
};

class SyntheticSource final : public BatchSource {
 public:
  explicit SyntheticSource(const SyntheticOptions& options);
  void start_epoch(int64_t epoch) override;
  std::optional<TrainBatch> next() override;
  std::string cursor() const override;
  void restore(const std::string& cursor) override;
  int64_t epoch_samples_total() const override { return options_.samples; }
  bool uneven() const override { return false; }

  // The image of sample `index` (pure function of seed and index).
  at::Tensor image(int64_t index) const;

 private:
  SyntheticOptions options_;
  int64_t epoch_ = 0;
  int64_t batch_ = 0;  // next global micro-batch in the epoch
};

// Gives the shard ids (into the index) this rank reads in `epoch`.
using ShardPlanFn = std::function<std::vector<int64_t>(int64_t epoch)>;

class ShardSource final : public BatchSource {
 public:
  // `plan` defaults to the static split when empty.
  ShardSource(data::DataOptions options, int rank, int world, ShardPlanFn plan = {});
  void start_epoch(int64_t epoch) override;
  std::optional<TrainBatch> next() override;
  std::string cursor() const override;
  void restore(const std::string& cursor) override;
  int64_t epoch_samples_total() const override;
  bool uneven() const override { return true; }
  int64_t samples_skipped() const override;
  std::map<std::string, int64_t> skipped_by_reason() const override;

 private:
  data::Pipeline pipeline_;
  int rank_, world_;
  ShardPlanFn plan_;
  int64_t epoch_ = 0;
  std::optional<data::Cursor> cursor_;
};

// FCMAE masks, float32 [keys.size(), h_patches * w_patches], 1 = removed.
// Row n is model::generate_mask for one image with a seed mixed from
// (seed, epoch, keys[n]): the mask of a sample does not depend on its rank,
// its position in the batch or the step, so 2 ranks x batch b and 1 rank x
// batch 2b mask the same samples identically.
at::Tensor make_masks(const std::vector<std::string>& keys, int64_t epoch, uint64_t seed, int64_t h_patches,
                      int64_t w_patches, double ratio);

}  // namespace cnx::worker
