#!/usr/bin/env python3
"""Dense-masked FCMAE training step with timm's ConvNeXt V2: the baseline
scripts/gpu_check.sh compares cnx-fcmae-step-bench against.

The encoder is timm's convnextv2 (dense convolutions) with the patch mask
multiplied into the features after the stem, after every downsample and after
every block (masked positions stay zero), the way a dense fallback runs
FCMAE without a sparse-convolution library. Decoder and loss as FCMAE: 1x1
proj to 512, mask token at masked patches, one ConvNeXt V2 block (GRN), 1x1
pred to 32*32*3, norm-pix MSE over masked patches; AdamW. Channels-last (the
dense baseline's fast form on GPUs).

  gpu_bench_timm.py --device cuda --batch 64 --size 224 --mask 0.6 \
      --precision fp32|bf16 [--variant atto] [--warmup 3] [--steps 10] [--max-seconds 30]

Prints one JSON object; {"error": ...} and exit 1 when the configuration
fails (timm missing, out of memory ...).
"""
import argparse
import json
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--variant", default="atto")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--mask", type=float, default=0.6)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--max-seconds", type=float, default=30.0)
    a = p.parse_args()
    head = {"impl": "timm-dense-masked", "variant": a.variant, "device": a.device, "precision": a.precision,
            "batch": a.batch, "size": a.size, "mask": a.mask}
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        import timm
        from timm.models.convnext import ConvNeXtBlock

        dev = torch.device(a.device)
        torch.manual_seed(0)
        enc = timm.create_model("convnextv2_" + a.variant, pretrained=False, num_classes=0)
        dim = enc.num_features
        patch = 32

        class DenseMaskedFcmae(nn.Module):
            def __init__(self):
                super().__init__()
                self.enc = enc
                self.proj = nn.Conv2d(dim, 512, 1)
                self.mask_token = nn.Parameter(torch.zeros(1, 512, 1, 1))
                self.decoder = ConvNeXtBlock(512, use_grn=True, ls_init_value=None, conv_mlp=False)
                self.pred = nn.Conv2d(512, patch * patch * 3, 1)

            def forward(self, x, mask):  # mask (N, h, w), 1 = removed
                keep = lambda t: t * (1.0 - F.interpolate(mask[:, None], size=t.shape[-2:], mode="nearest"))
                x = keep(self.enc.stem(x))
                for stage in self.enc.stages:
                    x = keep(stage.downsample(x))
                    for blk in stage.blocks:
                        x = keep(blk(x))
                x = self.proj(x)
                m = mask[:, None].to(x.dtype)
                x = x * (1 - m) + self.mask_token * m
                return self.pred(self.decoder(x))

        model = DenseMaskedFcmae().to(dev).to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, betas=(0.9, 0.95))
        n, hp = a.batch, a.size // patch
        images = torch.randn(n, 3, a.size, a.size, device=dev).to(memory_format=torch.channels_last)
        L = hp * hp
        keep_n = int(L * (1 - a.mask))
        order = torch.rand(n, L, device=dev).argsort(dim=1)
        mask = torch.ones(n, L, device=dev)
        mask.scatter_(1, order[:, :keep_n], 0.0)
        mask2d = mask.view(n, hp, hp)

        def loss_fn(pred):
            target = images.reshape(n, 3, hp, patch, hp, patch).permute(0, 2, 4, 3, 5, 1).reshape(n, L, -1)
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
            pred = pred.float().flatten(2).transpose(1, 2)
            per = ((pred - target) ** 2).mean(-1)
            return (per * mask).sum() / mask.sum()

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
                pred = model(images, mask2d)
            loss = loss_fn(pred)
            loss.backward()
            opt.step()
            return loss

        sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
        for _ in range(a.warmup):
            step()
        sync()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        start = time.perf_counter()
        done, loss = 0, None
        while done < a.steps:
            loss = step()
            done += 1
            sync()
            if time.perf_counter() - start > a.max_seconds:
                break
        elapsed = time.perf_counter() - start
        head.update(steps=done, seconds=round(elapsed, 4), ms_per_step=round(1000 * elapsed / done, 3),
                    img_per_s=round(n * done / elapsed, 2), loss=float(loss))
        if dev.type == "cuda":
            head["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        print(json.dumps(head))
        return 0
    except Exception as e:  # reported in the summary, never a fake number
        head["error"] = f"{type(e).__name__}: {e}"[:600]
        print(json.dumps(head))
        return 1


if __name__ == "__main__":
    sys.exit(main())
