"""The DAF low-pass on the CPU in its three forms (``spectral_lowpass.lowpass_form``): the
transforms, the matrix form and the row form, side by side in one process, to place the rule's
limits (``MATRIX_FORM_MAX_SIDE_SUM``, ``ROW_FORM_MAX_HEIGHT``); and the row form with rfft / irfft
along W against its default products there (``lowpass_products.ROW_FORM_DFT_MAX_WIDTH``).

Table 1: ``spectral_lowpass`` alone (with the im functional, as FreqMix's forward calls it) on
about 2^20 elements of (H, W) planes, for the plane sizes of R50-FPN at 800x1344 and of the usual
crops. Table 2: DAF and FreqMix forward + backward at R50-FPN sizes where a product form is the
default or nearly is. Every call runs after a 64 MiB write that evicts the caches (inside a
network the filter's input and temporaries are not cache-resident either; ``--warm`` skips it).
Forms interleave (``--reps`` rounds after one warm-up round); min / median in ms.

    SEGALIAS_BENCH_THREADS=1 SEGALIAS_BENCH_CLOCK=process .venv/bin/python \\
        bench/bench_lowpass_forms.py [--reps 15] [--warm]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_util as bu  # noqa: E402

import segalias_d2.modeling.lowpass_products as lp  # noqa: E402
import segalias_d2.modeling.spectral_lowpass as sl  # noqa: E402
from segalias_d2.modeling.fourier_filters import DeAliasingFilter, FreqMix  # noqa: E402

# R50-FPN at 800x1344 (FreqMix at res3-res5: 100x168, 50x84, 25x42; DAF adds 200x336), crops of
# 512x1024 (64x128, 32x64, 16x32), 768 (96, 48, 24) and 512 (64, 32, 16), and sizes between
PLANE_SIZES = [
    (16, 16),
    (16, 32),
    (24, 24),
    (25, 42),
    (32, 32),
    (30, 50),
    (38, 38),
    (32, 64),
    (48, 48),
    (40, 64),
    (50, 84),
    (56, 96),
    (64, 64),
    (40, 128),
    (64, 128),
    (84, 50),
    (96, 96),
    (100, 168),
]
# the three forms, and the row form with rfft / irfft along W at every width ("rows_fft"; the
# default does them as products up to lowpass_products.ROW_FORM_DFT_MAX_WIDTH)
FORMS = sl.LOWPASS_FORMS + ("rows_fft",)


def in_form(form, fn):
    def call():
        old, old_width = sl.FORCE_FORM, lp.ROW_FORM_DFT_MAX_WIDTH
        sl.FORCE_FORM = "rows" if form == "rows_fft" else form
        if form == "rows_fft":
            lp.ROW_FORM_DFT_MAX_WIDTH = 0
        try:
            fn()
        finally:
            sl.FORCE_FORM, lp.ROW_FORM_DFT_MAX_WIDTH = old, old_width

    return call


HEAD = (
    "default form | transform ms | matrix ms | rows ms | rows, FFTs along W ms | "
    "transform / matrix | transform / rows | rows FFTs / rows |"
)


def time_cold(fns, reps, warm):
    """{name: [ms, ...]}, interleaved, each call after a cache-evicting write unless ``warm``."""
    evict = torch.zeros(16 << 20)
    cpu = torch.device("cpu")
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            if not warm:
                evict.add_(1.0)
            times[k].append(bu.time_call(f, cpu))
    return times


def plane_rows(args):
    print("\n| planes N x H x W | H + W | " + HEAD)
    print("|---|---|---|---|---|---|---|---|---|---|")
    for h, w in PLANE_SIZES:
        n = max(1, (1 << 20) // (h * w))
        x, im = torch.randn(n, h, w), torch.empty(n)

        def lowpass(x=x, im=im):
            sl.spectral_lowpass(x, 0.35, 1 << 20, im_out=im)

        t = time_cold({f: in_form(f, lowpass) for f in FORMS}, args.reps, args.warm)
        print(
            f"| {n}x{h}x{w} | {h + w} | {sl.lowpass_form(h, w, x.device)} | " + row(t, "{:.2f}"),
            flush=True,
        )


def row(t, fmt="{:.1f}"):
    """min / median of each form, then the transform's median over each product form's, and the
    row form's with FFTs along W over its default."""
    med = {f: bu.med(t[f]) for f in FORMS}
    return (
        " | ".join(bu.min_med(t[f], fmt) for f in FORMS)
        + f" | {med['transform'] / med['matrix']:.2f}x | {med['transform'] / med['rows']:.2f}x"
        + f" | {med['rows_fft'] / med['rows']:.2f}x |"
    )


def module_rows(args):
    print("\n| op | where | C x H x W | " + HEAD)
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    cases = [
        ("FreqMix", "res4 conv2, 800x1344 input", (256, 50, 84)),
        ("FreqMix", "res5 conv2, 800x1344 input", (512, 25, 42)),
        ("DAF", "res5 input, 800x1344 input", (1024, 50, 84)),
        ("FreqMix", "res5 conv2, 768x768 crop", (512, 24, 24)),
        ("DAF", "res5 input, 512x512 crop", (1024, 32, 32)),
    ]
    for op, where, (c, h, w) in cases:
        torch.manual_seed(0)
        mod = FreqMix(c) if op == "FreqMix" else DeAliasingFilter(0.35)
        x, gy = torch.randn(1, c, h, w), torch.randn(1, c, h, w)

        def fwd_bwd(mod=mod, x=x, gy=gy):
            mod(x.detach().requires_grad_()).backward(gy)
            for p in mod.parameters():
                p.grad = None

        t = time_cold({f: in_form(f, fwd_bwd) for f in FORMS}, args.reps, args.warm)
        form = sl.lowpass_form(h, w, x.device)
        print(f"| {op} fwd+bwd | {where} | {c}x{h}x{w} | {form} | " + row(t), flush=True)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--warm", action="store_true", help="no cache eviction before each call")
    args = ap.parse_args()
    torch.set_num_threads(bu.cpu_threads())
    print(
        f"torch {torch.__version__}, {bu.describe(torch.device('cpu'))}, "
        f"{'warm' if args.warm else 'cold'} caches, reps {args.reps}, "
        f"MATRIX_FORM_MAX_SIDE_SUM = {sl.MATRIX_FORM_MAX_SIDE_SUM}, "
        f"ROW_FORM_MAX_HEIGHT = {sl.ROW_FORM_MAX_HEIGHT}, "
        f"ROW_FORM_DFT_MAX_WIDTH = {lp.ROW_FORM_DFT_MAX_WIDTH}, load {bu.load_average():.2f}"
    )
    plane_rows(args)
    module_rows(args)
    print(f"\nload average at the end: {bu.load_average():.2f}")


if __name__ == "__main__":
    main()
