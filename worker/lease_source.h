#pragma once
// Shard data from the coordinator's leases (coordinator mode of cnx-worker):
// a BatchSource over this rank's leased items, read through the data
// pipeline (data::Pipeline::start_pieces). Protocol: worker/lease_protocol.h.
//
// Determinism: the items of an epoch are the coordinator's fixed sequence
// for this rank; within an item, samples follow the shard's seeded
// permutation; augmentation and masks depend on (seed, epoch, sample key)
// only. So a resumed attempt with the same world size, handed the unused
// tail first, replays the same batches bit for bit; with another world size
// it reads only samples not used in the epoch yet.
//
// Acquisition is lazy: start_epoch() only reports the finished epoch's
// items; the first next() of an epoch acquires all its items (one RPC each,
// retried by the client while the coordinator restarts). Leases are renewed
// by the coordinator while the rank's heartbeats show progress.
//
// Threading: the training thread owns a LeaseSource; the client must
// outlive it.
#include <cstdint>
#include <map>
#include <string>

#include "data/pipeline.h"
#include "worker/batch_source.h"
#include "worker/lease_protocol.h"

namespace cnx::worker {

class LeaseSource final : public BatchSource {
 public:
  LeaseSource(data::DataOptions options, LeaseClient& client);

  // Reports the current epoch's items done (with what was used), then
  // begins `epoch` (items acquired at the first next()). Called right after
  // next() returned a batch, that batch was not trained on (another rank ran
  // out first: Trainer::next_batch), so its samples count as unused.
  void start_epoch(int64_t epoch) override;
  std::optional<TrainBatch> next() override;
  std::string cursor() const override { return cur_.to_string(); }
  // Takes the epoch from a lease cursor; the items of the resumed attempt
  // come from the coordinator (its new sequence already starts after what
  // the checkpoint recorded as used). Throws for a cursor of another kind.
  void restore(const std::string& cursor) override;
  int64_t epoch_samples_total() const override;
  bool uneven() const override { return true; }
  int64_t samples_skipped() const override;
  std::map<std::string, int64_t> skipped_by_reason() const override;

  // Reports every item of the current epoch not reported yet as done with
  // the samples it used; nothing is held afterwards. Idempotent.
  void finish_epoch();
  const LeaseCursor& lease_cursor() const { return cur_; }

 private:
  void acquire_epoch();

  data::Pipeline pipeline_;
  LeaseClient& client_;
  void report_used_up(int64_t consumed);

  LeaseCursor cur_;        // consumed: through the last batch returned
  int64_t confirmed_ = 0;  // consumed through the last batch known to be trained on
  bool acquired_ = false;
  size_t reported_ = 0;  // items [0, reported_) reported done
};

}  // namespace cnx::worker
