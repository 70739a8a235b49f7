#pragma once
// The job configuration: typed structs, loaded strictly from YAML.
//
// Strictness contract: an unknown key, a wrong type or an out-of-range value
// is a cnx::ConfigError whose message names the file, the full key path
// (e.g. "optimizer.betas[1]"), the bad value and what was expected. The same
// checks apply to `--set key.path=value` overrides. Every field has a
// default, so a file only needs the keys it changes.
//
// This header is free of yaml-cpp; libraries that must build in the
// core-only configuration (model, sparse_ops, comm) take their own plain
// option structs and never include this file.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/errors.h"

namespace cnx {

// A bad config file, key, value or --set override (exit 2).
class ConfigError : public UsageError {
 public:
  using UsageError::UsageError;
};

struct JobConfig {
  std::string id = "cnx-job";  // job identity; part of every RPC and metric label
  int64_t seed = 0;            // master seed: data order, augmentation, masks, init
  std::string log_level = "info";
};

struct ModelConfig {
  std::string name = "atto";    // atto|femto|pico|nano|tiny|base|large|huge|custom
  std::vector<int64_t> depths;  // required when name == custom, else must be empty or match
  std::vector<int64_t> dims;    // required when name == custom
  int64_t in_chans = 3;
  int64_t num_classes = 1000;  // head size for the dense model (fine-tuning)
  double drop_path_rate = 0.0;
  double head_init_scale = 1.0;
  int64_t decoder_dim = 512;
  int64_t decoder_depth = 1;
  // sparse | dense_masked (the oracle, the same function) | dense (the paper's
  // dense-convolution ablation: masks the input only; model/fcmae_encoder.h)
  std::string encoder = "sparse";
  std::string block = "v2";        // v2 (GRN) | v1 (layer scale, no GRN: the GRN ablation)
  std::string init = "reference";  // reference|std02 (docs/model.md)
  bool norm_pix_loss = true;
};

struct MaskConfig {
  double ratio = 0.6;  // fraction of patches removed, in [0, 1]
};

struct OptimizerConfig {
  std::string name = "adamw";
  double blr = 1.5e-4;  // lr = blr * global batch / 256 unless lr > 0
  double lr = 0.0;      // absolute lr; 0 means derive from blr
  double min_lr = 0.0;
  double weight_decay = 0.05;
  std::vector<double> betas = {0.9, 0.95};
  double eps = 1e-8;
  // Parameter-name suffixes exempt from weight decay, in addition to 1-D
  // tensors named "*.bias". Pretraining default: none (GRN and mask token are
  // decayed, as the reference does).
  std::vector<std::string> no_decay;
  double clip_grad = 0.0;  // max global grad norm; 0 = off
  int64_t accum_steps = 1;
  // > 0: the recipe's global batch (the paper's 4096). The worker derives
  // accum_steps = global_batch / (data.batch_size x ranks) at every launch,
  // so a relaunch on fewer ranks keeps the global batch and the peak lr.
  // 0: global batch = data.batch_size x ranks x accum_steps.
  int64_t global_batch = 0;
};

struct ScheduleConfig {
  double epochs = 800;  // length of the cosine schedule in epochs
  double warmup_epochs = 40;
  int64_t max_steps = 0;   // stop after this many steps (0 = run all epochs)
  int64_t log_every = 10;  // progress line every N steps on rank 0
};

struct DataConfig {
  std::string index;       // shard index JSON (from cnx-make-shards)
  std::string shard_root;  // folder of the shards; default: the index's folder
  int64_t input_size = 224;
  std::vector<double> crop_scale = {0.2, 1.0};
  std::vector<double> crop_ratio = {0.75, 4.0 / 3.0};
  // Evaluation (cnx-eval, cnx-finetune, cnx-visualize): resize the shorter
  // side to input_size / eval_crop_pct, keep the centre input_size square.
  // 0.875 is the ImageNet convention; 1.0 keeps the whole image.
  double eval_crop_pct = 0.875;
  bool hflip = true;
  std::vector<double> mean = {0.485, 0.456, 0.406};
  std::vector<double> std = {0.229, 0.224, 0.225};
  int64_t batch_size = 32;  // per rank
  int64_t num_threads = 2;  // decode threads per rank
  int64_t queue_mb = 256;   // memory bound of the decoded-ahead queue
  int64_t shuffle_buffer = 1000;
  std::string bad_shard = "fail";  // fail|skip when a shard's sha256 mismatches
  bool drop_last = true;
};

struct TrainConfig {
  int64_t threads = 0;             // intra-op threads per rank; 0 = cores / local ranks
  std::string nonfinite = "skip";  // skip|stop on a non-finite loss
  int64_t max_skipped = 10;        // stop after this many consecutive skipped steps
  // "" = off; else a folder: each rank appends one line "step<TAB>epoch<TAB>key"
  // per sample it trains on to <folder>/samples-rank<R>.tsv (see worker/trainer.h).
  std::string sample_log;
  // auto (the rank's GPU when LibTorch has CUDA and one is visible) | cpu | cuda
  std::string device = "auto";
  // fp32 | bf16 | fp16: mixed precision of the forward/backward (model/precision.h);
  // fp16 adds dynamic loss scaling (worker/loss_scaler.h) and needs CUDA.
  std::string precision = "fp32";
};

struct DistributedConfig {
  std::string backend = "auto";  // auto|mpi|nccl
  // MiB of gradients per all-reduce bucket; 0 = auto (comm::auto_bucket_cap_mb:
  // 4 on CPU ranks, 25 on GPUs).
  double bucket_cap_mb = 0.0;
  double first_bucket_mb = 1.0;
  bool overlap = true;           // all-reduce buckets during backward
  std::string interface;         // NIC name or IPv4 CIDR for rank-to-rank TCP; "" = Open MPI's choice
  double peer_timeout_s = 60.0;  // a collective not done after this: a peer is lost, exit 206; 0 = off
};

struct CheckpointConfig {
  std::string root = "runs/checkpoints";
  int64_t every_steps = 0;      // 0 = off
  double every_minutes = 0.0;   // 0 = off
  int64_t keep = 3;             // committed checkpoints retained
  bool async = true;            // write in the background (one in-memory copy of the state)
  std::string resume = "auto";  // auto|none|<path>
};

struct CoordinatorConfig {
  std::string listen = "127.0.0.1:50051";
  std::string token_file;  // bearer token file; or token_env
  std::string token_env = "CNX_JOB_TOKEN";
  // Operator token (cnx-ctl): when one is configured at the coordinator,
  // Drain and RequestCheckpoint need it and refuse the job token, so a rank's
  // token cannot end the job. File, or else the environment variable.
  std::string operator_token_file;
  std::string operator_token_env = "CNX_OPERATOR_TOKEN";
  // Plaintext gRPC on a non-loopback address (listening or connecting) is
  // refused unless this is true.
  bool allow_plaintext = false;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;    // set for mutual TLS
  std::string tls_ca;           // clients (worker, cnx-ctl): CA that verifies the coordinator; enables TLS
  std::string tls_client_cert;  // clients: certificate for mutual TLS
  std::string tls_client_key;   // clients: key for mutual TLS
  std::string state_db = "runs/coordinator.sqlite";
  double heartbeat_s = 2.0;
  double heartbeat_timeout_s = 30.0;
  double lease_s = 600.0;
  double stall_s = 120.0;
  double unreachable_s = 120.0;  // clients: give up on a coordinator unreachable this long
  // Workers: "auto" (one speaker per host, docs/protocols.md; per rank with a
  // coordinator that has no host calls), "host" (host speakers or refuse to
  // start), "rank" (every rank talks to the coordinator itself).
  std::string protocol = "auto";
  int64_t world_size = 0;         // 0 = learn from the first registration
  int64_t max_world_size = 4096;  // registrations announcing more ranks are refused
};

struct MetricsConfig {
  bool enabled = true;
  std::string listen_host = "127.0.0.1";
  int64_t worker_port = 9400;  // rank r listens on worker_port + local rank
  int64_t coordinator_port = 9399;
};

struct Config {
  JobConfig job;
  ModelConfig model;
  MaskConfig mask;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  DataConfig data;
  TrainConfig train;
  DistributedConfig distributed;
  CheckpointConfig checkpoint;
  CoordinatorConfig coordinator;
  MetricsConfig metrics;
};

// Loads `path` (strict) and applies `overrides` ("key.path=value", parsed as
// YAML scalars or flow sequences such as "[0.9,0.95]"). Throws ConfigError.
//
// Inheritance: a top-level `base: ../other.yaml` loads that file first (a
// path relative to the folder of the file that names it, not to the current
// directory; an absolute path as it is), then merges this file's keys over
// it: mappings key by key, recursively; scalars and sequences replace (an
// empty section changes nothing). A base may have a base, at most 8 above
// the file passed here. Then the overrides apply, then the usual strict
// reading and checks, so a file with a base loads to exactly the Config of
// the same settings written out flat, and to_yaml never writes `base`.
// Every file of the chain is checked for duplicate keys on its own. A base
// that is not a path, a missing or unreadable file, a folder, a cycle or a
// chain too deep is a ConfigError naming the file and the key `base`;
// `--set base=...` is refused (base is read from files only).
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Same, from YAML text; `origin` names the source in messages. Text has no
// folder to resolve a base against, so a top-level `base:` is a ConfigError
// (it needs a config file: use load_config).
Config load_config_text(const std::string& yaml, const std::string& origin,
                        const std::vector<std::string>& overrides = {});

// The effective config as YAML; load_config_text(to_yaml(c)) == c.
std::string to_yaml(const Config& config);

// Depths and dims of a named variant (atto..huge); throws ConfigError for
// an unknown name.
void variant_shape(const std::string& name, std::vector<int64_t>* depths, std::vector<int64_t>* dims);

}  // namespace cnx
