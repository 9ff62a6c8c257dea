"""Masks and cached plans of the DAF low-pass ``L x = irfft2(R * rfft2(x))`` (the symmetrised box
mask ``R``), shared by its three forms in :mod:`.spectral_lowpass` and :mod:`.lowpass_products`."""

import functools
from contextlib import ExitStack
from types import SimpleNamespace

import numpy as np
import torch

# masks are tiny (H x W//2+1 floats); bound the caches so varying test-time sizes cannot grow them
# forever
_CACHE_SIZE = 128


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
