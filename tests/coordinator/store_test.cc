// The SQLite store and the group-committing writer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "common/check.h"
#include "coordinator/store.h"

namespace cnx::coordinator {
namespace {

namespace fs = std::filesystem;

TEST(Store, AppliesUpsertsAndDeletesDurably) {
  const fs::path dir = fs::temp_directory_path() / ("cnx_store_" + std::to_string(getpid()));
  fs::remove_all(dir);
  const std::string db = (dir / "sub" / "state.sqlite").string();
  {
    Store s(db);
    EXPECT_TRUE(s.load().empty());
    s.apply({{"a", "1"}, {"b", "2"}});
    s.apply({{"a", std::nullopt}, {"c", "3"}, {"b", "22"}});
  }
  Store again(db);  // a new connection sees the committed rows
  EXPECT_EQ(again.load(), (std::map<std::string, std::string>{{"b", "22"}, {"c", "3"}}));
  fs::remove_all(dir);
}

TEST(DurableWriter, OrdersAndGroupsConcurrentWrites) {
  const fs::path dir = fs::temp_directory_path() / ("cnx_writer_" + std::to_string(getpid()));
  fs::remove_all(dir);
  const std::string db = (dir / "state.sqlite").string();
  {
    Store s(db);
    DurableWriter w(&s);
    std::mutex state_mu;  // plays the service's state lock
    std::vector<std::thread> ts;
    for (int t = 0; t < 8; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < 50; ++i) {
          uint64_t seq;
          {
            std::lock_guard<std::mutex> lock(state_mu);
            seq = w.submit({{"k" + std::to_string(t), std::to_string(i)}, {"last", std::to_string(t * 1000 + i)}});
          }
          w.wait(seq);
        }
      });
    for (auto& th : ts) th.join();
    EXPECT_EQ(w.submit({}), 0u);
    EXPECT_LE(w.transactions(), 400);
    EXPECT_GE(w.transactions(), 1);
  }
  Store s(db);
  auto rows = s.load();
  for (int t = 0; t < 8; ++t) EXPECT_EQ(rows["k" + std::to_string(t)], "49") << "thread " << t;
  EXPECT_EQ(rows.size(), 9u);
  fs::remove_all(dir);
}

TEST(Store, UnwritableLocationIsAClearError) {
  try {
    Store s("/proc/cnx-no-such-dir/state.sqlite");
    FAIL() << "opened an impossible path";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("state_db"), std::string::npos) << e.what();
  }
}

// The reproducers of fuzz/corpus/state_store/regress-* (found by fuzzing and
// while writing fuzz/state_store_fuzz.cc): a file that is not a database
// threw from the constructor and leaked the connection (ASan: LeakSanitizer);
// a state table with a NULL key or value (another schema: SQLite allows a
// NULL TEXT primary key) made load() build a std::string from nullptr
// (std::logic_error for the key, SIGSEGV for the value).
std::string corpus_file(const std::string& name) {
  const char* src = std::getenv("CNX_SOURCE_DIR");
  const fs::path p = fs::path(src ? src : ".") / "fuzz/corpus/state_store" / name;
  std::ifstream in(p, std::ios::binary);
  EXPECT_TRUE(in.good()) << p;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string refusal_of_file(const std::string& bytes) {
  const fs::path dir = fs::temp_directory_path() / ("cnx_store_bad_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string db = (dir / "state.sqlite").string();
  std::ofstream(db, std::ios::binary) << bytes;
  std::string what;
  try {
    Store s(db);
    s.load();
  } catch (const CheckError& e) {
    what = e.what();
  }
  fs::remove_all(dir);
  return what;
}

TEST(Store, DamagedFilesAreRefusedWithClearErrors) {
  const std::string not_db = refusal_of_file(corpus_file("regress-leak-not-a-database"));
  EXPECT_NE(not_db.find("not a database"), std::string::npos) << not_db;
  const std::string null_key = refusal_of_file(corpus_file("regress-null-key"));
  EXPECT_NE(null_key.find("NULL key"), std::string::npos) << null_key;
  const std::string null_value = refusal_of_file(corpus_file("regress-null-value"));
  EXPECT_NE(null_value.find("NULL value"), std::string::npos) << null_value;
}

}  // namespace
}  // namespace cnx::coordinator
