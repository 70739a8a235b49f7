#pragma once
// Who carries one rank's calls to the coordinator (docs/protocols.md, "Host
// speaker"): the rank itself (per-rank protocol: Register, Heartbeat,
// AcquireShard, ReportShardDone, ReportCheckpointPart) or its host's speaker
// (worker/host_speaker.h: RegisterHost, HostHeartbeat, AcquireShards,
// ReportShardsDone, ReportCheckpointParts, relayed locally). CoordinatorLink
// (coordinator_link.h) keeps the rank's logic (plans, abort, watchdog) and
// speaks through a voice, so both protocols give a rank the same behaviour.
//
// Errors: coordinator::RpcError as from the client library (FAILED_PRECONDITION
// = fenced off; UNAVAILABLE / DEADLINE_EXCEEDED = unreachable after the
// client's retries); CoordinatorUnreachable when the host's speaker is gone.
// Thread-safety: calls may come from the training, heartbeat and checkpoint
// writer threads at once.
#include <cstdint>
#include <memory>
#include <string>

#include "proto/coordinator.pb.h"
#include "worker/coordinator_link.h"

namespace cnx::coordinator {
struct ClientOptions;
}

namespace cnx::worker {

class CoordinatorVoice {
 public:
  virtual ~CoordinatorVoice() = default;
  // Registers this rank of `world` (once, before the other calls); the reply
  // carries this rank's start epoch and the last committed checkpoint.
  virtual cnx::v1::RegisterReply register_rank(const std::string& job_id, int rank, int world, const std::string& host,
                                               const std::string& launch_id) = 0;
  // This rank's liveness and progress; the job-wide instruction.
  virtual cnx::v1::HeartbeatReply heartbeat(const cnx::v1::HeartbeatRequest& request) = 0;
  virtual cnx::v1::AcquireShardReply acquire(int64_t epoch, int64_t position) = 0;
  virtual void done(int64_t epoch, int64_t position, int64_t consumed) = 0;
  virtual cnx::v1::CheckpointPartReply report_part(const cnx::v1::CheckpointPartRequest& request) = 0;
  // Called before this rank's final status (finished / failed): a speaker
  // waits, bounded, until its local ranks have sent theirs.
  virtual void before_final() {}
  // For logs: "per-rank", "speaker of host 'h' (ranks 0-7)", "via speaker rank 0".
  virtual std::string describe() const = 0;
};

// The client library's options for a link's options (per-try deadline,
// retry budget = coordinator.unreachable_s).
coordinator::ClientOptions client_options(const LinkOptions& options);

// The per-rank protocol over its own client.
std::unique_ptr<CoordinatorVoice> make_rank_voice(const LinkOptions& options);

}  // namespace cnx::worker
