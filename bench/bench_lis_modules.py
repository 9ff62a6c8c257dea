"""LIS modules (AWD, SCB, DSL) next to DAF / FreqMix: parameters and forward / forward+backward
cost, side by side.

Shapes are those of the LIS recipe: a 600x400 image padded to 608x416 (--size H W), batch 1,
caffe-style R50-FPN (FrozenStatsBN, FREEZE_AT 2, STRIDE_IN_1X1 True). Three parts, each timed
interleaved in one process (variant 1, variant 2, ..., repeated --reps times after one warm-up each;
median and min), so machine load hits all variants alike; the load average is printed before and
after.

1. Stage-input modules at the res3/res4/res5 inputs (C x H/4 ... C x H/16): AWD (stride 2, what the
   LIS R50 uses instead of the stages' stride-2 convs) and DAF (the Seg-Aliasing filter of the same
   slot, full resolution). The AWD weighted tap sum alone: our custom autograd function, plain
   autograd through 9 strided views, and the released unfold, fwd+bwd.
2. Bottleneck conv2 modules (P x H/8 ... P x H/32, stride 1 as in the LIS R50): the plain 3x3 conv,
   the 3x3 conv with SCB (fused = one conv with W2 + W1 K, our training forward; two-branch = the
   released computation; the folded deployment conv costs exactly the plain conv), the 3x3 conv
   followed by FreqMix.
3. Whole backbones (R50-FPN): plain, DAF+FreqMix, AWD, SCB, AWD+SCB (training form), AWD+SCB folded
   (= AWD), all four; inference (eval, no_grad) and a training step (forward + backward of the
   summed mean of p2..p6).
4. DSL (--detector): a Mask R-CNN training step of GeneralizedRCNN vs DSLGeneralizedRCNN (plain
   backbone, one image with 3 instances and its clean twin): DSL runs the detector twice.

    .venv/bin/python bench/bench_lis_modules.py [--reps 5] [--backbone-reps 3] [--detector-reps 3]
        [--size 416 608] [--parts modules aggregation conv2 backbone detector] [--threads 2]
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_util as bu  # noqa: E402
from detectron2.modeling import build_backbone, build_model  # noqa: E402
from detectron2.structures import BitMasks, Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from segalias_d2.engine import load_config  # noqa: E402
from segalias_d2.modeling.backbone.lis_modules import (  # noqa: E402
    AdaptiveWeightedDownsample,
    SmoothBranch,
    _TapAggregate,  # noqa: E402
)
from segalias_d2.modeling.fourier_filters import DeAliasingFilter, FreqMix  # noqa: E402

STAGE_INPUTS = {
    "res3": (256, 4),
    "res4": (512, 8),
    "res5": (1024, 16),
}  # AWD/DAF slot: channels, stride of map
CONV2 = {
    "res3": (128, 8),
    "res4": (256, 16),
    "res5": (512, 32),
}  # bottleneck width P, stride of the map
BACKBONES = {
    "plain": {},
    "DAF+FreqMix": {"DAF": True, "FREQMIX": True},
    "AWD": {"AWD": True},
    "SCB": {"SCB": True},
    "AWD+SCB": {"AWD": True, "SCB": True},
    "AWD+SCB folded": {"AWD": True},
    "all four": {"DAF": True, "FREQMIX": True, "AWD": True, "SCB": True},
}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def fwd(fn, x):
    def call():
        with torch.no_grad():
            fn(x)

    return call


def fwd_bwd(fn, x):
    def call():
        xg = x.detach().requires_grad_()
        fn(xg).float().square().mean().backward()

    return call


def row(*cells):
    print("| " + " | ".join(str(c) for c in cells) + " |")


def ratio(a, b):
    return f"{bu.med(a) / bu.med(b):.2f}x"


def bench_modules(h, w, reps, device):
    print(f"\n### Stage-input modules (batch 1, input {h}x{w})\n")
    row(
        "slot",
        "C x H x W",
        "module",
        "params",
        "fwd ms (min / med)",
        "fwd+bwd ms (min / med)",
        "fwd vs DAF (med)",
    )
    row(*["---"] * 7)
    for slot, (c, s) in STAGE_INPUTS.items():
        x = torch.randn(1, c, -(-h // s), -(-w // s), device=device)
        mods = {
            "AWD": AdaptiveWeightedDownsample(c).to(device),
            "DAF": DeAliasingFilter(0.35).to(device),
        }
        t_f = bu.time_interleaved({k: fwd(m, x) for k, m in mods.items()}, reps, device)
        t_b = bu.time_interleaved({k: fwd_bwd(m, x) for k, m in mods.items()}, reps, device)
        for k, m in mods.items():
            row(
                slot,
                "x".join(map(str, x.shape[1:])),
                k,
                f"{n_params(m):,}",
                bu.min_med(t_f[k]),
                bu.min_med(t_b[k]),
                ratio(t_f[k], t_f["DAF"]),
            )


def _views_autograd(k, xp, s):
    """The tap sum through plain autograd on 9 strided views (what _TapAggregate replaces)."""
    ho, wo = k.shape[-2:]
    out = None
    for u in range(3):
        for v in range(3):
            tap = (
                k[:, :, 3 * u + v]
                * xp[:, :, u : u + s * (ho - 1) + 1 : s, v : v + s * (wo - 1) + 1 : s]
            )
            out = tap if out is None else out + tap
    return out


def _unfold(k, xp, s):
    """The released form: unfold the padded input into 9x patches, weight, sum."""
    b, c, _, ho, wo = k.shape
    return (k * F.unfold(xp, 3, stride=s).view(b, c, 9, ho, wo)).sum(2)


def bench_aggregation(h, w, reps, device):
    print(f"\n### AWD weighted tap sum alone, stride 2 (batch 1, input {h}x{w})\n")
    row(
        "slot",
        "C x H x W (input)",
        "implementation",
        "fwd+bwd ms (min / med)",
        "vs custom (med)",
        "max abs diff",
    )
    row(*["---"] * 6)
    for slot, (c, s) in STAGE_INPUTS.items():
        g = torch.Generator().manual_seed(3)
        x = torch.randn(1, c, -(-h // s), -(-w // s), generator=g).to(device)
        ho, wo = -(-x.shape[2] // 2), -(-x.shape[3] // 2)
        k = torch.softmax(torch.randn(1, c, 9, ho, wo, generator=g), dim=2).to(device)
        impls = {
            "custom (_TapAggregate)": lambda kk, xp: _TapAggregate.apply(kk, xp, 2),
            "autograd on 9 views": lambda kk, xp: _views_autograd(kk, xp, 2),
            "unfold (released)": lambda kk, xp: _unfold(kk, xp, 2),
        }

        def step(f):
            def call():
                kk, xx = k.detach().requires_grad_(), x.detach().requires_grad_()
                f(kk, F.pad(xx, (1, 1, 1, 1), mode="reflect")).square().mean().backward()

            return call

        t = bu.time_interleaved({n: step(f) for n, f in impls.items()}, reps, device)
        with torch.no_grad():
            ref = impls["unfold (released)"](k, F.pad(x, (1, 1, 1, 1), mode="reflect"))
            outs = {n: f(k, F.pad(x, (1, 1, 1, 1), mode="reflect")) for n, f in impls.items()}
        for n in impls:
            row(
                slot,
                "x".join(map(str, x.shape[1:])),
                n,
                bu.min_med(t[n]),
                ratio(t[n], t["custom (_TapAggregate)"]),
                f"{float((outs[n] - ref).abs().max()):.1e}",
            )


def bench_conv2(h, w, reps, device):
    print(
        f"\n### Bottleneck conv2 modules (batch 1, input {h}x{w}; overhead vs the plain 3x3 conv)\n"
    )
    row(
        "slot",
        "P x H x W",
        "variant",
        "extra params",
        "fwd ms (min / med)",
        "fwd+bwd ms (min / med)",
        "fwd ratio",
        "fwd+bwd ratio",
    )
    row(*["---"] * 8)
    for slot, (p, s) in CONV2.items():
        torch.manual_seed(0)
        x = torch.randn(1, p, -(-h // s), -(-w // s), device=device)
        conv = torch.nn.Conv2d(p, p, 3, padding=1, bias=False).to(device)
        scb = SmoothBranch(p).to(device)
        fm = FreqMix(p).to(device)
        variants = {
            "3x3 conv (= SCB folded)": (lambda t: conv(t), 0),
            "3x3 + SCB, fused": (
                lambda t: F.conv2d(t, scb.fold(conv.weight), None, 1, 1),
                n_params(scb),
            ),
            "3x3 + SCB, two-branch": (lambda t: conv(t) + scb(t), n_params(scb)),
            "3x3 + FreqMix": (lambda t: fm(conv(t)), n_params(fm)),
        }
        t_f = bu.time_interleaved({k: fwd(f, x) for k, (f, _) in variants.items()}, reps, device)
        t_b = bu.time_interleaved(
            {k: fwd_bwd(f, x) for k, (f, _) in variants.items()}, reps, device
        )
        base = "3x3 conv (= SCB folded)"
        for k, (_, extra) in variants.items():
            row(
                slot,
                "x".join(map(str, x.shape[1:])),
                k,
                f"{extra:,}",
                bu.min_med(t_f[k]),
                bu.min_med(t_b[k]),
                ratio(t_f[k], t_f[base]),
                ratio(t_b[k], t_b[base]),
            )


def lis_cfg(flags, detector=False):
    """The LIS recipe's model (configs/LIS-InstanceSegmentation/Base-LIS-RCNN-FPN-COCOInit.yaml:
    caffe R50-FPN, FrozenStatsBN, FREEZE_AT 2, 8 classes) with the given modules on."""
    cfg = load_config(
        str(REPO / "configs" / "LIS-InstanceSegmentation" / "Base-LIS-RCNN-FPN-COCOInit.yaml")
    )
    cfg.MODEL.DEVICE = "cpu"
    for key in ("DAF", "FREQMIX", "AWD", "SCB"):
        cfg.MODEL.SEGALIAS[key].ENABLED = bool(flags.get(key, False))
    if detector:
        cfg.INPUT.SEGALIAS.SYNTHESIS.ENABLED = True
        cfg.INPUT.SEGALIAS.CLEAN_TWIN = "synthetic"
    return cfg


def bench_backbones(h, w, reps, device):
    models = {}
    for name, flags in BACKBONES.items():
        torch.manual_seed(0)
        models[name] = build_backbone(lis_cfg(flags)).to(device)
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1)).to(device)

    def infer(m):
        def call():
            m.eval()
            with torch.no_grad():
                m(x)

        return call

    def train(m):
        def call():
            m.train()
            m.zero_grad(set_to_none=True)
            sum(v.float().mean() for v in m(x).values()).backward()

        return call

    t_i = bu.time_interleaved({k: infer(m) for k, m in models.items()}, reps, device)
    t_t = bu.time_interleaved({k: train(m) for k, m in models.items()}, reps, device)
    print(
        f"\n### R50-FPN backbones (batch 1, 3x{h}x{w}, FrozenStatsBN, FREEZE_AT 2, caffe strides)\n"
    )
    row(
        "backbone",
        "params",
        "vs plain",
        "inference s (min / med)",
        "vs plain (med)",
        "training step s (min / med)",
        "vs plain (med)",
    )
    row(*["---"] * 7)
    base = n_params(models["plain"])
    for k, m in models.items():
        row(
            k,
            f"{n_params(m):,}",
            f"{n_params(m) - base:+,}",
            bu.min_med([t / 1e3 for t in t_i[k]], "{:.2f}"),
            ratio(t_i[k], t_i["plain"]),
            bu.min_med([t / 1e3 for t in t_t[k]], "{:.2f}"),
            ratio(t_t[k], t_t["plain"]),
        )


def bench_detector(h, w, reps):
    torch.manual_seed(0)
    plain_cfg = lis_cfg({}, detector=True)
    dsl_cfg = plain_cfg.clone()
    dsl_cfg.MODEL.META_ARCHITECTURE = "DSLGeneralizedRCNN"
    models = {"GeneralizedRCNN": build_model(plain_cfg), "DSLGeneralizedRCNN": build_model(dsl_cfg)}
    models["DSLGeneralizedRCNN"].load_state_dict(models["GeneralizedRCNN"].state_dict())
    g = torch.Generator().manual_seed(2)
    inst = Instances((h, w))
    boxes = torch.tensor(
        [[20.0, 30.0, 200.0, 220.0], [250.0, 40.0, 500.0, 300.0], [100, 250, 300, 400.0]]
    )
    inst.gt_boxes, inst.gt_classes = Boxes(boxes), torch.tensor([1, 2, 5])
    masks = torch.zeros(3, h, w, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
        masks[i, y0:y1, x0:x1] = True
    inst.gt_masks = BitMasks(masks)
    noisy = torch.rand(3, h, w, generator=g) * 255
    batch = [
        {
            "image": noisy,
            "clean_image": noisy * 0.5 + 60,
            "instances": inst,
            "height": h,
            "width": w,
        }
    ]

    def step(m):
        def call():
            m.train()
            m.zero_grad(set_to_none=True)
            with EventStorage(0):
                sum(m(batch).values()).backward()

        return call

    t = bu.time_interleaved({k: step(m) for k, m in models.items()}, reps, torch.device("cpu"))
    print(f"\n### DSL: Mask R-CNN training step (batch 1, 3x{h}x{w}, plain R50-FPN, 3 instances)\n")
    row("meta-architecture", "params", "training step s (min / med)", "vs GeneralizedRCNN (med)")
    row(*["---"] * 4)
    for k, m in models.items():
        row(
            k,
            f"{n_params(m):,}",
            bu.min_med([x / 1e3 for x in t[k]], "{:.2f}"),
            ratio(t[k], t["GeneralizedRCNN"]),
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="module / conv2 repetitions")
    ap.add_argument("--backbone-reps", type=int, default=3)
    ap.add_argument("--detector-reps", type=int, default=3)
    ap.add_argument("--size", type=int, nargs=2, default=(416, 608), metavar=("H", "W"))
    ap.add_argument(
        "--parts",
        nargs="+",
        default=["modules", "aggregation", "conv2", "backbone", "detector"],
        choices=["modules", "aggregation", "conv2", "backbone", "detector"],
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = bu.pick_device(args.device)
    h, w = args.size
    print(
        f"# bench_lis_modules: {bu.describe(device)}, torch {torch.__version__}, float32; "
        f"load average (1 min) at start {bu.load_average():.2f}"
    )
    if "modules" in args.parts:
        bench_modules(h, w, args.reps, device)
    if "aggregation" in args.parts:
        bench_aggregation(h, w, args.reps, device)
    if "conv2" in args.parts:
        bench_conv2(h, w, args.reps, device)
    if "backbone" in args.parts:
        bench_backbones(h, w, args.backbone_reps, device)
    if "detector" in args.parts:
        bench_detector(h, w, args.detector_reps)
    print(f"\nload average (1 min) at the end {bu.load_average():.2f}")


if __name__ == "__main__":
    main()
