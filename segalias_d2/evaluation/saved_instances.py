"""Saved COCO-format instance results scored by the in-training instance evaluators (see
:mod:`.saved_predictions`).

AP: :class:`~.coco_evaluation.COCOBoundaryEvaluator` gets the file's detections (category ids mapped
back to the contiguous ids, the form its ``process`` stores) and runs its own ``evaluate``, so box /
mask / Boundary AP, the class restriction and the per-class names are the evaluator's. Boundary
errors: :class:`~.instance_evaluation.InstanceBoundaryErrorEvaluator` gets one ``Instances`` per
dataset image (masks decoded from the RLEs, scores, classes) through its ``process``.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from typing import List

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances

from .coco_evaluation import COCOBoundaryEvaluator
from .instance_evaluation import InstanceBoundaryErrorEvaluator
from .saved_predictions import PredictionFileError

__all__ = ["evaluate_saved_instances"]


class _SavedResultsCOCOEvaluator(COCOBoundaryEvaluator):
    """``COCOBoundaryEvaluator`` fed with saved detections instead of model outputs."""

    def set_saved_predictions(self, predictions):
        self._predictions = (
            predictions  # the list Detectron2's process() builds: {image_id, instances: [...]}
        )


def _rle(segm, size, where):
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):  # uncompressed RLE
        return mask_util.frPyObjects(segm, *size)
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        rle = dict(segm)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
        return rle
    if isinstance(segm, list):  # polygons
        return mask_util.merge(mask_util.frPyObjects(segm, *size))
    raise ValueError(
        f"{where}: unsupported segmentation {type(segm).__name__} (RLE or polygons expected)"
    )


def evaluate_saved_instances(
    results: List[dict],
    source: str,
    dataset_name: str,
    *,
    score_thresh: float = 0.5,
    band_width: int = 15,
    dilation_ratio: float = 0.02,
) -> "OrderedDict[str, dict]":

    records = DatasetCatalog.get(dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    classes = meta.get("thing_classes", None)
    if not classes or not records or "annotations" not in records[0]:
        raise PredictionFileError(
            f"dataset '{dataset_name}' is not an instance dataset (needs thing_classes and "
            "records with annotations)"
        )
    d2c = meta.get("thing_dataset_id_to_contiguous_id", None) or {i: i for i in range(len(classes))}
    sizes = {
        r.get("image_id", i): (int(r["height"]), int(r["width"])) for i, r in enumerate(records)
    }
    by_image = defaultdict(list)
    has_segm = any("segmentation" in r for r in results)
    for i, r in enumerate(results):
        where = f"results file {source}: entry {i} (image_id {r['image_id']})"
        if r["image_id"] not in sizes:
            raise PredictionFileError(
                f"{where}: image_id is not an image of dataset '{dataset_name}' "
                f"({len(sizes)} images, e.g. ids {sorted(sizes, key=str)[:5]})"
            )
        if r["category_id"] not in d2c:
            raise PredictionFileError(
                f"{where}: category_id {r['category_id']} is not a category of dataset "
                f"'{dataset_name}' (ids {sorted(d2c)})"
            )
        if has_segm and "segmentation" not in r:
            raise PredictionFileError(f"{where}: has no segmentation while other entries have one")
        if has_segm:
            h, w = sizes[r["image_id"]]
            try:
                rle = _rle(r["segmentation"], (h, w), where)
            except (ValueError, TypeError) as e:
                raise PredictionFileError(str(e)) from e
            if tuple(rle["size"]) != (h, w):
                raise PredictionFileError(
                    f"{where}: mask size {tuple(rle['size'])} (HxW) differs from the dataset's "
                    f"image size {(h, w)}"
                )
        by_image[r["image_id"]].append(dict(r, category_id=d2c[r["category_id"]]))

    coco = _SavedResultsCOCOEvaluator(
        dataset_name, distributed=False, output_dir=None, dilation_ratio=dilation_ratio
    )
    coco.reset()
    boxes_from_masks = any("bbox" not in r for r in results)
    coco.set_saved_predictions(
        [
            # copies: Detectron2 rewrites the category ids of these dicts in place
            dict(
                {"image_id": image_id, "instances": [dict(d) for d in by_image.get(image_id, [])]},
                **({"boxes_from_masks": True} if boxes_from_masks else {}),
            )
            for image_id in sizes
        ]
    )
    out = OrderedDict(coco.evaluate() or {})
    if has_segm:
        errors = InstanceBoundaryErrorEvaluator(
            dataset_name,
            distributed=False,
            output_dir=None,
            score_thresh=score_thresh,
            band_width=band_width,
        )
        errors.reset()
        for image_id, (h, w) in sizes.items():
            dets = by_image.get(image_id, [])
            inst = Instances((h, w))
            masks = [mask_util.decode(_rle(d["segmentation"], (h, w), source)) for d in dets]
            inst.pred_masks = torch.as_tensor(
                np.stack(masks).astype(bool) if masks else np.zeros((0, h, w), bool)
            )
            inst.scores = torch.tensor([d["score"] for d in dets], dtype=torch.float32)
            inst.pred_classes = torch.tensor([d["category_id"] for d in dets], dtype=torch.int64)
            errors.process(
                [{"image_id": image_id, "file_name": f"{source} image {image_id}"}],
                [{"instances": inst}],
            )
        out.update(errors.evaluate() or {})
    return out
