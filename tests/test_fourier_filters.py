"""DAF / FreqMix / BlurPool against independent expectations: literal transcriptions of the released
computation
(tests/reference_fourier.py, quirks included), analytic signals, the mask table of
seg_aliasing_method.md 2.2."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference_fourier import (
    reference_daf,
    reference_freqmix,
    reference_freqmix_band_energy,
    reference_freqmix_per_image,
    reference_freqmix_released,
)

import segalias_d2.modeling.fourier_filters as ff
import segalias_d2.modeling.fourier_ops as ops
import segalias_d2.modeling.lowpass_products as lowpass_products
import segalias_d2.modeling.spectral_lowpass as sl
from segalias_d2.modeling.fourier_filters import (
    FREQMIX_GATES,
    BlurPool,
    DeAliasingFilter,
    FreqMix,
    box_mask_bounds,
    check_freqmix_gate,
    symmetric_rfft_mask,
)
from segalias_d2.modeling.fourier_ops import _np_plan

SIZES = [(32, 32), (33, 31), (24, 40), (17, 50), (7, 6)]  # even, odd, non-square, mixed parity
FM_SIZES = [(9, 7), (8, 10), (7, 12)]  # odd/odd, even/even, odd/even (FreqMix transcription checks)


def _max_abs(a, b):
    return (a - b).abs().max().item()


@pytest.fixture(autouse=True, params=sl.LOWPASS_FORMS)
def lowpass_form(request, monkeypatch):
    """Every test of this module runs with each form of the low-pass on every plane size: the
    transforms, and the two product forms the CPU uses for small and short planes."""
    monkeypatch.setattr(sl, "FORCE_FORM", request.param)
    return request.param


def _freqmix(c, gate="released", seed=0, reduction=2, double=False):
    torch.manual_seed(seed)
    m = FreqMix(c, reduction=reduction, gate=gate)
    return m.double() if double else m


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("cutoff", [0.35, 0.25, 0.1, 0.5])
def test_daf_equals_reference(hw, cutoff):
    g = torch.Generator().manual_seed(hash(hw) % 1000)
    x = torch.randn(2, 3, *hw, generator=g)
    assert _max_abs(DeAliasingFilter(cutoff)(x), reference_daf(x, cutoff)) <= 1e-5
    xd = x.double()
    assert _max_abs(DeAliasingFilter(cutoff)(xd), reference_daf(xd, cutoff)) <= 1e-12


def test_default_gate_is_released():
    assert FreqMix(8, reduction=2).gate == "released"
    assert FREQMIX_GATES == ("released", "per_image", "band_energy")


@pytest.mark.parametrize(
    "c", [6, 5]
)  # even and odd channel counts (odd: the roll direction matters)
@pytest.mark.parametrize("hw", FM_SIZES)
@pytest.mark.parametrize("b", [1, 2, 3, 4])
def test_freqmix_released_equals_transcription(b, hw, c):
    """gate="released" == the released forward (fftshift/ifftshift over ALL dims) at B = 1..4,
    float64 and float32."""
    m = _freqmix(c, seed=b, double=True)
    x = torch.randn(b, c, *hw, dtype=torch.float64)
    with torch.no_grad():
        y, y_ref = m(x), reference_freqmix_released(x, m)
        assert _max_abs(y, y_ref) <= 1e-10
        m32, x32 = m.float(), x.float()
        assert _max_abs(m32(x32), reference_freqmix_released(x32, m32)) <= 1e-5


@pytest.mark.parametrize("c", [6, 5])
@pytest.mark.parametrize("b", [1, 3])
def test_freqmix_per_image_equals_transcription(b, c):
    m = _freqmix(c, gate="per_image", seed=b, double=True)
    x = torch.randn(b, c, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        assert _max_abs(m(x), reference_freqmix_per_image(x, m)) <= 1e-10


@pytest.mark.parametrize("b,c", [(1, 6), (1, 5), (2, 6), (3, 5), (4, 6)])
def test_released_and_per_image_differ(b, c):
    """The two spectral modes (and their transcriptions) disagree far beyond the tolerance used
    above, so the released check cannot pass with the per-image computation; at B = 1 the channel
    roll alone does it."""
    m_rel = _freqmix(c, seed=10, double=True)
    m_per = _freqmix(c, gate="per_image", seed=10, double=True)  # same weights
    x = torch.randn(b, c, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        assert _max_abs(m_rel(x), m_per(x)) > 1e-3
        assert (
            _max_abs(reference_freqmix_released(x, m_rel), reference_freqmix_per_image(x, m_rel))
            > 1e-3
        )
        assert _max_abs(m_rel(x), reference_freqmix_per_image(x, m_rel)) > 1e-3


def test_released_gate_is_batch_dependent_per_image_is_not():
    m_rel = _freqmix(6, seed=11, double=True)
    m_per = _freqmix(6, gate="per_image", seed=11, double=True)
    x = torch.randn(2, 6, 9, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[1] = torch.randn(6, 9, 8, dtype=torch.float64)  # change only the second image
    with torch.no_grad():
        assert _max_abs(m_per(x)[0], m_per(x2)[0]) <= 1e-12
        assert (
            _max_abs(m_rel(x)[0], m_rel(x2)[0]) > 1e-3
        )  # image 0 is gated from image 1's spectrum
        # ... and at batch 1 the released module is a per-image function
        assert _max_abs(m_rel(x[:1]), m_rel(x2[:1])) <= 1e-12


@pytest.mark.parametrize("gate", FREQMIX_GATES)
def test_freqmix_gradients_equal_transcription_odd_case(gate):
    """Autograd through the fast path and through the transcription agree (input and every
    parameter)."""
    m = _freqmix(5, gate=gate, seed=12, double=True)
    x = torch.randn(3, 5, 9, 7, dtype=torch.float64, requires_grad=True)
    y_fast, y_ref = m(x), reference_freqmix(x, m)
    assert _max_abs(y_fast, y_ref) <= 1e-10
    gy = torch.randn_like(y_fast)
    g_fast = torch.autograd.grad(y_fast, [x] + list(m.parameters()), gy)
    g_ref = torch.autograd.grad(y_ref, [x] + list(m.parameters()), gy)
    assert g_ref[0].abs().max() > 1e-3
    for a, b in zip(g_fast, g_ref):
        assert torch.isfinite(a).all()
        assert _max_abs(a, b) <= 1e-9 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("hw", SIZES)
def test_freqmix_float32_equals_transcription_and_gradients(hw):
    m = _freqmix(16, seed=0, reduction=4)
    x = torch.randn(2, 16, *hw, requires_grad=True)
    y_fast = m(x)
    y_ref = reference_freqmix_released(x, m)
    assert _max_abs(y_fast, y_ref) <= 1e-5
    gy = torch.randn_like(y_fast)
    g_fast = torch.autograd.grad(y_fast, [x] + list(m.parameters()), gy)
    g_ref = torch.autograd.grad(y_ref, [x] + list(m.parameters()), gy)
    for a, b in zip(g_fast, g_ref):
        assert torch.isfinite(a).all()
        assert _max_abs(a, b) <= 1e-4 * max(1.0, b.abs().max().item())


def test_faithful_gate_name_is_an_error():
    for call in (
        lambda: FreqMix(8, reduction=2, gate="faithful"),
        lambda: check_freqmix_gate("faithful", "KEY"),
    ):
        with pytest.raises(ValueError, match="renamed") as e:
            call()
        assert "'released'" in str(e.value) and "'per_image'" in str(e.value)
    with pytest.raises(ValueError, match="KEY must be one of"):
        check_freqmix_gate("energy", "KEY")


# section 2.2 table: N -> (slice for t=0.35, relative bins, full-weight |k| max, relative bins for
# t=0.25)
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
    # symmetrised response along the DC column: 1 for |k| <= kmax, 0.5 at the asymmetric edge, 0
    # beyond
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


@pytest.mark.parametrize("gate", ["released", "per_image"])
def test_freqmix_top_left_pixel_property(gate):
    """The SE inputs are the spectrum means = the (0,0) values of the band signals (section 3.6);
    for "released" they come from image (i - B//2) mod B, channel (j - C//2) mod C (section 3.5b,
    fftshift rolls by n//2)."""
    torch.manual_seed(2)
    b, c, h, w = 3, 5, 24, 30
    m = FreqMix(c, reduction=1, gate=gate)
    x = torch.randn(b, c, h, w)
    seen = {}
    m.se_lo.register_forward_pre_hook(
        lambda mod, inp: seen.__setitem__("lo", inp[0].detach().double())
    )
    m.se_hi.register_forward_pre_hook(
        lambda mod, inp: seen.__setitem__("hi", inp[0].detach().double())
    )
    m(x)
    # expectations straight from the masked spectrum, shifted as the mode's code does
    spec = torch.fft.fft2(x.double())
    s = torch.fft.fftshift(spec) if gate == "released" else torch.fft.fftshift(spec, dim=(-2, -1))
    mask = torch.zeros(h, w, dtype=torch.float64)
    mask[
        round(h / 2 - h * 0.35) : round(h / 2 + h * 0.35),
        round(w / 2 - w * 0.35) : round(w / 2 + w * 0.35),
    ] = 1
    s_lo, s_hi = s * mask, s * (1 - mask)
    exp_lo = torch.cat([s_lo.real.mean((-2, -1)), s_lo.imag.mean((-2, -1))], 0)[..., None, None]
    exp_hi = torch.cat([s_hi.real.mean((-2, -1)), s_hi.imag.mean((-2, -1))], 0)[..., None, None]
    assert _max_abs(seen["lo"], exp_lo) <= 1e-5
    assert _max_abs(seen["hi"], exp_hi) <= 1e-5
    # ... which are the band signals at the top-left pixel (the quirk) of the source image/channel
    x_lo = reference_daf(x.double(), 0.35)[..., 0, 0]
    x_hi = x.double()[..., 0, 0] - x_lo
    for i in range(b):
        for j in range(c):
            si, sj = ((i - b // 2) % b, (j - c // 2) % c) if gate == "released" else (i, j)
            assert abs(seen["lo"][i, j, 0, 0] - x_lo[si, sj]) <= 1e-5
            assert abs(seen["hi"][i, j, 0, 0] - x_hi[si, sj]) <= 1e-5
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
    assert _max_abs(y, reference_freqmix_band_energy(x, m)) <= 1e-5
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

    monkeypatch.setattr(ff, "_CHUNK_ELEMENTS", 1000)  # force several plane chunks
    monkeypatch.setattr(ops, "MIX_BLOCK_ELEMENTS", 3 * 31 * 44)  # FreqMix's mix: blocks 3, 3, 2
    torch.manual_seed(6)
    x = torch.randn(3, 8, 31, 44, requires_grad=True)
    cases = [(DeAliasingFilter(0.35), lambda t: reference_daf(t, 0.35))]
    for gate in FREQMIX_GATES:
        m = _freqmix(8, gate=gate, seed=6)
        cases.append((m, lambda t, m=m: reference_freqmix(t, m)))
    for f, ref in cases:
        y, yr = f(x), ref(x)
        assert _max_abs(y, yr) <= 1e-5
        g = torch.autograd.grad(y.pow(2).sum(), x)[0]
        gr = torch.autograd.grad(yr.pow(2).sum(), x)[0]
        assert _max_abs(g, gr) <= 1e-4
        with torch.no_grad():
            assert _max_abs(f(x), yr) <= 1e-5


# --- custom autograd functions (fourier_ops): gradcheck in float64 against finite differences, and
# the vector-Jacobian products against autograd through the literal transcriptions of the released
# computation
GC_CASES = [
    (2, 5, (7, 9)),
    (3, 4, (8, 6)),
    (1, 6, (5, 8)),
]  # odd/odd, even/even, odd/even; odd and even C
GC_FULL = [
    (1, 4, (6, 4)),
    (2, 3, (5, 7)),
]  # small enough for the full Jacobian (even/even and odd/odd)


def _vjp_vs_reference(m, x, ref, tol):
    params = [p for p in m.parameters()]
    y, y_ref = m(x), ref(x)
    gy = torch.randn_like(y)
    g = torch.autograd.grad(y, [x] + params, gy)
    g_ref = torch.autograd.grad(y_ref, [x] + params, gy)
    assert _max_abs(y, y_ref) <= tol
    for a, b in zip(g, g_ref):
        assert a.dtype == b.dtype and _max_abs(a, b) <= tol * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("b,c,hw", GC_FULL + GC_CASES)
def test_daf_gradcheck_and_self_adjoint(b, c, hw):
    daf = DeAliasingFilter(0.35)
    x = torch.randn(b, c, *hw, dtype=torch.float64, requires_grad=True)
    fast = (b, c, hw) not in GC_FULL
    assert torch.autograd.gradcheck(daf, (x,), fast_mode=fast)
    # the backward is the same function, so it differentiates again
    assert torch.autograd.gradgradcheck(daf, (x,), fast_mode=fast)
    _vjp_vs_reference(daf, x, lambda t: reference_daf(t, 0.35), 1e-12)
    gy = torch.randn_like(x)
    assert (
        _max_abs(torch.autograd.grad(daf(x), x, gy)[0], daf(gy)) <= 1e-15
    )  # gradient = filtered gradient


@pytest.mark.parametrize("gate", FREQMIX_GATES)
@pytest.mark.parametrize("b,c,hw", GC_FULL + GC_CASES)
def test_freqmix_gradcheck_float64(gate, b, c, hw):
    """Analytic backward vs finite differences for the input and every parameter (full Jacobian on
    the small cases, the even one with an imaginary SE input from the asymmetric box; random
    projections elsewhere)."""
    m = _freqmix(c, gate=gate, seed=20 + b, double=True)
    x = torch.randn(b, c, *hw, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=(b, c, hw) not in GC_FULL)
    _vjp_vs_reference(m, x, lambda t: reference_freqmix(t, m), 1e-10)


def test_freqmix_saved_low_band_variant_same_gradients(monkeypatch):

    m = _freqmix(6, seed=30, double=True)
    x = torch.randn(2, 6, 10, 8, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(2, 6, 10, 8, dtype=torch.float64)
    grads = []
    # (always save, size limit): recomputed, saved by the flag, saved by the size rule (960
    # elements <= 960), recomputed just above the limit
    cases = [(False, 0, False), (True, 0, True), (False, 960, True), (False, 959, False)]
    for save, limit, saved in cases:
        monkeypatch.setattr(ops, "FREQMIX_SAVE_LOW_BAND", save)
        monkeypatch.setattr(ops, "FREQMIX_SAVE_LOW_BAND_MAX_ELEMENTS", limit)
        y = m(x)
        assert (y.grad_fn.x_lo is not None) == saved
        grads.append(torch.autograd.grad(y, [x] + list(m.parameters()), gy))
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            assert _max_abs(a, b) <= 1e-13


def test_backward_saves_no_spectra(monkeypatch):
    """DAF saves nothing for backward; FreqMix (here above its keep-the-low-band size) saves its
    input (no copy), its parameters and small (B, C)/(B, 2, H, W) tensors, and no complex
    tensor."""
    monkeypatch.setattr(ops, "FREQMIX_SAVE_LOW_BAND_MAX_ELEMENTS", 0)
    x = torch.randn(2, 6, 12, 10, requires_grad=True)
    saved = []
    hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t)
    with hooks:
        y = DeAliasingFilter()(x)
    assert saved == [] and y.grad_fn is not None
    m = FreqMix(6, reduction=2)
    with hooks:
        y = m(x)
    big = [t for t in saved if t.numel() >= x.numel()]
    assert len(big) == 1 and big[0].data_ptr() == x.data_ptr()
    ctx_tensors = list(y.grad_fn.small) + [y.grad_fn.x_lo]
    assert y.grad_fn.x_lo is None and all(t.numel() < x.numel() for t in y.grad_fn.small)
    assert not any(t is not None and t.is_complex() for t in saved + ctx_tensors)


@pytest.mark.parametrize("h,w", [(100, 168), (50, 84), (25, 42), (24, 30), (9, 7)])
def test_spectral_plan_imaginary_gradient(h, w):
    """v (the gradient of GAP(Im S_lo)) is rebuilt exactly by irfft2 of its few sparse bins, and
    equals the gradient of the functional computed by autograd through the reference FFT; columns
    are pruned at t=0.35."""

    p = _np_plan(h, w, 0.35)
    v_r, v_c, v_val = p["v"]
    sparse = np.zeros((h, w // 2 + 1), complex)
    sparse[v_r, v_c] = v_val
    np.testing.assert_allclose(np.fft.irfft2(sparse, s=(h, w)), p["v_plane"], atol=1e-15)
    x = torch.zeros(h, w, dtype=torch.float64, requires_grad=True)
    s = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    mask = torch.zeros(h, w, dtype=torch.float64)
    (r0, r1), (c0, c1) = box_mask_bounds(h, 0.35), box_mask_bounds(w, 0.35)
    mask[r0:r1, c0:c1] = 1
    g = torch.autograd.grad((s * mask).imag.mean(), x)[0].numpy()
    np.testing.assert_allclose(p["v_plane"], g, atol=1e-15)
    assert p["kc"] < w // 2 + 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_autocast_training_step(dtype):
    """Under CPU autocast the conv runs in half precision, DAF/FreqMix run their FFT part in float32
    and return the input dtype; the custom backward passes give finite float32 parameter gradients
    close to the float32 step."""
    torch.manual_seed(7)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    m, daf = FreqMix(16, reduction=4), DeAliasingFilter()
    x = torch.randn(2, 8, 14, 19)
    params = list(conv.parameters()) + list(m.parameters())
    grads = {}
    for mode in ("fp32", "amp"):
        with torch.autocast("cpu", dtype=dtype, enabled=mode == "amp"):
            h = conv(x)
            y = m(daf(h))
            assert h.dtype == y.dtype == (dtype if mode == "amp" else torch.float32)
            # the FreqMix backward recomputes its gates; called inside autocast it must still do so
            # in float32
            inside = torch.autograd.grad(y.float().pow(2).mean(), params, retain_graph=True)
        grads[mode] = torch.autograd.grad(y.float().pow(2).mean(), params)
        for a, b in zip(inside, grads[mode]):
            assert _max_abs(a, b) <= 1e-6 * max(1.0, b.abs().max().item())
    for a, b in zip(grads["amp"], grads["fp32"]):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        assert _max_abs(a, b) <= 0.05 * b.abs().max().item() + 1e-6


@pytest.mark.parametrize(
    "hw",
    [(9, 7), (8, 10), (1, 5), (2, 2), (5, 1), (25, 42), (31, 44), (50, 84), (30, 17)],
)
@pytest.mark.parametrize("cutoff", [0.35, 0.25, 0.05, 0.5])
@pytest.mark.parametrize("row_dft_max_width", [90, 0])  # the row form along W: products, FFTs
def test_product_forms_equal_transform_form(
    hw, cutoff, row_dft_max_width, lowpass_form, monkeypatch
):
    """Each form gives the transform form's result in float64 (1e-13), with every option: the im
    functional, the impulse and v terms, several chunks, writing over the input."""
    monkeypatch.setattr(lowpass_products, "ROW_FORM_DFT_MAX_WIDTH", row_dft_max_width)
    torch.manual_seed(40)
    x = torch.randn(5, *hw, dtype=torch.float64)
    a_e00, a_v = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    chunk = 2 * hw[0] * hw[1]  # two planes per chunk: three chunks
    results = []
    for form in ("transform", lowpass_form):
        sl.FORCE_FORM = form  # restored by the fixture
        im = torch.empty(5, dtype=torch.float64)
        y = sl.spectral_lowpass(x, cutoff, chunk, im_out=im)
        y1 = sl.spectral_lowpass(x, cutoff, 10**9)  # one chunk, a fresh result
        y2 = sl.spectral_lowpass(x.clone(), cutoff, chunk, overwrite=True, add_e00=a_e00, add_v=a_v)
        x0 = x.clone()
        y3 = sl.spectral_lowpass(x, cutoff, chunk, add_e00=a_e00, add_v=a_v)  # x left as it was
        assert torch.equal(x, x0)
        results.append((y, y1, im, y2, y3))
    for a, b in zip(*results):
        assert _max_abs(a, b) <= 1e-13
    assert _max_abs(results[0][0], results[0][1]) <= 1e-13
    if hw in [(25, 42), (31, 44), (50, 84)] and cutoff == 0.35:  # asymmetric box along W: im != 0
        assert results[1][2].abs().min() > 1e-3


def test_default_form_rule(monkeypatch):
    """The default rule on the CPU: the transforms for power-of-two planes from 32x32 on and for
    planes taller than 56, matrix products for the others with H + W <= 80 (res5-sized 25x42;
    24x24 and 16x16 of crops), the row form for the rest (res4-sized 50x84), its transforms along W
    as products up to W = 90; the transforms on other devices. The dispatch follows the rule.
    """
    monkeypatch.setattr(sl, "FORCE_FORM", None)
    assert (sl.MATRIX_FORM_MAX_SIDE_SUM, sl.ROW_FORM_MAX_HEIGHT) == (80, 56)
    assert lowpass_products.ROW_FORM_DFT_MAX_WIDTH == 90
    cpu, meta = torch.device("cpu"), torch.device("meta")
    expected = {
        (25, 42): "matrix",
        (24, 24): "matrix",
        (16, 16): "matrix",
        (30, 50): "matrix",
        (32, 32): "transform",
        (16, 64): "transform",
        (48, 48): "rows",
        (30, 51): "rows",
        (50, 84): "rows",
        (56, 400): "rows",
        (57, 40): "transform",
        (64, 64): "transform",
        (100, 168): "transform",
    }
    assert {hw: sl.lowpass_form(*hw, cpu) for hw in expected} == expected
    assert {sl.lowpass_form(*hw, meta) for hw in expected} == {"transform"}
    calls = []
    for form in ("matrix", "rows"):
        real = sl._PRODUCT_FORMS[form]
        monkeypatch.setitem(
            sl._PRODUCT_FORMS,
            form,
            lambda *a, f=form, r=real: calls.append((f, a[0].shape)) or r(*a),
        )
    for hw in expected:
        sl.spectral_lowpass(torch.randn(2, *hw), 0.35, 1 << 20)
    assert calls == [(f, (2, *hw)) for hw, f in expected.items() if f != "transform"]
    # inside the row form: products along W up to W = 90, rfft / irfft above
    by_products = []
    real_chunk = lowpass_products._row_products_chunk
    monkeypatch.setattr(
        lowpass_products,
        "_row_products_chunk",
        lambda x, *a: by_products.append(tuple(x.shape[1:])) or real_chunk(x, *a),
    )
    for hw in [(50, 84), (30, 90), (30, 91), (56, 400)]:
        assert sl.lowpass_form(*hw, cpu) == "rows"
        sl.spectral_lowpass(torch.randn(2, *hw), 0.35, 1 << 20)
    assert by_products == [(50, 84), (30, 90)]
    monkeypatch.setattr(sl, "FORCE_FORM", "fft")
    with pytest.raises(ValueError, match="FORCE_FORM must be None or one of"):
        sl.lowpass_form(8, 8, cpu)
