// cnx-transform-bench (bench/data/transform_bench.cc) on bad input: a missing
// folder or list and a folder without JPEGs are usage errors (exit 2, one
// line naming the flag); unreadable, empty and undecodable files are skipped
// and counted, the rest is measured; nothing usable left is exit 1. Tiny
// images and --min-seconds 0: well under a second.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>

#include "data/image_codec.h"
#include "tests/data/data_fixtures.h"

namespace fs = std::filesystem;

namespace cnx::data {
namespace {

std::string g_tool;  // path of cnx-transform-bench (first program argument)

using testing::run;

bool has(const std::string& out, const std::string& needle) {
  return out.find(needle) != std::string::npos;
}

TEST(TransformBenchCli, SkipsAndCountsBadFilesAndRefusesBadArguments) {
  ASSERT_FALSE(g_tool.empty()) << "pass the cnx-transform-bench path as the first argument";
  const fs::path tmp = testing::temp_dir("transform_bench_cli");
  const std::string quick = " --reps 1 --min-seconds 0 --size 32";
  fs::create_directories(tmp / "set" / "sub");
  const auto jpg = encode_jpeg(testing::synth_image(48, 40, 3, 1), 90);
  testing::write_bytes(tmp / "set" / "a.jpg", jpg);
  testing::write_bytes(tmp / "set" / "sub" / "b.JPEG", encode_jpeg(testing::synth_image(40, 64, 3, 2), 90));
  testing::write_bytes(tmp / "set" / "cut.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + jpg.size() / 2));
  testing::write_bytes(tmp / "set" / "text.jpg", {'h', 'e', 'l', 'l', 'o'});
  testing::write_bytes(tmp / "set" / "empty.jpeg", {});
  testing::write_bytes(tmp / "set" / "notes.txt", {'x'});  // not a JPEG name: not listed

  auto [rc, out] = run(g_tool + " --dir " + (tmp / "set").string() + quick);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(has(out, "5 JPEG files, 3 skipped (1 unreadable, 2 do not decode), 2 used")) << out;
  EXPECT_TRUE(has(out, "skipped " + (tmp / "set" / "cut.jpg").string() + ": truncated_image")) << out;
  EXPECT_TRUE(has(out, "skipped " + (tmp / "set" / "text.jpg").string() + ": corrupt_image")) << out;
  EXPECT_TRUE(has(out, "result impl=cnx variant=dct set=set rep=0 images=2 ")) << out;
  EXPECT_TRUE(has(out, "result impl=cnx variant=full set=set rep=0 images=2 ")) << out;
  EXPECT_TRUE(has(out, "result impl=cnx variant=dct_crop set=set rep=0 images=2 ")) << out;
  EXPECT_TRUE(has(out, "result impl=cnx variant=crop set=set rep=0 images=2 ")) << out;

  // A list: relative names resolve against its folder; comments and blanks ignored.
  {
    std::ofstream l(tmp / "set" / "files.txt");
    l << "# two files\na.jpg\n\n" << (tmp / "set" / "sub" / "b.JPEG").string() << "\n";
  }
  std::tie(rc, out) = run(g_tool + " --list " + (tmp / "set" / "files.txt").string() + " --dct off" + quick);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(has(out, "2 JPEG files, 0 skipped")) << out;
  EXPECT_FALSE(has(out, "variant=dct")) << out;
  EXPECT_TRUE(has(out, "variant=crop ")) << out;
  std::tie(rc, out) = run(g_tool + " --list " + (tmp / "set" / "files.txt").string() + " --crop off" + quick);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_FALSE(has(out, "variant=dct_crop") || has(out, "variant=crop")) << out;
  EXPECT_TRUE(has(out, "variant=dct ")) << out;
  std::tie(rc, out) = run(g_tool + " --list " + (tmp / "set" / "files.txt").string() + " --crop maybe" + quick);
  EXPECT_EQ(rc, 2) << out;

  std::tie(rc, out) = run(g_tool + " --dir " + (tmp / "nope").string() + quick);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_TRUE(has(out, "--dir " + (tmp / "nope").string() + ": no such folder")) << out;
  std::tie(rc, out) = run(g_tool + " --dir " + (tmp / "set" / "sub" / "..").string() + " --list x" + quick);
  EXPECT_EQ(rc, 2) << out;
  std::tie(rc, out) = run(g_tool + " --list " + (tmp / "missing.txt").string() + quick);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_TRUE(has(out, "--list " + (tmp / "missing.txt").string() + ": cannot open")) << out;
  fs::create_directories(tmp / "none");
  testing::write_bytes(tmp / "none" / "a.png", {'x'});
  std::tie(rc, out) = run(g_tool + " --dir " + (tmp / "none").string() + quick);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_TRUE(has(out, "no JPEG files")) << out;
  fs::create_directories(tmp / "bad");
  testing::write_bytes(tmp / "bad" / "text.jpg", {'h', 'i'});
  std::tie(rc, out) = run(g_tool + " --dir " + (tmp / "bad").string() + quick);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, "no file of bad decodes")) << out;
  std::tie(rc, out) = run(g_tool + " --dir " + (tmp / "set").string() + " --dct sometimes" + quick);
  EXPECT_EQ(rc, 2) << out;
  fs::remove_all(tmp);
}

}  // namespace
}  // namespace cnx::data

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc > 1) cnx::data::g_tool = argv[1];
  return RUN_ALL_TESTS();
}
