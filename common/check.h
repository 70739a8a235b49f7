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
