"""Built-in dataset registrations (lazy: nothing is read until ``DatasetCatalog.get``).

Root: ``$DETECTRON2_DATASETS`` (default ``datasets``), read at import time (Detectron2 convention).

* LIS (``<root>/LIS``): ``lis_{raw_dark,raw_normal,srgb_dark,srgb_normal}_{train,test,traintest}``;
  dark images are the even-numbered files listed in the ``+1`` annotation files; ``traintest``
  is the whole of LIS (train + test), the LIS README's recommended test set for models trained
  elsewhere (e.g. SynCOCO -> LIS). Classes are the true LIS classes by id (:data:`LIS_CLASSES`;
  the original misnamed category list is renamed with one warning per file).
* LIS demo (``<root>/lis_demo``, built by ``datasets/prepare_demo.py``):
  ``lis_demo_{raw_dark,raw_normal,srgb_dark,srgb_normal,raw_dark_packed}_{train,test}``.
* Cityscapes semantic segmentation (``<root>/cityscapes``):
  ``segalias_cityscapes_sem_seg_{train,val}`` (Detectron2's own ``cityscapes_fine_sem_seg_*`` are
  left alone).
* PASCAL VOC 2012 + SBD (``<root>/VOCdevkit/VOC2012``, MMSeg layout; :mod:`.voc`):
  ``segalias_voc2012_sem_seg_{train,aug,val}`` (the recipe trains on train + aug).
* ADE20K (``<root>/ADEChallengeData2016``, Detectron2's ``annotations_detectron2``; :mod:`.ade20k`):
  ``segalias_ade20k_sem_seg_{train,val}``.
* Cityscapes-layout demo (``<root>/cityscapes_demo``):
  ``cityscapes_demo_sem_seg_{train,val}`` (sRGB) and ``cityscapes_demo_sem_seg_dark_{train,val}``
  (synthetic low-light raw-RGB, 16-bit).
"""

import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .ade20k import register_ade20k_sem_seg
from .cityscapes import (
    CITYSCAPES_STUFF_CLASSES,
    CITYSCAPES_STUFF_COLORS,
    IGNORE_LABEL,
    load_cityscapes_sem_seg,
)
from .lowlight import LIS_CLASSES, register_lowlight_dataset, require_paths
from .voc import register_voc_sem_seg

__all__ = [
    "register_lis",
    "register_all_lis",
    "register_all_cityscapes_sem_seg",
    "register_coco_lis8",
    "LIS_MODALITIES",
    "LIS_SPLITS",
    "DEMO_HINT",
]

DEMO_HINT = (
    "Build the demo data with `python datasets/prepare_demo.py` "
    "(builder: datasets/demo_builder.py)."
)

#: modality -> (image folder, annotation file pattern, image_format)
LIS_MODALITIES = {
    "raw_dark": ("RAW-dark", "lis_coco_png_{split}+1.json", "raw_rgb"),
    "raw_normal": ("RAW-normal", "lis_coco_png_{split}.json", "raw_rgb"),
    "srgb_dark": ("RGB-dark", "lis_coco_JPG_{split}+1.json", "srgb"),
    "srgb_normal": ("RGB-normal", "lis_coco_png_{split}.json", "srgb"),
}
#: annotation splits of LIS: ``traintest`` = all 2230 pairs (lis_coco_*_traintest*.json)
LIS_SPLITS = ("train", "test", "traintest")
_DEMO_EXTRA = {"raw_dark_packed": ("RAW-dark-packed", "lis_coco_png_{split}+1.json", "raw_packed")}


def _register_lis_like(root, prefix, subdir, modalities, splits, hint=""):
    for modality, (folder, ann, fmt) in modalities.items():
        for split in splits:
            name = f"{prefix}_{modality}_{split}"
            if name in DatasetCatalog.list():
                continue
            register_lowlight_dataset(
                name,
                os.path.join(root, subdir, "annotations", ann.format(split=split)),
                os.path.join(root, subdir, folder),
                image_format=fmt,
                thing_classes=LIS_CLASSES,
                missing_hint=hint,
            )


def register_lis(root, prefix="lis", subdir="LIS", splits=LIS_SPLITS):
    """Register ``<prefix>_<modality>_<split>`` for the 4 LIS modalities from ``<root>/<subdir>``.

    Names that are already registered are left alone.
    """
    _register_lis_like(root, prefix, subdir, LIS_MODALITIES, splits)


def register_all_lis(root):
    register_lis(root)
    _register_lis_like(
        root,
        "lis_demo",
        "lis_demo",
        {**LIS_MODALITIES, **_DEMO_EXTRA},
        ("train", "test"),
        DEMO_HINT,
    )


def _register_sem_seg(name, image_dir, gt_dir, image_format="srgb", hint=""):
    if name in DatasetCatalog.list():
        return

    def _load(name=name, image_dir=image_dir, gt_dir=gt_dir):
        require_paths(name, [image_dir, gt_dir], hint=hint)
        return load_cityscapes_sem_seg(image_dir, gt_dir, image_format)

    DatasetCatalog.register(name, _load)
    MetadataCatalog.get(name).set(
        image_root=image_dir,
        sem_seg_root=gt_dir,
        evaluator_type="sem_seg",
        ignore_label=IGNORE_LABEL,
        stuff_classes=list(CITYSCAPES_STUFF_CLASSES),
        stuff_colors=list(CITYSCAPES_STUFF_COLORS),
        image_format=image_format,
    )


def register_all_cityscapes_sem_seg(root):
    for split in ("train", "val"):
        base = os.path.join(root, "cityscapes")
        _register_sem_seg(
            f"segalias_cityscapes_sem_seg_{split}",
            os.path.join(base, "leftImg8bit", split),
            os.path.join(base, "gtFine", split),
            hint="Create the labelTrainIds maps with `python "
            "datasets/prepare_cityscapes_sem_seg.py`.",
        )
        demo = os.path.join(root, "cityscapes_demo")
        _register_sem_seg(
            f"cityscapes_demo_sem_seg_{split}",
            os.path.join(demo, "leftImg8bit", split),
            os.path.join(demo, "gtFine", split),
            "srgb",
            DEMO_HINT,
        )
        _register_sem_seg(
            f"cityscapes_demo_sem_seg_dark_{split}",
            os.path.join(demo, "leftImg8bit_rawdark", split),
            os.path.join(demo, "gtFine", split),
            "raw_rgb",
            DEMO_HINT,
        )


def register_coco_lis8(root):
    """COCO 2017 restricted to the 8 LIS classes, matched by name, contiguous ids = true LIS ids
    (SynCOCO -> LIS).

    COCO bicycle, car, motorcycle, bus, bottle, chair, dining table, tv -> LIS ids 0..7 (the COCO-8
    order equals the true LIS id order, as in the official pipeline). Annotations of the other 72
    COCO classes are dropped (counted in the load summary); images are sRGB, turned into low-light
    raw-RGB by the mapper when INPUT.SEGALIAS.SYNTHESIS.ENABLED.
    """
    for split in ("train", "val"):
        name = f"coco_2017_{split}_lis8"
        if name in DatasetCatalog.list():
            continue
        register_lowlight_dataset(
            name,
            os.path.join(root, "coco", "annotations", f"instances_{split}2017.json"),
            os.path.join(root, "coco", f"{split}2017"),
            image_format="srgb",
            thing_classes=LIS_CLASSES,
            unknown_category="skip",
            missing_hint="Place COCO 2017 as in Detectron2's datasets/README "
            "(coco/{train,val}2017, coco/annotations).",
        )


_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
register_all_lis(_root)
register_coco_lis8(_root)
register_all_cityscapes_sem_seg(_root)
register_voc_sem_seg(_root)
register_ade20k_sem_seg(_root)
