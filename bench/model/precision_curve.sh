#!/usr/bin/env bash
# bf16 vs fp32 on the demo (configs/fcmae_fashion_mnist.yaml, 64 px), on CPU:
# the loss curve and the step time of cnx-worker, one rank, for N steps.
#
#   bench/model/precision_curve.sh [BUILD_DIR] [STEPS] [OUT_DIR]
#   (defaults: build, 300, runs/precision_curve)
#
# Three runs (concurrent) of the same schedule on the same shards: fp32 with job.seed 0,
# fp32 with job.seed 1 (the noise: another init, other masks and crops),
# bf16 with job.seed 0. One rank with data.batch_size 64 keeps the demo's
# global batch (2 ranks x 32), so the lr schedule is the demo's; 1 thread.
# Prints, from the progress lines (schedule.log_every=1: every step's loss and
# time), the loss averaged over windows of 25 steps for each run, the mean
# |difference| of those window means bf16 - fp32(seed 0) and fp32(seed 1) -
# fp32(seed 0), the last window of each, and the median s/step of each run
# (this CPU, same session; compare ratios).
# Makes the Fashion-MNIST shards with cnx-make-shards when OUT_DIR has none
# (Debian's dataset-fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${1:-build}
STEPS=${2:-300}
OUT=${3:-runs/precision_curve}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$OUT"
if [ ! -f "$OUT/data/train/index.json" ]; then
  "$B/tools/make_shards/cnx-make-shards" --source fashion-mnist --split train -o "$OUT/data/train" \
    --samples-per-shard 5000 >"$OUT/make_shards.log" 2>&1
fi
run() {  # name precision seed
  rm -rf "$OUT/ck-$1"
  "$B/worker/cnx-worker" --config configs/fcmae_fashion_mnist.yaml --max-steps "$STEPS" --threads 1 \
    --set "data.index=$OUT/data/train/index.json" --set "checkpoint.root=$OUT/ck-$1" \
    --set checkpoint.every_steps=0 --set data.batch_size=64 --set "train.precision=$2" --set "job.seed=$3" \
    --set schedule.log_every=1 --set metrics.enabled=false --resume none >"$OUT/$1.log" 2>&1
}
# Concurrently (independent processes; on a loaded machine this is what fits
# in the time): the step times below are then contended; the same-run speed
# ratio comes from cnx-fcmae-step-bench (bench/model/README.md).
run fp32 fp32 0 &
run fp32-seed1 fp32 1 &
run bf16 bf16 0 &
wait
python3 - "$OUT" <<'PY'
import re, statistics, sys
out, W = sys.argv[1], 25
def curve(name):
    loss, sec = {}, []
    for line in open(f"{out}/{name}.log"):
        m = re.search(r"step (\d+)/\d+ .*?\| loss ([^ ]+) .*?\| ([0-9.]+) s/step", line)
        if m:
            loss[int(m.group(1))] = float(m.group(2))
            sec.append(float(m.group(3)))
    windows = {}
    for s, l in loss.items():
        windows.setdefault((s - 1) // W, []).append(l)
    return {(k + 1) * W: sum(v) / len(v) for k, v in sorted(windows.items()) if len(v) == W}, sec
runs = {n: curve(n) for n in ("fp32", "fp32-seed1", "bf16")}
base = runs["fp32"][0]
print(f"mean loss over windows of {W} steps")
print("step  fp32(s0)  fp32(s1)  bf16(s0)")
for s, l in base.items():
    print(f"{s:4d}  {l:.4f}    {runs['fp32-seed1'][0].get(s, float('nan')):.4f}    "
          f"{runs['bf16'][0].get(s, float('nan')):.4f}")
def mad(name):
    d = [abs(l - base[s]) for s, l in runs[name][0].items() if s in base]
    return sum(d) / len(d) if d else float("nan")
print(f"mean |fp32(s1) - fp32(s0)| = {mad('fp32-seed1'):.4f}   (noise: another seed)")
print(f"mean |bf16(s0) - fp32(s0)| = {mad('bf16'):.4f}")
for n, (pts, sec) in runs.items():
    last = max(pts.items()) if pts else (0, float("nan"))
    med = statistics.median(sec[5:]) if len(sec) > 5 else float("nan")
    print(f"{n:10s}: last window (to step {last[0]}) loss {last[1]:.4f}; median {med:.3f} s/step (steps 6..)")
PY
