"""``LowLightDatasetMapper``: a Detectron2 dataset mapper for RAW / raw-RGB / packed / sRGB inputs.

Usage::

    mapper = LowLightDatasetMapper(cfg, is_train=True)
    loader = build_detection_train_loader(cfg, mapper=mapper)

What it does per dataset dict:

1. reads the image with :func:`raw_io.read_lowlight_image` according to the record's
   ``image_format`` (default ``cfg.INPUT.SEGALIAS.DEFAULT_IMAGE_FORMAT``) as float32 in [0, 1],
   optionally through a :class:`~.decode_cache.DecodeCache` (each RAW file decoded once);
2. **resolution choice for half-resolution inputs**: annotations (boxes, polygons, masks,
   ``sem_seg``) are given in the frame of the record's ``height``/``width``. When a RAW or packed
   image decodes at another resolution (packed Bayer is half size), the annotations are scaled to
   the decoded image (a ``ScaleTransform`` placed before the augmentations) instead of resizing the
   image, so the packed Bayer planes are never interpolated before the augmentations. The output
   keeps the original ``height``/``width``, so predictions are rescaled to the annotation frame at
   inference as usual. For other formats a size mismatch is an error (Detectron2's check);
3. applies the Detectron2 augmentations on the float image (resize interpolation configurable
   separately for training and test: ``RESIZE_INTERP`` / ``RESIZE_INTERP_TEST``), keeping arrays
   contiguous. Resizing a float image goes through ``torch.nn.functional.interpolate``; its
   "nearest" picks source pixel ``floor(dst * in / out)``, the same pixels as OpenCV's
   ``INTER_NEAREST`` (the released LIS/mmcv resize of the uint8 image), not PIL's centre rule;
4. optionally (training, sRGB records, ``SYNTHESIS.ENABLED``) turns the sRGB image into a synthetic
   low-light raw-RGB (or packed) image, by default AFTER the resize and flip, on the resized image
   (released LIS ``AddNoisyImg``; ``SYNTHESIS.ORDER "before_augment"`` is the variant that
   synthesises at full resolution first); with ``RETURN_CLEAN`` the clean counterpart from the
   same unprocess draw is returned as ``"clean_image"``;
4b. clean twins for DSL (training, ``INPUT.SEGALIAS.CLEAN_TWIN``): ``"synthetic"`` = that clean
   counterpart (forces ``RETURN_CLEAN``); ``"pair"`` = the record's real clean image
   (``clean_file_name``, or the normal-exposure image of a LIS-layout pair,
   :func:`~.lowlight.lis_clean_twin_file_name`), read like the image (no exposure amplification),
   checked to have the image's size and put through the SAME transforms (resize with the same
   interpolation, flip), returned as ``"clean_image"``. A training record without a twin is an error
   naming it;
5. scales to ``PIXEL_SCALE`` (255: the range of Detectron2's uint8 inputs and PIXEL_MEAN) and
   converts 3-channel images from the canonical RGB to ``cfg.INPUT.FORMAT`` ("BGR" flips); 4-channel
   images stay ``[R, G1, B, G2]``; returns ``"image"`` as a CHW float32 tensor.

The mapper is a Detectron2 ``DatasetMapper``: its attributes, and its ``_transform_annotations`` for
the instance annotations (boxes, polygons/masks, crowd and keypoint handling, ``recompute_boxes``,
empty-instance filter); only image reading and the order of augmentation and synthesis are ours.
Semantic records (``sem_seg_file_name``) get a ``"sem_seg"`` long tensor (255 = ignore).
"""

import copy
import logging
import zlib

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from PIL import Image

from .augmentation import build_lowlight_augmentation
from .decode_cache import DecodeCache
from .label_io import LabelMapError, read_label_map
from .lowlight import lis_clean_twin_file_name
from .raw_io import (
    ImageReadError,
    LowLightDataError,
    check_format,
    exposure_ratio_from_pair,
    is_camera_raw,
    read_lowlight_image,
)
from .synthesis import synthesize_lowlight
from .synthesis_aug import SYNTHESIS_DEFAULTS, check_synthesis_options

__all__ = ["LowLightDatasetMapper", "CLEAN_TWIN_MODES"]

#: INPUT.SEGALIAS.CLEAN_TWIN values
CLEAN_TWIN_MODES = ("none", "synthetic", "pair")

logger = logging.getLogger(__name__)


class _ContiguousAugInput(T.AugInput):
    """AugInput that keeps image / sem_seg contiguous (Detectron2's float resize uses ``.view``)."""

    def transform(self, tfm):
        self.image = np.ascontiguousarray(tfm.apply_image(self.image))
        if self.boxes is not None:
            self.boxes = tfm.apply_box(self.boxes)
        if self.sem_seg is not None:
            self.sem_seg = np.ascontiguousarray(tfm.apply_segmentation(self.sem_seg))


def _segalias_input(cfg):
    if "SEGALIAS" not in cfg.INPUT:
        raise KeyError(
            "cfg.INPUT.SEGALIAS is missing: call segalias_d2.add_segalias_config(cfg) before "
            "building the mapper"
        )
    return cfg.INPUT.SEGALIAS


class LowLightDatasetMapper(DatasetMapper):
    """Map a low-light dataset dict to model inputs (see the module docstring)."""

    @configurable
    def __init__(
        self,
        is_train=True,
        *,
        augmentations,
        image_format="BGR",
        use_instance_mask=False,
        instance_mask_format="polygon",
        recompute_boxes=False,
        default_image_format="srgb",
        raw_output="raw_rgb",
        exposure_ratio=None,
        pixel_scale=255.0,
        synthesis=None,
        decode_cache=None,
        clean_twin="none",
    ):
        """
        Args:
            augmentations: list of Detectron2 Augmentation/Transform (applied to float images).
            image_format: channel order of 3-channel outputs, "RGB" or "BGR" (cfg.INPUT.FORMAT).
            default_image_format: "srgb" | "raw" | "raw_rgb" | "raw_packed" for records without one.
            raw_output: "raw_rgb" or "packed" for camera RAW records without ``raw_output``.
            exposure_ratio: amplification used when a record has none (None = 1).
            pixel_scale: multiply [0, 1] images by this (255 = Detectron2's usual range).
            synthesis: None, or dict(ratio_range, seed, return_clean, output, method, quantization,
                bit_depth, odd_size, order) to synthesise low-light images from sRGB records at
                training time (keys left out take the released defaults,
                :data:`SYNTHESIS_DEFAULTS`).
            decode_cache: a :class:`~.decode_cache.DecodeCache` or None.
            clean_twin: "none" | "synthetic" (needs ``synthesis``; sets its ``return_clean``) |
                "pair" (real clean images; exclusive with ``synthesis``): the ``"clean_image"`` of
                every training image (DSL).
        """
        if clean_twin not in CLEAN_TWIN_MODES:
            raise ValueError(
                f"INPUT.SEGALIAS.CLEAN_TWIN must be one of {CLEAN_TWIN_MODES}, got {clean_twin!r}"
            )
        if clean_twin == "synthetic":
            if not synthesis:
                raise ValueError(
                    "INPUT.SEGALIAS.CLEAN_TWIN 'synthetic' needs INPUT.SEGALIAS.SYNTHESIS.ENABLED "
                    "True"
                )
            synthesis = dict(synthesis, return_clean=True)
        if clean_twin == "pair" and synthesis:
            raise ValueError(
                "INPUT.SEGALIAS.CLEAN_TWIN 'pair' reads real clean images: expected "
                "INPUT.SEGALIAS.SYNTHESIS.ENABLED False (synthesis makes its own clean twin: "
                "'synthetic')"
            )
        if image_format not in ("RGB", "BGR"):
            raise ValueError(
                f"LowLightDatasetMapper supports INPUT.FORMAT 'RGB' or 'BGR', got '{image_format}'"
            )
        check_format(default_image_format)
        # image_format is the channel order of 3-channel outputs here (images are not read by
        # Detectron2)
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            use_instance_mask=use_instance_mask,
            instance_mask_format=instance_mask_format,
            use_keypoint=False,
            recompute_boxes=recompute_boxes,
        )
        self.default_image_format = default_image_format
        self.raw_output = raw_output
        self.exposure_ratio = exposure_ratio
        self.pixel_scale = float(pixel_scale)
        self.synthesis = check_synthesis_options(synthesis) if synthesis else None
        self.decode_cache = decode_cache
        self.clean_twin = clean_twin
        self._calls = 0
        self._ratios = {}

    @classmethod
    def from_config(cls, cfg, is_train=True):
        inp = _segalias_input(cfg)
        synthesis = None
        if inp.SYNTHESIS.ENABLED:
            synthesis = {key: inp.SYNTHESIS[key.upper()] for key in SYNTHESIS_DEFAULTS}
            synthesis["seed"] = None if int(inp.SYNTHESIS.SEED) < 0 else int(inp.SYNTHESIS.SEED)
        cache_cfg = cfg.DATALOADER.SEGALIAS.DECODE_CACHE
        cache = (
            DecodeCache(cache_cfg.MAX_ITEMS, cache_cfg.DIR or None) if cache_cfg.ENABLED else None
        )
        ratio = float(inp.EXPOSURE_RATIO or 0.0)
        return {
            "is_train": is_train,
            "augmentations": build_lowlight_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "use_instance_mask": cfg.MODEL.MASK_ON,
            "instance_mask_format": cfg.INPUT.MASK_FORMAT,
            "recompute_boxes": bool(is_train and cfg.INPUT.CROP.ENABLED and cfg.MODEL.MASK_ON),
            "default_image_format": inp.DEFAULT_IMAGE_FORMAT,
            "raw_output": inp.RAW_OUTPUT,
            "exposure_ratio": ratio if ratio > 0 else None,
            "pixel_scale": float(inp.PIXEL_SCALE),
            "synthesis": synthesis,
            "decode_cache": cache,
            "clean_twin": inp.CLEAN_TWIN,
        }

    # -------------------------------------------------------------------------------- reading
    def _describe(self, d):
        return f"record image_id={d.get('image_id')!r}, file_name='{d.get('file_name')}'"

    def read_image(self, d):
        fmt = d.get("image_format") or self.default_image_format
        check_format(fmt)
        ratio = d.get("exposure_ratio") or self.exposure_ratio
        if ratio == "exif":
            ratio = self._exif_ratio(d)
        options = {
            "image_format": fmt,
            "raw_output": d.get("raw_output") or self.raw_output,
            "black_level": d.get("black_level"),
            "white_level": d.get("white_level"),
            "exposure_ratio": ratio,
        }
        decode = lambda: read_lowlight_image(d["file_name"], **options)  # noqa: E731
        try:
            if self.decode_cache is not None:
                return self.decode_cache.get(d["file_name"], options, decode), fmt
            return decode(), fmt
        except LowLightDataError as e:
            raise type(e)(f"{e} [{self._describe(d)}]") from e
        except Exception as e:  # noqa: BLE001  (never let a bare decoder traceback through)
            raise ImageReadError(f"cannot read {self._describe(d)}: {type(e).__name__}: {e}") from e

    def _read_clean_twin(self, d, image, fmt):
        """The real clean image of a training record (``clean_file_name`` or the LIS pair),
        image-sized."""
        try:
            path = d.get("clean_file_name") or lis_clean_twin_file_name(d["file_name"])
        except LowLightDataError as e:
            raise type(e)(f"INPUT.SEGALIAS.CLEAN_TWIN 'pair': {e} [{self._describe(d)}]") from e
        twin = {
            "file_name": path,
            "image_id": d.get("image_id"),
            "image_format": d.get("clean_image_format") or fmt,
            "raw_output": d.get("raw_output"),
            "black_level": d.get("black_level"),
            "white_level": d.get("white_level"),
            "exposure_ratio": 1.0,
        }  # a normal exposure: no amplification
        try:
            clean, _ = self.read_image(twin)
        except LowLightDataError as e:
            raise type(e)(f"cannot read the clean twin of {self._describe(d)}: {e}") from e
        if clean.shape != image.shape:
            raise LowLightDataError(
                f"the clean twin '{path}' is {clean.shape[1]}x{clean.shape[0]}x{clean.shape[2]} "
                f"(WxHxC), the image {image.shape[1]}x{image.shape[0]}x{image.shape[2]}: a pair "
                f"must have one geometry [{self._describe(d)}]"
            )
        return clean

    def _exif_ratio(self, d):
        """``t_normal / t_dark`` of the record's RAW pair (cached per file)."""
        key = (d["file_name"], d.get("pair_file_name"))
        if key not in self._ratios:
            if not d.get("pair_file_name"):
                raise LowLightDataError(
                    f"exposure_ratio='exif' but no pair_file_name in {self._describe(d)}"
                )
            try:
                self._ratios[key] = exposure_ratio_from_pair(d["file_name"], d["pair_file_name"])
            except LowLightDataError as e:
                raise type(e)(f"{e} [{self._describe(d)}]") from e
        return self._ratios[key]

    def _rng(self, d):
        seed = self.synthesis.get("seed")
        if seed is None:
            return np.random.default_rng()
        self._calls += 1
        return np.random.default_rng(
            [seed, zlib.crc32(str(d.get("file_name")).encode()), self._calls]
        )

    # ------------------------------------------------------------------------------ synthesis
    def _synthesize(self, image, d):
        """Synthetic low-light (noisy, clean or None) from an sRGB image; records the draw in
        ``d``."""
        syn = self.synthesis
        res = synthesize_lowlight(
            image,
            self._rng(d),
            syn["ratio_range"],
            output=syn["output"],
            method=syn["method"],
            quantization=syn["quantization"],
            return_clean=syn["return_clean"],
            bit_depth=syn["bit_depth"],
            odd_size=syn["odd_size"],
        )
        red, blue, brightness = res["wb_gains"]
        d["synthesis_params"] = dict(
            res["params"], red_gain=red, blue_gain=blue, brightness=brightness
        )
        return res["noisy"], res.get("clean")

    # ------------------------------------------------------------------------------- __call__
    def __call__(self, dataset_dict):
        d = copy.deepcopy(dataset_dict)
        image, fmt = self.read_image(d)
        synthesize = bool(self.synthesis and self.is_train and fmt == "srgb")
        before = synthesize and self.synthesis["order"] == "before_augment"
        clean = None
        if before:
            image, clean = self._synthesize(image, d)
        elif self.is_train and self.clean_twin == "pair":
            clean = self._read_clean_twin(d, image, fmt)

        sem_seg = None
        if "sem_seg_file_name" in d:
            try:
                sem_seg = read_label_map(d.pop("sem_seg_file_name"))
            except LabelMapError:
                raise
            except Exception as e:  # noqa: BLE001
                raise ImageReadError(
                    f"cannot read the sem_seg map of {self._describe(d)}: {e}"
                ) from e

        h0, w0 = d.get("height", image.shape[0]), d.get("width", image.shape[1])
        pre = None
        if image.shape[:2] != (h0, w0):
            half_res = (
                fmt in ("raw", "raw_packed")
                or (before and image.shape[2] == 4)
                or is_camera_raw(d["file_name"])
            )
            if not half_res:
                utils.check_image_size(
                    d, image
                )  # raises Detectron2's SizeMismatchError naming the file
            pre = T.ScaleTransform(h0, w0, image.shape[0], image.shape[1], interp=Image.NEAREST)
            if sem_seg is not None:
                sem_seg = pre.apply_segmentation(sem_seg)

        aug_input = _ContiguousAugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        image, sem_seg = aug_input.image, aug_input.sem_seg
        post = None
        if synthesize and not before:  # released order: on the resized, flipped image
            h1, w1 = image.shape[:2]
            image, clean = self._synthesize(image, d)
            if image.shape[:2] != (
                h1,
                w1,
            ):  # packed output is half resolution: scale the annotations
                post = T.ScaleTransform(
                    h1, w1, image.shape[0], image.shape[1], interp=Image.NEAREST
                )
                if sem_seg is not None:
                    sem_seg = np.ascontiguousarray(post.apply_segmentation(sem_seg))
        elif clean is not None:
            clean = np.ascontiguousarray(transforms.apply_image(clean))
        image_shape = image.shape[:2]
        if self.is_train and self.clean_twin != "none" and clean is None:
            raise LowLightDataError(
                f"INPUT.SEGALIAS.CLEAN_TWIN 'synthetic': {self._describe(d)} was not synthesised "
                f"(image_format {fmt!r}; synthesis turns sRGB records only), so it has no clean "
                "twin; use sRGB training data or CLEAN_TWIN 'pair'"
            )

        d["image"] = self._to_tensor(image)
        if clean is not None:
            d["clean_image"] = self._to_tensor(clean)
        if sem_seg is not None:
            d["sem_seg"] = torch.as_tensor(sem_seg.astype("long"))

        if not self.is_train:
            d.pop("annotations", None)
            return d

        if "annotations" in d:
            # the half-resolution scalings (pre/post) are part of the geometry the annotations go
            # through
            all_tfms = T.TransformList(
                [t for t in [pre, *transforms.transforms, post] if t is not None]
            )
            self._transform_annotations(d, all_tfms, image_shape)
        return d

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        """Detectron2's, except that under ``recompute_boxes`` a record whose instances carry no
        masks (e.g. an image without non-crowd objects) keeps its boxes instead of failing on the
        missing ``gt_masks``."""
        annos = [a for a in dataset_dict["annotations"] if a.get("iscrowd", 0) == 0]
        masks = self.use_instance_mask and bool(annos) and "segmentation" in annos[0]
        if not self.recompute_boxes or masks:
            return super()._transform_annotations(dataset_dict, transforms, image_shape)
        self.recompute_boxes = False
        try:
            return super()._transform_annotations(dataset_dict, transforms, image_shape)
        finally:
            self.recompute_boxes = True

    def _to_tensor(self, image):
        image = image.astype(np.float32, copy=False) * self.pixel_scale
        if image.shape[2] == 3 and self.image_format == "BGR":
            image = image[:, :, ::-1]
        return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
