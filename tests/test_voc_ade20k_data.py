"""PASCAL VOC 2012 + aug and ADE20K registration (data/voc.py, data/ade20k.py) on tiny on-disk
layouts: palette PNGs become class indices (not grey levels), SBD .mat files and MMSeg's aug lists,
reduce_zero_label as Detectron2's annotations_detectron2, records the mapper reads back as the right
labels, and the boundary-error evaluator building ADE20K's GT band on the raw labels (as released)
while counting the reduced ones."""

import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from scipy.io import savemat

from segalias_d2.config import load_config
from segalias_d2.data import LowLightDatasetMapper
from segalias_d2.data.ade20k import (
    prepare_ade20k_annotations,
    reduce_zero_label,
    register_ade20k_sem_seg,
)
from segalias_d2.data.label_io import LabelMapError, read_label_map
from segalias_d2.data.lowlight import DatasetNotFoundError
from segalias_d2.data.voc import (
    VOC_CLASSES,
    VOC_PALETTE,
    convert_sbd_mat,
    register_voc_sem_seg,
    voc_aug_lists,
    write_aug_lists,
)
from segalias_d2.evaluation import BoundaryErrorSemSegEvaluator
from segalias_d2.evaluation.boundary_errors import BoundaryErrorCounter


def _palette_png(path, labels):
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = [c for rgb in VOC_PALETTE for c in rgb] + [0, 0, 0] * (256 - len(VOC_PALETTE))
    flat[255 * 3 : 256 * 3] = [224, 224, 192]  # the VOC void colour
    im.putpalette(flat)
    im.save(path)


def _write_ids(path, ids):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(ids) + "\n")


@pytest.fixture
def voc_root(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass"):
        (voc / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = {}
    for i, image_id in enumerate(["2007_000032", "2007_000039", "2008_000002"]):
        h, w = 20 + i, 30
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            voc / "JPEGImages" / f"{image_id}.jpg"
        )
        lab = np.zeros((h, w), np.uint8)
        lab[2:10, 3:12] = 15  # person
        lab[12:, 14:] = 7  # car
        lab[1, :] = 255  # void outline
        _palette_png(voc / "SegmentationClass" / f"{image_id}.png", lab)
        labels[image_id] = lab
    _write_ids(
        str(voc / "ImageSets" / "Segmentation" / "train.txt"), ["2007_000032", "2007_000039"]
    )
    _write_ids(str(voc / "ImageSets" / "Segmentation" / "val.txt"), ["2008_000002"])
    return tmp_path, voc, labels


def test_voc_palette_pngs_are_read_as_class_indices_not_grey_levels(voc_root):
    root, voc, labels = voc_root
    name = "_test_voc"
    register_voc_sem_seg(str(root), prefix=name)
    try:
        # the trap: PIL's "L" conversion (what Detectron2's read_image(path, "L") does) gives
        # luminance, e.g. person 15 -> 147; the palette PNGs are used as they are and read as their
        # indices
        person_grey = np.asarray(
            Image.open(voc / "SegmentationClass" / "2007_000032.png").convert("L")
        )[5, 5]
        assert (
            person_grey == 147
        )  # round(0.299 * 192 + 0.587 * 128 + 0.114 * 128) for VOC person (192, 128, 128)
        np.testing.assert_array_equal(
            read_label_map(str(voc / "SegmentationClass" / "2007_000032.png")),
            labels["2007_000032"],
        )
        recs = DatasetCatalog.get(f"{name}_train")
        assert [(r["image_id"], r["height"], r["width"]) for r in recs] == [
            ("2007_000032", 20, 30),
            ("2007_000039", 21, 30),
        ]
        meta = MetadataCatalog.get(f"{name}_val")
        assert (meta.stuff_classes, meta.ignore_label, meta.evaluator_type) == (
            VOC_CLASSES,
            255,
            "sem_seg",
        )
        cfg = load_config("")
        mapper = LowLightDatasetMapper(cfg, is_train=True, augmentations=[])
        out = mapper(recs[1])
        np.testing.assert_array_equal(
            out["sem_seg"].numpy(), labels["2007_000039"].astype(np.int64)
        )
        with pytest.raises(DatasetNotFoundError, match="aug.txt"):
            DatasetCatalog.get(f"{name}_aug")  # no aug list yet
        # a colour-coded (RGB) label map is refused by the loader and by the reader, naming the file
        rgb = voc / "SegmentationClass" / "2007_000039.png"
        Image.open(rgb).convert("RGB").save(rgb)
        with pytest.raises(DatasetNotFoundError, match="2007_000039.png \\(mode RGB\\)"):
            DatasetCatalog.get(f"{name}_train")
        with pytest.raises(LabelMapError, match="2007_000039.png' has PIL mode 'RGB'"):
            read_label_map(str(rgb))
    finally:
        for split in ("train", "aug", "val"):
            DatasetCatalog.remove(f"{name}_{split}")
            MetadataCatalog.remove(f"{name}_{split}")


def test_sbd_conversion_and_mmseg_aug_lists(voc_root, tmp_path):
    _, voc, _ = voc_root
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    seg = np.arange(12, dtype=np.uint8).reshape(3, 4) % 21
    savemat(str(sbd / "cls" / "2008_000123.mat"), {"GTcls": {"Segmentation": seg, "Boundaries": 0}})
    assert convert_sbd_mat(str(sbd / "cls"), str(voc / "SegmentationClassAug")) == (1, 0)
    png = Image.open(voc / "SegmentationClassAug" / "2008_000123.png")
    assert png.mode == "L"
    np.testing.assert_array_equal(np.asarray(png), seg)
    # aug = (SBD train | SBD val) - VOC train - VOC val; trainaug = (VOC train | SBD) - VOC val
    assert voc_aug_lists(["a", "b"], ["c"], ["b", "c", "d"], ["e", "a"]) == (
        ["d", "e"],
        ["a", "b", "d", "e"],
    )
    _write_ids(str(sbd / "train.txt"), ["2007_000039", "2008_000002", "2008_000123"])
    _write_ids(str(sbd / "val.txt"), ["2009_000001"])
    assert write_aug_lists(str(voc), str(sbd)) == (2, 4)
    with open(voc / "ImageSets" / "Segmentation" / "aug.txt") as f:
        assert f.read().split() == ["2008_000123", "2009_000001"]


@pytest.fixture
def ade_root(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    for d in (
        "images/training",
        "images/validation",
        "annotations/training",
        "annotations/validation",
    ):
        (base / d).mkdir(parents=True)
    # a label ramp: raw value = column (0 = "other" in column 0); 16 x 30
    raw = np.tile(np.arange(30, dtype=np.uint8), (16, 1))
    for split in ("training", "validation"):
        Image.fromarray(np.zeros((16, 30, 3), np.uint8)).save(
            base / "images" / split / "ADE_x_00000001.jpg"
        )
        Image.fromarray(raw, mode="L").save(base / "annotations" / split / "ADE_x_00000001.png")
    return tmp_path, base, raw


def test_ade20k_reduced_labels_and_raw_label_bands(ade_root):
    root, base, raw = ade_root
    assert reduce_zero_label(np.array([0, 1, 2, 150], np.uint8)).tolist() == [255, 0, 1, 149]
    assert prepare_ade20k_annotations(str(base)) == {"training": (1, 0), "validation": (1, 0)}
    reduced = np.asarray(
        Image.open(base / "annotations_detectron2" / "validation" / "ADE_x_00000001.png")
    )
    np.testing.assert_array_equal(reduced, reduce_zero_label(raw))
    name = "_test_ade"
    register_ade20k_sem_seg(str(root), prefix=name)
    try:
        recs = DatasetCatalog.get(f"{name}_val")
        assert [(r["height"], r["width"]) for r in recs] == [(16, 30)]
        meta = MetadataCatalog.get(f"{name}_val")
        assert (
            len(meta.stuff_classes) == 150 and meta.reduce_zero_label and meta.ignore_label == 255
        )
        # prediction: everything class 7 (= raw label 8), no predicted edges
        logits = torch.zeros(150, 16, 30)
        logits[7] = 1.0
        ev = BoundaryErrorSemSegEvaluator(f"{name}_val", distributed=False, band_width=15)
        ev.reset()
        ev.process([{"file_name": recs[0]["file_name"]}], [{"sem_seg": logits}])
        res = ev.evaluate()["boundary_errors"]
    finally:
        DatasetCatalog.remove(f"{name}_train"), DatasetCatalog.remove(f"{name}_val")
        MetadataCatalog.remove(f"{name}_train"), MetadataCatalog.remove(f"{name}_val")
    # by hand: a linear ramp has Laplacian 0 inside; with reflect-101 borders the raw map has edges
    # only in columns 0 and 29 -> GT band = columns 0-7 and 22-29. On the reduced map (255, 0, 1,
    # ...) column 1 is an edge too, so its band would also hold column 8 (raw 8 = class 7), the only
    # column the prediction gets right.
    assert np.isnan(
        res["MErr-" + meta.stuff_classes[7]]
    )  # class 7 has no GT pixel in the raw-label band
    # mIoU on the reduced labels: 29 classes present (raw 1..29), only class 7 intersects: 16 / (29
    # * 16)
    assert res["mIoU"] == pytest.approx(100 * (16 / (29 * 16)) / 29)
    counter = BoundaryErrorCounter(150, 255, 15)
    counter.update(
        np.full((16, 30), 7, np.uint8), reduced
    )  # the band on the reduced labels instead: differs
    assert counter.metrics(meta.stuff_classes)["MErr-" + meta.stuff_classes[7]] == 0.0
