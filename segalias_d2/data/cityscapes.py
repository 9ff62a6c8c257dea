"""Cityscapes semantic segmentation: labelId -> trainId table, conversion, and a loader.

The table follows the public Cityscapes label definition (19 evaluated classes, everything else
255 = ignore). :func:`load_cityscapes_sem_seg` only needs ``*_leftImg8bit.png`` images and the
``*_gtFine_labelTrainIds.png`` maps (unlike Detectron2's loader, no polygons JSON is required).
"""

import logging
import os

import numpy as np
from detectron2.utils.file_io import PathManager
from PIL import Image

from .lowlight import DatasetNotFoundError

__all__ = [
    "CITYSCAPES_STUFF_CLASSES",
    "CITYSCAPES_STUFF_COLORS",
    "LABEL_ID_TO_TRAIN_ID",
    "IGNORE_LABEL",
    "label_ids_to_train_ids",
    "convert_label_id_files",
    "load_cityscapes_sem_seg",
]

logger = logging.getLogger(__name__)
IGNORE_LABEL = 255

# (labelId, name, trainId)
_LABELS = [
    (0, "unlabeled", 255),
    (1, "ego vehicle", 255),
    (2, "rectification border", 255),
    (3, "out of roi", 255),
    (4, "static", 255),
    (5, "dynamic", 255),
    (6, "ground", 255),
    (7, "road", 0),
    (8, "sidewalk", 1),
    (9, "parking", 255),
    (10, "rail track", 255),
    (11, "building", 2),
    (12, "wall", 3),
    (13, "fence", 4),
    (14, "guard rail", 255),
    (15, "bridge", 255),
    (16, "tunnel", 255),
    (17, "pole", 5),
    (18, "polegroup", 255),
    (19, "traffic light", 6),
    (20, "traffic sign", 7),
    (21, "vegetation", 8),
    (22, "terrain", 9),
    (23, "sky", 10),
    (24, "person", 11),
    (25, "rider", 12),
    (26, "car", 13),
    (27, "truck", 14),
    (28, "bus", 15),
    (29, "caravan", 255),
    (30, "trailer", 255),
    (31, "train", 16),
    (32, "motorcycle", 17),
    (33, "bicycle", 18),
]
LABEL_ID_TO_TRAIN_ID = {lid: tid for lid, _, tid in _LABELS}
CITYSCAPES_STUFF_CLASSES = [
    name for _, name, tid in sorted(_LABELS, key=lambda t: t[2]) if tid != 255
]
CITYSCAPES_STUFF_COLORS = [
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
]
assert len(CITYSCAPES_STUFF_CLASSES) == 19

_LUT = np.full(256, IGNORE_LABEL, dtype=np.uint8)
for _lid, _tid in LABEL_ID_TO_TRAIN_ID.items():
    _LUT[_lid] = _tid


def label_ids_to_train_ids(label_ids):
    """Map a labelIds array (uint8) to trainIds (uint8, 255 = ignore) with a lookup table."""
    arr = np.asarray(label_ids)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)  # labelId -1 (license plate) and >255 -> ignore
    return _LUT[arr]


def convert_label_id_files(gt_root, overwrite=False):
    """Write ``*_gtFine_labelTrainIds.png`` next to every ``*_gtFine_labelIds.png`` under
    ``gt_root``.

    Returns (written, skipped). Existing outputs are kept unless ``overwrite``.
    """

    written = skipped = 0
    for dirpath, _, files in os.walk(gt_root):
        for fn in sorted(files):
            if not fn.endswith("_gtFine_labelIds.png"):
                continue
            src = os.path.join(dirpath, fn)
            dst = src.replace("_gtFine_labelIds.png", "_gtFine_labelTrainIds.png")
            if os.path.exists(dst) and not overwrite:
                skipped += 1
                continue
            ids = np.array(Image.open(src))
            Image.fromarray(label_ids_to_train_ids(ids)).save(dst)
            written += 1
    return written, skipped


def load_cityscapes_sem_seg(
    image_dir, gt_dir, image_format="srgb", image_suffix="_leftImg8bit.png"
):
    """Records ``{file_name, sem_seg_file_name, height, width, image_format}`` for
    ``image_dir/<city>/*<image_suffix>`` with ``gt_dir/<city>/*_gtFine_labelTrainIds.png``."""

    records, missing = [], []
    for city in sorted(PathManager.ls(image_dir)):
        city_dir = os.path.join(image_dir, city)
        if not PathManager.isdir(city_dir):
            continue
        for fn in sorted(PathManager.ls(city_dir)):
            if not fn.endswith(image_suffix):
                continue
            stem = fn[: -len(image_suffix)]
            label = os.path.join(gt_dir, city, stem + "_gtFine_labelTrainIds.png")
            if not PathManager.exists(label):
                missing.append(label)
                continue
            image = os.path.join(city_dir, fn)
            with PathManager.open(image, "rb") as f:
                w, h = Image.open(f).size
            records.append(
                {
                    "file_name": image,
                    "sem_seg_file_name": label,
                    "height": h,
                    "width": w,
                    "image_format": image_format,
                }
            )
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} labelTrainIds map(s) missing under '{gt_dir}', e.g. {missing[:3]}; "
            "run `python datasets/prepare_cityscapes_sem_seg.py` to create them from the labelIds "
            "maps"
        )
    if not records:
        raise DatasetNotFoundError(f"no '*{image_suffix}' images found under '{image_dir}/<city>/'")
    return records
