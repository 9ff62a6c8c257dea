"""Instance segmentation: box/mask AP, Boundary AP and boundary error types in one evaluator.

:class:`InstanceBoundaryEvaluator` is a ``DatasetEvaluators`` of

* :class:`~.coco_evaluation.COCOBoundaryEvaluator` -- Detectron2's ``COCOEvaluator`` (tasks
  ``"bbox"``, ``"segm"``) plus Boundary AP (task ``"boundary_ap"``), and
* :class:`InstanceBoundaryErrorEvaluator` -- the boundary error types of the *semantic projection*
  of the instances (task ``"boundary_errors"``), and returns::

    {"bbox":            {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>" ...},
     "segm":            {same keys},
     "boundary_ap":     {same keys},
     "boundary_errors": {"mIoU", "BIoU", "BAcc", "FErr", "MErr", "DErr", ... per class}}

Semantic projection (:func:`instances_to_label_map`, :func:`annotations_to_label_map`):
predictions with score >= ``score_thresh`` are pasted in ascending score order (higher scores
win), non-crowd GT instances in descending area order (smaller objects win), crowd GT regions
become ignore, uncovered pixels are the extra class ``"background"``.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Optional

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.utils.file_io import PathManager

from .boundary_errors import BoundaryErrorCounter
from .coco_evaluation import COCOBoundaryEvaluator
from .evaluator_utils import dump_json, gather_counter

__all__ = [
    "InstanceBoundaryEvaluator",
    "InstanceBoundaryErrorEvaluator",
    "instances_to_label_map",
    "annotations_to_label_map",
    "segmentation_to_mask",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# semantic projection
# --------------------------------------------------------------------------------------------
def segmentation_to_mask(segm, height: int, width: int, what: str = "annotation") -> np.ndarray:
    """Polygon list, uncompressed RLE or compressed RLE -> bool H x W mask."""
    if isinstance(segm, list):
        if len(segm) == 0:
            return np.zeros((height, width), bool)
        polys = [np.asarray(p, dtype=np.float64).ravel().tolist() for p in segm]
        polys = [p for p in polys if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), bool)
        rle = mask_util.merge(mask_util.frPyObjects(polys, height, width))
    elif isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):
            rle = mask_util.frPyObjects(segm, height, width)
        else:
            rle = dict(segm)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        if tuple(rle["size"]) != (height, width):
            raise ValueError(
                f"{what}: RLE size {tuple(rle['size'])} differs from image size {(height, width)}"
            )
    elif isinstance(segm, np.ndarray):
        if segm.shape != (height, width):
            raise ValueError(
                f"{what}: mask shape {segm.shape} differs from image size {(height, width)}"
            )
        return segm.astype(bool)
    else:
        raise ValueError(
            f"{what}: unsupported segmentation of type {type(segm).__name__} (polygons or RLE "
            "expected)"
        )
    return mask_util.decode(rle).astype(bool)


def instances_to_label_map(
    masks,
    classes,
    scores,
    height: int,
    width: int,
    score_thresh: float = 0.5,
    background: int = None,
) -> np.ndarray:
    """Semantic projection of predicted instances.

    Instances with ``score >= score_thresh`` are pasted in ascending score order (ties keep input
    order), so the highest-scoring instance wins on overlaps. Uncovered pixels get ``background``
    (default: ``max(classes) + 1`` is NOT assumed -- pass the number of classes).
    """
    if background is None:
        raise ValueError("instances_to_label_map: pass background=<number of thing classes>")
    dtype = np.uint8 if background < 255 else np.int32
    out = np.full((height, width), background, dtype=dtype)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    keep = np.nonzero(scores >= score_thresh)[0]
    order = keep[np.argsort(scores[keep], kind="stable")]
    for i in order:
        m = masks[i]
        if m.shape != (height, width):
            raise ValueError(
                f"predicted mask {i} has shape {m.shape}, expected image size {(height, width)}"
            )
        out[m] = classes[i]
    return out


def annotations_to_label_map(
    annotations, height: int, width: int, background: int, ignore_label: int = 255
):
    """Semantic projection of GT annotations (contiguous ``category_id``).

    Crowd regions are painted ``ignore_label`` first; non-crowd instances are then pasted in
    descending area order (smaller objects win on overlaps); the rest is ``background``.
    """
    dtype = np.uint8 if max(background, ignore_label) <= 255 and ignore_label >= 0 else np.int32
    out = np.full((height, width), background, dtype=dtype)
    crowd, objs = [], []
    for k, a in enumerate(annotations):
        if "segmentation" not in a:
            raise KeyError(
                f"annotation {k} (category {a.get('category_id')}) has no 'segmentation'"
            )
        m = segmentation_to_mask(a["segmentation"], height, width, what=f"annotation {k}")
        (crowd if a.get("iscrowd", 0) else objs).append((m, int(a["category_id"])))
    for m, _ in crowd:
        out[m] = ignore_label
    for m, c in sorted(objs, key=lambda mc: -int(mc[0].sum())):
        out[m] = c
    return out


# --------------------------------------------------------------------------------------------
# evaluators
# --------------------------------------------------------------------------------------------
class InstanceBoundaryErrorEvaluator(DatasetEvaluator):
    """Boundary error types of the semantic projection of instances (task ``"boundary_errors"``).

    Classes are ``thing_classes + ["background"]``; the metrics are those of
    :class:`~.boundary_errors.BoundaryErrorCounter` with ``band_width``, in percent. Predictions
    must be at the dataset's image size. Writes ``boundary_errors_instances.json`` to
    ``output_dir``.
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        score_thresh: float = 0.5,
        band_width: int = 15,
        ignore_label: int = 255,
    ):
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._score_thresh = float(score_thresh)
        meta = MetadataCatalog.get(dataset_name)
        dicts = DatasetCatalog.get(
            dataset_name
        )  # also records thing_classes / the id mapping of lazy loaders
        classes = meta.get("thing_classes", None)
        if not classes:
            raise ValueError(
                f"dataset '{dataset_name}': MetadataCatalog entry has no 'thing_classes'"
            )
        self._class_names = list(classes)
        self._num_classes = len(self._class_names)
        self._ignore_label = int(ignore_label) if self._num_classes + 1 <= int(ignore_label) else -1
        self._gt_by_image = {}
        for idx, d in enumerate(dicts):
            if "annotations" not in d:
                raise KeyError(
                    f"dataset '{dataset_name}': record {d.get('file_name')} has no 'annotations'"
                )
            self._gt_by_image[d.get("image_id", idx)] = (
                int(d["height"]),
                int(d["width"]),
                d["annotations"],
            )
        self._counter = BoundaryErrorCounter(self._num_classes + 1, self._ignore_label, band_width)
        self._band_width = self._counter.band_width

    def reset(self):
        self._counter = BoundaryErrorCounter(
            self._num_classes + 1, self._ignore_label, self._band_width
        )

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            image_id = inp["image_id"]
            if "instances" not in out:
                raise KeyError(
                    f"outputs for image {image_id} ({inp.get('file_name')}) have no 'instances'"
                )
            inst = out["instances"].to("cpu")
            h, w = inst.image_size
            if image_id not in self._gt_by_image:
                raise KeyError(f"image_id {image_id} is not in dataset '{self._dataset_name}'")
            gh, gw, anns = self._gt_by_image[image_id]
            if (gh, gw) != (h, w):
                raise ValueError(
                    f"prediction size {(h, w)} differs from the dataset size {(gh, gw)} for image "
                    f"{image_id} ({inp.get('file_name')}); evaluate at the original resolution"
                )
            if not inst.has("pred_masks"):
                continue
            scores = inst.scores.numpy() if inst.has("scores") else np.ones(len(inst))
            classes = (
                inst.pred_classes.numpy() if inst.has("pred_classes") else np.zeros(len(inst), int)
            )
            masks = inst.pred_masks.numpy().astype(bool)
            pred_map = instances_to_label_map(
                masks, classes, scores, h, w, self._score_thresh, background=self._num_classes
            )
            gt_map = annotations_to_label_map(anns, h, w, self._num_classes, self._ignore_label)
            self._counter.update(
                pred_map, gt_map, name=f"image {image_id} ({inp.get('file_name')})"
            )

    def evaluate(self):
        counter = gather_counter(self._counter, self._distributed)
        if counter is None:
            return None
        if counter.num_images == 0:
            logger.warning(
                "[InstanceBoundaryErrorEvaluator] no image with predicted masks for "
                f"{self._dataset_name}"
            )
            return {}
        frac = counter.metrics(self._class_names + ["background"])
        res = OrderedDict((k, float(v) * 100.0) for k, v in frac.items())
        logger.info(
            f"Instance boundary errors on {self._dataset_name} (semantic projection, score >= "
            f"{self._score_thresh}, band width {self._band_width} px): "
            + ", ".join(f"{k}={res[k]:.2f}" for k in ("mIoU", "BIoU", "FErr", "MErr", "DErr"))
        )
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            payload = {
                "dataset": self._dataset_name,
                "num_images": counter.num_images,
                "band_width": self._band_width,
                "score_thresh": self._score_thresh,
                "classes": self._class_names + ["background"],
                "units": "percent",
                "metrics": {"boundary_errors": res},
            }
            with PathManager.open(
                os.path.join(self._output_dir, "boundary_errors_instances.json"), "w"
            ) as f:
                dump_json(payload, f, indent=2)
        return OrderedDict(boundary_errors=res)


class InstanceBoundaryEvaluator(DatasetEvaluators):
    """Box/mask AP, Boundary AP and boundary error types of an instance dataset (see module doc).

    Args:
        dataset_name: a registered dataset with ``annotations`` (COCO-style dicts, polygons or RLE)
            and ``thing_classes`` metadata (``thing_dataset_id_to_contiguous_id`` when present). The
            metadata ``json_file`` is the COCO GT of the AP, restricted to the dataset's classes;
            without one, Detectron2 converts the dataset dicts.
        distributed: gather results from all ranks (main rank returns them, the others ``{}``).
        output_dir: Detectron2's ``coco_instances_results.json`` / ``instances_predictions.pth``
            and ``boundary_errors_instances.json`` are written there.
        score_thresh: instances with score >= this enter the semantic projection.
        band_width: dilation kernel side for the boundary-error bands (15 = ±7 px).
        dilation_ratio: Boundary AP band width as a fraction of the image diagonal.
        ignore_label: label of crowd regions in the GT projection.
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        score_thresh: float = 0.5,
        band_width: int = 15,
        dilation_ratio: float = 0.02,
        ignore_label: int = 255,
    ):
        errors = InstanceBoundaryErrorEvaluator(
            dataset_name,
            distributed,
            output_dir,
            score_thresh=score_thresh,
            band_width=band_width,
            ignore_label=ignore_label,
        )
        coco = COCOBoundaryEvaluator(
            dataset_name,
            distributed=distributed,
            output_dir=output_dir,
            dilation_ratio=dilation_ratio,
        )
        super().__init__([coco, errors])
