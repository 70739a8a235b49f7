#!/usr/bin/env python3
"""Writes fixtures/resize_bicubic_aa.json: reference outputs of
torch.nn.functional.interpolate(mode="bicubic", antialias=True,
align_corners=False) for the C++ resize_bicubic_aa test. Run with Debian's
python3-torch: /usr/bin/python3 tests/data/make_resize_fixture.py
"""
import json
import os

import torch
import torch.nn.functional as F


def case(gen, h, w, c, box, out, rng):
    """box = (top, left, bh, bw) crop before resizing to out = (oh, ow);
    rng = (oy, ox, ny, nx) window of the resized image that is kept."""
    img = torch.randint(0, 256, (h, w, c), generator=gen, dtype=torch.uint8)
    top, left, bh, bw = box
    crop = img[top:top + bh, left:left + bw, :].permute(2, 0, 1).unsqueeze(0).float()
    res = F.interpolate(crop, size=out, mode="bicubic", antialias=True, align_corners=False)
    oy, ox, ny, nx = rng
    res = res[0, :, oy:oy + ny, ox:ox + nx].permute(1, 2, 0).contiguous()
    return {"h": h, "w": w, "c": c, "pixels": img.flatten().tolist(), "box": list(box), "out": list(out),
            "range": list(rng), "expected": [round(v, 5) for v in res.flatten().tolist()]}


def main():
    gen = torch.Generator().manual_seed(1234)
    cases = [
        case(gen, 37, 53, 3, (0, 0, 37, 53), (16, 20), (0, 0, 16, 20)),    # downscale, non-integer factors
        case(gen, 13, 9, 3, (0, 0, 13, 9), (31, 27), (0, 0, 31, 27)),      # upscale
        case(gen, 40, 50, 3, (5, 7, 23, 31), (12, 17), (0, 0, 12, 17)),    # crop box then resize
        case(gen, 30, 30, 1, (0, 0, 30, 30), (7, 11), (0, 0, 7, 11)),      # gray, anisotropic
        case(gen, 24, 24, 1, (0, 0, 24, 24), (24, 24), (0, 0, 24, 24)),    # identity
        case(gen, 40, 50, 3, (0, 0, 40, 50), (20, 25), (2, 4, 16, 16)),    # resize then center-crop window
        case(gen, 64, 48, 3, (3, 2, 61, 45), (16, 16), (0, 0, 16, 16)),    # strong downscale (support > 2)
    ]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "resize_bicubic_aa.json")
    with open(path, "w") as f:
        json.dump({"torch_version": torch.__version__, "cases": cases}, f, separators=(",", ":"))
    print("wrote", path)


if __name__ == "__main__":
    main()
