#include "worker/step_control.h"

#include <cmath>
#include <limits>

#include "common/check.h"

namespace cnx::worker {
namespace {

// kPlanSum / kPlanSquares / kPlanKnown: the sum of the due plan ids, of their
// squares, and how many ranks know one. A plan runs when every rank knows one
// and they are all the same: then sum^2 == world * squares (equality in
// Cauchy-Schwarz; exact in doubles for ids below 2^26).
enum Slot {
  kCheckpointNow = 0,
  kPreempted,
  kNonFinite,
  kLossSum,
  kPlanSum,
  kPlanSquares,
  kPlanKnown,
  kAbort,
  kDrain,
  kWritten,
  kNumSlots
};

double flag(bool b) {
  return b ? 1.0 : 0.0;
}

}  // namespace

int control_slot_count() {
  return kNumSlots;
}

std::vector<double> encode_signals(const StepSignals& s) {
  std::vector<double> v(kNumSlots, 0.0);
  v[kCheckpointNow] = flag(s.checkpoint_now);
  v[kPreempted] = flag(s.preempted);
  v[kNonFinite] = flag(s.nonfinite);
  v[kLossSum] = s.nonfinite ? 0.0 : s.loss;
  v[kPlanSum] = static_cast<double>(s.plan);
  v[kPlanSquares] = static_cast<double>(s.plan) * static_cast<double>(s.plan);
  v[kPlanKnown] = flag(s.plan > 0);
  v[kAbort] = flag(s.abort);
  v[kDrain] = flag(s.drain);
  v[kWritten] = flag(s.checkpoint_written);
  return v;
}

StepDecision decide(const std::vector<double>& sums, int world) {
  CNX_CHECK(static_cast<int>(sums.size()) == kNumSlots, "expected ", static_cast<int>(kNumSlots),
            " control slots, got ", sums.size());
  CNX_CHECK(world >= 1, "world size must be >= 1, got ", world);
  const auto w = static_cast<double>(world);
  StepDecision d;
  d.checkpoint_now = sums[kCheckpointNow] > 0;
  d.preempted = sums[kPreempted] > 0;
  d.nonfinite_ranks = static_cast<int>(std::lround(sums[kNonFinite]));
  d.mean_loss = d.nonfinite_ranks > 0 ? std::numeric_limits<double>::quiet_NaN() : sums[kLossSum] / w;
  const double plan = sums[kPlanSum] / w;
  if (sums[kPlanKnown] == w && sums[kPlanSum] * sums[kPlanSum] == w * sums[kPlanSquares] && plan >= 1 &&
      plan == std::floor(plan))
    d.plan = static_cast<int64_t>(plan);
  d.abort = sums[kAbort] > 0;
  d.drain = sums[kDrain] > 0;
  d.checkpoint_written = sums[kWritten] == w;
  return d;
}

}  // namespace cnx::worker
