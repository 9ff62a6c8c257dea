"""Augmentation lists built from the config: the low-light recipe (Detectron2's resize + flip with the
resize interpolation of ``INPUT.SEGALIAS``) and the semantic recipe (mmseg-like scale jitter, crop with a
category-area limit, flip)."""
from detectron2.data import transforms as T
from PIL import Image

__all__ = ["RESIZE_INTERPOLATIONS", "build_lowlight_augmentation", "build_sem_seg_train_aug"]

#: names accepted by INPUT.SEGALIAS.RESIZE_INTERP / RESIZE_INTERP_TEST
RESIZE_INTERPOLATIONS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def _interp(cfg, key):
    name = str(cfg.INPUT.SEGALIAS[key]).lower()
    if name not in RESIZE_INTERPOLATIONS:
        raise ValueError(f"INPUT.SEGALIAS.{key} must be one of {sorted(RESIZE_INTERPOLATIONS)}, got '{name}'")
    return RESIZE_INTERPOLATIONS[name]


def _random_flip(cfg):
    return T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal", vertical=cfg.INPUT.RANDOM_FLIP == "vertical")


def build_lowlight_augmentation(cfg, is_train):
    """Detectron2's default augmentation (resize shortest edge + flip), with the resize interpolation
    from ``cfg.INPUT.SEGALIAS.RESIZE_INTERP`` (training) or ``RESIZE_INTERP_TEST`` (inference) and the
    optional crop of ``cfg.INPUT.CROP``."""
    interp = _interp(cfg, "RESIZE_INTERP" if is_train else "RESIZE_INTERP_TEST")
    if is_train:
        inp = cfg.INPUT
        min_size, max_size, sample = inp.MIN_SIZE_TRAIN, inp.MAX_SIZE_TRAIN, inp.MIN_SIZE_TRAIN_SAMPLING
    else:
        min_size, max_size, sample = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice"
    augs = [T.ResizeShortestEdge(min_size, max_size, sample, interp=interp)]
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
        augs = [T.ResizeShortestEdge(inp.MIN_SIZE_TRAIN, inp.MAX_SIZE_TRAIN, inp.MIN_SIZE_TRAIN_SAMPLING)]
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
    return augs
