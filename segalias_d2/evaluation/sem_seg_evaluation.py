"""Detectron2 evaluators for semantic segmentation boundary errors.

* :class:`BoundaryErrorSemSegEvaluator` -- Seg-Aliasing's ±7 px band family (mIoU, BIoU, BAcc,
  FErr, MErr, DErr, ...), task key ``"boundary_errors"`` (as for instances).
* :class:`BoundaryIoUEvaluator` -- Cheng et al.'s diagonal-relative Boundary IoU, task key
  ``"boundary_iou"``. The two families are never mixed.

Both keep only per-class counters (memory constant in the number of images) and gather them across
processes with ``detectron2.utils.comm.all_gather``. Values are reported in percent, like
Detectron2's ``SemSegEvaluator``.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import OrderedDict
from typing import Optional

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.file_io import PathManager

from ..data.label_io import read_label_map
from .boundary_errors import BoundaryErrorCounter
from .boundary_iou_metric import BoundaryIoUCounter
from .evaluator_utils import dump_json, gather_counter
from .label_argmax import argmax_uint8_cpu

__all__ = [
    "BoundaryErrorSemSegEvaluator",
    "BoundaryIoUEvaluator",
    "load_sem_seg_gt",
    "prediction_to_label_map",
    "raw_labels_from_reduced",
]

logger = logging.getLogger(__name__)


def load_sem_seg_gt(path: str) -> np.ndarray:
    """Read a GT label PNG as the class indices it stores (integer H x W array, dtype kept), exactly
    as the dataset mapper does (:func:`segalias_d2.data.label_io.read_label_map`)."""
    return read_label_map(path)


def prediction_to_label_map(
    output, num_classes: Optional[int] = None, name: str = "image"
) -> np.ndarray:
    """``outputs["sem_seg"].argmax(0)`` as a numpy label map (uint8 when it fits)."""
    sem_seg = output["sem_seg"] if isinstance(output, dict) else output
    if not isinstance(sem_seg, torch.Tensor):
        sem_seg = torch.as_tensor(np.asarray(sem_seg))
    if sem_seg.dim() == 3:
        if num_classes is not None and sem_seg.shape[0] != num_classes:
            raise ValueError(
                f"outputs['sem_seg'] of {name} has {sem_seg.shape[0]} channels, "
                f"expected {num_classes} (len(stuff_classes))"
            )
        if num_classes is not None and num_classes <= 255:
            # CPU float logits: one cache-blocked pass, uint8 out, finiteness checked on the way
            # (label_argmax)
            fast = argmax_uint8_cpu(sem_seg)
            if fast is not None:
                return fast
        if sem_seg.is_floating_point() and not bool(torch.isfinite(sem_seg).all()):
            # argmax of a NaN column is 0: the pixels would silently be scored as class 0
            bad = int((~torch.isfinite(sem_seg)).any(dim=0).sum())
            raise FloatingPointError(
                f"outputs['sem_seg'] of {name}: {bad} of {sem_seg[0].numel()} pixels have "
                "NaN/inf scores (a diverged model or a non-finite input); refusing to score them"
            )
        lab = sem_seg.argmax(dim=0)
    elif sem_seg.dim() == 2:
        lab = sem_seg
    else:
        raise ValueError(
            f"outputs['sem_seg'] of {name}: expected (C, H, W) scores, got {tuple(sem_seg.shape)}"
        )
    if (
        sem_seg.dim() == 3
        and num_classes is not None
        and num_classes <= 255
        and lab.device.type != "cpu"
    ):
        lab = lab.to(
            torch.uint8
        )  # argmax < C <= 255: exact, and 8x less to copy to the host than int64
    lab = lab.to("cpu")
    if num_classes is not None and num_classes <= 255 and lab.dtype != torch.uint8 and lab.numel():
        if int(lab.min()) >= 0:
            lab = lab.clamp_(max=255).to(torch.uint8)
    return lab.numpy()


def raw_labels_from_reduced(gt: np.ndarray, name: str = "image") -> np.ndarray:
    """Inverse of MMSeg's ``reduce_zero_label`` on a uint8 map: 255 -> 0, k -> k + 1 (i.e. ``(gt +
    1) mod 256``)."""
    if gt.dtype != np.uint8:
        raise ValueError(
            f"ground truth of {name}: a reduce_zero_label dataset needs uint8 label maps, got "
            f"{gt.dtype}"
        )
    return gt + np.uint8(1)  # uint8 wraps 255 -> 0


def _pct(v: float) -> float:
    return float(v) * 100.0


def _fmt(v: float) -> str:
    return f"{v:.2f}" if np.isfinite(v) else "not measured"


def warn_not_measured(res, num_images: int, dataset_name: str, keys) -> list:
    """Warn about global metrics that are NaN (no valid pixel to measure them on); returns their
    names. NaN stays in the returned dict (Detectron2's hooks need floats) and is written as null by
    the JSON writers."""
    missing = [k for k in keys if k in res and not np.isfinite(res[k])]
    if missing:
        logger.warning(
            f"{dataset_name}: {', '.join(missing)} not measured: no valid (non-ignore) pixel in "
            f"the {num_images} image(s) for them; reported as null in the results JSON"
        )
    return missing


class _SemSegCounterEvaluator(DatasetEvaluator):
    """Shared plumbing: GT lookup, distributed gather, per-image loop."""

    _task = "boundary_errors"

    def __init__(
        self, dataset_name: str, distributed: bool = True, output_dir: Optional[str] = None
    ):
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        meta = MetadataCatalog.get(dataset_name)
        classes = meta.get("stuff_classes", None)
        if not classes:
            raise ValueError(
                f"dataset '{dataset_name}': MetadataCatalog entry has no 'stuff_classes'; "
                "the semantic evaluator needs the class names"
            )
        self._class_names = list(classes)
        self._num_classes = len(self._class_names)
        self._ignore_label = int(meta.get("ignore_label", 255))
        # stored GT = MMSeg reduce_zero_label of the raw labels (ADE20K: raw 0 "other" -> 255, k ->
        # k-1); the released boundary metrics build the GT band on the raw labels, recovered as
        # (stored + 1) mod 256
        self._reduce_zero_label = bool(meta.get("reduce_zero_label", False))
        self._input_file_to_gt_file = {}
        for rec in DatasetCatalog.get(dataset_name):
            if "sem_seg_file_name" not in rec:
                raise KeyError(
                    f"dataset '{dataset_name}': record for {rec.get('file_name')} has no "
                    "'sem_seg_file_name'"
                )
            self._input_file_to_gt_file[rec["file_name"]] = rec["sem_seg_file_name"]

    def _gt_for(self, inp) -> np.ndarray:
        fn = inp.get("file_name")
        path = self._input_file_to_gt_file.get(fn, inp.get("sem_seg_file_name"))
        if path is None:
            raise KeyError(
                f"dataset '{self._dataset_name}': no ground truth (sem_seg_file_name) for input "
                f"{fn}"
            )
        return load_sem_seg_gt(path)

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            name = inp.get("file_name", "image")
            pred = prediction_to_label_map(out, self._num_classes, name)
            gt = self._gt_for(inp)
            if self._reduce_zero_label and self._task == "boundary_errors":
                self._counter.update(pred, gt, name=name, band_gt=raw_labels_from_reduced(gt, name))
            else:
                self._counter.update(pred, gt, name=name)

    def _gathered_counter(self):
        return gather_counter(self._counter, self._distributed)


class BoundaryErrorSemSegEvaluator(_SemSegCounterEvaluator):
    """Seg-Aliasing boundary error evaluator for semantic segmentation (task ``"boundary_errors"``).

    Regions use 4-neighbour Laplacian edges of the prediction / GT label maps dilated by a fixed
    ``band_width x band_width`` kernel (default 15 = ±7 px); counts are accumulated over the whole
    dataset and class means are nan-means. Returned (percent):

    ``mIoU, mAcc, aAcc, BIoU, BAcc, BaAcc, FErr, FErr_a, MErr, MErr_a, DErr, DErr_a`` and per class
    ``IoU-<c>, Acc-<c>, BIoU-<c>, BAcc-<c>, FErr-<c>, MErr-<c>, DErr-<c>``.

    Writes ``boundary_errors_sem_seg.json`` / ``.csv`` / ``_counts.npz`` to ``output_dir``.
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        band_width: int = 15,
    ):
        super().__init__(dataset_name, distributed, output_dir)
        self._band_width = int(band_width)
        self._counter = BoundaryErrorCounter(
            self._num_classes, self._ignore_label, self._band_width
        )

    def reset(self):
        self._counter = BoundaryErrorCounter(
            self._num_classes, self._ignore_label, self._band_width
        )

    def evaluate(self):
        counter = self._gathered_counter()
        if counter is None:
            return None
        if counter.num_images == 0:
            logger.warning(
                f"[BoundaryErrorSemSegEvaluator] no images were processed for {self._dataset_name}"
            )
        frac = counter.metrics(self._class_names)
        res = OrderedDict((k, _pct(v)) for k, v in frac.items())
        logger.info(
            f"Boundary errors on {self._dataset_name} ({counter.num_images} images, band width "
            f"{self._band_width} px = +-{self._band_width // 2} px, ignore label "
            f"{self._ignore_label}): "
            + ", ".join(
                f"{k}={_fmt(res[k])}" for k in ("mIoU", "BIoU", "BAcc", "FErr", "MErr", "DErr")
            )
        )
        warn_not_measured(
            res, counter.num_images, self._dataset_name, [k for k in res if "-" not in k]
        )
        if self._output_dir:
            self._write(counter, res)
        return OrderedDict({self._task: res})

    def _write(self, counter, res):
        PathManager.mkdirs(self._output_dir)
        base = os.path.join(self._output_dir, "boundary_errors_sem_seg")
        payload = {
            "dataset": self._dataset_name,
            "num_images": counter.num_images,
            "band_width": self._band_width,
            "ignore_label": self._ignore_label,
            "units": "percent",
            "classes": self._class_names,
            "metrics": res,
        }
        with PathManager.open(base + ".json", "w") as f:
            dump_json(payload, f, indent=2)
        cols = ["IoU", "Acc", "BIoU", "BAcc", "FErr", "MErr", "DErr"]
        with PathManager.open(base + ".csv", "w") as f:
            w = csv.writer(f)
            w.writerow(
                [
                    "# band_width",
                    self._band_width,
                    "ignore_label",
                    self._ignore_label,
                    "num_images",
                    counter.num_images,
                ]
            )
            w.writerow(["class"] + cols)
            for c in self._class_names:
                w.writerow([c] + [f"{res[f'{k}-{c}']:.4f}" for k in cols])
            w.writerow(
                ["mean", f"{res['mIoU']:.4f}", f"{res['mAcc']:.4f}"]
                + [f"{res[k]:.4f}" for k in cols[2:]]
            )
        with PathManager.open(base + "_counts.npz", "wb") as f:
            np.savez(
                f,
                confusion=counter.confusion,
                band_width=self._band_width,
                ignore_label=self._ignore_label,
            )


class BoundaryIoUEvaluator(_SemSegCounterEvaluator):
    """Semantic Boundary IoU of Cheng et al. (task ``"boundary_iou"``).

    Per class inner boundaries of width ``d = max(1, round(dilation_ratio * image diagonal))``;
    ``I_c``/``U_c`` accumulated over the dataset on non-ignored pixels. Returns (percent)
    ``mBoundaryIoU`` and ``BoundaryIoU-<c>``. Not the same metric as BIoU of
    :class:`BoundaryErrorSemSegEvaluator`.
    """

    _task = "boundary_iou"

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        dilation_ratio: float = 0.02,
    ):
        super().__init__(dataset_name, distributed, output_dir)
        self._dilation_ratio = float(dilation_ratio)
        self.reset()

    def reset(self):
        self._counter = BoundaryIoUCounter(
            self._num_classes, self._ignore_label, self._dilation_ratio
        )

    def evaluate(self):
        counter = self._gathered_counter()
        if counter is None:
            return None
        res = OrderedDict((k, _pct(v)) for k, v in counter.metrics(self._class_names).items())
        logger.info(
            f"Boundary IoU (Cheng et al., dilation ratio {self._dilation_ratio}) on "
            f"{self._dataset_name}: "
            f"mBoundaryIoU={_fmt(res['mBoundaryIoU'])} ({counter.num_images} images)"
        )
        warn_not_measured(res, counter.num_images, self._dataset_name, ["mBoundaryIoU"])
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with PathManager.open(
                os.path.join(self._output_dir, "boundary_iou_sem_seg.json"), "w"
            ) as f:
                dump_json(
                    {
                        "dataset": self._dataset_name,
                        "dilation_ratio": self._dilation_ratio,
                        "num_images": counter.num_images,
                        "units": "percent",
                        "metrics": res,
                    },
                    f,
                    indent=2,
                )
        return OrderedDict({self._task: res})
