// cnx-coordinator: one per job. Parses flags, loads the config, serves until
// SIGINT/SIGTERM. All logic lives in cnx_coordinator.
#include <CLI/CLI.hpp>

#include <csignal>
#include <iostream>

#include "common/cli.h"
#include "common/config.h"
#include "common/logging.h"
#include "common/metrics_process.h"
#include "common/metrics_server.h"
#include "coordinator/auth.h"
#include "coordinator/metrics_binding.h"
#include "coordinator/service.h"

int main(int argc, char** argv) {
  CLI::App app{"cnx-coordinator: the job's control plane (membership, shard leases, checkpoints)"};
  cnx::cli::ConfigFlags cfg;
  std::string token_file, tls_cert, tls_key, tls_client_ca;
  cnx::cli::add_config_flags(app, &cfg, "job config (YAML)", true);
  app.add_option("--token-file", token_file, "job token file (overrides coordinator.token_file)");
  app.add_option("--tls-cert", tls_cert, "server certificate, PEM (overrides coordinator.tls_cert)");
  app.add_option("--tls-key", tls_key, "server key, PEM (overrides coordinator.tls_key)");
  app.add_option("--tls-client-ca", tls_client_ca,
                 "CA that verifies client certificates: mutual TLS (overrides coordinator.tls_client_ca)");

  // Block the stop signals in every thread; main waits for them below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);

  return cnx::cli::run_main("cnx-coordinator", app, argc, argv, [&] {
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    cnx::cli::set_string(&cfg, "coordinator.token_file", token_file);
    cnx::cli::set_string(&cfg, "coordinator.tls_cert", tls_cert);
    cnx::cli::set_string(&cfg, "coordinator.tls_key", tls_key);
    cnx::cli::set_string(&cfg, "coordinator.tls_client_ca", tls_client_ca);
    cnx::Config config = cnx::cli::load_config(cfg);
    cnx::log::init("coordinator", -1, config.job.log_level);
    CNX_LOG_INFO("{}", cnx::cli::version_line("cnx-coordinator"));
    cnx::coordinator::ServerOptions options = cnx::coordinator::server_options_from_config(config);
    cnx::coordinator::check_plaintext_allowed(options.listen, !options.tls_cert.empty(),
                                              config.coordinator.allow_plaintext, "coordinator.listen");
    if (options.tls_cert.empty() && !cnx::coordinator::is_loopback_address(options.listen))
      CNX_LOG_WARN("listening on {} without TLS (coordinator.allow_plaintext): the job token travels in clear text",
                   options.listen);
    cnx::coordinator::CoordinatorServer server(options);
    CNX_LOG_INFO("cnx-coordinator for job '{}' listening on {} (port {}, {}), state in {}", config.job.id,
                 config.coordinator.listen, server.port(), options.tls_cert.empty() ? "plaintext" : "TLS",
                 options.state_db);
    // Prometheus: /metrics and /healthz on metrics.listen_host:coordinator_port.
    auto registry = std::make_shared<cnx::metrics::Registry>();
    cnx::coordinator::CoordinatorMetricsBinding binding(*registry, config.job.id, server.service());
    std::unique_ptr<cnx::metrics::MetricsServer> metrics_server;
    std::shared_ptr<cnx::metrics::ProcessCollector> process;
    if (config.metrics.enabled) {
      process = std::make_shared<cnx::metrics::ProcessCollector>(binding.metrics().labels());
      metrics_server = std::make_unique<cnx::metrics::MetricsServer>(config.metrics.listen_host,
                                                                     static_cast<int>(config.metrics.coordinator_port));
      metrics_server->RegisterCollectable(registry);
      metrics_server->RegisterCollectable(process);
      metrics_server->add_scrape_hook([&binding] { binding.refresh(); });
      server.service().set_observer(&binding);
      CNX_LOG_INFO("metrics on http://{}/metrics", metrics_server->address());
    }
    int sig = 0;
    sigwait(&stop_signals, &sig);
    CNX_LOG_INFO("signal {} received: shutting down", sig);
    server.service().set_observer(nullptr);
    server.shutdown();
    return 0;
  });
}
