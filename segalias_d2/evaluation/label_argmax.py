"""``scores.argmax(0)`` of CPU float logits as a uint8 label map, fast (the evaluators' per-image
hot spot).

On CPU, ``torch.argmax(dim=0)`` of a (19, 1024, 2048) float32 tensor reduces over the outermost
dimension with int64 output and is followed by ``min``/``clamp``/uint8 copies and a full
``isfinite`` pass: several passes over 160 MB per image. Here the classes are scanned once per block
of rows, small enough to stay in cache: for every class ``c`` a running maximum is replaced where
``scores[c] > best`` (strictly greater, so the FIRST maximal class wins, as ``torch.argmax``
documents), and a running minimum (``np.minimum``, which propagates NaN) is kept next to it: the
input is finite iff the final maximum and minimum are (a NaN anywhere makes the minimum NaN, +inf
makes the maximum infinite, -inf the minimum). Row blocks are split over a few threads (NumPy
releases the GIL in ufuncs); the pool is made per call, so forked workers are safe.

The result equals ``scores.argmax(0).to(torch.uint8)`` for finite input; ``None`` is returned when
the input has a NaN or an infinite value (the caller raises its error) or when the fast path does
not apply.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import torch

__all__ = ["argmax_uint8_cpu"]

_FAST_DTYPES = (torch.float32, torch.float64)
_BLOCK_ELEMENTS = (
    1 << 16
)  # per class and block: 256 KiB of float32, with the running arrays well inside L2


def _scan_block(scores: np.ndarray, out: np.ndarray, r0: int, r1: int) -> bool:
    """argmax over axis 0 of ``scores[:, r0:r1]`` into ``out[r0:r1]``; False if the block has
    NaN/inf."""
    best = scores[0, r0:r1].copy()
    lowest = best.copy()
    greater = np.empty(best.shape, np.bool_)
    lab = out[r0:r1]
    lab[...] = 0
    for c in range(1, scores.shape[0]):
        sc = scores[c, r0:r1]
        np.greater(sc, best, out=greater)
        np.copyto(lab, c, where=greater)
        np.copyto(best, sc, where=greater)
        np.minimum(lowest, sc, out=lowest)  # propagates NaN of any class; -inf shows here
    # best: max over classes ignoring NaN (NaN never compares greater), +inf shows here; NaN shows
    # in lowest
    return bool(np.isfinite(best).all() and np.isfinite(lowest).all())


def _num_threads() -> int:
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1, 4))


def argmax_uint8_cpu(scores: torch.Tensor) -> Optional[np.ndarray]:
    """uint8 ``scores.argmax(0)`` of a CPU float32/float64 (C, H, W) tensor with 1 <= C <= 256;
    ``None`` if the input is not finite or the fast path does not apply (other dtypes, devices,
    shapes)."""
    if (
        scores.device.type != "cpu"
        or scores.dtype not in _FAST_DTYPES
        or scores.dim() != 3
        or not 1 <= scores.shape[0] <= 256
        or scores.numel() == 0
    ):
        return None
    c, h, w = scores.shape
    arr = (
        scores.detach().numpy().reshape(c, h * w)
        if scores.is_contiguous()
        else scores.detach().numpy()
    )
    flat = arr.ndim == 2
    n = arr.shape[1]
    step = max(1, _BLOCK_ELEMENTS // (1 if flat else w))
    out = np.empty(n, np.uint8) if flat else np.empty((h, w), np.uint8)
    spans = [(r, min(r + step, n)) for r in range(0, n, step)]
    threads = min(_num_threads(), len(spans))
    if threads == 1:
        finite = all([_scan_block(arr, out, r0, r1) for r0, r1 in spans])
    else:
        with ThreadPoolExecutor(threads) as pool:
            finite = all(list(pool.map(lambda s: _scan_block(arr, out, *s), spans)))
    if not finite:
        return None
    return out.reshape(h, w)
