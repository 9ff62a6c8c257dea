"""The DAF low-pass ``L x = irfft2(R * rfft2(x))``: which form computes it (``lowpass_form``), the
transform form (chunked row rfft / pruned-column fft kernel) and its self-adjoint autograd
function. The masks and plans are in :mod:`.spectral_plans`, the CPU product forms in
:mod:`.lowpass_products`; FreqMix's parts that use the low-pass are in :mod:`.fourier_ops`, whose
docstring gives the maths."""

import torch

from .lowpass_products import _matrix_lowpass, _row_lowpass
from .spectral_plans import (  # noqa: F401  (the plan helpers fourier_ops takes from here)
    _chunks,
    _np_plan,
    _plan,
    box_mask_bounds,
    box_mask_centered,
    fp32_region,
    symmetric_rfft_mask,
)

# Which form filters an (H, W) plane: a fixed rule, not a timing at run time, so that a run and its
# resumption compute the same (the forms agree to rounding, ~1e-7 in float32). On the CPU, from
# bench/bench_lowpass_forms.py (BENCHMARKS.md, "forms of the low-pass"):
# * "transform" (FFTs along both axes) for planes of 32x32 and more with both sides powers of two
#   (the transforms' best case), for planes taller than ROW_FORM_MAX_HEIGHT, and on other devices;
# * "matrix" (products along both axes, ~H*W*(H+W) per plane) for H + W <= MATRIX_FORM_MAX_SIDE_SUM;
# * "rows" (the row spectrum along W, by products up to lowpass_products.ROW_FORM_DFT_MAX_WIDTH,
#   else rfft / irfft; products along H, ~H per element) for the other planes.
# 0 turns a product form off; FORCE_FORM ("transform", "matrix" or "rows") uses one form for every
# plane on every device (tests and benchmarks). All three are read at call time.
MATRIX_FORM_MAX_SIDE_SUM = 80
ROW_FORM_MAX_HEIGHT = 56
FORCE_FORM = None
LOWPASS_FORMS = ("transform", "matrix", "rows")
_PRODUCT_FORMS = {"matrix": _matrix_lowpass, "rows": _row_lowpass}


def lowpass_form(h, w, device):
    """The form (one of ``LOWPASS_FORMS``) that filters (h, w) planes on ``device``."""
    if FORCE_FORM is not None:
        if FORCE_FORM not in LOWPASS_FORMS:
            raise ValueError(
                f"spectral_lowpass.FORCE_FORM must be None or one of {LOWPASS_FORMS}, "
                f"got {FORCE_FORM!r}"
            )
        return FORCE_FORM
    both_pow2 = h & (h - 1) == 0 and w & (w - 1) == 0
    if device.type != "cpu" or (both_pow2 and h * w >= 1024):
        return "transform"
    if h + w <= MATRIX_FORM_MAX_SIDE_SUM:
        return "matrix"
    return "rows" if h <= ROW_FORM_MAX_HEIGHT else "transform"


def spectral_lowpass(planes, cutoff, chunk, overwrite=False, im_out=None, add_e00=None, add_v=None):
    """``L`` applied to every (h, w) plane of ``planes`` (n, h, w), no autograd; returns the result.

    Planes are processed ``chunk // (h*w)`` at a time so the spectrum-sized temporaries stay small.
    With ``overwrite`` the result may be written into ``planes`` (use the returned tensor either
    way). Optional, per plane (all (n,) tensors): ``im_out`` receives
    ``<v, plane> = mean(Im(fftshift(fft2(plane)) * M))`` read from the spectrum; ``add_e00[i]``
    filters ``plane + add_e00[i] * e00`` instead (e00: unit impulse at (0, 0)); ``add_v[i]`` adds
    ``add_v[i] * v`` to the result (v: the gradient of the ``im`` functional).
    """
    n, h, w = planes.shape
    form = lowpass_form(h, w, planes.device)
    if form != "transform":
        # matmul is an autocast op (the transforms are not): a backward run under autocast would
        # otherwise compute the products in half precision
        with fp32_region(planes.device.type):
            return _PRODUCT_FORMS[form](planes, cutoff, chunk, overwrite, im_out, add_e00, add_v)
    p = _plan(h, w, float(cutoff), planes.device, planes.dtype)
    chunks = _chunks(n, chunk // max(1, h * w))
    out = None
    if len(chunks) > 1:  # out= copies from a chunk-sized result, cheaper than a second full buffer
        out = planes if overwrite else torch.empty_like(planes)
    for i, j in chunks:
        s = torch.fft.rfft(planes[i:j], dim=-1)
        if add_e00 is not None:  # the row rfft of e00 is 1 on row 0, 0 elsewhere
            s[:, 0, : p.kc] += add_e00[i:j, None]
        s = torch.fft.fft(s[..., : p.kc], dim=-2)
        if im_out is not None:
            if p.im_w.numel():
                im_out[i:j] = s[:, p.im_r, p.im_c].imag @ p.im_w
            else:
                im_out[i:j] = 0
        s.mul_(p.rmask)
        if add_v is not None and p.v_val.numel():
            s[:, p.v_r, p.v_c] += add_v[i:j, None] * p.v_val
        s = torch.fft.ifft(s, dim=-2)
        if out is None:
            return torch.fft.irfft(s, n=w, dim=-1)  # columns >= kc are zero-padded
        torch.fft.irfft(s, n=w, dim=-1, out=out[i:j])
    return out


class _LowpassFn(torch.autograd.Function):
    """``L x`` on the last two dims; backward ``L g`` (self-adjoint), itself differentiable."""

    @staticmethod
    def forward(ctx, x, cutoff, chunk):
        ctx.cutoff, ctx.chunk = cutoff, chunk
        return lowpass(x, cutoff, chunk)

    @staticmethod
    def backward(ctx, grad):
        return _LowpassFn.apply(grad, ctx.cutoff, ctx.chunk), None, None


def lowpass(x, cutoff, chunk):
    """DAF core: ``L x`` for float32/64 ``x`` of shape (..., H, W); custom backward when a graph is
    recorded."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _LowpassFn.apply(x, cutoff, chunk)
    shape = x.shape
    return spectral_lowpass(x.reshape((-1,) + tuple(shape[-2:])), cutoff, chunk).view(shape)
