#pragma once
// Shared by the NCCL GPU tests (nccl_test.cc) and their rank program
// (nccl_rank_main.cc): a tiny two-layer model on a CUDA device and the
// checks every rank runs.
#include <torch/torch.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace cnx::comm::testing {

// CNX_REQUIRE_GPU=1 (scripts/gpu_check.sh): a missing GPU is a failure, not a skip.
inline bool gpu_required() {
  const char* v = std::getenv("CNX_REQUIRE_GPU");
  return v && std::string(v) == "1";
}

struct TinyNet {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  std::vector<torch::Tensor> params() const { return {fc1->weight, fc1->bias, fc2->weight, fc2->bias}; }
};

// Same weights on every rank and device (seeded on the CPU, then moved).
inline TinyNet make_tiny_net(const torch::Device& device) {
  torch::manual_seed(7);
  TinyNet n;
  n.fc1 = torch::nn::Linear(16, 8);
  n.fc2 = torch::nn::Linear(8, 1);
  n.fc1->to(device);
  n.fc2->to(device);
  return n;
}

// Rank r's batch (deterministic, on the CPU).
inline torch::Tensor rank_batch(int rank) {
  return torch::linspace(-1.0, 1.0, 4 * 16).reshape({4, 16}) * static_cast<double>(rank + 1) +
         0.1 * static_cast<double>(rank);
}

inline torch::Tensor tiny_loss(TinyNet n, const torch::Tensor& x) {  // n shares its modules
  return n.fc2->forward(torch::gelu(n.fc1->forward(x))).pow(2).mean();
}

}  // namespace cnx::comm::testing
