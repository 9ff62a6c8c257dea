"""The DAF low-pass ``L x = irfft2(R * rfft2(x))`` (masks, cached plans, the chunked row-rfft /
pruned-column kernel, its matrix form for small CPU planes and its self-adjoint autograd function);
FreqMix's parts that use it are in :mod:`.fourier_ops`, whose docstring gives the maths."""

import functools
from contextlib import ExitStack
from types import SimpleNamespace

import numpy as np
import torch

# masks are tiny (H x W//2+1 floats); bound the caches so varying test-time sizes cannot grow them
# forever
_CACHE_SIZE = 128

# On the CPU, planes with H + W at most this are filtered by the matrix form (``_matrix_lowpass``),
# except planes of 32x32 and more with both sides powers of two: the matrix products cost
# ~H*W*(H+W) per plane, the transforms ~H*W*log(H*W) with larger fixed costs and their best case at
# powers of two (bench/bench_lowpass_forms.py; BENCHMARKS.md, "matrix form"). A fixed rule, not a
# timing at run time, so that a run and its resumption compute the same. 0 turns the matrix form
# off. Read at call time.
MATRIX_FORM_MAX_SIDE_SUM = 80


def _uses_matrix_form(h, w, device):
    if device.type != "cpu" or h + w > MATRIX_FORM_MAX_SIDE_SUM:
        return False
    both_pow2 = h & (h - 1) == 0 and w & (w - 1) == 0
    return not (both_pow2 and h * w >= 1024)


def fp32_region(device_type):
    """Disable autocast (CPU, CUDA and the tensor's device type) for the FFT part."""
    stack = ExitStack()
    types = ["cpu", "cuda"] + ([device_type] if device_type not in ("cpu", "cuda") else [])
    for dt in types:
        try:
            stack.enter_context(torch.autocast(device_type=dt, enabled=False))
        except RuntimeError:  # a device type without autocast support in this torch build
            pass
    return stack


def box_mask_bounds(n, cutoff):
    """Half-open slice [lo, hi) of the centred spectrum (DC at n//2) kept by the box mask.

    Python's built-in round on float64, as in the original code (round-half-to-even matters, e.g.
    n=30).
    """
    return round(n / 2 - n * cutoff), round(n / 2 + n * cutoff)


def box_mask_centered(h, w, cutoff):
    """The (h, w) float64 numpy box mask in centred (fftshift-ed) coordinates."""
    r0, r1 = box_mask_bounds(h, cutoff)
    c0, c1 = box_mask_bounds(w, cutoff)
    m = np.zeros((h, w), dtype=np.float64)
    m[max(r0, 0) : r1, max(c0, 0) : c1] = 1.0
    return m


def _uncentred_parts(h, w, cutoff):
    """Symmetric and antisymmetric parts of the box mask in un-shifted FFT coordinates (DC at
    [0, 0])."""
    mu = np.fft.ifftshift(box_mask_centered(h, w, cutoff))
    mneg = mu[(-np.arange(h)) % h][:, (-np.arange(w)) % w]  # M(-k), indices modulo (h, w)
    return 0.5 * (mu + mneg), 0.5 * (mu - mneg)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _np_plan(h, w, cutoff):
    """Numpy parts of the spectral plan for an (h, w) plane (see ``_plan``)."""
    msym, manti = _uncentred_parts(h, w, cutoff)
    nh = w // 2 + 1
    rmask = msym[:, :nh]
    used = np.flatnonzero(rmask.any(0))
    kc = int(used[-1]) + 1 if used.size else 1
    # mean(Im(S * M)) over the full plane: Im S(k) and the antisymmetric mask part are both odd in
    # k, so the sum is twice the sum over the rfft half plane; columns whose mirror is also in the
    # half (0 and, for even w, w/2) count once.
    col_w = np.full(nh, 2.0)
    col_w[0] = 1.0
    if w % 2 == 0:
        col_w[-1] = 1.0
    im_weight = manti[:, :nh] * col_w[None, :] / float(h * w)
    im_r, im_c = np.nonzero(im_weight)
    im_w = im_weight[im_r, im_c]
    # its gradient w.r.t. the plane: v[n] = sum_k im_w[k] * dIm(S[k])/dx[n] =
    # -sum_k im_w[k] sin(2 pi k.n), with sin(a + b) = sin a cos b + cos a sin b as two
    # (h, K) @ (K, w) products
    ay = 2 * np.pi * np.outer(np.arange(h), im_r) / h
    ax = 2 * np.pi * np.outer(im_c, np.arange(w)) / w
    v = -((np.sin(ay) * im_w) @ np.cos(ax) + (np.cos(ay) * im_w) @ np.sin(ax))
    v_hat = np.fft.rfft2(v)  # irfft2(v_hat) == v exactly; only a few bins are non-zero
    big = np.abs(v_hat) > 1e-9 * max(np.abs(v_hat).max(), 1e-300)
    v_r, v_c = np.nonzero(big)
    if (im_c >= kc).any() or (v_c >= kc).any():  # both live on the mask's edge bins
        raise AssertionError(
            f"spectral plan for {h}x{w}, cutoff {cutoff}: edge bins outside the kept columns"
        )
    return {
        "kc": kc,
        "rmask": np.ascontiguousarray(rmask[:, :kc]),
        "im": (im_r, im_c, im_w),
        "v": (v_r, v_c, v_hat[v_r, v_c]),
        "v_plane": v,
    }


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _plan(h, w, cutoff, device, dtype):
    """Tensors of the spectral plan, cached per (h, w, cutoff, device, dtype).

    Built outside inference mode so a plan first created under torch.inference_mode() can later be
    used by a training step.
    """
    p = _np_plan(h, w, cutoff)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    with torch.inference_mode(False), torch.no_grad():

        def t(a, dt=None):
            return torch.from_numpy(np.asarray(a)).to(device=device, dtype=dt)

        im_r, im_c, im_w = p["im"]
        v_r, v_c, v_val = p["v"]
        return SimpleNamespace(
            kc=p["kc"],
            rmask=t(p["rmask"], dtype),
            im_r=t(im_r, torch.long),
            im_c=t(im_c, torch.long),
            im_w=t(im_w, dtype),
            v_r=t(v_r, torch.long),
            v_c=t(v_c, torch.long),
            v_val=t(v_val, cdtype),
        )


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _rfft_mask(h, w, cutoff, device, dtype):
    with torch.inference_mode(False), torch.no_grad():
        msym, _ = _uncentred_parts(h, w, cutoff)
        return torch.from_numpy(np.ascontiguousarray(msym[:, : w // 2 + 1])).to(
            device=device, dtype=dtype
        )


def symmetric_rfft_mask(h, w, cutoff, device=None, dtype=torch.float32):
    """Real (h, w//2+1) response equal to the symmetrised box mask (cached per
    size/cutoff/device/dtype)."""
    return _rfft_mask(int(h), int(w), float(cutoff), torch.device(device or "cpu"), dtype)


def _chunks(n, per_chunk):
    """Even split of range(n) into pieces of at most ``per_chunk`` (no tiny remainder chunk)."""
    k = -(-n // max(1, per_chunk))
    step = -(-n // k)
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def _circulant_parts(n, cutoff):
    """Real and imaginary parts of the (n, n) circulant ``F^-1 diag(m) F`` of the 1-D box ``m``
    (un-shifted coordinates): the 1-D low-pass along one axis, before symmetrisation."""
    r0, r1 = box_mask_bounds(n, cutoff)
    m = np.zeros(n)
    m[max(r0, 0) : r1] = 1.0
    kernel = np.fft.ifft(np.fft.ifftshift(m))
    c = kernel[(np.arange(n)[:, None] - np.arange(n)[None, :]) % n]
    return c.real, c.imag


def _low_rank(a):
    """``(U, V)`` with ``a = U @ V.T`` and as few columns as ``a``'s rank (relative tol 1e-12)."""
    u, s, vt = np.linalg.svd(a)
    r = int((s > 1e-12 * s[0]).sum()) if s.size and s[0] > 0 else 0
    return u[:, :r] * s[:r], vt[:r].T


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _matrix_plan(h, w, cutoff, device, dtype):
    """Tensors of the matrix form of ``L`` for an (h, w) plane.

    The box mask is separable, ``M = my mx^T``; with ``my = sy + ay`` (even + odd part) the
    symmetrised mask is ``sy sx^T + ay ax^T`` (the cross terms are odd and cancel), so
    ``L X = Ry X Rx^T - Iy X Ix^T`` with ``Ry + i Iy`` the circulant of ``my`` (Ry symmetric, Iy
    antisymmetric and of rank <= 2: ``ay`` lives on the unmatched edge bin pair of an even-length
    box). The second term is applied in low-rank form, ``Iy (X Vx) Ux^T`` with ``Ix = Ux Vx^T``.
    """
    ry, iy = _circulant_parts(h, cutoff)
    rx, ix = _circulant_parts(w, cutoff)
    ux, vx = _low_rank(ix)
    if not _low_rank(iy)[0].shape[1]:  # an even box along H: no second term
        ux, vx = ux[:, :0], vx[:, :0]
    v = _np_plan(h, w, cutoff)["v_plane"]  # <v, X> = sum over r of av_r . (X bv_r)
    av, bv = _low_rank(v)
    l_e00 = np.outer(ry[:, 0], rx[:, 0]) - np.outer(iy[:, 0], ix[:, 0])
    with torch.inference_mode(False), torch.no_grad():

        def t(a):
            return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)

        return SimpleNamespace(
            right=t(np.concatenate([rx.T, vx, bv], 1)),  # X @ right gives X Rx^T | X Vx | X bv
            rank=vx.shape[1],
            ry=t(ry),
            iy=t(iy),
            ux_t=t(ux.T),
            av=t(av),
            l_e00=t(l_e00.reshape(1, -1)),
            v=t(v.reshape(1, -1)),
        )


def _matrix_lowpass(planes, cutoff, chunk, overwrite, im_out, add_e00, add_v):
    """``spectral_lowpass`` by matrix products (same arguments and results, see
    ``_matrix_plan``)."""
    n, h, w = planes.shape
    q = _matrix_plan(h, w, float(cutoff), planes.device, planes.dtype)
    out = planes if overwrite else torch.empty_like(planes)
    # matmul is an autocast op (the transforms are not): a backward run under autocast would
    # otherwise compute in half precision
    with fp32_region(planes.device.type):
        _matrix_lowpass_chunks(planes, q, out, chunk, im_out, add_e00, add_v)
    return out


def _matrix_lowpass_chunks(planes, q, out, chunk, im_out, add_e00, add_v):
    n, h, w = planes.shape
    r = q.rank
    for i, j in _chunks(n, chunk // max(1, h * w)):
        # from planes[i:j] before out[i:j] (which may be the same memory) is written
        t = torch.matmul(planes[i:j].reshape(-1, w), q.right).view(j - i, h, -1)
        if im_out is not None:
            im_out[i:j] = (t[..., w + r :] * q.av).sum((1, 2))
        o = out[i:j]
        torch.matmul(q.ry, t[..., :w], out=o)
        if r:
            a = torch.matmul(q.iy, t[..., w : w + r])
            o.view(-1, w).addmm_(a.reshape(-1, r), q.ux_t, alpha=-1.0)
        # L(plane + a e00) = L plane + a L e00; + b v: rank-1 updates of the flattened planes
        if add_e00 is not None:
            o.view(j - i, -1).addmm_(add_e00[i:j, None].to(o.dtype), q.l_e00)
        if add_v is not None:
            o.view(j - i, -1).addmm_(add_v[i:j, None].to(o.dtype), q.v)


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
    if _uses_matrix_form(h, w, planes.device):
        return _matrix_lowpass(planes, cutoff, chunk, overwrite, im_out, add_e00, add_v)
    p = _plan(h, w, float(cutoff), planes.device, planes.dtype)
    chunks = _chunks(n, chunk // max(1, h * w))
    out = None
    if (
        len(chunks) > 1
    ):  # out= copies from a chunk-sized result, cheaper than a second full-size buffer
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
