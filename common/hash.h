#pragma once
// Hex encoding and SHA-256 (OpenSSL EVP), the one home for both: shard
// index digests, checkpoint manifests, RNG states stored as hex.
//
// Errors: from_hex reports malformed input by returning false; the SHA-256
// functions throw HashError (OpenSSL failure, unreadable file: the message
// names the file and the reason).
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace cnx {

class HashError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Lowercase hex of `size` bytes.
std::string to_hex(const void* data, size_t size);
inline std::string to_hex(std::string_view bytes) {
  return to_hex(bytes.data(), bytes.size());
}
// Decodes lowercase or uppercase hex; false (and *bytes untouched) on an odd
// length or a non-hex digit.
bool from_hex(std::string_view hex, std::string* bytes);
// True for exactly 64 lowercase hex digits (a SHA-256 as we write it).
bool is_hex64(std::string_view s);

// Incremental SHA-256. Not thread-safe; one object per digest.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t size);
  // Lowercase hex digest; the object is finished afterwards.
  std::string hex();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

std::string sha256_hex(const void* data, size_t size);
inline std::string sha256_hex(std::string_view data) {
  return sha256_hex(data.data(), data.size());
}
// Digest of a whole file, read in 1 MiB blocks.
std::string sha256_file(const std::string& path);

}  // namespace cnx
