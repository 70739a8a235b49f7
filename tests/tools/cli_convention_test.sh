#!/usr/bin/env bash
# The command-line convention (docs/operations.md, "Command lines") on every
# program: a set of mistakes each exits with the documented code and prints
# one line that names what to fix and carries no source position; --help and
# --version exit 0. Nothing here starts a server or trains: every command
# fails (or prints) before that.
# Usage: cli_convention_test.sh <build dir>
set -uo pipefail
B="$1"
WORK="$(mktemp -d /tmp/cnx_cli_convention.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
FAILS=0
fail() {
  echo "FAIL: $*" >&2
  FAILS=$((FAILS + 1))
}

# name | binary | arguments a run needs besides --config (so that it reaches the config)
PROGRAMS=(
  "cnx-coordinator|coordinator/cnx-coordinator|"
  "cnx-ctl|coordinator/cnx-ctl|status"
  "cnx-worker|worker/cnx-worker|"
  "cnx-make-shards|tools/make_shards/cnx-make-shards|--source fashion-mnist"
  "cnx-model-info|tools/model_info/cnx-model-info|"
  "cnx-export|tools/export/cnx-export|-o $WORK/never.safetensors"
  "cnx-visualize|tools/visualize/cnx-visualize|-o $WORK/never-viz"
  "cnx-eval|tools/eval/cnx-eval|--train-index $WORK/none.json --test-index $WORK/none.json"
  "cnx-finetune|tools/eval/cnx-finetune|--train-index $WORK/none.json --test-index $WORK/none.json"
  "cnx-plot-log|tools/visualize/cnx-plot-log|"
)

printf 'optimizer:\n  nonsense: 1\n' > "$WORK/bad_key.yaml"
printf 'data:\n  input_size: 64\n  batch_size: 4\n  input_size: 96\n' > "$WORK/dup_key.yaml"
printf 'job: {id: conv-test}\n' > "$WORK/good.yaml"
mkdir -p "$WORK/a_folder.yaml"
printf 'base: nowhere.yaml\n' > "$WORK/bad_base.yaml"

# expect <name> <code> <needle> <command...>: the exit code, the needle in
# the output, no source position, and for errors exactly one line on stderr.
expect() {
  local name="$1" code="$2" needle="$3"
  shift 3
  "$@" > "$WORK/out" 2> "$WORK/err" < /dev/null
  local rc=$?
  local all
  all="$(cat "$WORK/out" "$WORK/err")"
  if [ "$rc" != "$code" ]; then
    fail "$name: '$*' exited $rc, expected $code: $all"
    return
  fi
  if ! grep -qF -- "$needle" <<< "$all"; then
    fail "$name: '$*': output does not name '$needle': $all"
  fi
  if grep -qE '[A-Za-z0-9_]\.(cc|h|hpp|cpp):[0-9]+' <<< "$all"; then
    fail "$name: '$*': source position in a user-facing message: $all"
  fi
  if grep -qE '[0-9]{40}' <<< "$all"; then
    fail "$name: '$*': an unreadable number in the message: $all"
  fi
  # One line; computing programs also log their BLAS set and GEMM path at
  # start (common/blas_info.h, model/onednn_matmul.h), which are not part of
  # the message.
  if [ "$code" != 0 ] && [ "$(grep -vcE '^[a-z_-]+: (BLAS |GEMM path )' "$WORK/err")" != 1 ]; then
    fail "$name: '$*': expected one line on stderr, got: $(cat "$WORK/err")"
  fi
}

for entry in "${PROGRAMS[@]}"; do
  IFS='|' read -r name rel extra <<< "$entry"
  bin="$B/$rel"
  [ -x "$bin" ] || { fail "$name: $bin not built"; continue; }
  # shellcheck disable=SC2206
  args=($extra)

  # --version: the program and the build's git describe on stdout.
  expect "$name" 0 "$name " "$bin" --version
  [ "$(wc -w < "$WORK/out")" = 2 ] || fail "$name --version printed: $(cat "$WORK/out")"
  # --help: exit 0, lists --version (and --config where the program has settings).
  expect "$name" 0 "--version" "$bin" --help
  # An unknown flag, a flag without its value.
  expect "$name" 2 "--no-such-flag" "$bin" --no-such-flag
  grep -qF -- "--help" "$WORK/err" || fail "$name: the unknown-flag message does not point at --help"
  if [ "$name" = cnx-plot-log ]; then
    expect "$name" 2 "--input" "$bin" -o "$WORK/x.png" --input
    expect "$name" 2 "--output" "$bin" --input "$WORK/x.log"  # required flag missing
    expect "$name" 1 "$WORK/no.log" "$bin" --input "$WORK/no.log" -o "$WORK/x.png"
    continue
  fi
  "$bin" --help 2> /dev/null | grep -qF -- "--config" || fail "$name: --help lists no --config"
  expect "$name" 2 "--config" "$bin" "${args[@]}" --config

  # Config mistakes: exit 2 naming the key (and the file).
  expect "$name" 2 "optimizer.nonsense" "$bin" --config "$WORK/bad_key.yaml" "${args[@]}"
  expect "$name" 2 "is a folder" "$bin" --config "$WORK/a_folder.yaml" "${args[@]}"
  expect "$name" 2 "data.input_size: duplicate key at line 4" "$bin" --config "$WORK/dup_key.yaml" "${args[@]}"
  grep -qF "dup_key.yaml" "$WORK/err" || fail "$name: the duplicate-key message does not name the file"
  expect "$name" 2 "$WORK/missing.yaml" "$bin" --config "$WORK/missing.yaml" "${args[@]}"
  expect "$name" 2 "bad_base.yaml: base: cannot open '$WORK/nowhere.yaml'" "$bin" --config "$WORK/bad_base.yaml" \
    "${args[@]}"
  expect "$name" 2 "data.input_size" "$bin" --config "$WORK/good.yaml" --set data.input_size=33 "${args[@]}"
  expect "$name" 2 "data.nope" "$bin" --config "$WORK/good.yaml" --set data.nope=1 "${args[@]}"
done

# Numeric flags: readable bounds (CLI11's own print 1.797e308 in full).
expect cnx-worker 2 "--threads" "$B/worker/cnx-worker" --config "$WORK/good.yaml" --threads -1
grep -qF ">= 0" "$WORK/err" || fail "cnx-worker --threads -1: no readable bound: $(cat "$WORK/err")"
"$B/worker/cnx-worker" --help > "$WORK/help" 2>&1
grep -qE '[0-9]{40}' "$WORK/help" && fail "cnx-worker --help prints an unreadable number"
expect cnx-make-shards 2 "--shard-size-mb" "$B/tools/make_shards/cnx-make-shards" --source fashion-mnist -o "$WORK/s" \
  --shard-size-mb -3
# Usage errors found after parsing are exit 2 as well.
expect cnx-visualize 2 "--index or --image" "$B/tools/visualize/cnx-visualize" -c "$WORK" -o "$WORK/v"
expect cnx-export 2 "--checkpoint" "$B/tools/export/cnx-export" -o "$WORK/x.safetensors"
expect cnx-model-info 2 "gigantic" "$B/tools/model_info/cnx-model-info" --model gigantic
expect cnx-ctl 2 "subcommand" "$B/coordinator/cnx-ctl"
# A missing token is a config error naming the flag and how to make one.
env -u CNX_JOB_TOKEN "$B/coordinator/cnx-ctl" --config "$WORK/good.yaml" status > "$WORK/out" 2> "$WORK/err"
rc=$?
[ "$rc" = 2 ] || fail "cnx-ctl without a token exited $rc: $(cat "$WORK/err")"
grep -qF -- "--token-file" "$WORK/err" || fail "cnx-ctl without a token: $(cat "$WORK/err")"
# Runtime errors (a missing input) exit 1.
expect cnx-export 1 "$WORK/nothing" "$B/tools/export/cnx-export" -c "$WORK/nothing" -o "$WORK/x.safetensors"

if [ "$FAILS" != 0 ]; then
  echo "$FAILS failure(s)" >&2
  exit 1
fi
echo "ok: every program follows the command-line convention"
