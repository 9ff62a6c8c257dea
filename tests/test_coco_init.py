"""Released LIS initialisation: a Detectron2 model-zoo COCO-80 Mask R-CNN R50-FPN (.pkl) converted
to the 8 LIS classes by true class and loaded into the DAF/FreqMix Mask R-CNN of the SynCOCO->LIS
config. The source is a synthetic checkpoint with the zoo's names and shapes (those of Detectron2's
stock 80-class model), random values, pickled as the zoo does. Nothing is downloaded."""

import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model

from segalias_d2 import compat
from segalias_d2.checkpoint import (
    class_rows,
    coco_thing_classes,
    convert_coco_detector,
    load_backbone_weights,
)
from segalias_d2.checkpoint.convert import main as convert_main
from segalias_d2.data.lowlight import LIS_CLASSES
from segalias_d2.engine import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNCOCO_CFG = os.path.join(
    REPO, "configs/LIS-InstanceSegmentation/mask_rcnn_R_50_AAFPN_1x_syncoco2lis.yaml"
)

# by hand (lis_lowlight.md §1.3): COCO-80 contiguous indices of bicycle, car, motorcycle, bus,
# bottle, chair, dining table, tv = the true LIS classes of ids 0..7 (LIS issue #23)
COCO80_ROWS = [1, 2, 3, 5, 39, 56, 60, 62]
CLS_ROWS = COCO80_ROWS + [80]  # background is the last of the 81 rows
BOX_ROWS = [
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    20,
    21,
    22,
    23,
    156,
    157,
    158,
    159,
    224,
    225,
    226,
    227,
    240,
    241,
    242,
    243,
    248,
    249,
    250,
    251,
]
CLASS_KEYS = {
    "roi_heads.box_predictor.cls_score.weight": CLS_ROWS,
    "roi_heads.box_predictor.cls_score.bias": CLS_ROWS,
    "roi_heads.box_predictor.bbox_pred.weight": BOX_ROWS,
    "roi_heads.box_predictor.bbox_pred.bias": BOX_ROWS,
    "roi_heads.mask_head.predictor.weight": COCO80_ROWS,
    "roi_heads.mask_head.predictor.bias": COCO80_ROWS,
}


def test_lis_classes_pick_the_hand_computed_coco_rows():
    assert list(LIS_CLASSES) == [
        "bicycle",
        "car",
        "motorbike",
        "bus",
        "bottle",
        "chair",
        "diningtable",
        "tvmonitor",
    ]
    coco = coco_thing_classes()
    assert len(coco) == 80
    assert [coco[i] for i in COCO80_ROWS] == [
        "bicycle",
        "car",
        "motorcycle",
        "bus",
        "bottle",
        "chair",
        "dining table",
        "tv",
    ]
    assert class_rows(coco, LIS_CLASSES) == COCO80_ROWS


def _stock_coco80_state_dict():
    """Names and shapes of the model Detectron2's zoo config
    COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x builds (what its model_final_f10217.pkl
    holds)."""
    cfg = get_cfg()
    cfg.merge_from_file(
        model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    )
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80 and cfg.MODEL.RESNETS.NORM == "FrozenBN"
    return build_model(cfg).state_dict()


@pytest.fixture(scope="module")
def zoo_pkl(tmp_path_factory):
    rng = np.random.default_rng(0)
    model = {}
    for name, t in _stock_coco80_state_dict().items():
        arr = rng.standard_normal(tuple(t.shape), dtype=np.float32)
        model[name] = np.abs(arr) + 0.5 if name.endswith("running_var") else arr
    path = str(tmp_path_factory.mktemp("zoo") / "model_final_f10217.pkl")
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo"}, f)
    yield path, model
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)  # 170 MB, not kept to the end


def _our_model():
    cfg = load_config(SYNCOCO_CFG)
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.MODEL.SEGALIAS.DAF.ENABLED and cfg.MODEL.SEGALIAS.FREQMIX.ENABLED
    assert (
        cfg.MODEL.RESNETS.STRIDE_IN_1X1
        and cfg.INPUT.FORMAT == "BGR"
        and cfg.MODEL.RESNETS.NORM == "FrozenStatsBN"
    )
    return build_model(cfg)


def test_zoo_checkpoint_converts_and_fills_every_non_freqmix_tensor(zoo_pkl, tmp_path):
    src, source = zoo_pkl
    dst = str(tmp_path / "coco80_to_lis8.pkl")
    assert convert_main([src, dst, "--format", "d2_coco_detector", "--class-layers", "slice"]) == 0
    model = _our_model()
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    checkpointer = DetectionCheckpointer(model)  # what the trainer uses for MODEL.WEIGHTS
    incompatible = checkpointer._load_model(checkpointer._load_file(dst))
    freqmix = sorted(k for k in fresh if ".freqmix." in k)
    assert len(freqmix) == 13 * 10  # 13 FreqMix modules in res3-res5, 10 tensors each
    # Detectron2 main keeps the BN counter in the stages FREEZE_AT converts (stem + res2: 1 + 3*3 +
    # 1 norms); the zoo file has none, so there they are reported missing too (unused by
    # FrozenBatchNorm2d)
    counters = sorted(
        f"{n}.num_batches_tracked"
        for n, m in model.named_modules()
        if isinstance(m, FrozenBatchNorm2d) and compat.frozen_batchnorm_keeps_bn_counter()
    )
    assert len(counters) == (11 if compat.frozen_batchnorm_keeps_bn_counter() else 0)
    assert (
        sorted(incompatible.missing_keys) == sorted(freqmix + counters)
        and incompatible.unexpected_keys == []
    )
    state = model.state_dict()
    checked = 0
    for name, value in state.items():
        if ".freqmix." in name:
            assert torch.equal(value, fresh[name])  # kept its new initialisation
            continue
        if name.endswith("num_batches_tracked"):
            continue
        expected = source[name][CLASS_KEYS[name]] if name in CLASS_KEYS else source[name]
        assert np.array_equal(value.numpy(), expected), name
        checked += 1
    assert checked == len(source)  # every tensor of the zoo model landed somewhere, none twice
    assert tuple(state["roi_heads.box_predictor.cls_score.weight"].shape) == (9, 1024)
    # our own loader reports the same thing: FreqMix new, nothing else missing
    report = load_backbone_weights(model, dst)
    assert sorted(report.missing_freqmix) == freqmix
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []


def test_default_reinit_leaves_the_class_layers_new_as_released(zoo_pkl, tmp_path):
    # the released mmdet load_from skips the shape-mismatched class layers: that is the default
    src, source = zoo_pkl
    dst = str(tmp_path / "reinit.pkl")
    assert convert_main([src, dst, "--format", "d2_coco_detector"]) == 0
    with open(dst, "rb") as f:
        saved = pickle.load(f)["model"]
    assert sorted(set(source) - set(saved)) == sorted(CLASS_KEYS)
    assert np.array_equal(
        saved["roi_heads.box_head.fc2.weight"], source["roi_heads.box_head.fc2.weight"]
    )


def _small_detector(cls_rows=81, box_rows=320, mask_rows=80, fpn=True):
    m = {
        "backbone.bottom_up.stem.conv1.weight": np.zeros((2, 3, 1, 1), np.float32),
        "roi_heads.box_predictor.cls_score.weight": np.arange(
            cls_rows * 2, dtype=np.float32
        ).reshape(cls_rows, 2),
        "roi_heads.box_predictor.bbox_pred.weight": np.arange(
            box_rows * 2, dtype=np.float32
        ).reshape(box_rows, 2),
        "roi_heads.mask_head.predictor.weight": np.arange(mask_rows, dtype=np.float32).reshape(
            mask_rows, 1, 1, 1
        ),
    }
    if fpn:
        m["backbone.fpn_lateral2.weight"] = np.zeros((2, 2, 1, 1), np.float32)
    return {"model": m, "__author__": "test"}


def test_class_agnostic_layers_are_kept_and_stale_buffers_dropped():
    obj = _small_detector(box_rows=4, mask_rows=1)
    obj["model"]["pixel_mean"] = np.zeros((3, 1, 1), np.float32)
    out, notes = convert_coco_detector(obj, class_layers="slice")
    assert out["roi_heads.box_predictor.bbox_pred.weight"].shape == (4, 2)
    assert out["roi_heads.mask_head.predictor.weight"].shape == (1, 1, 1, 1)
    assert out["roi_heads.box_predictor.cls_score.weight"][:, 0].tolist() == [
        2.0 * r for r in CLS_ROWS
    ]
    assert "pixel_mean" not in out and any("pixel_mean" in n for n in notes)
    # released default: class-agnostic layers have the same shape in the 8-class model, so they
    # load; cls_score not
    out, _ = convert_coco_detector(obj)
    assert out["roi_heads.box_predictor.bbox_pred.weight"].shape == (4, 2)
    assert "roi_heads.box_predictor.cls_score.weight" not in out


@pytest.mark.parametrize(
    "obj,match",
    [
        (_small_detector(cls_rows=9, box_rows=32, mask_rows=8), "already has 8 classes"),
        (_small_detector(box_rows=316), "bbox_pred.weight has 316 rows; expected 320"),
        (_small_detector(mask_rows=79), "predictor.weight has 79 rows; expected 80"),
        (_small_detector(fpn=False), "ResNet-FPN"),
        (
            {"model": {"backbone.bottom_up.res2.0.conv1.weight": np.zeros(1)}, "__author__": "x"},
            "not a Detectron2",
        ),
    ],
)
def test_wrong_checkpoints_are_clear_errors(obj, match):
    with pytest.raises(ValueError, match=match) as e:
        convert_coco_detector(obj, src="model.pkl")
    assert "model.pkl" in str(e.value)
