// TcpStore and the in-process memory store (protocol in comm/store.h).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "comm/store.h"
#include "common/check.h"

namespace cnx::comm {

namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(int err) {
  return std::strerror(err);
}

// Keys and values are bounded so that a stray connection (a port scanner,
// another protocol) cannot make the server allocate gigabytes.
constexpr uint32_t kMaxKey = 4096;
constexpr uint32_t kMaxValue = 64u << 20;

// Reads exactly n bytes; false on EOF, error or deadline (errno set; EAGAIN
// on a receive timeout).
bool read_all(int fd, void* buf, size_t n) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r == 0) {
      errno = ECONNRESET;
      return false;
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool write_all(int fd, const void* buf, size_t n) {
  const char* p = static_cast<const char*>(buf);
  while (n > 0) {
    const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_i64(std::string& out, int64_t v) {
  const uint64_t u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
}
uint32_t get_u32(const unsigned char* b) {
  return static_cast<uint32_t>(b[0]) | static_cast<uint32_t>(b[1]) << 8 | static_cast<uint32_t>(b[2]) << 16 |
         static_cast<uint32_t>(b[3]) << 24;
}
int64_t get_i64(const unsigned char* b) {
  uint64_t u = 0;
  for (int i = 7; i >= 0; --i) u = (u << 8) | b[i];
  return static_cast<int64_t>(u);
}

struct AddrInfo {
  addrinfo* list = nullptr;
  ~AddrInfo() {
    if (list) freeaddrinfo(list);
  }
};

// ---------------------------------------------------------------------------
// Server: accept thread + one thread per connection.
// ---------------------------------------------------------------------------
class TcpStoreServer {
 public:
  TcpStoreServer(const std::string& bind_host, int port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    AddrInfo ai;
    const std::string service = std::to_string(port);
    const int rc = getaddrinfo(bind_host.empty() ? nullptr : bind_host.c_str(), service.c_str(), &hints, &ai.list);
    if (rc != 0) {
      throw CommError(
          cnx::str("rendezvous store: cannot resolve the listen address '", bind_host, "': ", gai_strerror(rc)));
    }
    int last_err = 0;
    // Prefer IPv4 for the wildcard (the usual master address form).
    std::vector<addrinfo*> order;
    for (addrinfo* a = ai.list; a; a = a->ai_next) order.push_back(a);
    std::stable_partition(order.begin(), order.end(), [](addrinfo* a) { return a->ai_family == AF_INET; });
    for (addrinfo* a : order) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) {
        last_err = errno;
        continue;
      }
      const int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 1024) == 0) {
        listen_fd_ = fd;
        break;
      }
      last_err = errno;
      ::close(fd);
    }
    if (listen_fd_ < 0) {
      throw CommError(cnx::str("rendezvous store: rank 0 cannot listen on ", bind_host.empty() ? "*" : bind_host, ":",
                               port, ": ", errno_text(last_err),
                               " (choose a free CNX_MASTER_PORT, or check CNX_MASTER_ADDR)"));
    }
    if (::pipe2(wake_, O_CLOEXEC) != 0) {
      const int err = errno;
      ::close(listen_fd_);
      throw CommError(cnx::str("rendezvous store: pipe2 failed: ", errno_text(err)));
    }
    accept_thread_ = std::thread([this] { accept_loop(); });
  }

  ~TcpStoreServer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      for (int fd : client_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    cv_.notify_all();
    const char c = 0;
    (void)!::write(wake_[1], &c, 1);
    accept_thread_.join();
    for (auto& t : handlers_) t.join();
    for (int fd : client_fds_) ::close(fd);
    ::close(listen_fd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

 private:
  void accept_loop() {
    for (;;) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      const int rc = ::poll(fds, 2, -1);
      if (rc < 0 && errno == EINTR) continue;
      if (rc < 0 || (fds[1].revents & POLLIN)) return;
      if (!(fds[0].revents & POLLIN)) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) {
        ::close(fd);
        return;
      }
      client_fds_.push_back(fd);
      handlers_.emplace_back([this, fd] { serve(fd); });
    }
  }

  // One connection: requests are answered in order. Returns on EOF, a
  // malformed request or shutdown.
  void serve(int fd) {
    for (;;) {
      unsigned char head[5];
      if (!read_all(fd, head, 5)) return;
      const char op = static_cast<char>(head[0]);
      const uint32_t klen = get_u32(head + 1);
      if (klen > kMaxKey || (op != 'S' && op != 'G' && op != 'A')) return;
      std::string key(klen, '\0');
      if (klen > 0 && !read_all(fd, key.data(), klen)) return;
      std::string reply;
      if (op == 'S') {
        unsigned char lenb[4];
        if (!read_all(fd, lenb, 4)) return;
        const uint32_t vlen = get_u32(lenb);
        if (vlen > kMaxValue) return;
        std::string value(vlen, '\0');
        if (vlen > 0 && !read_all(fd, value.data(), vlen)) return;
        {
          std::lock_guard<std::mutex> lock(mu_);
          data_[key] = std::move(value);
        }
        cv_.notify_all();
        reply.push_back('\0');
      } else if (op == 'A') {
        unsigned char d[8];
        if (!read_all(fd, d, 8)) return;
        int64_t now = 0;
        {
          std::lock_guard<std::mutex> lock(mu_);
          std::string& v = data_[key];
          const int64_t old = v.size() == 8 ? get_i64(reinterpret_cast<const unsigned char*>(v.data())) : 0;
          now = old + get_i64(d);
          v.clear();
          put_i64(v, now);
        }
        cv_.notify_all();
        put_i64(reply, now);
      } else {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || data_.count(key) > 0; });
        if (stop_) return;
        const std::string& v = data_[key];
        put_u32(reply, static_cast<uint32_t>(v.size()));
        reply += v;
      }
      if (!write_all(fd, reply.data(), reply.size())) return;
    }
  }

  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::thread accept_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::map<std::string, std::string> data_;
  std::vector<int> client_fds_;
  std::vector<std::thread> handlers_;
};

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------
class TcpStore final : public Store {
 public:
  explicit TcpStore(const TcpStoreOptions& o) : options_(o) {
    if (o.port < 1 || o.port > 65535) {
      throw CommError(cnx::str("rendezvous store: port ", o.port, " is not in 1..65535 (CNX_MASTER_PORT)"));
    }
    if (o.host.empty()) throw CommError("rendezvous store: empty master address (CNX_MASTER_ADDR)");
    timeout_ = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000.0));
    if (o.serve) server_ = std::make_unique<TcpStoreServer>(o.bind_host, o.port);
  }
  ~TcpStore() override {
    if (fd_ >= 0) ::close(fd_);
  }

  std::string describe() const override { return cnx::str("tcp://", options_.host, ":", options_.port); }

  void set(const std::string& key, const std::string& value) override {
    std::string req = request('S', key);
    put_u32(req, static_cast<uint32_t>(value.size()));
    req += value;
    std::lock_guard<std::mutex> lock(mu_);
    unsigned char ack = 1;
    exchange(req, &ack, 1, "set", key);
  }

  std::string get(const std::string& key) override {
    const std::string req = request('G', key);
    std::lock_guard<std::mutex> lock(mu_);
    unsigned char lenb[4];
    exchange(req, lenb, 4, "get", key);
    std::string value(get_u32(lenb), '\0');
    if (!value.empty()) receive(value.data(), value.size(), "get", key);
    return value;
  }

  int64_t add(const std::string& key, int64_t delta) override {
    std::string req = request('A', key);
    put_i64(req, delta);
    std::lock_guard<std::mutex> lock(mu_);
    unsigned char out[8];
    exchange(req, out, 8, "add", key);
    return get_i64(out);
  }

 private:
  std::string request(char op, const std::string& key) const {
    if (key.size() > kMaxKey) {
      throw CommError(cnx::str("rendezvous store ", describe(), ": key of ", key.size(), " bytes (max ", kMaxKey, ")"));
    }
    std::string req(1, op);
    put_u32(req, static_cast<uint32_t>(key.size()));
    req += key;
    return req;
  }

  void fail(const std::string& what, const std::string& key, int err) {
    if (fd_ >= 0) ::close(fd_);  // a half-read reply poisons the stream
    fd_ = -1;
    if (err == EAGAIN || err == EWOULDBLOCK || err == ETIMEDOUT) {
      throw CommError(cnx::str("rendezvous store ", describe(), ": ", what, " '", key, "' timed out after ",
                               timeout_.count() / 1000.0,
                               " s (a rank did not start, is stuck, or died; raise CNX_RENDEZVOUS_TIMEOUT_S "
                               "if ranks start far apart)"));
    }
    throw CommError(cnx::str("rendezvous store ", describe(), ": ", what, " '", key,
                             "' failed: lost the connection to rank 0's store (", errno_text(err), ")"));
  }

  void receive(void* buf, size_t n, const char* what, const std::string& key) {
    if (!read_all(fd_, buf, n)) fail(what, key, errno);
  }

  // Sends `req` and reads the first `n` reply bytes; the caller reads the
  // rest. Connects (with retries) first if needed.
  void exchange(const std::string& req, void* reply, size_t n, const char* what, const std::string& key) {
    const auto deadline = Clock::now() + timeout_;
    if (fd_ < 0) connect_until(deadline);
    const auto remaining = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
    timeval tv{};
    const int64_t us = std::max<int64_t>(remaining.count(), 1000);
    tv.tv_sec = static_cast<time_t>(us / 1000000);
    tv.tv_usec = static_cast<suseconds_t>(us % 1000000);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (!write_all(fd_, req.data(), req.size())) fail(what, key, errno);
    receive(reply, n, what, key);
  }

  void connect_until(Clock::time_point deadline) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    const std::string service = std::to_string(options_.port);
    std::string last = "no attempt";
    auto pause = std::chrono::milliseconds(20);
    for (;;) {
      AddrInfo ai;
      const int rc = getaddrinfo(options_.host.c_str(), service.c_str(), &hints, &ai.list);
      if (rc != 0) {
        last = cnx::str("cannot resolve '", options_.host, "': ", gai_strerror(rc));
      } else {
        for (addrinfo* a = ai.list; a; a = a->ai_next) {
          const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
          if (fd < 0) {
            last = errno_text(errno);
            continue;
          }
          if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            const int one = 1;
            ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            fd_ = fd;
            return;
          }
          last = errno_text(errno);
          ::close(fd);
        }
      }
      if (Clock::now() + pause > deadline) break;
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(500));
    }
    throw CommError(cnx::str("rendezvous store: cannot reach rank 0's store at ", describe(), " within ",
                             timeout_.count() / 1000.0, " s (last error: ", last,
                             "); check CNX_MASTER_ADDR / CNX_MASTER_PORT and that rank 0 is running"));
  }

  TcpStoreOptions options_;
  std::unique_ptr<TcpStoreServer> server_;
  std::mutex mu_;
  int fd_ = -1;
};

class MemoryStore final : public Store {
 public:
  std::string describe() const override { return "memory"; }
  void set(const std::string& key, const std::string& value) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      data_[key] = value;
    }
    cv_.notify_all();
  }
  std::string get(const std::string& key) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout_, [&] { return data_.count(key) > 0; })) {
      throw CommError(
          cnx::str("rendezvous store memory: get '", key, "' timed out after ", timeout_.count() / 1000.0, " s"));
    }
    return data_[key];
  }
  int64_t add(const std::string& key, int64_t delta) override {
    int64_t now = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      now = (counters_[key] += delta);
      std::string v;
      put_i64(v, now);
      data_[key] = v;
    }
    cv_.notify_all();
    return now;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> data_;
  std::map<std::string, int64_t> counters_;
};

}  // namespace

std::unique_ptr<Store> make_tcp_store(const TcpStoreOptions& options) {
  return std::make_unique<TcpStore>(options);
}

std::unique_ptr<Store> make_memory_store() {
  return std::make_unique<MemoryStore>();
}

}  // namespace cnx::comm
