#!/usr/bin/env bash
# README.md "Running it yourself", run as written: the block between the
# `readme-walkthrough` markers is extracted and executed line by line in a
# fresh folder holding only the repository's configs/ (as a fresh clone
# would: every relative path in it resolves there), with the built programs
# on PATH. Only two things differ from a reader's run, both visible here:
#  * the set-up line (`scripts/setup.sh && export PATH=...`) is checked to be
#    there and replaced by the build ctest already made (its build/bin);
#  * each program runs through a wrapper that prepends a tiny size (shards of
#    a few hundred Fashion-MNIST images, 6 training steps, a short probe),
#    a free port instead of 50051 and no metrics ports, so that the test is
#    fast and can run beside others.
# Then the results the README promises are checked: a committed checkpoint
# (cnx-ctl status / latest), the exported encoder, the reconstructions, the
# probe's top-1.
# Usage: readme_walkthrough_test.sh <source dir> <build dir>
source "$(dirname "$0")/lib.sh"
SRC="$1"
BUILD="$2"
e2e_init readme_walkthrough 500
[ -d "$BUILD/bin" ] || fail "$BUILD/bin does not exist (the README puts it on PATH)"
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] ||
  { echo "SKIP: dataset-fashion-mnist is not installed"; exit 77; }

# 1. The block, as bash: continuation lines joined, comments kept.
python3 - "$SRC/README.md" "$WORK/block.sh" <<'PY' || fail "README.md has no usable readme-walkthrough block"
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"<!-- readme-walkthrough: begin -->\n(.*?)<!-- readme-walkthrough: end -->", text, re.S)
if not m:
    sys.exit("no <!-- readme-walkthrough: begin/end --> markers")
lines = [l[4:] if l.startswith("    ") else l for l in m.group(1).splitlines()]
code = [l for l in lines if l.strip() and not l.startswith("```")]
if not code:
    sys.exit("empty block")
open(sys.argv[2], "w").write("\n".join(code) + "\n")
PY
echo "== the README's commands" && cat "$WORK/block.sh"
SETUP='scripts/setup.sh && export PATH="$PWD/build/bin:$PATH"'
[ "$(head -n 1 "$WORK/block.sh")" = "$SETUP" ] || fail "the block does not start with: $SETUP"
# Every program the block runs exists in build/bin (what the PATH line promises).
for p in $(grep -o 'cnx-[a-z-]*' "$WORK/block.sh" | sort -u); do
  [ -x "$BUILD/bin/$p" ] || fail "the README runs $p, which is not in $BUILD/bin"
done
# The steps this test promises to drive are all there.
for step in "cnx-make-shards --source fashion-mnist --split train" "cnx-make-shards --source fashion-mnist --split test" \
  "openssl rand -hex 32 >" "cnx-coordinator " "mpirun -np 2 " "cnx-worker " "cnx-ctl .* status" "cnx-ctl .* latest" \
  "cnx-export " "cnx-visualize " "cnx-eval "; do
  grep -q -- "$step" "$WORK/block.sh" || fail "the README block has no step matching '$step'"
done

# 2. Wrappers: tiny sizes, a free port, no fixed metrics ports.
PORT="$(free_port)"
mkdir -p "$WORK/bin"
wrap() {
  local prog="$1"
  shift
  {
    echo '#!/usr/bin/env bash'
    echo 'args=(); for a in "$@"; do args+=("${a//127.0.0.1:50051/127.0.0.1:'"$PORT"'}"); done'
    printf 'exec %q' "$BUILD/bin/$prog"
    [ $# = 0 ] || printf ' %q' "$@"
    echo ' "${args[@]}"'
  } > "$WORK/bin/$prog"
  chmod +x "$WORK/bin/$prog"
}
NOMETRICS=(--set metrics.enabled=false)
wrap cnx-make-shards --limit 448 --samples-per-shard 128 -q
wrap cnx-coordinator --set "coordinator.listen=127.0.0.1:$PORT" "${NOMETRICS[@]}"
wrap cnx-worker --max-steps 6 --threads 1 "${NOMETRICS[@]}"
wrap cnx-ctl --set "coordinator.listen=127.0.0.1:$PORT" --timeout 60
wrap cnx-export
wrap cnx-visualize --count 4 --threads 1
wrap cnx-eval --max-train 256 --max-test 128 --epochs 3 --threads 1

# 3. Run it: set-up line replaced; background processes (the coordinator)
# recorded in bg.pids for the cleanup; CKPT printed for the checks below.
mkdir -p "$WORK/clone"
cp -r "$SRC/configs" "$WORK/clone/configs"
{
  echo 'set -euo pipefail'
  echo "export PATH=\"$WORK/bin:\$PATH\""
  tail -n +2 "$WORK/block.sh" | sed -E "s#&[[:space:]]*(\#.*)?\$#\& echo \$! >> $WORK/bg.pids \1#"
  echo "echo \"CKPT=\${CKPT:-}\""
} > "$WORK/run.sh"
cd "$WORK/clone"
e2e_bg bash "$WORK/run.sh" > "$WORK/walkthrough.log" 2>&1
wait_rc "$BG_PID"
for p in $(cat "$WORK/bg.pids" 2> /dev/null); do E2E_PIDS+=("$p"); done
cat "$WORK/walkthrough.log"
[ "$RC" = 0 ] || fail "the README's commands failed (exit $RC; output above)"
CKPT="$(sed -n 's/^CKPT=//p' "$WORK/walkthrough.log" | tail -n 1)"

# 4. What the README says they produce.
[ -n "${CKPT:-}" ] && [ -d "$CKPT" ] || fail "cnx-ctl latest gave no checkpoint folder ('${CKPT:-}')"
case "$(cd "$CKPT" && pwd)" in
  "$WORK/clone/runs/"*) ;;
  *) fail "the checkpoint $CKPT is not under the walkthrough's runs/ folder" ;;
esac
grep -Eq "committed" "$WORK/walkthrough.log" || fail "cnx-ctl status shows no committed checkpoint"
for f in $(grep -Eo -- '-o [^ ]+safetensors' "$WORK/block.sh" | cut -d' ' -f2) \
  $(grep -Eo -- 'cnx-visualize .*-o [^ ]+' "$WORK/block.sh" | grep -Eo '[^ ]+$')/grid.png; do
  [ -s "$f" ] || fail "the README's $f was not written"
done
grep -Eq '"top1"' "$WORK/walkthrough.log" || fail "cnx-eval printed no top-1"
# The reconstructions are drawn at the size the model was trained at
# (configs/fcmae_fashion_mnist.yaml's data.input_size), not the tools' 224 px default.
TRAINED=$(sed -n 's/^  input_size: \([0-9]*\).*/\1/p' "$SRC/configs/fcmae_fashion_mnist.yaml")
[ -n "$TRAINED" ] && [ "$TRAINED" != 224 ] || fail "cannot read data.input_size (not 224) from the config"
grep -q "reconstructions (${TRAINED}x${TRAINED}" "$WORK/walkthrough.log" ||
  fail "cnx-visualize did not draw at the trained $TRAINED px"
echo "ok: the README walkthrough ran as written (checkpoint $CKPT; encoder, reconstructions and probe written)"
echo "PASS"
