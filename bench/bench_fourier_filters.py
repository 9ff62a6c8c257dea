"""DAF and FreqMix: fast rfft path vs the reference transcription (fftshift + complex box mask + real part).

The references are the literal transcriptions in tests/reference_fourier.py (FreqMix: the released computation,
gate "released", all-dims fftshift); tests/ is put on sys.path below, so this runs from any directory.

Shapes: Mask R-CNN R50-FPN on an 800x1333 image (padded to 800x1344): DAF on the res3/res4/res5 stage inputs,
FreqMix on the conv2 outputs of res3/res4/res5. Batch 1, float32, CPU, torch.set_num_threads(2), forward only
(no_grad). Time = min and median of --reps interleaved runs after one warm-up, both variants on the same input in one
process.
Peak memory = peak-RSS increase of one call, measured in a fresh subprocess per (op, variant, shape)
(VmHWM after the call minus VmRSS right before it, peak mark reset via /proc/self/clear_refs, input
already allocated).

    .venv/bin/python bench/bench_fourier_filters.py [--reps 5] [--only {DAF,FreqMix}]
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from segalias_d2.modeling.fourier_filters import DeAliasingFilter, FreqMix

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_fourier import reference_daf, reference_freqmix  # noqa: E402  (test code, not in the package)

CASES = [
    ("DAF", "res3 input", (256, 200, 336)),
    ("DAF", "res4 input", (512, 100, 168)),
    ("DAF", "res5 input", (1024, 50, 84)),
    ("FreqMix", "res3 conv2", (128, 100, 168)),
    ("FreqMix", "res4 conv2", (256, 50, 84)),
    ("FreqMix", "res5 conv2", (512, 25, 42)),
]


def make_fns(op, c):
    torch.manual_seed(0)
    if op == "DAF":
        daf = DeAliasingFilter(0.35)
        return {"fast": daf, "reference": lambda x: reference_daf(x, 0.35)}
    fm = FreqMix(c)
    return {"fast": fm, "reference": lambda x: reference_freqmix(x, fm)}


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def child(op, variant, shape):
    torch.set_num_threads(2)
    c, h, w = shape
    fn = make_fns(op, c)[variant]
    x = torch.randn(1, c, h, w)
    with torch.no_grad():
        fn(torch.randn(1, c, 8, 9))  # warm up kernels/allocator on a tiny input
        # reset the kernel's peak-RSS mark (Linux >= 4.0) so import-time peaks do not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS")
        y = fn(x)
        peak = _status_kib("VmHWM")
    del y
    print(json.dumps({"peak_delta": max(0, peak - before) * 1024}))


def peak_mb(op, variant, shape):
    out = subprocess.run(
        [sys.executable, __file__, "--child", op, variant, "x".join(map(str, shape))],
        capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]
    return json.loads(out)["peak_delta"] / 2**20


def time_pair(fa, fb, x, reps):
    """Interleaved runs (a, b, a, b, ...) so background load hits both alike; returns (min, median) ms each."""
    ta, tb = [], []
    with torch.no_grad():
        fa(x), fb(x)
        for _ in range(reps):
            for f, ts in ((fa, ta), (fb, tb)):
                t0 = time.perf_counter()
                f(x)
                ts.append(1000 * (time.perf_counter() - t0))
    return (min(ta), statistics.median(ta)), (min(tb), statistics.median(tb))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", choices=["DAF", "FreqMix"], help="run only this op's rows")
    ap.add_argument("--child", nargs=3, metavar=("OP", "VARIANT", "CxHxW"))
    args = ap.parse_args()
    if args.child:
        op, variant, shape = args.child
        child(op, variant, tuple(int(v) for v in shape.split("x")))
        return
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, reps {args.reps}, float32, batch 1\n")
    hdr = ("| op | where | C x H x W | fast ms (min / median) | reference ms (min / median) | speed-up (min, median) "
           "| fast peak MiB | reference peak MiB | memory ratio | max abs diff |")
    print(hdr)
    print("|" + "---|" * 10)
    for op, where, shape in CASES:
        if args.only and op != args.only:
            continue
        c, h, w = shape
        fns = make_fns(op, c)
        x = torch.randn(1, c, h, w)
        with torch.no_grad():
            diff = (fns["fast"](x) - fns["reference"](x)).abs().max().item()
        tf, tr = time_pair(fns["fast"], fns["reference"], x, args.reps)
        mf = peak_mb(op, "fast", shape)
        mr = peak_mb(op, "reference", shape)
        print(f"| {op} | {where} | {c}x{h}x{w} | {tf[0]:.1f} / {tf[1]:.1f} | {tr[0]:.1f} / {tr[1]:.1f} "
              f"| {tr[0] / tf[0]:.2f}x, {tr[1] / tf[1]:.2f}x | {mf:.0f} | {mr:.0f} | {mf / mr:.2f} | {diff:.1e} |",
              flush=True)


if __name__ == "__main__":
    main()
