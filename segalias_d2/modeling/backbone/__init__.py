"""Backbones; importing this module registers them in Detectron2's BACKBONE_REGISTRY."""

from .aa_resnet import (  # noqa: F401
    AABottleneckBlock,
    AAResNet,
    DeepStem,
)
from .build import build_segalias_resnet_backbone, build_segalias_resnet_fpn_backbone  # noqa: F401
