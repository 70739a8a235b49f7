// cnx-export: FCMAE checkpoint (or state file) -> encoder-only weights in the
// reference (or timm) naming, as .safetensors or .pt. See fcmae_state.h.
#include <CLI/CLI.hpp>
#include <exception>
#include <map>
#include <string>

#include "common/build_info.h"
#include "common/cli.h"
#include "common/logging.h"
#include "common/strings.h"
#include "model/convnextv2.h"
#include "model/options.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "tools/export/fcmae_state.h"
#include "tools/export/run_config.h"

using cnx::ends_with;

int main(int argc, char** argv) {
  CLI::App app{"Export the encoder of an FCMAE checkpoint as dense ConvNeXt V2 weights"};
  cnx::cli::ConfigFlags cfg;
  std::string input, output, naming_text = "reference";
  cnx::cli::add_config_flags(app, &cfg, "job config: its checkpoint.root is the default --checkpoint");
  app.add_option("--checkpoint,-c", input,
                 "checkpoint root (its 'latest'), checkpoint folder step-N, or a state file (.pt/.safetensors); "
                 "default: checkpoint.root of --config");
  app.add_option("--input,-i", input, "alias of --checkpoint")->group("");
  app.add_option("--output,-o", output,
                 "output file (.safetensors, or .pt: torch.load(path)[\"model\"] is the state dict)")
      ->required();
  app.add_option("--naming", naming_text, "tensor names: reference | timm")
      ->check(CLI::IsMember({"reference", "timm"}))
      ->capture_default_str();
  return cnx::cli::run_main("cnx-export", app, argc, argv, [&] {
    cnx::log::init("export");
    std::string job_hint;
    if (input.empty()) {
      if (!cfg.given()) throw cnx::UsageError("--checkpoint is required (or --config, whose checkpoint.root is used)");
      const cnx::Config c = cnx::cli::load_config(cfg);
      input = c.checkpoint.root;
      job_hint = c.job.id;
    }
    const std::string file = cnx::tools::resolve_state_file(input, job_hint);
    // The run's config travels with the weights (metadata cnx_config), so
    // cnx-eval and cnx-finetune read its input size, mean and std.
    const auto saved = cnx::tools::saved_run_config(file);
    const cnx::tools::ToolConfig tc = cnx::tools::tool_config(cfg.path, cfg.overrides, saved);
    const cnx::model::NamedTensors state = cnx::tools::read_state_file(file);
    const cnx::model::Naming naming = cnx::model::parse_naming(naming_text);
    const cnx::tools::EncoderExport enc = cnx::tools::extract_encoder(state, naming, file);
    if (tc.source != "defaults" &&
        (enc.options.dims != tc.config.model.dims || enc.options.depths != tc.config.model.depths))
      throw cnx::ConfigError(tc.source + ": model.dims/depths do not match the tensors of " + file +
                             "; pass the run's own config");
    int64_t params = 0;
    for (const auto& [name, t] : enc.tensors) params += t.numel();
    if (ends_with(output, ".pt") || ends_with(output, ".pth")) {
      // {"model": {name: tensor}}: what the reference's scripts read with
      // torch.load(path)["model"].
      cnx::model::save_pt(output, enc.tensors, "model");
    } else {
      std::map<std::string, std::string> meta{{"format", "pt"},
                                              {"naming", naming_text},
                                              {"content", "convnextv2-encoder"},
                                              {"architecture", cnx::model::describe(enc.options)},
                                              {cnx::tools::kVersionMetadataKey, cnx::build_version()}};
      if (tc.source != "defaults")
        meta[cnx::tools::kConfigMetadataKey] =
            tc.from_saved && cfg.overrides.empty() ? saved->yaml : cnx::to_yaml(tc.config);
      cnx::model::write_safetensors(output, enc.tensors, meta);
    }
    if (tc.source == "defaults")
      CNX_LOG_WARN(
          "{} carries no run config (a checkpoint from before config.yaml was saved, and no --config): "
          "cnx-eval / cnx-finetune will need --input-size, --mean and --std",
          file);
    CNX_LOG_INFO("exported encoder ({}; {} tensors, {} parameters, {} names) from {} to {}",
                 cnx::model::describe(enc.options), enc.tensors.size(), params, naming_text, file, output);
    return 0;
  });
}
