#include "tools/eval/linear_probe.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <numeric>

#include "common/check.h"
#include "common/logging.h"
#include "model/dense_kernels.h"
#include "model/layers.h"
#include "worker/optimizer.h"

namespace cnx::eval {

namespace {
constexpr double kPi = 3.14159265358979323846;
}  // namespace

Features extract_features(model::ConvNeXtV2Impl& net, const LabelledSet& set, const data::TransformOptions& transform,
                          int64_t batch_size, comm::Communicator* comm) {
  CNX_CHECK(batch_size > 0, "feature batch size must be > 0, got ", batch_size);
  at::NoGradGuard no_grad;
  const bool was_training = net.is_training();
  net.eval();
  const int64_t dim = net.options().dims.back();
  // Rows by position; label column holds label + 1 (0 = no sample), so that a
  // sum over ranks of disjoint rows is the gathered matrix.
  at::Tensor rows = at::zeros({set.total, dim + 1}, at::kFloat);
  int64_t failed = 0;
  const int64_t n = static_cast<int64_t>(set.samples.size());
  const auto t0 = std::chrono::steady_clock::now();
  auto last_log = t0;
  for (int64_t b = 0; b < n; b += batch_size) {
    const auto now = std::chrono::steady_clock::now();
    if (b > 0 && now - last_log > std::chrono::seconds(15)) {
      last_log = now;
      const double secs = std::chrono::duration<double>(now - t0).count();
      CNX_LOG_INFO("features: {}/{} images of this rank ({:.0f} img/s)", b, n, b / secs);
    }
    std::vector<int64_t> idx(std::min(batch_size, n - b));
    std::iota(idx.begin(), idx.end(), b);
    DecodedBatch batch = decode_samples(set, idx, transform, 0, 0);
    failed += batch.failed;
    if (batch.positions.empty()) continue;
    at::Tensor f = model::dense_forward_features(net, batch.images);
    for (size_t i = 0; i < batch.positions.size(); ++i) {
      at::Tensor row = rows[batch.positions[i]];
      row.narrow(0, 0, dim).copy_(f[static_cast<int64_t>(i)]);
      row[dim] = static_cast<float>(batch.labels[static_cast<int64_t>(i)].item<int64_t>() + 1);
    }
  }
  if (was_training) net.train();
  at::Tensor failed_t = at::full({1}, static_cast<float>(failed), at::kFloat);
  if (comm && comm->size() > 1) {
    comm->allreduce({rows, failed_t}, comm::ReduceOp::kSum)->wait();
  }
  at::Tensor present = rows.select(1, dim) > 0.5f;
  at::Tensor kept = rows.index({present});
  Features out;
  out.x = kept.narrow(1, 0, dim).contiguous();
  out.labels = (kept.select(1, dim) - 1.0f).round().to(at::kLong);
  out.failed = static_cast<int64_t>(failed_t.item<float>());
  return out;
}

at::Tensor LinearProbe::logits(const at::Tensor& x) const {
  return at::addmm(bias, (x - mean) * inv_std, weight.t());
}

LinearProbe train_linear_probe(const at::Tensor& x, const at::Tensor& y, int64_t num_classes, const ProbeOptions& o) {
  CNX_CHECK(x.dim() == 2 && y.dim() == 1 && x.size(0) == y.size(0), "linear probe: features ", x.sizes(),
            " and labels ", y.sizes(), " do not match");
  CNX_CHECK(x.size(0) > 0, "linear probe: no training samples");
  CNX_CHECK(num_classes >= 2, "linear probe: need at least 2 classes, got ", num_classes);
  CNX_CHECK(y.min().item<int64_t>() >= 0 && y.max().item<int64_t>() < num_classes, "linear probe: labels outside [0, ",
            num_classes, ")");
  CNX_CHECK(o.epochs > 0 && o.batch_size > 0 && o.lr > 0, "linear probe: epochs, batch size and lr must be > 0");
  at::NoGradGuard no_grad;
  const int64_t n = x.size(0), c = x.size(1);
  LinearProbe p;
  at::Tensor xf = x.to(at::kFloat);
  if (o.standardize) {
    p.mean = xf.mean(0);
    p.inv_std = (xf.var(0, /*unbiased=*/false) + 1e-6).rsqrt();
  } else {
    p.mean = at::zeros({c}, at::kFloat);
    p.inv_std = at::ones({c}, at::kFloat);
  }
  const at::Tensor xs = ((xf - p.mean) * p.inv_std).contiguous();
  auto gen = at::detail::createCPUGenerator(o.seed);
  {
    // The head's init draws from its own generator, not the global one.
    at::Tensor w = at::empty({num_classes, c}, at::kFloat);
    w.normal_(0.0, 1.0, gen);
    // Normal std 0.01 clamped at +-2 std: MAE's trunc_normal_(std=0.01)
    // resamples instead of clamping; for a probe head the difference in the
    // ~5% tail entries is immaterial, and this keeps the head's init on its
    // own seeded generator.
    p.weight = (w.clamp(-2.0, 2.0) * 0.01).requires_grad_(true);
  }
  p.bias = at::zeros({num_classes}, at::kFloat).requires_grad_(true);
  worker::AdamWOptions ao;
  ao.beta1 = 0.9;
  ao.beta2 = 0.999;
  ao.weight_decay = o.weight_decay;
  worker::AdamW opt({{"head.weight", p.weight}, {"head.bias", p.bias}}, ao);
  const int64_t steps_per_epoch = (n + o.batch_size - 1) / o.batch_size;
  const int64_t total = steps_per_epoch * o.epochs;
  const int64_t warmup = static_cast<int64_t>(o.warmup_epochs * steps_per_epoch);
  const at::Tensor eye = at::eye(num_classes, at::kFloat);
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    const at::Tensor perm = at::randperm(n, gen, at::kLong);
    double loss_sum = 0;
    for (int64_t b = 0; b < n; b += o.batch_size, ++step) {
      const at::Tensor idx = perm.narrow(0, b, std::min(o.batch_size, n - b));
      const at::Tensor xb = xs.index_select(0, idx);
      const at::Tensor yb = y.index_select(0, idx);
      const at::Tensor logits = at::addmm(p.bias, xb, p.weight.t());
      const at::Tensor logp = at::log_softmax(logits, 1);
      const at::Tensor onehot = eye.index_select(0, yb);
      loss_sum += -(logp * onehot).sum().item<double>();
      // d(mean CE)/d logits = (softmax - onehot) / batch.
      const at::Tensor g = (logp.exp() - onehot) / static_cast<double>(xb.size(0));
      p.weight.mutable_grad() = at::mm(g.t(), xb);
      p.bias.mutable_grad() = g.sum(0);
      double lr = o.lr;
      if (step < warmup) {
        lr = o.lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
      } else if (total > warmup) {
        lr = 0.5 * o.lr *
             (1.0 + std::cos(kPi * static_cast<double>(step - warmup) / static_cast<double>(total - warmup)));
      }
      opt.step(lr);
    }
    p.final_loss = loss_sum / static_cast<double>(n);
  }
  p.weight = p.weight.detach();
  p.bias = p.bias.detach();
  return p;
}

double top1_accuracy(const at::Tensor& logits, const at::Tensor& labels) {
  if (labels.numel() == 0) return 0.0;
  CNX_CHECK(logits.size(0) == labels.size(0), "top-1: ", logits.size(0), " rows of logits, ", labels.size(0),
            " labels");
  return (logits.argmax(1) == labels).to(at::kDouble).mean().item<double>();
}

}  // namespace cnx::eval
