"""Scoring saved predictions (made by this project or anywhere else) as the in-training evaluators
score them.

Semantic segmentation (:func:`evaluate_semantic`): predicted label PNGs against GT label PNGs,
through the evaluators' streaming counters (:class:`~.boundary_errors.BoundaryErrorCounter`,
:class:`~.boundary_iou_metric.BoundaryIoUCounter`), optionally in worker processes (each scores a
chunk of images into its own counters, the parent merges the counts: memory is constant in the
number of images, and integer counts make the result independent of the split). The results are
keyed and valued as those of :class:`~.sem_seg_evaluation.BoundaryErrorSemSegEvaluator`
(``"boundary_errors"``) and :class:`~.sem_seg_evaluation.BoundaryIoUEvaluator` (``"boundary_iou"``),
in percent.

Instance segmentation (:func:`evaluate_instances`): a COCO-format results JSON (dataset category
ids, RLE masks, as Detectron2's ``coco_instances_results.json``) against a registered dataset (or a
COCO GT JSON registered on the fly, :func:`register_coco_ground_truth`), through the evaluators
themselves: :class:`~.coco_evaluation.COCOBoundaryEvaluator` (bbox / segm / Boundary AP) on exactly
the detections of the file, and :class:`~.instance_evaluation.InstanceBoundaryErrorEvaluator`
(boundary errors of the semantic projection) on the decoded masks. Every image of the dataset is
evaluated, as in training; an image without detections in the file counts as an image without
detections.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog
from PIL import Image

from ..data.lowlight import register_lowlight_dataset
from .boundary_errors import BoundaryErrorCounter
from .boundary_iou_metric import BoundaryIoUCounter
from .sem_seg_evaluation import load_sem_seg_gt

__all__ = [
    "PredictionFileError",
    "index_label_pngs",
    "match_pairs",
    "semantic_pairs_from_dataset",
    "semantic_pairs_from_folders",
    "read_prediction_png",
    "evaluate_semantic",
    "register_coco_ground_truth",
    "load_coco_results",
    "evaluate_instances",
]


class PredictionFileError(ValueError):
    """A prediction or ground-truth file is missing, unmatched or unusable (the message names
    it)."""


# ----------------------------------------------------------------------------------------- semantic
def index_label_pngs(folder: str, suffix: str = "", what: str = "prediction") -> Dict[str, str]:
    """``{key: path}`` of the PNGs under ``folder`` (recursive); key = file stem without ``suffix``.

    With a ``suffix``, only PNGs whose stem ends with it are taken (e.g. ``_gtFine_labelTrainIds``).
    """
    if not os.path.isdir(folder):
        raise PredictionFileError(f"{what} folder not found: {folder}")
    out = {}
    for root, _, files in os.walk(folder):
        for fn in sorted(files):
            stem, ext = os.path.splitext(fn)
            if ext.lower() != ".png" or (suffix and not stem.endswith(suffix)):
                continue
            key = stem[: len(stem) - len(suffix)] if suffix else stem
            path = os.path.join(root, fn)
            if key in out:
                raise PredictionFileError(
                    f"two {what} files have the name '{key}': {out[key]} and {path}"
                )
            out[key] = path
    if not out:
        raise PredictionFileError(
            f"no {what} PNGs{f' ending in {suffix!r}' if suffix else ''} under {folder}"
        )
    return out


def match_pairs(
    preds: Dict[str, str], gts: Dict[str, str], pred_where: str, gt_where: str
) -> List[Tuple[str, str, str]]:
    """``[(key, prediction, ground truth)]`` in GT order; any unmatched name on either side is an
    error."""
    missing = [k for k in gts if k not in preds]
    extra = [k for k in preds if k not in gts]
    if missing or extra:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} ground-truth image(s) of {gt_where} have no prediction in "
                f"{pred_where}, e.g. {', '.join(f'{k}.png (for {gts[k]})' for k in missing[:5])}"
            )
        if extra:
            parts.append(
                f"{len(extra)} prediction file(s) match no ground truth of {gt_where}: "
                + ", ".join(preds[k] for k in extra[:5])
            )
        raise PredictionFileError(
            "; ".join(parts) + " (names are matched by file stem; see --pred-suffix / --gt-suffix)"
        )
    return [(k, preds[k], gts[k]) for k in gts]


def semantic_pairs_from_dataset(dataset_name: str, pred_dir: str, pred_suffix: str = ""):
    """Pairs for a registered semantic dataset: prediction ``<stem of the record's
    file_name>.png``."""

    gts = {}
    for rec in DatasetCatalog.get(dataset_name):
        if "sem_seg_file_name" not in rec:
            raise PredictionFileError(
                f"dataset '{dataset_name}': record {rec.get('file_name')} has no sem_seg_file_name"
            )
        gts[os.path.splitext(os.path.basename(rec["file_name"]))[0]] = rec["sem_seg_file_name"]
    return match_pairs(
        index_label_pngs(pred_dir, pred_suffix), gts, pred_dir, f"dataset '{dataset_name}'"
    )


def semantic_pairs_from_folders(
    pred_dir: str, gt_dir: str, pred_suffix: str = "", gt_suffix: str = ""
):
    return match_pairs(
        index_label_pngs(pred_dir, pred_suffix),
        index_label_pngs(gt_dir, gt_suffix, "ground-truth"),
        pred_dir,
        gt_dir,
    )


def read_prediction_png(path: str, num_classes: int) -> np.ndarray:
    """A predicted label PNG, checked: one channel, integer labels in ``[0, num_classes)``."""
    if not os.path.isfile(path):
        raise PredictionFileError(f"prediction file not found: {path}")
    try:
        with Image.open(path) as im:
            label = np.asarray(im)
    except OSError as e:
        raise PredictionFileError(f"cannot read prediction {path}: {e}") from e
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise PredictionFileError(
            f"prediction {path}: expected a single-channel integer label PNG, got "
            f"shape {label.shape} dtype {label.dtype} (colour-coded PNGs are not label maps)"
        )
    bad = (label < 0) | (label >= num_classes)
    if bad.any():
        raise PredictionFileError(
            f"prediction {path} has labels {np.unique(label[bad])[:10].tolist()} outside the "
            f"{num_classes} classes [0, {num_classes}) (an unlabelled/ignore value is not a "
            "prediction)"
        )
    return label


def _counters(settings):
    k, ignore, band, ratio = settings
    return BoundaryErrorCounter(k, ignore, band), BoundaryIoUCounter(k, ignore, ratio)


def _score_chunk(task):
    """Worker: one chunk of ``(key, pred, gt)`` into fresh counters; returns their states."""
    pairs, settings = task
    errors, biou = _counters(settings)
    for _, pred_path, gt_path in pairs:
        pred = read_prediction_png(pred_path, settings[0])
        try:
            gt = load_sem_seg_gt(gt_path)
        except (OSError, ValueError) as e:
            raise PredictionFileError(
                f"cannot read ground truth {gt_path} (for {pred_path}): {e}"
            ) from e
        if pred.shape != gt.shape:
            raise PredictionFileError(
                f"prediction {pred_path} is {pred.shape[1]}x{pred.shape[0]} (WxH) but its ground "
                f"truth {gt_path} is {gt.shape[1]}x{gt.shape[0]}"
            )
        name = f"{pred_path} (ground truth {gt_path})"
        errors.update(pred, gt, name=name)
        biou.update(pred, gt, name=name)
    return errors.state_dict(), biou.state_dict(), len(pairs)


def evaluate_semantic(
    pairs: Sequence[Tuple[str, str, str]],
    class_names: Sequence[str],
    ignore_label: int = 255,
    band_width: int = 15,
    dilation_ratio: float = 0.02,
    workers: int = 1,
    progress: Optional[Callable[[int], None]] = None,
) -> Tuple["OrderedDict[str, dict]", int]:
    """``({"boundary_errors": {...}, "boundary_iou": {...}}, number of images)`` of the pairs, in
    percent, as the evaluators compute them.

    ``workers`` > 1 scores chunks in that many processes; ``progress(n)`` is called with each
    finished count.
    """
    settings = (len(class_names), int(ignore_label), int(band_width), float(dilation_ratio))
    errors, biou = _counters(settings)  # also checks the settings before any work
    size = max(1, min(16, math.ceil(len(pairs) / max(1, workers * 4))))
    tasks = [(list(pairs[i : i + size]), settings) for i in range(0, len(pairs), size)]
    if workers > 1 and len(tasks) > 1:
        # fork where the platform has it (no re-import per worker); _score_chunk is importable for
        # the others
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
        with ctx.Pool(min(workers, len(tasks))) as pool:
            parts = pool.imap_unordered(_score_chunk, tasks)
            _merge(parts, errors, biou, progress)
    else:
        _merge(map(_score_chunk, tasks), errors, biou, progress)
    names = list(class_names)
    return OrderedDict(
        [
            (
                "boundary_errors",
                OrderedDict((k, float(v) * 100.0) for k, v in errors.metrics(names).items()),
            ),
            (
                "boundary_iou",
                OrderedDict((k, float(v) * 100.0) for k, v in biou.metrics(names).items()),
            ),
        ]
    ), errors.num_images


def _merge(parts, errors, biou, progress):
    for e_state, b_state, n in parts:
        errors.merge(BoundaryErrorCounter.from_state_dict(e_state))
        biou.merge(BoundaryIoUCounter.from_state_dict(b_state))
        if progress is not None:
            progress(n)


# ---------------------------------------------------------------------------------------- instances
def register_coco_ground_truth(gt_json: str, class_names: Optional[Sequence[str]] = None) -> str:
    """Register a COCO GT JSON as a dataset (name derived from its path; classes by name, default
    its categories)."""

    if not os.path.isfile(gt_json):
        raise PredictionFileError(f"ground-truth JSON not found: {gt_json}")
    key = f"{os.path.abspath(gt_json)}|{list(class_names) if class_names else ''}"
    name = "_saved_predictions_gt_" + hashlib.sha1(key.encode()).hexdigest()[:12]
    if name not in DatasetCatalog.list():
        # ground truth only: the images are never read (they need not be next to the JSON)
        register_lowlight_dataset(
            name,
            gt_json,
            os.path.dirname(os.path.abspath(gt_json)),
            thing_classes=class_names,
            image_checks="none",
        )
    return name


def load_coco_results(path: str) -> List[dict]:
    if not os.path.isfile(path):
        raise PredictionFileError(f"results file not found: {path}")
    with open(path) as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as e:
            raise PredictionFileError(f"results file {path} is not valid JSON: {e}") from e
    if not isinstance(results, list) or any(not isinstance(r, dict) for r in results):
        raise PredictionFileError(
            f"results file {path}: expected a COCO results list [{{image_id, category_id, score, "
            "bbox and/or segmentation}}, ...]"
        )
    for i, r in enumerate(results):
        missing = [k for k in ("image_id", "category_id", "score") if k not in r]
        if missing or ("bbox" not in r and "segmentation" not in r):
            raise PredictionFileError(
                f"results file {path}: entry {i} lacks {missing or ['bbox or segmentation']}"
            )
    return results


def evaluate_instances(
    results_path: str,
    dataset_name: str,
    *,
    score_thresh: float = 0.5,
    band_width: int = 15,
    dilation_ratio: float = 0.02,
) -> "OrderedDict[str, dict]":
    """bbox / segm / boundary_ap / boundary_errors of a COCO results JSON on a registered instance
    dataset."""

    from .saved_instances import evaluate_saved_instances  # noqa: PLC0415  (import cycle: it imports this module)

    return evaluate_saved_instances(
        load_coco_results(results_path),
        results_path,
        dataset_name,
        score_thresh=score_thresh,
        band_width=band_width,
        dilation_ratio=dilation_ratio,
    )
