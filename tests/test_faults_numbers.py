"""Numbers never poison results silently (issue 16.4): NaN logits refused by the semantic
evaluators, non-finite model inputs refused naming the file, metrics over no valid pixel reported as
not measured (warning, null in the JSON), metrics.json strict."""

import json
import logging
import math
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import HookBase
from detectron2.utils.events import EventStorage, JSONWriter
from PIL import Image
from test_faults_checkpoint import _tiny_cfg, _TinyTrainer

from segalias_d2.engine import Trainer
from segalias_d2.engine.trainer import FiniteInputMapper, NonFiniteInputError, _StrictJSONLines
from segalias_d2.evaluation.sem_seg_evaluation import (
    BoundaryErrorSemSegEvaluator,
    BoundaryIoUEvaluator,
    prediction_to_label_map,
)


def _strict_load(path):
    def refuse(token):
        raise AssertionError(f"{path}: bare {token} in JSON")

    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def test_nan_logits_are_refused_not_scored_as_class_zero():
    logits = torch.zeros(3, 4, 5)
    logits[1] = 1.0
    assert (prediction_to_label_map(logits.clone(), 3) == 1).all()
    logits[:, 0, :2] = float("nan")  # two pixels with NaN scores in every class
    logits[2, 3, 4] = float("inf")
    with pytest.raises(FloatingPointError) as e:
        prediction_to_label_map({"sem_seg": logits}, 3, name="frame_7.png")
    assert str(e.value) == (
        "outputs['sem_seg'] of frame_7.png: 3 of 20 pixels have NaN/inf scores (a diverged model "
        "or a non-finite input); refusing to score them"
    )


@pytest.fixture
def all_ignore_dataset(tmp_path):
    name = "faults_all_ignore_sem_seg"
    records = []
    for i in range(2):
        gt = tmp_path / f"gt_{i}.png"
        Image.fromarray(np.full((6, 8), 255, np.uint8)).save(gt)  # every pixel ignored
        records.append(
            {
                "file_name": str(tmp_path / f"im_{i}.png"),
                "sem_seg_file_name": str(gt),
                "height": 6,
                "width": 8,
            }
        )
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        stuff_classes=["road", "car"], ignore_label=255, evaluator_type="sem_seg"
    )
    yield name, records
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.mark.parametrize(
    "evaluator_cls, task, json_name, global_keys",
    [
        (
            BoundaryErrorSemSegEvaluator,
            "boundary_errors",
            "boundary_errors_sem_seg.json",
            [
                "mIoU",
                "mAcc",
                "aAcc",
                "BIoU",
                "BAcc",
                "BaAcc",
                "FErr",
                "FErr_a",
                "MErr",
                "MErr_a",
                "DErr",
                "DErr_a",
            ],
        ),
        (BoundaryIoUEvaluator, "boundary_iou", "boundary_iou_sem_seg.json", ["mBoundaryIoU"]),
    ],
    ids=["boundary_errors", "boundary_iou"],
)
def test_metrics_over_no_valid_pixel_are_not_measured_with_a_warning_and_null_in_json(
    all_ignore_dataset, tmp_path, caplog, evaluator_cls, task, json_name, global_keys
):
    name, records = all_ignore_dataset
    out = tmp_path / "eval"
    ev = evaluator_cls(name, distributed=False, output_dir=str(out))
    ev.reset()
    ev.process(
        [{"file_name": r["file_name"]} for r in records],
        [{"sem_seg": torch.rand(2, 6, 8)} for _ in records],
    )
    with caplog.at_level(logging.WARNING):
        res = ev.evaluate()[task]
    assert [k for k in global_keys if not math.isnan(res[k])] == []  # nothing could be measured
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{name}: {', '.join(global_keys)} not measured: no valid (non-ignore) pixel in the 2 "
        "image(s) for them; reported as null in the results JSON"
    ]
    saved = _strict_load(out / json_name)["metrics"]
    assert all(saved[k] is None for k in global_keys)


def test_non_finite_model_inputs_are_refused_naming_the_file():
    def mapper(d):
        img = torch.full((3, 4, 4), 10.0)
        img[0, 1, 1] = float("nan")
        img[2, 0, 0] = float("-inf")
        return {"file_name": d["file_name"], "image": img}

    wrapped = FiniteInputMapper(mapper)
    with pytest.raises(NonFiniteInputError) as e:
        wrapped({"file_name": "dark/00042.ARW"})
    assert str(e.value) == (
        "image of dark/00042.ARW: 2 of 48 values are NaN/inf after reading and augmentation "
        "(check the file and the exposure ratio / black and white levels)"
    )
    fine = FiniteInputMapper(lambda d: {"image": torch.zeros(3, 2, 2, dtype=torch.uint8)})
    assert fine({"file_name": "x"})["image"].shape == (3, 2, 2)


def test_metrics_json_lines_are_strict_json(tmp_path):
    path = str(tmp_path / "metrics.json")
    writer = JSONWriter(path)
    writer._file_handle = _StrictJSONLines(writer._file_handle)  # what Trainer.build_writers does
    with EventStorage(0) as storage:
        storage.put_scalar("boundary_errors/mIoU", float("nan"), smoothing_hint=False)
        storage.put_scalar("loss", 0.5, smoothing_hint=False)
        writer.write()
    writer.close()
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 and "NaN" not in lines[0]
    row = json.loads(lines[0], parse_constant=lambda t: pytest.fail(f"bare {t}"))
    assert row["boundary_errors/mIoU"] is None and row["loss"] == 0.5 and row["iteration"] == 0
    assert os.path.getsize(path) == len(lines[0]) + 1


def test_trainer_metrics_json_holds_null_for_a_nan_scalar(tmp_path):

    class _NaNScalar(HookBase):
        def after_step(self):
            self.trainer.storage.put_scalar(
                "boundary_errors/mIoU", float("nan"), smoothing_hint=False
            )

    class _WithWriters(_TinyTrainer):
        build_writers = Trainer.build_writers  # the trainer's own writers (metrics.json included)

    trainer = _WithWriters(_tiny_cfg(str(tmp_path)))
    trainer.register_hooks([_NaNScalar()])
    trainer.resume_or_load(resume=False)
    trainer.train()
    rows = [
        json.loads(line, parse_constant=lambda t: pytest.fail(f"bare {t} in metrics.json"))
        for line in (tmp_path / "metrics.json").read_text().splitlines()
    ]
    assert rows and all(
        r["boundary_errors/mIoU"] is None for r in rows if "boundary_errors/mIoU" in r
    )
    assert any("boundary_errors/mIoU" in r for r in rows)
