#!/usr/bin/env bash
# kill -9 during a checkpoint write (2 ranks, local checkpoints): a watcher
# polls the checkpoint root and SIGKILLs every rank the moment a temp folder
# (.tmp-step-N) appears. The torn checkpoint must not become `latest`: the
# previous checkpoint stays the latest committed one, and a relaunch with
# --resume auto loads it (sha256 of every file checked) and completes.
# A kill that lands after the rename (the window was missed) is retried.
# Usage: fault_checkpoint_write_test.sh <cnx-worker> <cnx-make-shards>
source "$(dirname "$0")/lib.sh"
WORKER="$1"
MAKE_SHARDS="$2"
e2e_init fault_ckpt_write 240

make_fmnist_shards "$MAKE_SHARDS" "$WORK/shards" 200
HIT=""
for try in 1 2 3 4; do
  ROOT="$WORK/ckpt-$try"
  mkdir -p "$ROOT"
  EVERY=5 write_config "$WORK/job.yaml" "$WORK/shards/index.json" "$ROOT" \
    "schedule: {epochs: 2, warmup_epochs: 0.5, log_every: 5}"
  e2e_bg timeout -k 5 120 "${MPIRUN[@]}" "$WORKER" --config "$WORK/job.yaml" --resume none > "$WORK/run$try.log" 2>&1
  MPI_PID="$BG_PID"
  wait_for 60 test -f "$ROOT/latest" || fail "no first checkpoint committed"
  RANKS="$(rank_pids "$MPI_PID" | tr '\n' ' ')"
  [ -n "$RANKS" ] || fail "no rank process found"
  # The first temp folder after the first commit: kill every rank at once.
  TORN="$(python3 - "$ROOT" $RANKS <<'PY'
import os, signal, sys, time
root, ranks = sys.argv[1], [int(p) for p in sys.argv[2:]]
first = open(os.path.join(root, "latest")).read().strip()
deadline = time.time() + 60
while time.time() < deadline:
    tmp = [n for n in os.listdir(root) if n.startswith(".tmp-step-")]
    if tmp:
        for p in ranks:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        print(tmp[0][len(".tmp-"):])
        sys.exit(0)
sys.exit(1)
PY
)" || fail "no checkpoint temp folder seen"
  wait_rc "$MPI_PID"
  [ "$RC" != 0 ] || fail "mpirun exited 0 after its ranks were killed"
  LATEST="$(cat "$ROOT/latest")"
  if [ -d "$ROOT/.tmp-$TORN" ] && [ "$LATEST" != "$TORN" ]; then
    HIT=1
    break
  fi
  echo "try $try: the kill landed after $TORN was committed; again"
done
[ -n "$HIT" ] || fail "never killed the ranks inside a checkpoint write in 4 tries"
[ ! -d "$ROOT/$TORN" ] || fail "torn checkpoint $TORN was renamed to its final name"
echo "ok: SIGKILL while .tmp-$TORN was being written; latest is still $LATEST"

STEP=$((10#${LATEST#step-}))
timeout -k 5 120 "${MPIRUN[@]}" "$WORKER" --config "$WORK/job.yaml" --resume auto --max-steps $((STEP + 5)) \
  > "$WORK/resume.log" 2>&1 || fail "relaunch from $LATEST failed"
grep -q "resumed from .*$LATEST at step $STEP" "$WORK/resume.log" || fail "relaunch did not resume from $LATEST"
grep -q "training completed: $((STEP + 5)) steps" "$WORK/resume.log" || fail "relaunch did not complete"
echo "ok: relaunch loaded $LATEST (the previous committed checkpoint) and trained on"
