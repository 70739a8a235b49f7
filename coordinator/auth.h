#pragma once
// Job token and transport security for the coordinator and its clients.
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>
#include <string_view>
#include "common/errors.h"

namespace cnx::coordinator {

// The job's bearer token: the contents of `token_file` (trailing whitespace
// trimmed) when given, else the environment variable `token_env`. Throws
// cnx::UsageError naming the source when it is missing or fails
// check_token_strength.
std::string load_token(const std::string& token_file, const std::string& token_env);

// The operator token (coordinator.operator_token_file, else the variable
// `token_env` when set), checked like the job token; "" when neither is
// configured (then the job token also authorises operator calls).
std::string load_operator_token(const std::string& token_file, const std::string& token_env);

// Refuses (cnx::UsageError naming `source`) a token shorter than 16
// characters, with spaces or non-printable characters, a known placeholder
// (e.g. the "replace-with-..." value shipped in deploy/k8s/base/secret.yaml), or
// one with less than 64 bits of estimated entropy (character frequencies x
// length: `openssl rand -hex 32` gives ~250 bits, "aaaa..." or a short
// repeated pattern almost none).
void check_token_strength(const std::string& token, const std::string& source);

// True for HOST:PORT addresses on this machine only: 127.0.0.0/8,
// localhost, [::1], and unix: sockets.
bool is_loopback_address(const std::string& address);

// Plaintext gRPC (no TLS) is allowed on loopback addresses only, unless
// `allow_plaintext` (coordinator.allow_plaintext) opts out. Throws
// cnx::UsageError naming `what` (e.g. "coordinator.listen") otherwise.
void check_plaintext_allowed(const std::string& address, bool tls, bool allow_plaintext, const std::string& what);

// Constant-time check of an "authorization" metadata value against
// "Bearer <token>" (compares SHA-256 digests with CRYPTO_memcmp, so neither
// the content nor the length of the token leaks through timing).
bool bearer_matches(std::string_view header_value, const std::string& token);

// Which token an "authorization" value carries (constant time, as
// bearer_matches). An empty operator token matches nothing.
enum class TokenRole { kNone, kJob, kOperator };
TokenRole bearer_role(std::string_view header_value, const std::string& job_token, const std::string& operator_token);

// Reads a whole file (PEM material); throws cnx::UsageError naming `what`.
std::string read_file(const std::string& path, const std::string& what);

// Server credentials: insecure when cert/key are empty; TLS otherwise, and
// mutual TLS (client certificates required and verified) when client_ca is set.
std::shared_ptr<grpc::ServerCredentials> server_credentials(const std::string& cert, const std::string& key,
                                                            const std::string& client_ca);

// Client credentials: insecure when ca is empty; TLS verifying the server
// against `ca` otherwise, presenting cert/key when given (mutual TLS).
std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const std::string& ca, const std::string& cert,
                                                              const std::string& key);

}  // namespace cnx::coordinator
