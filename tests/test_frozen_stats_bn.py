"""MODEL.RESNETS.NORM "FrozenStatsBN": the released LIS BatchNorm (norm_eval=True,
requires_grad=True) — statistics frozen, affine trained — against hand-computed expectations,
through the builders and the Detectron2 checkpointer."""

import pickle

import numpy as np
import pytest
import torch
from common import make_backbone_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_backbone

from segalias_d2.modeling.backbone.norm import FrozenStatsBatchNorm2d
from segalias_d2.solver import get_segalias_param_groups


def _bn_with_stats():
    bn = FrozenStatsBatchNorm2d(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
        bn.weight.copy_(torch.tensor([2.0, 1.0, -0.5]))
        bn.bias.copy_(torch.tensor([0.0, 3.0, 1.0]))
    return bn


def test_forward_is_the_eval_formula_in_train_mode():
    bn = _bn_with_stats().train()
    x = torch.tensor([2.5, -1.0, 0.0]).view(1, 3, 1, 1).repeat(2, 1, 2, 2)
    y = bn(x)
    # by hand, eps = 1e-5: (x - m) / sqrt(v + eps) * w + b
    expected = [
        (2.5 - 0.5) / np.sqrt(4.0 + 1e-5) * 2.0 + 0.0,
        (-1.0 + 1.0) / np.sqrt(0.25 + 1e-5) * 1.0 + 3.0,
        (0.0 - 2.0) / np.sqrt(1.0 + 1e-5) * -0.5 + 1.0,
    ]
    assert torch.allclose(y[0, :, 0, 0], torch.tensor(expected, dtype=torch.float32), atol=1e-6)
    # a plain BatchNorm2d in train mode would normalise with the batch statistics (all-constant
    # channels -> 0)
    plain = torch.nn.BatchNorm2d(3).train()
    plain.load_state_dict(bn.state_dict())
    assert not torch.allclose(plain(x), y)


def test_train_step_keeps_statistics_and_trains_affine():
    torch.manual_seed(0)
    bn = _bn_with_stats().train()
    stats = [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]
    w0, b0 = bn.weight.detach().clone(), bn.bias.detach().clone()
    opt = torch.optim.SGD(bn.parameters(), lr=0.1)
    x = torch.randn(4, 3, 5, 5) * 3 + 1
    (bn(x) * torch.randn(4, 3, 5, 5)).sum().backward()
    assert bn.weight.requires_grad and bn.bias.requires_grad
    assert (bn.weight.grad.abs() > 0).all() and (bn.bias.grad.abs() > 0).all()
    opt.step()
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(bn.num_batches_tracked, stats[2])
    assert not torch.equal(bn.weight.detach(), w0) and not torch.equal(bn.bias.detach(), b0)


def _cfg(**kw):
    return make_backbone_cfg(
        fpn=True,
        daf=False,
        freqmix=True,
        MODEL__RESNETS__NORM="FrozenStatsBN",
        MODEL__BACKBONE__FREEZE_AT=2,
        **kw,
    )


def test_builder_freezes_stem_and_res2_and_uses_it_elsewhere_including_fpn():
    fpn = build_backbone(_cfg(MODEL__FPN__NORM="FrozenStatsBN"))
    body = fpn.bottom_up
    # FREEZE_AT 2 = the released frozen_stages=1: stem + res2 fully frozen (Detectron2 FrozenBN, no
    # grads)
    for m in list(body.stem.modules()) + list(body.res2.modules()):
        assert not isinstance(m, FrozenStatsBatchNorm2d)
    assert isinstance(body.stem.conv1.norm, FrozenBatchNorm2d)
    assert isinstance(body.res2[0].conv1.norm, FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in body.res2.parameters())
    for stage in (body.res3, body.res4, body.res5):
        norms = [m for m in stage.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms and all(type(m) is FrozenStatsBatchNorm2d for m in norms)
        assert all(m.weight.requires_grad and m.bias.requires_grad for m in norms)
    assert isinstance(fpn.fpn_lateral3.norm, FrozenStatsBatchNorm2d)
    assert isinstance(fpn.fpn_output5.norm, FrozenStatsBatchNorm2d)
    assert fpn.fpn_lateral3.bias is None  # Detectron2's FPN drops the conv bias when a norm follows
    # optimizer: the released recipe decays norm weights too; WEIGHT_DECAY_NORM must reach these
    # layers
    groups = get_segalias_param_groups(body, base_lr=0.01, weight_decay=1e-4, weight_decay_norm=0.5)
    norm_params = {
        id(m.weight) for m in body.res3.modules() if isinstance(m, FrozenStatsBatchNorm2d)
    }
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert norm_params and all(wd_of[i] == 0.5 for i in norm_params)


def test_detectron2_checkpointer_loads_statistics_into_it(tmp_path):
    body = build_backbone(
        make_backbone_cfg(
            fpn=False,
            daf=False,
            freqmix=False,
            MODEL__RESNETS__NORM="FrozenStatsBN",
            MODEL__BACKBONE__FREEZE_AT=2,
        )
    )
    # model-zoo layout of a norm: FrozenBN keys, no num_batches_tracked
    rng = np.random.default_rng(1)
    model = {}
    for name, t in body.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        arr = rng.standard_normal(t.shape).astype(np.float32)
        model[name] = np.abs(arr) + 0.1 if name.endswith("running_var") else arr
    path = str(tmp_path / "zoo.pkl")
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "test"}, f)
    DetectionCheckpointer(body).load(path)
    bn = body.res4[2].conv2.norm
    assert type(bn) is FrozenStatsBatchNorm2d
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        assert np.array_equal(
            getattr(bn, leaf).detach().numpy(), model[f"res4.2.conv2.norm.{leaf}"]
        ), leaf
    assert np.array_equal(
        body.stem.conv1.norm.running_var.numpy(), model["stem.conv1.norm.running_var"]
    )


def test_head_norm_name_is_a_clear_error():
    cfg = _cfg()
    cfg.MODEL.ROI_MASK_HEAD.NORM = "FrozenStatsBN"
    with pytest.raises(ValueError, match="MODEL.ROI_MASK_HEAD.NORM"):
        build_backbone(cfg)
