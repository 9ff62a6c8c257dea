"""Metric core of the boundary error evaluator (pure numpy / OpenCV, no Detectron2 import).

Definitions follow Seg-Aliasing (ICLR 2024), see ``docs/evaluation.md``:

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

import math
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import cv2
import numpy as np

__all__ = [
    "REGIONS",
    "REGION_CODES",
    "label_edges",
    "boundary_band",
    "BoundaryErrorCounter",
    "boundary_error_metrics",
    "mask_to_boundary",
    "boundary_iou",
    "boundary_iou_width",
    "label_inner_boundary",
    "BoundaryIoUCounter",
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
def _as_label_map(label: np.ndarray, what: str = "label map") -> np.ndarray:
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D label map (H, W), got shape {label.shape}")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        raise ValueError(f"{what}: expected an integer label map, got dtype {label.dtype}")
    return label



def _validated_pair(pred, gt, name):
    """Prediction and ground-truth label maps of one image, checked to be 2-D and the same shape."""
    pred = _as_label_map(pred, f"prediction of {name}")
    gt = _as_label_map(gt, f"ground truth of {name}")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground-truth shapes differ for {name}: pred {pred.shape} vs gt {gt.shape}")
    return pred, gt

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
    label = _as_label_map(label)
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
    if int(band_width) != band_width or band_width < 1 or band_width % 2 != 1:
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


# --------------------------------------------------------------------------------------------
# streaming counter
# --------------------------------------------------------------------------------------------
class BoundaryErrorCounter:
    """Streaming per-class counters for mIoU / BIoU / BAcc / FErr / MErr / DErr.

    Args:
        num_classes: number of evaluated classes ``K`` (labels ``0..K-1``).
        ignore_label: GT value excluded from all counts (its transitions still form GT edges).
        band_width: side of the square dilation kernel (odd, default 15 = ±7 px).

    ``update(pred, gt)`` adds one image; ``merge(other)`` / ``+=`` adds another counter;
    ``metrics()`` returns :func:`boundary_error_metrics` of the accumulated state.
    """

    def __init__(self, num_classes: int, ignore_label: int = 255, band_width: int = 15):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.band_width = _check_band_width(band_width)
        self.num_images = 0
        self.confusion = np.zeros((4, self.num_classes + 1, self.num_classes + 1), np.int64)

    # -- state ---------------------------------------------------------------------------------
    def reset(self):
        self.confusion[...] = 0
        self.num_images = 0

    def state_dict(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "ignore_label": self.ignore_label,
            "band_width": self.band_width,
            "num_images": self.num_images,
            "confusion": self.confusion.copy(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "BoundaryErrorCounter":
        c = cls(state["num_classes"], state["ignore_label"], state["band_width"])
        c.confusion[...] = state["confusion"]
        c.num_images = int(state["num_images"])
        return c

    def merge(self, other: "BoundaryErrorCounter") -> "BoundaryErrorCounter":
        if (other.num_classes, other.ignore_label, other.band_width) != (
            self.num_classes,
            self.ignore_label,
            self.band_width,
        ):
            raise ValueError(
                "cannot merge BoundaryErrorCounters with different (num_classes, ignore_label, "
                f"band_width): {(self.num_classes, self.ignore_label, self.band_width)} vs "
                f"{(other.num_classes, other.ignore_label, other.band_width)}"
            )
        self.confusion += other.confusion
        self.num_images += other.num_images
        return self

    __iadd__ = merge

    def region_confusion(self, region: str) -> np.ndarray:
        """``(K+1, K+1)`` confusion ``[gt, pred]`` of one of :data:`REGIONS`."""
        if region not in REGION_CODES:
            raise KeyError(f"unknown region {region!r}; expected one of {REGIONS}")
        return self.confusion[list(REGION_CODES[region])].sum(axis=0)

    # -- per image -----------------------------------------------------------------------------
    def image_codes(self, pred: np.ndarray, gt: np.ndarray, name: str = "image"):
        """Validated ``(band_code, gt_index, pred_index)`` uint arrays of one image."""
        pred, gt = _validated_pair(pred, gt, name)
        K = self.num_classes
        band_p = boundary_band(pred, self.band_width)
        band_g = boundary_band(gt, self.band_width)
        # code in {0,1,2,3} = 2*pred_band + gt_band (uint8 arithmetic, no bool->int copies)
        code = band_p.view(np.uint8) << 1
        code |= band_g.view(np.uint8)

        ignore = gt == self.ignore_label
        if gt.dtype.kind == "u" and K <= np.iinfo(gt.dtype).max:
            bad = gt >= K
        else:
            bad = (gt < 0) | (gt >= K)
        bad &= ~ignore
        if bad.any():
            vals = np.unique(gt[bad])[:10].tolist()
            raise ValueError(
                f"ground truth of {name} has labels {vals} outside [0, {K}) that are not the "
                f"ignore label {self.ignore_label}"
            )
        idx_dtype = np.int32 if 4 * (K + 1) * (K + 1) < 2**31 else np.int64
        g = gt.astype(idx_dtype)
        g[ignore] = K
        if pred.dtype.kind == "u":
            p = np.minimum(pred, K).astype(idx_dtype) if pred.size else pred.astype(idx_dtype)
        else:
            p = pred.astype(idx_dtype)
            p[(p < 0) | (p > K)] = K
        return code, g, p

    def update(self, pred: np.ndarray, gt: np.ndarray, name: str = "image") -> np.ndarray:
        """Add one image (``pred`` and ``gt`` integer H x W maps of the same shape).

        Returns the ``(4, K+1, K+1)`` counts of this image (already added to the state).
        """
        code, g, p = self.image_codes(pred, gt, name)
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


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.full(a.shape, np.nan, dtype=np.float64)
    np.divide(a, b, out=out, where=b > 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


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
    if class_names is None:
        class_names = [str(i) for i in range(K)]
    if len(class_names) != K:
        raise ValueError(f"got {len(class_names)} class names for {K} classes")

    stats = {}
    for region, codes in REGION_CODES.items():
        conf = confusion[list(codes)].sum(axis=0)
        inter, pred_area, gt_area = _region_stats(conf, K)
        iou = _safe_div(inter, pred_area + gt_area - inter)
        acc = _safe_div(inter, gt_area)
        tot = gt_area.sum()
        a_acc = float(inter.sum() / tot) if tot > 0 else float("nan")
        stats[region] = (iou, acc, a_acc)

    res = OrderedDict()
    iou_all, acc_all, aacc_all = stats["all"]
    res["mIoU"] = _nanmean(iou_all)
    res["mAcc"] = _nanmean(acc_all)
    res["aAcc"] = aacc_all
    iou_u, acc_u, aacc_u = stats["union"]
    res["BIoU"] = _nanmean(iou_u)
    res["BAcc"] = _nanmean(acc_u)
    res["BaAcc"] = aacc_u
    for key, region in (("FErr", "pred"), ("MErr", "gt"), ("DErr", "inter")):
        _, acc_r, aacc_r = stats[region]
        res[key] = 1.0 - _nanmean(acc_r)
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


# --------------------------------------------------------------------------------------------
# Boundary IoU of Cheng et al. (CVPR 2021) -- a different metric family
# --------------------------------------------------------------------------------------------
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
    label = _as_label_map(label)
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


class BoundaryIoUCounter:
    """Streaming per-class semantic Boundary IoU (Cheng et al.), dataset-level accumulation.

    For each image with ``d = max(1, round(dilation_ratio * diag))`` and valid set
    ``V = (G != ignore)``: ``I_c += |B(G==c) & B(P==c) & V|``, ``U_c += |(B(G==c) | B(P==c)) & V|``.
    ``BoundaryIoU_c = I_c / U_c``; ``mBoundaryIoU`` is the mean over classes with ``U_c > 0``.
    Ignore pixels count as "another label" when extracting boundaries.
    """

    def __init__(self, num_classes: int, ignore_label: int = 255, dilation_ratio: float = 0.02):
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.dilation_ratio = float(dilation_ratio)
        self.num_images = 0
        self.inter = np.zeros(self.num_classes, np.int64)
        self.union = np.zeros(self.num_classes, np.int64)

    def reset(self):
        self.inter[:] = 0
        self.union[:] = 0
        self.num_images = 0

    def merge(self, other: "BoundaryIoUCounter") -> "BoundaryIoUCounter":
        if (other.num_classes, other.dilation_ratio) != (self.num_classes, self.dilation_ratio):
            raise ValueError("cannot merge BoundaryIoUCounters with different settings")
        self.inter += other.inter
        self.union += other.union
        self.num_images += other.num_images
        return self

    __iadd__ = merge

    def update(self, pred: np.ndarray, gt: np.ndarray, name: str = "image"):
        pred, gt = _validated_pair(pred, gt, name)
        K = self.num_classes
        d = boundary_iou_width(*gt.shape, self.dilation_ratio)
        valid = gt != self.ignore_label
        bg = label_inner_boundary(gt, d) & valid & (gt >= 0) & (gt < K)
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
        K = self.num_classes
        if class_names is None:
            class_names = [str(i) for i in range(K)]
        biou = _safe_div(self.inter.astype(np.float64), self.union.astype(np.float64))
        res = OrderedDict()
        res["mBoundaryIoU"] = _nanmean(biou)
        for name, v in zip(class_names, biou):
            res[f"BoundaryIoU-{name}"] = float(v)
        return res
