#!/usr/bin/env python3
"""Summarise scripts/eval_fashion_mnist.sh's runs: one TSV row per run
(runs.tsv) and a Markdown table (table.md) of test top-1 means with standard
errors per protocol, label count and start, and the encoder's gain over
random init with the standard error of that difference.

Runs are the files OUT/{finetune,probe}_<labels>_<start>_s<seed>.json written
by cnx-finetune / cnx-eval (-o), with <name>.seconds beside them.
"""
import argparse
import glob
import json
import math
import os
import re
import sys

NAME = re.compile(r"^(finetune|probe)_(\d+)_(random|pretrained)_s(\d+)\.json$")
START_LABEL = {"random": "random init (FCMAE init)", "pretrained": "FCMAE encoder"}


def start_label(start, rs):
    """The start's row label; a random init names FCMAE's init when the runs say which (std02)."""
    if start == "random" and rs and all("fcmae std02" in r["encoder"] for r in rs):
        return "random init (FCMAE init, std02)"
    return START_LABEL[start]
PROTOCOL_LABEL = {"finetune": "fine-tune", "probe": "linear probe"}


def mean_se(xs):
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def fmt(m, se):
    return f"{m:.2f}" if math.isnan(se) else f"{m:.2f} ± {se:.2f}"


def load(out):
    runs = []
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        match = NAME.match(os.path.basename(path))
        if not match:
            continue
        protocol, labels, start, seed = match.groups()
        with open(path) as f:
            j = json.load(f)
        secs_path = path[: -len(".json")] + ".seconds"
        secs = int(open(secs_path).read()) if os.path.exists(secs_path) else -1
        holdout = j.get("epoch_holdout_top1") or []
        runs.append({
            "protocol": protocol, "labels": int(labels), "start": start, "seed": int(seed),
            "top1": 100.0 * float(j["top1"]), "n_test": j["n_test"], "n_train": j["n_train"],
            "epochs": j.get("epochs", ""), "holdout_last": 100.0 * holdout[-1] if holdout else None,
            "seconds": secs, "eval_transform": j.get("eval_transform", ""),
            "world_size": j.get("world_size", ""), "threads": j.get("threads_per_rank", ""),
            "n_holdout": j.get("n_holdout", 0), "encoder": j.get("encoder", ""),
        })
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="the evaluation folder (CNX_EVAL_DIR)")
    ap.add_argument("--encoder", default="", help="the encoder evaluated (for the notes)")
    ap.add_argument("--recipe", default="", help="the fine-tuning recipe (for the notes)")
    args = ap.parse_args()
    runs = load(args.out)
    if not runs:
        sys.exit(f"eval_table: no runs in {args.out}")

    with open(os.path.join(args.out, "runs.tsv"), "w") as f:
        cols = ["protocol", "labels", "start", "seed", "top1", "holdout_last", "n_train", "n_test", "epochs",
                "seconds"]
        f.write("\t".join(cols) + "\n")
        for r in sorted(runs, key=lambda r: (r["protocol"], r["labels"], r["start"], r["seed"])):
            f.write("\t".join("" if r[c] is None else (f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]))
                              for c in cols) + "\n")

    lines = ["| protocol | labels | start | test top-1 (%), mean ± s.e. | seeds | per seed | held-out top-1 (%) "
             "| encoder − random (points) | test n | epochs | wall time per run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = sorted({(r["protocol"], r["labels"]) for r in runs}, key=lambda g: (g[0] != "finetune", g[1]))
    for protocol, labels in groups:
        stats = {}
        for start in ("random", "pretrained"):
            rs = sorted((r for r in runs if (r["protocol"], r["labels"], r["start"]) == (protocol, labels, start)),
                        key=lambda r: r["seed"])
            if not rs:
                continue
            m, se = mean_se([r["top1"] for r in rs])
            stats[start] = (m, se, len(rs))
            ho = [r["holdout_last"] for r in rs if r["holdout_last"] is not None]
            ho_txt = fmt(*mean_se(ho)) if ho else "-"
            gain = "-"
            if start == "pretrained" and "random" in stats:
                mr, ser, _ = stats["random"]
                d = m - mr
                sed = math.sqrt(se * se + ser * ser) if not (math.isnan(se) or math.isnan(ser)) else float("nan")
                gain = f"**{d:+.2f}**" + ("" if math.isnan(sed) else f" ± {sed:.2f}")
            secs = [r["seconds"] for r in rs if r["seconds"] >= 0]
            lines.append(
                f"| {PROTOCOL_LABEL[protocol]} | {labels} | {start_label(start, rs)} | **{fmt(m, se)}** | {len(rs)} | "
                f"{', '.join('%.2f' % r['top1'] for r in rs)} | {ho_txt} | {gain} | {rs[0]['n_test']} | "
                f"{rs[0]['epochs'] if protocol == 'finetune' else '-'} | "
                f"{(sum(secs) / len(secs)) if secs else 0:.0f} s |")
    first = runs[0]
    lines += ["", f"Evaluation transform: {first['eval_transform']}.",
              f"{first['world_size']} rank(s) x {first['threads']} thread(s); held-out = the first "
              f"{max(r['n_holdout'] for r in runs)} training images (fine-tuning only; the probe's head trains on "
              f"the first N). Standard errors over seeds; the difference's is sqrt(se1² + se2²)."]
    if args.encoder:
        lines.append(f"Encoder: {args.encoder}.")
    if args.recipe:
        lines.append(f"Fine-tuning: {args.recipe}.")
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
