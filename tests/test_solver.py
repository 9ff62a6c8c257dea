"""build_segalias_optimizer: Detectron2 SGD rules plus the FreqMix / semantic-head LR
multipliers."""

import pytest
import torch
from common import segalias_cfg
from detectron2.modeling import build_backbone
from torch import nn

from segalias_d2.modeling.fourier_filters import FreqMix
from segalias_d2.solver import build_segalias_optimizer


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.backbone.bn = nn.BatchNorm2d(4)
        self.backbone.block = nn.Module()
        self.backbone.block.freqmix = FreqMix(16, reduction=4)
        self.backbone.frozen = nn.Conv2d(4, 4, 1)
        for p in self.backbone.frozen.parameters():
            p.requires_grad_(False)
        self.sem_seg_head = nn.Module()
        self.sem_seg_head.predictor = nn.Conv2d(4, 2, 1)
        self.sem_seg_head.norm = nn.GroupNorm(2, 4)
        self.shared = self.backbone.conv  # shared module must be counted once


def make_cfg(**solver):
    cfg = segalias_cfg()
    s = cfg.SOLVER
    s.BASE_LR, s.MOMENTUM, s.NESTEROV = 0.01, 0.9, True
    s.WEIGHT_DECAY, s.WEIGHT_DECAY_NORM, s.BIAS_LR_FACTOR, s.WEIGHT_DECAY_BIAS = (
        5e-4,
        0.0,
        1.0,
        None,
    )
    for k, v in solver.items():
        (s.SEGALIAS if k in s.SEGALIAS else s)[k] = v  # our keys live under SOLVER.SEGALIAS
    return cfg


def param_settings(opt):
    out = {}
    for g in opt.param_groups:
        for p in g["params"]:
            assert id(p) not in out, "parameter in two groups"
            out[id(p)] = (g["lr"], g["weight_decay"])
    return out


def expected(model, base_lr, wd, wd_norm, bias_factor, wd_bias, fm_mult, head_mult):
    """Independent statement of the rules, by explicit parameter name."""
    exp = {}
    for name, p in model.named_parameters():  # named_parameters de-duplicates shared params
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[1]
        is_norm = name.startswith(("backbone.bn.", "sem_seg_head.norm."))
        lr = base_lr * (bias_factor if leaf == "bias" else 1.0)
        w = wd_norm if is_norm else wd
        if leaf == "bias" and wd_bias is not None:
            w = wd_bias
        if ".freqmix." in name:
            lr *= fm_mult
        if name.startswith("sem_seg_head."):
            lr *= head_mult
        exp[id(p)] = (pytest.approx(lr), pytest.approx(w))
    return exp


def test_default_multipliers():
    model = Toy()
    opt = build_segalias_optimizer(make_cfg(), model)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["nesterov"] is True
    got = param_settings(opt)
    assert got == expected(model, 0.01, 5e-4, 0.0, 1.0, None, 2.0, 1.0)
    assert all(id(p) not in got for p in model.backbone.frozen.parameters())
    fm_ids = {id(p) for p in model.backbone.block.freqmix.parameters()}
    assert all(got[i][0] == pytest.approx(0.02) for i in fm_ids)


def test_head_multiplier_bias_factor_and_bias_decay():
    model = Toy()
    cfg = make_cfg(
        HEAD_LR_MULTIPLIER=2.0,
        FREQMIX_LR_MULTIPLIER=3.0,
        BIAS_LR_FACTOR=2.0,
        WEIGHT_DECAY_BIAS=1e-5,
        WEIGHT_DECAY_NORM=1e-4,
    )
    opt = build_segalias_optimizer(cfg, model)
    got = param_settings(opt)
    assert got == expected(model, 0.01, 5e-4, 1e-4, 2.0, 1e-5, 3.0, 2.0)
    assert got[id(model.sem_seg_head.predictor.weight)][0] == pytest.approx(0.02)
    assert got[id(model.sem_seg_head.predictor.bias)][0] == pytest.approx(0.04)
    assert got[id(model.backbone.block.freqmix.spatial.bias)] == (
        pytest.approx(0.06),
        pytest.approx(1e-5),
    )


def test_ddp_prefix_is_handled():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = Toy()

    w = Wrapper()
    got = param_settings(build_segalias_optimizer(make_cfg(HEAD_LR_MULTIPLIER=2.0), w))
    assert got[id(w.module.sem_seg_head.predictor.weight)][0] == pytest.approx(0.02)
    assert got[id(w.module.backbone.block.freqmix.spatial.weight)][0] == pytest.approx(0.02)


def test_gradient_clipping_applies():
    model = nn.Module()
    model.lin = nn.Linear(2, 1, bias=False)
    model.lin.weight.data.zero_()
    cfg = make_cfg(MOMENTUM=0.0, NESTEROV=False, WEIGHT_DECAY=0.0, WEIGHT_DECAY_NORM=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    opt = build_segalias_optimizer(cfg, model)
    model.lin.weight.grad = torch.tensor([[10.0, -0.2]])
    opt.step()
    assert torch.allclose(model.lin.weight.data, torch.tensor([[-0.005, 0.002]]))


def test_real_backbone_freqmix_group_size():
    cfg = make_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_segalias_resnet_backbone"
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    model = nn.Module()
    model.backbone = build_backbone(cfg)
    opt = build_segalias_optimizer(cfg, model)
    n_fast = sum(
        p.numel() for g in opt.param_groups if g["lr"] == pytest.approx(0.02) for p in g["params"]
    )
    assert n_fast == 383450


def test_bad_multiplier_raises():
    with pytest.raises(ValueError, match="FREQMIX_LR_MULTIPLIER"):
        build_segalias_optimizer(make_cfg(FREQMIX_LR_MULTIPLIER=0.0), Toy())
