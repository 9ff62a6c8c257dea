"""Semantic evaluators against numbers computed by hand, not against the package's own counter
(issue 17).

* The worked example of seg_aliasing_method.md §5.5 (64x200, boundary displaced by 4 px) through
  BoundaryErrorSemSegEvaluator.process/evaluate, the instance evaluator's semantic projection and
  the error maps, all at their DEFAULT band width and through build_segalias_evaluator's config
  default: its numbers depend on the 15x15 band (17x17 gives BIoU 9/13, not 8/12).
* A two-image semantic case (ignore labels, a class never predicted, dataset-level accumulation)
  whose bands cover every pixel, and its Cheng et al. Boundary IoU from the definition
  (detectron2_style.md §4), counted pixel by pixel.
* Two simulated processes (comm.gather / all_gather patched) give the one-pass semantic Boundary
  IoU.
Boundary AP and the instance boundary errors by hand: tests/test_mutation_gaps_instance_eval.py.
"""

import os

import numpy as np
import pytest
from detectron2.config import get_cfg
from eval_case_helpers import (
    box,
    inner_boundary_by_hand,
    instance_record,
    instances,
    register,
    rle_annotation,
    scores,
    simulate_two_ranks,
    unregister,
)
from PIL import Image

from segalias_d2.config import add_segalias_config
from segalias_d2.evaluation import (
    BoundaryErrorSemSegEvaluator,
    BoundaryIoUEvaluator,
    InstanceBoundaryEvaluator,
    build_segalias_evaluator,
    compute_error_maps,
)
from segalias_d2.evaluation.boundary_errors import BoundaryErrorCounter
from segalias_d2.evaluation.error_maps import image_error_metrics


def _default_cfg():
    cfg = get_cfg()
    add_segalias_config(cfg)
    return cfg


# ------------------------------------------------------------------------ the worked example (§5.5)
def _worked_example():
    gt = np.zeros((64, 200), np.uint8)
    gt[:, 100:] = 1
    pred = np.zeros((64, 200), np.uint8)
    pred[:, 104:] = 1
    return pred, gt


#: §5.5 by hand, in percent (per row: GT band 92..107, predicted band 96..111, wrong pixels
#: 100..103)
WORKED = {
    "BIoU": 100 * 8 / 12,
    "BAcc": 100 * (1 + 8 / 12) / 2,
    "FErr": 100 * (1 - (1 + 8 / 12) / 2),
    "MErr": 25.0,
    "DErr": 25.0,
    "mIoU": 100 * (100 / 104 + 96 / 100) / 2,
    "aAcc": 100 * 196 / 200,
    "BaAcc": 100 * 16 / 20,
    "FErr_a": 100 * 4 / 16,
    "MErr_a": 100 * 4 / 16,
    "DErr_a": 100 * 4 / 12,
}


@pytest.fixture
def worked_semseg(tmp_path):
    pred, gt = _worked_example()
    Image.fromarray(gt).save(tmp_path / "gt.png")
    record = {
        "file_name": "worked.png",
        "sem_seg_file_name": str(tmp_path / "gt.png"),
        "height": 64,
        "width": 200,
        "image_id": 0,
    }
    name = register(
        f"_segalias_worked_{os.getpid()}",
        [record],
        stuff_classes=["left", "right"],
        ignore_label=255,
        evaluator_type="sem_seg",
    )
    yield name, record, pred
    unregister(name)


def test_worked_example_through_the_semantic_evaluator_at_its_default_band(worked_semseg):
    name, record, pred = worked_semseg
    for ev in (
        BoundaryErrorSemSegEvaluator(name, distributed=False),
        build_segalias_evaluator(_default_cfg(), name, None),
    ):  # TEST.SEGALIAS.BOUNDARY_BAND_WIDTH default
        ev._distributed = False
        ev.reset()
        ev.process([record], [scores(pred, 2)])
        res = ev.evaluate()["boundary_errors"]
        for key, value in WORKED.items():
            assert res[key] == pytest.approx(value, abs=1e-9), key
        assert res["BIoU-left"] == pytest.approx(100 * 8 / 12) and res[
            "MErr-right"
        ] == pytest.approx(50.0)
        assert res["DErr-left"] == pytest.approx(0.0) and res["IoU-right"] == pytest.approx(96.0)


def test_band_from_a_separate_band_ground_truth():
    """band_gt (ADE20K: the raw labels) moves the GT band, the counted classes stay gt's.

    Worked example, band_gt's edge at column 150: per row the bands are 142..157 (band_gt) and
    96..111 (pred); class 0: GT 96..99, predicted 96..103 -> IoU 4/8, accuracy 1; class 1: GT
    100..111 + 142..157 (28 px), predicted 104..111 + 142..157 (24 px) -> IoU 24/28, accuracy 24/28.
    Whole-image mIoU unchanged."""
    pred, gt = _worked_example()
    band_gt = np.zeros_like(gt)
    band_gt[:, 150:] = 7  # raw label values need not be classes
    counter = BoundaryErrorCounter(2)
    counter.update(pred, gt, band_gt=band_gt)
    m = counter.metrics()
    assert m["BIoU"] == pytest.approx((4 / 8 + 24 / 28) / 2) and m["BAcc"] == pytest.approx(
        (1 + 24 / 28) / 2
    )
    assert m["mIoU"] == pytest.approx(WORKED["mIoU"] / 100)


def test_worked_example_error_maps_and_panel_numbers_at_the_default_band():
    pred, gt = _worked_example()
    m = compute_error_maps(pred, gt)
    assert np.array_equal(np.flatnonzero(m["gt_band"][0]), np.arange(92, 108))
    assert np.array_equal(np.flatnonzero(m["pred_band"][0]), np.arange(96, 112))
    assert np.array_equal(np.flatnonzero(m["displacement"][0]), np.arange(100, 104))
    panel = image_error_metrics(pred, gt, num_classes=2)
    for key in ("BIoU", "BAcc", "FErr", "MErr", "DErr", "mIoU"):
        assert panel[key] == pytest.approx(WORKED[key], abs=1e-9), key


@pytest.mark.parametrize("case", ["merging", "false_response"])
def test_error_maps_put_the_errors_within_7_px_of_an_edge_in_the_band(case):
    """A missed (or invented) half image: its first 8 columns from the edge are boundary errors, the
    rest interior."""
    half = np.zeros((64, 200), np.uint8)
    half[:, 100:] = 1
    flat = np.zeros((64, 200), np.uint8)
    pred, gt = (flat, half) if case == "merging" else (half, flat)
    m = compute_error_maps(pred, gt)
    assert np.array_equal(np.flatnonzero(m["wrong"][0]), np.arange(100, 200))
    assert np.array_equal(np.flatnonzero(m[case][0]), np.arange(100, 108))  # edge pixel 100 + 7
    assert m[case].sum() == 8 * 64 and m["displacement"].sum() == 0
    other = "false_response" if case == "merging" else "merging"
    assert m[other].sum() == 0
    code = 2 if case == "merging" else 1
    assert np.array_equal(np.flatnonzero(m["category"][0] == code), np.arange(100, 108))
    assert np.array_equal(np.flatnonzero(m["category"][0] == 4), np.arange(108, 200))


def test_worked_example_through_the_instance_projection_at_the_default_band():
    """One instance of class "a" covering columns 0..99 (GT) / 0..103 (prediction): the projection
    is the worked example with "a" | background."""
    gt_mask = box(64, 200, (0, 63), (0, 99))
    record = instance_record(1, 64, 200, [rle_annotation(gt_mask, 0)])
    name = register(
        f"_segalias_worked_inst_{os.getpid()}", [record], thing_classes=["a"], evaluator_type="coco"
    )
    try:
        pred = instances(64, 200, [box(64, 200, (0, 63), (0, 103))], [0], [0.9])
        for ev in (
            InstanceBoundaryEvaluator(name, distributed=False),
            build_segalias_evaluator(_default_cfg(), name, None),
        ):
            errors = [e for e in ev._evaluators if not hasattr(e, "_coco_api")][0]
            errors._distributed = False
            errors.reset()
            errors.process([record], [pred])
            res = errors.evaluate()["boundary_errors"]
            for key, value in WORKED.items():
                assert res[key] == pytest.approx(value, abs=1e-9), key
            assert res["BIoU-a"] == pytest.approx(100 * 8 / 12) and res[
                "MErr-background"
            ] == pytest.approx(50.0)
    finally:
        unregister(name)


# ----------------------------------------------------------- a hand-computed two-image semantic set
@pytest.fixture
def two_image_semseg(tmp_path):
    """8x8 images, so every band (+-7 px) covers the whole image once the map has an edge.

    image 1: GT class 0 | class 1 (columns 0-3 | 4-7), prediction all 0 (no edge: empty predicted
    band); image 2: GT class 2 under an ignored top row, prediction class 2 | class 1 (columns 0-3 |
    4-7)."""
    gt1 = np.zeros((8, 8), np.uint8)
    gt1[:, 4:] = 1
    pred1 = np.zeros((8, 8), np.uint8)
    gt2 = np.full((8, 8), 2, np.uint8)
    gt2[0] = 255
    pred2 = np.full((8, 8), 2, np.uint8)
    pred2[:, 4:] = 1
    records, preds = [], [pred1, pred2]
    for i, gt in enumerate((gt1, gt2)):
        Image.fromarray(gt).save(tmp_path / f"gt{i}.png")
        records.append(
            {
                "file_name": f"s{i}.png",
                "sem_seg_file_name": str(tmp_path / f"gt{i}.png"),
                "height": 8,
                "width": 8,
                "image_id": i,
            }
        )
    name = register(
        f"_segalias_two_{os.getpid()}_{tmp_path.name}",
        records,
        stuff_classes=["c0", "c1", "c2"],
        ignore_label=255,
        evaluator_type="sem_seg",
    )
    yield name, records, preds
    unregister(name)


def test_two_image_semantic_case_by_hand(two_image_semseg):
    name, records, preds = two_image_semseg
    ev = BoundaryErrorSemSegEvaluator(name, distributed=False)
    ev.reset()
    for r, p in zip(records, preds):
        ev.process([r], [scores(p, 3)])
    res = ev.evaluate()["boundary_errors"]
    # counts over both images (ignored row left out): I = [32, 0, 28], PRED = [64, 28, 28], GT =
    # [32, 32, 56]
    iou = [32 / 64, 0 / 60, 28 / 56]
    acc = [1.0, 0.0, 0.5]
    expected = {
        "mIoU": np.mean(iou),
        "mAcc": np.mean(acc),
        "aAcc": 60 / 120,
        "BIoU": np.mean(iou),
        "BAcc": np.mean(acc),
        "MErr": 1 - np.mean(acc),
        "MErr_a": 0.5,
        # predicted band: image 2 only (image 1's prediction has no edge), where only class 2 has GT
        "FErr": 1 - 0.5,
        "FErr_a": 0.5,
        "DErr": 1 - 0.5,
        "DErr_a": 0.5,
        "IoU-c1": 0.0,
        "Acc-c0": 1.0,
        "FErr-c2": 0.5,
    }
    for key, value in expected.items():
        assert res[key] == pytest.approx(100 * value, abs=1e-9), key
    assert np.isnan(res["FErr-c0"]) and np.isnan(
        res["DErr-c1"]
    )  # no GT of the class in that region
    # per-image means would give another mIoU (image 1: (1/2 + 0) / 2, image 2: (1/2 + 0) / 2 -> 25,
    # not 33.3)
    assert res["mIoU"] != pytest.approx(25.0)


def test_two_image_semantic_boundary_iou_from_the_definition(two_image_semseg):
    name, records, preds = two_image_semseg
    gts = [np.asarray(Image.open(r["sem_seg_file_name"])) for r in records]
    inter, union = np.zeros(3), np.zeros(3)
    for p, g in zip(preds, gts):  # d = max(1, round(0.02 * sqrt(8^2 + 8^2))) = 1
        valid = g != 255
        for c in range(3):
            bg, bp = inner_boundary_by_hand(g == c) & valid, inner_boundary_by_hand(p == c) & valid
            inter[c] += (bg & bp).sum()
            union[c] += (bg | bp).sum()
    assert inter.tolist() == [14, 0, 11] and union.tolist() == [34, 36, 31]  # counted on paper, too
    ev = BoundaryIoUEvaluator(name, distributed=False)
    ev.reset()
    for r, p in zip(records, preds):
        ev.process([r], [scores(p, 3)])
    res = ev.evaluate()["boundary_iou"]
    assert res["mBoundaryIoU"] == pytest.approx(100 * (14 / 34 + 0 + 11 / 31) / 3, abs=1e-9)
    assert res["BoundaryIoU-c0"] == pytest.approx(100 * 14 / 34) and res["BoundaryIoU-c1"] == 0.0


def test_boundary_iou_evaluator_merges_two_processes_into_the_one_pass_numbers(
    two_image_semseg, monkeypatch
):
    name, records, preds = two_image_semseg
    ranks = [BoundaryIoUEvaluator(name, distributed=True) for _ in range(2)]
    for ev, i in zip(ranks, (1, 0)):  # rank 0 got image 2, rank 1 image 1
        ev.reset()
        ev.process([records[i]], [scores(preds[i], 3)])
    merged = simulate_two_ranks(monkeypatch, ranks, None, lambda r: r._counter)["boundary_iou"]
    assert merged["mBoundaryIoU"] == pytest.approx(100 * (14 / 34 + 0 + 11 / 31) / 3, abs=1e-9)
    assert ranks[0]._counter.num_images == 1  # the merge did not touch rank 0's own counter
