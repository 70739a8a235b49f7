#pragma once
// Named tensors, the error of a tensor file, and .pt files: the one home of
// tensor pickling for exported weights (model/weights.h) and trainer
// checkpoints (worker/checkpoint.h).
//
// A .pt file is torch::pickle_save of a c10::Dict<std::string, Tensor> (a zip
// archive starting "PK\3\4"; Python's torch.load returns a dict of tensors),
// or that dict nested one level as {key: {name: tensor}} (the reference's
// fine-tuning checkpoints: torch.load(path)["model"]). Python pickles of
// OrderedDicts (torch.save) are not read.
//
// Errors: every failure (I/O, bytes that are not such a pickle, a value that
// is not a dict of str -> Tensor, a repeated name) throws WeightsError whose
// message names the file (or the given origin) and what did not match.
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace cnx::model {

// Expected failure of a weights or tensor file (bad bytes, wrong names or
// shapes).
class WeightsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// The bytes of a .pt holding `tensors` in the given order, each detached and
// contiguous on its own device (the pickle records the device). With
// outer_key non-empty the file holds {outer_key: {name: tensor}}.
std::vector<char> pickle_tensors(const NamedTensors& tensors, const std::string& outer_key = "");

// The tensors of .pt bytes, in file order; a {"model": {...}} nesting is
// unwrapped. `origin` names the bytes' source in errors.
NamedTensors unpickle_tensors(const std::vector<char>& bytes, const std::string& origin);

// Writes pickle_tensors of CPU copies of `tensors` to `path` via a temporary
// file and a rename (atomic, not fsynced).
void save_pt(const std::string& path, const NamedTensors& tensors, const std::string& pt_key = "");

// Writes `size` bytes to `path` via `path + ".tmp"` and a rename: readers see
// the old file or the whole new one (atomic; not fsynced).
void write_file_replacing(const std::string& path, const char* data, size_t size);

// unpickle_tensors of the file at `path`.
NamedTensors read_pt(const std::string& path);

}  // namespace cnx::model
