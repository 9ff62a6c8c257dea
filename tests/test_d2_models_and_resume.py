"""Stock Detectron2 works on this stack: model-zoo Mask R-CNN / semantic FPN train and infer on CPU,
and --resume restores optimizer momentum and LR-scheduler state exactly."""

import itertools
import os
import tempfile

import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, HookBase, SimpleTrainer, defaults
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from segalias_d2 import compat


def _zoo_cfg(config_path):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(config_path))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return cfg


def _instance_inputs(h=96, w=128):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 90.0]]))
    inst.gt_classes = torch.tensor([1, 3])
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 12:70, 10:60] = True
    masks[1, 20:90, 70:120] = True
    inst.gt_masks = BitMasks(masks)
    return [{"image": torch.rand(3, h, w) * 255, "instances": inst, "height": h, "width": w}]


def _finite_step(model, inputs):
    model.train()
    with EventStorage():
        losses = model(inputs)
    total = sum(losses.values())
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return losses


def test_model_zoo_mask_rcnn_r50_fpn_trains_and_infers_on_cpu():
    cfg = _zoo_cfg("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    torch.manual_seed(0)
    model = build_model(cfg)
    losses = _finite_step(model, _instance_inputs())
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 97, 131) * 255, "height": 97, "width": 131}])
    inst = out[0]["instances"]
    assert inst.image_size == (97, 131)
    assert {"pred_boxes", "scores", "pred_classes", "pred_masks"} <= set(inst.get_fields())


def test_model_zoo_semantic_fpn_trains_and_infers_on_cpu():
    cfg = _zoo_cfg("Misc/semantic_R_50_FPN_1x.yaml")
    torch.manual_seed(0)
    model = build_model(cfg)
    sem = torch.randint(0, 54, (96, 128))
    sem[:10] = 255  # ignored pixels
    losses = _finite_step(model, [{"image": torch.rand(3, 96, 128) * 255, "sem_seg": sem}])
    assert set(losses) == {"loss_sem_seg"}
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 97, 131) * 255, "height": 97, "width": 131}])
    assert out[0]["sem_seg"].shape == (54, 97, 131)


# ---------------------------------------------------------------------------------------------
class _TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, batch):
        x, y = batch
        return {"loss": ((self.linear(x) - y) ** 2).mean()}


class _TinyTrainer(DefaultTrainer):
    @classmethod
    def build_model(cls, cfg):
        torch.manual_seed(0)
        return _TinyModel()

    @classmethod
    def build_train_loader(cls, cfg):
        g = torch.Generator().manual_seed(1)
        batch = (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g))
        return itertools.repeat(batch)

    def build_writers(self):
        return []


class _Interrupt(Exception):
    pass


class _StopAfter(HookBase):
    def __init__(self, iteration):
        self.iteration = iteration

    def after_step(self):
        if self.trainer.iter == self.iteration:
            raise _Interrupt()


def _tiny_cfg(out_dir):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = out_dir
    cfg.MODEL.DEVICE = "cpu"
    cfg.SOLVER.BASE_LR = 0.05
    cfg.SOLVER.MOMENTUM = 0.9
    cfg.SOLVER.MAX_ITER = 8
    cfg.SOLVER.STEPS = (5,)
    cfg.SOLVER.WARMUP_ITERS = 3
    cfg.SOLVER.CHECKPOINT_PERIOD = 4
    cfg.TEST.EVAL_PERIOD = 0
    return cfg


def test_resume_restores_optimizer_momentum_and_scheduler_exactly():
    with (
        tempfile.TemporaryDirectory() as straight_dir,
        tempfile.TemporaryDirectory() as resumed_dir,
    ):
        straight = _TinyTrainer(_tiny_cfg(straight_dir))
        straight.resume_or_load(resume=False)
        straight.train()

        first = _TinyTrainer(_tiny_cfg(resumed_dir))
        first.resume_or_load(resume=False)
        first.register_hooks([_StopAfter(3)])  # after the checkpoint of iteration index 3
        with pytest.raises(_Interrupt):
            first.train()
        assert os.path.exists(os.path.join(resumed_dir, "model_0000003.pth"))

        resumed = _TinyTrainer(_tiny_cfg(resumed_dir))
        resumed.resume_or_load(resume=True)
        assert resumed.start_iter == 4
        momentum = resumed.optimizer.state_dict()["state"]
        assert momentum and all("momentum_buffer" in s for s in momentum.values())
        resumed.train()

        for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
        for k in sa:
            torch.testing.assert_close(
                sa[k]["momentum_buffer"], sb[k]["momentum_buffer"], rtol=0, atol=0
            )
        assert straight.scheduler.state_dict() == resumed.scheduler.state_dict()
        assert straight.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]


# ---------------------------------------------------------------------------------------------
def test_data_loader_iterator_is_created_before_the_first_step():
    """A training step must not draw from torch's global RNG to create the data-loader iterator
    (exact resume).

    Detectron2 main creates it lazily in the first run_step; segalias_d2.compat creates it up
    front."""

    model = _TinyModel()
    loader = torch.utils.data.DataLoader([(torch.zeros(4), torch.zeros(1))] * 4, batch_size=2)
    trainer = SimpleTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.1))
    compat.start_data_loader_iterator(trainer)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    next(trainer._data_loader_iter)  # what run_step does first
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def test_cpu_models_get_no_ddp_device_ids_within_the_block_only(monkeypatch):

    calls = []
    monkeypatch.setattr(defaults, "create_ddp_model", lambda model, **kw: calls.append(kw) or model)
    recorder = defaults.create_ddp_model
    with compat.cpu_models_get_no_ddp_device_ids():
        defaults.create_ddp_model(
            torch.nn.Linear(2, 2), broadcast_buffers=False
        )  # as DefaultTrainer calls it
        defaults.create_ddp_model(
            torch.nn.Linear(2, 2), device_ids=[3]
        )  # an explicit choice is kept
    assert calls == [{"broadcast_buffers": False, "device_ids": None}, {"device_ids": [3]}]
    assert defaults.create_ddp_model is recorder
