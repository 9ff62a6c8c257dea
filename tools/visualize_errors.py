#!/usr/bin/env python
"""Write PNG overlays of per-image boundary error maps (false responses / merging / displacement)
and, when the model is run, of its predictions (``<image>_predictions.png``).

Examples:
  # run a model
  python tools/visualize_errors.py --config-file cfg.yaml --dataset cityscapes_fine_sem_seg_val \\
      --output vis/ --images 0,5,frankfurt_000000_000294 MODEL.WEIGHTS model_final.pth
  # saved predictions: a folder of <basename>.png label maps (semantic) or
  # coco_instances_results.json
  python tools/visualize_errors.py --config-file cfg.yaml --dataset my_val --predictions preds/ \\
      --output vis/

Colours: red = false response only (predicted band), blue = merging only (GT band), yellow =
displacement (both bands), grey = interior error; white/black outlines = GT/predicted band. Each
<image>_errors.png has a panel on the right with this legend and the image's own mIoU, BIoU, BAcc,
FErr, MErr, DErr and error pixel counts (--no-legend: the bare overlay). Dark and RAW images are
shown display-ready (white balance, brightening, sRGB curve; --brightness).
"""

import argparse
import csv
import logging
import os

from detectron2.data import MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.utils.logger import setup_logger
from PIL import Image

from segalias_d2.engine.display import draw_predictions, record_display_image
from segalias_d2.evaluation.analysis import (
    DatasetKind,
    load_predictions,
    prediction_key,
    run_model,
    select_records,
    setup_cfg,
)
from segalias_d2.evaluation.error_maps import (
    CATEGORY_NAMES,
    PANEL_METRICS,
    annotate_error_map,
    compute_error_maps,
    image_error_metrics,
    overlay_error_maps,
)

logger = logging.getLogger("segalias_d2.visualize_errors")


def get_parser():
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument("--dataset", required=True, help="registered Detectron2 dataset name")
    parser.add_argument(
        "--predictions",
        default="",
        help="saved predictions (PNG folder or COCO results json); "
        "if empty the model of --config-file / MODEL.WEIGHTS is run",
    )
    parser.add_argument(
        "--output", default="", help="output folder (default: OUTPUT_DIR/error_maps)"
    )
    parser.add_argument(
        "--alpha",
        type=_opacity,
        default=0.6,
        help="opacity of the error colours blended over the image, in [0, 1] (default: 0.6)",
    )
    parser.add_argument(
        "--no-legend", action="store_true", help="write the bare overlay, without the legend panel"
    )
    parser.add_argument(
        "--brightness",
        type=_brightness,
        default="auto",
        help="display gain of the image under the errors: 'auto' (dark images brightened) or a "
        "number",
    )
    parser.add_argument(
        "--images",
        default="",
        help="comma-separated indices, file basenames or image ids, or 'all' (default: first 4)",
    )
    return parser


def _opacity(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _brightness(text):
    if text == "auto":
        return text
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a gain > 0, got {text}")
    return value


def _display(rec, kind, brightness):
    return record_display_image(rec, kind.meta.get("image_format", None) or "srgb", brightness)


def _save_prediction_overlay(rec, output, kind, out_dir, score_thresh, brightness):
    """``<image>_predictions.png``: the model's instances (above the score threshold) or labels."""

    drawn = draw_predictions(
        _display(rec, kind, brightness), output, MetadataCatalog.get(kind.name), score_thresh, 0
    )
    path = os.path.join(out_dir, f"{prediction_key(kind, rec)}_predictions.png")
    Image.fromarray(drawn).save(path)
    logger.info(f"wrote {path}")


def main(args):
    setup_logger(name="segalias_d2")
    cfg = setup_cfg(args.config_file, args.opts)
    ev = cfg.TEST.SEGALIAS
    out_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "error_maps")
    os.makedirs(out_dir, exist_ok=True)
    kind = DatasetKind(args.dataset, score_thresh=ev.INSTANCE_SCORE_THRESH)
    records = select_records(kind.records, [x for x in args.images.split(",") if x])
    logger.info(
        f"{len(records)} images of {args.dataset} ({kind.kind}), band width "
        f"{ev.BOUNDARY_BAND_WIDTH} px -> {out_dir}"
    )

    if args.predictions:
        saved = load_predictions(args.predictions, kind)

        def pairs():
            for rec in records:
                key = prediction_key(kind, rec)
                if key not in saved:
                    raise KeyError(
                        f"--predictions {args.predictions}: no prediction for {key!r} "
                        f"({rec.get('file_name')})"
                    )
                yield rec, saved[key]
    else:

        def pairs():
            for rec, _, out in run_model(cfg, records):
                _save_prediction_overlay(
                    rec, out, kind, out_dir, ev.INSTANCE_SCORE_THRESH, args.brightness
                )
                yield rec, kind.pred_map_from_output(rec, out)

    rows = []
    written = []
    for rec, pred in pairs():
        gt = kind.gt_map(rec)
        name = prediction_key(kind, rec)
        if pred.shape != gt.shape:
            raise ValueError(
                f"prediction and ground-truth shapes differ for {rec.get('file_name')}: "
                f"{pred.shape} vs {gt.shape}"
            )
        maps = compute_error_maps(pred, gt, ev.BOUNDARY_BAND_WIDTH, kind.ignore_label)
        img = _display(rec, kind, args.brightness)
        if img.shape[:2] != gt.shape:
            raise ValueError(
                f"image {rec['file_name']} has size {img.shape[:2]} but its ground truth {gt.shape}"
            )
        ov = overlay_error_maps(img, maps, alpha=args.alpha)
        numbers = image_error_metrics(
            pred, gt, kind.num_classes, ev.BOUNDARY_BAND_WIDTH, kind.ignore_label
        )
        if not args.no_legend:
            ov = annotate_error_map(
                ov,
                maps,
                numbers,
                title=os.path.basename(rec["file_name"]),
                band_width=ev.BOUNDARY_BAND_WIDTH,
            )
        path = os.path.join(out_dir, f"{name}_errors.png")
        Image.fromarray(ov).save(path)
        written.append(path)
        rows.append(
            [name]
            + [
                int(maps[k].sum())
                for k in ("false_response", "merging", "displacement", "interior", "wrong")
            ]
            + [int((gt != kind.ignore_label).sum())]
            + [f"{numbers[k]:.4f}" for k in PANEL_METRICS]
        )
        logger.info(f"wrote {path}")
    with open(os.path.join(out_dir, "error_pixels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "# band_width",
                ev.BOUNDARY_BAND_WIDTH,
                "colours",
                "; ".join(f"{k}={v}" for k, v in CATEGORY_NAMES.items()),
            ]
        )
        w.writerow(
            [
                "image",
                "false_response_px",
                "merging_px",
                "displacement_px",
                "interior_px",
                "wrong_px",
                "valid_px",
            ]
            + [f"{k}_percent" for k in PANEL_METRICS]
        )
        w.writerows(rows)
    return written


if __name__ == "__main__":
    args = get_parser().parse_args()
    main(args)
