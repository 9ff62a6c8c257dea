"""Slow, literal transcriptions of the Seg-Aliasing filters (test and benchmark code, not part of
the package).

Written from the description of the released code (../shared/reference/seg_aliasing_method.md
sections 2.2, 3.2, 3.5b, 3.6), quirks included, and independent of the module internals: Python
``round`` bounds computed here, a full complex ``zeros_like`` mask per call, ``torch.fft`` shifts,
SE gates and spatial conv evaluated with ``F.conv2d`` from the module's weights only.

* ``reference_daf``: ``Re(ifft2(ifftshift(fftshift(fft2(x)) * M)))``. The mask is the same for every
  batch and channel index, so shifting over all dims or over (H, W) only gives the same result.
* ``reference_freqmix_released``: the released ``_FrequencyMix.forward``. ``fftshift`` /
  ``ifftshift`` are called WITHOUT ``dim``, so they also roll batch and channel dims; the bands are
  unaffected (the inverse shift undoes it) but the SE gates read the rolled spectrum.
* ``reference_freqmix_per_image``: the same with the shifts restricted to (H, W) (the
  ``"per_image"`` variant).
* ``reference_freqmix_band_energy``: the ``"band_energy"`` variant (SE fed with the per-channel band
  RMS).

Import from tests (pytest puts tests/ on sys.path) or from bench/ (which adds tests/ itself).
"""

import torch
import torch.nn.functional as F

__all__ = [
    "reference_daf",
    "reference_freqmix",
    "reference_freqmix_released",
    "reference_freqmix_per_image",
    "reference_freqmix_band_energy",
]


def _box_mask_like(spec, cutoff):
    # the released code allocates a full complex mask of the spectrum's shape per call; kept on
    # purpose
    h, w = spec.shape[-2:]
    r0, r1 = round(h / 2 - h * cutoff), round(h / 2 + h * cutoff)
    c0, c1 = round(w / 2 - w * cutoff), round(w / 2 + w * cutoff)
    mask = torch.zeros_like(spec)
    mask[..., r0:r1, c0:c1] = 1
    return mask


def reference_daf(x, cutoff=0.35):
    """``Re(ifft2(ifftshift(fftshift(fft2(x)) * M)))`` with the complex centred box mask."""
    s = torch.fft.fftshift(torch.fft.fft2(x, norm="backward"), dim=(-2, -1))
    s = s * _box_mask_like(s, cutoff)
    return torch.fft.ifft2(torch.fft.ifftshift(s, dim=(-2, -1)), norm="backward").real


def _se(gate, t):
    """SE block: AdaptiveAvgPool2d(1) -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid, with ``gate``'s
    weights."""
    t = F.adaptive_avg_pool2d(t, 1)
    t = F.relu(F.conv2d(t, gate.fc1.weight.to(t.dtype), gate.fc1.bias.to(t.dtype)))
    return torch.sigmoid(F.conv2d(t, gate.fc2.weight.to(t.dtype), gate.fc2.bias.to(t.dtype)))


def _spatial_weights(x, module):
    conv = module.spatial
    return torch.sigmoid(F.conv2d(x, conv.weight.to(x.dtype), conv.bias.to(x.dtype), padding=1))


def _mix(w, a_lo, x_lo, a_hi, x_hi):
    return w[:, 0:1] * a_lo * x_lo + w[:, 1:2] * a_hi * x_hi


def reference_freqmix_released(x, module):
    """The released forward: all-dims fftshift/ifftshift, SE on S_lo/S_hi real and imaginary
    parts."""
    w = _spatial_weights(x, module)
    s = torch.fft.fftshift(
        torch.fft.fft2(x, norm="backward")
    )  # no dim: batch and channel dims shift too
    mask = _box_mask_like(s, module.cutoff)
    s_lo = s * mask
    s_hi = s * (1 - mask)
    x_lo = torch.fft.ifft2(torch.fft.ifftshift(s_lo), norm="backward").real
    x_hi = x - x_lo
    a_lo = torch.sqrt(_se(module.se_lo, s_lo.real) ** 2 + _se(module.se_lo, s_lo.imag) ** 2 + 1e-8)
    a_hi = torch.sqrt(_se(module.se_hi, s_hi.real) ** 2 + _se(module.se_hi, s_hi.imag) ** 2 + 1e-8)
    return _mix(w, a_lo, x_lo, a_hi, x_hi)


def reference_freqmix_per_image(x, module):
    """As released, but the shifts act on (H, W) only, so each image is gated from its own
    spectrum."""
    w = _spatial_weights(x, module)
    s = torch.fft.fftshift(torch.fft.fft2(x, norm="backward"), dim=(-2, -1))
    mask = _box_mask_like(s, module.cutoff)
    s_lo = s * mask
    s_hi = s * (1 - mask)
    x_lo = torch.fft.ifft2(torch.fft.ifftshift(s_lo, dim=(-2, -1)), norm="backward").real
    x_hi = x - x_lo
    a_lo = torch.sqrt(_se(module.se_lo, s_lo.real) ** 2 + _se(module.se_lo, s_lo.imag) ** 2 + 1e-8)
    a_hi = torch.sqrt(_se(module.se_hi, s_hi.real) ** 2 + _se(module.se_hi, s_hi.imag) ** 2 + 1e-8)
    return _mix(w, a_lo, x_lo, a_hi, x_hi)


def reference_freqmix_band_energy(x, module):
    """The band-energy variant: SE gates fed with the per-image, per-channel RMS of each band."""
    w = _spatial_weights(x, module)
    x_lo = reference_daf(x, module.cutoff)
    x_hi = x - x_lo
    a_lo = _se(module.se_lo, torch.sqrt(x_lo.pow(2).mean((-2, -1), keepdim=True) + 1e-12))
    a_hi = _se(module.se_hi, torch.sqrt(x_hi.pow(2).mean((-2, -1), keepdim=True) + 1e-12))
    return _mix(w, a_lo, x_lo, a_hi, x_hi)


_BY_GATE = {
    "released": reference_freqmix_released,
    "per_image": reference_freqmix_per_image,
    "band_energy": reference_freqmix_band_energy,
}


def reference_freqmix(x, module, gate=None):
    """Transcription of ``module``'s gate mode (or of ``gate`` if given) with ``module``'s
    weights."""
    gate = module.gate if gate is None else gate
    if gate not in _BY_GATE:
        raise ValueError(
            f"reference_freqmix: no transcription for gate {gate!r}; expected one of "
            f"{tuple(_BY_GATE)}"
        )
    return _BY_GATE[gate](x, module)
