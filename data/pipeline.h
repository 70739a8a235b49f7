#pragma once
// The training data pipeline: shards -> shuffle -> decode/augment on a
// thread pool -> batches, with exact resumption.
//
// Usage (one epoch):
//   Pipeline p(options);                       // loads the index
//   p.start_epoch(epoch, shard_ids, resume);   // shard ids in reading order
//   while (auto b = p.next()) { train(b->images, b->labels); save b->cursor }
//
// Determinism contract. The sequence of batches of an epoch (keys, labels,
// pixels) is a pure function of (options, seed, epoch, shard_ids, shard
// bytes): the emission order comes from epoch_order(), the augmentation of a
// sample from sample_rng(seed, epoch, "<shard>/<key>"), and batches are
// assembled in emission order whatever thread finished first. Bad samples are
// skipped deterministically. Hence start_epoch(c.epoch, c.shard_ids, &c) with
// the cursor c of batch k yields exactly batches k+1, k+2, ... of the
// uninterrupted run.
//
// Threads. One reader thread streams the tars (sequentially, holding at most
// about shuffle_buffer raw samples) and hands samples, in emission order, to
// num_threads decode threads; decoded samples wait in a reorder map until
// next() takes them. Raw plus decoded bytes dispatched but not yet taken are
// bounded by queue_mb (one sample is always allowed). start_epoch(), next()
// and the destructor must be called from one thread (the trainer);
// counters() may be called from any thread.
//
// Errors. Bad samples never throw: they are skipped, counted by reason and
// logged with shard and key. A shard that is missing, unreadable or whose
// sha256 differs from the index throws DataError from next() with
// bad_shard = fail; with skip its samples are skipped (reason "bad_shard").
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/shard_index.h"

namespace cnx {
struct DataConfig;
}

namespace cnx::data {

enum class BadShardPolicy { kFail, kSkip };

// Mirrors cnx::DataConfig plus the mode and seed (see data_options()).
struct DataOptions {
  std::string index_path;  // index JSON from cnx-make-shards
  std::string shard_root;  // folder of the shards; "" = the index's folder
  int64_t input_size = 224;
  double crop_scale_lo = 0.2, crop_scale_hi = 1.0;
  double crop_ratio_lo = 3.0 / 4.0, crop_ratio_hi = 4.0 / 3.0;
  bool hflip = true;
  std::array<double, 3> mean{0.485, 0.456, 0.406};
  std::array<double, 3> std{0.229, 0.224, 0.225};
  int64_t batch_size = 32;
  int64_t num_threads = 2;  // decode threads; 0 is taken as 1
  int64_t queue_mb = 256;
  int64_t shuffle_buffer = 1000;  // 1 = no shuffling inside the shard stream
  BadShardPolicy bad_shard = BadShardPolicy::kFail;
  bool drop_last = true;                         // drop the epoch's final partial batch (counted)
  bool train = true;                             // false: resize to size/0.875 + center crop, no flip
  bool require_labels = false;                   // true: samples without a valid .cls are skipped
  bool verify_sha256 = true;                     // hash each shard against the index before use
  bool dct_scaling = true;                       // JPEG DCT-domain downscaling when the crop is small
  int64_t max_pixels = int64_t{1} << 26;         // larger images are skipped (image_too_large)
  int64_t max_member_bytes = int64_t{64} << 20;  // larger tar members are skipped
  uint64_t seed = 0;
};

// From the job config (data section + job.seed); train selects the mode.
DataOptions data_options(const cnx::DataConfig& config, int64_t seed, bool train);

// Position of a pipeline inside an epoch; what checkpoints store.
struct Cursor {
  int64_t epoch = 0;
  std::vector<int64_t> shard_ids;  // the epoch's plan, in reading order
  uint64_t seed = 0;               // checked on resume, with shuffle_buffer
  int64_t shuffle_buffer = 0;
  int64_t consumed = 0;   // samples of epoch_order() consumed: delivered + skipped (+ dropped at the end)
  int64_t delivered = 0;  // samples delivered in batches this epoch
  int64_t batches = 0;    // batches delivered this epoch
  // Informative, derived from `consumed`: the list position and in-shard
  // ordinal of the next sample to emit (-1 at the end of the epoch).
  int64_t next_shard_pos = 0;
  int64_t next_sample = 0;

  std::string to_string() const;  // compact JSON
  // Throws DataError naming the problem when `s` is not a cursor.
  static Cursor from_string(const std::string& s);
  bool operator==(const Cursor& o) const;
};

// A sample range of one shard, as the coordinator leases it: positions
// [start, end) of the shard's permutation for the epoch
// (shard_permutation(seed, epoch, shard, samples), epoch_order.h).
struct ShardPiece {
  int64_t shard = 0;  // id into the index
  int64_t start = 0;
  int64_t end = 0;
  bool operator==(const ShardPiece& o) const { return shard == o.shard && start == o.start && end == o.end; }
};

struct Batch {
  at::Tensor images;              // float32 [n, 3, size, size], normalised
  at::Tensor labels;              // int64 [n]; -1 where the sample has no label
  std::vector<std::string> keys;  // "<shard name>/<key>", for sample logs
  Cursor cursor;                  // the position after this batch
};

struct DataCounters {
  int64_t samples_delivered = 0;
  int64_t batches = 0;
  int64_t samples_dropped_last = 0;  // final partial batches dropped (drop_last)
  int64_t shards_read = 0;
  int64_t bytes_read = 0;                  // tar bytes read (hashing not included)
  std::map<std::string, int64_t> skipped;  // reason -> samples skipped
  int64_t skipped_total() const;
};

class Pipeline {
 public:
  // Loads and validates the index; throws DataError.
  explicit Pipeline(DataOptions options);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  const ShardIndex& index() const;
  const DataOptions& options() const;

  // Starts (or restarts) an epoch over `shard_ids` (ids into the index, in
  // reading order; duplicates allowed). With `resume`, continues right after
  // the batch the cursor came from; its epoch, shard list, seed and shuffle
  // buffer must match (DataError otherwise). Stops any running epoch.
  void start_epoch(int64_t epoch, std::vector<int64_t> shard_ids, const Cursor* resume = nullptr);

  // Starts (or restarts) an epoch over leased pieces, in list order; within
  // a piece, samples follow the shard's permutation (no shuffle buffer).
  // cursor.consumed of a batch counts samples of the concatenated pieces
  // (delivered + skipped), so the caller can tell how much of each piece is
  // used. There is no cursor resume here: a resumed job is handed the unused
  // tails as new pieces. Memory: a piece's raw samples are held until they
  // are emitted, so up to one shard's bytes per rank. Throws DataError for a
  // piece outside its shard.
  void start_pieces(int64_t epoch, std::vector<ShardPiece> pieces);

  // The next batch, or nullopt at the end of the epoch. Throws DataError for
  // a bad shard under bad_shard = fail, and if no epoch was started.
  std::optional<Batch> next();

  // Samples the current epoch's plan holds (before skips).
  int64_t epoch_samples() const;

  // Snapshot of the counters since construction; thread-safe.
  DataCounters counters() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cnx::data
