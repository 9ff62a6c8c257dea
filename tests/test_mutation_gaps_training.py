"""Exact resume with OUR Trainer, in process (issue 17): segalias_d2.engine.Trainer with its own
train loader (LowLightDatasetMapper, random flip and multi-size resize, TrainingSampler or
RepeatFactorTrainingSampler, the skip-ahead sampler on resume), SeedEveryIterationHook, segalias
optimizer / scheduler and checkpointing, around a tiny model that records what it is fed.
Interrupted after an iteration that was not checkpointed, then resumed, the run must see the same
images, flips and sizes as an uninterrupted one from the checkpoint on, start from the checkpoint's
momentum buffers, and end with the same weights, momentum and LR schedule. The uninterrupted data
order is checked against Detectron2's samplers built from hand-computed repeat factors.
(tests/test_train_net.py runs the same resume through tools/train_net.py on Mask R-CNN; this one
takes seconds.)"""

import itertools
import math
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler
from detectron2.engine import HookBase
from detectron2.structures import BoxMode
from PIL import Image

from segalias_d2.config import add_segalias_config
from segalias_d2.engine import Trainer

# image i holds classes CLASSES_PER_IMAGE[i]: class 0 everywhere, class 1 in 2 of 6 images, class 2
# in 1 of 6
CLASSES_PER_IMAGE = [[0], [0, 1], [0], [0, 2], [0, 1], [0]]
REPEAT_THRESHOLD = 0.5
SEED = 11


def _hand_repeat_factors():
    """LVIS repeat factors written out: r(c) = max(1, sqrt(t / f(c))), f(c) = fraction of images
    with c; r(image) = max over its classes."""
    n = len(CLASSES_PER_IMAGE)
    freq = {c: sum(c in cs for cs in CLASSES_PER_IMAGE) / n for c in (0, 1, 2)}
    per_class = {c: max(1.0, math.sqrt(REPEAT_THRESHOLD / f)) for c, f in freq.items()}
    return [max(per_class[c] for c in cs) for cs in CLASSES_PER_IMAGE]


class _RecordingModel(torch.nn.Module):
    """Loss from a flip- and size-sensitive summary of each image plus one torch RNG draw (like
    RPN/ROI sampling); ``trace`` lists, per call, (file names, image sizes, left-minus-right
    brightness) of the batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 1)
        self.trace = []

    def forward(self, batched_inputs):
        feats, rows = [], []
        for b in batched_inputs:
            img = b["image"].float() / 255.0
            w = img.shape[-1]
            lr = float(img[..., : w // 2].mean() - img[..., w - w // 2 :].mean())
            feats.append(
                torch.stack(
                    [
                        img.mean(),
                        img[0].mean(),
                        torch.tensor(lr),
                        torch.tensor(img.shape[-2] / 32.0),
                    ]
                )
            )
            rows.append((os.path.basename(b["file_name"]), tuple(img.shape[-2:]), round(lr, 6)))
        self.trace.append(rows)
        x = torch.stack(feats)
        target = torch.randn(len(feats), 1)  # a draw from torch's global RNG per step
        return {"loss": ((self.linear(x) - target) ** 2).mean()}


class _TinyTrainer(Trainer):
    @classmethod
    def build_model(cls, cfg):
        return _RecordingModel()

    def build_writers(self):
        return []


class _Crash(Exception):
    pass


class _CrashAfter(HookBase):
    def __init__(self, iteration):
        self.iteration = iteration

    def after_step(self):
        if self.trainer.iter == self.iteration:
            raise _Crash()


@pytest.fixture
def tiny_dataset(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for i, classes in enumerate(CLASSES_PER_IMAGE):
        img = rng.integers(0, 256, (24, 32, 3)).astype(np.uint8)
        img[:, :16] //= 3  # a dark left half: the flip shows in the trace
        path = tmp_path / f"im{i}.png"
        Image.fromarray(img).save(path)
        annos = [
            {
                "bbox": [2.0 + 3 * k, 2.0, 12.0 + 3 * k, 14.0],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": c,
                "iscrowd": 0,
            }
            for k, c in enumerate(classes)
        ]
        records.append(
            {"file_name": str(path), "image_id": i, "height": 24, "width": 32, "annotations": annos}
        )
    name = f"_segalias_resume_{os.getpid()}_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["a", "b", "c"])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _cfg(dataset, out_dir, sampler):
    cfg = get_cfg()
    add_segalias_config(cfg)
    os.makedirs(out_dir, exist_ok=True)  # tools/train_net.py's default_setup makes it
    cfg.OUTPUT_DIR = str(out_dir)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_ON = False
    cfg.MODEL.WEIGHTS = ""
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.DATASETS.TEST = ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
    cfg.DATALOADER.SAMPLER_TRAIN = sampler
    cfg.DATALOADER.REPEAT_THRESHOLD = REPEAT_THRESHOLD
    cfg.INPUT.MIN_SIZE_TRAIN = (16, 24, 32)  # "choice": a random size per image
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.05
    cfg.SOLVER.MOMENTUM = 0.9
    cfg.SOLVER.MAX_ITER = 7
    cfg.SOLVER.STEPS = (5,)
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.CHECKPOINT_PERIOD = 3  # model_0000002.pth after the third iteration
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = SEED
    return cfg


def _momentum(trainer):
    state = trainer.optimizer.state_dict()["state"]
    return {k: v["momentum_buffer"].clone() for k, v in state.items()}


@pytest.mark.parametrize("sampler", ["TrainingSampler", "RepeatFactorTrainingSampler"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tiny_dataset, tmp_path, sampler):
    straight = _TinyTrainer(_cfg(tiny_dataset, tmp_path / "straight", sampler))
    straight.resume_or_load(resume=False)
    straight.train()
    trace = straight.model.trace
    assert len(trace) == 7

    # the uninterrupted order is the sampler's own index stream (seeded with SEED)
    if sampler == "TrainingSampler":
        expected = TrainingSampler(len(CLASSES_PER_IMAGE), shuffle=True, seed=SEED)
    else:
        factors = _hand_repeat_factors()
        assert factors == pytest.approx([1, math.sqrt(1.5), 1, math.sqrt(3), math.sqrt(1.5), 1])
        expected = RepeatFactorTrainingSampler(torch.tensor(factors), shuffle=True, seed=SEED)
    order = [f"im{i}.png" for i in itertools.islice(iter(expected), 14)]
    assert [name for batch in trace for name, _, _ in batch] == order
    flips = {lr > 0 for batch in trace for _, _, lr in batch}
    sizes = {hw for batch in trace for _, hw, _ in batch}
    assert (
        flips == {True, False} and len(sizes) > 1
    )  # the augmentations are random, so the replay is a test

    out = tmp_path / "interrupted"
    first = _TinyTrainer(_cfg(tiny_dataset, out, sampler))
    first.resume_or_load(resume=False)
    first.register_hooks([_CrashAfter(3)])  # iteration index 3 ran but was never checkpointed
    with pytest.raises(_Crash):
        first.train()
    assert first.model.trace == trace[:4]
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == ["model_0000002.pth"]
    saved = torch.load(out / "model_0000002.pth", map_location="cpu", weights_only=False)

    resumed = _TinyTrainer(_cfg(tiny_dataset, out, sampler))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
    at_resume = _momentum(resumed)
    trainer_state = saved.get(
        "trainer", {}
    )  # where the Detectron2 build keeps it (cf. tests/test_train_net.py)
    saved_optimizer = (
        trainer_state.get("_trainer", trainer_state).get("optimizer") or saved["optimizer"]
    )
    assert at_resume and at_resume.keys() == saved_optimizer["state"].keys()
    for (
        k,
        buf,
    ) in at_resume.items():  # the momentum of the checkpoint, not a fresh (empty) optimizer
        assert buf.abs().sum() > 0
        torch.testing.assert_close(
            buf, saved_optimizer["state"][k]["momentum_buffer"], rtol=0, atol=0
        )
    resumed.train()

    assert resumed.model.trace == trace[3:]  # same images, sizes and flips from the checkpoint on
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    ma, mb = _momentum(straight), _momentum(resumed)
    assert ma.keys() == mb.keys()
    for k in ma:
        torch.testing.assert_close(ma[k], mb[k], rtol=0, atol=0)
    assert straight.scheduler.state_dict() == resumed.scheduler.state_dict()
    assert straight.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]
