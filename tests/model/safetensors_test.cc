// safetensors reader/writer: dtypes from the Python fixture, round trips,
// every documented rejection, and a bounded fuzz of hostile headers.
#include "model/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>
#include <string>

#include "tests/model/test_util.h"

namespace cnx::model {
namespace {

using testing::fixture_path;
using testing::TempDir;

// 8-byte LE length + header text + data.
std::string make_file(const std::string& header, const std::string& data) {
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

std::string error_of(const std::string& bytes) {
  try {
    parse_safetensors(bytes.data(), bytes.size(), "test.safetensors");
  } catch (const WeightsError& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(Safetensors, ReadsEveryDtypeWrittenByPython) {
  auto f = read_safetensors(fixture_path("dtypes.safetensors"));
  EXPECT_EQ(f.metadata.at("made_by"), "make_fixtures.py");
  for (const char* name : {"f64", "f32", "f16", "bf16", "i64", "i32", "i16", "i8", "u8", "bool", "scalar", "empty"}) {
    const at::Tensor& t = f.at(name);
    const at::Tensor& e = f.at(std::string("expect_") + name);
    EXPECT_EQ(t.sizes(), e.sizes()) << name;
    EXPECT_TRUE(at::equal(t.to(at::kDouble), e)) << name;
  }
  EXPECT_EQ(f.at("bf16").scalar_type(), at::kBFloat16);
  EXPECT_EQ(f.at("f16").scalar_type(), at::kHalf);
  EXPECT_EQ(f.at("scalar").dim(), 0);
  EXPECT_THROW(f.at("nope"), WeightsError);
}

TEST(Safetensors, RoundTripIsBitExact) {
  NamedTensors in = {{"a", at::randn({3, 4})},
                     {"b.c", at::randn({2, 2}, at::kDouble)},
                     {"h", at::randn({5}).to(at::kHalf)},
                     {"bf", at::randn({7}).to(at::kBFloat16)},
                     {"i", at::arange(10, at::kLong)},
                     {"z", at::zeros({0, 3})},
                     {"s", at::scalar_tensor(2.5)},
                     {"t", at::randn({4, 3}).t()}};  // non-contiguous
  TempDir dir;
  write_safetensors(dir.file("x.safetensors"), in, {{"k", "v"}});
  auto out = read_safetensors(dir.file("x.safetensors"));
  ASSERT_EQ(out.tensors.size(), in.size());
  EXPECT_EQ(out.metadata.at("k"), "v");
  for (const auto& [name, t] : in) {
    EXPECT_EQ(out.at(name).scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(out.at(name), t)) << name;
  }
  // The same bytes through the in-memory parser; header padded to 8.
  const std::string bytes = serialize_safetensors(in);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_EQ(parse_safetensors(bytes.data(), bytes.size(), "mem").tensors.size(), in.size());
}

TEST(Safetensors, WriterRejectsBadInput) {
  EXPECT_THROW(serialize_safetensors({{"a", at::zeros({1})}, {"a", at::zeros({1})}}), WeightsError);
  EXPECT_THROW(serialize_safetensors({{"", at::zeros({1})}}), WeightsError);
  EXPECT_THROW(serialize_safetensors({{"c", at::zeros({1}, at::kComplexFloat)}}), WeightsError);
}

struct BadCase {
  const char* what;
  std::string bytes;
  const char* message;
};

std::vector<BadCase> bad_cases() {
  const std::string f32x2(8, '\0');
  auto one = [](const std::string& entry) { return std::string("{\"t\":") + entry + "}"; };
  std::string deep(40, '[');
  return {
      {"empty file", "", "truncated"},
      {"5 bytes", "abcde", "truncated"},
      {"header length past the end", make_file("{}        ", "").substr(0, 8) + "{}", "runs past the end of the file"},
      {"huge header length", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}", "exceeds the 100 MB limit"},
      {"header not JSON", make_file("{not json", ""), "not valid JSON"},
      {"header not an object", make_file("[1,2]", ""), "must be a JSON object"},
      {"data offsets past the data (truncated file)",
       make_file(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), "1234"), "out of range"},
      {"overlapping tensors",
       make_file(
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           f32x2),
       "overlaps"},
      {"gap between tensors", make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32x2),
       "gap of 4 bytes"},
      {"trailing bytes", make_file(one(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})"), f32x2),
       "4 bytes after the last tensor"},
      {"size does not match shape", make_file(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), f32x2),
       "needs 12"},
      {"unsupported dtype", make_file(one(R"({"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]})"), f32x2),
       "unsupported dtype 'F8_E4M3'"},
      {"duplicate key",
       make_file(
           R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           f32x2),
       "duplicate key 'a'"},
      {"duplicate field", make_file(one(R"({"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]})"), f32x2),
       "duplicate key 'dtype'"},
      {"negative dim", make_file(one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), f32x2),
       "non-negative integer"},
      {"fractional offset", make_file(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8.0]})"), f32x2),
       "non-negative integer"},
      {"shape overflow",
       make_file(one(R"({"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]})"), f32x2),
       "overflows"},
      {"zero-size tensor with overflowing dims",
       make_file(one(R"({"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]})"), ""), "overflows"},
      {"end before begin", make_file(one(R"({"dtype":"F32","shape":[0],"data_offsets":[8,0]})"), f32x2), "end < begin"},
      {"unknown field", make_file(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1})"), f32x2),
       "unknown field 'x'"},
      {"missing field", make_file(one(R"({"dtype":"F32","shape":[2]})"), f32x2), "needs dtype, shape and data_offsets"},
      {"deep nesting", make_file("{\"a\":" + deep, ""), "nests deeper"},
      {"metadata not strings", make_file(R"({"__metadata__":{"a":1}})", ""), "__metadata__['a'] must be a string"},
      {"bool byte not 0/1",
       make_file(one(R"({"dtype":"BOOL","shape":[2],"data_offsets":[0,2]})"), std::string("\x01\x02", 2)),
       "is not 0/1"},
      {"empty name", make_file(R"({"":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f32x2), "empty tensor name"},
  };
}

// A header of n zero-byte entries "t0".."t<n-1>" (plus `extra` entries).
std::string many_empty_entries(int n, const std::string& extra = "") {
  std::string h = "{";
  for (int i = 0; i < n; ++i) {
    h += (i ? ",\"t" : "\"t") + std::to_string(i) + R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})";
  }
  return h + extra + "}";
}

// Duplicate-key checking must be linear in the number of entries: the
// rejected implementation rescanned the whole root object whenever an entry
// closed (n^2 / 2 = 5e9 steps here, far beyond this test's timeout).
TEST(Safetensors, HundredThousandEmptyEntriesParseAndDuplicatesAreFound) {
  constexpr int kEntries = 100000;
  const std::string file = make_file(many_empty_entries(kEntries), "");
  const SafetensorsData d = parse_safetensors(file.data(), file.size(), "many.safetensors");
  ASSERT_EQ(d.tensors.size(), static_cast<size_t>(kEntries));
  EXPECT_EQ(d.tensors.front().second.numel(), 0);

  const std::string dup =
      make_file(many_empty_entries(kEntries, R"(,"t7":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})"), "");
  EXPECT_NE(error_of(dup).find("duplicate key 't7'"), std::string::npos) << error_of(dup);
}

TEST(Safetensors, RejectsCorruptFilesWithClearMessages) {
  for (const auto& c : bad_cases()) {
    const std::string err = error_of(c.bytes);
    EXPECT_NE(err, "<no error>") << c.what;
    EXPECT_NE(err.find("test.safetensors"), std::string::npos) << c.what << ": " << err;
    EXPECT_NE(err.find(c.message), std::string::npos)
        << c.what << ": got '" << err << "', expected '" << c.message << "'";
  }
}

TEST(Safetensors, RejectsCorruptFilesOnDisk) {
  TempDir dir;
  for (const auto& c : bad_cases()) {
    const std::string path = dir.file("bad.safetensors");
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(c.bytes.data(), static_cast<std::streamsize>(c.bytes.size()));
    }
    try {
      read_safetensors(path);
      ADD_FAILURE() << c.what << ": no error";
    } catch (const WeightsError& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << c.what << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << c.what;
    }
  }
  try {
    read_safetensors(dir.file("missing.safetensors"));
    ADD_FAILURE() << "no error for a missing file";
  } catch (const WeightsError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.safetensors"), std::string::npos);
  }
}

TEST(Safetensors, TruncatingAValidFileAnywhereIsRejected) {
  const std::string good = serialize_safetensors({{"w", at::randn({4, 4})}, {"b", at::randn({4})}});
  ASSERT_NO_THROW(parse_safetensors(good.data(), good.size(), "good"));
  for (size_t len = 0; len < good.size(); ++len) {
    EXPECT_THROW(parse_safetensors(good.data(), len, "cut"), WeightsError) << "length " << len;
  }
}

// Random and mutated headers: every input must either parse into tensors that
// exactly tile the data block, or throw WeightsError — nothing else. Built
// with -DCNX_ASAN=ON this also runs under AddressSanitizer.
TEST(Safetensors, FuzzedHeadersNeverCrash) {
  std::mt19937_64 rng(20231127);
  const std::string base = serialize_safetensors({{"a", at::randn({3, 2})},
                                                  {"b", at::ones({2}, at::kHalf)},
                                                  {"c", at::zeros({0})},
                                                  {"d", at::arange(3, at::kLong)}},
                                                 {{"format", "pt"}});
  const char* tokens[] = {"{",
                          "}",
                          "[",
                          "]",
                          ",",
                          ":",
                          "\"",
                          "\"dtype\"",
                          "\"F32\"",
                          "\"BOOL\"",
                          "\"shape\"",
                          "\"data_offsets\"",
                          "0",
                          "4",
                          "18446744073709551615",
                          "-1",
                          "1e9",
                          "null",
                          "true",
                          "\"__metadata__\"",
                          "\\u0000",
                          "\xff",
                          " "};
  int parsed = 0, rejected = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string bytes = base;
    const int mode = static_cast<int>(rng() % 5);
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    if (mode == 0) {  // flip bytes anywhere in the header
      for (int k = 0, m = 1 + static_cast<int>(rng() % 4); k < m; ++k) bytes[8 + rng() % n] = static_cast<char>(rng());
    } else if (mode == 1) {  // splice JSON-ish tokens into the header, fix the length
      std::string header = bytes.substr(8, n);
      for (int k = 0, m = 1 + static_cast<int>(rng() % 3); k < m; ++k) {
        header.insert(rng() % (header.size() + 1), tokens[rng() % (sizeof(tokens) / sizeof(tokens[0]))]);
      }
      bytes = make_file(header, bytes.substr(8 + n));
    } else if (mode == 2) {  // random length field
      uint64_t len = rng() % 3 == 0 ? rng() : rng() % (bytes.size() + 16);
      for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((len >> (8 * i)) & 0xff);
    } else if (mode == 3) {  // random digits rewritten
      for (size_t i = 8; i < 8 + n; ++i) {
        if (bytes[i] >= '0' && bytes[i] <= '9' && rng() % 4 == 0) bytes[i] = static_cast<char>('0' + rng() % 10);
      }
      if (rng() % 2) bytes.resize(rng() % (bytes.size() + 1));
    } else {  // synthetic header with random entries
      std::string header = "{";
      uint64_t off = 0;
      const int entries = static_cast<int>(rng() % 4);
      for (int e = 0; e < entries; ++e) {
        const uint64_t len = rng() % 12;
        const uint64_t begin = rng() % 3 == 0 ? rng() % 40 : off;
        header += (e ? "," : "") + std::string("\"t") + std::to_string(e) + "\":{\"dtype\":\"" +
                  (rng() % 2 ? "U8" : "F16") + "\",\"shape\":[" + std::to_string(len) + "],\"data_offsets\":[" +
                  std::to_string(begin) + "," + std::to_string(begin + len * (1 + rng() % 2)) + "]}";
        off = begin + len;
      }
      header += "}";
      bytes = make_file(header, std::string(rng() % 48, '\x01'));
    }
    try {
      auto f = parse_safetensors(bytes.data(), bytes.size(), "fuzz");
      uint64_t total = 0;
      for (const auto& [name, t] : f.tensors) total += static_cast<uint64_t>(t.numel()) * t.element_size();
      std::memcpy(&n, bytes.data(), 8);
      EXPECT_EQ(total, bytes.size() - 8 - n) << "iteration " << iter;
      ++parsed;
    } catch (const WeightsError&) {
      ++rejected;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "iteration " << iter << " threw a non-WeightsError: " << e.what();
    }
  }
  EXPECT_GT(rejected, 1000);
  EXPECT_GT(parsed, 10);  // harmless mutations (e.g. in padding or metadata) still parse
}

}  // namespace
}  // namespace cnx::model
