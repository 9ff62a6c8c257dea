"""Pretrained-weight conversion (torchvision, mmcv ResNet-V1c, Detectron2/MSRA .pkl, COCO Mask R-CNN
-> LIS) and loading."""

from .convert import (  # noqa: F401
    FORMATS,
    LoadReport,
    adapt_stem_to_packed_bayer,
    convert_file,
    convert_state_dict,
    load_backbone_weights,
    main,  # noqa: F401
    read_checkpoint_file,
    save_d2_checkpoint,
)
from .detector import class_rows, coco_thing_classes, convert_coco_detector, convert_detector_file  # noqa: F401
from .safe_checkpointer import (  # noqa: F401
    CheckpointReadError,
    SafeDetectionCheckpointer,
    WeightsMatchPolicy,
    WeightsMismatchError,
    atomic_open,
)
