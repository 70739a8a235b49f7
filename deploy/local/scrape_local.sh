#!/usr/bin/env bash
# Scrape a local run with a real Prometheus server (Debian's `prometheus`).
#
#   deploy/local/scrape_local.sh [options]
#     --config FILE        prometheus.yml to use (default: deploy/local/prometheus.yml)
#     --targets LIST       instead of --config: write a prometheus.yml scraping
#                          these comma-separated host:port targets
#     --interval SECONDS   scrape interval for --targets (default 1)
#     --port N             Prometheus web port (default 9090; 0 = pick a free one)
#     --query EXPR         PromQL to wait for (repeatable); prints each result as JSON
#     --query-valid EXPR   PromQL that must evaluate (repeatable), data or not: asked
#                          once after every --query has data; prints each result
#     --min N              series each --query must return (default 1)
#     --timeout SECONDS    how long to wait for the queries (default 30)
#
# Without --query, Prometheus runs in the foreground (http://127.0.0.1:PORT)
# until Ctrl-C. With --query, the script exits 0 once every query returned at
# least --min series, or 1 (printing the targets page and Prometheus's log)
# after --timeout. Prometheus's data and log live in a temp dir removed on exit.
# Needs: prometheus, curl, python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
config="$here/prometheus.yml"
targets=""
interval=1
port=9090
min=1
timeout=30
queries=()
valid_queries=()
prometheus=${PROMETHEUS:-prometheus}

die() { echo "scrape_local.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --query) queries+=("$2"); shift 2 ;;
    --query-valid) valid_queries+=("$2"); shift 2 ;;
    --min) min=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
command -v "$prometheus" >/dev/null || die "prometheus not found (apt-get install prometheus)"
command -v curl >/dev/null || die "curl not found"
command -v python3 >/dev/null || die "python3 not found"
[[ "$min" =~ ^[0-9]+$ ]] || die "--min must be a non-negative integer, got '$min'"
[[ "$timeout" =~ ^[0-9]+$ ]] || die "--timeout must be whole seconds, got '$timeout'"

work=$(mktemp -d "${TMPDIR:-/tmp}/cnx-scrape-XXXXXX")
prom_pid=""
cleanup() {
  if [ -n "$prom_pid" ] && kill -0 "$prom_pid" 2>/dev/null; then
    kill -TERM "$prom_pid" 2>/dev/null || true
    wait "$prom_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "$targets" ]; then
  config="$work/prometheus.yml"
  {
    echo "global:"
    echo "  scrape_interval: ${interval}s"
    echo "  evaluation_interval: ${interval}s"
    echo "  scrape_timeout: ${interval}s"
    echo "scrape_configs:"
    echo "  - job_name: cnx"
    echo "    static_configs:"
    printf '      - targets: ['
    sep=""
    IFS=',' read -ra list <<<"$targets"
    for t in "${list[@]}"; do
      [[ "$t" =~ ^[^:]+:[0-9]+$ ]] || die "target '$t' is not host:port"
      printf '%s"%s"' "$sep" "$t"; sep=", "
    done
    echo "]"
  } >"$config"
fi
[ -f "$config" ] || die "config '$config' not found"

if [ "$port" = 0 ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
base="http://127.0.0.1:$port"
"$prometheus" --config.file="$config" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$port" --log.level=warn >"$work/prometheus.log" 2>&1 &
prom_pid=$!

for _ in $(seq 100); do
  kill -0 "$prom_pid" 2>/dev/null || { cat "$work/prometheus.log" >&2; die "prometheus exited during start-up"; }
  curl -fsS "$base/-/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$base/-/ready" >/dev/null 2>&1 || { cat "$work/prometheus.log" >&2; die "prometheus not ready at $base"; }
echo "prometheus ready at $base (config $config)" >&2

if [ ${#queries[@]} -eq 0 ] && [ ${#valid_queries[@]} -eq 0 ]; then
  wait "$prom_pid"
  exit $?
fi

count_series() {  # stdin: /api/v1/query JSON -> number of series (or -1 on error)
  python3 -c 'import json,sys
d=json.load(sys.stdin)
print(len(d["data"]["result"]) if d.get("status")=="success" else -1)'
}
deadline=$(( $(date +%s) + timeout ))
for q in "${queries[@]}"; do
  while :; do
    answer=$(curl -fsS -G "$base/api/v1/query" --data-urlencode "query=$q" 2>/dev/null || echo '{}')
    n=$(printf '%s' "$answer" | count_series 2>/dev/null || echo -1)
    if [ "$n" -ge "$min" ]; then
      printf '%s\n' "$answer"
      break
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "scrape_local.sh: query '$q' returned $n series (wanted >= $min) after ${timeout}s" >&2
      echo "last answer: $answer" >&2
      curl -fsS "$base/api/v1/targets" >&2 || true
      echo >&2
      cat "$work/prometheus.log" >&2
      exit 1
    fi
    sleep 0.5
  done
done
for q in "${valid_queries[@]}"; do
  answer=$(curl -sS -G "$base/api/v1/query" --data-urlencode "query=$q" 2>/dev/null || echo '{}')
  n=$(printf '%s' "$answer" | count_series 2>/dev/null || echo -1)
  if [ "$n" -lt 0 ]; then
    echo "scrape_local.sh: query '$q' does not evaluate: $answer" >&2
    exit 1
  fi
  printf '%s\n' "$answer"
done
