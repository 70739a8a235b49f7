#!/usr/bin/env bash
# The paper's FCMAE ablations at the main job's small scale: ConvNeXt V2-atto
# pretrained on Fashion-MNIST with configs/fcmae_fashion_mnist.yaml, one
# setting changed per variant, each pretrained with several seeds, each
# encoder scored by a linear probe on whole images (cnx-eval) with the same
# budget; a randomly initialised encoder is the floor. Each variant is the
# config file configs/ablations/<variant>.yaml (base: the main job's config,
# plus its one change; runnable on its own, see its header):
#
#   baseline      sparse encoder, GRN (V2 blocks), mask ratio 0.6 (the config)
#   dense         model.encoder: dense: the paper's dense-convolution
#                 baseline, dense convolutions on the masked image (the
#                 paper's case against it: information leaks through the
#                 mask and training sees a different input distribution than
#                 evaluation); ~2.2x the baseline's pretraining time
#   dense_masked  model.encoder: dense_masked: the sparse encoder's function
#                 computed densely (its oracle: the same function as
#                 baseline, measured identical at seed 0, in 3.5x the time);
#                 not in the default VARIANTS
#   v1            model.block: v1: ConvNeXt V1 blocks (layer scale, no GRN)
#   mask0.4       mask.ratio: 0.4
#   mask0.8       mask.ratio: 0.8
#   mask<R>       any other ratio: baseline.yaml with --set mask.ratio=R
#   <name>        any other configs/ablations/<name>.yaml you add
#
# Writes $OUT/results.tsv (variant, seed, probe top-1, last logged loss,
# pretraining seconds) and $OUT/table.md (mean +- standard error over seeds;
# the random-init floor is probed with each seed's random encoder).
# The runs are independent: an interrupted run is redone, finished ones are
# kept (delete $OUT to start over).
#
# Environment (defaults in brackets):
#   VARIANTS ["baseline dense v1 mask0.4 mask0.8"]   SEEDS ["0 1 2"]
#   EPOCHS [0.64, the config's] pretraining epochs of 60,000 images
#   WARMUP [the config's share of it: EPOCHS x 0.1 / 0.64] warmup epochs
#   PROBE_TRAIN [10000] PROBE_TEST [10000]   NP [2] ranks x 1 thread
#   CNX_DATA [runs/demo/data] shards (made when missing)
#   CNX_ABLATION_DIR [runs/ablations]
# Extra arguments go to every cnx-worker run (e.g. --set data.batch_size=16).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CNX_BUILD_DIR:-build}
CONFIG=configs/fcmae_fashion_mnist.yaml  # the main job's: the random-init floor's input size and normalisation
VARIANTS=${VARIANTS:-baseline dense v1 mask0.4 mask0.8}
SEEDS=${SEEDS:-0 1 2}
EPOCHS=${EPOCHS:-0.64}
WARMUP=${WARMUP:-$(awk -v e="$EPOCHS" 'BEGIN { printf "%.4g", e * 0.1 / 0.64 }')}
PROBE_TRAIN=${PROBE_TRAIN:-10000}
PROBE_TEST=${PROBE_TEST:-10000}
NP=${NP:-2}
DATA=${CNX_DATA:-runs/demo/data}
OUT=${CNX_ABLATION_DIR:-runs/ablations}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
say() { printf '\n\033[1m[ablations]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[ablations] FAILED:\033[0m %s\n' "$*" >&2; exit 1; }
for p in worker/cnx-worker tools/export/cnx-export tools/eval/cnx-eval tools/make_shards/cnx-make-shards; do
  [ -x "$B/$p" ] || die "$B/$p is not built (bash scripts/setup.sh)"
done

# The config file of each variant, and the --set a mask ratio without a file needs.
variant_config() {
  if [ -f "configs/ablations/$1.yaml" ]; then
    echo "configs/ablations/$1.yaml"
  elif [[ "$1" == mask* ]]; then
    echo configs/ablations/baseline.yaml
  else
    die "unknown variant '$1' (baseline dense_masked v1 mask<ratio>, or a configs/ablations/<variant>.yaml)"
  fi
}
variant_sets() {
  [ ! -f "configs/ablations/$1.yaml" ] && [[ "$1" == mask* ]] &&
    echo "--set mask.ratio=${1#mask} --set job.id=fcmae-fashion-mnist-$1"
  return 0
}
for v in $VARIANTS; do variant_config "$v" > /dev/null; done

mkdir -p "$OUT"
. scripts/lib/fashion_mnist_shards.sh
. scripts/lib/finetune_recipe.sh  # RANDOM_START: the random-init floor's flags
fashion_mnist_shards "$B" "$DATA"
RUN=(mpirun --oversubscribe --bind-to none -np "$NP")
PROBE=(--train-index "$DATA/train/index.json" --test-index "$DATA/test/index.json"
       --max-train "$PROBE_TRAIN" --max-test "$PROBE_TEST" --threads 1)

TSV=$OUT/results.tsv
[ -f "$TSV" ] || printf 'variant\tseed\tprobe_top1\tlast_loss\tpretrain_s\n' > "$TSV"
for seed in $SEEDS; do
  grep -q "^random_init	$seed	" "$TSV" && continue
  say "random-init floor, seed $seed: linear probe of an untrained atto (FCMAE init)"
  "${RUN[@]}" "$B/tools/eval/cnx-eval" "${RANDOM_START[@]}" --seed "$seed" --config $CONFIG \
    "${PROBE[@]}" -o "$OUT/probe_random$seed.json" > "$OUT/probe_random$seed.log" 2>&1 \
    || die "cnx-eval (random init): $OUT/probe_random$seed.log"
  python3 -c 'import json,sys; print("random_init\t%s\t%.4f\t\t0" % (sys.argv[2], json.load(open(sys.argv[1]))["top1"]))' \
    "$OUT/probe_random$seed.json" "$seed" >> "$TSV"
done
for v in $VARIANTS; do
  for seed in $SEEDS; do
    if grep -q "^$v	$seed	" "$TSV"; then
      echo "  $v seed $seed: done"
      continue
    fi
    dir=$OUT/$v-seed$seed
    rm -rf "$dir"
    mkdir -p "$dir"
    cfg=$(variant_config "$v")
    read -ra EXTRA <<< "$(variant_sets "$v")"
    SETS=(--set "data.index=$DATA/train/index.json" --set "checkpoint.root=$dir/checkpoints" --set "job.seed=$seed"
          --set "schedule.epochs=$EPOCHS" --set "schedule.warmup_epochs=$WARMUP" --set metrics.enabled=false "${EXTRA[@]}")
    say "$v, seed $seed: pretraining ($cfg, $EPOCHS epochs, $NP ranks)"
    t0=$(date +%s)
    "${RUN[@]}" "$B/worker/cnx-worker" --config "$cfg" "${SETS[@]}" --resume none "$@" > "$dir/train.log" 2>&1 \
      || { tail -20 "$dir/train.log" >&2; die "pretraining $v seed $seed ($dir/train.log)"; }
    t1=$(date +%s)
    "$B/tools/export/cnx-export" -c "$dir/checkpoints" -o "$dir/encoder.safetensors" > "$dir/export.log" 2>&1 \
      || die "cnx-export $v seed $seed ($dir/export.log)"
    # The variant's own config: the probe's input size and normalisation are the pretraining's.
    "${RUN[@]}" "$B/tools/eval/cnx-eval" -c "$dir/encoder.safetensors" --config "$cfg" "${SETS[@]}" "${PROBE[@]}" \
      -o "$dir/probe.json" > "$dir/probe.log" 2>&1 || die "cnx-eval $v seed $seed ($dir/probe.log)"
    python3 - "$dir" "$v" "$seed" $((t1 - t0)) >> "$TSV" <<'PY'
import json, re, sys
d, v, seed, secs = sys.argv[1:]
top1 = json.load(open(f"{d}/probe.json"))["top1"]
losses = re.findall(r"loss ([0-9.]+(?:e[-+]?[0-9]+)?)", open(f"{d}/train.log").read())
print(f"{v}\t{seed}\t{top1:.4f}\t{losses[-1] if losses else ''}\t{secs}")
PY
    echo "  $(tail -1 "$TSV")"
  done
done

python3 - "$TSV" "$EPOCHS" "$PROBE_TRAIN" "$PROBE_TEST" > "$OUT/table.md" <<'PY'
import csv, math, sys
sys.path.insert(0, "scripts")
from eval_table import mean_se  # the one mean / standard-error formula of the evaluation scripts
tsv, epochs, ntrain, ntest = sys.argv[1:]
rows = list(csv.DictReader(open(tsv), delimiter="\t"))
order = []
for r in rows:
    if r["variant"] not in order: order.append(r["variant"])
print(f"FCMAE ablations, ConvNeXt V2-atto on Fashion-MNIST, {epochs} pretraining epochs; "
      f"linear probe on {ntrain} training / {ntest} test images (whole images). Mean +- standard error over seeds.\n")
print("| variant | seeds | probe top-1 (%) | last pretraining loss | pretraining s |")
print("|---|---|---|---|---|")
for v in order:
    rs = [r for r in rows if r["variant"] == v]
    m, se = mean_se([100 * float(r["probe_top1"]) for r in rs])
    se = "-" if math.isnan(se) else f"{se:.2f}"
    losses = [float(r["last_loss"]) for r in rs if r["last_loss"]]
    lm = f"{mean_se(losses)[0]:.4f}" if losses else "-"
    secs = sum(float(r["pretrain_s"]) for r in rs) / len(rs)
    print(f"| {v} | {len(rs)} | {m:.2f} +- {se} | {lm} | {secs:.0f} |")
PY
cat "$OUT/table.md"
