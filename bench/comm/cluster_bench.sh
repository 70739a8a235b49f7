#!/usr/bin/env bash
# Gradient sync and weak scaling across hosts, on a namespace cluster
# (tests/cluster/cluster.sh; needs root): 3 hosts x 1 rank, TCP only between
# them (veth + bridge), every number against a baseline of the same run.
#
#   bench/comm/cluster_bench.sh [BUILD_DIR]     (default build/)
#
# 1. comm_bench BM_SyncVsRaw (atto, caps 1-64 MiB, prescaled): GradSync's
#    bucketed all-reduce vs one raw MPI_Allreduce of the same bytes over the
#    same path (vs_raw = raw time / GradSync time; bus_GBps both).
# 2. comm_bench BM_Step: the share of the all-reduce hidden behind backward.
# 3. worker_scaling_bench: FCMAE (atto, 64 px) 3 hosts x 1 rank vs 1 rank,
#    with the no-sync control.
# 4. The same two programs with the 3 ranks on one host (shared memory), to
#    separate what the network costs.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" && pwd)"
source "$ROOT/tests/cluster/cluster.sh"
why="$(cluster_can_run)" || { echo "cannot run: $why" >&2; exit 1; }
CL=31
exec 9> "/run/lock/cnx-cluster-$CL.lock"
flock -w 300 9
HOSTS="$(mktemp)"
trap 'cluster_down $CL; rm -f "$HOSTS" "$HOSTS.one"' EXIT
cluster_up "$CL" 4
cluster_hostfile "$CL" "$HOSTS" 0 1 1 1
cluster_hostfile "$CL" "$HOSTS.one" 0 3 0 0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
uptime
for where in "3 hosts x 1 rank (TCP)" "1 host x 3 ranks (shared memory)"; do
  hf="$HOSTS"
  btl=tcp,self
  if [ "$where" != "3 hosts x 1 rank (TCP)" ]; then hf="$HOSTS.one"; btl=tcp,vader,self; fi
  echo "== $where: comm_bench"
  CLUSTER_BTL=$btl timeout 900 bash -c 'source "$1"; shift; cluster_mpirun "$@"' _ "$ROOT/tests/cluster/cluster.sh" \
    "$CL" "$hf" 3 "$BUILD/bench/comm/comm_bench" \
    --benchmark_filter='BM_SyncVsRaw/0/[0-9]+/1/|BM_Step' --benchmark_counters_tabular=true
  echo "== $where: worker_scaling_bench"
  CLUSTER_BTL=$btl timeout 900 bash -c 'source "$1"; shift; cluster_mpirun "$@"' _ "$ROOT/tests/cluster/cluster.sh" \
    "$CL" "$hf" 3 "$BUILD/bench/worker/worker_scaling_bench" --model atto --size 64 --batch 8 --steps 5
done
