#pragma once
// The collectives the trainer needs, behind one interface (after PyTorch
// c10d's Backend/Work and Horovod's operation manager).
//
// Backends: comm/mpi/ (CPU tensors, one communication thread owns all MPI
// calls) and comm/nccl/ (CUDA tensors, own stream; only built with
// CNX_WITH_NCCL). make_communicator() in comm/factory.cc is the only place
// that knows which backends exist.
//
// Ordering contract (all backends): collectives are matched across ranks by
// the order in which they are *issued*. Every rank must issue the same
// collectives, on the same shapes and dtypes, in the same order. Issue from
// one thread at a time (a Communicator is not meant to be shared between
// threads that issue concurrently; the backends serialise internally, but the
// cross-rank order would then be a race).
//
// Averaging: allreduce with ReduceOp::kAverage sums across ranks then divides
// every element by size() on each rank. All ranks receive the same sum from
// the backend, and divide it identically, so results are bit-identical across
// ranks.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/error.h"

namespace cnx::comm {

enum class ReduceOp { kSum, kAverage, kMax };
const char* reduce_op_name(ReduceOp op);

// Handle of one asynchronous collective. Thread-safe.
class Work {
 public:
  virtual ~Work() = default;
  // True once the collective has finished, successfully or not. Never blocks.
  virtual bool is_completed() = 0;
  // Blocks until finished; then the results are final and visible to the
  // caller (host memory, or for CUDA tensors every stream). Rethrows the
  // error (CommError) if the collective failed; may be called repeatedly.
  virtual void wait() = 0;
  // Seconds the backend spent executing this collective (from the moment it
  // started on the communication thread/stream to its end). Valid after
  // wait() returned; includes time spent waiting for slower peer ranks.
  virtual double seconds() = 0;
};

using WorkPtr = std::shared_ptr<Work>;

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Rank among the processes on this host, and their number.
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;
  // "mpi" or "nccl".
  virtual std::string backend_name() const = 0;
  // The device kind whose tensors this backend reduces (kCPU or kCUDA).
  virtual at::DeviceType device_type() const = 0;
  // The one device whose tensors this communicator reduces (cpu, or cuda:i).
  virtual at::Device device() const = 0;
  // Whether allreduce accepts tensors of this dtype.
  virtual bool supports_dtype(at::ScalarType dtype) const = 0;

  // In-place all-reduce of every tensor in `tensors` (each one its own
  // reduction; they may differ in size and dtype). Tensors must be dense,
  // contiguous, on device_type(), and of a dtype the backend supports
  // (MPI: float32/float64); violations throw CommError before anything is
  // issued. The Work keeps the tensors alive; the caller must not read or
  // write them until wait() returned. Empty tensors are allowed.
  virtual WorkPtr allreduce(std::vector<at::Tensor> tensors, ReduceOp op) = 0;

  // In-place broadcast of `tensor` (any dtype, contiguous) from `root`.
  virtual WorkPtr broadcast(at::Tensor tensor, int root) = 0;

  // Gathers one small byte string from every rank; result[r] is rank r's.
  // Blocking. Meant for metadata (hostnames, shapes, checksums), not tensors.
  virtual std::vector<std::string> allgather(const std::string& mine) = 0;

  // Blocks until every rank reached the barrier and all previously issued
  // collectives of this rank have completed.
  virtual void barrier() = 0;

  // Seconds the collective this rank is executing right now has been running
  // (0 when none runs). Callable from any thread; a liveness watchdog reads
  // it to notice a peer that never joins. Backends that cannot tell return 0.
  virtual double seconds_in_collective() const { return 0.0; }
  // Ends every process of the job with exit status `code` (the launcher
  // tears the other ranks down): for an error on one rank that would
  // otherwise leave its peers waiting in a collective. Callable from any
  // thread, outside the ordering contract; does not return.
  [[noreturn]] virtual void abort(int code) = 0;

  // Convenience wrappers.
  WorkPtr allreduce_average(std::vector<at::Tensor> tensors) {
    return allreduce(std::move(tensors), ReduceOp::kAverage);
  }
  WorkPtr allreduce_average(at::Tensor flat) {
    return allreduce(std::vector<at::Tensor>{std::move(flat)}, ReduceOp::kAverage);
  }
};

struct CommOptions {
  // "auto": nccl when the model's tensors are on CUDA (device_type) and
  // nccl is built, mpi for CPU tensors. See resolve_backend().
  std::string backend = "auto";
  // CUDA device for nccl; -1 = local_rank() modulo the visible devices.
  int device = -1;
  // Gradients are all-reduced during backward (distributed.overlap): the MPI
  // backend then waits by polling instead of spinning in blocking calls
  // (MpiWaitMode, mpi_communicator.h). Must be equal on every rank.
  bool overlap = true;
  // Where the model's tensors live (kCPU or kCUDA).
  at::DeviceType device_type = at::kCPU;
  // NCCL: Work::wait() gives up after this many seconds, aborts the
  // communicator and throws CommError (a peer that died or hangs). <= 0:
  // wait forever.
  double timeout_s = 600.0;
};

// The backend `requested` ("auto", "mpi", "nccl") resolves to for tensors on
// `tensors`, given the backends `built` into this binary. Throws CommError
// naming the backend and the fix when none fits: unknown name, not built,
// or a backend that cannot reduce tensors on that device (mpi: CPU only,
// nccl: CUDA only).
std::string resolve_backend(const std::string& requested, at::DeviceType tensors,
                            const std::vector<std::string>& built);

// Creates the backend that resolve_backend() picks for `options`. MPI:
// the communicator initialises MPI (MPI_Init_thread with
// MPI_THREAD_MULTIPLE) unless the program already did, and finalises it
// when the last communicator is destroyed only if it was the one that
// initialised it (see comm/mpi/mpi_runtime.h). NCCL: the unique id travels
// over the bootstrap make_bootstrap() builds from the environment. Throws
// CommError naming the backend and why it is unavailable.
std::unique_ptr<Communicator> make_communicator(const CommOptions& options);

// True when an MPI launcher (mpirun, srun, a PMIx server) started this
// process, i.e. it may have peers. Programs that also run stand-alone
// create a communicator only then.
bool launched_by_mpi();

// The backends compiled into this build, e.g. {"mpi"} or {"mpi", "nccl"}.
std::vector<std::string> available_backends();

// Broadcasts every tensor from `root`, in order, and waits (e.g. the initial
// parameters from rank 0 so that all ranks start identical).
void broadcast_tensors(Communicator& comm, const std::vector<at::Tensor>& tensors, int root = 0);

}  // namespace cnx::comm
