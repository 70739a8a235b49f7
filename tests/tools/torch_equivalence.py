#!/usr/bin/env python3
"""Replays what tests/tools/equivalence_dump wrote with an independent
python3-torch implementation and compares:

  * fine-tuning: ConvNeXt V2 (written here from the paper's definition),
    torch.optim.AdamW with the reference fine-tuning's parameter groups
    (layer-wise lr decay; no weight decay for 1-D tensors, biases and GRN
    gamma/beta), per-step warmup + half-cosine schedule, label-smoothed
    cross-entropy. Same inputs per step (the dump's batches; with W ranks the
    global batch is the ranks' batches together). Per-step losses and the
    final parameters must agree within fp32 tolerance.
  * evaluation: the fine-tuned model on the raw test images, with this
    file's own eval transform (resize the shorter side to size / crop_pct
    with antialiased bicubic, centre crop, normalise): inputs, logits and
    top-1 for crop_pct 0.875 and 1.0.
  * linear probe: features of the initial model (forward_features), the
    standardisation, and the head trained with torch.optim.AdamW on a
    torch.Generator seeded like the C++ one.

Usage: torch_equivalence.py DUMP_BINARY [--np W] [--mpiexec PATH]
Exit 0 when everything agrees, 1 with the differences otherwise.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    sys.exit("torch_equivalence.py: python3-torch is not installed (scripts/setup.sh installs it)")

FAILURES = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        FAILURES.append(what)


# ----------------------------------------------------------------------------
# ConvNeXt V2
# ----------------------------------------------------------------------------
class LayerNorm2d(nn.Module):
    """LayerNorm over channels of N,C,H,W."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        x = (x - mu) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, c))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, c))

    def forward(self, x):  # N,H,W,C
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1 = nn.Linear(c, 4 * c)
        self.grn = GRN(4 * c)
        self.pwconv2 = nn.Linear(4 * c, c)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    def __init__(self, depths, dims, classes, in_chans=3):
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, 4), LayerNorm2d(dims[0])))
        for i in range(1, len(dims)):
            self.downsample_layers.append(nn.Sequential(LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dims[i], 2, 2)))
        self.stages = nn.ModuleList(nn.Sequential(*[Block(dims[i]) for _ in range(depths[i])]) for i in range(len(dims)))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], classes)

    def forward_features(self, x):
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.norm(x.mean([-2, -1]))

    def forward(self, x):
        return self.head(self.forward_features(x))


# ----------------------------------------------------------------------------
# Recipe pieces, as the reference fine-tuning defines them
# ----------------------------------------------------------------------------
def layer_id(name, depths):
    if name.startswith("downsample_layers."):
        s = int(name.split(".")[1])
        return sum(depths[:s]) + 1
    if name.startswith("stages."):
        s, b = int(name.split(".")[1]), int(name.split(".")[2])
        return sum(depths[:s]) + b + 1
    return sum(depths) + 1


def param_groups(model, depths, layer_decay, weight_decay):
    groups = {}
    n_layers = sum(depths) + 1
    for name, p in model.named_parameters():
        no_decay = p.ndim == 1 or name.endswith(".bias") or name.endswith(".gamma") or name.endswith(".beta")
        lid = layer_id(name, depths)
        key = (lid, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "lr_scale": layer_decay ** (n_layers - lid),
                           "weight_decay": 0.0 if no_decay else weight_decay}
        groups[key]["params"].append(p)
    return list(groups.values())


def lr_at(step, o):
    """Per-step warmup then half-cosine, in fractional epochs (MAE's adjust_learning_rate)."""
    e = step / o["steps_per_epoch"]
    if e < o["warmup_epochs"]:
        return o["lr"] * e / o["warmup_epochs"]
    if e >= o["epochs"]:
        return o["min_lr"]
    prog = (e - o["warmup_epochs"]) / (o["epochs"] - o["warmup_epochs"])
    return o["min_lr"] + (o["lr"] - o["min_lr"]) * 0.5 * (1.0 + math.cos(math.pi * prog))


def eval_transform(raw_hwc, size, crop_pct, mean, std):
    """Resize the shorter side to int(size / crop_pct) (bicubic, antialias), centre crop, normalise."""
    h, w = raw_hwc.shape[0], raw_hwc.shape[1]
    resize = int(size / crop_pct + 1e-9)
    if w <= h:
        ow, oh = resize, int(resize * h / w)
    else:
        oh, ow = resize, int(resize * w / h)
    oh, ow = max(oh, size), max(ow, size)
    x = raw_hwc.permute(2, 0, 1).unsqueeze(0).float()
    x = F.interpolate(x, size=(oh, ow), mode="bicubic", antialias=True, align_corners=False)
    top, left = int(round((oh - size) / 2.0)), int(round((ow - size) / 2.0))
    x = x[:, :, top:top + size, left:left + size].clamp(0, 255) / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - m) / s)[0]


def load(path):
    return torch.load(path)


def max_rel_diff(a, b):
    return ((a.double() - b.double()).abs().max() / max(b.double().abs().max().item(), 1e-12)).item()


def compare_finetune(d, o):
    init, final = load(f"{d}/init.pt"), load(f"{d}/final.pt")
    model = ConvNeXtV2(o["depths"], o["dims"], o["classes"])
    model.load_state_dict(init, strict=True)
    model.train()
    groups = param_groups(model, o["depths"], o["layer_decay"], o["weight_decay"])
    opt = torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=1e-8, foreach=False)
    ranks = [load(f"{d}/steps-rank{r}.pt") for r in range(o["world"])]
    cpp_loss = ranks[0]["mean_loss"]
    cpp_lr = ranks[0]["lr"]
    check(len(cpp_loss) == o["steps"], f"{o['steps']} steps recorded ({len(cpp_loss)})")
    worst_loss, worst_lr = 0.0, 0.0
    for s in range(o["steps"]):
        x = torch.cat([rk[f"images/{s}"] for rk in ranks])
        y = torch.cat([rk[f"labels/{s}"] for rk in ranks])
        lr = lr_at(s, o)
        worst_lr = max(worst_lr, abs(lr - cpp_lr[s].item()) / max(lr, 1e-12))
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        loss = F.cross_entropy(model(x), y, label_smoothing=o["label_smoothing"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        diff = abs(loss.item() - cpp_loss[s].item())
        worst_loss = max(worst_loss, diff)
        if s < 3 or s == o["steps"] - 1:
            print(f"     step {s:3d}: lr {lr:.6g}  loss torch {loss.item():.7f}  cnx {cpp_loss[s].item():.7f}")
    check(worst_lr < 1e-9, f"fine-tune lr schedule matches (max rel diff {worst_lr:.2e})")
    check(worst_loss < 2e-4, f"fine-tune per-step losses match (max abs diff {worst_loss:.2e} over {o['steps']} steps)")
    worst, worst_name = 0.0, ""
    sd = model.state_dict()
    for name, t in final.items():
        r = max_rel_diff(t, sd[name])
        if r > worst:
            worst, worst_name = r, name
    check(worst < 1e-3, f"final parameters match (max diff / max |param| {worst:.2e} at {worst_name})")
    return model


def compare_eval(d, o, model):
    ev, raw = load(f"{d}/eval.pt"), load(f"{d}/raw.pt")
    labels = raw["labels"]
    images = [raw[f"raw/{i}"] for i in range(len(labels))]
    model.eval()
    for pct in (0.875, 1.0):
        key = f"{pct:.3f}"
        x = torch.stack([eval_transform(im, o["size"], pct, o["mean"], o["std"]) for im in images])
        with torch.no_grad():
            logits = model(x)
        top1 = (logits.argmax(1) == labels).double().mean().item()
        if f"input/{key}" in ev:
            di = (x - ev[f"input/{key}"]).abs().max().item()
            check(di < 1e-4, f"eval transform crop_pct {pct}: inputs match (max abs diff {di:.2e})")
            dl = (logits - ev[f"logits/{key}"]).abs().max().item()
            check(dl < 1e-3, f"eval crop_pct {pct}: logits match (max abs diff {dl:.2e})")
        cpp = ev[f"top1/{key}"].item()
        check(abs(top1 - cpp) < 1e-9, f"eval crop_pct {pct}: top-1 torch {top1:.4f} == cnx {cpp:.4f}")


def compare_probe(d, o):
    p, raw = load(f"{d}/probe.pt"), load(f"{d}/raw.pt")
    po = o["probe"]
    model = ConvNeXtV2(o["depths"], o["dims"], o["classes"])
    model.load_state_dict(load(f"{d}/init.pt"), strict=True)
    model.eval()
    labels = raw["labels"]
    x = torch.stack([eval_transform(raw[f"raw/{i}"], o["size"], 0.875, o["mean"], o["std"]) for i in range(len(labels))])
    with torch.no_grad():
        feats = model.forward_features(x)
    df = (feats - p["test_x"]).abs().max().item()
    check(df < 1e-4, f"probe features of the test images match (max abs diff {df:.2e})")
    check(torch.equal(labels, p["test_y"]), "probe feature labels match")
    # Head: standardise with train statistics, AdamW (decay on the weight only),
    # warmup + cosine per step, seeded permutation per epoch.
    xtr, ytr = p["train_x"], p["train_y"]
    mean = xtr.mean(0)
    inv_std = (xtr.var(0, unbiased=False) + 1e-6).rsqrt()
    check(torch.allclose(mean, p["mean"], atol=1e-6) and torch.allclose(inv_std, p["inv_std"], rtol=1e-5),
          "probe standardisation statistics match")
    xs = (xtr - mean) * inv_std
    n, c = xs.shape
    k = o["classes"]
    g = torch.Generator().manual_seed(po["seed"])
    w = torch.empty(k, c).normal_(0.0, 1.0, generator=g).clamp(-2.0, 2.0) * 0.01
    w.requires_grad_(True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.AdamW([{"params": [w], "weight_decay": po["weight_decay"]}, {"params": [b], "weight_decay": 0.0}],
                            lr=po["lr"], betas=(0.9, 0.999), eps=1e-8, foreach=False)
    spe = (n + po["batch_size"] - 1) // po["batch_size"]
    total, warm = spe * po["epochs"], int(po["warmup_epochs"] * spe)
    step = 0
    for _ in range(po["epochs"]):
        perm = torch.randperm(n, generator=g)
        loss_sum = 0.0
        for s in range(0, n, po["batch_size"]):
            idx = perm[s:s + po["batch_size"]]
            if step < warm:
                lr = po["lr"] * (step + 1) / warm
            else:
                lr = 0.5 * po["lr"] * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
            for gr in opt.param_groups:
                gr["lr"] = lr
            loss = F.cross_entropy(xs[idx] @ w.t() + b, ytr[idx])
            loss_sum += loss.item() * len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    dw = max_rel_diff(p["weight"], w.detach())
    check(dw < 1e-4, f"probe head weight matches (max diff / max |w| {dw:.2e})")
    dl = abs(loss_sum / n - p["final_loss"].item())
    check(dl < 1e-4, f"probe final-epoch loss matches (torch {loss_sum / n:.6f}, cnx {p['final_loss'].item():.6f})")
    with torch.no_grad():
        top1 = ((((p["test_x"] - mean) * inv_std) @ w.t() + b).argmax(1) == p["test_y"]).double().mean().item()
    check(abs(top1 - p["top1"].item()) < 1e-9, f"probe top-1 torch {top1:.4f} == cnx {p['top1'].item():.4f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--np", type=int, default=1)
    ap.add_argument("--mpiexec", default="mpirun")
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="cnx_equiv_") as d:
        cmd = [a.dump, d]
        if a.np > 1:
            cmd = [a.mpiexec, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", str(a.np)] + cmd
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        r = subprocess.run(cmd, env=env)
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} exited with {r.returncode}")
        o = json.load(open(f"{d}/options.json"))
        print(f"world {o['world']}, {o['steps']} steps of global batch {o['batch_per_rank'] * o['world']}")
        model = compare_finetune(d, o)
        compare_eval(d, o, model)
        compare_probe(d, o)
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
