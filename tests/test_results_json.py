"""Result files are strict JSON: a metric that was not measured is null, never a bare NaN."""

import json
import math

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from segalias_d2.engine import write_results_json
from segalias_d2.evaluation import (
    BoundaryErrorSemSegEvaluator,
    BoundaryIoUEvaluator,
    dump_json,
    to_strict_json,
)


def _strict_load(text):
    def refuse(name):
        raise AssertionError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_to_strict_json_replaces_not_measured_values():
    obj = {
        "a": float("nan"),
        "b": [1.5, float("inf"), (np.float32("nan"), np.int64(3))],
        "c": {"d": np.array([0.25, np.nan]), "e": None, "f": "x", "g": True},
    }
    assert to_strict_json(obj) == {
        "a": None,
        "b": [1.5, None, [None, 3]],
        "c": {"d": [0.25, None], "e": None, "f": "x", "g": True},
    }
    assert (
        type(to_strict_json(np.int64(3))) is int and type(to_strict_json(np.float32(0.5))) is float
    )
    assert math.isnan(obj["a"])  # the input is not changed


def test_dump_json_and_results_file(tmp_path):
    p = tmp_path / "eval_results.json"
    write_results_json({"ds": {"segm": {"AP": float("nan"), "AP50": 12.5}}}, str(p))
    assert _strict_load(p.read_text()) == {"ds": {"segm": {"AP": None, "AP50": 12.5}}}
    with open(tmp_path / "x.json", "w") as f, pytest.raises(TypeError):
        dump_json({"bad": object()}, f)


def test_sem_seg_result_files_write_null_for_an_absent_class(tmp_path):
    name = "_segalias_strict_json_semseg"
    gt = np.zeros((20, 30), np.uint8)
    gt[:, 15:] = 1  # class 2 is absent from the ground truth: its accuracies are not defined
    Image.fromarray(gt).save(tmp_path / "gt.png")
    rec = {
        "file_name": "im.png",
        "sem_seg_file_name": str(tmp_path / "gt.png"),
        "height": 20,
        "width": 30,
    }
    DatasetCatalog.register(name, lambda: [rec])
    MetadataCatalog.get(name).set(
        stuff_classes=["a", "b", "c"], ignore_label=255, evaluator_type="sem_seg"
    )
    try:
        scores = (
            torch.nn.functional.one_hot(torch.as_tensor(gt, dtype=torch.long), 3)
            .permute(2, 0, 1)
            .float()
        )
        for ev, fname, key in (
            (
                BoundaryErrorSemSegEvaluator(name, False, str(tmp_path)),
                "boundary_errors_sem_seg.json",
                "Acc-c",
            ),
            (
                BoundaryIoUEvaluator(name, False, str(tmp_path)),
                "boundary_iou_sem_seg.json",
                "BoundaryIoU-c",
            ),
        ):
            ev.reset()
            ev.process([rec], [{"sem_seg": scores}])
            res = next(iter(ev.evaluate().values()))
            assert math.isnan(res[key])
            written = _strict_load((tmp_path / fname).read_text())["metrics"]
            assert written[key] is None and set(written) == set(res)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
