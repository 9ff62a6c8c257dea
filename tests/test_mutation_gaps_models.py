"""Backbone options and sliding-window inference against independent expectations (issue 17):
MODEL.RESNETS.RES5_DILATION 2 and STRIDE_IN_1X1 True give Detectron2's own ResNet (same weights,
same outputs) and the hand-known strides, shapes and convolutions; with FreqMix + DAF on they keep
those geometries. The real SlidingWindowSemanticSegmentor on several overlapping windows equals its
own whole-image predictions on each crop, stitched and averaged by hand."""

import pytest
import torch
import torch.nn.functional as F
from common import STAGES, make_backbone_cfg
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from segalias_d2 import add_segalias_config

# a narrow R50 (8x fewer channels than the real one): the same blocks, strides and dilations, built
# in a fraction of the time
NARROW = dict(
    MODEL__RESNETS__STEM_OUT_CHANNELS=16,
    MODEL__RESNETS__RES2_OUT_CHANNELS=32,
    MODEL__RESNETS__WIDTH_PER_GROUP=8,
)


def _stock_and_ours(**overrides):
    cfg = make_backbone_cfg(daf=False, freqmix=False, **NARROW, **overrides)
    torch.manual_seed(0)
    ours = build_backbone(cfg).eval()
    stock = build_resnet_backbone(cfg, _input_shape(cfg)).eval()
    stock.load_state_dict(
        ours.state_dict()
    )  # same keys: the segalias ResNet adds nothing when DAF/FreqMix are off
    return cfg, ours, stock


def _input_shape(cfg):

    return ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))


def _conv_io(conv):
    seen = {}
    conv.register_forward_hook(
        lambda mod, i, o: seen.update(x=i[0].clone(), y=o.clone())
    )  # the block ReLUs in place
    return seen


@pytest.mark.parametrize("dilation,stride_in_1x1", [(2, False), (1, True), (2, True)])
def test_res5_dilation_and_stride_in_1x1_equal_detectron2s_resnet(dilation, stride_in_1x1):
    cfg, ours, stock = _stock_and_ours(
        MODEL__RESNETS__RES5_DILATION=dilation, MODEL__RESNETS__STRIDE_IN_1X1=stride_in_1x1
    )
    res5_stride = 16 if dilation == 2 else 32
    assert {k: v.stride for k, v in ours.output_shape().items()} == {
        "res2": 4,
        "res3": 8,
        "res4": 16,
        "res5": res5_stride,
    }
    block = ours.res5[0]
    assert block.conv2.dilation == (dilation, dilation) and block.conv2.padding == (
        dilation,
        dilation,
    )
    assert all(b.conv2.dilation == (dilation, dilation) for b in ours.res5)
    assert all(b.conv2.dilation == (1, 1) for b in ours.res4)
    first = ours.res3[0]  # the stride-2 block of res3: its 1x1 conv or its 3x3 conv strides
    assert (first.conv1.stride, first.conv2.stride) == (
        ((2, 2), (1, 1)) if stride_in_1x1 else ((1, 1), (2, 2))
    )
    assert ours.res5[0].shortcut.stride == ((1, 1) if dilation == 2 else (2, 2))

    x = torch.randn(1, 3, 64, 96)
    conv2 = _conv_io(block.conv2)
    conv1 = _conv_io(first.conv1)
    with torch.no_grad():
        a, b = ours(x), stock(x)
    h5, w5 = (4, 6) if dilation == 2 else (2, 3)
    assert [tuple(a[s].shape[-2:]) for s in STAGES] == [(16, 24), (8, 12), (4, 6), (h5, w5)]
    for s in STAGES:
        torch.testing.assert_close(a[s], b[s], rtol=0, atol=0)
    # what the convolutions compute, written out
    expected = block.conv2.norm(
        F.conv2d(conv2["x"], block.conv2.weight, None, 1, dilation, dilation)
    )
    torch.testing.assert_close(conv2["y"], expected, rtol=1e-5, atol=1e-5)
    s1 = 2 if stride_in_1x1 else 1
    expected = first.conv1.norm(F.conv2d(conv1["x"], first.conv1.weight, None, s1))
    torch.testing.assert_close(conv1["y"], expected, rtol=1e-5, atol=1e-5)


def test_res5_dilation_2_and_stride_in_1x1_with_daf_and_freqmix():
    cfg = make_backbone_cfg(
        daf=True,
        freqmix=True,
        MODEL__RESNETS__RES5_DILATION=2,
        MODEL__RESNETS__STRIDE_IN_1X1=True,
        **NARROW,
    )
    torch.manual_seed(1)
    m = build_backbone(cfg).eval()
    assert {k: v.stride for k, v in m.output_shape().items()} == {
        "res2": 4,
        "res3": 8,
        "res4": 16,
        "res5": 16,
    }
    block = m.res5[1]
    assert block.freqmix is not None and block.conv2.dilation == (2, 2)
    seen = {}
    block.freqmix.register_forward_hook(lambda mod, i, o: seen.update(x=i[0].clone()))
    block.conv1.register_forward_hook(lambda mod, i, o: seen.update(h1=o.clone()))
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 96))
    assert tuple(out["res5"].shape) == (1, 256, 4, 6)
    # FreqMix sees the dilated 3x3 conv of the ReLU'd conv1 output, before conv2's norm
    expected = F.conv2d(F.relu(seen["h1"]), block.conv2.weight, None, 1, 2, 2)
    torch.testing.assert_close(seen["x"], expected, rtol=1e-5, atol=1e-5)
    assert m.res3[0].conv1.stride == (2, 2) and m.res3[0].conv2.stride == (1, 1)


def test_sliding_window_segmentor_averages_overlapping_windows_as_stitched_by_hand():
    cfg = get_cfg()
    add_segalias_config(cfg)
    cfg.merge_from_list(
        [
            "MODEL.META_ARCHITECTURE",
            "SlidingWindowSemanticSegmentor",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.BACKBONE.NAME",
            "build_segalias_resnet_fpn_backbone",
            "MODEL.RESNETS.DEPTH",
            "50",
            "MODEL.RESNETS.OUT_FEATURES",
            "['res2','res3','res4','res5']",
            "MODEL.FPN.IN_FEATURES",
            "['res2','res3','res4','res5']",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            "4",
            "TEST.SEGALIAS.SLIDING_WINDOW.ENABLED",
            "True",
            "TEST.SEGALIAS.SLIDING_WINDOW.SIZE",
            "[48, 64]",
            "TEST.SEGALIAS.SLIDING_WINDOW.STRIDE",
            "[32, 32]",
            # narrow: 8x fewer channels than the real R50-FPN, the same computation
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            "16",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "32",
            "MODEL.RESNETS.WIDTH_PER_GROUP",
            "8",
            "MODEL.FPN.OUT_CHANNELS",
            "32",
            "MODEL.SEM_SEG_HEAD.CONVS_DIM",
            "32",
        ]
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert model.sliding_window and model.window == (48, 64) and model.stride == (32, 32)
    image = torch.rand(3, 80, 96) * 255
    crops = []
    predict = model._predict_crop
    model._predict_crop = lambda crop: crops.append(tuple(crop.shape)) or predict(crop)
    with torch.no_grad():
        windowed = model([{"image": image, "height": 80, "width": 96}])[0]["sem_seg"]
        # by hand: windows at rows 0, 32 and columns 0, 32 (the last one ends at the border), each
        # predicted by the same model as a whole image of its own, then summed and divided by the
        # number of windows per pixel
        model.sliding_window = False
        total = torch.zeros(4, 80, 96)
        count = torch.zeros(80, 96)
        for y0 in (0, 32):
            for x0 in (0, 32):
                crop = image[:, y0 : y0 + 48, x0 : x0 + 64]
                total[:, y0 : y0 + 48, x0 : x0 + 64] += model(
                    [{"image": crop, "height": 48, "width": 64}]
                )[0]["sem_seg"]
                count[y0 : y0 + 48, x0 : x0 + 64] += 1
        whole = model([{"image": image, "height": 80, "width": 96}])[0]["sem_seg"]
    assert crops == [(3, 48, 64)] * 4
    assert count[40, 40] == 4 and count[0, 0] == 1 and count[0, 40] == 2 and count[79, 95] == 1
    torch.testing.assert_close(windowed, total / count, rtol=1e-5, atol=1e-5)
    assert (
        windowed - whole
    ).abs().max() > 1e-3  # the windows matter: not the whole-image prediction
