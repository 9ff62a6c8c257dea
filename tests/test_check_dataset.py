"""tools/check_dataset.py (segalias_d2.data.image_checks.check_dataset) on the real demo data: every
image decoded as the mapper reads it; a broken copy of the LIS RAW-dark demo lists each bad file
with its reason, exit code 1."""

import json
import logging
import shutil

import cv2
import numpy as np
import pytest
from common import register_lis_json
from detectron2.data import DatasetCatalog, MetadataCatalog
from predict_helpers import REPO, load_tool  # tests/predict_helpers.py: tools/<name>.py as a module

import segalias_d2  # noqa: F401
from segalias_d2.data import register_lowlight_dataset
from segalias_d2.data.image_checks import _progress, check_dataset
from segalias_d2.data.raw_io import ImageReadError


@pytest.fixture(scope="module")
def broken_copy(demo_datasets, tmp_path_factory):
    """The LIS RAW-dark demo train split (6 images, 16-bit raw-RGB PNGs), copied; then 4.png
    deleted, 6.png cut short, 8.png replaced by an 8-bit file (registered raw_rgb: fine) of another
    size, 10.png made a directory."""
    root = tmp_path_factory.mktemp("broken_lis")
    shutil.copytree(f"{demo_datasets['lis_demo']}/RAW-dark", root / "RAW-dark")
    shutil.copy(
        f"{demo_datasets['lis_demo']}/annotations/lis_coco_png_train+1.json", root / "ann.json"
    )
    images = root / "RAW-dark" / "JPEGImages"
    (images / "4.png").unlink()
    data = (images / "6.png").read_bytes()
    (images / "6.png").write_bytes(data[: len(data) // 3])
    cv2.imwrite(str(images / "8.png"), np.full((100, 100, 3), 50, np.uint8))
    (images / "10.png").unlink()
    (images / "10.png").mkdir()
    name = "broken_lis_demo_raw_dark"
    register_lis_json(name, root / "ann.json", root / "RAW-dark", "raw_rgb")
    return name, root


def test_intact_demo_datasets_pass(demo_datasets, capsys):
    rc = load_tool("check_dataset").main(
        [
            "--dataset",
            "lis_demo_raw_dark_test",
            "--dataset",
            "lis_demo_raw_dark_packed_test",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "dataset 'lis_demo_raw_dark_test': 3 ok, 0 bad" in out
    assert "dataset 'lis_demo_raw_dark_packed_test': 3 ok, 0 bad" in out


def test_datasets_of_a_config(demo_datasets, capsys):
    cfg = f"{REPO}/configs/LIS-InstanceSegmentation/mask_rcnn_R_50_AAFPN_demo_raw_dark.yaml"
    rc = load_tool("check_dataset").main(["--config-file", cfg, "--no-progress"])
    out = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("dataset ")
    ]  # not the log
    assert rc == 0  # DATASETS.TRAIN then TEST
    assert out == [
        "dataset 'lis_demo_raw_dark_train': 6 ok, 0 bad",
        "dataset 'lis_demo_raw_dark_test': 3 ok, 0 bad",
    ]


def test_broken_copy_lists_every_bad_file(broken_copy, capsys):
    name, _ = broken_copy
    rc = load_tool("check_dataset").main(["--dataset", name, "--no-progress", "--workers", "2"])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"dataset '{name}': 2 ok, 4 bad" in out
    bad = {
        line.split(": ", 1)[0].strip().rsplit("/", 1)[-1]: line
        for line in out.splitlines()
        if line.startswith("  /")
    }  # the listed files (not log lines)
    assert sorted(bad) == ["10.png", "4.png", "6.png", "8.png"]
    assert "4.png' does not exist" in bad["4.png"]
    assert "10.png' is a directory, not an image file" in bad["10.png"]
    assert "ImageReadError: cannot decode image file" in bad["6.png"]
    assert "(corrupt, truncated or not an image)" in bad["6.png"]
    assert "8.png' declares 474x320 (width x height) but the file is 100x100" in bad["8.png"]


def test_broken_copy_at_load_and_through_the_function(broken_copy):
    name, _ = broken_copy

    with pytest.raises(
        ImageReadError, match=r"1 of 6 images are missing: image id=3: .*4.png' does not exist"
    ):
        DatasetCatalog.get(
            name
        )  # the load itself stops at the first kind of problem (the check lists all)
    result = check_dataset(name, progress=False, workers=1)
    assert (result.ok, result.total, len(result.failures)) == (False, 6, 4)
    assert result.summary(listed=2).endswith("  ... and 2 more")


def test_bad_annotation_is_reported_as_a_load_error(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "1.png"), np.full((40, 60, 3), 90, np.uint8))
    data = {
        "images": [
            {"id": 0, "file_name": "1.png", "height": 40, "width": 60},
            {"id": 0, "file_name": "2.png", "height": 40, "width": 60},
        ],
        "annotations": [],
        "categories": [{"id": 0, "name": "car"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    if "dup_ids_check" in DatasetCatalog.list():
        DatasetCatalog.remove("dup_ids_check")
        MetadataCatalog.remove("dup_ids_check")
    register_lowlight_dataset("dup_ids_check", str(tmp_path / "ann.json"), str(tmp_path))
    rc = load_tool("check_dataset").main(["--dataset", "dup_ids_check", "--no-progress"])
    assert rc == 1
    assert "dataset 'dup_ids_check': cannot be loaded: AnnotationError: " in capsys.readouterr().out


def test_unknown_dataset_is_a_setup_error(capsys):
    rc = load_tool("check_dataset").main(["--dataset", "lis_demo_raw_dark_trian"])
    assert rc == 2
    assert (
        "check_dataset.py: error: unknown dataset 'lis_demo_raw_dark_trian'; did you mean "
        "lis_demo_raw_dark_train" in capsys.readouterr().err
    )


def test_progress_without_tqdm_logs_detectron2_style(monkeypatch, caplog):
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)  # import tqdm -> ImportError
    step, close = _progress(20, True)
    with caplog.at_level(logging.INFO, logger="segalias_d2.data.image_checks"):
        for _ in range(20):
            step(1)
    close()
    lines = [r.getMessage() for r in caplog.records]
    assert (
        len(lines) == 10
        and lines[0].startswith("checked 2/20 images")
        and lines[-1].startswith("checked 20/20")
    )
