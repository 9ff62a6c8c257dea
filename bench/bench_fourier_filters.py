"""DAF and FreqMix: the modules ("new": custom autograd functions, fourier_ops.py) vs the previous
fast path ("old": bench/legacy_fourier.py, autograd through rfft2/irfft2) vs the literal
transcriptions ("reference": tests/reference_fourier.py, fftshift + full complex mask, autograd
through it), side by side in one process.

Shapes: R50-FPN on an 800x1333 image padded to 800x1344: DAF on the res3/res4/res5 stage inputs,
FreqMix on the conv2 outputs of res3/res4/res5; batch 1. "fwd" = forward under no_grad, "fwd+bwd" =
forward with a graph + backward of a fixed random cotangent w.r.t. the input (and FreqMix's
parameters). All variants of a row run interleaved (``--reps`` rounds after one warm-up round); min
/ median in ms. Peak memory of fwd+bwd: CPU = peak-RSS increase in a fresh subprocess per (op,
variant, shape), CUDA = max_memory_allocated increase (see bench/bench_util.py). The last table
times DAF at the res3 input against copying the same tensor.

    .venv/bin/python bench/bench_fourier_filters.py [--reps 7] [--only {DAF,FreqMix}]
        [--device auto|cpu|cuda] [--amp fp32 fp16 bf16] [--no-mem]

On CUDA the default runs fp32 and the fp16/bf16 autocast variants (input in that dtype, as the
backbone feeds it under autocast); on CPU only fp32 unless --amp says otherwise.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import bench_util as bu  # noqa: E402
from legacy_fourier import use_legacy  # noqa: E402
from reference_fourier import reference_daf, reference_freqmix  # noqa: E402  (test code, not in the package)

from segalias_d2.modeling.fourier_filters import DeAliasingFilter, FreqMix  # noqa: E402

CASES = [
    ("DAF", "res3 input", (256, 200, 336)),
    ("DAF", "res4 input", (512, 100, 168)),
    ("DAF", "res5 input", (1024, 50, 84)),
    ("FreqMix", "res3 conv2", (128, 100, 168)),
    ("FreqMix", "res4 conv2", (256, 50, 84)),
    ("FreqMix", "res5 conv2", (512, 25, 42)),
]
VARIANTS = ("new", "old", "reference")


def make_fns(op, c, device):
    """{variant: module-like callable}; all FreqMix variants share one set of weights."""
    torch.manual_seed(0)
    if op == "DAF":
        new, old = DeAliasingFilter(0.35), use_legacy(DeAliasingFilter(0.35))
        return {"new": new, "old": old, "reference": lambda x: reference_daf(x.float(), 0.35)}, []
    new = FreqMix(c).to(device)
    torch.manual_seed(0)
    old = use_legacy(FreqMix(c).to(device))
    # the transcriptions get float32 input: their FFTs have no half-precision path (cuFFT: powers of
    # two only)
    return {"new": new, "old": old, "reference": lambda x: reference_freqmix(x.float(), new)}, list(
        new.parameters()
    )


def step_fns(fn, params, x, gy, device, amp):
    def fwd():
        with torch.no_grad(), bu.amp_context(device, amp):
            fn(x)

    def fwd_bwd():
        xg = x.detach().requires_grad_()
        with bu.amp_context(device, amp):
            y = fn(xg)
        y.backward(gy.to(y.dtype))
        for p in params:
            p.grad = None

    return fwd, fwd_bwd


def make_input(shape, device, amp, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((1,) + tuple(shape), generator=g).to(device)
    dt = bu.amp_dtype(amp)
    return x if dt is None else x.to(dt)


def mem_child(op, variant, shape_s, device_s, amp):
    torch.set_num_threads(bu.cpu_threads())
    device = bu.pick_device(device_s)
    shape = tuple(int(v) for v in shape_s.split("x"))
    fns, params = make_fns(op, shape[0], device)
    x = make_input(shape, device, amp)
    gy = torch.randn_like(x)
    _, fwd_bwd = step_fns(fns[variant], params, x, gy, device, amp)
    print(json.dumps({"rss_mib": bu.rss_peak_of_call(fwd_bwd)}))


def peak_mib(op, variant, shape, fns, params, x, gy, device, amp):
    if device.type == "cuda":
        _, fwd_bwd = step_fns(fns[variant], params, x, gy, device, amp)
        fwd_bwd()
        return bu.cuda_peak_mib(fwd_bwd, device)
    args = [op, variant, "x".join(map(str, shape)), str(device), amp]
    return bu.cpu_peak_in_child(__file__, args)["rss_mib"]


def run_rows(args, device, amp):
    print(
        f"\n### {bu.describe(device)}, {amp}, batch 1, reps {args.reps} (load at start "
        f"{bu.load_average():.2f})\n"
    )
    print(
        "| op | where | C x H x W | mode | new ms | old ms | reference ms | new vs reference | new "
        "vs old | peak MiB new / old / reference | max abs diff |"
    )
    print("|" + "---|" * 11)
    for op, where, shape in CASES:
        if args.only and op != args.only:
            continue
        fns, params = make_fns(op, shape[0], device)
        x = make_input(shape, device, amp)
        gy = torch.randn_like(x)
        with torch.no_grad(), bu.amp_context(device, amp):
            diff = (fns["new"](x).float() - fns["reference"](x).float()).abs().max().item()
        steps = {v: step_fns(fns[v], params, x, gy, device, amp) for v in VARIANTS}
        mem = ""
        if not args.no_mem:
            mem = " / ".join(
                f"{peak_mib(op, v, shape, fns, params, x, gy, device, amp):.0f}" for v in VARIANTS
            )
        for mode, k in (("fwd", 0), ("fwd+bwd", 1)):
            t = bu.time_interleaved({v: steps[v][k] for v in VARIANTS}, args.reps, device)
            m = {v: bu.med(t[v]) for v in VARIANTS}
            print(
                f"| {op} | {where} | {'x'.join(map(str, shape))} | {mode} | {bu.min_med(t['new'])} "
                f"| {bu.min_med(t['old'])} | {bu.min_med(t['reference'])} | "
                f"{m['reference'] / m['new']:.2f}x "
                f"| {m['old'] / m['new']:.2f}x | {mem if k else ''} | {diff:.1e} |",
                flush=True,
            )


def copy_ratio(args, device):
    """DAF forward at the res3 input vs copying the same tensor (allocating clone / into a
    preallocated one)."""
    x = make_input(CASES[0][2], device, "fp32")
    out = torch.empty_like(x)
    daf = DeAliasingFilter(0.35)
    fns = {"DAF": lambda: daf(x), "clone": lambda: x.clone(), "copy_": lambda: out.copy_(x)}
    with torch.no_grad():
        t = bu.time_interleaved(fns, args.reps, device)
    m = {k: bu.med(v) for k, v in t.items()}
    gb = 2 * x.numel() * x.element_size() / 1e9  # bytes read + written by a copy
    print(
        f"\nDAF forward at the res3 input 1x{'x'.join(map(str, CASES[0][2]))} "
        f"({bu.describe(device)}), "
        f"median of {args.reps}: DAF {m['DAF']:.1f} ms, clone {m['clone']:.2f} ms "
        f"({gb / m['clone'] * 1e3:.1f} GB/s), copy_ into a preallocated tensor {m['copy_']:.2f} ms "
        f"({gb / m['copy_'] * 1e3:.1f} GB/s); DAF / clone = {m['DAF'] / m['clone']:.1f}x, "
        f"DAF / copy_ = {m['DAF'] / m['copy_']:.1f}x"
    )


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--only", choices=["DAF", "FreqMix"], help="run only this op's rows")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", nargs="+", choices=["fp32", "fp16", "bf16"], help="default: see above")
    ap.add_argument("--no-mem", action="store_true", help="skip the peak-memory column")
    ap.add_argument("--_mem_child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._mem_child:
        mem_child(*args._mem_child)
        return
    torch.set_num_threads(bu.cpu_threads())
    device = bu.pick_device(args.device)
    print(f"torch {torch.__version__}, {bu.describe(device)}")
    for amp in args.amp or bu.default_amps(device):
        run_rows(args, device, amp)
    if args.only != "FreqMix":
        copy_ratio(args, device)
    print(f"\nload average at the end: {bu.load_average():.2f}")


if __name__ == "__main__":
    main()
