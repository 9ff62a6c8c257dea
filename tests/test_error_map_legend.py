"""Error maps a person can read: the legend panel (each error colour and band outline) and the
image's own numbers beside the overlay; tools/visualize_errors.py on the LIS RAW-dark demo (16-bit
raw-RGB, rendered display-ready) with the saved COCO results of the in-training evaluator."""

import csv
import os

import numpy as np
from PIL import Image
from predict_helpers import INSTANCE_CFG, INSTANCE_OPTS, load_tool, trained_run

from segalias_d2.evaluation import BoundaryErrorCounter
from segalias_d2.evaluation.error_maps import (
    ERROR_COLORS,
    LEGEND,
    annotate_error_map,
    compute_error_maps,
    image_error_metrics,
    overlay_error_maps,
)


def _example():
    gt = np.zeros((64, 200), np.uint8)
    gt[:, 100:] = 1
    pred = np.zeros((64, 200), np.uint8)
    pred[:, 104:] = 1
    pred[10:30, 20:40] = (
        1  # a false blob: false responses and merging outside the displaced boundary
    )
    return pred, gt


def test_panel_has_the_legend_and_the_images_numbers():

    pred, gt = _example()
    maps = compute_error_maps(pred, gt)
    overlay = overlay_error_maps(np.full((64, 200, 3), 100, np.uint8), maps)
    numbers = image_error_metrics(pred, gt, 2)
    counter = BoundaryErrorCounter(2)
    counter.update(pred, gt)
    assert numbers == {
        k: v * 100 for k, v in counter.metrics().items()
    }  # one image = a dataset of one image
    canvas = annotate_error_map(overlay, maps, numbers, title="x.png", band_width=15)
    assert (
        canvas.shape[1] == 200 + 250 and canvas.shape[0] > 64
    )  # the panel is taller than this small image
    assert np.array_equal(canvas[:64, :200], overlay)
    panel = canvas[:, 200:]
    for code, colour in ERROR_COLORS.items():  # a swatch of every error colour
        assert (np.all(panel == colour, axis=-1)).sum() >= 10 * 13, code
    assert len(LEGEND) == 6 and {c for _, c, _ in LEGEND if c} == set(ERROR_COLORS.values())
    # the text changes with the numbers (nothing of the panel is fixed art only)
    other = annotate_error_map(
        overlay, maps, image_error_metrics(gt, gt, 2), title="x.png", band_width=15
    )
    assert not np.array_equal(other[:, 200:], panel)


def test_visualize_errors_on_raw_dark_instances(demo_datasets, tmp_path):
    _, _, records, _, _, eval_dir = trained_run("instance")
    tool = load_tool("visualize_errors")
    args = tool.get_parser().parse_args(
        [
            "--config-file",
            INSTANCE_CFG,
            "--dataset",
            "lis_demo_raw_dark_test",
            "--output",
            str(tmp_path),
            "--predictions",
            os.path.join(eval_dir, "coco_instances_results.json"),
            "--images",
            "all",
        ]
        + INSTANCE_OPTS
    )
    written = tool.main(args)
    assert len(written) == len(records) == 3
    got = np.asarray(Image.open(written[0]))
    h, w = records[0]["height"], records[0]["width"]
    assert got.shape == (max(h, got.shape[0]), w + 250, 3)
    assert (
        got[:h, :w].mean() > 50
    )  # the 16-bit linear raw-RGB image is white balanced and brightened
    with open(tmp_path / "error_pixels.csv") as f:
        rows = list(csv.reader(f))
    assert rows[1][-6:] == [
        "mIoU_percent",
        "BIoU_percent",
        "BAcc_percent",
        "FErr_percent",
        "MErr_percent",
        "DErr_percent",
    ]
    assert len(rows) == 2 + 3
