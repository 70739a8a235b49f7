#pragma once
// MPI backend: CPU tensors, float32/float64 reductions.
//
// Threading protocol:
// 1. The constructor (calling thread) duplicates the base communicator, sets
//    MPI_ERRORS_RETURN on the duplicate, finds rank/size and the node-local
//    rank (MPI_Comm_split_type SHARED), then starts the communication thread.
// 2. Every collective call validates its input on the calling thread (so bad
//    input throws CommError there, before anything is issued) and appends one
//    work item to a FIFO queue. It returns a Work handle at once.
// 3. The communication thread pops items in FIFO order and is the only thread
//    that issues MPI calls on the duplicated communicator. Since every rank
//    issues the same collectives in the same order, the queues match.
// 4. A failing item stores its error in its Work (rethrown by wait()); the
//    thread goes on with the next item.
// 5. The destructor drains the queue (waits for every issued item), stops
//    and joins the thread, then frees the communicators unless MPI was
//    already finalised.
// allgather() and barrier() are items on the same queue, waited upon by the
// caller, so they also order after every collective issued before them.
// In kPolled mode an allreduce item is non-blocking: the thread issues its
// MPI_Iallreduce calls and moves on to the next item, so up to
// kMaxInFlight all-reduces (GradSync's buckets) progress together, each
// MPI_Test driving all of them; they are issued in FIFO order on every rank,
// which is all MPI needs to match them. Any other item waits until every
// all-reduce in flight has completed, then runs alone.
//
// Waiting (MpiWaitMode). A blocking MPI_Allreduce busy-polls its core until
// the slowest rank arrives; with overlap that core is the one backward runs
// on. kPolled: MPI_Iallreduce driven by MPI_Test, back to back while a
// caller blocks in Work::wait(), with pauses growing to 2 ms while nobody
// waits (the computation keeps the core). kBlocking: the plain call, whose
// tuned algorithms are faster when the caller waits anyway (sync after
// backward). Every rank must use the same mode (a blocking and a
// non-blocking collective never match): the factory picks kPolled when
// gradients are all-reduced during backward (CommOptions::overlap).
#include <mpi.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "comm/communicator.h"
#include "comm/mpi/mpi_runtime.h"

namespace cnx::comm {

class MpiWork;

enum class MpiWaitMode { kPolled, kBlocking };

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(std::shared_ptr<MpiRuntime> runtime, MPI_Comm base = MPI_COMM_WORLD,
                           MpiWaitMode wait = MpiWaitMode::kPolled);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string backend_name() const override { return "mpi"; }
  at::DeviceType device_type() const override { return at::kCPU; }
  at::Device device() const override { return at::Device(at::kCPU); }
  bool supports_dtype(at::ScalarType dtype) const override { return dtype == at::kFloat || dtype == at::kDouble; }

  WorkPtr allreduce(std::vector<at::Tensor> tensors, ReduceOp op) override;
  WorkPtr broadcast(at::Tensor tensor, int root) override;
  std::vector<std::string> allgather(const std::string& mine) override;
  void barrier() override;
  double seconds_in_collective() const override;
  [[noreturn]] void abort(int code) override;

  // Runs `fn(comm)` on the communication thread, in queue order, with the
  // duplicated communicator (e.g. the NCCL unique-id broadcast). Blocking;
  // rethrows what fn throws.
  void run_on_comm_thread(std::function<void(MPI_Comm)> fn);

 private:
  struct Item {
    std::function<void()> fn;  // blocking form: runs to completion
    // Non-blocking form (fn empty): `launch` issues the requests, `finish`
    // runs once they are all complete (e.g. the division of an average).
    std::function<std::vector<MPI_Request>()> launch;
    std::function<void()> finish;
    std::shared_ptr<MpiWork> work;
  };
  std::shared_ptr<MpiWork> enqueue(std::function<void()> fn, std::vector<at::Tensor> keep);
  std::shared_ptr<MpiWork> enqueue_async(std::function<std::vector<MPI_Request>()> launch, std::function<void()> finish,
                                         std::vector<at::Tensor> keep);
  void loop();  // communication thread

  std::shared_ptr<MpiRuntime> runtime_;
  MpiWaitMode wait_mode_;
  // Callers blocked in Work::wait() right now (shared with the work handles).
  std::shared_ptr<std::atomic<int>> waiters_ = std::make_shared<std::atomic<int>>(0);
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;

  // steady_clock nanoseconds at which the running item started; 0 = idle.
  std::atomic<int64_t> busy_since_ns_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace cnx::comm
