"""``build_segalias_evaluator``: the evaluator of a dataset, chosen by its metadata
``evaluator_type``."""

import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluators

from .instance_evaluation import InstanceBoundaryEvaluator
from .sem_seg_evaluation import BoundaryErrorSemSegEvaluator, BoundaryIoUEvaluator

__all__ = ["build_segalias_evaluator"]


def build_segalias_evaluator(cfg, dataset_name, output_folder=None):
    """Evaluator for ``dataset_name`` by its metadata ``evaluator_type``.

    ``"sem_seg"`` -> :class:`BoundaryErrorSemSegEvaluator` (plus :class:`BoundaryIoUEvaluator` when
    ``TEST.SEGALIAS.SEM_SEG_BOUNDARY_IOU``); ``"coco"`` -> :class:`InstanceBoundaryEvaluator`.
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    ev_cfg = cfg.TEST.get("SEGALIAS", None)
    if ev_cfg is None:
        raise KeyError(
            "cfg.TEST.SEGALIAS is missing: call segalias_d2.add_segalias_config(cfg) before "
            "merge_from_file"
        )
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type == "sem_seg":
        ev = BoundaryErrorSemSegEvaluator(
            dataset_name,
            distributed=True,
            output_dir=output_folder,
            band_width=ev_cfg.BOUNDARY_BAND_WIDTH,
        )
        if ev_cfg.get("SEM_SEG_BOUNDARY_IOU", False):
            biou = BoundaryIoUEvaluator(
                dataset_name,
                distributed=True,
                output_dir=output_folder,
                dilation_ratio=ev_cfg.BOUNDARY_IOU_DILATION_RATIO,
            )
            return DatasetEvaluators([ev, biou])
        return ev
    if evaluator_type == "coco":
        return InstanceBoundaryEvaluator(
            dataset_name,
            distributed=True,
            output_dir=output_folder,
            score_thresh=ev_cfg.INSTANCE_SCORE_THRESH,
            band_width=ev_cfg.BOUNDARY_BAND_WIDTH,
            dilation_ratio=ev_cfg.BOUNDARY_IOU_DILATION_RATIO,
        )
    raise NotImplementedError(
        f"build_segalias_evaluator: dataset '{dataset_name}' has "
        f"evaluator_type={evaluator_type!r}; "
        "supported are 'sem_seg' and 'coco'. Build an evaluator manually for other datasets."
    )
