#include "comm/mpi/mpi_communicator.h"

#include <cstdlib>

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <exception>
#include <thread>

#include "common/check.h"

namespace cnx::comm {

// Work handle completed by the communication thread.
class MpiWork final : public Work {
 public:
  MpiWork(std::vector<at::Tensor> keep, std::shared_ptr<std::atomic<int>> waiters)
      : keep_(std::move(keep)), waiters_(std::move(waiters)) {}

  bool is_completed() override {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  void wait() override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!done_) {
      // While someone blocks here, the communication thread polls without
      // sleeping (see MpiCommunicator::loop).
      waiters_->fetch_add(1);
      cv_.wait(lock, [&] { return done_; });
      waiters_->fetch_sub(1);
    }
    if (error_) {
      std::rethrow_exception(error_);
    }
  }
  double seconds() override {
    std::lock_guard<std::mutex> lock(mu_);
    return seconds_;
  }
  void complete(std::exception_ptr error, double seconds) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::move(error);
      seconds_ = seconds;
      done_ = true;
      keep_.clear();
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
  double seconds_ = 0.0;
  std::vector<at::Tensor> keep_;  // tensors referenced until completion
  std::shared_ptr<std::atomic<int>> waiters_;
};

namespace {

// MPI counts are int: large buffers go in chunks of at most this many elements.
constexpr int64_t kMaxChunk = int64_t{1} << 30;
// Shortest and longest pause between two progress rounds of polled
// collectives while nobody waits for them.
constexpr int64_t kMinPollPauseUs = 50;
constexpr int64_t kMaxPollPauseUs = 2000;
// Non-blocking all-reduces in flight at once (GradSync's buckets).
constexpr size_t kMaxInFlight = 64;

MPI_Datatype mpi_float_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    default:
      return MPI_DATATYPE_NULL;
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAverage:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
  }
  return MPI_OP_NULL;
}

void check_cpu_dense(const at::Tensor& t, const std::string& what, int rank) {
  if (!t.defined()) {
    throw CommError(cnx::str("MPI ", what, " on rank ", rank, ": tensor is undefined"));
  }
  if (t.layout() != at::kStrided) {
    throw CommError(cnx::str("MPI ", what, " on rank ", rank, ": tensor has layout ", t.layout(),
                             "; only dense (strided) tensors are supported"));
  }
  if (t.device().type() != at::kCPU) {
    throw CommError(cnx::str("MPI ", what, " on rank ", rank, ": tensor is on ", t.device(),
                             "; the MPI backend handles CPU tensors only (use backend nccl for CUDA)"));
  }
  if (!t.is_contiguous()) {
    throw CommError(cnx::str("MPI ", what, " on rank ", rank, ": tensor of shape ", t.sizes(),
                             " is not contiguous; pass a contiguous tensor (in-place result)"));
  }
}

}  // namespace

MpiCommunicator::MpiCommunicator(std::shared_ptr<MpiRuntime> runtime, MPI_Comm base, MpiWaitMode wait)
    : runtime_(std::move(runtime)), wait_mode_(wait) {
  CNX_CHECK(runtime_ != nullptr, "MpiCommunicator needs an MpiRuntime (MpiRuntime::acquire())");
  CNX_MPI_CHECK(MPI_Comm_dup(base, &comm_));
  CNX_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  CNX_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  CNX_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  MPI_Comm local = MPI_COMM_NULL;
  CNX_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
  CNX_MPI_CHECK(MPI_Comm_rank(local, &local_rank_));
  CNX_MPI_CHECK(MPI_Comm_size(local, &local_size_));
  CNX_MPI_CHECK(MPI_Comm_free(&local));
  thread_ = std::thread([this] { loop(); });
}

MpiCommunicator::~MpiCommunicator() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) {
    MPI_Comm_free(&comm_);
  }
}

std::shared_ptr<MpiWork> MpiCommunicator::enqueue(std::function<void()> fn, std::vector<at::Tensor> keep) {
  auto work = std::make_shared<MpiWork>(std::move(keep), waiters_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    CNX_CHECK(!stop_, "MpiCommunicator: collective issued while the communicator is being destroyed");
    queue_.push_back(Item{std::move(fn), nullptr, nullptr, work});
  }
  cv_.notify_all();
  return work;
}

std::shared_ptr<MpiWork> MpiCommunicator::enqueue_async(std::function<std::vector<MPI_Request>()> launch,
                                                        std::function<void()> finish, std::vector<at::Tensor> keep) {
  auto work = std::make_shared<MpiWork>(std::move(keep), waiters_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    CNX_CHECK(!stop_, "MpiCommunicator: collective issued while the communicator is being destroyed");
    queue_.push_back(Item{nullptr, std::move(launch), std::move(finish), work});
  }
  cv_.notify_all();
  return work;
}

void MpiCommunicator::loop() {
  using Clock = std::chrono::steady_clock;
  auto ns = [](Clock::time_point t) {
    return std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
  };
  struct InFlight {
    Item item;
    std::vector<MPI_Request> requests;
    Clock::time_point start;
  };
  std::deque<InFlight> in_flight;
  int64_t pause_us = 0;  // between two progress rounds while nobody waits
  for (;;) {
    Item item;
    bool have = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // The next item may start: a non-blocking one while fewer than
      // kMaxInFlight are in flight, a blocking one when none is.
      auto startable = [&] {
        if (queue_.empty()) return false;
        return queue_.front().fn ? in_flight.empty() : in_flight.size() < kMaxInFlight;
      };
      if (in_flight.empty()) {
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) {
          return;  // stop_ and drained
        }
      } else if (pause_us > 0 && !startable()) {
        cv_.wait_for(lock, std::chrono::microseconds(pause_us), startable);
      }
      if (startable()) {
        item = std::move(queue_.front());
        queue_.pop_front();
        have = true;
      }
    }
    if (have && item.fn) {
      // Blocking item: nothing is in flight (see startable).
      const auto start = Clock::now();
      busy_since_ns_.store(ns(start));
      std::exception_ptr error;
      try {
        item.fn();
      } catch (...) {
        error = std::current_exception();
      }
      busy_since_ns_.store(0);
      item.work->complete(std::move(error), std::chrono::duration<double>(Clock::now() - start).count());
      continue;
    }
    if (have) {
      InFlight f{std::move(item), {}, Clock::now()};
      try {
        f.requests = f.item.launch();
      } catch (...) {
        f.item.work->complete(std::current_exception(), 0.0);
        continue;
      }
      in_flight.push_back(std::move(f));
    }
    // One progress round: test every request in flight; complete the items
    // whose requests are all done.
    bool progressed = false;
    for (auto it = in_flight.begin(); it != in_flight.end();) {
      bool done = true;
      std::exception_ptr error;
      try {
        for (MPI_Request& req : it->requests) {
          if (req == MPI_REQUEST_NULL) continue;
          int flag = 0;
          CNX_MPI_CHECK(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
          if (!flag) {
            done = false;
            break;
          }
        }
        if (done && it->item.finish) it->item.finish();
      } catch (...) {
        error = std::current_exception();
        done = true;
      }
      if (done) {
        it->item.work->complete(std::move(error), std::chrono::duration<double>(Clock::now() - it->start).count());
        it = in_flight.erase(it);
        progressed = true;
      } else {
        ++it;
      }
    }
    busy_since_ns_.store(in_flight.empty() ? 0 : ns(in_flight.front().start));
    if (waiters_->load() > 0 || have || progressed) {
      // Someone blocks on a result (poll back to back), or something just
      // started or finished (the next step is likely near).
      pause_us = waiters_->load() > 0 ? 0 : kMinPollPauseUs;
    } else {
      // Nobody waits yet (e.g. backward is still running on this rank's
      // cores): poll with growing pauses so this thread does not take a core
      // from the computation while the peers catch up.
      pause_us = std::min<int64_t>(std::max<int64_t>(pause_us * 2, kMinPollPauseUs), kMaxPollPauseUs);
    }
  }
}

WorkPtr MpiCommunicator::allreduce(std::vector<at::Tensor> tensors, ReduceOp op) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    check_cpu_dense(t, cnx::str("allreduce (", reduce_op_name(op), ") of tensor ", i, " of ", tensors.size()), rank_);
    if (mpi_float_type(t.scalar_type()) == MPI_DATATYPE_NULL) {
      throw CommError(cnx::str("MPI allreduce on rank ", rank_, ": tensor ", i, " of ", tensors.size(), " has dtype ",
                               t.scalar_type(), "; the MPI backend reduces only Float (float32) and Double (float64)"));
    }
  }
  const MPI_Comm comm = comm_;
  const int size = size_;
  // Each tensor in chunks of at most kMaxChunk elements (MPI counts are int).
  auto chunks = [tensors](const std::function<void(char*, int, MPI_Datatype)>& each) {
    for (const at::Tensor& t : tensors) {
      const int64_t n = t.numel();
      const MPI_Datatype type = mpi_float_type(t.scalar_type());
      char* base = static_cast<char*>(t.data_ptr());
      const int64_t elem = static_cast<int64_t>(t.element_size());
      for (int64_t off = 0; off < n; off += kMaxChunk) {
        each(base + off * elem, static_cast<int>(std::min(kMaxChunk, n - off)), type);
      }
    }
  };
  auto average = [tensors, op, size] {
    if (op != ReduceOp::kAverage || size <= 1) return;
    for (const at::Tensor& t : tensors) {
      if (t.numel() > 0) t.div_(static_cast<double>(size));
    }
  };
  // The mode is the same on every rank (a blocking and a non-blocking
  // collective never match each other).
  if (wait_mode_ == MpiWaitMode::kBlocking) {
    auto fn = [chunks, average, op, comm] {
      chunks([&](char* p, int count, MPI_Datatype type) {
        CNX_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, p, count, type, mpi_op(op), comm));
      });
      average();
    };
    return enqueue(std::move(fn), tensors);
  }
  auto launch = [chunks, op, comm] {
    std::vector<MPI_Request> requests;
    chunks([&](char* p, int count, MPI_Datatype type) {
      MPI_Request req = MPI_REQUEST_NULL;
      CNX_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, p, count, type, mpi_op(op), comm, &req));
      requests.push_back(req);
    });
    return requests;
  };
  return enqueue_async(std::move(launch), std::move(average), tensors);
}

WorkPtr MpiCommunicator::broadcast(at::Tensor tensor, int root) {
  check_cpu_dense(tensor, "broadcast", rank_);
  if (root < 0 || root >= size_) {
    throw CommError(cnx::str("MPI broadcast on rank ", rank_, ": root ", root,
                             " is not a rank of this communicator (size ", size_, ")"));
  }
  const MPI_Comm comm = comm_;
  auto fn = [tensor, root, comm] {
    const int64_t bytes = static_cast<int64_t>(tensor.nbytes());
    char* base = static_cast<char*>(tensor.data_ptr());
    for (int64_t off = 0; off < bytes; off += kMaxChunk) {
      const int count = static_cast<int>(std::min(kMaxChunk, bytes - off));
      CNX_MPI_CHECK(MPI_Bcast(base + off, count, MPI_BYTE, root, comm));
    }
  };
  return enqueue(std::move(fn), {tensor});
}

std::vector<std::string> MpiCommunicator::allgather(const std::string& mine) {
  if (mine.size() > static_cast<size_t>(INT_MAX / std::max(size_, 1))) {
    throw CommError(cnx::str("MPI allgather on rank ", rank_, ": ", mine.size(),
                             " bytes is too large; allgather is meant for small metadata"));
  }
  std::vector<std::string> result(static_cast<size_t>(size_));
  const MPI_Comm comm = comm_;
  const int size = size_;
  auto fn = [&result, &mine, comm, size] {
    int my_len = static_cast<int>(mine.size());
    std::vector<int> lens(static_cast<size_t>(size), 0);
    CNX_MPI_CHECK(MPI_Allgather(&my_len, 1, MPI_INT, lens.data(), 1, MPI_INT, comm));
    std::vector<int> displs(static_cast<size_t>(size), 0);
    int64_t total = 0;
    for (int r = 0; r < size; ++r) {
      displs[r] = static_cast<int>(total);
      total += lens[r];
    }
    if (total > INT_MAX) {
      throw CommError(
          cnx::str("MPI allgather: ", total, " bytes in total is too large; allgather is meant for small metadata"));
    }
    std::vector<char> all(static_cast<size_t>(std::max<int64_t>(total, 1)));
    CNX_MPI_CHECK(
        MPI_Allgatherv(mine.data(), my_len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, comm));
    for (int r = 0; r < size; ++r) {
      result[r].assign(all.data() + displs[r], static_cast<size_t>(lens[r]));
    }
  };
  enqueue(std::move(fn), {})->wait();
  return result;
}

void MpiCommunicator::barrier() {
  const MPI_Comm comm = comm_;
  enqueue([comm] { CNX_MPI_CHECK(MPI_Barrier(comm)); }, {})->wait();
}

double MpiCommunicator::seconds_in_collective() const {
  const int64_t since = busy_since_ns_.load();
  if (since == 0) return 0.0;
  const int64_t now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  return std::max<int64_t>(0, now - since) * 1e-9;
}

void MpiCommunicator::abort(int code) {
  // Not queued: the communication thread may be the one blocked.
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Abort(comm_, code);
  std::_Exit(code);
}

void MpiCommunicator::run_on_comm_thread(std::function<void(MPI_Comm)> fn) {
  const MPI_Comm comm = comm_;
  enqueue([fn = std::move(fn), comm] { fn(comm); }, {})->wait();
}

}  // namespace cnx::comm
