"""tools/train_net.py as users run it: every config builds, instant schedules train and evaluate,
--eval-only reproduces the end-of-training metrics, --resume equals an uninterrupted run, a
2-process CPU (GLOO) run gathers evaluation from both processes, and setup errors are one line."""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from segalias_d2.engine import Trainer, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
INSTANCE_CFG = os.path.join(REPO, "configs/quick_schedules/mask_rcnn_R_50_AAFPN_instant_test.yaml")
SEMANTIC_CFG = os.path.join(REPO, "configs/quick_schedules/semantic_R_50_AAFPN_instant_test.yaml")
# tiny and fast; score threshold 0 so that even a barely trained model makes predictions to score
FAST = [
    "SOLVER.MAX_ITER",
    "4",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.0",
]


@pytest.fixture(scope="module")
def demo_env(demo_datasets):  # demo_datasets: tests/conftest.py
    paths = demo_datasets
    env = dict(
        os.environ, DETECTRON2_DATASETS=paths["root"], PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2"
    )
    return env


def _run(args, env, check=True):
    out = subprocess.run(
        [sys.executable, TRAIN_NET] + args, capture_output=True, text=True, env=env, cwd=REPO
    )
    if check and out.returncode != 0:
        raise AssertionError(
            f"train_net.py {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
        )
    return out


def _results(out_dir):
    with open(os.path.join(out_dir, "eval_results.json")) as f:
        return json.load(f)


def _all_configs():
    return sorted(
        p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    )


@pytest.mark.parametrize(
    "config", _all_configs(), ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs"))
)
def test_every_config_loads_and_builds_on_cpu(config):
    cfg = load_config(config)
    assert cfg.VERSION == 2
    with open(config) as f:
        bases = [line for line in f if line.startswith("_BASE_")]
    assert len(bases) <= 1 and (bases or os.path.basename(config) == "Base-SegAlias-RCNN-FPN.yaml")
    cfg.MODEL.DEVICE = "cpu"
    model = Trainer.build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 1_000_000
    has_freqmix = any(".freqmix." in n for n, _ in model.named_parameters())
    assert has_freqmix == bool(cfg.MODEL.SEGALIAS.FREQMIX.ENABLED)


def test_instance_instant_schedule_trains_evaluates_and_eval_only_reproduces(demo_env, tmp_path):
    out = str(tmp_path / "train")
    _run(["--config-file", INSTANCE_CFG, "OUTPUT_DIR", out] + FAST, demo_env)
    trained = _results(out)["lis_demo_raw_dark_test"]
    assert {"bbox", "segm", "boundary_ap", "boundary_errors"} <= set(trained)
    for key in ("BIoU", "BAcc", "FErr", "MErr", "DErr", "mIoU"):
        assert key in trained["boundary_errors"]
    evaluated = str(tmp_path / "eval")
    _run(
        [
            "--config-file",
            INSTANCE_CFG,
            "--eval-only",
            "OUTPUT_DIR",
            evaluated,
            "MODEL.WEIGHTS",
            os.path.join(out, "model_final.pth"),
        ]
        + FAST,
        demo_env,
    )
    assert _results(evaluated)["lis_demo_raw_dark_test"] == trained


def test_semantic_instant_schedule_trains_and_evaluates_with_sliding_window(demo_env, tmp_path):
    out = str(tmp_path / "sem")
    _run(["--config-file", SEMANTIC_CFG, "OUTPUT_DIR", out, "SOLVER.MAX_ITER", "3"], demo_env)
    res = _results(out)["cityscapes_demo_sem_seg_val"]["boundary_errors"]
    for key in ("mIoU", "BIoU", "BAcc", "FErr", "MErr", "DErr"):
        assert key in res
    assert 0.0 <= res["mIoU"] <= 100.0


def _checkpoint_state(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    trainer = ckpt.get("trainer", ckpt)
    optimizer = trainer.get("_trainer", trainer).get("optimizer") or ckpt.get("optimizer")
    return ckpt["model"], optimizer, trainer


def test_interrupt_and_resume_equals_uninterrupted(demo_env, tmp_path):
    out = str(tmp_path / "run")
    args = ["--config-file", INSTANCE_CFG, "OUTPUT_DIR", out, "DATASETS.TEST", "()"] + FAST
    _run(args, demo_env)
    straight = os.path.join(str(tmp_path), "straight_final.pth")
    shutil.copy(os.path.join(out, "model_final.pth"), straight)
    # "interrupt" after iteration 2: continue from its checkpoint as if the process had died there
    with open(os.path.join(out, "last_checkpoint"), "w") as f:
        f.write("model_0000001.pth")
    os.remove(os.path.join(out, "model_final.pth"))
    proc = _run(["--resume"] + args, demo_env)
    assert "Starting training from iteration 2" in proc.stdout + proc.stderr
    model_a, optim_a, _ = _checkpoint_state(straight)
    model_b, optim_b, trainer_b = _checkpoint_state(os.path.join(out, "model_final.pth"))
    assert trainer_b["iteration"] == 3
    assert model_a.keys() == model_b.keys()
    for k in model_a:
        assert torch.equal(torch.as_tensor(model_a[k]), torch.as_tensor(model_b[k])), k
    assert optim_a["param_groups"] == optim_b["param_groups"]
    assert optim_a["state"].keys() == optim_b["state"].keys() and optim_a["state"]
    for k in optim_a["state"]:
        assert torch.equal(
            optim_a["state"][k]["momentum_buffer"], optim_b["state"][k]["momentum_buffer"]
        )


def test_two_process_cpu_gloo_run_gathers_evaluation(demo_env, tmp_path):
    out = str(tmp_path / "ddp")
    proc = _run(
        [
            "--config-file",
            INSTANCE_CFG,
            "--num-gpus",
            "2",
            "OUTPUT_DIR",
            out,
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            "0.0",
        ],
        demo_env,
    )
    log = proc.stdout + proc.stderr
    assert "on 2 devices" in log  # inference_on_dataset ran on both ranks
    with open(
        os.path.join(out, "inference", "lis_demo_raw_dark_test", "coco_instances_results.json")
    ) as f:
        predictions = json.load(f)
    from detectron2.data import DatasetCatalog

    with open(
        glob.glob(
            os.path.join(
                demo_env["DETECTRON2_DATASETS"],
                "lis_demo",
                "annotations",
                "lis_coco_png_test+1.json",
            )
        )[0]
    ) as f:
        test_ids = {im["id"] for im in json.load(f)["images"]}
    assert len(test_ids) >= 2  # so that both ranks had images to predict
    assert {p["image_id"] for p in predictions} == test_ids  # gathered from both processes
    assert "lis_demo_raw_dark_test" in _results(out)
    del DatasetCatalog


@pytest.mark.parametrize(
    "extra, message",
    [
        (["MODEL.NO_SUCH_KEY", "1"], "command-line override: Non-existent key: MODEL.NO_SUCH_KEY"),
        (
            ["MODEL.WEIGHTS", "/nonexistent/weights.pth"],
            "MODEL.WEIGHTS file not found: /nonexistent/weights.pth",
        ),
        (
            ["DATASETS.TRAIN", "('lis_demo_raw_drak_train',)"],
            "unknown dataset 'lis_demo_raw_drak_train' in DATASETS.TRAIN; did you mean "
            "lis_demo_raw_dark_train",
        ),
    ],
    ids=["config-key", "weights", "dataset"],
)
def test_setup_errors_are_one_clear_line_before_any_work(demo_env, tmp_path, extra, message):
    out = str(tmp_path / "err")
    proc = _run(["--config-file", INSTANCE_CFG, "OUTPUT_DIR", out] + extra, demo_env, check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert (
        len(lines) == 1 and lines[0].startswith("train_net.py: error: ") and message in lines[0]
    ), proc.stderr
    assert "Traceback" not in proc.stderr and not os.path.exists(out)  # nothing started


def test_wrong_key_in_config_file_is_one_line(demo_env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{INSTANCE_CFG}"\nMODEL:\n  SEGALIAS:\n    DAF:\n      CUTOF: 0.3\n')
    proc = _run(["--config-file", str(bad)], demo_env, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1
    assert "Non-existent config key: MODEL.SEGALIAS.DAF.CUTOF" in lines[0] and str(bad) in lines[0]
