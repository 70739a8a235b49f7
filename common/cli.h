#pragma once
// The command-line convention of every cnx program (docs/operations.md,
// "Command lines"):
//
// * exit 0 on success, 1 on a runtime error, 2 on a usage or config error
//   (CLI11's own codes 105/106/109/... never leak out); programs with more
//   outcomes (cnx-worker 3..6, cnx-ctl latest 3) document theirs;
// * every failure is one line on stderr, "<program>: <what to fix>", with no
//   source position unless it is an internal invariant (CNX_CHECK), which is
//   printed as "internal error at file:line: ...";
// * --help and --version (the build's git describe) everywhere; --config FILE
//   and --set key.path=value on every program that has settings.
//
// A main is a thin wrapper:
//
//   int main(int argc, char** argv) {
//     CLI::App app{"what it does"};
//     cnx::cli::ConfigFlags cfg;
//     cnx::cli::add_config_flags(app, &cfg, "job config: data.input_size, data.mean ...");
//     ... app.add_option(...) ...
//     return cnx::cli::run_main("cnx-foo", app, argc, argv, [&] {
//       const cnx::Config c = cnx::cli::load_config(cfg);
//       ...                       // throw cnx::UsageError / UserError / anything
//       return 0;
//     });
//   }
//
// run_main adds --version, parses (help and version print and return 0), runs
// the body and turns any exception into its one-line message and exit code.
// Start-up work every program shares (a log line, say) belongs in run_main.
#include <CLI/CLI.hpp>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/errors.h"

namespace cnx::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

// "<program> <git describe>", what --version prints.
std::string version_line(const std::string& program);

// Adds --version to `app` (idempotent).
void add_version_flag(CLI::App& app, const std::string& program);

// Parses argv. Returns -1 to go on, else the exit code to return now: 0 after
// --help or --version printed their text (stdout), 2 after a usage error was
// printed as "<program>: <message> (see <program> --help)" (stderr).
int parse(CLI::App& app, int argc, char** argv, const std::string& program);

// The exit code of an exception: 2 for UsageError (ConfigError is one) and
// CLI::ParseError, 1 for anything else.
int exit_code_of(const std::exception& e);
// Its one-line message: newlines folded, "internal error at " before a
// CNX_CHECK's file:line.
std::string message_of(const std::exception& e);

// Runs `body` and returns its code; an exception is printed as
// "<program>: <message>" and returns exit_code_of(e).
int run_guarded(const std::string& program, const std::function<int()>& body);

// add_version_flag + parse + run_guarded.
int run_main(const std::string& program, CLI::App& app, int argc, char** argv, const std::function<int()>& body);

// --config FILE and --set key.path=value (repeatable).
struct ConfigFlags {
  std::string path;
  std::vector<std::string> overrides;
  bool given() const { return !path.empty(); }
};
// Appends the override `key` = `value` (a string, quoted for YAML) when
// `value` is not empty: how a flag such as --token-file sets its config key.
void set_string(ConfigFlags* flags, const std::string& key, const std::string& value);
// `what` says which settings the program takes from the config.
void add_config_flags(CLI::App& app, ConfigFlags* flags, const std::string& what, bool required = false);
// The config: the file with the overrides, or the defaults with the overrides
// when no --config was given. Throws ConfigError.
Config load_config(const ConfigFlags& flags);

// Numeric checks whose text reads well in --help and in errors (CLI11's
// NonNegativeNumber prints its bound as a 309-digit number).
CLI::Validator non_negative();
CLI::Validator positive();
CLI::Validator in_range(double lo, double hi);

}  // namespace cnx::cli
