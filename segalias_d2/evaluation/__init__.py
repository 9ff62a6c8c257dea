"""Boundary error evaluation for segalias_d2 (see docs/evaluation.md); this file only re-exports.

* band error types (Seg-Aliasing): :mod:`.boundary_errors`; Boundary IoU (Cheng et al.):
  :mod:`.boundary_iou_metric`; their shared counter protocol: :mod:`.streaming_counter`
* semantic evaluators: :mod:`.sem_seg_evaluation`
* instance evaluators (Detectron2's COCOEvaluator + Boundary AP, boundary errors):
  :mod:`.coco_evaluation`, :mod:`.instance_evaluation`
* evaluator of a dataset from the config: :mod:`.build`; strict-JSON results:
  :mod:`.evaluator_utils`
* per-image error maps: :mod:`.error_maps`; aliasing analysis (RECONSTRUCTION): :mod:`.aliasing`
"""

from .aliasing import (
    RECONSTRUCTION_NOTE,
    StageInputRecorder,
    aliasing_energy_maps,
    aliasing_score,
    regional_aliasing_score,
)
from .boundary_errors import (
    BoundaryErrorCounter,
    boundary_band,
    boundary_error_metrics,
    label_edges,
)
from .boundary_iou_metric import BoundaryIoUCounter, boundary_iou, mask_to_boundary
from .build import build_segalias_evaluator
from .coco_evaluation import BoundaryCOCOeval, COCOBoundaryEvaluator
from .error_maps import ERROR_COLORS, compute_error_maps, overlay_error_maps
from .evaluator_utils import dump_json, to_strict_json
from .instance_evaluation import (
    InstanceBoundaryErrorEvaluator,
    InstanceBoundaryEvaluator,
    instances_to_label_map,
)
from .sem_seg_evaluation import BoundaryErrorSemSegEvaluator, BoundaryIoUEvaluator

__all__ = [
    "BoundaryErrorCounter",
    "BoundaryIoUCounter",
    "boundary_band",
    "boundary_error_metrics",
    "boundary_iou",
    "label_edges",
    "mask_to_boundary",
    "BoundaryErrorSemSegEvaluator",
    "BoundaryIoUEvaluator",
    "InstanceBoundaryEvaluator",
    "InstanceBoundaryErrorEvaluator",
    "COCOBoundaryEvaluator",
    "BoundaryCOCOeval",
    "instances_to_label_map",
    "compute_error_maps",
    "overlay_error_maps",
    "ERROR_COLORS",
    "RECONSTRUCTION_NOTE",
    "aliasing_score",
    "aliasing_energy_maps",
    "regional_aliasing_score",
    "StageInputRecorder",
    "build_segalias_evaluator",
    "dump_json",
    "to_strict_json",
]
