"""Reading low-light images: camera RAW (rawpy), raw-RGB PNGs (8/16-bit), packed 4-channel, sRGB.

Every reader returns a **float32 HWC array normalised to [0, 1]** (before any exposure-ratio
amplification, which may push values above 1 only if ``clip=False``). Channel order is fixed:

* 3-channel outputs are **RGB** (raw-RGB = ``[R, mean(G1, G2), B]``, LIS convention);
* 4-channel packed outputs are ``[R, G1, B, G2]`` at half resolution, where G1 is the green on the
  red row and G2 the green on the blue row of the 2x2 Bayer cell (found from ``raw.raw_pattern``).

Nothing is squashed to 8 bits: 16-bit PNGs and 14-bit RAW data keep their precision as float32.

This module imports neither Detectron2 nor torch, so RAW reading works without them.
"""

import logging
import os
import struct

import cv2
import numpy as np

from .raw_layout import first_missing_block, tiff_data_blocks
from .read_formats import (  # noqa: F401  (re-exported: raw_io is the public reading module)
    IMAGE_FORMATS,
    RAW_EXTENSIONS,
    RENDERED_EXTENSIONS,
    ImageReadError,
    InvalidValueError,
    LowLightDataError,
    RawDecodeError,
    UnsupportedFormatError,
    _is_number,
    _local_path,
    _path_manager,
    check_exposure_ratio,
    check_format,
    check_levels,
    is_camera_raw,
)

__all__ = [
    "LowLightDataError",
    "ImageReadError",
    "RawDecodeError",
    "UnsupportedFormatError",
    "InvalidValueError",
    "IMAGE_FORMATS",
    "RAW_EXTENSIONS",
    "pack_raw_bayer",
    "packed_to_raw_rgb",
    "read_camera_raw",
    "read_exposure_time",
    "exposure_ratio_from_pair",
    "lis_pair_file_name",
    "read_lowlight_image",
    "check_exposure_ratio",
    "check_levels",
]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- RAW
def pack_raw_bayer(raw_image, raw_pattern, black_level_per_channel, white_level, clip=True):
    """Pack a Bayer mosaic into ``(H/2, W/2, 4)`` float32 planes ``[R, G1, B, G2]``, normalised.

    Args:
        raw_image: (H, W) integer mosaic (e.g. ``raw.raw_image_visible``); odd trailing rows/cols
            are dropped.
        raw_pattern: 2x2 array of colour indices (``raw.raw_pattern``): 0 = R, 1 = G1, 2 = B,
            3 = G2 (LibRaw's convention for RGBG cameras).
        black_level_per_channel: 4 black levels indexed by colour index.
        white_level: saturation value (scalar).
    Returns ``(x - black[c]) / (white - black[c])`` per plane, clipped to [0, 1] if ``clip``.
    """
    raw_image = np.asarray(raw_image)
    pattern = np.asarray(raw_pattern)
    if raw_image.ndim != 2 or pattern.shape != (2, 2):
        raise ValueError(
            f"expected a 2-D mosaic and a 2x2 pattern, got {raw_image.shape}, {pattern.shape}"
        )
    h2, w2 = raw_image.shape[0] // 2, raw_image.shape[1] // 2
    black = np.asarray(black_level_per_channel, dtype=np.float32).reshape(-1)
    if black.size == 1:
        black = np.repeat(black, 4)
    planes = []
    for color in (0, 1, 2, 3):
        where = np.argwhere(pattern == color)
        if len(where) == 0 and color == 3:  # 3-colour pattern (G appears twice as index 1)
            greens = np.argwhere(pattern == 1)
            where = greens[1:]
        if len(where) == 0:
            raise ValueError(f"colour index {color} not found in raw_pattern {pattern.tolist()}")
        dy, dx = where[0]
        plane = raw_image[dy : 2 * h2 : 2, dx : 2 * w2 : 2].astype(np.float32)
        b = black[color] if color < black.size else black[0]
        if not float(white_level) > b:  # also catches NaN levels
            raise InvalidValueError(
                f"white level {white_level} is not above the black level {b} of colour {color}: "
                "the pixels would be divided by zero or a negative scale"
            )
        planes.append((plane - b) / (float(white_level) - b))
    out = np.stack(planes, axis=-1)
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def packed_to_raw_rgb(packed):
    """``(H, W, 4)`` ``[R, G1, B, G2]`` -> ``(H, W, 3)`` ``[R, (G1+G2)/2, B]`` (SID/LIS, no
    demosaic)."""
    packed = np.asarray(packed, dtype=np.float32)
    return np.stack(
        [packed[..., 0], 0.5 * (packed[..., 1] + packed[..., 3]), packed[..., 2]], axis=-1
    )


def read_exposure_time(path):
    """Exposure time (seconds) of a camera RAW file, or None if it cannot be found.

    Uses rawpy's ``raw.other.shutter_speed`` (rawpy >= 0.19 exposes LibRaw's shot info); falls back
    to ``exifread`` if that optional package is installed.
    """
    import rawpy  # noqa: PLC0415  (optional dependency)

    local = _local_path(path)
    try:
        raw = rawpy.RawPy()
        try:
            raw.open_file(local)  # metadata only, no unpack
            other = getattr(raw, "other", None)
            t = getattr(other, "shutter_speed", None) if other is not None else None
        finally:
            raw.close()
        if t:
            return float(t)
    except Exception:  # noqa: BLE001  (fall through to exifread)
        pass
    try:
        import exifread  # optional  # noqa: PLC0415  (optional dependency)
    except ImportError:
        return None
    with open(local, "rb") as f:
        tags = exifread.process_file(f, details=False, stop_tag="ExposureTime")
    tag = tags.get("EXIF ExposureTime")
    if tag is None:
        return None
    v = tag.values[0]
    return float(v.num) / float(v.den) if hasattr(v, "num") else float(v)


def exposure_ratio_from_pair(dark_path, normal_path):
    """Amplification ratio ``t_normal / t_dark`` from the EXIF exposure times of a RAW pair."""
    t_dark, t_normal = read_exposure_time(dark_path), read_exposure_time(normal_path)
    if not t_dark or not t_normal:
        raise LowLightDataError(
            f"cannot read exposure times of the pair dark='{dark_path}' ({t_dark}) / "
            f"normal='{normal_path}' ({t_normal}); pass exposure_ratio explicitly"
        )
    return check_exposure_ratio(
        t_normal / t_dark,
        f"the exposure ratio t_normal / t_dark = {t_normal} / {t_dark} of "
        f"the pair dark='{dark_path}' / normal='{normal_path}'",
    )


def _check_declared_size(local, path):
    """Raise :class:`RawDecodeError` if the file ends before a data block its TIFF header declares.

    LibRaw decodes most truncated files without an error (see :mod:`.raw_layout`); this header walk
    (a few small reads) catches them before the decode. Non-TIFF formats (CR3, RAF, ...) are not
    checked here.
    """

    try:
        blocks = tiff_data_blocks(local)
    except (OSError, struct.error):  # unreadable header: LibRaw reports it
        return
    if not blocks:
        return
    size = os.path.getsize(local)
    block, n_short = first_missing_block(blocks, size)
    if block is None:
        return
    end = block.offset + block.length
    more = f"; {n_short - 1} more declared block(s) also extend past the end" if n_short > 1 else ""
    raise RawDecodeError(
        f"camera RAW file '{path}' is truncated: {block.what} declares {block.length} bytes at "
        f"offset {block.offset} (up to byte {end}), but the file has {size} bytes ({end - size} "
        f"missing){more}"
    )


def _check_not_truncated(mosaic, black, path):
    """Second line of defence after :func:`_check_declared_size` (for formats without a TIFF
    header).

    LibRaw may zero-fill the rows it could not read; a real sensor with a black level > 0 never
    produces a whole row of exact zeros, so a zero last row (or an all-zero mosaic) means the file
    is truncated. LibRaw does not always zero-fill (a Sony ARW cut short decodes to non-zero rows),
    so this check alone is not enough.
    """
    if mosaic.size == 0:
        raise RawDecodeError(f"camera RAW file '{path}' has an empty mosaic")
    if float(np.max(np.asarray(black, dtype=np.float64))) > 0 and not mosaic[-1].any():
        nonzero = np.flatnonzero(mosaic.any(axis=1))
        zero_rows = mosaic.shape[0] - (int(nonzero[-1]) + 1 if nonzero.size else 0)
        raise RawDecodeError(
            f"camera RAW file '{path}' looks truncated: its last {zero_rows} of {mosaic.shape[0]} "
            "rows are all zero (LibRaw zero-fills data missing from the file)"
        )


def lis_pair_file_name(dark_file_name, pair_root=None):
    """Normal-exposure partner of a LIS/LOD dark file: number n -> n - 1, same extension.

    ``pair_root`` replaces the folder (default: the dark file's folder).
    """
    folder, base = os.path.split(str(dark_file_name))
    stem, ext = os.path.splitext(base)
    if not stem.isdigit() or int(stem) < 2:
        raise LowLightDataError(
            f"cannot derive the normal-exposure partner of '{dark_file_name}': LIS pairs are "
            "numbered normal = n - 1, dark = n (even)"
        )
    return os.path.join(pair_root if pair_root else folder, f"{int(stem) - 1}{ext}")


def read_camera_raw(
    path, output="raw_rgb", black_level=None, white_level=None, exposure_ratio=None, clip=True
):
    """Decode a camera RAW file with rawpy.

    Args:
        output: "raw_rgb" -> (H/2, W/2, 3) ``[R, meanG, B]``; "packed" -> (H/2, W/2, 4)
            ``[R, G1, B, G2]``.
        black_level / white_level: override rawpy's ``black_level_per_channel`` / ``white_level``.
        exposure_ratio: multiply the normalised data by this factor (dark frames), then clip.
    Raises :class:`RawDecodeError` for corrupt files (chained to LibRaw's exception; rawpy also
    turns LibRaw's data-error count into ``LibRawDataError``) and for truncated files: a file that
    ends before a strip / tile / JPEG block or tag value declared by its TIFF header (checked from
    the header before decoding), or whose last mosaic row is all zero.
    """
    import rawpy  # noqa: PLC0415  (optional dependency)

    if output not in ("raw_rgb", "packed"):
        raise UnsupportedFormatError(
            f"unsupported RAW output mode '{output}' (expected 'raw_rgb' or 'packed')"
        )
    where = f"reading '{path}'"
    check_levels(black_level, white_level, where)
    exposure_ratio = check_exposure_ratio(exposure_ratio, f"exposure_ratio for '{path}'")
    local = _local_path(path)
    _check_declared_size(local, path)
    try:
        with rawpy.imread(local) as raw:
            mosaic = raw.raw_image_visible.copy()
            pattern = np.array(raw.raw_pattern)
            black = raw.black_level_per_channel if black_level is None else black_level
            white = raw.white_level if white_level is None else white_level
    except (rawpy.LibRawError, ValueError, OSError) as e:
        raise RawDecodeError(
            f"cannot decode camera RAW file '{path}': {type(e).__name__}: {e}"
        ) from e
    _check_not_truncated(mosaic, black, path)
    packed = pack_raw_bayer(mosaic, pattern, black, white, clip=clip)
    if exposure_ratio is not None:
        packed *= float(exposure_ratio)
        if clip:
            np.clip(packed, 0.0, 1.0, out=packed)
    return packed if output == "packed" else packed_to_raw_rgb(packed)


# ------------------------------------------------------------------------------ rendered images
def _read_with_cv2(path):

    local = _local_path(path)
    data = np.fromfile(local, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ImageReadError(
            f"cannot decode image file '{path}' (corrupt, truncated or not an image)"
        )
    if img.ndim == 2:
        img = img[:, :, None]
    c = img.shape[2]
    if c == 3:
        img = img[:, :, ::-1]  # OpenCV BGR -> RGB
    elif c == 4:
        # 4-channel files are written by this package with cv2 as-is (no colour meaning), so the
        # stored channel order is [R, G1, B, G2]; nothing to reorder.
        pass
    return img


def _to_unit_float(img, black_level=None, white_level=None):
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    elif np.issubdtype(img.dtype, np.floating):
        scale = 1.0
    else:
        raise ImageReadError(f"unsupported pixel dtype {img.dtype}")
    out = img.astype(np.float32)
    if black_level is not None or white_level is not None:
        black = np.asarray(0.0 if black_level is None else black_level, dtype=np.float32)
        white = float(scale if white_level is None else white_level)
        if black.size == 4 and out.shape[-1] == 3:  # per-channel [R, G1, B, G2] -> [R, G, B]
            black = np.array([black[0], 0.5 * (black[1] + black[3]), black[2]], dtype=np.float32)
        return (out - black) / (white - black)
    return out / scale


def read_lowlight_image(
    path,
    image_format,
    raw_output="raw_rgb",
    black_level=None,
    white_level=None,
    exposure_ratio=None,
    clip=True,
):
    """Read one image as float32 HWC in [0, 1] (see the module docstring for channel order).

    Args:
        image_format: one of :data:`IMAGE_FORMATS`.
        raw_output: for ``image_format="raw"``: "raw_rgb" (3-ch) or "packed" (4-ch).
        black_level / white_level: in the file's digital numbers. For camera RAW they override
            rawpy's values; for PNG/TIFF inputs they normalise ``(x - black) / (white - black)``
            (default: the full range of the dtype).
        exposure_ratio: amplification applied after normalisation (then clipped if ``clip``).
    """
    check_format(image_format)
    path = str(path)
    check_levels(black_level, white_level, f"reading '{path}'")
    exposure_ratio = check_exposure_ratio(exposure_ratio, f"exposure_ratio for '{path}'")
    if image_format == "raw" and os.path.splitext(path)[1].lower() in RENDERED_EXTENSIONS:
        raise UnsupportedFormatError(
            f"'{path}' is not a camera RAW file: image_format 'raw' decodes camera RAW files "
            f"({', '.join(RAW_EXTENSIONS)}) "
            "with rawpy; register a rendered 3-channel raw-RGB image as 'raw_rgb' and a 4-channel "
            "packed Bayer PNG/TIFF/.npy as 'raw_packed'"
        )
    if image_format == "raw" or (image_format in ("raw_rgb", "raw_packed") and is_camera_raw(path)):
        mode = {"raw": raw_output, "raw_rgb": "raw_rgb", "raw_packed": "packed"}[image_format]
        return read_camera_raw(path, mode, black_level, white_level, exposure_ratio, clip)
    if path.lower().endswith(".npy"):
        pm = _path_manager()
        try:
            with pm.open(_local_path(path), "rb") as f:
                img = np.load(f)
        except (ValueError, OSError, EOFError) as e:
            raise ImageReadError(f"cannot read array file '{path}': {e}") from e
        if img.ndim == 2:
            img = img[:, :, None]
    else:
        img = _read_with_cv2(path)
    if image_format == "srgb" and img.dtype == np.uint16:
        raise UnsupportedFormatError(
            f"'{path}' is a 16-bit image, but image_format 'srgb' is for 8-bit camera JPEG/PNG "
            "photos; 16-bit files "
            "are linear renderings of RAW data (LIS RAW-* PNGs): register them as image_format "
            "'raw_rgb' (3 "
            "channels) or 'raw_packed' (4 channels), or convert the file to 8 bits if it really is "
            "an sRGB photo"
        )
    expected = {"raw_rgb": 3, "srgb": 3, "raw_packed": 4}[image_format]  # "raw" returned above
    if image_format == "srgb" and img.shape[2] == 4:  # RGBA photo -> drop alpha
        img = img[:, :, :3]
    if image_format == "srgb" and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.shape[2] != expected:
        raise ImageReadError(
            f"'{path}' has {img.shape[2]} channels but image_format '{image_format}' needs "
            f"{expected}"
        )
    out = _to_unit_float(img, black_level, white_level)
    if exposure_ratio is not None:
        out = out * float(exposure_ratio)
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return np.ascontiguousarray(out, dtype=np.float32)
