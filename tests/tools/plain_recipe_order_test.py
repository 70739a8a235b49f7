#!/usr/bin/env python3
"""torch_plain_recipe.py --order shards must train on the images that
cnx-finetune --max-train N reads: the first N samples of cnx-make-shards'
shuffled Fashion-MNIST shards. Comparing the two implementations on
different training subsets mistakes subset-to-subset spread (about 2 points
at 3,000 images) for an implementation difference, so the Python copy of the
shuffle is checked against the tool: the label sequence of the first shards
must equal the idx labels in make_shards_order's order (and the idx order
must not, for --no-shuffle).

Usage: plain_recipe_order_test.py CNX_MAKE_SHARDS
Exit 0 on agreement, 1 on a difference, 77 (skipped) without the dataset.
"""
import os
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_plain_recipe as recipe  # noqa: E402

N = 400


def shard_labels(tool, out, extra):
    subprocess.run([tool, "--source", "fashion-mnist", "--split", "train", "--limit", str(N), "--samples-per-shard",
                    "150", "-q", "-o", out] + extra, check=True, stdout=subprocess.DEVNULL)
    labels = []
    for name in sorted(f for f in os.listdir(out) if f.endswith(".tar")):
        with tarfile.open(os.path.join(out, name)) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".cls"):
                    labels.append(int(tar.extractfile(m).read()))
    return labels


def main():
    if not os.path.exists(os.path.join(recipe.ROOT, "train-labels-idx1-ubyte.gz")):
        print(f"skipped: no Fashion-MNIST under {recipe.ROOT}")
        return 77
    y = recipe.idx(recipe.find("train-labels-idx1-ubyte")).long()
    order = recipe.make_shards_order(len(y))
    with tempfile.TemporaryDirectory() as tmp:
        shuffled = shard_labels(sys.argv[1], os.path.join(tmp, "shuffled"), [])
        plain = shard_labels(sys.argv[1], os.path.join(tmp, "plain"), ["--no-shuffle"])
    ok = True
    if shuffled != y[order[:N]].tolist():
        print("FAIL the shuffled shards' labels differ from make_shards_order's")
        ok = False
    if plain != y[:N].tolist():
        print("FAIL the --no-shuffle shards' labels differ from the idx order")
        ok = False
    if shuffled == plain:
        print("FAIL the shuffle did not change the order")
        ok = False
    print("ok" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
