"""Box/mask AP through Detectron2's ``COCOEvaluator``, plus Boundary AP (Cheng et al., CVPR 2021).

:class:`COCOBoundaryEvaluator` is Detectron2's ``COCOEvaluator`` (tasks ``"bbox"``, ``"segm"``:
GT loading or conversion, prediction encoding, gathering, pycocotools, per-class AP, all as
Detectron2 does them) with four additions:

* task ``"boundary_ap"``: the ``"segm"`` detections evaluated by :class:`BoundaryCOCOeval`, whose
  matching IoU is ``min(mask IoU, boundary IoU)`` for non-crowd GT;
* only the dataset's classes are evaluated: a COCO GT with more categories than
  ``thing_dataset_id_to_contiguous_id`` (e.g. ``coco_2017_val_lis8``: the 80-class COCO file, 8
  classes kept by name) is restricted to the dataset's categories, as mmdet restricts
  ``params.catIds``; otherwise classes with GT but no possible prediction would dilute the mean AP;
* per-class ``AP-<class>`` names follow the COCO category ids (Detectron2 assumes that the sorted
  dataset ids are in ``thing_classes`` order, not true when classes are matched by name);
* mask-only models (no ``pred_boxes``): boxes are taken from the masks so that Detectron2 can
  encode the predictions, and no bbox AP is reported.

Only ``COCOEvaluator`` arguments common to Detectron2 v0.6 and main are used (no
``allow_cached_coco``). AP uses the official pycocotools ``COCOeval`` by default
(``use_fast_impl=False``), so numbers equal pycocotools run directly.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import shutil
import tempfile

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import BitMasks, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .boundary_iou_metric import check_dilation_ratio, mask_to_boundary

__all__ = ["BoundaryCOCOeval", "COCOBoundaryEvaluator", "restrict_coco_categories"]

logger = logging.getLogger(__name__)


class BoundaryCOCOeval(COCOeval):
    """``COCOeval`` whose segm IoU is ``min(mask IoU, boundary IoU)`` for non-crowd GT (Boundary
    AP).

    Boundaries: inner bands of width ``max(1, round(dilation_ratio * image diagonal))``
    (:func:`~.boundary_iou_metric.mask_to_boundary`), computed once per annotation in
    :meth:`_prepare`; crowd GT keep mask IoU.
    """

    def __init__(self, cocoGt=None, cocoDt=None, iouType="segm", dilation_ratio: float = 0.02):
        if iouType not in ("segm", "boundary"):
            raise ValueError(
                f"BoundaryCOCOeval supports iouType 'segm'/'boundary', got {iouType!r}"
            )
        super().__init__(cocoGt, cocoDt, "segm")
        self.dilation_ratio = check_dilation_ratio(dilation_ratio)

    def _boundary_rle(self, ann):
        m = mask_util.decode(ann["segmentation"])
        b = mask_to_boundary(m, self.dilation_ratio)
        return mask_util.encode(np.asfortranarray(b))

    def _prepare(self):
        super()._prepare()  # converts all segmentations to RLE
        for store in (self._gts, self._dts):
            for anns in store.values():
                for a in anns:
                    if "boundary" not in a:
                        a["boundary"] = (
                            a["segmentation"] if a.get("iscrowd", 0) else self._boundary_rle(a)
                        )

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
        b_ious = mask_util.iou(
            [d["boundary"] for d in dt], [g["boundary"] for g in gt], [0] * len(gt)
        )
        b_ious = np.asarray(b_ious).reshape(len(dt), len(gt))
        ious = np.asarray(ious).reshape(len(dt), len(gt))
        return np.where(crowd[None, :], ious, np.minimum(ious, b_ious))


def restrict_coco_categories(coco: COCO, category_ids) -> COCO:
    """A new ``COCO`` with only the categories ``category_ids`` and their annotations (all images
    kept).

    Evaluating it equals pycocotools on the full GT with ``params.catIds = sorted(category_ids)``.
    """
    keep = set(category_ids)
    dataset = dict(coco.dataset)
    dataset["categories"] = [c for c in coco.dataset.get("categories", []) if c["id"] in keep]
    dataset["annotations"] = [
        a for a in coco.dataset.get("annotations", []) if a["category_id"] in keep
    ]
    restricted = COCO()
    restricted.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        restricted.createIndex()
    return restricted


def _boxes_from_masks(instances: Instances) -> Instances:
    out = Instances(instances.image_size, **instances.get_fields())
    out.pred_boxes = BitMasks(instances.pred_masks).get_bounding_boxes()
    return out


class COCOBoundaryEvaluator(COCOEvaluator):
    """Detectron2's ``COCOEvaluator`` (bbox, segm) plus Boundary AP (task ``"boundary_ap"``).

    Args:
        dataset_name, tasks, distributed, output_dir: as ``COCOEvaluator``. A dataset without a
            ``json_file`` is converted by Detectron2 into ``output_dir`` (cached there); when
            ``output_dir`` is None, into a temporary folder that lives as long as the process.
        dilation_ratio: Boundary AP band width as a fraction of the image diagonal.
        use_fast_impl: Detectron2's unofficial C++ COCOeval (needs the compiled extension).
    """

    def __init__(
        self,
        dataset_name,
        tasks=None,
        distributed=True,
        output_dir=None,
        *,
        dilation_ratio: float = 0.02,
        use_fast_impl: bool = False,
    ):
        self._dilation_ratio = check_dilation_ratio(dilation_ratio)
        self._dataset_name = dataset_name
        meta = MetadataCatalog.get(dataset_name)
        if hasattr(meta, "thing_classes") and not hasattr(
            meta, "thing_dataset_id_to_contiguous_id"
        ):
            DatasetCatalog.get(
                dataset_name
            )  # segalias_d2's loaders record the id mapping at the first load
        conversion_dir = output_dir
        if output_dir is None and not hasattr(meta, "json_file"):
            conversion_dir = tempfile.mkdtemp(prefix="segalias_coco_gt_")
            atexit.register(shutil.rmtree, conversion_dir, True)
        super().__init__(
            dataset_name, tasks, distributed, conversion_dir, use_fast_impl=use_fast_impl
        )
        self._output_dir = output_dir
        self._restrict_to_dataset_classes()

    def _contiguous_to_dataset_id(self):
        d2c = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        return {c: d for d, c in d2c.items()} if d2c else None

    def _restrict_to_dataset_classes(self):
        c2d = self._contiguous_to_dataset_id()
        if not c2d:
            return
        keep = set(c2d.values())
        in_gt = set(self._coco_api.getCatIds())
        if keep - in_gt:
            raise ValueError(
                f"dataset '{self._dataset_name}': category ids {sorted(keep - in_gt)} of "
                "thing_dataset_id_to_contiguous_id are not in the COCO ground truth "
                f"{self._metadata.json_file}"
            )
        if in_gt - keep:
            logger.info(
                f"[{self._dataset_name}] evaluating the {len(keep)} dataset classes only: "
                f"{len(in_gt - keep)} other "
                f"categories of {self._metadata.json_file} and their annotations are left out of "
                "the AP"
            )
            self._coco_api = restrict_coco_categories(self._coco_api, keep)

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out.get("instances") if isinstance(out, dict) else None
            derived = inst is not None and not inst.has("pred_boxes") and inst.has("pred_masks")
            if derived:
                out = dict(out, instances=_boxes_from_masks(inst.to(self._cpu_device)))
            super().process([inp], [out])
            if derived:
                self._predictions[-1]["boxes_from_masks"] = True

    def _eval_predictions(self, predictions, img_ids=None):
        # copies made before Detectron2 rewrites the category ids of the predictions in place
        boundary_dts = self._segm_detections(predictions)
        tasks = self._tasks
        if any(p.get("boxes_from_masks") for p in predictions):
            self._tasks = tuple(t for t in (tasks or ("bbox", "segm")) if t != "bbox")
        try:
            super()._eval_predictions(predictions, img_ids=img_ids)
        finally:
            self._tasks = tasks
        if "segm" in self._results:
            self._results["boundary_ap"] = self._eval_boundary_ap(boundary_dts, img_ids)

    def _segm_detections(self, predictions):
        c2d = self._contiguous_to_dataset_id()
        dts = []
        for p in predictions:
            for r in p.get("instances", []):
                if "segmentation" not in r:
                    continue
                d = {k: v for k, v in r.items() if k != "bbox"}  # mask area for the area ranges
                if c2d is not None:
                    if d["category_id"] not in c2d:
                        raise ValueError(
                            f"a prediction has class {d['category_id']}, but dataset "
                            f"'{self._dataset_name}' has "
                            f"{len(c2d)} classes (predicted classes must be in [0, {len(c2d) - 1}])"
                        )
                    d["category_id"] = c2d[d["category_id"]]
                dts.append(d)
        return dts

    def _eval_boundary_ap(self, dts, img_ids):
        coco_eval = None
        if dts:  # cocoapi does not handle empty results
            with contextlib.redirect_stdout(io.StringIO()):
                coco_dt = self._coco_api.loadRes(dts)
            coco_eval = BoundaryCOCOeval(
                self._coco_api, coco_dt, "segm", dilation_ratio=self._dilation_ratio
            )
            if img_ids is not None:
                coco_eval.params.imgIds = img_ids
            with contextlib.redirect_stdout(io.StringIO()) as buf:
                coco_eval.evaluate()
                coco_eval.accumulate()
                coco_eval.summarize()
            logger.info(f"Boundary AP (dilation ratio {self._dilation_ratio}):\n{buf.getvalue()}")
        logger.info("Boundary AP follows (Detectron2's formatter labels the tables 'segm')")
        return self._derive_coco_results(
            coco_eval, "segm", class_names=self._metadata.get("thing_classes")
        )

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        c2d = self._contiguous_to_dataset_id()
        if coco_eval is not None and class_names and c2d:
            # precision column i belongs to the i-th sorted category id, not to thing_classes[i]
            name_of = {c2d[c]: name for c, name in enumerate(class_names)}
            class_names = [name_of[cat] for cat in coco_eval.params.catIds]
        return super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
