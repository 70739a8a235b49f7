#include "worker/peer_watchdog.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "common/check.h"

namespace cnx::worker {

PeerWatchdog::PeerWatchdog(double timeout_s, std::function<double()> seconds_in_collective,
                           std::function<void(const std::string&)> on_lost)
    : timeout_s_(timeout_s),
      poll_s_(std::clamp(timeout_s / 10.0, 0.01, 1.0)),
      probe_(std::move(seconds_in_collective)),
      on_lost_(std::move(on_lost)) {
  CNX_CHECK(timeout_s > 0, "peer timeout must be > 0 seconds, got ", timeout_s);
  CNX_CHECK(probe_ && on_lost_, "PeerWatchdog needs a probe and a handler");
  thread_ = std::thread([this] { loop(); });
}

PeerWatchdog::~PeerWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void PeerWatchdog::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, std::chrono::duration<double>(poll_s_), [this] { return stop_; });
    if (stop_) return;
    const double waited = probe_();
    if (waited > timeout_s_) {
      char why[160];
      std::snprintf(why, sizeof(why),
                    "a collective has not completed after %.1f s (distributed.peer_timeout_s = %g): a peer rank is "
                    "unreachable or gone",
                    waited, timeout_s_);
      lock.unlock();
      on_lost_(why);
      return;
    }
  }
}

}  // namespace cnx::worker
