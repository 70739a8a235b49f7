#pragma once
// The network a worker uses across hosts (distributed.interface).
//
// A spec names an interface ("eth0") or an IPv4 subnet in CIDR notation
// ("10.0.0.0/24"). The worker restricts Open MPI's TCP transport to it
// (btl_tcp_if_include, set before MPI starts unless the launcher already set
// it) and advertises that interface's IPv4 address to the coordinator as its
// host, so that status and logs name the address peers reach it at.
#include <string>
#include <vector>

namespace cnx::worker {

struct HostInterface {
  std::string name;     // e.g. "eth0"
  std::string address;  // IPv4, dotted
};

// The up IPv4 interfaces of this host (getifaddrs), in the system's order.
std::vector<HostInterface> host_interfaces();

// The first of `interfaces` that `spec` selects (by name, or by address
// inside the CIDR subnet). Throws cnx::ConfigError naming
// distributed.interface when the spec is malformed or selects nothing
// (the message lists the interfaces there are).
HostInterface select_interface(const std::string& spec, const std::vector<HostInterface>& interfaces);

// For a non-empty spec: sets OMPI_MCA_btl_tcp_if_include=spec unless the
// environment already has it (mpirun --mca wins), and returns the selected
// interface of this host. Call before MPI is initialised.
HostInterface apply_interface(const std::string& spec);

}  // namespace cnx::worker
