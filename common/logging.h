#pragma once
// Logging: a thin layer over spdlog. Every line carries the process's role
// and, when set, its MPI rank ("[worker r1]"), so interleaved mpirun output
// stays readable. Thread-safe (spdlog's mt sinks).
#include <spdlog/spdlog.h>

#include <string>

namespace cnx::log {

// Configures the default logger: pattern with time, level, role and rank.
// rank < 0 means "no rank" (coordinator, tools). Safe to call again.
void init(const std::string& role, int rank = -1, const std::string& level = "info");

// Parses "trace|debug|info|warn|error|off"; throws cnx::CheckError otherwise.
spdlog::level::level_enum parse_level(const std::string& level);

}  // namespace cnx::log

#define CNX_LOG_INFO(...) SPDLOG_INFO(__VA_ARGS__)
#define CNX_LOG_WARN(...) SPDLOG_WARN(__VA_ARGS__)
#define CNX_LOG_ERROR(...) SPDLOG_ERROR(__VA_ARGS__)
#define CNX_LOG_DEBUG(...) SPDLOG_DEBUG(__VA_ARGS__)
