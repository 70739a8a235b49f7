// Fuzz target: the safetensors reader (model/safetensors.h), from memory and
// from a file.
//
// Contract: WeightsError or a valid file. Valid means: both entry points
// (parse_safetensors on the bytes, read_safetensors on the same bytes in a
// file) agree on accept/reject; every tensor is CPU, contiguous, of a
// readable dtype, its bytes inside the data block; and the writer
// round-trips the result bit-exactly (serialize -> parse gives the same
// names, dtypes, shapes, bytes and metadata).
#include <ATen/ATen.h>

#include <cstring>

#include "fuzz/fuzz_util.h"
#include "model/safetensors.h"

namespace {

using cnx::model::SafetensorsData;
using cnx::model::WeightsError;

bool same_tensors(const SafetensorsData& a, const SafetensorsData& b, std::string* why) {
  if (a.metadata != b.metadata) {
    *why = "metadata differs";
    return false;
  }
  if (a.tensors.size() != b.tensors.size()) {
    *why = "tensor count differs";
    return false;
  }
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& [na, ta] = a.tensors[i];
    const auto& [nb, tb] = b.tensors[i];
    if (na != nb || ta.scalar_type() != tb.scalar_type() || ta.sizes() != tb.sizes() || ta.nbytes() != tb.nbytes() ||
        (ta.nbytes() > 0 && std::memcmp(ta.data_ptr(), tb.data_ptr(), ta.nbytes()) != 0)) {
      *why = "tensor '" + na + "' differs";
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = cnx::fuzz::scratch_dir() + "/input.safetensors";
  SafetensorsData mem;
  std::string mem_error;
  try {
    mem = cnx::model::parse_safetensors(data, size, "fuzz");
  } catch (const WeightsError& e) {
    mem_error = e.what();
    FUZZ_REQUIRE(!mem_error.empty(), "empty error message");
  }
  cnx::fuzz::write_file(path, data, size);
  SafetensorsData file;
  std::string file_error;
  try {
    file = cnx::model::read_safetensors(path);
  } catch (const WeightsError& e) {
    file_error = e.what();
  }
  FUZZ_REQUIRE(mem_error.empty() == file_error.empty(),
               "memory and file readers disagree: memory '" + mem_error + "', file '" + file_error + "'");
  if (!mem_error.empty()) return 0;

  std::string why;
  FUZZ_REQUIRE(same_tensors(mem, file, &why), "memory and file readers disagree: " + why);
  uint64_t total = 0;
  for (const auto& [name, t] : mem.tensors) {
    FUZZ_REQUIRE(t.device().is_cpu() && t.is_contiguous(), "tensor '" + name + "' is not contiguous CPU");
    total += t.nbytes();
  }
  FUZZ_REQUIRE(total <= size, "tensors hold more bytes than the file");

  std::string again;
  try {
    again = cnx::model::serialize_safetensors(mem.tensors, mem.metadata);
  } catch (const std::exception& e) {
    FUZZ_REQUIRE(false, std::string("the writer refuses what the reader accepted: ") + e.what());
  }
  SafetensorsData round;
  try {
    round = cnx::model::parse_safetensors(again.data(), again.size(), "round trip");
  } catch (const WeightsError& e) {
    FUZZ_REQUIRE(false, std::string("the reader refuses what the writer wrote: ") + e.what());
  }
  FUZZ_REQUIRE(same_tensors(mem, round, &why), "round trip changed the file: " + why);
  return 0;
}
