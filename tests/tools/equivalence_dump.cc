// Writes what cnx-finetune's training loop, its evaluation and cnx-eval's
// linear probe do on fixed data, for tests/tools/torch_equivalence.py to
// replay with an independent python3-torch implementation.
//
//   equivalence_dump OUT_DIR     (alone, or under mpirun -np W)
//
// Data: synthetic labelled PNG shards (24x20 RGB, 4 classes, written by
// rank 0), read with the evaluation tools' reader (round-robin positions).
// Model: a narrow ConvNeXt V2 (depths 1,1,2,1; dims 8,16,24,32), seeded, no
// drop path. The train transform is deterministic (crop scale and ratio 1,
// no flip): a resize of the whole image, so the batches written here are the
// network's exact inputs.
//
// Files (torch::pickle_save dicts of tensors, loadable with torch.load):
//   options.json             fine-tune options and the world size
//   init.pt                  parameters + buffers before fine-tuning
//   steps-rank<R>.pt         per step s: images/<s>, labels/<s>; and loss
//                            (this rank's), mean_loss, lr (one per step)
//   final.pt                 parameters after fine-tuning (rank 0)
//   raw.pt                   test images as decoded uint8 HWC (raw/<i>) and
//                            their labels (rank 0)
//   eval.pt                  logits of the final model on the test images
//                            for crop_pct 0.875 and 1.0 (eval transform),
//                            top-1 from evaluate_top1 (all ranks) (rank 0)
//   probe.pt                 features of the init model (extract_features,
//                            crop_pct 0.875), the trained linear head, and
//                            its test top-1 (rank 0)
#include <ATen/ATen.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "data/image_codec.h"
#include "model/convnextv2.h"
#include "tests/tools/tools_test_util.h"
#include "tools/eval/eval_job.h"
#include "tools/eval/finetune.h"
#include "tools/eval/labelled_data.h"
#include "tools/eval/linear_probe.h"

namespace {

using namespace cnx;

constexpr int64_t kClasses = 4;
constexpr int64_t kSize = 32;

void save(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& items) {
  c10::Dict<std::string, at::Tensor> d;
  for (const auto& [k, v] : items) d.insert(k, v.detach().contiguous().clone());
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(d));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

// Synthetic images: a class-dependent bar position under noise, 24 wide x 20 high (non-square: exercises the resize).
std::string write_shards(const std::string& dir, int64_t n, uint64_t seed) {
  std::filesystem::create_directories(dir);
  SplitMix64 rng(seed);
  data::ShardIndex index;
  index.dataset = "equivalence";
  for (int64_t c = 0; c < kClasses; ++c) index.classes.push_back("c" + std::to_string(c));
  const std::string name = "part-0.tar";
  {
    data::TarWriter w(dir + "/" + name);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t label = static_cast<int64_t>(rng.below(kClasses));
      data::Image img;
      img.width = 24;
      img.height = 20;
      img.channels = 3;
      img.pixels.resize(24 * 20 * 3);
      for (int y = 0; y < 20; ++y) {
        for (int x = 0; x < 24; ++x) {
          const bool bar = x / 6 == label;
          for (int c = 0; c < 3; ++c) {
            // A faint bar under strong noise: top-1 stays well below 100%,
            // so equal top-1 numbers mean equal decisions.
            const int base = (bar ? 140 : 120) + 10 * c;
            const int v = base + static_cast<int>(rng.below(161)) - 80;
            img.pixels[(y * 24 + x) * 3 + c] = static_cast<uint8_t>(std::min(255, std::max(0, v)));
          }
        }
      }
      char key[32];
      std::snprintf(key, sizeof(key), "%06lld", static_cast<long long>(i));
      const std::vector<uint8_t> png = data::encode_png(img);
      w.add(std::string(key) + ".png", png.data(), png.size());
      const std::string cls = std::to_string(label);
      w.add(std::string(key) + ".cls", cls.data(), cls.size());
    }
    w.close();
  }
  data::ShardInfo info;
  info.name = name;
  info.samples = n;
  info.bytes = static_cast<int64_t>(std::filesystem::file_size(dir + "/" + name));
  info.sha256 = sha256_file(dir + "/" + name);
  index.shards.push_back(info);
  index.total_samples = n;
  data::save_index(index, dir + "/index.json");
  return dir + "/index.json";
}

model::ConvNeXtV2Options tiny(int64_t classes) {
  model::ConvNeXtV2Options o;
  o.depths = {1, 1, 2, 1};
  o.dims = {8, 16, 24, 32};
  o.num_classes = classes;
  o.drop_path_rate = 0.0;
  o.head_init_scale = 1.0;
  return o;
}

std::vector<std::pair<std::string, at::Tensor>> state(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& it : m.named_parameters(true)) out.emplace_back(it.key(), it.value());
  for (const auto& it : m.named_buffers(true)) out.emplace_back(it.key(), it.value());
  return out;
}

int run(const std::string& out_dir) {
  std::unique_ptr<comm::Communicator> comm = eval::communicator_from_environment();
  const int rank = comm ? comm->rank() : 0;
  const int world = comm ? comm->size() : 1;
  at::set_num_threads(1);
  std::filesystem::create_directories(out_dir);
  const std::string data_dir = out_dir + "/data";
  if (rank == 0) {
    write_shards(data_dir + "/train", 256, 11);
    write_shards(data_dir + "/test", 40, 12);
  }
  if (comm) comm->barrier();

  eval::ReadOptions ro;
  ro.rank = rank;
  ro.world = world;
  ro.index_path = data_dir + "/train/index.json";
  const eval::LabelledSet train = eval::read_labelled_shards(ro);
  ro.index_path = data_dir + "/test/index.json";
  const eval::LabelledSet test = eval::read_labelled_shards(ro);

  at::manual_seed(5);
  model::ConvNeXtV2 net(tiny(kClasses));
  if (rank == 0) save(out_dir + "/init.pt", state(*net));

  eval::FinetuneOptions o;
  o.epochs = 3;
  o.batch_size = 32 / world;  // the same global batch of 32 at any world size
  o.lr = 2e-3;
  o.min_lr = 1e-5;
  o.warmup_epochs = 0.5;
  o.layer_decay = 0.75;
  o.weight_decay = 0.05;
  o.label_smoothing = 0.1;
  o.train_transform.size = kSize;
  o.train_transform.train = true;
  o.train_transform.scale_lo = o.train_transform.scale_hi = 1.0;
  o.train_transform.ratio_lo = o.train_transform.ratio_hi = 1.0;
  o.train_transform.hflip = false;
  o.eval_transform.size = kSize;
  o.eval_transform.train = false;
  o.log_every = 0;
  o.seed = 3;
  std::vector<std::pair<std::string, at::Tensor>> steps;
  std::vector<double> loss, mean_loss, lr;
  o.on_step = [&](const eval::StepRecord& r) {
    steps.emplace_back("images/" + std::to_string(r.step), r.batch->images);
    steps.emplace_back("labels/" + std::to_string(r.step), r.batch->labels);
    loss.push_back(r.loss);
    mean_loss.push_back(r.mean_loss);
    lr.push_back(r.lr);
  };
  // The probe's features come from the model before fine-tuning.
  data::TransformOptions probe_tf = o.eval_transform;
  const eval::Features ftr = eval::extract_features(*net, train, probe_tf, 16, comm.get());
  const eval::Features fte = eval::extract_features(*net, test, probe_tf, 16, comm.get());
  eval::ProbeOptions po;
  po.epochs = 5;
  po.batch_size = 64;
  po.lr = 5e-3;
  po.weight_decay = 1e-3;
  po.warmup_epochs = 1;
  po.seed = 9;
  const eval::LinearProbe probe = eval::train_linear_probe(ftr.x, ftr.labels, kClasses, po);
  const double probe_top1 = eval::top1_accuracy(probe.logits(fte.x), fte.labels);

  const eval::FinetuneResult res = eval::finetune(*net, train, test, o, comm.get());
  steps.emplace_back("loss", at::tensor(loss, at::kDouble));
  steps.emplace_back("mean_loss", at::tensor(mean_loss, at::kDouble));
  steps.emplace_back("lr", at::tensor(lr, at::kDouble));
  save(out_dir + "/steps-rank" + std::to_string(rank) + ".pt", steps);

  // Evaluation of the fine-tuned model on the test images, two crop fractions.
  std::vector<std::pair<std::string, at::Tensor>> ev;
  for (const double pct : {0.875, 1.0}) {
    data::TransformOptions tf = o.eval_transform;
    tf.crop_pct = pct;
    int64_t n = 0, failed = 0;
    const double top1 = eval::evaluate_top1(*net, test, tf, 16, comm.get(), &n, &failed);
    char key[32];
    std::snprintf(key, sizeof(key), "%.3f", pct);
    ev.emplace_back(std::string("top1/") + key, at::scalar_tensor(top1, at::kDouble));
    if (rank == 0 && world == 1) {
      // Logits over all test samples in order (one process holds them all).
      std::vector<int64_t> idx(test.samples.size());
      for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int64_t>(i);
      const eval::DecodedBatch b = eval::decode_samples(test, idx, tf, 0, 0);
      at::NoGradGuard ng;
      net->eval();
      ev.emplace_back(std::string("logits/") + key, net->forward(b.images.contiguous(at::MemoryFormat::ChannelsLast)));
      ev.emplace_back(std::string("input/") + key, b.images);
    }
  }
  if (rank == 0) {
    save(out_dir + "/final.pt", state(*net));
    save(out_dir + "/eval.pt", ev);
    std::vector<std::pair<std::string, at::Tensor>> raw;
    ro.rank = 0;
    ro.world = 1;
    const eval::LabelledSet all_test = eval::read_labelled_shards(ro);
    std::vector<int64_t> labels;
    for (size_t i = 0; i < all_test.samples.size(); ++i) {
      const auto& s = all_test.samples[i];
      data::Image img;
      std::string err;
      if (data::decode_image(s.bytes.data(), s.bytes.size(), s.format, int64_t{1} << 26, {}, &img, &err) !=
          data::DecodeStatus::kOk)
        throw std::runtime_error("cannot decode " + s.key + ": " + err);
      raw.emplace_back("raw/" + std::to_string(i),
                       at::from_blob(img.pixels.data(), {img.height, img.width, img.channels}, at::kByte).clone());
      labels.push_back(s.label);
    }
    raw.emplace_back("labels", at::tensor(labels, at::kLong));
    save(out_dir + "/raw.pt", raw);
    save(out_dir + "/probe.pt", {{"train_x", ftr.x},
                                 {"train_y", ftr.labels},
                                 {"test_x", fte.x},
                                 {"test_y", fte.labels},
                                 {"mean", probe.mean},
                                 {"inv_std", probe.inv_std},
                                 {"weight", probe.weight},
                                 {"bias", probe.bias},
                                 {"final_loss", at::scalar_tensor(probe.final_loss, at::kDouble)},
                                 {"top1", at::scalar_tensor(probe_top1, at::kDouble)}});
    nlohmann::ordered_json j;
    j["world"] = world;
    j["classes"] = kClasses;
    j["size"] = kSize;
    j["epochs"] = o.epochs;
    j["batch_per_rank"] = o.batch_size;
    j["steps"] = res.steps;
    j["steps_per_epoch"] = res.steps / o.epochs;
    j["lr"] = o.lr;
    j["min_lr"] = o.min_lr;
    j["warmup_epochs"] = o.warmup_epochs;
    j["layer_decay"] = o.layer_decay;
    j["weight_decay"] = o.weight_decay;
    j["betas"] = {o.beta1, o.beta2};
    j["label_smoothing"] = o.label_smoothing;
    j["depths"] = net->options().depths;
    j["dims"] = net->options().dims;
    j["mean"] = o.eval_transform.mean;
    j["std"] = o.eval_transform.std;
    j["probe"] = {{"epochs", po.epochs},
                  {"batch_size", po.batch_size},
                  {"lr", po.lr},
                  {"weight_decay", po.weight_decay},
                  {"warmup_epochs", po.warmup_epochs},
                  {"seed", po.seed}};
    std::ofstream(out_dir + "/options.json") << j.dump(2) << "\n";
  }
  if (comm) comm->barrier();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: equivalence_dump OUT_DIR\n";
    return 2;
  }
  try {
    return run(argv[1]);
  } catch (const std::exception& e) {
    std::cerr << "equivalence_dump: " << e.what() << "\n";
    return 1;
  }
}
