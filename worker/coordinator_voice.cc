#include "worker/coordinator_voice.h"

#include <algorithm>

#include "coordinator/client.h"

namespace cnx::worker {

coordinator::ClientOptions client_options(const LinkOptions& o) {
  coordinator::ClientOptions c;
  c.target = o.target;
  c.token = o.token;
  c.tls_ca = o.tls_ca;
  c.tls_cert = o.tls_cert;
  c.tls_key = o.tls_key;
  c.retry_budget_s = o.unreachable_s;
  c.deadline_s = std::min(c.deadline_s, std::max(1.0, o.unreachable_s));
  return c;
}

namespace {

class RankVoice final : public CoordinatorVoice {
 public:
  explicit RankVoice(const LinkOptions& options)
      : client_(std::make_unique<coordinator::CoordinatorClient>(client_options(options))) {}
  cnx::v1::RegisterReply register_rank(const std::string& job_id, int rank, int world, const std::string& host,
                                       const std::string& launch_id) override {
    return client_->register_worker(job_id, rank, world, host, launch_id);
  }
  cnx::v1::HeartbeatReply heartbeat(const cnx::v1::HeartbeatRequest& request) override {
    return client_->heartbeat(request);
  }
  cnx::v1::AcquireShardReply acquire(int64_t epoch, int64_t position) override {
    return client_->acquire_shard(epoch, position);
  }
  void done(int64_t epoch, int64_t position, int64_t consumed) override {
    client_->report_shard_done(epoch, position, consumed);
  }
  cnx::v1::CheckpointPartReply report_part(const cnx::v1::CheckpointPartRequest& request) override {
    return client_->report_checkpoint_part(request);
  }
  std::string describe() const override { return "per-rank"; }

 private:
  std::unique_ptr<coordinator::CoordinatorClient> client_;
};

}  // namespace

std::unique_ptr<CoordinatorVoice> make_rank_voice(const LinkOptions& options) {
  return std::make_unique<RankVoice>(options);
}

}  // namespace cnx::worker
