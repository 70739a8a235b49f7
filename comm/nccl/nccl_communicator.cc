#include "comm/nccl/nccl_communicator.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>

#include "common/check.h"

namespace cnx::comm {

void throw_nccl_error(ncclResult_t rc, const char* call, const char* file, int line) {
  throw CommError(
      cnx::str(file, ":", line, ": ", call, " failed (NCCL ", static_cast<int>(rc), "): ", ncclGetErrorString(rc)));
}

void throw_cuda_error(cudaError_t rc, const char* call, const char* file, int line) {
  throw CommError(
      cnx::str(file, ":", line, ": ", call, " failed (CUDA ", static_cast<int>(rc), "): ", cudaGetErrorString(rc)));
}

struct NcclCommState {
  ncclComm_t comm = nullptr;
  int device = 0;
  int rank = 0;
  std::mutex mu;
  bool aborted = false;
  std::string abort_reason;

  // Aborts the communicator once (later calls only return the first reason).
  void abort(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    if (aborted) return;
    aborted = true;
    abort_reason = why;
    if (comm != nullptr) ncclCommAbort(comm);
  }
  std::string aborted_reason() {
    std::lock_guard<std::mutex> lock(mu);
    return aborted ? abort_reason : std::string();
  }
};

namespace {

bool nccl_type(at::ScalarType t, ncclDataType_t* out) {
  switch (t) {
    case at::kFloat:
      *out = ncclFloat32;
      return true;
    case at::kDouble:
      *out = ncclFloat64;
      return true;
    case at::kHalf:
      *out = ncclFloat16;
      return true;
    case at::kBFloat16:
      *out = ncclBfloat16;
      return true;
    default:
      return false;
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAverage:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
  }
  return ncclSum;
}

using Clock = std::chrono::steady_clock;

// Polls `done` (cudaSuccess: finished, cudaErrorNotReady: not yet) until it
// finished, NCCL reports an asynchronous error, or `timeout_s` passed. On
// error or timeout aborts the communicator and throws CommError naming `what`.
void wait_or_abort(NcclCommState& state, double timeout_s, const char* what, const std::function<cudaError_t()>& done) {
  const auto start = Clock::now();
  auto pause = std::chrono::microseconds(5);
  for (;;) {
    const cudaError_t rc = done();
    if (rc == cudaSuccess) return;
    if (rc != cudaErrorNotReady) {
      const std::string why = cnx::str("NCCL ", what, " on rank ", state.rank, ": CUDA error ", cudaGetErrorString(rc));
      state.abort(why);
      throw CommError(why + " (the communicator was aborted)");
    }
    ncclResult_t async_rc = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(state.comm, &async_rc);
    if (q != ncclSuccess || async_rc != ncclSuccess) {
      const std::string why = cnx::str("NCCL ", what, " on rank ", state.rank,
                                       " failed asynchronously: ", ncclGetErrorString(q != ncclSuccess ? q : async_rc),
                                       " (a peer rank may have died)");
      state.abort(why);
      throw CommError(why + "; the communicator was aborted");
    }
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (timeout_s > 0 && waited > timeout_s) {
      const std::string why =
          cnx::str("NCCL ", what, " on rank ", state.rank, " did not finish within ", timeout_s,
                   " s (distributed.peer_timeout_s): a peer rank is stuck, died, or never issued it");
      state.abort(why);
      throw CommError(why + "; the communicator was aborted");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

// Completion is observed through `end`; `start`/`end` time the collective on
// the communicator's stream.
class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<NcclCommState> state, double timeout_s, std::vector<at::Tensor> keep)
      : state_(std::move(state)), timeout_s_(timeout_s), keep_(std::move(keep)) {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(state_->device));
    CNX_CUDA_CHECK(cudaEventCreate(&start_));
    CNX_CUDA_CHECK(cudaEventCreate(&end_));
  }
  ~NcclWork() override {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(state_->device));
    cudaEventDestroy(start_);
    cudaEventDestroy(end_);
  }
  cudaEvent_t start() const { return start_; }
  cudaEvent_t end() const { return end_; }

  bool is_completed() override {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(state_->device));
    if (!state_->aborted_reason().empty()) return true;  // wait() reports it
    return cudaEventQuery(end_) != cudaErrorNotReady;    // done, or failed
  }

  void wait() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_) return;
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(state_->device));
    const std::string aborted = state_->aborted_reason();
    if (!aborted.empty()) {
      throw CommError(cnx::str("NCCL collective on rank ", state_->rank,
                               " cannot complete: the communicator was aborted (", aborted, ")"));
    }
    wait_or_abort(*state_, timeout_s_, "collective", [this] { return cudaEventQuery(end_); });
    done_ = true;
    keep_.clear();
  }

  double seconds() override {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(state_->device));
    float ms = 0.0f;
    if (cudaEventElapsedTime(&ms, start_, end_) != cudaSuccess) {
      return 0.0;
    }
    return static_cast<double>(ms) / 1000.0;
  }

 private:
  std::shared_ptr<NcclCommState> state_;
  double timeout_s_;
  std::mutex mu_;
  bool done_ = false;
  std::vector<at::Tensor> keep_;
  cudaEvent_t start_ = nullptr;
  cudaEvent_t end_ = nullptr;
};

}  // namespace

NcclCommunicator::NcclCommunicator(std::unique_ptr<Bootstrap> bootstrap, NcclOptions options)
    : boot_(std::move(bootstrap)), options_(options), state_(std::make_shared<NcclCommState>()) {
  CNX_CHECK(boot_ != nullptr, "NcclCommunicator needs a Bootstrap (comm/rendezvous.h)");
  int count = 0;
  CNX_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (count <= 0) {
    throw CommError(cnx::str("NCCL backend on rank ", rank(), ": no CUDA device visible"));
  }
  device_ = options_.device >= 0 ? options_.device : local_rank() % count;
  if (device_ >= count) {
    throw CommError(
        cnx::str("NCCL backend on rank ", rank(), ": device ", device_, " requested but only ", count, " are visible"));
  }
  state_->device = device_;
  state_->rank = rank();
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (rank() == 0) {
    CNX_NCCL_CHECK(ncclGetUniqueId(&id));
  }
  const std::string blob = boot_->broadcast(std::string(reinterpret_cast<const char*>(&id), sizeof(id)), /*root=*/0);
  if (blob.size() != sizeof(id)) {
    throw CommError(cnx::str("NCCL backend on rank ", rank(), ": the unique id from rank 0 over ", boot_->describe(),
                             " has ", blob.size(), " bytes, expected ", sizeof(id),
                             " (ranks built against different NCCL versions?)"));
  }
  std::memcpy(&id, blob.data(), sizeof(id));
  CNX_NCCL_CHECK(ncclCommInitRank(&state_->comm, size(), id, rank()));
  stream_.emplace(c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device_)));
}

NcclCommunicator::~NcclCommunicator() {
  if (state_->comm == nullptr) return;
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  if (state_->aborted_reason().empty() && stream_) {
    try {
      const cudaStream_t own = stream_->stream();
      wait_or_abort(*state_, options_.timeout_s, "shutdown drain", [own] { return cudaStreamQuery(own); });
    } catch (...) {
      // Aborted by wait_or_abort: nothing left to destroy.
    }
  }
  if (state_->aborted_reason().empty()) {
    ncclCommDestroy(state_->comm);
  }
}

bool NcclCommunicator::supports_dtype(at::ScalarType dtype) const {
  ncclDataType_t unused;
  return nccl_type(dtype, &unused);
}

void NcclCommunicator::check_tensor(const at::Tensor& t, const std::string& what) const {
  if (!t.defined()) {
    throw CommError(cnx::str("NCCL ", what, " on rank ", rank(), ": tensor is undefined"));
  }
  if (t.layout() != at::kStrided || !t.is_contiguous()) {
    throw CommError(
        cnx::str("NCCL ", what, " on rank ", rank(), ": tensor of shape ", t.sizes(), " must be dense and contiguous"));
  }
  if (!t.is_cuda() || t.device().index() != device_) {
    throw CommError(cnx::str("NCCL ", what, " on rank ", rank(), ": tensor is on ", t.device(),
                             " but this communicator uses cuda:", device_));
  }
}

WorkPtr NcclCommunicator::launch(std::vector<at::Tensor> tensors, const std::function<void(cudaStream_t)>& body) {
  const std::string aborted = state_->aborted_reason();
  if (!aborted.empty()) {
    throw CommError(cnx::str("NCCL backend on rank ", rank(), ": the communicator was aborted earlier (", aborted,
                             "); no further collectives"));
  }
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  const cudaStream_t own = stream_->stream();
  const cudaStream_t producer = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)).stream();
  auto work = std::make_shared<NcclWork>(state_, options_.timeout_s, tensors);
  if (producer != own) {
    cudaEvent_t ready = nullptr;
    CNX_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    CNX_CUDA_CHECK(cudaEventRecord(ready, producer));
    CNX_CUDA_CHECK(cudaStreamWaitEvent(own, ready, 0));
    CNX_CUDA_CHECK(cudaEventDestroy(ready));  // destruction is deferred until the event completes
  }
  CNX_CUDA_CHECK(cudaEventRecord(work->start(), own));
  body(own);
  CNX_CUDA_CHECK(cudaEventRecord(work->end(), own));
  for (const at::Tensor& t : tensors) {
    if (t.numel() > 0) {
      c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), *stream_);
    }
  }
  return work;
}

WorkPtr NcclCommunicator::allreduce(std::vector<at::Tensor> tensors, ReduceOp op) {
  std::vector<ncclDataType_t> types(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    check_tensor(tensors[i], cnx::str("allreduce (", reduce_op_name(op), ") of tensor ", i, " of ", tensors.size()));
    if (!nccl_type(tensors[i].scalar_type(), &types[i])) {
      throw CommError(cnx::str("NCCL allreduce on rank ", rank(), ": tensor ", i, " has dtype ",
                               tensors[i].scalar_type(),
                               "; the NCCL backend reduces Float, Double, Half and BFloat16"));
    }
  }
  const int world = size();
  return launch(tensors, [&](cudaStream_t own) {
    CNX_NCCL_CHECK(ncclGroupStart());
    for (size_t i = 0; i < tensors.size(); ++i) {
      at::Tensor& t = tensors[i];
      if (t.numel() == 0) continue;
      CNX_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), types[i], nccl_op(op),
                                   state_->comm, own));
    }
    CNX_NCCL_CHECK(ncclGroupEnd());
    if (op == ReduceOp::kAverage && world > 1) {
      c10::cuda::CUDAStreamGuard stream_guard(*stream_);
      for (at::Tensor& t : tensors) {
        if (t.numel() > 0) t.div_(static_cast<double>(world));
      }
    }
  });
}

WorkPtr NcclCommunicator::broadcast(at::Tensor tensor, int root) {
  check_tensor(tensor, "broadcast");
  if (root < 0 || root >= size()) {
    throw CommError(cnx::str("NCCL broadcast on rank ", rank(), ": root ", root,
                             " is not a rank of this communicator (size ", size(), ")"));
  }
  return launch({tensor}, [&](cudaStream_t own) {
    if (tensor.numel() == 0) return;
    CNX_NCCL_CHECK(
        ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.nbytes(), ncclUint8, root, state_->comm, own));
  });
}

std::vector<std::string> NcclCommunicator::allgather(const std::string& mine) {
  return boot_->allgather(mine);
}

void NcclCommunicator::barrier() {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  const cudaStream_t own = stream_->stream();
  wait_or_abort(*state_, options_.timeout_s, "barrier", [own] { return cudaStreamQuery(own); });
  boot_->barrier();
}

void NcclCommunicator::abort(int code) {
  if (state_) state_->abort("abort(" + std::to_string(code) + ") requested on rank " + std::to_string(rank()));
  std::_Exit(code);
}

}  // namespace cnx::comm
