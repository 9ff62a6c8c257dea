"""Masks, FFT kernels and the custom autograd functions behind ``fourier_filters`` (DAF and
FreqMix).

Everything here takes float32/float64 tensors with autocast already disabled; the modules cast.

* The filter ``L x = irfft2(R * rfft2(x))`` with the Hermitian-symmetrised real box mask ``R``
  (values 0, 0.5, 1) is real, linear and self-adjoint (R is real and even in k), so the DAF backward
  is ``L`` applied to the incoming gradient: nothing is saved. The 2-D transform is done as row rfft
  -> column fft of only the ``kc`` columns where R is non-zero -> mask -> column ifft -> row irfft
  (zero-padding the dropped columns): the same arithmetic as rfft2/irfft2, minus the column
  transforms of bins the mask zeroes (~30% of them at t = 0.35).
* FreqMix, ``y = w0*a_lo*x_lo + w1*a_hi*(x - x_lo)`` with ``w = sigmoid(conv3x3(x))``,
  ``x_lo = L x`` and SE gates ``a`` fed with per-(image, channel) statistics ``s`` of the bands.
  Backward, for incoming ``p``: ``g_w0 = sum_c p a_lo x_lo``, ``g_w1 = sum_c p a_hi x_hi``,
  ``g_a_lo = sum_hw p w0 x_lo``, ``g_a_hi = sum_hw p w1 x_hi`` (batched matrix products), ``g_s`` by
  the written-out backward of the tiny gate graph (recomputed), then
  ``g_x = L(p (w0 a_lo - w1 a_hi) + g_re e00) + g_im v + p w1 a_hi + g_x00 e00
  + conv3x3^T(g_logits)``, where the released gate statistics are
  ``s = (x[0,0], x_lo[0,0] = <L e00, x>, im = <v, x>)`` (section 3.6 of the method notes), so their
  gradients enter as an impulse before ``L`` (one row of the row spectrum) and as a few sparse bins
  of ``rfft2(v)`` after the mask: ONE rfft/irfft pass for the whole spectral part. FreqMix saves its
  input, the spatial weights and (B, C) gate tensors, no spectra; ``x_lo`` is saved or recomputed in
  backward (``FREQMIX_SAVE_LOW_BAND``: memory for one extra transform pair).
"""

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from .spectral_lowpass import (  # noqa: F401  (the low-pass helpers are re-exported for fourier_filters)
    _np_plan,
    _plan,
    box_mask_bounds,
    box_mask_centered,
    fp32_region,
    lowpass,
    spectral_lowpass,
    symmetric_rfft_mask,
)

# True: keep x_lo from the forward (one full-size tensor per FreqMix held until backward); False:
# recompute it in backward (one more rfft/irfft pass). Inputs of at most
# FREQMIX_SAVE_LOW_BAND_MAX_ELEMENTS elements keep it either way: there the pass is a third of the
# op's time and the memory is small (res5 of R50 at 800x1344: 2 MiB per block). BENCHMARKS.md has
# the measured trade-off. Both are read at call time.
FREQMIX_SAVE_LOW_BAND = False
FREQMIX_SAVE_LOW_BAND_MAX_ELEMENTS = 1 << 20
# Elements of the mix's factor block (channels x H*W) when y is written over x_lo (read at call
# time): 1 MiB of float32, cache-sized.
MIX_BLOCK_ELEMENTS = 1 << 18


# ------------------------------------------------------------------------------------ FreqMix parts
_TAPS = [
    (dy - 1, dx - 1) for dy in range(3) for dx in range(3)
]  # offsets of the 3x3 taps, weight[..., dy, dx]


def _shift_add_(dst, src, dy, dx):
    """``dst[..., i, j] += src[..., i + dy, j + dx]`` where that index exists (zero padding)."""
    h, w = dst.shape[-2:]
    i0, i1, j0, j1 = max(0, -dy), h - max(0, dy), max(0, -dx), w - max(0, dx)
    # add_ on the view, not `dst[...] +=` (that writes the view back onto itself with a copy)
    dst[..., i0:i1, j0:j1].add_(src[..., i0 + dy : i1 + dy, j0 + dx : j1 + dx])


def conv3x3_few_outputs(x, weight, bias):
    """3x3 / padding 1 conv with few output channels as one (9*O, C) @ (C, H*W) matmul plus 9
    shifted adds.

    Equal to ``F.conv2d(x, weight, bias, padding=1)`` up to float rounding; avoids the slow
    direct-conv path for O=2 (FreqMix's spatial gate) on CPU.
    """
    o, c = weight.shape[:2]
    b, _, h, w = x.shape
    z = torch.matmul(weight.permute(2, 3, 0, 1).reshape(9 * o, c), x.reshape(b, c, h * w)).view(
        b, 9, o, h, w
    )
    out = (
        bias.view(1, o, 1, 1).expand(b, o, h, w).clone()
        if bias is not None
        else x.new_zeros(b, o, h, w)
    )
    for t, (dy, dx) in enumerate(_TAPS):
        _shift_add_(out, z[:, t], dy, dx)
    return out


def _conv3x3_backward(g, x, weight, gx, need_w):
    """Adds ``conv3x3^T(g)`` to ``gx`` (B, C, H, W) in place; returns (grad weight, grad bias) if
    ``need_w``."""
    b, c, h, w = x.shape
    o = weight.shape[0]
    u = g.new_zeros(
        b, 9, o, h, w
    )  # u[:, t] = g shifted back by tap t (the adjoint of the shifted adds)
    for t, (dy, dx) in enumerate(_TAPS):
        _shift_add_(u[:, t], g, -dy, -dx)
    u = u.view(b, 9 * o, h * w)
    wm = weight.permute(2, 3, 0, 1).reshape(9 * o, c)
    gx.view(b, c, h * w).baddbmm_(wm.t().expand(b, c, 9 * o), u)
    if not need_w:
        return None, None
    gw = torch.einsum("bkn,bcn->kc", u, x.reshape(b, c, h * w))
    return gw.view(3, 3, o, c).permute(2, 3, 0, 1).contiguous(), g.sum((0, 2, 3))


def se_apply(t, w1, b1, w2, b2):
    """SE gate on pooled (N, C[, 1, 1]) input: 1x1 conv -> ReLU -> 1x1 conv -> sigmoid, as linear
    layers.

    Computed in the weights' dtype, returned as (N, C, 1, 1) in ``t``'s dtype.
    """
    z = F.relu(F.linear(t.flatten(1).to(w1.dtype), w1.flatten(1), b1))
    return torch.sigmoid(F.linear(z, w2.flatten(1), b2))[..., None, None].to(t.dtype)


def freqmix_gates(stats, gate, se_lo, se_hi):
    """Gates ``a_lo, a_hi`` (B, C, 1, 1) from per-(image, channel) statistics ``stats``.

    ``stats`` is (B, C, 3) = (x[0, 0], x_lo[0, 0], GAP(Im S_lo)) for the spectral gates, (B, C, 2) =
    mean squares of the two bands for "band_energy". ``se_lo``/``se_hi`` map (N, C, 1, 1) to
    (N, C, 1, 1).
    """
    b, c = stats.shape[:2]
    if gate == "band_energy":
        ms_lo, ms_hi = stats[..., None, None].unbind(-3)
        return se_lo(torch.sqrt(ms_lo + 1e-12)), se_hi(torch.sqrt(ms_hi + 1e-12))
    if gate == "released":
        # fftshift over all dims rolls batch and channel by n//2 too; the spatial roll leaves the
        # (H, W) means unchanged, the batch/channel roll moves which image/channel feeds each gate.
        stats = torch.roll(stats, shifts=(b // 2, c // 2), dims=(0, 1))
    x00, re_lo, im_lo = stats[..., None, None].unbind(-3)
    # GAP(Re S_hi) = x[0, 0] - x_lo[0, 0], GAP(Im S_hi) = -GAP(Im S_lo); Re and Im go through each
    # gate as one batch
    g_lo = se_lo(torch.cat([re_lo, im_lo], 0))
    g_hi = se_hi(torch.cat([x00 - re_lo, -im_lo], 0))
    return torch.sqrt(g_lo[:b] ** 2 + g_lo[b:] ** 2 + 1e-8), torch.sqrt(
        g_hi[:b] ** 2 + g_hi[b:] ** 2 + 1e-8
    )


def _se_forward(t, w1, b1, w2, b2):
    """``se_apply`` on (N, C) input ``t`` in the weights' dtype, with what its backward needs:
    (input, pre-ReLU, hidden, output)."""
    t = t.to(w1.dtype)
    z = F.linear(t, w1.flatten(1), b1)
    h = torch.relu(z)
    return t, z, h, torch.sigmoid(F.linear(h, w2.flatten(1), b2))


def _se_backward(saved, g, w1, w2):
    """Backward of ``se_apply`` from ``_se_forward``'s ``saved`` and the output gradient ``g``
    (N, C): (grad input, grad fc1 weight, grad fc1 bias, grad fc2 weight, grad fc2 bias)."""
    t, z, h, s = saved
    d2 = g.to(w1.dtype) * s * (1 - s)
    d1 = torch.mm(d2, w2.flatten(1)).mul_(z > 0)
    return (
        torch.mm(d1, w1.flatten(1)),
        torch.mm(d1.t(), t).view_as(w1),
        d1.sum(0),
        torch.mm(d2.t(), h).view_as(w2),
        d2.sum(0),
    )


def _gates_backward(stats, gate, se, g_alo, g_ahi):
    """Gradients of ``freqmix_gates`` (with ``se_apply`` gates of parameters ``se``, fc1 weight,
    fc1 bias, fc2 weight, fc2 bias of the low then the high gate) w.r.t. ``stats`` and ``se``, for
    gate gradients ``g_alo``/``g_ahi`` (B, C): written out, since autograd through the tiny gate
    graph called from a backward costs ~1 ms per FreqMix."""
    b, c = stats.shape[:2]
    g_alo, g_ahi = g_alo.reshape(b, c), g_ahi.reshape(b, c)
    lo, hi = se[:4], se[4:]
    if gate == "band_energy":
        r = torch.sqrt(stats + 1e-12)  # (B, C, 2): the SE inputs
        t_lo, *p_lo = _se_backward(_se_forward(r[..., 0], *lo), g_alo, lo[0], lo[2])
        t_hi, *p_hi = _se_backward(_se_forward(r[..., 1], *hi), g_ahi, hi[0], hi[2])
        g_st = torch.stack([t_lo, t_hi], -1).to(stats.dtype) / (2 * r)
        return g_st, p_lo + p_hi
    st = torch.roll(stats, shifts=(b // 2, c // 2), dims=(0, 1)) if gate == "released" else stats
    x00, re_lo, im_lo = st.unbind(-1)
    in_lo, in_hi = torch.cat([re_lo, im_lo], 0), torch.cat([x00 - re_lo, -im_lo], 0)
    # a = sqrt(g_re^2 + g_im^2 + 1e-8): d a / d g = g / a, the same for both halves
    outs = []
    for t, g_a, prm in ((in_lo, g_alo, lo), (in_hi, g_ahi, hi)):
        saved = _se_forward(t, *prm)
        gv = saved[3].to(t.dtype)
        a = torch.sqrt(gv[:b] ** 2 + gv[b:] ** 2 + 1e-8)
        outs.append(_se_backward(saved, gv * (g_a / a).repeat(2, 1), prm[0], prm[2]))
    (d_lo, *p_lo), (d_hi, *p_hi) = outs
    d_lo, d_hi = d_lo.to(stats.dtype), d_hi.to(stats.dtype)
    g_st = torch.stack([d_hi[:b], d_lo[:b] - d_hi[:b], d_lo[b:] - d_hi[b:]], -1)
    if gate == "released":
        g_st = torch.roll(g_st, shifts=(-(b // 2), -(c // 2)), dims=(0, 1))
    return g_st, p_lo + p_hi


def _band_stats(x, x_lo, im, gate):
    b, c = x.shape[:2]
    if gate == "band_energy":
        return torch.stack([x_lo.pow(2).mean((-2, -1)), (x - x_lo).pow(2).mean((-2, -1))], -1)
    return torch.stack([x[:, :, 0, 0], x_lo[:, :, 0, 0], im.view(b, c)], -1)


def _freqmix_forward(x, conv_w, conv_b, se_lo, se_hi, gate, cutoff, chunk, keep_low_band=True):
    """y and the tensors the backward may need (``x_lo`` None unless ``keep_low_band``)."""
    b, c, h, w = x.shape
    wts = torch.sigmoid(conv3x3_few_outputs(x, conv_w, conv_b))
    im = x.new_empty(b * c) if gate != "band_energy" else None
    x_lo = spectral_lowpass(x.reshape(b * c, h, w), cutoff, chunk, im_out=im).view(b, c, h, w)
    stats = _band_stats(x, x_lo, im, gate)
    a_lo, a_hi = freqmix_gates(stats, gate, se_lo, se_hi)
    # y = w0*a_lo*x_lo + w1*a_hi*(x - x_lo) = x f + x_lo g, f = a_hi w1, g = a_lo w0 - f: the
    # factors by broadcasting into one buffer updated in place (a batched product with K = 1 or 2
    # writing a fresh plane-sized result is ~1.5x slower on the CPU), y written over x_lo when it
    # is not kept (each fresh plane-sized buffer costs its page faults; BENCHMARKS.md, issue 15)
    n = h * w
    wv, al, ah = wts.view(b, 2, n), a_lo.view(b, c, 1), a_hi.view(b, c, 1)
    xv, xl = x.view(b, c, n), x_lo.view(b, c, n)
    if keep_low_band:
        f = torch.mul(ah, wv[:, 1:2])
        y = torch.mul(xv, f)
        y.addcmul_(xl, f.neg_().addcmul_(al, wv[:, 0:1]))
        return y.view(b, c, h, w), (wts, x_lo, a_lo, a_hi, stats)
    # by blocks of channels: the factor's buffer stays cache-sized and is never freshly mapped
    step = max(1, MIX_BLOCK_ELEMENTS // n)
    buf = x.new_empty(b, min(step, c), n)
    w0, w1 = wv[:, 0:1], wv[:, 1:2]
    for c0 in range(0, c, step):
        cs = slice(c0, min(c, c0 + step))
        g = torch.mul(ah[:, cs].neg(), w1, out=buf[:, : cs.stop - c0]).addcmul_(al[:, cs], w0)
        yb = xl[:, cs].mul_(g)  # x_lo g, then + x f with f = -(g - a_lo w0), from g's buffer
        yb.addcmul_(xv[:, cs], g.addcmul_(al[:, cs], w0, value=-1.0), value=-1.0)
    return x_lo, (wts, None, a_lo, a_hi, stats)


class _FreqMixFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x, conv_w, conv_b, lo_w1, lo_b1, lo_w2, lo_b2, hi_w1, hi_b1, hi_w2, hi_b2, opts
    ):
        y, (wts, x_lo, a_lo, a_hi, stats) = _freqmix_forward(
            x,
            conv_w,
            conv_b,
            opts.se_lo,
            opts.se_hi,
            opts.gate,
            opts.cutoff,
            opts.chunk,
            keep_low_band=opts.save_low_band,
        )
        ctx.opts = opts
        ctx.x_lo = x_lo  # an intermediate (None unless kept): an attribute, not saved_tensors
        ctx.save_for_backward(
            x, conv_w, conv_b, lo_w1, lo_b1, lo_w2, lo_b2, hi_w1, hi_b1, hi_w2, hi_b2
        )
        ctx.small = (wts, a_lo, a_hi, stats)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        with fp32_region(
            gy.device.type
        ):  # a backward called inside autocast must not recompute gates in half
            return _FreqMixFn._backward(ctx, gy)

    @staticmethod
    def _backward(ctx, gy):
        x, conv_w, conv_b, *se = ctx.saved_tensors
        wts, a_lo, a_hi, stats = ctx.small
        o, need = ctx.opts, ctx.needs_input_grad
        b, c, h, w = x.shape
        n = h * w
        x_lo = ctx.x_lo
        if x_lo is None:
            x_lo = spectral_lowpass(x.reshape(b * c, h, w), o.cutoff, o.chunk).view(b, c, h, w)
        p, xv, xl = gy.contiguous().view(b, c, n), x.view(b, c, n), x_lo.reshape(b, c, n)
        wv, al, ah = wts.view(b, 2, n), a_lo.view(b, c, 1), a_hi.view(b, c, 1)
        # reductions of the mix: q = p*x_lo, then q = p*x_hi, each read by two batched matrix
        # products
        q = p * xl
        g_w0, g_alo = torch.bmm(al.transpose(1, 2), q), torch.bmm(q, wv[:, 0:1].transpose(1, 2))
        q.neg_().addcmul_(p, xv)
        g_w1, g_ahi = torch.bmm(ah.transpose(1, 2), q), torch.bmm(q, wv[:, 1:2].transpose(1, 2))
        # gate statistics and SE parameters, by the written-out backward of the gates
        g_st, g_se = _gates_backward(stats, o.gate, se, g_alo, g_ahi)
        g_se = [gt if r else None for gt, r in zip(g_se, need[3:11])]
        # g_x_lo = p * (w0 a_lo - w1 a_hi), the rank-2 factor built by one batched product into q's
        # buffer
        g = torch.bmm(torch.cat([al, -ah], 2), wv, out=q).mul_(p)
        if o.gate == "band_energy":  # d mean(band^2) / d band = 2 band / n
            x_hi = xv - xl
            alpha, beta = (g_st * (2.0 / n)).unsqueeze(-1).unbind(-2)
            g.addcmul_(xl, alpha).addcmul_(x_hi, beta, value=-1.0)
            g = spectral_lowpass(g.view(b * c, h, w), o.cutoff, o.chunk, overwrite=True).view(
                b, c, n
            )
            g.addcmul_(x_hi, beta)
        else:  # (x00, re_lo, im_lo) = (<e00, x>, <L e00, x>, <v, x>)
            g_x00, g_re, g_im = g_st.unbind(-1)
            g = spectral_lowpass(
                g.view(b * c, h, w),
                o.cutoff,
                o.chunk,
                overwrite=True,
                add_e00=g_re.reshape(-1),
                add_v=g_im.reshape(-1),
            ).view(b, c, n)
            g[:, :, 0] += g_x00
        # + p * w1 a_hi, the rank-1 factor built into a free full-size buffer
        spare = q if g.data_ptr() != q.data_ptr() else (xl if ctx.x_lo is None else None)
        g.addcmul_(p, torch.bmm(ah, wv[:, 1:2], out=spare))
        g_logits = torch.cat([g_w0, g_w1], 1).mul_(wv).mul_(1 - wv).view(b, 2, h, w)
        g = g.view(b, c, h, w)
        g_cw, g_cb = _conv3x3_backward(g_logits, x, conv_w, g, need[1] or need[2])
        return (
            g if need[0] else None,
            g_cw if need[1] else None,
            g_cb if need[2] else None,
            *g_se,
            None,
        )


def freqmix(x, conv_w, conv_b, se_lo_params, se_hi_params, se_lo, se_hi, gate, cutoff, chunk):
    """FreqMix on float32/64 ``x`` (B, C, H, W); custom backward when a graph is recorded.

    ``se_lo_params``/``se_hi_params``: (fc1 weight, fc1 bias, fc2 weight, fc2 bias) of each SE gate;
    ``se_lo``/``se_hi``: the gate modules themselves (called in the forward, so their hooks see the
    inputs).
    """
    params = (conv_w, conv_b, *se_lo_params, *se_hi_params)
    if torch.is_grad_enabled() and (x.requires_grad or any(t.requires_grad for t in params)):
        opts = SimpleNamespace(
            se_lo=se_lo,
            se_hi=se_hi,
            gate=gate,
            cutoff=cutoff,
            chunk=chunk,
            save_low_band=FREQMIX_SAVE_LOW_BAND or x.numel() <= FREQMIX_SAVE_LOW_BAND_MAX_ELEMENTS,
        )
        return _FreqMixFn.apply(x, *params, opts)
    y, _ = _freqmix_forward(x, conv_w, conv_b, se_lo, se_hi, gate, cutoff, chunk, False)
    return y
