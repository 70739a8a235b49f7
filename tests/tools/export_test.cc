// cnx_export: FCMAE state -> encoder-only weights that model_io loads strictly.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "model/weights.h"
#include "tests/tools/tools_test_util.h"
#include "tools/export/fcmae_state.h"
#include "worker/checkpoint_files.h"

namespace cnx::tools {
namespace {

using testing::TempDir;

model::Fcmae make_fcmae(uint64_t seed) {
  at::manual_seed(seed);
  return model::Fcmae(testing::tiny_fcmae_options());
}

// Writes the FCMAE state as a committed checkpoint under root (the trainer's layout).
void write_checkpoint(const std::string& root, int64_t step, const model::NamedTensors& state) {
  const std::string tmp = root + "/" + worker::temp_checkpoint_name(step);
  std::filesystem::create_directories(tmp);
  model::save_pt(tmp + "/model.pt", state);
  worker::Manifest m;
  m["model.pt"] = worker::digest_file(tmp + "/model.pt");
  worker::commit_local(root, tmp, step, m);
}

TEST(Export, InfersTheArchitectureFromTensors) {
  model::Fcmae f = make_fcmae(1);
  const model::NamedTensors state = testing::module_state(*f);
  const model::FcmaeOptions o = infer_fcmae_options(state, "mem");
  EXPECT_EQ(o.encoder.depths, (std::vector<int64_t>{1, 1, 2, 1}));
  EXPECT_EQ(o.encoder.dims, (std::vector<int64_t>{8, 16, 24, 32}));
  EXPECT_EQ(o.encoder.in_chans, 3);
  EXPECT_EQ(o.decoder_dim, 16);
  EXPECT_EQ(o.decoder_depth, 1);
  model::Fcmae g(o);
  load_fcmae_state(*g, state, "mem");
  for (const auto& item : g->named_parameters(true)) {
    const auto it = std::find_if(state.begin(), state.end(), [&](const auto& p) { return p.first == item.key(); });
    ASSERT_NE(it, state.end()) << item.key();
    EXPECT_TRUE(at::equal(item.value(), it->second)) << item.key();
  }
}

// The GRN ablation's encoder (V1 blocks) is recognised by its layer scales and
// exported under both namings; a dense model built from the inferred options
// loads it strictly.
TEST(Export, V1BlockEncoderIsInferredAndExported) {
  at::manual_seed(5);
  auto fo = testing::tiny_fcmae_options();
  fo.encoder.block = "v1";
  model::Fcmae f(fo);
  const model::NamedTensors state = testing::module_state(*f);
  const model::FcmaeOptions o = infer_fcmae_options(state, "mem");
  EXPECT_EQ(o.encoder.block, "v1");
  model::Fcmae g(o);
  load_fcmae_state(*g, state, "mem");
  EXPECT_EQ(infer_fcmae_options(testing::module_state(*make_fcmae(1)), "mem").encoder.block, "v2");
  for (auto naming : {model::Naming::kReference, model::Naming::kTimm}) {
    const EncoderExport enc = extract_encoder(state, naming, "mem");
    EXPECT_EQ(enc.options.block, "v1");
    TempDir dir;
    model::write_safetensors(dir.file("enc.safetensors"), enc.tensors);
    model::ConvNeXtV2 dense(enc.options);
    model::LoadOptions lo;
    lo.naming = naming;
    lo.allow_missing_head = true;
    model::load_weights(*dense, dir.file("enc.safetensors"), lo);
    EXPECT_TRUE(at::equal(dense->block(2, 1)->gamma, f->encoder_model()->block(2, 1)->gamma));
  }
  // A state with both a GRN and a layer scale in one block is no known model.
  model::NamedTensors both = state;
  both.emplace_back("encoder.stages.0.0.grn.gamma", at::zeros({1, 1, 1, 32}));
  EXPECT_THROW(infer_fcmae_options(both, "both"), model::WeightsError);
}

TEST(Export, CheckpointToReferenceSafetensorsLoadsStrictlyWithIdenticalTensors) {
  TempDir dir;
  model::Fcmae f = make_fcmae(2);
  const model::NamedTensors state = testing::module_state(*f);
  write_checkpoint(dir.file("ckpt"), 10, state);
  write_checkpoint(dir.file("ckpt"), 20, state);
  const std::string file = resolve_state_file(dir.file("ckpt"));
  EXPECT_EQ(file, dir.file("ckpt") + "/step-00000020/model.pt");

  const EncoderExport enc = extract_encoder(read_state_file(file), model::Naming::kReference, file);
  model::write_safetensors(dir.file("enc.safetensors"), enc.tensors);
  for (const auto& [name, t] : enc.tensors) {
    EXPECT_TRUE(name.rfind("downsample_layers.", 0) == 0 || name.rfind("stages.", 0) == 0) << name;
  }

  model::ConvNeXtV2Options o = enc.options;
  o.num_classes = 0;
  model::ConvNeXtV2 dense(o);
  model::LoadOptions lo;
  lo.naming = model::Naming::kReference;
  lo.allow_missing_head = true;
  const model::LoadReport rep = model::load_weights(*dense, dir.file("enc.safetensors"), lo);
  EXPECT_EQ(rep.left_at_init, (std::vector<std::string>{"norm.weight", "norm.bias"}));
  EXPECT_TRUE(rep.ignored.empty());
  // Identical to the FCMAE's encoder, tensor by tensor.
  const auto src = model::export_state_dict(*f->encoder_model(), model::Naming::kReference);
  std::set<std::string> compared;
  for (const auto& item : dense->named_parameters(true)) {
    if (item.key().rfind("norm.", 0) == 0) continue;
    const auto it = std::find_if(src.begin(), src.end(), [&](const auto& p) { return p.first == item.key(); });
    ASSERT_NE(it, src.end()) << item.key();
    EXPECT_TRUE(at::equal(item.value(), it->second)) << item.key();
    compared.insert(item.key());
  }
  EXPECT_EQ(compared.size(), enc.tensors.size());
  // Strict: the file does not load into a different architecture.
  model::ConvNeXtV2Options other = o;
  other.dims = {8, 16, 24, 40};
  model::ConvNeXtV2 wrong(other);
  EXPECT_THROW(model::load_weights(*wrong, dir.file("enc.safetensors"), lo), model::WeightsError);
}

TEST(Export, TimmNamingRoundTrips) {
  TempDir dir;
  model::Fcmae f = make_fcmae(3);
  model::save_pt(dir.file("model.pt"), testing::module_state(*f));
  const EncoderExport enc = extract_encoder(read_state(dir.file("model.pt")), model::Naming::kTimm, "model.pt");
  bool saw_grn = false;
  for (const auto& [name, t] : enc.tensors) {
    EXPECT_EQ(name.find("head."), std::string::npos) << name;
    if (name.find("mlp.grn.weight") != std::string::npos) {
      saw_grn = true;
      EXPECT_EQ(t.dim(), 1) << name;
    }
  }
  EXPECT_TRUE(saw_grn);
  model::write_safetensors(dir.file("timm.safetensors"), enc.tensors);
  model::ConvNeXtV2Options o = enc.options;
  model::ConvNeXtV2 dense(o);
  model::LoadOptions lo;
  lo.naming = model::Naming::kTimm;
  lo.allow_missing_head = true;
  model::load_weights(*dense, dir.file("timm.safetensors"), lo);
  EXPECT_TRUE(at::equal(dense->block(2, 1)->grn->gamma, f->encoder_model()->block(2, 1)->grn->gamma));
  EXPECT_TRUE(at::equal(dense->stem_conv()->weight, f->encoder_model()->stem_conv()->weight));
}

TEST(Export, BadSourcesGiveClearErrors) {
  TempDir dir;
  EXPECT_THROW(resolve_state_file(dir.file("missing")), model::WeightsError);
  EXPECT_THROW(resolve_state_file(dir.path()), model::WeightsError);  // empty folder
  // A checkpoint whose model.pt was altered after commit fails verification.
  model::Fcmae f = make_fcmae(4);
  write_checkpoint(dir.file("ck"), 5, testing::module_state(*f));
  {
    std::ofstream out(dir.file("ck") + "/step-00000005/model.pt", std::ios::app | std::ios::binary);
    out << "x";
  }
  EXPECT_THROW(resolve_state_file(dir.file("ck")), worker::CheckpointError);
  // Not an FCMAE state.
  model::NamedTensors junk{{"foo", at::zeros({2})}};
  EXPECT_THROW(infer_fcmae_options(junk, "junk"), model::WeightsError);
  EXPECT_THROW(extract_encoder(junk, model::Naming::kReference, "junk"), model::WeightsError);
  // A state with a wrong-shape tensor names it.
  model::NamedTensors state = testing::module_state(*f);
  for (auto& [name, t] : state) {
    if (name == "proj.weight") t = at::zeros({3, 3, 1, 1});
  }
  model::Fcmae g(testing::tiny_fcmae_options());
  try {
    load_fcmae_state(*g, state, "bad.pt");
    FAIL() << "expected WeightsError";
  } catch (const model::WeightsError& e) {
    EXPECT_NE(std::string(e.what()).find("proj.weight"), std::string::npos) << e.what();
  }
  state.pop_back();
  state.emplace_back("extra.tensor", at::zeros({1}));
  EXPECT_THROW(load_fcmae_state(*g, state, "bad.pt"), model::WeightsError);
}

// The message of the WeightsError that `f` throws ("" if none).
template <class F>
std::string weights_error(F f) {
  try {
    f();
  } catch (const model::WeightsError& e) {
    return e.what();
  }
  return "";
}

// A state whose stem, downsamples and one block per stage carry real shapes
// for dims `d`, as U8 (1 byte per value); `extra` adds entries.
model::NamedTensors crafted_encoder(const std::vector<int64_t>& d, const model::NamedTensors& extra = {}) {
  model::NamedTensors s;
  s.emplace_back("downsample_layers.0.0.weight", at::zeros({d[0], 3, 4, 4}, at::kByte));
  for (int i = 1; i < 4; ++i)
    s.emplace_back("downsample_layers." + std::to_string(i) + ".1.weight",
                   at::zeros({d[i], d[i - 1], 2, 2}, at::kByte));
  for (int i = 0; i < 4; ++i) s.emplace_back("stages." + std::to_string(i) + ".0.dwconv.weight", at::zeros({0}));
  s.insert(s.end(), extra.begin(), extra.end());
  return s;
}

TEST(Export, HugeStemIsRefusedBeforeAnyModelIsBuilt) {
  // [50000, 1, 4, 4] as U8 is an 800 KB file; the model it implies would
  // need ~40 GB. Refused on the channel bound.
  model::NamedTensors s = crafted_encoder({8, 8, 8, 8});
  s[0].second = at::zeros({50000, 1, 4, 4}, at::kByte);
  s[1].second = at::zeros({8, 50000, 2, 2}, at::kByte);
  const std::string m = weights_error([&] { infer_encoder_options(s, "", "stem.safetensors"); });
  EXPECT_NE(m.find("stem's output channels is 50000, outside [1, 4096]"), std::string::npos) << m;
  EXPECT_NE(weights_error([&] { extract_encoder(s, model::Naming::kReference, "stem.safetensors"); }), "");
}

TEST(Export, ThousandsOfEmptyBlocksAreRefusedAtTheDepthBound) {
  model::NamedTensors extra;
  for (int b = 1; b < 5000; ++b) extra.emplace_back("stages.2." + std::to_string(b) + ".dwconv.weight", at::zeros({0}));
  const model::NamedTensors s = crafted_encoder({8, 16, 24, 32}, extra);
  const std::string m = weights_error([&] { infer_encoder_options(s, "", "blocks.safetensors"); });
  EXPECT_NE(m.find("more than 64 blocks in stage 2"), std::string::npos) << m;
  // The same for an FCMAE state's decoder.
  model::Fcmae f = make_fcmae(5);
  model::NamedTensors fs = testing::module_state(*f);
  for (int b = 1; b < 5000; ++b) fs.emplace_back("decoder." + std::to_string(b) + ".dwconv.weight", at::zeros({0}));
  const std::string fm = weights_error([&] { infer_fcmae_options(fs, "decoder.pt"); });
  EXPECT_NE(fm.find("more than 64 decoder blocks"), std::string::npos) << fm;
}

TEST(Export, ArchitectureNeedingMoreValuesThanTheFileHoldsIsRefused) {
  // Within every bound (one block per stage: ~55M parameters), but the
  // blocks are empty tensors: the file holds ~10.6M values.
  const model::NamedTensors s = crafted_encoder({256, 512, 1024, 2048});
  const std::string m = weights_error([&] { infer_encoder_options(s, "", "hollow.safetensors"); });
  EXPECT_NE(m.find("parameters but the file holds only"), std::string::npos) << m;
  // A real state passes the same check, with and without the final norm.
  model::Fcmae f = make_fcmae(6);
  const model::NamedTensors real = testing::module_state(*f);
  EXPECT_EQ(weights_error([&] { infer_fcmae_options(real, "real"); }), "");
  const model::NamedTensors enc = extract_encoder(real, model::Naming::kReference, "real").tensors;
  EXPECT_EQ(weights_error([&] { infer_encoder_options(enc, "", "enc"); }), "");
  // The decoder's share is checked too: a wide empty decoder is refused.
  model::NamedTensors wide = real;
  for (auto& [name, t] : wide)
    if (name == "mask_token") t = at::zeros({1, 4096, 1, 1});
  const std::string wm = weights_error([&] { infer_fcmae_options(wide, "wide"); });
  EXPECT_NE(wm.find("FCMAE (decoder width 4096"), std::string::npos) << wm;
}

}  // namespace
}  // namespace cnx::tools
