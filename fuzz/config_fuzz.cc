// Fuzz target: the job configuration (common/config.h): YAML text plus
// `--set key.path=value` overrides, as every program loads them.
//
// Input: FuzzedDataProvider: up to 4 override strings, then the YAML text.
// Contract: ConfigError, or a Config that to_yaml -> load_config_text
// reproduces exactly (to_yaml of both equal), and that the same overrides
// applied again to its YAML leave unchanged.
#include <fuzzer/FuzzedDataProvider.h>

#include "common/config.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  std::vector<std::string> overrides;
  const int n = in.ConsumeIntegralInRange(0, 4);
  for (int i = 0; i < n; ++i) overrides.push_back(in.ConsumeRandomLengthString(256));
  const std::string yaml = in.ConsumeRemainingBytesAsString();
  cnx::Config c;
  try {
    c = cnx::load_config_text(yaml, "fuzz.yaml", overrides);
  } catch (const cnx::ConfigError& e) {
    FUZZ_REQUIRE(std::string(e.what()).find("fuzz.yaml") != std::string::npos ||
                     std::string(e.what()).find("--set") != std::string::npos,
                 std::string("error names neither the file nor the override: ") + e.what());
    return 0;
  }
  const std::string text = cnx::to_yaml(c);
  std::string again;
  try {
    again = cnx::to_yaml(cnx::load_config_text(text, "round trip"));
  } catch (const cnx::ConfigError& e) {
    FUZZ_REQUIRE(false, std::string("the loader refuses what to_yaml wrote: ") + e.what() + "\n" + text);
  }
  FUZZ_REQUIRE(again == text, "to_yaml round trip differs:\n" + text + "\n---\n" + again);
  try {
    FUZZ_REQUIRE(cnx::to_yaml(cnx::load_config_text(text, "round trip", overrides)) == text,
                 "overrides are not idempotent");
  } catch (const cnx::ConfigError& e) {
    FUZZ_REQUIRE(false, std::string("overrides accepted once are refused the second time: ") + e.what());
  }
  return 0;
}
