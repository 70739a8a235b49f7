#pragma once
// The worker's side of the coordinator's shard leases (docs/protocols.md;
// proto/coordinator.proto AcquireShard / ReportShardDone / RankProgress),
// without gRPC or LibTorch: the lease client interface that LeaseSource
// (lease_source.h) reads through, and the lease cursor a rank stores in its
// checkpoint part, from which the RankProgress it reports is derived.
//
// Protocol of one epoch e on a rank (LeaseSource):
// 1. acquire(e, 0), acquire(e, 1), ... until end_of_epoch: the rank's fixed
//    sequence of items for e in this attempt (a pure function of the seed,
//    the world size and the last committed progress).
// 2. The items are read in order as one stream (data::Pipeline::
//    start_pieces): item i is samples [start, end) of its shard's
//    permutation for e.
// 3. When the stream passes the end of item i, done(e, i, end - start).
// 4. When the rank leaves e (its items are exhausted, or another rank ran
//    out first and every rank moves on), every item not reported yet is
//    reported done with the samples it actually used (the rest is counted
//    as unused by the coordinator).
// 5. At a checkpoint, the cursor (this file) records the items and how many
//    samples of the stream were used; progress() turns that into
//    {epoch, next_position, partial}.
// A resumed attempt with the same world size is handed the unused tail of
// the partial item first, then the untouched items: the same samples in the
// same order, hence bit-exact resume.
#include <cstdint>
#include <string>
#include <vector>

namespace cnx::worker {

// One item of a rank's sequence, as AcquireShard hands it out.
struct LeaseGrant {
  bool end_of_epoch = false;  // nothing more in this epoch (other fields unset)
  int64_t epoch = 0;
  int64_t position = 0;
  int64_t shard_id = 0;
  std::string shard_name;
  std::string sha256;
  int64_t shard_samples = 0;
  int64_t start = 0;  // positions [start, end) of the shard's permutation
  int64_t end = 0;
};

// The coordinator as seen by LeaseSource (CoordinatorLink implements it;
// tests implement it over an in-process coordinator::Scheduler). Calls come
// from the training thread; errors throw.
class LeaseClient {
 public:
  virtual ~LeaseClient() = default;
  virtual LeaseGrant acquire(int64_t epoch, int64_t position) = 0;
  virtual void done(int64_t epoch, int64_t position, int64_t consumed) = 0;
};

// RankProgress of proto/coordinator.proto (partial items of `epoch` only:
// a rank reports every item of an epoch done before it leaves it).
struct LeaseProgress {
  struct Partial {
    int64_t position = 0;
    int64_t consumed = 0;
  };
  int64_t epoch = 0;
  int64_t next_position = 0;
  std::vector<Partial> partial;
};

// Where a rank is in its leased sequence: what a checkpoint stores.
struct LeaseCursor {
  struct Item {
    int64_t shard = 0;
    int64_t start = 0;
    int64_t end = 0;
  };
  int64_t epoch = 0;
  std::vector<Item> items;  // position i = items[i] (this attempt's sequence)
  int64_t consumed = 0;     // samples of the concatenated items used (delivered + skipped)
  int64_t delivered = 0;    // samples delivered in batches this epoch
  int64_t batches = 0;      // batches delivered this epoch

  // Items before next_position are used up except the one listed (at most
  // one: the item the stream is inside), items from next_position on are
  // untouched.
  LeaseProgress progress() const;
  // Samples of item i used when `upto` samples of the stream are:
  // clamp(upto - start of item i in the stream, 0, size of item i).
  int64_t used_of(size_t i, int64_t upto) const;
  int64_t used_of(size_t i) const { return used_of(i, consumed); }

  std::string to_string() const;  // JSON with "kind": "leases"
  // Throws std::invalid_argument naming the problem.
  static LeaseCursor from_string(const std::string& s);
  // True when `s` is a lease cursor (its "kind" is "leases").
  static bool is_lease_cursor(const std::string& s);
};

}  // namespace cnx::worker
