"""The DAF low-pass by matrix products, for CPU planes where they beat the 2-D transforms (see
``spectral_lowpass.lowpass_form``): the matrix form (products along both axes) and the row form
(the row spectrum along W, by products with the DFT matrices of the kept bins or by rfft / irfft;
products along H). Same arguments and results as the transform form
(``spectral_lowpass.spectral_lowpass``).

Both use the separable structure of the box mask, ``M = my mx^T``: with ``my = sy + ay`` and
``mx = sx + ax`` (even + odd parts, un-shifted coordinates) the symmetrised mask is
``sy sx^T + ay ax^T`` (the cross terms are odd and cancel). ``Ry + i Iy``, the circulant of ``my``,
applies ``my`` along H: ``Ry`` is real symmetric, ``Iy`` real antisymmetric and of rank <= 2
(``ay`` lives on the unmatched edge bin pair of an even-length box), so the ``Iy`` terms are applied
in low-rank form.
"""

import functools
from types import SimpleNamespace

import numpy as np
import torch

from .spectral_plans import _CACHE_SIZE, _chunks, _np_plan, box_mask_bounds

# The row form does its transforms along W as products with the DFT matrices of the kept bins
# (``_row_dft_bases``) for widths up to this, with rfft / irfft above it: with the products the
# row form took 0.63x the time at 50x84 (res4 at 800x1344) and 0.78-0.89x at W = 48..64, but
# 1.12x at 56x96 and 1.12-1.32x at W = 128 (bench/bench_lowpass_forms.py, "rows FFTs / rows";
# BENCHMARKS.md, issue 15). Read at call time.
ROW_FORM_DFT_MAX_WIDTH = 90


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
    """``(U, V)`` with ``a = U @ V.T`` and as few columns as ``a``'s rank (relative tol 1e-12);
    none for a matrix of rounding noise (``Iy`` of an odd, symmetric box is ~1e-17, not 0)."""
    if not a.size or np.abs(a).max() <= 1e-13:
        return np.zeros((a.shape[0], 0)), np.zeros((a.shape[1], 0))
    u, s, vt = np.linalg.svd(a)
    r = int((s > 1e-12 * s[0]).sum())
    return u[:, :r] * s[:r], vt[:r].T


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _matrix_plan(h, w, cutoff, device, dtype):
    """Tensors of the matrix form of ``L`` for an (h, w) plane: ``L X = Ry X Rx^T - Iy X Ix^T``,
    the second term as ``Iy (X Vx) Ux^T`` with ``Ix = Ux Vx^T``."""
    ry, iy = _circulant_parts(h, cutoff)
    rx, ix = _circulant_parts(w, cutoff)
    ux, vx = _low_rank(ix)
    if not _low_rank(iy)[0].shape[1]:  # a symmetric box along H: no second term
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
    """``spectral_lowpass`` by the matrix form (see ``_matrix_plan``)."""
    n, h, w = planes.shape
    q = _matrix_plan(h, w, float(cutoff), planes.device, planes.dtype)
    out = planes if overwrite else torch.empty_like(planes)
    r = q.rank
    # the bv columns only when the im functional is asked for
    right = q.right if im_out is not None else q.right[:, : w + r]
    for i, j in _chunks(n, chunk // max(1, h * w)):
        if overwrite and add_e00 is not None:  # our own buffer: the impulse goes in before L
            planes[i:j, 0, 0] += add_e00[i:j].to(planes.dtype)
        # from planes[i:j] before out[i:j] (which may be the same memory) is written
        t = torch.matmul(planes[i:j].reshape(-1, w), right).view(j - i, h, -1)
        if im_out is not None:
            im_out[i:j] = (t[..., w + r :] * q.av).sum((1, 2))
        o = out[i:j]
        torch.matmul(q.ry, t[..., :w], out=o)
        if r:
            a = torch.matmul(q.iy, t[..., w : w + r])
            o.view(-1, w).addmm_(a.reshape(-1, r), q.ux_t, alpha=-1.0)
        # L(plane + a e00) = L plane + a L e00; + b v: rank-1 updates of the flattened planes
        if add_e00 is not None and not overwrite:
            o.view(j - i, -1).addmm_(add_e00[i:j, None].to(o.dtype), q.l_e00)
        if add_v is not None:
            o.view(j - i, -1).addmm_(add_v[i:j, None].to(o.dtype), q.v)
    return out


def _even_odd_box(n, cutoff):
    """Even and odd parts ``(s, a)`` of the 1-D box in un-shifted coordinates (length ``n``)."""
    r0, r1 = box_mask_bounds(n, cutoff)
    m = np.zeros(n)
    m[max(r0, 0) : r1] = 1.0
    m = np.fft.ifftshift(m)
    mirror = m[(-np.arange(n)) % n]
    return 0.5 * (m + mirror), 0.5 * (m - mirror)


def _row_dft_bases(w, kc):
    """The row rfft and irfft restricted to the bins ``k < kc``, as real matrices on interleaved
    (real, imaginary) columns: ``X @ fw`` is ``view_as_real(rfft(X)[..., :kc])`` flattened, and
    ``T @ gw`` is ``irfft`` of the row spectrum ``T`` (zero beyond ``kc``, ``n=w``): weight 1/w on
    bin 0 and on the Nyquist bin of an even ``w``, 2/w on the others, whose mirrors irfft implies;
    the imaginary parts of bins 0 and w/2 drop out (their sines vanish), as in irfft."""
    a = 2 * np.pi * np.outer(np.arange(w), np.arange(kc)) / w  # (w, kc)
    fw = np.stack([np.cos(a), -np.sin(a)], -1).reshape(w, 2 * kc)
    c_k = np.where((np.arange(kc) == 0) | (2 * np.arange(kc) == w), 1.0, 2.0) / w
    gw = np.stack([np.cos(a.T) * c_k[:, None], -np.sin(a.T) * c_k[:, None]], 1).reshape(2 * kc, w)
    return fw, gw


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _row_plan(h, w, cutoff, device, dtype):
    """Tensors of the row form of ``L`` for an (h, w) plane.

    With ``S`` the row spectrum (rfft along W), column ``k`` of the output's row spectrum is
    ``sx[k] Ry S[:, k] + i ax[k] Iy S[:, k]``: the columns ``k >= kc`` are zero, ``sx`` is 1 on the
    others except the unmatched edge bin (1/2), the only column where ``ax != 0`` (+-1/2). So one
    real product ``Ry @ S[:, :kc]`` (real and imaginary parts as columns) does almost all the work;
    the edge columns ``[e0, e1)`` get the scale and the low-rank ``Iy`` term.
    """
    p = _np_plan(h, w, cutoff)
    kc, nh = p["kc"], w // 2 + 1
    ry, iy = _circulant_parts(h, cutoff)
    sx, ax = (part[:nh] for part in _even_odd_box(w, cutoff))
    if ry.any() and (sx[kc:].any() or ax[kc:].any()):  # (an empty box along H: L = 0)
        raise AssertionError(f"row plan for {h}x{w}, cutoff {cutoff}: mask beyond the kept columns")
    edge = np.flatnonzero((sx[:kc] != 1.0) | (ax[:kc] != 0.0))
    e0, e1 = (int(edge[0]), int(edge[-1]) + 1) if edge.size else (kc, kc)
    uy, vy = _low_rank(iy)
    # <v, X> from the row spectrum S = rfft(X) (Parseval along W, bins k < kc hold all of v's):
    # sum over y, k of (c_k / w) Re(conj(V[y, k]) S[y, k]), c_k = 2 except for the self-mirrored
    # bins 0 and w/2; with v = av bv^T, rows av_r^T appended to Ry give av_r^T S, then a dot
    # product with the weights of rfft(bv_r) finishes it
    av, bv = _low_rank(p["v_plane"])
    c_k = np.where((np.arange(kc) == 0) | (2 * np.arange(kc) == w), 1.0, 2.0) / w
    bv_hat = np.fft.rfft(bv.T, axis=-1)[:, :kc] * c_k  # (r, kc)
    im_weight = np.stack([bv_hat.real, bv_hat.imag], -1).reshape(-1, 2 * kc)
    fw, gw = _row_dft_bases(w, kc)
    v_row = np.fft.rfft(p["v_plane"], axis=-1)[:, :kc]
    v_row = np.stack([v_row.real, v_row.imag], -1)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    with torch.inference_mode(False), torch.no_grad():

        def t(a, dt=dtype):
            return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dt)

        return SimpleNamespace(
            kc=kc,
            products=_row_products_plan(fw, gw, sx[:kc], ax[:kc], e0, e1, uy @ vy.T, v_row, t),
            ry=t(ry),
            ry_im=t(np.concatenate([ry, av.T], 0)),
            im_weight=t(im_weight),
            e0=e0,
            e1=e1,
            edge_scale=t(sx[e0:e1]),
            edge_iax=t(1j * ax[e0:e1], cdtype),
            uy=t(uy, cdtype) if ax[e0:e1].any() else None,
            vy_t=t(vy.T, cdtype),
            # the row spectrum of v, added after the products for add_v (real, imaginary last)
            v_row=t(v_row),
        )


def _row_products_plan(fw, gw, sx, ax, e0, e1, iy, v_row, t):
    """The row form's tensors when the transforms along W are products (``_row_dft_bases``).

    The scale ``sx`` goes into the inverse basis, so the products along H give ``Ry S`` plus, on
    the edge columns, ``i (ax / sx) Iy S`` (``sx`` is 1/2 wherever ``ax != 0``): the forward
    product also gives ``(-a Im S, a Re S)``, ``a = ax / sx``, of the edge columns (``fw_j``), and
    one product with ``Iy`` adds them. ``imp_row``: what the impulse ``e00`` adds to row 0 of the
    forward product's output; ``v_row``: the v term, divided by the scale like all before it."""
    kc = sx.shape[0]
    a = np.divide(ax, sx, out=np.zeros_like(ax), where=sx != 0)[e0:e1]
    iy_term = bool(a.any() and np.abs(iy).max() > 0)
    nj = e1 - e0 if iy_term else 0
    fw_j = np.stack([-a * fw[:, 2 * e0 + 1 : 2 * e1 : 2], a * fw[:, 2 * e0 : 2 * e1 : 2]], -1)
    scale = np.repeat(sx, 2)
    v_flat = v_row.reshape(v_row.shape[0], -1)
    v_scaled = np.divide(v_flat, scale, out=np.zeros_like(v_flat), where=scale != 0)
    imp = np.zeros(2 * kc + 2 * nj)
    imp[: 2 * kc : 2] = 1.0  # the row rfft of e00 is 1 on row 0, 0 elsewhere: real parts ...
    imp[2 * kc + 1 :: 2] = a[:nj]  # ... and the a Re S columns
    return SimpleNamespace(
        fw=t(np.concatenate([fw, fw_j.reshape(fw.shape[0], -1)[:, : 2 * nj]], 1)),
        gw=t(gw * scale[:, None]),
        nj=nj,
        iy=t(iy),
        imp_row=t(imp),
        v_row=t(v_scaled),
    )


def _row_products_chunk(x, q, h, w, out, im_out, add_e00, add_v):
    """The row form of ``L`` on the (m, h, w) planes ``x`` into ``out`` (m, h, w), with the
    transforms along W as products (``_row_products_plan``); optional arguments as in
    ``_row_lowpass``."""
    m, kc, p = x.shape[0], q.kc, q.products
    sr = torch.matmul(x.reshape(m * h, w), p.fw).view(m, h, -1)  # Re / Im of the kept columns
    if add_e00 is not None:
        sr[:, 0].addcmul_(add_e00[:, None].to(sr.dtype), p.imp_row)
    t = torch.matmul(q.ry, sr[..., : 2 * kc])
    if im_out is not None:  # <v, e00> = v[0, 0] = 0: the impulse does not change im
        # the av rows by their own small product: appended to Ry they would make t strided
        im_out.copy_((torch.matmul(q.ry_im[h:], sr[..., : 2 * kc]) * q.im_weight).sum((1, 2)))
    if p.nj:
        t[..., 2 * q.e0 : 2 * q.e0 + 2 * p.nj] += torch.matmul(p.iy, sr[..., 2 * kc :])
    if add_v is not None:
        t.addcmul_(p.v_row, add_v[:, None, None].to(t.dtype))
    torch.matmul(t.reshape(m * h, 2 * kc), p.gw, out=out.view(m * h, w))


def _row_lowpass(planes, cutoff, chunk, overwrite, im_out, add_e00, add_v):
    """``spectral_lowpass`` by the row form (see ``_row_plan``)."""
    n, h, w = planes.shape
    nh = w // 2 + 1
    q = _row_plan(h, w, float(cutoff), planes.device, planes.dtype)
    kc = q.kc
    chunks = _chunks(n, chunk // max(1, h * w))
    if w <= ROW_FORM_DFT_MAX_WIDTH:  # each chunk's result written in place by the last product
        out = planes if overwrite and planes.is_contiguous() else planes.new_empty(planes.shape)
        for i, j in chunks:
            _row_products_chunk(
                planes[i:j],
                q,
                h,
                w,
                out[i:j],
                None if im_out is None else im_out[i:j],
                None if add_e00 is None else add_e00[i:j],
                None if add_v is None else add_v[i:j],
            )
        return out
    out = None
    if len(chunks) > 1:  # out= copies from a chunk-sized result, cheaper than a second full buffer
        out = planes if overwrite else torch.empty_like(planes)
    for i, j in chunks:
        m = j - i
        s = torch.fft.rfft(planes[i:j], dim=-1)
        if add_e00 is not None:  # the row rfft of e00 is 1 on row 0, 0 elsewhere
            s[:, 0, :kc] += add_e00[i:j, None]
        # the product reads the strided real view of the kept columns; writing it back into s
        # with out= would loop over planes, so it gets its own buffer
        sr = torch.view_as_real(s).view(m, h, 2 * nh)[..., : 2 * kc]
        if im_out is None:
            t = torch.matmul(q.ry, sr)
        else:  # <v, e00> = v[0, 0] = 0: the impulse does not change im
            t = torch.matmul(q.ry_im, sr)
            im_out[i:j] = (t[:, h:] * q.im_weight).sum((1, 2))
            t = t[:, :h]
        tc = torch.view_as_complex(t.reshape(m, h, kc, 2))
        if q.e1 > q.e0:
            tc[:, :, q.e0 : q.e1] *= q.edge_scale
            if q.uy is not None:
                edge = torch.matmul(q.uy, torch.matmul(q.vy_t, s[:, :, q.e0 : q.e1]))
                tc[:, :, q.e0 : q.e1] += edge * q.edge_iax
        if add_v is not None:
            torch.view_as_real(tc).addcmul_(q.v_row, add_v[i:j, None, None, None].to(t.dtype))
        s[..., :kc] = tc
        s[..., kc:] = 0
        if out is None:
            return torch.fft.irfft(s, n=w, dim=-1)
        torch.fft.irfft(s, n=w, dim=-1, out=out[i:j])
    return out
