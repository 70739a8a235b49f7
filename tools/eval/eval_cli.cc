#include "tools/eval/eval_cli.h"

#include <ATen/Parallel.h>

#include <exception>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>

#include "common/cli.h"
#include "common/config.h"
#include "common/logging.h"
#include "model/dense_kernels.h"
#include "tools/export/fcmae_state.h"
#include "tools/export/run_config.h"
#include "tools/visualize/plot.h"

namespace cnx::eval {

namespace {

// Loss and lr per step, held-out top-1 per scored epoch.
data::Image finetune_curves(const EvalSummary& s) {
  std::vector<double> steps(s.step_loss.size()), epochs(s.epoch_holdout.size()), acc;
  for (size_t i = 0; i < steps.size(); ++i) steps[i] = static_cast<double>(i + 1);
  for (size_t i = 0; i < epochs.size(); ++i)
    epochs[i] = static_cast<double>(i < s.holdout_epoch.size() ? s.holdout_epoch[i] : static_cast<int64_t>(i + 1));
  for (double a : s.epoch_holdout) acc.push_back(100.0 * a);
  std::vector<double> epoch_end, epoch_loss = s.epoch_loss;
  const double per_epoch = s.epoch_loss.empty() ? 0.0 : static_cast<double>(steps.size()) / s.epoch_loss.size();
  for (size_t i = 0; i < s.epoch_loss.size(); ++i) epoch_end.push_back(per_epoch * static_cast<double>(i + 1));
  viz::Chart loss{"training loss",
                  "step",
                  {viz::Series{"per step", steps, s.step_loss, {214, 39, 40}},
                   viz::Series{"epoch mean", epoch_end, epoch_loss, {40, 40, 40}, true}}};
  viz::Chart lr{"learning rate", "step", {viz::Series{"", steps, s.step_lr, {31, 119, 180}}}, true};
  viz::Chart ho{"held-out top-1 %", "epoch", {viz::Series{"", epochs, acc, {44, 160, 44}, true}}};
  return viz::render_charts({loss, lr, ho});
}

}  // namespace

int eval_main(int argc, char** argv, EvalMode mode) {
  const bool probe = mode == EvalMode::kLinearProbe;
  CLI::App app{probe ? "Linear-probe top-1 of a ConvNeXt V2 encoder on labelled shards"
                     : "Fine-tune a ConvNeXt V2 encoder (layer-wise lr decay) on labelled shards; report top-1"};
  EvalJobOptions o;
  o.mode = mode;
  int threads = 0;
  std::string kernels = model::dense_kernels_name(model::dense_kernels());
  std::string json_path, log_level = "info";
  bool no_verify = false, no_standardize = false;
  std::vector<double> crop_scale{0.35, 1.0};
  int64_t epochs = probe ? o.probe.epochs : o.finetune.epochs;
  double lr = 0.0, weight_decay = probe ? o.probe.weight_decay : o.finetune.weight_decay;
  if (!probe) o.batch_size = 32;
  std::string curves_path;
  std::vector<float> mean(o.mean.begin(), o.mean.end()), stdv(o.std.begin(), o.std.end());

  app.add_option("--checkpoint,-c", o.encoder,
                 "encoder weights: exported .safetensors/.pt (reference or timm names), FCMAE model.pt, "
                 "checkpoint folder or checkpoint root");
  app.add_option("--encoder", o.encoder, "alias of --checkpoint")->group("");
  app.add_flag("--random-init", o.random_init, "baseline: a randomly initialised encoder instead of -c");
  app.add_option("--init", o.init,
                 "random init: fcmae (pretraining's start: FCMAE's init of the config's model.init) | dense (std 0.02)")
      ->check(CLI::IsMember({"fcmae", "dense"}))
      ->capture_default_str();
  app.add_option("--model", o.model, "variant for --random-init")->capture_default_str();
  app.add_option("--train-index", o.train_index, "index.json of the labelled training shards")->required();
  app.add_option("--test-index", o.test_index, "index.json of the held-out shards")->required();
  app.add_option("--train-shard-root", o.train_shard_root, "folder of the training shards (default: the index's)");
  app.add_option("--test-shard-root", o.test_shard_root, "folder of the test shards (default: the index's)");
  app.add_option("--max-train", o.max_train, "use the first N labelled training samples (0 = all)")
      ->check(cli::non_negative())
      ->capture_default_str();
  app.add_option("--max-test", o.max_test, "use the first N labelled test samples (0 = all)")
      ->check(cli::non_negative())
      ->capture_default_str();
  cli::ConfigFlags cfg;
  cli::add_config_flags(app, &cfg,
                        "pretraining config: its data.input_size, data.eval_crop_pct, data.mean and data.std are the "
                        "defaults of --input-size, --eval-crop-pct, --mean and --std");
  app.add_option("--input-size", o.input_size, "input resolution (multiple of 32)")->capture_default_str();
  app.add_option("--eval-crop-pct", o.eval_crop_pct,
                 "evaluation: resize to input-size / this, centre crop (0.875 ImageNet convention; 1.0 = whole "
                 "image)")
      ->check(cli::in_range(1e-3, 1.0))
      ->capture_default_str();
  app.add_option("--mean", mean, "normalisation mean per channel (as in pretraining)")
      ->expected(3)
      ->capture_default_str();
  app.add_option("--std", stdv, "normalisation std per channel (as in pretraining)")
      ->expected(3)
      ->capture_default_str();
  app.add_option("--batch-size", o.batch_size, probe ? "feature-extraction batch" : "batch per rank")
      ->check(cli::positive())
      ->capture_default_str();
  app.add_option("--epochs", epochs, probe ? "epochs of the linear head over cached features" : "fine-tuning epochs")
      ->check(cli::positive())
      ->capture_default_str();
  app.add_option("--threads", threads, "intra-op threads per rank (default: cores / ranks on this host)")
      ->check(cli::non_negative());
  app.add_option("--kernels", kernels,
                 "dense model kernels: cnx (ours on an all-visible layout; the fastest) | libtorch-cl "
                 "(LibTorch, channels-last) | libtorch (LibTorch, NCHW)")
      ->check(CLI::IsMember({"cnx", "libtorch-cl", "libtorch"}))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "seed (head init, shuffles, augmentation, random init)")->capture_default_str();
  app.add_option("--lr", lr, probe ? "linear head lr (default 1e-3)" : "absolute peak lr (default: blr * batch / 256)");
  app.add_option("--weight-decay", weight_decay, "AdamW weight decay")->capture_default_str();
  app.add_option("--output,-o", json_path, "write the JSON summary here (rank 0; default: stdout)");
  app.add_option("--json", json_path, "alias of --output")->group("");
  app.add_flag("--no-verify", no_verify, "do not check shard sha256 against the index");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")->capture_default_str();
  if (probe) {
    app.add_flag("--no-standardize", no_standardize, "skip the BatchNorm-style feature standardisation");
    app.add_option("--probe-batch-size", o.probe.batch_size, "linear head mini-batch")->capture_default_str();
  } else {
    app.add_option("--blr", o.finetune.blr, "base lr (lr = blr * global batch / 256)")->capture_default_str();
    app.add_option("--min-lr", o.finetune.min_lr, "final lr of the cosine")->capture_default_str();
    app.add_option("--warmup-epochs", o.finetune.warmup_epochs, "linear warmup (fractional epochs)")
        ->capture_default_str();
    app.add_option("--layer-decay", o.finetune.layer_decay, "layer-wise lr decay")->capture_default_str();
    app.add_option("--drop-path", o.drop_path_rate, "stochastic depth rate")->capture_default_str();
    app.add_option("--smoothing", o.finetune.label_smoothing, "label smoothing")->capture_default_str();
    app.add_option("--clip-grad", o.finetune.clip_grad, "max global grad norm (0 = off)")->capture_default_str();
    app.add_option("--crop-scale", crop_scale, "RandomResizedCrop area range")->expected(2)->capture_default_str();
    app.add_option("--log-every", o.finetune.log_every, "progress every N steps")->capture_default_str();
    app.add_option("--holdout", o.holdout,
                   "hold out the first N labelled training samples (never trained on; --max-train counts the "
                   "samples after them) and report their top-1 after every epoch (see --holdout-every)")
        ->check(cli::non_negative())
        ->capture_default_str();
    app.add_option("--holdout-every", o.finetune.holdout_every,
                   "score the held-out samples after every Nth epoch and after the last (0 = after the last only)")
        ->check(cli::non_negative())
        ->capture_default_str();
    app.add_option("--curves", curves_path, "write loss / lr / held-out accuracy curves to this PNG (rank 0)");
  }
  const char* program = probe ? "cnx-eval" : "cnx-finetune";
  return cli::run_main(program, app, argc, argv, [&] {
    std::unique_ptr<comm::Communicator> comm = communicator_from_environment();
    const int rank = comm ? comm->rank() : 0;
    cnx::log::init(probe ? "eval" : "finetune", comm ? rank : -1, log_level);
    if (threads == 0) {
      const int local = comm ? std::max(1, comm->local_size()) : 1;
      threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local);
    }
    at::set_num_threads(threads);
    model::set_dense_kernels(model::parse_dense_kernels(kernels, "--kernels"));
    o.verify_sha256 = !no_verify;
    // Settings: the flags, else --config, else the config saved with the
    // checkpoint or in the exported file's metadata, else the defaults
    // (tools/export/run_config.h).
    std::optional<tools::SavedRunConfig> saved;
    if (!o.random_init && !o.encoder.empty()) {
      o.encoder = tools::resolve_state_file(o.encoder);
      saved = tools::saved_run_config(o.encoder);
    }
    const tools::ToolConfig tc = tools::tool_config(cfg.path, cfg.overrides, saved);
    const Config& c = tc.config;
    o.fcmae_init = c.model.init;
    if (c.data.mean.size() != 3 || c.data.std.size() != 3)
      throw ConfigError(tc.source + ": data.mean and data.std need 3 values for evaluation");
    if (app.count("--input-size") == 0) {
      o.input_size = c.data.input_size;
    } else if (tc.from_saved && o.input_size != c.data.input_size && rank == 0) {
      CNX_LOG_WARN("--input-size {}: the encoder was pretrained at {} px ({})", o.input_size, c.data.input_size,
                   tc.source);
    }
    if (app.count("--eval-crop-pct") == 0) o.eval_crop_pct = c.data.eval_crop_pct;
    if (app.count("--mean") == 0) mean.assign(c.data.mean.begin(), c.data.mean.end());
    if (app.count("--std") == 0) stdv.assign(c.data.std.begin(), c.data.std.end());
    if (rank == 0)
      CNX_LOG_INFO("input {} px, mean [{}, {}, {}], std [{}, {}, {}], crop {} (settings: flags, then {})", o.input_size,
                   mean[0], mean[1], mean[2], stdv[0], stdv[1], stdv[2], o.eval_crop_pct, tc.source);
    for (int c = 0; c < 3; ++c) {
      o.mean[c] = mean.at(c);
      o.std[c] = stdv.at(c);
    }
    if (probe) {
      o.probe.epochs = epochs;
      if (lr > 0) o.probe.lr = lr;
      o.probe.weight_decay = weight_decay;
      o.probe.standardize = !no_standardize;
    } else {
      o.finetune.epochs = epochs;
      o.finetune.lr = lr;
      o.finetune.weight_decay = weight_decay;
      o.finetune.train_transform.scale_lo = crop_scale.at(0);
      o.finetune.train_transform.scale_hi = crop_scale.at(1);
    }
    const EvalSummary s = run_eval_job(o, comm.get());
    if (rank == 0) {
      CNX_LOG_INFO("{}", summary_line(s));
      const std::string json = summary_json(s);
      if (!json_path.empty()) {
        std::ofstream out(json_path, std::ios::trunc);
        out << json;
        out.close();
        if (!out) throw std::runtime_error("cannot write the JSON summary to '" + json_path + "'");
        CNX_LOG_INFO("summary written to {}", json_path);
      } else {
        std::cout << json;
      }
      if (!curves_path.empty()) {
        viz::write_png_file(curves_path, finetune_curves(s));
        CNX_LOG_INFO("curves written to {}", curves_path);
      }
    }
    if (comm) comm->barrier();
    return 0;
  });
}

}  // namespace cnx::eval
