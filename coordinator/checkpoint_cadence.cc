#include "coordinator/checkpoint_cadence.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"

namespace cnx::coordinator {

int64_t add_capped(int64_t a, int64_t b, int64_t cap) {
  int64_t sum = 0;
  if (__builtin_add_overflow(a, b, &sum) || sum > cap) return cap;
  return sum;
}

int64_t plan_margin(double rate, double heartbeat_s, int64_t cap) {
  const double m = std::ceil(rate * 2.0 * heartbeat_s) + 1.0;
  return std::isfinite(m) && m < static_cast<double>(cap) ? static_cast<int64_t>(m) : cap;
}

std::optional<CadencePlan> next_cadence_checkpoint(const CadenceInput& in) {
  const int64_t margin = in.margin;
  const int64_t top = in.top_step;
  if (in.every_steps > 0) {
    const int64_t n = in.every_steps;
    const int64_t reach = add_capped(top, margin, in.cap);
    const int64_t at = std::max(reach / n + (reach % n != 0 ? 1 : 0), in.committed_step / n + 1) * n;
    if (at < in.cap && at - top <= 2 * margin) return CadencePlan{at, str("every ", n, " steps")};
  }
  if (in.every_minutes > 0) {
    const double due = in.last_commit_unix_s + in.every_minutes * 60;
    const double until = std::min(std::ceil(in.rate * std::max(0.0, due - in.now)), static_cast<double>(in.cap));
    const int64_t ahead = std::max<int64_t>(margin, static_cast<int64_t>(until));
    if (in.now >= due || (in.rate > 0 && ahead <= 2 * margin))
      return CadencePlan{add_capped(top, ahead, in.cap), str("every ", in.every_minutes, " minutes")};
  }
  return std::nullopt;
}

}  // namespace cnx::coordinator
