"""Whole R50-FPN backbone: DAF + FreqMix (paper placement: res3-res5) vs plain R50-FPN side by side.

Models, built with the same config apart from the filters (Mask R-CNN style: FrozenBN, FREEZE_AT 2,
STRIDE_IN_1X1 False), same seed, so the two DAF+FreqMix variants share weights:

* ``plain``: Detectron2-equivalent R50-FPN;
* ``new``: DAF+FreqMix as the package builds it: the modules' custom autograd functions
  (segalias_d2/modeling/fourier_ops.py) and the DAF outputs recomputed in backward instead of kept
  (``AAResNet(recompute_filter_outputs=True)``, the default);
* ``keep`` (opt-in): ``new`` keeping the DAF outputs for backward
  (``MODEL.SEGALIAS.RECOMPUTE_FILTER_OUTPUTS False``): the time/memory trade-off of the recompute;
* ``old``: the implementation before issue 15: autograd through rfft2/irfft2
  (bench/legacy_fourier.py), DAF outputs kept;
* ``transforms`` (opt-in): ``new`` with every low-pass computed by the transforms
  (``spectral_lowpass.FORCE_FORM = "transform"``): what the CPU's product forms bring.

Input --batch x 3 x 800 x 1344 (800x1333 padded to size divisibility 32). Inference = eval + no_grad
forward; training step = train-mode forward + backward of the summed mean of all FPN outputs. All
models run interleaved (plain, new, old, plain, ...) after one warm-up each; median and min of
--reps; on the CPU also the minor page faults per call (first touches of freshly mapped memory:
the allocator's state, not the model, decides many of them). Peak memory of the training step:
CPU = peak-RSS increase in a fresh subprocess per model (+ the profiler's tensor-allocation peak as
a cross-check), CUDA = max_memory_allocated increase (see bench/bench_util.py).

    .venv/bin/python bench/bench_backbone.py [--reps 5] [--models plain new old]
        [--device auto|cpu|cuda] [--amp fp32 fp16 bf16] [--batch 1] [--no-mem] [--profile N]

CUDA default: fp32 plus fp16/bf16 autocast; CPU: fp32 unless --amp says otherwise. --profile N
prints the N most expensive ops (torch.profiler, self time) of one training step per model and
stops.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_util as bu  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_backbone  # noqa: E402
from legacy_fourier import use_legacy  # noqa: E402

import segalias_d2.modeling.spectral_lowpass as sl  # noqa: E402
from segalias_d2 import add_segalias_config  # noqa: E402

MODELS = ("plain", "new", "keep", "old", "transforms")
LABELS = {
    "plain": "plain R50-FPN",
    "new": "DAF+FreqMix (new)",
    "old": "DAF+FreqMix (old)",
    "keep": "DAF+FreqMix (new, DAF outputs kept)",
    "transforms": "DAF+FreqMix (new, transforms only)",
}
FORCED_FORM = {"transforms": "transform"}  # spectral_lowpass.FORCE_FORM while a model runs


def in_form(name, fn):
    """``fn`` run with the model's forced low-pass form, if it has one."""

    def call():
        old = sl.FORCE_FORM
        sl.FORCE_FORM = FORCED_FORM.get(name)
        try:
            fn()
        finally:
            sl.FORCE_FORM = old

    return call


def build(name, norm="FrozenBN", device="cpu"):
    cfg = get_cfg()
    add_segalias_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_segalias_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    cfg.MODEL.SEGALIAS.DAF.ENABLED = name != "plain"
    cfg.MODEL.SEGALIAS.FREQMIX.ENABLED = name != "plain"
    cfg.MODEL.SEGALIAS.RECOMPUTE_FILTER_OUTPUTS = name not in ("keep", "old")
    torch.manual_seed(0)
    model = build_backbone(cfg).to(device)
    return use_legacy(model) if name == "old" else model


def infer(model, x, device, amp):
    model.eval()
    with torch.no_grad(), bu.amp_context(device, amp):
        model(x)


def train_step(model, x, device, amp):
    model.train()
    model.zero_grad(set_to_none=True)
    with bu.amp_context(device, amp):
        out = model(x)
        loss = sum(v.float().mean() for v in out.values())
    loss.backward()


def make_input(batch, device):
    return torch.randn(batch, 3, 800, 1344, generator=torch.Generator().manual_seed(1)).to(device)


def mem_child(name, device_s, amp, batch):
    torch.set_num_threads(bu.cpu_threads())
    device = bu.pick_device(device_s)
    model, x = build(name, device=device), make_input(int(batch), device)
    step = in_form(name, lambda: train_step(model, x, device, amp))
    rss = bu.rss_peak_of_call(step)
    print(json.dumps({"rss_mib": rss, "tensor_mib": bu.profiler_tensor_peak(step)}))


def peak_memory(name, model, x, device, amp, batch):
    if device.type == "cuda":
        train_step(model, x, device, amp)
        return {"cuda_mib": bu.cuda_peak_mib(lambda: train_step(model, x, device, amp), device)}
    return bu.cpu_peak_in_child(__file__, [name, str(device), amp, str(batch)])


def profile(models, x, device, amp, top):
    from torch.autograd.profiler_util import FunctionEventAvg
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    key = "self_cpu_time_total"
    if device.type == "cuda":  # renamed in torch 2.4
        key = (
            "self_device_time_total"
            if hasattr(FunctionEventAvg, "self_device_time_total")
            else "self_cuda_time_total"
        )
    for name, m in models.items():
        in_form(name, lambda: train_step(m, x, device, amp))()
        with prof(activities=acts) as p:
            in_form(name, lambda: train_step(m, x, device, amp))()
            bu.synchronize(device)
        print(f"\n#### {LABELS[name]}, one training step, {amp}\n")
        print(p.key_averages().table(sort_by=key, row_limit=top))


def pct(a, b):
    return f"{100 * (a / b - 1):+.1f}%"


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--models", nargs="+", choices=MODELS, default=["plain", "new", "old"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", nargs="+", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--no-mem", action="store_true")
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    ap.add_argument("--_mem_child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._mem_child:
        mem_child(*args._mem_child)
        return
    torch.set_num_threads(bu.cpu_threads())
    device = bu.pick_device(args.device)
    models = {k: build(k, device=device) for k in args.models}
    x = make_input(args.batch, device)
    n = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    print(
        f"torch {torch.__version__}, {bu.describe(device)}, input {tuple(x.shape)}, FrozenBN, reps "
        f"{args.reps}"
    )
    if args.profile:
        for amp in args.amp or ["fp32"]:
            profile(models, x, device, amp, args.profile)
        return
    names = list(models)
    for amp in args.amp or bu.default_amps(device):
        print(
            f"\n### {bu.describe(device)}, {amp}, batch {args.batch} (load at start "
            f"{bu.load_average():.2f})\n"
        )
        print(
            "| mode | "
            + " | ".join(f"{LABELS[k]} s (min / median)" for k in names)
            + " | "
            + " | ".join(f"{LABELS[k]} vs plain (median)" for k in names if k != "plain")
            + " |"
        )
        print("|" + "---|" * (1 + 2 * len(names) - ("plain" in names)))
        faults = {}
        for mode, fn in (("inference", infer), ("training step (fwd+bwd)", train_step)):
            fns = {k: in_form(k, lambda m=m: fn(m, x, device, amp)) for k, m in models.items()}
            if device.type == "cpu":
                faults[mode] = {k: [] for k in names}
                fns = {k: bu.counting_page_faults(f, faults[mode][k]) for k, f in fns.items()}
            t = bu.time_interleaved(fns, args.reps, device)
            cols = [bu.min_med([v / 1000 for v in t[k]], "{:.3f}") for k in names]
            ratios = [
                pct(bu.med(t[k]), bu.med(t["plain"]))
                for k in names
                if k != "plain" and "plain" in t
            ]
            print(f"| {mode} | " + " | ".join(cols + ratios) + " |", flush=True)
        for mode, counts in faults.items():  # the CPU's first touches of fresh buffers
            print(
                f"\nminor page faults per call, {mode} (min / median): "
                + ", ".join(f"{LABELS[k]} {bu.min_med(counts[k], '{:.0f}')}" for k in names)
            )
        if not args.no_mem:
            mem = {k: peak_memory(k, models[k], x, device, amp, args.batch) for k in names}
            print(
                "\npeak memory of the training step (MiB above the state before the step; CPU: "
                "peak RSS in a "
                "fresh process per model, and the profiler's tensor-allocation peak; CUDA: "
                "max_memory_allocated):\n"
            )
            fields = [f for f in ("rss_mib", "tensor_mib", "cuda_mib") if f in mem[names[0]]]
            print(
                "| measure | "
                + " | ".join(LABELS[k] for k in names)
                + " | "
                + " | ".join(f"{LABELS[k]} vs plain" for k in names if k != "plain")
                + " |"
            )
            print("|" + "---|" * (1 + 2 * len(names) - ("plain" in names)))
            for f in fields:
                vals = [f"{mem[k][f]:.0f}" for k in names]
                ratios = [
                    pct(mem[k][f], mem["plain"][f])
                    for k in names
                    if k != "plain" and "plain" in mem
                ]
                print(f"| {f} | " + " | ".join(vals + ratios) + " |", flush=True)
    print("\nparameters: " + ", ".join(f"{LABELS[k]} {n[k]:,}" for k in names))
    print(f"load average at the end: {bu.load_average():.2f}")


if __name__ == "__main__":
    main()
