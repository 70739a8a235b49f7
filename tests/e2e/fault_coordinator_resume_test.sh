#!/usr/bin/env bash
# Coordinator mode (shard leases) across attempts, 2 ranks on loopback,
# Fashion-MNIST shards, each job against its own cnx-coordinator:
#  1. reference: 2 ranks train to the end; the final checkpoint (planned by
#     the coordinator at the last step) holds the final state.
#  2. kill -9 one rank after a committed checkpoint, mid-epoch: the attempt
#     ends; a relaunch (new attempt) gets the unused tails of its leases first
#     and must end with model.pt, optimizer.pt and trainer.json byte-identical
#     to the reference's final checkpoint.
#  3. the same kill, relaunched with 1 rank: the coordinator re-deals the
#     epoch's unused samples to the new world size; training completes, and
#     the per-rank sample logs (train.sample_log) show no sample used twice
#     within an epoch (the first attempt up to its committed step, plus all
#     of the second).
#  4. the same with optimizer.global_batch = 8 (2 ranks x 4): the 1-rank
#     relaunch accumulates 2 micro-batches, keeps the global batch, peak lr
#     and step count (no rescale) and completes.
# Usage: fault_coordinator_resume_test.sh <cnx-worker> <cnx-coordinator> <cnx-make-shards>
source "$(dirname "$0")/lib.sh"
coordinator_test_init fault_coord_resume 400 "$@"
STEPS=60
# 224 px and 4x wider stages than lib.sh's model: with steps of a few ms the
# whole job finished before the coordinator's first plan (it plans on
# heartbeats, every 0.2 s) or between a commit and the kill -9 that
# kill_after_commit aims right after it. Steps of tens of ms leave a plan
# every few steps and most of the job after the first commit.
export E2E_INPUT_SIZE=224 E2E_DIMS="[32, 64, 128, 256]"

kill_after_commit() { # kill_after_commit LOG: kill -9 one rank once a checkpoint is committed (step >= 10)
  wait_commit "$1" 10 120 || fail "no checkpoint at step >= 10 committed in $1"
  local victim
  victim="$(rank_pids "$MPI_PID" | tail -n 1)"
  [ -n "$victim" ] || fail "no rank process to kill in $1"
  kill_rank "$1" "$victim"
  KILLED_STEP="$(grep -o 'step [0-9]*/' "$WORK/$1.log" | tail -n 1 | grep -o '[0-9]*')"
  echo "ok: $1: rank killed (exit $RC) after the commit at step $LAST_COMMIT (last progress line: step ${KILLED_STEP:-?})"
}

kill_and_relaunch() { # kill_and_relaunch JOB NP [args...]: 2 ranks killed after a commit, relaunched with NP
  local job="$1" np="$2"
  shift 2
  launch_workers "$job" "${job}1" 2 --resume auto "$@"
  kill_after_commit "${job}1"
  if [ -d "$WORK/samples-$job" ]; then cp -r "$WORK/samples-$job" "$WORK/samples-$job-attempt1"; fi
  launch_workers "$job" "${job}2" "$np" --resume auto "$@"
  wait_rc "$MPI_PID"
  [ "$RC" = 0 ] || fail "$job: relaunch with $np rank(s) exited $RC"
}

coordinator_job ref
coordinator_job kill
coordinator_job resize
coordinator_job gb

launch_workers ref ref 2 --resume auto
wait_rc "$MPI_PID"
[ "$RC" = 0 ] || fail "reference run exited $RC"
REF="$(final_dir ref)"
[ -n "$REF" ] || fail "no final checkpoint at step $STEPS in the reference run"
grep -q "training completed: $STEPS steps" "$WORK/ref.log" || fail "reference run did not complete"
echo "ok: reference run completed; final checkpoint $(basename "$REF") committed at the last step"

# 2. kill -9 and relaunch with the same world size: bit-exact.
kill_and_relaunch kill 2
grep -q "resumed from .* at step $LAST_COMMIT " "$WORK/kill2.log" || fail "relaunch did not resume from step $LAST_COMMIT"
same_final ref kill "kill -9 + relaunch (resumed from step $LAST_COMMIT) vs the uninterrupted run"

# 3. kill -9 and relaunch with 1 rank: the epoch's unused samples are re-dealt.
# The 1-rank relaunch rescales the step to its halved global batch (a commit
# at step S resumes at 2S): --max-steps 150 (3 epochs of 1 x batch 4) leaves
# it steps to take wherever the first attempt was killed.
kill_and_relaunch resize 1 --set train.sample_log="$WORK/samples-resize" --max-steps 150
grep -q "written by 2 ranks" "$WORK/resize2.log" || fail "the 1-rank relaunch did not report the world-size change"
grep -q "training completed" "$WORK/resize2.log" || fail "the 1-rank relaunch did not complete"
# The coordinator's own accounting: every lease handed out was reported done
# once (shards_done counts completions; a lease handed out twice in an
# attempt would be refused by the scheduler), samples left unused are counted.
python3 - "$WORK/resize.sqlite" <<'PY' || fail "coordinator accounting after the world-size change is wrong"
import json, sqlite3, sys
rows = dict(sqlite3.connect(sys.argv[1]).execute("select key, value from state"))
job = json.loads(rows["job"])
assert job["world"] == 1 and job["attempt"] == 2, job
assert job["state"] == 5, ("job not completed", job)
assert 0 <= job["unused"] < 200, job
print("ok: coordinator: attempt 2 with world size 1 completed; %d shard leases done, %d samples left unused" %
      (job["done"], job["unused"]))
PY
# The sample logs (train.sample_log): what the first attempt used up to the
# committed step plus everything the 1-rank attempt used: no sample twice in
# an epoch.
no_sample_twice "$WORK/samples-resize-attempt1" "$WORK/samples-resize" "$LAST_COMMIT" "0 1" "0" "1-rank attempt"

# 4. optimizer.global_batch: the 1-rank relaunch keeps the recipe.
kill_and_relaunch gb 1 --set optimizer.global_batch=8
grep -q "resumed from .* at step $LAST_COMMIT " "$WORK/gb2.log" ||
  fail "the 1-rank relaunch with a fixed global batch did not resume at step $LAST_COMMIT (no rescale)"
grep -q "global batch 8 = 4 per rank x 1 ranks x 2 accumulation steps (optimizer.global_batch)" "$WORK/gb2.log" ||
  fail "the 1-rank relaunch did not derive 2 accumulation steps"
grep -q "same global batch 8" "$WORK/gb2.log" || fail "the 1-rank relaunch did not say it keeps the global batch"
grep -q "training completed: $STEPS steps" "$WORK/gb2.log" || fail "the 1-rank relaunch did not complete"
echo "ok: optimizer.global_batch: 1-rank relaunch resumed at step $LAST_COMMIT with 2 accumulation steps (global batch 8 kept)"
