"""Low-light synthesis as Detectron2 pieces: the mapper's synthesis options (defaults = the released
LIS SynCOCO pipeline, validated with config-key names) and a ``Transform`` / ``Augmentation`` pair
for custom augmentation lists.
"""

import numpy as np
from detectron2.data import transforms as T

from .synthesis import synthesize_lowlight

__all__ = [
    "SYNTHESIS_DEFAULTS",
    "check_synthesis_options",
    "LowLightSynthesisTransform",
    "RandomLowLightSynthesis",
]

#: mapper synthesis options and their defaults = the released LIS SynCOCO pipeline (config keys
#: ``INPUT.SEGALIAS.SYNTHESIS.<KEY>``; see segalias_d2/config.py for the variants).
SYNTHESIS_DEFAULTS = {
    "ratio_range": (10.0, 100.0),
    "return_clean": False,
    "output": "raw_rgb",
    "method": "bilinear",
    "quantization": "scalar",
    "bit_depth": 8,
    "odd_size": "resize",
    "order": "after_augment",
}
_SYNTHESIS_CHOICES = {
    "output": ("raw_rgb", "packed"),
    "method": ("bilinear", "pack"),
    "quantization": ("per_pixel", "scalar", "round", "none"),
    "bit_depth": (8, 16),
    "odd_size": ("resize", "pad"),
    "order": ("after_augment", "before_augment"),
}


def check_synthesis_options(synthesis):
    """Fill in defaults and validate, naming the config key of a bad value."""
    syn = dict(SYNTHESIS_DEFAULTS, seed=None)
    syn.update(synthesis)
    syn["ratio_range"] = tuple(float(x) for x in syn["ratio_range"])
    syn["return_clean"] = bool(syn["return_clean"])
    for key, choices in _SYNTHESIS_CHOICES.items():
        if syn[key] not in choices:
            raise ValueError(
                f"INPUT.SEGALIAS.SYNTHESIS.{key.upper()} must be one of {list(choices)}, got "
                f"{syn[key]!r}"
            )
    if len(syn["ratio_range"]) != 2 or not 0 < syn["ratio_range"][0] <= syn["ratio_range"][1]:
        raise ValueError(
            f"INPUT.SEGALIAS.SYNTHESIS.RATIO_RANGE must be (low, high) with 0 < low <= high, "
            f"got {syn['ratio_range']}"
        )
    if syn["bit_depth"] == 8 and syn["output"] == "raw_rgb" and syn["method"] == "pack":
        raise ValueError(
            "INPUT.SEGALIAS.SYNTHESIS.METHOD 'pack' has no 8-bit rendering: set BIT_DEPTH 16 "
            "or METHOD 'bilinear'"
        )
    return syn


class LowLightSynthesisTransform(T.Transform):
    """Detectron2 ``Transform`` that replaces an sRGB float/uint8 RGB image by a synthetic low-light
    one.

    Geometry is unchanged (coords/segmentation pass through). Output: float32 in [0, 1]; with
    ``output="packed"`` the image becomes half resolution, so use it only as the last transform
    (or through :class:`LowLightDatasetMapper`, which handles annotation scaling).
    """

    def __init__(
        self,
        seed,
        ratio_range=(10.0, 100.0),
        output="raw_rgb",
        method="bilinear",
        quantization="scalar",
        bit_depth=8,
        odd_size="resize",
    ):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img):
        return synthesize_lowlight(
            img,
            np.random.default_rng(self.seed),
            self.ratio_range,
            output=self.output,
            method=self.method,
            quantization=self.quantization,
            return_clean=False,
            bit_depth=self.bit_depth,
            odd_size=self.odd_size,
        )["noisy"]

    def apply_coords(self, coords):
        return coords

    def apply_segmentation(self, segmentation):
        return segmentation


class RandomLowLightSynthesis(T.Augmentation):
    """Augmentation producing :class:`LowLightSynthesisTransform` with probability ``prob``.

    Defaults are the released LIS synthesis (8-bit, scalar quantisation, odd sizes resized); place
    it after the resize and flip, as the release does.
    """

    def __init__(
        self,
        prob=1.0,
        ratio_range=(10.0, 100.0),
        output="raw_rgb",
        method="bilinear",
        quantization="scalar",
        bit_depth=8,
        odd_size="resize",
        seed=None,
    ):
        super().__init__()
        self._rng = np.random.default_rng(seed)
        self._init(locals())

    def get_transform(self, image):
        if self._rng.uniform() >= self.prob:
            return T.NoOpTransform()
        return LowLightSynthesisTransform(
            int(self._rng.integers(2**63)),
            self.ratio_range,
            self.output,
            self.method,
            self.quantization,
            self.bit_depth,
            self.odd_size,
        )
