#include "coordinator/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/check.h"

namespace cnx::coordinator {

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  CNX_CHECK(in.good(), path, ": cannot read ", what);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string load_token(const std::string& token_file, const std::string& token_env) {
  std::string token, source;
  if (!token_file.empty()) {
    token = read_file(token_file, "the job token (coordinator.token_file)");
    source = token_file;
  } else {
    CNX_CHECK(!token_env.empty(), "no job token: set coordinator.token_file or coordinator.token_env");
    const char* v = std::getenv(token_env.c_str());
    CNX_CHECK(v != nullptr, "no job token: coordinator.token_file is empty and $", token_env, " is not set");
    token = v;
    source = "$" + token_env;
  }
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ' || token.back() == '\t'))
    token.pop_back();
  CNX_CHECK(token.size() >= 16, source, ": the job token must be at least 16 characters (got ", token.size(), ")");
  for (char c : token)
    CNX_CHECK(c > ' ' && c < 127, source, ": the job token must be printable ASCII without spaces");
  return token;
}

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
    CNX_CHECK(client_ca.empty(), "coordinator.tls_client_ca needs coordinator.tls_cert and tls_key");
    return grpc::InsecureServerCredentials();
  }
  CNX_CHECK(!cert.empty() && !key.empty(), "coordinator.tls_cert and coordinator.tls_key must be given together");
  grpc::SslServerCredentialsOptions opts(client_ca.empty()
                                             ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                             : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  opts.pem_key_cert_pairs.push_back({read_file(key, "coordinator.tls_key"), read_file(cert, "coordinator.tls_cert")});
  if (!client_ca.empty()) opts.pem_root_certs = read_file(client_ca, "coordinator.tls_client_ca");
  return grpc::SslServerCredentials(opts);
}

std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const std::string& ca, const std::string& cert,
                                                              const std::string& key) {
  if (ca.empty()) {
    CNX_CHECK(cert.empty() && key.empty(), "a client certificate needs a CA to verify the coordinator (tls_ca)");
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions opts;
  opts.pem_root_certs = read_file(ca, "the coordinator's CA certificate");
  if (!cert.empty() || !key.empty()) {
    CNX_CHECK(!cert.empty() && !key.empty(), "a client certificate and key must be given together");
    opts.pem_cert_chain = read_file(cert, "the client certificate");
    opts.pem_private_key = read_file(key, "the client key");
  }
  return grpc::SslCredentials(opts);
}

}  // namespace cnx::coordinator
