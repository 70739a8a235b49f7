// deploy/: the Kubernetes manifests, the local Prometheus config and the
// Dockerfiles agree with each other, with the config they embed (loaded by the
// project's strict loader) and with common/config.h defaults.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "common/config.h"
#include "tests/deploy/deploy_files.h"
#include "tests/metrics/prom_harness.h"

namespace cnx::testing {
namespace {

using Strings = std::vector<std::string>;

int port_of(const std::string& host_port) {
  return std::stoi(host_port.substr(host_port.rfind(':') + 1));
}

struct Pod {
  std::string what;
  YAML::Node meta;  // template metadata
  YAML::Node spec;  // pod spec
};

class Manifests : public ::testing::Test {
 protected:
  void SetUp() override {
    docs = load_k8s_docs();
    config_map = find_doc(docs, "ConfigMap", "cnx-config");
    deployment = find_doc(docs, "Deployment", "cnx-coordinator");
    service = find_doc(docs, "Service", "cnx-coordinator");
    mpijob = find_doc(docs, "MPIJob", "cnx-fcmae-atto");
    coordinator = {"coordinator Deployment", deployment["spec"]["template"]["metadata"],
                   deployment["spec"]["template"]["spec"]};
    const auto replicas = mpijob["spec"]["mpiReplicaSpecs"];
    launcher = {"MPIJob Launcher", replicas["Launcher"]["template"]["metadata"],
                replicas["Launcher"]["template"]["spec"]};
    worker = {"MPIJob Worker", replicas["Worker"]["template"]["metadata"], replicas["Worker"]["template"]["spec"]};
    config = load_config_text(config_map["data"]["config.yaml"].as<std::string>(), "ConfigMap cnx-config");
  }

  static YAML::Node main_container(const Pod& pod) {
    EXPECT_EQ(pod.spec["containers"].size(), 1u) << pod.what;
    return pod.spec["containers"][0];
  }
  static Strings command_line(const YAML::Node& c) {
    Strings out;
    for (const char* key : {"command", "args"}) {
      if (c[key]) {
        for (const auto& a : c[key]) out.push_back(a.as<std::string>());
      }
    }
    return out;
  }
  // The value after `flag` on a command line ("" if absent).
  static std::string flag(const Strings& cmd, const std::string& name) {
    auto it = std::find(cmd.begin(), cmd.end(), name);
    return it == cmd.end() || it + 1 == cmd.end() ? "" : *(it + 1);
  }
  static Strings all_flags(const Strings& cmd, const std::string& name) {
    Strings out;
    for (size_t i = 0; i + 1 < cmd.size(); ++i) {
      if (cmd[i] == name) out.push_back(cmd[i + 1]);
    }
    return out;
  }
  static std::map<std::string, int> ports(const YAML::Node& c) {
    std::map<std::string, int> out;
    for (const auto& p : c["ports"]) out[p["name"].as<std::string>()] = p["containerPort"].as<int>();
    return out;
  }
  static YAML::Node volume(const Pod& pod, const std::string& name) {
    for (const auto& v : pod.spec["volumes"]) {
      if (v["name"].as<std::string>() == name) return v;
    }
    ADD_FAILURE() << pod.what << ": no volume '" << name << "'";
    return YAML::Node();
  }
  // Mount path of the volume backed by `kind` (configMap/secret/persistentVolumeClaim) named `source`.
  static std::string mount_of(const Pod& pod, const std::string& kind, const std::string& source) {
    const char* key = kind == "configMap" ? "name" : kind == "secret" ? "secretName" : "claimName";
    for (const auto& v : pod.spec["volumes"]) {
      if (v[kind] && v[kind][key].as<std::string>() == source) {
        for (const auto& m : main_container(pod)["volumeMounts"]) {
          if (m["name"].as<std::string>() == v["name"].as<std::string>()) return m["mountPath"].as<std::string>();
        }
      }
    }
    return "";
  }
  static bool under(const std::string& path, const std::string& dir) {
    return !dir.empty() && path.rfind(dir + "/", 0) == 0;
  }
  static bool labels_match(const YAML::Node& selector, const YAML::Node& labels) {
    for (const auto& kv : selector) {
      const auto k = kv.first.as<std::string>();
      if (!labels[k] || labels[k].as<std::string>() != kv.second.as<std::string>()) return false;
    }
    return true;
  }
  static std::string parent(const std::string& path) { return std::filesystem::path(path).parent_path().string(); }

  std::vector<K8sDoc> docs;
  YAML::Node config_map, deployment, service, mpijob;
  Pod coordinator, launcher, worker;
  Config config;
};

TEST_F(Manifests, EveryDocumentIsNamedAndKustomizationListsEveryFile) {
  std::set<std::string> files;
  std::set<std::pair<std::string, std::string>> seen;
  Strings kustomized;
  for (const auto& d : docs) {
    ASSERT_TRUE(d.node["apiVersion"] && d.node["kind"]) << d.file;
    const auto kind = d.node["kind"].as<std::string>();
    if (kind == "Kustomization") {
      for (const auto& r : d.node["resources"]) kustomized.push_back(r.as<std::string>());
      continue;
    }
    files.insert(d.file);
    ASSERT_TRUE(d.node["metadata"]["name"]) << d.file << " " << kind;
    EXPECT_TRUE(seen.insert({kind, d.node["metadata"]["name"].as<std::string>()}).second)
        << "duplicate " << kind << " in " << d.file;
    EXPECT_EQ(d.node["metadata"]["labels"]["app.kubernetes.io/part-of"].as<std::string>(""), "cnx")
        << d.file << " " << kind;
  }
  EXPECT_EQ(std::set<std::string>(kustomized.begin(), kustomized.end()), files);
}

TEST_F(Manifests, EmbeddedConfigIsValidAndMatchesConfigDefaults) {
  const Config defaults;
  EXPECT_EQ(config.metrics.worker_port, defaults.metrics.worker_port);
  EXPECT_EQ(config.metrics.coordinator_port, defaults.metrics.coordinator_port);
  EXPECT_EQ(port_of(config.coordinator.listen), port_of(defaults.coordinator.listen));
  EXPECT_EQ(config.coordinator.token_env, defaults.coordinator.token_env);
  EXPECT_EQ(config.coordinator.token_env, "CNX_JOB_TOKEN");
  // In a pod, the servers must listen beyond loopback to be reachable.
  EXPECT_EQ(config.metrics.listen_host, "0.0.0.0");
  EXPECT_EQ(config.coordinator.listen.substr(0, config.coordinator.listen.rfind(':')), "0.0.0.0");
  EXPECT_TRUE(config.metrics.enabled);
}

TEST_F(Manifests, VolumesReferToExistingObjectsAndMountsToVolumes) {
  for (const Pod* pod : {&coordinator, &launcher, &worker}) {
    std::set<std::string> volume_names;
    for (const auto& v : pod->spec["volumes"]) {
      volume_names.insert(v["name"].as<std::string>());
      if (v["configMap"]) find_doc(docs, "ConfigMap", v["configMap"]["name"].as<std::string>());
      if (v["secret"]) find_doc(docs, "Secret", v["secret"]["secretName"].as<std::string>());
      if (v["persistentVolumeClaim"]) {
        find_doc(docs, "PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"].as<std::string>());
      }
    }
    for (const auto& c : pod->spec["containers"]) {
      EXPECT_EQ(c["image"].as<std::string>(), main_container(coordinator)["image"].as<std::string>()) << pod->what;
      for (const auto& m : c["volumeMounts"]) {
        EXPECT_TRUE(volume_names.count(m["name"].as<std::string>()))
            << pod->what << ": mount of unknown volume " << m["name"].as<std::string>();
      }
    }
  }
}

TEST_F(Manifests, BinariesGetTheConfigFileFromTheConfigMap) {
  for (const Pod* pod : {&coordinator, &launcher}) {
    const Strings cmd = command_line(main_container(*pod));
    const std::string path = flag(cmd, "--config");
    ASSERT_FALSE(path.empty()) << pod->what << " passes no --config";
    EXPECT_EQ(parent(path), mount_of(*pod, "configMap", "cnx-config")) << pod->what;
    EXPECT_TRUE(config_map["data"][std::filesystem::path(path).filename().string()]) << path;
  }
  // Ranks read the same file in the worker pods (mpirun starts them there).
  EXPECT_EQ(mount_of(worker, "configMap", "cnx-config"),
            parent(flag(command_line(main_container(launcher)), "--config")));
  // --set overrides on the coordinator are valid for the strict loader.
  const Strings cmd = command_line(main_container(coordinator));
  EXPECT_EQ(cmd.front(), "cnx-coordinator");
  const Strings sets = all_flags(cmd, "--set");
  const Config with_sets =
      load_config_text(config_map["data"]["config.yaml"].as<std::string>(), "ConfigMap cnx-config", sets);
  EXPECT_EQ(
      under(with_sets.coordinator.state_db, mount_of(coordinator, "persistentVolumeClaim", "cnx-coordinator-state")),
      true)
      << with_sets.coordinator.state_db;
}

TEST_F(Manifests, TokenSecretIsMountedWhereTheConfigLooksForIt) {
  const YAML::Node secret = find_doc(docs, "Secret", "cnx-job-token");
  const std::string file = config.coordinator.token_file;
  ASSERT_FALSE(file.empty());
  const std::string key = std::filesystem::path(file).filename().string();
  EXPECT_TRUE(secret["stringData"][key] || secret["data"][key]) << "secret has no key '" << key << "'";
  for (const Pod* pod : {&coordinator, &worker}) {
    EXPECT_EQ(parent(file), mount_of(*pod, "secret", "cnx-job-token")) << pod->what;
  }
  // Any env var that reads the secret uses the configured variable name and an existing key.
  for (const Pod* pod : {&coordinator, &launcher, &worker}) {
    for (const auto& e : main_container(*pod)["env"]) {
      if (e["valueFrom"] && e["valueFrom"]["secretKeyRef"]) {
        EXPECT_EQ(e["name"].as<std::string>(), config.coordinator.token_env);
        const auto ref = e["valueFrom"]["secretKeyRef"];
        EXPECT_EQ(ref["name"].as<std::string>(), "cnx-job-token");
        EXPECT_TRUE(secret["stringData"][ref["key"].as<std::string>()]);
      }
    }
  }
}

TEST_F(Manifests, TlsIsOnAndEachSecretReachesOnlyWhoNeedsIt) {
  // The coordinator listens on 0.0.0.0: TLS must be on, plaintext not allowed.
  EXPECT_FALSE(config.coordinator.allow_plaintext);
  ASSERT_FALSE(config.coordinator.tls_cert.empty());
  ASSERT_FALSE(config.coordinator.tls_key.empty());
  ASSERT_FALSE(config.coordinator.tls_ca.empty());
  const YAML::Node tls = find_doc(docs, "Secret", "cnx-tls");
  for (const std::string& f : {config.coordinator.tls_cert, config.coordinator.tls_key, config.coordinator.tls_ca}) {
    const std::string key = std::filesystem::path(f).filename().string();
    EXPECT_TRUE(tls["stringData"][key] || tls["data"][key]) << "cnx-tls has no key '" << key << "'";
  }
  EXPECT_EQ(mount_of(coordinator, "secret", "cnx-tls"), parent(config.coordinator.tls_cert));
  EXPECT_EQ(mount_of(coordinator, "secret", "cnx-tls"), parent(config.coordinator.tls_key));
  EXPECT_EQ(mount_of(worker, "secret", "cnx-tls"), parent(config.coordinator.tls_ca));
  // Worker pods see the CA certificate only, never the coordinator's key.
  for (const auto& v : worker.spec["volumes"]) {
    if (!v["secret"] || v["secret"]["secretName"].as<std::string>() != "cnx-tls") continue;
    ASSERT_TRUE(v["secret"]["items"].IsSequence()) << "worker pods must project only ca.crt from cnx-tls";
    for (const auto& item : v["secret"]["items"]) EXPECT_EQ(item["key"].as<std::string>(), "ca.crt");
  }
  // The operator token: mounted in the coordinator where the config reads it,
  // and in no pod a rank runs in.
  ASSERT_FALSE(config.coordinator.operator_token_file.empty());
  const YAML::Node op = find_doc(docs, "Secret", "cnx-operator-token");
  const std::string op_key = std::filesystem::path(config.coordinator.operator_token_file).filename().string();
  EXPECT_TRUE(op["stringData"][op_key] || op["data"][op_key]);
  EXPECT_EQ(mount_of(coordinator, "secret", "cnx-operator-token"), parent(config.coordinator.operator_token_file));
  EXPECT_EQ(mount_of(worker, "secret", "cnx-operator-token"), "");
  EXPECT_EQ(mount_of(launcher, "secret", "cnx-operator-token"), "");
}

TEST_F(Manifests, CoordinatorDeploymentServiceAndState) {
  EXPECT_EQ(deployment["spec"]["replicas"].as<int>(), 1);
  EXPECT_EQ(deployment["spec"]["strategy"]["type"].as<std::string>(), "Recreate");
  EXPECT_TRUE(labels_match(deployment["spec"]["selector"]["matchLabels"], coordinator.meta["labels"]));
  const auto c = main_container(coordinator);
  const auto p = ports(c);
  EXPECT_EQ(p.at("grpc"), port_of(config.coordinator.listen));
  EXPECT_EQ(p.at("metrics"), config.metrics.coordinator_port);
  EXPECT_EQ(coordinator.meta["annotations"]["prometheus.io/port"].as<std::string>(),
            std::to_string(config.metrics.coordinator_port));
  EXPECT_EQ(c["livenessProbe"]["httpGet"]["path"].as<std::string>(), "/healthz");
  EXPECT_TRUE(p.count(c["livenessProbe"]["httpGet"]["port"].as<std::string>()));
  EXPECT_TRUE(p.count(c["readinessProbe"]["tcpSocket"]["port"].as<std::string>()));

  const auto pvc = find_doc(docs, "PersistentVolumeClaim", "cnx-coordinator-state");
  EXPECT_EQ(pvc["spec"]["accessModes"][0].as<std::string>(), "ReadWriteOnce");

  EXPECT_TRUE(labels_match(service["spec"]["selector"], coordinator.meta["labels"]));
  std::map<std::string, int> service_ports;
  for (const auto& sp : service["spec"]["ports"]) {
    service_ports[sp["name"].as<std::string>()] = sp["port"].as<int>();
    EXPECT_TRUE(p.count(sp["targetPort"].as<std::string>())) << "Service targetPort " << sp["targetPort"];
  }
  EXPECT_EQ(service_ports.at("grpc"), port_of(config.coordinator.listen));
  EXPECT_EQ(service_ports.at("metrics"), config.metrics.coordinator_port);
}

TEST_F(Manifests, MpiJobLaunchesOneRankPerSlotAgainstTheCoordinatorService) {
  EXPECT_EQ(mpijob["apiVersion"].as<std::string>(), "kubeflow.org/v2beta1");
  const int slots = mpijob["spec"]["slotsPerWorker"].as<int>();
  const auto replicas = mpijob["spec"]["mpiReplicaSpecs"];
  EXPECT_EQ(replicas["Launcher"]["replicas"].as<int>(), 1);
  const int workers = replicas["Worker"]["replicas"].as<int>();
  EXPECT_GE(mpijob["spec"]["runPolicy"]["backoffLimit"].as<int>(), 1);
  EXPECT_EQ(replicas["Launcher"]["restartPolicy"].as<std::string>(), "OnFailure");

  const Strings cmd = command_line(main_container(launcher));
  EXPECT_EQ(cmd.front(), "mpirun");
  const int np = std::stoi(flag(cmd, "-np"));
  EXPECT_EQ(np, workers * slots);
  if (config.coordinator.world_size > 0) {
    EXPECT_EQ(np, config.coordinator.world_size);
  }
  EXPECT_NE(std::find(cmd.begin(), cmd.end(), "cnx-worker"), cmd.end());
  const std::string target = flag(cmd, "--coordinator");
  EXPECT_EQ(target,
            service["metadata"]["name"].as<std::string>() + ":" + std::to_string(port_of(config.coordinator.listen)));

  // Local rank i of a worker pod serves metrics on worker_port + i.
  const auto p = ports(main_container(worker));
  ASSERT_EQ(static_cast<int>(p.size()), slots);
  for (int i = 0; i < slots; ++i) {
    EXPECT_EQ(p.at("metrics-r" + std::to_string(i)), config.metrics.worker_port + i);
  }
  EXPECT_EQ(worker.meta["annotations"]["prometheus.io/port"].as<std::string>(),
            std::to_string(config.metrics.worker_port));
}

TEST_F(Manifests, PreemptionBudgetsNest) {
  // SIGTERM -> entrypoint forwards to ranks (waits CNX_TERM_GRACE_S) ->
  // checkpoint; mpirun's sigkill timeout and the pods' grace periods must
  // each leave room for the step inside them.
  const Strings cmd = command_line(main_container(launcher));
  int sigkill_timeout = -1;
  for (size_t i = 0; i + 2 < cmd.size(); ++i) {
    if (cmd[i] == "--mca" && cmd[i + 1] == "odls_base_sigkill_timeout") sigkill_timeout = std::stoi(cmd[i + 2]);
  }
  int entry_grace = -1;
  for (const auto& e : main_container(worker)["env"]) {
    if (e["name"].as<std::string>() == "CNX_TERM_GRACE_S") entry_grace = std::stoi(e["value"].as<std::string>());
  }
  const int worker_grace = worker.spec["terminationGracePeriodSeconds"].as<int>();
  const int launcher_grace = launcher.spec["terminationGracePeriodSeconds"].as<int>();
  EXPECT_GE(sigkill_timeout, 120) << "a checkpoint of a large model needs minutes";
  EXPECT_GT(entry_grace, sigkill_timeout);
  EXPECT_GT(worker_grace, entry_grace);
  EXPECT_GE(launcher_grace, worker_grace);
  EXPECT_EQ(main_container(worker)["command"][0].as<std::string>(), "/usr/local/bin/cnx-worker-entrypoint");
}

TEST_F(Manifests, CheckpointsAndDataAreSharedVolumes) {
  const auto ckpt = find_doc(docs, "PersistentVolumeClaim", "cnx-checkpoints");
  EXPECT_EQ(ckpt["spec"]["accessModes"][0].as<std::string>(), "ReadWriteMany");
  for (const Pod* pod : {&coordinator, &worker}) {
    EXPECT_TRUE(under(config.checkpoint.root, mount_of(*pod, "persistentVolumeClaim", "cnx-checkpoints")))
        << pod->what << " does not mount the checkpoint root " << config.checkpoint.root;
  }
  EXPECT_TRUE(under(config.data.index, mount_of(worker, "persistentVolumeClaim", "cnx-data"))) << config.data.index;
}

TEST_F(Manifests, PodMonitorScrapesEveryMetricsPortWithHonorLabels) {
  const auto pm = find_doc(docs, "PodMonitor", "cnx");
  EXPECT_EQ(pm["apiVersion"].as<std::string>(), "monitoring.coreos.com/v1");
  const auto selector = pm["spec"]["selector"]["matchLabels"];
  std::set<std::string> metric_ports;
  for (const Pod* pod : {&coordinator, &worker}) {
    EXPECT_TRUE(labels_match(selector, pod->meta["labels"])) << pod->what << " not selected by the PodMonitor";
    for (const auto& [name, port] : ports(main_container(*pod))) {
      if (name.rfind("metrics", 0) == 0) metric_ports.insert(name);
    }
  }
  std::set<std::string> scraped;
  for (const auto& ep : pm["spec"]["podMetricsEndpoints"]) {
    scraped.insert(ep["port"].as<std::string>());
    EXPECT_TRUE(ep["honorLabels"].as<bool>()) << ep["port"];
    EXPECT_EQ(ep["path"].as<std::string>("/metrics"), "/metrics");
  }
  EXPECT_EQ(scraped, metric_ports);
}

TEST(DeployLocal, PrometheusYamlScrapesTheDefaultPorts) {
  const YAML::Node y = YAML::Load(read_text(source_dir() + "/deploy/local/prometheus.yml"));
  const Config defaults;
  std::set<std::string> targets;
  for (const auto& sc : y["scrape_configs"]) {
    EXPECT_TRUE(sc["honor_labels"].as<bool>()) << sc["job_name"];
    for (const auto& st : sc["static_configs"]) {
      for (const auto& t : st["targets"]) targets.insert(t.as<std::string>());
    }
  }
  EXPECT_TRUE(targets.count("127.0.0.1:" + std::to_string(defaults.metrics.coordinator_port)));
  for (int r = 0; r < 2; ++r)
    EXPECT_TRUE(targets.count("127.0.0.1:" + std::to_string(defaults.metrics.worker_port + r)));
  // Prometheus itself accepts the file.
  const auto check =
      run_command({"/usr/bin/promtool", "check", "config", source_dir() + "/deploy/local/prometheus.yml"});
  EXPECT_EQ(check.exit_code, 0) << check.output;
}

TEST(DeployDocker, DockerfilesBuildWithSetupAndShipTheEntrypoint) {
  const std::string cpu = read_text(source_dir() + "/deploy/docker/Dockerfile");
  const std::string cuda = read_text(source_dir() + "/deploy/docker/Dockerfile.cuda");
  EXPECT_NE(cpu.find("FROM debian:12"), std::string::npos);
  EXPECT_NE(cpu.find("scripts/setup.sh"), std::string::npos);
  // The CUDA image fails when NCCL is asked for and not found, and looks for
  // nccl.h where the nvidia-nccl wheel puts it (not under an extra /nccl).
  EXPECT_NE(cuda.find("-DCNX_REQUIRE_NCCL=ON"), std::string::npos);
  EXPECT_EQ(cuda.find("+ \"/nccl\""), std::string::npos);
  EXPECT_NE(cuda.find("TORCH_CUDA_ARCH_LIST"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(source_dir() + "/scripts/setup.sh"));
  const Config defaults;
  for (const std::string* d : {&cpu, &cuda}) {
    EXPECT_NE(d->find("deploy/docker/worker-entrypoint.sh /usr/local/bin/cnx-worker-entrypoint"), std::string::npos);
    const size_t expose = d->find("\nEXPOSE ");
    ASSERT_NE(expose, std::string::npos);
    const std::string line = d->substr(expose, d->find('\n', expose + 1) - expose);
    for (int port : {port_of(defaults.coordinator.listen), int(defaults.metrics.coordinator_port),
                     int(defaults.metrics.worker_port), int(defaults.metrics.worker_port + 1)}) {
      EXPECT_NE(line.find(" " + std::to_string(port)), std::string::npos) << port << " not in" << line;
    }
  }
  // Both images install setup.sh's PACKAGES list, extracted by this sed: it must still find it.
  const std::string extract = "sed -n \"/^PACKAGES=(/,/^)/p\" scripts/setup.sh";
  EXPECT_NE(cpu.find(extract), std::string::npos);
  EXPECT_NE(cuda.find(extract), std::string::npos);
  const auto pkgs = run_command({"/bin/bash", "-c",
                                 "cd '" + source_dir() + "' && " + extract +
                                     " > /tmp/cnx_pkgs_$$.sh && . /tmp/cnx_pkgs_$$.sh && rm /tmp/cnx_pkgs_$$.sh && "
                                     "printf '%s\\n' \"${PACKAGES[@]}\""});
  ASSERT_EQ(pkgs.exit_code, 0) << pkgs.output;
  for (const char* p : {"libcivetweb-dev", "libtorch-dev", "libopenmpi-dev", "libgrpc++-dev", "prometheus"}) {
    EXPECT_NE(pkgs.output.find(std::string(p) + "\n"), std::string::npos) << p << " not in setup.sh PACKAGES";
  }
  EXPECT_NE(cuda.find("CNX_CORE_ONLY=ON"), std::string::npos);
  EXPECT_NE(cuda.find("CNX_WITH_NCCL=ON"), std::string::npos);
  const std::string entry = source_dir() + "/deploy/docker/worker-entrypoint.sh";
  struct stat st {};
  ASSERT_EQ(stat(entry.c_str(), &st), 0);
  EXPECT_TRUE(st.st_mode & S_IXUSR) << entry << " is not executable";
  const auto syntax = run_command({"/bin/bash", "-n", entry});
  EXPECT_EQ(syntax.exit_code, 0) << syntax.output;
}

}  // namespace
}  // namespace cnx::testing
