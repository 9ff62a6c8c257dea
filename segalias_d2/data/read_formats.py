"""What the low-light readers accept and how they fail: the ``image_format`` values, the data
layer's error classes, checks of numeric reading options (exposure ratio, black / white level) and
path resolution. Re-exported by :mod:`.raw_io` (the public module); like it, this imports neither
Detectron2 nor torch at import time."""

import os

import numpy as np

#: ``image_format`` values understood by :func:`read_lowlight_image`.
#: "raw": a camera RAW file (CR2/ARW/NEF/DNG...) decoded with rawpy;
#: "raw_rgb": an already rendered 3-channel raw-RGB image (LIS RAW-* PNGs, 8- or 16-bit),
#:            or a camera RAW file rendered to raw-RGB;
#: "raw_packed": a 4-channel packed Bayer image (camera RAW, .npy or 4-channel 8/16-bit PNG/TIFF);
#: "srgb": an ordinary 8-bit camera JPEG/PNG.
IMAGE_FORMATS = ("raw", "raw_rgb", "raw_packed", "srgb")
RAW_EXTENSIONS = (
    ".cr2",
    ".cr3",
    ".arw",
    ".nef",
    ".nrw",
    ".dng",
    ".raf",
    ".orf",
    ".rw2",
    ".pef",
    ".srw",
    ".raw",
)
#: extensions of rendered images / arrays: never a camera RAW file, so image_format "raw" refuses
#: them by name
RENDERED_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".npy")


class LowLightDataError(RuntimeError):
    """Base class of the data layer's errors (always names the file and, if known, the record)."""


class ImageReadError(LowLightDataError, OSError):
    """An image file is missing or cannot be decoded."""


class RawDecodeError(ImageReadError):
    """A camera RAW file cannot be decoded by LibRaw (corrupt, truncated, unsupported camera)."""


class UnsupportedFormatError(LowLightDataError, ValueError):
    """An ``image_format`` / output mode that the data layer does not know, or a file it does not
    fit."""


class InvalidValueError(LowLightDataError, ValueError):
    """A numeric reading option that would corrupt the pixels (a NaN or negative exposure ratio, a
    white level not above the black level, ...)."""


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def check_exposure_ratio(value, where="exposure_ratio"):
    """``value`` as a float if it is a finite number > 0 (None passes: no amplification); raises
    :class:`InvalidValueError` otherwise (NaN, inf, 0, negative, not a number)."""
    if value is None:
        return None
    if not _is_number(value) or not np.isfinite(value) or value <= 0:
        raise InvalidValueError(
            f"{where} must be a finite number > 0 (or None for no amplification), got {value!r}"
        )
    return float(value)


def check_levels(black_level=None, white_level=None, where=""):
    """Check black / white levels (file DN): black a finite number >= 0 or 1, 3 or 4 of them (per
    channel), white a finite number > every black level. None = the reader's default. Raises
    :class:`InvalidValueError`."""
    prefix = f"{where}: " if where else ""
    blacks = []
    if black_level is not None:
        blacks = list(np.ravel(np.asarray(black_level, dtype=object)))
        if len(blacks) not in (1, 3, 4) or not all(
            _is_number(b) and np.isfinite(b) and b >= 0 for b in blacks
        ):
            raise InvalidValueError(
                f"{prefix}black_level must be a finite number >= 0 or 1, 3 or 4 of them (per "
                f"channel), got {black_level!r}"
            )
    if white_level is not None:
        if not _is_number(white_level) or not np.isfinite(white_level) or white_level <= 0:
            raise InvalidValueError(
                f"{prefix}white_level must be a finite number > 0, got {white_level!r}"
            )
        if blacks and white_level <= max(blacks):
            raise InvalidValueError(
                f"{prefix}white_level {white_level!r} must be above the black level "
                f"{black_level!r} (the pixel scale is white - black)"
            )


def _path_manager():
    try:
        from detectron2.utils.file_io import PathManager  # noqa: PLC0415  (Detectron2's PathManager when installed, else iopath's)
    except ImportError:  # Detectron2 not installed: iopath's default manager handles local files
        from iopath.common.file_io import PathManager  # noqa: PLC0415  (Detectron2's PathManager when installed, else iopath's)
    return PathManager


def _local_path(path):
    pm = _path_manager()
    if not pm.exists(path):
        raise ImageReadError(f"image file not found: '{path}'")
    if pm.isdir(path):
        raise ImageReadError(f"'{path}' is a directory, not an image file")
    return pm.get_local_path(path)


def is_camera_raw(path):
    return os.path.splitext(str(path))[1].lower() in RAW_EXTENSIONS


def check_format(image_format):
    if image_format not in IMAGE_FORMATS:
        raise UnsupportedFormatError(
            f"unsupported image_format '{image_format}'; expected one of {IMAGE_FORMATS}"
        )
    return image_format
