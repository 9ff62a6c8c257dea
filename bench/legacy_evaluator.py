"""The per-image path of ``BoundaryErrorSemSegEvaluator.process`` as it was before the issue-15
speed work (bench code, kept so bench/bench_evaluator_e2e.py measures before and after in one run;
not used by the package).

Copied from segalias_d2/evaluation (commit e9029f9): ``prediction_to_label_map`` (int64 argmax,
``min``, clamp, uint8 copy), ``load_sem_seg_gt`` (PIL decode through ``read_label_map``),
``boundary_band`` and ``BoundaryErrorCounter.image_codes`` / ``update`` (int32 index copies of GT
and prediction, four passes to combine them, one bincount). The non-finite-logits check of the
current code is included (one ``isfinite`` pass), so the difference measured is the speed work only.
"""

import cv2
import numpy as np
import torch

from segalias_d2.data.label_io import read_label_map
from segalias_d2.evaluation.boundary_errors import _check_band_width, label_edges
from segalias_d2.evaluation.sem_seg_evaluation import BoundaryErrorSemSegEvaluator
from segalias_d2.evaluation.streaming_counter import as_label_map, check_gt_labels, validated_pair

_KERNELS = {}


def load_sem_seg_gt(path):
    return read_label_map(path)


def prediction_to_label_map(output, num_classes=None, name="image"):
    sem_seg = output["sem_seg"] if isinstance(output, dict) else output
    if not isinstance(sem_seg, torch.Tensor):
        sem_seg = torch.as_tensor(np.asarray(sem_seg))
    if sem_seg.dim() == 3:
        if num_classes is not None and sem_seg.shape[0] != num_classes:
            raise ValueError(
                f"outputs['sem_seg'] of {name} has {sem_seg.shape[0]} channels, expected "
                f"{num_classes}"
            )
        if sem_seg.is_floating_point() and not bool(torch.isfinite(sem_seg).all()):
            raise FloatingPointError(f"outputs['sem_seg'] of {name}: NaN/inf scores")
        lab = sem_seg.argmax(dim=0)
    elif sem_seg.dim() == 2:
        lab = sem_seg
    else:
        raise ValueError(
            f"outputs['sem_seg'] of {name}: expected (C, H, W) scores, got {tuple(sem_seg.shape)}"
        )
    lab = lab.to("cpu")
    if num_classes is not None and num_classes <= 255 and lab.dtype != torch.uint8 and lab.numel():
        if int(lab.min()) >= 0:
            lab = lab.clamp_(max=255).to(torch.uint8)
    return lab.numpy()


def boundary_band(label, band_width=15):
    w = _check_band_width(band_width)
    edges = label_edges(label).view(np.uint8)
    if w == 1 or edges.size == 0:
        return edges.view(np.bool_)
    k = _KERNELS.get(w)
    if k is None:
        k = _KERNELS[w] = np.ones((w, w), np.uint8)
    return cv2.dilate(edges, k).view(np.bool_)


def image_codes(counter, pred, gt, name="image", band_gt=None):
    pred, gt = validated_pair(pred, gt, name)
    K = counter.num_classes
    band_p = boundary_band(pred, counter.band_width)
    if band_gt is not None:
        band_gt = as_label_map(band_gt, f"band ground truth of {name}")
    band_g = boundary_band(gt if band_gt is None else band_gt, counter.band_width)
    code = band_p.view(np.uint8) << 1
    code |= band_g.view(np.uint8)
    ignore = gt == counter.ignore_label
    check_gt_labels(gt, K, ignore, counter.ignore_label, name)
    idx_dtype = np.int32 if 4 * (K + 1) * (K + 1) < 2**31 else np.int64
    g = gt.astype(idx_dtype)
    g[ignore] = K
    if pred.dtype.kind == "u":
        p = np.minimum(pred, K).astype(idx_dtype) if pred.size else pred.astype(idx_dtype)
    else:
        p = pred.astype(idx_dtype)
        p[(p < 0) | (p > K)] = K
    return code, g, p


def counter_update(counter, pred, gt, name="image", band_gt=None):
    code, g, p = image_codes(counter, pred, gt, name, band_gt)
    K1 = counter.num_classes + 1
    idx = code.astype(g.dtype)
    idx *= K1
    idx += g
    idx *= K1
    idx += p
    counts = np.bincount(idx.ravel(), minlength=4 * K1 * K1).reshape(4, K1, K1)
    counter.confusion += counts
    counter.num_images += 1
    return counts


class LegacyBoundaryErrorSemSegEvaluator(BoundaryErrorSemSegEvaluator):
    """The evaluator with the old per-image stages (same GT lookup, same counter state, same
    evaluate())."""

    def _gt_for(self, inp):
        fn = inp.get("file_name")
        return load_sem_seg_gt(self._input_file_to_gt_file.get(fn, inp.get("sem_seg_file_name")))

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            name = inp.get("file_name", "image")
            pred = prediction_to_label_map(out, self._num_classes, name)
            gt = self._gt_for(inp)
            counter_update(self._counter, pred, gt, name=name)
