// cnx-visualize: FCMAE reconstructions as PNG grids (see reconstruct.h).
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/blas_info.h"
#include "common/cli.h"
#include "common/logging.h"
#include "model/fcmae.h"
#include "model/onednn_matmul.h"
#include "tools/export/fcmae_state.h"
#include "tools/export/run_config.h"
#include "tools/visualize/plot.h"
#include "tools/visualize/reconstruct.h"

int main(int argc, char** argv) {
  cnx::blas::init_compute_environment("cnx-visualize", argc, argv);
  cnx::model::log_gemm_path("cnx-visualize");
  CLI::App app{"Write FCMAE reconstructions: original | masked | reconstruction | reconstruction + visible"};
  cnx::cli::ConfigFlags cfg;
  std::string checkpoint, index, out_dir, encoder = "sparse";
  std::vector<std::string> images;
  int64_t count = 8, size = 224;
  double ratio = 0.6;
  uint64_t mask_seed = 0;
  int gap = 4, threads = 0;
  std::vector<float> mean{0.485f, 0.456f, 0.406f}, stdv{0.229f, 0.224f, 0.225f};
  double crop_pct = 0.875;
  cnx::cli::add_config_flags(app, &cfg,
                             "pretraining config: data.input_size, data.mean, data.std, data.eval_crop_pct, "
                             "mask.ratio and checkpoint.root are the defaults of the flags below");
  app.add_option("--checkpoint,-c", checkpoint,
                 "checkpoint root, checkpoint folder, or FCMAE model.pt/.safetensors (default: checkpoint.root)");
  app.add_option("--index", index, "shard index.json: show its first --count images");
  app.add_option("--image", images, "image files to show (.jpg/.png; repeatable)");
  app.add_option("--count", count, "images taken from the shards")->check(cnx::cli::positive())->capture_default_str();
  app.add_option("--input-size", size, "resolution, a multiple of 32 (default: data.input_size)")
      ->capture_default_str();
  app.add_option("--mask-ratio", ratio, "fraction of 32x32 patches removed (default: mask.ratio)")
      ->check(cnx::cli::in_range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--mask-seed", mask_seed, "mask seed (same seed, same masks)")->capture_default_str();
  app.add_option("--encoder", encoder,
                 "sparse | dense_masked (same result) | dense (masks the input only: for a model pretrained with "
                 "model.encoder: dense)")
      ->check(CLI::IsMember({"sparse", "dense_masked", "dense"}))
      ->capture_default_str();
  app.add_option("--mean", mean, "normalisation mean, as in pretraining (default: data.mean)")
      ->expected(3)
      ->capture_default_str();
  app.add_option("--std", stdv, "normalisation std, as in pretraining (default: data.std)")
      ->expected(3)
      ->capture_default_str();
  app.add_option("--eval-crop-pct", crop_pct,
                 "resize to input-size / this, centre crop; 1.0 = whole image (default: data.eval_crop_pct)")
      ->check(cnx::cli::in_range(1e-3, 1.0))
      ->capture_default_str();
  bool no_labels = false;
  app.add_flag("--no-labels", no_labels, "no column names above grid.png");
  app.add_option("--gap", gap, "white pixels between panels and rows")
      ->check(cnx::cli::non_negative())
      ->capture_default_str();
  app.add_option("--threads", threads, "intra-op threads (default: all cores)")->check(cnx::cli::non_negative());
  app.add_option("--output,-o", out_dir, "output folder (recon-000.png ..., grid.png); required");
  app.add_option("--out-dir", out_dir, "alias of --output")->group("");
  return cnx::cli::run_main("cnx-visualize", app, argc, argv, [&] {
    cnx::log::init("visualize");
    if (out_dir.empty()) throw cnx::UsageError("--output is required (the folder for the PNGs)");
    if (checkpoint.empty() && !cfg.given())
      throw cnx::UsageError("--checkpoint is required (or --config: its checkpoint.root)");
    std::string job_hint;
    if (checkpoint.empty()) {
      const cnx::Config c = cnx::cli::load_config(cfg);
      checkpoint = c.checkpoint.root;
      job_hint = c.job.id;
    }
    if (index.empty() == images.empty()) throw cnx::UsageError("give either --index or --image");
    const std::string file = cnx::tools::resolve_state_file(checkpoint, job_hint);
    // Settings: the flags, else --config, else the config saved with the
    // checkpoint, else the defaults (tools/export/run_config.h).
    const cnx::tools::ToolConfig tc =
        cnx::tools::tool_config(cfg.path, cfg.overrides, cnx::tools::saved_run_config(file));
    const cnx::Config& c = tc.config;
    if (c.data.mean.size() != 3 || c.data.std.size() != 3)
      throw cnx::ConfigError(tc.source + ": data.mean and data.std need 3 values for cnx-visualize");
    if (app.count("--input-size") == 0) {
      size = c.data.input_size;
    } else if (tc.from_saved && size != c.data.input_size) {
      CNX_LOG_WARN(
          "--input-size {}: the checkpoint was trained at {} px ({}); reconstructions at another size are "
          "not what the model learnt",
          size, c.data.input_size, tc.source);
    }
    if (app.count("--mask-ratio") == 0) ratio = c.mask.ratio;
    if (app.count("--eval-crop-pct") == 0) crop_pct = c.data.eval_crop_pct;
    if (app.count("--mean") == 0) mean.assign(c.data.mean.begin(), c.data.mean.end());
    if (app.count("--std") == 0) stdv.assign(c.data.std.begin(), c.data.std.end());
    if (size <= 0 || size % 32 != 0)
      throw cnx::UsageError("--input-size must be a positive multiple of 32, got " + std::to_string(size));
    CNX_LOG_INFO("input {} px, mean [{}, {}, {}], std [{}, {}, {}], crop {} (settings: flags, then {})", size, mean[0],
                 mean[1], mean[2], stdv[0], stdv[1], stdv[2], crop_pct, tc.source);
    at::set_num_threads(threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency())));
    cnx::viz::Normalization norm;
    for (int k = 0; k < 3; ++k) {
      norm.mean[k] = mean[k];
      norm.std[k] = stdv[k];
    }
    norm.crop_pct = crop_pct;
    const cnx::model::NamedTensors state = cnx::tools::read_state_file(file);
    cnx::model::FcmaeOptions fo = cnx::tools::infer_fcmae_options(state, file);
    if (fo.encoder.in_chans != 3)
      throw cnx::UserError(file + ": the model takes " + std::to_string(fo.encoder.in_chans) +
                           " input channels; cnx-visualize shows RGB images (3)");
    if (tc.source != "defaults" && (fo.encoder.dims != c.model.dims || fo.encoder.depths != c.model.depths))
      throw cnx::ConfigError(tc.source + ": model.dims/depths do not match the checkpoint's tensors (" + file +
                             "); pass the run's own config");
    if (tc.source != "defaults") fo.norm_pix_loss = c.model.norm_pix_loss;  // not stored in tensors
    fo.encoder_type = encoder;
    cnx::model::Fcmae net(fo);
    cnx::tools::load_fcmae_state(*net, state, file);

    std::vector<std::string> names;
    at::Tensor batch = index.empty() ? cnx::viz::load_image_files(images, size, norm)
                                     : cnx::viz::load_shard_images(index, count, size, norm, &names);
    if (names.empty()) names = images;
    const int64_t grid = size / net->patch_size();
    const at::Tensor mask = cnx::model::generate_mask(batch.size(0), grid, grid, ratio, mask_seed);
    const cnx::viz::Panels panels = cnx::viz::reconstruct(*net, batch, mask, norm);

    std::filesystem::create_directories(out_dir);
    std::vector<cnx::data::Image> rows;
    for (int64_t i = 0; i < batch.size(0); ++i) {
      rows.push_back(cnx::viz::compose_row(panels, i, gap));
      char name[64];
      std::snprintf(name, sizeof(name), "recon-%03lld.png", static_cast<long long>(i));
      cnx::viz::write_png(out_dir + "/" + name, rows.back());
    }
    cnx::data::Image picture = cnx::viz::stack_rows(rows, gap);
    if (!no_labels)
      picture = cnx::viz::add_column_labels(picture, static_cast<int>(size), gap, cnx::viz::panel_labels());
    cnx::viz::write_png(out_dir + "/grid.png", picture);
    CNX_LOG_INFO(
        "{} reconstructions ({}x{}, mask ratio {}, seed {}, loss {:.4f}) from {} written to {}/grid.png "
        "and {}/recon-*.png (panels: original | masked | reconstruction | reconstruction + visible)",
        batch.size(0), size, size, ratio, mask_seed, panels.loss, file, out_dir, out_dir);
    return 0;
  });
}
