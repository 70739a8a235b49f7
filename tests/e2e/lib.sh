#!/usr/bin/env bash
# Shared helpers of the fault-tolerance tests (sourced, not run).
#
# e2e_init NAME LIMIT_S: a temp folder $WORK, an EXIT trap that kills every
# process started through e2e_bg (and its descendants, resuming stopped ones
# first) and removes $WORK (KEEP=1 keeps it), and a watchdog that ends the
# script after LIMIT_S seconds so that a hang fails instead of blocking ctest.
set -euo pipefail

E2E_PIDS=()
E2E_WATCHDOG=""
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2)

# All descendants of a pid, deepest first.
e2e_descendants() {
  local c
  for c in $(pgrep -P "$1" 2>/dev/null || true); do
    e2e_descendants "$c"
    echo "$c"
  done
}

e2e_kill_tree() {
  local pid="$1" p
  local tree
  tree="$(e2e_descendants "$pid") $pid"
  for p in $tree; do kill -CONT "$p" 2>/dev/null || true; done
  for p in $tree; do kill -KILL "$p" 2>/dev/null || true; done
  wait "$pid" 2>/dev/null || true
}

e2e_cleanup() {
  local rc=$?
  local p
  for p in "${E2E_PIDS[@]}"; do e2e_kill_tree "$p"; done
  if [ -n "$E2E_WATCHDOG" ]; then e2e_kill_tree "$E2E_WATCHDOG"; fi
  if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
  exit "$rc"
}

e2e_init() {
  WORK="$(mktemp -d "/tmp/cnx_$1.XXXXXX")"
  trap e2e_cleanup EXIT
  trap "echo 'FAIL: $1 interrupted or over its $2 s limit' >&2; exit 1" TERM INT
  local me=$$
  (sleep "$2" && kill -TERM "$me") > /dev/null 2>&1 &
  E2E_WATCHDOG=$!
}

# Runs "$@" in the background, tracked for cleanup; its pid is in $BG_PID.
e2e_bg() {
  "$@" &
  BG_PID=$!
  E2E_PIDS+=("$BG_PID")
}

fail() {
  echo "FAIL: $*" >&2
  local f
  for f in "$WORK"/*.log; do
    [ -f "$f" ] || continue
    echo "== $f" >&2
    tail -n 30 "$f" >&2
  done
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s; 1 when it never succeeded.
wait_for() {
  local n=$(($1 * 10))
  shift
  local i
  for ((i = 0; i < n; i++)); do
    if "$@" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# The cnx-worker rank processes under a pid (e.g. `timeout mpirun ...`).
rank_pids() {
  local p
  for p in $(e2e_descendants "$1"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = cnx-worker ] && echo "$p"
  done
  return 0
}

# Waits for a background pid; its exit status goes to $RC (no `set -e` abort).
wait_rc() {
  RC=0
  wait "$1" || RC=$?
}

# Fashion-MNIST shards: make_fmnist_shards MAKE_SHARDS OUT_DIR [LIMIT].
make_fmnist_shards() {
  "$1" --source fashion-mnist --split train --limit "${3:-400}" --samples-per-shard 50 -o "$2" -q \
    > "$WORK/make_shards.log" 2>&1 || fail "cnx-make-shards failed"
  [ -f "$2/index.json" ] || fail "no index.json in $2"
}

# A tiny FCMAE job config on shards: write_config FILE INDEX CKPT_ROOT [extra YAML lines].
# E2E_INPUT_SIZE / E2E_DIMS: a slower model for tests that must act between
# two steps (the default one runs a step in a few ms).
write_config() {
  local file="$1" index="$2" root="$3"
  shift 3
  {
    cat <<YAML
job: {id: fault-test, seed: 5}
model: {name: custom, depths: [1, 1, 1, 1], dims: ${E2E_DIMS:-[8, 16, 32, 64]}, decoder_dim: 32}
mask: {ratio: 0.6}
optimizer: {blr: 1.0e-2}
data: {index: $index, input_size: ${E2E_INPUT_SIZE:-64}, batch_size: 4}
train: {threads: 1}
metrics: {enabled: false}
YAML
    printf '%s\n' "$@"
    echo "checkpoint: {root: $root, keep: 3, every_steps: ${EVERY:-10}}"
  } > "$file"
}

latest_step() {
  local l
  l="$(cat "$1/latest" 2>/dev/null)" || { echo 0; return; }
  echo $((10#${l#step-}))
}

# --- Jobs against a cnx-coordinator (fault_*, cluster_test) -----------------

# coordinator_test_init NAME LIMIT_S WORKER COORD MAKE_SHARDS: e2e_init NAME
# LIMIT_S; the programs in $WORKER, $COORD and $MAKE_SHARDS; 200 Fashion-MNIST
# images in $WORK/shards (4 shards x 50: with 2 ranks x batch 4, 25 steps an
# epoch) and a job token in $WORK/token.
coordinator_test_init() {
  e2e_init "$1" "$2"
  WORKER="$3"
  COORD="$4"
  MAKE_SHARDS="$5"
  make_fmnist_shards "$MAKE_SHARDS" "$WORK/shards" 200
  echo "fault-test-coordinator-token-0123456789" > "$WORK/token"
}

# coordinator_up CONFIG LOG WHAT [WRAPPER...]: $COORD --config CONFIG in the
# background (run through WRAPPER, e.g. `cluster_exec CL 0`), output to LOG;
# fails naming WHAT unless it is listening within 30 s.
coordinator_up() {
  local config="$1" log="$2" what="$3"
  shift 3
  e2e_bg "$@" "$COORD" --config "$config" > "$log" 2>&1
  wait_for 30 grep -q "listening" "$log" || fail "$what did not start"
}

# coordinator_job JOB [HEARTBEAT_TIMEOUT_S (60)]: $WORK/JOB.yaml, a $STEPS-step
# job on $WORK/shards with checkpoints every 10 steps into $WORK/ckpt-JOB, and
# its own coordinator on a free loopback port ($PORT_<JOB>; state
# $WORK/JOB.sqlite, token $WORK/token, log $WORK/coordinator-JOB.log).
coordinator_job() {
  local port
  port="$(free_port)"
  EVERY=10 write_config "$WORK/$1.yaml" "$WORK/shards/index.json" "$WORK/ckpt-$1" \
    "schedule: {epochs: 3, warmup_epochs: 0.5, log_every: 10, max_steps: $STEPS}" \
    "coordinator: {listen: \"127.0.0.1:$port\", token_file: $WORK/token, state_db: $WORK/$1.sqlite,
              heartbeat_s: 0.2, heartbeat_timeout_s: ${2:-60}, stall_s: 120}"
  coordinator_up "$WORK/$1.yaml" "$WORK/coordinator-$1.log" "coordinator of $1"
  eval "PORT_$1=$port"
}

# launch_workers JOB LOG NP [worker args...]: NP $WORKER ranks of a
# coordinator_job under mpirun in the background (150 s limit), output to
# $WORK/LOG.log; the pid in MPI_PID.
launch_workers() {
  local job="$1" log="$2" np="$3" port
  shift 3
  port="$(eval echo "\$PORT_$job")"
  e2e_bg timeout -k 5 150 mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np" "$WORKER" \
    --config "$WORK/$job.yaml" --coordinator "127.0.0.1:$port" "$@" > "$WORK/$log.log" 2>&1
  MPI_PID="$BG_PID"
}

# last_commit LOG: the step of the last checkpoint committed in a worker log
# ("plan N (step S) committed"); status 1 when there is none.
last_commit() {
  grep -Eo 'plan [0-9]+ \(step [0-9]+\) committed' "$1" 2>/dev/null | tail -n 1 | grep -Eo 'step [0-9]+' |
    grep -Eo '[0-9]+'
}

# wait_commit LOG MIN [SECONDS (150)]: until $WORK/LOG.log shows a checkpoint
# at step >= MIN committed (its step in LAST_COMMIT); 1 when $MPI_PID ends or
# the time runs out first.
wait_commit() {
  local i s
  for ((i = 0; i < ${3:-150} * 10; i++)); do
    s="$(last_commit "$WORK/$1.log" || true)"
    if [ -n "$s" ] && [ "$s" -ge "$2" ]; then
      LAST_COMMIT="$s"
      return 0
    fi
    # (Ended: one more look, for a commit logged just before the end.)
    kill -0 "$MPI_PID" 2>/dev/null || { s="$(last_commit "$WORK/$1.log" || true)"; break; }
    sleep 0.1
  done
  [ -n "$s" ] && [ "$s" -ge "$2" ] && LAST_COMMIT="$s"
}

# kill_rank LOG PID: kill -9 PID, a rank of the job $MPI_PID that logs to
# $WORK/LOG.log (KILLED_AT: when); the job must then end with a non-zero exit
# (in RC); LAST_COMMIT: the step of the last commit in LOG.
kill_rank() {
  kill -KILL "$2"
  KILLED_AT=$(date +%s)
  wait_rc "$MPI_PID"
  [ "$RC" != 0 ] || fail "$1: the job ended with exit 0 after a rank (pid $2) was killed"
  LAST_COMMIT="$(last_commit "$WORK/$1.log")" || fail "$1: no commit logged"
}

# kill_speaker LOG COORD_LOG LOST PID...: kill_rank LOG on the host speaker
# (local rank 0) among the ranks PID... (its pid in SPEAKER); the coordinator
# (log COORD_LOG) must then fail attempt 1 within 30 s for a lost rank
# matching LOST (a bracket expression such as [01]).
kill_speaker() {
  local log="$1" clog="$2" lost="$3"
  shift 3
  SPEAKER="$(local_rank_pid 0 "$@")"
  [ -n "$SPEAKER" ] || fail "$log: no speaker (local rank 0) among the ranks '$*'"
  kill_rank "$log" "$SPEAKER"
  echo "ok: $log: speaker (local rank 0, pid $SPEAKER) killed after the commit at step $LAST_COMMIT: the job ended (exit $RC)"
  wait_for 30 grep -q "attempt 1: running -> restarting (rank $lost lost" "$clog" ||
    fail "$log: the coordinator did not fail the attempt when the speaker's host stopped its heartbeats"
  echo "ok: coordinator: $(grep -o 'attempt 1: running -> restarting ([^;)]*' "$clog" | head -n 1)) after $(($(date +%s) - KILLED_AT)) s"
}

# local_rank_pid LOCAL_RANK PID...: the one of PID... whose environment has
# OMPI_COMM_WORLD_LOCAL_RANK=LOCAL_RANK (the last one, if several); empty if none.
local_rank_pid() {
  local lr="$1" p found=""
  shift
  for p in "$@"; do
    tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_LOCAL_RANK=$lr" && found="$p"
  done
  echo "$found"
}

final_dir() { # final_dir JOB: JOB's committed checkpoint at step $STEPS
  ls -d "$WORK/ckpt-$1"/fault-test/ckpt-*-step-$(printf '%09d' "$STEPS") 2>/dev/null | tail -n 1
}
digest() { # digest DIR FILE: the sha256 the manifest lists
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]+"/MANIFEST.json"))["files"][sys.argv[2]]["sha256"])' "$1" "$2"
}
# same_final A B WHAT: the final checkpoints of jobs A and B (final_dir) hold
# the same model, optimizer and trainer state, byte for byte.
same_final() {
  local a b f
  a="$(final_dir "$1")"
  b="$(final_dir "$2")"
  [ -n "$a" ] || fail "$3: $1 has no final checkpoint at step $STEPS"
  [ -n "$b" ] || fail "$3: $2 has no final checkpoint at step $STEPS"
  for f in model.pt optimizer.pt trainer.json; do
    [ "$(digest "$a" $f)" = "$(digest "$b" $f)" ] || fail "$3: $f differs between $1 and $2"
  done
  echo "ok: $3: final model, optimizer and trainer state bit-identical ($1 = $2, step $STEPS)"
}

# no_sample_twice FIRST FINAL COMMIT "FIRST_RANKS" "LATER_RANKS" WHO: the
# per-rank sample logs (train.sample_log) of an interrupted attempt (FIRST, a
# copy taken before the relaunch) and of the same folder after the relaunch
# (FINAL): what FIRST_RANKS used up to the committed step COMMIT plus what
# LATER_RANKS (WHO) logged after that copy use no sample twice within an
# epoch, and WHO logged some.
no_sample_twice() {
  python3 - "$@" <<'PY' || fail "the sample logs: a sample used twice within an epoch, or none by the $6"
import os, sys
first, final, commit, who = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[6]
first_ranks, later_ranks = [int(r) for r in sys.argv[4].split()], [int(r) for r in sys.argv[5].split()]
def lines(path):
    with open(path) as f:
        return [l.rstrip("\n").split("\t") for l in f if l.count("\t") == 2 and l.endswith("\n")]
used, later = [], []
for r in first_ranks:
    used += [(e, k) for s, e, k in lines(os.path.join(first, "samples-rank%d.tsv" % r)) if int(s) <= commit]
for r in later_ranks:
    before = len(lines(os.path.join(first, "samples-rank%d.tsv" % r)))
    later += lines(os.path.join(final, "samples-rank%d.tsv" % r))[before:]
assert later, "the %s logged no samples" % who
used += [(e, k) for s, e, k in later]
dup = len(used) - len(set(used))
assert dup == 0, "%d samples used twice within an epoch" % dup
print("ok: sample logs: %d samples up to the commit at step %d + %d by the %s, none twice in an epoch"
      % (len(used) - len(later), commit, len(later), who))
PY
}
