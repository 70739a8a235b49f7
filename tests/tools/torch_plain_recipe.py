#!/usr/bin/env python3
"""The issue's plain fine-tuning recipe in plain python3-torch, to compare
with cnx-finetune (not a test: a reference run, minutes on a CPU).

ConvNeXt V2-atto (tests/tools/torch_equivalence.py's definition), std-0.02
truncated-normal init (head scaled by 0.001, as cnx-finetune's default),
Fashion-MNIST from Debian's dataset-fashion-mnist idx files: by default the
N training images cnx-finetune --max-train N reads from shards made by
cnx-make-shards (its seeded shuffle, reproduced here; --order idx: the first
N of the idx file instead), 1 epoch, batch 64, AdamW (lr 1e-3, betas 0.9/0.999, weight
decay 0.05 except 1-D tensors, biases and GRN gamma/beta), per-step linear
warmup 0.2 epochs then half-cosine to 1e-6, plain cross-entropy, train
transform = whole image resized to the input size (bicubic, antialias) +
horizontal flip, ImageNet mean/std. Evaluation: the first M test images,
whole image (crop_pct 1.0) and the ImageNet convention (crop_pct 0.875).

Usage: torch_plain_recipe.py [--train N] [--test M] [--size 64] [--seed 0] [--order idx|shards]
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_equivalence import ConvNeXtV2, eval_transform  # noqa: E402

ROOT = "/usr/share/datasets/fashion-mnist"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).view(*dims)


def find(name):
    for cand in (name, name + ".gz"):
        for dirpath, _, files in os.walk(ROOT):
            if cand in files:
                return os.path.join(dirpath, cand)
    sys.exit(f"{name} not found under {ROOT}")


M64 = (1 << 64) - 1


def splitmix64_mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def mix_seed(a, b):
    return splitmix64_mix(a ^ ((splitmix64_mix(b) + 0x9E3779B97F4A7C15 + ((a << 6) & M64) + (a >> 2)) & M64))


def make_shards_order(n, seed=0):
    """The sample order of `cnx-make-shards --seed SEED` (common/rng.h's SplitMix64, Fisher-Yates from the end)."""
    state = mix_seed(seed, 0x6D616B65)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        limit = M64 - M64 % bound
        while True:
            state = (state + 0x9E3779B97F4A7C15) & M64
            r = splitmix64_mix(state)
            if r < limit:
                break
        j = r % bound
        order[i], order[j] = order[j], order[i]
    return torch.tensor(order)


def init_weights(model, head_init_scale):
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    model.head.weight.data.mul_(head_init_scale)
    model.head.bias.data.mul_(head_init_scale)


def batch_images(raw, size, crop_pct):
    return torch.stack([eval_transform(im.unsqueeze(-1).expand(-1, -1, 3), size, crop_pct, MEAN, STD) for im in raw])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=12000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--order", choices=("idx", "shards"), default="shards",
                    help="training images: the first N of the idx file, or the first N of cnx-make-shards' "
                         "shuffled shards (default seed), as cnx-finetune --max-train N reads them")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    xtr, ytr = idx(find("train-images-idx3-ubyte")), idx(find("train-labels-idx1-ubyte")).long()
    pick = make_shards_order(len(ytr))[:a.train] if a.order == "shards" else torch.arange(a.train)
    xtr, ytr = xtr[pick], ytr[pick]
    xte, yte = idx(find("t10k-images-idx3-ubyte"))[:a.test], idx(find("t10k-labels-idx1-ubyte"))[:a.test].long()
    model = ConvNeXtV2([2, 2, 6, 2], [40, 80, 160, 320], 10)
    init_weights(model, 0.001)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim == 1 or n.endswith((".bias", ".gamma", ".beta")) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.999))
    bs, lr0, min_lr, warm = 64, 1e-3, 1e-6, 0.2
    spe = a.train // bs
    t0 = time.time()
    model.train()
    perm = torch.randperm(a.train)
    for s in range(spe):
        e = s / spe
        lr = lr0 * e / warm if e < warm else min_lr + (lr0 - min_lr) * 0.5 * (1 + math.cos(math.pi * (e - warm) / (1 - warm)))
        for g in opt.param_groups:
            g["lr"] = lr
        i = perm[s * bs:(s + 1) * bs]
        x = batch_images(xtr[i], a.size, 1.0)
        flip = torch.rand(len(i)) < 0.5
        x[flip] = x[flip].flip(-1)
        loss = F.cross_entropy(model(x), ytr[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if s % 20 == 0:
            print(f"step {s}/{spe} loss {loss.item():.4f} lr {lr:.2e} {time.time() - t0:.0f} s", flush=True)
    model.eval()
    out = {"train": a.train, "order": a.order, "test": a.test, "size": a.size, "seed": a.seed, "train_seconds": time.time() - t0}
    with torch.no_grad():
        for pct in (1.0, 0.875):
            correct = 0
            for b in range(0, a.test, 250):
                correct += (model(batch_images(xte[b:b + 250], a.size, pct)).argmax(1) == yte[b:b + 250]).sum().item()
            out[f"top1_crop_pct_{pct}"] = correct / a.test
    print(json.dumps(out))


if __name__ == "__main__":
    main()
