// Fuzz target: the .pt reader (model/tensor_file.h: unpickle_tensors), the
// zip + pickle format of torch::pickle_save that model weights and trainer
// checkpoints use. The zip and pickle parsers are LibTorch's (built with
// gcc, not instrumented): libFuzzer's coverage comes from our code only,
// ASan still sees every heap block LibTorch allocates.
//
// Contract: WeightsError or a list of uniquely named tensors, each a view
// that lies inside its storage (so reading it cannot leave the heap block),
// that pickle_tensors -> unpickle_tensors reproduces bit-exactly.
#include <ATen/ATen.h>

#include <cstring>
#include <set>

#include "fuzz/fuzz_util.h"
#include "model/tensor_file.h"

namespace {

using cnx::model::NamedTensors;
using cnx::model::WeightsError;

// The highest element the view can reach, + 1 (0 for an empty tensor).
int64_t view_extent(const at::Tensor& t) {
  if (t.numel() == 0) return 0;
  int64_t last = t.storage_offset();
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return last + 1;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<char> bytes(reinterpret_cast<const char*>(data), reinterpret_cast<const char*>(data) + size);
  NamedTensors tensors;
  try {
    tensors = cnx::model::unpickle_tensors(bytes, "fuzz.pt");
  } catch (const WeightsError& e) {
    FUZZ_REQUIRE(std::strlen(e.what()) > 0, "empty error message");
    return 0;
  }
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    FUZZ_REQUIRE(names.insert(name).second, "name '" + name + "' repeated");
    FUZZ_REQUIRE(t.defined() && t.device().is_cpu(), "tensor '" + name + "' is undefined or not on the CPU");
    for (int64_t d = 0; d < t.dim(); ++d)
      FUZZ_REQUIRE(t.size(d) >= 0 && t.stride(d) >= 0, "tensor '" + name + "' has a negative size or stride");
    FUZZ_REQUIRE(t.storage_offset() >= 0, "tensor '" + name + "' has a negative storage offset");
    const int64_t storage_elems = static_cast<int64_t>(t.storage().nbytes() / t.element_size());
    FUZZ_REQUIRE(view_extent(t) <= storage_elems, "tensor '" + name + "' reaches outside its storage");
  }
  const std::vector<char> again = cnx::model::pickle_tensors(tensors);
  NamedTensors round;
  try {
    round = cnx::model::unpickle_tensors(again, "round trip");
  } catch (const WeightsError& e) {
    FUZZ_REQUIRE(false, std::string("the reader refuses what the writer wrote: ") + e.what());
  }
  FUZZ_REQUIRE(round.size() == tensors.size(), "round trip changed the tensor count");
  for (size_t i = 0; i < round.size(); ++i) {
    const at::Tensor a = tensors[i].second.contiguous(), b = round[i].second.contiguous();
    FUZZ_REQUIRE(round[i].first == tensors[i].first && a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() &&
                     (a.nbytes() == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0),
                 "round trip changed tensor '" + tensors[i].first + "'");
  }
  return 0;
}
