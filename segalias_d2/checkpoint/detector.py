"""A COCO-80 Detectron2 Mask R-CNN checkpoint (model zoo ``.pkl``) -> the 8 LIS classes, for the
released LIS initialisation (SynCOCO->LIS, COCO->LIS start from a COCO-trained Mask R-CNN R50-FPN).

Detectron2's model-zoo ``.pkl`` is a pickle of ``{"model": {Detectron2 parameter name: numpy array},
"__author__": ...}`` that ``DetectionCheckpointer`` loads with exact names. Every tensor is kept
under its name; the three class layers are either dropped (``class_layers="reinit"``, the DEFAULT:
what the released MMDetection ``load_from`` does, it skips shape-mismatched layers, so they keep the
new model's initialisation) or, as the named variant ``class_layers="slice"``, reduced to their
class-specific rows picked BY TRUE CLASS (names matched with
``segalias_d2.data.lowlight.class_index_map``; COCO-80 ``thing_classes`` from Detectron2's builtin
metadata):

* ``roi_heads.box_predictor.cls_score``: (K + 1) rows, background LAST -> rows ``idx + [K]``;
* ``roi_heads.box_predictor.bbox_pred``: 4 K rows, class-specific (4 rows: class-agnostic, kept) ->
  rows ``4 idx + (0, 1, 2, 3)``;
* ``roi_heads.mask_head.predictor``: K rows (1: class-agnostic, kept) -> rows ``idx``.

For LIS (true order bicycle, car, motorbike, bus, bottle, chair, diningtable, tvmonitor) ``idx`` =
COCO-80 contiguous indices (1, 2, 3, 5, 39, 56, 60, 62). Slicing is a better start than the released
random layers, not what was released. FreqMix/DAF have no counterpart in the source; the loader
reports them as new.
"""

import logging
import os
from collections import OrderedDict

import numpy as np
import torch
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from ..data.lowlight import LIS_CLASSES, class_index_map
from .convert import read_checkpoint_file, save_d2_checkpoint

__all__ = [
    "coco_thing_classes",
    "class_rows",
    "convert_coco_detector",
    "convert_detector_file",
    "CLASS_LAYERS",
]

logger = logging.getLogger(__name__)

CLS_SCORE = "roi_heads.box_predictor.cls_score"
BBOX_PRED = "roi_heads.box_predictor.bbox_pred"
MASK_PRED = "roi_heads.mask_head.predictor"
CLASS_LAYERS = ("slice", "reinit")
# buffers Detectron2 no longer saves (non-persistent); old checkpoints may still carry them
_STALE = ("pixel_mean", "pixel_std")


def coco_thing_classes():
    """The 80 COCO thing classes in Detectron2's contiguous order
    (``builtin_meta.COCO_CATEGORIES``)."""
    return [c["name"] for c in COCO_CATEGORIES if c["isthing"] == 1]


def class_rows(src_classes, dst_classes):
    """For each class of ``dst_classes``, the index of the same class (by name, aliases applied) in
    ``src_classes``."""
    return [int(i) for i in class_index_map(dst_classes, src_classes, strict=True)]


def _rows(arr, rows, key):
    return np.ascontiguousarray(
        np.asarray(arr)[rows]
    ), f"{key}: rows {rows[:12]}{'...' if len(rows) > 12 else ''}"


def convert_coco_detector(
    obj, dst_classes=None, src_classes=None, class_layers="reinit", src="checkpoint"
):
    """Convert a loaded Detectron2 detector checkpoint. Returns ``(OrderedDict name -> numpy array,
    notes)``.

    Errors (``ValueError``) name ``src``, the key and the shape expected: not a Detectron2 R-CNN
    checkpoint, a class count other than ``len(src_classes)`` (e.g. an already converted 8-class
    model), class rows that are neither class-specific nor class-agnostic.
    """
    if class_layers not in CLASS_LAYERS:
        raise ValueError(f"class_layers must be one of {CLASS_LAYERS}, got {class_layers!r}")
    if dst_classes is None:
        dst_classes = LIS_CLASSES
    src_classes = list(src_classes) if src_classes is not None else coco_thing_classes()
    model = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(model, dict) or f"{CLS_SCORE}.weight" not in model:
        raise ValueError(
            f"{src}: no '{CLS_SCORE}.weight': not a Detectron2 Fast/Mask R-CNN checkpoint "
            "(ImageNet backbones: --format torchvision / mmcv_v1c / d2_pkl)"
        )
    if not any(k.startswith("backbone.bottom_up.") for k in model) or not any(
        k.startswith("backbone.fpn_") for k in model
    ):
        raise ValueError(
            f"{src}: expected a ResNet-FPN detector (backbone.bottom_up.* and backbone.fpn_* "
            "keys), as the segalias Mask R-CNN configs build"
        )
    k = len(src_classes)
    n_cls = np.asarray(model[f"{CLS_SCORE}.weight"]).shape[0]
    if n_cls != k + 1:
        hint = (
            f"; it already has {len(dst_classes)} classes: use it directly as MODEL.WEIGHTS"
            if n_cls == len(dst_classes) + 1
            else ""
        )
        raise ValueError(
            f"{src}: {CLS_SCORE}.weight has {n_cls} rows; expected {k + 1} "
            f"({k} source classes + background){hint}"
        )
    idx = class_rows(src_classes, dst_classes)
    plans = {
        CLS_SCORE: (k + 1, idx + [k], None),
        BBOX_PRED: (4 * k, [4 * i + j for i in idx for j in range(4)], 4),
        MASK_PRED: (k, idx, 1),
    }
    out, notes = OrderedDict(), []
    for name, value in model.items():
        if name in _STALE or ".cell_anchors." in name:
            notes.append(f"dropped {name} (not a saved tensor in Detectron2 >= 0.6)")
            continue
        layer = name.rsplit(".", 1)[0]
        if layer not in plans:
            out[name] = np.asarray(value)
            continue
        rows_expected, rows, agnostic = plans[layer]
        n = np.asarray(value).shape[0]
        if agnostic is not None and n == agnostic:
            out[name] = np.asarray(value)
            notes.append(f"{name}: class-agnostic ({n} rows), kept")
            continue
        if n != rows_expected:
            raise ValueError(
                f"{src}: {name} has {n} rows; expected {rows_expected} for {k} classes"
                + (f" (or {agnostic}, class-agnostic)" if agnostic else "")
            )
        if class_layers == "reinit":
            notes.append(
                f"dropped {name} (class_layers='reinit': keeps the new model's initialisation)"
            )
            continue
        out[name], note = _rows(value, rows, name)
        notes.append(note)
    return out, notes


def convert_detector_file(src, dst, class_layers="reinit", dst_classes=None):
    """Read a Detectron2 detector ``.pkl``/``.pth``, convert it to ``dst_classes`` (default LIS),
    write ``dst``."""
    obj = read_checkpoint_file(src)
    sd, notes = convert_coco_detector(
        obj, dst_classes=dst_classes, class_layers=class_layers, src=str(src)
    )
    for n in notes:
        logger.info("%s", n)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tensors = OrderedDict((k, torch.as_tensor(v)) for k, v in sd.items())
    save_d2_checkpoint(
        tensors,
        dst,
        prefix="",
        author=f"segalias_d2 convert_pretrained (d2_coco_detector, "
        f"class_layers={class_layers}) from {os.path.basename(str(src))}",
    )
    logger.info("Wrote %d tensors to %s", len(tensors), dst)
    return sd
