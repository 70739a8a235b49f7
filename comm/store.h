#pragma once
// Rendezvous key-value stores (after PyTorch c10d's Store): how processes
// that share no communicator yet find each other and exchange small blobs
// (the NCCL unique id, hostnames). Kept apart from the collectives, so a
// backend needs its bootstrap, not another backend. Free of LibTorch.
//
// Semantics shared by every store:
// * set(key, value) publishes or overwrites a value; visible to every
//   process once set() returned.
// * get(key) blocks until the key exists, at most timeout(); then throws
//   CommError naming the store, the key and the timeout.
// * add(key, delta) atomically adds to a 64-bit counter (absent = 0) and
//   returns the new value; add(key, 0) reads it without waiting.
// * Every method is thread-safe.
//
// TcpStore: one process (rank 0) serves the keys from memory on a TCP port
// (a thread per connection); every process, the server's own included, is a
// client. Clients retry connecting until the timeout, so start order does
// not matter. The data lives as long as the serving process's store.
//
// Wire protocol (client -> server), integers little-endian:
//   u8 op ('S' set, 'G' get, 'A' add), u32 key length, key bytes, then
//   for 'S' u32 value length + value bytes, for 'A' i64 delta.
// Replies: 'S' one byte 0; 'G' u32 length + value (sent once the key
// exists); 'A' i64 new value.
//
// FileStore: one file per key in a folder every process can read and write
// (a shared file system, or one host's /tmp). Values are written to a
// temporary file and renamed into place (readers never see half a value);
// counters are updated under an flock(2). A key file older than the store's
// start minus its timeout cannot belong to this launch: get() then throws
// ("stale"), so a folder left over by an earlier run fails loudly instead of
// handing out an old NCCL id. remove_all() deletes every key file (the
// bootstrap's rank 0 calls it once every rank has left).
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "comm/error.h"

namespace cnx::comm {

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::string& value) = 0;
  virtual std::string get(const std::string& key) = 0;
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
  // Deletes every key this store can see (a no-op where the data dies with
  // the store).
  virtual void remove_all() {}
  // "tcp://host:port" or "file:DIR", for messages.
  virtual std::string describe() const = 0;

  std::chrono::milliseconds timeout() const { return timeout_; }
  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }

 protected:
  std::chrono::milliseconds timeout_{300000};
};

struct TcpStoreOptions {
  std::string host;          // address or name of the serving process
  int port = 0;              // 1..65535
  bool serve = false;        // this process runs the server
  std::string bind_host;     // server: "" = every interface
  double timeout_s = 300.0;  // connect and get deadline
};

// Throws CommError when the server cannot listen (port taken, bad address).
std::unique_ptr<Store> make_tcp_store(const TcpStoreOptions& options);

// Creates `dir` if needed. Throws CommError when it cannot.
std::unique_ptr<Store> make_file_store(const std::string& dir, double timeout_s = 300.0);

// In-process store (a world of one, tests).
std::unique_ptr<Store> make_memory_store();

}  // namespace cnx::comm
