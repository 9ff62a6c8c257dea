"""The three UPerNet paper recipes (Cityscapes, VOC 2012 + aug, ADE20K; baseline and DAF+FreqMix):
what each config sets against the released MMSeg configs (upernet_recipes.md sections 1-2), and one
CPU training iteration of each through the Trainer's own loader, model and optimizer (tiny
input-size override, Cityscapes-layout demo data)."""

import math
import os

import pytest
import torch
from detectron2.data import transforms as T

from segalias_d2.data.augmentation import (
    PhotometricDistortion,
    ResizeToMultiple,
    build_lowlight_augmentation,
)
from segalias_d2.engine import Trainer, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = {
    "cityscapes": "Cityscapes-SemanticSegmentation/upernet_R_50_V1c_{}c128_768_80k_bs8.yaml",
    "voc": "VOC-SemanticSegmentation/upernet_R_50_V1c_{}c128_512_40k_voc12aug.yaml",
    "ade20k": "ADE20K-SemanticSegmentation/upernet_R_50_V1c_{}c128_512_80k_ade20k.yaml",
}
# released: classes, crop, iterations, warm-up, images per iteration, train sets, test mode
RELEASED = {
    "cityscapes": (19, 768, 80000, 200, 8, ("segalias_cityscapes_sem_seg_train",), True),
    "voc": (
        21,
        512,
        40000,
        0,
        16,
        ("segalias_voc2012_sem_seg_train", "segalias_voc2012_sem_seg_aug"),
        False,
    ),
    "ade20k": (150, 512, 80000, 0, 16, ("segalias_ade20k_sem_seg_train",), False),
}


def _path(dataset, variant):
    return os.path.join(
        REPO, "configs", RECIPES[dataset].format("DAF_FreqMix_" if variant == "aa" else "")
    )


@pytest.mark.parametrize("variant", ["baseline", "aa"])
@pytest.mark.parametrize("dataset", sorted(RECIPES))
def test_recipe_keys_follow_the_released_config(dataset, variant):
    cfg = load_config(_path(dataset, variant))
    m, s, inp = cfg.MODEL, cfg.SOLVER, cfg.INPUT
    classes, crop, iters, warm, batch, train, slide = RELEASED[dataset]
    assert (m.SEM_SEG_HEAD.NAME, m.SEM_SEG_HEAD.NUM_CLASSES, m.SEM_SEG_HEAD.CONVS_DIM) == (
        "UPerNetHead",
        classes,
        128,
    )
    up = m.SEGALIAS.UPERNET
    assert (list(up.POOL_SCALES), up.DROPOUT, up.ALIGN_CORNERS, up.LOSS_NORMALIZATION) == (
        [1, 2, 3, 6],
        0.1,
        False,
        "all_pixels",
    )
    assert (
        up.AUX.ENABLED,
        up.AUX.IN_FEATURE,
        up.AUX.CHANNELS,
        up.AUX.NUM_CONVS,
        up.AUX.LOSS_WEIGHT,
    ) == (True, "res4", 256, 1, 0.4)
    assert (
        m.SEGALIAS.STEM_TYPE,
        m.RESNETS.NORM,
        m.RESNETS.STRIDE_IN_1X1,
        m.BACKBONE.FREEZE_AT,
    ) == ("deep", "BN", False, 0)
    on = variant == "aa"
    assert (m.SEGALIAS.DAF.ENABLED, m.SEGALIAS.FREQMIX.ENABLED) == (on, on)
    if on:
        assert (
            m.SEGALIAS.DAF.CUTOFF,
            m.SEGALIAS.FREQMIX.CUTOFF,
            m.SEGALIAS.FREQMIX.REDUCTION,
            m.SEGALIAS.FREQMIX.GATE,
        ) == (0.35, 0.35, 16, "released")
    assert (
        tuple(inp.CROP.SIZE),
        inp.SEGALIAS.CROP_SINGLE_CATEGORY_MAX_AREA,
        inp.SEGALIAS.PHOTOMETRIC_DISTORTION.ENABLED,
        inp.FORMAT,
    ) == ((crop, crop), 0.75, True, "RGB")
    assert (s.MAX_ITER, s.WARMUP_ITERS, s.IMS_PER_BATCH, s.BASE_LR, s.LR_SCHEDULER_NAME) == (
        iters,
        warm,
        batch,
        0.01,
        "WarmupPolyLR",
    )
    assert (
        s.WEIGHT_DECAY,
        s.WEIGHT_DECAY_NORM,
        s.SEGALIAS.HEAD_LR_MULTIPLIER,
        s.SEGALIAS.FREQMIX_LR_MULTIPLIER,
    ) == (5e-4, 5e-4, 2.0, 2.0)
    assert tuple(cfg.DATASETS.TRAIN) == train
    assert (
        cfg.DATALOADER.ASPECT_RATIO_GROUPING is False
    )  # square crops: MMSeg mixes orientations in a batch
    assert cfg.TEST.SEGALIAS.SLIDING_WINDOW.ENABLED == slide
    test_augs = build_lowlight_augmentation(cfg, is_train=False)
    assert [type(a) for a in test_augs] == [T.ResizeShortestEdge] + (
        [ResizeToMultiple] if dataset == "ade20k" else []
    )
    if slide:  # 1024x2048 -> 1025x2049 (keep ratio into (2049, 1025)), 768/512 windows: 2 x 4
        assert (
            inp.MIN_SIZE_TEST,
            inp.MAX_SIZE_TEST,
            list(cfg.TEST.SEGALIAS.SLIDING_WINDOW.STRIDE),
        ) == (1025, 2049, [512, 512])
        assert test_augs[0].get_transform(torch.zeros(1024, 2048, 3).numpy()).new_h == 1025
    else:
        assert (
            inp.MIN_SIZE_TEST,
            inp.MAX_SIZE_TEST,
            tuple(inp.MIN_SIZE_TRAIN),
            inp.MIN_SIZE_TRAIN_SAMPLING,
        ) == (512, 2048, (256, 1024), "range")


def _tiny(cfg, demo_root):
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.DATASETS.TRAIN = (
        "cityscapes_demo_sem_seg_train",
    )  # trainIds 0..18 (+255): valid for 19/21/150 classes
    cfg.INPUT.CROP.SIZE = (64, 64)
    rs = cfg.INPUT.SEGALIAS.RESIZE_SCALE
    rs.TARGET_HEIGHT, rs.TARGET_WIDTH = 96, 192
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (72, 96), 192
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
    cfg.SEED = 3
    return cfg


@pytest.mark.parametrize("dataset", sorted(RECIPES))
def test_recipe_runs_one_training_iteration_on_cpu(dataset, demo_datasets, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", demo_datasets["root"])
    cfg = _tiny(load_config(_path(dataset, "aa")), demo_datasets["root"])
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
    mapper_augs = Trainer.build_mapper(cfg, True).augmentations.augs
    assert isinstance(
        mapper_augs[-1], PhotometricDistortion
    )  # MMSeg order: resize, crop, flip, photometric
    batch = next(iter(Trainer.build_train_loader(cfg)))
    assert all(
        tuple(b["image"].shape[-2:]) == (64, 64) and b["sem_seg"].shape == (64, 64) for b in batch
    )
    # LR of each group at iteration 0: BASE_LR x multiplier x warm-up factor (Cityscapes: 0.1 at it
    # 0)
    warm = cfg.SOLVER.WARMUP_FACTOR if cfg.SOLVER.WARMUP_ITERS > 0 else 1.0
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            n = names[id(p)]
            mult = 2.0 if n.startswith("sem_seg_head.") or ".freqmix." in n else 1.0
            assert group["lr"] == pytest.approx(0.01 * mult * warm, rel=1e-12), n
            assert group["weight_decay"] == 5e-4, n
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = model(batch)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_aux"}
    assert all(math.isfinite(v.item()) and v.item() > 0 for v in losses.values())
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    scheduler.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    for prefix in (
        "backbone.stem.",
        "backbone.res5.",
        ".freqmix.",
        "sem_seg_head.decoder.",
        "sem_seg_head.aux.",
    ):
        assert any(prefix in "." + n for n in changed), f"no parameter under {prefix} was updated"
