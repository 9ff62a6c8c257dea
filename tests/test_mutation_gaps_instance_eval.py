"""Instance evaluators against numbers computed by hand (issue 17).

* Boundary AP with three instances and a false positive, one matched by mask IoU (0.82) but never by
  boundary IoU (1/3), one whose boundary IoU (2/3) keeps it only up to threshold 0.65; AP from
  COCO's 101-point rule by hand.
* Two simulated processes (comm.gather / all_gather patched) give the one-pass numbers of the
  instance evaluator (box, mask, Boundary AP, boundary errors).
* The instance boundary errors of a hand-made projection (score order, threshold, crowd = ignore,
  smaller GT wins).
"""

import json
import os

import numpy as np
import pytest
from eval_case_helpers import (
    box,
    inner_boundary_by_hand,
    instance_record,
    instances,
    register,
    rle_annotation,
    simulate_two_ranks,
    unregister,
)

from segalias_d2.evaluation import InstanceBoundaryEvaluator

# ------------------------------------------------------------------------------ Boundary AP by hand
# Boundary AP band: d = max(1, round(0.02 * sqrt(40^2 + 40^2))) = 1 px, the 1-px inner ring of a box
H = W = 40
GT_BOXES = [((5, 14), (5, 14)), ((20, 35), (20, 35)), ((2, 9), (25, 36))]  # (rows, cols), inclusive
# detections by score: exact copy of GT 2; GT 1 shifted right by 1 px (mask IoU 90/110, boundary IoU
# 18/54); a false positive; GT 3 one column narrower (mask IoU 88/96, boundary IoU 28/42)
PRED_BOXES = [
    (((20, 35), (20, 35)), 0.9),
    (((5, 14), (6, 15)), 0.8),
    (((24, 30), (2, 10)), 0.7),
    (((2, 9), (25, 35)), 0.6),
]


def _ap101(tp_flags, n_gt=3):
    """COCO AP at one IoU threshold: precision made monotone, read at recall 0, 0.01, ..., 1 (0 past
    the last)."""
    tp = np.cumsum(tp_flags)
    fp = np.cumsum(1 - np.asarray(tp_flags))
    recall, precision = tp / n_gt, tp / (tp + fp)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    values = []
    for r in np.linspace(0, 1, 101):
        idx = np.flatnonzero(recall >= r)
        values.append(precision[idx[0]] if idx.size else 0.0)
    return float(np.mean(values))


def _hand_ap(iou_of_pred1, iou_of_pred3):
    """AP over thresholds 0.5:0.05:0.95, detections [copy, pred 1, false positive, pred 3]."""
    per_t = [
        _ap101([1, int(iou_of_pred1 >= t), 0, int(iou_of_pred3 >= t)])
        for t in np.linspace(0.5, 0.95, 10)
    ]
    return 100 * np.mean(per_t), 100 * per_t[0], 100 * per_t[5]


@pytest.fixture
def boundary_ap_dataset(tmp_path):
    masks = [box(H, W, r, c) for r, c in GT_BOXES]
    images, anns = [], []
    for img_id in (1, 2):  # two identical images: one for each simulated rank
        images.append({"id": img_id, "width": W, "height": H, "file_name": f"im{img_id}.png"})
        for m in masks:
            a = rle_annotation(m, 1)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "area": float(m.sum()),
                    "bbox": a["bbox"],
                    "segmentation": a["segmentation"],
                }
            )
    js = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(js))
    records = [
        instance_record(i, H, W, [dict(rle_annotation(m, 0)) for m in masks]) for i in (1, 2)
    ]
    name = register(
        f"_segalias_bap_{os.getpid()}_{tmp_path.name}",
        records,
        thing_classes=["thing"],
        thing_dataset_id_to_contiguous_id={1: 0},
        json_file=str(path),
        evaluator_type="coco",
    )
    yield name, records
    unregister(name)


def _ap_predictions():
    masks = [box(H, W, r, c) for (r, c), _ in PRED_BOXES]
    return instances(H, W, masks, [0] * len(masks), [s for _, s in PRED_BOXES])


def test_hand_computed_ious_of_the_boundary_ap_case():
    g1, g3 = box(H, W, *GT_BOXES[0]), box(H, W, *GT_BOXES[2])
    p1, p3 = box(H, W, *PRED_BOXES[1][0]), box(H, W, *PRED_BOXES[3][0])
    for g, p, mask_iou, boundary in ((g1, p1, 90 / 110, 18 / 54), (g3, p3, 88 / 96, 28 / 42)):
        assert (g & p).sum() / (g | p).sum() == pytest.approx(mask_iou)
        bg, bp = inner_boundary_by_hand(g), inner_boundary_by_hand(p)
        assert (bg & bp).sum() / (bg | bp).sum() == pytest.approx(boundary)
    # the 101-point rule on paper: all matched = 1; [TP, TP, FP, TP] = (67 points at 1 + 34 at 3/4)
    # / 101
    assert _ap101([1, 1, 1]) == pytest.approx(1.0) and _ap101([1, 1, 0, 1]) == pytest.approx(
        92.5 / 101
    )


def test_boundary_ap_of_several_instances_by_hand(boundary_ap_dataset):
    name, records = boundary_ap_dataset
    ev = InstanceBoundaryEvaluator(name, distributed=False)
    ev.reset()
    ev.process([{"image_id": 1, "file_name": "im1.png"}], [_ap_predictions()])
    ev.process([{"image_id": 2, "file_name": "im2.png"}], [_ap_predictions()])
    res = ev.evaluate()
    mask_ap = _hand_ap(90 / 110, 88 / 96)  # matched up to 0.80 / 0.90
    boundary_ap = _hand_ap(min(90 / 110, 18 / 54), min(88 / 96, 28 / 42))  # never / up to 0.65
    assert mask_ap == pytest.approx(
        (
            100 * (7 * 92.5 / 101 + 2 * 50.5 / 101 + 34 / 101) / 10,
            100 * 92.5 / 101,
            100 * 92.5 / 101,
        )
    )  # the same numbers, written as fractions of 101 points
    assert boundary_ap == pytest.approx(
        (100 * (4 * 50.5 / 101 + 6 * 34 / 101) / 10, 100 * 50.5 / 101, 100 * 34 / 101)
    )
    for task, expected in (("segm", mask_ap), ("bbox", mask_ap), ("boundary_ap", boundary_ap)):
        got = (res[task]["AP"], res[task]["AP50"], res[task]["AP75"])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=task)
        assert res[task]["APs"] == pytest.approx(expected[0])  # all objects are small (< 32^2 px)
        assert np.isnan(res[task]["APm"]) and np.isnan(res[task]["APl"])


def _fewer_predictions():
    """Image 2 of the merge test: only the first two detections (its numbers differ from image
    1's)."""
    masks = [box(H, W, r, c) for (r, c), _ in PRED_BOXES[:2]]
    return instances(H, W, masks, [0, 0], [s for _, s in PRED_BOXES[:2]])


def _evaluate(name, per_image):
    ev = InstanceBoundaryEvaluator(name, distributed=False)
    ev.reset()
    for img_id, preds in per_image:
        ev.process([{"image_id": img_id}], [preds])
    return ev.evaluate()


def test_instance_evaluator_merges_two_processes_into_the_one_pass_numbers(
    boundary_ap_dataset, monkeypatch
):
    name, records = boundary_ap_dataset
    per_image = {1: _ap_predictions(), 2: _fewer_predictions()}
    one_pass = _evaluate(name, sorted(per_image.items()))
    image_1_only = _evaluate(name, [(1, per_image[1])])
    ranks = [InstanceBoundaryEvaluator(name, distributed=True) for _ in range(2)]
    for ev, img_id in zip(ranks, (2, 1)):
        ev.reset()
        ev.process([{"image_id": img_id}], [per_image[img_id]])
    merged = simulate_two_ranks(
        monkeypatch,
        ranks,
        lambda r: r._evaluators[0]._predictions,
        lambda r: r._evaluators[1]._counter,
    )
    assert set(merged) == {"bbox", "segm", "boundary_ap", "boundary_errors"}
    for task in merged:
        assert merged[task] == pytest.approx(one_pass[task], nan_ok=True), task
        assert merged[task] != pytest.approx(image_1_only[task], nan_ok=True), (
            task
        )  # both ranks count
    assert (
        ranks[0]._evaluators[1]._counter.num_images == 1
    )  # the merge did not touch rank 0's own counter


# ---------------------------------------------------------------- instance boundary errors, by hand
def test_instance_boundary_errors_of_a_hand_made_projection():
    """8x8 image, classes a, b (+ background). Every band covers the whole image, so the regions are
    all pixels.

    GT: a = rows 0-7 x cols 0-5, b = rows 2-5 x cols 2-3 (smaller: wins), a crowd at rows 0-1 x cols
    6-7 (ignored).
    Predictions: a rows 0-7 x cols 0-6 (0.9) hides b rows 2-5 x cols 1-3 (0.6, pasted first); b rows
    6-7 x cols 0-1 (0.95) is pasted last; b column 7 (0.3) is under the 0.5 threshold.
    """
    anns = [
        rle_annotation(box(8, 8, (0, 7), (0, 5)), 0),
        rle_annotation(box(8, 8, (2, 5), (2, 3)), 1),
        rle_annotation(box(8, 8, (0, 1), (6, 7)), 0, iscrowd=1),
    ]
    record = instance_record(5, 8, 8, anns)
    name = register(
        f"_segalias_proj_{os.getpid()}", [record], thing_classes=["a", "b"], evaluator_type="coco"
    )
    try:
        ev = InstanceBoundaryEvaluator(name, distributed=False)
        errors = ev._evaluators[1]
        errors.reset()
        preds = instances(
            8,
            8,
            [
                box(8, 8, (0, 7), (0, 6)),
                box(8, 8, (2, 5), (1, 3)),
                box(8, 8, (6, 7), (0, 1)),
                box(8, 8, (0, 7), (7, 7)),
            ],
            [0, 1, 1, 1],
            [0.9, 0.6, 0.95, 0.3],
        )
        errors.process([record], [preds])
        res = errors.evaluate()["boundary_errors"]
    finally:
        unregister(name)
    # over the 60 valid pixels: GT a 40 (36 predicted a, 4 predicted b), GT b 8 (all predicted a),
    # GT background 12 (6 predicted a in column 6, 6 background in column 7)
    iou = [36 / (50 + 40 - 36), 0 / (4 + 8), 6 / (6 + 12 - 6)]
    acc = [36 / 40, 0 / 8, 6 / 12]
    for key, value in (
        ("mIoU", np.mean(iou)),
        ("mAcc", np.mean(acc)),
        ("aAcc", 42 / 60),
        ("BIoU", np.mean(iou)),
        ("BAcc", np.mean(acc)),
        ("FErr", 1 - np.mean(acc)),
        ("MErr", 1 - np.mean(acc)),
        ("DErr", 1 - np.mean(acc)),
        ("IoU-a", iou[0]),
        ("IoU-background", iou[2]),
        ("Acc-b", 0.0),
    ):
        assert res[key] == pytest.approx(100 * value, abs=1e-9), key
