#!/usr/bin/env bash
# What pretraining does, on Fashion-MNIST: fine-tune (a) from random init
# (the FCMAE initialisation the pretraining starts from, and the dense std-0.02
# init of supervised training) and (b) from the main job's FCMAE encoder with
# one budget, and linear-probe the FCMAE init and the encoder; print a
# Markdown table (top-1, epochs, wall time, held-out top-1 per epoch) and
# write it to $OUT/table.md.
#
# Protocol: the first HOLDOUT labelled training images are held out (never
# trained on) and evaluated after every fine-tuning epoch: recipes are chosen
# on them, never on the test set. Fine-tuning trains on the next TRAIN
# images; the probe uses the same TRAIN images (after the held-out ones is
# not needed there: the probe has no recipe to choose beyond its defaults).
# Evaluation sees whole images (configs/fcmae_fashion_mnist.yaml:
# data.eval_crop_pct 1.0, the pretraining's mean/std).
#
# Environment (defaults in brackets):
#   CNX_ENCODER  [runs/demo/encoder_atto_fcmae.safetensors] (scripts/demo.sh writes it)
#   CNX_DATA     [runs/demo/data]  shards (made here when missing)
#   CNX_EVAL_DIR [runs/eval_fashion_mnist]
#   TRAIN [12000] HOLDOUT [2000] TEST [10000] EPOCHS [1] NP [2]
#   LR [3e-3] LAYER_DECAY [1.0] DROP_PATH [0] SMOOTHING [0] CROP_SCALE ["1 1"] BATCH [32 per rank]
#   (chosen on the held-out split: docs/evaluation.md)
#   LR_PRETRAINED [$LR] LAYER_DECAY_PRETRAINED [$LAYER_DECAY]: the pretrained arm's
#   (its weights keep the FCMAE init's scale, std 1 in the blocks: docs/evaluation.md)
# Extra arguments go to every cnx-finetune run.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CNX_BUILD_DIR:-build}
ENCODER=${CNX_ENCODER:-runs/demo/encoder_atto_fcmae.safetensors}
DATA=${CNX_DATA:-runs/demo/data}
OUT=${CNX_EVAL_DIR:-runs/eval_fashion_mnist}
TRAIN=${TRAIN:-12000}
HOLDOUT=${HOLDOUT:-2000}
TEST=${TEST:-10000}
EPOCHS=${EPOCHS:-1}
NP=${NP:-2}
CONFIG=configs/fcmae_fashion_mnist.yaml
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
say() { printf '\n\033[1m[eval]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[eval] FAILED:\033[0m %s\n' "$*" >&2; exit 1; }

[ -e "$ENCODER" ] || die "no encoder at $ENCODER (run scripts/demo.sh first, or set CNX_ENCODER)"
mkdir -p "$OUT"
. scripts/lib/fashion_mnist_shards.sh
fashion_mnist_shards "$B" "$DATA"

RUN=(mpirun --oversubscribe --bind-to none -np "$NP")
COMMON=(--config "$CONFIG" --train-index "$DATA/train/index.json" --test-index "$DATA/test/index.json"
        --max-test "$TEST" --threads 1)
LR=${LR:-3e-3}
LAYER_DECAY=${LAYER_DECAY:-1.0}
FT=("${RUN[@]}" "$B/tools/eval/cnx-finetune" "${COMMON[@]}" --max-train "$TRAIN" --holdout "$HOLDOUT"
    --epochs "$EPOCHS" --drop-path "${DROP_PATH:-0}" --smoothing "${SMOOTHING:-0}" --batch-size "${BATCH:-32}"
    --crop-scale ${CROP_SCALE:-1 1})
FT_RANDOM=(--lr "$LR" --layer-decay "$LAYER_DECAY")
FT_PRETRAINED=(--lr "${LR_PRETRAINED:-$LR}" --layer-decay "${LAYER_DECAY_PRETRAINED:-$LAYER_DECAY}")
PROBE=("${RUN[@]}" "$B/tools/eval/cnx-eval" "${COMMON[@]}" --max-train "$TRAIN")

timed() {  # timed NAME CMD...: runs CMD, log to $OUT/NAME.log, seconds to $OUT/NAME.seconds
  local name=$1; shift
  local t0; t0=$(date +%s)
  "$@" > "$OUT/$name.log" 2>&1 || { tail -20 "$OUT/$name.log" >&2; die "$name (log: $OUT/$name.log)"; }
  echo $(( $(date +%s) - t0 )) > "$OUT/$name.seconds"
}

say "fine-tune from random init (FCMAE's init, seed 0): $TRAIN images x $EPOCHS epoch(s), held-out $HOLDOUT"
timed finetune_random "${FT[@]}" "${FT_RANDOM[@]}" --random-init --init fcmae --model atto \
  -o "$OUT/finetune_random.json" --curves "$OUT/finetune_random.png" "$@"
say "fine-tune from random init (dense std-0.02 init, seed 0), same budget"
timed finetune_dense "${FT[@]}" "${FT_RANDOM[@]}" --random-init --init dense --model atto \
  -o "$OUT/finetune_dense.json" --curves "$OUT/finetune_dense.png" "$@"
say "fine-tune from $ENCODER, same budget"
timed finetune_pretrained "${FT[@]}" "${FT_PRETRAINED[@]}" -c "$ENCODER" \
  -o "$OUT/finetune_pretrained.json" --curves "$OUT/finetune_pretrained.png" "$@"
say "linear probe: random init"
timed probe_random "${PROBE[@]}" --random-init --init fcmae --model atto -o "$OUT/probe_random.json"
say "linear probe: $ENCODER"
timed probe_pretrained "${PROBE[@]}" -c "$ENCODER" -o "$OUT/probe_pretrained.json"

python3 - "$OUT" "$ENCODER" "${FT_RANDOM[*]}" "${FT_PRETRAINED[*]}" "${DROP_PATH:-0}" "${SMOOTHING:-0}" "${BATCH:-32}" "${CROP_SCALE:-1 1}" <<'PY'
import json, sys
out, enc, rec_random, rec_pre, dp, sm, batch, crop = sys.argv[1:9]
rows = []
arms = {"random": "random init (FCMAE init)", "dense": "random init (dense std 0.02)", "pretrained": "FCMAE encoder"}
for kind, label, names in (("finetune", "fine-tune", ("random", "dense", "pretrained")),
                           ("probe", "linear probe", ("random", "pretrained"))):
    for arm in names:
        name = arms[arm]
        j = json.load(open(f"{out}/{kind}_{arm}.json"))
        secs = int(open(f"{out}/{kind}_{arm}.seconds").read())
        per_epoch = ", ".join(f"{100 * a:.2f}" for a in j.get("epoch_holdout_top1", [])) or "-"
        rows.append(f"| {label} | {name} | **{100 * j['top1']:.2f}%** | {j['n_test']} | {j['n_train']} | "
                    f"{j['epochs']} | {per_epoch} | {secs} s |")
j = json.load(open(f"{out}/finetune_random.json"))
lines = ["| protocol | start | test top-1 | test n | train n | epochs | held-out top-1 per epoch (%) | wall time |",
         "|---|---|---|---|---|---|---|---|"] + rows + [
         "", f"Evaluation transform: {j['eval_transform']}.", f"Encoder: {enc}; {j['world_size']} rank(s) x "
         f"{j['threads_per_rank']} thread(s); held-out = the first {j.get('n_holdout', 0)} training images.",
         f"Fine-tuning: random init {rec_random}, FCMAE encoder {rec_pre}; crop scale {crop}, drop path {dp}, "
         f"smoothing {sm}, "
         f"batch {batch} per rank x {j['world_size']} rank(s), AdamW, warmup 0.2 epochs + cosine."]
open(f"{out}/table.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
