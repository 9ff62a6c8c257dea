"""DAF / FreqMix / BlurPool against independent expectations (reference transcription, analytic signals, the
mask table of seg_aliasing_method.md section 2.2)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segalias_d2.modeling.fourier_filters import (
    BlurPool,
    DeAliasingFilter,
    FreqMix,
    box_mask_bounds,
    reference_daf,
    reference_freqmix,
    symmetric_rfft_mask,
)

SIZES = [(32, 32), (33, 31), (24, 40), (17, 50), (7, 6)]  # even, odd, non-square, mixed parity


def _max_abs(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("cutoff", [0.35, 0.25, 0.1, 0.5])
def test_daf_equals_reference(hw, cutoff):
    g = torch.Generator().manual_seed(hash(hw) % 1000)
    x = torch.randn(2, 3, *hw, generator=g)
    assert _max_abs(DeAliasingFilter(cutoff)(x), reference_daf(x, cutoff)) <= 1e-5


@pytest.mark.parametrize("hw", SIZES)
def test_freqmix_equals_reference_and_gradients(hw):
    torch.manual_seed(0)
    m = FreqMix(16, reduction=4)
    x = torch.randn(2, 16, *hw, requires_grad=True)
    y_fast = m(x)
    y_ref = reference_freqmix(x, m)
    assert _max_abs(y_fast, y_ref) <= 1e-5
    gy = torch.randn_like(y_fast)
    g_fast = torch.autograd.grad(y_fast, [x] + list(m.parameters()), gy)
    g_ref = torch.autograd.grad(y_ref, [x] + list(m.parameters()), gy)
    for a, b in zip(g_fast, g_ref):
        assert torch.isfinite(a).all()
        assert _max_abs(a, b) <= 1e-4 * max(1.0, b.abs().max().item())


# section 2.2 table: N -> (slice for t=0.35, relative bins, full-weight |k| max, relative bins for t=0.25)
MASK_TABLE = {
    192: ((29, 163), (-67, 66), 66, (-48, 47)),
    128: ((19, 109), (-45, 44), 44, (-32, 31)),
    96: ((14, 82), (-34, 33), 33, (-24, 23)),
    64: ((10, 54), (-22, 21), 21, (-16, 15)),
    48: ((7, 41), (-17, 16), 16, (-12, 11)),
    32: ((5, 27), (-11, 10), 10, (-8, 7)),
    24: ((4, 20), (-8, 7), 7, None),
    16: ((2, 14), (-6, 5), 5, None),
}


@pytest.mark.parametrize("n", sorted(MASK_TABLE))
def test_mask_slices_match_table(n):
    sl, rel, kmax, rel25 = MASK_TABLE[n]
    assert box_mask_bounds(n, 0.35) == sl
    assert (sl[0] - n // 2, sl[1] - 1 - n // 2) == rel
    if rel25 is not None:
        lo, hi = box_mask_bounds(n, 0.25)
        assert (lo - n // 2, hi - 1 - n // 2) == rel25
    # symmetrised response along the DC column: 1 for |k| <= kmax, 0.5 at the asymmetric edge, 0 beyond
    col = symmetric_rfft_mask(n, n, 0.35)[:, 0].numpy()
    k = np.fft.fftfreq(n, 1.0 / n).astype(int)
    expect = np.where(np.abs(k) <= kmax, 1.0, 0.0)
    expect[np.abs(k) == -rel[0]] = 0.5  # kept on the negative side only
    np.testing.assert_array_equal(col, expect)


def test_python_round_half_to_even():
    # H=30: 15 - 10.5 = 4.5 -> 4, 15 + 10.5 = 25.5 -> 26; H=10: 1.5 -> 2, 8.5 -> 8
    assert box_mask_bounds(30, 0.35) == (4, 26)
    assert box_mask_bounds(10, 0.35) == (2, 8)


def _sinusoid(n, k, axis):
    t = torch.arange(n, dtype=torch.float64)
    s = torch.cos(2 * math.pi * k * t / n + 0.3)
    img = s[:, None].expand(n, n) if axis == 0 else s[None, :].expand(n, n)
    return img.float()[None, None].contiguous()


@pytest.mark.parametrize("axis", [0, 1])
def test_sinusoids_above_cutoff_removed_below_kept(axis):
    n = 64
    daf = DeAliasingFilter(0.35)
    high = _sinusoid(n, 29, axis)  # 0.453 cycles/px > 0.35
    low = _sinusoid(n, 10, axis)  # 0.156 cycles/px < 0.35
    assert daf(high).abs().max().item() <= 1e-5
    assert _max_abs(daf(low), low) <= 1e-5
    assert _max_abs(daf(low + high), low) <= 1e-5


def test_bandlimited_signal_unchanged_odd_size():
    torch.manual_seed(1)
    h, w = 45, 37
    spec = torch.fft.rfft2(torch.randn(1, 2, h, w))
    fy = torch.fft.fftfreq(h).abs()[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    x = torch.fft.irfft2(spec * ((fy < 0.3) & (fx < 0.3)), s=(h, w))
    assert _max_abs(DeAliasingFilter(0.35)(x), x) <= 1e-5


def test_freqmix_top_left_pixel_property():
    """Faithful gate: the SE inputs are the (0,0) values of the band signals (section 3.6)."""
    torch.manual_seed(2)
    b, c, h, w = 2, 16, 24, 30
    m = FreqMix(c, reduction=4)
    x = torch.randn(b, c, h, w)
    seen = {}
    m.se_lo.register_forward_pre_hook(lambda mod, inp: seen.__setitem__("lo", inp[0].detach()))
    m.se_hi.register_forward_pre_hook(lambda mod, inp: seen.__setitem__("hi", inp[0].detach()))
    m(x)
    # expectations straight from the masked spectrum
    s = torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1))
    r0, r1 = box_mask_bounds(h, 0.35)
    c0, c1 = box_mask_bounds(w, 0.35)
    mask = torch.zeros(h, w, dtype=torch.float64)
    mask[r0:r1, c0:c1] = 1
    s_lo, s_hi = s * mask, s * (1 - mask)
    exp_lo = torch.cat([s_lo.real.mean((-2, -1)), s_lo.imag.mean((-2, -1))], 0)[..., None, None]
    exp_hi = torch.cat([s_hi.real.mean((-2, -1)), s_hi.imag.mean((-2, -1))], 0)[..., None, None]
    assert _max_abs(seen["lo"].double(), exp_lo) <= 1e-5
    assert _max_abs(seen["hi"].double(), exp_hi) <= 1e-5
    # ... which are the band signals at the top-left pixel (the quirk), not band energies
    x_lo = reference_daf(x.double(), 0.35)
    assert _max_abs(seen["lo"][:b, :, 0, 0].double(), x_lo[..., 0, 0]) <= 1e-5
    assert _max_abs(seen["hi"][:b, :, 0, 0].double(), (x.double() - x_lo)[..., 0, 0]) <= 1e-5
    assert seen["lo"][b:].abs().max() > 1e-3  # even-size asymmetric box: non-zero imaginary part


def test_freqmix_band_energy_variant():
    torch.manual_seed(3)
    m = FreqMix(8, reduction=2, gate="band_energy")
    x = torch.randn(2, 8, 20, 21, requires_grad=True)
    seen = {}
    m.se_lo.register_forward_pre_hook(lambda mod, inp: seen.__setitem__("lo", inp[0].detach()))
    y = m(x)
    x_lo = reference_daf(x.detach(), 0.35)
    assert _max_abs(seen["lo"], x_lo.pow(2).mean((-2, -1), keepdim=True).sqrt()) <= 1e-5
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("c,expected", [(128, 6674), (256, 21538), (512, 75842)])
def test_freqmix_parameter_count(c, expected):
    assert sum(p.numel() for p in FreqMix(c).parameters()) == expected


def test_daf_has_no_parameters_or_state():
    daf = DeAliasingFilter()
    assert list(daf.parameters()) == [] and daf.state_dict() == {}


def test_gradients_finite():
    x = torch.randn(2, 4, 19, 26, requires_grad=True)
    DeAliasingFilter(0.35)(x).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_cpu_autocast_bfloat16_dtypes():
    torch.manual_seed(4)
    x = torch.randn(1, 16, 25, 34)
    m = FreqMix(16, reduction=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_daf = DeAliasingFilter()(x.bfloat16())
        y_fm = m(x.bfloat16())
        y_daf32 = DeAliasingFilter()(x)
    assert y_daf.dtype == torch.bfloat16 and y_fm.dtype == torch.bfloat16
    assert y_daf32.dtype == torch.float32
    ref = reference_daf(x.bfloat16().float())
    assert _max_abs(y_daf.float(), ref) <= 0.05
    assert torch.isfinite(y_fm.float()).all()
    assert _max_abs(y_fm.float(), reference_freqmix(x, m)) <= 0.1


def test_mask_built_in_inference_mode_usable_for_training():
    h, w = 23, 29  # a size no other test uses, so the cache entry is created here
    with torch.inference_mode():
        DeAliasingFilter(0.3)(torch.randn(1, 1, h, w))
        FreqMix(4, cutoff=0.3, reduction=2)(torch.randn(1, 4, h, w))
    x = torch.randn(1, 4, h, w, requires_grad=True)
    (DeAliasingFilter(0.3)(x).sum() + FreqMix(4, cutoff=0.3, reduction=2)(x).sum()).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("bad", [0, -0.1, 0.51, "x", None])
def test_bad_cutoff_raises(bad):
    with pytest.raises(ValueError, match="cutoff"):
        DeAliasingFilter(bad)
    with pytest.raises(ValueError, match="cutoff"):
        FreqMix(8, cutoff=bad)


def test_bad_freqmix_args_raise():
    with pytest.raises(ValueError, match="gate"):
        FreqMix(8, gate="energy")
    with pytest.raises(ValueError, match="reduction"):
        FreqMix(8, reduction=16)
    with pytest.raises(ValueError, match="kernel_size"):
        BlurPool(8, 0)


def test_blurpool_binomial_same_size():
    torch.manual_seed(5)
    x = torch.randn(2, 3, 11, 14)
    y = BlurPool(3, 3)(x)
    k = torch.tensor([1.0, 2.0, 1.0]) / 4
    k2 = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
    expect = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k2, groups=3)
    assert y.shape == x.shape and _max_abs(y, expect) <= 1e-6
    # Nyquist checkerboard is removed in the interior; constants and k=1 pass through
    i = torch.arange(12)
    checker = ((-1.0) ** (i[:, None] + i[None, :]))[None, None]
    assert BlurPool(None, 3)(checker)[..., 1:-1, 1:-1].abs().max() <= 1e-6
    assert _max_abs(BlurPool(None, 5)(torch.ones(1, 2, 9, 9)), torch.ones(1, 2, 9, 9)) <= 1e-6
    assert torch.equal(BlurPool(None, 1)(x), x)
    assert BlurPool(3, 7)(torch.randn(1, 3, 2, 2)).shape == (1, 3, 2, 2)  # too small to reflect
    assert BlurPool(3, 3).state_dict() == {}


def test_chunked_path_matches_reference(monkeypatch):
    import segalias_d2.modeling.fourier_filters as ff

    monkeypatch.setattr(ff, "_CHUNK_ELEMENTS", 1000)  # force several plane chunks
    torch.manual_seed(6)
    x = torch.randn(2, 8, 31, 44, requires_grad=True)
    m = FreqMix(8, reduction=2)
    for f, ref in ((DeAliasingFilter(0.35), lambda t: reference_daf(t, 0.35)), (m, lambda t: reference_freqmix(t, m))):
        y, yr = f(x), ref(x)
        assert _max_abs(y, yr) <= 1e-5
        g = torch.autograd.grad(y.pow(2).sum(), x)[0]
        gr = torch.autograd.grad(yr.pow(2).sum(), x)[0]
        assert _max_abs(g, gr) <= 1e-4
        with torch.no_grad():
            assert _max_abs(f(x), yr) <= 1e-5
