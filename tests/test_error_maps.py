"""Per-image error maps: consistency with the metric regions and hand-computed example."""

import importlib.util
import os

import cv2
import numpy as np
import pytest
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from segalias_d2 import add_segalias_config
from segalias_d2.evaluation import BoundaryErrorCounter, compute_error_maps, overlay_error_maps
from segalias_d2.evaluation.analysis import setup_cfg


def _example():
    gt = np.zeros((64, 200), np.uint8)
    gt[:, 100:] = 1
    pred = np.zeros((64, 200), np.uint8)
    pred[:, 104:] = 1
    return pred, gt


def test_worked_example_maps():
    pred, gt = _example()
    m = compute_error_maps(pred, gt, band_width=15)
    # wrong pixels: columns 100..103 in every row; all inside both bands (96..107 = intersection)
    cols = np.where(m["wrong"][0])[0]
    assert np.array_equal(cols, np.arange(100, 104))
    for k in ("false_response", "merging", "displacement"):
        assert m[k].sum() == 4 * 64
    assert m["interior"].sum() == 0
    assert (m["category"] == 3).sum() == 4 * 64
    assert set(np.unique(m["category"])) == {0, 3}


def test_maps_consistent_with_counter_regions():
    rng = np.random.default_rng(0)

    gt = cv2.resize(
        rng.integers(0, 4, (5, 7)).astype(np.uint8), (90, 70), interpolation=cv2.INTER_NEAREST
    )
    gt[rng.random(gt.shape) < 0.05] = 255
    pred = cv2.resize(
        rng.integers(0, 4, (5, 7)).astype(np.uint8), (90, 70), interpolation=cv2.INTER_NEAREST
    )
    m = compute_error_maps(pred, gt, band_width=9)
    c = BoundaryErrorCounter(4, band_width=9)
    c.update(pred, gt)
    for key, region in (("false_response", "pred"), ("merging", "gt"), ("displacement", "inter")):
        conf = c.region_confusion(region)[:4]  # valid GT rows
        n_wrong = conf.sum() - np.trace(conf[:, :4])
        assert m[key].sum() == n_wrong, key
    conf = c.region_confusion("all")[:4]
    assert m["wrong"].sum() == conf.sum() - np.trace(conf[:, :4])
    # display categories partition the wrong pixels
    assert ((m["category"] >= 1) & (m["category"] <= 4)).sum() == m["wrong"].sum()
    assert (m["category"] == 255).sum() == (gt == 255).sum()


def test_overlay_shapes_and_colours():
    pred, gt = _example()
    m = compute_error_maps(pred, gt)
    img = np.full((64, 200, 3), 100, np.uint8)
    ov = overlay_error_maps(img, m, alpha=1.0, draw_bands=False)
    assert ov.shape == (64, 200, 3) and ov.dtype == np.uint8
    assert tuple(ov[10, 101]) == (255, 200, 0)  # displacement colour at alpha=1
    assert tuple(ov[10, 10]) == (100, 100, 100)
    ov2 = overlay_error_maps(img[..., 0], m)  # gray input
    assert ov2.shape == (64, 200, 3)
    with pytest.raises(ValueError, match="differs"):
        overlay_error_maps(img[:10], m)
    with pytest.raises(ValueError, match="differs"):
        compute_error_maps(pred[:10], gt)


# ---------------------------------------------------------------------------------------------
# tools/visualize_errors.py end to end on a tiny registered dataset with a random-weight model
# ---------------------------------------------------------------------------------------------


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f"_tool_{name}", os.path.join(REPO, "tools", f"{name}.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def register_tiny_semseg(tmp_path, name, n=2, h=64, w=96):

    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        gt = np.zeros((h, w), np.uint8)
        gt[:, w // 2 :] = 1
        gt[: h // 4] = 2
        gt[-3:] = 255
        ip, gp = tmp_path / f"im{i}.png", tmp_path / f"gt{i}.png"
        Image.fromarray(img).save(ip)
        Image.fromarray(gt).save(gp)
        recs.append(
            {
                "file_name": str(ip),
                "sem_seg_file_name": str(gp),
                "height": h,
                "width": w,
                "image_id": i,
            }
        )
    DatasetCatalog.register(name, lambda: recs)
    MetadataCatalog.get(name).set(
        stuff_classes=["a", "b", "c"], ignore_label=255, evaluator_type="sem_seg"
    )
    return recs


SEMSEG_OPTS = [
    "MODEL.WEIGHTS",
    "",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
    "3",
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "INPUT.MIN_SIZE_TEST",
    "64",
    "INPUT.MAX_SIZE_TEST",
    "96",
    "MODEL.DEVICE",
    "cpu",
]


def test_visualize_errors_tool(tmp_path):

    name = f"_segalias_vis_{os.getpid()}"
    recs = register_tiny_semseg(tmp_path, name)
    try:
        tool = load_tool("visualize_errors")
        cfg_file = model_zoo.get_config_file("Misc/semantic_R_50_FPN_1x.yaml")
        out = tmp_path / "vis"
        args = tool.get_parser().parse_args(
            ["--config-file", cfg_file, "--dataset", name, "--output", str(out), "--images", "1"]
            + SEMSEG_OPTS
        )
        written = tool.main(args)
        assert [os.path.basename(p) for p in written] == ["im1_errors.png"]
        got = np.asarray(Image.open(written[0]))  # the 64x96 overlay, the legend panel on its right
        assert got.shape[1] > 96 and got.shape[0] >= 64 and got.shape[2] == 3
        # saved predictions: prediction == GT (ignore -> 0) has no error pixels on valid pixels
        pdir = tmp_path / "preds"
        pdir.mkdir()
        for i, r in enumerate(recs):
            g = np.asarray(Image.open(r["sem_seg_file_name"])).copy()
            g[g == 255] = 0
            Image.fromarray(g).save(pdir / f"im{i}.png")
        args = tool.get_parser().parse_args(
            [
                "--config-file",
                cfg_file,
                "--dataset",
                name,
                "--output",
                str(tmp_path / "vis2"),
                "--predictions",
                str(pdir),
                "--images",
                "all",
            ]
            + SEMSEG_OPTS
        )
        assert len(tool.main(args)) == 2
        lines = (tmp_path / "vis2" / "error_pixels.csv").read_text().splitlines()
        assert lines[2].split(",")[1:6] == ["0"] * 5
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_visualize_errors_alpha_flag(tmp_path):
    """Overlay opacity is the tool flag --alpha (formerly the config key
    TEST.SEGALIAS.VIS_ALPHA)."""

    name = f"_segalias_vis_alpha_{os.getpid()}"
    recs = register_tiny_semseg(tmp_path, name, n=1)
    try:
        tool = load_tool("visualize_errors")
        cfg_file = model_zoo.get_config_file("Misc/semantic_R_50_FPN_1x.yaml")
        base = ["--config-file", cfg_file, "--dataset", name, "--images", "all"]
        assert tool.get_parser().parse_args(base).alpha == 0.6
        with pytest.raises(SystemExit):
            tool.get_parser().parse_args(base + ["--alpha", "1.5"])
        pdir = tmp_path / "preds"
        pdir.mkdir()
        pred = np.zeros(
            (64, 96), np.uint8
        )  # class 0 everywhere: errors in both bands and the interior
        Image.fromarray(pred).save(pdir / "im0.png")
        args = tool.get_parser().parse_args(
            base
            + ["--predictions", str(pdir), "--output", str(tmp_path / "v"), "--alpha", "0.25"]
            + SEMSEG_OPTS
        )
        written = tool.main(args)
        gt = np.asarray(Image.open(recs[0]["sem_seg_file_name"]))
        img = np.asarray(Image.open(recs[0]["file_name"]))
        maps = compute_error_maps(pred, gt, 15, 255)
        got = np.asarray(Image.open(written[0]))[:64, :96]  # the overlay part of the annotated map
        assert np.array_equal(got, overlay_error_maps(img, maps, alpha=0.25))
        assert not np.array_equal(got, overlay_error_maps(img, maps, alpha=0.6))
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.mark.parametrize(
    "key,flag",
    [("ERROR_MAP_DIR", "--output"), ("VIS_ALPHA", "--alpha"), ("ALIASING_NYQUIST", "--nyquist")],
)
def test_tool_only_options_are_not_config_keys(tmp_path, key, flag):

    old = tmp_path / "old.yaml"
    old.write_text(f"TEST:\n  SEGALIAS:\n    {key}: 0.5\n")
    cfg = add_segalias_config(get_cfg())
    assert key not in cfg.TEST.SEGALIAS
    for load in (
        lambda: cfg.clone().merge_from_file(str(old)),
        lambda: setup_cfg(str(old), []),
        lambda: cfg.clone().merge_from_list([f"TEST.SEGALIAS.{key}", "0.5"]),
    ):
        with pytest.raises(
            KeyError, match=f"TEST.SEGALIAS.{key} was renamed to the {flag} flag of tools/"
        ):
            load()
