#pragma once
// Labelled evaluation data: the first N labelled samples of a shard set,
// held encoded in memory and decoded per batch.
//
// Sample positions. Shards are read in index order and, inside a shard, in
// tar order; every sample with an image member and a valid .cls label gets
// the next position 0, 1, 2, ... until max_samples positions were given.
// Samples without an image or a valid label get no position (counted in
// `unlabelled`). The positions, and so the subset, are the same for every
// rank and every run (shards written by cnx-make-shards are already
// shuffled, so the first N mix the classes).
//
// Data parallelism. Rank r of W keeps the positions p with p % W == r. Every
// rank streams the shards up to the last needed position (cheap: tar reads,
// no decoding) and keeps only its own encoded bytes.
//
// With `skip` = S the first S labelled samples get no position (they are a
// held-out set read separately with max_samples = S); positions start after
// them.
//
// Decoding (decode_samples) uses data::decode_and_transform: eval mode is
// resize to size/crop_pct + center crop; train mode is RandomResizedCrop + flip
// with the stream sample_rng(seed, epoch, key). A sample that fails to decode
// is left out of the batch and counted, never fatal.
//
// Threading: a LabelledSet is immutable after reading; decode_samples may be
// called from one thread at a time (it uses the intra-op thread pool).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/image_codec.h"
#include "data/transform.h"

namespace cnx::eval {

struct EncodedSample {
  std::string key;  // "<shard>/<key>"
  int64_t position = 0;
  int64_t label = 0;
  data::ImageFormat format = data::ImageFormat::kUnknown;
  std::vector<uint8_t> bytes;
};

struct LabelledSet {
  std::vector<EncodedSample> samples;  // this rank's, by increasing position
  int64_t total = 0;                   // positions given (all ranks together)
  int64_t unlabelled = 0;              // samples skipped for no image / no valid label
  std::vector<std::string> classes;    // from the index (may be empty)
  int64_t max_label = -1;              // over all positions (same on every rank)
};

struct ReadOptions {
  std::string index_path;
  std::string shard_root;   // "" = the index's folder
  int64_t max_samples = 0;  // 0 = all
  int64_t skip = 0;         // labelled samples passed over before position 0
  int rank = 0;
  int world = 1;
  bool verify_sha256 = true;
  int64_t max_member_bytes = int64_t{64} << 20;
};

// Throws data::DataError naming the index or shard when they are unusable.
LabelledSet read_labelled_shards(const ReadOptions& options);

// Number of classes: the index's class names if present, else max_label + 1.
int64_t num_classes(const LabelledSet& set);

struct DecodedBatch {
  at::Tensor images;               // float [n, 3, size, size], normalised
  at::Tensor labels;               // int64 [n]
  std::vector<int64_t> positions;  // positions of the decoded samples
  int64_t failed = 0;              // samples left out (decode errors)
};

// Decodes set.samples[i] for i in `indices` with `transform` (train or eval),
// in parallel on the intra-op thread pool (at::get_num_threads() threads).
DecodedBatch decode_samples(const LabelledSet& set, const std::vector<int64_t>& indices,
                            const data::TransformOptions& transform, uint64_t seed, int64_t epoch);

}  // namespace cnx::eval
