#!/usr/bin/python3
"""torchvision + PIL counterpart of cnx-transform-bench (bench/data/transform_bench.cc).

  torchvision_compare.py (--dir DIR | --list FILE) [--variants plain,draft]
      [--reps 3] [--min-seconds 2] [--label NAME] [--seed 0]

The same work on the same files on one thread (torch.set_num_threads(1)):
JPEG decode + RandomResizedCrop(224, scale (0.08, 1), ratio (3/4, 4/3),
interpolation BICUBIC, as cnx's transform) + RandomHorizontalFlip +
ToTensor + Normalize(ImageNet mean/std). Files are read into memory first.

  plain  torchvision's ImageFolder recipe: Image.open + convert("RGB") (full
         decode), then the transforms.Compose above.
  draft  the strongest PIL baseline: the crop is drawn from the header size,
         then Image.draft() lets libjpeg decode at 1/2, 1/4 or 1/8 scale
         (the largest reduction that keeps the crop >= 224 pixels), and
         the crop box, mapped into the reduced image, is resized directly
         (Image.resize(box=...), bicubic), then flip, ToTensor, Normalize.

Output lines have the format of cnx-transform-bench's ("result impl=torchvision
variant=plain set=... img_per_cpu_s=..."). Exit 2 on bad arguments or no JPEGs.
"""
import argparse
import io
import math
import os
import random
import sys
import time

import torch
import torchvision
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def jpeg_paths(args):
    if args.dir:
        if not os.path.isdir(args.dir):
            sys.exit(f"torchvision_compare.py: --dir {args.dir}: no such folder")
        paths = []
        for root, _, names in os.walk(args.dir, followlinks=True):
            paths += [os.path.join(root, n) for n in names if n.lower().endswith((".jpg", ".jpeg"))]
        if not paths:
            sys.exit(f"torchvision_compare.py: --dir {args.dir}: no JPEG files (*.jpg, *.jpeg)")
        return sorted(paths)
    try:
        lines = open(args.list).read().splitlines()
    except OSError as e:
        sys.exit(f"torchvision_compare.py: --list {args.list}: cannot open ({e.strerror})")
    base = os.path.dirname(args.list)
    paths = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not paths:
        sys.exit(f"torchvision_compare.py: --list {args.list}: no file names")
    return [p if os.path.isabs(p) else os.path.join(base, p) for p in paths]


def make_plain(size, scale_lo):
    tf = T.Compose(
        [
            T.RandomResizedCrop(size, scale=(scale_lo, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )

    def run(data):
        img = Image.open(io.BytesIO(data))
        return tf(img.convert("RGB"))

    return run


def make_draft(size, scale_lo):
    rrc = T.RandomResizedCrop(size, scale=(scale_lo, 1.0))
    norm = T.Normalize(MEAN, STD)

    def run(data):
        img = Image.open(io.BytesIO(data))
        w, h = img.size  # header only
        top, left, ch, cw = rrc.get_params(img, rrc.scale, rrc.ratio)
        k = max(size / cw, size / ch)  # decoded crop must stay >= size
        if k < 1.0:
            img.draft("RGB", (math.ceil(w * k), math.ceil(h * k)))
        img = img.convert("RGB")
        fx, fy = img.size[0] / w, img.size[1] / h
        box = (left * fx, top * fy, (left + cw) * fx, (top + ch) * fy)
        img = img.resize((size, size), Image.BICUBIC, box=box)
        if torch.rand(1) < 0.5:
            img = F.hflip(img)
        return norm(F.to_tensor(img))

    return run


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--dir")
    g.add_argument("--list")
    p.add_argument("--variants", default="plain,draft")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--scale-lo", type=float, default=0.08)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label")
    args = p.parse_args()
    makers = {"plain": make_plain, "draft": make_draft}
    variants = args.variants.split(",")
    for v in variants:
        if v not in makers:
            p.error(f"--variants: unknown variant {v!r} (plain, draft)")
    if args.reps < 1:
        p.error("--reps must be >= 1")
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    label = args.label or os.path.basename(os.path.normpath(args.dir or args.list))
    paths = jpeg_paths(args)
    files, unreadable = [], 0
    for path in paths:
        try:
            with open(path, "rb") as f:
                b = f.read()
        except OSError:
            b = b""
        if not b:
            unreadable += 1
            print(f"torchvision_compare.py: skipped {path}: unreadable or empty", file=sys.stderr)
            continue
        files.append(b)
    fns = {v: makers[v](args.size, args.scale_lo) for v in variants}
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    good = []
    for b in files:  # warm-up pass: drops files PIL cannot decode
        try:
            fns["plain" if "plain" in fns else variants[0]](b)
            good.append(b)
        except Exception as e:  # PIL raises several types for bad data
            print(f"torchvision_compare.py: skipped a file: {e}", file=sys.stderr)
    print(
        f"set {label}: {len(paths)} JPEG files, {len(paths) - len(good)} skipped, {len(good)} used "
        f"(torch {torch.__version__}, torchvision {torchvision.__version__}, PIL {Image.__version__})",
        flush=True,
    )
    if not good:
        sys.exit(f"torchvision_compare.py: no file of {label} decodes")
    for rep in range(args.reps):
        order = variants if rep % 2 == 0 else variants[::-1]
        for v in order:
            fn = fns[v]
            n = 0
            t0, c0 = time.perf_counter(), time.process_time()
            while True:
                for b in good:
                    out = fn(b)
                n += len(good)
                wall = time.perf_counter() - t0
                if wall >= args.min_seconds:
                    break
            cpu = time.process_time() - c0
            assert out.shape == (3, args.size, args.size)
            print(
                f"result impl=torchvision variant={v} set={label} rep={rep} images={n} wall_s={wall:.4f} "
                f"cpu_s={cpu:.4f} img_per_s={n / wall:.2f} img_per_cpu_s={n / cpu:.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
