#!/usr/bin/env python
"""Relate a RECONSTRUCTED aliasing score of backbone features to per-image boundary error types.

The aliasing score is a re-derivation (seg_aliasing_method.md §4), NOT the paper's code: the share
of power-spectrum energy above the Nyquist frequency (0.25 cycles/px, L-inf box) of the stride-2
subsampling that follows, measured on the inputs of res3/res4/res5 (forward pre-hooks).

Example:
  python tools/analyze_aliasing.py --config-file cfg.yaml --dataset cityscapes_fine_sem_seg_val \
      --output aliasing/ --max-images 50 MODEL.WEIGHTS model_final.pth

Writes aliasing_per_image.csv (image, stage, AS, AS in the GT boundary band / interior, mIoU,
BIoU, FErr, MErr, DErr of that image), aliasing_summary.json (Pearson correlations) and PNG plots.
"""

import argparse
import csv
import logging
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from detectron2.engine import default_argument_parser  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from segalias_d2.evaluation.aliasing import (  # noqa: E402
    RECONSTRUCTION_NOTE,
    StageInputRecorder,
    aliasing_energy_maps,
    aliasing_score,
    regional_aliasing_score,
)
from segalias_d2.evaluation.analysis import (  # noqa: E402
    DatasetKind,
    build_model_from_cfg,
    prediction_key,
    run_model,
    select_records,
    setup_cfg,
)
from segalias_d2.evaluation.boundary_errors import BoundaryErrorCounter, boundary_band  # noqa: E402
from segalias_d2.evaluation.evaluator_utils import dump_json  # noqa: E402

logger = logging.getLogger("segalias_d2.analyze_aliasing")
ERROR_KEYS = ["mIoU", "BIoU", "FErr", "MErr", "DErr"]


def get_parser():
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument("--dataset", required=True, help="registered Detectron2 dataset name")
    parser.add_argument(
        "--output", default="", help="output folder (default: OUTPUT_DIR/aliasing_analysis)"
    )
    parser.add_argument(
        "--images",
        default="all",
        help="comma-separated indices, file basenames or image ids, or 'all'",
    )
    parser.add_argument(
        "--max-images", type=int, default=0, help="cap on the number of images (0 = no cap)"
    )
    parser.add_argument(
        "--stages",
        default="res3,res4,res5",
        help="comma-separated stages whose inputs are analysed",
    )
    parser.add_argument(
        "--nyquist",
        type=_nyquist,
        default=0.25,
        help="Nyquist frequency of the aliasing score in cycles/px of the feature grid, in (0, "
        "0.5] (default: 0.25 = the stride-2 subsampling that follows)",
    )
    return parser


def _nyquist(text):
    value = float(text)
    if not 0.0 < value <= 0.5:
        raise argparse.ArgumentTypeError(f"must be in (0, 0.5] cycles/px, got {text}")
    return value


def _pearson(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def main(args):
    setup_logger(name="segalias_d2")
    cfg = setup_cfg(args.config_file, args.opts)
    ev = cfg.TEST.SEGALIAS
    out_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "aliasing_analysis")
    os.makedirs(out_dir, exist_ok=True)
    kind = DatasetKind(args.dataset, score_thresh=ev.INSTANCE_SCORE_THRESH)
    records = select_records(kind.records, [x for x in args.images.split(",") if x])
    if args.max_images > 0:
        records = records[: args.max_images]
    args.stages = [x for x in args.stages.split(",") if x]
    nyq = args.nyquist
    logger.info(
        f"{RECONSTRUCTION_NOTE}; Nyquist {nyq} cycles/px; {len(records)} images of {args.dataset}"
    )

    model = build_model_from_cfg(cfg)
    rows = []
    with StageInputRecorder(model, stages=args.stages) as rec:
        for i, (record, inp, out) in enumerate(run_model(cfg, records, model=model)):
            pred = kind.pred_map_from_output(record, out)
            gt = kind.gt_map(record)
            counter = BoundaryErrorCounter(
                kind.num_classes, kind.ignore_label, ev.BOUNDARY_BAND_WIDTH
            )
            counter.update(pred, gt, name=str(record.get("file_name")))
            errs = {k: 100.0 * v for k, v in counter.metrics().items() if k in ERROR_KEYS}
            band = boundary_band(gt, ev.BOUNDARY_BAND_WIDTH) & (gt != kind.ignore_label)
            interior = ~boundary_band(gt, ev.BOUNDARY_BAND_WIDTH) & (gt != kind.ignore_label)
            h_in, w_in = inp["image"].shape[-2:]
            for stage in args.stages:
                feat = rec.features[stage][-1][0]  # (C, H, W), batch size 1
                s = rec.input_strides[stage] or 1
                feat = feat[:, : math.ceil(h_in / s), : math.ceil(w_in / s)]  # drop batch padding
                hi, tot = aliasing_energy_maps(feat, nyq)
                rows.append(
                    {
                        "image": prediction_key(kind, record),
                        "stage": stage,
                        "input_stride": s,
                        "AS": aliasing_score(feat, nyq),
                        "AS_gt_band": regional_aliasing_score(hi, tot, band),
                        "AS_interior": regional_aliasing_score(hi, tot, interior),
                        **errs,
                    }
                )
            rec.clear()
            logger.info(f"[{i + 1}/{len(records)}] {record.get('file_name')}")

    csv_path = os.path.join(out_dir, "aliasing_per_image.csv")
    fields = ["image", "stage", "input_stride", "AS", "AS_gt_band", "AS_interior"] + ERROR_KEYS
    with open(csv_path, "w", newline="") as f:
        f.write(f"# {RECONSTRUCTION_NOTE}; nyquist={nyq}; band_width={ev.BOUNDARY_BAND_WIDTH}\n")
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})

    summary = {
        "note": RECONSTRUCTION_NOTE,
        "nyquist": nyq,
        "band_width": ev.BOUNDARY_BAND_WIDTH,
        "num_images": len(records),
        "stages": {},
    }
    fig, axes = plt.subplots(
        len(args.stages), 3, figsize=(12, 3.2 * len(args.stages)), squeeze=False
    )
    for si, stage in enumerate(args.stages):
        sr = [r for r in rows if r["stage"] == stage]
        a = [r["AS"] for r in sr]
        summary["stages"][stage] = {
            "mean_AS": float(np.nanmean(a)) if sr else float("nan"),
            "mean_AS_gt_band": float(np.nanmean([r["AS_gt_band"] for r in sr]))
            if sr
            else float("nan"),
            "mean_AS_interior": float(np.nanmean([r["AS_interior"] for r in sr]))
            if sr
            else float("nan"),
            **{
                f"pearson_AS_{k}": _pearson(a, [r[k] for r in sr]) for k in ("FErr", "MErr", "DErr")
            },
        }
        for ki, k in enumerate(("FErr", "MErr", "DErr")):
            ax = axes[si, ki]
            ax.scatter(a, [r[k] for r in sr], s=12)
            ax.set_xlabel(f"aliasing score of {stage} input (reconstruction)")
            ax.set_ylabel(f"{k} (%)")
            ax.set_title(f"{stage}: r = {summary['stages'][stage][f'pearson_AS_{k}']:.2f}")
    fig.suptitle("Aliasing score (RECONSTRUCTION, not the paper's code) vs boundary error types")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "aliasing_vs_errors.png"), dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(len(args.stages))
    ax.bar(
        x - 0.2,
        [summary["stages"][s]["mean_AS_gt_band"] for s in args.stages],
        0.4,
        label="GT boundary band",
    )
    ax.bar(
        x + 0.2,
        [summary["stages"][s]["mean_AS_interior"] for s in args.stages],
        0.4,
        label="interior",
    )
    ax.set_xticks(x)
    ax.set_xticklabels(args.stages)
    ax.set_ylabel("aliasing score (reconstruction)")
    ax.set_title("Boundary band vs interior (reconstruction)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "aliasing_band_vs_interior.png"), dpi=100)
    plt.close(fig)

    with open(os.path.join(out_dir, "aliasing_summary.json"), "w") as f:
        dump_json(summary, f, indent=2)  # correlations that cannot be computed are null
    logger.info(f"wrote {csv_path} and plots to {out_dir}")
    return summary


if __name__ == "__main__":
    args = get_parser().parse_args()
    main(args)
