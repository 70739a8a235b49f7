// Dense ConvNeXt V2: sizes, FLOPs, parameter names, and logits against the
// independent Python reference values in fixtures/ (make_fixtures.py).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "model/complexity.h"
#include "model/convnextv2.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "tests/model/test_util.h"

namespace cnx::model {
namespace {

using testing::close_rel;
using testing::fixture_path;

struct TableRow {
  const char* name;
  double params_m;  // millions, as in the table of docs/model.md
  int digits;       // decimals shown
  double gflops;
};

const TableRow kTable[] = {
    {"atto", 3.7, 1, 0.55},  {"femto", 5.2, 1, 0.78}, {"pico", 9.1, 1, 1.37},  {"nano", 15.6, 1, 2.45},
    {"tiny", 28.6, 1, 4.47}, {"base", 89, 0, 15.4},   {"large", 198, 0, 34.4}, {"huge", 660, 0, 115},
};

TEST(Complexity, ParamsMatchTheTableForAllVariants) {
  for (const auto& row : kTable) {
    const double m = static_cast<double>(count_params(variant_options(row.name))) / 1e6;
    const double p = std::pow(10.0, row.digits);
    EXPECT_DOUBLE_EQ(std::round(m * p) / p, row.params_m) << row.name << ": " << m << "M";
  }
}

TEST(Complexity, GflopsWithinThreePercentOfTheTable) {
  for (const auto& row : kTable) {
    const double g = static_cast<double>(count_macs(variant_options(row.name), 224, 224)) / 1e9;
    EXPECT_NEAR(g / row.gflops, 1.0, 0.03) << row.name << ": " << g << " GFLOPs";
  }
}

TEST(Complexity, AnalyticCountEqualsBuiltModel) {
  for (const char* name : {"atto", "femto"}) {
    auto o = variant_options(name);
    ConvNeXtV2 model(o);
    EXPECT_EQ(count_parameters(*model), count_params(o)) << name;
  }
  ConvNeXtV2Options o;
  o.depths = {1, 2, 1, 3};
  o.dims = {5, 7, 9, 11};
  o.in_chans = 2;
  o.num_classes = 0;
  ConvNeXtV2 model(o);
  EXPECT_EQ(count_parameters(*model), count_params(o));
}

TEST(Complexity, MacsScaleWithResolutionAndBreakdownSums) {
  auto o = variant_options("atto");
  auto c = complexity(o, 224, 224);
  int64_t sum = c.head_macs;
  for (auto s : c.stage_macs) sum += s;
  EXPECT_EQ(sum, c.macs);
  // Everything but the head scales with pixel count.
  EXPECT_EQ(count_macs(o, 448, 448) - c.head_macs, 4 * (c.macs - c.head_macs));
  EXPECT_THROW(count_macs(o, 16, 224), std::invalid_argument);
}

TEST(Options, VariantsAndValidation) {
  EXPECT_EQ(variant_names().size(), 8u);
  EXPECT_EQ(variant_options("huge").dims, (std::vector<int64_t>{352, 704, 1408, 2816}));
  try {
    variant_options("gigantic");
    FAIL() << "no throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("gigantic"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("atto"), std::string::npos);
  }
  ConvNeXtV2Options bad = variant_options("atto");
  bad.depths = {2, 2, 6};
  EXPECT_THROW(ConvNeXtV2{bad}, std::invalid_argument);
  bad = variant_options("atto");
  bad.drop_path_rate = 1.0;
  EXPECT_THROW(ConvNeXtV2{bad}, std::invalid_argument);
}

ConvNeXtV2Options custom_options() {
  ConvNeXtV2Options o;
  o.depths = {1, 1, 2, 1};
  o.dims = {8, 16, 24, 32};
  o.in_chans = 1;
  o.num_classes = 10;
  return o;
}

TEST(ConvNeXtV2, ParameterNamesAndShapesAreTheReferenceStateDict) {
  // The fixture was written from the reference's names, in its order.
  auto file = read_safetensors(fixture_path("custom_ref.safetensors"));
  ConvNeXtV2 model(custom_options());
  auto params = model->named_parameters();
  ASSERT_EQ(params.size(), file.tensors.size());
  std::map<std::string, std::vector<int64_t>> expected;
  for (const auto& [n, t] : file.tensors) expected[n] = t.sizes().vec();
  for (const auto& p : params) {
    ASSERT_TRUE(expected.count(p.key())) << "unexpected parameter " << p.key();
    EXPECT_EQ(p.value().sizes().vec(), expected[p.key()]) << p.key();
  }
  EXPECT_TRUE(params.contains("stages.2.1.grn.gamma"));
  EXPECT_EQ(params["stages.2.1.grn.gamma"].sizes(), (std::vector<int64_t>{1, 1, 1, 96}));
}

TEST(ConvNeXtV2, InitFollowsTheReference) {
  torch::manual_seed(0);
  auto o = variant_options("atto");
  o.head_init_scale = 0.25;
  ConvNeXtV2 model(o);
  auto p = model->named_parameters();
  const double s = p["stages.2.3.pwconv1.weight"].std().item<double>();
  EXPECT_NEAR(s, 0.02, 0.001);
  EXPECT_EQ(p["stages.2.3.pwconv1.bias"].abs().max().item<double>(), 0.0);
  EXPECT_EQ(p["stages.2.3.grn.gamma"].abs().max().item<double>(), 0.0);
  EXPECT_EQ(p["downsample_layers.1.0.weight"].min().item<double>(), 1.0);
  EXPECT_NEAR(p["head.weight"].std().item<double>(), 0.02 * 0.25, 0.0005);
  EXPECT_NEAR(p["downsample_layers.0.0.weight"].std().item<double>(), 0.02, 0.002);
}

TEST(ConvNeXtV2, ShapesOfEachEntryPoint) {
  ConvNeXtV2 model(custom_options());
  model->eval();
  auto x = torch::randn({3, 1, 96, 64});
  EXPECT_EQ(model->forward(x).sizes(), (std::vector<int64_t>{3, 10}));
  EXPECT_EQ(model->forward_features(x).sizes(), (std::vector<int64_t>{3, 32}));
  EXPECT_EQ(model->forward_encoder(x).sizes(), (std::vector<int64_t>{3, 32, 3, 2}));
  auto s0 = model->forward_stage(0, x);
  EXPECT_EQ(s0.sizes(), (std::vector<int64_t>{3, 8, 24, 16}));
  EXPECT_THROW(model->forward(torch::randn({1, 3, 64, 64})), std::exception);
  auto o = custom_options();
  o.num_classes = 0;
  ConvNeXtV2 headless(o);
  EXPECT_FALSE(headless->head());
  EXPECT_EQ(headless->forward(x).sizes(), (std::vector<int64_t>{3, 32}));
}

TEST(ConvNeXtV2, CustomLogitsMatchPythonReference) {
  ConvNeXtV2 model(custom_options());
  load_weights(*model, fixture_path("custom_ref.safetensors"));
  model->eval();
  auto io = read_safetensors(fixture_path("custom_io.safetensors"));
  torch::NoGradGuard g;
  const auto& x = io.at("input");
  EXPECT_TRUE(close_rel(model->forward_encoder(x), io.at("encoder"), 1e-4));
  EXPECT_TRUE(close_rel(model->forward_features(x), io.at("features"), 1e-4));
  EXPECT_TRUE(close_rel(model->forward(x), io.at("logits"), 1e-4));
}

TEST(ConvNeXtV2, CustomLogitsFromTimmF64File) {
  ConvNeXtV2 model(custom_options());
  auto report = load_weights(*model, fixture_path("custom_timm_f64.safetensors"));
  EXPECT_EQ(report.naming, Naming::kTimm);
  model->eval();
  auto io = read_safetensors(fixture_path("custom_io.safetensors"));
  torch::NoGradGuard g;
  EXPECT_TRUE(close_rel(model->forward(io.at("input")), io.at("logits"), 1e-4));
}

// Integer-hash weights, bit-identical to make_fixtures.py's formula_weights().
void fill_formula_weights(ConvNeXtV2Impl& model) {
  auto params = model.named_parameters();
  std::vector<std::string> names;
  for (const auto& p : params) names.push_back(p.key());
  std::sort(names.begin(), names.end());
  int64_t off = 0;
  torch::NoGradGuard g;
  for (const auto& name : names) {
    at::Tensor p = params[name];
    const int64_t n = p.numel();
    double scale = 0.1, shift = 0.0;
    const bool grn = name.find(".grn.") != std::string::npos;
    const bool bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    if (grn) {
      scale = 0.5;
    } else if (bias) {
      scale = 0.1;
    } else if (p.dim() >= 2) {
      scale = 1.0 / std::sqrt(static_cast<double>(n / p.size(0)));
    } else {
      shift = 1.0;
    }
    std::vector<float> v(n);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t u = ((off + j) * 1103515245LL + 12345) % (1LL << 31);
      const double r = static_cast<double>(u) / static_cast<double>(1LL << 31);
      v[j] = static_cast<float>((2.0 * r - 1.0) * scale + shift);
    }
    p.copy_(torch::from_blob(v.data(), p.sizes(), torch::kFloat));
    off += n;
  }
}

TEST(ConvNeXtV2, AttoLogitsMatchPythonReference) {
  ConvNeXtV2 model(variant_options("atto"));
  fill_formula_weights(*model);
  auto io = read_safetensors(fixture_path("atto_io.safetensors"));
  double sum = 0;
  for (const auto& p : model->parameters()) sum += p.to(torch::kDouble).sum().item<double>();
  ASSERT_NEAR(sum, io.at("weight_sum").item<double>(), 1e-6 * std::abs(sum) + 1e-6) << "weights differ from Python's";
  model->eval();
  torch::NoGradGuard g;
  const auto& x = io.at("input");
  EXPECT_TRUE(close_rel(model->forward_features(x), io.at("features"), 1e-4));
  EXPECT_TRUE(close_rel(model->forward(x), io.at("logits"), 1e-4));
}

TEST(ConvNeXtV2, TrainsOneStepWithFiniteGradients) {
  torch::manual_seed(5);
  auto o = custom_options();
  o.drop_path_rate = 0.1;
  ConvNeXtV2 model(o);
  model->train();
  auto x = torch::randn({4, 1, 64, 64});
  auto y = torch::randint(0, 10, {4}, torch::kLong);
  auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
  loss.backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
}

// ConvNeXt V1 blocks (the GRN ablation): the official V1 block's names, order,
// init and outputs (fixtures/make_fixtures.py, custom_v1_*).
ConvNeXtV2Options custom_v1_options() {
  auto o = custom_options();
  o.block = "v1";
  return o;
}

TEST(ConvNeXtV1Blocks, NamesShapesAndOrderAreTheOfficialV1StateDict) {
  auto file = read_safetensors(fixture_path("custom_v1_ref.safetensors"));
  ConvNeXtV2 model(custom_v1_options());
  auto params = model->named_parameters();
  ASSERT_EQ(params.size(), file.tensors.size());
  size_t i = 0;
  for (const auto& p : params) {
    const auto& [name, t] = file.tensors[i++];
    EXPECT_EQ(p.key(), name);
    EXPECT_EQ(p.value().sizes(), t.sizes()) << name;
  }
  EXPECT_FALSE(params.contains("stages.2.1.grn.gamma"));
  EXPECT_EQ(params["stages.2.1.gamma"].sizes(), (std::vector<int64_t>{24}));
  EXPECT_EQ(count_parameters(*model), count_params(custom_v1_options()));
  EXPECT_LT(count_params(custom_v1_options()), count_params(custom_options()));
}

TEST(ConvNeXtV1Blocks, LayerScaleStartsAtItsInitValue) {
  auto o = variant_options("atto");
  o.block = "v1";
  ConvNeXtV2 model(o);
  auto p = model->named_parameters();
  EXPECT_EQ(p["stages.2.3.gamma"].min().item<double>(), 1e-6f);
  EXPECT_EQ(p["stages.2.3.gamma"].max().item<double>(), 1e-6f);
  o.layer_scale_init = 0.0;
  EXPECT_THROW(validate(o), std::invalid_argument);
  o.block = "v3";
  EXPECT_THROW(validate(o), std::invalid_argument);
}

TEST(ConvNeXtV1Blocks, LogitsMatchPythonReference) {
  ConvNeXtV2 model(custom_v1_options());
  load_weights(*model, fixture_path("custom_v1_ref.safetensors"));
  model->eval();
  auto io = read_safetensors(fixture_path("custom_v1_io.safetensors"));
  torch::NoGradGuard g;
  const auto& x = io.at("input");
  EXPECT_TRUE(close_rel(model->forward_encoder(x), io.at("encoder"), 1e-4));
  EXPECT_TRUE(close_rel(model->forward(x), io.at("logits"), 1e-4));
  // A V2 model refuses the V1 file (no GRN in it), naming what is missing.
  ConvNeXtV2 v2(custom_options());
  try {
    load_weights(*v2, fixture_path("custom_v1_ref.safetensors"));
    ADD_FAILURE() << "a V2 model loaded V1 weights";
  } catch (const WeightsError& e) {
    EXPECT_NE(std::string(e.what()).find("grn"), std::string::npos) << e.what();
  }
}

TEST(ConvNeXtV1Blocks, TimmNamesRoundTrip) {
  EXPECT_EQ(reference_to_timm("stages.2.1.gamma").value_or(""), "stages.2.blocks.1.gamma");
  EXPECT_EQ(timm_to_reference("stages.2.blocks.1.gamma").value_or(""), "stages.2.1.gamma");
}

}  // namespace
}  // namespace cnx::model
