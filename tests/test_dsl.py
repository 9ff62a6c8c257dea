"""DSL (LIS): the feature loss on hand-made features, the clean/noisy meta-architecture (loss keys,
the loss on the real C2-C5, single-pass inference equal to GeneralizedRCNN), the clean twins from
the mapper (synthetic and real LIS pairs, same geometry, clear errors), and the COCO initialisation
of the released AWD+SCB+DSL recipe."""

import copy
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from segalias_d2 import compat
from segalias_d2.checkpoint import load_backbone_weights
from segalias_d2.checkpoint.convert import main as convert_main
from segalias_d2.data import LowLightDatasetMapper
from segalias_d2.data.lowlight import lis_clean_twin_file_name, register_lowlight_dataset
from segalias_d2.data.raw_io import ImageReadError, LowLightDataError
from segalias_d2.engine import load_config
from segalias_d2.modeling.meta_arch import DSLGeneralizedRCNN, dsl_feature_loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT = os.path.join(REPO, "configs/quick_schedules/mask_rcnn_R_50_lis_modules_instant_test.yaml")
RECIPE = os.path.join(
    REPO, "configs/LIS-InstanceSegmentation/mask_rcnn_R_50_AWD_SCB_DSL_FPN_1x_syncoco2lis.yaml"
)
TASK_LOSSES = {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}


# ----------------------------------------------------------------------------------------- the loss
def test_dsl_loss_on_hand_made_features():
    noisy = {
        "res2": torch.tensor([0.0, 0.2, 0.5, -1.0]).view(1, 1, 2, 2).requires_grad_(),
        "res3": torch.tensor([0.1, 0.3]).view(1, 2, 1, 1).requires_grad_(),
    }
    clean = {
        "res2": torch.zeros(1, 1, 2, 2, requires_grad=True),
        "res3": torch.zeros(1, 2, 1, 1, requires_grad=True),
    }
    total, terms = dsl_feature_loss(noisy, clean)
    # res2: squares 0, 0.04, 0.25, 1 -> clamped 0, 0.04, 0.1, 0.1 -> mean 0.06; res3: 0.01, 0.09 ->
    # mean 0.05
    assert terms["res2"].item() == pytest.approx(0.01 * 0.06, rel=1e-6)
    assert terms["res3"].item() == pytest.approx(0.01 * 0.05, rel=1e-6)
    assert total.item() == pytest.approx(0.0011, rel=1e-6)
    total.backward()
    # d/dF_noisy = 0.01 * 2 D / N where D^2 < 0.1, 0 where clamped; the clean side gets the opposite
    # (no detach)
    assert torch.allclose(
        noisy["res2"].grad.flatten(), torch.tensor([0.0, 0.01 * 2 * 0.2 / 4, 0.0, 0.0])
    )
    assert torch.allclose(
        noisy["res3"].grad.flatten(), torch.tensor([0.01 * 2 * 0.1 / 2, 0.01 * 2 * 0.3 / 2])
    )
    for k in noisy:
        assert torch.equal(clean[k].grad, -noisy[k].grad)
    same, _ = dsl_feature_loss({"a": torch.ones(2, 3)}, {"a": torch.ones(2, 3)})
    assert same.item() == 0.0
    w, _ = dsl_feature_loss(
        {"a": torch.full((4,), 0.2)}, {"a": torch.zeros(4)}, weight=0.5, clamp=0.01
    )
    assert w.item() == pytest.approx(0.5 * 0.01)
    with pytest.raises(ValueError, match="same geometry"):
        dsl_feature_loss({"a": torch.ones(1, 2)}, {"a": torch.ones(2, 1)})


# ---------------------------------------------------------------------------------------- meta-arch
def _cfg(**opts):
    cfg = load_config(INSTANT, [x for kv in opts.items() for x in (kv[0], str(kv[1]))])
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.fixture(scope="module")
def dsl_model():
    torch.manual_seed(0)
    # the recipe's BN (statistics frozen, stem + res2 frozen) on the all-five-modules instant model
    cfg = _cfg(
        **{
            "MODEL.RESNETS.NORM": "FrozenStatsBN",
            "MODEL.BACKBONE.FREEZE_AT": 2,
            "TEST.DETECTIONS_PER_IMAGE": 5,
        }
    )  # few masks to paste: the inference check stays fast
    model = build_model(cfg)
    assert isinstance(model, DSLGeneralizedRCNN)
    return cfg, model


def _inputs(seed, n=2, size=(64, 96)):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        inst = Instances(size)
        inst.gt_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 50.0]]))
        inst.gt_classes = torch.tensor([i % 8])

        mask = torch.zeros(1, *size, dtype=torch.bool)
        mask[:, 8:50, 8:40] = True
        inst.gt_masks = BitMasks(mask)
        noisy = torch.rand(3, *size, generator=g) * 255
        out.append(
            {
                "image": noisy,
                "clean_image": (noisy * 0.5 + 60).clamp(0, 255),
                "instances": inst,
                "height": size[0],
                "width": size[1],
                "file_name": f"img{i}.png",
            }
        )
    return out


def test_dsl_training_pass_keys_and_the_loss_on_the_real_stage_outputs(dsl_model):
    cfg, model = dsl_model
    model.train()
    batch = _inputs(1, n=1, size=(64, 64))
    with EventStorage(0) as storage:
        losses = model(batch)
    assert set(losses) == TASK_LOSSES | {f"clean_{k}" for k in TASK_LOSSES} | {"loss_dsl"}
    # independent: C2-C5 of both images from the bottom-up net, the loss written out
    mean, std = model.pixel_mean, model.pixel_std
    with torch.no_grad():
        feats = [
            model.backbone.bottom_up(torch.stack([(x[key] - mean) / std for x in batch]))
            for key in ("image", "clean_image")
        ]
    expected = {
        k: 0.01 * torch.clamp((feats[0][k] - feats[1][k]) ** 2, max=0.1).mean() for k in feats[0]
    }
    assert losses["loss_dsl"].item() == pytest.approx(
        sum(v.item() for v in expected.values()), rel=1e-5
    )
    logged = storage.latest()
    for k, v in expected.items():
        assert logged[f"dsl/{k}"][0] == pytest.approx(v.item(), rel=1e-5)
    # FREEZE_AT 2: the C2 term is a constant (stem and res2 frozen); C3-C5 carry gradient into AWD /
    # SCB
    with torch.enable_grad():
        c2 = model.backbone.bottom_up(torch.stack([(x["image"] - mean) / std for x in batch]))[
            "res2"
        ]
    assert not c2.requires_grad
    losses["loss_dsl"].backward()
    assert model.backbone.bottom_up.awd["res3"].tap_conv.weight.grad.abs().sum() > 0
    assert model.backbone.bottom_up.res3[0].scb.proj.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_dsl_inference_is_the_single_generalized_rcnn_pass(dsl_model):
    cfg, model = dsl_model
    plain_cfg = cfg.clone()
    plain_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    plain = build_model(plain_cfg)
    plain.load_state_dict(
        model.state_dict(), strict=True
    )  # same parameters: checkpoints load either way
    model.eval()
    plain.eval()
    inputs = [
        {k: v for k, v in x.items() if k in ("image", "height", "width")} for x in _inputs(2, n=1)
    ]
    with torch.no_grad():
        a, b = model(inputs)[0]["instances"], plain(inputs)[0]["instances"]
    assert (
        len(a) == len(b)
        and torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        and torch.equal(a.scores, b.scores)
    )


def test_dsl_errors_name_what_is_missing(dsl_model):
    cfg, model = dsl_model
    model.train()
    batch = _inputs(3, n=1)
    del batch[0]["clean_image"]
    with EventStorage(0), pytest.raises(KeyError, match="clean twin"):
        model(batch)
    batch = _inputs(3, n=1)
    batch[0]["clean_image"] = batch[0]["clean_image"][:, :32]
    with EventStorage(0), pytest.raises(ValueError, match="share its geometry"):
        model(batch)
    with pytest.raises(ValueError, match="INPUT.SEGALIAS.CLEAN_TWIN"):
        build_model(_cfg(**{"INPUT.SEGALIAS.CLEAN_TWIN": "none"}))
    with pytest.raises(ValueError, match="IN_FEATURES"):
        build_model(_cfg(**{"MODEL.SEGALIAS.DSL.IN_FEATURES": "['res6']"}))


# -------------------------------------------------------------------------------------- clean twins
def _demo_record(name, index=0):
    return copy.deepcopy(DatasetCatalog.get(name)[index])


def _fixed_aug(flip):
    return [
        T.ResizeTransform(320, 474, 160, 237, interp=0),
        T.HFlipTransform(237) if flip else T.NoOpTransform(),
    ]


def _mapper(cfg, **kw):
    args = LowLightDatasetMapper.from_config(cfg, is_train=True)
    args.update(kw)
    return LowLightDatasetMapper(**args)


@pytest.mark.parametrize("flip", [False, True])
def test_real_pair_twin_is_the_normal_image_through_the_same_transforms(demo_datasets, flip):
    cfg = _cfg(**{"INPUT.SEGALIAS.SYNTHESIS.ENABLED": False, "INPUT.SEGALIAS.CLEAN_TWIN": "pair"})
    dark = _demo_record("lis_demo_raw_dark_train")
    normal = _demo_record("lis_demo_raw_normal_train")
    assert dark["file_name"].endswith("2.png") and normal["file_name"].endswith("1.png")
    out = _mapper(cfg, augmentations=_fixed_aug(flip))(dark)
    # independent expectation: the RAW-normal record mapped on its own with the same transforms
    plain = _mapper(cfg, augmentations=_fixed_aug(flip), clean_twin="none")
    assert torch.equal(out["clean_image"], plain(normal)["image"])
    assert torch.equal(out["image"], plain(dark)["image"])
    assert out["image"].shape == (3, 160, 237) and not torch.equal(out["image"], out["clean_image"])


def test_random_flip_is_shared_by_the_pair(demo_datasets):
    cfg = _cfg(**{"INPUT.SEGALIAS.SYNTHESIS.ENABLED": False, "INPUT.SEGALIAS.CLEAN_TWIN": "pair"})
    dark = _demo_record("lis_demo_raw_dark_train")
    plain = _mapper(cfg, augmentations=_fixed_aug(False), clean_twin="none")
    normal_img = plain(_demo_record("lis_demo_raw_normal_train"))["image"]
    mapper = _mapper(
        cfg, augmentations=[T.ResizeTransform(320, 474, 160, 237, interp=0), T.RandomFlip(0.5)]
    )
    seen = set()
    for seed in range(6):
        np.random.seed(seed)
        out = mapper(copy.deepcopy(dark))
        flipped = torch.equal(out["clean_image"], normal_img.flip(-1))
        assert flipped or torch.equal(out["clean_image"], normal_img)
        boxes = out["instances"].gt_boxes.tensor
        seen.add(flipped)
        ref = plain(copy.deepcopy(dark))
        assert torch.equal(out["image"], ref["image"].flip(-1) if flipped else ref["image"])
        ref_boxes = ref["instances"].gt_boxes.tensor.clone()
        if flipped:
            ref_boxes[:, [0, 2]] = 237 - ref_boxes[:, [2, 0]]
        assert torch.allclose(boxes, ref_boxes, atol=1e-4)  # the instances follow the same flip
    assert seen == {True, False}


def test_synthetic_twin_and_clean_twin_errors(demo_datasets, tmp_path):
    cfg = _cfg()  # the instant config: synthesis on, CLEAN_TWIN synthetic (RETURN_CLEAN left False)
    assert not cfg.INPUT.SEGALIAS.SYNTHESIS.RETURN_CLEAN
    srgb = _demo_record("lis_demo_srgb_normal_train")
    out = _mapper(cfg, augmentations=_fixed_aug(True))(srgb)
    assert out["clean_image"].shape == out["image"].shape and not torch.equal(
        out["clean_image"], out["image"]
    )
    with pytest.raises(LowLightDataError, match="was not synthesised"):
        _mapper(cfg, augmentations=_fixed_aug(False))(_demo_record("lis_demo_raw_dark_train"))
    with pytest.raises(ValueError, match="SYNTHESIS.ENABLED True"):
        _mapper(cfg, synthesis=None)
    with pytest.raises(ValueError, match="SYNTHESIS.ENABLED False"):
        _mapper(cfg, clean_twin="pair")
    pair = _cfg(**{"INPUT.SEGALIAS.SYNTHESIS.ENABLED": False, "INPUT.SEGALIAS.CLEAN_TWIN": "pair"})
    mapper = _mapper(pair, augmentations=_fixed_aug(False))
    rec = _demo_record("lis_demo_raw_dark_train")
    rec["clean_file_name"] = str(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="clean twin of record"):
        mapper(rec)
    rec["clean_file_name"] = _demo_record("lis_demo_raw_dark_train", 1)[
        "file_name"
    ]  # 320x426, the image 320x474
    with pytest.raises(LowLightDataError, match="one geometry"):
        mapper(rec)
    with pytest.raises(LowLightDataError, match="cannot derive the clean twin"):
        mapper(_demo_record("lis_demo_raw_dark_packed_train"))
    test_mapper = LowLightDatasetMapper(pair, is_train=False)  # evaluation needs no twin
    assert "clean_image" not in test_mapper(_demo_record("lis_demo_raw_dark_test"))


def test_twin_file_names_and_registration(demo_datasets):
    root = os.path.join("LIS", "RGB-dark", "JPEGImages", "1810.JPG")
    assert lis_clean_twin_file_name(root) == os.path.join(
        "LIS", "RGB-normal", "JPEGImages", "1809.png"
    )
    assert (
        lis_clean_twin_file_name("/d/LIS/RAW-dark/./JPEGImages/2.png")
        == "/d/LIS/RAW-normal/JPEGImages/1.png"
    )
    demo = demo_datasets["lis_demo"]
    name = "_test_dsl_pairs"
    register_lowlight_dataset(
        name,
        os.path.join(demo, "annotations", "lis_coco_png_train+1.json"),
        os.path.join(demo, "RAW-dark"),
        image_format="raw_rgb",
        clean_image_root=os.path.join(demo, "RAW-normal"),
    )
    try:
        recs = DatasetCatalog.get(name)
        assert [os.path.basename(r["clean_file_name"]) for r in recs[:3]] == [
            "1.png",
            "3.png",
            "5.png",
        ]
        assert all(
            os.path.isfile(r["clean_file_name"]) and r["clean_image_format"] == "raw_rgb"
            for r in recs
        )
        assert os.path.dirname(recs[0]["clean_file_name"]) == os.path.join(
            demo, "RAW-normal", "JPEGImages"
        )
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


# --------------------------------------------------------------------------------- COCO init recipe
def test_coco_init_of_the_released_recipe_reports_awd_and_scb_as_new(tmp_path):
    zoo = get_cfg()
    zoo.merge_from_file(
        model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    )
    zoo.MODEL.DEVICE = "cpu"
    rng = np.random.default_rng(0)
    source = {
        k: rng.standard_normal(tuple(v.shape), dtype=np.float32)
        for k, v in build_model(zoo).state_dict().items()
    }
    src, dst = str(tmp_path / "model_final_f10217.pkl"), str(tmp_path / "coco80_to_lis8.pkl")
    with open(src, "wb") as f:
        pickle.dump({"model": source, "__author__": "Detectron2 Model Zoo"}, f)
    assert convert_main([src, dst, "--format", "d2_coco_detector"]) == 0
    cfg = load_config(RECIPE)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert isinstance(model, DSLGeneralizedRCNN) and cfg.MODEL.RESNETS.NORM == "FrozenStatsBN"
    new = sorted(k for k in model.state_dict() if ".awd." in k or ".scb." in k)
    assert len(new) == 3 * 8 + 13 * 2  # per AWD: tap conv, BN weight/bias/mean/var/counter, 2 convs
    counters = sorted(
        f"{n}.num_batches_tracked"
        for n, m in model.named_modules()
        if isinstance(m, FrozenBatchNorm2d) and compat.frozen_batchnorm_keeps_bn_counter()
    )
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(dst))
    class_layers = {
        k
        for k in model.state_dict()
        if k.startswith(("roi_heads.box_predictor.", "roi_heads.mask_head.predictor."))
    }
    # (a BatchNorm fills a counter missing from a checkpoint without version metadata, as the zoo
    # .pkl is)
    new_tensors = [k for k in new if not k.endswith("num_batches_tracked")]
    assert sorted(set(incompatible.missing_keys) - class_layers) == sorted(new_tensors + counters)
    report = load_backbone_weights(model, dst)
    assert sorted(report.missing_lis_modules) == new_tensors
    assert report.missing_freqmix == [] and report.unexpected == []
    assert all(k in class_layers for k in report.missing)
