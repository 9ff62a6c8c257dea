"""Modeling: Fourier anti-aliasing filters, the anti-aliased ResNet / ResNet-FPN backbones and the UPerNet head."""
from .fourier_filters import BlurPool, DeAliasingFilter, FreqMix  # noqa: F401
from . import backbone  # noqa: F401  (registers build_segalias_resnet[_fpn]_backbone)
from .backbone import build_segalias_resnet_backbone, build_segalias_resnet_fpn_backbone  # noqa: F401
from . import heads  # noqa: F401  (registers UPerNetHead)
from .heads import UPerNetHead  # noqa: F401
