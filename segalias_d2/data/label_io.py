"""Ground-truth label maps read as the class indices they store (one reader for the mapper and the
evaluators).

Detectron2's ``utils.read_image(path, "L")`` converts every image to luminance. That is the identity
for 8-bit grey label PNGs (Cityscapes ``labelTrainIds``, ADE20K, SBD), but it turns a *palette* PNG
(PASCAL VOC's ``SegmentationClass``: pixel = class index, the palette only colours it) into grey
levels (VOC person, index 15, becomes 147) and clips 16-bit label maps. :func:`read_label_map`
returns the stored values instead.
"""

import numpy as np
from detectron2.utils.file_io import PathManager
from PIL import Image

from .raw_io import ImageReadError

__all__ = ["LABEL_MAP_MODES", "LabelMapError", "read_label_map"]

#: PIL modes that store one class index per pixel: 8-bit grey, palette (indices), 16- and 32-bit
#: integers
LABEL_MAP_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")


class LabelMapError(ImageReadError, ValueError):
    """A label map that is not a single-channel image of class indices (e.g. a colour-coded RGB
    rendering)."""


def read_label_map(path):
    """The H x W integer array of class indices stored in the label image ``path`` (dtype kept:
    uint8, uint16 or int32). Palette images give their indices, not their colours."""

    with PathManager.open(path, "rb") as f, Image.open(f) as im:
        if im.mode not in LABEL_MAP_MODES:
            raise LabelMapError(
                f"label map '{path}' has PIL mode {im.mode!r}; expected a single-channel image of "
                "class indices "
                f"(one of {LABEL_MAP_MODES}: 8-bit grey, palette or 16/32-bit integer). A "
                "colour-coded label image must be converted to class indices first."
            )
        labels = np.asarray(im)
    if labels.ndim != 2:
        raise LabelMapError(
            f"label map '{path}': expected an H x W array, got shape {labels.shape}"
        )
    return labels
