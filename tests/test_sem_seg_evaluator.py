"""BoundaryErrorSemSegEvaluator / BoundaryIoUEvaluator on a tiny synthetic registered dataset."""

import json
import math
import os

import numpy as np
import pytest
import torch
from common import segalias_cfg
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluators
from detectron2.utils import comm
from PIL import Image

import segalias_d2
from segalias_d2.evaluation import (
    BoundaryErrorCounter,
    BoundaryErrorSemSegEvaluator,
    BoundaryIoUCounter,
    BoundaryIoUEvaluator,
    build_segalias_evaluator,
)

CLASSES = ["road", "car", "sky"]


def _scores_from_labels(lab, K):
    """One-hot-ish (K, H, W) scores whose argmax is ``lab``."""
    t = torch.zeros((K,) + lab.shape)
    t.scatter_(0, torch.as_tensor(lab, dtype=torch.long)[None], 1.0)
    return t


@pytest.fixture
def semseg_dataset(tmp_path):
    rng = np.random.default_rng(0)
    name = f"_segalias_test_semseg_{os.getpid()}_{tmp_path.name}"
    records, preds, gts = [], [], []
    sizes = [(40, 64), (48, 50), (40, 64), (33, 41)]
    for i, (h, w) in enumerate(sizes):
        gt = np.zeros((h, w), np.uint8)
        gt[:, w // 2 :] = 1
        gt[: h // 3, :] = 2
        gt[rng.random((h, w)) < 0.03] = 255
        if i == 3:
            gt[:] = 255  # an all-ignore image
        pred = gt.copy()
        pred[pred == 255] = 0
        pred[:, w // 2 : w // 2 + 3] = 0  # displaced boundary
        pred[h - 5 :, :5] = 2  # a false response
        p = tmp_path / f"gt_{i}.png"
        Image.fromarray(gt).save(p)
        records.append(
            {
                "file_name": f"img_{i}.jpg",
                "sem_seg_file_name": str(p),
                "height": h,
                "width": w,
                "image_id": i,
            }
        )
        preds.append(pred)
        gts.append(gt)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=CLASSES, ignore_label=255, evaluator_type="sem_seg")
    yield name, records, preds, gts
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _run(ev, records, preds, idx=None):
    ev.reset()
    for i in idx if idx is not None else range(len(records)):
        ev.process([records[i]], [{"sem_seg": _scores_from_labels(preds[i], len(CLASSES))}])
    return ev.evaluate()


def test_evaluator_matches_counter_in_percent(semseg_dataset, tmp_path):
    name, records, preds, gts = semseg_dataset
    out = tmp_path / "out"
    ev = BoundaryErrorSemSegEvaluator(name, distributed=False, output_dir=str(out), band_width=7)
    res = _run(ev, records, preds)
    assert list(res.keys()) == ["boundary_errors"]
    r = res["boundary_errors"]
    ref = BoundaryErrorCounter(3, 255, 7)
    for p, g in zip(preds, gts):
        ref.update(p, g)
    expect = ref.metrics(CLASSES)
    for k, v in expect.items():
        assert isinstance(r[k], float)
        assert (math.isnan(v) and math.isnan(r[k])) or r[k] == pytest.approx(100 * v), k
    for k in ["mIoU", "BIoU", "BAcc", "FErr", "MErr", "DErr", "IoU-road", "BIoU-car", "DErr-sky"]:
        assert k in r
    assert all(
        "-" not in k for k in ["mIoU", "BIoU", "BAcc", "BaAcc", "FErr_a", "MErr_a", "DErr_a"]
    )
    js = json.loads((out / "boundary_errors_sem_seg.json").read_text())
    assert js["band_width"] == 7 and js["num_images"] == 4
    assert js["metrics"]["BIoU"] == pytest.approx(r["BIoU"])
    csv_text = (out / "boundary_errors_sem_seg.csv").read_text()
    assert "band_width" in csv_text and "road" in csv_text


def test_distributed_two_processes_equal_single_pass(semseg_dataset, monkeypatch):
    name, records, preds, gts = semseg_dataset
    single = _run(BoundaryErrorSemSegEvaluator(name, distributed=False), records, preds)[
        "boundary_errors"
    ]
    a = BoundaryErrorSemSegEvaluator(name, distributed=True)
    b = BoundaryErrorSemSegEvaluator(name, distributed=True)
    for ev, idx in ((a, [0, 2]), (b, [1, 3])):
        ev.reset()
        for i in idx:
            ev.process([records[i]], [{"sem_seg": _scores_from_labels(preds[i], 3)}])
    monkeypatch.setattr(comm, "synchronize", lambda: None)
    monkeypatch.setattr(comm, "all_gather", lambda x: [a._counter, b._counter])
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    assert b.evaluate() is None
    monkeypatch.setattr(comm, "is_main_process", lambda: True)
    merged = a.evaluate()["boundary_errors"]
    assert merged == pytest.approx(single, nan_ok=True)
    # evaluate() must not have mutated rank 0's own counter
    assert a._counter.num_images == 2


def test_shape_mismatch_names_the_file(semseg_dataset):
    name, records, preds, gts = semseg_dataset
    ev = BoundaryErrorSemSegEvaluator(name, distributed=False)
    ev.reset()
    with pytest.raises(ValueError, match="img_0.jpg"):
        ev.process([records[0]], [{"sem_seg": torch.zeros(3, 10, 10)}])
    with pytest.raises(ValueError, match="channels"):
        ev.process([records[0]], [{"sem_seg": torch.zeros(5, 40, 64)}])


def test_boundary_iou_evaluator(semseg_dataset):
    name, records, preds, gts = semseg_dataset
    ev = BoundaryIoUEvaluator(name, distributed=False, dilation_ratio=0.05)
    r = _run(ev, records, preds)["boundary_iou"]
    ref = BoundaryIoUCounter(3, 255, 0.05)
    for p, g in zip(preds, gts):
        ref.update(p, g)
    assert r["mBoundaryIoU"] == pytest.approx(100 * ref.metrics()["mBoundaryIoU"])
    assert set(r) == {"mBoundaryIoU"} | {f"BoundaryIoU-{c}" for c in CLASSES}


def test_build_segalias_evaluator_dispatch(semseg_dataset, tmp_path):
    name, records, preds, gts = semseg_dataset
    cfg = segalias_cfg(TEST__SEGALIAS__BOUNDARY_BAND_WIDTH=9)
    ev = build_segalias_evaluator(cfg, name, str(tmp_path))
    assert isinstance(ev, BoundaryErrorSemSegEvaluator) and ev._band_width == 9
    cfg.TEST.SEGALIAS.SEM_SEG_BOUNDARY_IOU = True
    assert isinstance(build_segalias_evaluator(cfg, name, str(tmp_path)), DatasetEvaluators)
    other = name + "_other"
    MetadataCatalog.get(other).set(evaluator_type="lvis")
    with pytest.raises(NotImplementedError, match="lvis"):
        build_segalias_evaluator(cfg, other, str(tmp_path))
    MetadataCatalog.remove(other)


def test_config_keys_idempotent():
    cfg = get_cfg()
    segalias_d2.add_segalias_config(cfg)
    assert cfg.TEST.SEGALIAS.BOUNDARY_BAND_WIDTH == 15
    assert cfg.TEST.SEGALIAS.BOUNDARY_IOU_DILATION_RATIO == 0.02
    assert cfg.TEST.SEGALIAS.INSTANCE_SCORE_THRESH == 0.5
    cfg.TEST.SEGALIAS.BOUNDARY_BAND_WIDTH = 21
    segalias_d2.config._add_evaluation_config(cfg)
    assert cfg.TEST.SEGALIAS.BOUNDARY_BAND_WIDTH == 21
