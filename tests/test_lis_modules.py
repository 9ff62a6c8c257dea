"""LIS backbone modules (AWD, SCB) against independent expectations: a literal transcription of the
released AWD computation (lis_modules.md §2.1) on a tiny input, parameter counts computed by hand
from the shapes (§2.2, §3.2), the SCB fold against the two-branch computation (and the released
script's output-channel indexing failing), placement in the R50 (strides moved to AWD, DAF -> AWD,
conv2 + SCB -> FreqMix -> norm), freezing, checkpoint guards and the LR multiplier."""

import importlib.util
import math
import os

import pytest
import torch
import torch.nn.functional as F
from common import STAGES, make_backbone_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_backbone

from segalias_d2.modeling.backbone.lis_modules import (
    AdaptiveWeightedDownsample,
    SmoothBranch,
    fold_scb_state_dict,
    fold_scb_weight,
)
from segalias_d2.modeling.fourier_filters import FreqMix
from segalias_d2.solver import get_segalias_param_groups

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
R50_STAGE_INPUT_CHANNELS = {"res3": 256, "res4": 512, "res5": 1024}  # C of each AWD
R50_WIDTHS = {"res3": (4, 128), "res4": (6, 256), "res5": (3, 512)}  # (blocks, bottleneck width P)
R50_PLAIN = 23_508_032  # torchvision resnet50 without fc: 25,557,032 - 2048 * 1000 - 1000


def lis_cfg(awd=True, scb=True, daf=False, freqmix=False, **kw):
    kw = {"MODEL__SEGALIAS__AWD__ENABLED": awd, "MODEL__SEGALIAS__SCB__ENABLED": scb, **kw}
    return make_backbone_cfg(daf=daf, freqmix=freqmix, **kw)


def n_params(m, token=None):
    return sum(p.numel() for k, p in m.named_parameters() if token is None or token in k)


# ---------------------------------------------------------------------------------------------- AWD
def awd_transcription(x, tap_w, gamma, beta, eps, w_a, w_b, stride):
    """lis_modules.md §2.1, element by element (float64): zero-padded depthwise logits (channel c
    owns outputs 9c..9c+8), eval-mode BN with statistics (0, 1), channel factor a = W_b ReLU(W_a
    GAP(x)) without sigmoid, softmax over the 9 taps of a * logit, weighted sum over the
    REFLECT-padded 3x3 patch at stride s."""
    b_n, c_n, h, w = x.shape
    h_out, w_out = (h - 1) // stride + 1, (w - 1) // stride + 1
    xz = F.pad(x, (1, 1, 1, 1))  # zeros (the logit conv)
    xr = F.pad(x, (1, 1, 1, 1), mode="reflect")  # the aggregated patches
    y = torch.zeros(b_n, c_n, h_out, w_out, dtype=x.dtype)
    for b in range(b_n):
        gap = x[b].mean(dim=(1, 2))
        a = w_b @ torch.relu(w_a @ gap)
        for c in range(c_n):
            for i in range(h_out):
                for j in range(w_out):
                    logits = []
                    for t in range(9):
                        z = (
                            tap_w[9 * c + t, 0]
                            * xz[b, c, stride * i : stride * i + 3, stride * j : stride * j + 3]
                        ).sum()
                        logits.append(gamma[9 * c + t] * z / math.sqrt(1.0 + eps) + beta[9 * c + t])
                    k = torch.softmax(a[c] * torch.stack(logits), dim=0)
                    y[b, c, i, j] = sum(
                        k[3 * u + v] * xr[b, c, stride * i + u, stride * j + v]
                        for u in range(3)
                        for v in range(3)
                    )
    return y


@pytest.mark.parametrize("stride,h,w", [(2, 5, 6), (2, 4, 7), (1, 5, 4)])
def test_awd_equals_the_released_computation_on_a_tiny_input(stride, h, w):
    torch.manual_seed(0)
    m = AdaptiveWeightedDownsample(8, stride=stride).double()
    with torch.no_grad():  # non-trivial BN affine and a channel factor of both signs
        m.tap_norm.weight.uniform_(0.5, 2.0)
        m.tap_norm.bias.uniform_(-1.0, 1.0)
        m.channel_expand.weight.mul_(20.0)
    x = torch.randn(2, 8, h, w, dtype=torch.float64)
    ref = awd_transcription(
        x,
        m.tap_conv.weight,
        m.tap_norm.weight,
        m.tap_norm.bias,
        m.tap_norm.eps,
        m.channel_reduce.weight[:, :, 0, 0],
        m.channel_expand.weight[:, :, 0, 0],
        stride,
    )
    out = m(x)
    assert out.shape == (2, 8, math.ceil(h / stride), math.ceil(w / stride))
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("stride", [1, 2])
def test_awd_gradients_match_finite_differences(stride):
    torch.manual_seed(10)
    m = AdaptiveWeightedDownsample(4, stride=stride).double()
    with torch.no_grad():
        m.channel_expand.weight.mul_(5.0)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]  # the tap conv, BN affine and both channel convs

    def f(x, *params):
        return torch.func.functional_call(m, dict(zip(names, params)), (x,))

    inputs = (x,) + tuple(p.detach().clone().requires_grad_() for p in m.parameters())
    # fast mode: a random projection u^T J v against finite differences (a few evaluations, not one
    # per element)
    assert len(names) == 5 and torch.autograd.gradcheck(
        f, inputs, eps=1e-6, atol=1e-6, fast_mode=True
    )


def test_awd_under_bfloat16_autocast_trains_close_to_float32():
    torch.manual_seed(11)
    m = AdaptiveWeightedDownsample(8)
    x = torch.randn(2, 8, 9, 10)
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    out.float().sum().backward()
    assert torch.isfinite(m.tap_conv.weight.grad).all()
    assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max()


def test_awd_kernels_are_convex_and_a_zero_channel_factor_gives_the_reflect_padded_mean():
    torch.manual_seed(1)
    m = AdaptiveWeightedDownsample(16)
    x = torch.randn(2, 16, 9, 12)
    k = m.kernels(x)
    assert k.shape == (2, 16, 9, 5, 6) and (k >= 0).all()
    assert torch.allclose(k.sum(dim=2), torch.ones(2, 16, 5, 6), atol=1e-6)
    with torch.no_grad():
        # a = 0: uniform kernel, i.e. a 3x3/2 mean over the reflect-padded input
        m.channel_expand.weight.zero_()
    mean = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=2)
    assert torch.allclose(m(x), mean, atol=1e-6)


def test_awd_bn_statistics_never_move_while_its_affine_trains():
    torch.manual_seed(2)
    m = AdaptiveWeightedDownsample(8).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(torch.randn(2, 8, 6, 6) * 3 + 1).square().mean().backward()
    opt.step()
    bn = m.tap_norm
    assert torch.equal(bn.running_mean, torch.zeros(72)) and torch.equal(
        bn.running_var, torch.ones(72)
    )
    assert int(bn.num_batches_tracked) == 0
    assert not torch.equal(bn.weight, torch.ones(72))  # the affine is trained


def test_awd_parameter_count_by_hand():
    total = 0
    for c in R50_STAGE_INPUT_CHANNELS.values():
        # tap conv (9C, 1, 3, 3) + BN affine 2 x 9C + (C/4, C) + (C, C/4)
        by_hand = 9 * c * 1 * 3 * 3 + 2 * 9 * c + (c // 4) * c + c * (c // 4)
        assert n_params(AdaptiveWeightedDownsample(c)) == by_hand
        total += by_hand
    assert total == 865_536  # lis_modules.md §2.2: 58,112 + 181,760 + 625,664


# ---------------------------------------------------------------------------------------------- SCB
def test_scb_initial_lowpass_is_the_softmax_of_the_binomial_values():
    k = SmoothBranch(4).lowpass_kernel()[0, 0]
    z = 4 * math.exp(1 / 16) + 4 * math.exp(2 / 16) + math.exp(4 / 16)
    corner, edge, centre = math.exp(1 / 16) / z, math.exp(2 / 16) / z, math.exp(4 / 16) / z
    assert (round(corner, 4), round(edge, 4), round(centre, 4)) == (
        0.1057,
        0.1125,
        0.1275,
    )  # note §3.2
    expected = torch.tensor([[corner, edge, corner], [edge, centre, edge], [corner, edge, corner]])
    assert torch.allclose(k, expected, atol=1e-7)
    binomial = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    assert torch.allclose(
        SmoothBranch(4, init="gaussian").lowpass_kernel()[3, 0], binomial, atol=1e-7
    )


def _random_scb(p_in, p_out, stride, seed):
    g = torch.Generator().manual_seed(seed)
    br = SmoothBranch(p_in, p_out, stride=stride)
    with torch.no_grad():  # a different, non-symmetric filter per input channel
        br.lowpass_logits.copy_(torch.randn(p_in, 1, 3, 3, generator=g) * 2)
        br.proj.weight.copy_(torch.randn(p_out, p_in, 1, 1, generator=g))
    return br, torch.randn(p_out, p_in, 3, 3, generator=g) * 0.3


def _two_branches(x, w2, logits, w1, stride):
    """conv3x3(x, W2) + conv1x1(depthwise(x, softmax(theta)), W1): §3.1, written out with
    F.conv2d."""
    k = torch.exp(logits.reshape(len(logits), 9))
    k = (k / k.sum(dim=1, keepdim=True)).reshape(-1, 1, 3, 3)
    low = F.conv2d(x, k, None, stride, 1, 1, x.shape[1])
    return F.conv2d(x, w2, None, stride, 1) + F.conv2d(low, w1)


@pytest.mark.parametrize(
    "p_in,p_out,stride,size", [(6, 6, 1, (9, 10)), (6, 5, 2, (9, 10)), (4, 7, 2, (8, 11))]
)
def test_scb_fold_equals_the_two_branch_output(p_in, p_out, stride, size):
    br, w2 = _random_scb(p_in, p_out, stride, seed=p_in + p_out + stride)
    x = torch.randn(2, p_in, *size)
    ref = _two_branches(x, w2, br.lowpass_logits.detach(), br.proj.weight.detach(), stride)
    with torch.no_grad():
        assert torch.allclose(
            F.conv2d(x, w2, None, stride, 1) + br(x), ref, atol=1e-5
        )  # module, two-branch form
        folded = F.conv2d(
            x, fold_scb_weight(w2, br.proj.weight, br.lowpass_logits), None, stride, 1
        )
    assert (folded - ref).abs().max() <= 1e-5


def _released_fold(w2, w1, logits):
    """utils/reparameter.py as shipped (§3.4): W1 repeated over 3x3 times softmax(theta) of shape
    (P, 1, 3, 3), broadcast against (P_out, P_in, 3, 3): the filter lands on the OUTPUT channel."""
    k = torch.softmax(logits.reshape(logits.shape[0], 9), dim=1).reshape(-1, 1, 3, 3)
    return w2 + w1.repeat(1, 1, 3, 3) * k


def test_the_released_output_channel_fold_is_wrong_unless_all_filters_agree():
    br, w2 = _random_scb(6, 6, 1, seed=3)
    x = torch.randn(1, 6, 9, 9)
    ref = _two_branches(x, w2, br.lowpass_logits.detach(), br.proj.weight.detach(), 1)
    wrong = F.conv2d(
        x, _released_fold(w2, br.proj.weight.detach(), br.lowpass_logits.detach()), None, 1, 1
    )
    assert (wrong - ref).abs().max() > 1e-2
    with pytest.raises(RuntimeError):  # P_in != P_out: the released broadcast does not even fit
        _released_fold(torch.zeros(5, 6, 3, 3), torch.zeros(5, 6, 1, 1), torch.zeros(6, 1, 3, 3))
    same = br.lowpass_logits.detach()[:1].expand(6, 1, 3, 3)  # identical filters: both folds agree
    assert torch.allclose(
        _released_fold(w2, br.proj.weight.detach(), same),
        fold_scb_weight(w2, br.proj.weight.detach(), same),
        atol=1e-7,
    )


def test_scb_parameter_count_by_hand():
    total = 0
    for blocks, p in R50_WIDTHS.values():
        by_hand = p * 1 * 3 * 3 + p * p  # low-pass logits (P, 1, 3, 3) + 1x1 (P, P)
        assert n_params(SmoothBranch(p)) == by_hand
        total += blocks * by_hand
    assert total == 1_277_440  # 70,144 + 407,040 + 800,256 (§3.2)


def test_r50_totals_training_time_and_folded():
    m = build_backbone(lis_cfg())
    awd = sum(9 * c * 9 + 18 * c + c * c // 2 for c in R50_STAGE_INPUT_CHANNELS.values())
    scb = sum(n * (9 * p + p * p) for n, p in R50_WIDTHS.values())
    assert n_params(m) == R50_PLAIN + awd + scb == 25_651_008
    assert n_params(m, "awd.") == awd and n_params(m, ".scb.") == scb
    folded = build_backbone(lis_cfg(scb=False))
    assert n_params(folded) == R50_PLAIN + awd == 24_373_568
    assert n_params(build_backbone(lis_cfg(MODEL__SEGALIAS__SCB__STAGES=STAGES))) - n_params(
        m
    ) == 3 * (9 * 64 + 64 * 64)


# --------------------------------------------------------------------------------- placement in R50
def _randomise_scb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scb.lowpass_logits"):
                p.copy_(torch.randn(p.shape, generator=g) * 2)
            elif name.endswith("scb.proj.weight"):
                p.mul_(3.0)


def _max_rel(a, b):
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp(min=1e-12)) for k in b)


def test_awd_takes_over_the_stage_strides():
    m = build_backbone(lis_cfg(scb=False))
    assert sorted(m.awd) == ["res3", "res4", "res5"]
    assert [(m.awd[s].channels, m.awd[s].stride) for s in ("res3", "res4", "res5")] == [
        (256, 2),
        (512, 2),
        (1024, 2),
    ]
    for name in ("res3", "res4", "res5"):
        convs = [mod for mod in getattr(m, name).modules() if isinstance(mod, torch.nn.Conv2d)]
        assert convs and all(c.stride == (1, 1) for c in convs), (
            name
        )  # shortcut, conv1, conv2: stride 1
    assert [m.output_shape()[s].stride for s in STAGES] == [4, 8, 16, 32]
    with torch.no_grad():
        out = m.eval()(torch.randn(1, 3, 97, 131))
    sizes = [(25, 33), (13, 17), (7, 9), (4, 5)]  # ceil(n / 2) per stride-2 op
    assert [tuple(out[s].shape[-2:]) for s in STAGES] == sizes


def test_stride_in_1x1_has_no_effect_once_awd_holds_the_stride():
    torch.manual_seed(4)
    a = build_backbone(lis_cfg(MODEL__RESNETS__STRIDE_IN_1X1=True)).eval()
    b = build_backbone(lis_cfg(MODEL__RESNETS__STRIDE_IN_1X1=False)).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        oa, ob = a(x), b(x)
    assert all(torch.equal(oa[k], ob[k]) for k in oa)


def test_awd_stride_1_is_a_prefilter_and_the_stage_keeps_its_stride():
    m = build_backbone(
        lis_cfg(scb=True, MODEL__SEGALIAS__AWD__STRIDE=1)
    )  # STRIDE_IN_1X1 False: stride in 3x3
    assert (
        m.awd["res4"].stride == 1 and m.res4[0].conv2.stride == (2, 2) and m.res4[0].scb.stride == 2
    )
    assert [m.output_shape()[s].stride for s in STAGES] == [4, 8, 16, 32]
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 64, 64))["res5"].shape == (1, 2048, 2, 2)


def test_daf_then_awd_then_stage_and_raw_features_returned():
    torch.manual_seed(5)
    m = build_backbone(lis_cfg(daf=True, freqmix=True)).eval()
    seen = []
    m.aa_filters["res4"].register_forward_hook(lambda mod, i, o: seen.append(("daf", i[0], o)))
    m.awd["res4"].register_forward_hook(lambda mod, i, o: seen.append(("awd", i[0], o)))
    m.res4.register_forward_hook(lambda mod, i, o: seen.append(("res4", i[0], o)))
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 64))
    assert [s[0] for s in seen] == ["daf", "awd", "res4"]
    assert torch.equal(seen[0][1], out["res3"])  # the stage output itself goes to FPN unfiltered
    assert torch.equal(seen[0][2], seen[1][1]) and torch.equal(seen[1][2], seen[2][1])
    assert seen[1][1].shape[-2:] == (8, 8) and seen[1][2].shape[-2:] == (
        4,
        4,
    )  # DAF at full res, AWD halves


def test_scb_branch_is_added_to_conv2_before_freqmix_and_norm():
    torch.manual_seed(6)
    m = build_backbone(lis_cfg(freqmix=True)).eval()
    block = m.res3[1]
    assert (
        isinstance(block.freqmix, FreqMix)
        and isinstance(block.scb, SmoothBranch)
        and m.res2[0].scb is None
    )
    seen = {}
    block.conv1.register_forward_hook(lambda mod, i, o: seen.setdefault("h1", o))
    block.freqmix.register_forward_hook(lambda mod, i, o: seen.setdefault("fm_in", i[0]))
    with torch.no_grad():
        m(torch.randn(1, 3, 64, 64))
        h1 = F.relu(seen["h1"])
        expected = F.conv2d(h1, block.conv2.weight, None, 1, 1) + block.scb(h1)
    assert torch.allclose(seen["fm_in"], expected, atol=1e-5)


def test_fused_and_two_branch_forwards_agree_and_train_every_lis_parameter():
    torch.manual_seed(7)
    m = build_backbone(lis_cfg(fpn=True)).eval()  # (with DAF + FreqMix: the fold fixture below)
    _randomise_scb(m, 7)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = m(x)
        for block in m.bottom_up.modules():
            if getattr(block, "scb", None) is not None:
                block.scb_fused = False
        two = m(x)
    assert _max_rel(fused, two) <= 1e-5
    out = m.train()(
        x
    )  # two-branch training step: gradients reach the low-pass logits, the 1x1 and AWD
    sum(v.mean() for v in out.values()).backward()
    br = m.bottom_up.res4[0].scb
    assert br.lowpass_logits.grad.abs().sum() > 0 and br.proj.weight.grad.abs().sum() > 0
    assert m.bottom_up.awd["res3"].tap_conv.weight.grad.abs().sum() > 0
    assert m.bottom_up.awd["res5"].tap_norm.weight.grad.abs().sum() > 0


def test_freeze_at_freezes_the_awd_of_frozen_stages():
    m = build_backbone(lis_cfg(MODEL__RESNETS__NORM="FrozenStatsBN", MODEL__BACKBONE__FREEZE_AT=3))
    assert not any(p.requires_grad for p in m.awd["res3"].parameters())
    assert isinstance(m.awd["res3"].tap_norm, FrozenBatchNorm2d)
    assert all(p.requires_grad for p in m.awd["res4"].parameters())
    assert (
        not any(p.requires_grad for p in m.res3[0].scb.parameters())
        and m.res4[0].scb.proj.weight.requires_grad
    )
    m = build_backbone(
        lis_cfg(MODEL__BACKBONE__FREEZE_AT=2)
    )  # the LIS recipe: AWD and SCB all train
    assert all(p.requires_grad for k, p in m.named_parameters() if "awd." in k or ".scb." in k)


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"MODEL__SEGALIAS__AWD__STAGES": ["res2", "res3"]}, "MODEL.SEGALIAS.AWD.STAGES"),
        ({"MODEL__SEGALIAS__AWD__STAGES": ["res6"]}, "MODEL.SEGALIAS.AWD.STAGES"),
        ({"MODEL__SEGALIAS__AWD__STRIDE": 4}, "MODEL.SEGALIAS.AWD.STRIDE"),
        (
            {"MODEL__RESNETS__RES5_DILATION": 2, "MODEL__SEGALIAS__SCB__ENABLED": False},
            "RES5_DILATION 2",
        ),
        (
            {"MODEL__RESNETS__RES5_DILATION": 2, "MODEL__SEGALIAS__AWD__ENABLED": False},
            "dilated conv2",
        ),
        ({"MODEL__RESNETS__NUM_GROUPS": 32, "MODEL__RESNETS__WIDTH_PER_GROUP": 4}, "NUM_GROUPS 1"),
        ({"MODEL__SEGALIAS__SCB__INIT": "box"}, "MODEL.SEGALIAS.SCB.INIT"),
    ],
)
def test_bad_lis_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match.replace(".", r"\.")):
        build_backbone(lis_cfg(**overrides))


# ------------------------------------------------------------------------------------------ folding
@pytest.fixture(scope="module")
def trained_form():
    torch.manual_seed(8)
    cfg = lis_cfg(fpn=True, daf=True, freqmix=True, MODEL__RESNETS__NORM="FrozenStatsBN")
    m = build_backbone(cfg).eval()
    _randomise_scb(m, 9)
    for block in m.bottom_up.modules():  # reference = the released two-branch computation
        if getattr(block, "scb", None) is not None:
            block.scb_fused = False
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = m(x)
    return m, x, ref


def test_folded_model_equals_the_two_branch_model(trained_form):
    m, x, ref = trained_form
    folded_sd, blocks = fold_scb_state_dict(m.state_dict())
    assert (
        len(blocks) == 13
        and "bottom_up.scb_folded" in folded_sd
        and not any(".scb." in k for k in folded_sd)
    )
    plain = build_backbone(
        lis_cfg(fpn=True, daf=True, freqmix=True, scb=False, MODEL__RESNETS__NORM="FrozenStatsBN")
    ).eval()
    plain.load_state_dict(folded_sd, strict=True)
    with torch.no_grad():
        out = plain(x)
    assert _max_rel(out, ref) <= 1e-5
    # the released output-channel indexing, applied to the same weights, is visibly wrong
    wrong = {k: v.clone() for k, v in m.state_dict().items() if ".scb." not in k}
    sd = m.state_dict()
    for b in blocks:
        wrong[b + "conv2.weight"] = _released_fold(
            sd[b + "conv2.weight"], sd[b + "scb.proj.weight"], sd[b + "scb.lowpass_logits"]
        )
    plain.load_state_dict(wrong, strict=True)
    with torch.no_grad():
        assert _max_rel(plain(x), ref) > 1e-2


def _fold_tool():
    spec = importlib.util.spec_from_file_location(
        "fold_scb_tool", os.path.join(REPO, "tools", "fold_scb.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fold_tool_output_loads_with_scb_off_and_is_refused_with_scb_on(
    trained_form, tmp_path, capsys
):
    m, x, ref = trained_form
    src, dst = str(tmp_path / "model_final.pth"), str(tmp_path / "folded.pth")
    torch.save(
        {
            "model": {f"backbone.{k}": v for k, v in m.state_dict().items()},
            "iteration": 9,
            "optimizer": {"state": {}, "param_groups": []},
        },
        src,
    )
    assert _fold_tool().main([src, dst]) == 0
    assert "MODEL.SEGALIAS.SCB.ENABLED False" in capsys.readouterr().out
    saved = torch.load(dst, weights_only=True)
    assert (
        set(saved) >= {"model"}
        and "optimizer" not in saved
        and "backbone.bottom_up.scb_folded" in saved["model"]
    )

    class Wrapper(torch.nn.Module):  # the names a Detectron2 model gives its backbone
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

    plain = Wrapper(
        build_backbone(
            lis_cfg(
                fpn=True, daf=True, freqmix=True, scb=False, MODEL__RESNETS__NORM="FrozenStatsBN"
            )
        ).eval()
    )
    incompatible = DetectionCheckpointer(plain).load(dst)  # what --eval-only MODEL.WEIGHTS does
    assert incompatible is not None
    with torch.no_grad():
        assert _max_rel(plain.backbone(x), ref) <= 1e-5
    with pytest.raises(ValueError, match="folded into conv2"):
        DetectionCheckpointer(Wrapper(m)).load(dst)
    with pytest.raises(ValueError, match="fold the checkpoint first"):
        DetectionCheckpointer(plain).load(src)
    with pytest.raises(SystemExit):
        _fold_tool().main(
            [dst, str(tmp_path / "again.pth")]
        )  # nothing left to fold: one-line error
    assert "no SCB branch" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- optimizer
def test_awd_scb_lr_multiplier_group():
    m = build_backbone(lis_cfg(freqmix=True))
    groups = get_segalias_param_groups(
        m,
        base_lr=1.0,
        weight_decay=1e-4,
        weight_decay_norm=1e-4,
        freqmix_lr_multiplier=3.0,
        awd_scb_lr_multiplier=5.0,
    )
    lr_of = {}
    for g in groups:
        for p in g["params"]:
            lr_of[id(p)] = g["lr"]
    by_name = {k: lr_of[id(p)] for k, p in m.named_parameters()}
    for k, lr in by_name.items():
        expected = (
            5.0 if (k.startswith("awd.") or ".scb." in k) else 3.0 if ".freqmix." in k else 1.0
        )
        assert lr == expected, k
    assert (
        by_name["awd.res4.tap_norm.weight"] == 5.0 and by_name["res5.2.scb.lowpass_logits"] == 5.0
    )
    # 5 tensors per AWD (tap conv, BN weight + bias, 2 channel convs), 2 per SCB block
    assert sum(1 for k in by_name if by_name[k] == 5.0) == 5 * 3 + 2 * 13


def test_config_keys():
    cfg = make_backbone_cfg()
    sa = cfg.MODEL.SEGALIAS
    assert (sa.AWD.ENABLED, list(sa.AWD.STAGES), sa.AWD.STRIDE) == (
        False,
        ["res3", "res4", "res5"],
        2,
    )
    assert (sa.SCB.ENABLED, list(sa.SCB.STAGES), sa.SCB.INIT) == (
        False,
        ["res3", "res4", "res5"],
        "released",
    )
    assert (list(sa.DSL.IN_FEATURES), sa.DSL.LOSS_WEIGHT, sa.DSL.CLAMP) == (STAGES, 0.01, 0.1)
    assert (
        cfg.SOLVER.SEGALIAS.AWD_SCB_LR_MULTIPLIER == 2.0 and cfg.INPUT.SEGALIAS.CLEAN_TWIN == "none"
    )
    m = build_backbone(make_backbone_cfg())  # off by default: the backbone is unchanged
    assert len(m.awd) == 0 and not any(".scb." in k for k in m.state_dict())
