"""Recomputing the stage filters' outputs in backward (AAResNet ``recompute_filter_outputs``): the
same gradients as keeping them, the outputs really released after the forward, one extra filter
pass per stage in backward, and the bad cases refused."""

import gc
import weakref

import pytest
import torch
from common import make_backbone_cfg
from detectron2.modeling import build_backbone
from torch import nn

from segalias_d2.modeling.backbone.aa_resnet import AAResNet
from segalias_d2.modeling.backbone.recompute import recompute_saved_copies_of

NARROW = dict(
    MODEL__RESNETS__DEPTH=50,
    MODEL__RESNETS__STEM_OUT_CHANNELS=16,
    MODEL__RESNETS__RES2_OUT_CHANNELS=32,
    MODEL__RESNETS__WIDTH_PER_GROUP=8,
    MODEL__SEGALIAS__FREQMIX__REDUCTION=4,
)


def _backbone(**overrides):
    torch.manual_seed(0)
    net = build_backbone(make_backbone_cfg(**NARROW, **overrides)).double()
    assert isinstance(net, AAResNet) and net.recompute_filter_outputs  # the default
    return net


def _grads(net, x, recompute):
    net.recompute_filter_outputs = recompute
    net.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out = net(x)
    # a loss that weights every stage output differently, so each stage's gradient path matters
    loss = sum((i + 1.0) * (o * o.roll(1, -1)).mean() for i, o in enumerate(out.values()))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return grads, x.grad.clone()


def _count_filter_calls(net):
    calls = {name: 0 for name in net.aa_filters}
    for name, filt in net.aa_filters.items():

        def hook(mod, inp, out, name=name):
            calls[name] += 1

        filt.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # DAF + FreqMix (the paper's backbone)
        {"MODEL__SEGALIAS__AWD__ENABLED": True},  # the DAF output saved by AWD's convs instead
        {
            "MODEL__SEGALIAS__DAF__ENABLED": False,
            "MODEL__SEGALIAS__BLURPOOL__ENABLED": True,
            "MODEL__SEGALIAS__BLURPOOL__KERNEL_SIZE": 5,
        },
    ],
    ids=["daf_freqmix", "daf_awd", "blurpool"],
)
def test_recompute_gives_the_gradients_of_keeping_the_outputs(overrides):
    net = _backbone(**overrides)
    assert set(net.aa_filters) == {"res3", "res4", "res5"}
    x = torch.randn(2, 3, 67, 90, dtype=torch.float64)  # odd sizes: odd maps at every stage
    kept_grads, kept_gx = _grads(net, x, recompute=False)
    calls = _count_filter_calls(net)
    re_grads, re_gx = _grads(net, x, recompute=True)
    # forward once + recomputed once in backward, per filtered stage
    assert calls == {"res3": 2, "res4": 2, "res5": 2}
    assert kept_grads.keys() == re_grads.keys() and len(kept_grads) > 100
    for name, g in kept_grads.items():
        assert torch.equal(g, re_grads[name]), name  # the same filter on the same input: bitwise
    assert torch.equal(kept_gx, re_gx)


@pytest.mark.parametrize("freeze_at", [0, 2])
def test_the_filter_output_is_released_after_the_forward(freeze_at):
    # FREEZE_AT 2: the stem and res2 are frozen, so the res3 filter's output needs no grad, but
    # res3's conv1 and shortcut still save it for their weight gradients
    net = _backbone(MODEL__BACKBONE__FREEZE_AT=freeze_at)
    outputs = {}
    for name, filt in net.aa_filters.items():
        filt.register_forward_hook(lambda m, i, o, name=name: outputs.setdefault(name, o))
    x = torch.randn(1, 3, 64, 96, dtype=torch.float64)

    def alive_after_forward(recompute):
        net.recompute_filter_outputs = recompute
        outputs.clear()
        out = net(x)
        refs = {name: weakref.ref(t) for name, t in outputs.items()}
        outputs.clear()
        gc.collect()
        alive = {name for name, r in refs.items() if r() is not None}
        sum(o.sum() for o in out.values()).backward()  # still differentiable either way
        return alive

    assert alive_after_forward(False) == {"res3", "res4", "res5"}  # kept for backward
    assert alive_after_forward(True) == set()


def test_the_config_key_reaches_the_backbone():
    net = build_backbone(
        make_backbone_cfg(**NARROW, MODEL__SEGALIAS__RECOMPUTE_FILTER_OUTPUTS=False)
    )
    assert net.recompute_filter_outputs is False
    calls = _count_filter_calls(net)
    net(torch.randn(1, 3, 64, 64)).get("res5").sum().backward()
    assert calls == {"res3": 1, "res4": 1, "res5": 1}  # kept: nothing recomputed


def test_no_graph_means_no_recompute():
    net = _backbone()
    calls = _count_filter_calls(net)
    with torch.no_grad():
        net(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    assert calls == {"res3": 1, "res4": 1, "res5": 1}


def test_only_the_filter_output_itself_is_replaced():
    y_src = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    recomputed = []

    def recompute():
        recomputed.append(1)
        return (y_src * 2).detach()

    y = y_src * 2
    with recompute_saved_copies_of(y, recompute):
        # y is saved by two nodes (y*w, y*w^2); y*3, derived from it, is saved as itself
        z = (y * w).sum() + (y * (w * w)).sum() + ((y * 3) * w).sum()
    z.backward()
    assert recomputed == [1]  # computed once, shared by both nodes
    yv, wv = y_src.detach() * 2, w.detach()
    assert torch.allclose(w.grad, yv + 2 * yv * wv + 3 * yv)
    assert torch.allclose(y_src.grad, 2 * (wv + wv * wv + 3 * wv))


def test_filters_with_parameters_are_refused():
    base = _backbone()
    stem, stages = base.stem, [getattr(base, n) for n in base.stage_names]
    with pytest.raises(ValueError, match=r"parameter-free.*res4.*Conv2d"):
        AAResNet(stem, stages, stage_filters={"res4": nn.Conv2d(64, 64, 1)})
    net = AAResNet(
        stem, stages, stage_filters={"res4": nn.Conv2d(64, 64, 1)}, recompute_filter_outputs=False
    )
    assert not net.recompute_filter_outputs
