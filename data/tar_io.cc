#include "data/tar_io.h"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <cctype>

#include "common/check.h"
#include "data/shard_index.h"

namespace cnx::data {

bool parse_label(const std::vector<uint8_t>& data, int64_t* out) {
  std::string s(data.begin(), data.end());
  const auto b = s.find_first_not_of(" \t\r\n");
  const auto e = s.find_last_not_of(" \t\r\n");
  if (b == std::string::npos) return false;
  s = s.substr(b, e - b + 1);
  if (s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos) return false;
  *out = std::stoll(s);
  return true;
}

std::pair<std::string, std::string> split_member_name(const std::string& path) {
  const size_t slash = path.rfind('/');
  const size_t start = slash == std::string::npos ? 0 : slash + 1;
  const size_t dot = path.find('.', start);
  if (dot == std::string::npos) return {path, ""};
  std::string ext = path.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return {path.substr(0, dot), ext};
}

TarWriter::TarWriter(const std::string& path) : path_(path) {
  a_ = archive_write_new();
  CNX_CHECK(a_ != nullptr, "archive_write_new failed");
  // pax_restricted writes plain ustar headers unless a member needs pax
  // extensions (long names), so the output only depends on the members.
  if (archive_write_set_format_pax_restricted(a_) != ARCHIVE_OK ||
      archive_write_open_filename(a_, path.c_str()) != ARCHIVE_OK) {
    std::string msg = archive_error_string(a_) ? archive_error_string(a_) : "unknown error";
    archive_write_free(a_);
    a_ = nullptr;
    throw DataError(str("cannot create tar ", path, ": ", msg));
  }
}

TarWriter::~TarWriter() {
  if (a_) archive_write_free(a_);
}

void TarWriter::add(const std::string& name, const void* data, size_t size) {
  CNX_CHECK(a_ != nullptr, "TarWriter::add after close");
  archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, name.c_str());
  archive_entry_set_size(e, static_cast<la_int64_t>(size));
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_mtime(e, 0, 0);
  archive_entry_set_uid(e, 0);
  archive_entry_set_gid(e, 0);
  int r = archive_write_header(a_, e);
  archive_entry_free(e);
  if (r != ARCHIVE_OK)
    throw DataError(str("tar ", path_, ": cannot write header of ", name, ": ", archive_error_string(a_)));
  if (size > 0 && archive_write_data(a_, data, size) != static_cast<la_ssize_t>(size)) {
    throw DataError(str("tar ", path_, ": cannot write ", name, ": ", archive_error_string(a_)));
  }
}

void TarWriter::close() {
  if (!a_) return;
  int r = archive_write_close(a_);
  std::string msg = r == ARCHIVE_OK ? "" : (archive_error_string(a_) ? archive_error_string(a_) : "unknown error");
  archive_write_free(a_);
  a_ = nullptr;
  if (r != ARCHIVE_OK) throw DataError(str("cannot finish tar ", path_, ": ", msg));
}

TarSampleReader::TarSampleReader(const std::string& path, int64_t max_member_bytes)
    : path_(path), max_member_bytes_(max_member_bytes) {
  a_ = archive_read_new();
  CNX_CHECK(a_ != nullptr, "archive_read_new failed");
  archive_read_support_format_tar(a_);
  if (archive_read_open_filename(a_, path.c_str(), 1 << 20) != ARCHIVE_OK) {
    std::string msg = archive_error_string(a_) ? archive_error_string(a_) : "unknown error";
    archive_read_free(a_);
    a_ = nullptr;
    throw DataError(str("cannot open shard ", path, ": ", msg));
  }
}

TarSampleReader::~TarSampleReader() {
  if (a_) archive_read_free(a_);
}

bool TarSampleReader::read_header() {
  while (true) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(a_, &e);
    if (r == ARCHIVE_EOF) return false;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      throw DataError(
          str("shard ", path_, ": broken tar: ", archive_error_string(a_) ? archive_error_string(a_) : "?"));
    }
    if (archive_entry_filetype(e) != AE_IFREG) continue;  // directories etc. carry no sample data
    const char* p = archive_entry_pathname(e);
    auto [key, ext] = split_member_name(p ? p : "");
    pending_key_ = std::move(key);
    pending_ext_ = std::move(ext);
    pending_size_ = archive_entry_size(e);
    return true;
  }
}

std::optional<TarSample> TarSampleReader::next(bool keep_data) {
  if (eof_) return std::nullopt;
  if (!have_pending_) {
    if (!read_header()) {
      eof_ = true;
      return std::nullopt;
    }
    have_pending_ = true;
  }
  TarSample sample;
  sample.key = pending_key_;
  while (have_pending_ && pending_key_ == sample.key) {
    TarMember m;
    m.ext = pending_ext_;
    if (keep_data && pending_size_ > max_member_bytes_) m.too_large = true;
    if (keep_data && !m.too_large && pending_size_ > 0) {
      m.data.resize(static_cast<size_t>(pending_size_));
      size_t got = 0;
      while (got < m.data.size()) {
        la_ssize_t n = archive_read_data(a_, m.data.data() + got, m.data.size() - got);
        if (n < 0)
          throw DataError(
              str("shard ", path_, ": broken tar member ", sample.key, ".", m.ext, ": ", archive_error_string(a_)));
        if (n == 0) break;
        got += static_cast<size_t>(n);
      }
      if (got != m.data.size())
        throw DataError(str("shard ", path_, ": truncated tar member ", sample.key, ".", m.ext));
    }
    sample.members.push_back(std::move(m));
    have_pending_ = read_header();
    if (!have_pending_) eof_ = true;
  }
  return sample;
}

}  // namespace cnx::data
