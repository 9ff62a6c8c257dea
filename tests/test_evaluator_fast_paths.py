"""The evaluators' fast paths: CPU argmax (evaluation/label_argmax.py) against ``torch.argmax``
itself, and the uint8 histogram path of ``BoundaryErrorCounter.update`` against its integer path
(int32 maps) and hand counts."""

import numpy as np
import pytest
import torch

from segalias_d2.evaluation.boundary_errors import BoundaryErrorCounter
from segalias_d2.evaluation.label_argmax import argmax_uint8_cpu
from segalias_d2.evaluation.sem_seg_evaluation import prediction_to_label_map


def _ref(x):
    return x.argmax(0).to(torch.uint8).numpy()


@pytest.mark.parametrize("shape", [(19, 300, 301), (1, 7, 5), (3, 1, 1), (256, 3, 70)])
def test_equals_torch_argmax_with_ties(shape):
    g = torch.Generator().manual_seed(0)
    # small integers as floats: many exact ties, where the first maximal class must win
    x = torch.randint(0, 4, shape, generator=g).float()
    assert np.array_equal(argmax_uint8_cpu(x), _ref(x))
    y = torch.randn(shape, generator=g, dtype=torch.float64)
    assert np.array_equal(argmax_uint8_cpu(y), _ref(y))


def test_signed_zeros_and_non_contiguous():
    x = torch.zeros(4, 90, 800)
    x[1] = -0.0
    x[3, :, ::2] = 1.0
    assert np.array_equal(argmax_uint8_cpu(x), _ref(x))  # 0.0 vs -0.0 is a tie: class 0
    hwc = torch.randn(90, 800, 6, generator=torch.Generator().manual_seed(1))
    chw = hwc.permute(2, 0, 1)  # (C, H, W) view with channel stride 1
    assert not chw.is_contiguous()
    assert np.array_equal(argmax_uint8_cpu(chw), _ref(chw))
    sliced = torch.randn(5, 90, 1600)[:, :, ::2]
    assert np.array_equal(argmax_uint8_cpu(sliced), _ref(sliced))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [(0, 0, 0), (2, 89, 799), (1, 40, 3)])
def test_non_finite_anywhere_is_refused(value, where):
    x = torch.randn(3, 90, 800, generator=torch.Generator().manual_seed(2))
    x[where] = value
    assert argmax_uint8_cpu(x) is None
    with pytest.raises(FloatingPointError, match="1 of 72000 pixels"):
        prediction_to_label_map({"sem_seg": x}, 3, "img.png")


def test_not_applicable_falls_back():
    assert argmax_uint8_cpu(torch.randn(3, 4, 5).half()) is None
    assert argmax_uint8_cpu(torch.zeros(3, 0, 5)) is None
    assert argmax_uint8_cpu(torch.randn(257, 2, 2)) is None
    ints = torch.randint(0, 9, (3, 4, 5))
    assert np.array_equal(prediction_to_label_map({"sem_seg": ints}, 3), _ref(ints))
    # no num_classes: int64 labels, as before
    x = torch.randn(3, 4, 5)
    assert prediction_to_label_map({"sem_seg": x}).dtype == np.int64


@pytest.mark.parametrize("K,ignore", [(19, 255), (3, 0), (5, -1), (63, 255), (1, 255)])
def test_uint8_counts_equal_integer_path(K, ignore):
    rng = np.random.default_rng(K)
    gt = np.kron(rng.integers(0, K, (5, 7)), np.ones((9, 11), np.int64)).astype(
        np.uint8
    )  # 45 x 77 blocks
    if ignore >= 0:
        gt[rng.random(gt.shape) < 0.05] = ignore
    pred = rng.integers(0, K + 3, gt.shape).astype(np.uint8)  # includes labels >= K (column K)
    pred[rng.random(gt.shape) < 0.5] = 0
    for band_gt in (None, (gt + 1).astype(np.uint8)):
        fast, slow = BoundaryErrorCounter(K, ignore), BoundaryErrorCounter(K, ignore)
        got = fast.update(pred, gt, band_gt=band_gt)
        want = slow.update(
            pred.astype(np.int32),
            gt.astype(np.int32),
            band_gt=None if band_gt is None else band_gt.astype(np.int32),
        )
        assert got.dtype == np.int64 and np.array_equal(got, want)
        assert np.array_equal(fast.confusion, slow.confusion) and fast.num_images == 1


def test_uint8_counts_by_hand():
    # 1 x 4 map, band width 1 (bands = edges): gt [0, 0, 255, 1], pred [0, 5, 1, 1], K = 2
    gt = np.array([[0, 0, 255, 1]], np.uint8)
    pred = np.array([[0, 5, 1, 1]], np.uint8)
    counts = BoundaryErrorCounter(2, 255, band_width=1).update(pred, gt)
    # pred edges: |0-5|,.. Laplacian of [0,5,1,1] (reflect-101): [10, -9, 4, 0] -> [1, 1, 1, 0]
    # gt edges: [0, 0, 255, 1] -> [0, 255, -509, 254] -> [0, 1, 1, 1]; code = 2*pred + gt = [2, 3,
    # 3, 1]
    want = np.zeros((4, 3, 3), np.int64)
    want[2, 0, 0] = 1  # gt 0, pred 0
    want[3, 0, 2] = 1  # gt 0, pred 5 -> column K
    want[3, 2, 1] = 1  # ignore -> row K
    want[1, 1, 1] = 1
    assert np.array_equal(counts, want)
    with pytest.raises(ValueError, match=r"labels \[7\] outside \[0, 2\)"):
        BoundaryErrorCounter(2).update(pred, np.array([[0, 7, 1, 1]], np.uint8), name="x")
