"""Display rendering of decoded low-light images, and the predictions drawn on them (for people,
never for models).

The data layer hands the model linear, unbalanced raw-RGB (or packed Bayer, or dark sRGB) in [0, 1],
which looks black or green on a screen. :func:`display_image` renders such an image display-ready:

* raw formats (``raw``, ``raw_rgb``, ``raw_packed``; packed planes become ``[R, (G1+G2)/2, B]``):
  white balance with the camera's as-shot gains (:func:`camera_white_balance`, from the RAW file's
  metadata), or gray-world gains when there is no metadata (a rendered PNG or an array), then
  brightening, then the sRGB transfer curve ("gamma");
* ``srgb``: linearised with the inverse sRGB curve, brightened, re-encoded.

Brightening (``brightness="auto"``) scales the linear image so that its mean luminance becomes 0.18
(middle grey), never darkening (gain >= 1) and at most x256; a number is used as the gain itself.
Highlights clip. No colour matrix is applied (camera RGB is shown as if it were sRGB), so colours
are approximate.
"""

from __future__ import annotations

from typing import Optional, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances
from detectron2.utils.visualizer import Visualizer

from ..data.raw_io import (
    ImageReadError,
    RawDecodeError,
    is_camera_raw,
    packed_to_raw_rgb,
    read_lowlight_image,
)

__all__ = [
    "camera_white_balance",
    "display_white_balance",
    "record_display_image",
    "gray_world_gains",
    "srgb_encode",
    "srgb_decode",
    "display_image",
    "draw_predictions",
    "AUTO_BRIGHTNESS_TARGET",
    "MAX_AUTO_GAIN",
]

#: mean linear luminance that auto-brightening aims at (middle grey)
AUTO_BRIGHTNESS_TARGET = 0.18
#: largest gain auto-brightening applies
MAX_AUTO_GAIN = 256.0
_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # Rec. 709 / sRGB primaries


def camera_white_balance(path) -> Optional[np.ndarray]:
    """As-shot white balance of a camera RAW file, ``[r, 1, b]`` gains (LibRaw ``cam_mul`` / green),
    or None.

    Metadata only (rawpy ``open_file``, no unpack). None when the file records no white balance.
    """
    import rawpy  # noqa: PLC0415  (optional dependency)

    raw = rawpy.RawPy()
    try:
        raw.open_file(str(path))
        mul = np.asarray(raw.camera_whitebalance, dtype=np.float64)[:3]
    except (rawpy.LibRawError, ValueError, OSError) as e:
        raise RawDecodeError(
            f"cannot read the white balance of camera RAW file '{path}': {type(e).__name__}: {e}"
        ) from e
    finally:
        raw.close()
    if mul.size < 3 or not np.all(mul > 0):
        return None
    return (mul / mul[1]).astype(np.float32)


def gray_world_gains(rgb: np.ndarray, limits=(0.25, 4.0)) -> np.ndarray:
    """``[mean G / mean R, 1, mean G / mean B]`` of a linear RGB image (clipped to ``limits``; 1 for
    an empty channel)."""
    means = rgb.reshape(-1, 3).astype(np.float64).mean(axis=0)
    gains = np.ones(3)
    for c in (0, 2):
        if means[c] > 0 and means[1] > 0:
            gains[c] = np.clip(means[1] / means[c], *limits)
    return gains.astype(np.float32)


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve (IEC 61966-2-1) of linear values in [0, 1]."""
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(
        np.float32
    )


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    """Inverse of :func:`srgb_encode`."""
    x = np.clip(encoded, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4)).astype(np.float32)


def _gain(linear: np.ndarray, brightness: Union[str, float]) -> float:
    if brightness == "auto":
        mean = float((linear.reshape(-1, 3) @ _LUMA).mean())
        return (
            float(np.clip(AUTO_BRIGHTNESS_TARGET / mean, 1.0, MAX_AUTO_GAIN))
            if mean > 0
            else MAX_AUTO_GAIN
        )
    gain = float(brightness)
    if not gain > 0:
        raise ValueError(f"brightness must be 'auto' or a gain > 0, got {brightness!r}")
    return gain


def display_image(
    decoded: np.ndarray,
    image_format: str,
    *,
    white_balance: Optional[np.ndarray] = None,
    brightness: Union[str, float] = "auto",
) -> np.ndarray:
    """Render a decoded float image (as the data layer returns it) as a uint8 RGB display image.

    ``white_balance``: ``[r, g, b]`` gains for raw formats (default gray-world); ignored for "srgb".
    """
    img = np.asarray(decoded, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"display_image: expected an (H, W, 3|4) image, got shape {img.shape}")
    if img.shape[2] == 4:
        img = packed_to_raw_rgb(img)
    if image_format == "srgb":
        gain = _gain(srgb_decode(img), brightness)
        if gain == 1.0:  # nothing to brighten: the photo as it is (no transfer-curve round trip)
            return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
        linear = srgb_decode(img)
    else:
        gains = (
            gray_world_gains(img)
            if white_balance is None
            else np.asarray(white_balance, np.float32).reshape(3)
        )
        linear = img * gains
    linear = linear * _gain(linear, brightness)
    return np.round(srgb_encode(linear) * 255.0).astype(np.uint8)


def record_display_image(
    record: dict, default_format: str = "srgb", brightness: Union[str, float] = "auto"
) -> np.ndarray:
    """A dataset record's image, decoded as the mapper decodes it and rendered with
    :func:`display_image`, at the record's ``height`` x ``width`` (half-resolution RAW/packed images
    are resized up, bilinear)."""

    fmt = record.get("image_format") or default_format
    ratio = record.get("exposure_ratio")
    decoded = read_lowlight_image(
        record["file_name"],
        fmt,
        raw_output=record.get("raw_output") or "raw_rgb",
        black_level=record.get("black_level"),
        white_level=record.get("white_level"),
        exposure_ratio=ratio if isinstance(ratio, (int, float)) else None,
    )
    img = display_image(
        decoded,
        fmt,
        white_balance=display_white_balance(record["file_name"], fmt),
        brightness=brightness,
    )
    h, w = int(record.get("height", img.shape[0])), int(record.get("width", img.shape[1]))
    if img.shape[:2] != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return img


def display_white_balance(path, image_format: str) -> Optional[np.ndarray]:
    """The camera white balance for displaying ``path`` (camera RAW read as a raw format), else
    None."""
    if image_format == "srgb" or not is_camera_raw(path):
        return None
    try:
        return camera_white_balance(path)
    except ImageReadError:
        return None


def _downscaled(display: np.ndarray, outputs: dict, max_size: int):
    """``display`` and ``outputs`` scaled so that the long side is at most ``max_size`` (0:
    unchanged)."""

    h, w = display.shape[:2]
    if not max_size or max(h, w) <= max_size:
        return display, outputs
    s = max_size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    small = cv2.resize(display, (nw, nh), interpolation=cv2.INTER_AREA)
    if "instances" in outputs:
        inst = outputs["instances"].to("cpu")
        out = Instances(
            (nh, nw),
            **{k: v for k, v in inst.get_fields().items() if k not in ("pred_boxes", "pred_masks")},
        )
        if inst.has("pred_boxes"):
            out.pred_boxes = Boxes(
                inst.pred_boxes.tensor * torch.tensor([nw / w, nh / h, nw / w, nh / h])
            )
        if inst.has("pred_masks"):
            masks = inst.pred_masks.to(torch.uint8)[:, None]
            out.pred_masks = (
                F.interpolate(masks, size=(nh, nw), mode="nearest")[:, 0].bool()
                if len(inst)
                else torch.zeros((0, nh, nw), dtype=torch.bool)
            )
        return small, {"instances": out}
    labels = outputs["sem_seg"].argmax(dim=0).to("cpu")[None, None].float()
    return small, {"labels": F.interpolate(labels, size=(nh, nw), mode="nearest")[0, 0].long()}


def draw_predictions(
    display: np.ndarray, outputs: dict, metadata, score_thresh: float = 0.5, max_size: int = 1600
) -> np.ndarray:
    """Detectron2's ``Visualizer``: instances with score >= ``score_thresh`` or the semantic
    classes, over ``display``.

    Images whose long side exceeds ``max_size`` (0: never) are drawn downscaled to it (nearest for
    masks and labels): a 24-megapixel RAW then draws in a second instead of many.
    """

    if "instances" not in outputs and "sem_seg" not in outputs:
        raise KeyError(
            "draw_predictions: outputs have neither 'instances' nor 'sem_seg' (keys "
            f"{sorted(outputs)})"
        )
    display, outputs = _downscaled(display, outputs, max_size)
    vis = Visualizer(display, metadata)
    if "instances" in outputs:
        inst = outputs["instances"].to("cpu")
        drawn = vis.draw_instance_predictions(inst[inst.scores >= score_thresh])
    else:
        labels = (
            outputs["labels"] if "labels" in outputs else outputs["sem_seg"].argmax(dim=0).to("cpu")
        )
        drawn = vis.draw_sem_seg(labels)
    return drawn.get_image()
