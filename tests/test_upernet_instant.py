"""UPerNet through tools/train_net.py on the Cityscapes-layout demo: the instant schedule trains
(losses of both heads), evaluates with the boundary-error evaluator under sliding-window inference,
and --eval-only on its model_final.pth reproduces those metrics exactly."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
UPERNET_CFG = os.path.join(REPO, "configs/quick_schedules/upernet_R_50_AA_instant_test.yaml")


def _run(args, env):
    out = subprocess.run(
        [sys.executable, TRAIN_NET] + args, capture_output=True, text=True, env=env, cwd=REPO
    )
    if out.returncode != 0:
        raise AssertionError(
            f"train_net.py {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
        )
    return out.stdout + out.stderr


def _results(out_dir):
    with open(os.path.join(out_dir, "eval_results.json")) as f:
        return json.load(f)["cityscapes_demo_sem_seg_val"]


@pytest.fixture(scope="module")
def env(demo_datasets):  # tests/conftest.py
    return dict(
        os.environ,
        DETECTRON2_DATASETS=demo_datasets["root"],
        PYTHONWARNINGS="ignore",
        OMP_NUM_THREADS="2",
    )


def test_upernet_instant_schedule_trains_evaluates_and_eval_only_reproduces(env, tmp_path):
    out = str(tmp_path / "train")
    log = _run(["--config-file", UPERNET_CFG, "OUTPUT_DIR", out, "SOLVER.MAX_ITER", "1"], env)
    assert "loss_sem_seg_aux" in log and "loss_sem_seg" in log  # both heads train
    trained = _results(out)["boundary_errors"]
    for key in ("mIoU", "BIoU", "BAcc", "FErr", "MErr", "DErr"):
        assert 0.0 <= trained[key] <= 100.0
    evaluated = str(tmp_path / "eval")
    _run(
        [
            "--config-file",
            UPERNET_CFG,
            "--eval-only",
            "OUTPUT_DIR",
            evaluated,
            "MODEL.WEIGHTS",
            os.path.join(out, "model_final.pth"),
        ],
        env,
    )
    assert _results(evaluated)["boundary_errors"] == trained
