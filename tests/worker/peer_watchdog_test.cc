#include "worker/peer_watchdog.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "common/check.h"

namespace cnx::worker {
namespace {

TEST(PeerWatchdog, FiresOnceWhenACollectiveRunsPastTheTimeout) {
  std::atomic<double> in_collective{0.0};
  std::atomic<int> calls{0};
  std::promise<std::string> why;
  PeerWatchdog w(
      0.2, [&] { return in_collective.load(); },
      [&](const std::string& m) {
        if (calls.fetch_add(1) == 0) why.set_value(m);
      });
  in_collective = 0.15;  // a slow but healthy collective
  auto f = why.get_future();
  EXPECT_EQ(f.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);
  in_collective = 0.25;
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  const std::string m = f.get();
  EXPECT_NE(m.find("distributed.peer_timeout_s"), std::string::npos) << m;
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(calls.load(), 1);
}

TEST(PeerWatchdog, IdleRankNeverFires) {
  std::atomic<int> calls{0};
  {
    PeerWatchdog w(
        0.05, [] { return 0.0; }, [&](const std::string&) { calls++; });
    EXPECT_LE(w.poll_s(), 0.05);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(calls.load(), 0);
  EXPECT_THROW(PeerWatchdog(
                   0.0, [] { return 0.0; }, [](const std::string&) {}),
               CheckError);
}

}  // namespace
}  // namespace cnx::worker
