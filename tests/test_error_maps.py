"""Per-image error maps: consistency with the metric regions and hand-computed example."""
import numpy as np
import pytest

from segalias_d2.evaluation import BoundaryErrorCounter, compute_error_maps, overlay_error_maps


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
    import cv2

    gt = cv2.resize(rng.integers(0, 4, (5, 7)).astype(np.uint8), (90, 70), interpolation=cv2.INTER_NEAREST)
    gt[rng.random(gt.shape) < 0.05] = 255
    pred = cv2.resize(rng.integers(0, 4, (5, 7)).astype(np.uint8), (90, 70), interpolation=cv2.INTER_NEAREST)
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
