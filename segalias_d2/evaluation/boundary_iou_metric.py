"""Boundary IoU of Cheng et al. (CVPR 2021) -- pure numpy / OpenCV, no Detectron2 import.

A different metric family from the ±7 px band error types of :mod:`.boundary_errors` (never mixed):
inner boundaries of width ``d = max(1, round(dilation_ratio * image diagonal))`` (Python rounding),
image borders count as contour. Used by the semantic :class:`BoundaryIoUCounter` and by Boundary AP
(:class:`~.coco_evaluation.BoundaryCOCOeval`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional, Sequence

import cv2
import numpy as np

from .streaming_counter import (
    StreamingCounter,
    as_label_map,
    check_class_names,
    check_gt_labels,
    check_ignore_label,
    check_num_classes,
    nanmean,
    safe_div,
    validated_pair,
)

__all__ = [
    "check_dilation_ratio",
    "boundary_iou_width",
    "mask_to_boundary",
    "boundary_iou",
    "label_inner_boundary",
    "BoundaryIoUCounter",
]


def check_dilation_ratio(dilation_ratio) -> float:
    """``dilation_ratio`` as a float in (0, 1] (COCO 0.02, Cityscapes 0.005)."""
    ok = isinstance(dilation_ratio, (int, float, np.number)) and not isinstance(
        dilation_ratio, bool
    )
    if not ok or not (0.0 < float(dilation_ratio) <= 1.0):
        raise ValueError(
            "dilation_ratio (TEST.SEGALIAS.BOUNDARY_IOU_DILATION_RATIO) must be a number in (0, "
            "1], the band width as a fraction of the image diagonal (COCO 0.02, Cityscapes 0.005); "
            f"got {dilation_ratio!r}"
        )
    return float(dilation_ratio)


def boundary_iou_width(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """Band width ``d = max(1, round(dilation_ratio * sqrt(H^2 + W^2)))`` (Python rounding)."""
    return max(1, int(round(dilation_ratio * math.sqrt(height**2 + width**2))))


def mask_to_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Inner boundary of a binary mask (Cheng et al.): ``mask - erode(pad0(mask), 3x3, d)``.

    Pixels of the mask within Chebyshev distance ``d`` of a background pixel or of the outside of
    the image. Returns a uint8 0/1 array of the mask's shape.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask_to_boundary expects a 2-D mask, got shape {mask.shape}")
    m = (mask != 0).astype(np.uint8)
    h, w = m.shape
    d = boundary_iou_width(h, w, dilation_ratio)
    padded = cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:-1, 1:-1]
    return m - eroded


def boundary_iou(gt_mask: np.ndarray, pred_mask: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU of two binary masks; 1.0 if both boundaries are empty."""
    bg = mask_to_boundary(gt_mask, dilation_ratio).astype(bool)
    bp = mask_to_boundary(pred_mask, dilation_ratio).astype(bool)
    union = np.count_nonzero(bg | bp)
    if union == 0:
        return 1.0
    return np.count_nonzero(bg & bp) / union


def label_inner_boundary(label: np.ndarray, d: int) -> np.ndarray:
    """``B(L == c)`` for every class at once: True where a pixel is in the inner boundary of its
    own class, i.e. some pixel within Chebyshev distance ``d`` (or the outside of the image) has a
    different label. Equals ``mask_to_boundary(L == L[p])[p]`` for every pixel ``p``.
    """
    label = as_label_map(label)
    if label.size == 0:
        return np.zeros(label.shape, bool)
    lab = label.astype(np.int32)
    # shift to [1, ...] so 0 can be the outside sentinel; cv2 morphology needs <= 32-bit float
    lo = int(lab.min()) if lab.size else 0
    lab = (lab - lo + 1).astype(np.float32)
    if lab.size and lab.max() >= 2**24:
        raise ValueError("label_inner_boundary: label range too large for exact float32")
    padded = cv2.copyMakeBorder(lab, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    k = np.ones((2 * d + 1, 2 * d + 1), np.uint8)
    mx = cv2.dilate(padded, k)
    mn = cv2.erode(padded, k)
    return (mx != mn)[1:-1, 1:-1]


class BoundaryIoUCounter(StreamingCounter):
    """Streaming per-class semantic Boundary IoU (Cheng et al.), dataset-level accumulation.

    For each image with ``d = max(1, round(dilation_ratio * diag))`` and valid set
    ``V = (G != ignore)``: ``I_c += |B(G==c) & B(P==c) & V|``, ``U_c += |(B(G==c) | B(P==c)) & V|``.
    ``BoundaryIoU_c = I_c / U_c``; ``mBoundaryIoU`` is the mean over classes with ``U_c > 0``.
    Ignore pixels count as "another label" when extracting boundaries; predictions outside
    ``[0, K)`` have no class boundary. Same protocol as the band-error counter
    (:class:`~.streaming_counter.StreamingCounter`).
    """

    _settings = ("num_classes", "ignore_label", "dilation_ratio")
    _arrays = ("inter", "union")

    def __init__(self, num_classes: int, ignore_label: int = 255, dilation_ratio: float = 0.02):
        self.num_classes = check_num_classes(num_classes)
        self.ignore_label = check_ignore_label(ignore_label)
        self.dilation_ratio = check_dilation_ratio(dilation_ratio)
        self.num_images = 0
        self.inter = np.zeros(self.num_classes, np.int64)
        self.union = np.zeros(self.num_classes, np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray, name: str = "image"):
        """Add one image (``pred`` and ``gt`` integer H x W maps of the same shape)."""
        pred, gt = validated_pair(pred, gt, name)
        K = self.num_classes
        d = boundary_iou_width(*gt.shape, self.dilation_ratio)
        valid = gt != self.ignore_label
        check_gt_labels(gt, K, ~valid, self.ignore_label, name)
        bg = label_inner_boundary(gt, d) & valid
        bp = label_inner_boundary(pred, d) & valid & (pred >= 0) & (pred < K)
        g_b = np.bincount(gt[bg].astype(np.int64), minlength=K)[:K]
        p_b = np.bincount(pred[bp].astype(np.int64), minlength=K)[:K]
        both = bg & bp & (gt == pred)
        i_b = np.bincount(gt[both].astype(np.int64), minlength=K)[:K]
        self.inter += i_b
        self.union += g_b + p_b - i_b
        self.num_images += 1

    def metrics(self, class_names: Optional[Sequence[str]] = None) -> "OrderedDict[str, float]":
        """``mBoundaryIoU`` and ``BoundaryIoU-<class>`` as fractions (NaN where U_c = 0)."""
        class_names = check_class_names(class_names, self.num_classes)
        biou = safe_div(self.inter.astype(np.float64), self.union.astype(np.float64))
        res = OrderedDict()
        res["mBoundaryIoU"] = nanmean(biou)
        for name, v in zip(class_names, biou):
            res[f"BoundaryIoU-{name}"] = float(v)
        return res
