#pragma once
// safetensors reader and writer (https://github.com/huggingface/safetensors):
//   8-byte little-endian header length N | N bytes of JSON header | data.
// Header: {"__metadata__": {str: str}?, name: {"dtype": "F32", "shape": [..],
// "data_offsets": [begin, end]}, ...}, offsets relative to the data block.
//
// The reader treats files as untrusted input (they come from strangers): it
// validates everything before touching tensor bytes and never reads outside
// the file. Rules, as in the reference Rust implementation: header length
// <= 100 MB and inside the file; header is one JSON object starting with '{';
// no duplicate keys; entries have exactly dtype/shape/data_offsets; sizes
// match shape x dtype without overflow; offsets, sorted, tile the data block
// exactly (no overlap, no gap, nothing after the last tensor). Any violation
// throws WeightsError naming the source and the offending tensor.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "model/tensor_file.h"

namespace cnx::model {

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // as in the file: "F32", "BF16", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data block
  uint64_t end = 0;
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // sorted by data offset (file order)
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + header length
};

struct SafetensorsData {
  NamedTensors tensors;  // file order; CPU, contiguous, dtype as stored
  std::map<std::string, std::string> metadata;

  // The tensor called name; throws WeightsError when absent.
  const at::Tensor& at(const std::string& name) const;
};

// Readable dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
const std::vector<std::string>& safetensors_dtypes();

// Validates the header of a file of file_size bytes whose first
// min(file_size, 8 + N) bytes are `prefix`. `source` names the file in errors.
SafetensorsHeader parse_safetensors_header(const std::string& prefix, uint64_t file_size, const std::string& source);

// Parses a whole file held in memory.
SafetensorsData parse_safetensors(const void* bytes, size_t size, const std::string& source);

// Reads a file (header first, then each tensor straight into its storage).
SafetensorsData read_safetensors(const std::string& path);

// Serialises tensors (any device/layout; copied to contiguous CPU) in the
// given order. Names must be unique and non-empty; dtypes among the readable
// ones. The header is padded with spaces to a multiple of 8 bytes.
std::string serialize_safetensors(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata = {});

// Writes serialize_safetensors() to path via a temporary file and rename.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace cnx::model
