"""Aliasing score (RECONSTRUCTION): known answers and hooks on a Detectron2 ResNet-FPN."""

import csv
import json
import math
import os

import numpy as np
import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_backbone
from test_error_maps import SEMSEG_OPTS, load_tool, register_tiny_semseg

from segalias_d2.evaluation import (
    StageInputRecorder,
    aliasing_energy_maps,
    aliasing_score,
    regional_aliasing_score,
)


def _cos(h, w, fx, fy=0.0):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.cos(2 * np.pi * (fx * xx + fy * yy))


def test_pure_tones():
    low = _cos(32, 32, 4 / 32)  # 0.125 cycles/px < 0.25
    high = _cos(32, 32, 12 / 32)  # 0.375 cycles/px > 0.25
    assert aliasing_score(low[None]) == pytest.approx(0.0, abs=1e-9)
    assert aliasing_score(high[None]) == pytest.approx(1.0, abs=1e-9)
    # equal-amplitude mix: half the energy above Nyquist; diagonal tone high in one axis only
    assert aliasing_score((low + high)[None]) == pytest.approx(0.5, abs=1e-9)
    assert aliasing_score(_cos(32, 32, 2 / 32, 10 / 32)[None]) == pytest.approx(1.0, abs=1e-9)
    # exactly at Nyquist counts as low (strict >)
    assert aliasing_score(_cos(32, 32, 8 / 32)[None]) == pytest.approx(0.0, abs=1e-9)


def test_channel_mean_and_zero_channel():
    x = np.stack([_cos(16, 16, 2 / 16), _cos(16, 16, 6 / 16), np.zeros((16, 16))])
    per = aliasing_score(x, reduce="none")
    assert per[0] == pytest.approx(0) and per[1] == pytest.approx(1) and math.isnan(float(per[2]))
    assert aliasing_score(x) == pytest.approx(0.5)
    # a white-noise map: expected share of bins above Nyquist in the L-inf box = 1 - (17/32)^2
    rng = np.random.default_rng(0)
    s = aliasing_score(torch.tensor(rng.standard_normal((64, 32, 32))))
    assert s == pytest.approx(1 - (17 / 32) ** 2, abs=0.02)


def test_regional_scores_parseval():
    x = np.stack([_cos(32, 32, 4 / 32) + 0.5 * _cos(32, 32, 12 / 32)])
    hi, tot = aliasing_energy_maps(x)
    whole = regional_aliasing_score(hi, tot)
    assert whole == pytest.approx(aliasing_score(x), abs=1e-6)
    left = np.zeros((64, 64), bool)
    left[:, :32] = True  # resized to 32x32 internally
    assert 0 <= regional_aliasing_score(hi, tot, left) <= 1


def test_stage_input_recorder_on_fpn_backbone():

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    bb = build_backbone(cfg).eval()

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = bb

    model = M()
    with StageInputRecorder(model) as rec:
        with torch.no_grad():
            bb(torch.rand(1, 3, 64, 96))
    assert rec.input_strides == {"res3": 4, "res4": 8, "res5": 16}
    assert rec.features["res3"][0].shape[-2:] == (16, 24)
    assert rec.features["res5"][0].shape[-2:] == (4, 6)
    # hooks removed after the context
    with torch.no_grad():
        bb(torch.rand(1, 3, 64, 96))
    assert len(rec.features["res4"]) == 1
    with pytest.raises(AttributeError, match="res9"):
        StageInputRecorder(model, stages=("res9",))


def test_analyze_aliasing_tool(tmp_path):

    name = f"_segalias_alias_{os.getpid()}"
    register_tiny_semseg(tmp_path, name, n=3)
    try:
        tool = load_tool("analyze_aliasing")
        cfg_file = model_zoo.get_config_file("Misc/semantic_R_50_FPN_1x.yaml")
        out = tmp_path / "al"
        args = tool.get_parser().parse_args(
            ["--config-file", cfg_file, "--dataset", name, "--output", str(out)] + SEMSEG_OPTS
        )
        summary = tool.main(args)
        assert set(summary["stages"]) == {"res3", "res4", "res5"}
        text = (out / "aliasing_per_image.csv").read_text()
        assert text.startswith("# aliasing score = RECONSTRUCTION")
        rows = list(csv.DictReader(text.splitlines()[1:]))
        assert len(rows) == 9
        assert all(0.0 <= float(r["AS"]) <= 1.0 for r in rows)
        assert {r["input_stride"] for r in rows} == {"4", "8", "16"}
        assert (out / "aliasing_vs_errors.png").exists() and (
            out / "aliasing_band_vs_interior.png"
        ).exists()
        assert "RECONSTRUCTION" in json.loads((out / "aliasing_summary.json").read_text())["note"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_analyze_aliasing_nyquist_flag(tmp_path):
    """The Nyquist frequency is the tool flag --nyquist (formerly
    TEST.SEGALIAS.ALIASING_NYQUIST)."""

    name = f"_segalias_alias_nyq_{os.getpid()}"
    register_tiny_semseg(tmp_path, name, n=1)
    try:
        tool = load_tool("analyze_aliasing")
        cfg_file = model_zoo.get_config_file("Misc/semantic_R_50_FPN_1x.yaml")
        base = ["--config-file", cfg_file, "--dataset", name, "--output", str(tmp_path / "al")]
        assert tool.get_parser().parse_args(base).nyquist == 0.25
        for bad in ("0", "0.7"):
            with pytest.raises(SystemExit):
                tool.get_parser().parse_args(base + ["--nyquist", bad])
        summary = tool.main(
            tool.get_parser().parse_args(
                base + ["--nyquist", "0.125", "--stages", "res4"] + SEMSEG_OPTS
            )
        )
        assert summary["nyquist"] == 0.125
        assert (
            "nyquist=0.125"
            in (tmp_path / "al" / "aliasing_per_image.csv").read_text().splitlines()[0]
        )
        assert (
            json.loads((tmp_path / "al" / "aliasing_summary.json").read_text())["nyquist"] == 0.125
        )
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
