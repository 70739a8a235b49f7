#pragma once
// Assignment of parameters to gradient buckets (after DDP's
// compute_bucket_assignment_by_size and Horovod's fusion buffer).
//
// Parameters are visited in *reverse* registration order: backward produces
// the gradients of the last layers first, so the buckets that fill first are
// also the ones launched first. A bucket is closed as soon as its payload
// reaches the limit (first_bucket_bytes for the first bucket, so that
// communication starts early; bucket_cap_bytes afterwards) or when the next
// parameter has another group (dtype/device: one bucket is one flat buffer of
// one dtype). A bucket may therefore exceed its limit by its last parameter,
// and a parameter larger than the cap gets a bucket of its own.
//
// The plan depends only on the parameter list, so every rank computes the
// same plan. Pure logic: no torch, no MPI; unit-tested on its own.
#include <cstdint>
#include <string>
#include <vector>

namespace cnx::comm {

struct BucketParam {
  int64_t numel = 0;
  int64_t element_size = 4;  // bytes per element
  int group = 0;             // parameters of different groups never share a bucket
};

struct Bucket {
  int group = 0;
  // Indices into the input (registration-order) list, in the order they are
  // laid out in the flat buffer (reverse registration order).
  std::vector<size_t> params;
  std::vector<int64_t> offsets;  // element offset of each parameter in the flat buffer
  int64_t numel = 0;             // elements in the flat buffer
  int64_t bytes = 0;
};

// Throws std::invalid_argument when a limit is not positive or a parameter
// has a negative size or a non-positive element size.
std::vector<Bucket> plan_buckets(const std::vector<BucketParam>& params, int64_t first_bucket_bytes,
                                 int64_t bucket_cap_bytes);

// Bytes of `mb` MiB (1 MiB = 2^20 bytes); `what` names the option in errors.
int64_t mib_to_bytes(double mb, const std::string& what);

}  // namespace cnx::comm
