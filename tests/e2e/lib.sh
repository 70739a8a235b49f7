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
