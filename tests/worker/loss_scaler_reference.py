#!/usr/bin/env python3
"""The fp16 loss scaler (worker/loss_scaler.h) against PyTorch's GradScaler rule.

PyTorch 1.13's GradScaler.update() calls torch._amp_update_scale_, whose only
kernel is CUDA's (aten/src/ATen/native/cuda/AmpKernels.cu); this machine has
no GPU, so the rule is replayed here with torch float32 tensors exactly as
that kernel computes it (a float scale times double factors, stored as
float; growth only when the grown scale is finite). The defaults come from
torch.cuda.amp.GradScaler's own signature. Scenarios: the defaults with
start-up overflows and two growths; growth into float overflow; backoff into
denormals and zero; odd factors with a seeded random overflow pattern.

usage: loss_scaler_reference.py LOSS_SCALER_DUMP
"""
import inspect
import random
import struct
import subprocess
import sys

import torch


def reference(init, growth, backoff, interval, flags):
    scale = torch.tensor(init, dtype=torch.float32)
    tracker = 0
    out = []
    for f in flags:
        if f == "1":
            scale = (scale.double() * backoff).float()
            tracker = 0
        else:
            successful = tracker + 1
            if successful == interval:
                grown = (scale.double() * growth).float()
                if torch.isfinite(grown):
                    scale = grown
                tracker = 0
            else:
                tracker = successful
        bits = struct.unpack("<I", struct.pack("<f", scale.item()))[0]
        out.append(f"{bits} {tracker}")
    return out


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    dump = sys.argv[1]
    d = inspect.signature(torch.cuda.amp.GradScaler.__init__).parameters
    defaults = (d["init_scale"].default, d["growth_factor"].default, d["backoff_factor"].default,
                d["growth_interval"].default)
    assert defaults == (2.0**16, 2.0, 0.5, 2000), defaults  # what docs/model.md states
    rng = random.Random(7)
    steps = 4600
    startup = "1111" + "0" * (steps - 4)
    startup = startup[:2500] + "1" + startup[2501:]
    scenarios = [
        (*defaults, startup),
        (2.0**126, 2.0, 0.5, 1, "000" + "1" * 5 + "0" * 4),
        (2.0**-120, 2.0, 0.125, 3, "1" * 12 + "0" * 7),
        (1000.0, 1.5, 0.3, 3, "".join("1" if rng.random() < 0.2 else "0" for _ in range(400))),
        (3.0, 1.0000001, 0.9999999, 2, "".join("1" if rng.random() < 0.3 else "0" for _ in range(300))),
    ]
    failures = 0
    for init, growth, backoff, interval, flags in scenarios:
        spec = f"{init!r} {growth!r} {backoff!r} {interval} {flags}\n"
        got = subprocess.run([dump], input=spec, capture_output=True, text=True, check=True).stdout.split("\n")
        got = [line for line in got if line]
        want = reference(init, growth, backoff, interval, flags)
        if got != want:
            failures += 1
            first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            print(f"FAIL init={init} growth={growth} backoff={backoff} interval={interval}: step {first}: "
                  f"got {got[first:first + 1]} want {want[first:first + 1]} ({len(got)} vs {len(want)} steps)")
        else:
            final = struct.unpack("<f", struct.pack("<I", int(want[-1].split()[0])))[0]
            print(f"ok   init={init} growth={growth} backoff={backoff} interval={interval}: {len(flags)} steps, "
                  f"{flags.count('1')} overflows, final scale {final!r}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
