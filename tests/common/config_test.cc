#include "common/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace {

// Returns the ConfigError message of loading `yaml` (with overrides), or
// fails the test if it loads.
std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    cnx::load_config_text(yaml, "test.yaml", overrides);
  } catch (const cnx::ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a ConfigError for:\n" << yaml;
  return "";
}

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "message: " << (haystack)

fs::path source_dir() {
  const char* s = std::getenv("CNX_SOURCE_DIR");
  return s ? fs::path(s) : fs::path(CNX_TEST_SOURCE_DIR);
}

}  // namespace

TEST(Config, EmptyFileGivesDefaults) {
  cnx::Config c = cnx::load_config_text("", "empty.yaml");
  EXPECT_EQ(c.model.name, "atto");
  EXPECT_EQ(c.model.dims, (std::vector<int64_t>{40, 80, 160, 320}));
  EXPECT_EQ(c.model.depths, (std::vector<int64_t>{2, 2, 6, 2}));
  EXPECT_DOUBLE_EQ(c.mask.ratio, 0.6);
  EXPECT_EQ(c.optimizer.betas, (std::vector<double>{0.9, 0.95}));
  EXPECT_DOUBLE_EQ(c.optimizer.blr, 1.5e-4);
  EXPECT_EQ(c.train.sample_log, "");  // per-sample log off
  EXPECT_EQ(c.train.device, "auto");
}

TEST(Config, ReadsValues) {
  cnx::Config c = cnx::load_config_text(R"(
model: {name: custom, depths: [1, 1, 2, 1], dims: [8, 16, 32, 64], encoder: dense_masked}
mask: {ratio: 0.75}
optimizer: {betas: [0.8, 0.99], no_decay: [grn.gamma, grn.beta]}
data: {batch_size: 8, hflip: false}
)",
                                        "t.yaml");
  EXPECT_EQ(c.model.depths, (std::vector<int64_t>{1, 1, 2, 1}));
  EXPECT_EQ(c.model.encoder, "dense_masked");
  EXPECT_DOUBLE_EQ(c.mask.ratio, 0.75);
  EXPECT_DOUBLE_EQ(c.optimizer.betas[1], 0.99);
  EXPECT_EQ(c.optimizer.no_decay, (std::vector<std::string>{"grn.gamma", "grn.beta"}));
  EXPECT_EQ(c.data.batch_size, 8);
  EXPECT_FALSE(c.data.hflip);
}

TEST(Config, UnknownKeyNamesPathAndKnownKeys) {
  std::string m = error_of("optimizer:\n  weight_decy: 0.1\n");
  EXPECT_HAS(m, "test.yaml");
  EXPECT_HAS(m, "optimizer.weight_decy");
  EXPECT_HAS(m, "unknown key");
  EXPECT_HAS(m, "weight_decay");  // listed among the known keys
}

TEST(Config, UnknownSection) {
  std::string m = error_of("modle:\n  name: atto\n");
  EXPECT_HAS(m, "modle: unknown key");
}

TEST(Config, WrongTypeNamesPathValueAndExpectation) {
  std::string m = error_of("data:\n  batch_size: lots\n");
  EXPECT_HAS(m, "data.batch_size");
  EXPECT_HAS(m, "'lots'");
  EXPECT_HAS(m, "an integer");
  m = error_of("data:\n  hflip: maybe\n");
  EXPECT_HAS(m, "data.hflip");
  EXPECT_HAS(m, "true or false");
  m = error_of("optimizer:\n  betas: 0.9\n");
  EXPECT_HAS(m, "optimizer.betas");
  EXPECT_HAS(m, "a list");
  m = error_of("model: [1, 2]\n");
  EXPECT_HAS(m, "model: expected a mapping");
}

TEST(Config, OutOfRangeInsideList) {
  std::string m = error_of("optimizer:\n  betas: [0.9, 1.5]\n");
  EXPECT_HAS(m, "optimizer.betas[1]");
  EXPECT_HAS(m, "'1.5'");
  EXPECT_HAS(m, "[0, 1)");
}

TEST(Config, OutOfRangeScalars) {
  EXPECT_HAS(error_of("mask: {ratio: 1.2}"), "mask.ratio: expected a number in [0, 1], got '1.2'");
  EXPECT_HAS(error_of("data: {input_size: 100}"), "multiple of 32");
  EXPECT_HAS(error_of("model: {encoder: fancy}"), "one of sparse|dense_masked|dense");
  EXPECT_HAS(error_of("model: {block: v3}"), "model.block");
  EXPECT_EQ(cnx::load_config_text("model: {block: v1}", "v1.yaml").model.block, "v1");
  EXPECT_HAS(error_of("coordinator: {listen: 'localhost'}"), "coordinator.listen");
  EXPECT_HAS(error_of("coordinator: {listen: 'localhost:99999'}"), "port in [1, 65535]");
  EXPECT_HAS(error_of("data: {batch_size: 0}"), "data.batch_size");
  EXPECT_HAS(error_of("train: {device: tpu}"), "train.device");
  EXPECT_HAS(error_of("train: {sample_log: \"a\\nb\"}"),
             "train.sample_log: expected a folder path without line breaks");
}

TEST(Config, CrossFieldChecks) {
  EXPECT_HAS(error_of("model: {name: custom, dims: [8, 16, 32, 64]}"), "model.depths");
  EXPECT_HAS(error_of("model: {name: atto, dims: [8, 16, 32, 64]}"), "use name: custom");
  EXPECT_HAS(error_of("optimizer: {betas: [0.9]}"), "expected 2 values");
  EXPECT_HAS(error_of("schedule: {epochs: 10, warmup_epochs: 20}"), "schedule.warmup_epochs");
  EXPECT_HAS(error_of("coordinator: {tls_cert: a.pem}"), "tls_cert and tls_key");
}

// distributed.bucket_cap_mb: 0 = auto (the default; comm::auto_bucket_cap_mb
// picks by device), else 0.001..4096 MiB, and an explicit cap bounds
// first_bucket_mb while auto does not.
TEST(Config, BucketCapAuto) {
  EXPECT_EQ(cnx::load_config_text("", "empty.yaml").distributed.bucket_cap_mb, 0.0);
  EXPECT_EQ(cnx::load_config_text("distributed: {bucket_cap_mb: 0, first_bucket_mb: 8}", "a.yaml")
                .distributed.first_bucket_mb,
            8.0);
  EXPECT_EQ(cnx::load_config_text("distributed: {bucket_cap_mb: 2.5}", "a.yaml").distributed.bucket_cap_mb, 2.5);
  for (const char* bad : {"-1", "0.0005", "5000", ".nan"}) {
    EXPECT_HAS(error_of(std::string("distributed: {bucket_cap_mb: ") + bad + "}"),
               "distributed.bucket_cap_mb: expected 0 (auto) or a number in [0.001, 4096]");
  }
  EXPECT_HAS(error_of("distributed: {bucket_cap_mb: 2, first_bucket_mb: 3}"), "distributed.first_bucket_mb");
}

TEST(Config, MalformedYamlGivesLine) {
  std::string m = error_of("model:\n  name: [atto\n");
  EXPECT_HAS(m, "malformed YAML");
  EXPECT_HAS(m, "line");
}

TEST(Config, MissingFile) {
  try {
    cnx::load_config("/nonexistent/cnx.yaml");
    FAIL();
  } catch (const cnx::ConfigError& e) {
    EXPECT_HAS(e.what(), "/nonexistent/cnx.yaml");
    EXPECT_HAS(e.what(), "cannot open");
  }
}

TEST(Config, FolderIsRefused) {
  try {
    cnx::load_config(fs::temp_directory_path().string());
    FAIL();
  } catch (const cnx::ConfigError& e) {
    EXPECT_HAS(e.what(), "is a folder");
  }
}

TEST(Config, DuplicateKeysAreRefused) {
  std::string m = error_of("data:\n  input_size: 64\n  batch_size: 2\n  input_size: 96\n");
  EXPECT_HAS(m, "test.yaml: data.input_size: duplicate key at line 4 (first at line 2)");
  EXPECT_HAS(error_of("job: {id: a}\nmask: {ratio: 0.5}\njob: {id: b}\n"), "job: duplicate key at line 3");
  EXPECT_HAS(error_of("optimizer: {betas: [0.9, 0.95], betas: [0.8, 0.9]}"), "optimizer.betas: duplicate key");
  // An override of a key is no duplicate.
  EXPECT_EQ(cnx::load_config_text("data: {input_size: 64}", "t", {"data.input_size=96"}).data.input_size, 96);
}

TEST(Config, RangesPrintReadably) {
  // Bounds print as %g: no 300-digit numbers in messages.
  EXPECT_HAS(error_of("schedule: {epochs: 2000000}"), "expected a number in [0, 1e+06]");
  EXPECT_HAS(error_of("mask: {ratio: .inf}"), "mask.ratio: expected a number in [0, 1]");
}

TEST(Config, GlobalBatch) {
  EXPECT_EQ(cnx::load_config_text("", "t").optimizer.global_batch, 0);  // off: batch x ranks x accum_steps
  EXPECT_HAS(error_of("optimizer: {global_batch: 100}\ndata: {batch_size: 64}"),
             "optimizer.global_batch: expected a multiple of data.batch_size (64), got 100");
  EXPECT_HAS(error_of("optimizer: {global_batch: -1}"), "optimizer.global_batch");
}

TEST(Config, IsAUsageError) {
  // Programs map UsageError to exit code 2 (common/cli.h).
  try {
    cnx::load_config_text("nope: 1", "t");
    FAIL();
  } catch (const cnx::UsageError& e) {
    EXPECT_HAS(e.what(), "nope");
  }
}

TEST(Config, SetOverrides) {
  cnx::Config c = cnx::load_config_text(
      "mask: {ratio: 0.5}", "t.yaml",
      {"mask.ratio=0.9", "optimizer.betas=[0.5, 0.6]", "data.index=/x/index.json", "distributed.overlap=false"});
  EXPECT_DOUBLE_EQ(c.mask.ratio, 0.9);
  EXPECT_EQ(c.optimizer.betas, (std::vector<double>{0.5, 0.6}));
  EXPECT_EQ(c.data.index, "/x/index.json");
  EXPECT_FALSE(c.distributed.overlap);
}

TEST(Config, BadSetOverrides) {
  EXPECT_HAS(error_of("", {"mask.ratio"}), "expected key.path=value");
  EXPECT_HAS(error_of("", {"mask.ratoi=0.5"}), "mask.ratoi: unknown key");
  EXPECT_HAS(error_of("", {"mask.ratio=abc"}), "mask.ratio: expected a number");
  EXPECT_HAS(error_of("", {"mask.ratio=2"}), "--set");
  EXPECT_HAS(error_of("", {"mask..ratio=2"}), "empty component");
  EXPECT_HAS(error_of("mask: {ratio: 0.5}", {"mask.ratio.x=2"}), "'ratio' is not a section");
  EXPECT_HAS(error_of("", {"mask.ratio.x=2"}), "mask.ratio: expected a number, got {x: 2}");
}

TEST(Config, YamlRoundTrip) {
  cnx::Config c = cnx::load_config_text(
      "", "t.yaml",
      {"model.name=custom", "model.depths=[1,1,1,1]", "model.dims=[4,8,16,32]", "optimizer.blr=0.000123456789",
       "job.id=abc", "optimizer.no_decay=[a, b]", "train.sample_log=/tmp/cnx run/samples"});
  std::string y = cnx::to_yaml(c);
  cnx::Config d = cnx::load_config_text(y, "roundtrip.yaml");
  EXPECT_EQ(cnx::to_yaml(d), y);
  EXPECT_EQ(d.model.dims, c.model.dims);
  EXPECT_DOUBLE_EQ(d.optimizer.blr, 0.000123456789);
  EXPECT_EQ(d.optimizer.no_decay, c.optimizer.no_decay);
  EXPECT_EQ(d.job.id, "abc");
  EXPECT_EQ(d.train.sample_log, "/tmp/cnx run/samples");
}

TEST(Config, EveryShippedConfigLoads) {
  fs::path dir = source_dir() / "configs";
  int n = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    EXPECT_NO_THROW({
      cnx::Config c = cnx::load_config(entry.path().string());
      (void)c;
    });
    ++n;
  }
  EXPECT_GE(n, 14) << "expected the 8 variants, the Fashion-MNIST demo and its ablations (ablations/) in " << dir;
}

TEST(Config, VariantConfigsMatchPaperDefaults) {
  for (const char* v : {"atto", "femto", "pico", "nano", "tiny", "base", "large", "huge"}) {
    SCOPED_TRACE(v);
    cnx::Config c = cnx::load_config((source_dir() / "configs" / (std::string("fcmae_") + v + ".yaml")).string());
    EXPECT_EQ(c.model.name, v);
    EXPECT_DOUBLE_EQ(c.mask.ratio, 0.6);
    EXPECT_DOUBLE_EQ(c.optimizer.blr, 1.5e-4);
    EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 0.05);
    EXPECT_EQ(c.optimizer.betas, (std::vector<double>{0.9, 0.95}));
    EXPECT_DOUBLE_EQ(c.schedule.warmup_epochs, 40);
    EXPECT_EQ(c.data.input_size, 224);
    EXPECT_EQ(c.optimizer.global_batch, 4096);  // the paper's recipe, whatever the number of ranks
  }
}
