#include "worker/lease_source.h"

#include "common/check.h"
#include "common/logging.h"

namespace cnx::worker {

LeaseSource::LeaseSource(data::DataOptions options, LeaseClient& client)
    : pipeline_(std::move(options)), client_(client) {}

void LeaseSource::report_used_up(int64_t consumed) {
  for (; reported_ < cur_.items.size(); ++reported_) {
    const auto& item = cur_.items[reported_];
    const int64_t used = cur_.used_of(reported_, consumed);
    if (used < item.end - item.start) break;
    client_.done(cur_.epoch, static_cast<int64_t>(reported_), used);
  }
}

void LeaseSource::finish_epoch() {
  if (!acquired_) return;
  // A batch returned since the last confirmation was discarded by the
  // trainer (see start_epoch): only `confirmed_` samples were trained on.
  for (; reported_ < cur_.items.size(); ++reported_)
    client_.done(cur_.epoch, static_cast<int64_t>(reported_), cur_.used_of(reported_, confirmed_));
  acquired_ = false;
}

void LeaseSource::start_epoch(int64_t epoch) {
  finish_epoch();
  cur_ = LeaseCursor{};
  cur_.epoch = epoch;
  confirmed_ = 0;
  reported_ = 0;
}

void LeaseSource::restore(const std::string& cursor) {
  LeaseCursor c;
  try {
    c = LeaseCursor::from_string(cursor);
  } catch (const std::invalid_argument& e) {
    CNX_CHECK(false, "the checkpoint's data cursor is not from coordinator (lease) mode: ", e.what(),
              ". A checkpoint written without --coordinator cannot be resumed with one");
  }
  start_epoch(c.epoch);
}

void LeaseSource::acquire_epoch() {
  const data::ShardIndex& index = pipeline_.index();
  const int64_t epoch = cur_.epoch;
  for (int64_t position = 0;; ++position) {
    const LeaseGrant g = client_.acquire(epoch, position);
    if (g.end_of_epoch) break;
    const auto bad = [&](const std::string& what) {
      return data::DataError(str("coordinator lease (epoch ", epoch, ", position ", position, ", shard ", g.shard_id,
                                 " '", g.shard_name, "') ", what,
                                 ": the coordinator and this worker must use the same shard index (data.index)"));
    };
    if (g.epoch != epoch || g.position != position) throw bad(str("answers epoch ", g.epoch, " position ", g.position));
    if (g.shard_id < 0 || g.shard_id >= static_cast<int64_t>(index.shards.size()))
      throw bad(str("names a shard id outside this worker's ", index.shards.size(), " shards"));
    const data::ShardInfo& s = index.shards[g.shard_id];
    if (s.name != g.shard_name || s.sha256 != g.sha256 || s.samples != g.shard_samples)
      throw bad(str("differs from this worker's index entry '", s.name, "' (", s.samples, " samples)"));
    if (g.start < 0 || g.start >= g.end || g.end > s.samples)
      throw bad(str("has the sample range [", g.start, ", ", g.end, ") outside the shard's ", s.samples));
    cur_.items.push_back({g.shard_id, g.start, g.end});
  }
  acquired_ = true;
  reported_ = 0;
  std::vector<data::ShardPiece> pieces;
  for (const auto& it : cur_.items) pieces.push_back({it.shard, it.start, it.end});
  CNX_LOG_DEBUG("epoch {}: {} leased items", epoch, pieces.size());
  pipeline_.start_pieces(epoch, std::move(pieces));
}

std::optional<TrainBatch> LeaseSource::next() {
  if (!acquired_) acquire_epoch();
  // Asked for more: the batch returned before was trained on.
  confirmed_ = cur_.consumed;
  report_used_up(confirmed_);
  auto b = pipeline_.next();
  if (!b) return std::nullopt;  // a dropped final partial batch stays unused
  cur_.consumed = b->cursor.consumed;
  cur_.delivered = b->cursor.delivered;
  cur_.batches = b->cursor.batches;
  return TrainBatch{b->images, std::move(b->keys), cur_.epoch};
}

int64_t LeaseSource::epoch_samples_total() const {
  return pipeline_.index().total_samples;
}

int64_t LeaseSource::samples_skipped() const {
  return pipeline_.counters().skipped_total();
}

std::map<std::string, int64_t> LeaseSource::skipped_by_reason() const {
  return pipeline_.counters().skipped;
}

}  // namespace cnx::worker
