#!/usr/bin/env bash
# Makes the TLS material for a coordinator on bare hosts, with openssl:
#
#   scripts/make_tls.sh --output DIR --san coord.example --san 10.0.0.5 [--client NAME]... [--days N] [--force]
#
# DIR/ca.crt, ca.key            CA that signs the coordinator's certificate (clients trust ca.crt)
# DIR/server.crt, server.key    the coordinator's certificate; its subjectAltName holds every --san
#                               (IP:... for IPv4/IPv6 addresses, DNS:... otherwise)
# DIR/client-ca.crt, .key       a second CA that signs client certificates (mutual TLS)
# DIR/client.crt, client.key    a client certificate for the workers and cnx-ctl (CN "cnx-client"),
#                               plus DIR/<NAME>.crt/.key for each --client NAME
#
# The SANs must name what the clients dial: the host part of --coordinator
# (a worker dialling coord.example:50051 needs --san coord.example; one
# dialling 10.0.0.5:50051 needs --san 10.0.0.5). Keys are EC P-256, mode
# 0600. Keep ca.key and client-ca.key offline (or delete them: rerun to
# rotate). Prints the config keys to set. Exit 2 on usage errors. (-o is
# --output; --out, its former name, still works.)
set -euo pipefail

usage() {
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
}
die_usage() {
  echo "make_tls.sh: $*" >&2
  echo "usage: scripts/make_tls.sh --output DIR --san HOST_OR_IP [--san ...] [--client NAME]... [--days N] [--force]" >&2
  exit 2
}

OUT=""
DAYS=825
FORCE=0
SANS=()
CLIENTS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o | --output | --out) [ $# -ge 2 ] || die_usage "$1 needs a folder"; OUT="$2"; shift 2 ;;
    --output=* | --out=*) OUT="${1#*=}"; shift ;;
    --san) [ $# -ge 2 ] || die_usage "--san needs a host name or IP address"; SANS+=("$2"); shift 2 ;;
    --san=*) SANS+=("${1#*=}"); shift ;;
    --client) [ $# -ge 2 ] || die_usage "--client needs a name"; CLIENTS+=("$2"); shift 2 ;;
    --client=*) CLIENTS+=("${1#*=}"); shift ;;
    --days) [ $# -ge 2 ] || die_usage "--days needs a number"; DAYS="$2"; shift 2 ;;
    --days=*) DAYS="${1#*=}"; shift ;;
    --force) FORCE=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done
[ -n "$OUT" ] || die_usage "--output DIR is required"
[ ${#SANS[@]} -gt 0 ] || die_usage "at least one --san (the host name or address the clients dial) is required"
[[ "$DAYS" =~ ^[1-9][0-9]{0,4}$ ]] || die_usage "--days must be a whole number of days >= 1, got '$DAYS'"
command -v openssl > /dev/null || { echo "make_tls.sh: openssl is not installed (apt-get install openssl)" >&2; exit 1; }

san_list=""
for s in "${SANS[@]}"; do
  if [[ "$s" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || [[ "$s" == *:* ]]; then
    entry="IP:$s"
  elif [[ "$s" =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
    entry="DNS:$s"
  else
    die_usage "--san '$s' is neither an IP address nor a host name"
  fi
  san_list="${san_list:+$san_list,}$entry"
done
for c in "${CLIENTS[@]}"; do
  [[ "$c" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die_usage "--client '$c': use letters, digits, '.', '_', '-'"
  case "$c" in ca | client-ca | server) die_usage "--client '$c' would overwrite $c.crt" ;; esac
done

mkdir -p "$OUT"
if [ "$FORCE" != 1 ]; then
  for f in ca.crt server.crt client-ca.crt client.crt; do
    if [ -e "$OUT/$f" ]; then
      echo "make_tls.sh: $OUT/$f exists; pass --force to replace the material in $OUT" >&2
      exit 1
    fi
  done
fi
umask 077
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
openssl_quiet() {
  if ! openssl "$@" > "$TMP/openssl.log" 2>&1; then
    echo "make_tls.sh: openssl $1 failed:" >&2
    cat "$TMP/openssl.log" >&2
    exit 1
  fi
}
newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

# ca NAME CN: a self-signed CA certificate NAME.crt with key NAME.key.
make_ca() {
  openssl_quiet req -x509 -new "${newkey[@]}" -days "$DAYS" -subj "/CN=$2" -keyout "$OUT/$1.key" \
    -out "$OUT/$1.crt" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
# leaf NAME CN CA USAGE [SAN]: NAME.crt/.key signed by CA.crt/.key.
make_leaf() {
  local name="$1" cn="$2" ca="$3" usage="$4" san="${5:-}"
  openssl_quiet req -new "${newkey[@]}" -subj "/CN=$cn" -keyout "$OUT/$name.key" -out "$TMP/$name.csr"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$usage"
    [ -z "$san" ] || echo "subjectAltName=$san"
  } > "$TMP/$name.ext"
  openssl_quiet x509 -req -in "$TMP/$name.csr" -CA "$OUT/$ca.crt" -CAkey "$OUT/$ca.key" \
    -CAserial "$TMP/$ca.srl" -CAcreateserial -days "$DAYS" -extfile "$TMP/$name.ext" -out "$OUT/$name.crt"
}

make_ca ca "cnx coordinator CA"
make_leaf server "${SANS[0]}" ca serverAuth "$san_list"
make_ca client-ca "cnx client CA"
make_leaf client cnx-client client-ca clientAuth
for c in "${CLIENTS[@]}"; do make_leaf "$c" "$c" client-ca clientAuth; done
chmod 0644 "$OUT"/*.crt
chmod 0600 "$OUT"/*.key
openssl_quiet verify -CAfile "$OUT/ca.crt" "$OUT/server.crt"
openssl_quiet verify -CAfile "$OUT/client-ca.crt" "$OUT/client.crt"

D="$(cd "$OUT" && pwd)"
cat <<EOT
wrote $D: ca.crt, server.crt (SAN $san_list), client-ca.crt, client.crt${CLIENTS[*]:+ and ${CLIENTS[*]}} (+ keys)
coordinator:   --set coordinator.tls_cert=$D/server.crt --set coordinator.tls_key=$D/server.key
               --set coordinator.tls_client_ca=$D/client-ca.crt        (mutual TLS; leave out for TLS only)
workers, ctl:  --set coordinator.tls_ca=$D/ca.crt
               --set coordinator.tls_client_cert=$D/client.crt --set coordinator.tls_client_key=$D/client.key
Copy ca.crt (and client.crt/.key for mutual TLS) to every worker host; keep ca.key and client-ca.key off them.
EOT
