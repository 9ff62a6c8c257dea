"""LowLightDatasetMapper is a Detectron2 DatasetMapper: instance annotations go through Detectron2's
_transform_annotations (recompute_boxes from the masks after a crop, crowd filtering), plus our
guard for records whose instances have no masks. Expected boxes are computed by hand."""

import numpy as np
import pytest
from common import segalias_cfg
from detectron2.data import DatasetMapper
from detectron2.structures import BoxMode
from PIL import Image

from segalias_d2.data.dataset_mapper import LowLightDatasetMapper

BOX = [0.0, 0.0, 59.0, 39.0]  # loose box (XYXY) around the triangle below
TRIANGLE = [[10.0, 5.0, 30.0, 5.0, 10.0, 25.0]]  # tight box: (10, 5, 30, 25)


@pytest.fixture
def record(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(path)
    return {
        "file_name": str(path),
        "height": 40,
        "width": 60,
        "image_id": 0,
        "annotations": [
            {
                "bbox": BOX,
                "bbox_mode": BoxMode.XYXY_ABS,
                "segmentation": TRIANGLE,
                "category_id": 1,
                "iscrowd": 0,
            }
        ],
    }


def _mapper(crop):
    cfg = segalias_cfg(
        {
            "MODEL.MASK_ON": True,
            "INPUT.MIN_SIZE_TRAIN": (40,),  # the 40x60 image keeps its size
            "INPUT.RANDOM_FLIP": "none",
            "INPUT.CROP.ENABLED": crop,
            "INPUT.CROP.TYPE": "relative_range",
            "INPUT.CROP.SIZE": [
                1.0,
                1.0,
            ],  # a crop of the whole image: only recompute_boxes changes the boxes
        }
    )
    return LowLightDatasetMapper(cfg, is_train=True)


def test_is_a_detectron2_dataset_mapper():
    m = _mapper(crop=True)
    assert (
        isinstance(m, DatasetMapper)
        and m.recompute_boxes
        and m.use_instance_mask
        and not m.use_keypoint
    )


def test_boxes_recomputed_from_masks_after_crop(record):
    out = _mapper(crop=True)(record)
    assert out["instances"].gt_boxes.tensor.tolist() == [[10.0, 5.0, 30.0, 25.0]]
    out = _mapper(crop=False)(record)
    assert out["instances"].gt_boxes.tensor.tolist() == [BOX]


def test_record_without_masks_keeps_its_boxes_under_recompute(record):
    # Detectron2's own _transform_annotations fails here (no gt_masks to recompute from)
    del record["annotations"][0]["segmentation"]
    m = _mapper(crop=True)
    out = m(record)
    assert out["instances"].gt_boxes.tensor.tolist() == [BOX] and not out["instances"].has(
        "gt_masks"
    )
    assert m.recompute_boxes  # the flag is restored for the next record


def test_crowd_only_record_gives_empty_instances(record):
    record["annotations"][0]["iscrowd"] = 1
    out = _mapper(crop=True)(record)
    assert len(out["instances"]) == 0
