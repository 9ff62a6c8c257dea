#!/usr/bin/env python
"""Low-light data pipeline throughput vs. one CPU training step of R50-FPN Mask R-CNN.

    python bench/bench_data_pipeline.py [--repeats N] [--train-iters N] [--skip-train]

Measures, at a 1200x800 output (the LIS image size):
  1. camera RAW decode + pack (pinned Sony ARW, 18 MP, rawpy) -> raw-RGB, resized to 1200x800;
  2. the same through the decode cache: in-memory LRU hit and on-disk .npy hit;
  3. reading a 16-bit raw-RGB PNG (LIS RAW-dark format);
  4. low-light synthesis (unprocess + PGRU + demosaic) of a 1200x800 sRGB image, raw-RGB and packed;
  5. the full LowLightDatasetMapper on a 1200x800 16-bit PNG record with synthesis off/on;
  6. one training iteration (forward + backward + SGD step, batch 1, 1200x800 input, random init,
     BN instead of FrozenBN because of the random init)
     of Detectron2's R50-FPN Mask R-CNN on the same CPU.
Throughputs are single-process (one DataLoader worker); the DataLoader multiplies them by
NUM_WORKERS. Numbers are medians over --repeats runs after one warm-up.

Device: the data stages are NumPy/OpenCV/rawpy code and always run on the CPU. The training step
runs on --device (default: CUDA when present); on CUDA it is timed with CUDA events and
synchronisation (bench/bench_util.py), also under fp16 and bf16 autocast, and its peak
max_memory_allocated is printed.
--train-only skips the data stages (e.g. on a GPU machine without the pinned RAW file).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "datasets"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_util as bu  # noqa: E402


def timeit(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def sony_arw():
    from pinned_sources import SONY_ARW, fetch_member  # datasets/pinned_sources.py

    return str(fetch_member(SONY_ARW))  # the pinned real ARW (libraw-cffi 0.19.0 sdist), cached


def train_step_time(iters, device_name="cpu", amp="fp32"):
    """Median seconds of one training iteration (and the peak CUDA tensor memory in MiB, None on
    CPU)."""
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    cfg = get_cfg()
    m = cfg.MODEL
    device = bu.pick_device(device_name)
    m.DEVICE = str(device)
    m.MASK_ON = True
    m.BACKBONE.NAME = "build_resnet_fpn_backbone"
    m.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    m.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    m.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
    m.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    m.RPN.PRE_NMS_TOPK_TRAIN, m.RPN.POST_NMS_TOPK_TRAIN = 2000, 1000
    m.ROI_HEADS.NAME = "StandardROIHeads"
    m.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    m.ROI_HEADS.NUM_CLASSES = 8
    m.ROI_BOX_HEAD.NAME, m.ROI_BOX_HEAD.NUM_FC, m.ROI_BOX_HEAD.POOLER_RESOLUTION = (
        "FastRCNNConvFCHead",
        2,
        7,
    )
    m.ROI_MASK_HEAD.NAME, m.ROI_MASK_HEAD.NUM_CONV, m.ROI_MASK_HEAD.POOLER_RESOLUTION = (
        "MaskRCNNConvUpsampleHead",
        4,
        14,
    )
    # random init (no weight download): FrozenBN = identity would let activations explode, so the
    # benchmark uses trainable BN (same convolutions; slightly more work than FrozenBN)
    m.RESNETS.NORM = "BN"
    m.PIXEL_STD = [57.375, 57.120, 58.395]
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    h, w = 800, 1200
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(
        torch.tensor([[100.0, 100.0, 400.0, 500.0], [600.0, 200.0, 1000.0, 700.0]])
    )
    inst.gt_classes = torch.tensor([1, 5])
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 100:500, 100:400] = True
    masks[1, 200:700, 600:1000] = True
    inst.gt_masks = BitMasks(masks)
    batch = [{"image": torch.rand(3, h, w) * 255, "instances": inst, "height": h, "width": w}]

    def step():
        with EventStorage():
            with bu.amp_context(device, amp):
                losses = model(batch)
                loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()

    if device.type == "cpu":
        return timeit(step, iters), None
    step()  # warm-up (cuDNN autotuning, cuFFT plans)
    t = statistics.median(bu.time_call(step, device) for _ in range(iters)) / 1000.0
    return t, bu.cuda_peak_mib(step, device)


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--train-iters", type=int, default=3)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument(
        "--train-only", action="store_true", help="only the training step (no data stages)"
    )
    p.add_argument(
        "--device", default="auto", help="device of the training step (auto: CUDA when present)"
    )
    p.add_argument(
        "--amp", nargs="+", choices=["fp32", "fp16", "bf16"], help="training-step precisions"
    )
    args = p.parse_args()
    if args.train_only:
        train_rows(args)
        return

    import cv2
    import torch

    from segalias_d2.data.dataset_mapper import LowLightDatasetMapper
    from segalias_d2.data.decode_cache import DecodeCache
    from segalias_d2.data.raw_io import read_camera_raw, read_lowlight_image
    from segalias_d2.data.synthesis import synthesize_lowlight

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}",
        flush=True,
    )
    rows = []
    arw = sony_arw()

    def raw_1200():
        rgb = read_camera_raw(arw, "raw_rgb")
        return cv2.resize(rgb, (1200, 800), interpolation=cv2.INTER_LINEAR)

    rows.append(
        (
            "RAW decode+pack (Sony ARW 5184x3464 -> raw-RGB 1200x800), no cache",
            timeit(raw_1200, args.repeats),
        )
    )
    mem = DecodeCache(max_items=4)
    opts = {"image_format": "raw", "size": (1200, 800)}
    rows.append(
        (
            "  same, decode cache: in-memory hit",
            timeit(lambda: mem.get(arw, opts, raw_1200), args.repeats),
        )
    )
    tmp = tempfile.mkdtemp(prefix="segalias_bench_")
    disk = DecodeCache(max_items=0, cache_dir=tmp)
    rows.append(
        (
            "  same, decode cache: on-disk .npy hit (page-cached)",
            timeit(lambda: disk.get(arw, opts, raw_1200), args.repeats),
        )
    )

    rng = np.random.default_rng(0)
    png16 = os.path.join(tmp, "raw_dark.png")
    raw16 = (raw_1200() * 65535).astype(np.uint16)
    cv2.imwrite(png16, raw16[:, :, ::-1])
    rows.append(
        (
            "16-bit raw-RGB PNG read (1200x800)",
            timeit(lambda: read_lowlight_image(png16, "raw_rgb"), args.repeats),
        )
    )

    srgb = (np.clip(raw_1200() * 4, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8)
    rows.append(
        (
            "synthesis sRGB -> noisy raw-RGB 1200x800 (+clean)",
            timeit(lambda: synthesize_lowlight(srgb, rng), args.repeats),
        )
    )
    rows.append(
        (
            "synthesis sRGB -> noisy packed 600x400x4 (+clean)",
            timeit(lambda: synthesize_lowlight(srgb, rng, output="packed"), args.repeats),
        )
    )

    from detectron2.config import get_cfg

    from segalias_d2.config import add_segalias_config

    cfg = get_cfg()
    add_segalias_config(cfg)
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (800,), 1333
    record = {
        "file_name": png16,
        "image_id": 0,
        "height": 800,
        "width": 1200,
        "image_format": "raw_rgb",
        "annotations": [
            {
                "bbox": [100, 100, 300, 300],
                "bbox_mode": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentation": [[100, 100, 400, 100, 400, 400, 100, 400]],
            }
        ],
    }
    for k in ("bbox_mode",):
        from detectron2.structures import BoxMode

        record["annotations"][0][k] = BoxMode.XYWH_ABS
    mapper = LowLightDatasetMapper(cfg, True)
    rows.append(
        (
            "LowLightDatasetMapper, 16-bit PNG record, 1200x800",
            timeit(lambda: mapper(record), args.repeats),
        )
    )
    srgb_png = os.path.join(tmp, "srgb.png")
    cv2.imwrite(srgb_png, srgb[:, :, ::-1])
    cfg.INPUT.SEGALIAS.SYNTHESIS.ENABLED = True
    cfg.INPUT.SEGALIAS.SYNTHESIS.RETURN_CLEAN = True
    mapper_syn = LowLightDatasetMapper(cfg, True)
    rec_syn = dict(record, file_name=srgb_png, image_format="srgb")
    rows.append(
        (
            "LowLightDatasetMapper, sRGB record + synthesis (+clean)",
            timeit(lambda: mapper_syn(rec_syn), args.repeats),
        )
    )

    print("\n| stage | s / image | images / s |\n|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.4f} | {1.0 / t:.3g} |")
    if not args.skip_train:
        train_rows(args)


def train_rows(args):
    import torch

    device = bu.pick_device(args.device)
    print(f"\ntiming the R50-FPN Mask R-CNN training step on {bu.describe(device)} ...", flush=True)
    print("\n| stage | s / image | images / s | peak CUDA MiB |\n|---|---|---|---|")
    for amp in args.amp or bu.default_amps(device):
        t, peak = train_step_time(args.train_iters, str(device), amp)
        where = "CPU" if device.type == "cpu" else torch.cuda.get_device_name(device)
        name = f"R50-FPN Mask R-CNN train step, batch 1, 1200x800 ({where}, {amp})"
        print(
            f"| {name} | {t:.4f} | {1.0 / t:.3g} | {'-' if peak is None else f'{peak:.0f}'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
