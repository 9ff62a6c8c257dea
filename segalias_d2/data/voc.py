"""PASCAL VOC 2012 + SBD ("VOC12aug") semantic segmentation in MMSegmentation's layout
(Seg-Aliasing's VOC recipe).

Layout under ``<root>/VOCdevkit/VOC2012`` (datasets/README.md):

* ``JPEGImages/<id>.jpg``; ``ImageSets/Segmentation/{train,val,aug}.txt`` (bare ids; ``aug.txt`` =
  SBD train+val minus VOC train and val, 9,118 ids, written by MMSeg's ``voc_aug.py`` or
  :func:`write_aug_lists`);
* ``SegmentationClass/<id>.png``: the VOC ground truth, **palette** PNGs whose pixel values are
  class indices (0..20, 255 = void outline). They are used as they are: the mapper and the
  evaluators read label maps with :func:`segalias_d2.data.label_io.read_label_map`, which returns
  the stored indices (Detectron2's own ``read_image(path, "L")`` would turn the palette colours into
  grey levels: person 15 -> 147);
* ``SegmentationClassAug/<id>.png``: SBD labels as 8-bit index PNGs (MMSeg's converter, or
  :func:`convert_sbd_mat`).

Registered (``builtin.py``): ``segalias_voc2012_sem_seg_train`` (train.txt, 1,464, VOC GT),
``segalias_voc2012_sem_seg_aug`` (aug.txt, 9,118, SBD GT) and ``segalias_voc2012_sem_seg_val``
(val.txt, 1,449). The released recipe trains on train + aug (10,582 images: VOC GT wherever it
exists).
"""

import logging
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager
from PIL import Image

from .lowlight import DatasetNotFoundError, require_paths

__all__ = [
    "VOC_CLASSES",
    "VOC_PALETTE",
    "VOC_SPLITS",
    "load_voc_sem_seg",
    "register_voc_sem_seg",
    "convert_sbd_mat",
    "voc_aug_lists",
    "write_aug_lists",
]

logger = logging.getLogger(__name__)

#: 21 classes in MMSeg's PascalVOCDataset order (index = label value; 255 = void)
VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
#: the VOC colour map (entry k = colour of label k in the palette PNGs)
VOC_PALETTE = [
    (0, 0, 0),
    (128, 0, 0),
    (0, 128, 0),
    (128, 128, 0),
    (0, 0, 128),
    (128, 0, 128),
    (0, 128, 128),
    (128, 128, 128),
    (64, 0, 0),
    (192, 0, 0),
    (64, 128, 0),
    (192, 128, 0),
    (64, 0, 128),
    (192, 0, 128),
    (64, 128, 128),
    (192, 128, 128),
    (0, 64, 0),
    (128, 64, 0),
    (0, 192, 0),
    (128, 192, 0),
    (0, 64, 128),
]
#: split -> (list file under ImageSets/Segmentation, GT folder under VOC2012)
VOC_SPLITS = {
    "train": ("train.txt", "SegmentationClass"),
    "aug": ("aug.txt", "SegmentationClassAug"),
    "val": ("val.txt", "SegmentationClass"),
}
_HINT = (
    "See datasets/README.md (PASCAL VOC); the aug split needs "
    "`python datasets/prepare_voc_sem_seg.py --sbd benchmark_RELEASE/dataset`."
)


def _read_ids(list_file):

    with PathManager.open(list_file, "r") as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise DatasetNotFoundError(f"split list '{list_file}' lists no image ids")
    return ids


def load_voc_sem_seg(voc_dir, list_name, gt_folder):
    """Records ``{file_name, sem_seg_file_name, height, width, image_id}`` for the ids of
    ``voc_dir/ImageSets/Segmentation/<list_name>``; every GT must be an 8-bit label PNG of class
    indices, palette (mode "P", VOC) or grey (mode "L", SBD), of the image's size."""

    ids = _read_ids(os.path.join(voc_dir, "ImageSets", "Segmentation", list_name))
    records, missing, other = [], [], []
    for image_id in ids:
        image = os.path.join(voc_dir, "JPEGImages", image_id + ".jpg")
        label = os.path.join(voc_dir, gt_folder, image_id + ".png")
        if not PathManager.exists(image) or not PathManager.exists(label):
            missing.append(image if not PathManager.exists(image) else label)
            continue
        with PathManager.open(label, "rb") as f:
            lab = Image.open(f)
            mode, lab_size = lab.mode, lab.size
        if mode not in ("P", "L"):
            other.append(f"{label} (mode {mode})")
            continue
        with PathManager.open(image, "rb") as f:
            w, h = Image.open(f).size
        if (w, h) != lab_size:
            other.append(f"{label} (size {lab_size} vs image {(w, h)})")
            continue
        records.append(
            {
                "file_name": image,
                "sem_seg_file_name": label,
                "height": h,
                "width": w,
                "image_id": image_id,
            }
        )
    if other:
        raise DatasetNotFoundError(
            f"{len(other)} ground-truth file(s) are not 8-bit label PNGs (palette or grey) of "
            f"the image size: {other[:3]}"
        )
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} file(s) listed in {list_name} are missing, e.g. {missing[:3]}. {_HINT}"
        )
    return records


def register_voc_sem_seg(root, prefix="segalias_voc2012_sem_seg"):
    """Register ``<prefix>_{train,aug,val}`` from ``<root>/VOCdevkit/VOC2012`` (names already
    registered are kept)."""

    voc_dir = os.path.join(root, "VOCdevkit", "VOC2012")
    for split, (list_name, gt_folder) in VOC_SPLITS.items():
        name = f"{prefix}_{split}"
        if name in DatasetCatalog.list():
            continue
        gt_dir = os.path.join(voc_dir, gt_folder)
        list_file = os.path.join(voc_dir, "ImageSets", "Segmentation", list_name)

        def _load(
            name=name, list_name=list_name, gt_folder=gt_folder, gt_dir=gt_dir, list_file=list_file
        ):
            require_paths(
                name, [os.path.join(voc_dir, "JPEGImages"), gt_dir, list_file], hint=_HINT
            )
            return load_voc_sem_seg(voc_dir, list_name, gt_folder)

        DatasetCatalog.register(name, _load)
        MetadataCatalog.get(name).set(
            image_root=os.path.join(voc_dir, "JPEGImages"),
            sem_seg_root=gt_dir,
            evaluator_type="sem_seg",
            ignore_label=255,
            stuff_classes=list(VOC_CLASSES),
            stuff_colors=list(VOC_PALETTE),
            image_format="srgb",
        )


# -------------------------------------------------------------------------------------- preparation
def convert_sbd_mat(cls_dir, dst_dir, overwrite=False):
    """SBD ``dataset/cls/*.mat`` (``GTcls.Segmentation``) -> 8-bit index PNGs (MMSeg
    ``voc_aug.py``). Returns (written, skipped)."""
    from scipy.io import loadmat  # noqa: PLC0415  (optional dependency)

    os.makedirs(dst_dir, exist_ok=True)
    written = skipped = 0
    for fn in sorted(os.listdir(cls_dir)):
        if not fn.endswith(".mat"):
            continue
        dst = os.path.join(dst_dir, fn[:-4] + ".png")
        if os.path.exists(dst) and not overwrite:
            skipped += 1
            continue
        mat = loadmat(os.path.join(cls_dir, fn))
        try:
            seg = mat["GTcls"][0]["Segmentation"][0]
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"{os.path.join(cls_dir, fn)}: no GTcls.Segmentation field ({e})"
            ) from None
        Image.fromarray(np.asarray(seg).astype(np.uint8), mode="L").save(dst)
        written += 1
    return written, skipped


def voc_aug_lists(voc_train, voc_val, sbd_train, sbd_val):
    """(aug, trainaug) id lists as MMSeg's ``voc_aug.py``: aug = (SBD train | SBD val) - VOC train -
    VOC val; trainaug = (VOC train | SBD train | SBD val) - VOC val. Sorted."""
    voc_train, voc_val = set(voc_train), set(voc_val)
    sbd = set(sbd_train) | set(sbd_val)
    return sorted(sbd - voc_train - voc_val), sorted((voc_train | sbd) - voc_val)


def write_aug_lists(voc_dir, sbd_dir):
    """Write ``aug.txt`` and ``trainaug.txt`` next to VOC's train/val lists; returns their lengths.
    Full data: 9,118 and 10,582 (a warning otherwise)."""
    seg = os.path.join(voc_dir, "ImageSets", "Segmentation")
    lists = [
        _read_ids(os.path.join(d, f"{split}.txt"))
        for d in (seg, sbd_dir)
        for split in ("train", "val")
    ]
    aug, trainaug = voc_aug_lists(*lists)
    for name, ids in (("aug.txt", aug), ("trainaug.txt", trainaug)):
        with open(os.path.join(seg, name), "w") as f:
            f.write("\n".join(ids) + "\n")
    if (len(aug), len(trainaug)) != (9118, 10582):
        logger.warning(
            "aug.txt has %d ids and trainaug.txt %d; the full VOC 2012 + SBD give 9,118 and 10,582",
            len(aug),
            len(trainaug),
        )
    return len(aug), len(trainaug)
