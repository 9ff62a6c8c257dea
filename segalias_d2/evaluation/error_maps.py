"""Per-image boundary error maps, consistent with the metric regions of :mod:`.boundary_errors`.

For a prediction ``P``, GT ``G``, bands ``B_P``/``B_G`` and valid pixels ``V = (G != ignore)``,
a pixel is *wrong* if ``V & (P != G)``. Then:

* ``false_response = wrong & B_P``          -- the errors counted by FErr (predicted-boundary band)
* ``merging        = wrong & B_G``          -- the errors counted by MErr (GT-boundary band)
* ``displacement   = wrong & B_P & B_G``    -- the errors counted by DErr (both bands)
* ``interior       = wrong & ~(B_P | B_G)`` -- errors outside both bands (not a boundary error)

The three boundary maps overlap (``displacement`` is inside the other two). For display,
``category`` assigns each pixel one code: 0 correct/ignored, 1 false response only
(``B_P \\ B_G``), 2 merging only (``B_G \\ B_P``), 3 displacement, 4 interior error; 255 ignore.

For people: :func:`annotate_error_map` puts a panel beside an overlay with the legend (which colour
is which error region, which outline is which band) and the image's own numbers
(:func:`image_error_metrics`).
"""

from __future__ import annotations

from typing import Dict, Optional

import cv2
import numpy as np

from .boundary_errors import BoundaryErrorCounter, boundary_band

__all__ = [
    "compute_error_maps",
    "overlay_error_maps",
    "ERROR_COLORS",
    "CATEGORY_NAMES",
    "LEGEND",
    "PANEL_METRICS",
    "image_error_metrics",
    "annotate_error_map",
]

CATEGORY_NAMES = {1: "false_response", 2: "merging", 3: "displacement", 4: "interior"}
#: RGB colours of the display categories
ERROR_COLORS = {
    1: (255, 64, 64),  # false response: red
    2: (64, 128, 255),  # merging mistake: blue
    3: (255, 200, 0),  # displacement: yellow
    4: (160, 160, 160),  # interior error: grey
}


#: legend entries of :func:`annotate_error_map`: (label, fill colour or None, outline colour or
#: None)
LEGEND = (
    ("false response only (FErr)", ERROR_COLORS[1], None),
    ("merging only (MErr)", ERROR_COLORS[2], None),
    ("displacement (FErr+MErr+DErr)", ERROR_COLORS[3], None),
    ("interior error (mIoU only)", ERROR_COLORS[4], None),
    ("GT band outline", None, (255, 255, 255)),
    ("predicted band outline", None, (0, 0, 0)),
)
#: per-image numbers shown by :func:`annotate_error_map` (percent)
PANEL_METRICS = ("mIoU", "BIoU", "BAcc", "FErr", "MErr", "DErr")


def compute_error_maps(
    pred: np.ndarray, gt: np.ndarray, band_width: int = 15, ignore_label: int = 255
) -> Dict[str, np.ndarray]:
    """Boolean error maps (H x W) plus the ``category`` uint8 map and the two bands."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(
            f"compute_error_maps: prediction shape {pred.shape} differs from ground truth "
            f"{gt.shape}"
        )
    bp = boundary_band(pred, band_width)
    bg = boundary_band(gt, band_width)
    valid = gt != ignore_label
    wrong = valid & (pred != gt)
    fr = wrong & bp
    mg = wrong & bg
    dp = fr & bg
    interior = wrong & ~(bp | bg)
    cat = np.zeros(gt.shape, np.uint8)
    cat[fr & ~bg] = 1
    cat[mg & ~bp] = 2
    cat[dp] = 3
    cat[interior] = 4
    cat[~valid] = 255
    return {
        "false_response": fr,
        "merging": mg,
        "displacement": dp,
        "interior": interior,
        "wrong": wrong,
        "pred_band": bp,
        "gt_band": bg,
        "category": cat,
    }


def overlay_error_maps(
    image: np.ndarray,
    maps: Dict[str, np.ndarray],
    alpha: float = 0.6,
    colors: Optional[Dict[int, tuple]] = None,
    draw_bands: bool = True,
) -> np.ndarray:
    """Colour the error categories of :func:`compute_error_maps` over an RGB (or gray) image.

    Returns a uint8 H x W x 3 RGB image; band outlines (GT band: white, predicted band: black)
    are drawn when ``draw_bands``.
    """
    img = np.asarray(image)
    cat = maps["category"]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[:2] != cat.shape:
        raise ValueError(
            f"overlay_error_maps: image size {img.shape[:2]} differs from map size {cat.shape}"
        )
    if img.dtype != np.uint8:
        f = img.astype(np.float64)
        rng = f.max() - f.min()
        img = ((f - f.min()) / rng * 255 if rng > 0 else np.zeros_like(f)).astype(np.uint8)
    out = img[..., :3].astype(np.float32)
    colors = colors or ERROR_COLORS
    for code, col in colors.items():
        m = cat == code
        if m.any():
            out[m] = (1 - alpha) * out[m] + alpha * np.asarray(col, np.float32)
    out = out.clip(0, 255).astype(np.uint8)
    if draw_bands:
        k = np.ones((3, 3), np.uint8)
        for key, col in (("gt_band", (255, 255, 255)), ("pred_band", (0, 0, 0))):
            b = maps[key].astype(np.uint8)
            edge = (cv2.dilate(b, k) != cv2.erode(b, k)) & (b > 0)
            out[edge] = col
    return out


def image_error_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    band_width: int = 15,
    ignore_label: int = 255,
    class_names=None,
) -> Dict[str, float]:
    """The boundary error metrics of one image (percent), as
    :class:`~.boundary_errors.BoundaryErrorCounter` computes them for a dataset of this single
    image."""

    counter = BoundaryErrorCounter(num_classes, ignore_label, band_width)
    counter.update(pred, gt)
    return {k: float(v) * 100.0 for k, v in counter.metrics(class_names).items()}


_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _fit(text: str, width: int, scale: float) -> str:
    while len(text) > 4 and cv2.getTextSize(text, _FONT, scale, 1)[0][0] > width:
        text = text[:-4] + "..."
    return text


def annotate_error_map(
    overlay: np.ndarray,
    maps: Dict[str, np.ndarray],
    metrics: Optional[Dict[str, float]] = None,
    title: str = "",
    band_width: Optional[int] = None,
    panel_width: int = 250,
) -> np.ndarray:
    """``overlay`` (H x W x 3 RGB, unchanged at ``[:H, :W]``) with a panel on its right: ``title``,
    the legend of the colours and outlines, the image's metrics (``PANEL_METRICS`` of
    :func:`image_error_metrics`, "-" when not measured) and its error pixel counts. The canvas is as
    high as the taller of image and panel."""
    h, w = overlay.shape[:2]
    scale, line = 0.4, 16
    lines = []  # (text, swatch fill, swatch outline)
    if title:
        lines.append((title, None, None))
    lines.append(
        (
            "colours" + (f" (band {band_width} px = +-{band_width // 2} px)" if band_width else ""),
            None,
            None,
        )
    )
    lines += list(LEGEND)
    if metrics is not None:
        lines.append(("this image (%):", None, None))
        vals = [
            f"{k} {metrics[k]:.1f}" if np.isfinite(metrics.get(k, np.nan)) else f"{k} -"
            for k in PANEL_METRICS
        ]
        lines += [("  " + "   ".join(vals[i : i + 2]), None, None) for i in range(0, len(vals), 2)]
    counts = {
        k: int(maps[k].sum()) for k in ("false_response", "merging", "displacement", "interior")
    }
    lines.append(("error pixels:", None, None))
    lines.append((f"  FR {counts['false_response']}  MG {counts['merging']}", None, None))
    lines.append((f"  DP {counts['displacement']}  INT {counts['interior']}", None, None))
    panel_h = line * len(lines) + 8
    canvas = np.full((max(h, panel_h), w + panel_width, 3), 48, np.uint8)
    canvas[:h, :w] = overlay[..., :3]
    for i, (text, fill, edge) in enumerate(lines):
        y = 4 + line * i
        x = w + 6
        if fill is not None or edge is not None:  # colour swatch, text after it
            canvas[y + 2 : y + 13, x : x + 14] = fill if fill is not None else (128, 128, 128)
            if edge is not None:
                cv2.rectangle(canvas, (x, y + 2), (x + 13, y + 12), edge, 2)
            x += 20
        cv2.putText(
            canvas,
            _fit(text, w + panel_width - 4 - x, scale),
            (x, y + 12),
            _FONT,
            scale,
            (235, 235, 235),
            1,
            cv2.LINE_AA,
        )
    return canvas
