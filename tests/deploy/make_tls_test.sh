#!/usr/bin/env bash
# scripts/make_tls.sh's material works with the real coordinator and cnx-ctl:
#  * loopback, mutual TLS: a client with ca.crt + client.crt is served when it
#    dials a name or address in the SAN (127.0.0.1, localhost); refused
#    without a client certificate, with a client certificate of another CA,
#    with another CA's ca.crt, and when the server certificate's SAN does not
#    name what the client dialled;
#  * in a fresh network namespace (root only; else that part is skipped and
#    says so): a coordinator listening on a non-loopback address (10.88.0.1)
#    with --san 10.88.0.1 serves cnx-ctl; the same address without TLS is
#    refused at start.
# Usage: make_tls_test.sh <cnx-coordinator> <cnx-ctl> <cnx-make-shards> <source dir>
source "$(dirname "$0")/../e2e/lib.sh"
COORD="$1"
CTL="$2"
MAKE_SHARDS="$3"
SRC="$4"
MAKE_TLS="$SRC/scripts/make_tls.sh"
e2e_init make_tls 240

# Usage errors exit 2 and name the flag.
set +e
out="$("$MAKE_TLS" --out "$WORK/x" 2>&1)"; rc=$?
set -e
[ "$rc" = 2 ] && grep -q -- "--san" <<< "$out" || fail "no --san: expected exit 2 naming --san, got $rc: $out"
set +e
out="$("$MAKE_TLS" --out "$WORK/x" --san 'bad host!' 2>&1)"; rc=$?
set -e
[ "$rc" = 2 ] || fail "a bad --san: expected exit 2, got $rc: $out"

"$MAKE_TLS" --out "$WORK/tls" --san localhost --san 127.0.0.1 > "$WORK/make_tls.log" 2>&1 || fail "make_tls.sh failed"
grep -q "coordinator.tls_client_ca" "$WORK/make_tls.log" || fail "make_tls.sh does not print the config keys"
for f in ca.crt ca.key server.crt server.key client-ca.crt client-ca.key client.crt client.key; do
  [ -s "$WORK/tls/$f" ] || fail "make_tls.sh wrote no $f"
done
[ "$(stat -c %a "$WORK/tls/server.key")" = 600 ] || fail "server.key is not mode 600"
# A second set: another CA, and a server certificate whose SAN is elsewhere.
"$MAKE_TLS" --out "$WORK/other" --san wrong.example --san 10.9.9.9 > /dev/null 2>&1 || fail "make_tls.sh (other) failed"
set +e
"$MAKE_TLS" --out "$WORK/tls" --san localhost > "$WORK/again.log" 2>&1; rc=$?
set -e
[ "$rc" = 1 ] && grep -q -- "--force" "$WORK/again.log" || fail "make_tls.sh overwrote existing material (rc $rc)"

openssl rand -hex 32 > "$WORK/job.token"
make_fmnist_shards "$MAKE_SHARDS" "$WORK/shards" 60
write_config "$WORK/job.yaml" "$WORK/shards/index.json" "$WORK/ckpt" \
  "coordinator: {token_file: $WORK/job.token, state_db: $WORK/state.sqlite}"

# coordinator NAME LISTEN TLS_DIR [extra --set ...]: starts one; waits until it listens.
coordinator() {
  local name="$1" listen="$2" dir="$3"
  shift 3
  e2e_bg "$COORD" --config "$WORK/job.yaml" --set "coordinator.listen=$listen" \
    --set "coordinator.state_db=$WORK/$name.sqlite" \
    --set "coordinator.tls_cert=$dir/server.crt" --set "coordinator.tls_key=$dir/server.key" \
    --set "coordinator.tls_client_ca=$WORK/tls/client-ca.crt" --set metrics.enabled=false "$@" \
    > "$WORK/coordinator-$name.log" 2>&1
  wait_for 30 grep -q "listening" "$WORK/coordinator-$name.log" || fail "coordinator $name did not start"
}
# ctl TARGET CA [CERT KEY]: cnx-ctl status against TARGET; output in $WORK/ctl.out, status in RC.
ctl() {
  local target="$1" ca="$2" cert="${3:-}" key="${4:-}"
  RC=0
  "$CTL" --config "$WORK/job.yaml" --set "coordinator.listen=$target" --set "coordinator.tls_ca=$ca" \
    --set "coordinator.tls_client_cert=$cert" --set "coordinator.tls_client_key=$key" --timeout 3 status \
    > "$WORK/ctl.out" 2>&1 || RC=$?
}
T="$WORK/tls"
O="$WORK/other"
PORT="$(free_port)"
coordinator good "127.0.0.1:$PORT" "$T"
ctl "127.0.0.1:$PORT" "$T/ca.crt" "$T/client.crt" "$T/client.key"
[ "$RC" = 0 ] && grep -q "fault-test" "$WORK/ctl.out" || fail "mTLS over 127.0.0.1 (IP SAN) refused: $(cat "$WORK/ctl.out")"
ctl "localhost:$PORT" "$T/ca.crt" "$T/client.crt" "$T/client.key"
[ "$RC" = 0 ] || fail "mTLS via localhost (DNS SAN) refused: $(cat "$WORK/ctl.out")"
echo "ok: the coordinator serves cnx-ctl with make_tls.sh's material (IP and DNS SANs, mutual TLS)"
ctl "127.0.0.1:$PORT" "$T/ca.crt"
[ "$RC" != 0 ] || fail "served a client without a certificate although tls_client_ca is set"
ctl "127.0.0.1:$PORT" "$T/ca.crt" "$O/client.crt" "$O/client.key"
[ "$RC" != 0 ] || fail "served a client certificate signed by another client CA"
ctl "127.0.0.1:$PORT" "$O/ca.crt" "$T/client.crt" "$T/client.key"
[ "$RC" != 0 ] || fail "the client trusted a server certificate of another CA"
echo "ok: no client certificate, a foreign client CA, a foreign server CA: all refused"
# The server certificate names wrong.example / 10.9.9.9; the client dials 127.0.0.1.
PORT2="$(free_port)"
coordinator wrongsan "127.0.0.1:$PORT2" "$O"
ctl "127.0.0.1:$PORT2" "$O/ca.crt" "$T/client.crt" "$T/client.key"
[ "$RC" != 0 ] || fail "a server certificate whose SAN does not name 127.0.0.1 was accepted"
ctl "localhost:$PORT2" "$O/ca.crt" "$T/client.crt" "$T/client.key"
[ "$RC" != 0 ] || fail "a server certificate whose SAN does not name localhost was accepted"
echo "ok: a SAN that does not name the dialled host is refused"
for p in "${E2E_PIDS[@]}"; do e2e_kill_tree "$p"; done
E2E_PIDS=()

# A non-loopback address inside a fresh network namespace.
if [ "$(id -u)" != 0 ] || ! unshare --net true 2> /dev/null; then
  echo "SKIP (part): cannot create a network namespace here (not root?); the non-loopback case did not run"
  exit 0
fi
"$MAKE_TLS" --out "$WORK/ns" --san 10.88.0.1 > /dev/null 2>&1 || fail "make_tls.sh (ns) failed"
cat > "$WORK/ns.sh" <<NS
set -u
ip link set lo up && ip addr add 10.88.0.1/32 dev lo || exit 10
"$COORD" --config "$WORK/job.yaml" --set coordinator.listen=10.88.0.1:50051 --set metrics.enabled=false \
  --set coordinator.state_db=$WORK/plain.sqlite > "$WORK/coordinator-plain.log" 2>&1
echo "plaintext rc=\$?" >> "$WORK/ns.out"
"$COORD" --config "$WORK/job.yaml" --set coordinator.listen=10.88.0.1:50051 --set metrics.enabled=false \
  --set coordinator.state_db=$WORK/ns.sqlite --set coordinator.tls_cert=$WORK/ns/server.crt \
  --set coordinator.tls_key=$WORK/ns/server.key --set coordinator.tls_client_ca=$WORK/tls/client-ca.crt \
  > "$WORK/coordinator-ns.log" 2>&1 &
C=\$!
for i in \$(seq 300); do grep -q listening "$WORK/coordinator-ns.log" && break; sleep 0.1; done
"$CTL" --config "$WORK/job.yaml" --set coordinator.listen=10.88.0.1:50051 --set coordinator.tls_ca=$WORK/ns/ca.crt \
  --set coordinator.tls_client_cert=$WORK/tls/client.crt --set coordinator.tls_client_key=$WORK/tls/client.key \
  --timeout 5 status > "$WORK/ctl-ns.out" 2>&1
echo "tls rc=\$?" >> "$WORK/ns.out"
"$CTL" --config "$WORK/job.yaml" --set coordinator.listen=10.88.0.1:50051 --set coordinator.tls_ca=$WORK/tls/ca.crt \
  --set coordinator.tls_client_cert=$WORK/tls/client.crt --set coordinator.tls_client_key=$WORK/tls/client.key \
  --timeout 3 status > "$WORK/ctl-ns-wrong.out" 2>&1
echo "wrong-ca rc=\$?" >> "$WORK/ns.out"
kill \$C
wait \$C
NS
: > "$WORK/ns.out"
timeout 120 unshare --net bash "$WORK/ns.sh" || fail "the namespace script failed (rc $?): $(cat "$WORK/ns.out")"
grep -q "plaintext rc=[1-9]" "$WORK/ns.out" || fail "plaintext on 10.88.0.1 was not refused: $(cat "$WORK/ns.out")"
grep -q "allow_plaintext" "$WORK/coordinator-plain.log" || fail "the plaintext refusal does not name allow_plaintext"
grep -q "tls rc=0" "$WORK/ns.out" && grep -q "fault-test" "$WORK/ctl-ns.out" ||
  fail "mTLS on 10.88.0.1 (non-loopback, IP SAN) refused: $(cat "$WORK/ns.out" "$WORK/ctl-ns.out")"
grep -q "wrong-ca rc=[1-9]" "$WORK/ns.out" || fail "a client trusting another CA was served on 10.88.0.1"
echo "ok: network namespace: TLS on the non-loopback 10.88.0.1 serves cnx-ctl; plaintext there is refused"
echo "PASS"
