#pragma once
// The order in which an epoch visits its samples.
//
// The caller gives the epoch's shards as a list (ids into the index, in
// reading order). The reader streams them in that order through a shuffle
// buffer of B samples: the first B samples fill it; then each further sample
// evicts a uniformly chosen buffered one, which is emitted; at the end the
// buffer drains in random order. Because the choice depends only on
// (seed, epoch, shard list) and the per-shard sample counts of the index,
// the whole emission order is computable up front: a pipeline position is one
// integer (samples emitted so far), and the set of samples consumed by a
// cursor is exactly epoch_order(...)[0, consumed).
#include <cstdint>
#include <vector>

namespace cnx::data {

struct SampleRef {
  int32_t list_pos = 0;  // position in the epoch's shard list
  int32_t idx = 0;       // sample ordinal inside that shard
};

// counts[p] = samples of the shard at list position p.
std::vector<SampleRef> epoch_order(const std::vector<int64_t>& counts, uint64_t seed, int64_t epoch,
                                   const std::vector<int64_t>& shard_ids, int64_t shuffle_buffer);

// The order in which a leased piece reads its shard (coordinator mode):
// a seeded Fisher-Yates permutation of the shard's sample ordinals
// 0..samples-1 for (seed, epoch, shard id). A lease [start, end) reads
// positions start..end-1 of it, so the unused tail [start + consumed, end)
// of a lease continues exactly where the lease stopped.
std::vector<int32_t> shard_permutation(uint64_t seed, int64_t epoch, int64_t shard_id, int64_t samples);

// Fallback plan without a coordinator: a seeded shuffle of 0..num_shards-1
// for `epoch`, then round-robin: rank r gets positions r, r + world, ...
// Every shard goes to exactly one rank; ranks differ by at most one shard.
std::vector<int64_t> static_shard_split(int64_t num_shards, int64_t epoch, uint64_t seed, int rank, int world);

}  // namespace cnx::data
