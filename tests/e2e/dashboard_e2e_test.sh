#!/usr/bin/env bash
# The Grafana dashboard against a real run: a real cnx-coordinator and a
# 2-rank cnx-worker job under mpirun train on real shards (Fashion-MNIST
# PNGs plus one garbage image, so the corrupt-sample counter exists), with a
# checkpoint every 10 steps; a real Prometheus (deploy/local/scrape_local.sh)
# scrapes the coordinator and both ranks. Every query of every panel of
# deploy/grafana/cnx-dashboard.json, with the variables set as Grafana would
# for "this job, all hosts, all ranks" ($straggler_factor 1, so the straggler
# table lists the slower rank), must return data; but the GPU panels, whose
# description starts with "GPU only (" (tests/deploy/dashboard_test.cc checks
# that exactly the panels querying cnx_worker_gpu_* say so): a CPU job has no
# GPU series, so their queries must evaluate (valid PromQL) and, when the
# ranks trained on the CPU (no "GPU metrics: device" in their log), return no
# series at all; ranks on a GPU make them ordinary panels that need data.
# Also: the series carry cnx_job and host while Prometheus's own job label
# stays the scrape job's.
# Usage: dashboard_e2e_test.sh <cnx-worker> <cnx-coordinator> <cnx-make-shards>
source "$(dirname "$0")/lib.sh"
WORKER="$1"
COORDINATOR="$2"
MAKE_SHARDS="$3"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
e2e_init dashboard_e2e 280

# Shards: 64 Fashion-MNIST PNGs in two classes plus a garbage .png.
make_fmnist_shards "$MAKE_SHARDS" "$WORK/fmnist" 64
python3 - "$WORK/fmnist" "$WORK/folder" <<'PY'
import os, random, sys, tarfile
src, root = sys.argv[1], sys.argv[2]
pngs = []
for name in sorted(os.listdir(src)):
    if name.endswith(".tar"):
        with tarfile.open(os.path.join(src, name)) as t:
            pngs += [t.extractfile(m).read() for m in t.getmembers() if m.name.endswith(".png")]
for c in ("a", "b"):
    os.makedirs(os.path.join(root, c))
for i, data in enumerate(pngs):
    open(os.path.join(root, "ab"[i % 2], "good%03d.png" % i), "wb").write(data)
rng = random.Random(3)
open(os.path.join(root, "b", "bad_garbage.png"), "wb").write(bytes(rng.randrange(256) for _ in range(500)))
PY
# cnx-make-shards decodes every image and skips the garbage one, so the shards
# are written here as it would write them unchecked (the corrupt-sample panel
# needs a bad image that reaches the workers): classes in sorted order, keys
# %09d, "<key>.cls" then the image, 20 samples per shard, and the index.
python3 "$(dirname "$0")/pack_unchecked_shards.py" "$WORK/folder" "$WORK/shards" 20 || fail "packing the shards failed"

GRPC_PORT="$(free_port)"
COORD_METRICS="$(free_port)"
# Two consecutive free ports for the ranks' metrics (worker_port + local rank).
for _ in $(seq 50); do
  WPORT="$(free_port)"
  python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.close()' \
    "$((WPORT + 1))" 2>/dev/null && break
done
echo "dashboard-e2e-test-token-0123456789abcdef" > "$WORK/token"
cat > "$WORK/job.yaml" <<YAML
job: {id: dash-e2e, seed: 5}
model: {name: custom, depths: [1, 1, 1, 1], dims: [8, 16, 32, 64], decoder_dim: 32}
mask: {ratio: 0.6}
optimizer: {blr: 1.0e-2}
schedule: {epochs: 1000, warmup_epochs: 0.5, log_every: 50}
data: {index: $WORK/shards/index.json, input_size: 64, batch_size: 4}
train: {threads: 1}
checkpoint: {root: $WORK/ckpt, keep: 2, every_steps: 10}
coordinator: {listen: "127.0.0.1:$GRPC_PORT", token_file: $WORK/token, state_db: $WORK/state.sqlite, heartbeat_s: 0.2, heartbeat_timeout_s: 60, world_size: 2}
metrics: {enabled: true, listen_host: 127.0.0.1, worker_port: $WPORT, coordinator_port: $COORD_METRICS}
YAML

e2e_bg "$COORDINATOR" --config "$WORK/job.yaml" > "$WORK/coordinator.log" 2>&1
wait_for 30 curl -fsS "http://127.0.0.1:$COORD_METRICS/metrics" -o /dev/null || fail "coordinator /metrics never answered"
e2e_bg "${MPIRUN[@]}" "$WORKER" --config "$WORK/job.yaml" --coordinator "127.0.0.1:$GRPC_PORT" > "$WORK/workers.log" 2>&1
WORKERS=$BG_PID

# The dashboard's queries with Grafana's variables substituted (as
# tests/deploy/deploy_files.cc substitute_grafana_vars does).
# dashboard_queries.py all|gpu: every query of the panels (all but the GPU
# panels), or those of the GPU panels.
cat > "$WORK/dashboard_queries.py" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
subst = [("$__rate_interval", "1m"), ("$__range", "1h"), ("$__interval", "15s"), ("$cnx_job", "dash-e2e"),
         ("$host", ".+"), ("$rank", ".+"), ("$straggler_factor", "1")]
for p in d["panels"]:
    gpu = p.get("description", "").startswith("GPU only (")
    if gpu != (sys.argv[2] == "gpu"):
        continue
    for t in p.get("targets", []):
        e = t["expr"]
        for var, value in subst:
            e = e.replace(var, value)
        assert "$" not in e, (p["title"], e)
        print(e)
PY
mapfile -t QUERIES < <(python3 "$WORK/dashboard_queries.py" "$ROOT/deploy/grafana/cnx-dashboard.json" all)
mapfile -t GPU_QUERIES < <(python3 "$WORK/dashboard_queries.py" "$ROOT/deploy/grafana/cnx-dashboard.json" gpu)
[ "${#QUERIES[@]}" -ge 40 ] || fail "only ${#QUERIES[@]} dashboard queries found"
[ "${#GPU_QUERIES[@]}" -ge 4 ] || fail "only ${#GPU_QUERIES[@]} GPU panel queries found"
ARGS=()
for q in "${QUERIES[@]}"; do ARGS+=(--query "$q"); done
# The GPU panels: with ranks on a GPU (they log "GPU metrics: device") they
# need data like the others; on the CPU (rank 0 logs "GPU metrics: none")
# they must evaluate and be empty.
wait_for 90 grep -q "GPU metrics: " "$WORK/workers.log" || fail "no rank started its metrics (workers.log)"
GPU_JOB=0
grep -q "GPU metrics: device" "$WORK/workers.log" && GPU_JOB=1
for q in "${GPU_QUERIES[@]}"; do
  if [ "$GPU_JOB" = 1 ]; then ARGS+=(--query "$q"); else ARGS+=(--query-valid "$q"); fi
done
# Our labels: cnx_job and host on every rank's series; Prometheus's job label is the scrape job's.
ARGS+=(--query 'count(cnx_worker_loss{cnx_job="dash-e2e",job="cnx",host!="",rank=~"0|1"}) == 2')
ARGS+=(--query 'cnx_coordinator_workers_alive{cnx_job="dash-e2e",job="cnx"} == 2')

bash "$ROOT/deploy/local/scrape_local.sh" --port 0 --interval 1 --timeout 180 \
  --targets "127.0.0.1:$COORD_METRICS,127.0.0.1:$WPORT,127.0.0.1:$((WPORT + 1))" "${ARGS[@]}" \
  > "$WORK/answers.json" 2> "$WORK/scrape.log" || {
  cat "$WORK/scrape.log" >&2
  fail "a dashboard query returned no data from the real job"
}
kill -0 "$WORKERS" 2>/dev/null || fail "the job ended before every panel had data"
[ "$(wc -l < "$WORK/answers.json")" -eq "$((${#QUERIES[@]} + ${#GPU_QUERIES[@]} + 2))" ] || fail "missing answers"
grep -q '"reason":"' "$WORK/answers.json" || fail "the corrupt-sample panel has no reason label"
# The build-info panel counts the ranks by version: both ranks, one version.
grep -q '"version":"' "$WORK/answers.json" || fail "the build-info panel has no version label"
if [ "$GPU_JOB" = 0 ]; then
  # The GPU answers come last (scrape_local.sh asks --query-valid after --query): all empty.
  tail -n "${#GPU_QUERIES[@]}" "$WORK/answers.json" | python3 -c '
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    assert d["status"] == "success" and d["data"]["result"] == [], line
' || fail "a GPU panel query has series although the ranks trained on the CPU"
  echo "ok: the ${#GPU_QUERIES[@]} GPU panel queries evaluate and are empty (CPU ranks: no GPU series)"
fi
echo "ok: every one of the dashboard's ${#QUERIES[@]} other panel queries returned data from a real 2-rank job"
