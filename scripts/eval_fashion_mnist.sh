#!/usr/bin/env bash
# What pretraining buys on Fashion-MNIST, with few labels: fine-tune and
# linear-probe (a) a randomly initialised encoder (the FCMAE initialisation
# the pretraining starts from) and (b) the main job's FCMAE encoder, with 1%
# (600) and 10% (6,000) of the training labels, several seeds each; score
# every run on the test set (whole images) and print a Markdown table of
# means with standard errors (written to $OUT/table.md; every run is a row of
# $OUT/runs.tsv).
#
# Protocol: the first HOLDOUT labelled training images are held out (never
# trained on) and scored after the last fine-tuning epoch: recipes are chosen
# on them, never on the test set (docs/evaluation.md). Fine-tuning trains on the
# next N images (N in LABELS); the probe's head trains on the first N (it
# has no recipe to choose). A seed changes the random init, the head's init,
# the shuffles and the augmentation; the labelled images stay the same.
# Evaluation sees whole images at the pretraining's input size
# (configs/fcmae_fashion_mnist.yaml: data.eval_crop_pct 1.0, its mean/std).
# A run whose JSON is already in $OUT is not run again (delete it to redo),
# so an interrupted evaluation resumes and more seeds can be added later.
#
# Environment (defaults in brackets):
#   CNX_ENCODER  [runs/demo/encoder_atto_fcmae.safetensors] (scripts/demo.sh writes it)
#   CNX_DATA     [runs/demo/data]  shards (made here when missing)
#   CNX_EVAL_DIR [runs/eval_fashion_mnist]
#   LABELS ["600 6000"]  SEEDS ["0 1 2"]  HOLDOUT [1000]  TEST [10000]  NP [2]
#   STARTS ["random pretrained"]  PROTOCOLS ["finetune probe"]
#   The fine-tuning recipe (chosen on the held-out split: docs/evaluation.md),
#   shared with scripts/demo.sh: scripts/lib/finetune_recipe.sh, whose
#   variables override it (LR [1e-3], LR_PRETRAINED, LAYER_DECAY, EPOCHS_<N>,
#   CROP_SCALE, DROP_PATH, SMOOTHING, BATCH)
# Extra arguments go to every cnx-finetune run.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CNX_BUILD_DIR:-build}
ENCODER=${CNX_ENCODER:-runs/demo/encoder_atto_fcmae.safetensors}
DATA=${CNX_DATA:-runs/demo/data}
OUT=${CNX_EVAL_DIR:-runs/eval_fashion_mnist}
LABELS=${LABELS:-600 6000}
SEEDS=${SEEDS:-0 1 2}
TEST=${TEST:-10000}
NP=${NP:-2}
STARTS=${STARTS:-random pretrained}
PROTOCOLS=${PROTOCOLS:-finetune probe}
CONFIG=configs/fcmae_fashion_mnist.yaml
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
say() { printf '\n\033[1m[eval]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[eval] FAILED:\033[0m %s\n' "$*" >&2; exit 1; }

for s in $STARTS; do case $s in random | pretrained) ;; *) die "STARTS: unknown start '$s' (random pretrained)" ;; esac; done
for p in $PROTOCOLS; do case $p in finetune | probe) ;; *) die "PROTOCOLS: unknown protocol '$p' (finetune probe)" ;; esac; done
case " $STARTS " in *" pretrained "*)
  [ -e "$ENCODER" ] || die "no encoder at $ENCODER (run scripts/demo.sh first, or set CNX_ENCODER)" ;;
esac
mkdir -p "$OUT"
. scripts/lib/fashion_mnist_shards.sh
fashion_mnist_shards "$B" "$DATA"

RUN=(mpirun --oversubscribe --bind-to none -np "$NP")
COMMON=(--config "$CONFIG" --train-index "$DATA/train/index.json" --test-index "$DATA/test/index.json"
        --max-test "$TEST" --threads 1)
. scripts/lib/finetune_recipe.sh
declare -A START_ARGS_PROBE=([random]="${RANDOM_START[*]}" [pretrained]="-c $ENCODER")

run_one() {  # run_one PROTOCOL N START SEED [extra cnx-finetune args]: one run -> $OUT/NAME.json
  local protocol=$1 n=$2 start=$3 seed=$4; shift 4
  local name=${protocol}_${n}_${start}_s${seed}
  [ -s "$OUT/$name.json" ] && { echo "  $name: done before ($(python3 -c "import json,sys; print('%.2f%%' % (100*json.load(open(sys.argv[1]))['top1']))" "$OUT/$name.json"))"; return; }
  local t0; t0=$(date +%s)
  if [ "$protocol" = finetune ]; then
    local start_args
    mapfile -t start_args < <(ft_start_args "$start" "$ENCODER")
    "${RUN[@]}" "$B/tools/eval/cnx-finetune" "${COMMON[@]}" --max-train "$n" --epochs "$(ft_epochs "$n")" \
      "${FT_RECIPE[@]}" "${start_args[@]}" --seed "$seed" \
      -o "$OUT/$name.json.part" --curves "$OUT/$name.png" "$@" > "$OUT/$name.log" 2>&1 ||
      { tail -20 "$OUT/$name.log" >&2; die "$name (log: $OUT/$name.log)"; }
  else
    # shellcheck disable=SC2086
    "${RUN[@]}" "$B/tools/eval/cnx-eval" "${COMMON[@]}" --max-train "$n" ${START_ARGS_PROBE[$start]} \
      --seed "$seed" -o "$OUT/$name.json.part" > "$OUT/$name.log" 2>&1 ||
      { tail -20 "$OUT/$name.log" >&2; die "$name (log: $OUT/$name.log)"; }
  fi
  echo $(( $(date +%s) - t0 )) > "$OUT/$name.seconds"
  mv "$OUT/$name.json.part" "$OUT/$name.json"
  echo "  $name: $(python3 -c "import json,sys; print('%.2f%%' % (100*json.load(open(sys.argv[1]))['top1']))" "$OUT/$name.json") ($(cat "$OUT/$name.seconds") s)"
}

for n in $LABELS; do
  for seed in $SEEDS; do
    for protocol in $PROTOCOLS; do
      for start in $STARTS; do
        say "$protocol, $n labels, $start, seed $seed"
        if [ "$protocol" = finetune ]; then run_one "$protocol" "$n" "$start" "$seed" "$@"
        else run_one "$protocol" "$n" "$start" "$seed"; fi
      done
    done
  done
done

python3 scripts/eval_table.py "$OUT" --encoder "$ENCODER" \
  --recipe "$FT_RECIPE_TEXT; $NP rank(s)"
