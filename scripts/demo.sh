#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine:
#   1. set up and build (scripts/setup.sh)
#   2. Fashion-MNIST -> shards (train 60k, test 10k)
#   3. a local cnx-coordinator + `mpirun -np 2 cnx-worker`: FCMAE pretraining
#      of ConvNeXt V2-atto with the sparse encoder, live progress, checkpoints
#      committed through the coordinator
#   4. export the encoder (safetensors, reference names)
#   5. reconstructions (PNG grid with column labels) and training curves
#      (loss, lr, throughput over steps; PNG)
#   6. linear-probe top-1 with 1% of the labels (600 images; 5,000 test
#      images), pretrained vs a randomly initialised encoder (the init the
#      pretraining started from) with the same probe budget; features of
#      whole images (the config's data.eval_crop_pct 1.0 and mean/std)
#   7. (CNX_DEMO_FINETUNE=1 only: ~3.5 more minutes on 2 cores) fine-tuning
#      with 1% of the labels, pretrained vs random init, same recipe and seed
#      (scripts/lib/finetune_recipe.sh, docs/evaluation.md)
# Steps and evaluation sizes are chosen so that the whole job fits in ~15
# minutes from a bare machine (README); scripts/eval_fashion_mnist.sh runs
# the full evaluation (3 seeds, 10,000 test images, fine-tuning with 1% and
# 10% of the labels).
# Everything goes to runs/demo/ (CNX_DEMO_DIR); the summary is printed at the end.
# CNX_DEMO_EVAL=0 stops after step 5 (pretraining, export, pictures).
# Extra arguments: --set KEY=VALUE goes to every program (e.g. --set
# schedule.epochs=0.5); anything else is passed to cnx-worker.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# Only the packages and programs the demo runs are installed and built (the
# test tools, tests and benchmarks come with scripts/test.sh).
# CNX_DEMO_SKIP_SETUP=1: already built.
[ "${CNX_DEMO_SKIP_SETUP:-0}" = 1 ] ||
  CNX_PACKAGES=${CNX_PACKAGES:-programs} CNX_BUILD_TARGETS="cnx-make-shards cnx-coordinator cnx-ctl cnx-worker cnx-export cnx-visualize cnx-plot-log cnx-eval cnx-finetune" \
    scripts/setup.sh

say() { printf '\n\033[1m[demo]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[demo] FAILED:\033[0m %s\n' "$*" >&2; exit 1; }

B=$ROOT/${CNX_BUILD_DIR:-build}
OUT=${CNX_DEMO_DIR:-runs/demo}
CONFIG=configs/fcmae_fashion_mnist.yaml
PROBE_TRAIN=${CNX_PROBE_TRAIN:-600}   # 1% of the training labels
PROBE_TEST=${CNX_PROBE_TEST:-5000}
FINETUNE=${CNX_DEMO_FINETUNE:-0}
FT_LABELS=${CNX_FT_LABELS:-600}      # 1% of the training labels
FT_EPOCHS=${CNX_FT_EPOCHS:-10}    # the recipe's epochs with 600 labels
FT_TEST=${CNX_FT_TEST:-2000}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$OUT"
T0=$(date +%s)

# Free TCP ports for the coordinator and the metrics endpoints.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GRPC_PORT=$(free_port)
COORD_METRICS=$(free_port)
WORKER_METRICS=$(free_port)
# --set KEY=VALUE arguments go to every program (coordinator, workers, tools);
# the other arguments to cnx-worker.
USER_SETS=() WORKER_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --set) [ $# -ge 2 ] || die "--set needs KEY=VALUE"; USER_SETS+=(--set "$2"); shift 2 ;;
    --set=*) USER_SETS+=(--set "${1#--set=}"); shift ;;
    *) WORKER_ARGS+=("$1"); shift ;;
  esac
done
SETS=(--set "data.index=$OUT/data/train/index.json" --set "checkpoint.root=$OUT/checkpoints"
      --set "coordinator.listen=127.0.0.1:$GRPC_PORT" --set "coordinator.state_db=$OUT/coordinator.sqlite"
      --set "coordinator.token_file=$OUT/job.token" --set "metrics.coordinator_port=$COORD_METRICS"
      --set "metrics.worker_port=$WORKER_METRICS" ${USER_SETS[@]+"${USER_SETS[@]}"})

say "1/7 Fashion-MNIST shards -> $OUT/data"
. "$ROOT/scripts/lib/fashion_mnist_shards.sh"
fashion_mnist_shards "$B" "$OUT/data" --verbose

say "2/7 local coordinator on 127.0.0.1:$GRPC_PORT (metrics :$COORD_METRICS)"
# A fresh job each run: new token, new state.
rm -rf "$OUT/checkpoints" "$OUT"/coordinator.sqlite*
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$OUT/job.token"
chmod 600 "$OUT/job.token"
"$B/coordinator/cnx-coordinator" --config $CONFIG "${SETS[@]}" > "$OUT/coordinator.log" 2>&1 &
COORD_PID=$!
trap 'kill $COORD_PID 2>/dev/null || true' EXIT
"$B/coordinator/cnx-ctl" --config $CONFIG "${SETS[@]}" --timeout 30 status > /dev/null \
  || { cat "$OUT/coordinator.log" >&2; die "the coordinator did not come up"; }

say "3/7 FCMAE pretraining: mpirun -np 2 cnx-worker (progress every 10 steps; worker metrics :$WORKER_METRICS-$((WORKER_METRICS + 1)))"
mpirun --oversubscribe --bind-to none -np 2 "$B/worker/cnx-worker" --config $CONFIG "${SETS[@]}" \
  --coordinator "127.0.0.1:$GRPC_PORT" --resume none ${WORKER_ARGS[@]+"${WORKER_ARGS[@]}"} 2>&1 | tee "$OUT/train.log" \
  || die "training failed (log: $OUT/train.log, coordinator: $OUT/coordinator.log)"
"$B/coordinator/cnx-ctl" --config $CONFIG "${SETS[@]}" status | tee "$OUT/coordinator_status.txt"
T_TRAIN=$(date +%s)

say "4/7 export the encoder of the last committed checkpoint"
CKPT=$("$B/coordinator/cnx-ctl" --config $CONFIG "${SETS[@]}" latest) || die "no committed checkpoint"
echo "  latest committed checkpoint: $CKPT"
"$B/tools/export/cnx-export" -c "$CKPT" -o "$OUT/encoder_atto_fcmae.safetensors" || die "cnx-export"

say "5/7 reconstructions and training curves -> $OUT/reconstructions"
"$B/tools/visualize/cnx-visualize" --config $CONFIG ${USER_SETS[@]+"${USER_SETS[@]}"} -c "$CKPT" --index "$OUT/data/test/index.json" --count 8 \
  -o "$OUT/reconstructions" || die "cnx-visualize"
"$B/tools/visualize/cnx-plot-log" -i "$OUT/train.log" -o "$OUT/reconstructions/training_curves.png" \
  --title "FCMAE " || die "cnx-plot-log"

if [ "${CNX_DEMO_EVAL:-1}" = 0 ]; then  # pretraining only (scripts/pretraining_curve.sh)
  say "done: pretraining only (CNX_DEMO_EVAL=0); encoder $OUT/encoder_atto_fcmae.safetensors"
  exit 0
fi

say "6/7 linear probe on Fashion-MNIST ($PROBE_TRAIN train / $PROBE_TEST test images): pretrained vs random init"
PROBE=(--config $CONFIG ${USER_SETS[@]+"${USER_SETS[@]}"} --train-index "$OUT/data/train/index.json" --test-index "$OUT/data/test/index.json"
       --max-train "$PROBE_TRAIN" --max-test "$PROBE_TEST")
# Same budget for both: same images, input size, head epochs, seed; 2 ranks x 1 thread.
# The evaluation starts and the fine-tuning recipe of scripts/eval_fashion_mnist.sh
# (scripts/lib/finetune_recipe.sh, chosen on held-out training images: docs/evaluation.md).
. "$ROOT/scripts/lib/finetune_recipe.sh"
EVAL=(mpirun --oversubscribe --bind-to none -np 2 "$B/tools/eval/cnx-eval" --threads 1)
"${EVAL[@]}" -c "$OUT/encoder_atto_fcmae.safetensors" "${PROBE[@]}" \
  -o "$OUT/probe_pretrained.json" || die "cnx-eval (pretrained)"
"${EVAL[@]}" "${RANDOM_START[@]}" "${PROBE[@]}" \
  -o "$OUT/probe_random.json" || die "cnx-eval (random init)"

rm -f "$OUT"/finetune_*.json  # never a summary of an earlier run's
if [ "$FINETUNE" = 1 ]; then
  say "7/7 fine-tuning with $FT_LABELS labels ($FT_EPOCHS epochs, $FT_TEST test images): pretrained vs random init"
  # The first 1,000 training images are held out, the next $FT_LABELS are
  # trained on; seed 0.
  FT=(mpirun --oversubscribe --bind-to none -np 2 "$B/tools/eval/cnx-finetune" --threads 1 --config $CONFIG
      ${USER_SETS[@]+"${USER_SETS[@]}"} --train-index "$OUT/data/train/index.json"
      --test-index "$OUT/data/test/index.json" --max-train "$FT_LABELS" --max-test "$FT_TEST"
      --epochs "$FT_EPOCHS" "${FT_RECIPE[@]}" --seed 0)
  for start in pretrained random; do
    mapfile -t START_ARGS < <(ft_start_args $start "$OUT/encoder_atto_fcmae.safetensors")
    "${FT[@]}" "${START_ARGS[@]}" -o "$OUT/finetune_$start.json" > "$OUT/finetune_$start.log" 2>&1 ||
      { tail -20 "$OUT/finetune_$start.log"; die "cnx-finetune ($start)"; }
  done
fi

T_END=$(date +%s)
python3 - "$OUT" $((T_TRAIN - T0)) $((T_END - T0)) "$CKPT" "$FINETUNE" <<'PY'
import json, sys
out, t_train, t_all, ckpt, finetune = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
pre = json.load(open(f"{out}/probe_pretrained.json"))
rnd = json.load(open(f"{out}/probe_random.json"))
def top1(d):
    for k in ("top1", "top_1", "test_top1", "accuracy"):
        if k in d: return float(d[k])
    raise SystemExit(f"no top-1 in {d}")
a, b = top1(pre), top1(rnd)
scale = 100.0 if a <= 1.0 and b <= 1.0 else 1.0
lines = [
    "# FCMAE demo summary",
    f"linear probe with {pre['n_train']} labels ({pre['n_test']} test images, seed 0):",
    f"  pretrained encoder                   : {a*scale:.2f}%",
    f"  random init (the pretraining's start): {b*scale:.2f}%",
    f"  margin                               : {(a-b)*scale:+.2f} points",
]
if finetune:
    ft_pre = json.load(open(f"{out}/finetune_pretrained.json"))
    ft_rnd = json.load(open(f"{out}/finetune_random.json"))
    lines += [
        f"fine-tuning with {ft_pre['n_train']} labels ({ft_pre['epochs']} epochs, {ft_pre['n_test']} test images, seed 0):",
        f"  pretrained encoder                   : {100*ft_pre['top1']:.2f}%",
        f"  random init                          : {100*ft_rnd['top1']:.2f}%",
        f"  margin                               : {100*(ft_pre['top1']-ft_rnd['top1']):+.2f} points",
    ]
lines += [
    "3 seeds, 10,000 test images, fine-tuning with 1% and 10% of the labels: scripts/eval_fashion_mnist.sh",
    f"evaluation transform                   : {pre.get('eval_transform', 'unknown')}",
    f"time: shards + pretraining {t_train} s, whole run {t_all} s",
    "",
    f"checkpoints     : {out}/checkpoints (latest committed: {ckpt})",
    f"encoder         : {out}/encoder_atto_fcmae.safetensors (reference names)",
    f"reconstructions : {out}/reconstructions/grid.png",
    f"training curves : {out}/reconstructions/training_curves.png",
    f"probe results   : {out}/probe_pretrained.json, {out}/probe_random.json",
] + ([f"fine-tuning     : {out}/finetune_pretrained.json, {out}/finetune_random.json"] if finetune else []) + [
    f"logs            : {out}/train.log, {out}/coordinator.log",
]
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
