"""LowLightPredictor prepares inputs with the test-time mapper path and predicts what the evaluator
scores: model inputs equal the test loader's (RAW-dark 16-bit PNGs, packed half-resolution PNGs,
sRGB, with an exposure ratio and either resize interpolation), outputs equal the evaluator's model
outputs (instances, and sliding-window semantic logits), and the array contract is checked."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from predict_helpers import config, trained_run

from segalias_d2.data import read_lowlight_image
from segalias_d2.engine import LowLightPredictor, Trainer


def _loader_inputs(cfg, name):

    return [batch[0] for batch in Trainer.build_test_loader(cfg, name)]


@pytest.mark.parametrize(
    "dataset, extra",
    [
        (
            "lis_demo_raw_dark_test",
            [
                "INPUT.SEGALIAS.EXPOSURE_RATIO",
                "1.7",
                "INPUT.SEGALIAS.RESIZE_INTERP_TEST",
                "nearest",
            ],
        ),
        (
            "lis_demo_srgb_dark_test",
            ["INPUT.SEGALIAS.RESIZE_INTERP_TEST", "bilinear", "INPUT.FORMAT", "RGB"],
        ),
        (
            "lis_demo_raw_dark_packed_test",
            [
                "MODEL.PIXEL_MEAN",
                "[100.0, 100.0, 100.0, 100.0]",
                "MODEL.PIXEL_STD",
                "[1.0, 1.0, 1.0, 1.0]",
            ],
        ),
    ],
    ids=["raw_rgb16-ratio-nearest", "srgb-bilinear-RGB", "packed-half-res"],
)
def test_prepared_input_equals_the_test_loaders(demo_datasets, dataset, extra):

    cfg = config("instance", ["DATASETS.TEST", f"('{dataset}',)"] + extra)
    predictor = LowLightPredictor(cfg, model=torch.nn.Identity())  # preparation only
    records = DatasetCatalog.get(dataset)
    for rec, expected in zip(records, _loader_inputs(cfg, dataset)):
        size = (
            {"height": rec["height"], "width": rec["width"]}
            if dataset.endswith("packed_test")
            else {}
        )
        got, decoded = predictor.prepare(rec["file_name"], **size)
        assert torch.equal(got["image"], expected["image"]), rec["file_name"]
        assert (got["height"], got["width"]) == (expected["height"], expected["width"])
        if dataset.endswith(
            "packed_test"
        ):  # half-resolution Bayer planes, outputs in the annotation frame
            assert decoded.shape == (rec["height"] // 2, rec["width"] // 2, 4)
    if (
        "INPUT.SEGALIAS.EXPOSURE_RATIO" in extra
    ):  # the amplification really is applied: r = 1 gives another input
        default, _ = predictor.prepare(records[0]["file_name"])
        plain, _ = predictor.prepare(records[0]["file_name"], exposure_ratio=1.0)
        assert not torch.equal(plain["image"], default["image"])


def test_instances_equal_the_evaluators(demo_datasets):

    cfg, model, records, expected, _, _ = trained_run("instance")
    predictor = LowLightPredictor(cfg, model=model)
    assert predictor.image_format == "raw_rgb"
    n_detections = 0
    for i, (rec, want) in enumerate(zip(records, expected)):
        want = want["instances"]
        images = [rec["file_name"]] + (
            [read_lowlight_image(rec["file_name"], "raw_rgb")] if i == 0 else []
        )
        for image in images:  # the path, and (once) the decoded array
            got = predictor(image)["instances"].to("cpu")
            assert got.image_size == want.image_size == (rec["height"], rec["width"])
            for field in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
                a, b = got.get(field), want.get(field)
                a, b = (a.tensor, b.tensor) if field == "pred_boxes" else (a, b)
                assert torch.equal(a, b), (rec["file_name"], field)
        n_detections += len(want)
    assert n_detections > 0


def test_sliding_window_sem_seg_equals_the_evaluators(demo_datasets):

    cfg, model, records, expected, _, _ = trained_run("semantic")
    assert model.sliding_window and cfg.TEST.SEGALIAS.SLIDING_WINDOW.ENABLED
    predictor = LowLightPredictor(cfg, model=model)
    assert predictor.image_format == "raw_rgb"
    for rec, want in zip(records, expected):
        got = predictor(rec["file_name"])["sem_seg"].to("cpu")
        assert got.shape == want["sem_seg"].shape == (19, rec["height"], rec["width"])
        assert torch.equal(got, want["sem_seg"]), rec["file_name"]
    # the window really slides: the whole-image forward of the same model gives other logits
    model.sliding_window = False
    try:
        whole = predictor(records[0]["file_name"])["sem_seg"].to("cpu")
    finally:
        model.sliding_window = True
    assert not torch.equal(whole, expected[0]["sem_seg"])


def test_array_contract(demo_datasets):

    cfg = config("instance")
    predictor = LowLightPredictor(cfg, model=torch.nn.Identity())
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    a, decoded = predictor.prepare(u8)
    b, _ = predictor.prepare(u8.astype(np.float64) / 255.0)
    assert torch.allclose(a["image"], b["image"], atol=1e-4) and decoded.dtype == np.float32
    u16 = rng.integers(0, 65536, (40, 60, 3), dtype=np.uint16)
    c, decoded16 = predictor.prepare(u16)
    assert np.allclose(decoded16, u16 / 65535.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"takes an \(H, W, 3\) array, got shape \(40, 60, 4\)"):
        predictor.prepare(np.zeros((40, 60, 4), np.float32))
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        predictor.prepare(np.full((40, 60, 3), 255.0, np.float32))
    with pytest.raises(ValueError, match="exposure_ratio apply when decoding a file"):
        predictor.prepare(u8, exposure_ratio=2.0)
    with pytest.raises(ValueError, match="decodes to 4 channels .* the model takes 3"):
        predictor.prepare(np.zeros((40, 60, 4), np.float32), image_format="raw_packed")
