#!/bin/sh
# Open MPI launch agent (plm_rsh_agent) for the namespace cluster of
# tests/cluster/cluster.sh: mpirun calls `rsh_agent.sh [OPTIONS] HOST COMMAND...`
# the way it would call ssh; HOST is a host's address 10.250.<ID>.<I+1>, and
# COMMAND (Open MPI's daemon) runs in that host's network namespace cnx<ID>h<I>
# and in a UTS namespace of its own named host<I>.cnx<ID>.test: Open MPI
# keys its session directory and shared-memory segments by host name, so
# hosts sharing one name would share them.
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
host="$1"
shift
case "$host" in
  10.250.*.*) ;;
  *) echo "rsh_agent.sh: $host is not a cluster host address (10.250.ID.N)" >&2; exit 255 ;;
esac
rest="${host#10.250.}"
id="${rest%%.*}"
n="${rest#*.}"
h=$((n - 1))
exec ip netns exec "cnx${id}h$h" unshare --uts sh -c "echo host$h.cnx$id.test > /proc/sys/kernel/hostname && $*"
