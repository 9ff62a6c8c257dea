"""COCOBoundaryEvaluator on a dataset whose COCO JSON has more categories than the dataset's
classes.

Hand-made 3-category JSON (car, person, dog) registered with ``register_lowlight_dataset`` keeping
car and person by name (``unknown_category="skip"``, as ``coco_2017_val_lis8`` keeps 8 of COCO's
80): box/mask/Boundary AP must equal pycocotools on the 2-category JSON, and per-class AP must carry
the right names whatever the order of ``thing_classes``.
"""

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
from detectron2.structures import BitMasks, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segalias_d2.data import register_lowlight_dataset
from segalias_d2.evaluation import InstanceBoundaryEvaluator
from segalias_d2.evaluation.coco_evaluation import BoundaryCOCOeval

H, W = 60, 80
CATEGORIES = [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}, {"id": 3, "name": "dog"}]
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def _three_category_json():
    rng = np.random.default_rng(3)
    images, anns = [], []
    for img_id in (1, 2, 3, 4):
        images.append({"id": img_id, "width": W, "height": H, "file_name": f"im{img_id}.png"})
        for cat in (1, 2, 3, 1):
            x0, y0 = int(rng.integers(0, 55)), int(rng.integers(0, 35))
            w, h = int(rng.integers(6, 25)), int(rng.integers(6, 25))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": cat,
                    "iscrowd": 0,
                    "bbox": [x0, y0, w, h],
                    "area": float(w * h),
                    "segmentation": [[x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]],
                }
            )
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


def _predictions(js):
    """Per image: shifted GT masks of car (poor: large shift) and person (good), one false car."""
    rng = np.random.default_rng(4)
    outs = {}
    for im in js["images"]:
        masks, classes, scores = [], [], []
        for a in js["annotations"]:
            if a["image_id"] != im["id"] or a["category_id"] == 3:
                continue
            x, y, w, h = a["bbox"]
            s = 4 if a["category_id"] == 1 else 1
            dx, dy = rng.integers(-s, s + 1, 2)
            m = np.zeros((H, W), bool)
            m[max(0, y + dy) : y + h + dy, max(0, x + dx) : x + w + dx] = True
            masks.append(m)
            classes.append(a["category_id"])  # dataset id, mapped to contiguous below
            scores.append(float(rng.uniform(0.4, 1.0)))
        fp = np.zeros((H, W), bool)
        fp[40:55, 5:20] = True
        masks.append(fp)
        classes.append(1)
        scores.append(0.7)
        outs[im["id"]] = (np.stack(masks), classes, scores)
    return outs


def _results_json(outs):
    res = []
    for img_id, (masks, classes, scores) in outs.items():
        for m, c, s in zip(masks, classes, scores):
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            bbox = [float(v) for v in mask_util.toBbox(rle)]
            res.append(
                {
                    "image_id": img_id,
                    "category_id": c,
                    "score": s,
                    "bbox": bbox,
                    "segmentation": rle,
                }
            )
    return res


def _pycocotools(gt_json_path, results, iou_type, cat_ids=None, cls=COCOeval):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json_path)
        dts = copy.deepcopy(results)
        if iou_type != "bbox":
            for r in dts:
                r.pop("bbox")
        ev = cls(gt, gt.loadRes(dts), "segm" if iou_type == "boundary" else iou_type)
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.where(ev.stats[:6] >= 0, ev.stats[:6] * 100, np.nan)


@pytest.fixture(
    params=[["car", "person"], ["person", "car"]],
    ids=["ids_in_class_order", "ids_not_in_class_order"],
)
def filtered_dataset(request, tmp_path):
    js = _three_category_json()
    full = tmp_path / "three_categories.json"
    full.write_text(json.dumps(js))
    two = dict(
        js,
        categories=CATEGORIES[:2],
        annotations=[a for a in js["annotations"] if a["category_id"] != 3],
    )
    two_path = tmp_path / "two_categories.json"
    two_path.write_text(json.dumps(two))
    (tmp_path / "images").mkdir()
    name = f"_segalias_filtered_{os.getpid()}_{request.param[0]}"
    register_lowlight_dataset(
        name,
        str(full),
        str(tmp_path / "images"),
        thing_classes=request.param,
        unknown_category="skip",
        image_checks="none",
    )  # ground truth only: no image files
    yield name, js, str(full), str(two_path)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_filtered_dataset_ap_equals_the_dataset_classes_only(filtered_dataset, tmp_path):
    name, js, full_path, two_path = filtered_dataset
    ev = InstanceBoundaryEvaluator(name, distributed=False, output_dir=str(tmp_path / "out"))
    d2c = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
    assert set(d2c) == {1, 2}
    outs = _predictions(js)
    ev.reset()
    for img_id, (masks, classes, scores) in outs.items():
        inst = Instances((H, W))
        inst.pred_masks = torch.as_tensor(masks)
        inst.pred_boxes = BitMasks(inst.pred_masks).get_bounding_boxes()
        inst.scores = torch.tensor(scores)
        inst.pred_classes = torch.tensor([d2c[c] for c in classes])
        ev.process([{"image_id": img_id, "file_name": f"im{img_id}.png"}], [{"instances": inst}])
    res = ev.evaluate()
    results = _results_json(outs)
    for task, cls in (("bbox", COCOeval), ("segm", COCOeval), ("boundary", BoundaryCOCOeval)):
        key = "boundary_ap" if task == "boundary" else task
        expect = _pycocotools(two_path, results, task, cls=cls)
        got = [res[key][m] for m in METRICS]
        np.testing.assert_allclose(got, expect, rtol=0, atol=1e-9, err_msg=key)
        # evaluated on all 3 JSON categories, dog (GT, no possible prediction) would add an AP of 0
        diluted = _pycocotools(full_path, results, task, cls=cls)
        assert expect[0] > 0 and diluted[0] == pytest.approx(expect[0] * 2 / 3, abs=1e-9)
        assert {k for k in res[key] if k.startswith("AP-")} == {"AP-car", "AP-person"}
        for cat_id, cname in ((1, "car"), (2, "person")):
            per_class = _pycocotools(two_path, results, task, cat_ids=[cat_id], cls=cls)[0]
            assert res[key][f"AP-{cname}"] == pytest.approx(per_class, abs=1e-9), (key, cname)
    assert (
        res["segm"]["AP-car"] < res["segm"]["AP-person"] - 1.0
    )  # the two names cannot be swapped unseen


def test_mask_only_predictions_report_no_box_ap(filtered_dataset):
    name, js, _, two_path = filtered_dataset
    ev = InstanceBoundaryEvaluator(name, distributed=False)
    d2c = MetadataCatalog.get(
        name
    ).thing_dataset_id_to_contiguous_id  # recorded by the dataset's first load
    ev.reset()
    outs = _predictions(js)
    for img_id, (masks, classes, scores) in outs.items():
        inst = Instances((H, W))
        inst.pred_masks = torch.as_tensor(masks)
        inst.scores = torch.tensor(scores)
        inst.pred_classes = torch.tensor([d2c[c] for c in classes])
        ev.process([{"image_id": img_id}], [{"instances": inst}])
    res = ev.evaluate()
    assert set(res) == {"segm", "boundary_ap", "boundary_errors"}
    expect = _pycocotools(two_path, _results_json(outs), "segm")
    np.testing.assert_allclose([res["segm"][m] for m in METRICS], expect, rtol=0, atol=1e-9)
