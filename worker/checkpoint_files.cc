#include "worker/checkpoint_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;

namespace cnx::worker {
namespace {

[[noreturn]] void io_error(const std::string& what, const std::string& path) {
  throw CheckpointError(what + " '" + path + "': " + std::strerror(errno));
}

constexpr const char* kFormat = "cnx-checkpoint-v1";
constexpr const char* kManifest = "MANIFEST.json";

}  // namespace

FileDigest digest_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) io_error("cannot open", path);
  Sha256 h;
  FileDigest d;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = in.gcount();
    if (n > 0) {
      h.update(buf.data(), static_cast<size_t>(n));
      d.bytes += n;
    }
  }
  if (in.bad()) io_error("cannot read", path);
  d.sha256 = h.hex();
  return d;
}

FileDigest write_file_durable(const std::string& path, const void* bytes, size_t size) {
  const char* data = static_cast<const char*>(bytes);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) io_error("cannot create", path);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int saved = errno;
      ::close(fd);
      errno = saved;
      io_error("cannot write", path);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    io_error("cannot fsync", path);
  }
  if (::close(fd) != 0) io_error("cannot close", path);
  return FileDigest{sha256_hex(data, size), static_cast<int64_t>(size)};
}

FileDigest write_file_durable(const std::string& path, const std::string& data) {
  return write_file_durable(path, data.data(), data.size());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) io_error("cannot open", path);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) io_error("cannot read", path);
  return data;
}

void fsync_dir(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) io_error("cannot open folder", path);
  if (::fsync(fd) != 0) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    io_error("cannot fsync folder", path);
  }
  ::close(fd);
}

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%08lld", static_cast<long long>(step));
  return buf;
}

std::optional<int64_t> parse_checkpoint_name(const std::string& name) {
  if (name.size() < 6 || name.compare(0, 5, "step-") != 0) return std::nullopt;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || v > (INT64_MAX - 9) / 10) return std::nullopt;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

std::string temp_checkpoint_name(int64_t step) {
  return ".tmp-" + checkpoint_name(step);
}

std::string manifest_to_json(int64_t step, const Manifest& manifest) {
  nlohmann::json j;
  j["format"] = kFormat;
  j["step"] = step;
  j["files"] = nlohmann::json::object();
  for (const auto& [name, d] : manifest) j["files"][name] = {{"sha256", d.sha256}, {"bytes", d.bytes}};
  return j.dump(2) + "\n";
}

Manifest manifest_from_json(const std::string& text, const std::string& origin, int64_t* step) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw CheckpointError(origin + ": not valid JSON (" + e.what() + ")");
  }
  auto bad = [&](const std::string& what) { return CheckpointError(origin + ": " + what); };
  if (!j.is_object() || !j.contains("format") || j["format"] != kFormat)
    throw bad(std::string("\"format\" must be \"") + kFormat + "\"");
  if (!j.contains("step") || !j["step"].is_number_integer() || j["step"].get<int64_t>() < 0)
    throw bad("\"step\" must be a non-negative integer");
  if (!j.contains("files") || !j["files"].is_object()) throw bad("\"files\" must be an object");
  Manifest m;
  for (auto it = j["files"].begin(); it != j["files"].end(); ++it) {
    const auto& v = it.value();
    const std::string& name = it.key();
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      throw bad("file name '" + name + "' must be a plain name");
    if (!v.is_object() || !v.contains("sha256") || !v["sha256"].is_string() ||
        v["sha256"].get<std::string>().size() != 64 || !v.contains("bytes") || !v["bytes"].is_number_integer() ||
        v["bytes"].get<int64_t>() < 0)
      throw bad("entry '" + name + "' needs \"sha256\" (64 hex digits) and \"bytes\" (>= 0)");
    m[name] = FileDigest{v["sha256"].get<std::string>(), v["bytes"].get<int64_t>()};
  }
  if (step) *step = j["step"].get<int64_t>();
  return m;
}

void write_latest(const std::string& root, const std::string& name) {
  const std::string tmp = root + "/.latest.tmp";
  write_file_durable(tmp, name + "\n");
  if (::rename(tmp.c_str(), (root + "/latest").c_str()) != 0) io_error("cannot rename to", root + "/latest");
  fsync_dir(root);
}

std::string commit_local(const std::string& root, const std::string& temp_dir, int64_t step, const Manifest& manifest) {
  const std::string final_dir = root + "/" + checkpoint_name(step);
  if (fs::exists(final_dir))
    throw CheckpointError("checkpoint '" + final_dir + "' already exists; checkpoints are immutable");
  write_file_durable(temp_dir + "/" + kManifest, manifest_to_json(step, manifest));
  fsync_dir(temp_dir);
  if (::rename(temp_dir.c_str(), final_dir.c_str()) != 0) io_error("cannot rename '" + temp_dir + "' to", final_dir);
  fsync_dir(root);
  write_latest(root, checkpoint_name(step));
  return final_dir;
}

std::string confined_to_root(const std::string& root, const std::string& dir, const std::string& what) {
  auto refuse = [&](const std::string& why) -> std::string {
    throw CheckpointError(what + " '" + dir + "' " + why + " (checkpoint.root is '" + root + "')");
  };
  if (root.empty()) refuse("cannot be checked: checkpoint.root is empty");
  if (dir.empty() || dir.find('\0') != std::string::npos) refuse("is not a folder name");
  for (const auto& part : fs::path(dir))
    if (part == "..") refuse("contains '..'");
  std::error_code ec;
  const fs::path r = fs::weakly_canonical(fs::absolute(root), ec);
  if (ec) refuse("cannot be checked: " + ec.message());
  const fs::path d = fs::weakly_canonical(fs::absolute(dir), ec);
  if (ec) refuse("cannot be resolved: " + ec.message());
  const fs::path rel = d.lexically_relative(r);
  if (rel.empty() || rel == "." || *rel.begin() == "..")
    refuse("lies outside checkpoint.root (resolved to '" + d.string() + "')");
  return dir;
}

std::optional<std::string> latest_checkpoint(const std::string& root) {
  const std::string path = root + "/latest";
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  std::string name = read_file(path);
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r' || name.back() == ' ')) name.pop_back();
  if (!parse_checkpoint_name(name))
    throw CheckpointError("'" + path + "' must contain a checkpoint name like step-00000120, found '" + name + "'");
  const std::string dir = root + "/" + name;
  if (!fs::is_directory(dir, ec)) throw CheckpointError("'" + path + "' points to '" + dir + "', which does not exist");
  return dir;
}

Manifest verify_checkpoint(const std::string& dir, const std::vector<std::string>& required, int64_t* step) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw CheckpointError("checkpoint '" + dir + "' is not a folder");
  const std::string mpath = dir + "/" + kManifest;
  if (!fs::exists(mpath, ec))
    throw CheckpointError("checkpoint '" + dir + "' has no " + kManifest + " (incomplete or not a checkpoint)");
  Manifest m = manifest_from_json(read_file(mpath), mpath, step);
  std::vector<std::string> problems;
  for (const auto& r : required) {
    if (!m.count(r)) problems.push_back("'" + r + "' is not listed in the manifest");
  }
  for (const auto& [name, want] : m) {
    const std::string path = dir + "/" + name;
    if (!fs::exists(path, ec)) {
      problems.push_back("'" + name + "' is missing");
      continue;
    }
    const FileDigest got = digest_file(path);
    if (got.bytes != want.bytes) {
      problems.push_back("'" + name + "' has " + std::to_string(got.bytes) + " bytes, manifest says " +
                         std::to_string(want.bytes));
    } else if (got.sha256 != want.sha256) {
      problems.push_back("'" + name + "' sha256 " + got.sha256 + " != manifest " + want.sha256);
    }
  }
  if (!problems.empty()) {
    std::string msg = "checkpoint '" + dir + "' is corrupt:";
    for (const auto& p : problems) msg += "\n  " + p;
    throw CheckpointError(msg);
  }
  return m;
}

std::vector<std::string> apply_retention(const std::string& root, int64_t keep) {
  if (keep < 1) throw CheckpointError("checkpoint.keep must be >= 1, got " + std::to_string(keep));
  std::error_code ec;
  std::vector<std::pair<int64_t, std::string>> found;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (auto s = parse_checkpoint_name(name); s && entry.is_directory()) found.emplace_back(*s, name);
  }
  std::sort(found.begin(), found.end());
  std::string latest_name;
  if (auto l = latest_checkpoint(root)) latest_name = fs::path(*l).filename().string();
  std::vector<std::string> deleted;
  for (size_t i = 0; i + static_cast<size_t>(keep) < found.size(); ++i) {
    if (found[i].second == latest_name) continue;
    fs::remove_all(root + "/" + found[i].second, ec);
    if (ec)
      throw CheckpointError("cannot delete old checkpoint '" + root + "/" + found[i].second + "': " + ec.message());
    deleted.push_back(found[i].second);
  }
  return deleted;
}

}  // namespace cnx::worker
