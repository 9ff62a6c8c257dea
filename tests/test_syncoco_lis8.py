"""coco_2017_*_lis8: COCO restricted to the 8 LIS classes, mapped by name onto the true LIS ids."""

import json

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from segalias_d2.data.builtin import register_coco_lis8
from segalias_d2.data.lowlight import LIS_CLASSES


def test_coco_lis8_maps_by_name_and_drops_other_classes(tmp_path):
    root = tmp_path
    (root / "coco" / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "coco" / f"{split}2017").mkdir()
        Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(
            root / "coco" / f"{split}2017" / "1.jpg"
        )
        cats = [
            {"id": 1, "name": "person"},
            {"id": 3, "name": "car"},
            {"id": 4, "name": "motorcycle"},
            {"id": 67, "name": "dining table"},
            {"id": 72, "name": "tv"},
        ]
        anns = [
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": c,
                "bbox": [5, 5, 20, 20],
                "area": 400,
                "iscrowd": 0,
                "segmentation": [[5, 5, 25, 5, 25, 25, 5, 25]],
            }
            for i, c in enumerate([1, 3, 4, 67, 72])
        ]
        with open(root / "coco" / "annotations" / f"instances_{split}2017.json", "w") as f:
            json.dump(
                {
                    "images": [{"id": 1, "file_name": "1.jpg", "height": 40, "width": 60}],
                    "categories": cats,
                    "annotations": anns,
                },
                f,
            )
    for name in ("coco_2017_train_lis8", "coco_2017_val_lis8"):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    register_coco_lis8(str(root))
    dicts = DatasetCatalog.get("coco_2017_train_lis8")
    labels = sorted(a["category_id"] for a in dicts[0]["annotations"])
    # true LIS ids (issue #23): car 1, motorbike 2, diningtable 6, tvmonitor 7; person dropped
    assert labels == [1, 2, 6, 7]
    assert MetadataCatalog.get("coco_2017_train_lis8").thing_dataset_id_to_contiguous_id == {
        3: 1,
        4: 2,
        67: 6,
        72: 7,
    }
    assert list(MetadataCatalog.get("coco_2017_train_lis8").thing_classes) == list(LIS_CLASSES)
