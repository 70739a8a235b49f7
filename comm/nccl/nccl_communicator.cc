#include "comm/nccl/nccl_communicator.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include "common/check.h"

namespace cnx::comm {

void throw_nccl_error(ncclResult_t rc, const char* call, const char* file, int line) {
  throw CommError(cnx::str(file, ":", line, ": ", call, " failed (NCCL ", static_cast<int>(rc),
                           "): ", ncclGetErrorString(rc)));
}

void throw_cuda_error(cudaError_t rc, const char* call, const char* file, int line) {
  throw CommError(cnx::str(file, ":", line, ": ", call, " failed (CUDA ", static_cast<int>(rc),
                           "): ", cudaGetErrorString(rc)));
}

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

// Completion is observed through `end`; `start`/`end` time the collective on
// the communicator's stream.
class NcclWork final : public Work {
 public:
  NcclWork(ncclComm_t comm, int device, std::vector<at::Tensor> keep)
      : comm_(comm), device_(device), keep_(std::move(keep)) {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
    CNX_CUDA_CHECK(cudaEventCreate(&start_));
    CNX_CUDA_CHECK(cudaEventCreate(&end_));
  }
  ~NcclWork() override {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
    cudaEventDestroy(start_);
    cudaEventDestroy(end_);
  }
  cudaEvent_t start() const { return start_; }
  cudaEvent_t end() const { return end_; }

  bool is_completed() override {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
    const cudaError_t rc = cudaEventQuery(end_);
    if (rc == cudaErrorNotReady) {
      return false;
    }
    return true;  // done, or failed (wait() reports it)
  }

  void wait() override {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
    for (;;) {
      const cudaError_t rc = cudaEventQuery(end_);
      if (rc == cudaSuccess) {
        break;
      }
      if (rc != cudaErrorNotReady) {
        throw_cuda_error(rc, "cudaEventQuery(collective end)", __FILE__, __LINE__);
      }
      ncclResult_t async_rc = ncclSuccess;
      CNX_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async_rc));
      if (async_rc != ncclSuccess) {
        throw CommError(cnx::str("NCCL collective failed asynchronously: ",
                                 ncclGetErrorString(async_rc),
                                 " (a peer rank may have died; the communicator is unusable)"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    std::lock_guard<std::mutex> lock(mu_);
    keep_.clear();
  }

  double seconds() override {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
    float ms = 0.0f;
    if (cudaEventElapsedTime(&ms, start_, end_) != cudaSuccess) {
      return 0.0;
    }
    return static_cast<double>(ms) / 1000.0;
  }

 private:
  ncclComm_t comm_;
  int device_;
  std::mutex mu_;
  std::vector<at::Tensor> keep_;
  cudaEvent_t start_ = nullptr;
  cudaEvent_t end_ = nullptr;
};

}  // namespace

NcclCommunicator::NcclCommunicator(std::shared_ptr<MpiRuntime> runtime, int device)
    : mpi_(std::make_unique<MpiCommunicator>(std::move(runtime))) {
  int count = 0;
  CNX_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (count <= 0) {
    throw CommError(cnx::str("NCCL backend on rank ", mpi_->rank(), ": no CUDA device visible"));
  }
  device_ = device >= 0 ? device : mpi_->local_rank() % count;
  if (device_ >= count) {
    throw CommError(cnx::str("NCCL backend on rank ", mpi_->rank(), ": device ", device_,
                             " requested but only ", count, " are visible"));
  }
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (mpi_->rank() == 0) {
    CNX_NCCL_CHECK(ncclGetUniqueId(&id));
  }
  mpi_->run_on_comm_thread([&id](MPI_Comm comm) {
    CNX_MPI_CHECK(MPI_Bcast(&id, static_cast<int>(sizeof(id)), MPI_BYTE, 0, comm));
  });
  CNX_NCCL_CHECK(ncclCommInitRank(&comm_, mpi_->size(), id, mpi_->rank()));
  stream_.emplace(c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device_)));
}

NcclCommunicator::~NcclCommunicator() {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  if (stream_) {
    cudaStreamSynchronize(stream_->stream());
  }
  if (comm_ != nullptr) {
    ncclCommDestroy(comm_);
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
    throw CommError(cnx::str("NCCL ", what, " on rank ", rank(), ": tensor of shape ", t.sizes(),
                             " must be dense and contiguous"));
  }
  if (!t.is_cuda() || t.device().index() != device_) {
    throw CommError(cnx::str("NCCL ", what, " on rank ", rank(), ": tensor is on ", t.device(),
                             " but this communicator uses cuda:", device_));
  }
}

WorkPtr NcclCommunicator::launch(std::vector<at::Tensor> tensors,
                                 const std::function<void(cudaStream_t)>& body) {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  const cudaStream_t own = stream_->stream();
  const cudaStream_t producer =
      c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)).stream();
  auto work = std::make_shared<NcclWork>(comm_, device_, tensors);
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
    check_tensor(tensors[i], cnx::str("allreduce (", reduce_op_name(op), ") of tensor ", i, " of ",
                                      tensors.size()));
    if (!nccl_type(tensors[i].scalar_type(), &types[i])) {
      throw CommError(cnx::str("NCCL allreduce on rank ", rank(), ": tensor ", i, " has dtype ",
                               tensors[i].scalar_type(),
                               "; the NCCL backend reduces Float, Double and Half"));
    }
  }
  const int world = size();
  return launch(tensors, [&](cudaStream_t own) {
    CNX_NCCL_CHECK(ncclGroupStart());
    for (size_t i = 0; i < tensors.size(); ++i) {
      at::Tensor& t = tensors[i];
      if (t.numel() == 0) continue;
      CNX_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                   types[i], nccl_op(op), comm_, own));
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
    CNX_NCCL_CHECK(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.nbytes(), ncclUint8,
                                 root, comm_, own));
  });
}

std::vector<std::string> NcclCommunicator::allgather(const std::string& mine) {
  return mpi_->allgather(mine);
}

void NcclCommunicator::barrier() {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  CNX_CUDA_CHECK(cudaStreamSynchronize(stream_->stream()));
  mpi_->barrier();
}

}  // namespace cnx::comm
