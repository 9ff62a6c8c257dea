"""Every shipped full-recipe config's LR curve, computed through our Trainer's scheduler builder
with a real optimizer, against MMDetection/mmcv's formulas written out here: it reaches BASE_LR when
the warm-up ends, and the warm-up ends before the first LR step. Plus the epoch -> iteration
conversion (SOLVER.SEGALIAS.EPOCH_SCHEDULE). New configs are picked up by the glob."""

import glob
import math
import os
import warnings

import numpy as np
import pytest
import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.solver import build_lr_scheduler

from segalias_d2.config import add_segalias_config
from segalias_d2.engine import Trainer, load_config
from segalias_d2.engine.trainer import _EpochScheduleRecord
from segalias_d2.solver import apply_epoch_schedule, epoch_schedule_iterations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIS_TRAIN_IMAGES = 1561  # LIS train split (lis_lowlight.md §1.1)


def _recipe_configs():
    out = []
    for p in sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)):
        rel = os.path.relpath(p, os.path.join(REPO, "configs"))
        if rel.startswith("quick_schedules") or "instant" in rel or "demo" in rel:
            continue
        out.append(p)
    return out


def _lr_curve(cfg):
    """LR of the first param group at every iteration 0..MAX_ITER-1, as the trainer would use it."""
    model = torch.nn.Linear(3, 2)
    optimizer = Trainer.build_optimizer(cfg, model)
    scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
    lrs = np.empty(cfg.SOLVER.MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # "lr_scheduler.step() before optimizer.step()": no training here
        for it in range(cfg.SOLVER.MAX_ITER):
            lrs[it] = optimizer.param_groups[0]["lr"]
            scheduler.step()
    return lrs


def _expected_curve(cfg):
    """mmcv LrUpdaterHook: lr(it) = regular_lr(it) * warm(it), warmup='linear':
    warm(it) = 1 - (1 - it / warmup_iters) * (1 - warmup_ratio) while it < warmup_iters, else 1."""
    s = cfg.SOLVER
    its = np.arange(s.MAX_ITER, dtype=np.float64)
    if s.LR_SCHEDULER_NAME == "WarmupMultiStepLR":  # mmdet StepLrUpdaterHook (steps as iterations)
        passed = (its[:, None] >= np.asarray(s.STEPS, dtype=np.float64)[None, :]).sum(axis=1)
        regular = s.BASE_LR * s.GAMMA**passed
    elif s.LR_SCHEDULER_NAME == "WarmupPolyLR":  # mmcv PolyLrUpdaterHook(power, min_lr)
        p = s.SEGALIAS
        regular = (s.BASE_LR - p.POLY_LR_MIN_LR) * (
            1 - its / s.MAX_ITER
        ) ** p.POLY_LR_POWER + p.POLY_LR_MIN_LR
    else:
        raise AssertionError(f"no expectation written for {s.LR_SCHEDULER_NAME}")
    warm = np.where(
        its < s.WARMUP_ITERS,
        1.0 - (1.0 - its / max(s.WARMUP_ITERS, 1)) * (1.0 - s.WARMUP_FACTOR),
        1.0,
    )
    return regular * warm


def _with_images(cfg, num_images):
    cfg = cfg.clone()
    cfg.SOLVER.SEGALIAS.EPOCH_SCHEDULE.NUM_IMAGES = num_images
    return Trainer.resolve_epoch_schedule(cfg)


def _cases():
    for path in _recipe_configs():
        rel = os.path.relpath(path, os.path.join(REPO, "configs"))
        if load_config(path).SOLVER.SEGALIAS.EPOCH_SCHEDULE.ENABLED:
            # image count unknown here (COCO-8 is counted at setup): LIS's own and a COCO-8-sized
            # count
            for n in (LIS_TRAIN_IMAGES, 25001):
                yield pytest.param(path, n, id=f"{rel}[{n} images]")
        else:
            yield pytest.param(path, None, id=rel)


@pytest.mark.parametrize("path,num_images", list(_cases()))
def test_recipe_lr_curve_reaches_base_lr_after_warmup(path, num_images):
    cfg = load_config(path)
    if num_images is not None:
        cfg = _with_images(cfg, num_images)
    s = cfg.SOLVER
    lrs = _lr_curve(cfg)
    np.testing.assert_allclose(lrs, _expected_curve(cfg), rtol=1e-9, atol=0)
    warm = s.WARMUP_ITERS
    if warm == 0:  # released mmseg VOC / ADE20K recipes: poly from BASE_LR, no warm-up
        assert s.LR_SCHEDULER_NAME == "WarmupPolyLR", "only the poly recipes run without a warm-up"
        assert int(np.argmax(lrs)) == 0 and lrs[0] == pytest.approx(s.BASE_LR, rel=1e-12)
        return
    assert 0 < warm < s.MAX_ITER
    peak = int(np.argmax(lrs))
    assert peak == warm, f"LR peaks at iteration {peak}, warm-up is {warm} iterations"
    if s.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        assert warm < s.STEPS[0] < s.MAX_ITER, "the warm-up must end before the first LR step"
        assert lrs[warm] == pytest.approx(s.BASE_LR, rel=1e-12)
        assert lrs[warm - 1] < s.BASE_LR
        assert lrs[s.STEPS[0] - 1] == pytest.approx(s.BASE_LR, rel=1e-12)
        assert lrs[s.STEPS[0]] == pytest.approx(s.BASE_LR * s.GAMMA, rel=1e-12)
    else:  # poly decays during the warm-up too: the peak is BASE_LR less the decay accrued by then
        assert lrs[warm] >= 0.99 * s.BASE_LR


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in _recipe_configs()
        if any(n.startswith("lis_") for n in load_config(p).DATASETS.TRAIN)
    ],
    ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")),
)
def test_lis_recipes_run_12_epochs_of_the_lis_train_split(path):
    """Configs training on LIS: released 1x = 12 epochs, LR x0.1 after epochs 9 and 11, 500 warm-up
    iterations from 0.001x, lr = 0.02 * batch / 16 (the linear scaling the released configs use)."""
    s = load_config(path).SOLVER
    per_epoch = -(-LIS_TRAIN_IMAGES // s.IMS_PER_BATCH)
    assert (s.MAX_ITER, tuple(s.STEPS)) == (12 * per_epoch, (9 * per_epoch, 11 * per_epoch))
    assert (s.WARMUP_ITERS, s.WARMUP_FACTOR, s.WARMUP_METHOD) == (500, 0.001, "linear")
    assert s.BASE_LR == pytest.approx(0.02 * s.IMS_PER_BATCH / 16)
    assert (s.MOMENTUM, s.WEIGHT_DECAY, s.WEIGHT_DECAY_NORM, s.GAMMA) == (0.9, 1e-4, 1e-4, 0.1)


def test_shipped_lis_numbers_by_hand():
    # 1561 images at batch 8: ceil = 196 it/epoch; at batch 1: 1561 it/epoch
    assert epoch_schedule_iterations(1561, 8, 12, (9, 11)) == (196, 2352, (1764, 2156))
    assert epoch_schedule_iterations(1561, 1, 12, (9, 11)) == (1561, 18732, (14049, 17171))
    assert epoch_schedule_iterations(25001, 8, 12, (9, 11)) == (3126, 37512, (28134, 34386))


def test_epoch_conversion_writes_count_and_round_trips_through_the_dump():
    cfg = load_config(
        os.path.join(
            REPO, "configs/LIS-InstanceSegmentation/mask_rcnn_R_50_AAFPN_1x_syncoco2lis.yaml"
        )
    )
    assert (
        cfg.SOLVER.SEGALIAS.EPOCH_SCHEDULE.ENABLED
        and cfg.SOLVER.SEGALIAS.EPOCH_SCHEDULE.NUM_IMAGES == 0
    )
    cfg.freeze()
    out = apply_epoch_schedule(cfg, 25001)
    assert out.is_frozen() and cfg.SOLVER.MAX_ITER == 2352  # the input is left alone
    assert (out.SOLVER.MAX_ITER, tuple(out.SOLVER.STEPS), out.SOLVER.CHECKPOINT_PERIOD) == (
        37512,
        (28134, 34386),
        3126,
    )
    # the dumped config (what a --resume reads back) gives the same iterations without counting
    # anything
    again = load_config("")
    again.merge_from_other_cfg(CfgNode(yaml.safe_load(out.dump())))
    assert again.SOLVER.SEGALIAS.EPOCH_SCHEDULE.NUM_IMAGES == 25001
    resolved = Trainer.resolve_epoch_schedule(again)
    assert (resolved.SOLVER.MAX_ITER, tuple(resolved.SOLVER.STEPS)) == (37512, (28134, 34386))


@pytest.fixture
def tiny_train_set():
    name = "_test_epoch_schedule_train"
    # 10 images, 3 without annotations: FILTER_EMPTY_ANNOTATIONS leaves 7
    recs = [
        {
            "file_name": f"{i}.png",
            "image_id": i,
            "height": 8,
            "width": 8,
            "annotations": []
            if i in (2, 5, 7)
            else [{"bbox": [0, 0, 4, 4], "bbox_mode": 1, "category_id": 0}],
        }
        for i in range(10)
    ]
    DatasetCatalog.register(name, lambda: [dict(r) for r in recs])
    MetadataCatalog.get(name).set(thing_classes=["thing"])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_resolve_counts_the_filtered_training_set(tiny_train_set):
    cfg = load_config("")
    cfg.DATASETS.TRAIN = (tiny_train_set,)
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.SEGALIAS.EPOCH_SCHEDULE.ENABLED = True
    cfg.SOLVER.SEGALIAS.EPOCH_SCHEDULE.MAX_EPOCHS = 3
    cfg.SOLVER.SEGALIAS.EPOCH_SCHEDULE.STEP_EPOCHS = (2,)
    out = Trainer.resolve_epoch_schedule(cfg)
    # 7 images at batch 2 -> 4 it/epoch
    assert out.SOLVER.SEGALIAS.EPOCH_SCHEDULE.NUM_IMAGES == 7
    assert (out.SOLVER.MAX_ITER, tuple(out.SOLVER.STEPS)) == (12, (8,))
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    assert Trainer.resolve_epoch_schedule(cfg).SOLVER.MAX_ITER == 15  # 10 images -> 5 it/epoch


def test_resume_with_other_iterations_is_an_error(tmp_path):
    cfg = load_config("")
    cfg.SOLVER.SEGALIAS.EPOCH_SCHEDULE.ENABLED = True
    saved = apply_epoch_schedule(cfg, 1561)
    model = torch.nn.Linear(2, 2)
    DetectionCheckpointer(model, str(tmp_path), epoch_schedule=_EpochScheduleRecord(saved)).save(
        "model_0000009"
    )
    same = DetectionCheckpointer(model, str(tmp_path), epoch_schedule=_EpochScheduleRecord(saved))
    same.resume_or_load("", resume=True)
    other = DetectionCheckpointer(
        model, str(tmp_path), epoch_schedule=_EpochScheduleRecord(apply_epoch_schedule(cfg, 1600))
    )
    with pytest.raises(ValueError, match="NUM_IMAGES 1561"):
        other.resume_or_load("", resume=True)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"NUM_IMAGES": -1}, "NUM_IMAGES"),
        ({"STEP_EPOCHS": (11, 9)}, "STEP_EPOCHS"),
        ({"STEP_EPOCHS": (9, 12)}, "STEP_EPOCHS"),
        ({"MAX_EPOCHS": 0}, "MAX_EPOCHS"),
    ],
)
def test_bad_epoch_keys_are_clear_errors(bad, match):
    es = dict(num_images=100, ims_per_batch=8, max_epochs=12, step_epochs=(9, 11))
    es.update({k.lower(): v for k, v in bad.items()})
    with pytest.raises(ValueError, match=match):
        epoch_schedule_iterations(**es)


def test_warmup_past_the_first_step_is_refused():
    """The old LIS configs: 1000 warm-up iterations, first step at 780 -> the LR never exceeded 0.1
    x BASE_LR."""
    cfg = load_config("")
    add_segalias_config(cfg)
    cfg.SOLVER.merge_from_list(
        ["BASE_LR", 0.02, "WARMUP_ITERS", 1000, "STEPS", (780, 1073), "MAX_ITER", 1170]
    )
    optimizer = Trainer.build_optimizer(cfg, torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="WARMUP_ITERS"):
        Trainer.build_lr_scheduler(cfg, optimizer)
    # what Detectron2's own builder makes of it: a warm-up towards GAMMA * BASE_LR, peak 0.002
    # (issue 9)
    scheduler = build_lr_scheduler(cfg, optimizer)
    peak = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(cfg.SOLVER.MAX_ITER):
            peak = max(peak, optimizer.param_groups[0]["lr"])
            scheduler.step()
    assert math.isclose(peak, 0.002, rel_tol=1e-9)


def test_trainer_converts_at_setup_and_dumps_the_iterations_used(tmp_path, demo_datasets):
    cfg = load_config(
        os.path.join(REPO, "configs/quick_schedules/mask_rcnn_R_50_AAFPN_instant_test.yaml"),
        [
            "OUTPUT_DIR",
            str(tmp_path),
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.SEGALIAS.EPOCH_SCHEDULE.ENABLED",
            "True",
            "SOLVER.SEGALIAS.EPOCH_SCHEDULE.MAX_EPOCHS",
            "4",
            "SOLVER.SEGALIAS.EPOCH_SCHEDULE.STEP_EPOCHS",
            "(3,)",
            "SOLVER.SEGALIAS.EPOCH_SCHEDULE.CHECKPOINT_EPOCHS",
            "1",
        ],
    )
    cfg.freeze()
    num_images = len(DatasetCatalog.get(cfg.DATASETS.TRAIN[0]))
    per_epoch = -(-num_images // 2)
    trainer = Trainer(cfg)
    assert (trainer.max_iter, tuple(trainer.cfg.SOLVER.STEPS)) == (4 * per_epoch, (3 * per_epoch,))
    assert trainer.cfg.SOLVER.CHECKPOINT_PERIOD == per_epoch
    assert "epoch_schedule" in trainer.checkpointer.checkpointables
    with open(os.path.join(str(tmp_path), "config.yaml")) as f:
        dumped = yaml.safe_load(f)["SOLVER"]
    assert dumped["SEGALIAS"]["EPOCH_SCHEDULE"]["NUM_IMAGES"] == num_images
    assert (dumped["MAX_ITER"], tuple(dumped["STEPS"])) == (4 * per_epoch, (3 * per_epoch,))
