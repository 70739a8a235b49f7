// The config loader on hostile input: every malformed document or override
// must end in cnx::ConfigError (never another exception type, never a crash),
// with a message of bounded size. Seeded, so a failure reproduces.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "common/config.h"

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxMessage = 4096;

fs::path source_dir() {
  const char* s = std::getenv("CNX_SOURCE_DIR");
  return s ? fs::path(s) : fs::path(CNX_TEST_SOURCE_DIR);
}

struct Outcome {
  bool loaded = false;
  bool config_error = false;
  std::string other;  // type/what of anything else that escaped
  size_t message_size = 0;
};

Outcome try_load(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  Outcome o;
  try {
    cnx::load_config_text(yaml, "fuzz.yaml", overrides);
    o.loaded = true;
  } catch (const cnx::ConfigError& e) {
    o.config_error = true;
    o.message_size = std::string(e.what()).size();
  } catch (const std::exception& e) {
    o.other = std::string("std::exception: ") + e.what();
  } catch (...) {
    o.other = "a non-standard exception";
  }
  return o;
}

std::string escaped(const std::string& s) {
  std::string out;
  for (char c : s.substr(0, 400)) {
    if (c == '\n')
      out += "\\n";
    else if (static_cast<unsigned char>(c) < 32 || static_cast<unsigned char>(c) > 126)
      out += "\\x" + std::to_string(static_cast<unsigned char>(c));
    else
      out += c;
  }
  return out;
}

void expect_only_config_error(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  const Outcome o = try_load(yaml, overrides);
  EXPECT_TRUE(o.loaded || o.config_error) << "escaped: " << o.other << "\ninput: " << escaped(yaml);
  if (overrides.empty()) {
    EXPECT_LE(o.message_size, kMaxMessage) << "input: " << escaped(yaml);
  }
}

// Pieces of YAML syntax and of this project's keys and values.
const std::vector<std::string>& tokens() {
  static const std::vector<std::string> kTokens = {
      "{",
      "}",
      "[",
      "]",
      ":",
      ": ",
      ", ",
      "- ",
      "? ",
      "\n",
      "\n  ",
      "\n    ",
      "\t",
      " ",
      "#",
      "'",
      "\"",
      "|",
      ">",
      "&a ",
      "*a",
      "&b ",
      "*b",
      "!!int ",
      "!!str ",
      "!!map ",
      "!!seq ",
      "!custom ",
      "---\n",
      "...\n",
      "%YAML 1.2\n",
      "~",
      "null",
      "true",
      "no",
      "0",
      "-1",
      "1e400",
      "-.inf",
      ".nan",
      "0x7fffffffffffffff",
      "99999999999999999999999",
      "1.5",
      "3",
      "65536",
      "model",
      "name",
      "atto",
      "custom",
      "depths",
      "dims",
      "coordinator",
      "listen",
      "127.0.0.1:99999999999999999999",
      "host:50051",
      "metrics",
      "worker_port",
      "data",
      "batch_size",
      "optimizer",
      "betas",
      "no_decay",
      "schedule",
      "epochs",
      "job",
      "id",
      "seed",
      "checkpoint",
      "root",
      "mask",
      "ratio",
      "train",
      "sample_log",
      "distributed",
      "<<",
      "\\u0000",
      "\xff",
      "\xc3\x28",
  };
  return kTokens;
}

std::string random_document(std::mt19937_64& rng) {
  const auto& t = tokens();
  std::uniform_int_distribution<size_t> pick(0, t.size() - 1);
  std::uniform_int_distribution<int> len(1, 60);
  std::string s;
  const int n = len(rng);
  for (int i = 0; i < n; ++i) s += t[pick(rng)];
  return s;
}

std::string mutate(std::string s, std::mt19937_64& rng) {
  const auto& t = tokens();
  std::uniform_int_distribution<int> ops(1, 4);
  const int n = ops(rng);
  for (int k = 0; k < n; ++k) {
    if (s.empty()) s = "x";
    std::uniform_int_distribution<size_t> at(0, s.size() - 1);
    switch (rng() % 5) {
      case 0: {  // insert a token
        s.insert(at(rng), t[rng() % t.size()]);
        break;
      }
      case 1: {  // delete a span
        const size_t i = at(rng);
        s.erase(i, 1 + rng() % 16);
        break;
      }
      case 2: {  // flip a byte
        s[at(rng)] = static_cast<char>(rng() & 0xff);
        break;
      }
      case 3: {  // duplicate a span
        const size_t i = at(rng);
        s.insert(i, s.substr(i, 1 + rng() % 32));
        break;
      }
      default: {  // replace a value after a colon with a token
        const size_t colon = s.find(": ", at(rng));
        if (colon != std::string::npos) {
          const size_t end = s.find_first_of(",}\n", colon + 2);
          s.replace(colon + 2, (end == std::string::npos ? s.size() : end) - colon - 2, t[rng() % t.size()]);
        }
        break;
      }
    }
  }
  return s;
}

std::vector<std::string> seeds() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(source_dir() / "configs")) {
    if (e.path().extension() != ".yaml") continue;
    std::ifstream in(e.path());
    std::stringstream ss;
    ss << in.rdbuf();
    out.push_back(ss.str());
  }
  out.push_back(cnx::to_yaml(cnx::Config{}));
  out.push_back(
      "model: {name: custom, depths: [1, 1, 2, 1], dims: [8, 16, 32, 64]}\noptimizer: {betas: [0.8, 0.99]}\n");
  return out;
}

}  // namespace

TEST(ConfigFuzz, KnownCrashersRaiseConfigError) {
  const std::vector<std::string> cases = {
      "{[a, b]: 1}",                                         // sequence as a key at the top level
      "model:\n  ? {a: 1}\n  : atto\n",                      // mapping as a key in a section
      "? [model]\n: {name: atto}\n",                         // complex key
      "coordinator: {listen: 'host:99999999999999999999'}",  // port beyond any integer type
      "coordinator: {listen: 'host:000000000000000000001'}",
      "data: {batch_size: 99999999999999999999999}",
      "job: {seed: -99999999999999999999999}",
      "model: !!map {name: atto}",
      "model: &m {name: *m}",
      std::string(3000, '[') + std::string(3000, ']'),  // nesting beyond yaml-cpp's depth guard
      "a: \xff\xfe",
  };
  for (const auto& c : cases) expect_only_config_error(c);
  EXPECT_TRUE(try_load(cases[0]).config_error);
  EXPECT_TRUE(try_load(cases[3]).config_error);
}

TEST(ConfigFuzz, AliasBombMessageIsBounded) {
  // l8 is 9 levels of 9 aliases: 9^9 scalars if the message printed the
  // whole value that mask.ratio refuses.
  std::string doc = "l0: &l0 [x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i <= 8; ++i) {
    doc += "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
    for (int k = 0; k < 9; ++k) doc += (k ? ", *l" : "*l") + std::to_string(i - 1);
    doc += "]\n";
  }
  doc += "mask: {ratio: *l8}\n";
  const Outcome o = try_load(doc);
  EXPECT_TRUE(o.config_error) << o.other;
  EXPECT_LE(o.message_size, 1024u);
}

TEST(ConfigFuzz, RandomDocumentsOnlyRaiseConfigError) {
  std::mt19937_64 rng(20261202);
  for (int i = 0; i < 2000; ++i) expect_only_config_error(random_document(rng));
}

TEST(ConfigFuzz, MutatedShippedConfigsOnlyRaiseConfigError) {
  const auto base = seeds();
  ASSERT_GE(base.size(), 3u);
  std::mt19937_64 rng(42);
  int loaded = 0, refused = 0;
  for (int i = 0; i < 2000; ++i) {
    const std::string doc = mutate(base[rng() % base.size()], rng);
    const Outcome o = try_load(doc);
    EXPECT_TRUE(o.loaded || o.config_error) << "escaped: " << o.other << "\ninput: " << escaped(doc);
    loaded += o.loaded;
    refused += o.config_error;
  }
  // Both outcomes occur: the mutations are neither all harmless nor all fatal.
  EXPECT_GT(loaded, 0);
  EXPECT_GT(refused, 0);
}

TEST(ConfigFuzz, RandomOverridesOnlyRaiseConfigError) {
  std::mt19937_64 rng(7);
  const auto& t = tokens();
  const std::vector<std::string> keys = {"model.name",          "coordinator.listen", "data.batch_size",
                                         "optimizer.betas",     "mask.ratio",         "job.id",
                                         "metrics.worker_port", "model.depths.x",     "a.b.c"};
  for (int i = 0; i < 1000; ++i) {
    std::string value;
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n; ++k) value += t[rng() % t.size()];
    const std::string spec = (rng() % 8 == 0 ? random_document(rng) : keys[rng() % keys.size()]) + "=" + value;
    expect_only_config_error("", {spec});
  }
}
