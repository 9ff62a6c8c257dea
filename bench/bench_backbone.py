"""Whole R50-FPN backbone: DAF + FreqMix (paper placement: res3-res5) vs plain R50-FPN, side by side.

Input 1x3x800x1333 padded to 800x1344 (Detectron2 size_divisibility 32), CPU, torch.set_num_threads(2),
float32. Both models are built with the same config apart from the filters (Mask R-CNN style: FrozenBN,
FREEZE_AT 2, STRIDE_IN_1X1 False). Inference = eval + no_grad forward; training step = train-mode forward +
backward of the summed mean of all FPN outputs. Runs are interleaved (plain, aa, plain, aa, ...) after one
warm-up each; min and median reported.

    .venv/bin/python bench/bench_backbone.py [--reps 3] [--norm FrozenBN]
"""
import argparse
import statistics
import time

import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_backbone

from segalias_d2 import add_segalias_config


def build(aa, norm):
    cfg = get_cfg()
    add_segalias_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_segalias_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    cfg.MODEL.SEGALIAS.DAF.ENABLED = aa
    cfg.MODEL.SEGALIAS.FREQMIX.ENABLED = aa
    torch.manual_seed(0)
    return build_backbone(cfg)


def infer(model, x):
    model.eval()
    with torch.no_grad():
        model(x)


def train_step(model, x):
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    sum(v.mean() for v in out.values()).backward()


def bench(fn, models, x, reps):
    times = {k: [] for k in models}
    for k, m in models.items():
        fn(m, x)  # warm-up
    for _ in range(reps):
        for k, m in models.items():
            t0 = time.perf_counter()
            fn(m, x)
            times[k].append(time.perf_counter() - t0)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--norm", default="FrozenBN")
    args = ap.parse_args()
    torch.set_num_threads(2)
    models = {"plain R50-FPN": build(False, args.norm), "DAF+FreqMix R50-FPN": build(True, args.norm)}
    n = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    x = torch.randn(1, 3, 800, 1344)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, input {tuple(x.shape)}, norm {args.norm}, "
          f"reps {args.reps}\n")
    print("| mode | plain R50-FPN s (min / median) | DAF+FreqMix R50-FPN s (min / median) | overhead (min, median) |")
    print("|---|---|---|---|")
    for mode, fn in (("inference", infer), ("training step (fwd+bwd)", train_step)):
        r = bench(fn, models, x, args.reps)
        a, b = r["plain R50-FPN"], r["DAF+FreqMix R50-FPN"]
        print(f"| {mode} | {a[0]:.2f} / {a[1]:.2f} | {b[0]:.2f} / {b[1]:.2f} "
              f"| {100 * (b[0] / a[0] - 1):+.1f}%, {100 * (b[1] / a[1] - 1):+.1f}% |", flush=True)
    print(f"\nparameters: plain {n['plain R50-FPN']:,}, DAF+FreqMix {n['DAF+FreqMix R50-FPN']:,} "
          f"(+{n['DAF+FreqMix R50-FPN'] - n['plain R50-FPN']:,})")


if __name__ == "__main__":
    main()
