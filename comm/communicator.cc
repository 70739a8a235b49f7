#include "comm/communicator.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>  // at::NoGradGuard (ATen.h no longer brings it in LibTorch 2.x)

namespace cnx::comm {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAverage:
      return "average";
    case ReduceOp::kMax:
      return "max";
  }
  return "unknown";
}

void broadcast_tensors(Communicator& comm, const std::vector<at::Tensor>& tensors, int root) {
  // Parameters are leaves that require grad: write them without recording.
  at::NoGradGuard no_grad;
  std::vector<WorkPtr> works;
  std::vector<std::pair<at::Tensor, at::Tensor>> copy_back;  // (destination, contiguous buffer)
  works.reserve(tensors.size());
  for (const at::Tensor& t : tensors) {
    if (t.is_contiguous()) {
      works.push_back(comm.broadcast(t, root));
    } else {
      at::Tensor buffer = t.contiguous();
      works.push_back(comm.broadcast(buffer, root));
      copy_back.emplace_back(t, buffer);
    }
  }
  for (auto& w : works) {
    w->wait();
  }
  for (auto& [dst, buffer] : copy_back) {
    dst.copy_(buffer);
  }
}

}  // namespace cnx::comm
