"""Demo datasets: built once (cached), registered, and loadable by Detectron2 loaders in every
format."""

import json
import os

import numpy as np
import pytest
import torch
from demo_builder import (
    ensure_demo_datasets,  # datasets/demo_builder.py (on sys.path via tests/conftest.py)
)
from detectron2.config import get_cfg
from detectron2.data import (
    DatasetCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)

import segalias_d2  # noqa: F401
from segalias_d2.config import add_segalias_config
from segalias_d2.data import LIS_CLASSES
from segalias_d2.data.dataset_mapper import LowLightDatasetMapper
from segalias_d2.data.raw_io import read_lowlight_image


@pytest.fixture(scope="module")
def demo(demo_datasets):
    # built once per session into $DETECTRON2_DATASETS (default ./datasets), where the builtin names
    # point (tests/conftest.py); the first run downloads the pinned labelme sdist once into the
    # cache
    return demo_datasets


def _cfg(name, **kw):
    cfg = get_cfg()
    add_segalias_config(cfg)
    cfg.MODEL.MASK_ON = True
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.INPUT.MIN_SIZE_TRAIN = (160, 192)
    cfg.INPUT.MAX_SIZE_TRAIN = 320
    cfg.INPUT.MIN_SIZE_TEST = 160
    cfg.INPUT.MAX_SIZE_TEST = 320
    for k, v in kw.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = getattr(node, p)
        setattr(node, last, v)
    return cfg


def test_demo_is_built_and_idempotent(demo):
    lis = demo["lis_demo"]
    marker = os.path.join(lis, ".segalias_demo.json")
    mtime = os.path.getmtime(marker)
    with open(marker) as f:
        info = json.load(f)
    assert info["kept_instances"] == {"bottle": 1, "bus": 2, "car": 1, "chair": 1}
    assert (
        ensure_demo_datasets() == demo and os.path.getmtime(marker) == mtime
    )  # second run: nothing done
    for f in (
        "RGB-normal/JPEGImages/1.png",
        "RAW-normal/JPEGImages/1.png",
        "RAW-dark/JPEGImages/2.png",
        "RGB-dark/JPEGImages/2.JPG",
        "RAW-dark-packed/JPEGImages/2.png",
    ):
        assert os.path.exists(os.path.join(lis, f)), f
    for split in ("train", "test"):
        for kind, plus in (("png", ""), ("png", "+1"), ("JPG", "+1")):
            ann = json.load(
                open(os.path.join(lis, "annotations", f"lis_coco_{kind}_{split}{plus}.json"))
            )
            numbers = [int(os.path.basename(im["file_name"]).split(".")[0]) for im in ann["images"]]
            assert all(n % 2 == (0 if plus else 1) for n in numbers)
            assert [im["id"] for im in ann["images"]] == [n - 1 for n in numbers]
            # the revised LIS category list (true names by id) and the true ids of the demo's
            # classes
            assert [(c["id"], c["name"]) for c in ann["categories"]] == list(
                enumerate(
                    [
                        "bicycle",
                        "car",
                        "motorbike",
                        "bus",
                        "bottle",
                        "chair",
                        "diningtable",
                        "tvmonitor",
                    ]
                )
            )
            ids = sorted(a["category_id"] for a in ann["annotations"])
            # car 1, bus 3 (x2), bottle 4, chair 5 per photo set; train = originals + flips
            assert ids == sorted([1, 3, 3, 4, 5] * (2 if split == "train" else 1))
    raw_dark = read_lowlight_image(os.path.join(lis, "RAW-dark/JPEGImages/2.png"), "raw_rgb")
    assert raw_dark.dtype == np.float32 and len(np.unique(raw_dark)) > 256  # 16-bit, not squashed


@pytest.mark.parametrize(
    "name,channels",
    [
        ("lis_demo_raw_dark_train", 3),
        ("lis_demo_srgb_dark_train", 3),
        ("lis_demo_srgb_normal_train", 3),
        ("lis_demo_raw_normal_train", 3),
        ("lis_demo_raw_dark_packed_train", 4),
    ],
)
def test_train_loader_every_format(demo, name, channels):
    cfg = _cfg(name)
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 6 and sum(len(d["annotations"]) for d in dicts) == 10
    loader = build_detection_train_loader(cfg, mapper=LowLightDatasetMapper(cfg, is_train=True))
    batch = next(iter(loader))
    assert len(batch) == 2
    for x in batch:
        img = x["image"]
        assert img.dtype == torch.float32 and img.shape[0] == channels
        assert min(img.shape[1:]) in (160, 192) and max(img.shape[1:]) <= 320
        assert 0 <= float(img.min()) and float(img.max()) <= 255.0
        inst = x["instances"]
        assert inst.image_size == tuple(img.shape[1:]) and len(inst) >= 1
        assert inst.gt_classes.max() < len(LIS_CLASSES)
        boxes = inst.gt_boxes.tensor
        assert (boxes[:, 2] <= img.shape[2] + 1e-3).all() and (
            boxes[:, 3] <= img.shape[1] + 1e-3
        ).all()
        assert inst.gt_masks.polygons  # polygons transformed along with the image


def test_packed_annotations_scaled_to_half_resolution(demo):
    cfg = _cfg(
        "lis_demo_raw_dark_packed_train",
        **{"INPUT.MIN_SIZE_TRAIN": (160,), "INPUT.RANDOM_FLIP": "none"},
    )
    d = DatasetCatalog.get("lis_demo_raw_dark_packed_train")[0]
    full = LowLightDatasetMapper(
        _cfg(
            "lis_demo_raw_dark_train",
            **{"INPUT.MIN_SIZE_TRAIN": (160,), "INPUT.RANDOM_FLIP": "none"},
        ),
        True,
    )
    rgb_d = dict(
        d, file_name=d["file_name"].replace("RAW-dark-packed", "RAW-dark"), image_format="raw_rgb"
    )
    packed = LowLightDatasetMapper(cfg, True)(d)
    ref = full(rgb_d)
    assert packed["image"].shape[1:] == ref["image"].shape[1:]
    torch.testing.assert_close(
        packed["instances"].gt_boxes.tensor, ref["instances"].gt_boxes.tensor, atol=1.0, rtol=0
    )
    assert packed["height"] == d["height"] and packed["width"] == d["width"]


def test_synthesis_in_mapper_with_clean_pair(demo):
    cfg = _cfg(
        "lis_demo_srgb_normal_train",
        **{
            "INPUT.SEGALIAS.SYNTHESIS.ENABLED": True,
            "INPUT.SEGALIAS.SYNTHESIS.RETURN_CLEAN": True,
            "INPUT.SEGALIAS.SYNTHESIS.SEED": 0,
        },
    )
    d = DatasetCatalog.get("lis_demo_srgb_normal_train")[0]
    a = LowLightDatasetMapper(cfg, True)(d)
    b = LowLightDatasetMapper(cfg, True)(d)
    assert a["clean_image"].shape == a["image"].shape
    assert 10 <= a["synthesis_params"]["ratio"] <= 100
    if a["image"].shape == b["image"].shape and torch.equal(a["clean_image"], b["clean_image"]):
        torch.testing.assert_close(a["image"], b["image"])  # same seed + same flip -> same noise


def test_test_loader_and_decode_cache(demo, tmp_path):
    cfg = _cfg(
        "lis_demo_raw_dark_test",
        **{
            "DATALOADER.SEGALIAS.DECODE_CACHE.ENABLED": True,
            "DATALOADER.SEGALIAS.DECODE_CACHE.DIR": str(tmp_path),
        },
    )
    mapper = LowLightDatasetMapper(cfg, is_train=False)
    loader = build_detection_test_loader(cfg, "lis_demo_raw_dark_test", mapper=mapper)
    out = [x for b in loader for x in b]
    out += [x for b in loader for x in b]
    assert len(out) == 6 and all("instances" not in x and x["image"].shape[0] == 3 for x in out)
    assert mapper.decode_cache.misses == 3 and mapper.decode_cache.hits == 3
    assert len(os.listdir(tmp_path)) == 3


@pytest.mark.parametrize(
    "name", ["cityscapes_demo_sem_seg_train", "cityscapes_demo_sem_seg_dark_train"]
)
def test_semantic_demo_through_mapper(demo, name):
    cfg = _cfg(name, **{"MODEL.MASK_ON": False})
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 3 and len(DatasetCatalog.get(name.replace("train", "val"))) == 2
    batch = next(iter(build_detection_train_loader(cfg, mapper=LowLightDatasetMapper(cfg, True))))
    for x in batch:
        assert x["image"].shape[0] == 3 and x["sem_seg"].shape == x["image"].shape[1:]
        assert x["sem_seg"].dtype == torch.long
        assert set(torch.unique(x["sem_seg"]).tolist()) <= {13, 14, 255}
        assert (x["sem_seg"] == 13).any()
