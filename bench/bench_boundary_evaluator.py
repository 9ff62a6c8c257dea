"""Benchmark of the boundary error metric core on Cityscapes-sized maps.

Measures, side by side in one run, on N synthetic 1024x2048 image pairs with 19 classes
(blobby label maps with ~3% ignore pixels):

* fast: ``BoundaryErrorCounter.update`` (int16 Laplacian, uint8 dilation, one bincount);
* naive: a per-image transcription of the reference §5.6 (float64 Laplacian, boolean indexing
  copy per region, 3 bincounts per region);
* peak RSS after N and after 2N images in fresh subprocesses (streaming state: constant memory).

Usage: python bench/bench_boundary_evaluator.py [--n 20] [--naive-n 5] [--classes 19]
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import cv2
import numpy as np

from segalias_d2.evaluation.boundary_errors import BoundaryErrorCounter, boundary_error_metrics

H, W = 1024, 2048


def make_pair(rng, K):
    def blobby():
        small = rng.integers(0, K, (16, 32)).astype(np.uint8)
        m = cv2.resize(small, (W, H), interpolation=cv2.INTER_NEAREST)
        return m

    gt = blobby()
    gt[rng.random((H, W)) < 0.03] = 255
    pred = gt.copy()
    pred[pred == 255] = 0
    shift = np.roll(pred, 5, axis=1)
    noisy = blobby()
    sel = rng.random((H, W)) < 0.2
    pred = np.where(sel, noisy, shift).astype(np.uint8)
    return pred, gt


def naive_update(counts, pred, gt, K, ignore=255, width=15):
    kernel = np.ones((width, width), np.uint8)
    ep = (cv2.Laplacian(pred.astype(np.uint8), cv2.CV_64F) != 0).astype(np.uint8)
    eg = (cv2.Laplacian(gt.astype(np.uint8), cv2.CV_64F) != 0).astype(np.uint8)
    bp = cv2.dilate(ep, kernel).astype(bool)
    bg = cv2.dilate(eg, kernel).astype(bool)
    valid = gt != ignore
    regions = {"all": np.ones_like(bp), "union": bp | bg, "pred": bp, "gt": bg, "inter": bp & bg}
    for r, R in regions.items():
        m = R & valid
        p, g = pred[m].astype(np.int64), gt[m].astype(np.int64)
        inter, P, G = counts[r]
        inter += np.bincount(g[p == g], minlength=K)[:K]
        P += np.bincount(p[(p >= 0) & (p < K)], minlength=K)[:K]
        G += np.bincount(g, minlength=K)[:K]


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_child(n, K):
    """Run in a fresh process: stream n images (generated one at a time), report peak RSS."""
    rng = np.random.default_rng(0)
    c = BoundaryErrorCounter(K)
    base = rss_mb()
    for _ in range(n):
        p, g = make_pair(rng, K)
        c.update(p, g)
    print(json.dumps({"n": n, "peak_rss_mb": rss_mb(), "rss_before_mb": base}))


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=20, help="images for the fast path")
    ap.add_argument("--naive-n", type=int, default=5, help="images for the naive path")
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--mem-n", type=int, default=10, help="N for the peak-RSS check (N and 2N)")
    ap.add_argument("--_mem_child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    K = args.classes
    if args._mem_child is not None:
        memory_child(args._mem_child, K)
        return

    rng = np.random.default_rng(0)
    pairs = [make_pair(rng, K) for _ in range(max(4, min(args.n, 8)))]
    print(f"maps {H}x{W}, {K} classes, cv2 threads={cv2.getNumThreads()}")

    fast = BoundaryErrorCounter(K)
    fast.update(*pairs[0])  # warm-up
    fast.reset()
    t0 = time.perf_counter()
    for i in range(args.n):
        fast.update(*pairs[i % len(pairs)])
    t_fast = (time.perf_counter() - t0) / args.n

    naive = {
        r: [np.zeros(K, np.int64) for _ in range(3)]
        for r in ["all", "union", "pred", "gt", "inter"]
    }
    t0 = time.perf_counter()
    for i in range(args.naive_n):
        naive_update(naive, *pairs[i % len(pairs)], K)
    t_naive = (time.perf_counter() - t0) / args.naive_n

    # parity on the same images
    chk_fast = BoundaryErrorCounter(K)
    chk_naive = {r: [np.zeros(K, np.int64) for _ in range(3)] for r in naive}
    for p, g in pairs[:2]:
        chk_fast.update(p, g)
        naive_update(chk_naive, p, g, K)
    from segalias_d2.evaluation.boundary_errors import REGION_CODES, _region_stats

    ok = True
    for r in REGION_CODES:
        inter, P, G = _region_stats(chk_fast.region_confusion(r), K)
        ok &= (
            np.array_equal(inter, chk_naive[r][0])
            and np.array_equal(P, chk_naive[r][1])
            and np.array_equal(G, chk_naive[r][2])
        )

    mem = []
    for n in (args.mem_n, 2 * args.mem_n):
        out = subprocess.run(
            [sys.executable, __file__, "--_mem_child", str(n), "--classes", str(K)],
            capture_output=True,
            text=True,
            check=True,
        )
        mem.append(json.loads(out.stdout.strip().splitlines()[-1]))

    print("| implementation | s / image | images / s | speed-up |")
    print("|---|---|---|---|")
    print(
        f"| fast (BoundaryErrorCounter.update) | {t_fast:.4f} | {1 / t_fast:.1f} | "
        f"{t_naive / t_fast:.1f}x |"
    )
    print(f"| naive (reference §5.6 transcription) | {t_naive:.4f} | {1 / t_naive:.1f} | 1.0x |")
    print(f"counts identical (fast vs naive, 2 images): {ok}")
    for m in mem:
        print(
            f"peak RSS after streaming {m['n']} images: {m['peak_rss_mb']:.0f} MiB (before: "
            f"{m['rss_before_mb']:.0f} MiB)"
        )
    _ = boundary_error_metrics(fast.confusion)


if __name__ == "__main__":
    main()
