#!/usr/bin/env python
"""Score saved predictions (from tools/predict.py, MMSegmentation, anywhere) with the boundary error
types.

Semantic segmentation: a folder of predicted label PNGs (one channel, class index per pixel, named
like the images: <image stem>.png) against a registered dataset or a folder of GT label PNGs:

    python tools/evaluate_predictions.py --predictions preds/labels \\
        --dataset cityscapes_demo_sem_seg_val
    python tools/evaluate_predictions.py --predictions preds/ --gt-dir gtFine/val \\
        --gt-suffix _gtFine_labelTrainIds --pred-suffix _leftImg8bit \\
        --classes-from segalias_cityscapes_sem_seg_val --workers 4 --output scores/

-> mIoU, BIoU, BAcc, FErr, MErr, DErr (overall and per class) and Boundary IoU.

Instance segmentation: a COCO results JSON (dataset category ids, RLE masks) against a registered
dataset or a COCO GT JSON -> box / mask / Boundary AP and the boundary errors of the semantic
projection:

    python tools/evaluate_predictions.py --predictions coco_instances_results.json \\
        --gt-json instances_val.json

The numbers equal those of the in-training evaluators on the same predictions. Band width, Boundary
IoU dilation ratio and the projection's score threshold default to --config-file's TEST.SEGALIAS (or
the config defaults). Writes evaluate_predictions.{json,csv,txt} to --output; exit code 2 on bad
input.
"""

import argparse
import contextlib
import difflib
import logging
import sys

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger

import segalias_d2  # noqa: F401  (registers the built-in datasets)
from segalias_d2.config import SegAliasSetupError, load_config
from segalias_d2.evaluation import saved_predictions as sp
from segalias_d2.evaluation.results_table import (
    format_report,
    instance_rows,
    semantic_rows,
    write_report,
)


def get_parser():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--predictions", required=True, help="folder of label PNGs (semantic) or COCO results .json"
    )
    p.add_argument(
        "--dataset", default=None, help="registered dataset: ground truth, classes, ignore label"
    )
    p.add_argument("--gt-dir", default=None, help="semantic: folder of GT label PNGs (recursive)")
    p.add_argument("--gt-json", default=None, help="instances: COCO ground-truth JSON")
    p.add_argument(
        "--gt-suffix",
        default="",
        help="semantic: GT files are <key><suffix>.png (others are skipped)",
    )
    p.add_argument(
        "--pred-suffix", default="", help="semantic: prediction files are <key><suffix>.png"
    )
    p.add_argument(
        "--classes", default=None, help="comma-separated class names (default: the dataset's)"
    )
    p.add_argument(
        "--classes-from",
        default=None,
        metavar="DATASET",
        help="take classes / ignore label from this dataset",
    )
    p.add_argument("--num-classes", type=int, default=None, help="semantic: classes named 0..K-1")
    p.add_argument(
        "--ignore-label",
        type=int,
        default=None,
        help="semantic GT ignore label (default: dataset's or 255)",
    )
    p.add_argument(
        "--config-file", default="", help="config whose TEST.SEGALIAS settings are the defaults"
    )
    p.add_argument(
        "--band-width", type=int, default=None, help="boundary band (odd, px; default 15 = +-7 px)"
    )
    p.add_argument(
        "--dilation-ratio",
        type=float,
        default=None,
        help="Boundary IoU / AP width (fraction of the diagonal)",
    )
    p.add_argument(
        "--score-thresh",
        type=float,
        default=None,
        help="instances: score threshold of the projection",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="semantic: processes scoring images in parallel"
    )
    p.add_argument("--output", default="", help="folder for evaluate_predictions.{json,csv,txt}")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def _registered(name, what):

    if name not in DatasetCatalog.list():
        close = difflib.get_close_matches(name, DatasetCatalog.list(), n=3, cutoff=0.5)
        raise SegAliasSetupError(
            f"{what}: unknown dataset '{name}'"
            + (f"; did you mean {', '.join(close)}?" if close else "")
        )
    return name


def _semantic(args, ev):

    meta_name = args.classes_from or args.dataset
    meta = (
        MetadataCatalog.get(_registered(meta_name, "--dataset/--classes-from"))
        if meta_name
        else None
    )
    if args.classes:
        classes = args.classes.split(",")
    elif args.num_classes:
        classes = [str(i) for i in range(args.num_classes)]
    else:
        classes = list(meta.get("stuff_classes", None) or []) if meta is not None else []
    if not classes:
        raise SegAliasSetupError(
            "semantic: name the classes (--classes, --num-classes, or a --dataset / --classes-from "
            "with stuff_classes)"
        )
    ignore = args.ignore_label
    if ignore is None:
        ignore = int(meta.get("ignore_label", 255)) if meta is not None else 255
    if args.gt_dir:
        pairs, gt = (
            sp.semantic_pairs_from_folders(
                args.predictions, args.gt_dir, args.pred_suffix, args.gt_suffix
            ),
            args.gt_dir,
        )
    elif args.dataset:
        pairs, gt = (
            sp.semantic_pairs_from_dataset(args.dataset, args.predictions, args.pred_suffix),
            f"dataset {args.dataset}",
        )
    else:
        raise SegAliasSetupError("semantic: give the ground truth (--dataset or --gt-dir)")
    bar = _bar(len(pairs), not args.no_progress)
    results, n = sp.evaluate_semantic(
        pairs,
        classes,
        ignore,
        ev["band_width"],
        ev["dilation_ratio"],
        args.workers,
        progress=bar.update if bar else None,
    )
    if bar:
        bar.close()
    info = {
        "kind": "semantic",
        "predictions": args.predictions,
        "ground_truth": gt,
        "num_images": n,
        "classes": classes,
        "settings": {
            "band_width": ev["band_width"],
            "ignore_label": ignore,
            "dilation_ratio": ev["dilation_ratio"],
        },
    }
    return results, semantic_rows(results, classes), info


def _instances(args, ev):

    classes = args.classes.split(",") if args.classes else None
    if args.gt_json:
        name, gt = sp.register_coco_ground_truth(args.gt_json, classes), args.gt_json
    elif args.dataset:
        name, gt = _registered(args.dataset, "--dataset"), f"dataset {args.dataset}"
    else:
        raise SegAliasSetupError("instances: give the ground truth (--dataset or --gt-json)")
    results = sp.evaluate_instances(
        args.predictions,
        name,
        score_thresh=ev["score_thresh"],
        band_width=ev["band_width"],
        dilation_ratio=ev["dilation_ratio"],
    )
    names = list(MetadataCatalog.get(name).thing_classes)
    rows = instance_rows(
        results, names + (["background"] if results.get("boundary_errors") else [])
    )
    info = {
        "kind": "instance",
        "predictions": args.predictions,
        "ground_truth": gt,
        "num_images": len(DatasetCatalog.get(name)),
        "classes": names,
        "settings": {
            "band_width": ev["band_width"],
            "dilation_ratio": ev["dilation_ratio"],
            "score_thresh": ev["score_thresh"],
        },
    }
    return results, rows, info


def _bar(total, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm  # noqa: PLC0415  (optional dependency)
    except ImportError:
        return None
    return tqdm(total=total, unit="img", dynamic_ncols=True)


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="segalias_d2")
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    try:
        t = load_config(args.config_file, args.opts).TEST.SEGALIAS
        ev = {
            "band_width": t.BOUNDARY_BAND_WIDTH if args.band_width is None else args.band_width,
            "dilation_ratio": t.BOUNDARY_IOU_DILATION_RATIO
            if args.dilation_ratio is None
            else args.dilation_ratio,
            "score_thresh": t.INSTANCE_SCORE_THRESH
            if args.score_thresh is None
            else args.score_thresh,
        }
        instance = args.predictions.lower().endswith(".json")
        with contextlib.redirect_stdout(
            sys.stderr
        ):  # pycocotools prints its tables: stdout keeps the report only
            results, rows, info = (_instances if instance else _semantic)(args, ev)
    except (SegAliasSetupError, ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"evaluate_predictions.py: error: {msg}", file=sys.stderr)
        return 2
    print(format_report(results, rows, info))
    if args.output:
        for path in write_report(results, rows, args.output, info).values():
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
