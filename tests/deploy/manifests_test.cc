// deploy/: what each Kubernetes overlay renders to (kubectl kustomize) agrees
// with itself, with the config it embeds (loaded by the project's strict
// loader), with common/config.h defaults, with the size in its job-size.yaml,
// and with the Dockerfiles. The objects' schemas are checked by
// tests/deploy/validate_k8s.py.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "common/config.h"
#include "coordinator/auth.h"
#include "coordinator/client.h"
#include "tests/deploy/deploy_files.h"
#include "tests/metrics/prom_harness.h"

namespace cnx::testing {
namespace {

namespace fs = std::filesystem;
using Strings = std::vector<std::string>;

int port_of(const std::string& host_port) {
  return std::stoi(host_port.substr(host_port.rfind(':') + 1));
}

struct Pod {
  std::string what;
  YAML::Node meta;  // template metadata
  YAML::Node spec;  // pod spec
};

YAML::Node main_container(const Pod& pod) {
  EXPECT_EQ(pod.spec["containers"].size(), 1u) << pod.what;
  return pod.spec["containers"][0];
}
Strings command_line(const YAML::Node& c) {
  Strings out;
  for (const char* key : {"command", "args"}) {
    if (c[key]) {
      for (const auto& a : c[key]) out.push_back(a.as<std::string>());
    }
  }
  return out;
}
// The value after `flag` on a command line ("" if absent).
std::string flag(const Strings& cmd, const std::string& name) {
  auto it = std::find(cmd.begin(), cmd.end(), name);
  return it == cmd.end() || it + 1 == cmd.end() ? "" : *(it + 1);
}
Strings all_flags(const Strings& cmd, const std::string& name) {
  Strings out;
  for (size_t i = 0; i + 1 < cmd.size(); ++i) {
    if (cmd[i] == name) out.push_back(cmd[i + 1]);
  }
  return out;
}
std::map<std::string, int> ports(const YAML::Node& c) {
  std::map<std::string, int> out;
  for (const auto& p : c["ports"]) out[p["name"].as<std::string>()] = p["containerPort"].as<int>();
  return out;
}
// Mount path of the volume backed by `kind` (configMap/secret/persistentVolumeClaim)
// named `source` in container `c` of `pod` ("" if not mounted).
std::string mount_of(const Pod& pod, const YAML::Node& c, const std::string& kind, const std::string& source,
                     bool* read_only = nullptr) {
  const char* key = kind == "configMap" ? "name" : kind == "secret" ? "secretName" : "claimName";
  for (const auto& v : pod.spec["volumes"]) {
    if (v[kind] && v[kind][key].as<std::string>() == source) {
      for (const auto& m : c["volumeMounts"]) {
        if (m["name"].as<std::string>() == v["name"].as<std::string>()) {
          if (read_only != nullptr) *read_only = m["readOnly"].as<bool>(false);
          return m["mountPath"].as<std::string>();
        }
      }
    }
  }
  return "";
}
std::string mount_of(const Pod& pod, const std::string& kind, const std::string& source, bool* read_only = nullptr) {
  return mount_of(pod, main_container(pod), kind, source, read_only);
}
bool under(const std::string& path, const std::string& dir) {
  return !dir.empty() && path.rfind(dir + "/", 0) == 0;
}
bool labels_match(const YAML::Node& selector, const YAML::Node& labels) {
  for (const auto& kv : selector) {
    const auto k = kv.first.as<std::string>();
    if (!labels[k] || labels[k].as<std::string>() != kv.second.as<std::string>()) return false;
  }
  return true;
}
std::string parent(const std::string& path) {
  return fs::path(path).parent_path().string();
}
YAML::Node job_size(const std::string& overlay_dir) {
  return YAML::LoadFile(overlay_dir + "/job-size.yaml")["data"];
}

class Manifests : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { load(load_k8s_docs(GetParam())); }
  void load(std::vector<K8sDoc> rendered) {
    docs = std::move(rendered);
    config_map = find_doc(docs, "ConfigMap", "cnx-config");
    deployment = find_doc(docs, "Deployment", "cnx-coordinator");
    service = find_doc(docs, "Service", "cnx-coordinator");
    mpijob = find_doc(docs, "MPIJob", "cnx-fcmae-atto");
    const YAML::Node prep = find_doc(docs, "Job", "cnx-data-prep");
    coordinator = {"coordinator Deployment", deployment["spec"]["template"]["metadata"],
                   deployment["spec"]["template"]["spec"]};
    const auto replicas = mpijob["spec"]["mpiReplicaSpecs"];
    launcher = {"MPIJob Launcher", replicas["Launcher"]["template"]["metadata"],
                replicas["Launcher"]["template"]["spec"]};
    worker = {"MPIJob Worker", replicas["Worker"]["template"]["metadata"], replicas["Worker"]["template"]["spec"]};
    data_prep = {"Job cnx-data-prep", prep["spec"]["template"]["metadata"], prep["spec"]["template"]["spec"]};
    config = load_config_text(config_map["data"]["config.yaml"].as<std::string>(), "ConfigMap cnx-config");
  }
  std::string overlay_dir() const { return source_dir() + "/deploy/k8s/overlays/" + GetParam(); }
  std::vector<const Pod*> pods() const { return {&coordinator, &launcher, &worker, &data_prep}; }

  std::vector<K8sDoc> docs;
  YAML::Node config_map, deployment, service, mpijob;
  Pod coordinator, launcher, worker, data_prep;
  Config config;
};

INSTANTIATE_TEST_SUITE_P(Overlays, Manifests, ::testing::ValuesIn(k8s_overlays()));

TEST(ManifestsLayout, EveryOverlayHasItsSizeFile) {
  const Strings overlays = k8s_overlays();
  EXPECT_EQ(overlays, (Strings{"cpu", "gpu"}));
  for (const auto& o : overlays) {
    const auto size = job_size(source_dir() + "/deploy/k8s/overlays/" + o);
    EXPECT_GE(std::stoi(size["workers"].as<std::string>()), 1) << o;
    EXPECT_GE(std::stoi(size["slotsPerWorker"].as<std::string>()), 1) << o;
  }
}

TEST_P(Manifests, EveryObjectIsLabelledNamespacedAndUnique) {
  std::set<std::pair<std::string, std::string>> seen;
  for (const auto& d : docs) {
    const auto kind = d.node["kind"].as<std::string>();
    const auto name = d.node["metadata"]["name"].as<std::string>();
    EXPECT_TRUE(seen.insert({kind, name}).second) << "duplicate " << kind << " " << name;
    EXPECT_EQ(d.node["metadata"]["labels"]["app.kubernetes.io/part-of"].as<std::string>(""), "cnx") << kind;
    EXPECT_EQ(d.node["metadata"]["namespace"].as<std::string>(""), "cnx") << kind << " " << name;
  }
  // The size file is local configuration, not an object in the cluster.
  EXPECT_EQ(seen.count({"ConfigMap", "cnx-job-size"}), 0u);
}

TEST_P(Manifests, EmbeddedConfigIsValidAndMatchesConfigDefaults) {
  const Config defaults;
  EXPECT_EQ(config.metrics.worker_port, defaults.metrics.worker_port);
  EXPECT_EQ(config.metrics.coordinator_port, defaults.metrics.coordinator_port);
  EXPECT_EQ(port_of(config.coordinator.listen), port_of(defaults.coordinator.listen));
  EXPECT_EQ(config.coordinator.token_env, "CNX_JOB_TOKEN");
  // In a pod, the servers must listen beyond loopback to be reachable.
  EXPECT_EQ(config.metrics.listen_host, "0.0.0.0");
  EXPECT_EQ(config.coordinator.listen.substr(0, config.coordinator.listen.rfind(':')), "0.0.0.0");
  EXPECT_TRUE(config.metrics.enabled);
  // The size lives in job-size.yaml only: the coordinator learns it.
  EXPECT_EQ(config.coordinator.world_size, 0);
}

TEST_P(Manifests, VolumesExistMountsResolveAndImagesArePinned) {
  for (const Pod* pod : pods()) {
    std::set<std::string> volume_names;
    for (const auto& v : pod->spec["volumes"]) {
      volume_names.insert(v["name"].as<std::string>());
      if (v["configMap"]) find_doc(docs, "ConfigMap", v["configMap"]["name"].as<std::string>());
      if (v["secret"]) find_doc(docs, "Secret", v["secret"]["secretName"].as<std::string>());
      if (v["persistentVolumeClaim"]) {
        find_doc(docs, "PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"].as<std::string>());
      }
    }
    for (const char* list : {"initContainers", "containers"}) {
      for (const auto& c : pod->spec[list]) {
        const auto image = c["image"].as<std::string>();
        const size_t colon = image.rfind(':');
        ASSERT_TRUE(colon != std::string::npos && colon > image.rfind('/')) << pod->what << ": untagged " << image;
        EXPECT_NE(image.substr(colon + 1), "latest") << pod->what;
        for (const auto& m : c["volumeMounts"]) {
          EXPECT_TRUE(volume_names.count(m["name"].as<std::string>()))
              << pod->what << ": mount of unknown volume " << m["name"].as<std::string>();
        }
      }
    }
  }
  // The launcher's mpirun and the workers' cnx-worker come from one image.
  EXPECT_EQ(main_container(launcher)["image"].as<std::string>(), main_container(worker)["image"].as<std::string>());
  EXPECT_EQ(main_container(coordinator)["image"].as<std::string>(),
            main_container(data_prep)["image"].as<std::string>());
  if (GetParam() == "gpu") {
    EXPECT_NE(main_container(worker)["image"].as<std::string>().find("cuda"), std::string::npos);
  }
}

TEST_P(Manifests, BinariesGetTheConfigFileFromTheConfigMap) {
  for (const Pod* pod : {&coordinator, &launcher}) {
    const Strings cmd = command_line(main_container(*pod));
    const std::string path = flag(cmd, "--config");
    ASSERT_FALSE(path.empty()) << pod->what << " passes no --config";
    EXPECT_EQ(parent(path), mount_of(*pod, "configMap", "cnx-config")) << pod->what;
    EXPECT_TRUE(config_map["data"][fs::path(path).filename().string()]) << path;
  }
  // Ranks read the same file in the worker pods (mpirun starts them there).
  EXPECT_EQ(mount_of(worker, "configMap", "cnx-config"),
            parent(flag(command_line(main_container(launcher)), "--config")));
  // --set overrides on the coordinator are valid for the strict loader.
  const Strings cmd = command_line(main_container(coordinator));
  EXPECT_EQ(cmd.front(), "cnx-coordinator");
  const Config with_sets = load_config_text(config_map["data"]["config.yaml"].as<std::string>(), "ConfigMap cnx-config",
                                            all_flags(cmd, "--set"));
  EXPECT_TRUE(
      under(with_sets.coordinator.state_db, mount_of(coordinator, "persistentVolumeClaim", "cnx-coordinator-state")))
      << with_sets.coordinator.state_db;
}

TEST_P(Manifests, TokenSecretIsMountedWhereTheConfigLooksForIt) {
  const YAML::Node secret = find_doc(docs, "Secret", "cnx-job-token");
  const std::string file = config.coordinator.token_file;
  ASSERT_FALSE(file.empty());
  const std::string key = fs::path(file).filename().string();
  EXPECT_TRUE(secret["stringData"][key] || secret["data"][key]) << "secret has no key '" << key << "'";
  for (const Pod* pod : {&coordinator, &worker}) EXPECT_EQ(parent(file), mount_of(*pod, "secret", "cnx-job-token"));
}

TEST_P(Manifests, TlsIsOnAndEachSecretReachesOnlyWhoNeedsIt) {
  EXPECT_FALSE(config.coordinator.allow_plaintext);
  ASSERT_FALSE(config.coordinator.tls_cert.empty());
  ASSERT_FALSE(config.coordinator.tls_key.empty());
  ASSERT_FALSE(config.coordinator.tls_ca.empty());
  const YAML::Node tls = find_doc(docs, "Secret", "cnx-tls");
  for (const std::string& f : {config.coordinator.tls_cert, config.coordinator.tls_key, config.coordinator.tls_ca}) {
    const std::string key = fs::path(f).filename().string();
    EXPECT_TRUE(tls["stringData"][key] || tls["data"][key]) << "cnx-tls has no key '" << key << "'";
    // The coordinator pod has all three: its certificate and key, and the CA
    // that cnx-ctl in that pod verifies it with.
    EXPECT_EQ(mount_of(coordinator, "secret", "cnx-tls"), parent(f)) << f;
  }
  EXPECT_EQ(mount_of(worker, "secret", "cnx-tls"), parent(config.coordinator.tls_ca));
  for (const auto& v : worker.spec["volumes"]) {
    if (!v["secret"] || v["secret"]["secretName"].as<std::string>() != "cnx-tls") continue;
    ASSERT_TRUE(v["secret"]["items"].IsSequence()) << "worker pods must project only ca.crt from cnx-tls";
    for (const auto& item : v["secret"]["items"]) EXPECT_EQ(item["key"].as<std::string>(), "ca.crt");
  }
  // The operator token: where cnx-ctl runs (the coordinator pod), in no pod a rank runs in.
  const std::string op_key = fs::path(config.coordinator.operator_token_file).filename().string();
  const YAML::Node op = find_doc(docs, "Secret", "cnx-operator-token");
  EXPECT_TRUE(op["stringData"][op_key] || op["data"][op_key]);
  EXPECT_EQ(mount_of(coordinator, "secret", "cnx-operator-token"), parent(config.coordinator.operator_token_file));
  EXPECT_EQ(mount_of(worker, "secret", "cnx-operator-token"), "");
  EXPECT_EQ(mount_of(launcher, "secret", "cnx-operator-token"), "");
}

// `kubectl exec deploy/cnx-coordinator -- cnx-ctl --config /etc/cnx/config.yaml`
// dials loopback (not the 0.0.0.0 listen address) over TLS, and the
// certificate make-secrets.sh issues names loopback and the Service.
TEST_P(Manifests, CnxCtlInTheCoordinatorPodDialsLoopbackAndTheCertificateNamesIt) {
  const std::string dial = coordinator::dial_address_for_listen(config.coordinator.listen);
  EXPECT_EQ(dial, "127.0.0.1:" + std::to_string(port_of(config.coordinator.listen)));
  EXPECT_TRUE(coordinator::is_loopback_address(dial));
  const auto gen = run_command({"/bin/bash", source_dir() + "/deploy/k8s/make-secrets.sh", "cnx"});
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  std::vector<YAML::Node> secrets = YAML::LoadAll(gen.output);
  std::string cert;
  for (const auto& s : secrets) {
    if (s["metadata"]["name"].as<std::string>() == "cnx-tls") cert = s["stringData"]["tls.crt"].as<std::string>();
  }
  ASSERT_FALSE(cert.empty()) << gen.output;
  const auto san = run_command({"/usr/bin/openssl", "x509", "-noout", "-ext", "subjectAltName"}, cert);
  ASSERT_EQ(san.exit_code, 0) << san.output;
  const std::string ns = find_doc(docs, "Service", "cnx-coordinator")["metadata"]["namespace"].as<std::string>();
  for (const std::string& name : {std::string("DNS:cnx-coordinator,"), "DNS:cnx-coordinator." + ns + ".svc,",
                                  std::string("IP Address:127.0.0.1")}) {
    EXPECT_NE(san.output.find(name), std::string::npos) << name << " not in\n" << san.output;
  }
}

TEST_P(Manifests, CoordinatorDeploymentServiceAndState) {
  EXPECT_EQ(deployment["spec"]["replicas"].as<int>(), 1);
  EXPECT_EQ(deployment["spec"]["strategy"]["type"].as<std::string>(), "Recreate");
  EXPECT_TRUE(labels_match(deployment["spec"]["selector"]["matchLabels"], coordinator.meta["labels"]));
  const auto c = main_container(coordinator);
  const auto p = ports(c);
  EXPECT_EQ(p.at("grpc"), port_of(config.coordinator.listen));
  EXPECT_EQ(p.at("metrics"), config.metrics.coordinator_port);
  EXPECT_EQ(c["livenessProbe"]["httpGet"]["path"].as<std::string>(), "/healthz");
  EXPECT_TRUE(p.count(c["livenessProbe"]["httpGet"]["port"].as<std::string>()));
  EXPECT_TRUE(p.count(c["readinessProbe"]["tcpSocket"]["port"].as<std::string>()));
  EXPECT_EQ(
      find_doc(docs, "PersistentVolumeClaim", "cnx-coordinator-state")["spec"]["accessModes"][0].as<std::string>(),
      "ReadWriteOnce");
  EXPECT_TRUE(labels_match(service["spec"]["selector"], coordinator.meta["labels"]));
  std::map<std::string, int> service_ports;
  for (const auto& sp : service["spec"]["ports"]) {
    service_ports[sp["name"].as<std::string>()] = sp["port"].as<int>();
    EXPECT_TRUE(p.count(sp["targetPort"].as<std::string>())) << "Service targetPort " << sp["targetPort"];
  }
  EXPECT_EQ(service_ports.at("grpc"), port_of(config.coordinator.listen));
  EXPECT_EQ(service_ports.at("metrics"), config.metrics.coordinator_port);
}

TEST_P(Manifests, LauncherWaitsForReadyWorkersAndRestartsOnRetryableExitCodes) {
  EXPECT_EQ(mpijob["apiVersion"].as<std::string>(), "kubeflow.org/v2beta1");
  EXPECT_EQ(mpijob["spec"]["launcherCreationPolicy"].as<std::string>(), "WaitForWorkersReady");
  const auto replicas = mpijob["spec"]["mpiReplicaSpecs"];
  EXPECT_EQ(replicas["Launcher"]["replicas"].as<int>(), 1);
  EXPECT_EQ(replicas["Launcher"]["restartPolicy"].as<std::string>(), "ExitCode");
  EXPECT_GE(mpijob["spec"]["runPolicy"]["backoffLimit"].as<int>(), 1);
  // A worker is Ready once its sshd accepts connections.
  const auto c = main_container(worker);
  ASSERT_TRUE(c["readinessProbe"]["tcpSocket"]) << "worker pods need a readiness probe on sshd";
  EXPECT_EQ(ports(c).at(c["readinessProbe"]["tcpSocket"]["port"].as<std::string>()), 2222);
}

TEST_P(Manifests, SizeComesFromJobSizeYamlAndEveryRankIsScraped) {
  const auto size = job_size(overlay_dir());
  const int workers = std::stoi(size["workers"].as<std::string>());
  const int slots = std::stoi(size["slotsPerWorker"].as<std::string>());
  EXPECT_EQ(mpijob["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"].as<int>(), workers);
  EXPECT_EQ(mpijob["spec"]["slotsPerWorker"].as<int>(), slots);
  EXPECT_EQ(worker.meta["labels"]["cnx-slots-per-worker"].as<std::string>(), std::to_string(slots));
  const YAML::Node gpus = main_container(worker)["resources"]["limits"]["nvidia.com/gpu"];
  if (GetParam() == "gpu") {
    ASSERT_TRUE(gpus) << "GPU workers request no nvidia.com/gpu";
    EXPECT_EQ(gpus.as<int>(), slots) << "one GPU per rank";
    EXPECT_TRUE(worker.spec["tolerations"].IsSequence());
    EXPECT_TRUE(worker.spec["nodeSelector"].IsMap());
  } else {
    EXPECT_FALSE(gpus);
  }
  // mpirun starts one rank per hostfile slot (workers x slotsPerWorker): no -np to keep in step.
  const Strings cmd = command_line(main_container(launcher));
  EXPECT_EQ(cmd.front(), "mpirun");
  for (const char* np : {"-np", "-n", "--np", "-c"}) EXPECT_EQ(flag(cmd, np), "") << np;
  EXPECT_NE(std::find(cmd.begin(), cmd.end(), "cnx-worker"), cmd.end());
  EXPECT_EQ(flag(cmd, "--coordinator"),
            service["metadata"]["name"].as<std::string>() + ":" + std::to_string(port_of(config.coordinator.listen)));
  // Local rank i serves metrics on worker_port + i: a port for every slot.
  const auto p = ports(main_container(worker));
  int declared = 0;
  for (; p.count("metrics-r" + std::to_string(declared)); ++declared) {
    EXPECT_EQ(p.at("metrics-r" + std::to_string(declared)), config.metrics.worker_port + declared);
  }
  EXPECT_GE(declared, slots) << "more ranks per pod than metrics ports";
}

// Another size in job-size.yaml alone changes everything that depends on it.
TEST_P(Manifests, ChangingJobSizeYamlAloneResizesTheJob) {
  const fs::path tmp = fs::temp_directory_path() / ("cnx_k8s_resize_" + GetParam() + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::copy(source_dir() + "/deploy/k8s", tmp, fs::copy_options::recursive);
  const std::string size_file = (tmp / "overlays" / GetParam() / "job-size.yaml").string();
  std::string text = read_text(size_file);
  text = std::regex_replace(text, std::regex(R"(workers: "\d+")"), "workers: \"5\"");
  text = std::regex_replace(text, std::regex(R"(slotsPerWorker: "\d+")"), "slotsPerWorker: \"3\"");
  std::ofstream(size_file) << text;
  load(render_kustomization((tmp / "overlays" / GetParam()).string()));
  fs::remove_all(tmp);
  EXPECT_EQ(mpijob["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"].as<int>(), 5);
  EXPECT_EQ(mpijob["spec"]["slotsPerWorker"].as<int>(), 3);
  EXPECT_EQ(worker.meta["labels"]["cnx-slots-per-worker"].as<std::string>(), "3");
  if (GetParam() == "gpu") {
    EXPECT_EQ(main_container(worker)["resources"]["limits"]["nvidia.com/gpu"].as<int>(), 3);
  }
}

TEST_P(Manifests, PodMonitorScrapesEachRunningRankOnceAndIsDiscoverable) {
  const auto pm = find_doc(docs, "PodMonitor", "cnx");
  EXPECT_EQ(pm["apiVersion"].as<std::string>(), "monitoring.coreos.com/v1");
  // kube-prometheus-stack selects PodMonitors by release=<Helm release>.
  EXPECT_FALSE(pm["metadata"]["labels"]["release"].as<std::string>("").empty());
  const auto selector = pm["spec"]["selector"]["matchLabels"];
  std::set<std::string> metric_ports;
  for (const Pod* pod : {&coordinator, &worker}) {
    EXPECT_TRUE(labels_match(selector, pod->meta["labels"])) << pod->what << " not selected by the PodMonitor";
    for (const auto& [name, port] : ports(main_container(*pod))) {
      if (name.rfind("metrics", 0) == 0) metric_ports.insert(name);
    }
  }
  // No double scrape: no pod also asks for annotation-based discovery.
  for (const Pod* pod : pods()) {
    const YAML::Node annotations = pod->meta["annotations"];
    EXPECT_FALSE(annotations && annotations["prometheus.io/scrape"]) << pod->what;
  }
  // The label the relabelings read, as Prometheus names it.
  const std::string slots_meta = "__meta_kubernetes_pod_label_cnx_slots_per_worker";
  ASSERT_TRUE(worker.meta["labels"]["cnx-slots-per-worker"]);
  int declared = 0;  // metrics-r0 .. metrics-r<declared-1> on the worker container
  while (ports(main_container(worker)).count("metrics-r" + std::to_string(declared))) ++declared;
  std::set<std::string> scraped;
  for (const auto& ep : pm["spec"]["podMetricsEndpoints"]) {
    const auto port = ep["port"].as<std::string>();
    scraped.insert(port);
    EXPECT_FALSE(ep["honorLabels"].as<bool>(false)) << port << ": our labels do not collide; keep Prometheus's job";
    EXPECT_EQ(ep["path"].as<std::string>("/metrics"), "/metrics");
    if (port.rfind("metrics-r", 0) != 0) continue;
    // The endpoint of local rank i keeps pods with more than i slots, and only those.
    const int local = std::stoi(port.substr(9));
    int keeps = 0;
    for (const auto& r : ep["relabelings"]) {
      if (r["action"].as<std::string>() != "keep") continue;
      ++keeps;
      EXPECT_EQ(r["sourceLabels"][0].as<std::string>(), slots_meta);
      const std::regex re("^(?:" + r["regex"].as<std::string>() + ")$");  // Prometheus anchors its regexes
      for (int n = 1; n <= 16; ++n) {
        const bool runs = local < n && n <= declared;
        EXPECT_EQ(std::regex_match(std::to_string(n), re), runs) << port << " with " << n << " slots";
      }
    }
    EXPECT_EQ(keeps, 1) << port;
  }
  EXPECT_EQ(scraped, metric_ports);
}

TEST_P(Manifests, PreemptionBudgetsNest) {
  const Strings cmd = command_line(main_container(launcher));
  int sigkill_timeout = -1;
  for (size_t i = 0; i + 2 < cmd.size(); ++i) {
    if (cmd[i] == "--mca" && cmd[i + 1] == "odls_base_sigkill_timeout") sigkill_timeout = std::stoi(cmd[i + 2]);
  }
  int entry_grace = -1;
  for (const auto& e : main_container(worker)["env"]) {
    if (e["name"].as<std::string>() == "CNX_TERM_GRACE_S") entry_grace = std::stoi(e["value"].as<std::string>());
  }
  EXPECT_GE(sigkill_timeout, 120) << "a checkpoint of a large model needs minutes";
  EXPECT_GT(entry_grace, sigkill_timeout);
  EXPECT_GT(worker.spec["terminationGracePeriodSeconds"].as<int>(), entry_grace);
  EXPECT_GE(launcher.spec["terminationGracePeriodSeconds"].as<int>(),
            worker.spec["terminationGracePeriodSeconds"].as<int>());
  EXPECT_EQ(main_container(worker)["command"][0].as<std::string>(), "/usr/local/bin/cnx-worker-entrypoint");
}

TEST_P(Manifests, DataPrepFillsTheDataVolumeTheOthersReadAndWaitFor) {
  const auto ckpt = find_doc(docs, "PersistentVolumeClaim", "cnx-checkpoints");
  EXPECT_EQ(ckpt["spec"]["accessModes"][0].as<std::string>(), "ReadWriteMany");
  for (const Pod* pod : {&coordinator, &worker}) {
    EXPECT_TRUE(under(config.checkpoint.root, mount_of(*pod, "persistentVolumeClaim", "cnx-checkpoints")))
        << pod->what << " does not mount the checkpoint root " << config.checkpoint.root;
  }
  const std::string index = config.data.index;
  // The coordinator reads the index (its lease table), the ranks the shards; both read-only.
  for (const Pod* pod : {&coordinator, &worker}) {
    bool ro = false;
    EXPECT_TRUE(under(index, mount_of(*pod, "persistentVolumeClaim", "cnx-data", &ro))) << pod->what;
    EXPECT_TRUE(ro) << pod->what;
    // ... and wait for it in an init container.
    ASSERT_EQ(pod->spec["initContainers"].size(), 1u) << pod->what;
    const YAML::Node wait = pod->spec["initContainers"][0];
    EXPECT_NE(command_line(wait).back().find("[ -f " + index + " ]"), std::string::npos) << pod->what;
    EXPECT_TRUE(under(index, mount_of(*pod, wait, "persistentVolumeClaim", "cnx-data"))) << pod->what;
  }
  // The data-preparation Job writes that index with cnx-make-shards (read-write mount).
  bool ro = true;
  EXPECT_TRUE(under(index, mount_of(data_prep, "persistentVolumeClaim", "cnx-data", &ro)));
  EXPECT_FALSE(ro);
  const std::string script = command_line(main_container(data_prep)).back();
  EXPECT_NE(script.find("cnx-make-shards "), std::string::npos) << script;
  EXPECT_NE(script.find(" -o " + parent(index) + " "), std::string::npos) << script;
  EXPECT_NE(script.find("[ -f " + index + " ]"), std::string::npos) << script;
  EXPECT_EQ(fs::path(index).filename().string(), "index.json") << "cnx-make-shards' default --index-name";
  EXPECT_EQ(find_doc(docs, "Job", "cnx-data-prep")["spec"]["template"]["spec"]["restartPolicy"].as<std::string>(),
            "Never");
}

TEST_P(Manifests, EveryPodRunsAsNonRoot) {
  for (const Pod* pod : pods()) {
    EXPECT_TRUE(pod->spec["securityContext"]["runAsNonRoot"].as<bool>(false)) << pod->what;
    EXPECT_EQ(pod->spec["securityContext"]["runAsUser"].as<int>(0), 1000) << pod->what << " (uid cnx of the images)";
    for (const char* list : {"initContainers", "containers"}) {
      for (const auto& c : pod->spec[list]) {
        EXPECT_FALSE(c["securityContext"]["allowPrivilegeEscalation"].as<bool>(true)) << pod->what;
      }
    }
  }
  const Strings cmd = command_line(main_container(launcher));
  EXPECT_EQ(std::find(cmd.begin(), cmd.end(), "--allow-run-as-root"), cmd.end());
  // The operator mounts the ssh keys into the home of the images' user.
  EXPECT_EQ(mpijob["spec"]["sshAuthMountPath"].as<std::string>(), "/home/cnx/.ssh");
}

TEST(DeployLocal, PrometheusYamlScrapesTheDefaultPorts) {
  const YAML::Node y = YAML::Load(read_text(source_dir() + "/deploy/local/prometheus.yml"));
  const Config defaults;
  std::set<std::string> targets;
  for (const auto& sc : y["scrape_configs"]) {
    EXPECT_FALSE(sc["honor_labels"].as<bool>(false)) << sc["job_name"];
    for (const auto& st : sc["static_configs"]) {
      for (const auto& t : st["targets"]) targets.insert(t.as<std::string>());
    }
  }
  EXPECT_TRUE(targets.count("127.0.0.1:" + std::to_string(defaults.metrics.coordinator_port)));
  for (int r = 0; r < 2; ++r)
    EXPECT_TRUE(targets.count("127.0.0.1:" + std::to_string(defaults.metrics.worker_port + r)));
  const auto check =
      run_command({"/usr/bin/promtool", "check", "config", source_dir() + "/deploy/local/prometheus.yml"});
  EXPECT_EQ(check.exit_code, 0) << check.output;
}

TEST(DeployDocker, DockerfilesBuildWithSetupRunAsNonRootAndShipTheEntrypoint) {
  const std::string cpu = read_text(source_dir() + "/deploy/docker/Dockerfile");
  const std::string cuda = read_text(source_dir() + "/deploy/docker/Dockerfile.cuda");
  EXPECT_NE(cpu.find("FROM debian:12"), std::string::npos);
  EXPECT_NE(cpu.find("scripts/setup.sh"), std::string::npos);
  EXPECT_NE(cuda.find("-DCNX_REQUIRE_NCCL=ON"), std::string::npos);
  EXPECT_EQ(cuda.find("+ \"/nccl\""), std::string::npos);
  EXPECT_NE(cuda.find("TORCH_CUDA_ARCH_LIST"), std::string::npos);
  EXPECT_NE(cuda.find("CNX_MODE=gpu"), std::string::npos);
  EXPECT_NE(cuda.find("CNX_WITH_NCCL=ON"), std::string::npos);
  // The driver's libcuda (compute) and NVML (utility, the GPU metrics) are
  // mounted into a debian:12 image only when it asks for them.
  EXPECT_NE(cuda.find("\nENV NVIDIA_DRIVER_CAPABILITIES=compute,utility\n"), std::string::npos);
  // The cluster image builds the programs CI builds in flavour (b) against
  // the same PyTorch wheel (scripts/test_gpu_flavours.sh), no others.
  const std::string flavours = read_text(source_dir() + "/scripts/test_gpu_flavours.sh");
  const size_t full = cuda.find("full) EXTRA=\"\"; TARGETS=\"");
  ASSERT_NE(full, std::string::npos) << "Dockerfile.cuda: no target list for CNX_MODE=full";
  const std::string full_targets = cuda.substr(full, cuda.find('\n', full) - full);
  for (const char* p :
       {"cnx-worker", "cnx-coordinator", "cnx-ctl", "cnx-eval", "cnx-finetune", "cnx-export", "cnx-make-shards"}) {
    EXPECT_NE(full_targets.find(p), std::string::npos) << p << ": " << full_targets;
    EXPECT_NE(flavours.find(std::string(" ") + p + " "), std::string::npos) << p << " not built by flavour (b)";
  }
  EXPECT_NE(cuda.find("--target $TARGETS"), std::string::npos);
  const Config defaults;
  for (const std::string* d : {&cpu, &cuda}) {
    EXPECT_NE(d->find("deploy/docker/worker-entrypoint.sh /usr/local/bin/cnx-worker-entrypoint"), std::string::npos);
    const size_t expose = d->find("\nEXPOSE ");
    ASSERT_NE(expose, std::string::npos);
    const std::string line = d->substr(expose, d->find('\n', expose + 1) - expose) + " ";
    std::vector<int> wanted = {port_of(defaults.coordinator.listen), int(defaults.metrics.coordinator_port), 2222};
    for (int i = 0; i < 8; ++i) wanted.push_back(int(defaults.metrics.worker_port) + i);
    for (int port : wanted) EXPECT_NE(line.find(" " + std::to_string(port) + " "), std::string::npos) << port << line;
    // Non-root, the mpi-operator way: uid 1000 with a home, sshd on 2222 from a
    // config in that home, its host key the job key mounted at sshAuthMountPath.
    EXPECT_NE(d->find("useradd --uid 1000 --create-home --home-dir /home/cnx"), std::string::npos);
    EXPECT_NE(d->find("\nUSER 1000\n"), std::string::npos);
    EXPECT_NE(d->find("'Port 2222' 'PidFile /home/cnx/sshd.pid' 'HostKey /home/cnx/.ssh/id_rsa'"), std::string::npos);
    EXPECT_NE(d->find("'    Port 2222'"), std::string::npos) << "ssh clients (mpirun) must dial 2222";
    EXPECT_EQ(d->find("OMPI_ALLOW_RUN_AS_ROOT"), std::string::npos);
  }
  const std::string extract = "bash scripts/setup.sh --print-packages";
  EXPECT_NE(cpu.find(extract), std::string::npos);
  EXPECT_NE(cuda.find(extract), std::string::npos);
  const auto pkgs = run_command({"/bin/bash", "-c", "cd '" + source_dir() + "' && " + extract});
  ASSERT_EQ(pkgs.exit_code, 0) << pkgs.output;
  for (const char* p : {"libcivetweb-dev", "libtorch-dev", "libopenmpi-dev", "libgrpc++-dev", "prometheus"}) {
    EXPECT_NE(pkgs.output.find(std::string(p) + "\n"), std::string::npos) << p << " not in setup.sh PACKAGES";
  }
  const std::string entry = source_dir() + "/deploy/docker/worker-entrypoint.sh";
  struct stat st {};
  ASSERT_EQ(stat(entry.c_str(), &st), 0);
  EXPECT_TRUE(st.st_mode & S_IXUSR) << entry << " is not executable";
  EXPECT_EQ(run_command({"/bin/bash", "-n", entry}).exit_code, 0);
  EXPECT_NE(read_text(entry).find("$HOME/.sshd_config"), std::string::npos);
}

}  // namespace
}  // namespace cnx::testing
