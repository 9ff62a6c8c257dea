"""The previous fast path (before the custom autograd functions, commit 002ec04), kept for old/new
benchmarks.

Same outputs as the modules (rfft2 -> real mask -> irfft2, SE inputs from the same rfft), but the
backward is PyTorch autograd through every op: rfft2's backward is a full complex c2c transform of a
zero-padded spectrum, the mix saves four full-size tensors. ``use_legacy(model)`` switches every
DAF / FreqMix instance of a model to this code in place (parameters shared), so old and new run in
one process on the same weights. Bench code only, not part of the package.
"""

import types

import torch
import torch.nn.functional as F

from segalias_d2.modeling.fourier_filters import (
    DeAliasingFilter,
    FreqMix,
    _fft_dtype,
    symmetric_rfft_mask,
)
from segalias_d2.modeling.fourier_filters import (
    fp32_region as _fp32_region,
)
from segalias_d2.modeling.fourier_ops import _plan

CHUNK_ELEMENTS = 1 << 20


def _imag_bins(h, w, cutoff, device, dtype):
    """Flat (h, w//2+1) indices and weights of mean(Im(S*M)) (the old layout), from the current
    plan."""
    p = _plan(h, w, cutoff, device, dtype)
    return p.im_r * (w // 2 + 1) + p.im_c, p.im_w


def _lowpass(xf, cutoff, want_imag=False):
    b, c, h, w = xf.shape
    planes = xf.reshape(b * c, h, w)
    n = planes.shape[0]
    rmask = symmetric_rfft_mask(h, w, cutoff, xf.device, xf.dtype)
    if want_imag:
        idx, iw = _imag_bins(h, w, cutoff, xf.device, xf.dtype)
    step = max(1, CHUNK_ELEMENTS // max(1, h * w))
    chunks = [(0, n)] if step >= n else [(i, min(n, i + step)) for i in range(0, n, step)]
    track = torch.is_grad_enabled() and planes.requires_grad
    x_lo = None if len(chunks) == 1 else planes.new_empty(planes.shape)
    ims = []
    for i, j in chunks:
        spec = torch.fft.rfft2(planes[i:j])
        if want_imag:
            if idx.numel():
                im_bins = torch.view_as_real(spec)[..., 1].flatten(-2).index_select(-1, idx)
                ims.append((im_bins * iw).sum(-1))
            else:
                ims.append(planes.new_zeros(j - i))
        spec = spec.mul_(rmask)
        if x_lo is None:
            x_lo = torch.fft.irfft2(spec, s=(h, w))
        elif track:
            x_lo[i:j] = torch.fft.irfft2(spec, s=(h, w))
        else:
            torch.fft.irfft2(spec, s=(h, w), out=x_lo[i:j])
    x_lo = x_lo.reshape(b, c, h, w)
    im = None
    if want_imag:
        im = (ims[0] if len(ims) == 1 else torch.cat(ims, 0)).reshape(b, c, 1, 1)
    return x_lo, im


def legacy_daf_forward(self, x):
    shape = x.shape
    with _fp32_region(x.device.type):
        xf = x.to(_fft_dtype(x.dtype)).reshape((-1, 1) + tuple(shape[-2:]))
        y, _ = _lowpass(xf, self.cutoff)
    return y.reshape(shape).to(x.dtype)


def _conv3x3_few_outputs(x, weight, bias):
    o, c = weight.shape[:2]
    b, _, h, w = x.shape
    z = torch.matmul(weight.permute(2, 3, 0, 1).reshape(9 * o, c), x.reshape(b, c, h * w))
    z = F.pad(z.reshape(b, 9 * o, h, w), (1, 1, 1, 1)).reshape(b, 3, 3, o, h + 2, w + 2)
    out = None
    for dy in range(3):
        for dx in range(3):
            tap = z[:, dy, dx, :, dy : dy + h, dx : dx + w]
            out = tap if out is None else out + tap
    return out + bias.view(1, o, 1, 1) if bias is not None else out


def _spectral_gates(self, xf, x_lo, im_lo):
    b, c = xf.shape[:2]
    corner = torch.stack([xf[..., :1, :1], x_lo[..., :1, :1], im_lo], 0)
    if self.gate == "released":
        corner = torch.roll(corner, shifts=(b // 2, c // 2), dims=(1, 2))
    x00, re_lo, im_lo = corner.unbind(0)
    g_lo = self.se_lo(torch.cat([re_lo, im_lo], 0)).to(xf.dtype)
    g_hi = self.se_hi(torch.cat([x00 - re_lo, -im_lo], 0)).to(xf.dtype)
    return torch.sqrt(g_lo[:b] ** 2 + g_lo[b:] ** 2 + 1e-8), torch.sqrt(
        g_hi[:b] ** 2 + g_hi[b:] ** 2 + 1e-8
    )


def legacy_freqmix_forward(self, x):
    in_dtype = x.dtype
    wts = torch.sigmoid(_conv3x3_few_outputs(x, self.spatial.weight, self.spatial.bias))
    with _fp32_region(x.device.type):
        xf = x.to(_fft_dtype(x.dtype))
        spectral = self.gate != "band_energy"
        x_lo, im_lo = _lowpass(xf, self.cutoff, want_imag=spectral)
        if spectral:
            a_lo, a_hi = _spectral_gates(self, xf, x_lo, im_lo)
        else:
            a_lo = self.se_lo(torch.sqrt(x_lo.pow(2).mean((-2, -1), keepdim=True) + 1e-12)).to(
                xf.dtype
            )
            x_hi = xf - x_lo
            a_hi = self.se_hi(torch.sqrt(x_hi.pow(2).mean((-2, -1), keepdim=True) + 1e-12)).to(
                xf.dtype
            )
        wts = wts.to(xf.dtype)
        t_hi = wts[:, 1:2] * a_hi
        k = wts[:, 0:1] * a_lo
        if torch.is_grad_enabled():
            k = (k - t_hi) * x_lo
        else:
            k.sub_(t_hi).mul_(x_lo)
        y = torch.addcmul(k, xf, t_hi)
    return y.to(in_dtype)


def use_legacy(model):
    """Switch every DeAliasingFilter / FreqMix in ``model`` to the old code (in place); returns
    ``model``."""
    for m in model.modules():
        if isinstance(m, DeAliasingFilter):
            m.forward = types.MethodType(legacy_daf_forward, m)
        elif isinstance(m, FreqMix):
            m.forward = types.MethodType(legacy_freqmix_forward, m)
    return model
