#!/usr/bin/env bash
# kill -9 the coordinator mid-run and restart it on the same port and state
# database: the 2 ranks (Fashion-MNIST shards) keep training through the
# outage, the restarted coordinator restores the job from its database, plans
# and commits further checkpoints, and the job completes with exit 0.
# Usage: fault_coordinator_restart_test.sh <cnx-worker> <cnx-coordinator> <cnx-make-shards>
source "$(dirname "$0")/lib.sh"
coordinator_test_init fault_coord_restart 240 "$@"
PORT="$(free_port)"
EVERY=5 write_config "$WORK/job.yaml" "$WORK/shards/index.json" "$WORK/ckpt" \
  "schedule: {epochs: 8, warmup_epochs: 0.5, log_every: 5}" \
  "coordinator: {listen: \"127.0.0.1:$PORT\", token_file: $WORK/token, state_db: $WORK/state.sqlite,
              heartbeat_s: 0.2, heartbeat_timeout_s: 60, stall_s: 120, world_size: 2}"
# 200 steps: the restarted coordinator over-estimates the step rate at first
# (steps made during the outage / time since its restore) and plans its first
# checkpoint further ahead than every_steps; a longer job still reaches it.
STEPS=200

start_coordinator() { # start_coordinator LOG
  e2e_bg "$COORD" --config "$WORK/job.yaml" > "$WORK/$1.log" 2>&1
  COORD_PID="$BG_PID"
  wait_for 30 grep -q "listening" "$WORK/$1.log" || fail "coordinator ($1) did not start"
}
commits() { grep -c "committed by the coordinator" "$WORK/workers.log" 2>/dev/null || true; }

start_coordinator coordinator1
e2e_bg timeout -k 5 200 "${MPIRUN[@]}" "$WORKER" --config "$WORK/job.yaml" --coordinator "127.0.0.1:$PORT" \
  --resume none > "$WORK/workers.log" 2>&1
MPI_PID="$BG_PID"
wait_for 90 grep -q "committed by the coordinator" "$WORK/workers.log" || fail "no checkpoint committed before the kill"
kill -KILL "$COORD_PID"
wait "$COORD_PID" 2>/dev/null || true
BEFORE="$(commits)"
KILLED_AT="$(grep -o 'step [0-9]*/' "$WORK/workers.log" | tail -n 1)"
echo "ok: coordinator killed with SIGKILL after $BEFORE commit(s), workers at ${KILLED_AT%/}"
sleep 1
kill -0 "$MPI_PID" 2>/dev/null || fail "the workers ended while the coordinator was down"
start_coordinator coordinator2
echo "ok: coordinator restarted on port $PORT with the same state database"

wait_rc "$MPI_PID"
[ "$RC" = 0 ] || fail "workers exited $RC after the coordinator restart"
grep -q "training completed: $STEPS steps" "$WORK/workers.log" || fail "training did not complete"
AFTER="$(commits)"
[ "$AFTER" -gt "$BEFORE" ] || fail "no checkpoint committed after the restart ($BEFORE before, $AFTER after)"
echo "ok: training completed ($STEPS steps, exit 0); $((AFTER - BEFORE)) checkpoint(s) committed by the restarted coordinator"
