#!/usr/bin/python3
"""Makes the two real-photo JPEG sets of bench/data/torchvision_compare.sh.

  make_jpeg_sets.py OUT_DIR

Sources: the JPEG photographs of two Debian packages (scripts/setup.sh
installs them): lomiri-wallpapers-16.04 (15 photos, 1365x1074 to 5312x2988)
and the nature/ folder of mate-backgrounds (12 photos, 1280x1024 to
2560x1920). Their paths come from `dpkg -L`, so the sets are the same on
every machine with these package versions.

  OUT_DIR/wallpapers/  the original files (symlinks), large wallpapers
  OUT_DIR/imagenet/    per photo 4 ImageNet-sized re-encodings: the whole
                       frame and three 4:3 / 3:4 crops (left, centre,
                       right or top, centre, bottom at 60% of the shorter
                       side), resized (PIL bicubic) so that the shorter side
                       is 375, 400, 450 or 500 pixels, JPEG quality 90,
                       4:2:0 chroma (most ImageNet files are 4:2:0)

Idempotent: an existing OUT_DIR/.complete with the same source list is kept.
Exit 2 when the packages are missing.
"""
import io
import os
import subprocess
import sys

from PIL import Image

PACKAGES = {"lomiri-wallpapers-16.04": "/usr/share/backgrounds/", "mate-backgrounds": "/usr/share/backgrounds/mate/nature/"}
SHORT_SIDES = (375, 400, 450, 500)


def sources():
    files = []
    for pkg, prefix in PACKAGES.items():
        r = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"make_jpeg_sets.py: Debian package {pkg} is not installed (scripts/setup.sh installs it)")
        for p in r.stdout.split():
            if p.startswith(prefix) and os.path.dirname(p) + "/" == prefix and p.lower().endswith((".jpg", ".jpeg")):
                files.append(p)
    if not files:
        sys.exit("make_jpeg_sets.py: the packages hold no JPEG files")
    return sorted(files)


def crops(w, h):
    """The whole frame, then three 4:3 (landscape) or 3:4 (portrait) boxes."""
    boxes = [(0, 0, w, h)]
    s = 0.6 * min(w, h)
    cw, ch = (s * 4 / 3, s) if w >= h else (s, s * 4 / 3)
    cw, ch = min(cw, w), min(ch, h)
    for f in (0.0, 0.5, 1.0):
        if w >= h:
            left, top = f * (w - cw), (h - ch) / 2
        else:
            left, top = (w - cw) / 2, f * (h - ch)
        boxes.append((round(left), round(top), round(left + cw), round(top + ch)))
    return boxes


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out = sys.argv[1]
    src = sources()
    stamp = os.path.join(out, ".complete")
    if os.path.exists(stamp) and open(stamp).read() == "\n".join(src):
        return 0
    wall = os.path.join(out, "wallpapers")
    inet = os.path.join(out, "imagenet")
    for d in (wall, inet):
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
    n = 0
    for i, path in enumerate(src):
        name = os.path.splitext(os.path.basename(path))[0]
        os.symlink(path, os.path.join(wall, os.path.basename(path)))
        with Image.open(path) as im:
            im = im.convert("RGB")
            for j, box in enumerate(crops(*im.size)):
                bw, bh = box[2] - box[0], box[3] - box[1]
                short = SHORT_SIDES[(i + j) % len(SHORT_SIDES)]
                k = short / min(bw, bh)
                size = (round(bw * k), round(bh * k))
                small = im.resize(size, Image.BICUBIC, box=box, reducing_gap=3.0)
                buf = io.BytesIO()
                small.save(buf, "JPEG", quality=90, subsampling=2)
                with open(os.path.join(inet, f"{name}_{j}.jpg"), "wb") as f:
                    f.write(buf.getvalue())
                n += 1
    with open(stamp, "w") as f:
        f.write("\n".join(src))
    print(f"make_jpeg_sets.py: {len(src)} originals in {wall}, {n} ImageNet-sized JPEGs in {inet}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
