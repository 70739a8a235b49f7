#!/usr/bin/env bash
# End-to-end tests of the cnx-worker binary under mpirun -np 2 (synthetic data):
#  1. 6 steps in one run == 3 steps, exit, `--resume auto`, 3 more steps:
#     the final checkpoints are byte-identical (model, optimizer, cursors, RNG).
#  2. SIGTERM to one rank: all ranks checkpoint and exit with code 203; a
#     `--resume auto` run then completes with code 0.
#  3. Usage/config errors exit with code 2 and name the problem.
#  4. Malformed YAML structures exit 2.
#  5. --version, --token-file, readable flag errors.
#  6. optimizer.global_batch: accumulation derived from the ranks.
# Usage: worker_cli_test.sh <path to cnx-worker>
set -euo pipefail
BIN="$1"
# Same training state: every manifest entry but config.yaml (which names each run's checkpoint.root).
COMPARE="$(dirname "$0")/../../scripts/compare_checkpoints.py"
WORK="$(mktemp -d /tmp/cnx_worker_cli.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2)

cat > "$WORK/tiny.yaml" <<'YAML'
job: {id: cli-test, seed: 3}
model: {name: custom, depths: [1, 1, 1, 1], dims: [8, 16, 32, 64], decoder_dim: 32}
mask: {ratio: 0.5}
optimizer: {blr: 1.0e-2}
schedule: {epochs: 2, warmup_epochs: 0.5, log_every: 1}
data: {input_size: 64, batch_size: 2}
train: {threads: 1}
checkpoint: {every_steps: 3, keep: 2}
metrics: {enabled: false}
YAML
run() { "${MPIRUN[@]}" "$BIN" --config "$WORK/tiny.yaml" --synthetic --synthetic-samples 64 "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# 1. Bit-exact resume through the CLI.
run --set checkpoint.root="$WORK/a" --max-steps 6 --resume none > "$WORK/a.log" 2>&1 || { cat "$WORK/a.log"; fail "run a"; }
run --set checkpoint.root="$WORK/b" --max-steps 3 --resume none > "$WORK/b1.log" 2>&1 || { cat "$WORK/b1.log"; fail "run b1"; }
[ "$(cat "$WORK/b/latest")" = "step-00000003" ] || fail "b: latest is $(cat "$WORK/b/latest")"
run --set checkpoint.root="$WORK/b" --max-steps 6 --resume auto > "$WORK/b2.log" 2>&1 || { cat "$WORK/b2.log"; fail "run b2"; }
grep -q "resumed from .*step-00000003 at step 3" "$WORK/b2.log" || { cat "$WORK/b2.log"; fail "b2 did not resume"; }
"$COMPARE" "$WORK/a/step-00000006" "$WORK/b/step-00000006" || fail "resumed run differs"
echo "ok: 6 steps == 3 + resume + 3 (identical training state: every file but config.yaml)"
# The effective config (after --set) and the build version travel with every checkpoint.
CK="$WORK/a/step-00000006"
grep -q "input_size: 64" "$CK/config.yaml" || { cat "$CK/config.yaml"; fail "config.yaml lacks data.input_size"; }
grep -q "root: \"$WORK/a\"" "$CK/config.yaml" || { cat "$CK/config.yaml"; fail "config.yaml lacks the --set override"; }
grep -q "written by cnx-worker " "$CK/config.yaml" || fail "config.yaml names no build"
grep -q '"config.yaml"' "$CK/MANIFEST.json" || fail "config.yaml is not in the manifest"
grep -q '"version"' "$CK/trainer.json" || fail "trainer.json has no version"
echo "ok: checkpoints carry config.yaml (effective config) and the build version"

# 2. SIGTERM on one rank -> checkpoint on all, exit 203, then resume to the end.
"${MPIRUN[@]}" "$BIN" --config "$WORK/tiny.yaml" --synthetic --synthetic-samples 64 \
  --set checkpoint.root="$WORK/c" --set checkpoint.every_steps=0 --set schedule.epochs=400 \
  --max-steps 5000 --resume none > "$WORK/c1.log" 2>&1 &
MPI_PID=$!
for _ in $(seq 1 600); do
  grep -q "step 2/" "$WORK/c1.log" 2>/dev/null && break
  sleep 0.2
done
RANK_PID="$(pgrep -P "$MPI_PID" -f cnx-worker | tail -n 1 || true)"
[ -n "$RANK_PID" ] || { cat "$WORK/c1.log"; fail "no rank process found"; }
kill -TERM "$RANK_PID"
set +e
wait "$MPI_PID"
RC=$?
set -e
[ "$RC" = 203 ] || { cat "$WORK/c1.log"; fail "preempted run exited with $RC, expected 203"; }
grep -q "preempted (SIGTERM)" "$WORK/c1.log" || { cat "$WORK/c1.log"; fail "no preemption message"; }
LATEST="$(cat "$WORK/c/latest")"
STEP=$((10#${LATEST#step-}))
run --set checkpoint.root="$WORK/c" --set checkpoint.every_steps=0 --set schedule.epochs=400 \
  --max-steps $((STEP + 2)) --resume auto > "$WORK/c2.log" 2>&1 || { cat "$WORK/c2.log"; fail "resume after SIGTERM"; }
grep -q "resumed from .*$LATEST" "$WORK/c2.log" || { cat "$WORK/c2.log"; fail "c2 did not resume"; }
echo "ok: SIGTERM on one rank -> checkpoint $LATEST, exit 203, resume completes"

# 3. Config errors: exit 2 with the key named.
set +e
"$BIN" --config "$WORK/tiny.yaml" --set optimizer.nonsense=1 > "$WORK/e.log" 2>&1
RC=$?
set -e
[ "$RC" = 2 ] || { cat "$WORK/e.log"; fail "bad key exited with $RC"; }
grep -q "optimizer.nonsense" "$WORK/e.log" || { cat "$WORK/e.log"; fail "bad key not named"; }
set +e
"$BIN" --config "$WORK/missing.yaml" > "$WORK/e2.log" 2>&1
RC=$?
set -e
[ "$RC" = 2 ] || { cat "$WORK/e2.log"; fail "missing config exited with $RC"; }
echo "ok: config errors exit 2"

# 4. Malformed configs that yaml-cpp or the standard library reject: exit 2
#    with a message, never an abort.
printf 'model:\n  ? [a, b]\n  : atto\n' > "$WORK/complex_key.yaml"
printf 'coordinator: {listen: "host:99999999999999999999"}\n' > "$WORK/long_port.yaml"
for bad in complex_key long_port; do
  set +e
  "$BIN" --config "$WORK/$bad.yaml" > "$WORK/$bad.log" 2>&1
  RC=$?
  set -e
  [ "$RC" = 2 ] || { cat "$WORK/$bad.log"; fail "$bad.yaml exited with $RC, expected 2"; }
  grep -q "cnx-worker: .*$bad.yaml" "$WORK/$bad.log" || { cat "$WORK/$bad.log"; fail "$bad.yaml: no message naming the file"; }
done
echo "ok: malformed YAML structures exit 2"

# 5. The command-line convention (docs/operations.md): --version, --token-file
#    (the coordinator's job token; an unreadable one is a config error naming
#    the file), readable errors for bad flags.
"$BIN" --version | grep -qE '^cnx-worker [^ ]+$' || fail "--version"
set +e
"$BIN" --config "$WORK/tiny.yaml" --coordinator 127.0.0.1:1 --token-file "$WORK/no.token" > "$WORK/t.log" 2>&1
RC=$?
set -e
[ "$RC" = 2 ] || { cat "$WORK/t.log"; fail "unreadable --token-file exited with $RC, expected 2"; }
grep -q "no.token" "$WORK/t.log" || { cat "$WORK/t.log"; fail "unreadable token file not named"; }
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/job.token"
set +e
"$BIN" --config "$WORK/tiny.yaml" --coordinator 10.0.0.1:50051 --token-file "$WORK/job.token" > "$WORK/t2.log" 2>&1
RC=$?
set -e
# The token was read (no token error); plaintext to a non-loopback address is refused.
[ "$RC" = 2 ] || { cat "$WORK/t2.log"; fail "plaintext to 10.0.0.1 exited with $RC, expected 2"; }
grep -q "allow_plaintext" "$WORK/t2.log" || { cat "$WORK/t2.log"; fail "plaintext refusal not explained"; }
set +e
"$BIN" --config "$WORK/tiny.yaml" --max-steps -4 > "$WORK/t3.log" 2>&1
RC=$?
set -e
[ "$RC" = 2 ] || { cat "$WORK/t3.log"; fail "--max-steps -4 exited with $RC"; }
grep -q -- "--max-steps: '-4' must be >= 0" "$WORK/t3.log" || { cat "$WORK/t3.log"; fail "--max-steps message"; }
echo "ok: --version, --token-file, readable flag errors"

# 6. optimizer.global_batch fixes the global batch: 2 ranks x batch 2 make 8
#    with 2 accumulation steps; a batch that the ranks cannot divide is a
#    config error naming the key.
run --set checkpoint.root="$WORK/g" --set optimizer.global_batch=8 --max-steps 2 --resume none > "$WORK/g.log" 2>&1 \
  || { cat "$WORK/g.log"; fail "global_batch run"; }
grep -q "global batch 8 = 2 per rank x 2 ranks x 2 accumulation steps (optimizer.global_batch)" "$WORK/g.log" \
  || { cat "$WORK/g.log"; fail "no global batch line"; }
set +e
run --set checkpoint.root="$WORK/g2" --set optimizer.global_batch=6 --max-steps 2 --resume none > "$WORK/g2.log" 2>&1
RC=$?
set -e
[ "$RC" = 2 ] || { cat "$WORK/g2.log"; fail "global_batch 6 on 2 x 2 exited $RC, expected 2"; }
grep -q "optimizer.global_batch 6 is not a multiple of data.batch_size x ranks = 2 x 2 = 4" "$WORK/g2.log" \
  || { cat "$WORK/g2.log"; fail "global_batch error not explained"; }
echo "ok: optimizer.global_batch derives accumulation from the ranks"
