"""Augmentation lists built from the config: the low-light recipe (Detectron2's resize + flip with
the resize interpolation of ``INPUT.SEGALIAS``; at test time optionally stretched to a multiple,
MMSeg's ``ResizeToMultiple``) and the semantic recipe (mmseg-like scale jitter, crop with a
category-area limit, flip, MMSeg's ``PhotoMetricDistortion``)."""

import cv2
import numpy as np
from detectron2.data import transforms as T
from PIL import Image

__all__ = [
    "RESIZE_INTERPOLATIONS",
    "build_lowlight_augmentation",
    "build_sem_seg_train_aug",
    "PhotometricDistortion",
    "PhotometricDistortionTransform",
    "ResizeToMultiple",
]

#: names accepted by INPUT.SEGALIAS.RESIZE_INTERP / RESIZE_INTERP_TEST
RESIZE_INTERPOLATIONS = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
}


def _interp(cfg, key):
    name = str(cfg.INPUT.SEGALIAS[key]).lower()
    if name not in RESIZE_INTERPOLATIONS:
        raise ValueError(
            f"INPUT.SEGALIAS.{key} must be one of {sorted(RESIZE_INTERPOLATIONS)}, got '{name}'"
        )
    return RESIZE_INTERPOLATIONS[name]


def _random_flip(cfg):
    return T.RandomFlip(
        horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
        vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
    )


def build_lowlight_augmentation(cfg, is_train):
    """Detectron2's default augmentation (resize shortest edge + flip), with the resize
    interpolation from ``cfg.INPUT.SEGALIAS.RESIZE_INTERP`` (training) or ``RESIZE_INTERP_TEST``
    (inference) and the optional crop of ``cfg.INPUT.CROP``."""
    interp = _interp(cfg, "RESIZE_INTERP" if is_train else "RESIZE_INTERP_TEST")
    if is_train:
        inp = cfg.INPUT
        min_size, max_size, sample = (
            inp.MIN_SIZE_TRAIN,
            inp.MAX_SIZE_TRAIN,
            inp.MIN_SIZE_TRAIN_SAMPLING,
        )
    else:
        min_size, max_size, sample = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice"
    augs = [T.ResizeShortestEdge(min_size, max_size, sample, interp=interp)]
    multiple = int(cfg.INPUT.SEGALIAS.get("RESIZE_TO_MULTIPLE_TEST", 0))
    if not is_train and multiple > 0:
        augs.append(ResizeToMultiple(multiple, interp=interp))
    if is_train and cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(_random_flip(cfg))
    if is_train and cfg.INPUT.CROP.ENABLED:
        augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    return augs


def build_sem_seg_train_aug(cfg):
    """Semantic recipe (mmseg-like): scale jitter, crop with a category-area limit, flip."""
    rs = cfg.INPUT.SEGALIAS.RESIZE_SCALE
    if rs.ENABLED:
        augs = [T.ResizeScale(rs.MIN_SCALE, rs.MAX_SCALE, rs.TARGET_HEIGHT, rs.TARGET_WIDTH)]
    else:
        inp = cfg.INPUT
        augs = [
            T.ResizeShortestEdge(
                inp.MIN_SIZE_TRAIN, inp.MAX_SIZE_TRAIN, inp.MIN_SIZE_TRAIN_SAMPLING
            )
        ]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.SEGALIAS.CROP_SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(_random_flip(cfg))
    pmd = cfg.INPUT.SEGALIAS.PHOTOMETRIC_DISTORTION
    if pmd.ENABLED:  # MMSeg order: after the flip, before normalisation and padding
        augs.append(
            PhotometricDistortion(
                pmd.BRIGHTNESS_DELTA,
                tuple(pmd.CONTRAST_RANGE),
                tuple(pmd.SATURATION_RANGE),
                pmd.HUE_DELTA,
            )
        )
    return augs


class ResizeToMultiple(T.Augmentation):
    """Stretch the image UP to the next multiple of ``divisor`` in height and width (MMSeg
    ``ResizeToMultiple``, the released ADE20K test pipeline with ``divisor=32``); no-op when both
    already are multiples."""

    def __init__(self, divisor, interp=Image.BILINEAR):
        super().__init__()
        if int(divisor) != divisor or divisor < 1:
            raise ValueError(
                "ResizeToMultiple divisor (INPUT.SEGALIAS.RESIZE_TO_MULTIPLE_TEST) must be a "
                f"positive int, got {divisor!r}"
            )
        self.divisor = int(divisor)
        self.interp = interp

    def get_transform(self, image):
        h, w = image.shape[:2]
        d = self.divisor
        new_h, new_w = -(-h // d) * d, -(-w // d) * d
        if (new_h, new_w) == (h, w):
            return T.NoOpTransform()
        return T.ResizeTransform(h, w, new_h, new_w, self.interp)


class PhotometricDistortionTransform(T.Transform):
    """MMSeg 0.25 ``PhotoMetricDistortion`` with its random choices fixed (an image-only transform).

    On the 8-bit image, every applied step computes in float32 and casts back with ``clip(0, 255)``
    then ``astype(uint8)`` (truncation): brightness ``+ brightness``; contrast ``* contrast``
    (first, or last when ``contrast_last``); saturation ``* saturation`` on OpenCV's HSV S channel;
    hue ``(H + hue) mod 180`` on OpenCV's H channel (0..179). A step whose value is None is skipped.
    ``channel_order`` is the image's ("RGB": the mapper's canonical order; MMSeg runs on BGR, the
    same colours). Float images in [0, 1] are rounded to 8-bit levels (x * 255, half to even, as
    OpenCV's uint8 resize output) when any step applies and returned as float32 in [0, 1]; uint8
    images stay uint8. Segmentation and coordinates are unchanged.
    """

    def __init__(
        self,
        brightness=None,
        contrast=None,
        contrast_last=False,
        saturation=None,
        hue=None,
        channel_order="RGB",
    ):
        super().__init__()
        if channel_order not in ("RGB", "BGR"):
            raise ValueError(
                f"PhotometricDistortionTransform channel_order must be 'RGB' or 'BGR', "
                f"got {channel_order!r}"
            )
        self._set_attributes(locals())

    @staticmethod
    def _convert(img, alpha=1.0, beta=0.0):
        return np.clip(
            img.astype(np.float32) * np.float32(alpha) + np.float32(beta), 0, 255
        ).astype(np.uint8)

    def _hsv(self, img, fn):
        to_hsv, to_img = (
            (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
            if self.channel_order == "RGB"
            else (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
        )
        hsv = cv2.cvtColor(img, to_hsv)
        fn(hsv)
        return cv2.cvtColor(hsv, to_img)

    def apply_image(self, img):
        steps = (self.brightness, self.contrast, self.saturation, self.hue)
        if all(v is None for v in steps):
            return img
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"PhotometricDistortion needs a 3-channel colour image, got shape {img.shape}"
            )
        is_float = img.dtype != np.uint8
        if is_float:
            u8 = np.clip(np.rint(img.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
        else:
            u8 = img
        if self.brightness is not None:
            u8 = self._convert(u8, beta=self.brightness)
        if self.contrast is not None and not self.contrast_last:
            u8 = self._convert(u8, alpha=self.contrast)
        if self.saturation is not None:

            def _sat(hsv):
                hsv[:, :, 1] = self._convert(hsv[:, :, 1], alpha=self.saturation)

            u8 = self._hsv(u8, _sat)
        if self.hue is not None:

            def _hue(hsv):
                hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int64) + int(self.hue)) % 180

            u8 = self._hsv(u8, _hue)
        if self.contrast is not None and self.contrast_last:
            u8 = self._convert(u8, alpha=self.contrast)
        return u8.astype(np.float32) / np.float32(255.0) if is_float else u8

    def apply_coords(self, coords):
        return coords

    def apply_segmentation(self, segmentation):
        return segmentation

    def inverse(self):
        return T.NoOpTransform()


class PhotometricDistortion(T.Augmentation):
    """MMSeg 0.25 ``PhotoMetricDistortion`` as a Detectron2 augmentation (defaults = MMSeg's).

    Random choices, drawn from NumPy's global RNG in MMSeg's order: brightness (p 0.5, U(-delta,
    delta)); a coin for the contrast position (1 = first, 0 = last); contrast if first (p 0.5, U(lo,
    hi)); saturation (p 0.5, U(lo, hi)); hue (p 0.5, ``randint(-delta, delta)``, upper bound
    excluded: -18..17); contrast if last.
    """

    def __init__(
        self,
        brightness_delta=32,
        contrast_range=(0.5, 1.5),
        saturation_range=(0.5, 1.5),
        hue_delta=18,
        channel_order="RGB",
    ):
        super().__init__()
        for name, rng in (
            ("contrast_range", contrast_range),
            ("saturation_range", saturation_range),
        ):
            if len(rng) != 2 or not 0 <= rng[0] <= rng[1]:
                raise ValueError(
                    f"PhotometricDistortion {name} must be (low, high) with 0 <= low <= high, got "
                    f"{rng!r}"
                )
        if brightness_delta < 0 or int(hue_delta) != hue_delta or hue_delta < 0:
            raise ValueError(
                "PhotometricDistortion brightness_delta must be >= 0 and hue_delta an int >= 0, "
                f"got {brightness_delta!r}, {hue_delta!r}"
            )
        self._init(locals())

    def get_transform(self, image):
        rnd = np.random
        brightness = (
            rnd.uniform(-self.brightness_delta, self.brightness_delta) if rnd.randint(2) else None
        )
        contrast_first = rnd.randint(2) == 1
        contrast = None
        if contrast_first and rnd.randint(2):
            contrast = rnd.uniform(*self.contrast_range)
        saturation = rnd.uniform(*self.saturation_range) if rnd.randint(2) else None
        hue = int(rnd.randint(-self.hue_delta, self.hue_delta)) if rnd.randint(2) else None
        if not contrast_first and rnd.randint(2):
            contrast = rnd.uniform(*self.contrast_range)
        return PhotometricDistortionTransform(
            brightness, contrast, not contrast_first, saturation, hue, self.channel_order
        )
