// .pt files (model/tensor_file.h): the byte format, round trips in order,
// the {"model": {...}} nesting, and errors that name the file.
#include "model/tensor_file.h"

#include <gtest/gtest.h>
#include <torch/serialize.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "tests/model/test_util.h"

namespace cnx::model {
namespace {

using testing::TempDir;

NamedTensors sample() {
  return {{"z.weight", at::arange(6, at::kFloat).reshape({2, 3})},
          {"a.bias", at::tensor({1.5, -2.0}, at::kDouble)},
          {"m.count", at::tensor({int64_t{7}}, at::kLong)}};
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const WeightsError& e) {
    return e.what();
  }
  return "";
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(TensorFile, BytesAreTorchPickleSaveOfTheDict) {
  // Checkpoints and exported weights stay loadable by torch.load and
  // byte-identical to earlier builds: the bytes are those of
  // torch::pickle_save of a dict that alone holds detached tensors (the
  // pickler memoizes a tensor held elsewhere too, which changes the bytes).
  const NamedTensors t = sample();
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, x] : t) dict.insert(name, x.detach());
  EXPECT_EQ(pickle_tensors(t), torch::pickle_save(c10::IValue(dict)));
  EXPECT_EQ(pickle_tensors(t), pickle_tensors(t));
}

TEST(TensorFile, RoundTripKeepsOrderValuesAndDtypes) {
  TempDir dir;
  const NamedTensors t = sample();
  // A non-contiguous tensor is written contiguous.
  NamedTensors with_view = t;
  with_view.emplace_back("t.view", at::arange(6, at::kFloat).reshape({2, 3}).t());
  save_pt(dir.file("w.pt"), with_view);
  const NamedTensors back = read_pt(dir.file("w.pt"));
  ASSERT_EQ(back.size(), with_view.size());
  for (size_t i = 0; i < back.size(); ++i) {
    EXPECT_EQ(back[i].first, with_view[i].first);
    EXPECT_EQ(back[i].second.scalar_type(), with_view[i].second.scalar_type());
    EXPECT_TRUE(at::equal(back[i].second, with_view[i].second)) << back[i].first;
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("w.pt.tmp")));
}

TEST(TensorFile, NestedModelKeyIsUnwrapped) {
  TempDir dir;
  save_pt(dir.file("nested.pt"), sample(), "model");
  const NamedTensors back = read_pt(dir.file("nested.pt"));
  ASSERT_EQ(back.size(), 3u);
  EXPECT_EQ(back[0].first, "z.weight");
  // Another outer key is not a dict of tensors.
  write_bytes(dir.file("other.pt"), pickle_tensors(sample(), "state"));
  EXPECT_NE(error_of([&] { read_pt(dir.file("other.pt")); }).find("not str -> Tensor"), std::string::npos);
}

TEST(TensorFile, ErrorsNameTheFile) {
  TempDir dir;
  const std::string absent = dir.file("absent.pt");
  EXPECT_NE(error_of([&] { read_pt(absent); }).find(absent), std::string::npos);
  const std::vector<char> junk{'P', 'K', 3, 4, 'x', 'y'};
  EXPECT_NE(error_of([&] { unpickle_tensors(junk, "junk-origin"); }).find("'junk-origin' is not a .pt"),
            std::string::npos);
  write_bytes(dir.file("int.pt"), torch::pickle_save(c10::IValue(int64_t{3})));
  EXPECT_NE(error_of([&] { read_pt(dir.file("int.pt")); }).find("does not hold a dict of tensors"), std::string::npos);
  NamedTensors twice = sample();
  twice.push_back(twice.front());
  EXPECT_NE(error_of([&] { pickle_tensors(twice); }).find("duplicate tensor name 'z.weight'"), std::string::npos);
}

// Found by fuzz/pt_fuzz.cc (fuzz/corpus/pt/oom-unpickler-readbytes-4gib):
// a 1.7 KB .pt whose pickle announces a 4 GiB string made LibTorch's
// unpickler allocate and zero-fill 4 GiB before failing. It is refused
// before LibTorch reads it, naming the file and the opcode.
TEST(TensorFile, APickleAnnouncingMoreBytesThanItHoldsIsRefused) {
  const char* src = std::getenv("CNX_SOURCE_DIR");
  const std::string path = std::string(src ? src : ".") + "/fuzz/corpus/pt/oom-unpickler-readbytes-4gib";
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in.good()) << path;
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string err = error_of([&] { unpickle_tensors(bytes, "oom.pt"); });
  EXPECT_NE(err.find("oom.pt"), std::string::npos) << err;
  EXPECT_NE(err.find("data.pkl"), std::string::npos) << err;
  EXPECT_NE(err.find("announces"), std::string::npos) << err;
}

// Found by fuzz/pt_fuzz.cc in the campaign (fuzz/corpus/pt/
// regress-storage-larger-than-record): a pickle that declares a Half
// storage of 4 elements (8 bytes) over a 2-byte data record. LibTorch's
// unpickler sizes the storage from the pickle, so the tensor claimed 8 bytes
// of a 2-byte buffer and writing it back read past the allocation. It is
// refused, naming the tensor and both sizes.
TEST(TensorFile, AStorageLargerThanItsRecordIsRefused) {
  const char* src = std::getenv("CNX_SOURCE_DIR");
  const std::string path = std::string(src ? src : ".") + "/fuzz/corpus/pt/regress-storage-larger-than-record";
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in.good()) << path;
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string err = error_of([&] { unpickle_tensors(bytes, "short.pt"); });
  EXPECT_NE(err.find("short.pt"), std::string::npos) << err;
  EXPECT_NE(err.find("tensor 'c' declares a storage of 8 bytes over a record of 2 bytes"), std::string::npos) << err;
}

}  // namespace
}  // namespace cnx::model
