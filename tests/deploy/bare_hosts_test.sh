#!/usr/bin/env bash
# deploy/README.md "Bare hosts", run as written: the block between the
# `bare-hosts` markers is extracted and executed in a fresh network and mount
# namespace where coord.example resolves to 10.0.0.1 (an address of a NIC in
# that namespace, not loopback: plaintext would be refused, so TLS is exercised),
# from a folder holding the repository's scripts/ and configs/. What differs
# from a reader's run, all visible below:
#  * /shared -> $WORK/shared and /var/lib/cnx -> $WORK/var (paths);
#  * the coordinator, on its own host in the README, starts in the background;
#  * mpirun runs 2 local ranks instead of -np 8 over --hostfile (no ssh here);
#  * each program gets a tiny size first (64 px, batch 4, 3 steps, no fixed
#    global batch: optimizer.global_batch 0), no
#    metrics ports, shards of 8; /shared/photos is 48 generated PNGs.
# Checked: the workers' final checkpoint is committed on the shared folder,
# cnx-ctl status (over TLS, by name) shows it, and the coordinator saw it.
# Needs root (namespaces); exit 77 (skipped) otherwise.
# Usage: bare_hosts_test.sh <source dir> <build dir>
source "$(dirname "$0")/../e2e/lib.sh"
SRC="$1"
BUILD="$2"
if [ "$(id -u)" != 0 ] || ! unshare --net --mount true 2> /dev/null; then
  echo "SKIP: needs root to make network and mount namespaces"
  exit 77
fi
e2e_init bare_hosts 400

python3 - "$SRC/deploy/README.md" "$WORK/block.sh" <<'PY' || fail "deploy/README.md has no usable bare-hosts block"
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"<!-- bare-hosts: begin -->\n(.*?)<!-- bare-hosts: end -->", text, re.S)
if not m:
    sys.exit("no <!-- bare-hosts: begin/end --> markers")
lines = [l[4:] if l.startswith("    ") else l for l in m.group(1).splitlines()]
# Join continuation lines: one command per line.
cmds, cur = [], ""
for l in lines:
    if not l.strip():
        continue
    cur += l
    if cur.endswith("\\"):
        cur = cur[:-1]
    elif cur.count('"') % 2 == 0:
        cmds.append(cur)
        cur = ""
    else:
        cur += "\n"
open(sys.argv[2], "w").write("\n".join(cmds) + "\n")
PY
echo "== deploy/README.md's commands" && cat "$WORK/block.sh"
for step in "openssl rand -hex 32 >" "scripts/make_tls.sh --output" "cnx-make-shards " "^cnx-coordinator " \
  "^mpirun " "cnx-worker " "^cnx-ctl "; do
  grep -q -- "$step" "$WORK/block.sh" || fail "the bare-hosts block has no step matching '$step'"
done
# The coordinator runs on its own host in the README: here, in the background.
sed -e "s#/shared#$WORK/shared#g" -e "s#/var/lib/cnx#$WORK/var#g" \
  -e 's#^\(cnx-coordinator .*\)$#\1 \& E2E_PIDS+=($!)#' "$WORK/block.sh" > "$WORK/run_block.sh"

mkdir -p "$WORK/bin" "$WORK/src" "$WORK/shared/photos"
cp -r "$SRC/scripts" "$SRC/configs" "$WORK/src/"
python3 - "$WORK/shared/photos" <<'PY'
import random, struct, sys, zlib
def png(w, h, rng):
    rows = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(3 * w)) for _ in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
rng = random.Random(3)
for i in range(48):
    open("%s/img%02d.png" % (sys.argv[1], i), "wb").write(png(40, 36, rng))
PY
wrap() {
  local prog="$1" real="$2"
  shift 2
  {
    echo '#!/usr/bin/env bash'
    printf 'exec %q' "$real"
    [ $# = 0 ] || printf ' %q' "$@"
    echo ' "$@"'
  } > "$WORK/bin/$prog"
  chmod +x "$WORK/bin/$prog"
}
NOMETRICS=(--set metrics.enabled=false)
wrap cnx-make-shards "$BUILD/bin/cnx-make-shards" -q --samples-per-shard 8
wrap cnx-coordinator "$BUILD/bin/cnx-coordinator" "${NOMETRICS[@]}"
wrap cnx-worker "$BUILD/bin/cnx-worker" --max-steps 3 --threads 1 --set data.input_size=64 --set data.batch_size=4 \
  --set optimizer.global_batch=0 \
  --set data.num_threads=1 "${NOMETRICS[@]}"
wrap cnx-ctl "$BUILD/bin/cnx-ctl" --timeout 60
# mpirun: 2 local ranks instead of -np 8 over the hostfile.
cat > "$WORK/bin/mpirun" <<'SH'
#!/usr/bin/env bash
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -np) args+=(-np 2); shift 2 ;;
    --hostfile) shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
exec /usr/bin/mpirun --allow-run-as-root --oversubscribe "${args[@]}"
SH
chmod +x "$WORK/bin/mpirun"
printf '127.0.0.1 localhost\n10.0.0.1 coord.example\n' > "$WORK/hosts"

cat > "$WORK/ns.sh" <<NS
set -euo pipefail
mount --bind "$WORK/hosts" /etc/hosts
# A NIC with 10.0.0.1/24 (a veth pair: Open MPI does not use lo for a subnet).
ip link set lo up
ip link add cnx0 type veth peer name cnx1
ip addr add 10.0.0.1/24 dev cnx0
ip link set cnx0 up
ip link set cnx1 up
export PATH="$WORK/bin:\$PATH"
E2E_PIDS=()
trap 'for p in "\${E2E_PIDS[@]}"; do kill -9 "\$p" 2> /dev/null || true; done' EXIT
cd "$WORK/src"
source "$WORK/run_block.sh"
NS
set +e
timeout 300 unshare --net --mount --fork bash "$WORK/ns.sh" > "$WORK/bare_hosts.log" 2>&1
RC=$?
set -e
cat "$WORK/bare_hosts.log"
[ "$RC" = 0 ] || fail "deploy/README.md's bare-hosts commands failed (exit $RC; output above)"
J="$WORK/shared/fcmae-atto"
ls -d "$J"/checkpoints/*/ckpt-* > /dev/null 2>&1 || fail "no checkpoint under the shared $J/checkpoints"
grep -q "committed" "$WORK/bare_hosts.log" || fail "cnx-ctl status shows no committed checkpoint"
grep -q "does not exist on the coordinator's host" "$WORK/bare_hosts.log" &&
  fail "the coordinator could not see the committed checkpoint"
echo "ok: deploy/README.md's bare-hosts commands ran as written (TLS on 10.0.0.1 by name, shared checkpoints)"
echo "PASS"
