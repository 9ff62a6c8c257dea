"""Anti-aliasing filters of Seg-Aliasing (ICLR 2024): DAF, FreqMix and a BlurPool baseline.

Pure ``nn.Module``s with plain arguments (no cfg). See docs/backbone.md for the math and the
released-vs-variant options.

Released semantics (what the paper's code computes), for real input ``x`` of shape (B, C, H, W):

* ``DeAliasingFilter`` (DAF): ``Re(IFFT2(ifftshift(fftshift(FFT2(x)) * M)))`` with the centred box mask
  ``M[r0:r1, c0:c1] = 1``, ``r0 = round(H/2 - H*t)``, ``r1 = round(H/2 + H*t)`` (Python round, half to even),
  same for columns. Shape preserving, no parameters, same in train and eval.
* ``FreqMix``: spatial band weights ``w = sigmoid(conv3x3(x))``, band split with the same mask
  (``x_lo = DAF(x)``, ``x_hi = x - x_lo``), two SE gates fed with the global average of the real and imaginary
  parts of each masked *spectrum*, combined as a magnitude, ``y = w0*a_lo*x_lo + w1*a_hi*x_hi``. The released
  code shifts the spectrum over ALL dims (``fftshift`` without ``dim``), so the gate of image b, channel c is
  computed from image ``(b - B//2) mod B`` with its channels rolled by ``C//2`` (gate ``"released"``);
  ``"per_image"`` gates every image from its own spectrum (a variant), ``"band_energy"`` feeds band RMS values.

Fast path (used by the modules): ``Re(...)`` of the box-masked spectrum equals filtering with the Hermitian
symmetrised mask ``M_sym(k) = (M(k) + M(-k)) / 2`` (values 0, 0.5, 1), so one ``rfft2``/``irfft2`` pair with a
real (H, W//2+1) mask cached per (H, W, cutoff, device, dtype) gives the same output as the complex
reference without any full-size complex mask. FreqMix's SE inputs are recovered exactly from the same rfft
(``GAP(Re S_lo) = x_lo[..., 0, 0]``; ``GAP(Im S_lo)`` = a weighted sum over the few asymmetric edge bins), and
for ``"released"`` these (B, C) values are rolled over (batch, channel) exactly as the all-dims shift does.

The slow literal transcriptions of the released computation live in ``tests/reference_fourier.py``.

Numerics: the FFT part runs in float32 (float64 for float64 input) with autocast disabled (cuFFT half
precision only supports power-of-two sizes; bfloat16 FFTs are not supported at all); outputs are cast back to
the input dtype.
"""
import functools
import math
from contextlib import ExitStack

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DeAliasingFilter",
    "FreqMix",
    "BlurPool",
    "box_mask_bounds",
    "box_mask_centered",
    "symmetric_rfft_mask",
    "check_freqmix_gate",
    "FREQMIX_GATES",
]

# "released" = the shipped computation (default); "per_image" and "band_energy" are variants (docs/backbone.md)
FREQMIX_GATES = ("released", "per_image", "band_energy")
# former names -> why they are no longer accepted (a silent alias would change what an old config computes)
_RENAMED_GATES = {
    "faithful": (
        "was renamed: it gated each image from its own spectrum, which is not what the released code computes. "
        "Use 'released' (the shipped computation: SE gates read the batch- and channel-rolled spectrum; the "
        "default) or 'per_image' (the former 'faithful' computation, a variant)"
    ),
}

# masks are tiny (H x W//2+1 floats); bound the cache so varying test-time sizes cannot grow it forever
_MASK_CACHE_SIZE = 128


def _check_cutoff(cutoff, name="cutoff"):
    try:
        cutoff = float(cutoff)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 0.5] (cycles/pixel), got {cutoff!r}") from None
    if not (0.0 < cutoff <= 0.5):
        raise ValueError(f"{name} must be in (0, 0.5] (cycles/pixel), got {cutoff}")
    return cutoff


def check_freqmix_gate(gate, key="FreqMix gate"):
    """Return ``gate`` if it is one of FREQMIX_GATES, else raise a ValueError naming ``key``."""
    if isinstance(gate, str) and gate in _RENAMED_GATES:
        raise ValueError(f"{key} {gate!r} {_RENAMED_GATES[gate]}")
    if gate not in FREQMIX_GATES:
        raise ValueError(f"{key} must be one of {FREQMIX_GATES}, got {gate!r}")
    return gate


def box_mask_bounds(n, cutoff):
    """Half-open slice [lo, hi) of the centred spectrum (DC at n//2) kept by the box mask.

    Python's built-in round on float64, as in the original code (round-half-to-even matters, e.g. n=30).
    """
    return round(n / 2 - n * cutoff), round(n / 2 + n * cutoff)


def box_mask_centered(h, w, cutoff):
    """The (h, w) float64 numpy box mask in centred (fftshift-ed) coordinates."""
    r0, r1 = box_mask_bounds(h, cutoff)
    c0, c1 = box_mask_bounds(w, cutoff)
    m = np.zeros((h, w), dtype=np.float64)
    m[max(r0, 0):r1, max(c0, 0):c1] = 1.0
    return m


def _uncentred_parts(h, w, cutoff):
    """Symmetric and antisymmetric parts of the box mask in un-shifted FFT coordinates (DC at [0, 0])."""
    mu = np.fft.ifftshift(box_mask_centered(h, w, cutoff))
    mneg = mu[(-np.arange(h)) % h][:, (-np.arange(w)) % w]  # M(-k), indices modulo (h, w)
    return 0.5 * (mu + mneg), 0.5 * (mu - mneg)


@functools.lru_cache(maxsize=_MASK_CACHE_SIZE)
def _np_symmetric_rfft_mask(h, w, cutoff):
    msym, _ = _uncentred_parts(h, w, cutoff)
    return np.ascontiguousarray(msym[:, : w // 2 + 1])


@functools.lru_cache(maxsize=_MASK_CACHE_SIZE)
def _np_imag_dc_weights(h, w, cutoff):
    """Flat indices into the (h, w//2+1) rfft grid and weights so that
    ``sum(weights * Im(X.flatten()[idx]))`` equals ``mean(Im(fftshift(fft2(x)) * M))``.

    Im S(k) and the antisymmetric mask part are both odd in k, so the full-plane sum is twice the sum over one
    half plane; rfft columns whose mirror is also inside the half (column 0 and, for even w, column w/2)
    count once.
    """
    _, manti = _uncentred_parts(h, w, cutoff)
    half = manti[:, : w // 2 + 1].copy()
    col_w = np.full(w // 2 + 1, 2.0)
    col_w[0] = 1.0
    if w % 2 == 0:
        col_w[-1] = 1.0
    half *= col_w[None, :] / float(h * w)
    idx = np.flatnonzero(half)
    return idx.astype(np.int64), half.reshape(-1)[idx]


@functools.lru_cache(maxsize=_MASK_CACHE_SIZE)
def _cached_tensor(kind, h, w, cutoff, device, dtype):
    # Built outside inference mode so a mask first created under torch.inference_mode() can later be saved
    # for backward in a training step.
    with torch.inference_mode(False), torch.no_grad():
        if kind == "rmask":
            return torch.from_numpy(_np_symmetric_rfft_mask(h, w, cutoff)).to(device=device, dtype=dtype)
        if kind == "imag_idx":
            return torch.from_numpy(_np_imag_dc_weights(h, w, cutoff)[0]).to(device=device)
        if kind == "imag_w":
            return torch.from_numpy(_np_imag_dc_weights(h, w, cutoff)[1]).to(device=device, dtype=dtype)
    raise KeyError(kind)


def symmetric_rfft_mask(h, w, cutoff, device=None, dtype=torch.float32):
    """Real (h, w//2+1) response equal to the symmetrised box mask (cached per size/cutoff/device/dtype)."""
    return _cached_tensor("rmask", int(h), int(w), float(cutoff), torch.device(device or "cpu"), dtype)


def _fft_dtype(dtype):
    """float64 stays float64 (exact checks); everything else (half, bfloat16, float32) runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fp32_region(device_type):
    """Disable autocast (CPU and the tensor's device type, e.g. cuda) for the FFT part."""
    stack = ExitStack()
    types = ["cpu", "cuda"] + ([device_type] if device_type not in ("cpu", "cuda") else [])
    for dt in types:
        try:
            stack.enter_context(torch.autocast(device_type=dt, enabled=False))
        except RuntimeError:  # a device type without autocast support in this torch build
            pass
    return stack


# Real elements per FFT chunk: bounds the spectrum-sized temporaries (rfft output, irfft work buffers) to a
# few MiB instead of several copies of the whole feature map; large enough that per-call overhead is negligible.
_CHUNK_ELEMENTS = 1 << 20


def _lowpass(xf, cutoff, want_imag=False):
    """Low band ``x_lo`` of float32/64 ``xf`` (B, C, H, W) and, if asked, ``mean(Im(S * M))`` per (B, C).

    Processed in chunks of planes so peak memory stays near one output-sized buffer.
    """
    b, c, h, w = xf.shape
    planes = xf.reshape(b * c, h, w)
    n = planes.shape[0]
    rmask = symmetric_rfft_mask(h, w, cutoff, xf.device, xf.dtype)
    if want_imag:
        idx = _cached_tensor("imag_idx", h, w, cutoff, xf.device, None)
        iw = _cached_tensor("imag_w", h, w, cutoff, xf.device, xf.dtype)
    step = max(1, _CHUNK_ELEMENTS // max(1, h * w))
    if step >= n:
        chunks = [(0, n)]
    else:
        chunks = [(i, min(n, i + step)) for i in range(0, n, step)]
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
        # in place: neither rfft2's backward nor the index_select above needs the un-masked values
        spec = spec.mul_(rmask)
        if x_lo is None:
            x_lo = torch.fft.irfft2(spec, s=(h, w))
        elif track:  # out= does not support autograd; slice assignment does
            x_lo[i:j] = torch.fft.irfft2(spec, s=(h, w))
        else:  # write straight into the output, no chunk-sized temporary
            torch.fft.irfft2(spec, s=(h, w), out=x_lo[i:j])
    x_lo = x_lo.reshape(b, c, h, w)
    im = None
    if want_imag:
        im = (ims[0] if len(ims) == 1 else torch.cat(ims, 0)).reshape(b, c, 1, 1)
    return x_lo, im


def _daf_fast(x, cutoff):
    shape = x.shape
    with _fp32_region(x.device.type):
        xf = x.to(_fft_dtype(x.dtype)).reshape((-1, 1) + tuple(shape[-2:]))
        y, _ = _lowpass(xf, cutoff)
    return y.reshape(shape).to(x.dtype)


def _conv3x3_few_outputs(x, weight, bias):
    """3x3 / padding 1 conv with few output channels as one 1x1 conv to 9*O maps plus 9 shifted adds.

    Equal to ``F.conv2d(x, weight, bias, padding=1)`` up to float rounding; avoids the slow direct-conv path
    for O=2 (FreqMix's spatial gate) on CPU.
    """
    o, c = weight.shape[:2]
    b, _, h, w = x.shape
    # the 1x1 conv as a plain matmul: (9*O, C) @ (B, C, H*W)
    z = torch.matmul(weight.permute(2, 3, 0, 1).reshape(9 * o, c), x.reshape(b, c, h * w))
    z = F.pad(z.reshape(b, 9 * o, h, w), (1, 1, 1, 1)).reshape(b, 3, 3, o, h + 2, w + 2)
    out = None
    for dy in range(3):
        for dx in range(3):
            tap = z[:, dy, dx, :, dy:dy + h, dx:dx + w]
            out = tap if out is None else out + tap
    return out + bias.view(1, o, 1, 1) if bias is not None else out


class DeAliasingFilter(nn.Module):
    """De-aliasing filter (DAF): shape-preserving Fourier box low-pass, no parameters, no buffers.

    Args:
        cutoff: box half-width in cycles/pixel, in (0, 0.5]. The paper configs use 0.35 (= 0.25 * 1.4).
    """

    def __init__(self, cutoff=0.35):
        super().__init__()
        self.cutoff = _check_cutoff(cutoff)

    def forward(self, x):
        if x.dim() < 2:
            raise ValueError(f"DeAliasingFilter expects (..., H, W) input, got shape {tuple(x.shape)}")
        return _daf_fast(x, self.cutoff)

    def extra_repr(self):
        return f"cutoff={self.cutoff}"


class _SEGate(nn.Module):
    """Squeeze-excitation gate: GAP -> 1x1 conv C->C/r -> ReLU -> 1x1 conv C/r->C -> sigmoid."""

    def __init__(self, channels, reduction):
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(
                f"FreqMix reduction={reduction} leaves no hidden channels for channels={channels}; "
                f"expected reduction <= channels"
            )
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x):
        if x.shape[-2:] != (1, 1):
            x = F.adaptive_avg_pool2d(x, 1)
        x = x.flatten(1).to(self.fc1.weight.dtype)
        # 1x1 convs on a 1x1 map are linear layers; F.linear avoids the conv dispatch overhead
        h = F.relu(F.linear(x, self.fc1.weight.flatten(1), self.fc1.bias))
        return torch.sigmoid(F.linear(h, self.fc2.weight.flatten(1), self.fc2.bias))[..., None, None]


class FreqMix(nn.Module):
    """FreqMix (frequency mixing) module, placed after a bottleneck's conv2 and before its norm.

    Args:
        channels: input/output channels (the bottleneck width, ``planes``).
        cutoff: band split in cycles/pixel, in (0, 0.5]; the paper hard-codes 0.35.
        reduction: SE compression ratio (paper default 16).
        gate: how the two SE gates are fed (see docs/backbone.md):

            * ``"released"`` (default): the shipped computation. Each SE gate gets the global average of the real
              and imaginary parts of its masked spectrum, i.e. the (complex) band signal at the top-left pixel
              (0, 0); the two outputs are combined as a magnitude (values in (0, sqrt 2)). Because the released
              code shifts the spectrum over all dims, the gate of image b, channel c is computed from image
              ``(b - B//2) mod B`` with its channels rolled by ``C//2``: batch-dependent in training, a fixed
              channel permutation of the SE input at batch 1. The released checkpoints were trained this way.
            * ``"per_image"`` (variant): the same descriptor, but every image gated from its own spectrum
              (what one would expect from the paper, not what was shipped; formerly named ``"faithful"``).
            * ``"band_energy"`` (variant, presumably the intended behaviour): each SE gate is fed the per-channel
              RMS of its band, ``sqrt(mean(x_band^2))`` (per image), gate values in (0, 1).

            The variants will not reproduce the paper's numbers. The old name ``"faithful"`` raises an error.

    Parameters: 3x3 conv C->2 (with bias) and two SE gates; 6,674 / 21,538 / 75,842 for C = 128 / 256 / 512.
    """

    def __init__(self, channels, cutoff=0.35, reduction=16, gate="released"):
        super().__init__()
        if int(channels) != channels or channels < 1:
            raise ValueError(f"FreqMix channels must be a positive int, got {channels!r}")
        check_freqmix_gate(gate)
        if int(reduction) != reduction or reduction < 1:
            raise ValueError(f"FreqMix reduction must be a positive int, got {reduction!r}")
        self.channels = int(channels)
        self.cutoff = _check_cutoff(cutoff)
        self.reduction = int(reduction)
        self.gate = gate
        self.spatial = nn.Conv2d(self.channels, 2, kernel_size=3, padding=1, bias=True)
        self.se_lo = _SEGate(self.channels, self.reduction)
        self.se_hi = _SEGate(self.channels, self.reduction)

    def extra_repr(self):
        return f"channels={self.channels}, cutoff={self.cutoff}, reduction={self.reduction}, gate={self.gate!r}"

    def _spectral_gates(self, xf, x_lo, im_lo):
        """``a_lo``, ``a_hi`` (B, C, 1, 1) of the "released" / "per_image" gates from per-image GAP values.

        GAP(Re S_lo) = x_lo[0, 0]; GAP(Re S_hi) = x[0, 0] - x_lo[0, 0]; GAP(Im S_lo) from the asymmetric edge
        bins (``im_lo``); GAP(Im S_hi) = -GAP(Im S_lo) for real x.
        """
        b, c = xf.shape[:2]
        corner = torch.stack([xf[..., :1, :1], x_lo[..., :1, :1], im_lo], 0)  # (3, B, C, 1, 1)
        if self.gate == "released":
            # fftshift over all dims = roll by n//2 on every dim; the spatial roll leaves the (H, W) means
            # unchanged, the batch/channel roll moves which image/channel feeds each gate.
            corner = torch.roll(corner, shifts=(b // 2, c // 2), dims=(1, 2))
        x00, re_lo, im_lo = corner.unbind(0)
        # Re and Im go through each SE gate as one batch
        g_lo = self.se_lo(torch.cat([re_lo, im_lo], 0)).to(xf.dtype)
        g_hi = self.se_hi(torch.cat([x00 - re_lo, -im_lo], 0)).to(xf.dtype)
        a_lo = torch.sqrt(g_lo[:b] ** 2 + g_lo[b:] ** 2 + 1e-8)
        a_hi = torch.sqrt(g_hi[:b] ** 2 + g_hi[b:] ** 2 + 1e-8)
        return a_lo, a_hi

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"FreqMix expects (B, C, H, W) input, got shape {tuple(x.shape)}")
        in_dtype = x.dtype
        # spatial band weights: an ordinary conv (left to autocast like every other conv)
        wts = torch.sigmoid(_conv3x3_few_outputs(x, self.spatial.weight, self.spatial.bias))
        with _fp32_region(x.device.type):
            xf = x.to(_fft_dtype(x.dtype))
            spectral = self.gate != "band_energy"
            # one rfft2/irfft2 pair gives the low band and the SE inputs
            x_lo, im_lo = _lowpass(xf, self.cutoff, want_imag=spectral)
            if spectral:
                a_lo, a_hi = self._spectral_gates(xf, x_lo, im_lo)
            else:  # "band_energy" (variant)
                a_lo = self.se_lo(torch.sqrt(x_lo.pow(2).mean((-2, -1), keepdim=True) + 1e-12)).to(xf.dtype)
                x_hi = xf - x_lo
                a_hi = self.se_hi(torch.sqrt(x_hi.pow(2).mean((-2, -1), keepdim=True) + 1e-12)).to(xf.dtype)
            wts = wts.to(xf.dtype)
            # y = w0*a_lo*x_lo + w1*a_hi*(x - x_lo), regrouped as x_lo*(w0*a_lo - w1*a_hi) + x*(w1*a_hi):
            # 5 instead of 6 full-size passes, and in place when no graph is recorded
            t_hi = wts[:, 1:2] * a_hi
            k = wts[:, 0:1] * a_lo
            if torch.is_grad_enabled():
                k = (k - t_hi) * x_lo
            else:
                k.sub_(t_hi).mul_(x_lo)
            y = torch.addcmul(k, xf, t_hi)
        return y.to(in_dtype)


def _binomial_kernel_1d(k):
    return np.array([math.comb(k - 1, i) for i in range(k)], dtype=np.float64) / 2.0 ** (k - 1)


class BlurPool(nn.Module):
    """Fixed binomial low-pass (BlurPool baseline) used in the DAF slot: same size output, stride 1.

    In the paper's ``blur`` baseline the filter is applied to the stage input and the stage's own strided convs
    do the subsampling, so here the filter never downsamples. Reflect padding (replicate if the map is too small
    to reflect). ``kernel_size=1`` is the identity (the paper's "blur1" baseline).

    Args:
        channels: number of channels, or None to accept any channel count (the same filter is applied to every
            channel either way; the argument only adds a shape check).
        kernel_size: binomial kernel size >= 1 (paper baselines: 3, 5, 7).
    """

    def __init__(self, channels=None, kernel_size=3):
        super().__init__()
        if int(kernel_size) != kernel_size or kernel_size < 1:
            raise ValueError(f"BlurPool kernel_size must be a positive int, got {kernel_size!r}")
        if channels is not None and (int(channels) != channels or channels < 1):
            raise ValueError(f"BlurPool channels must be a positive int or None, got {channels!r}")
        self.channels = None if channels is None else int(channels)
        self.kernel_size = int(kernel_size)
        k1 = _binomial_kernel_1d(self.kernel_size)
        # non-persistent: a fixed constant, keeps state dicts identical with and without the filter
        self.register_buffer("kernel", torch.tensor(np.outer(k1, k1), dtype=torch.float32)[None, None], False)

    def extra_repr(self):
        return f"channels={self.channels}, kernel_size={self.kernel_size}"

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"BlurPool expects (B, C, H, W) input, got shape {tuple(x.shape)}")
        if self.channels is not None and x.shape[1] != self.channels:
            raise ValueError(f"BlurPool built for {self.channels} channels got input with {x.shape[1]}")
        k = self.kernel_size
        if k == 1:
            return x
        b, c, h, w = x.shape
        p0, p1 = (k - 1) // 2, k // 2
        mode = "reflect" if min(h, w) > max(p0, p1) else "replicate"
        xp = F.pad(x.reshape(b * c, 1, h, w), (p0, p1, p0, p1), mode=mode)
        y = F.conv2d(xp, self.kernel.to(dtype=xp.dtype))
        return y.reshape(b, c, h, w)
