#include <gtest/gtest.h>

#include "common/check.h"
#include "coordinator/shard_index.h"

namespace cnx::coordinator {
namespace {

TEST(ShardIndex, ParsesTheCnxMakeShardsFormat) {
  const std::string sha(64, 'c');
  auto idx = parse_shard_index(R"({"version":1,"dataset":"fmnist","total_samples":7,"classes":["a"],
      "shards":[{"name":"train-000000.tar","samples":3,"bytes":100,"sha256":")" + sha + R"("},
                {"name":"train-000001.tar","samples":4,"bytes":120,"sha256":")" + sha + R"("}]})", "idx");
  ASSERT_EQ(idx.shards.size(), 2u);
  EXPECT_EQ(idx.shards[1].name, "train-000001.tar");
  EXPECT_EQ(idx.shards[1].samples, 4);
  EXPECT_EQ(idx.total_samples, 7);
}

TEST(ShardIndex, RejectsBadFieldsByName) {
  auto expect_error = [](const std::string& text, const std::string& needle) {
    try {
      parse_shard_index(text, "idx.json");
      FAIL() << "accepted: " << text;
    } catch (const CheckError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("{", "malformed");
  expect_error(R"({"version":2,"shards":[]})", "version");
  expect_error(R"({"version":1})", "shards");
  expect_error(R"({"version":1,"shards":[{"name":"a","samples":-1}]})", "shards[0].samples");
  expect_error(R"({"version":1,"shards":[{"name":"a","samples":1,"sha256":"xyz"}]})", "shards[0].sha256");
  expect_error(R"({"version":1,"total_samples":5,"shards":[{"name":"a","samples":1}]})", "total_samples");
}

}  // namespace
}  // namespace cnx::coordinator
