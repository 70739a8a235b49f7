#!/usr/bin/env bash
# A stalled rank (SIGSTOP) under a coordinator with short liveness limits
# (heartbeat_timeout_s 3, stall_s 3): the coordinator must detect it and end
# the attempt, and the job must end within a bounded time (the healthy rank
# exits 204, "aborted by the coordinator", or mpirun tears the job down)
# instead of hanging in a collective. Cleanup resumes and kills the stopped rank.
# Usage: fault_stall_test.sh <cnx-worker> <cnx-coordinator> <cnx-make-shards>
source "$(dirname "$0")/lib.sh"
WORKER="$1"
COORD="$2"
MAKE_SHARDS="$3"
e2e_init fault_stall 200

make_fmnist_shards "$MAKE_SHARDS" "$WORK/shards" 200
PORT="$(free_port)"
echo "fault-test-coordinator-token-0123456789" > "$WORK/token"
EVERY=5 write_config "$WORK/job.yaml" "$WORK/shards/index.json" "$WORK/ckpt" \
  "schedule: {epochs: 40, warmup_epochs: 0.5, log_every: 5}" \
  "coordinator: {listen: \"127.0.0.1:$PORT\", token_file: $WORK/token, state_db: $WORK/state.sqlite,
              heartbeat_s: 0.2, heartbeat_timeout_s: 3, stall_s: 3, world_size: 2}"

e2e_bg "$COORD" --config "$WORK/job.yaml" > "$WORK/coordinator.log" 2>&1
wait_for 30 grep -q "listening" "$WORK/coordinator.log" || fail "coordinator did not start"
e2e_bg timeout -k 5 170 "${MPIRUN[@]}" "$WORKER" --config "$WORK/job.yaml" --coordinator "127.0.0.1:$PORT" \
  --resume none > "$WORK/workers.log" 2>&1
MPI_PID="$BG_PID"
wait_for 90 grep -q "step 10/" "$WORK/workers.log" || fail "workers did not reach step 10"
VICTIM="$(rank_pids "$MPI_PID" | tail -n 1)"
[ -n "$VICTIM" ] || fail "no rank process found"
kill -STOP "$VICTIM"
STOPPED_AT="$(date +%s)"
echo "ok: rank pid $VICTIM stopped with SIGSTOP"

# Bounded: detection takes ~3 s; allow 60 s for the job to end.
ended() { ! kill -0 "$MPI_PID" 2>/dev/null; }
wait_for 60 ended || fail "the job still runs 60 s after a rank stalled (hang)"
wait_rc "$MPI_PID"
ELAPSED=$(($(date +%s) - STOPPED_AT))
[ "$RC" != 0 ] || fail "the job exited 0 with a stalled rank"
[ "$RC" != 124 ] && [ "$RC" != 137 ] || fail "the job was ended by the test's timeout, not by stall detection"
grep -Eq "stalled|heartbeat" "$WORK/coordinator.log" || fail "the coordinator did not report the stall"
grep -q "coordinator: " "$WORK/workers.log" || fail "the workers did not report the coordinator's abort"
echo "ok: stall detected by the coordinator; job ended with exit $RC ${ELAPSED} s after the SIGSTOP"
