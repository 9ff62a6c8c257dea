"""Modeling: Fourier anti-aliasing filters, the anti-aliased ResNet / ResNet-FPN backbones and the
UPerNet head."""

from . import (
    backbone,  # noqa: F401  (registers build_segalias_resnet[_fpn]_backbone)
    heads,  # noqa: F401  (registers UPerNetHead)
)
from .backbone import build_segalias_resnet_backbone, build_segalias_resnet_fpn_backbone  # noqa: F401
from .fourier_filters import BlurPool, DeAliasingFilter, FreqMix  # noqa: F401
from .heads import UPerNetHead  # noqa: F401
