"""Set-up faults refused before any work (issue 16.2/16.3): class count vs the dataset, numeric
options, weights that match nothing (--eval-only), and an OUTPUT_DIR used by a live run (lock file).
In-process, one line each."""

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys

import pytest
import torch

from segalias_d2.engine import (
    OutputDirInUseError,
    OutputDirLock,
    SegAliasSetupError,
    check_num_classes,
    load_config,
)
from segalias_d2.engine.validation import check_numeric_options, weights_match_policy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANCE_CFG = os.path.join(REPO, "configs/quick_schedules/mask_rcnn_R_50_AAFPN_instant_test.yaml")
SEMANTIC_CFG = os.path.join(REPO, "configs/quick_schedules/semantic_R_50_AAFPN_instant_test.yaml")


def _train_net():
    spec = importlib.util.spec_from_file_location(
        "train_net_under_test", os.path.join(REPO, "tools", "train_net.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _one_line_error(capsys, argv, before_setup=True):
    """The error line of train_net.py; before set-up it is the only output (later, Detectron2's log
    precedes it)."""
    try:
        with pytest.raises(SystemExit) as e:
            _train_net().invoke_main(argv)
    finally:
        # Detectron2's set-up logging (once per process) would keep writing to the closed capsys
        # streams
        for lg in [logging.getLogger()] + [
            logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
        ]:
            for h in list(getattr(lg, "handlers", [])):
                if getattr(h, "stream", None) in (sys.stdout, sys.stderr):
                    lg.removeHandler(h)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2 and err and err[-1].startswith("train_net.py: error: "), err
    assert len(err) == 1 or not before_setup, err
    assert not any("Traceback" in line for line in err), err
    return err[-1][len("train_net.py: error: ") :]


def test_instance_class_count_other_than_the_dataset_is_refused():
    cfg = load_config(INSTANCE_CFG, ["MODEL.ROI_HEADS.NUM_CLASSES", "5"])
    with pytest.raises(SegAliasSetupError) as e:
        check_num_classes(cfg, train=True)
    assert str(e.value) == (
        "MODEL.ROI_HEADS.NUM_CLASSES is 5 but dataset 'lis_demo_raw_dark_train' (DATASETS.TRAIN) "
        "has 8 thing_classes (bicycle, car, motorbike, bus, bottle, ...); "
        "set MODEL.ROI_HEADS.NUM_CLASSES 8"
    )
    check_num_classes(load_config(INSTANCE_CFG), train=True)  # the recipe itself passes


def test_semantic_class_count_is_checked_against_stuff_classes_of_the_test_set():
    cfg = load_config(SEMANTIC_CFG, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "18"])
    with pytest.raises(
        SegAliasSetupError,
        match=r"MODEL.SEM_SEG_HEAD.NUM_CLASSES is 18 but dataset "
        r"'cityscapes_demo_sem_seg_val' \(DATASETS.TEST\) has 19 stuff_classes",
    ):
        check_num_classes(cfg, train=False)


def test_class_count_error_stops_train_net_before_output_dir_exists(capsys, tmp_path):
    out = tmp_path / "never"
    msg = _one_line_error(
        capsys,
        [
            "--config-file",
            INSTANCE_CFG,
            "OUTPUT_DIR",
            str(out),
            "MODEL.ROI_HEADS.NUM_CLASSES",
            "80",
        ],
    )
    assert msg.startswith("MODEL.ROI_HEADS.NUM_CLASSES is 80 but dataset 'lis_demo_raw_dark_train'")
    assert not out.exists()  # no eval_results.json, no log: nothing started


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "EXPOSURE_RATIO",
            float("nan"),
            "INPUT.SEGALIAS.EXPOSURE_RATIO must be a finite number >= 0 (0 = none), got nan",
        ),
        (
            "EXPOSURE_RATIO",
            -4.0,
            "INPUT.SEGALIAS.EXPOSURE_RATIO must be a finite number >= 0 (0 = none), got -4.0",
        ),
        (
            "EXPOSURE_RATIO",
            float("inf"),
            "INPUT.SEGALIAS.EXPOSURE_RATIO must be a finite number >= 0 (0 = none), got inf",
        ),
        ("PIXEL_SCALE", 0.0, "INPUT.SEGALIAS.PIXEL_SCALE must be a finite number > 0, got 0.0"),
        (
            "RATIO_RANGE",
            (100.0, 10.0),
            "INPUT.SEGALIAS.SYNTHESIS.RATIO_RANGE must be (low, high) with low <= high, got "
            "(100.0, 10.0)",
        ),
        (
            "RATIO_RANGE",
            (0.0, 10.0),
            "INPUT.SEGALIAS.SYNTHESIS.RATIO_RANGE must be a finite number > 0, got 0.0",
        ),
    ],
    ids=[
        "ratio-nan",
        "ratio-negative",
        "ratio-inf",
        "pixel-scale-zero",
        "range-reversed",
        "range-zero",
    ],
)
def test_numeric_options_are_refused_at_set_up(key, value, message):
    cfg = load_config(INSTANCE_CFG)
    check_numeric_options(cfg)  # the recipe's values pass
    node = cfg.INPUT.SEGALIAS.SYNTHESIS if key == "RATIO_RANGE" else cfg.INPUT.SEGALIAS
    node[key] = value  # (a YAML file can hold .nan / .inf; yacs' command line cannot)
    with pytest.raises(SegAliasSetupError) as e:
        check_numeric_options(cfg)
    assert str(e.value) == message


def test_a_negative_exposure_ratio_on_the_command_line_stops_train_net(capsys, tmp_path):
    msg = _one_line_error(
        capsys,
        [
            "--config-file",
            INSTANCE_CFG,
            "OUTPUT_DIR",
            str(tmp_path / "x"),
            "INPUT.SEGALIAS.EXPOSURE_RATIO",
            "-1.0",
        ],
    )
    assert msg == "INPUT.SEGALIAS.EXPOSURE_RATIO must be a finite number >= 0 (0 = none), got -1.0"


def test_weights_policy_training_measures_the_backbone_evaluation_the_whole_model():
    cfg = load_config(INSTANCE_CFG)
    train, evaluate = weights_match_policy(cfg, False), weights_match_policy(cfg, True)
    assert (train.scope, train.min_fraction, evaluate.scope, evaluate.min_fraction) == (
        "backbone.bottom_up.",
        0.5,
        "",
        0.9,
    )
    assert weights_match_policy(
        load_config(INSTANCE_CFG, ["MODEL.SEGALIAS.ALLOW_PARTIAL_WEIGHTS", "True"]), True
    ).allow_partial


@pytest.mark.parametrize("kind", ["matching-nothing", "text-file"])
def test_eval_only_with_unusable_weights_is_refused_and_writes_no_results(capsys, tmp_path, kind):
    weights = tmp_path / "weights.pth"
    if kind == "text-file":
        weights.write_text(
            "version https://git-lfs.github.com/spec/v1\n"
        )  # an LFS pointer, not the weights
    else:
        torch.save({"model": {"encoder.layer1.weight": torch.zeros(3, 3)}}, weights)
    out = tmp_path / "eval"
    msg = _one_line_error(
        capsys,
        [
            "--config-file",
            INSTANCE_CFG,
            "--eval-only",
            "OUTPUT_DIR",
            str(out),
            "MODEL.WEIGHTS",
            str(weights),
        ],
        before_setup=False,
    )
    if kind == "text-file":
        assert (
            msg.startswith(f"cannot read checkpoint {weights}: UnpicklingError")
            and "weights_only" not in msg
        )
    else:
        assert msg.startswith(
            f"MODEL.WEIGHTS {weights}: filled 0 of 490 of the model's tensors (0%; at least 90% "
            "expected): no tensor name/shape matches this model"
        ), msg
    assert not (out / "eval_results.json").exists() and not (out / "run.lock").exists()


def test_allow_partial_weights_flag_sets_the_config_key():
    tn = _train_net()
    args = tn.parse_args(
        [
            "--config-file",
            INSTANCE_CFG,
            "--eval-only",
            "--allow-partial-weights",
            "--force-output-dir",
        ]
    )
    assert args.force_output_dir and weights_match_policy(tn.check_setup(args), True).allow_partial
    assert not weights_match_policy(
        tn.check_setup(tn.parse_args(["--config-file", INSTANCE_CFG])), True
    ).allow_partial


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(out, pid, host=None):
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.lock").write_text(
        json.dumps(
            {"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01T00:00:00"}
        )
    )


def test_output_dir_of_a_live_run_is_refused_naming_it(tmp_path, capsys):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path, other.pid)
        with pytest.raises(OutputDirInUseError) as e:
            OutputDirLock(str(tmp_path)).acquire()
        assert str(e.value) == (
            f"OUTPUT_DIR {tmp_path} is in use by PID {other.pid} on host {socket.gethostname()} "
            f"since 2026-01-01T00:00:00 (lock file {tmp_path / 'run.lock'}); use another "
            "OUTPUT_DIR, wait for that run, or pass --force-output-dir"
        )
        msg = _one_line_error(capsys, ["--config-file", INSTANCE_CFG, "OUTPUT_DIR", str(tmp_path)])
        assert msg == str(e.value)
        assert sorted(os.listdir(tmp_path)) == [
            "run.lock"
        ]  # no log.txt / config.yaml of a second run
        lock = OutputDirLock(str(tmp_path), force=True).acquire()  # --force-output-dir
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
        lock.release()
        assert not (tmp_path / "run.lock").exists()
    finally:
        other.kill()
        other.wait()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    pid = _dead_pid()
    _write_lock(tmp_path, pid)
    with caplog.at_level(logging.WARNING):
        with OutputDirLock(str(tmp_path)):
            owner = json.loads((tmp_path / "run.lock").read_text())
            assert (owner["pid"], owner["host"]) == (os.getpid(), socket.gethostname())
    assert not (tmp_path / "run.lock").exists()
    assert [r.getMessage() for r in caplog.records] == [
        f"OUTPUT_DIR {tmp_path}: taking over the stale lock of PID {pid} on {socket.gethostname()} "
        "(that process is gone)"
    ]


def test_lock_of_another_host_is_honoured(tmp_path):
    _write_lock(tmp_path, _dead_pid(), host="some-other-node")
    with pytest.raises(OutputDirInUseError, match="on host some-other-node"):
        OutputDirLock(str(tmp_path)).acquire()
