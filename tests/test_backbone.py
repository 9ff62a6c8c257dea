"""Anti-aliased ResNet / ResNet-FPN backbones: registration, shapes, placement, parameter counts,
dtypes."""

import math

import pytest
import torch
from common import STAGES, make_backbone_cfg
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from detectron2.structures import ImageList
from reference_fourier import reference_daf

from segalias_d2 import add_segalias_config
from segalias_d2.config import _add_backbone_config
from segalias_d2.modeling.backbone.aa_resnet import AABottleneckBlock, AAResNet, DeepStem
from segalias_d2.modeling.fourier_filters import BlurPool, DeAliasingFilter, FreqMix

make_cfg = make_backbone_cfg


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_registered():
    assert BACKBONE_REGISTRY.get("build_segalias_resnet_backbone") is not None
    assert BACKBONE_REGISTRY.get("build_segalias_resnet_fpn_backbone") is not None


def test_freqmix_adds_exactly_383450_params_daf_none():
    base = n_params(build_backbone(make_cfg(daf=False, freqmix=False)))
    with_fm = build_backbone(make_cfg(daf=False, freqmix=True))
    with_daf = build_backbone(make_cfg(daf=True, freqmix=False))
    assert n_params(with_fm) - base == 383450
    assert n_params(with_daf) == base
    assert sum(p.numel() for k, p in with_fm.named_parameters() if ".freqmix." in k) == 383450
    # 13 FreqMix modules, all in res3-res5, one per bottleneck
    fms = [k for k, m in with_fm.named_modules() if isinstance(m, FreqMix)]
    assert len(fms) == 4 + 6 + 3 and not any(k.startswith("res2") for k in fms)
    assert all(".freqmix" in k for k in fms)
    assert {m.gate for m in with_fm.modules() if isinstance(m, FreqMix)} == {
        "released"
    }  # default gate


def test_r101_freqmix_param_count():
    m = build_backbone(make_cfg(daf=False, freqmix=True, MODEL__RESNETS__DEPTH=101))
    assert sum(p.numel() for k, p in m.named_parameters() if ".freqmix." in k) == 749596


def _ceil_div_chain(n, k):
    for _ in range(k):
        n = math.ceil(n / 2)
    return n


def test_backbone_shapes_odd_input():
    torch.manual_seed(0)
    m = build_backbone(make_cfg()).eval()
    assert isinstance(m, AAResNet)
    shapes = m.output_shape()
    assert list(shapes) == STAGES
    assert [shapes[s].channels for s in STAGES] == [256, 512, 1024, 2048]
    assert [shapes[s].stride for s in STAGES] == [4, 8, 16, 32]
    with torch.no_grad():
        out = m(torch.randn(1, 3, 97, 131))
    for i, s in enumerate(STAGES):
        # every stride-2 op (k3 p1, k7 p3, maxpool k3 p1) maps n -> ceil(n/2)
        assert out[s].shape == (
            1,
            shapes[s].channels,
            _ceil_div_chain(97, i + 2),
            _ceil_div_chain(131, i + 2),
        )


def test_fpn_shapes_odd_input():
    torch.manual_seed(0)
    m = build_backbone(make_cfg(fpn=True)).eval()
    shapes = m.output_shape()
    assert list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    assert all(s.channels == 256 for s in shapes.values())
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32, 64]
    x = ImageList.from_tensors([torch.randn(3, 97, 131)], m.size_divisibility).tensor
    assert x.shape[-2:] == (128, 160)
    with torch.no_grad():
        out = m(x)
    for name, s in shapes.items():
        assert out[name].shape == (1, 256, math.ceil(128 / s.stride), math.ceil(160 / s.stride))
    assert (
        m.size_divisibility == 32
    )  # inherited from Detectron2 FPN (and padding_constraints on main)


def test_daf_filters_stage_inputs_but_returns_unfiltered_features():
    torch.manual_seed(1)
    m = build_backbone(make_cfg(freqmix=False)).eval()
    assert sorted(m.aa_filters.keys()) == ["res3", "res4", "res5"]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = m(x)
        r2 = m.res2(m.stem(x))
        r3 = m.res3(reference_daf(r2, 0.35))
        r4 = m.res4(reference_daf(r3, 0.35))
        r5 = m.res5(reference_daf(r4, 0.35))
        r3_unfiltered_input = m.res3(r2)
    for name, ref in zip(STAGES, (r2, r3, r4, r5)):
        assert (out[name] - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert (out["res3"] - r3_unfiltered_input).abs().max() > 1e-3  # the DAF really is active


def test_freqmix_between_conv2_and_its_norm():
    torch.manual_seed(2)
    m = build_backbone(make_cfg(daf=False)).eval()
    block = m.res3[0]
    assert isinstance(block, AABottleneckBlock) and isinstance(block.freqmix, FreqMix)
    assert (
        block.freqmix.channels == 128
        and block.freqmix.cutoff == 0.35
        and block.freqmix.reduction == 16
    )
    assert m.res2[0].freqmix is None
    seen = []
    block.conv2.register_forward_hook(lambda mod, i, o: seen.append(("conv2", i[0], o)))
    block.freqmix.register_forward_hook(lambda mod, i, o: seen.append(("freqmix", i[0], o)))
    block.conv2.norm.register_forward_hook(lambda mod, i, o: seen.append(("norm", i[0], o)))
    with torch.no_grad():
        m(torch.randn(1, 3, 64, 64))
    assert [s[0] for s in seen] == ["conv2", "freqmix", "norm"]
    assert torch.equal(seen[0][2], seen[1][1]) and torch.equal(seen[1][2], seen[2][1])
    # conv2's own forward applies no norm: output equals the plain convolution
    conv = block.conv2
    ref = torch.nn.functional.conv2d(seen[0][1], conv.weight, None, conv.stride, conv.padding)
    assert torch.allclose(seen[0][2], ref, atol=1e-5)


def test_state_dict_round_trip_and_keys():
    torch.manual_seed(3)
    a = build_backbone(make_cfg(fpn=True)).eval()
    torch.manual_seed(4)
    b = build_backbone(make_cfg(fpn=True)).eval()
    sd = a.state_dict()
    assert any(".freqmix." in k for k in sd)
    assert "bottom_up.res3.0.conv2.norm.weight" in sd  # stock Detectron2 key names
    assert not any("aa_filters" in k for k in sd)
    b.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        oa, ob = a(x), b(x)
    assert all(torch.equal(oa[k], ob[k]) for k in oa)


def test_cpu_autocast_bfloat16_forward():
    torch.manual_seed(5)
    m = build_backbone(make_cfg(fpn=True)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    with torch.no_grad():
        ref = m(x)
    for k, v in out.items():
        assert v.dtype == torch.bfloat16 and torch.isfinite(v.float()).all()
        assert (v.float() - ref[k]).abs().max() <= 0.1 * ref[k].abs().max() + 0.1


def test_four_channel_input():
    cfg = make_cfg(fpn=True)
    cfg.MODEL.PIXEL_MEAN = [0.0, 0.0, 0.0, 0.0]
    cfg.MODEL.PIXEL_STD = [1.0, 1.0, 1.0, 1.0]
    m = build_backbone(cfg).eval()
    assert m.bottom_up.stem.conv1.weight.shape[1] == 4
    with torch.no_grad():
        out = m(torch.randn(1, 4, 64, 64))
    assert out["p2"].shape == (1, 256, 16, 16)
    assert build_backbone(make_cfg(), ShapeSpec(channels=4)).stem.conv1.weight.shape[1] == 4


def test_deep_stem():
    torch.manual_seed(6)
    m = build_backbone(make_cfg(MODEL__SEGALIAS__STEM_TYPE="deep")).eval()
    assert isinstance(m.stem, DeepStem) and m.stem.stride == 4
    assert [
        m.stem.conv1.weight.shape[0],
        m.stem.conv2.weight.shape[0],
        m.stem.conv3.weight.shape[0],
    ] == [32, 32, 64]
    assert all(c.kernel_size == (3, 3) for c in (m.stem.conv1, m.stem.conv2, m.stem.conv3))
    with torch.no_grad():
        out = m(torch.randn(1, 3, 97, 131))
    assert out["res2"].shape == (1, 256, 25, 33) and out["res5"].shape == (1, 2048, 4, 5)


def test_norms_and_freeze_at():
    m = build_backbone(make_cfg(MODEL__RESNETS__NORM="FrozenBN", MODEL__BACKBONE__FREEZE_AT=2))
    assert isinstance(m.res3[0].conv2.norm, FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in m.stem.parameters())
    assert not any(p.requires_grad for p in m.res2.parameters())
    assert all(p.requires_grad for p in m.res3.parameters())
    m = build_backbone(make_cfg(MODEL__RESNETS__NORM="SyncBN"))
    assert isinstance(m.res4[0].conv2.norm, torch.nn.SyncBatchNorm)
    m = build_backbone(
        make_cfg(MODEL__BACKBONE__FREEZE_AT=5)
    )  # frozen stages also freeze their FreqMix
    assert not any(p.requires_grad for k, p in m.named_parameters() if ".freqmix." in k)


def test_train_mode_gradients_finite():
    torch.manual_seed(7)
    m = build_backbone(make_cfg(fpn=True)).train()
    out = m(torch.randn(2, 3, 64, 64))
    sum(v.float().pow(2).mean() for v in out.values()).backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    fm_grad = m.bottom_up.res3[0].freqmix.spatial.weight.grad
    assert fm_grad.abs().sum() > 0


def test_blurpool_slots_and_stage_config():
    m = build_backbone(
        make_cfg(
            daf=False,
            freqmix=False,
            MODEL__SEGALIAS__BLURPOOL__ENABLED=True,
            MODEL__SEGALIAS__BLURPOOL__KERNEL_SIZE=5,
        )
    )
    assert sorted(m.aa_filters) == ["res3", "res4", "res5"]
    assert all(isinstance(f, BlurPool) and f.kernel_size == 5 for f in m.aa_filters.values())
    assert m.aa_filters["res3"].channels == 256
    m = build_backbone(
        make_cfg(MODEL__SEGALIAS__DAF__STAGES=["res4"], MODEL__SEGALIAS__FREQMIX__STAGES=["res5"])
    )
    assert list(m.aa_filters) == ["res4"] and isinstance(m.aa_filters["res4"], DeAliasingFilter)
    assert sum(isinstance(x, FreqMix) for x in m.modules()) == 3
    # stages cut by OUT_FEATURES drop their filters
    m = build_backbone(make_cfg(MODEL__RESNETS__OUT_FEATURES=["res2", "res3"]))
    assert list(m.aa_filters) == ["res3"]


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"MODEL__SEGALIAS__DAF__STAGES": ["res6"]}, "MODEL.SEGALIAS.DAF.STAGES"),
        ({"MODEL__SEGALIAS__FREQMIX__STAGES": ["stage2"]}, "MODEL.SEGALIAS.FREQMIX.STAGES"),
        ({"MODEL__SEGALIAS__STEM_TYPE": "v1d"}, "MODEL.SEGALIAS.STEM_TYPE"),
        ({"MODEL__SEGALIAS__DAF__CUTOFF": 0.7}, "MODEL.SEGALIAS.DAF.CUTOFF"),
        ({"MODEL__SEGALIAS__FREQMIX__CUTOFF": 0.0}, "MODEL.SEGALIAS.FREQMIX.CUTOFF"),
        ({"MODEL__SEGALIAS__FREQMIX__GATE": "energy"}, "MODEL.SEGALIAS.FREQMIX.GATE"),
        (
            {"MODEL__SEGALIAS__FREQMIX__GATE": "faithful"},
            "MODEL.SEGALIAS.FREQMIX.GATE 'faithful' was renamed",
        ),
        ({"MODEL__SEGALIAS__BLURPOOL__ENABLED": True}, "BLURPOOL"),
        ({"MODEL__RESNETS__DEPTH": 34}, "MODEL.RESNETS.DEPTH"),
    ],
)
def test_bad_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match.replace(".", r"\.")):
        build_backbone(make_cfg(**overrides))


def test_config_keys_idempotent():
    cfg = get_cfg()
    add_segalias_config(cfg)
    sa = cfg.MODEL.SEGALIAS
    assert (sa.DAF.ENABLED, sa.DAF.CUTOFF, list(sa.DAF.STAGES)) == (
        True,
        0.35,
        ["res3", "res4", "res5"],
    )
    assert (sa.FREQMIX.ENABLED, sa.FREQMIX.CUTOFF, sa.FREQMIX.REDUCTION, sa.FREQMIX.GATE) == (
        True,
        0.35,
        16,
        "released",
    )
    assert (sa.BLURPOOL.ENABLED, sa.BLURPOOL.KERNEL_SIZE, sa.STEM_TYPE) == (False, 3, "basic")
    assert (
        cfg.SOLVER.SEGALIAS.FREQMIX_LR_MULTIPLIER == 2.0
        and cfg.SOLVER.SEGALIAS.HEAD_LR_MULTIPLIER == 1.0
    )
    sa.DAF.CUTOFF = 0.3

    _add_backbone_config(cfg)
    add_segalias_config(cfg)
    assert cfg.MODEL.SEGALIAS.DAF.CUTOFF == 0.3
    cfg.merge_from_list(["MODEL.SEGALIAS.FREQMIX.GATE", "band_energy"])
    assert cfg.MODEL.SEGALIAS.FREQMIX.GATE == "band_energy"
