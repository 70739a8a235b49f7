#include "coordinator/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "common/check.h"
#include "common/errors.h"

namespace cnx::coordinator {

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) throw UsageError(path + ": cannot read " + what + " (does the file exist and is it readable?)");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

// `token` without trailing whitespace (a newline from `echo`), after
// check_token_strength; `source` names the file or variable in errors.
std::string checked_token(std::string token, const std::string& source) {
  while (!token.empty() &&
         (token.back() == '\n' || token.back() == '\r' || token.back() == ' ' || token.back() == '\t'))
    token.pop_back();
  check_token_strength(token, source);
  return token;
}

}  // namespace

std::string load_token(const std::string& token_file, const std::string& token_env) {
  std::string token, source;
  if (!token_file.empty()) {
    token = read_file(token_file, "the job token (coordinator.token_file)");
    source = token_file;
  } else {
    if (token_env.empty())
      throw UsageError("no job token: set coordinator.token_file (--token-file) or coordinator.token_env");
    const char* v = std::getenv(token_env.c_str());
    if (v == nullptr)
      throw UsageError("no job token: pass --token-file FILE (or set coordinator.token_file), or set $" + token_env +
                       " (make one with: openssl rand -hex 32 > job.token)");
    token = v;
    source = "$" + token_env;
  }
  return checked_token(token, source);
}

std::string load_operator_token(const std::string& token_file, const std::string& token_env) {
  std::string token, source;
  if (!token_file.empty()) {
    token = read_file(token_file, "the operator token (coordinator.operator_token_file)");
    source = token_file;
  } else {
    const char* v = token_env.empty() ? nullptr : std::getenv(token_env.c_str());
    if (v == nullptr) return "";
    token = v;
    source = "$" + token_env;
  }
  return checked_token(token, source);
}

TokenRole bearer_role(std::string_view header_value, const std::string& job_token, const std::string& operator_token) {
  // Both comparisons always run: the time taken does not tell which matched.
  const bool job = bearer_matches(header_value, job_token);
  const bool op = !operator_token.empty() && bearer_matches(header_value, operator_token);
  return op ? TokenRole::kOperator : job ? TokenRole::kJob : TokenRole::kNone;
}

void check_token_strength(const std::string& token, const std::string& source) {
  auto refuse = [&](const std::string& why) {
    throw UsageError(source + ": " + why + " (generate one with: openssl rand -hex 32)");
  };
  if (token.size() < 16) refuse(str("the token must be at least 16 characters (got ", token.size(), ")"));
  for (char c : token)
    if (c <= ' ' || c >= 127) refuse("the token must be printable ASCII without spaces");
  std::string lower = token;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* placeholder : {"replace-with", "replace_with", "changeme", "change-me", "change_me", "placeholder",
                                  "example", "your-token", "your_token", "<token>"})
    if (lower.find(placeholder) != std::string::npos)
      refuse(str("the token is a placeholder ('", placeholder, "...')"));
  std::map<char, int> counts;
  for (char c : token) ++counts[c];
  double bits = 0;
  for (const auto& [c, n] : counts) {
    const double p = static_cast<double>(n) / static_cast<double>(token.size());
    bits -= static_cast<double>(n) * std::log2(p);
  }
  if (bits < 64) refuse(str("the token is too predictable (~", static_cast<int>(bits), " bits of entropy, 64 needed)"));
}

bool is_loopback_address(const std::string& address) {
  if (address.rfind("unix:", 0) == 0 || address.rfind("unix-abstract:", 0) == 0) return true;
  const auto colon = address.rfind(':');
  std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost" || host == "::1") return true;
  // 127.0.0.0/8: four decimal octets, the first 127.
  if (host.rfind("127.", 0) != 0) return false;
  int dots = 0;
  for (char c : host) {
    if (c == '.')
      ++dots;
    else if (c < '0' || c > '9')
      return false;
  }
  return dots == 3;
}

void check_plaintext_allowed(const std::string& address, bool tls, bool allow_plaintext, const std::string& what) {
  if (tls || allow_plaintext || is_loopback_address(address)) return;
  throw UsageError(what + " '" + address +
                   "': plaintext gRPC is allowed on loopback addresses only (the job token would travel in clear "
                   "text and the coordinator could not be verified); configure TLS (coordinator.tls_cert/tls_key on "
                   "the coordinator, coordinator.tls_ca on clients) or set coordinator.allow_plaintext: true");
}

namespace {

// PEM material: refuses anything without a PEM header (e.g. the placeholder
// values of deploy/k8s/base/secret.yaml) with a message naming the key.
std::string read_pem(const std::string& path, const std::string& what) {
  std::string text = read_file(path, what);
  if (text.find("-----BEGIN ") == std::string::npos)
    throw UsageError(path + ": " + what +
                     " is not PEM (still a placeholder? deploy/k8s/make-secrets.sh writes real ones)");
  return text;
}

}  // namespace

bool bearer_matches(std::string_view header_value, const std::string& token) {
  const std::string expected = "Bearer " + token;
  unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(header_value.data()), header_value.size(), a);
  SHA256(reinterpret_cast<const unsigned char*>(expected.data()), expected.size(), b);
  return CRYPTO_memcmp(a, b, SHA256_DIGEST_LENGTH) == 0;
}

std::shared_ptr<grpc::ServerCredentials> server_credentials(const std::string& cert, const std::string& key,
                                                            const std::string& client_ca) {
  if (cert.empty() && key.empty()) {
    if (!client_ca.empty()) throw UsageError("coordinator.tls_client_ca needs coordinator.tls_cert and tls_key");
    return grpc::InsecureServerCredentials();
  }
  if (cert.empty() || key.empty())
    throw UsageError("coordinator.tls_cert and coordinator.tls_key must be given together");
  grpc::SslServerCredentialsOptions opts(client_ca.empty()
                                             ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                             : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  opts.pem_key_cert_pairs.push_back({read_pem(key, "coordinator.tls_key"), read_pem(cert, "coordinator.tls_cert")});
  if (!client_ca.empty()) opts.pem_root_certs = read_pem(client_ca, "coordinator.tls_client_ca");
  return grpc::SslServerCredentials(opts);
}

std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const std::string& ca, const std::string& cert,
                                                              const std::string& key) {
  if (ca.empty()) {
    if (!cert.empty() || !key.empty())
      throw UsageError("a client certificate needs a CA to verify the coordinator (coordinator.tls_ca, --tls-ca)");
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions opts;
  opts.pem_root_certs = read_pem(ca, "the coordinator's CA certificate");
  if (!cert.empty() || !key.empty()) {
    if (cert.empty() || key.empty())
      throw UsageError("a client certificate and key must be given together (--tls-cert and --tls-key)");
    opts.pem_cert_chain = read_pem(cert, "the client certificate");
    opts.pem_private_key = read_pem(key, "the client key");
  }
  return grpc::SslCredentials(opts);
}

}  // namespace cnx::coordinator
