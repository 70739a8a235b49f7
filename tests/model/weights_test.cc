// Weight import/export: namings, strict loading errors, prefixes,
// encoder-only files, round trips (.safetensors and .pt, read back by Python).
#include "model/weights.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>

#include "tests/model/test_util.h"

namespace cnx::model {
namespace {

using testing::fixture_path;
using testing::TempDir;

ConvNeXtV2Options custom_options(int64_t classes = 10) {
  ConvNeXtV2Options o;
  o.depths = {1, 1, 2, 1};
  o.dims = {8, 16, 24, 32};
  o.in_chans = 1;
  o.num_classes = classes;
  return o;
}

NamedTensors fixture_tensors() {
  return read_safetensors(fixture_path("custom_ref.safetensors")).tensors;
}

void expect_same_params(ConvNeXtV2Impl& a, ConvNeXtV2Impl& b) {
  auto pa = a.named_parameters();
  auto pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
}

std::string load_error(ConvNeXtV2Impl& model, const NamedTensors& t, const LoadOptions& o = {}) {
  try {
    load_state_dict(model, t, o, "w.safetensors");
  } catch (const WeightsError& e) {
    return e.what();
  }
  return "<no error>";
}

bool has(const std::string& s, const std::string& sub) {
  return s.find(sub) != std::string::npos;
}

TEST(Naming, TranslatesBothWaysForEveryParameter) {
  ConvNeXtV2 model(variant_options("atto"));
  for (const auto& p : model->named_parameters()) {
    auto timm = reference_to_timm(p.key());
    ASSERT_TRUE(timm.has_value()) << p.key();
    EXPECT_EQ(timm_to_reference(*timm).value_or("<none>"), p.key());
    EXPECT_FALSE(timm_to_reference(p.key()).has_value()) << p.key() << " is ambiguous";
  }
  EXPECT_EQ(*reference_to_timm("downsample_layers.0.0.weight"), "stem.0.weight");
  EXPECT_EQ(*reference_to_timm("downsample_layers.2.1.bias"), "stages.2.downsample.1.bias");
  EXPECT_EQ(*reference_to_timm("stages.3.1.grn.gamma"), "stages.3.blocks.1.mlp.grn.weight");
  EXPECT_EQ(*reference_to_timm("stages.0.0.pwconv2.weight"), "stages.0.blocks.0.mlp.fc2.weight");
  EXPECT_EQ(*reference_to_timm("stages.1.0.dwconv.bias"), "stages.1.blocks.0.conv_dw.bias");
  EXPECT_EQ(*reference_to_timm("norm.weight"), "head.norm.weight");
  EXPECT_EQ(*reference_to_timm("head.bias"), "head.fc.bias");
  EXPECT_FALSE(timm_to_reference("stages.0.downsample.0.weight").has_value());  // stage 0 has none
  EXPECT_FALSE(reference_to_timm("mask_token").has_value());
  EXPECT_EQ(parse_naming("timm"), Naming::kTimm);
  EXPECT_THROW(parse_naming("hf"), std::invalid_argument);
}

TEST(Weights, DetectsNaming) {
  EXPECT_EQ(detect_naming({"stem.0.weight", "x"}, "f"), Naming::kTimm);
  EXPECT_EQ(detect_naming({"downsample_layers.0.0.weight"}, "f"), Naming::kReference);
  try {
    detect_naming({"stem.0.weight", "norm.bias"}, "f");
    FAIL();
  } catch (const WeightsError& e) {
    EXPECT_TRUE(has(e.what(), "mixes reference names")) << e.what();
  }
  try {
    detect_naming({"encoder.stem.0.weight"}, "f");
    FAIL();
  } catch (const WeightsError& e) {
    EXPECT_TRUE(has(e.what(), "no ConvNeXt V2 keys")) << e.what();
    EXPECT_TRUE(has(e.what(), "encoder.stem.0.weight")) << e.what();
  }
}

TEST(Weights, ExportImportRoundTripIsIdentical) {
  torch::manual_seed(1);
  ConvNeXtV2 src(custom_options());
  {
    torch::NoGradGuard g;
    for (auto& p : src->parameters()) p.normal_();
  }
  TempDir dir;
  for (Naming naming : {Naming::kReference, Naming::kTimm}) {
    for (const char* ext : {".safetensors", ".pt"}) {
      const std::string path = dir.file("w_" + to_string(naming) + ext);
      save_weights(*src, path, naming);
      ConvNeXtV2 dst(custom_options());
      auto report = load_weights(*dst, path);
      EXPECT_EQ(report.naming, naming) << path;
      EXPECT_EQ(report.loaded.size(), src->named_parameters().size());
      expect_same_params(*src, *dst);
    }
  }
  auto timm = export_state_dict(*src, Naming::kTimm);
  bool saw_grn = false;
  for (const auto& [name, t] : timm) {
    if (name == "stages.2.blocks.1.mlp.grn.weight") {
      saw_grn = true;
      EXPECT_EQ(t.sizes(), (std::vector<int64_t>{96}));
    }
  }
  EXPECT_TRUE(saw_grn);
}

TEST(Weights, PtFileIsReadByPythonTorchLoad) {
  const char* py = "/usr/bin/python3";
  if (std::system((std::string(py) + " -c 'import torch' >/dev/null 2>&1").c_str()) != 0) {
    GTEST_SKIP() << "python3 with torch not available";
  }
  torch::manual_seed(2);
  ConvNeXtV2 model(custom_options());
  TempDir dir;
  save_weights(*model, dir.file("w.pt"));
  save_weights(*model, dir.file("w.safetensors"));
  const std::string cmd =
      std::string(py) + " " + fixture_path("check_pt.py") + " " + dir.file("w.pt") + " " + dir.file("w.safetensors");
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  // Nested as the reference's checkpoints: torch.load(path)["model"].
  save_weights(*model, dir.file("nested.pt"), Naming::kReference, {}, "model");
  const std::string nested = std::string(py) + " " + fixture_path("check_pt.py") + " " + dir.file("nested.pt") + " " +
                             dir.file("w.safetensors") + " model";
  EXPECT_EQ(std::system(nested.c_str()), 0) << nested;
  ConvNeXtV2 back(custom_options());
  load_weights(*back, dir.file("nested.pt"));
  expect_same_params(*model, *back);
}

TEST(Weights, StrictLoadListsMissingUnexpectedAndWrongShapeTogether) {
  auto t = fixture_tensors();
  NamedTensors edited;
  for (auto& [n, v] : t) {
    if (n == "stages.2.1.grn.beta") continue;                    // missing
    if (n == "stages.0.0.dwconv.weight") v = v.narrow(2, 0, 5);  // wrong shape
    edited.emplace_back(n, v);
  }
  edited.emplace_back("stages.9.0.norm.weight", torch::zeros({4}));  // unexpected
  edited.emplace_back("extra_thing", torch::zeros({4}));             // unexpected
  ConvNeXtV2 model(custom_options());
  auto before = export_state_dict(*model);
  const std::string err = load_error(*model, edited);
  EXPECT_TRUE(has(err, "w.safetensors")) << err;
  EXPECT_TRUE(has(err, "4 problem(s)")) << err;
  EXPECT_TRUE(has(err, "missing in file (1):\n    stages.2.1.grn.beta")) << err;
  EXPECT_TRUE(has(err, "unexpected in file (2)")) << err;
  EXPECT_TRUE(has(err, "extra_thing")) << err;
  EXPECT_TRUE(has(err, "stages.9.0.norm.weight")) << err;
  EXPECT_TRUE(has(err, "wrong shape (1):\n    stages.0.0.dwconv.weight: file [8,1,5,7] vs model [8,1,7,7]")) << err;
  // Nothing was written.
  auto after = export_state_dict(*model);
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(before[i].second, after[i].second));
}

TEST(Weights, WrongClassCountIsAShapeErrorUnlessTheHeadIsIgnored) {
  ConvNeXtV2 model(custom_options(7));
  const std::string err = load_error(*model, fixture_tensors());
  EXPECT_TRUE(has(err, "head.weight: file [10,32] vs model [7,32]")) << err;
  EXPECT_TRUE(has(err, "head.bias: file [10] vs model [7]")) << err;
  LoadOptions o;
  o.ignore_file_head = true;
  auto head_before = model->head()->weight.clone();
  auto report = load_state_dict(*model, fixture_tensors(), o);
  EXPECT_EQ(report.left_at_init, (std::vector<std::string>{"head.weight", "head.bias"}));
  EXPECT_TRUE(torch::equal(model->head()->weight, head_before));
  EXPECT_TRUE(torch::equal(model->final_norm()->weight,
                           read_safetensors(fixture_path("custom_ref.safetensors")).at("norm.weight")));
}

TEST(Weights, EncoderOnlyFileUnderPrefixNeedsExplicitPermission) {
  // An FCMAE-style checkpoint: encoder.* without norm/head, plus decoder keys.
  NamedTensors file;
  for (const auto& [n, v] : fixture_tensors()) {
    if (n.rfind("head.", 0) == 0 || n.rfind("norm.", 0) == 0) continue;
    auto t = v;
    if (n.find(".grn.") != std::string::npos) t = t.reshape({1, -1});  // sparse reference's (1,C)
    file.emplace_back("encoder." + n, t);
  }
  file.emplace_back("mask_token", torch::zeros({1, 32, 1, 1}));
  file.emplace_back("decoder.0.dwconv.weight", torch::zeros({32, 1, 7, 7}));

  ConvNeXtV2 model(custom_options());
  LoadOptions o;
  const std::string no_prefix = load_error(*model, file, o);
  EXPECT_TRUE(has(no_prefix, "no ConvNeXt V2 keys")) << no_prefix;

  o.prefix = "encoder.";
  const std::string err = load_error(*model, file, o);
  EXPECT_TRUE(has(err, "missing in file (4)")) << err;
  EXPECT_TRUE(has(err, "norm.weight")) << err;
  EXPECT_TRUE(has(err, "allow_missing_head")) << err;

  o.allow_missing_head = true;
  auto head_before = model->head()->weight.clone();
  auto report = load_state_dict(*model, file, o);
  EXPECT_EQ(report.left_at_init.size(), 4u);
  EXPECT_EQ(report.ignored.size(), 2u);
  EXPECT_TRUE(torch::equal(model->head()->weight, head_before));
  EXPECT_TRUE(
      torch::equal(model->block(2, 1)->grn->gamma.flatten(),
                   read_safetensors(fixture_path("custom_ref.safetensors")).at("stages.2.1.grn.gamma").flatten()));
}

TEST(Weights, TimmNamesInErrorsAndWrongDtype) {
  auto timm = read_safetensors(fixture_path("custom_timm_f64.safetensors")).tensors;
  NamedTensors edited;
  for (auto& [n, v] : timm) {
    if (n == "head.fc.bias") continue;
    if (n == "stem.1.weight") v = v.to(torch::kLong);
    edited.emplace_back(n, v);
  }
  ConvNeXtV2 model(custom_options());
  const std::string err = load_error(*model, edited);
  EXPECT_TRUE(has(err, "file naming timm")) << err;
  EXPECT_TRUE(has(err, "head.fc.bias (head.bias)")) << err;
  EXPECT_TRUE(has(err, "wrong dtype (1):\n    stem.1.weight")) << err;
}

TEST(Weights, LoadWeightsRejectsGarbageFiles) {
  TempDir dir;
  {
    std::ofstream out(dir.file("zip.pt"), std::ios::binary);
    out << "PK\x03\x04 this is not a zip";
  }
  ConvNeXtV2 model(custom_options());
  EXPECT_THROW(load_weights(*model, dir.file("zip.pt")), WeightsError);
  EXPECT_THROW(load_weights(*model, dir.file("absent.safetensors")), WeightsError);
  // A .pt holding something other than a dict of tensors.
  {
    auto bytes = torch::pickle_save(c10::IValue(int64_t{3}));
    std::ofstream out(dir.file("int.pt"), std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  try {
    load_weights(*model, dir.file("int.pt"));
    FAIL();
  } catch (const WeightsError& e) {
    EXPECT_TRUE(has(e.what(), "dict of tensors")) << e.what();
  }
}

}  // namespace
}  // namespace cnx::model
