// FileStore (semantics in comm/store.h).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "comm/store.h"
#include "common/check.h"

namespace cnx::comm {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Keys become file names: [A-Za-z0-9_-] stay, every other byte is %XX. Key
// files carry the prefix "k." so temporary and lock files never collide.
std::string encode_key(const std::string& key) {
  static const char* hex = "0123456789ABCDEF";
  std::string out = "k.";
  for (unsigned char c : key) {
    if (std::isalnum(c) || c == '_' || c == '-') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

class FileStore final : public Store {
 public:
  FileStore(const std::string& dir, double timeout_s) : dir_(dir) {
    timeout_ = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000.0));
    std::error_code ec;
    fs::create_directories(dir_, ec);
    if (ec || !fs::is_directory(dir_)) {
      throw CommError(cnx::str("rendezvous store file:", dir,
                               ": cannot create the folder (CNX_STORE_DIR): ", ec ? ec.message() : "not a directory"));
    }
    // Files older than this were written before any process of this launch
    // could have started.
    oldest_valid_ = fs::file_time_type::clock::now() - timeout_;
  }

  std::string describe() const override { return "file:" + dir_.string(); }

  void set(const std::string& key, const std::string& value) override { write_atomically(encode_key(key), value); }

  std::string get(const std::string& key) override {
    const fs::path path = dir_ / encode_key(key);
    const auto deadline = Clock::now() + timeout_;
    auto pause = std::chrono::milliseconds(1);
    for (;;) {
      std::error_code ec;
      const auto mtime = fs::last_write_time(path, ec);
      if (!ec) {
        if (mtime < oldest_valid_) {
          throw CommError(cnx::str("rendezvous store ", describe(), ": key '", key,
                                   "' was written before this launch started (stale files of an earlier run); "
                                   "empty the folder or use a fresh CNX_STORE_DIR"));
        }
        std::ifstream in(path, std::ios::binary);
        if (in) {
          std::ostringstream os;
          os << in.rdbuf();
          return os.str();
        }
      }
      if (Clock::now() + pause > deadline) break;
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(50));
    }
    throw CommError(cnx::str("rendezvous store ", describe(), ": get '", key, "' timed out after ",
                             timeout_.count() / 1000.0,
                             " s (a rank did not start, is stuck, or died; do all ranks see the same folder?)"));
  }

  int64_t add(const std::string& key, int64_t delta) override {
    const std::string name = encode_key(key);
    const fs::path lock_path = dir_ / ("lock." + name);
    const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) fail_io("open", lock_path, errno);
    if (::flock(fd, LOCK_EX) != 0) {
      const int err = errno;
      ::close(fd);
      fail_io("flock", lock_path, err);
    }
    int64_t now = delta;
    try {
      std::ifstream in(dir_ / name);
      int64_t old = 0;
      if (in >> old) now = old + delta;
      write_atomically(name, std::to_string(now));
    } catch (...) {
      ::flock(fd, LOCK_UN);
      ::close(fd);
      throw;
    }
    ::flock(fd, LOCK_UN);
    ::close(fd);
    return now;
  }

  void remove_all() override {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir_, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("k.", 0) == 0 || name.rfind("lock.k.", 0) == 0) fs::remove(entry.path(), ec);
    }
  }

 private:
  [[noreturn]] void fail_io(const char* what, const fs::path& path, int err) const {
    throw CommError(
        cnx::str("rendezvous store ", describe(), ": ", what, " ", path.string(), ": ", std::strerror(err)));
  }

  void write_atomically(const std::string& name, const std::string& value) {
    static std::atomic<uint64_t> counter{0};
    const fs::path tmp = dir_ / cnx::str("tmp.", ::getpid(), ".", std::this_thread::get_id(), ".", counter++);
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out.write(value.data(), static_cast<std::streamsize>(value.size()));
      out.flush();
      if (!out) fail_io("write", tmp, errno);
    }
    std::error_code ec;
    fs::rename(tmp, dir_ / name, ec);
    if (ec) {
      fs::remove(tmp, ec);
      throw CommError(
          cnx::str("rendezvous store ", describe(), ": rename into ", (dir_ / name).string(), ": ", ec.message()));
    }
  }

  fs::path dir_;
  fs::file_time_type oldest_valid_;
};

}  // namespace

std::unique_ptr<Store> make_file_store(const std::string& dir, double timeout_s) {
  return std::make_unique<FileStore>(dir, timeout_s);
}

}  // namespace cnx::comm
