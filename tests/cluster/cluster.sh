#!/usr/bin/env bash
# A cluster of "hosts" on one Linux machine: network namespaces joined by veth
# pairs to a bridge, each host with its own address in a private /24 that the
# caller picks. Needs root (ip netns); everything it creates is named after
# the cluster id, so a crashed earlier run is cleaned up by the next one.
#
# Sourced by the cluster tests (tests/cluster/*_test.sh) or run by hand:
#   tests/cluster/cluster.sh up ID N     hosts cnx<ID>h0..h<N-1> at 10.250.<ID>.1..N
#   tests/cluster/cluster.sh down ID     removes everything of cluster ID
#   tests/cluster/cluster.sh exec ID I CMD...   runs CMD on host I
#
# Layout of cluster ID (1..199):
#   bridge cnx<ID>br in the root namespace, address 10.250.<ID>.254 (mpirun
#     and its daemon live in the root namespace and reach the hosts' daemons
#     through it); no route leaves the subnet, no forwarding is enabled.
#   host I: namespace cnx<ID>h<I>, interface eth0 = 10.250.<ID>.<I+1>/24,
#     lo up; the root side of its veth is cnx<ID>v<I>.
#   names: /etc/netns/cnx<ID>h<I>/hosts (bind-mounted over /etc/hosts by
#     `ip netns exec`) maps host<I>.cnx<ID>.test to each host's address.
#   mpirun: cluster_hostfile writes a hostfile of the hosts' addresses;
#     rsh_agent.sh (plm_rsh_agent) maps an address back to its namespace.

CLUSTER_AGENT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/rsh_agent.sh"

cluster_ns() { echo "cnx${1}h${2}"; }
cluster_addr() { echo "10.250.${1}.$(($2 + 1))"; }
cluster_name() { echo "host${2}.cnx${1}.test"; }
cluster_subnet() { echo "10.250.${1}.0/24"; }

# cluster_can_run: 0 when namespaces can be made here; else prints why.
cluster_can_run() {
  if [ "$(id -u)" != 0 ]; then
    echo "not root: network namespaces need root (CI runs as root)"
    return 1
  fi
  if ! command -v ip > /dev/null; then
    echo "iproute2 (ip) is not installed"
    return 1
  fi
  if ! ip netns add cnxprobe$$ 2> /dev/null; then
    echo "cannot create a network namespace (ip netns add failed: no CAP_SYS_ADMIN?)"
    return 1
  fi
  ip netns del cnxprobe$$
  return 0
}

# cluster_down ID: removes every namespace, link and hosts file of cluster ID.
cluster_down() {
  local id="$1" ns l
  for ns in $(ip netns list 2> /dev/null | awk '{print $1}' | grep -E "^cnx${id}h[0-9]+$" || true); do
    ip netns pids "$ns" 2> /dev/null | xargs -r kill -KILL 2> /dev/null || true
    ip netns del "$ns" 2> /dev/null || true
    rm -rf "/etc/netns/$ns"
  done
  for l in $(ip -o link show 2> /dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
    grep -E "^cnx${id}(br|v[0-9]+)$" || true); do
    ip link del "$l" 2> /dev/null || true
  done
  rm -rf /etc/netns/cnx"${id}"h*
}

# cluster_up ID N: creates hosts 0..N-1 (after removing leftovers of ID).
cluster_up() {
  local id="$1" n="$2" i ns br="cnx${1}br"
  [ "$id" -ge 1 ] && [ "$id" -le 199 ] || { echo "cluster id must be 1..199" >&2; return 1; }
  cluster_down "$id"
  ip link add "$br" type bridge || return 1
  ip addr add "10.250.${id}.254/24" dev "$br"
  ip link set "$br" up
  local hosts=""
  for ((i = 0; i < n; i++)); do hosts+="$(cluster_addr "$id" "$i") $(cluster_name "$id" "$i")"$'\n'; done
  for ((i = 0; i < n; i++)); do
    ns="$(cluster_ns "$id" "$i")"
    ip netns add "$ns" || return 1
    mkdir -p "/etc/netns/$ns"
    printf '127.0.0.1 localhost\n%s' "$hosts" > "/etc/netns/$ns/hosts"
    ip link add "cnx${id}v$i" type veth peer name eth0 netns "$ns" || return 1
    ip link set "cnx${id}v$i" master "$br" up
    ip -n "$ns" addr add "$(cluster_addr "$id" "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
  done
  # Bridged frames may pass the root namespace's iptables (br_netfilter);
  # the hosts must reach each other before anything runs.
  for ((i = 1; i < n; i++)); do
    cluster_wait_tcp "$id" "$i" "$(cluster_addr "$id" 0)" || {
      echo "cluster $id: host $i cannot reach host 0 through the bridge" >&2
      return 1
    }
  done
}

# cluster_exec ID I CMD...: runs CMD in host I's namespace.
cluster_exec() {
  local id="$1" i="$2"
  shift 2
  ip netns exec "$(cluster_ns "$id" "$i")" "$@"
}

# cluster_wait_tcp ID I ADDR: host I can open a TCP connection to ADDR
# (a listener on a free port of host 0 is started for the check).
cluster_wait_tcp() {
  local id="$1" i="$2" addr="$3"
  cluster_exec "$id" 0 python3 - "$addr" 2> /dev/null << 'PY' &
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 47999)); s.listen(8); s.settimeout(10)
try:
    c, _ = s.accept(); c.close()
except OSError:
    pass
PY
  local lpid=$! k ok=1
  for ((k = 0; k < 50; k++)); do
    if cluster_exec "$id" "$i" python3 -c "import socket,sys; socket.create_connection((sys.argv[1], 47999), 0.5)" \
      "$addr" 2> /dev/null; then
      ok=0
      break
    fi
    sleep 0.1
  done
  kill "$lpid" 2> /dev/null || true
  wait "$lpid" 2> /dev/null || true
  return $ok
}

# cluster_hostfile ID FILE SLOTS_0 SLOTS_1 ...: an Open MPI hostfile naming
# host I with SLOTS_I slots (0 = host not used).
cluster_hostfile() {
  local id="$1" file="$2" i=0 s
  shift 2
  : > "$file"
  for s in "$@"; do
    [ "$s" -gt 0 ] && echo "$(cluster_addr "$id" "$i") slots=$s" >> "$file"
    i=$((i + 1))
  done
}

# cluster_mpirun ID HOSTFILE NP ARGS...: mpirun from the root namespace whose
# daemons start in the hosts' namespaces. Transports: $CLUSTER_BTL (default
# tcp,self: TCP even between ranks of one host); TCP restricted to the
# cluster subnet, for the daemons (oob) and, unless CLUSTER_BTL_IF is set
# empty (the worker's distributed.interface then restricts it), the ranks.
cluster_mpirun() {
  local id="$1" hostfile="$2" np="$3" btl_if=()
  shift 3
  local subnet
  subnet="$(cluster_subnet "$id")"
  if [ -n "${CLUSTER_BTL_IF-$subnet}" ]; then btl_if=(--mca btl_tcp_if_include "${CLUSTER_BTL_IF-$subnet}"); fi
  mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np" --hostfile "$hostfile" \
    --mca plm_rsh_agent "$CLUSTER_AGENT" --mca plm_rsh_no_tree_spawn 1 \
    --mca btl "${CLUSTER_BTL:-tcp,self}" "${btl_if[@]}" --mca oob_tcp_if_include "$subnet" "$@"
}

# cluster_tls ID DIR: a test CA (DIR/ca.pem) and host 0's server certificate
# (DIR/server.pem, DIR/server.key) whose SAN is host 0's name and address.
cluster_tls() {
  local id="$1" dir="$2"
  mkdir -p "$dir"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=cnx cluster $id test CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2> /dev/null &&
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=$(cluster_name "$id" 0)" -keyout "$dir/server.key" -out "$dir/server.csr" 2> /dev/null &&
    printf 'subjectAltName=DNS:%s,IP:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
      "$(cluster_name "$id" 0)" "$(cluster_addr "$id" 0)" > "$dir/server.ext" &&
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
      -extfile "$dir/server.ext" -out "$dir/server.pem" 2> /dev/null
}

# cluster_lossy ID I PERCENT: host I drops PERCENT% of the packets it sends,
# at random (nftables: numgen random mod 100 < PERCENT drop); the rule's
# counter says how many were dropped (cluster_dropped ID I).
cluster_lossy() {
  cluster_exec "$1" "$2" nft add table inet cnxloss &&
    cluster_exec "$1" "$2" nft add chain inet cnxloss out '{ type filter hook output priority 0; }' &&
    cluster_exec "$1" "$2" nft add rule inet cnxloss out oifname eth0 numgen random mod 100 '<' "$3" counter drop
}

cluster_dropped() {
  cluster_exec "$1" "$2" nft list chain inet cnxloss out | grep -o 'packets [0-9]*' | grep -o '[0-9]*' | head -n 1
}

# cluster_rate ID I RATE: host I sends at most RATE (tc tbf, e.g. 20mbit).
cluster_rate() {
  cluster_exec "$1" "$2" tc qdisc add dev eth0 root tbf rate "$3" burst 64kb latency 100ms
}

# cluster_link ID I up|down: plugs host I's cable in or pulls it (the root
# side of its veth), i.e. a network partition of that host.
cluster_link() {
  ip link set "cnx${1}v${2}" "$3"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    up) cluster_can_run || exit 1; cluster_up "$2" "$3" ;;
    down) cluster_down "$2" ;;
    exec) id="$2" i="$3"; shift 3; cluster_exec "$id" "$i" "$@" ;;
    *) echo "usage: $0 up ID N | down ID | exec ID I CMD..." >&2; exit 2 ;;
  esac
fi
