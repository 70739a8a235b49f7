#!/usr/bin/env python3
"""Do two checkpoints hold the same training state?

    scripts/compare_checkpoints.py CKPT_A CKPT_B

CKPT_A and CKPT_B are checkpoint folders (step-NNNNNNNN or
ckpt-NNNNNN-step-NNNNNNNNN, each with its MANIFEST.json). Every file the
manifests list is compared by its sha256 (model, optimizer, trainer state,
every rank's cursor and generator) except config.yaml: the run's effective
config names the run's own paths (checkpoint.root, data.index), so two runs
of one recipe into different folders differ there by design.

Exit 0: the same training state. 1: it differs (the files are named).
2: usage error, or a folder without a readable MANIFEST.json.
"""
import json
import sys

IGNORED = {"config.yaml"}


def manifest(folder):
    path = folder.rstrip("/") + "/MANIFEST.json"
    try:
        with open(path) as f:
            files = json.load(f)["files"]
        return {name: entry["sha256"] for name, entry in files.items() if name not in IGNORED}
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"compare_checkpoints: {path}: not a readable checkpoint manifest ({e})", file=sys.stderr)
        sys.exit(2)


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr if len(argv) != 2 else sys.stdout)
        return 0 if len(argv) == 2 else 2
    a, b = manifest(argv[1]), manifest(argv[2])
    differ = sorted(n for n in a.keys() & b.keys() if a[n] != b[n])
    only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    for n in differ:
        print(f"differs: {n} ({a[n][:12]} vs {b[n][:12]})")
    for n in only_a:
        print(f"only in {argv[1]}: {n}")
    for n in only_b:
        print(f"only in {argv[2]}: {n}")
    if differ or only_a or only_b:
        return 1
    print(f"same training state: {len(a)} files (config.yaml not compared)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
