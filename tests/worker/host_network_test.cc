#include "worker/host_network.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "common/config.h"

namespace cnx::worker {
namespace {

const std::vector<HostInterface> kHost = {{"lo", "127.0.0.1"}, {"eth0", "10.250.3.2"}, {"eth1", "192.168.7.9"}};

TEST(HostNetwork, SelectsByNameOrSubnet) {
  EXPECT_EQ(select_interface("eth1", kHost).address, "192.168.7.9");
  EXPECT_EQ(select_interface("10.250.3.0/24", kHost).name, "eth0");
  EXPECT_EQ(select_interface("10.250.0.0/16", kHost).address, "10.250.3.2");
  EXPECT_EQ(select_interface("192.168.7.9/32", kHost).name, "eth1");
  EXPECT_EQ(select_interface("0.0.0.0/0", kHost).name, "lo");  // first in order
}

TEST(HostNetwork, NothingSelectedNamesTheKeyAndListsTheInterfaces) {
  try {
    select_interface("10.9.0.0/16", kHost);
    FAIL() << "no interface is in 10.9.0.0/16";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("distributed.interface"), std::string::npos) << m;
    EXPECT_NE(m.find("10.9.0.0/16"), std::string::npos) << m;
    EXPECT_NE(m.find("eth0 10.250.3.2"), std::string::npos) << m;
  }
  EXPECT_THROW(select_interface("wlan0", kHost), ConfigError);
  EXPECT_THROW(select_interface("", kHost), ConfigError);
}

TEST(HostNetwork, MalformedSubnetsAreConfigErrors) {
  for (const char* bad : {"10.0.0.0/33", "10.0.0.0/", "10.0.0/8", "10.0.0.0/x", "300.0.0.0/8"}) {
    EXPECT_THROW(select_interface(bad, kHost), ConfigError) << bad;
  }
}

TEST(HostNetwork, ThisHostHasLoopbackAndApplyKeepsTheLaunchersChoice) {
  const auto here = host_interfaces();
  bool lo = false;
  for (const auto& i : here) lo = lo || i.address == "127.0.0.1";
  ASSERT_TRUE(lo) << "127.0.0.1 should be an up interface";
  unsetenv("OMPI_MCA_btl_tcp_if_include");
  EXPECT_EQ(apply_interface("127.0.0.0/8").address, "127.0.0.1");
  EXPECT_STREQ(std::getenv("OMPI_MCA_btl_tcp_if_include"), "127.0.0.0/8");
  setenv("OMPI_MCA_btl_tcp_if_include", "lo", 1);  // mpirun --mca btl_tcp_if_include lo
  apply_interface("127.0.0.0/8");
  EXPECT_STREQ(std::getenv("OMPI_MCA_btl_tcp_if_include"), "lo");
  unsetenv("OMPI_MCA_btl_tcp_if_include");
}

}  // namespace
}  // namespace cnx::worker
