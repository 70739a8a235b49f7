#include "worker/progress.h"

#include <cmath>
#include <cstdio>

namespace cnx::worker {

StepTimes& StepTimes::operator+=(const StepTimes& o) {
  data_wait += o.data_wait;
  forward += o.forward;
  backward += o.backward;
  comm_wait += o.comm_wait;
  optimizer += o.optimizer;
  return *this;
}

void ProgressMeter::add(const StepTimes& times) {
  window_ += times;
  ++steps_;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<long long>(std::llround(seconds));
  char buf[48];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%llds", s);
  }
  return buf;
}

std::string ProgressMeter::line(const ProgressPoint& p) {
  const double total = window_.total();
  const double per_step = steps_ > 0 ? total / static_cast<double>(steps_) : 0.0;
  last_ips_ = total > 0 ? static_cast<double>(p.images_per_step * steps_) / total : 0.0;
  auto pct = [&](double v) { return total > 0 ? 100.0 * v / total : 0.0; };
  char head[160];
  if (p.total_steps > 0) {
    std::snprintf(head, sizeof(head), "step %lld/%lld (%.1f%%)", static_cast<long long>(p.step),
                  static_cast<long long>(p.total_steps),
                  100.0 * static_cast<double>(p.step) / static_cast<double>(p.total_steps));
  } else {
    std::snprintf(head, sizeof(head), "step %lld", static_cast<long long>(p.step));
  }
  char body[320];
  std::snprintf(
      body, sizeof(body),
      " epoch %.2f | loss %.4f | lr %.2e | %.1f img/s | data %.0f%% fwd %.0f%% bwd %.0f%% comm %.0f%% opt %.0f%% | "
      "%.3f s/step",
      p.epoch, p.loss, p.lr, last_ips_, pct(window_.data_wait), pct(window_.forward), pct(window_.backward),
      pct(window_.comm_wait), pct(window_.optimizer), per_step);
  std::string out = std::string(head) + body;
  if (p.total_steps > 0 && per_step > 0) {
    out += " | ETA " + format_duration(per_step * static_cast<double>(p.total_steps - p.step));
  }
  window_ = StepTimes{};
  steps_ = 0;
  return out;
}

}  // namespace cnx::worker
