#include "tools/eval/finetune.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <numeric>

#include "comm/grad_sync.h"
#include "common/check.h"
#include "common/logging.h"
#include "common/rng.h"
#include "model/dense_kernels.h"
#include "tools/eval/layer_decay.h"
#include "worker/lr_schedule.h"
#include "worker/optimizer.h"

namespace cnx::eval {

at::Tensor smoothed_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, double smoothing) {
  const at::Tensor logp = at::log_softmax(logits, 1);
  const at::Tensor nll = -logp.gather(1, labels.unsqueeze(1)).squeeze(1);
  const at::Tensor smooth = -logp.mean(1);
  return ((1.0 - smoothing) * nll + smoothing * smooth).mean();
}

double evaluate_top1(model::ConvNeXtV2Impl& net, const LabelledSet& test, const data::TransformOptions& transform,
                     int64_t batch_size, comm::Communicator* comm, int64_t* n_test, int64_t* failed) {
  CNX_CHECK(batch_size > 0, "eval batch size must be > 0");
  at::NoGradGuard no_grad;
  const bool was_training = net.is_training();
  net.eval();
  double counts[3] = {0, 0, 0};  // correct, evaluated, failed
  const int64_t n = static_cast<int64_t>(test.samples.size());
  for (int64_t b = 0; b < n; b += batch_size) {
    std::vector<int64_t> idx(std::min(batch_size, n - b));
    std::iota(idx.begin(), idx.end(), b);
    DecodedBatch batch = decode_samples(test, idx, transform, 0, 0);
    counts[2] += static_cast<double>(batch.failed);
    if (batch.positions.empty()) continue;
    const at::Tensor logits = model::dense_forward(net, batch.images);
    counts[0] += (logits.argmax(1) == batch.labels).sum().item<double>();
    counts[1] += static_cast<double>(batch.labels.size(0));
  }
  if (was_training) net.train();
  at::Tensor t = at::tensor(std::vector<double>(counts, counts + 3), at::kDouble);
  if (comm && comm->size() > 1) comm->allreduce({t}, comm::ReduceOp::kSum)->wait();
  const auto* c = t.data_ptr<double>();
  if (n_test) *n_test = static_cast<int64_t>(c[1]);
  if (failed) *failed = static_cast<int64_t>(c[2]);
  return c[1] > 0 ? c[0] / c[1] : 0.0;
}

FinetuneResult finetune(model::ConvNeXtV2Impl& net, const LabelledSet& train, const LabelledSet& test,
                        const FinetuneOptions& o, comm::Communicator* comm, const LabelledSet* holdout) {
  CNX_CHECK(o.epochs > 0 && o.batch_size > 0, "fine-tune: epochs and batch size must be > 0");
  CNX_CHECK(net.head(), "fine-tune: the model has no classification head (num_classes 0)");
  const int world = comm ? comm->size() : 1;
  const int rank = comm ? comm->rank() : 0;
  FinetuneResult r;

  worker::NamedTensors params;
  for (const auto& item : net.named_parameters(true)) params.emplace_back(item.key(), item.value());
  if (comm && world > 1) {
    std::vector<at::Tensor> all;
    for (const auto& [name, t] : params) all.push_back(t.detach());
    for (const auto& b : net.buffers(true)) all.push_back(b);
    comm::broadcast_tensors(*comm, all, 0);
  }
  std::unique_ptr<comm::GradSync> sync;
  if (comm && world > 1) {
    std::vector<at::Tensor> ps;
    for (const auto& [name, t] : params) ps.push_back(t);
    sync = std::make_unique<comm::GradSync>(*comm, ps);
  }

  // Every rank runs the same number of steps: the smallest share is
  // floor(total / world) samples.
  const int64_t min_share = train.total / world;
  const int64_t steps_per_epoch = min_share / o.batch_size;
  CNX_CHECK(steps_per_epoch > 0, "fine-tune: ", train.total, " training samples over ", world,
            " ranks do not fill one batch of ", o.batch_size, " per rank");
  r.n_train = steps_per_epoch * o.batch_size * world;
  const int64_t global_batch = o.batch_size * world;
  r.peak_lr = worker::peak_lr(o.blr, o.lr, global_batch);
  worker::LrScheduleOptions so;
  so.peak_lr = r.peak_lr;
  so.min_lr = std::min(o.min_lr, r.peak_lr);
  so.warmup_epochs = o.warmup_epochs;
  so.epochs = static_cast<double>(o.epochs);
  so.steps_per_epoch = steps_per_epoch;
  worker::LrSchedule schedule(so);
  worker::AdamWOptions ao;
  ao.beta1 = o.beta1;
  ao.beta2 = o.beta2;
  ao.weight_decay = o.weight_decay;
  LayerDecayAdamW opt(params, net.options().depths, o.layer_decay, ao);

  const auto t0 = std::chrono::steady_clock::now();
  int64_t failed_train = 0;
  net.train();
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    auto gen = at::detail::createCPUGenerator(mix_seed(mix_seed(o.seed, epoch), rank));
    const at::Tensor perm = at::randperm(static_cast<int64_t>(train.samples.size()), gen, at::kLong);
    const int64_t* pp = perm.data_ptr<int64_t>();
    double loss_sum = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s, ++r.steps) {
      std::vector<int64_t> idx(pp + s * o.batch_size, pp + (s + 1) * o.batch_size);
      DecodedBatch batch = decode_samples(train, idx, o.train_transform, o.seed, epoch);
      failed_train += batch.failed;
      for (auto& [name, t] : params) {
        if (t.grad().defined()) t.mutable_grad().zero_();
      }
      at::Tensor loss;
      if (batch.positions.empty()) {
        // Every sample of this rank's batch failed to decode: contribute zero
        // gradients so the collective still matches the other ranks.
        loss = at::zeros({}, at::kFloat);
      } else {
        const at::Tensor logits = model::dense_forward(net, batch.images);
        loss = smoothed_cross_entropy(logits, batch.labels, o.label_smoothing);
        torch::autograd::backward({loss});
      }
      if (sync) sync->finish();
      if (o.clip_grad > 0) worker::clip_grad_norm(params, o.clip_grad);
      const double lr = schedule.lr_at(r.steps);
      opt.step(lr);
      const double own = loss.item<double>();
      double l = own;
      if (comm && world > 1) {
        at::Tensor lt = at::full({1}, l, at::kDouble);
        comm->allreduce({lt}, comm::ReduceOp::kAverage)->wait();
        l = lt.item<double>();
      }
      loss_sum += l;
      r.step_loss.push_back(l);
      r.step_lr.push_back(lr);
      if (o.on_step) o.on_step(StepRecord{epoch, r.steps, lr, own, l, &batch});
      if (rank == 0 && o.log_every > 0 && (r.steps + 1) % o.log_every == 0) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        CNX_LOG_INFO("fine-tune epoch {} step {}/{} loss {:.4f} lr {:.3e} ({:.1f} img/s)", epoch, r.steps + 1,
                     steps_per_epoch * o.epochs, l, lr, (r.steps + 1) * global_batch / std::max(secs, 1e-9));
      }
    }
    r.epoch_loss.push_back(loss_sum / static_cast<double>(steps_per_epoch));
    const bool score_holdout =
        holdout && (epoch + 1 == o.epochs || (o.holdout_every > 0 && (epoch + 1) % o.holdout_every == 0));
    if (score_holdout) {
      int64_t failed_holdout = 0;
      r.holdout_epoch.push_back(epoch + 1);
      r.epoch_holdout.push_back(
          evaluate_top1(net, *holdout, o.eval_transform, o.eval_batch_size, comm, &r.n_holdout, &failed_holdout));
    }
    r.epoch_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (rank == 0) {
      if (score_holdout) {
        CNX_LOG_INFO("fine-tune epoch {} done: mean loss {:.4f}, held-out top-1 {:.2f}% (n={}), {:.1f} s", epoch,
                     r.epoch_loss.back(), 100.0 * r.epoch_holdout.back(), r.n_holdout, r.epoch_seconds.back());
      } else {
        CNX_LOG_INFO("fine-tune epoch {} done: mean loss {:.4f}, {:.1f} s", epoch, r.epoch_loss.back(),
                     r.epoch_seconds.back());
      }
    }
  }
  at::Tensor ft = at::full({1}, static_cast<double>(failed_train), at::kDouble);
  if (comm && world > 1) comm->allreduce({ft}, comm::ReduceOp::kSum)->wait();
  int64_t failed_test = 0;
  r.top1 = evaluate_top1(net, test, o.eval_transform, o.eval_batch_size, comm, &r.n_test, &failed_test);
  r.failed = static_cast<int64_t>(ft.item<double>()) + failed_test;
  return r;
}

}  // namespace cnx::eval
