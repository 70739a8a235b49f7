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
# expect_rc CODE LOG WHAT CMD...: CMD, its output in LOG, must exit with CODE
# (else LOG is shown and the test fails naming WHAT).
expect_rc() {
  local code="$1" log="$2" what="$3" rc=0
  shift 3
  "$@" > "$log" 2>&1 || rc=$?
  [ "$rc" = "$code" ] || { cat "$log"; fail "$what exited with $rc, expected $code"; }
}
# expect_log LOG PATTERN WHAT: LOG has a line matching PATTERN (grep), else it
# is shown and the test fails with WHAT.
expect_log() { grep -q -- "$2" "$1" || { cat "$1"; fail "$3"; }; }

# 1. Bit-exact resume through the CLI.
expect_rc 0 "$WORK/a.log" "run a" run --set checkpoint.root="$WORK/a" --max-steps 6 --resume none
expect_rc 0 "$WORK/b1.log" "run b1" run --set checkpoint.root="$WORK/b" --max-steps 3 --resume none
[ "$(cat "$WORK/b/latest")" = "step-00000003" ] || fail "b: latest is $(cat "$WORK/b/latest")"
expect_rc 0 "$WORK/b2.log" "run b2" run --set checkpoint.root="$WORK/b" --max-steps 6 --resume auto
expect_log "$WORK/b2.log" "resumed from .*step-00000003 at step 3" "b2 did not resume"
"$COMPARE" "$WORK/a/step-00000006" "$WORK/b/step-00000006" || fail "resumed run differs"
echo "ok: 6 steps == 3 + resume + 3 (identical training state: every file but config.yaml)"
# The effective config (after --set) and the build version travel with every checkpoint.
CK="$WORK/a/step-00000006"
expect_log "$CK/config.yaml" "input_size: 64" "config.yaml lacks data.input_size"
expect_log "$CK/config.yaml" "root: \"$WORK/a\"" "config.yaml lacks the --set override"
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
RC=0
wait "$MPI_PID" || RC=$?
[ "$RC" = 203 ] || { cat "$WORK/c1.log"; fail "preempted run exited with $RC, expected 203"; }
expect_log "$WORK/c1.log" "preempted (SIGTERM)" "no preemption message"
LATEST="$(cat "$WORK/c/latest")"
STEP=$((10#${LATEST#step-}))
expect_rc 0 "$WORK/c2.log" "resume after SIGTERM" run --set checkpoint.root="$WORK/c" --set checkpoint.every_steps=0 \
  --set schedule.epochs=400 --max-steps $((STEP + 2)) --resume auto
expect_log "$WORK/c2.log" "resumed from .*$LATEST" "c2 did not resume"
echo "ok: SIGTERM on one rank -> checkpoint $LATEST, exit 203, resume completes"

# 3. Config errors: exit 2 with the key named.
expect_rc 2 "$WORK/e.log" "bad key" "$BIN" --config "$WORK/tiny.yaml" --set optimizer.nonsense=1
expect_log "$WORK/e.log" "optimizer.nonsense" "bad key not named"
expect_rc 2 "$WORK/e2.log" "missing config" "$BIN" --config "$WORK/missing.yaml"
echo "ok: config errors exit 2"

# 4. Malformed configs that yaml-cpp or the standard library reject: exit 2
#    with a message, never an abort.
printf 'model:\n  ? [a, b]\n  : atto\n' > "$WORK/complex_key.yaml"
printf 'coordinator: {listen: "host:99999999999999999999"}\n' > "$WORK/long_port.yaml"
for bad in complex_key long_port; do
  expect_rc 2 "$WORK/$bad.log" "$bad.yaml" "$BIN" --config "$WORK/$bad.yaml"
  expect_log "$WORK/$bad.log" "cnx-worker: .*$bad.yaml" "$bad.yaml: no message naming the file"
done
echo "ok: malformed YAML structures exit 2"

# 5. The command-line convention (docs/operations.md): --version, --token-file
#    (the coordinator's job token; an unreadable one is a config error naming
#    the file), readable errors for bad flags.
"$BIN" --version | grep -qE '^cnx-worker [^ ]+$' || fail "--version"
expect_rc 2 "$WORK/t.log" "unreadable --token-file" \
  "$BIN" --config "$WORK/tiny.yaml" --coordinator 127.0.0.1:1 --token-file "$WORK/no.token"
expect_log "$WORK/t.log" "no.token" "unreadable token file not named"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/job.token"
# The token was read (no token error); plaintext to a non-loopback address is refused.
expect_rc 2 "$WORK/t2.log" "plaintext to 10.0.0.1" \
  "$BIN" --config "$WORK/tiny.yaml" --coordinator 10.0.0.1:50051 --token-file "$WORK/job.token"
expect_log "$WORK/t2.log" "allow_plaintext" "plaintext refusal not explained"
expect_rc 2 "$WORK/t3.log" "--max-steps -4" "$BIN" --config "$WORK/tiny.yaml" --max-steps -4
expect_log "$WORK/t3.log" "--max-steps: '-4' must be >= 0" "--max-steps message"
echo "ok: --version, --token-file, readable flag errors"

# 6. optimizer.global_batch fixes the global batch: 2 ranks x batch 2 make 8
#    with 2 accumulation steps; a batch that the ranks cannot divide is a
#    config error naming the key.
expect_rc 0 "$WORK/g.log" "global_batch run" \
  run --set checkpoint.root="$WORK/g" --set optimizer.global_batch=8 --max-steps 2 --resume none
expect_log "$WORK/g.log" "global batch 8 = 2 per rank x 2 ranks x 2 accumulation steps (optimizer.global_batch)" \
  "no global batch line"
expect_rc 2 "$WORK/g2.log" "global_batch 6 on 2 x 2" \
  run --set checkpoint.root="$WORK/g2" --set optimizer.global_batch=6 --max-steps 2 --resume none
expect_log "$WORK/g2.log" "optimizer.global_batch 6 is not a multiple of data.batch_size x ranks = 2 x 2 = 4" \
  "global_batch error not explained"
echo "ok: optimizer.global_batch derives accumulation from the ranks"
