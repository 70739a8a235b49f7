#include "worker/host_network.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstdlib>

#include "common/config.h"

namespace cnx::worker {
namespace {

[[noreturn]] void bad(const std::string& spec, const std::string& why) {
  throw ConfigError("distributed.interface: '" + spec + "': " + why);
}

bool parse_ipv4(const std::string& s, uint32_t* out) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  *out = ntohl(a.s_addr);
  return true;
}

}  // namespace

std::vector<HostInterface> host_interfaces() {
  std::vector<HostInterface> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* p = list; p != nullptr; p = p->ifa_next) {
    if (p->ifa_addr == nullptr || p->ifa_addr->sa_family != AF_INET || !(p->ifa_flags & IFF_UP)) continue;
    char buf[INET_ADDRSTRLEN] = {0};
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(p->ifa_addr)->sin_addr, buf, sizeof(buf));
    out.push_back({p->ifa_name, buf});
  }
  freeifaddrs(list);
  return out;
}

HostInterface select_interface(const std::string& spec, const std::vector<HostInterface>& interfaces) {
  if (spec.empty()) bad(spec, "empty");
  const size_t slash = spec.find('/');
  uint32_t net = 0, mask = 0;
  const bool cidr = slash != std::string::npos;
  if (cidr) {
    const std::string bits = spec.substr(slash + 1);
    char* end = nullptr;
    const long n = std::strtol(bits.c_str(), &end, 10);
    if (!parse_ipv4(spec.substr(0, slash), &net) || bits.empty() || *end != '\0' || n < 0 || n > 32)
      bad(spec, "expected an interface name or an IPv4 subnet like 10.0.0.0/24");
    mask = n == 0 ? 0 : ~uint32_t{0} << (32 - n);
  }
  for (const HostInterface& i : interfaces) {
    uint32_t a = 0;
    if (cidr ? (parse_ipv4(i.address, &a) && (a & mask) == (net & mask)) : i.name == spec) return i;
  }
  std::string have;
  for (const HostInterface& i : interfaces) have += (have.empty() ? "" : ", ") + i.name + " " + i.address;
  bad(spec, std::string("no up IPv4 interface of this host ") + (cidr ? "is in that subnet" : "has that name") +
                " (this host has: " + (have.empty() ? "none" : have) + ")");
}

HostInterface apply_interface(const std::string& spec) {
  const HostInterface chosen = select_interface(spec, host_interfaces());
  setenv("OMPI_MCA_btl_tcp_if_include", spec.c_str(), /*overwrite=*/0);
  return chosen;
}

}  // namespace cnx::worker
