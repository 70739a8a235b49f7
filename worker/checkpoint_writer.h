#pragma once
// One background thread that runs checkpoint tasks (serialise, write,
// fsync, commit or report) one at a time, so that training continues while
// a checkpoint is written.
//
// Threading: start(), busy(), wait() are called by one thread (the training
// thread); each task runs on the writer's thread. A task must touch only
// what it owns (a snapshot, its own folder) and thread-safe services.
// At most one task exists at a time: start() requires that the previous one
// was waited for.
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace cnx::worker {

class CheckpointWriter {
 public:
  CheckpointWriter();
  // Waits for a running task; an error it raised is logged, not thrown.
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Runs `task` on the writer thread. CNX_CHECKs that no task is pending.
  void start(std::function<void()> task);
  // A task was started and has not finished yet (never blocks).
  bool busy() const;
  // A task was started and not waited for (finished or not).
  bool pending() const;
  // Blocks until the pending task finished, rethrows its exception, and
  // returns the seconds this call blocked. No-op (0) when none is pending.
  double wait();
  // Seconds the last waited-for task ran on the writer thread.
  double last_run_seconds() const { return last_run_s_; }

 private:
  void loop();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> task_;
  bool pending_ = false, running_ = false, stop_ = false;
  std::exception_ptr error_;
  double run_s_ = 0, last_run_s_ = 0;
  std::thread thread_;
};

}  // namespace cnx::worker
