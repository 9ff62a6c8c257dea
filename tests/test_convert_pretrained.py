"""Weight conversion: converted random torchvision / mmcv-V1c / Caffe2-named weights reproduce the
source network's stage outputs in the Detectron2 backbone (no downloads)."""

import logging
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from common import STAGES, make_backbone_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_backbone
from torch import nn

from segalias_d2.checkpoint import (
    adapt_stem_to_packed_bayer,
    convert_state_dict,
    load_backbone_weights,
    save_d2_checkpoint,
)
from segalias_d2.checkpoint.convert import main as convert_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_cfg(fpn=True, norm="BN", stem="basic", daf=False, freqmix=False, stride_in_1x1=False):
    return make_backbone_cfg(
        fpn=fpn,
        daf=daf,
        freqmix=freqmix,
        MODEL__RESNETS__NORM=norm,
        MODEL__SEGALIAS__STEM_TYPE=stem,
        MODEL__RESNETS__STRIDE_IN_1X1=stride_in_1x1,
    )


def _randomize_bn(module, seed):
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean = 0.1 * torch.randn(n, generator=g)
            m.running_var = 0.5 + torch.rand(n, generator=g)


@pytest.fixture(scope="module")
def tv_resnet():
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    _randomize_bn(net, 1)
    return net.eval()


def tv_stages(net, x, stem=None):
    with torch.no_grad():
        if stem is None:
            x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        else:
            x = stem(x)
        outs = {}
        for i, layer in enumerate([net.layer1, net.layer2, net.layer3, net.layer4]):
            x = layer(x)
            outs[STAGES[i]] = x
    return outs


def assert_same_stages(d2_out, ref):
    for s in STAGES:
        assert d2_out[s].shape == ref[s].shape
        err = (d2_out[s] - ref[s]).abs().max().item()
        assert err <= 1e-4 * max(1.0, ref[s].abs().max().item()), (s, err)


@pytest.mark.parametrize("norm,ext", [("BN", ".pkl"), ("FrozenBN", ".pth")])
def test_torchvision_conversion_reproduces_stage_outputs(tv_resnet, tmp_path, norm, ext):
    sd, dropped = convert_state_dict(tv_resnet.state_dict(), "torchvision")
    assert sorted(dropped) == ["fc.bias", "fc.weight"]
    path = str(tmp_path / ("r50" + ext))
    save_d2_checkpoint(sd, path, prefix="backbone.bottom_up.")
    fpn = build_backbone(make_cfg(norm=norm)).eval()
    report = load_backbone_weights(fpn, path)
    # only the (new) FPN layers are missing; the whole ResNet body loaded
    assert report.missing and all(k.startswith("fpn_") for k in report.missing)
    assert report.unexpected == [] and report.shape_mismatch == [] and report.missing_freqmix == []
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        out = fpn.bottom_up(x)
    assert_same_stages(out, tv_stages(tv_resnet, x))


def test_saved_file_format_and_detectron2_checkpointer(tv_resnet, tmp_path):
    sd, _ = convert_state_dict(tv_resnet.state_dict(), "torchvision")
    path = str(tmp_path / "r50.pkl")
    save_d2_checkpoint(sd, path, prefix="")
    with open(path, "rb") as f:
        data = pickle.load(f)
    assert data["matching_heuristics"] is False and "__author__" in data
    assert all(isinstance(v, np.ndarray) for v in data["model"].values())
    assert "res3.0.conv2.norm.running_var" in data["model"] and "stem.conv1.weight" in data["model"]
    # Detectron2's own checkpointer (the trainer path) loads it with exact names
    body = build_backbone(make_cfg(fpn=False)).eval()
    DetectionCheckpointer(body).load(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = body(x)
    assert_same_stages(out, tv_stages(tv_resnet, x))


def test_freqmix_keys_reported_as_newly_initialised(tv_resnet, tmp_path, caplog):
    sd, _ = convert_state_dict(tv_resnet.state_dict(), "torchvision")
    path = str(tmp_path / "r50.pth")
    save_d2_checkpoint(sd, path, prefix="backbone.bottom_up.")
    fpn = build_backbone(make_cfg(daf=True, freqmix=True))
    with caplog.at_level(logging.INFO, logger="segalias_d2.checkpoint.convert"):
        report = load_backbone_weights(fpn, path)
    # 13 FreqMix modules x (spatial w,b + 2 SE x (fc1 w,b, fc2 w,b)) = 130 tensors, nothing else
    # missing
    assert len(report.missing_freqmix) == 13 * 10
    assert all(k.startswith("fpn_") for k in report.missing) and report.unexpected == []
    assert any("FreqMix" in r.getMessage() and "new" in r.getMessage() for r in caplog.records)
    # and the other weights did load
    assert torch.equal(fpn.bottom_up.res3[0].conv1.weight, tv_resnet.layer2[0].conv1.weight)


def _mmcv_v1c_state_dict(net, seed=2):
    """mmcv ResNetV1c naming: deep stem `stem.{0..7}` + torchvision-identical `layer*` names."""
    torch.manual_seed(seed)
    stem = nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, 1, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, 1, 1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    )
    _randomize_bn(stem, seed)
    stem.eval()
    sd = {f"stem.{k}": v for k, v in stem.state_dict().items()}
    sd.update({k: v for k, v in net.state_dict().items() if k.startswith("layer")})
    return {"meta": {}, "state_dict": sd}, stem


def test_mmcv_v1c_conversion_reproduces_stage_outputs(tv_resnet, tmp_path):
    ckpt, stem = _mmcv_v1c_state_dict(tv_resnet)
    src = str(tmp_path / "resnet50_v1c.pth")
    torch.save(ckpt, src)
    dst = str(tmp_path / "v1c.pkl")
    assert convert_main([src, dst, "--format", "mmcv_v1c"]) == 0
    fpn = build_backbone(make_cfg(stem="deep")).eval()
    report = load_backbone_weights(fpn, dst)
    assert all(k.startswith("fpn_") for k in report.missing) and report.unexpected == []
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        out = fpn.bottom_up(x)
    assert_same_stages(out, tv_stages(tv_resnet, x, stem=stem))


def _c2_blobs(net):
    """Caffe2/MSRA blob names (as in R-50.pkl) built from a torchvision network."""
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    bn = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
    out = {"conv1_w": sd["conv1.weight"], "fc1000_w": sd["fc.weight"], "fc1000_b": sd["fc.bias"]}
    out.update({f"res_conv1_bn_{v}": sd[f"bn1.{k}"] for k, v in bn.items()})
    for li in range(1, 5):
        for bi in range(len(getattr(net, f"layer{li}"))):
            p, q = f"layer{li}.{bi}", f"res{li + 1}_{bi}"
            for ci, br in zip((1, 2, 3), "abc"):
                out[f"{q}_branch2{br}_w"] = sd[f"{p}.conv{ci}.weight"]
                out.update(
                    {f"{q}_branch2{br}_bn_{v}": sd[f"{p}.bn{ci}.{k}"] for k, v in bn.items()}
                )
            if bi == 0:
                out[f"{q}_branch1_w"] = sd[f"{p}.downsample.0.weight"]
                out.update(
                    {f"{q}_branch1_bn_{v}": sd[f"{p}.downsample.1.{k}"] for k, v in bn.items()}
                )
    out["conv1_w_momentum"] = np.zeros(1)
    return {"blobs": out}


def test_d2_pkl_caffe2_names_conversion(tv_resnet, tmp_path):
    src = str(tmp_path / "R-50.pkl")
    with open(src, "wb") as f:
        pickle.dump(_c2_blobs(tv_resnet), f)
    dst = str(tmp_path / "r50_d2.pth")
    convert_main([src, dst, "--format", "d2_pkl", "--prefix", "backbone."])
    body = build_backbone(make_cfg(fpn=False)).eval()
    report = load_backbone_weights(body, dst)
    assert report.missing == [] and report.unexpected == []
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        out = body(x)
    assert_same_stages(out, tv_stages(tv_resnet, x))


def test_d2_pkl_detectron2_names_keep_backbone_only(tv_resnet):
    sd, _ = convert_state_dict(tv_resnet.state_dict(), "torchvision")
    model = {"backbone.bottom_up." + k: v.numpy() for k, v in sd.items()}
    model["backbone.fpn_lateral2.weight"] = np.zeros((256, 256, 1, 1), np.float32)
    model["roi_heads.res5.0.conv1.weight"] = np.zeros((1,), np.float32)
    conv, dropped = convert_state_dict({"model": model, "__author__": "x"}, "d2_pkl")
    assert sorted(conv) == sorted(sd)
    assert sorted(dropped) == ["backbone.fpn_lateral2.weight", "roi_heads.res5.0.conv1.weight"]


def test_bayer_stem_adaptation():
    torch.manual_seed(3)
    w = torch.randn(8, 3, 7, 7)
    sd4 = adapt_stem_to_packed_bayer({"stem.conv1.weight": w}, "RGGB", "RGB")
    assert sd4["stem.conv1.weight"].shape == (8, 4, 7, 7)
    r, g, b = torch.rand(3, 1, 1, 20, 20)
    rgb = torch.cat([r, g, b], 1)
    bayer = torch.cat([r, g, g, b], 1)  # flat green: G1 == G2 == G
    out3 = torch.nn.functional.conv2d(rgb, w)
    out4 = torch.nn.functional.conv2d(bayer, sd4["stem.conv1.weight"])
    assert (out3 - out4).abs().max() <= 1e-4  # float32 sums of 147 products
    sd_bgr = adapt_stem_to_packed_bayer({"stem.conv1.weight": w.flip(1)}, "RGGB", "BGR")
    assert torch.allclose(sd_bgr["stem.conv1.weight"], sd4["stem.conv1.weight"])
    with pytest.raises(ValueError, match="pattern"):
        adapt_stem_to_packed_bayer({"stem.conv1.weight": w}, "RGBB")


def test_unknown_format_and_empty_checkpoint_raise():
    with pytest.raises(ValueError, match="format"):
        convert_state_dict({}, "caffe")
    with pytest.raises(ValueError, match="no ResNet weights"):
        convert_state_dict({"foo.weight": torch.zeros(1)}, "torchvision")


def test_cli_runs_as_script(tmp_path):
    torch.manual_seed(4)
    src = str(tmp_path / "tv.pth")
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), src)
    dst = str(tmp_path / "out.pkl")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "convert_pretrained.py"),
            src,
            dst,
            "--format",
            "torchvision",
        ],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(dst, "rb") as f:
        data = pickle.load(f)
    assert "backbone.bottom_up.res5.2.conv3.norm.weight" in data["model"]
    # stem conv + 4 BN tensors, 16 blocks x 3 convs x (weight + 4 BN), 4 shortcuts x (weight + 4 BN)
    assert len(data["model"]) == 5 + 16 * 3 * 5 + 4 * 5


def test_d2_pkl_caffe2_names_match_detectron2_checkpointer(tv_resnet, tmp_path):
    # the converter renames Caffe2 blobs as Detectron2's own DetectionCheckpointer does when it
    # loads R-50.pkl
    src = str(tmp_path / "R-50.pkl")
    with open(src, "wb") as f:
        pickle.dump(_c2_blobs(tv_resnet), f)
    by_d2 = build_backbone(make_cfg(fpn=False, stride_in_1x1=True)).eval()
    DetectionCheckpointer(by_d2).load(
        src
    )  # Caffe2 heuristics: convert_c2_detectron_names + suffix matching
    with open(src, "rb") as f:
        ours, dropped = convert_state_dict(pickle.load(f, encoding="latin1"), "d2_pkl")
    assert sorted(dropped) == ["fc1000_b", "fc1000_w"]
    expected = {
        k: v for k, v in by_d2.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    assert sorted(ours) == sorted(expected)
    for k, v in ours.items():
        assert torch.equal(v, expected[k]), k
