#include "worker/optimizer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>  // at::NoGradGuard (ATen.h no longer brings it in LibTorch 2.x)

#include <cmath>
#include <set>
#include <sstream>

#include "common/check.h"
#include "common/strings.h"
#include "sparse_ops/cpu/simd.h"

namespace cnx::worker {
namespace {

bool is_layernorm_weight(const std::string& name) {
  const auto parts = split(name, '.');
  const size_t n = parts.size();
  if (n < 2 || parts[n - 1] != "weight") return false;
  if (parts[n - 2] == "norm" || parts[n - 2] == "ln") return true;
  // ... downsample_layers.0.1.weight (stem LN), downsample_layers.i.0.weight (i >= 1).
  if (n >= 4 && parts[n - 4] == "downsample_layers") {
    const std::string& stage = parts[n - 3];
    const std::string& slot = parts[n - 2];
    if (stage == "0") return slot == "1";
    return slot == "0";
  }
  return false;
}

// A ConvNeXt V1 block's layer scale, "...stages.s.b.gamma" (C): 1-D, so the
// reference's rule exempts it (a GRN's "grn.gamma" is 4-D there and decayed).
bool is_layer_scale(const std::string& name) {
  const auto parts = split(name, '.');
  const size_t n = parts.size();
  return n >= 4 && parts[n - 1] == "gamma" && parts[n - 4] == "stages";
}

// The update of one element range in one pass, with LibTorch's rounding
// step by step: its CPU kernels round the scalars to T, run add_(g, alpha)
// and addcmul_ as fused multiply-adds (vector body and tail alike; checked by
// AdamW.BitIdenticalToTorchAdamW* on sizes with and without a vector tail)
// and divide with a true division.
template <typename T>
CNX_INLINE void adamw_update_impl(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                                  int64_t begin, int64_t end, const double* s) {
  const T decay = static_cast<T>(s[0]), b1 = static_cast<T>(s[1]), one_b1 = static_cast<T>(s[2]);
  const T b2 = static_cast<T>(s[3]), one_b2 = static_cast<T>(s[4]), bc2 = static_cast<T>(s[5]);
  const T eps = static_cast<T>(s[6]), neg_step = static_cast<T>(s[7]);
  const bool decayed = s[8] != 0.0;
  for (int64_t i = begin; i < end; ++i) {
    T pv = p[i];
    if (decayed) pv = pv * decay;                           // p.mul_(1 - lr * wd)
    const T mv = std::fma(g[i], one_b1, m[i] * b1);         // m.mul_(b1).add_(g, 1 - b1)
    const T vv = std::fma(one_b2 * g[i], g[i], v[i] * b2);  // v.mul_(b2).addcmul_(g, g, 1 - b2)
    const T den = std::sqrt(vv) / bc2 + eps;                // (v.sqrt() / sqrt(bc2)).add_(eps)
    p[i] = pv + neg_step * mv / den;                        // p.addcdiv_(m, den, -step_size)
    m[i] = mv;
    v[i] = vv;
  }
}

CNX_SIMD_CLONES void adamw_update(float* p, const float* g, float* m, float* v, int64_t begin, int64_t end,
                                  const double* s) {
  adamw_update_impl(p, g, m, v, begin, end, s);
}
CNX_SIMD_CLONES void adamw_update(double* p, const double* g, double* m, double* v, int64_t begin, int64_t end,
                                  const double* s) {
  adamw_update_impl(p, g, m, v, begin, end, s);
}

// Whether the fused loop applies: CPU float/double tensors of one dtype, all
// contiguous.
bool fused_update_applies(const at::Tensor& p, const at::Tensor& g, const at::Tensor& m, const at::Tensor& v) {
  const auto dt = p.scalar_type();
  if (dt != at::kFloat && dt != at::kDouble) return false;
  for (const at::Tensor* t : {&p, &g, &m, &v}) {
    if (!t->device().is_cpu() || t->scalar_type() != dt || !t->is_contiguous()) return false;
  }
  return true;
}

}  // namespace

bool is_decayed(const std::string& name, const std::vector<std::string>& extra_no_decay) {
  if (ends_with(name, ".bias") || name == "bias") return false;
  if (is_layernorm_weight(name)) return false;
  if (is_layer_scale(name)) return false;
  for (const auto& suffix : extra_no_decay) {
    if (!suffix.empty() && ends_with(name, suffix)) return false;
  }
  return true;
}

AdamW::AdamW(NamedTensors params, const AdamWOptions& options) : params_(std::move(params)), options_(options) {
  CNX_CHECK(options.beta1 >= 0 && options.beta1 < 1, "optimizer.betas[0] must be in [0, 1), got ", options.beta1);
  CNX_CHECK(options.beta2 >= 0 && options.beta2 < 1, "optimizer.betas[1] must be in [0, 1), got ", options.beta2);
  CNX_CHECK(options.eps > 0, "optimizer.eps must be > 0, got ", options.eps);
  CNX_CHECK(options.weight_decay >= 0, "optimizer.weight_decay must be >= 0, got ", options.weight_decay);
  std::set<std::string> seen;
  for (const auto& [name, p] : params_) {
    CNX_CHECK(seen.insert(name).second, "AdamW: duplicate parameter name '", name, "'");
    CNX_CHECK(p.defined() && p.is_floating_point(), "AdamW: parameter '", name, "' is not a floating tensor");
    decayed_.push_back(is_decayed(name, options_.no_decay));
    state_.emplace(name, AdamWParamState{});
  }
}

std::vector<std::string> AdamW::group_names(bool decayed) const {
  std::vector<std::string> names;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (decayed_[i] == decayed) names.push_back(params_[i].first);
  }
  return names;
}

void AdamW::step(double lr) {
  at::NoGradGuard no_grad;
  const double b1 = options_.beta1, b2 = options_.beta2;
  for (size_t i = 0; i < params_.size(); ++i) {
    // Named references, not a structured binding: lambdas below use p, and
    // C++17 does not let a lambda capture a structured binding (clang refuses).
    const std::string& name = params_[i].first;
    const at::Tensor& p = params_[i].second;
    const at::Tensor& grad = p.grad();
    if (!grad.defined()) continue;
    AdamWParamState& st = state_.at(name);
    if (!st.exp_avg.defined()) {
      st.exp_avg = at::zeros_like(p, at::MemoryFormat::Preserve);
      st.exp_avg_sq = at::zeros_like(p, at::MemoryFormat::Preserve);
    }
    st.step += 1;
    const double wd = decayed_[i] ? options_.weight_decay : 0.0;
    const double bias_correction1 = 1 - std::pow(b1, static_cast<double>(st.step));
    const double bias_correction2 = 1 - std::pow(b2, static_cast<double>(st.step));
    if (fused_update_applies(p, grad, st.exp_avg, st.exp_avg_sq)) {
      // One pass over p, grad, m and v instead of LibTorch's eight.
      const double s[9] = {1 - lr * wd,
                           b1,
                           1 - b1,
                           b2,
                           1 - b2,
                           std::sqrt(bias_correction2),
                           options_.eps,
                           -(lr / bias_correction1),
                           wd != 0 ? 1.0 : 0.0};
      AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "adamw_step", [&] {
        scalar_t* pp = p.data_ptr<scalar_t>();
        const scalar_t* gp = grad.data_ptr<scalar_t>();
        scalar_t* mp = st.exp_avg.data_ptr<scalar_t>();
        scalar_t* vp = st.exp_avg_sq.data_ptr<scalar_t>();
        at::parallel_for(0, p.numel(), 32768, [&](int64_t b, int64_t e) { adamw_update(pp, gp, mp, vp, b, e, s); });
      });
      continue;
    }
    // Same operation order as torch::optim::AdamW::step (LibTorch 1.13).
    if (wd != 0) p.mul_(1 - lr * wd);
    st.exp_avg.mul_(b1).add_(grad, 1 - b1);
    st.exp_avg_sq.mul_(b2).addcmul_(grad, grad, 1 - b2);
    at::Tensor denom = (st.exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(options_.eps);
    const double step_size = lr / bias_correction1;
    p.addcdiv_(st.exp_avg, denom, -step_size);
  }
}

NamedTensors AdamW::state_dict() const {
  NamedTensors out;
  for (const auto& [name, p] : params_) {
    const AdamWParamState& st = state_.at(name);
    at::Tensor m = st.exp_avg.defined() ? st.exp_avg : at::zeros_like(p);
    at::Tensor v = st.exp_avg_sq.defined() ? st.exp_avg_sq : at::zeros_like(p);
    out.emplace_back("exp_avg/" + name, m.detach().contiguous());
    out.emplace_back("exp_avg_sq/" + name, v.detach().contiguous());
    out.emplace_back("step/" + name, at::scalar_tensor(st.step, at::kLong));
  }
  return out;
}

void AdamW::load_state_dict(const NamedTensors& state) {
  std::map<std::string, at::Tensor> by_key;
  std::vector<std::string> problems;
  for (const auto& [key, t] : state) {
    if (!by_key.emplace(key, t).second) problems.push_back("duplicate key '" + key + "'");
  }
  std::map<std::string, AdamWParamState> loaded;
  for (const auto& [name, p] : params_) {
    AdamWParamState st;
    for (const char* kind : {"exp_avg/", "exp_avg_sq/"}) {
      const std::string key = kind + name;
      auto it = by_key.find(key);
      if (it == by_key.end()) {
        problems.push_back("missing '" + key + "'");
        continue;
      }
      const at::Tensor& t = it->second;
      if (t.sizes() != p.sizes() || t.scalar_type() != p.scalar_type()) {
        std::ostringstream os;
        os << "'" << key << "' has shape " << t.sizes() << " " << t.scalar_type() << ", parameter has " << p.sizes()
           << " " << p.scalar_type();
        problems.push_back(os.str());
      } else {
        (std::string(kind) == "exp_avg/" ? st.exp_avg : st.exp_avg_sq) = t.detach().clone().to(p.device());
      }
      by_key.erase(it);
    }
    const std::string skey = "step/" + name;
    auto it = by_key.find(skey);
    if (it == by_key.end()) {
      problems.push_back("missing '" + skey + "'");
    } else {
      if (it->second.numel() != 1 || it->second.scalar_type() != at::kLong || it->second.item<int64_t>() < 0) {
        problems.push_back("'" + skey + "' must be one non-negative int64");
      } else {
        st.step = it->second.item<int64_t>();
      }
      by_key.erase(it);
    }
    if (st.step == 0) st.exp_avg = st.exp_avg_sq = at::Tensor();
    loaded.emplace(name, st);
  }
  for (const auto& [key, t] : by_key) problems.push_back("unexpected key '" + key + "'");
  if (!problems.empty()) {
    std::string msg = "optimizer state does not match the model (" + std::to_string(problems.size()) + " problems):";
    for (const auto& pr : problems) msg += "\n  " + pr;
    CNX_CHECK(false, msg);
  }
  state_ = std::move(loaded);
}

double clip_grad_norm(const NamedTensors& params, double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  for (const auto& [name, p] : params) {
    if (p.grad().defined()) norms.push_back(p.grad().norm(2).to(at::kDouble));
  }
  if (norms.empty()) return 0.0;
  const double total = at::stack(norms).norm(2).item<double>();
  if (max_norm > 0 && std::isfinite(total)) {
    const double coef = max_norm / (total + 1e-6);
    if (coef < 1) {
      for (const auto& [name, p] : params) {
        if (p.grad().defined()) p.grad().mul_(coef);
      }
    }
  }
  return total;
}

}  // namespace cnx::worker
