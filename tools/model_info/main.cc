// cnx-model-info: prints parameters and GFLOPs (multiply-adds of convs and
// linears, the paper's convention) of ConvNeXt V2 variants or a custom shape.
//
//   cnx-model-info --model atto [--input-size 224] [--num-classes 1000]
//   cnx-model-info --all [--input-size 384]
//   cnx-model-info --config configs/fcmae_atto.yaml
//   cnx-model-info --depths 2,2,6,2 --dims 40,80,160,320 [--in-chans 1]
//   cnx-model-info --model tiny --instantiate   (also builds it and counts numel)
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "common/cli.h"
#include "model/complexity.h"
#include "model/convnextv2.h"
#include "model/options.h"

namespace {

using cnx::model::ConvNeXtV2Options;

void print_header() {
  std::printf("%-8s %-12s %-22s %12s %9s %10s\n", "model", "depths", "dims", "params", "params(M)", "GFLOPs");
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

void print_row(const std::string& name, const ConvNeXtV2Options& o, int64_t size, bool instantiate) {
  const auto c = cnx::model::complexity(o, size, size);
  std::printf("%-8s %-12s %-22s %12lld %9.2f %10.3f\n", name.c_str(), join(o.depths).c_str(), join(o.dims).c_str(),
              static_cast<long long>(c.params), static_cast<double>(c.params) / 1e6, static_cast<double>(c.macs) / 1e9);
  if (instantiate) {
    cnx::model::ConvNeXtV2 model(o);
    const int64_t n = cnx::model::count_parameters(*model);
    std::printf("         instantiated: %lld parameters (%s)\n", static_cast<long long>(n),
                n == c.params ? "matches" : "MISMATCH");
    if (n != c.params) throw std::runtime_error("instantiated parameter count differs from the closed form");
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Parameter and FLOP counts of ConvNeXt V2 (FLOPs = multiply-adds of convs and linears)"};
  cnx::cli::ConfigFlags cfg;
  std::string model = "atto";
  int64_t size = 224;
  int64_t num_classes = 1000;
  int64_t in_chans = 3;
  bool all = false, instantiate = false;
  std::vector<int64_t> depths, dims;
  cnx::cli::add_config_flags(app, &cfg,
                             "job config: model.name/depths/dims/in_chans/num_classes and data.input_size are the "
                             "defaults of the flags below");
  app.add_option("--model", model, "variant: atto femto pico nano tiny base large huge")->capture_default_str();
  app.add_option("--input-size", size, "input height and width in pixels")
      ->capture_default_str()
      ->check(cnx::cli::in_range(32, 1 << 16));
  app.add_option("--size", size, "alias of --input-size")->group("")->check(cnx::cli::in_range(32, 1 << 16));
  app.add_option("--num-classes", num_classes, "classifier outputs (0: no head)")
      ->capture_default_str()
      ->check(cnx::cli::non_negative());
  app.add_option("--in-chans", in_chans, "input channels")->capture_default_str()->check(cnx::cli::positive());
  app.add_option("--depths", depths, "custom: 4 comma-separated block counts")->delimiter(',')->expected(4);
  app.add_option("--dims", dims, "custom: 4 comma-separated channel counts")->delimiter(',')->expected(4);
  app.add_flag("--all", all, "print every variant");
  app.add_flag("--instantiate", instantiate, "also build the model(s) and count parameters from tensors");
  return cnx::cli::run_main("cnx-model-info", app, argc, argv, [&] {
    if (depths.empty() != dims.empty()) throw cnx::UsageError("--depths and --dims go together");
    if (cfg.given() || !cfg.overrides.empty()) {
      const cnx::Config c = cnx::cli::load_config(cfg);
      if (app.count("--model") == 0 && depths.empty()) {
        model = c.model.name;
        if (model == "custom") {
          depths = c.model.depths;
          dims = c.model.dims;
        }
      }
      if (app.count("--input-size") + app.count("--size") == 0) size = c.data.input_size;
      if (app.count("--num-classes") == 0) num_classes = c.model.num_classes;
      if (app.count("--in-chans") == 0) in_chans = c.model.in_chans;
    }
    std::vector<std::pair<std::string, ConvNeXtV2Options>> rows;
    if (!depths.empty()) {
      ConvNeXtV2Options o;
      o.depths = depths;
      o.dims = dims;
      rows.emplace_back("custom", o);
    } else if (all) {
      for (const auto& n : cnx::model::variant_names()) rows.emplace_back(n, cnx::model::variant_options(n));
    } else {
      try {
        rows.emplace_back(model, cnx::model::variant_options(model));
      } catch (const std::invalid_argument& e) {
        throw cnx::UsageError(std::string("--model: ") + e.what());  // a bad name is a usage error (exit 2)
      }
    }
    std::printf("input %lldx%lld, %lld classes\n", static_cast<long long>(size), static_cast<long long>(size),
                static_cast<long long>(num_classes));
    print_header();
    for (auto& [name, o] : rows) {
      o.num_classes = num_classes;
      o.in_chans = in_chans;
      print_row(name, o, size, instantiate);
    }
    return 0;
  });
}
