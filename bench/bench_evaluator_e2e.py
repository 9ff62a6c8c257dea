"""``BoundaryErrorSemSegEvaluator`` end to end at Cityscapes size: ``process()`` with the argmax
over the logits and the ground-truth PNG decode, and ``evaluate()``, with a per-stage breakdown
(bench code, CPU: NumPy / OpenCV / torch).

Data: --n Cityscapes-like images written to a temporary folder: 1024x2048 8-bit grey label PNGs
(curved blobs of the 19 classes from smooth random fields, ~5% contiguous ignore regions plus an
ignored ego-vehicle strip at the bottom, saved by PIL like the Cityscapes ``labelTrainIds``), and
(19, 1024, 2048) float32 logits per image (smooth per-class fields + a one-hot bump on a prediction
= the GT shifted by 4 px with wrong blobs; no ties). The dataset is registered in Detectron2's
catalogs so the evaluator is built as train_net.py builds it.

Rows (all interleaved, --reps rounds over the --n images after one warm-up round; median per image):

* ``process`` -- ``evaluator.process([input], [{"sem_seg": logits}])``; images/s = 1000 / median ms;
* breakdown, the same stages called one by one on the same data: ``argmax``
  (``prediction_to_label_map``), ``PNG decode`` (``load_sem_seg_gt``), ``bands`` (the two 15x15
  boundary bands and the band code), ``counter update`` (``BoundaryErrorCounter.update`` minus
  ``bands``: checks, indices, bincount, sum), ``other`` = process minus the three stage sums (loop,
  lookups, dtype checks);
* ``evaluate()`` (metrics from the counts + the JSON / CSV / npz files), once per round;
* the CPU time (``time.process_time``, all threads) of every ``process`` call: on a shared machine
  it is far less inflated than wall time, and on an idle one a call's wall time is at most its CPU
  time, so ``1000 / CPU ms`` is a lower bound of the idle-machine images/s.

--impl current|legacy|both: ``legacy`` runs the previous code path kept in bench/legacy_evaluator.py
(the same evaluator class with the old ``process`` stages), so before/after come from one run; the
counts of both are checked identical on every image.

    .venv/bin/python bench/bench_evaluator_e2e.py [--n 3] [--reps 5] [--impl both]
        [--device cpu|cuda]

Timing is wall clock around each call (``process`` returns host arrays, so GPU work is finished
inside the call).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_util as bu  # noqa: E402
import legacy_evaluator as legacy  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

from segalias_d2.evaluation import boundary_errors as be  # noqa: E402
from segalias_d2.evaluation import sem_seg_evaluation as sse  # noqa: E402

H, W, K = 1024, 2048, 19
CITYSCAPES = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
]


def smooth_fields(rng, n, cells=(12, 24)):
    """n smooth random H x W float32 fields (bilinear upsampling of coarse noise)."""
    return np.stack(
        [
            cv2.resize(
                rng.standard_normal(cells).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC
            )
            for _ in range(n)
        ]
    )


def make_image(rng):
    """(gt uint8 H x W, logits float32 torch (K, H, W))."""
    fields = smooth_fields(rng, K + 1)
    gt = fields.argmax(0).astype(
        np.uint8
    )  # K + 1 labels: label K becomes ignore (contiguous blobs)
    gt[gt == K] = 255
    gt[int(0.9 * H) :, :] = 255  # ego vehicle
    pred = np.roll(gt, 4, axis=1)
    wrong = smooth_fields(rng, K, (24, 48)).argmax(0).astype(np.uint8)
    sel = smooth_fields(rng, 1, (24, 48))[0] > 1.0  # ~15% of the image in wrong blobs
    pred = np.where(sel | (pred == 255), wrong, pred)
    logits = 0.5 * smooth_fields(rng, K, (32, 64)) + 0.05 * rng.standard_normal(
        (K, H, W), dtype=np.float32
    )
    np.put_along_axis(logits, pred[None].astype(np.int64), 3.0, axis=0)
    return gt, torch.from_numpy(logits)


def register(folder, n, rng, device):
    name = f"_bench_evaluator_e2e_{os.getpid()}"
    records, logits = [], []
    for i in range(n):
        gt, lg = make_image(rng)
        path = os.path.join(folder, f"img{i}_gtFine_labelTrainIds.png")
        Image.fromarray(gt).save(path)
        records.append(
            {
                "file_name": f"img{i}_leftImg8bit.png",
                "sem_seg_file_name": path,
                "height": H,
                "width": W,
            }
        )
        logits.append(lg.to(device))
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        stuff_classes=CITYSCAPES, ignore_label=255, evaluator_type="sem_seg"
    )
    return name, records, logits


def stage_fns(impl, ev, rec, lg, outdir):
    """Zero-argument callables of one image for one implementation."""
    mod = legacy if impl == "legacy" else sse
    counter_mod = legacy if impl == "legacy" else be
    inp, out = {"file_name": rec["file_name"]}, {"sem_seg": lg}
    pred = mod.prediction_to_label_map(out, K)
    gt = mod.load_sem_seg_gt(rec["sem_seg_file_name"])
    scratch = be.BoundaryErrorCounter(K)

    def bands():
        code = counter_mod.boundary_band(pred, 15).view(np.uint8) << 1
        code |= counter_mod.boundary_band(gt, 15).view(np.uint8)

    def update():
        if impl == "legacy":
            legacy.counter_update(scratch, pred, gt)
        else:
            scratch.update(pred, gt)

    def process():
        t = time.process_time()
        ev.process([inp], [out])
        CPU_MS[impl].append(1000 * (time.process_time() - t))

    return {
        "process": process,
        "argmax": lambda: mod.prediction_to_label_map(out, K),
        "PNG decode": lambda: mod.load_sem_seg_gt(rec["sem_seg_file_name"]),
        "bands": bands,
        "update": update,
    }


CPU_MS = {
    "legacy": [],
    "current": [],
}  # CPU time (all threads of this process) of every process() call


def build_evaluator(impl, name, outdir):
    cls = (
        legacy.LegacyBoundaryErrorSemSegEvaluator
        if impl == "legacy"
        else sse.BoundaryErrorSemSegEvaluator
    )
    return cls(name, distributed=False, output_dir=os.path.join(outdir, impl))


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--n", type=int, default=3, help="distinct images (each holds 160 MB of logits)"
    )
    ap.add_argument("--reps", type=int, default=5, help="rounds over the n images")
    ap.add_argument("--impl", choices=["current", "legacy", "both"], default="both")
    ap.add_argument(
        "--device",
        default="cpu",
        help="where the logits live (cuda: argmax on the GPU, as in a "
        "GPU evaluation loop; the rest of process() is CPU code)",
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    impls = ["legacy", "current"] if args.impl == "both" else [args.impl]
    cpu = torch.device("cpu")
    device = bu.pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        name, records, logits = register(tmp, args.n, np.random.default_rng(0), device)
        png_kb = statistics.mean(os.path.getsize(r["sem_seg_file_name"]) for r in records) / 1024
        print(
            f"torch {torch.__version__}, {bu.describe(cpu)}, cv2 {cv2.__version__} "
            f"({cv2.getNumThreads()} threads), "
            f"numpy {np.__version__}; {args.n} images {H}x{W}, {K} classes, logits float32 on "
            f"{bu.describe(device)}, GT PNG "
            f"{png_kb:.0f} KiB on average (data made in {time.perf_counter() - t0:.1f} s)"
        )
        evs = {i: build_evaluator(i, name, tmp) for i in impls}
        fns = {}
        for impl in impls:
            for j, (rec, lg) in enumerate(zip(records, logits)):
                for stage, f in stage_fns(impl, evs[impl], rec, lg, tmp).items():
                    fns[(impl, stage, j)] = f
        load0 = bu.load_average()
        # warm-up round, then reps rounds; one evaluator per impl accumulates warm-up + reps rounds
        times = bu.time_interleaved(fns, args.reps, cpu)
        ev_times = {i: [] for i in impls}
        results = {}
        for _ in range(args.reps):
            for impl in impls:
                t = time.perf_counter()
                results[impl] = evs[impl].evaluate()
                ev_times[impl].append(1000 * (time.perf_counter() - t))
        load1 = bu.load_average()
        DatasetCatalog.remove(name)

    def med(impl, stage):  # median over rounds of the per-image mean over the n images
        per_round = [
            statistics.mean(times[(impl, stage, j)][r] for j in range(args.n))
            for r in range(args.reps)
        ]
        return statistics.median(per_round), min(per_round)

    print(
        f"\n### BoundaryErrorSemSegEvaluator end to end, {H}x{W}, {K} classes, {args.n} images x "
        f"{args.reps} interleaved rounds (load average {load0:.2f} at start, {load1:.2f} at end)\n"
    )
    print(
        "| stage | "
        + " | ".join(f"{i} ms / image (median, min)" for i in impls)
        + (" | legacy / current |" if len(impls) == 2 else " |")
    )
    print("|" + "---|" * (1 + len(impls) + (len(impls) == 2)))
    rows = {}
    for impl in impls:
        m = {s: med(impl, s) for s in ("process", "argmax", "PNG decode", "bands", "update")}
        counter = (m["update"][0] - m["bands"][0], m["update"][1] - m["bands"][1])
        other = tuple(
            m["process"][k] - m["argmax"][k] - m["PNG decode"][k] - m["update"][k] for k in (0, 1)
        )
        rows[impl] = {
            "argmax": m["argmax"],
            "PNG decode": m["PNG decode"],
            "bands (2 Laplacian + 15x15 dilation)": m["bands"],
            "counter update (checks, indices, bincount)": counter,
            "other (process - stages)": other,
            "process() total": m["process"],
            "evaluate()": (statistics.median(ev_times[impl]), min(ev_times[impl])),
        }
    for row in rows[impls[0]]:
        cells = [f"{rows[i][row][0]:.1f}, {rows[i][row][1]:.1f}" for i in impls]
        ratio = ""
        if len(impls) == 2:
            cur = rows["current"][row][0]
            ratio = f" | {rows['legacy'][row][0] / cur:.2f}x" if cur > 0.05 else " | -"
        print(f"| {row} | " + " | ".join(cells) + ratio + " |")
    ips = " | ".join(f"{1000 / rows[i]['process() total'][0]:.1f}" for i in impls)
    print(f"| images / s (process, median) | {ips}" + (" | |" if len(impls) == 2 else " |"))
    # CPU time is much less inflated than wall time when the cores are shared; on an idle machine a
    # call's wall time is at most its CPU time (no I/O wait: the PNGs are in the page cache), so
    # 1000 / CPU ms bounds the idle-machine rate from below
    cpu = {i: statistics.median(CPU_MS[i][args.n :]) for i in impls}  # without the warm-up round
    print(
        "| process() CPU time, ms / image (median) | "
        + " | ".join(f"{cpu[i]:.1f}" for i in impls)
        + (f" | {cpu['legacy'] / cpu['current']:.2f}x |" if len(impls) == 2 else " |")
    )
    print(
        "| images / s bound from CPU time (1000 / CPU ms) | "
        + " | ".join(f"{1000 / cpu[i]:.1f}" for i in impls)
        + (" | |" if len(impls) == 2 else " |")
    )
    if len(impls) == 2:
        same = np.array_equal(evs["legacy"]._counter.confusion, evs["current"]._counter.confusion)
        a, b = results["legacy"]["boundary_errors"], results["current"]["boundary_errors"]
        same_res = a.keys() == b.keys() and all(
            a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])) for k in a
        )
        print(
            f"\ncounts identical (legacy vs current, {evs['current']._counter.num_images} images "
            f"each): {same}; evaluate() results identical: {same_res}"
        )
    r = results[impls[-1]]["boundary_errors"]
    print(
        "metrics (sanity): "
        + ", ".join(f"{k}={r[k]:.2f}" for k in ("mIoU", "BIoU", "BAcc", "FErr", "MErr", "DErr"))
    )


if __name__ == "__main__":
    main()
