"""Units of the training engine against hand formulas: the poly schedule with a floor and warm-up
(mmcv's formula), and sliding-window inference."""

import pytest
import torch
from common import sliding_window_semseg_cfg
from detectron2.modeling import build_model
from detectron2.solver.lr_scheduler import LRMultiplier

from segalias_d2.modeling.meta_arch import sliding_window_logits
from segalias_d2.modeling.meta_arch.sliding_window import _window_starts
from segalias_d2.solver import WarmupPolyWithFloorParamScheduler


def _mmcv_poly_lr(it, base_lr, max_iter, power, min_lr, warmup_iters, warmup_ratio):
    lr = (base_lr - min_lr) * (1 - it / max_iter) ** power + min_lr
    if it < warmup_iters:
        lr *= 1 - (1 - it / warmup_iters) * (1 - warmup_ratio)
    return lr


def test_warmup_poly_with_floor_matches_mmcv_formula():
    base_lr, max_iter = 0.01, 1000
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base_lr, momentum=0.9)
    sched = WarmupPolyWithFloorParamScheduler(
        power=0.9, floor=1e-4 / base_lr, warmup_length=200 / max_iter, warmup_factor=0.1
    )
    lr_sched = LRMultiplier(opt, multiplier=sched, max_iter=max_iter)
    seen = {}
    for it in range(max_iter):
        seen[it] = opt.param_groups[0]["lr"]
        opt.step()
        lr_sched.step()
    for it in (0, 1, 50, 199, 200, 201, 500, 999):
        assert seen[it] == pytest.approx(
            _mmcv_poly_lr(it, base_lr, max_iter, 0.9, 1e-4, 200, 0.1), rel=1e-9
        )
    assert seen[0] == pytest.approx(0.001)  # warm-up starts at 10%
    assert min(seen.values()) > 1e-4  # the floor holds


def test_window_starts_cover_the_axis_and_stay_inside():
    assert _window_starts(10, 4, 3) == [0, 3, 6]
    assert _window_starts(11, 4, 3) == [0, 3, 6, 7]  # last window shifted back to end at the border
    assert _window_starts(3, 8, 5) == [0]  # window larger than the image: one clipped window


def test_sliding_window_logits_average_overlaps():
    image = torch.arange(2 * 11 * 13, dtype=torch.float32).reshape(2, 11, 13)
    # a "model" that returns its crop unchanged: the average of identical copies is the image
    out = sliding_window_logits(lambda crop: crop.clone(), image, (4, 5), (3, 4))
    torch.testing.assert_close(out, image)
    # a model that returns 1 + the window index: overlaps average the window ids
    calls = []

    def predict(crop):
        calls.append(crop.shape)
        return torch.full((1,) + crop.shape[1:], float(len(calls)))

    out = sliding_window_logits(predict, image, (6, 13), (5, 13))
    assert _window_starts(11, 6, 5) == [0, 5]
    assert out[0, 0, 0] == 1 and out[0, 10, 0] == 2 and out[0, 5, 0] == pytest.approx(1.5)


def test_sliding_window_segmentor_equals_whole_image_when_one_window_covers_it():

    cfg = sliding_window_semseg_cfg(num_classes=5, window=[64, 96])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    batch = [{"image": torch.rand(3, 64, 96) * 255, "height": 64, "width": 96}]
    with torch.no_grad():
        whole = model(batch)[0]["sem_seg"]
        model.sliding_window = True
        windowed = model(batch)[0]["sem_seg"]
    torch.testing.assert_close(windowed, whole, atol=1e-5, rtol=1e-5)
