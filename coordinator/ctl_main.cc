// cnx-ctl: operator commands against a running coordinator.
//   cnx-ctl --config job.yaml status [--json]
//   cnx-ctl --config job.yaml checkpoint
//   cnx-ctl --config job.yaml drain [--now]
//   cnx-ctl --config job.yaml latest
#include <google/protobuf/util/json_util.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "common/check.h"
#include "common/cli.h"
#include "common/config.h"
#include "coordinator/auth.h"
#include "coordinator/client.h"

namespace {

namespace pb = cnx::v1;

std::string state_name(pb::JobState s) {
  std::string n = pb::JobState_Name(s);
  return n.rfind("JOB_", 0) == 0 ? n.substr(4) : n;
}

void print_table(const pb::StatusReply& s) {
  std::printf("job %s  state %s  attempt %lld  world %d  epoch %lld  step %lld\n", s.job_id().c_str(),
              state_name(s.state()).c_str(), static_cast<long long>(s.attempt()), s.world_size(),
              static_cast<long long>(s.epoch()), static_cast<long long>(s.step()));
  if (!s.reason().empty()) std::printf("reason: %s\n", s.reason().c_str());
  std::printf("shards: %lld leased, %lld done, %lld pending; unused samples %lld\n",
              static_cast<long long>(s.shards_leased()), static_cast<long long>(s.shards_done()),
              static_cast<long long>(s.shards_pending()), static_cast<long long>(s.unused_samples()));
  std::printf("checkpoints: %lld committed, %lld retained, last at step %lld",
              static_cast<long long>(s.checkpoints_committed()), static_cast<long long>(s.checkpoints_retained()),
              static_cast<long long>(s.last_committed_step()));
  if (s.seconds_since_commit() >= 0) std::printf(" (%.0f s ago)", s.seconds_since_commit());
  if (s.checkpoint_pending())
    std::printf("; pending %lld at step %lld", static_cast<long long>(s.pending().id()),
                static_cast<long long>(s.pending().step()));
  std::printf("\n\n%5s  %-20s  %-5s  %10s  %6s  %10s  %10s  %8s  %6s\n", "rank", "host", "alive", "step", "epoch",
              "loss", "samples/s", "last hb", "leases");
  for (const auto& r : s.ranks())
    std::printf("%5d  %-20s  %-5s  %10lld  %6lld  %10.4f  %10.1f  %7.1fs  %6lld\n", r.rank(), r.host().c_str(),
                !r.registered() ? "-"
                : r.alive()     ? "yes"
                                : "NO",
                static_cast<long long>(r.step()), static_cast<long long>(r.epoch()), r.loss(), r.samples_per_s(),
                r.seconds_since_heartbeat(), static_cast<long long>(r.leases_held()));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cnx-ctl: control a running cnx-coordinator"};
  app.require_subcommand(1);
  cnx::cli::ConfigFlags cfg;
  std::string token_file, operator_token_file, address, job_id, tls_ca, tls_cert, tls_key, tls_server_name;
  double timeout_s = 10;
  cnx::cli::add_config_flags(app, &cfg, "job config (YAML): address, job id, token, TLS");
  app.add_option("--coordinator", address,
                 "coordinator HOST:PORT (default: coordinator.listen, with a wildcard host such as 0.0.0.0 "
                 "replaced by loopback)");
  app.add_option("--address", address, "alias of --coordinator")->group("");
  app.add_option("--job", job_id, "job id (default: job.id)");
  app.add_option("--token-file", token_file, "job token file (default: coordinator.token_file / token_env)");
  app.add_option("--operator-token-file", operator_token_file,
                 "operator token file (default: coordinator.operator_token_file / operator_token_env); used instead "
                 "of the job token when given");
  app.add_option("--tls-ca", tls_ca, "CA that verifies the coordinator (default: coordinator.tls_ca)");
  app.add_option("--tls-server-name", tls_server_name,
                 "name the coordinator's certificate must carry when it differs from the host of --coordinator (e.g. "
                 "cnx-coordinator through kubectl port-forward)");
  app.add_option("--tls-cert", tls_cert, "client certificate for mutual TLS (default: coordinator.tls_client_cert)");
  app.add_option("--tls-key", tls_key, "client key for mutual TLS (default: coordinator.tls_client_key)");
  app.add_option("--timeout", timeout_s, "seconds to keep trying an unavailable coordinator")
      ->check(cnx::cli::positive())
      ->capture_default_str();
  bool as_json = false, now = false;
  auto* status = app.add_subcommand("status", "show the job's state and every rank");
  status->add_flag("--json", as_json, "print JSON instead of a table");
  app.add_subcommand("checkpoint", "plan a checkpoint now");
  app.add_subcommand("latest", "print the folder of the latest committed checkpoint (exit 3 if there is none)");
  auto* drain = app.add_subcommand("drain", "checkpoint, then tell every rank to exit");
  drain->add_flag("--now", now, "stop at once, without a checkpoint");
  app.footer(
      "Exit codes: 0 done, 1 error (coordinator unreachable, refused), 2 usage or config error, "
      "3 `latest`: the job has no committed checkpoint.");

  return cnx::cli::run_main("cnx-ctl", app, argc, argv, [&]() -> int {
    cnx::cli::set_string(&cfg, "coordinator.token_file", token_file);
    cnx::cli::set_string(&cfg, "coordinator.operator_token_file", operator_token_file);
    cnx::cli::set_string(&cfg, "coordinator.tls_ca", tls_ca);
    cnx::cli::set_string(&cfg, "coordinator.tls_client_cert", tls_cert);
    cnx::cli::set_string(&cfg, "coordinator.tls_client_key", tls_key);
    cnx::Config config = cnx::cli::load_config(cfg);
    cnx::coordinator::ClientOptions o;
    o.target = address.empty() ? cnx::coordinator::dial_address_for_listen(config.coordinator.listen) : address;
    // The operator token when one is configured (Drain and RequestCheckpoint
    // need it then), else the job token.
    o.token = cnx::coordinator::load_operator_token(config.coordinator.operator_token_file,
                                                    config.coordinator.operator_token_env);
    if (o.token.empty())
      o.token = cnx::coordinator::load_token(config.coordinator.token_file, config.coordinator.token_env);
    o.tls_ca = config.coordinator.tls_ca;
    o.tls_cert = config.coordinator.tls_client_cert;
    o.tls_key = config.coordinator.tls_client_key;
    o.tls_server_name = tls_server_name;
    if (!o.tls_server_name.empty() && o.tls_ca.empty())
      throw cnx::UsageError("--tls-server-name needs TLS: give --tls-ca (or coordinator.tls_ca)");
    cnx::coordinator::check_plaintext_allowed(o.target, !o.tls_ca.empty(), config.coordinator.allow_plaintext,
                                              "the coordinator address");
    o.deadline_s = std::min(timeout_s, 10.0);
    o.retry_budget_s = timeout_s;
    if (job_id.empty()) job_id = config.job.id;
    cnx::coordinator::CoordinatorClient client(o);
    const std::string cmd = app.get_subcommands().front()->get_name();
    if (cmd == "status") {
      pb::StatusReply s = client.status(job_id);
      if (as_json) {
        std::string out;
        google::protobuf::util::JsonPrintOptions jo;
        jo.add_whitespace = true;
        jo.always_print_primitive_fields = true;
        jo.preserve_proto_field_names = true;
        CNX_CHECK(google::protobuf::util::MessageToJsonString(s, &out, jo).ok(), "cannot print the status as JSON");
        std::cout << out;
      } else {
        print_table(s);
      }
    } else if (cmd == "checkpoint") {
      pb::RequestCheckpointReply r = client.request_checkpoint(job_id);
      std::printf("checkpoint %lld planned at step %lld in %s\n", static_cast<long long>(r.plan().id()),
                  static_cast<long long>(r.plan().step()), r.plan().dir().c_str());
    } else if (cmd == "latest") {
      pb::LatestCheckpointReply r = client.latest_checkpoint(job_id);
      if (!r.found()) {
        std::cerr << "cnx-ctl: job '" << job_id << "' has no committed checkpoint" << std::endl;
        return 3;
      }
      std::printf("%s\n", r.checkpoint().dir().c_str());
    } else if (cmd == "drain") {
      pb::DrainReply r = client.drain(job_id, !now);
      if (r.has_plan())
        std::printf("draining after checkpoint %lld at step %lld; job state %s\n",
                    static_cast<long long>(r.plan().id()), static_cast<long long>(r.plan().step()),
                    state_name(r.state()).c_str());
      else
        std::printf("job state %s\n", state_name(r.state()).c_str());
    }
    return 0;
  });
}
