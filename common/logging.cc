#include "common/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "common/check.h"

namespace cnx::log {

spdlog::level::level_enum parse_level(const std::string& level) {
  if (level == "trace") return spdlog::level::trace;
  if (level == "debug") return spdlog::level::debug;
  if (level == "info") return spdlog::level::info;
  if (level == "warn") return spdlog::level::warn;
  if (level == "error") return spdlog::level::err;
  if (level == "off") return spdlog::level::off;
  CNX_CHECK(false, "unknown log level '", level, "' (expected trace|debug|info|warn|error|off)");
}

void init(const std::string& role, int rank, const std::string& level) {
  const std::string name = "cnx-" + role + (rank >= 0 ? "-r" + std::to_string(rank) : "");
  spdlog::drop(name);
  auto logger = spdlog::stderr_color_mt(name);
  std::string tag = rank >= 0 ? role + " r" + std::to_string(rank) : role;
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%L%$ [" + tag + "] %v");
  logger->set_level(parse_level(level));
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  spdlog::set_level(parse_level(level));
}

}  // namespace cnx::log
