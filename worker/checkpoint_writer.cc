#include "worker/checkpoint_writer.h"

#include <chrono>

#include "common/check.h"
#include "common/logging.h"

namespace cnx::worker {

CheckpointWriter::CheckpointWriter() : thread_([this] { loop(); }) {}

CheckpointWriter::~CheckpointWriter() {
  try {
    wait();
  } catch (const std::exception& e) {
    CNX_LOG_ERROR("checkpoint write abandoned: {}", e.what());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void CheckpointWriter::start(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    CNX_CHECK(!pending_, "a checkpoint task is already in flight");
    task_ = std::move(task);
    pending_ = running_ = true;
    error_ = nullptr;
  }
  cv_.notify_all();
}

bool CheckpointWriter::busy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

bool CheckpointWriter::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_;
}

double CheckpointWriter::wait() {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  if (!pending_) return 0.0;
  cv_.wait(lock, [this] { return !running_; });
  pending_ = false;
  last_run_s_ = run_s_;
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
  return waited;
}

void CheckpointWriter::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || (running_ && task_); });
    if (stop_) return;
    std::function<void()> task = std::move(task_);
    task_ = nullptr;
    lock.unlock();
    const auto t0 = std::chrono::steady_clock::now();
    std::exception_ptr error;
    try {
      task();
    } catch (...) {
      error = std::current_exception();
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    lock.lock();
    error_ = error;
    run_s_ = secs;
    running_ = false;
    cv_.notify_all();
  }
}

}  // namespace cnx::worker
