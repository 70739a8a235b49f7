#include "common/cli.h"

#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>

#include "common/build_info.h"
#include "common/check.h"
#include "common/errors.h"

namespace cnx::cli {
namespace {

std::string fmt_number(double d) {
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", d);
  return buf;
}

// A numeric check: `ok(v)` true or "<name>: value 'x' must be <expect>".
CLI::Validator number_check(const std::string& desc, const std::function<bool(double)>& ok, const std::string& expect) {
  return CLI::Validator(
      [ok, expect](std::string& text) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(text, v) || std::isnan(v)) return "'" + text + "' is not a number";
        return ok(v) ? std::string() : "'" + text + "' must be " + expect;
      },
      desc);
}

std::string one_line(std::string s) {
  for (auto& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

}  // namespace

std::string version_line(const std::string& program) {
  return program + " " + build_version();
}

void add_version_flag(CLI::App& app, const std::string& program) {
  if (app.get_option_no_throw("--version") != nullptr) return;
  app.set_version_flag("--version", version_line(program), "print the version (the build's git describe) and exit");
}

int parse(CLI::App& app, int argc, char** argv, const std::string& program) {
  add_version_flag(app, program);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --help-all, --version
    app.exit(e, std::cout, std::cerr);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    // CLI11 reports a missing required flag before unknown ones: name the
    // unknown ones first (a typo is the likelier mistake).
    std::string what = one_line(e.what());
    if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr) {
      std::string extra;
      for (const auto& a : app.remaining(true)) extra += (extra.empty() ? "" : " ") + a;
      if (!extra.empty()) what = "unknown argument(s): " + extra + " (and " + what + ")";
    }
    std::cerr << program << ": " << what << " (see " << program << " --help)" << std::endl;
    return kExitUsage;
  }
  return -1;
}

int exit_code_of(const std::exception& e) {
  if (dynamic_cast<const UsageError*>(&e) != nullptr) return kExitUsage;
  if (dynamic_cast<const CLI::ParseError*>(&e) != nullptr) return kExitUsage;
  return kExitError;
}

std::string message_of(const std::exception& e) {
  if (dynamic_cast<const CheckError*>(&e) != nullptr) {
    // CNX_CHECK's __FILE__ is relative to the build folder
    // ("../../worker/trainer.cc:12: ..."): print it from the source root.
    std::string m = one_line(e.what());
    size_t at = 0;
    while (m.compare(at, 3, "../") == 0) at += 3;
    return "internal error at " + m.substr(at);
  }
  return one_line(e.what());
}

int run_guarded(const std::string& program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::cerr << program << ": " << message_of(e) << std::endl;
    return exit_code_of(e);
  } catch (...) {
    std::cerr << program << ": unknown error" << std::endl;
    return kExitError;
  }
}

int run_main(const std::string& program, CLI::App& app, int argc, char** argv, const std::function<int()>& body) {
  if (const int rc = parse(app, argc, argv, program); rc >= 0) return rc;
  return run_guarded(program, body);
}

void add_config_flags(CLI::App& app, ConfigFlags* flags, const std::string& what, bool required) {
  auto* c = app.add_option("--config", flags->path, what);
  if (required) c->required();
  app.add_option("--set", flags->overrides, "override a config key: --set data.input_size=64 (repeatable)");
}

void set_string(ConfigFlags* flags, const std::string& key, const std::string& value) {
  if (value.empty()) return;
  std::string quoted = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  flags->overrides.push_back(key + "=" + quoted + "\"");
}

Config load_config(const ConfigFlags& flags) {
  if (flags.given()) return cnx::load_config(flags.path, flags.overrides);
  return load_config_text("{}", "(defaults)", flags.overrides);
}

CLI::Validator non_negative() {
  return number_check(
      "NONNEGATIVE", [](double v) { return v >= 0; }, ">= 0");
}
CLI::Validator positive() {
  return number_check(
      "POSITIVE", [](double v) { return v > 0; }, "> 0");
}
CLI::Validator in_range(double lo, double hi) {
  const std::string r = "[" + fmt_number(lo) + ", " + fmt_number(hi) + "]";
  return number_check(
      "in " + r, [lo, hi](double v) { return v >= lo && v <= hi; }, "in " + r);
}

}  // namespace cnx::cli
