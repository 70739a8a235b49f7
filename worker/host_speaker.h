#pragma once
// One voice per host (docs/protocols.md, "Host speaker"), the worker's side.
//
// Election: every rank contributes host_entry() (which machine and network
// namespace it runs in, its local rank and count from the communicator:
// MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), or the rendezvous store's
// local rank); plan_hosts() groups the entries into hosts. Local rank 0 of a
// host is its speaker. Entries that do not form consistent hosts make the
// job fall back to the per-rank protocol (or, with coordinator.protocol:
// host, refuse to start).
//
// The speaker (make_host_voice for rank == plan.speaker) registers all the
// host's ranks with RegisterHost and serves its local ranks over a relay
// socket (worker/host_relay.h) named after the launch and the speaker:
// * heartbeats: each rank hands its progress to the speaker, which sends one
//   HostHeartbeat per period with every live local rank's latest progress
//   (a rank whose relay connection closed is left out, so it times out like
//   a silent rank) and hands the job-wide reply back; news (final step,
//   preemption, finished/failed) is sent at once;
// * leases: a rank's ask that the speaker has not fetched yet makes it fetch
//   the next items of every local rank in one AcquireShards (asking
//   `ask_ahead` positions per rank; the sequences do not depend on who asks,
//   docs/protocols.md), carrying the shard items used up since the last call;
//   done reports are also flushed with each heartbeat;
// * checkpoint parts: the speaker sends the parts of all its local ranks of
//   one plan in one ReportCheckpointParts once all are in (or, after
//   `part_wait_s`, those that are).
// A coordinator without the host calls (UNIMPLEMENTED: an older version)
// makes every rank of the host fall back to the per-rank protocol (unless
// coordinator.protocol is "host").
//
// A rank other than the speaker relays through it; when the speaker is gone
// its calls throw CoordinatorUnreachable (the link then stops the rank:
// exit 204, as for an unreachable coordinator).
#include <memory>
#include <string>
#include <vector>

#include "worker/coordinator_voice.h"

namespace cnx::worker {

// This process's line for the election: "<machine>|<network namespace>\t
// <advertised host>\t<local rank>\t<local size>".
std::string host_entry(const std::string& advertised, int local_rank, int local_size);

struct HostPlan {
  bool valid = false;
  std::string why;         // when !valid: which ranks do not form a host
  std::vector<int> ranks;  // the ranks of this rank's host, ascending
  int speaker = -1;        // the rank with local rank 0 on this host
  std::string host;        // the host's name for RegisterHost (unique in the launch)
  int hosts = 0;           // hosts of the launch
};

// Groups every rank's host_entry() (entries[r] is rank r's) into hosts and
// returns `rank`'s. A host's ranks must report local ranks 0..n-1 and local
// size n; otherwise !valid with the reason. A host is named by its
// speaker's advertised host, with "/r<speaker>" appended when another host
// advertises the same name.
HostPlan plan_hosts(const std::vector<std::string>& entries, int rank);

struct HostVoiceOptions {
  LinkOptions link;  // the coordinator (and the per-rank fallback)
  std::string job_id, launch_id;
  int world = 0;
  HostPlan plan;
  bool strict = false;         // coordinator.protocol: host (no per-rank fallback)
  int ask_ahead = 32;          // lease positions asked per local rank and call
  double part_wait_s = 60;     // longest wait for the other local ranks' parts of a plan
  double final_wait_s = 10;    // longest wait for the local ranks' final status
  double beat_timeout_s = 10;  // a speaker that answers a plain beat no faster is frozen
};

// The abstract socket name of the relay of `speaker` in launch `launch_id`.
std::string relay_name(const std::string& launch_id, int speaker);

// `rank`'s voice on its host (options.plan): the speaker's (relay server,
// host calls) when rank == plan.speaker, else a relay client of it. The
// speaker's relay listens from construction on.
std::unique_ptr<CoordinatorVoice> make_host_voice(const HostVoiceOptions& options, int rank);

}  // namespace cnx::worker
