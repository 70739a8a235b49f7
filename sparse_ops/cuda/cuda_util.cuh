#pragma once
// Shared pieces of the CUDA kernels (cuda/*.cu). Every entry point opens a
// LaunchScope on its input: the tensors' device becomes current for the
// call and launches go to that device's current stream, so tensors on any
// GPU work whichever device the calling thread has current, and the work is
// ordered with the caller's other work on that stream.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>

namespace cnx::sparse_ops::detail {

constexpr int kThreads = 256;
// Reduction blocks: 32 channels (x) by 8 row lanes (y).
constexpr int kRedX = 32;
constexpr int kRedY = 8;

inline unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>((n + kThreads - 1) / kThreads);
}

inline unsigned tiles_for(int64_t c) {
  return static_cast<unsigned>((c + kRedX - 1) / kRedX);
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

class LaunchScope {
 public:
  explicit LaunchScope(const at::Tensor& on)
      : guard_(on.device()), stream_(at::cuda::getCurrentCUDAStream(on.device().index())) {}
  cudaStream_t stream() const { return stream_.stream(); }

 private:
  c10::cuda::CUDAGuard guard_;
  at::cuda::CUDAStream stream_;
};

}  // namespace cnx::sparse_ops::detail
