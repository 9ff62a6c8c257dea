"""tools/evaluate_predictions.py: saved predictions scored exactly as the in-training evaluators
score them (semantic label PNGs of a sliding-window model on the 16-bit raw-RGB demo; COCO results
of a Mask R-CNN on the LIS demo), hand-computed values on label maps, the real demo label maps,
worker processes, and bad inputs."""

import json
import os
import shutil

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image
from predict_helpers import INSTANCE_CFG, load_tool, trained_run

from segalias_d2.engine.predict_io import CocoIds, write_label_png
from segalias_d2.evaluation import to_strict_json
from segalias_d2.evaluation.saved_predictions import (
    PredictionFileError,
    evaluate_instances,
    evaluate_semantic,
    semantic_pairs_from_dataset,
)
from segalias_d2.evaluation.sem_seg_evaluation import prediction_to_label_map

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _strict(obj):

    return json.loads(json.dumps(to_strict_json(obj)))


def _run(tmp_path, argv, capsys):
    tool = load_tool("evaluate_predictions")
    out = tmp_path / "scores"
    rc = tool.main(["--output", str(out), "--no-progress"] + argv)  # config overrides last
    captured = capsys.readouterr()
    metrics = (
        json.loads((out / "evaluate_predictions.json").read_text())["metrics"] if rc == 0 else None
    )
    return rc, metrics, captured


@pytest.fixture(scope="module")
def semantic_labels(demo_datasets, tmp_path_factory):
    """The evaluator's predictions of the semantic run as label PNGs <image stem>.png (as
    tools/predict.py names them)."""

    cfg, _, records, outputs, results, _ = trained_run("semantic")
    folder = tmp_path_factory.mktemp("sem_labels")
    for rec, out in zip(records, outputs):
        stem = os.path.splitext(os.path.basename(rec["file_name"]))[0]
        write_label_png(prediction_to_label_map(out, 19), str(folder / f"{stem}.png"))
    return folder, records, results


def test_semantic_equals_the_in_training_evaluator(semantic_labels, tmp_path, capsys):
    folder, records, expected = semantic_labels
    assert (
        set(expected) == {"boundary_errors", "boundary_iou"}
        and 0 < expected["boundary_errors"]["mIoU"] < 100
    )
    rc, got, out = _run(
        tmp_path / "a",
        ["--predictions", str(folder), "--dataset", "cityscapes_demo_sem_seg_dark_val"],
        capsys,
    )
    assert rc == 0, out.err
    assert got == _strict(expected)
    assert "mean" in out.out and "BoundaryIoU" in out.out and "FErr" in out.out
    # the same from a GT folder with Cityscapes names, classes from the dataset, two worker
    # processes
    gt_dir = os.path.dirname(records[0]["sem_seg_file_name"])
    rc, got2, out = _run(
        tmp_path / "b",
        [
            "--predictions",
            str(folder),
            "--gt-dir",
            gt_dir,
            "--gt-suffix",
            "_gtFine_labelTrainIds",
            "--pred-suffix",
            "_leftImg8bit",
            "--classes-from",
            "cityscapes_demo_sem_seg_dark_val",
            "--workers",
            "2",
        ],
        capsys,
    )
    assert rc == 0, out.err
    assert got2 == got
    csv_lines = (tmp_path / "b" / "scores" / "evaluate_predictions.csv").read_text().splitlines()
    assert (
        csv_lines[1].startswith("class,IoU,Acc,BIoU,BAcc,FErr,MErr,DErr,BoundaryIoU")
        and len(csv_lines) == 2 + 19 + 1
    )


def test_workers_merge_to_the_serial_counts(demo_datasets, tmp_path):

    # 5 real demo label maps (train + val) scored against themselves shifted by 3 px: chunks of 1..2
    # images
    pairs = []
    for split in ("train", "val"):
        pairs += semantic_pairs_from_dataset(
            f"cityscapes_demo_sem_seg_{split}", _gt_as_predictions(tmp_path, split)
        )
    classes = [str(i) for i in range(19)]
    serial, n = evaluate_semantic(pairs, classes, 255, 15, 0.02, workers=1)
    parallel, n2 = evaluate_semantic(pairs, classes, 255, 15, 0.02, workers=2)
    assert n == n2 == 5 and _strict(serial) == _strict(parallel)
    assert 0 < serial["boundary_errors"]["FErr"] < 100


def _gt_as_predictions(tmp_path, split, shift=3):
    """Predictions = the real GT label map shifted right by ``shift`` px, ignore pixels predicted as
    class 0."""

    out = tmp_path / split
    out.mkdir(exist_ok=True)
    for rec in DatasetCatalog.get(f"cityscapes_demo_sem_seg_{split}"):
        gt = np.asarray(Image.open(rec["sem_seg_file_name"])).copy()
        gt[gt == 255] = 0
        pred = np.roll(gt, shift, axis=1) if shift else gt
        Image.fromarray(pred).save(out / os.path.basename(rec["file_name"]))
    return str(out)


def test_real_label_maps_perfect_prediction(demo_datasets, tmp_path, capsys):
    preds = _gt_as_predictions(tmp_path, "val", shift=0)
    rc, got, out = _run(
        tmp_path, ["--predictions", preds, "--dataset", "cityscapes_demo_sem_seg_val"], capsys
    )
    assert rc == 0, out.err
    errors, biou = got["boundary_errors"], got["boundary_iou"]
    # only car (13) and truck (14) are annotated: those are perfect, the other classes are not
    # measured (null)
    assert (
        errors["mIoU"] == errors["BIoU"] == errors["BAcc"] == 100.0
        and biou["mBoundaryIoU"] == 100.0
    )
    assert errors["FErr"] == errors["MErr"] == errors["DErr"] == 0.0
    assert errors["IoU-car"] == 100.0 and errors["IoU-road"] is None and errors["FErr-truck"] == 0.0


def test_worked_example_values(tmp_path, capsys):
    """docs/evaluation.md: 64x200, boundary displaced by 4 px -> BIoU 66.7, BAcc 83.3, FErr 16.7,
    MErr 25, DErr 25."""
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    gt = np.zeros((64, 200), np.uint8)
    gt[:, 100:] = 1
    pred = np.zeros((64, 200), np.uint8)
    pred[:, 104:] = 1
    Image.fromarray(pred).save(tmp_path / "p" / "x.png")
    Image.fromarray(gt).save(tmp_path / "g" / "x.png")
    rc, got, out = _run(
        tmp_path,
        [
            "--predictions",
            str(tmp_path / "p"),
            "--gt-dir",
            str(tmp_path / "g"),
            "--classes",
            "left,right",
        ],
        capsys,
    )
    assert rc == 0, out.err
    e = got["boundary_errors"]
    assert [round(e[k], 1) for k in ("BIoU", "BAcc", "FErr", "MErr", "DErr", "mIoU")] == [
        66.7,
        83.3,
        16.7,
        25.0,
        25.0,
        96.1,
    ]


def test_semantic_bad_inputs_name_the_file(demo_datasets, tmp_path, capsys):

    preds = _gt_as_predictions(tmp_path, "val", shift=0)
    name = "cityscapes_demo_sem_seg_val"
    classes = [str(i) for i in range(19)]
    first = sorted(os.listdir(preds))[0]
    good = os.path.join(preds, first)
    label = np.asarray(Image.open(good))

    def score():
        return evaluate_semantic(semantic_pairs_from_dataset(name, preds), classes)

    Image.fromarray(label[:-2]).save(good)  # size mismatch
    with pytest.raises(
        PredictionFileError,
        match=f"prediction {good} is 512x286 .* but its ground truth .*is 512x288",
    ):
        score()
    bad = label.copy()
    bad[0, 0] = 19  # outside the 19 classes
    Image.fromarray(bad).save(good)
    with pytest.raises(
        PredictionFileError, match=f"prediction {good} has labels \\[19\\] outside the 19 classes"
    ):
        score()
    Image.fromarray(np.repeat(label[..., None], 3, axis=2)).save(good)  # colour PNG
    with pytest.raises(
        PredictionFileError, match=f"prediction {good}: expected a single-channel integer label PNG"
    ):
        score()
    Image.fromarray(label).save(good)
    zeros = tmp_path / "zeros"
    zeros.mkdir()
    for fn in os.listdir(preds):
        Image.fromarray(np.zeros_like(label)).save(zeros / fn)
    with pytest.raises(
        ValueError,
        match=r"ground truth of .*_leftImg8bit.png \(ground truth .*_gtFine_labelTrainIds.png\) "
        r"has labels \[13, 14\] outside \[0, 2\)",
    ):
        evaluate_semantic(
            semantic_pairs_from_dataset(name, str(zeros)), ["a", "b"]
        )  # GT labels outside 2 classes
    shutil.copy(good, os.path.join(preds, "stray.png"))  # a prediction without ground truth
    with pytest.raises(
        PredictionFileError, match="1 prediction file.* match no ground truth .*stray.png"
    ):
        score()
    os.remove(os.path.join(preds, "stray.png"))
    os.remove(good)  # a ground-truth image without prediction
    with pytest.raises(
        PredictionFileError, match=f"have no prediction in {preds}, e.g. {first} \\(for .*\\)"
    ):
        score()
    rc = load_tool("evaluate_predictions").main(
        ["--predictions", preds, "--dataset", name]
    )  # through the tool
    assert (
        rc == 2
        and f"evaluate_predictions.py: error: 1 ground-truth image(s) of dataset '{name}'"
        in capsys.readouterr().err
    )
    rc = load_tool("evaluate_predictions").main(
        ["--predictions", preds, "--dataset", "cityscapes_demo_sem_seg_vall"]
    )
    assert rc == 2 and "did you mean cityscapes_demo_sem_seg_val" in capsys.readouterr().err


def test_instances_equal_the_in_training_evaluator(demo_datasets, tmp_path, capsys):
    _, _, _, _, expected, out_dir = trained_run("instance")
    results = os.path.join(
        out_dir, "coco_instances_results.json"
    )  # written by Detectron2's COCOEvaluator
    assert {"bbox", "segm", "boundary_ap", "boundary_errors"} <= set(expected)
    assert expected["boundary_errors"]["mIoU"] > 0 and len(json.load(open(results))) > 0
    # the run projected instances with score >= 0.1 (INSTANCE_SCORE_THRESH): the same setting, from
    # the config
    rc, got, out = _run(
        tmp_path / "a",
        [
            "--predictions",
            results,
            "--dataset",
            "lis_demo_raw_dark_test",
            "--config-file",
            INSTANCE_CFG,
            "TEST.SEGALIAS.INSTANCE_SCORE_THRESH",
            "0.1",
        ],
        capsys,
    )
    assert rc == 0, out.err
    assert got == _strict(expected)
    assert "boundary AP" in out.out and "background" in out.out and "AP50" in out.out
    gt_json = os.path.join(demo_datasets["lis_demo"], "annotations", "lis_coco_png_test+1.json")
    rc, got2, out = _run(
        tmp_path / "b",
        ["--predictions", results, "--gt-json", gt_json, "--score-thresh", "0.1"],
        capsys,
    )
    assert rc == 0, out.err
    assert got2 == got
    rc, default, _ = _run(
        tmp_path / "c", ["--predictions", results, "--gt-json", gt_json], capsys
    )  # threshold 0.5
    assert default["segm"] == got["segm"] and default["boundary_errors"] != got["boundary_errors"]


def test_instance_bad_inputs_name_the_file(demo_datasets, tmp_path):

    _, _, _, _, _, out_dir = trained_run("instance")
    results = json.load(open(os.path.join(out_dir, "coco_instances_results.json")))
    path = str(tmp_path / "r.json")

    def score(entries):
        with open(path, "w") as f:
            json.dump(entries, f)
        return evaluate_instances(path, "lis_demo_raw_dark_test")

    with pytest.raises(
        PredictionFileError,
        match=f"results file {path}: entry 0 \\(image_id 999\\): image_id is not an image",
    ):
        score([dict(results[0], image_id=999)] + results[1:])
    with pytest.raises(PredictionFileError, match="entry 1 .*category_id 42 is not a category"):
        score(results[:1] + [dict(results[1], category_id=42)])
    small = dict(results[0]["segmentation"], size=[10, 10])
    with pytest.raises(
        PredictionFileError, match="mask size \\(10, 10\\) .* differs from the dataset's image size"
    ):
        score([dict(results[0], segmentation=small)])
    with pytest.raises(PredictionFileError, match="expected a COCO results list"):
        score({"annotations": results})
    with pytest.raises(
        PredictionFileError, match=f"results file not found: {tmp_path}/missing.json"
    ):
        evaluate_instances(str(tmp_path / "missing.json"), "lis_demo_raw_dark_test")


def test_instance_category_ids_are_the_ground_truths(demo_datasets, tmp_path, capsys):
    """A GT whose category ids are not the contiguous ones (LIS ids + 10): results carry those ids
    and score the same."""
    _, _, _, _, expected, out_dir = trained_run("instance")
    gt = json.load(
        open(os.path.join(demo_datasets["lis_demo"], "annotations", "lis_coco_png_test+1.json"))
    )
    for c in gt["categories"]:
        c["id"] += 10
    for a in gt["annotations"]:
        a["category_id"] += 10
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    results = json.load(open(os.path.join(out_dir, "coco_instances_results.json")))
    (tmp_path / "r.json").write_text(
        json.dumps([dict(r, category_id=r["category_id"] + 10) for r in results])
    )
    rc, got, out = _run(
        tmp_path,
        [
            "--predictions",
            str(tmp_path / "r.json"),
            "--gt-json",
            str(tmp_path / "gt.json"),
            "--score-thresh",
            "0.1",
        ],
        capsys,
    )
    assert rc == 0, out.err
    assert got == _strict(expected)


def test_predict_coco_ids_follow_the_ground_truth(tmp_path):

    gt = {
        "images": [{"id": 7, "file_name": "./JPEGImages/2.png"}, {"id": 9, "file_name": "x/4.png"}],
        "categories": [
            {"id": 11, "name": "Car"},
            {"id": 12, "name": "bicycle"},
            {"id": 13, "name": "tv"},
        ],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    ids = CocoIds.from_coco_json(
        str(tmp_path / "gt.json"), ["bicycle", "car", "tvmonitor"]
    )  # matched by name (aliases)
    assert [ids.category_id(i) for i in range(3)] == [12, 11, 13]
    assert (
        ids.image_id("/data/RAW-dark/2.png") == 7
        and ids.image_id("4.jpg") == 9
        and ids.image_id("5.png") is None
    )
    with pytest.raises(ValueError, match=r"no category for the model's classes \['bus'\]"):
        CocoIds.from_coco_json(str(tmp_path / "gt.json"), ["bus"])
