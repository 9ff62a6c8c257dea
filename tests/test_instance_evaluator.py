"""InstanceBoundaryEvaluator: AP parity with pycocotools, Boundary AP, semantic projection
errors."""

import contextlib
import copy
import io
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segalias_d2.evaluation import BoundaryErrorCounter, InstanceBoundaryEvaluator, boundary_iou
from segalias_d2.evaluation.coco_evaluation import BoundaryCOCOeval
from segalias_d2.evaluation.instance_evaluation import (
    annotations_to_label_map,
    instances_to_label_map,
    segmentation_to_mask,
)

H, W = 60, 80
DATASET_IDS = [3, 7]  # non-contiguous dataset ids -> contiguous 0, 1
CLASSES = ["person", "car"]


def _rect_poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _build_coco_json():
    rng = np.random.default_rng(0)
    images, anns = [], []
    aid = 1
    for img_id in (11, 12, 13):
        images.append({"id": img_id, "width": W, "height": H, "file_name": f"im{img_id}.jpg"})
        for k in range(3):
            x0, y0 = int(rng.integers(0, 50)), int(rng.integers(0, 30))
            x1, y1 = x0 + int(rng.integers(8, 28)), y0 + int(rng.integers(8, 28))
            cat = DATASET_IDS[k % 2]
            if k == 2:  # RLE annotation
                m = np.zeros((H, W), np.uint8)
                m[y0:y1, x0:x1] = 1
                m[y0 : y0 + 3, x0 : x0 + 3] = 0
                rle = mask_util.encode(np.asfortranarray(m))
                segm = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
                area = float(m.sum())
                bbox = [float(x) for x in mask_util.toBbox(rle)]
            else:
                segm = _rect_poly(x0, y0, x1, y1)
                area = float((x1 - x0) * (y1 - y0))
                bbox = [x0, y0, x1 - x0, y1 - y0]
            anns.append(
                {
                    "id": aid,
                    "image_id": img_id,
                    "category_id": cat,
                    "segmentation": segm,
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
            aid += 1
    # one crowd region on image 13
    m = np.zeros((H, W), np.uint8)
    m[45:58, 60:78] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    anns.append(
        {
            "id": aid,
            "image_id": 13,
            "category_id": 3,
            "iscrowd": 1,
            "area": float(m.sum()),
            "bbox": [60, 45, 18, 13],
            "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")},
        }
    )
    cats = [{"id": i, "name": n} for i, n in zip(DATASET_IDS, CLASSES)]
    return {"images": images, "annotations": anns, "categories": cats}


def _dicts_from_json(js):
    d2c = {d: i for i, d in enumerate(DATASET_IDS)}
    out = []
    for im in js["images"]:
        anns = []
        for a in js["annotations"]:
            if a["image_id"] == im["id"]:
                anns.append(
                    {
                        "bbox": a["bbox"],
                        "bbox_mode": BoxMode.XYWH_ABS,
                        "category_id": d2c[a["category_id"]],
                        "segmentation": a["segmentation"],
                        "iscrowd": a["iscrowd"],
                    }
                )
        out.append(
            {
                "file_name": im["file_name"],
                "image_id": im["id"],
                "height": H,
                "width": W,
                "annotations": anns,
            }
        )
    return out


def _make_predictions(dicts, seed=1):
    """Perturbed GT instances + a false positive per image, as Detectron2 Instances."""
    rng = np.random.default_rng(seed)
    outs = []
    for d in dicts:
        masks, classes, scores = [], [], []
        for a in d["annotations"]:
            if a["iscrowd"]:
                continue
            m = np.zeros((H, W), bool)
            x, y, w, h = a["bbox"]
            dx, dy = rng.integers(-2, 3, 2)
            m[max(0, int(y) + dy) : int(y + h) + dy, max(0, int(x) + dx) : int(x + w) + dx] = True
            masks.append(m)
            classes.append(a["category_id"])
            scores.append(float(rng.uniform(0.3, 1.0)))
        fp = np.zeros((H, W), bool)
        fp[2:12, 60:75] = True
        masks.append(fp)
        classes.append(1)
        scores.append(0.55)
        inst = Instances((H, W))
        mt = torch.as_tensor(np.stack(masks))
        boxes = []
        for m in masks:
            yy, xx = np.nonzero(m)
            boxes.append([xx.min(), yy.min(), xx.max() + 1, yy.max() + 1])
        inst.pred_masks = mt
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.scores = torch.tensor(scores)
        inst.pred_classes = torch.tensor(classes)
        outs.append({"instances": inst})
    return outs


def _to_coco_results(dicts, outs):
    res = []
    for d, o in zip(dicts, outs):
        inst = o["instances"]
        for k in range(len(inst)):
            m = inst.pred_masks[k].numpy().astype(np.uint8)
            rle = mask_util.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode("ascii")
            x0, y0, x1, y1 = inst.pred_boxes.tensor[k].tolist()
            res.append(
                {
                    "image_id": d["image_id"],
                    "category_id": DATASET_IDS[int(inst.pred_classes[k])],
                    "score": float(inst.scores[k]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "segmentation": rle,
                }
            )
    return res


def _pycocotools_stats(json_path, results, iou_type, cls=COCOeval):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_path)
        dts = copy.deepcopy(results)
        if iou_type == "segm":
            for r in dts:
                r.pop("bbox")
        dt = gt.loadRes(dts)
        ev = cls(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:6] * 100


@pytest.fixture(params=["json_file", "in_memory"])
def inst_dataset(request, tmp_path):
    js = _build_coco_json()
    jp = tmp_path / "gt.json"
    jp.write_text(json.dumps(js))
    dicts = _dicts_from_json(js)
    name = f"_segalias_test_inst_{request.param}_{os.getpid()}"
    DatasetCatalog.register(name, lambda: dicts)
    meta = dict(
        thing_classes=CLASSES,
        thing_dataset_id_to_contiguous_id={d: i for i, d in enumerate(DATASET_IDS)},
        evaluator_type="coco",
    )
    if request.param == "json_file":
        meta["json_file"] = str(jp)
    MetadataCatalog.get(name).set(**meta)
    yield name, dicts, str(jp)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_ap_equals_pycocotools(inst_dataset, tmp_path):
    name, dicts, jp = inst_dataset
    outs = _make_predictions(dicts)
    ev = InstanceBoundaryEvaluator(
        name, distributed=False, output_dir=str(tmp_path / "o"), score_thresh=0.5
    )
    ev.reset()
    for d, o in zip(dicts, outs):
        ev.process([{"image_id": d["image_id"], "file_name": d["file_name"]}], [o])
    res = ev.evaluate()
    assert set(res) == {"bbox", "segm", "boundary_ap", "boundary_errors"}
    results = _to_coco_results(dicts, outs)
    for task in ("bbox", "segm"):
        ref = _pycocotools_stats(jp, results, task)
        got = [res[task][k] for k in ["AP", "AP50", "AP75", "APs", "APm", "APl"]]
        np.testing.assert_allclose(got, np.where(ref >= 0, ref, np.nan), rtol=0, atol=1e-9)
        assert "AP-person" in res[task] and "AP-car" in res[task]
    assert (tmp_path / "o" / "coco_instances_results.json").exists()
    assert (tmp_path / "o" / "boundary_errors_instances.json").exists()
    # Boundary AP can only be <= mask-based matching quality: with min(mask, boundary) IoU
    assert res["boundary_ap"]["AP"] <= res["segm"]["AP"] + 1e-9


def test_boundary_ap_perfect_predictions(inst_dataset):
    name, dicts, jp = inst_dataset
    ev = InstanceBoundaryEvaluator(name, distributed=False)
    ev.reset()
    for d in dicts:
        anns = [a for a in d["annotations"] if not a["iscrowd"]]

        masks = np.stack([segmentation_to_mask(a["segmentation"], H, W) for a in anns])
        inst = Instances((H, W))
        inst.pred_masks = torch.as_tensor(masks)
        # smaller objects score higher, so both projections resolve overlaps the same way
        areas = masks.reshape(len(anns), -1).sum(1)
        inst.scores = torch.tensor(
            0.6 + 0.3 * (areas.max() - areas) / max(1, np.ptp(areas)), dtype=torch.float32
        )
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns])
        ev.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    res = ev.evaluate()
    assert res["segm"]["AP"] == pytest.approx(100.0)
    assert res["boundary_ap"]["AP"] == pytest.approx(100.0)
    # identical GT and prediction projections (crowd ignored) -> no boundary errors
    assert res["boundary_errors"]["FErr"] == pytest.approx(0.0)
    assert res["boundary_errors"]["mIoU"] == pytest.approx(100.0)


def test_boundary_cocoeval_iou_is_min_of_mask_and_boundary_iou(tmp_path):
    g = np.zeros((H, W), np.uint8)
    g[10:40, 10:50] = 1
    d = np.zeros((H, W), np.uint8)
    d[12:42, 13:53] = 1
    rle_g = mask_util.encode(np.asfortranarray(g))
    rle_g["counts"] = rle_g["counts"].decode("ascii")
    js = {
        "images": [{"id": 1, "width": W, "height": H}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": rle_g,
                "area": float(g.sum()),
                "bbox": [10, 10, 40, 30],
                "iscrowd": 0,
            }
        ],
    }
    jp = tmp_path / "g.json"
    jp.write_text(json.dumps(js))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(jp))
        rle_d = mask_util.encode(np.asfortranarray(d))
        rle_d["counts"] = rle_d["counts"].decode("ascii")
        dt = gt.loadRes([{"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": rle_d}])
        ev = BoundaryCOCOeval(gt, dt, "segm", dilation_ratio=0.02)
        ev.params.imgIds = [1]
        ev._prepare()
    iou = ev.computeIoU(1, 1)
    mask_iou = (g & d).sum() / (g | d).sum()
    b_iou = boundary_iou(g, d, 0.02)
    assert b_iou < mask_iou
    assert float(iou[0, 0]) == pytest.approx(min(mask_iou, b_iou))


def test_semantic_projection_order():
    a = np.zeros((4, 6), bool)
    a[:, :4] = True
    b = np.zeros((4, 6), bool)
    b[:, 2:] = True
    c = np.zeros((4, 6), bool)
    c[0, :] = True
    lab = instances_to_label_map(
        [a, b, c], [0, 1, 0], [0.9, 0.6, 0.3], 4, 6, score_thresh=0.5, background=2
    )
    expect = np.array([[0, 0, 0, 0, 1, 1]] * 4)  # a (0.9) over b (0.6); c below threshold
    assert np.array_equal(lab, expect)
    lab2 = instances_to_label_map([a, b], [0, 1], [0.6, 0.9], 4, 6, score_thresh=0.5, background=2)
    assert np.array_equal(lab2, np.array([[0, 0, 1, 1, 1, 1]] * 4))
    empty = instances_to_label_map([], [], [], 4, 6, background=2)
    assert (empty == 2).all()
    # GT: crowd -> ignore, smaller object wins
    anns = [
        {"segmentation": _rect_poly(0, 0, 6, 4), "category_id": 0, "iscrowd": 0},
        {"segmentation": _rect_poly(0, 0, 2, 2), "category_id": 1, "iscrowd": 0},
        {"segmentation": _rect_poly(4, 2, 6, 4), "category_id": 0, "iscrowd": 1},
    ]
    g = annotations_to_label_map(anns, 4, 6, background=2, ignore_label=255)
    expect_g = np.zeros((4, 6), int)
    expect_g[:2, :2] = 1
    assert np.array_equal(g, expect_g)  # crowd overwritten by the non-crowd instance covering it
    g2 = annotations_to_label_map(anns[1:], 4, 6, background=2, ignore_label=255)
    assert g2[3, 5] == 255 and g2[0, 0] == 1 and g2[3, 0] == 2


def test_boundary_errors_equal_counter_on_projections(inst_dataset):
    name, dicts, jp = inst_dataset
    outs = _make_predictions(dicts, seed=4)
    ev = InstanceBoundaryEvaluator(name, distributed=False, score_thresh=0.5, band_width=7)
    ev.reset()
    ref = BoundaryErrorCounter(3, 255, 7)
    for d, o in zip(dicts, outs):
        ev.process([{"image_id": d["image_id"]}], [o])
        inst = o["instances"]
        pm = instances_to_label_map(
            inst.pred_masks.numpy(),
            inst.pred_classes.numpy(),
            inst.scores.numpy(),
            H,
            W,
            0.5,
            background=2,
        )
        gm = annotations_to_label_map(d["annotations"], H, W, background=2)
        ref.update(pm, gm)
    res = ev.evaluate()["boundary_errors"]
    exp = ref.metrics(CLASSES + ["background"])
    assert res == pytest.approx({k: 100 * v for k, v in exp.items()}, nan_ok=True)
    assert "BIoU-background" in res


def test_size_mismatch_error(inst_dataset):
    name, dicts, jp = inst_dataset
    ev = InstanceBoundaryEvaluator(name, distributed=False)
    ev.reset()
    inst = Instances((H + 1, W))
    inst.pred_masks = torch.zeros(0, H + 1, W, dtype=torch.bool)
    inst.scores = torch.zeros(0)
    inst.pred_classes = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="differs from the dataset size"):
        ev.process([{"image_id": dicts[0]["image_id"]}], [{"instances": inst}])
