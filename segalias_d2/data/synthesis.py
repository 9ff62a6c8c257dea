"""Synthetic low-light RAW from sRGB images (LIS / ELD "PGRU" model, Canon EOS 5D Mark IV).

Pipeline (``synthesize_lowlight``), channel order **RGB** throughout:

1. **unprocess** sRGB [0, 1] -> linear camera RGB: inverse smoothstep tone curve, inverse gamma 2.2,
   inverse of the fixed calibrated ``CAM2RGB`` matrix, random inverse white balance / brightness
   with highlight-safe gains (Brooks et al. 2019 as used by LIS);
2. **mosaic** RGGB -> packed ``(H/2, W/2, 4)`` planes ``[R, G1, B, G2]`` (G1 on the red row);
3. **PGRU noise** in the dark digital-number domain at exposure ratio ``r ~ U(10, 100)``:
   Poisson shot noise with system gain K (log-uniform), Tukey-lambda read noise, per-row banding,
   quantisation noise; then amplified back by ``r`` (so the result has the clean image's
   brightness, LIS RAW-dark convention);
4. **process** to the network input: linear raw-RGB (no WB, no CCM, no gamma) by a bilinear
   demosaic back to full resolution (OpenCV ``COLOR_BayerRGGB2RGB``, which puts R in channel 0),
   or as ``[R, mean(G1, G2), B]`` at half resolution (``method="pack"``).

Released behaviour (LIS ``AddNoisyImg`` + ``process.py``), selected with :data:`RELEASED_SYNTHESIS`:

* ``bit_depth=8``: the sRGB input is held as uint8, the mosaic is multiplied by 255, rounded to
  uint8 and demosaiced by OpenCV on the uint8 mosaic, so every output value is a multiple of 1/255;
* ``odd_size="resize"``: an odd-sized image is resized (OpenCV bilinear) to the even size below
  it before unprocessing and the demosaiced result is resized back (bilinear, uint8);
* ``quantization="scalar"``: one U(-0.5, 0.5) DN offset per image (the ELD/LIS quirk).

The function's own defaults are the float variant (``bit_depth=16``: 16-bit demosaic, float
output; ``odd_size="pad"``: edge-pad and crop; per-pixel quantisation noise), which the demo data
builder uses to render 16-bit LIS-like files. Channel order differs from the released code on
purpose: that code ends up with mixed BGR/RGB orders (docs/data.md), this module is RGB everywhere.

Every random draw comes from the ``numpy.random.Generator`` passed in, so results are reproducible.
"""

import cv2
import numpy as np

from .noise_model import (  # noqa: F401  (re-exported: the synthesis API includes the noise model)
    K_MAX,
    K_MIN,
    QUANTIZATION_MODES,
    ROW_SCALE_FIT,
    SATURATION,
    TL_SCALE_FIT,
    TUKEY_LAMBDAS,
    NoiseParams,
    _rng,
    add_pgru_noise,
    predicted_variance,
    sample_noise_params,
)

__all__ = [
    "CAM2RGB",
    "RGB2CAM",
    "SATURATION",
    "K_MIN",
    "K_MAX",
    "TUKEY_LAMBDAS",
    "RELEASED_SYNTHESIS",
    "NoiseParams",
    "inverse_smoothstep",
    "smoothstep",
    "unprocess",
    "mosaic",
    "demosaic",
    "sample_noise_params",
    "add_pgru_noise",
    "predicted_variance",
    "process_raw_rgb",
    "process_srgb",
    "synthesize_lowlight",
]

#: calibrated Canon EOS 5D Mark IV camera -> linear sRGB matrix, rows = output. Values of the LIS
#: release (noisemodel/unprocess.py ``get_calibrated_cam2rgb``, there float32); the LIS report
#: quotes them rounded to 4 decimals (2.0484, -1.2716, ...).
CAM2RGB = np.array(
    [
        [2.04840695, -1.27161572, 0.22320878],
        [-0.22163155, 1.77694640, -0.55531485],
        [-0.00770995, -0.59257895, 1.60028890],
    ],
    dtype=np.float64,
)
RGB2CAM = np.linalg.inv(CAM2RGB)
#: keyword arguments of :func:`synthesize_lowlight` that reproduce the released LIS pipeline.
RELEASED_SYNTHESIS = {
    "quantization": "scalar",
    "bit_depth": 8,
    "odd_size": "resize",
    "method": "bilinear",
}


def inverse_smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return 0.5 - np.sin(np.arcsin(1.0 - 2.0 * x) / 3.0)


def smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return 3.0 * x**2 - 2.0 * x**3


def _apply_ccm(x, ccm):
    return np.einsum("...c,dc->...d", x, ccm)


def unprocess(rgb, rng=None, wb_gains=None):
    """sRGB (HWC, RGB, [0, 1] or uint8) -> linear camera RGB (HWC, [0, 1]) and a metadata dict.

    The metadata holds the drawn gains (``red_gain``, ``blue_gain``, ``brightness``) and the
    per-pixel effective gains ``gains`` (H, W, 3) applied, so :func:`process_srgb` can invert them.
    ``wb_gains=(red_gain, blue_gain, brightness)`` fixes the draw.
    """
    rng = _rng(rng)
    x = np.asarray(rgb)
    x = x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)
    x = inverse_smoothstep(x)
    x = np.maximum(x, 1e-8) ** 2.2
    x = _apply_ccm(x, RGB2CAM)
    if wb_gains is None:
        brightness = 1.0 / rng.normal(0.8, 0.1)
        red_gain = rng.uniform(1.9, 2.4)
        blue_gain = rng.uniform(1.5, 1.9)
    else:
        red_gain, blue_gain, brightness = wb_gains
    gains = np.array([1.0 / red_gain, 1.0, 1.0 / blue_gain]) / brightness
    gray = np.mean(x, axis=-1, keepdims=True)
    mask = (np.maximum(gray - 0.9, 0.0) / 0.1) ** 2
    safe = np.maximum(mask + (1.0 - mask) * gains, gains)
    x = np.clip(x * safe, 0.0, 1.0)
    meta = {
        "red_gain": float(red_gain),
        "blue_gain": float(blue_gain),
        "brightness": float(brightness),
        "gains": safe,
    }
    return x, meta


def mosaic(cam_rgb):
    """(H, W, 3) -> packed RGGB (H/2, W/2, 4) ``[R, G1, B, G2]``; H and W must be even."""
    h, w = cam_rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"mosaic needs even height and width, got {h}x{w}")
    return np.stack(
        [
            cam_rgb[0::2, 0::2, 0],
            cam_rgb[0::2, 1::2, 1],
            cam_rgb[1::2, 1::2, 2],
            cam_rgb[1::2, 0::2, 1],
        ],
        axis=-1,
    )


def _unpack_bayer(packed):
    """Packed ``[R, G1, B, G2]`` (h, w, 4) -> RGGB Bayer mosaic (2h, 2w), clipped to [0, 1]."""
    h, w = packed.shape[:2]
    bayer = np.empty((2 * h, 2 * w), dtype=np.float32)
    bayer[0::2, 0::2] = packed[..., 0]
    bayer[0::2, 1::2] = packed[..., 1]
    bayer[1::2, 1::2] = packed[..., 2]
    bayer[1::2, 0::2] = packed[..., 3]
    return np.clip(bayer, 0.0, 1.0)


def _check_bit_depth(bit_depth):
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 (released LIS process.py) or 16, got {bit_depth!r}")


def _demosaic_int(packed, bit_depth):
    """Bilinear demosaic on an integer mosaic; returns (uint8/uint16 RGB, full-scale value)."""

    _check_bit_depth(bit_depth)
    top = 255.0 if bit_depth == 8 else 65535.0
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    # released process.py: (bayer * 255.).round().astype(np.uint8) on a float32 mosaic
    bayer = np.round(_unpack_bayer(packed) * np.float32(top)).astype(dtype)
    # OpenCV names Bayer codes after the second row: RGGB is COLOR_BayerRGGB2RGB (== BayerBG2RGB
    # == BayerRG2BGR), R in channel 0. The release calls COLOR_BAYER_RG2RGB (B in channel 0) and
    # swaps channels afterwards (RGB2BGR), which gives the same array as this call.
    code = getattr(cv2, "COLOR_BayerRGGB2RGB", cv2.COLOR_BAYER_BG2RGB)
    return cv2.cvtColor(bayer, code), top


def demosaic(packed, bit_depth=16):
    """Packed ``[R, G1, B, G2]`` (h, w, 4) in [0, 1] -> full-resolution RGB (2h, 2w, 3), bilinear.

    OpenCV's bilinear demosaic on an integer mosaic of ``bit_depth`` bits: 8 is the released LIS
    ``process.py`` (output on multiples of 1/255), 16 keeps precision 1/65535.
    """
    rgb, top = _demosaic_int(packed, bit_depth)
    return rgb.astype(np.float32) / np.float32(top)


def process_raw_rgb(packed, out_hw=None, method="bilinear", bit_depth=16):
    """Packed raw -> linear raw-RGB network input (no WB/CCM/gamma), float32 RGB.

    method "bilinear": demosaic to (2h, 2w) on a ``bit_depth``-bit mosaic; "pack": ``[R, mean G,
    B]`` at (h, w) (real LIS RAW rendering, float only). The result is cropped to ``out_hw`` when it
    exceeds it by at most one pixel (edge-padded odd sizes), otherwise resized to it with OpenCV
    bilinear; at 8 bits the resize runs on the uint8 image (released ``cv2.resize(RGB, (W, H))``).
    """

    if method == "bilinear":
        out, top = _demosaic_int(packed, bit_depth)
    elif method == "pack":
        if bit_depth != 16:
            raise ValueError(
                "method 'pack' has no 8-bit (released) rendering; use method 'bilinear' or "
                "bit_depth 16"
            )
        p = np.asarray(packed, dtype=np.float32)
        out, top = np.stack([p[..., 0], 0.5 * (p[..., 1] + p[..., 3]), p[..., 2]], axis=-1), 1.0
    else:
        raise ValueError(f"unknown method '{method}' (expected 'bilinear' or 'pack')")
    if out_hw is not None:
        h, w = out_hw
        if (
            method == "bilinear"
            and out.shape[0] >= h
            and out.shape[1] >= w
            and out.shape[0] - h <= 1
            and out.shape[1] - w <= 1
        ):
            out = out[:h, :w]
        elif out.shape[:2] != (h, w):
            out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out, dtype=np.float32) / np.float32(top)


def process_srgb(cam_rgb, meta):
    """Forward ISP: linear camera RGB (H, W, 3) -> sRGB [0, 1], inverting :func:`unprocess`'s draw.

    Divides by the per-pixel gains in ``meta["gains"]`` (cropped to the image), applies ``CAM2RGB``,
    gamma 1/2.2 and the smoothstep tone curve.
    """
    h, w = cam_rgb.shape[:2]
    x = np.asarray(cam_rgb, dtype=np.float64) / meta["gains"][:h, :w]
    x = np.clip(_apply_ccm(x, CAM2RGB), 0.0, 1.0)
    x = np.maximum(x, 1e-8) ** (1.0 / 2.2)
    return smoothstep(x).astype(np.float32)


def _to_even(img, odd_size):
    """Make H and W even: "pad" (edge-pad by one) or "resize" (released: OpenCV bilinear resize to
    ``(W // 2 * 2, H // 2 * 2)``, on the uint8 image when the input is uint8)."""

    h, w = img.shape[:2]
    if not (h % 2 or w % 2):
        return img
    if odd_size == "pad":
        return np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    if h < 2 or w < 2:
        raise ValueError(f"odd_size 'resize' needs an image of at least 2x2 pixels, got {h}x{w}")
    return cv2.resize(
        np.ascontiguousarray(img), (w // 2 * 2, h // 2 * 2), interpolation=cv2.INTER_LINEAR
    )


def synthesize_lowlight(
    rgb,
    rng=None,
    ratio_range=(10.0, 100.0),
    ratio=None,
    noise=True,
    components="PGRU",
    quantization="per_pixel",
    output="raw_rgb",
    method="bilinear",
    return_clean=True,
    return_dark=False,
    wb_gains=None,
    bit_depth=16,
    odd_size="pad",
):
    """Turn one sRGB image (HWC **RGB**, uint8 or float [0, 1]) into a synthetic low-light input.

    ``synthesize_lowlight(img, rng, **RELEASED_SYNTHESIS)`` is the released LIS ``AddNoisyImg``.

    Args:
        output: "raw_rgb" -> (H, W, 3) linear raw-RGB (``method`` "bilinear" or "pack");
            "packed" -> half-resolution ``[R, G1, B, G2]`` ((H+1)//2 x (W+1)//2 with ``odd_size``
            "pad", H//2 x W//2 with "resize").
        noise: False skips the noise model (the "noisy" output is then the clean one).
        return_clean: also return the clean counterpart from the same unprocess draw (for paired,
            DSL-style training).
        return_dark: also return the un-amplified noisy packed capture (``"dark_packed"``), the
            unprocess metadata (``"meta"``) and the camera RGB image (``"cam_rgb"``), e.g. to render
            an sRGB-dark image with :func:`process_srgb`.
        wb_gains: ``(red_gain, blue_gain, brightness)`` fixes the unprocess draw.
        bit_depth: 8 = released 8-bit rendering (a float input is first rounded to uint8, lossless
            for 8-bit sources; outputs are multiples of 1/255); 16 = float variant.
        odd_size: "resize" (released) or "pad" (variant), see :func:`_to_even`.
    Returns a dict with "noisy" (float32 in [0, 1]), optionally "clean", "dark_packed", "meta",
    "cam_rgb", plus "wb_gains" (the unprocess draw) and "params" (:class:`NoiseParams` as a dict;
    None when ``noise`` is False).
    """
    rng = _rng(rng)
    _check_bit_depth(bit_depth)
    if odd_size not in ("pad", "resize"):
        raise ValueError(f"odd_size must be 'resize' (released) or 'pad', got {odd_size!r}")
    if output not in ("raw_rgb", "packed"):
        raise ValueError(f"unknown output '{output}' (expected 'raw_rgb' or 'packed')")
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"synthesize_lowlight expects an HxWx3 RGB image, got shape {img.shape}")
    if (
        bit_depth == 8 and img.dtype != np.uint8
    ):  # the released pipeline holds the sRGB image as uint8
        img = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    h, w = img.shape[:2]
    img = _to_even(img, odd_size)
    cam, meta = unprocess(img, rng, wb_gains=wb_gains)
    clean_packed = mosaic(cam)
    params = sample_noise_params(rng, ratio_range, ratio) if noise else None
    noisy_packed = (
        add_pgru_noise(clean_packed, params, rng, components, quantization)
        if noise
        else clean_packed
    )

    def finish(packed):
        if output == "packed":
            if bit_depth == 8:
                packed = np.round(np.clip(packed, 0.0, 1.0) * 255.0) / 255.0
            return np.ascontiguousarray(packed, dtype=np.float32)
        return process_raw_rgb(packed, (h, w), method, bit_depth)

    result = {
        "noisy": finish(noisy_packed),
        "params": params.as_dict() if params else None,
        "wb_gains": (meta["red_gain"], meta["blue_gain"], meta["brightness"]),
    }
    if return_clean:
        result["clean"] = finish(clean_packed)
    if return_dark:
        result["dark_packed"] = (
            (noisy_packed / params.ratio).astype(np.float32) if noise else clean_packed
        )
        result["meta"] = meta
        result["cam_rgb"] = cam
    return result
