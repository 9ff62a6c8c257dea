"""tools/predict.py on real files (16-bit raw-RGB demo PNGs, the real Sony ARW, a corrupt and a
truncated ARW, a missing file), the display rendering of its visualisations, the decoding flags
(exposure ratio from a number, the EXIF pair or none; black level), and its machine-readable
outputs, which equal the evaluator's."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from predict_helpers import (
    INSTANCE_CFG,
    INSTANCE_OPTS,
    SEMANTIC_CFG,
    SEMANTIC_OPTS,
    config,
    load_tool,
    save_checkpoint,
    trained_run,
)

from segalias_d2.engine import LowLightPredictor
from segalias_d2.engine.display import camera_white_balance, display_image, srgb_encode
from segalias_d2.engine.predict_io import collect_inputs, decode_options, output_names
from segalias_d2.evaluation.sem_seg_evaluation import prediction_to_label_map


def _opts(base, weights):
    opts = list(base)
    opts[opts.index("MODEL.WEIGHTS") + 1] = weights
    return opts


def test_instance_model_on_real_files(demo_datasets, sony_arw, tmp_path, capsys):
    cfg, model, records, _, _, eval_dir = trained_run("instance")
    weights = save_checkpoint(model, str(tmp_path / "model" / "model_final.pth"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.ARW").write_bytes(b"not a raw file" * 100)
    with open(sony_arw, "rb") as f:
        (bad / "cut.ARW").write_bytes(f.read(1 << 20))  # the real ARW cut to its first megabyte
    demo = os.path.join(demo_datasets["lis_demo"], "RAW-dark", "JPEGImages")
    out = tmp_path / "out"
    rc = load_tool("predict").main(
        [
            "--config-file",
            INSTANCE_CFG,
            "--input",
            os.path.join(demo, "[246].png"),
            sony_arw,
            str(bad),
            str(tmp_path / "missing.png"),
            str(tmp_path / "*.nothing"),
            "--output",
            str(out),
            "--dataset",
            "lis_demo_raw_dark_test",
            "--score-thresh",
            "0.1",
            "--no-progress",
        ]
        + _opts(INSTANCE_OPTS, weights)
        + ["DATASETS.TEST", "('lis_demo_raw_dark_test',)"]
    )
    text = capsys.readouterr().out
    assert rc == 1
    assert "predict: 4 done, 4 failed" in text
    for name, reason in [
        (bad / "corrupt.ARW", "RawDecodeError: cannot decode camera RAW file"),
        (bad / "cut.ARW", "is truncated: raw data (strip 1 of 1"),
        (tmp_path / "missing.png", "image file not found"),
        (tmp_path / "*.nothing", "no file matches this pattern"),
    ]:
        assert (
            f"FAILED {name}: " in text
            and reason in text.split(f"FAILED {name}: ")[1].splitlines()[0]
        ), name
    assert f"not in the ground truth, left out of the COCO results: {sony_arw}" in text
    # visualisations a person can look at: display-ready (not dark), the ARW drawn downscaled to
    # 1600 px
    for stem, size in [("2", (474, 320)), ("_DSC2164", (1600, 1069))]:
        vis = Image.open(out / "vis" / f"{stem}.png")
        assert vis.size == size and vis.mode == "RGB"
        assert np.asarray(vis).mean() > 50, stem
    # machine-readable: the evaluator's own COCO results file, detection for detection
    got = json.load(open(out / "coco_instances_results.json"))
    want = json.load(open(os.path.join(eval_dir, "coco_instances_results.json")))
    assert got == want and len(got) > 0
    images = json.load(open(out / "coco_images.json"))["images"]
    assert [(im["id"], im["height"], im["width"]) for im in images] == [
        (r["image_id"], r["height"], r["width"]) for r in records
    ]
    summary = json.load(open(out / "summary.json"))
    assert summary["done"] == 4 and summary["failed"] == 4 and summary["kind"] == "instances"


def test_semantic_labels_equal_the_evaluators(demo_datasets, tmp_path, capsys):

    cfg, model, records, outputs, _, _ = trained_run("semantic")
    weights = save_checkpoint(model, str(tmp_path / "model" / "model_final.pth"))
    folder = os.path.dirname(records[0]["file_name"])
    rc = load_tool("predict").main(
        [
            "--config-file",
            SEMANTIC_CFG,
            "--input",
            folder,
            "--output",
            str(tmp_path / "out"),
            "--no-progress",
        ]
        + _opts(SEMANTIC_OPTS, weights)
        + ["DATASETS.TEST", "('cityscapes_demo_sem_seg_dark_val',)"]
    )
    assert rc == 0 and "predict: 2 done, 0 failed" in capsys.readouterr().out
    for rec, out in zip(records, outputs):
        stem = os.path.splitext(os.path.basename(rec["file_name"]))[0]
        label = np.asarray(Image.open(tmp_path / "out" / "labels" / f"{stem}.png"))
        assert np.array_equal(label, prediction_to_label_map(out, 19)), stem
        assert Image.open(tmp_path / "out" / "vis" / f"{stem}.png").size == (
            rec["width"],
            rec["height"],
        )


def test_decoding_flags_on_the_real_arw(demo_datasets, sony_arw, tmp_path):

    dark, normal = (
        tmp_path / "4.ARW",
        tmp_path / "3.ARW",
    )  # an EXIF pair by LIS numbering: same exposure
    os.symlink(sony_arw, dark)
    os.symlink(sony_arw, normal)
    predictor = LowLightPredictor(config("instance"), model=torch.nn.Identity())
    exif = decode_options(exposure_ratio="exif")(str(dark))
    assert exif["exposure_ratio"] == "exif" and exif["pair_file_name"] == str(normal)
    a, _ = predictor.prepare(str(dark), **exif)
    b, _ = predictor.prepare(str(dark), **decode_options(exposure_ratio="none")(str(dark)))
    assert torch.equal(a["image"], b["image"])  # t_normal / t_dark = 1
    assert predictor.mapper._ratios[(str(dark), str(normal))] == 1.0
    # black level 1000 instead of the file's 512: per Bayer plane (x - 1000) / (16383 - 1000)
    packed = LowLightPredictor(
        config("instance", ["MODEL.PIXEL_MEAN", "[0, 0, 0, 0]", "MODEL.PIXEL_STD", "[1, 1, 1, 1]"]),
        model=torch.nn.Identity(),
    )
    _, default = packed.prepare(str(dark), image_format="raw_packed")
    _, raised = packed.prepare(
        str(dark), **decode_options("raw_packed", black_level="1000")(str(dark))
    )
    x = default.astype(np.float64) * (16383 - 512) + 512
    expected = (x - 1000) / (16383 - 1000)
    inside = (expected > 0.001) & (default < 0.999)
    assert inside.mean() > 0.1 and np.allclose(
        raised[inside], expected[inside], atol=1e-5
    )  # 21 % of this dark frame
    assert np.all(raised[expected < 0] == 0.0)  # below the new black level: clipped to 0
    with pytest.raises(ValueError, match="--exposure-ratio must be > 0"):
        decode_options(exposure_ratio="-2")
    with pytest.raises(ValueError, match="4 comma-separated values"):
        decode_options(black_level="1,2")


def test_display_rendering():

    # a grey patch seen by a camera with gains (2, 1, 4): white balanced, then brightened to mean
    # 0.18, sRGB curve
    raw = np.empty((8, 8, 3), np.float32)
    raw[:] = np.array([0.5, 1.0, 0.25], np.float32) * 0.01
    out = display_image(raw, "raw_rgb", white_balance=np.array([2.0, 1.0, 4.0]))
    assert np.all(out == round(float(srgb_encode(np.float32(0.18))) * 255))  # 118 everywhere
    assert np.all(
        display_image(raw, "raw_rgb") == out
    )  # gray world finds the same gains on a grey scene
    packed = np.stack([raw[..., 0], raw[..., 1], raw[..., 2], raw[..., 1]], axis=-1)
    assert np.array_equal(display_image(packed, "raw_packed", white_balance=[2, 1, 4]), out)
    bright = (
        np.random.default_rng(0).integers(60, 256, (8, 8, 3)).astype(np.float32) / 255
    )  # nothing to brighten
    assert np.array_equal(display_image(bright, "srgb"), (bright * 255).round().astype(np.uint8))
    assert (
        display_image(bright * 0.1, "srgb").mean() > 3 * (bright * 25.5).mean()
    )  # dark sRGB brightened
    assert np.all(
        display_image(raw, "raw_rgb", white_balance=[2, 1, 4], brightness=1.0)
        == round(float(srgb_encode(np.float32(0.01))) * 255)
    )


def test_camera_white_balance_of_the_real_arw(sony_arw):

    # as shot (LibRaw cam_mul of _DSC2164.ARW): R 2528, G 1024, B 1564
    assert np.allclose(camera_white_balance(sony_arw), [2528 / 1024, 1.0, 1564 / 1024])


def test_inputs_and_output_names(tmp_path):

    for name in ("2.png", "2.ARW", "3.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "2.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    files, problems = collect_inputs(
        [
            str(tmp_path),
            str(tmp_path / "sub" / "*.png"),
            str(tmp_path / "3.jpg"),
            str(tmp_path / "empty"),
        ]
    )
    assert [os.path.relpath(f, tmp_path) for f in files] == ["2.ARW", "2.png", "3.jpg", "sub/2.png"]
    assert (
        problems == [(str(tmp_path / "empty"), problems[0][1])]
        and "no image files" in problems[0][1]
    )
    assert list(output_names(files).values()) == ["2_ARW", "2_png", "3", "2_png_1"]
