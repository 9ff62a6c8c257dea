"""ADE20K (SceneParsing, ``ADEChallengeData2016``) semantic segmentation, 150 classes, as
Seg-Aliasing's recipe.

Labels: the raw annotations (``annotations/<split>/*.png``) hold 0 = "other" and 1..150 = classes;
MMSeg's ``reduce_zero_label=True`` maps 0 -> 255 (ignored) and k -> k - 1. Detectron2 trains on the
same reduced maps, written once by its ``datasets/prepare_ade20k_sem_seg.py`` to
``annotations_detectron2/`` (uint8 ``label - 1``, so 0 wraps to 255): identical to
``reduce_zero_label``. :func:`prepare_ade20k_annotations` writes the same files
(``datasets/prepare_ade20k_sem_seg.py`` here).

Detectron2 v0.6 and main register ``ade20k_sem_seg_{train,val}`` on exactly these folders with the
150 class names (``ADE20K_SEM_SEG_CATEGORIES``, MMSeg's order) and ignore label 255; we reuse its
loader (``load_sem_seg``) and class list. Our names ``segalias_ade20k_sem_seg_{train,val}`` add what
the recipe needs beyond it:

* ``height``/``width`` in every record (read from the JPEG headers): Detectron2's records carry
  none, and without them a resized test image's prediction stays at the resized size instead of the
  annotation's;
* metadata ``reduce_zero_label=True``: the boundary-error evaluator builds the GT band on the RAW
  labels (as the released metrics do, 0 = "other" kept), recovered exactly as
  ``(stored + 1) mod 256``.
"""

import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES
from detectron2.utils.file_io import PathManager
from PIL import Image

from .lowlight import require_paths

__all__ = [
    "ADE20K_SPLITS",
    "load_ade20k_sem_seg",
    "register_ade20k_sem_seg",
    "reduce_zero_label",
    "prepare_ade20k_annotations",
]

#: our split -> ADEChallengeData2016 folder
ADE20K_SPLITS = {"train": "training", "val": "validation"}
_HINT = (
    "Write annotations_detectron2 with `python datasets/prepare_ade20k_sem_seg.py` "
    "(datasets/README.md, ADE20K)."
)


def reduce_zero_label(raw):
    """MMSeg ``reduce_zero_label`` on a uint8 label map: 0 -> 255, k -> k - 1 (uint8
    wrap-around)."""
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raise ValueError(f"reduce_zero_label expects a uint8 label map, got {raw.dtype}")
    return raw - np.uint8(1)


def load_ade20k_sem_seg(image_dir, gt_dir):
    """Detectron2's ``load_sem_seg(gt_dir, image_dir, "png", "jpg")`` records plus
    ``height``/``width``."""

    records = load_sem_seg(gt_dir, image_dir, gt_ext="png", image_ext="jpg")
    for rec in records:
        with PathManager.open(rec["file_name"], "rb") as f:
            rec["width"], rec["height"] = Image.open(f).size
    return records


def register_ade20k_sem_seg(root, prefix="segalias_ade20k_sem_seg"):
    """Register ``<prefix>_{train,val}`` from ``<root>/ADEChallengeData2016`` (names already
    registered are kept)."""

    base = os.path.join(root, "ADEChallengeData2016")
    for split, folder in ADE20K_SPLITS.items():
        name = f"{prefix}_{split}"
        if name in DatasetCatalog.list():
            continue
        image_dir = os.path.join(base, "images", folder)
        gt_dir = os.path.join(base, "annotations_detectron2", folder)

        def _load(name=name, image_dir=image_dir, gt_dir=gt_dir):
            require_paths(name, [image_dir, gt_dir], hint=_HINT)
            return load_ade20k_sem_seg(image_dir, gt_dir)

        DatasetCatalog.register(name, _load)
        MetadataCatalog.get(name).set(
            image_root=image_dir,
            sem_seg_root=gt_dir,
            evaluator_type="sem_seg",
            ignore_label=255,
            stuff_classes=list(ADE20K_SEM_SEG_CATEGORIES),
            reduce_zero_label=True,
            image_format="srgb",
        )


def prepare_ade20k_annotations(base, overwrite=False):
    """``base/annotations/<split>/*.png`` (raw) -> ``base/annotations_detectron2/<split>/*.png``
    (reduced), as Detectron2's ``prepare_ade20k_sem_seg.py``. Returns {split folder: (written,
    skipped)}."""

    out = {}
    for folder in ADE20K_SPLITS.values():
        src_dir = os.path.join(base, "annotations", folder)
        dst_dir = os.path.join(base, "annotations_detectron2", folder)
        if not os.path.isdir(src_dir):
            raise FileNotFoundError(f"ADE20K raw annotations not found: {src_dir}")
        os.makedirs(dst_dir, exist_ok=True)
        written = skipped = 0
        for fn in sorted(os.listdir(src_dir)):
            if not fn.endswith(".png"):
                continue
            dst = os.path.join(dst_dir, fn)
            if os.path.exists(dst) and not overwrite:
                skipped += 1
                continue
            with Image.open(os.path.join(src_dir, fn)) as im:
                raw = np.asarray(im)
            if raw.ndim != 2 or raw.dtype != np.uint8:
                raise ValueError(
                    f"{os.path.join(src_dir, fn)}: expected an 8-bit single-channel label map, got "
                    f"{raw.dtype} {raw.shape}"
                )
            Image.fromarray(reduce_zero_label(raw), mode="L").save(dst)
            written += 1
        out[folder] = (written, skipped)
    return out
