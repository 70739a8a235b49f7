#!/usr/bin/env bash
# A stalled rank (SIGSTOP) under a coordinator with short liveness limits
# (heartbeat_timeout_s 3, stall_s 3): the coordinator must detect it and end
# the attempt, and the job must end within a bounded time (the healthy rank
# exits 204, "aborted by the coordinator", or mpirun tears the job down)
# instead of hanging in a collective. Cleanup resumes and kills the stopped rank.
# Usage: fault_stall_test.sh <cnx-worker> <cnx-coordinator> <cnx-make-shards>
source "$(dirname "$0")/lib.sh"
coordinator_test_init fault_stall 280 "$@"

# With the host protocol (the default, docs/protocols.md "Host speaker")
# both roles are stalled in turn, each in its own job: a local rank (its
# speaker keeps sending its frozen progress: the coordinator sees the stall)
# and the speaker itself (the host's heartbeats stop; the other rank finds
# its speaker frozen and stops through its abort watchdog).
stall() { # stall LOCAL_RANK: a coordinator and one launch; SIGSTOP to the rank with that local rank
  local lr="$1" port log="$WORK/workers-$1.log" clog="$WORK/coordinator-$1.log"
  port="$(free_port)"
  EVERY=5 write_config "$WORK/job$lr.yaml" "$WORK/shards/index.json" "$WORK/ckpt$lr" \
    "schedule: {epochs: 40, warmup_epochs: 0.5, log_every: 5}" \
    "coordinator: {listen: \"127.0.0.1:$port\", token_file: $WORK/token, state_db: $WORK/state$lr.sqlite,
              heartbeat_s: 0.2, heartbeat_timeout_s: 3, stall_s: 3, world_size: 2}"
  coordinator_up "$WORK/job$lr.yaml" "$clog" "coordinator"
  e2e_bg timeout -k 5 170 "${MPIRUN[@]}" "$WORKER" --config "$WORK/job$lr.yaml" --coordinator "127.0.0.1:$port" \
    --resume none > "$log" 2>&1
  MPI_PID="$BG_PID"
  wait_for 90 grep -q "step 10/" "$log" || fail "workers did not reach step 10"
  # shellcheck disable=SC2046
  VICTIM="$(local_rank_pid "$lr" $(rank_pids "$MPI_PID"))"
  [ -n "$VICTIM" ] || fail "no rank process with local rank $lr found"
  kill -STOP "$VICTIM"
  STOPPED_AT="$(date +%s)"
  echo "ok: local rank $lr ($([ "$lr" = 0 ] && echo "the host's speaker" || echo "relayed by the speaker"), pid $VICTIM) stopped with SIGSTOP"
  # Bounded: detection takes ~3 s; allow 60 s for the job to end.
  ended() { ! kill -0 "$MPI_PID" 2>/dev/null; }
  wait_for 60 ended || fail "the job still runs 60 s after a rank stalled (hang)"
  wait_rc "$MPI_PID"
  kill -CONT "$VICTIM" 2>/dev/null || true
  kill -KILL "$VICTIM" 2>/dev/null || true
  ELAPSED=$(($(date +%s) - STOPPED_AT))
  [ "$RC" != 0 ] || fail "the job exited 0 with a stalled rank"
  [ "$RC" != 124 ] && [ "$RC" != 137 ] || fail "the job was ended by the test's timeout, not by stall detection"
  grep -Eq "stalled|heartbeat" "$clog" || fail "the coordinator did not report the stall"
  grep -Eq "coordinator: |aborted by the coordinator" "$log" || fail "the workers did not report the coordinator's abort"
  echo "ok: $(grep -Eo "running -> restarting \([^;]*" "$clog" | head -n 1); job ended with exit $RC ${ELAPSED} s after the SIGSTOP"
}
stall 1
stall 0
