# shellcheck shell=bash
# The few-label fine-tuning recipe (docs/evaluation.md), chosen on held-out
# training images; sourced by scripts/eval_fashion_mnist.sh and by
# scripts/demo.sh (step 7), so the table and the main job's summary run the
# same recipe. Every value can be overridden from the environment:
#   LR [1e-3] LAYER_DECAY [1.0] LR_PRETRAINED [$LR] LAYER_DECAY_PRETRAINED [$LAYER_DECAY]
#   DROP_PATH [0] SMOOTHING [0] CROP_SCALE ["1 1"] BATCH [32 per rank] HOLDOUT [1000]
#   EPOCHS_<N>: epochs with N labels [EPOCHS_600=10, otherwise 2]
# Defines FT_RECIPE (the cnx-finetune flags every start shares), ft_start_args
# START [ENCODER] (the flags of one start: random | pretrained) and
# ft_epochs N, FT_RECIPE_TEXT (one line for tables and summaries) and
# RANDOM_START (the untrained start's flags, for cnx-finetune and cnx-eval).
LR=${LR:-1e-3}
LAYER_DECAY=${LAYER_DECAY:-1.0}
LR_PRETRAINED=${LR_PRETRAINED:-$LR}
LAYER_DECAY_PRETRAINED=${LAYER_DECAY_PRETRAINED:-$LAYER_DECAY}
HOLDOUT=${HOLDOUT:-1000}
# The first HOLDOUT training images are held out and scored once, after the
# last epoch; the recipe is chosen on them, never on the test set.
FT_RECIPE=(--holdout "$HOLDOUT" --holdout-every 0 --drop-path "${DROP_PATH:-0}" --smoothing "${SMOOTHING:-0}"
           --batch-size "${BATCH:-32}" --crop-scale ${CROP_SCALE:-1 1})
FT_RECIPE_TEXT="lr $LR (encoder $LR_PRETRAINED), layer decay $LAYER_DECAY (encoder $LAYER_DECAY_PRETRAINED), crop scale ${CROP_SCALE:-1 1}, drop path ${DROP_PATH:-0}, smoothing ${SMOOTHING:-0}, batch ${BATCH:-32} per rank, AdamW, warmup 0.2 epochs + cosine"

# The untrained start of every protocol (fine-tuning and linear probe):
# FCMAE's initialisation of the config's model.init, i.e. the start the
# pretrained encoder came from.
RANDOM_START=(--random-init --init fcmae --model atto)

ft_start_args() {  # ft_start_args random | pretrained ENCODER: one start's cnx-finetune flags, one per line
  case $1 in
    random) printf '%s\n' "${RANDOM_START[@]}" --lr "$LR" --layer-decay "$LAYER_DECAY" ;;
    pretrained) printf '%s\n' -c "$2" --lr "$LR_PRETRAINED" --layer-decay "$LAYER_DECAY_PRETRAINED" ;;
    *) echo "ft_start_args: unknown start '$1'" >&2; return 2 ;;
  esac
}

ft_epochs() {  # ft_epochs N: fine-tuning epochs with N labels
  local var=EPOCHS_$1
  case $1 in 600) echo "${!var:-10}" ;; *) echo "${!var:-2}" ;; esac
}
