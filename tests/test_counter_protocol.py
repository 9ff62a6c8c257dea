"""Both streaming counters (band error types, Cheng et al. Boundary IoU) share one protocol:
state_dict / load_state_dict / from_state_dict, merge / +=, reset, and argument checks."""

import numpy as np
import pytest

from segalias_d2.evaluation.boundary_errors import BoundaryErrorCounter
from segalias_d2.evaluation.boundary_iou_metric import BoundaryIoUCounter

K = 3
COUNTERS = {
    "band_errors": (BoundaryErrorCounter, {"band_width": 7}, {"band_width": 9}, "band_width"),
    "boundary_iou": (
        BoundaryIoUCounter,
        {"dilation_ratio": 0.05},
        {"dilation_ratio": 0.02},
        "dilation_ratio",
    ),
}


def _pairs(n=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        gt = np.zeros((30, 41), np.uint8)
        gt[:, rng.integers(5, 35) :] = 1
        gt[: rng.integers(3, 25)] = 2
        gt[rng.random(gt.shape) < 0.03] = 255
        pred = np.roll(np.where(gt == 255, 0, gt), int(rng.integers(-3, 4)), axis=1).astype(
            np.uint8
        )
        out.append((pred, gt))
    return out


@pytest.fixture(params=sorted(COUNTERS))
def counter_kind(request):
    return COUNTERS[request.param]


def _filled(cls, kw, pairs):
    c = cls(K, 255, **kw)
    for p, g in pairs:
        c.update(p, g)
    return c


def test_state_round_trip_and_merge_equal_one_pass(counter_kind):
    cls, kw, _, _ = counter_kind
    pairs = _pairs()
    single = _filled(cls, kw, pairs)
    a, b = _filled(cls, kw, pairs[:1]), _filled(cls, kw, pairs[1:])
    restored = cls.from_state_dict(a.state_dict())
    assert restored.settings() == a.settings() and restored.num_images == 1
    restored += b
    assert restored.num_images == single.num_images == 4
    assert restored.metrics() == pytest.approx(single.metrics(), nan_ok=True)
    fresh = cls(K, 255, **kw).load_state_dict(single.state_dict())
    assert fresh.metrics() == pytest.approx(single.metrics(), nan_ok=True)
    # state_dict copies: changing it leaves the counter alone
    state = single.state_dict()
    for name in cls._arrays:
        state[name][...] = 0
    assert single.metrics() == pytest.approx(fresh.metrics(), nan_ok=True)
    single.reset()
    assert single.num_images == 0 and all(not getattr(single, n).any() for n in cls._arrays)


def test_settings_and_types_must_match(counter_kind):
    cls, kw, other_kw, key = counter_kind
    a = cls(K, 255, **kw)
    with pytest.raises(ValueError, match=key):
        a.merge(cls(K, 255, **other_kw))
    with pytest.raises(ValueError, match="num_classes: 3 here vs 4"):
        a.merge(cls(K + 1, 255, **kw))
    with pytest.raises(ValueError, match="ignore_label"):
        a += cls(K, 254, **kw)
    other_cls = BoundaryIoUCounter if cls is BoundaryErrorCounter else BoundaryErrorCounter
    with pytest.raises(TypeError, match="cannot merge"):
        a.merge(other_cls(K))
    with pytest.raises(ValueError, match=key):
        a.load_state_dict(cls(K, 255, **other_kw).state_dict())


def test_bad_states_are_refused(counter_kind):
    cls, kw, _, _ = counter_kind
    a = cls(K, 255, **kw)
    state = a.state_dict()
    del state["num_images"]
    with pytest.raises(KeyError, match="num_images"):
        a.load_state_dict(state)
    state = a.state_dict()
    name = cls._arrays[0]
    state[name] = state[name][..., :-1]
    with pytest.raises(ValueError, match=f"'{name}' must be an integer array of shape"):
        a.load_state_dict(state)
    state = a.state_dict()
    state[name] = state[name].astype(np.float64)
    with pytest.raises(ValueError, match="integer array"):
        a.load_state_dict(state)
    with pytest.raises(TypeError, match="expects a dict"):
        a.load_state_dict([1, 2])


def test_argument_checks(counter_kind):
    cls, kw, _, key = counter_kind
    for bad in (0, 2.5, "3", True):
        with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
            cls(bad, 255, **kw)
    with pytest.raises(ValueError, match="ignore_label must be an integer"):
        cls(K, "255", **kw)
    bad_values = {
        "band_width": (4, 0, -3, "15"),
        "dilation_ratio": (0, -0.02, 1.5, "0.02", float("nan")),
    }[key]
    for bad in bad_values:
        with pytest.raises(ValueError, match=key):
            cls(K, 255, **{key: bad})
    c = _filled(cls, kw, _pairs(1))
    with pytest.raises(ValueError, match="got 2 class names for 3 classes"):
        c.metrics(["a", "b"])
    p, g = _pairs(1)[0]
    with pytest.raises(ValueError, match=r"shapes differ for img7"):
        c.update(p[:, :-1], g, name="img7")
    g = g.copy()
    g[0, 0] = 5
    with pytest.raises(ValueError, match=r"ground truth of img8 has labels \[5\] outside \[0, 3\)"):
        c.update(p, g, name="img8")
    with pytest.raises(ValueError, match="integer label map"):
        c.update(p.astype(np.float32), g)
