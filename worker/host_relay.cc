#include "worker/host_relay.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>

namespace cnx::worker::relay {
namespace {

constexpr uint32_t kMaxBody = 64u << 20;

// The abstract address of `name` and its length.
socklen_t abstract_address(const std::string& name, sockaddr_un* a) {
  std::memset(a, 0, sizeof(*a));
  a->sun_family = AF_UNIX;
  if (name.empty() || name.size() + 1 > sizeof(a->sun_path))
    throw RelayError("relay socket name '" + name + "' is empty or longer than " +
                     std::to_string(sizeof(a->sun_path) - 2) + " bytes");
  std::memcpy(a->sun_path + 1, name.data(), name.size());  // sun_path[0] = 0: abstract
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw RelayError(errno_text("relay send"));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Reads n bytes; false when the stream ends before the first one (and
// `eof_ok`), RelayError when it ends later.
bool read_all(int fd, char* p, size_t n, bool eof_ok) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd, p + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))  // SO_RCVTIMEO passed
      throw RelayError("relay receive: no reply in time (the peer is frozen or overloaded)");
    if (r < 0) throw RelayError(errno_text("relay receive"));
    if (r == 0) {
      if (got == 0 && eof_ok) return false;
      throw RelayError("relay receive: the peer closed the connection");
    }
    got += static_cast<size_t>(r);
  }
  return true;
}

}  // namespace

void write_frame(int fd, const Frame& f) {
  if (f.body.size() > kMaxBody) throw RelayError("relay frame of " + std::to_string(f.body.size()) + " bytes");
  const uint32_t n = static_cast<uint32_t>(f.body.size());
  std::string buf(5 + f.body.size(), '\0');
  for (int i = 0; i < 4; ++i) buf[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  buf[4] = f.kind;
  std::memcpy(buf.data() + 5, f.body.data(), f.body.size());
  write_all(fd, buf.data(), buf.size());
}

bool read_frame(int fd, Frame* f) {
  unsigned char head[5];
  if (!read_all(fd, reinterpret_cast<char*>(head), 5, true)) return false;
  const uint32_t n = head[0] | (head[1] << 8) | (head[2] << 16) | (static_cast<uint32_t>(head[3]) << 24);
  if (n > kMaxBody) throw RelayError("relay frame announces " + std::to_string(n) + " bytes (limit 64 MiB)");
  f->kind = static_cast<char>(head[4]);
  f->body.assign(n, '\0');
  read_all(fd, f->body.data(), n, false);
  return true;
}

RelayServer::RelayServer(const std::string& name, Handler handler, Closed on_close)
    : handler_(std::move(handler)), on_close_(std::move(on_close)) {
  sockaddr_un a;
  const socklen_t len = abstract_address(name, &a);
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw RelayError(errno_text("relay socket"));
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(listen_fd_, 64) != 0) {
    const std::string why = errno_text(("relay listen on '@" + name + "'").c_str());
    ::close(listen_fd_);
    throw RelayError(why);
  }
  acceptor_ = std::thread([this] { accept_loop(); });
}

RelayServer::~RelayServer() {
  stop_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);  // wakes accept()
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, fd] : open_) ::shutdown(fd, SHUT_RDWR);  // wakes recv()
    threads.swap(threads_);
  }
  for (auto& t : threads)
    if (t.joinable()) t.join();
  ::close(listen_fd_);
}

void RelayServer::accept_loop() {
  int64_t next_id = 1;
  while (!stop_) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // shut down
    }
    ucred cred{};
    socklen_t clen = sizeof(cred);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 || cred.uid != ::getuid()) {
      ::close(fd);  // another user's process: not one of this job's ranks
      continue;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      ::close(fd);
      return;
    }
    const int64_t id = next_id++;
    open_[id] = fd;
    threads_.emplace_back([this, fd, id] { serve(fd, id); });
  }
}

void RelayServer::serve(int fd, int64_t id) {
  try {
    Frame req;
    while (!stop_ && read_frame(fd, &req)) write_frame(fd, handler_(req, id));
  } catch (const std::exception&) {
    // The peer died or the server stops: the connection ends here.
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    open_.erase(id);
    ::close(fd);
  }
  if (on_close_ && !stop_) on_close_(id);
}

RelayClient::RelayClient(const std::string& name, double timeout_s) {
  sockaddr_un a;
  const socklen_t len = abstract_address(name, &a);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw RelayError(errno_text("relay socket"));
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), len) == 0) return;
    const std::string why = errno_text(("relay connect to '@" + name + "'").c_str());
    ::close(fd_);
    fd_ = -1;
    if (std::chrono::steady_clock::now() >= deadline)
      throw RelayError(why + " (for " + std::to_string(static_cast<int>(timeout_s)) + " s)");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

RelayClient::~RelayClient() {
  if (fd_ >= 0) ::close(fd_);
}

Frame RelayClient::call(const Frame& request, double timeout_s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!broken_.empty()) throw RelayError(broken_);
  timeval tv{};  // 0 = wait for ever
  if (timeout_s > 0) {
    tv.tv_sec = static_cast<time_t>(timeout_s);
    tv.tv_usec = static_cast<suseconds_t>((timeout_s - static_cast<double>(tv.tv_sec)) * 1e6);
  }
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  try {
    write_frame(fd_, request);
    Frame reply;
    if (!read_frame(fd_, &reply)) throw RelayError("relay: the server closed the connection");
    return reply;
  } catch (const RelayError& e) {
    // A reply cut off (or never sent) leaves the stream out of step.
    broken_ = e.what();
    throw;
  }
}

}  // namespace cnx::worker::relay
