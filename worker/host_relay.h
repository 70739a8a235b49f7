#pragma once
// Request/reply frames between the ranks of one host (the host speaker's
// local relay, worker/host_speaker.h): a Unix-domain stream socket in the
// abstract namespace (scoped to the network namespace, i.e. the host; nothing
// to clean up when a process dies), accepting peers of this user only
// (SO_PEERCRED). No gRPC and no LibTorch here.
//
// A frame is a kind byte and a body (at most 64 MiB): u32 little-endian body
// length, the kind, the body. Each connection carries one request at a time,
// answered by one frame.
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace cnx::worker::relay {

struct Frame {
  char kind = 0;
  std::string body;
};

// The peer is gone or the socket failed (message says which).
class RelayError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Sends one frame. Throws RelayError.
void write_frame(int fd, const Frame& f);
// Reads one frame; false on a clean end of stream before its first byte.
// Throws RelayError (also for a stream cut inside a frame).
bool read_frame(int fd, Frame* f);

// Listens on the abstract socket `name`; every connection gets a thread that
// answers each request with `handler(request, connection id)`. `on_close`
// is called once a connection has ended (the peer closed it or died).
class RelayServer {
 public:
  using Handler = std::function<Frame(const Frame& request, int64_t connection)>;
  using Closed = std::function<void(int64_t connection)>;
  // Throws RelayError when the name is taken or the socket cannot be made.
  RelayServer(const std::string& name, Handler handler, Closed on_close);
  ~RelayServer();  // stops accepting, ends every connection, joins the threads
  RelayServer(const RelayServer&) = delete;
  RelayServer& operator=(const RelayServer&) = delete;

 private:
  void accept_loop();
  void serve(int fd, int64_t id);

  Handler handler_;
  Closed on_close_;
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<int64_t, int> open_;  // connection id -> fd
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

// One connection to a RelayServer. call() is serialised (one request at a
// time on this connection).
class RelayClient {
 public:
  // Connects to `name`, retrying for up to `timeout_s` while nobody listens
  // yet. Throws RelayError.
  RelayClient(const std::string& name, double timeout_s);
  ~RelayClient();
  RelayClient(const RelayClient&) = delete;
  RelayClient& operator=(const RelayClient&) = delete;
  // Throws RelayError when the server is gone, or when `timeout_s` > 0 and
  // no reply came within it (a frozen peer); the connection is then broken
  // for good (later calls throw too).
  Frame call(const Frame& request, double timeout_s = 0);

 private:
  std::mutex mu_;
  int fd_ = -1;
  std::string broken_;  // why the connection is unusable ("" = fine)
};

}  // namespace cnx::worker::relay
