#pragma once
// NCCL backend: CUDA tensors on one device per rank. Built only with
// CNX_WITH_NCCL (CMake defines CNX_COMM_HAVE_NCCL for this library).
//
// Bootstrap: an internal MpiCommunicator (which also serves allgather() and
// barrier()) carries rank 0's ncclUniqueId to every rank with MPI_Bcast; then
// ncclCommInitRank. The device is options.device, or local_rank() modulo the
// number of visible devices.
//
// Stream protocol for every collective issued from thread T:
// 1. an event recorded on T's current stream of the device marks the inputs
//    ready; the communicator's own stream waits on it;
// 2. the NCCL call(s) (and, for kAverage, the division) run on the own stream,
//    bracketed by timing events;
// 3. the caching allocator is told the tensors are used on the own stream, so
//    their memory is not reused before the collective ends even if the
//    caller drops them;
// 4. Work::wait() blocks the host until the end event completed, polling
//    ncclCommGetAsyncError so that a failed peer gives an error instead of a
//    hang; afterwards the results are visible to every stream.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <c10/cuda/CUDAStream.h>

#include <functional>
#include <memory>
#include <optional>

#include "comm/communicator.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_runtime.h"

namespace cnx::comm {

[[noreturn]] void throw_nccl_error(ncclResult_t rc, const char* call, const char* file, int line);
[[noreturn]] void throw_cuda_error(cudaError_t rc, const char* call, const char* file, int line);

class NcclCommunicator final : public Communicator {
 public:
  // device < 0: local_rank() % cudaGetDeviceCount().
  NcclCommunicator(std::shared_ptr<MpiRuntime> runtime, int device);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  int local_rank() const override { return mpi_->local_rank(); }
  int local_size() const override { return mpi_->local_size(); }
  std::string backend_name() const override { return "nccl"; }
  at::DeviceType device_type() const override { return at::kCUDA; }
  bool supports_dtype(at::ScalarType dtype) const override;

  WorkPtr allreduce(std::vector<at::Tensor> tensors, ReduceOp op) override;
  WorkPtr broadcast(at::Tensor tensor, int root) override;
  std::vector<std::string> allgather(const std::string& mine) override;
  void barrier() override;

  int device() const { return device_; }

 private:
  void check_tensor(const at::Tensor& t, const std::string& what) const;
  // Steps 1-3 of the protocol around `body` (which issues on the own stream).
  WorkPtr launch(std::vector<at::Tensor> tensors, const std::function<void(cudaStream_t)>& body);

  std::unique_ptr<MpiCommunicator> mpi_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  std::optional<c10::cuda::CUDAStream> stream_;
};

}  // namespace cnx::comm

#define CNX_NCCL_CHECK(call)                                                  \
  do {                                                                        \
    ncclResult_t cnx_nccl_rc_ = (call);                                       \
    if (cnx_nccl_rc_ != ncclSuccess) {                                        \
      ::cnx::comm::throw_nccl_error(cnx_nccl_rc_, #call, __FILE__, __LINE__); \
    }                                                                         \
  } while (0)

#define CNX_CUDA_CHECK(call)                                                  \
  do {                                                                        \
    cudaError_t cnx_cuda_rc_ = (call);                                        \
    if (cnx_cuda_rc_ != cudaSuccess) {                                        \
      ::cnx::comm::throw_cuda_error(cnx_cuda_rc_, #call, __FILE__, __LINE__); \
    }                                                                         \
  } while (0)
