#pragma once
// Tar shards in the WebDataset convention, read and written with libarchive.
//
// A sample is a run of consecutive tar members sharing a key: the member
// path up to the first '.' of its last component ("a/b.x.jpg" -> key "a/b",
// extension "x.jpg"). cnx-make-shards writes "<key>.jpg|.png" and an optional
// "<key>.cls" (ASCII integer label).
//
// Threading: a TarWriter / TarSampleReader is used by one thread at a time.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

struct archive;  // libarchive handle (global namespace)

namespace cnx::data {

// Splits a member path into (key, extension); extension is lowercase and ""
// when the last component has no '.'.
std::pair<std::string, std::string> split_member_name(const std::string& path);

// Parses a "<key>.cls" payload: optional whitespace around a decimal
// integer >= 0 (at most 18 digits). False for anything else.
bool parse_label(const std::vector<uint8_t>& data, int64_t* out);

struct TarMember {
  std::string ext;            // lowercase extension ("jpg", "png", "cls", ...)
  std::vector<uint8_t> data;  // empty when skipped (see too_large)
  bool too_large = false;     // member exceeded the reader's size bound; data dropped
};

struct TarSample {
  std::string key;
  std::vector<TarMember> members;
};

// Writes a deterministic tar: ustar/pax, mtime 0, uid/gid 0, mode 0644,
// members in the order given (callers add them sorted). Throws DataError.
class TarWriter {
 public:
  explicit TarWriter(const std::string& path);
  ~TarWriter();
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;

  void add(const std::string& name, const void* data, size_t size);
  // Finishes the archive; the destructor closes silently if not called.
  void close();
  // Bytes a member of `size` adds to the archive (header + padded data).
  static int64_t member_bytes(size_t size) { return 512 + ((static_cast<int64_t>(size) + 511) / 512) * 512; }

 private:
  ::archive* a_ = nullptr;
  std::string path_;
};

// Reads samples sequentially from a tar file. `max_member_bytes` bounds the
// memory one member may take; bigger members are skipped (too_large). A
// structurally broken archive throws DataError naming the file.
class TarSampleReader {
 public:
  TarSampleReader(const std::string& path, int64_t max_member_bytes);
  ~TarSampleReader();
  TarSampleReader(const TarSampleReader&) = delete;
  TarSampleReader& operator=(const TarSampleReader&) = delete;

  // The next sample, or nullopt at the end of the archive. With
  // `keep_data` false, member data is skipped (cheap fast-forward).
  std::optional<TarSample> next(bool keep_data = true);

 private:
  bool read_header();  // loads pending_ from the archive; false at EOF
  ::archive* a_ = nullptr;
  std::string path_;
  int64_t max_member_bytes_;
  bool have_pending_ = false;
  bool eof_ = false;
  std::string pending_key_;
  std::string pending_ext_;
  int64_t pending_size_ = 0;
};

}  // namespace cnx::data
