#pragma once
// NCCL backend: CUDA tensors on one device per rank. Built only with
// CNX_WITH_NCCL (CMake defines CNX_COMM_HAVE_NCCL for this library).
//
// Bootstrap: a Bootstrap (comm/rendezvous.h: a TCP or file store, MPI, or a
// world of one) carries rank 0's ncclUniqueId to every rank; then
// ncclCommInitRank. The bootstrap also serves allgather() and barrier(). The
// device is options.device, or local_rank() modulo the number of visible
// devices.
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
//
// Failure protocol: an asynchronous NCCL error, a CUDA error, or a wait
// longer than options.timeout_s aborts the communicator (ncclCommAbort, once;
// other ranks' pending collectives then fail or time out in turn) and throws
// CommError. Every later collective throws at once. The destructor waits for
// the own stream with the same deadline; an aborted (or then aborted)
// communicator is not synchronised or destroyed again, so shutdown after a
// failure does not hang.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <c10/cuda/CUDAStream.h>

#include <functional>
#include <memory>
#include <optional>

#include "comm/communicator.h"
#include "comm/rendezvous.h"

namespace cnx::comm {

[[noreturn]] void throw_nccl_error(ncclResult_t rc, const char* call, const char* file, int line);
[[noreturn]] void throw_cuda_error(cudaError_t rc, const char* call, const char* file, int line);

struct NcclOptions {
  int device = -1;           // < 0: local_rank() % cudaGetDeviceCount()
  double timeout_s = 600.0;  // per Work::wait() and for the destructor's drain; <= 0: none
};

// The NCCL communicator and whether it was aborted; shared with the Work
// handles so that any of them can abort it.
struct NcclCommState;

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Bootstrap> bootstrap, NcclOptions options);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return boot_->rank(); }
  int size() const override { return boot_->size(); }
  int local_rank() const override { return boot_->local_rank(); }
  int local_size() const override { return boot_->local_size(); }
  std::string backend_name() const override { return "nccl"; }
  at::DeviceType device_type() const override { return at::kCUDA; }
  at::Device device() const override { return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_)); }
  bool supports_dtype(at::ScalarType dtype) const override;

  WorkPtr allreduce(std::vector<at::Tensor> tensors, ReduceOp op) override;
  WorkPtr broadcast(at::Tensor tensor, int root) override;
  std::vector<std::string> allgather(const std::string& mine) override;
  void barrier() override;
  // Aborts the NCCL communicator (peers blocked with this rank fail at their
  // deadline instead of hanging) and ends the process with `code`; under a
  // launcher (mpirun, a Kubernetes job) that ends the attempt.
  [[noreturn]] void abort(int code) override;

 private:
  void check_tensor(const at::Tensor& t, const std::string& what) const;
  // Steps 1-3 of the protocol around `body` (which issues on the own stream).
  WorkPtr launch(std::vector<at::Tensor> tensors, const std::function<void(cudaStream_t)>& body);

  std::unique_ptr<Bootstrap> boot_;
  NcclOptions options_;
  int device_ = 0;
  std::shared_ptr<NcclCommState> state_;
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
