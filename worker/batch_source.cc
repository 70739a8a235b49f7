#include "worker/batch_source.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/errors.h"
#include "common/rng.h"
#include "data/epoch_order.h"
#include "model/fcmae.h"

namespace cnx::worker {
namespace {
constexpr uint64_t kMaskStream = 0x6d61736b5f726e67ULL;   // "mask_rng"
constexpr uint64_t kImageStream = 0x73796e7468696d67ULL;  // "synthimg"
}  // namespace

// ---------------------------------------------------------------------------
// SyntheticSource
// ---------------------------------------------------------------------------

SyntheticSource::SyntheticSource(const SyntheticOptions& o) : options_(o) {
  CNX_CHECK(o.batch_size > 0 && o.world > 0 && o.rank >= 0 && o.rank < o.world && o.image_size > 0,
            "synthetic data: bad batch_size/rank/world/image_size");
  if (o.samples < o.batch_size * o.world)
    throw UsageError(str("--synthetic-samples ", o.samples,
                         " is fewer than one global batch (data.batch_size x ranks = ", o.batch_size * o.world, ")"));
}

void SyntheticSource::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  batch_ = 0;
}

at::Tensor SyntheticSource::image(int64_t index) const {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(mix_seed(options_.seed ^ kImageStream, index));
  const int64_t s = options_.image_size;
  // A smooth-ish image: low-resolution noise upsampled, plus fine noise, so
  // that the patch-normalised loss has structure to learn.
  at::Tensor coarse = at::randn({1, 3, 4, 4}, gen);
  at::Tensor up = at::upsample_bilinear2d(coarse, {s, s}, false);
  return (up + 0.1 * at::randn({1, 3, s, s}, gen)).squeeze(0);
}

std::optional<TrainBatch> SyntheticSource::next() {
  const int64_t b = options_.batch_size, w = options_.world;
  const int64_t batches_per_epoch = options_.samples / (b * w);
  if (batch_ >= batches_per_epoch) return std::nullopt;
  TrainBatch out;
  out.epoch = epoch_;
  std::vector<at::Tensor> images;
  const int64_t first = batch_ * b * w + options_.rank * b;
  for (int64_t i = 0; i < b; ++i) {
    images.push_back(image(first + i));
    out.keys.push_back("synthetic/" + std::to_string(first + i));
  }
  out.images = at::stack(images);
  ++batch_;
  return out;
}

std::string SyntheticSource::cursor() const {
  return nlohmann::json{{"kind", "synthetic"}, {"epoch", epoch_}, {"batch", batch_}}.dump();
}

void SyntheticSource::restore(const std::string& cursor) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(cursor);
  } catch (const std::exception& e) {
    CNX_CHECK(false, "synthetic data cursor is not JSON: ", e.what());
  }
  CNX_CHECK(j.is_object() && j.value("kind", "") == "synthetic" && j.contains("epoch") && j.contains("batch") &&
                j["epoch"].is_number_integer() && j["batch"].is_number_integer(),
            "not a synthetic data cursor: ", cursor);
  epoch_ = j["epoch"].get<int64_t>();
  batch_ = j["batch"].get<int64_t>();
}

// ---------------------------------------------------------------------------
// ShardSource
// ---------------------------------------------------------------------------

ShardSource::ShardSource(data::DataOptions options, int rank, int world, ShardPlanFn plan)
    : pipeline_(std::move(options)), rank_(rank), world_(world), plan_(std::move(plan)) {
  if (!plan_) {
    const int64_t shards = static_cast<int64_t>(pipeline_.index().shards.size());
    const uint64_t seed = pipeline_.options().seed;
    const int r = rank_, w = world_;
    plan_ = [shards, seed, r, w](int64_t epoch) { return data::static_shard_split(shards, epoch, seed, r, w); };
  }
}

void ShardSource::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  cursor_.reset();
  pipeline_.start_epoch(epoch, plan_(epoch));
}

std::optional<TrainBatch> ShardSource::next() {
  auto b = pipeline_.next();
  if (!b) return std::nullopt;
  cursor_ = b->cursor;
  return TrainBatch{b->images, std::move(b->keys), epoch_};
}

std::string ShardSource::cursor() const {
  nlohmann::json j{{"kind", "shards"}, {"epoch", epoch_}};
  j["pipeline"] = cursor_ ? cursor_->to_string() : std::string();
  return j.dump();
}

void ShardSource::restore(const std::string& cursor) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(cursor);
  } catch (const std::exception& e) {
    CNX_CHECK(false, "data cursor is not JSON: ", e.what());
  }
  CNX_CHECK(j.is_object() && j.value("kind", "") == "shards" && j.contains("epoch") && j["epoch"].is_number_integer(),
            "not a shard data cursor: ", cursor);
  epoch_ = j["epoch"].get<int64_t>();
  const std::string p = j.value("pipeline", "");
  if (p.empty()) {
    start_epoch(epoch_);
    return;
  }
  data::Cursor c = data::Cursor::from_string(p);
  cursor_ = c;
  pipeline_.start_epoch(c.epoch, c.shard_ids, &c);
}

int64_t ShardSource::epoch_samples_total() const {
  return pipeline_.index().total_samples;
}

int64_t ShardSource::samples_skipped() const {
  return pipeline_.counters().skipped_total();
}

std::map<std::string, int64_t> ShardSource::skipped_by_reason() const {
  return pipeline_.counters().skipped;
}

// ---------------------------------------------------------------------------
// Masks
// ---------------------------------------------------------------------------

at::Tensor make_masks(const std::vector<std::string>& keys, int64_t epoch, uint64_t seed, int64_t h_patches,
                      int64_t w_patches, double ratio) {
  CNX_CHECK(h_patches > 0 && w_patches > 0, "mask: patch grid must be positive, got ", h_patches, "x", w_patches);
  CNX_CHECK(ratio >= 0 && ratio <= 1, "mask.ratio must be in [0, 1], got ", ratio);
  std::vector<at::Tensor> rows;
  rows.reserve(keys.size());
  for (const auto& key : keys) {
    const uint64_t s = mix_seed(mix_seed(seed ^ kMaskStream, static_cast<uint64_t>(epoch)), fnv1a64(key));
    rows.push_back(model::generate_mask(1, h_patches, w_patches, ratio, s));
  }
  return at::cat(rows, 0);
}

}  // namespace cnx::worker
