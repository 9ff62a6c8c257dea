"""Boundary error types of Seg-Aliasing (ICLR 2024): BIoU, BAcc, FErr, MErr, DErr next to mIoU.

Pure numpy / OpenCV, no Detectron2 import. Cheng et al.'s Boundary IoU, a different metric family,
is in :mod:`.boundary_iou_metric`. Definitions (see ``docs/evaluation.md``):

* edges ``E(L) = Laplacian4(L) != 0`` on a *label map* (OpenCV ``ksize=1`` kernel
  ``[[0,1,0],[1,-4,1],[0,1,0]]``, border ``BORDER_REFLECT_101``; ignore pixels are just another
  label, so transitions into/out of the ignore label are GT edges);
* bands ``B = dilate(E, ones(w, w))`` with a fixed ``w x w`` kernel (``w = 15`` → ±7 px);
* regions per image: ``all``, ``union = B_P | B_G``, ``pred = B_P``, ``gt = B_G``,
  ``inter = B_P & B_G``; pixels whose GT is the ignore label are never counted;
* per-class counts (intersection, predicted area, GT area) summed over the *whole dataset*,
  class means are ``nanmean`` over classes.

The streaming state is one ``int64`` array of shape ``(4, K+1, K+1)``: for each of the four band
memberships ``code = 2*in_pred_band + in_gt_band`` a confusion matrix indexed ``[gt, pred]``,
where row ``K`` collects ignored GT pixels and column ``K`` predictions outside ``[0, K)``.
Every region confusion matrix is a sum of some of these four, so the state is exact, constant in
the number of images, and mergeable across processes by plain addition.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional, Sequence

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
    "REGIONS",
    "REGION_CODES",
    "label_edges",
    "boundary_band",
    "BoundaryErrorCounter",
    "boundary_error_metrics",
]

#: region name -> band-membership codes (``2*in_pred_band + in_gt_band``) it is made of
REGION_CODES = OrderedDict(
    [
        ("all", (0, 1, 2, 3)),
        ("union", (1, 2, 3)),
        ("pred", (2, 3)),
        ("gt", (1, 3)),
        ("inter", (3,)),
    ]
)
REGIONS = tuple(REGION_CODES.keys())


# --------------------------------------------------------------------------------------------
# edges and bands
# --------------------------------------------------------------------------------------------
def _laplacian_nonzero_numpy(label: np.ndarray) -> np.ndarray:
    """``Laplacian4(label) != 0`` with reflect-101 borders, for labels outside uint8."""
    lab = label.astype(np.int64)
    h, w = lab.shape
    if lab.size == 0:
        return np.zeros((h, w), bool)
    # reflect-101 padding: row -1 mirrors row 1 (a single row/column mirrors itself)
    pad = np.pad(lab, 1, mode="reflect") if min(h, w) > 1 else np.pad(lab, 1, mode="edge")
    lap = pad[:-2, 1:-1] + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:] - 4 * lab
    return lap != 0


def label_edges(label: np.ndarray) -> np.ndarray:
    """1-px edges of a label map: ``cv2.Laplacian(label, ksize=1) != 0`` (bool, H x W).

    Equals Seg-Aliasing's ``cv2.Laplacian(label.astype(uint8), cv2.CV_64F) != 0`` for labels in
    ``[0, 255]`` (computed here in int16, which is exact: ``|lap| <= 4*255``). Labels outside
    ``[0, 255]`` are handled in int64 without the reference's uint8 wrap-around.
    """
    label = as_label_map(label)
    if label.dtype == np.uint8 or label.dtype == np.bool_:
        lab8 = label.view(np.uint8) if label.dtype == np.bool_ else label
    else:
        if label.size and (label.min() < 0 or label.max() > 255):
            return _laplacian_nonzero_numpy(label)
        lab8 = label.astype(np.uint8)
    if min(lab8.shape) < 2:
        return _laplacian_nonzero_numpy(lab8)
    return cv2.Laplacian(lab8, cv2.CV_16S, ksize=1) != 0


_KERNELS: Dict[int, np.ndarray] = {}


def _check_band_width(band_width: int) -> int:
    is_number = isinstance(band_width, (int, float, np.number)) and not isinstance(band_width, bool)
    if not is_number or int(band_width) != band_width or band_width < 1 or band_width % 2 != 1:
        raise ValueError(
            f"band_width (TEST.SEGALIAS.BOUNDARY_BAND_WIDTH) must be a positive odd integer "
            f"(kernel side in px, 15 = +-7 px), got {band_width!r}"
        )
    return int(band_width)


def boundary_band(label: np.ndarray, band_width: int = 15) -> np.ndarray:
    """Boundary band of a label map: ``dilate(label_edges(label), ones(w, w))`` (bool)."""
    w = _check_band_width(band_width)
    edges = label_edges(label).view(np.uint8)
    if w == 1 or edges.size == 0:
        return edges.view(np.bool_)
    k = _KERNELS.get(w)
    if k is None:
        k = _KERNELS[w] = np.ones((w, w), np.uint8)
    return cv2.dilate(edges, k).view(np.bool_)


#: largest K of the uint8 fast path: the band code (2 bits) and min(pred, K) (6 bits) share one byte
_HIST_MAX_CLASSES = 63
_HIST_MAX_PIXELS = 1 << 23  # per calcHist call: float32 bin counts stay exact (< 2^24)


def _uint8_confusion(code: np.ndarray, gt: np.ndarray, pred: np.ndarray, K: int, ignore_label: int):
    """``(4, K+1, K+1)`` int64 counts of one uint8 image from a 2-D 256x256 byte histogram (OpenCV's
    table-driven 8-bit ``calcHist``) of (GT value, ``code << 6 | min(pred, K)``): no int32/int64
    index copies and no bincount; GT values are mapped to rows afterwards (ignore -> K). ``None`` if
    a GT value is neither a class nor ignore. Same counts as
    :meth:`BoundaryErrorCounter.image_codes` + bincount (``code`` is consumed)."""
    code <<= 6
    key = np.minimum(pred, K)
    key |= code
    gt = np.ascontiguousarray(gt)
    hist = np.zeros((256, 256), np.int64)
    rows = max(1, _HIST_MAX_PIXELS // max(1, gt.shape[1]))
    for r in range(0, gt.shape[0], rows):
        hist += cv2.calcHist(
            [gt[r : r + rows], key[r : r + rows]], [0, 1], None, [256, 256], [0, 256, 0, 256]
        ).astype(np.int64)
    hist = hist.reshape(256, 4, 64)
    row_of = np.full(256, -1, np.int64)  # GT value -> confusion row (-1: invalid)
    row_of[:K] = np.arange(K)
    if 0 <= ignore_label <= 255:
        row_of[ignore_label] = K
    if hist[row_of < 0].any():
        return None
    counts = np.zeros((K + 1, 4, K + 1), np.int64)
    valid = np.nonzero(row_of >= 0)[0]
    counts[row_of[valid]] = hist[valid, :, : K + 1]
    return np.ascontiguousarray(counts.transpose(1, 0, 2))


# --------------------------------------------------------------------------------------------
# streaming counter
# --------------------------------------------------------------------------------------------
class BoundaryErrorCounter(StreamingCounter):
    """Streaming per-class counters for mIoU / BIoU / BAcc / FErr / MErr / DErr.

    Args:
        num_classes: number of evaluated classes ``K`` (labels ``0..K-1``).
        ignore_label: GT value excluded from all counts (its transitions still form GT edges).
        band_width: side of the square dilation kernel (odd, default 15 = ±7 px).

    The protocol of :class:`~.streaming_counter.StreamingCounter`: ``update(pred, gt, name)``,
    ``merge(other)`` / ``+=``, ``state_dict()`` / ``load_state_dict()`` / ``from_state_dict()``,
    ``reset()``; ``metrics()`` returns :func:`boundary_error_metrics` of the accumulated state.
    """

    _settings = ("num_classes", "ignore_label", "band_width")
    _arrays = ("confusion",)

    def __init__(self, num_classes: int, ignore_label: int = 255, band_width: int = 15):
        self.num_classes = check_num_classes(num_classes)
        self.ignore_label = check_ignore_label(ignore_label)
        self.band_width = _check_band_width(band_width)
        self.num_images = 0
        self.confusion = np.zeros((4, self.num_classes + 1, self.num_classes + 1), np.int64)

    def region_confusion(self, region: str) -> np.ndarray:
        """``(K+1, K+1)`` confusion ``[gt, pred]`` of one of :data:`REGIONS`."""
        if region not in REGION_CODES:
            raise KeyError(f"unknown region {region!r}; expected one of {REGIONS}")
        return self.confusion[list(REGION_CODES[region])].sum(axis=0)

    # -- per image -----------------------------------------------------------------------------
    def _band_code(self, pred, gt, name, band_gt):
        """uint8 H x W ``2*in_pred_band + in_gt_band`` of a validated pair."""
        band_p = boundary_band(pred, self.band_width)
        if band_gt is not None:
            band_gt = as_label_map(band_gt, f"band ground truth of {name}")
            if band_gt.shape != gt.shape:
                raise ValueError(
                    f"band ground truth of {name} has shape {band_gt.shape}, expected {gt.shape}"
                )
        band_g = boundary_band(gt if band_gt is None else band_gt, self.band_width)
        # code in {0,1,2,3} = 2*pred_band + gt_band (uint8 arithmetic, no bool->int copies)
        code = band_p.view(np.uint8) << 1
        code |= band_g.view(np.uint8)
        return code

    def image_codes(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        name: str = "image",
        band_gt: Optional[np.ndarray] = None,
    ):
        """Validated ``(band_code, gt_index, pred_index)`` uint arrays of one image.

        ``band_gt``: the label map the GT band is computed on, when it differs from the counted
        ``gt`` (ADE20K: the raw labels, 0 = "other", before MMSeg's ``reduce_zero_label``, as
        released); default ``gt``.
        """
        pred, gt = validated_pair(pred, gt, name)
        K = self.num_classes
        code = self._band_code(pred, gt, name, band_gt)

        ignore = gt == self.ignore_label
        check_gt_labels(gt, K, ignore, self.ignore_label, name)
        idx_dtype = np.int32 if 4 * (K + 1) * (K + 1) < 2**31 else np.int64
        g = gt.astype(idx_dtype)
        g[ignore] = K
        if pred.dtype.kind == "u":
            p = np.minimum(pred, K).astype(idx_dtype) if pred.size else pred.astype(idx_dtype)
        else:
            p = pred.astype(idx_dtype)
            p[(p < 0) | (p > K)] = K
        return code, g, p

    def update(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        name: str = "image",
        band_gt: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """Add one image (``pred`` and ``gt`` integer H x W maps of the same shape; ``band_gt``: see
        :meth:`image_codes`).

        Returns the ``(4, K+1, K+1)`` counts of this image (already added to the state). uint8 maps
        with K <= 63 (the evaluators' case: uint8 argmax, 8-bit PNG) are counted by
        :func:`_uint8_confusion`, other dtypes by one bincount over combined int32 indices; the
        counts are the same.
        """
        if (
            np.asarray(pred).dtype == np.uint8
            and np.asarray(gt).dtype == np.uint8
            and np.asarray(gt).size
            and self.num_classes <= _HIST_MAX_CLASSES
        ):
            pred, gt = validated_pair(pred, gt, name)
            counts = _uint8_confusion(
                self._band_code(pred, gt, name, band_gt),
                gt,
                pred,
                self.num_classes,
                self.ignore_label,
            )
            if (
                counts is None
            ):  # GT labels outside [0, K) that are not the ignore label: raise the usual error
                check_gt_labels(
                    gt, self.num_classes, gt == self.ignore_label, self.ignore_label, name
                )
            self.confusion += counts
            self.num_images += 1
            return counts
        code, g, p = self.image_codes(pred, gt, name, band_gt)
        K1 = self.num_classes + 1
        # one bincount with a combined index: ((code * K1) + gt) * K1 + pred
        idx = code.astype(g.dtype)
        idx *= K1
        idx += g
        idx *= K1
        idx += p
        counts = np.bincount(idx.ravel(), minlength=4 * K1 * K1).reshape(4, K1, K1)
        self.confusion += counts
        self.num_images += 1
        return counts

    def metrics(self, class_names: Optional[Sequence[str]] = None) -> "OrderedDict[str, float]":
        return boundary_error_metrics(self.confusion, class_names)


# --------------------------------------------------------------------------------------------
# metrics from counts
# --------------------------------------------------------------------------------------------
def _region_stats(conf: np.ndarray, K: int):
    """(I, PRED, GT) per class of a ``(K+1, K+1)`` region confusion ``[gt, pred]``."""
    valid = conf[:K]  # rows with a valid GT label
    inter = np.diagonal(valid[:, :K]).astype(np.float64)
    pred_area = valid[:, :K].sum(axis=0).astype(np.float64)
    gt_area = valid.sum(axis=1).astype(np.float64)  # includes predictions outside [0, K)
    return inter, pred_area, gt_area


def boundary_error_metrics(
    confusion: np.ndarray, class_names: Optional[Sequence[str]] = None
) -> "OrderedDict[str, float]":
    """All metrics (fractions in [0, 1], NaN where undefined) from a ``(4, K+1, K+1)`` state.

    Global keys: ``mIoU, mAcc, aAcc`` (all pixels), ``BIoU, BAcc, BaAcc`` (union band),
    ``FErr, FErr_a`` (predicted band), ``MErr, MErr_a`` (GT band), ``DErr, DErr_a``
    (intersection), where ``X_a = 1 - pixel accuracy`` in the region. Per class (name ``c``):
    ``IoU-c, Acc-c, BIoU-c, BAcc-c, FErr-c, MErr-c, DErr-c``.
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 3 or confusion.shape[0] != 4 or confusion.shape[1] != confusion.shape[2]:
        raise ValueError(f"expected a (4, K+1, K+1) confusion state, got {confusion.shape}")
    K = confusion.shape[1] - 1
    class_names = check_class_names(class_names, K)

    stats = {}
    for region, codes in REGION_CODES.items():
        conf = confusion[list(codes)].sum(axis=0)
        inter, pred_area, gt_area = _region_stats(conf, K)
        iou = safe_div(inter, pred_area + gt_area - inter)
        acc = safe_div(inter, gt_area)
        tot = gt_area.sum()
        a_acc = float(inter.sum() / tot) if tot > 0 else float("nan")
        stats[region] = (iou, acc, a_acc)

    res = OrderedDict()
    iou_all, acc_all, aacc_all = stats["all"]
    res["mIoU"] = nanmean(iou_all)
    res["mAcc"] = nanmean(acc_all)
    res["aAcc"] = aacc_all
    iou_u, acc_u, aacc_u = stats["union"]
    res["BIoU"] = nanmean(iou_u)
    res["BAcc"] = nanmean(acc_u)
    res["BaAcc"] = aacc_u
    for key, region in (("FErr", "pred"), ("MErr", "gt"), ("DErr", "inter")):
        _, acc_r, aacc_r = stats[region]
        res[key] = 1.0 - nanmean(acc_r)
        res[key + "_a"] = 1.0 - aacc_r
    per_class = [
        ("IoU", stats["all"][0]),
        ("Acc", stats["all"][1]),
        ("BIoU", stats["union"][0]),
        ("BAcc", stats["union"][1]),
        ("FErr", 1.0 - stats["pred"][1]),
        ("MErr", 1.0 - stats["gt"][1]),
        ("DErr", 1.0 - stats["inter"][1]),
    ]
    for prefix, values in per_class:
        for name, v in zip(class_names, values):
            res[f"{prefix}-{name}"] = float(v)
    return res
