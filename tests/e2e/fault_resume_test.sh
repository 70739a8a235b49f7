#!/usr/bin/env bash
# Fault tolerance of the worker job (2 ranks on loopback, Fashion-MNIST shards,
# local checkpoints), against a reference run that is never interrupted:
#  1. kill -9 one rank mid-epoch, after a committed checkpoint: the attempt
#     ends (mpirun non-zero); a relaunch with --resume auto resumes from the
#     last committed checkpoint and its final checkpoint equals the
#     reference's bit for bit (MANIFEST.json holds every file's sha256).
#  2. SIGTERM to one rank: every rank checkpoints and exits 203; the relaunch
#     resumes and its final checkpoint equals the reference's bit for bit.
# Every run keeps the per-sample log (train.sample_log: per rank, one line
# "step<TAB>epoch<TAB>key" per sample trained on, flushed each step; a
# resumed attempt appends). The lines that count are those of the first
# attempt up to the step of the checkpoint the relaunch loaded (later steps
# were redone) plus every line of the relaunch. check_samples asserts on them:
#  (a) no (epoch, key) appears twice, over both ranks: no sample was used
#      twice within an epoch;
#  (b) there are steps x global batch of them, and each epoch used all of
#      its samples;
#  (c) per step, they are the reference run's lines (as a multiset): the
#      resumed job trained on exactly the samples of the uninterrupted one.
# It also checks that the relaunch appended to (did not rewrite) the logs.
# Usage: fault_resume_test.sh <cnx-worker> <cnx-make-shards>
source "$(dirname "$0")/lib.sh"
WORKER="$1"
MAKE_SHARDS="$2"
e2e_init fault_resume 280

make_fmnist_shards "$MAKE_SHARDS" "$WORK/shards" 200 # 2 ranks x batch 4: 25 steps per epoch
STEPS=50
# A slower model (lib.sh): the kill -9 below must land between two commits.
export E2E_INPUT_SIZE=128 E2E_DIMS="[32, 64, 128, 256]"
SCHED="schedule: {epochs: 2, warmup_epochs: 0.5, log_every: 5}"
FINAL="step-000000$STEPS"
for run in ref kill term; do
  EVERY=5 write_config "$WORK/$run.yaml" "$WORK/shards/index.json" "$WORK/ckpt-$run" "$SCHED"
done
# check_samples NAME RUN_DIR FIRST_ATTEMPT_DIR LAST REF_DIR: the checks (a)-(c)
# above. FIRST_ATTEMPT_DIR is a copy of RUN_DIR taken when the first attempt
# ended ("" for an uninterrupted run); LAST is the step its relaunch resumed
# from; REF_DIR "" skips (c).
check_samples() {
  python3 - "$@" <<'PY' || fail "$1: the sample log shows a sample used twice, missing, or not the reference's"
import collections, os, sys
name, run, first, last, ref = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
STEPS, GLOBAL_BATCH, EPOCH_SAMPLES, RANKS = 50, 8, 200, 2

def die(msg):
    print("%s: %s" % (name, msg), file=sys.stderr)
    sys.exit(1)

def parse(text, origin, partial_tail_ok=False):
    lines = text.split("\n")
    tail = lines.pop()  # "" when the text ends with a newline
    if tail and not partial_tail_ok:
        die("%s: unterminated last line %r" % (origin, tail))
    out = []
    for i, line in enumerate(lines):
        f = line.split("\t")
        if len(f) != 3 or not f[0].isdigit() or not f[1].isdigit() or not f[2]:
            die("%s:%d: not 'step<TAB>epoch<TAB>key': %r" % (origin, i + 1, line))
        out.append((int(f[0]), int(f[1]), f[2]))
    return out

def effective(run, first, last):
    lines = []
    for r in range(RANKS):
        path = os.path.join(run, "samples-rank%d.tsv" % r)
        if not os.path.exists(path):
            die("no sample log %s" % path)
        text = open(path).read()
        if first:
            before = open(os.path.join(first, "samples-rank%d.tsv" % r)).read()
            if not text.startswith(before):
                die("%s: the relaunch rewrote the first attempt's lines instead of appending" % path)
            rest = text[len(before):]
            if before and not before.endswith("\n"):  # a line cut by kill -9, ended by the relaunch
                rest = rest[1:] if rest.startswith("\n") else die("%s: cut line not ended" % path)
            old = [l for l in parse(before, path + " (first attempt)", True) if l[0] <= last]
            new = parse(rest, path + " (relaunch)")
            if [s for s, _, _ in old] != sorted(s for s, _, _ in old) or sorted({s for s, _, _ in old}) != list(range(1, last + 1)):
                die("%s: first attempt's steps up to %d are not 1..%d in order" % (path, last, last))
            if not new or new[0][0] != last + 1 or [s for s, _, _ in new] != sorted(s for s, _, _ in new):
                die("%s: the relaunch does not log steps %d.. in order" % (path, last + 1))
            lines += [(r,) + l for l in old + new]
        else:
            lines += [(r,) + l for l in parse(text, path)]
    return lines

mine = effective(run, first, last)
# (a) each (epoch, key) once over both ranks.
seen = {}
for r, step, epoch, key in mine:
    if (epoch, key) in seen:
        die("sample %s used twice in epoch %d: rank %d step %d and rank %d step %d"
            % (key, epoch, seen[(epoch, key)][0], seen[(epoch, key)][1], r, step))
    seen[(epoch, key)] = (r, step)
# (b) steps x global batch, every step full, every epoch complete.
if len(mine) != STEPS * GLOBAL_BATCH:
    die("%d sample lines, expected %d steps x %d" % (len(mine), STEPS, GLOBAL_BATCH))
per_step = collections.Counter(step for _, step, _, _ in mine)
if sorted(per_step) != list(range(1, STEPS + 1)) or set(per_step.values()) != {GLOBAL_BATCH}:
    die("steps are not 1..%d with %d samples each: %s" % (STEPS, GLOBAL_BATCH, dict(per_step)))
per_epoch = collections.Counter(epoch for _, _, epoch, _ in mine)
if set(per_epoch.values()) != {EPOCH_SAMPLES}:
    die("samples per epoch %s, expected %d in each" % (dict(per_epoch), EPOCH_SAMPLES))
# (c) the reference's samples at every step.
if ref:
    def by_step(lines):
        d = collections.defaultdict(collections.Counter)
        for _, step, epoch, key in lines:
            d[step][(epoch, key)] += 1
        return d
    a, b = by_step(mine), by_step(effective(ref, "", 0))
    for step in range(1, STEPS + 1):
        if a[step] != b[step]:
            die("step %d trained on %s, the reference on %s" % (step, sorted(a[step]), sorted(b[step])))
PY
}
launch() { # launch RUN LOG [args]: background mpirun, pid in BG_PID
  local run="$1" log="$2"
  shift 2
  e2e_bg timeout -k 5 150 "${MPIRUN[@]}" "$WORKER" --config "$WORK/$run.yaml" \
    --set "train.sample_log=$WORK/samples-$run" "$@" > "$WORK/$log.log" 2>&1
}

# The uninterrupted reference.
launch ref ref --resume none
wait_rc "$BG_PID"; [ "$RC" = 0 ] || fail "reference run failed"
[ -f "$WORK/ckpt-ref/$FINAL/MANIFEST.json" ] || fail "reference has no $FINAL"
check_samples ref "$WORK/samples-ref" "" 0 ""
echo "ok: reference run: $STEPS steps; its sample log holds each sample once per epoch"

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
cp -r "$WORK/samples-kill" "$WORK/samples-kill-first"
echo "ok: kill -9 of one rank ended the attempt (mpirun exit $RC); last committed checkpoint: step $LAST"
launch kill kill2 --resume auto
wait_rc "$BG_PID"; [ "$RC" = 0 ] || fail "relaunch after kill -9 failed"
grep -q "resumed from .*step-0*$LAST at step $LAST" "$WORK/kill2.log" || fail "relaunch did not resume from step $LAST"
"$(dirname "$0")/../../scripts/compare_checkpoints.py" "$WORK/ckpt-ref/$FINAL" "$WORK/ckpt-kill/$FINAL" \
  || fail "kill -9 + resume: final checkpoint differs from the reference"
cmp "$WORK/ckpt-ref/$FINAL/model.pt" "$WORK/ckpt-kill/$FINAL/model.pt" || fail "model.pt differs"
check_samples kill "$WORK/samples-kill" "$WORK/samples-kill-first" "$LAST" "$WORK/samples-ref"
echo "ok: sample log (first attempt to step $LAST + relaunch): no sample used twice in an epoch, $STEPS x 8 samples, the reference's at every step"
echo "ok: relaunch resumed from step $LAST; final checkpoint identical to the uninterrupted run"

# 2. SIGTERM to one rank mid-epoch: all ranks checkpoint, exit 203; resume completes identically.
launch term term1 --resume none
MPI_PID="$BG_PID"
wait_for 120 grep -q "step 1[0-9]/" "$WORK/term1.log" || fail "run did not reach step 10"
VICTIM="$(rank_pids "$MPI_PID" | tail -n 1)"
[ -n "$VICTIM" ] || fail "no rank process found"
kill -TERM "$VICTIM"
wait_rc "$MPI_PID"
[ "$RC" = 203 ] || fail "SIGTERM run exited $RC, expected 203"
grep -q "preempted (SIGTERM)" "$WORK/term1.log" || fail "no preemption message"
LAST="$(latest_step "$WORK/ckpt-term")"
[ "$LAST" -ge 10 ] && [ "$LAST" -lt "$STEPS" ] || fail "preemption checkpoint at step $LAST"
[ -f "$WORK/ckpt-term/$(cat "$WORK/ckpt-term/latest")/rank-00001.json" ] || fail "preemption checkpoint lacks rank 1's part"
cp -r "$WORK/samples-term" "$WORK/samples-term-first"
launch term term2 --resume auto
wait_rc "$BG_PID"; [ "$RC" = 0 ] || fail "relaunch after SIGTERM failed"
grep -q "resumed from .*step-0*$LAST at step $LAST" "$WORK/term2.log" || fail "relaunch did not resume from step $LAST"
"$(dirname "$0")/../../scripts/compare_checkpoints.py" "$WORK/ckpt-ref/$FINAL" "$WORK/ckpt-term/$FINAL" \
  || fail "SIGTERM + resume: final checkpoint differs from the reference"
check_samples term "$WORK/samples-term" "$WORK/samples-term-first" "$LAST" "$WORK/samples-ref"
echo "ok: SIGTERM -> checkpoint at step $LAST on all ranks, exit 203; resume identical to the uninterrupted run"
