"""Instance segmentation evaluator: COCO box/mask AP, Boundary AP and boundary error types.

:class:`InstanceBoundaryEvaluator` returns::

    {"bbox":     {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>" ...},
     "segm":     {same keys},
     "boundary": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>" ...},   # Boundary AP
     "boundary_errors": {"mIoU", "BIoU", "BAcc", "FErr", "MErr", "DErr", ... per class}}

AP uses plain pycocotools (``COCOeval``; the compiled fast evaluator is not used). Boundary AP
(Cheng et al. 2021) replaces the mask IoU of every (detection, non-crowd GT) pair by
``min(mask IoU, boundary IoU)`` with inner boundaries of width ``max(1, round(r * diagonal))``
(``r = dilation_ratio``, default 0.02); crowd GT keep mask IoU.

Boundary errors are computed on the *semantic projection* of the instances (see
:func:`instances_to_label_map`): predictions with score >= ``score_thresh`` are pasted in ascending
score order (higher scores win), non-crowd GT instances in descending area order (smaller objects
win), crowd GT regions become ignore, uncovered pixels are the extra class ``"background"``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from .boundary_metrics import BoundaryErrorCounter, mask_to_boundary

__all__ = [
    "InstanceBoundaryEvaluator",
    "BoundaryCOCOeval",
    "instances_to_label_map",
    "annotations_to_label_map",
    "dataset_dicts_to_coco",
    "segmentation_to_mask",
]

logger = logging.getLogger(__name__)

AP_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


# --------------------------------------------------------------------------------------------
# helpers
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
            raise ValueError(f"{what}: RLE size {tuple(rle['size'])} differs from image size {(height, width)}")
    elif isinstance(segm, np.ndarray):
        if segm.shape != (height, width):
            raise ValueError(f"{what}: mask shape {segm.shape} differs from image size {(height, width)}")
        return segm.astype(bool)
    else:
        raise ValueError(f"{what}: unsupported segmentation of type {type(segm).__name__} (polygons or RLE expected)")
    return mask_util.decode(rle).astype(bool)


def _polygon_area(segm) -> float:
    area = 0.0
    for p in segm:
        xy = np.asarray(p, dtype=np.float64).reshape(-1, 2)
        x, y = xy[:, 0], xy[:, 1]
        area += 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    return area


def instances_to_label_map(
    masks, classes, scores, height: int, width: int, score_thresh: float = 0.5, background: int = None
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
            raise ValueError(f"predicted mask {i} has shape {m.shape}, expected image size {(height, width)}")
        out[m] = classes[i]
    return out


def annotations_to_label_map(annotations, height: int, width: int, background: int, ignore_label: int = 255):
    """Semantic projection of GT annotations (contiguous ``category_id``).

    Crowd regions are painted ``ignore_label`` first; non-crowd instances are then pasted in
    descending area order (smaller objects win on overlaps); the rest is ``background``.
    """
    dtype = np.uint8 if max(background, ignore_label) <= 255 and ignore_label >= 0 else np.int32
    out = np.full((height, width), background, dtype=dtype)
    crowd, objs = [], []
    for k, a in enumerate(annotations):
        if "segmentation" not in a:
            raise KeyError(f"annotation {k} (category {a.get('category_id')}) has no 'segmentation'")
        m = segmentation_to_mask(a["segmentation"], height, width, what=f"annotation {k}")
        (crowd if a.get("iscrowd", 0) else objs).append((m, int(a["category_id"])))
    for m, _ in crowd:
        out[m] = ignore_label
    for m, c in sorted(objs, key=lambda mc: -int(mc[0].sum())):
        out[m] = c
    return out


def dataset_dicts_to_coco(dataset_dicts, thing_classes: Sequence[str], contiguous_to_dataset_id: Dict[int, int]) -> COCO:
    """In-memory pycocotools ``COCO`` from Detectron2 dataset dicts (areas as in Detectron2's
    ``convert_to_coco_dict``: polygon area, RLE area, or box area)."""
    images, anns = [], []
    ann_id = 1
    for idx, d in enumerate(dataset_dicts):
        img_id = d.get("image_id", idx)
        images.append({"id": img_id, "width": int(d["width"]), "height": int(d["height"]), "file_name": d.get("file_name", "")})
        for a in d.get("annotations", []):
            box = BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYWH_ABS)
            entry = {
                "id": ann_id,
                "image_id": img_id,
                "bbox": [float(x) for x in box],
                "category_id": contiguous_to_dataset_id[int(a["category_id"])],
                "iscrowd": int(a.get("iscrowd", 0)),
            }
            segm = a.get("segmentation")
            if isinstance(segm, list) and segm:
                entry["segmentation"] = segm
                entry["area"] = _polygon_area(segm)
            elif isinstance(segm, dict):
                rle = segm
                if isinstance(rle.get("counts"), list):
                    rle = mask_util.frPyObjects(rle, int(d["height"]), int(d["width"]))
                rle = dict(rle)
                if isinstance(rle["counts"], bytes):
                    rle["counts"] = rle["counts"].decode("ascii")
                entry["segmentation"] = rle
                entry["area"] = float(mask_util.area(dict(rle, counts=rle["counts"].encode("ascii"))))
            else:
                entry["area"] = float(box[2] * box[3])
            anns.append(entry)
            ann_id += 1
    cats = [{"id": contiguous_to_dataset_id[i], "name": n} for i, n in enumerate(thing_classes)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": cats}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


# --------------------------------------------------------------------------------------------
# Boundary AP
# --------------------------------------------------------------------------------------------
class BoundaryCOCOeval(COCOeval):
    """``COCOeval`` whose segm IoU is ``min(mask IoU, boundary IoU)`` for non-crowd GT (Boundary AP).

    Boundaries: inner bands of width ``max(1, round(dilation_ratio * image diagonal))``
    (:func:`mask_to_boundary`), computed once per annotation in :meth:`_prepare`.
    """

    def __init__(self, cocoGt=None, cocoDt=None, iouType="segm", dilation_ratio: float = 0.02):
        if iouType not in ("segm", "boundary"):
            raise ValueError(f"BoundaryCOCOeval supports iouType 'segm'/'boundary', got {iouType!r}")
        super().__init__(cocoGt, cocoDt, "segm")
        self.dilation_ratio = float(dilation_ratio)

    def _boundary_rle(self, ann):
        rle = ann["segmentation"]
        m = mask_util.decode(rle)
        b = mask_to_boundary(m, self.dilation_ratio)
        return mask_util.encode(np.asfortranarray(b))

    def _prepare(self):
        super()._prepare()  # converts all segmentations to RLE
        for store in (self._gts, self._dts):
            for anns in store.values():
                for a in anns:
                    if "boundary" not in a:
                        a["boundary"] = a["segmentation"] if a.get("iscrowd", 0) else self._boundary_rle(a)

    def computeIoU(self, imgId, catId):
        ious = super().computeIoU(imgId, catId)
        if len(ious) == 0:
            return ious
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [a for c in p.catIds for a in self._gts[imgId, c]]
            dt = [a for c in p.catIds for a in self._dts[imgId, c]]
        inds = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in inds][: p.maxDets[-1]]
        crowd = np.array([int(g.get("iscrowd", 0)) for g in gt], dtype=bool)
        b_ious = mask_util.iou([d["boundary"] for d in dt], [g["boundary"] for g in gt], [0] * len(gt))
        b_ious = np.asarray(b_ious).reshape(len(dt), len(gt))
        ious = np.asarray(ious).reshape(len(dt), len(gt))
        return np.where(crowd[None, :], ious, np.minimum(ious, b_ious))


def _summarize(coco_eval, class_names, dataset_ids) -> "OrderedDict[str, float]":
    with contextlib.redirect_stdout(io.StringIO()) as buf:
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.info("\n" + buf.getvalue())
    res = OrderedDict(
        (m, float(coco_eval.stats[i] * 100) if coco_eval.stats[i] >= 0 else float("nan")) for i, m in enumerate(AP_METRICS)
    )
    precisions = coco_eval.eval["precision"]  # (iou, recall, cls, area range, max dets)
    cat_pos = {c: i for i, c in enumerate(coco_eval.params.catIds)}
    for name, did in zip(class_names, dataset_ids):
        if did not in cat_pos:
            res[f"AP-{name}"] = float("nan")
            continue
        pr = precisions[:, :, cat_pos[did], 0, -1]
        pr = pr[pr > -1]
        res[f"AP-{name}"] = float(np.mean(pr) * 100) if pr.size else float("nan")
    return res


# --------------------------------------------------------------------------------------------
# evaluator
# --------------------------------------------------------------------------------------------
class InstanceBoundaryEvaluator(DatasetEvaluator):
    """COCO AP (bbox, segm), Boundary AP and boundary errors of the semantic projection.

    Args:
        dataset_name: a registered dataset with ``annotations`` (COCO-style dicts, polygons or RLE)
            and ``thing_classes`` metadata (``thing_dataset_id_to_contiguous_id`` when present;
            ``json_file`` is used as COCO GT when present, else the dicts are converted in memory).
        distributed: gather results from all ranks (main rank returns, others return None).
        output_dir: where ``coco_instances_results.json`` and ``boundary_errors_instances.json``
            are written.
        score_thresh: instances with score >= this enter the semantic projection.
        band_width: dilation kernel side for the boundary-error bands (15 = ±7 px).
        dilation_ratio: Boundary AP band width as a fraction of the image diagonal.
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
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._score_thresh = float(score_thresh)
        self._band_width = int(band_width)
        self._dilation_ratio = float(dilation_ratio)
        meta = MetadataCatalog.get(dataset_name)
        classes = meta.get("thing_classes", None)
        if not classes:
            raise ValueError(f"dataset '{dataset_name}': MetadataCatalog entry has no 'thing_classes'")
        self._class_names = list(classes)
        K = len(self._class_names)
        self._num_classes = K
        d2c = meta.get("thing_dataset_id_to_contiguous_id", None)
        self._c2d = {v: k for k, v in d2c.items()} if d2c else {i: i for i in range(K)}
        self._ignore_label = int(ignore_label) if K + 1 <= int(ignore_label) else -1
        dicts = DatasetCatalog.get(dataset_name)
        self._gt_by_image = {}
        for idx, d in enumerate(dicts):
            if "annotations" not in d:
                raise KeyError(f"dataset '{dataset_name}': record {d.get('file_name')} has no 'annotations'")
            self._gt_by_image[d.get("image_id", idx)] = (int(d["height"]), int(d["width"]), d["annotations"])
        json_file = meta.get("json_file", None)
        if json_file:
            with contextlib.redirect_stdout(io.StringIO()):
                self._coco_api = COCO(PathManager.get_local_path(json_file))
        else:
            self._coco_api = dataset_dicts_to_coco(dicts, self._class_names, self._c2d)
        self.reset()

    def reset(self):
        self._predictions: List[dict] = []
        self._counter = BoundaryErrorCounter(self._num_classes + 1, self._ignore_label, self._band_width)

    # -- process ---------------------------------------------------------------------------------
    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            image_id = inp["image_id"]
            if "instances" not in out:
                raise KeyError(f"outputs for image {image_id} ({inp.get('file_name')}) have no 'instances'")
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
            scores = inst.scores.numpy() if inst.has("scores") else np.ones(len(inst))
            classes = inst.pred_classes.numpy() if inst.has("pred_classes") else np.zeros(len(inst), int)
            has_mask = inst.has("pred_masks")
            masks = inst.pred_masks.numpy().astype(bool) if has_mask else None
            results = []
            boxes = None
            if inst.has("pred_boxes"):
                boxes = BoxMode.convert(inst.pred_boxes.tensor.numpy(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
            for k in range(len(inst)):
                r = {"image_id": image_id, "category_id": self._c2d[int(classes[k])], "score": float(scores[k])}
                if boxes is not None:
                    r["bbox"] = [float(x) for x in boxes[k]]
                if has_mask:
                    rle = mask_util.encode(np.asfortranarray(masks[k].astype(np.uint8)))
                    rle["counts"] = rle["counts"].decode("ascii")
                    r["segmentation"] = rle
                results.append(r)
            self._predictions.append({"image_id": image_id, "instances": results})
            if has_mask:
                pred_map = instances_to_label_map(
                    masks, classes, scores, h, w, self._score_thresh, background=self._num_classes
                )
                gt_map = annotations_to_label_map(anns, h, w, self._num_classes, self._ignore_label)
                self._counter.update(pred_map, gt_map, name=f"image {image_id} ({inp.get('file_name')})")

    # -- evaluate --------------------------------------------------------------------------------
    def evaluate(self, img_ids=None):
        if self._distributed:
            comm.synchronize()
            preds = comm.all_gather(self._predictions)
            counters = comm.all_gather(self._counter)
            if not comm.is_main_process():
                return None
            predictions = list(itertools.chain(*preds))
            counter = copy.deepcopy(counters[0])
            for c in counters[1:]:
                counter.merge(c)
        else:
            predictions, counter = self._predictions, self._counter
        if len(predictions) == 0:
            logger.warning(f"[InstanceBoundaryEvaluator] did not receive valid predictions for {self._dataset_name}")
            return {}
        coco_results = list(itertools.chain(*[p["instances"] for p in predictions]))
        img_ids = sorted({p["image_id"] for p in predictions}) if img_ids is None else img_ids
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with PathManager.open(os.path.join(self._output_dir, "coco_instances_results.json"), "w") as f:
                json.dump(coco_results, f)
        res = OrderedDict()
        has_box = any("bbox" in r for r in coco_results)
        has_mask = any("segmentation" in r for r in coco_results)
        if has_box:
            res["bbox"] = self._eval_task(coco_results, "bbox", img_ids)
        if has_mask:
            res["segm"] = self._eval_task(coco_results, "segm", img_ids)
            res["boundary"] = self._eval_task(coco_results, "boundary", img_ids)
            frac = counter.metrics(self._class_names + ["background"])
            res["boundary_errors"] = OrderedDict((k, float(v) * 100.0) for k, v in frac.items())
            logger.info(
                f"Instance boundary errors on {self._dataset_name} (semantic projection, score >= "
                f"{self._score_thresh}, band width {self._band_width} px): "
                + ", ".join(f"{k}={res['boundary_errors'][k]:.2f}" for k in ("mIoU", "BIoU", "FErr", "MErr", "DErr"))
            )
            if self._output_dir:
                with PathManager.open(os.path.join(self._output_dir, "boundary_errors_instances.json"), "w") as f:
                    json.dump(
                        {
                            "dataset": self._dataset_name,
                            "band_width": self._band_width,
                            "score_thresh": self._score_thresh,
                            "boundary_ap_dilation_ratio": self._dilation_ratio,
                            "classes": self._class_names + ["background"],
                            "units": "percent",
                            "metrics": _json_safe(res),
                        },
                        f,
                        indent=2,
                    )
        return copy.deepcopy(res)

    def _eval_task(self, coco_results, task, img_ids):
        if task == "segm" or task == "boundary":
            dts = [{k: v for k, v in r.items() if k != "bbox"} for r in coco_results if "segmentation" in r]
        else:
            dts = [r for r in coco_results if "bbox" in r]
        if not dts:
            return OrderedDict((m, float("nan")) for m in AP_METRICS)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = self._coco_api.loadRes(copy.deepcopy(dts))
        if task == "boundary":
            ev = BoundaryCOCOeval(self._coco_api, coco_dt, "segm", dilation_ratio=self._dilation_ratio)
        else:
            ev = COCOeval(self._coco_api, coco_dt, task)
        ev.params.imgIds = list(img_ids)
        logger.info(f"Evaluating {task} AP on {self._dataset_name} ({len(dts)} detections)")
        return _summarize(ev, self._class_names, [self._c2d[i] for i in range(self._num_classes)])
