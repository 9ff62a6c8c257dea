"""UPerNetHead pieces against hand computations: MMSeg's cross-entropy normalisation
(avg_non_ignore=False: sum over pixels / all pixels, ignored included) on logits resized to the
label size, the auxiliary FCN head (weight 0.4, training only), the inference output size, MMSeg's
initialisation, and config errors."""

import math

import pytest
import torch
from detectron2.layers import ShapeSpec

from segalias_d2.modeling.heads.upernet import UPerNetHead, sem_seg_cross_entropy

SHAPES = {
    f"res{i}": ShapeSpec(channels=c, stride=s)
    for i, c, s in ((2, 8, 4), (3, 16, 8), (4, 24, 16), (5, 32, 32))
}
FEATURES = ["res2", "res3", "res4", "res5"]


def _head(**kw):
    args = dict(in_features=FEATURES, num_classes=5, channels=8, norm="BN", aux_channels=6)
    args.update(kw)
    return UPerNetHead(SHAPES, **args)


def _features(n=2, size=64):
    g = torch.Generator().manual_seed(0)
    return {
        k: torch.randn(n, v.channels, size // v.stride, size // v.stride, generator=g)
        for k, v in SHAPES.items()
    }


def test_cross_entropy_is_normalised_over_all_pixels_ignored_included():
    logits = torch.zeros(2, 4, 3, 3)  # uniform: every valid pixel costs log 4
    targets = torch.full((2, 6, 6), 255, dtype=torch.long)
    targets[0, :3] = 1  # 18 of 72 pixels valid
    assert sem_seg_cross_entropy(logits, targets).item() == pytest.approx(math.log(4) * 18 / 72)
    assert sem_seg_cross_entropy(
        logits, targets, normalization="valid_pixels"
    ).item() == pytest.approx(math.log(4))
    # logits are resized (bilinear) to the label size first: a 1x1 logit map is constant over the
    # label
    one = torch.tensor([[[[2.0]], [[0.0]]]])
    t = torch.tensor([[[0, 1], [1, 255]]])
    lse = math.log(math.exp(2) + 1)
    assert sem_seg_cross_entropy(one, t).item() == pytest.approx(((lse - 2) + 2 * lse) / 4)
    with pytest.raises(ValueError, match="normalization"):
        sem_seg_cross_entropy(one, t, normalization="mean")


def test_training_losses_aux_weight_and_inference_output():
    torch.manual_seed(0)
    head = _head()
    feats = _features()
    targets = torch.randint(0, 5, (2, 64, 64))
    targets[:, :8] = 255
    head.train()
    _, losses = head(feats, targets)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_aux"}
    head.eval()  # dropout off for a deterministic comparison of the two terms
    with torch.no_grad():
        main = sem_seg_cross_entropy(head.layers(feats), targets)
        aux = sem_seg_cross_entropy(head.aux(feats["res4"]), targets)
        losses = head.losses(head.layers(feats), feats, targets)
    assert losses["loss_sem_seg"].item() == pytest.approx(main.item())
    assert losses["loss_sem_seg_aux"].item() == pytest.approx(0.4 * aux.item())
    calls = []
    head.aux.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        logits, extra = head(feats)
    assert extra == {} and not calls  # the auxiliary head does not run at inference
    assert logits.shape == (2, 5, 64, 64)  # common stride 4 x the res2 size
    assert "loss_sem_seg_aux" not in _head(aux_in_feature=None).train()(feats, targets)[1]


def test_mmseg_initialisation_and_layout():
    torch.manual_seed(0)
    head = _head(channels=16)
    d = head.decoder
    assert [c.weight.shape[1] for c in d.ppm.convs] == [32] * 4
    assert d.ppm_bottleneck.weight.shape == (
        16,
        32 + 4 * 16,
        3,
        3,
    ) and d.fpn_bottleneck.weight.shape == (16, 64, 3, 3)
    assert d.ppm_bottleneck.bias is None and d.predictor.bias is not None
    assert torch.all(d.predictor.bias == 0) and d.predictor.weight.std().item() == pytest.approx(
        0.01, rel=0.3
    )
    w = d.fpn_bottleneck.weight  # Kaiming normal, fan_out = 16 * 9, ReLU gain
    assert w.std().item() == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.1)
    assert torch.all(d.fpn_bottleneck.norm.weight == 1) and torch.all(
        d.fpn_bottleneck.norm.bias == 0
    )


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(in_features=["res2", "res3", "res4"]), "four input features"),
        (dict(in_features=["res3", "res2", "res4", "res5"]), "increasing strides"),
        (dict(aux_in_feature="res6"), "not produced by the backbone"),
        (dict(loss_normalization="mean"), "LOSS_NORMALIZATION"),
    ],
)
def test_bad_arguments_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        _head(**kw)
