"""segalias_d2: frequency-aliasing-aware segmentation (DAF, FreqMix, boundary error types) and
low-light RAW/sRGB data for Detectron2.

Importing the package registers its backbones, datasets and evaluators with Detectron2.
"""

from . import (
    data,  # noqa: F401  (registers datasets)
    evaluation,  # noqa: F401
    modeling,  # noqa: F401  (registers backbones)
)
from .config import add_segalias_config
from .modeling import meta_arch  # noqa: F401  (registers SlidingWindowSemanticSegmentor)

__version__ = "0.1.0"
__all__ = ["add_segalias_config", "__version__"]
