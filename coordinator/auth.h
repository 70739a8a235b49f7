#pragma once
// Job token and transport security for the coordinator and its clients.
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>
#include <string_view>

namespace cnx::coordinator {

// The job's bearer token: the contents of `token_file` (trailing whitespace
// trimmed) when given, else the environment variable `token_env`. Throws
// cnx::CheckError naming the source when it is missing, empty or shorter
// than 16 characters.
std::string load_token(const std::string& token_file, const std::string& token_env);

// Constant-time check of an "authorization" metadata value against
// "Bearer <token>" (compares SHA-256 digests with CRYPTO_memcmp, so neither
// the content nor the length of the token leaks through timing).
bool bearer_matches(std::string_view header_value, const std::string& token);

// Reads a whole file (PEM material); throws cnx::CheckError naming `what`.
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
