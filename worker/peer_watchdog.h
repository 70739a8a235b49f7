#pragma once
// Liveness of the peer ranks (distributed.peer_timeout_s).
//
// A rank whose peer vanished (host down, cable pulled, process stopped) waits
// in the next collective forever: TCP does not notice a silent peer for many
// minutes. The watchdog polls how long the collective now executing has been
// running (Communicator::seconds_in_collective) and calls `on_lost` once, from
// its own thread, when that exceeds `timeout_s`. cnx-worker's `on_lost`
// reports the failure to the coordinator (bounded) and exits with code 206, so
// every surviving rank ends within timeout_s plus one poll period.
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace cnx::worker {

class PeerWatchdog {
 public:
  // timeout_s > 0. `seconds_in_collective` must be callable from another thread.
  PeerWatchdog(double timeout_s, std::function<double()> seconds_in_collective,
               std::function<void(const std::string& why)> on_lost);
  ~PeerWatchdog();  // stops the thread (on_lost is not called afterwards)
  PeerWatchdog(const PeerWatchdog&) = delete;
  PeerWatchdog& operator=(const PeerWatchdog&) = delete;

  double poll_s() const { return poll_s_; }

 private:
  void loop();

  double timeout_s_, poll_s_;
  std::function<double()> probe_;
  std::function<void(const std::string&)> on_lost_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace cnx::worker
