// cnx-make-shards library, the inputs beyond ImageFolder: a flat folder of
// unlabelled images, WebDataset tars (repacked), images beside class
// folders (refused), and real corrupt files (truncated JPEG, PNG with a bad
// CRC, garbage behind a JPEG marker, zero bytes, text named .png): each is
// skipped, listed with its reason in the report and skipped.tsv, never packed.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "data/make_shards.h"
#include "data/shard_index.h"
#include "data/tar_io.h"
#include "tests/data/data_fixtures.h"

namespace fs = std::filesystem;

namespace cnx::data {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes jpeg(uint64_t seed, int w = 40, int h = 30) {
  return encode_jpeg(testing::synth_image(w, h, 3, seed), 90);
}
Bytes png(uint64_t seed, int w = 23, int h = 17) {
  return encode_png(testing::synth_image(w, h, 1, seed));
}

// The corrupt inputs every test below uses, by file name -> (bytes, expected reason prefix).
std::map<std::string, std::pair<Bytes, std::string>> corrupt_files() {
  std::map<std::string, std::pair<Bytes, std::string>> m;
  Bytes j = jpeg(91, 64, 48);
  m["truncated.jpg"] = {Bytes(j.begin(), j.begin() + static_cast<std::ptrdiff_t>(j.size() / 2)), "truncated_image"};
  Bytes p = png(92, 32, 32);
  // Flip one byte of the IDAT chunk's data: its CRC no longer matches.
  const auto idat = std::search(p.begin(), p.end(), std::begin("IDAT"), std::begin("IDAT") + 4);
  EXPECT_NE(idat, p.end());
  *(idat + 8) ^= 0x5A;
  m["bad_crc.png"] = {p, "corrupt_image"};
  Bytes g = {0xFF, 0xD8, 0xFF, 0xE0};
  SplitMix64 rng(7);
  for (int i = 0; i < 500; ++i) g.push_back(static_cast<uint8_t>(rng.below(256)));
  m["garbage.jpeg"] = {g, "corrupt_image"};
  m["empty.jpg"] = {Bytes(), "empty_file"};
  const std::string text = "this is not a picture\n";
  m["notes_named.png"] = {Bytes(text.begin(), text.end()), "not_an_image"};
  return m;
}

// key -> (ext -> bytes) of every sample of an index, in shard order; `keys` gets the order.
std::map<std::string, std::map<std::string, Bytes>> read_all(const fs::path& dir, const ShardIndex& idx,
                                                             std::vector<std::string>* keys = nullptr) {
  std::map<std::string, std::map<std::string, Bytes>> all;
  for (const auto& s : idx.shards) {
    TarSampleReader r((dir / s.name).string(), 1 << 24);
    while (auto smp = r.next()) {
      if (keys) keys->push_back(smp->key);
      for (auto& m : smp->members) all[smp->key][m.ext] = std::move(m.data);
    }
  }
  return all;
}

std::string slurp(const fs::path& p) {
  const Bytes b = testing::read_bytes(p);
  return std::string(b.begin(), b.end());
}

TEST(MakeShardsCheck, FormatFromBytesAndDecodeFailures) {
  std::string ext = "jpg";
  EXPECT_EQ(check_image(png(1), int64_t{1} << 26, &ext), "");
  EXPECT_EQ(ext, "png");  // a PNG named .jpg is stored as .png (the pipeline decodes by extension)
  EXPECT_EQ(check_image(jpeg(2), int64_t{1} << 26, &ext), "");
  EXPECT_EQ(ext, "jpg");
  for (const auto& [name, c] : corrupt_files()) {
    const std::string why = check_image(c.first, int64_t{1} << 26, &ext);
    EXPECT_EQ(why.rfind(c.second, 0), 0u) << name << ": " << why;
  }
  // Over the pixel bound (the pipeline would skip it at training time).
  EXPECT_EQ(check_image(jpeg(3, 40, 30), 1000, &ext).rfind("image_too_large", 0), 0u);
}

TEST(MakeShardsSources, FlatFolderUnlabelledRecursiveWithCorruptFiles) {
  const fs::path tmp = testing::temp_dir("make_shards_flat");
  std::multiset<std::string> good;  // sha256 of every good image
  int n = 0;
  for (int i = 0; i < 9; ++i) {
    const Bytes b = i % 3 == 0 ? png(100 + i) : jpeg(100 + i);
    const fs::path p = tmp / "src" / (i < 4 ? "" : (i < 7 ? "a" : "a/b")) /
                       ("img" + std::to_string(i) + (i % 3 == 0 ? ".png" : (i == 5 ? ".JPEG" : ".jpg")));
    testing::write_bytes(p, b);
    good.insert(sha256_hex(b.data(), b.size()));
    ++n;
  }
  const Bytes renamed = png(200);  // PNG bytes behind a .jpg name: packed, as .png
  testing::write_bytes(tmp / "src" / "a" / "really_png.jpg", renamed);
  good.insert(sha256_hex(renamed.data(), renamed.size()));
  ++n;
  const auto bad = corrupt_files();
  for (const auto& [name, c] : bad) testing::write_bytes(tmp / "src" / "a" / "b" / name, c.first);
  testing::write_bytes(tmp / "src" / "README.txt", {'h', 'i'});

  MakeShardsOptions opt;
  opt.out_dir = (tmp / "out").string();
  opt.samples_per_shard = 4;
  opt.threads = 3;
  MakeShardsReport rep;
  const ShardIndex idx = make_shards_from_images((tmp / "src").string(), opt, &rep);
  EXPECT_EQ(idx.total_samples, n);
  EXPECT_TRUE(idx.classes.empty());
  EXPECT_EQ(idx.dataset, "src");
  EXPECT_EQ(rep.written, n);
  EXPECT_EQ(rep.inputs, n + static_cast<int64_t>(bad.size()));
  EXPECT_EQ(rep.extension_fixed, 1);
  ASSERT_EQ(rep.bad.size(), bad.size());
  for (const auto& s : rep.bad) {
    const std::string name = fs::path(s.origin).filename().string();
    ASSERT_TRUE(bad.count(name)) << s.origin;
    EXPECT_EQ(s.reason.rfind(bad.at(name).second, 0), 0u) << name << ": " << s.reason;
  }
  ASSERT_EQ(rep.not_images.size(), 1u);
  EXPECT_NE(rep.not_images[0].origin.find("README.txt"), std::string::npos);

  std::multiset<std::string> packed;
  int pngs = 0;
  for (auto& [key, members] : read_all(tmp / "out", idx)) {
    ASSERT_EQ(members.size(), 1u) << key << ": unlabelled samples carry no .cls";
    const auto& [ext, b] = *members.begin();
    pngs += ext == "png";
    packed.insert(sha256_hex(b.data(), b.size()));
  }
  EXPECT_EQ(packed, good);
  EXPECT_EQ(pngs, 4);  // img0, img3, img6 and really_png.jpg

  // skipped.tsv: one "reason<TAB>path" line per skipped or ignored file.
  const std::string tsv = slurp(tmp / "out" / "skipped.tsv");
  EXPECT_EQ(static_cast<size_t>(std::count(tsv.begin(), tsv.end(), '\n')), bad.size() + 1) << tsv;
  for (const auto& [name, c] : bad) EXPECT_NE(tsv.find(c.second), std::string::npos) << tsv;
  for (const auto& [name, c] : bad)
    EXPECT_NE(tsv.find("\t" + (tmp / "src" / "a" / "b" / name).string() + "\n"), std::string::npos) << tsv;

  // A limit counts packed samples: skipped ones are replaced by the next.
  opt.out_dir = (tmp / "out_limit").string();
  opt.limit = n - 1;
  const ShardIndex lim = make_shards_from_images((tmp / "src").string(), opt, &rep);
  EXPECT_EQ(lim.total_samples, n - 1);
  EXPECT_EQ(rep.written, n - 1);

  // Nothing decodable at all: an error, not an empty index.
  const fs::path only_bad = tmp / "only_bad";
  for (const auto& [name, c] : bad) testing::write_bytes(only_bad / name, c.first);
  opt.out_dir = (tmp / "out_bad").string();
  opt.limit = 0;
  try {
    make_shards_from_images(only_bad.string(), opt);
    FAIL() << "expected an error";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("no image could be packed"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_shards_from_images((tmp / "nope").string(), opt), DataError);
  fs::remove_all(tmp);
}

TEST(MakeShardsSources, ImageFolderRefusesLooseImagesAndSkipsCorruptOnes) {
  const fs::path tmp = testing::temp_dir("make_shards_imagefolder_bad");
  const int n = testing::make_image_folder(tmp / "src", 2, 4);
  const auto bad = corrupt_files();
  testing::write_bytes(tmp / "src" / "class_1" / "truncated.jpg", bad.at("truncated.jpg").first);
  testing::write_bytes(tmp / "src" / "class_0" / "bad_crc.png", bad.at("bad_crc.png").first);
  testing::write_bytes(tmp / "src" / "LICENSE", {'x'});
  MakeShardsOptions opt;
  opt.out_dir = (tmp / "out").string();
  MakeShardsReport rep;
  const ShardIndex idx = make_shards_from_folder((tmp / "src").string(), opt, &rep);
  EXPECT_EQ(idx.total_samples, n);
  EXPECT_EQ(idx.classes, (std::vector<std::string>{"class_0", "class_1"}));
  ASSERT_EQ(rep.bad.size(), 2u);
  EXPECT_EQ(rep.not_images.size(), 1u);  // LICENSE, beside the class folders
  for (auto& [key, members] : read_all(tmp / "out", idx)) EXPECT_TRUE(members.count("cls")) << key;

  // An image beside the class folders would have no class: refused, naming it, nothing written.
  testing::write_bytes(tmp / "src" / "stray.jpg", jpeg(5));
  opt.out_dir = (tmp / "out2").string();
  try {
    make_shards_from_folder((tmp / "src").string(), opt);
    FAIL() << "expected a refusal";
  } catch (const DataError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("stray.jpg"), std::string::npos) << what;
    EXPECT_NE(what.find("--source images"), std::string::npos) << what;
  }
  EXPECT_FALSE(fs::exists(tmp / "out2" / "index.json"));
  // The same tree as unlabelled images takes everything, the stray one included.
  const ShardIndex flat = make_shards_from_images((tmp / "src").string(), opt);
  EXPECT_EQ(flat.total_samples, n + 1);
  fs::remove_all(tmp);
}

TEST(MakeShardsSources, WebDatasetTarsRepackedAndChecked) {
  const fs::path tmp = testing::temp_dir("make_shards_tars");
  // Our own output as input: repacking in order reproduces the shards byte for byte.
  const int n = testing::make_image_folder(tmp / "src", 3, 5);
  MakeShardsOptions opt;
  opt.out_dir = (tmp / "a").string();
  opt.samples_per_shard = 4;
  const ShardIndex a = make_shards_from_folder((tmp / "src").string(), opt);
  testing::write_bytes(tmp / "a" / "index.json.bak", {'{'});  // not a tar: ignored, reported
  opt.out_dir = (tmp / "b").string();
  MakeShardsReport rep;
  const ShardIndex b = make_shards_from_tars((tmp / "a").string(), opt, &rep);
  EXPECT_EQ(b.total_samples, n);
  ASSERT_EQ(b.shards.size(), a.shards.size());
  for (size_t i = 0; i < a.shards.size(); ++i) EXPECT_EQ(b.shards[i].sha256, a.shards[i].sha256) << i;
  EXPECT_TRUE(rep.bad.empty());
  EXPECT_EQ(rep.not_images.size(), 2u);  // index.json and index.json.bak

  // Hand-made WebDataset tars: keys with folders, .jpeg, extra members, a bad
  // label, a sample without image, corrupt images; and one tar cut short.
  const auto bad = corrupt_files();
  const Bytes j1 = jpeg(11), j2 = jpeg(12), p3 = png(13), j4 = jpeg(14), j5 = jpeg(15);
  auto cls = [](const std::string& s) { return Bytes(s.begin(), s.end()); };
  fs::create_directories(tmp / "wds" / "part");
  testing::write_shard(tmp / "wds", "x-000.tar",
                       {{"dir/s1.cls", cls("3\n")},
                        {"dir/s1.jpeg", j1},
                        {"dir/s1.json", cls("{}")},
                        {"s2.cls", cls("1")},
                        {"s2.jpg", bad.at("truncated.jpg").first},
                        {"s3.cls", cls("0")},
                        {"s3.png", p3},
                        {"s4.cls", cls("-1")},
                        {"s4.jpg", j2},
                        {"s5.cls", cls("2")},
                        {"s5.txt", cls("caption")}},
                       5);
  testing::write_shard(tmp / "wds" / "part", "y-000.tar",
                       {{"t1.jpg", j4}, {"t2.cls", cls("4")}, {"t2.png", bad.at("bad_crc.png").first}}, 2);
  testing::write_shard(tmp / "wds", "z-000.tar",
                       {{"u1.cls", cls("5")}, {"u1.jpg", j5}, {"u2.cls", cls("6")}, {"u2.jpg", jpeg(16, 400, 300)}}, 2);
  const fs::path z = tmp / "wds" / "z-000.tar";
  // Cut inside u2.jpg's data: after u1.cls, u1.jpg, u2.cls and u2.jpg's header.
  const int64_t cut = 2 * TarWriter::member_bytes(1) + TarWriter::member_bytes(j5.size()) + 512 + 600;
  ASSERT_GT(static_cast<int64_t>(fs::file_size(z)), cut + 2048);
  fs::resize_file(z, static_cast<uintmax_t>(cut));
  opt.out_dir = (tmp / "c").string();
  const ShardIndex c = make_shards_from_tars((tmp / "wds").string(), opt, &rep);
  // Packed, in input order: dir/s1 (3), s3 (0), u1 (5). t1 has no label while others do.
  std::vector<std::string> keys;
  auto all = read_all(tmp / "c", c, &keys);
  ASSERT_EQ(c.total_samples, 3) << c.total_samples;
  EXPECT_TRUE(c.classes.empty());
  const std::vector<std::pair<Bytes, std::string>> want = {{j1, "3"}, {p3, "0"}, {j5, "5"}};
  for (size_t i = 0; i < want.size(); ++i) {
    auto& m = all[keys[i]];
    EXPECT_EQ(std::string(m["cls"].begin(), m["cls"].end()), want[i].second) << i;
    EXPECT_EQ(m.count("jpg") ? m["jpg"] : m["png"], want[i].first) << i;
  }
  std::map<std::string, std::string> why;
  for (const auto& s : rep.bad) why[s.origin.substr(s.origin.rfind('/') + 1)] = s.reason;
  EXPECT_EQ(why["x-000.tar:s2"].rfind("truncated_image", 0), 0u) << why["x-000.tar:s2"];
  EXPECT_NE(why["x-000.tar:s4"].find("bad .cls"), std::string::npos);
  EXPECT_NE(why["x-000.tar:s5"].find("no .jpg/.jpeg/.png member"), std::string::npos);
  EXPECT_NE(why["y-000.tar:t1"].find("no .cls label"), std::string::npos);
  EXPECT_EQ(why["y-000.tar:t2"].rfind("corrupt_image", 0), 0u) << why["y-000.tar:t2"];
  EXPECT_EQ(why["z-000.tar"].rfind("broken_tar", 0), 0u) << why["z-000.tar"];
  EXPECT_EQ(rep.bad.size(), 6u);
  ASSERT_EQ(rep.not_images.size(), 1u);  // dir/s1.json
  EXPECT_NE(rep.not_images[0].origin.find("dir/s1.json"), std::string::npos);
  EXPECT_TRUE(fs::exists(tmp / "c" / "skipped.tsv"));

  // Unlabelled tars stay unlabelled; a single .tar file is an input too.
  fs::create_directories(tmp / "plain");
  testing::write_shard(tmp / "plain", "p.tar", {{"k1.jpg", j1}, {"k2.png", p3}}, 2);
  opt.out_dir = (tmp / "d").string();
  const ShardIndex d = make_shards_from_tars((tmp / "plain" / "p.tar").string(), opt, &rep);
  EXPECT_EQ(d.total_samples, 2);
  for (auto& [key, members] : read_all(tmp / "d", d)) EXPECT_FALSE(members.count("cls")) << key;
  EXPECT_FALSE(fs::exists(tmp / "d" / "skipped.tsv"));
  EXPECT_THROW(make_shards_from_tars((tmp / "src").string(), opt), DataError);  // no .tar in there
  // Repacking into the input's own folder would delete the input (--force): refused, input intact.
  opt.out_dir = (tmp / "a").string();
  opt.force = true;
  EXPECT_THROW(make_shards_from_tars((tmp / "a").string(), opt), DataError);
  EXPECT_EQ(sha256_file((tmp / "a" / a.shards[0].name).string()), a.shards[0].sha256);
  fs::remove_all(tmp);
}

}  // namespace
}  // namespace cnx::data
