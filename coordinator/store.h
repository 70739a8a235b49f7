#pragma once
// Durable state: a key -> JSON table in SQLite (WAL journal,
// synchronous=FULL, so a committed transaction survives SIGKILL and power
// loss), and a group-committing writer in front of it.
#include <sqlite3.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace cnx::coordinator {

using Changes = std::map<std::string, std::optional<std::string>>;

// Not thread-safe; owned by one DurableWriter (or one test).
class Store {
 public:
  // Opens or creates the database at `path` (its folder is created).
  // Throws cnx::CheckError naming the path on failure.
  explicit Store(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  std::map<std::string, std::string> load();
  // Applies upserts (value) and deletes (nullopt) in one transaction.
  void apply(const Changes& changes);
  const std::string& path() const { return path_; }

 private:
  void exec(const char* sql);
  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt *begin_ = nullptr, *commit_ = nullptr, *upsert_ = nullptr, *delete_ = nullptr;  // apply()'s
};

// Orders and batches durable writes. Threading: submit() is called with the
// caller's state lock held, so sequence numbers follow state order; wait()
// is called after releasing it. One background thread applies everything
// submitted so far in a single transaction (group commit) and wakes waiters.
class DurableWriter {
 public:
  explicit DurableWriter(Store* store);
  ~DurableWriter();
  DurableWriter(const DurableWriter&) = delete;
  DurableWriter& operator=(const DurableWriter&) = delete;

  // Queues `changes`; returns their sequence number (0 when `changes` is
  // empty; callers that must see everything durable use last_submitted()).
  uint64_t submit(Changes changes);
  // The newest sequence number handed out (to wait for "everything so far").
  uint64_t last_submitted() const;
  // Blocks until every change up to `seq` is durable. Throws
  // cnx::CheckError if the database failed (the state is then unsafe).
  void wait(uint64_t seq);
  // Calls `done` once every change up to `seq` is durable: at once (on the
  // calling thread) when it already is, else on the writer thread right
  // after the transaction that made it durable. `done` receives "" or the
  // database error; it must be short and must not call submit()/wait().
  void when_durable(uint64_t seq, std::function<void(const std::string& error)> done);
  int64_t transactions() const;

 private:
  void run();
  Store* store_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::pair<uint64_t, Changes>> queue_;
  std::multimap<uint64_t, std::function<void(const std::string&)>> waiters_;  // seq -> callback
  uint64_t submitted_ = 0, committed_ = 0;
  int64_t transactions_ = 0;
  std::string error_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace cnx::coordinator
