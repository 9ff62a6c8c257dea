"""Anti-aliasing filters of Seg-Aliasing (ICLR 2024): DAF, FreqMix and a BlurPool baseline.

Pure ``nn.Module``s with plain arguments (no cfg). See docs/backbone.md for the math and the
released-vs-variant options.

Released semantics (what the paper's code computes), for real input ``x`` of shape (B, C, H, W):

* ``DeAliasingFilter`` (DAF): ``Re(IFFT2(ifftshift(fftshift(FFT2(x)) * M)))`` with the centred box
  mask ``M[r0:r1, c0:c1] = 1``, ``r0 = round(H/2 - H*t)``, ``r1 = round(H/2 + H*t)`` (Python round,
  half to even), same for columns. Shape preserving, no parameters, same in train and eval.
* ``FreqMix``: spatial band weights ``w = sigmoid(conv3x3(x))``, band split with the same mask
  (``x_lo = DAF(x)``, ``x_hi = x - x_lo``), two SE gates fed with the global average of the real and
  imaginary parts of each masked *spectrum*, combined as a magnitude,
  ``y = w0*a_lo*x_lo + w1*a_hi*x_hi``. The released code shifts the spectrum over ALL dims
  (``fftshift`` without ``dim``), so the gate of image b, channel c is computed from image
  ``(b - B//2) mod B`` with its channels rolled by ``C//2`` (gate ``"released"``); ``"per_image"``
  gates every image from its own spectrum (a variant), ``"band_energy"`` feeds band RMS values.

Fast path (used by the modules, ``fourier_ops.py`` and ``spectral_lowpass.py``): ``Re(...)`` of the
box-masked spectrum equals filtering with the Hermitian symmetrised mask
``M_sym(k) = (M(k) + M(-k)) / 2`` (values 0, 0.5, 1), so one real FFT pair with a real mask cached
per (H, W, cutoff, device, dtype) gives the same output as the complex reference without any
full-size complex mask. FreqMix's SE inputs are recovered exactly from the same transform
(``GAP(Re S_lo) = x_lo[..., 0, 0]``; ``GAP(Im S_lo)`` = a weighted sum over the few asymmetric edge
bins), and for ``"released"`` these (B, C) values are rolled over (batch, channel) exactly as the
all-dims shift does. Both modules have custom autograd functions: the DAF backward is the same
filter applied to the gradient (the filter is self-adjoint), the FreqMix backward is written out
with one FFT pair for the whole band split; neither saves a spectrum.

The slow literal transcriptions of the released computation live in ``tests/reference_fourier.py``.

Numerics: the FFT part runs in float32 (float64 for float64 input) with autocast disabled (cuFFT
half precision only supports power-of-two sizes; bfloat16 FFTs are not supported at all); outputs
are cast back to the input dtype.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fourier_ops import (  # noqa: F401  (mask helpers re-exported)
    box_mask_bounds,
    box_mask_centered,
    fp32_region,
    freqmix,
    lowpass,
    se_apply,
    symmetric_rfft_mask,
)

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

# "released" = the shipped computation (default); "per_image" and "band_energy" are variants
# (docs/backbone.md)
FREQMIX_GATES = ("released", "per_image", "band_energy")
# former names -> why they are no longer accepted (a silent alias would change what an old config
# computes)
_RENAMED_GATES = {
    "faithful": (
        "was renamed: it gated each image from its own spectrum, which is not what the released "
        "code computes. "
        "Use 'released' (the shipped computation: SE gates read the batch- and channel-rolled "
        "spectrum; the default) or 'per_image' (the former 'faithful' computation, a variant)"
    ),
}


def _check_cutoff(cutoff, name="cutoff"):
    try:
        cutoff = float(cutoff)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a number in (0, 0.5] (cycles/pixel), got {cutoff!r}"
        ) from None
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


def _fft_dtype(dtype):
    """float64 stays float64 (exact checks); everything else (half, bfloat16, float32) runs in
    float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# Real elements per FFT chunk: bounds the spectrum-sized temporaries (rfft output, irfft work
# buffers) to a few MiB instead of several copies of the whole feature map; large enough that
# per-call overhead is negligible. Read at call time (tests lower it to force several chunks).
_CHUNK_ELEMENTS = 1 << 20


class DeAliasingFilter(nn.Module):
    """De-aliasing filter (DAF): shape-preserving Fourier box low-pass, no parameters, no buffers.

    Args:
        cutoff: box half-width in cycles/pixel, in (0, 0.5]. The paper configs use 0.35
            (= 0.25 * 1.4).
    """

    def __init__(self, cutoff=0.35):
        super().__init__()
        self.cutoff = _check_cutoff(cutoff)

    def forward(self, x):
        if x.dim() < 2:
            raise ValueError(
                f"DeAliasingFilter expects (..., H, W) input, got shape {tuple(x.shape)}"
            )
        with fp32_region(x.device.type):
            y = lowpass(x.to(_fft_dtype(x.dtype)), self.cutoff, _CHUNK_ELEMENTS)
        return y.to(x.dtype)

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
        # 1x1 convs on a 1x1 map are linear layers; F.linear avoids the conv dispatch overhead
        return se_apply(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)

    def linear_params(self):
        return self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias


class FreqMix(nn.Module):
    """FreqMix (frequency mixing) module, placed after a bottleneck's conv2 and before its norm.

    Args:
        channels: input/output channels (the bottleneck width, ``planes``).
        cutoff: band split in cycles/pixel, in (0, 0.5]; the paper hard-codes 0.35.
        reduction: SE compression ratio (paper default 16).
        gate: how the two SE gates are fed (see docs/backbone.md):

            * ``"released"`` (default): the shipped computation. Each SE gate gets the global
              average of the real and imaginary parts of its masked spectrum, i.e. the (complex)
              band signal at the top-left pixel (0, 0); the two outputs are combined as a magnitude
              (values in (0, sqrt 2)). Because the released code shifts the spectrum over all dims,
              the gate of image b, channel c is computed from image ``(b - B//2) mod B`` with its
              channels rolled by ``C//2``: batch-dependent in training, a fixed channel permutation
              of the SE input at batch 1. The released checkpoints were trained this way.
            * ``"per_image"`` (variant): the same descriptor, but every image gated from its own
              spectrum (what one would expect from the paper, not what was shipped; formerly named
              ``"faithful"``).
            * ``"band_energy"`` (variant, presumably the intended behaviour): each SE gate is fed
              the per-channel RMS of its band, ``sqrt(mean(x_band^2))`` (per image), gate values in
              (0, 1).

            The variants will not reproduce the paper's numbers. The old name ``"faithful"`` raises
            an error.

    Parameters: 3x3 conv C->2 (with bias) and two SE gates; 6,674 / 21,538 / 75,842 for
    C = 128 / 256 / 512.
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
        return (
            f"channels={self.channels}, cutoff={self.cutoff}, reduction={self.reduction}, "
            f"gate={self.gate!r}"
        )

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"FreqMix expects (B, C, H, W) input, got shape {tuple(x.shape)}")
        with fp32_region(x.device.type):
            xf = x.to(_fft_dtype(x.dtype))
            conv = self.spatial
            y = freqmix(
                xf,
                conv.weight.to(xf.dtype),
                conv.bias.to(xf.dtype),
                self.se_lo.linear_params(),
                self.se_hi.linear_params(),
                self.se_lo,
                self.se_hi,
                self.gate,
                self.cutoff,
                _CHUNK_ELEMENTS,
            )
        return y.to(x.dtype)


def _binomial_kernel_1d(k):
    return np.array([math.comb(k - 1, i) for i in range(k)], dtype=np.float64) / 2.0 ** (k - 1)


class BlurPool(nn.Module):
    """Fixed binomial low-pass (BlurPool baseline) used in the DAF slot: same size output, stride 1.

    In the paper's ``blur`` baseline the filter is applied to the stage input and the stage's own
    strided convs do the subsampling, so here the filter never downsamples. Reflect padding
    (replicate if the map is too small to reflect). ``kernel_size=1`` is the identity (the paper's
    "blur1" baseline).

    Args:
        channels: number of channels, or None to accept any channel count (the same filter is
            applied to every channel either way; the argument only adds a shape check).
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
        self.register_buffer(
            "kernel", torch.tensor(np.outer(k1, k1), dtype=torch.float32)[None, None], False
        )

    def extra_repr(self):
        return f"channels={self.channels}, kernel_size={self.kernel_size}"

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"BlurPool expects (B, C, H, W) input, got shape {tuple(x.shape)}")
        if self.channels is not None and x.shape[1] != self.channels:
            raise ValueError(
                f"BlurPool built for {self.channels} channels got input with {x.shape[1]}"
            )
        k = self.kernel_size
        if k == 1:
            return x
        b, c, h, w = x.shape
        p0, p1 = (k - 1) // 2, k // 2
        mode = "reflect" if min(h, w) > max(p0, p1) else "replicate"
        xp = F.pad(x.reshape(b * c, 1, h, w), (p0, p1, p0, p1), mode=mode)
        y = F.conv2d(xp, self.kernel.to(dtype=xp.dtype))
        return y.reshape(b, c, h, w)
