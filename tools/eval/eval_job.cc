#include "tools/eval/eval_job.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "common/check.h"
#include "common/errors.h"
#include "common/logging.h"
#include "model/dense_kernels.h"
#include "model/fcmae.h"
#include "model/weights.h"
#include "tools/export/fcmae_state.h"

namespace cnx::eval {

namespace {

// A user's mistake (a flag, the data): a typed error without a source position.
template <class E, class... Parts>
void require(bool ok, const Parts&... parts) {
  if (!ok) throw E(str(parts...));
}

void seed_global_generator(uint64_t seed) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_current_seed(seed);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The encoder tensors of `state` under `prefix`, renamed to reference names
// (for architecture inference only; loading goes through model_io).
model::NamedTensors reference_named(const model::NamedTensors& state, const std::string& prefix,
                                    const std::string& source) {
  std::vector<std::string> keys;
  model::NamedTensors inside;
  for (const auto& [name, t] : state) {
    if (name.rfind(prefix, 0) != 0) continue;
    keys.push_back(name.substr(prefix.size()));
    inside.emplace_back(keys.back(), t);
  }
  if (model::detect_naming(keys, source) != model::Naming::kTimm) return inside;
  model::NamedTensors out;
  for (const auto& [name, t] : inside) {
    if (auto ref = model::timm_to_reference(name)) out.emplace_back(*ref, t);
  }
  return out;
}

struct BuiltModel {
  model::ConvNeXtV2 net{nullptr};
  std::string encoder;
};

BuiltModel build_model(const EvalJobOptions& o, int64_t num_classes) {
  BuiltModel b;
  model::ConvNeXtV2Options opts;
  model::NamedTensors encoder_state;
  model::LoadOptions lo;
  lo.allow_missing_head = true;
  lo.ignore_file_head = true;
  std::string source;
  if (o.random_init) {
    require<UsageError>(o.encoder.empty(), "give either an encoder file or --random-init, not both");
    require<UsageError>(o.init == "fcmae" || o.init == "dense", "--init must be fcmae or dense, got '", o.init, "'");
    opts = model::variant_options(o.model);
    const std::string init_name = o.init == "fcmae" && o.fcmae_init != "reference" ? "fcmae " + o.fcmae_init : o.init;
    b.encoder = "random-init (" + init_name + ", " + o.model + ", seed " + std::to_string(o.seed) + ")";
    if (o.init == "fcmae") {
      model::FcmaeOptions fo = model::fcmae_options(o.model);
      fo.init = o.fcmae_init;
      fo.encoder_type = "dense_masked";
      seed_global_generator(o.seed);
      model::Fcmae f(fo);
      encoder_state = model::export_state_dict(*f->encoder_model(), model::Naming::kReference);
      source = "FCMAE init";
    }
  } else {
    require<UsageError>(!o.encoder.empty(), "an encoder file is required (or --random-init for the baseline)");
    source = tools::resolve_state_file(o.encoder);
    encoder_state = tools::read_state_file(source);
    lo.prefix = tools::encoder_prefix(encoder_state);
    opts = tools::infer_encoder_options(reference_named(encoder_state, lo.prefix, source), "", source);
    b.encoder = o.encoder;
  }
  opts.num_classes = o.mode == EvalMode::kFinetune ? num_classes : 0;
  opts.drop_path_rate = o.mode == EvalMode::kFinetune ? o.drop_path_rate : 0.0;
  opts.head_init_scale = o.head_init_scale;
  // The head (and everything random init draws) from the seed: the same on
  // every rank.
  seed_global_generator(o.seed + 1);
  b.net = model::ConvNeXtV2(opts);
  if (!encoder_state.empty()) {
    const model::LoadReport rep = model::load_state_dict(*b.net, encoder_state, lo, source);
    CNX_LOG_INFO(
        "loaded {} tensors from {} ({} naming); left at init: {}", rep.loaded.size(), source,
        model::to_string(rep.naming), rep.left_at_init.empty() ? "none" : [&] {
          std::string s;
          for (const auto& n : rep.left_at_init) s += (s.empty() ? "" : ", ") + n;
          return s;
        }());
  }
  return b;
}

}  // namespace

std::unique_ptr<comm::Communicator> communicator_from_environment() {
  if (!comm::launched_by_mpi()) return nullptr;
  comm::CommOptions co;
  co.backend = "mpi";
  return comm::make_communicator(co);
}

EvalSummary run_eval_job(const EvalJobOptions& o, comm::Communicator* comm) {
  const auto t0 = std::chrono::steady_clock::now();
  const int world = comm ? comm->size() : 1;
  const int rank = comm ? comm->rank() : 0;
  require<UsageError>(o.input_size > 0 && o.input_size % 32 == 0,
                      "--input-size must be a positive multiple of 32, got ", o.input_size);
  require<UsageError>(!o.train_index.empty() && !o.test_index.empty(),
                      "both a train and a test shard index are required");
  require<UsageError>(o.eval_crop_pct > 0.0 && o.eval_crop_pct <= 1.0, "--eval-crop-pct must be in (0, 1], got ",
                      o.eval_crop_pct);
  require<UsageError>(o.holdout >= 0, "--holdout must be >= 0, got ", o.holdout);
  for (int c = 0; c < 3; ++c) require<UsageError>(o.std[c] > 0.0f, "--std must be > 0, got ", o.std[c]);

  ReadOptions ro;
  ro.rank = rank;
  ro.world = world;
  ro.verify_sha256 = o.verify_sha256;
  ro.index_path = o.train_index;
  ro.shard_root = o.train_shard_root;
  ro.max_samples = o.max_train;
  ro.skip = o.mode == EvalMode::kFinetune ? o.holdout : 0;
  const LabelledSet train = read_labelled_shards(ro);
  LabelledSet holdout;
  if (o.mode == EvalMode::kFinetune && o.holdout > 0) {
    ro.skip = 0;
    ro.max_samples = o.holdout;
    holdout = read_labelled_shards(ro);
    require<UserError>(holdout.total == o.holdout, "'", o.train_index, "' holds ", holdout.total,
                       " labelled samples, fewer than the --holdout ", o.holdout);
  }
  ro.index_path = o.test_index;
  ro.shard_root = o.test_shard_root;
  ro.max_samples = o.max_test;
  const LabelledSet test = read_labelled_shards(ro);
  require<UserError>(train.total > 0, "'", o.train_index, "' holds no labelled samples");
  require<UserError>(test.total > 0, "'", o.test_index, "' holds no labelled samples");
  const int64_t classes = std::max(num_classes(train), num_classes(test));
  require<UserError>(classes >= 2, "need at least 2 classes, the shards have ", classes);
  if (rank == 0)
    CNX_LOG_INFO("data: {} train samples from {}, {} test samples from {}, {} classes, {} rank(s)", train.total,
                 o.train_index, test.total, o.test_index, classes, world);

  BuiltModel built = build_model(o, classes);
  EvalSummary s;
  s.encoder = built.encoder;
  s.architecture = model::describe(built.net->options());
  s.num_classes = classes;
  s.input_size = o.input_size;
  s.world_size = world;
  s.threads = at::get_num_threads();
  s.seed = o.seed;

  data::TransformOptions eval_tf;
  eval_tf.size = o.input_size;
  eval_tf.train = false;
  eval_tf.hflip = false;
  eval_tf.crop_pct = o.eval_crop_pct;
  eval_tf.mean = o.mean;
  eval_tf.std = o.std;
  s.eval_transform = describe_eval_transform(eval_tf);
  s.eval_crop_pct = o.eval_crop_pct;
  s.mean = o.mean;
  s.std = o.std;
  if (rank == 0) CNX_LOG_INFO("eval transform: {}", s.eval_transform);
  if (rank == 0)
    CNX_LOG_INFO("dense kernels: {}",
                 model::dense_kernels_name(model::effective_dense_kernels(
                     *built.net, at::empty({1, 1, o.input_size, o.input_size}), model::dense_kernels())));

  if (o.mode == EvalMode::kLinearProbe) {
    s.mode = "linear_probe";
    const auto tf = std::chrono::steady_clock::now();
    const Features ftr = extract_features(*built.net, train, eval_tf, o.batch_size, comm);
    const Features fte = extract_features(*built.net, test, eval_tf, o.batch_size, comm);
    s.feature_seconds = seconds_since(tf);
    if (rank == 0)
      CNX_LOG_INFO("features: {} train + {} test rows of {} in {:.1f} s", ftr.x.size(0), fte.x.size(0), ftr.x.size(1),
                   s.feature_seconds);
    const auto tt = std::chrono::steady_clock::now();
    ProbeOptions po = o.probe;
    po.seed = o.seed;
    // The head's ops are tiny ([256, C] x [C, K]): waking intra-op threads
    // for each costs more than it saves (measured ~40 ms/step with 2 threads
    // on a busy 2-core host), so the head trains on one thread.
    const int threads = at::get_num_threads();
    at::set_num_threads(1);
    const LinearProbe probe = train_linear_probe(ftr.x, ftr.labels, classes, po);
    at::set_num_threads(threads);
    s.train_seconds = seconds_since(tt);
    s.top1 = top1_accuracy(probe.logits(fte.x), fte.labels);
    s.n_train = ftr.x.size(0);
    s.n_test = fte.x.size(0);
    s.epochs = po.epochs;
    s.failed = ftr.failed + fte.failed;
    s.final_loss = probe.final_loss;
  } else {
    s.mode = "finetune";
    FinetuneOptions fo = o.finetune;
    fo.seed = o.seed;
    fo.eval_transform = eval_tf;
    fo.train_transform.size = o.input_size;
    fo.train_transform.train = true;
    fo.train_transform.mean = o.mean;
    fo.train_transform.std = o.std;
    fo.batch_size = o.batch_size;
    const auto tt = std::chrono::steady_clock::now();
    const FinetuneResult r = finetune(*built.net, train, test, fo, comm, o.holdout > 0 ? &holdout : nullptr);
    s.train_seconds = seconds_since(tt);
    s.top1 = r.top1;
    s.n_train = r.n_train;
    s.n_test = r.n_test;
    s.epochs = fo.epochs;
    s.failed = r.failed;
    s.final_loss = r.epoch_loss.empty() ? 0.0 : r.epoch_loss.back();
    s.n_holdout = r.n_holdout;
    s.epoch_loss = r.epoch_loss;
    s.epoch_holdout = r.epoch_holdout;
    s.holdout_epoch = r.holdout_epoch;
    s.epoch_seconds = r.epoch_seconds;
    s.step_loss = r.step_loss;
    s.step_lr = r.step_lr;
  }
  s.seconds = seconds_since(t0);
  return s;
}

std::string summary_json(const EvalSummary& s) {
  nlohmann::ordered_json j;
  j["mode"] = s.mode;
  j["top1"] = s.top1;
  j["n_train"] = s.n_train;
  j["n_test"] = s.n_test;
  j["epochs"] = s.epochs;
  j["seconds"] = s.seconds;
  j["feature_seconds"] = s.feature_seconds;
  j["train_seconds"] = s.train_seconds;
  j["final_train_loss"] = s.final_loss;
  j["num_classes"] = s.num_classes;
  j["input_size"] = s.input_size;
  j["encoder"] = s.encoder;
  j["architecture"] = s.architecture;
  j["failed_samples"] = s.failed;
  j["world_size"] = s.world_size;
  j["threads_per_rank"] = s.threads;
  j["seed"] = s.seed;
  j["eval_transform"] = s.eval_transform;
  j["eval_crop_pct"] = s.eval_crop_pct;
  j["mean"] = s.mean;
  j["std"] = s.std;
  if (s.mode == "finetune") {
    j["n_holdout"] = s.n_holdout;
    j["epoch_train_loss"] = s.epoch_loss;
    j["epoch_holdout_top1"] = s.epoch_holdout;
    j["holdout_epochs"] = s.holdout_epoch;
    j["epoch_seconds"] = s.epoch_seconds;
  }
  return j.dump(2) + "\n";
}

std::string summary_line(const EvalSummary& s) {
  return str(s.mode == "finetune" ? "fine-tune" : "linear probe", " top-1 ", s.top1 * 100.0, "% (test n=", s.n_test,
             ") | train n=", s.n_train, ", ", s.epochs, " epochs, ", s.input_size, " px | ", s.encoder, " | ",
             s.seconds, " s on ", s.world_size, " rank(s) | eval: ", s.eval_transform);
}

std::string describe_eval_transform(const data::TransformOptions& t) {
  const int64_t resize = static_cast<int64_t>(static_cast<double>(t.size) / t.crop_pct + 1e-9);
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "resize shorter side to %lld (%lld / crop_pct %.3f) + centre crop %lld, bicubic antialias, "
                "mean [%.3f %.3f %.3f] std [%.3f %.3f %.3f]",
                static_cast<long long>(resize), static_cast<long long>(t.size), t.crop_pct,
                static_cast<long long>(t.size), t.mean[0], t.mean[1], t.mean[2], t.std[0], t.std[1], t.std[2]);
  return buf;
}

}  // namespace cnx::eval
