#pragma once
// Invariant checks (tier one of the two error tiers in docs/architecture.md).
//
// CNX_CHECK(cond, msg...) throws cnx::CheckError with "file:line: msg" when
// cond is false. The message parts are streamed, so any type with operator<<
// may be passed. Header-only and free of dependencies so that the core
// libraries (model, sparse_ops, comm) can use it without spdlog or yaml-cpp.
#include <sstream>
#include <stdexcept>
#include <string>

namespace cnx {

class CheckError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Tier two: a mistake the user can fix (a missing file, a bad value, a
// refused setting). Its message is printed as is, without a source position;
// programs exit 1 (common/cli.h).
class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A user mistake on the command line or in the config: programs exit 2.
// cnx::ConfigError (common/config.h) is one.
class UsageError : public UserError {
 public:
  using UserError::UserError;
};

namespace detail {
inline void stream_all(std::ostringstream&) {}
template <class T, class... Rest>
void stream_all(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  stream_all(os, rest...);
}
template <class... Args>
[[noreturn]] void check_failed(const char* file, int line, const char* cond, const Args&... args) {
  std::ostringstream os;
  // __FILE__ is relative to the build folder ("../../worker/trainer.cc"):
  // print the path inside the source tree.
  while (file[0] == '.' && (file[1] == '/' || (file[1] == '.' && file[2] == '/'))) file += file[1] == '/' ? 2 : 3;
  os << file << ":" << line << ": ";
  if constexpr (sizeof...(Args) == 0) {
    os << "check failed: " << cond;
  } else {
    stream_all(os, args...);
  }
  throw CheckError(os.str());
}
}  // namespace detail

// Concatenates the streamed parts into a string: cnx::str("rank ", r, " of ", n).
template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  detail::stream_all(os, args...);
  return os.str();
}

}  // namespace cnx

#define CNX_CHECK(cond, ...)                                                 \
  do {                                                                       \
    if (!(cond)) {                                                           \
      ::cnx::detail::check_failed(__FILE__, __LINE__, #cond, ##__VA_ARGS__); \
    }                                                                        \
  } while (0)
