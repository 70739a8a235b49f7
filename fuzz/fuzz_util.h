#pragma once
// Shared helpers of the libFuzzer targets (fuzz/README.md).
//
// A target returns normally when the parser under test either produced a
// valid object or threw its documented error type. Anything else is a
// finding: a sanitizer report, an exception of another type escaping
// LLVMFuzzerTestOneInput (std::terminate -> abort), a broken contract
// (FUZZ_REQUIRE -> abort with a message), a hang (-timeout) or an
// allocation beyond -malloc_limit_mb / -rss_limit_mb.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace cnx::fuzz {

// A private folder of this process (under /dev/shm when it exists, so the
// files the parsers read never touch a disk), removed at a normal exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path base = fs::is_directory("/dev/shm", ec) ? fs::path("/dev/shm") : fs::temp_directory_path();
    std::string tmpl = (base / "cnx-fuzz-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) {
      std::perror("cnx-fuzz: mkdtemp");
      std::abort();
    }
    static const std::string keep = tmpl;
    std::atexit([] {
      std::error_code e;
      std::filesystem::remove_all(keep, e);
    });
    return tmpl;
  }();
  return dir;
}

inline void write_file(const std::string& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) {
    std::fprintf(stderr, "cnx-fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

[[noreturn]] inline void contract_violation(const char* file, int line, const char* cond, const std::string& what) {
  std::fprintf(stderr, "\n==cnx-fuzz== CONTRACT VIOLATION at %s:%d: %s\n  %s\n", file, line, cond, what.c_str());
  std::abort();
}

}  // namespace cnx::fuzz

// Aborts (a libFuzzer crash with this message) when `cond` is false.
#define FUZZ_REQUIRE(cond, what)                                                   \
  do {                                                                             \
    if (!(cond)) ::cnx::fuzz::contract_violation(__FILE__, __LINE__, #cond, what); \
  } while (0)
