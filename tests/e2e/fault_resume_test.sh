#!/usr/bin/env bash
# Fault tolerance of the worker job (2 ranks on loopback, Fashion-MNIST shards,
# local checkpoints), against a reference run that is never interrupted:
#  1. kill -9 one rank mid-epoch, after a committed checkpoint: the attempt
#     ends (mpirun non-zero); a relaunch with --resume auto resumes from the
#     last committed checkpoint and its final checkpoint equals the
#     reference's bit for bit (MANIFEST.json holds every file's sha256).
#     The worker writes no per-sample log; "no sample used twice within an
#     epoch" is checked on the data cursors of every checkpoint (before the
#     kill and after the resume): each rank consumes a prefix of its epoch
#     order, so delivered == consumed == batch x steps-into-the-epoch proves
#     that no sample of that rank was delivered twice in the epoch.
#  2. SIGTERM to one rank: every rank checkpoints and exits 3; the relaunch
#     resumes and its final checkpoint equals the reference's bit for bit.
# Usage: fault_resume_test.sh <cnx-worker> <cnx-make-shards>
source "$(dirname "$0")/lib.sh"
WORKER="$1"
MAKE_SHARDS="$2"
e2e_init fault_resume 280

make_fmnist_shards "$MAKE_SHARDS" "$WORK/shards" 200 # 2 ranks x batch 4: 25 steps per epoch
STEPS=50
SCHED="schedule: {epochs: 2, warmup_epochs: 0.5, log_every: 5}"
FINAL="step-000000$STEPS"
for run in ref kill term; do
  EVERY=5 write_config "$WORK/$run.yaml" "$WORK/shards/index.json" "$WORK/ckpt-$run" "$SCHED"
done
check_cursors() { # check_cursors CKPT_DIR...: the cursor arithmetic above, on every rank
  python3 - "$@" <<'PY' || fail "data cursors show re-delivered or missing samples"
import json, os, sys
STEPS_PER_EPOCH, BATCH = 25, 4
for d in sys.argv[1:]:
    step = int(os.path.basename(d)[len("step-"):])
    shards = []
    for r in (0, 1):
        outer = json.loads(json.load(open(os.path.join(d, "rank-%05d.json" % r)))["cursor"])
        if outer["pipeline"]:
            c = json.loads(outer["pipeline"])
        else:  # at an epoch start, before its first batch
            c = {"epoch": outer["epoch"], "batches": 0, "delivered": 0, "consumed": 0, "shard_ids": []}
        shards.append(set(c["shard_ids"]))
        into = step - STEPS_PER_EPOCH * c["epoch"]
        ok = 0 <= into <= STEPS_PER_EPOCH and c["batches"] == into and c["delivered"] == BATCH * into \
            and c["consumed"] == c["delivered"]
        if not ok:
            print("%s rank %d: cursor %s does not match step %d" % (d, r, c, step), file=sys.stderr)
            sys.exit(1)
    if shards[0] & shards[1]:
        print("%s: ranks 0 and 1 share shards %s in one epoch" % (d, shards[0] & shards[1]), file=sys.stderr)
        sys.exit(1)
PY
}
launch() { # launch RUN LOG [args]: background mpirun, pid in BG_PID
  local run="$1" log="$2"
  shift 2
  e2e_bg timeout -k 5 150 "${MPIRUN[@]}" "$WORKER" --config "$WORK/$run.yaml" "$@" > "$WORK/$log.log" 2>&1
}

# The uninterrupted reference.
launch ref ref --resume none
wait_rc "$BG_PID"; [ "$RC" = 0 ] || fail "reference run failed"
[ -f "$WORK/ckpt-ref/$FINAL/MANIFEST.json" ] || fail "reference has no $FINAL"
echo "ok: reference run: $STEPS steps"

# 1. kill -9 one rank mid-epoch (steps 1-25 are epoch 0) after the commit of step 10.
launch kill kill1 --resume none
MPI_PID="$BG_PID"
committed_10() { [ "$(latest_step "$WORK/ckpt-kill")" -ge 10 ]; }
wait_for 120 committed_10 || fail "no checkpoint at step >= 10 committed"
wait_for 60 grep -q "step 1[2-9]/" "$WORK/kill1.log" || fail "run did not pass step 12"
VICTIM="$(rank_pids "$MPI_PID" | tail -n 1)"
[ -n "$VICTIM" ] || fail "no rank process found"
kill -KILL "$VICTIM"
wait_rc "$MPI_PID"
[ "$RC" != 0 ] || fail "mpirun exited 0 after a rank was killed"
[ "$RC" != 124 ] || fail "mpirun hung after a rank was killed"
LAST="$(latest_step "$WORK/ckpt-kill")"
[ "$LAST" -lt "$STEPS" ] || fail "killed run reached the end"
check_cursors "$WORK/ckpt-kill"/step-*
echo "ok: kill -9 of one rank ended the attempt (mpirun exit $RC); last committed checkpoint: step $LAST"
launch kill kill2 --resume auto
wait_rc "$BG_PID"; [ "$RC" = 0 ] || fail "relaunch after kill -9 failed"
grep -q "resumed from .*step-0*$LAST at step $LAST" "$WORK/kill2.log" || fail "relaunch did not resume from step $LAST"
cmp "$WORK/ckpt-ref/$FINAL/MANIFEST.json" "$WORK/ckpt-kill/$FINAL/MANIFEST.json" \
  || fail "kill -9 + resume: final checkpoint differs from the reference"
cmp "$WORK/ckpt-ref/$FINAL/model.pt" "$WORK/ckpt-kill/$FINAL/model.pt" || fail "model.pt differs"
check_cursors "$WORK/ckpt-kill"/step-*
echo "ok: data cursors: each rank consumed its own shards once per epoch (delivered == consumed == 4 x steps, disjoint shard sets)"
echo "ok: relaunch resumed from step $LAST; final checkpoint identical to the uninterrupted run"

# 2. SIGTERM to one rank mid-epoch: all ranks checkpoint, exit 3; resume completes identically.
launch term term1 --resume none
MPI_PID="$BG_PID"
wait_for 120 grep -q "step 1[0-9]/" "$WORK/term1.log" || fail "run did not reach step 10"
VICTIM="$(rank_pids "$MPI_PID" | tail -n 1)"
[ -n "$VICTIM" ] || fail "no rank process found"
kill -TERM "$VICTIM"
wait_rc "$MPI_PID"
[ "$RC" = 3 ] || fail "SIGTERM run exited $RC, expected 3"
grep -q "preempted (SIGTERM)" "$WORK/term1.log" || fail "no preemption message"
LAST="$(latest_step "$WORK/ckpt-term")"
[ "$LAST" -ge 10 ] && [ "$LAST" -lt "$STEPS" ] || fail "preemption checkpoint at step $LAST"
[ -f "$WORK/ckpt-term/$(cat "$WORK/ckpt-term/latest")/rank-00001.json" ] || fail "preemption checkpoint lacks rank 1's part"
launch term term2 --resume auto
wait_rc "$BG_PID"; [ "$RC" = 0 ] || fail "relaunch after SIGTERM failed"
grep -q "resumed from .*step-0*$LAST at step $LAST" "$WORK/term2.log" || fail "relaunch did not resume from step $LAST"
cmp "$WORK/ckpt-ref/$FINAL/MANIFEST.json" "$WORK/ckpt-term/$FINAL/MANIFEST.json" \
  || fail "SIGTERM + resume: final checkpoint differs from the reference"
echo "ok: SIGTERM -> checkpoint at step $LAST on all ranks, exit 3; resume identical to the uninterrupted run"
