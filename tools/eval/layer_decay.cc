#include "tools/eval/layer_decay.h"

#include <cmath>
#include <map>
#include <numeric>

#include "common/check.h"

namespace cnx::eval {

namespace {

// The integer after "<prefix>" up to the next '.', or -1.
int64_t index_after(const std::string& name, const std::string& prefix, size_t* end) {
  if (name.rfind(prefix, 0) != 0) return -1;
  const size_t b = prefix.size();
  size_t e = b;
  while (e < name.size() && name[e] >= '0' && name[e] <= '9') ++e;
  if (e == b || e - b > 9) return -1;
  *end = e;
  return std::stoll(name.substr(b, e - b));
}

int64_t blocks_before(const std::vector<int64_t>& depths, int64_t stage) {
  return std::accumulate(depths.begin(), depths.begin() + stage, int64_t{0});
}

}  // namespace

int64_t layer_id(const std::string& name, const std::vector<int64_t>& depths) {
  const int64_t num_layers = std::accumulate(depths.begin(), depths.end(), int64_t{0});
  const int64_t stages = static_cast<int64_t>(depths.size());
  size_t end = 0;
  int64_t s = index_after(name, "downsample_layers.", &end);
  if (s >= 0) {
    CNX_CHECK(s < stages, "parameter '", name, "': downsample index ", s, " outside the ", stages, " stages");
    return blocks_before(depths, s) + 1;
  }
  s = index_after(name, "stages.", &end);
  if (s >= 0) {
    CNX_CHECK(s < stages, "parameter '", name, "': stage index ", s, " outside the ", stages, " stages");
    size_t end2 = 0;
    const int64_t b = index_after(name.substr(end), ".", &end2);
    CNX_CHECK(b >= 0 && b < depths[s], "parameter '", name, "': block index outside stage ", s, " (depth ", depths[s],
              ")");
    return blocks_before(depths, s) + b + 1;
  }
  return num_layers + 1;
}

double layer_lr_scale(int64_t id, const std::vector<int64_t>& depths, double layer_decay) {
  const int64_t num_layers = std::accumulate(depths.begin(), depths.end(), int64_t{0});
  CNX_CHECK(id >= 0 && id <= num_layers + 1, "layer id ", id, " outside 0..", num_layers + 1);
  return std::pow(layer_decay, static_cast<double>(num_layers + 1 - id));
}

const std::vector<std::string>& finetune_no_decay() {
  static const std::vector<std::string> v{"grn.gamma", "grn.beta"};
  return v;
}

LayerDecayAdamW::LayerDecayAdamW(const worker::NamedTensors& params, const std::vector<int64_t>& depths,
                                 double layer_decay, worker::AdamWOptions options) {
  CNX_CHECK(layer_decay > 0.0 && layer_decay <= 1.0, "layer_decay must be in (0, 1], got ", layer_decay);
  for (const auto& s : finetune_no_decay()) options.no_decay.push_back(s);
  no_decay_ = options.no_decay;
  std::map<int64_t, worker::NamedTensors> by_id;
  for (const auto& [name, t] : params) by_id[layer_id(name, depths)].emplace_back(name, t);
  for (auto& [id, group] : by_id) {
    LayerGroup g;
    g.id = id;
    g.lr_scale = layer_lr_scale(id, depths, layer_decay);
    for (const auto& [name, t] : group) g.names.push_back(name);
    groups_.push_back(std::move(g));
    optimizers_.push_back(std::make_unique<worker::AdamW>(group, options));
  }
}

void LayerDecayAdamW::step(double lr) {
  for (size_t i = 0; i < groups_.size(); ++i) optimizers_[i]->step(lr * groups_[i].lr_scale);
}

bool LayerDecayAdamW::decayed(const std::string& name) const {
  return worker::is_decayed(name, no_decay_);
}

}  // namespace cnx::eval
