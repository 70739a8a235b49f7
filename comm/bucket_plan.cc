#include "comm/bucket_plan.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "common/check.h"

namespace cnx::comm {

int64_t mib_to_bytes(double mb, const std::string& what) {
  if (!(mb > 0.0) || !std::isfinite(mb) || mb > 1.0e6) {
    throw std::invalid_argument(cnx::str(what, " must be a positive number of MiB (at most 1e6), got ", mb));
  }
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(mb * 1024.0 * 1024.0)));
}

std::vector<Bucket> plan_buckets(const std::vector<BucketParam>& params, int64_t first_bucket_bytes,
                                 int64_t bucket_cap_bytes) {
  if (first_bucket_bytes <= 0 || bucket_cap_bytes <= 0) {
    throw std::invalid_argument(cnx::str("bucket limits must be positive, got first_bucket_bytes=", first_bucket_bytes,
                                         " bucket_cap_bytes=", bucket_cap_bytes));
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].numel < 0 || params[i].element_size <= 0) {
      throw std::invalid_argument(cnx::str("parameter ", i, " has numel ", params[i].numel, " and element size ",
                                           params[i].element_size, "; expected numel >= 0 and element size > 0"));
    }
  }
  std::vector<Bucket> buckets;
  Bucket open;
  bool has_open = false;
  auto close = [&] {
    if (has_open) {
      buckets.push_back(std::move(open));
      open = Bucket{};
      has_open = false;
    }
  };
  for (size_t k = params.size(); k-- > 0;) {
    const BucketParam& p = params[k];
    if (has_open && open.group != p.group) {
      close();
    }
    if (!has_open) {
      open.group = p.group;
      has_open = true;
    }
    open.params.push_back(k);
    open.offsets.push_back(open.numel);
    open.numel += p.numel;
    open.bytes += p.numel * p.element_size;
    const int64_t limit = buckets.empty() ? first_bucket_bytes : bucket_cap_bytes;
    if (open.bytes >= limit) {
      close();
    }
  }
  close();
  return buckets;
}

}  // namespace cnx::comm
