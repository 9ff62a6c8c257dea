"""``LowLightPredictor``: Detectron2's ``DefaultPredictor`` for low-light inputs, prepared as
evaluation prepares them.

``DefaultPredictor`` resizes a uint8 BGR image with PIL and feeds it to the model; it knows nothing
of RAW decoding, black/white levels, the exposure ratio, ``INPUT.SEGALIAS.RESIZE_INTERP_TEST`` or
``PIXEL_SCALE``. :class:`LowLightPredictor` builds the model and runs every input through the
test-time path of :class:`~segalias_d2.data.LowLightDatasetMapper` (the mapper the test loader of
the evaluator uses), so the output for a file equals what the evaluator scores for the same file.
Sliding-window semantic models (``TEST.SEGALIAS.SLIDING_WINDOW``) slide inside the model's forward,
as during evaluation.

Input format: the model's ``image_format`` is the first of ``DATASETS.TEST`` / ``DATASETS.TRAIN``
whose metadata names one (every segalias_d2 dataset does), else
``INPUT.SEGALIAS.DEFAULT_IMAGE_FORMAT``. Decoding options default to that dataset's metadata
(``raw_output``, black/white ``levels``, ``exposure_ratio``) and then to the mapper's config
fallbacks (``INPUT.SEGALIAS.RAW_OUTPUT`` / ``EXPOSURE_RATIO``); each call may override them.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.modeling import build_model

from ..checkpoint.safe_checkpointer import SafeDetectionCheckpointer
from ..data import LowLightDatasetMapper
from ..data.raw_io import check_format, is_camera_raw
from .validation import weights_match_policy

__all__ = ["LowLightPredictor", "model_image_format", "file_image_format", "as_decoded_image"]

logger = logging.getLogger(__name__)

#: channels of a decoded image per ``image_format`` ("raw": 3 or 4, by ``raw_output``)
_CHANNELS = {"srgb": 3, "raw_rgb": 3, "raw_packed": 4}


def _dataset_metadata(cfg):
    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        meta = MetadataCatalog.get(name)
        if meta.get("image_format", None):
            return meta
    return None


def model_image_format(cfg) -> str:
    """The ``image_format`` the model of ``cfg`` was evaluated on (see the module docstring)."""
    meta = _dataset_metadata(cfg)
    return check_format(
        meta.image_format if meta is not None else cfg.INPUT.SEGALIAS.DEFAULT_IMAGE_FORMAT
    )


def file_image_format(path, model_format: str, raw_output: str = "raw_rgb") -> str:
    """How to read ``path`` for a model of ``model_format``.

    A "raw" model (camera RAW datasets) reads camera RAW files as "raw"; other files then are the
    rendered form of the same data (``raw_rgb``, or ``raw_packed`` for a packed model). Every other
    model format is used as is: :func:`~segalias_d2.data.raw_io.read_lowlight_image` decodes a
    camera RAW file for ``raw_rgb`` / ``raw_packed`` models through rawpy, and refuses one for an
    ``srgb`` model.
    """
    check_format(model_format)
    if model_format == "raw" and not is_camera_raw(path):
        return "raw_packed" if raw_output == "packed" else "raw_rgb"
    return model_format


def as_decoded_image(
    image, image_format: str, raw_output: str = "raw_rgb", name: str = "array"
) -> np.ndarray:
    """Check and convert an in-memory image to what the data layer's readers return.

    Contract (the output of :func:`~segalias_d2.data.raw_io.read_lowlight_image`): ``(H, W, C)``
    numpy array, **RGB** for 3 channels (sRGB for "srgb", linear raw-RGB ``[R, mean G, B]`` for
    "raw_rgb"), ``[R, G1, B, G2]`` for 4 channels ("raw_packed"; "raw" takes 3 or 4 by
    ``raw_output``); float32/float64 in [0, 1], or uint8 / uint16 (divided by 255 / 65535, as for
    files). Black/white levels and the exposure ratio are part of decoding and are NOT applied to
    arrays. Not BGR: an OpenCV ``imread`` result must be flipped.
    """
    check_format(image_format)
    arr = np.asarray(image)
    want = _CHANNELS.get(image_format, 4 if raw_output == "packed" else 3)
    if arr.ndim != 3 or arr.shape[2] != want:
        raise ValueError(
            f"{name}: image_format '{image_format}' takes an (H, W, {want}) array, got shape "
            f"{arr.shape}"
        )
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        return np.ascontiguousarray(arr, dtype=np.float32) / np.float32(np.iinfo(arr.dtype).max)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"{name}: expected a float array in [0, 1] or uint8/uint16, got dtype {arr.dtype}"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(
            f"{name}: float arrays must hold values in [0, 1] (got min {np.nanmin(arr):.4g}, "
            f"max {np.nanmax(arr):.4g}); scale it, or pass uint8/uint16"
        )
    return arr


class _Decoded:
    """An already decoded image carried by a record; ``deepcopy`` (the mapper copies its record)
    keeps it."""

    def __init__(self, array):
        self.array = array

    def __deepcopy__(self, memo):
        return self


class _PredictionMapper(LowLightDatasetMapper):
    """The test-time mapper, except that a record may carry its image already decoded
    (``"_decoded"``).

    Everything after reading (annotation-frame scaling, the test augmentations with
    ``RESIZE_INTERP_TEST``, ``PIXEL_SCALE``, channel order) is the mapper's own code.
    """

    def read_image(self, d):
        decoded = d.pop("_decoded", None)
        if decoded is not None:
            return decoded.array, d.get("image_format") or self.default_image_format
        return super().read_image(d)


class LowLightPredictor:
    """Run a segalias_d2 model on one image file or array, prepared exactly as the evaluator
    prepares it.

    Usage::

        cfg = segalias_d2.config.load_config(
            "configs/...yaml", ["MODEL.WEIGHTS", "model_final.pth"]
        )
        predictor = LowLightPredictor(cfg)
        # {"instances": ...} or {"sem_seg": ...}
        outputs = predictor("dark/0002.ARW", exposure_ratio=8.0)
        outputs, decoded = predictor.predict(array)  # decoded: the float image the model saw

    Args:
        cfg: a config from :func:`segalias_d2.config.load_config` (MODEL.WEIGHTS loaded when set).
        model: use this model instead of building one from ``cfg`` (it is put in eval mode).
        image_format: the model's input format (default: :func:`model_image_format`).
    Outputs are the model's, for one image, at the decoded image's size (or ``height`` x ``width``
    when given), on the model's device, like ``DefaultPredictor``.
    """

    def __init__(self, cfg, model=None, *, image_format: Optional[str] = None):
        self.cfg = cfg.clone()
        self.cfg.freeze()
        meta = _dataset_metadata(self.cfg)
        if meta is None:  # class names (for drawing) of the test dataset, when it has any
            meta = (
                MetadataCatalog.get(self.cfg.DATASETS.TEST[0])
                if len(self.cfg.DATASETS.TEST)
                else Metadata()
            )
        self.metadata = meta
        self.image_format = check_format(image_format or model_image_format(self.cfg))
        self.raw_output = meta.get("raw_output", None) or self.cfg.INPUT.SEGALIAS.RAW_OUTPUT
        levels = meta.get("levels", None) or {}
        self.defaults = {
            "black_level": levels.get("black"),
            "white_level": levels.get("white"),
            "exposure_ratio": meta.get("exposure_ratio", None),
        }
        if model is None:
            model = build_model(self.cfg)
            if self.cfg.MODEL.WEIGHTS:
                # weights matching too little of the model are refused (--eval-only's rule), not run
                # silently
                SafeDetectionCheckpointer(
                    model, match_policy=weights_match_policy(self.cfg, eval_only=True)
                ).load(self.cfg.MODEL.WEIGHTS)
            else:
                logger.warning(
                    "MODEL.WEIGHTS is empty: the predictor runs a randomly initialised model"
                )
        self.model = model.eval()
        self.mapper = _PredictionMapper(self.cfg, is_train=False)
        self.input_channels = len(self.cfg.MODEL.PIXEL_MEAN)

    # ------------------------------------------------------------------------------ preparation
    def record(
        self,
        image,
        *,
        image_format=None,
        raw_output=None,
        exposure_ratio=None,
        black_level=None,
        white_level=None,
        pair_file_name=None,
        height=None,
        width=None,
    ) -> dict:
        """The dataset record the mapper gets for ``image`` (a path) with these options."""
        path = os.fspath(image) if isinstance(image, (str, os.PathLike)) else "<array>"
        raw_output = raw_output or self.raw_output
        rec = {
            "file_name": path,
            "image_format": file_image_format(path, image_format or self.image_format, raw_output),
            "raw_output": raw_output,
            "black_level": self.defaults["black_level"] if black_level is None else black_level,
            "white_level": self.defaults["white_level"] if white_level is None else white_level,
            "exposure_ratio": self.defaults["exposure_ratio"]
            if exposure_ratio is None
            else exposure_ratio,
        }
        if pair_file_name:
            rec["pair_file_name"] = os.fspath(pair_file_name)
        if height is not None or width is not None:
            if height is None or width is None:
                raise ValueError("pass both height and width, or neither")
            rec["height"], rec["width"] = int(height), int(width)
        return rec

    def prepare(self, image, **options) -> Tuple[dict, np.ndarray]:
        """``(model input dict, decoded float image)`` for a path or an array (see
        :func:`as_decoded_image`).

        Options: ``image_format``, ``raw_output``, ``exposure_ratio`` (a number, or "exif" with
        ``pair_file_name``), ``black_level``, ``white_level`` (file DN), ``height``/``width`` (the
        frame of the outputs; default the decoded size). The decoding options apply to files only.
        """
        is_path = isinstance(image, (str, os.PathLike))
        if not is_path:
            given = [
                k
                for k in ("exposure_ratio", "black_level", "white_level", "pair_file_name")
                if options.get(k) is not None
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)} apply when decoding a file; an array is already decoded "
                    "(see segalias_d2.data.read_lowlight_image)"
                )
        rec = self.record(image, **options)
        if is_path:
            decoded, _ = self.mapper.read_image(
                rec
            )  # the mapper's own reading (errors name the file)
        else:
            decoded = as_decoded_image(image, rec["image_format"], rec["raw_output"])
        if decoded.shape[2] != self.input_channels:
            raise ValueError(
                f"'{rec['file_name']}' decodes to {decoded.shape[2]} channels (image_format "
                f"'{rec['image_format']}'), "
                f"but the model takes {self.input_channels} (MODEL.PIXEL_MEAN)"
            )
        rec.setdefault("height", decoded.shape[0])
        rec.setdefault("width", decoded.shape[1])
        rec["_decoded"] = _Decoded(decoded)
        return self.mapper(rec), decoded

    # ------------------------------------------------------------------------------ inference
    def predict(self, image, **options):
        """``(outputs, decoded image)``; see :meth:`prepare` for the options."""
        inputs, decoded = self.prepare(image, **options)
        with torch.no_grad():
            outputs = self.model([inputs])[0]
        return outputs, decoded

    def __call__(self, image, **options):
        """The model's outputs for one image (path or array), like ``DefaultPredictor.__call__``."""
        return self.predict(image, **options)[0]
