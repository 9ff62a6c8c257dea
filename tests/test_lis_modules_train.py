"""The instant schedule with all five modules (AWD + SCB + DSL + DAF + FreqMix) trains and evaluates
on the demo data through tools/train_net.py, logs the DSL losses, and its checkpoint folds
(tools/fold_scb.py) into a plain model that predicts what the trained model predicts."""

import importlib.util
import json
import os
import subprocess
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from segalias_d2.data import LowLightDatasetMapper
from segalias_d2.engine import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(REPO, "configs/quick_schedules/mask_rcnn_R_50_lis_modules_instant_test.yaml")


def test_all_five_modules_train_evaluate_and_fold(demo_datasets, tmp_path):
    out = str(tmp_path / "run")
    env = dict(
        os.environ,
        DETECTRON2_DATASETS=demo_datasets["root"],
        PYTHONWARNINGS="ignore",
        OMP_NUM_THREADS="2",
    )
    args = [
        "--config-file",
        CFG,
        "OUTPUT_DIR",
        out,
        "SOLVER.MAX_ITER",
        "2",
        "SOLVER.CHECKPOINT_PERIOD",
        "100",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
        "TEST.DETECTIONS_PER_IMAGE",
        "20",
    ]
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "train_net.py")] + args,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    train = [r for r in rows if "total_loss" in r][-1]
    for key in (
        "loss_cls",
        "clean_loss_cls",
        "clean_loss_mask",
        "loss_dsl",
        "dsl/res2",
        "dsl/res5",
    ):
        assert key in train, key
    assert (
        0 < train["loss_dsl"] <= 4 * 0.01 * 0.1
    )  # each level's clamped mean is at most 0.1, times 0.01
    with open(os.path.join(out, "eval_results.json")) as f:
        results = json.load(f)["lis_demo_raw_dark_test"]
    assert {"bbox", "segm", "boundary_errors"} <= set(results)

    # deployment: fold the trained checkpoint, load it with SCB off, same predictions
    spec = importlib.util.spec_from_file_location(
        "fold_scb_tool", os.path.join(REPO, "tools", "fold_scb.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    folded_path = os.path.join(out, "model_final_scb_folded.pth")
    assert tool.main([os.path.join(out, "model_final.pth"), folded_path]) == 0
    opts = [
        "MODEL.DEVICE",
        "cpu",
        "TEST.DETECTIONS_PER_IMAGE",
        "20",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
    ]
    trained_cfg = load_config(CFG, opts)
    folded_cfg = load_config(CFG, opts + ["MODEL.SEGALIAS.SCB.ENABLED", "False"])
    trained, folded = build_model(trained_cfg).eval(), build_model(folded_cfg).eval()
    DetectionCheckpointer(trained).load(os.path.join(out, "model_final.pth"))
    DetectionCheckpointer(folded).load(folded_path)
    assert not any(".scb." in k for k in folded.state_dict())
    record = DatasetCatalog.get("lis_demo_raw_dark_test")[0]
    inputs = [LowLightDatasetMapper(trained_cfg, is_train=False)(record)]
    with torch.no_grad():
        a, b = trained(inputs)[0]["instances"], folded(inputs)[0]["instances"]
    assert len(a) == len(b) > 0
    assert torch.allclose(a.scores, b.scores, atol=1e-5)
    assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3)
