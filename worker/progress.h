#pragma once
// Step timing and the rank-0 progress line.
//
// A StepTimes holds the wall seconds of one step's phases. The trainer
// measures them with PhaseTimer; ProgressMeter accumulates them between two
// progress lines and formats
//   step 120/5000 (2.4%) epoch 0.48 | loss 0.8123 | lr 3.00e-04 | 45.1 img/s |
//   data 2% fwd 31% bwd 55% comm 3% opt 9% | 1.42 s/step | ETA 1h55m
// "comm" is the time the step waited for outstanding all-reduces after
// backward (the part of communication not hidden behind compute).
// Not thread-safe: the training thread owns it.
#include <chrono>
#include <cstdint>
#include <string>

namespace cnx::worker {

struct StepTimes {
  double data_wait = 0;  // waiting for the next batch
  double forward = 0;
  double backward = 0;   // backward incl. launching overlapped all-reduces
  double comm_wait = 0;  // GradSync::finish(): waiting + copy-back
  double optimizer = 0;  // clipping + AdamW + schedule
  double total() const { return data_wait + forward + backward + comm_wait + optimizer; }
  StepTimes& operator+=(const StepTimes& o);
};

// Measures consecutive phases: lap() returns the seconds since the last lap.
class PhaseTimer {
 public:
  PhaseTimer() : last_(std::chrono::steady_clock::now()) {}
  double lap() {
    const auto now = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    return s;
  }

 private:
  std::chrono::steady_clock::time_point last_;
};

struct ProgressPoint {
  int64_t step = 0;         // steps done (1-based after the first step)
  int64_t total_steps = 0;  // 0 = unknown
  double epoch = 0;         // fractional epoch
  double loss = 0;
  double lr = 0;
  int64_t images_per_step = 0;  // global batch
};

class ProgressMeter {
 public:
  // Adds one step's times (and its images) to the current window.
  void add(const StepTimes& times);
  // Formats the line for the window since the last call, then starts a new window.
  std::string line(const ProgressPoint& p);
  // Images per second over the last formatted window (0 before the first).
  double last_images_per_second() const { return last_ips_; }

 private:
  StepTimes window_;
  int64_t steps_ = 0;
  double last_ips_ = 0;
};

// "1h55m", "3m07s", "12s".
std::string format_duration(double seconds);

}  // namespace cnx::worker
