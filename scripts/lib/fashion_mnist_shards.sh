# Sourced (not run) by scripts/demo.sh, scripts/eval_fashion_mnist.sh and
# scripts/ablations.sh: the Fashion-MNIST shards they all train or evaluate on.
#
#   fashion_mnist_shards BUILD_DIR DATA_DIR [--verbose]
#
# Makes DATA_DIR/train (60,000 images, shuffled) and DATA_DIR/test (10,000,
# in file order) with BUILD_DIR/tools/make_shards/cnx-make-shards, 5,000
# samples a shard; a split whose index.json is already there is kept
# (--verbose says so). Fails through the caller's die() when a split
# cannot be made.
fashion_mnist_shards() {
  local build=$1 data=$2 verbose=${3:-} split
  for split in train test; do
    if [ -f "$data/$split/index.json" ]; then
      [ "$verbose" != --verbose ] || echo "  $split shards already there"
    else
      "$build/tools/make_shards/cnx-make-shards" --source fashion-mnist --split $split -o "$data/$split" \
        --samples-per-shard 5000 $([ $split = test ] && echo --no-shuffle) || die "cnx-make-shards $split"
    fi
  done
}
