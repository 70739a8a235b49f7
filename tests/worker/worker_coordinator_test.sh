#!/usr/bin/env bash
# cnx-worker with a real cnx-coordinator on loopback (2 ranks, synthetic data):
# the ranks register, heartbeat, write the coordinator's checkpoint plans and
# get them committed; a second launch resumes from the last committed one.
# Usage: worker_coordinator_test.sh <cnx-worker> <cnx-coordinator>
set -euo pipefail
WORKER="$1"
COORD="$2"
WORK="$(mktemp -d /tmp/cnx_worker_coord.XXXXXX)"
COORD_PID=""
cleanup() {
  if [ -n "$COORD_PID" ]; then kill -TERM "$COORD_PID" 2>/dev/null || true; wait "$COORD_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap - EXIT
fail() { echo "FAIL: $*" >&2; for f in "$WORK"/*.log; do echo "== $f"; tail -n 40 "$f"; done >&2; exit 1; }

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
SHARDS=""
for i in 0 1 2 3; do
  SHARDS+="${SHARDS:+,}{\"name\":\"train-$i.tar\",\"samples\":16,\"bytes\":1,\"sha256\":\"$(printf 'a%.0s' $(seq 64))\"}"
done
echo "{\"version\":1,\"dataset\":\"t\",\"total_samples\":64,\"classes\":[],\"shards\":[$SHARDS]}" > "$WORK/index.json"
echo "worker-coordinator-test-token-0123" > "$WORK/token"
cat > "$WORK/job.yaml" <<YAML
job: {id: coord-test, seed: 3}
model: {name: custom, depths: [1, 1, 1, 1], dims: [8, 16, 32, 64], decoder_dim: 32}
mask: {ratio: 0.5}
optimizer: {blr: 1.0e-2}
schedule: {epochs: 40, warmup_epochs: 0.5, log_every: 50}
data: {index: $WORK/index.json, input_size: 64, batch_size: 2}
train: {threads: 1}
checkpoint: {root: $WORK/ckpt, every_steps: 6, keep: 2}
coordinator: {listen: "127.0.0.1:$PORT", token_file: $WORK/token, state_db: $WORK/state.sqlite,
              heartbeat_s: 0.2, heartbeat_timeout_s: 60, stall_s: 120, world_size: 2}
metrics: {enabled: false}
YAML
"$COORD" --config "$WORK/job.yaml" > "$WORK/coordinator.log" 2>&1 &
COORD_PID=$!
for _ in $(seq 1 100); do grep -q "listening" "$WORK/coordinator.log" && break; sleep 0.1; done
grep -q "listening" "$WORK/coordinator.log" || fail "coordinator did not start"

run() {
  mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 "$WORKER" --config "$WORK/job.yaml" \
    --coordinator "127.0.0.1:$PORT" --synthetic --synthetic-samples 64 "$@"
}
# First launch: preempted (SIGTERM to one rank) after the first commit. The
# ranks report it by heartbeat, write the coordinator's checkpoint plan, exit 203.
mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 "$WORKER" --config "$WORK/job.yaml" \
  --coordinator "127.0.0.1:$PORT" --synthetic --synthetic-samples 64 --max-steps 100000 > "$WORK/w1.log" 2>&1 &
MPI_PID=$!
for _ in $(seq 1 600); do grep -q "committed by the coordinator" "$WORK/w1.log" 2>/dev/null && break; sleep 0.1; done
grep -q "committed by the coordinator" "$WORK/w1.log" || fail "no checkpoint committed through the coordinator"
grep -q "registered with coordinator" "$WORK/w1.log" || fail "no registration"
RANK_PID="$(pgrep -P "$MPI_PID" -f cnx-worker | tail -n 1 || true)"
[ -n "$RANK_PID" ] || fail "no rank process found"
kill -TERM "$RANK_PID"
set +e
wait "$MPI_PID"
RC=$?
set -e
[ "$RC" = 203 ] || fail "preempted launch exited with $RC, expected 203"
LAST="$(grep -o 'checkpoint plan [0-9]* (step [0-9]*) committed' "$WORK/w1.log" | tail -n 1 | grep -o 'step [0-9]*' | grep -o '[0-9]*')"
[ -n "$LAST" ] || fail "no committed step found"
echo "ok: first launch committed checkpoints through the coordinator; SIGTERM -> checkpoint at step $LAST, exit 203"

# Second launch: a new attempt that resumes from the last committed checkpoint and completes.
run --max-steps $((LAST + 10)) --resume auto > "$WORK/w2.log" 2>&1 || fail "second launch exited with $?"
grep -q "resumed from .*step.* at step $LAST " "$WORK/w2.log" || fail "second launch did not resume from step $LAST"
grep -q "training completed: $((LAST + 10)) steps" "$WORK/w2.log" || fail "second launch did not complete"
echo "ok: second launch resumed from the coordinator's last committed checkpoint (step $LAST) and completed"
