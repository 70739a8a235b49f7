#!/usr/bin/env bash
# Multi-host scenarios on a namespace cluster (tests/cluster/cluster.sh):
# host 0 runs cnx-coordinator behind TLS (test CA, SAN = host 0's name and
# address); workers start on hosts 1..3 through a real mpirun whose daemons
# enter the hosts' namespaces; ranks on different hosts talk TCP only, on the
# cluster subnet. Every job trains FCMAE on Fashion-MNIST shards (tiny model,
# 64 px) against its own coordinator.
#
#   cluster_test.sh SCENARIO <cnx-worker> <cnx-coordinator> <cnx-make-shards>
#   SCENARIO: tcp       3 hosts x 1 rank == 1 host x 3 ranks (bit for bit), then
#                       2% loss on every host + a 20 Mbit/s link: same result;
#                       unreachable / untrusted coordinator: clear error
#             shm_tcp   2 hosts x 2 ranks (shared memory inside, TCP across) == 1 host x 4 ranks
#             speaker   2 hosts x 2 ranks, host speakers: kill -9 of one host's speaker,
#                       relaunch == the per-rank protocol's uninterrupted run (bit for bit)
#             partition_worker       a worker host's cable pulled mid-run
#             partition_coordinator  the coordinator host's cable pulled briefly, then for long
# Exit 77 (skipped) when namespaces cannot be made here (not root), with why.
source "$(dirname "$0")/../e2e/lib.sh"
source "$(dirname "$0")/cluster.sh"
SCENARIO="$1"
WORKER="$2"
COORD="$3"
MAKE_SHARDS="$4"
case "$SCENARIO" in
  tcp) CL=11 ;;
  shm_tcp) CL=12 ;;
  partition_worker) CL=13 ;;
  partition_coordinator) CL=14 ;;
  speaker) CL=15 ;;
  *) echo "unknown scenario '$SCENARIO'" >&2; exit 2 ;;
esac
if ! why="$(cluster_can_run)"; then
  echo "SKIP: the namespace cluster cannot run here: $why"
  exit 77
fi
e2e_init "cluster_$SCENARIO" 560

# One run of cluster CL at a time on this machine (a crashed run's leftovers
# are removed by cluster_up); the cluster goes away with the test.
exec 9> "/run/lock/cnx-cluster-$CL.lock"
flock -w 300 9 || fail "cluster $CL is busy (lock /run/lock/cnx-cluster-$CL.lock)"
cluster_cleanup() {
  local rc=$? p
  for p in "${E2E_PIDS[@]}"; do e2e_kill_tree "$p"; done
  cluster_down "$CL"
  (exit "$rc")
  e2e_cleanup
}
trap cluster_cleanup EXIT
cluster_up "$CL" 4 || fail "cluster $CL did not come up"
HOST0="$(cluster_name "$CL" 0)"
SUBNET="$(cluster_subnet "$CL")"
echo "ok: cluster $CL: 4 hosts on $SUBNET (coordinator on $HOST0 = $(cluster_addr "$CL" 0))"

cluster_tls "$CL" "$WORK/tls" || fail "openssl could not make the test certificates"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/token"
make_fmnist_shards "$MAKE_SHARDS" "$WORK/shards" 240 # 5 shards x 50 (last 40)

STEPS="${STEPS:-60}"
NEXT_PORT=50100
# job NAME [extra YAML lines]: config + a coordinator on host 0 for one job
# (own port, state database, checkpoint root); $PORT_<NAME> is its port.
job() {
  local name="$1" port=$((NEXT_PORT++))
  shift
  EVERY="${EVERY:-10}" write_config "$WORK/$name.yaml" "$WORK/shards/index.json" "$WORK/ckpt-$name" \
    "schedule: {epochs: 20, warmup_epochs: 0.5, log_every: 10, max_steps: $STEPS}" \
    "distributed: {interface: \"$SUBNET\", peer_timeout_s: ${PEER_TIMEOUT:-60}}" \
    "coordinator: {listen: \"$(cluster_addr "$CL" 0):$port\", token_file: $WORK/token, state_db: $WORK/$name.sqlite,
      tls_cert: $WORK/tls/server.pem, tls_key: $WORK/tls/server.key, tls_ca: $WORK/tls/ca.pem,
      heartbeat_s: 0.5, heartbeat_timeout_s: ${HB_TIMEOUT:-60}, stall_s: 300, unreachable_s: ${UNREACHABLE:-120}}" \
    "$@"
  coordinator_up "$WORK/$name.yaml" "$WORK/coordinator-$name.log" "coordinator of $name" cluster_exec "$CL" 0
  eval "PORT_$name=$port"
}
# launch NAME LOG "SLOTS_0 SLOTS_1 ..." [worker args...]: mpirun over the
# hosts with those slots (host 0 never gets ranks); pid in MPI_PID.
launch() {
  local name="$1" log="$2" slots="$3" np=0 s port
  shift 3
  for s in $slots; do np=$((np + s)); done
  # shellcheck disable=SC2086
  cluster_hostfile "$CL" "$WORK/$log.hosts" $slots
  port="$(eval echo "\$PORT_$name")"
  e2e_bg timeout -k 5 240 env CLUSTER_BTL="${CLUSTER_BTL:-tcp,self}" CLUSTER_BTL_IF="${CLUSTER_BTL_IF-$SUBNET}" \
    bash -c 'source "$1"; shift; cluster_mpirun "$@"' _ "$(dirname "$0")/cluster.sh" \
    "$CL" "$WORK/$log.hosts" "$np" "$WORKER" --config "$WORK/$name.yaml" --coordinator "$HOST0:$port" "$@" \
    > "$WORK/$log.log" 2>&1
  MPI_PID="$BG_PID"
}
# run NAME LOG SLOTS [args...]: launch and require exit 0 and completion.
run() {
  local log="$2"
  launch "$@"
  wait_rc "$MPI_PID"
  [ "$RC" = 0 ] || fail "$log exited $RC"
  grep -q "training completed" "$WORK/$log.log" || fail "$log did not complete"
}
# hosts_seen NAME: the hosts the coordinator recorded for the ranks.
hosts_seen() {
  python3 - "$WORK/$1.sqlite" << 'PY'
import json, sqlite3, sys
rows = dict(sqlite3.connect(sys.argv[1]).execute("select key, value from state"))
hosts = set()
for k, v in rows.items():
    try:
        j = json.loads(v)
    except ValueError:
        continue
    if isinstance(j, dict) and "host" in j and "registered" in j:
        hosts.add(j["host"])
print(" ".join(sorted(hosts)))
PY
}
job_state() { # job_state NAME: "<state> <attempt> <world>" from the coordinator's database
  python3 - "$WORK/$1.sqlite" << 'PY'
import json, sqlite3, sys
rows = dict(sqlite3.connect(sys.argv[1]).execute("select key, value from state"))
j = json.loads(rows["job"])
print(j["state"], j["attempt"], j["world"])
PY
}

scenario_tcp() {
  # A worker that cannot reach the coordinator, or does not trust its
  # certificate, stops with an error naming the address (bounded by
  # coordinator.unreachable_s).
  UNREACHABLE=3 job unreach
  local t0 out rc
  t0=$(date +%s)
  rc=0
  out="$(cluster_exec "$CL" 1 timeout 60 "$WORKER" --config "$WORK/unreach.yaml" \
    --coordinator "$(cluster_addr "$CL" 3):$PORT_unreach" 2>&1)" || rc=$?
  [ "$rc" = 1 ] || fail "worker against an address nobody listens on exited $rc, expected 1: $out"
  echo "$out" | grep -q "cannot reach the coordinator at $(cluster_addr "$CL" 3):$PORT_unreach" ||
    fail "no clear error for an unreachable coordinator: $out"
  echo "ok: unreachable coordinator: exit 1 after $(($(date +%s) - t0)) s (unreachable_s 3): $(echo "$out" | grep -o 'cannot reach.* for [0-9]* s' | head -1)"
  cluster_tls "$CL" "$WORK/other-ca" || fail "openssl failed"
  rc=0
  out="$(cluster_exec "$CL" 1 timeout 60 "$WORKER" --config "$WORK/unreach.yaml" \
    --set coordinator.tls_ca="$WORK/other-ca/ca.pem" --coordinator "$HOST0:$PORT_unreach" 2>&1)" || rc=$?
  [ "$rc" = 1 ] && echo "$out" | grep -q "tls_ca verifies" || fail "untrusted certificate: exit $rc: $out"
  echo "ok: a coordinator certificate from another CA is refused (exit 1, the error points at coordinator.tls_ca)"

  job ref
  job hosts3
  job lossy
  run ref ref "0 3 0 0"
  echo "ok: reference: 1 host x 3 ranks completed $STEPS steps"
  CLUSTER_BTL_IF="" run hosts3 hosts3 "0 1 1 1" # the ranks' TCP restricted by distributed.interface only
  same_final ref hosts3 "3 hosts x 1 rank over TCP"
  local seen want
  seen="$(hosts_seen hosts3)"
  want="$(cluster_addr "$CL" 1) $(cluster_addr "$CL" 2) $(cluster_addr "$CL" 3)"
  [ "$seen" = "$want" ] || fail "the coordinator recorded hosts '$seen', expected the advertised addresses '$want'"
  echo "ok: the coordinator recorded the advertised addresses of distributed.interface: $seen"

  local i d
  for i in 1 2 3; do
    cluster_lossy "$CL" "$i" 2 || fail "nftables loss rule on host $i"
  done
  cluster_rate "$CL" 2 20mbit || fail "tbf on host 2"
  run lossy lossy "0 1 1 1"
  same_final ref lossy "3 hosts, 2% packet loss on every host, host 2 limited to 20 Mbit/s"
  local dropped=""
  for i in 1 2 3; do
    d="$(cluster_dropped "$CL" "$i")"
    [ "${d:-0}" -gt 0 ] || fail "host $i's loss rule dropped no packet"
    dropped+="${dropped:+, }host $i: $d"
  done
  echo "ok: packets dropped by the loss rules during that run: $dropped"
}

scenario_shm_tcp() {
  job ref
  job mixed
  CLUSTER_BTL=tcp,vader,self run ref ref "0 4 0 0"
  echo "ok: reference: 1 host x 4 ranks completed $STEPS steps"
  CLUSTER_BTL=tcp,vader,self run mixed mixed "0 2 2 0"
  same_final ref mixed "2 hosts x 2 ranks (shared memory inside a host, TCP across)"
}

# ranks_on HOST: pids of cnx-worker processes in that host's namespace.
ranks_on() {
  local p
  for p in $(ip netns pids "$(cluster_ns "$CL" "$1")" 2> /dev/null); do
    [ "$(cat "/proc/$p/comm" 2> /dev/null)" = cnx-worker ] && echo "$p"
  done
  return 0
}
no_ranks_on() {
  local h
  for h in "$@"; do [ -z "$(ranks_on "$h")" ] || return 1; done
}

# 3. A worker host loses its network mid-run (cable pulled): the ranks still
# reachable and the cut-off one all end within distributed.peer_timeout_s
# (exit 206), the coordinator records the lost rank (no heartbeat for
# heartbeat_timeout_s: attempt failed, restartable), and a relaunch on the two
# remaining hosts resumes from the last committed checkpoint with no sample
# used twice within an epoch (train.sample_log).
scenario_partition_worker() {
  PEER_TIMEOUT=10 HB_TIMEOUT=15 job part
  launch part part1 "0 1 1 1" --set train.sample_log="$WORK/samples"
  wait_commit part1 20 || fail "no checkpoint at step >= 20 committed before the partition"
  cluster_link "$CL" 3 down
  local t0 ended
  t0=$(date +%s)
  echo "ok: host 3's cable pulled after the commit at step $LAST_COMMIT"
  wait_for 60 no_ranks_on 1 2 3 || fail "ranks still run 60 s after host 3 was cut off (peer_timeout_s 10)"
  ended=$(($(date +%s) - t0))
  # The first rank past the timeout exits 206; mpirun then ends the other
  # reachable ranks (Open MPI aborts a job on a non-zero exit), so each
  # survivor either reports the lost peer itself or was ended after one did.
  local r reported=""
  for r in 0 1; do
    grep -q "rank $r: a collective has not completed .*distributed.peer_timeout_s.*(exit 206)" "$WORK/part1.log" &&
      reported+="${reported:+, }$r"
  done
  [ -n "$reported" ] || fail "no surviving rank reported the lost peer (exit 206)"
  echo "ok: every rank ended ${ended} s after the partition (peer_timeout_s 10); rank(s) $reported exited 206 (peer lost)"
  wait_for 40 grep -q "running -> restarting (rank 2 lost" "$WORK/coordinator-part.log" ||
    fail "the coordinator did not record the loss of rank 2 (host 3)"
  [ "$(job_state part | cut -d' ' -f1)" = 3 ] || fail "the coordinator's job state is $(job_state part), not restarting (3)"
  echo "ok: coordinator: $(grep -o 'attempt 1: running -> restarting ([^;]*' "$WORK/coordinator-part.log" | head -1)"
  # mpirun itself waits for host 3's daemon (until TCP gives up, minutes):
  # its ranks are all gone, so the test ends it.
  if ! wait_for 5 bash -c "! kill -0 $MPI_PID"; then
    echo "ok: (mpirun still waits for host 3's daemon, as Open MPI does; ended by the test)"
    e2e_kill_tree "$MPI_PID"
  fi
  cluster_down_host_ranks 3
  cp -r "$WORK/samples" "$WORK/samples-attempt1"
  # 3 ranks -> 2: steps are rescaled to the smaller global batch (x 3/2).
  launch part part2 "0 1 1 0" --resume auto --set train.sample_log="$WORK/samples" --max-steps $((STEPS * 3 / 2))
  wait_rc "$MPI_PID"
  [ "$RC" = 0 ] || fail "relaunch on hosts 1-2 exited $RC"
  grep -q "written by 3 ranks" "$WORK/part2.log" || fail "the relaunch did not report the world-size change"
  grep -q "training completed" "$WORK/part2.log" || fail "the relaunch did not complete"
  [ "$(job_state part)" = "5 2 2" ] || fail "coordinator after the relaunch: $(job_state part), expected completed attempt 2 world 2"
  no_sample_twice "$WORK/samples-attempt1" "$WORK/samples" "$LAST_COMMIT" "0 1 2" "0 1" "2-host relaunch"
}
# 5. Host speakers (docs/protocols.md, "Host speaker"), 2 hosts x 2 ranks:
# each host's local rank 0 speaks for its ranks. The speaker of host 2 is
# killed after a commit: the job ends, the coordinator fails the attempt
# when host 2's heartbeats stop (both its ranks lost), and a relaunch
# resumes from the last commit and ends bit-identical to an uninterrupted
# run of the per-rank protocol.
scenario_speaker() {
  job ref
  HB_TIMEOUT=5 job spk
  CLUSTER_BTL=tcp,vader,self run ref ref "0 2 2 0" --set coordinator.protocol=rank
  echo "ok: reference: 2 hosts x 2 ranks, per-rank protocol, completed $STEPS steps"
  CLUSTER_BTL=tcp,vader,self launch spk spk1 "0 2 2 0"
  wait_commit spk1 10 || fail "no checkpoint at step >= 10 committed before the kill"
  [ "$(grep -c "host '.*' registered 2 ranks" "$WORK/coordinator-spk.log")" = 2 ] ||
    fail "the coordinator did not log two host registrations"
  # shellcheck disable=SC2046
  kill_speaker spk1 "$WORK/coordinator-spk.log" "[23]" $(ranks_on 2) # host 2's speaker
  no_ranks_on 1 2 || { cluster_down_host_ranks 1; cluster_down_host_ranks 2; }
  CLUSTER_BTL=tcp,vader,self run spk spk2 "0 2 2 0" --resume auto
  grep -q "resumed from .* at step $LAST_COMMIT " "$WORK/spk2.log" || fail "the relaunch did not resume from step $LAST_COMMIT"
  same_final ref spk "speaker killed and relaunched (host protocol) vs the per-rank protocol"
  [ "$(job_state spk)" = "5 2 4" ] || fail "coordinator after the relaunch: $(job_state spk), expected completed attempt 2 world 4"
  [ "$(hosts_seen spk)" = "$(cluster_addr "$CL" 1) $(cluster_addr "$CL" 2)" ] || fail "hosts recorded: $(hosts_seen spk)"
  echo "ok: coordinator: attempt 2 completed with world 4 on hosts $(hosts_seen spk)"
}

# Leftover processes of a cut-off host (its daemon could not be reached).
cluster_down_host_ranks() {
  ip netns pids "$(cluster_ns "$CL" "$1")" 2> /dev/null | xargs -r kill -KILL 2> /dev/null || true
}

# 4. The coordinator's host is cut off. Briefly (3 s, far below
# heartbeat_timeout_s): training goes on and ends bit-identical to an
# undisturbed run. For long (unreachable_s 15: long enough that a
# coordinator slowed by a busy disk's fsync is not taken for a cut cable): the workers stop (exit 204), the
# coordinator fails the attempt, and once it is reachable again a relaunch
# resumes from the last committed checkpoint and ends bit-identical too.
scenario_partition_coordinator() {
  job ref
  HB_TIMEOUT=20 UNREACHABLE=30 job short
  HB_TIMEOUT=8 UNREACHABLE=15 job long
  run ref ref "0 1 1 1"
  echo "ok: reference: 3 hosts x 1 rank completed $STEPS steps"

  launch short short "0 1 1 1"
  wait_commit short 10 || fail "short: no commit before the partition"
  cluster_link "$CL" 0 down
  sleep 3
  cluster_link "$CL" 0 up
  echo "ok: short: coordinator host cut off for 3 s after the commit at step $LAST_COMMIT"
  wait_rc "$MPI_PID"
  [ "$RC" = 0 ] || fail "short: exited $RC after a 3 s coordinator partition"
  [ "$(job_state short)" = "5 1 3" ] || fail "short: coordinator state $(job_state short), expected completed attempt 1"
  same_final ref short "coordinator partitioned for 3 s"

  launch long long1 "0 1 1 1"
  wait_commit long1 20 || fail "long: no commit before the partition"
  cluster_link "$CL" 0 down
  local t0
  t0=$(date +%s)
  wait_rc "$MPI_PID"
  local took=$(($(date +%s) - t0))
  [ "$RC" = 204 ] || fail "long: the job exited $RC with the coordinator unreachable, expected 204"
  grep -q "unreachable for 15 s (coordinator.unreachable_s)" "$WORK/long1.log" || fail "long: no clear reason logged"
  echo "ok: long: coordinator unreachable -> the job stopped with exit 204 after ${took} s (unreachable_s 15); last commit at step $LAST_COMMIT"
  cluster_link "$CL" 0 up
  wait_for 30 bash -c "grep -q 'running -> \(failed\|restarting\)' '$WORK/coordinator-long.log'" ||
    fail "long: the coordinator did not fail the attempt after its workers vanished"
  launch long long2 "0 1 1 1" --resume auto
  wait_rc "$MPI_PID"
  [ "$RC" = 0 ] || fail "long: relaunch exited $RC"
  grep -q "resumed from .* at step $LAST_COMMIT " "$WORK/long2.log" || fail "long: relaunch did not resume from step $LAST_COMMIT"
  same_final ref long "coordinator partitioned for long, job stopped and relaunched"
}

case "$SCENARIO" in
  tcp) scenario_tcp ;;
  shm_tcp) scenario_shm_tcp ;;
  partition_worker) scenario_partition_worker ;;
  partition_coordinator) scenario_partition_coordinator ;;
  speaker) scenario_speaker ;;
esac
