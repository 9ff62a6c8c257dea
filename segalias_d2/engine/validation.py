"""Checks run before any work starts, each failing with one clear line (SegAliasSetupError). The
config loader itself is :func:`segalias_d2.config.load_config` (re-exported here for the tools)."""

import difflib
import math

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager

from ..checkpoint.safe_checkpointer import RESUME_MIN_FRACTION, WeightsMatchPolicy
from ..config import SegAliasSetupError, load_config

__all__ = [
    "SegAliasSetupError",
    "load_config",
    "check_datasets",
    "check_weights",
    "check_num_classes",
    "check_numeric_options",
    "weights_match_policy",
    "PRETRAINED_MIN_FRACTION",
]

#: share of the backbone's feature-extractor tensors MODEL.WEIGHTS must fill when training starts
#: from it (an ImageNet backbone fills only these; FreqMix/AWD/SCB tensors are new, still far above
#: one half)
PRETRAINED_MIN_FRACTION = 0.5


def check_datasets(cfg, train: bool = True):
    """Every dataset named in DATASETS.TEST (and TRAIN when training) is registered."""
    registered = DatasetCatalog.list()
    keys = (["DATASETS.TRAIN"] if train else []) + ["DATASETS.TEST"]
    for key in keys:
        for name in cfg.DATASETS[key.split(".")[1]]:
            if name not in registered:
                close = difflib.get_close_matches(name, registered, n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise SegAliasSetupError(
                    f"unknown dataset '{name}' in {key}{hint} (register it first, e.g. with "
                    "segalias_d2.data.register_lowlight_dataset)"
                )


def check_weights(cfg):
    """MODEL.WEIGHTS, when a local path, exists."""
    path = cfg.MODEL.WEIGHTS
    if path and "://" not in path and not PathManager.exists(path):
        raise SegAliasSetupError(f"MODEL.WEIGHTS file not found: {path}")


def _class_key(cfg):
    """(config key, metadata field) of the class count the model is built with, or None for other
    models."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if "Semantic" in arch:
        return "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "stuff_classes"
    if arch.endswith("RCNN"):
        return "MODEL.ROI_HEADS.NUM_CLASSES", "thing_classes"
    return None


def check_num_classes(cfg, train: bool = True):
    """The model's class count equals the class list of every dataset it trains on / is evaluated
    on.

    A mismatch otherwise surfaces deep in the loss (IndexError) or as silently wrong per-class
    metrics. Datasets whose metadata has no class list (yet) are not checked here."""
    key = _class_key(cfg)
    if key is None:
        return
    cfg_key, field = key
    node, leaf = cfg_key.rsplit(".", 1)
    n = int(cfg.MODEL[node.split(".")[1]][leaf])
    for ds_key in (["DATASETS.TRAIN"] if train else []) + ["DATASETS.TEST"]:
        for name in cfg.DATASETS[ds_key.split(".")[1]]:
            classes = MetadataCatalog.get(name).get(field, None)
            if classes and len(classes) != n:
                raise SegAliasSetupError(
                    f"{cfg_key} is {n} but dataset '{name}' ({ds_key}) has {len(classes)} {field} "
                    f"({', '.join(map(str, classes[:5]))}{', ...' if len(classes) > 5 else ''}); "
                    f"set {cfg_key} {len(classes)}"
                )


def _finite_positive(value, key, allow_zero=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0 (0 = none)" if allow_zero else "> 0"
        raise SegAliasSetupError(f"{key} must be a finite number {bound}, got {value!r}")
    return v


def check_numeric_options(cfg):
    """Numeric reading options that would corrupt every pixel (NaN, negative, zero scale, empty
    range)."""
    inp = cfg.INPUT.SEGALIAS
    _finite_positive(inp.EXPOSURE_RATIO, "INPUT.SEGALIAS.EXPOSURE_RATIO", allow_zero=True)
    _finite_positive(inp.PIXEL_SCALE, "INPUT.SEGALIAS.PIXEL_SCALE")
    rng = tuple(inp.SYNTHESIS.RATIO_RANGE)
    key = "INPUT.SEGALIAS.SYNTHESIS.RATIO_RANGE"
    if len(rng) != 2:
        raise SegAliasSetupError(f"{key} must be (low, high), got {rng!r}")
    low, high = (_finite_positive(v, key) for v in rng)
    if low > high:
        raise SegAliasSetupError(f"{key} must be (low, high) with low <= high, got {rng!r}")


def weights_match_policy(cfg, eval_only: bool) -> WeightsMatchPolicy:
    """How much of the model MODEL.WEIGHTS must fill: 90% of the whole model to evaluate it (a
    trained model of this project fills all), half of the backbone's feature extractor
    (``backbone.bottom_up.*``, or ``backbone.*`` for a plain backbone) to train from it (an ImageNet
    checkpoint fills only that)."""
    allow = bool(
        cfg.MODEL.get("SEGALIAS", {}).get("ALLOW_PARTIAL_WEIGHTS", False)
    )  # also a stock Detectron2 cfg
    if eval_only:
        return WeightsMatchPolicy(RESUME_MIN_FRACTION, "", allow)
    scope = "backbone.bottom_up." if "FPN" in cfg.MODEL.BACKBONE.NAME.upper() else "backbone."
    return WeightsMatchPolicy(PRETRAINED_MIN_FRACTION, scope, allow)
