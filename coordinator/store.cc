#include "coordinator/store.h"

#include <pthread.h>

#include <filesystem>
#include <vector>

#include "common/check.h"

namespace cnx::coordinator {

Store::Store(const std::string& path) : path_(path) {
  std::filesystem::path p(path);
  if (p.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(p.parent_path(), ec);
    CNX_CHECK(!ec, path, ": cannot create the folder of coordinator.state_db: ", ec.message());
  }
  int rc =
      sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    db_ = nullptr;
    CNX_CHECK(false, path, ": cannot open coordinator.state_db: ", msg);
  }
  sqlite3_busy_timeout(db_, 5000);
  try {
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    exec("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
  } catch (...) {
    // A file that is not a database fails here; the destructor will not run.
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

Store::~Store() {
  for (sqlite3_stmt* st : {begin_, commit_, upsert_, delete_}) sqlite3_finalize(st);
  if (db_) sqlite3_close(db_);
}

void Store::exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  CNX_CHECK(rc == SQLITE_OK, path_, ": sqlite '", sql, "' failed: ", msg);
}

std::map<std::string, std::string> Store::load() {
  std::map<std::string, std::string> rows;
  sqlite3_stmt* st = nullptr;
  CNX_CHECK(sqlite3_prepare_v2(db_, "SELECT key, value FROM state", -1, &st, nullptr) == SQLITE_OK, path_,
            ": sqlite prepare failed: ", sqlite3_errmsg(db_));
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    // A tampered file may hold NULLs (another schema; SQLite allows a NULL
    // TEXT primary key): refuse the row instead of reading through nullptr.
    const unsigned char* key = sqlite3_column_text(st, 0);
    const unsigned char* value = sqlite3_column_text(st, 1);
    if (!key || !value) {
      sqlite3_finalize(st);
      CNX_CHECK(false, path_, ": the state table holds a NULL ", key ? "value" : "key",
                " (a damaged or tampered database)");
    }
    rows[reinterpret_cast<const char*>(key)] = reinterpret_cast<const char*>(value);
  }
  sqlite3_finalize(st);
  CNX_CHECK(rc == SQLITE_DONE, path_, ": sqlite read failed: ", sqlite3_errmsg(db_));
  return rows;
}

void Store::apply(const Changes& changes) {
  if (changes.empty()) return;
  // Statements prepared once (the writer runs hundreds of transactions a
  // second under load; parsing SQL each time showed in the profile).
  auto prepare = [&](sqlite3_stmt** st, const char* sql) {
    if (!*st)
      CNX_CHECK(sqlite3_prepare_v2(db_, sql, -1, st, nullptr) == SQLITE_OK, path_,
                ": sqlite prepare failed: ", sqlite3_errmsg(db_));
  };
  prepare(&begin_, "BEGIN IMMEDIATE");
  prepare(&commit_, "COMMIT");
  prepare(&upsert_, "INSERT OR REPLACE INTO state (key, value) VALUES (?1, ?2)");
  prepare(&delete_, "DELETE FROM state WHERE key = ?1");
  auto step = [&](sqlite3_stmt* st, const char* what) {
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);
    CNX_CHECK(rc == SQLITE_DONE, path_, ": sqlite ", what, " failed: ", sqlite3_errmsg(db_));
  };
  step(begin_, "BEGIN");
  try {
    for (const auto& [key, value] : changes) {
      sqlite3_stmt* st = value ? upsert_ : delete_;
      sqlite3_reset(st);
      sqlite3_bind_text(st, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
      if (value) sqlite3_bind_text(st, 2, value->data(), static_cast<int>(value->size()), SQLITE_STATIC);
      const int rc = sqlite3_step(st);
      sqlite3_reset(st);
      sqlite3_clear_bindings(st);
      CNX_CHECK(rc == SQLITE_DONE, path_, ": sqlite write of '", key, "' failed: ", sqlite3_errmsg(db_));
    }
    step(commit_, "COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

DurableWriter::DurableWriter(Store* store)
    : store_(store), thread_([this] {
        pthread_setname_np(pthread_self(), "cnx-writer");
        run();
      }) {}

DurableWriter::~DurableWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

uint64_t DurableWriter::submit(Changes changes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (changes.empty()) return 0;
  queue_.emplace_back(++submitted_, std::move(changes));
  work_cv_.notify_one();
  return submitted_;
}

uint64_t DurableWriter::last_submitted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return submitted_;
}

int64_t DurableWriter::transactions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return transactions_;
}

void DurableWriter::wait(uint64_t seq) {
  if (seq == 0) return;
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return committed_ >= seq || !error_.empty(); });
  CNX_CHECK(error_.empty(), "coordinator state database failed: ", error_);
}

void DurableWriter::when_durable(uint64_t seq, std::function<void(const std::string&)> done) {
  std::string err;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.empty() && seq > committed_) {
      waiters_.emplace(seq, std::move(done));
      return;
    }
    err = error_;
  }
  done(err);
}

void DurableWriter::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty() && stop_) return;
    // Merge everything queued: later values of a key replace earlier ones.
    Changes merged;
    uint64_t upto = 0;
    while (!queue_.empty()) {
      for (auto& [k, v] : queue_.front().second) merged[k] = std::move(v);
      upto = queue_.front().first;
      queue_.pop_front();
    }
    lock.unlock();
    std::string err;
    try {
      store_->apply(merged);
    } catch (const std::exception& e) {
      err = e.what();
    }
    lock.lock();
    if (!err.empty())
      error_ = err;
    else {
      committed_ = upto;
      ++transactions_;
    }
    done_cv_.notify_all();
    // Callbacks run without the lock (they may call when_durable or last_submitted).
    std::vector<std::function<void(const std::string&)>> ready;
    auto end = error_.empty() ? waiters_.upper_bound(committed_) : waiters_.end();
    for (auto it = waiters_.begin(); it != end; ++it) ready.push_back(std::move(it->second));
    waiters_.erase(waiters_.begin(), end);
    const std::string error = error_;
    lock.unlock();
    for (auto& f : ready) f(error);
    lock.lock();
  }
}

}  // namespace cnx::coordinator
