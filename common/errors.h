#pragma once
// Typed errors for user mistakes (tier two of the two error tiers in
// docs/architecture.md; tier one, internal invariants, is CNX_CHECK in
// common/check.h). Their messages are printed as they are, without a source
// position; common/cli.h maps them to exit codes. Header-only and free of
// dependencies, like check.h.
#include <stdexcept>

namespace cnx {

// A mistake the user can fix at run time (a missing or corrupt input, a
// refused value): programs exit 1.
class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A mistake on the command line or in the config: programs exit 2.
// cnx::ConfigError (common/config.h) is one.
class UsageError : public UserError {
 public:
  using UserError::UserError;
};

}  // namespace cnx
