"""Released MMSeg checkpoints -> our UPerNet model (tools/convert_pretrained.py --format mmseg).

A synthetic checkpoint with the released key layout (542 keys: NyResNet 460, UPerHead 74, FCNHead 8;
upernet_recipes.md section 4) and random float64 weights is converted; the converted model's outputs
(backbone stages, decode and auxiliary logits, the whole model's inference) must equal the direct
transcription of the released forward pass in tests/reference_mmseg_upernet.py on the same weights
to 1e-6."""

import os
import pickle
import shutil
import sys

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from reference_mmseg_upernet import (
    reference_backbone,
    reference_encode_decode,
    reference_fcn_head,
    reference_uper_head,
    released_key_shapes,
    synthetic_mmseg_state_dict,
)

from segalias_d2.checkpoint import main as convert_main
from segalias_d2.checkpoint.convert import convert_file
from segalias_d2.checkpoint.mmseg import (
    MMSegConversionError,
    convert_mmseg_checkpoint,
    infer_mmseg_architecture,
    read_mmseg_checkpoint,
)
from segalias_d2.checkpoint.mmseg_config import mmseg_model_config
from segalias_d2.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AA_CFG = os.path.join(
    REPO,
    "configs/Cityscapes-SemanticSegmentation/upernet_R_50_V1c_DAF_FreqMix_c128_768_80k_bs8.yaml",
)
BASE_CFG = os.path.join(
    REPO, "configs/Cityscapes-SemanticSegmentation/upernet_R_50_V1c_c128_768_80k_bs8.yaml"
)
META_CONFIG = (
    "model = dict(type='EncoderDecoder', backbone=dict(type='NyResNet', depth=50, blur_type='flc', "
    "freq_thres=0.25 * 1.4), decode_head=dict(type='UPerHead', channels=128, num_classes=19, "
    "loss_decode=[dict(type='CrossEntropyLoss', loss_weight=1.0)]), "
    "auxiliary_head=dict(type='FCNHead', "
    "channels=256, num_classes=19, loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)))"
)
TOL = 1e-6


def _mmcv_file(sd, meta_config=META_CONFIG):
    return {
        "meta": {
            "exp_name": "upernet_r50-d32_cityscapes_hard_pixel_c128_768.py",
            "mmseg_version": "0.25.0+abcdef0",
            "config": meta_config,
            "iter": 80000,
        },
        "state_dict": sd,
        "optimizer": {"state": {}, "param_groups": []},
    }


@pytest.fixture(scope="module")
def released_sd():
    return synthetic_mmseg_state_dict(seed=0)


@pytest.fixture(scope="module")
def converted_file(released_sd, tmp_path_factory):
    d = tmp_path_factory.mktemp("mmseg")
    src, dst = str(d / "iter_80000.pth"), str(d / "converted.pth")
    torch.save(_mmcv_file(released_sd), src)
    yield src, dst
    shutil.rmtree(d, ignore_errors=True)  # ~480 MB: not kept to the session's end


def _model(cfg_path, weights):
    cfg = load_config(cfg_path)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).double().eval()
    DetectionCheckpointer(model).load(weights)
    return model


def _close(ours, ref, what):
    err = (ours - ref).abs().max().item()
    assert err <= TOL, (
        f"{what}: max |ours - released| = {err:.3g} (scale {ref.abs().max().item():.3g})"
    )


def test_synthetic_checkpoint_has_the_released_layout(released_sd):
    keys = list(released_sd)
    assert (
        len(keys),
        sum(k.startswith("backbone.") for k in keys),
        sum(k.startswith("decode_head.") for k in keys),
        sum(k.startswith("auxiliary_head.") for k in keys),
    ) == (542, 460, 74, 8)

    def params(prefix, sub=""):
        return sum(
            v.numel()
            for k, v in released_sd.items()
            if k.startswith(prefix)
            and sub in k
            and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        )

    # upernet_recipes.md section 1.6
    assert (
        params("backbone."),
        params("backbone.", ".att."),
        params("decode_head."),
        params("auxiliary_head."),
    ) == (23_910_714, 383_450, 5_264_787, 2_364_691)
    assert released_sd["decode_head.bottleneck.conv.weight"].shape == (128, 2560, 3, 3)
    assert released_sd["decode_head.fpn_bottleneck.conv.weight"].shape == (128, 512, 3, 3)


def test_cli_converts_with_an_empty_report_and_the_output_loads_safely(converted_file, capsys):
    src, dst = converted_file
    assert convert_main([src, dst, "--format", "mmseg", "--config-file", AA_CFG]) == 0
    out = capsys.readouterr().out
    assert "source keys not used (0): []" in out and "model tensors not filled (0): []" in out
    # 542 keys = 474 tensors + 68 BN counters (55 backbone + 12 decode + 1 aux BNs), nothing else
    assert "renamed 474 tensors; dropped 68 BN counters" in out
    assert "blur_type=flc, freq_thres=0.35" in out and "loss_types=['CrossEntropyLoss']" in out
    ckpt = torch.load(dst, map_location="cpu", weights_only=True)
    assert ckpt["matching_heuristics"] is False and len(ckpt["model"]) == 474


def test_converted_model_equals_the_released_forward_in_float64(converted_file, released_sd):
    src, dst = converted_file
    if not os.path.exists(dst):
        assert convert_main([src, dst, "--format", "mmseg", "--config-file", AA_CFG]) == 0
    model = _model(AA_CFG, dst)
    assert all(m.gate == "released" for m in model.modules() if type(m).__name__ == "FreqMix")
    sd = released_sd
    # batch 2: the released FreqMix gates read the batch- and channel-rolled spectrum
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats, ref = model.backbone(x), reference_backbone(x, sd)
        for i, name in enumerate(("res2", "res3", "res4", "res5")):
            _close(feats[name], ref[i], name)
        _close(model.sem_seg_head.layers(feats), reference_uper_head(ref, sd), "decode head logits")
        _close(
            model.sem_seg_head.aux(feats["res4"]),
            reference_fcn_head(ref[2], sd),
            "auxiliary head logits",
        )
        _close(
            model.sem_seg_head(feats)[0], reference_encode_decode(x, sd), "logits at the input size"
        )
        # the whole model at inference (normalisation, sliding window clipped to the image,
        # post-processing)
        image = (
            torch.rand(3, 64, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
            * 255
        )
        out = model([{"image": image, "height": 64, "width": 96}])[0]["sem_seg"]
        # mean/std as float32 constants (mmcv's imnormalize and Detectron2's pixel_mean buffers are
        # float32)
        mean = torch.tensor([123.675, 116.28, 103.53], dtype=torch.float32).double()[:, None, None]
        std = torch.tensor([58.395, 57.12, 57.375], dtype=torch.float32).double()[:, None, None]
        _close(out, reference_encode_decode(((image - mean) / std)[None], sd)[0], "model inference")


def test_a_swapped_bn_pair_is_detected(released_sd):
    """The parity check can fail: two same-shape BN statistics exchanged change the output far
    beyond 1e-6."""
    sd = dict(released_sd)
    a, b = "backbone.layer3.1.bn1.running_var", "backbone.layer3.1.bn2.running_var"
    sd[a], sd[b] = released_sd[b], released_sd[a]
    converted, report, cfg = convert_mmseg_checkpoint(_mmcv_file(sd), load_config(AA_CFG))
    assert report.ok  # a wrong mapping of same-shape tensors passes every structural check ...
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).double().eval()
    model.load_state_dict(converted, strict=False)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        err = (model.backbone(x)["res5"] - reference_backbone(x, released_sd)[3]).abs().max().item()
    assert err > 1e-3  # ... and only the numerical comparison catches it


def test_baseline_checkpoint_with_identity_blur_converts_into_the_baseline_recipe():
    """README baseline ("blur1"): ResNetV1cWithBlur blur_k=1 -> all-ones AdaD filters, no FreqMix,
    no DAF."""
    sd = synthetic_mmseg_state_dict(seed=4, freqmix=False)
    for i, c in ((1, 256), (2, 512), (3, 1024)):
        sd[f"backbone.AdaD.{i}.filt"] = torch.ones(c, 1, 1, 1, dtype=torch.float64)
    meta = "model = dict(backbone=dict(type='ResNetV1cWithBlur', blur_type='blur', blur_k=1))"
    with pytest.raises(MMSegConversionError, match=r"MODEL.SEGALIAS.FREQMIX.ENABLED = True"):
        convert_mmseg_checkpoint(_mmcv_file(sd, meta), load_config(AA_CFG), "AA")
    converted, report, cfg = convert_mmseg_checkpoint(_mmcv_file(sd, meta), load_config(BASE_CFG))
    assert report.ok and len(report.identity_blur_keys) == 3 and report.architecture.identity_blur
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).double().eval()
    model.load_state_dict(converted, strict=False)
    x = torch.randn(1, 3, 64, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        feats = model.backbone(x)
        _close(
            model.sem_seg_head.layers(feats),
            reference_uper_head(reference_backbone(x, sd, None), sd),
            "baseline",
        )


def test_inferred_config_follows_the_checkpoint_se_ratio_and_meta():
    sd = synthetic_mmseg_state_dict(seed=6, reduction=4, num_classes=21)  # a "2se-cr=4" VOC run
    with pytest.raises(MMSegConversionError) as e:
        convert_mmseg_checkpoint(_mmcv_file(sd), load_config(AA_CFG), "AA.yaml")
    msg = str(e.value)
    assert "MODEL.SEGALIAS.FREQMIX.REDUCTION = 16 (checkpoint needs 4)" in msg
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES = 19 (checkpoint needs 21)" in msg
    _, report, cfg = convert_mmseg_checkpoint(_mmcv_file(sd))
    assert report.ok
    assert (cfg.MODEL.SEGALIAS.FREQMIX.REDUCTION, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) == (4, 21)
    assert (
        cfg.MODEL.SEGALIAS.DAF.ENABLED,
        cfg.MODEL.SEGALIAS.DAF.CUTOFF,
        cfg.MODEL.SEGALIAS.FREQMIX.GATE,
    ) == (True, 0.35, "released")
    arch = infer_mmseg_architecture(sd)
    assert (
        mmseg_model_config(arch, {"blur_type": "flc", "freq_thres": 0.3}).MODEL.SEGALIAS.DAF.CUTOFF
        == 0.3
    )


@pytest.mark.parametrize(
    "edit,match",
    [
        (
            lambda sd, cfg: cfg.MODEL.SEGALIAS.FREQMIX.__setattr__("GATE", "per_image"),
            r"FREQMIX.GATE = 'per_image' \(checkpoint needs 'released'\)",
        ),
        (
            lambda sd, cfg: cfg.MODEL.SEGALIAS.DAF.__setattr__("CUTOFF", 0.25),
            r"DAF.CUTOFF = 0.25 \(checkpoint needs 0.35\)",
        ),
        (
            lambda sd, cfg: sd.update(
                {"backbone.layer1.0.att.freq_weight_conv.bias": torch.zeros(2)}
            ),
            "in layer1",
        ),
        (
            lambda sd, cfg: [sd.pop(k) for k in list(sd) if k.startswith("backbone.layer3.2.att.")],
            r"blocks \[0, 1, 3, 4, 5\] of layer3",
        ),
        (
            lambda sd, cfg: sd.update({"backbone.AdaD.1.conv.weight": torch.zeros(72, 256, 3, 3)}),
            "adablur",
        ),
        (
            lambda sd, cfg: sd.update({"backbone.AdaD.1.filt": torch.full((256, 1, 3, 3), 1 / 9)}),
            "blur_k > 1",
        ),
        (
            lambda sd, cfg: sd.update(
                {"backbone.layer2.0.att.channel_att.1.weight": torch.zeros(128, 128, 1, 1)}
            ),
            "older FreqMix variant",
        ),
        (
            lambda sd, cfg: sd.update({"neck.conv.weight": torch.zeros(1)}),
            "unexpected key 'neck.conv.weight'",
        ),
    ],
)
def test_checkpoint_or_config_mismatches_are_clear_errors(released_sd, edit, match):
    sd, cfg = dict(released_sd), load_config(AA_CFG)
    edit(sd, cfg)
    with pytest.raises(MMSegConversionError, match=match):
        convert_mmseg_checkpoint(_mmcv_file(sd), cfg)


def test_unused_and_unfilled_keys_are_reported_and_nothing_is_written(
    released_sd, tmp_path, capsys
):
    sd = dict(released_sd)
    sd["decode_head.conv_seg.extra"] = torch.zeros(1, dtype=torch.float64)
    del sd["decode_head.fpn_convs.1.bn.running_var"]
    _, report, _ = convert_mmseg_checkpoint(_mmcv_file(sd), load_config(AA_CFG))
    assert report.unused_keys == ["decode_head.conv_seg.extra"]
    assert report.unfilled_keys == ["sem_seg_head.decoder.fpn_convs.1.norm.running_var"]
    src, dst = str(tmp_path / "bad.pth"), str(tmp_path / "out.pth")
    torch.save(_mmcv_file(sd), src)
    assert convert_main([src, dst, "--format", "mmseg", "--config-file", AA_CFG]) == 1
    assert "nothing written" in capsys.readouterr().err and not os.path.exists(dst)


def test_meta_with_numpy_scalars_needs_unsafe_load(released_sd, tmp_path):
    obj = _mmcv_file({k: v for k, v in list(released_sd.items())[:3]})
    obj["meta"]["hook_msgs"] = {"best_score": np.float64(0.797)}
    path = str(tmp_path / "best_mIoU_iter_80000.pth")
    torch.save(obj, path)
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (this torch refuses NumPy scalars in safe mode)
        with pytest.raises(MMSegConversionError, match="--unsafe-load"):
            read_mmseg_checkpoint(path)
    assert read_mmseg_checkpoint(path, unsafe_load=True)["meta"]["hook_msgs"][
        "best_score"
    ] == pytest.approx(0.797)


def test_key_shapes_helper_matches_the_note_for_other_class_counts():
    shapes = released_key_shapes(num_classes=150)
    assert len(shapes) == 542 and shapes["decode_head.conv_seg.weight"] == (150, 128, 1, 1)
    assert sys.modules["reference_mmseg_upernet"].__file__.startswith(os.path.join(REPO, "tests"))


def test_imagenet_v1c_weights_fill_the_recipe_backbone(tmp_path):
    """The recipes' MODEL.WEIGHTS: resnet50_v1c-2cccc1ad.pth (mmcv names, fc.* included) converted
    with --format mmcv_v1c --prefix backbone. fills every backbone tensor but FreqMix (new, as
    released)."""

    sd = {
        k[len("backbone.") :]: v.float()
        for k, v in synthetic_mmseg_state_dict(seed=7, freqmix=False).items()
        if k.startswith("backbone.")
    }
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    src, dst = str(tmp_path / "resnet50_v1c.pth"), str(tmp_path / "resnet50_v1c_backbone.pkl")
    torch.save({"state_dict": sd}, src)
    convert_file(src, dst, "mmcv_v1c", prefix="backbone.")
    with open(dst, "rb") as f:
        converted = pickle.load(f)["model"]
    model = build_model(load_config(AA_CFG, ["MODEL.DEVICE", "cpu"]))
    DetectionCheckpointer(model).load(dst)
    state = model.state_dict()
    backbone = {
        k for k in state if k.startswith("backbone.") and not k.endswith("num_batches_tracked")
    }
    assert set(converted) == {k for k in backbone if ".freqmix." not in k}
    for k, v in converted.items():
        assert torch.equal(state[k], torch.as_tensor(v)), k
    assert torch.equal(state["backbone.stem.conv1.weight"], sd["stem.0.weight"])
    assert torch.equal(
        state["backbone.res4.0.conv2.norm.running_var"], sd["layer3.0.bn2.running_var"]
    )
