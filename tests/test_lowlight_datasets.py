"""Dataset registration, class mapping by name, built-in names, missing-data errors, Cityscapes
ids."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.structures import Instances
from PIL import Image

import segalias_d2  # noqa: F401  (registers the builtin datasets)
from segalias_d2.data import (
    LIS_CLASSES,
    class_index_map,
    register_lowlight_dataset,
    remap_instances,
)
from segalias_d2.data.cityscapes import CITYSCAPES_STUFF_CLASSES, label_ids_to_train_ids
from segalias_d2.data.lowlight import DatasetNotFoundError, canonical_class_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _unregister(name):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def make_coco(tmp_path, categories, annotations, size=(40, 60)):

    h, w = size
    (tmp_path / "JPEGImages").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / "JPEGImages" / "2.png"), np.full((h, w, 3), 4000, np.uint16))
    data = {
        "images": [{"id": 1, "file_name": "./JPEGImages/2.png", "height": h, "width": w}],
        "annotations": [
            dict(a, id=i + 1, image_id=1, iscrowd=0) for i, a in enumerate(annotations)
        ],
        "categories": categories,
    }
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(data))
    return str(p), str(tmp_path)


def _poly(x0, y0, x1, y1):
    return {
        "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": (x1 - x0) * (y1 - y0),
    }


def test_register_maps_categories_by_name(tmp_path):
    # JSON uses COCO names and COCO ids, in a different order than LIS
    cats = [
        {"id": 4, "name": "motorcycle"},
        {"id": 67, "name": "dining table"},
        {"id": 72, "name": "tv"},
        {"id": 2, "name": "bicycle"},
    ]
    anns = [dict(_poly(1, 1, 10, 10), category_id=4), dict(_poly(5, 5, 20, 20), category_id=72)]
    json_file, root = make_coco(tmp_path, cats, anns)
    name = "test_lowlight_by_name"
    _unregister(name)
    register_lowlight_dataset(
        name,
        json_file,
        root,
        image_format="raw_rgb",
        thing_classes=LIS_CLASSES,
        exposure_ratio=4.0,
        black_level=0,
        white_level=65535,
    )
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == LIS_CLASSES and meta.evaluator_type == "coco"
    assert meta.image_format == "raw_rgb" and meta.json_file == json_file
    assert meta.levels == {"black": 0, "white": 65535} and meta.exposure_ratio == 4.0
    dicts = DatasetCatalog.get(name)
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [
        2,
        7,
    ]  # true LIS ids of motorbike, tvmonitor
    assert dicts[0]["image_format"] == "raw_rgb" and dicts[0]["exposure_ratio"] == 4.0
    assert meta.thing_dataset_id_to_contiguous_id == {4: 2, 67: 6, 72: 7, 2: 0}
    # integer coordinates become floats (Detectron2 transforms would truncate int arrays in place)
    a0 = dicts[0]["annotations"][0]
    assert all(isinstance(v, float) for v in a0["bbox"] + a0["segmentation"][0])
    _unregister(name)


def test_class_index_map_coco_to_lis():

    coco = [c["name"] for c in COCO_CATEGORIES if c["isthing"]]
    m = class_index_map(coco, LIS_CLASSES)
    # true LIS ids: bicycle 0, car 1, motorbike 2, bus 3, bottle 4, chair 5, diningtable 6,
    # tvmonitor 7
    for coco_name, lis_id in [
        ("motorcycle", 2),
        ("dining table", 6),
        ("tv", 7),
        ("bicycle", 0),
        ("bus", 3),
        ("car", 1),
        ("chair", 5),
        ("bottle", 4),
    ]:
        assert m[coco.index(coco_name)] == lis_id
    assert (m >= 0).sum() == 8 and m[coco.index("person")] == -1
    with pytest.raises(ValueError):
        class_index_map(["person"], LIS_CLASSES, strict=True)
    assert canonical_class_name("TV/Monitor") == "tvmonitor"


def test_remap_instances():

    inst = Instances((10, 10))
    inst.pred_classes = torch.tensor(
        [0, 3, 62, 2]
    )  # person, motorcycle, tv, car (COCO-80 contiguous)
    inst.scores = torch.tensor([0.9, 0.8, 0.7, 0.6])

    coco = [c["name"] for c in COCO_CATEGORIES if c["isthing"]]
    out = remap_instances(inst, class_index_map(coco, LIS_CLASSES))
    assert out.pred_classes.tolist() == [2, 7, 1] and out.scores.tolist() == pytest.approx(
        [0.8, 0.7, 0.6]
    )


def test_builtin_names_and_metadata():
    names = DatasetCatalog.list()
    for mod in ("raw_dark", "raw_normal", "srgb_dark", "srgb_normal"):
        for split in ("train", "test"):
            assert f"lis_{mod}_{split}" in names and f"lis_demo_{mod}_{split}" in names
        assert (
            f"lis_{mod}_traintest" in names
        )  # the whole of LIS (LIS README's recommended test set)
    for mod, ann in (
        ("raw_dark", "png_traintest+1"),
        ("raw_normal", "png_traintest"),
        ("srgb_dark", "JPG_traintest+1"),
        ("srgb_normal", "png_traintest"),
    ):
        m = MetadataCatalog.get(f"lis_{mod}_traintest")
        assert m.json_file.endswith(os.path.join("LIS", "annotations", f"lis_coco_{ann}.json"))
        assert (
            m.thing_classes == LIS_CLASSES
            and m.image_root == MetadataCatalog.get(f"lis_{mod}_test").image_root
        )
    assert MetadataCatalog.get("lis_raw_dark_test").json_file.endswith("lis_coco_png_test+1.json")
    assert MetadataCatalog.get("lis_srgb_dark_train").json_file.endswith(
        "lis_coco_JPG_train+1.json"
    )
    assert MetadataCatalog.get("lis_raw_normal_test").json_file.endswith("lis_coco_png_test.json")
    assert MetadataCatalog.get("lis_raw_dark_test").image_root.endswith(
        os.path.join("LIS", "RAW-dark")
    )
    for split in ("train", "val"):
        m = MetadataCatalog.get(f"segalias_cityscapes_sem_seg_{split}")
        assert (
            m.evaluator_type == "sem_seg" and len(m.stuff_classes) == 19 and m.ignore_label == 255
        )
        assert (
            f"cityscapes_demo_sem_seg_{split}" in names
            and f"cityscapes_demo_sem_seg_dark_{split}" in names
        )
    assert "cityscapes_fine_sem_seg_train" in names  # Detectron2's own registration is untouched


def test_missing_dataset_raises_at_first_use(tmp_path):
    name = "test_lowlight_missing"
    _unregister(name)
    register_lowlight_dataset(
        name, str(tmp_path / "nope.json"), str(tmp_path / "nodir")
    )  # no error yet
    with pytest.raises(DatasetNotFoundError) as e:
        DatasetCatalog.get(name)
    msg = str(e.value)
    assert "nope.json" in msg and "nodir" in msg and "DETECTRON2_DATASETS" in msg
    _unregister(name)


def test_cityscapes_label_table_and_prepare_script(tmp_path):

    ids = np.array([[7, 8, 26, 27, 33, 0, 1, 9, 255]], np.uint8)
    assert label_ids_to_train_ids(ids).tolist() == [[0, 1, 13, 14, 18, 255, 255, 255, 255]]
    assert CITYSCAPES_STUFF_CLASSES[13] == "car" and CITYSCAPES_STUFF_CLASSES[14] == "truck"
    gt = tmp_path / "gtFine" / "train" / "aachen"
    gt.mkdir(parents=True)
    Image.fromarray(np.array([[7, 26], [24, 0]], np.uint8)).save(
        gt / "aachen_000000_000019_gtFine_labelIds.png"
    )
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "datasets", "prepare_cityscapes_sem_seg.py"),
            "--root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    train_ids = np.array(Image.open(gt / "aachen_000000_000019_gtFine_labelTrainIds.png"))
    assert train_ids.tolist() == [[0, 13], [11, 255]]
