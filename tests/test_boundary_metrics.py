"""Metric core: worked example of the reference, edge cases, naive-vs-fast parity, Boundary IoU."""

import math

import cv2
import numpy as np
import pytest

from segalias_d2.evaluation.boundary_errors import BoundaryErrorCounter, boundary_band, label_edges
from segalias_d2.evaluation.boundary_iou_metric import (
    BoundaryIoUCounter,
    boundary_iou,
    boundary_iou_width,
    label_inner_boundary,
    mask_to_boundary,
)


# ---------------------------------------------------------------------------------------------
# independent naive transcription of the definition (reference pseudo-code, per class loops)
# ---------------------------------------------------------------------------------------------
def naive_counts(preds, gts, K, ignore=255, width=15):
    """Returns {region: (I, PRED, GT)} float arrays, dataset-level."""
    regions = ["all", "union", "pred", "gt", "inter"]
    out = {r: [np.zeros(K), np.zeros(K), np.zeros(K)] for r in regions}
    kernel = np.ones((width, width), np.uint8)
    for P, G in zip(preds, gts):
        ep = (cv2.Laplacian(P.astype(np.uint8), cv2.CV_64F) != 0).astype(np.uint8)
        eg = (cv2.Laplacian(G.astype(np.uint8), cv2.CV_64F) != 0).astype(np.uint8)
        bp = cv2.dilate(ep, kernel).astype(bool)
        bg = cv2.dilate(eg, kernel).astype(bool)
        masks = {
            "all": np.ones_like(bp),
            "union": bp | bg,
            "pred": bp,
            "gt": bg,
            "inter": bp & bg,
        }
        valid = G != ignore
        for r, R in masks.items():
            m = R & valid
            for c in range(K):
                out[r][0][c] += np.sum((P == c) & (G == c) & m)
                out[r][1][c] += np.sum((P == c) & m)
                out[r][2][c] += np.sum((G == c) & m)
    return out


def naive_metrics(preds, gts, K, ignore=255, width=15):
    cnt = naive_counts(preds, gts, K, ignore, width)

    def div(a, b):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)

    def iou(r):
        i, p, g = cnt[r]
        return div(i, p + g - i)

    def acc(r):
        i, p, g = cnt[r]
        return div(i, g)

    def nm(x):
        x = x[~np.isnan(x)]
        return x.mean() if x.size else np.nan

    return {
        "mIoU": nm(iou("all")),
        "BIoU": nm(iou("union")),
        "BAcc": nm(acc("union")),
        "FErr": 1 - nm(acc("pred")),
        "MErr": 1 - nm(acc("gt")),
        "DErr": 1 - nm(acc("inter")),
        "BaAcc": cnt["union"][0].sum() / cnt["union"][2].sum(),
        "IoU": iou("all"),
        "BIoU_c": iou("union"),
        "DErr_c": 1 - acc("inter"),
    }


def blobby_map(rng, h, w, K, cells=(6, 9), ignore_frac=0.0, ignore=255):
    small = rng.integers(0, K, cells).astype(np.uint8)
    m = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    noise = rng.random((h, w)) < 0.01
    m[noise] = rng.integers(0, K, noise.sum())
    if ignore_frac:
        m[rng.random((h, w)) < ignore_frac] = ignore
    return m


def _same(a, b):
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-9


# ---------------------------------------------------------------------------------------------
def test_worked_example():
    gt = np.zeros((64, 200), np.uint8)
    gt[:, 100:] = 1
    pred = np.zeros((64, 200), np.uint8)
    pred[:, 104:] = 1
    c = BoundaryErrorCounter(2, band_width=15)
    c.update(pred, gt)
    m = c.metrics(["a", "b"])
    assert round(m["BIoU"], 3) == 0.667
    assert round(m["BAcc"], 3) == 0.833
    assert round(m["FErr"], 3) == 0.167
    assert round(m["MErr"], 3) == 0.25
    assert round(m["DErr"], 3) == 0.25
    assert round(m["mIoU"], 3) == 0.961
    # per-class values hand-computed in the reference (§5.5)
    assert m["BIoU-a"] == pytest.approx(8 / 12) and m["BIoU-b"] == pytest.approx(8 / 12)
    assert m["MErr-b"] == pytest.approx(0.5) and m["FErr-b"] == pytest.approx(1 - 8 / 12)
    # bands of the example: GT 92..107, pred 96..111
    assert np.array_equal(np.where(boundary_band(gt)[0])[0], np.arange(92, 108))
    assert np.array_equal(np.where(boundary_band(pred)[0])[0], np.arange(96, 112))


def test_edges_match_cv2_laplacian_and_numpy_fallback():
    rng = np.random.default_rng(1)
    lab = blobby_map(rng, 37, 53, 5, ignore_frac=0.02)
    ref = cv2.Laplacian(lab, cv2.CV_64F) != 0
    assert np.array_equal(label_edges(lab), ref)
    # labels > 255 go through the numpy path; for a shifted map edges are identical
    assert np.array_equal(label_edges(lab.astype(np.int32) + 1000), ref)
    # cancellation case of the reference: a 1-px strip of 2 between 1 and 3 is not an edge
    strip = np.array([[1, 1, 2, 3, 3]] * 3, np.uint8)
    assert label_edges(strip)[:, 2].sum() == 0


def test_naive_equals_fast_random_maps():
    rng = np.random.default_rng(0)
    K = 5
    preds, gts = [], []
    for h, w in [(40, 60), (33, 47), (64, 64)]:  # different sizes
        gts.append(blobby_map(rng, h, w, K, ignore_frac=0.05))
        preds.append(blobby_map(rng, h, w, K))
    c = BoundaryErrorCounter(K, band_width=7)
    for p, g in zip(preds, gts):
        c.update(p, g)
    m = c.metrics()
    ref = naive_metrics(preds, gts, K, width=7)
    for k in ["mIoU", "BIoU", "BAcc", "FErr", "MErr", "DErr", "BaAcc"]:
        assert _same(m[k], ref[k]), k
    for i in range(K):
        assert _same(m[f"IoU-{i}"], ref["IoU"][i])
        assert _same(m[f"BIoU-{i}"], ref["BIoU_c"][i])
        assert _same(m[f"DErr-{i}"], ref["DErr_c"][i])


def test_class_absent_from_image_is_nan_not_zero():
    gt = np.zeros((30, 30), np.uint8)
    gt[:, 15:] = 1
    c = BoundaryErrorCounter(3)
    c.update(gt.copy(), gt)
    m = c.metrics(["x", "y", "z"])
    assert math.isnan(m["IoU-z"]) and math.isnan(m["BIoU-z"]) and math.isnan(m["DErr-z"])
    assert m["mIoU"] == 1.0 and m["BIoU"] == 1.0 and m["FErr"] == 0.0
    # a class predicted but absent from GT contributes IoU 0 (and no Acc term)
    pred = gt.copy()
    pred[0:5, 0:5] = 2
    c2 = BoundaryErrorCounter(3)
    c2.update(pred, gt)
    m2 = c2.metrics(["x", "y", "z"])
    assert m2["IoU-z"] == 0.0
    assert m2["mIoU"] == pytest.approx(((450 - 25) / 450 + 1 + 0) / 3)


def test_all_ignore_image_adds_nothing():
    c = BoundaryErrorCounter(3)
    gt = np.full((20, 25), 255, np.uint8)
    pred = np.random.default_rng(0).integers(0, 3, (20, 25)).astype(np.uint8)
    c.update(pred, gt)
    assert c.confusion[:, :3, :].sum() == 0
    assert c.num_images == 1
    m = c.metrics()
    assert all(math.isnan(v) for v in m.values())


def test_empty_prediction():
    # a (0, 0) image adds nothing; a prediction of one constant class has no pred band
    c = BoundaryErrorCounter(2)
    c.update(np.zeros((0, 0), np.uint8), np.zeros((0, 0), np.uint8))
    assert c.confusion.sum() == 0
    gt = np.zeros((20, 40), np.uint8)
    gt[:, 20:] = 1
    pred = np.zeros_like(gt)
    c.update(pred, gt)
    m = c.metrics()
    # GT band = columns 12..27 (edges 19,20); pred band empty -> FErr / DErr undefined
    assert math.isnan(m["FErr"]) and math.isnan(m["DErr"])
    # union = GT band; class 0: 8 px/row correct, class 1: 0 of 8 -> BAcc = 0.5, MErr = 0.5
    assert m["BAcc"] == pytest.approx(0.5) and m["MErr"] == pytest.approx(0.5)
    assert m["BIoU"] == pytest.approx((8 / 16 + 0) / 2)


def test_split_counters_equal_single_pass():
    rng = np.random.default_rng(3)
    pairs = [
        (blobby_map(rng, 48, 70, 4), blobby_map(rng, 48, 70, 4, ignore_frac=0.1)) for _ in range(6)
    ]
    single = BoundaryErrorCounter(4)
    a, b = BoundaryErrorCounter(4), BoundaryErrorCounter(4)
    for i, (p, g) in enumerate(pairs):
        single.update(p, g)
        (a if i % 2 else b).update(p, g)
    merged = BoundaryErrorCounter.from_state_dict(a.state_dict())
    merged += b
    assert np.array_equal(merged.confusion, single.confusion)
    assert merged.num_images == 6
    assert merged.metrics() == pytest.approx(single.metrics(), nan_ok=True)
    with pytest.raises(ValueError):
        a.merge(BoundaryErrorCounter(4, band_width=7))


def test_bad_inputs():
    c = BoundaryErrorCounter(3)
    with pytest.raises(ValueError, match="shapes differ for img7"):
        c.update(np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8), name="img7")
    with pytest.raises(ValueError, match="outside"):
        c.update(np.zeros((4, 5), np.uint8), np.full((4, 5), 7, np.uint8), name="img8")
    with pytest.raises(ValueError, match="odd"):
        BoundaryErrorCounter(3, band_width=14)


def test_prediction_out_of_range_counts_as_wrong():
    gt = np.zeros((10, 10), np.uint8)
    pred = np.zeros((10, 10), np.int64)
    pred[0, :] = 9  # not a class
    c = BoundaryErrorCounter(2)
    c.update(pred, gt)
    m = c.metrics()
    assert m["Acc-0"] == pytest.approx(0.9) and m["IoU-0"] == pytest.approx(0.9)


# ---------------------------------------------------------------------------------------------
# Boundary IoU (Cheng et al.)
# ---------------------------------------------------------------------------------------------
def test_boundary_iou_width_rounding():
    assert boundary_iou_width(1024, 2048, 0.02) == 46
    assert boundary_iou_width(1024, 2048, 0.005) == 11
    assert boundary_iou_width(480, 640, 0.02) == 16
    assert boundary_iou_width(5, 5, 0.02) == 1  # max(1, .)


def test_boundary_iou_identical_and_shift():
    m = np.zeros((50, 50), np.uint8)
    m[10:30, 10:30] = 1
    assert boundary_iou(m, m) == 1.0
    # d = round(0.02 * sqrt(5000)) = round(1.414) = 1: boundary = 1-px inner ring
    b = mask_to_boundary(m)
    assert b.sum() == 20 * 4 - 4
    # shift by 1 px to the right: rings of 76 px each, hand-counted overlap
    s = np.zeros_like(m)
    s[10:30, 11:31] = 1
    # ring A: rows 10,29 cols 10..29 ; cols 10,29 rows 10..29
    # ring B: rows 10,29 cols 11..30 ; cols 11,30 rows 10..29
    # common: rows 10 and 29, cols 11..29 (19 each) = 38; col 29 rows 11..28 in A (col 29) is not
    # a column of B's ring and B's col 11 rows 11..28 not in A -> intersection 38
    inter, union = 38, 76 + 76 - 38
    assert boundary_iou(m, s) == pytest.approx(inter / union)


def test_mask_touching_border_is_boundary():
    m = np.ones((10, 10), np.uint8)
    b = mask_to_boundary(m, dilation_ratio=0.1)  # d = round(1.414) = 1
    assert b.sum() == 36 and b[1:-1, 1:-1].sum() == 0


def test_label_inner_boundary_equals_per_class_reference():
    rng = np.random.default_rng(5)
    for d in (1, 3):
        lab = blobby_map(rng, 31, 45, 4, ignore_frac=0.01)
        fast = label_inner_boundary(lab, d)
        ref = np.zeros_like(fast)
        for c in np.unique(lab):
            m = (lab == c).astype(np.uint8)
            padded = cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
            er = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:-1, 1:-1]
            ref |= (m - er).astype(bool)
        assert np.array_equal(fast, ref)


def test_boundary_iou_counter_matches_per_class_formula():
    rng = np.random.default_rng(7)
    K = 3
    counter = BoundaryIoUCounter(K, dilation_ratio=0.05)
    inter, union = np.zeros(K), np.zeros(K)
    for h, w in [(40, 50), (30, 61)]:
        g = blobby_map(rng, h, w, K, ignore_frac=0.05)
        p = blobby_map(rng, h, w, K)
        counter.update(p, g)
        v = g != 255
        for c in range(K):
            bg = mask_to_boundary(g == c, 0.05).astype(bool)
            bp = mask_to_boundary(p == c, 0.05).astype(bool)
            inter[c] += np.sum(bg & bp & v)
            union[c] += np.sum((bg | bp) & v)
    m = counter.metrics()
    for c in range(K):
        assert m[f"BoundaryIoU-{c}"] == pytest.approx(inter[c] / union[c])
    assert m["mBoundaryIoU"] == pytest.approx(np.mean(inter / union))
