"""Low-light synthesis: invertibility, noise statistics, channel order, reproducibility."""

import numpy as np
import pytest
from detectron2.data import transforms as T

from segalias_d2.data import synthesis as S
from segalias_d2.data.synthesis_aug import RandomLowLightSynthesis


def _moderate_image(seed=0, h=48, w=64):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.6, size=(h, w, 1))
    return np.clip(base + rng.uniform(-0.08, 0.08, size=(h, w, 3)), 0, 1)


def test_unprocess_then_forward_isp_is_identity():
    img = _moderate_image()
    for seed in range(3):
        cam, meta = S.unprocess(img, np.random.default_rng(seed))
        assert cam.min() >= 0 and cam.max() <= 1
        np.testing.assert_allclose(S.process_srgb(cam, meta), img, atol=1e-5)


def test_noise_off_clean_equals_noisy_and_mosaic_consistency():
    yy, xx = np.mgrid[0:48, 0:64]
    img = np.stack(
        [0.3 + 0.3 * xx / 64, 0.4 + 0.2 * yy / 48, 0.5 - 0.2 * xx / 64], axis=-1
    )  # smooth
    res = S.synthesize_lowlight(
        img, np.random.default_rng(0), noise=False, output="packed", return_dark=True
    )
    np.testing.assert_array_equal(res["noisy"], res["clean"])
    assert res["params"] is None
    cam = res["cam_rgb"]
    p = res["noisy"]
    np.testing.assert_allclose(p[..., 0], cam[0::2, 0::2, 0], atol=1e-6)
    np.testing.assert_allclose(p[..., 2], cam[1::2, 1::2, 2], atol=1e-6)
    # the full path back to sRGB (demosaic of a smooth image) is close to the input
    back = S.process_srgb(S.demosaic(p), res["meta"])
    assert np.abs(back - img)[2:-2, 2:-2].max() < 0.02


def test_inverse_smoothstep_inverts_smoothstep():
    x = np.linspace(0, 1, 101)
    np.testing.assert_allclose(S.smoothstep(S.inverse_smoothstep(x)), x, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_flat_patch_variance_matches_model(seed):
    rng = np.random.default_rng(seed)
    params = S.sample_noise_params(rng, ratio=10.0)  # r = 10 keeps y = 0.5 far from clipping
    assert S.K_MIN <= params.K <= S.K_MAX and params.tukey_lambda in S.TUKEY_LAMBDAS
    flat = np.full((512, 512, 4), 0.5)
    noisy = S.add_pgru_noise(flat, params, rng)
    assert noisy.min() > 0 and noisy.max() < 1
    assert noisy.var() == pytest.approx(S.predicted_variance(0.5, params), rel=0.05)
    assert noisy.mean() == pytest.approx(0.5, abs=0.01)


def test_scalar_quantization_quirk_and_components():
    rng = np.random.default_rng(5)
    params = S.sample_noise_params(rng, ratio=20.0)
    flat = np.full((256, 256, 4), 0.4)
    shot_only = S.add_pgru_noise(flat, params, rng, components="P")
    assert shot_only.var() == pytest.approx(S.predicted_variance(0.4, params, "P"), rel=0.05)
    q = S.add_pgru_noise(flat, params, rng, components="U", quantization="scalar")
    assert np.ptp(q) < 1e-6  # one scalar for the whole image
    assert S.predicted_variance(0.4, params, "U", "scalar") == 0.0


def test_channel_order_is_rgb():
    # a mosaic with only the R sites lit demosaics into channel 0
    packed = np.zeros((8, 8, 4))
    packed[..., 0] = 0.8
    rgb = S.demosaic(packed)
    assert rgb[..., 0].mean() > 0.5 and rgb[..., 1:].max() == 0
    assert S.process_raw_rgb(packed, method="pack")[..., 0].min() == pytest.approx(0.8)
    # a red sRGB input keeps its dominant energy in channel 0 through the whole pipeline
    red = np.zeros((16, 16, 3))
    red[..., 0] = 0.8
    red[..., 1:] = 0.05
    for output, chans in (("raw_rgb", [0, 1, 2]), ("packed", [0, 1, 2])):
        out = S.synthesize_lowlight(red, np.random.default_rng(0), noise=False, output=output)[
            "noisy"
        ]
        m = out.reshape(-1, out.shape[-1]).mean(0)[chans]
        assert np.argmax(m) == 0, (output, m)


def test_reproducible_and_shapes():
    img = (np.random.default_rng(0).uniform(0, 1, (33, 47, 3)) * 255).astype(np.uint8)  # odd sizes
    a = S.synthesize_lowlight(img, np.random.default_rng(7))
    b = S.synthesize_lowlight(img, np.random.default_rng(7))
    c = S.synthesize_lowlight(img, np.random.default_rng(8))
    np.testing.assert_array_equal(a["noisy"], b["noisy"])
    assert a["params"] == b["params"] and not np.array_equal(a["noisy"], c["noisy"])
    assert a["noisy"].shape == a["clean"].shape == (33, 47, 3) and a["noisy"].dtype == np.float32
    assert 10 <= a["params"]["ratio"] <= 100
    p = S.synthesize_lowlight(img, np.random.default_rng(7), output="packed")
    assert p["noisy"].shape == (17, 24, 4)
    assert S.synthesize_lowlight(img, 1, method="pack")["noisy"].shape == (33, 47, 3)


def test_detectron2_transform():

    img = (np.random.default_rng(0).uniform(0, 1, (40, 60, 3)) * 255).astype(np.uint8)
    inp = T.AugInput(img)
    tfm = T.AugmentationList([RandomLowLightSynthesis(seed=3)])(inp)
    assert inp.image.shape == (40, 60, 3) and inp.image.dtype == np.float32
    np.testing.assert_array_equal(tfm.apply_coords(np.array([[1.0, 2.0]])), [[1.0, 2.0]])
