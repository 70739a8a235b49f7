#!/usr/bin/env bash
# Does more pretraining keep paying? One long FCMAE pretraining with the main
# job's settings (configs/fcmae_fashion_mnist.yaml, scripts/demo.sh's
# coordinator + 2 workers) for EPOCHS epochs with every checkpoint kept, then
# the evaluation of scripts/eval_fashion_mnist.sh at 0 (random init), 1/4, 1/2
# and all of its steps: fine-tuning with FT_LABELS labels and a linear probe
# with PROBE_LABELS labels, SEEDS each. Writes $OUT/curve.tsv (one row per
# point: steps, images seen, mean test top-1 of each protocol and its
# standard error) and $OUT/curve.png (top-1 over pretraining steps).
#
# The measured run in docs/evaluation.md is this script with its defaults
# (4.2668 epochs = 3,998 steps of 64 images at 128 px, 6.7x the main job,
# ~1.1 CPU-hours of pretraining on 2 quiet cores; checkpoints every 500
# steps); its curve.tsv is docs/results/pretraining_curve_128px_std02.tsv.
#
# Environment (defaults in brackets):
#   CNX_CURVE_DIR [runs/curve]  EPOCHS [4.2668]  EVERY [500] checkpoint every N steps
#   SEEDS ["0"]  FT_LABELS [600]  PROBE_LABELS [6000]  TEST [10000]
#   CNX_CURVE_SKIP_PRETRAIN=1: evaluate the checkpoints already in $CNX_CURVE_DIR
# Extra arguments go to scripts/demo.sh (--set KEY=VALUE to every program).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CNX_BUILD_DIR:-build}
OUT=${CNX_CURVE_DIR:-runs/curve}
EPOCHS=${EPOCHS:-4.2668}
EVERY=${EVERY:-500}
SEEDS=${SEEDS:-0}
FT_LABELS=${FT_LABELS:-600}
PROBE_LABELS=${PROBE_LABELS:-6000}
TEST=${TEST:-10000}
say() { printf '\n\033[1m[curve]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[curve] FAILED:\033[0m %s\n' "$*" >&2; exit 1; }

if [ "${CNX_CURVE_SKIP_PRETRAIN:-0}" != 1 ]; then
  say "pretraining: $EPOCHS epochs, a checkpoint every $EVERY steps, all kept -> $OUT"
  CNX_DEMO_DIR=$OUT CNX_DEMO_EVAL=0 bash scripts/demo.sh --set "schedule.epochs=$EPOCHS" \
    --set "checkpoint.every_steps=$EVERY" --set checkpoint.keep=1000 "$@" || die "pretraining (scripts/demo.sh)"
fi

# The committed checkpoints, by step (the coordinator layout <root>/<job>/ckpt-<plan>-step-<step>).
mapfile -t CKPTS < <(ls -d "$OUT"/checkpoints/*/ckpt-*-step-* 2>/dev/null | sort -t- -k4,4n)
[ ${#CKPTS[@]} -gt 0 ] || die "no checkpoints under $OUT/checkpoints"
step_of() { local s=${1##*-step-}; echo $((10#$s)); }
LAST=$(step_of "${CKPTS[-1]}")
# The checkpoint nearest to each fraction of the run.
pick() {  # pick TARGET_STEP -> the checkpoint folder with the nearest step
  local best="" bd=-1 c d
  for c in "${CKPTS[@]}"; do
    d=$(($(step_of "$c") - $1)); d=${d#-}
    if [ $bd -lt 0 ] || [ $d -lt $bd ]; then best=$c bd=$d; fi
  done
  echo "$best"
}
POINTS=(0 "$(pick $((LAST / 4)))" "$(pick $((LAST / 2)))" "${CKPTS[-1]}")

EVAL_ENV=(SEEDS="$SEEDS" TEST="$TEST" CNX_DATA="$OUT/data" CNX_BUILD_DIR="$B")
for p in "${POINTS[@]}"; do
  if [ "$p" = 0 ]; then
    say "step 0 (random init, the FCMAE init the pretraining starts from)"
    for proto in finetune probe; do
      n=$FT_LABELS; [ $proto = probe ] && n=$PROBE_LABELS
      env "${EVAL_ENV[@]}" CNX_EVAL_DIR="$OUT/eval/step0" STARTS=random PROTOCOLS=$proto LABELS=$n \
        bash scripts/eval_fashion_mnist.sh > "$OUT/eval_step0_$proto.log" 2>&1 || die "evaluation at step 0 ($OUT/eval_step0_$proto.log)"
    done
    continue
  fi
  s=$(step_of "$p")
  enc=$OUT/eval/step$s/encoder.safetensors
  mkdir -p "$OUT/eval/step$s"
  [ -s "$enc" ] || "$B/tools/export/cnx-export" -c "$p" -o "$enc" > /dev/null || die "cnx-export $p"
  say "step $s ($p)"
  for proto in finetune probe; do
    n=$FT_LABELS; [ $proto = probe ] && n=$PROBE_LABELS
    env "${EVAL_ENV[@]}" CNX_EVAL_DIR="$OUT/eval/step$s" CNX_ENCODER="$enc" STARTS=pretrained PROTOCOLS=$proto \
      LABELS=$n bash scripts/eval_fashion_mnist.sh > "$OUT/eval_step${s}_$proto.log" 2>&1 ||
      die "evaluation at step $s ($OUT/eval_step${s}_$proto.log)"
  done
done

# Only the points evaluated above (not other step folders an earlier,
# interrupted run may have left in $OUT/eval).
POINT_STEPS=(0)
for p in "${POINTS[@]:1}"; do POINT_STEPS+=("$(step_of "$p")"); done
python3 - "$OUT" "$FT_LABELS" "$PROBE_LABELS" "${POINT_STEPS[@]}" <<'PY'
import glob, json, math, sys
sys.path.insert(0, "scripts")
from eval_table import mean_se  # the table's mean and standard error
out, ft_n, probe_n = sys.argv[1], sys.argv[2], sys.argv[3]
rows = []
for step in sorted(set(int(s) for s in sys.argv[4:])):
    d = f"{out}/eval/step{step}"
    row = [step, step * 64]
    for proto, n in (("finetune", ft_n), ("probe", probe_n)):
        xs = [100 * json.load(open(f))["top1"] for f in glob.glob(f"{d}/{proto}_{n}_*_s*.json")]
        m, se = mean_se(xs) if xs else (float("nan"), float("nan"))
        row += [m, se, len(xs)]
    rows.append(row)
cols = ["steps", "images_seen", f"finetune_{ft_n}", f"finetune_{ft_n}_se", "finetune_seeds",
        f"probe_{probe_n}", f"probe_{probe_n}_se", "probe_seeds"]
with open(f"{out}/curve.tsv", "w") as f:
    f.write("\t".join(cols) + "\n")
    for r in rows:
        f.write("\t".join("" if isinstance(v, float) and math.isnan(v) else (f"{v:.2f}" if isinstance(v, float) else str(v))
                          for v in r) + "\n")
print(open(f"{out}/curve.tsv").read(), end="")
PY
"$B/tools/visualize/cnx-plot-log" --tsv -i "$OUT/curve.tsv" --x steps --y "finetune_$FT_LABELS" \
  --y "probe_$PROBE_LABELS" --title "top-1 % " -o "$OUT/curve.png" || die "cnx-plot-log"
say "curve: $OUT/curve.tsv, $OUT/curve.png"
