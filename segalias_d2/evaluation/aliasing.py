"""Aliasing analysis -- a RECONSTRUCTION, not code from the paper.

Seg-Aliasing's repository contains no aliasing-score implementation (see
``seg_aliasing_method.md`` §4). This module implements the conservative reconstruction described
there and must be reported as such:

* ``f_N`` = Nyquist frequency of the stride-2 subsampling that follows the feature, measured on the
  feature's own grid: 0.25 cycles/px.
* Aliasing score of a feature map ``X`` (per channel, then averaged over channels), with the same
  L-infinity (box) geometry as the DAF mask:
  ``AS(X) = sum_{|u|>f_N or |v|>f_N} |F[X](u,v)|^2 / sum_{u,v} |F[X](u,v)|^2``
  (power spectrum, DC included, bins exactly at ``f_N`` count as low).
* Region scores (boundary band vs interior): the feature is split into its high band ``X_hi``
  (FFT-masked to ``|u|>f_N or |v|>f_N``) and ``X``; the regional score is
  ``sum_{p in R} sum_c X_hi(p)^2 / sum_{p in R} sum_c X(p)^2``. For ``R`` = the whole map this is
  the channel-energy-weighted version of ``AS`` (Parseval). Window sizes and power-vs-amplitude
  choices of the paper are unknown; do not claim parity with paper figures.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import cv2
import numpy as np
import torch

__all__ = [
    "RECONSTRUCTION_NOTE",
    "high_frequency_mask",
    "aliasing_score",
    "aliasing_energy_maps",
    "regional_aliasing_score",
    "StageInputRecorder",
]

RECONSTRUCTION_NOTE = (
    "aliasing score = RECONSTRUCTION (seg_aliasing_method.md §4), not from the paper's code: share "
    "of power-spectrum energy above the Nyquist frequency (L-inf box) of the following stride-2 "
    "subsampling"
)


def _as_tensor(x) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.detach()
    if t.dim() == 2:
        t = t[None]
    if t.dim() not in (3, 4):
        raise ValueError(
            f"aliasing: expected a feature of shape (C,H,W) or (B,C,H,W), got {tuple(t.shape)}"
        )
    return t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)


def high_frequency_mask(h: int, w: int, nyquist: float = 0.25, device=None) -> torch.Tensor:
    """Bool (H, W) mask of DFT bins with ``|f_y| > nyquist`` or ``|f_x| > nyquist`` (unshifted)."""
    fy = torch.fft.fftfreq(h, device=device).abs()
    fx = torch.fft.fftfreq(w, device=device).abs()
    return (fy[:, None] > nyquist) | (fx[None, :] > nyquist)


def aliasing_score(feature, nyquist: float = 0.25, reduce: str = "mean"):
    """Aliasing score AS (RECONSTRUCTION) of a (C,H,W) or (B,C,H,W) feature.

    ``reduce="mean"``: mean over channels (and images) with non-zero energy (float, NaN if none);
    ``"none"``: per-(image,)channel tensor (NaN for zero-energy channels).
    """
    x = _as_tensor(feature)
    h, w = x.shape[-2:]
    power = torch.fft.fft2(x).abs().square()
    hi = high_frequency_mask(h, w, nyquist, x.device)
    total = power.sum(dim=(-2, -1))
    high = (power * hi).sum(dim=(-2, -1))
    score = torch.where(
        total > 0, high / total.clamp_min(1e-300), torch.full_like(total, float("nan"))
    )
    if reduce == "none":
        return score
    v = score[~torch.isnan(score)]
    return float(v.mean()) if v.numel() else float("nan")


def aliasing_energy_maps(feature, nyquist: float = 0.25):
    """Per-pixel energies (RECONSTRUCTION): ``(high, total)`` numpy (H, W) maps summed over
    channels.

    ``high = sum_c X_hi^2`` with ``X_hi`` the part of ``X`` above ``nyquist`` (L-inf box),
    ``total = sum_c X^2``. For a batch, maps of the first image are returned.
    """
    x = _as_tensor(feature)
    if x.dim() == 4:
        x = x[0]
    h, w = x.shape[-2:]
    hi = high_frequency_mask(h, w, nyquist, x.device)
    x_hi = torch.fft.ifft2(torch.fft.fft2(x) * hi).real
    return x_hi.square().sum(0).cpu().numpy(), x.square().sum(0).cpu().numpy()


def regional_aliasing_score(
    high: np.ndarray, total: np.ndarray, region: Optional[np.ndarray] = None
) -> float:
    """``sum_R high / sum_R total``; ``region`` (bool) is resized (nearest) to the map size if
    needed."""
    if region is None:
        r = np.ones(high.shape, bool)
    else:
        r = np.asarray(region)
        if r.shape != high.shape:
            r = (
                cv2.resize(
                    r.astype(np.uint8),
                    (high.shape[1], high.shape[0]),
                    interpolation=cv2.INTER_NEAREST,
                )
                > 0
            )
        else:
            r = r.astype(bool)
    den = float(total[r].sum())
    return float(high[r].sum()) / den if den > 0 else float("nan")


def _find_stage_modules(model, stages: Iterable[str]):
    backbone = model.backbone if hasattr(model, "backbone") else model
    body = getattr(backbone, "bottom_up", backbone)  # FPN wraps the ResNet as bottom_up
    found = {}
    for s in stages:
        m = getattr(body, s, None)
        if m is None:
            raise AttributeError(
                f"StageInputRecorder: backbone {type(body).__name__} has no stage '{s}' "
                "(expected a Detectron2 ResNet, optionally wrapped by FPN as backbone.bottom_up)"
            )
        found[s] = m
    strides = getattr(body, "_out_feature_strides", {})
    return body, found, strides


class StageInputRecorder:
    """Forward pre-hooks capturing the inputs of ``res3``, ``res4``, ``res5`` (before each stride-2
    stage) of a Detectron2 ResNet(-FPN) backbone. Use as a context manager::

        with StageInputRecorder(model) as rec:
            model([inp])
        feats = rec.features   # {"res3": [tensor (B,C,H,W), ...], ...}, detached on CPU
        rec.input_strides      # {"res3": 4, "res4": 8, "res5": 16} (stride of the captured input)
    """

    def __init__(self, model, stages=("res3", "res4", "res5"), to_cpu: bool = True):
        self.stages = list(stages)
        body, self._modules, strides = _find_stage_modules(model, self.stages)
        names = list(getattr(body, "stage_names", [])) or ["res2", "res3", "res4", "res5"]
        self.input_strides = {}
        for s in self.stages:
            prev = names[names.index(s) - 1] if s in names and names.index(s) > 0 else "stem"
            default = 2 ** (int(s[3:]) - 1) if s.startswith("res") and s[3:].isdigit() else None
            self.input_strides[s] = strides.get(prev, default)
        self.to_cpu = to_cpu
        self.features: Dict[str, List[torch.Tensor]] = {s: [] for s in self.stages}
        self._handles = []

    def _hook(self, name):
        def fn(module, inputs):
            x = inputs[0].detach()
            self.features[name].append(x.cpu() if self.to_cpu else x)

        return fn

    def clear(self):
        for v in self.features.values():
            v.clear()

    def __enter__(self):
        for s, m in self._modules.items():
            self._handles.append(m.register_forward_pre_hook(self._hook(s)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        return False
