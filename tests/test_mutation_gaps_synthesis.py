"""The calibrated synthesis constants against ../shared/reference/lis_lowlight.md §2, and the
samplers' behaviour against them (issue 17): K bounds and the log-uniform K, the read- and row-noise
regressions on log K (recovered by least squares from seeded draws), the white-balance / brightness
ranges of unprocess, the colour matrix rows, the exposure ratio range, and what each noise component
does to a flat image (shot noise in multiples of K, one row offset per row and channel, Tukey-lambda
read noise of the drawn scale)."""

import math

import cv2
import numpy as np
import pytest
from scipy import stats

from segalias_d2.data import synthesis as S

# lis_lowlight.md §2.2 / §2.1, typed in from the note
NOTE_K_MIN, NOTE_K_MAX = 0.2182, 13.964
NOTE_TL = (0.6559, 1.0927, 0.2860)  # log sigma_TL = 0.6559 log K + 1.0927 + 0.2860 eps
NOTE_ROW = (0.4713, -0.8079, 0.2436)  # log sigma_r = 0.4713 log K - 0.8079 + 0.2436 eps
NOTE_CAM2RGB_ROWS = [
    [2.0484, -1.2716, 0.2232],
    [-0.2216, 1.7769, -0.5553],
    [-0.0077, -0.5926, 1.6003],
]
NOTE_SIGMA_TL = {
    NOTE_K_MIN: 1.1,
    1.0: 3.0,
    NOTE_K_MAX: 16.8,
}  # "sigma_TL ~ 1.1 DN at K_min, 3.0 at K = 1, 16.8 at K_max"
NOTE_SIGMA_R = {NOTE_K_MIN: 0.22, 1.0: 0.45, NOTE_K_MAX: 1.54}


def test_constants_are_the_reference_values():
    assert (S.K_MIN, S.K_MAX) == (NOTE_K_MIN, NOTE_K_MAX)
    assert tuple(S.TL_SCALE_FIT) == NOTE_TL and tuple(S.ROW_SCALE_FIT) == NOTE_ROW
    np.testing.assert_allclose(
        S.CAM2RGB, NOTE_CAM2RGB_ROWS, rtol=0, atol=5e-5
    )  # the note rounds to 4 decimals
    np.testing.assert_allclose(S.RGB2CAM @ np.array(NOTE_CAM2RGB_ROWS), np.eye(3), atol=1e-3)
    assert S.SATURATION == 16383 - 512


@pytest.fixture(scope="module")
def draws():
    rng = np.random.default_rng(2024)
    params = [S.sample_noise_params(rng) for _ in range(20000)]
    return {
        key: np.array([getattr(p, key) for p in params])
        for key in ("K", "sigma_tl", "sigma_r", "ratio")
    }


def test_system_gain_is_log_uniform_between_the_calibrated_bounds(draws):
    log_k = np.log(draws["K"])
    lo, hi = math.log(NOTE_K_MIN), math.log(NOTE_K_MAX)
    assert lo <= log_k.min() < lo + 0.01 and hi - 0.01 < log_k.max() <= hi
    ks = stats.kstest(log_k, stats.uniform(loc=lo, scale=hi - lo).cdf)
    assert ks.pvalue > 1e-3, (
        ks
    )  # uniform in log K (a uniform K would put 3/4 of the draws above K = 3.5)
    assert np.median(draws["K"]) == pytest.approx(math.sqrt(NOTE_K_MIN * NOTE_K_MAX), rel=0.05)


@pytest.mark.parametrize(
    "key,fit,at", [("sigma_tl", NOTE_TL, NOTE_SIGMA_TL), ("sigma_r", NOTE_ROW, NOTE_SIGMA_R)]
)
def test_noise_scales_follow_the_log_linear_regressions_of_the_note(draws, key, fit, at):
    x, y = np.log(draws["K"]), np.log(draws[key])
    slope, bias = np.polyfit(x, y, 1)
    residual = y - (slope * x + bias)
    assert slope == pytest.approx(fit[0], abs=0.01) and bias == pytest.approx(fit[1], abs=0.01)
    assert residual.std() == pytest.approx(fit[2], abs=0.006)
    assert abs(stats.skew(residual)) < 0.1  # Gaussian residuals in log space
    for k, sigma in at.items():  # the note's worked values of the median scale
        assert math.exp(fit[0] * math.log(k) + fit[1]) == pytest.approx(sigma, rel=0.05)


def test_exposure_ratio_is_uniform_10_to_100(draws):
    r = draws["ratio"]
    assert 10.0 <= r.min() < 10.1 and 99.9 < r.max() <= 100.0
    assert stats.kstest(r, stats.uniform(loc=10, scale=90).cdf).pvalue > 1e-3


def test_unprocess_draws_the_white_balance_and_brightness_of_the_note():
    pixel = np.full((2, 2, 3), 0.3)
    red, blue, inv_brightness = [], [], []
    rng = np.random.default_rng(7)
    for _ in range(4000):
        _, meta = S.unprocess(pixel, rng)
        red.append(meta["red_gain"])
        blue.append(meta["blue_gain"])
        inv_brightness.append(1.0 / meta["brightness"])
    red, blue, inv_brightness = map(np.array, (red, blue, inv_brightness))
    assert 1.9 <= red.min() < 1.92 and 2.38 < red.max() <= 2.4  # g_r ~ U(1.9, 2.4)
    assert 1.5 <= blue.min() < 1.52 and 1.88 < blue.max() <= 1.9  # g_b ~ U(1.5, 1.9)
    assert stats.kstest(red, stats.uniform(loc=1.9, scale=0.5).cdf).pvalue > 1e-3
    assert stats.kstest(blue, stats.uniform(loc=1.5, scale=0.4).cdf).pvalue > 1e-3
    # g_rgb = 1 / N(0.8, 0.1)
    assert inv_brightness.mean() == pytest.approx(
        0.8, abs=0.006
    ) and inv_brightness.std() == pytest.approx(0.1, abs=0.005)


def test_unprocess_of_one_dark_pixel_by_hand():
    """Inverse smoothstep, inverse gamma 2.2, inverse CCM (note's rows), gains [1/g_r, 1, 1/g_b] /
    g_rgb."""
    srgb = np.array([0.2, 0.35, 0.5])
    x = 0.5 - np.sin(np.arcsin(1 - 2 * srgb) / 3)
    x = np.maximum(x, 1e-8) ** 2.2
    x = np.linalg.inv(np.array(NOTE_CAM2RGB_ROWS)) @ x
    red, blue, brightness = 2.1, 1.7, 1.25
    expected = (
        x * np.array([1 / red, 1.0, 1 / blue]) / brightness
    )  # mean < 0.9: no highlight protection
    cam, meta = S.unprocess(np.tile(srgb, (2, 2, 1)), wb_gains=(red, blue, brightness))
    np.testing.assert_allclose(cam[0, 0], expected, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(
        meta["gains"][0, 0], [1 / red / brightness, 1 / brightness, 1 / blue / brightness]
    )


def _params(**kw):
    base = dict(ratio=10.0, K=2.0, tukey_lambda=0.1, sigma_tl=3.0, sigma_r=5.0)
    base.update(kw)
    return S.NoiseParams(**base)


def test_shot_noise_comes_in_multiples_of_the_system_gain():
    params = _params(K=2.5, ratio=10.0)
    y = 0.3  # dark DN = 0.3 * 15871 / 10 = 476.1: Poisson mean 190.4 electrons
    out = S.add_pgru_noise(
        np.full((64, 64, 4), y), params, np.random.default_rng(0), components="P"
    )
    electrons = out.astype(np.float64) * S.SATURATION / params.ratio / params.K
    np.testing.assert_allclose(electrons, np.round(electrons), atol=2e-3)  # K * Poisson(y_DN / K)
    mean = y * S.SATURATION / params.ratio / params.K
    assert electrons.mean() == pytest.approx(mean, rel=0.01) and electrons.var() == pytest.approx(
        mean, rel=0.08
    )


def test_row_noise_is_one_offset_per_row_and_channel():
    params = _params(sigma_r=6.0, ratio=20.0)
    out = S.add_pgru_noise(
        np.full((400, 50, 4), 0.5), params, np.random.default_rng(1), components="R"
    )
    dn = (out.astype(np.float64) - 0.5) * S.SATURATION / params.ratio  # offsets in dark DN
    np.testing.assert_allclose(
        dn, dn[:, :1, :].repeat(50, axis=1), atol=1e-3
    )  # constant along each row
    offsets = dn[:, 0, :]
    assert offsets.std() == pytest.approx(6.0, rel=0.05)
    assert (
        abs(np.corrcoef(offsets[:, 0], offsets[:, 1])[0, 1]) < 0.15
    )  # channels draw their own offsets


def test_read_noise_is_tukey_lambda_of_the_drawn_shape_and_scale():
    params = _params(tukey_lambda=0.2, sigma_tl=4.0, ratio=10.0)
    out = S.add_pgru_noise(
        np.full((200, 200, 1), 0.5), params, np.random.default_rng(2), components="G"
    )
    dn = (out.astype(np.float64).ravel() - 0.5) * S.SATURATION / params.ratio
    assert stats.kstest(dn, stats.tukeylambda(0.2, scale=4.0).cdf).pvalue > 1e-3
    for other in (
        stats.tukeylambda(0.1, scale=4.0),
        stats.tukeylambda(0.2, scale=3.6),
    ):  # another shape or scale
        assert stats.kstest(dn, other.cdf).pvalue < 1e-6
    assert stats.kurtosis(dn) == pytest.approx(
        float(stats.tukeylambda(0.2).stats(moments="k")), abs=0.05
    )


def test_pack_rendering_is_red_mean_green_blue_of_the_packed_planes():
    # packed planes in LIS order [R, G1, B, G2]; every value distinct so a swapped or mis-weighted
    # plane shows
    packed = np.zeros((2, 3, 4), np.float32)
    packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = 0.125, 0.25, 0.5, 0.5
    packed[1, 2] = [
        0.0,
        1.0,
        0.0625,
        0.5,
    ]  # G1 + G2 != 1 anywhere, so 0.5 / (G1 + G2) is not the mean either
    out = S.process_raw_rgb(packed, method="pack")
    assert out.dtype == np.float32 and out.shape == (2, 3, 3)
    expected = np.empty((2, 3, 3), np.float32)
    expected[...] = [0.125, 0.375, 0.5]  # (0.25 + 0.5) / 2
    expected[1, 2] = [0.0, 0.75, 0.0625]
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(
        S.process_raw_rgb(packed, (2, 3), method="pack"), expected
    )  # already that size
    # another size: OpenCV bilinear of the (h, w) rendering, never a crop
    flat = np.broadcast_to(np.float32([0.125, 0.25, 0.5, 0.5]), (2, 3, 4))
    np.testing.assert_allclose(
        S.process_raw_rgb(flat, (4, 6), method="pack"),
        np.broadcast_to(np.float32([0.125, 0.375, 0.5]), (4, 6, 3)),
        rtol=0,
        atol=1e-7,
    )
    with pytest.raises(ValueError, match="'pack' has no 8-bit"):
        S.process_raw_rgb(packed, method="pack", bit_depth=8)


def test_bilinear_rendering_crops_one_extra_pixel_and_resizes_otherwise():
    """Odd LIS sizes were edge-padded to even before packing: a demosaic at most 1 px larger than
    out_hw is cropped; any other size is OpenCV-bilinear resized (never cropped)."""

    packed = np.random.default_rng(3).random((4, 5, 4)).astype(np.float32)
    full = S.process_raw_rgb(packed)  # (8, 10, 3)
    assert (
        full.shape == (8, 10, 3) and full.dtype == np.float32
    )  # the 16-bit demosaic is integer inside
    for hw in ((7, 9), (7, 10), (8, 9)):
        np.testing.assert_array_equal(
            S.process_raw_rgb(packed, hw), full[: hw[0], : hw[1]], err_msg=str(hw)
        )
    for hw in ((6, 10), (8, 8), (9, 10)):
        np.testing.assert_allclose(
            S.process_raw_rgb(packed, hw),
            cv2.resize(full, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR),
            rtol=0,
            atol=1e-4,
            err_msg=str(hw),
        )
